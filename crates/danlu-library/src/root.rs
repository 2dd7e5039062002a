//! Library roots: an A1111 install, a ComfyUI install, or a bare folder laid out in A1111 form;
//! ComfyUI's `extra_model_paths.yaml`; choosing the root from flag, environment and config.

use crate::error::{Error, Result, io_err};
use danlu_types::{Kind, Ui};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How a root's folders are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// An AUTOMATIC1111 (or Forge, SD.Next) install.
    A1111,
    /// A ComfyUI install.
    #[serde(rename = "comfyui")]
    ComfyUi,
    /// A plain folder; danlu lays it out in A1111 form.
    Bare,
}

impl Layout {
    /// The UI whose folder names the root uses (a bare folder uses A1111's).
    pub const fn ui(self) -> Ui {
        match self {
            Layout::A1111 | Layout::Bare => Ui::A1111,
            Layout::ComfyUi => Ui::ComfyUi,
        }
    }

    /// The layout's name as printed (`a1111`, `comfyui`, `bare`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Layout::A1111 => "a1111",
            Layout::ComfyUi => "comfyui",
            Layout::Bare => "bare",
        }
    }
}

/// Tells the layout of a folder from the files a UI install keeps there.
///
/// A1111: `webui.py` or `models/Stable-diffusion`; ComfyUI: the `comfy` package folder or
/// `models/checkpoints`. Anything else is a bare folder.
pub fn detect_layout(dir: &Path) -> Layout {
    if dir.join("webui.py").is_file() || dir.join("models/Stable-diffusion").is_dir() {
        Layout::A1111
    } else if dir.join("comfy").is_dir() || dir.join("models/checkpoints").is_dir() {
        Layout::ComfyUi
    } else {
        Layout::Bare
    }
}

/// A folder that holds models of some kinds, from the root's layout or from
/// `extra_model_paths.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelFolder {
    /// Kinds that belong here.
    pub kinds: Vec<Kind>,
    /// The folder.
    pub path: PathBuf,
    /// `layout` for the root's own folders, else the section of `extra_model_paths.yaml`.
    pub source: String,
}

/// A library root: its folder, layout and every model folder it covers.
#[derive(Debug, Clone, Serialize)]
pub struct Root {
    /// The root folder.
    pub path: PathBuf,
    /// Its layout.
    pub layout: Layout,
    /// Folders from ComfyUI's `extra_model_paths.yaml` (ComfyUI roots only).
    pub extra: Vec<ModelFolder>,
}

/// The kinds of files every kind folder holds, for wrong-folder checks. Checkpoints and
/// diffusion models share A1111's `models/Stable-diffusion`; ControlNets, T2I- and IP-Adapters
/// share `models/ControlNet` (`contracts.md`, folder table).
fn kinds_in(folder: &str, ui: Ui) -> Vec<Kind> {
    Kind::ALL
        .iter()
        .copied()
        .filter(|k| k.folder(ui) == Some(folder))
        .collect()
}

impl Root {
    /// Opens a root: detects its layout and, for ComfyUI, reads `extra_model_paths.yaml`.
    ///
    /// # Errors
    /// When the folder does not exist, or `extra_model_paths.yaml` is present but unreadable.
    pub fn open(path: &Path) -> Result<Root> {
        let path = std::path::absolute(path).map_err(io_err(path, "resolving"))?;
        if !path.is_dir() {
            return Err(Error::Io {
                path,
                action: "opening library root",
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let layout = detect_layout(&path);
        let yaml = path.join("extra_model_paths.yaml");
        let extra = if layout == Layout::ComfyUi && yaml.is_file() {
            let text = std::fs::read_to_string(&yaml).map_err(io_err(&yaml, "reading"))?;
            parse_extra_model_paths(&text, &path).map_err(|source| Error::Yaml {
                path: yaml.clone(),
                source,
            })?
        } else {
            Vec::new()
        };
        Ok(Root {
            path,
            layout,
            extra,
        })
    }

    /// The UI whose folder names this root uses.
    pub fn ui(&self) -> Ui {
        self.layout.ui()
    }

    /// Where danlu's own files live (`ROOT/.danlu`).
    pub fn state_dir(&self) -> PathBuf {
        self.path.join(".danlu")
    }

    /// The SQLite cache (`ROOT/.danlu/library.sqlite`).
    pub fn cache_path(&self) -> PathBuf {
        self.state_dir().join("library.sqlite")
    }

    /// The folder where files of `kind` are filed in this root; `None` for `unknown`.
    pub fn folder(&self, kind: Kind) -> Option<PathBuf> {
        kind.folder(self.ui()).map(|f| self.path.join(f))
    }

    /// Every model folder: the layout's own (whether or not they exist yet) and the extra ones.
    pub fn folders(&self) -> Vec<ModelFolder> {
        let ui = self.ui();
        let mut names: Vec<&str> = Kind::ALL.iter().filter_map(|k| k.folder(ui)).collect();
        names.sort_unstable();
        names.dedup();
        let mut out: Vec<ModelFolder> = names
            .into_iter()
            .map(|f| ModelFolder {
                kinds: kinds_in(f, ui),
                path: self.path.join(f),
                source: self.layout.as_str().to_owned(),
            })
            .collect();
        out.extend(self.extra.iter().cloned());
        out
    }

    /// The folders a scan walks: for UI installs `models/` (and A1111's `embeddings/`), for a
    /// bare folder the whole folder, plus every extra folder.
    pub fn scan_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = match self.layout {
            Layout::Bare => vec![self.path.clone()],
            Layout::A1111 => vec![self.path.join("models"), self.path.join("embeddings")],
            Layout::ComfyUi => vec![self.path.join("models")],
        };
        for e in &self.extra {
            if !dirs.iter().any(|d| e.path.starts_with(d)) {
                dirs.push(e.path.clone());
            }
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }

    /// Whether `path` lies in a folder where files of `kind` belong. A1111 also reads VAEs
    /// named `*.vae.{pt,ckpt,safetensors}` beside checkpoints (`modules/sd_vae.py`).
    pub fn is_in_place(&self, path: &Path, kind: Kind) -> bool {
        if kind == Kind::Unknown {
            return true;
        }
        if kind == Kind::Vae
            && is_vae_beside_checkpoint(path)
            && self
                .folders()
                .iter()
                .any(|f| f.kinds.contains(&Kind::Checkpoint) && path.starts_with(&f.path))
        {
            return true;
        }
        self.folders()
            .iter()
            .any(|f| f.kinds.contains(&kind) && path.starts_with(&f.path))
    }
}

/// Whether a file is named like a VAE kept beside checkpoints (`NAME.vae.pt`,
/// `NAME.vae.ckpt`, `NAME.vae.safetensors`; A1111 `modules/sd_vae.py` `refresh_vae_list`).
pub fn is_vae_beside_checkpoint(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    [".vae.pt", ".vae.ckpt", ".vae.safetensors"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// The kinds a key of `extra_model_paths.yaml` stands for (ComfyUI `folder_paths.py` folder
/// names; `unet` and `clip` are the older names of `diffusion_models` and `text_encoders`).
fn kinds_of_comfy_key(key: &str) -> Option<Vec<Kind>> {
    Some(match key {
        "checkpoints" => vec![Kind::Checkpoint],
        "diffusion_models" | "unet" => vec![Kind::DiffusionModel],
        "vae" => vec![Kind::Vae],
        "loras" => vec![Kind::Lora],
        "embeddings" => vec![Kind::Embedding],
        "hypernetworks" => vec![Kind::Hypernetwork],
        "controlnet" | "t2i_adapter" => vec![Kind::Controlnet, Kind::T2iAdapter],
        "upscale_models" => vec![Kind::Upscaler],
        "clip_vision" => vec![Kind::ClipVision],
        "text_encoders" | "clip" => vec![Kind::TextEncoder],
        "ipadapter" => vec![Kind::IpAdapter],
        _ => return None,
    })
}

/// Parses ComfyUI's `extra_model_paths.yaml` (format of its `extra_model_paths.yaml.example`):
/// sections, each with an optional `base_path` (relative paths are taken from `root`, the
/// folder of the file, as ComfyUI `utils/extra_config.py` does) and folder keys whose values
/// hold one path per line.
///
/// # Errors
/// When the text is not YAML.
pub fn parse_extra_model_paths(
    text: &str,
    root: &Path,
) -> std::result::Result<Vec<ModelFolder>, serde_yaml::Error> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    let mut out = Vec::new();
    let Some(sections) = doc.as_mapping() else {
        return Ok(out);
    };
    for (name, section) in sections {
        let name = name.as_str().unwrap_or_default().to_owned();
        let Some(section) = section.as_mapping() else {
            continue;
        };
        let base = section
            .get("base_path")
            .and_then(|v| v.as_str())
            .map(|b| root.join(expand_home(b.trim())))
            .unwrap_or_else(|| root.to_path_buf());
        for (key, value) in section {
            let (Some(key), Some(value)) = (key.as_str(), value.as_str()) else {
                continue;
            };
            let Some(kinds) = kinds_of_comfy_key(key) else {
                continue;
            };
            for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
                out.push(ModelFolder {
                    kinds: kinds.clone(),
                    path: base.join(expand_home(line)),
                    source: format!("extra_model_paths.yaml `{name}`"),
                });
            }
        }
    }
    Ok(out)
}

/// `~/x` stays as written: libraries read no environment, and ComfyUI users write absolute or
/// relative paths in practice.
fn expand_home(p: &str) -> PathBuf {
    PathBuf::from(p)
}

/// danlu's config file (`config.yaml`): `root: PATH`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Config {
    /// The library root.
    pub root: Option<PathBuf>,
}

/// Parses the config file's text.
///
/// # Errors
/// When the text is not YAML of that shape.
pub fn parse_config(text: &str) -> std::result::Result<Config, serde_yaml::Error> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_yaml::from_str(text)
}

/// Where the chosen root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// The command line.
    Flag,
    /// The `DANLU_ROOT` environment variable.
    Env,
    /// The config file.
    Config,
}

/// Chooses the root: the flag, else the environment value, else the config file's `root`.
pub fn choose_root(
    flag: Option<&Path>,
    env: Option<&Path>,
    config: Option<&Config>,
) -> Option<(PathBuf, RootSource)> {
    if let Some(f) = flag {
        return Some((f.to_path_buf(), RootSource::Flag));
    }
    if let Some(e) = env.filter(|e| !e.as_os_str().is_empty()) {
        return Some((e.to_path_buf(), RootSource::Env));
    }
    config
        .and_then(|c| c.root.clone())
        .map(|r| (r, RootSource::Config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_told_apart_by_their_folders() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_layout(d.path()), Layout::Bare);
        std::fs::create_dir_all(d.path().join("models/checkpoints")).unwrap();
        assert_eq!(detect_layout(d.path()), Layout::ComfyUi);
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("models/Stable-diffusion")).unwrap();
        assert_eq!(detect_layout(a.path()), Layout::A1111);
    }

    #[test]
    fn extra_model_paths_example_maps_a1111_folders_to_kinds() {
        // The `a111` section of ComfyUI's extra_model_paths.yaml.example.
        let text = "a111:\n    base_path: /sd/webui/\n\n    checkpoints: models/Stable-diffusion\n    configs: models/Stable-diffusion\n    vae: models/VAE\n    loras: |\n         models/Lora\n         models/LyCORIS\n    upscale_models: |\n                  models/ESRGAN\n                  models/RealESRGAN\n    embeddings: embeddings\n    hypernetworks: models/hypernetworks\n    controlnet: models/ControlNet\n";
        let f = parse_extra_model_paths(text, Path::new("/comfy")).unwrap();
        let find = |p: &str| f.iter().find(|m| m.path == Path::new(p)).unwrap();
        assert_eq!(
            find("/sd/webui/models/Stable-diffusion").kinds,
            vec![Kind::Checkpoint]
        );
        assert_eq!(find("/sd/webui/models/LyCORIS").kinds, vec![Kind::Lora]);
        assert_eq!(find("/sd/webui/embeddings").kinds, vec![Kind::Embedding]);
        assert_eq!(
            find("/sd/webui/models/RealESRGAN").kinds,
            vec![Kind::Upscaler]
        );
        // `configs` holds no models.
        assert_eq!(f.len(), 9);
    }

    #[test]
    fn relative_base_path_is_taken_from_the_root() {
        let f = parse_extra_model_paths(
            "x:\n  base_path: ../a1111\n  vae: models/VAE\n",
            Path::new("/c"),
        )
        .unwrap();
        assert_eq!(f[0].path, Path::new("/c/../a1111/models/VAE"));
    }

    #[test]
    fn flag_beats_env_beats_config() {
        let cfg = parse_config("root: /from/config\n").unwrap();
        let flag = Path::new("/from/flag");
        let env = Path::new("/from/env");
        assert_eq!(
            choose_root(Some(flag), Some(env), Some(&cfg)),
            Some((flag.to_path_buf(), RootSource::Flag))
        );
        assert_eq!(
            choose_root(None, Some(env), Some(&cfg)),
            Some((env.to_path_buf(), RootSource::Env))
        );
        assert_eq!(
            choose_root(None, None, Some(&cfg)),
            Some((PathBuf::from("/from/config"), RootSource::Config))
        );
        assert_eq!(choose_root(None, None, None), None);
    }

    #[test]
    fn vae_beside_checkpoint_is_in_place_but_a_lora_in_the_vae_folder_is_not() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::open(d.path()).unwrap();
        let sd = root.folder(Kind::Checkpoint).unwrap();
        assert!(root.is_in_place(&sd.join("x.vae.pt"), Kind::Vae));
        assert!(!root.is_in_place(&sd.join("x.safetensors"), Kind::Vae));
        let vae = root.folder(Kind::Vae).unwrap();
        assert!(!root.is_in_place(&vae.join("l.safetensors"), Kind::Lora));
        assert!(root.is_in_place(&root.path.join("models/ControlNet/ip.bin"), Kind::IpAdapter));
    }
}
