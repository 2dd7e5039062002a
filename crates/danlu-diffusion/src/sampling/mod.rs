//! Noise schedules and samplers by their A1111 names.
//!
//! * [`schedule`]: the model's discrete sigmas (`alphas_cumprod` → sigmas, `sigma_to_t`,
//!   `t_to_sigma`) and the schedulers of A1111 `modules/sd_schedulers.py`.
//! * [`kdiffusion`]: the k-diffusion samplers A1111 wraps (`sd_samplers_kdiffusion.py`).
//! * [`timesteps`]: A1111's DDIM, PLMS and UniPC.
//! * [`brownian`]: the Brownian-tree step noise of the SDE samplers (torchsde's `BrownianTree`
//!   seeded per image, NumPy's `SeedSequence`), as A1111's `create_noise_sampler` makes it.
//! * [`denoiser`]: the [`Denoiser`] trait the samplers call, and [`CfgDenoiser`], which turns a
//!   UNet ([`NoisePredictor`]) into one with classifier-free guidance.
//! * [`SamplerKind`] / [`Scheduler`]: the A1111 names, aliases and per-sampler defaults in one
//!   table, and [`parse_sampler_name`] for labels such as `DPM++ 2M Karras`.

pub mod brownian;
pub mod denoiser;
pub mod kdiffusion;
pub mod schedule;
pub mod timesteps;

use candle_core::Tensor;

pub use brownian::BrownianNoise;
pub use denoiser::{CfgDenoiser, Denoiser, EpsDenoiser, NoisePredictor, Prediction};
pub use kdiffusion::{Callback, SdeSolver};
pub use schedule::DiscreteSchedule;

use crate::rng::ImageRng;
use crate::{Error, Result};

/// What a sampler reports after each step.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// Zero-based step index.
    pub step: usize,
    /// Number of steps of this run.
    pub total: usize,
    /// Sigma of this step (0 for timestep samplers).
    pub sigma: f32,
    /// The current latent (k-diffusion: before the step; DDIM/PLMS: after it).
    pub x: &'a Tensor,
    /// The denoised prediction of this step (for live previews).
    pub denoised: &'a Tensor,
}

/// Where ancestral and SDE samplers get their fresh noise.
pub trait NoiseSource {
    /// Called once with the sigmas of a k-diffusion run before its first step (a Brownian
    /// tree spans their range); the default does nothing.
    ///
    /// # Errors
    /// Whatever the source reports.
    fn prepare(&mut self, _sigmas: &[f32]) -> Result<()> {
        Ok(())
    }

    /// Noise shaped like the latent for the step from `sigma` to `sigma_next`.
    ///
    /// # Errors
    /// Whatever the source reports.
    fn noise(&mut self, sigma: f32, sigma_next: f32) -> Result<Tensor>;
}

/// A1111 feeds k-diffusion's `torch.randn_like` from the image generators
/// (`sd_samplers_common.TorchHijack` → `ImageRNG.next()`), ignoring the sigmas.
impl NoiseSource for ImageRng {
    fn noise(&mut self, _sigma: f32, _sigma_next: f32) -> Result<Tensor> {
        self.next_noise()
    }
}

/// Any closure `(sigma, sigma_next) -> Tensor` is a noise source (tests inject fixed noise).
impl<F: FnMut(f32, f32) -> Result<Tensor>> NoiseSource for F {
    fn noise(&mut self, sigma: f32, sigma_next: f32) -> Result<Tensor> {
        self(sigma, sigma_next)
    }
}

/// A noise schedule by its A1111 name (`modules/sd_schedulers.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// The sampler's own default (see [`SamplerKind::default_scheduler`]).
    Automatic,
    /// k-diffusion `get_sigmas` of the model (A1111 `uniform`).
    Uniform,
    /// Karras et al., rho 7, between the model's smallest and largest sigma.
    Karras,
    /// Evenly spaced in log sigma.
    Exponential,
    /// Polynomial in log sigma, rho 1.
    Polyexponential,
    /// A1111 `sgm_uniform`.
    SgmUniform,
}

impl Scheduler {
    /// All schedulers, in A1111's order.
    pub const ALL: [Self; 6] = [
        Self::Automatic,
        Self::Uniform,
        Self::Karras,
        Self::Exponential,
        Self::Polyexponential,
        Self::SgmUniform,
    ];

    /// The label A1111 shows and writes as "Schedule type".
    pub fn label(self) -> &'static str {
        match self {
            Self::Automatic => "Automatic",
            Self::Uniform => "Uniform",
            Self::Karras => "Karras",
            Self::Exponential => "Exponential",
            Self::Polyexponential => "Polyexponential",
            Self::SgmUniform => "SGM Uniform",
        }
    }

    /// A1111's internal name (`Scheduler.name`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Automatic => "automatic",
            Self::Uniform => "uniform",
            Self::Karras => "karras",
            Self::Exponential => "exponential",
            Self::Polyexponential => "polyexponential",
            Self::SgmUniform => "sgm_uniform",
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::SgmUniform => &["SGMUniform"],
            _ => &[],
        }
    }

    /// Looks a scheduler up by label, name or alias (A1111 `schedulers_map`, which is
    /// case-sensitive; this lookup also accepts any case).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an unknown name.
    pub fn parse_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| {
                std::iter::once(s.label())
                    .chain(std::iter::once(s.name()))
                    .chain(s.aliases().iter().copied())
                    .any(|n| n.eq_ignore_ascii_case(name))
            })
            .ok_or_else(|| Error::Invalid {
                what: "scheduler",
                reason: format!("unknown scheduler `{name}`"),
            })
    }
}

/// A sampler by its A1111 label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// `DPM++ 2M` (`sample_dpmpp_2m`).
    DpmPp2M,
    /// `DPM++ SDE` (`sample_dpmpp_sde`).
    DpmPpSde,
    /// `DPM++ 2M SDE` (`sample_dpmpp_2m_sde`, midpoint).
    DpmPp2MSde,
    /// `DPM++ 2M SDE Heun` (`sample_dpmpp_2m_sde`, heun).
    DpmPp2MSdeHeun,
    /// `DPM++ 2S a` (`sample_dpmpp_2s_ancestral`).
    DpmPp2SAncestral,
    /// `DPM++ 3M SDE` (`sample_dpmpp_3m_sde`).
    DpmPp3MSde,
    /// `Euler a` (`sample_euler_ancestral`).
    EulerAncestral,
    /// `Euler` (`sample_euler`).
    Euler,
    /// `LMS` (`sample_lms`, order 4).
    Lms,
    /// `Heun` (`sample_heun`).
    Heun,
    /// `DPM2` (`sample_dpm_2`).
    Dpm2,
    /// `DPM2 a` (`sample_dpm_2_ancestral`).
    Dpm2Ancestral,
    /// `DDIM` (A1111 `sd_samplers_timesteps_impl.ddim`).
    Ddim,
    /// `PLMS` (A1111 `sd_samplers_timesteps_impl.plms`).
    Plms,
    /// `UniPC` (A1111 `sd_samplers_timesteps_impl.unipc`).
    UniPc,
}

/// One row of the sampler table (A1111 `samplers_k_diffusion` / `samplers_timesteps`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerInfo {
    /// The sampler.
    pub kind: SamplerKind,
    /// A1111's label.
    pub label: &'static str,
    /// A1111's aliases (`k_euler_a`, ...).
    pub aliases: &'static [&'static str],
    /// The sampler's `options['scheduler']`: what "Automatic" means for it; `None` means
    /// the model's own `get_sigmas` (the same sigmas as "Uniform").
    pub scheduler_option: Option<Scheduler>,
    /// `discard_next_to_last_sigma`: one more step is scheduled and the penultimate sigma
    /// dropped.
    pub discard_penultimate_sigma: bool,
    /// Whether the sampler draws fresh noise every step (uses the eta of ancestral samplers).
    pub stochastic: bool,
    /// Whether A1111 feeds it from a Brownian tree (`brownian_noise`).
    pub brownian_noise: bool,
    /// Whether it is one of A1111's timestep samplers (DDIM, PLMS, UniPC).
    pub timesteps: bool,
}

// One positional constructor keeps the table below one row per sampler.
#[allow(clippy::too_many_arguments)]
const fn row(
    kind: SamplerKind,
    label: &'static str,
    aliases: &'static [&'static str],
    scheduler_option: Option<Scheduler>,
    discard_penultimate_sigma: bool,
    stochastic: bool,
    brownian_noise: bool,
    timesteps: bool,
) -> SamplerInfo {
    SamplerInfo {
        kind,
        label,
        aliases,
        scheduler_option,
        discard_penultimate_sigma,
        stochastic,
        brownian_noise,
        timesteps,
    }
}

/// The sampler table of A1111 1.10 (`modules/sd_samplers_kdiffusion.py`
/// `samplers_k_diffusion`, `modules/sd_samplers_timesteps.py` `samplers_timesteps`), in its
/// order.
#[rustfmt::skip]
pub const SAMPLERS: &[SamplerInfo] = &[
    row(SamplerKind::DpmPp2M, "DPM++ 2M", &["k_dpmpp_2m"], Some(Scheduler::Karras), false, false, false, false),
    row(SamplerKind::DpmPpSde, "DPM++ SDE", &["k_dpmpp_sde"], Some(Scheduler::Karras), false, true, true, false),
    row(SamplerKind::DpmPp2MSde, "DPM++ 2M SDE", &["k_dpmpp_2m_sde"], Some(Scheduler::Exponential), false, true, true, false),
    row(SamplerKind::DpmPp2MSdeHeun, "DPM++ 2M SDE Heun", &["k_dpmpp_2m_sde_heun"], Some(Scheduler::Exponential), false, true, true, false),
    row(SamplerKind::DpmPp2SAncestral, "DPM++ 2S a", &["k_dpmpp_2s_a"], Some(Scheduler::Karras), false, true, false, false),
    row(SamplerKind::DpmPp3MSde, "DPM++ 3M SDE", &["k_dpmpp_3m_sde"], Some(Scheduler::Exponential), true, true, true, false),
    row(SamplerKind::EulerAncestral, "Euler a", &["k_euler_a", "k_euler_ancestral"], None, false, true, false, false),
    row(SamplerKind::Euler, "Euler", &["k_euler"], None, false, false, false, false),
    row(SamplerKind::Lms, "LMS", &["k_lms"], None, false, false, false, false),
    row(SamplerKind::Heun, "Heun", &["k_heun"], None, false, false, false, false),
    row(SamplerKind::Dpm2, "DPM2", &["k_dpm_2"], Some(Scheduler::Karras), true, false, false, false),
    row(SamplerKind::Dpm2Ancestral, "DPM2 a", &["k_dpm_2_a"], Some(Scheduler::Karras), true, true, false, false),
    row(SamplerKind::Ddim, "DDIM", &["ddim"], None, false, false, false, true),
    row(SamplerKind::Plms, "PLMS", &["plms"], None, false, false, false, true),
    row(SamplerKind::UniPc, "UniPC", &["unipc"], None, false, false, false, true),
];

impl SamplerKind {
    /// This sampler's table row.
    pub fn info(self) -> &'static SamplerInfo {
        // Every variant has a row; the test `every_sampler_has_one_row` keeps it so.
        SAMPLERS
            .iter()
            .find(|r| r.kind == self)
            .unwrap_or(&SAMPLERS[0])
    }

    /// A1111's label.
    pub fn label(self) -> &'static str {
        self.info().label
    }

    /// What "Automatic" resolves to for this sampler.
    pub fn default_scheduler(self) -> Scheduler {
        self.info().scheduler_option.unwrap_or(Scheduler::Uniform)
    }
}

/// Resolves an A1111 sampler string such as `DPM++ 2M Karras` or `k_euler_a` into a sampler
/// and a scheduler, the way A1111 1.9+ `sd_samplers.get_sampler_and_scheduler` does: a
/// trailing scheduler label, name or alias is split off (it overrides `scheduler`), the rest
/// is a label or alias, and a scheduler equal to the sampler's default becomes `Automatic`.
///
/// # Errors
/// [`Error::Invalid`] for an unknown sampler (A1111 silently falls back to its first sampler;
/// a typo here is an error instead).
pub fn parse_sampler_name(name: &str, scheduler: Scheduler) -> Result<(SamplerKind, Scheduler)> {
    let mut base = name.trim();
    let mut found = scheduler;
    // A1111 takes the first scheduler in its list whose label ends the string, so
    // "Euler SGM Uniform" loses " Uniform" and names no sampler; the longest match is taken
    // here instead.
    let mut best: Option<(Scheduler, &str)> = None;
    for s in Scheduler::ALL {
        let options = std::iter::once(s.label())
            .chain(std::iter::once(s.name()))
            .chain(s.aliases().iter().copied());
        for option in options {
            if let Some(stripped) = base.strip_suffix(option)
                && let Some(stripped) = stripped.strip_suffix(' ')
                && best.is_none_or(|(_, b)| stripped.len() < b.len())
            {
                best = Some((s, stripped));
            }
        }
    }
    if let Some((s, stripped)) = best {
        found = s;
        base = stripped;
    }
    let info = SAMPLERS
        .iter()
        .find(|r| r.label == base)
        .or_else(|| {
            SAMPLERS.iter().find(|r| {
                r.label.eq_ignore_ascii_case(base)
                    || r.aliases.iter().any(|a| a.eq_ignore_ascii_case(base))
            })
        })
        .ok_or_else(|| Error::Invalid {
            what: "sampler",
            reason: format!("unknown sampler `{name}`"),
        })?;
    if Some(found) == info.scheduler_option {
        found = Scheduler::Automatic;
    }
    Ok((info.kind, found))
}

/// The sigmas A1111 samples `steps` steps with (`KDiffusionSampler.get_sigmas`): the
/// scheduler ("Automatic" → the sampler's default), Karras/Exponential between the model's
/// `sigma_min` and `sigma_max`, and the penultimate sigma discarded for DPM2 / DPM2 a.
///
/// # Errors
/// [`Error::Invalid`] for 0 steps or a timestep sampler (use [`timesteps::ddim_timesteps`]).
pub fn sigmas_for(
    sampler: SamplerKind,
    scheduler: Scheduler,
    steps: usize,
    schedule: &DiscreteSchedule,
) -> Result<Vec<f32>> {
    let info = sampler.info();
    if steps == 0 || info.timesteps {
        return Err(Error::Invalid {
            what: "steps",
            reason: if steps == 0 {
                "at least one step is needed".to_owned()
            } else {
                format!("`{}` samples on timesteps, not sigmas", info.label)
            },
        });
    }
    let discard = info.discard_penultimate_sigma;
    let n = steps + usize::from(discard);
    let resolved = match scheduler {
        Scheduler::Automatic => info.scheduler_option.unwrap_or(Scheduler::Uniform),
        s => s,
    };
    let (smin, smax) = (schedule.sigma_min(), schedule.sigma_max());
    let mut sigmas = match resolved {
        Scheduler::Automatic | Scheduler::Uniform => schedule.get_sigmas(n),
        Scheduler::Karras => schedule::karras(n, smin, smax, 7.0),
        Scheduler::Exponential => schedule::exponential(n, smin, smax),
        Scheduler::Polyexponential => schedule::polyexponential(n, smin, smax, 1.0),
        Scheduler::SgmUniform => schedule::sgm_uniform(schedule, n),
    };
    if discard && sigmas.len() >= 2 {
        sigmas.remove(sigmas.len() - 2);
    }
    Ok(sigmas)
}

/// Everything a txt2img sampling run needs besides the model.
pub struct SampleRequest<'a> {
    /// The sampler.
    pub sampler: SamplerKind,
    /// The scheduler (ignored by DDIM/PLMS).
    pub scheduler: Scheduler,
    /// Number of steps.
    pub steps: usize,
    /// Eta for ancestral/SDE samplers (A1111 default 1) and DDIM (default 0).
    pub eta: f64,
    /// Unit-variance initial noise `[B, C, H, W]` (A1111 `ImageRNG.first()`).
    pub noise: Tensor,
    /// Later noise (ancestral steps, DDIM with eta).
    pub noise_source: &'a mut dyn NoiseSource,
    /// Per-step callback.
    pub callback: Option<Callback<'a>>,
}

impl SampleRequest<'_> {
    /// A1111's default eta for this request's sampler: 0 for DDIM, 1 otherwise.
    pub fn default_eta(sampler: SamplerKind) -> f64 {
        if sampler == SamplerKind::Ddim {
            0.0
        } else {
            1.0
        }
    }
}

/// Runs a txt2img sampling loop the way A1111 does: k-diffusion samplers start from
/// `noise * sigmas[0]`, DDIM/PLMS from the noise itself.
///
/// # Errors
/// The model's errors, [`Error::Invalid`] for bad settings, or [`Error::Cancelled`].
pub fn sample<D: Denoiser + EpsDenoiser>(
    model: &mut D,
    request: SampleRequest<'_>,
) -> Result<Tensor> {
    let SampleRequest {
        sampler,
        scheduler,
        steps,
        eta,
        noise,
        noise_source,
        callback,
    } = request;
    let info = sampler.info();
    if info.timesteps {
        let timesteps = timesteps::ddim_timesteps(steps)?;
        let run = timesteps::TimestepRun {
            model,
            timesteps: &timesteps,
            noise: noise_source,
            eta,
            // Shortens the callback's lifetime to this function's locals (no coercion
            // happens inside `Option`).
            callback: callback.map(|c| -> Callback<'_> { c }),
        };
        return match sampler {
            SamplerKind::Plms => timesteps::plms(run, noise),
            SamplerKind::UniPc => timesteps::unipc(run, noise),
            _ => timesteps::ddim(run, noise),
        };
    }
    let schedule = {
        let ac = EpsDenoiser::alphas_cumprod(model).to_vec();
        DiscreteSchedule::new(ac)?
    };
    let sigmas = sigmas_for(sampler, scheduler, steps, &schedule)?;
    let x = (noise * f64::from(sigmas[0]))?;
    noise_source.prepare(&sigmas)?;
    let run = kdiffusion::Run {
        denoiser: model,
        sigmas: &sigmas,
        noise: noise_source,
        eta,
        callback: callback.map(|c| -> Callback<'_> { c }),
    };
    run_kdiffusion(sampler, run, x)
}

/// A1111's `setup_img2img_steps` with `img2img_fix_steps` off (the default): the schedule keeps
/// `steps` steps and the last `t_enc = int(min(strength, 0.999) * steps)` of them run.
/// Returns `(steps, t_enc)`.
pub fn img2img_steps(steps: usize, denoising_strength: f32) -> (usize, usize) {
    let strength = f64::from(denoising_strength.clamp(0.0, 0.999));
    (steps, (strength * steps as f64) as usize)
}

/// Runs an img2img sampling loop the way A1111's `sample_img2img` does: k-diffusion samplers
/// run on `sigmas[steps - t_enc - 1..]` from `init_latent + noise * sigma`, DDIM, PLMS and
/// UniPC on `timesteps[..t_enc]` from `init_latent * sqrt(ᾱ) + noise * sqrt(1 - ᾱ)` at
/// `timesteps[t_enc]` (UniPC from A1111's img2img start time, [`timesteps::unipc_img2img`]).
/// `request.noise` is the unit noise (A1111's first `ImageRNG` draw).
///
/// # Errors
/// The model's errors, [`Error::Invalid`] for bad settings (a strength that leaves no step),
/// or [`Error::Cancelled`].
pub fn sample_img2img<D: Denoiser + EpsDenoiser>(
    model: &mut D,
    request: SampleRequest<'_>,
    init_latent: &Tensor,
    denoising_strength: f32,
) -> Result<Tensor> {
    let SampleRequest {
        sampler,
        scheduler,
        steps,
        eta,
        noise,
        noise_source,
        callback,
    } = request;
    let (steps, t_enc) = img2img_steps(steps, denoising_strength);
    if t_enc == 0 {
        return Err(Error::Invalid {
            what: "denoising strength",
            reason: format!("{denoising_strength} leaves no step of {steps}"),
        });
    }
    let info = sampler.info();
    if info.timesteps {
        let all = timesteps::ddim_timesteps(steps)?;
        let ac = EpsDenoiser::alphas_cumprod(model);
        let a = ac[all[t_enc.min(all.len() - 1)]];
        let xi = ((init_latent * f64::from(a.sqrt()))? + (noise * f64::from((1.0 - a).sqrt()))?)?;
        let sched = &all[..t_enc.min(all.len())];
        let run = timesteps::TimestepRun {
            model,
            timesteps: sched,
            noise: noise_source,
            eta,
            callback: callback.map(|c| -> Callback<'_> { c }),
        };
        return match sampler {
            SamplerKind::Plms => timesteps::plms(run, xi),
            SamplerKind::UniPc => timesteps::unipc_img2img(run, xi),
            _ => timesteps::ddim(run, xi),
        };
    }
    let schedule = DiscreteSchedule::new(EpsDenoiser::alphas_cumprod(model).to_vec())?;
    let sigmas = sigmas_for(sampler, scheduler, steps, &schedule)?;
    let sched = &sigmas[steps.saturating_sub(t_enc + 1)..];
    let xi = (init_latent + (noise * f64::from(sched[0]))?)?;
    noise_source.prepare(sched)?;
    let run = kdiffusion::Run {
        denoiser: model,
        sigmas: sched,
        noise: noise_source,
        eta,
        callback: callback.map(|c| -> Callback<'_> { c }),
    };
    run_kdiffusion(sampler, run, xi)
}

/// Runs one k-diffusion sampler over `run.sigmas` from `x` (already scaled to `sigmas[0]`).
///
/// # Errors
/// The model's errors, [`Error::Invalid`] for a timestep sampler, or [`Error::Cancelled`].
pub fn run_kdiffusion(sampler: SamplerKind, run: kdiffusion::Run<'_>, x: Tensor) -> Result<Tensor> {
    match sampler {
        SamplerKind::Euler => kdiffusion::euler(run, x),
        SamplerKind::EulerAncestral => kdiffusion::euler_ancestral(run, x),
        SamplerKind::Heun => kdiffusion::heun(run, x),
        SamplerKind::Lms => kdiffusion::lms(run, x),
        SamplerKind::Dpm2 => kdiffusion::dpm_2(run, x),
        SamplerKind::Dpm2Ancestral => kdiffusion::dpm_2_ancestral(run, x),
        SamplerKind::DpmPp2SAncestral => kdiffusion::dpmpp_2s_ancestral(run, x),
        SamplerKind::DpmPp2M => kdiffusion::dpmpp_2m(run, x),
        SamplerKind::DpmPpSde => kdiffusion::dpmpp_sde(run, x),
        SamplerKind::DpmPp2MSde => kdiffusion::dpmpp_2m_sde(run, x, SdeSolver::Midpoint),
        SamplerKind::DpmPp2MSdeHeun => kdiffusion::dpmpp_2m_sde(run, x, SdeSolver::Heun),
        SamplerKind::DpmPp3MSde => kdiffusion::dpmpp_3m_sde(run, x),
        SamplerKind::Ddim | SamplerKind::Plms | SamplerKind::UniPc => Err(Error::Invalid {
            what: "sampler",
            reason: format!("`{}` is a timestep sampler", sampler.label()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sampler_has_one_row() {
        use SamplerKind::*;
        for k in [
            DpmPp2M,
            DpmPpSde,
            DpmPp2MSde,
            DpmPp2MSdeHeun,
            DpmPp2SAncestral,
            DpmPp3MSde,
            EulerAncestral,
            Euler,
            Lms,
            Heun,
            Dpm2,
            Dpm2Ancestral,
            Ddim,
            Plms,
            UniPc,
        ] {
            assert_eq!(SAMPLERS.iter().filter(|r| r.kind == k).count(), 1, "{k:?}");
        }
    }

    /// (A1111 string, scheduler argument) → (sampler, scheduler), following
    /// `get_sampler_and_scheduler` in A1111 1.10 `modules/sd_samplers.py`.
    #[test]
    fn a1111_sampler_strings_resolve_like_a1111() {
        use SamplerKind::*;
        use Scheduler::*;
        let table: &[(&str, Scheduler, SamplerKind, Scheduler)] = &[
            ("Euler a", Automatic, EulerAncestral, Automatic),
            ("k_euler_a", Automatic, EulerAncestral, Automatic),
            ("k_euler_ancestral", Automatic, EulerAncestral, Automatic),
            ("Euler", Karras, Euler, Karras),
            ("DPM++ 2M Karras", Automatic, DpmPp2M, Automatic),
            ("DPM++ 2M", Karras, DpmPp2M, Automatic),
            ("DPM++ 2M", Uniform, DpmPp2M, Uniform),
            ("DPM++ 2M Exponential", Automatic, DpmPp2M, Exponential),
            ("DPM++ SDE Karras", Automatic, DpmPpSde, Automatic),
            ("DPM++ 2M SDE Karras", Automatic, DpmPp2MSde, Karras),
            ("DPM++ 2M SDE Exponential", Automatic, DpmPp2MSde, Automatic),
            ("DPM++ 2M SDE Heun", Automatic, DpmPp2MSdeHeun, Automatic),
            (
                "DPM++ 2M SDE Heun Karras",
                Automatic,
                DpmPp2MSdeHeun,
                Karras,
            ),
            ("LMS Karras", Automatic, Lms, Karras),
            ("Heun", Automatic, Heun, Automatic),
            ("Euler SGM Uniform", Automatic, Euler, SgmUniform),
            ("Euler SGMUniform", Automatic, Euler, SgmUniform),
            ("Euler sgm_uniform", Automatic, Euler, SgmUniform),
            // Euler has no scheduler option, so "Uniform" stays in the infotext.
            ("Euler Uniform", Automatic, Euler, Uniform),
            ("DDIM", Automatic, Ddim, Automatic),
            ("UniPC", Automatic, UniPc, Automatic),
            ("unipc", Automatic, UniPc, Automatic),
            ("PLMS", Automatic, Plms, Automatic),
        ];
        for &(name, sched, want_kind, want_sched) in table {
            assert_eq!(
                parse_sampler_name(name, sched).unwrap(),
                (want_kind, want_sched),
                "{name} / {sched:?}"
            );
        }
        assert!(parse_sampler_name("Eular a", Automatic).is_err());
    }

    #[test]
    fn dpm2_discards_the_penultimate_sigma() {
        let s = DiscreteSchedule::sd();
        let sig = sigmas_for(SamplerKind::Dpm2, Scheduler::Automatic, 10, &s).unwrap();
        let karras = schedule::karras(11, s.sigma_min(), s.sigma_max(), 7.0);
        // Karras over 11 steps is 12 values ending in sigma_min, 0; sigma_min is dropped.
        assert_eq!(karras.len(), 12);
        assert_eq!(sig.len(), 11);
        assert_eq!(sig[..10], karras[..10]);
        assert_eq!(sig[10], 0.0);
        let euler = sigmas_for(SamplerKind::Euler, Scheduler::Automatic, 10, &s).unwrap();
        assert_eq!(euler, s.get_sigmas(10));
    }

    #[test]
    fn scheduler_names_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(Scheduler::parse_name(s.label()).unwrap(), s);
            assert_eq!(Scheduler::parse_name(s.name()).unwrap(), s);
        }
    }
}
