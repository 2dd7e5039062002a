//! What every handler shares: the configuration, the library, the engine and the settings.

use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::error::{ApiError, ApiResult};
use crate::library::{Library, find_checkpoint, is_checkpoint};
use crate::sdapi::options::{Effective, default_options};
use danlu_generate::{KnownHashes, ModelSpec, VaeChoice};
use danlu_library::ModelRecord;
use danlu_library::vae::{VaeChoice as Rule, resolve_vae};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};

/// The shared state.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) config: ServerConfig,
    pub(crate) library: Arc<Library>,
    pub(crate) engine: Engine,
    options: Mutex<Map<String, Value>>,
    /// Set when the server shuts down, so that endless streams (server-sent events) end.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Set when the server shuts down, so that the background hasher stops.
    pub(crate) hash_stop: Arc<std::sync::atomic::AtomicBool>,
}

/// The state as handlers hold it.
pub(crate) type Shared = Arc<AppState>;

impl AppState {
    pub(crate) fn new(config: ServerConfig, library: Arc<Library>, engine: Engine) -> Self {
        Self {
            config,
            library,
            engine,
            options: Mutex::new(default_options()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            hash_stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The settings, with `sd_model_checkpoint` filled in with what a generation would use, as
    /// the checkpoint's current title (A1111 stores the title, `NAME [HASH]` once the file is
    /// hashed, and the full sha256 as `sd_checkpoint_hash`; `modules/sd_models.py`).
    pub(crate) fn options_snapshot(&self) -> Map<String, Value> {
        let mut m = match self.options.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let records = self.library.records();
        let root = &self.library.root;
        let chosen = match m.get("sd_model_checkpoint").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => find_checkpoint(root, &records, name).ok(),
            _ => self.default_checkpoint(&records),
        };
        if let Some(r) = chosen {
            let title = crate::library::checkpoint_title(root, r);
            m.insert("sd_model_checkpoint".into(), title.into());
            if let Some(sha) = r.sha256() {
                m.insert("sd_checkpoint_hash".into(), sha.into());
            }
        }
        m
    }

    /// Replaces the settings.
    pub(crate) fn set_options(&self, next: Map<String, Value>) {
        match self.options.lock() {
            Ok(mut g) => *g = next,
            Err(p) => *p.into_inner() = next,
        }
    }

    /// The checkpoint used when none is chosen: the loaded one, else the first by title.
    fn default_checkpoint<'a>(&self, records: &'a [ModelRecord]) -> Option<&'a ModelRecord> {
        let loaded = self
            .engine
            .status
            .lock()
            .loaded
            .as_ref()
            .map(|l| l.checkpoint.display().to_string());
        if let Some(path) = loaded
            && let Some(r) = records.iter().find(|r| r.path == path)
        {
            return Some(r);
        }
        let mut all: Vec<&ModelRecord> = records.iter().filter(|r| is_checkpoint(r)).collect();
        all.sort_by_key(|r| crate::library::checkpoint_title(&self.library.root, r).to_lowercase());
        all.first().copied()
    }

    /// The model a generation with `eff` uses: its checkpoint (or the default one) and the
    /// VAE by A1111's rules. `None` when the library has no checkpoint and none was named.
    ///
    /// # Errors
    /// 404 for an unknown checkpoint or VAE, 422 for a VAE of another family.
    pub(crate) fn model_spec(
        &self,
        records: &[ModelRecord],
        eff: &Effective,
    ) -> ApiResult<Option<ModelSpec>> {
        let root = &self.library.root;
        let checkpoint = match &eff.checkpoint {
            Some(name) => find_checkpoint(root, records, name)?,
            None => match self.default_checkpoint(records) {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        let mut spec = ModelSpec::new(checkpoint.as_path());
        spec.device = self.config.device;
        spec.dtype = self.config.dtype;
        spec.known_hashes = KnownHashes {
            checkpoint: checkpoint.hashes.as_ref().and_then(|h| h.autov2.clone()),
            vae: None,
        };
        if eff.vae != "None" {
            let explicit = (eff.vae != "Automatic").then_some(eff.vae.as_str());
            let report = resolve_vae(root, records, checkpoint, explicit);
            if explicit.is_some() && report.choice != Rule::Explicit {
                return Err(ApiError::not_found(format!(
                    "VAE `{}` not found; put VAEs in `{}` and refresh",
                    eff.vae,
                    root.folder(danlu_types::Kind::Vae)
                        .unwrap_or_else(|| root.path.clone())
                        .display()
                )));
            }
            if let Some(refused) = report.refused {
                return Err(ApiError::invalid(refused));
            }
            if let Some(vae) = report.vae {
                spec.known_hashes.vae = records
                    .iter()
                    .find(|r| r.path == vae)
                    .and_then(|r| r.hashes.as_ref())
                    .and_then(|h| h.autov2.clone());
                spec.vae = VaeChoice::File(vae.into());
            }
        }
        Ok(Some(spec))
    }
}
