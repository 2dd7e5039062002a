//! The job queue: one engine thread owns the device and the loaded model; handlers send it
//! work over a channel, see their place in the queue, and await the result. Interrupt stops
//! the current job (keeping the images already made), skip stops the current batch and goes
//! on with the next, and a job whose client went away is dropped before it starts or stopped
//! at the next step.

use crate::error::ApiError;
use crate::library::Library;
use crate::{Error, Result};
use axum::http::StatusCode;
use base64::Engine as _;
use danlu_diffusion::adapters::AdapterFolders;
use danlu_diffusion::pipeline::Progress;
use danlu_generate::{Generated, Job, LoadedModel, ModelSpec};
use serde::Serialize;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Instant;
use tokio::sync::oneshot;

/// What the engine is asked to do.
#[derive(Debug)]
pub(crate) enum Work {
    /// Load a model (switching checkpoints through `options`).
    Load(ModelSpec),
    /// Generate images with a model.
    Generate {
        /// The model.
        spec: ModelSpec,
        /// The job.
        job: Box<Job>,
        /// `txt2img` or `img2img`.
        label: &'static str,
        /// The client's task id (A1111 `force_task_id`), shown in the queue.
        task: Option<String>,
        /// Where to save the images (A1111 `save_images`): a folder such as
        /// `outputs/txt2img-images`, under which each day has its own folder.
        save_to: Option<PathBuf>,
        /// The inpainting mask (img2img with a mask), and where the result goes back for
        /// "Inpaint area: Only masked".
        mask: Option<Box<(danlu_generate::Mask, Option<PasteBack>)>>,
    },
}

/// The loaded model as the API names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LoadedInfo {
    /// The checkpoint file.
    pub(crate) checkpoint: PathBuf,
    /// A1111 `Model`.
    pub(crate) model_name: String,
    /// A1111 `Model hash` (AutoV2).
    pub(crate) model_hash: String,
    /// The external VAE file.
    pub(crate) vae: Option<PathBuf>,
    /// A1111 `VAE`.
    pub(crate) vae_name: Option<String>,
    /// A1111 `VAE hash`.
    pub(crate) vae_hash: Option<String>,
    /// Seconds spent loading.
    pub(crate) load_seconds: f64,
}

impl LoadedInfo {
    fn of(model: &LoadedModel) -> Self {
        Self {
            checkpoint: model.spec.checkpoint.clone(),
            model_name: model.model_name(),
            model_hash: model.model_hash.clone(),
            vae: model.spec.vae_file().map(PathBuf::from),
            vae_name: model.vae_name(),
            vae_hash: model.vae_hash.clone(),
            load_seconds: model.load_seconds,
        }
    }
}

/// What a finished job gives back.
#[derive(Debug)]
pub(crate) enum Output {
    /// The model is loaded.
    Loaded(LoadedInfo),
    /// The images made (fewer than asked when interrupted).
    Images {
        /// The images.
        images: Vec<Generated>,
        /// Whether the job was interrupted.
        interrupted: bool,
        /// The model that made them.
        model: LoadedInfo,
        /// What the user should know: prompt tags naming nothing installed, files that could
        /// not be used.
        warnings: Vec<String>,
    },
}

struct Task {
    id: u64,
    work: Work,
    reply: oneshot::Sender<std::result::Result<Output, ApiError>>,
}

/// A job waiting in the queue.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Queued {
    /// The job id.
    pub(crate) id: u64,
    /// `txt2img`, `img2img` or `load`.
    pub(crate) label: String,
    /// The client's task id (A1111 `force_task_id`).
    pub(crate) task: Option<String>,
}

/// The running job.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    pub(crate) id: u64,
    pub(crate) label: String,
    pub(crate) task: Option<String>,
    pub(crate) started: Instant,
    pub(crate) timestamp: String,
    pub(crate) job_no: usize,
    pub(crate) job_count: usize,
    pub(crate) step: usize,
    pub(crate) steps: usize,
    pub(crate) preview: Option<String>,
    pub(crate) interrupted: bool,
    pub(crate) skipped: bool,
    /// What the job does now, when not sampling (`hashing ...`, `loading checkpoint`).
    pub(crate) activity: Option<String>,
}

/// Shared state of the queue.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) current: Option<Current>,
    pub(crate) loaded: Option<LoadedInfo>,
    pub(crate) finished: u64,
}

/// The queue's state and its control flags.
#[derive(Debug, Default)]
pub(crate) struct Status {
    inner: Mutex<Inner>,
    interrupt: AtomicBool,
    skip: AtomicBool,
    next_id: AtomicU64,
}

impl Status {
    /// Locks the state (a poisoned lock still holds valid data: every update is one field).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Interrupts the running job; whether one was running.
    pub(crate) fn interrupt(&self) -> bool {
        let mut inner = self.lock();
        match inner.current.as_mut() {
            Some(c) => {
                c.interrupted = true;
                self.interrupt.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Skips the running batch; whether one was running.
    pub(crate) fn skip(&self) -> bool {
        let mut inner = self.lock();
        match inner.current.as_mut() {
            Some(c) => {
                c.skipped = true;
                self.skip.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }
}

/// Reports hashing and loading into the running job's progress (the same [`Reporter`] the
/// CLI draws as bars): the label as its activity, the work done as its steps.
///
/// [`Reporter`]: danlu_types::Reporter
struct StatusReporter<'a>(&'a Status);

impl danlu_types::Reporter for StatusReporter<'_> {
    fn start(&self, label: &str, total: Option<u64>) -> danlu_types::TaskId {
        if let Some(c) = self.0.lock().current.as_mut() {
            c.activity = Some(label.to_owned());
            c.step = 0;
            c.steps = total.map_or(0, |t| usize::try_from(t).unwrap_or(usize::MAX));
        }
        danlu_types::TaskId(0)
    }

    fn advance(&self, _task: danlu_types::TaskId, by: u64) {
        if let Some(c) = self.0.lock().current.as_mut() {
            c.step = c
                .step
                .saturating_add(usize::try_from(by).unwrap_or(usize::MAX))
                .min(c.steps);
        }
    }

    fn finish(&self, _task: danlu_types::TaskId) {
        if let Some(c) = self.0.lock().current.as_mut() {
            c.activity = None;
            c.step = 0;
            c.steps = 0;
        }
    }
}

/// The sender side of the engine.
#[derive(Debug)]
pub(crate) struct Engine {
    tx: mpsc::Sender<Task>,
    pub(crate) status: Arc<Status>,
}

/// A submitted job: where its result arrives.
pub(crate) struct Ticket {
    pub(crate) result: oneshot::Receiver<std::result::Result<Output, ApiError>>,
}

impl Engine {
    /// Starts the engine thread; prompts find LoRAs, embeddings and hypernetworks in
    /// `folders`, and hashes computed on load are stored in `library`.
    pub(crate) fn start(folders: AdapterFolders, library: Arc<Library>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Task>();
        let status = Arc::new(Status::default());
        let thread_status = Arc::clone(&status);
        std::thread::Builder::new()
            .name("danlu-engine".to_owned())
            .spawn(move || {
                let ctx = Context {
                    status: &thread_status,
                    folders: &folders,
                    library: &library,
                };
                run(&rx, &ctx);
            })
            .map_err(Error::Serve)?;
        Ok(Self { tx, status })
    }

    /// Queues `work`.
    pub(crate) fn submit(&self, work: Work) -> std::result::Result<Ticket, ApiError> {
        let id = self.status.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let (label, task) = match &work {
            Work::Load(_) => ("load".to_owned(), None),
            Work::Generate { label, task, .. } => ((*label).to_owned(), task.clone()),
        };
        let (reply, result) = oneshot::channel();
        // Queue first, so a fast engine never dequeues an id not yet queued.
        self.status
            .lock()
            .queue
            .push_back(Queued { id, label, task });
        if self.tx.send(Task { id, work, reply }).is_err() {
            self.status.lock().queue.retain(|q| q.id != id);
            return Err(ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine has stopped",
            ));
        }
        Ok(Ticket { result })
    }

    /// Submits `work` and waits for its result.
    pub(crate) async fn run(&self, work: Work) -> std::result::Result<Output, ApiError> {
        let ticket = self.submit(work)?;
        ticket.result.await.unwrap_or_else(|_| {
            Err(ApiError::with_status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the engine dropped the job",
            ))
        })
    }
}

/// What the engine thread works with besides its tasks.
struct Context<'a> {
    status: &'a Status,
    folders: &'a AdapterFolders,
    library: &'a Library,
}

/// The engine loop: one task at a time, the loaded model kept between tasks.
fn run(rx: &mpsc::Receiver<Task>, ctx: &Context<'_>) {
    let status = ctx.status;
    let mut loaded: Option<LoadedModel> = None;
    while let Ok(task) = rx.recv() {
        let label = {
            let mut inner = status.lock();
            inner.queue.retain(|q| q.id != task.id);
            if task.reply.is_closed() {
                // The client went away while the job waited.
                continue;
            }
            let (label, client_task) = match &task.work {
                Work::Load(_) => ("load", None),
                Work::Generate { label, task, .. } => (*label, task.clone()),
            };
            status.interrupt.store(false, Ordering::SeqCst);
            status.skip.store(false, Ordering::SeqCst);
            inner.current = Some(Current {
                id: task.id,
                label: label.to_owned(),
                task: client_task,
                started: Instant::now(),
                timestamp: timestamp_now(),
                job_no: 0,
                job_count: 1,
                step: 0,
                steps: 0,
                preview: None,
                interrupted: false,
                skipped: false,
                activity: None,
            });
            label
        };
        tracing::debug!(id = task.id, label, "job started");
        let reply = &task.reply;
        // A panic in the engine fails this job only; the queue goes on with a fresh model.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_work(task.work, &mut loaded, ctx, reply)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(id = task.id, "the engine panicked; the model is unloaded");
            loaded = None;
            Err(ApiError::with_status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the engine failed on this job; the model will be loaded again",
            ))
        });
        {
            let mut inner = status.lock();
            inner.current = None;
            inner.finished += 1;
            inner.loaded = loaded.as_ref().map(LoadedInfo::of);
        }
        let _ = task.reply.send(result);
    }
}

/// Runs one piece of work with the loaded model.
fn run_work(
    work: Work,
    loaded: &mut Option<LoadedModel>,
    ctx: &Context<'_>,
    reply: &oneshot::Sender<std::result::Result<Output, ApiError>>,
) -> std::result::Result<Output, ApiError> {
    let status = ctx.status;
    match work {
        Work::Load(spec) => ensure_loaded(loaded, spec, ctx).map(Output::Loaded),
        Work::Generate {
            spec,
            job,
            save_to,
            mask,
            ..
        } => {
            let model = ensure_loaded(loaded, spec, ctx)?;
            let Some(m) = loaded.as_mut() else {
                return Err(ApiError::with_status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "no model loaded",
                ));
            };
            // The prompt's `<lora:...>` tags and embedding words, from the library's folders.
            let applied = m
                .apply_adapters(&job, &StatusReporter(status), &status.interrupt)
                .map_err(|e| generate_error(&e))?;
            let mut warnings = applied.warnings;
            let mask = mask.as_deref().map(|(m, p)| (m, p.as_ref()));
            generate(m, &job, mask, status, reply).map(|(images, interrupted)| {
                if let Some(dir) = save_to {
                    // The engine runs one job at a time, so numbers never collide.
                    if let Err(e) = save_images(&dir, &images) {
                        warnings.push(format!("images not saved: {e}"));
                    }
                }
                Output::Images {
                    images,
                    interrupted,
                    model,
                    warnings,
                }
            })
        }
    }
}

/// Whether `a` and `b` load the same networks (the hashes known in advance only save work).
fn same_model(a: &ModelSpec, b: &ModelSpec) -> bool {
    let mut b = b.clone();
    b.known_hashes = a.known_hashes.clone();
    *a == b
}

/// The AutoV2 of a library file: the one known in advance, else the cache's when still fresh
/// (the background hasher may have got there since the request), else hashed now and stored
/// (A1111 computes the sha256 of a checkpoint it loads, `modules/sd_models.py`
/// `CheckpointInfo.calculate_shorthash`). `None` for a folder (a diffusers model has no
/// single-file hash).
fn library_hash(
    known: Option<String>,
    path: &Path,
    ctx: &Context<'_>,
) -> std::result::Result<Option<String>, ApiError> {
    if known.is_some() || !path.is_file() {
        return Ok(known);
    }
    if let Some(h) = ctx.library.fresh_hashes(path).and_then(|h| h.autov2) {
        return Ok(Some(h));
    }
    let hashes = danlu_hash::hash_file(path, &StatusReporter(ctx.status), &ctx.status.interrupt)
        .map_err(|e| match e {
            danlu_hash::Error::Cancelled { .. } => {
                ApiError::with_status(StatusCode::CONFLICT, "interrupted while hashing")
            }
            e => ApiError::internal(&e),
        })?;
    let record = danlu_library::RecordHashes::from_hashes(&hashes);
    if let Err(e) = ctx.library.store_hashes(path, &record) {
        tracing::warn!(path = %path.display(), error = %e.message, "hash not stored");
    }
    Ok(Some(hashes.autov2))
}

/// Loads `spec` unless it is loaded already.
fn ensure_loaded(
    loaded: &mut Option<LoadedModel>,
    mut spec: ModelSpec,
    ctx: &Context<'_>,
) -> std::result::Result<LoadedInfo, ApiError> {
    let (status, folders) = (ctx.status, ctx.folders);
    if let Some(model) = loaded.as_ref()
        && same_model(&model.spec, &spec)
    {
        return Ok(LoadedInfo::of(model));
    }
    // Free the old networks first: two checkpoints may not fit in memory.
    *loaded = None;
    status.lock().loaded = None;
    spec.known_hashes.checkpoint =
        library_hash(spec.known_hashes.checkpoint.take(), &spec.checkpoint, ctx)?;
    if let Some(vae) = spec.vae_file().map(Path::to_path_buf) {
        spec.known_hashes.vae = library_hash(spec.known_hashes.vae.take(), &vae, ctx)?;
    }
    let mut model = LoadedModel::load(spec, &StatusReporter(status), &status.interrupt)
        .map_err(|e| generate_error(&e))?;
    for warning in model.set_adapter_folders(folders.clone()) {
        tracing::warn!(%warning, "adapter not usable");
    }
    let info = LoadedInfo::of(&model);
    status.lock().loaded = Some(info.clone());
    *loaded = Some(model);
    Ok(info)
}

/// Runs a job one batch at a time, so that skip can drop one batch and go on. Batch `i`
/// uses the seeds A1111 gives it (`seed + i * batch_size`, or the same seed and later
/// variation seeds under a variation strength), so the images equal one whole run's.
fn generate(
    model: &LoadedModel,
    job: &Job,
    mask: Option<(&danlu_generate::Mask, Option<&PasteBack>)>,
    status: &Status,
    reply: &oneshot::Sender<std::result::Result<Output, ApiError>>,
) -> std::result::Result<(Vec<Generated>, bool), ApiError> {
    let batch = job.request.batch_size;
    let count = job.request.n_iter;
    if let Some(c) = status.lock().current.as_mut() {
        c.job_count = count;
    }
    let mut out = Vec::new();
    for iteration in 0..count {
        if status.interrupt.load(Ordering::SeqCst) || reply.is_closed() {
            return Ok((out, true));
        }
        status.skip.store(false, Ordering::SeqCst);
        {
            let mut inner = status.lock();
            if let Some(c) = inner.current.as_mut() {
                c.job_no = iteration;
                c.step = 0;
                c.skipped = false;
            }
        }
        let first = iteration * batch;
        let mut request = job.request.clone();
        request.n_iter = 1;
        request.seed = job.request.seed_of(first);
        request.variation = job
            .request
            .variation
            .map(|(sub, strength)| (sub.wrapping_add(first as u64), strength));
        request.preview = true;
        let one = Job {
            request,
            img2img: job.img2img.clone(),
        };
        let mut on_step = |p: &Progress<'_>| {
            let preview = p.preview.as_ref().and_then(preview_base64);
            {
                let mut inner = status.lock();
                if let Some(c) = inner.current.as_mut() {
                    c.step = p.step + 1;
                    c.steps = p.steps;
                    if preview.is_some() {
                        c.preview = preview;
                    }
                }
            }
            if status.interrupt.load(Ordering::SeqCst)
                || status.skip.load(Ordering::SeqCst)
                || reply.is_closed()
            {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let made = match mask {
            Some((mask, _)) => model.inpaint(&one, mask, &mut on_step),
            None => model.generate(&one, &mut on_step),
        };
        match made {
            Ok(mut images) => {
                if let Some((_, Some(paste))) = mask {
                    for g in &mut images {
                        paste_back(g, paste)?;
                    }
                }
                out.extend(images);
            }
            Err(danlu_generate::Error::Engine(e))
                if matches!(*e, danlu_diffusion::Error::Cancelled { .. }) =>
            {
                if status.interrupt.load(Ordering::SeqCst) || reply.is_closed() {
                    return Ok((out, true));
                }
                // Skipped: on to the next batch.
            }
            Err(e) => return Err(generate_error(&e)),
        }
    }
    Ok((out, false))
}

/// "Inpaint area: Only masked": the picture, the part inpainted and where it goes.
#[derive(Debug)]
pub(crate) struct PasteBack {
    /// The init image at its own size.
    pub(crate) original: danlu_diffusion::pipeline::InitImage,
    /// The mask at that size, inverted and blurred as asked (A1111 `mask_for_overlay`).
    pub(crate) overlay: Vec<u8>,
    /// The part inpainted: `x1, y1, x2, y2`, ends excluded (A1111 `paste_to`).
    pub(crate) region: (usize, usize, usize, usize),
    /// A1111 `inpaint_full_res_padding`.
    pub(crate) padding: usize,
    /// The request's mask settings (for the infotext; no pixels).
    pub(crate) settings: danlu_generate::Mask,
}

/// Puts an inpainted part back into the whole picture (A1111 `processing.apply_overlay` with a
/// `paste_loc`): scaled to the region ("Crop and resize"), pasted, then the original
/// composited over it outside the mask. The infotext gains A1111's `Mask blur`/`Mask mode`
/// of the request, `Inpaint area: Only masked` and `Masked area padding`, and the PNG is
/// made again.
fn paste_back(g: &mut Generated, p: &PasteBack) -> std::result::Result<(), ApiError> {
    use danlu_diffusion::pipeline::{InitImage, ResizeMode, apply_overlay, resize_image};
    let internal = |e: &dyn std::fmt::Display| {
        ApiError::with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pasting back: {e}"),
        )
    };
    let (x1, y1, x2, y2) = p.region;
    let (w0, w, h) = (p.original.width, x2 - x1, y2 - y1);
    let made = InitImage::new(g.image.width, g.image.height, g.image.pixels.clone())
        .map_err(|e| internal(&e))?;
    let part = resize_image(ResizeMode::CropAndResize, &made, w, h).map_err(|e| internal(&e))?;
    let mut pixels = p.original.pixels.clone();
    for row in 0..h {
        let at = ((y1 + row) * w0 + x1) * 3;
        pixels[at..at + w * 3].copy_from_slice(&part.pixels[row * w * 3..(row + 1) * w * 3]);
    }
    // `apply_overlay` takes A1111's whole-picture overlay mask (`clip(mask * 2)`); only-masked
    // uses the mask as it is, so it gets half (rounded up) of each value.
    let half: Vec<u8> = p.overlay.iter().map(|m| m.div_ceil(2)).collect();
    apply_overlay(&mut pixels, &p.original.pixels, &half);
    g.image.pixels = pixels;
    g.image.width = p.original.width;
    g.image.height = p.original.height;
    g.params.extra.remove("Mask blur");
    g.params.extra.remove("Mask mode");
    danlu_generate::add_mask_params(&p.settings, &mut g.params);
    g.params
        .extra
        .insert("Inpaint area".to_owned(), "Only masked".to_owned());
    g.params
        .extra
        .insert("Masked area padding".to_owned(), p.padding.to_string());
    g.parameters = danlu_pnginfo::to_a1111_infotext(&g.params);
    let png = danlu_generate::encode_png(&g.image).map_err(|e| internal(&e))?;
    g.png = danlu_pnginfo::write_png_parameters(&png, &g.parameters).map_err(|e| internal(&e))?;
    Ok(())
}

/// Saves images as A1111 does with its default settings (`modules/images.py` `save_image`:
/// `save_to_dirs` with the `[date]` folder pattern, files `NNNNN-SEED.png` numbered on from the
/// highest number in the folder), each written atomically and never over an existing file.
/// The date is UTC. Returns the files written.
pub(crate) fn save_images(
    dir: &Path,
    images: &[Generated],
) -> std::result::Result<Vec<PathBuf>, String> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let stamp = timestamp_now();
    let day = format!("{}-{}-{}", &stamp[0..4], &stamp[4..6], &stamp[6..8]);
    let dir = dir.join(day);
    let seeds: Vec<u64> = images.iter().map(|g| g.image.seed).collect();
    let paths = danlu_generate::output_paths(&dir, &seeds).map_err(|e| e.to_string())?;
    let mut written = Vec::with_capacity(paths.len());
    for (path, image) in paths.iter().zip(images) {
        let path = danlu_fs::write_atomic(path, &image.png, danlu_fs::Overwrite::Never)
            .map_err(|e| e.to_string())?;
        written.push(path);
    }
    Ok(written)
}

/// Maps a job error: bad requests and unsupported models are 422, the rest 500.
pub(crate) fn generate_error(e: &danlu_generate::Error) -> ApiError {
    use danlu_generate::Error as G;
    match e {
        G::Engine(inner) if matches!(**inner, danlu_diffusion::Error::Invalid { .. }) => {
            ApiError::invalid(e.to_string())
        }
        G::Unsupported { .. } | G::Shapes { .. } | G::Image(_) => ApiError::invalid(e.to_string()),
        _ => ApiError::internal(e),
    }
}

/// A preview as a base64 PNG (A1111 `current_image`).
fn preview_base64(rgb: &danlu_diffusion::model::preview::Rgb8) -> Option<String> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(
            &mut out,
            u32::try_from(rgb.width).ok()?,
            u32::try_from(rgb.height).ok()?,
        );
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().ok()?;
        writer.write_image_data(&rgb.pixels).ok()?;
    }
    Some(base64::engine::general_purpose::STANDARD.encode(out))
}

/// Now as A1111's `job_timestamp` (`%Y%m%d%H%M%S`, UTC here).
pub(crate) fn timestamp_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_timestamp(secs)
}

/// Seconds since the epoch as `%Y%m%d%H%M%S` (UTC; days to civil date after H. Hinnant's
/// `civil_from_days`).
pub(crate) fn format_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        // 2000-03-01 00:00:00 UTC is 951868800 (a leap-year boundary).
        assert_eq!(format_timestamp(951_868_800), "20000301000000");
        assert_eq!(format_timestamp(0), "19700101000000");
        // 2026-11-25 22:40:05 UTC.
        assert_eq!(format_timestamp(1_795_646_405), "20261125224005");
    }

    #[test]
    fn hashing_and_loading_show_as_the_jobs_activity() {
        use danlu_types::Reporter as _;
        let s = Status::default();
        s.lock().current = Some(Current {
            id: 1,
            label: "load".into(),
            task: None,
            started: Instant::now(),
            timestamp: String::new(),
            job_no: 0,
            job_count: 1,
            step: 0,
            steps: 0,
            preview: None,
            interrupted: false,
            skipped: false,
            activity: None,
        });
        let r = StatusReporter(&s);
        let t = r.start("hashing `x.safetensors`", Some(100));
        r.advance(t, 40);
        r.advance(t, 400);
        {
            let inner = s.lock();
            let c = inner.current.as_ref().unwrap();
            assert_eq!(c.activity.as_deref(), Some("hashing `x.safetensors`"));
            assert_eq!((c.step, c.steps), (100, 100), "capped at the total");
        }
        r.finish(t);
        assert!(s.lock().current.as_ref().unwrap().activity.is_none());
    }

    #[test]
    fn interrupt_and_skip_need_a_running_job() {
        let s = Status::default();
        assert!(!s.interrupt());
        assert!(!s.skip());
        s.lock().queue.push_back(Queued {
            id: 7,
            label: "txt2img".into(),
            task: None,
        });
        assert!(!s.interrupt(), "a queued job is not running");
    }
}
