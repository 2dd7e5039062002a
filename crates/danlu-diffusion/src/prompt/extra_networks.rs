//! Extra-network tags in prompts: `<lora:NAME:W>`, `<lyco:NAME:TE:UNET>`, `<hypernet:NAME:W>`.
//!
//! A1111 `modules/extra_networks.py` `parse_prompt` removes every match of `<(\w+):([^>]+)>` from
//! the prompt and records its arguments split at `:`; an argument `key=value` is a named
//! argument, any other is positional (`ExtraNetworkParams`). The LoRA network
//! (`extensions-builtin/Lora/extra_networks_lora.py`, also registered as `lyco`) reads the name,
//! then the text-encoder multiplier (default 1), then the UNet multiplier (default: the
//! text-encoder one), each overridable by `te=`/`unet=`; the hypernetwork network
//! (`modules/extra_networks_hypernet.py`) reads the name and one multiplier (default 1).

/// One extra-network tag as A1111 records it (`ExtraNetworkParams`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraNetworkTag {
    /// The network kind before the first `:` (`lora`, `lyco`, `hypernet`, ...).
    pub kind: String,
    /// Every argument, split at `:`.
    pub items: Vec<String>,
    /// The arguments without `=`.
    pub positional: Vec<String>,
    /// The `key=value` arguments, in order.
    pub named: Vec<(String, String)>,
}

impl ExtraNetworkTag {
    fn new(kind: &str, args: &str) -> Self {
        let items: Vec<String> = args.split(':').map(str::to_owned).collect();
        let mut positional = Vec::new();
        let mut named = Vec::new();
        for item in &items {
            // Python `item.split('=', 2)`: exactly one `=` makes a named argument.
            let parts: Vec<&str> = item.splitn(3, '=').collect();
            if let [key, value] = parts.as_slice() {
                named.push(((*key).to_owned(), (*value).to_owned()));
            } else {
                positional.push(item.clone());
            }
        }
        Self {
            kind: kind.to_owned(),
            items,
            positional,
            named,
        }
    }

    /// The last value given for the named argument `key`.
    pub fn named(&self, key: &str) -> Option<&str> {
        self.named
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A prompt with its extra-network tags removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraNetworkPrompt {
    /// The prompt without the tags (the text the tokenizer sees).
    pub prompt: String,
    /// The tags, in prompt order.
    pub tags: Vec<ExtraNetworkTag>,
}

/// Python's `\w` for one character (letters, digits, underscore, Unicode aware).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Removes the extra-network tags from `prompt` (A1111 `extra_networks.parse_prompt`).
pub fn parse_extra_networks(prompt: &str) -> ExtraNetworkPrompt {
    let mut out = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(open) = rest.find('<') {
        let (before, from) = rest.split_at(open);
        out.push_str(before);
        match match_tag(&from[1..]) {
            Some((kind, args, used)) => {
                tags.push(ExtraNetworkTag::new(kind, args));
                rest = &from[1 + used..];
            }
            None => {
                out.push('<');
                rest = &from[1..];
            }
        }
    }
    out.push_str(rest);
    ExtraNetworkPrompt { prompt: out, tags }
}

/// Matches `(\w+):([^>]+)>` at the start of `s`; returns kind, arguments and bytes used.
fn match_tag(s: &str) -> Option<(&str, &str, usize)> {
    let kind_len: usize = s
        .chars()
        .take_while(|&c| is_word(c))
        .map(char::len_utf8)
        .sum();
    if kind_len == 0 || !s[kind_len..].starts_with(':') {
        return None;
    }
    let args_start = kind_len + 1;
    let close = s[args_start..].find('>')?;
    if close == 0 {
        return None;
    }
    Some((
        &s[..kind_len],
        &s[args_start..args_start + close],
        args_start + close + 1,
    ))
}

/// A LoRA/LyCORIS tag read as `extra_networks_lora.py` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraTag {
    /// The network's name (file stem or alias).
    pub name: String,
    /// Multiplier of the text-encoder patches.
    pub te_multiplier: f32,
    /// Multiplier of the UNet patches.
    pub unet_multiplier: f32,
    /// LyCORIS dynamic dimension (`dyn=`), when given (not applied).
    pub dyn_dim: Option<i64>,
}

/// A hypernetwork tag read as `extra_networks_hypernet.py` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct HypernetTag {
    /// The hypernetwork's name (file stem).
    pub name: String,
    /// Its strength.
    pub multiplier: f32,
}

/// The networks a prompt asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptNetworks {
    /// `<lora:...>` and `<lyco:...>` tags, in order.
    pub loras: Vec<LoraTag>,
    /// `<hypernet:...>` tags, in order.
    pub hypernets: Vec<HypernetTag>,
    /// Tags that could not be read (a kind no network handles, a number Python's `float`
    /// refuses), as messages for the caller's result.
    pub warnings: Vec<String>,
}

/// Python `float(text)` for the forms prompts use (surrounding spaces allowed).
fn parse_python_float(text: &str) -> Option<f32> {
    let t = text.trim();
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => return Some(f32::INFINITY),
        "-inf" | "-infinity" => return Some(f32::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Some(f32::NAN),
        _ => {}
    }
    let cleaned = t.replace('_', "");
    // Python evaluates the multiplier as a float64 and torch stores it as float32 later.
    cleaned.parse::<f64>().ok().map(|v| v as f32)
}

impl PromptNetworks {
    /// Reads the LoRA and hypernetwork tags of a parsed prompt.
    pub fn from_tags(tags: &[ExtraNetworkTag]) -> Self {
        let mut out = Self::default();
        for tag in tags {
            let text = || format!("<{}:{}>", tag.kind, tag.items.join(":"));
            match tag.kind.as_str() {
                "lora" | "lyco" => match read_lora(tag) {
                    Ok(l) => out.loras.push(l),
                    Err(why) => out.warnings.push(format!("{}: {why}", text())),
                },
                "hypernet" => {
                    let name = tag.items.first().cloned().unwrap_or_default();
                    let multiplier = match tag.items.get(1) {
                        None => Some(1.0),
                        Some(v) => parse_python_float(v),
                    };
                    match multiplier {
                        Some(multiplier) => out.hypernets.push(HypernetTag { name, multiplier }),
                        None => out
                            .warnings
                            .push(format!("{}: the strength is not a number", text())),
                    }
                }
                other => out
                    .warnings
                    .push(format!("{}: no extra network `{other}`", text())),
            }
        }
        out
    }
}

fn read_lora(tag: &ExtraNetworkTag) -> Result<LoraTag, String> {
    let name = tag
        .positional
        .first()
        .cloned()
        .ok_or_else(|| "no network name".to_owned())?;
    let float = |v: &str, what: &str| {
        parse_python_float(v).ok_or_else(|| format!("the {what} multiplier `{v}` is not a number"))
    };
    let mut te = match tag.positional.get(1) {
        Some(v) => float(v, "text encoder")?,
        None => 1.0,
    };
    if let Some(v) = tag.named("te") {
        te = float(v, "text encoder")?;
    }
    let mut unet = match tag.positional.get(2) {
        Some(v) => float(v, "UNet")?,
        None => te,
    };
    if let Some(v) = tag.named("unet") {
        unet = float(v, "UNet")?;
    }
    let mut dyn_dim = match tag.positional.get(3) {
        Some(v) => Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("the dimension `{v}` is not an integer"))?,
        ),
        None => None,
    };
    if let Some(v) = tag.named("dyn") {
        dyn_dim = Some(
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("the dimension `{v}` is not an integer"))?,
        );
    }
    Ok(LoraTag {
        name,
        te_multiplier: te,
        unet_multiplier: unet,
        dyn_dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_removed_and_the_rest_of_the_prompt_is_kept() {
        let p = parse_extra_networks("a <lora:foo:0.5> cat, <hypernet:bar:0.7>dog <b>");
        assert_eq!(p.prompt, "a  cat, dog <b>");
        assert_eq!(p.tags.len(), 2);
        assert_eq!(p.tags[0].kind, "lora");
        assert_eq!(p.tags[0].items, ["foo", "0.5"]);
        assert_eq!(p.tags[1].kind, "hypernet");
    }

    #[test]
    fn a_tag_needs_a_word_kind_a_colon_and_arguments() {
        for text in [
            "<lora>",
            "<lora:>",
            "<lo ra:x>",
            "<:x>",
            "< lora:x>",
            "<lora:x",
        ] {
            let p = parse_extra_networks(text);
            assert_eq!(p.prompt, text, "{text}");
            assert!(p.tags.is_empty(), "{text}");
        }
        // `[^>]+` spans spaces and `<`: the match starts at the last `<` that precedes a word.
        let p = parse_extra_networks("<<lora:a b<c>");
        assert_eq!(p.prompt, "<");
        assert_eq!(p.tags[0].items, ["a b<c"]);
    }

    #[test]
    fn lora_multipliers_follow_extra_networks_lora() {
        let read = |s: &str| PromptNetworks::from_tags(&parse_extra_networks(s).tags);
        let one = read("<lora:a>");
        assert_eq!(one.loras[0].te_multiplier, 1.0);
        assert_eq!(one.loras[0].unet_multiplier, 1.0);
        let te = read("<lora:a:0.4>");
        assert_eq!(
            (te.loras[0].te_multiplier, te.loras[0].unet_multiplier),
            (0.4, 0.4)
        );
        let both = read("<lyco:a:0.4:0.9>");
        assert_eq!(
            (both.loras[0].te_multiplier, both.loras[0].unet_multiplier),
            (0.4, 0.9)
        );
        let named = read("<lora:a:unet=0.3:te=0.2>");
        assert_eq!(
            (named.loras[0].te_multiplier, named.loras[0].unet_multiplier),
            (0.2, 0.3)
        );
        // A named `te` moves the default of `unet` as well (unet defaults to te).
        let te_only = read("<lora:a:te=0.25>");
        assert_eq!(te_only.loras[0].unet_multiplier, 0.25);
        let dynamic = read("<lora:a:1:1:8>");
        assert_eq!(dynamic.loras[0].dyn_dim, Some(8));
    }

    #[test]
    fn bad_tags_become_warnings() {
        let n = PromptNetworks::from_tags(
            &parse_extra_networks("<lora:a:x> <foo:b> <hypernet:h:y> <hypernet:h>").tags,
        );
        assert!(n.loras.is_empty());
        assert_eq!(n.warnings.len(), 3, "{:?}", n.warnings);
        assert!(n.warnings[1].contains("no extra network `foo`"));
        assert_eq!(
            n.hypernets,
            [HypernetTag {
                name: "h".into(),
                multiplier: 1.0
            }]
        );
    }
}
