//! NovelAI: `Comment` JSON plus `Title`, `Description`, `Software`, `Source` text chunks (or
//! the same keys in stealth JSON, or EXIF `UserComment` `{"Comment": ..}` in WebP).
//!
//! Field names from NovelAI images (`Comment`: `prompt`, `uc`, `steps`, `scale`, `seed`,
//! `sampler`, `noise_schedule`, `width`, `height`, `strength`, `request_type`, V4 `v4_prompt`
//! / `v4_negative_prompt` `caption.base_caption`) as read by `LlmKira/novelai-python`
//! `ImageMetadata` and `d3x-at/sd-parsers` `parsers/novelai.py`.

use serde_json::Value;

use crate::text::{TextEntry, parse_json_lenient};
use crate::{GenerationParams, Source, entry, json_to_string};

fn base_caption(v: Option<&Value>) -> Option<String> {
    v?.get("caption")?
        .get("base_caption")?
        .as_str()
        .map(str::to_owned)
}

/// Whether a `Comment` text is NovelAI's JSON (PNG `Comment` is also a standard keyword that
/// editors fill with free text).
pub(crate) fn is_novelai_comment(text: &str) -> bool {
    matches!(
        parse_json_lenient(text),
        Some(Value::Object(map)) if ["prompt", "uc", "steps", "req_type", "request_type", "v4_prompt"]
            .iter()
            .any(|k| map.contains_key(*k))
    )
}

pub(crate) fn parse(entries: &[TextEntry]) -> GenerationParams {
    let comment = entry(entries, "Comment").unwrap_or("");
    let mut params = GenerationParams::new(Source::NovelAi, comment);
    let json = parse_json_lenient(comment);
    let Some(Value::Object(map)) = json else {
        if !comment.is_empty() {
            params
                .findings
                .push("NovelAI `Comment` is not a JSON object".to_owned());
        }
        params.prompt = entry(entries, "Description").unwrap_or("").to_owned();
        params.model = entry(entries, "Source").map(str::to_owned);
        return params;
    };
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    params.prompt = get("prompt")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| base_caption(get("v4_prompt")))
        .or_else(|| entry(entries, "Description").map(str::to_owned))
        .unwrap_or_default();
    params.negative_prompt = get("uc")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| base_caption(get("v4_negative_prompt")))
        .unwrap_or_default();
    params.steps = get("steps").and_then(Value::as_u64);
    params.seed = get("seed").and_then(Value::as_u64);
    params.cfg_scale = get("scale").and_then(Value::as_f64);
    params.width = get("width")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    params.height = get("height")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok());
    params.sampler = get("sampler").and_then(Value::as_str).map(str::to_owned);
    params.scheduler = get("noise_schedule")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // `strength` is present on every request but only used by img2img.
    if get("request_type").and_then(Value::as_str) == Some("Img2ImgRequest") {
        params.denoising_strength = get("strength").and_then(Value::as_f64);
    }
    // The model is named only by `Source` ("NovelAI Diffusion V4.5 4BDE2A90").
    params.model = entry(entries, "Source").map(str::to_owned);
    let used = [
        "prompt",
        "uc",
        "steps",
        "seed",
        "scale",
        "width",
        "height",
        "sampler",
        "noise_schedule",
    ];
    for (k, v) in &map {
        if used.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        if k == "strength" && params.denoising_strength.is_some() {
            continue;
        }
        params.extra.insert(k.clone(), json_to_string(v));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(k: &str, v: &str) -> TextEntry {
        TextEntry {
            key: k.into(),
            text: v.into(),
        }
    }

    #[test]
    fn v4_captions_are_used_without_prompt() {
        let p = parse(&[
            e(
                "Comment",
                r#"{"v4_prompt": {"caption": {"base_caption": "a fox"}}, "v4_negative_prompt": {"caption": {"base_caption": "bad"}}, "steps": 28, "scale": 5.0, "seed": 9, "sampler": "k_euler", "noise_schedule": "karras", "width": 832, "height": 1216, "strength": 0.7, "request_type": "PromptGenerateRequest"}"#,
            ),
            e("Source", "NovelAI Diffusion V4.5 4BDE2A90"),
        ]);
        assert_eq!(p.prompt, "a fox");
        assert_eq!(p.negative_prompt, "bad");
        assert_eq!(p.scheduler.as_deref(), Some("karras"));
        assert_eq!(p.denoising_strength, None);
        assert_eq!(p.extra.get("strength").map(String::as_str), Some("0.7"));
        assert_eq!(p.model.as_deref(), Some("NovelAI Diffusion V4.5 4BDE2A90"));
    }

    #[test]
    fn broken_comment_falls_back_to_description() {
        let p = parse(&[e("Comment", "{oops"), e("Description", "a fox")]);
        assert_eq!(p.prompt, "a fox");
        assert_eq!(p.findings.len(), 1);
    }
}
