//! The library as the server sees it: the root (created in A1111 layout when missing), its
//! SQLite cache, and a snapshot of its records that readers share while a rescan runs.

use crate::error::{ApiError, ApiResult};
use crate::{Error, Result};
use axum::http::StatusCode;
use danlu_library::{Cache, ModelRecord, RecordHashes, Root, ScanOptions};
use danlu_types::{Kind, NoProgress};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// Creates `path` in A1111 layout when it does not exist (`models/Stable-diffusion`,
/// `models/VAE`, `models/Lora`, `embeddings`, ...), then opens it.
///
/// # Errors
/// [`Error::Root`] when a folder cannot be made or the root cannot be opened.
pub fn prepare_root(path: &Path) -> Result<Root> {
    let root_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Root {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        // `models/Stable-diffusion` is what makes `detect_layout` see an A1111 install.
        fs_err::create_dir_all(path.join("models").join("Stable-diffusion"))
            .map_err(|e| root_err(Box::new(e)))?;
        let root = Root::open(path).map_err(|e| root_err(Box::new(e)))?;
        for folder in root.folders() {
            fs_err::create_dir_all(&folder.path).map_err(|e| root_err(Box::new(e)))?;
        }
    }
    Root::open(path).map_err(|e| root_err(Box::new(e)))
}

/// How long an upload that was never filed is kept (`ROOT/.danlu/uploads`).
const UPLOAD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes uploads older than a day that were never filed; returns how many.
pub(crate) fn remove_stale_uploads(root: &Root) -> usize {
    let dir = root.state_dir().join("uploads");
    let Ok(entries) = fs_err::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UPLOAD_MAX_AGE);
        if old && fs_err::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The root, its cache and the current records.
#[derive(Debug)]
pub(crate) struct Library {
    pub(crate) root: Root,
    cache: Mutex<Cache>,
    records: RwLock<Arc<Vec<ModelRecord>>>,
    /// Set when the background hasher should scan again (new files after a refresh).
    hash_wanted: Mutex<bool>,
    hash_signal: Condvar,
}

/// Publishes the library's records each time the background scan has stored one more hash
/// (the scan's own `hashing` task advances once per file stored; the per-file tasks of
/// `danlu_hash::hash_file` are told apart by their longer label).
struct PublishOnHash<'a> {
    library: &'a Library,
    task: Mutex<Option<danlu_types::TaskId>>,
    next: AtomicU64,
}

impl danlu_types::Reporter for PublishOnHash<'_> {
    fn start(&self, label: &str, _total: Option<u64>) -> danlu_types::TaskId {
        let id = danlu_types::TaskId(self.next.fetch_add(1, Ordering::Relaxed));
        if label == "hashing"
            && let Ok(mut t) = self.task.lock()
        {
            *t = Some(id);
        }
        id
    }

    fn advance(&self, task: danlu_types::TaskId, _by: u64) {
        let ours = self.task.lock().is_ok_and(|t| *t == Some(task));
        if ours && let Err(e) = self.library.publish() {
            tracing::warn!(error = %e, "publishing hashed records failed");
        }
    }

    fn finish(&self, _task: danlu_types::TaskId) {}
}

impl Library {
    /// Opens the cache of `root`; the records stay empty until [`Library::refresh`].
    pub(crate) fn open(root: Root) -> Result<Self> {
        let cache = Cache::open(&root.cache_path()).map_err(|e| Error::Root {
            path: root.path.clone(),
            source: Box::new(e),
        })?;
        Ok(Self {
            root,
            cache: Mutex::new(cache),
            records: RwLock::new(Arc::new(Vec::new())),
            hash_wanted: Mutex::new(true),
            hash_signal: Condvar::new(),
        })
    }

    /// Starts the background hasher: the library's incremental scan with hashing on (A1111
    /// hashes checkpoints lazily; danlu hashes them all once, in the background), on its own
    /// cache connection so that requests never wait for it, one file at a time, publishing the
    /// records after each file. It scans again after every [`Library::want_hashes`], and ends
    /// when `stop` is set.
    pub(crate) fn start_hashing(self: &Arc<Self>, stop: Arc<AtomicBool>) -> Result<()> {
        let library = Arc::clone(self);
        std::thread::Builder::new()
            .name("danlu-hash".to_owned())
            .spawn(move || library.hash_loop(&stop))
            .map(|_| ())
            .map_err(Error::Serve)
    }

    /// Asks the background hasher to scan again (after a refresh found new files).
    pub(crate) fn want_hashes(&self) {
        let mut wanted = match self.hash_wanted.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *wanted = true;
        self.hash_signal.notify_all();
    }

    /// Wakes the background hasher so that it sees `stop`.
    pub(crate) fn stop_hashing(&self) {
        self.want_hashes();
    }

    fn hash_loop(&self, stop: &AtomicBool) {
        let cache = match Cache::open(&self.root.cache_path()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "background hashing disabled: cache not opened");
                return;
            }
        };
        let opts = ScanOptions {
            hash: true,
            threads: 1,
            import_a1111: true,
        };
        loop {
            {
                let mut wanted = match self.hash_wanted.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                while !*wanted && !stop.load(Ordering::SeqCst) {
                    wanted = match self.hash_signal.wait(wanted) {
                        Ok(g) => g,
                        Err(p) => p.into_inner(),
                    };
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                *wanted = false;
            }
            let reporter = PublishOnHash {
                library: self,
                task: Mutex::new(None),
                next: AtomicU64::new(1),
            };
            match danlu_library::scan(&self.root, &cache, &opts, &reporter, stop) {
                Ok(report) => {
                    if report.hashed > 0 {
                        tracing::info!(files = report.hashed, "hashed in the background");
                    }
                    for failure in &report.errors {
                        tracing::debug!(path = %failure.path, error = %failure.error, "scan");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "background hashing failed"),
            }
            if let Err(e) = self.publish() {
                tracing::warn!(error = %e, "publishing hashed records failed");
            }
        }
    }

    /// The cached hashes of `path` when they are still those of the file as it is now.
    pub(crate) fn fresh_hashes(&self, path: &Path) -> Option<RecordHashes> {
        let (size, mtime) = danlu_library::scan::stat_model(path).ok()?;
        let cache = self.cache.lock().ok()?;
        let key = path.display().to_string();
        cache.fresh_sha256(&key, size, mtime).ok()??;
        cache.get(&key).ok()??.hashes
    }

    /// Stores the hashes of a library file (computed when it was loaded) and publishes them.
    pub(crate) fn store_hashes(&self, path: &Path, hashes: &RecordHashes) -> ApiResult<()> {
        {
            let cache = self.cache.lock().map_err(|_| poisoned())?;
            cache
                .set_hashes(&path.display().to_string(), hashes)
                .map_err(|e| ApiError::internal(&e))?;
        }
        self.publish()
    }

    /// Reads every record from the cache and makes them the current ones.
    fn publish(&self) -> ApiResult<()> {
        let cache = self.cache.lock().map_err(|_| poisoned())?;
        let mut all = cache.all().map_err(|e| ApiError::internal(&e))?;
        drop(cache);
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let all = Arc::new(all);
        match self.records.write() {
            Ok(mut w) => *w = all,
            Err(poisoned) => *poisoned.into_inner() = all,
        }
        Ok(())
    }

    /// The records as of the last refresh.
    pub(crate) fn records(&self) -> Arc<Vec<ModelRecord>> {
        match self.records.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Rescans the root without hashing (unchanged files are only stat'ed) and publishes the
    /// new records. Blocking: call it from `spawn_blocking`.
    pub(crate) fn refresh(&self) -> ApiResult<Arc<Vec<ModelRecord>>> {
        let cache = self.cache.lock().map_err(|_| poisoned())?;
        let opts = ScanOptions {
            hash: false,
            threads: 1,
            import_a1111: true,
        };
        danlu_library::scan(
            &self.root,
            &cache,
            &opts,
            &NoProgress,
            &AtomicBool::new(false),
        )
        .map_err(|e| ApiError::internal(&e))?;
        let mut all = cache.all().map_err(|e| ApiError::internal(&e))?;
        drop(cache);
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let all = Arc::new(all);
        match self.records.write() {
            Ok(mut w) => *w = Arc::clone(&all),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&all),
        }
        if all
            .iter()
            .any(|r| r.error.is_none() && r.sha256().is_none())
        {
            self.want_hashes();
        }
        Ok(all)
    }

    /// The folder where files of `kind` go.
    pub(crate) fn folder(&self, kind: Kind) -> Option<PathBuf> {
        self.root.folder(kind)
    }
}

fn poisoned() -> ApiError {
    ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, "cache lock poisoned")
}

/// Whether a record is a checkpoint A1111 would list (`models/Stable-diffusion`, not a
/// `*.vae.*` file kept there).
pub(crate) fn is_checkpoint(r: &ModelRecord) -> bool {
    matches!(r.kind(), Kind::Checkpoint | Kind::DiffusionModel)
        && !danlu_library::root::is_vae_beside_checkpoint(r.as_path())
}

/// A record's name relative to the folder of its kind, `/`-separated (A1111
/// `CheckpointInfo.name`: the path relative to the models folder).
pub(crate) fn relative_name(root: &Root, r: &ModelRecord, kind: Kind) -> String {
    let p = r.as_path();
    let rel = root
        .folders()
        .iter()
        .filter(|f| f.kinds.contains(&kind))
        .find_map(|f| p.strip_prefix(&f.path).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.file_name().map(PathBuf::from).unwrap_or_default());
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A1111's checkpoint title: `NAME [SHORTHASH]` when the sha256 is known, else `NAME`
/// (`modules/sd_models.py` `CheckpointInfo`).
pub(crate) fn checkpoint_title(root: &Root, r: &ModelRecord) -> String {
    let name = relative_name(root, r, Kind::Checkpoint);
    match r.hashes.as_ref().and_then(|h| h.autov2.as_deref()) {
        Some(short) => format!("{name} [{short}]"),
        None => name,
    }
}

/// A1111's `model_name`: the relative name without extension, separators made `_`.
pub(crate) fn checkpoint_model_name(root: &Root, r: &ModelRecord) -> String {
    let name = relative_name(root, r, Kind::Checkpoint).replace('/', "_");
    match name.rsplit_once('.') {
        Some((stem, _)) => stem.to_owned(),
        None => name,
    }
}

/// Rejects names that try to leave the library (`../`, absolute paths, NUL).
pub(crate) fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let bad = name.contains('\0')
        || name.starts_with('/')
        || name.starts_with('\\')
        || name.split(['/', '\\']).any(|part| part == "..");
    if bad {
        return Err(ApiError::invalid(format!(
            "{what} `{name}` is not a name inside the library"
        )));
    }
    Ok(())
}

/// Finds a checkpoint by A1111 title (`NAME [HASH]`), relative name, model name, file name or
/// hash, the way A1111 `get_closet_checkpoint_match` does (exact title first).
pub(crate) fn find_checkpoint<'a>(
    root: &Root,
    records: &'a [ModelRecord],
    query: &str,
) -> ApiResult<&'a ModelRecord> {
    check_name("checkpoint", query)?;
    let checkpoints: Vec<&ModelRecord> = records.iter().filter(|r| is_checkpoint(r)).collect();
    if let Some(r) = checkpoints
        .iter()
        .find(|r| checkpoint_title(root, r) == query)
    {
        return Ok(r);
    }
    // A title whose hash part is stale or missing: match on the name part.
    let name = match query.rsplit_once(" [") {
        Some((n, h)) if h.ends_with(']') => n,
        _ => query,
    };
    if let Some(r) = checkpoints.iter().find(|r| {
        relative_name(root, r, Kind::Checkpoint) == name
            || checkpoint_model_name(root, r) == name
            || r.name == name
    }) {
        return Ok(r);
    }
    let owned: Vec<ModelRecord> = checkpoints.iter().map(|r| (*r).clone()).collect();
    match danlu_library::find_model(&owned, name, &root.path) {
        Ok(found) => checkpoints
            .iter()
            .find(|r| r.path == found.path)
            .copied()
            .ok_or_else(|| ApiError::not_found(format!("checkpoint `{query}` not found"))),
        Err(danlu_library::Error::Ambiguous { matches, .. }) => Err(ApiError::invalid(format!(
            "checkpoint `{query}` is ambiguous: {}",
            matches.join(", ")
        ))),
        Err(_) => Err(ApiError::not_found(format!(
            "checkpoint `{query}` not found; put checkpoints in `{}` and refresh",
            root.folder(Kind::Checkpoint)
                .unwrap_or_else(|| root.path.clone())
                .display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_root_is_created_in_a1111_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sd");
        let root = prepare_root(&path).unwrap();
        assert_eq!(root.layout, danlu_library::Layout::A1111);
        assert!(path.join("models/Stable-diffusion").is_dir());
        assert!(path.join("models/Lora").is_dir());
        assert!(path.join("models/VAE").is_dir());
        assert!(path.join("embeddings").is_dir());
    }

    #[test]
    fn names_leaving_the_library_are_refused() {
        assert!(check_name("checkpoint", "../x.safetensors").is_err());
        assert!(check_name("checkpoint", "a/../../x").is_err());
        assert!(check_name("checkpoint", "/etc/passwd").is_err());
        assert!(check_name("checkpoint", "sub/x.safetensors [abc]").is_ok());
    }
}
