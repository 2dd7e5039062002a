//! Sidecars the A1111 ecosystem reads beside a model: `NAME.civitai.info`, `NAME.preview.png`
//! and `NAME.json`.

use crate::civitai::UserMetadata;
use crate::client::{CivitaiInfo, Client, Origin};
use crate::error::Result;
use danlu_fs::{Overwrite, write_atomic};
use std::path::{Path, PathBuf};
use tracing::warn;

/// Largest preview image fetched.
const PREVIEW_LIMIT: usize = 32 << 20;

/// `dir/STEM.suffix` for a model `dir/STEM.EXT`.
pub fn sidecar_path(model: &Path, suffix: &str) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}{suffix}"))
}

/// Writes the sidecars of a Civitai version beside `model` and returns their paths.
///
/// `NAME.civitai.info` is the version JSON as the API returned it (the Civitai Helper
/// extension's format) and is replaced when it exists; `NAME.json` (A1111 user metadata) and
/// `NAME.preview.png` are never overwritten, since the user may have edited or chosen them.
/// A preview that cannot be fetched is skipped with a warning. Civitai Helper names the preview
/// `.preview.png` whatever the image's format; A1111 opens it by content.
///
/// # Errors
/// When a sidecar cannot be written (the model itself is left as it is).
pub async fn write_sidecars(
    client: &Client,
    model: &Path,
    info: &CivitaiInfo,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let info_path = sidecar_path(model, ".civitai.info");
    let text = serde_json::to_vec_pretty(&info.version_json).unwrap_or_default();
    written.push(write_atomic(&info_path, &text, Overwrite::Replace)?);

    let meta_path = sidecar_path(model, ".json");
    if !meta_path.exists() {
        let meta = UserMetadata::from_version(
            &info.version,
            info.model.as_ref().and_then(|m| m.description.as_deref()),
        );
        let text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        written.push(write_atomic(&meta_path, &text, Overwrite::Never)?);
    }

    let preview_path = sidecar_path(model, ".preview.png");
    if !preview_path.exists()
        && let Some(url) = info.version.preview_url()
    {
        match client.get_bytes(url, Origin::Civitai, PREVIEW_LIMIT).await {
            Ok(bytes) => written.push(write_atomic(&preview_path, &bytes, Overwrite::Never)?),
            Err(e) => warn!(url, error = %e, "preview not fetched"),
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_replace_only_the_last_extension() {
        let p = Path::new("/m/Counterfeit-V2.5_pruned.safetensors");
        assert_eq!(
            sidecar_path(p, ".civitai.info"),
            Path::new("/m/Counterfeit-V2.5_pruned.civitai.info")
        );
        assert_eq!(
            sidecar_path(p, ".preview.png"),
            Path::new("/m/Counterfeit-V2.5_pruned.preview.png")
        );
    }
}
