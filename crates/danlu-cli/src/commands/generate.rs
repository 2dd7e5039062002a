//! `danlu generate`: txt2img and img2img from a single-file checkpoint, PNGs with A1111
//! infotext.

use crate::ExitStatus;
use crate::args::{GenerateArgs, Precision};
use crate::printer::Printer;
use crate::progress::Bars;
use anyhow::Context as _;
use candle_core::{DType, Device};
use danlu_diffusion::model::{
    Activation, LayerChoice, Prediction as UnetPrediction, TextConfig, TextLayout, UnetConfig,
    VaeConfig,
};
use danlu_diffusion::pipeline::{
    Architecture, Family, Image, Img2Img, InitImage, LoadOptions, Pipeline, Progress, Request,
};
use danlu_diffusion::rng::RngSource;
use danlu_diffusion::sampling::{SamplerKind, Scheduler, parse_sampler_name};
use danlu_pnginfo::{GenerationParams, Source, to_a1111_infotext, write_png_parameters};
use danlu_types::{Base, Reporter as _, Variant};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
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

/// Network shapes read from `--model-config` (for models that are not the released sizes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchitectureFile {
    family: String,
    text: TextShape,
    unet: UnetShape,
    vae: VaeShape,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextShape {
    width: usize,
    intermediate: usize,
    heads: usize,
    layers: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnetShape {
    block_out_channels: Vec<usize>,
    attention: Vec<bool>,
    heads: Vec<usize>,
    layers_per_block: usize,
    cross_attention_dim: usize,
    use_linear_projection: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaeShape {
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
}

fn parse_family(text: &str) -> anyhow::Result<Family> {
    match text.to_ascii_lowercase().as_str() {
        "sd1" => Ok(Family::Sd1),
        "sd2" => Ok(Family::Sd2),
        other => anyhow::bail!("`{other}`: only `sd1` and `sd2` can generate yet"),
    }
}

/// Reads `--model-config`: the released shapes of the family with the given sizes.
fn read_architecture(path: &Path) -> anyhow::Result<Architecture> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading model config `{}`", path.display()))?;
    let f: ArchitectureFile = serde_json::from_str(&text)
        .with_context(|| format!("parsing model config `{}`", path.display()))?;
    let base = Architecture::of(parse_family(&f.family)?);
    let sd2 = base.family == Family::Sd2;
    Ok(Architecture {
        text: TextConfig {
            width: f.text.width,
            intermediate: f.text.intermediate,
            heads: f.text.heads,
            layers: f.text.layers,
            layout: if sd2 {
                TextLayout::OpenClip
            } else {
                TextLayout::Clip
            },
            activation: if sd2 {
                Activation::Gelu
            } else {
                Activation::QuickGelu
            },
            layer: if sd2 {
                LayerChoice::Fixed(2)
            } else {
                LayerChoice::ClipSkip
            },
            ..base.text.clone()
        },
        unet: UnetConfig {
            block_out_channels: f.unet.block_out_channels,
            attention: f.unet.attention,
            heads: f.unet.heads,
            layers_per_block: f.unet.layers_per_block,
            cross_attention_dim: f.unet.cross_attention_dim,
            use_linear_projection: f.unet.use_linear_projection,
            ..base.unet.clone()
        },
        vae: VaeConfig {
            block_out_channels: f.vae.block_out_channels,
            layers_per_block: f.vae.layers_per_block,
            ..base.vae.clone()
        },
        family: base.family,
    })
}

/// The family and prediction: `--base`/`--v-pred` win, else the checkpoint's identity (its
/// `.yaml` sidecar gives v-prediction as in A1111).
fn choose_architecture(args: &GenerateArgs) -> anyhow::Result<Architecture> {
    let index = danlu_format::read_index(&args.checkpoint)
        .with_context(|| format!("reading `{}`", args.checkpoint.display()))?;
    let identity =
        danlu_identify::identify(&index, &danlu_identify::Hints::from_path(&args.checkpoint));
    let arch = if let Some(path) = &args.model_config {
        read_architecture(path)?
    } else {
        let family = match (&args.base, identity.base) {
            (Some(b), _) => parse_family(b)?,
            (None, Base::Sd1) => Family::Sd1,
            (None, Base::Sd2) => Family::Sd2,
            (None, other) => anyhow::bail!(
                "`{}` is identified as `{}`; only SD 1.x and SD 2.x checkpoints can generate \
                 yet (use --base to override)",
                args.checkpoint.display(),
                other.as_str()
            ),
        };
        Architecture::of(family)
    };
    let v = args.v_pred || identity.variant == Some(Variant::VPrediction);
    Ok(arch.with_prediction(if v {
        UnetPrediction::V
    } else {
        UnetPrediction::Epsilon
    }))
}

/// Reads an 8-bit RGB or RGBA PNG (alpha dropped) as an init image.
fn read_init_image(path: &Path) -> anyhow::Result<InitImage> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening init image `{}`", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("reading init image `{}`", path.display()))?;
    let size = reader
        .output_buffer_size()
        .context("init image too large")?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("decoding init image `{}`", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        match channels {
            1 | 2 => rgb.extend_from_slice(&[px[0]; 3]),
            _ => rgb.extend_from_slice(&px[..3]),
        }
    }
    Ok(InitImage::new(w, h, rgb)?)
}

/// Encodes 8-bit RGB as PNG.
fn encode_png(image: &Image) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&image.pixels)?;
    }
    Ok(out)
}

/// AutoV2 of a file (A1111 `Model hash`, `VAE hash`).
fn autov2(path: &Path, bars: &Bars) -> anyhow::Result<String> {
    let hashes = danlu_hash::hash_file(path, bars, &CANCEL)
        .with_context(|| format!("hashing `{}`", path.display()))?;
    Ok(hashes.autov2)
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where image `index` of `count` goes: `-o x.png` names the file (with `-N` before `.png` when
/// there are several), any other `-o` is a folder where A1111-style `NNNNN-SEED.png` names
/// continue after the highest number present.
fn output_paths(output: &Path, seeds: &[u64]) -> anyhow::Result<Vec<PathBuf>> {
    let is_file = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_file {
        if seeds.len() == 1 {
            return Ok(vec![output.to_path_buf()]);
        }
        let parent = output.parent().unwrap_or(Path::new(""));
        let s = stem(output);
        return Ok((0..seeds.len())
            .map(|i| parent.join(format!("{s}-{i}.png")))
            .collect());
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("creating output folder `{}`", output.display()))?;
    let mut next = 0u64;
    for entry in std::fs::read_dir(output)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((n, _)) = name.split_once('-')
            && let Ok(n) = n.parse::<u64>()
        {
            next = next.max(n + 1);
        }
    }
    Ok(seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| output.join(format!("{:05}-{seed}.png", next + i as u64)))
        .collect())
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
        .map(read_init_image)
        .transpose()?;
    let (width, height) = match (&init, args.width, args.height) {
        (_, Some(w), Some(h)) => (w, h),
        (Some(i), w, h) => (w.unwrap_or(i.width), h.unwrap_or(i.height)),
        (None, w, h) => (w.unwrap_or(512), h.unwrap_or(512)),
    };
    let seed = match args.seed {
        s if s >= 0 => s as u64,
        // A1111 `get_fixed_seed`: -1 picks `random.randrange(4294967294)`.
        _ => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (nanos % 4_294_967_294) as u64
        }
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
    let paths = output_paths(&args.output, &seeds)?;
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        anyhow::bail!("`{}` already exists", p.display());
    }

    let bars = Bars::new(progress_hidden);
    install_ctrl_c();
    let architecture = choose_architecture(args)?;
    let model_hash = autov2(&args.checkpoint, &bars)?;
    let vae_hash = args.vae.as_deref().map(|v| autov2(v, &bars)).transpose()?;
    let dtype = match args.precision {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    };
    let started = std::time::Instant::now();
    let load_task = bars.start("loading checkpoint", None);
    let pipeline = Pipeline::load(
        &args.checkpoint,
        LoadOptions {
            architecture: architecture.clone(),
            vae: args.vae.clone(),
            dtype,
            device: Device::Cpu,
        },
    )
    .with_context(|| format!("loading `{}`", args.checkpoint.display()))?;
    bars.finish(load_task);
    let load_seconds = started.elapsed().as_secs_f64();

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
    let images = match init {
        Some(image) => {
            let init = Img2Img {
                image,
                denoising_strength: args.denoising_strength,
            };
            pipeline.img2img(&request, &init, &mut on_step)
        }
        None => pipeline.txt2img(&request, &mut on_step),
    };
    if let Some(t) = task {
        bars.finish(t);
    }
    let images = images?;
    let generate_seconds = started.elapsed().as_secs_f64();

    let schedule_type = (!sampler.info().timesteps).then(|| resolved_scheduler(sampler, scheduler));
    let mut reports = Vec::with_capacity(images.len());
    for (image, path) in images.iter().zip(&paths) {
        let mut params = GenerationParams {
            source: Source::A1111,
            prompt: args.prompt.clone(),
            negative_prompt: args.negative_prompt.clone(),
            steps: Some(args.steps as u64),
            seed: Some(image.seed),
            width: Some(image.width as u32),
            height: Some(image.height as u32),
            clip_skip: Some(args.clip_skip as u32),
            sampler: Some(sampler.label().to_owned()),
            scheduler: schedule_type.clone(),
            cfg_scale: Some(f64::from(args.cfg_scale)),
            denoising_strength: args
                .init_image
                .as_ref()
                .map(|_| f64::from(args.denoising_strength)),
            model: Some(stem(&args.checkpoint)),
            model_hash: Some(model_hash.clone()),
            vae: args.vae.as_deref().map(|v| {
                v.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
            vae_hash: vae_hash.clone(),
            ..GenerationParams::default()
        };
        params.extra.insert(
            "Version".to_owned(),
            format!("danlu {}", env!("CARGO_PKG_VERSION")),
        );
        if rng == RngSource::Nv {
            params.extra.insert("RNG".to_owned(), "NV".to_owned());
        }
        let text = to_a1111_infotext(&params);
        let png = write_png_parameters(&encode_png(image)?, &text)?;
        danlu_fs::write_atomic(path, &png, danlu_fs::Overwrite::Never)?;
        reports.push(ImageReport {
            path: path.display().to_string(),
            seed: image.seed,
            parameters: text,
        });
    }
    let report = GenerateReport {
        images: reports,
        checkpoint: args.checkpoint.display().to_string(),
        model_hash,
        vae: args.vae.as_ref().map(|v| v.display().to_string()),
        vae_hash,
        base: match architecture.family {
            Family::Sd1 => "sd1",
            Family::Sd2 => "sd2",
        }
        .to_owned(),
        v_prediction: architecture.unet.prediction == UnetPrediction::V,
        sampler: sampler.label().to_owned(),
        scheduler: schedule_type,
        steps: args.steps,
        cfg_scale: args.cfg_scale,
        width,
        height,
        clip_skip: args.clip_skip,
        denoising_strength: args.init_image.as_ref().map(|_| args.denoising_strength),
        rng: args.rng.to_ascii_lowercase(),
        load_seconds,
        generate_seconds,
    };
    if printer.json {
        printer.json(&report)?;
    } else {
        let mut text = String::new();
        for i in &report.images {
            text.push_str(&format!("wrote `{}` (seed {})\n", i.path, i.seed));
        }
        text.push_str(&format!(
            "{} image(s) in {:.1} s (loading {:.1} s)\n",
            report.images.len(),
            generate_seconds,
            load_seconds
        ));
        printer.text(&text)?;
    }
    Ok(ExitStatus::Success)
}

/// The label A1111 writes as "Schedule type": the sampler's own schedule for "Automatic".
fn resolved_scheduler(sampler: SamplerKind, scheduler: Scheduler) -> String {
    match scheduler {
        Scheduler::Automatic => sampler.default_scheduler().label().to_owned(),
        s => s.label().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_schedule_is_written_as_the_samplers_own() {
        assert_eq!(
            resolved_scheduler(SamplerKind::DpmPp2M, Scheduler::Automatic),
            "Karras"
        );
        assert_eq!(
            resolved_scheduler(SamplerKind::EulerAncestral, Scheduler::Automatic),
            "Uniform"
        );
        assert_eq!(
            resolved_scheduler(SamplerKind::Euler, Scheduler::Exponential),
            "Exponential"
        );
    }

    #[test]
    fn output_names_follow_the_flag() {
        let one = output_paths(Path::new("out/a.png"), &[5]).unwrap();
        assert_eq!(one, vec![PathBuf::from("out/a.png")]);
        let two = output_paths(Path::new("out/a.png"), &[5, 6]).unwrap();
        assert_eq!(
            two,
            vec![PathBuf::from("out/a-0.png"), PathBuf::from("out/a-1.png")]
        );
        let dir = tempfile::tempdir().unwrap();
        danlu_fs::write_atomic(
            dir.path().join("00007-1.png"),
            b"",
            danlu_fs::Overwrite::Never,
        )
        .unwrap();
        let next = output_paths(dir.path(), &[9]).unwrap();
        assert_eq!(next, vec![dir.path().join("00008-9.png")]);
    }
}
