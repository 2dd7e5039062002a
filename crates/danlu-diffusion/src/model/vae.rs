//! The VAE (diffusers `AutoencoderKL`, ldm `first_stage_model`), built from candle's blocks.
//!
//! The encoder and decoder are assembled here rather than taken from candle's `vae` module
//! because img2img needs the latent distribution's mean and standard deviation, which candle
//! keeps private.

use candle_core::{Module, Tensor};
use candle_nn as nn;
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UNetMidBlock2D, UNetMidBlock2DConfig,
    UpDecoderBlock2D, UpDecoderBlock2DConfig,
};

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

fn conv3(vb: nn::VarBuilder, i: usize, o: usize) -> candle_core::Result<nn::Conv2d> {
    let cfg = nn::Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    nn::conv2d(i, o, 3, cfg, vb)
}

fn mid(vb: nn::VarBuilder, ch: usize, groups: usize) -> candle_core::Result<UNetMidBlock2D> {
    let cfg = UNetMidBlock2DConfig {
        resnet_eps: 1e-6,
        output_scale_factor: 1.,
        attn_num_head_channels: None,
        resnet_groups: Some(groups),
        ..Default::default()
    };
    UNetMidBlock2D::new(vb, ch, None, cfg)
}

#[derive(Debug)]
struct Encoder {
    conv_in: nn::Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: UNetMidBlock2D,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2d,
}

#[derive(Debug)]
struct Decoder {
    conv_in: nn::Conv2d,
    mid: UNetMidBlock2D,
    up: Vec<UpDecoderBlock2D>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2d,
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
    quant_conv: nn::Conv2d,
    post_quant_conv: nn::Conv2d,
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
            let cfg = DownEncoderBlock2DConfig {
                num_layers: config.layers_per_block,
                resnet_eps: 1e-6,
                resnet_groups: groups,
                add_downsample: i + 1 < ch.len(),
                downsample_padding: 0,
                ..Default::default()
            };
            let input = if i > 0 { ch[i - 1] } else { first };
            down.push(DownEncoderBlock2D::new(
                e.pp("down_blocks").pp(i),
                input,
                out,
                cfg,
            )?);
        }
        let encoder = Encoder {
            conv_in: conv3(e.pp("conv_in"), 3, first)?,
            down,
            mid: mid(e.pp("mid_block"), last, groups)?,
            norm_out: nn::group_norm(groups, last, 1e-6, e.pp("conv_norm_out"))?,
            conv_out: conv3(e.pp("conv_out"), last, 2 * z)?,
        };
        let d = vb.pp("decoder");
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(rev.len());
        for (i, &out) in rev.iter().enumerate() {
            let cfg = UpDecoderBlock2DConfig {
                num_layers: config.layers_per_block + 1,
                resnet_eps: 1e-6,
                resnet_groups: groups,
                add_upsample: i + 1 < rev.len(),
                ..Default::default()
            };
            let input = if i > 0 { rev[i - 1] } else { last };
            up.push(UpDecoderBlock2D::new(
                d.pp("up_blocks").pp(i),
                input,
                out,
                cfg,
            )?);
        }
        let decoder = Decoder {
            conv_in: conv3(d.pp("conv_in"), z, last)?,
            mid: mid(d.pp("mid_block"), last, groups)?,
            up,
            norm_out: nn::group_norm(groups, first, 1e-6, d.pp("conv_norm_out"))?,
            conv_out: conv3(d.pp("conv_out"), first, 3)?,
        };
        let one = nn::Conv2dConfig::default();
        Ok(Self {
            encoder,
            decoder,
            quant_conv: nn::conv2d(2 * z, 2 * z, 1, one, vb.pp("quant_conv"))?,
            post_quant_conv: nn::conv2d(z, z, 1, one, vb.pp("post_quant_conv"))?,
            config,
        })
    }

    /// Encodes images in `[-1, 1]`, `[batch, 3, h, w]`, into the latent distribution (not yet
    /// multiplied by the scaling factor).
    ///
    /// # Errors
    /// When the input is not a 4-D tensor whose sides are multiples of 8.
    pub fn encode(&self, images: &Tensor) -> crate::Result<LatentDistribution> {
        let e = &self.encoder;
        let mut xs = e.conv_in.forward(images)?;
        for block in &e.down {
            xs = block.forward(&xs)?;
        }
        let xs = e.mid.forward(&xs, None)?;
        let xs = nn::ops::silu(&e.norm_out.forward(&xs)?)?;
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
        let d = &self.decoder;
        let xs = self.post_quant_conv.forward(latents)?;
        let mut xs = d.mid.forward(&d.conv_in.forward(&xs)?, None)?;
        for block in &d.up {
            xs = block.forward(&xs)?;
        }
        let xs = nn::ops::silu(&d.norm_out.forward(&xs)?)?;
        Ok(d.conv_out.forward(&xs)?)
    }
}
