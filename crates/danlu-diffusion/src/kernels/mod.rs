//! CPU kernels that replace chains of candle operations where the chain costs memory or time.
//!
//! * [`attention`]: scaled dot-product attention in query tiles, so the `[n, m]` score matrix
//!   of a head never exists in full (4096 x 4096 floats, 64 MiB per head and 1 GiB for the
//!   16 heads of a CFG batch at 512x512, in the UNet's first level). The idea is the one of
//!   PyTorch's CPU `scaled_dot_product_attention` (`aten/src/ATen/native/cpu/FlashAttentionKernel.cpp`)
//!   and of diffusers' sliced attention (`AttnProcessor` with `set_attention_slice`): each tile's
//!   scores stay small enough for the caches; in float32 the softmax is our own (a vectorised
//!   exponential in place of one `expf` call per score).

mod attention;
mod softmax;

pub use attention::{attention, attention_tiled};
