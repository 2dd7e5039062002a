//! The `pnginfo` report for one image: its path and its parameters, or why it failed.

use crate::{GenerationParams, read_image};
use serde::Serialize;
use std::path::Path;

/// What `danlu pnginfo --json` prints for one image: `path`, then either the `pnginfo` fields of
/// `contracts.md` or `error`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The image as given.
    pub path: String,
    /// The parameters found (`source: "none"` when there are none).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub params: Option<GenerationParams>,
    /// Why the image could not be read; present instead of the parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageReport {
    /// Reads one image; never fails, an unreadable image gives a report with `error`.
    pub fn read(path: &Path) -> Self {
        match read_image(path) {
            Ok(params) => Self {
                path: path.display().to_string(),
                params: Some(params),
                error: None,
            },
            Err(e) => Self {
                path: path.display().to_string(),
                params: None,
                error: Some(e.to_string()),
            },
        }
    }

    /// Whether the image failed to be read.
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }
}

/// Image file extensions a folder walk picks up.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp"];
