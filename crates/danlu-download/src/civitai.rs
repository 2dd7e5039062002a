//! Civitai REST API v1 shapes (`/api/v1/models/{id}`, `/api/v1/model-versions/{id}`,
//! `/api/v1/model-versions/by-hash/{hash}`) and the sidecars the A1111 ecosystem makes from them.
//!
//! Only the fields danlu uses are typed; the version JSON itself is kept as it came, because the
//! Civitai Helper extension writes it verbatim as `NAME.civitai.info`.

use danlu_types::Kind;
use serde::{Deserialize, Serialize};

/// One file of a model version (`files[]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CivitaiFile {
    /// The file name Civitai serves it under.
    pub name: String,
    /// Size in KiB (Civitai's `sizeKB`, a float).
    #[serde(rename = "sizeKB", default)]
    pub size_kb: Option<f64>,
    /// `Model`, `Pruned Model`, `Training Data`, `Config`, ...
    #[serde(rename = "type", default)]
    pub file_type: Option<String>,
    /// Whether this is the version's primary file.
    #[serde(default)]
    pub primary: Option<bool>,
    /// Hashes by Civitai's names (`SHA256`, `AutoV2`, `BLAKE3`, ...), upper-case hex.
    #[serde(default)]
    pub hashes: std::collections::BTreeMap<String, String>,
    /// Where to download it (redirects to signed storage).
    #[serde(default)]
    pub download_url: Option<String>,
}

impl CivitaiFile {
    /// The published SHA-256 in lower case, when there is one.
    pub fn sha256(&self) -> Option<String> {
        self.hashes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("sha256"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// One preview image of a version (`images[]`).
#[derive(Debug, Clone, Deserialize)]
pub struct CivitaiImage {
    /// The image URL.
    pub url: String,
    /// `image` or `video` (older answers omit it).
    #[serde(rename = "type", default)]
    pub media_type: Option<String>,
}

/// The part of a model version that danlu reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CivitaiVersion {
    /// The version id.
    pub id: u64,
    /// The model id.
    #[serde(default)]
    pub model_id: Option<u64>,
    /// The version's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `SD 1.5`, `SDXL 1.0`, `Pony`, ...
    #[serde(default)]
    pub base_model: Option<String>,
    /// Trigger words.
    #[serde(default)]
    pub trained_words: Vec<String>,
    /// The version's description (HTML).
    #[serde(default)]
    pub description: Option<String>,
    /// Files of the version.
    #[serde(default)]
    pub files: Vec<CivitaiFile>,
    /// Preview images.
    #[serde(default)]
    pub images: Vec<CivitaiImage>,
    /// The model this version belongs to (`model.name`, `model.type`), as the version endpoint
    /// gives it.
    #[serde(default)]
    pub model: Option<CivitaiModelRef>,
}

/// `model` inside a version answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CivitaiModelRef {
    /// The model's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `Checkpoint`, `LORA`, `LoCon`, `TextualInversion`, ...
    #[serde(rename = "type", default)]
    pub model_type: Option<String>,
}

/// The part of a model (`/api/v1/models/{id}`) that danlu reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CivitaiModel {
    /// The model id.
    pub id: u64,
    /// The model's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The model's description (HTML).
    #[serde(default)]
    pub description: Option<String>,
    /// `Checkpoint`, `LORA`, ...
    #[serde(rename = "type", default)]
    pub model_type: Option<String>,
    /// Tags (`anime`, `photorealistic`, ...).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Versions, newest first.
    #[serde(default)]
    pub model_versions: Vec<serde_json::Value>,
}

impl CivitaiVersion {
    /// The file to download: the one marked primary, else the first `Model` file, else the
    /// first file.
    pub fn primary_file(&self) -> Option<&CivitaiFile> {
        self.files
            .iter()
            .find(|f| f.primary == Some(true))
            .or_else(|| {
                self.files
                    .iter()
                    .find(|f| f.file_type.as_deref() == Some("Model"))
            })
            .or_else(|| self.files.first())
    }

    /// The first preview that is an image (videos are skipped).
    pub fn preview_url(&self) -> Option<&str> {
        self.images
            .iter()
            .find(|i| i.media_type.as_deref().is_none_or(|t| t == "image"))
            .map(|i| i.url.as_str())
    }

    /// The danlu kind of Civitai's model `type`.
    pub fn kind(&self) -> Kind {
        self.model
            .as_ref()
            .and_then(|m| m.model_type.as_deref())
            .map_or(Kind::Unknown, kind_of_civitai_type)
    }
}

/// Maps Civitai's model `type` to a kind (Civitai API docs, `types` filter values).
pub fn kind_of_civitai_type(t: &str) -> Kind {
    match t {
        "Checkpoint" => Kind::Checkpoint,
        "LORA" | "LoCon" | "DoRA" => Kind::Lora,
        "TextualInversion" => Kind::Embedding,
        "Hypernetwork" => Kind::Hypernetwork,
        "VAE" => Kind::Vae,
        "Controlnet" => Kind::Controlnet,
        "Upscaler" => Kind::Upscaler,
        _ => Kind::Unknown,
    }
}

/// A1111's `sd version` for a Civitai `baseModel` (A1111
/// `extensions-builtin/Lora/ui_edit_user_metadata.py`: `SD1`, `SD2`, `SDXL`, `Unknown`).
pub fn sd_version_of_base_model(base: &str) -> &'static str {
    let b = base.to_ascii_lowercase();
    if b.starts_with("sd 1") {
        "SD1"
    } else if b.starts_with("sd 2") {
        "SD2"
    } else if b.starts_with("sdxl") || b == "pony" || b == "illustrious" || b == "noobai" {
        "SDXL"
    } else {
        "Unknown"
    }
}

/// A1111's user metadata file `NAME.json` for extra networks (A1111
/// `modules/ui_extra_networks_user_metadata.py` and the Lora extension's editor): keys with
/// spaces, exactly as A1111 writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMetadata {
    /// Description shown on the card.
    pub description: String,
    /// `SD1`, `SD2`, `SDXL` or `Unknown`.
    #[serde(rename = "sd version")]
    pub sd_version: String,
    /// Trigger words, comma separated, added to the prompt with the network.
    #[serde(rename = "activation text")]
    pub activation_text: String,
    /// Weight used when the card is clicked (0 means A1111's default).
    #[serde(rename = "preferred weight")]
    pub preferred_weight: f64,
    /// Free notes.
    pub notes: String,
}

impl UserMetadata {
    /// Builds the user metadata from a version (and, when fetched, its model's description).
    pub fn from_version(v: &CivitaiVersion, model_description: Option<&str>) -> Self {
        let description = model_description
            .or(v.description.as_deref())
            .map(strip_html)
            .unwrap_or_default();
        let preferred_weight = if v.kind() == Kind::Lora { 1.0 } else { 0.0 };
        Self {
            description,
            sd_version: v
                .base_model
                .as_deref()
                .map_or("Unknown", sd_version_of_base_model)
                .to_owned(),
            activation_text: v.trained_words.join(", "),
            preferred_weight,
            notes: format!(
                "civitai model {} version {}",
                v.model_id.map_or_else(|| "?".to_owned(), |m| m.to_string()),
                v.id
            ),
        }
    }
}

/// Text of an HTML description: tags removed, common entities decoded, blank runs squeezed.
pub fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version() -> CivitaiVersion {
        serde_json::from_value(serde_json::json!({
            "id": 7, "modelId": 3, "name": "v1", "baseModel": "SD 1.5",
            "trainedWords": ["ohwx", "red hat"],
            "model": {"name": "Hat", "type": "LORA", "nsfw": false},
            "files": [
                {"name": "cfg.yaml", "type": "Config", "sizeKB": 1.0, "hashes": {}},
                {"name": "hat.safetensors", "type": "Model", "primary": true, "sizeKB": 2.5,
                 "hashes": {"AutoV2": "ABCDEF0123", "SHA256": "AB".repeat(32)},
                 "downloadUrl": "https://civitai.com/api/download/models/7"}
            ],
            "images": [{"url": "https://x/v.mp4", "type": "video"}, {"url": "https://x/1.png", "type": "image"}]
        }))
        .unwrap()
    }

    #[test]
    fn primary_file_hash_preview_and_kind() {
        let v = version();
        let f = v.primary_file().unwrap();
        assert_eq!(f.name, "hat.safetensors");
        assert_eq!(f.sha256().unwrap(), "ab".repeat(32));
        assert_eq!(v.preview_url(), Some("https://x/1.png"));
        assert_eq!(v.kind(), Kind::Lora);
    }

    #[test]
    fn user_metadata_uses_a1111_key_names() {
        let m = UserMetadata::from_version(&version(), Some("<p>A <b>red</b> hat &amp; more</p>"));
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["activation text"], "ohwx, red hat");
        assert_eq!(j["sd version"], "SD1");
        assert_eq!(j["preferred weight"], 1.0);
        assert_eq!(j["description"], "A red hat & more");
    }

    #[test]
    fn base_models_map_to_a1111_sd_versions() {
        assert_eq!(sd_version_of_base_model("SD 1.5"), "SD1");
        assert_eq!(sd_version_of_base_model("SD 2.1 768"), "SD2");
        assert_eq!(sd_version_of_base_model("SDXL 1.0"), "SDXL");
        assert_eq!(sd_version_of_base_model("Flux.1 D"), "Unknown");
    }
}
