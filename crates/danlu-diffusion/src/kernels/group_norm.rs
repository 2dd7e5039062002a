//! Group normalisation with a per-channel affine transform and an optional SiLU after it.
//!
//! On the CPU, for float32, float16 and bfloat16, this is one custom operation: per
//! `(batch, group)` block, in parallel over blocks, one pass computes the mean and variance and
//! a second pass writes `(x - x0) * a_c + b_c` (then SiLU) for each channel `c`, with `x0` the
//! block's first value, `a_c = weight_c / sqrt(var + eps)` and
//! `b_c = bias_c - (mean - x0) * a_c`. That is the structure of PyTorch's CPU kernel
//! (`aten/src/ATen/native/cpu/group_norm_kernel.cpp`: moments per group, then
//! `x * scale + bias` per channel); subtracting `x0` first keeps the rounding of the affine step
//! proportional to the spread of the values rather than to their mean. candle-nn's `GroupNorm`
//! instead chains a dozen whole-tensor operations, each allocating its result. Other devices and
//! dtypes use that chain.

use super::simd;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::slice::HalfFloatSliceExt;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Vectors summed in float32 before the partial sums move to float64: 64 vectors are 1024
/// values at AVX-512 width, so each lane adds 32 values, and with them the rounding error of a
/// block stays near float32's epsilon while the float64 total does not grow with the group.
const BLOCK_VECS: usize = 64;

/// Group normalisation of `xs` (`[N, C, ...spatial]`, any float dtype) over `groups` groups of
/// channels, then `y * weight[c] + bias[c]` and, when `silu` is set, `y * sigmoid(y)`, as
/// `torch.nn.GroupNorm` (followed by `torch.nn.SiLU`).
///
/// `weight` and `bias` hold `C` values. The statistics are computed in float32 or wider for
/// float16 and bfloat16 inputs (as PyTorch and `candle_nn::GroupNorm` do), in float64 sums on the
/// CPU. The output has the dtype and shape of `xs`.
///
/// # Errors
/// When `xs` has fewer than 3 dimensions, `groups` does not divide `C`, or `weight` or `bias`
/// does not hold `C` values.
pub fn group_norm(
    xs: &Tensor,
    groups: usize,
    eps: f64,
    weight: &Tensor,
    bias: &Tensor,
    silu: bool,
) -> Result<Tensor> {
    let dims = xs.dims();
    if dims.len() < 3 {
        candle_core::bail!("group_norm: input rank must be at least 3, got shape {dims:?}");
    }
    let c = dims[1];
    if groups == 0 || !c.is_multiple_of(groups) {
        candle_core::bail!("group_norm: {c} channels do not split into {groups} groups");
    }
    if weight.elem_count() != c || bias.elem_count() != c {
        candle_core::bail!(
            "group_norm: weight {:?} and bias {:?} must hold {c} values",
            weight.dims(),
            bias.dims()
        );
    }
    let fast = xs.device().is_cpu() && matches!(xs.dtype(), DType::F32 | DType::F16 | DType::BF16);
    if !fast {
        return group_norm_candle(xs, groups, eps, weight, bias, silu);
    }
    let op = GroupNorm {
        groups,
        eps,
        weight: weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        bias: bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        silu,
    };
    xs.contiguous()?.apply_op1_no_bwd(&op)
}

/// The same computation with candle operations, for any device.
fn group_norm_candle(
    xs: &Tensor,
    groups: usize,
    eps: f64,
    weight: &Tensor,
    bias: &Tensor,
    silu: bool,
) -> Result<Tensor> {
    let dims = xs.dims();
    let (n, c) = (dims[0], dims[1]);
    let dtype = xs.dtype();
    let internal = match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    };
    let size = dims[2..].iter().product::<usize>() * (c / groups);
    let x = xs.reshape((n, groups, size))?.to_dtype(internal)?;
    let mean = (x.sum_keepdim(2)? / size as f64)?;
    let x = x.broadcast_sub(&mean)?;
    let var = (x.sqr()?.sum_keepdim(2)? / size as f64)?;
    let x = x.broadcast_div(&(var + eps)?.sqrt()?)?;
    let mut w_dims = vec![1; dims.len()];
    w_dims[1] = c;
    let weight = weight.to_dtype(internal)?.reshape(w_dims.clone())?;
    let bias = bias.to_dtype(internal)?.reshape(w_dims)?;
    let y = x
        .reshape(dims)?
        .broadcast_mul(&weight)?
        .broadcast_add(&bias)?;
    let y = if silu { candle_nn::ops::silu(&y)? } else { y };
    y.to_dtype(dtype)
}

/// The CPU operation behind [`group_norm`]; the affine parameters are widened to float32 once.
struct GroupNorm {
    groups: usize,
    eps: f64,
    weight: Vec<f32>,
    bias: Vec<f32>,
    silu: bool,
}

impl GroupNorm {
    /// Normalises the contiguous float32 `x` into `y`, one rayon task per `(batch, group)`
    /// block of `block` values (channels of `spatial` values each).
    fn run_f32(&self, x: &[f32], y: &mut [f32], spatial: usize, block: usize) {
        x.par_chunks(block)
            .zip(y.par_chunks_mut(block))
            .enumerate()
            .for_each(|(i, (x, y))| self.run_block(i, x, y, spatial));
    }

    /// Normalises block `i` (`x` to `y`, both `block` values).
    fn run_block(&self, i: usize, x: &[f32], y: &mut [f32], spatial: usize) {
        let per_group = self.weight.len() / self.groups;
        let c0 = (i % self.groups) * per_group;
        Arch::new().dispatch(Block {
            x,
            y,
            spatial,
            weight: &self.weight[c0..c0 + per_group],
            bias: &self.bias[c0..c0 + per_group],
            eps: self.eps,
            silu: self.silu,
        });
    }

    /// Float16 or bfloat16 through float32: each task widens its block into a scratch buffer,
    /// normalises it there and rounds the result into the returned buffer.
    fn run_half<T: Send + Sync + Copy + Default>(
        &self,
        x: &[T],
        spatial: usize,
        block: usize,
    ) -> Vec<T>
    where
        [T]: HalfFloatSliceExt,
    {
        let mut y = vec![T::default(); x.len()];
        if spatial == 0 {
            return y;
        }
        x.par_chunks(block)
            .zip(y.par_chunks_mut(block))
            .enumerate()
            .for_each_init(
                || (vec![0f32; block], vec![0f32; block]),
                |(xs, ys), (i, (x, y))| {
                    x.convert_to_f32_slice(xs);
                    self.run_block(i, xs, ys, spatial);
                    y.convert_from_f32_slice(ys);
                },
            );
        y
    }
}

impl CustomOp1 for GroupNorm {
    fn name(&self) -> &'static str {
        "danlu-group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the input must be contiguous", self.name());
        };
        let dims = layout.dims();
        let spatial = dims.get(2..).unwrap_or(&[]).iter().product::<usize>();
        let block = spatial * (self.weight.len() / self.groups);
        let shape = layout.shape().clone();
        let len = end - start;
        // `par_chunks` needs a non-zero chunk; an empty block means an empty tensor.
        let block = block.max(1);
        let out = match storage {
            CpuStorage::F32(data) => {
                let mut y = vec![0f32; len];
                if spatial > 0 {
                    self.run_f32(&data[start..end], &mut y, spatial, block);
                }
                CpuStorage::F32(y)
            }
            CpuStorage::F16(data) => {
                CpuStorage::F16(self.run_half(&data[start..end], spatial, block))
            }
            CpuStorage::BF16(data) => {
                CpuStorage::BF16(self.run_half(&data[start..end], spatial, block))
            }
            _ => candle_core::bail!("{}: the input must be f32, f16 or bf16", self.name()),
        };
        Ok((out, shape))
    }
}

/// One `(batch, group)` block: `weight.len()` channels of `spatial` values each.
struct Block<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    spatial: usize,
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f64,
    silu: bool,
}

impl WithSimd for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Some(&x0) = self.x.first() else {
            return;
        };
        let (mean, var) = moments(s, self.x, x0);
        let rstd = 1.0 / (var + self.eps).sqrt();
        let channels = self
            .x
            .chunks_exact(self.spatial)
            .zip(self.y.chunks_exact_mut(self.spatial));
        for ((x, y), (&w, &b)) in channels.zip(self.weight.iter().zip(self.bias)) {
            let a = rstd * f64::from(w);
            let shift = f64::from(b) - mean * a;
            if self.silu {
                affine_silu(s, x, y, x0, a as f32, shift as f32);
            } else {
                affine(s, x, y, x0, a as f32, shift as f32);
            }
        }
    }
}

/// `mean - x0` and the (biased) variance of the non-empty `x` in one pass. The sums are of
/// `x - x0` (the shifted-data algorithm, so that a mean far from zero does not cancel the
/// variance away), in float32 vectors over blocks of [`BLOCK_VECS`] and in float64 across blocks.
#[inline(always)]
fn moments<S: Simd>(s: S, x: &[f32], first: f32) -> (f64, f64) {
    let (head, tail) = S::as_simd_f32s(x);
    let shift = s.splat_f32s(first);
    let zero = s.splat_f32s(0.0);
    let (mut sum, mut sumsq) = (0f64, 0f64);
    for block in head.chunks(BLOCK_VECS) {
        let (mut s0, mut s1, mut q0, mut q1) = (zero, zero, zero, zero);
        let mut pairs = block.chunks_exact(2);
        for pair in &mut pairs {
            let d0 = s.sub_f32s(pair[0], shift);
            let d1 = s.sub_f32s(pair[1], shift);
            s0 = s.add_f32s(s0, d0);
            s1 = s.add_f32s(s1, d1);
            q0 = s.mul_add_e_f32s(d0, d0, q0);
            q1 = s.mul_add_e_f32s(d1, d1, q1);
        }
        for &v in pairs.remainder() {
            let d = s.sub_f32s(v, shift);
            s0 = s.add_f32s(s0, d);
            q0 = s.mul_add_e_f32s(d, d, q0);
        }
        sum += f64::from(s.reduce_sum_f32s(s.add_f32s(s0, s1)));
        sumsq += f64::from(s.reduce_sum_f32s(s.add_f32s(q0, q1)));
    }
    for &v in tail {
        let d = f64::from(v - first);
        sum += d;
        sumsq += d * d;
    }
    let n = x.len() as f64;
    let mean = sum / n;
    let var = (sumsq / n - mean * mean).max(0.0);
    (mean, var)
}

/// `y = (x - x0) * a + b`.
#[inline(always)]
fn affine<S: Simd>(s: S, x: &[f32], y: &mut [f32], x0: f32, a: f32, b: f32) {
    let (xh, xt) = S::as_simd_f32s(x);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    let (x0, av, bv) = (s.splat_f32s(x0), s.splat_f32s(a), s.splat_f32s(b));
    for (y, &x) in yh.iter_mut().zip(xh) {
        *y = s.mul_add_e_f32s(s.sub_f32s(x, x0), av, bv);
    }
    let x = s.sub_f32s(s.partial_load_f32s(xt), x0);
    s.partial_store_f32s(yt, s.mul_add_e_f32s(x, av, bv));
}

/// `y = silu((x - x0) * a + b)`.
#[inline(always)]
fn affine_silu<S: Simd>(s: S, x: &[f32], y: &mut [f32], x0: f32, a: f32, b: f32) {
    let (xh, xt) = S::as_simd_f32s(x);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    let (x0, av, bv) = (s.splat_f32s(x0), s.splat_f32s(a), s.splat_f32s(b));
    for (y, &x) in yh.iter_mut().zip(xh) {
        *y = simd::silu(s, s.mul_add_e_f32s(s.sub_f32s(x, x0), av, bv));
    }
    let x = s.sub_f32s(s.partial_load_f32s(xt), x0);
    s.partial_store_f32s(yt, simd::silu(s, s.mul_add_e_f32s(x, av, bv)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::TestArch;
    use candle_core::Device;
    use half::{bf16, f16};

    /// Group norm in float64 of `x` (the input's values, already rounded to its dtype), with
    /// the magnitudes that the float32 computation rounds, for error bounds.
    struct Reference {
        y: Vec<f64>,
        /// Per element, `|x - x0| |a_c| + |b_c| + |weight_c|`: the two terms of the affine step
        /// (`x0` the block's first value, `a_c = weight_c * rstd`,
        /// `b_c = bias_c - (mean - x0) a_c`) and the scale of the error that a mean known to a few
        /// ulp of the standard deviation leaves (`a_c` times the deviation is `weight_c`).
        scale: Vec<f64>,
    }

    fn reference(
        x: &[f64],
        dims: &[usize],
        groups: usize,
        eps: f64,
        w: &[f64],
        b: &[f64],
        silu: bool,
    ) -> Reference {
        let c = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let per_group = c / groups;
        let block = per_group * spatial;
        let mut y = vec![0f64; x.len()];
        let mut scale = vec![0f64; x.len()];
        for (i, xs) in x.chunks(block).enumerate() {
            let mean = xs.iter().sum::<f64>() / block as f64;
            let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / block as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let x0 = xs[0];
            for (j, &v) in xs.iter().enumerate() {
                let ch = (i % groups) * per_group + j / spatial;
                let a = rstd * w[ch];
                let shift = b[ch] - (mean - x0) * a;
                let out = (v - mean) * rstd * w[ch] + b[ch];
                let k = i * block + j;
                y[k] = if silu {
                    out / (1.0 + (-out).exp())
                } else {
                    out
                };
                scale[k] = ((v - x0) * a).abs() + shift.abs() + w[ch].abs();
            }
        }
        Reference { y, scale }
    }

    fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
        t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
    }

    /// Runs `f` on inputs of every shape and option below, in `dtype`, against the float64
    /// reference; `tol(want, scale)` bounds the error of each element.
    fn check(
        dtype: DType,
        f: impl Fn(&Tensor, usize, f64, &Tensor, &Tensor, bool) -> Result<Tensor>,
        tol: impl Fn(f64, f64) -> f64,
    ) -> Result<()> {
        let dev = Device::Cpu;
        let cases: [(&[usize], usize, f64, f64); 6] = [
            (&[2, 320, 8, 8], 32, 1e-5, 0.0),
            (&[1, 64, 77], 32, 1e-6, 0.0),
            (&[3, 6, 5, 3], 3, 1e-5, 5.0),
            (&[1, 4, 1, 1], 2, 1e-5, 0.0),
            (&[2, 128, 3, 37], 32, 1e-6, -3.0),
            (&[1, 8, 2, 4, 5], 4, 1e-2, 1.0),
        ];
        for (dims, groups, eps, offset) in cases {
            let c = dims[1];
            let xs = (Tensor::randn(0f32, 1.5, dims, &dev)? + offset)?.to_dtype(dtype)?;
            let w = Tensor::randn(1f32, 0.5, c, &dev)?.to_dtype(dtype)?;
            let b = Tensor::randn(0f32, 0.5, c, &dev)?.to_dtype(dtype)?;
            for silu in [false, true] {
                let got = f(&xs, groups, eps, &w, &b, silu)?;
                assert_eq!(got.dims(), dims);
                assert_eq!(got.dtype(), dtype);
                let want = reference(
                    &to_f64(&xs)?,
                    dims,
                    groups,
                    eps,
                    &to_f64(&w)?,
                    &to_f64(&b)?,
                    silu,
                );
                for (k, (g, (&y, &m))) in to_f64(&got)?
                    .iter()
                    .zip(want.y.iter().zip(&want.scale))
                    .enumerate()
                {
                    assert!(
                        (g - y).abs() <= tol(y, m),
                        "{dtype:?} {dims:?} groups {groups} silu {silu}: element {k} is {g}, want {y}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Float32 bound: the affine step rounds its two terms, the statistics (float32 sums in
    /// short blocks) are off by a few ulp of the deviation, SiLU adds a few ulp of the result
    /// (exponential, division, product); 16 ulp of the magnitudes in [`Reference::scale`] plus
    /// the result's leaves a margin of about 4 over that, while a wrong mean, variance or channel
    /// index is off by O(1).
    fn tol_f32(want: f64, scale: f64) -> f64 {
        16.0 * f64::from(f32::EPSILON) * (scale + want.abs())
    }

    #[test]
    fn f32_matches_f64_reference() -> Result<()> {
        check(DType::F32, group_norm, tol_f32)
    }

    /// The candle-op path (used off the CPU, and for float64) computes the same thing.
    #[test]
    fn candle_path_matches_f64_reference() -> Result<()> {
        check(DType::F32, group_norm_candle, tol_f32)?;
        check(DType::F64, group_norm, tol_f32)
    }

    /// Float16 results are the float32 ones rounded once: half an ulp of float16 (2^-11
    /// relative) plus the float32 error; 2^-10 relative, with an absolute floor for the
    /// subnormal range, bounds that.
    #[test]
    fn f16_matches_f64_reference() -> Result<()> {
        check(DType::F16, group_norm, |y, m| {
            f64::from(f16::EPSILON) * y.abs() + tol_f32(y, m) + 1e-7
        })
    }

    /// Bfloat16 likewise with its 8-bit significand: 2^-7 relative bounds half an ulp (2^-8).
    #[test]
    fn bf16_matches_f64_reference() -> Result<()> {
        check(DType::BF16, group_norm, |y, m| {
            f64::from(bf16::EPSILON) * y.abs() + tol_f32(y, m) + 1e-30
        })
    }

    /// One block at every vector width (1, 8, 16 lanes), with channels whose length leaves
    /// partial vectors, against the float64 reference.
    #[test]
    fn block_at_every_width() {
        let (per_group, spatial) = (3, 37);
        let x: Vec<f32> = (0..per_group * spatial)
            .map(|i| ((i * 7919 % 211) as f32 - 90.0) / 17.0)
            .collect();
        let w = [0.5f32, -1.25, 2.0];
        let b = [0.1f32, 0.0, -0.7];
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        for silu in [false, true] {
            let want = reference(
                &wide(&x),
                &[1, per_group, spatial],
                1,
                1e-5,
                &wide(&w),
                &wide(&b),
                silu,
            );
            for arch in TestArch::all() {
                let mut y = vec![0f32; x.len()];
                arch.run(Block {
                    x: &x,
                    y: &mut y,
                    spatial,
                    weight: &w,
                    bias: &b,
                    eps: 1e-5,
                    silu,
                });
                for (k, (g, (&v, &m))) in y.iter().zip(want.y.iter().zip(&want.scale)).enumerate() {
                    let g = f64::from(*g);
                    assert!(
                        (g - v).abs() <= tol_f32(v, m),
                        "{arch:?} silu {silu}: element {k} is {g}, want {v}"
                    );
                }
            }
        }
    }

    /// A strided view (not contiguous) gives the same result as its contiguous copy.
    #[test]
    fn strided_input() -> Result<()> {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (2, 9, 4, 8), &dev)?.transpose(2, 3)?;
        let w = Tensor::randn(0f32, 1.0, 8, &dev)?;
        let b = Tensor::randn(0f32, 1.0, 8, &dev)?;
        let xs = xs.narrow(1, 1, 8)?;
        let got = group_norm(&xs, 4, 1e-5, &w, &b, true)?;
        let want = group_norm(&xs.contiguous()?, 4, 1e-5, &w, &b, true)?;
        let diff = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::ones(6, DType::F32, &dev)?;
        let xs = Tensor::zeros((2, 6, 4), DType::F32, &dev)?;
        assert!(group_norm(&xs, 4, 1e-5, &w, &w, false).is_err());
        assert!(group_norm(&xs, 0, 1e-5, &w, &w, false).is_err());
        assert!(group_norm(&xs.flatten_from(1)?, 3, 1e-5, &w, &w, false).is_err());
        let w5 = Tensor::ones(5, DType::F32, &dev)?;
        assert!(group_norm(&xs, 3, 1e-5, &w5, &w, false).is_err());
        assert!(group_norm(&xs, 3, 1e-5, &w, &w5, false).is_err());
        Ok(())
    }

    /// A constant group has variance 0: the output is exactly the bias (eps keeps it finite,
    /// and `x - x0` is 0).
    #[test]
    fn constant_input_gives_bias() -> Result<()> {
        let dev = Device::Cpu;
        let xs = Tensor::full(3f32, (1, 4, 5, 5), &dev)?;
        let w = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev)?;
        let b = Tensor::new(&[0.5f32, -1.0, 2.0, 0.0], &dev)?;
        let got = group_norm(&xs, 2, 1e-5, &w, &b, false)?;
        let got = got.mean((2, 3))?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(got, vec![0.5, -1.0, 2.0, 0.0]);
        Ok(())
    }
}
