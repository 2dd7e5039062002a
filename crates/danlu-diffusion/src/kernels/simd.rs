//! Vector building blocks shared by the kernels, generic over [`pulp::Simd`] so that one body
//! runs 16 lanes wide on AVX-512, 8 on AVX2 and one at a time elsewhere, picked at run time by
//! [`pulp::Arch::dispatch`].

use pulp::Simd;

/// `e^x` for every lane of `x`, with `x` clamped to `[-87, 0]`: the range reduction and degree-6
/// polynomial of Cephes `expf.c` (relative error about 2e-7, 2 ulp, on the reduced range).
#[inline(always)]
pub(crate) fn exp_neg<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = s.min_f32s(s.max_f32s(x, s.splat_f32s(-87.0)), s.splat_f32s(0.0));
    let round = s.splat_f32s(ROUND);
    let t = s.mul_add_e_f32s(x, s.splat_f32s(LOG2E), round);
    let n = s.sub_f32s(t, round);
    let r = s.mul_add_e_f32s(n, s.splat_f32s(-LN2_HI), x);
    let r = s.mul_add_e_f32s(n, s.splat_f32s(-LN2_LO), r);
    let mut p = s.splat_f32s(1.987_569_1e-4);
    p = s.mul_add_e_f32s(p, r, s.splat_f32s(1.398_199_9e-3));
    p = s.mul_add_e_f32s(p, r, s.splat_f32s(8.333_452e-3));
    p = s.mul_add_e_f32s(p, r, s.splat_f32s(4.166_579_6e-2));
    p = s.mul_add_e_f32s(p, r, s.splat_f32s(1.666_666_5e-1));
    // Cephes writes 5.0000001201e-1, which is 0.5 in float32.
    p = s.mul_add_e_f32s(p, r, s.splat_f32s(0.5));
    let r2 = s.mul_f32s(r, r);
    let e = s.add_f32s(s.mul_add_e_f32s(p, r2, r), s.splat_f32s(1.0));
    // The low bits of t hold n in [-126, 0]; n + 127 shifted into the exponent field is 2^n.
    let n_int = s.sub_u32s(
        s.transmute_u32s_f32s(t),
        s.splat_u32s(ROUND.to_bits().wrapping_sub(127)),
    );
    let pow2 = s.transmute_f32s_u32s(s.wrapping_dyn_shl_u32s(n_int, s.splat_u32s(23)));
    s.mul_f32s(e, pow2)
}

/// `y * sigmoid(y) = y / (1 + e^-y)` for every lane, through [`exp_neg`] of `-|y|` so that the
/// exponential never overflows.
#[inline(always)]
pub(crate) fn silu<S: Simd>(s: S, y: S::f32s) -> S::f32s {
    // -|y|: the sign bit set.
    let e = exp_neg(s, s.or_f32s(y, s.splat_f32s(-0.0)));
    let one = s.splat_f32s(1.0);
    let denom = s.add_f32s(one, e);
    // sigmoid(y) is 1 / (1 + e^-|y|) for y >= 0 and e^-|y| / (1 + e^-|y|) below.
    let num = s.select_f32s(s.greater_than_or_equal_f32s(y, s.splat_f32s(0.0)), one, e);
    s.mul_f32s(y, s.div_f32s(num, denom))
}

/// The instruction sets of this machine that pulp can run a body with, for tests that check every
/// width (1, 8 and 16 lanes), not only the widest.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub(crate) enum TestArch {
    /// One lane, plain Rust.
    Scalar,
    /// AVX2 and FMA, 8 lanes.
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
    /// AVX-512, 16 lanes.
    #[cfg(target_arch = "x86_64")]
    V4(pulp::x86::V4),
}

#[cfg(test)]
impl TestArch {
    /// Every instruction set available here.
    pub(crate) fn all() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Self::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            all.extend(pulp::x86::V3::try_new().map(Self::V3));
            all.extend(pulp::x86::V4::try_new().map(Self::V4));
        }
        all
    }

    /// Runs `op` with this instruction set.
    pub(crate) fn run<Op: pulp::WithSimd>(self, op: Op) -> Op::Output {
        match self {
            Self::Scalar => pulp::Simd::vectorize(pulp::Scalar::new(), op),
            #[cfg(target_arch = "x86_64")]
            Self::V3(s) => pulp::Simd::vectorize(s, op),
            #[cfg(target_arch = "x86_64")]
            Self::V4(s) => pulp::Simd::vectorize(s, op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::WithSimd;

    struct ExpMap<'a>(&'a mut [f32]);
    impl WithSimd for ExpMap<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            let (head, tail) = S::as_mut_simd_f32s(self.0);
            for v in head {
                *v = exp_neg(s, *v);
            }
            let v = exp_neg(s, s.partial_load_f32s(tail));
            s.partial_store_f32s(tail, v);
        }
    }

    struct SiluMap<'a>(&'a mut [f32]);
    impl WithSimd for SiluMap<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            let (head, tail) = S::as_mut_simd_f32s(self.0);
            for v in head {
                *v = silu(s, *v);
            }
            let v = silu(s, s.partial_load_f32s(tail));
            s.partial_store_f32s(tail, v);
        }
    }

    /// Against `f32::exp` over the whole clamped range: 4 ulp of relative error at most (Cephes
    /// quotes 2e-7 peak, about 2 ulp). The length leaves a partial tail.
    #[test]
    fn exp_matches_std() {
        for arch in TestArch::all() {
            let want: Vec<f32> = (0..=87_003).map(|i| -(i as f32) / 1000.0).collect();
            let mut got = want.clone();
            arch.run(ExpMap(&mut got));
            let mut worst = 0f32;
            for (g, x) in got.iter().zip(&want) {
                let e = x.max(-87.0).exp();
                worst = worst.max(((g - e) / e).abs());
            }
            assert!(
                worst < 4.0 * f32::EPSILON,
                "{arch:?}: worst relative error {worst}"
            );
            let mut edges = [0.0, -1000.0, 5.0];
            arch.run(ExpMap(&mut edges));
            assert_eq!(edges[0], 1.0);
            assert!(edges[1] < 1e-37 && edges[1] > 0.0);
            assert_eq!(edges[2], 1.0, "positive inputs clamp to 0");
        }
    }

    /// SiLU against f64 over [-100, 100]: relative error within 8 ulp where the result is not
    /// tiny (exp, one division, one product), absolute 1e-30 where it underflows.
    #[test]
    fn silu_matches_f64() {
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 / 1000.0).collect();
        for arch in TestArch::all() {
            let mut got = xs.clone();
            arch.run(SiluMap(&mut got));
            for (g, &x) in got.iter().zip(&xs) {
                let x = f64::from(x);
                let want = x / (1.0 + (-x).exp());
                let err = (f64::from(*g) - want).abs();
                assert!(
                    err <= 8.0 * f64::from(f32::EPSILON) * want.abs() + 1e-30,
                    "{arch:?}: silu({x}) = {g}, want {want}"
                );
            }
        }
    }
}
