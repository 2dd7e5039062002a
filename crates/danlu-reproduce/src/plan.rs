//! The plan: what an image needs, what the library has, and what cannot be reproduced.

use crate::library::{Library, MatchedBy, model_stem};
use danlu_diffusion::adapters::AdapterFolders;
use danlu_diffusion::rng::RngSource;
use danlu_diffusion::sampling::{SamplerKind, Scheduler, parse_sampler_name};
use danlu_pnginfo::{A1111Sampler, GenerationParams, Source, to_a1111_sampler};
use danlu_types::{Base, Kind};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Civitai's lookup of a model version by any of its file hashes.
pub const CIVITAI_BY_HASH: &str = "https://civitai.com/api/v1/model-versions/by-hash/";

/// Civitai's model search, for files an image names without a hash.
pub const CIVITAI_SEARCH: &str = "https://civitai.com/search/models?query=";

/// Everything needed to regenerate an image, resolved against a library.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The image, as given.
    pub image: String,
    /// The tool that wrote its parameters.
    pub source: Source,
    /// The library root searched, if any.
    pub root: Option<String>,
    /// The checkpoint.
    pub checkpoint: Resource,
    /// The external VAE the image names; `None`: the checkpoint's own.
    pub vae: Option<Resource>,
    /// LoRAs (`Lora hashes`, `<lora:...>` tags, ComfyUI LoRA loaders).
    pub loras: Vec<Resource>,
    /// Textual-inversion embeddings (`TI hashes`, and library embeddings named in a prompt).
    pub embeddings: Vec<Resource>,
    /// Hypernetworks (`<hypernet:...>` tags, `Hypernet`).
    pub hypernetworks: Vec<Resource>,
    /// The sampler and schedule, as stated and as the engine runs them.
    pub sampler: SamplerPlan,
    /// Prompts, seeds, size and the other numbers.
    pub settings: Settings,
    /// Parameters of the image that the engine does not reproduce, each named.
    pub not_reproduced: Vec<NotReproduced>,
    /// Assumptions made (defaults for unstated values, the RNG source chosen).
    pub notes: Vec<String>,
    /// Why nothing can be generated; empty when the plan can run.
    pub blockers: Vec<String>,
}

impl Plan {
    /// Whether the plan can be generated (nothing needed is missing or unsupported).
    pub fn is_ready(&self) -> bool {
        self.blockers.is_empty()
    }

    /// The folders of the LoRAs, embeddings and hypernetworks the plan applies (the engine
    /// finds them there by name, as A1111 does).
    pub fn adapter_folders(&self) -> AdapterFolders {
        let folders = |list: &[Resource]| {
            let mut dirs: Vec<PathBuf> = list
                .iter()
                .filter(|r| r.applied)
                .filter_map(|r| Some(Path::new(r.path.as_deref()?).parent()?.to_path_buf()))
                .collect();
            dirs.sort();
            dirs.dedup();
            dirs
        };
        // Files whose stem differs from the image's name are applied under that name.
        let aliases = |list: &[Resource]| {
            list.iter()
                .filter(|r| r.applied)
                .filter_map(|r| {
                    let name = r.name.clone()?;
                    let path = r.path.as_deref()?;
                    (model_stem(path) != name).then(|| (name, PathBuf::from(path)))
                })
                .collect::<Vec<_>>()
        };
        AdapterFolders {
            lora: folders(&self.loras),
            embeddings: folders(&self.embeddings),
            hypernetworks: folders(&self.hypernetworks),
            aliases: danlu_diffusion::adapters::Aliases {
                lora: aliases(&self.loras),
                embeddings: aliases(&self.embeddings),
                hypernetworks: aliases(&self.hypernetworks),
            },
        }
    }
}

/// A file the image was made with.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    /// What it is.
    pub kind: Kind,
    /// Its name as the image states it.
    pub name: Option<String>,
    /// Its hash as the image states it.
    pub hash: Option<String>,
    /// Its weight (LoRAs, hypernetworks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Whether the library has it.
    pub status: Status,
    /// The file found.
    pub path: Option<String>,
    /// How it was found.
    pub matched_by: Option<MatchedBy>,
    /// The found file's AutoV2 hash (what a new image records).
    pub autov2: Option<String>,
    /// The found file's base model family.
    pub base: Option<Base>,
    /// Whether the generation uses it (`false`: missing; a file with another stem is applied
    /// under the image's name).
    pub applied: bool,
    /// Where to get a missing file.
    pub lookup: Option<Lookup>,
    /// A caveat.
    pub note: Option<String>,
}

/// Whether a needed file is in the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A file was found.
    Found,
    /// No file was found.
    Missing,
}

/// How to find and fetch a missing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// The hash to look up on Civitai, when the image gives one.
    pub hash: Option<String>,
    /// Civitai's API URL for that hash (its answer has `modelId` and `id`, the version).
    pub civitai_url: Option<String>,
    /// The command that fetches it once the version id is known.
    pub download: String,
    /// The command that writes Civitai metadata beside it once downloaded.
    pub civitai_lookup: String,
    /// A Civitai search for its name, when the image gives no hash.
    pub search_url: Option<String>,
}

/// The sampler, as the image states it and as the engine runs it.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerPlan {
    /// The sampler as stated.
    pub stated: Option<String>,
    /// The schedule as stated.
    pub stated_scheduler: Option<String>,
    /// A1111's names for them.
    pub a1111: Option<A1111Sampler>,
    /// The engine's sampler label (what a new image records).
    pub engine_sampler: Option<String>,
    /// The engine's schedule label ("Automatic" resolved to the sampler's own).
    pub engine_scheduler: Option<String>,
    /// Why it cannot be mapped or run.
    pub error: Option<String>,
}

/// The numbers and texts of a generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// The prompt (extra-network tags included, as A1111 writes it).
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// The seed.
    pub seed: Option<u64>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Sampling steps.
    pub steps: usize,
    /// CFG scale.
    pub cfg_scale: f32,
    /// Clip skip (1: the last layer).
    pub clip_skip: usize,
    /// Denoising strength, when the image states one.
    pub denoising_strength: Option<f64>,
    /// `CPU` or `NV`.
    pub rng: String,
    /// A1111 "Eta noise seed delta".
    pub eta_noise_seed_delta: u64,
    /// A1111 "Variation seed".
    pub variation_seed: Option<u64>,
    /// A1111 "Variation seed strength".
    pub variation_strength: Option<f32>,
    /// Ancestral/SDE eta (A1111 "Eta") or DDIM eta ("Eta DDIM").
    pub eta: Option<f64>,
    /// A1111 "Emphasis".
    pub emphasis: Option<String>,
}

/// A parameter the engine does not reproduce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReproduced {
    /// The feature (`hires fix`, `ADetailer`, `ControlNet`, `LoRA`, ...).
    pub feature: String,
    /// The key as the image stores it.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// Keys the plan uses, or that only describe the file (versions, hashes, container tags).
const HANDLED_KEYS: &[&str] = &[
    "RNG",
    "ENSD",
    "Eta",
    "Eta DDIM",
    "Variation seed",
    "Variation seed strength",
    "Emphasis",
    "Schedule type",
    "Version",
    "version",
    "app_id",
    "app_version",
    "swarm_version",
    "Lora hashes",
    "TI hashes",
    "Hashes",
    "Hypernet",
    "Hypernet hash",
    "Hypernet strength",
    "Civitai resources",
    "Civitai metadata",
    "Created Date",
    "Software",
    "software",
    "Title",
    "Description",
    "Source",
    "Comment",
    "Artist",
    "DocumentName",
    "ImageDescription",
    "Generation time",
    "signed_hash",
    "parameters-json",
    "smproj",
    "metadata_scheme",
    "fooocus_scheme",
    "comfyui_samplers",
    "sui_extra_data",
    "App",
    "Operations",
    "Pipeline",
    "n_samples",
    "stream",
    "request_type",
    "type",
    "generation_mode",
    "rand_device",
    "model",
    "performance",
    "full_prompt",
    "full_negative_prompt",
    "v4_prompt",
    "v4_negative_prompt",
    "extra_passthrough_testing",
    "aspectratio",
    "automaticvae",
    "start_step",
];

/// Values that mean a feature was off.
const NEUTRAL_VALUES: &[&str] = &[
    "", "false", "False", "0", "0.0", "None", "none", "[]", "{}", "null", "1.0", "1",
];

/// The feature a key belongs to (for grouping), by A1111's and other tools' key names.
fn feature_of(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let rules: &[(&str, &str)] = &[
        ("hires", "hires fix"),
        ("adetailer", "ADetailer"),
        ("controlnet", "ControlNet"),
        ("refiner", "refiner"),
        ("rp ", "Regional Prompter"),
        ("face restoration", "face restoration"),
        ("postprocessing", "postprocessing"),
        ("tiling", "tiling"),
        ("seamless", "tiling"),
        ("ipadapter", "IP-Adapter"),
        ("ip_adapter", "IP-Adapter"),
        ("reference_", "NovelAI vibe transfer"),
        ("cfg_rescale", "CFG rescale"),
        ("dynamic_thresholding", "dynamic thresholding"),
        ("styles", "styles"),
        ("prompt_expansion", "Fooocus prompt expansion"),
        ("sharpness", "Fooocus sharpness"),
        ("adm_guidance", "Fooocus ADM guidance"),
        ("seed resize", "seed resize"),
        ("token merging", "token merging"),
        ("sampler sigma", "SD.Next sampler sigma"),
    ];
    if lower == "sm" || lower == "sm_dyn" {
        return "NovelAI SMEA".to_owned();
    }
    rules
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map_or_else(|| key.to_owned(), |(_, f)| (*f).to_owned())
}

/// Builds the plan for an image's parameters against an optional library.
pub fn plan(image: &str, params: &GenerationParams, library: Option<&Library>) -> Plan {
    let mut notes = Vec::new();
    let mut blockers = Vec::new();
    let mut not_reproduced = Vec::new();

    if params.source == Source::None {
        blockers.push("the image holds no generation parameters".to_owned());
    }

    // Checkpoint.
    let mut checkpoint = resolve(
        library,
        Kind::Checkpoint,
        &[Kind::Checkpoint, Kind::DiffusionModel],
        params.model.as_deref(),
        params.model_hash.as_deref(),
        None,
    );
    checkpoint.applied = checkpoint.status == Status::Found;
    if checkpoint.status == Status::Missing {
        blockers.push(format!(
            "checkpoint {} is not in the library",
            describe(&checkpoint)
        ));
    } else if let Some(base) = checkpoint.base
        && !matches!(base, Base::Sd1 | Base::Sd2 | Base::Unknown)
    {
        blockers.push(format!(
            "checkpoint `{}` is {}; the engine runs SD 1.x and 2.x",
            checkpoint.path.as_deref().unwrap_or_default(),
            base.as_str()
        ));
    }

    // VAE: only when the image names an external one.
    let vae = (params.vae.is_some() || params.vae_hash.is_some()).then(|| {
        let mut v = resolve(
            library,
            Kind::Vae,
            &[Kind::Vae],
            params.vae.as_deref(),
            params.vae_hash.as_deref(),
            None,
        );
        v.applied = v.status == Status::Found;
        if v.status == Status::Missing {
            blockers.push(format!("VAE {} is not in the library", describe(&v)));
        }
        v
    });

    // LoRAs, embeddings, hypernetworks: the engine finds them by file stem in their folders
    // (A1111 `networks.available_networks`), so a file found under another name cannot be
    // applied.
    let mut loras: Vec<Resource> = params
        .loras
        .iter()
        .map(|l| {
            resolve(
                library,
                Kind::Lora,
                &[Kind::Lora],
                Some(&l.name),
                l.hash.as_deref(),
                Some(l.weight),
            )
        })
        .collect();
    let mut embeddings = embeddings(params, library);
    let mut hypernetworks: Vec<Resource> = hypernetwork_tags(params)
        .into_iter()
        .map(|(name, weight, hash)| {
            resolve(
                library,
                Kind::Hypernetwork,
                &[Kind::Hypernetwork],
                Some(&name),
                hash.as_deref(),
                Some(weight),
            )
        })
        .collect();
    for (feature, list) in [
        ("LoRA", &mut loras),
        ("embedding", &mut embeddings),
        ("hypernetwork", &mut hypernetworks),
    ] {
        for r in list.iter_mut() {
            match r.status {
                Status::Missing => {
                    blockers.push(format!("{feature} {} is not in the library", describe(r)));
                }
                Status::Found => {
                    let file_stem = r.path.as_deref().map(model_stem).unwrap_or_default();
                    r.applied = r.name.is_some();
                    if r.name.as_deref() != Some(file_stem.as_str()) {
                        r.note = Some(format!(
                            "the file is named `{file_stem}`; applied under the image's name `{}`",
                            r.name.as_deref().unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }

    let sampler = sampler_plan(params);
    if let Some(e) = &sampler.error {
        blockers.push(e.clone());
    }
    if let Some(a) = &sampler.a1111 {
        notes.extend(a.notes.iter().cloned());
    }

    let settings = settings(params, &mut notes, &mut blockers);

    // Every other key the image carries that changes the picture.
    let hires = params
        .extra
        .iter()
        .any(|(k, v)| feature_of(k) == "hires fix" && !NEUTRAL_VALUES.contains(&v.trim()));
    for (key, value) in &params.extra {
        // Fooocus writes its refiner switch point even without a refiner.
        let no_refiner = key == "refiner_switch"
            && params
                .extra
                .get("refiner_model")
                .is_some_and(|m| NEUTRAL_VALUES.contains(&m.trim()));
        // Settings of a feature whose switch is off (`dynamic_thresholding: false` makes
        // `dynamic_thresholding_percentile` moot).
        let switched_off = params.extra.iter().any(|(base, v)| {
            key.len() > base.len()
                && key.starts_with(base.as_str())
                && key[base.len()..].starts_with('_')
                && ["false", "False", "None", "none", "0", ""].contains(&v.trim())
        });
        if no_refiner
            || switched_off
            || HANDLED_KEYS.contains(&key.as_str())
            || key.contains(':')
            || NEUTRAL_VALUES.contains(&value.trim())
        {
            continue;
        }
        not_reproduced.push(NotReproduced {
            feature: feature_of(key),
            key: key.clone(),
            value: value.clone(),
        });
    }
    if let Some(d) = params.denoising_strength
        && d < 1.0
    {
        if hires {
            not_reproduced.push(NotReproduced {
                feature: "hires fix".to_owned(),
                key: "Denoising strength".to_owned(),
                value: d.to_string(),
            });
            notes.push(
                "the first pass is generated; the hires fix pass is not reproduced".to_owned(),
            );
        } else {
            blockers.push(format!(
                "the image was made from another image (denoising strength {d}), which its \
                 metadata does not hold"
            ));
        }
    }
    not_reproduced.sort_by(|a, b| (&a.feature, &a.key).cmp(&(&b.feature, &b.key)));

    Plan {
        image: image.to_owned(),
        source: params.source,
        root: library.map(|l| l.root.display().to_string()),
        checkpoint,
        vae,
        loras,
        embeddings,
        hypernetworks,
        sampler,
        settings,
        not_reproduced,
        notes,
        blockers,
    }
}

/// `` `name` (hash `h`) `` for messages.
fn describe(r: &Resource) -> String {
    match (&r.name, &r.hash) {
        (Some(n), Some(h)) => format!("`{n}` (hash `{h}`)"),
        (Some(n), None) => format!("`{n}`"),
        (None, Some(h)) => format!("with hash `{h}`"),
        (None, None) => "(not named by the image)".to_owned(),
    }
}

fn resolve(
    library: Option<&Library>,
    kind: Kind,
    kinds: &[Kind],
    name: Option<&str>,
    hash: Option<&str>,
    weight: Option<f64>,
) -> Resource {
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    let hash = hash.map(str::trim).filter(|h| !h.is_empty());
    let found = library.and_then(|l| l.find(kinds, name, hash));
    let mut r = Resource {
        kind,
        name: name.map(str::to_owned),
        hash: hash.map(str::to_owned),
        weight,
        status: Status::Missing,
        path: None,
        matched_by: None,
        autov2: None,
        base: None,
        applied: false,
        lookup: None,
        note: None,
    };
    match found {
        Some(m) => {
            r.status = Status::Found;
            r.autov2 = m.record.hashes.as_ref().and_then(|h| h.autov2.clone());
            r.base = m.record.identity.as_ref().map(|i| i.base);
            r.path = Some(m.record.path);
            r.matched_by = Some(m.by);
            r.note = m.note;
        }
        None => {
            r.lookup = Some(lookup(name, hash));
            if library.is_none() {
                r.note = Some("no library root given".to_owned());
            }
        }
    }
    r
}

fn lookup(name: Option<&str>, hash: Option<&str>) -> Lookup {
    // SwarmUI and InvokeAI prefixes are not part of the hash Civitai knows.
    let hash = hash
        .map(|h| {
            let h = h.trim();
            let h = h.strip_prefix("blake3:").unwrap_or(h);
            h.strip_prefix("0x").unwrap_or(h).to_ascii_uppercase()
        })
        .filter(|h| h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let search_url = match (&hash, name) {
        (None, Some(n)) => Some(format!(
            "{CIVITAI_SEARCH}{}",
            model_stem(n)
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        )),
        _ => None,
    };
    Lookup {
        search_url,
        civitai_url: hash.as_ref().map(|h| format!("{CIVITAI_BY_HASH}{h}")),
        hash,
        download: "danlu download civitai:@VERSION_ID".to_owned(),
        civitai_lookup: "danlu civitai lookup FILE".to_owned(),
    }
}

/// `TI hashes` entries, and library embeddings whose names appear in a prompt as words.
fn embeddings(params: &GenerationParams, library: Option<&Library>) -> Vec<Resource> {
    let mut out: Vec<Resource> = params
        .embeddings
        .iter()
        .map(|e| {
            resolve(
                library,
                Kind::Embedding,
                &[Kind::Embedding],
                Some(&e.name),
                e.hash.as_deref(),
                None,
            )
        })
        .collect();
    if let Some(lib) = library {
        for record in lib.of_kind(Kind::Embedding) {
            let stated = out.iter().any(|r| {
                r.path.as_deref() == Some(record.path.as_str())
                    || r.name.as_deref().map(model_stem).as_deref() == Some(&record.name)
            });
            if stated
                || !(contains_word(&params.prompt, &record.name)
                    || contains_word(&params.negative_prompt, &record.name))
            {
                continue;
            }
            out.push(Resource {
                kind: Kind::Embedding,
                name: Some(record.name.clone()),
                hash: None,
                weight: None,
                status: Status::Found,
                path: Some(record.path.clone()),
                matched_by: Some(MatchedBy::Prompt),
                autov2: record.hashes.as_ref().and_then(|h| h.autov2.clone()),
                base: record.identity.as_ref().map(|i| i.base),
                applied: false,
                lookup: None,
                note: None,
            });
        }
    }
    out
}

/// Whether `word` occurs in `text` not inside a longer word (A1111 matches embedding names as
/// whole tokens).
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// `<hypernet:name:weight>` tags and A1111's `Hypernet`/`Hypernet hash`/`Hypernet strength`
/// (A1111 `modules/extra_networks_hypernet.py`, `infotext_utils.py`).
fn hypernetwork_tags(params: &GenerationParams) -> Vec<(String, f64, Option<String>)> {
    let mut out: Vec<(String, f64, Option<String>)> = Vec::new();
    let mut rest = params.prompt.as_str();
    while let Some(start) = rest.find("<hypernet:") {
        let after = &rest[start + "<hypernet:".len()..];
        let Some(end) = after.find('>') else { break };
        let mut parts = after[..end].split(':');
        let name = parts.next().unwrap_or_default().trim().to_owned();
        let weight = parts
            .next()
            .and_then(|w| w.trim().parse().ok())
            .unwrap_or(1.0);
        if !name.is_empty() {
            out.push((name, weight, None));
        }
        rest = &after[end..];
    }
    if let Some(name) = params.extra.get("Hypernet") {
        let hash = params.extra.get("Hypernet hash").cloned();
        match out.iter_mut().find(|(n, _, _)| n == name) {
            Some(entry) => entry.2 = hash,
            None => {
                let weight = params
                    .extra
                    .get("Hypernet strength")
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(1.0);
                out.push((name.clone(), weight, hash));
            }
        }
    }
    out
}

/// The engine's sampler and schedule for an A1111 mapping.
///
/// # Errors
/// A message naming what the engine lacks.
pub fn engine_sampler(a: &A1111Sampler) -> Result<(SamplerKind, Scheduler), String> {
    let scheduler = match a.scheduler.as_deref() {
        None => Scheduler::Automatic,
        // A1111 `normal_scheduler` between the model's own sigma_max and sigma_min is
        // linear in t from the last to the first timestep: k-diffusion `get_sigmas`, i.e.
        // "Uniform".
        Some("Normal") => Scheduler::Uniform,
        Some(label) => Scheduler::parse_name(label)
            .map_err(|_| format!("the engine has no `{label}` schedule yet"))?,
    };
    parse_sampler_name(&a.sampler, scheduler)
        .map_err(|_| format!("the engine has no `{}` sampler yet", a.sampler))
}

fn sampler_plan(params: &GenerationParams) -> SamplerPlan {
    let mut plan = SamplerPlan {
        stated: params.sampler.clone(),
        stated_scheduler: params.scheduler.clone(),
        a1111: None,
        engine_sampler: None,
        engine_scheduler: None,
        error: None,
    };
    let Some(stated) = params.sampler.as_deref() else {
        if params.source != Source::None {
            plan.error = Some("the image names no sampler".to_owned());
        }
        return plan;
    };
    let a = match to_a1111_sampler(params.source, stated, params.scheduler.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            plan.error = Some(e.to_string());
            return plan;
        }
    };
    match engine_sampler(&a) {
        Ok((kind, scheduler)) => {
            plan.engine_sampler = Some(kind.label().to_owned());
            plan.engine_scheduler = (!kind.info().timesteps)
                .then(|| danlu_generate::resolved_scheduler(kind, scheduler));
        }
        Err(e) => plan.error = Some(e),
    }
    plan.a1111 = Some(a);
    plan
}

fn settings(
    params: &GenerationParams,
    notes: &mut Vec<String>,
    blockers: &mut Vec<String>,
) -> Settings {
    let extra = |k: &str| params.extra.get(k).map(|v| v.trim());
    if params.seed.is_none() && params.source != Source::None {
        blockers.push("the image states no seed".to_owned());
    }
    let mut default = |what: &str, value: &str| {
        notes.push(format!("{what} not stated: A1111's default {value} used"));
    };
    let steps = params.steps.map_or_else(
        || {
            default("steps", "20");
            20
        },
        |s| s as usize,
    );
    let cfg_scale = params.cfg_scale.map_or_else(
        || {
            default("CFG scale", "7");
            7.0
        },
        |c| c as f32,
    );
    let (width, height) = match (params.width, params.height) {
        (Some(w), Some(h)) => (w as usize, h as usize),
        _ => {
            default("size", "512x512");
            (512, 512)
        }
    };
    let rng = match extra("RNG") {
        Some(r) if r.eq_ignore_ascii_case("cpu") => "CPU",
        Some(r) if r.eq_ignore_ascii_case("nv") => "NV",
        Some(r) if r.eq_ignore_ascii_case("gpu") => {
            notes.push("RNG `GPU`: A1111's GPU source on CUDA gives the NV numbers".to_owned());
            "NV"
        }
        Some(other) => {
            notes.push(format!("unknown RNG `{other}`: CPU used"));
            "CPU"
        }
        None => match params.source {
            Source::A1111 => {
                notes.push(
                    "no `RNG`: A1111's default GPU source, which on CUDA gives the NV numbers"
                        .to_owned(),
                );
                "NV"
            }
            Source::ComfyUi | Source::Fooocus | Source::SwarmUi => {
                notes.push(
                    "ComfyUI draws the initial noise with torch on the CPU (`comfy/sample.py` \
                     `prepare_noise`): CPU used"
                        .to_owned(),
                );
                "CPU"
            }
            Source::InvokeAi => "CPU",
            Source::NovelAi | Source::None => {
                notes.push("NovelAI's noise is its own: CPU used".to_owned());
                "CPU"
            }
        },
    };
    let number = |k: &str| extra(k).and_then(|v| v.parse::<f64>().ok());
    Settings {
        prompt: params.prompt.clone(),
        negative_prompt: params.negative_prompt.clone(),
        seed: params.seed,
        width,
        height,
        steps,
        cfg_scale,
        clip_skip: params.clip_skip.map_or(1, |c| c.max(1) as usize),
        denoising_strength: params.denoising_strength,
        rng: rng.to_owned(),
        eta_noise_seed_delta: extra("ENSD").and_then(|v| v.parse().ok()).unwrap_or(0),
        variation_seed: extra("Variation seed").and_then(|v| v.parse().ok()),
        variation_strength: number("Variation seed strength").map(|v| v as f32),
        eta: number("Eta").or_else(|| number("Eta DDIM")),
        emphasis: extra("Emphasis").map(str::to_owned),
    }
}

/// The engine's RNG source for a settings label.
pub(crate) fn rng_source(label: &str) -> RngSource {
    if label == "NV" {
        RngSource::Nv
    } else {
        RngSource::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_matched_whole() {
        assert!(contains_word("a cat, EasyNegative, blurry", "EasyNegative"));
        assert!(contains_word("(EasyNegative:1.2)", "EasyNegative"));
        assert!(!contains_word("EasyNegativeV2", "EasyNegative"));
        assert!(!contains_word("bad_EasyNegative", "EasyNegative"));
    }

    #[test]
    fn hypernet_tags_and_keys_are_read() {
        let mut p = GenerationParams {
            prompt: "a <hypernet:anime_3:0.7> cat <lora:x:1>".to_owned(),
            ..GenerationParams::default()
        };
        p.extra.insert("Hypernet".to_owned(), "anime_3".to_owned());
        p.extra
            .insert("Hypernet hash".to_owned(), "6ac70cdd".to_owned());
        assert_eq!(
            hypernetwork_tags(&p),
            vec![("anime_3".to_owned(), 0.7, Some("6ac70cdd".to_owned()))]
        );
    }

    #[test]
    fn features_are_grouped_by_key() {
        assert_eq!(feature_of("Hires upscaler"), "hires fix");
        assert_eq!(feature_of("ADetailer model"), "ADetailer");
        assert_eq!(feature_of("ControlNet 0"), "ControlNet");
        assert_eq!(feature_of("RP Active"), "Regional Prompter");
        assert_eq!(feature_of("sm_dyn"), "NovelAI SMEA");
        assert_eq!(feature_of("Something else"), "Something else");
    }
}
