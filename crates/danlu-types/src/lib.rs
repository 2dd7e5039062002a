//! The vocabulary of danlu's machine-readable output, as enums.
//!
//! Every word of `contracts.md` (`kind`, `base`, `variant`, `format`, `subformat`, `dtype`,
//! UI folders) exists exactly once, here, with its serde name. JSON output, the library cache,
//! the HTTP API and the web UI all use these types, so a word can never be spelled two ways.
//!
//! ```
//! use danlu_types::{Kind, Ui};
//! assert_eq!(Kind::Lora.as_str(), "lora");
//! assert_eq!(Kind::Lora.folder(Ui::ComfyUi), Some("models/loras"));
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

/// Declares a string enum whose wire names are given explicitly, with `as_str`, `ALL`,
/// `FromStr`, `Display` and serde implementations that agree with each other.
macro_rules! words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire name, exactly as `contracts.md` spells it.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownWord { what: stringify!($name), word: s.to_owned() }),
                }
            }
        }
    };
}

/// A string that is not one of the words of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord {
    /// Which vocabulary was asked (`Kind`, `Base`, ...).
    pub what: &'static str,
    /// The word that was given.
    pub word: String,
}

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a known {} value",
            self.word,
            self.what.to_lowercase()
        )
    }
}

impl std::error::Error for UnknownWord {}

words! {
    /// What a model file is (`contracts.md`, `kind` values).
    Kind {
        /// Full model: UNet, usually with VAE and text encoder(s).
        Checkpoint = "checkpoint",
        /// UNet or transformer alone.
        DiffusionModel = "diffusion_model",
        /// Variational autoencoder.
        Vae = "vae",
        /// LoRA or LyCORIS adapter (all subformats).
        Lora = "lora",
        /// Textual-inversion embedding.
        Embedding = "embedding",
        /// A1111 hypernetwork.
        Hypernetwork = "hypernetwork",
        /// ControlNet.
        Controlnet = "controlnet",
        /// T2I-Adapter.
        T2iAdapter = "t2i_adapter",
        /// IP-Adapter.
        IpAdapter = "ip_adapter",
        /// CLIP vision encoder.
        ClipVision = "clip_vision",
        /// Standalone text encoder (CLIP-L, CLIP-G, T5).
        TextEncoder = "text_encoder",
        /// Super-resolution model (ESRGAN and friends).
        Upscaler = "upscaler",
        /// Nothing known matched.
        Unknown = "unknown",
    }
}

words! {
    /// The model family a file belongs to or was trained for (`contracts.md`, `base` values).
    Base {
        /// Stable Diffusion 1.x.
        Sd1 = "sd1",
        /// Stable Diffusion 2.x.
        Sd2 = "sd2",
        /// SDXL base.
        Sdxl = "sdxl",
        /// SDXL refiner.
        SdxlRefiner = "sdxl_refiner",
        /// Stable Diffusion 3 / 3.5.
        Sd3 = "sd3",
        /// Flux.1.
        Flux = "flux",
        /// Unknown or not applicable.
        Unknown = "unknown",
    }
}

words! {
    /// Where a model applies beyond its base (`contracts.md`, `variant` values).
    Variant {
        /// Inpainting UNet (9 input channels).
        Inpaint = "inpaint",
        /// InstructPix2Pix UNet (8 input channels).
        Pix2pix = "pix2pix",
        /// Depth-conditioned UNet (5 input channels).
        Depth = "depth",
        /// v-prediction, only when the file or its `.yaml` says so.
        VPrediction = "v_prediction",
        /// Flux.1 dev (guidance-distilled).
        Dev = "dev",
        /// Flux.1 schnell (timestep-distilled).
        Schnell = "schnell",
        /// Flux.1 Fill (inpainting).
        Fill = "fill",
    }
}

words! {
    /// The container a file is stored in (`contracts.md`, `format` values).
    Format {
        /// `.safetensors`.
        Safetensors = "safetensors",
        /// PyTorch zip archive with `data.pkl`.
        Ckpt = "ckpt",
        /// PyTorch's pre-zip (legacy) serialisation.
        PtLegacy = "pt_legacy",
        /// A diffusers model folder (`model_index.json` or `config.json`).
        DiffusersDir = "diffusers_dir",
        /// GGUF.
        Gguf = "gguf",
    }
}

words! {
    /// The layout inside a kind (`contracts.md`, `subformat` values).
    Subformat {
        /// kohya-style LoRA (`lora_up`/`lora_down`).
        Lora = "lora",
        /// LyCORIS LoCon (LoRA with conv layers).
        Locon = "locon",
        /// LyCORIS LoHa (Hadamard product).
        Loha = "loha",
        /// LyCORIS LoKr (Kronecker product).
        Lokr = "lokr",
        /// LyCORIS (IA)^3.
        Ia3 = "ia3",
        /// Weight-decomposed LoRA.
        Dora = "dora",
        /// diffusers or PEFT LoRA (`lora_A`/`lora_B`, `lora.up`/`lora.down`).
        Diffusers = "diffusers",
        /// A1111 textual-inversion `.pt` (`string_to_param`).
        A1111Pt = "a1111_pt",
        /// Embedding stored as safetensors (`emb_params` or a single tensor).
        Safetensors = "safetensors",
        /// SDXL embedding pair (`clip_l` and `clip_g`).
        SdxlPair = "sdxl_pair",
    }
}

words! {
    /// Tensor element types, named as `contracts.md` spells them.
    Dtype {
        /// 64-bit float.
        F64 = "f64",
        /// 32-bit float.
        F32 = "f32",
        /// 16-bit IEEE float.
        F16 = "f16",
        /// bfloat16.
        Bf16 = "bf16",
        /// 8-bit float, 4 exponent bits, 3 mantissa bits.
        F8E4m3 = "f8_e4m3",
        /// 8-bit float, 5 exponent bits, 2 mantissa bits.
        F8E5m2 = "f8_e5m2",
        /// 64-bit signed integer.
        I64 = "i64",
        /// 32-bit signed integer.
        I32 = "i32",
        /// 16-bit signed integer.
        I16 = "i16",
        /// 8-bit signed integer.
        I8 = "i8",
        /// 64-bit unsigned integer.
        U64 = "u64",
        /// 32-bit unsigned integer.
        U32 = "u32",
        /// 16-bit unsigned integer.
        U16 = "u16",
        /// 8-bit unsigned integer.
        U8 = "u8",
        /// Boolean.
        Bool = "bool",
        /// 64-bit complex (two f32).
        C64 = "c64",
        /// GGUF block-quantized data (`Q4_0`, `Q8_0`, `Q4_K`, ...).
        Quantized = "quantized",
    }
}

impl Dtype {
    /// Size of one element in bytes; `None` for block-quantized data, whose size is per block.
    pub const fn size_in_bytes(self) -> Option<u64> {
        Some(match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 | Dtype::C64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::Bf16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::F8E4m3 | Dtype::F8E5m2 | Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
            Dtype::Quantized => return None,
        })
    }

    /// Whether this is a floating-point type (weights rather than ids or counters).
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            Dtype::F64
                | Dtype::F32
                | Dtype::F16
                | Dtype::Bf16
                | Dtype::F8E4m3
                | Dtype::F8E5m2
                | Dtype::Quantized
        )
    }
}

/// Which user interface's folder layout is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ui {
    /// AUTOMATIC1111's stable-diffusion-webui (and Forge, SD.Next).
    A1111,
    /// ComfyUI.
    #[serde(rename = "comfyui")]
    ComfyUi,
}

impl Kind {
    /// The folder, relative to the UI's root, where files of this kind belong
    /// (`contracts.md`, folder table); `None` for `unknown`.
    pub const fn folder(self, ui: Ui) -> Option<&'static str> {
        Some(match (self, ui) {
            (Kind::Checkpoint, Ui::A1111) => "models/Stable-diffusion",
            (Kind::Checkpoint, Ui::ComfyUi) => "models/checkpoints",
            (Kind::DiffusionModel, Ui::A1111) => "models/Stable-diffusion",
            (Kind::DiffusionModel, Ui::ComfyUi) => "models/diffusion_models",
            (Kind::Vae, Ui::A1111) => "models/VAE",
            (Kind::Vae, Ui::ComfyUi) => "models/vae",
            (Kind::Lora, Ui::A1111) => "models/Lora",
            (Kind::Lora, Ui::ComfyUi) => "models/loras",
            (Kind::Embedding, Ui::A1111) => "embeddings",
            (Kind::Embedding, Ui::ComfyUi) => "models/embeddings",
            (Kind::Hypernetwork, _) => "models/hypernetworks",
            (Kind::Controlnet | Kind::T2iAdapter, Ui::A1111) => "models/ControlNet",
            (Kind::Controlnet | Kind::T2iAdapter, Ui::ComfyUi) => "models/controlnet",
            (Kind::Upscaler, Ui::A1111) => "models/ESRGAN",
            (Kind::Upscaler, Ui::ComfyUi) => "models/upscale_models",
            (Kind::ClipVision, _) => "models/clip_vision",
            (Kind::TextEncoder, Ui::A1111) => "models/text_encoder",
            (Kind::TextEncoder, Ui::ComfyUi) => "models/text_encoders",
            (Kind::IpAdapter, Ui::A1111) => "models/ControlNet",
            (Kind::IpAdapter, Ui::ComfyUi) => "models/ipadapter",
            (Kind::Unknown, _) => return None,
        })
    }

    /// Both UIs' folders for this kind, as `inspect` reports them.
    pub fn folders(self) -> Folders {
        Folders {
            a1111: self.folder(Ui::A1111).map(str::to_owned),
            comfyui: self.folder(Ui::ComfyUi).map(str::to_owned),
        }
    }
}

/// Where a file belongs in each UI (`contracts.md`, `folders`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Folders {
    /// Folder relative to an A1111 root; null for unknown files.
    pub a1111: Option<String>,
    /// Folder relative to a ComfyUI root; null for unknown files.
    pub comfyui: Option<String>,
}

/// What a checkpoint carries (`contracts.md`, `components`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Components {
    /// A UNet or diffusion transformer.
    pub unet: bool,
    /// A baked VAE.
    pub vae: bool,
    /// Text encoder(s).
    pub text_encoder: bool,
    /// EMA copies of the weights.
    pub ema: bool,
}

/// Identifies one task started on a [`Reporter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId(pub u64);

/// How long-running work (hashing, scanning, converting, downloading, generating) reports
/// progress. Libraries take `&dyn Reporter`; the CLI draws bars, the server serves progress.
pub trait Reporter: Send + Sync {
    /// Starts a task with a label and, when known, the total amount of work (bytes, files, steps).
    fn start(&self, label: &str, total: Option<u64>) -> TaskId;
    /// Adds `by` units of finished work to a task.
    fn advance(&self, task: TaskId, by: u64);
    /// Marks a task finished.
    fn finish(&self, task: TaskId);
}

/// A [`Reporter`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Reporter for NoProgress {
    fn start(&self, _label: &str, _total: Option<u64>) -> TaskId {
        TaskId(0)
    }
    fn advance(&self, _task: TaskId, _by: u64) {}
    fn finish(&self, _task: TaskId) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(all: &[T])
    where
        T: Serialize + for<'de> Deserialize<'de> + fmt::Display + PartialEq + fmt::Debug + Copy,
    {
        for v in all {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{v}\""));
            let back: T = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, v);
        }
    }

    #[test]
    fn every_word_round_trips_through_json_with_its_contract_spelling() {
        round_trip(Kind::ALL);
        round_trip(Base::ALL);
        round_trip(Variant::ALL);
        round_trip(Format::ALL);
        round_trip(Subformat::ALL);
        round_trip(Dtype::ALL);
    }

    #[test]
    fn contract_words_are_spelled_as_documented() {
        assert_eq!(Kind::T2iAdapter.as_str(), "t2i_adapter");
        assert_eq!(Base::SdxlRefiner.as_str(), "sdxl_refiner");
        assert_eq!(Variant::VPrediction.as_str(), "v_prediction");
        assert_eq!(Format::PtLegacy.as_str(), "pt_legacy");
        assert_eq!(Subformat::SdxlPair.as_str(), "sdxl_pair");
        assert_eq!(Dtype::F8E4m3.as_str(), "f8_e4m3");
        assert_eq!("bf16".parse::<Dtype>(), Ok(Dtype::Bf16));
        assert!("sd15".parse::<Base>().is_err());
    }

    #[test]
    fn every_known_kind_has_both_folders_and_unknown_has_none() {
        for k in Kind::ALL {
            let f = k.folders();
            assert_eq!(f.a1111.is_some(), *k != Kind::Unknown, "{k}");
            assert_eq!(f.comfyui.is_some(), *k != Kind::Unknown, "{k}");
        }
        assert_eq!(Kind::Embedding.folder(Ui::A1111), Some("embeddings"));
        assert_eq!(
            Kind::IpAdapter.folder(Ui::ComfyUi),
            Some("models/ipadapter")
        );
        assert_eq!(serde_json::to_string(&Ui::ComfyUi).unwrap(), "\"comfyui\"");
    }
}
