//! `GET /sdapi/v1/samplers`, `/schedulers` and `/upscalers`.

use axum::Json;
use danlu_diffusion::sampling::{SAMPLERS, Scheduler};
use serde::Serialize;
use std::collections::BTreeMap;

/// A1111 `SamplerItem`.
#[derive(Debug, Serialize)]
pub(crate) struct SamplerItem {
    name: &'static str,
    aliases: Vec<&'static str>,
    /// A1111 `options`: string values (`dict[str, str]`).
    options: BTreeMap<&'static str, String>,
}

/// The sampler table in A1111's order and shape.
pub(crate) fn sampler_items() -> Vec<SamplerItem> {
    SAMPLERS
        .iter()
        .map(|s| {
            let mut options = BTreeMap::new();
            if let Some(sch) = s.scheduler_option {
                options.insert("scheduler", sch.name().to_owned());
            }
            if s.discard_penultimate_sigma {
                options.insert("discard_next_to_last_sigma", "True".to_owned());
            }
            if s.brownian_noise {
                options.insert("brownian_noise", "True".to_owned());
            }
            SamplerItem {
                name: s.label,
                aliases: s.aliases.to_vec(),
                options,
            }
        })
        .collect()
}

/// `GET /sdapi/v1/samplers`.
pub(crate) async fn samplers() -> Json<Vec<SamplerItem>> {
    Json(sampler_items())
}

/// A1111 `SchedulerItem`.
#[derive(Debug, Serialize)]
pub(crate) struct SchedulerItem {
    name: &'static str,
    label: &'static str,
    aliases: Option<Vec<&'static str>>,
    default_rho: f64,
    need_inner_model: bool,
}

/// `GET /sdapi/v1/schedulers` (A1111 `modules/sd_schedulers.py`: rho 7 for Karras, 1 for
/// polyexponential, -1 where there is none; uniform and SGM uniform need the model's sigmas).
pub(crate) async fn schedulers() -> Json<Vec<SchedulerItem>> {
    Json(
        Scheduler::ALL
            .iter()
            .map(|s| SchedulerItem {
                name: s.name(),
                label: s.label(),
                aliases: matches!(s, Scheduler::SgmUniform).then(|| vec!["SGMUniform"]),
                default_rho: match s {
                    Scheduler::Karras => 7.0,
                    Scheduler::Polyexponential => 1.0,
                    _ => -1.0,
                },
                need_inner_model: matches!(s, Scheduler::Uniform | Scheduler::SgmUniform),
            })
            .collect(),
    )
}

/// A1111 `UpscalerItem`.
#[derive(Debug, Serialize)]
pub(crate) struct UpscalerItem {
    name: &'static str,
    model_name: Option<String>,
    model_path: Option<String>,
    model_url: Option<String>,
    scale: f64,
}

/// `GET /sdapi/v1/upscalers`: only A1111's `None` entry (danlu runs no upscaler yet).
pub(crate) async fn upscalers() -> Json<Vec<UpscalerItem>> {
    Json(vec![UpscalerItem {
        name: "None",
        model_name: None,
        model_path: None,
        model_url: None,
        scale: 4.0,
    }])
}
