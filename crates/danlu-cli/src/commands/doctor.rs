//! `danlu doctor`: problems in a library and their fixes.

use crate::ExitStatus;
use crate::args::DoctorArgs;
use crate::commands::scan::{open_library, refresh};
use crate::printer::Printer;
use danlu_library::DoctorReport;
use danlu_library::doctor::{Fix, Severity, apply_fixes};
use std::fmt::Write as _;

/// Runs `danlu doctor`.
///
/// # Errors
/// No root or a cache failure.
pub fn run(args: &DoctorArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let (root, cache) = open_library(None, &args.root)?;
    refresh(&root, &cache)?;
    let mut report = danlu_library::doctor(&root, &cache.all()?);
    if args.fix {
        if !printer.json {
            // The findings and their fixes are shown before anything is changed.
            printer.text(&render(&report))?;
        }
        apply_fixes(&mut report, &cache)?;
    }
    if printer.json {
        printer.json(&report)?;
    } else if args.fix {
        printer.text(&render_applied(&report))?;
    } else {
        printer.text(&render(&report))?;
    }
    let errors = report
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error && !fixed(&report, f.fix.as_ref()));
    Ok(if errors {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn fixed(r: &DoctorReport, fix: Option<&Fix>) -> bool {
    fix.is_some_and(|f| r.applied.iter().any(|a| &a.fix == f && a.error.is_none()))
}

fn describe(f: &Fix) -> String {
    match f {
        Fix::Move { from, to } => format!("move `{from}` -> `{to}`"),
        Fix::Pair { vae, sidecar, .. } => format!("pair with `{vae}` (writes `{sidecar}`)"),
    }
}

fn render(r: &DoctorReport) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{sev}: `{}`: {}", f.path, f.message);
        let _ = writeln!(out, "  hint: {}", f.hint);
        if let Some(fix) = &f.fix {
            let _ = writeln!(out, "  fix (--fix): {}", describe(fix));
        }
    }
    let _ = writeln!(out, "{} models, {} findings", r.models, r.findings.len());
    out
}

fn render_applied(r: &DoctorReport) -> String {
    let mut out = String::new();
    for a in &r.applied {
        match &a.error {
            None => {
                let _ = writeln!(out, "fixed: {}", describe(&a.fix));
            }
            Some(e) => {
                let _ = writeln!(out, "not fixed: {}: {e}", describe(&a.fix));
            }
        }
    }
    if r.applied.is_empty() {
        out.push_str("nothing to fix automatically\n");
    }
    out
}
