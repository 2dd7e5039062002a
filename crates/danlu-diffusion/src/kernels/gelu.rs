//! GELU activations, with a bias folded in, and the GEGLU gate of the UNet's feed-forward.
//!
//! * [`gelu`]: `act(x + bias)` over the last dimension, for the exact (erf) GELU of
//!   `torch.nn.functional.gelu` and the `x * sigmoid(1.702 x)` "quick GELU" of OpenAI CLIP
//!   (transformers `QuickGELUActivation`).
//! * [`geglu`]: `(a + bias_a) * gelu(g + bias_g)` for `h = [a, g]` split in halves along the last
//!   dimension, ldm `GEGLU` (`x, gate = proj(x).chunk(2, dim=-1); x * F.gelu(gate)`), diffusers
//!   `GEGLU` alike; the projection's bias can be passed here instead of being added by a pass of
//!   its own.
//!
//! On the CPU in float32 (float16 and bfloat16 widened per block) each is one parallel pass
//! that reads the input once and writes the output once, with a vectorised normal CDF. candle's
//! chain for GEGLU adds the bias in a pass of its own, copies both halves (`narrow` +
//! `contiguous`), calls a scalar `erf` per value and multiplies in a further pass. Other devices and dtypes use that chain.
//!
//! The normal CDF `Phi(x)` (GELU is `x * Phi(x)`) is computed as `1 - q` for `x >= 0` and `q`
//! below, with `q = Phi(-|x|)`, so that the negative tail keeps its relative accuracy:
//! `q = t * exp(-u^2 / 2 + P(t))` with `u = |x|` and `t = 1 / (1 + u / (2 sqrt 2))`, the form of
//! Numerical Recipes' `erfcc` (Press et al., 2nd ed., section 6.2), with a degree-10 polynomial
//! `P` fitted here to `ln(Phi(-u) / t) + u^2 / 2` on `u` in `[0, 13.5]` (Chebyshev least squares
//! against mpmath, expressed in `z = A t + B`, which spans `[-1, 1]`; largest error of `P`
//! in float32 about 3e-7). The square `u^2` and the sum `-u^2 / 2 + P` are carried with their
//! rounding errors (fused multiply-add, TwoSum), which enter as a factor `1 + lo` after the
//! exponential: without that, the exponent's rounding (up to 4e-6 near `u = 13`) would cost tens
//! of ulp in the tail.

use super::simd::exp_neg;
use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Result, Shape, Tensor};
use half::slice::HalfFloatSliceExt;
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Which GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    /// `x * Phi(x)` with the normal CDF `Phi`, `torch.nn.functional.gelu(x)` (no tanh
    /// approximation): OpenCLIP, the UNet's GEGLU.
    Erf,
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP (transformers `QuickGELUActivation`).
    Quick,
}

/// Output values per parallel task: enough to amortise the task, small enough to balance.
const TASK_VALUES: usize = 1 << 14;

/// `1 / (2 sqrt 2)`: `t = 1 / (1 + C u)`.
const T_SCALE: f32 = 0.353_553_38;
/// `z = Z_A t + Z_B` maps `t` in `[1 / (1 + 13.5 C), 1]` onto `[-1, 1]`.
const Z_A: f32 = 2.419_026_1;
const Z_B: f32 = -1.419_026_3;
/// Beyond this `|x|`, `Phi(-|x|)` is below float32's normal range (`Phi(-13) = 6e-39`) and
/// taken as 0.
const TAIL: f32 = 13.0;
/// `P(z)` from the constant term up.
const P: [f32; 11] = [
    -1.247_255_9,
    0.566_061_8,
    0.014_813_531,
    -0.028_810_505,
    -0.000_872_120_6,
    0.003_551_644_7,
    -0.000_290_743_74,
    -0.000_499_094_37,
    0.000_125_174_08,
    5.009_977e-5,
    -2.099_722_4e-5,
];

/// `Phi(-|x|)` for every lane (see the module documentation).
#[inline(always)]
fn phi_tail<S: Simd>(s: S, u: S::f32s) -> S::f32s {
    let one = s.splat_f32s(1.0);
    let t = s.div_f32s(one, s.mul_add_e_f32s(u, s.splat_f32s(T_SCALE), one));
    let z = s.mul_add_e_f32s(t, s.splat_f32s(Z_A), s.splat_f32s(Z_B));
    let mut p = s.splat_f32s(P[10]);
    for &c in P[..10].iter().rev() {
        p = s.mul_add_e_f32s(p, z, s.splat_f32s(c));
    }
    // u^2 = uu + e exactly (a fused multiply-add gives the rounding error of the product).
    let uu = s.mul_f32s(u, u);
    let e = s.mul_add_f32s(u, u, s.neg_f32s(uu));
    let a = s.mul_f32s(uu, s.splat_f32s(-0.5));
    // a + p = sum + err exactly (TwoSum).
    let sum = s.add_f32s(a, p);
    let pp = s.sub_f32s(sum, a);
    let err = s.add_f32s(s.sub_f32s(a, s.sub_f32s(sum, pp)), s.sub_f32s(p, pp));
    let lo = s.mul_add_e_f32s(e, s.splat_f32s(-0.5), err);
    let te = s.mul_f32s(t, exp_neg(s, sum));
    let q = s.mul_add_e_f32s(te, lo, te);
    s.select_f32s(
        s.greater_than_f32s(u, s.splat_f32s(TAIL)),
        s.splat_f32s(0.0),
        q,
    )
}

/// `x * Phi(x)` for every lane.
#[inline(always)]
pub(crate) fn gelu_erf<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let q = phi_tail(s, s.abs_f32s(x));
    let phi = s.select_f32s(
        s.greater_than_or_equal_f32s(x, s.splat_f32s(0.0)),
        s.sub_f32s(s.splat_f32s(1.0), q),
        q,
    );
    s.mul_f32s(x, phi)
}

/// `x * sigmoid(1.702 x)` for every lane, through [`exp_neg`] of `-|1.702 x|` so that the
/// exponential never overflows.
#[inline(always)]
pub(crate) fn gelu_quick<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let y = s.mul_f32s(x, s.splat_f32s(1.702));
    let e = exp_neg(s, s.or_f32s(y, s.splat_f32s(-0.0)));
    let one = s.splat_f32s(1.0);
    let num = s.select_f32s(s.greater_than_or_equal_f32s(y, s.splat_f32s(0.0)), one, e);
    s.mul_f32s(x, s.div_f32s(num, s.add_f32s(one, e)))
}

/// An activation as a type, so that its body is inlined into the vector loop (a closure or
/// function value is called through a shim compiled without the loop's instruction set).
trait Act {
    fn apply<S: Simd>(s: S, x: S::f32s) -> S::f32s;
}

/// [`gelu_erf`].
struct ErfAct;
impl Act for ErfAct {
    #[inline(always)]
    fn apply<S: Simd>(s: S, x: S::f32s) -> S::f32s {
        gelu_erf(s, x)
    }
}

/// [`gelu_quick`].
struct QuickAct;
impl Act for QuickAct {
    #[inline(always)]
    fn apply<S: Simd>(s: S, x: S::f32s) -> S::f32s {
        gelu_quick(s, x)
    }
}

/// `y[j] = A(x[j] + b[j])` over three slices of one length.
#[inline(always)]
fn map_row<S: Simd, A: Act>(s: S, x: &[f32], b: &[f32], y: &mut [f32]) {
    let (xh, xt) = S::as_simd_f32s(x);
    let (bh, bt) = S::as_simd_f32s(b);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    for ((x, b), y) in xh.iter().zip(bh).zip(yh.iter_mut()) {
        *y = A::apply(s, s.add_f32s(*x, *b));
    }
    let v = A::apply(
        s,
        s.add_f32s(s.partial_load_f32s(xt), s.partial_load_f32s(bt)),
    );
    s.partial_store_f32s(yt, v);
}

/// `y[j] = (a[j] + ba[j]) * gelu(g[j] + bg[j])` over slices of one length.
#[inline(always)]
fn gate_row<S: Simd>(s: S, a: &[f32], g: &[f32], ba: &[f32], bg: &[f32], y: &mut [f32]) {
    let (ah, at) = S::as_simd_f32s(a);
    let (gh, gt) = S::as_simd_f32s(g);
    let (bah, bat) = S::as_simd_f32s(ba);
    let (bgh, bgt) = S::as_simd_f32s(bg);
    let (yh, yt) = S::as_mut_simd_f32s(y);
    let vectors = ah
        .iter()
        .zip(gh)
        .zip(bah.iter().zip(bgh))
        .zip(yh.iter_mut());
    for (((a, g), (ba, bg)), y) in vectors {
        let gate = gelu_erf(s, s.add_f32s(*g, *bg));
        *y = s.mul_f32s(s.add_f32s(*a, *ba), gate);
    }
    let load = |v: &[f32]| s.partial_load_f32s(v);
    let gate = gelu_erf(s, s.add_f32s(load(gt), load(bgt)));
    s.partial_store_f32s(yt, s.mul_f32s(s.add_f32s(load(at), load(bat)), gate));
}

/// Rows of `bias.len()` values: `y = act(x + bias)`.
struct ActRows<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    bias: &'a [f32],
    kind: Gelu,
}

impl WithSimd for ActRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let cols = self.bias.len().max(1);
        let rows = self.x.chunks_exact(cols).zip(self.y.chunks_exact_mut(cols));
        match self.kind {
            Gelu::Erf => {
                for (x, y) in rows {
                    map_row::<S, ErfAct>(s, x, self.bias, y);
                }
            }
            Gelu::Quick => {
                for (x, y) in rows {
                    map_row::<S, QuickAct>(s, x, self.bias, y);
                }
            }
        }
    }
}

/// Rows of `2 * inner` input values and `inner` output values: the GEGLU gate.
struct GateRows<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    /// `2 * inner` values (zeros when the caller has no bias).
    bias: &'a [f32],
}

impl WithSimd for GateRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let inner = (self.bias.len() / 2).max(1);
        let (ba, bg) = self.bias.split_at(self.bias.len() / 2);
        for (x, y) in self
            .x
            .chunks_exact(2 * inner)
            .zip(self.y.chunks_exact_mut(inner))
        {
            let (a, g) = x.split_at(inner);
            gate_row(s, a, g, ba, bg, y);
        }
    }
}

/// The CPU operation behind [`gelu`] and [`geglu`]: `bias` holds the last input dimension's
/// values (widened to float32); `gate` halves the last dimension.
struct Activation {
    bias: Vec<f32>,
    kind: Gelu,
    gate: bool,
}

impl Activation {
    /// Output values per input row.
    fn out_cols(&self) -> usize {
        if self.gate {
            self.bias.len() / 2
        } else {
            self.bias.len()
        }
    }

    /// `rows` rows of contiguous float32 `x` into `y`.
    fn run_f32(&self, x: &[f32], y: &mut [f32]) {
        let (cols, out) = (self.bias.len(), self.out_cols());
        let rows_per_task = (TASK_VALUES / out.max(1)).max(1);
        x.par_chunks(rows_per_task * cols)
            .zip(y.par_chunks_mut(rows_per_task * out))
            .for_each(|(x, y)| self.run_block(x, y));
    }

    fn run_block(&self, x: &[f32], y: &mut [f32]) {
        if self.gate {
            Arch::new().dispatch(GateRows {
                x,
                y,
                bias: &self.bias,
            });
        } else {
            Arch::new().dispatch(ActRows {
                x,
                y,
                bias: &self.bias,
                kind: self.kind,
            });
        }
    }

    /// Float16 or bfloat16 through float32, one widened block per task.
    fn run_half<T: Send + Sync + Copy + Default>(&self, x: &[T], rows: usize) -> Vec<T>
    where
        [T]: HalfFloatSliceExt,
    {
        let (cols, out) = (self.bias.len(), self.out_cols());
        let mut y = vec![T::default(); rows * out];
        let rows_per_task = (TASK_VALUES / out.max(1)).max(1);
        x.par_chunks(rows_per_task * cols)
            .zip(y.par_chunks_mut(rows_per_task * out))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(xs, ys): &mut (Vec<f32>, Vec<f32>), (x, y)| {
                    xs.resize(x.len(), 0.0);
                    ys.resize(y.len(), 0.0);
                    x.convert_to_f32_slice(xs);
                    self.run_block(xs, ys);
                    y.convert_from_f32_slice(ys);
                },
            );
        y
    }
}

impl CustomOp1 for Activation {
    fn name(&self) -> &'static str {
        if self.gate {
            "danlu-geglu"
        } else {
            "danlu-gelu"
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the input must be contiguous", self.name());
        };
        let cols = self.bias.len();
        let mut dims = layout.dims().to_vec();
        if cols == 0 || dims.last() != Some(&cols) {
            candle_core::bail!("{}: last dimension of {dims:?} is not {cols}", self.name());
        }
        let rows = (end - start) / cols;
        if let Some(last) = dims.last_mut() {
            *last = self.out_cols();
        }
        let out = match storage {
            CpuStorage::F32(data) => {
                let mut y = vec![0f32; rows * self.out_cols()];
                self.run_f32(&data[start..end], &mut y);
                CpuStorage::F32(y)
            }
            CpuStorage::F16(data) => CpuStorage::F16(self.run_half(&data[start..end], rows)),
            CpuStorage::BF16(data) => CpuStorage::BF16(self.run_half(&data[start..end], rows)),
            _ => candle_core::bail!("{}: the input must be f32, f16 or bf16", self.name()),
        };
        Ok((out, Shape::from(dims)))
    }
}

/// Whether the one-pass CPU operation handles `x`.
fn fast(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
}

/// The bias as float32 values, `cols` zeros without one.
fn bias_values(bias: Option<&Tensor>, cols: usize, what: &str) -> Result<Vec<f32>> {
    match bias {
        None => Ok(vec![0.0; cols]),
        Some(b) if b.elem_count() == cols => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1(),
        Some(b) => candle_core::bail!("{what}: bias {:?} does not hold {cols} values", b.dims()),
    }
}

/// `act(x + bias)`, with `bias` (optional) broadcast over the last dimension of `x`: the
/// activation of a linear layer whose bias has not been added yet. Same dtype and shape as `x`.
///
/// # Errors
/// When `bias` does not hold as many values as the last dimension of `x`.
pub fn gelu(x: &Tensor, bias: Option<&Tensor>, kind: Gelu) -> Result<Tensor> {
    let cols = x.dim(D::Minus1)?;
    if !fast(x) || cols == 0 {
        let x = match bias {
            Some(b) => x.broadcast_add(b)?,
            None => x.clone(),
        };
        return match kind {
            Gelu::Erf => x.gelu_erf(),
            Gelu::Quick => &x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?,
        };
    }
    let op = Activation {
        bias: bias_values(bias, cols, "gelu")?,
        kind,
        gate: false,
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

/// GEGLU: for `h` `[..., 2 * inner]` (a linear layer's output without its bias `bias`, optional,
/// of `2 * inner` values), `(a + bias_a) * gelu(g + bias_g)` with `a` the first `inner` values
/// of the last dimension and `g` the last `inner` (ldm `GEGLU`). Returns `[..., inner]` in the
/// dtype of `h`.
///
/// # Errors
/// When the last dimension is odd or `bias` does not hold as many values.
pub fn geglu(h: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let cols = h.dim(D::Minus1)?;
    if cols % 2 != 0 {
        candle_core::bail!("geglu: last dimension of {:?} is odd", h.dims());
    }
    if !fast(h) || cols == 0 {
        let h = match bias {
            Some(b) => h.broadcast_add(b)?,
            None => h.clone(),
        };
        let inner = cols / 2;
        return h.narrow(D::Minus1, 0, inner)? * h.narrow(D::Minus1, inner, inner)?.gelu_erf()?;
    }
    let op = Activation {
        bias: bias_values(bias, cols, "geglu")?,
        kind: Gelu::Erf,
        gate: true,
    };
    h.contiguous()?.apply_op1_no_bwd(&op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::TestArch;
    use crate::kernels::test_support::max_abs_diff;
    use candle_core::Device;

    /// `erfc(z)` for `z >= 0` in float64: the Taylor series of `erf` below 3 (terms up to about
    /// 1e3, so about 1e-13 absolute), the continued fraction
    /// `erfc(z) = exp(-z^2) / sqrt(pi) / (z + (1/2) / (z + 1 / (z + (3/2) / (z + ...))))`
    /// (Abramowitz and Stegun 7.1.14) from 3 on, where 200 terms converge far past float64.
    fn erfc(z: f64) -> f64 {
        if z < 3.0 {
            let (mut term, mut sum) = (z, z);
            for n in 1..200 {
                term *= -z * z / f64::from(n);
                sum += term / f64::from(2 * n + 1);
            }
            1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = z;
            for n in (1..200).rev() {
                f = z + f64::from(n) / 2.0 / f;
            }
            (-z * z).exp() / std::f64::consts::PI.sqrt() / f
        }
    }

    /// `Phi(x)`.
    fn phi(x: f64) -> f64 {
        let half = 0.5 * erfc(x.abs() / std::f64::consts::SQRT_2);
        if x < 0.0 { half } else { 1.0 - half }
    }

    /// The float64 reference against published values of the normal CDF (Abramowitz and
    /// Stegun table 26.1 and its tails: `Phi(-1) = 0.158655253931457`,
    /// `Phi(-3) = 1.349898031630095e-3`, `Phi(-5) = 2.866515718791939e-7`,
    /// `Phi(-10) = 7.619853024160527e-24`).
    #[test]
    fn reference_phi_matches_tables() {
        for (x, want) in [
            (0.0, 0.5),
            (-1.0, 0.158_655_253_931_457),
            (-3.0, 1.349_898_031_630_095e-3),
            (-5.0, 2.866_515_718_791_939e-7),
            (-10.0, 7.619_853_024_160_527e-24),
            (1.0, 1.0 - 0.158_655_253_931_457),
        ] {
            let got = phi(x);
            assert!(
                ((got - want) / want).abs() < 1e-12,
                "Phi({x}) = {got}, want {want}"
            );
        }
    }

    struct Map<'a>(&'a mut [f32], Gelu);
    impl WithSimd for Map<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            let zeros = vec![0.0; self.0.len()];
            let x = self.0.to_vec();
            match self.1 {
                Gelu::Erf => map_row::<S, ErfAct>(s, &x, &zeros, self.0),
                Gelu::Quick => map_row::<S, QuickAct>(s, &x, &zeros, self.0),
            }
        }
    }

    /// Inputs over `[-20, 20]`, dense near 0, plus special values.
    fn inputs() -> Vec<f32> {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 / 10_000.0).collect();
        xs.extend((-2000..=2000).map(|i| i as f32 / 100.0));
        xs.extend([
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-20,
            -1e-20,
            0.0,
            -0.0,
        ]);
        xs
    }

    /// The exact GELU against float64 at every vector width: within 6 ulp of the result
    /// relative, where that is not below float32's normal range (1e-37 absolute there).
    #[test]
    fn gelu_erf_matches_f64() {
        let xs = inputs();
        for arch in TestArch::all() {
            let mut got = xs.clone();
            arch.run(Map(&mut got, Gelu::Erf));
            let mut worst = 0f64;
            for (&g, &x) in got.iter().zip(&xs) {
                let x = f64::from(x);
                let want = x * phi(x);
                let err = (f64::from(g) - want).abs();
                assert!(
                    err <= 6.0 * f64::from(f32::EPSILON) * want.abs() + 1e-37,
                    "{arch:?}: gelu({x}) = {g}, want {want}"
                );
                if want.abs() > 1e-30 {
                    worst = worst.max(err / want.abs() / f64::from(f32::EPSILON));
                }
            }
            assert!(worst > 0.0, "{arch:?}: no rounding at all is not plausible");
        }
    }

    /// Quick GELU against float64 `x * sigmoid(1.702 x)` (with `1.702 x` rounded to float32 as
    /// PyTorch computes it): within 8 ulp relative, 1e-37 absolute where the result underflows.
    #[test]
    fn gelu_quick_matches_f64() {
        let xs = inputs();
        for arch in TestArch::all() {
            let mut got = xs.clone();
            arch.run(Map(&mut got, Gelu::Quick));
            for (&g, &x) in got.iter().zip(&xs) {
                let y = f64::from(x * 1.702);
                let want = f64::from(x) / (1.0 + (-y).exp());
                let err = (f64::from(g) - want).abs();
                assert!(
                    err <= 8.0 * f64::from(f32::EPSILON) * want.abs() + 1e-37,
                    "{arch:?}: quick_gelu({x}) = {g}, want {want}"
                );
            }
        }
    }

    /// Infinities and NaN: `gelu(+inf) = +inf`, NaN stays NaN.
    #[test]
    fn special_values() {
        for arch in TestArch::all() {
            let mut v = [f32::INFINITY, f32::NAN, 30.0, -30.0];
            arch.run(Map(&mut v, Gelu::Erf));
            assert_eq!(v[0], f32::INFINITY, "{arch:?}");
            assert!(v[1].is_nan(), "{arch:?}");
            assert_eq!(v[2], 30.0, "{arch:?}");
            assert_eq!(v[3], 0.0, "{arch:?}");
        }
    }

    /// GEGLU with and without a bias, against the candle chain it replaces (float32 erf in the
    /// chain, so 1e-6 absolute on values of size about 1-10), on odd widths (partial vectors)
    /// and more rows than one task holds.
    #[test]
    fn geglu_matches_candle_chain() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, inner) in [(3, 5), (2, 17), (40, 1280), (700, 33)] {
            let h = (Tensor::randn(0f32, 1.0, (2, rows, 2 * inner), &dev)? * 3.0)?;
            let bias = Tensor::randn(0f32, 1.0, 2 * inner, &dev)?;
            let hb = h.broadcast_add(&bias)?;
            let want = (hb.narrow(2, 0, inner)? * hb.narrow(2, inner, inner)?.gelu_erf()?)?;
            let got = geglu(&h, Some(&bias))?;
            assert_eq!(got.dims(), &[2, rows, inner]);
            let diff = max_abs_diff(&got, &want)?;
            assert!(diff < 1e-5, "rows {rows} inner {inner}: {diff}");
            let want = (h.narrow(2, 0, inner)? * h.narrow(2, inner, inner)?.gelu_erf()?)?;
            let diff = max_abs_diff(&geglu(&h, None)?, &want)?;
            assert!(diff < 1e-5, "rows {rows} inner {inner} no bias: {diff}");
        }
        Ok(())
    }

    /// `gelu` with a bias against candle's chains, both kinds; a strided input.
    #[test]
    fn gelu_matches_candle_chain() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 1.0, (3, 50, 77), &dev)? * 4.0)?;
        let bias = Tensor::randn(0f32, 1.0, 77, &dev)?;
        let xb = x.broadcast_add(&bias)?;
        let diff = max_abs_diff(&gelu(&x, Some(&bias), Gelu::Erf)?, &xb.gelu_erf()?)?;
        assert!(diff < 1e-5, "erf: {diff}");
        let quick = (&xb * candle_nn::ops::sigmoid(&(&xb * 1.702)?)?)?;
        let diff = max_abs_diff(&gelu(&x, Some(&bias), Gelu::Quick)?, &quick)?;
        assert!(diff < 1e-5, "quick: {diff}");
        let xt = x.transpose(1, 2)?;
        let diff = max_abs_diff(&gelu(&xt, None, Gelu::Erf)?, &xt.gelu_erf()?)?;
        assert!(diff < 1e-5, "strided: {diff}");
        Ok(())
    }

    /// Float16 and bfloat16 go through float32 and come back in their dtype, within their
    /// rounding: the two inputs and the output each rounded to 2^-11 (float16) or 2^-8
    /// (bfloat16) relative, so about 4x that of the largest output.
    #[test]
    fn half_precision_matches_f32() -> Result<()> {
        let dev = Device::Cpu;
        let h = (Tensor::randn(0f32, 1.0, (4, 9, 2 * 300), &dev)? * 3.0)?;
        let want = geglu(&h, None)?;
        let largest = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        for (dtype, rel) in [(DType::F16, 2e-3), (DType::BF16, 1.6e-2)] {
            let got = geglu(&h.to_dtype(dtype)?, None)?;
            assert_eq!(got.dtype(), dtype);
            let diff = max_abs_diff(&got, &want)?;
            assert!(
                diff < rel * largest,
                "{dtype:?}: {diff} (largest {largest})"
            );
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let h = Tensor::zeros((2, 7), DType::F32, &dev)?;
        assert!(geglu(&h, None).is_err());
        let h = Tensor::zeros((2, 8), DType::F32, &dev)?;
        let bias = Tensor::zeros(5, DType::F32, &dev)?;
        assert!(geglu(&h, Some(&bias)).is_err());
        assert!(gelu(&h, Some(&bias), Gelu::Erf).is_err());
        Ok(())
    }
}
