//! Errors of generation jobs.

use std::path::PathBuf;

/// What can go wrong loading a model or running a job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file could not be read or identified.
    #[error("reading `{path}`: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<danlu_format::Error>,
    },
    /// A network shapes file is unreadable or malformed.
    #[error("model shapes `{path}`: {reason}")]
    Shapes {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The checkpoint is of a family the engine cannot run.
    #[error(
        "`{path}` is identified as `{base}`; only SD 1.x and SD 2.x checkpoints can generate yet"
    )]
    Unsupported {
        /// The checkpoint.
        path: PathBuf,
        /// Its base as `inspect` names it.
        base: String,
    },
    /// A file could not be hashed.
    #[error("hashing `{path}`: {source}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: danlu_hash::Error,
    },
    /// The engine failed (bad request, network mismatch, cancelled).
    #[error(transparent)]
    Engine(Box<danlu_diffusion::Error>),
    /// An image could not be decoded or encoded.
    #[error("image: {0}")]
    Image(String),
    /// The PNG parameters could not be written.
    #[error(transparent)]
    PngInfo(Box<danlu_pnginfo::Error>),
    /// A file system operation failed.
    #[error("`{path}`: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<danlu_diffusion::Error> for Error {
    fn from(e: danlu_diffusion::Error) -> Self {
        Self::Engine(Box::new(e))
    }
}

impl From<danlu_pnginfo::Error> for Error {
    fn from(e: danlu_pnginfo::Error) -> Self {
        Self::PngInfo(Box::new(e))
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
