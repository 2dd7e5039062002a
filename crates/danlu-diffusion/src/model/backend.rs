//! A candle [`SimpleBackend`] over a mapped [`TensorIndex`] and a [`Remap`].
//!
//! A network asks for a diffusers name; the backend finds the stored tensor through the remap,
//! copies its bytes out of the map into a tensor of the stored dtype (candle's CPU storage owns
//! its memory, so a copy is unavoidable), applies the remap's transform, checks the shape,
//! converts to the compute dtype and moves it to the device. The stored-dtype copy is dropped as
//! soon as the converted tensor exists, so loading holds the networks' weights in the compute
//! dtype plus one tensor in flight; the map itself is file-backed and costs page cache, not heap.

use super::remap::{Remap, Transform};
use crate::adapters::{Patch, apply_patches};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::Init;
use candle_nn::var_builder::SimpleBackend;
use danlu_format::TensorIndex;
use danlu_types::Dtype;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The mapped files of one checkpoint.
#[derive(Debug)]
pub(crate) struct Mapped {
    pub(crate) index: TensorIndex,
    pub(crate) maps: Vec<danlu_fs::Map>,
}

pub(crate) struct IndexBackend {
    pub(crate) mapped: Arc<Mapped>,
    pub(crate) remap: Arc<Remap>,
    pub(crate) requested: Arc<Mutex<BTreeSet<String>>>,
    /// Network patches (LoRA) applied to the named weights as they are read.
    pub(crate) patches: Option<Arc<BTreeMap<String, Vec<Patch>>>>,
}

pub(crate) fn candle_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
        _ => return None,
    })
}

impl IndexBackend {
    fn read(&self, name: &str) -> candle_core::Result<Tensor> {
        let source =
            self.remap
                .targets
                .get(name)
                .ok_or_else(|| candle_core::Error::CannotFindTensor {
                    path: name.to_string(),
                })?;
        let info = self.mapped.index.get(&source.key).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: source.key.clone(),
            }
        })?;
        let dtype = candle_dtype(info.dtype).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "tensor `{}` has dtype {:?}, expected f16, bf16, f32 or f64",
                info.name, info.dtype
            ))
        })?;
        if info.data.strides.is_some() || info.data.quant.is_some() {
            return Err(candle_core::Error::Msg(format!(
                "tensor `{}` is strided or quantised, which is not supported yet",
                info.name
            )));
        }
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        let expected = info.numel() * dtype.size_in_bytes() as u64;
        let bytes = self
            .mapped
            .maps
            .get(info.data.file)
            .and_then(|map| {
                let start = usize::try_from(info.data.offset).ok()?;
                let end = start.checked_add(usize::try_from(info.data.len).ok()?)?;
                map.get(start..end)
            })
            .filter(|b| b.len() as u64 == expected)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "tensor `{}`: byte range {}+{} does not fit its file or its shape",
                    info.name, info.data.offset, info.data.len
                ))
            })?;
        let tensor = Tensor::from_raw_buffer(bytes, dtype, &shape, &Device::Cpu)?;
        let tensor = self.transform(tensor, source.transform, &info.name)?;
        match self.patches.as_ref().and_then(|p| p.get(name)) {
            Some(patches) => apply_patches(&tensor, patches),
            None => Ok(tensor),
        }
    }

    fn transform(
        &self,
        tensor: Tensor,
        transform: Transform,
        name: &str,
    ) -> candle_core::Result<Tensor> {
        match transform {
            Transform::Whole => Ok(tensor),
            Transform::Chunk { index, count } => {
                let rows = tensor.dim(0)?;
                if count == 0 || rows % count != 0 {
                    return Err(candle_core::Error::Msg(format!(
                        "tensor `{name}`: {rows} rows do not split in {count}"
                    )));
                }
                tensor.narrow(0, index * rows / count, rows / count)
            }
            Transform::DropUnitDims => match tensor.dims() {
                [o, i, 1, 1] => tensor.reshape((*o, *i)),
                _ => Ok(tensor),
            },
        }
    }

    fn finish(&self, t: Tensor, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        t.to_dtype(dtype)?.to_device(dev)
    }
}

impl SimpleBackend for IndexBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.read(name)?;
        if t.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for `{name}`"),
                expected: s,
                got: t.shape().clone(),
            });
        }
        if let Ok(mut set) = self.requested.lock() {
            set.insert(name.to_string());
        }
        self.finish(t, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.read(name)?;
        if let Ok(mut set) = self.requested.lock() {
            set.insert(name.to_string());
        }
        self.finish(t, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.remap.targets.contains_key(name)
    }
}
