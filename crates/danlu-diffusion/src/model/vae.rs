//! The VAE (diffusers `AutoencoderKL`, ldm `first_stage_model`), built from [`super::layers`].
//!
//! The encoder and decoder are assembled here rather than taken from candle's `vae` module
//! because img2img needs the latent distribution's mean and standard deviation, which candle
//! keeps private, and so that the blocks run on the fused CPU kernels.

use super::layers::{Conv2d, DownEncoderBlock, GroupNorm, UpDecoderBlock, VaeLevel, VaeMidBlock};
use candle_core::Tensor;
use candle_nn as nn;

/// Group norm epsilon of every VAE norm (diffusers `AutoencoderKL`, ldm `Normalize`).
const EPS: f64 = 1e-6;

/// VAE shape; SD1 and SD2 share one
/// (<https://huggingface.co/runwayml/stable-diffusion-v1-5/blob/main/vae/config.json>,
/// <https://huggingface.co/stabilityai/stable-diffusion-2-1/blob/main/vae/config.json>).
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Channels per level (`block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level; the decoder has one more.
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Group-norm groups.
    pub norm_num_groups: usize,
    /// Latent scale factor (`scaling_factor`, ldm `scale_factor`): latents are multiplied by it
    /// after encoding and divided by it before decoding, by the caller.
    pub scaling_factor: f64,
}

impl VaeConfig {
    /// The Stable Diffusion 1.x/2.x VAE.
    pub fn sd() -> Self {
        Self {
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        }
    }
}

#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock>,
    mid: VaeMidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid: VaeMidBlock,
    up: Vec<UpDecoderBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

/// The latent distribution of an encoded image (ldm `DiagonalGaussianDistribution`).
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    /// Mean, `[batch, latent_channels, h/8, w/8]`.
    pub mean: Tensor,
    /// Standard deviation, from the log-variance clamped to `[-30, 20]` as ldm does.
    pub std: Tensor,
}

/// A loaded VAE.
#[derive(Debug)]
pub struct Vae {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    /// Its configuration.
    pub config: VaeConfig,
}

impl Vae {
    /// Builds the VAE from diffusers-named weights (root: `encoder.`, `decoder.`, `quant_conv.`).
    ///
    /// # Errors
    /// When a weight is missing or has the wrong shape.
    pub fn new(vb: nn::VarBuilder, config: VaeConfig) -> candle_core::Result<Self> {
        let ch = &config.block_out_channels;
        let (Some(&first), Some(&last)) = (ch.first(), ch.last()) else {
            return Err(candle_core::Error::Msg("VAE config has no levels".into()));
        };
        let groups = config.norm_num_groups;
        let z = config.latent_channels;
        let e = vb.pp("encoder");
        let mut down = Vec::with_capacity(ch.len());
        for (i, &out) in ch.iter().enumerate() {
            let level = VaeLevel {
                input: if i > 0 { ch[i - 1] } else { first },
                output: out,
                layers: config.layers_per_block,
                groups,
                eps: EPS,
                resample: i + 1 < ch.len(),
            };
            down.push(DownEncoderBlock::new(e.pp("down_blocks").pp(i), level)?);
        }
        let encoder = Encoder {
            conv_in: Conv2d::conv3(e.pp("conv_in"), 3, first, 1)?,
            down,
            mid: VaeMidBlock::new(e.pp("mid_block"), last, groups, EPS)?,
            norm_out: GroupNorm::new(e.pp("conv_norm_out"), groups, last, EPS)?,
            conv_out: Conv2d::conv3(e.pp("conv_out"), last, 2 * z, 1)?,
        };
        let d = vb.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(rev.len());
        for (i, &out) in rev.iter().enumerate() {
            let level = VaeLevel {
                input: if i > 0 { rev[i - 1] } else { last },
                output: out,
                layers: config.layers_per_block + 1,
                groups,
                eps: EPS,
                resample: i + 1 < rev.len(),
            };
            up.push(UpDecoderBlock::new(d.pp("up_blocks").pp(i), level)?);
        }
        let decoder = Decoder {
            conv_in: Conv2d::conv3(d.pp("conv_in"), z, last, 1)?,
            mid: VaeMidBlock::new(d.pp("mid_block"), last, groups, EPS)?,
            up,
            norm_out: GroupNorm::new(d.pp("conv_norm_out"), groups, first, EPS)?,
            conv_out: Conv2d::conv3(d.pp("conv_out"), first, 3, 1)?,
        };
        Ok(Self {
            encoder,
            decoder,
            quant_conv: Conv2d::conv1(vb.pp("quant_conv"), 2 * z, 2 * z)?,
            post_quant_conv: Conv2d::conv1(vb.pp("post_quant_conv"), z, z)?,
            config,
        })
    }

    /// Encodes images in `[-1, 1]`, `[batch, 3, h, w]`, into the latent distribution (not yet
    /// multiplied by the scaling factor).
    ///
    /// # Errors
    /// When the input is not a 4-D tensor whose sides are multiples of 8.
    pub fn encode(&self, images: &Tensor) -> crate::Result<LatentDistribution> {
        crate::kernels::release_kept_buffers();
        let e = &self.encoder;
        let mut xs = e.conv_in.forward(images)?;
        for block in &e.down {
            xs = block.forward(&xs)?;
        }
        let xs = e.mid.forward(&xs)?;
        let xs = e.norm_out.forward_silu(&xs)?;
        let xs = self.quant_conv.forward(&e.conv_out.forward(&xs)?)?;
        let z = self.config.latent_channels;
        let mean = xs.narrow(1, 0, z)?;
        let logvar = xs.narrow(1, z, z)?.clamp(-30f32, 20f32)?;
        let std = (logvar * 0.5)?.exp()?;
        Ok(LatentDistribution { mean, std })
    }

    /// Decodes latents (already divided by the scaling factor), `[batch, 4, h, w]`, into images
    /// of `[batch, 3, 8h, 8w]`, nominally in `[-1, 1]` and not clamped.
    ///
    /// # Errors
    /// When the input is not a 4-D tensor with the latent channel count.
    pub fn decode(&self, latents: &Tensor) -> crate::Result<Tensor> {
        crate::kernels::release_kept_buffers();
        let d = &self.decoder;
        let xs = self.post_quant_conv.forward(latents)?;
        let mut xs = d.mid.forward(&d.conv_in.forward(&xs)?)?;
        for block in &d.up {
            xs = block.forward(&xs)?;
        }
        let xs = d.norm_out.forward_silu(&xs)?;
        Ok(d.conv_out.forward(&xs)?)
    }
}
