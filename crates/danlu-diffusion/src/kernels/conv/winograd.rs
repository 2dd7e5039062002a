//! Winograd minimal filtering F(m x m, 3 x 3) for the 3x3, stride 1, padding 1 convolutions that
//! make up half of an SD UNet's and most of a VAE's arithmetic (Lavin and Gray, "Fast Algorithms
//! for Convolutional Neural Networks", CVPR 2016, <https://arxiv.org/abs/1509.09308>).
//!
//! The output is cut into m x m tiles, each computed from the (m + 2) x (m + 2) input patch
//! around it: with `α = m + 2`, the weight `g` of each (output, input) channel pair becomes
//! `U = G g Gᵀ` and each patch `d` of each input channel becomes `V = Bᵀ d B`, both `α x α`; for
//! each of the `α²` positions `ξ` the products over the input channels are one matrix product
//! `M[ξ] = U[ξ] [o, c] x V[ξ] [c, tiles]`, and `Y = Aᵀ M A` gives the tile's output. A direct
//! 3x3 convolution spends `9 m²` multiplications per tile and channel pair where this spends
//! `α²`: 2.25x fewer for F(2x2) and 4x fewer for F(4x4), at the cost of the transforms (linear
//! in the channel count rather than its square) and some float32 accuracy, which the tests
//! bound.
//!
//! The transforms are the points `0, ±1, ±2, ∞` of the paper's F(4x4, 3x3) and `0, ±1, ∞` of
//! its F(2x2, 3x3). Tiles are processed in chunks so that `V` and `M` stay near the caches;
//! input and output transforms run in parallel over channels, the products are candle's batched
//! `matmul` (the `gemm` crate).

use super::{
    Addend, Geometry, Narrow, WEIGHTS, WORKSPACE, take_kept, take_workspace, with_f32,
    workspace_view,
};
use candle_core::Result;
use pulp::Arch;
use rayon::prelude::*;

/// The transform matrices of one F(m x m, 3 x 3) with `α = A = m + 2`.
pub(super) trait Matrices<const A: usize, const M: usize> {
    /// `Bᵀ`, `α x α`: input patch transform.
    const BT: [[f32; A]; A];
    /// `G`, `α x 3`: weight transform.
    const G: [[f32; 3]; A];
    /// `Aᵀ`, `m x α`: output transform.
    const AT: [[f32; A]; M];
}

/// F(2x2, 3x3): points 0, 1, -1 and infinity.
pub(super) struct F2;

impl Matrices<4, 2> for F2 {
    const BT: [[f32; 4]; 4] = [
        [1.0, 0.0, -1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, -1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, -1.0],
    ];
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    const AT: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];
}

/// F(4x4, 3x3): points 0, 1, -1, 2, -2 and infinity.
pub(super) struct F4;

impl Matrices<6, 4> for F4 {
    const BT: [[f32; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const G: [[f32; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    const AT: [[f32; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];
}

/// Items transformed side by side, one per vector lane: tiles for the input and output
/// transforms, input channels for the weights (8: one AVX2 register).
const L: usize = 8;

/// One value of each of [`L`] items.
type Lanes = [f32; L];

/// `Lm X Rmᵀ` lane by lane, for `Lm` `[R1 x N]`, `X` `[N x Q]`, `Rm` `[R2 x Q]`. Zero
/// coefficients are skipped (most of `Bᵀ`, `G` and `Aᵀ`); the lane loops are what vectorises.
#[inline(always)]
fn sandwich<const R1: usize, const N: usize, const Q: usize, const R2: usize>(
    l: &[[f32; N]; R1],
    x: &[[Lanes; Q]; N],
    r: &[[f32; Q]; R2],
) -> [[Lanes; R2]; R1] {
    // Lm X, row by row.
    let mut lx = [[[0f32; L]; Q]; R1];
    for (lrow, lxrow) in l.iter().zip(lx.iter_mut()) {
        for (&c, xrow) in lrow.iter().zip(x) {
            if c == 0.0 {
                continue;
            }
            for (acc, v) in lxrow.iter_mut().zip(xrow) {
                for z in 0..L {
                    acc[z] += c * v[z];
                }
            }
        }
    }
    let mut out = [[[0f32; L]; R2]; R1];
    for (lxrow, orow) in lx.iter().zip(out.iter_mut()) {
        for (rrow, acc) in r.iter().zip(orow.iter_mut()) {
            for (&c, v) in rrow.iter().zip(lxrow) {
                if c == 0.0 {
                    continue;
                }
                for z in 0..L {
                    acc[z] += c * v[z];
                }
            }
        }
    }
    out
}

/// `dst[at..at + n]` from the first `n` lanes; a whole group is a fixed-size copy (a vector
/// store, where a copy of variable length would be a call to `memcpy`).
#[inline(always)]
fn store_lanes(dst: &mut [f32], at: usize, lanes: &Lanes, n: usize) {
    if n == L {
        dst[at..at + L].copy_from_slice(lanes);
    } else {
        dst[at..at + n].copy_from_slice(&lanes[..n]);
    }
}

/// The first `n` values of `src` as lanes, zeros after.
#[inline(always)]
fn load_lanes(src: &[f32], n: usize) -> Lanes {
    let mut lanes = [0f32; L];
    if n == L {
        lanes.copy_from_slice(&src[..L]);
    } else {
        lanes[..n].copy_from_slice(&src[..n]);
    }
    lanes
}

/// Which product a 3x3 convolution takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    /// Unfolded columns times the weight (the parent module).
    Direct,
    /// F(2x2, 3x3).
    F2,
    /// F(4x4, 3x3).
    F4,
}

/// Fewest channels on either side for the transforms to pay: they cost a fixed amount per
/// channel and tile where the products grow with the channel count.
const MIN_CHANNELS: usize = 16;

/// Fewest tiles (across the batch) for a method: the weight transform and the packing of its
/// `α²` matrices of `o x c` are paid once per call whatever the number of tiles, so with fewer
/// tiles than this they cost more than Winograd saves. Measured on SD's shapes by the ignored
/// test `winograd_timing` under the allocator settings the engine runs with
/// ([`crate::allocator`]), against the direct product: F(4x4) with 128 tiles of 640 channels
/// (the 32x32 level) 2.35x faster, where F(2x2) was 1.77x; F(2x2) with 128 tiles of 1280
/// channels (the 16x16 level) 1.45-1.6x; F(2x2) with 32 tiles (8x8) 0.8x. Without those settings
/// every call faults its transform buffers in afresh and the 16x16 level only breaks even.
const MIN_TILES: usize = 128;

/// The method for `geo`: Winograd for 3x3, stride 1, padding 1 on every side (output as large
/// as the input) when the channels and the output are large enough, F(4x4) when it has the
/// tiles to pay for its larger transforms, else F(2x2), else the direct product.
pub(super) fn choose(geo: &Geometry) -> Method {
    let fits = geo.kernel_h == 3
        && geo.kernel_w == 3
        && geo.stride == 1
        && geo.top == 1
        && geo.left == 1
        && geo.out_h == geo.height
        && geo.out_w == geo.width
        && geo.channels.min(geo.out_channels) >= MIN_CHANNELS;
    let tiles = |m: usize| geo.batch * geo.out_h.div_ceil(m) * geo.out_w.div_ceil(m);
    if !fits {
        Method::Direct
    } else if tiles(4) >= MIN_TILES {
        Method::F4
    } else if tiles(2) >= MIN_TILES {
        Method::F2
    } else {
        Method::Direct
    }
}

/// Splits `data`, `planes` planes of `rows` rows of `len` values, into one list per row index
/// holding that row of every plane (so that work split by row owns its part of every plane).
fn rows_of_planes<T>(data: &mut [T], rows: usize, len: usize) -> Vec<Vec<&mut [T]>> {
    let mut by_row: Vec<Vec<&mut [T]>> = (0..rows).map(|_| Vec::new()).collect();
    for plane in data.chunks_exact_mut(rows * len) {
        for (row, part) in by_row.iter_mut().zip(plane.chunks_exact_mut(len)) {
            row.push(part);
        }
    }
    by_row
}

/// Where tile `t` (counted across images) lies: image, first output row and column.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    m: usize,
    across: usize,
    per_image: usize,
}

impl Tiling {
    fn locate(&self, t: usize) -> (usize, usize, usize) {
        let (image, r) = (t / self.per_image, t % self.per_image);
        (
            image,
            (r / self.across) * self.m,
            (r % self.across) * self.m,
        )
    }
}

/// Convolves `input` (float32 `[batch, c, src_h, src_w]`, upsampled by `geo.up`) with `weight`
/// (float32 `[o, c, 3, 3]`) by F(m x m, 3 x 3), adds `addend` and writes `out`
/// `[batch, o, h, w]`; `chunk_bytes` bounds the transformed inputs and products held at once.
pub(super) fn convolve<W: Matrices<A, M>, const A: usize, const M: usize, T: Narrow>(
    input: &[f32],
    weight: &[f32],
    geo: &Geometry,
    addend: &Addend,
    out: &mut [T],
    chunk_bytes: usize,
) -> Result<()> {
    let (c, o) = (geo.channels, geo.out_channels);
    let tiling = Tiling {
        m: M,
        across: geo.out_w.div_ceil(M),
        per_image: geo.out_h.div_ceil(M) * geo.out_w.div_ceil(M),
    };
    let tiles = geo.batch * tiling.per_image;
    let kept = take_kept(&WEIGHTS, A * A * o * c)?;
    let u = kept.narrow(0, 0, A * A * o * c)?.reshape((A * A, o, c))?;
    u.inplace_op1(&WeightTransform::<W, A, M> {
        weight,
        o,
        c,
        matrices: std::marker::PhantomData,
    })?;
    let chunk = (chunk_bytes / (4 * A * A * c.max(o)).max(1)).clamp(1, tiles);
    let workspace = take_workspace(A * A * c * chunk)?;
    let plane = geo.out_h * geo.out_w;
    // out [batch][o][plane] as, per output channel, its plane in every image.
    let mut planes = rows_of_planes(out, o, plane);
    let mut first = 0;
    while first < tiles {
        let count = chunk.min(tiles - first);
        let v = workspace
            .narrow(0, 0, A * A * c * count)?
            .reshape((A * A, c, count))?;
        v.inplace_op1(&InputTransform::<W, A, M> {
            input,
            geo,
            tiling,
            first,
            count,
            matrices: std::marker::PhantomData,
        })?;
        let product = u.matmul(&v)?;
        with_f32(&product, |p| {
            planes.par_iter_mut().enumerate().for_each(|(oc, planes)| {
                Arch::new().dispatch(
                    #[inline(always)]
                    || {
                        output_channel::<W, A, M, T>(
                            p, planes, oc, geo, tiling, addend, first, count,
                        )
                    },
                )
            });
            Ok(())
        })?;
        first += count;
    }
    drop(u);
    WORKSPACE.with(|cell| cell.replace(Some(workspace)));
    WEIGHTS.with(|cell| cell.replace(Some(kept)));
    Ok(())
}

/// Fills a view `[α², o, c]` with `U = G g Gᵀ` of every channel pair of `weight`
/// `[o, c, 3, 3]`.
struct WeightTransform<'a, W, const A: usize, const M: usize> {
    weight: &'a [f32],
    o: usize,
    c: usize,
    matrices: std::marker::PhantomData<fn() -> W>,
}

impl<W: Matrices<A, M>, const A: usize, const M: usize> candle_core::InplaceOp1
    for WeightTransform<'_, W, A, M>
{
    fn name(&self) -> &'static str {
        "conv2d-winograd-weights"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<()> {
        let u = workspace_view(storage, layout, A * A * self.o * self.c)?;
        transform_weights::<W, A, M>(self.weight, self.o, self.c, u);
        Ok(())
    }
}

/// `U = G g Gᵀ` of every channel pair into `u` `[α², o, c]`.
fn transform_weights<W: Matrices<A, M>, const A: usize, const M: usize>(
    weight: &[f32],
    o: usize,
    c: usize,
    u: &mut [f32],
) {
    let mut by_output = rows_of_planes(u, o, c);
    by_output.par_iter_mut().enumerate().for_each(|(oc, rows)| {
        Arch::new().dispatch(
            #[inline(always)]
            || {
                for base in (0..c).step_by(L) {
                    let n = L.min(c - base);
                    let mut g = [[[0f32; L]; 3]; 3];
                    for z in 0..n {
                        let taps = &weight[(oc * c + base + z) * 9..][..9];
                        for (k, row) in g.iter_mut().enumerate() {
                            for (l, v) in row.iter_mut().enumerate() {
                                v[z] = taps[3 * k + l];
                            }
                        }
                    }
                    let t = sandwich(&W::G, &g, &W::G);
                    for (xi, row) in rows.iter_mut().enumerate() {
                        store_lanes(row, base, &t[xi / A][xi % A], n);
                    }
                }
            },
        )
    });
}

/// Fills the workspace `[α², c, count]` with `V = Bᵀ d B` of tiles `first..first + count`.
struct InputTransform<'a, W, const A: usize, const M: usize> {
    input: &'a [f32],
    geo: &'a Geometry,
    tiling: Tiling,
    first: usize,
    count: usize,
    matrices: std::marker::PhantomData<fn() -> W>,
}

impl<W: Matrices<A, M>, const A: usize, const M: usize> candle_core::InplaceOp1
    for InputTransform<'_, W, A, M>
{
    fn name(&self) -> &'static str {
        "conv2d-winograd-input"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<()> {
        let c = self.geo.channels;
        let v = workspace_view(storage, layout, A * A * c * self.count)?;
        let mut by_channel = rows_of_planes(v, c, self.count);
        by_channel
            .par_iter_mut()
            .enumerate()
            .for_each(|(ic, rows)| {
                Arch::new().dispatch(
                    #[inline(always)]
                    || self.channel(ic, rows),
                )
            });
        Ok(())
    }
}

impl<W: Matrices<A, M>, const A: usize, const M: usize> InputTransform<'_, W, A, M> {
    /// The transformed patches of input channel `ic` into `rows` (one per `ξ`).
    #[inline(always)]
    fn channel(&self, ic: usize, rows: &mut [&mut [f32]]) {
        let geo = self.geo;
        let (height, width, up) = (geo.height, geo.width, geo.up);
        let plane = geo.src_height * geo.src_width;
        let src = &self.input[..geo.batch * geo.channels * plane];
        for base in (0..self.count).step_by(L) {
            let n = L.min(self.count - base);
            let mut d = [[[0f32; L]; A]; A];
            for z in 0..n {
                let (image, y, x) = self.tiling.locate(self.first + base + z);
                let src = &src[(image * geo.channels + ic) * plane..][..plane];
                // The patch starts one row and column before the tile (padding 1).
                for (r, drow) in d.iter_mut().enumerate() {
                    let Some(iy) = (y + r).checked_sub(1).filter(|&iy| iy < height) else {
                        continue;
                    };
                    let srow = &src[(iy >> up) * geo.src_width..][..geo.src_width];
                    if up == 0 && x >= 1 && x - 1 + A <= width {
                        for (v, s) in drow.iter_mut().zip(&srow[x - 1..x - 1 + A]) {
                            v[z] = *s;
                        }
                    } else {
                        for (q, v) in drow.iter_mut().enumerate() {
                            if let Some(ix) = (x + q).checked_sub(1).filter(|&ix| ix < width) {
                                v[z] = srow[ix >> up];
                            }
                        }
                    }
                }
            }
            let t = sandwich(&W::BT, &d, &W::BT);
            for (xi, row) in rows.iter_mut().enumerate() {
                store_lanes(row, base, &t[xi / A][xi % A], n);
            }
        }
    }
}

/// `Y = Aᵀ M A` of output channel `oc` for tiles `first..first + count` from the products `p`
/// `[α², o, count]`, plus the addends, into `planes` (that channel's plane of each image).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_channel<W: Matrices<A, M>, const A: usize, const M: usize, T: Narrow>(
    p: &[f32],
    planes: &mut [&mut [T]],
    oc: usize,
    geo: &Geometry,
    tiling: Tiling,
    addend: &Addend,
    first: usize,
    count: usize,
) {
    let o = geo.out_channels;
    let (out_h, out_w) = (geo.out_h, geo.out_w);
    let plane = out_h * out_w;
    for base in (0..count).step_by(L) {
        let n = L.min(count - base);
        let m: [[Lanes; A]; A] = std::array::from_fn(|a| {
            std::array::from_fn(|b| load_lanes(&p[((a * A + b) * o + oc) * count + base..], n))
        });
        let y = sandwich(&W::AT, &m, &W::AT);
        for z in 0..n {
            let (image, y0, x0) = tiling.locate(first + base + z);
            let plane_index = image * o + oc;
            let bias = addend.bias[plane_index];
            let residual = addend.residual.map(|r| &r[plane_index * plane..][..plane]);
            let dst = &mut planes[image];
            let cols = M.min(out_w - x0);
            for (r, yrow) in y.iter().enumerate().take(out_h - y0) {
                let at = (y0 + r) * out_w + x0;
                match residual {
                    Some(res) => {
                        for q in 0..cols {
                            dst[at + q] = T::narrow(yrow[q][z] + bias + res[at + q]);
                        }
                    }
                    None => {
                        for q in 0..cols {
                            dst[at + q] = T::narrow(yrow[q][z] + bias);
                        }
                    }
                }
            }
        }
    }
}
