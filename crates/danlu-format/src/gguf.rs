//! GGUF headers (versions 2 and 3), as the GGUF specification (ggml `docs/gguf.md`) and
//! `ggml/src/gguf.cpp` define them.
//!
//! Layout, little-endian: `GGUF`, `u32` version, `u64` tensor count, `u64` key/value count, the
//! key/value pairs (`u64`-length strings, `u32` value type, value; arrays are `u32` element type,
//! `u64` length, elements), the tensor infos (name, `u32` dimension count, `u64` dimensions with
//! `ne[0]` the fastest-varying, `u32` ggml type, `u64` offset relative to the data section), then
//! padding to `general.alignment` (default 32) and the data section.
//!
//! Every count and length is checked against the bytes left in the file before anything is
//! allocated, so a lying header is an error and memory stays bounded by the file's real header.

use crate::{DataRef, Error, Result, TensorIndex, TensorInfo};
use danlu_types::{Dtype, Format};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Default data alignment (`GGUF_DEFAULT_ALIGNMENT`).
const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Arrays with at most this many elements are rendered in full in the metadata.
const SHORT_ARRAY: u64 = 16;
/// String values longer than this are shortened in the metadata (chat templates, ...).
const LONG_STRING: usize = 4096;

/// What a ggml type is stored as: the dtype, the quantisation name, elements per block and
/// bytes per block (`ggml/src/ggml.c` `type_traits`, `ggml-common.h` block structs; Q8_1 is
/// two halves and 32 quants there, 36 bytes, where gguf-py still lists 40). Types 4, 5 and
/// 31..=33, 36..=38 were removed from ggml and are rejected.
fn ggml_type(t: u32) -> Option<(Dtype, Option<&'static str>, u64, u64)> {
    let q = |name, block, bytes| Some((Dtype::Quantized, Some(name), block, bytes));
    match t {
        0 => Some((Dtype::F32, None, 1, 4)),
        1 => Some((Dtype::F16, None, 1, 2)),
        2 => q("Q4_0", 32, 18),
        3 => q("Q4_1", 32, 20),
        6 => q("Q5_0", 32, 22),
        7 => q("Q5_1", 32, 24),
        8 => q("Q8_0", 32, 34),
        9 => q("Q8_1", 32, 36),
        10 => q("Q2_K", 256, 84),
        11 => q("Q3_K", 256, 110),
        12 => q("Q4_K", 256, 144),
        13 => q("Q5_K", 256, 176),
        14 => q("Q6_K", 256, 210),
        15 => q("Q8_K", 256, 292),
        16 => q("IQ2_XXS", 256, 66),
        17 => q("IQ2_XS", 256, 74),
        18 => q("IQ3_XXS", 256, 98),
        19 => q("IQ1_S", 256, 50),
        20 => q("IQ4_NL", 32, 18),
        21 => q("IQ3_S", 256, 110),
        22 => q("IQ2_S", 256, 82),
        23 => q("IQ4_XS", 256, 136),
        24 => Some((Dtype::I8, None, 1, 1)),
        25 => Some((Dtype::I16, None, 1, 2)),
        26 => Some((Dtype::I32, None, 1, 4)),
        27 => Some((Dtype::I64, None, 1, 8)),
        28 => Some((Dtype::F64, None, 1, 8)),
        29 => q("IQ1_M", 256, 56),
        30 => Some((Dtype::Bf16, None, 1, 2)),
        34 => q("TQ1_0", 256, 54),
        35 => q("TQ2_0", 256, 66),
        39 => q("MXFP4", 32, 17),
        // Newer types, sizes from gguf-py 0.19 `GGML_QUANT_SIZES`.
        40 => q("NVFP4", 64, 36),
        41 => q("Q1_0", 128, 18),
        _ => None,
    }
}

/// A reader that counts its position and knows how many bytes the file has left.
struct Cursor<'a> {
    inner: BufReader<&'a mut File>,
    path: &'a Path,
    pos: u64,
    size: u64,
}

impl Cursor<'_> {
    fn bytes<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        let need = buf.len() as u64;
        if need > self.size.saturating_sub(self.pos) {
            return Err(Error::Truncated {
                path: self.path.to_path_buf(),
                what,
                offset: self.pos,
                expected: need,
                actual: self.size,
            });
        }
        self.inner.read_exact(buf).map_err(|source| Error::Io {
            path: self.path.to_path_buf(),
            action: format!("reading {what} at offset {}", self.pos),
            source,
        })?;
        self.pos += need;
        Ok(())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in the rest of the file.
    fn check_count(&self, what: &'static str, count: u64, min_size: u64) -> Result<()> {
        let remaining = self.size.saturating_sub(self.pos);
        if count.saturating_mul(min_size) > remaining {
            return Err(Error::CountTooLarge {
                path: self.path.to_path_buf(),
                what,
                offset: self.pos.saturating_sub(8),
                count,
                remaining,
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let len = self.u64(what)?;
        self.check_count(what, len, 1)?;
        // Bounded by the file size just above.
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.fill(&mut buf, what)?;
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn skip(&mut self, n: u64, what: &'static str) -> Result<()> {
        self.check_count(what, n, 1)?;
        let copied = std::io::copy(&mut (&mut self.inner).take(n), &mut std::io::sink()).map_err(
            |source| Error::Io {
                path: self.path.to_path_buf(),
                action: format!("reading {what} at offset {}", self.pos),
                source,
            },
        )?;
        self.pos += copied;
        Ok(())
    }
}

/// Size in bytes of a fixed-size GGUF value type; `None` for strings and arrays.
fn scalar_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

fn type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "strings",
        9 => "arrays",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "values",
    }
}

/// A scalar value read as text.
fn read_scalar(c: &mut Cursor<'_>, t: u32) -> Result<String> {
    const WHAT: &str = "GGUF metadata value";
    Ok(match t {
        0 => c.bytes::<1>(WHAT)?[0].to_string(),
        1 => i8::from_le_bytes(c.bytes(WHAT)?).to_string(),
        2 => u16::from_le_bytes(c.bytes(WHAT)?).to_string(),
        3 => i16::from_le_bytes(c.bytes(WHAT)?).to_string(),
        4 => u32::from_le_bytes(c.bytes(WHAT)?).to_string(),
        5 => i32::from_le_bytes(c.bytes(WHAT)?).to_string(),
        6 => f32::from_le_bytes(c.bytes(WHAT)?).to_string(),
        7 => (c.bytes::<1>(WHAT)?[0] != 0).to_string(),
        10 => u64::from_le_bytes(c.bytes(WHAT)?).to_string(),
        11 => i64::from_le_bytes(c.bytes(WHAT)?).to_string(),
        12 => f64::from_le_bytes(c.bytes(WHAT)?).to_string(),
        8 => {
            let s = c.string(WHAT)?;
            if s.len() > LONG_STRING {
                let mut end = LONG_STRING;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                format!(
                    "{}... ({} bytes)",
                    s.get(..end).unwrap_or_default(),
                    s.len()
                )
            } else {
                s
            }
        }
        _ => {
            return Err(Error::InvalidHeader {
                path: c.path.to_path_buf(),
                format: "GGUF",
                offset: c.pos.saturating_sub(4),
                reason: format!("unknown metadata value type {t}"),
            });
        }
    })
}

/// Reads a value of type `t`; arrays of at most [`SHORT_ARRAY`] scalars or strings are rendered
/// as `[a, b, c]`, longer ones (tokenizer vocabularies) as `[array of N strings]`.
fn read_value(c: &mut Cursor<'_>, t: u32, depth: u32) -> Result<String> {
    if t != 9 {
        return read_scalar(c, t);
    }
    let start = c.pos;
    let elem = c.u32("GGUF array type")?;
    let len = c.u64("GGUF array length")?;
    let min = scalar_size(elem).unwrap_or(if elem == 8 { 8 } else { 12 });
    c.check_count("GGUF array length", len, min)?;
    if depth > 2 {
        return Err(Error::InvalidHeader {
            path: c.path.to_path_buf(),
            format: "GGUF",
            offset: start,
            reason: "arrays nested more than 3 deep".into(),
        });
    }
    if len <= SHORT_ARRAY && elem != 9 {
        let mut items = Vec::new();
        for _ in 0..len {
            let v = read_scalar(c, elem)?;
            items.push(if elem == 8 {
                serde_json::to_string(&v).unwrap_or(v)
            } else {
                v
            });
        }
        return Ok(format!("[{}]", items.join(", ")));
    }
    match scalar_size(elem) {
        Some(size) => c.skip(len.saturating_mul(size), "GGUF array")?,
        None => {
            for _ in 0..len {
                if elem == 8 {
                    let n = c.u64("GGUF string length")?;
                    c.skip(n, "GGUF string")?;
                } else {
                    read_value(c, elem, depth + 1)?;
                }
            }
        }
    }
    Ok(format!("[array of {len} {}]", type_name(elem)))
}

/// Reads a GGUF file's header into a [`TensorIndex`].
pub(crate) fn read_gguf(path: &Path, file: &mut File, size: u64) -> Result<TensorIndex> {
    file.seek(SeekFrom::Start(0)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        action: "seeking to the start".into(),
        source,
    })?;
    let mut c = Cursor {
        inner: BufReader::with_capacity(1 << 16, file),
        path,
        pos: 0,
        size,
    };
    let magic = c.bytes::<4>("GGUF magic")?;
    if &magic != b"GGUF" {
        return Err(Error::InvalidHeader {
            path: path.to_path_buf(),
            format: "GGUF",
            offset: 0,
            reason: "magic is not `GGUF`".into(),
        });
    }
    let version = c.u32("GGUF version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::GgufVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let tensor_count = c.u64("GGUF tensor count")?;
    let kv_count = c.u64("GGUF key/value count")?;
    // A key/value is at least a length, a type and one byte; a tensor info at least a name
    // length, a dimension count, a type and an offset.
    c.check_count("GGUF key/value count", kv_count, 8 + 4 + 1)?;
    c.check_count("GGUF tensor count", tensor_count, 8 + 4 + 4 + 8)?;

    let mut metadata = BTreeMap::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for _ in 0..kv_count {
        let key = c.string("GGUF metadata key")?;
        let t = c.u32("GGUF metadata value type")?;
        let at = c.pos;
        if key == "general.alignment" {
            if t != 4 {
                return Err(Error::InvalidHeader {
                    path: path.to_path_buf(),
                    format: "GGUF",
                    offset: at,
                    reason: format!("`general.alignment` has type {}, not u32", type_name(t)),
                });
            }
            let a = u64::from(c.u32("GGUF alignment")?);
            if a == 0 || !a.is_power_of_two() {
                return Err(Error::InvalidHeader {
                    path: path.to_path_buf(),
                    format: "GGUF",
                    offset: at,
                    reason: format!("`general.alignment` is {a}, not a power of two"),
                });
            }
            alignment = a;
            metadata.insert(key, a.to_string());
            continue;
        }
        let value = read_value(&mut c, t, 0)?;
        metadata.insert(key, value);
    }

    let mut raw = Vec::new();
    for _ in 0..tensor_count {
        let at = c.pos;
        let name = c.string("GGUF tensor name")?;
        let n_dims = c.u32("GGUF tensor dimension count")?;
        if n_dims > MAX_DIMS {
            return Err(Error::InvalidHeader {
                path: path.to_path_buf(),
                format: "GGUF",
                offset: at,
                reason: format!(
                    "tensor `{name}` has {n_dims} dimensions, at most {MAX_DIMS} are allowed"
                ),
            });
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ne.push(c.u64("GGUF tensor dimension")?);
        }
        let t = c.u32("GGUF tensor type")?;
        let offset = c.u64("GGUF tensor offset")?;
        raw.push((name, ne, t, offset));
    }
    let data_start = c.pos.next_multiple_of(alignment);

    let mut tensors = Vec::with_capacity(raw.len());
    for (name, ne, t, offset) in raw {
        let Some((dtype, quant, block, block_bytes)) = ggml_type(t) else {
            return Err(Error::UnknownDtype {
                path: path.to_path_buf(),
                tensor: name,
                dtype: format!("ggml type {t}"),
            });
        };
        let invalid = |reason: String| Error::InvalidHeader {
            path: path.to_path_buf(),
            format: "GGUF",
            offset: data_start,
            reason,
        };
        if ne.first().is_some_and(|&n0| n0 % block != 0) {
            return Err(invalid(format!(
                "tensor `{name}` row of {} elements is not a multiple of the {block}-element block",
                ne.first().copied().unwrap_or(0)
            )));
        }
        if offset % alignment != 0 {
            return Err(invalid(format!(
                "tensor `{name}` offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let len = ne
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .and_then(|numel| (numel / block).checked_mul(block_bytes));
        let abs = data_start.checked_add(offset);
        let (Some(len), Some(abs)) = (len, abs) else {
            return Err(invalid(format!("tensor `{name}` size overflows")));
        };
        let end = abs.saturating_add(len);
        if end > size {
            return Err(Error::TensorOutOfRange {
                path: path.to_path_buf(),
                tensor: name,
                end,
                size,
            });
        }
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: ne.into_iter().rev().collect(),
            data: DataRef {
                file: 0,
                offset: abs,
                len,
                strides: None,
                quant: quant.map(str::to_owned),
            },
        });
    }
    let mut index = TensorIndex {
        format: Some(Format::Gguf),
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

    /// Builds GGUF files value by value, as `gguf.cpp` writes them.
    #[derive(Default)]
    struct Gguf {
        kv: Vec<u8>,
        kv_count: u64,
        infos: Vec<u8>,
        tensor_count: u64,
    }

    fn gstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    impl Gguf {
        fn kv(&mut self, key: &str, t: u32, value: &[u8]) -> &mut Self {
            gstr(&mut self.kv, key);
            self.kv.extend_from_slice(&t.to_le_bytes());
            self.kv.extend_from_slice(value);
            self.kv_count += 1;
            self
        }
        fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
            let mut b = Vec::new();
            gstr(&mut b, v);
            self.kv(key, 8, &b)
        }
        fn tensor(&mut self, name: &str, ne: &[u64], t: u32, offset: u64) -> &mut Self {
            gstr(&mut self.infos, name);
            self.infos
                .extend_from_slice(&(ne.len() as u32).to_le_bytes());
            for d in ne {
                self.infos.extend_from_slice(&d.to_le_bytes());
            }
            self.infos.extend_from_slice(&t.to_le_bytes());
            self.infos.extend_from_slice(&offset.to_le_bytes());
            self.tensor_count += 1;
            self
        }
        fn bytes(&self, version: u32, alignment: u64, data_len: u64) -> Vec<u8> {
            let mut b = b"GGUF".to_vec();
            b.extend_from_slice(&version.to_le_bytes());
            b.extend_from_slice(&self.tensor_count.to_le_bytes());
            b.extend_from_slice(&self.kv_count.to_le_bytes());
            b.extend_from_slice(&self.kv);
            b.extend_from_slice(&self.infos);
            let start = (b.len() as u64).next_multiple_of(alignment);
            b.resize((start + data_len) as usize, 0);
            b
        }
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn sample() -> Gguf {
        let mut g = Gguf::default();
        g.kv_str("general.architecture", "flux")
            .kv("general.file_type", 4, &7u32.to_le_bytes())
            .kv("general.quantized", 7, &[1]);
        // A short array of u32 and a long array of strings (a tokenizer vocabulary).
        let mut arr = 4u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&3u64.to_le_bytes());
        for v in [1u32, 2, 3] {
            arr.extend_from_slice(&v.to_le_bytes());
        }
        g.kv("test.short", 9, &arr);
        let mut names = 8u32.to_le_bytes().to_vec();
        names.extend_from_slice(&2u64.to_le_bytes());
        gstr(&mut names, "a");
        gstr(&mut names, "b\"c");
        g.kv("test.names", 9, &names);
        let mut vocab = 8u32.to_le_bytes().to_vec();
        vocab.extend_from_slice(&100u64.to_le_bytes());
        for i in 0..100 {
            gstr(&mut vocab, &format!("tok{i}"));
        }
        g.kv("tokenizer.ggml.tokens", 9, &vocab);
        // img_in.weight: ggml ne [64, 3072] F16 -> shape [3072, 64].
        g.tensor("img_in.weight", &[64, 3072], 1, 0);
        // A Q4_K tensor of 3072 x 512: 12 blocks per row of 144 bytes.
        g.tensor("blk.0.w", &[3072, 512], 12, 64 * 3072 * 2);
        g
    }

    #[test]
    fn v3_header_gives_shapes_quant_types_offsets_and_metadata() {
        let g = sample();
        let data_len = 64 * 3072 * 2 + 12 * 144 * 512;
        let bytes = g.bytes(3, 32, data_len);
        let f = write(&bytes);
        let idx = crate::read_index(f.path()).unwrap();
        assert_eq!(idx.format, Some(Format::Gguf));
        let data_start = bytes.len() as u64 - data_len;
        assert_eq!(idx.header_len, data_start);
        assert_eq!(data_start % 32, 0);
        let t = idx.get("img_in.weight").unwrap();
        assert_eq!((t.dtype, t.shape.clone()), (Dtype::F16, vec![3072, 64]));
        assert_eq!((t.data.offset, t.data.len), (data_start, 64 * 3072 * 2));
        assert_eq!(t.data.quant, None);
        let q = idx.get("blk.0.w").unwrap();
        assert_eq!(
            (q.dtype, q.shape.clone()),
            (Dtype::Quantized, vec![512, 3072])
        );
        assert_eq!(q.data.quant.as_deref(), Some("Q4_K"));
        assert_eq!(q.data.len, 12 * 144 * 512);
        assert_eq!(q.data.offset, data_start + 64 * 3072 * 2);
        let m = &idx.metadata;
        assert_eq!(m["general.architecture"], "flux");
        assert_eq!(m["general.file_type"], "7");
        assert_eq!(m["general.quantized"], "true");
        assert_eq!(m["test.short"], "[1, 2, 3]");
        assert_eq!(m["test.names"], r#"["a", "b\"c"]"#);
        assert_eq!(m["tokenizer.ggml.tokens"], "[array of 100 strings]");
    }

    #[test]
    fn v2_and_custom_alignment_are_read() {
        let mut g = Gguf::default();
        g.kv("general.alignment", 4, &64u32.to_le_bytes());
        g.tensor("a", &[32], 8, 0);
        let bytes = g.bytes(2, 64, 34);
        let idx = crate::read_index(write(&bytes).path()).unwrap();
        let t = idx.get("a").unwrap();
        assert_eq!(t.data.offset % 64, 0);
        assert_eq!((t.data.len, t.data.quant.as_deref()), (34, Some("Q8_0")));
    }

    #[test]
    fn version_1_is_a_clear_error() {
        let bytes = sample().bytes(1, 32, 0);
        let err = crate::read_index(write(&bytes).path()).unwrap_err();
        assert!(
            matches!(err, Error::GgufVersion { version: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("version 1 is not supported"));
    }

    #[test]
    fn lying_tensor_count_is_an_error_before_allocating() {
        let mut bytes = sample().bytes(3, 32, 0);
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = crate::read_index(write(&bytes).path()).unwrap_err();
        assert!(matches!(err, Error::CountTooLarge { .. }), "{err}");
    }

    #[test]
    fn lying_string_and_array_lengths_are_errors() {
        let mut g = Gguf::default();
        g.kv("k", 8, &(1u64 << 60).to_le_bytes());
        let err = crate::read_index(write(&g.bytes(3, 32, 0)).path()).unwrap_err();
        assert!(matches!(err, Error::CountTooLarge { .. }), "{err}");
        let mut g = Gguf::default();
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&(1u64 << 40).to_le_bytes());
        g.kv("k", 9, &arr);
        let err = crate::read_index(write(&g.bytes(3, 32, 0)).path()).unwrap_err();
        assert!(matches!(err, Error::CountTooLarge { .. }), "{err}");
    }

    #[test]
    fn tensor_data_past_the_end_is_an_error() {
        let bytes = sample().bytes(3, 32, 100);
        let err = crate::read_index(write(&bytes).path()).unwrap_err();
        assert!(matches!(err, Error::TensorOutOfRange { .. }), "{err}");
    }

    #[test]
    fn truncated_header_is_an_error() {
        let g = sample();
        let bytes = g.bytes(3, 32, 0);
        // Cut inside the last tensor info's offset field.
        let infos_end = 24 + g.kv.len() + g.infos.len();
        let err = crate::read_index(write(&bytes[..infos_end - 4]).path()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // Cut right after the counts: the counts cannot fit in what is left.
        let err = crate::read_index(write(&bytes[..40]).path()).unwrap_err();
        assert!(matches!(err, Error::CountTooLarge { .. }), "{err}");
    }

    #[test]
    fn unknown_ggml_type_is_an_error() {
        let mut g = Gguf::default();
        g.tensor("a", &[32], 4, 0);
        let err = crate::read_index(write(&g.bytes(3, 32, 64)).path()).unwrap_err();
        assert!(matches!(err, Error::UnknownDtype { .. }), "{err}");
    }

    #[test]
    fn block_sizes_match_the_block_structs() {
        // bytes per block = the C struct sizes of ggml-common.h, e.g. block_q4_K =
        // 2 halves (4) + scales[12] + qs[QK_K/2] (128) = 144.
        let k = 256u64;
        assert_eq!(ggml_type(12).map(|t| t.3), Some(4 + 12 + k / 2));
        assert_eq!(ggml_type(14).map(|t| t.3), Some(k / 2 + k / 4 + k / 16 + 2));
        assert_eq!(ggml_type(10).map(|t| t.3), Some(k / 16 + k / 4 + 4));
        assert_eq!(ggml_type(8).map(|t| t.3), Some(2 + 32));
        assert_eq!(ggml_type(2).map(|t| t.3), Some(2 + 16));
    }
}
