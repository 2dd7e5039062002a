//! Getting models: HuggingFace and Civitai clients that resume, retry, check hashes and write
//! the sidecars the A1111 ecosystem reads; and the lesson's recommended catalogue.
//!
//! A download is resolved first ([`Client::resolve`]: `hf:ORG/REPO/PATH[@REV]`, HuggingFace
//! and Civitai URLs, `civitai:MODEL[@VERSION]`, `catalog:NAME`, plain URLs) into a [`Plan`] that
//! says what the source publishes (size, SHA-256, Civitai metadata). [`Client::download`] then
//! writes `NAME.part` beside a lock, hashes while streaming, resumes with `Range`/`If-Range`,
//! retries 429/5xx/lost connections with backoff, and renames to `NAME` only once the data is
//! complete and matches the published hash. [`fetch`] adds the sidecars and hands the file to a
//! [`Filer`], which places it in the library. Base URLs and tokens are parameters
//! ([`ClientOptions`]); this crate reads no environment variables. It is async (tokio).
//!
//! ```no_run
//! # async fn run() -> danlu_download::Result<()> {
//! use danlu_download::{Client, ClientOptions};
//! let client = Client::new(ClientOptions::default())?;
//! let plan = client.resolve("hf:gsdf/Counterfeit-V2.5/Counterfeit-V2.5_pruned.safetensors").await?;
//! let done = client
//!     .download(&plan, std::path::Path::new("downloads"), None, &danlu_types::NoProgress)
//!     .await?;
//! println!("{} {}", done.path.display(), done.hashes.sha256);
//! # Ok(()) }
//! ```

pub mod catalog;
pub mod civitai;
pub mod client;
pub mod error;
pub mod filename;
#[cfg(feature = "mock-hub")]
pub mod mock;
pub mod sidecar;
pub mod source;
pub mod transfer;

pub use catalog::CatalogEntry;
pub use client::{CivitaiInfo, Client, ClientOptions, Endpoints, Origin, Plan};
pub use error::{Error, Result};
pub use source::Source;
pub use transfer::Downloaded;

use danlu_types::{Base, Kind, Reporter};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Where a downloaded model ended up, as a [`Filer`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filed {
    /// The model's final path.
    pub path: PathBuf,
    /// The sidecars' final paths.
    pub sidecars: Vec<PathBuf>,
    /// The kind the file was identified as.
    pub kind: Kind,
    /// The family it was identified as.
    pub base: Base,
}

/// Places a finished download in the library (identification and folders belong to higher
/// layers, so this crate only calls it).
pub trait Filer: Send + Sync {
    /// Files `model` together with its `sidecars`, which lie beside it.
    ///
    /// # Errors
    /// Whatever prevented filing; the download is then left where it is.
    fn file(
        &self,
        model: &Path,
        sidecars: &[PathBuf],
    ) -> std::result::Result<Filed, Box<dyn std::error::Error + Send + Sync>>;
}

/// A [`Filer`] that leaves files where they were downloaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeaveInPlace;

impl Filer for LeaveInPlace {
    fn file(
        &self,
        model: &Path,
        sidecars: &[PathBuf],
    ) -> std::result::Result<Filed, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Filed {
            path: model.to_path_buf(),
            sidecars: sidecars.to_vec(),
            kind: Kind::Unknown,
            base: Base::Unknown,
        })
    }
}

/// What `danlu download` reports for one source.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    /// The source as given.
    pub source: String,
    /// The URL fetched.
    pub url: String,
    /// The model's final path (after filing).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the data, lower-case hex.
    pub sha256: String,
    /// Whether the SHA-256 matched one the source publishes (false: none was published).
    pub verified: bool,
    /// Bytes that were already on disk from an interrupted run.
    pub resumed_from: u64,
    /// The file was already complete (another process or an earlier run).
    pub already_present: bool,
    /// Sidecars written, final paths.
    pub sidecars: Vec<String>,
    /// Kind as identified by the filer.
    pub kind: Kind,
    /// Family as identified by the filer.
    pub base: Base,
}

/// Resolves, downloads into `dir`, writes Civitai sidecars and files the model.
///
/// # Errors
/// Every error of [`Client::resolve`] and [`Client::download`]; sidecar write failures;
/// [`Error::Filing`] when the filer refuses (the download and its sidecars stay in `dir`).
pub async fn fetch(
    client: &Client,
    source: &str,
    dir: &Path,
    name: Option<&str>,
    filer: &dyn Filer,
    reporter: &dyn Reporter,
) -> Result<DownloadReport> {
    let plan = client.resolve(source).await?;
    // Held through sidecars and filing, so that a second process asked for the same file waits
    // until the first has filed it instead of filing the same file at the same time.
    let _whole = match name.map(str::to_owned).or_else(|| plan.file_name.clone()) {
        Some(n) => {
            std::fs::create_dir_all(dir)
                .map_err(error::io_err(dir, "creating the download folder"))?;
            let lock = transfer::sibling(&dir.join(&n), ".fetch.lock");
            Some(transfer::acquire_lock(&lock, &n).await?)
        }
        None => None,
    };
    let done = client.download(&plan, dir, name, reporter).await?;
    let sidecars = match &plan.civitai {
        Some(info) => sidecar::write_sidecars(client, &done.path, info).await?,
        None => Vec::new(),
    };
    let filed = filer
        .file(&done.path, &sidecars)
        .map_err(|source| Error::Filing {
            path: done.path.clone(),
            source,
        })?;
    Ok(DownloadReport {
        source: plan.source,
        url: plan.url,
        path: filed.path.display().to_string(),
        size: done.size,
        sha256: done.hashes.sha256,
        verified: done.verified,
        resumed_from: done.resumed_from,
        already_present: done.already_present,
        sidecars: filed
            .sidecars
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        kind: filed.kind,
        base: filed.base,
    })
}
