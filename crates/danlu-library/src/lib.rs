//! A models folder kept in order: library roots and their layouts, a SQLite cache filled by an
//! incremental scan, sorting files into their folders, VAE pairing by A1111's rules, and a
//! doctor that finds what makes generations fail.
//!
//! - [`root`]: [`Root`] (A1111, ComfyUI or bare folder; `extra_model_paths.yaml`), and
//!   [`choose_root`] (flag, then environment value, then config file, all passed in).
//! - [`cache`]: [`Cache`], one SQLite file per root, and [`ModelRecord`].
//! - [`scan`](mod@scan): [`scan()`], incremental by (path, size, mtime), hashing on all cores,
//!   importing A1111's `cache.json`.
//! - [`sort`](mod@sort): [`sort()`], filing files into the root without ever overwriting.
//! - [`vae`]: [`resolve_vae`], which VAE A1111 would use for a checkpoint and why.
//! - [`doctor`](mod@doctor): [`doctor()`], findings with their fixes.
//! - [`labels`]: style categories and tags.
//!
//! ```no_run
//! use danlu_library::{Cache, Root, ScanOptions, scan};
//! use std::sync::atomic::AtomicBool;
//! let root = Root::open("/sd/stable-diffusion-webui".as_ref())?;
//! let cache = Cache::open(&root.cache_path())?;
//! let report = scan(&root, &cache, &ScanOptions::default(), &danlu_types::NoProgress, &AtomicBool::new(false))?;
//! println!("{} files, {} read", report.files, report.read);
//! # Ok::<(), danlu_library::Error>(())
//! ```

pub mod cache;
pub mod doctor;
pub mod error;
pub mod labels;
pub mod root;
pub mod scan;
pub mod sort;
pub mod vae;

pub use cache::{Cache, ModelRecord, RecordHashes};
pub use doctor::{DoctorReport, Finding, doctor};
pub use error::{Error, Result};
pub use labels::Category;
pub use root::{Config, Layout, Root, RootSource, choose_root, parse_config};
pub use scan::{ScanOptions, ScanReport, scan};
pub use sort::{SortMode, SortOptions, SortReport, sort};
pub use vae::{VaeChoice, VaeReport, resolve_vae};

/// Finds one model by name (file name or name without extension) or by hash (a full hash or a
/// prefix of at least 8 hex digits of sha256, AutoV1, AutoV2, AutoV3 or BLAKE3).
///
/// # Errors
/// [`Error::NotFound`] or [`Error::Ambiguous`].
pub fn find_model<'a>(
    records: &'a [ModelRecord],
    query: &str,
    root: &std::path::Path,
) -> Result<&'a ModelRecord> {
    let by_path: Vec<&ModelRecord> = records
        .iter()
        .filter(|r| {
            r.path == query
                || std::path::Path::new(&r.path).ends_with(query)
                || r.name == query
                || std::path::Path::new(&r.path)
                    .file_name()
                    .is_some_and(|n| n == query)
        })
        .collect();
    let matches = if by_path.is_empty() {
        records
            .iter()
            .filter(|r| r.hashes.as_ref().is_some_and(|h| h.matches(query)))
            .collect()
    } else {
        by_path
    };
    match matches.as_slice() {
        [] => Err(Error::NotFound {
            query: query.to_owned(),
            root: root.to_path_buf(),
        }),
        [one] => Ok(one),
        many => Err(Error::Ambiguous {
            query: query.to_owned(),
            matches: many.iter().map(|r| r.path.clone()).collect(),
        }),
    }
}
