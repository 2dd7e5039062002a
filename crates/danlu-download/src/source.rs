//! What the user asked to download: `hf:`, `civitai:`, `catalog:` or a URL, parsed.

use crate::error::{Error, Result};
use reqwest::Url;

/// Where a model comes from, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file in a HuggingFace repository (`hf:ORG/REPO/PATH[@REV]`, `.../resolve/REV/PATH`,
    /// `.../blob/REV/PATH`).
    HuggingFace {
        /// `ORG/REPO`.
        repo: String,
        /// The file's path in the repository.
        path: String,
        /// Branch, tag or commit; `main` when not given.
        revision: String,
    },
    /// A Civitai model (its latest version) or one version of it.
    Civitai {
        /// The model id, when known.
        model: Option<u64>,
        /// The version id, when given.
        version: Option<u64>,
    },
    /// An entry of the recommended catalogue.
    Catalog(String),
    /// Any other http(s) URL, downloaded as it is.
    Url(String),
}

/// Hosts recognised as HuggingFace (the main site, its short domain and the common mirror).
const HF_HOSTS: &[&str] = &["huggingface.co", "hf.co", "hf-mirror.com"];
/// Hosts recognised as Civitai.
const CIVITAI_HOSTS: &[&str] = &["civitai.com", "www.civitai.com", "civitai.green"];

impl Source {
    /// Parses a source. `hf_host` and `civitai_host` are the hosts of the configured endpoints
    /// (mirrors, test servers), recognised in URLs besides the public ones.
    ///
    /// # Errors
    /// [`Error::BadSource`] when the text is none of the accepted forms.
    pub fn parse(text: &str, hf_host: Option<&str>, civitai_host: Option<&str>) -> Result<Self> {
        let bad = |reason: &str| Error::BadSource {
            source_text: text.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = text.strip_prefix("hf:") {
            let (body, revision) = match rest.rsplit_once('@') {
                Some((b, r)) if !r.is_empty() && !r.contains('/') => (b, r.to_owned()),
                _ => (rest, "main".to_owned()),
            };
            let mut parts = body.splitn(3, '/');
            let (Some(org), Some(repo), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `hf:ORG/REPO/PATH[@REVISION]`"));
            };
            if org.is_empty() || repo.is_empty() || path.is_empty() || path.ends_with('/') {
                return Err(bad("expected `hf:ORG/REPO/PATH[@REVISION]`"));
            }
            return Ok(Source::HuggingFace {
                repo: format!("{org}/{repo}"),
                path: path.to_owned(),
                revision,
            });
        }
        if let Some(rest) = text.strip_prefix("civitai:") {
            let (model, version) = match rest.split_once('@') {
                Some((m, v)) => (m, Some(v)),
                None => (rest, None),
            };
            let id = |s: &str| s.parse::<u64>().map_err(|_| bad("ids must be numbers"));
            let model = if model.is_empty() {
                None
            } else {
                Some(id(model)?)
            };
            let version = version.map(id).transpose()?;
            if model.is_none() && version.is_none() {
                return Err(bad(
                    "expected `civitai:MODEL[@VERSION]` or `civitai:@VERSION`",
                ));
            }
            return Ok(Source::Civitai { model, version });
        }
        if let Some(name) = text.strip_prefix("catalog:") {
            if name.is_empty() {
                return Err(bad("expected `catalog:NAME` (see `danlu catalog`)"));
            }
            return Ok(Source::Catalog(name.to_owned()));
        }
        let url = Url::parse(text).map_err(|_| {
            bad("not a URL, `hf:ORG/REPO/PATH`, `civitai:MODEL[@VERSION]` or `catalog:NAME`")
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("only http and https URLs can be downloaded"));
        }
        let host = url.host_str().unwrap_or_default();
        if (HF_HOSTS.contains(&host) || hf_host == Some(host))
            && let Some(s) = parse_hf_url(&url)
        {
            return Ok(s);
        }
        if (CIVITAI_HOSTS.contains(&host) || civitai_host == Some(host))
            && let Some(s) = parse_civitai_url(&url)
        {
            return Ok(s);
        }
        Ok(Source::Url(text.to_owned()))
    }
}

/// `/{org}/{repo}/(resolve|blob)/{rev}/{path}` (huggingface_hub `hf_hub_url` shape).
fn parse_hf_url(url: &Url) -> Option<Source> {
    let segs: Vec<String> = url.path_segments()?.map(percent_decode).collect();
    let (org, repo, verb, rev) = (segs.first()?, segs.get(1)?, segs.get(2)?, segs.get(3)?);
    if !matches!(verb.as_str(), "resolve" | "blob") || segs.len() < 5 {
        return None;
    }
    let path = segs.get(4..)?.join("/");
    if path.is_empty() {
        return None;
    }
    Some(Source::HuggingFace {
        repo: format!("{org}/{repo}"),
        path,
        revision: rev.clone(),
    })
}

/// Civitai page and API URLs: `/models/{id}[/slug][?modelVersionId=V]`,
/// `/api/download/models/{version}`, `/api/v1/models/{id}`, `/api/v1/model-versions/{version}`.
fn parse_civitai_url(url: &Url) -> Option<Source> {
    let segs: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    let query_version = url
        .query_pairs()
        .find(|(k, _)| k == "modelVersionId")
        .and_then(|(_, v)| v.parse().ok());
    match segs.as_slice() {
        ["models", id, ..] => Some(Source::Civitai {
            model: Some(id.parse().ok()?),
            version: query_version,
        }),
        ["api", "download", "models", v] | ["api", "v1", "model-versions", v] => {
            Some(Source::Civitai {
                model: None,
                version: Some(v.parse().ok()?),
            })
        }
        ["api", "v1", "models", id] => Some(Source::Civitai {
            model: Some(id.parse().ok()?),
            version: query_version,
        }),
        _ => None,
    }
}

/// Decodes `%XX` escapes of a URL path segment (invalid escapes are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(h) = std::str::from_utf8(h)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(repo: &str, path: &str, rev: &str) -> Source {
        Source::HuggingFace {
            repo: repo.into(),
            path: path.into(),
            revision: rev.into(),
        }
    }

    #[test]
    fn hf_shorthand_with_and_without_revision() {
        assert_eq!(
            Source::parse(
                "hf:gsdf/Counterfeit-V2.5/Counterfeit-V2.5.safetensors",
                None,
                None
            )
            .unwrap(),
            hf(
                "gsdf/Counterfeit-V2.5",
                "Counterfeit-V2.5.safetensors",
                "main"
            )
        );
        assert_eq!(
            Source::parse("hf:a/b/sub/dir/m.ckpt@v1.0", None, None).unwrap(),
            hf("a/b", "sub/dir/m.ckpt", "v1.0")
        );
        assert!(Source::parse("hf:a/b", None, None).is_err());
    }

    #[test]
    fn hf_blob_urls_become_resolve_and_mirrors_are_recognised() {
        let s = Source::parse(
            "https://huggingface.co/xiaolxl/GuoFeng3/blob/main/GuoFeng3.4.safetensors",
            None,
            None,
        )
        .unwrap();
        assert_eq!(s, hf("xiaolxl/GuoFeng3", "GuoFeng3.4.safetensors", "main"));
        let s = Source::parse(
            "http://127.0.0.1:9/o/r/resolve/abc/x%20y.bin",
            Some("127.0.0.1"),
            None,
        )
        .unwrap();
        assert_eq!(s, hf("o/r", "x y.bin", "abc"));
    }

    #[test]
    fn civitai_forms() {
        let c = |model, version| Source::Civitai { model, version };
        assert_eq!(
            Source::parse("civitai:4201", None, None).unwrap(),
            c(Some(4201), None)
        );
        assert_eq!(
            Source::parse("civitai:4201@130072", None, None).unwrap(),
            c(Some(4201), Some(130072))
        );
        assert_eq!(
            Source::parse(
                "https://civitai.com/models/4201/realistic-vision-v60-b1?modelVersionId=245598",
                None,
                None
            )
            .unwrap(),
            c(Some(4201), Some(245598))
        );
        assert_eq!(
            Source::parse("https://civitai.com/api/download/models/245598", None, None).unwrap(),
            c(None, Some(245598))
        );
        assert!(Source::parse("civitai:abc", None, None).is_err());
    }

    #[test]
    fn other_urls_are_plain_and_other_schemes_are_refused() {
        assert_eq!(
            Source::parse("https://example.org/m.safetensors", None, None).unwrap(),
            Source::Url("https://example.org/m.safetensors".into())
        );
        assert!(Source::parse("ftp://example.org/m", None, None).is_err());
        assert!(Source::parse("model.safetensors", None, None).is_err());
    }
}
