//! `POST /sdapi/v1/png-info`: the generation parameters of an uploaded image.

use crate::error::ApiResult;
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use danlu_pnginfo::{GenerationParams, Source};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A1111 `PNGInfoRequest`.
#[derive(Debug, Deserialize)]
pub(crate) struct PngInfoRequest {
    image: String,
}

/// A1111 `PNGInfoResponse`.
#[derive(Debug, Serialize)]
pub(crate) struct PngInfoResponse {
    /// The infotext (A1111's own text, or other tools' parameters written as A1111's).
    info: String,
    /// Other metadata items.
    items: Map<String, Value>,
    /// The fields as A1111 `parse_generation_parameters` names them.
    parameters: Map<String, Value>,
}

/// The infotext of parsed parameters: A1111's text as stored, other formats re-written.
pub(crate) fn infotext_of(p: &GenerationParams) -> String {
    match p.source {
        Source::None => String::new(),
        Source::A1111 => p.raw.clone(),
        _ => danlu_pnginfo::to_a1111_infotext(p),
    }
}

/// The fields as A1111's paste dictionary names them (`Prompt`, `Size-1`, ...).
pub(crate) fn a1111_fields(p: &GenerationParams) -> Map<String, Value> {
    let mut m = Map::new();
    if p.source == Source::None {
        return m;
    }
    m.insert("Prompt".into(), p.prompt.clone().into());
    m.insert("Negative prompt".into(), p.negative_prompt.clone().into());
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    put("Steps", p.steps.map(Value::from));
    put("Sampler", p.sampler.clone().map(Value::from));
    put("Schedule type", p.scheduler.clone().map(Value::from));
    put("CFG scale", p.cfg_scale.map(Value::from));
    put("Seed", p.seed.map(Value::from));
    put("Size-1", p.width.map(Value::from));
    put("Size-2", p.height.map(Value::from));
    put("Model hash", p.model_hash.clone().map(Value::from));
    put("Model", p.model.clone().map(Value::from));
    put("VAE hash", p.vae_hash.clone().map(Value::from));
    put("VAE", p.vae.clone().map(Value::from));
    put("Denoising strength", p.denoising_strength.map(Value::from));
    put("Clip skip", p.clip_skip.map(Value::from));
    for (k, v) in &p.extra {
        m.entry(k.clone()).or_insert_with(|| v.clone().into());
    }
    m
}

/// `POST /sdapi/v1/png-info`.
pub(crate) async fn png_info(
    State(_state): State<Shared>,
    body: Bytes,
) -> ApiResult<Json<PngInfoResponse>> {
    let req: PngInfoRequest = crate::sdapi::parse_json(&body)?;
    let bytes = crate::sdapi::decode_image("image", &req.image)?;
    let params = parse(&bytes)?;
    Ok(Json(PngInfoResponse {
        info: infotext_of(&params),
        items: Map::new(),
        parameters: a1111_fields(&params),
    }))
}

/// Parses image bytes; an unknown format is a 422.
pub(crate) fn parse(bytes: &[u8]) -> ApiResult<GenerationParams> {
    danlu_pnginfo::parse_image(bytes)
        .map_err(|e| crate::error::ApiError::invalid(format!("image: {e}")))
}
