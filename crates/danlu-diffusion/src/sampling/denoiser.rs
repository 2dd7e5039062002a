//! The model as samplers see it: k-diffusion's denoiser wrappers and A1111's CFG combination.

use candle_core::Tensor;

use super::schedule::DiscreteSchedule;
use crate::Result;

/// What k-diffusion samplers call: the denoised prediction of `x` at noise level `sigma`.
pub trait Denoiser {
    /// Returns the prediction of the clean latent for `x` (`[B, C, H, W]`) at `sigma`.
    ///
    /// # Errors
    /// Whatever the network reports.
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor>;
}

/// What A1111's timestep samplers (DDIM, PLMS, UniPC) call: the predicted noise at a discrete
/// timestep.
pub trait EpsDenoiser {
    /// Returns the predicted noise for `x` at `timestep`.
    ///
    /// # Errors
    /// Whatever the network reports.
    fn eps(&mut self, x: &Tensor, timestep: f32) -> Result<Tensor>;

    /// The model's `alphas_cumprod` (float32).
    fn alphas_cumprod(&self) -> &[f32];
}

/// The raw network: a UNet with its text conditioning already bound.
///
/// `x_in` holds `2 * B` latents: the first `B` are to be conditioned on the prompts and the
/// last `B` on the negative prompts, as A1111's `CFGDenoiser` batches them
/// (`sd_samplers_cfg_denoiser.py`); `timestep` is the (fractional) UNet timestep.
pub trait NoisePredictor {
    /// Returns the network output (noise or v) for every latent of `x_in`.
    ///
    /// # Errors
    /// Whatever the network reports.
    fn predict(&mut self, x_in: &Tensor, timestep: f32) -> Result<Tensor>;
}

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Prediction {
    /// The noise (SD 1.x, SD 2.x base 512).
    #[default]
    Epsilon,
    /// The velocity `v` (SD 2.x 768-v; k-diffusion `CompVisVDenoiser`).
    V,
}

/// A1111's classifier-free guidance around k-diffusion's `CompVisDenoiser` /
/// `CompVisVDenoiser`, and around `CompVisTimestepsDenoiser` for DDIM/PLMS.
///
/// The prediction of every latent is made for prompt and negative prompt in one batch; the
/// result is `uncond + (cond - uncond) * cfg_scale` (`CFGDenoiser.combine_denoised`, one
/// sub-prompt of weight 1).
#[derive(Debug)]
pub struct CfgDenoiser<P> {
    model: P,
    schedule: DiscreteSchedule,
    prediction: Prediction,
    cfg_scale: f32,
}

impl<P: NoisePredictor> CfgDenoiser<P> {
    /// Wraps `model` (whose batches are prompt then negative prompt) for `schedule`.
    pub fn new(
        model: P,
        schedule: DiscreteSchedule,
        prediction: Prediction,
        cfg_scale: f32,
    ) -> Self {
        Self {
            model,
            schedule,
            prediction,
            cfg_scale,
        }
    }

    /// The wrapped network.
    pub fn model_mut(&mut self) -> &mut P {
        &mut self.model
    }

    /// The schedule the wrapper converts sigmas with.
    pub fn schedule(&self) -> &DiscreteSchedule {
        &self.schedule
    }

    fn combine(&self, out: &Tensor) -> Result<Tensor> {
        let b = out.dim(0)? / 2;
        let cond = out.narrow(0, 0, b)?;
        let uncond = out.narrow(0, b, b)?;
        Ok((&uncond + ((cond - &uncond)? * f64::from(self.cfg_scale))?)?)
    }
}

impl<P: NoisePredictor> Denoiser for CfgDenoiser<P> {
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor> {
        let x_in = Tensor::cat(&[x, x], 0)?;
        let out = denoise_one(
            &mut self.model,
            &self.schedule,
            self.prediction,
            &x_in,
            sigma,
        )?;
        self.combine(&out)
    }
}

impl<P: NoisePredictor> EpsDenoiser for CfgDenoiser<P> {
    fn eps(&mut self, x: &Tensor, timestep: f32) -> Result<Tensor> {
        let x_in = Tensor::cat(&[x, x], 0)?;
        let out = self.model.predict(&x_in, timestep)?;
        let eps = match self.prediction {
            Prediction::Epsilon => out,
            Prediction::V => {
                // CompVisTimestepsVDenoiser.predict_eps_from_z_and_v.
                let ac = self.schedule.alphas_cumprod();
                let a = ac[(timestep as usize).min(ac.len() - 1)];
                ((out * f64::from(a.sqrt()))? + (x_in * f64::from((1.0 - a).sqrt()))?)?
            }
        };
        self.combine(&eps)
    }

    fn alphas_cumprod(&self) -> &[f32] {
        self.schedule.alphas_cumprod()
    }
}

/// k-diffusion `CompVisDenoiser.forward` (and `CompVisVDenoiser`) for one batch: scales the
/// input by `c_in`, asks the network at `sigma_to_t(sigma)`, and turns its output into the
/// denoised latent.
///
/// # Errors
/// Whatever the network reports, or a candle error.
pub fn denoise_one<P: NoisePredictor + ?Sized>(
    model: &mut P,
    schedule: &DiscreteSchedule,
    prediction: Prediction,
    x: &Tensor,
    sigma: f32,
) -> Result<Tensor> {
    let s2 = sigma * sigma + 1.0;
    let c_in = 1.0 / s2.sqrt();
    let t = schedule.sigma_to_t(sigma);
    let out = model.predict(&(x * f64::from(c_in))?, t)?;
    Ok(match prediction {
        Prediction::Epsilon => (x + (out * f64::from(-sigma))?)?,
        Prediction::V => {
            let c_skip = 1.0 / s2;
            let c_out = -sigma / s2.sqrt();
            ((out * f64::from(c_out))? + (x * f64::from(c_skip))?)?
        }
    })
}
