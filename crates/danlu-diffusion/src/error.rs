/// Errors of the diffusion engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed")]
    Candle(#[from] candle_core::Error),
    /// A request value is out of range (size, steps, CFG, ...).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A checkpoint file could not be mapped into memory.
    #[error("`{}`: cannot map the checkpoint", path.display())]
    Map {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: danlu_fs::Error,
    },
    /// A network could not be built from a checkpoint's tensors.
    #[error("`{}`: cannot load the {component} from the checkpoint", path.display())]
    Load {
        /// The checkpoint (its first file).
        path: std::path::PathBuf,
        /// Which network (`UNet`, `VAE`, `text encoder`).
        component: &'static str,
        /// The cause (a missing tensor, a shape or dtype that does not fit).
        #[source]
        source: candle_core::Error,
    },
    /// A compute device could not be opened.
    #[error("device `{name}`: {reason}")]
    Device {
        /// The device as named (`cuda:0`, `metal:0`).
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The per-step callback asked the sampler to stop.
    #[error("sampling cancelled at step {step}")]
    Cancelled {
        /// The zero-based step whose callback asked to stop.
        step: usize,
    },
    /// A model file could not be read as a tensor container.
    #[error("`{}`: cannot read the model file", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: danlu_format::Error,
    },
    /// An adapter file (LoRA, embedding, hypernetwork) does not hold what its kind needs.
    #[error("`{}`: {reason}", path.display())]
    Adapter {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An adapter was made for another model family than the loaded one.
    #[error("`{}`: the {kind} is for {adapter}, the loaded model is {model}", path.display())]
    WrongBase {
        /// The adapter file.
        path: std::path::PathBuf,
        /// What it is (`LoRA`, `embedding`, `hypernetwork`).
        kind: &'static str,
        /// The family the adapter fits.
        adapter: String,
        /// The family of the loaded model.
        model: String,
    },
}

/// Result of the diffusion engine.
pub type Result<T> = std::result::Result<T, Error>;
