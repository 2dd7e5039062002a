//! Networks: text encoders, UNet, VAE, and loading them from single-file checkpoints.
//!
//! A [`Checkpoint`] maps the files of a [`TensorIndex`] (any container `danlu-format` reads) and
//! builds each network from the tensors stored under its ldm prefix, renamed on the fly by the
//! [`remap`] tables; no converted copy is written. Accepted layouts: A1111 single files
//! (safetensors, or `.ckpt` whose names sit under `state_dict.`), diffusers pipeline folders
//! (`unet/`, `vae/`, `text_encoder/`, names used as they are), and standalone VAE files in ldm or
//! diffusers names.
//!
//! Each tensor is copied out of the map once, in its stored dtype (f16, bf16, f32 or f64), and
//! converted to the compute dtype; the stored-dtype copy is dropped at once. Loaded networks hold
//! their weights in the compute dtype (an SD1.5 checkpoint stored in f16, computed in f32:
//! 4.1 GiB of heap, measured by `tests/model_memory.rs`), plus one tensor in flight while
//! loading; the mapped file adds page cache (file-backed, reclaimable), not heap. candle's CPU
//! tensors own their memory, so weights cannot borrow the map even when the dtypes match.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use danlu_diffusion::model::{Checkpoint, TextConfig, UnetConfig, VaeConfig};
//!
//! let index = danlu_format::read_index("v1-5-pruned-emaonly.safetensors")?;
//! let ckpt = Checkpoint::from_index(index)?;
//! let (dtype, device) = (DType::F32, Device::Cpu);
//! let text = ckpt.load_text_encoder(TextConfig::sd1(), dtype, &device)?.model;
//! let unet = ckpt.load_unet(UnetConfig::sd1(), dtype, &device)?.model;
//! let vae = ckpt.load_vae(VaeConfig::sd(), dtype, &device)?.model;
//! let tokens = Tensor::zeros((1, 77), DType::U32, &device)?;
//! let context = text.forward(&tokens, text.a1111_skip(1))?;
//! let latents = Tensor::zeros((1, 4, 64, 64), dtype, &device)?;
//! let eps = unet.forward(&latents, 999.0, &context)?;
//! let image = vae.decode(&(latents / vae.config.scaling_factor)?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backend;
mod layers;
pub mod preview;
pub mod remap;
pub mod text;
pub mod unet;
pub mod vae;

pub use text::{Activation, LayerChoice, TextConfig, TextEncoder, TextLayout};
pub use unet::{Prediction, Unet, UnetConfig};
pub use vae::{LatentDistribution, Vae, VaeConfig};

use crate::adapters::WeightPatches;
use crate::{Error, Result};
pub(crate) use backend::candle_dtype;
use backend::{IndexBackend, Mapped};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use danlu_format::TensorIndex;
use remap::{Remap, Row};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Component folders of a diffusers pipeline.
const DIFFUSERS_FOLDERS: &[&str] = &["unet", "vae", "text_encoder"];

/// The rows that keep names as they are (diffusers folders).
fn identity() -> Vec<Row> {
    vec![Row {
        from: String::new(),
        to: String::new(),
        rule: remap::Rule::Same,
    }]
}

/// An open checkpoint: its index and its mapped files.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    mapped: Arc<Mapped>,
    /// Prefix above the ldm names: `state_dict.` in `.ckpt` files (Lightning's checkpoint dict,
    /// flattened by `danlu-format`), empty in safetensors.
    root: String,
    /// Whether the tensors are a diffusers pipeline folder's (`unet/…`, `vae/…`,
    /// `text_encoder/…`, as `danlu-format` names them), already in the networks' names.
    diffusers: bool,
    /// LoRA patches applied to the UNet and text-encoder weights as they load.
    patches: Option<Arc<WeightPatches>>,
}

/// What loading one network used of the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Stored tensors the network read.
    pub used: usize,
    /// Stored tensors under the network's prefix that were renamed but never read.
    pub unused: Vec<String>,
    /// Stored tensors under the prefix that no rule renames.
    pub unmapped: Vec<String>,
    /// Stored tensors under the prefix known not to be needed (`position_ids`, ...).
    pub ignored: Vec<String>,
    /// Network names claimed by two stored tensors.
    pub conflicts: Vec<String>,
}

impl LoadReport {
    /// Whether every stored tensor under the prefix was read or knowingly ignored.
    pub fn is_complete(&self) -> bool {
        self.unused.is_empty() && self.unmapped.is_empty() && self.conflicts.is_empty()
    }
}

/// A network and what loading it used.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The network.
    pub model: T,
    /// What it used.
    pub report: LoadReport,
}

impl Checkpoint {
    /// Maps every file of `index`.
    ///
    /// # Errors
    /// When a file cannot be mapped.
    pub fn from_index(index: TensorIndex) -> Result<Self> {
        let maps = index
            .files
            .iter()
            .map(|p| {
                danlu_fs::map(p).map_err(|source| Error::Map {
                    path: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let state_dict = "state_dict.";
        let nested = !index.tensors.is_empty()
            && index
                .tensors
                .iter()
                .filter(|t| t.name.starts_with(state_dict))
                .count()
                * 2
                > index.tensors.len();
        let root = if nested { state_dict } else { "" }.to_string();
        let diffusers = index.tensors.iter().any(|t| {
            DIFFUSERS_FOLDERS
                .iter()
                .any(|f| t.name.strip_prefix(f).is_some_and(|r| r.starts_with('/')))
        });
        Ok(Self {
            mapped: Arc::new(Mapped { index, maps }),
            root,
            diffusers,
            patches: None,
        })
    }

    /// The index.
    pub fn index(&self) -> &TensorIndex {
        &self.mapped.index
    }

    fn path(&self) -> PathBuf {
        self.mapped.index.files.first().cloned().unwrap_or_default()
    }

    /// The UNet's input channels from `input_blocks.0.0.weight` (9 for inpainting models).
    pub fn unet_in_channels(&self) -> Option<usize> {
        let name = format!("{}{}input_blocks.0.0.weight", self.root, remap::UNET_PREFIX);
        let info = self.index().get(&name)?;
        info.shape.get(1).map(|&c| c as usize)
    }

    /// The number of stored OpenCLIP residual blocks.
    pub fn open_clip_layers(&self) -> usize {
        let p = format!(
            "{}{}transformer.resblocks.",
            self.root,
            remap::OPEN_CLIP_PREFIX
        );
        let mut seen = BTreeSet::new();
        for t in &self.index().tensors {
            if let Some(rest) = t.name.strip_prefix(p.as_str())
                && let Some((n, _)) = rest.split_once('.')
                && let Ok(n) = n.parse::<usize>()
            {
                seen.insert(n);
            }
        }
        seen.len()
    }

    /// A candle `VarBuilder` that serves the tensors under `prefix` by their names after `rows`
    /// (for networks built outside this module, e.g. candle's own, from the same checkpoint).
    pub fn var_builder(
        &self,
        prefix: &str,
        rows: &[Row],
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        let backend = IndexBackend {
            mapped: self.mapped.clone(),
            remap: Arc::new(Remap::build(
                self.index(),
                &format!("{}{prefix}", self.root),
                rows,
            )),
            requested: Arc::new(Mutex::new(BTreeSet::new())),
            patches: None,
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    fn load<T>(
        &self,
        component: &'static str,
        prefix: &str,
        rows: &[Row],
        dtype: DType,
        device: &Device,
        build: impl FnOnce(VarBuilder<'_>) -> candle_core::Result<T>,
    ) -> Result<Loaded<T>> {
        let prefix = format!("{}{prefix}", self.root);
        let remap = Arc::new(Remap::build(self.index(), &prefix, rows));
        let requested = Arc::new(Mutex::new(BTreeSet::new()));
        let backend = IndexBackend {
            mapped: self.mapped.clone(),
            remap: remap.clone(),
            requested: requested.clone(),
            patches: self.patches.as_ref().and_then(|p| match component {
                "UNet" => Some(Arc::new(p.unet.clone())),
                "text encoder" => Some(Arc::new(p.text.clone())),
                _ => None,
            }),
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let model = build(vb).map_err(|source| Error::Load {
            path: self.path(),
            component,
            source,
        })?;
        let requested = requested.lock().map(|s| s.clone()).unwrap_or_default();
        // A stored tensor counts as used when the network asked for every name made from it
        // (all three parts of a fused `in_proj`).
        let unused: BTreeSet<&str> = remap
            .targets
            .iter()
            .filter(|(target, _)| !requested.contains(*target))
            .map(|(_, s)| s.key.as_str())
            .collect();
        let sources: BTreeSet<&str> = remap.targets.values().map(|s| s.key.as_str()).collect();
        let report = LoadReport {
            used: sources.len() - unused.len(),
            unused: unused.iter().map(|k| k.to_string()).collect(),
            unmapped: remap.unmapped.clone(),
            ignored: remap.ignored.clone(),
            conflicts: remap.conflicts.clone(),
        };
        tracing::debug!(
            component,
            used = report.used,
            unused = report.unused.len(),
            unmapped = report.unmapped.len(),
            "loaded network"
        );
        Ok(Loaded { model, report })
    }

    /// Loads the UNet; `in_channels` comes from the weights.
    ///
    /// # Errors
    /// When a weight is missing, has the wrong shape or an unsupported dtype.
    pub fn load_unet(
        &self,
        mut config: UnetConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Loaded<Unet>> {
        if let Some(c) = self.unet_in_channels() {
            config.in_channels = c;
        } else if let Some(c) = self
            .index()
            .get("unet/conv_in.weight")
            .and_then(|t| t.shape.get(1))
            .map(|&c| c as usize)
        {
            config.in_channels = c;
        }
        let (prefix, rows) = self.unet_rows(&config);
        self.load("UNet", prefix, &rows, dtype, device, |vb| {
            Unet::new(vb, config)
        })
    }

    /// Loads the VAE: from `first_stage_model.`, from a diffusers folder's `vae/`, or, in a
    /// standalone VAE file, from the root in ldm or diffusers names.
    ///
    /// # Errors
    /// When a weight is missing, has the wrong shape or an unsupported dtype.
    pub fn load_vae(
        &self,
        config: VaeConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Loaded<Vae>> {
        let full = format!("{}{}", self.root, remap::VAE_PREFIX);
        let tensors = &self.index().tensors;
        let (prefix, rows) = if self.diffusers {
            ("vae/", identity())
        } else if tensors.iter().any(|t| t.name.starts_with(full.as_str())) {
            (remap::VAE_PREFIX, vae_rows(&config))
        } else if tensors
            .iter()
            .any(|t| t.name.starts_with("encoder.down_blocks."))
        {
            // A standalone VAE in diffusers names (a component folder).
            ("", identity())
        } else {
            // A standalone VAE in ldm names (`*.vae.safetensors`, `*.vae.pt`).
            ("", vae_rows(&config))
        };
        self.load("VAE", prefix, &rows, dtype, device, |vb| {
            Vae::new(vb, config)
        })
    }

    /// Loads the text encoder of the layout `config` names (diffusers folders always use
    /// transformers names; use [`TextConfig::sd2_diffusers`] for SD2 there).
    ///
    /// # Errors
    /// When a weight is missing, has the wrong shape or an unsupported dtype.
    pub fn load_text_encoder(
        &self,
        config: TextConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Loaded<TextEncoder>> {
        let (prefix, rows) = self.text_rows(&config);
        self.load("text encoder", prefix, &rows, dtype, device, |vb| {
            TextEncoder::new(vb, config)
        })
    }
}

impl Checkpoint {
    /// The same checkpoint with `patches` applied to the UNet and text-encoder weights of every
    /// network loaded from it afterwards (the stored weights stay as they are).
    pub fn with_patches(&self, patches: Option<Arc<WeightPatches>>) -> Self {
        Self {
            patches,
            ..self.clone()
        }
    }

    fn unet_rows(&self, config: &UnetConfig) -> (&'static str, Vec<Row>) {
        if self.diffusers {
            ("unet/", identity())
        } else {
            (remap::UNET_PREFIX, remap::unet_table(&config.layout()))
        }
    }

    fn text_rows(&self, config: &TextConfig) -> (&'static str, Vec<Row>) {
        match config.layout {
            _ if self.diffusers => ("text_encoder/", remap::clip_table()),
            TextLayout::Clip => (remap::CLIP_PREFIX, remap::clip_table()),
            TextLayout::OpenClip => (
                remap::OPEN_CLIP_PREFIX,
                remap::open_clip_table(config.layers),
            ),
        }
    }

    /// One UNet weight by its network name (`down_blocks.0.resnets.0.conv1.weight`) as loading
    /// would build it: the stored tensor, renamed and transformed, with this checkpoint's
    /// patches applied, in float32.
    ///
    /// # Errors
    /// When no stored tensor gives that name or a patch does not fit it.
    pub fn unet_weight(&self, config: &UnetConfig, name: &str) -> Result<candle_core::Tensor> {
        let (prefix, remap) = self.unet_remap(config);
        self.weight("UNet", &prefix, remap, name)
    }

    /// One text-encoder weight by its network name (`encoder.layers.0.self_attn.q_proj.weight`),
    /// as [`Checkpoint::unet_weight`] does for the UNet.
    ///
    /// # Errors
    /// When no stored tensor gives that name or a patch does not fit it.
    pub fn text_weight(&self, config: &TextConfig, name: &str) -> Result<candle_core::Tensor> {
        let (prefix, remap) = self.text_remap(config);
        self.weight("text encoder", &prefix, remap, name)
    }

    fn weight(
        &self,
        component: &'static str,
        _prefix: &str,
        remap: Remap,
        name: &str,
    ) -> Result<candle_core::Tensor> {
        use candle_nn::var_builder::SimpleBackend;
        let backend = IndexBackend {
            mapped: self.mapped.clone(),
            remap: Arc::new(remap),
            requested: Arc::new(Mutex::new(BTreeSet::new())),
            patches: self.patches.as_ref().and_then(|p| match component {
                "UNet" => Some(Arc::new(p.unet.clone())),
                "text encoder" => Some(Arc::new(p.text.clone())),
                _ => None,
            }),
        };
        backend
            .get_unchecked(name, DType::F32, &Device::Cpu)
            .map_err(|source| Error::Load {
                path: self.path(),
                component,
                source,
            })
    }

    /// The UNet's renaming: the full stored prefix and the network name to stored tensor map.
    pub fn unet_remap(&self, config: &UnetConfig) -> (String, Remap) {
        let (prefix, rows) = self.unet_rows(config);
        let prefix = format!("{}{prefix}", self.root);
        let remap = Remap::build(self.index(), &prefix, &rows);
        (prefix, remap)
    }

    /// The text encoder's renaming: the full stored prefix and the network name to stored
    /// tensor map.
    pub fn text_remap(&self, config: &TextConfig) -> (String, Remap) {
        let (prefix, rows) = self.text_rows(config);
        let prefix = format!("{}{prefix}", self.root);
        let remap = Remap::build(self.index(), &prefix, &rows);
        (prefix, remap)
    }
}

fn vae_rows(config: &VaeConfig) -> Vec<Row> {
    remap::vae_table(&remap::VaeLayout {
        levels: config.block_out_channels.len(),
        layers_per_block: config.layers_per_block,
    })
}
