//! CPU kernels that replace chains of candle operations where the chain costs memory or time.
//!
//! * [`attention`]: scaled dot-product attention in query tiles, so the `[n, m]` score matrix
//!   of a head never exists in full (4096 x 4096 floats, 64 MiB per head and 1 GiB for the
//!   16 heads of a CFG batch at 512x512, in the UNet's first level). The idea is the one of
//!   PyTorch's CPU `scaled_dot_product_attention` (`aten/src/ATen/native/cpu/FlashAttentionKernel.cpp`)
//!   and of diffusers' sliced attention (`AttnProcessor` with `set_attention_slice`): each tile's
//!   scores stay small enough for the caches; in float32 the softmax is our own (a vectorised
//!   exponential in place of one `expf` call per score).
//! * [`conv2d`] / [`conv2d_with`]: convolution as tiled unfold + matrix product written straight
//!   into NCHW order, with the bias, a per-image bias, a residual and nearest 2x upsampling
//!   folded in; float16 and bfloat16 computed in float32.
//! * [`group_norm`]: group normalisation, per-channel affine and optional SiLU in one operation
//!   (statistics in one pass, then one pass that writes the output), parallel over
//!   `(batch, group)` blocks, as PyTorch's CPU kernel is organised
//!   (`aten/src/ATen/native/cpu/group_norm_kernel.cpp`).
//!
//! The element-wise loops run through `pulp` ([`pulp::Arch::dispatch`]): one generic body picks
//! AVX-512 (16 lanes), AVX2 (8) or scalar code at run time, without `unsafe` in this crate.

mod attention;
mod conv;
mod softmax;

pub use attention::{attention, attention_tiled};
pub use conv::{ConvOptions, conv2d, conv2d_with};
mod gelu;
mod group_norm;
mod layer_norm;
mod qkv_attention;
mod residual;
mod simd;
pub use gelu::{Gelu, geglu, gelu};
pub use group_norm::group_norm;
pub use layer_norm::layer_norm;
pub use qkv_attention::qkv_attention;
pub use residual::bias_residual;
