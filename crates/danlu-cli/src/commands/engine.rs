//! `--device`, `--precision` and `--threads`, shared by `generate`, `reproduce` and `serve`.

use crate::args::{EngineArgs, Precision};
use anyhow::Context as _;
use candle_core::DType;
use danlu_generate::{DeviceChoice, ModelSpec};

/// The engine settings of a command, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Engine {
    /// Where the networks run.
    pub device: DeviceChoice,
    /// Compute precision (`None`: the device's default).
    pub dtype: Option<DType>,
}

impl Engine {
    /// Puts the device and precision into a model spec.
    pub fn apply(self, spec: &mut ModelSpec) {
        spec.device = self.device;
        spec.dtype = self.dtype;
    }
}

/// Reads the flags and sizes the thread pool. A named GPU is opened once here, so that a build
/// without its backend fails before any hashing or loading.
///
/// # Errors
/// An unknown device name, a GPU this build cannot drive, `--threads 0`, or a thread pool that
/// was already started.
pub fn configure(args: &EngineArgs) -> anyhow::Result<Engine> {
    let device: DeviceChoice = args.device.parse()?;
    if device != DeviceChoice::Auto {
        device.open()?;
    }
    if let Some(n) = args.threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("sizing the thread pool for --threads")?;
    }
    let dtype = match args.precision {
        Precision::Auto => None,
        Precision::F32 => Some(DType::F32),
        Precision::F16 => Some(DType::F16),
        Precision::Bf16 => Some(DType::BF16),
    };
    Ok(Engine { device, dtype })
}
