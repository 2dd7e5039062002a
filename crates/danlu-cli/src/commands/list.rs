//! `danlu list`: the models of a library, filtered by kind, base and category.

use crate::ExitStatus;
use crate::args::ListArgs;
use crate::commands::scan::{open_library, refresh};
use crate::printer::Printer;
use anyhow::Context as _;
use danlu_library::{Category, ModelRecord};
use danlu_types::{Base, Kind};
use std::fmt::Write as _;

/// Runs `danlu list`.
///
/// # Errors
/// Bad filter words, no root, or a cache failure.
pub fn run(args: &ListArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let kind: Option<Kind> = args.kind.as_deref().map(str::parse).transpose()?;
    let base: Option<Base> = args.base.as_deref().map(str::parse).transpose()?;
    let category: Option<Category> = args.category.as_deref().map(str::parse).transpose()?;
    let (root, cache) = open_library(None, &args.root)?;
    refresh(&root, &cache)?;
    let models: Vec<ModelRecord> = cache
        .all()
        .context("reading the cache")?
        .into_iter()
        .filter(|r| kind.is_none_or(|k| r.kind() == k))
        .filter(|r| base.is_none_or(|b| r.base() == b))
        .filter(|r| category.is_none_or(|c| r.categories.contains(&c)))
        .collect();
    if printer.json {
        printer.json(&models)?;
    } else {
        let mut out = String::new();
        for r in &models {
            let mut labels: Vec<String> = r.categories.iter().map(ToString::to_string).collect();
            labels.extend(r.tags.iter().take(3).cloned());
            let _ = writeln!(
                out,
                "{:<32} {:<15} {:<12} {:>9}  {}  `{}`",
                r.name,
                r.kind().as_str(),
                r.base().as_str(),
                human_size(r.size),
                labels.join(","),
                r.path
            );
        }
        if models.is_empty() {
            out.push_str("no models match\n");
        }
        printer.text(&out)?;
    }
    Ok(ExitStatus::Success)
}

/// Size in B, KB, MB or GB.
pub(crate) fn human_size(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} KB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.2} GB", n as f64 / 1e9),
    }
}
