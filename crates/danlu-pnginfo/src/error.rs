//! Errors of reading and writing generation parameters.

use std::path::PathBuf;

/// What went wrong reading or writing an image's generation parameters.
///
/// Damage inside a readable image (a bad CRC, a truncated chunk, an EXIF offset past the end, a
/// graph with a cycle) is not an error: it becomes a finding in
/// [`GenerationParams::findings`](crate::GenerationParams::findings) next to whatever could be
/// read. Errors are kept for files that cannot be read at all. Functions that take bytes instead
/// of a file name the file `<memory>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("`{}`: cannot read image", path.display())]
    Read {
        /// The image.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: danlu_fs::Error,
    },
    /// The file could not be written.
    #[error("`{}`: cannot write image", path.display())]
    Write {
        /// The image.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: danlu_fs::Error,
    },
    /// The bytes start like no supported image (PNG, JPEG, WebP).
    #[error("`{}`: not a PNG, JPEG or WebP image (first bytes {magic})", path.display())]
    UnknownFormat {
        /// The image.
        path: PathBuf,
        /// The first bytes in hex, at most 8.
        magic: String,
    },
    /// A PNG was expected (for writing parameters) and the bytes are something else.
    #[error("`{}`: not a PNG image (first bytes {magic})", path.display())]
    NotPng {
        /// The image.
        path: PathBuf,
        /// The first bytes in hex, at most 8.
        magic: String,
    },
    /// A PNG to be rewritten is damaged where the rewrite needs it to be whole.
    #[error("`{}`: PNG chunk structure is damaged at offset {offset}: {problem}", path.display())]
    DamagedPng {
        /// The image.
        path: PathBuf,
        /// Byte offset of the damaged chunk.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A text is too large for a PNG chunk.
    #[error("`{}`: text of {len} bytes is over the PNG chunk limit of {max} bytes", path.display())]
    TextTooLarge {
        /// The image.
        path: PathBuf,
        /// Length of the encoded text.
        len: u64,
        /// The limit.
        max: u64,
    },
}

/// Result of reading or writing generation parameters.
pub type Result<T> = std::result::Result<T, Error>;

/// The name used in errors for bytes that did not come from a named file.
pub(crate) fn memory_path() -> PathBuf {
    PathBuf::from("<memory>")
}

/// Up to 8 leading bytes in hex, for error messages.
pub(crate) fn magic_hex(bytes: &[u8]) -> String {
    let n = bytes.len().min(8);
    if n == 0 {
        return "(empty)".to_owned();
    }
    bytes[..n]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
