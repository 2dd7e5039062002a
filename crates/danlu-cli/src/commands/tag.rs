//! `danlu tag`: set style categories and tags on a model.

use crate::ExitStatus;
use crate::args::TagArgs;
use crate::commands::scan::{open_library, refresh};
use crate::printer::Printer;
use danlu_library::labels::LabelSource;
use danlu_library::{Category, find_model};

/// Runs `danlu tag`.
///
/// # Errors
/// No root, a cache failure, an unknown category, or no such model.
pub fn run(args: &TagArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let categories: Vec<Category> = args
        .category
        .iter()
        .map(|c| c.parse())
        .collect::<Result<_, _>>()?;
    let (root, cache) = open_library(None, &args.root)?;
    refresh(&root, &cache)?;
    let all = cache.all()?;
    let path = find_model(&all, &args.name, &root.path)?.path.clone();
    for c in categories {
        cache.add_category(&path, c, LabelSource::User)?;
    }
    for t in &args.tag {
        cache.add_tag(&path, t, LabelSource::User)?;
    }
    for r in &args.remove {
        cache.remove_label(&path, r)?;
    }
    let rec = cache
        .get(&path)?
        .ok_or_else(|| anyhow::anyhow!("`{path}` vanished from the cache"))?;
    if printer.json {
        printer.json(&rec)?;
    } else {
        printer.text(&crate::commands::show::render(&rec))?;
    }
    Ok(ExitStatus::Success)
}
