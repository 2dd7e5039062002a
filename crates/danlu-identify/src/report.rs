//! The `inspect` report: one file's container, identity, folders, safety and hashes, as
//! `contracts.md` names them.

use crate::{Hints, Identity, identify};
use danlu_format::TensorIndex;
use danlu_hash::Hashes;
use danlu_pickle::Safety;
use danlu_types::{Folders, Format, Reporter};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What `danlu inspect` reports for one file (`contracts.md`, `inspect --json`).
///
/// A file that could not be read carries only `path` and `error`.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// The file as given.
    pub path: String,
    /// The container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Kind, base, variant, subformat, components, dtype, parameters, vectors.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Where the file belongs in each UI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folders: Option<Folders>,
    /// Hashes, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashes: Option<Hashes>,
    /// For pickles: what the restricted reader saw and whether it is safe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety: Option<Safety>,
    /// Why the file could not be read; present instead of the fields above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InspectReport {
    /// A report for a file that could not be read: the error and its causes on one line.
    pub fn failed(path: &Path, err: &(dyn std::error::Error + 'static)) -> Self {
        let mut msg = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Self {
            path: path.display().to_string(),
            format: None,
            identity: None,
            folders: None,
            hashes: None,
            safety: None,
            error: Some(msg),
        }
    }

    /// A report for a path that could not even be listed (missing, unreadable folder).
    pub fn unreadable(path: &Path, err: &std::io::Error) -> Self {
        let mut r = Self::failed(path, err);
        r.error = Some(format!("`{}`: {err}", path.display()));
        r
    }

    /// Whether this file failed to be read.
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }

    /// Builds the report from an index already read.
    pub fn from_index(path: &Path, index: &TensorIndex, hashes: Option<Hashes>) -> Self {
        let hints = Hints::from_path(path);
        let identity = identify(index, &hints);
        Self {
            path: path.display().to_string(),
            format: index.format,
            folders: Some(identity.kind.folders()),
            identity: Some(identity),
            hashes,
            safety: index.pickle.clone(),
            error: None,
        }
    }
}

/// Reads, identifies and (when `hash`) hashes one file or diffusers folder; never fails, an
/// unreadable file gives a report with `error`.
///
/// Hashing stops early (with an error report) once `cancel` is set.
pub fn inspect_path(
    path: &Path,
    hash: bool,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> InspectReport {
    let index = match danlu_format::read_index(path) {
        Ok(i) => i,
        Err(e) => return InspectReport::failed(path, &e),
    };
    let hashes = if hash && path.is_file() {
        match danlu_hash::hash_file(path, reporter, cancel) {
            Ok(h) => Some(h),
            Err(e) => return InspectReport::failed(path, &e),
        }
    } else {
        None
    };
    InspectReport::from_index(path, &index, hashes)
}

/// File extensions of model files that a folder walk picks up.
pub const MODEL_EXTENSIONS: &[&str] = &["safetensors", "sft", "ckpt", "pt", "pth", "bin", "gguf"];

/// Whether a folder is a diffusers model (a pipeline with `model_index.json`, or one component
/// with `config.json` beside its weights), to be reported as one model.
pub fn is_diffusers_dir(dir: &Path) -> bool {
    if dir.join("model_index.json").is_file() {
        return true;
    }
    dir.join("config.json").is_file()
        && std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let p = e.path();
                p.is_file()
                    && p.extension().is_some_and(|x| {
                        x == "safetensors"
                            || x == "bin"
                            || x == "json" && p.to_string_lossy().ends_with(".index.json")
                    })
            })
        })
}

/// The model files under `path`: the path itself when it is a file or a diffusers folder,
/// otherwise every file with a model extension and every diffusers folder below it, sorted.
///
/// # Errors
/// When `path` does not exist or a folder cannot be listed.
pub fn walk_models(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() || is_diffusers_dir(path) {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if is_diffusers_dir(&p) {
                    out.push(p);
                } else {
                    stack.push(p);
                }
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| MODEL_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
