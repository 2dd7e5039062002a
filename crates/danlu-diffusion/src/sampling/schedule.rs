//! Noise schedules: the model's discrete sigmas and the sigma sequences of A1111's schedulers.
//!
//! Arithmetic follows the float32 tensors of the reference (k-diffusion `external.py`
//! `DiscreteSchedule`, `sampling.py` `get_sigmas_*`); `linspace` is evaluated with PyTorch's
//! scalar formula, so values agree with the reference to about one float32 ulp.

use crate::{Error, Result};

/// Stable Diffusion 1.x/2.x training schedule: `linear_start` 0.00085, `linear_end` 0.012,
/// 1000 steps, "scaled linear" betas (LDM `make_beta_schedule`), computed in float64 and stored
/// as float32 like the checkpoint's `alphas_cumprod` buffer that A1111 samples with.
pub fn scaled_linear_alphas_cumprod(linear_start: f64, linear_end: f64, steps: usize) -> Vec<f32> {
    let (a, b) = (linear_start.sqrt(), linear_end.sqrt());
    let mut acc = 1f64;
    (0..steps)
        .map(|i| {
            let frac = if steps > 1 {
                i as f64 / (steps - 1) as f64
            } else {
                0.0
            };
            let root = a + (b - a) * frac;
            acc *= 1.0 - root * root;
            acc as f32
        })
        .collect()
}

/// The SD 1.x/2.x schedule with its standard constants.
pub fn sd_alphas_cumprod() -> Vec<f32> {
    scaled_linear_alphas_cumprod(0.000_85, 0.012, 1000)
}

/// `torch.linspace(start, end, n)` in float32 (PyTorch `RangeFactoriesKernel.cpp`: the first
/// half counts up from `start`, the second half down from `end`).
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f32;
            let half = n / 2;
            (0..n)
                .map(|i| {
                    if i < half {
                        start + step * i as f32
                    } else {
                        end - step * (n - i - 1) as f32
                    }
                })
                .collect()
        }
    }
}

/// A model's discrete noise levels: k-diffusion `DiscreteSchedule` built the way
/// `DiscreteEpsDDPMDenoiser` does, `sigmas = ((1 - ᾱ) / ᾱ) ** 0.5` in float32, ascending.
#[derive(Debug, Clone)]
pub struct DiscreteSchedule {
    alphas_cumprod: Vec<f32>,
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
}

impl DiscreteSchedule {
    /// The schedule of a model with these `alphas_cumprod` (float32, as A1111 keeps them).
    ///
    /// # Errors
    /// [`Error::Invalid`] for fewer than two values or values outside (0, 1].
    pub fn new(alphas_cumprod: Vec<f32>) -> Result<Self> {
        if alphas_cumprod.len() < 2 || alphas_cumprod.iter().any(|&a| !(a > 0.0 && a <= 1.0)) {
            return Err(Error::Invalid {
                what: "alphas_cumprod",
                reason: "need at least two values in (0, 1]".to_owned(),
            });
        }
        let sigmas: Vec<f32> = alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Ok(Self {
            alphas_cumprod,
            sigmas,
            log_sigmas,
        })
    }

    /// The SD 1.x/2.x schedule ([`sd_alphas_cumprod`]).
    pub fn sd() -> Self {
        let ac = sd_alphas_cumprod();
        let sigmas: Vec<f32> = ac.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Self {
            alphas_cumprod: ac,
            sigmas,
            log_sigmas,
        }
    }

    /// The model's `alphas_cumprod`.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// The discrete sigmas, ascending (timestep 0 first).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The smallest sigma (`sigmas[0]`), A1111's `sigma_min` for Karras and friends.
    pub fn sigma_min(&self) -> f32 {
        self.sigmas[0]
    }

    /// The largest sigma (`sigmas[-1]`).
    pub fn sigma_max(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// k-diffusion `sigma_to_t` (not quantized): the fractional timestep fed to the UNet,
    /// interpolated linearly in log sigma between the two neighbouring discrete levels.
    pub fn sigma_to_t(&self, sigma: f32) -> f32 {
        let log_sigma = sigma.ln();
        let n = self.log_sigmas.len();
        // Index of the last level at or below `log_sigma` (argmax of the cumulative count).
        let count = self
            .log_sigmas
            .iter()
            .filter(|&&l| log_sigma - l >= 0.0)
            .count();
        let low_idx = count.saturating_sub(1).min(n - 2);
        let high_idx = low_idx + 1;
        let (low, high) = (self.log_sigmas[low_idx], self.log_sigmas[high_idx]);
        let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
        (1.0 - w) * low_idx as f32 + w * high_idx as f32
    }

    /// k-diffusion `t_to_sigma`: log-linear interpolation of the discrete sigmas.
    pub fn t_to_sigma(&self, t: f32) -> f32 {
        let max = (self.log_sigmas.len() - 1) as f32;
        let t = t.clamp(0.0, max);
        let (low, high) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        ((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()
    }

    /// k-diffusion `get_sigmas(n)`: `n` timesteps evenly spaced from the last to 0, then a
    /// final zero (A1111 "Uniform", and "Automatic" for most samplers).
    pub fn get_sigmas(&self, n: usize) -> Vec<f32> {
        let t_max = (self.sigmas.len() - 1) as f32;
        let mut out: Vec<f32> = linspace_f32(t_max, 0.0, n)
            .into_iter()
            .map(|t| self.t_to_sigma(t))
            .collect();
        out.push(0.0);
        out
    }
}

/// k-diffusion `get_sigmas_karras`: Karras et al. (2022) with exponent `rho` (A1111 uses 7).
pub fn karras(n: usize, sigma_min: f32, sigma_max: f32, rho: f32) -> Vec<f32> {
    let min_inv_rho = f64::from(sigma_min).powf(1.0 / f64::from(rho)) as f32;
    let max_inv_rho = f64::from(sigma_max).powf(1.0 / f64::from(rho)) as f32;
    let span = min_inv_rho - max_inv_rho;
    let mut out: Vec<f32> = linspace_f32(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv_rho + r * span).powf(rho))
        .collect();
    out.push(0.0);
    out
}

/// k-diffusion `get_sigmas_exponential`: evenly spaced in log sigma.
pub fn exponential(n: usize, sigma_min: f32, sigma_max: f32) -> Vec<f32> {
    let (hi, lo) = (
        f64::from(sigma_max).ln() as f32,
        f64::from(sigma_min).ln() as f32,
    );
    let mut out: Vec<f32> = linspace_f32(hi, lo, n).into_iter().map(f32::exp).collect();
    out.push(0.0);
    out
}

/// k-diffusion `get_sigmas_polyexponential`: a polynomial of degree `rho` in log sigma
/// (A1111 default rho 1, which equals [`exponential`]).
pub fn polyexponential(n: usize, sigma_min: f32, sigma_max: f32, rho: f32) -> Vec<f32> {
    let (lmax, lmin) = (f64::from(sigma_max).ln(), f64::from(sigma_min).ln());
    let span = (lmax - lmin) as f32;
    let lmin = lmin as f32;
    let mut out: Vec<f32> = linspace_f32(1.0, 0.0, n)
        .into_iter()
        .map(|r| (r.powf(rho) * span + lmin).exp())
        .collect();
    out.push(0.0);
    out
}

/// A1111 `sd_schedulers.sgm_uniform`: `n` timesteps from `sigma_to_t(sigma_max)` towards
/// `sigma_to_t(sigma_min)`, the endpoint left out, then zero.
pub fn sgm_uniform(schedule: &DiscreteSchedule, n: usize) -> Vec<f32> {
    let start = schedule.sigma_to_t(schedule.sigma_max());
    let end = schedule.sigma_to_t(schedule.sigma_min());
    let mut ts = linspace_f32(start, end, n + 1);
    ts.pop();
    let mut out: Vec<f32> = ts.into_iter().map(|t| schedule.t_to_sigma(t)).collect();
    out.push(0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_schedule_has_the_well_known_sigma_range() {
        // The SD 1.x sigma range quoted throughout A1111 and ComfyUI: 0.0292 to 14.6146.
        let s = DiscreteSchedule::sd();
        assert!(
            (s.sigma_min() - 0.029_167).abs() < 1e-5,
            "{}",
            s.sigma_min()
        );
        assert!(
            (s.sigma_max() - 14.614_642).abs() < 1e-4,
            "{}",
            s.sigma_max()
        );
    }

    #[test]
    fn sigma_to_t_inverts_t_to_sigma() {
        let s = DiscreteSchedule::sd();
        for t in [0.0f32, 0.5, 10.25, 500.0, 998.75, 999.0] {
            let back = s.sigma_to_t(s.t_to_sigma(t));
            assert!((back - t).abs() < 2e-3, "{t} -> {back}");
        }
    }

    #[test]
    fn linspace_hits_both_ends_exactly() {
        let v = linspace_f32(999.0, 0.0, 7);
        assert_eq!(v[0], 999.0);
        assert_eq!(v[6], 0.0);
        assert_eq!(v.len(), 7);
    }
}
