//! The CLIP text transformer of SD1 (OpenAI CLIP ViT-L/14) and SD2 (OpenCLIP ViT-H/14), with
//! transformers `CLIPTextModel` names (SD2's OpenCLIP names are renamed by the remap).
//!
//! Owned here rather than taken from candle because A1111 needs the hidden state of an earlier
//! layer (clip skip, SD2's penultimate layer) and because candle 0.11.1's causal mask does not
//! broadcast over attention heads for batches above one.

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
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
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
        let ln = |vb: nn::VarBuilder| nn::layer_norm(w, 1e-5, vb);
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let l = vb.pp("encoder.layers").pp(i);
            let a = l.pp("self_attn");
            let m = l.pp("mlp");
            layers.push(Layer {
                norm1: ln(l.pp("layer_norm1"))?,
                q: nn::linear(w, w, a.pp("q_proj"))?,
                k: nn::linear(w, w, a.pp("k_proj"))?,
                v: nn::linear(w, w, a.pp("v_proj"))?,
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
        let heads = self.config.heads;
        let head_dim = self.config.width / heads;
        let dtype = xs.dtype();
        let h = l.norm1.forward(xs)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((batch, len, heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?
                .to_dtype(DType::F32)
        };
        let q = split((l.q.forward(&h)? * (head_dim as f64).powf(-0.5))?)?;
        let k = split(l.k.forward(&h)?)?;
        let v = split(l.v.forward(&h)?)?;
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
}
