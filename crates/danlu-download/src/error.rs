//! Errors of resolving and downloading a model.

use std::path::PathBuf;

/// Errors of resolving a source and downloading it. Each names the URL or the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The source text is not one of the accepted forms.
    #[error("`{source_text}`: {reason}")]
    BadSource {
        /// The source as given.
        source_text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The catalogue has no entry of that name.
    #[error("`{name}` is not in the catalogue (see `danlu catalog`)")]
    NotInCatalog {
        /// The name asked for.
        name: String,
    },
    /// The server answered with an error status that retrying will not fix.
    #[error("`{url}`: HTTP {status}: {explanation}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// What the status most likely means for this source.
        explanation: String,
    },
    /// The request failed below HTTP (connection refused, TLS, timeout) and retries ran out.
    #[error("`{url}`: request failed after {attempts} attempt(s)")]
    Request {
        /// The URL asked.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server kept answering 429 or 5xx, or kept dropping the connection.
    #[error("`{url}`: gave up after {attempts} attempt(s); last: {last}")]
    GaveUp {
        /// The URL asked.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure, in words.
        last: String,
    },
    /// Redirects went in a loop or were too many.
    #[error("`{url}`: too many redirects (a loop?)")]
    Redirects {
        /// The URL asked.
        url: String,
    },
    /// The API answered something that is not the documented JSON.
    #[error("`{url}`: unexpected answer: {reason}")]
    Api {
        /// The URL asked.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The server sent more bytes than the size it announced or the source published.
    #[error("`{}`: the server sent more than the announced {expected} bytes", path.display())]
    TooLong {
        /// The part file.
        path: PathBuf,
        /// The size announced.
        expected: u64,
    },
    /// The server announced a size different from the one the source published.
    #[error("`{url}`: the server announces {announced} bytes, the source publishes {expected}")]
    SizeMismatch {
        /// The URL asked.
        url: String,
        /// The size the source (HuggingFace `X-Linked-Size`, Civitai `sizeKB`) publishes.
        expected: u64,
        /// The size the download response announces.
        announced: u64,
    },
    /// The finished file's SHA-256 is not the one the source publishes. The data is kept aside.
    #[error(
        "`{}`: sha256 is {actual}, the source publishes {expected}; the download is kept as `{}` and nothing was filed",
        path.display(), kept.display()
    )]
    HashMismatch {
        /// The final name the file would have had.
        path: PathBuf,
        /// Where the bad data was kept.
        kept: PathBuf,
        /// The published SHA-256.
        expected: String,
        /// The SHA-256 of the data received.
        actual: String,
    },
    /// The final name is taken by a different file.
    #[error("`{}` already exists and is not this download; danlu never overwrites a file", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A file-system operation failed (disk full, permissions, ...).
    #[error("`{}`: {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Atomic writing or moving failed.
    #[error(transparent)]
    Fs(#[from] danlu_fs::Error),
    /// Hashing the existing part file failed.
    #[error(transparent)]
    Hash(#[from] danlu_hash::Error),
    /// Filing the downloaded model into the library failed; the download stays where it is.
    #[error("`{}`: filing into the library failed", path.display())]
    Filing {
        /// The downloaded file, left in place.
        path: PathBuf,
        /// What the filer reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an I/O error with its path and action.
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
