//! Scaled dot-product attention in query blocks (float32 on the CPU) or query tiles.

use super::softmax::ScaledSoftmax;
use candle_core::{DType, Result, Tensor};
use candle_nn as nn;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Scores kept per tile: 1 Mi floats (4 MiB), about what one core's L2 and a share of L3 hold.
const TILE_SCORES: usize = 1 << 20;

/// Scores of a whole call (all heads) from which the heads are spread over threads on the CPU;
/// smaller calls (and other devices) run head after head, each product split over rayon's pool.
const PARALLEL_SCORES: usize = 1 << 20;

/// Largest head size that takes the fused path. The UNet's heads (40 to 160 values) do; the
/// VAE's single head of 512 does not: its values, 8 MiB at 64x64, no longer fit the caches, and
/// the fused output step reads them again for every block of queries (VAE decode 0.1-0.8 s
/// slower than through the tiled matrix products).
const MAX_FUSED_DIM: usize = 160;

/// `softmax(q kᵀ / sqrt(d)) v` for `q` `[batch, heads, n, d]` and `k`, `v` `[batch, heads, m, d]`,
/// returning `[batch, heads, n, d]` in the inputs' dtype. Same result as the plain chain of
/// `matmul`, scale, `softmax_last_dim`, `matmul` (up to float rounding). In float32 on the CPU
/// and heads of at most 160 values, each block of 16 (AVX-512) or 8 queries goes through scores,
/// softmax and values in one pass (`kernels::fused_attention`), blocks spread over rayon's
/// threads; larger heads, other dtypes and devices take [`attention_tiled`] with query tiles
/// whose scores take at most 4 MiB.
///
/// # Errors
/// When the shapes do not match as above or the dtypes differ.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let m = k.dim(2)?;
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if f32_cpu(q) && f32_cpu(k) && f32_cpu(v) && q.dim(3)? <= MAX_FUSED_DIM {
        return attention_fused(q, k, v);
    }
    attention_tiled(q, k, v, (TILE_SCORES / m.max(1)).max(1))
}

/// [`attention`] of float32 CPU tensors through [`super::fused_attention`]: every head split
/// into blocks of queries spread over rayon's threads.
fn attention_fused(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, h, n, d, m) = check(q, k, v)?;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let guards = [&q, &k, &v].map(Tensor::storage_and_layout);
    let mut slices = Vec::with_capacity(3);
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("attention: an operand is not on the CPU");
        };
        slices.push(super::contiguous_f32("attention", cpu, layout)?);
    }
    let (qs, ks, vs) = (slices[0], slices[1], slices[2]);
    let scale = (d as f64).powf(-0.5) as f32;
    // Enough query blocks per head for every thread to have two tasks.
    let splits = (2 * rayon::current_num_threads())
        .div_ceil(b * h)
        .clamp(1, n.max(1));
    let rows = n.div_ceil(splits).next_multiple_of(16).max(1);
    let mut out = vec![0f32; b * h * n * d];
    if d > 0 && n > 0 {
        out.par_chunks_mut(n * d).enumerate().for_each(|(i, head)| {
            let (k, v) = (&ks[i * m * d..][..m * d], &vs[i * m * d..][..m * d]);
            head.par_chunks_mut(rows * d)
                .enumerate()
                .for_each(|(part, out)| {
                    let q = &qs[(i * n + part * rows) * d..][..out.len()];
                    pulp::Arch::new().dispatch(super::fused_attention::Head {
                        q,
                        k,
                        v,
                        out,
                        d,
                        scale,
                    });
                });
        });
    }
    drop(slices);
    drop(guards);
    Tensor::from_vec(out, (b, h, n, d), q.device())
}

/// The sizes `(batch, heads, n, d, m)` of `q` `[batch, heads, n, d]` and `k`, `v`
/// `[batch, heads, m, d]`, or an error when they do not match so.
fn check(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
    let (b, h, n, d) = q.dims4()?;
    let (kb, kh, m, kd) = k.dims4()?;
    if (kb, kh, kd) != (b, h, d) || v.dims() != k.dims() || q.dtype() != k.dtype() {
        return Err(candle_core::Error::Msg(format!(
            "attention: q {:?}, k {:?} and v {:?} do not match as [batch, heads, n, d] and \
             [batch, heads, m, d]",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    Ok((b, h, n, d, m))
}

/// [`attention`] with an explicit tile of `rows` queries per head (at least 1): each tile's scores
/// are one matrix product, then (in float32 on the CPU) the scale and the softmax are one pass
/// over them in place with a vectorised exponential, then one product with the values; large
/// calls give whole heads to rayon's number of threads.
///
/// # Errors
/// When the shapes do not match as in [`attention`] or the dtypes differ.
pub fn attention_tiled(q: &Tensor, k: &Tensor, v: &Tensor, rows: usize) -> Result<Tensor> {
    let (b, h, n, d, m) = check(q, k, v)?;
    let rows = rows.max(1);
    let scale = (d as f64).powf(-0.5);
    let cpu = q.device().is_cpu();
    let fused = cpu && q.dtype() == DType::F32;
    let q = q.reshape((b * h, n, d))?;
    let q = if fused { q } else { (q * scale)? };
    let k = k.reshape((b * h, m, d))?;
    let v = v.reshape((b * h, m, d))?;
    let head = |i: usize| -> Result<Tensor> {
        let qh = q.narrow(0, i, 1)?;
        let kt = k.narrow(0, i, 1)?.t()?;
        let vh = v.narrow(0, i, 1)?;
        let mut tiles = Vec::with_capacity(n.div_ceil(rows));
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            let scores = qh.narrow(1, start, len)?.matmul(&kt)?;
            let probs = if fused {
                scores.inplace_op1(&ScaledSoftmax {
                    scale: scale as f32,
                })?;
                scores
            } else {
                nn::ops::softmax_last_dim(&scores)?
            };
            tiles.push(probs.matmul(&vh)?);
            start += len;
        }
        Tensor::cat(&tiles, 1)
    };
    // Below about a million scores the threads' start-up is no longer small next to the work.
    let workers = if cpu && b * h * n * m >= PARALLEL_SCORES {
        rayon::current_num_threads().min(b * h)
    } else {
        1
    };
    let heads = if workers > 1 {
        heads_in_parallel(b * h, workers, &head)?
    } else {
        (0..b * h).map(head).collect::<Result<Vec<_>>>()?
    };
    Tensor::cat(&heads, 0)?.reshape((b, h, n, d))
}

/// `head(i)` for `i` in `0..count`, in order, computed by `workers` threads that each take the
/// next head until none is left. Each thread runs its heads inside a one-thread rayon pool, so
/// that the matrix products and the softmax under it (which split themselves over the current
/// pool) stay on that thread: whole heads in parallel instead of a fork and a join per product,
/// and each head's keys and values stay in one core's cache.
fn heads_in_parallel(
    count: usize,
    workers: usize,
    head: &(dyn Fn(usize) -> Result<Tensor> + Sync),
) -> Result<Vec<Tensor>> {
    let next = AtomicUsize::new(0);
    let work = || -> Result<Vec<(usize, Tensor)>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| candle_core::Error::Msg(format!("attention: thread pool: {e}")))?;
        pool.install(|| {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok(done);
                }
                done.push((i, head(i)?));
            }
        })
    };
    let parts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(candle_core::Error::Msg(
                        "attention: a worker thread panicked".into(),
                    ))
                })
            })
            .collect::<Vec<_>>()
    });
    let mut heads: Vec<Option<Tensor>> = vec![None; count];
    for part in parts {
        for (i, t) in part? {
            heads[i] = Some(t);
        }
    }
    heads
        .into_iter()
        .map(|t| t.ok_or_else(|| candle_core::Error::Msg("attention: a head is missing".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::max_abs_diff;
    use candle_core::{DType, Device};

    fn plain(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let scale = (q.dim(3)? as f64).powf(-0.5);
        let scores = (q.matmul(&k.t()?)? * scale)?;
        nn::ops::softmax_last_dim(&scores)?.matmul(v)
    }

    /// Tiles that divide the queries, that do not, one row, and more rows than queries; self- and
    /// cross-attention shapes. Outputs are averages of unit-normal values, so 1e-5 absolute is
    /// float32 rounding (about 10 ulp at 1.0), far below any indexing or softmax mistake.
    #[test]
    fn matches_plain_attention() -> Result<()> {
        let dev = Device::Cpu;
        for (n, m) in [(96, 96), (100, 77), (5, 300)] {
            let q = Tensor::randn(0f32, 1.0, (2, 3, n, 8), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (2, 3, m, 8), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (2, 3, m, 8), &dev)?;
            let want = plain(&q, &k, &v)?;
            for rows in [1, 7, 32, 96, 1000] {
                let got = attention_tiled(&q, &k, &v, rows)?;
                assert_eq!(got.dims(), want.dims());
                let diff = max_abs_diff(&got, &want)?;
                assert!(
                    diff < 1e-5,
                    "n {n} m {m} rows {rows}: max difference {diff}"
                );
            }
            let diff = max_abs_diff(&attention(&q, &k, &v)?, &want)?;
            assert!(diff < 1e-5, "default tile: max difference {diff}");
        }
        Ok(())
    }

    /// Enough scores for the heads to be spread over threads (when rayon has more than one).
    #[test]
    fn parallel_heads_match_plain_attention() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 3, 500, 8), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (2, 3, 400, 8), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (2, 3, 400, 8), &dev)?;
        const { assert!(2 * 3 * 500 * 400 >= PARALLEL_SCORES) };
        let diff = max_abs_diff(&attention_tiled(&q, &k, &v, 64)?, &plain(&q, &k, &v)?)?;
        assert!(diff < 1e-5, "max difference {diff}");
        Ok(())
    }

    /// Float16 (candle's softmax after a scaled `q`, heads in parallel) against float32 on the
    /// same float16-rounded inputs, so only the computation's rounding is left. The scores,
    /// up to about 4 after scaling, carry float16's 2^-11 relative rounding into the softmax
    /// weights (about 2e-3 relative each); with values up to about 4 and the output's own
    /// rounding, the worst of the 24,000 outputs measured up to 1.4e-2 over repeated runs, so
    /// the bound is 5e-2. A wrong head, tile or scale gives errors of order 1.
    #[test]
    fn float16_matches_float32() -> Result<()> {
        let dev = Device::Cpu;
        let half = |t: Tensor| t.to_dtype(DType::F16);
        let q = half(Tensor::randn(0f32, 1.0, (2, 3, 500, 8), &dev)?)?;
        let k = half(Tensor::randn(0f32, 1.0, (2, 3, 400, 8), &dev)?)?;
        let v = half(Tensor::randn(0f32, 1.0, (2, 3, 400, 8), &dev)?)?;
        let got = attention(&q, &k, &v)?;
        assert_eq!(got.dtype(), DType::F16);
        let wide = |t: &Tensor| t.to_dtype(DType::F32);
        let want = plain(&wide(&q)?, &wide(&k)?, &wide(&v)?)?;
        let diff = max_abs_diff(&got.to_dtype(DType::F32)?, &want)?;
        assert!(diff < 5e-2, "max difference {diff}");
        Ok(())
    }

    /// Heads come back in order whatever the thread that computed them, and errors surface.
    #[test]
    fn heads_in_parallel_keeps_order() -> Result<()> {
        let dev = Device::Cpu;
        let head = |i: usize| Tensor::new(&[i as f32], &dev);
        let got = heads_in_parallel(7, 3, &head)?;
        let got: Vec<f32> = Tensor::cat(&got, 0)?.to_vec1()?;
        assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let failing = |i: usize| {
            if i == 4 {
                Err(candle_core::Error::Msg("head 4".into()))
            } else {
                head(i)
            }
        };
        assert!(heads_in_parallel(7, 2, &failing).is_err());
        Ok(())
    }

    /// Scores large enough to overflow `exp` without the max subtraction still give a softmax.
    #[test]
    fn large_scores_stay_finite() -> Result<()> {
        let dev = Device::Cpu;
        let q = (Tensor::randn(0f32, 1.0, (1, 1, 16, 4), &dev)? * 100.0)?;
        let k = (Tensor::randn(0f32, 1.0, (1, 1, 16, 4), &dev)? * 100.0)?;
        let v = Tensor::randn(0f32, 1.0, (1, 1, 16, 4), &dev)?;
        let got = attention_tiled(&q, &k, &v, 3)?;
        let want = plain(&q, &k, &v)?;
        let finite = got
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|x| x.is_finite());
        assert!(finite);
        assert!(max_abs_diff(&got, &want)? < 1e-5);
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 4, 8), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 2, 5, 4), DType::F32, &dev)?;
        let v = Tensor::zeros((1, 2, 5, 8), DType::F32, &dev)?;
        assert!(attention(&q, &k, &v).is_err());
        let k = Tensor::zeros((1, 2, 5, 8), DType::F32, &dev)?;
        let v = Tensor::zeros((1, 2, 6, 8), DType::F32, &dev)?;
        assert!(attention(&q, &k, &v).is_err());
        Ok(())
    }
}
