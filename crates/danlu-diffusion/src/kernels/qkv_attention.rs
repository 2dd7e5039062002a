//! Multi-head self-attention straight from a fused query/key/value projection, for the short
//! sequences of the text encoders (77 tokens).
//!
//! The CLIP text layer (transformers `CLIPAttention`) adds each projection's bias, scales the
//! queries by `1 / sqrt(head_dim)`, splits the heads, computes `softmax(q kᵀ + causal mask) v`
//! per head and merges the heads again. As candle operations that is a dozen whole-tensor passes,
//! copies and small batched products, each split over threads and joined again. Here, on the CPU
//! in float32, each `(batch, head)` pair is one task: it gathers its slice of the projection
//! (bias and scale folded in), computes the scores of each query against the keys it may see
//! (only `j <= i` when causal, which is what the additive `-inf` mask leaves of a softmax),
//! takes the softmax with a vectorised exponential and sums the values; the heads then merge in
//! one copy. Other devices and dtypes run the candle chain.

use super::softmax::softmax_row;
use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Result, Shape, Tensor};
use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Self-attention of `qkv` `[batch, n, 3 * width]` (queries, keys and values side by side along
/// the last dimension, as one linear layer with the three weight matrices stacked computes them,
/// before their bias `bias`, optional, of `3 * width` values) with `heads` heads: returns
/// `[batch, n, width]`, the heads merged back in order, in the dtype of `qkv`. `causal` lets query
/// `i` see keys `0..=i` only (CLIP's text mask).
///
/// # Errors
/// When the last dimension is not three times a multiple of `heads` or `bias` does not match it.
pub fn qkv_attention(
    qkv: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    causal: bool,
) -> Result<Tensor> {
    let (b, n, cols) = qkv.dims3()?;
    if heads == 0 || !cols.is_multiple_of(3 * heads) {
        candle_core::bail!("qkv_attention: {cols} values do not split into 3 x {heads} heads");
    }
    if let Some(bias) = bias
        && bias.elem_count() != cols
    {
        candle_core::bail!(
            "qkv_attention: bias {:?} does not hold {cols} values",
            bias.dims()
        );
    }
    if !(qkv.device().is_cpu() && qkv.dtype() == DType::F32) || b * n == 0 {
        return qkv_attention_candle(qkv, bias, heads, causal);
    }
    let bias = match bias {
        Some(bias) => bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        None => vec![0.0; cols],
    };
    qkv.contiguous()?.apply_op1_no_bwd(&QkvAttention {
        bias,
        heads,
        causal,
    })
}

/// The same with candle operations, for any device and dtype (scores and softmax in float32).
fn qkv_attention_candle(
    qkv: &Tensor,
    bias: Option<&Tensor>,
    heads: usize,
    causal: bool,
) -> Result<Tensor> {
    let (b, n, cols) = qkv.dims3()?;
    let (w, dtype) = (cols / 3, qkv.dtype());
    let d = w / heads;
    let qkv = match bias {
        Some(bias) => qkv.broadcast_add(bias)?,
        None => qkv.clone(),
    };
    let split = |i: usize| -> Result<Tensor> {
        qkv.narrow(D::Minus1, i * w, w)?
            .reshape((b, n, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .to_dtype(DType::F32)
    };
    let q = (split(0)? * (d as f64).powf(-0.5))?;
    let (k, v) = (split(1)?, split(2)?);
    let mut scores = q.matmul(&k.t()?)?;
    if causal {
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (1, 1, n, n), qkv.device())?;
        scores = scores.broadcast_add(&mask)?;
    }
    candle_nn::ops::softmax_last_dim(&scores)?
        .matmul(&v)?
        .to_dtype(dtype)?
        .transpose(1, 2)?
        .reshape((b, n, w))
}

/// The CPU operation behind [`qkv_attention`] (float32).
struct QkvAttention {
    bias: Vec<f32>,
    heads: usize,
    causal: bool,
}

impl CustomOp1 for QkvAttention {
    fn name(&self) -> &'static str {
        "danlu-qkv-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = super::contiguous_f32(self.name(), storage, layout)?;
        let (b, n, cols) = layout.shape().dims3()?;
        let (w, heads) = (cols / 3, self.heads);
        let d = w / heads;
        let scale = (d as f32).powf(-0.5);
        let head = |task: usize| -> Vec<f32> {
            let (bi, hi) = (task / heads, task % heads);
            let (mut q, mut k, mut v) = (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d]);
            let rows = x[bi * n * cols..(bi + 1) * n * cols].chunks_exact(cols);
            let parts = q
                .chunks_exact_mut(d)
                .zip(k.chunks_exact_mut(d))
                .zip(v.chunks_exact_mut(d));
            let (bq, bk, bv) = (
                &self.bias[hi * d..][..d],
                &self.bias[w + hi * d..][..d],
                &self.bias[2 * w + hi * d..][..d],
            );
            for (row, ((q, k), v)) in rows.zip(parts) {
                let (rq, rk, rv) = (
                    &row[hi * d..][..d],
                    &row[w + hi * d..][..d],
                    &row[2 * w + hi * d..][..d],
                );
                for ((q, x), b) in q.iter_mut().zip(rq).zip(bq) {
                    *q = (x + b) * scale;
                }
                for ((k, x), b) in k.iter_mut().zip(rk).zip(bk) {
                    *k = x + b;
                }
                for ((v, x), b) in v.iter_mut().zip(rv).zip(bv) {
                    *v = x + b;
                }
            }
            let mut out = vec![0f32; n * d];
            Arch::new().dispatch(Head {
                q: &q,
                k: &k,
                v: &v,
                out: &mut out,
                d,
                causal: self.causal,
            });
            out
        };
        let outs: Vec<Vec<f32>> = (0..b * heads).into_par_iter().map(head).collect();
        let mut y = vec![0f32; b * n * w];
        for (task, out) in outs.iter().enumerate() {
            let (bi, hi) = (task / heads, task % heads);
            let rows = y[bi * n * w..(bi + 1) * n * w].chunks_exact_mut(w);
            for (row, o) in rows.zip(out.chunks_exact(d)) {
                row[hi * d..(hi + 1) * d].copy_from_slice(o);
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, n, w))))
    }
}

/// One head: `q`, `k`, `v` and `out` hold `n` rows of `d` values (`q` already scaled).
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a mut [f32],
    d: usize,
    causal: bool,
}

impl WithSimd for Head<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let d = self.d.max(1);
        let n = self.q.len() / d;
        let keys: Vec<&[f32]> = self.k.chunks_exact(d).collect();
        let values: Vec<&[f32]> = self.v.chunks_exact(d).collect();
        let mut scores = vec![0f32; n];
        for (i, (qi, oi)) in self
            .q
            .chunks_exact(d)
            .zip(self.out.chunks_exact_mut(d))
            .enumerate()
        {
            let m = if self.causal { i + 1 } else { n };
            let row = &mut scores[..m];
            dots(s, qi, &keys[..m], row);
            softmax_row(s, row, 1.0);
            weighted_sum(s, row, &values, oi);
        }
    }
}

/// `out = sum_j p[j] * values[j]` (`out` starts at zero). Four output vectors at a time are
/// summed in registers, over all `j`, before they are stored: accumulating into `out` in memory
/// would make every `j` wait for the previous one's store.
#[inline(always)]
fn weighted_sum<S: Simd>(s: S, p: &[f32], values: &[&[f32]], out: &mut [f32]) {
    let (oh, ot) = S::as_mut_simd_f32s(out);
    let zero = s.splat_f32s(0.0);
    let mut start = 0;
    for quad in oh.chunks_exact_mut(4) {
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        for (&p, vj) in p.iter().zip(values) {
            let (vh, _) = S::as_simd_f32s(vj);
            let v = &vh[start..start + 4];
            let pv = s.splat_f32s(p);
            a0 = s.mul_add_e_f32s(pv, v[0], a0);
            a1 = s.mul_add_e_f32s(pv, v[1], a1);
            a2 = s.mul_add_e_f32s(pv, v[2], a2);
            a3 = s.mul_add_e_f32s(pv, v[3], a3);
        }
        quad.copy_from_slice(&[a0, a1, a2, a3]);
        start += 4;
    }
    let rest = oh.len() - start;
    for (&p, vj) in p.iter().zip(values) {
        let (vh, vt) = S::as_simd_f32s(vj);
        let pv = s.splat_f32s(p);
        for (o, v) in oh[start..].iter_mut().zip(&vh[start..start + rest]) {
            *o = s.mul_add_e_f32s(pv, *v, *o);
        }
        for (o, v) in ot.iter_mut().zip(vt) {
            *o += p * v;
        }
    }
}

/// `row[j] = q · keys[j]`, four keys at a time so that four sums are in flight.
#[inline(always)]
fn dots<S: Simd>(s: S, q: &[f32], keys: &[&[f32]], row: &mut [f32]) {
    let (qh, qt) = S::as_simd_f32s(q);
    let tail = |k: &[f32]| -> f32 {
        let (_, kt) = S::as_simd_f32s(k);
        qt.iter().zip(kt).map(|(a, b)| a * b).sum()
    };
    let zero = s.splat_f32s(0.0);
    let mut quads = keys.chunks_exact(4);
    let mut out = row.chunks_exact_mut(4);
    for (ks, o) in (&mut quads).zip(&mut out) {
        let (k0, _) = S::as_simd_f32s(ks[0]);
        let (k1, _) = S::as_simd_f32s(ks[1]);
        let (k2, _) = S::as_simd_f32s(ks[2]);
        let (k3, _) = S::as_simd_f32s(ks[3]);
        let (mut a0, mut a1, mut a2, mut a3) = (zero, zero, zero, zero);
        for ((((q, k0), k1), k2), k3) in qh.iter().zip(k0).zip(k1).zip(k2).zip(k3) {
            a0 = s.mul_add_e_f32s(*q, *k0, a0);
            a1 = s.mul_add_e_f32s(*q, *k1, a1);
            a2 = s.mul_add_e_f32s(*q, *k2, a2);
            a3 = s.mul_add_e_f32s(*q, *k3, a3);
        }
        o[0] = s.reduce_sum_f32s(a0) + tail(ks[0]);
        o[1] = s.reduce_sum_f32s(a1) + tail(ks[1]);
        o[2] = s.reduce_sum_f32s(a2) + tail(ks[2]);
        o[3] = s.reduce_sum_f32s(a3) + tail(ks[3]);
    }
    for (k, o) in quads.remainder().iter().zip(out.into_remainder()) {
        let (kh, _) = S::as_simd_f32s(k);
        let mut a = zero;
        for (q, k) in qh.iter().zip(kh) {
            a = s.mul_add_e_f32s(*q, *k, a);
        }
        *o = s.reduce_sum_f32s(a) + tail(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::max_abs_diff;
    use candle_core::Device;

    /// Against the candle chain (the computation `model/text.rs` did before), causal and not,
    /// CLIP's shape and odd ones (head sizes that leave partial vectors, fewer keys than four).
    /// Outputs are averages of values of size about 1, so 1e-5 absolute is float32 rounding.
    #[test]
    fn matches_candle_chain() -> Result<()> {
        let dev = Device::Cpu;
        for (b, n, heads, d) in [(2, 77, 12, 64), (1, 3, 2, 5), (3, 10, 4, 17), (1, 1, 1, 8)] {
            let w = heads * d;
            let qkv = Tensor::randn(0f32, 1.0, (b, n, 3 * w), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, 3 * w, &dev)?;
            for causal in [true, false] {
                let got = qkv_attention(&qkv, Some(&bias), heads, causal)?;
                let want = qkv_attention_candle(&qkv, Some(&bias), heads, causal)?;
                assert_eq!(got.dims(), &[b, n, w]);
                let diff = max_abs_diff(&got, &want)?;
                assert!(
                    diff < 1e-5,
                    "{b}x{n}, {heads} heads of {d}, causal {causal}: {diff}"
                );
            }
            let diff = max_abs_diff(
                &qkv_attention(&qkv, None, heads, true)?,
                &qkv_attention_candle(&qkv, None, heads, true)?,
            )?;
            assert!(diff < 1e-5, "no bias: {diff}");
        }
        Ok(())
    }

    /// With a causal mask the first query sees only the first key: its output is that value.
    #[test]
    fn first_causal_query_copies_first_value() -> Result<()> {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (1, 6, 3 * 8), &dev)?;
        let got = qkv_attention(&qkv, None, 2, true)?;
        let first = got.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let value = qkv
            .narrow(1, 0, 1)?
            .narrow(2, 16, 8)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(first, value);
        Ok(())
    }

    /// Float16 goes through the candle chain.
    #[test]
    fn float16_matches_float32() -> Result<()> {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (2, 9, 3 * 16), &dev)?;
        let want = qkv_attention(&qkv, None, 2, true)?;
        let got = qkv_attention(&qkv.to_dtype(DType::F16)?, None, 2, true)?;
        assert_eq!(got.dtype(), DType::F16);
        assert!(max_abs_diff(&got, &want)? < 1e-2);
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let qkv = Tensor::zeros((1, 4, 3 * 8), DType::F32, &dev)?;
        assert!(qkv_attention(&qkv, None, 3, true).is_err());
        let bias = Tensor::zeros(5, DType::F32, &dev)?;
        assert!(qkv_attention(&qkv, Some(&bias), 2, true).is_err());
        Ok(())
    }
}
