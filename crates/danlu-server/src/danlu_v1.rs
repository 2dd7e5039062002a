//! danlu's own API under `/danlu/v1`: the library with filters and sort, doctor, tags and
//! categories, model inspection of an uploaded or library file and filing it in place, image
//! parameters with the models they need, the queue, and progress as server-sent events.

use crate::error::{ApiError, ApiResult};
use crate::library::{check_name, find_checkpoint};
use crate::sdapi::sd_models::rescan;
use crate::state::Shared;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use danlu_identify::report::InspectReport;
use danlu_library::{Category, DoctorReport, ModelRecord, VaeReport};
use danlu_types::{Base, Kind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The `/danlu/v1` routes.
pub(crate) fn router() -> Router<Shared> {
    Router::new()
        .route("/status", get(status))
        .route("/library", get(library))
        .route("/preview", get(preview))
        .route("/doctor", get(doctor))
        .route("/tags", get(tags))
        .route("/vae", get(vae))
        .route("/inspect", post(inspect))
        .route("/uploads/{id}/place", post(place))
        .route("/png-info", post(png_info))
        .route("/reproduce", post(reproduce))
        .route("/queue", get(queue))
        .route("/events", get(events))
}

/// `GET /danlu/v1/status`: the root, what is loaded, and what to do with an empty library.
#[derive(Debug, Serialize)]
pub(crate) struct StatusResponse {
    root: String,
    layout: &'static str,
    models: usize,
    checkpoints: usize,
    /// How to add models, when there are no checkpoints.
    hint: Option<String>,
    loaded: Option<crate::engine::LoadedInfo>,
    version: &'static str,
    /// The device the networks load on, as configured (`auto`, `cpu`, `cuda:0`, ...).
    device: String,
    /// The compute backends compiled into this build (`cpu`, `cuda`, `metal`).
    backends: Vec<&'static str>,
}

async fn status(State(state): State<Shared>) -> Json<StatusResponse> {
    let records = state.library.records();
    let root = &state.library.root;
    let checkpoints = records
        .iter()
        .filter(|r| crate::library::is_checkpoint(r))
        .count();
    let folder = |k: Kind| {
        root.folder(k)
            .unwrap_or_else(|| root.path.clone())
            .display()
            .to_string()
    };
    let hint = (checkpoints == 0).then(|| {
        format!(
            "The library has no checkpoint yet. Put a Stable Diffusion 1.x or 2.x checkpoint \
             (.safetensors) in `{}` (VAEs in `{}`, LoRAs in `{}`, embeddings in `{}`), or drop \
             one on the Models tab, then press the refresh button. `danlu download` fetches \
             models from HuggingFace or Civitai.",
            folder(Kind::Checkpoint),
            folder(Kind::Vae),
            folder(Kind::Lora),
            folder(Kind::Embedding)
        )
    });
    Json(StatusResponse {
        root: root.path.display().to_string(),
        layout: root.layout.as_str(),
        models: records.len(),
        checkpoints,
        hint,
        loaded: state.engine.status.lock().loaded.clone(),
        version: env!("CARGO_PKG_VERSION"),
        device: state.config.device.to_string(),
        backends: danlu_diffusion::device::compiled_backends(),
    })
}

/// Filters and order of `GET /danlu/v1/library`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LibraryQuery {
    kind: Option<String>,
    base: Option<String>,
    category: Option<String>,
    /// Text in the name or tags.
    q: Option<String>,
    /// `name` (default), `size`, `mtime`, `kind`.
    sort: Option<String>,
}

/// One card of the library.
#[derive(Debug, Serialize)]
pub(crate) struct LibraryItem {
    #[serde(flatten)]
    record: ModelRecord,
    /// The name relative to its kind's folder.
    relative_name: String,
    /// A1111's checkpoint title, for checkpoints.
    title: Option<String>,
    /// Whether a preview image sits beside the file.
    has_preview: bool,
}

/// `GET /danlu/v1/library`.
#[derive(Debug, Serialize)]
pub(crate) struct LibraryResponse {
    root: String,
    total: usize,
    models: Vec<LibraryItem>,
}

fn parse_word<T: std::str::FromStr>(what: &str, v: Option<&str>) -> ApiResult<Option<T>> {
    v.filter(|s| !s.is_empty() && *s != "all")
        .map(|s| {
            s.parse::<T>()
                .map_err(|_| ApiError::invalid(format!("{what}: unknown value `{s}`")))
        })
        .transpose()
}

async fn library(
    State(state): State<Shared>,
    Query(q): Query<LibraryQuery>,
) -> ApiResult<Json<LibraryResponse>> {
    let kind: Option<Kind> = parse_word("kind", q.kind.as_deref())?;
    let base: Option<Base> = parse_word("base", q.base.as_deref())?;
    let category: Option<Category> = parse_word("category", q.category.as_deref())?;
    let text = q.q.as_deref().unwrap_or("").to_lowercase();
    let records = state.library.records();
    let root = &state.library.root;
    let mut models: Vec<LibraryItem> = records
        .iter()
        .filter(|r| kind.is_none_or(|k| r.kind() == k))
        .filter(|r| base.is_none_or(|b| r.base() == b))
        .filter(|r| category.is_none_or(|c| r.categories.contains(&c)))
        .filter(|r| {
            text.is_empty()
                || r.name.to_lowercase().contains(&text)
                || r.tags.iter().any(|t| t.to_lowercase().contains(&text))
        })
        .map(|r| LibraryItem {
            relative_name: crate::sdapi::sd_models::display_name(&state, r),
            title: crate::library::is_checkpoint(r)
                .then(|| crate::library::checkpoint_title(root, r)),
            has_preview: preview_file(r.as_path()).is_some(),
            record: r.clone(),
        })
        .collect();
    match q.sort.as_deref().unwrap_or("name") {
        "name" => models.sort_by_key(|m| m.record.name.to_lowercase()),
        "size" => models.sort_by_key(|m| std::cmp::Reverse(m.record.size)),
        "mtime" => models.sort_by_key(|m| std::cmp::Reverse(m.record.mtime_ns)),
        "kind" => models.sort_by(|a, b| {
            (a.record.kind().as_str(), a.record.name.to_lowercase())
                .cmp(&(b.record.kind().as_str(), b.record.name.to_lowercase()))
        }),
        other => {
            return Err(ApiError::invalid(format!(
                "sort: `{other}` is not `name`, `size`, `mtime` or `kind`"
            )));
        }
    }
    Ok(Json(LibraryResponse {
        root: root.path.display().to_string(),
        total: records.len(),
        models,
    }))
}

/// A1111's preview image of a model: `NAME.preview.png` (or `NAME.png`, `.jpg`, `.webp`)
/// beside it (`modules/ui_extra_networks.py` `find_preview`).
fn preview_file(model: &Path) -> Option<PathBuf> {
    let stem = model.file_stem()?.to_string_lossy().into_owned();
    let dir = model.parent()?;
    [
        "preview.png",
        "png",
        "preview.jpg",
        "jpg",
        "preview.webp",
        "webp",
    ]
    .iter()
    .map(|ext| dir.join(format!("{stem}.{ext}")))
    .find(|p| p.is_file())
}

#[derive(Debug, Deserialize)]
struct PreviewQuery {
    path: String,
}

/// `GET /danlu/v1/preview?path=MODEL`: the preview image of a library model (only files the
/// library knows are looked up).
async fn preview(
    State(state): State<Shared>,
    Query(q): Query<PreviewQuery>,
) -> ApiResult<Response> {
    let records = state.library.records();
    let r = records
        .iter()
        .find(|r| r.path == q.path)
        .ok_or_else(|| ApiError::not_found(format!("`{}` is not in the library", q.path)))?;
    let file = preview_file(r.as_path())
        .ok_or_else(|| ApiError::not_found(format!("`{}` has no preview image", r.name)))?;
    let mime = match file.extension().and_then(|e| e.to_str()) {
        Some("jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "image/png",
    };
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

async fn doctor(State(state): State<Shared>) -> ApiResult<Json<DoctorReport>> {
    let s = Arc::clone(&state);
    let report = tokio::task::spawn_blocking(move || {
        let records = s.library.records();
        danlu_library::doctor(&s.library.root, &records)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(report))
}

/// `GET /danlu/v1/tags`.
#[derive(Debug, Serialize)]
struct TagsResponse {
    categories: BTreeMap<&'static str, usize>,
    tags: BTreeMap<String, usize>,
}

async fn tags(State(state): State<Shared>) -> Json<TagsResponse> {
    let records = state.library.records();
    let mut categories: BTreeMap<&'static str, usize> =
        Category::ALL.iter().map(|c| (c.as_str(), 0)).collect();
    let mut tags = BTreeMap::new();
    for r in records.iter() {
        for c in &r.categories {
            *categories.entry(c.as_str()).or_default() += 1;
        }
        for t in &r.tags {
            *tags.entry(t.clone()).or_default() += 1;
        }
    }
    Json(TagsResponse { categories, tags })
}

#[derive(Debug, Deserialize)]
struct VaeQuery {
    checkpoint: Option<String>,
    vae: Option<String>,
}

/// `GET /danlu/v1/vae?checkpoint=TITLE[&vae=NAME]`: which VAE a generation would use and why.
async fn vae(State(state): State<Shared>, Query(q): Query<VaeQuery>) -> ApiResult<Json<VaeReport>> {
    let records = state.library.records();
    let root = &state.library.root;
    let name = match q.checkpoint {
        Some(c) => c,
        None => state
            .options_snapshot()
            .get("sd_model_checkpoint")
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| ApiError::not_found("no checkpoint in the library"))?,
    };
    let ck = find_checkpoint(root, &records, &name)?;
    let explicit = q
        .vae
        .as_deref()
        .filter(|v| *v != "Automatic" && !v.is_empty());
    if let Some(v) = explicit {
        check_name("VAE", v)?;
    }
    Ok(Json(danlu_library::resolve_vae(
        root, &records, ck, explicit,
    )))
}

/// Numbers uploads within one second.
static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where uploads wait to be filed: `ROOT/.danlu/uploads`.
fn uploads_dir(state: &Shared) -> PathBuf {
    state.library.root.state_dir().join("uploads")
}

/// A file name a client sent: its last component, with no path tricks.
fn upload_name(headers: &HeaderMap) -> ApiResult<String> {
    let raw = headers
        .get("x-file-name")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::invalid("the upload needs an `X-File-Name` header"))?;
    let name = percent_decode(raw);
    check_name("file name", &name)?;
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(ApiError::invalid(format!(
            "file name `{name}` must be a plain file name"
        )));
    }
    Ok(name)
}

/// Decodes `%XX` escapes (browsers send non-ASCII names encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What `POST /danlu/v1/inspect` answers.
#[derive(Debug, Serialize)]
pub(crate) struct InspectResponse {
    /// The upload's id, for `uploads/{id}/place` (absent for library files).
    upload: Option<String>,
    /// The file name.
    file_name: String,
    /// What the file is (`inspect --json`).
    report: InspectReport,
    /// Where it belongs in this root, absolute; null for unknown files.
    destination: Option<String>,
    /// Whether a file of that name is already there.
    exists: bool,
}

#[derive(Debug, Deserialize)]
struct InspectLocal {
    path: String,
}

/// `POST /danlu/v1/inspect`: a model file as the body (name in `X-File-Name`), kept as an
/// upload to be filed; or JSON `{"path": ...}` naming a file inside the library.
async fn inspect(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<InspectResponse>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (path, upload, file_name) = if is_json {
        let req: InspectLocal = crate::sdapi::parse_json(&body)?;
        // Resolved first, so `..` and links cannot leave the root.
        let path = fs_err::canonicalize(&req.path)
            .map_err(|_| ApiError::not_found(format!("`{}` not found", req.path)))?;
        let root =
            fs_err::canonicalize(&state.library.root.path).map_err(|e| ApiError::internal(&e))?;
        if !path.starts_with(&root) {
            return Err(ApiError::invalid(format!(
                "`{}` is outside the library root; upload it instead",
                req.path
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (path, None, name)
    } else {
        let name = upload_name(&headers)?;
        if body.is_empty() {
            return Err(ApiError::invalid("the upload is empty"));
        }
        let id = format!(
            "{}-{}",
            crate::engine::timestamp_now(),
            UPLOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let dir = uploads_dir(&state).join(&id);
        let path = dir.join(&name);
        let (p, b) = (path.clone(), body.clone());
        tokio::task::spawn_blocking(move || {
            fs_err::create_dir_all(&dir)?;
            danlu_fs::write_atomic(&p, &b, danlu_fs::Overwrite::Never)
                .map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?;
        (path, Some(id), name)
    };
    let p = path.clone();
    let report = tokio::task::spawn_blocking(move || {
        danlu_identify::report::inspect_path(
            &p,
            false,
            &danlu_types::NoProgress,
            &AtomicBool::new(false),
        )
    })
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let destination = report
        .identity
        .as_ref()
        .and_then(|i| state.library.folder(i.kind))
        .map(|d| d.join(&file_name));
    Ok(Json(InspectResponse {
        upload,
        exists: destination.as_ref().is_some_and(|d| d.exists()),
        destination: destination.map(|d| d.display().to_string()),
        file_name,
        report,
    }))
}

/// What `POST /danlu/v1/uploads/{id}/place` answers.
#[derive(Debug, Serialize)]
struct PlaceResponse {
    path: String,
    kind: Kind,
}

/// Files an upload where its kind belongs ("put it there"), never overwriting, then rescans.
async fn place(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<PlaceResponse>> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::invalid(format!("upload id `{id}` is not valid")));
    }
    let dir = uploads_dir(&state).join(&id);
    let s = Arc::clone(&state);
    let placed = tokio::task::spawn_blocking(move || -> ApiResult<PlaceResponse> {
        let file = fs_err::read_dir(&dir)
            .map_err(|_| ApiError::not_found(format!("upload `{id}` not found")))?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .ok_or_else(|| ApiError::not_found(format!("upload `{id}` not found")))?;
        let report = danlu_identify::report::inspect_path(
            &file,
            false,
            &danlu_types::NoProgress,
            &AtomicBool::new(false),
        );
        let kind = report
            .identity
            .as_ref()
            .map(|i| i.kind)
            .filter(|k| *k != Kind::Unknown)
            .ok_or_else(|| ApiError::invalid("the file's kind is unknown; it has no place"))?;
        let folder = s
            .library
            .folder(kind)
            .ok_or_else(|| ApiError::invalid("the file's kind has no folder"))?;
        let name = file.file_name().map(PathBuf::from).unwrap_or_default();
        let dest = folder.join(name);
        if dest.exists() {
            return Err(ApiError::with_status(
                StatusCode::CONFLICT,
                format!("`{}` already exists", dest.display()),
            ));
        }
        fs_err::create_dir_all(&folder).map_err(|e| ApiError::internal(&e))?;
        let bytes = fs_err::read(&file).map_err(|e| ApiError::internal(&e))?;
        danlu_fs::write_atomic(&dest, &bytes, danlu_fs::Overwrite::Never)
            .map_err(|e| ApiError::internal(&e))?;
        // The copy is complete; the upload can go.
        let _ = fs_err::remove_dir_all(&dir);
        Ok(PlaceResponse {
            path: dest.display().to_string(),
            kind,
        })
    })
    .await
    .map_err(|e| ApiError::internal(&e))??;
    rescan(&state).await?;
    Ok(Json(placed))
}

/// What `POST /danlu/v1/png-info` answers.
#[derive(Debug, Serialize)]
struct PngInfoResponse {
    /// The parameters in `contracts.md`'s `pnginfo` vocabulary.
    params: danlu_pnginfo::GenerationParams,
    /// The infotext to paste into txt2img.
    infotext: String,
    /// Models the image names that the library lacks.
    missing: Vec<Missing>,
}

/// A model an image needs that the library lacks.
#[derive(Debug, Serialize)]
struct Missing {
    kind: Kind,
    name: String,
    hash: Option<String>,
}

/// `POST /danlu/v1/png-info`: the image as the raw body.
async fn png_info(State(state): State<Shared>, body: Bytes) -> ApiResult<Json<PngInfoResponse>> {
    let params = crate::sdapi::png_info::parse(&body)?;
    let records = state.library.records();
    let root = &state.library.root;
    let mut missing = Vec::new();
    let have = |kind: Kind, name: &str, hash: Option<&str>| {
        records.iter().any(|r| {
            r.kind() == kind
                && (r.name == name
                    || hash.is_some_and(|h| r.hashes.as_ref().is_some_and(|x| x.matches(h))))
        })
    };
    if let Some(model) = params.model.as_deref().filter(|m| !m.is_empty()) {
        let by_hash = params
            .model_hash
            .as_deref()
            .is_some_and(|h| find_checkpoint(root, &records, h).is_ok());
        if !by_hash && find_checkpoint(root, &records, model).is_err() {
            missing.push(Missing {
                kind: Kind::Checkpoint,
                name: model.to_owned(),
                hash: params.model_hash.clone(),
            });
        }
    }
    for l in &params.loras {
        if !have(Kind::Lora, &l.name, l.hash.as_deref()) {
            missing.push(Missing {
                kind: Kind::Lora,
                name: l.name.clone(),
                hash: l.hash.clone(),
            });
        }
    }
    for e in &params.embeddings {
        if !have(Kind::Embedding, &e.name, e.hash.as_deref()) {
            missing.push(Missing {
                kind: Kind::Embedding,
                name: e.name.clone(),
                hash: e.hash.clone(),
            });
        }
    }
    Ok(Json(PngInfoResponse {
        infotext: crate::sdapi::png_info::infotext_of(&params),
        params,
        missing,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReproduceQuery {
    /// Generate as well (otherwise only the plan).
    run: bool,
}

/// What `POST /danlu/v1/reproduce` answers.
#[derive(Debug, Serialize)]
struct ReproduceResponse {
    /// What the image needs and how it will be made (`danlu reproduce --json`'s plan).
    plan: danlu_reproduce::Plan,
    /// The new image, base64 PNG, when generated.
    image: Option<String>,
    /// Its parameters as A1111 infotext.
    parameters: Option<String>,
    /// Field by field, the source against the new image.
    comparison: Vec<danlu_reproduce::FieldComparison>,
    /// Whether every compared field is equal (null when not generated).
    equal: Option<bool>,
    /// What the engine said about the prompt's networks.
    warnings: Vec<String>,
}

/// `POST /danlu/v1/reproduce[?run=true]`: the image as the raw body; its plan against the
/// library, and with `run` the image made again through the queue and compared.
async fn reproduce(
    State(state): State<Shared>,
    Query(q): Query<ReproduceQuery>,
    body: Bytes,
) -> ApiResult<Json<ReproduceResponse>> {
    let params = crate::sdapi::png_info::parse(&body)?;
    let records = state.library.records();
    let library =
        danlu_reproduce::Library::from_records(state.library.root.path.clone(), (*records).clone());
    let plan = danlu_reproduce::plan::plan("upload", &params, Some(&library));
    let mut out = ReproduceResponse {
        plan,
        image: None,
        parameters: None,
        comparison: Vec::new(),
        equal: None,
        warnings: Vec::new(),
    };
    if !q.run {
        return Ok(Json(out));
    }
    let (spec, job) =
        danlu_reproduce::to_job(&out.plan).map_err(|e| ApiError::invalid(e.to_string()))?;
    let result = state
        .engine
        .run(crate::engine::Work::Generate {
            spec,
            job: Box::new(job),
            label: "reproduce",
            task: None,
            save_to: None,
            mask: None,
        })
        .await?;
    if let crate::engine::Output::Images {
        images, warnings, ..
    } = result
        && let Some(g) = images.first()
    {
        out.comparison = danlu_reproduce::compare(&out.plan, &params, &g.params);
        out.equal = Some(out.comparison.iter().all(|r| r.equal));
        out.image = Some(crate::sdapi::encode_base64(&g.png));
        out.parameters = Some(g.parameters.clone());
        out.warnings = warnings;
    }
    Ok(Json(out))
}

/// `GET /danlu/v1/queue`: the running job (position 0) and the waiting ones (1, 2, ...).
#[derive(Debug, Serialize)]
struct QueueResponse {
    jobs: Vec<QueueItem>,
    finished: u64,
}

/// One job of the queue.
#[derive(Debug, Serialize)]
struct QueueItem {
    #[serde(flatten)]
    job: crate::engine::Queued,
    position: usize,
}

async fn queue(State(state): State<Shared>) -> Json<QueueResponse> {
    let inner = state.engine.status.lock();
    let running = inner.current.as_ref().map(|c| QueueItem {
        job: crate::engine::Queued {
            id: c.id,
            label: c.label.clone(),
            task: c.task.clone(),
        },
        position: 0,
    });
    let jobs = running
        .into_iter()
        .chain(inner.queue.iter().enumerate().map(|(i, q)| QueueItem {
            job: q.clone(),
            position: i + 1,
        }))
        .collect();
    Json(QueueResponse {
        jobs,
        finished: inner.finished,
    })
}

/// `GET /danlu/v1/events`: the progress of `GET /sdapi/v1/progress` as server-sent events, one
/// `progress` event whenever it changes (checked four times a second).
async fn events(State(state): State<Shared>) -> impl IntoResponse {
    let stream =
        futures_util::stream::unfold((state, None::<String>), |(state, last)| async move {
            loop {
                if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return None;
                }
                let snap = crate::sdapi::progress::snapshot(&state.engine.status, true);
                let text = serde_json::to_string(&snap).unwrap_or_default();
                if last.as_deref() != Some(text.as_str()) {
                    let event = Event::default().event("progress").data(text.clone());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (state, Some(text)),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("a%20b.safetensors"), "a b.safetensors");
        assert_eq!(percent_decode("%E7%8C%AB.pt"), "猫.pt");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn upload_names_must_be_plain() {
        let mut h = HeaderMap::new();
        h.insert("x-file-name", "..%2Fx.safetensors".parse().unwrap());
        assert!(upload_name(&h).is_err());
        h.insert("x-file-name", "ok.safetensors".parse().unwrap());
        assert_eq!(upload_name(&h).unwrap(), "ok.safetensors");
    }
}
