//! Prompt editing `[a:b:0.5]` and alternation `[a|b]`: A1111's
//! `modules/prompt_parser.py` `get_learned_conditioning_prompt_schedules`.
//!
//! A1111 parses with a Lark (Earley) grammar:
//!
//! ```text
//! !start: (prompt | /[][():]/+)*
//! prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
//! !emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
//! scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER "]"
//! alternate: "[" prompt ("|" prompt)+ "]"
//! plain: /([^\\\[\]():|]|\\.)+/
//! ```
//!
//! This is a backtracking recursive-descent parser for the same grammar; where a prompt does not
//! parse, the whole prompt is used for every step, as in A1111.

/// A parsed piece of a prompt.
#[derive(Debug, Clone)]
enum Node {
    /// Text kept as written (plain text, whitespace, literal brackets of emphasis).
    Text(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// `[before:after:when]`.
    Scheduled {
        before: Option<Box<Node>>,
        after: Box<Node>,
        when: f64,
    },
    /// `[a|b|...]`.
    Alternate(Vec<Node>),
}

struct Parser<'a> {
    s: &'a str,
}

impl Parser<'_> {
    fn peek(&self, pos: usize) -> Option<char> {
        self.s[pos..].chars().next()
    }

    /// `prompt`: as many items as parse; never fails (it may be empty).
    fn prompt(&self, mut pos: usize) -> (Node, usize) {
        let mut items = Vec::new();
        loop {
            match self.peek(pos) {
                Some('(') => match self.emphasized_round(pos) {
                    Some((n, p)) => {
                        items.push(n);
                        pos = p;
                    }
                    None => break,
                },
                Some('[') => match self.bracket(pos) {
                    Some((n, p)) => {
                        items.push(n);
                        pos = p;
                    }
                    None => break,
                },
                Some(c) if !is_special(c) => {
                    let end = self.plain_end(pos);
                    items.push(Node::Text(self.s[pos..end].to_owned()));
                    pos = end;
                }
                _ => break,
            }
        }
        (Node::Seq(items), pos)
    }

    /// End of a `plain` run starting at `pos` (backslash escapes any character).
    fn plain_end(&self, pos: usize) -> usize {
        let mut chars = self.s[pos..].char_indices().peekable();
        while let Some(&(i, c)) = chars.peek() {
            if c == '\\' {
                chars.next();
                match chars.next() {
                    Some(_) => continue,
                    None => return self.s.len(),
                }
            }
            if is_special(c) {
                return pos + i;
            }
            chars.next();
        }
        self.s.len()
    }

    fn expect(&self, pos: usize, c: char) -> Option<usize> {
        (self.peek(pos) == Some(c)).then(|| pos + c.len_utf8())
    }

    /// `"(" prompt ")" | "(" prompt ":" prompt ")"`.
    fn emphasized_round(&self, pos: usize) -> Option<(Node, usize)> {
        let p = self.expect(pos, '(')?;
        let (a, p) = self.prompt(p);
        if let Some(end) = self.expect(p, ')') {
            return Some((wrap("(", vec![a], ")"), end));
        }
        let p = self.expect(p, ':')?;
        let (b, p) = self.prompt(p);
        let end = self.expect(p, ')')?;
        Some((
            Node::Seq(vec![
                Node::Text("(".to_owned()),
                a,
                Node::Text(":".to_owned()),
                b,
                Node::Text(")".to_owned()),
            ]),
            end,
        ))
    }

    /// `scheduled | alternate | "[" prompt "]"`, tried in that order.
    fn bracket(&self, pos: usize) -> Option<(Node, usize)> {
        let start = self.expect(pos, '[')?;
        let (first, p) = self.prompt(start);
        // scheduled with `before`: "[" prompt ":" prompt ":" [WS] NUMBER "]"
        if let Some(p2) = self.expect(p, ':') {
            let (second, p3) = self.prompt(p2);
            if let Some(p4) = self.expect(p3, ':')
                && let Some((when, end)) = self.number_close(p4)
            {
                return Some((
                    Node::Scheduled {
                        before: Some(Box::new(first)),
                        after: Box::new(second),
                        when,
                    },
                    end,
                ));
            }
            // scheduled without `before`: "[" prompt ":" [WS] NUMBER "]"
            if let Some((when, end)) = self.number_close(p2) {
                return Some((
                    Node::Scheduled {
                        before: None,
                        after: Box::new(first),
                        when,
                    },
                    end,
                ));
            }
        }
        if self.peek(p) == Some('|') {
            let mut options = vec![first.clone()];
            let mut q = p;
            while let Some(next) = self.expect(q, '|') {
                let (opt, r) = self.prompt(next);
                options.push(opt);
                q = r;
            }
            if let Some(end) = self.expect(q, ']') {
                return Some((Node::Alternate(options), end));
            }
        }
        let end = self.expect(p, ']')?;
        Some((wrap("[", vec![first], "]"), end))
    }

    /// `[WHITESPACE] NUMBER "]"` (Lark's `SIGNED_NUMBER`), returning the value and the end.
    fn number_close(&self, pos: usize) -> Option<(f64, usize)> {
        let rest = &self.s[pos..];
        let ws = rest.len() - rest.trim_start().len();
        let body = &rest[ws..];
        let len = signed_number_len(body)?;
        let value: f64 = body[..len].parse().ok()?;
        let end = self.expect(pos + ws + len, ']')?;
        Some((value, end))
    }
}

/// Length of a Lark `SIGNED_NUMBER` at the start of `s`: `[+-]? (INT | DECIMAL) EXP?`.
fn signed_number_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let int_len = i - int_start;
    let mut frac_len = 0;
    if b.get(i) == Some(&b'.') {
        let mut j = i + 1;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        frac_len = j - i - 1;
        if int_len > 0 || frac_len > 0 {
            i = j;
        }
    }
    if int_len == 0 && frac_len == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let digits = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > digits {
            i = j;
        }
    }
    Some(i)
}

fn is_special(c: char) -> bool {
    matches!(c, '[' | ']' | '(' | ')' | ':' | '|')
}

fn wrap(open: &str, inner: Vec<Node>, close: &str) -> Node {
    let mut v = vec![Node::Text(open.to_owned())];
    v.extend(inner);
    v.push(Node::Text(close.to_owned()));
    Node::Seq(v)
}

/// `start`: prompts and runs of literal `[`, `]`, `(`, `)`, `:`; `None` where A1111's parser
/// fails (a `|` outside brackets, a backslash at the very end, ...).
fn parse_start(s: &str) -> Option<Node> {
    let parser = Parser { s };
    let mut items = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        let (node, p) = parser.prompt(pos);
        if p > pos {
            items.push(node);
            pos = p;
            continue;
        }
        let run = s[pos..]
            .char_indices()
            .find(|&(_, c)| !matches!(c, '[' | ']' | '(' | ')' | ':'))
            .map_or(s.len() - pos, |(i, _)| i);
        if run == 0 {
            return None;
        }
        // Lark takes the longest literal run; a bracket that does start a prompt item is
        // only reached when the run stops before it, which happens below on the next loop.
        let mut take = run;
        for (i, _) in s[pos..pos + run].char_indices().skip(1) {
            if parser.prompt(pos + i).1 > pos + i {
                take = i;
                break;
            }
        }
        items.push(Node::Text(s[pos..pos + take].to_owned()));
        pos += take;
    }
    Some(Node::Seq(items))
}

fn collect_steps(node: &Node, steps: i64, out: &mut Vec<i64>) {
    match node {
        Node::Text(_) => {}
        Node::Seq(v) => v.iter().for_each(|n| collect_steps(n, steps, out)),
        Node::Scheduled {
            before,
            after,
            when,
        } => {
            out.push(resolve_when(*when, steps));
            if let Some(b) = before {
                collect_steps(b, steps, out);
            }
            collect_steps(after, steps, out);
        }
        Node::Alternate(options) => {
            out.extend(1..=steps);
            options.iter().for_each(|n| collect_steps(n, steps, out));
        }
    }
}

/// `when < 1` is a fraction of the steps; the result is truncated and capped at `steps`.
fn resolve_when(when: f64, steps: i64) -> i64 {
    let w = if when < 1.0 {
        when * steps as f64
    } else {
        when
    };
    (w.trunc() as i64).min(steps)
}

fn render(node: &Node, step: i64, steps: i64, out: &mut String) {
    match node {
        Node::Text(t) => out.push_str(t),
        Node::Seq(v) => v.iter().for_each(|n| render(n, step, steps, out)),
        Node::Scheduled {
            before,
            after,
            when,
        } => {
            if step <= resolve_when(*when, steps) {
                if let Some(b) = before {
                    render(b, step, steps, out);
                }
            } else {
                render(after, step, steps, out);
            }
        }
        Node::Alternate(options) => {
            let n = options.len() as i64;
            let i = (step - 1).rem_euclid(n) as usize;
            render(&options[i], step, steps, out);
        }
    }
}

/// A1111 `get_learned_conditioning_prompt_schedules` for one prompt: `(end_at_step, text)`
/// pairs, ascending; text `i` is used for steps up to and including its `end_at_step` (A1111
/// counts denoiser calls, see [`text_at_step`]).
pub fn prompt_schedule(prompt: &str, steps: usize) -> Vec<(i64, String)> {
    let steps = steps as i64;
    let Some(tree) = parse_start(prompt) else {
        return vec![(steps, prompt.to_owned())];
    };
    let mut at = vec![steps];
    collect_steps(&tree, steps, &mut at);
    at.sort_unstable();
    at.dedup();
    at.into_iter()
        .map(|t| {
            let mut s = String::new();
            render(&tree, t, steps, &mut s);
            (t, s)
        })
        .collect()
}

/// The text of a schedule in force at `step` (A1111 `reconstruct_cond_batch`: the first entry
/// whose `end_at_step` is at least `step`, else the first). A1111 passes the number of
/// denoiser calls made so far (`CFGDenoiser.step`), so second-order samplers switch earlier.
pub fn text_at_step(schedule: &[(i64, String)], step: i64) -> Option<&str> {
    schedule
        .iter()
        .find(|(end, _)| step <= *end)
        .or_else(|| schedule.first())
        .map(|(_, t)| t.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Vec<(i64, String)> {
        prompt_schedule(p, 10)
    }

    fn s(v: &[(i64, &str)]) -> Vec<(i64, String)> {
        v.iter().map(|(a, b)| (*a, (*b).to_owned())).collect()
    }

    /// The doctests of A1111's `get_learned_conditioning_prompt_schedules` (one, marked "not
    /// handling this right now" there, is left out).
    #[test]
    fn a1111_doctests_hold() {
        assert_eq!(g("test"), s(&[(10, "test")]));
        assert_eq!(g("a [b:3]"), s(&[(3, "a "), (10, "a b")]));
        assert_eq!(g("a [b: 3]"), s(&[(3, "a "), (10, "a b")]));
        assert_eq!(g("a [[[b]]:2]"), s(&[(2, "a "), (10, "a [[b]]")]));
        assert_eq!(g("[(a:2):3]"), s(&[(3, ""), (10, "(a:2)")]));
        assert_eq!(g("a [b : c : 1] d"), s(&[(1, "a b  d"), (10, "a  c  d")]));
        assert_eq!(
            g("a[b:[c:d:2]:1]e"),
            s(&[(1, "abe"), (2, "ace"), (10, "ade")])
        );
        assert_eq!(g("a [unbalanced"), s(&[(10, "a [unbalanced")]));
        assert_eq!(g("a [b:.5] c"), s(&[(5, "a  c"), (10, "a b c")]));
        assert_eq!(
            g("((a][:b:c [d:3]"),
            s(&[(3, "((a][:b:c "), (10, "((a][:b:c d")])
        );
        let alt: Vec<(i64, String)> = (1..=10)
            .map(|i| (i, if i % 2 == 1 { "a" } else { "(b:1.1)" }.to_owned()))
            .collect();
        assert_eq!(g("[a|(b:1.1)]"), alt);
    }

    /// The example at the top of A1111's `prompt_parser.py` (100 steps).
    #[test]
    fn a1111_module_example_holds() {
        let p = "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas \
                 tree:0.75][ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]";
        assert_eq!(
            prompt_schedule(p, 100),
            s(&[
                (
                    25,
                    "fantasy landscape with a mountain and an oak in foreground shoddy"
                ),
                (
                    50,
                    "fantasy landscape with a lake and an oak in foreground in background shoddy"
                ),
                (
                    60,
                    "fantasy landscape with a lake and an oak in foreground in background masterful"
                ),
                (
                    75,
                    "fantasy landscape with a lake and an oak in background masterful"
                ),
                (
                    100,
                    "fantasy landscape with a lake and a christmas tree in background masterful"
                ),
            ])
        );
        let sched = prompt_schedule(p, 100);
        assert_eq!(text_at_step(&sched, 26), Some(sched[1].1.as_str()));
        assert_eq!(text_at_step(&sched, 25), Some(sched[0].1.as_str()));
    }

    #[test]
    fn weights_and_escapes_pass_through() {
        assert_eq!(g("(a:1.2), \\[b\\] c"), s(&[(10, "(a:1.2), \\[b\\] c")]));
        assert_eq!(g("a | b"), s(&[(10, "a | b")]));
    }
}
