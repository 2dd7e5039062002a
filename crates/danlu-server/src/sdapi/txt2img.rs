//! `POST /sdapi/v1/txt2img` and `POST /sdapi/v1/img2img`: A1111's request models
//! (`modules/api/models.py`, built from `StableDiffusionProcessingTxt2Img` and `...Img2Img`
//! with their defaults), turned into a danlu job, queued, and answered as A1111's
//! `TextToImageResponse` / `ImageToImageResponse`.

use crate::engine::{LoadedInfo, Output, PasteBack, Work};
use crate::error::{ApiError, ApiResult};
use crate::sdapi::options::{Effective, effective};
use crate::state::Shared;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use danlu_diffusion::pipeline::{Img2Img, InitImage, Request, ResizeMode, resize_image};
use danlu_diffusion::sampling::{SampleRequest, Scheduler, parse_sampler_name};
use danlu_generate::{Generated, InpaintFill, Job, Mask, MaskResize};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A1111 `StableDiffusionTxt2ImgProcessingAPI`, every field with A1111's default. Fields danlu
/// does not act on are kept so that `parameters` echoes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Txt2ImgRequest {
    pub(crate) prompt: String,
    pub(crate) negative_prompt: String,
    pub(crate) styles: Vec<String>,
    pub(crate) seed: i64,
    pub(crate) subseed: i64,
    pub(crate) subseed_strength: f64,
    pub(crate) seed_resize_from_h: i64,
    pub(crate) seed_resize_from_w: i64,
    pub(crate) sampler_name: Option<String>,
    pub(crate) sampler_index: String,
    pub(crate) scheduler: Option<String>,
    pub(crate) batch_size: i64,
    pub(crate) n_iter: i64,
    pub(crate) steps: i64,
    pub(crate) cfg_scale: f64,
    pub(crate) width: i64,
    pub(crate) height: i64,
    pub(crate) restore_faces: Option<bool>,
    pub(crate) tiling: Option<bool>,
    pub(crate) do_not_save_samples: bool,
    pub(crate) do_not_save_grid: bool,
    pub(crate) eta: Option<f64>,
    pub(crate) denoising_strength: Option<f64>,
    pub(crate) s_min_uncond: Option<f64>,
    pub(crate) s_churn: Option<f64>,
    pub(crate) s_tmax: Option<f64>,
    pub(crate) s_tmin: Option<f64>,
    pub(crate) s_noise: Option<f64>,
    pub(crate) override_settings: Option<Map<String, Value>>,
    pub(crate) override_settings_restore_afterwards: bool,
    pub(crate) refiner_checkpoint: Option<String>,
    pub(crate) refiner_switch_at: Option<f64>,
    pub(crate) disable_extra_networks: bool,
    pub(crate) comments: Option<Value>,
    pub(crate) enable_hr: bool,
    pub(crate) firstphase_width: i64,
    pub(crate) firstphase_height: i64,
    pub(crate) hr_scale: f64,
    pub(crate) hr_upscaler: Option<String>,
    pub(crate) hr_second_pass_steps: i64,
    pub(crate) hr_resize_x: i64,
    pub(crate) hr_resize_y: i64,
    pub(crate) hr_checkpoint_name: Option<String>,
    pub(crate) hr_sampler_name: Option<String>,
    pub(crate) hr_scheduler: Option<String>,
    pub(crate) hr_prompt: String,
    pub(crate) hr_negative_prompt: String,
    pub(crate) force_task_id: Option<String>,
    pub(crate) script_name: Option<String>,
    pub(crate) script_args: Vec<Value>,
    pub(crate) send_images: bool,
    pub(crate) save_images: bool,
    pub(crate) alwayson_scripts: Map<String, Value>,
    pub(crate) infotext: Option<String>,
}

impl Default for Txt2ImgRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            styles: Vec::new(),
            seed: -1,
            subseed: -1,
            subseed_strength: 0.0,
            seed_resize_from_h: -1,
            seed_resize_from_w: -1,
            sampler_name: None,
            // A1111's API default sampler.
            sampler_index: "Euler".to_owned(),
            scheduler: None,
            batch_size: 1,
            n_iter: 1,
            steps: 50,
            cfg_scale: 7.0,
            width: 512,
            height: 512,
            restore_faces: None,
            tiling: None,
            do_not_save_samples: false,
            do_not_save_grid: false,
            eta: None,
            denoising_strength: None,
            s_min_uncond: None,
            s_churn: None,
            s_tmax: None,
            s_tmin: None,
            s_noise: None,
            override_settings: None,
            override_settings_restore_afterwards: true,
            refiner_checkpoint: None,
            refiner_switch_at: None,
            disable_extra_networks: false,
            comments: None,
            enable_hr: false,
            firstphase_width: 0,
            firstphase_height: 0,
            hr_scale: 2.0,
            hr_upscaler: None,
            hr_second_pass_steps: 0,
            hr_resize_x: 0,
            hr_resize_y: 0,
            hr_checkpoint_name: None,
            hr_sampler_name: None,
            hr_scheduler: None,
            hr_prompt: String::new(),
            hr_negative_prompt: String::new(),
            force_task_id: None,
            script_name: None,
            script_args: Vec::new(),
            send_images: true,
            save_images: false,
            alwayson_scripts: Map::new(),
            infotext: None,
        }
    }
}

/// A1111 `StableDiffusionImg2ImgProcessingAPI`: the txt2img fields plus the init images.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Img2ImgRequest {
    #[serde(flatten)]
    pub(crate) common: Txt2ImgRequest,
    pub(crate) init_images: Option<Vec<String>>,
    pub(crate) resize_mode: i64,
    pub(crate) image_cfg_scale: Option<f64>,
    pub(crate) mask: Option<String>,
    pub(crate) mask_blur_x: i64,
    pub(crate) mask_blur_y: i64,
    pub(crate) mask_blur: Option<i64>,
    pub(crate) inpainting_fill: i64,
    pub(crate) inpaint_full_res: bool,
    pub(crate) inpaint_full_res_padding: i64,
    pub(crate) inpainting_mask_invert: i64,
    pub(crate) initial_noise_multiplier: Option<f64>,
    pub(crate) latent_mask: Option<String>,
    pub(crate) include_init_images: bool,
}

impl Default for Img2ImgRequest {
    fn default() -> Self {
        Self {
            common: Txt2ImgRequest {
                denoising_strength: Some(0.75),
                ..Txt2ImgRequest::default()
            },
            init_images: None,
            resize_mode: 0,
            image_cfg_scale: None,
            mask: None,
            mask_blur_x: 4,
            mask_blur_y: 4,
            mask_blur: None,
            inpainting_fill: 0,
            inpaint_full_res: true,
            inpaint_full_res_padding: 0,
            inpainting_mask_invert: 0,
            initial_noise_multiplier: None,
            latent_mask: None,
            include_init_images: false,
        }
    }
}

/// A1111 `TextToImageResponse` / `ImageToImageResponse`.
#[derive(Debug, Serialize)]
pub(crate) struct ImageResponse<P> {
    /// Base64 PNGs (with their `parameters` chunk).
    pub(crate) images: Vec<String>,
    /// The request as understood, defaults filled in.
    pub(crate) parameters: P,
    /// A JSON string: A1111 `Processed.js()`.
    pub(crate) info: String,
}

/// A1111 `Processed.js()` keys (`modules/processing.py`).
#[derive(Debug, Serialize)]
pub(crate) struct ProcessedInfo {
    prompt: String,
    all_prompts: Vec<String>,
    negative_prompt: String,
    all_negative_prompts: Vec<String>,
    seed: u64,
    all_seeds: Vec<u64>,
    subseed: u64,
    all_subseeds: Vec<u64>,
    subseed_strength: f64,
    width: usize,
    height: usize,
    sampler_name: String,
    cfg_scale: f64,
    steps: usize,
    batch_size: usize,
    restore_faces: bool,
    face_restoration_model: Option<String>,
    sd_model_name: String,
    sd_model_hash: String,
    sd_vae_name: Option<String>,
    sd_vae_hash: Option<String>,
    seed_resize_from_w: i64,
    seed_resize_from_h: i64,
    denoising_strength: Option<f64>,
    extra_generation_params: Map<String, Value>,
    index_of_first_image: usize,
    infotexts: Vec<String>,
    styles: Vec<String>,
    job_timestamp: String,
    clip_skip: usize,
    is_using_inpainting_conditioning: bool,
    version: String,
    /// Whether the job was interrupted (a danlu addition; fewer images than asked).
    interrupted: bool,
    /// Prompt tags naming nothing installed and similar (a danlu addition).
    warnings: Vec<String>,
}

/// The largest image the server makes: 2048x2048 (A1111's UI slider maximum).
const MAX_PIXELS: usize = 2048 * 2048;

/// The most pixels in one batch (a bound on memory, which grows with the batch).
const MAX_BATCH_PIXELS: usize = 4 * MAX_PIXELS;

/// A count or size field as `usize`, refusing negatives.
fn count(what: &str, v: i64) -> ApiResult<usize> {
    usize::try_from(v).map_err(|_| ApiError::invalid(format!("{what}: {v} is negative")))
}

/// A seed: -1 picks a random one (A1111 `get_fixed_seed`).
fn seed(what: &str, v: i64) -> ApiResult<u64> {
    match v {
        -1 => Ok(danlu_generate::random_seed()),
        v => u64::try_from(v)
            .map_err(|_| ApiError::invalid(format!("{what}: {v} is neither -1 nor a seed"))),
    }
}

/// Turns an A1111 request into an engine request, checking every value.
///
/// # Errors
/// 422 for features danlu does not run (hires fix, refiner, scripts), an unknown sampler or
/// scheduler, and any value out of range.
pub(crate) fn to_request(r: &Txt2ImgRequest, eff: &Effective) -> ApiResult<Request> {
    if r.enable_hr {
        return Err(ApiError::invalid(
            "enable_hr: hires fix is not supported yet",
        ));
    }
    if r.refiner_checkpoint
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s != "None")
    {
        return Err(ApiError::invalid(
            "refiner_checkpoint: the refiner is not supported yet",
        ));
    }
    if r.script_name.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::invalid("script_name: scripts are not supported"));
    }
    let scheduler = match r.scheduler.as_deref() {
        None | Some("") => Scheduler::Automatic,
        Some(s) => Scheduler::parse_name(s).map_err(|e| ApiError::invalid(e.to_string()))?,
    };
    let name = r
        .sampler_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(&r.sampler_index);
    let (sampler, scheduler) =
        parse_sampler_name(name, scheduler).map_err(|e| ApiError::invalid(e.to_string()))?;
    let info = sampler.info();
    let eta = r.eta.unwrap_or(if info.timesteps {
        eff.eta_ddim
    } else {
        eff.eta_ancestral
    });
    let uses_eta = info.stochastic || sampler == danlu_diffusion::sampling::SamplerKind::Ddim;
    // A1111 writes `Eta` only when it differs from the sampler's default.
    let eta = (uses_eta && eta != SampleRequest::default_eta(sampler)).then_some(eta);
    if !r.cfg_scale.is_finite() {
        return Err(ApiError::invalid("cfg_scale: not a number"));
    }
    let variation = if r.subseed_strength != 0.0 {
        if !(0.0..=1.0).contains(&r.subseed_strength) {
            return Err(ApiError::invalid(format!(
                "subseed_strength: {} is not between 0 and 1",
                r.subseed_strength
            )));
        }
        Some((seed("subseed", r.subseed)?, r.subseed_strength as f32))
    } else {
        None
    };
    let request = Request {
        prompt: r.prompt.clone(),
        negative_prompt: r.negative_prompt.clone(),
        steps: count("steps", r.steps)?,
        cfg_scale: r.cfg_scale as f32,
        sampler,
        scheduler,
        seed: seed("seed", r.seed)?,
        variation,
        width: count("width", r.width)?,
        height: count("height", r.height)?,
        batch_size: count("batch_size", r.batch_size)?,
        n_iter: count("n_iter", r.n_iter)?,
        clip_skip: eff.clip_skip,
        rng: eff.rng,
        eta,
        eta_noise_seed_delta: eff.eta_noise_seed_delta,
        emphasis: eff.emphasis,
        preview: true,
    };
    request
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let pixels = request.width * request.height;
    if pixels > MAX_PIXELS || pixels * request.batch_size > MAX_BATCH_PIXELS {
        return Err(ApiError::invalid(format!(
            "{}x{} x {} images is more than this server makes at once ({} megapixels per image, \
             {} per batch)",
            request.width,
            request.height,
            request.batch_size,
            MAX_PIXELS / (1 << 20),
            MAX_BATCH_PIXELS / (1 << 20)
        )));
    }
    Ok(request)
}

/// Queues a job and builds A1111's answer. Images are saved (A1111 `save_images`) under
/// `ROOT/outputs/{label}-images/YYYY-MM-DD` (A1111 `outdir_txt2img_samples`,
/// `outdir_img2img_samples`).
async fn run_job(
    state: &Shared,
    common: &Txt2ImgRequest,
    img2img: Option<Img2Img>,
    mask: Option<Mask>,
    paste: Option<PasteBack>,
    label: &'static str,
) -> ApiResult<(Vec<String>, String)> {
    let options = state.options_snapshot();
    let eff = effective(&options, common.override_settings.as_ref())?;
    let request = to_request(common, &eff)?;
    let records = state.library.records();
    let spec = state.model_spec(&records, &eff)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no checkpoint in the library: put one in `{}` and press refresh",
            state
                .library
                .folder(danlu_types::Kind::Checkpoint)
                .unwrap_or_else(|| state.library.root.path.clone())
                .display()
        ))
    })?;
    let denoising = img2img.as_ref().map(|i| f64::from(i.denoising_strength));
    let job = Job {
        request: request.clone(),
        img2img,
    };
    let out = state
        .engine
        .run(Work::Generate {
            spec,
            job: Box::new(job),
            label,
            task: common.force_task_id.clone(),
            save_to: common.save_images.then(|| {
                state
                    .library
                    .root
                    .path
                    .join("outputs")
                    .join(format!("{label}-images"))
            }),
            mask: mask.map(|mask| Box::new((mask, paste))),
        })
        .await?;
    let Output::Images {
        images,
        interrupted,
        model,
        warnings,
    } = out
    else {
        return Err(ApiError::with_status(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "the engine answered a generation with no images",
        ));
    };
    if !common.override_settings_restore_afterwards
        && let Some(over) = &common.override_settings
    {
        // A1111 keeps the overrides as settings when asked not to restore them.
        let mut next = state.options_snapshot();
        next.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
        state.set_options(next);
    }
    let mut info = processed_info(common, &request, &images, &model, denoising, interrupted);
    info.warnings = warnings;
    let info = serde_json::to_string(&info).map_err(|e| ApiError::internal(&e))?;
    let encoded = if common.send_images {
        images
            .iter()
            .map(|g| crate::sdapi::encode_base64(&g.png))
            .collect()
    } else {
        Vec::new()
    };
    Ok((encoded, info))
}

fn processed_info(
    r: &Txt2ImgRequest,
    request: &Request,
    images: &[Generated],
    model: &LoadedInfo,
    denoising_strength: Option<f64>,
    interrupted: bool,
) -> ProcessedInfo {
    let total = request.batch_size * request.n_iter;
    let all_seeds: Vec<u64> = if images.is_empty() {
        (0..total).map(|i| request.seed_of(i)).collect()
    } else {
        images.iter().map(|g| g.image.seed).collect()
    };
    let all_subseeds: Vec<u64> = if images.is_empty() {
        (0..total)
            .map(|i| request.subseed_of(i).unwrap_or(request.seed_of(i)))
            .collect()
    } else {
        images
            .iter()
            .map(|g| g.image.subseed.unwrap_or(g.image.seed))
            .collect()
    };
    let n = all_seeds.len();
    let mut extra = Map::new();
    if let Some(g) = images.first() {
        for (k, v) in &g.params.extra {
            extra.insert(k.clone(), v.clone().into());
        }
    }
    ProcessedInfo {
        prompt: request.prompt.clone(),
        all_prompts: vec![request.prompt.clone(); n],
        negative_prompt: request.negative_prompt.clone(),
        all_negative_prompts: vec![request.negative_prompt.clone(); n],
        seed: all_seeds.first().copied().unwrap_or(request.seed),
        subseed: all_subseeds.first().copied().unwrap_or(request.seed),
        all_seeds,
        all_subseeds,
        subseed_strength: r.subseed_strength,
        width: request.width,
        height: request.height,
        sampler_name: request.sampler.label().to_owned(),
        cfg_scale: f64::from(request.cfg_scale),
        steps: request.steps,
        batch_size: request.batch_size,
        restore_faces: false,
        face_restoration_model: None,
        sd_model_name: model.model_name.clone(),
        sd_model_hash: model.model_hash.clone(),
        sd_vae_name: model.vae_name.clone(),
        sd_vae_hash: model.vae_hash.clone(),
        seed_resize_from_w: r.seed_resize_from_w,
        seed_resize_from_h: r.seed_resize_from_h,
        denoising_strength,
        extra_generation_params: extra,
        index_of_first_image: 0,
        infotexts: images.iter().map(|g| g.parameters.clone()).collect(),
        styles: r.styles.clone(),
        job_timestamp: crate::engine::timestamp_now(),
        clip_skip: request.clip_skip,
        is_using_inpainting_conditioning: false,
        version: format!("danlu {}", env!("CARGO_PKG_VERSION")),
        interrupted,
        warnings: Vec::new(),
    }
}

/// `POST /sdapi/v1/txt2img`.
pub(crate) async fn txt2img(
    State(state): State<Shared>,
    body: Bytes,
) -> ApiResult<Json<ImageResponse<Txt2ImgRequest>>> {
    let req: Txt2ImgRequest = crate::sdapi::parse_json(&body)?;
    let (images, info) = run_job(&state, &req, None, None, None, "txt2img").await?;
    Ok(Json(ImageResponse {
        images,
        parameters: req,
        info,
    }))
}

/// Parses an img2img body: A1111's default strength 0.75 applies when none is given (the
/// flattened txt2img part has no strength of its own).
fn parse_img2img(body: &[u8]) -> ApiResult<Img2ImgRequest> {
    let mut req: Img2ImgRequest = crate::sdapi::parse_json(body)?;
    req.common.denoising_strength.get_or_insert(0.75);
    Ok(req)
}

/// `POST /sdapi/v1/img2img`.
pub(crate) async fn img2img(
    State(state): State<Shared>,
    body: Bytes,
) -> ApiResult<Json<ImageResponse<Img2ImgRequest>>> {
    let mut req = parse_img2img(&body)?;
    let (init, mask, paste) = read_img2img(&req)?;
    let (images, info) = run_job(&state, &req.common, Some(init), mask, paste, "img2img").await?;
    if !req.include_init_images {
        // A1111 leaves the (large) init images out of the echo unless asked.
        req.init_images = None;
    }
    Ok(Json(ImageResponse {
        images,
        parameters: req,
        info,
    }))
}

/// The init image and mask of an img2img request, both resized to the request's size by its
/// `resize_mode` (A1111 `StableDiffusionProcessingImg2Img.init`).
///
/// # Errors
/// 422 for a missing or undecodable image or mask, and settings out of range.
fn read_img2img(req: &Img2ImgRequest) -> ApiResult<(Img2Img, Option<Mask>, Option<PasteBack>)> {
    let first = req
        .init_images
        .as_ref()
        .and_then(|v| v.first())
        .ok_or_else(|| ApiError::invalid("init_images: at least one image is required"))?;
    let bytes = crate::sdapi::decode_image("init_images", first)?;
    let image = danlu_generate::read_init_image(&bytes)
        .map_err(|e| ApiError::invalid(format!("init_images: {e}")))?;
    let strength = req.common.denoising_strength.unwrap_or(0.75);
    if !(0.0..=1.0).contains(&strength) {
        return Err(ApiError::invalid(format!(
            "denoising_strength: {strength} is not between 0 and 1"
        )));
    }
    let mode = match req.resize_mode {
        0 => ResizeMode::JustResize,
        1 => ResizeMode::CropAndResize,
        2 => ResizeMode::ResizeAndFill,
        3 => {
            return Err(ApiError::invalid(
                "resize_mode: 3 (just resize, latent upscale) is not supported; use 0, 1 or 2",
            ));
        }
        n => {
            return Err(ApiError::invalid(format!(
                "resize_mode: {n} is not one of 0 (just resize), 1 (crop and resize), \
                 2 (resize and fill)"
            )));
        }
    };
    let (width, height) = (
        count("width", req.common.width)?,
        count("height", req.common.height)?,
    );
    let init = |image| Img2Img {
        image,
        denoising_strength: strength as f32,
    };
    let mask_text = req.mask.as_deref().filter(|m| !m.is_empty());
    if let Some(text) = mask_text
        && req.inpaint_full_res
    {
        if let Some((image, mask, paste)) = only_masked(req, text, image.clone(), width, height)? {
            return Ok((init(image), Some(mask), Some(paste)));
        }
        // A blank mask: A1111 goes on as plain img2img.
        let image = fit(mode, image, width, height, "init_images")?;
        return Ok((init(image), None, None));
    }
    let image = fit(mode, image, width, height, "init_images")?;
    let mask = match mask_text {
        None => None,
        Some(text) => Some(read_mask(req, text, mode, width, height)?),
    };
    Ok((init(image), mask, None))
}

/// "Inpaint area: Only masked" (A1111 `inpaint_full_res`, `StableDiffusionProcessingImg2Img.init`):
/// the mask, inverted and blurred at the picture's size, gives the region to repaint (its
/// bounding box widened by `inpaint_full_res_padding`, then to the request's aspect ratio,
/// `modules/masking.py` `get_crop_region_v2`, `expand_crop_region`); that part of the picture
/// and of the mask is scaled to the request's size ("Resize and fill"), inpainted, and pasted
/// back. `None` for a blank mask.
fn only_masked(
    req: &Img2ImgRequest,
    text: &str,
    image: InitImage,
    width: usize,
    height: usize,
) -> ApiResult<Option<(InitImage, Mask, PasteBack)>> {
    if width == 0 || height == 0 || width * height > MAX_PIXELS {
        return Err(ApiError::invalid(format!(
            "{width}x{height} is not a size this server makes"
        )));
    }
    let padding = usize::try_from(req.inpaint_full_res_padding).map_err(|_| {
        ApiError::invalid(format!(
            "inpaint_full_res_padding: {} is negative",
            req.inpaint_full_res_padding
        ))
    })?;
    let (w0, h0) = (image.width, image.height);
    let settings = read_mask(req, text, ResizeMode::JustResize, w0, h0)?;
    let prepared = settings
        .prepared(w0, h0)
        .map_err(|e| ApiError::invalid(format!("mask: {e}")))?;
    let Some(bbox) = crop_region(&prepared, w0, h0, padding) else {
        return Ok(None);
    };
    let region = expand_crop_region(bbox, width, height, w0, h0);
    let invalid = |e: danlu_diffusion::Error| ApiError::invalid(format!("mask: {e}"));
    let crop_image = crop(&image.pixels, w0, region);
    let crop_image =
        InitImage::new(region.2 - region.0, region.3 - region.1, crop_image).map_err(invalid)?;
    let crop_image =
        resize_image(ResizeMode::ResizeAndFill, &crop_image, width, height).map_err(invalid)?;
    let grey_rgb: Vec<u8> = prepared.iter().flat_map(|&m| [m, m, m]).collect();
    let crop_mask = InitImage::new(
        region.2 - region.0,
        region.3 - region.1,
        crop(&grey_rgb, w0, region),
    )
    .map_err(invalid)?;
    let crop_mask =
        resize_image(ResizeMode::ResizeAndFill, &crop_mask, width, height).map_err(invalid)?;
    // Inverted and blurred already: the engine neither inverts nor blurs it again.
    let mask = Mask {
        pixels: crop_mask.pixels.chunks_exact(3).map(|p| p[0]).collect(),
        resize: None,
        blur_x: 0,
        blur_y: 0,
        fill: settings.fill,
        invert: false,
    };
    let paste = PasteBack {
        original: image,
        overlay: prepared,
        region,
        padding,
        settings: Mask {
            pixels: Vec::new(),
            ..settings
        },
    };
    Ok(Some((crop_image, mask, paste)))
}

/// The rows `region` (`x1, y1, x2, y2`, ends excluded) of an RGB picture `width` wide.
fn crop(rgb: &[u8], width: usize, region: (usize, usize, usize, usize)) -> Vec<u8> {
    let (x1, y1, x2, y2) = region;
    (y1..y2)
        .flat_map(|y| &rgb[(y * width + x1) * 3..(y * width + x2) * 3])
        .copied()
        .collect()
}

/// A1111 `masking.get_crop_region_v2`: the bounding box of the non-zero pixels (Pillow
/// `getbbox`, ends excluded), widened by `pad` within the picture.
fn crop_region(
    mask: &[u8],
    width: usize,
    height: usize,
    pad: usize,
) -> Option<(usize, usize, usize, usize)> {
    let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
    for (i, &m) in mask.iter().enumerate() {
        if m != 0 {
            let (x, y) = (i % width, i / width);
            x1 = x1.min(x);
            y1 = y1.min(y);
            x2 = x2.max(x + 1);
            y2 = y2.max(y + 1);
        }
    }
    (x2 > 0).then(|| {
        (
            x1.saturating_sub(pad),
            y1.saturating_sub(pad),
            (x2 + pad).min(width),
            (y2 + pad).min(height),
        )
    })
}

/// A1111 `masking.expand_crop_region`: the region grown along one axis to the processing
/// size's aspect ratio, kept inside the picture.
fn expand_crop_region(
    region: (usize, usize, usize, usize),
    width: usize,
    height: usize,
    image_width: usize,
    image_height: usize,
) -> (usize, usize, usize, usize) {
    let (x1, y1, x2, y2) = (
        region.0 as i64,
        region.1 as i64,
        region.2 as i64,
        region.3 as i64,
    );
    let ratio_region = (x2 - x1) as f64 / (y2 - y1) as f64;
    let ratio = width as f64 / height as f64;
    let grow = |a1: i64, a2: i64, desired: f64, limit: i64| -> (i64, i64) {
        let diff = (desired - (a2 - a1) as f64) as i64;
        let (mut a1, mut a2) = (a1 - diff.div_euclid(2), a2 + diff - diff.div_euclid(2));
        if a2 >= limit {
            let over = a2 - limit;
            a2 -= over;
            a1 -= over;
        }
        if a1 < 0 {
            a2 -= a1;
            a1 = 0;
        }
        (a1, a2.min(limit))
    };
    let (x1, y1, x2, y2) = if ratio_region > ratio {
        let (y1, y2) = grow(y1, y2, (x2 - x1) as f64 / ratio, image_height as i64);
        (x1, y1, x2, y2)
    } else {
        let (x1, x2) = grow(x1, x2, (y2 - y1) as f64 * ratio, image_width as i64);
        (x1, y1, x2, y2)
    };
    let u = |v: i64| usize::try_from(v.max(0)).unwrap_or(0);
    (u(x1), u(y1), u(x2), u(y2))
}

/// `image` at `width`x`height` (A1111 `images.resize_image`); sizes the request refuses
/// anyway are left for its own check.
fn fit(
    mode: ResizeMode,
    image: InitImage,
    width: usize,
    height: usize,
    what: &str,
) -> ApiResult<InitImage> {
    if (image.width, image.height) == (width, height) || width == 0 || height == 0 {
        return Ok(image);
    }
    if width * height > MAX_PIXELS {
        return Err(ApiError::invalid(format!(
            "{width}x{height} is more than this server makes ({} megapixels per image)",
            MAX_PIXELS / (1 << 20)
        )));
    }
    resize_image(mode, &image, width, height).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

/// The mask of an img2img request: A1111 `create_binary_mask` (an RGBA mask with any
/// transparency is its alpha channel, thresholded at 128; any other is Pillow's `convert("L")`)
/// at its own size, to be blurred there and then resized like the init image, with the
/// request's blur, fill and invert.
fn read_mask(
    req: &Img2ImgRequest,
    text: &str,
    mode: ResizeMode,
    width: usize,
    height: usize,
) -> ApiResult<Mask> {
    if req.latent_mask.as_deref().is_some_and(|m| !m.is_empty()) {
        return Err(ApiError::invalid("latent_mask: not supported"));
    }
    let bytes = crate::sdapi::decode_image("mask", text)?;
    let (w, h, grey) = read_grey_mask(&bytes)?;
    // A1111 blurs the mask at its own size and resizes it afterwards (the engine does both).
    let resize = ((w, h) != (width, height)).then_some(MaskResize {
        width: w,
        height: h,
        mode,
    });
    let pixels = grey;
    let blur = |what: &str, v: i64| {
        u32::try_from(v)
            .ok()
            .filter(|b| *b <= 64)
            .ok_or_else(|| ApiError::invalid(format!("{what}: {v} is not between 0 and 64")))
    };
    let (blur_x, blur_y) = match req.mask_blur {
        Some(b) => (blur("mask_blur", b)?, blur("mask_blur", b)?),
        None => (
            blur("mask_blur_x", req.mask_blur_x)?,
            blur("mask_blur_y", req.mask_blur_y)?,
        ),
    };
    let fill = match req.inpainting_fill {
        0 => InpaintFill::Fill,
        1 => InpaintFill::Original,
        2 => InpaintFill::LatentNoise,
        3 => InpaintFill::LatentNothing,
        n => {
            return Err(ApiError::invalid(format!(
                "inpainting_fill: {n} is not one of 0 (fill), 1 (original), 2 (latent noise), \
                 3 (latent nothing)"
            )));
        }
    };
    let invert = match req.inpainting_mask_invert {
        0 => false,
        1 => true,
        n => {
            return Err(ApiError::invalid(format!(
                "inpainting_mask_invert: {n} is neither 0 (inpaint masked) nor 1 (inpaint not \
                 masked)"
            )));
        }
    };
    Ok(Mask {
        pixels,
        resize,
        blur_x,
        blur_y,
        fill,
        invert,
    })
}

/// Decodes a mask PNG to 8-bit grey: the alpha channel thresholded at 128 when the image has
/// any transparency, else the luma (A1111 `create_binary_mask`; Pillow's `convert("L")`,
/// `libImaging/Convert.c` `L24`: `(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16`).
fn read_grey_mask(bytes: &[u8]) -> ApiResult<(usize, usize, Vec<u8>)> {
    let err = |e: &dyn std::fmt::Display| ApiError::invalid(format!("mask: {e}"));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| err(&e))?;
    let (w, h) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    if w * h > 4 * MAX_PIXELS {
        return Err(err(&format!("{w}x{h} is too large")));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err(&"image too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| err(&e))?;
    let channels = info.color_type.samples();
    let px = buf[..info.buffer_size()].chunks_exact(channels);
    let has_alpha = channels == 4;
    let transparent = has_alpha && px.clone().any(|p| p[channels - 1] != 255);
    let luma = |p: &[u8]| -> u8 {
        let l = u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000;
        (l >> 16) as u8
    };
    let grey: Vec<u8> = px
        .map(|p| match (transparent, channels) {
            (true, _) => {
                if p[channels - 1] > 128 {
                    255
                } else {
                    0
                }
            }
            (false, 1 | 2) => p[0],
            _ => luma(p),
        })
        .collect();
    Ok((w, h, grey))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdapi::options::default_options;

    fn eff() -> Effective {
        effective(&default_options(), None).unwrap()
    }

    #[test]
    fn a1111_defaults_fill_missing_fields_and_unknown_ones_are_ignored() {
        let r: Txt2ImgRequest =
            serde_json::from_str(r#"{"prompt": "cat", "some_extension_field": [1, 2]}"#).unwrap();
        assert_eq!((r.steps, r.width, r.height, r.seed), (50, 512, 512, -1));
        assert_eq!(r.sampler_index, "Euler");
        let q = to_request(&r, &eff()).unwrap();
        assert_eq!(q.sampler.label(), "Euler");
        assert_eq!(q.rng, danlu_diffusion::rng::RngSource::Nv);
    }

    #[test]
    fn sampler_names_with_a_schedule_split_like_a1111() {
        let r = Txt2ImgRequest {
            sampler_name: Some("DPM++ 2M Karras".into()),
            ..Txt2ImgRequest::default()
        };
        let q = to_request(&r, &eff()).unwrap();
        assert_eq!(q.sampler.label(), "DPM++ 2M");
        assert_eq!(q.scheduler, Scheduler::Automatic);
    }

    #[test]
    fn bad_values_are_422() {
        for body in [
            r#"{"width": -64}"#,
            r#"{"steps": 100000}"#,
            r#"{"batch_size": 0}"#,
            r#"{"width": 513}"#,
            r#"{"sampler_name": "Nope"}"#,
            r#"{"enable_hr": true}"#,
            r#"{"seed": -5}"#,
            r#"{"width": 8192, "height": 8192}"#,
            r#"{"width": 2048, "height": 2048, "batch_size": 8}"#,
        ] {
            let r: Txt2ImgRequest = serde_json::from_str(body).unwrap();
            let e = to_request(&r, &eff()).unwrap_err();
            assert_eq!(e.status.as_u16(), 422, "{body}");
        }
        assert!(serde_json::from_str::<Txt2ImgRequest>(r#"{"steps": "many"}"#).is_err());
    }

    #[test]
    fn img2img_defaults_to_a1111_strength_and_keeps_common_fields() {
        let r = parse_img2img(br#"{"prompt": "x", "init_images": ["aGk="], "steps": 3}"#).unwrap();
        assert_eq!(r.common.denoising_strength, Some(0.75));
        assert_eq!(r.common.steps, 3);
        assert_eq!(r.init_images.as_deref().map(<[String]>::len), Some(1));
    }

    #[test]
    fn only_masked_regions_follow_a1111s_masking_rules() {
        // Pillow `getbbox` (ends excluded), then the padding within the picture.
        let mut mask = vec![0u8; 4 * 3];
        mask[4 + 1] = 255;
        mask[4 + 2] = 9;
        assert_eq!(crop_region(&mask, 4, 3, 0), Some((1, 1, 3, 2)));
        assert_eq!(crop_region(&mask, 4, 3, 1), Some((0, 0, 4, 3)));
        assert_eq!(crop_region(&[0; 12], 4, 3, 5), None);
        // `expand_crop_region` to 64x32 (ratio 2): a 12x12 box grows 12 wide, 6 each side.
        assert_eq!(
            expand_crop_region((8, 8, 20, 20), 64, 32, 96, 64),
            (2, 8, 26, 20)
        );
        // At the left edge the growth moves right; at the right edge, left.
        assert_eq!(
            expand_crop_region((0, 0, 10, 10), 64, 32, 96, 64),
            (0, 0, 20, 10)
        );
        assert_eq!(
            expand_crop_region((90, 0, 96, 6), 64, 32, 96, 64),
            (84, 0, 96, 6)
        );
        // A wide box grows in height instead: 20x4 to 32x32's ratio 1 is 20 high.
        assert_eq!(
            expand_crop_region((10, 30, 30, 34), 32, 32, 96, 64),
            (10, 22, 30, 42)
        );
    }

    #[test]
    fn eta_option_applies_only_when_it_differs_from_the_default() {
        let mut o = default_options();
        let r = Txt2ImgRequest {
            sampler_name: Some("Euler a".into()),
            ..Txt2ImgRequest::default()
        };
        assert_eq!(
            to_request(&r, &effective(&o, None).unwrap()).unwrap().eta,
            None
        );
        o.insert("eta_ancestral".into(), 0.5.into());
        assert_eq!(
            to_request(&r, &effective(&o, None).unwrap()).unwrap().eta,
            Some(0.5)
        );
    }
}
