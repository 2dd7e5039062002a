//! PyTorch containers: the zip archive (`*/data.pkl`, `*/data/N`) and the legacy pre-zip format.

use crate::{Error, Result, TensorIndex};
use std::path::Path;

/// Reads a PyTorch zip archive's tensor index through the restricted pickle reader.
pub(crate) fn read_zip(path: &Path) -> Result<TensorIndex> {
    Err(Error::Unsupported {
        path: path.to_path_buf(),
        reason: "PyTorch zip reader not built yet".into(),
    })
}

/// Reads a legacy (pre-zip) PyTorch file's tensor index through the restricted pickle reader.
pub(crate) fn read_legacy(path: &Path) -> Result<TensorIndex> {
    Err(Error::Unsupported {
        path: path.to_path_buf(),
        reason: "legacy PyTorch reader not built yet".into(),
    })
}
