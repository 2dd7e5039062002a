//! `danlu show`: one model of a library by name or hash.

use crate::ExitStatus;
use crate::args::ShowArgs;
use crate::commands::list::human_size;
use crate::commands::scan::{open_library, refresh};
use crate::printer::Printer;
use danlu_library::{ModelRecord, find_model};
use std::fmt::Write as _;

/// Runs `danlu show`.
///
/// # Errors
/// No root, a cache failure, or no (or several) models matching.
pub fn run(args: &ShowArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let (root, cache) = open_library(None, &args.root)?;
    refresh(&root, &cache)?;
    let all = cache.all()?;
    let rec = find_model(&all, &args.query, &root.path)?;
    if printer.json {
        printer.json(rec)?;
    } else {
        printer.text(&render(rec))?;
    }
    Ok(ExitStatus::Success)
}

/// A record as aligned lines.
pub(crate) fn render(r: &ModelRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "`{}`", r.path);
    let _ = writeln!(out, "  name      {}", r.name);
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error     {e}");
        return out;
    }
    if let Some(id) = &r.identity {
        let mut tags = vec![id.base.to_string()];
        tags.extend(id.variant.map(|v| v.to_string()));
        tags.extend(id.subformat.map(|v| v.to_string()));
        let _ = writeln!(out, "  kind      {} ({})", id.kind, tags.join(", "));
        if let Some(c) = id.components {
            let _ = writeln!(
                out,
                "  contains  unet {}, vae {}, text encoder {}",
                c.unet, c.vae, c.text_encoder
            );
        }
    }
    let _ = writeln!(
        out,
        "  file      {}, {}",
        r.format.map(|f| f.as_str()).unwrap_or("?"),
        human_size(r.size)
    );
    match &r.hashes {
        Some(h) => {
            if let Some(s) = &h.sha256 {
                let _ = writeln!(out, "  sha256    {s}");
            }
            let _ = writeln!(
                out,
                "  hashes    AutoV1 {}  AutoV2 {}  AutoV3 {}",
                h.autov1.as_deref().unwrap_or("-"),
                h.autov2.as_deref().unwrap_or("-"),
                h.autov3.as_deref().unwrap_or("-")
            );
        }
        None => out.push_str("  hashes    not yet (run `danlu scan`)\n"),
    }
    if let Some(s) = r.safety.as_ref().filter(|s| !s.safe) {
        let _ = writeln!(out, "  safety    UNSAFE: {}", s.findings.join("; "));
    }
    if !r.categories.is_empty() {
        let c: Vec<String> = r.categories.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  category  {}", c.join(", "));
    }
    if !r.tags.is_empty() {
        let _ = writeln!(out, "  tags      {}", r.tags.join(", "));
    }
    if let Some(id) = &r.identity {
        for w in &id.warnings {
            let _ = writeln!(out, "  warning   {w}");
        }
    }
    out
}
