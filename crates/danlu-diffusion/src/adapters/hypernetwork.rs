//! A1111 hypernetworks: small residual MLPs applied to the key and value inputs of every UNet
//! attention layer whose input width they cover.
//!
//! After A1111 `modules/hypernetworks/hypernetwork.py`. The file is a torch dict from input
//! width (`320`, `640`, `768`, `1280` for SD1) to a pair of `HypernetworkModule` state dicts, one
//! for keys and one for values, plus the structure: `layer_structure` (width multipliers,
//! default `[1, 2, 1]`), `activation_func` (default none), `is_layer_norm`, `activate_output`
//! (default true), `use_dropout`, `last_layer_dropout`, `dropout_structure`. Each module is
//! `x + multiplier * Sequential(x)` where the sequence is, per step `i`: `Linear(dim * s[i],
//! dim * s[i + 1])`, the activation (not after the last linear unless `activate_output`; never
//! for `linear` or none), `LayerNorm` when `is_layer_norm`, and a `Dropout` (an identity at
//! inference) where the dropout structure is above 0. `apply_single_hypernetwork` runs in
//! float32 on the attention's context, which for self-attention is the hidden state itself
//! (`default(context, x)`), so hypernetworks act on both attentions of each transformer block.

use super::read_tensors;
use crate::{Error, Result};
use candle_core::{D, DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An activation of A1111's `HypernetworkModule.activation_dict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HyperActivation {
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.LeakyReLU` (slope 0.01).
    LeakyRelu,
    /// `torch.nn.ELU` (alpha 1).
    Elu,
    /// `swish`, which A1111 maps to `torch.nn.Hardswish`; also `hardswish`.
    Hardswish,
    /// `torch.nn.Tanh`.
    Tanh,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.GELU` (erf).
    Gelu,
    /// `torch.nn.SiLU`.
    Silu,
    /// `torch.nn.Mish`.
    Mish,
    /// `torch.nn.Softplus`.
    Softplus,
}

impl HyperActivation {
    /// The activation named `name` (`None` for `linear`, which adds no layer).
    ///
    /// # Errors
    /// The name when it is not supported.
    pub fn parse(name: &str) -> std::result::Result<Option<Self>, String> {
        Ok(Some(match name {
            "linear" => return Ok(None),
            "relu" => Self::Relu,
            "leakyrelu" => Self::LeakyRelu,
            "elu" => Self::Elu,
            "swish" | "hardswish" => Self::Hardswish,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "gelu" => Self::Gelu,
            "silu" => Self::Silu,
            "mish" => Self::Mish,
            "softplus" => Self::Softplus,
            other => return Err(other.to_owned()),
        }))
    }

    fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Relu => x.relu(),
            Self::LeakyRelu => {
                let neg = (x.minimum(0.0)? * 0.01)?;
                x.relu()? + neg
            }
            Self::Elu => x.elu(1.0),
            Self::Hardswish => {
                let gate = ((x + 3.0)?.clamp(0.0, 6.0)? / 6.0)?;
                x * gate
            }
            Self::Tanh => x.tanh(),
            Self::Sigmoid => candle_nn::ops::sigmoid(x),
            Self::Gelu => x.gelu_erf(),
            Self::Silu => x.silu(),
            Self::Mish => {
                let sp = softplus(x)?;
                x * sp.tanh()?
            }
            Self::Softplus => softplus(x),
        }
    }
}

/// `torch.nn.Softplus` (beta 1, threshold 20).
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    let smooth = (x.exp()? + 1.0)?.log()?;
    let big = x.ge(20.0)?;
    big.where_cond(x, &smooth)
}

#[derive(Debug, Clone)]
enum Step {
    Linear { w: Tensor, b: Tensor },
    Activation(HyperActivation),
    LayerNorm { w: Tensor, b: Tensor },
}

/// One `HypernetworkModule`: `x + multiplier * Sequential(x)`.
#[derive(Debug, Clone)]
pub struct HyperModule {
    steps: Vec<Step>,
}

impl HyperModule {
    /// `x + multiplier * Sequential(x)`, in float32.
    ///
    /// # Errors
    /// When `x`'s width is not the module's.
    pub fn forward(&self, x: &Tensor, multiplier: f32) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for s in &self.steps {
            h = match s {
                Step::Linear { w, b } => h.broadcast_matmul(&w.t()?)?.broadcast_add(b)?,
                Step::Activation(a) => a.forward(&h)?,
                Step::LayerNorm { w, b } => {
                    let mean = h.mean_keepdim(D::Minus1)?;
                    let c = h.broadcast_sub(&mean)?;
                    let var = c.sqr()?.mean_keepdim(D::Minus1)?;
                    c.broadcast_div(&(var + 1e-5)?.sqrt()?)?
                        .broadcast_mul(w)?
                        .broadcast_add(b)?
                }
            };
        }
        x + (h * f64::from(multiplier))?
    }

    fn to_device(&self, device: &Device) -> candle_core::Result<Self> {
        let mv = |t: &Tensor| t.to_device(device);
        let steps = self
            .steps
            .iter()
            .map(|s| {
                Ok(match s {
                    Step::Linear { w, b } => Step::Linear {
                        w: mv(w)?,
                        b: mv(b)?,
                    },
                    Step::LayerNorm { w, b } => Step::LayerNorm {
                        w: mv(w)?,
                        b: mv(b)?,
                    },
                    Step::Activation(a) => Step::Activation(*a),
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { steps })
    }
}

/// A hypernetwork file.
#[derive(Debug, Clone)]
pub struct Hypernetwork {
    /// The file.
    pub path: PathBuf,
    /// The name tags use (the file stem).
    pub name: String,
    /// Input width to the key and value modules.
    pub layers: BTreeMap<usize, (HyperModule, HyperModule)>,
}

/// A hypernetwork with the strength a tag gave it.
#[derive(Debug, Clone)]
pub struct ActiveHypernetwork {
    /// The network.
    pub network: Arc<Hypernetwork>,
    /// `Hypernet strength`.
    pub multiplier: f32,
}

/// A1111 `apply_hypernetworks`: the key and value inputs for an attention whose context is
/// `context`, each hypernetwork applied in turn to both.
///
/// # Errors
/// When a module does not fit the context.
pub fn apply_hypernetworks(
    list: &[ActiveHypernetwork],
    context: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let width = context.dim(D::Minus1)?;
    let dtype = context.dtype();
    let mut k = context.clone();
    let mut v = context.clone();
    for h in list {
        let Some((mk, mv)) = h.network.layers.get(&width) else {
            continue;
        };
        k = mk
            .forward(&k.to_dtype(DType::F32)?, h.multiplier)?
            .to_dtype(dtype)?;
        v = mv
            .forward(&v.to_dtype(DType::F32)?, h.multiplier)?
            .to_dtype(dtype)?;
    }
    Ok((k, v))
}

fn value<'a>(
    values: &'a BTreeMap<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    values.get(key).filter(|v| !v.is_null())
}

fn list(values: &BTreeMap<String, serde_json::Value>, key: &str) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    while let Some(v) = values.get(&format!("{key}.{}", out.len())) {
        out.push(v.as_f64()?);
    }
    (!out.is_empty()).then_some(out)
}

/// Reads an A1111 hypernetwork `.pt` (its pickle read, never run).
///
/// # Errors
/// When the file cannot be read, names an unsupported activation, or its tensors do not match
/// the structure it declares.
pub fn read_hypernetwork(path: impl AsRef<Path>) -> Result<Hypernetwork> {
    let path = path.as_ref();
    let (index, tensors) = read_tensors(path)?;
    let bad = |reason: String| Error::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    let values = &index.values;
    let structure = list(values, "layer_structure").unwrap_or_else(|| vec![1.0, 2.0, 1.0]);
    let activation = match value(values, "activation_func").and_then(|v| v.as_str()) {
        None => None,
        Some(name) => HyperActivation::parse(name)
            .map_err(|n| bad(format!("activation `{n}` is not supported")))?,
    };
    let layer_norm = value(values, "is_layer_norm")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let activate_output = value(values, "activate_output")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true);
    let dropout = list(values, "dropout_structure");
    let use_dropout = match &dropout {
        Some(d) if d.iter().any(|&p| p != 0.0) => true,
        _ => value(values, "use_dropout")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    };
    let last_layer_dropout = value(values, "last_layer_dropout")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    // `parse_dropout_structure`.
    let dropout = dropout.unwrap_or_else(|| {
        let n = structure.len();
        if !use_dropout {
            return vec![0.0; n];
        }
        let mut d = vec![0.0];
        d.extend(std::iter::repeat_n(0.3, n.saturating_sub(3)));
        d.push(if last_layer_dropout { 0.3 } else { 0.0 });
        d.push(0.0);
        d
    });
    // Group the tensors by width and module: `<width>.<0|1>.linear.<i>.<weight|bias>` (old
    // files: `linear1`/`linear2`, A1111 `fix_old_state_dict`).
    let mut groups: BTreeMap<(usize, usize), BTreeMap<String, Tensor>> = BTreeMap::new();
    for (name, t) in tensors {
        let mut parts = name.splitn(3, '.');
        let (Some(width), Some(which), Some(rest)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(width), Ok(which)) = (width.parse::<usize>(), which.parse::<usize>()) else {
            continue;
        };
        let rest = match rest {
            "linear1.weight" => "linear.0.weight",
            "linear1.bias" => "linear.0.bias",
            "linear2.weight" => "linear.1.weight",
            "linear2.bias" => "linear.1.bias",
            r => r,
        };
        groups
            .entry((width, which))
            .or_default()
            .insert(rest.to_owned(), t);
    }
    let mut layers: BTreeMap<usize, (Option<HyperModule>, Option<HyperModule>)> = BTreeMap::new();
    for ((width, which), mut t) in groups {
        let mut steps = Vec::new();
        let mut index = 0usize;
        let n = structure.len();
        for i in 0..n.saturating_sub(1) {
            let (Some(w), Some(b)) = (
                t.remove(&format!("linear.{index}.weight")),
                t.remove(&format!("linear.{index}.bias")),
            ) else {
                return Err(bad(format!(
                    "width {width}: no `linear.{index}` for step {i} of the layer structure"
                )));
            };
            let expected = (
                (width as f64 * structure[i + 1]) as usize,
                (width as f64 * structure[i]) as usize,
            );
            if w.dims2().ok() != Some(expected) {
                return Err(bad(format!(
                    "width {width}: `linear.{index}.weight` has shape {:?}, the layer structure \
                     gives {expected:?}",
                    w.dims()
                )));
            }
            steps.push(Step::Linear { w, b });
            index += 1;
            if let Some(a) = activation
                && (i + 2 < n || activate_output)
            {
                steps.push(Step::Activation(a));
                index += 1;
            }
            if layer_norm {
                let (Some(w), Some(b)) = (
                    t.remove(&format!("linear.{index}.weight")),
                    t.remove(&format!("linear.{index}.bias")),
                ) else {
                    return Err(bad(format!(
                        "width {width}: no layer norm `linear.{index}`"
                    )));
                };
                steps.push(Step::LayerNorm { w, b });
                index += 1;
            }
            if dropout.get(i + 1).is_some_and(|&p| p > 0.0) {
                // Dropout: an identity at inference, but it takes a place in the sequence.
                index += 1;
            }
        }
        if let Some(extra) = t.keys().next() {
            return Err(bad(format!(
                "width {width}: tensor `{extra}` does not fit the declared structure"
            )));
        }
        let entry = layers.entry(width).or_default();
        let module = HyperModule { steps };
        match which {
            0 => entry.0 = Some(module),
            1 => entry.1 = Some(module),
            _ => return Err(bad(format!("width {width}: module {which} of 2"))),
        }
    }
    let layers = layers
        .into_iter()
        .map(|(width, pair)| match pair {
            (Some(k), Some(v)) => Ok((width, (k, v))),
            _ => Err(bad(format!(
                "width {width}: needs a key and a value module"
            ))),
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    if layers.is_empty() {
        return Err(bad("no hypernetwork layers in the file".to_owned()));
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Hypernetwork {
        path: path.to_path_buf(),
        name,
        layers,
    })
}

impl Hypernetwork {
    /// The same network with its weights on `device`.
    ///
    /// # Errors
    /// When a tensor cannot be moved.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|(w, (k, v))| Ok((*w, (k.to_device(device)?, v.to_device(device)?))))
            .collect::<candle_core::Result<BTreeMap<_, _>>>()?;
        Ok(Self {
            path: self.path.clone(),
            name: self.name.clone(),
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_names_follow_the_activation_dict() {
        assert_eq!(HyperActivation::parse("linear"), Ok(None));
        assert_eq!(
            HyperActivation::parse("swish"),
            Ok(Some(HyperActivation::Hardswish))
        );
        assert_eq!(HyperActivation::parse("prelu"), Err("prelu".to_owned()));
    }

    #[test]
    fn a_module_adds_its_scaled_output_to_the_input() {
        let w = Tensor::new(&[[2f32, 0.0], [0.0, 3.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[1f32, -1.0], &Device::Cpu).unwrap();
        let m = HyperModule {
            steps: vec![
                Step::Linear { w, b },
                Step::Activation(HyperActivation::Relu),
            ],
        };
        let x = Tensor::new(&[[1f32, 1.0]], &Device::Cpu).unwrap();
        let y = m.forward(&x, 0.5).unwrap().to_vec2::<f32>().unwrap();
        // relu([3, 2]) * 0.5 + x
        assert_eq!(y, vec![vec![2.5, 2.0]]);
    }
}
