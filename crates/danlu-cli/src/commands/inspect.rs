//! `danlu inspect`: what each model file is and where it goes.

use crate::ExitStatus;
use crate::args::InspectArgs;
use crate::printer::Printer;
use crate::progress::Bars;
use danlu_identify::report::{InspectReport, inspect_path, walk_models};
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;

/// Runs `danlu inspect`.
///
/// # Errors
/// Only when output cannot be written; unreadable files are reported in the results.
pub fn run(
    args: &InspectArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let bars = Bars::new(progress_hidden);
    let cancel = AtomicBool::new(false);
    let mut reports = Vec::new();
    for path in &args.paths {
        match walk_models(path) {
            Ok(files) => {
                for f in files {
                    reports.push(inspect_path(&f, args.hash, &bars, &cancel));
                }
            }
            Err(e) => reports.push(InspectReport::unreadable(path, &e)),
        }
    }
    let failed = reports.iter().any(InspectReport::is_error);
    // One path that is itself a model (file or diffusers folder) prints one object; folders
    // walked and several paths print an array (contracts.md).
    if printer.json {
        if reports.len() == 1
            && args.paths.len() == 1
            && reports[0].path == args.paths[0].display().to_string()
        {
            printer.json(&reports[0])?;
        } else {
            printer.json(&reports)?;
        }
    } else {
        let mut text = String::new();
        for r in &reports {
            render(r, &mut text);
        }
        if reports.is_empty() {
            text.push_str("no model files found\n");
        }
        printer.text(&text)?;
    }
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn human_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} K", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

/// Renders one report as a block of aligned lines.
fn render(r: &InspectReport, out: &mut String) {
    let _ = writeln!(out, "`{}`", r.path);
    if let Some(err) = &r.error {
        let _ = writeln!(out, "  error     {err}");
        out.push('\n');
        return;
    }
    let Some(id) = &r.identity else {
        return;
    };
    let mut what = id.kind.to_string();
    let mut tags = vec![id.base.to_string()];
    if let Some(v) = id.variant {
        tags.push(v.to_string());
    }
    if let Some(s) = id.subformat {
        tags.push(s.to_string());
    }
    let _ = write!(what, " ({})", tags.join(", "));
    let _ = writeln!(out, "  kind      {what}");
    let mut format = r.format.map(|f| f.to_string()).unwrap_or_default();
    if let Some(d) = id.dtype {
        let _ = write!(format, ", {d}");
    }
    let _ = write!(format, ", {} parameters", human_count(id.parameters));
    if let Some(v) = id.vectors {
        let _ = write!(format, ", {v} vectors");
    }
    let _ = writeln!(out, "  format    {format}");
    if let Some(c) = id.components {
        let mut has = Vec::new();
        let mut lacks = Vec::new();
        for (name, present) in [
            ("unet", c.unet),
            ("vae", c.vae),
            ("text encoder", c.text_encoder),
            ("ema", c.ema),
        ] {
            if present {
                has.push(name)
            } else {
                lacks.push(name)
            }
        }
        let mut line = has.join(", ");
        if !lacks.is_empty() {
            let _ = write!(line, " (no {})", lacks.join(", no "));
        }
        let _ = writeln!(out, "  contains  {line}");
    }
    let folders = r.folders.clone().unwrap_or_default();
    match (&folders.a1111, &folders.comfyui) {
        (Some(a), Some(c)) => {
            let _ = writeln!(out, "  goes in   A1111 `{a}`, ComfyUI `{c}`");
        }
        _ => {
            let _ = writeln!(out, "  goes in   (unknown kind: no folder)");
        }
    }
    if let Some(s) = &r.safety {
        if s.safe {
            let _ = writeln!(out, "  safety    safe (only allowed globals)");
        } else {
            let _ = writeln!(
                out,
                "  safety    UNSAFE: would run code when loaded by Python tools"
            );
            for f in &s.findings {
                let _ = writeln!(out, "            - {f}");
            }
        }
    }
    if let Some(h) = &r.hashes {
        let _ = writeln!(out, "  sha256    {}", h.sha256);
        let _ = writeln!(
            out,
            "  hashes    AutoV1 {}  AutoV2 {}  AutoV3 {}",
            h.autov1, h.autov2, h.autov3
        );
        let _ = writeln!(out, "  blake3    {}", h.blake3);
    }
    for w in &id.warnings {
        let _ = writeln!(out, "  warning   {w}");
    }
    if id.kind == danlu_types::Kind::Unknown && !id.evidence.is_empty() {
        let _ = writeln!(out, "  evidence  {}", id.evidence.join(", "));
    }
    out.push('\n');
}
