//! Errors of the library, each naming the file or folder.

use std::path::PathBuf;

/// Errors of library operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("`{}`: {action}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite cache failed.
    #[error("`{}`: library cache {action}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A YAML file (config, `extra_model_paths.yaml`) could not be parsed.
    #[error("`{}`: not valid YAML", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A JSON file (A1111 `cache.json`, a `.json` sidecar) could not be parsed.
    #[error("`{}`: not valid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// Moving, copying or writing a file failed.
    #[error(transparent)]
    Fs(#[from] danlu_fs::Error),
    /// Hashing a file failed or was cancelled.
    #[error(transparent)]
    Hash(#[from] danlu_hash::Error),
    /// No model in the library matches a name or hash.
    #[error("no model named or hashed `{query}` in the library at `{}`", root.display())]
    NotFound {
        /// What was asked for.
        query: String,
        /// The library root.
        root: PathBuf,
    },
    /// Several models match a name or hash.
    #[error("`{query}` matches {} models: {}", matches.len(), matches.join(", "))]
    Ambiguous {
        /// What was asked for.
        query: String,
        /// The paths that match.
        matches: Vec<String>,
    },
}

/// Result of library operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Maps an I/O error to [`Error::Io`] naming `path`.
pub(crate) fn io_err<'a>(
    path: &'a std::path::Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}
