//! Sampler and schedule names across tools, mapped to and from A1111's labels.
//!
//! Every tool names the same k-diffusion samplers its own way: A1111 writes `DPM++ 2M` with
//! `Schedule type: Karras` (before 1.9 one label, `DPM++ 2M Karras`), ComfyUI, Fooocus and
//! SwarmUI write `sampler_name` `dpmpp_2m` and `scheduler` `karras`, NovelAI writes
//! `k_dpmpp_2m` with `noise_schedule`, InvokeAI writes diffusers scheduler names such as
//! `dpmpp_2m_k`. [`to_a1111_sampler`] turns any of them into A1111's sampler label and
//! schedule label (the words `danlu generate --sampler/--scheduler` takes), and
//! [`to_comfyui_sampler`] goes the other way. A name with no counterpart is an [`Unmapped`]
//! error that says why.
//!
//! Sources: A1111 `modules/sd_samplers_kdiffusion.py` `samplers_k_diffusion`,
//! `modules/sd_samplers_timesteps.py` `samplers_timesteps`, `modules/sd_schedulers.py`
//! `schedulers`, `modules/sd_samplers.py` `get_sampler_and_scheduler`; ComfyUI
//! `comfy/samplers.py` `KSAMPLER_NAMES`, `SAMPLER_NAMES`, `SCHEDULER_NAMES` and
//! `sampler_object`; InvokeAI `invokeai/backend/stable_diffusion/schedulers/schedulers.py`
//! `SCHEDULER_MAP`; NovelAI's image generation API documentation (`sampler`,
//! `noise_schedule`).

use crate::Source;
use serde::Serialize;

/// How closely a mapped name reproduces the original tool's sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fidelity {
    /// The same algorithm with the same sigmas.
    Same,
    /// The nearest A1111 sampler: same method, but the original tool's implementation,
    /// noise or step spacing differs, so pixels differ.
    Close,
}

/// An A1111 sampler label and schedule label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct A1111Sampler {
    /// A1111's sampler label (`DPM++ 2M`, `Euler a`, `DDIM`).
    pub sampler: String,
    /// A1111's "Schedule type" label (`Karras`, `Automatic`, `Uniform`); `None` when the image
    /// states none for a timestep sampler (DDIM, PLMS, UniPC).
    pub scheduler: Option<String>,
    /// How close the mapping is.
    pub fidelity: Fidelity,
    /// Why it is only close, or what was assumed.
    pub notes: Vec<String>,
}

/// A ComfyUI `KSampler` `sampler_name` and `scheduler`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComfyUiSampler {
    /// ComfyUI `sampler_name` (`dpmpp_2m`).
    pub sampler_name: String,
    /// ComfyUI `scheduler` (`karras`).
    pub scheduler: String,
    /// How close the mapping is.
    pub fidelity: Fidelity,
    /// Why it is only close.
    pub notes: Vec<String>,
}

/// A sampler or schedule name that has no counterpart in the other tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{what} `{name}` cannot be mapped: {reason}")]
pub struct Unmapped {
    /// `sampler` or `scheduler`.
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// Why.
    pub reason: String,
}

fn unmapped(what: &'static str, name: &str, reason: &str) -> Unmapped {
    Unmapped {
        what,
        name: name.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A1111 1.10's sampler labels (`samplers_k_diffusion`, `samplers_timesteps`), with the
/// schedule each uses for "Automatic" (`options['scheduler']`; `None`: the model's own
/// `get_sigmas`, which is "Uniform").
pub const A1111_SAMPLERS: &[(&str, Option<&str>)] = &[
    ("DPM++ 2M", Some("Karras")),
    ("DPM++ SDE", Some("Karras")),
    ("DPM++ 2M SDE", Some("Exponential")),
    ("DPM++ 2M SDE Heun", Some("Exponential")),
    ("DPM++ 2S a", Some("Karras")),
    ("DPM++ 3M SDE", Some("Exponential")),
    ("Euler a", None),
    ("Euler", None),
    ("LMS", None),
    ("Heun", None),
    ("DPM2", Some("Karras")),
    ("DPM2 a", Some("Karras")),
    ("DPM fast", None),
    ("DPM adaptive", None),
    ("Restart", Some("Karras")),
    ("DDIM", None),
    ("DDIM CFG++", None),
    ("PLMS", None),
    ("UniPC", None),
    ("LCM", None),
];

/// A1111's schedule labels and names (`modules/sd_schedulers.py` `schedulers`), in its order.
pub const A1111_SCHEDULES: &[(&str, &str)] = &[
    ("Automatic", "automatic"),
    ("Uniform", "uniform"),
    ("Karras", "karras"),
    ("Exponential", "exponential"),
    ("Polyexponential", "polyexponential"),
    ("SGM Uniform", "sgm_uniform"),
    ("KL Optimal", "kl_optimal"),
    ("Align Your Steps", "align_your_steps"),
    ("Simple", "simple"),
    ("Normal", "normal"),
    ("DDIM", "ddim"),
    ("Beta", "beta"),
];

/// Timestep samplers: A1111 writes no meaningful schedule for them.
const TIMESTEP_SAMPLERS: &[&str] = &["DDIM", "DDIM CFG++", "PLMS", "UniPC"];

/// One ComfyUI sampler: its A1111 label (`None`: none), how close, and why.
struct ComfyRow {
    comfy: &'static str,
    a1111: Option<&'static str>,
    fidelity: Fidelity,
    note: &'static str,
}

const fn comfy(
    comfy: &'static str,
    a1111: Option<&'static str>,
    fidelity: Fidelity,
    note: &'static str,
) -> ComfyRow {
    ComfyRow {
        comfy,
        a1111,
        fidelity,
        note,
    }
}

const BROWNIAN_GPU: &str =
    "the `_gpu` variant draws its Brownian-tree noise on the GPU, A1111 on the CPU";
const DPM2_SIGMAS: &str = "A1111 discards the next-to-last sigma for DPM2 (`discard_next_to_last_sigma`), ComfyUI does not";
const NO_A1111: &str = "A1111 has no such sampler";

/// ComfyUI `SAMPLER_NAMES` (`comfy/samplers.py`), each with the A1111 sampler it corresponds
/// to. The first row for an A1111 label is the one [`to_comfyui_sampler`] picks.
#[rustfmt::skip]
const COMFYUI_SAMPLERS: &[ComfyRow] = &[
    comfy("euler", Some("Euler"), Fidelity::Same, ""),
    comfy("euler_cfg_pp", None, Fidelity::Close, "a CFG++ variant A1111 does not have"),
    comfy("euler_ancestral", Some("Euler a"), Fidelity::Same, ""),
    comfy("euler_ancestral_cfg_pp", None, Fidelity::Close, "a CFG++ variant A1111 does not have"),
    comfy("heun", Some("Heun"), Fidelity::Same, ""),
    comfy("heunpp2", None, Fidelity::Close, NO_A1111),
    comfy("dpm_2", Some("DPM2"), Fidelity::Close, DPM2_SIGMAS),
    comfy("dpm_2_ancestral", Some("DPM2 a"), Fidelity::Close, DPM2_SIGMAS),
    comfy("lms", Some("LMS"), Fidelity::Same, ""),
    comfy("dpm_fast", Some("DPM fast"), Fidelity::Same, ""),
    comfy("dpm_adaptive", Some("DPM adaptive"), Fidelity::Same, ""),
    comfy("dpmpp_2s_ancestral", Some("DPM++ 2S a"), Fidelity::Same, ""),
    comfy("dpmpp_2s_ancestral_cfg_pp", None, Fidelity::Close, "a CFG++ variant A1111 does not have"),
    comfy("dpmpp_sde", Some("DPM++ SDE"), Fidelity::Same, ""),
    comfy("dpmpp_sde_gpu", Some("DPM++ SDE"), Fidelity::Close, BROWNIAN_GPU),
    comfy("dpmpp_2m", Some("DPM++ 2M"), Fidelity::Same, ""),
    comfy("dpmpp_2m_cfg_pp", None, Fidelity::Close, "a CFG++ variant A1111 does not have"),
    comfy("dpmpp_2m_sde", Some("DPM++ 2M SDE"), Fidelity::Same, ""),
    comfy("dpmpp_2m_sde_gpu", Some("DPM++ 2M SDE"), Fidelity::Close, BROWNIAN_GPU),
    comfy("dpmpp_2m_sde_heun", Some("DPM++ 2M SDE Heun"), Fidelity::Same, ""),
    comfy("dpmpp_2m_sde_heun_gpu", Some("DPM++ 2M SDE Heun"), Fidelity::Close, BROWNIAN_GPU),
    comfy("dpmpp_3m_sde", Some("DPM++ 3M SDE"), Fidelity::Same, ""),
    comfy("dpmpp_3m_sde_gpu", Some("DPM++ 3M SDE"), Fidelity::Close, BROWNIAN_GPU),
    comfy("ddpm", None, Fidelity::Close, NO_A1111),
    comfy("lcm", Some("LCM"), Fidelity::Same, ""),
    comfy("ipndm", None, Fidelity::Close, NO_A1111),
    comfy("ipndm_v", None, Fidelity::Close, NO_A1111),
    comfy("deis", None, Fidelity::Close, NO_A1111),
    comfy("res_multistep", None, Fidelity::Close, NO_A1111),
    comfy("res_multistep_cfg_pp", None, Fidelity::Close, NO_A1111),
    comfy("res_multistep_ancestral", None, Fidelity::Close, NO_A1111),
    comfy("res_multistep_ancestral_cfg_pp", None, Fidelity::Close, NO_A1111),
    comfy("gradient_estimation", None, Fidelity::Close, NO_A1111),
    comfy("gradient_estimation_cfg_pp", None, Fidelity::Close, NO_A1111),
    comfy("er_sde", None, Fidelity::Close, NO_A1111),
    comfy("seeds_2", None, Fidelity::Close, NO_A1111),
    comfy("seeds_3", None, Fidelity::Close, NO_A1111),
    comfy("sa_solver", None, Fidelity::Close, NO_A1111),
    comfy("sa_solver_pece", None, Fidelity::Close, NO_A1111),
    // `sampler_object`: ComfyUI's `ddim` is its Euler sampler; see `comfyui_pair`.
    comfy("ddim", Some("Euler"), Fidelity::Same, "ComfyUI's `ddim` runs its Euler sampler (`comfy/samplers.py` `sampler_object`)"),
    comfy("uni_pc", Some("UniPC"), Fidelity::Close, "A1111's UniPC spaces its timesteps itself; ComfyUI's follows the scheduler's sigmas"),
    comfy("uni_pc_bh2", Some("UniPC"), Fidelity::Close, "variant bh2 (A1111 setting `uni_pc_variant`)"),
];

/// ComfyUI `SCHEDULER_NAMES` (and Fooocus additions) with their A1111 schedule labels.
/// ComfyUI `normal` is A1111's `Normal`, a port of it (`sd_schedulers.py` `normal_scheduler`).
const COMFYUI_SCHEDULES: &[(&str, Option<&str>)] = &[
    ("normal", Some("Normal")),
    ("karras", Some("Karras")),
    ("exponential", Some("Exponential")),
    ("sgm_uniform", Some("SGM Uniform")),
    ("simple", Some("Simple")),
    ("ddim_uniform", Some("DDIM")),
    ("beta", Some("Beta")),
    ("linear_quadratic", None),
    ("kl_optimal", Some("KL Optimal")),
    // Fooocus `modules/flags.py` `KSAMPLER_SCHEDULERS` additions.
    ("align_your_steps", Some("Align Your Steps")),
    ("turbo", None),
    ("lcm", None),
    ("tcd", None),
    ("edm_playground_v2.5", None),
];

/// NovelAI `sampler` names (k-diffusion function names with `k_`), with A1111 labels.
/// InvokeAI 2.x wrote the same `k_` names (`k_dpmpp_2` for DPM++ 2M, `k_dpmpp_2_a` for
/// DPM++ 2S a).
const K_NAMES: &[(&str, Option<&str>)] = &[
    ("k_euler", Some("Euler")),
    ("k_euler_ancestral", Some("Euler a")),
    ("k_euler_a", Some("Euler a")),
    ("k_heun", Some("Heun")),
    ("k_lms", Some("LMS")),
    ("k_dpm_2", Some("DPM2")),
    ("k_dpm_2_ancestral", Some("DPM2 a")),
    ("k_dpm_2_a", Some("DPM2 a")),
    ("k_dpmpp_2s_ancestral", Some("DPM++ 2S a")),
    ("k_dpmpp_2s_a", Some("DPM++ 2S a")),
    ("k_dpmpp_2_a", Some("DPM++ 2S a")),
    ("k_dpmpp_2m", Some("DPM++ 2M")),
    ("k_dpmpp_2", Some("DPM++ 2M")),
    ("k_dpmpp_sde", Some("DPM++ SDE")),
    ("k_dpmpp_2m_sde", Some("DPM++ 2M SDE")),
    ("k_dpmpp_3m_sde", Some("DPM++ 3M SDE")),
    ("k_dpm_fast", Some("DPM fast")),
    ("k_dpm_adaptive", Some("DPM adaptive")),
    ("k_dpm_ad", Some("DPM adaptive")),
    ("ddim", Some("DDIM")),
    ("ddim_v3", Some("DDIM")),
    ("plms", Some("PLMS")),
    ("nai_smea", None),
    ("nai_smea_dyn", None),
];

/// NovelAI `noise_schedule` values with A1111 schedule labels.
const NOVELAI_SCHEDULES: &[(&str, &str)] = &[
    ("native", "Automatic"),
    ("karras", "Karras"),
    ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"),
];

/// InvokeAI `SCHEDULER_MAP` names (diffusers schedulers; `_k` means Karras sigmas).
const INVOKEAI_SCHEDULERS: &[(&str, Option<&str>)] = &[
    ("ddim", Some("DDIM")),
    ("ddpm", None),
    ("deis", None),
    ("lms", Some("LMS")),
    ("pndm", Some("PLMS")),
    ("heun", Some("Heun")),
    ("euler", Some("Euler")),
    ("euler_a", Some("Euler a")),
    ("kdpm_2", Some("DPM2")),
    ("kdpm_2_a", Some("DPM2 a")),
    // diffusers `DPMSolverSinglestepScheduler`: single-step, not ancestral.
    ("dpmpp_2s", None),
    ("dpmpp_sde", Some("DPM++ SDE")),
    ("dpmpp_2m", Some("DPM++ 2M")),
    ("dpmpp_2m_sde", Some("DPM++ 2M SDE")),
    // diffusers `DPMSolverMultistepScheduler` order 3: not A1111's SDE sampler.
    ("dpmpp_3m", None),
    ("unipc", Some("UniPC")),
    ("lcm", Some("LCM")),
    ("tcd", None),
];

/// A name folded for lookup: lower case, `++` as `pp`, spaces and dashes as `_`
/// (`DPM++ 2M Karras` → `dpmpp_2m_karras`, `Euler Ancestral` → `euler_ancestral`).
fn fold(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .replace("++", "pp")
        .replace(['+', ' ', '-'], "_")
}

/// A1111's label for a sampler label or name in any case.
fn a1111_label(name: &str) -> Option<&'static str> {
    let f = fold(name);
    A1111_SAMPLERS
        .iter()
        .map(|(l, _)| *l)
        .find(|l| *l == name.trim() || fold(l) == f)
}

/// A1111's schedule label for a schedule label, name or alias in any case.
fn a1111_schedule(name: &str) -> Option<&'static str> {
    let f = fold(name);
    if f == "sgmuniform" {
        return Some("SGM Uniform");
    }
    A1111_SCHEDULES
        .iter()
        .find(|(label, n)| fold(label) == f || *n == f)
        .map(|(label, _)| *label)
}

/// Splits an old-style label (`DPM++ 2M Karras`, `DPM++ 2M SDE Exponential`) into sampler and
/// schedule, taking the longest schedule that leaves a known sampler (as
/// `get_sampler_and_scheduler` does, but `Euler SGM Uniform` keeps its `SGM Uniform`).
fn split_a1111(label: &str) -> Option<(&'static str, Option<&'static str>)> {
    if let Some(l) = a1111_label(label) {
        return Some((l, None));
    }
    let label = label.trim();
    let mut best: Option<(&'static str, &'static str)> = None;
    for (sched_label, sched_name) in A1111_SCHEDULES {
        for option in [*sched_label, *sched_name] {
            if let Some(rest) = label.strip_suffix(option).and_then(|r| r.strip_suffix(' '))
                && let Some(s) = a1111_label(rest)
                && best.is_none_or(|(b, _)| s.len() < b.len())
            {
                best = Some((s, sched_label));
            }
        }
    }
    best.map(|(s, sched)| (s, Some(sched)))
}

/// Splits a folded ComfyUI-style name with a schedule suffix (`euler_ancestral_karras`, as
/// ComfyUI-SaveImageWithMetaData writes) into sampler and scheduler names.
fn split_comfy(folded: &str) -> Option<(&'static ComfyRow, &'static str)> {
    COMFYUI_SCHEDULES.iter().find_map(|(sched, _)| {
        let rest = folded.strip_suffix(sched)?.strip_suffix('_')?;
        COMFYUI_SAMPLERS
            .iter()
            .find(|r| r.comfy == rest)
            .map(|r| (r, *sched))
    })
}

/// Maps a sampler and schedule as an image of `source` states them to A1111's labels.
///
/// `source` picks the vocabulary tried first (A1111 labels; ComfyUI names for ComfyUI,
/// Fooocus and SwarmUI; `k_` names and `noise_schedule` for NovelAI; `SCHEDULER_MAP` names for
/// InvokeAI); the others are tried after it, since tools copy each other's names (A1111
/// extensions writing `euler_ancestral_karras`, Stability Matrix `Euler Ancestral Karras`).
///
/// An A1111 label without a schedule and no `Schedule type` comes from A1111 before 1.9,
/// when such a label meant the model's uniform sigmas: it maps to `Uniform` (timestep
/// samplers keep no schedule).
///
/// # Errors
/// [`Unmapped`] for a sampler or schedule that has no A1111 counterpart, or an unknown name.
pub fn to_a1111_sampler(
    source: Source,
    sampler: &str,
    scheduler: Option<&str>,
) -> Result<A1111Sampler, Unmapped> {
    let scheduler = scheduler.map(str::trim).filter(|s| !s.is_empty());
    let order: &[Vocabulary] = match source {
        Source::ComfyUi | Source::Fooocus | Source::SwarmUi => &[
            Vocabulary::ComfyUi,
            Vocabulary::A1111,
            Vocabulary::K,
            Vocabulary::InvokeAi,
        ],
        Source::NovelAi => &[
            Vocabulary::K,
            Vocabulary::A1111,
            Vocabulary::ComfyUi,
            Vocabulary::InvokeAi,
        ],
        Source::InvokeAi => &[
            Vocabulary::InvokeAi,
            Vocabulary::K,
            Vocabulary::A1111,
            Vocabulary::ComfyUi,
        ],
        Source::A1111 | Source::None => &[
            Vocabulary::A1111,
            Vocabulary::ComfyUi,
            Vocabulary::K,
            Vocabulary::InvokeAi,
        ],
    };
    for vocabulary in order {
        if let Some(result) = vocabulary.map(sampler, scheduler) {
            return result;
        }
    }
    Err(unmapped(
        "sampler",
        sampler,
        "not a name A1111, ComfyUI, NovelAI or InvokeAI uses",
    ))
}

#[derive(Debug, Clone, Copy)]
enum Vocabulary {
    A1111,
    ComfyUi,
    K,
    InvokeAi,
}

impl Vocabulary {
    /// `None` when the sampler name is not in this vocabulary.
    fn map(self, sampler: &str, scheduler: Option<&str>) -> Option<Result<A1111Sampler, Unmapped>> {
        match self {
            Self::A1111 => from_a1111(sampler, scheduler),
            Self::ComfyUi => from_comfyui(sampler, scheduler),
            Self::K => from_k(sampler, scheduler),
            Self::InvokeAi => from_invokeai(sampler, scheduler),
        }
    }
}

fn from_a1111(sampler: &str, scheduler: Option<&str>) -> Option<Result<A1111Sampler, Unmapped>> {
    let (label, suffix) = split_a1111(sampler)?;
    let mut notes = Vec::new();
    // The label's own schedule wins over `Schedule type` (`get_sampler_and_scheduler`).
    let schedule = match (suffix, scheduler) {
        (Some(s), _) => Some(s.to_owned()),
        (None, Some(s)) => match a1111_schedule(s) {
            Some(l) => Some(l.to_owned()),
            None => return Some(Err(unmapped("scheduler", s, "not an A1111 schedule type"))),
        },
        (None, None) if TIMESTEP_SAMPLERS.contains(&label) => None,
        (None, None) => {
            let automatic = A1111_SAMPLERS
                .iter()
                .find(|(l, _)| *l == label)
                .and_then(|(_, s)| *s);
            if let Some(a) = automatic {
                notes.push(format!(
                    "no `Schedule type`: before A1111 1.9 a label without a schedule meant the \
                     model's uniform sigmas (1.9 and later would use `{a}`)"
                ));
            }
            Some("Uniform".to_owned())
        }
    };
    Some(Ok(A1111Sampler {
        sampler: label.to_owned(),
        scheduler: schedule,
        fidelity: Fidelity::Same,
        notes,
    }))
}

fn comfy_schedule(name: &str) -> Result<&'static str, Unmapped> {
    let f = fold(name);
    match COMFYUI_SCHEDULES.iter().find(|(n, _)| *n == f) {
        Some((_, Some(label))) => Ok(label),
        Some((n, None)) => Err(unmapped(
            "scheduler",
            name,
            &format!("A1111 has no schedule like ComfyUI/Fooocus `{n}`"),
        )),
        None => a1111_schedule(name)
            .ok_or_else(|| unmapped("scheduler", name, "not a ComfyUI or A1111 scheduler")),
    }
}

fn from_comfyui(sampler: &str, scheduler: Option<&str>) -> Option<Result<A1111Sampler, Unmapped>> {
    let f = fold(sampler);
    // `sample_dpmpp_2m`: the k-diffusion function name, as older workflows store it.
    let bare = f.strip_prefix("sample_").unwrap_or(&f);
    let (row, suffix) = match COMFYUI_SAMPLERS.iter().find(|r| r.comfy == bare) {
        Some(r) => (r, None),
        None => {
            let (r, s) = split_comfy(bare)?;
            (r, Some(s))
        }
    };
    let Some(label) = row.a1111 else {
        return Some(Err(unmapped("sampler", sampler, row.note)));
    };
    let schedule_name = suffix.or(scheduler).unwrap_or("normal");
    let schedule = match comfy_schedule(schedule_name) {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    let mut notes = Vec::new();
    let mut fidelity = row.fidelity;
    let mut label = label;
    if !row.note.is_empty() {
        notes.push(row.note.to_owned());
    }
    if scheduler.is_none() && suffix.is_none() {
        notes.push("no scheduler stated: ComfyUI's default `normal` assumed".to_owned());
    }
    // ComfyUI seeds the per-step noise of ancestral and SDE samplers afresh from the seed
    // (`comfy/k_diffusion/sampling.py` `default_noise_sampler`, `BrownianTreeNoiseSampler`);
    // A1111 continues the initial noise's generator (`sd_samplers_common.TorchHijack`).
    if row.comfy.contains("ancestral") || row.comfy.contains("sde") {
        fidelity = Fidelity::Close;
        notes.push(
            "ComfyUI draws the per-step noise of this sampler from its own generator; \
             A1111 continues the initial noise's"
                .to_owned(),
        );
    }
    // ComfyUI `ddim` with `ddim_uniform` is the nearest thing to A1111's DDIM: the same
    // timesteps (`sigmas[1::steps]`), but the last step goes to sigma 0.
    let mut schedule = Some(schedule.to_owned());
    if row.comfy == "ddim" && schedule.as_deref() == Some("DDIM") {
        label = "DDIM";
        schedule = None;
        fidelity = Fidelity::Close;
        notes = vec![
            "ComfyUI `ddim` + `ddim_uniform` runs Euler on A1111 DDIM's timesteps; the last \
             step goes to sigma 0 instead of the first timestep"
                .to_owned(),
        ];
    } else if TIMESTEP_SAMPLERS.contains(&label) {
        schedule = None;
    }
    Some(Ok(A1111Sampler {
        sampler: label.to_owned(),
        scheduler: schedule,
        fidelity,
        notes,
    }))
}

fn from_k(sampler: &str, scheduler: Option<&str>) -> Option<Result<A1111Sampler, Unmapped>> {
    let f = fold(sampler);
    let (_, label) = K_NAMES.iter().find(|(n, _)| *n == f)?;
    let Some(label) = label else {
        return Some(Err(unmapped(
            "sampler",
            sampler,
            "NovelAI's SMEA samplers have no A1111 counterpart",
        )));
    };
    let mut notes = vec!["NovelAI's and InvokeAI 2's samplers run on their own servers and code; only the method is the same".to_owned()];
    let schedule = match scheduler {
        _ if TIMESTEP_SAMPLERS.contains(label) => None,
        None => Some("Automatic".to_owned()),
        Some(s) => {
            let f = fold(s);
            match NOVELAI_SCHEDULES.iter().find(|(n, _)| *n == f) {
                Some((n, l)) => {
                    if *n == "native" {
                        notes.push("NovelAI `native` is the model's own schedule".to_owned());
                    }
                    Some((*l).to_owned())
                }
                None => match a1111_schedule(s) {
                    Some(l) => Some(l.to_owned()),
                    None => {
                        return Some(Err(unmapped(
                            "scheduler",
                            s,
                            "not a NovelAI noise schedule",
                        )));
                    }
                },
            }
        }
    };
    Some(Ok(A1111Sampler {
        sampler: (*label).to_owned(),
        scheduler: schedule,
        fidelity: Fidelity::Close,
        notes,
    }))
}

fn from_invokeai(
    sampler: &str,
    _scheduler: Option<&str>,
) -> Option<Result<A1111Sampler, Unmapped>> {
    let f = fold(sampler);
    let (base, karras) = match f.strip_suffix("_k") {
        Some(b) => (b, true),
        None => (f.as_str(), false),
    };
    let (_, label) = INVOKEAI_SCHEDULERS.iter().find(|(n, _)| *n == base)?;
    let Some(label) = label else {
        return Some(Err(unmapped(
            "sampler",
            sampler,
            "InvokeAI's diffusers scheduler has no A1111 counterpart",
        )));
    };
    let schedule = if TIMESTEP_SAMPLERS.contains(label) {
        None
    } else if karras {
        Some("Karras".to_owned())
    } else {
        Some("Uniform".to_owned())
    };
    Some(Ok(A1111Sampler {
        sampler: (*label).to_owned(),
        scheduler: schedule,
        fidelity: Fidelity::Close,
        notes: vec![
            "InvokeAI runs diffusers schedulers, which space their timesteps their own way"
                .to_owned(),
        ],
    }))
}

/// Maps an A1111 sampler label (old-style `DPM++ 2M Karras` too) and "Schedule type" to
/// ComfyUI's `sampler_name` and `scheduler`.
///
/// "Automatic" (or no schedule) becomes the schedule A1111 uses for the sampler
/// (`DPM++ 2M` → `karras`, `Euler` → `normal`); `DDIM` becomes `ddim` + `ddim_uniform`.
///
/// # Errors
/// [`Unmapped`] for an unknown label, a sampler ComfyUI lacks (`PLMS`, `Restart`,
/// `DDIM CFG++`) or a schedule it lacks (`Uniform` maps to `normal`, which gives the same
/// sigmas; `Polyexponential` and `Align Your Steps` have no ComfyUI scheduler).
pub fn to_comfyui_sampler(
    sampler: &str,
    scheduler: Option<&str>,
) -> Result<ComfyUiSampler, Unmapped> {
    let (label, suffix) = split_a1111(sampler)
        .ok_or_else(|| unmapped("sampler", sampler, "not an A1111 sampler label"))?;
    if label == "DDIM" {
        return Ok(ComfyUiSampler {
            sampler_name: "ddim".to_owned(),
            scheduler: "ddim_uniform".to_owned(),
            fidelity: Fidelity::Close,
            notes: vec![
                "ComfyUI runs Euler on DDIM's timesteps; its last step goes to sigma 0".to_owned(),
            ],
        });
    }
    let row = COMFYUI_SAMPLERS
        .iter()
        .find(|r| r.a1111 == Some(label))
        .ok_or_else(|| unmapped("sampler", sampler, "ComfyUI has no such sampler"))?;
    let automatic = A1111_SAMPLERS
        .iter()
        .find(|(l, _)| *l == label)
        .and_then(|(_, s)| *s)
        .unwrap_or("Uniform");
    let schedule = match suffix.or_else(|| scheduler.and_then(a1111_schedule)) {
        Some("Automatic") | None => automatic,
        Some(s) => s,
    };
    if let Some(s) = scheduler
        && suffix.is_none()
        && a1111_schedule(s).is_none()
    {
        return Err(unmapped("scheduler", s, "not an A1111 schedule type"));
    }
    let comfy_schedule = match schedule {
        // k-diffusion `get_sigmas` = ComfyUI `normal` (both linear in t from the model's
        // largest to smallest sigma, interpolated in log sigma).
        "Uniform" | "Normal" => "normal",
        other => COMFYUI_SCHEDULES
            .iter()
            .find(|(_, l)| *l == Some(other))
            .map(|(n, _)| *n)
            .ok_or_else(|| unmapped("scheduler", other, "ComfyUI has no such scheduler"))?,
    };
    let notes = if row.fidelity == Fidelity::Close && !row.note.is_empty() {
        vec![row.note.to_owned()]
    } else {
        Vec::new()
    };
    Ok(ComfyUiSampler {
        sampler_name: row.comfy.to_owned(),
        scheduler: comfy_schedule.to_owned(),
        fidelity: row.fidelity,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a1111(source: Source, sampler: &str, scheduler: Option<&str>) -> (String, Option<String>) {
        let m = to_a1111_sampler(source, sampler, scheduler)
            .unwrap_or_else(|e| panic!("{sampler}: {e}"));
        (m.sampler, m.scheduler)
    }

    fn pair(s: &str, sched: Option<&str>) -> (String, Option<String>) {
        (s.to_owned(), sched.map(str::to_owned))
    }

    #[test]
    fn comfyui_names_map_to_a1111_labels() {
        let c = Source::ComfyUi;
        for (comfy_sampler, comfy_sched, label, sched) in [
            ("dpmpp_2m", "karras", "DPM++ 2M", Some("Karras")),
            ("euler_ancestral", "normal", "Euler a", Some("Normal")),
            ("euler", "sgm_uniform", "Euler", Some("SGM Uniform")),
            ("dpmpp_sde", "exponential", "DPM++ SDE", Some("Exponential")),
            ("dpmpp_sde_gpu", "karras", "DPM++ SDE", Some("Karras")),
            ("dpmpp_2m_sde", "karras", "DPM++ 2M SDE", Some("Karras")),
            ("dpmpp_2m_sde_gpu", "karras", "DPM++ 2M SDE", Some("Karras")),
            ("lms", "normal", "LMS", Some("Normal")),
            ("heun", "simple", "Heun", Some("Simple")),
            ("dpm_2", "karras", "DPM2", Some("Karras")),
            ("dpm_2_ancestral", "beta", "DPM2 a", Some("Beta")),
            ("dpmpp_2s_ancestral", "karras", "DPM++ 2S a", Some("Karras")),
            ("uni_pc", "normal", "UniPC", None),
            ("ddim", "ddim_uniform", "DDIM", None),
            ("ddim", "karras", "Euler", Some("Karras")),
            ("sample_dpmpp_2m", "normal", "DPM++ 2M", Some("Normal")),
        ] {
            assert_eq!(
                a1111(c, comfy_sampler, Some(comfy_sched)),
                pair(label, sched),
                "{comfy_sampler} + {comfy_sched}"
            );
        }
        let gpu = to_a1111_sampler(c, "dpmpp_2m_sde_gpu", Some("karras")).unwrap();
        assert_eq!(gpu.fidelity, Fidelity::Close);
        assert!(gpu.notes[0].contains("GPU"), "{:?}", gpu.notes);
        // Per-step noise comes from another generator in ComfyUI.
        let ancestral = to_a1111_sampler(c, "euler_ancestral", Some("karras")).unwrap();
        assert_eq!(ancestral.fidelity, Fidelity::Close);
        let same = to_a1111_sampler(c, "dpmpp_2m", Some("karras")).unwrap();
        assert_eq!((same.fidelity, same.notes.len()), (Fidelity::Same, 0));
    }

    #[test]
    fn a1111_labels_map_both_ways() {
        let a = Source::A1111;
        assert_eq!(
            a1111(a, "DPM++ 2M", Some("Karras")),
            pair("DPM++ 2M", Some("Karras"))
        );
        assert_eq!(
            a1111(a, "DPM++ 2M Karras", None),
            pair("DPM++ 2M", Some("Karras"))
        );
        assert_eq!(
            a1111(a, "DPM++ 2M SDE Exponential", None),
            pair("DPM++ 2M SDE", Some("Exponential"))
        );
        assert_eq!(
            a1111(a, "DPM++ 2M SDE Heun Karras", None),
            pair("DPM++ 2M SDE Heun", Some("Karras"))
        );
        assert_eq!(
            a1111(a, "Euler SGM Uniform", None),
            pair("Euler", Some("SGM Uniform"))
        );
        // The label's suffix wins over `Schedule type`, as in `get_sampler_and_scheduler`.
        assert_eq!(
            a1111(a, "DPM++ 2M Karras", Some("Exponential")),
            pair("DPM++ 2M", Some("Karras"))
        );
        // Before 1.9 `DPM++ 2M` without a schedule meant uniform sigmas.
        assert_eq!(
            a1111(a, "DPM++ 2M", None),
            pair("DPM++ 2M", Some("Uniform"))
        );
        assert_eq!(a1111(a, "DDIM", None), pair("DDIM", None));
        assert_eq!(
            a1111(a, "Euler", Some("Automatic")),
            pair("Euler", Some("Automatic"))
        );

        for (label, sched, comfy_sampler, comfy_sched) in [
            ("DPM++ 2M Karras", None, "dpmpp_2m", "karras"),
            ("DPM++ 2M", Some("Karras"), "dpmpp_2m", "karras"),
            ("DPM++ 2M", Some("Automatic"), "dpmpp_2m", "karras"),
            ("DPM++ 2M SDE", None, "dpmpp_2m_sde", "exponential"),
            ("Euler a", Some("Automatic"), "euler_ancestral", "normal"),
            ("Euler", Some("Uniform"), "euler", "normal"),
            ("Euler", Some("SGM Uniform"), "euler", "sgm_uniform"),
            ("DPM++ SDE", Some("Karras"), "dpmpp_sde", "karras"),
            ("DPM2 a Karras", None, "dpm_2_ancestral", "karras"),
            ("LMS", Some("Exponential"), "lms", "exponential"),
            ("Heun", None, "heun", "normal"),
            ("DDIM", None, "ddim", "ddim_uniform"),
            ("UniPC", None, "uni_pc", "normal"),
        ] {
            let c = to_comfyui_sampler(label, sched).unwrap();
            assert_eq!(
                (c.sampler_name.as_str(), c.scheduler.as_str()),
                (comfy_sampler, comfy_sched),
                "{label} {sched:?}"
            );
        }
    }

    #[test]
    fn comfyui_to_a1111_to_comfyui_round_trips() {
        for row in COMFYUI_SAMPLERS.iter().filter(|r| r.a1111.is_some()) {
            for (sched, label) in COMFYUI_SCHEDULES {
                if label.is_none() {
                    continue;
                }
                let a = to_a1111_sampler(Source::ComfyUi, row.comfy, Some(sched)).unwrap();
                let Ok(back) = to_comfyui_sampler(&a.sampler, a.scheduler.as_deref()) else {
                    // A1111 schedules ComfyUI lacks cannot come from ComfyUI.
                    panic!("{} {sched} → {a:?} has no way back", row.comfy);
                };
                // `_gpu` variants come back as the CPU sampler, `ddim` as `euler`, and the
                // timestep samplers with their fixed schedules.
                let expected_sampler = match row.comfy {
                    "ddim" if *sched != "ddim_uniform" => "euler",
                    s => s.strip_suffix("_gpu").unwrap_or(s),
                };
                if a.sampler == "UniPC" || a.sampler == "DDIM" {
                    continue;
                }
                assert_eq!(back.sampler_name, expected_sampler, "{} {sched}", row.comfy);
                assert_eq!(&back.scheduler, sched, "{} {sched}", row.comfy);
            }
        }
    }

    #[test]
    fn novelai_and_invokeai_names_map() {
        let n = Source::NovelAi;
        assert_eq!(
            a1111(n, "k_euler_ancestral", Some("karras")),
            pair("Euler a", Some("Karras"))
        );
        assert_eq!(
            a1111(n, "k_euler", Some("native")),
            pair("Euler", Some("Automatic"))
        );
        assert_eq!(
            a1111(n, "k_dpmpp_2m", None),
            pair("DPM++ 2M", Some("Automatic"))
        );
        assert_eq!(a1111(n, "ddim_v3", None), pair("DDIM", None));
        assert_eq!(
            to_a1111_sampler(n, "k_euler", None).unwrap().fidelity,
            Fidelity::Close
        );
        assert!(to_a1111_sampler(n, "nai_smea_dyn", None).is_err());

        let i = Source::InvokeAi;
        assert_eq!(a1111(i, "euler_a", None), pair("Euler a", Some("Uniform")));
        assert_eq!(
            a1111(i, "dpmpp_2m_k", None),
            pair("DPM++ 2M", Some("Karras"))
        );
        assert_eq!(a1111(i, "kdpm_2_a_k", None), pair("DPM2 a", Some("Karras")));
        assert_eq!(a1111(i, "k_lms", None), pair("LMS", Some("Automatic")));
        assert_eq!(a1111(i, "pndm", None), pair("PLMS", None));
        let e = to_a1111_sampler(i, "dpmpp_3m_k", None).unwrap_err();
        assert_eq!(e.name, "dpmpp_3m_k");
    }

    #[test]
    fn other_tools_spellings_are_recognised() {
        // ComfyUI-SaveImageWithMetaData writes `sampler_scheduler` into A1111 text.
        assert_eq!(
            a1111(Source::A1111, "euler_ancestral_karras", None),
            pair("Euler a", Some("Karras"))
        );
        // Stability Matrix writes ComfyUI samplers with display names.
        assert_eq!(
            a1111(Source::A1111, "Euler Ancestral Karras", None),
            pair("Euler a", Some("Karras"))
        );
        // Fooocus uses ComfyUI's names.
        assert_eq!(
            a1111(Source::Fooocus, "dpmpp_2m_sde_gpu", Some("karras")),
            pair("DPM++ 2M SDE", Some("Karras"))
        );
    }

    #[test]
    fn names_without_counterpart_say_why() {
        let e = to_a1111_sampler(Source::ComfyUi, "euler_cfg_pp", Some("normal")).unwrap_err();
        assert!(e.reason.contains("CFG++"), "{e}");
        let e = to_a1111_sampler(Source::ComfyUi, "euler", Some("linear_quadratic")).unwrap_err();
        assert_eq!((e.what, e.name.as_str()), ("scheduler", "linear_quadratic"));
        let e = to_a1111_sampler(Source::A1111, "Eular a", None).unwrap_err();
        assert_eq!(e.what, "sampler");
        assert!(to_comfyui_sampler("PLMS", None).is_err());
        assert!(to_comfyui_sampler("Euler", Some("Polyexponential")).is_err());
        assert!(to_comfyui_sampler("Euler", Some("Bogus")).is_err());
    }
}
