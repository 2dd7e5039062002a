//! InvokeAI: `invokeai_metadata` JSON (3.x and later), `sd-metadata` JSON (2.x) and the older
//! `Dream` command line.
//!
//! Field names from InvokeAI `invokeai/app/invocations/metadata.py` `CoreMetadataInvocation`
//! (3.x+: `positive_prompt`, `negative_prompt`, `width`, `height`, `seed`, `cfg_scale`,
//! `steps`, `scheduler`, `model{name|model_name, hash}`, `vae`, `loras[{model|lora, weight}]`,
//! `clip_skip`, `strength`), and InvokeAI 2.x `ldm/invoke/pngwriter.py` (`sd-metadata`,
//! `Dream`: `"prompt" -s steps -S seed -W width -H height -C cfg -A sampler -f strength`). In
//! 2.x a prompt's `[bracketed]` words are its negative prompt.

use serde_json::Value;

use crate::text::{TextEntry, parse_json_lenient};
use crate::{GenerationParams, Lora, Source, entry, json_to_string};

pub(crate) fn parse(entries: &[TextEntry]) -> GenerationParams {
    if let Some(text) = entry(entries, "invokeai_metadata") {
        return parse_metadata(text);
    }
    if let Some(text) = entry(entries, "sd-metadata") {
        return parse_sd_metadata(text);
    }
    let dream = entry(entries, "Dream")
        .or_else(|| entry(entries, "dream"))
        .unwrap_or("");
    parse_dream(dream)
}

fn model_name(v: &Value) -> Option<String> {
    v.get("name")
        .or_else(|| v.get("model_name"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn number_u32(v: Option<&Value>) -> Option<u32> {
    v?.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn parse_metadata(text: &str) -> GenerationParams {
    let mut params = GenerationParams::new(Source::InvokeAi, text);
    let Some(Value::Object(map)) = parse_json_lenient(text) else {
        params
            .findings
            .push("InvokeAI `invokeai_metadata` is not a JSON object".to_owned());
        return params;
    };
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    let string = |k: &str| get(k).and_then(Value::as_str).map(str::to_owned);
    params.prompt = string("positive_prompt").unwrap_or_default();
    params.negative_prompt = string("negative_prompt").unwrap_or_default();
    params.width = number_u32(get("width"));
    params.height = number_u32(get("height"));
    params.seed = get("seed").and_then(Value::as_u64);
    params.steps = get("steps").and_then(Value::as_u64);
    params.cfg_scale = get("cfg_scale").and_then(Value::as_f64);
    // InvokeAI's `scheduler` names the sampling method (`euler_a`, `dpmpp_2m_k`).
    params.sampler = string("scheduler");
    params.clip_skip = number_u32(get("clip_skip")).filter(|&c| c > 0);
    params.denoising_strength = get("strength").and_then(Value::as_f64);
    if let Some(model) = get("model") {
        params.model = model_name(model);
        params.model_hash = model.get("hash").and_then(Value::as_str).map(str::to_owned);
    }
    if let Some(vae) = get("vae") {
        params.vae = model_name(vae);
        params.vae_hash = vae.get("hash").and_then(Value::as_str).map(str::to_owned);
    }
    for l in get("loras").and_then(Value::as_array).into_iter().flatten() {
        let Some(model) = l.get("model").or_else(|| l.get("lora")) else {
            continue;
        };
        let Some(name) = model_name(model) else {
            continue;
        };
        params.loras.push(Lora {
            name,
            weight: l.get("weight").and_then(Value::as_f64).unwrap_or(1.0),
            hash: model.get("hash").and_then(Value::as_str).map(str::to_owned),
        });
    }
    let used = [
        "positive_prompt",
        "negative_prompt",
        "width",
        "height",
        "seed",
        "steps",
        "cfg_scale",
        "scheduler",
        "clip_skip",
        "strength",
        "model",
        "vae",
        "loras",
    ];
    for (k, v) in &map {
        if !used.contains(&k.as_str()) && !v.is_null() {
            params.extra.insert(k.clone(), json_to_string(v));
        }
    }
    params
}

/// Splits an InvokeAI 2.x prompt into its positive part and its `[negative]` words.
fn split_brackets(prompt: &str) -> (String, String) {
    let mut positive = String::new();
    let mut negatives = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in prompt.chars() {
        match c {
            '[' => {
                if depth > 0 {
                    current.push(c);
                }
                depth += 1;
            }
            ']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    negatives.push(std::mem::take(&mut current).trim().to_owned());
                } else {
                    current.push(c);
                }
            }
            _ if depth > 0 => current.push(c),
            _ => positive.push(c),
        }
    }
    if !current.is_empty() {
        positive.push('[');
        positive.push_str(&current);
    }
    (positive.trim().to_owned(), negatives.join(", "))
}

fn parse_sd_metadata(text: &str) -> GenerationParams {
    let mut params = GenerationParams::new(Source::InvokeAi, text);
    let Some(Value::Object(map)) = parse_json_lenient(text) else {
        params
            .findings
            .push("InvokeAI `sd-metadata` is not a JSON object".to_owned());
        return params;
    };
    params.model = map
        .get("model_weights")
        .and_then(Value::as_str)
        .map(str::to_owned);
    params.model_hash = map
        .get("model_hash")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let image = map.get("image").cloned().unwrap_or(Value::Null);
    let prompt = match image.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("prompt").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let (positive, negative) = split_brackets(&prompt);
    params.prompt = positive;
    params.negative_prompt = negative;
    params.steps = image.get("steps").and_then(Value::as_u64);
    params.seed = image.get("seed").and_then(Value::as_u64);
    params.cfg_scale = image.get("cfg_scale").and_then(Value::as_f64);
    params.width = number_u32(image.get("width"));
    params.height = number_u32(image.get("height"));
    params.sampler = image
        .get("sampler")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if image.get("type").and_then(Value::as_str) == Some("img2img") {
        params.denoising_strength = image.get("strength").and_then(Value::as_f64);
    }
    for (k, v) in &map {
        if !matches!(k.as_str(), "model_weights" | "model_hash" | "image") {
            params.extra.insert(k.clone(), json_to_string(v));
        }
    }
    if let Some(img) = image.as_object() {
        let used = [
            "prompt",
            "steps",
            "seed",
            "cfg_scale",
            "width",
            "height",
            "sampler",
        ];
        for (k, v) in img {
            if !used.contains(&k.as_str()) {
                params.extra.insert(k.clone(), json_to_string(v));
            }
        }
    }
    params
}

fn parse_dream(text: &str) -> GenerationParams {
    let mut params = GenerationParams::new(Source::InvokeAi, text);
    let t = text.trim();
    let (prompt, rest) = if let Some(body) = t.strip_prefix('"') {
        match body.rfind('"') {
            Some(end) => (&body[..end], &body[end + 1..]),
            None => (body, ""),
        }
    } else {
        match t.find(" -") {
            Some(i) => (&t[..i], &t[i..]),
            None => (t, ""),
        }
    };
    let (positive, negative) = split_brackets(prompt);
    params.prompt = positive;
    params.negative_prompt = negative;
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let mut i = 0;
    while i < tokens.len() {
        let flag = tokens[i];
        let mut values = Vec::new();
        i += 1;
        while i < tokens.len() && !(tokens[i].starts_with('-') && tokens[i].parse::<f64>().is_err())
        {
            values.push(tokens[i]);
            i += 1;
        }
        let value = values.join(" ");
        match flag {
            "-s" | "--steps" => params.steps = value.parse().ok(),
            "-S" | "--seed" => params.seed = value.parse().ok(),
            "-W" | "--width" => params.width = value.parse().ok(),
            "-H" | "--height" => params.height = value.parse().ok(),
            "-C" | "--cfg_scale" => params.cfg_scale = value.parse().ok(),
            "-A" | "--sampler" => params.sampler = Some(value),
            "-f" | "--strength" => params.denoising_strength = value.parse().ok(),
            _ => {
                params.extra.insert(flag.to_owned(), value);
            }
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dream_line_is_split() {
        let p = parse_dream(
            r#""a cat [ugly, blurry] on a mat" -s 50 -S 42 -W 512 -H 768 -C 7.5 -A k_lms -U 4 0.95"#,
        );
        assert_eq!(p.prompt, "a cat  on a mat");
        assert_eq!(p.negative_prompt, "ugly, blurry");
        assert_eq!(p.steps, Some(50));
        assert_eq!(p.seed, Some(42));
        assert_eq!((p.width, p.height), (Some(512), Some(768)));
        assert_eq!(p.cfg_scale, Some(7.5));
        assert_eq!(p.sampler.as_deref(), Some("k_lms"));
        assert_eq!(p.extra.get("-U").map(String::as_str), Some("4 0.95"));
    }

    #[test]
    fn unclosed_bracket_stays_in_prompt() {
        assert_eq!(split_brackets("a [b"), ("a [b".to_owned(), String::new()));
    }
}
