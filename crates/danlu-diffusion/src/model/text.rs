//! The CLIP text transformer of SD1 (OpenAI CLIP ViT-L/14) and SD2 (OpenCLIP ViT-H/14), with
//! transformers `CLIPTextModel` names (SD2's OpenCLIP names are renamed by the remap).
//!
//! Owned here rather than taken from candle because A1111 needs the hidden state of an earlier
//! layer (clip skip, SD2's penultimate layer) and because candle 0.11.1's causal mask does not
//! broadcast over attention heads for batches above one.
//!
//! On the CPU in float32 a layer is four matrix products (queries, keys and values stacked into
//! one) and one pass of our own per element-wise step ([`crate::kernels::qkv_attention`],
//! [`crate::kernels::gelu`], [`crate::kernels::bias_residual`]) on rayon's threads: candle's
//! element-wise operations fork its own worker threads above 64 Ki values, and those spin after
//! each operation while rayon's threads run the next product, which cost the 154-row products of
//! a `[2, 77]` prompt batch a third of their CPU time.

use crate::kernels;
use candle_core::{D, DType, Module, Tensor};
use candle_nn as nn;

/// Which activation the MLPs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP.
    QuickGelu,
    /// Exact (erf) GELU, OpenCLIP.
    Gelu,
}

/// How the checkpoint stores the text model, which decides the stored names and A1111's layer
/// choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLayout {
    /// transformers `CLIPTextModel` names under `cond_stage_model.transformer.` (SD1).
    Clip,
    /// open_clip names under `cond_stage_model.model.` (SD2).
    OpenClip,
}

/// Which layer's output A1111 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChoice {
    /// The user's "Clip skip" setting (SD1, `sd_hijack_clip.py`).
    ClipSkip,
    /// Always this skip, whatever the setting: SD2 takes the penultimate layer (`2` on the 24
    /// stored layers; `1` on a diffusers folder, which stores only the first 23).
    Fixed(usize),
}

/// Text transformer shape.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Stored layout.
    pub layout: TextLayout,
    /// Vocabulary size (49408).
    pub vocab_size: usize,
    /// Width.
    pub width: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer layers stored in the checkpoint.
    pub layers: usize,
    /// Positions (77).
    pub max_positions: usize,
    /// MLP activation.
    pub activation: Activation,
    /// Which layer A1111 reads.
    pub layer: LayerChoice,
}

impl TextConfig {
    /// SD1's CLIP ViT-L/14 text model
    /// (<https://huggingface.co/runwayml/stable-diffusion-v1-5/blob/main/text_encoder/config.json>).
    pub fn sd1() -> Self {
        Self {
            layout: TextLayout::Clip,
            vocab_size: 49408,
            width: 768,
            intermediate: 3072,
            heads: 12,
            layers: 12,
            max_positions: 77,
            activation: Activation::QuickGelu,
            layer: LayerChoice::ClipSkip,
        }
    }

    /// SD2's OpenCLIP ViT-H/14 text tower as stored in single-file checkpoints: 24 layers
    /// (open_clip `ViT-H-14.json`). diffusers' `text_encoder/config.json` for
    /// <https://huggingface.co/stabilityai/stable-diffusion-2-1> has 23 because it drops the
    /// layer that the penultimate output never reaches.
    pub fn sd2() -> Self {
        Self {
            layout: TextLayout::OpenClip,
            vocab_size: 49408,
            width: 1024,
            intermediate: 4096,
            heads: 16,
            layers: 24,
            max_positions: 77,
            activation: Activation::Gelu,
            layer: LayerChoice::Fixed(2),
        }
    }

    /// SD2's text encoder as a diffusers folder stores it (transformers names, 23 layers,
    /// <https://huggingface.co/stabilityai/stable-diffusion-2-1/blob/main/text_encoder/config.json>):
    /// its last layer is OpenCLIP's penultimate one.
    pub fn sd2_diffusers() -> Self {
        Self {
            layout: TextLayout::Clip,
            layers: 23,
            layer: LayerChoice::Fixed(1),
            ..Self::sd2()
        }
    }
}

#[derive(Debug)]
struct Layer {
    norm1: nn::LayerNorm,
    /// The query, key and value projections stacked into one (`[3 width, width]`), so that one
    /// matrix product computes all three.
    qkv: nn::Linear,
    out: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

/// A loaded text encoder.
#[derive(Debug)]
pub struct TextEncoder {
    token_embedding: nn::Embedding,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    final_norm: nn::LayerNorm,
    /// Its configuration.
    pub config: TextConfig,
}

/// `norm` (CLIP's layer norms, epsilon 1e-5) through [`kernels::layer_norm`].
fn norm(norm: &nn::LayerNorm, xs: &Tensor) -> candle_core::Result<Tensor> {
    kernels::layer_norm(xs, norm.weight(), norm.bias(), LAYER_NORM_EPS)
}

/// The epsilon of every layer norm of both text models (transformers `layer_norm_eps`,
/// open_clip's `nn.LayerNorm` default).
const LAYER_NORM_EPS: f64 = 1e-5;

impl TextEncoder {
    /// Builds the encoder from transformers-named weights (root: `embeddings.`, `encoder.`,
    /// `final_layer_norm.`).
    ///
    /// # Errors
    /// When a weight is missing or has the wrong shape.
    pub fn new(vb: nn::VarBuilder, config: TextConfig) -> candle_core::Result<Self> {
        let w = config.width;
        let e = vb.pp("embeddings");
        let token_embedding = nn::embedding(config.vocab_size, w, e.pp("token_embedding"))?;
        let position_embedding = e
            .pp("position_embedding")
            .get((config.max_positions, w), "weight")?;
        let ln = |vb: nn::VarBuilder| nn::layer_norm(w, LAYER_NORM_EPS, vb);
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = vb.pp("encoder.layers").pp(i);
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            let [q, k, v] = ["q_proj", "k_proj", "v_proj"].map(|p| nn::linear(w, w, a.pp(p)));
            let (q, k, v) = (q?, k?, v?);
            // `nn::linear` loads a bias for each (or fails), so the stacked one always exists.
            let bias = match (q.bias(), k.bias(), v.bias()) {
                (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
                _ => None,
            };
            let qkv = nn::Linear::new(Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?, bias);
            layers.push(Layer {
                norm1: ln(l.pp("layer_norm1"))?,
                qkv,
                out: nn::linear(w, w, a.pp("out_proj"))?,
                norm2: ln(l.pp("layer_norm2"))?,
                fc1: nn::linear(w, config.intermediate, m.pp("fc1"))?,
                fc2: nn::linear(config.intermediate, w, m.pp("fc2"))?,
            });
        }
        Ok(Self {
            token_embedding,
            position_embedding,
            layers,
            final_norm: ln(vb.pp("final_layer_norm"))?,
            config,
        })
    }

    /// The layer A1111 reads for a "Clip skip" setting: SD1 stops `clip_skip - 1` layers before
    /// the last (`sd_hijack_clip.py`, `FrozenCLIPEmbedderWithCustomWords.encode_with_transformers`);
    /// SD2 always takes the penultimate layer and ignores the setting (ldm
    /// `FrozenOpenCLIPEmbedder(layer="penultimate")`, called as is by `sd_hijack_open_clip.py`).
    /// The result is the `skip` argument of [`forward`](Self::forward).
    pub fn a1111_skip(&self, clip_skip: usize) -> usize {
        match self.config.layer {
            LayerChoice::ClipSkip => clip_skip.max(1),
            LayerChoice::Fixed(skip) => skip,
        }
    }

    /// Runs token ids `[batch, tokens]` (u32 or i64, at most `max_positions` per row) through all
    /// layers but the last `skip - 1` and applies the final layer norm, which both A1111 paths do
    /// (`final_layer_norm` for SD1, `ln_final` for SD2). Returns `[batch, tokens, width]`.
    ///
    /// # Errors
    /// When `skip` is 0 or leaves no layer, or the ids do not fit the model.
    pub fn forward(&self, tokens: &Tensor, skip: usize) -> crate::Result<Tensor> {
        let embeds = self.embed_tokens(tokens)?;
        self.forward_embeds(&embeds, skip)
    }

    /// The token embeddings of `tokens` `[batch, len]`: `[batch, len, width]`, before the
    /// position embeddings (where textual-inversion vectors go, A1111 `EmbeddingsWithFixes`).
    ///
    /// # Errors
    /// When an id is outside the vocabulary.
    pub fn embed_tokens(&self, tokens: &Tensor) -> crate::Result<Tensor> {
        Ok(self.token_embedding.forward(tokens)?)
    }

    /// [`TextEncoder::forward`] from token embeddings `[batch, len, width]`.
    ///
    /// # Errors
    /// As [`TextEncoder::forward`].
    pub fn forward_embeds(&self, embeds: &Tensor, skip: usize) -> crate::Result<Tensor> {
        let n = self.layers.len();
        if skip == 0 || skip > n {
            return Err(crate::Error::Invalid {
                what: "clip skip",
                reason: format!("{skip} is not between 1 and {n}"),
            });
        }
        let (batch, len, _) = embeds.dims3()?;
        if len > self.config.max_positions {
            return Err(crate::Error::Invalid {
                what: "token count",
                reason: format!("{len} is more than {}", self.config.max_positions),
            });
        }
        let positions = self.position_embedding.narrow(0, 0, len)?;
        let mut xs = embeds.broadcast_add(&positions)?;
        // Additive causal mask, [1, 1, len, len], broadcast over batch and heads.
        let mask: Vec<f32> = (0..len)
            .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, len, len), xs.device())?;
        for layer in &self.layers[..n + 1 - skip] {
            xs = self.layer(layer, &xs, &mask, batch, len)?;
        }
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            return Ok(norm(&self.final_norm, &xs)?);
        }
        Ok(self.final_norm.forward(&xs)?)
    }

    fn layer(
        &self,
        l: &Layer,
        xs: &Tensor,
        mask: &Tensor,
        batch: usize,
        len: usize,
    ) -> candle_core::Result<Tensor> {
        if xs.device().is_cpu() && xs.dtype() == DType::F32 {
            return self.layer_fused(l, xs);
        }
        let heads = self.config.heads;
        let width = self.config.width;
        let head_dim = width / heads;
        let dtype = xs.dtype();
        let h = l.norm1.forward(xs)?;
        let qkv = l.qkv.forward(&h)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, len, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?
                .to_dtype(DType::F32)
        };
        let q = split((qkv.narrow(D::Minus1, 0, width)? * (head_dim as f64).powf(-0.5))?)?;
        let k = split(qkv.narrow(D::Minus1, width, width)?)?;
        let v = split(qkv.narrow(D::Minus1, 2 * width, width)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let probs = nn::ops::softmax(&scores, D::Minus1)?;
        let attn = probs
            .matmul(&v)?
            .to_dtype(dtype)?
            .transpose(1, 2)?
            .reshape((batch, len, self.config.width))?;
        let xs = (xs + l.out.forward(&attn)?)?;
        let h = l.fc1.forward(&l.norm2.forward(&xs)?)?;
        let h = match self.config.activation {
            Activation::QuickGelu => (&h * nn::ops::sigmoid(&(&h * 1.702)?)?)?,
            Activation::Gelu => h.gelu_erf()?,
        };
        xs + l.fc2.forward(&h)?
    }

    /// [`Self::layer`] on the CPU in float32: the products without their biases, which the
    /// kernels after them add (attention from the stacked projections, GELU, bias plus residual),
    /// so that every element-wise step is one pass on rayon's threads.
    fn layer_fused(&self, l: &Layer, xs: &Tensor) -> candle_core::Result<Tensor> {
        let product = |layer: &nn::Linear, x: &Tensor| {
            nn::Linear::new(layer.weight().clone(), None).forward(x)
        };
        let h = norm(&l.norm1, xs)?;
        let qkv = product(&l.qkv, &h)?;
        let attn = kernels::qkv_attention(&qkv, l.qkv.bias(), self.config.heads, true)?;
        let xs = kernels::bias_residual(&product(&l.out, &attn)?, l.out.bias(), xs)?;
        let h = product(&l.fc1, &norm(&l.norm2, &xs)?)?;
        let kind = match self.config.activation {
            Activation::QuickGelu => kernels::Gelu::Quick,
            Activation::Gelu => kernels::Gelu::Erf,
        };
        let h = kernels::gelu(&h, l.fc1.bias(), kind)?;
        kernels::bias_residual(&product(&l.fc2, &h)?, l.fc2.bias(), &xs)
    }
}
