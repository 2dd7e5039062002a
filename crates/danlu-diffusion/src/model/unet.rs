//! The UNet (diffusers `UNet2DConditionModel` names, ldm `model.diffusion_model` behaviour).
//!
//! Resnets, convolutions and group norms are [`super::layers`] (fused CPU kernels); the rest is
//! owned here because candle 0.11.1 differs from ldm, which A1111 runs:
//! - candle's GEGLU feed-forward uses the tanh approximation of GELU; ldm's `GEGLU`
//!   (`ldm/modules/attention.py`) uses the exact one (a 1e-4 relative difference on one step);
//! - candle computes the sinusoidal timestep embedding in the compute dtype; ldm's
//!   `timestep_embedding` (`ldm/modules/diffusionmodules/util.py`) always uses float32, which
//!   matters for fractional timesteps in half precision;
//! - on the way up, ldm upsamples by two and convolves, and A1111 then resizes to the skip
//!   connection's size before concatenating (`sd_hijack_unet.py`, `TorchHijackForUnet.cat`),
//!   where diffusers and candle upsample straight to that size; they differ when the latent size
//!   is not a multiple of 8;
//! - attention is a hook point (optimisations, hypernetworks).

use super::layers::{Conv2d, GroupNorm, ResnetBlock2D};
use crate::adapters::hypernetwork::{ActiveHypernetwork, apply_hypernetworks};
use candle_core::{DType, Module, Tensor};
use candle_nn as nn;

/// What the UNet predicts (ldm `parameterization`; A1111 reads `parameterization: "v"` from a
/// `.yaml` beside the checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prediction {
    /// The added noise (SD1, SD2 512-base).
    #[default]
    Epsilon,
    /// The velocity `alpha * noise - sigma * x0` (SD2 768-v).
    V,
}

/// UNet shape.
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    /// Channels per level (`block_out_channels`).
    pub block_out_channels: Vec<usize>,
    /// Whether each level has spatial transformers.
    pub attention: Vec<bool>,
    /// Attention heads per level. diffusers calls this `attention_head_dim` for SD1 and SD2 (a
    /// misnomer it keeps for compatibility); it is a head count.
    pub heads: Vec<usize>,
    /// Resnets per level on the way down.
    pub layers_per_block: usize,
    /// Width of the text context.
    pub cross_attention_dim: usize,
    /// Linear (SD2) or 1x1-convolution (SD1) projections around the transformers.
    pub use_linear_projection: bool,
    /// Input channels: 4, or 9 for inpainting models; read from the weights by
    /// [`Checkpoint::load_unet`](super::Checkpoint::load_unet).
    pub in_channels: usize,
    /// Output channels (4).
    pub out_channels: usize,
    /// What the network predicts.
    pub prediction: Prediction,
}

impl UnetConfig {
    /// SD1.x (<https://huggingface.co/runwayml/stable-diffusion-v1-5/blob/main/unet/config.json>).
    pub fn sd1() -> Self {
        Self {
            block_out_channels: vec![320, 640, 1280, 1280],
            attention: vec![true, true, true, false],
            heads: vec![8, 8, 8, 8],
            layers_per_block: 2,
            cross_attention_dim: 768,
            use_linear_projection: false,
            in_channels: 4,
            out_channels: 4,
            prediction: Prediction::Epsilon,
        }
    }

    /// SD2.x (<https://huggingface.co/stabilityai/stable-diffusion-2-1/blob/main/unet/config.json>);
    /// the 768-v models need [`Prediction::V`].
    pub fn sd2() -> Self {
        Self {
            block_out_channels: vec![320, 640, 1280, 1280],
            attention: vec![true, true, true, false],
            heads: vec![5, 10, 20, 20],
            layers_per_block: 2,
            cross_attention_dim: 1024,
            use_linear_projection: true,
            in_channels: 4,
            out_channels: 4,
            prediction: Prediction::Epsilon,
        }
    }

    /// The name layout for the remap table.
    pub fn layout(&self) -> super::remap::UnetLayout {
        super::remap::UnetLayout {
            levels: self.block_out_channels.len(),
            layers_per_block: self.layers_per_block,
            attention: self.attention.clone(),
        }
    }

    fn validate(&self) -> candle_core::Result<()> {
        let n = self.block_out_channels.len();
        let bad_heads = self
            .block_out_channels
            .iter()
            .zip(&self.heads)
            .any(|(&c, &h)| h == 0 || c % h != 0);
        if n == 0 || self.attention.len() != n || self.heads.len() != n || bad_heads {
            return Err(candle_core::Error::Msg(format!(
                "UNet config: {n} levels, {} attention flags, head counts {:?} for channels {:?}",
                self.attention.len(),
                self.heads,
                self.block_out_channels
            )));
        }
        Ok(())
    }
}

/// Multi-head attention (diffusers `Attention`, ldm `CrossAttention`), softmax in float32.
#[derive(Debug)]
struct Attention {
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: usize,
}

impl Attention {
    fn new(
        vb: nn::VarBuilder,
        dim: usize,
        context: usize,
        heads: usize,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            to_q: nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: nn::linear_no_bias(context, dim, vb.pp("to_k"))?,
            to_v: nn::linear_no_bias(context, dim, vb.pp("to_v"))?,
            to_out: nn::linear(dim, dim, vb.pp("to_out.0"))?,
            heads,
        })
    }

    /// `residual + attention(xs, context)`.
    fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        hyper: &[ActiveHypernetwork],
        residual: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, n, dim) = xs.dims3()?;
        let head_dim = dim / self.heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            let len = t.dim(1)?;
            t.reshape((b, len, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?
                .to_dtype(DType::F32)
        };
        let q = split(self.to_q.forward(xs)?)?;
        // A1111 `apply_hypernetworks` on the key and value inputs.
        let (k, v) = if hyper.is_empty() {
            (self.to_k.forward(context)?, self.to_v.forward(context)?)
        } else {
            let (ck, cv) = apply_hypernetworks(hyper, context)?;
            (self.to_k.forward(&ck)?, self.to_v.forward(&cv)?)
        };
        let k = split(k)?;
        let v = split(v)?;
        // On the CPU, blocks of queries through scores, softmax and values in one pass: the
        // same result without the full `[b, heads, n, m]` score matrix (1 GiB per pass at 64x64
        // latents).
        let attended = if q.device().is_cpu() {
            crate::kernels::attention(&q, &k, &v)?
        } else {
            let scores = (q.matmul(&k.t()?)? * (head_dim as f64).powf(-0.5))?;
            nn::ops::softmax_last_dim(&scores)?.matmul(&v)?
        };
        let out = attended
            .to_dtype(xs.dtype())?
            .transpose(1, 2)?
            .reshape((b, n, dim))?;
        // The output projection without its bias, which the residual pass adds.
        let out = nn::Linear::new(self.to_out.weight().clone(), None).forward(&out)?;
        crate::kernels::bias_residual(&out, self.to_out.bias(), residual)
    }
}

/// `torch.nn.LayerNorm`'s default epsilon, which ldm's transformer blocks keep.
const LAYER_NORM_EPS: f64 = 1e-5;

/// ldm `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward.
#[derive(Debug)]
struct TransformerBlock {
    norm1: nn::LayerNorm,
    attn1: Attention,
    norm2: nn::LayerNorm,
    attn2: Attention,
    norm3: nn::LayerNorm,
    ff_in: nn::Linear,
    ff_out: nn::Linear,
}

impl TransformerBlock {
    fn new(
        vb: nn::VarBuilder,
        dim: usize,
        context: usize,
        heads: usize,
    ) -> candle_core::Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            norm1: nn::layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm1"))?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads)?,
            norm2: nn::layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm2"))?,
            attn2: Attention::new(vb.pp("attn2"), dim, context, heads)?,
            norm3: nn::layer_norm(dim, LAYER_NORM_EPS, vb.pp("norm3"))?,
            ff_in: nn::linear(dim, 2 * inner, vb.pp("ff.net.0.proj"))?,
            ff_out: nn::linear(inner, dim, vb.pp("ff.net.2"))?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        hyper: &[ActiveHypernetwork],
    ) -> candle_core::Result<Tensor> {
        let norm = |n: &nn::LayerNorm, x: &Tensor| {
            crate::kernels::layer_norm(x, n.weight(), n.bias(), LAYER_NORM_EPS)
        };
        let h = norm(&self.norm1, xs)?;
        let xs = self.attn1.forward(&h, &h, hyper, xs)?;
        let h = norm(&self.norm2, &xs)?;
        let xs = self.attn2.forward(&h, context, hyper, &xs)?;
        // The projections without their biases: the GEGLU pass adds the first, the residual
        // pass the second (one pass each instead of a bias, a gate and a sum).
        let h =
            nn::Linear::new(self.ff_in.weight().clone(), None).forward(&norm(&self.norm3, &xs)?)?;
        let gated = crate::kernels::geglu(&h, self.ff_in.bias())?;
        let out = nn::Linear::new(self.ff_out.weight().clone(), None).forward(&gated)?;
        crate::kernels::bias_residual(&out, self.ff_out.bias(), &xs)
    }
}

/// A spatial transformer's per-position projection: a 1x1 convolution (weight `[o, c, 1, 1]`,
/// SD1) or a linear layer (`[o, c]`, SD2's `use_linear_projection`); the same product either way.
#[derive(Debug)]
struct Projection {
    weight: Tensor,
    bias: Tensor,
}

/// ldm `SpatialTransformer` (diffusers `Transformer2DModel`), depth 1.
#[derive(Debug)]
struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Projection,
    block: TransformerBlock,
    proj_out: Projection,
}

impl SpatialTransformer {
    fn new(
        vb: nn::VarBuilder,
        channels: usize,
        context: usize,
        heads: usize,
        linear: bool,
    ) -> candle_core::Result<Self> {
        let proj = |name: &str| -> candle_core::Result<Projection> {
            let vb = vb.pp(name);
            let weight = if linear {
                vb.get((channels, channels), "weight")?
            } else {
                vb.get((channels, channels, 1, 1), "weight")?
            };
            Ok(Projection {
                weight,
                bias: vb.get(channels, "bias")?,
            })
        };
        Ok(Self {
            norm: GroupNorm::new(vb.pp("norm"), 32, channels, 1e-6)?,
            proj_in: proj("proj_in")?,
            block: TransformerBlock::new(vb.pp("transformer_blocks.0"), channels, context, heads)?,
            proj_out: proj("proj_out")?,
        })
    }

    fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        hyper: &[ActiveHypernetwork],
    ) -> candle_core::Result<Tensor> {
        let (h, w) = (xs.dim(2)?, xs.dim(3)?);
        let normed = self.norm.forward(xs)?;
        // Both projections read and write across image and token order directly.
        let (p_in, p_out) = (&self.proj_in, &self.proj_out);
        let tokens = crate::kernels::project_to_tokens(&normed, &p_in.weight, Some(&p_in.bias))?;
        let tokens = self.block.forward(&tokens, context, hyper)?;
        crate::kernels::project_from_tokens(
            &tokens,
            &p_out.weight,
            Some(&p_out.bias),
            Some(xs),
            (h, w),
        )
    }
}

/// One resnet, optionally followed by a spatial transformer.
#[derive(Debug)]
struct Layer {
    resnet: ResnetBlock2D,
    attention: Option<SpatialTransformer>,
}

impl Layer {
    fn forward(
        &self,
        xs: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        hyper: &[ActiveHypernetwork],
    ) -> candle_core::Result<Tensor> {
        let xs = self.resnet.forward(xs, Some(emb))?;
        match &self.attention {
            Some(a) => a.forward(&xs, context, hyper),
            None => Ok(xs),
        }
    }
}

#[derive(Debug)]
struct Level {
    layers: Vec<Layer>,
    /// Downsampler (3x3, stride 2) on the way down, upsampler (nearest x2, 3x3) on the way up.
    sampler: Option<Conv2d>,
}

/// A loaded UNet.
#[derive(Debug)]
pub struct Unet {
    conv_in: Conv2d,
    time_linear_1: nn::Linear,
    time_linear_2: nn::Linear,
    down: Vec<Level>,
    mid: (ResnetBlock2D, SpatialTransformer, ResnetBlock2D),
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Its configuration.
    pub config: UnetConfig,
    /// Hypernetworks applied to every attention's key and value inputs.
    hypernetworks: Vec<ActiveHypernetwork>,
}

fn resnet(
    vb: nn::VarBuilder,
    i: usize,
    o: usize,
    temb: usize,
) -> candle_core::Result<ResnetBlock2D> {
    ResnetBlock2D::new(vb, i, o, Some(temb), 32, 1e-5)
}

/// ldm `timestep_embedding`, computed in float32 as ldm does whatever the compute dtype:
/// `[cos(t * f_i), sin(t * f_i)]` with `f_i = exp(-ln(10000) * i / half)`.
fn timestep_embedding(timestep: f64, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let t = timestep as f32;
    let args: Vec<f32> = (0..half)
        .map(|i| t * (-(10000f32.ln()) * i as f32 / half as f32).exp())
        .collect();
    let mut out: Vec<f32> = args.iter().map(|a| a.cos()).collect();
    out.extend(args.iter().map(|a| a.sin()));
    out.resize(dim, 0.0);
    out
}

impl Unet {
    /// Builds the UNet from diffusers-named weights.
    ///
    /// # Errors
    /// When a weight is missing or has the wrong shape, or the config is inconsistent.
    pub fn new(vb: nn::VarBuilder, config: UnetConfig) -> candle_core::Result<Self> {
        config.validate()?;
        let ch = &config.block_out_channels;
        let n = ch.len();
        let first = ch[0];
        let last = ch[n - 1];
        let temb = 4 * first;
        let ctx = config.cross_attention_dim;
        let linear = config.use_linear_projection;
        let attention = |vb: nn::VarBuilder,
                         level: usize|
         -> candle_core::Result<Option<SpatialTransformer>> {
            if config.attention[level] {
                SpatialTransformer::new(vb, ch[level], ctx, config.heads[level], linear).map(Some)
            } else {
                Ok(None)
            }
        };
        let mut down = Vec::with_capacity(n);
        for level in 0..n {
            let vb = vb.pp("down_blocks").pp(level);
            let mut layers = Vec::with_capacity(config.layers_per_block);
            for j in 0..config.layers_per_block {
                let input = if j == 0 && level > 0 {
                    ch[level - 1]
                } else {
                    ch[level]
                };
                layers.push(Layer {
                    resnet: resnet(vb.pp("resnets").pp(j), input, ch[level], temb)?,
                    attention: attention(vb.pp("attentions").pp(j), level)?,
                });
            }
            let sampler = if level + 1 < n {
                Some(Conv2d::conv3(
                    vb.pp("downsamplers.0.conv"),
                    ch[level],
                    ch[level],
                    2,
                )?)
            } else {
                None
            };
            down.push(Level { layers, sampler });
        }
        let m = vb.pp("mid_block");
        let mid = (
            resnet(m.pp("resnets.0"), last, last, temb)?,
            SpatialTransformer::new(m.pp("attentions.0"), last, ctx, config.heads[n - 1], linear)?,
            resnet(m.pp("resnets.1"), last, last, temb)?,
        );
        let mut up = Vec::with_capacity(n);
        for i in 0..n {
            let level = n - 1 - i;
            let vb = vb.pp("up_blocks").pp(i);
            let mut layers = Vec::with_capacity(config.layers_per_block + 1);
            for j in 0..=config.layers_per_block {
                // The input is the previous output (the level below's channels for the first
                // resnet) plus the skip connection popped from the down path.
                let prev = if j == 0 {
                    ch[(level + 1).min(n - 1)]
                } else {
                    ch[level]
                };
                let skip = if j == config.layers_per_block {
                    ch[level.saturating_sub(1)]
                } else {
                    ch[level]
                };
                layers.push(Layer {
                    resnet: resnet(vb.pp("resnets").pp(j), prev + skip, ch[level], temb)?,
                    attention: attention(vb.pp("attentions").pp(j), level)?,
                });
            }
            let sampler = if i + 1 < n {
                Some(Conv2d::conv3(
                    vb.pp("upsamplers.0.conv"),
                    ch[level],
                    ch[level],
                    1,
                )?)
            } else {
                None
            };
            up.push(Level { layers, sampler });
        }
        Ok(Self {
            conv_in: Conv2d::conv3(vb.pp("conv_in"), config.in_channels, first, 1)?,
            time_linear_1: nn::linear(first, temb, vb.pp("time_embedding.linear_1"))?,
            time_linear_2: nn::linear(temb, temb, vb.pp("time_embedding.linear_2"))?,
            down,
            mid,
            up,
            norm_out: GroupNorm::new(vb.pp("conv_norm_out"), 32, first, 1e-5)?,
            conv_out: Conv2d::conv3(vb.pp("conv_out"), first, config.out_channels, 1)?,
            config,
            hypernetworks: Vec::new(),
        })
    }

    /// Sets the hypernetworks applied from the next evaluation on (A1111
    /// `shared.loaded_hypernetworks`), their weights moved to `device`.
    ///
    /// # Errors
    /// When a weight cannot be moved to the device.
    pub fn set_hypernetworks(
        &mut self,
        list: Vec<ActiveHypernetwork>,
        device: &candle_core::Device,
    ) -> crate::Result<()> {
        self.hypernetworks = list
            .into_iter()
            .map(|h| {
                Ok(ActiveHypernetwork {
                    network: std::sync::Arc::new(h.network.to_device(device)?),
                    multiplier: h.multiplier,
                })
            })
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(())
    }

    /// The hypernetworks in use.
    pub fn hypernetworks(&self) -> &[ActiveHypernetwork] {
        &self.hypernetworks
    }

    /// One evaluation: `latents` `[batch, in_channels, h, w]` at the (possibly fractional)
    /// `timestep`, conditioned on `context` `[batch, tokens, cross_attention_dim]`. Returns the
    /// prediction, `[batch, out_channels, h, w]`.
    ///
    /// # Errors
    /// When the shapes do not fit the network or each other.
    pub fn forward(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
    ) -> crate::Result<Tensor> {
        let (b, c, _, _) = latents.dims4()?;
        let (cb, _, cd) = context.dims3()?;
        if c != self.config.in_channels || cb != b || cd != self.config.cross_attention_dim {
            return Err(crate::Error::Invalid {
                what: "UNet input",
                reason: format!(
                    "latents {:?} and context {:?} do not fit a UNet with {} input channels and \
                     context width {}",
                    latents.dims(),
                    context.dims(),
                    self.config.in_channels,
                    self.config.cross_attention_dim
                ),
            });
        }
        Ok(self.run(latents, timestep, context)?)
    }

    fn run(
        &self,
        latents: &Tensor,
        timestep: f64,
        context: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let hyper = self.hypernetworks.as_slice();
        let dtype = latents.dtype();
        let first = self.config.block_out_channels[0];
        let (b, _, _, _) = latents.dims4()?;
        let emb = Tensor::from_vec(
            timestep_embedding(timestep, first),
            (1, first),
            latents.device(),
        )?
        .to_dtype(dtype)?
        .repeat((b, 1))?;
        let emb = self.time_linear_1.forward(&emb)?;
        let emb = self.time_linear_2.forward(&nn::ops::silu(&emb)?)?;
        let mut xs = self.conv_in.forward(latents)?;
        let mut skips = vec![xs.clone()];
        for level in &self.down {
            for layer in &level.layers {
                xs = layer.forward(&xs, &emb, context, hyper)?;
                skips.push(xs.clone());
            }
            if let Some(conv) = &level.sampler {
                xs = conv.forward(&xs)?;
                skips.push(xs.clone());
            }
        }
        xs = self.mid.0.forward(&xs, Some(&emb))?;
        xs = self.mid.1.forward(&xs, context, hyper)?;
        xs = self.mid.2.forward(&xs, Some(&emb))?;
        for level in &self.up {
            for layer in &level.layers {
                let skip = skips.pop().ok_or_else(|| {
                    candle_core::Error::Msg("UNet skip connections ran out".into())
                })?;
                let (_, _, sh, sw) = skip.dims4()?;
                let (_, _, h, w) = xs.dims4()?;
                // A1111 `sd_hijack_unet.py`: resize to the skip connection before concatenating.
                if (h, w) != (sh, sw) {
                    xs = xs.upsample_nearest2d(sh, sw)?;
                }
                xs = layer.forward(&Tensor::cat(&[&xs, &skip], 1)?, &emb, context, hyper)?;
            }
            if let Some(conv) = &level.sampler {
                // ldm `Upsample`: nearest 2x, then the convolution (fused).
                xs = conv.forward_upsampled(&xs)?;
            }
        }
        let xs = self.norm_out.forward_silu(&xs)?;
        self.conv_out.forward(&xs)
    }
}
