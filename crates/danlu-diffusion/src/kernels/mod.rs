//! CPU kernels that replace chains of candle operations where the chain costs memory or time.
//!
//! * [`attention`]: scaled dot-product attention without the `[n, m]` score matrix of a head in
//!   memory (4096 x 4096 floats, 64 MiB per head and 1 GiB for the 16 heads of a CFG batch at
//!   512x512, in the UNet's first level). In float32 on the CPU each block of 16 (AVX-512) or 8
//!   queries runs scores, softmax and the weighted values in one pass with its scores in the L2
//!   cache, vectorised across the block's queries (`fused_attention`), as PyTorch's CPU
//!   `scaled_dot_product_attention` (`aten/src/ATen/native/cpu/FlashAttentionKernel.cpp`) keeps
//!   a block's scores in cache; other dtypes take [`attention_tiled`], diffusers' sliced
//!   attention (`AttnProcessor` with `set_attention_slice`): query tiles with a vectorised
//!   in-place softmax between two matrix products.
//! * [`conv2d`] / [`conv2d_with`]: convolution as tiled unfold + matrix product written straight
//!   into NCHW order, with the bias, a per-image bias, a residual and nearest 2x upsampling
//!   folded in; float16 and bfloat16 computed in float32. Large 3x3 stride-1 convolutions go
//!   through Winograd F(4x4, 3x3) or F(2x2, 3x3) instead (4x or 2.25x fewer multiplications).
//! * [`group_norm`]: group normalisation, per-channel affine and optional SiLU in one operation
//!   (statistics in one pass, then one pass that writes the output), parallel over
//!   `(batch, group)` blocks, as PyTorch's CPU kernel is organised
//!   (`aten/src/ATen/native/cpu/group_norm_kernel.cpp`).
//! * [`layer_norm`], [`geglu`], [`gelu`], [`bias_residual`], [`qkv_attention`]: the element-wise
//!   steps of the text encoder's and the UNet's transformer layers in one pass each, so that a
//!   layer is matrix products plus these (candle 0.11.1 runs each element-wise op on a worker
//!   that spins afterwards, which on two cores takes a core from the matrix products).
//!
//! * [`project_to_tokens`], [`project_from_tokens`]: a spatial transformer's 1x1 (or linear)
//!   projections read and written across image order `[b, c, h, w]` and token order
//!   `[b, h·w, c]`, without the transposed copies between them.
//!
//! The element-wise loops run through `pulp` ([`pulp::Arch::dispatch`]): one generic body picks
//! AVX-512 (16 lanes), AVX2 (8) or scalar code at run time, without `unsafe` in this crate.

mod attention;
mod conv;
mod fused_attention;
mod gelu;
mod group_norm;
mod layer_norm;
mod qkv_attention;
mod residual;
mod simd;
mod softmax;
mod tokens;

pub use attention::{attention, attention_tiled};
pub use conv::{ConvOptions, conv2d, conv2d_with, release_kept_buffers};
pub use gelu::{Gelu, geglu, gelu};
pub use group_norm::group_norm;
pub use layer_norm::layer_norm;
pub use qkv_attention::qkv_attention;
pub use residual::bias_residual;
pub use tokens::{project_from_tokens, project_to_tokens};

/// The float32 contents of a contiguous CPU tensor, passed to `f`.
fn with_f32<R>(
    t: &candle_core::Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Err(candle_core::Error::Msg(
            "kernel: tensor is not on the CPU".into(),
        ));
    };
    let data = cpu.as_slice::<f32>()?;
    let start = layout.start_offset();
    let len = layout.shape().elem_count();
    match data.get(start..start + len) {
        Some(s) if layout.is_contiguous() => f(s),
        _ => Err(candle_core::Error::Msg(format!(
            "kernel: internal tensor is not contiguous ({:?}, offset {start} of {})",
            layout.stride(),
            data.len()
        ))),
    }
}

/// The float32 values of a contiguous CPU operand of one of the custom operations here, or an
/// error naming the operation `op`.
fn contiguous_f32<'a>(
    op: &str,
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'a [f32]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous");
    };
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: the input must be float32");
    };
    Ok(&data[start..end])
}

/// What the tests of these kernels share.
#[cfg(test)]
mod test_support {
    use candle_core::{DType, Result, Tensor};

    /// Largest `|a - b|` over all elements, in float32.
    pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()
    }
}
