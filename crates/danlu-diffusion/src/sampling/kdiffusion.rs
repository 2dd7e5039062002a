//! Samplers ported from k-diffusion `k_diffusion/sampling.py` (v0.1.1), with A1111's settings:
//! `s_churn` 0, `s_noise` 1, ancestral `eta` 1 by default.
//!
//! Tensors stay float32 like the reference; scalar coefficients are computed in float64 from
//! the float32 sigmas, which moves results by about one float32 ulp per step.

use std::ops::ControlFlow;

use candle_core::Tensor;

use super::denoiser::Denoiser;
use super::{NoiseSource, StepInfo};
use crate::{Error, Result};

/// The per-step callback: step index, total, sigma, current `x` (before the step, as
/// k-diffusion reports it) and the denoised prediction. Returning `Break` cancels.
pub type Callback<'a> = &'a mut dyn FnMut(&StepInfo<'_>) -> ControlFlow<()>;

fn report(cb: &mut Option<Callback<'_>>, info: StepInfo<'_>) -> Result<()> {
    if let Some(cb) = cb.as_mut()
        && cb(&info).is_break()
    {
        return Err(Error::Cancelled { step: info.step });
    }
    Ok(())
}

/// `to_d`: the Karras ODE derivative `(x - denoised) / sigma`.
fn to_d(x: &Tensor, sigma: f32, denoised: &Tensor) -> Result<Tensor> {
    Ok(((x - denoised)? / f64::from(sigma))?)
}

/// `x + d * dt`.
fn step(x: &Tensor, d: &Tensor, dt: f64) -> Result<Tensor> {
    Ok((x + (d * dt)?)?)
}

/// `a * ca + b * cb`.
fn lin(a: &Tensor, ca: f64, b: &Tensor, cb: f64) -> Result<Tensor> {
    Ok(((a * ca)? + (b * cb)?)?)
}

/// k-diffusion `get_ancestral_step`: `(sigma_down, sigma_up)`.
pub fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let up = (eta
        * (sigma_to * sigma_to * (sigma_from * sigma_from - sigma_to * sigma_to)
            / (sigma_from * sigma_from))
            .sqrt())
    .min(sigma_to);
    let down = (sigma_to * sigma_to - up * up).sqrt();
    (down, up)
}

/// Common inputs of every sampler.
pub struct Run<'a> {
    /// The model.
    pub denoiser: &'a mut dyn Denoiser,
    /// The sigmas, ending with 0.
    pub sigmas: &'a [f32],
    /// Where ancestral and SDE noise comes from.
    pub noise: &'a mut dyn NoiseSource,
    /// Ancestral/SDE `eta` (A1111 "Eta" for ancestral samplers, default 1).
    pub eta: f64,
    /// Per-step callback.
    pub callback: Option<Callback<'a>>,
}

impl Run<'_> {
    fn total(&self) -> usize {
        self.sigmas.len().saturating_sub(1)
    }

    fn report(&mut self, i: usize, x: &Tensor, denoised: &Tensor) -> Result<()> {
        let total = self.total();
        let sigma = self.sigmas[i];
        report(
            &mut self.callback,
            StepInfo {
                step: i,
                total,
                sigma,
                x,
                denoised,
            },
        )
    }
}

/// `sample_euler`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn euler(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        run.report(i, &x, &denoised)?;
        x = step(&x, &d, f64::from(s_next) - f64::from(s))?;
    }
    Ok(x)
}

/// `sample_euler_ancestral`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn euler_ancestral(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        let (down, up) = ancestral_step(f64::from(s), f64::from(s_next), run.eta);
        run.report(i, &x, &denoised)?;
        let d = to_d(&x, s, &denoised)?;
        x = step(&x, &d, down - f64::from(s))?;
        if s_next > 0.0 {
            let n = run.noise.noise(s, s_next)?;
            x = (x + (n * up)?)?;
        }
    }
    Ok(x)
}

/// `sample_heun`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn heun(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        run.report(i, &x, &denoised)?;
        let dt = f64::from(s_next) - f64::from(s);
        if s_next == 0.0 {
            x = step(&x, &d, dt)?;
        } else {
            let x2 = step(&x, &d, dt)?;
            let denoised2 = run.denoiser.denoise(&x2, s_next)?;
            let d2 = to_d(&x2, s_next, &denoised2)?;
            let d_prime = ((d + d2)? / 2.0)?;
            x = step(&x, &d_prime, dt)?;
        }
    }
    Ok(x)
}

/// `sample_dpm_2`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpm_2(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        run.report(i, &x, &denoised)?;
        if s_next == 0.0 {
            x = step(&x, &d, f64::from(s_next) - f64::from(s))?;
        } else {
            let mid = ((f64::from(s).ln() + f64::from(s_next).ln()) / 2.0).exp() as f32;
            let x2 = step(&x, &d, f64::from(mid) - f64::from(s))?;
            let denoised2 = run.denoiser.denoise(&x2, mid)?;
            let d2 = to_d(&x2, mid, &denoised2)?;
            x = step(&x, &d2, f64::from(s_next) - f64::from(s))?;
        }
    }
    Ok(x)
}

/// `sample_dpm_2_ancestral`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpm_2_ancestral(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        let (down, up) = ancestral_step(f64::from(s), f64::from(s_next), run.eta);
        run.report(i, &x, &denoised)?;
        let d = to_d(&x, s, &denoised)?;
        if down == 0.0 {
            x = step(&x, &d, down - f64::from(s))?;
        } else {
            let mid = ((f64::from(s).ln() + down.ln()) / 2.0).exp() as f32;
            let x2 = step(&x, &d, f64::from(mid) - f64::from(s))?;
            let denoised2 = run.denoiser.denoise(&x2, mid)?;
            let d2 = to_d(&x2, mid, &denoised2)?;
            x = step(&x, &d2, down - f64::from(s))?;
            let n = run.noise.noise(s, s_next)?;
            x = (x + (n * up)?)?;
        }
    }
    Ok(x)
}

/// The 4th-order (at most) linear multistep coefficient of k-diffusion
/// `linear_multistep_coeff(order, t, i, j)`: the integral over `[t[i], t[i+1]]` of the Lagrange
/// basis polynomial of node `t[i-j]` on nodes `t[i], ..., t[i-order+1]`.
///
/// The reference integrates with `scipy.integrate.quad`; the integrand is a polynomial of
/// degree at most 3, which 4-point Gauss-Legendre quadrature integrates exactly. The sigmas
/// arrive as a float32 NumPy array (`sigmas.cpu().numpy()`), so the node differences in the
/// denominators are float32 subtractions, which is reproduced here.
///
/// # Errors
/// [`Error::Invalid`] when `order - 1 > i` (k-diffusion raises the same).
pub fn linear_multistep_coeff(order: usize, t: &[f32], i: usize, j: usize) -> Result<f64> {
    if order == 0 || order - 1 > i || i + 1 >= t.len() || j >= order {
        return Err(Error::Invalid {
            what: "linear multistep order",
            reason: format!("order {order} too high for step {i}"),
        });
    }
    let basis = |tau: f64| {
        let mut prod = 1.0;
        for k in 0..order {
            if k != j {
                prod *= (tau - f64::from(t[i - k])) / f64::from(t[i - j] - t[i - k]);
            }
        }
        prod
    };
    const NODES: [f64; 4] = [
        -0.861_136_311_594_052_6,
        -0.339_981_043_584_856_3,
        0.339_981_043_584_856_3,
        0.861_136_311_594_052_6,
    ];
    const WEIGHTS: [f64; 4] = [
        0.347_854_845_137_453_9,
        0.652_145_154_862_546_1,
        0.652_145_154_862_546_1,
        0.347_854_845_137_453_9,
    ];
    let (a, b) = (f64::from(t[i]), f64::from(t[i + 1]));
    let (half, mid) = ((b - a) / 2.0, (a + b) / 2.0);
    Ok(NODES
        .iter()
        .zip(WEIGHTS)
        .map(|(n, w)| w * basis(mid + half * n))
        .sum::<f64>()
        * half)
}

/// `sample_lms` with order 4.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn lms(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    const ORDER: usize = 4;
    let t = run.sigmas;
    let mut ds: Vec<Tensor> = Vec::with_capacity(ORDER + 1);
    for i in 0..run.total() {
        let s = run.sigmas[i];
        let denoised = run.denoiser.denoise(&x, s)?;
        let d = to_d(&x, s, &denoised)?;
        ds.push(d);
        if ds.len() > ORDER {
            ds.remove(0);
        }
        run.report(i, &x, &denoised)?;
        let cur_order = (i + 1).min(ORDER);
        let mut update: Option<Tensor> = None;
        for (j, d) in ds.iter().rev().enumerate().take(cur_order) {
            let c = linear_multistep_coeff(cur_order, t, i, j)?;
            let term = (d * c)?;
            update = Some(match update {
                None => term,
                Some(u) => (u + term)?,
            });
        }
        if let Some(u) = update {
            x = (x + u)?;
        }
    }
    Ok(x)
}

/// `sample_dpmpp_2s_ancestral`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpmpp_2s_ancestral(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        let (down, up) = ancestral_step(f64::from(s), f64::from(s_next), run.eta);
        run.report(i, &x, &denoised)?;
        if down == 0.0 {
            let d = to_d(&x, s, &denoised)?;
            x = step(&x, &d, down - f64::from(s))?;
        } else {
            let t = -f64::from(s).ln();
            let t_next = -down.ln();
            let h = t_next - t;
            let s_mid = t + 0.5 * h;
            let x2 = lin(
                &x,
                (-s_mid).exp() / (-t).exp(),
                &denoised,
                -(-h * 0.5).exp_m1(),
            )?;
            let denoised2 = run.denoiser.denoise(&x2, (-s_mid).exp() as f32)?;
            x = lin(&x, (-t_next).exp() / (-t).exp(), &denoised2, -(-h).exp_m1())?;
        }
        if s_next > 0.0 {
            let n = run.noise.noise(s, s_next)?;
            x = (x + (n * up)?)?;
        }
    }
    Ok(x)
}

/// `sample_dpmpp_2m`.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpmpp_2m(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    let mut old_denoised: Option<Tensor> = None;
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        run.report(i, &x, &denoised)?;
        if s_next == 0.0 {
            // sigma_fn(t_next) = 0 and -(-h).expm1() = 1: the step lands on the prediction.
            x = denoised.clone();
        } else {
            let t = -f64::from(s).ln();
            let t_next = -f64::from(s_next).ln();
            let h = t_next - t;
            let ratio = f64::from(s_next) / f64::from(s);
            let target = match &old_denoised {
                None => denoised.clone(),
                Some(old) => {
                    let h_last = t + f64::from(run.sigmas[i - 1]).ln();
                    let r = h_last / h;
                    lin(&denoised, 1.0 + 1.0 / (2.0 * r), old, -(1.0 / (2.0 * r)))?
                }
            };
            x = lin(&x, ratio, &target, -(-h).exp_m1())?;
        }
        old_denoised = Some(denoised);
    }
    Ok(x)
}

/// The times `sample_dpmpp_sde` asks its noise sampler for, computed in float32 as torch does
/// on the float32 sigmas: `sigma_fn(t)`, `sigma_fn(t + h / 2)` and `sigma_fn(t_next)` with
/// `t_fn(s) = -ln s`, `sigma_fn(t) = exp(-t)`. A Brownian tree rounds its times to 6 decimals,
/// so the same float32 steps keep the queries, and the noise, identical.
pub fn sde_query_sigmas(sigma: f32, sigma_next: f32) -> (f32, f32, f32) {
    let t = -sigma.ln();
    let t_next = -sigma_next.ln();
    let h = t_next - t;
    let s = t + h * 0.5;
    ((-t).exp(), (-s).exp(), (-t_next).exp())
}

/// `sample_dpmpp_sde` with `r = 1/2`. k-diffusion and A1111 draw its noise from a
/// `BrownianTreeNoiseSampler` ([`super::BrownianNoise`]); here it comes from `run.noise`,
/// called in the same order with the same times (twice per step, also when `eta` is 0).
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpmpp_sde(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    let sigma_fn = |t: f64| (-t).exp();
    let t_fn = |sigma: f64| -sigma.ln();
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        run.report(i, &x, &denoised)?;
        if s_next == 0.0 {
            let d = to_d(&x, s, &denoised)?;
            x = step(&x, &d, f64::from(s_next) - f64::from(s))?;
            continue;
        }
        let t = t_fn(f64::from(s));
        let t_next = t_fn(f64::from(s_next));
        let h = t_next - t;
        let s_mid = t + h * 0.5;
        let fac = 1.0;
        // Step 1.
        let (sd, su) = ancestral_step(sigma_fn(t), sigma_fn(s_mid), run.eta);
        let s_ = t_fn(sd);
        let mut x2 = lin(
            &x,
            sigma_fn(s_) / sigma_fn(t),
            &denoised,
            -(t - s_).exp_m1(),
        )?;
        let (q_t, q_mid, q_next) = sde_query_sigmas(s, s_next);
        let n = run.noise.noise(q_t, q_mid)?;
        x2 = (x2 + (n * su)?)?;
        let denoised2 = run.denoiser.denoise(&x2, sigma_fn(s_mid) as f32)?;
        // Step 2.
        let (sd, su) = ancestral_step(sigma_fn(t), sigma_fn(t_next), run.eta);
        let t_next_ = t_fn(sd);
        let denoised_d = lin(&denoised, 1.0 - fac, &denoised2, fac)?;
        x = lin(
            &x,
            sigma_fn(t_next_) / sigma_fn(t),
            &denoised_d,
            -(t - t_next_).exp_m1(),
        )?;
        let n = run.noise.noise(q_t, q_next)?;
        x = (x + (n * su)?)?;
    }
    Ok(x)
}

/// The second-order correction of `sample_dpmpp_2m_sde`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdeSolver {
    /// `solver_type='midpoint'` (A1111 "DPM++ 2M SDE").
    Midpoint,
    /// `solver_type='heun'` (A1111 "DPM++ 2M SDE Heun").
    Heun,
}

/// `sample_dpmpp_2m_sde`. The noise comes from `run.noise` (a Brownian tree in the reference,
/// see [`dpmpp_sde`]).
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpmpp_2m_sde(mut run: Run<'_>, mut x: Tensor, solver: SdeSolver) -> Result<Tensor> {
    let mut old_denoised: Option<Tensor> = None;
    let mut h_last = 0f64;
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        run.report(i, &x, &denoised)?;
        let mut h = h_last;
        if s_next == 0.0 {
            x = denoised.clone();
        } else {
            let t = -f64::from(s).ln();
            let t_s = -f64::from(s_next).ln();
            h = t_s - t;
            let eta_h = run.eta * h;
            let e = -(-h - eta_h).exp_m1();
            x = lin(
                &x,
                f64::from(s_next) / f64::from(s) * (-eta_h).exp(),
                &denoised,
                e,
            )?;
            if let Some(old) = &old_denoised {
                let r = h_last / h;
                let coeff = match solver {
                    SdeSolver::Heun => (e / (-h - eta_h) + 1.0) * (1.0 / r),
                    SdeSolver::Midpoint => 0.5 * e * (1.0 / r),
                };
                x = (x + ((&denoised - old)? * coeff)?)?;
            }
            if run.eta != 0.0 {
                let n = run.noise.noise(s, s_next)?;
                let scale = f64::from(s_next) * (-(-2.0 * eta_h).exp_m1()).sqrt();
                x = (x + (n * scale)?)?;
            }
        }
        old_denoised = Some(denoised);
        h_last = h;
    }
    Ok(x)
}

/// `sample_dpmpp_3m_sde`. The noise comes from `run.noise` (a Brownian tree in A1111, see
/// [`dpmpp_sde`]), asked for `(sigmas[i], sigmas[i + 1])` when `eta` is not 0.
///
/// # Errors
/// The model's errors, or [`Error::Cancelled`].
pub fn dpmpp_3m_sde(mut run: Run<'_>, mut x: Tensor) -> Result<Tensor> {
    let mut denoised_1: Option<Tensor> = None;
    let mut denoised_2: Option<Tensor> = None;
    let (mut h_1, mut h_2): (Option<f64>, Option<f64>) = (None, None);
    let mut h = 0f64;
    for i in 0..run.total() {
        let (s, s_next) = (run.sigmas[i], run.sigmas[i + 1]);
        let denoised = run.denoiser.denoise(&x, s)?;
        run.report(i, &x, &denoised)?;
        if s_next == 0.0 {
            x = denoised.clone();
        } else {
            let t = -f64::from(s).ln();
            let t_s = -f64::from(s_next).ln();
            h = t_s - t;
            let h_eta = h * (run.eta + 1.0);
            x = lin(&x, (-h_eta).exp(), &denoised, -(-h_eta).exp_m1())?;
            let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
            match (&denoised_1, &denoised_2, h_1, h_2) {
                (Some(d_1), Some(d_2), Some(h1), Some(h2)) => {
                    let r0 = h1 / h;
                    let r1 = h2 / h;
                    let d1_0 = ((&denoised - d_1)? / r0)?;
                    let d1_1 = ((d_1 - d_2)? / r1)?;
                    let diff = (&d1_0 - &d1_1)?;
                    let d1 = (&d1_0 + (&diff * (r0 / (r0 + r1)))?)?;
                    let d2 = (&diff / (r0 + r1))?;
                    let phi_3 = phi_2 / h_eta - 0.5;
                    x = ((x + (d1 * phi_2)?)? - (d2 * phi_3)?)?;
                }
                (Some(d_1), _, Some(h1), _) => {
                    let r = h1 / h;
                    let d = ((&denoised - d_1)? / r)?;
                    x = (x + (d * phi_2)?)?;
                }
                _ => {}
            }
            if run.eta != 0.0 {
                let n = run.noise.noise(s, s_next)?;
                let scale = f64::from(s_next) * (-(-2.0 * h * run.eta).exp_m1()).sqrt();
                x = (x + (n * scale)?)?;
            }
        }
        denoised_2 = denoised_1.take();
        denoised_1 = Some(denoised);
        h_2 = h_1;
        h_1 = Some(h);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lms_coefficients_sum_to_the_step_length() {
        // The Lagrange basis sums to one, so the coefficients integrate 1 over the interval.
        let t: [f32; 6] = [14.6, 9.0, 5.5, 3.1, 1.7, 0.0];
        for i in 0..5 {
            let order = (i + 1).min(4);
            let sum: f64 = (0..order)
                .map(|j| linear_multistep_coeff(order, &t, i, j).unwrap())
                .sum();
            let len = f64::from(t[i + 1]) - f64::from(t[i]);
            assert!((sum - len).abs() < 1e-5, "step {i}: {sum}");
        }
    }

    #[test]
    fn lms_first_order_coefficient_is_the_euler_step() {
        let t: [f32; 3] = [10.0, 4.0, 0.0];
        assert!((linear_multistep_coeff(1, &t, 0, 0).unwrap() + 6.0).abs() < 1e-12);
        assert!(linear_multistep_coeff(2, &t, 0, 0).is_err());
    }

    #[test]
    fn ancestral_step_splits_the_variance() {
        let (down, up) = ancestral_step(10.0, 5.0, 1.0);
        assert!((down * down + up * up - 25.0).abs() < 1e-9);
        assert_eq!(ancestral_step(10.0, 5.0, 0.0), (5.0, 0.0));
    }
}
