//! Add-on networks applied at generation time: LoRA and LyCORIS weight patches
//! ([`lora`]), textual-inversion embeddings ([`embedding`]) and A1111 hypernetworks
//! ([`hypernetwork`]).
//!
//! LoRA-type networks are merged into the weights: [`lora::NetworkSet::patches`] turns a set of
//! networks into [`WeightPatches`], and [`crate::model::Checkpoint::with_patches`] rebuilds the
//! UNet and text encoder from the mapped (unpatched) checkpoint with each patched tensor computed
//! as it is loaded, so the next set starts again from the stored weights and switching is exact.

pub mod embedding;
pub mod hypernetwork;
pub mod lora;
pub mod state;

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use danlu_format::TensorIndex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use embedding::{Embedding, EmbeddingSet, read_embedding};
pub use hypernetwork::{ActiveHypernetwork, Hypernetwork, read_hypernetwork};
pub use lora::{Lora, LoraModule, NetworkSet, read_lora};
pub use state::{AdapterFolders, AdapterState, Aliases, AppliedAdapters, AppliedFile, AppliedLora};

/// One network's change to one weight, with its multiplier.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The network module.
    pub module: Arc<LoraModule>,
    /// The tag's multiplier (text encoder or UNet).
    pub multiplier: f32,
}

/// Patches for the weights of the UNet and the text encoder, keyed by the networks' own
/// (diffusers) weight names, applied in order (A1111 `network_apply_weights` applies the loaded
/// networks one after the other, each to the weight the previous one left).
#[derive(Debug, Clone, Default)]
pub struct WeightPatches {
    /// UNet weight name to patches.
    pub unet: BTreeMap<String, Vec<Patch>>,
    /// Text-encoder weight name to patches.
    pub text: BTreeMap<String, Vec<Patch>>,
}

impl WeightPatches {
    /// Whether nothing is patched.
    pub fn is_empty(&self) -> bool {
        self.unet.is_empty() && self.text.is_empty()
    }
}

/// Applies `patches` in order to `weight` (any float dtype); returns float32.
pub(crate) fn apply_patches(weight: &Tensor, patches: &[Patch]) -> candle_core::Result<Tensor> {
    let mut w = weight.to_dtype(DType::F32)?;
    for p in patches {
        let delta = p.module.delta(&w, p.multiplier)?;
        w = (w + delta)?;
    }
    Ok(w)
}

/// Every tensor of an adapter file as float32 on the CPU, with the file's index.
pub(crate) fn read_tensors(path: &Path) -> Result<(TensorIndex, BTreeMap<String, Tensor>)> {
    let index = danlu_format::read_index(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
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
    let bad = |reason: String| Error::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    let mut out = BTreeMap::new();
    for info in &index.tensors {
        let dtype = crate::model::candle_dtype(info.dtype)
            .or(match info.dtype {
                danlu_types::Dtype::Bool => Some(DType::U8),
                _ => None,
            })
            .ok_or_else(|| bad(format!("tensor `{}` has dtype {:?}", info.name, info.dtype)))?;
        if info.data.strides.is_some() || info.data.quant.is_some() {
            return Err(bad(format!(
                "tensor `{}` is strided or quantised, which is not supported",
                info.name
            )));
        }
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        let expected = info.numel() * dtype.size_in_bytes() as u64;
        let bytes = maps
            .get(info.data.file)
            .and_then(|map| {
                let start = usize::try_from(info.data.offset).ok()?;
                let end = start.checked_add(usize::try_from(info.data.len).ok()?)?;
                map.get(start..end)
            })
            .filter(|b| b.len() as u64 == expected)
            .ok_or_else(|| {
                bad(format!(
                    "tensor `{}`: byte range {}+{} does not fit its file or its shape",
                    info.name, info.data.offset, info.data.len
                ))
            })?;
        let t =
            Tensor::from_raw_buffer(bytes, dtype, &shape, &Device::Cpu)?.to_dtype(DType::F32)?;
        out.insert(info.name.clone(), t);
    }
    Ok((index, out))
}

/// A family guess from a context width (CLIP ViT-L 768, OpenCLIP ViT-H 1024, SDXL's two
/// encoders 2048), for messages.
pub(crate) fn family_of_width(width: usize) -> String {
    match width {
        768 => "SD 1.x (context width 768)".to_owned(),
        1024 => "SD 2.x (context width 1024)".to_owned(),
        2048 => "SDXL (context width 2048)".to_owned(),
        w => format!("a model with context width {w}"),
    }
}
