//! A1111's attention syntax: `modules/prompt_parser.py` `parse_prompt_attention`.

/// One run of prompt text with its attention weight; `BREAK` is its own piece.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text with its multiplier (products of 1.1, 1/1.1 and explicit weights, in float64 as
    /// A1111 computes them).
    Text {
        /// The text, escapes resolved.
        text: String,
        /// The multiplier.
        weight: f64,
    },
    /// A `BREAK` keyword: the next text starts a new 75-token chunk.
    Break,
}

/// Splits `text` into weighted pieces exactly as A1111's `parse_prompt_attention`:
/// `(a)` ×1.1, `[a]` ÷1.1, `(a:1.3)` ×1.3, nesting multiplies, `\(` `\)` `\[` `\]` `\\` are
/// literal, a lone `\` is dropped, unbalanced brackets apply to the end of the prompt, `BREAK`
/// (a whole word, with the whitespace around it) separates chunks, and neighbouring runs of
/// equal weight are merged.
///
/// As in A1111 a `BREAK` inside brackets has its marker weight (-1) multiplied too and so is
/// no break: it stays the text `BREAK` with a negative weight.
///
/// One deviation: a weight that Python's `float()` rejects (`(a:1.2.3)`) makes A1111 raise;
/// here the `:1.2.3)` stays literal text.
pub fn parse_prompt_attention(text: &str) -> Vec<Piece> {
    const ROUND: f64 = 1.1;
    const SQUARE: f64 = 1.0 / 1.1;
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, f64)>, start: usize, m: f64| {
        for p in &mut res[start..] {
            p.1 *= m;
        }
    };
    for tok in attention_tokens(text) {
        match tok {
            Tok::Escaped(s) => res.push((s.to_owned(), 1.0)),
            Tok::OpenRound => round.push(res.len()),
            Tok::OpenSquare => square.push(res.len()),
            Tok::WeightClose(w, _) if !round.is_empty() => {
                if let Some(start) = round.pop() {
                    multiply(&mut res, start, w);
                }
            }
            Tok::CloseRound if !round.is_empty() => {
                if let Some(start) = round.pop() {
                    multiply(&mut res, start, ROUND);
                }
            }
            Tok::CloseSquare if !square.is_empty() => {
                if let Some(start) = square.pop() {
                    multiply(&mut res, start, SQUARE);
                }
            }
            Tok::WeightClose(_, s) | Tok::Plain(s) => push_with_breaks(&mut res, s),
            Tok::CloseRound => push_with_breaks(&mut res, ")"),
            Tok::CloseSquare => push_with_breaks(&mut res, "]"),
        }
    }
    for start in round {
        multiply(&mut res, start, ROUND);
    }
    for start in square {
        multiply(&mut res, start, SQUARE);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    // Merge runs of identical weights.
    let mut i = 0;
    while i + 1 < res.len() {
        if res[i].1 == res[i + 1].1 {
            let next = res.remove(i + 1);
            res[i].0.push_str(&next.0);
        } else {
            i += 1;
        }
    }
    res.into_iter()
        .map(|(text, weight)| {
            if text == "BREAK" && weight == -1.0 {
                Piece::Break
            } else {
                Piece::Text { text, weight }
            }
        })
        .collect()
}

/// The tokens of A1111's `re_attention`.
enum Tok<'a> {
    /// `\(`, `\)`, `\[`, `\]`, `\\`, or a lone `\` (empty).
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:<number>)` with the parsed number and the matched text.
    WeightClose(f64, &'a str),
    CloseRound,
    CloseSquare,
    /// A run of other characters, or a lone `:`.
    Plain(&'a str),
}

fn attention_tokens(text: &str) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (tok, len) = match c {
            '\\' => match rest[1..].chars().next() {
                Some(n @ ('(' | ')' | '[' | ']' | '\\')) => {
                    (Tok::Escaped(&rest[1..2]), 1 + n.len_utf8())
                }
                _ => (Tok::Escaped(""), 1),
            },
            '(' => (Tok::OpenRound, 1),
            '[' => (Tok::OpenSquare, 1),
            ')' => (Tok::CloseRound, 1),
            ']' => (Tok::CloseSquare, 1),
            ':' => {
                // `:([+-]?[.\d]+)\)`
                let body = &rest[1..];
                let sign = usize::from(body.starts_with(['+', '-']));
                let digits = body[sign..]
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || *b == b'.')
                    .count();
                let end = sign + digits;
                if digits > 0 && body[end..].starts_with(')') {
                    let matched = &rest[..1 + end + 1];
                    match parse_python_float(&body[..end]) {
                        Some(w) => (Tok::WeightClose(w, matched), matched.len()),
                        None => (Tok::Plain(&rest[..1]), 1),
                    }
                } else {
                    (Tok::Plain(&rest[..1]), 1)
                }
            }
            _ => {
                let len = rest
                    .find(['\\', '(', ')', '[', ']', ':'])
                    .unwrap_or(rest.len());
                (Tok::Plain(&rest[..len]), len)
            }
        };
        out.push(tok);
        rest = &rest[len..];
    }
    out
}

/// Python `float()` of `[+-]?[.\d]+` text (`.5`, `5.`, `+1.2`); `None` for `1.2.3` or `.`.
fn parse_python_float(s: &str) -> Option<f64> {
    let digits = s.trim_start_matches(['+', '-']);
    if digits.matches('.').count() > 1 || !digits.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Appends `text` split at A1111's `re_break` (`\s*\bBREAK\b\s*`), with a BREAK between parts.
fn push_with_breaks(res: &mut Vec<(String, f64)>, text: &str) {
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("BREAK") {
        let at = search + found;
        let end = at + 5;
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let before_ok = text[..at].chars().next_back().is_none_or(|c| !word(c));
        let after_ok = text[end..].chars().next().is_none_or(|c| !word(c));
        if before_ok && after_ok {
            let ws_start = text[start..at]
                .char_indices()
                .rev()
                .take_while(|(_, c)| c.is_whitespace())
                .last()
                .map_or(at, |(i, _)| start + i);
            let ws_end = text[end..]
                .char_indices()
                .find(|(_, c)| !c.is_whitespace())
                .map_or(text.len(), |(i, _)| end + i);
            parts.push(&text[start..ws_start]);
            start = ws_end;
            search = ws_end;
        } else {
            search = at + 1;
        }
    }
    parts.push(&text[start..]);
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            res.push(("BREAK".to_owned(), -1.0));
        }
        res.push((part.to_owned(), 1.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str, weight: f64) -> Piece {
        Piece::Text {
            text: text.to_owned(),
            weight,
        }
    }

    fn close(got: &[Piece], want: &[Piece]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            match (g, w) {
                (Piece::Text { text: a, weight: x }, Piece::Text { text: b, weight: y }) => {
                    assert_eq!(a, b);
                    assert!((x - y).abs() < 1e-12, "{a}: {x} vs {y}");
                }
                (Piece::Break, Piece::Break) => {}
                _ => panic!("{got:?} vs {want:?}"),
            }
        }
    }

    /// The doctests of A1111's `parse_prompt_attention`.
    #[test]
    fn a1111_doctests_hold() {
        close(
            &parse_prompt_attention("normal text"),
            &[t("normal text", 1.0)],
        );
        close(
            &parse_prompt_attention("an (important) word"),
            &[t("an ", 1.0), t("important", 1.1), t(" word", 1.0)],
        );
        close(
            &parse_prompt_attention("(unbalanced"),
            &[t("unbalanced", 1.1)],
        );
        close(
            &parse_prompt_attention("\\(literal\\]"),
            &[t("(literal]", 1.0)],
        );
        close(
            &parse_prompt_attention("(unnecessary)(parens)"),
            &[t("unnecessaryparens", 1.1)],
        );
        close(
            &parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            &[
                t("a ", 1.0),
                t("house", 1.573_000_000_000_000_4),
                t(" ", 1.1),
                t("on", 1.0),
                t(" a ", 1.1),
                t("hill", 0.55),
                t(", sun, ", 1.1),
                t("sky", 1.464_100_000_000_000_6),
                t(".", 1.1),
            ],
        );
    }

    #[test]
    fn break_inside_brackets_is_weighted_text() {
        close(
            &parse_prompt_attention("(a BREAK b)"),
            &[t("a", 1.1), t("BREAK", -1.1), t("b", 1.1)],
        );
    }

    #[test]
    fn break_splits_on_whole_words_only() {
        close(
            &parse_prompt_attention("a  BREAK\tb BREAKFAST"),
            &[t("a", 1.0), Piece::Break, t("b BREAKFAST", 1.0)],
        );
    }
}
