//! A streaming safetensors writer on [`danlu_fs::AtomicFile`].
//!
//! The layout is the reference writer's (`safetensors` crate 0.8, `tensor.rs` `prepare` and
//! `serialize`, which the Python package also calls), so that our output is byte-identical to
//! `safetensors.torch.save_file` for the same tensors and metadata:
//! - tensors are ordered by descending dtype (the reference crate's `Dtype` declaration order,
//!   used as an alignment proxy: 8-byte types first, then 4, 2 and 1), then by name;
//! - the JSON header lists `__metadata__` first (its keys sorted here, where the reference's hash
//!   map has no fixed order), then the tensors in data order, each as
//!   `{"dtype":..,"shape":[..],"data_offsets":[begin,end]}`, compact;
//! - the header is padded with spaces to a multiple of 8 bytes.

use crate::safetensors::{MAX_HEADER_LEN, dtype_name};
use crate::{Error, Result};
use danlu_fs::{AtomicFile, Overwrite};
use danlu_types::Dtype;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A tensor to be written: its name, element type and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The key in the header.
    pub name: String,
    /// Element type; [`Dtype::Quantized`] cannot be stored in safetensors.
    pub dtype: Dtype,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
}

/// Position of a dtype in the reference crate's `Dtype` enum, whose derived order the reference
/// writer sorts by (descending).
fn reference_rank(dtype: Dtype) -> u8 {
    match dtype {
        Dtype::Bool => 0,
        Dtype::U8 => 4,
        Dtype::I8 => 5,
        Dtype::F8E5m2 => 6,
        Dtype::F8E4m3 => 7,
        Dtype::I16 => 11,
        Dtype::U16 => 12,
        Dtype::F16 => 13,
        Dtype::Bf16 => 14,
        Dtype::I32 => 15,
        Dtype::U32 => 16,
        Dtype::F32 => 17,
        Dtype::C64 => 18,
        Dtype::F64 => 19,
        Dtype::I64 => 20,
        _ => 21,
    }
}

/// Writes a safetensors file tensor by tensor, without holding tensor data in memory.
///
/// [`create`](Self::create) writes the header; then each tensor's bytes are given in
/// [`order`](Self::order) with [`write_tensor`](Self::write_tensor) or
/// [`write_tensor_from`](Self::write_tensor_from), which check names and lengths;
/// [`commit`](Self::commit) syncs the file and renames it into place. Dropping the writer
/// before committing leaves no file behind.
///
/// ```no_run
/// use danlu_format::{SafetensorsWriter, TensorSpec};
/// use danlu_types::Dtype;
/// let spec = TensorSpec { name: "w".into(), dtype: Dtype::F32, shape: vec![2] };
/// let mut out = SafetensorsWriter::create(
///     "out.safetensors",
///     vec![spec],
///     &Default::default(),
///     danlu_fs::Overwrite::Never,
/// )?;
/// out.write_tensor("w", &[0u8; 8])?;
/// out.commit()?;
/// # Ok::<(), danlu_format::Error>(())
/// ```
pub struct SafetensorsWriter {
    out: BufWriter<AtomicFile>,
    dest: PathBuf,
    order: Vec<(TensorSpec, u64)>,
    next: usize,
    header_len: u64,
}

impl std::fmt::Debug for SafetensorsWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsWriter")
            .field("dest", &self.dest)
            .field("next", &self.next)
            .field("tensors", &self.order.len())
            .finish()
    }
}

impl SafetensorsWriter {
    /// Starts writing `dest`: validates the specs and writes the 8-byte length and the header.
    ///
    /// # Errors
    /// When a name repeats or is `__metadata__`, a dtype has no safetensors name, a size
    /// overflows, the header exceeds 100 MB, or the temporary file cannot be written.
    pub fn create(
        dest: impl AsRef<Path>,
        tensors: Vec<TensorSpec>,
        metadata: &BTreeMap<String, String>,
        overwrite: Overwrite,
    ) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let bad = |reason: String| Error::Write {
            path: dest.clone(),
            reason,
        };
        let mut seen = HashSet::with_capacity(tensors.len());
        let mut order = Vec::with_capacity(tensors.len());
        for spec in tensors {
            if spec.name == "__metadata__" || !seen.insert(spec.name.clone()) {
                return Err(bad(format!(
                    "tensor name `{}` is repeated or reserved",
                    spec.name
                )));
            }
            let Some(size) = spec
                .dtype
                .size_in_bytes()
                .filter(|_| dtype_name(spec.dtype).is_some())
            else {
                return Err(Error::UnknownDtype {
                    path: dest.clone(),
                    tensor: spec.name,
                    dtype: spec.dtype.to_string(),
                });
            };
            let len = spec
                .shape
                .iter()
                .try_fold(size, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor `{}` size overflows", spec.name)))?;
            order.push((spec, len));
        }
        order.sort_by(|(a, _), (b, _)| {
            reference_rank(b.dtype)
                .cmp(&reference_rank(a.dtype))
                .then_with(|| a.name.cmp(&b.name))
        });

        let header = render_header(&order, metadata)
            .ok_or_else(|| bad("tensor data size overflows".into()))?;
        let header_len = header.len() as u64;
        if header_len > MAX_HEADER_LEN {
            return Err(Error::HeaderTooLarge {
                path: dest,
                len: header_len,
                max: MAX_HEADER_LEN,
            });
        }
        let file = AtomicFile::with_overwrite(&dest, overwrite)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |source| Error::Io {
            path: dest.clone(),
            action: "writing the safetensors header".into(),
            source,
        };
        out.write_all(&header_len.to_le_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        Ok(Self {
            out,
            dest,
            order,
            next: 0,
            header_len: 8 + header_len,
        })
    }

    /// The tensors in the order their bytes must be given, with their byte lengths.
    pub fn order(&self) -> impl Iterator<Item = (&TensorSpec, u64)> {
        self.order.iter().map(|(s, l)| (s, *l))
    }

    /// The tensor whose bytes are expected next; `None` when all were written.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.order.get(self.next).map(|(s, _)| s)
    }

    /// Size of the length field plus the JSON header (the absolute offset of the data).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    fn expect(&self, name: &str) -> Result<u64> {
        match self.order.get(self.next) {
            Some((spec, len)) if spec.name == name => Ok(*len),
            Some((spec, _)) => Err(Error::Write {
                path: self.dest.clone(),
                reason: format!(
                    "tensor `{name}` written out of order, `{}` is next",
                    spec.name
                ),
            }),
            None => Err(Error::Write {
                path: self.dest.clone(),
                reason: format!("tensor `{name}` written after all tensors"),
            }),
        }
    }

    /// Writes the next tensor's bytes, which must be exactly its length.
    ///
    /// # Errors
    /// When `name` is not [`next_tensor`](Self::next_tensor), the length is wrong, or writing
    /// fails.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let len = self.expect(name)?;
        if bytes.len() as u64 != len {
            return Err(Error::TensorSize {
                path: self.dest.clone(),
                tensor: name.to_owned(),
                expected: len,
                actual: bytes.len() as u64,
            });
        }
        self.out.write_all(bytes).map_err(|source| Error::Io {
            path: self.dest.clone(),
            action: format!("writing tensor `{name}`"),
            source,
        })?;
        self.next += 1;
        Ok(())
    }

    /// Copies the next tensor's bytes from `reader`, which must give exactly its length.
    ///
    /// # Errors
    /// When `name` is not [`next_tensor`](Self::next_tensor), the reader ends early, or reading
    /// or writing fails.
    pub fn write_tensor_from(&mut self, name: &str, reader: &mut dyn Read) -> Result<()> {
        let len = self.expect(name)?;
        let copied =
            std::io::copy(&mut reader.take(len), &mut self.out).map_err(|source| Error::Io {
                path: self.dest.clone(),
                action: format!("copying tensor `{name}`"),
                source,
            })?;
        if copied != len {
            return Err(Error::TensorSize {
                path: self.dest.clone(),
                tensor: name.to_owned(),
                expected: len,
                actual: copied,
            });
        }
        self.next += 1;
        Ok(())
    }

    /// Flushes, syncs and renames the file into place once every tensor was written.
    ///
    /// # Errors
    /// When tensors are missing, or flushing, syncing or renaming fails.
    pub fn commit(self) -> Result<PathBuf> {
        if let Some(spec) = self.next_tensor() {
            return Err(Error::Write {
                path: self.dest.clone(),
                reason: format!(
                    "{} tensors not written, `{}` is next",
                    self.order.len() - self.next,
                    spec.name
                ),
            });
        }
        let dest = self.dest;
        let file = self.out.into_inner().map_err(|e| Error::Io {
            path: dest.clone(),
            action: "flushing".into(),
            source: e.into_error(),
        })?;
        Ok(file.commit()?)
    }
}

/// The JSON header in the reference layout, padded with spaces to a multiple of 8 bytes;
/// `None` when the offsets overflow.
fn render_header(
    order: &[(TensorSpec, u64)],
    metadata: &BTreeMap<String, String>,
) -> Option<Vec<u8>> {
    let mut s = String::from("{");
    let mut first = true;
    let mut sep = |s: &mut String| {
        if !first {
            s.push(',');
        }
        first = false;
    };
    if !metadata.is_empty() {
        sep(&mut s);
        s.push_str("\"__metadata__\":");
        s.push_str(&serde_json::to_string(metadata).ok()?);
    }
    let mut offset = 0u64;
    for (spec, len) in order {
        let end = offset.checked_add(*len)?;
        sep(&mut s);
        s.push_str(&serde_json::to_string(&spec.name).ok()?);
        s.push_str(":{\"dtype\":\"");
        s.push_str(dtype_name(spec.dtype)?);
        s.push_str("\",\"shape\":");
        s.push_str(&serde_json::to_string(&spec.shape).ok()?);
        s.push_str(&format!(",\"data_offsets\":[{offset},{end}]}}"));
        offset = end;
    }
    s.push('}');
    let mut bytes = s.into_bytes();
    let padded = bytes.len().next_multiple_of(8);
    bytes.resize(padded, b' ');
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn spec(name: &str, dtype: Dtype, shape: &[u64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn bytes_of(len: u64, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Tensors of mixed dtypes so that the dtype ordering matters.
    fn sample() -> Vec<TensorSpec> {
        vec![
            spec("b.weight", Dtype::F16, &[3, 5]),
            spec("a.weight", Dtype::F16, &[2, 2]),
            spec("ids", Dtype::I64, &[3]),
            spec("flag", Dtype::Bool, &[]),
            spec("scale", Dtype::F32, &[7]),
            spec("q", Dtype::U8, &[0]),
            spec("z", Dtype::Bf16, &[1, 3]),
        ]
    }

    fn write_sample(dest: &Path, metadata: &BTreeMap<String, String>) -> Vec<(String, Vec<u8>)> {
        let mut w = SafetensorsWriter::create(dest, sample(), metadata, Overwrite::Never).unwrap();
        let plan: Vec<(String, u64)> = w.order().map(|(s, l)| (s.name.clone(), l)).collect();
        let mut written = Vec::new();
        for (i, (name, len)) in plan.into_iter().enumerate() {
            let data = bytes_of(len, i as u8);
            if i % 2 == 0 {
                w.write_tensor(&name, &data).unwrap();
            } else {
                w.write_tensor_from(&name, &mut data.as_slice()).unwrap();
            }
            written.push((name, data));
        }
        w.commit().unwrap();
        written
    }

    #[test]
    fn round_trip_through_our_reader() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.safetensors");
        let meta = BTreeMap::from([
            ("format".to_owned(), "pt".to_owned()),
            ("b".into(), "\"q\"".into()),
        ]);
        let written = write_sample(&dest, &meta);
        let idx = crate::read_index(&dest).unwrap();
        assert_eq!(idx.metadata, meta);
        assert_eq!(idx.header_len % 8, 0);
        let file = std::fs::read(&dest).unwrap();
        for (name, data) in &written {
            let t = idx.get(name).unwrap();
            let range = t.data.offset as usize..(t.data.offset + t.data.len) as usize;
            assert_eq!(&file[range], data.as_slice(), "{name}");
        }
        for s in sample() {
            let t = idx.get(&s.name).unwrap();
            assert_eq!((t.dtype, &t.shape), (s.dtype, &s.shape));
        }
    }

    #[test]
    fn output_is_byte_identical_to_the_reference_serializer() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ours.safetensors");
        // One metadata key: the reference keeps metadata in a hash map, whose order is not fixed.
        let meta = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        let written = write_sample(&dest, &meta);
        let views: Vec<(String, TensorView<'_>)> = sample()
            .iter()
            .map(|s| {
                let data = &written.iter().find(|(n, _)| *n == s.name).unwrap().1;
                let dtype = match s.dtype {
                    Dtype::F16 => safetensors::Dtype::F16,
                    Dtype::I64 => safetensors::Dtype::I64,
                    Dtype::Bool => safetensors::Dtype::BOOL,
                    Dtype::F32 => safetensors::Dtype::F32,
                    Dtype::U8 => safetensors::Dtype::U8,
                    Dtype::Bf16 => safetensors::Dtype::BF16,
                    _ => unreachable!(),
                };
                let shape = s.shape.iter().map(|&d| d as usize).collect();
                (s.name.clone(), TensorView::new(dtype, shape, data).unwrap())
            })
            .collect();
        let reference =
            safetensors::serialize(views, Some(meta.clone().into_iter().collect())).unwrap();
        let ours = std::fs::read(&dest).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours[..200.min(ours.len())]),
            String::from_utf8_lossy(&reference[..200.min(reference.len())])
        );
        assert_eq!(ours, reference);
    }

    #[test]
    fn reference_crate_reads_our_output_identically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.safetensors");
        let meta = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b".into(), "2".into())]);
        let written = write_sample(&dest, &meta);
        let bytes = std::fs::read(&dest).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), sample().len());
        for (name, data) in &written {
            let t = st.tensor(name).unwrap();
            assert_eq!(t.data(), data.as_slice(), "{name}");
            let s = sample().into_iter().find(|s| &s.name == name).unwrap();
            assert_eq!(format!("{:?}", t.dtype()), dtype_name(s.dtype).unwrap());
            assert_eq!(
                t.shape().iter().map(|&d| d as u64).collect::<Vec<_>>(),
                s.shape
            );
        }
        let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = m.metadata().clone().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["b"], "2");
    }

    #[test]
    fn out_of_order_wrong_length_and_missing_tensors_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.safetensors");
        let mut w = SafetensorsWriter::create(
            &dest,
            vec![spec("a", Dtype::F32, &[2]), spec("b", Dtype::F32, &[1])],
            &BTreeMap::new(),
            Overwrite::Never,
        )
        .unwrap();
        assert_eq!(w.next_tensor().unwrap().name, "a");
        let err = w.write_tensor("b", &[0; 4]).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
        let err = w.write_tensor("a", &[0; 7]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TensorSize {
                    expected: 8,
                    actual: 7,
                    ..
                }
            ),
            "{err}"
        );
        let err = w
            .write_tensor_from("a", &mut [0u8; 3].as_slice())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::TensorSize {
                    expected: 8,
                    actual: 3,
                    ..
                }
            ),
            "{err}"
        );
        let mut w = SafetensorsWriter::create(
            &dest,
            vec![spec("a", Dtype::F32, &[2]), spec("b", Dtype::F32, &[1])],
            &BTreeMap::new(),
            Overwrite::Never,
        )
        .unwrap();
        w.write_tensor("a", &[0; 8]).unwrap();
        let err = w.commit().unwrap_err();
        assert!(err.to_string().contains("`b` is next"), "{err}");
        assert!(!dest.exists(), "an incomplete file must not appear");
    }

    #[test]
    fn quantized_and_repeated_names_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.safetensors");
        let err = SafetensorsWriter::create(
            &dest,
            vec![spec("a", Dtype::Quantized, &[32])],
            &BTreeMap::new(),
            Overwrite::Never,
        )
        .unwrap_err();
        assert!(matches!(err, Error::UnknownDtype { .. }), "{err}");
        let err = SafetensorsWriter::create(
            &dest,
            vec![spec("a", Dtype::F32, &[1]), spec("a", Dtype::F16, &[1])],
            &BTreeMap::new(),
            Overwrite::Never,
        )
        .unwrap_err();
        assert!(err.to_string().contains("repeated"), "{err}");
    }

    #[test]
    fn empty_file_has_only_an_empty_header() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.safetensors");
        let w =
            SafetensorsWriter::create(&dest, vec![], &BTreeMap::new(), Overwrite::Never).unwrap();
        w.commit().unwrap();
        // The reference writes `{}` padded to 8 bytes.
        let bytes = std::fs::read(&dest).unwrap();
        let reference =
            safetensors::serialize(Vec::<(String, TensorView<'_>)>::new(), None).unwrap();
        assert_eq!(bytes, reference);
        assert!(crate::read_index(&dest).unwrap().tensors.is_empty());
    }
}
