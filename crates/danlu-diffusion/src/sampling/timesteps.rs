//! A1111's timestep samplers (`modules/sd_samplers_timesteps.py`,
//! `modules/sd_samplers_timesteps_impl.py`): DDIM, PLMS and UniPC on discrete UNet timesteps.

use candle_core::Tensor;

use super::denoiser::EpsDenoiser;
use super::kdiffusion::Callback;
use super::{NoiseSource, StepInfo};
use crate::{Error, Result};

/// A1111 `CompVisSampler.get_timesteps`: `range(0, 1000, 1000 // steps) + 1`, clipped to 999.
///
/// # Errors
/// [`Error::Invalid`] for 0 steps or more than 1000.
pub fn ddim_timesteps(steps: usize) -> Result<Vec<usize>> {
    if steps == 0 || steps > 1000 {
        return Err(Error::Invalid {
            what: "steps",
            reason: format!("{steps} is not between 1 and 1000 for a timestep sampler"),
        });
    }
    Ok((0..1000)
        .step_by(1000 / steps)
        .map(|t| (t + 1).min(999))
        .collect())
}

/// Common inputs of the timestep samplers.
pub struct TimestepRun<'a> {
    /// The model (predicted noise, with CFG).
    pub model: &'a mut dyn EpsDenoiser,
    /// The timesteps, ascending ([`ddim_timesteps`]).
    pub timesteps: &'a [usize],
    /// Noise for `eta > 0`.
    pub noise: &'a mut dyn NoiseSource,
    /// DDIM eta (A1111 "Eta DDIM", default 0).
    pub eta: f64,
    /// Per-step callback.
    pub callback: Option<Callback<'a>>,
}

fn check(run: &TimestepRun<'_>) -> Result<()> {
    let n = run.model.alphas_cumprod().len();
    if run.timesteps.is_empty() || run.timesteps.iter().any(|&t| t >= n) {
        return Err(Error::Invalid {
            what: "timesteps",
            reason: format!("need at least one timestep below {n}"),
        });
    }
    Ok(())
}

/// The float32 `alphas_cumprod[timesteps]` and the float64 `alphas_prev` (A1111 pads the
/// timesteps with a leading 0).
fn alphas(run: &TimestepRun<'_>) -> (Vec<f32>, Vec<f64>) {
    let ac = run.model.alphas_cumprod();
    let a: Vec<f32> = run.timesteps.iter().map(|&t| ac[t]).collect();
    let prev: Vec<f64> = std::iter::once(0)
        .chain(run.timesteps[..run.timesteps.len() - 1].iter().copied())
        .map(|t| f64::from(ac[t]))
        .collect();
    (a, prev)
}

fn report(run: &mut TimestepRun<'_>, i: usize, x: &Tensor, denoised: &Tensor) -> Result<()> {
    let total = run.timesteps.len() - 1;
    report_of(run, i, total, x, denoised)
}

fn report_of(
    run: &mut TimestepRun<'_>,
    i: usize,
    total: usize,
    x: &Tensor,
    denoised: &Tensor,
) -> Result<()> {
    if let Some(cb) = run.callback.as_mut() {
        let info = StepInfo {
            step: i,
            total,
            sigma: 0.0,
            x,
            denoised,
        };
        if cb(&info).is_break() {
            return Err(Error::Cancelled { step: i });
        }
    }
    Ok(())
}

/// A1111 `sd_samplers_timesteps_impl.ddim`. As in A1111 it makes `len(timesteps) - 1` model
/// calls and stops at `alphas_cumprod[timesteps[0]]`; with `eta > 0` it draws one noise per step.
///
/// # Errors
/// The model's errors, [`Error::Invalid`] for bad timesteps, or [`Error::Cancelled`].
pub fn ddim(mut run: TimestepRun<'_>, mut x: Tensor) -> Result<Tensor> {
    check(&run)?;
    let (alphas, alphas_prev) = alphas(&run);
    let n = run.timesteps.len();
    for i in 0..n - 1 {
        let index = n - 1 - i;
        let e_t = run.model.eps(&x, run.timesteps[index] as f32)?;
        let a_t = alphas[index];
        let a_prev = alphas_prev[index] as f32;
        let sigma_t = run.eta
            * ((1.0 - alphas_prev[index]) / (1.0 - f64::from(a_t))
                * (1.0 - f64::from(a_t) / alphas_prev[index]))
                .sqrt();
        let sigma_t = sigma_t as f32;
        let sqrt_one_minus_at = (1.0 - a_t).sqrt();
        let pred_x0 = ((&x - (&e_t * f64::from(sqrt_one_minus_at))?)? / f64::from(a_t.sqrt()))?;
        let dir_xt = (&e_t * f64::from((1.0 - a_prev - sigma_t * sigma_t).sqrt()))?;
        x = ((&pred_x0 * f64::from(a_prev.sqrt()))? + dir_xt)?;
        if sigma_t != 0.0 {
            let noise = run.noise.noise(0.0, 0.0)?;
            x = (x + (noise * f64::from(sigma_t))?)?;
        }
        report(&mut run, i, &x, &pred_x0)?;
    }
    Ok(x)
}

/// A1111 `sd_samplers_timesteps_impl.plms` (pseudo linear multistep, with a pseudo improved
/// Euler first step).
///
/// # Errors
/// The model's errors, [`Error::Invalid`] for bad timesteps, or [`Error::Cancelled`].
pub fn plms(mut run: TimestepRun<'_>, mut x: Tensor) -> Result<Tensor> {
    check(&run)?;
    let (alphas, alphas_prev) = alphas(&run);
    let n = run.timesteps.len();
    let mut old_eps: Vec<Tensor> = Vec::new();
    let x_prev_and_pred = |x: &Tensor, e_t: &Tensor, index: usize| -> Result<(Tensor, Tensor)> {
        let a_t = alphas[index];
        let a_prev = alphas_prev[index] as f32;
        let sqrt_one_minus_at = (1.0 - a_t).sqrt();
        let pred_x0 = ((x - (e_t * f64::from(sqrt_one_minus_at))?)? / f64::from(a_t.sqrt()))?;
        let dir_xt = (e_t * f64::from((1.0 - a_prev).sqrt()))?;
        let x_prev = ((&pred_x0 * f64::from(a_prev.sqrt()))? + dir_xt)?;
        Ok((x_prev, pred_x0))
    };
    for i in 0..n - 1 {
        let index = n - 1 - i;
        let ts = run.timesteps[index] as f32;
        let t_next = run.timesteps[index.saturating_sub(1)] as f32;
        let e_t = run.model.eps(&x, ts)?;
        let e_t_prime = match old_eps.len() {
            0 => {
                let (x_prev, _) = x_prev_and_pred(&x, &e_t, index)?;
                let e_t_next = run.model.eps(&x_prev, t_next)?;
                ((&e_t + e_t_next)? / 2.0)?
            }
            1 => (((&e_t * 3.0)? - &old_eps[0])? / 2.0)?,
            2 => (((((&e_t * 23.0)? - (&old_eps[1] * 16.0)?)? + (&old_eps[0] * 5.0)?)?) / 12.0)?,
            _ => {
                let k = old_eps.len();
                ((((((&e_t * 55.0)? - (&old_eps[k - 1] * 59.0)?)? + (&old_eps[k - 2] * 37.0)?)?
                    - (&old_eps[k - 3] * 9.0)?)?)
                    / 24.0)?
            }
        };
        let (x_prev, pred_x0) = x_prev_and_pred(&x, &e_t_prime, index)?;
        old_eps.push(e_t);
        if old_eps.len() >= 4 {
            old_eps.remove(0);
        }
        x = x_prev;
        report(&mut run, i, &x, &pred_x0)?;
    }
    Ok(x)
}

/// The discrete VP schedule of A1111's `uni_pc.NoiseScheduleVP('discrete')`: `log(alpha_t)`
/// (half the log of `alphas_cumprod`) interpolated linearly at `t_i = (i + 1) / N`, extended
/// beyond both ends with the outermost segments (`interpolate_fn`). Float32 like the reference.
struct VpSchedule {
    t: Vec<f32>,
    log_alpha: Vec<f32>,
}

impl VpSchedule {
    fn new(alphas_cumprod: &[f32]) -> Self {
        let n = alphas_cumprod.len();
        let mut t = super::schedule::linspace_f32(0.0, 1.0, n + 1);
        t.remove(0);
        Self {
            t,
            log_alpha: alphas_cumprod.iter().map(|a| 0.5 * a.ln()).collect(),
        }
    }

    fn total(&self) -> usize {
        self.t.len()
    }

    fn log_mean_coeff(&self, t: f32) -> f32 {
        let k = self.t.len();
        let above = self.t.iter().filter(|&&x| x <= t).count();
        let start = above.saturating_sub(1).min(k - 2);
        let (x0, x1) = (self.t[start], self.t[start + 1]);
        let (y0, y1) = (self.log_alpha[start], self.log_alpha[start + 1]);
        y0 + (t - x0) * (y1 - y0) / (x1 - x0)
    }

    fn alpha(&self, t: f32) -> f32 {
        self.log_mean_coeff(t).exp()
    }

    fn std(&self, t: f32) -> f32 {
        (1.0 - (2.0 * self.log_mean_coeff(t)).exp()).sqrt()
    }

    fn lambda(&self, t: f32) -> f32 {
        let lmc = self.log_mean_coeff(t);
        lmc - 0.5 * (1.0 - (2.0 * lmc).exp()).ln()
    }
}

/// Solves the small dense system `a x = b` (Gaussian elimination with partial pivoting).
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        if a[pivot][col] == 0.0 {
            return Err(Error::Invalid {
                what: "UniPC coefficients",
                reason: "singular system".to_owned(),
            });
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let f = a[row][col] / pivot_row[col];
            for (v, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

struct UniPc<'r, 'a> {
    run: &'r mut TimestepRun<'a>,
    ns: VpSchedule,
}

impl UniPc<'_, '_> {
    /// `data_prediction_fn`: x0 from the predicted noise at continuous time `t`.
    fn model_fn(&mut self, x: &Tensor, t: f32) -> Result<Tensor> {
        let t_input = (t - 1.0 / self.ns.total() as f32) * 1000.0;
        let noise = self.run.model.eps(x, t_input)?;
        let (alpha, sigma) = (self.ns.alpha(t), self.ns.std(t));
        Ok(((x - (noise * f64::from(sigma))?)? / f64::from(alpha))?)
    }

    /// `multistep_uni_pc_bh_update` with variant `bh1` and `predict_x0`.
    fn update(
        &mut self,
        x: &Tensor,
        model_prev: &[Tensor],
        t_prev: &[f32],
        t: f32,
        order: usize,
        use_corrector: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let ns = &self.ns;
        let t_prev_0 = t_prev[t_prev.len() - 1];
        let lambda_prev_0 = ns.lambda(t_prev_0);
        let lambda_t = ns.lambda(t);
        let model_prev_0 = &model_prev[model_prev.len() - 1];
        let (sigma_prev_0, sigma_t) = (ns.std(t_prev_0), ns.std(t));
        let alpha_t = ns.log_mean_coeff(t).exp();
        let h = lambda_t - lambda_prev_0;
        let mut rks: Vec<f32> = Vec::with_capacity(order);
        let mut d1s: Vec<Tensor> = Vec::new();
        for i in 1..order {
            let t_prev_i = t_prev[t_prev.len() - 1 - i];
            let model_prev_i = &model_prev[model_prev.len() - 1 - i];
            let rk = (ns.lambda(t_prev_i) - lambda_prev_0) / h;
            rks.push(rk);
            d1s.push(((model_prev_i - model_prev_0)? / f64::from(rk))?);
        }
        rks.push(1.0);
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1f32;
        let b_h = hh;
        let mut r_mat: Vec<Vec<f64>> = Vec::with_capacity(order);
        let mut b: Vec<f64> = Vec::with_capacity(order);
        for i in 1..=order {
            r_mat.push(
                rks.iter()
                    .map(|&rk| f64::from(rk.powi(i as i32 - 1)))
                    .collect(),
            );
            b.push(f64::from(h_phi_k * factorial / b_h));
            factorial *= (i + 1) as f32;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        let combine = |rhos: &[f64], d1s: &[Tensor]| -> Result<Option<Tensor>> {
            let mut acc: Option<Tensor> = None;
            for (rho, d) in rhos.iter().zip(d1s) {
                let term = (d * f64::from(*rho as f32))?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
            Ok(acc)
        };
        let x_t_ = ((x * f64::from(sigma_t / sigma_prev_0))?
            - (model_prev_0 * f64::from(alpha_t * h_phi_1))?)?;
        let scale = f64::from(alpha_t * b_h);
        let mut x_t = x_t_.clone();
        if !d1s.is_empty() {
            let rhos_p = if order == 2 {
                vec![0.5]
            } else {
                let sub: Vec<Vec<f64>> = r_mat[..order - 1]
                    .iter()
                    .map(|r| r[..order - 1].to_vec())
                    .collect();
                solve(sub, b[..order - 1].to_vec())?
            };
            if let Some(pred_res) = combine(&rhos_p, &d1s)? {
                x_t = (&x_t_ - (pred_res * scale)?)?;
            }
        }
        if !use_corrector {
            return Ok((x_t, None));
        }
        let rhos_c = if order == 1 {
            vec![0.5]
        } else {
            solve(r_mat, b)?
        };
        let model_t = self.model_fn(&x_t, t)?;
        let d1_t = (&model_t - model_prev_0)?;
        let last = f64::from(rhos_c[rhos_c.len() - 1] as f32);
        let mut corr = (d1_t * last)?;
        if let Some(corr_res) = combine(&rhos_c[..rhos_c.len() - 1], &d1s)? {
            corr = (corr_res + corr)?;
        }
        let x_t = (&x_t_ - (corr * scale)?)?;
        Ok((x_t, Some(model_t)))
    }
}

/// A1111's UniPC (`modules/models/diffusion/uni_pc/uni_pc.py`, called from
/// `sd_samplers_timesteps_impl.unipc`) with A1111's defaults: multistep, variant `bh1`,
/// data prediction, order 3, `time_uniform` skip from t = 1 to 1/1000, lower order at the end.
/// As in A1111 the number of steps is `len(run.timesteps)` (see [`ddim_timesteps`]); only
/// the count of `run.timesteps` is used. `run.eta` is ignored. For img2img see
/// [`unipc_img2img`].
///
/// # Errors
/// The model's errors, [`Error::Invalid`] for fewer than 3 steps, or [`Error::Cancelled`].
pub fn unipc(run: TimestepRun<'_>, x: Tensor) -> Result<Tensor> {
    unipc_from(run, x, 1.0)
}

/// A1111's UniPC for img2img (`sd_samplers_timesteps_impl.unipc` with `is_img2img`): as
/// [`unipc`] over `len(run.timesteps)` steps (the `timesteps[:t_enc]` of
/// `CompVisSampler.sample_img2img`), but from `t_start = timesteps[-1] / 1000 + 1 / 1000`
/// (float32, as A1111 computes it on its integer timestep tensor) instead of 1.
///
/// # Errors
/// As [`unipc`].
pub fn unipc_img2img(run: TimestepRun<'_>, x: Tensor) -> Result<Tensor> {
    let last = run.timesteps.last().copied().unwrap_or(0);
    let t_start = last as f32 / 1000.0 + (1.0_f64 / 1000.0) as f32;
    unipc_from(run, x, t_start)
}

/// UniPC from continuous time `t_start` down to `1 / N` (`UniPC.sample`: `t_T = t_start`,
/// `get_time_steps('time_uniform', t_T, t_0, steps)`).
fn unipc_from(mut run: TimestepRun<'_>, x: Tensor, t_start: f32) -> Result<Tensor> {
    const ORDER: usize = 3;
    let steps = run.timesteps.len();
    if steps < ORDER {
        return Err(Error::Invalid {
            what: "steps",
            reason: format!("UniPC of order {ORDER} needs at least {ORDER} steps"),
        });
    }
    let ns = VpSchedule::new(run.model.alphas_cumprod());
    let t_0 = 1.0 / ns.total() as f32;
    let times = super::schedule::linspace_f32(t_start, t_0, steps + 1);
    let mut u = UniPc { run: &mut run, ns };
    let mut x = x;
    let mut model_prev = vec![u.model_fn(&x, times[0])?];
    let mut t_prev = vec![times[0]];
    let mut reported = 0;
    for (init_order, &t) in times.iter().enumerate().take(ORDER).skip(1) {
        let (nx, model_x) = u.update(&x, &model_prev, &t_prev, t, init_order, true)?;
        x = nx;
        let model_x = match model_x {
            Some(m) => m,
            None => u.model_fn(&x, t)?,
        };
        report_of(u.run, reported, steps, &x, &model_x)?;
        reported += 1;
        model_prev.push(model_x);
        t_prev.push(t);
    }
    for (step, &t) in times.iter().enumerate().skip(ORDER) {
        let step_order = ORDER.min(steps + 1 - step);
        let use_corrector = step != steps;
        let (nx, model_x) = u.update(&x, &model_prev, &t_prev, t, step_order, use_corrector)?;
        x = nx;
        // A1111 reports the corrector's model value; the last step has none, and x itself is
        // the final prediction there.
        report_of(u.run, reported, steps, &x, model_x.as_ref().unwrap_or(&x))?;
        reported += 1;
        model_prev.remove(0);
        t_prev.remove(0);
        t_prev.push(t);
        if step < steps {
            let m = match model_x {
                Some(m) => m,
                None => u.model_fn(&x, t)?,
            };
            model_prev.push(m);
        } else {
            // The last model value is never used; keep the list length.
            let last = model_prev[model_prev.len() - 1].clone();
            model_prev.push(last);
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_timesteps_follow_a1111_spacing() {
        let t = ddim_timesteps(20).unwrap();
        assert_eq!(t.len(), 20);
        assert_eq!(t[0], 1);
        assert_eq!(t[1], 51);
        assert_eq!(t[19], 951);
        // 1000 // 3 = 333: four timesteps, the last clipped to 999.
        assert_eq!(ddim_timesteps(3).unwrap(), vec![1, 334, 667, 999]);
        assert!(ddim_timesteps(0).is_err());
    }
}
