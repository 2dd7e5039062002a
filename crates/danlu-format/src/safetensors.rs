//! safetensors: an 8-byte little-endian header length `N`, `N` bytes of JSON, then the tensor
//! data. Only the length and the header are read, with positioned reads.
//!
//! Validation follows the reference `safetensors` crate (0.8, `tensor.rs`: `read_metadata`,
//! `Metadata::validate`): header at most 100 MB, UTF-8 JSON object, `__metadata__` a map of
//! strings, every dtype known, tensors sorted by offsets covering the data section contiguously
//! (no hole, no overlap), byte lengths equal to `numel * dtype size`, and the last tensor ending
//! exactly at the end of the file.

use crate::{DataRef, Error, Result, TensorIndex, TensorInfo, read_at};
use danlu_types::{Dtype, Format};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

/// Largest header the reference crate accepts (`MAX_HEADER_SIZE`, 100,000,000 bytes).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The safetensors dtype name of a [`Dtype`]; `None` for GGUF block-quantized data.
pub fn dtype_name(dtype: Dtype) -> Option<&'static str> {
    Some(match dtype {
        Dtype::Bool => "BOOL",
        Dtype::U8 => "U8",
        Dtype::I8 => "I8",
        Dtype::F8E5m2 => "F8_E5M2",
        Dtype::F8E4m3 => "F8_E4M3",
        Dtype::I16 => "I16",
        Dtype::U16 => "U16",
        Dtype::F16 => "F16",
        Dtype::Bf16 => "BF16",
        Dtype::I32 => "I32",
        Dtype::U32 => "U32",
        Dtype::F32 => "F32",
        Dtype::C64 => "C64",
        Dtype::F64 => "F64",
        Dtype::I64 => "I64",
        Dtype::U64 => "U64",
        _ => return None,
    })
}

/// Parses a safetensors dtype name.
///
/// The `FNUZ` float8 variants (AMD's encodings, same widths) map to [`Dtype::F8E4m3`] and
/// [`Dtype::F8E5m2`]: sizes and the float8 family are what the index needs. `F8_E8M0` (scale
/// exponents), `F4`, `F6_E2M3` and `F6_E3M2` (sub-byte floats) have no counterpart and are
/// reported as unsupported.
pub fn parse_dtype(name: &str) -> Option<Dtype> {
    Some(match name {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::U8,
        "I8" => Dtype::I8,
        "F8_E5M2" | "F8_E5M2FNUZ" => Dtype::F8E5m2,
        "F8_E4M3" | "F8_E4M3FNUZ" => Dtype::F8E4m3,
        "I16" => Dtype::I16,
        "U16" => Dtype::U16,
        "F16" => Dtype::F16,
        "BF16" => Dtype::Bf16,
        "I32" => Dtype::I32,
        "U32" => Dtype::U32,
        "F32" => Dtype::F32,
        "C64" => Dtype::C64,
        "F64" => Dtype::F64,
        "I64" => Dtype::I64,
        "U64" => Dtype::U64,
        _ => return None,
    })
}

/// One entry of the header, as the reference crate's `TensorInfo`.
#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Reads a safetensors file's header into a [`TensorIndex`].
pub(crate) fn read_safetensors(path: &Path, file: &mut File, size: u64) -> Result<TensorIndex> {
    if size == 0 {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    if size < 8 {
        return Err(Error::Truncated {
            path: path.to_path_buf(),
            what: "safetensors header length",
            offset: 0,
            expected: 8,
            actual: size,
        });
    }
    let len_bytes = read_at(path, file, 0, 8)?;
    let mut le = [0u8; 8];
    le.copy_from_slice(&len_bytes);
    let n = u64::from_le_bytes(le);
    if n > size - 8 {
        return Err(Error::HeaderPastEnd {
            path: path.to_path_buf(),
            len: n,
            size,
        });
    }
    if n > MAX_HEADER_LEN {
        return Err(Error::HeaderTooLarge {
            path: path.to_path_buf(),
            len: n,
            max: MAX_HEADER_LEN,
        });
    }
    // `n` is at most 100 MB here and within the file.
    let header = read_at(path, file, 8, n)?;
    parse_header(path, &header, size)
}

/// Parses and validates a safetensors JSON header (`header` is the `N` bytes after the length)
/// of a file of `size` bytes.
pub(crate) fn parse_header(path: &Path, header: &[u8], size: u64) -> Result<TensorIndex> {
    let invalid = |reason: String| Error::InvalidHeader {
        path: path.to_path_buf(),
        format: "safetensors",
        offset: 8,
        reason,
    };
    let text = std::str::from_utf8(header)
        .map_err(|e| invalid(format!("not UTF-8 at byte {}", 8 + e.valid_up_to())))?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        what: "safetensors header",
        source,
    })?;
    let serde_json::Value::Object(map) = value else {
        return Err(invalid("the header is not a JSON object".into()));
    };
    let data_start = 8 + header.len() as u64;
    let mut metadata = BTreeMap::new();
    let mut raw = Vec::with_capacity(map.len());
    for (name, entry) in map {
        if name == "__metadata__" {
            match entry {
                serde_json::Value::Null => {}
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let serde_json::Value::String(v) = v else {
                            return Err(invalid(format!(
                                "`__metadata__` value of `{k}` is not a string"
                            )));
                        };
                        metadata.insert(k, v);
                    }
                }
                _ => return Err(invalid("`__metadata__` is not a map of strings".into())),
            }
            continue;
        }
        let t: RawTensor =
            serde_json::from_value(entry).map_err(|e| invalid(format!("tensor `{name}`: {e}")))?;
        let Some(dtype) = parse_dtype(&t.dtype) else {
            return Err(Error::UnknownDtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: t.dtype,
            });
        };
        raw.push((name, dtype, t));
    }

    // As the reference: sort by offsets, then every tensor must start where the previous ended.
    raw.sort_by_key(|(_, _, t)| t.data_offsets);
    let mut expected_start = 0u64;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dtype, t) in raw {
        let (begin, end) = t.data_offsets;
        if begin != expected_start || end < begin {
            return Err(Error::TensorOffsets {
                path: path.to_path_buf(),
                tensor: name,
                begin,
                end,
                expected: expected_start,
            });
        }
        let abs_end = data_start.saturating_add(end);
        if abs_end > size {
            return Err(Error::TensorOutOfRange {
                path: path.to_path_buf(),
                tensor: name,
                end: abs_end,
                size,
            });
        }
        let numel = t.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let expected = numel.and_then(|n| n.checked_mul(dtype.size_in_bytes().unwrap_or(1)));
        let actual = end - begin;
        if expected != Some(actual) {
            return Err(Error::TensorSize {
                path: path.to_path_buf(),
                tensor: name,
                expected: expected.unwrap_or(u64::MAX),
                actual,
            });
        }
        expected_start = end;
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: t.shape,
            data: DataRef {
                file: 0,
                offset: data_start + begin,
                len: actual,
                strides: None,
                quant: None,
            },
        });
    }
    let end = data_start + expected_start;
    if end != size {
        return Err(Error::TrailingBytes {
            path: path.to_path_buf(),
            end,
            extra: size - end,
        });
    }
    let mut index = TensorIndex {
        format: Some(Format::Safetensors),
        files: vec![path.to_path_buf()],
        tensors,
        metadata,
        header_len: data_start,
        ..TensorIndex::default()
    };
    index.sort();
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a safetensors file from a header JSON text and a data section length.
    fn file(header: &str, data_len: u64) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.as_file()
            .set_len(8 + header.len() as u64 + data_len)
            .unwrap();
        f
    }

    fn read(f: &tempfile::NamedTempFile) -> Result<TensorIndex> {
        crate::read_index(f.path())
    }

    #[test]
    fn valid_header_gives_absolute_offsets_and_metadata() {
        let h = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[16,28]},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let f = file(h, 28);
        let idx = read(&f).unwrap();
        let n = h.len() as u64;
        assert_eq!(idx.format, Some(Format::Safetensors));
        assert_eq!(idx.header_len, 8 + n);
        assert_eq!(idx.metadata.get("format").map(String::as_str), Some("pt"));
        assert_eq!(idx.tensors.len(), 2);
        let a = idx.get("a").unwrap();
        assert_eq!((a.dtype, a.shape.clone()), (Dtype::F32, vec![4]));
        assert_eq!((a.data.offset, a.data.len), (8 + n, 16));
        let b = idx.get("b").unwrap();
        assert_eq!((b.dtype, b.shape.clone()), (Dtype::F16, vec![2, 3]));
        assert_eq!((b.data.offset, b.data.len), (8 + n + 16, 12));
    }

    #[test]
    fn header_that_is_not_json_is_an_error() {
        let f = file("{not json at all", 0);
        let err = read(&f).unwrap_err();
        assert!(matches!(err, Error::Json { .. }), "{err}");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }

    #[test]
    fn header_that_is_a_json_array_is_an_error() {
        // Dispatch needs `{` at byte 8; call the parser directly.
        let err = parse_header(Path::new("x.safetensors"), b"[1,2]", 13).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
    }

    #[test]
    fn non_string_metadata_is_an_error() {
        let f = file(r#"{"__metadata__":{"steps":3}}"#, 0);
        let err = read(&f).unwrap_err();
        assert!(err.to_string().contains("`steps` is not a string"), "{err}");
    }

    #[test]
    fn overlapping_offsets_name_the_tensor() {
        let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
        let err = read(&file(h, 24)).unwrap_err();
        assert!(
            matches!(&err, Error::TensorOffsets { tensor, begin: 8, expected: 16, .. } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn hole_between_tensors_is_an_error() {
        let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[20,36]}}"#;
        let err = read(&file(h, 36)).unwrap_err();
        assert!(
            matches!(&err, Error::TensorOffsets { tensor, .. } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn end_before_begin_is_an_error() {
        let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,2]}}"#;
        let err = read(&file(h, 6)).unwrap_err();
        assert!(
            matches!(&err, Error::TensorOffsets { tensor, begin: 4, end: 2, .. } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn empty_byte_range_for_a_nonempty_tensor_is_an_error() {
        let h = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[4],"data_offsets":[0,0]},"c":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
        // Sorted by offsets: a [0,0], b [0,0] (wrong size), c [0,1].
        let err = read(&file(h, 1)).unwrap_err();
        assert!(
            matches!(&err, Error::TensorSize { tensor, expected: 4, actual: 0, .. } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn offsets_past_the_end_of_the_file_are_an_error() {
        let h = r#"{"a":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
        let err = read(&file(h, 100)).unwrap_err();
        assert!(
            matches!(&err, Error::TensorOutOfRange { tensor, .. } if tensor == "a"),
            "{err}"
        );
        assert!(
            err.to_string().contains("past the end of the file"),
            "{err}"
        );
    }

    #[test]
    fn wrong_byte_length_for_dtype_is_an_error() {
        let h = r#"{"a":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}}"#;
        let err = read(&file(h, 16)).unwrap_err();
        assert!(
            matches!(&err, Error::TensorSize { tensor, expected: 8, actual: 16, .. } if tensor == "a"),
            "{err}"
        );
    }

    #[test]
    fn unknown_dtype_is_an_error_naming_it() {
        let h = r#"{"a":{"dtype":"F12","shape":[4],"data_offsets":[0,6]}}"#;
        let err = read(&file(h, 6)).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownDtype { tensor, dtype, .. } if tensor == "a" && dtype == "F12"),
            "{err}"
        );
        let h = r#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}"#;
        assert!(matches!(
            read(&file(h, 2)).unwrap_err(),
            Error::UnknownDtype { .. }
        ));
    }

    #[test]
    fn fnuz_float8_maps_to_its_family() {
        let h = r#"{"a":{"dtype":"F8_E4M3FNUZ","shape":[4],"data_offsets":[0,4]}}"#;
        assert_eq!(read(&file(h, 4)).unwrap().tensors[0].dtype, Dtype::F8E4m3);
    }

    #[test]
    fn trailing_bytes_after_the_last_tensor_are_an_error() {
        let h = r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        let err = read(&file(h, 10)).unwrap_err();
        assert!(
            matches!(err, Error::TrailingBytes { extra: 6, .. }),
            "{err}"
        );
    }

    #[test]
    fn header_length_past_the_end_names_both_numbers() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&123_456_789u64.to_le_bytes()).unwrap();
        f.write_all(b"{\"a\":").unwrap();
        f.as_file().set_len(100).unwrap();
        let err = read(&f).unwrap_err();
        assert!(
            err.to_string()
                .contains("header length 123456789 exceeds the file size 100"),
            "{err}"
        );
        assert!(err.to_string().contains(&f.path().display().to_string()));
    }

    #[test]
    fn header_longer_than_the_limit_is_an_error() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&(MAX_HEADER_LEN + 1).to_le_bytes()).unwrap();
        f.write_all(b"{").unwrap();
        f.as_file().set_len(MAX_HEADER_LEN + 100).unwrap();
        let err = read(&f).unwrap_err();
        assert!(matches!(err, Error::HeaderTooLarge { .. }), "{err}");
    }

    #[test]
    fn header_that_is_not_utf8_is_an_error() {
        let err = parse_header(Path::new("x"), b"{\"\xff\":1}", 15).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }

    #[test]
    fn sparse_6_gb_checkpoint_reads_only_the_header() {
        let h = r#"{"model.diffusion_model.out.2.weight":{"dtype":"F16","shape":[4,320,3,3],"data_offsets":[0,23040]},"x":{"dtype":"F32","shape":[1499994240],"data_offsets":[23040,6000000000]}}"#;
        let f = file(h, 6_000_000_000);
        let idx = read(&f).unwrap();
        assert_eq!(idx.tensors.len(), 2);
        assert_eq!(idx.get("x").unwrap().data.len, 5_999_976_960);
    }

    fn corpus(name: &str) -> std::path::PathBuf {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpus/models"
        ))
        .join(name);
        assert!(p.exists(), "corpus file missing: {}", p.display());
        p
    }

    #[test]
    fn corpus_easynegative_is_one_f32_embedding() {
        // Corpus MANIFEST.md: key "emb_params" [8,768] F32.
        let idx = crate::read_index(corpus("EasyNegative.safetensors")).unwrap();
        assert_eq!(idx.tensors.len(), 1);
        let t = idx.get("emb_params").unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (Dtype::F32, vec![8, 768]));
        assert_eq!(t.data.len, 8 * 768 * 4);
        assert_eq!(t.data.offset + t.data.len, 24655);
        assert!(idx.metadata.is_empty());
    }

    #[test]
    fn corpus_invokeai_embedding_is_five_vectors() {
        // Corpus MANIFEST.md: "emb_params" [5,768] F32.
        let idx = crate::read_index(corpus("invokeai_test_embedding.safetensors")).unwrap();
        let t = idx.get("emb_params").unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (Dtype::F32, vec![5, 768]));
    }

    #[test]
    fn corpus_lora_disney_has_386_tensors_and_metadata() {
        // Corpus MANIFEST.md: 386 F32 tensors, "unet:N:up/down", "<s1>", "<s2>" [768],
        // `__metadata__` with "<s1>": "<embed>".
        let idx = crate::read_index(corpus("lora_disney.safetensors")).unwrap();
        assert_eq!(idx.tensors.len(), 386);
        assert!(idx.tensors.iter().all(|t| t.dtype == Dtype::F32));
        assert_eq!(idx.get("<s1>").unwrap().shape, vec![768]);
        assert!(idx.get("unet:0:up").is_some());
        assert!(idx.get("text_encoder:0:down").is_some());
        assert_eq!(
            idx.metadata.get("<s1>").map(String::as_str),
            Some("<embed>")
        );
    }

    #[test]
    fn corpus_files_agree_with_the_reference_crate() {
        for name in [
            "EasyNegative.safetensors",
            "invokeai_test_embedding.safetensors",
            "lora_disney.safetensors",
        ] {
            let path = corpus(name);
            let bytes = std::fs::read(&path).unwrap();
            let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let ours = crate::read_index(&path).unwrap();
            assert_eq!(ours.header_len, 8 + n as u64);
            let theirs = meta.tensors();
            assert_eq!(theirs.len(), ours.tensors.len(), "{name}");
            for t in &ours.tensors {
                let r = theirs[&t.name];
                assert_eq!(
                    r.shape.iter().map(|&d| d as u64).collect::<Vec<_>>(),
                    t.shape
                );
                assert_eq!(format!("{:?}", r.dtype), dtype_name(t.dtype).unwrap());
                assert_eq!(
                    (
                        r.data_offsets.0 as u64 + 8 + n as u64,
                        r.data_offsets.1 as u64 + 8 + n as u64
                    ),
                    (t.data.offset, t.data.offset + t.data.len)
                );
            }
        }
    }
}
