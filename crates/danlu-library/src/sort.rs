//! `sort`: file model files into a root's folders, never overwriting anything.
//!
//! Each file is identified from its header and placed in its kind's folder in the root's own
//! layout (`contracts.md` folder table). A file whose sha256 is already in the library (in the
//! destination folder or anywhere the cache knows) is a duplicate: it is reported and left where
//! it is. A different file with the same name is kept under a new name `NAME-2.EXT` (then `-3`,
//! ...). Sidecars with the same stem travel with their model under the same new stem. Moves keep
//! the source until the destination is complete ([`danlu_fs::move_file`]); copies appear under
//! their final name only once complete ([`danlu_fs::copy_file`]); so a sorter killed at any
//! instant leaves every file where it was or complete where it goes (at worst both).

use crate::cache::{Cache, ModelRecord};
use crate::error::{Result, io_err};
use crate::root::{Layout, Root};
use crate::scan::{read_record, stat_model};
use danlu_identify::report::walk_models;
use danlu_types::{Base, Kind, Reporter};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How files reach their folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortMode {
    /// Move (across file systems: copy, sync, rename, then remove the source).
    Move,
    /// Copy, leaving the source.
    Copy,
    /// Hard link (symbolic link across file systems), leaving the source.
    Link,
}

/// Options of [`sort`].
#[derive(Debug, Clone, Copy)]
pub struct SortOptions {
    /// How files are placed.
    pub mode: SortMode,
    /// Only say what would be done.
    pub dry_run: bool,
    /// A pause before each file operation, so tests can interrupt the sorter between steps.
    pub step_delay: Option<Duration>,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortAction {
    /// Moved (or, with `--dry-run`, would be).
    Move,
    /// Copied (or would be).
    Copy,
    /// Linked (or would be).
    Link,
    /// The same content is already in the library; the source is left.
    Duplicate,
    /// Already in the right folder.
    InPlace,
    /// Not filed (unknown kind, diffusers folder); the source is left.
    Skipped,
    /// Failed; the source is left.
    Failed,
}

/// One sidecar that travels with its model.
#[derive(Debug, Clone, Serialize)]
pub struct SidecarPlan {
    /// Where it is.
    pub source: String,
    /// Where it goes.
    pub destination: String,
}

/// What `sort` did with one file (`sort --json`, one entry of `items`).
#[derive(Debug, Clone, Serialize)]
pub struct SortItem {
    /// The file as found.
    pub source: String,
    /// What it is.
    pub kind: Kind,
    /// Its family.
    pub base: Base,
    /// What was done.
    pub action: SortAction,
    /// Where it went (or would go); null when it stays.
    pub destination: Option<String>,
    /// Whether it got a new name because another file had its name.
    pub renamed: bool,
    /// For duplicates: the library file with the same sha256.
    pub duplicate_of: Option<String>,
    /// Sidecars that travel with it.
    pub sidecars: Vec<SidecarPlan>,
    /// Why it was skipped.
    pub reason: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What `sort` did (`sort --json`).
#[derive(Debug, Clone, Serialize)]
pub struct SortReport {
    /// The root filed into.
    pub root: String,
    /// Its layout.
    pub layout: Layout,
    /// How files were placed.
    pub mode: SortMode,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Whether the run was cancelled before the end.
    pub cancelled: bool,
    /// One entry per model file found, sorted by source path.
    pub items: Vec<SortItem>,
}

/// Sidecar suffixes that travel with a model of the same stem (A1111 previews and user
/// metadata, Civitai Helper info, LDM configs, notes).
pub const SIDECAR_SUFFIXES: &[&str] = &[
    ".preview.png",
    ".preview.jpg",
    ".preview.jpeg",
    ".preview.webp",
    ".civitai.info",
    ".png",
    ".jpg",
    ".jpeg",
    ".webp",
    ".json",
    ".txt",
    ".yaml",
];

/// The sidecars beside a model: `STEM` + each of [`SIDECAR_SUFFIXES`] that exists, as
/// (path, suffix).
pub fn sidecars_of(model: &Path) -> Vec<(PathBuf, &'static str)> {
    let Some(stem) = model.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    SIDECAR_SUFFIXES
        .iter()
        .map(|s| (model.with_file_name(format!("{stem}{s}")), *s))
        .filter(|(p, _)| p.is_file())
        .collect()
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// A destination in `dir` for `model` and its sidecars where none of the names is taken:
/// `NAME.EXT`, else `NAME-2.EXT`, `NAME-3.EXT`, ...; with whether it was renamed.
pub fn free_name(dir: &Path, model: &Path, sidecars: &[(PathBuf, &str)]) -> (PathBuf, bool) {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = model
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut n = 1u32;
    loop {
        let s = if n == 1 {
            stem.clone()
        } else {
            format!("{stem}-{n}")
        };
        let dest = dir.join(format!("{s}{ext}"));
        let taken = exists(&dest)
            || sidecars
                .iter()
                .any(|(_, suffix)| exists(&dir.join(format!("{s}{suffix}"))));
        if !taken {
            return (dest, n > 1);
        }
        n += 1;
    }
}

/// Places one file by `mode`, never overwriting.
fn place(mode: SortMode, src: &Path, dest: &Path) -> Result<()> {
    match mode {
        SortMode::Move => danlu_fs::move_file(src, dest).map(|_| ()),
        SortMode::Copy => danlu_fs::copy_file(src, dest).map(|_| ()),
        SortMode::Link => danlu_fs::link_file(src, dest).map(|_| ()),
    }
    .map_err(Into::into)
}

/// Moves (or copies, links) a model and its sidecars to `dest`, sidecars renamed to the new
/// stem. The model goes first: once it is placed, a sidecar left behind by an interruption is
/// still beside the source.
///
/// # Errors
/// When a file cannot be placed; files already placed stay placed.
pub fn place_with_sidecars(
    mode: SortMode,
    src: &Path,
    dest: &Path,
    sidecars: &[(PathBuf, &str)],
    step_delay: Option<Duration>,
) -> Result<()> {
    if let Some(d) = step_delay {
        std::thread::sleep(d);
    }
    place(mode, src, dest)?;
    let new_stem = dest
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (p, suffix) in sidecars {
        if let Some(d) = step_delay {
            std::thread::sleep(d);
        }
        place(mode, p, &dest.with_file_name(format!("{new_stem}{suffix}")))?;
    }
    Ok(())
}

fn sha256_of(path: &Path, cache: Option<&Cache>, cancel: &AtomicBool) -> Result<String> {
    if let (Some(c), Ok((size, mtime))) = (cache, stat_model(path))
        && let Some(h) = c.fresh_sha256(&path.display().to_string(), size, mtime)?
    {
        return Ok(h);
    }
    Ok(danlu_hash::hash_file(path, &danlu_types::NoProgress, cancel)?.sha256)
}

/// Library files of the same size as a source: files in the destination folder, and every
/// file the cache knows.
fn same_size(dir: &Path, size: u64, known: &[ModelRecord], src: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() == size))
                .collect()
        })
        .unwrap_or_default();
    for r in known {
        let p = PathBuf::from(&r.path);
        if r.size == size && !out.contains(&p) && p.is_file() {
            out.push(p);
        }
    }
    out.retain(|p| p != src);
    out
}

/// Files `paths` (files or folders, walked) into `root`.
///
/// # Errors
/// Only when the cache fails; each file's failure is reported in its item.
pub fn sort(
    root: &Root,
    cache: Option<&Cache>,
    paths: &[PathBuf],
    opts: &SortOptions,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<SortReport> {
    let mut files = Vec::new();
    let mut items = Vec::new();
    for p in paths {
        match walk_models(p) {
            Ok(list) => files.extend(list),
            Err(e) => items.push(SortItem {
                source: p.display().to_string(),
                kind: Kind::Unknown,
                base: Base::Unknown,
                action: SortAction::Failed,
                destination: None,
                renamed: false,
                duplicate_of: None,
                sidecars: Vec::new(),
                reason: None,
                error: Some(format!("`{}`: listing: {e}", p.display())),
            }),
        }
    }
    files.sort();
    files.dedup();
    files.retain(|f| !f.starts_with(root.state_dir()));
    let known = match cache {
        Some(c) => c.all()?,
        None => Vec::new(),
    };
    let task = reporter.start("sorting", Some(files.len() as u64));
    let mut cancelled = false;
    for f in files {
        if cancel.load(Ordering::Relaxed) {
            cancelled = true;
            break;
        }
        let item = sort_one(root, cache, &known, &f, opts, cancel)?;
        items.push(item);
        reporter.advance(task, 1);
    }
    reporter.finish(task);
    items.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(SortReport {
        root: root.path.display().to_string(),
        layout: root.layout,
        mode: opts.mode,
        dry_run: opts.dry_run,
        cancelled,
        items,
    })
}

fn sort_one(
    root: &Root,
    cache: Option<&Cache>,
    known: &[ModelRecord],
    f: &Path,
    opts: &SortOptions,
    cancel: &AtomicBool,
) -> Result<SortItem> {
    let mut item = SortItem {
        source: f.display().to_string(),
        kind: Kind::Unknown,
        base: Base::Unknown,
        action: SortAction::Skipped,
        destination: None,
        renamed: false,
        duplicate_of: None,
        sidecars: Vec::new(),
        reason: None,
        error: None,
    };
    let (size, mtime) = match stat_model(f) {
        Ok(s) => s,
        Err(e) => {
            item.action = SortAction::Failed;
            item.error = Some(format!("`{}`: {e}", f.display()));
            return Ok(item);
        }
    };
    let rec = read_record(f, size, mtime);
    item.kind = rec.kind();
    item.base = rec.base();
    if let Some(e) = &rec.error {
        item.action = SortAction::Failed;
        item.error = Some(e.clone());
        return Ok(item);
    }
    if f.is_dir() {
        item.reason = Some("diffusers folders are not filed; move the folder by hand".into());
        return Ok(item);
    }
    let Some(dir) = root.folder(item.kind) else {
        item.reason = Some("unknown kind: no folder to file it in".into());
        return Ok(item);
    };
    let abs = std::path::absolute(f).map_err(io_err(f, "resolving"))?;
    if abs.starts_with(&root.path) && root.is_in_place(&abs, item.kind) {
        item.action = SortAction::InPlace;
        return Ok(item);
    }
    let candidates = same_size(&dir, size, known, &abs);
    let mut sha = None;
    for c in &candidates {
        let src_sha = match &sha {
            Some(s) => s,
            None => match sha256_of(f, None, cancel) {
                Ok(s) => sha.insert(s),
                Err(e) => {
                    item.action = SortAction::Failed;
                    item.error = Some(e.to_string());
                    return Ok(item);
                }
            },
        };
        if let Ok(other) = sha256_of(c, cache, cancel)
            && &other == src_sha
        {
            item.action = SortAction::Duplicate;
            item.duplicate_of = Some(c.display().to_string());
            return Ok(item);
        }
    }
    let sidecars = sidecars_of(f);
    let (dest, renamed) = free_name(&dir, f, &sidecars);
    let new_stem = dest
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    item.renamed = renamed;
    item.destination = Some(dest.display().to_string());
    item.sidecars = sidecars
        .iter()
        .map(|(p, suffix)| SidecarPlan {
            source: p.display().to_string(),
            destination: dest
                .with_file_name(format!("{new_stem}{suffix}"))
                .display()
                .to_string(),
        })
        .collect();
    item.action = match opts.mode {
        SortMode::Move => SortAction::Move,
        SortMode::Copy => SortAction::Copy,
        SortMode::Link => SortAction::Link,
    };
    if opts.dry_run {
        return Ok(item);
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        item.action = SortAction::Failed;
        item.error = Some(format!("`{}`: creating folder: {e}", dir.display()));
        return Ok(item);
    }
    if let Err(e) = place_with_sidecars(opts.mode, f, &dest, &sidecars, opts.step_delay) {
        item.action = SortAction::Failed;
        item.error = Some(e.to_string());
        return Ok(item);
    }
    if let Some(c) = cache {
        let d = dest.display().to_string();
        if opts.mode == SortMode::Move {
            c.remove(&abs.display().to_string())?;
        }
        if let Ok((size, mtime)) = stat_model(&dest) {
            let mut rec = rec;
            rec.path = d;
            rec.name = crate::cache::model_name(&dest);
            rec.size = size;
            rec.mtime_ns = mtime;
            // Hashes are left to the next scan, which computes all of them in one pass.
            rec.hashes = None;
            c.put(&rec)?;
        }
    }
    Ok(item)
}
