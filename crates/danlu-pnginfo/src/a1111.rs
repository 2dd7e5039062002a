//! AUTOMATIC1111 infotext: parsing exactly as A1111 does, and writing it back.
//!
//! Parsing follows A1111 `modules/infotext_utils.py` `parse_generation_parameters`: the text is
//! stripped and split into lines; the last line holds the parameters when `re_param` finds at
//! least three `key: value` pairs in it; lines before it are the prompt until a line starting
//! `Negative prompt:`, after which they are the negative prompt. Writing follows
//! `modules/processing.py` `create_infotext` (key order) and `infotext_utils.quote`.

use crate::{Embedding, GenerationParams, Lora, Source};

/// One `key: value` pair as `re_param` finds it, value unquoted.
type Pair = (String, String);

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re_param = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'` at one position.
///
/// Returns the key, the raw value and the end of the match.
fn match_param_at(c: &[char], start: usize) -> Option<(String, String, usize)> {
    let len = c.len();
    let mut p = start;
    while p < len && c[p].is_whitespace() {
        p += 1;
    }
    if p >= len || !is_word(c[p]) {
        return None;
    }
    let key_start = p;
    p += 1;
    let run_start = p;
    while p < len && (is_word(c[p]) || matches!(c[p], ' ' | '-' | '/')) {
        p += 1;
    }
    // `[\w \-/]+` needs one character, and `:` must follow the whole run (it is not in the
    // class, so backtracking cannot find it earlier).
    if p == run_start || p >= len || c[p] != ':' {
        return None;
    }
    let key: String = c[key_start..p].iter().collect();
    p += 1;
    while p < len && c[p].is_whitespace() {
        p += 1;
    }
    // First alternative: a quoted value followed by `,` or the end.
    if p < len && c[p] == '"' {
        let mut q = p + 1;
        let mut n = 0;
        let mut close = None;
        while q < len {
            match c[q] {
                '\\' if q + 1 < len && c[q + 1] != '\n' => {
                    q += 2;
                    n += 1;
                }
                '\\' => break,
                '"' => {
                    if n > 0 {
                        close = Some(q);
                    }
                    break;
                }
                _ => {
                    q += 1;
                    n += 1;
                }
            }
        }
        if let Some(q) = close {
            if q + 1 == len {
                return Some((key, c[p..=q].iter().collect(), q + 1));
            }
            if c[q + 1] == ',' {
                return Some((key, c[p..=q].iter().collect(), q + 2));
            }
        }
    }
    // Not in A1111: Civitai writes unquoted JSON (`Hashes: {..}`, `Civitai resources: [..]`)
    // that A1111's regex would cut at the first comma; a balanced JSON value followed by `,` or
    // the end is kept whole, as Civitai and other readers do.
    if p < len
        && matches!(c[p], '{' | '[')
        && let Some(q) = balanced_json_end(c, p)
        && (q == len || c[q] == ',')
    {
        let end = if q < len { q + 1 } else { q };
        return Some((key, c[p..q].iter().collect(), end));
    }
    // Second alternative: everything up to the next comma.
    let mut q = p;
    while q < len && c[q] != ',' {
        q += 1;
    }
    let value: String = c[p..q].iter().collect();
    let end = if q < len { q + 1 } else { q };
    Some((key, value, end))
}

/// The index after the bracket closing the JSON value that opens at `start`, if any.
fn balanced_json_end(c: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &ch) in c.iter().enumerate().skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_string = false;
            }
            continue;
        }
        match ch {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `re_param.findall(line)`, with values unquoted as A1111 does.
fn find_params(line: &str) -> Vec<Pair> {
    let c: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match match_param_at(&c, i) {
            Some((k, v, end)) => {
                out.push((k, unquote(&v)));
                i = end.max(i + 1);
            }
            None => i += 1,
        }
    }
    out
}

/// A1111 `infotext_utils.unquote`: JSON-decodes a value in double quotes, else keeps it.
fn unquote(v: &str) -> String {
    if v.len() >= 2
        && v.starts_with('"')
        && v.ends_with('"')
        && let Ok(s) = serde_json::from_str::<String>(v)
    {
        return s;
    }
    v.to_owned()
}

/// A1111 `infotext_utils.quote`: JSON-quotes a value holding `,`, `:` or a newline.
///
/// One addition: a value that starts and ends with `"` is quoted too, since A1111's own
/// `unquote` would otherwise strip its quotes on reading.
fn quote(v: &str) -> String {
    let wrapped = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
    if !wrapped && !v.contains([',', '\n', ':']) {
        return v.to_owned();
    }
    serde_json::to_string(v).unwrap_or_else(|_| v.to_owned())
}

/// Splits `WxH` (A1111 `re_imagesize = r"^(\d+)x(\d+)$"`).
fn parse_size(v: &str) -> Option<(u32, u32)> {
    let (w, h) = v.split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(w) || !digits(h) {
        return None;
    }
    Some((w.parse().ok()?, h.parse().ok()?))
}

/// Whether text has an A1111 parameter line (three or more `key: value` pairs on its last
/// line) or a `Negative prompt:` line.
pub(crate) fn looks_like_infotext(text: &str) -> bool {
    let stripped = text.trim();
    let last = stripped.rsplit('\n').next().unwrap_or("");
    find_params(last).len() >= 3
        || stripped
            .split('\n')
            .any(|l| l.trim().starts_with("Negative prompt:"))
}

/// Parses A1111 infotext (also Forge, SD.Next, Civitai, and the A1111-style text other tools
/// write) into parameters; never fails.
///
/// Keys with a contract field fill it; the others go to `extra` with their values unquoted.
/// `<lora:name:weight>` tags in the prompt become `loras`, joined by name with `Lora hashes`;
/// `TI hashes` become `embeddings`; Civitai's `Hashes` JSON fills missing hashes.
pub fn parse_a1111(text: &str) -> GenerationParams {
    let mut params = GenerationParams::new(Source::A1111, text);
    let stripped = text.trim();
    let mut lines: Vec<&str> = stripped.split('\n').collect();
    let mut last = lines.pop().unwrap_or("");
    let mut pairs = find_params(last);
    if pairs.len() < 3 {
        lines.push(last);
        last = "";
        pairs.clear();
    }
    let _ = last;
    let mut prompt = String::new();
    let mut negative = String::new();
    let mut done_with_prompt = false;
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            done_with_prompt = true;
            line = rest.trim();
        }
        let target = if done_with_prompt {
            &mut negative
        } else {
            &mut prompt
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    params.prompt = prompt;
    params.negative_prompt = negative;
    params.loras = extra_network_loras(&params.prompt);

    // A later duplicate key wins, as in A1111's dict.
    let mut lora_hashes = None;
    let mut ti_hashes = None;
    let mut civitai_hashes = None;
    for (k, v) in pairs {
        let bad_number = |params: &mut GenerationParams, k: &str, v: &str| {
            params
                .findings
                .push(format!("`{k}: {v}` is not a valid number; kept in extra"));
            params.extra.insert(k.to_owned(), v.to_owned());
        };
        let t = v.trim();
        match k.as_str() {
            "Steps" => match t.parse() {
                Ok(n) => params.steps = Some(n),
                Err(_) => bad_number(&mut params, &k, &v),
            },
            "Seed" => match t.parse() {
                Ok(n) => params.seed = Some(n),
                Err(_) => bad_number(&mut params, &k, &v),
            },
            "CFG scale" => match t.parse() {
                Ok(n) => params.cfg_scale = Some(n),
                Err(_) => bad_number(&mut params, &k, &v),
            },
            "Denoising strength" => match t.parse() {
                Ok(n) => params.denoising_strength = Some(n),
                Err(_) => bad_number(&mut params, &k, &v),
            },
            "Clip skip" => match t.parse() {
                Ok(n) => params.clip_skip = Some(n),
                Err(_) => bad_number(&mut params, &k, &v),
            },
            "Size" => match parse_size(&v) {
                Some((w, h)) => {
                    params.width = Some(w);
                    params.height = Some(h);
                }
                None => bad_number(&mut params, &k, &v),
            },
            "Sampler" => params.sampler = Some(v),
            "Schedule type" => params.scheduler = Some(v),
            "Model" => params.model = Some(v),
            "Model hash" => params.model_hash = Some(v),
            "VAE" => params.vae = Some(v),
            "VAE hash" => params.vae_hash = Some(v),
            "Lora hashes" => lora_hashes = Some(v),
            "TI hashes" => ti_hashes = Some(v),
            "Hashes" => {
                civitai_hashes = Some(v.clone());
                params.extra.insert(k, v);
            }
            _ => {
                params.extra.insert(k, v);
            }
        }
    }
    if let Some(h) = lora_hashes {
        for (name, hash) in name_hash_list(&h) {
            set_lora_hash(&mut params.loras, &name, &hash);
        }
    }
    if let Some(h) = ti_hashes {
        for (name, hash) in name_hash_list(&h) {
            set_embedding_hash(&mut params.embeddings, &name, &hash);
        }
    }
    if let Some(h) = civitai_hashes {
        apply_civitai_hashes(&mut params, &h);
    }
    params
}

/// `"name: hash, name2: hash2"` (A1111 Lora `lora_script.py`, textual inversion
/// `textual_inversion.py`, written as `", ".join(f"{name}: {hash}")`).
fn name_hash_list(v: &str) -> Vec<(String, String)> {
    v.split(',')
        .filter_map(|item| {
            let (name, hash) = item.split_once(':')?;
            let (name, hash) = (name.trim(), hash.trim());
            (!name.is_empty()).then(|| (name.to_owned(), hash.to_owned()))
        })
        .collect()
}

fn set_lora_hash(loras: &mut Vec<Lora>, name: &str, hash: &str) {
    let hash = (!hash.is_empty()).then(|| hash.to_owned());
    match loras.iter_mut().find(|l| l.name == name) {
        Some(l) => l.hash = hash,
        None => loras.push(Lora {
            name: name.to_owned(),
            weight: 1.0,
            hash,
        }),
    }
}

fn set_embedding_hash(embeddings: &mut Vec<Embedding>, name: &str, hash: &str) {
    let hash = (!hash.is_empty()).then(|| hash.to_owned());
    match embeddings.iter_mut().find(|e| e.name == name) {
        Some(e) => e.hash = hash,
        None => embeddings.push(Embedding {
            name: name.to_owned(),
            hash,
        }),
    }
}

/// Civitai's `Hashes: {"model": .., "vae": .., "lora:name": .., "embed:name": ..}`; fills only
/// what the A1111 keys left empty.
fn apply_civitai_hashes(params: &mut GenerationParams, json: &str) {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        params
            .findings
            .push("`Hashes` is not a JSON object; kept in extra".to_owned());
        return;
    };
    for (k, v) in map {
        let Some(hash) = v.as_str() else { continue };
        if k == "model" {
            params.model_hash.get_or_insert_with(|| hash.to_owned());
        } else if k == "vae" {
            params.vae_hash.get_or_insert_with(|| hash.to_owned());
        } else if let Some(name) = k.strip_prefix("lora:").or_else(|| k.strip_prefix("lyco:")) {
            if params
                .loras
                .iter()
                .find(|l| l.name == name)
                .is_none_or(|l| l.hash.is_none())
            {
                set_lora_hash(&mut params.loras, name, hash);
            }
        } else if let Some(name) = k.strip_prefix("embed:")
            && params
                .embeddings
                .iter()
                .find(|e| e.name == name)
                .is_none_or(|e| e.hash.is_none())
        {
            set_embedding_hash(&mut params.embeddings, name, hash);
        }
    }
}

/// `<lora:name:te[:unet]>` and `<lyco:..>` tags (A1111 `modules/extra_networks.py`
/// `re_extra_net = r"<(\w+):([^>]+)>"`; the weight is the first positional number, or `te=`,
/// default 1, as in `extensions-builtin/Lora/extra_networks_lora.py`).
fn extra_network_loras(prompt: &str) -> Vec<Lora> {
    let mut out: Vec<Lora> = Vec::new();
    let mut rest = prompt;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let inner = &after[..close];
        rest = &after[close + 1..];
        let Some((kind, args)) = inner.split_once(':') else {
            continue;
        };
        if !matches!(kind, "lora" | "lyco") || args.is_empty() || !kind.chars().all(is_word) {
            continue;
        }
        let mut parts = args.split(':');
        let name = parts.next().unwrap_or("").trim().to_owned();
        if name.is_empty() {
            continue;
        }
        let mut weight = None;
        for part in parts {
            let part = part.trim();
            if let Some(te) = part.strip_prefix("te=") {
                weight = te.trim().parse().ok();
                break;
            }
            if !part.contains('=') {
                weight = part.parse().ok();
                break;
            }
        }
        if out.iter().all(|l| l.name != name) {
            out.push(Lora {
                name,
                weight: weight.unwrap_or(1.0),
                hash: None,
            });
        }
    }
    out
}

/// A number as A1111 shows CFG scale: whole values without a fraction (`7`), others in
/// shortest form (`5.5`).
fn format_cfg(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// A float as Python's `repr` writes it (`0.7`, `1.0`).
fn format_py_float(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// Extra keys that A1111's `create_infotext` places at fixed positions, after the named key.
const PLACED_AFTER: &[(&str, &[&str])] = &[
    ("CFG scale", &["Image CFG scale"]),
    ("Seed", &["Face restoration"]),
    ("Model", &["FP8 weight", "Cache FP16 weight for LoRA"]),
    (
        "VAE",
        &[
            "Variation seed",
            "Variation seed strength",
            "Seed resize from",
        ],
    ),
    ("Denoising strength", &["Conditional mask weight"]),
    (
        "Clip skip",
        &[
            "ENSD",
            "Token merging ratio",
            "Token merging ratio hr",
            "Init image hash",
            "RNG",
            "NGMS",
            "Tiling",
        ],
    ),
];

/// Keys written last, in this order (`create_infotext`: `Version`, `User` after the extras).
const WRITTEN_LAST: &[&str] = &["Version", "User"];

/// Whether `re_param` would read `key` back as one key.
fn is_writable_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(is_word)
        && key.chars().count() >= 2
        && chars.all(|c| is_word(c) || matches!(c, ' ' | '-' | '/'))
}

/// The LoRA name A1111 uses in a tag: the file stem without folders.
fn lora_tag_name(name: &str) -> &str {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    for ext in [".safetensors", ".ckpt", ".pt", ".bin"] {
        if let Some(stem) = base.strip_suffix(ext) {
            return stem;
        }
    }
    base
}

/// Writes parameters as A1111 infotext, byte for byte as A1111's `create_infotext` would.
///
/// The prompt, then `Negative prompt: ...` when there is one, then the parameter line in
/// A1111's key order: `Steps, Sampler, Schedule type, CFG scale, Seed, Size, Model hash, Model,
/// VAE hash, VAE, Denoising strength, Clip skip`, the A1111 keys kept in `extra` (those with a
/// fixed place in `create_infotext` at that place, the rest sorted), `Lora hashes`, `TI hashes`,
/// `Version`, `User`. Values with `,`, `:` or a newline are JSON-quoted (`infotext_utils.quote`).
/// `Clip skip` is left out when it is 1 or less, as A1111 does.
///
/// `extra` is written only when the parameters came from A1111 text (other tools' extras are
/// not A1111 keys), and without the image's other text entries (PNG keywords such as `Title`,
/// EXIF tags such as `Software`, other tools' chunks), which the reader also keeps in `extra`. LoRAs missing from the prompt get a `<lora:name:weight>` tag appended, so
/// that A1111 applies them.
pub fn to_a1111_infotext(p: &GenerationParams) -> String {
    let mut prompt = p.prompt.clone();
    for lora in &p.loras {
        let tag_name = lora_tag_name(&lora.name);
        let present = ["lora", "lyco"].iter().any(|kind| {
            prompt.contains(&format!("<{kind}:{tag_name}:"))
                || prompt.contains(&format!("<{kind}:{tag_name}>"))
        });
        if !present {
            if !prompt.is_empty() && !prompt.ends_with([' ', '\n']) {
                prompt.push(' ');
            }
            prompt.push_str(&format!("<lora:{tag_name}:{}>", format_cfg(lora.weight)));
        }
    }

    let extras: Vec<(&str, &str)> = if p.source == Source::A1111 {
        p.extra
            .iter()
            .filter(|(k, _)| {
                is_writable_key(k)
                    && !crate::is_container_key(k)
                    && !matches!(k.as_str(), "Lora hashes" | "TI hashes")
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    let placed: Vec<&str> = PLACED_AFTER
        .iter()
        .flat_map(|(_, keys)| keys.iter().copied())
        .chain(WRITTEN_LAST.iter().copied())
        .collect();
    let extra_value = |key: &str| extras.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);

    let mut fields: Vec<(String, String)> = Vec::new();
    let push = |fields: &mut Vec<(String, String)>, k: &str, v: Option<String>| {
        if let Some(v) = v {
            fields.push((k.to_owned(), v));
        }
        if let Some((_, keys)) = PLACED_AFTER.iter().find(|(after, _)| *after == k) {
            for key in keys.iter() {
                if let Some(v) = extra_value(key) {
                    fields.push(((*key).to_owned(), v.to_owned()));
                }
            }
        }
    };
    push(&mut fields, "Steps", p.steps.map(|s| s.to_string()));
    push(&mut fields, "Sampler", p.sampler.clone());
    push(&mut fields, "Schedule type", p.scheduler.clone());
    push(&mut fields, "CFG scale", p.cfg_scale.map(format_cfg));
    push(&mut fields, "Seed", p.seed.map(|s| s.to_string()));
    let size = match (p.width, p.height) {
        (Some(w), Some(h)) => Some(format!("{w}x{h}")),
        _ => None,
    };
    push(&mut fields, "Size", size);
    push(&mut fields, "Model hash", p.model_hash.clone());
    push(&mut fields, "Model", p.model.clone());
    push(&mut fields, "VAE hash", p.vae_hash.clone());
    push(&mut fields, "VAE", p.vae.clone());
    push(
        &mut fields,
        "Denoising strength",
        p.denoising_strength.map(format_py_float),
    );
    push(
        &mut fields,
        "Clip skip",
        p.clip_skip.filter(|&c| c > 1).map(|c| c.to_string()),
    );
    for (k, v) in &extras {
        if !placed.contains(k) {
            fields.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    let lora_hashes: Vec<String> = p
        .loras
        .iter()
        .filter_map(|l| {
            l.hash
                .as_ref()
                .map(|h| format!("{}: {h}", lora_tag_name(&l.name)))
        })
        .collect();
    if !lora_hashes.is_empty() {
        fields.push(("Lora hashes".to_owned(), lora_hashes.join(", ")));
    }
    let ti_hashes: Vec<String> = p
        .embeddings
        .iter()
        .filter_map(|e| e.hash.as_ref().map(|h| format!("{}: {h}", e.name)))
        .collect();
    if !ti_hashes.is_empty() {
        fields.push(("TI hashes".to_owned(), ti_hashes.join(", ")));
    }
    for key in WRITTEN_LAST {
        if let Some(v) = extra_value(key) {
            fields.push(((*key).to_owned(), v.to_owned()));
        }
    }

    let line = fields
        .iter()
        .map(|(k, v)| format!("{k}: {}", quote(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let negative = if p.negative_prompt.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", p.negative_prompt)
    };
    format!("{prompt}{negative}\n{line}").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_param_reads_quoted_values_with_commas() {
        let pairs = find_params(
            r#"Steps: 20, Lora hashes: "a: 1, b: 2", Hashes: {"model": "x"}, Empty: , Last: z"#,
        );
        assert_eq!(
            pairs,
            [
                ("Steps".into(), "20".into()),
                ("Lora hashes".into(), "a: 1, b: 2".into()),
                ("Hashes".into(), "{\"model\": \"x\"}".into()),
                ("Empty".into(), "".into()),
                ("Last".into(), "z".into()),
            ]
            .map(|(a, b): (String, String)| (a, b))
        );
    }

    #[test]
    fn unquoted_json_values_are_kept_whole() {
        let pairs = find_params(
            r#"Steps: 1, Hashes: {"a": "1", "b": "2"}, Res: [{"x":1,"y":"]"}], Seed: 3"#,
        );
        assert_eq!(
            pairs[1],
            ("Hashes".into(), r#"{"a": "1", "b": "2"}"#.into())
        );
        assert_eq!(pairs[2], ("Res".into(), r#"[{"x":1,"y":"]"}]"#.into()));
        assert_eq!(pairs.last().unwrap(), &("Seed".into(), "3".into()));
    }

    #[test]
    fn a_line_with_fewer_than_three_params_is_prompt() {
        let p = parse_a1111("a cat\nSteps: 20, Seed: 1");
        assert_eq!(p.prompt, "a cat\nSteps: 20, Seed: 1");
        assert_eq!(p.steps, None);
    }

    #[test]
    fn negative_prompt_and_params() {
        let p = parse_a1111(
            "a <lora:cat:0.8> photo, <lora:dog>\nmore\nNegative prompt: ugly\nbad\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, Model hash: abc, Model: m, Clip skip: 2, Denoising strength: 0.5, Hires upscale: 2, Lora hashes: \"cat: 111, dog: 222\", TI hashes: \"emb: 333\", Version: v1",
        );
        assert_eq!(p.prompt, "a <lora:cat:0.8> photo, <lora:dog>\nmore");
        assert_eq!(p.negative_prompt, "ugly\nbad");
        assert_eq!(p.steps, Some(20));
        assert_eq!(p.sampler.as_deref(), Some("DPM++ 2M"));
        assert_eq!(p.scheduler.as_deref(), Some("Karras"));
        assert_eq!(p.cfg_scale, Some(7.5));
        assert_eq!(p.seed, Some(42));
        assert_eq!((p.width, p.height), (Some(512), Some(768)));
        assert_eq!(p.clip_skip, Some(2));
        assert_eq!(p.denoising_strength, Some(0.5));
        assert_eq!(
            p.loras,
            [
                Lora {
                    name: "cat".into(),
                    weight: 0.8,
                    hash: Some("111".into())
                },
                Lora {
                    name: "dog".into(),
                    weight: 1.0,
                    hash: Some("222".into())
                },
            ]
        );
        assert_eq!(
            p.embeddings,
            [Embedding {
                name: "emb".into(),
                hash: Some("333".into())
            }]
        );
        assert_eq!(p.extra.get("Hires upscale").map(String::as_str), Some("2"));
        assert_eq!(p.extra.get("Version").map(String::as_str), Some("v1"));
        assert!(!p.extra.contains_key("Steps"));
    }

    #[test]
    fn writer_output_is_a1111_shaped() {
        let p = GenerationParams {
            source: Source::A1111,
            prompt: "a cat".into(),
            negative_prompt: "ugly".into(),
            steps: Some(20),
            sampler: Some("Euler a".into()),
            scheduler: Some("Automatic".into()),
            cfg_scale: Some(7.0),
            seed: Some(1),
            width: Some(512),
            height: Some(512),
            model_hash: Some("45a21ea00a".into()),
            model: Some("m".into()),
            vae_hash: Some("abcd".into()),
            vae: Some("v.safetensors".into()),
            clip_skip: Some(2),
            denoising_strength: Some(0.7),
            loras: vec![Lora {
                name: "x".into(),
                weight: 0.5,
                hash: Some("h1".into()),
            }],
            embeddings: vec![Embedding {
                name: "e".into(),
                hash: Some("h2".into()),
            }],
            extra: [
                ("Version".to_owned(), "v1.10.1".to_owned()),
                ("ENSD".to_owned(), "31337".to_owned()),
            ]
            .into_iter()
            .collect(),
            ..GenerationParams::default()
        };
        assert_eq!(
            to_a1111_infotext(&p),
            "a cat <lora:x:0.5>\nNegative prompt: ugly\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 45a21ea00a, Model: m, VAE hash: abcd, VAE: v.safetensors, Denoising strength: 0.7, Clip skip: 2, ENSD: 31337, Lora hashes: \"x: h1\", TI hashes: \"e: h2\", Version: v1.10.1"
        );
    }

    #[test]
    fn quote_follows_a1111() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a, b"), "\"a, b\"");
        assert_eq!(quote("a: b"), "\"a: b\"");
        assert_eq!(quote("l1\nl2"), "\"l1\\nl2\"");
        assert_eq!(quote("テ,\"x\""), "\"テ,\\\"x\\\"\"");
    }

    #[test]
    fn write_then_parse_gives_the_same_fields() {
        let text = "a, \"quoted\" cat <lora:x:0.5>\n\nNegative prompt: ugly\nSteps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5.5, Seed: 4294967296, Size: 832x1216, Model hash: 45a21ea00a, Model: waiIllustriousSDXL_v160, Denoising strength: 0.35, Clip skip: 2, Hires upscaler: \"4x-UltraSharp, v2\", ADetailer prompt: \"face: smile\", Lora hashes: \"x: 0123456789ab\", Version: v1.10.1";
        let p = parse_a1111(text);
        let written = to_a1111_infotext(&p);
        let q = parse_a1111(&written);
        assert_eq!(
            GenerationParams {
                raw: String::new(),
                ..p.clone()
            },
            GenerationParams {
                raw: String::new(),
                ..q
            }
        );
        assert_eq!(
            p.extra.get("Hires upscaler").map(String::as_str),
            Some("4x-UltraSharp, v2")
        );
    }

    #[test]
    fn bad_numbers_are_findings() {
        let p = parse_a1111("x\nSteps: many, Seed: -1, Size: big, CFG scale: 7");
        assert_eq!(p.steps, None);
        assert_eq!(p.extra.get("Seed").map(String::as_str), Some("-1"));
        assert_eq!(p.findings.len(), 3);
    }
}
