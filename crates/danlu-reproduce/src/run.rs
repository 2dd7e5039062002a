//! Turning a plan into a `danlu-generate` job, running it, and comparing the result.

use crate::plan::{Plan, Status, engine_sampler, rng_source};
use crate::{Error, Result};
use danlu_diffusion::pipeline::{ProgressFn, Request};
use danlu_diffusion::prompt::Emphasis;
use danlu_generate::{Generated, Job, KnownHashes, LoadedModel, ModelSpec, VaeChoice};
use danlu_pnginfo::GenerationParams;
use danlu_types::Reporter;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// The model spec and job a ready plan runs.
///
/// # Errors
/// [`Error::Blocked`] when the plan is not ready.
pub fn to_job(plan: &Plan) -> Result<(ModelSpec, Job)> {
    let blocked = |reason: &str| Error::Blocked {
        image: plan.image.clone(),
        reasons: if plan.blockers.is_empty() {
            vec![reason.to_owned()]
        } else {
            plan.blockers.clone()
        },
    };
    if !plan.is_ready() {
        return Err(blocked(""));
    }
    let checkpoint = plan
        .checkpoint
        .path
        .as_deref()
        .ok_or_else(|| blocked("no checkpoint"))?;
    let a1111 = plan
        .sampler
        .a1111
        .as_ref()
        .ok_or_else(|| blocked("no sampler"))?;
    let (sampler, scheduler) = engine_sampler(a1111).map_err(|e| blocked(&e))?;
    let seed = plan.settings.seed.ok_or_else(|| blocked("no seed"))?;
    let mut spec = ModelSpec::new(checkpoint);
    spec.known_hashes = KnownHashes {
        checkpoint: plan.checkpoint.autov2.clone(),
        vae: None,
    };
    if let Some(vae) = &plan.vae
        && vae.status == Status::Found
        && let Some(path) = &vae.path
    {
        spec.vae = VaeChoice::File(PathBuf::from(path));
        spec.known_hashes.vae = vae.autov2.clone();
    }
    let s = &plan.settings;
    let request = Request {
        prompt: s.prompt.clone(),
        negative_prompt: s.negative_prompt.clone(),
        steps: s.steps,
        cfg_scale: s.cfg_scale,
        sampler,
        scheduler,
        seed,
        variation: match (s.variation_seed, s.variation_strength) {
            (Some(sub), Some(strength)) if strength != 0.0 => Some((sub, strength)),
            _ => None,
        },
        width: s.width,
        height: s.height,
        batch_size: 1,
        n_iter: 1,
        clip_skip: s.clip_skip,
        rng: rng_source(&s.rng),
        eta: s.eta,
        eta_noise_seed_delta: s.eta_noise_seed_delta,
        emphasis: match s.emphasis.as_deref() {
            Some("No norm") => Emphasis::NoNorm,
            Some("Ignore") => Emphasis::Ignore,
            Some("None") => Emphasis::None,
            _ => Emphasis::Original,
        },
        preview: false,
    };
    Ok((
        spec,
        Job {
            request,
            img2img: None,
        },
    ))
}

/// A regenerated image and how its parameters compare with the source's.
#[derive(Debug, Clone)]
pub struct Reproduced {
    /// The new image (pixels, parameters, PNG bytes).
    pub generated: Generated,
    /// One row per supported field.
    pub comparison: Vec<FieldComparison>,
    /// What the engine said about the adapters (tags naming nothing, files it could not use).
    pub warnings: Vec<String>,
}

impl Reproduced {
    /// Whether every compared field is equal.
    pub fn is_equal(&self) -> bool {
        self.comparison.iter().all(|c| c.equal)
    }
}

/// One field of the source image against the new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldComparison {
    /// The field (`contracts.md` `pnginfo` name, or the A1111 key for `extra` ones).
    pub field: String,
    /// The value as the source image states it.
    pub source: Option<String>,
    /// What the new image must record to match (the source's value in A1111's words).
    pub expected: Option<String>,
    /// What the new image records.
    pub reproduced: Option<String>,
    /// Whether `expected` equals `reproduced`.
    pub equal: bool,
}

/// Loads the plan's model and generates.
///
/// # Errors
/// [`Error::Blocked`] when the plan is not ready, [`Error::Generate`] when loading or
/// generating fails.
pub fn generate(
    plan: &Plan,
    source: &GenerationParams,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
    progress: &mut ProgressFn<'_>,
) -> Result<Reproduced> {
    let (spec, _) = to_job(plan)?;
    let checkpoint = spec.checkpoint.clone();
    let mut model =
        LoadedModel::load(spec, reporter, cancel).map_err(|source| Error::Generate {
            checkpoint,
            source: Box::new(source),
        })?;
    generate_with(&mut model, plan, source, reporter, cancel, progress)
}

/// Generates with a model already loaded (the server keeps one); the model should be the
/// plan's checkpoint and VAE. Its adapter folders are set to the plan's
/// ([`Plan::adapter_folders`]) and the prompt's LoRAs, embeddings and hypernetworks applied.
///
/// # Errors
/// As [`generate`].
pub fn generate_with(
    model: &mut LoadedModel,
    plan: &Plan,
    source: &GenerationParams,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
    progress: &mut ProgressFn<'_>,
) -> Result<Reproduced> {
    let (_, job) = to_job(plan)?;
    let checkpoint = model.spec.checkpoint.clone();
    let err = |source| Error::Generate {
        checkpoint: checkpoint.clone(),
        source: Box::new(source),
    };
    let folders = plan.adapter_folders();
    let mut warnings = model.set_adapter_folders(folders);
    let applied = model.apply_adapters(&job, reporter, cancel).map_err(err)?;
    warnings.extend(applied.warnings);
    let generated = model
        .generate(&job, progress)
        .map_err(err)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Blocked {
            image: plan.image.clone(),
            reasons: vec!["the engine returned no image".to_owned()],
        })?;
    let comparison = compare(plan, source, &generated.params);
    Ok(Reproduced {
        generated,
        comparison,
        warnings,
    })
}

/// Compares the fields the engine reproduces: prompts, seed, size, steps, CFG, sampler and
/// schedule (in A1111's words), clip skip, checkpoint and VAE (name and AutoV2), RNG, ENSD,
/// variation seed and strength, eta.
pub fn compare(
    plan: &Plan,
    source: &GenerationParams,
    new: &GenerationParams,
) -> Vec<FieldComparison> {
    let mut rows = Vec::new();
    let mut row =
        |field: &str, source: Option<String>, expected: Option<String>, new: Option<String>| {
            let equal = expected == new;
            rows.push(FieldComparison {
                field: field.to_owned(),
                source,
                expected,
                reproduced: new,
                equal,
            });
        };
    let s = &plan.settings;
    let same = |v: Option<String>| (v.clone(), v);
    let (a, b) = same(Some(source.prompt.clone()));
    row("prompt", a, b, Some(new.prompt.clone()));
    let (a, b) = same(Some(source.negative_prompt.clone()));
    row("negative_prompt", a, b, Some(new.negative_prompt.clone()));
    let (a, b) = same(source.seed.map(|v| v.to_string()));
    row("seed", a, b, new.seed.map(|v| v.to_string()));
    let size = |w: Option<u32>, h: Option<u32>| w.zip(h).map(|(w, h)| format!("{w}x{h}"));
    row(
        "size",
        size(source.width, source.height),
        Some(format!("{}x{}", s.width, s.height)),
        size(new.width, new.height),
    );
    row(
        "steps",
        source.steps.map(|v| v.to_string()),
        Some(s.steps.to_string()),
        new.steps.map(|v| v.to_string()),
    );
    // The engine holds CFG as f32: compare at its precision.
    let cfg = |v: f64| format!("{}", v as f32);
    row(
        "cfg_scale",
        source.cfg_scale.map(|v| v.to_string()),
        Some(cfg(f64::from(s.cfg_scale))),
        new.cfg_scale.map(cfg),
    );
    row(
        "sampler",
        source.sampler.clone(),
        plan.sampler.engine_sampler.clone(),
        new.sampler.clone(),
    );
    row(
        "scheduler",
        source.scheduler.clone(),
        plan.sampler.engine_scheduler.clone(),
        new.scheduler.clone(),
    );
    row(
        "clip_skip",
        source.clip_skip.map(|v| v.to_string()),
        Some(s.clip_skip.to_string()),
        Some(new.clip_skip.unwrap_or(1).max(1).to_string()),
    );
    row(
        "model",
        source.model.clone(),
        plan.checkpoint
            .path
            .as_deref()
            .map(crate::library::model_stem),
        new.model.clone(),
    );
    row(
        "model_hash",
        source.model_hash.clone(),
        plan.checkpoint.autov2.clone(),
        new.model_hash.clone(),
    );
    if let Some(vae) = &plan.vae {
        row(
            "vae",
            source.vae.clone(),
            vae.path.as_deref().and_then(|p| {
                std::path::Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            }),
            new.vae.clone(),
        );
        row(
            "vae_hash",
            source.vae_hash.clone(),
            vae.autov2.clone(),
            new.vae_hash.clone(),
        );
    }
    // LoRAs as `name:weight`, with the hash when the source gives one; the same for
    // embeddings and hypernetworks, for those the plan applies.
    let applied_loras: Vec<&crate::Resource> = plan.loras.iter().filter(|r| r.applied).collect();
    if !applied_loras.is_empty() || !new.loras.is_empty() {
        let with_hash = source.loras.iter().any(|l| l.hash.is_some());
        let list = |loras: &[danlu_pnginfo::Lora]| {
            let items: Vec<String> = loras
                .iter()
                .map(|l| {
                    let hash = match (&l.hash, with_hash) {
                        (Some(h), true) => format!(" {}", h.to_ascii_lowercase()),
                        _ => String::new(),
                    };
                    // The engine holds multipliers as f32: compare at its precision.
                    format!("{}:{}{hash}", l.name, l.weight as f32)
                })
                .collect();
            items.join(", ")
        };
        let expected: Vec<danlu_pnginfo::Lora> = source
            .loras
            .iter()
            .filter(|l| {
                applied_loras
                    .iter()
                    .any(|r| r.name.as_deref() == Some(&l.name))
            })
            .cloned()
            .collect();
        row(
            "loras",
            Some(list(&source.loras)),
            Some(list(&expected)),
            Some(list(&new.loras)),
        );
    }
    let applied_embeddings: Vec<&crate::Resource> =
        plan.embeddings.iter().filter(|r| r.applied).collect();
    if !applied_embeddings.is_empty() || !new.embeddings.is_empty() {
        let names = |v: Vec<String>| {
            let mut v = v;
            v.sort();
            v.dedup();
            v.join(", ")
        };
        row(
            "embeddings",
            Some(names(
                source.embeddings.iter().map(|e| e.name.clone()).collect(),
            )),
            Some(names(
                applied_embeddings
                    .iter()
                    .filter_map(|r| r.name.clone())
                    .collect(),
            )),
            Some(names(
                new.embeddings.iter().map(|e| e.name.clone()).collect(),
            )),
        );
    }
    let key = |p: &GenerationParams, k: &str| p.extra.get(k).cloned();
    if let Some(h) = plan.hypernetworks.iter().find(|r| r.applied) {
        row(
            "Hypernet",
            key(source, "Hypernet"),
            h.name.clone(),
            key(new, "Hypernet"),
        );
    }
    row(
        "RNG",
        key(source, "RNG"),
        Some(s.rng.clone()),
        key(new, "RNG"),
    );
    // A1111 writes these only when they apply; compare when either side has them.
    for (k, expected) in [
        (
            "ENSD",
            (s.eta_noise_seed_delta != 0).then(|| s.eta_noise_seed_delta.to_string()),
        ),
        ("Variation seed", s.variation_seed.map(|v| v.to_string())),
        (
            "Variation seed strength",
            s.variation_strength.map(|v| v.to_string()),
        ),
    ] {
        if key(source, k).is_some() || key(new, k).is_some() {
            row(k, key(source, k), expected, key(new, k));
        }
    }
    rows
}
