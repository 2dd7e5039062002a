//! `GET/POST /sdapi/v1/options` and `GET /sdapi/v1/cmd-flags`: A1111's settings that danlu acts
//! on, and the effective settings of one request (`override_settings`).

use crate::error::{ApiError, ApiResult};
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use danlu_diffusion::prompt::Emphasis;
use danlu_diffusion::rng::RngSource;
use serde_json::{Map, Value};

/// A1111 settings danlu reads, with A1111's defaults (`modules/shared_options.py`).
pub(crate) fn default_options() -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("sd_model_checkpoint", Value::Null);
    put("sd_checkpoint_hash", Value::Null);
    put("sd_vae", "Automatic".into());
    put("sd_vae_overrides_per_model_preferences", true.into());
    put("CLIP_stop_at_last_layers", 1.into());
    put("randn_source", "GPU".into());
    put("eta_ancestral", 1.0.into());
    put("eta_ddim", 0.0.into());
    put("eta_noise_seed_delta", 0.into());
    put("emphasis", "Original".into());
    put("samples_format", "png".into());
    put("live_previews_enable", true.into());
    put("live_preview_content", "Prompt".into());
    put("show_progress_every_n_steps", 1.into());
    put("sd_checkpoints_limit", 1.into());
    m
}

/// The settings one generation runs with: the server's options with `override_settings` on
/// top.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Effective {
    /// `sd_model_checkpoint`, when set.
    pub(crate) checkpoint: Option<String>,
    /// `sd_vae`: `Automatic`, `None` or a VAE file name.
    pub(crate) vae: String,
    /// `CLIP_stop_at_last_layers`.
    pub(crate) clip_skip: usize,
    /// `randn_source`.
    pub(crate) rng: RngSource,
    /// `eta_ancestral`.
    pub(crate) eta_ancestral: f64,
    /// `eta_ddim`.
    pub(crate) eta_ddim: f64,
    /// `eta_noise_seed_delta`.
    pub(crate) eta_noise_seed_delta: u64,
    /// `emphasis`.
    pub(crate) emphasis: Emphasis,
}

/// `randn_source`: A1111's `GPU` draws from the CUDA generator, which the NV generator
/// reproduces; `NV` names it; `CPU` is torch's CPU generator (`modules/rng.py`).
fn parse_randn_source(v: &str) -> Option<RngSource> {
    match v {
        "GPU" | "NV" => Some(RngSource::Nv),
        "CPU" => Some(RngSource::Cpu),
        _ => None,
    }
}

fn parse_emphasis(v: &str) -> Option<Emphasis> {
    match v {
        "None" => Some(Emphasis::None),
        "Ignore" => Some(Emphasis::Ignore),
        "Original" => Some(Emphasis::Original),
        "No norm" => Some(Emphasis::NoNorm),
        _ => None,
    }
}

/// Checks one setting's value; unknown keys pass (A1111 ignores them too).
pub(crate) fn check_option(key: &str, value: &Value) -> ApiResult<()> {
    let bad = |want: &str| {
        Err(ApiError::invalid(format!(
            "option `{key}`: {value} is not {want}"
        )))
    };
    match key {
        "sd_model_checkpoint" | "sd_vae" if !value.is_string() && !value.is_null() => {
            bad("a string")
        }
        "sd_vae" => match value.as_str() {
            Some(name) => crate::library::check_name("VAE", name),
            None => Ok(()),
        },
        "CLIP_stop_at_last_layers" => match value.as_u64() {
            Some(1..=12) => Ok(()),
            _ => bad("an integer from 1 to 12"),
        },
        "randn_source" => match value.as_str().and_then(parse_randn_source) {
            Some(_) => Ok(()),
            None => bad("`GPU`, `CPU` or `NV`"),
        },
        "emphasis" => match value.as_str().and_then(parse_emphasis) {
            Some(_) => Ok(()),
            None => bad("`None`, `Ignore`, `Original` or `No norm`"),
        },
        "eta_ancestral" | "eta_ddim" => match value.as_f64() {
            Some(x) if x.is_finite() && (0.0..=10.0).contains(&x) => Ok(()),
            _ => bad("a number from 0 to 10"),
        },
        "eta_noise_seed_delta" => match value.as_u64() {
            Some(_) => Ok(()),
            None => bad("a non-negative integer"),
        },
        _ => Ok(()),
    }
}

/// The effective settings of `options` with `overrides` on top (both already checked).
pub(crate) fn effective(
    options: &Map<String, Value>,
    overrides: Option<&Map<String, Value>>,
) -> ApiResult<Effective> {
    if let Some(o) = overrides {
        for (k, v) in o {
            check_option(k, v)?;
        }
    }
    let get = |k: &str| -> Option<&Value> {
        overrides
            .and_then(|o| o.get(k))
            .or_else(|| options.get(k))
            .filter(|v| !v.is_null())
    };
    Ok(Effective {
        checkpoint: get("sd_model_checkpoint")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        vae: get("sd_vae")
            .and_then(Value::as_str)
            .unwrap_or("Automatic")
            .to_owned(),
        clip_skip: get("CLIP_stop_at_last_layers")
            .and_then(Value::as_u64)
            .map_or(1, |v| v as usize),
        rng: get("randn_source")
            .and_then(Value::as_str)
            .and_then(parse_randn_source)
            .unwrap_or(RngSource::Nv),
        eta_ancestral: get("eta_ancestral").and_then(Value::as_f64).unwrap_or(1.0),
        eta_ddim: get("eta_ddim").and_then(Value::as_f64).unwrap_or(0.0),
        eta_noise_seed_delta: get("eta_noise_seed_delta")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        emphasis: get("emphasis")
            .and_then(Value::as_str)
            .and_then(parse_emphasis)
            .unwrap_or(Emphasis::Original),
    })
}

/// `GET /sdapi/v1/options`.
pub(crate) async fn get_options(State(state): State<Shared>) -> Json<Map<String, Value>> {
    Json(state.options_snapshot())
}

/// `POST /sdapi/v1/options`: checks every value, loads a newly chosen checkpoint (answering
/// its failure, the old choice kept), then stores the values. Answers `null` like A1111.
pub(crate) async fn set_options(
    State(state): State<Shared>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: Map<String, Value> = crate::sdapi::parse_json(&body)?;
    for (k, v) in &req {
        check_option(k, v)?;
    }
    let mut next = state.options_snapshot();
    for (k, v) in &req {
        next.insert(k.clone(), v.clone());
    }
    let changes_model = ["sd_model_checkpoint", "sd_vae"]
        .iter()
        .any(|k| req.contains_key(*k));
    if changes_model {
        let eff = effective(&next, None)?;
        let records = state.library.records();
        if eff.checkpoint.is_some() || !records.is_empty() {
            let spec = state.model_spec(&records, &eff)?;
            if let Some(spec) = spec {
                let out = state.engine.run(crate::engine::Work::Load(spec)).await?;
                if let crate::engine::Output::Loaded(info) = out {
                    next.insert("sd_checkpoint_hash".to_owned(), info.model_hash.into());
                }
            }
        }
    }
    state.set_options(next);
    Ok(Json(Value::Null))
}

/// `GET /sdapi/v1/cmd-flags`: the command-line settings, in A1111's names where one exists.
pub(crate) async fn cmd_flags(State(state): State<Shared>) -> Json<Map<String, Value>> {
    let c = &state.config;
    let root = &state.library.root;
    let folder = |k: danlu_types::Kind| -> Value {
        root.folder(k)
            .map_or(Value::Null, |p| p.display().to_string().into())
    };
    let mut m = Map::new();
    m.insert("data_dir".into(), root.path.display().to_string().into());
    m.insert("ckpt_dir".into(), folder(danlu_types::Kind::Checkpoint));
    m.insert("vae_dir".into(), folder(danlu_types::Kind::Vae));
    m.insert("lora_dir".into(), folder(danlu_types::Kind::Lora));
    m.insert(
        "embeddings_dir".into(),
        folder(danlu_types::Kind::Embedding),
    );
    m.insert(
        "hypernetwork_dir".into(),
        folder(danlu_types::Kind::Hypernetwork),
    );
    m.insert("listen".into(), c.listen.into());
    m.insert("server_name".into(), c.host.to_string().into());
    m.insert("port".into(), c.port.into());
    m.insert("api".into(), true.into());
    m.insert("nowebui".into(), false.into());
    // A1111's device flags: `--use-cpu all`, `--device-id N`, `--no-half`.
    let gpu = match c.device {
        danlu_generate::DeviceChoice::Cpu => None,
        danlu_generate::DeviceChoice::Cuda(n) | danlu_generate::DeviceChoice::Metal(n) => Some(n),
        danlu_generate::DeviceChoice::Auto => {
            (danlu_diffusion::device::compiled_backends().len() > 1).then_some(0)
        }
    };
    let use_cpu: Vec<Value> = match gpu {
        None => vec!["all".into()],
        Some(_) => Vec::new(),
    };
    m.insert("use_cpu".into(), use_cpu.into());
    m.insert("device_id".into(), gpu.map(|n| n.to_string()).into());
    m.insert(
        "no_half".into(),
        (gpu.is_none() || c.dtype == Some(candle_core::DType::F32)).into(),
    );
    // Only whether credentials are set; never the credentials.
    m.insert("api_auth".into(), (!c.auth.is_empty()).into());
    m.insert("insecure".into(), c.insecure.into());
    m.insert("body_limit".into(), c.body_limit.into());
    m.insert("device".into(), "cpu".into());
    Json(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_randn_source_is_the_nv_generator() {
        let mut o = default_options();
        assert_eq!(effective(&o, None).unwrap().rng, RngSource::Nv);
        o.insert("randn_source".into(), "CPU".into());
        assert_eq!(effective(&o, None).unwrap().rng, RngSource::Cpu);
        let mut over = Map::new();
        over.insert("randn_source".into(), "NV".into());
        over.insert("CLIP_stop_at_last_layers".into(), 2.into());
        let e = effective(&o, Some(&over)).unwrap();
        assert_eq!((e.rng, e.clip_skip), (RngSource::Nv, 2));
    }

    #[test]
    fn bad_option_values_are_refused() {
        assert!(check_option("CLIP_stop_at_last_layers", &Value::from(0)).is_err());
        assert!(check_option("CLIP_stop_at_last_layers", &Value::from("2")).is_err());
        assert!(check_option("randn_source", &Value::from("TPU")).is_err());
        assert!(check_option("sd_vae", &Value::from("../x.pt")).is_err());
        assert!(check_option("eta_ddim", &Value::from(f64::MAX)).is_err());
        assert!(check_option("something_else", &Value::from([1, 2])).is_ok());
    }
}
