//! `danlu convert`: one model file to safetensors, safely; or, with `--all-ckpt`, every
//! pickle-format model of a library root.

use crate::ExitStatus;
use crate::args::{ConvertArgs, ConvertDtype};
use crate::commands::scan::{cancel_flag, open_library, refresh};
use crate::printer::Printer;
use crate::progress::Bars;
use anyhow::Context as _;
use danlu_convert::{
    ConvertOptions, ConvertReport, DropReason, FixKind, IdentityCheck, TargetDtype,
};
use danlu_identify::{Hints, identify};
use danlu_library::ModelRecord;
use danlu_library::sort::sidecars_of;
use danlu_types::{Base, Format, Kind};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Runs `danlu convert`.
///
/// # Errors
/// When nothing could be written (unreadable source, refused option, existing output, failed
/// verification); the output's final name is then absent or untouched.
pub fn run(
    args: &ConvertArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    if args.all_ckpt {
        return run_all(args, progress_hidden, printer);
    }
    let Some(input) = args.input.as_deref() else {
        anyhow::bail!("no input: pass `IN` or `--all-ckpt`");
    };
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| danlu_convert::default_output(input));
    let opts = options(args);
    let bars = Bars::new(progress_hidden);
    let mut report = danlu_convert::convert(input, &output, &opts, &bars)
        .with_context(|| format!("converting `{}`", input.display()))?;
    if let Some(v) = report.verify.as_mut() {
        v.identity = Some(identity_check(input, &output)?);
    }
    let agrees = report
        .verify
        .as_ref()
        .and_then(|v| v.identity.as_ref())
        .is_none_or(|i| i.agrees);
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&render(&report))?;
    }
    Ok(if agrees {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// The conversion options asked on the command line.
fn options(args: &ConvertArgs) -> ConvertOptions {
    ConvertOptions {
        dtype: match args.dtype {
            ConvertDtype::F16 => TargetDtype::F16,
            ConvertDtype::Bf16 => TargetDtype::Bf16,
            ConvertDtype::F32 => TargetDtype::F32,
            ConvertDtype::Keep => TargetDtype::Keep,
        },
        prune: args.prune,
        use_ema: args.use_ema,
        bake_vae: args.bake_vae.clone(),
        extract_vae: args.extract_vae.clone(),
        verify: args.verify,
    }
}

/// The kinds `--all-ckpt` converts: those whose safetensors form A1111 and ComfyUI both load
/// from the same folder (A1111 `modules/sd_models.py`, `modules/sd_vae.py`,
/// `extensions-builtin/Lora/networks.py`; the ControlNet extension). Embeddings and
/// hypernetworks are left alone (`.pt` by convention; A1111 `modules/hypernetworks` reads
/// pickles only), and so are upscalers, IP-Adapters, CLIP vision and text encoders, which not
/// every UI version reads as safetensors.
pub const ALL_CKPT_KINDS: &[Kind] = &[
    Kind::Checkpoint,
    Kind::DiffusionModel,
    Kind::Vae,
    Kind::Lora,
    Kind::Controlnet,
    Kind::T2iAdapter,
];

/// What `--all-ckpt` did, or would do, with one pickle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllCkptAction {
    /// Dry run: it would be converted.
    Convert,
    /// It was converted and its original moved away.
    Converted,
    /// Left as it is (see `reason`).
    Skipped,
    /// Something failed (see `error`); the original is still in place.
    Failed,
}

/// One pickle of `danlu convert --all-ckpt` (an element of `items` in its `--json` output).
#[derive(Debug, Serialize)]
pub struct AllCkptItem {
    /// The pickle.
    pub source: String,
    /// Its container (`ckpt` or `pt_legacy`).
    pub format: Option<Format>,
    /// What it is.
    pub kind: Kind,
    /// Its family.
    pub base: Base,
    /// Its size in bytes.
    pub size: u64,
    /// The safetensors file it becomes (`NAME.safetensors` beside it).
    pub output: String,
    /// Whether A1111's safe unpickler would load it (null when the cache does not say).
    pub safe: Option<bool>,
    /// Why it is unsafe, one line per problem; such files are converted all the same, and
    /// nothing in them is run.
    pub findings: Vec<String>,
    /// What was (or would be) done.
    pub action: AllCkptAction,
    /// Sidecars of the same stem, which keep matching the new file.
    pub sidecars: Vec<String>,
    /// Where the original went (`ROOT/.danlu/converted-originals/<relative path>`).
    pub original_moved_to: Option<String>,
    /// Why it was skipped.
    pub reason: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The conversion, when it ran.
    pub report: Option<ConvertReport>,
}

/// `danlu convert --all-ckpt --json`.
#[derive(Debug, Serialize)]
pub struct AllCkptReport {
    /// The library root.
    pub root: String,
    /// Whether nothing was changed (no `--yes`).
    pub dry_run: bool,
    /// The kinds converted.
    pub kinds: Vec<Kind>,
    /// One entry per pickle of those kinds, sorted by path.
    pub items: Vec<AllCkptItem>,
}

/// Runs `danlu convert --all-ckpt`.
fn run_all(
    args: &ConvertArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let (root, cache) = open_library(None, &args.root)?;
    refresh(&root, &cache)?;
    let records = cache.all().context("reading the cache")?;
    let dry_run = !args.yes;
    let mut items: Vec<AllCkptItem> = records
        .iter()
        .filter(|r| matches!(r.format, Some(Format::Ckpt | Format::PtLegacy)))
        .filter(|r| ALL_CKPT_KINDS.contains(&r.kind()))
        .map(plan)
        .collect();
    items.sort_by(|a, b| a.source.cmp(&b.source));
    if !dry_run {
        let opts = options(args);
        let bars = Bars::new(progress_hidden);
        let stash = root.state_dir().join("converted-originals");
        for item in items
            .iter_mut()
            .filter(|i| i.action == AllCkptAction::Convert)
        {
            if cancel_flag().load(Ordering::SeqCst) {
                item.action = AllCkptAction::Skipped;
                item.reason = Some("cancelled".to_owned());
                continue;
            }
            convert_one(item, &root.path, &stash, &opts, &bars);
        }
        refresh(&root, &cache)?;
    }
    let failed = items.iter().any(|i| i.action == AllCkptAction::Failed);
    let report = AllCkptReport {
        root: root.path.display().to_string(),
        dry_run,
        kinds: ALL_CKPT_KINDS.to_vec(),
        items,
    };
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&render_all(&report))?;
    }
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

/// What would be done with one pickle of the library.
fn plan(r: &ModelRecord) -> AllCkptItem {
    let source = r.as_path();
    let output = source.with_extension("safetensors");
    let taken = output.symlink_metadata().is_ok();
    AllCkptItem {
        source: r.path.clone(),
        format: r.format,
        kind: r.kind(),
        base: r.base(),
        size: r.size,
        output: output.display().to_string(),
        safe: r.safety.as_ref().map(|s| s.safe),
        findings: r
            .safety
            .as_ref()
            .map(|s| s.findings.clone())
            .unwrap_or_default(),
        // With `--yes`, `convert` marks it as still to do until it is done.
        action: if taken {
            AllCkptAction::Skipped
        } else {
            AllCkptAction::Convert
        },
        sidecars: sidecars_of(source)
            .into_iter()
            .map(|(p, _)| p.display().to_string())
            .collect(),
        original_moved_to: None,
        reason: taken.then(|| format!("`{}` already exists", output.display())),
        error: None,
        report: None,
    }
}

/// Converts one pickle, then moves its original under `stash`; records the outcome in `item`.
fn convert_one(
    item: &mut AllCkptItem,
    root: &Path,
    stash: &Path,
    opts: &ConvertOptions,
    bars: &Bars,
) {
    let source = PathBuf::from(&item.source);
    let output = PathBuf::from(&item.output);
    let mut report = match danlu_convert::convert(&source, &output, opts, bars) {
        Ok(r) => r,
        Err(e) => {
            item.action = AllCkptAction::Failed;
            item.error = Some(format!("converting `{}`: {e}", source.display()));
            return;
        }
    };
    if let Some(v) = report.verify.as_mut() {
        match identity_check(&source, &output) {
            Ok(i) => v.identity = Some(i),
            Err(e) => item.error = Some(format!("{e:#}")),
        }
    }
    let disagrees = report
        .verify
        .as_ref()
        .and_then(|v| v.identity.as_ref())
        .is_some_and(|i| !i.agrees);
    item.report = Some(report);
    if disagrees || item.error.is_some() {
        item.action = AllCkptAction::Failed;
        item.error.get_or_insert_with(|| {
            format!(
                "`inspect` of `{}` disagrees with its source; the original stays",
                output.display()
            )
        });
        return;
    }
    let rel = source
        .strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| source.file_name().map(PathBuf::from).unwrap_or_default());
    let dest = stash.join(rel);
    let moved = dest
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| format!("creating `{}`: {e}", stash.display()))
        .and_then(|()| danlu_fs::move_file(&source, &dest).map_err(|e| e.to_string()));
    match moved {
        Ok(_) => {
            item.action = AllCkptAction::Converted;
            item.original_moved_to = Some(dest.display().to_string());
        }
        Err(e) => {
            item.action = AllCkptAction::Failed;
            item.error = Some(format!(
                "converted to `{}`, but the original could not be moved away: {e}",
                output.display()
            ));
        }
    }
}

/// Renders `--all-ckpt` as one block per pickle.
fn render_all(r: &AllCkptReport) -> String {
    let mut out = String::new();
    if r.items.is_empty() {
        let _ = writeln!(out, "no pickle-format models to convert in `{}`", r.root);
        return out;
    }
    for i in &r.items {
        let what = match i.action {
            AllCkptAction::Convert => "would convert",
            AllCkptAction::Converted => "converted",
            AllCkptAction::Skipped => "skipped",
            AllCkptAction::Failed => "FAILED",
        };
        let _ = writeln!(
            out,
            "{what:<14} `{}` ({} {}, {}) -> `{}`",
            i.source,
            i.kind,
            i.base,
            size(i.size),
            i.output
        );
        if i.safe == Some(false) {
            let _ = writeln!(
                out,
                "  UNSAFE pickle (it is read, never run): {}",
                i.findings.join("; ")
            );
        }
        for s in &i.sidecars {
            let _ = writeln!(out, "  sidecar   `{s}` (keeps matching)");
        }
        if let Some(m) = &i.original_moved_to {
            let _ = writeln!(out, "  original  moved to `{m}`");
        }
        if let Some(x) = &i.reason {
            let _ = writeln!(out, "  reason    {x}");
        }
        if let Some(x) = &i.error {
            let _ = writeln!(out, "  error     {x}");
        }
    }
    let pending = r
        .items
        .iter()
        .filter(|i| i.action == AllCkptAction::Convert)
        .count();
    if r.dry_run && pending > 0 {
        let _ = writeln!(
            out,
            "dry run: nothing was changed; run again with `--yes` to convert {pending} file(s)"
        );
    }
    out
}

/// What `inspect` says of the source and of the output.
fn identity_check(input: &Path, output: &Path) -> anyhow::Result<IdentityCheck> {
    let source = danlu_format::read_index(input)
        .with_context(|| format!("inspecting `{}`", input.display()))?;
    let out = danlu_format::read_index(output)
        .with_context(|| format!("inspecting `{}`", output.display()))?;
    let a = identify(&source, &Hints::from_path(input));
    let b = identify(&out, &Hints::from_path(output));
    Ok(IdentityCheck {
        source_kind: a.kind,
        source_base: a.base,
        output_kind: b.kind,
        output_base: b.base,
        agrees: a.kind == b.kind && a.base == b.base,
    })
}

fn size(bytes: u64) -> String {
    match bytes {
        0..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

/// Renders a report as aligned lines.
fn render(r: &ConvertReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "`{}` -> `{}`", r.source.display(), r.output.display());
    let _ = writeln!(
        out,
        "  tensors   {} of {} written, dtype {}",
        r.tensors, r.source_tensors, r.dtype
    );
    let _ = writeln!(
        out,
        "  size      {} -> {}",
        size(r.source_bytes),
        size(r.output_bytes)
    );
    if let Some(p) = &r.pickle {
        if p.safe {
            let _ = writeln!(out, "  pickle    safe (read without running it)");
        } else {
            let _ = writeln!(
                out,
                "  pickle    UNSAFE, nothing in it was run: {}",
                p.findings.join("; ")
            );
        }
    }
    for d in &r.dropped {
        let what = match d.reason {
            DropReason::Ema => "EMA",
            DropReason::TrainingState => "training-state",
            DropReason::OutsideStateDict => "non-state-dict",
        };
        let _ = writeln!(
            out,
            "  dropped   {} {what} tensors ({}), e.g. `{}`",
            d.tensors,
            size(d.bytes),
            d.examples.first().map(String::as_str).unwrap_or_default()
        );
    }
    if r.values_dropped > 0 {
        let _ = writeln!(
            out,
            "  dropped   {} non-tensor values (step counters, configs)",
            r.values_dropped
        );
    }
    if let Some(e) = &r.ema {
        let _ = writeln!(
            out,
            "  ema       {} UNet weights replaced by their EMA copies, {} without one",
            e.replaced, e.missing
        );
    }
    for f in &r.fixes {
        let what = match f.kind {
            FixKind::PositionIds => "position_ids",
            FixKind::ModulePrefix => "module.",
            FixKind::StateDictPrefix => "state_dict.",
        };
        let _ = writeln!(
            out,
            "  fixed     {what} ({} tensors): {}",
            f.tensors, f.detail
        );
    }
    if let Some(b) = &r.baked_vae {
        let _ = writeln!(
            out,
            "  vae       baked `{}` ({} replaced, {} added)",
            b.path.display(),
            b.replaced,
            b.added
        );
    }
    if let Some(x) = &r.extracted_vae {
        let _ = writeln!(
            out,
            "  vae       extracted to `{}` ({} tensors, {})",
            x.path.display(),
            x.tensors,
            size(x.bytes)
        );
    }
    if let Some(v) = &r.verify {
        let _ = writeln!(
            out,
            "  verified  {} tensors ({}): {}",
            v.tensors,
            size(v.bytes),
            v.rule
        );
        if let Some(i) = &v.identity {
            if i.agrees {
                let _ = writeln!(
                    out,
                    "  inspect   agrees: {} ({})",
                    i.output_kind, i.output_base
                );
            } else {
                let _ = writeln!(
                    out,
                    "  inspect   DISAGREES: source {} ({}), output {} ({})",
                    i.source_kind, i.source_base, i.output_kind, i.output_base
                );
            }
        }
    }
    let _ = writeln!(out, "  sha256    {} (source)", r.source_sha256);
    out
}
