//! Generation parameters in images (A1111, ComfyUI, NovelAI, InvokeAI, Fooocus): read and write.
//!
//! danlu-pnginfo owns the metadata that image generators leave in their output. It walks PNG
//! chunks (`tEXt`, `zTXt`, `iTXt`, `eXIf`), JPEG segments (APP1 EXIF, COM) and WebP chunks
//! (`EXIF`, `XMP `) with its own bounds-checked code, reads "stealth" metadata from pixel LSBs,
//! and turns what it finds into one [`GenerationParams`] in the `pnginfo` vocabulary of
//! `contracts.md`. It writes A1111's infotext ([`to_a1111_infotext`]) and puts it into a PNG
//! ([`write_png_parameters`], [`write_png_file`]).
//!
//! Damaged input never panics: a readable image with a bad CRC, a truncated chunk, a lying EXIF
//! offset or a graph with a cycle gives what could be read, and the problems are listed in
//! [`GenerationParams::findings`]. Only unreadable files are [`Error`]s.
//!
//! ```no_run
//! let params = danlu_pnginfo::read_image("00001-1234.png")?;
//! println!("{} steps, seed {:?}", params.steps.unwrap_or(0), params.seed);
//! let text = danlu_pnginfo::to_a1111_infotext(&params);
//! let png = std::fs::read("plain.png")?;
//! let tagged = danlu_pnginfo::write_png_parameters(&png, &text)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod a1111;
mod comfyui;
mod error;
mod exif;
mod fooocus;
mod invokeai;
mod jpeg;
pub mod names;
mod novelai;
mod png;
mod report;
mod stealth;
mod text;
mod webp;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use a1111::{parse_a1111, to_a1111_infotext};
pub use error::{Error, Result};
pub use names::{
    A1111Sampler, ComfyUiSampler, Fidelity, Unmapped, to_a1111_sampler, to_comfyui_sampler,
};
pub use report::{IMAGE_EXTENSIONS, ImageReport};
pub use stealth::{StealthMode, StealthPayload};
pub use text::MAX_TEXT_BYTES;

use error::{magic_hex, memory_path};
use text::{Found, TextEntry};

/// The tool that wrote an image's parameters (`contracts.md`, `pnginfo` `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// AUTOMATIC1111 infotext, also written by Forge, SD.Next, Civitai and others.
    A1111,
    /// ComfyUI API graph (`prompt`) and UI graph (`workflow`).
    #[serde(rename = "comfyui")]
    ComfyUi,
    /// NovelAI `Comment` JSON or stealth JSON.
    #[serde(rename = "novelai")]
    NovelAi,
    /// InvokeAI `invokeai_metadata`, `sd-metadata` or `Dream`.
    #[serde(rename = "invokeai")]
    InvokeAi,
    /// Fooocus and RuinedFooocus `parameters` JSON.
    Fooocus,
    /// SwarmUI `sui_image_params` JSON (an addition to the `contracts.md` list).
    #[serde(rename = "swarmui")]
    SwarmUi,
    /// No generation parameters.
    #[default]
    None,
}

/// A LoRA (or LyCORIS) the image was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lora {
    /// The name as the image states it (A1111: file stem; ComfyUI: file name).
    pub name: String,
    /// The model strength (A1111 `<lora:name:weight>`; ComfyUI `strength_model`); 1 when the
    /// image names the LoRA without a weight.
    pub weight: f64,
    /// The hash the image gives (A1111 `Lora hashes`: AutoV3), if any.
    pub hash: Option<String>,
}

/// A textual-inversion embedding the image was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Embedding {
    /// The name as the image states it.
    pub name: String,
    /// The hash the image gives (A1111 `TI hashes`), if any.
    pub hash: Option<String>,
}

/// Generation parameters read from an image, in the `pnginfo` vocabulary of `contracts.md`.
///
/// All fields but [`findings`](Self::findings) are the contract's; `findings` is a danlu
/// extension, omitted from JSON when empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GenerationParams {
    /// Which tool's format the parameters are in.
    pub source: Source,
    /// The positive prompt.
    pub prompt: String,
    /// The negative prompt (empty when none).
    pub negative_prompt: String,
    /// Sampling steps.
    pub steps: Option<u64>,
    /// The seed.
    pub seed: Option<u64>,
    /// Width in pixels of the generation (A1111 `Size`).
    pub width: Option<u32>,
    /// Height in pixels of the generation.
    pub height: Option<u32>,
    /// CLIP skip (A1111 `Clip skip`; ComfyUI `CLIPSetLastLayer` -2 is 2).
    pub clip_skip: Option<u32>,
    /// The sampler as the image states it (`DPM++ 2M`, `euler_ancestral`, `k_euler`).
    pub sampler: Option<String>,
    /// The schedule as the image states it (`Karras`, `karras`, `native`).
    pub scheduler: Option<String>,
    /// Classifier-free guidance scale.
    pub cfg_scale: Option<f64>,
    /// Denoising strength (img2img, or a ComfyUI sampler's `denoise`).
    pub denoising_strength: Option<f64>,
    /// Checkpoint name as the image states it.
    pub model: Option<String>,
    /// Checkpoint hash as the image states it (A1111 AutoV2 10 hex, older 8 hex, or a full
    /// SHA-256; a SwarmUI `0x` prefix is dropped).
    pub model_hash: Option<String>,
    /// VAE name.
    pub vae: Option<String>,
    /// VAE hash.
    pub vae_hash: Option<String>,
    /// LoRAs, in prompt order.
    pub loras: Vec<Lora>,
    /// Textual-inversion embeddings.
    pub embeddings: Vec<Embedding>,
    /// Every other key the image carried, values as strings (non-string JSON values are
    /// written as JSON).
    pub extra: BTreeMap<String, String>,
    /// The metadata text exactly as stored (the main chunk or tag the fields came from).
    pub raw: String,
    /// Problems met while reading: damaged chunks, repaired encodings, graph cycles (a danlu
    /// extension to the contract).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<String>,
}

impl GenerationParams {
    /// Parameters with only a source and raw text set.
    pub(crate) fn new(source: Source, raw: &str) -> Self {
        Self {
            source,
            raw: raw.to_owned(),
            ..Self::default()
        }
    }
}

/// Reads the generation parameters of a PNG, JPEG or WebP file.
///
/// # Errors
/// [`Error::Read`] when the file cannot be read, [`Error::UnknownFormat`] when it is not one of
/// the three formats (an empty file included). Damage inside a readable image is reported in
/// [`GenerationParams::findings`] instead.
pub fn read_image(path: impl AsRef<Path>) -> Result<GenerationParams> {
    let path = path.as_ref();
    let map = danlu_fs::map(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_image_at(&map, path)
}

/// Parses the generation parameters of a PNG, JPEG or WebP held in memory.
///
/// # Errors
/// [`Error::UnknownFormat`] when the bytes are not one of the three formats; errors name the
/// file `<memory>`.
pub fn parse_image(bytes: &[u8]) -> Result<GenerationParams> {
    parse_image_at(bytes, &memory_path())
}

/// Reads only the stealth metadata (pixel LSBs) of a PNG or WebP held in memory.
///
/// Returns `Ok(None)` when there is none, or when the pixels cannot be decoded.
///
/// # Errors
/// [`Error::UnknownFormat`] when the bytes are neither PNG nor WebP.
pub fn parse_stealth(bytes: &[u8]) -> Result<Option<StealthPayload>> {
    if !bytes.starts_with(&png::SIGNATURE) && !webp::is_webp(bytes) {
        return Err(Error::UnknownFormat {
            path: memory_path(),
            magic: magic_hex(bytes),
        });
    }
    Ok(stealth::read(bytes).ok().flatten())
}

/// Returns `png` with its `parameters` text set to `text`, as A1111 saves it: old `parameters`
/// chunks removed, one new `tEXt` chunk (or `iTXt` when the text is not Latin-1) before the
/// first `IDAT`, with a correct CRC.
///
/// # Errors
/// [`Error::NotPng`] for other formats, [`Error::DamagedPng`] when the chunk structure is
/// broken (the rewrite would otherwise lose data), [`Error::TextTooLarge`] over 2 GiB.
pub fn write_png_parameters(png: &[u8], text: &str) -> Result<Vec<u8>> {
    png::with_parameters(png, text, &memory_path())
}

/// Writes the PNG at `source` to `dest` with its `parameters` text set to `text`, atomically
/// (`danlu_fs::write_atomic`). `dest` may equal `source`; an existing `dest` is replaced.
///
/// # Errors
/// As [`write_png_parameters`], plus [`Error::Read`] and [`Error::Write`].
pub fn write_png_file(source: impl AsRef<Path>, dest: impl AsRef<Path>, text: &str) -> Result<()> {
    let source = source.as_ref();
    let dest = dest.as_ref();
    let bytes = danlu_fs::fs_err::read(source).map_err(|e| Error::Read {
        path: source.to_path_buf(),
        source: danlu_fs::Error::Io {
            path: source.to_path_buf(),
            action: "reading",
            source: e,
        },
    })?;
    let out = png::with_parameters(&bytes, text, source)?;
    danlu_fs::write_atomic(dest, &out, danlu_fs::Overwrite::Replace).map_err(|source| {
        Error::Write {
            path: dest.to_path_buf(),
            source,
        }
    })?;
    Ok(())
}

#[tracing::instrument(skip_all, fields(path = %path.display(), bytes = bytes.len()))]
fn parse_image_at(bytes: &[u8], path: &Path) -> Result<GenerationParams> {
    let mut found = Found::default();
    let kind = if bytes.starts_with(&png::SIGNATURE) {
        png::read_text(bytes, &mut found);
        ImageKind::Png
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        jpeg::read_text(bytes, &mut found);
        ImageKind::Jpeg
    } else if webp::is_webp(bytes) {
        webp::read_text(bytes, &mut found);
        ImageKind::Webp
    } else {
        return Err(Error::UnknownFormat {
            path: path.to_path_buf(),
            magic: magic_hex(bytes),
        });
    };
    let mut params = interpret(&found.entries);
    if params.source == Source::None && kind != ImageKind::Jpeg {
        match stealth::read(bytes) {
            Ok(Some(payload)) => {
                let container_extra = std::mem::take(&mut params.extra);
                params = from_stealth(&payload);
                for (k, v) in container_extra {
                    params.extra.entry(k).or_insert(v);
                }
                params.findings.insert(
                    0,
                    format!(
                        "parameters read from stealth metadata in the {} LSBs",
                        match payload.mode {
                            StealthMode::Alpha => "alpha",
                            StealthMode::Rgb => "RGB",
                        }
                    ),
                );
            }
            Ok(None) => {}
            Err(e) => found.note(e),
        }
    }
    found.findings.append(&mut params.findings);
    params.findings = found.findings;
    tracing::debug!(source = ?params.source, findings = params.findings.len(), "parsed");
    Ok(params)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageKind {
    Png,
    Jpeg,
    Webp,
}

impl StealthPayload {
    /// Interprets the payload: NovelAI's JSON object of text chunks, or A1111 infotext.
    pub fn to_params(&self) -> GenerationParams {
        from_stealth(self)
    }
}

/// Parameters from a stealth payload: NovelAI's JSON object of text chunks, or A1111 infotext.
fn from_stealth(payload: &StealthPayload) -> GenerationParams {
    if let Some(serde_json::Value::Object(map)) = text::parse_json_lenient(&payload.text) {
        let entries: Vec<TextEntry> = map
            .iter()
            .map(|(k, v)| TextEntry {
                key: k.clone(),
                text: json_to_string(v),
            })
            .collect();
        let params = interpret(&entries);
        if params.source != Source::None {
            return params;
        }
    }
    a1111::parse_a1111(&payload.text)
}

/// A JSON value as an `extra` string: strings as they are, everything else as JSON.
pub(crate) fn json_to_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn entry<'a>(entries: &'a [TextEntry], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.text.as_str())
}

/// Entry names that come from EXIF tags or JPEG comments.
const EXIF_KEYS: &[&str] = &[
    "DocumentName",
    "ImageDescription",
    "Make",
    "Model",
    "Software",
    "Artist",
    "UserComment",
    "XPComment",
    "comment",
];

/// Keys that name a container's own entries (PNG text keywords, EXIF tags, other tools'
/// chunks) rather than A1111 parameters; kept in `extra` but never written into infotext.
pub(crate) fn is_container_key(key: &str) -> bool {
    const PNG_KEYWORDS: &[&str] = &[
        "Title",
        "Author",
        "Description",
        "Copyright",
        "Creation Time",
        "Software",
        "Disclaimer",
        "Warning",
        "Source",
        "Comment",
        "Generation time",
        "XMP",
        "parameters",
        "prompt",
        "workflow",
        "parameters-json",
        "smproj",
        "fooocus_scheme",
        "invokeai_graph",
        "invokeai_metadata",
        "sd-metadata",
        "Dream",
        "dream",
    ];
    EXIF_KEYS.contains(&key) || PNG_KEYWORDS.contains(&key) || key.contains(':')
}

/// Splits EXIF-borne ComfyUI and NovelAI forms into the keys their PNG forms use.
///
/// ComfyUI `SaveAnimatedWEBP` writes `Make = "workflow:{..}"`, `Model = "prompt:{..}"`
/// (ComfyUI `comfy_extras/nodes_images.py`); save-image-extended writes `Prompt: {..}` and
/// `Workflow: {..}`; SaveImage-Plus writes a `UserComment` JSON `{"prompt":..,"workflow":..}`;
/// NovelAI WebP writes a `UserComment` JSON `{"Comment": ..}`.
fn normalize(entries: &[TextEntry]) -> Vec<TextEntry> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let trimmed = e.text.trim_start();
        let lower: String = trimmed.chars().take(10).collect::<String>().to_lowercase();
        let mut pushed = false;
        for key in ["prompt", "workflow"] {
            if EXIF_KEYS.contains(&e.key.as_str()) && lower.starts_with(key) {
                let rest = trimmed[key.len()..].trim_start();
                if let Some(json) = rest.strip_prefix(':') {
                    let json = json.trim_start();
                    if json.starts_with('{') {
                        out.push(TextEntry {
                            key: key.to_owned(),
                            text: json.to_owned(),
                        });
                        pushed = true;
                    }
                }
            }
        }
        if pushed {
            continue;
        }
        if e.key == "UserComment"
            && trimmed.starts_with('{')
            && let Some(serde_json::Value::Object(map)) = text::parse_json_lenient(trimmed)
        {
            let known = ["prompt", "workflow", "Comment", "parameters"];
            if map.keys().any(|k| known.contains(&k.as_str())) {
                for (k, v) in &map {
                    out.push(TextEntry {
                        key: k.clone(),
                        text: json_to_string(v),
                    });
                }
                continue;
            }
        }
        // A camera's or editor's comment is not infotext: A1111's always has a parameter line.
        // A1111 `modules/images.py` `read_info_from_image` also reads a `comment` (JPEG COM,
        // GIF comment) as infotext.
        if matches!(e.key.as_str(), "UserComment" | "comment")
            && a1111::looks_like_infotext(&e.text)
        {
            out.push(TextEntry {
                key: "parameters".to_owned(),
                text: e.text.clone(),
            });
            continue;
        }
        out.push(e.clone());
    }
    out
}

/// Decides which tool wrote the entries and parses them.
fn interpret(entries: &[TextEntry]) -> GenerationParams {
    let entries = normalize(entries);
    let get = |k: &str| entry(&entries, k);
    let mut params = if let Some(p) = get("parameters").filter(|p| !p.trim().is_empty()) {
        if p.trim_start().starts_with('{') {
            match text::parse_json_lenient(p) {
                Some(json) if json.get("sui_image_params").is_some() => {
                    fooocus::parse_swarmui(&json, p)
                }
                Some(json) => fooocus::parse_fooocus(&json, p),
                None => a1111::parse_a1111(p),
            }
        } else {
            let mut params = a1111::parse_a1111(p);
            if get("prompt").is_some() || get("workflow").is_some() {
                params.findings.push(
                    "image also holds a ComfyUI graph; the A1111 `parameters` text was used"
                        .to_owned(),
                );
            }
            params
        }
    } else if get("prompt").is_some() || get("workflow").is_some() {
        comfyui::parse(get("prompt"), get("workflow"))
    } else if get("invokeai_metadata").is_some()
        || get("sd-metadata").is_some()
        || get("Dream").is_some()
        || get("dream").is_some()
    {
        invokeai::parse(&entries)
    } else if get("Software").is_some_and(|s| s.starts_with("NovelAI"))
        || get("Comment").is_some_and(novelai::is_novelai_comment)
    {
        novelai::parse(&entries)
    } else {
        GenerationParams::new(Source::None, "")
    };
    // Keep the other text entries (not the ones parsed) in `extra`.
    let consumed: &[&str] = match params.source {
        Source::A1111 | Source::Fooocus | Source::SwarmUi => &["parameters", "prompt", "workflow"],
        Source::ComfyUi => &["prompt", "workflow"],
        Source::InvokeAi => &[
            "invokeai_metadata",
            "sd-metadata",
            "Dream",
            "dream",
            "invokeai_graph",
        ],
        Source::NovelAi => &["Comment"],
        Source::None => &[],
    };
    for e in &entries {
        if consumed.contains(&e.key.as_str()) {
            continue;
        }
        if e.text.len() > 4096 {
            params
                .extra
                .entry(e.key.clone())
                .or_insert_with(|| format!("({} bytes, not shown)", e.text.len()));
            continue;
        }
        params
            .extra
            .entry(e.key.clone())
            .or_insert_with(|| e.text.clone());
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_match_the_contract() {
        let names: Vec<String> = [
            Source::A1111,
            Source::ComfyUi,
            Source::NovelAi,
            Source::InvokeAi,
            Source::Fooocus,
            Source::SwarmUi,
            Source::None,
        ]
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"a1111\"",
                "\"comfyui\"",
                "\"novelai\"",
                "\"invokeai\"",
                "\"fooocus\"",
                "\"swarmui\"",
                "\"none\""
            ]
        );
        for n in names {
            let _: Source = serde_json::from_str(&n).unwrap();
        }
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<TextEntry> {
        pairs
            .iter()
            .map(|(k, v)| TextEntry {
                key: (*k).to_owned(),
                text: (*v).to_owned(),
            })
            .collect()
    }

    #[test]
    fn free_text_comments_are_not_parameters() {
        let p = interpret(&entries(&[("Comment", "Created with GIMP")]));
        assert_eq!(p.source, Source::None);
        assert_eq!(p.extra["Comment"], "Created with GIMP");
        let p = interpret(&entries(&[("UserComment", "holiday photo, beach")]));
        assert_eq!(p.source, Source::None);
        assert_eq!(p.extra["UserComment"], "holiday photo, beach");
        let p = interpret(&entries(&[(
            "UserComment",
            "a cat\nSteps: 2, Seed: 3, Size: 8x8",
        )]));
        assert_eq!((p.source, p.seed), (Source::A1111, Some(3)));
    }

    #[test]
    fn exif_prefixed_comfyui_graphs_are_found() {
        let graph = r#"{"1": {"class_type": "KSampler", "inputs": {"seed": 4, "steps": 5}}}"#;
        for (key, text) in [
            ("Model", format!("prompt:{graph}")),
            ("Make", format!("Prompt: {graph}")),
            ("UserComment", format!(r#"{{"prompt": {graph}}}"#)),
        ] {
            let p = interpret(&entries(&[(key, text.as_str())]));
            assert_eq!((p.source, p.seed), (Source::ComfyUi, Some(4)), "{key}");
        }
    }

    #[test]
    fn empty_bytes_are_an_unknown_format_error() {
        let err = parse_image(&[]).unwrap_err();
        assert!(matches!(err, Error::UnknownFormat { .. }));
        assert!(err.to_string().contains("<memory>"), "{err}");
    }

    #[test]
    fn contract_fields_are_serialized() {
        let json = serde_json::to_value(GenerationParams::default()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "source",
                "prompt",
                "negative_prompt",
                "steps",
                "seed",
                "width",
                "height",
                "clip_skip",
                "sampler",
                "scheduler",
                "cfg_scale",
                "denoising_strength",
                "model",
                "model_hash",
                "vae",
                "vae_hash",
                "loras",
                "embeddings",
                "extra",
                "raw"
            ]
        );
    }
}
