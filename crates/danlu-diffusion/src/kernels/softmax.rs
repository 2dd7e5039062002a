//! Row softmax of float32 scores in place, with a scale folded in and an exponential that the
//! compiler turns into SIMD code.
//!
//! candle-nn's `softmax_last_dim` calls the C library's `expf` once per score; at 512x512 the
//! UNet's first level has 268 million of them per self-attention. Here the exponential is the
//! range reduction and degree-6 polynomial of Cephes `expf.c` (relative error about 2e-7 on the
//! reduced range), written without branches or library calls so that it vectorises.

use candle_core::{CpuStorage, InplaceOp1, Layout, Result};

/// Lanes of the accumulators; 8 fills one AVX register and two SSE registers.
const LANES: usize = 8;

/// `e^x` for `x` in `[-87, 0]` (inputs are clamped to it), as Cephes `expf`.
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 0.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    // Cephes writes 5.0000001201e-1, which is 0.5 in float32.
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n is in [-126, 0], so n + 127 is a valid biased exponent.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    e * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// Softmax of `scale * row`, in place. `scale` must be positive.
fn softmax_row(row: &mut [f32], scale: f32) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let shift = -max * scale;
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in sums.iter_mut().zip(chunk.iter_mut()) {
            *x = exp_neg(*x * scale + shift);
            *s += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_neg(*x * scale + shift);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Softmax of `scale * x` over the last dimension of a contiguous float32 tensor, in place
/// ([`candle_core::Tensor::inplace_op1`]). Rows are split over candle's thread count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaledSoftmax {
    /// The factor applied to every score before the softmax (positive).
    pub(crate) scale: f32,
}

impl InplaceOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "danlu-scaled-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the scores must be contiguous", self.name());
        };
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: the scores must be float32", self.name());
        };
        let cols = layout.dims().last().copied().unwrap_or(1).max(1);
        let data = &mut data[start..end];
        let rows = data.len() / cols;
        let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
        let scale = self.scale;
        if threads == 1 {
            data.chunks_exact_mut(cols)
                .for_each(|row| softmax_row(row, scale));
            return Ok(());
        }
        let per_thread = rows.div_ceil(threads) * cols;
        std::thread::scope(|s| {
            for part in data.chunks_mut(per_thread) {
                s.spawn(move || {
                    part.chunks_exact_mut(cols)
                        .for_each(|row| softmax_row(row, scale));
                });
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against `f32::exp` over the whole clamped range: 4 ulp of relative error at most (Cephes
    /// quotes 2e-7 peak, about 2 ulp).
    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let want = x.exp();
            let rel = ((exp_neg(x) - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert!(exp_neg(-1000.0) < 1e-37);
    }

    /// Rows of odd lengths (remainder lanes), against a softmax computed in f64.
    #[test]
    fn softmax_rows_match_f64() {
        for len in [1usize, 7, 8, 9, 77, 300] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 3.0)
                .collect();
            let scale = 0.37f32;
            let mut got = row.clone();
            softmax_row(&mut got, scale);
            let max = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
            let exps: Vec<f64> = row
                .iter()
                .map(|&x| ((f64::from(x) - max) * f64::from(scale)).exp())
                .collect();
            let sum: f64 = exps.iter().sum();
            for (g, e) in got.iter().zip(&exps) {
                assert!(
                    (f64::from(*g) - e / sum).abs() < 1e-6,
                    "len {len}: {g} vs {}",
                    e / sum
                );
            }
        }
    }
}
