//! Prompt + checkpoint + parameters = pictures: txt2img and img2img the way A1111 runs them.
//!
//! A [`Pipeline`] loads the three networks of a checkpoint once (optionally with an external
//! VAE) and then serves any number of [`Request`]s:
//!
//! 1. prompt and negative prompt go through A1111's tokenizer into 75-token chunks
//!    ([`PromptTokenizer`]), each chunk through the text encoder at the requested clip skip, the
//!    emphasis multipliers are applied per chunk ([`apply_emphasis`]), and the chunks are
//!    concatenated along the tokens (A1111 `sd_hijack_clip.py`, `forward`);
//! 2. the UNet becomes a [`NoisePredictor`] inside [`CfgDenoiser`]; when prompt and negative
//!    prompt have different chunk counts the two halves run as separate UNet calls, as A1111
//!    does with its default `pad_cond_uncond = False` (`sd_samplers_cfg_denoiser.py`);
//! 3. the initial noise comes from [`ImageRng`](crate::rng::ImageRng) with seeds `seed + i` for
//!    image `i` of the whole job (A1111 `processing.py`: `all_seeds`, then `batch_size` seeds
//!    per iteration; with a
//!    variation strength above 0 every image keeps `seed` and the subseeds advance instead);
//! 4. the sampler and schedule run by their A1111 names ([`sample`] / [`sample_img2img`]);
//!    ancestral samplers draw their step noise from the same per-image generators, the SDE
//!    samplers from one Brownian tree per image seeded with its seed ([`BrownianNoise`], A1111
//!    `create_noise_sampler`);
//! 5. each latent is decoded alone (A1111 `decode_latent_batch`) after `1 / scale_factor *`
//!    (ldm `decode_first_stage`), and converted to 8 bits as A1111 does ([`to_rgb8`]).
//!
//! Progress arrives through one callback per sampler step; returning
//! [`ControlFlow::Break`] cancels the job with [`Error::Cancelled`].

mod image;
mod inpaint;
mod mask;
mod resize;

pub use image::{InitImage, to_rgb8};
pub use inpaint::{Inpaint, InpaintFill, MaskResize, prepare_mask};
use inpaint::{LatentBlend, MaskedDenoiser, latent_masks};
pub use mask::{apply_overlay, blur_mask, fill_masked, invert_mask};
pub use resize::{Filter, ResizeMode, lanczos_resize, resample, resize_image};

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::adapters::state::{AdapterFolders, AdapterState, AppliedAdapters};
use crate::model::preview::{Rgb8, preview_cheap};
use crate::model::{
    Checkpoint, Prediction as UnetPrediction, TextConfig, TextEncoder, Unet, UnetConfig, Vae,
    VaeConfig,
};
use crate::prompt::{Emphasis, Padding, PromptTokenizer, apply_emphasis, parse_extra_networks};
use crate::rng::{RngSource, TorchCpuGenerator};
use crate::sampling::{
    BrownianNoise, CfgDenoiser, DiscreteSchedule, NoisePredictor, NoiseSource, Prediction,
    SampleRequest, SamplerKind, Scheduler, StepInfo, sample, sample_img2img,
};
use crate::{Error, Result};

/// Smallest accepted image side in pixels.
pub const MIN_SIZE: usize = 8;
/// Largest accepted image side in pixels.
pub const MAX_SIZE: usize = 8192;
/// Pixels per latent cell of the SD VAE (A1111 `opt_f`).
pub const LATENT_FACTOR: usize = 8;
/// Extra UNet input channels of an inpainting checkpoint: the mask and the masked image's
/// latent (ldm `c_concat`).
pub const INPAINT_EXTRA_CHANNELS: usize = 5;

/// Which model family a checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// SD 1.x: CLIP ViT-L/14 text encoder, `<|endoftext|>` padding.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H text tower (penultimate layer), padding with token 0.
    Sd2,
}

impl Family {
    /// How the chunks are padded (A1111 `sd_hijack_clip.py` / `sd_hijack_open_clip.py`).
    pub fn padding(self) -> Padding {
        match self {
            Self::Sd1 => Padding::EndOfText,
            Self::Sd2 => Padding::Zero,
        }
    }
}

/// The shapes of the three networks.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// The family (padding rules, defaults).
    pub family: Family,
    /// Text encoder.
    pub text: TextConfig,
    /// UNet (its `prediction` decides eps or v).
    pub unet: UnetConfig,
    /// VAE.
    pub vae: VaeConfig,
}

impl Architecture {
    /// The released SD 1.x shapes.
    pub fn sd1() -> Self {
        Self {
            family: Family::Sd1,
            text: TextConfig::sd1(),
            unet: UnetConfig::sd1(),
            vae: VaeConfig::sd(),
        }
    }

    /// The released SD 2.x shapes (epsilon prediction; see [`Architecture::with_prediction`]).
    pub fn sd2() -> Self {
        Self {
            family: Family::Sd2,
            text: TextConfig::sd2(),
            unet: UnetConfig::sd2(),
            vae: VaeConfig::sd(),
        }
    }

    /// The released shapes of `family`.
    pub fn of(family: Family) -> Self {
        match family {
            Family::Sd1 => Self::sd1(),
            Family::Sd2 => Self::sd2(),
        }
    }

    /// The same shapes with the UNet predicting `prediction`.
    #[must_use]
    pub fn with_prediction(mut self, prediction: UnetPrediction) -> Self {
        self.unet.prediction = prediction;
        self
    }
}

/// How to load a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Network shapes.
    pub architecture: Architecture,
    /// An external VAE file (`--vae`); `None` uses the VAE baked into the checkpoint.
    pub vae: Option<std::path::PathBuf>,
    /// Compute dtype of the networks (samplers always run in float32).
    pub dtype: DType,
    /// Where the networks run.
    pub device: Device,
}

impl LoadOptions {
    /// Float32 on the CPU with the baked VAE.
    pub fn new(architecture: Architecture) -> Self {
        Self {
            architecture,
            vae: None,
            dtype: DType::F32,
            device: Device::Cpu,
        }
    }
}

/// One txt2img or img2img job.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The prompt, A1111 syntax.
    pub prompt: String,
    /// The negative prompt.
    pub negative_prompt: String,
    /// Sampling steps (for img2img: before the denoising strength cuts them).
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub cfg_scale: f32,
    /// The sampler.
    pub sampler: SamplerKind,
    /// The schedule.
    pub scheduler: Scheduler,
    /// Seed of the first image.
    pub seed: u64,
    /// Variation seed and strength (A1111 "Variation seed", "Variation strength").
    pub variation: Option<(u64, f32)>,
    /// Image width in pixels (multiple of 8).
    pub width: usize,
    /// Image height in pixels (multiple of 8).
    pub height: usize,
    /// Images per sampler run.
    pub batch_size: usize,
    /// Sampler runs.
    pub n_iter: usize,
    /// A1111 "Clip skip" (1 = last layer; ignored by SD 2.x).
    pub clip_skip: usize,
    /// Noise source.
    pub rng: RngSource,
    /// Ancestral/SDE eta; `None` is A1111's default for the sampler.
    pub eta: Option<f64>,
    /// A1111 "Eta noise seed delta".
    pub eta_noise_seed_delta: u64,
    /// Emphasis mode (A1111 default "Original").
    pub emphasis: Emphasis,
    /// Whether each progress report carries a cheap live preview of the first image.
    pub preview: bool,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 20,
            cfg_scale: 7.0,
            sampler: SamplerKind::DpmPp2M,
            scheduler: Scheduler::Automatic,
            seed: 0,
            variation: None,
            width: 512,
            height: 512,
            batch_size: 1,
            n_iter: 1,
            clip_skip: 1,
            rng: RngSource::Cpu,
            eta: None,
            eta_noise_seed_delta: 0,
            emphasis: Emphasis::Original,
            preview: false,
        }
    }
}

impl Request {
    /// The seed A1111 gives image `index` of the job (`all_seeds`).
    pub fn seed_of(&self, index: usize) -> u64 {
        match self.variation {
            Some((_, strength)) if strength != 0.0 => self.seed,
            _ => self.seed.wrapping_add(index as u64),
        }
    }

    /// The variation seed A1111 gives image `index` of the job (`all_subseeds`).
    pub fn subseed_of(&self, index: usize) -> Option<u64> {
        self.variation
            .map(|(subseed, _)| subseed.wrapping_add(index as u64))
    }

    /// Checks sizes and counts.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first value out of range.
    pub fn validate(&self) -> Result<()> {
        for (what, side) in [("width", self.width), ("height", self.height)] {
            if side % LATENT_FACTOR != 0 || !(MIN_SIZE..=MAX_SIZE).contains(&side) {
                return Err(Error::Invalid {
                    what,
                    reason: format!(
                        "{side} is not a multiple of {LATENT_FACTOR} between {MIN_SIZE} and \
                         {MAX_SIZE}"
                    ),
                });
            }
        }
        let checks = [
            ("steps", self.steps, 1, 1000),
            ("batch size", self.batch_size, 1, 64),
            ("batch count", self.n_iter, 1, 10_000),
            ("clip skip", self.clip_skip, 1, 12),
        ];
        for (what, value, lo, hi) in checks {
            if !(lo..=hi).contains(&value) {
                return Err(Error::Invalid {
                    what,
                    reason: format!("{value} is not between {lo} and {hi}"),
                });
            }
        }
        if !self.cfg_scale.is_finite() {
            return Err(Error::Invalid {
                what: "CFG scale",
                reason: format!("{} is not a number", self.cfg_scale),
            });
        }
        Ok(())
    }
}

/// An img2img input: the picture and how much of it to repaint.
#[derive(Debug, Clone, PartialEq)]
pub struct Img2Img {
    /// The init image (its size must equal the request's).
    pub image: InitImage,
    /// A1111 "Denoising strength", 0 to 1.
    pub denoising_strength: f32,
}

/// One finished picture.
#[derive(Debug, Clone)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB, 8 bits per channel, row-major.
    pub pixels: Vec<u8>,
    /// The seed it was made with.
    pub seed: u64,
    /// Its variation seed, if any.
    pub subseed: Option<u64>,
    /// The final latent `[4, h/8, w/8]` (float32, before `1 / scale_factor`).
    pub latent: Tensor,
}

/// What the per-step callback sees.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Zero-based sampler run (`n_iter` runs in all).
    pub iteration: usize,
    /// Sampler runs of the job.
    pub iterations: usize,
    /// Zero-based step of this run.
    pub step: usize,
    /// Steps of this run.
    pub steps: usize,
    /// The sampler's own report (latent, denoised estimate, sigma).
    pub info: &'a StepInfo<'a>,
    /// A cheap preview of the first image's denoised estimate, when the request asked for it.
    pub preview: Option<Rgb8>,
}

/// The per-step callback: `Break` cancels the job.
pub type ProgressFn<'a> = dyn FnMut(&Progress<'_>) -> ControlFlow<()> + 'a;

/// Loaded networks, ready to generate.
#[derive(Debug)]
pub struct Pipeline {
    architecture: Architecture,
    text: TextEncoder,
    unet: Unet,
    vae: Vae,
    tokenizer: PromptTokenizer,
    schedule: DiscreteSchedule,
    dtype: DType,
    device: Device,
    /// The unpatched checkpoint, to rebuild patched networks from (LoRA).
    checkpoint: Checkpoint,
    /// Adapter folders, loaded adapters and the applied LoRA set.
    adapters: AdapterState,
}

fn open(path: &Path) -> Result<Checkpoint> {
    let index = danlu_format::read_index(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Checkpoint::from_index(index)
}

impl Pipeline {
    /// Loads the networks of the checkpoint at `path` (and the VAE of `options.vae`).
    ///
    /// # Errors
    /// When a file cannot be read or a network does not fit its tensors.
    pub fn load(path: impl AsRef<Path>, options: LoadOptions) -> Result<Self> {
        let checkpoint = open(path.as_ref())?;
        let vae = options.vae.as_deref().map(open).transpose()?;
        Self::from_checkpoint(&checkpoint, vae.as_ref(), options)
    }

    /// Builds the networks from an open checkpoint (and an open VAE file).
    ///
    /// # Errors
    /// When a network does not fit its tensors, or the UNet's input channels are neither its
    /// output channels nor those plus the 5 of an inpainting UNet (mask, masked-image latent).
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        vae: Option<&Checkpoint>,
        options: LoadOptions,
    ) -> Result<Self> {
        let LoadOptions {
            architecture,
            dtype,
            device,
            ..
        } = options;
        let text = checkpoint
            .load_text_encoder(architecture.text.clone(), dtype, &device)?
            .model;
        let unet = checkpoint
            .load_unet(architecture.unet.clone(), dtype, &device)?
            .model;
        let (cin, cout) = (unet.config.in_channels, unet.config.out_channels);
        if cin != cout && cin != cout + INPAINT_EXTRA_CHANNELS {
            return Err(Error::Invalid {
                what: "checkpoint",
                reason: format!("a UNet with {cin} input and {cout} output channels"),
            });
        }
        let vae = vae
            .unwrap_or(checkpoint)
            .load_vae(architecture.vae.clone(), dtype, &device)?
            .model;
        Ok(Self {
            architecture,
            text,
            unet,
            vae,
            tokenizer: PromptTokenizer::new(),
            schedule: DiscreteSchedule::sd(),
            dtype,
            device,
            checkpoint: checkpoint.clone(),
            adapters: AdapterState::default(),
        })
    }

    /// Sets the folders adapters are looked up in and loads their embeddings; returns the files
    /// that could not be used, as messages.
    pub fn set_adapter_folders(&mut self, folders: AdapterFolders) -> Vec<String> {
        let width = self.architecture.text.width;
        self.adapters.set_folders(folders, width, &self.tokenizer)
    }

    /// Applies the networks `prompt`'s tags name (`<lora:…>`, `<lyco:…>`, `<hypernet:…>`) from
    /// the adapter folders and lists the embeddings `prompt` and `negative_prompt` use. Call it
    /// before [`Pipeline::txt2img`] with the request's prompts; the same LoRA set as the last
    /// call costs nothing, another one rebuilds the text encoder and UNet from the unpatched
    /// checkpoint.
    ///
    /// # Errors
    /// When a named file cannot be read, a LoRA is for another model family, or a network
    /// cannot be rebuilt.
    pub fn apply_adapters(
        &mut self,
        prompt: &str,
        negative_prompt: &str,
    ) -> Result<AppliedAdapters> {
        self.adapters.apply(
            prompt,
            negative_prompt,
            &self.tokenizer,
            &self.checkpoint,
            (&self.architecture.text, &self.architecture.unet),
            self.dtype,
            &self.device,
            (&mut self.text, &mut self.unet),
        )
    }

    /// The network shapes.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// Whether the UNet is an inpainting UNet (9 input channels for SD): it always gets A1111's
    /// image conditioning (`txt2img_image_conditioning`, `inpainting_image_conditioning`).
    pub fn is_inpainting(&self) -> bool {
        self.unet.config.in_channels == self.unet.config.out_channels + INPAINT_EXTRA_CHANNELS
    }

    /// The text conditioning of `prompt`: `[1, 77 * chunks, width]` in float32 (A1111
    /// `FrozenCLIPEmbedderWithCustomWordsBase.forward` for one prompt).
    ///
    /// # Errors
    /// When the text encoder fails (clip skip out of range).
    pub fn encode_prompt(
        &self,
        prompt: &str,
        clip_skip: usize,
        emphasis: Emphasis,
    ) -> Result<Tensor> {
        let embeddings = self.adapters.embeddings();
        let tokenized = if self.tokenizer.emphasis() == emphasis {
            self.tokenizer.tokenize(prompt, embeddings)
        } else {
            PromptTokenizer::new()
                .with_emphasis(emphasis)
                .tokenize(prompt, embeddings)
        };
        let skip = self.text.a1111_skip(clip_skip);
        let padding = self.architecture.family.padding();
        let mut parts = Vec::with_capacity(tokenized.chunks.len());
        for chunk in &tokenized.chunks {
            let n = chunk.tokens.len();
            let z = embeddings
                .encode_chunk(&self.text, chunk, padding, skip, &self.device)?
                .to_dtype(DType::F32)?;
            let multipliers = Tensor::from_vec(chunk.multipliers.clone(), (1, n), &self.device)?;
            parts.push(apply_emphasis(&z, &multipliers, emphasis)?);
        }
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// Text to image.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad request, [`Error::Cancelled`] when the callback stops the
    /// job, or whatever a network reports.
    pub fn txt2img(&self, request: &Request, progress: &mut ProgressFn<'_>) -> Result<Vec<Image>> {
        self.run(request, None, progress)
    }

    /// Inpainting: img2img that repaints where `inpaint.mask` is white (A1111 img2img with a
    /// mask, "Inpaint area: Whole picture").
    ///
    /// As A1111 `processing.py` (`StableDiffusionProcessingImg2Img.init`, `sample`): the mask
    /// inverted when asked and blurred ([`blur_mask`]) at its own size, then resized to the
    /// picture's size with the img2img resize mode ([`Inpaint::prepared_mask`]); for every
    /// masked-content mode but "original" the picture's masked part filled with blurred colours
    /// from around it ([`fill_masked`], A1111 `masking.fill`) before it is encoded; the mask
    /// resized to the latent (Pillow's bicubic) and rounded gives `mask`/`nmask`; "latent noise"
    /// replaces the masked latent by the first seeds' noise (`create_random_tensors`), "latent
    /// nothing" zeroes it; the k-diffusion samplers get every denoised prediction blended
    /// `x * nmask + init_latent * mask`, the timestep samplers (DDIM, PLMS, UniPC) every model
    /// input instead (A1111 `CFGDenoiserTimesteps`, `mask_before_denoising`); the final latent is
    /// blended once more; an inpainting UNet also gets `inpainting_image_conditioning` (the
    /// rounded mask and the latent of the (filled) image with the masked part blanked,
    /// `inpainting_mask_weight` of the way); the decoded picture gets the original pixels back
    /// outside the mask (`apply_overlay` with `clip(mask * 2)`). The VAE samples come from one
    /// `torch.manual_seed(seed)` generator, the init image's first, then the masked image's (see
    /// [`Pipeline::img2img`]).
    ///
    /// # Errors
    /// As [`Pipeline::img2img`]; also for a mask whose length is not its size's.
    pub fn inpaint(
        &self,
        request: &Request,
        inpaint: &Inpaint,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Image>> {
        let (w, h) = (inpaint.image.width, inpaint.image.height);
        let mask = inpaint.prepared_mask()?;
        let image = match inpaint.fill {
            InpaintFill::Original => inpaint.image.clone(),
            _ => InitImage::new(w, h, fill_masked(&inpaint.image.pixels, &mask, w, h))?,
        };
        let prepared = Inpaint {
            mask,
            mask_resize: None,
            blur_x: 0,
            blur_y: 0,
            invert: false,
            ..inpaint.clone()
        };
        let init = Img2Img {
            image,
            denoising_strength: inpaint.denoising_strength,
        };
        self.check_img2img(request, &init)?;
        self.run(request, Some((&init, Some(&prepared))), progress)
    }

    /// Image to image: the init image is encoded, noised to the strength's sigma and denoised.
    ///
    /// The latent is a sample of the VAE's distribution, `mean + std * randn` (ldm
    /// `DiagonalGaussianDistribution.sample` via A1111 `images_tensor_to_samples`), one draw per
    /// image of the batch in order. A1111 draws it from torch's global CPU generator in whatever
    /// state earlier work left it, so its img2img latents are not reproducible from the
    /// parameters; here that generator is `torch.manual_seed(seed)` with the job's first seed,
    /// drawn once before the first run as A1111 encodes once, which makes the run reproducible
    /// and lets a reference reproduce it exactly. An inpainting UNet's image conditioning (the
    /// whole picture counted as masked) draws its VAE sample next from the same generator.
    ///
    /// # Errors
    /// As [`Pipeline::txt2img`]; also when the init image's size is not the request's or the
    /// strength leaves no step.
    pub fn img2img(
        &self,
        request: &Request,
        init: &Img2Img,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Image>> {
        self.check_img2img(request, init)?;
        self.run(request, Some((init, None)), progress)
    }

    fn check_img2img(&self, request: &Request, init: &Img2Img) -> Result<()> {
        if (init.image.width, init.image.height) != (request.width, request.height) {
            return Err(Error::Invalid {
                what: "init image",
                reason: format!(
                    "{}x{} does not match the requested {}x{}",
                    init.image.width, init.image.height, request.width, request.height
                ),
            });
        }
        if !(0.0..=1.0).contains(&init.denoising_strength) {
            return Err(Error::Invalid {
                what: "denoising strength",
                reason: format!("{} is not between 0 and 1", init.denoising_strength),
            });
        }
        Ok(())
    }

    /// Encodes `[1, 3, H, W]` pixels in `[-1, 1]` into `batch` latent samples (scaled by the
    /// VAE's factor), one `randn` per image from `generator`.
    fn encode_samples(
        &self,
        pixels: &Tensor,
        batch: usize,
        generator: &mut TorchCpuGenerator,
    ) -> Result<Tensor> {
        let dist = self.vae.encode(&pixels.to_dtype(self.dtype)?)?;
        let mean = dist.mean.to_dtype(DType::F32)?;
        let std = dist.std.to_dtype(DType::F32)?;
        let n = mean.elem_count();
        let mut latents = Vec::with_capacity(batch);
        for _ in 0..batch {
            let noise = Tensor::from_vec(generator.randn(n), mean.shape(), &self.device)?;
            let z = (&mean + (&std * noise)?)?;
            latents.push((z * self.vae.config.scaling_factor)?);
        }
        Ok(Tensor::cat(&latents, 0)?)
    }

    /// `[1, 3, H, W]` in `[-1, 1]`, as A1111 feeds the VAE (`image * 2 - 1`).
    fn pixels(&self, image: &InitImage) -> Result<Tensor> {
        Ok(((image.to_tensor(&self.device)? * 2.0)? - 1.0)?)
    }

    fn run(
        &self,
        request: &Request,
        init: Option<(&Img2Img, Option<&Inpaint>)>,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Image>> {
        request.validate()?;
        // A1111 `extra_networks.parse_prompts`: tags leave the prompt (not the negative one).
        let prompt = parse_extra_networks(&request.prompt).prompt;
        let cond = self.encode_prompt(&prompt, request.clip_skip, request.emphasis)?;
        let uncond = self.encode_prompt(
            &request.negative_prompt,
            request.clip_skip,
            request.emphasis,
        )?;
        let b = request.batch_size;
        let (h, w) = (
            request.height / LATENT_FACTOR,
            request.width / LATENT_FACTOR,
        );
        let channels = self.unet.config.out_channels;
        let prediction = match self.unet.config.prediction {
            UnetPrediction::Epsilon => Prediction::Epsilon,
            UnetPrediction::V => Prediction::V,
        };
        // A1111 encodes the init image once, in `init`, before the first run; the inpainting
        // conditioning's VAE sample follows from the same generator.
        let mut generator = TorchCpuGenerator::new(request.seed);
        let x0 = init
            .map(|(init, _)| self.encode_samples(&self.pixels(&init.image)?, b, &mut generator))
            .transpose()?;
        let masks = init
            .and_then(|(init, mask)| mask.map(|m| (init, m)))
            .map(|(init, m)| latent_masks(&init.image, &m.mask, channels, &self.device))
            .transpose()?;
        // A1111 `init`: "latent noise" and "latent nothing" change the masked latent.
        let x0 = match (x0, &masks, init.and_then(|(_, m)| m).map(|m| m.fill)) {
            (Some(x0), Some((mask, nmask)), Some(InpaintFill::LatentNoise)) => {
                let seeds: Vec<u64> = (0..b).map(|i| request.seed_of(i)).collect();
                let noise = crate::rng::ImageRng::new([channels, h, w], &seeds, request.rng)
                    .first()?
                    .to_device(&self.device)?;
                Some((x0.broadcast_mul(mask)? + noise.broadcast_mul(nmask)?)?)
            }
            (Some(x0), Some((mask, _)), Some(InpaintFill::LatentNothing)) => {
                Some(x0.broadcast_mul(mask)?)
            }
            (x0, _, _) => x0,
        };
        let img2img_conditioning = match init {
            Some((init, mask)) if self.is_inpainting() => {
                Some(self.inpainting_conditioning(&init.image, mask, b, &mut generator)?)
            }
            _ => None,
        };
        let predictor = UnetPredictor {
            unet: &self.unet,
            cond: cond.repeat((b, 1, 1))?.to_dtype(self.dtype)?,
            uncond: uncond.repeat((b, 1, 1))?.to_dtype(self.dtype)?,
            concat: img2img_conditioning,
            dtype: self.dtype,
        };
        let cfg = CfgDenoiser::new(
            predictor,
            self.schedule.clone(),
            prediction,
            request.cfg_scale,
        );
        let mut denoiser = MaskedDenoiser {
            inner: cfg,
            blend: match (&masks, &x0) {
                (Some((mask, nmask)), Some(x0)) => Some(LatentBlend {
                    init: x0.clone(),
                    mask: mask.clone(),
                    nmask: nmask.clone(),
                }),
                _ => None,
            },
        };
        let mut images = Vec::with_capacity(b * request.n_iter);
        for iteration in 0..request.n_iter {
            let first = iteration * b;
            let seeds: Vec<u64> = (first..first + b).map(|i| request.seed_of(i)).collect();
            let mut rng = crate::rng::ImageRng::new([channels, h, w], &seeds, request.rng)
                .with_eta_noise_seed_delta(request.eta_noise_seed_delta);
            let subseeds: Vec<u64> = (first..first + b)
                .filter_map(|i| request.subseed_of(i))
                .collect();
            if let Some((_, strength)) = request.variation {
                rng = rng.with_variation(&subseeds, strength);
            }
            let noise = rng.first()?.to_device(&self.device)?;
            if init.is_none() && self.is_inpainting() {
                // A1111 `txt2img_image_conditioning`, per sampler run.
                let mut generator = TorchCpuGenerator::new(seeds[0]);
                let concat = self.txt2img_conditioning(b, h, w, &mut generator)?;
                denoiser.inner.model_mut().concat = Some(concat);
            }
            // A1111 `create_noise_sampler`: SDE samplers take their step noise from one Brownian
            // tree per image of this iteration, seeded with the image's seed.
            let mut brownian = request
                .sampler
                .info()
                .brownian_noise
                .then(|| BrownianNoise::new(&seeds, [channels, h, w], request.rng));
            let noise_source: &mut dyn NoiseSource = match brownian.as_mut() {
                Some(tree) => tree,
                None => &mut rng,
            };
            let mut callback = |info: &StepInfo<'_>| {
                let preview = if request.preview {
                    info.denoised
                        .get(0)
                        .map_err(Error::from)
                        .and_then(|d| preview_cheap(&d))
                        .ok()
                } else {
                    None
                };
                progress(&Progress {
                    iteration,
                    iterations: request.n_iter,
                    step: info.step,
                    steps: info.total,
                    info,
                    preview,
                })
            };
            let sample_request = SampleRequest {
                sampler: request.sampler,
                scheduler: request.scheduler,
                steps: request.steps,
                eta: request
                    .eta
                    .unwrap_or_else(|| SampleRequest::default_eta(request.sampler)),
                noise,
                noise_source,
                callback: Some(&mut callback),
            };
            let latents = match (init, &x0) {
                (Some((init, _)), Some(x0)) => {
                    sample_img2img(&mut denoiser, sample_request, x0, init.denoising_strength)?
                }
                _ => sample(&mut denoiser, sample_request)?,
            };
            // A1111 `StableDiffusionProcessingImg2Img.sample`: the result blended once more.
            let latents = match &denoiser.blend {
                Some(blend) => blend.apply(&latents)?,
                None => latents,
            };
            for (i, &seed) in seeds.iter().enumerate() {
                let latent = latents.get(i)?;
                let mut pixels = self.decode(&latent)?;
                if let Some((_, Some(m))) = init {
                    apply_overlay(&mut pixels, &m.image.pixels, &m.mask);
                }
                images.push(Image {
                    width: request.width,
                    height: request.height,
                    pixels,
                    seed,
                    subseed: request.subseed_of(first + i),
                    latent,
                });
            }
        }
        Ok(images)
    }

    /// Decodes one latent `[4, h, w]` into 8-bit RGB.
    ///
    /// # Errors
    /// Whatever the VAE reports.
    pub fn decode(&self, latent: &Tensor) -> Result<Vec<u8>> {
        let z = (latent.unsqueeze(0)? * (1.0 / self.vae.config.scaling_factor))?;
        let x = self.vae.decode(&z.to_dtype(self.dtype)?)?;
        to_rgb8(&x.get(0)?)
    }
}

/// The UNet with both conditionings bound, as the samplers call it.
struct UnetPredictor<'a> {
    unet: &'a Unet,
    /// `[B, T, C]` prompt conditioning.
    cond: Tensor,
    /// `[B, T', C]` negative prompt conditioning.
    uncond: Tensor,
    /// `[B, 5, h, w]` image conditioning of an inpainting UNet (`c_concat`), the same for both
    /// CFG halves.
    concat: Option<Tensor>,
    dtype: DType,
}

impl NoisePredictor for UnetPredictor<'_> {
    fn predict(&mut self, x_in: &Tensor, timestep: f32) -> Result<Tensor> {
        let mut x = x_in.to_dtype(self.dtype)?;
        if let Some(concat) = &self.concat {
            let times = x.dim(0)? / concat.dim(0)?.max(1);
            let c = concat.repeat((times, 1, 1, 1))?.to_dtype(self.dtype)?;
            x = Tensor::cat(&[&x, &c], 1)?;
        }
        let t = f64::from(timestep);
        let out = if self.cond.dim(1)? == self.uncond.dim(1)? {
            let context = Tensor::cat(&[&self.cond, &self.uncond], 0)?;
            self.unet.forward(&x, t, &context)?
        } else {
            // A1111 `CFGDenoiser.forward` without `pad_cond_uncond`: prompt and negative prompt
            // of different lengths run as two UNet calls.
            let b = x.dim(0)? / 2;
            let c = self.unet.forward(&x.narrow(0, 0, b)?, t, &self.cond)?;
            let u = self.unet.forward(&x.narrow(0, b, b)?, t, &self.uncond)?;
            Tensor::cat(&[c, u], 0)?
        };
        Ok(out.to_dtype(DType::F32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_advance_per_image_unless_varied() {
        let r = Request {
            seed: 10,
            ..Request::default()
        };
        assert_eq!((r.seed_of(0), r.seed_of(3)), (10, 13));
        assert_eq!(r.subseed_of(2), None);
        let v = Request {
            seed: 10,
            variation: Some((50, 0.3)),
            ..Request::default()
        };
        assert_eq!((v.seed_of(0), v.seed_of(3)), (10, 10));
        assert_eq!(v.subseed_of(2), Some(52));
    }

    #[test]
    fn sizes_must_be_multiples_of_eight() {
        let bad = Request {
            width: 100,
            ..Request::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::Invalid { what: "width", .. })
        ));
        let tiny = Request {
            height: 0,
            ..Request::default()
        };
        assert!(tiny.validate().is_err());
        assert!(Request::default().validate().is_ok());
    }
}
