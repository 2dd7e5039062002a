//! The HTTP client: resolving sources into a [`Plan`], and API requests with retries.

use crate::catalog;
use crate::civitai::{CivitaiModel, CivitaiVersion};
use crate::error::{Error, Result};
use crate::source::Source;
use danlu_types::Kind;
use reqwest::header::{AUTHORIZATION, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::time::Duration;
use tracing::{debug, warn};

/// The base URLs of the two hubs. Mirrors and test servers replace them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// HuggingFace, `https://huggingface.co` (`HF_ENDPOINT` in huggingface_hub).
    pub huggingface: String,
    /// Civitai, `https://civitai.com`.
    pub civitai: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            huggingface: "https://huggingface.co".to_owned(),
            civitai: "https://civitai.com".to_owned(),
        }
    }
}

/// How a [`Client`] talks to servers. Values come from the caller (the CLI reads env vars).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URLs.
    pub endpoints: Endpoints,
    /// HuggingFace access token (sent as `Authorization: Bearer`).
    pub hf_token: Option<String>,
    /// Civitai API key (sent as `Authorization: Bearer`).
    pub civitai_token: Option<String>,
    /// Attempts per request before giving up (at least 1).
    pub attempts: u32,
    /// First pause between attempts; doubled each time up to [`max_backoff`](Self::max_backoff).
    pub backoff: Duration,
    /// Longest pause between attempts, `Retry-After` included.
    pub max_backoff: Duration,
    /// Redirects followed before the chain is called a loop.
    pub max_redirects: usize,
    /// A read that stalls this long counts as a lost connection.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::default(),
            hf_token: None,
            civitai_token: None,
            attempts: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_redirects: 10,
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Which hub a URL belongs to, for credentials and for explaining errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// HuggingFace (or its mirror).
    HuggingFace,
    /// Civitai.
    Civitai,
    /// Any other server.
    Other,
}

/// What Civitai says about the version being downloaded.
#[derive(Debug, Clone)]
pub struct CivitaiInfo {
    /// The version JSON exactly as the API returned it (written as `NAME.civitai.info`).
    pub version_json: serde_json::Value,
    /// The typed fields of it.
    pub version: CivitaiVersion,
    /// The model, when it was fetched (description and tags).
    pub model: Option<CivitaiModel>,
}

/// A resolved download: the URL to fetch and what the source publishes about the file.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The source as the user wrote it.
    pub source: String,
    /// The URL to GET (redirects are followed).
    pub url: String,
    /// Which hub, for credentials and error explanations.
    pub origin: Origin,
    /// The file name the source gives, when it gives one.
    pub file_name: Option<String>,
    /// The exact size the source publishes (HuggingFace `X-Linked-Size`).
    pub size: Option<u64>,
    /// An approximate size for progress (Civitai `sizeKB`).
    pub size_hint: Option<u64>,
    /// The SHA-256 the source publishes, lower-case hex.
    pub sha256: Option<String>,
    /// What the source says the kind is (Civitai `type`).
    pub kind_hint: Kind,
    /// Civitai metadata for sidecars.
    pub civitai: Option<CivitaiInfo>,
}

/// Downloads models from HuggingFace, Civitai and plain URLs.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    /// The same client without redirects: HuggingFace's metadata is on the first answer.
    meta: reqwest::Client,
    pub(crate) opts: ClientOptions,
}

/// One failed attempt that may succeed when repeated.
#[derive(Debug)]
pub(crate) struct Retry {
    /// In words, for the final error.
    pub(crate) why: String,
    /// The server's `Retry-After`, when given.
    pub(crate) after: Option<Duration>,
}

impl Client {
    /// Builds a client. `HTTPS_PROXY`/`HTTP_PROXY` are honoured by the HTTP library.
    ///
    /// # Errors
    /// [`Error::Api`] when the TLS back end cannot be initialised.
    pub fn new(opts: ClientOptions) -> Result<Self> {
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .user_agent(concat!("danlu/", env!("CARGO_PKG_VERSION")))
                .redirect(redirects)
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(opts.read_timeout)
                .build()
                .map_err(|e| Error::Api {
                    url: String::new(),
                    reason: format!("cannot build the HTTP client: {e}"),
                })
        };
        Ok(Self {
            http: build(reqwest::redirect::Policy::limited(opts.max_redirects))?,
            meta: build(reqwest::redirect::Policy::none())?,
            opts,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// The `Authorization` value for a hub, when a token is set.
    pub(crate) fn auth(&self, origin: Origin) -> Option<String> {
        match origin {
            Origin::HuggingFace => self.opts.hf_token.as_ref(),
            Origin::Civitai => self.opts.civitai_token.as_ref(),
            Origin::Other => None,
        }
        .map(|t| format!("Bearer {t}"))
    }

    /// The pause before attempt `attempt + 1` (1-based `attempt`).
    pub(crate) fn backoff(&self, attempt: u32, after: Option<Duration>) -> Duration {
        let exp = self
            .opts
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        after.unwrap_or(exp).min(self.opts.max_backoff)
    }

    /// Resolves a source into what to fetch.
    ///
    /// # Errors
    /// Unknown catalogue names, API errors (404 wrong id, 401 token needed, 403 gated or early
    /// access), and answers that are not the documented JSON.
    pub async fn resolve(&self, text: &str) -> Result<Plan> {
        let host = |u: &str| {
            Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
        };
        let hf_host = host(&self.opts.endpoints.huggingface);
        let civ_host = host(&self.opts.endpoints.civitai);
        let mut source = Source::parse(text, hf_host.as_deref(), civ_host.as_deref())?;
        if let Source::Catalog(name) = &source {
            let entry = catalog::find(name)?;
            source = Source::parse(entry.source.as_deref().unwrap_or_default(), None, None)?;
        }
        let mut plan = match source {
            Source::HuggingFace {
                repo,
                path,
                revision,
            } => self.resolve_hf(&repo, &path, &revision).await?,
            Source::Civitai { model, version } => self.resolve_civitai(model, version).await?,
            Source::Catalog(name) => return Err(Error::NotInCatalog { name }),
            Source::Url(url) => Plan {
                source: String::new(),
                file_name: Url::parse(&url)
                    .ok()
                    .and_then(|u| {
                        u.path_segments()
                            .and_then(|mut s| s.next_back().map(crate::source::percent_decode))
                    })
                    .filter(|n| n.contains('.'))
                    .and_then(|n| crate::filename::sanitize_file_name(&n)),
                url,
                origin: Origin::Other,
                size: None,
                size_hint: None,
                sha256: None,
                kind_hint: Kind::Unknown,
                civitai: None,
            },
        };
        text.clone_into(&mut plan.source);
        Ok(plan)
    }

    /// The resolve URL of a file (huggingface_hub `hf_hub_url`).
    pub fn hf_url(&self, repo: &str, path: &str, revision: &str) -> Result<Url> {
        let bad = |reason: &str| Error::BadSource {
            source_text: self.opts.endpoints.huggingface.clone(),
            reason: reason.to_owned(),
        };
        let mut url = Url::parse(&self.opts.endpoints.huggingface).map_err(|_| bad("not a URL"))?;
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|()| bad("cannot be a base URL"))?;
            segs.pop_if_empty();
            segs.extend(repo.split('/'));
            segs.push("resolve");
            segs.push(revision);
            segs.extend(path.split('/'));
        }
        Ok(url)
    }

    async fn resolve_hf(&self, repo: &str, path: &str, revision: &str) -> Result<Plan> {
        let url = self.hf_url(repo, path, revision)?;
        let mut current = url.clone();
        let mut hops = 0;
        // HEAD without following redirects: an LFS file answers 302 to its storage with
        // `X-Linked-Size` and `X-Linked-Etag` (the sha256) on this first answer; a renamed
        // repository answers a relative redirect to follow (huggingface_hub `get_hf_file_metadata`).
        let headers = loop {
            let resp = self
                .send_retrying(&current, Origin::HuggingFace, |c, u| c.meta.head(u))
                .await?;
            let status = resp.status();
            if status.is_redirection()
                && resp.headers().get("x-linked-size").is_none()
                && let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok())
                && hops < self.opts.max_redirects
            {
                let next = current.join(loc).map_err(|_| Error::Api {
                    url: current.to_string(),
                    reason: format!("bad redirect `{loc}`"),
                })?;
                if next.host_str() == current.host_str() {
                    current = next;
                    hops += 1;
                    continue;
                }
                break resp.headers().clone();
            }
            if hops >= self.opts.max_redirects {
                return Err(Error::Redirects {
                    url: url.to_string(),
                });
            }
            if !status.is_success() && !status.is_redirection() {
                return Err(status_error(
                    current.as_str(),
                    status,
                    resp.headers(),
                    Origin::HuggingFace,
                ));
            }
            break resp.headers().clone();
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let size = header("x-linked-size")
            .or_else(|| header("content-length"))
            .and_then(|s| s.trim().parse().ok());
        let sha256 = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| {
                e.trim_start_matches("W/")
                    .trim_matches('"')
                    .to_ascii_lowercase()
            })
            .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
        debug!(url = %current, ?size, ?sha256, "huggingface metadata");
        Ok(Plan {
            source: String::new(),
            url: current.to_string(),
            origin: Origin::HuggingFace,
            file_name: path
                .rsplit('/')
                .next()
                .and_then(crate::filename::sanitize_file_name),
            size,
            size_hint: size,
            sha256,
            kind_hint: Kind::Unknown,
            civitai: None,
        })
    }

    fn civitai_api(&self, tail: &str) -> String {
        format!(
            "{}/api/v1/{tail}",
            self.opts.endpoints.civitai.trim_end_matches('/')
        )
    }

    /// Fetches a model version by id (`/api/v1/model-versions/{id}`).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub async fn civitai_version(&self, id: u64) -> Result<CivitaiInfo> {
        let url = self.civitai_api(&format!("model-versions/{id}"));
        self.civitai_version_at(&url).await
    }

    /// Finds the model version whose file has this hash (SHA-256, AutoV2, BLAKE3, ...),
    /// `/api/v1/model-versions/by-hash/{hash}`; `None` when Civitai does not know it (404).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve), except 404.
    pub async fn civitai_by_hash(&self, hash: &str) -> Result<Option<CivitaiInfo>> {
        let url = self.civitai_api(&format!("model-versions/by-hash/{hash}"));
        match self.civitai_version_at(&url).await {
            Ok(info) => Ok(Some(info)),
            Err(Error::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn civitai_version_at(&self, url: &str) -> Result<CivitaiInfo> {
        let version_json = self.get_json(url, Origin::Civitai).await?;
        let version: CivitaiVersion =
            serde_json::from_value(version_json.clone()).map_err(|e| Error::Api {
                url: url.to_owned(),
                reason: format!("not a model version: {e}"),
            })?;
        Ok(CivitaiInfo {
            version_json,
            version,
            model: None,
        })
    }

    /// Fetches a model by id (`/api/v1/models/{id}`).
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub async fn civitai_model(&self, id: u64) -> Result<CivitaiModel> {
        let url = self.civitai_api(&format!("models/{id}"));
        let json = self.get_json(&url, Origin::Civitai).await?;
        serde_json::from_value(json).map_err(|e| Error::Api {
            url,
            reason: format!("not a model: {e}"),
        })
    }

    async fn resolve_civitai(&self, model: Option<u64>, version: Option<u64>) -> Result<Plan> {
        let model_info = match model {
            Some(m) => Some(self.civitai_model(m).await?),
            None => None,
        };
        let version_id = match (version, &model_info) {
            (Some(v), _) => v,
            (None, Some(m)) => m
                .model_versions
                .first()
                .and_then(|v| v.get("id"))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| Error::Api {
                    url: self.civitai_api(&format!("models/{}", m.id)),
                    reason: "the model has no versions".to_owned(),
                })?,
            (None, None) => {
                return Err(Error::BadSource {
                    source_text: "civitai:".to_owned(),
                    reason: "no model or version id".to_owned(),
                });
            }
        };
        let mut info = self.civitai_version(version_id).await?;
        info.model = model_info;
        let url = self.civitai_api(&format!("model-versions/{version_id}"));
        let file = info.version.primary_file().ok_or_else(|| Error::Api {
            url: url.clone(),
            reason: "the version has no files".to_owned(),
        })?;
        let download = file.download_url.clone().unwrap_or_else(|| {
            format!(
                "{}/api/download/models/{version_id}",
                self.opts.endpoints.civitai.trim_end_matches('/')
            )
        });
        Ok(Plan {
            source: String::new(),
            url: download,
            origin: Origin::Civitai,
            file_name: crate::filename::sanitize_file_name(&file.name),
            size: None,
            // `sizeKB` is rounded: good for a progress bar, not for checking.
            size_hint: file.size_kb.map(|k| (k * 1024.0) as u64),
            sha256: file.sha256(),
            kind_hint: info.version.kind(),
            civitai: Some(info),
        })
    }

    /// GETs a JSON document with retries.
    ///
    /// # Errors
    /// Status errors with explanations, lost connections after the retries, bad JSON.
    pub async fn get_json(&self, url: &str, origin: Origin) -> Result<serde_json::Value> {
        let parsed = Url::parse(url).map_err(|_| Error::BadSource {
            source_text: url.to_owned(),
            reason: "not a URL".to_owned(),
        })?;
        let resp = self
            .send_retrying(&parsed, origin, |c, u| c.http.get(u))
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(url, status, resp.headers(), origin));
        }
        resp.json().await.map_err(|e| Error::Api {
            url: url.to_owned(),
            reason: format!("not JSON: {e}"),
        })
    }

    /// GETs a small file (a preview image) whole, with retries; at most `limit` bytes.
    ///
    /// # Errors
    /// As [`get_json`](Self::get_json), or [`Error::Api`] when the body exceeds `limit`.
    pub async fn get_bytes(&self, url: &str, origin: Origin, limit: usize) -> Result<Vec<u8>> {
        let parsed = Url::parse(url).map_err(|_| Error::BadSource {
            source_text: url.to_owned(),
            reason: "not a URL".to_owned(),
        })?;
        let resp = self
            .send_retrying(&parsed, origin, |c, u| c.http.get(u))
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(url, status, resp.headers(), origin));
        }
        let bytes = resp.bytes().await.map_err(|e| Error::Request {
            url: url.to_owned(),
            attempts: 1,
            source: e,
        })?;
        if bytes.len() > limit {
            return Err(Error::Api {
                url: url.to_owned(),
                reason: format!("{} bytes, more than the {limit} allowed", bytes.len()),
            });
        }
        Ok(bytes.to_vec())
    }

    /// Sends a request, repeating it on 429, 5xx and lost connections with backoff (honouring
    /// `Retry-After`); other answers, errors included, are returned to the caller.
    async fn send_retrying(
        &self,
        url: &Url,
        origin: Origin,
        make: impl Fn(&Self, Url) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let attempts = self.opts.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            let mut req = make(self, url.clone());
            if let Some(a) = self.auth(origin) {
                req = req.header(AUTHORIZATION, a);
            }
            let retry = match req.send().await {
                Ok(resp) => match classify(&resp) {
                    None => return Ok(resp),
                    Some(r) => r,
                },
                Err(e) if e.is_redirect() => {
                    return Err(Error::Redirects {
                        url: url.to_string(),
                    });
                }
                Err(e) if attempt == attempts => {
                    return Err(Error::Request {
                        url: url.to_string(),
                        attempts,
                        source: e,
                    });
                }
                Err(e) => Retry {
                    why: format!("{e}"),
                    after: None,
                },
            };
            last = retry.why.clone();
            if attempt < attempts {
                let pause = self.backoff(attempt, retry.after);
                warn!(url = %url, attempt, why = %retry.why, pause_ms = pause.as_millis() as u64, "retrying");
                tokio::time::sleep(pause).await;
            }
        }
        Err(Error::GaveUp {
            url: url.to_string(),
            attempts,
            last,
        })
    }
}

/// Whether an answer should be retried: 429 and 5xx (with `Retry-After` when given).
pub(crate) fn classify(resp: &reqwest::Response) -> Option<Retry> {
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Some(Retry {
            why: format!("HTTP {}", status.as_u16()),
            after: parse_retry_after(resp.headers()),
        })
    } else {
        None
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by either hub and falls back to
/// the client's own backoff).
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An error for a status that retrying will not fix, with what it most likely means.
pub(crate) fn status_error(
    url: &str,
    status: StatusCode,
    headers: &HeaderMap,
    origin: Origin,
) -> Error {
    // HuggingFace names the cause in `X-Error-Code` (huggingface_hub `hf_raise_for_status`).
    let hf_code = headers
        .get("x-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let explanation = match (origin, status.as_u16(), hf_code) {
        (Origin::HuggingFace, _, "RepoNotFound") => {
            "no such repository (check ORG/REPO; a private repository also needs HF_TOKEN)"
        }
        (Origin::HuggingFace, _, "RevisionNotFound") => "no such revision (check @REVISION)",
        (Origin::HuggingFace, _, "EntryNotFound") => {
            "no such file in the repository (check the path)"
        }
        (Origin::HuggingFace, _, "GatedRepo") => {
            "the repository is gated: accept its conditions on its page with the account whose token is in HF_TOKEN"
        }
        (Origin::HuggingFace, 401, _) => {
            "authentication needed: the repository is private or gated; set HF_TOKEN to a token with read access"
        }
        (Origin::HuggingFace, 403, _) => {
            "access refused: the repository is gated (accept its conditions on its page) or the token lacks access"
        }
        (Origin::HuggingFace, 404, _) => "no such repository, revision or file",
        (Origin::Civitai, 401, _) => {
            "this download needs a Civitai API key: set CIVITAI_TOKEN (account settings, API keys)"
        }
        (Origin::Civitai, 403, _) => {
            "access refused: the version is in early access or its creator restricts downloads"
        }
        (Origin::Civitai, 404, _) => "no model or version with that id (or it was removed)",
        (_, 401, _) => "authentication needed",
        (_, 403, _) => "access refused",
        (_, 404, _) => "not found",
        (_, 416, _) => "the server refused the byte range",
        _ => "unexpected answer",
    };
    Error::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        explanation: explanation.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let c = Client::new(ClientOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..ClientOptions::default()
        })
        .unwrap();
        assert_eq!(c.backoff(1, None), Duration::from_millis(100));
        assert_eq!(c.backoff(3, None), Duration::from_millis(400));
        assert_eq!(c.backoff(9, None), Duration::from_secs(1));
        assert_eq!(
            c.backoff(1, Some(Duration::from_secs(30))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn hf_urls_encode_segments_and_keep_the_mirror_base() {
        let c = Client::new(ClientOptions {
            endpoints: Endpoints {
                huggingface: "https://hf-mirror.com/".into(),
                ..Endpoints::default()
            },
            ..ClientOptions::default()
        })
        .unwrap();
        let u = c.hf_url("o/r", "sub/a b.safetensors", "refs/pr/1").unwrap();
        assert_eq!(
            u.as_str(),
            "https://hf-mirror.com/o/r/resolve/refs%2Fpr%2F1/sub/a%20b.safetensors"
        );
    }

    #[test]
    fn hub_errors_are_explained() {
        let mut h = HeaderMap::new();
        let e = status_error("u", StatusCode::UNAUTHORIZED, &h, Origin::Civitai);
        assert!(e.to_string().contains("CIVITAI_TOKEN"), "{e}");
        h.insert("x-error-code", "GatedRepo".parse().unwrap());
        let e = status_error("u", StatusCode::FORBIDDEN, &h, Origin::HuggingFace);
        assert!(e.to_string().contains("gated"), "{e}");
    }
}
