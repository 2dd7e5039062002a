//! `danlu generate`: txt2img and img2img from a single-file checkpoint, PNGs with A1111
//! infotext (the job itself lives in `danlu-generate`).

use crate::ExitStatus;
use crate::args::GenerateArgs;
use crate::printer::Printer;
use crate::progress::Bars;
use anyhow::Context as _;
use danlu_diffusion::model::Prediction as UnetPrediction;
use danlu_diffusion::pipeline::{Family, Img2Img, Progress, Request};
use danlu_diffusion::rng::RngSource;
use danlu_diffusion::sampling::{Scheduler, parse_sampler_name};
use danlu_generate::{Job, LoadedModel, ModelSpec, VaeChoice};
use danlu_types::Reporter as _;
use serde::Serialize;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C: sampling stops after the current step.
static CANCEL: AtomicBool = AtomicBool::new(false);

fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if CANCEL.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping after the current step");
    });
}

/// What `danlu generate --json` reports.
#[derive(Debug, Serialize)]
pub struct GenerateReport {
    /// The images written, in generation order.
    pub images: Vec<ImageReport>,
    /// The checkpoint.
    pub checkpoint: String,
    /// Its AutoV2 hash (first 10 hex digits of its SHA-256).
    pub model_hash: String,
    /// The external VAE, if any.
    pub vae: Option<String>,
    /// Its AutoV2 hash.
    pub vae_hash: Option<String>,
    /// `sd1` or `sd2`.
    pub base: String,
    /// Whether the UNet predicts v.
    pub v_prediction: bool,
    /// The sampler's A1111 label.
    pub sampler: String,
    /// The schedule A1111 writes as "Schedule type" (none for timestep samplers).
    pub scheduler: Option<String>,
    /// Steps.
    pub steps: usize,
    /// CFG scale.
    pub cfg_scale: f32,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Clip skip.
    pub clip_skip: usize,
    /// img2img denoising strength.
    pub denoising_strength: Option<f32>,
    /// `cpu` or `nv`.
    pub rng: String,
    /// Seconds spent loading the networks.
    pub load_seconds: f64,
    /// Seconds spent generating.
    pub generate_seconds: f64,
    /// LoRAs applied from prompt tags, by name.
    pub loras: Vec<String>,
    /// Embeddings the prompt or negative prompt used.
    pub embeddings: Vec<String>,
    /// Hypernetworks applied from prompt tags.
    pub hypernetworks: Vec<String>,
    /// Tags naming nothing installed, unusable adapter files, LoRA modules that fit no weight.
    pub warnings: Vec<String>,
}

/// One written image.
#[derive(Debug, Serialize)]
pub struct ImageReport {
    /// The PNG file.
    pub path: String,
    /// Its seed.
    pub seed: u64,
    /// The `parameters` text stored in it.
    pub parameters: String,
}

/// Runs `danlu generate`.
///
/// # Errors
/// Bad arguments, an unreadable model or init image, a failed generation, or an output file
/// that exists already.
pub fn run(
    args: &GenerateArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let (sampler, scheduler) =
        parse_sampler_name(&args.sampler, Scheduler::parse_name(&args.scheduler)?)?;
    let rng = RngSource::parse_name(&args.rng)?;
    let init = args
        .init_image
        .as_deref()
        .map(|path| {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading init image `{}`", path.display()))?;
            danlu_generate::read_init_image(&bytes)
                .with_context(|| format!("decoding init image `{}`", path.display()))
        })
        .transpose()?;
    let (width, height) = match (&init, args.width, args.height) {
        (_, Some(w), Some(h)) => (w, h),
        (Some(i), w, h) => (w.unwrap_or(i.width), h.unwrap_or(i.height)),
        (None, w, h) => (w.unwrap_or(512), h.unwrap_or(512)),
    };
    // A1111 `images.resize_image(p.resize_mode, ...)` on every init image.
    let resize_mode = danlu_diffusion::pipeline::ResizeMode::parse_name(&args.resize_mode)?;
    let init = match init {
        Some(image) if (image.width, image.height) != (width, height) => Some(
            danlu_diffusion::pipeline::resize_image(resize_mode, &image, width, height)?,
        ),
        other => other,
    };
    // A1111 img2img with a mask: the mask as 8-bit grey (Pillow `convert("L")`) at its own size;
    // the engine blurs it there and then resizes it like the init image (A1111's order).
    let mask = args
        .mask
        .as_deref()
        .map(|path| -> anyhow::Result<_> {
            anyhow::ensure!(init.is_some(), "`--mask` needs `--init-image`");
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading mask `{}`", path.display()))?;
            let rgb = danlu_generate::read_init_image(&bytes)
                .with_context(|| format!("decoding mask `{}`", path.display()))?;
            let grey: Vec<u8> = rgb
                .pixels
                .chunks_exact(3)
                .map(|p| {
                    let l = u32::from(p[0]) * 19595
                        + u32::from(p[1]) * 38470
                        + u32::from(p[2]) * 7471
                        + 0x8000;
                    (l >> 16) as u8
                })
                .collect();
            let resize = ((rgb.width, rgb.height) != (width, height)).then_some(
                danlu_generate::MaskResize {
                    width: rgb.width,
                    height: rgb.height,
                    mode: resize_mode,
                },
            );
            Ok((grey, resize))
        })
        .transpose()?;
    let fill = danlu_generate::InpaintFill::parse_name(&args.inpainting_fill)?;
    let mask = mask.map(|(pixels, resize)| danlu_generate::Mask {
        pixels,
        resize,
        blur_x: args.mask_blur,
        blur_y: args.mask_blur,
        fill,
        invert: args.inpainting_mask_invert,
    });
    let seed = match args.seed {
        s if s >= 0 => s as u64,
        _ => danlu_generate::random_seed(),
    };
    let request = Request {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        steps: args.steps,
        cfg_scale: args.cfg_scale,
        sampler,
        scheduler,
        seed,
        width,
        height,
        batch_size: args.batch_size,
        n_iter: args.n_iter,
        clip_skip: args.clip_skip,
        rng,
        eta: args.eta,
        ..Request::default()
    };
    request.validate()?;
    let seeds: Vec<u64> = (0..args.batch_size * args.n_iter)
        .map(|i| request.seed_of(i))
        .collect();
    let paths = danlu_generate::output_paths(&args.output, &seeds)?;
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        anyhow::bail!("`{}` already exists", p.display());
    }
    let job = Job {
        request,
        img2img: init.map(|image| Img2Img {
            image,
            denoising_strength: args.denoising_strength,
        }),
    };

    let bars = Bars::new(progress_hidden);
    install_ctrl_c();
    let vae_path = vae_file(args)?;
    let engine = crate::commands::engine::configure(&args.engine)?;
    let spec = ModelSpec {
        checkpoint: args.checkpoint.clone(),
        vae: match &vae_path {
            Some(v) => VaeChoice::File(v.clone()),
            None => VaeChoice::Baked,
        },
        family: args
            .base
            .as_deref()
            .map(danlu_generate::parse_family)
            .transpose()?,
        v_pred: args.v_pred,
        shapes: args.model_config.clone(),
        dtype: engine.dtype,
        device: engine.device,
        known_hashes: danlu_generate::KnownHashes::default(),
    };
    let mut model = LoadedModel::load(spec, &bars, &CANCEL)
        .with_context(|| format!("loading `{}`", args.checkpoint.display()))?;
    let mut folders = danlu_diffusion::adapters::AdapterFolders {
        lora: args.lora_dir.clone(),
        embeddings: args.embeddings_dir.clone(),
        hypernetworks: args.hypernetwork_dir.clone(),
        ..Default::default()
    };
    library_adapters(args, &mut folders)?;
    let mut warnings = model.set_adapter_folders(folders);
    let applied = model
        .apply_adapters(&job, &bars, &CANCEL)
        .context("applying the prompt's LoRAs, embeddings and hypernetworks")?;
    warnings.extend(applied.warnings.iter().cloned());

    let started = std::time::Instant::now();
    let mut task = None;
    let mut current_iteration = usize::MAX;
    let mut on_step = |p: &Progress<'_>| {
        if p.iteration != current_iteration {
            if let Some(t) = task.take() {
                bars.finish(t);
            }
            current_iteration = p.iteration;
            let label = format!("sampling {}/{}", p.iteration + 1, p.iterations);
            task = Some(bars.start(&label, Some(p.steps as u64)));
        }
        if let Some(t) = task {
            bars.advance(t, 1);
        }
        if CANCEL.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let generated = match mask {
        Some(mask) => model.inpaint(&job, &mask, &mut on_step),
        None => model.generate(&job, &mut on_step),
    };
    if let Some(t) = task {
        bars.finish(t);
    }
    let generated = generated?;
    let generate_seconds = started.elapsed().as_secs_f64();

    let mut reports = Vec::with_capacity(generated.len());
    for (image, path) in generated.iter().zip(&paths) {
        danlu_fs::write_atomic(path, &image.png, danlu_fs::Overwrite::Never)?;
        reports.push(ImageReport {
            path: path.display().to_string(),
            seed: image.image.seed,
            parameters: image.parameters.clone(),
        });
    }
    let architecture = model.architecture();
    let report = GenerateReport {
        images: reports,
        checkpoint: args.checkpoint.display().to_string(),
        model_hash: model.model_hash.clone(),
        vae: vae_path.as_ref().map(|v| v.display().to_string()),
        vae_hash: model.vae_hash.clone(),
        base: match architecture.family {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
        }
        .to_owned(),
        v_prediction: architecture.unet.prediction == UnetPrediction::V,
        sampler: sampler.label().to_owned(),
        scheduler: (!sampler.info().timesteps)
            .then(|| danlu_generate::resolved_scheduler(sampler, scheduler)),
        steps: args.steps,
        cfg_scale: args.cfg_scale,
        width,
        height,
        clip_skip: args.clip_skip,
        denoising_strength: args.init_image.as_ref().map(|_| args.denoising_strength),
        rng: args.rng.to_ascii_lowercase(),
        load_seconds: model.load_seconds,
        generate_seconds,
        loras: applied.loras.iter().map(|l| l.name.clone()).collect(),
        embeddings: applied.embeddings.iter().map(|e| e.name.clone()).collect(),
        hypernetworks: applied
            .hypernetworks
            .iter()
            .map(|h| h.name.clone())
            .collect(),
        warnings,
    };
    if printer.json {
        printer.json(&report)?;
    } else {
        let mut text = String::new();
        for w in &report.warnings {
            text.push_str(&format!("warning: {w}\n"));
        }
        for i in &report.images {
            text.push_str(&format!("wrote `{}` (seed {})\n", i.path, i.seed));
        }
        text.push_str(&format!(
            "{} image(s) in {:.1} s (loading {:.1} s)\n",
            report.images.len(),
            generate_seconds,
            report.load_seconds
        ));
        printer.text(&text)?;
    }
    Ok(ExitStatus::Success)
}

/// The external VAE file of `--vae`: a file as given, none for `none` (the baked VAE, A1111
/// "None"), or for `auto`/`automatic` the library's pairing rule (A1111 "Automatic":
/// `danlu_library::resolve_vae` over the `--root` library, the checkpoint's `NAME.json` then a VAE
/// named like the checkpoint beside it or in the VAE folder, else the baked one).
fn vae_file(args: &GenerateArgs) -> anyhow::Result<Option<std::path::PathBuf>> {
    let Some(v) = args.vae.as_deref() else {
        return Ok(None);
    };
    let word = v.as_os_str();
    if word.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if !(word.eq_ignore_ascii_case("auto") || word.eq_ignore_ascii_case("automatic")) {
        return Ok(Some(v.to_path_buf()));
    }
    let (root, cache) = crate::commands::scan::open_library(None, &args.root)
        .context("`--vae auto` pairs VAEs through the library: give `--root`")?;
    crate::commands::scan::refresh(&root, &cache)?;
    let all = cache.all()?;
    let checkpoint = std::path::absolute(&args.checkpoint)?;
    let record = danlu_library::find_model(&all, &checkpoint.to_string_lossy(), &root.path)?;
    let report = danlu_library::resolve_vae(&root, &all, record, None);
    if let Some(refusal) = report.refused {
        anyhow::bail!("{refusal}");
    }
    Ok(report.vae.map(std::path::PathBuf::from))
}

/// Adds the library's adapter folders (LoRA, LyCORIS, embeddings, hypernetworks of the root's
/// layout) after the `--*-dir` folders, and resolves each `<lora:NAME>`/`<hypernet:NAME>` that
/// no file stem matches through the library: by name, then by the hashes `danlu scan` stores. Only
/// when a root is given (`--root` or `DANLU_ROOT`).
fn library_adapters(
    args: &GenerateArgs,
    folders: &mut danlu_diffusion::adapters::AdapterFolders,
) -> anyhow::Result<()> {
    use danlu_types::Kind;
    if args.root.root.is_none() && std::env::var_os("DANLU_ROOT").is_none() {
        return Ok(());
    }
    let (root, cache) = crate::commands::scan::open_library(None, &args.root)?;
    crate::commands::scan::refresh(&root, &cache)?;
    let records = cache.all()?;
    let of = |kinds: &[Kind]| -> Vec<std::path::PathBuf> {
        root.folders()
            .into_iter()
            .filter(|f| f.kinds.iter().any(|k| kinds.contains(k)))
            .map(|f| f.path)
            .collect()
    };
    folders.lora.extend(of(&[Kind::Lora]));
    folders.embeddings.extend(of(&[Kind::Embedding]));
    folders.hypernetworks.extend(of(&[Kind::Hypernetwork]));

    let parsed = danlu_diffusion::prompt::parse_extra_networks(&args.prompt);
    let tags = danlu_diffusion::prompt::PromptNetworks::from_tags(&parsed.tags);
    let stem_in = |dirs: &[std::path::PathBuf], name: &str| {
        records.iter().any(|r| {
            let p = std::path::Path::new(&r.path);
            dirs.iter().any(|d| p.starts_with(d))
                && p.file_stem().is_some_and(|s| s.to_string_lossy() == name)
        })
    };
    let lookup = |name: &str, kind: Kind| -> Option<std::path::PathBuf> {
        let of_kind: Vec<_> = records
            .iter()
            .filter(|r| r.identity.as_ref().is_some_and(|i| i.kind == kind))
            .cloned()
            .collect();
        danlu_library::find_model(&of_kind, name, &root.path)
            .ok()
            .map(|r| std::path::PathBuf::from(&r.path))
    };
    for tag in &tags.loras {
        if !stem_in(&folders.lora, &tag.name)
            && let Some(path) = lookup(&tag.name, Kind::Lora)
        {
            folders.aliases.lora.push((tag.name.clone(), path));
        }
    }
    for tag in &tags.hypernets {
        if !stem_in(&folders.hypernetworks, &tag.name)
            && let Some(path) = lookup(&tag.name, Kind::Hypernetwork)
        {
            folders.aliases.hypernetworks.push((tag.name.clone(), path));
        }
    }
    Ok(())
}
