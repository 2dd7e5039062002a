//! A linear layer's bias and the residual added in one pass: `residual + (x + bias)`.
//!
//! After `y = x Wᵀ` (a matrix product without the bias), a transformer layer adds the bias and
//! then the residual stream: two candle operations, each a whole-tensor pass that allocates its
//! result and, above 64 Ki values, forks candle's own worker threads, which then spin waiting for
//! more work while rayon's threads run the next matrix product. Here, on the CPU in float32, it
//! is one rayon pass. Other devices and dtypes use the two candle operations.

use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Output values per parallel task.
const TASK_VALUES: usize = 1 << 14;

/// `residual + (x + bias)`, `bias` (optional) broadcast over the last dimension; `x` and
/// `residual` of one shape and dtype. The sum is rounded in that order, as the two candle
/// operations it replaces round it.
///
/// # Errors
/// When the shapes differ or `bias` does not hold as many values as the last dimension.
pub fn bias_residual(x: &Tensor, bias: Option<&Tensor>, residual: &Tensor) -> Result<Tensor> {
    if x.dims() != residual.dims() {
        candle_core::bail!(
            "bias_residual: x {:?} and residual {:?} differ",
            x.dims(),
            residual.dims()
        );
    }
    let cols = x.dim(D::Minus1)?;
    if let Some(bias) = bias
        && bias.elem_count() != cols
    {
        candle_core::bail!(
            "bias_residual: bias {:?} does not hold {cols} values",
            bias.dims()
        );
    }
    let fast = x.device().is_cpu()
        && x.dtype() == DType::F32
        && residual.dtype() == DType::F32
        && cols > 0;
    if !fast {
        let y = match bias {
            Some(bias) => x.broadcast_add(bias)?,
            None => x.clone(),
        };
        return residual + y;
    }
    let bias = match bias {
        Some(bias) => bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        None => vec![0.0; cols],
    };
    x.contiguous()?
        .apply_op2_no_bwd(&residual.contiguous()?, &BiasResidual { bias })
}

/// The CPU operation behind [`bias_residual`] (float32).
struct BiasResidual {
    bias: Vec<f32>,
}

impl CustomOp2 for BiasResidual {
    fn name(&self) -> &'static str {
        "danlu-bias-residual"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        r: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(self.name(), x, xl)?;
        let r = super::contiguous_f32(self.name(), r, rl)?;
        let cols = self.bias.len();
        let mut y = vec![0f32; x.len()];
        let block = (TASK_VALUES / cols).max(1) * cols;
        y.par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(r.par_chunks(block)))
            .for_each(|(y, (x, r))| {
                let rows = y
                    .chunks_exact_mut(cols)
                    .zip(x.chunks_exact(cols).zip(r.chunks_exact(cols)));
                for (y, (x, r)) in rows {
                    for ((y, x), (r, b)) in y.iter_mut().zip(x).zip(r.iter().zip(&self.bias)) {
                        *y = r + (x + b);
                    }
                }
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Bit for bit the two candle operations (same rounding order), with and without a bias, and
    /// with more rows than one task holds.
    #[test]
    fn matches_candle_ops_exactly() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, cols) in [(3, 5), (154, 768), (1000, 33)] {
            let x = Tensor::randn(0f32, 1.0, (2, rows, cols), &dev)?;
            let r = Tensor::randn(0f32, 1.0, (2, rows, cols), &dev)?;
            let b = Tensor::randn(0f32, 1.0, cols, &dev)?;
            let want = (&r + x.broadcast_add(&b)?)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let got = bias_residual(&x, Some(&b), &r)?;
            assert_eq!(got.dims(), x.dims());
            assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want);
            let want = (&r + &x)?.flatten_all()?.to_vec1::<f32>()?;
            let got = bias_residual(&x, None, &r)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            assert_eq!(got, want);
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 4), DType::F32, &dev)?;
        let r = Tensor::zeros((2, 5), DType::F32, &dev)?;
        assert!(bias_residual(&x, None, &r).is_err());
        let b = Tensor::zeros(3, DType::F32, &dev)?;
        assert!(bias_residual(&x, Some(&b), &x).is_err());
        Ok(())
    }
}
