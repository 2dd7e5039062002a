//! `danlu civitai lookup`: find files on Civitai by their SHA-256 and write their sidecars.

use crate::ExitStatus;
use crate::args::{CivitaiArgs, CivitaiCommand, CivitaiLookupArgs};
use crate::commands::download::{client_from_env, runtime};
use crate::printer::Printer;
use crate::progress::Bars;
use danlu_download::Client;
use danlu_download::sidecar::{sidecar_path, write_sidecars};
use danlu_identify::report::walk_models;
use danlu_library::labels::{Category, category_of_tag};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// What was found for one file (`civitai lookup --json`, one array entry).
#[derive(Debug, Serialize)]
struct LookupItem {
    /// The file.
    path: String,
    /// Its SHA-256 (null when it could not be read).
    sha256: Option<String>,
    /// Whether Civitai knows the hash.
    found: bool,
    /// Skipped because a `.civitai.info` is already there (without `--force`).
    skipped: bool,
    /// The model's name on Civitai.
    name: Option<String>,
    /// Civitai model id.
    model_id: Option<u64>,
    /// Civitai version id.
    version_id: Option<u64>,
    /// Civitai `baseModel`.
    base_model: Option<String>,
    /// Civitai `type`.
    model_type: Option<String>,
    /// Trigger words.
    trained_words: Vec<String>,
    /// The model's tags.
    tags: Vec<String>,
    /// Style categories the tags imply (anime, realistic, 2.5d).
    categories: Vec<Category>,
    /// Sidecars written.
    sidecars: Vec<String>,
    /// What went wrong, when something did.
    error: Option<String>,
}

impl LookupItem {
    fn new(path: &Path) -> Self {
        Self {
            path: path.display().to_string(),
            sha256: None,
            found: false,
            skipped: false,
            name: None,
            model_id: None,
            version_id: None,
            base_model: None,
            model_type: None,
            trained_words: Vec::new(),
            tags: Vec::new(),
            categories: Vec::new(),
            sidecars: Vec::new(),
            error: None,
        }
    }
}

/// Runs `danlu civitai ...`.
///
/// # Errors
/// Output that cannot be written; each file's failure is in its entry (exit status 1).
pub fn run(
    args: &CivitaiArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    match &args.command {
        CivitaiCommand::Lookup(a) => lookup(a, progress_hidden, printer),
    }
}

async fn lookup_one(
    client: &Client,
    path: &Path,
    bars: &Bars,
    item: &mut LookupItem,
) -> Result<(), String> {
    let hashes =
        danlu_hash::hash_file(path, bars, &AtomicBool::new(false)).map_err(|e| e.to_string())?;
    item.sha256 = Some(hashes.sha256.clone());
    let Some(mut info) = client
        .civitai_by_hash(&hashes.sha256)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    item.found = true;
    let v = &info.version;
    item.version_id = Some(v.id);
    item.model_id = v.model_id;
    item.base_model.clone_from(&v.base_model);
    item.trained_words.clone_from(&v.trained_words);
    item.name = v.model.as_ref().and_then(|m| m.name.clone());
    item.model_type = v.model.as_ref().and_then(|m| m.model_type.clone());
    if let Some(id) = v.model_id {
        // Tags and the description live on the model; without them the sidecars are still right.
        if let Ok(model) = client.civitai_model(id).await {
            item.tags.clone_from(&model.tags);
            info.model = Some(model);
        }
    }
    let mut cats: Vec<Category> = item
        .tags
        .iter()
        .filter_map(|t| category_of_tag(t))
        .collect();
    cats.sort();
    cats.dedup();
    item.categories = cats;
    let written = write_sidecars(client, path, &info)
        .await
        .map_err(|e| e.to_string())?;
    item.sidecars = written.iter().map(|p| p.display().to_string()).collect();
    Ok(())
}

fn lookup(
    args: &CivitaiLookupArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let client = client_from_env()?;
    let bars = Bars::new(progress_hidden);
    let rt = runtime()?;
    let mut items = Vec::new();
    let paths = if args.all {
        let (root, _cache) = super::scan::open_library(None, &args.root)?;
        root.scan_dirs()
            .into_iter()
            .filter(|d| d.is_dir())
            .collect()
    } else {
        args.paths.clone()
    };
    for p in &paths {
        let files = match walk_models(p) {
            Ok(f) => f,
            Err(e) => {
                let mut item = LookupItem::new(p);
                item.error = Some(format!("`{}`: listing: {e}", p.display()));
                items.push(item);
                continue;
            }
        };
        for f in files.into_iter().filter(|f| f.is_file()) {
            let mut item = LookupItem::new(&f);
            if !args.force && sidecar_path(&f, ".civitai.info").exists() {
                item.skipped = true;
            } else if let Err(e) = rt.block_on(lookup_one(&client, &f, &bars, &mut item)) {
                item.error = Some(e);
            }
            items.push(item);
        }
    }
    let failed = items.iter().any(|i| i.error.is_some());
    if printer.json {
        printer.json(&items)?;
    } else {
        let mut text = String::new();
        for i in &items {
            let _ = writeln!(text, "`{}`", i.path);
            if let Some(e) = &i.error {
                let _ = writeln!(text, "  error     {e}");
            } else if i.skipped {
                let _ = writeln!(text, "  skipped   has a `.civitai.info` (use --force)");
            } else if !i.found {
                let _ = writeln!(text, "  not found on Civitai");
            } else {
                let _ = writeln!(
                    text,
                    "  civitai   {} ({}, {}), model {} version {}",
                    i.name.as_deref().unwrap_or("?"),
                    i.model_type.as_deref().unwrap_or("?"),
                    i.base_model.as_deref().unwrap_or("?"),
                    i.model_id.map_or_else(|| "?".to_owned(), |m| m.to_string()),
                    i.version_id
                        .map_or_else(|| "?".to_owned(), |m| m.to_string()),
                );
                if !i.trained_words.is_empty() {
                    let _ = writeln!(text, "  triggers  {}", i.trained_words.join(", "));
                }
                for s in &i.sidecars {
                    let _ = writeln!(text, "  sidecar   `{s}`");
                }
            }
        }
        printer.text(&text)?;
    }
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}
