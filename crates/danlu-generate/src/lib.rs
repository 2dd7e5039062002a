//! Generation jobs: the layer between a person's choice of files and parameters and the engine.
//!
//! A [`ModelSpec`] names a checkpoint and a VAE; [`LoadedModel::load`] identifies the networks,
//! hashes the files as A1111 does (`Model hash`, `VAE hash`: AutoV2) and loads them once; a
//! [`Job`] is one txt2img or img2img request, and [`LoadedModel::generate`] turns it into
//! [`Generated`] images, each a PNG carrying the A1111 `parameters` text that A1111, Civitai and
//! `danlu pnginfo` read back. The CLI, the server and `reproduce` share this layer, so an image
//! made by any of them records the same parameters.

mod adapters;
mod error;
mod image;
mod infotext;
mod mask;
mod output;
mod shapes;

pub use adapters::AdapterUse;
pub use error::{Error, Result};
pub use image::{encode_png, read_init_image};
pub use infotext::{add_mask_params, generation_params, resolved_scheduler};
pub use mask::{DEFAULT_MASK_BLUR, InpaintFill, Mask, MaskResize};
pub use output::{output_paths, random_seed};
pub use shapes::{
    ShapesFile, TextShape, UnetShape, VaeShape, choose_architecture, parse_family, shapes_sidecar,
};

use candle_core::DType;
pub use danlu_diffusion::DeviceChoice;
use danlu_diffusion::pipeline::{
    Architecture, Family, Image, Img2Img, LoadOptions, Pipeline, ProgressFn, Request,
};
use danlu_pnginfo::GenerationParams;
use danlu_types::Reporter;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Which VAE decodes the latents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VaeChoice {
    /// The VAE baked into the checkpoint.
    #[default]
    Baked,
    /// An external VAE file (A1111 `.vae.pt`/`.vae.safetensors` or a plain VAE).
    File(PathBuf),
}

/// The files and settings that make the networks of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The checkpoint file (single-file A1111 layout) or diffusers folder.
    pub checkpoint: PathBuf,
    /// The VAE.
    pub vae: VaeChoice,
    /// Family override (`None`: what `inspect` identifies).
    pub family: Option<Family>,
    /// Force v-prediction (otherwise from the identity: A1111's `.yaml` sidecar).
    pub v_pred: bool,
    /// A shapes file (otherwise `NAME.shapes.json` beside the checkpoint, else the released
    /// shapes).
    pub shapes: Option<PathBuf>,
    /// Compute precision (`None`: the device's default, float32 on the CPU and float16 on a GPU).
    pub dtype: Option<DType>,
    /// Where the networks run.
    pub device: DeviceChoice,
    /// Hashes already known (from the library cache), to skip hashing multi-GB files.
    pub known_hashes: KnownHashes,
}

impl ModelSpec {
    /// The checkpoint with its baked VAE and identified shapes, on the best device of this build
    /// in its default precision.
    pub fn new(checkpoint: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint: checkpoint.into(),
            vae: VaeChoice::Baked,
            family: None,
            v_pred: false,
            shapes: None,
            dtype: None,
            device: DeviceChoice::Auto,
            known_hashes: KnownHashes::default(),
        }
    }

    /// The external VAE file, if any.
    pub fn vae_file(&self) -> Option<&Path> {
        match &self.vae {
            VaeChoice::Baked => None,
            VaeChoice::File(p) => Some(p),
        }
    }
}

/// AutoV2 hashes (10 hex digits) known in advance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnownHashes {
    /// The checkpoint's.
    pub checkpoint: Option<String>,
    /// The external VAE's.
    pub vae: Option<String>,
}

/// Loaded networks with what the infotext needs to name them.
#[derive(Debug)]
pub struct LoadedModel {
    /// What was loaded.
    pub spec: ModelSpec,
    /// The networks.
    pub pipeline: Pipeline,
    /// The checkpoint's AutoV2 hash (A1111 `Model hash`).
    pub model_hash: String,
    /// The external VAE's AutoV2 hash (A1111 `VAE hash`).
    pub vae_hash: Option<String>,
    /// Seconds spent hashing and loading.
    pub load_seconds: f64,
    /// The adapters applied for the last job ([`LoadedModel::apply_adapters`]).
    pub adapters: AdapterUse,
}

/// AutoV2 of a file.
fn autov2(path: &Path, reporter: &dyn Reporter, cancel: &AtomicBool) -> Result<String> {
    let hashes = danlu_hash::hash_file(path, reporter, cancel).map_err(|source| Error::Hash {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(hashes.autov2)
}

impl LoadedModel {
    /// Identifies, hashes and loads the networks of `spec`.
    ///
    /// # Errors
    /// An unreadable or unsupported checkpoint or VAE, a network that does not fit its
    /// tensors, or hashing cancelled through `cancel`.
    pub fn load(spec: ModelSpec, reporter: &dyn Reporter, cancel: &AtomicBool) -> Result<Self> {
        let started = std::time::Instant::now();
        let architecture = choose_architecture(
            &spec.checkpoint,
            spec.family,
            spec.v_pred,
            spec.shapes.as_deref(),
        )?;
        let model_hash = match (&spec.known_hashes.checkpoint, spec.checkpoint.is_file()) {
            (Some(h), _) => h.clone(),
            (None, true) => autov2(&spec.checkpoint, reporter, cancel)?,
            // A diffusers folder has no single-file hash.
            (None, false) => String::new(),
        };
        let vae_hash = match (spec.vae_file(), &spec.known_hashes.vae) {
            (None, _) => None,
            (Some(_), Some(h)) => Some(h.clone()),
            (Some(p), None) => Some(autov2(p, reporter, cancel)?),
        };
        let device = spec.device.open()?;
        let dtype = spec
            .dtype
            .unwrap_or_else(|| danlu_diffusion::device::default_dtype(&device));
        let task = reporter.start("loading checkpoint", None);
        let pipeline = Pipeline::load(
            &spec.checkpoint,
            LoadOptions {
                architecture,
                vae: spec.vae_file().map(Path::to_path_buf),
                dtype,
                device,
            },
        );
        reporter.finish(task);
        Ok(Self {
            pipeline: pipeline?,
            spec,
            model_hash,
            vae_hash,
            load_seconds: started.elapsed().as_secs_f64(),
            adapters: AdapterUse::default(),
        })
    }

    /// The network shapes.
    pub fn architecture(&self) -> &Architecture {
        self.pipeline.architecture()
    }

    /// The A1111 `Model` name: the checkpoint's file stem.
    pub fn model_name(&self) -> String {
        stem(&self.spec.checkpoint)
    }

    /// The A1111 `VAE` name: the external VAE's file name.
    pub fn vae_name(&self) -> Option<String> {
        self.spec.vae_file().map(|v| {
            v.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
    }

    /// Runs `job`, calling `progress` after every sampling step (returning `Break` cancels).
    ///
    /// # Errors
    /// An invalid request, an engine failure, or cancellation.
    pub fn generate(&self, job: &Job, progress: &mut ProgressFn<'_>) -> Result<Vec<Generated>> {
        job.request.validate()?;
        let images = match &job.img2img {
            Some(init) => self.pipeline.img2img(&job.request, init, progress)?,
            None => self.pipeline.txt2img(&job.request, progress)?,
        };
        images
            .into_iter()
            .map(|image| {
                let params = generation_params(self, job, &image);
                let parameters = danlu_pnginfo::to_a1111_infotext(&params);
                let png = danlu_pnginfo::write_png_parameters(&encode_png(&image)?, &parameters)?;
                Ok(Generated {
                    image,
                    params,
                    parameters,
                    png,
                })
            })
            .collect()
    }
}

impl LoadedModel {
    /// Runs `job` as inpainting (A1111 img2img with a mask, "Inpaint area: Whole picture"; see
    /// [`Pipeline::inpaint`](danlu_diffusion::pipeline::Pipeline::inpaint)): `job.img2img` is
    /// the picture and the strength, `mask` the mask (the init image's size or its own, see
    /// [`Mask::resize`]) and its settings.
    /// The infotext gains A1111's `Mask blur`, `Mask mode` and `Masked content`.
    ///
    /// # Errors
    /// As [`LoadedModel::generate`]; also without `job.img2img`, or for a mask whose pixel
    /// count is not its size's.
    pub fn inpaint(
        &self,
        job: &Job,
        mask: &Mask,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Vec<Generated>> {
        job.request.validate()?;
        let Some(init) = &job.img2img else {
            return Err(danlu_diffusion::Error::Invalid {
                what: "mask",
                reason: "a mask needs an init image".to_owned(),
            }
            .into());
        };
        let inpaint = danlu_diffusion::pipeline::Inpaint {
            image: init.image.clone(),
            mask: mask.pixels.clone(),
            mask_resize: mask.resize,
            denoising_strength: init.denoising_strength,
            fill: mask.fill,
            mask_weight: 1.0,
            blur_x: mask.blur_x,
            blur_y: mask.blur_y,
            invert: mask.invert,
        };
        let images = self.pipeline.inpaint(&job.request, &inpaint, progress)?;
        images
            .into_iter()
            .map(|image| {
                let mut params = generation_params(self, job, &image);
                add_mask_params(mask, &mut params);
                let parameters = danlu_pnginfo::to_a1111_infotext(&params);
                let png = danlu_pnginfo::write_png_parameters(&encode_png(&image)?, &parameters)?;
                Ok(Generated {
                    image,
                    params,
                    parameters,
                    png,
                })
            })
            .collect()
    }
}

/// One txt2img (no init image) or img2img job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Prompt and parameters.
    pub request: Request,
    /// The init image and denoising strength, for img2img.
    pub img2img: Option<Img2Img>,
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The pixels, seed and final latent.
    pub image: Image,
    /// The parameters as fields.
    pub params: GenerationParams,
    /// The parameters as A1111 infotext (what the PNG carries).
    pub parameters: String,
    /// The PNG file's bytes, with the `parameters` text chunk.
    pub png: Vec<u8>,
}

pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
