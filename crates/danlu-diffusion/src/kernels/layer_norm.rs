//! Layer normalisation over the last dimension, `torch.nn.LayerNorm(width)`.
//!
//! candle-nn's CPU operation sums `x` and `x^2` of a row one value after the other in float32
//! (a chain of dependent additions, and a variance `E[x^2] - mean^2` that cancels when the mean
//! is large next to the spread). Here, on the CPU in float32, each row takes two vectorised
//! passes for its statistics (the mean, then the mean square of `x - mean`, in float32 lanes
//! summed in float64) and one for `(x - mean) * rstd * weight + bias`, rows split over rayon's
//! threads. Other devices and dtypes use candle-nn's `LayerNorm`.

use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Result, Shape, Tensor};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Values per parallel task.
const TASK_VALUES: usize = 1 << 14;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension of `x` (biased
/// variance, as `torch.nn.LayerNorm`); `weight` and `bias` (optional) hold one value per element
/// of that dimension. Same shape and dtype as `x`.
///
/// # Errors
/// When `weight` or `bias` does not hold as many values as the last dimension.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    let cols = x.dim(D::Minus1)?;
    let sizes_ok = weight.elem_count() == cols && bias.is_none_or(|b| b.elem_count() == cols);
    if !sizes_ok {
        candle_core::bail!(
            "layer_norm: weight {:?} and bias {:?} must hold {cols} values",
            weight.dims(),
            bias.map(Tensor::dims)
        );
    }
    if !(x.device().is_cpu() && x.dtype() == DType::F32) || cols == 0 {
        let norm = match bias {
            Some(b) => candle_nn::LayerNorm::new(weight.clone(), b.clone(), eps),
            None => candle_nn::LayerNorm::new_no_bias(weight.clone(), eps),
        };
        return candle_core::Module::forward(&norm, x);
    }
    let values =
        |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
    let op = LayerNorm {
        weight: values(weight)?,
        bias: match bias {
            Some(b) => values(b)?,
            None => vec![0.0; cols],
        },
        eps,
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// The CPU operation behind [`layer_norm`] (float32).
struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f64,
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "danlu-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(self.name(), storage, layout)?;
        let cols = self.weight.len().max(1);
        let mut y = vec![0f32; x.len()];
        let block = (TASK_VALUES / cols).max(1) * cols;
        y.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .for_each(|(y, x)| {
                Arch::new().dispatch(Rows {
                    x,
                    y,
                    weight: &self.weight,
                    bias: &self.bias,
                    eps: self.eps,
                });
            });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

/// Rows of `weight.len()` values.
struct Rows<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f64,
}

impl WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let cols = self.weight.len().max(1);
        let (wh, wt) = S::as_simd_f32s(self.weight);
        let (bh, bt) = S::as_simd_f32s(self.bias);
        for (x, y) in self.x.chunks_exact(cols).zip(self.y.chunks_exact_mut(cols)) {
            let (xh, xt) = S::as_simd_f32s(x);
            let zero = s.splat_f32s(0.0);
            let (mut s0, mut s1) = (zero, zero);
            let mut pairs = xh.chunks_exact(2);
            for p in &mut pairs {
                s0 = s.add_f32s(s0, p[0]);
                s1 = s.add_f32s(s1, p[1]);
            }
            for v in pairs.remainder() {
                s0 = s.add_f32s(s0, *v);
            }
            let sum = f64::from(s.reduce_sum_f32s(s0))
                + f64::from(s.reduce_sum_f32s(s1))
                + xt.iter().map(|&v| f64::from(v)).sum::<f64>();
            let mean = sum / cols as f64;
            let m = s.splat_f32s(mean as f32);
            let (mut q0, mut q1) = (zero, zero);
            let mut pairs = xh.chunks_exact(2);
            for p in &mut pairs {
                let d0 = s.sub_f32s(p[0], m);
                let d1 = s.sub_f32s(p[1], m);
                q0 = s.mul_add_e_f32s(d0, d0, q0);
                q1 = s.mul_add_e_f32s(d1, d1, q1);
            }
            for v in pairs.remainder() {
                let d = s.sub_f32s(*v, m);
                q0 = s.mul_add_e_f32s(d, d, q0);
            }
            let sq = f64::from(s.reduce_sum_f32s(q0))
                + f64::from(s.reduce_sum_f32s(q1))
                + xt.iter()
                    .map(|&v| (f64::from(v) - f64::from(mean as f32)).powi(2))
                    .sum::<f64>();
            let rstd = s.splat_f32s((1.0 / (sq / cols as f64 + self.eps).sqrt()) as f32);
            let (yh, yt) = S::as_mut_simd_f32s(y);
            for ((y, x), (w, b)) in yh.iter_mut().zip(xh).zip(wh.iter().zip(bh)) {
                let n = s.mul_f32s(s.sub_f32s(*x, m), rstd);
                *y = s.mul_add_e_f32s(n, *w, *b);
            }
            let load = |v: &[f32]| s.partial_load_f32s(v);
            let n = s.mul_f32s(s.sub_f32s(load(xt), m), rstd);
            s.partial_store_f32s(yt, s.mul_add_e_f32s(n, load(wt), load(bt)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against a float64 layer norm of the same values: rows of CLIP's widths and odd ones
    /// (partial vectors), values with a mean far from zero (where `E[x^2] - mean^2` in float32
    /// would lose digits), with and without a bias. The output is of size about 1-3, so 1e-5
    /// absolute is a few float32 ulp; on top of that, float32 arithmetic on inputs near `mean`
    /// carries their rounding, `eps |mean|` (4 ulp here), scaled by `|weight| / std` into the
    /// output.
    #[test]
    fn matches_f64() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, cols, offset) in [(154, 768, 0.0), (7, 1024, 50.0), (30, 33, 3.0), (2, 5, 0.0)] {
            let x = (Tensor::randn(0f32, 1.0, (rows, cols), &dev)? + offset)?;
            let w = Tensor::randn(0f32, 1.0, cols, &dev)?;
            let b = Tensor::randn(0f32, 1.0, cols, &dev)?;
            for bias in [Some(&b), None] {
                let got = layer_norm(&x, &w, bias, 1e-5)?.to_vec2::<f32>()?;
                let (xs, ws) = (x.to_vec2::<f32>()?, w.to_vec1::<f32>()?);
                let bs = match bias {
                    Some(b) => b.to_vec1::<f32>()?,
                    None => vec![0.0; cols],
                };
                for (row, out) in xs.iter().zip(&got) {
                    let n = cols as f64;
                    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
                    let var = row
                        .iter()
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum::<f64>()
                        / n;
                    for (i, (&v, &o)) in row.iter().zip(out).enumerate() {
                        let want = (f64::from(v) - mean) / (var + 1e-5).sqrt() * f64::from(ws[i])
                            + f64::from(bs[i]);
                        let carried = 4.0 * f64::from(f32::EPSILON) * mean.abs() / var.sqrt()
                            * f64::from(ws[i]).abs();
                        assert!(
                            (f64::from(o) - want).abs() < 1e-5 * (1.0 + want.abs()) + carried,
                            "{rows}x{cols} +{offset}: {o} vs {want}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Float16 runs through candle-nn and agrees with the float32 kernel to float16 rounding.
    #[test]
    fn float16_matches_float32() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (9, 64), &dev)?;
        let w = Tensor::randn(0f32, 1.0, 64, &dev)?;
        let b = Tensor::randn(0f32, 1.0, 64, &dev)?;
        let want = layer_norm(&x, &w, Some(&b), 1e-5)?;
        let half = |t: &Tensor| t.to_dtype(DType::F16);
        let got = layer_norm(&half(&x)?, &half(&w)?, Some(&half(&b)?), 1e-5)?;
        assert_eq!(got.dtype(), DType::F16);
        let diff = (got.to_dtype(DType::F32)? - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 2e-2, "{diff}");
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4), DType::F32, &dev)?;
        let w = Tensor::zeros(3, DType::F32, &dev)?;
        assert!(layer_norm(&x, &w, None, 1e-5).is_err());
        let w = Tensor::zeros(4, DType::F32, &dev)?;
        let b = Tensor::zeros(5, DType::F32, &dev)?;
        assert!(layer_norm(&x, &w, Some(&b), 1e-5).is_err());
        Ok(())
    }
}
