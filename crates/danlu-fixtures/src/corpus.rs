//! The shared corpus of real files (`../shared/corpus` beside the repository).

use std::path::PathBuf;

/// The corpus folder: `$DANLU_CORPUS` when set, else `../shared/corpus` beside the repository.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("DANLU_CORPUS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus"
    ))
}

/// A file of the corpus, e.g. `corpus::path("models/EasyNegative.safetensors")`.
///
/// # Panics
/// When the file does not exist: a missing corpus must fail the test and name the path.
#[allow(clippy::panic)] // test support: a missing corpus file is a test failure by design
pub fn path(rel: &str) -> PathBuf {
    let p = root().join(rel);
    if !p.exists() {
        panic!(
            "corpus file `{}` is missing (set DANLU_CORPUS or lay out ../shared/corpus)",
            p.display()
        );
    }
    p
}
