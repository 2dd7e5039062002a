//! Which tensors go into the output, under which names, from where, in which element type.
//!
//! Everything here looks at names and shapes only, except the CLIP `position_ids` check, which
//! reads that one small tensor.

use crate::cast::is_float;
use crate::report::{DropReason, Dropped, EmaSwap, Fix, FixKind};
use crate::source::read_tensor;
use crate::{Error, Result};
use danlu_format::TensorIndex;
use danlu_types::{Dtype, Format};
use std::collections::BTreeMap;
use std::path::Path;

/// Most keys listed as examples in a report line.
const EXAMPLES: usize = 3;

/// The prefix LDM gives the UNet of a checkpoint (`LatentDiffusion.model.diffusion_model`).
const UNET: &str = "model.diffusion_model.";
/// The prefix of LDM's EMA copies (`LatentDiffusion.model_ema`, a `LitEma`).
const EMA: &str = "model_ema.";
/// The prefix of a baked VAE (`LatentDiffusion.first_stage_model`).
pub(crate) const VAE: &str = "first_stage_model.";
/// Top-level names of training state that inference never reads: optimizer and scheduler state
/// Lightning stores, and the VAE's discriminator/LPIPS loss (A1111 `modules/sd_vae.py` drops
/// `loss*` keys too).
const TRAINING: [&str; 5] = [
    "optimizer.",
    "optimizer_states.",
    "lr_scheduler.",
    "lr_schedulers.",
    "loss.",
];

/// Which index a tensor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The file being converted.
    Source,
    /// The VAE being baked in.
    Vae,
}

/// Where an output tensor's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Src {
    /// Tensor `usize` of an index.
    Tensor(Origin, usize),
    /// Bytes made here (a repaired tensor), already in the output dtype.
    Bytes(Vec<u8>),
}

/// One output tensor.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Name in the output.
    pub(crate) name: String,
    /// Element type in the output.
    pub(crate) dtype: Dtype,
    /// Element type of the source bytes (equal to `dtype` unless converted).
    pub(crate) src_dtype: Dtype,
    /// Shape.
    pub(crate) shape: Vec<u64>,
    /// Data.
    pub(crate) src: Src,
}

/// What the plan decided, for the report.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Tensors of the main output, by name.
    pub(crate) main: BTreeMap<String, Entry>,
    /// Tensors of the extracted VAE, when asked.
    pub(crate) vae: Option<BTreeMap<String, Entry>>,
    pub(crate) dropped: Vec<Dropped>,
    pub(crate) fixes: Vec<Fix>,
    pub(crate) ema: Option<EmaSwap>,
    /// VAE tensors that replaced ones of the source, and VAE tensors added.
    pub(crate) vae_replaced: usize,
    pub(crate) vae_added: usize,
}

/// What to do, as the planner needs it.
pub(crate) struct Request {
    pub(crate) dtype: Option<Dtype>,
    pub(crate) prune: bool,
    pub(crate) use_ema: bool,
    pub(crate) extract_vae: bool,
}

fn add_drop(drops: &mut Vec<Dropped>, reason: DropReason, name: &str, bytes: u64) {
    if let Some(d) = drops.iter_mut().find(|d| d.reason == reason) {
        d.tensors += 1;
        d.bytes += bytes;
        if d.examples.len() < EXAMPLES {
            d.examples.push(name.to_owned());
        }
    } else {
        drops.push(Dropped {
            reason,
            tensors: 1,
            bytes,
            examples: vec![name.to_owned()],
        });
    }
}

fn add_fix(fixes: &mut Vec<Fix>, kind: FixKind, name: &str, detail: String) {
    if let Some(f) = fixes.iter_mut().find(|f| f.kind == kind) {
        f.tensors += 1;
        if f.examples.len() < EXAMPLES {
            f.examples.push(name.to_owned());
        }
    } else {
        fixes.push(Fix {
            kind,
            tensors: 1,
            examples: vec![name.to_owned()],
            detail,
        });
    }
}

fn byte_len(index: &TensorIndex, i: usize) -> u64 {
    index
        .tensors
        .get(i)
        .map_or(0, |t| t.numel() * t.dtype.size_in_bytes().unwrap_or(1))
}

/// The tensors of `index` under their state-dict names: a Lightning checkpoint's
/// `{"state_dict": {...}, "global_step": ...}` is unwrapped (A1111 `modules/sd_models.py`
/// `get_state_dict_from_checkpoint`), tensors outside its `state_dict` are dropped, and
/// `module.`/`state_dict.` prefixes left on keys (from `DataParallel` or a doubly nested save)
/// are removed and reported.
fn state_dict_names(
    path: &Path,
    index: &TensorIndex,
    drops: &mut Vec<Dropped>,
    fixes: &mut Vec<Fix>,
) -> Result<BTreeMap<String, usize>> {
    let pickle = matches!(index.format, Some(Format::Ckpt | Format::PtLegacy));
    let container = pickle
        && index
            .tensors
            .iter()
            .any(|t| t.name.starts_with("state_dict."));
    let mut names = BTreeMap::new();
    for (i, t) in index.tensors.iter().enumerate() {
        let mut name = t.name.as_str();
        if container {
            match name.strip_prefix("state_dict.") {
                Some(n) => name = n,
                None => {
                    add_drop(
                        drops,
                        DropReason::OutsideStateDict,
                        name,
                        byte_len(index, i),
                    );
                    continue;
                }
            }
        }
        loop {
            if let Some(n) = name.strip_prefix("module.") {
                add_fix(
                    fixes,
                    FixKind::ModulePrefix,
                    &t.name,
                    "removed the `module.` prefix `DataParallel` leaves on keys".into(),
                );
                name = n;
            } else if let Some(n) = name.strip_prefix("state_dict.") {
                add_fix(
                    fixes,
                    FixKind::StateDictPrefix,
                    &t.name,
                    "removed a `state_dict.` prefix left on keys".into(),
                );
                name = n;
            } else {
                break;
            }
        }
        if names.insert(name.to_owned(), i).is_some() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                reason: format!("two tensors are named `{name}` once prefixes are removed"),
            });
        }
    }
    Ok(names)
}

/// The element type a source tensor is written in.
fn out_dtype(src: Dtype, target: Option<Dtype>) -> Dtype {
    match target {
        Some(d) if is_float(src) => d,
        _ => src,
    }
}

fn entry(
    index: &TensorIndex,
    from: Origin,
    i: usize,
    name: &str,
    target: Option<Dtype>,
) -> Option<Entry> {
    let t = index.tensors.get(i)?;
    Some(Entry {
        name: name.to_owned(),
        dtype: out_dtype(t.dtype, target),
        src_dtype: t.dtype,
        shape: t.shape.clone(),
        src: Src::Tensor(from, i),
    })
}

/// Values of a small tensor as f64, for the `position_ids` check.
fn values(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f64>> {
    let el = dtype.size_in_bytes()? as usize;
    bytes
        .chunks_exact(el)
        .map(|b| {
            Some(match dtype {
                Dtype::I64 => i64::from_le_bytes(b.try_into().ok()?) as f64,
                Dtype::I32 => f64::from(i32::from_le_bytes(b.try_into().ok()?)),
                Dtype::F64 => f64::from_le_bytes(b.try_into().ok()?),
                Dtype::F32 => f64::from(f32::from_le_bytes(b.try_into().ok()?)),
                Dtype::F16 => f64::from(half::f16::from_le_bytes(b.try_into().ok()?).to_f32()),
                Dtype::Bf16 => f64::from(half::bf16::from_le_bytes(b.try_into().ok()?).to_f32()),
                _ => return None,
            })
        })
        .collect()
}

/// Repairs CLIP `position_ids` (`…embeddings.position_ids`, shape `[1, 77]`): HF transformers
/// registers it as an int64 `arange`, but merges and fp16 conversions leave it as floats, and
/// some files hold values like `76.9999`, which shift token positions; the A1111 model toolkit
/// extension (arenasys/stable-diffusion-webui-model-toolkit) reports and repairs the same
/// defect. Such a tensor is replaced by `arange(N)` in int64.
fn fix_position_ids(
    index: &TensorIndex,
    main: &mut BTreeMap<String, Entry>,
    fixes: &mut Vec<Fix>,
) -> Result<()> {
    for e in main.values_mut() {
        if !e.name.ends_with("embeddings.position_ids") {
            continue;
        }
        let Src::Tensor(Origin::Source, i) = e.src else {
            continue;
        };
        let Some(t) = index.tensors.get(i) else {
            continue;
        };
        let n = e.shape.last().copied().unwrap_or(0);
        if e.shape.iter().product::<u64>() != n || n > 1 << 20 {
            continue;
        }
        let bytes = read_tensor(index, t)?;
        let found = values(t.dtype, &bytes);
        let wrong_at = found.as_ref().and_then(|v| {
            v.iter()
                .enumerate()
                .find(|(k, x)| **x != *k as f64)
                .map(|(k, x)| (k, *x))
        });
        let detail = match (t.dtype, wrong_at) {
            (_, Some((k, x))) => format!(
                "`position_ids` held {x} at index {k} (stored as {}); rewritten as int64 0..{n}",
                t.dtype
            ),
            (Dtype::I64, None) => continue,
            (d, None) => format!("`position_ids` stored as {d}; rewritten as int64 0..{n}"),
        };
        add_fix(fixes, FixKind::PositionIds, &e.name, detail);
        e.dtype = Dtype::I64;
        e.src_dtype = Dtype::I64;
        e.src = Src::Bytes((0..n).flat_map(|k| (k as i64).to_le_bytes()).collect());
    }
    Ok(())
}

/// The VAE tensors of `vae` under their names without `first_stage_model.`.
fn vae_names(vae_path: &Path, vae: &TensorIndex) -> Result<BTreeMap<String, usize>> {
    let mut ignored_drops = Vec::new();
    let mut ignored_fixes = Vec::new();
    let names = state_dict_names(vae_path, vae, &mut ignored_drops, &mut ignored_fixes)?;
    let baked = names.keys().any(|k| k.starts_with(VAE));
    let out: BTreeMap<String, usize> = names
        .into_iter()
        .filter_map(|(k, i)| {
            if baked {
                k.strip_prefix(VAE).map(|s| (s.to_owned(), i))
            } else if k.starts_with("loss") || k.starts_with(EMA) {
                // A1111 `modules/sd_vae.py` `load_vae_dict` ignores these.
                None
            } else {
                Some((k, i))
            }
        })
        .collect();
    let invalid = |reason: &str| Error::Invalid {
        path: vae_path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if out
        .keys()
        .any(|k| k.contains("down_blocks.") || k.contains("mid_block."))
    {
        return Err(invalid(
            "a diffusers-layout VAE; baking needs the LDM layout (`encoder.down.0…`, `decoder.up.0…`)",
        ));
    }
    if !out.contains_key("decoder.conv_out.weight") || !out.contains_key("encoder.conv_in.weight") {
        return Err(invalid(
            "not an LDM VAE (no `encoder.conv_in.weight` and `decoder.conv_out.weight`)",
        ));
    }
    Ok(out)
}

/// Builds the plan for `source` (and the VAE to bake, if any).
pub(crate) fn plan(
    path: &Path,
    source: &TensorIndex,
    bake: Option<(&Path, &TensorIndex)>,
    req: &Request,
) -> Result<Plan> {
    let mut p = Plan::default();
    let names = state_dict_names(path, source, &mut p.dropped, &mut p.fixes)?;
    let has_ema = names
        .keys()
        .any(|k| k.starts_with(EMA) && k != "model_ema.decay" && k != "model_ema.num_updates");
    if req.use_ema && !has_ema {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "`--use-ema` asked, but the file has no EMA weights (`model_ema.*`)".into(),
        });
    }
    for (name, &i) in &names {
        let drop = if name.starts_with(EMA) && (req.prune || req.use_ema) {
            Some(DropReason::Ema)
        } else if req.prune && TRAINING.iter().any(|p| name.starts_with(p)) {
            Some(DropReason::TrainingState)
        } else {
            None
        };
        if let Some(reason) = drop {
            add_drop(&mut p.dropped, reason, name, byte_len(source, i));
            continue;
        }
        if let Some(e) = entry(source, Origin::Source, i, name, req.dtype) {
            p.main.insert(name.clone(), e);
        }
    }
    if req.use_ema {
        // LDM `ldm/modules/ema.py` `LitEma` names each buffer after the parameter of
        // `LatentDiffusion.model` with the dots removed: `model.diffusion_model.out.2.bias` has
        // its EMA copy in `model_ema.diffusion_modelout2bias`.
        let mut swap = EmaSwap::default();
        for e in p.main.values_mut() {
            let Some(rest) = e.name.strip_prefix(UNET) else {
                continue;
            };
            let ema_name = format!("{EMA}diffusion_model{}", rest.replace('.', ""));
            let ema = names
                .get(&ema_name)
                .and_then(|&i| entry(source, Origin::Source, i, &e.name, req.dtype))
                .filter(|x| x.shape == e.shape);
            match ema {
                Some(x) => {
                    *e = x;
                    swap.replaced += 1;
                }
                None => {
                    swap.missing += 1;
                    if swap.missing_examples.len() < EXAMPLES {
                        swap.missing_examples.push(e.name.clone());
                    }
                }
            }
        }
        p.ema = Some(swap);
    }
    if let Some((vae_path, vae)) = bake {
        for (k, i) in vae_names(vae_path, vae)? {
            let name = format!("{VAE}{k}");
            let Some(new) = entry(vae, Origin::Vae, i, &name, req.dtype) else {
                continue;
            };
            match p.main.get(&name) {
                Some(old) if old.shape != new.shape => {
                    return Err(Error::Invalid {
                        path: vae_path.to_path_buf(),
                        reason: format!(
                            "`{k}` has shape {:?}, the checkpoint's `{name}` has {:?}",
                            new.shape, old.shape
                        ),
                    });
                }
                Some(_) => p.vae_replaced += 1,
                None => p.vae_added += 1,
            }
            p.main.insert(name, new);
        }
    }
    fix_position_ids(source, &mut p.main, &mut p.fixes)?;
    if req.extract_vae {
        let vae: BTreeMap<String, Entry> = p
            .main
            .iter()
            .filter_map(|(k, e)| {
                let name = k.strip_prefix(VAE)?.to_owned();
                Some((name.clone(), Entry { name, ..e.clone() }))
            })
            .collect();
        if vae.is_empty() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                reason:
                    "`--extract-vae` asked, but the file has no baked VAE (`first_stage_model.*`)"
                        .into(),
            });
        }
        p.vae = Some(vae);
    }
    Ok(p)
}
