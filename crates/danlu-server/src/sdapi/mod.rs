//! The AUTOMATIC1111 API under `/sdapi/v1` (`modules/api/api.py`, `modules/api/models.py`):
//! the same paths, field names, types and defaults, so existing clients work. One module per
//! route group.

pub(crate) mod options;
pub(crate) mod png_info;
pub(crate) mod progress;
pub(crate) mod samplers;
pub(crate) mod sd_models;
pub(crate) mod txt2img;

use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Router;
use axum::routing::{get, post};
use base64::Engine as _;
use serde::de::DeserializeOwned;

/// The `/sdapi/v1` routes.
pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/sd-models", get(sd_models::sd_models))
        .route("/refresh-checkpoints", post(sd_models::refresh))
        .route("/sd-vae", get(sd_models::sd_vae))
        .route("/refresh-vae", post(sd_models::refresh))
        .route("/loras", get(sd_models::loras))
        .route("/refresh-loras", post(sd_models::refresh))
        .route("/embeddings", get(sd_models::embeddings))
        .route("/refresh-embeddings", post(sd_models::refresh))
        .route("/hypernetworks", get(sd_models::hypernetworks))
        .route("/samplers", get(samplers::samplers))
        .route("/schedulers", get(samplers::schedulers))
        .route("/upscalers", get(samplers::upscalers))
        .route(
            "/options",
            get(options::get_options).post(options::set_options),
        )
        .route("/cmd-flags", get(options::cmd_flags))
        .route("/txt2img", post(txt2img::txt2img))
        .route("/img2img", post(txt2img::img2img))
        .route("/png-info", post(png_info::png_info))
        .route("/progress", get(progress::progress))
        .route("/interrupt", post(progress::interrupt))
        .route("/skip", post(progress::skip))
        .route("/memory", get(progress::memory))
        .route("/scripts", get(scripts))
}

/// A1111 `ScriptsList`: danlu runs no scripts, so both lists are empty (clients such as
/// `webuiapi` probe it for extensions).
async fn scripts() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"txt2img": [], "img2img": []}))
}

/// Parses a JSON body; malformed JSON and wrong types are 422 like FastAPI's validation
/// errors. Unknown fields are ignored, as A1111 does.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

/// Decodes an A1111 base64 image (a bare string or a `data:image/...;base64,` URL, A1111
/// `decode_base64_to_image`).
pub(crate) fn decode_image(what: &str, text: &str) -> ApiResult<Vec<u8>> {
    let data = if text.starts_with("data:") {
        text.split_once(";base64,").map_or(text, |(_, d)| d)
    } else {
        text
    };
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| ApiError::invalid(format!("{what}: invalid base64 image: {e}")))
}

/// Encodes bytes as base64 (A1111 `encode_pil_to_base64` answers bare base64).
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_and_bare_base64_both_decode() {
        assert_eq!(decode_image("x", "aGk=").unwrap(), b"hi");
        assert_eq!(
            decode_image("x", "data:image/png;base64,aGk=").unwrap(),
            b"hi"
        );
        assert!(decode_image("x", "not base64!").is_err());
    }
}
