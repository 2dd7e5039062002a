//! The parameters A1111 writes for an image (`modules/processing.py` `create_infotext`).

use crate::{InpaintFill, Job, LoadedModel, Mask};
use danlu_diffusion::pipeline::Image;
use danlu_diffusion::prompt::Emphasis;
use danlu_diffusion::rng::RngSource;
use danlu_diffusion::sampling::{SamplerKind, Scheduler};
use danlu_pnginfo::{GenerationParams, Source};

/// The label A1111 writes as "Schedule type": the sampler's own schedule for "Automatic".
pub fn resolved_scheduler(sampler: SamplerKind, scheduler: Scheduler) -> String {
    match scheduler {
        Scheduler::Automatic => sampler.default_scheduler().label().to_owned(),
        s => s.label().to_owned(),
    }
}

/// The fields A1111 records for `image` of `job` made by `model`.
///
/// `RNG` is always written (`CPU` or `NV`): an A1111 image without it was made with the "GPU"
/// source, which on CUDA gives the NV numbers.
pub fn generation_params(model: &LoadedModel, job: &Job, image: &Image) -> GenerationParams {
    let r = &job.request;
    let info = r.sampler.info();
    let mut params = GenerationParams {
        source: Source::A1111,
        prompt: r.prompt.clone(),
        negative_prompt: r.negative_prompt.clone(),
        steps: Some(r.steps as u64),
        seed: Some(image.seed),
        width: Some(image.width as u32),
        height: Some(image.height as u32),
        clip_skip: Some(r.clip_skip as u32),
        sampler: Some(info.label.to_owned()),
        scheduler: (!info.timesteps).then(|| resolved_scheduler(r.sampler, r.scheduler)),
        cfg_scale: Some(f64::from(r.cfg_scale)),
        denoising_strength: job
            .img2img
            .as_ref()
            .map(|i| f64::from(i.denoising_strength)),
        model: Some(model.model_name()),
        model_hash: (!model.model_hash.is_empty()).then(|| model.model_hash.clone()),
        vae: model.vae_name(),
        vae_hash: model.vae_hash.clone(),
        ..GenerationParams::default()
    };
    let extra = &mut params.extra;
    if let (Some((_, strength)), Some(subseed)) = (r.variation, image.subseed)
        && strength != 0.0
    {
        extra.insert("Variation seed".to_owned(), subseed.to_string());
        extra.insert("Variation seed strength".to_owned(), strength.to_string());
    }
    if let Some(eta) = r.eta {
        if info.timesteps && eta != 0.0 {
            extra.insert("Eta DDIM".to_owned(), eta.to_string());
        } else if info.stochastic && eta != 1.0 {
            extra.insert("Eta".to_owned(), eta.to_string());
        }
    }
    if r.eta_noise_seed_delta != 0 && info.stochastic {
        extra.insert("ENSD".to_owned(), r.eta_noise_seed_delta.to_string());
    }
    match r.emphasis {
        Emphasis::Original => {}
        Emphasis::NoNorm => {
            extra.insert("Emphasis".to_owned(), "No norm".to_owned());
        }
        Emphasis::Ignore => {
            extra.insert("Emphasis".to_owned(), "Ignore".to_owned());
        }
        Emphasis::None => {
            extra.insert("Emphasis".to_owned(), "None".to_owned());
        }
    }
    extra.insert(
        "RNG".to_owned(),
        match r.rng {
            RngSource::Cpu => "CPU",
            RngSource::Nv => "NV",
        }
        .to_owned(),
    );
    extra.insert(
        "Version".to_owned(),
        format!("danlu {}", env!("CARGO_PKG_VERSION")),
    );
    // LoRA, TI and hypernetwork hashes (`adapters.rs`).
    model.add_adapter_params(job, &mut params);
    params
}

/// The fields A1111 adds for an inpainting job (`modules/processing.py`
/// `StableDiffusionProcessingImg2Img.init`): `Mask blur` when there is a blur (A1111's
/// `mask_blur` property: the blur when both directions agree, otherwise nothing), `Mask mode:
/// Inpaint not masked` when inverted, `Masked content` for every mode but "original".
pub fn add_mask_params(mask: &Mask, params: &mut GenerationParams) {
    let extra = &mut params.extra;
    if mask.invert {
        extra.insert("Mask mode".to_owned(), "Inpaint not masked".to_owned());
    }
    if let Some(blur) = mask.blur().filter(|&b| b > 0) {
        extra.insert("Mask blur".to_owned(), blur.to_string());
    }
    if mask.fill != InpaintFill::Original {
        extra.insert("Masked content".to_owned(), mask.fill.label().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_settings_are_written_as_a1111_writes_them() {
        let mut params = GenerationParams::default();
        add_mask_params(&Mask::new(vec![255]), &mut params);
        assert_eq!(params.extra.get("Mask blur").map(String::as_str), Some("4"));
        assert!(!params.extra.contains_key("Masked content"));
        assert!(!params.extra.contains_key("Mask mode"));
        let mut params = GenerationParams::default();
        let mask = Mask {
            blur_x: 0,
            blur_y: 0,
            fill: InpaintFill::LatentNoise,
            invert: true,
            ..Mask::new(vec![255])
        };
        add_mask_params(&mask, &mut params);
        assert!(!params.extra.contains_key("Mask blur"));
        assert_eq!(
            params.extra.get("Masked content").map(String::as_str),
            Some("latent noise")
        );
        assert_eq!(
            params.extra.get("Mask mode").map(String::as_str),
            Some("Inpaint not masked")
        );
        // Uneven blurs: A1111's `mask_blur` is None and the key is left out.
        let mut params = GenerationParams::default();
        let mask = Mask {
            blur_y: 8,
            ..Mask::new(vec![255])
        };
        add_mask_params(&mask, &mut params);
        assert!(!params.extra.contains_key("Mask blur"));
    }

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
}
