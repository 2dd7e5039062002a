use std::path::PathBuf;

/// Errors of reading a model container. Each names the file and what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file is not in any supported container format.
    #[error("`{}`: not a supported model file ({reason})", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
}

/// Result of reading a model container.
pub type Result<T> = std::result::Result<T, Error>;
