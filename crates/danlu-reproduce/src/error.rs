//! Errors of planning and running a reproduction.

use std::path::PathBuf;

/// What can go wrong reproducing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The library root could not be opened, scanned or read.
    #[error("library `{}`", root.display())]
    Library {
        /// The root.
        root: PathBuf,
        /// Why.
        #[source]
        source: Box<danlu_library::Error>,
    },
    /// The plan has something missing or unsupported, so nothing can be generated.
    #[error("cannot reproduce `{image}`: {}", reasons.join("; "))]
    Blocked {
        /// The image.
        image: String,
        /// Every reason, one per missing file or unsupported parameter.
        reasons: Vec<String>,
    },
    /// Loading the model or generating failed.
    #[error("generating with `{}`", checkpoint.display())]
    Generate {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// Why.
        #[source]
        source: Box<danlu_generate::Error>,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
