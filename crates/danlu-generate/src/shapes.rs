//! Which networks a checkpoint needs: its family and prediction from `inspect`'s identity (and
//! A1111's `.yaml` sidecar), or explicit shapes from a shapes file for checkpoints that are not
//! the released sizes.
//!
//! A shapes file is JSON:
//! `{"family": "sd1", "text": {"width", "intermediate", "heads", "layers"}, "unet":
//! {"block_out_channels", "attention", "heads", "layers_per_block", "cross_attention_dim",
//! "use_linear_projection"}, "vae": {"block_out_channels", "layers_per_block"}}`. Given with
//! `--model-config`, or found beside the checkpoint as `NAME.shapes.json`.

use crate::{Error, Result};
use danlu_diffusion::model::{
    Activation, LayerChoice, Prediction, TextConfig, TextLayout, UnetConfig, VaeConfig,
};
use danlu_diffusion::pipeline::{Architecture, Family};
use danlu_types::{Base, Variant};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Network shapes as a shapes file writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapesFile {
    /// `sd1` or `sd2`.
    pub family: String,
    /// Text encoder sizes.
    pub text: TextShape,
    /// UNet sizes.
    pub unet: UnetShape,
    /// VAE sizes.
    pub vae: VaeShape,
}

/// Text encoder sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextShape {
    /// Hidden width.
    pub width: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer layers.
    pub layers: usize,
}

/// UNet sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetShape {
    /// Channels per resolution.
    pub block_out_channels: Vec<usize>,
    /// Whether each resolution has attention.
    pub attention: Vec<bool>,
    /// Attention heads per resolution.
    pub heads: Vec<usize>,
    /// ResNet blocks per resolution.
    pub layers_per_block: usize,
    /// Width of the text conditioning.
    pub cross_attention_dim: usize,
    /// Linear (SD 2.x) rather than 1x1-conv transformer projections.
    pub use_linear_projection: bool,
}

/// VAE sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeShape {
    /// Channels per resolution.
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per resolution.
    pub layers_per_block: usize,
}

/// Parses `sd1`/`sd2` (any case).
///
/// # Errors
/// [`Error::Unsupported`] for any other family.
pub fn parse_family(text: &str) -> Result<Family> {
    match text.to_ascii_lowercase().as_str() {
        "sd1" => Ok(Family::Sd1),
        "sd2" => Ok(Family::Sd2),
        other => Err(Error::Unsupported {
            path: PathBuf::new(),
            base: other.to_owned(),
        }),
    }
}

impl ShapesFile {
    /// Reads a shapes file.
    ///
    /// # Errors
    /// [`Error::Shapes`] when it cannot be read or parsed.
    pub fn read(path: &Path) -> Result<Self> {
        let shapes_err = |reason: String| Error::Shapes {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| shapes_err(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| shapes_err(e.to_string()))
    }

    /// The architecture these shapes describe (released layout and activations of the family).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a family other than `sd1`/`sd2`.
    pub fn architecture(&self) -> Result<Architecture> {
        let base = Architecture::of(parse_family(&self.family)?);
        let sd2 = base.family == Family::Sd2;
        Ok(Architecture {
            text: TextConfig {
                width: self.text.width,
                intermediate: self.text.intermediate,
                heads: self.text.heads,
                layers: self.text.layers,
                layout: if sd2 {
                    TextLayout::OpenClip
                } else {
                    TextLayout::Clip
                },
                activation: if sd2 {
                    Activation::Gelu
                } else {
                    Activation::QuickGelu
                },
                layer: if sd2 {
                    LayerChoice::Fixed(2)
                } else {
                    LayerChoice::ClipSkip
                },
                ..base.text.clone()
            },
            unet: UnetConfig {
                block_out_channels: self.unet.block_out_channels.clone(),
                attention: self.unet.attention.clone(),
                heads: self.unet.heads.clone(),
                layers_per_block: self.unet.layers_per_block,
                cross_attention_dim: self.unet.cross_attention_dim,
                use_linear_projection: self.unet.use_linear_projection,
                ..base.unet.clone()
            },
            vae: VaeConfig {
                block_out_channels: self.vae.block_out_channels.clone(),
                layers_per_block: self.vae.layers_per_block,
                ..base.vae.clone()
            },
            family: base.family,
        })
    }
}

/// `NAME.shapes.json` beside `checkpoint`.
pub fn shapes_sidecar(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("shapes.json")
}

/// The architecture of `checkpoint`: `family` (else the checkpoint's identified base) in its
/// released shapes, or the shapes of `shapes` (else of a `NAME.shapes.json` sidecar); v
/// prediction when `v_pred` or the identity says so (A1111 reads it from a same-name `.yaml`).
///
/// # Errors
/// An unreadable checkpoint or shapes file, or a base the engine cannot run.
pub fn choose_architecture(
    checkpoint: &Path,
    family: Option<Family>,
    v_pred: bool,
    shapes: Option<&Path>,
) -> Result<Architecture> {
    let index = danlu_format::read_index(checkpoint).map_err(|source| Error::Format {
        path: checkpoint.to_path_buf(),
        source: Box::new(source),
    })?;
    let identity = danlu_identify::identify(&index, &danlu_identify::Hints::from_path(checkpoint));
    let sidecar = shapes_sidecar(checkpoint);
    let shapes = shapes
        .map(Path::to_path_buf)
        .or_else(|| sidecar.is_file().then_some(sidecar));
    let architecture = if let Some(path) = shapes {
        ShapesFile::read(&path)?.architecture()?
    } else {
        let family = match (family, identity.base) {
            (Some(f), _) => f,
            (None, Base::Sd1) => Family::Sd1,
            (None, Base::Sd2) => Family::Sd2,
            (None, other) => {
                return Err(Error::Unsupported {
                    path: checkpoint.to_path_buf(),
                    base: other.as_str().to_owned(),
                });
            }
        };
        Architecture::of(family)
    };
    // An inpainting UNet also takes the mask and the masked image's latent (ldm `c_concat`): its
    // input channels are those of `conv_in` (`input_blocks.0.0.weight`).
    let mut architecture = architecture;
    if let Some(&channels) = index
        .tensors
        .iter()
        .find(|t| t.name == "model.diffusion_model.input_blocks.0.0.weight")
        .and_then(|t| t.shape.get(1))
    {
        architecture.unet.in_channels = channels as usize;
    }
    let v = v_pred || identity.variant == Some(Variant::VPrediction);
    Ok(architecture.with_prediction(if v {
        Prediction::V
    } else {
        Prediction::Epsilon
    }))
}
