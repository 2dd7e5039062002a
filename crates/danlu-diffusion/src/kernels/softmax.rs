//! Row softmax of float32 scores in place, with a scale folded in and a vectorised exponential.
//!
//! candle-nn's `softmax_last_dim` calls the C library's `expf` once per score; at 512x512 the
//! UNet's first level has 268 million of them per self-attention. Here the exponential is the
//! range reduction and polynomial of Cephes `expf.c` ([`super::simd::exp_neg`]), and every pass
//! over a row (max, scaled exponential and sum, normalisation) runs on whole vectors: 16 lanes
//! on AVX-512, 8 on AVX2, chosen at run time by [`pulp::Arch`].

use super::simd::exp_neg;
use candle_core::{CpuStorage, InplaceOp1, Layout, Result};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Softmax of `scale * row` for every row of `cols` values in `data`, in place.
struct Rows<'a> {
    data: &'a mut [f32],
    cols: usize,
    scale: f32,
}

impl WithSimd for Rows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        for row in self.data.chunks_exact_mut(self.cols) {
            softmax_row(s, row, self.scale);
        }
    }
}

/// Softmax of `scale * row`, in place. `scale` must be positive.
#[inline(always)]
pub(super) fn softmax_row<S: Simd>(s: S, row: &mut [f32], scale: f32) {
    let (head, tail) = S::as_mut_simd_f32s(row);
    // Maximum: four accumulators so that the max instructions do not wait on each other.
    let low = s.splat_f32s(f32::NEG_INFINITY);
    let (mut m0, mut m1, mut m2, mut m3) = (low, low, low, low);
    let mut quads = head.chunks_exact(4);
    for q in &mut quads {
        m0 = s.max_f32s(m0, q[0]);
        m1 = s.max_f32s(m1, q[1]);
        m2 = s.max_f32s(m2, q[2]);
        m3 = s.max_f32s(m3, q[3]);
    }
    for &v in quads.remainder() {
        m0 = s.max_f32s(m0, v);
    }
    let m = s.max_f32s(s.max_f32s(m0, m1), s.max_f32s(m2, m3));
    let max = tail
        .iter()
        .fold(s.reduce_max_f32s(m), |m, &x| if x > m { x } else { m });
    // exp(scale * x - scale * max), stored, and summed in two accumulators.
    let (sv, shift) = (s.splat_f32s(scale), s.splat_f32s(-max * scale));
    let zero = s.splat_f32s(0.0);
    let (mut s0, mut s1) = (zero, zero);
    let mut pairs = head.chunks_exact_mut(2);
    for p in &mut pairs {
        let e0 = exp_neg(s, s.mul_add_e_f32s(p[0], sv, shift));
        let e1 = exp_neg(s, s.mul_add_e_f32s(p[1], sv, shift));
        p[0] = e0;
        p[1] = e1;
        s0 = s.add_f32s(s0, e0);
        s1 = s.add_f32s(s1, e1);
    }
    for v in pairs.into_remainder() {
        *v = exp_neg(s, s.mul_add_e_f32s(*v, sv, shift));
        s0 = s.add_f32s(s0, *v);
    }
    let e = exp_neg(s, s.mul_add_e_f32s(s.partial_load_f32s(tail), sv, shift));
    s.partial_store_f32s(tail, e);
    let sum = tail
        .iter()
        .fold(s.reduce_sum_f32s(s.add_f32s(s0, s1)), |a, &x| a + x);
    let inv = s.splat_f32s(1.0 / sum);
    for v in head.iter_mut() {
        *v = s.mul_f32s(*v, inv);
    }
    s.partial_store_f32s(tail, s.mul_f32s(s.partial_load_f32s(tail), inv));
}

/// Softmax of `scale * x` over the last dimension of a contiguous float32 tensor, in place
/// ([`candle_core::Tensor::inplace_op1`]). Rows are split over rayon's threads.
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
        if data.is_empty() {
            return Ok(());
        }
        let rows = data.len() / cols;
        let scale = self.scale;
        // Row blocks on rayon's pool (the one candle and gemm use); a call from inside a pool
        // task, where the other threads are busy, runs the blocks one after the other.
        let threads = rayon::current_num_threads().clamp(1, rows.max(1));
        let block = rows.div_ceil(threads) * cols;
        data.par_chunks_mut(block).for_each(|part| {
            Arch::new().dispatch(Rows {
                data: part,
                cols,
                scale,
            });
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::TestArch;

    /// Rows of odd lengths (remainder vectors and lanes) and a full attention row, against a
    /// softmax computed in f64. (The exponential's own accuracy is tested in `simd.rs`.)
    #[test]
    fn softmax_rows_match_f64() {
        for len in [1usize, 7, 8, 9, 16, 17, 33, 77, 300, 1000, 4096] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 3.0)
                .collect();
            let scale = 0.37f32;
            let mut got = row.clone();
            Arch::new().dispatch(Rows {
                data: &mut got,
                cols: len,
                scale,
            });
            // The same rows at every vector width agree with the widest to float rounding.
            for arch in TestArch::all() {
                let mut other = row.clone();
                arch.run(Rows {
                    data: &mut other,
                    cols: len,
                    scale,
                });
                for (a, b) in other.iter().zip(&got) {
                    assert!((a - b).abs() < 1e-7, "{arch:?} len {len}: {a} vs {b}");
                }
            }
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
