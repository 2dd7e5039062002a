//! Where the networks run: the CPU, always; an NVIDIA GPU when the crate is built with the `cuda`
//! feature (candle's CUDA backend, needs the CUDA toolkit at build time); an Apple GPU with the
//! `metal` feature (macOS only).
//!
//! A build without a backend still understands its name, so that `--device cuda` on a CPU build
//! says what to rebuild instead of failing somewhere inside candle.

use crate::{Error, Result};
use candle_core::{DType, Device};
use std::fmt;
use std::str::FromStr;

/// A device as a person names it: `auto`, `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first GPU this build can use, else the CPU.
    #[default]
    Auto,
    /// The CPU (all rayon threads).
    Cpu,
    /// NVIDIA GPU number N (cargo feature `cuda`).
    Cuda(usize),
    /// Apple GPU number N (cargo feature `metal`).
    Metal(usize),
}

impl DeviceChoice {
    /// Opens the device. `Auto` tries CUDA, then Metal, then takes the CPU; a named GPU that this
    /// build cannot drive is an error that says which cargo feature it needs.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Auto => {
                if candle_core::utils::cuda_is_available() {
                    Self::Cuda(0).open()
                } else if candle_core::utils::metal_is_available() {
                    Self::Metal(0).open()
                } else {
                    Ok(Device::Cpu)
                }
            }
            Self::Cuda(n) => {
                if !cfg!(feature = "cuda") {
                    return Err(self.unsupported("cuda", "the CUDA toolkit (nvcc)"));
                }
                Device::new_cuda(n).map_err(|e| Error::Device {
                    name: self.to_string(),
                    reason: e.to_string(),
                })
            }
            Self::Metal(n) => {
                if !cfg!(feature = "metal") {
                    return Err(self.unsupported("metal", "macOS"));
                }
                Device::new_metal(n).map_err(|e| Error::Device {
                    name: self.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }

    fn unsupported(self, feature: &str, needs: &str) -> Error {
        Error::Device {
            name: self.to_string(),
            reason: format!(
                "this build of danlu has no {feature} backend; rebuild with \
                 `cargo build --release --features {feature}` (needs {needs})"
            ),
        }
    }
}

/// The compute precision that is fastest and correct on a device: float32 on the CPU (candle's
/// CPU kernels compute half precision by widening, so it is no faster there), float16 on a GPU
/// (A1111's default outside `--no-half`).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::F16
    }
}

/// The backends compiled into this build, `cpu` first.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut out = vec!["cpu"];
    if cfg!(feature = "cuda") {
        out.push("cuda");
    }
    if cfg!(feature = "metal") {
        out.push("metal");
    }
    out
}

/// A device's name as [`DeviceChoice`] parses it (`cpu`, `cuda:0`, `metal:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_owned(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, index) = match lower.split_once(':') {
            Some((kind, n)) => {
                let n = n.parse::<usize>().map_err(|_| Error::Invalid {
                    what: "device",
                    reason: format!("`{s}`: the GPU number after `:` is not a number"),
                })?;
                (kind, Some(n))
            }
            None => (lower.as_str(), None),
        };
        match (kind, index) {
            ("auto", None) => Ok(Self::Auto),
            ("cpu", None) => Ok(Self::Cpu),
            ("cuda" | "gpu", n) => Ok(Self::Cuda(n.unwrap_or(0))),
            ("metal" | "mps", n) => Ok(Self::Metal(n.unwrap_or(0))),
            _ => Err(Error::Invalid {
                what: "device",
                reason: format!("`{s}`: expected auto, cpu, cuda, cuda:N, metal or metal:N"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:1", DeviceChoice::Cuda(1)),
            ("metal", DeviceChoice::Metal(0)),
            ("mps", DeviceChoice::Metal(0)),
        ] {
            let parsed: DeviceChoice = text.parse().unwrap();
            assert_eq!(parsed, choice, "{text}");
            assert_eq!(parsed.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
        for bad in ["tpu", "cuda:x", "cpu:1", ""] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_and_auto_open_without_a_gpu_build() {
        let cpu = DeviceChoice::Cpu.open().unwrap();
        assert!(cpu.is_cpu());
        assert_eq!(device_name(&cpu), "cpu");
        assert_eq!(default_dtype(&cpu), DType::F32);
        if compiled_backends() == ["cpu"] {
            assert!(DeviceChoice::Auto.open().unwrap().is_cpu());
        }
    }

    #[test]
    fn a_gpu_missing_from_the_build_names_the_feature() {
        if !cfg!(feature = "cuda") {
            let message = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(message.contains("--features cuda"), "{message}");
            assert!(message.contains("cuda:0"), "{message}");
        }
        if !cfg!(feature = "metal") {
            let message = DeviceChoice::Metal(0).open().unwrap_err().to_string();
            assert!(message.contains("--features metal"), "{message}");
        }
    }
}
