//! One head of scaled dot-product attention in float32 with the scores, the softmax and the
//! weighted sum of the values in one pass over each block of queries.
//!
//! The products run across queries: a vector holds one value for each of a block of `L`
//! queries (16 on AVX-512, 8 on AVX2), so a score is one fused multiply-add of a key's
//! broadcast coordinate with the block's transposed queries, the softmax over the keys is
//! vertical (maximum, exponential and sum lane by lane, with no horizontal reductions), and the
//! output is the values' broadcast coordinates times the block's probabilities. A block's
//! `m x L` scores (256 KiB for 4096 keys on AVX-512) stay in the core's L2 cache between the
//! three steps, where the tiled path wrote each tile's scores to memory and read them back
//! twice, and head dimensions of 40 or 80 do not leave matrix-product kernels with narrow
//! edges.

use super::simd::exp_neg;
use pulp::{Simd, WithSimd};

/// Keys per register block of the score step (one accumulator vector each).
const KEYS: usize = 12;

/// Value coordinates per register block of the output step (one accumulator vector each), twice
/// as many where the vectors have 16 lanes (AVX-512, 32 registers).
const DIMS: usize = 8;

/// `softmax(q kᵀ · scale) v` of one head: `q` `[n, d]`, `k` and `v` `[m, d]` (rows contiguous,
/// `d` apart), written to `out` `[n, d]`.
pub(super) struct Head<'a> {
    pub(super) q: &'a [f32],
    pub(super) k: &'a [f32],
    pub(super) v: &'a [f32],
    pub(super) out: &'a mut [f32],
    pub(super) d: usize,
    pub(super) scale: f32,
}

impl WithSimd for Head<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let lanes = std::mem::size_of::<S::f32s>() / 4;
        let d = self.d;
        let n = self.q.len() / d.max(1);
        let m = self.k.len() / d.max(1);
        if n == 0 || d == 0 {
            return;
        }
        if m == 0 {
            // No keys: nothing to weigh, as the product of an empty softmax with no values.
            self.out.fill(0.0);
            return;
        }
        // Whole blocks of keys packed `[block][d][KEYS]`, so that a block's keys at one
        // coordinate are adjacent and a block is one run of memory.
        let full = m / KEYS;
        let mut packed = vec![0f32; full * d * KEYS];
        for (block, dst) in packed.chunks_exact_mut(d * KEYS).enumerate() {
            for b in 0..KEYS {
                let row = &self.k[(block * KEYS + b) * d..][..d];
                for (j, &x) in row.iter().enumerate() {
                    dst[j * KEYS + b] = x;
                }
            }
        }
        // Transposed, scaled queries of a block `[d][lanes]`, and its scores `[m][lanes]`.
        let zero = s.splat_f32s(0.0);
        let mut qt = vec![zero; d];
        let mut scores = vec![zero; m];
        let mut lane = vec![0f32; lanes];
        for first in (0..n).step_by(lanes) {
            let count = lanes.min(n - first);
            for (j, qv) in qt.iter_mut().enumerate() {
                lane.fill(0.0);
                for (l, x) in lane.iter_mut().take(count).enumerate() {
                    *x = self.q[(first + l) * d + j] * self.scale;
                }
                *qv = s.partial_load_f32s(&lane);
            }
            // Scores and their running maximum per lane.
            let mut max = s.splat_f32s(f32::NEG_INFINITY);
            let mut blocks = scores.chunks_exact_mut(KEYS);
            let mut key = 0;
            for (block, keys) in (&mut blocks).zip(packed.chunks_exact(d * KEYS)) {
                max = score_block::<S, KEYS>(s, &qt, keys, block, max);
                key += KEYS;
            }
            for one in blocks.into_remainder().chunks_exact_mut(1) {
                max = score_block::<S, 1>(s, &qt, &self.k[key * d..][..d], one, max);
                key += 1;
            }
            // exp(score - max) in place, and the sums.
            let mut sum = zero;
            for x in scores.iter_mut() {
                *x = exp_neg(s, s.sub_f32s(*x, max));
                sum = s.add_f32s(sum, *x);
            }
            let inv = s.div_f32s(s.splat_f32s(1.0), sum);
            // Output coordinates in register blocks, stored transposed back into rows.
            let mut j = 0;
            // Twice as many with AVX-512's 32 registers (3% faster on 40-value heads); AVX2's 16
            // would spill them.
            let out = &mut self.out[first * d..];
            let (v, lane) = (self.v, &mut lane);
            while lanes >= 16 && j + 2 * DIMS <= d {
                j = output_block::<S, { 2 * DIMS }>(s, &scores, v, inv, lane, out, j, d, count);
            }
            while j + DIMS <= d {
                j = output_block::<S, DIMS>(s, &scores, v, inv, lane, out, j, d, count);
            }
            while j < d {
                j = output_block::<S, 1>(s, &scores, v, inv, lane, out, j, d, count);
            }
        }
    }
}

/// Scores of `B` keys packed `[d][B]` in `keys` against the block's queries `qt`, into `out`;
/// returns `max` raised by them.
#[inline(always)]
fn score_block<S: Simd, const B: usize>(
    s: S,
    qt: &[S::f32s],
    keys: &[f32],
    out: &mut [S::f32s],
    max: S::f32s,
) -> S::f32s {
    let mut acc = [s.splat_f32s(0.0); B];
    for (&qv, at) in qt.iter().zip(keys.chunks_exact(B)) {
        for (a, &x) in acc.iter_mut().zip(at) {
            *a = s.mul_add_e_f32s(s.splat_f32s(x), qv, *a);
        }
    }
    let mut max = max;
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a;
        max = s.max_f32s(max, a);
    }
    max
}

/// Output coordinates `j..j + B` of the block's first `count` queries: `Σ_key p[key] · v[key][j]`
/// with one vector per coordinate across the queries (`v` rows `d` apart), times `inv`, written
/// into `out` (the block's first row, rows `d` apart). Returns `j + B`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_block<S: Simd, const B: usize>(
    s: S,
    p: &[S::f32s],
    v: &[f32],
    inv: S::f32s,
    lane: &mut [f32],
    out: &mut [f32],
    j: usize,
    d: usize,
    count: usize,
) -> usize {
    let mut acc = [s.splat_f32s(0.0); B];
    for (key, &pv) in p.iter().enumerate() {
        let row = &v[key * d + j..];
        for (b, a) in acc.iter_mut().enumerate() {
            *a = s.mul_add_e_f32s(s.splat_f32s(row[b]), pv, *a);
        }
    }
    for (b, &a) in acc.iter().enumerate() {
        s.partial_store_f32s(lane, s.mul_f32s(a, inv));
        for (l, &x) in lane.iter().take(count).enumerate() {
            out[l * d + j + b] = x;
        }
    }
    j + B
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::TestArch;

    /// Attention of one head in float64: `q` `[n, d]`, `k`, `v` `[m, d]`.
    fn plain(q: &[f32], k: &[f32], v: &[f32], d: usize) -> Vec<f64> {
        let (n, m) = (q.len() / d, k.len() / d);
        let scale = (d as f64).powf(-0.5);
        let mut out = vec![0f64; n * d];
        for i in 0..n {
            let scores: Vec<f64> = (0..m)
                .map(|j| {
                    (0..d)
                        .map(|x| f64::from(q[i * d + x]) * f64::from(k[j * d + x]))
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (j, w) in e.iter().enumerate() {
                for x in 0..d {
                    out[i * d + x] += w / sum * f64::from(v[j * d + x]);
                }
            }
        }
        out
    }

    /// Deterministic values in about [-amp, amp].
    fn values(len: usize, seed: u32, amp: f32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                amp * ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0)
            })
            .collect()
    }

    /// Every vector width against float64, with query counts that leave a partial block of
    /// lanes, key counts that leave a partial block of keys, head sizes that leave a partial
    /// block of coordinates (and SD's 40), and scores large enough to overflow `exp` without the
    /// maximum subtracted. Outputs are averages of values up to 1, so 1e-5 is float32 rounding
    /// and far below a wrong lane, key or coordinate.
    #[test]
    fn every_width_matches_float64() {
        for arch in TestArch::all() {
            for (n, m, d, amp) in [
                (37, 29, 13, 1.0),
                (16, 12, 8, 1.0),
                (3, 1, 1, 1.0),
                (20, 77, 40, 1.0),
                (9, 30, 6, 60.0),
            ] {
                let q = values(n * d, 1, amp);
                let k = values(m * d, 2, amp);
                let v = values(m * d, 3, 1.0);
                let mut out = vec![f32::NAN; n * d];
                arch.run(Head {
                    q: &q,
                    k: &k,
                    v: &v,
                    out: &mut out,
                    d,
                    scale: (d as f32).powf(-0.5),
                });
                let want = plain(&q, &k, &v, d);
                let worst = out
                    .iter()
                    .zip(&want)
                    .map(|(&g, &w)| (f64::from(g) - w).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst < 1e-5,
                    "{arch:?} n {n} m {m} d {d}: max difference {worst}"
                );
            }
        }
    }
}
