//! Model containers opened as a [`TensorIndex`]: every tensor's name, dtype, shape and byte
//! range, plus the container's metadata, without reading tensor data.
//!
//! Supported containers: safetensors (header only), PyTorch zip archives (`.ckpt .pt .pth .bin`,
//! through the restricted reader of `danlu-pickle`), PyTorch's legacy pre-zip format, GGUF
//! headers and diffusers model folders.
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
use std::path::PathBuf;

mod error;
mod torch;

pub use error::{Error, Result};

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
/// # Errors
/// When the file cannot be read or is not a supported container; the error names the file and
/// what was wrong.
pub fn read_index(path: impl AsRef<std::path::Path>) -> Result<TensorIndex> {
    let path = path.as_ref();
    Err(Error::Unsupported {
        path: path.to_path_buf(),
        reason: "no reader yet".into(),
    })
}
