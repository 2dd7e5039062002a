//! `danlu sort`: file model files into a library's folders.

use crate::ExitStatus;
use crate::args::SortArgs;
use crate::commands::scan::{cancel_flag, open_library};
use crate::printer::Printer;
use crate::progress::Bars;
use danlu_library::sort::{SortAction, SortItem};
use danlu_library::{SortMode, SortOptions, SortReport};
use std::fmt::Write as _;
use std::time::Duration;

/// Runs `danlu sort`.
///
/// `DANLU_TEST_SORT_DELAY_MS` (tests only) pauses before each file operation, so a test can
/// kill the sorter between any two steps.
///
/// # Errors
/// No root or a cache failure; each file's failure is reported in its item.
pub fn run(
    args: &SortArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let (root, cache) = open_library(None, &args.root)?;
    let mode = if args.copy {
        SortMode::Copy
    } else if args.link {
        SortMode::Link
    } else {
        SortMode::Move
    };
    let step_delay = std::env::var("DANLU_TEST_SORT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let opts = SortOptions {
        mode,
        dry_run: args.dry_run,
        step_delay,
    };
    let bars = Bars::new(progress_hidden);
    let report = danlu_library::sort(
        &root,
        Some(&cache),
        &args.paths,
        &opts,
        &bars,
        cancel_flag(),
    )?;
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&render(&report))?;
    }
    Ok(
        if report.cancelled || report.items.iter().any(|i| i.action == SortAction::Failed) {
            ExitStatus::Failure
        } else {
            ExitStatus::Success
        },
    )
}

fn verb(i: &SortItem, dry: bool) -> &'static str {
    match (i.action, dry) {
        (SortAction::Move, false) => "moved",
        (SortAction::Move, true) => "would move",
        (SortAction::Copy, false) => "copied",
        (SortAction::Copy, true) => "would copy",
        (SortAction::Link, false) => "linked",
        (SortAction::Link, true) => "would link",
        (SortAction::Duplicate, _) => "duplicate",
        (SortAction::InPlace, _) => "in place",
        (SortAction::Skipped, _) => "skipped",
        (SortAction::Failed, _) => "failed",
    }
}

fn render(r: &SortReport) -> String {
    let mut out = String::new();
    for i in &r.items {
        let _ = write!(out, "{:<10} `{}`", verb(i, r.dry_run), i.source);
        if let Some(d) = &i.destination {
            let _ = write!(out, " -> `{d}`");
        }
        let _ = write!(out, " ({}, {})", i.kind, i.base);
        if i.renamed {
            out.push_str(" renamed: another file has its name");
        }
        if let Some(d) = &i.duplicate_of {
            let _ = write!(out, " same content as `{d}`; left in place");
        }
        if let Some(x) = i.reason.as_ref().or(i.error.as_ref()) {
            let _ = write!(out, ": {x}");
        }
        out.push('\n');
        for s in &i.sidecars {
            let _ = writeln!(out, "           + `{}` -> `{}`", s.source, s.destination);
        }
    }
    if r.items.is_empty() {
        out.push_str("no model files found\n");
    }
    if r.cancelled {
        out.push_str("cancelled: run `danlu sort` again to continue\n");
    }
    out
}
