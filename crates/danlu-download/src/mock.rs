//! A local server on `127.0.0.1:0` that plays HuggingFace and Civitai for tests (feature
//! `mock-hub`): answers shaped like their documented APIs, redirects to a storage host, byte
//! ranges, throttling (429 with `Retry-After`), slow streams, mid-stream disconnects, a size that
//! lies, redirect loops and 401/403/404.
//!
//! Shapes follow huggingface_hub `file_download.py` (`X-Linked-Size`, `X-Linked-Etag`,
//! `X-Error-Code`, the 302 to storage) and the Civitai REST API v1 reference
//! (`/api/v1/models/{id}`, `/api/v1/model-versions/{id}`, `/by-hash/{hash}`,
//! `/api/download/models/{id}` redirecting to signed storage).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Something going wrong on the next request to a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (with `Retry-After: secs` when given) instead of the file.
    Status(u16, Option<u64>),
    /// Send this many body bytes, then drop the connection.
    Disconnect(u64),
}

/// A file the hub serves.
#[derive(Debug, Clone)]
pub struct MockFile {
    /// Its bytes.
    pub data: Bytes,
    /// The SHA-256 the API publishes (may be wrong on purpose).
    pub published_sha256: String,
    /// The size `X-Linked-Size` announces (may lie on purpose).
    pub published_size: u64,
    /// `Content-Disposition` file name the storage sends, when any.
    pub disposition: Option<String>,
    /// Bytes per second the storage streams at (`None`: as fast as it can).
    pub rate: Option<u64>,
}

impl MockFile {
    /// A file whose published hash and size are true.
    pub fn new(data: Vec<u8>) -> Self {
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&data));
        Self {
            published_size: data.len() as u64,
            data: Bytes::from(data),
            published_sha256: sha,
            disposition: None,
            rate: None,
        }
    }
}

/// What a Civitai version looks like in the mock.
#[derive(Debug, Clone)]
pub struct MockVersion {
    /// Version id.
    pub id: u64,
    /// Model id.
    pub model_id: u64,
    /// Model name.
    pub model_name: String,
    /// Civitai `type` (`Checkpoint`, `LORA`, ...).
    pub model_type: String,
    /// `baseModel`.
    pub base_model: String,
    /// Trigger words.
    pub trained_words: Vec<String>,
    /// The primary file's name.
    pub file_name: String,
    /// Storage key of the file.
    pub storage_key: String,
    /// Downloads need a token (401 without it).
    pub needs_token: bool,
    /// Early access (403).
    pub early_access: bool,
}

/// Everything the hub knows and records.
#[derive(Debug, Default)]
pub struct HubState {
    /// Files by storage key.
    pub files: Mutex<HashMap<String, MockFile>>,
    /// HuggingFace files: `ORG/REPO/REV/PATH` to storage key.
    pub hf: Mutex<HashMap<String, String>>,
    /// HuggingFace repositories that are gated (403 with `X-Error-Code: GatedRepo`).
    pub gated: Mutex<Vec<String>>,
    /// Civitai versions by id.
    pub versions: Mutex<HashMap<u64, MockVersion>>,
    /// Faults for the next storage requests, consumed in order.
    pub faults: Mutex<VecDeque<Fault>>,
    /// Every request: `METHOD PATH [Range]`.
    pub log: Mutex<Vec<String>>,
    /// The token Civitai accepts.
    pub civitai_token: Mutex<Option<String>>,
    /// The preview image served at `/images/...`.
    pub preview: Mutex<Vec<u8>>,
    base: Mutex<String>,
}

/// A running mock hub.
#[derive(Debug)]
pub struct MockHub {
    /// Its address.
    pub addr: SocketAddr,
    /// Its state, shared with the server.
    pub state: Arc<HubState>,
}

impl MockHub {
    /// Starts the hub on `127.0.0.1:0` on the current tokio runtime.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(HubState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        if let Ok(mut b) = state.base.lock() {
            *b = format!("http://{addr}");
        }
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores a file under a storage key.
    pub fn put_file(&self, key: &str, file: MockFile) {
        if let Ok(mut f) = self.state.files.lock() {
            f.insert(key.to_owned(), file);
        }
    }

    /// Publishes a stored file as `ORG/REPO` `PATH` at revision `REV` on HuggingFace.
    pub fn put_hf(&self, repo: &str, rev: &str, path: &str, key: &str) {
        if let Ok(mut h) = self.state.hf.lock() {
            h.insert(format!("{repo}/{rev}/{path}"), key.to_owned());
        }
    }

    /// Publishes a Civitai version.
    pub fn put_version(&self, v: MockVersion) {
        if let Ok(mut m) = self.state.versions.lock() {
            m.insert(v.id, v);
        }
    }

    /// Queues faults for the next storage requests.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.extend(faults);
        }
    }

    /// The requests seen so far.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

fn status(code: StatusCode, body: &str) -> Response {
    let mut r = Response::new(Body::from(body.to_owned()));
    *r.status_mut() = code;
    r
}

fn redirect(to: &str) -> Response {
    let mut r = status(StatusCode::FOUND, "");
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn json_response(v: &serde_json::Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    State(state): State<Arc<HubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Ok(mut l) = state.log.lock() {
        l.push(format!(
            "{method} {path}{}",
            range.as_ref().map(|r| format!(" {r}")).unwrap_or_default()
        ));
    }
    let base = state.base.lock().map(|b| b.clone()).unwrap_or_default();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(crate::source::percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["storage", key] => storage(&state, key, &method, &headers).await,
        ["loop", "a"] => redirect("/loop/b"),
        ["loop", "b"] => redirect("/loop/a"),
        ["images", _] => {
            let png = state.preview.lock().map(|p| p.clone()).unwrap_or_default();
            let mut r = Response::new(Body::from(png));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            r
        }
        ["api", "v1", "models", id] => civitai_model(&state, &base, id),
        ["api", "v1", "model-versions", "by-hash", hash] => {
            let found = state.versions.lock().ok().and_then(|vs| {
                vs.values()
                    .find(|v| {
                        state
                            .files
                            .lock()
                            .ok()
                            .and_then(|f| f.get(&v.storage_key).map(|f| f.published_sha256.clone()))
                            .is_some_and(|s| s.eq_ignore_ascii_case(hash))
                    })
                    .map(|v| v.id)
            });
            match found {
                Some(id) => civitai_version(&state, &base, &id.to_string()),
                None => status(StatusCode::NOT_FOUND, r#"{"error":"Model not found"}"#),
            }
        }
        ["api", "v1", "model-versions", id] => civitai_version(&state, &base, id),
        ["api", "download", "models", id] => {
            let Some(v) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| state.versions.lock().ok()?.get(&id).cloned())
            else {
                return status(StatusCode::NOT_FOUND, "not found");
            };
            let want = state.civitai_token.lock().ok().and_then(|t| t.clone());
            let got = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or_else(|| {
                    uri.query()
                        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
                        .map(str::to_owned)
                });
            if v.early_access {
                return status(StatusCode::FORBIDDEN, "early access");
            }
            if v.needs_token && (got.is_none() || got != want) {
                return status(
                    StatusCode::UNAUTHORIZED,
                    "The creator of this asset requires you to be logged in to download it",
                );
            }
            redirect(&format!("/storage/{}?X-Amz-Signature=abc", v.storage_key))
        }
        [org, repo, "resolve", rev, rest @ ..] => {
            let repo_id = format!("{org}/{repo}");
            if state.gated.lock().is_ok_and(|g| g.contains(&repo_id)) {
                let mut r = status(StatusCode::FORBIDDEN, "gated");
                r.headers_mut()
                    .insert("x-error-code", HeaderValue::from_static("GatedRepo"));
                return r;
            }
            let key = state.hf.lock().ok().and_then(|h| {
                h.get(&format!("{repo_id}/{rev}/{}", rest.join("/")))
                    .cloned()
            });
            let Some(key) = key else {
                let mut r = status(StatusCode::NOT_FOUND, "Entry not found");
                r.headers_mut()
                    .insert("x-error-code", HeaderValue::from_static("EntryNotFound"));
                return r;
            };
            let Some(file) = state.files.lock().ok().and_then(|f| f.get(&key).cloned()) else {
                return status(StatusCode::NOT_FOUND, "gone");
            };
            let mut r = redirect(&format!("{base}/storage/{key}"));
            let h = r.headers_mut();
            let sha = format!("\"{}\"", file.published_sha256);
            for (name, value) in [
                ("x-linked-size", file.published_size.to_string()),
                ("x-linked-etag", sha.clone()),
                ("etag", sha),
                (
                    "x-repo-commit",
                    "0123456789abcdef0123456789abcdef01234567".to_owned(),
                ),
            ] {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    h.insert(name, v);
                }
            }
            r
        }
        _ => status(StatusCode::NOT_FOUND, "no route"),
    }
}

fn civitai_version_json(state: &HubState, base: &str, v: &MockVersion) -> serde_json::Value {
    let file = state
        .files
        .lock()
        .ok()
        .and_then(|f| f.get(&v.storage_key).cloned());
    let (size_kb, sha) = file
        .map(|f| {
            (
                f.data.len() as f64 / 1024.0,
                f.published_sha256.to_ascii_uppercase(),
            )
        })
        .unwrap_or_default();
    json!({
        "id": v.id,
        "modelId": v.model_id,
        "name": "v1.0",
        "baseModel": v.base_model,
        "trainedWords": v.trained_words,
        "description": "<p>version notes</p>",
        "model": {"name": v.model_name, "type": v.model_type, "nsfw": false, "poi": false},
        "files": [{
            "id": v.id * 10,
            "name": v.file_name,
            "sizeKB": size_kb,
            "type": "Model",
            "primary": true,
            "metadata": {"format": "SafeTensor", "fp": "fp16", "size": "pruned"},
            "hashes": {"AutoV2": sha.get(..10).unwrap_or_default(), "SHA256": sha},
            "downloadUrl": format!("{base}/api/download/models/{}", v.id)
        }],
        "images": [{"url": format!("{base}/images/{}.png", v.id), "type": "image", "width": 8, "height": 8}],
        "downloadUrl": format!("{base}/api/download/models/{}", v.id)
    })
}

fn civitai_version(state: &HubState, base: &str, id: &str) -> Response {
    let v = id
        .parse::<u64>()
        .ok()
        .and_then(|id| state.versions.lock().ok()?.get(&id).cloned());
    match v {
        Some(v) => json_response(&civitai_version_json(state, base, &v)),
        None => status(
            StatusCode::NOT_FOUND,
            r#"{"error":"Model version not found"}"#,
        ),
    }
}

fn civitai_model(state: &HubState, base: &str, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return status(StatusCode::BAD_REQUEST, "bad id");
    };
    let mut versions: Vec<MockVersion> = state
        .versions
        .lock()
        .map(|vs| vs.values().filter(|v| v.model_id == id).cloned().collect())
        .unwrap_or_default();
    // Newest first, as the API lists them.
    versions.sort_by_key(|v| std::cmp::Reverse(v.id));
    let Some(first) = versions.first() else {
        return status(StatusCode::NOT_FOUND, r#"{"error":"No model with id"}"#);
    };
    json_response(&json!({
        "id": id,
        "name": first.model_name,
        "description": "<p>A <b>test</b> model</p>",
        "type": first.model_type,
        "tags": ["anime", "character"],
        "modelVersions": versions.iter().map(|v| {
            let mut j = civitai_version_json(state, base, v);
            if let Some(o) = j.as_object_mut() { o.remove("model"); }
            j
        }).collect::<Vec<_>>()
    }))
}

async fn storage(state: &HubState, key: &str, method: &Method, headers: &HeaderMap) -> Response {
    let Some(file) = state.files.lock().ok().and_then(|f| f.get(key).cloned()) else {
        return status(StatusCode::NOT_FOUND, "NoSuchKey");
    };
    let fault = state.faults.lock().ok().and_then(|mut f| f.pop_front());
    if let Some(Fault::Status(code, after)) = &fault {
        let mut r = status(
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "fault",
        );
        if let Some(a) = after
            && let Ok(v) = HeaderValue::from_str(&a.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let etag = format!("\"{}\"", file.published_sha256);
    let len = file.data.len() as u64;
    let mut start = 0u64;
    let mut partial = false;
    if let Some(r) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        let if_range_ok = headers
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v == etag);
        if if_range_ok
            && let Some(s) = r
                .strip_prefix("bytes=")
                .and_then(|s| s.strip_suffix('-'))
                .and_then(|s| s.parse::<u64>().ok())
        {
            if s >= len {
                let mut resp = status(StatusCode::RANGE_NOT_SATISFIABLE, "");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
            start = s;
            partial = true;
        }
    }
    let body_bytes = file.data.slice(usize::try_from(start).unwrap_or(0)..);
    let cut = match fault {
        Some(Fault::Disconnect(n)) => Some(n),
        _ => None,
    };
    let mut resp = Response::new(if *method == Method::HEAD {
        Body::empty()
    } else {
        stream_body(body_bytes.clone(), file.rate, cut)
    });
    *resp.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_LENGTH, body_bytes.len().to_string());
    set(header::ETAG, etag);
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    if partial {
        set(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", len.saturating_sub(1)),
        );
    }
    if let Some(d) = &file.disposition {
        set(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{d}\""),
        );
    }
    resp
}

/// Streams `data` in pieces, at `rate` bytes per second when given, failing after `cut` bytes.
fn stream_body(data: Bytes, rate: Option<u64>, cut: Option<u64>) -> Body {
    const PIECE: usize = 64 * 1024;
    let piece = rate.map_or(PIECE, |r| {
        usize::try_from(r / 20).unwrap_or(PIECE).clamp(1, PIECE)
    });
    let stream = futures_util::stream::unfold((data, 0u64), move |(rest, sent)| async move {
        if rest.is_empty() {
            return None;
        }
        if let Some(c) = cut
            && sent >= c
        {
            // Let the server flush what was sent before the connection drops.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault: disconnect",
                )),
                (Bytes::new(), sent),
            ));
        }
        let mut n = piece.min(rest.len());
        if let Some(c) = cut {
            n = n.min(usize::try_from(c - sent).unwrap_or(n).max(1));
        }
        if let Some(r) = rate {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / r.max(1) as f64)).await;
        }
        let chunk = rest.slice(..n);
        let rest = rest.slice(n..);
        Some((Ok::<Bytes, std::io::Error>(chunk), (rest, sent + n as u64)))
    });
    Body::from_stream(stream)
}
