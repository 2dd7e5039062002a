//! Model containers opened as a [`TensorIndex`]: every tensor's name, dtype, shape and byte
//! range, plus the container's metadata, without reading tensor data.
//!
//! Supported containers: safetensors (header only), PyTorch zip archives (`.ckpt .pt .pth .bin`,
//! through the restricted reader of `danlu-pickle`), PyTorch's legacy pre-zip format, GGUF
//! headers and diffusers model folders. [`read_index`] picks the reader from the first bytes.
//!
//! [`SafetensorsWriter`] writes safetensors files tensor by tensor, in the reference layout,
//! through an atomic temporary file.
//!
//! ```no_run
//! let index = danlu_format::read_index("model.safetensors")?;
//! for t in &index.tensors {
//!     println!("{} {:?} {:?}", t.name, t.dtype, t.shape);
//! }
//! # Ok::<(), danlu_format::Error>(())
//! ```

use danlu_types::{Dtype, Format};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

mod diffusers;
mod error;
mod gguf;
pub mod safetensors;
mod torch;
mod writer;

pub use error::{Error, Result};
pub use writer::{SafetensorsWriter, TensorSpec};

/// Where one tensor's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataRef {
    /// Index into [`TensorIndex::files`].
    pub file: usize,
    /// Absolute byte offset of the first element in that file.
    pub offset: u64,
    /// Number of bytes from `offset` that hold the tensor (for strided tensors, the span).
    pub len: u64,
    /// Element strides when the tensor is not contiguous row-major (PyTorch views); `None` when
    /// it is.
    pub strides: Option<Vec<u64>>,
    /// For GGUF, the block-quantisation type name (`Q4_0`, `Q8_0`, `Q4_K`, ...); `None` otherwise.
    pub quant: Option<String>,
}

/// One tensor of a model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// The full key, as stored (for pickles: dotted path through nested dicts and lists, e.g.
    /// `state_dict.model.diffusion_model.input_blocks.0.0.weight`; for diffusers folders:
    /// `component/key`, e.g. `unet/conv_in.weight`).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for scalars).
    pub shape: Vec<u64>,
    /// Location of the data.
    pub data: DataRef,
}

impl TensorInfo {
    /// Number of scalar elements (product of the shape; 1 for scalars).
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Every tensor of a model file (or folder) and the metadata that came with it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TensorIndex {
    /// The container, `None` only for an index built by hand.
    pub format: Option<Format>,
    /// Files the tensors' bytes live in ([`DataRef::file`] indexes this).
    pub files: Vec<PathBuf>,
    /// The tensors, sorted by name.
    pub tensors: Vec<TensorInfo>,
    /// String metadata: safetensors `__metadata__`, GGUF key/values rendered as text,
    /// `model_index.json`/`config.json` fields of diffusers folders.
    pub metadata: BTreeMap<String, String>,
    /// Non-tensor leaves of a pickle (ints, floats, strings, bools under their dotted path, e.g.
    /// `global_step`, `name`, `layer_structure`), rendered as JSON.
    pub values: BTreeMap<String, serde_json::Value>,
    /// What the restricted pickle reader saw, for PyTorch containers.
    pub pickle: Option<danlu_pickle::Safety>,
    /// Size in bytes of the container's header (safetensors: 8 + JSON length).
    pub header_len: u64,
}

impl TensorIndex {
    /// Looks a tensor up by its exact name.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.tensors.get(i))
    }

    /// Sorts tensors by name so that [`get`](Self::get) works; every reader calls this.
    pub fn sort(&mut self) {
        self.tensors.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// Opens any supported model file or folder, choosing the reader from its first bytes (not its
/// extension) and, for folders, from `model_index.json` or `config.json`.
///
/// Sniffing, in order: a folder is a diffusers folder; `PK\x03\x04` is a PyTorch zip archive;
/// `GGUF` is GGUF; `{` at offset 8 is safetensors (checked before pickles, since a header length
/// may start with the byte 0x80);
/// then a first byte `\x80` (pickle protocol 2+) is PyTorch's legacy format, whose reader checks
/// the magic-number pickle (`\x80\x02\x8a\x0a` + `0x1950a86a20f9469cfc6c`). Only headers are
/// read; memory does not grow with the size of the tensor data.
///
/// # Errors
/// When the file cannot be read or is not a supported container; the error names the file and
/// what was wrong (empty, truncated, header length past the end, invalid header, ...).
pub fn read_index(path: impl AsRef<std::path::Path>) -> Result<TensorIndex> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "reading file information".into(),
        source,
    })?;
    let index = if meta.is_dir() {
        diffusers::read_diffusers(path)?
    } else {
        read_index_file(path)?
    };
    tracing::debug!(
        path = %path.display(),
        format = ?index.format,
        tensors = index.tensors.len(),
        header_len = index.header_len,
        "read tensor index"
    );
    Ok(index)
}

/// [`read_index`] for a file (not a folder).
pub(crate) fn read_index_file(path: &Path) -> Result<TensorIndex> {
    let mut file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "opening".into(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            action: "reading file information".into(),
            source,
        })?
        .len();
    if size == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    let head = read_at(path, &mut file, 0, size.min(16))?;
    match head.as_slice() {
        [b'P', b'K', 3, 4, ..] => torch::read_zip(path),
        [b'G', b'G', b'U', b'F', ..] => gguf::read_gguf(path, &mut file, size),
        // Before the pickle test: a safetensors header length may well start with the byte
        // 0x80. The legacy torch magic puts 0xf9 at offset 8, never `{`.
        [_, _, _, _, _, _, _, _, b'{', ..] => safetensors::read_safetensors(path, &mut file, size),
        [0x80, ..] => torch::read_legacy(path),
        _ if size < 9 => Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "a model header",
            offset: 0,
            expected: 9,
            actual: size,
        }),
        _ => Err(Error::Unsupported {
            path: path.to_path_buf(),
            reason: format!(
                "first bytes {} match no safetensors, PyTorch, GGUF or diffusers layout",
                head.iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }),
    }
}

/// Reads `len` bytes at `offset`; the caller has checked that they lie within the file.
pub(crate) fn read_at(path: &Path, file: &mut File, offset: u64, len: u64) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        action: format!("reading {len} bytes at offset {offset}"),
        source,
    };
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::new();
    let got = file.take(len).read_to_end(&mut buf).map_err(io)?;
    if (got as u64) < len {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "a header",
            offset,
            expected: len,
            actual: offset + got as u64,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle() {
        // A header of exactly 0x80 bytes: the file's first byte is 0x80, like a pickle's.
        let mut json = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
        json.resize(0x80, b' ');
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        assert_eq!(bytes[0], 0x80);
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&1.5f32.to_le_bytes());
        let f = file_with(&bytes);
        let index = read_index(f.path()).unwrap();
        assert_eq!(index.format, Some(Format::Safetensors));
        assert_eq!(index.tensors.len(), 1);
        assert_eq!(index.tensors[0].data.offset, 8 + 0x80);
    }

    #[test]
    fn empty_file_is_a_clear_error_naming_it() {
        let f = file_with(b"");
        let err = read_index(f.path()).unwrap_err();
        assert!(matches!(err, Error::Empty { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("`{}`: file is empty", f.path().display())
        );
    }

    #[test]
    fn truncated_files_are_errors() {
        // Fewer bytes than any header.
        let err = read_index(file_with(&[7, 0, 0]).path()).unwrap_err();
        assert!(matches!(err, Error::Truncated { actual: 3, .. }), "{err}");
        // A safetensors file cut inside its header.
        let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header[..20]);
        let err = read_index(file_with(&bytes).path()).unwrap_err();
        assert!(matches!(err, Error::HeaderPastEnd { .. }), "{err}");
        // A safetensors file cut inside its data.
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0]);
        let err = read_index(file_with(&bytes).path()).unwrap_err();
        assert!(matches!(err, Error::TensorOutOfRange { .. }), "{err}");
    }

    #[test]
    fn random_bytes_are_unsupported_with_the_first_bytes_shown() {
        let mut x: u32 = 99;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        assert_ne!(bytes[8], b'{');
        let f = file_with(&bytes);
        let err = read_index(f.path()).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        let first = format!("{:02x} {:02x}", bytes[0], bytes[1]);
        assert!(err.to_string().contains(&first), "{err}");
        assert!(err.to_string().contains(&f.path().display().to_string()));
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let err = read_index("/nonexistent/danlu/model.safetensors").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("model.safetensors"));
    }

    #[test]
    fn pickle_and_zip_magic_go_to_the_pytorch_readers() {
        // Whatever the PyTorch readers answer for these stubs, it is not the generic sniffing
        // error: the file was routed to them.
        let zip = file_with(b"PK\x03\x04\x14\x00\x00\x00\x00\x00rest-of-a-zip");
        let legacy = file_with(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
        for f in [zip, legacy] {
            if let Err(e) = read_index(f.path()) {
                assert!(!e.to_string().contains("match no safetensors"), "{e}");
            }
        }
    }
}
