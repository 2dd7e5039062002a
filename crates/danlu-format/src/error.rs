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
    /// Opening or reading the file (or folder) failed.
    #[error("`{}`: {action}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`opening`, `reading 8 bytes at offset 0`, ...).
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no bytes at all.
    #[error("`{}`: file is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before a structure that its header announces.
    #[error("`{}`: file is truncated: {what} needs {expected} bytes at offset {offset}, the file has {actual}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (`safetensors header length`, `GGUF tensor info`, ...).
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes needed from `offset` on.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// A safetensors header length beyond the reference limit.
    #[error("`{}`: safetensors header is {len} bytes, limit is {max}", path.display())]
    HeaderTooLarge {
        /// The file.
        path: PathBuf,
        /// Header length the file claims.
        len: u64,
        /// The limit (100 MB, as the `safetensors` crate).
        max: u64,
    },
    /// A safetensors header length that runs past the end of the file.
    #[error("`{}`: header length {len} exceeds the file size {size}", path.display())]
    HeaderPastEnd {
        /// The file.
        path: PathBuf,
        /// Header length the file claims (without the 8 length bytes).
        len: u64,
        /// Size of the file.
        size: u64,
    },
    /// A header that is not what the format requires (not UTF-8, not JSON, wrong structure).
    #[error("`{}`: invalid {format} header at offset {offset}: {reason}", path.display())]
    InvalidHeader {
        /// The file.
        path: PathBuf,
        /// The container (`safetensors`, `GGUF`, `model_index.json`, ...).
        format: &'static str,
        /// Where the problem is (start of the header when not known more precisely).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A JSON document that does not parse.
    #[error("`{}`: {what} is not valid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// Which document (`safetensors header`, `config.json`, ...).
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A tensor whose element type the reader does not know or cannot represent.
    #[error("`{}`: tensor `{tensor}` has unsupported dtype `{dtype}`", path.display())]
    UnknownDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype as stored.
        dtype: String,
    },
    /// A tensor whose byte length does not match its shape and dtype.
    #[error("`{}`: tensor `{tensor}` has {actual} bytes, its shape and dtype need {expected}", path.display())]
    TensorSize {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Bytes its shape and dtype need.
        expected: u64,
        /// Bytes its offsets give.
        actual: u64,
    },
    /// A tensor whose data does not start where the previous one ends (a hole or an overlap),
    /// or whose end is before its start.
    #[error("`{}`: tensor `{tensor}` data offsets [{begin}, {end}] are invalid: tensors must cover the data contiguously and the next one starts at {expected}", path.display())]
    TensorOffsets {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its start, relative to the data section.
        begin: u64,
        /// Its end, relative to the data section.
        end: u64,
        /// Where it should start.
        expected: u64,
    },
    /// A tensor whose data lies beyond the end of the file.
    #[error("`{}`: tensor `{tensor}` ends at byte {end}, past the end of the file ({size} bytes)", path.display())]
    TensorOutOfRange {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Absolute end offset of its data.
        end: u64,
        /// Size of the file.
        size: u64,
    },
    /// Bytes after the last tensor that no tensor covers (the `safetensors` crate rejects them).
    #[error("`{}`: {extra} bytes after the last tensor's data (which ends at byte {end})", path.display())]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Absolute end of the last tensor.
        end: u64,
        /// Bytes left over.
        extra: u64,
    },
    /// A count or length in a header that cannot fit in the rest of the file.
    #[error("`{}`: {what} at offset {offset} is {count}, more than the {remaining} bytes left in the file allow", path.display())]
    CountTooLarge {
        /// The file.
        path: PathBuf,
        /// What was counted (`GGUF tensor count`, `string length`, ...).
        what: &'static str,
        /// Where the count is.
        offset: u64,
        /// The count.
        count: u64,
        /// Bytes left after it.
        remaining: u64,
    },
    /// A GGUF version this reader does not support.
    #[error("`{}`: GGUF version {version} is not supported (versions 2 and 3 are)", path.display())]
    GgufVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// A diffusers folder whose weights were not found.
    #[error("`{}`: no weights found ({reason})", path.display())]
    NoWeights {
        /// The folder.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// Writing a safetensors file failed or was used out of order.
    #[error("`{}`: {reason}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A file-system operation of the writer failed.
    #[error(transparent)]
    Fs(#[from] danlu_fs::Error),
    /// A zip archive (PyTorch's container since 1.6) whose structure is broken.
    #[error("`{}`: invalid zip archive at offset {offset}: {reason}", path.display())]
    Zip {
        /// The file.
        path: PathBuf,
        /// Where the problem is.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The object pickle of a PyTorch file cannot be read (malformed, truncated, or a pickle
    /// bomb stopped by the reader's limits).
    #[error("`{}`: pickle `{member}` is unreadable", path.display())]
    Pickle {
        /// The file.
        path: PathBuf,
        /// The zip member, or `pickle N at offset X` in a legacy file.
        member: String,
        /// Why, with the opcode's offset.
        #[source]
        source: danlu_pickle::Error,
    },
    /// A file that is a zip archive or a pickle but not a PyTorch checkpoint; what its pickles
    /// would import is still reported.
    #[error("`{}`: not a PyTorch file ({reason}); {}", path.display(), crate::torch::verdict(safety))]
    NotTorch {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
        /// The verdict on every pickle found.
        safety: Box<danlu_pickle::Safety>,
    },
    /// A tensor storage of a PyTorch file that is missing, out of range, or cannot be mapped.
    #[error("`{}`: storage `{key}`: {reason}", path.display())]
    Storage {
        /// The file.
        path: PathBuf,
        /// The storage key (`data/<key>` in a zip archive).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A PyTorch file written on a big-endian machine; danlu does not byte-swap.
    #[error("`{}`: PyTorch data is big-endian; only little-endian files are supported", path.display())]
    BigEndian {
        /// The file.
        path: PathBuf,
    },
}

/// Result of reading a model container.
pub type Result<T> = std::result::Result<T, Error>;
