//! The model files a reproduction may use: a library root's records, and how a name or hash
//! from an image finds one.

use crate::{Error, Result};
use danlu_library::{Cache, ModelRecord, RecordHashes, Root, ScanOptions};
use danlu_types::{Kind, Reporter};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// A library's model records, scanned and hashed.
#[derive(Debug, Clone)]
pub struct Library {
    /// The root folder.
    pub root: PathBuf,
    /// Every model file the cache knows, sorted by path.
    pub records: Vec<ModelRecord>,
}

impl Library {
    /// Opens a root, brings its cache up to date with an incremental scan (hashing new files,
    /// so hash lookups work) and reads every record.
    ///
    /// # Errors
    /// [`Error::Library`] when the root or its cache cannot be opened or scanned.
    pub fn open(root: &Path, reporter: &dyn Reporter, cancel: &AtomicBool) -> Result<Self> {
        let err = |source| Error::Library {
            root: root.to_path_buf(),
            source: Box::new(source),
        };
        let opened = Root::open(root).map_err(err)?;
        let cache = Cache::open(&opened.cache_path()).map_err(err)?;
        danlu_library::scan(&opened, &cache, &ScanOptions::default(), reporter, cancel)
            .map_err(err)?;
        let records = cache.all().map_err(err)?;
        Ok(Self::from_records(opened.path, records))
    }

    /// A library of the given records (tests, or a server that keeps its records).
    pub fn from_records(root: PathBuf, mut records: Vec<ModelRecord>) -> Self {
        records.sort_by(|a, b| a.path.cmp(&b.path));
        Self { root, records }
    }

    /// Records of `kinds`, plus files the scan could not identify (`unknown`), which may
    /// still be what an image names.
    fn candidates<'a>(&'a self, kinds: &'a [Kind]) -> impl Iterator<Item = &'a ModelRecord> {
        self.records
            .iter()
            .filter(move |r| kinds.contains(&r.kind()) || r.kind() == Kind::Unknown)
    }

    /// Finds the file an image names: by hash first (`Model hash` AutoV2, the old 8-hex A1111
    /// hash, `Lora hashes` AutoV3, a full SHA-256 or `blake3:`), then by name.
    pub fn find(&self, kinds: &[Kind], name: Option<&str>, hash: Option<&str>) -> Option<Match> {
        if let Some(h) = hash {
            let mut hits = self
                .candidates(kinds)
                .filter(|r| r.hashes.as_ref().is_some_and(|rh| hash_matches(rh, h)));
            if let Some(r) = hits.next() {
                return Some(Match {
                    record: r.clone(),
                    by: MatchedBy::Hash,
                    note: None,
                });
            }
        }
        let name = name.map(model_stem).filter(|n| !n.is_empty())?;
        let exact: Vec<&ModelRecord> = self.candidates(kinds).filter(|r| r.name == name).collect();
        let hits = if exact.is_empty() {
            self.candidates(kinds)
                .filter(|r| r.name.eq_ignore_ascii_case(&name))
                .collect()
        } else {
            exact
        };
        let first = hits.first()?;
        let mut notes = Vec::new();
        if hits.len() > 1 {
            notes.push(format!(
                "{} files are named `{name}`; the first by path was taken",
                hits.len()
            ));
        }
        if let (Some(h), Some(rh)) = (hash, first.hashes.as_ref())
            && !hash_matches(rh, h)
            && rh.sha256.is_some()
        {
            notes.push(format!(
                "the image's hash `{h}` is not this file's (AutoV2 `{}`): probably another \
                 version of it",
                rh.autov2.as_deref().unwrap_or("?")
            ));
        }
        Some(Match {
            record: (*first).clone(),
            by: MatchedBy::Name,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        })
    }

    /// Records of `kind` (embeddings, to find their names in prompts).
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &ModelRecord> {
        self.records.iter().filter(move |r| r.kind() == kind)
    }
}

/// A file found for something an image names.
#[derive(Debug, Clone)]
pub struct Match {
    /// The library's record of the file.
    pub record: ModelRecord,
    /// How it was found.
    pub by: MatchedBy,
    /// A caveat (several files of that name, a hash that differs).
    pub note: Option<String>,
}

/// How a file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// Its hash equals the one the image gives.
    Hash,
    /// Its name equals the one the image gives (the image has no hash, or no file has it).
    Name,
    /// Its name appears in the prompt (embeddings).
    Prompt,
}

/// The name of a model as the library keys it: no folders (`SDXL/x.safetensors`), no model
/// extension.
pub fn model_stem(name: &str) -> String {
    let base = name.trim().rsplit(['/', '\\']).next().unwrap_or_default();
    for ext in [
        ".safetensors",
        ".ckpt",
        ".pt",
        ".pth",
        ".bin",
        ".sft",
        ".gguf",
    ] {
        if base.len() > ext.len() && base.to_ascii_lowercase().ends_with(ext) {
            return base[..base.len() - ext.len()].to_owned();
        }
    }
    base.to_owned()
}

/// Whether an image's hash names this file. The length says which hash it is: 8 hex the old
/// A1111 model hash (AutoV1), 10 AutoV2, 12 AutoV3 (LoRAs) or a short SHA-256 (A1111
/// embeddings), 64 SHA-256; `blake3:` (InvokeAI) BLAKE3. Every short form is also taken as a
/// SHA-256 prefix, as Civitai's lookup does.
pub fn hash_matches(h: &RecordHashes, query: &str) -> bool {
    let q = query.trim().to_ascii_lowercase();
    if let Some(b) = q.strip_prefix("blake3:") {
        return h.blake3.as_deref() == Some(b);
    }
    let q = q.strip_prefix("0x").unwrap_or(&q);
    if q.len() < 8 || !q.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let eq = |v: &Option<String>| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(q));
    let sha_prefix = h
        .sha256
        .as_deref()
        .is_some_and(|s| s.to_ascii_lowercase().starts_with(q));
    match q.len() {
        8 => eq(&h.autov1) || sha_prefix,
        10 => eq(&h.autov2) || sha_prefix,
        12 => eq(&h.autov3) || sha_prefix,
        _ => sha_prefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_stems_drop_folders_and_extensions() {
        assert_eq!(model_stem("SDXL\\wai_v16.safetensors"), "wai_v16");
        assert_eq!(model_stem("Anything-V3.0.ckpt"), "Anything-V3.0");
        assert_eq!(model_stem("vae-ft-mse.vae.pt"), "vae-ft-mse.vae");
        assert_eq!(
            model_stem("realisticVisionV51_v51VAE"),
            "realisticVisionV51_v51VAE"
        );
    }

    #[test]
    fn hash_lengths_pick_the_hash() {
        let sha = "879db523c30d3b9017143d56705015e15a2cb5628762c11d086fed9538abd7fd";
        let h = RecordHashes {
            sha256: Some(sha.to_owned()),
            autov1: Some("a1b2c3d4".to_owned()),
            autov2: Some(sha[..10].to_owned()),
            autov3: Some("0123456789ab".to_owned()),
            blake3: Some("bb".repeat(32)),
            source: None,
        };
        assert!(hash_matches(&h, "879DB523C3"));
        assert!(hash_matches(&h, "a1b2c3d4"));
        assert!(hash_matches(&h, "0123456789ab"));
        assert!(hash_matches(&h, sha));
        assert!(hash_matches(&h, &format!("0x{sha}")));
        assert!(hash_matches(&h, &format!("blake3:{}", "bb".repeat(32))));
        assert!(!hash_matches(&h, "879db523c4"));
        assert!(!hash_matches(&h, "879db5"));
        assert!(!hash_matches(&h, "not-a-hash"));
    }
}
