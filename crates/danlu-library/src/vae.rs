//! Which VAE a generation with a checkpoint uses, by A1111's rules (`modules/sd_vae.py`).
//!
//! The VAE list is every file in the VAE folders plus every `*.vae.{pt,ckpt,safetensors}` among
//! the checkpoints, sorted by file name (`refresh_vae_list`). For a checkpoint the order is
//! (`resolve_vae`): an explicit choice; the `"vae"` key of its user metadata `NAME.json`
//! (`resolve_vae_from_user_metadata`, `"None"` meaning the baked VAE, `"Automatic"` no choice);
//! the first VAE whose file name starts with the checkpoint's name (`find_vae_near_checkpoint`);
//! then the VAE baked into the checkpoint. A VAE of another family than the checkpoint's is
//! refused, naming both.

use crate::cache::ModelRecord;
use crate::root::{Root, is_vae_beside_checkpoint};
use danlu_types::{Base, Kind};
use serde::Serialize;
use std::path::Path;

/// Why a VAE was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VaeChoice {
    /// Asked for explicitly.
    Explicit,
    /// The `"vae"` key of the checkpoint's `NAME.json`.
    UserMetadata,
    /// A VAE whose file name starts with the checkpoint's name.
    NearCheckpoint,
    /// The VAE inside the checkpoint.
    Baked,
    /// No VAE at all: pictures come out grey and washed out.
    None,
}

/// Which VAE a checkpoint uses and why (`vae --json`).
#[derive(Debug, Clone, Serialize)]
pub struct VaeReport {
    /// The checkpoint.
    pub checkpoint: String,
    /// Its family.
    pub checkpoint_base: Base,
    /// The VAE file; null for baked or none.
    pub vae: Option<String>,
    /// The VAE file's family, when a file is chosen.
    pub vae_base: Option<Base>,
    /// Which rule chose it.
    pub choice: VaeChoice,
    /// The rule in words.
    pub reason: String,
    /// Set when the chosen VAE is of another family: the generation would be wrong.
    pub refused: Option<String>,
    /// What the user should know.
    pub warnings: Vec<String>,
}

/// The VAE list of a library, in A1111's order (file name, case-insensitive).
pub fn vae_list<'a>(root: &Root, records: &'a [ModelRecord]) -> Vec<&'a ModelRecord> {
    let folders = root.folders();
    let mut out: Vec<&ModelRecord> = records
        .iter()
        .filter(|r| {
            let p = r.as_path();
            folders.iter().any(|f| {
                (f.kinds.contains(&Kind::Vae) && p.starts_with(&f.path))
                    || (f.kinds.contains(&Kind::Checkpoint)
                        && p.starts_with(&f.path)
                        && is_vae_beside_checkpoint(p))
            })
        })
        .collect();
    out.sort_by_key(|r| file_name(r.as_path()).to_lowercase());
    out
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The VAE family group of a base: bases in one group share a VAE. SD1 and SD2 use the same
/// kl-f8 VAE; SDXL and its refiner share SDXL's; SD3 and Flux each have their own 16-channel
/// VAE.
fn vae_group(b: Base) -> Option<u8> {
    match b {
        Base::Sd1 | Base::Sd2 => Some(1),
        Base::Sdxl | Base::SdxlRefiner => Some(2),
        Base::Sd3 => Some(3),
        Base::Flux => Some(4),
        _ => None,
    }
}

/// Latent channels of a base's VAE (4 for SD1/SD2/SDXL, 16 for SD3/Flux).
fn latent_channels(b: Base) -> Option<u8> {
    match b {
        Base::Sd1 | Base::Sd2 | Base::Sdxl | Base::SdxlRefiner => Some(4),
        Base::Sd3 | Base::Flux => Some(16),
        _ => None,
    }
}

/// Whether a record's base is a labelled guess (SD1/SD2/SDXL VAEs share every shape).
fn base_is_guess(r: &ModelRecord) -> bool {
    r.identity
        .as_ref()
        .is_some_and(|i| i.warnings.iter().any(|w| w.starts_with("guess")))
}

/// Whether `vae` fits `checkpoint`: `Err` names both when the families differ for sure; a
/// guessed VAE family is refused only when its latent channels differ.
pub fn check_family(checkpoint: &ModelRecord, vae: &ModelRecord) -> Result<Option<String>, String> {
    let (cb, vb) = (checkpoint.base(), vae.base());
    let refuse = || {
        format!(
            "VAE `{}` is for `{vb}` but checkpoint `{}` is `{cb}`",
            file_name(vae.as_path()),
            file_name(checkpoint.as_path())
        )
    };
    if latent_channels(cb).is_some()
        && latent_channels(vb).is_some()
        && latent_channels(cb) != latent_channels(vb)
    {
        return Err(refuse());
    }
    if base_is_guess(vae) {
        return Ok((vae_group(cb) != vae_group(vb)).then(|| {
            format!(
                "the family of VAE `{}` is a guess (`{vb}`); check it is made for `{cb}`",
                file_name(vae.as_path())
            )
        }));
    }
    match (vae_group(cb), vae_group(vb)) {
        (Some(a), Some(b)) if a != b => Err(refuse()),
        (_, None) => Ok(Some(format!(
            "the family of VAE `{}` is unknown",
            file_name(vae.as_path())
        ))),
        _ => Ok(None),
    }
}

/// The `"vae"` value of a checkpoint's user metadata `NAME.json` (A1111
/// `extra_networks.get_user_metadata`: the file name with its extension replaced by `.json`).
pub fn read_user_metadata_vae(checkpoint: &Path) -> Option<String> {
    let text = std::fs::read_to_string(checkpoint.with_extension("json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("vae")?.as_str().map(str::to_owned)
}

/// Resolves the VAE of `checkpoint` among `records` (the whole library), by A1111's rules.
pub fn resolve_vae(
    root: &Root,
    records: &[ModelRecord],
    checkpoint: &ModelRecord,
    explicit: Option<&str>,
) -> VaeReport {
    let list = vae_list(root, records);
    let mut report = VaeReport {
        checkpoint: checkpoint.path.clone(),
        checkpoint_base: checkpoint.base(),
        vae: None,
        vae_base: None,
        choice: VaeChoice::None,
        reason: String::new(),
        refused: None,
        warnings: Vec::new(),
    };
    let by_name = |name: &str| {
        list.iter().copied().find(|r| {
            let f = file_name(r.as_path());
            f == name || r.name == name || r.path == name
        })
    };
    let mut chosen: Option<(&ModelRecord, VaeChoice, String)> = None;
    let mut baked_by_choice = None;
    if let Some(name) = explicit {
        if name.eq_ignore_ascii_case("none") {
            baked_by_choice = Some("explicit choice `None`".to_owned());
        } else {
            match by_name(name) {
                Some(v) => {
                    chosen = Some((v, VaeChoice::Explicit, format!("explicit choice `{name}`")));
                }
                None => report
                    .warnings
                    .push(format!("VAE `{name}` is not in the VAE list; ignored")),
            }
        }
    }
    if chosen.is_none() && baked_by_choice.is_none() {
        let ck = checkpoint.as_path();
        if let Some(name) = read_user_metadata_vae(ck).filter(|n| n != "Automatic") {
            let sidecar = file_name(&ck.with_extension("json"));
            if name == "None" {
                baked_by_choice = Some(format!("`{sidecar}` says `\"vae\": \"None\"`"));
            } else if let Some(v) = by_name(&name) {
                chosen = Some((
                    v,
                    VaeChoice::UserMetadata,
                    format!("`{sidecar}` names it (`\"vae\": \"{name}\"`)"),
                ));
            } else {
                report.warnings.push(format!(
                    "`{sidecar}` names VAE `{name}`, which is not in the VAE list"
                ));
            }
        }
    }
    if chosen.is_none() && baked_by_choice.is_none() {
        let stem = checkpoint.name.clone();
        if let Some(v) = list
            .iter()
            .copied()
            .find(|r| r.path != checkpoint.path && file_name(r.as_path()).starts_with(&stem))
        {
            chosen = Some((
                v,
                VaeChoice::NearCheckpoint,
                format!(
                    "its file name starts with the checkpoint's name `{stem}` (first in the VAE list)"
                ),
            ));
        }
    }
    let baked = checkpoint
        .identity
        .as_ref()
        .and_then(|i| i.components)
        .is_some_and(|c| c.vae);
    match chosen {
        Some((v, choice, reason)) => {
            report.vae = Some(v.path.clone());
            report.vae_base = Some(v.base());
            report.choice = choice;
            report.reason = reason;
            match check_family(checkpoint, v) {
                Ok(Some(w)) => report.warnings.push(w),
                Ok(None) => {}
                Err(refusal) => report.refused = Some(refusal),
            }
        }
        None if baked => {
            report.choice = VaeChoice::Baked;
            report.reason = baked_by_choice
                .map(|r| format!("{r}: the VAE baked into the checkpoint"))
                .unwrap_or_else(|| "no VAE file chosen: the VAE baked into the checkpoint".into());
        }
        None => {
            report.choice = VaeChoice::None;
            report.reason = "no VAE file chosen and none baked into the checkpoint".into();
            report.warnings.push(
                "without a VAE, pictures come out grey and washed out; add a VAE for this family"
                    .into(),
            );
        }
    }
    report
}
