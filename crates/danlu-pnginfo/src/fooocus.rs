//! JSON `parameters` chunks: Fooocus, RuinedFooocus and SwarmUI.
//!
//! Fooocus (`lllyasviel/Fooocus` `modules/meta_parser.py` `FooocusMetadataParser`): `prompt`,
//! `negative_prompt`, `steps`, `guidance_scale`, `seed` (a string), `resolution` (`"(w, h)"`),
//! `sampler`, `scheduler`, `base_model`, `base_model_hash`, `loras`, `clip_skip`, `vae`.
//! RuinedFooocus: `Prompt`, `Negative`, `steps`, `cfg`, `width`, `height`, `seed`,
//! `sampler_name`, `scheduler`, `base_model_name`, `base_model_hash`, `loras`, `denoise`,
//! `clip_skip`. SwarmUI (`mcmonkeyprojects/SwarmUI`): `sui_image_params` with `prompt`,
//! `negativeprompt`, `model`, `seed`, `steps`, `cfgscale`, `width`, `height`, `sampler`,
//! `scheduler`, `clipstopatlayer`, `vae`, `loras`/`loraweights`, and `sui_models` hashes.

use serde_json::{Map, Value};

use crate::{GenerationParams, Lora, Source, json_to_string};

fn as_u64(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn as_f64(v: Option<&Value>) -> Option<f64> {
    let v = v?;
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn as_string(v: Option<&Value>) -> Option<String> {
    v.filter(|v| !v.is_null()).map(json_to_string)
}

/// `"(768, 1280)"` or `"768x1280"`.
fn parse_resolution(s: &str) -> Option<(u32, u32)> {
    let inner = s.trim().trim_start_matches('(').trim_end_matches(')');
    let (w, h) = inner.split_once(',').or_else(|| inner.split_once('x'))?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

fn loras_from(v: Option<&Value>) -> Vec<Lora> {
    let mut out = Vec::new();
    for l in v.and_then(Value::as_array).into_iter().flatten() {
        let (name, weight, hash) = match l {
            Value::Array(a) => (
                a.first().and_then(Value::as_str),
                a.get(1).and_then(|w| as_f64(Some(w))),
                a.get(2).and_then(Value::as_str),
            ),
            Value::Object(o) => (
                o.get("name")
                    .or_else(|| o.get("model"))
                    .and_then(Value::as_str),
                as_f64(o.get("weight")),
                o.get("hash").and_then(Value::as_str),
            ),
            _ => continue,
        };
        let Some(name) = name.filter(|n| !n.is_empty() && *n != "None") else {
            continue;
        };
        out.push(Lora {
            name: name.to_owned(),
            weight: weight.unwrap_or(1.0),
            hash: hash.map(str::to_owned),
        });
    }
    out
}

fn keep_rest(params: &mut GenerationParams, map: &Map<String, Value>, used: &[&str]) {
    for (k, v) in map {
        if !used.contains(&k.as_str()) && !v.is_null() {
            params.extra.insert(k.clone(), json_to_string(v));
        }
    }
}

/// Fooocus or RuinedFooocus `parameters` JSON.
pub(crate) fn parse_fooocus(json: &Value, raw: &str) -> GenerationParams {
    let mut params = GenerationParams::new(Source::Fooocus, raw);
    let Some(map) = json.as_object() else {
        params
            .findings
            .push("`parameters` JSON is not an object".to_owned());
        return params;
    };
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    if map.contains_key("Prompt") {
        // RuinedFooocus.
        params.prompt = as_string(get("Prompt")).unwrap_or_default();
        params.negative_prompt = as_string(get("Negative")).unwrap_or_default();
        params.cfg_scale = as_f64(get("cfg"));
        params.width = as_u64(get("width")).and_then(|v| u32::try_from(v).ok());
        params.height = as_u64(get("height")).and_then(|v| u32::try_from(v).ok());
        params.sampler = as_string(get("sampler_name"));
        params.model = as_string(get("base_model_name"));
        params.denoising_strength = as_f64(get("denoise"));
        params.loras = loras_from(get("loras"));
        keep_rest(
            &mut params,
            map,
            &[
                "Prompt",
                "Negative",
                "steps",
                "cfg",
                "width",
                "height",
                "seed",
                "sampler_name",
                "scheduler",
                "base_model_name",
                "base_model_hash",
                "loras",
                "denoise",
                "clip_skip",
            ],
        );
    } else {
        params.prompt = as_string(get("prompt")).unwrap_or_default();
        params.negative_prompt = as_string(get("negative_prompt")).unwrap_or_default();
        params.cfg_scale = as_f64(get("guidance_scale"));
        if let Some((w, h)) = get("resolution")
            .and_then(Value::as_str)
            .and_then(parse_resolution)
        {
            params.width = Some(w);
            params.height = Some(h);
        }
        params.sampler = as_string(get("sampler"));
        params.model = as_string(get("base_model"));
        params.vae = as_string(get("vae")).filter(|v| !v.starts_with("Default"));
        params.loras = loras_from(get("loras"));
        keep_rest(
            &mut params,
            map,
            &[
                "prompt",
                "negative_prompt",
                "steps",
                "guidance_scale",
                "resolution",
                "seed",
                "sampler",
                "scheduler",
                "base_model",
                "base_model_hash",
                "loras",
                "clip_skip",
                "vae",
            ],
        );
    }
    params.steps = as_u64(get("steps"));
    params.seed = as_u64(get("seed"));
    params.scheduler = as_string(get("scheduler"));
    params.model_hash = as_string(get("base_model_hash"));
    params.clip_skip = as_u64(get("clip_skip")).and_then(|v| u32::try_from(v).ok());
    params
}

/// SwarmUI `parameters` JSON (`sui_image_params`).
pub(crate) fn parse_swarmui(json: &Value, raw: &str) -> GenerationParams {
    let mut params = GenerationParams::new(Source::SwarmUi, raw);
    let Some(map) = json.get("sui_image_params").and_then(Value::as_object) else {
        params
            .findings
            .push("`sui_image_params` is not an object".to_owned());
        return params;
    };
    let get = |k: &str| map.get(k).filter(|v| !v.is_null());
    params.prompt = as_string(get("prompt")).unwrap_or_default();
    params.negative_prompt = as_string(get("negativeprompt")).unwrap_or_default();
    params.model = as_string(get("model"));
    params.seed = as_u64(get("seed"));
    params.steps = as_u64(get("steps"));
    params.cfg_scale = as_f64(get("cfgscale"));
    params.width = as_u64(get("width")).and_then(|v| u32::try_from(v).ok());
    params.height = as_u64(get("height")).and_then(|v| u32::try_from(v).ok());
    params.sampler = as_string(get("sampler"));
    params.scheduler = as_string(get("scheduler"));
    params.vae = as_string(get("vae"));
    params.denoising_strength = as_f64(get("initimagecreativity"));
    params.clip_skip = get("clipstopatlayer")
        .and_then(Value::as_i64)
        .and_then(|v| u32::try_from(v.unsigned_abs()).ok());
    let names = get("loras").and_then(Value::as_array);
    let weights = get("loraweights").and_then(Value::as_array);
    for (i, name) in names.into_iter().flatten().enumerate() {
        let Some(name) = name.as_str() else { continue };
        params.loras.push(Lora {
            name: name.to_owned(),
            weight: as_f64(weights.and_then(|w| w.get(i))).unwrap_or(1.0),
            hash: None,
        });
    }
    // `sui_models`: [{"name", "param", "hash": "0x<sha256>"}].
    for m in json
        .get("sui_models")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let hash = m
            .get("hash")
            .and_then(Value::as_str)
            .map(|h| h.strip_prefix("0x").unwrap_or(h).to_owned());
        match m.get("param").and_then(Value::as_str) {
            Some("model") => params.model_hash = hash,
            Some("vae") => params.vae_hash = hash,
            Some("loras") => {
                let name = m.get("name").and_then(Value::as_str).unwrap_or("");
                if let Some(l) = params.loras.iter_mut().find(|l| {
                    name == l.name || name.strip_suffix(".safetensors") == Some(l.name.as_str())
                }) {
                    l.hash = hash;
                }
            }
            _ => {}
        }
    }
    keep_rest(
        &mut params,
        map,
        &[
            "prompt",
            "negativeprompt",
            "model",
            "seed",
            "steps",
            "cfgscale",
            "width",
            "height",
            "sampler",
            "scheduler",
            "vae",
            "initimagecreativity",
            "clipstopatlayer",
            "loras",
            "loraweights",
        ],
    );
    if let Some(extra) = json.get("sui_extra_data") {
        params
            .extra
            .insert("sui_extra_data".to_owned(), extra.to_string());
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fooocus_resolution_and_string_seed() {
        let j: Value = serde_json::from_str(
            r#"{"prompt": "p", "resolution": "(768, 1280)", "seed": "6952411511246973023", "loras": [["x.safetensors", 0.5, "abc"]], "vae": "Default (model)"}"#,
        )
        .unwrap();
        let p = parse_fooocus(&j, "");
        assert_eq!((p.width, p.height), (Some(768), Some(1280)));
        assert_eq!(p.seed, Some(6_952_411_511_246_973_023));
        assert_eq!(p.vae, None);
        assert_eq!(p.loras[0].hash.as_deref(), Some("abc"));
    }
}
