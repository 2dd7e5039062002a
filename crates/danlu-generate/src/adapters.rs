//! LoRAs, embeddings and hypernetworks for a job: folders, application and infotext.
//!
//! [`LoadedModel::set_adapter_folders`] names the folders (A1111 `--lora-dir`,
//! `--embeddings-dir`, `--hypernetwork-dir`); [`LoadedModel::apply_adapters`] applies what the
//! job's prompt names and hashes the files it used, and [`crate::generation_params`] then writes
//! them as A1111 does:
//!
//! * `Lora hashes: "name: hash, ..."` (`extensions-builtin/Lora/extra_networks_lora.py`; the
//!   hash is `network.shorthash`, the first 12 hex of the SHA-256 of a safetensors file's tensor
//!   bytes, AutoV3, or of the whole file for other containers),
//! * `TI hashes: "name: hash, ..."` (`modules/processing.py` from the embeddings the prompt and
//!   negative prompt used; `Embedding.shorthash`, the first 12 hex of the file's SHA-256),
//! * `Hypernet`, `Hypernet hash` (first 10 hex of the SHA-256, `Hypernetwork.shorthash`) and
//!   `Hypernet strength` (A1111 writes it only when the strength is not 1) for the first
//!   hypernetwork.
//!
//! Names lose `:` and `,` as A1111 writes them.

use crate::{Error, Job, LoadedModel, Result};
use danlu_diffusion::adapters::{AdapterFolders, AppliedAdapters};
use danlu_hash::Hashes;
use danlu_pnginfo::GenerationParams;
use danlu_types::Reporter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The adapters the last applied job used, with their hashes.
#[derive(Debug, Clone, Default)]
pub struct AdapterUse {
    /// The prompt and negative prompt they were applied for.
    prompts: Option<(String, String)>,
    /// What was applied, and the warnings.
    pub applied: AppliedAdapters,
    /// File hashes computed so far, by path.
    hashes: BTreeMap<PathBuf, Hashes>,
}

fn clean(name: &str) -> String {
    name.replace([':', ','], "")
}

impl LoadedModel {
    /// Sets the adapter folders and loads their embeddings; returns the files that could not be
    /// used, as messages.
    pub fn set_adapter_folders(&mut self, folders: AdapterFolders) -> Vec<String> {
        self.adapters = AdapterUse::default();
        self.pipeline.set_adapter_folders(folders)
    }

    /// Applies the networks `job`'s prompt names (tags) and finds the embeddings it uses; the
    /// following [`LoadedModel::generate`] of the same prompts uses them and records them in
    /// the infotext. Tags naming nothing installed are warnings in the result.
    ///
    /// # Errors
    /// When a named file cannot be read or hashed, or a LoRA is for another model family.
    pub fn apply_adapters(
        &mut self,
        job: &Job,
        reporter: &dyn Reporter,
        cancel: &AtomicBool,
    ) -> Result<AppliedAdapters> {
        let r = &job.request;
        let applied = self
            .pipeline
            .apply_adapters(&r.prompt, &r.negative_prompt)?;
        let files: Vec<PathBuf> = applied
            .loras
            .iter()
            .map(|l| l.path.clone())
            .chain(applied.embeddings.iter().map(|e| e.path.clone()))
            .chain(applied.hypernetworks.iter().map(|h| h.path.clone()))
            .collect();
        for path in files {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                self.adapters.hashes.entry(path)
            {
                let h = hash(slot.key(), reporter, cancel)?;
                slot.insert(h);
            }
        }
        self.adapters.prompts = Some((r.prompt.clone(), r.negative_prompt.clone()));
        self.adapters.applied = applied.clone();
        Ok(applied)
    }

    /// Records the adapters applied for `job` in `params` (nothing when none were applied for
    /// its prompts): `loras` and `embeddings` with their hashes (written as `Lora hashes` and
    /// `TI hashes`), and the first hypernetwork's `Hypernet`, `Hypernet hash` and
    /// `Hypernet strength` entries.
    pub fn add_adapter_params(&self, job: &Job, params: &mut GenerationParams) {
        let u = &self.adapters;
        let r = &job.request;
        if u.prompts.as_ref() != Some(&(r.prompt.clone(), r.negative_prompt.clone())) {
            return;
        }
        let hash = |p: &Path| u.hashes.get(p);
        params.loras = u
            .applied
            .loras
            .iter()
            .map(|l| danlu_pnginfo::Lora {
                name: clean(&l.name),
                weight: f64::from(l.unet_multiplier),
                hash: hash(&l.path).map(|h| h.autov3.clone()),
            })
            .collect();
        params.embeddings = u
            .applied
            .embeddings
            .iter()
            .map(|e| danlu_pnginfo::Embedding {
                name: clean(&e.name),
                hash: hash(&e.path)
                    .and_then(|h| h.sha256.get(..12))
                    .map(str::to_owned),
            })
            .collect();
        if let Some(h) = u.applied.hypernetworks.first() {
            let extra = &mut params.extra;
            extra.insert("Hypernet".to_owned(), h.name.clone());
            if let Some(sha) = hash(&h.path).and_then(|x| x.sha256.get(..10)) {
                extra.insert("Hypernet hash".to_owned(), sha.to_owned());
            }
            if h.multiplier != 1.0 {
                extra.insert("Hypernet strength".to_owned(), h.multiplier.to_string());
            }
        }
    }
}

fn hash(path: &Path, reporter: &dyn Reporter, cancel: &AtomicBool) -> Result<Hashes> {
    danlu_hash::hash_file(path, reporter, cancel).map_err(|source| Error::Hash {
        path: path.to_path_buf(),
        source,
    })
}
