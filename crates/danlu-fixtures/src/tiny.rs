//! The tiny real-architecture SD checkpoints the engine's parity tests use
//! (`crates/danlu-diffusion/tests/reference/model/`, made by
//! `scripts/reference/model_make_tiny.py`), with their `NAME.shapes.json` sidecars so that every
//! loader (CLI, server, reproduce) runs them without flags.

use std::path::{Path, PathBuf};

/// The folder holding the tiny checkpoints.
pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../danlu-diffusion/tests/reference/model")
}

/// Copies tiny checkpoint `name` (`sd1_tiny` or `sd2_tiny`) and its shapes sidecar into `dir`
/// as `as_name.safetensors` + `as_name.shapes.json`, and returns the checkpoint's path.
///
/// # Errors
/// When the files cannot be copied.
pub fn install(name: &str, dir: &Path, as_name: &str) -> std::io::Result<PathBuf> {
    let src = model_dir();
    std::fs::create_dir_all(dir)?;
    let checkpoint = dir.join(format!("{as_name}.safetensors"));
    std::fs::copy(src.join(format!("{name}.safetensors")), &checkpoint)?;
    std::fs::copy(
        src.join(format!("{name}.shapes.json")),
        dir.join(format!("{as_name}.shapes.json")),
    )?;
    Ok(checkpoint)
}
