//! `danlu catalog`: the recommended models of the lesson and where to get them.

use crate::ExitStatus;
use crate::args::CatalogArgs;
use crate::printer::Printer;
use std::fmt::Write as _;

/// Runs `danlu catalog`.
///
/// # Errors
/// An unknown `--category`, or output that cannot be written.
pub fn run(args: &CatalogArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let mut entries = danlu_download::catalog::entries()?;
    if let Some(c) = &args.category {
        let c = c.to_ascii_lowercase();
        if !entries.iter().any(|e| e.category == c) {
            anyhow::bail!("unknown category `{c}`: use `anime`, `realistic` or `2.5d`");
        }
        entries.retain(|e| e.category == c);
    }
    if printer.json {
        printer.json(&entries)?;
        return Ok(ExitStatus::Success);
    }
    let mut text = String::new();
    let mut last = String::new();
    for e in &entries {
        if e.category != last {
            let _ = writeln!(text, "{}", e.category);
            last.clone_from(&e.category);
        }
        let _ = writeln!(text, "  {:<20} {} ({})", e.name, e.title, e.base);
        match &e.source {
            Some(s) => {
                let _ = writeln!(
                    text,
                    "  {:<20} danlu download catalog:{}  ({s})",
                    "", e.name
                );
            }
            None => {
                let _ = writeln!(text, "  {:<20} no verified source", "");
            }
        }
        for a in &e.alternatives {
            let _ = writeln!(text, "  {:<20} also {a}", "");
        }
        if !e.note.is_empty() {
            let _ = writeln!(text, "  {:<20} note: {}", "", e.note);
        }
    }
    printer.text(&text)?;
    Ok(ExitStatus::Success)
}
