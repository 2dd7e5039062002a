//! 2-D convolution (NCHW, one group, no dilation) on the CPU as tiled matrix products.
//!
//! candle 0.11.1's CPU `conv2d` unfolds the whole input (`im2col`, one index computation per
//! element, `[b, h_out * w_out, c * k * k]` floats, 94 MiB for a 3x3 320-channel convolution of a
//! 64x64 CFG batch), multiplies, and then copies the transposed product into NCHW order. Here the
//! unfolded columns are built a few output rows at a time into a tile of about 8 MiB (a buffer
//! each thread keeps across calls) that the matrix product reads while it is still in the caches;
//! rows are copied as runs of `w` floats
//! (stride 1) rather than element by element; and the product of the weight `[o, c * k * k]` by
//! the tile `[c * k * k, rows * w_out]` is already in NCHW order, so it goes straight to the
//! output with the bias added in the same pass. A 1x1 convolution multiplies the weight by the
//! image itself. The products are candle's `matmul` (the `gemm` crate, on all of candle's
//! threads); the copies run on the same rayon pool. This is the usual lowering of PyTorch's
//! `slow_conv2d` CPU path (`aten/src/ATen/native/ConvolutionMM2d.cpp`: unfold per image, then one
//! GEMM into the output), with tiles across images and rows in place of whole images. Besides
//! the bias, [`ConvOptions`] folds in what surrounds SD's convolutions: a bias per image (a
//! resnet's time embedding), a residual (its shortcut) and nearest 2x upsampling (ldm
//! `Upsample`), each of which would otherwise be one more pass over the activations.
//!
//! Computation is in float32: half-precision inputs and weights are widened and the output is
//! rounded back to the input's dtype, so bfloat16 works on the CPU as well (candle 0.11.1's CPU
//! matrix product has no bfloat16).

use super::with_f32;
use candle_core::{DType, Device, Result, Tensor, WithDType};
use rayon::prelude::*;

mod winograd;

use winograd::Method;

/// Bytes of unfolded columns per tile: about a share of the last-level cache (Zen 4: 32 MiB per
/// 8 cores), large enough that the matrix product sees several hundred columns.
const TILE_BYTES: usize = 8 << 20;

/// Fewest columns per tile when the size allows, so that the matrix products stay wide (a row
/// of a 512-channel 3x3 convolution at 256x256 alone takes 4.5 MiB).
const MIN_COLUMNS: usize = 512;

/// Bytes of Winograd-transformed input (and of products) per chunk of tiles: each chunk is one
/// batch of `α²` matrix products, which pack the transformed weights again, so chunks are
/// large (a 64x64 CFG batch of 320 channels is one chunk; with 8 MiB chunks F(4x4) took 1.6x
/// as long there).
const WINOGRAD_BYTES: usize = 64 << 20;

/// How a convolution is cut up: the sizes above, and the method when a test forces one.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tile_bytes: usize,
    min_columns: usize,
    winograd_bytes: usize,
    method: Option<Method>,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            tile_bytes: TILE_BYTES,
            min_columns: MIN_COLUMNS,
            winograd_bytes: WINOGRAD_BYTES,
            method: None,
        }
    }
}

/// Output element types the kernel writes (rounded from float32).
trait Narrow: WithDType {
    fn narrow(v: f32) -> Self;
}

impl Narrow for f32 {
    fn narrow(v: f32) -> Self {
        v
    }
}

impl Narrow for half::f16 {
    fn narrow(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

impl Narrow for half::bf16 {
    fn narrow(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

/// Everything of a convolution besides its input and weight (see [`conv2d_with`]).
#[derive(Debug, Clone, Copy)]
pub struct ConvOptions<'a> {
    /// Added to each output channel: `[o]`, or `[batch, o]` for a bias per image (a resnet's
    /// time embedding folded into its first convolution's bias).
    pub bias: Option<&'a Tensor>,
    /// Added to the output, `[batch, o, h_out, w_out]` (a resnet's shortcut).
    pub residual: Option<&'a Tensor>,
    /// Step of the kernel on both axes (at least 1).
    pub stride: usize,
    /// Zero padding `[top, bottom, left, right]`.
    pub padding: [usize; 4],
    /// Nearest-neighbour upsampling by 2 before the convolution, as `upsample_nearest2d` to twice
    /// the size (ldm `Upsample`), without materialising the upsampled input.
    pub upsample: bool,
}

impl Default for ConvOptions<'_> {
    fn default() -> Self {
        Self {
            bias: None,
            residual: None,
            stride: 1,
            padding: [0; 4],
            upsample: false,
        }
    }
}

/// Shapes of one convolution, checked. `height` and `width` are those the kernel sees (after
/// the optional upsampling); `src_height` and `src_width` those stored.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    src_height: usize,
    src_width: usize,
    height: usize,
    width: usize,
    /// `log2` of the upsampling factor (0 or 1).
    up: u32,
    out_channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    stride: usize,
    top: usize,
    left: usize,
    out_h: usize,
    out_w: usize,
}

impl Geometry {
    fn new(xs: &Tensor, weight: &Tensor, opts: &ConvOptions) -> Result<Self> {
        let (batch, channels, src_height, src_width) = xs.dims4()?;
        let (out_channels, wc, kernel_h, kernel_w) = weight.dims4()?;
        let up = u32::from(opts.upsample);
        let (height, width) = (src_height << up, src_width << up);
        let [top, bottom, left, right] = opts.padding;
        let stride = opts.stride;
        let padded_h = height + top + bottom;
        let padded_w = width + left + right;
        if wc != channels
            || stride == 0
            || kernel_h == 0
            || kernel_w == 0
            || kernel_h > padded_h
            || kernel_w > padded_w
        {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: input {:?} and weight {:?} with stride {stride} and padding {:?} do not \
                 fit [batch, c, h, w] and [o, c, kh, kw] with kernels inside the padded input",
                xs.dims(),
                weight.dims(),
                opts.padding
            )));
        }
        let geo = Self {
            batch,
            channels,
            src_height,
            src_width,
            height,
            width,
            up,
            out_channels,
            kernel_h,
            kernel_w,
            stride,
            top,
            left,
            out_h: (padded_h - kernel_h) / stride + 1,
            out_w: (padded_w - kernel_w) / stride + 1,
        };
        if let Some(b) = opts.bias
            && b.dims() != [out_channels]
            && b.dims() != [batch, out_channels]
        {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: bias {:?} is neither [{out_channels}] nor [{batch}, {out_channels}]",
                b.dims()
            )));
        }
        if let Some(r) = opts.residual
            && r.dims() != [batch, out_channels, geo.out_h, geo.out_w]
        {
            return Err(candle_core::Error::Msg(format!(
                "conv2d: residual {:?} for an output of {:?}",
                r.dims(),
                [batch, out_channels, geo.out_h, geo.out_w]
            )));
        }
        Ok(geo)
    }

    /// Rows of the unfolded matrix: one per input channel and kernel position.
    fn depth(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w
    }

    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride == 1
            && self.up == 0
            && self.out_h == self.height
            && self.out_w == self.width
    }
}

/// Convolution of `xs` `[batch, c, h, w]` by `weight` `[o, c, kh, kw]` with the same `stride`
/// and zero `padding` on both axes, plus `bias` `[o]` if given: PyTorch's
/// `F.conv2d(xs, weight, bias, stride, padding)` with one group and no dilation. Returns
/// `[batch, o, h_out, w_out]` in the dtype of `xs`. See [`conv2d_with`].
///
/// # Errors
/// When the shapes do not fit as above, or `bias` does not have `o` elements.
pub fn conv2d(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let opts = ConvOptions {
        bias,
        stride,
        padding: [padding; 4],
        ..Default::default()
    };
    conv2d_with(xs, weight, &opts)
}

/// Convolution of `xs` `[batch, c, h, w]` (upsampled by 2 first when `opts.upsample`) by
/// `weight` `[o, c, kh, kw]`, one group, no dilation, plus the bias and the residual of `opts`.
/// Returns `[batch, o, h_out, w_out]` in the dtype of `xs`.
///
/// On the CPU for float32, float16 and bfloat16 this is the tiled kernel of this module
/// (computing in float32, `weight`, bias and residual widened from any float dtype); elsewhere,
/// and for other dtypes, candle's `upsample_nearest2d`, `pad_with_zeros`, `conv2d` and additions.
///
/// # Errors
/// When the shapes do not fit as above or as documented on [`ConvOptions`].
pub fn conv2d_with(xs: &Tensor, weight: &Tensor, opts: &ConvOptions) -> Result<Tensor> {
    conv2d_planned(xs, weight, opts, Plan::default())
}

fn conv2d_planned(xs: &Tensor, weight: &Tensor, opts: &ConvOptions, plan: Plan) -> Result<Tensor> {
    let geo = Geometry::new(xs, weight, opts)?;
    let dtype = xs.dtype();
    let supported = matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
    if !xs.device().is_cpu() || !supported {
        return fallback(xs, weight, opts, &geo);
    }
    match dtype {
        DType::F16 => run::<half::f16>(xs, weight, opts, &geo, plan),
        DType::BF16 => run::<half::bf16>(xs, weight, opts, &geo, plan),
        _ => run::<f32>(xs, weight, opts, &geo, plan),
    }
}

/// The same computation from candle operations.
fn fallback(xs: &Tensor, weight: &Tensor, opts: &ConvOptions, geo: &Geometry) -> Result<Tensor> {
    let dtype = xs.dtype();
    let mut x = if opts.upsample {
        xs.upsample_nearest2d(geo.height, geo.width)?
    } else {
        xs.clone()
    };
    let [top, bottom, left, right] = opts.padding;
    let symmetric = top == bottom && top == left && top == right;
    if !symmetric {
        x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
    }
    let padding = if symmetric { top } else { 0 };
    let mut out = x.conv2d(&weight.to_dtype(dtype)?, padding, opts.stride, 1, 1)?;
    if let Some(b) = opts.bias {
        let b = b.to_dtype(dtype)?;
        let b = if b.rank() == 1 {
            b.reshape((1, (), 1, 1))?
        } else {
            b.reshape((geo.batch, geo.out_channels, 1, 1))?
        };
        out = out.broadcast_add(&b)?;
    }
    match opts.residual {
        Some(r) => out + r.to_dtype(dtype)?,
        None => Ok(out),
    }
}

/// What is added to each output value besides the product: bias per image and channel, and the
/// optional residual, all float32.
struct Addend<'a> {
    /// `[batch, o]`.
    bias: Vec<f32>,
    /// `[batch, o, h_out * w_out]`.
    residual: Option<&'a [f32]>,
    plane: usize,
    out_channels: usize,
}

impl Addend<'_> {
    /// Writes `product` (one channel's values for plane positions `offset..offset + len`) plus
    /// the addends into `dst` (that channel's plane of `image`).
    fn store<T: Narrow>(
        &self,
        dst: &mut [T],
        product: &[f32],
        image: usize,
        channel: usize,
        offset: usize,
    ) {
        let len = product.len();
        let plane_index = image * self.out_channels + channel;
        let b = self.bias[plane_index];
        let dst = &mut dst[offset..offset + len];
        match self.residual {
            Some(r) => {
                let r = &r[plane_index * self.plane + offset..][..len];
                for ((d, &p), &r) in dst.iter_mut().zip(product).zip(r) {
                    *d = T::narrow(p + b + r);
                }
            }
            None => {
                for (d, &p) in dst.iter_mut().zip(product) {
                    *d = T::narrow(p + b);
                }
            }
        }
    }
}

fn run<T: Narrow>(
    xs: &Tensor,
    weight: &Tensor,
    opts: &ConvOptions,
    geo: &Geometry,
    plan: Plan,
) -> Result<Tensor> {
    let Plan {
        tile_bytes,
        min_columns,
        ..
    } = plan;
    let Geometry {
        batch,
        channels,
        height,
        width,
        out_channels,
        out_h,
        out_w,
        ..
    } = *geo;
    let x = xs.to_dtype(DType::F32)?.contiguous()?;
    let w = weight
        .to_dtype(DType::F32)?
        .reshape((out_channels, geo.depth()))?
        .contiguous()?;
    let bias: Vec<f32> = match opts.bias {
        Some(b) => {
            let b = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            if b.len() == out_channels {
                b.repeat(batch)
            } else {
                b
            }
        }
        None => vec![0.0; batch * out_channels],
    };
    let residual = match opts.residual {
        Some(r) => Some(r.to_dtype(DType::F32)?.contiguous()?),
        None => None,
    };
    let plane = out_h * out_w;
    let mut out = vec![T::narrow(0.0); batch * out_channels * plane];
    let run_tiles = |residual: Option<&[f32]>| -> Result<()> {
        let addend = Addend {
            bias,
            residual,
            plane,
            out_channels,
        };
        if geo.is_pointwise() {
            // The image `[c, h * w]` is its own unfolded matrix.
            for image in 0..batch {
                let cols = x.get(image)?.reshape((channels, height * width))?;
                let product = w.matmul(&cols)?;
                let dst = &mut out[image * out_channels * plane..][..out_channels * plane];
                with_f32(&product, |p| {
                    dst.par_chunks_mut(plane)
                        .zip(p.par_chunks(plane))
                        .enumerate()
                        .for_each(|(o, (d, p))| addend.store(d, p, image, o, 0));
                    Ok(())
                })?;
            }
            return Ok(());
        }
        let method = plan.method.unwrap_or_else(|| winograd::choose(geo));
        if method != Method::Direct {
            return with_f32(&x, |input| {
                with_f32(&w, |weight| match method {
                    Method::F2 => winograd::convolve::<winograd::F2, 4, 2, T>(
                        input,
                        weight,
                        geo,
                        &addend,
                        &mut out,
                        plan.winograd_bytes,
                    ),
                    _ => winograd::convolve::<winograd::F4, 6, 4, T>(
                        input,
                        weight,
                        geo,
                        &addend,
                        &mut out,
                        plan.winograd_bytes,
                    ),
                })
            });
        }
        let depth = geo.depth();
        let rows_total = batch * out_h;
        // Whole rows of about `tile_bytes`, but enough for `min_columns` columns.
        let tile_rows = (tile_bytes / (4 * depth * out_w).max(1))
            .max(min_columns.div_ceil(out_w))
            .clamp(1, rows_total);
        let workspace = take_workspace(depth * tile_rows * out_w)?;
        let mut first = 0;
        while first < rows_total {
            let rows = tile_rows.min(rows_total - first);
            let cols = workspace
                .narrow(0, 0, depth * rows * out_w)?
                .reshape((depth, rows * out_w))?;
            with_f32(&x, |input| {
                cols.inplace_op1(&Unfold {
                    input,
                    geo,
                    first,
                    rows,
                })
            })?;
            let product = w.matmul(&cols)?;
            with_f32(&product, |p| {
                store_rows(&mut out, p, &addend, geo, first, rows);
                Ok(())
            })?;
            first += rows;
        }
        WORKSPACE.with(|cell| cell.replace(Some(workspace)));
        Ok(())
    };
    match &residual {
        Some(r) => with_f32(r, |r| run_tiles(Some(r)))?,
        None => run_tiles(None)?,
    }
    Tensor::from_vec(out, (batch, out_channels, out_h, out_w), &Device::Cpu)
}

thread_local! {
    /// The unfolded-column buffer of this thread's last convolution, kept for the next one: a
    /// fresh 8 MiB buffer per tile would cost its page faults and zeroing every time.
    static WORKSPACE: std::cell::RefCell<Option<Tensor>> = const { std::cell::RefCell::new(None) };
    /// The Winograd-transformed weights' buffer of this thread's last such convolution, kept
    /// for the next one. A fresh buffer per call (up to 236 MB, F(4x4) of 1280 channels) was
    /// zeroed by the allocator on the calling thread while the others waited: about 2 GB per
    /// 64x64 UNet step.
    static WEIGHTS: std::cell::RefCell<Option<Tensor>> = const { std::cell::RefCell::new(None) };
}

/// Drops this thread's kept convolution buffers (the unfolded-column tile and the
/// Winograd-transformed weights: a few hundred MB after a UNet step), so that their memory
/// serves what runs next. The VAE calls it before it encodes or decodes: its activations are
/// the largest of the pipeline and its own buffers are smaller than the UNet's.
pub fn release_kept_buffers() {
    WORKSPACE.with(|cell| cell.take());
    WEIGHTS.with(|cell| cell.take());
}

/// A float32 CPU tensor of at least `len` elements (1-D, contiguous): this thread's kept
/// workspace if it is large enough, else a new one. The caller puts it back when done; a nested
/// call meanwhile gets its own.
fn take_workspace(len: usize) -> Result<Tensor> {
    take_kept(&WORKSPACE, len)
}

/// A float32 CPU tensor of at least `len` elements (1-D, contiguous) from the buffer `kept` of
/// this thread if it is large enough, else a new one; see [`take_workspace`].
fn take_kept(
    kept: &'static std::thread::LocalKey<std::cell::RefCell<Option<Tensor>>>,
    len: usize,
) -> Result<Tensor> {
    match kept.with(|cell| cell.take()) {
        Some(t) if t.elem_count() >= len => Ok(t),
        _ => Tensor::zeros(len, DType::F32, &Device::Cpu),
    }
}

/// [`unfold`] into a tensor's storage, in place.
struct Unfold<'a> {
    input: &'a [f32],
    geo: &'a Geometry,
    first: usize,
    rows: usize,
}

impl candle_core::InplaceOp1 for Unfold<'_> {
    fn name(&self) -> &'static str {
        "conv2d-unfold"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> Result<()> {
        let len = self.geo.depth() * self.rows * self.geo.out_w;
        let cols = workspace_view(storage, layout, len)?;
        unfold(self.input, self.geo, self.first, self.rows, cols);
        Ok(())
    }
}

/// The `len` float32 values of a workspace view (a contiguous narrowing of this thread's
/// workspace, as [`take_workspace`] gives), for an in-place operation to fill.
fn workspace_view<'a>(
    storage: &'a mut candle_core::CpuStorage,
    layout: &candle_core::Layout,
    len: usize,
) -> Result<&'a mut [f32]> {
    let start = layout.start_offset();
    let candle_core::CpuStorage::F32(data) = storage else {
        return Err(candle_core::Error::Msg(
            "conv2d: workspace is not float32".into(),
        ));
    };
    match data.get_mut(start..start + len) {
        Some(view) if layout.is_contiguous() && layout.shape().elem_count() == len => Ok(view),
        _ => Err(candle_core::Error::Msg(format!(
            "conv2d: workspace view {:?} does not hold {len} contiguous values",
            layout.shape()
        ))),
    }
}

/// Fills `cols` `[c * kh * kw, rows * w_out]` with the input values under each kernel position
/// for output rows `first..first + rows`, counted across images (`image * h_out + y`); zeros
/// where the kernel covers padding.
fn unfold(input: &[f32], geo: &Geometry, first: usize, rows: usize, cols: &mut [f32]) {
    let Geometry {
        channels,
        src_height,
        src_width,
        height,
        width,
        up,
        kernel_h,
        kernel_w,
        stride,
        top,
        left,
        out_h,
        out_w,
        ..
    } = *geo;
    let taps = kernel_h * kernel_w;
    cols.par_chunks_mut(rows * out_w)
        .with_min_len(8)
        .enumerate()
        .for_each(|(k, dst)| {
            let c = k / taps;
            let ky = (k % taps) / kernel_w;
            let kx = k % kernel_w;
            // Output columns whose input column `x * stride + kx - left` is inside the image.
            let lo = left.saturating_sub(kx).div_ceil(stride).min(out_w);
            let hi = (width + left)
                .saturating_sub(kx)
                .div_ceil(stride)
                .clamp(lo, out_w);
            for (r, drow) in dst.chunks_exact_mut(out_w).enumerate() {
                let row = first + r;
                let (image, y) = (row / out_h, row % out_h);
                let iy = y * stride + ky;
                if iy < top || iy - top >= height {
                    drow.fill(0.0);
                    continue;
                }
                let sy = (iy - top) >> up;
                let start = ((image * channels + c) * src_height + sy) * src_width;
                let src = &input[start..start + src_width];
                drow[..lo].fill(0.0);
                drow[hi..].fill(0.0);
                let x0 = lo * stride + kx - left;
                let run = &mut drow[lo..hi];
                if stride == 1 && up == 0 {
                    run.copy_from_slice(&src[x0..x0 + run.len()]);
                } else {
                    for (i, d) in run.iter_mut().enumerate() {
                        *d = src[(x0 + i * stride) >> up];
                    }
                }
            }
        });
}

/// Writes a tile's `product` `[o, rows * w_out]` (output rows `first..first + rows` across
/// images) plus the addends into `out` `[batch, o, h_out, w_out]`.
fn store_rows<T: Narrow>(
    out: &mut [T],
    product: &[f32],
    addend: &Addend,
    geo: &Geometry,
    first: usize,
    rows: usize,
) {
    let (out_h, out_w, o) = (geo.out_h, geo.out_w, geo.out_channels);
    let plane = out_h * out_w;
    let last = first + rows;
    for image in first / out_h..last.div_ceil(out_h) {
        // The rows of this image inside the tile.
        let lo = first.max(image * out_h);
        let hi = last.min((image + 1) * out_h);
        let dst = &mut out[image * o * plane..][..o * plane];
        let skip = (lo - first) * out_w;
        let len = (hi - lo) * out_w;
        let offset = (lo - image * out_h) * out_w;
        dst.par_chunks_mut(plane)
            .zip(product.par_chunks(rows * out_w))
            .enumerate()
            .for_each(|(channel, (d, p))| {
                addend.store(d, &p[skip..skip + len], image, channel, offset);
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution in float64 from the (already rounded) inputs: `bias` `[o]` or
    /// `[batch, o]`, `padding` `[top, bottom, left, right]`.
    fn reference(
        xs: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: [usize; 4],
    ) -> Result<Vec<f64>> {
        let (b, c, h, w) = xs.dims4()?;
        let (o, _, kh, kw) = weight.dims4()?;
        let [top, bottom, left, right] = padding;
        let x: Vec<f64> = xs.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let k: Vec<f64> = weight.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        let bias: Vec<f64> = match bias {
            Some(t) if t.rank() == 1 => t.to_dtype(DType::F64)?.to_vec1::<f64>()?.repeat(b),
            Some(t) => t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?,
            None => vec![0.0; b * o],
        };
        let oh = (h + top + bottom - kh) / stride + 1;
        let ow = (w + left + right - kw) / stride + 1;
        let mut out = Vec::with_capacity(b * o * oh * ow);
        for n in 0..b {
            for oc in 0..o {
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = bias[n * o + oc];
                        for ci in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (y * stride + ky) as isize - top as isize;
                                    let ix = (xo * stride + kx) as isize - left as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let (iy, ix) = (iy as usize, ix as usize);
                                    acc += x[((n * c + ci) * h + iy) * w + ix]
                                        * k[((oc * c + ci) * kh + ky) * kw + kx];
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The direct (unfolded columns) method with `tile_bytes` per tile.
    fn conv2d_tiled(
        xs: &Tensor,
        weight: &Tensor,
        opts: &ConvOptions,
        tile_bytes: usize,
        min_columns: usize,
    ) -> Result<Tensor> {
        let plan = Plan {
            tile_bytes,
            min_columns,
            method: Some(Method::Direct),
            ..Default::default()
        };
        conv2d_planned(xs, weight, opts, plan)
    }

    /// Largest `|got - want| / (rel * |want| + abs)`; at most 1 passes.
    fn worst(got: &Tensor, want: &[f64], rel: f64, abs: f64) -> Result<f64> {
        let got: Vec<f64> = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        assert_eq!(got.len(), want.len());
        Ok(got
            .iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs() / (rel * w.abs() + abs))
            .fold(0.0, f64::max))
    }

    fn inputs(
        dtype: DType,
        x: (usize, usize, usize, usize),
        o: usize,
        k: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, x, &dev)?.to_dtype(dtype)?;
        let w = Tensor::randn(0f32, 0.3, (o, x.1, k, k), &dev)?.to_dtype(dtype)?;
        let b = Tensor::randn(0f32, 1.0, o, &dev)?.to_dtype(dtype)?;
        Ok((xs, w, b))
    }

    /// Input shape, out channels, upsampling.
    type Shape = ((usize, usize, usize, usize), usize, bool);

    /// Input shape, out channels, kernel, stride, padding.
    type Case = ((usize, usize, usize, usize), usize, usize, usize, usize);

    /// SD's 3x3 stride 1 and stride 2 convolutions, 1x1, a 5x5, no padding, odd sizes, a kernel
    /// as large as the padded input.
    const CASES: [Case; 8] = [
        ((2, 5, 7, 9), 6, 3, 1, 1),
        ((2, 5, 8, 8), 4, 3, 2, 1),
        ((1, 3, 9, 7), 4, 3, 2, 1),
        ((2, 6, 5, 3), 7, 1, 1, 0),
        ((1, 4, 6, 11), 3, 5, 1, 2),
        ((2, 3, 7, 6), 2, 3, 1, 0),
        ((1, 2, 9, 6), 3, 3, 2, 0),
        ((1, 3, 2, 3), 2, 4, 1, 1),
    ];

    /// Float32 against the float64 direct convolution. Sums of at most 75 products of values
    /// near 1: 1e-5 relative plus 1e-5 absolute is float32 accumulation rounding, far below any
    /// indexing mistake (a wrong tap moves outputs by about 0.3). Every tile size, from one row
    /// to the whole batch, so tiles start and end inside and across images.
    #[test]
    fn float32_matches_direct_convolution() -> Result<()> {
        for (shape, o, k, stride, padding) in CASES {
            let (xs, w, b) = inputs(DType::F32, shape, o, k)?;
            let want = reference(&xs, &w, Some(&b), stride, [padding; 4])?;
            let opts = ConvOptions {
                bias: Some(&b),
                stride,
                padding: [padding; 4],
                ..Default::default()
            };
            let geo = Geometry::new(&xs, &w, &opts)?;
            let row_bytes = 4 * geo.depth() * geo.out_w;
            for rows in [1, 2, 3, 5, 1000] {
                let got = conv2d_tiled(&xs, &w, &opts, rows * row_bytes, 0)?;
                assert_eq!(got.dims(), [shape.0, o, geo.out_h, geo.out_w]);
                let err = worst(&got, &want, 1e-5, 1e-5)?;
                assert!(
                    err <= 1.0,
                    "{shape:?} k{k} s{stride} p{padding} rows {rows}: {err}"
                );
            }
            let got = conv2d(&xs, &w, None, stride, padding)?;
            let want = reference(&xs, &w, None, stride, [padding; 4])?;
            assert!(worst(&got, &want, 1e-5, 1e-5)? <= 1.0);
        }
        Ok(())
    }

    /// Half precision: the reference uses the same rounded inputs, so the only error left is the
    /// output's rounding, half a unit in the last place: 2^-11 relative for float16 (11
    /// significant bits), 2^-8 for bfloat16 (8 significant bits). The bound allows that plus
    /// float32 accumulation (1e-5).
    #[test]
    fn half_precision_rounds_only_the_output() -> Result<()> {
        for (dtype, rel) in [(DType::F16, 2f64.powi(-11)), (DType::BF16, 2f64.powi(-8))] {
            for (shape, o, k, stride, padding) in CASES {
                let (xs, w, b) = inputs(dtype, shape, o, k)?;
                let got = conv2d(&xs, &w, Some(&b), stride, padding)?;
                assert_eq!(got.dtype(), dtype);
                let want = reference(&xs, &w, Some(&b), stride, [padding; 4])?;
                let err = worst(&got, &want, rel * 1.001 + 1e-5, 1e-5)?;
                assert!(err <= 1.0, "{dtype:?} {shape:?} k{k} s{stride}: {err}");
            }
        }
        Ok(())
    }

    /// The fused extras against their plain equivalents: a bias per image, a residual, padding
    /// only right and bottom (the VAE's downsampler, diffusers `Downsample2D` with padding 0),
    /// and nearest upsampling (compared with candle's `upsample_nearest2d` then the reference),
    /// each in float32 and bfloat16, across tile sizes.
    #[test]
    fn fused_extras_match_plain_operations() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let rel = if dtype == DType::F32 {
                1e-5
            } else {
                2f64.powi(-8) * 1.001 + 1e-5
            };
            for (shape, o, k, stride, padding) in CASES {
                let (xs, w, _) = inputs(dtype, shape, o, k)?;
                let bias = Tensor::randn(0f32, 1.0, (shape.0, o), &dev)?.to_dtype(dtype)?;
                let pads = [[0, 1, 0, 1], [padding; 4], [2, 0, 1, 3]];
                for (upsample, pad) in [false, true].into_iter().flat_map(|u| pads.map(|p| (u, p)))
                {
                    let source = if upsample {
                        xs.upsample_nearest2d(2 * shape.2, 2 * shape.3)?
                    } else {
                        xs.clone()
                    };
                    let (h, w_) = (source.dim(2)?, source.dim(3)?);
                    if h + pad[0] + pad[1] < k || w_ + pad[2] + pad[3] < k {
                        continue;
                    }
                    let plain = reference(&source, &w, Some(&bias), stride, pad)?;
                    let dims = (shape.0, o, (h + pad[0] + pad[1] - k) / stride + 1, ());
                    let residual = Tensor::randn(0f32, 1.0, plain.len(), &dev)?
                        .reshape(dims)?
                        .to_dtype(dtype)?;
                    let r: Vec<f64> = residual.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                    let want: Vec<f64> = plain.iter().zip(&r).map(|(a, b)| a + b).collect();
                    let opts = ConvOptions {
                        bias: Some(&bias),
                        residual: Some(&residual),
                        stride,
                        padding: pad,
                        upsample,
                    };
                    for tile in [1, 4096, TILE_BYTES] {
                        let got = conv2d_tiled(&xs, &w, &opts, tile, 0)?;
                        let err = worst(&got, &want, rel, 1e-5)?;
                        assert!(
                            err <= 1.0,
                            "{dtype:?} {shape:?} k{k} s{stride} {pad:?} up {upsample}: {err}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Largest `|got - want| / scale` over the outputs.
    fn worst_scaled(got: &Tensor, want: &[f64], scale: &[f64]) -> Result<f64> {
        let got: Vec<f64> = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        assert_eq!(got.len(), want.len());
        Ok(got
            .iter()
            .zip(want)
            .zip(scale)
            .map(|((g, w), s)| (g - w).abs() / s)
            .fold(0.0, f64::max))
    }

    /// Winograd F(2x2) and F(4x4) against the float64 direct convolution, with a bias per image,
    /// a residual and nearest upsampling, odd sizes (partial tiles at the right and bottom),
    /// and chunks from one tile to all, so chunks start and end inside and across images.
    ///
    /// The error is measured against the size of what is summed, `Σ|x·w| + |bias| +
    /// |residual|` per output (the scale of any float32 sum's rounding). Direct float32
    /// convolution stays near 1e-7 of it here; Winograd adds the rounding of its transforms,
    /// whose coefficients grow to 8 (F(4x4)'s `Aᵀ`) and 1/24 (its `G`): measured at most about
    /// 3e-7 for F(2x2) and 2e-6 for F(4x4). The bound, 1e-5, is far below what a wrong tap,
    /// tile offset or coefficient gives (errors of order 0.1 of the scale).
    /// A Winograd convolution keeps its transformed-weight buffer for the next call on the
    /// thread, a smaller convolution reuses it (with the same result as from a fresh buffer),
    /// and `release_kept_buffers` drops both kept buffers.
    #[test]
    fn kept_buffers_are_reused_and_released() -> Result<()> {
        let kept = |key: &'static std::thread::LocalKey<std::cell::RefCell<Option<Tensor>>>| {
            key.with(|cell| cell.borrow().as_ref().map(Tensor::elem_count))
        };
        let plan = Plan {
            method: Some(Method::F4),
            ..Plan::default()
        };
        let run = |c: usize, o: usize| -> Result<Tensor> {
            let (xs, w, _) = inputs(DType::F32, (1, c, 8, 8), o, 3)?;
            let opts = ConvOptions {
                padding: [1; 4],
                ..Default::default()
            };
            let got = conv2d_planned(&xs, &w, &opts, plan)?;
            release_kept_buffers();
            let fresh = conv2d_planned(&xs, &w, &opts, plan)?;
            assert_eq!(
                got.flatten_all()?.to_vec1::<f32>()?,
                fresh.flatten_all()?.to_vec1::<f32>()?
            );
            Ok(got)
        };
        release_kept_buffers();
        run(12, 10)?;
        assert_eq!(kept(&WEIGHTS), Some(36 * 12 * 10));
        // Smaller: the kept buffer serves it and stays.
        let (xs, w, _) = inputs(DType::F32, (1, 6, 8, 8), 5, 3)?;
        let opts = ConvOptions {
            padding: [1; 4],
            ..Default::default()
        };
        let before = conv2d_planned(&xs, &w, &opts, plan)?;
        assert_eq!(kept(&WEIGHTS), Some(36 * 12 * 10));
        release_kept_buffers();
        assert_eq!(kept(&WEIGHTS), None);
        assert_eq!(kept(&WORKSPACE), None);
        let after = conv2d_planned(&xs, &w, &opts, plan)?;
        assert_eq!(
            before.flatten_all()?.to_vec1::<f32>()?,
            after.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn winograd_matches_direct_convolution() -> Result<()> {
        let dev = Device::Cpu;
        let cases: [Shape; 5] = [
            ((2, 5, 7, 9), 6, false),
            ((1, 20, 12, 16), 17, false),
            ((2, 16, 9, 10), 8, false),
            ((2, 6, 5, 7), 5, true),
            ((1, 3, 1, 2), 2, true),
        ];
        for method in [Method::F2, Method::F4] {
            for (shape, o, upsample) in cases {
                for dtype in [DType::F32, DType::BF16] {
                    let (xs, w, _) = inputs(dtype, shape, o, 3)?;
                    let bias = Tensor::randn(0f32, 1.0, (shape.0, o), &dev)?.to_dtype(dtype)?;
                    let source = if upsample {
                        xs.upsample_nearest2d(2 * shape.2, 2 * shape.3)?
                    } else {
                        xs.clone()
                    };
                    let plain = reference(&source, &w, Some(&bias), 1, [1; 4])?;
                    let scale_sum =
                        reference(&source.abs()?, &w.abs()?, Some(&bias.abs()?), 1, [1; 4])?;
                    let dims = (shape.0, o, source.dim(2)?, source.dim(3)?);
                    let residual = Tensor::randn(0f32, 1.0, plain.len(), &dev)?
                        .reshape(dims)?
                        .to_dtype(dtype)?;
                    let r: Vec<f64> = residual.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                    let want: Vec<f64> = plain.iter().zip(&r).map(|(a, b)| a + b).collect();
                    // float32 error as above; bfloat16 also rounds the output (2^-8 relative).
                    let half = if dtype == DType::F32 {
                        0.0
                    } else {
                        2f64.powi(-8) * 1.001
                    };
                    let scale: Vec<f64> = scale_sum
                        .iter()
                        .zip(&r)
                        .zip(&want)
                        .map(|((s, r), w)| 1e-5 * (s + r.abs()) + half * w.abs())
                        .collect();
                    let opts = ConvOptions {
                        bias: Some(&bias),
                        residual: Some(&residual),
                        stride: 1,
                        padding: [1; 4],
                        upsample,
                    };
                    let alpha = if method == Method::F2 { 4 } else { 6 };
                    for chunk_tiles in [1, 3, 1 << 20] {
                        let plan = Plan {
                            winograd_bytes: chunk_tiles * 4 * alpha * alpha * shape.1.max(o),
                            method: Some(method),
                            ..Default::default()
                        };
                        let got = conv2d_planned(&xs, &w, &opts, plan)?;
                        assert_eq!(got.dims(), [dims.0, dims.1, dims.2, dims.3]);
                        let err = worst_scaled(&got, &want, &scale)?;
                        assert!(
                            err <= 1.0,
                            "{method:?} {dtype:?} {shape:?} up {upsample} chunk {chunk_tiles}: {err}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The method chosen by size: Winograd only for 3x3, stride 1, padding 1 with enough
    /// channels and tiles.
    #[test]
    fn winograd_is_chosen_where_it_applies() -> Result<()> {
        let geo = |x: (usize, usize, usize, usize), o, k, stride, padding| -> Result<Method> {
            let xs = Tensor::zeros(x, DType::F32, &Device::Cpu)?;
            let w = Tensor::zeros((o, x.1, k, k), DType::F32, &Device::Cpu)?;
            let opts = ConvOptions {
                stride,
                padding,
                ..Default::default()
            };
            Ok(winograd::choose(&Geometry::new(&xs, &w, &opts)?))
        };
        assert_eq!(geo((2, 320, 64, 64), 320, 3, 1, [1; 4])?, Method::F4);
        assert_eq!(geo((2, 640, 32, 32), 640, 3, 1, [1; 4])?, Method::F4);
        assert_eq!(geo((2, 1280, 16, 16), 1280, 3, 1, [1; 4])?, Method::F2);
        assert_eq!(geo((2, 1280, 8, 8), 1280, 3, 1, [1; 4])?, Method::Direct);
        assert_eq!(geo((1, 640, 32, 32), 640, 3, 1, [1; 4])?, Method::F2);
        assert_eq!(geo((2, 320, 64, 64), 320, 3, 2, [1; 4])?, Method::Direct);
        assert_eq!(
            geo((2, 320, 64, 64), 320, 3, 1, [0, 1, 0, 1])?,
            Method::Direct
        );
        assert_eq!(geo((2, 320, 64, 64), 320, 1, 1, [0; 4])?, Method::Direct);
        assert_eq!(geo((2, 4, 64, 64), 320, 3, 1, [1; 4])?, Method::Direct);
        assert_eq!(geo((1, 320, 4, 4), 320, 3, 1, [1; 4])?, Method::Direct);
        Ok(())
    }

    /// Times the direct and Winograd methods on SD's shapes, interleaved in one process:
    /// `cargo test --release -p danlu-diffusion --lib winograd_timing -- --ignored --nocapture`;
    /// `DANLU_CONV_TIMING_SHAPE=k` times only the `k`-th shape (for a profiler).
    #[test]
    #[ignore = "a timing report, minutes of CPU"]
    fn winograd_timing() -> Result<()> {
        let shapes: [Shape; 8] = [
            ((2, 320, 64, 64), 320, false),
            ((2, 640, 64, 64), 320, false),
            ((2, 640, 32, 32), 640, false),
            ((2, 640, 32, 32), 640, true),
            ((2, 1280, 16, 16), 1280, false),
            ((2, 1280, 8, 8), 1280, false),
            ((1, 512, 64, 64), 512, false),
            ((1, 256, 256, 256), 256, false),
        ];
        let only: Option<usize> = std::env::var("DANLU_CONV_TIMING_SHAPE")
            .ok()
            .and_then(|v| v.parse().ok());
        for (idx, (shape, o, upsample)) in shapes.into_iter().enumerate() {
            if only.is_some_and(|k| k != idx) {
                continue;
            }
            let (xs, w, b) = inputs(DType::F32, shape, o, 3)?;
            let opts = ConvOptions {
                bias: Some(&b),
                padding: [1; 4],
                upsample,
                ..Default::default()
            };
            let mut best = [f64::MAX; 3];
            for _ in 0..3 {
                for (i, method) in [Method::Direct, Method::F2, Method::F4]
                    .into_iter()
                    .enumerate()
                {
                    let plan = Plan {
                        method: Some(method),
                        ..Default::default()
                    };
                    let start = std::time::Instant::now();
                    conv2d_planned(&xs, &w, &opts, plan)?;
                    best[i] = best[i].min(start.elapsed().as_secs_f64());
                }
            }
            println!(
                "{shape:?} -> {o} up {upsample}: direct {:.4} s, F2 {:.4} s ({:.2}x), F4 {:.4} s ({:.2}x), chosen {:?}",
                best[0],
                best[1],
                best[0] / best[1],
                best[2],
                best[0] / best[2],
                winograd::choose(&Geometry::new(&xs, &w, &opts)?)
            );
        }
        Ok(())
    }

    /// A strided view as input, and an input whose dtype differs from the weight's.
    #[test]
    fn accepts_views_and_mixed_dtypes() -> Result<()> {
        let (xs, w, b) = inputs(DType::F32, (1, 4, 6, 5), 3, 3)?;
        let view = xs.transpose(2, 3)?;
        let got = conv2d(&view, &w, Some(&b), 1, 1)?;
        let want = reference(&view.contiguous()?, &w, Some(&b), 1, [1; 4])?;
        assert!(worst(&got, &want, 1e-5, 1e-5)? <= 1.0);
        let got = conv2d(&xs, &w.to_dtype(DType::F16)?, Some(&b), 1, 1)?;
        let want = reference(&xs, &w.to_dtype(DType::F16)?, Some(&b), 1, [1; 4])?;
        assert!(worst(&got, &want, 1e-5, 1e-5)? <= 1.0);
        Ok(())
    }

    /// float64 goes through candle's own operations, extras included.
    #[test]
    fn float64_falls_back_to_candle() -> Result<()> {
        let (xs, w, b) = inputs(DType::F64, (1, 3, 5, 5), 2, 3)?;
        let got = conv2d(&xs, &w, Some(&b), 2, 1)?;
        let want = reference(&xs, &w, Some(&b), 2, [1; 4])?;
        assert!(worst(&got, &want, 1e-12, 1e-12)? <= 1.0);
        let opts = ConvOptions {
            bias: Some(&b),
            stride: 2,
            padding: [0, 1, 0, 1],
            upsample: true,
            ..Default::default()
        };
        let got = conv2d_with(&xs, &w, &opts)?;
        let want = reference(
            &xs.upsample_nearest2d(10, 10)?,
            &w,
            Some(&b),
            2,
            [0, 1, 0, 1],
        )?;
        assert!(worst(&got, &want, 1e-12, 1e-12)? <= 1.0);
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let (xs, w, b) = inputs(DType::F32, (1, 3, 5, 5), 2, 3)?;
        let other = Tensor::zeros((2, 4, 3, 3), DType::F32, &Device::Cpu)?;
        assert!(conv2d(&xs, &other, None, 1, 1).is_err());
        assert!(conv2d(&xs, &w, Some(&w), 1, 1).is_err());
        assert!(conv2d(&xs, &w, Some(&b), 0, 1).is_err());
        let big = Tensor::zeros((2, 3, 9, 9), DType::F32, &Device::Cpu)?;
        assert!(conv2d(&xs, &big, None, 1, 1).is_err());
        assert!(conv2d(&xs.flatten_all()?, &w, None, 1, 1).is_err());
        let residual = Tensor::zeros((1, 2, 4, 5), DType::F32, &Device::Cpu)?;
        let opts = ConvOptions {
            residual: Some(&residual),
            padding: [1; 4],
            ..Default::default()
        };
        assert!(conv2d_with(&xs, &w, &opts).is_err());
        Ok(())
    }
}
