//! `scan`: index every model file of a root into the cache, incrementally, and hash them on all
//! cores.
//!
//! A file whose (path, size, mtime) matches its cached row is not opened at all. New and changed
//! files have their headers read ([`danlu_format::read_index`]) and identified; each row is
//! committed on its own, so an interrupted scan keeps everything done. Hashes come from A1111's
//! `cache.json` where it holds a fresh entry, else from [`danlu_hash::hash_file`], several files
//! at once.

use crate::cache::{Cache, ModelRecord, RecordHashes, RecordSafety, model_name};
use crate::error::Result;
use crate::labels::{LabelSource, read_civitai_sidecar};
use crate::root::{Layout, Root};
use danlu_identify::report::{InspectReport, walk_models};
use danlu_types::{Format, Reporter};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

/// What a scan does besides indexing.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Hash files that have no sha256 yet.
    pub hash: bool,
    /// Files hashed at once; 0 means one per core.
    pub threads: usize,
    /// Take hashes from A1111's `cache.json` where fresh.
    pub import_a1111: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            hash: true,
            threads: 0,
            import_a1111: true,
        }
    }
}

/// A file a scan could not list, read or hash.
#[derive(Debug, Clone, Serialize)]
pub struct ScanFailure {
    /// The file or folder.
    pub path: String,
    /// What went wrong, with its causes.
    pub error: String,
}

/// What a scan did (`scan --json`).
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    /// The root scanned.
    pub root: String,
    /// Its layout.
    pub layout: Layout,
    /// The cache file.
    pub cache: String,
    /// Model files found.
    pub files: usize,
    /// Files whose path, size and mtime matched the cache: not opened.
    pub unchanged: usize,
    /// Files not in the cache before.
    pub new: usize,
    /// Files whose size or mtime changed.
    pub changed: usize,
    /// Cached files that are gone.
    pub removed: usize,
    /// Files whose contents were read (headers, to identify them).
    pub read: usize,
    /// Files hashed.
    pub hashed: usize,
    /// Bytes hashed.
    pub hashed_bytes: u64,
    /// Files whose hashes came from A1111's `cache.json`.
    pub imported: usize,
    /// Files still without hashes (hashing off, cancelled, or failed).
    pub hash_pending: usize,
    /// Whether the scan was cancelled; a new scan resumes where it stopped.
    pub cancelled: bool,
    /// Files or folders that could not be read or hashed.
    pub errors: Vec<ScanFailure>,
}

/// Size and modification time (ns since the epoch) of a model file or diffusers folder (for a
/// folder: total size and newest mtime of the files in it and its direct subfolders).
///
/// # Errors
/// When the path cannot be stat'ed.
pub fn stat_model(path: &Path) -> std::io::Result<(u64, i64)> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok((meta.len(), mtime_ns(&meta)));
    }
    let mut size = 0;
    let mut mtime = mtime_ns(&meta);
    let mut dirs = vec![(path.to_path_buf(), 0)];
    while let Some((d, depth)) = dirs.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                if depth == 0 {
                    dirs.push((e.path(), 1));
                }
            } else {
                size += m.len();
                mtime = mtime.max(mtime_ns(&m));
            }
        }
    }
    Ok((size, mtime))
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Reads a file's header and identifies it: the record a scan stores (without hashes).
pub fn read_record(path: &Path, size: u64, mtime_ns: i64) -> ModelRecord {
    let report = match danlu_format::read_index(path) {
        Ok(index) => InspectReport::from_index(path, &index, None),
        Err(e) => InspectReport::failed(path, &e),
    };
    ModelRecord {
        path: path.display().to_string(),
        name: model_name(path),
        size,
        mtime_ns,
        format: report.format,
        identity: report.identity,
        hashes: None,
        safety: report.safety.map(|s| RecordSafety {
            safe: s.safe,
            findings: s.findings,
        }),
        error: report.error,
        categories: Vec::new(),
        tags: Vec::new(),
    }
}

/// The model files under a root's scan folders, sorted, without danlu's own folder.
fn list_files(root: &Root, errors: &mut Vec<ScanFailure>) -> BTreeSet<PathBuf> {
    let state = root.state_dir();
    let mut files = BTreeSet::new();
    for dir in root.scan_dirs() {
        match walk_models(&dir) {
            Ok(list) => files.extend(list.into_iter().filter(|p| !p.starts_with(&state))),
            Err(e) => errors.push(ScanFailure {
                path: dir.display().to_string(),
                error: format!("`{}`: listing: {e}", dir.display()),
            }),
        }
    }
    files
}

/// Scans a root into its cache. Never fails on one file: unreadable files are reported in the
/// result and cached with their error.
///
/// # Errors
/// Only when the cache itself fails.
pub fn scan(
    root: &Root,
    cache: &Cache,
    opts: &ScanOptions,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<ScanReport> {
    let mut errors = Vec::new();
    let files = list_files(root, &mut errors);
    let known = cache.stats()?;
    let mut report = ScanReport {
        root: root.path.display().to_string(),
        layout: root.layout,
        cache: cache.path().display().to_string(),
        files: files.len(),
        unchanged: 0,
        new: 0,
        changed: 0,
        removed: 0,
        read: 0,
        hashed: 0,
        hashed_bytes: 0,
        imported: 0,
        hash_pending: 0,
        cancelled: false,
        errors: Vec::new(),
    };
    let mut todo = Vec::new();
    for f in &files {
        let key = f.display().to_string();
        match stat_model(f) {
            Ok(stat) => match known.get(&key) {
                Some(old) if *old == stat => report.unchanged += 1,
                Some(_) => {
                    report.changed += 1;
                    todo.push((f.clone(), stat));
                }
                None => {
                    report.new += 1;
                    todo.push((f.clone(), stat));
                }
            },
            Err(e) => errors.push(ScanFailure {
                path: key,
                error: format!("`{}`: reading size and time: {e}", f.display()),
            }),
        }
    }
    let present: BTreeSet<String> = files.iter().map(|f| f.display().to_string()).collect();
    for path in known.keys() {
        if !present.contains(path) {
            cache.remove(path)?;
            report.removed += 1;
        }
    }
    let task = reporter.start("identifying", Some(todo.len() as u64));
    for (f, (size, mtime)) in &todo {
        if cancel.load(Ordering::Relaxed) {
            report.cancelled = true;
            break;
        }
        let rec = read_record(f, *size, *mtime);
        report.read += 1;
        cache.put(&rec)?;
        cache.clear_sidecar_labels(&rec.path)?;
        if let Some((cats, tags)) = read_civitai_sidecar(f) {
            for c in cats {
                cache.add_category(&rec.path, c, LabelSource::Sidecar)?;
            }
            for t in tags {
                cache.add_tag(&rec.path, &t, LabelSource::Sidecar)?;
            }
        }
        reporter.advance(task, 1);
    }
    reporter.finish(task);

    let mut need: Vec<ModelRecord> = cache
        .all()?
        .into_iter()
        .filter(|r| r.error.is_none() && r.sha256().is_none() && Path::new(&r.path).is_file())
        .collect();
    if opts.import_a1111 && !need.is_empty() {
        for file in a1111_cache_files(root) {
            let imported = import_a1111_cache(&file, root, cache, &need)?;
            report.imported += imported.len();
            need.retain(|r| !imported.contains(&r.path));
        }
    }
    if opts.hash && !report.cancelled {
        hash_all(
            &need,
            cache,
            opts,
            reporter,
            cancel,
            &mut report,
            &mut errors,
        )?;
    }
    report.hash_pending = cache
        .all()?
        .iter()
        .filter(|r| r.error.is_none() && r.sha256().is_none() && Path::new(&r.path).is_file())
        .count();
    report.cancelled |= cancel.load(Ordering::Relaxed);
    for r in cache.all()? {
        if let Some(e) = &r.error
            && present.contains(&r.path)
        {
            errors.push(ScanFailure {
                path: r.path.clone(),
                error: e.clone(),
            });
        }
    }
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    report.errors = errors;
    Ok(report)
}

/// Hashes files on `opts.threads` threads; the calling thread stores each result as it comes.
fn hash_all(
    need: &[ModelRecord],
    cache: &Cache,
    opts: &ScanOptions,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
    report: &mut ScanReport,
    errors: &mut Vec<ScanFailure>,
) -> Result<()> {
    if need.is_empty() {
        return Ok(());
    }
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    }
    .min(need.len());
    let total: u64 = need.iter().map(|r| r.size).sum();
    let task = reporter.start("hashing", Some(total));
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut result = Ok(());
    std::thread::scope(|s| {
        for _ in 0..threads {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(rec) = need.get(i) else { break };
                    let h = danlu_hash::hash_file(&rec.path, reporter, cancel);
                    if tx.send((i, h)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, h) in rx {
            let Some(rec) = need.get(i) else { continue };
            match h {
                Ok(h) => {
                    report.hashed += 1;
                    report.hashed_bytes += rec.size;
                    reporter.advance(task, rec.size);
                    if let Err(e) = cache.set_hashes(&rec.path, &RecordHashes::from_hashes(&h)) {
                        // Stop the workers; the error is returned once they have finished.
                        cancel.store(true, Ordering::Relaxed);
                        result = Err(e);
                    }
                }
                Err(danlu_hash::Error::Cancelled { .. }) => {}
                Err(e) => errors.push(ScanFailure {
                    path: rec.path.clone(),
                    error: chain(&e),
                }),
            }
        }
    });
    reporter.finish(task);
    result
}

/// A1111 `cache.json` files that may hold hashes of this root's files: the root's own, and
/// those of A1111 installs whose folders a ComfyUI root borrows (`extra_model_paths.yaml`).
fn a1111_cache_files(root: &Root) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut consider = |dir: &Path| {
        let f = dir.join("cache.json");
        if f.is_file() && !out.contains(&f) {
            out.push(f);
        }
    };
    if root.layout != Layout::ComfyUi {
        consider(&root.path);
    }
    for e in &root.extra {
        for dir in e.path.ancestors().take(4) {
            if dir.join("webui.py").is_file() {
                consider(dir);
            }
        }
    }
    out
}

/// Takes hashes from an A1111 `cache.json` (A1111 `modules/hashes.py` `sha256_from_cache`,
/// `modules/cache.py`): section `hashes` maps titles such as `checkpoint/NAME.safetensors`
/// (path relative to the checkpoint folder), `lora/NAME` or `textual_inversion/NAME` to
/// `{"mtime": seconds, "sha256": hex}` of the whole file; section `hashes-addnet` holds, under
/// `lora/NAME`, the hash of a safetensors LoRA's tensor bytes (AutoV3). An entry counts only
/// when its mtime is not older than the file's, as A1111 checks. Returns the paths given hashes.
///
/// # Errors
/// When the cache fails; an unreadable or malformed `cache.json` is skipped with a warning.
pub fn import_a1111_cache(
    file: &Path,
    root: &Root,
    cache: &Cache,
    need: &[ModelRecord],
) -> Result<Vec<String>> {
    let parsed = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let Some(doc) = parsed else {
        tracing::warn!(path = %file.display(), "A1111 cache.json unreadable; not imported");
        return Ok(Vec::new());
    };
    // title suffix (after `section/`) -> (mtime, hash)
    let section = |name: &str| -> HashMap<String, (f64, String)> {
        let mut out = HashMap::new();
        if let Some(m) = doc.get(name).and_then(|v| v.as_object()) {
            for (title, entry) in m {
                let Some((_, rest)) = title.split_once('/') else {
                    continue;
                };
                let mtime = entry.get("mtime").and_then(|v| v.as_f64()).unwrap_or(0.0);
                if let Some(h) = entry.get("sha256").and_then(|v| v.as_str())
                    && h.len() == 64
                    && h.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    out.insert(rest.replace('\\', "/"), (mtime, h.to_ascii_lowercase()));
                }
            }
        }
        out
    };
    let full = section("hashes");
    let addnet = section("hashes-addnet");
    let folders = root.folders();
    let mut done = Vec::new();
    for rec in need {
        let path = Path::new(&rec.path);
        let Ok(meta) = std::fs::metadata(path) else {
            continue;
        };
        let file_mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let mut keys = vec![rec.name.clone()];
        if let Some(n) = path.file_name() {
            keys.push(n.to_string_lossy().into_owned());
        }
        for f in &folders {
            if let Ok(rel) = path.strip_prefix(&f.path) {
                keys.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        let fresh = |m: &HashMap<String, (f64, String)>| {
            keys.iter()
                .filter_map(|k| m.get(k))
                .find(|(mtime, _)| *mtime >= file_mtime)
                .map(|(_, h)| h.clone())
        };
        let sha = fresh(&full);
        let add = fresh(&addnet);
        let Some(sha) = sha else { continue };
        let autov3 = if rec.format == Some(Format::Safetensors) {
            add.map(|a| a[..12].to_owned())
        } else {
            Some(sha[..12].to_owned())
        };
        let h = RecordHashes {
            autov2: Some(sha[..10].to_owned()),
            sha256: Some(sha),
            autov1: None,
            autov3,
            blake3: None,
            source: Some("a1111_cache".to_owned()),
        };
        cache.set_hashes(&rec.path, &h)?;
        done.push(rec.path.clone());
    }
    Ok(done)
}
