//! `danlu vae`: which VAE a checkpoint will use, and why.

use crate::ExitStatus;
use crate::args::VaeArgs;
use crate::commands::scan::{open_library, refresh};
use crate::printer::Printer;
use danlu_library::vae::VaeChoice;
use danlu_library::{VaeReport, find_model, resolve_vae};
use std::fmt::Write as _;

/// Runs `danlu vae`.
///
/// # Errors
/// No root, a cache failure, or no such checkpoint.
pub fn run(args: &VaeArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let (root, cache) = open_library(None, &args.root)?;
    refresh(&root, &cache)?;
    let all = cache.all()?;
    let ck = find_model(&all, &args.checkpoint, &root.path)?;
    let report = resolve_vae(&root, &all, ck, args.vae.as_deref());
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&render(&report))?;
    }
    Ok(
        if report.refused.is_some() || report.choice == VaeChoice::None {
            ExitStatus::Failure
        } else {
            ExitStatus::Success
        },
    )
}

fn render(r: &VaeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "`{}` ({})", r.checkpoint, r.checkpoint_base);
    match (&r.vae, r.choice) {
        (Some(v), _) => {
            let _ = writeln!(out, "  vae       `{v}`");
        }
        (None, VaeChoice::Baked) => out.push_str("  vae       baked into the checkpoint\n"),
        (None, _) => out.push_str("  vae       NONE\n"),
    }
    let _ = writeln!(out, "  because   {}", r.reason);
    if let Some(x) = &r.refused {
        let _ = writeln!(out, "  REFUSED   {x}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  warning   {w}");
    }
    out
}
