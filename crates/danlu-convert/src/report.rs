//! What a conversion did, as `danlu convert` prints it (text and `--json`).

use danlu_types::{Base, Format, Kind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The element type asked for floating-point tensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetDtype {
    /// Keep every tensor's element type.
    #[default]
    Keep,
    /// IEEE half precision, rounded as `Tensor.half()`.
    F16,
    /// bfloat16, rounded as `Tensor.bfloat16()`.
    Bf16,
    /// Single precision (exact from f16 and bf16).
    F32,
}

impl TargetDtype {
    /// The element type floating-point tensors get, `None` for [`Keep`](Self::Keep).
    pub fn dtype(self) -> Option<danlu_types::Dtype> {
        match self {
            TargetDtype::Keep => None,
            TargetDtype::F16 => Some(danlu_types::Dtype::F16),
            TargetDtype::Bf16 => Some(danlu_types::Dtype::Bf16),
            TargetDtype::F32 => Some(danlu_types::Dtype::F32),
        }
    }
}

impl std::fmt::Display for TargetDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetDtype::Keep => "keep",
            TargetDtype::F16 => "f16",
            TargetDtype::Bf16 => "bf16",
            TargetDtype::F32 => "f32",
        })
    }
}

/// Why tensors were left out of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// EMA copies (`model_ema.*`), under `--prune` or after `--use-ema`.
    Ema,
    /// Optimizer, scheduler and loss state, under `--prune`.
    TrainingState,
    /// Tensors of a Lightning checkpoint outside its `state_dict` (training loop state).
    OutsideStateDict,
}

/// A group of tensors left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dropped {
    /// Why.
    pub reason: DropReason,
    /// How many tensors.
    pub tensors: usize,
    /// Their data size in the source, in bytes.
    pub bytes: u64,
    /// The first few keys.
    pub examples: Vec<String>,
}

/// A known defect repaired on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixKind {
    /// CLIP `position_ids` stored as floats or with wrong values, rewritten as int64 `arange`.
    PositionIds,
    /// A `module.` prefix (from `DataParallel`) removed from keys.
    ModulePrefix,
    /// A `state_dict.` prefix left on keys removed.
    StateDictPrefix,
}

/// One kind of repair and the tensors it touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fix {
    /// Which defect.
    pub kind: FixKind,
    /// How many tensors.
    pub tensors: usize,
    /// The first few keys, as in the source.
    pub examples: Vec<String>,
    /// What was found and done (for the first tensor).
    pub detail: String,
}

/// What `--use-ema` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EmaSwap {
    /// UNet weights replaced by their EMA copies.
    pub replaced: usize,
    /// UNet weights without an EMA copy of the same shape (kept as they were).
    pub missing: usize,
    /// The first few of those.
    pub missing_examples: Vec<String>,
}

/// What `--bake-vae` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BakedVae {
    /// The VAE file.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Tensors that replaced the checkpoint's own VAE tensors.
    pub replaced: usize,
    /// Tensors the checkpoint lacked.
    pub added: usize,
}

/// The VAE written by `--extract-vae`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtractedVae {
    /// The file written.
    pub path: PathBuf,
    /// Tensors in it.
    pub tensors: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Kind and base of the source and the output as `inspect` sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityCheck {
    /// The source's kind.
    pub source_kind: Kind,
    /// The source's base.
    pub source_base: Base,
    /// The output's kind.
    pub output_kind: Kind,
    /// The output's base.
    pub output_base: Base,
    /// Whether both agree.
    pub agrees: bool,
}

/// What `--verify` checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Tensors re-read from the output(s) and compared with the source.
    pub tensors: usize,
    /// Bytes compared.
    pub bytes: u64,
    /// How they were compared.
    pub rule: String,
    /// `inspect` on the source and the output; filled by callers that can identify models.
    pub identity: Option<IdentityCheck>,
}

/// The result of [`convert`](crate::convert).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConvertReport {
    /// The file converted.
    pub source: PathBuf,
    /// Its container.
    pub source_format: Option<Format>,
    /// Its SHA-256.
    pub source_sha256: String,
    /// Its size in bytes.
    pub source_bytes: u64,
    /// Tensors in the source.
    pub source_tensors: usize,
    /// What the restricted pickle reader saw, for PyTorch files: every global met, and why the
    /// file is unsafe to load in Python, if it is. Nothing it names was imported or run.
    pub pickle: Option<danlu_pickle::Safety>,
    /// Non-tensor values of a pickle (step counters, names, configs) not carried over.
    pub values_dropped: usize,
    /// The file written.
    pub output: PathBuf,
    /// Its size in bytes.
    pub output_bytes: u64,
    /// Tensors in it.
    pub tensors: usize,
    /// The element type asked for floating-point tensors.
    pub dtype: TargetDtype,
    /// Tensors left out, by reason.
    pub dropped: Vec<Dropped>,
    /// Defects repaired.
    pub fixes: Vec<Fix>,
    /// What `--use-ema` did.
    pub ema: Option<EmaSwap>,
    /// What `--bake-vae` did.
    pub baked_vae: Option<BakedVae>,
    /// The VAE written by `--extract-vae`.
    pub extracted_vae: Option<ExtractedVae>,
    /// The output's `__metadata__`: the source's, plus `danlu.convert` (provenance).
    pub metadata: BTreeMap<String, String>,
    /// Largest tensor held in memory at once, in bytes (0 when every tensor was streamed).
    pub max_buffer_bytes: u64,
    /// What `--verify` checked.
    pub verify: Option<Verification>,
}
