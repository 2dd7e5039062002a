//! Errors of converting a model file.

use std::path::PathBuf;

/// Errors of a conversion. Each names the file it concerns; nothing is left under the output's
/// final name when one occurs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source (or the VAE to bake) could not be opened as a model container.
    #[error("`{}`: cannot read the tensor index", path.display())]
    Index {
        /// The file.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: danlu_format::Error,
    },
    /// Reading tensor bytes from a source failed.
    #[error("`{}`: {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`reading tensor `x``, ...).
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A tensor whose bytes cannot be rebuilt (unknown storage compression, quantized data, an
    /// element type without a fixed size, a stride layout out of range).
    #[error("`{}`: tensor `{tensor}` cannot be rebuilt: {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's key.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// The requested conversion does not apply to this file.
    #[error("`{}`: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The output would replace the source or a file that already exists.
    #[error("`{}`: {reason}", path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// Why it cannot be written.
        reason: String,
    },
    /// Writing the output failed.
    #[error("`{}`: cannot write the output", path.display())]
    Write {
        /// The output path.
        path: PathBuf,
        /// The writer's error.
        #[source]
        source: danlu_format::Error,
    },
    /// Hashing the source failed.
    #[error("`{}`: cannot hash the source", path.display())]
    Hash {
        /// The file.
        path: PathBuf,
        /// The hasher's error.
        #[source]
        source: danlu_hash::Error,
    },
    /// `verify` found the output different from what the source should have become.
    #[error("`{}`: verification failed: {reason}", path.display())]
    Verify {
        /// The output file.
        path: PathBuf,
        /// The first difference found.
        reason: String,
    },
}

/// Result of conversions.
pub type Result<T> = std::result::Result<T, Error>;
