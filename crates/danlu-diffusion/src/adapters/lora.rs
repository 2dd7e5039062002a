//! LoRA and LyCORIS networks: reading the files, naming their targets, computing weight deltas.
//!
//! Module types and their math follow A1111 `extensions-builtin/Lora/` (`network_lora.py`,
//! `network_hada.py`, `network_lokr.py`, `network_ia3.py`, `network_full.py`, `network.py`
//! `finalize_updown` and `apply_weight_decompose`, `lyco_helpers.py`), which implement the
//! LyCORIS formulas:
//!
//! * LoRA/LoCon: `up @ down` (convolutions flattened, a `lora_mid` CP core contracted in),
//! * LoHa: `(w1_a @ w1_b) * (w2_a @ w2_b)` (Tucker cores `hada_t1`/`hada_t2` contracted in),
//! * LoKr: `kron(w1, w2)` with each factor whole or `a @ b` (or a Tucker core for `w2`),
//! * IA3: the weight scaled per output (or, `on_input`, per input) channel,
//! * full: a stored difference `diff`,
//! * DoRA (`dora_scale`): the patched weight renormalised per input channel as A1111's
//!   `apply_weight_decompose` does,
//!
//! then multiplied by `alpha / dim` (when both are known) and by the tag's multiplier.
//!
//! Names: kohya keys `lora_unet_*`, `lora_te_*` (`lora_te1_*` read as the first encoder) in
//! diffusers style (`lora_unet_down_blocks_0_attentions_0_...`) or ldm style
//! (`lora_unet_input_blocks_1_1_...`), as A1111 `networks.py` `convert_diffusers_name_to_compvis`
//! and `network_layer_mapping` accept them; diffusers/PEFT keys (`unet.<path>.lora_A.weight`,
//! `unet.<path>.lora.down.weight`, `<path>.processor.to_q_lora.down.weight`,
//! `text_encoder.<path>.lora_B.weight`, `base_model.model.<path>...`).

use super::{Patch, WeightPatches, family_of_width, read_tensors};
use crate::model::Checkpoint;
use crate::model::remap::{Remap, Transform};
use crate::{Error, Result};
use candle_core::{D, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How one module changes its target weight.
#[derive(Debug, Clone)]
pub enum ModuleKind {
    /// LoRA/LoCon: `up @ down`, optionally through a CP core `mid`.
    Lora {
        /// `lora_up.weight` `[out, rank(, 1, 1)]`.
        up: Tensor,
        /// `lora_down.weight` `[rank, in(, kh, kw)]`.
        down: Tensor,
        /// `lora_mid.weight` `[rank, rank, kh, kw]`.
        mid: Option<Tensor>,
    },
    /// LoHa: Hadamard product of two low-rank products.
    Loha {
        /// `hada_w1_a`, `hada_w1_b`, `hada_t1`.
        w1: (Tensor, Tensor, Option<Tensor>),
        /// `hada_w2_a`, `hada_w2_b`, `hada_t2`.
        w2: (Tensor, Tensor, Option<Tensor>),
    },
    /// LoKr: Kronecker product of two factors.
    Lokr {
        /// `lokr_w1`, or `lokr_w1_a @ lokr_w1_b`.
        w1: Factor,
        /// `lokr_w2`, or `lokr_w2_a @ lokr_w2_b` (with `lokr_t2`).
        w2: Factor,
    },
    /// IA3: per-channel scale of the weight.
    Ia3 {
        /// `weight`, one value per output channel (per input channel when `on_input`).
        w: Tensor,
        /// `on_input`.
        on_input: bool,
    },
    /// A stored difference (`diff`).
    Full {
        /// The difference.
        diff: Tensor,
    },
}

/// One LoKr factor.
#[derive(Debug, Clone)]
pub enum Factor {
    /// Stored whole.
    Whole(Tensor),
    /// Stored as `a @ b`, with an optional Tucker core.
    Product {
        /// `_a`.
        a: Tensor,
        /// `_b`.
        b: Tensor,
        /// `lokr_t2`.
        t: Option<Tensor>,
    },
}

/// One module of a network: what it does to one weight.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// The module's key in the file (without the part after it).
    pub key: String,
    /// The math.
    pub kind: ModuleKind,
    /// `alpha`, when stored.
    pub alpha: Option<f32>,
    /// `dora_scale`, when stored.
    pub dora_scale: Option<Tensor>,
}

fn matmul2(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.flatten_from(1)?.matmul(&b.flatten_from(1)?)
}

/// `einsum('i j k l, j r, i p -> p r k l', t, wb, wa)` (`lyco_helpers.rebuild_tucker` /
/// `make_weight_cp`).
fn tucker(t: &Tensor, wa: &Tensor, wb: &Tensor) -> candle_core::Result<Tensor> {
    let wa = wa.flatten_from(1)?;
    let wb = wb.flatten_from(1)?;
    // [k, l, i, j]
    let tp = t.permute((2, 3, 0, 1))?.contiguous()?;
    let left = wa.t()?.contiguous()?.broadcast_matmul(&tp)?; // [k, l, p, j]
    let full = left.broadcast_matmul(&wb)?; // [k, l, p, r]
    full.permute((2, 3, 0, 1))?.contiguous()
}

/// `einsum('n m k l, i n, m j -> i j k l', mid, up, down)` (`rebuild_cp_decomposition`).
fn cp(up: &Tensor, down: &Tensor, mid: &Tensor) -> candle_core::Result<Tensor> {
    let up = up.flatten_from(1)?;
    let down = down.flatten_from(1)?;
    let mp = mid.permute((2, 3, 0, 1))?.contiguous()?; // [k, l, n, m]
    let full = up.broadcast_matmul(&mp)?.broadcast_matmul(&down)?; // [k, l, i, j]
    full.permute((2, 3, 0, 1))?.contiguous()
}

/// `torch.kron(w1, w2)` for 2-D `w1` and 2-D or 4-D `w2`.
fn kron(w1: &Tensor, w2: &Tensor) -> candle_core::Result<Tensor> {
    let (a, b) = w1.dims2()?;
    match w2.dims() {
        &[c, d] => {
            let x = w1.reshape((a, 1, b, 1))?;
            let y = w2.reshape((1, c, 1, d))?;
            x.broadcast_mul(&y)?.reshape((a * c, b * d))
        }
        &[c, d, k, l] => {
            let x = w1.reshape(vec![a, 1, b, 1, 1, 1])?;
            let y = w2.reshape(vec![1, c, 1, d, k, l])?;
            x.broadcast_mul(&y)?.reshape((a * c, b * d, k, l))
        }
        other => Err(candle_core::Error::Msg(format!(
            "LoKr factor of shape {other:?} is not supported"
        ))),
    }
}

fn factor(f: &Factor) -> candle_core::Result<Tensor> {
    match f {
        Factor::Whole(w) => Ok(w.clone()),
        Factor::Product { a, b, t: None } => matmul2(a, b),
        Factor::Product { a, b, t: Some(t) } => tucker(t, a, b),
    }
}

impl LoraModule {
    /// The rank A1111 divides `alpha` by (`network_*.py` `self.dim`).
    pub fn dim(&self) -> Option<usize> {
        match &self.kind {
            ModuleKind::Lora { down, .. } => down.dim(0).ok(),
            ModuleKind::Loha { w1, .. } => w1.1.dim(0).ok(),
            ModuleKind::Lokr { w1, w2 } => match (w1, w2) {
                (Factor::Product { b, .. }, _) | (_, Factor::Product { b, .. }) => b.dim(0).ok(),
                _ => None,
            },
            ModuleKind::Ia3 { .. } | ModuleKind::Full { .. } => None,
        }
    }

    /// `calc_scale`: `alpha / dim` when both are known, else 1.
    pub fn scale(&self) -> f64 {
        match (self.alpha, self.dim()) {
            (Some(alpha), Some(dim)) if dim > 0 => f64::from(alpha) / dim as f64,
            _ => 1.0,
        }
    }

    /// The raw update before DoRA, scale and multiplier, in the shape of `weight`.
    fn updown(&self, weight: &Tensor) -> candle_core::Result<Tensor> {
        let shape = weight.shape().clone();
        let raw = match &self.kind {
            ModuleKind::Lora { up, down, mid } => match mid {
                Some(mid) => cp(up, down, mid)?,
                None => {
                    if up.rank() == 4 && (up.dim(2)? != 1 || up.dim(3)? != 1) {
                        return Err(candle_core::Error::Msg(format!(
                            "`{}`: a LoRA up weight with a spatial kernel is not supported",
                            self.key
                        )));
                    }
                    matmul2(up, down)?
                }
            },
            ModuleKind::Loha { w1, w2 } => {
                let a = match &w1.2 {
                    Some(t) => tucker(t, &w1.0, &w1.1)?,
                    None => matmul2(&w1.0, &w1.1)?,
                };
                let b = match &w2.2 {
                    Some(t) => tucker(t, &w2.0, &w2.1)?,
                    None => matmul2(&w2.0, &w2.1)?,
                };
                (a * b)?
            }
            ModuleKind::Lokr { w1, w2 } => kron(&factor(w1)?, &factor(w2)?)?,
            ModuleKind::Ia3 { w, on_input } => {
                let mut s = vec![1usize; weight.rank()];
                let n = w.elem_count();
                if *on_input {
                    if s.len() < 2 {
                        return Err(candle_core::Error::Msg(format!(
                            "`{}`: IA3 on_input needs a 2-D weight",
                            self.key
                        )));
                    }
                    s[1] = n;
                } else if let Some(first) = s.first_mut() {
                    *first = n;
                }
                weight.broadcast_mul(&w.reshape(s)?)?
            }
            ModuleKind::Full { diff } => diff.clone(),
        };
        if raw.elem_count() != shape.elem_count() {
            return Err(candle_core::Error::Msg(format!(
                "`{}`: the update has shape {:?}, the weight {:?}",
                self.key,
                raw.dims(),
                shape.dims()
            )));
        }
        raw.reshape(shape)
    }

    /// The change to `weight` (float32) at `multiplier` (`calc_updown` then `finalize_updown`).
    ///
    /// # Errors
    /// When the module's shapes do not fit the weight.
    pub fn delta(&self, weight: &Tensor, multiplier: f32) -> candle_core::Result<Tensor> {
        let mut updown = self.updown(weight)?;
        if let Some(dora) = &self.dora_scale {
            updown = weight_decompose(&updown, weight, dora)?;
        }
        updown * (self.scale() * f64::from(multiplier))
    }
}

/// A1111 `NetworkModule.apply_weight_decompose`: the patched weight divided by its norm over
/// every dimension but the input one, times `dora_scale`, minus the original weight.
fn weight_decompose(updown: &Tensor, orig: &Tensor, dora: &Tensor) -> candle_core::Result<Tensor> {
    let merged = (updown + orig)?;
    let dims = merged.dims().to_vec();
    let (out, inp) = (dims[0], dims.get(1).copied().unwrap_or(1));
    let t = merged.transpose(0, 1)?.contiguous()?.reshape((inp, ()))?;
    let norm = t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?; // [in, 1]
    let mut s = vec![1usize; dims.len()];
    s[1] = inp;
    let norm = norm.reshape(s.clone())?;
    let dora = dora.reshape(s)?;
    let _ = out;
    merged
        .broadcast_mul(&dora.broadcast_div(&norm)?)?
        .broadcast_sub(orig)
}

/// A LoRA-type network file.
#[derive(Debug, Clone)]
pub struct Lora {
    /// The file.
    pub path: PathBuf,
    /// The name tags use (the file stem).
    pub name: String,
    /// Modules by key, in file order of keys.
    pub modules: BTreeMap<String, Arc<LoraModule>>,
    /// Keys that belong to no module type this reader knows (e.g. cloneofsimo's `unet:0:up`).
    pub unknown: Vec<String>,
}

/// Suffixes of diffusers/PEFT keys, longest first, and the kohya part each stands for.
const DIFFUSERS_PARTS: &[(&str, &str)] = &[
    (".lora.down.weight", "lora_down.weight"),
    (".lora.up.weight", "lora_up.weight"),
    ("_lora.down.weight", "lora_down.weight"),
    ("_lora.up.weight", "lora_up.weight"),
    (".lora_A.weight", "lora_down.weight"),
    (".lora_B.weight", "lora_up.weight"),
    (".lora_A.default.weight", "lora_down.weight"),
    (".lora_B.default.weight", "lora_up.weight"),
    (".lora_magnitude_vector", "dora_scale"),
    (".alpha", "alpha"),
];

/// Splits a stored key into module key (in kohya form) and part.
fn split_key(key: &str) -> Option<(String, String)> {
    if key.starts_with("lora_") {
        let (module, part) = key.split_once('.')?;
        return Some((module.to_owned(), part.to_owned()));
    }
    let (module, part) = DIFFUSERS_PARTS
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|m| (m, *part)))?;
    let (network, path) = if let Some(p) = module.strip_prefix("unet.") {
        ("lora_unet_", p)
    } else if let Some(p) = module.strip_prefix("base_model.model.") {
        ("lora_unet_", p)
    } else if let Some(p) = module.strip_prefix("text_encoder.") {
        ("lora_te_", p)
    } else {
        ("lora_unet_", module)
    };
    // diffusers' attention processors: `attn1.processor.to_q_lora` is `attn1.to_q`.
    let path = path.replace(".processor.", ".");
    let path = path
        .strip_suffix("to_out")
        .map(|p| format!("{p}to_out.0"))
        .unwrap_or(path);
    Some((
        format!("{network}{}", path.replace('.', "_")),
        part.to_owned(),
    ))
}

/// Reads a LoRA/LyCORIS file (safetensors, or a `.pt`/`.ckpt` read without running its pickle).
///
/// # Errors
/// When the file cannot be read or a module lacks a tensor its type needs.
pub fn read_lora(path: impl AsRef<Path>) -> Result<Lora> {
    let path = path.as_ref();
    let (_, tensors) = read_tensors(path)?;
    let mut grouped: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, t) in tensors {
        match split_key(&key) {
            Some((module, part)) => {
                grouped.entry(module).or_default().insert(part, t);
            }
            None => unknown.push(key),
        }
    }
    let bad = |reason: String| Error::Adapter {
        path: path.to_path_buf(),
        reason,
    };
    let mut modules = BTreeMap::new();
    for (key, mut w) in grouped {
        let alpha = match w.remove("alpha") {
            Some(a) => Some(
                a.flatten_all()
                    .and_then(|a| a.get(0))
                    .and_then(|a| a.to_scalar::<f32>())
                    .map_err(|_| bad(format!("`{key}.alpha` is not a number")))?,
            ),
            None => None,
        };
        let dora_scale = w.remove("dora_scale");
        let mut take = |name: &str| w.remove(name);
        let kind =
            if let (Some(up), Some(down)) = (take("lora_up.weight"), take("lora_down.weight")) {
                ModuleKind::Lora {
                    up,
                    down,
                    mid: take("lora_mid.weight"),
                }
            } else if let (Some(a1), Some(b1), Some(a2), Some(b2)) = (
                take("hada_w1_a"),
                take("hada_w1_b"),
                take("hada_w2_a"),
                take("hada_w2_b"),
            ) {
                ModuleKind::Loha {
                    w1: (a1, b1, take("hada_t1")),
                    w2: (a2, b2, take("hada_t2")),
                }
            } else if let Some(w1) = take("lokr_w1").map(Factor::Whole).or_else(|| {
                match (take("lokr_w1_a"), take("lokr_w1_b")) {
                    (Some(a), Some(b)) => Some(Factor::Product { a, b, t: None }),
                    _ => None,
                }
            }) {
                let w2 = take("lokr_w2").map(Factor::Whole).or_else(|| {
                    match (take("lokr_w2_a"), take("lokr_w2_b")) {
                        (Some(a), Some(b)) => Some(Factor::Product {
                            a,
                            b,
                            t: take("lokr_t2"),
                        }),
                        _ => None,
                    }
                });
                let w2 = w2.ok_or_else(|| bad(format!("LoKr module `{key}` has no `lokr_w2`")))?;
                ModuleKind::Lokr { w1, w2 }
            } else if let Some(diff) = take("diff") {
                ModuleKind::Full { diff }
            } else if let Some(weight) = take("weight") {
                let on_input = match take("on_input") {
                    Some(t) => {
                        t.flatten_all()
                            .and_then(|t| t.get(0))
                            .and_then(|t| t.to_scalar::<f32>())
                            .map_err(|_| bad(format!("`{key}.on_input` is not a flag")))?
                            != 0.0
                    }
                    None => false,
                };
                ModuleKind::Ia3 {
                    w: weight,
                    on_input,
                }
            } else {
                unknown.extend(w.keys().map(|p| format!("{key}.{p}")));
                continue;
            };
        modules.insert(
            key.clone(),
            Arc::new(LoraModule {
                key,
                kind,
                alpha,
                dora_scale,
            }),
        );
    }
    if modules.is_empty() {
        return Err(bad(
            "no LoRA, LyCORIS or diffusers LoRA module in the file".to_owned()
        ));
    }
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Lora {
        path: path.to_path_buf(),
        name,
        modules,
        unknown,
    })
}

impl Lora {
    /// The context width this network was made for, from its cross-attention key/value
    /// modules' input size (768 SD1, 1024 SD2, 2048 SDXL), when it patches one; `lora_te1_` or
    /// `lora_te2_` keys mean SDXL.
    pub fn context_width(&self) -> Option<usize> {
        if self
            .modules
            .keys()
            .any(|k| k.starts_with("lora_te2_") || k.starts_with("lora_te1_"))
        {
            return Some(2048);
        }
        self.modules.values().find_map(|m| {
            if !(m.key.ends_with("attn2_to_k") || m.key.ends_with("attn2_to_v")) {
                return None;
            }
            match &m.kind {
                ModuleKind::Lora { down, .. } => down.dim(1).ok(),
                ModuleKind::Loha { w1, .. } => w1.1.dim(1).ok(),
                _ => None,
            }
        })
    }
}

/// Network-layer names of one network: A1111-style underscore names to the network's weights.
#[derive(Debug, Clone, Default)]
struct LayerNames {
    names: BTreeMap<String, String>,
}

impl LayerNames {
    /// Every weight of the network under its diffusers-style and ldm-style underscore names.
    fn build(remap: &Remap, prefix: &str, network: &str, text: bool) -> Self {
        let mut names = BTreeMap::new();
        for (target, source) in &remap.targets {
            let Some(module) = target.strip_suffix(".weight") else {
                continue;
            };
            let dotted = if text {
                format!("text_model.{module}")
            } else {
                module.to_owned()
            };
            names.insert(
                format!("{network}{}", dotted.replace('.', "_")),
                target.clone(),
            );
            if source.transform == Transform::Whole
                && let Some(stored) = source.key.strip_prefix(prefix)
                && let Some(stored) = stored.strip_suffix(".weight")
            {
                names
                    .entry(format!("{network}{}", stored.replace('.', "_")))
                    .or_insert_with(|| target.clone());
            }
        }
        Self { names }
    }
}

/// A set of networks with their multipliers, as the prompt's tags asked for them.
#[derive(Debug, Clone, Default)]
pub struct NetworkSet {
    /// Networks with text-encoder and UNet multipliers, in tag order.
    pub loras: Vec<(Arc<Lora>, f32, f32)>,
}

/// The patches of a set, and what in it matched nothing.
#[derive(Debug, Clone, Default)]
pub struct ResolvedPatches {
    /// The patches.
    pub patches: WeightPatches,
    /// `name: key` of modules that name no weight of the model.
    pub unmatched: Vec<String>,
}

impl NetworkSet {
    /// Maps every module of the set to the weight it patches in `checkpoint`'s UNet and text
    /// encoder (shapes as `unet` and `text` say).
    ///
    /// # Errors
    /// [`Error::WrongBase`] when a network was made for another context width than the
    /// model's.
    pub fn patches(
        &self,
        checkpoint: &Checkpoint,
        unet: &crate::model::UnetConfig,
        text: &crate::model::TextConfig,
    ) -> Result<ResolvedPatches> {
        let (uprefix, uremap) = checkpoint.unet_remap(unet);
        let (tprefix, tremap) = checkpoint.text_remap(text);
        let unet_names = LayerNames::build(&uremap, &uprefix, "lora_unet_", false);
        let mut text_names = LayerNames::build(&tremap, &tprefix, "lora_te_", true);
        // A1111 also accepts the raw ldm names of the text model (`transformer_text_model_*`
        // for SD1, `model_transformer_resblocks_*` for SD2) after `lora_te_`.
        let extra: Vec<(String, String)> = text_names
            .names
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("lora_te_")
                    .map(|rest| (format!("lora_te_transformer_{rest}"), v.clone()))
            })
            .collect();
        text_names.names.extend(extra);
        let mut out = ResolvedPatches::default();
        for (lora, te, un) in &self.loras {
            if let Some(width) = lora.context_width()
                && width != unet.cross_attention_dim
            {
                return Err(Error::WrongBase {
                    path: lora.path.clone(),
                    kind: "LoRA",
                    adapter: family_of_width(width),
                    model: family_of_width(unet.cross_attention_dim),
                });
            }
            for (key, module) in &lora.modules {
                let key1 = key.replacen("lora_te1_", "lora_te_", 1);
                let hit = if let Some(t) = unet_names.names.get(&key1) {
                    Some((&mut out.patches.unet, t, *un))
                } else {
                    text_names
                        .names
                        .get(&key1)
                        .map(|t| (&mut out.patches.text, t, *te))
                };
                match hit {
                    Some((map, target, multiplier)) => {
                        map.entry(target.clone()).or_default().push(Patch {
                            module: Arc::clone(module),
                            multiplier,
                        });
                    }
                    None => out.unmatched.push(format!("{}: {key}", lora.name)),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn kohya_and_diffusers_keys_split_into_module_and_part() {
        assert_eq!(
            split_key("lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"),
            Some((
                "lora_unet_down_blocks_0_attentions_0_proj_in".into(),
                "lora_up.weight".into()
            ))
        );
        assert_eq!(
            split_key(
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
            ),
            Some((
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q".into(),
                "lora_down.weight".into()
            ))
        );
        assert_eq!(
            split_key(
                "mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight"
            ),
            Some((
                "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0".into(),
                "lora_up.weight".into()
            ))
        );
        assert_eq!(
            split_key("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"),
            Some((
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj".into(),
                "lora_up.weight".into()
            ))
        );
        assert_eq!(split_key("unet:0:up"), None);
    }

    #[test]
    fn lora_delta_is_up_times_down_times_alpha_over_rank() {
        let m = LoraModule {
            key: "k".into(),
            kind: ModuleKind::Lora {
                up: t(&[1.0, 2.0], &[2, 1]),
                down: t(&[3.0, 4.0, 5.0], &[1, 3]),
                mid: None,
            },
            alpha: Some(0.5),
            dora_scale: None,
        };
        let w = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let d = m.delta(&w, 2.0).unwrap().to_vec2::<f32>().unwrap();
        // alpha / rank = 0.5, multiplier 2: the product itself.
        assert_eq!(d, vec![vec![3.0, 4.0, 5.0], vec![6.0, 8.0, 10.0]]);
    }

    #[test]
    fn kron_matches_its_definition() {
        let a = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
        let b = t(&[0.0, 1.0, 1.0, 0.0], &[2, 2]);
        let k = kron(&a, &b).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            k,
            vec![
                vec![0.0, 1.0, 0.0, 2.0],
                vec![1.0, 0.0, 2.0, 0.0],
                vec![0.0, 3.0, 0.0, 4.0],
                vec![3.0, 0.0, 4.0, 0.0],
            ]
        );
    }
}
