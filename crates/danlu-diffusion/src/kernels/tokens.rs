//! A spatial transformer's input and output projections straight between image and token order.
//!
//! ldm's `SpatialTransformer` turns `[batch, c, h, w]` into tokens `[batch, h·w, c]` around its
//! projections (`rearrange(x, 'b c h w -> b (h w) c')` and back). As candle operations that is a
//! transposed copy on each side, gathered one value at a time on the calling thread while the
//! other cores wait (a 10 MiB copy per side and block at the 64x64 level). A per-position
//! projection (1x1 convolution or linear layer) does not need the copy: the matrix product reads
//! either operand through its strides, so here each image's product reads the other order
//! directly and one parallel pass adds the bias (and the residual) while storing it.

use super::with_f32;
use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

/// `weight · x + bias` at every position of `xs` `[batch, c, h, w]`, returned in token order
/// `[batch, h·w, o]`; `weight` is `[o, c]` (or `[o, c, 1, 1]`), `bias` `[o]`. The same values as
/// the projection followed by `reshape` and `transpose(1, 2)`, without the transposed copy.
///
/// # Errors
/// When the shapes do not fit as above.
pub fn project_to_tokens(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    let o = weight.dim(0)?;
    let weight = weight.reshape((o, c))?;
    let hw = h * w;
    if !fast(xs) {
        let tokens = xs.reshape((b, c, hw))?.transpose(1, 2)?.contiguous()?;
        let out = tokens.broadcast_matmul(&weight.to_dtype(xs.dtype())?.t()?)?;
        return match bias {
            Some(bias) => out.broadcast_add(&bias.to_dtype(out.dtype())?),
            None => Ok(out),
        };
    }
    let bias = bias_values(bias, o)?;
    let x = xs.contiguous()?;
    let weight_t = weight.to_dtype(DType::F32)?.t()?;
    let mut out = vec![0f32; b * hw * o];
    for (image, dst) in out.chunks_exact_mut(hw * o).enumerate() {
        // `[h·w, c]` read through the image's `[c, h·w]` strides.
        let product = x.get(image)?.reshape((c, hw))?.t()?.matmul(&weight_t)?;
        with_f32(&product, |p| {
            dst.par_chunks_mut(o)
                .zip(p.par_chunks(o))
                .for_each(|(d, p)| {
                    for ((d, &p), &b) in d.iter_mut().zip(p).zip(&bias) {
                        *d = p + b;
                    }
                });
            Ok(())
        })?;
    }
    Tensor::from_vec(out, (b, hw, o), &Device::Cpu)
}

/// `weight · t + bias (+ residual)` for every token of `tokens` `[batch, h·w, c]`, returned in
/// image order `[batch, o, h, w]`; `weight` is `[o, c]` (or `[o, c, 1, 1]`), `bias` `[o]`,
/// `residual` `[batch, o, h, w]`. The same values as `transpose(1, 2)`, `reshape` and the
/// projection, without the transposed copy.
///
/// # Errors
/// When the shapes do not fit as above.
pub fn project_from_tokens(
    tokens: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let (b, hw, c) = tokens.dims3()?;
    let o = weight.dim(0)?;
    let weight = weight.reshape((o, c))?;
    if hw != h * w {
        candle_core::bail!("project_from_tokens: {hw} tokens for a {h}x{w} image");
    }
    if let Some(r) = residual
        && r.dims() != [b, o, h, w]
    {
        candle_core::bail!(
            "project_from_tokens: residual {:?} for an output of {:?}",
            r.dims(),
            [b, o, h, w]
        );
    }
    if !fast(tokens) || residual.is_some_and(|r| !fast(r)) {
        let out = tokens.broadcast_matmul(&weight.to_dtype(tokens.dtype())?.t()?)?;
        let out = match bias {
            Some(bias) => out.broadcast_add(&bias.to_dtype(out.dtype())?)?,
            None => out,
        };
        let out = out.transpose(1, 2)?.contiguous()?.reshape((b, o, h, w))?;
        return match residual {
            Some(r) => out + r.to_dtype(tokens.dtype())?,
            None => Ok(out),
        };
    }
    let bias = bias_values(bias, o)?;
    let t = tokens.contiguous()?;
    let weight = weight.to_dtype(DType::F32)?.contiguous()?;
    let residual = residual.map(Tensor::contiguous).transpose()?;
    let mut out = vec![0f32; b * o * hw];
    for (image, dst) in out.chunks_exact_mut(o * hw).enumerate() {
        // `[c, h·w]` read through the image's `[h·w, c]` strides.
        let product = weight.matmul(&t.get(image)?.t()?)?;
        let mut store = |res: Option<&[f32]>| {
            with_f32(&product, |p| {
                dst.par_chunks_mut(hw)
                    .zip(p.par_chunks(hw))
                    .enumerate()
                    .for_each(|(oc, (d, p))| {
                        let b = bias[oc];
                        match res {
                            Some(r) => {
                                let r = &r[(image * o + oc) * hw..][..hw];
                                for ((d, &p), &r) in d.iter_mut().zip(p).zip(r) {
                                    *d = p + b + r;
                                }
                            }
                            None => {
                                for (d, &p) in d.iter_mut().zip(p) {
                                    *d = p + b;
                                }
                            }
                        }
                    });
                Ok(())
            })
        };
        match &residual {
            Some(r) => with_f32(r, |r| store(Some(r)))?,
            None => store(None)?,
        }
    }
    Tensor::from_vec(out, (b, o, h, w), &Device::Cpu)
}

/// Float32 on the CPU: what the passes here compute; anything else takes candle's operations.
fn fast(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The `o` bias values in float32 (zeros without a bias).
fn bias_values(bias: Option<&Tensor>, o: usize) -> Result<Vec<f32>> {
    match bias {
        Some(b) if b.dims() == [o] => b.to_dtype(DType::F32)?.to_vec1(),
        Some(b) => candle_core::bail!("projection: bias {:?} for {o} outputs", b.dims()),
        None => Ok(vec![0.0; o]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::max_abs_diff;

    fn random(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?.to_dtype(dtype)
    }

    /// The projection as ldm writes it: a product per position in token order, with the
    /// reshapes and transposed copies around it, in float64.
    fn plain_tokens(xs: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let o = weight.dim(0)?;
        let tokens = xs
            .to_dtype(DType::F64)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let weight = weight.to_dtype(DType::F64)?.reshape((o, c))?;
        tokens
            .broadcast_matmul(&weight.t()?)?
            .broadcast_add(&bias.to_dtype(DType::F64)?)
    }

    /// Both directions against the plain chain, in float32 (the parallel passes) and in float16
    /// and float64 (candle's operations), for a 1x1 convolution's `[o, c, 1, 1]` weight and a
    /// linear layer's `[o, c]`. Outputs are sums of 24 products of unit-normal values (about 5
    /// in size), so 1e-4 is float32 rounding and far below a wrong position, channel or image.
    #[test]
    fn projections_match_the_transposed_chain() -> Result<()> {
        let (b, c, o, h, w) = (2, 24, 16, 5, 7);
        for dtype in [DType::F32, DType::F64, DType::F16] {
            let tol = if dtype == DType::F16 { 0.05 } else { 1e-4 };
            let xs = random(&[b, c, h, w], dtype)?;
            let bias = random(&[o], dtype)?;
            let residual = random(&[b, o, h, w], dtype)?;
            for weight in [random(&[o, c, 1, 1], dtype)?, random(&[o, c], dtype)?] {
                let want = plain_tokens(&xs, &weight, &bias)?;
                let got = project_to_tokens(&xs, &weight, Some(&bias))?;
                assert_eq!(got.dims(), [b, h * w, o]);
                assert_eq!(got.dtype(), dtype);
                let diff = max_abs_diff(&got, &want)?;
                assert!(diff < tol, "{dtype:?} to tokens: max difference {diff}");

                // Back: tokens `[b, h·w, c]` to an image, plus the residual.
                let tokens = random(&[b, h * w, c], dtype)?;
                let image = tokens
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b, c, h, w))?;
                let want = (plain_tokens(&image, &weight, &bias)?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((b, o, h, w))?
                    + residual.to_dtype(DType::F64)?)?;
                let got =
                    project_from_tokens(&tokens, &weight, Some(&bias), Some(&residual), (h, w))?;
                assert_eq!(got.dims(), [b, o, h, w]);
                assert_eq!(got.dtype(), dtype);
                let diff = max_abs_diff(&got, &want)?;
                assert!(diff < tol, "{dtype:?} from tokens: max difference {diff}");
                let no_extras = project_from_tokens(&tokens, &weight, None, None, (h, w))?;
                let want = image
                    .to_dtype(DType::F64)?
                    .reshape((b, c, h * w))?
                    .transpose(1, 2)?
                    .broadcast_matmul(&weight.to_dtype(DType::F64)?.reshape((o, c))?.t()?)?
                    .transpose(1, 2)?
                    .reshape((b, o, h, w))?;
                let diff = max_abs_diff(&no_extras, &want)?;
                assert!(diff < tol, "{dtype:?} without bias: max difference {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let tokens = random(&[1, 12, 4], DType::F32)?;
        let weight = random(&[3, 4], DType::F32)?;
        assert!(project_from_tokens(&tokens, &weight, None, None, (3, 5)).is_err());
        let residual = random(&[1, 3, 4, 4], DType::F32)?;
        assert!(project_from_tokens(&tokens, &weight, None, Some(&residual), (3, 4)).is_err());
        let bias = random(&[4], DType::F32)?;
        let xs = random(&[1, 4, 3, 4], DType::F32)?;
        assert!(project_to_tokens(&xs, &weight, Some(&bias)).is_err());
        Ok(())
    }
}
