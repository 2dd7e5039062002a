//! Key names and shapes of real model families, and writers of (sparse) files holding them.
//!
//! Every generator builds its keys from the architecture (loops over levels, blocks and layers),
//! with the shapes the reference implementations give them: CompVis/Stability `ldm` and `sgm`
//! (`openaimodel.py`, `autoencoder.py`), HF transformers CLIP and T5, OpenCLIP, black-forest-labs
//! `flux/model.py`, Stability `sd3/mmdit.py`, diffusers `UNet2DConditionModel`, kohya-ss
//! sd-scripts `networks/lora.py`, LyCORIS, A1111 `textual_inversion.py` and `hypernetwork.py`,
//! xinntao ESRGAN / Real-ESRGAN and JingyunLiang SwinIR.
//!
//! ```
//! use danlu_fixtures::models::{sd1_checkpoint, CheckpointOpts};
//! let keys = sd1_checkpoint(&CheckpointOpts::default());
//! assert!(keys.iter().any(|t| t.name == "model.diffusion_model.input_blocks.0.0.weight"));
//! ```

use danlu_types::Dtype;
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

mod generators;

pub use generators::*;

/// One tensor of a generated model: name, element type and shape (no data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureTensor {
    /// Full key, as stored in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
}

impl FixtureTensor {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Size of the data in bytes (quantized tensors count one byte per element).
    pub fn byte_len(&self) -> u64 {
        self.numel() * self.dtype.size_in_bytes().unwrap_or(1)
    }
}

/// How [`write_safetensors`] fills the tensor data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Header only, then `set_len`: the data is a hole in a sparse file (reads as zeros), so a
    /// multi-gigabyte checkpoint costs nothing on disk.
    Sparse,
    /// Zero bytes written out.
    Zeros,
    /// Deterministic pseudo-random bytes from the seed (xorshift64*), for hashing tests.
    Seeded(u64),
}

/// The safetensors element-type name of a dtype (safetensors `Dtype` enum spelling).
fn safetensors_dtype(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F64 => "F64",
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::Bf16 => "BF16",
        Dtype::F8E4m3 => "F8_E4M3",
        Dtype::F8E5m2 => "F8_E5M2",
        Dtype::I64 => "I64",
        Dtype::I32 => "I32",
        Dtype::I16 => "I16",
        Dtype::I8 => "I8",
        Dtype::U64 => "U64",
        Dtype::U32 => "U32",
        Dtype::U16 => "U16",
        Dtype::U8 | Dtype::Quantized => "U8",
        Dtype::Bool => "BOOL",
        Dtype::C64 => "C64",
        _ => "U8",
    }
}

/// Builds a safetensors header (the JSON, padded with spaces to a multiple of 8 bytes as the
/// reference writer does) for tensors laid out back to back in the given order.
///
/// Written by hand here, independently of `danlu-format`'s writer, so that reading it back
/// checks the reader against the format (huggingface/safetensors `README.md`, "Format").
pub fn safetensors_header(
    tensors: &[FixtureTensor],
    metadata: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut json = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        json.push_str("\"__metadata__\":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&serde_json::Value::String(k.clone()).to_string());
            json.push(':');
            json.push_str(&serde_json::Value::String(v.clone()).to_string());
        }
        json.push('}');
        first = false;
    }
    let mut offset = 0u64;
    for t in tensors {
        if !first {
            json.push(',');
        }
        first = false;
        let end = offset + t.byte_len();
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        json.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            serde_json::Value::String(t.name.clone()),
            safetensors_dtype(t.dtype),
            shape.join(","),
        ));
        offset = end;
    }
    json.push('}');
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// Writes a real safetensors file holding `tensors` (in the given order) and `metadata`
/// (`__metadata__`), filling the data as `fill` says. Returns the total file size.
///
/// # Errors
/// When the file cannot be created or written.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &[FixtureTensor],
    metadata: &BTreeMap<String, String>,
    fill: Fill,
) -> std::io::Result<u64> {
    let header = safetensors_header(tensors, metadata);
    let data_len: u64 = tensors.iter().map(FixtureTensor::byte_len).sum();
    let total = header.len() as u64 + data_len;
    // Test support: the file is scratch output in a temp dir, not a user's file, so it is
    // opened directly (the atomic writer of `danlu-fs` cannot make sparse files).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path.as_ref())?;
    file.write_all(&header)?;
    match fill {
        Fill::Sparse => file.set_len(total)?,
        Fill::Zeros => {
            let chunk = vec![0u8; 1 << 16];
            let mut left = data_len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                file.write_all(&chunk[..n])?;
                left -= n as u64;
            }
        }
        Fill::Seeded(seed) => {
            let mut state = seed.max(1);
            let mut buf = Vec::with_capacity(1 << 16);
            let mut left = data_len;
            while left > 0 {
                buf.clear();
                let n = left.min(1 << 16) as usize;
                while buf.len() < n {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                    buf.extend_from_slice(&word.to_le_bytes());
                }
                buf.truncate(n);
                file.write_all(&buf)?;
                left -= n as u64;
            }
        }
    }
    file.seek(SeekFrom::Start(0))?;
    file.sync_all()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_padded_and_offsets_are_contiguous() {
        let t = vec![
            FixtureTensor {
                name: "a".into(),
                dtype: Dtype::F16,
                shape: vec![2, 3],
            },
            FixtureTensor {
                name: "b".into(),
                dtype: Dtype::F32,
                shape: vec![],
            },
        ];
        let mut md = BTreeMap::new();
        md.insert("k".to_string(), "v\"q".to_string());
        let h = safetensors_header(&t, &md);
        let n = u64::from_le_bytes(h[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        assert_eq!(h.len(), 8 + n);
        let v: serde_json::Value = serde_json::from_slice(&h[8..]).unwrap();
        assert_eq!(v["a"]["data_offsets"], serde_json::json!([0, 12]));
        assert_eq!(v["b"]["data_offsets"], serde_json::json!([12, 16]));
        assert_eq!(v["b"]["shape"], serde_json::json!([]));
        assert_eq!(v["__metadata__"]["k"], "v\"q");
    }

    #[test]
    fn sparse_and_seeded_files_have_the_declared_size() {
        let dir = tempfile::tempdir().unwrap();
        let t = sd1_checkpoint(&CheckpointOpts::default());
        let p = dir.path().join("sd1.safetensors");
        let total = write_safetensors(&p, &t, &BTreeMap::new(), Fill::Sparse).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), total);
        // An SD1 checkpoint in f16 is about 2 GB of data.
        assert!(total > 1_900_000_000, "{total}");
        let small = vec![FixtureTensor {
            name: "x".into(),
            dtype: Dtype::F32,
            shape: vec![100],
        }];
        let q = dir.path().join("s.safetensors");
        write_safetensors(&q, &small, &BTreeMap::new(), Fill::Seeded(7)).unwrap();
        let bytes = std::fs::read(&q).unwrap();
        assert_eq!(
            bytes.len() as u64,
            8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) + 400
        );
        assert!(bytes[bytes.len() - 400..].iter().any(|&b| b != 0));
    }
}
