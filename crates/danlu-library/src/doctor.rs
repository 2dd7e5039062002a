//! `doctor`: what in a library makes generations fail or waste space, each finding with its fix;
//! [`apply_fixes`] applies the safe ones (move into the right folder, pair a VAE).

use crate::cache::{Cache, ModelRecord};
use crate::error::Result;
use crate::root::Root;
use crate::sort::{SortMode, free_name, place_with_sidecars, sidecars_of};
use crate::vae::{VaeChoice, check_family, resolve_vae, vae_list};
use danlu_types::{Base, Kind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Generations will fail or look wrong.
    Error,
    /// Worth fixing.
    Warning,
}

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A checkpoint with no baked and no paired VAE (washed-out pictures).
    NoVae,
    /// A VAE paired with a checkpoint of another family.
    VaeMismatch,
    /// A VAE known to overflow in fp16 (black or NaN pictures).
    Fp16Overflow,
    /// A LoRA, embedding, ControlNet, ... whose base matches no installed checkpoint.
    NoCheckpointForBase,
    /// A file that cannot be read.
    Unreadable,
    /// A pickle that would run code when loaded by Python tools.
    Unsafe,
    /// A file in a folder where its UI will not look for its kind.
    WrongFolder,
    /// The same content under several names.
    Duplicate,
}

/// A fix danlu can apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Fix {
    /// Move a file (and its sidecars) into its folder.
    Move {
        /// The file.
        from: String,
        /// Where it goes.
        to: String,
    },
    /// Pair a VAE with a checkpoint through the `"vae"` key of the checkpoint's `NAME.json`
    /// (A1111 user metadata).
    Pair {
        /// The checkpoint.
        checkpoint: String,
        /// The VAE's file name, as A1111's VAE list names it.
        vae: String,
        /// The `NAME.json` written.
        sidecar: String,
    },
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What kind of problem.
    pub problem: Problem,
    /// How bad.
    pub severity: Severity,
    /// The file concerned (the first of a duplicate group).
    pub path: String,
    /// The problem in words.
    pub message: String,
    /// How to fix it, in words.
    pub hint: String,
    /// The fix `--fix` applies, when it is safe to apply.
    pub fix: Option<Fix>,
}

/// The result of applying a fix.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The fix.
    pub fix: Fix,
    /// Why it failed; null when it worked.
    pub error: Option<String>,
}

/// What `doctor` found (`doctor --json`).
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// The root examined.
    pub root: String,
    /// Models in the cache.
    pub models: usize,
    /// Problems, sorted by problem then path.
    pub findings: Vec<Finding>,
    /// Fixes applied (with `--fix`).
    pub applied: Vec<Applied>,
}

fn file_name(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Examines a library's cached records.
pub fn doctor(root: &Root, records: &[ModelRecord]) -> DoctorReport {
    let mut findings = Vec::new();
    let vaes = vae_list(root, records);
    let checkpoint_bases: Vec<Base> = records
        .iter()
        .filter(|r| matches!(r.kind(), Kind::Checkpoint | Kind::DiffusionModel))
        .map(ModelRecord::base)
        .collect();
    for r in records {
        if let Some(e) = &r.error {
            findings.push(Finding {
                problem: Problem::Unreadable,
                severity: Severity::Error,
                path: r.path.clone(),
                message: format!("cannot be read: {e}"),
                hint: "download it again or remove it".into(),
                fix: None,
            });
            continue;
        }
        if let Some(s) = r.safety.as_ref().filter(|s| !s.safe) {
            findings.push(Finding {
                problem: Problem::Unsafe,
                severity: Severity::Error,
                path: r.path.clone(),
                message: format!(
                    "pickle would run code when loaded by Python tools: {}",
                    s.findings.join("; ")
                ),
                hint: "delete it unless you trust its source; never load it in A1111 with --disable-safe-unpickle".into(),
                fix: None,
            });
        }
        let kind = r.kind();
        if kind != Kind::Unknown && !root.is_in_place(r.as_path(), kind) {
            let fix = root.folder(kind).map(|dir| {
                let (to, _) = free_name(&dir, r.as_path(), &sidecars_of(r.as_path()));
                Fix::Move {
                    from: r.path.clone(),
                    to: to.display().to_string(),
                }
            });
            findings.push(Finding {
                problem: Problem::WrongFolder,
                severity: Severity::Warning,
                path: r.path.clone(),
                message: format!(
                    "a `{kind}` in a folder where {} does not look for it",
                    if root.ui() == danlu_types::Ui::ComfyUi {
                        "ComfyUI"
                    } else {
                        "A1111"
                    }
                ),
                hint: format!(
                    "move it to `{}`",
                    kind.folder(root.ui()).unwrap_or_default()
                ),
                fix,
            });
        }
        if kind == Kind::Checkpoint {
            let v = resolve_vae(root, records, r, None);
            if v.choice == VaeChoice::None {
                let pair = vaes.iter().find(|vae| {
                    vae.kind() == Kind::Vae && matches!(check_family(r, vae), Ok(None))
                });
                let sidecar = r.as_path().with_extension("json");
                findings.push(Finding {
                    problem: Problem::NoVae,
                    severity: Severity::Error,
                    path: r.path.clone(),
                    message: "no VAE baked in and none paired: pictures will come out grey and washed out".into(),
                    hint: match pair {
                        Some(vae) => format!("pair it with `{}`", file_name(&vae.path)),
                        None => format!(
                            "put a `{}` VAE in `{}`",
                            r.base(),
                            Kind::Vae.folder(root.ui()).unwrap_or_default()
                        ),
                    },
                    fix: pair.map(|vae| Fix::Pair {
                        checkpoint: r.path.clone(),
                        vae: file_name(&vae.path),
                        sidecar: sidecar.display().to_string(),
                    }),
                });
            }
            if let Some(refusal) = v.refused {
                findings.push(Finding {
                    problem: Problem::VaeMismatch,
                    severity: Severity::Error,
                    path: r.path.clone(),
                    message: refusal,
                    hint: format!("pair it with a `{}` VAE instead", r.base()),
                    fix: None,
                });
            }
        }
        if kind == Kind::Vae && r.base() == Base::Sdxl {
            let name = r.name.to_ascii_lowercase();
            // SDXL's released VAE produces inf/NaN in fp16; madebyollin's `sdxl-vae-fp16-fix`
            // rescales it to stay in range. Told apart by name: their shapes are identical.
            if !name.contains("fp16") {
                findings.push(Finding {
                    problem: Problem::Fp16Overflow,
                    severity: Severity::Warning,
                    path: r.path.clone(),
                    message: "SDXL's VAE overflows in fp16 (black or NaN pictures); by its name this is not the fp16-fix VAE".into(),
                    hint: "use `sdxl-vae-fp16-fix`, or decode in fp32 (A1111 `--no-half-vae`)".into(),
                    fix: None,
                });
            }
        }
        if matches!(
            kind,
            Kind::Lora
                | Kind::Embedding
                | Kind::Hypernetwork
                | Kind::Controlnet
                | Kind::T2iAdapter
                | Kind::IpAdapter
        ) && r.base() != Base::Unknown
            && !checkpoint_bases.contains(&r.base())
        {
            findings.push(Finding {
                problem: Problem::NoCheckpointForBase,
                severity: Severity::Warning,
                path: r.path.clone(),
                message: format!(
                    "a `{}` `{kind}` but no `{}` checkpoint is installed",
                    r.base(),
                    r.base()
                ),
                hint: format!("install a `{}` checkpoint or remove it", r.base()),
                fix: None,
            });
        }
    }
    let mut by_sha: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in records {
        if let Some(s) = r.sha256() {
            by_sha.entry(s).or_default().push(&r.path);
        }
    }
    for (sha, paths) in by_sha {
        if paths.len() > 1 {
            findings.push(Finding {
                problem: Problem::Duplicate,
                severity: Severity::Warning,
                path: paths[0].to_owned(),
                message: format!(
                    "the same file ({}) {} times: {}",
                    &sha[..10],
                    paths.len(),
                    paths
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                hint: "keep one; for both UIs, share one folder through `extra_model_paths.yaml`"
                    .into(),
                fix: None,
            });
        }
    }
    findings.sort_by(|a, b| (a.problem, &a.path).cmp(&(b.problem, &b.path)));
    DoctorReport {
        root: root.path.display().to_string(),
        models: records.len(),
        findings,
        applied: Vec::new(),
    }
}

/// Writes `"vae": NAME` into a checkpoint's `NAME.json`, keeping its other keys.
fn write_pair(sidecar: &Path, vae: &str) -> Result<()> {
    let mut doc = match std::fs::read_to_string(sidecar) {
        Ok(t) => {
            serde_json::from_str::<serde_json::Value>(&t).map_err(|source| crate::Error::Json {
                path: sidecar.to_path_buf(),
                source,
            })?
        }
        Err(_) => serde_json::json!({}),
    };
    if let Some(m) = doc.as_object_mut() {
        m.insert("vae".into(), serde_json::Value::String(vae.to_owned()));
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|source| crate::Error::Json {
        path: sidecar.to_path_buf(),
        source,
    })?;
    danlu_fs::write_atomic(sidecar, text.as_bytes(), danlu_fs::Overwrite::Replace)?;
    Ok(())
}

/// Applies the safe fixes of a report (moves, VAE pairs), recording each in `applied`, and
/// keeps the cache in step with moves.
///
/// # Errors
/// Only when the cache fails; each fix's failure is recorded in `applied`.
pub fn apply_fixes(report: &mut DoctorReport, cache: &Cache) -> Result<()> {
    let fixes: Vec<Fix> = report
        .findings
        .iter()
        .filter_map(|f| f.fix.clone())
        .collect();
    for fix in fixes {
        let res = match &fix {
            Fix::Move { from, to } => {
                let src = PathBuf::from(from);
                let dest = PathBuf::from(to);
                let sidecars = sidecars_of(&src);
                let made = dest
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .map_err(crate::error::io_err(&dest, "creating folder"));
                match made.and_then(|()| {
                    place_with_sidecars(SortMode::Move, &src, &dest, &sidecars, None)
                }) {
                    Ok(()) => {
                        cache.rename(from, to)?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Fix::Pair { vae, sidecar, .. } => write_pair(Path::new(sidecar), vae),
        };
        report.applied.push(Applied {
            fix,
            error: res.err().map(|e| e.to_string()),
        });
    }
    Ok(())
}
