//! Random numbers that reproduce `torch.randn` on CPU (Mersenne Twister) and on CUDA (Philox), as A1111 uses them.
//!
//! * [`TorchCpuGenerator`] is `torch.Generator("cpu")`: `at::mt19937` plus the two normal
//!   sampling paths of `torch.randn` in float32 (PyTorch
//!   `aten/src/ATen/native/cpu/DistributionTemplates.h` `normal_kernel`): tensors of 16 or more
//!   elements go through `normal_fill` (all uniforms first, then Box-Muller in blocks of 16, the
//!   tail recomputed from 16 fresh uniforms), smaller ones through the scalar
//!   `at::normal_distribution<double>` with its cached second value
//!   (`aten/src/ATen/core/DistributionsHelper.h`).
//! * [`PhiloxGenerator`] is A1111's "NV" source (`modules/rng_philox.py`), the numbers
//!   `torch.randn` gives on a CUDA device.
//! * [`ImageRng`] is A1111's `modules/rng.py` `ImageRNG`: one generator per image, the first draw
//!   is the initial latent (optionally mixed with a variation seed through [`slerp`]), later
//!   draws are the step noise of ancestral samplers.
//! * [`noise`] and [`to_npy`] back `danlu noise`.
//!
//! ```
//! use danlu_diffusion::rng::{RngSource, noise, to_npy};
//!
//! // torch.manual_seed(42); torch.randn(1, 4, 64, 64)[0, 0, 0, :2]
//! let values = noise(42, &[1, 4, 64, 64], RngSource::Cpu)?;
//! assert_eq!(values.len(), 16_384);
//! assert!((values[0] - 1.9269).abs() < 1e-4 && (values[1] - 1.4873).abs() < 1e-4);
//! let bytes = to_npy(&[1, 4, 64, 64], &values); // what `numpy.load` reads
//! assert_eq!(bytes.len(), 128 + 16_384 * 4);
//! # Ok::<(), danlu_diffusion::Error>(())
//! ```

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Where the initial and step noise comes from, A1111's `randn_source` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RngSource {
    /// `torch.randn` on CPU (A1111 "CPU", ComfyUI's default).
    Cpu,
    /// A1111 "NV": the numbers `torch.randn` gives on a CUDA device (Philox 4x32-10).
    Nv,
}

impl RngSource {
    /// Parses A1111's option value or the CLI spelling (`cpu`, `nv`, case-insensitive).
    ///
    /// # Errors
    /// [`Error::Invalid`] for any other name.
    pub fn parse_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "nv" => Ok(Self::Nv),
            _ => Err(Error::Invalid {
                what: "rng source",
                reason: format!("`{name}` is not `cpu` or `nv`"),
            }),
        }
    }
}

/// Which math routines PyTorch's CPU kernel uses for the 16-wide Box-Muller step.
///
/// PyTorch compiles `DistributionTemplates.h` once per CPU capability. The AVX2 and AVX-512
/// builds (every x86-64 CPU from the last decade) use the Cephes polynomials of
/// `aten/src/ATen/native/cpu/avx_mathfun.h` (`log256_ps`, `sincos256_ps`); the default build
/// (ARM, Apple silicon, old x86) calls the C library's `logf`, `cosf` and `sinf`. The two give
/// different last bits for about a third of the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CpuKernel {
    /// The x86-64 AVX2/AVX-512 kernel (`avx_mathfun.h`); what A1111 and ComfyUI users on PCs get.
    #[default]
    Avx2,
    /// The generic kernel (`std::log`, `std::cos`, `std::sin` in float), as on ARM.
    Scalar,
}

const MT_N: usize = 624;
const MT_M: usize = 397;

/// The Mersenne Twister of PyTorch (`aten/src/ATen/core/MT19937RNGEngine.h`), seeded with the
/// low 32 bits of the seed like `at::mt19937(seed)`.
#[derive(Clone)]
struct Mt19937 {
    state: Box<[u32; MT_N]>,
    index: usize,
}

impl Mt19937 {
    fn new(seed: u64) -> Self {
        let mut state = Box::new([0u32; MT_N]);
        state[0] = (seed & 0xffff_ffff) as u32;
        for i in 1..MT_N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: MT_N }
    }

    fn twist(&mut self) {
        for i in 0..MT_N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % MT_N] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + MT_M) % MT_N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= MT_N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// `torch.Generator("cpu")` after `manual_seed(seed)`: reproduces `torch.randn(shape,
/// generator=g)` in float32 bit for bit, and continues the same stream on later calls.
#[derive(Clone)]
pub struct TorchCpuGenerator {
    mt: Mt19937,
    next_double_normal: Option<f64>,
    kernel: CpuKernel,
}

impl std::fmt::Debug for TorchCpuGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchCpuGenerator")
            .field("index", &self.mt.index)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl TorchCpuGenerator {
    /// A generator seeded like `torch.manual_seed(seed)`, using the x86 AVX2 kernel's math.
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, CpuKernel::default())
    }

    /// A generator seeded like `torch.manual_seed(seed)` that imitates the given CPU kernel.
    pub fn with_kernel(seed: u64, kernel: CpuKernel) -> Self {
        Self {
            mt: Mt19937::new(seed),
            next_double_normal: None,
            kernel,
        }
    }

    /// The next raw 32-bit output (`CPUGeneratorImpl::random`).
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// The next 64-bit output (`CPUGeneratorImpl::random64`): two draws, the first one high.
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.mt.next_u32());
        let lo = u64::from(self.mt.next_u32());
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits scaled by 2^-24.
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits scaled by 2^-53.
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `at::normal_distribution<double>(0, 1)`: Box-Muller on two doubles, the sine half
    /// cached for the next call.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_double_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_double_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n)` in float32: the values of a contiguous tensor of `n` elements.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            self.normal_fill_16(block);
        }
        if !n.is_multiple_of(16) {
            let tail = n - 16;
            for v in &mut data[tail..] {
                *v = self.uniform_f32();
            }
            self.normal_fill_16(&mut data[tail..]);
        }
        data
    }

    fn normal_fill_16(&self, data: &mut [f32]) {
        match self.kernel {
            CpuKernel::Avx2 => avx_mathfun::normal_fill_16(data),
            CpuKernel::Scalar => normal_fill_16_scalar(data),
        }
    }
}

/// `NormalFill16` of the generic kernel: `u1 = 1 - u`, radius from `logf`, angle computed in
/// double (`2.0f * c10::pi<double> * u2`) and stored as float.
fn normal_fill_16_scalar(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0 * std::f64::consts::PI * f64::from(u2)) as f32;
        // std::fma(x, 1, 0) rounds nothing; `+ 0.0` keeps its sign rule for zero.
        data[j] = radius * theta.cos() + 0.0;
        data[j + 8] = radius * theta.sin() + 0.0;
    }
}

/// The Cephes single-precision routines of PyTorch's `avx_mathfun.h`, one lane at a time, with
/// the same operation order. PyTorch's x86 builds are compiled by GCC with `-mfma` and its
/// default `-ffp-contract=fast`, which fuses each multiply feeding an add into one FMA; the
/// `mul_add` calls below sit exactly where that happens (checked bit for bit against torch).
mod avx_mathfun {
    // The literals are written exactly as in avx_mathfun.h: shortening them changes the
    // rounded float32 constants.
    #![allow(clippy::excessive_precision)]
    const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const LOG_P: [f32; 9] = [
        7.0376836292E-2,
        -1.1514610310E-1,
        1.1676998740E-1,
        -1.2420140846E-1,
        1.4249322787E-1,
        -1.6668057665E-1,
        2.0000714765E-1,
        -2.4999993993E-1,
        3.3333331174E-1,
    ];
    const LOG_Q1: f32 = -2.12194440e-4;
    const LOG_Q2: f32 = 0.693359375;
    const DP1: f32 = -0.78515625;
    const DP2: f32 = -2.4187564849853515625e-4;
    const DP3: f32 = -3.77489497744594108e-8;
    const SINCOF: [f32; 3] = [-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1];
    const COSCOF: [f32; 3] = [
        2.443315711809948E-005,
        -1.388731625493765E-003,
        4.166664568298827E-002,
    ];
    const FOPI: f32 = 1.27323954473516;

    /// `log256_ps` for one lane (inputs here are in (0, 1]).
    fn log(x: f32) -> f32 {
        let invalid = x <= 0.0;
        let x = x.max(f32::from_bits(0x0080_0000));
        let bits = x.to_bits();
        let imm0 = (bits >> 23) as i32 - 0x7f;
        let mut x = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        let mut e = imm0 as f32 + 1.0;
        let mask = x < SQRTHF;
        let tmp = if mask { x } else { 0.0 };
        x -= 1.0;
        e -= if mask { 1.0 } else { 0.0 };
        x += tmp;
        let z = x * x;
        let mut y = LOG_P[0];
        for p in &LOG_P[1..] {
            y = y.mul_add(x, *p);
        }
        y *= x;
        // GCC fuses the first multiplication that feeds an addition.
        y = y.mul_add(z, e * LOG_Q1);
        y = (-z).mul_add(0.5, y);
        x += y;
        x = e.mul_add(LOG_Q2, x);
        if invalid { f32::NAN } else { x }
    }

    /// `sincos256_ps` for one lane: `(sin, cos)`.
    fn sincos(x: f32) -> (f32, f32) {
        let sign_sin = x.to_bits() & 0x8000_0000;
        let x = x.abs();
        let y = x * FOPI;
        let mut j = y as i32;
        j = (j + 1) & !1;
        let y = j as f32;
        let swap_sign_sin = ((j & 4) as u32) << 29;
        let poly_first = (j & 2) == 0;
        let mut x = x;
        x = y.mul_add(DP1, x);
        x = y.mul_add(DP2, x);
        x = y.mul_add(DP3, x);
        let sign_cos = ((!(j - 2) & 4) as u32) << 29;
        let sign_sin = sign_sin ^ swap_sign_sin;
        let z = x * x;
        let mut yc = COSCOF[0];
        yc = yc.mul_add(z, COSCOF[1]);
        yc = yc.mul_add(z, COSCOF[2]);
        yc *= z;
        yc = yc.mul_add(z, -(z * 0.5));
        yc += 1.0;
        let mut ys = SINCOF[0];
        ys = ys.mul_add(z, SINCOF[1]);
        ys = ys.mul_add(z, SINCOF[2]);
        ys *= z;
        ys = ys.mul_add(x, x);
        // The intrinsics select with masks and subtract, which keeps the values exact.
        let (sin, cos) = if poly_first { (ys, yc) } else { (yc, ys) };
        (
            f32::from_bits(sin.to_bits() ^ sign_sin),
            f32::from_bits(cos.to_bits() ^ sign_cos),
        )
    }

    /// `NormalFill16<float>` of the AVX2 kernel.
    pub(super) fn normal_fill_16(data: &mut [f32]) {
        const TWO_PI: f32 = std::f32::consts::TAU;
        for j in 0..8 {
            let u1 = 1.0 - data[j];
            let u2 = data[j + 8];
            let radius = (-2.0 * log(u1)).sqrt();
            let theta = TWO_PI * u2;
            let (sin, cos) = sincos(theta);
            data[j] = radius * cos + 0.0;
            data[j + 8] = radius * sin + 0.0;
        }
    }
}

const PHILOX_M: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];
const PHILOX_W: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// A1111's "NV" generator (`modules/rng_philox.py`): Philox 4x32 with 10 rounds keyed by the
/// seed, counter `(offset, 0, index, 0)`, one Box-Muller sine per element, so it matches
/// `torch.randn` on CUDA. Each `randn` call advances the offset by one.
#[derive(Debug, Clone)]
pub struct PhiloxGenerator {
    seed: u64,
    offset: u32,
}

impl PhiloxGenerator {
    /// A generator for `seed`, at offset 0.
    pub fn new(seed: u64) -> Self {
        Self { seed, offset: 0 }
    }

    /// The four 32-bit words of Philox 4x32-10 for one counter.
    fn philox(&self, index: u32) -> [u32; 4] {
        let mut c = [self.offset, 0, index, 0];
        let mut k = [self.seed as u32, (self.seed >> 32) as u32];
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(PHILOX_W[0]);
                k[1] = k[1].wrapping_add(PHILOX_W[1]);
            }
            let v1 = u64::from(c[0]) * u64::from(PHILOX_M[0]);
            let v2 = u64::from(c[2]) * u64::from(PHILOX_M[1]);
            c = [
                ((v2 >> 32) as u32) ^ c[1] ^ k[0],
                v2 as u32,
                ((v1 >> 32) as u32) ^ c[3] ^ k[1],
                v1 as u32,
            ];
        }
        c
    }

    /// `randn` of `n` elements (A1111 computes Box-Muller in float64 and rounds to float32).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        // Constants as A1111 stores them: float32 arrays promoted to float64 by numpy.
        let inv = f64::from(2.328_306_4e-10_f32);
        let inv_2pi = f64::from((2.328_306_4e-10_f64 * 6.283_185_5_f64) as f32);
        let half_inv = f64::from(2.328_306_4e-10_f32 / 2.0);
        let half_inv_2pi = f64::from((2.328_306_4e-10_f64 * 6.283_185_5_f64) as f32 / 2.0);
        let out = (0..n)
            .map(|i| {
                // Counters wrap at 2^32 elements like the uint32 arange of the reference.
                let g = self.philox(i as u32);
                let u = f64::from(g[0]) * inv + half_inv;
                let v = f64::from(g[1]) * inv_2pi + half_inv_2pi;
                let s = (-2.0 * u.ln()).sqrt();
                (s * v.sin()) as f32
            })
            .collect();
        self.offset = self.offset.wrapping_add(1);
        out
    }
}

/// A seeded generator of either source.
#[derive(Debug, Clone)]
pub enum Generator {
    /// `torch.Generator("cpu")`.
    Cpu(TorchCpuGenerator),
    /// A1111's Philox generator.
    Nv(PhiloxGenerator),
}

impl Generator {
    /// A generator for `seed` from `source`, with the default CPU kernel.
    pub fn new(seed: u64, source: RngSource) -> Self {
        Self::with_kernel(seed, source, CpuKernel::default())
    }

    /// A generator for `seed` from `source`; `kernel` only matters for [`RngSource::Cpu`].
    pub fn with_kernel(seed: u64, source: RngSource, kernel: CpuKernel) -> Self {
        match source {
            RngSource::Cpu => Self::Cpu(TorchCpuGenerator::with_kernel(seed, kernel)),
            RngSource::Nv => Self::Nv(PhiloxGenerator::new(seed)),
        }
    }

    /// The next `randn` draw of `n` elements.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        match self {
            Self::Cpu(g) => g.randn(n),
            Self::Nv(g) => g.randn(n),
        }
    }
}

fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Invalid {
            what: "noise shape",
            reason: format!("{shape:?} has too many elements"),
        })
}

/// The first `randn(shape)` of a fresh generator for `seed`: what `danlu noise` writes.
///
/// # Errors
/// [`Error::Invalid`] when the element count overflows.
pub fn noise(seed: u64, shape: &[usize], source: RngSource) -> Result<Vec<f32>> {
    noise_with_kernel(seed, shape, source, CpuKernel::default())
}

/// [`noise`] imitating a chosen PyTorch CPU kernel.
///
/// # Errors
/// [`Error::Invalid`] when the element count overflows.
pub fn noise_with_kernel(
    seed: u64,
    shape: &[usize],
    source: RngSource,
    kernel: CpuKernel,
) -> Result<Vec<f32>> {
    let n = element_count(shape)?;
    Ok(Generator::with_kernel(seed, source, kernel).randn(n))
}

/// A1111's `modules/rng.py` `slerp(val, low, high)` for one image's noise of shape `[C, H, W]`.
///
/// As in A1111 the norms are taken over dimension 1 (the rows), so every `(c, w)` column is
/// interpolated on its own; when the mean cosine exceeds 0.9995 it falls back to
/// `low * val + high * (1 - val)`. Arithmetic is float32 like the reference; sums are
/// accumulated in float64, so results agree to about 1e-6, not bit for bit.
///
/// # Errors
/// [`Error::Invalid`] when the shape is not three-dimensional or the slices do not match it.
pub fn slerp(val: f32, low: &[f32], high: &[f32], shape: [usize; 3]) -> Result<Vec<f32>> {
    let [c, h, w] = shape;
    let n = c * h * w;
    if low.len() != n || high.len() != n {
        return Err(Error::Invalid {
            what: "slerp input",
            reason: format!(
                "expected {n} values for shape {shape:?}, got {} and {}",
                low.len(),
                high.len()
            ),
        });
    }
    let at = |ci: usize, hi: usize, wi: usize| (ci * h + hi) * w + wi;
    let mut dots = vec![0f32; c * w];
    for ci in 0..c {
        for wi in 0..w {
            let (mut nl, mut nh) = (0f64, 0f64);
            for hi in 0..h {
                let i = at(ci, hi, wi);
                nl += f64::from(low[i]) * f64::from(low[i]);
                nh += f64::from(high[i]) * f64::from(high[i]);
            }
            let (nl, nh) = (nl.sqrt() as f32, nh.sqrt() as f32);
            let mut dot = 0f64;
            for hi in 0..h {
                let i = at(ci, hi, wi);
                dot += f64::from((low[i] / nl) * (high[i] / nh));
            }
            dots[ci * w + wi] = dot as f32;
        }
    }
    let mean = dots.iter().map(|&d| f64::from(d)).sum::<f64>() / dots.len().max(1) as f64;
    if mean > 0.9995 {
        return Ok(low
            .iter()
            .zip(high)
            .map(|(&l, &hv)| l * val + hv * (1.0 - val))
            .collect());
    }
    let mut out = vec![0f32; n];
    for ci in 0..c {
        for wi in 0..w {
            let omega = dots[ci * w + wi].acos();
            let so = omega.sin();
            let a = ((1.0 - val) * omega).sin() / so;
            let b = (val * omega).sin() / so;
            for hi in 0..h {
                let i = at(ci, hi, wi);
                out[i] = a * low[i] + b * high[i];
            }
        }
    }
    Ok(out)
}

/// Variation seed settings (A1111 "Variation seed" and "Variation strength").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variation {
    /// The variation seed of the first image; A1111 gives image `i` `subseed + i`.
    pub subseed: u64,
    /// How far towards the variation noise, 0 to 1 (`subseed_strength`).
    pub strength: f32,
}

/// A1111's `ImageRNG`: one generator per image, seeded with that image's seed.
///
/// [`ImageRng::first`] returns the initial latent noise `[B, C, H, W]`; each later
/// [`ImageRng::next_noise`] returns one more draw per image from the same generators, which is the
/// noise A1111 feeds to ancestral samplers (`sd_samplers_common.TorchHijack.randn_like`).
#[derive(Debug, Clone)]
pub struct ImageRng {
    shape: [usize; 3],
    seeds: Vec<u64>,
    source: RngSource,
    kernel: CpuKernel,
    variation: Option<Variation>,
    subseeds: Vec<u64>,
    eta_noise_seed_delta: u64,
    generators: Vec<Generator>,
    is_first: bool,
}

impl ImageRng {
    /// Generators for `seeds` (one per image) producing noise of `shape` = `[C, H, W]` each.
    pub fn new(shape: [usize; 3], seeds: &[u64], source: RngSource) -> Self {
        Self {
            shape,
            seeds: seeds.to_vec(),
            source,
            kernel: CpuKernel::default(),
            variation: None,
            subseeds: Vec::new(),
            eta_noise_seed_delta: 0,
            generators: seeds.iter().map(|&s| Generator::new(s, source)).collect(),
            is_first: true,
        }
    }

    /// Imitates another PyTorch CPU kernel (see [`CpuKernel`]).
    #[must_use]
    pub fn with_kernel(mut self, kernel: CpuKernel) -> Self {
        self.kernel = kernel;
        self.generators = self
            .seeds
            .iter()
            .map(|&s| Generator::with_kernel(s, self.source, kernel))
            .collect();
        self
    }

    /// Mixes the first draw with variation noise: image `i` uses `subseeds[i]` (0 when the list
    /// is shorter, as in A1111) at `strength`.
    #[must_use]
    pub fn with_variation(mut self, subseeds: &[u64], strength: f32) -> Self {
        self.subseeds = subseeds.to_vec();
        self.variation = subseeds.first().map(|&s| Variation {
            subseed: s,
            strength,
        });
        self
    }

    /// A1111's "Eta noise seed delta" (ENSD): after the first draw the generators restart at
    /// `seed + delta`.
    #[must_use]
    pub fn with_eta_noise_seed_delta(mut self, delta: u64) -> Self {
        self.eta_noise_seed_delta = delta;
        self
    }

    /// The per-image shape `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    fn per_image(&self) -> usize {
        self.shape.iter().product()
    }

    /// The initial noise as one flat `Vec` of `B * C * H * W` values (see [`ImageRng::first`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the variation slerp gets inconsistent sizes (not expected).
    pub fn first_vec(&mut self) -> Result<Vec<f32>> {
        self.is_first = false;
        let n = self.per_image();
        let mut out = Vec::with_capacity(n * self.seeds.len());
        for i in 0..self.seeds.len() {
            let noise = self.generators[i].randn(n);
            let noise = match self.variation {
                Some(v) if v.strength != 0.0 => {
                    let subseed = self.subseeds.get(i).copied().unwrap_or(0);
                    let sub = Generator::with_kernel(subseed, self.source, self.kernel).randn(n);
                    slerp(v.strength, &noise, &sub, self.shape)?
                }
                _ => noise,
            };
            out.extend_from_slice(&noise);
        }
        if self.eta_noise_seed_delta != 0 {
            let delta = self.eta_noise_seed_delta;
            self.generators = self
                .seeds
                .iter()
                .map(|&s| Generator::with_kernel(s.wrapping_add(delta), self.source, self.kernel))
                .collect();
        }
        Ok(out)
    }

    /// The next draw as one flat `Vec`: the first call is [`ImageRng::first_vec`], later calls
    /// take one more `randn` per image.
    ///
    /// # Errors
    /// As [`ImageRng::first_vec`].
    pub fn next_noise_vec(&mut self) -> Result<Vec<f32>> {
        if self.is_first {
            return self.first_vec();
        }
        let n = self.per_image();
        let mut out = Vec::with_capacity(n * self.generators.len());
        for g in &mut self.generators {
            out.extend(g.randn(n));
        }
        Ok(out)
    }

    fn to_tensor(&self, data: Vec<f32>) -> Result<Tensor> {
        let [c, h, w] = self.shape;
        Ok(Tensor::from_vec(
            data,
            (self.seeds.len(), c, h, w),
            &Device::Cpu,
        )?)
    }

    /// The initial latent noise `[B, C, H, W]` (f32, CPU).
    ///
    /// # Errors
    /// As [`ImageRng::first_vec`], or a candle error.
    pub fn first(&mut self) -> Result<Tensor> {
        let v = self.first_vec()?;
        self.to_tensor(v)
    }

    /// The next noise `[B, C, H, W]` (f32, CPU); the first call equals [`ImageRng::first`].
    ///
    /// # Errors
    /// As [`ImageRng::first_vec`], or a candle error.
    pub fn next_noise(&mut self) -> Result<Tensor> {
        let v = self.next_noise_vec()?;
        self.to_tensor(v)
    }
}

/// Encodes float32 values as a NumPy `.npy` file (format version 1.0, little-endian `<f4`,
/// C order), readable by `numpy.load`.
pub fn to_npy(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header + newline is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes a `.npy` file of little-endian float32 in C order (what [`to_npy`] and
/// `numpy.save` of a float32 array write): the shape and the values.
///
/// # Errors
/// [`Error::Invalid`] when the bytes are not such a file.
pub fn parse_npy(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = |reason: &str| Error::Invalid {
        what: "npy data",
        reason: reason.to_owned(),
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unsupported version")),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad("only little-endian float32 in C order is read"));
    }
    let open = header.find("'shape': (").ok_or_else(|| bad("no shape"))? + 10;
    let close = header[open..].find(')').ok_or_else(|| bad("no shape"))? + open;
    let shape = header[open..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<Vec<_>>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + header_len..];
    if body.len() != n * 4 {
        return Err(bad("data length does not match the shape"));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_cpp11_reference_value() {
        // C++11 [rand.predef]: the 10000th output of a default-seeded (5489) mt19937 is 4123659995.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn philox_matches_the_values_published_in_a1111_rng_philox() {
        // modules/rng_philox.py docstring: Generator(seed=0).randn(shape=(3, 4)), printed from
        // CUDA torch; A1111's float64 Box-Muller itself differs from them by up to 2e-7 (a few
        // float32 ulps), which the bit-exact reference test covers.
        let expected = [
            -0.924_662_59,
            -0.425_344_15,
            -2.643_845_7,
            0.145_183_88,
            -0.120_866_47,
            -0.579_725_64,
            -0.622_851_22,
            -0.328_387_09,
            -1.074_542_31,
            -0.363_144_07,
            -1.671_050_67,
            2.265_504_97,
        ];
        let got = PhiloxGenerator::new(0).randn(12);
        for (g, e) in got.iter().zip(expected) {
            assert!((f64::from(*g) - e).abs() < 5e-7, "{g} vs {e}");
        }
    }

    #[test]
    fn npy_round_trips() {
        let data = [1.0f32, -2.5, 3.25, 0.0, 7.0, 8.0];
        let bytes = to_npy(&[2, 3], &data);
        assert_eq!(
            (10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]))) % 64,
            0
        );
        let (shape, back) = parse_npy(&bytes).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(back, data);
        let (shape, _) = parse_npy(&to_npy(&[6], &data)).unwrap();
        assert_eq!(shape, vec![6]);
    }

    #[test]
    fn image_rng_continues_each_images_generator() {
        let mut rng = ImageRng::new([1, 2, 3], &[5, 6], RngSource::Cpu);
        let first = rng.next_noise_vec().unwrap();
        let second = rng.next_noise_vec().unwrap();
        let mut g5 = TorchCpuGenerator::new(5);
        let mut g6 = TorchCpuGenerator::new(6);
        assert_eq!(first[..6], g5.randn(6)[..]);
        assert_eq!(first[6..], g6.randn(6)[..]);
        assert_eq!(second[..6], g5.randn(6)[..]);
        assert_eq!(second[6..], g6.randn(6)[..]);
    }
}
