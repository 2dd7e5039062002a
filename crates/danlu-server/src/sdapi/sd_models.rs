//! `GET /sdapi/v1/sd-models`, `sd-vae`, `loras`, `embeddings`, `hypernetworks` and the
//! `refresh-*` routes, from the library cache.

use crate::error::{ApiError, ApiResult};
use crate::library::{checkpoint_model_name, checkpoint_title, is_checkpoint, relative_name};
use crate::state::Shared;
use axum::Json;
use axum::extract::State;
use danlu_library::ModelRecord;
use danlu_types::{Base, Kind};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A1111 `SDModelItem` (`modules/api/models.py`).
#[derive(Debug, Serialize)]
pub(crate) struct SdModelItem {
    /// `NAME [SHORTHASH]`.
    pub(crate) title: String,
    /// The name without extension.
    pub(crate) model_name: String,
    /// A1111's old 8-hex hash (AutoV1), null until hashed.
    pub(crate) hash: Option<String>,
    /// Full SHA-256, null until hashed.
    pub(crate) sha256: Option<String>,
    /// The file's absolute path.
    pub(crate) filename: String,
    /// A same-name `.yaml` config, if any.
    pub(crate) config: Option<String>,
}

/// The library's checkpoints as A1111 lists them, sorted by title.
pub(crate) fn sd_model_items(state: &Shared, records: &[ModelRecord]) -> Vec<SdModelItem> {
    let root = &state.library.root;
    let mut out: Vec<SdModelItem> = records
        .iter()
        .filter(|r| is_checkpoint(r))
        .map(|r| {
            let yaml = r.as_path().with_extension("yaml");
            SdModelItem {
                title: checkpoint_title(root, r),
                model_name: checkpoint_model_name(root, r),
                hash: r.hashes.as_ref().and_then(|h| h.autov1.clone()),
                sha256: r.hashes.as_ref().and_then(|h| h.sha256.clone()),
                filename: r.path.clone(),
                config: yaml.is_file().then(|| yaml.display().to_string()),
            }
        })
        .collect();
    out.sort_by_key(|m| m.title.to_lowercase());
    out
}

/// `GET /sdapi/v1/sd-models`.
pub(crate) async fn sd_models(State(state): State<Shared>) -> Json<Vec<SdModelItem>> {
    let records = state.library.records();
    Json(sd_model_items(&state, &records))
}

/// A1111 `SDVaeItem`.
#[derive(Debug, Serialize)]
pub(crate) struct SdVaeItem {
    /// The file name (what `sd_vae` takes).
    pub(crate) model_name: String,
    /// The file's absolute path.
    pub(crate) filename: String,
}

/// `GET /sdapi/v1/sd-vae`: A1111's VAE list (VAE folders and `*.vae.*` beside checkpoints).
pub(crate) async fn sd_vae(State(state): State<Shared>) -> Json<Vec<SdVaeItem>> {
    let records = state.library.records();
    Json(
        danlu_library::vae::vae_list(&state.library.root, &records)
            .into_iter()
            .map(|r| SdVaeItem {
                model_name: r
                    .as_path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                filename: r.path.clone(),
            })
            .collect(),
    )
}

fn of_kind(records: &[ModelRecord], kind: Kind) -> impl Iterator<Item = &ModelRecord> {
    records.iter().filter(move |r| r.kind() == kind)
}

/// One LoRA as A1111's Lora extension lists it (`extensions-builtin/Lora/scripts/lora_script.py`
/// `api_networks`).
#[derive(Debug, Serialize)]
pub(crate) struct LoraItem {
    name: String,
    alias: String,
    path: String,
    metadata: Map<String, Value>,
}

/// `GET /sdapi/v1/loras`.
pub(crate) async fn loras(State(state): State<Shared>) -> Json<Vec<LoraItem>> {
    let records = state.library.records();
    Json(
        of_kind(&records, Kind::Lora)
            .map(|r| LoraItem {
                name: r.name.clone(),
                alias: r.name.clone(),
                path: r.path.clone(),
                metadata: Map::new(),
            })
            .collect(),
    )
}

/// A1111 `EmbeddingItem`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingItem {
    step: Option<u64>,
    sd_checkpoint: Option<String>,
    sd_checkpoint_name: Option<String>,
    shape: u64,
    vectors: u64,
}

/// A1111 `EmbeddingsResponse`.
#[derive(Debug, Serialize)]
pub(crate) struct EmbeddingsResponse {
    loaded: BTreeMap<String, EmbeddingItem>,
    skipped: BTreeMap<String, EmbeddingItem>,
}

/// The width of one embedding vector for a base (the text encoder's; SDXL pairs hold both).
fn embedding_width(base: Base) -> u64 {
    match base {
        Base::Sd1 => 768,
        Base::Sd2 => 1024,
        Base::Sdxl => 2048,
        _ => 0,
    }
}

/// `GET /sdapi/v1/embeddings`: embeddings of the loaded model's family are `loaded`, others
/// `skipped` (A1111 skips embeddings whose width does not fit the model).
pub(crate) async fn embeddings(State(state): State<Shared>) -> Json<EmbeddingsResponse> {
    let records = state.library.records();
    let loaded_path = state
        .engine
        .status
        .lock()
        .loaded
        .as_ref()
        .map(|l| l.checkpoint.display().to_string());
    let model_base = loaded_path
        .and_then(|p| records.iter().find(|r| r.path == p))
        .map(ModelRecord::base);
    let mut out = EmbeddingsResponse {
        loaded: BTreeMap::new(),
        skipped: BTreeMap::new(),
    };
    for r in of_kind(&records, Kind::Embedding) {
        let item = EmbeddingItem {
            step: None,
            sd_checkpoint: None,
            sd_checkpoint_name: None,
            shape: embedding_width(r.base()),
            vectors: r.identity.as_ref().and_then(|i| i.vectors).unwrap_or(0),
        };
        let fits = match model_base {
            Some(b) if b != Base::Unknown && r.base() != Base::Unknown => {
                embedding_width(b) == item.shape
            }
            _ => true,
        };
        if fits {
            out.loaded.insert(r.name.clone(), item);
        } else {
            out.skipped.insert(r.name.clone(), item);
        }
    }
    Json(out)
}

/// A1111 `HypernetworkItem`.
#[derive(Debug, Serialize)]
pub(crate) struct HypernetworkItem {
    name: String,
    path: Option<String>,
}

/// `GET /sdapi/v1/hypernetworks`.
pub(crate) async fn hypernetworks(State(state): State<Shared>) -> Json<Vec<HypernetworkItem>> {
    let records = state.library.records();
    Json(
        of_kind(&records, Kind::Hypernetwork)
            .map(|r| HypernetworkItem {
                name: r.name.clone(),
                path: Some(r.path.clone()),
            })
            .collect(),
    )
}

/// Rescans the library (blocking work off the async threads).
pub(crate) async fn rescan(state: &Shared) -> ApiResult<Arc<Vec<ModelRecord>>> {
    let s = Arc::clone(state);
    tokio::task::spawn_blocking(move || s.library.refresh())
        .await
        .map_err(|e| ApiError::internal(&e))?
}

/// `POST /sdapi/v1/refresh-*`: rescans the library; answers `null` like A1111.
pub(crate) async fn refresh(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    rescan(&state).await?;
    Ok(Json(Value::Null))
}

/// A record's relative name among files of its kind (used by the UI's library cards).
pub(crate) fn display_name(state: &Shared, r: &ModelRecord) -> String {
    relative_name(&state.library.root, r, r.kind())
}
