//! Inpainting on tiny SD1 checkpoints against A1111's procedure.
//!
//! `scripts/reference/pipeline_inpaint.py` makes the UNet of a tiny inpainting checkpoint
//! (9 input channels, `tests/reference/model/sd1_tiny_inpaint_unet.safetensors`) and runs A1111's
//! img2img-with-mask and txt2img steps in float64 (see its docstring): the latent mask blend of
//! every denoised prediction and of the result, the inpainting image conditioning (`c_concat`),
//! the grey-image conditioning of txt2img, and the overlay of the original pixels. Here the
//! inpainting checkpoint is put together at test time from `sd1_tiny`'s text encoder and VAE
//! and that UNet, and [`Pipeline`] runs the same jobs in float32.
//!
//! The same script writes `inpaint_masks_reference.*` (Pillow 9.5 as A1111 pins it, OpenCV):
//! the mask blur, `masking.fill` and `apply_overlay` on their own, and float64 runs with mask
//! blur, masked content "fill", "latent noise", "latent nothing" and an inverted mask.
//!
//! `inpaint_resized_reference.*`: a 48x40 mask for the 64x64 picture, inverted and blurred at
//! its own size and then resized with each img2img resize mode (A1111's order), on its own and
//! in whole float64 runs. `inpaint_timesteps_reference.*`: float64 runs with DDIM, PLMS and
//! UniPC, whose model input (not the predicted noise) is blended with the init latent (A1111
//! `CFGDenoiserTimesteps.mask_before_denoising`), on the ordinary and the inpainting UNet.
//!
//! Tolerances as in `pipeline_parity.rs`: the final latent within 2e-5 of the largest reference
//! value (float32 network rounding through the steps; PyTorch's own float32 run differs by
//! about 8e-6), every 8-bit value within 1. The mask blur may differ by 1 (the kernel's weights
//! come from `f64::exp` here and OpenCV's software double there; measured: none differ); fill
//! and overlay are Pillow's integer arithmetic and must match byte for byte, as must the resized
//! masks (OpenCV's fixed-point blur, Pillow's Lanczos).

// Measured errors are printed for the record.
#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::ops::ControlFlow;

use candle_core::{DType, Device, Tensor};
use danlu_diffusion::model::{
    Activation, LayerChoice, TextConfig, TextLayout, UnetConfig, VaeConfig,
};
use danlu_diffusion::pipeline::{
    Architecture, Family, InitImage, Inpaint, InpaintFill, LoadOptions, MaskResize, Pipeline,
    Progress, Request, ResizeMode,
};
use danlu_diffusion::sampling::{Scheduler, parse_sampler_name};

const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/model");
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/pipeline");
const LATENT_TOLERANCE: f64 = 2e-5;

fn tiny_sd1(in_channels: usize) -> Architecture {
    Architecture {
        family: Family::Sd1,
        text: TextConfig {
            layout: TextLayout::Clip,
            vocab_size: 49408,
            width: 16,
            intermediate: 64,
            heads: 2,
            layers: 3,
            max_positions: 77,
            activation: Activation::QuickGelu,
            layer: LayerChoice::ClipSkip,
        },
        unet: UnetConfig {
            in_channels,
            block_out_channels: vec![32, 64],
            attention: vec![true, false],
            heads: vec![2, 2],
            layers_per_block: 1,
            cross_attention_dim: 16,
            use_linear_projection: false,
            ..UnetConfig::sd1()
        },
        vae: VaeConfig {
            block_out_channels: vec![32, 32, 32, 64],
            layers_per_block: 1,
            ..VaeConfig::sd()
        },
    }
}

/// `sd1_tiny` with its UNet replaced by the 9-channel one, written to `dir`.
fn inpainting_checkpoint(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let mut tensors =
        candle_core::safetensors::load(format!("{MODEL_DIR}/sd1_tiny.safetensors"), &Device::Cpu)?;
    tensors.retain(|k, _| !k.starts_with("model.diffusion_model."));
    let unet = candle_core::safetensors::load(
        format!("{MODEL_DIR}/sd1_tiny_inpaint_unet.safetensors"),
        &Device::Cpu,
    )?;
    anyhow::ensure!(unet.keys().all(|k| k.starts_with("model.diffusion_model.")));
    tensors.extend(unet);
    let path = dir.join("sd1_tiny_inpainting.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    Ok(path)
}

struct Reference {
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

impl Reference {
    fn load() -> anyhow::Result<Self> {
        let meta = serde_json::from_str(&std::fs::read_to_string(format!(
            "{DIR}/inpaint_reference.json"
        ))?)?;
        let tensors = candle_core::safetensors::load(
            format!("{DIR}/inpaint_reference.safetensors"),
            &Device::Cpu,
        )?;
        Ok(Self { meta, tensors })
    }

    fn tensor(&self, key: &str) -> anyhow::Result<&Tensor> {
        self.tensors
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("reference has no `{key}`"))
    }

    fn run(&self, name: &str) -> anyhow::Result<&serde_json::Value> {
        self.meta["runs"]
            .as_array()
            .and_then(|runs| runs.iter().find(|r| r["name"] == name))
            .ok_or_else(|| anyhow::anyhow!("no run `{name}`"))
    }

    fn request(&self, name: &str) -> anyhow::Result<Request> {
        let r = self.run(name)?;
        let num = |k: &str| r[k].as_f64().ok_or_else(|| anyhow::anyhow!("no `{k}`"));
        let (sampler, scheduler) = parse_sampler_name(
            r["sampler"].as_str().unwrap_or_default(),
            Scheduler::Automatic,
        )?;
        Ok(Request {
            prompt: self.meta["prompt"].as_str().unwrap_or_default().to_owned(),
            negative_prompt: self.meta["negative_prompt"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            steps: num("steps")? as usize,
            cfg_scale: num("cfg_scale")? as f32,
            sampler,
            scheduler,
            seed: num("seed")? as u64,
            width: 64,
            height: 64,
            ..Request::default()
        })
    }

    fn inpaint(&self, name: &str) -> anyhow::Result<Inpaint> {
        let image = self.tensor("init")?.flatten_all()?.to_vec1::<u8>()?;
        Ok(Inpaint {
            image: InitImage::new(64, 64, image)?,
            mask: self.tensor("mask")?.flatten_all()?.to_vec1::<u8>()?,
            mask_resize: None,
            denoising_strength: self.run(name)?["denoising_strength"]
                .as_f64()
                .unwrap_or_default() as f32,
            fill: InpaintFill::Original,
            mask_weight: 1.0,
            blur_x: 0,
            blur_y: 0,
            invert: false,
        })
    }
}

fn relative_error(got: &Tensor, want: &Tensor) -> anyhow::Result<f64> {
    anyhow::ensure!(
        got.dims() == want.dims(),
        "shape {:?} != {:?}",
        got.dims(),
        want.dims()
    );
    let got = got.to_dtype(DType::F64)?;
    let want = want.to_dtype(DType::F64)?;
    let diff = (&got - &want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale)
}

fn check(
    name: &str,
    reference: &Reference,
    images: &[danlu_diffusion::pipeline::Image],
) -> anyhow::Result<()> {
    let latents = Tensor::stack(
        &images.iter().map(|i| i.latent.clone()).collect::<Vec<_>>(),
        0,
    )?;
    let want = reference.tensor(&format!("{name}_latent"))?;
    let e = relative_error(&latents, want)?;
    let e32 = relative_error(reference.tensor(&format!("{name}_latent_f32"))?, want)?;
    let want_px = reference
        .tensor(&format!("{name}_image"))?
        .flatten_all()?
        .to_vec1::<u8>()?;
    let got_px: Vec<u8> = images
        .iter()
        .flat_map(|i| i.pixels.iter().copied())
        .collect();
    anyhow::ensure!(got_px.len() == want_px.len(), "{name}: pixel count differs");
    let worst = got_px
        .iter()
        .zip(&want_px)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap_or(0);
    let off = got_px.iter().zip(&want_px).filter(|(a, b)| a != b).count();
    eprintln!(
        "{name}: latent relative error {e:.2e} (torch f32: {e32:.2e}); 8-bit: {off} of {} bytes \
         differ, by at most {worst}",
        got_px.len()
    );
    anyhow::ensure!(
        e < LATENT_TOLERANCE,
        "{name}: latent relative error {e:.2e}"
    );
    anyhow::ensure!(worst <= 1, "{name}: an 8-bit value differs by {worst}");
    Ok(())
}

fn no_progress() -> impl FnMut(&Progress<'_>) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

fn inpainting_pipeline(dir: &std::path::Path) -> anyhow::Result<Pipeline> {
    let path = inpainting_checkpoint(dir)?;
    let p = Pipeline::load(path, LoadOptions::new(tiny_sd1(9)))?;
    anyhow::ensure!(p.is_inpainting());
    Ok(p)
}

#[test]
fn inpainting_unet_img2img_with_a_mask_matches_a1111() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let reference = Reference::load()?;
    let name = "inpaint_9ch_img2img";
    let images = inpainting_pipeline(dir.path())?.inpaint(
        &reference.request(name)?,
        &reference.inpaint(name)?,
        &mut no_progress(),
    )?;
    check(name, &reference, &images)
}

#[test]
fn inpainting_unet_txt2img_matches_a1111() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let reference = Reference::load()?;
    let name = "inpaint_9ch_txt2img";
    let images =
        inpainting_pipeline(dir.path())?.txt2img(&reference.request(name)?, &mut no_progress())?;
    check(name, &reference, &images)
}

/// An ordinary checkpoint inpaints by the latent blend alone.
#[test]
fn ordinary_checkpoint_with_a_mask_matches_a1111() -> anyhow::Result<()> {
    let reference = Reference::load()?;
    let name = "inpaint_plain_img2img";
    let p = Pipeline::load(
        format!("{MODEL_DIR}/sd1_tiny.safetensors"),
        LoadOptions::new(tiny_sd1(4)),
    )?;
    anyhow::ensure!(!p.is_inpainting());
    let inpaint = reference.inpaint(name)?;
    let images = p.inpaint(&reference.request(name)?, &inpaint, &mut no_progress())?;
    // Outside the mask the picture is the original's, byte for byte.
    for (i, &m) in inpaint.mask.iter().enumerate() {
        if m == 0 {
            anyhow::ensure!(
                images[0].pixels[i * 3..i * 3 + 3] == inpaint.image.pixels[i * 3..i * 3 + 3]
            );
        }
    }
    check(name, &reference, &images)
}

#[test]
fn a_mask_of_the_wrong_size_is_refused() -> anyhow::Result<()> {
    let reference = Reference::load()?;
    let name = "inpaint_plain_img2img";
    let p = Pipeline::load(
        format!("{MODEL_DIR}/sd1_tiny.safetensors"),
        LoadOptions::new(tiny_sd1(4)),
    )?;
    let request = reference.request(name)?;
    let short = Inpaint {
        mask: vec![0; 10],
        ..reference.inpaint(name)?
    };
    anyhow::ensure!(p.inpaint(&request, &short, &mut no_progress()).is_err());
    let mislabelled = Inpaint {
        mask_resize: Some(MaskResize {
            width: 32,
            height: 32,
            mode: ResizeMode::JustResize,
        }),
        ..reference.inpaint(name)?
    };
    anyhow::ensure!(
        p.inpaint(&request, &mislabelled, &mut no_progress())
            .is_err()
    );
    Ok(())
}

/// `inpaint_masks_reference.*`: A1111's mask blur (OpenCV), `masking.fill` and `apply_overlay`
/// (Pillow 9.5) and whole runs with mask blur, masked content and mask invert.
struct Masks {
    meta: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

impl Masks {
    fn load() -> anyhow::Result<Self> {
        Self::load_named("inpaint_masks_reference")
    }

    fn load_named(name: &str) -> anyhow::Result<Self> {
        let meta = serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/{name}.json"))?)?;
        let tensors =
            candle_core::safetensors::load(format!("{DIR}/{name}.safetensors"), &Device::Cpu)?;
        Ok(Self { meta, tensors })
    }

    fn bytes(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self
            .tensors
            .get(key)
            .ok_or_else(|| anyhow::anyhow!("reference has no `{key}`"))?
            .flatten_all()?
            .to_vec1::<u8>()?)
    }
}

/// Largest difference and how many values differ.
fn byte_gap(got: &[u8], want: &[u8]) -> anyhow::Result<(u8, usize)> {
    anyhow::ensure!(
        got.len() == want.len(),
        "{} values, want {}",
        got.len(),
        want.len()
    );
    let worst = got.iter().zip(want).map(|(a, b)| a.abs_diff(*b)).max();
    let off = got.iter().zip(want).filter(|(a, b)| a != b).count();
    Ok((worst.unwrap_or(0), off))
}

/// OpenCV's fixed-point 8-bit Gaussian blur: within 1 of `cv2.GaussianBlur` (the kernel's
/// weights come from `exp` in double precision here, from OpenCV's software double there).
#[test]
fn mask_blur_matches_opencv() -> anyhow::Result<()> {
    let m = Masks::load()?;
    let mask = m.bytes("small_mask")?;
    let blurs = m.meta["blurs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no blurs"))?;
    anyhow::ensure!(blurs.len() >= 5);
    for b in blurs {
        let (bx, by) = (
            b[0].as_u64().unwrap_or_default() as u32,
            b[1].as_u64().unwrap_or_default() as u32,
        );
        let got = danlu_diffusion::pipeline::blur_mask(&mask, 48, 40, bx, by);
        let want = m.bytes(&format!("blur_{bx}_{by}"))?;
        let (worst, off) = byte_gap(&got, &want)?;
        eprintln!(
            "blur {bx}x{by}: {off} of {} values differ, by at most {worst}",
            got.len()
        );
        anyhow::ensure!(worst <= 1, "blur {bx}x{by}: a value differs by {worst}");
    }
    Ok(())
}

/// `masking.fill` (Pillow's box-blur Gaussian blur, premultiplied alpha, `alpha_composite`) and
/// `apply_overlay` with a blurred mask: Pillow's integer arithmetic, so byte for byte.
#[test]
fn fill_and_overlay_match_pillow() -> anyhow::Result<()> {
    let m = Masks::load()?;
    let blurred = m.bytes("blur_4_4")?;
    let rgb = m.bytes("small_rgb")?;
    let filled = danlu_diffusion::pipeline::fill_masked(&rgb, &blurred, 48, 40);
    let (worst, off) = byte_gap(&filled, &m.bytes("fill_small")?)?;
    eprintln!(
        "fill: {off} of {} values differ, by at most {worst}",
        filled.len()
    );
    anyhow::ensure!(worst == 0, "fill: a value differs by {worst}");
    let mut generated = m.bytes("overlay_generated")?;
    danlu_diffusion::pipeline::apply_overlay(&mut generated, &rgb, &blurred);
    let (worst, off) = byte_gap(&generated, &m.bytes("overlay_small")?)?;
    eprintln!(
        "overlay: {off} of {} values differ, by at most {worst}",
        generated.len()
    );
    anyhow::ensure!(worst == 0, "overlay: a value differs by {worst}");
    Ok(())
}

/// Runs every entry of `masks.meta["runs"]` (at least `min_runs`) on the ordinary or the
/// inpainting checkpoint, with the mask `mask` of size `mask_size` (the picture's when `None`;
/// otherwise resized by the run's `resize_mode`), against the float64 reference: the final latent
/// within [`LATENT_TOLERANCE`] of the largest reference value, every 8-bit value within 1.
fn check_runs(
    masks: &Masks,
    min_runs: usize,
    mask: Option<(Vec<u8>, usize, usize)>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let reference = Reference::load()?;
    let plain = Pipeline::load(
        format!("{MODEL_DIR}/sd1_tiny.safetensors"),
        LoadOptions::new(tiny_sd1(4)),
    )?;
    let inpainting = inpainting_pipeline(dir.path())?;
    let runs = masks.meta["runs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no runs"))?;
    anyhow::ensure!(runs.len() >= min_runs);
    for r in runs {
        let name = r["name"].as_str().unwrap_or_default();
        let num = |k: &str| {
            r[k].as_f64()
                .ok_or_else(|| anyhow::anyhow!("{name}: no `{k}`"))
        };
        let (sampler, scheduler) = parse_sampler_name(
            r["sampler"].as_str().unwrap_or_default(),
            Scheduler::Automatic,
        )?;
        let request = Request {
            steps: num("steps")? as usize,
            cfg_scale: num("cfg_scale")? as f32,
            sampler,
            scheduler,
            seed: num("seed")? as u64,
            ..reference.request("inpaint_plain_img2img")?
        };
        let blur = num("mask_blur")? as u32;
        let base = reference.inpaint("inpaint_plain_img2img")?;
        let (pixels, mask_resize) = match &mask {
            None => (base.mask.clone(), None),
            Some((pixels, width, height)) => (
                pixels.clone(),
                Some(MaskResize {
                    width: *width,
                    height: *height,
                    mode: ResizeMode::parse_name(&num("resize_mode")?.to_string())?,
                }),
            ),
        };
        let inpaint = Inpaint {
            mask: pixels,
            mask_resize,
            denoising_strength: num("denoising_strength")? as f32,
            fill: InpaintFill::parse_name(&num("inpainting_fill")?.to_string())?,
            blur_x: blur,
            blur_y: blur,
            invert: num("inpainting_mask_invert")? != 0.0,
            ..base
        };
        let p = if r["model"] == "inpaint" {
            &inpainting
        } else {
            &plain
        };
        let images = p.inpaint(&request, &inpaint, &mut no_progress())?;
        let latents = Tensor::stack(
            &images.iter().map(|i| i.latent.clone()).collect::<Vec<_>>(),
            0,
        )?;
        let want = masks
            .tensors
            .get(&format!("{name}_latent"))
            .ok_or_else(|| anyhow::anyhow!("{name}: no latent"))?;
        let e = relative_error(&latents, want)?;
        let (worst, off) = byte_gap(&images[0].pixels, &masks.bytes(&format!("{name}_image"))?)?;
        eprintln!(
            "{name}: latent relative error {e:.2e}; 8-bit: {off} values differ, by at most {worst}"
        );
        anyhow::ensure!(
            e < LATENT_TOLERANCE,
            "{name}: latent relative error {e:.2e}"
        );
        anyhow::ensure!(worst <= 1, "{name}: an 8-bit value differs by {worst}");
    }
    Ok(())
}

/// Whole runs with mask blur, "fill", "latent noise", "latent nothing" and an inverted mask.
#[test]
fn mask_settings_match_a1111() -> anyhow::Result<()> {
    check_runs(&Masks::load()?, 5, None)
}

fn resized() -> anyhow::Result<(Masks, Vec<u8>, usize, usize)> {
    let m = Masks::load_named("inpaint_resized_reference")?;
    let size = |k: &str| {
        m.meta[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| anyhow::anyhow!("no `{k}`"))
    };
    let (w, h) = (size("mask_width")?, size("mask_height")?);
    let own = m.bytes("own_mask")?;
    anyhow::ensure!(own.len() == w * h && (w, h) != (64, 64));
    Ok((m, own, w, h))
}

/// A mask of another size than the picture, prepared in A1111's order (invert, blur at its own
/// size, resize with the img2img resize mode): byte for byte, for every resize mode.
#[test]
fn a_mask_of_another_size_is_blurred_then_resized_as_a1111_does() -> anyhow::Result<()> {
    let (m, own, w, h) = resized()?;
    let runs = m.meta["runs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no runs"))?;
    let mut modes = std::collections::HashSet::new();
    for r in runs {
        let name = r["name"].as_str().unwrap_or_default();
        let mode = ResizeMode::parse_name(&r["resize_mode"].to_string())?;
        modes.insert(mode);
        let blur = r["mask_blur"].as_u64().unwrap_or_default() as u32;
        let got = danlu_diffusion::pipeline::prepare_mask(
            &own,
            Some(MaskResize {
                width: w,
                height: h,
                mode,
            }),
            r["inpainting_mask_invert"] == 1,
            blur,
            blur,
            64,
            64,
        )?;
        let (worst, off) = byte_gap(&got, &m.bytes(&format!("{name}_mask"))?)?;
        eprintln!(
            "{name} mask: {off} of {} values differ, by at most {worst}",
            got.len()
        );
        anyhow::ensure!(worst == 0, "{name}: a mask value differs by {worst}");
    }
    anyhow::ensure!(modes.len() == 3, "every resize mode is covered");
    Ok(())
}

/// Whole float64 runs with a 48x40 mask for the 64x64 picture.
#[test]
fn a_mask_of_another_size_inpaints_as_a1111_does() -> anyhow::Result<()> {
    let (m, own, w, h) = resized()?;
    check_runs(&m, 3, Some((own, w, h)))
}

/// DDIM, PLMS and UniPC with a mask on the ordinary and the inpainting checkpoint (A1111
/// `CFGDenoiserTimesteps`: the model input blended with the clean init latent before every
/// model call, the final latent blended once more).
#[test]
fn timestep_samplers_inpaint_as_a1111_does() -> anyhow::Result<()> {
    let m = Masks::load_named("inpaint_timesteps_reference")?;
    let samplers: std::collections::HashSet<&str> = m.meta["runs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no runs"))?
        .iter()
        .filter_map(|r| r["sampler"].as_str())
        .collect();
    anyhow::ensure!(
        ["DDIM", "PLMS", "UniPC"]
            .iter()
            .all(|s| samplers.contains(s))
    );
    check_runs(&m, 5, None)
}
