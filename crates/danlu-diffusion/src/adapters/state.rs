//! What a pipeline keeps between requests: adapter folders, loaded files, the applied LoRA set.
//!
//! A request's prompt names its networks with tags; [`AdapterState::apply`] resolves the names
//! in the folders (file stem, as A1111 `networks.available_networks` and
//! `hypernetworks.list_hypernetworks` do), reads each file once, and rebuilds the UNet and text
//! encoder from the unpatched checkpoint only when the set of LoRAs and multipliers differs from
//! the one applied (the same set again costs nothing). Embeddings are every file of the
//! embedding folders (A1111 `EmbeddingDatabase.load_textual_inversion_embeddings` walks them),
//! recognised by name during tokenization.

use super::embedding::{Embedding, EmbeddingSet, read_embedding};
use super::hypernetwork::{ActiveHypernetwork, Hypernetwork, read_hypernetwork};
use super::lora::{Lora, NetworkSet, read_lora};
use crate::Result;
use crate::model::{Checkpoint, TextConfig, TextEncoder, Unet, UnetConfig};
use crate::prompt::{PromptNetworks, PromptTokenizer, parse_extra_networks};
use candle_core::{DType, Device};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Folders adapters are looked up in (A1111 `--lora-dir`, `--embeddings-dir`,
/// `--hypernetwork-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdapterFolders {
    /// LoRA and LyCORIS files (`.safetensors`, `.pt`, `.ckpt`).
    pub lora: Vec<PathBuf>,
    /// Textual-inversion embeddings (`.pt`, `.bin`, `.safetensors`).
    pub embeddings: Vec<PathBuf>,
    /// Hypernetworks (`.pt`).
    pub hypernetworks: Vec<PathBuf>,
    /// Files known by another name than their stem (a library match by hash): a tag naming
    /// the alias uses the file, checked before the folders.
    pub aliases: Aliases,
}

/// Name → file for each adapter kind (see [`AdapterFolders::aliases`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    /// LoRA tag names.
    pub lora: Vec<(String, PathBuf)>,
    /// Embedding names as the prompt writes them.
    pub embeddings: Vec<(String, PathBuf)>,
    /// Hypernetwork tag names.
    pub hypernetworks: Vec<(String, PathBuf)>,
}

fn alias(list: &[(String, PathBuf)], name: &str) -> Option<PathBuf> {
    list.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone())
}

/// A LoRA a request used.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedLora {
    /// The name in the tag.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Text-encoder multiplier.
    pub te_multiplier: f32,
    /// UNet multiplier.
    pub unet_multiplier: f32,
}

/// An embedding or hypernetwork a request used.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedFile {
    /// The name (file stem).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The strength, for hypernetworks (1 for embeddings).
    pub multiplier: f32,
}

/// The adapters one request used, and the warnings for the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedAdapters {
    /// LoRAs in tag order.
    pub loras: Vec<AppliedLora>,
    /// Embeddings found in the prompt or negative prompt, by name.
    pub embeddings: Vec<AppliedFile>,
    /// Hypernetworks in tag order.
    pub hypernetworks: Vec<AppliedFile>,
    /// Tags naming nothing installed, tags that could not be read, LoRA modules that fit no
    /// weight, embeddings that do not fit the text encoder.
    pub warnings: Vec<String>,
}

/// The adapter state a pipeline keeps.
#[derive(Debug, Default)]
pub struct AdapterState {
    folders: AdapterFolders,
    embeddings: EmbeddingSet,
    embedding_files: BTreeMap<String, PathBuf>,
    embedding_warnings: Vec<String>,
    loras: BTreeMap<PathBuf, Arc<Lora>>,
    hypernetworks: BTreeMap<PathBuf, Arc<Hypernetwork>>,
    /// The applied LoRA set: files and multiplier bits, in order.
    applied: Vec<(PathBuf, u32, u32)>,
}

const LORA_EXTENSIONS: &[&str] = &["safetensors", "pt", "ckpt"];
const EMBEDDING_EXTENSIONS: &[&str] = &["pt", "bin", "safetensors"];
const HYPERNETWORK_EXTENSIONS: &[&str] = &["pt"];

/// Every file under `dirs` (recursively, sorted) whose extension is one of `extensions`.
fn files_in(dirs: &[PathBuf], extensions: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| extensions.iter().any(|e| x.eq_ignore_ascii_case(e)))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The file under `dirs` whose stem is `name` (first in path order).
fn find(dirs: &[PathBuf], extensions: &[&str], name: &str) -> Option<PathBuf> {
    files_in(dirs, extensions)
        .into_iter()
        .find(|p| stem(p) == name)
}

impl AdapterState {
    /// The folders in use.
    pub fn folders(&self) -> &AdapterFolders {
        &self.folders
    }

    /// The loaded embeddings.
    pub fn embeddings(&self) -> &EmbeddingSet {
        &self.embeddings
    }

    /// Sets the folders and loads every embedding of the embedding folders whose width is
    /// `width`; returns the files that could not be used, as messages.
    pub fn set_folders(
        &mut self,
        folders: AdapterFolders,
        width: usize,
        tokenizer: &PromptTokenizer,
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut loaded: Vec<Embedding> = Vec::new();
        let mut files = BTreeMap::new();
        let aliased = folders
            .aliases
            .embeddings
            .iter()
            .map(|(n, p)| (Some(n.clone()), p.clone()));
        let in_folders = files_in(&folders.embeddings, EMBEDDING_EXTENSIONS)
            .into_iter()
            .map(|p| (None, p));
        for (name, path) in aliased.chain(in_folders) {
            match read_embedding(&path) {
                Ok(mut e) => {
                    if let Some(name) = name {
                        e.name = name;
                    }
                    // A1111 keeps the first file of a name.
                    if files.contains_key(&e.name) {
                        continue;
                    }
                    files.insert(e.name.clone(), path);
                    loaded.push(e);
                }
                Err(err) => warnings.push(err.to_string()),
            }
        }
        let set = EmbeddingSet::new(loaded, width, tokenizer);
        warnings.extend(set.skipped.iter().map(|s| format!("embedding {s}")));
        self.embeddings = set;
        self.embedding_files = files;
        self.embedding_warnings = warnings.clone();
        self.folders = folders;
        self.loras.clear();
        self.hypernetworks.clear();
        warnings
    }

    /// Resolves the tags of `prompt`, applies its LoRAs (rebuilding `text` and `unet` from
    /// `checkpoint` when the set changed) and hypernetworks, and lists the embeddings `prompt`
    /// and `negative` use.
    ///
    /// # Errors
    /// When a named file cannot be read, a LoRA is for another model family, or the networks
    /// cannot be rebuilt.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        prompt: &str,
        negative: &str,
        tokenizer: &PromptTokenizer,
        checkpoint: &Checkpoint,
        configs: (&TextConfig, &UnetConfig),
        dtype: DType,
        device: &Device,
        networks: (&mut TextEncoder, &mut Unet),
    ) -> Result<AppliedAdapters> {
        let parsed = parse_extra_networks(prompt);
        let tags = PromptNetworks::from_tags(&parsed.tags);
        let mut out = AppliedAdapters {
            warnings: tags.warnings.clone(),
            ..Default::default()
        };
        let mut set = NetworkSet::default();
        for tag in &tags.loras {
            let Some(path) = alias(&self.folders.aliases.lora, &tag.name)
                .or_else(|| find(&self.folders.lora, LORA_EXTENSIONS, &tag.name))
            else {
                out.warnings
                    .push(format!("LoRA `{}` is not installed", tag.name));
                continue;
            };
            let lora = match self.loras.get(&path) {
                Some(l) => Arc::clone(l),
                None => {
                    let l = Arc::new(read_lora(&path)?);
                    self.loras.insert(path.clone(), Arc::clone(&l));
                    l
                }
            };
            if !lora.unknown.is_empty() {
                out.warnings.push(format!(
                    "LoRA `{}`: {} tensors of no known module type were left out",
                    tag.name,
                    lora.unknown.len()
                ));
            }
            set.loras
                .push((lora, tag.te_multiplier, tag.unet_multiplier));
            out.loras.push(AppliedLora {
                name: tag.name.clone(),
                path,
                te_multiplier: tag.te_multiplier,
                unet_multiplier: tag.unet_multiplier,
            });
        }
        let key: Vec<(PathBuf, u32, u32)> = out
            .loras
            .iter()
            .map(|l| {
                (
                    l.path.clone(),
                    l.te_multiplier.to_bits(),
                    l.unet_multiplier.to_bits(),
                )
            })
            .collect();
        let (text, unet) = networks;
        if key != self.applied {
            let resolved = set.patches(checkpoint, configs.1, configs.0)?;
            out.warnings.extend(
                resolved
                    .unmatched
                    .iter()
                    .map(|m| format!("LoRA module {m} fits no weight of the model")),
            );
            let patched = checkpoint.with_patches(Some(Arc::new(resolved.patches)));
            let hyper = unet.hypernetworks().to_vec();
            *text = patched
                .load_text_encoder(configs.0.clone(), dtype, device)?
                .model;
            let mut rebuilt = patched.load_unet(configs.1.clone(), dtype, device)?.model;
            rebuilt.set_hypernetworks(hyper, device)?;
            *unet = rebuilt;
            self.applied = key;
        }
        let mut active = Vec::new();
        for tag in &tags.hypernets {
            let Some(path) = alias(&self.folders.aliases.hypernetworks, &tag.name).or_else(|| {
                find(
                    &self.folders.hypernetworks,
                    HYPERNETWORK_EXTENSIONS,
                    &tag.name,
                )
            }) else {
                out.warnings
                    .push(format!("hypernetwork `{}` is not installed", tag.name));
                continue;
            };
            let net = match self.hypernetworks.get(&path) {
                Some(h) => Arc::clone(h),
                None => {
                    let h = Arc::new(read_hypernetwork(&path)?.to_device(device)?);
                    self.hypernetworks.insert(path.clone(), Arc::clone(&h));
                    h
                }
            };
            active.push(ActiveHypernetwork {
                network: net,
                multiplier: tag.multiplier,
            });
            out.hypernetworks.push(AppliedFile {
                name: tag.name.clone(),
                path,
                multiplier: tag.multiplier,
            });
        }
        unet.set_hypernetworks(active, device)?;
        let mut used = BTreeMap::new();
        for text in [parsed.prompt.as_str(), negative] {
            let t = tokenizer.tokenize(text, &self.embeddings);
            for e in self.embeddings.used_in(&t.chunks) {
                if let Some(p) = self.embedding_files.get(&e.name) {
                    used.insert(e.name.clone(), p.clone());
                }
            }
        }
        out.embeddings = used
            .into_iter()
            .map(|(name, path)| AppliedFile {
                name,
                path,
                multiplier: 1.0,
            })
            .collect();
        Ok(out)
    }
}
