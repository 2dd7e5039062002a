//! Tensor bytes out of a source file, one tensor at a time, contiguous and row-major.
//!
//! Contiguous tensors stored as they are (safetensors, stored zip members, legacy files) are
//! streamed from the file in bounded chunks, so memory does not grow with the tensor. Three
//! cases need the tensor in memory once: a strided PyTorch view (gathered into a new buffer), a
//! tensor inside a deflated zip member that is also strided, and a tensor this crate rewrites
//! (CLIP `position_ids`). Deflated members are inflated as a stream otherwise.

use crate::cast::cast_into;
use crate::{Error, Result};
use danlu_format::{TensorIndex, TensorInfo};
use danlu_types::Dtype;
use flate2::read::DeflateDecoder;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from a source per step when converting element types.
const CHUNK: usize = 1 << 20;

fn tensor_err(path: &Path, t: &TensorInfo, reason: impl Into<String>) -> Error {
    Error::Tensor {
        path: path.to_path_buf(),
        tensor: t.name.clone(),
        reason: reason.into(),
    }
}

/// Size in bytes of one element of `t`, or an error naming it when it has none.
pub(crate) fn element_size(path: &Path, t: &TensorInfo) -> Result<u64> {
    match t.dtype {
        Dtype::Quantized => Err(tensor_err(
            path,
            t,
            "block-quantized data cannot be stored in safetensors",
        )),
        d => d
            .size_in_bytes()
            .ok_or_else(|| tensor_err(path, t, format!("element type `{d}` has no fixed size"))),
    }
}

/// Number of elements a strided view spans in its storage (`1 + Σ (size-1)·stride`).
fn span_elements(shape: &[u64], strides: &[u64]) -> Option<u64> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().zip(strides).try_fold(1u64, |acc, (&n, &s)| {
        acc.checked_add((n - 1).checked_mul(s)?)
    })
}

/// Copies the elements of a strided view out of `src` (which starts at the view's first
/// element) in row-major order; `None` when a stride points outside `src`.
fn gather(src: &[u8], shape: &[u64], strides: &[u64], el: usize) -> Option<Vec<u8>> {
    let numel: u64 = shape.iter().product();
    let mut out = Vec::with_capacity(usize::try_from(numel).ok()?.checked_mul(el)?);
    fn walk(
        src: &[u8],
        shape: &[u64],
        strides: &[u64],
        el: usize,
        base: u64,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        match (shape.split_first(), strides.split_first()) {
            (None, _) | (_, None) => {
                let start = usize::try_from(base).ok()?.checked_mul(el)?;
                out.extend_from_slice(src.get(start..start.checked_add(el)?)?);
                Some(())
            }
            (Some((&n, shape_rest)), Some((&s, strides_rest))) => {
                for i in 0..n {
                    walk(
                        src,
                        shape_rest,
                        strides_rest,
                        el,
                        base.checked_add(i.checked_mul(s)?)?,
                        out,
                    )?;
                }
                Some(())
            }
        }
    }
    walk(src, shape, strides, el, 0, &mut out)?;
    Some(out)
}

/// A reader of one tensor's contiguous bytes, and how many bytes it holds in memory at once.
pub(crate) struct TensorReader {
    /// The bytes, exactly `numel × element size` of them.
    pub(crate) reader: Box<dyn Read>,
    /// Bytes held in a buffer for the whole tensor (0 when streamed).
    pub(crate) buffered: u64,
}

/// Opens the bytes of tensor `t` of `index` as a contiguous row-major stream.
///
/// # Errors
/// When the file cannot be read, the tensor is block-quantized, stored with a compression other
/// than deflate, or its strides point outside its storage.
pub(crate) fn open_tensor(index: &TensorIndex, t: &TensorInfo) -> Result<TensorReader> {
    let path = index
        .files
        .get(t.data.file)
        .map(|p| p.as_path())
        .unwrap_or_else(|| Path::new("?"));
    let el = element_size(path, t)?;
    let numel = t.numel();
    let io = |action: String| {
        move |source| Error::Io {
            path: path.to_path_buf(),
            action,
            source,
        }
    };
    let mut file = File::open(path).map_err(io("opening".into()))?;
    file.seek(SeekFrom::Start(t.data.offset))
        .map_err(io(format!("seeking to tensor `{}`", t.name)))?;
    let raw = file.take(t.data.len);
    // Where the tensor starts inside an inflated member, for deflated storages.
    let deflate_start = match t.data.quant.as_deref() {
        None => None,
        Some("deflate") => Some(0),
        Some(q) => match q
            .strip_prefix("deflate@")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(n) => Some(n),
            None => {
                return Err(tensor_err(
                    path,
                    t,
                    format!("data stored as `{q}` cannot be converted"),
                ));
            }
        },
    };
    let mut reader: Box<dyn Read> = match deflate_start {
        None => Box::new(raw),
        Some(skip) => {
            let mut inflated = DeflateDecoder::new(raw);
            let skipped = io::copy(&mut (&mut inflated).take(skip), &mut io::sink())
                .map_err(io(format!("inflating tensor `{}`", t.name)))?;
            if skipped != skip {
                return Err(tensor_err(
                    path,
                    t,
                    "the deflated storage ends before the tensor starts",
                ));
            }
            Box::new(inflated)
        }
    };
    let Some(strides) = &t.data.strides else {
        let len = numel
            .checked_mul(el)
            .ok_or_else(|| tensor_err(path, t, "size overflows"))?;
        return Ok(TensorReader {
            reader: Box::new(reader.take(len)),
            buffered: 0,
        });
    };
    let span = span_elements(&t.shape, strides)
        .and_then(|s| s.checked_mul(el))
        .ok_or_else(|| tensor_err(path, t, "strided span overflows"))?;
    let mut src = Vec::new();
    let got = (&mut reader)
        .take(span)
        .read_to_end(&mut src)
        .map_err(io(format!("reading strided tensor `{}`", t.name)))?;
    if (got as u64) < span {
        return Err(tensor_err(
            path,
            t,
            format!("strided view spans {span} bytes, the storage holds {got}"),
        ));
    }
    let el_usize = usize::try_from(el).map_err(|_| tensor_err(path, t, "element too large"))?;
    let out = gather(&src, &t.shape, strides, el_usize).ok_or_else(|| {
        tensor_err(
            path,
            t,
            format!("strides {strides:?} point outside the storage"),
        )
    })?;
    let buffered = (src.len() + out.len()) as u64;
    drop(src);
    Ok(TensorReader {
        reader: Box::new(Cursor::new(out)),
        buffered,
    })
}

/// Reads a whole (small) tensor into memory.
pub(crate) fn read_tensor(index: &TensorIndex, t: &TensorInfo) -> Result<Vec<u8>> {
    let mut r = open_tensor(index, t)?;
    let mut out = Vec::new();
    r.reader.read_to_end(&mut out).map_err(|source| Error::Io {
        path: index.files.get(t.data.file).cloned().unwrap_or_default(),
        action: format!("reading tensor `{}`", t.name),
        source,
    })?;
    Ok(out)
}

/// A reader that converts the element type of the bytes it passes on, chunk by chunk.
pub(crate) struct Casting<R> {
    inner: R,
    from: Dtype,
    to: Dtype,
    input: Vec<u8>,
    output: Vec<u8>,
    pos: usize,
}

impl<R: Read> Casting<R> {
    /// Converts the elements `inner` yields from `from` to `to`.
    pub(crate) fn new(inner: R, from: Dtype, to: Dtype) -> Self {
        Self {
            inner,
            from,
            to,
            input: vec![0; CHUNK],
            output: Vec::with_capacity(CHUNK * 2),
            pos: 0,
        }
    }
}

impl<R: Read> Read for Casting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.output.len() {
            let mut filled = 0;
            while filled < self.input.len() {
                match self.inner.read(&mut self.input[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(0);
            }
            let el = self.from.size_in_bytes().unwrap_or(1) as usize;
            if filled % el != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tensor data ends inside an element",
                ));
            }
            self.output.clear();
            self.pos = 0;
            cast_into(self.from, self.to, &self.input[..filled], &mut self.output);
        }
        let n = buf.len().min(self.output.len() - self.pos);
        buf[..n].copy_from_slice(&self.output[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_makes_a_transposed_view_contiguous() {
        // A 2x3 row-major matrix of u8 [0 1 2; 3 4 5], viewed transposed: shape [3, 2], strides
        // [1, 3] gives [0 3; 1 4; 2 5].
        let src = [0u8, 1, 2, 3, 4, 5];
        let out = gather(&src, &[3, 2], &[1, 3], 1).unwrap();
        assert_eq!(out, [0, 3, 1, 4, 2, 5]);
        assert_eq!(span_elements(&[3, 2], &[1, 3]), Some(6));
        // Every other element of a vector (a slice `x[::2]`), with two-byte elements.
        let src = [1u8, 0, 2, 0, 3, 0, 4, 0, 5, 0];
        assert_eq!(gather(&src, &[3], &[2], 2).unwrap(), [1, 0, 3, 0, 5, 0]);
        // Strides past the end are refused, not a panic.
        assert_eq!(gather(&src, &[3], &[4], 2), None);
    }

    #[test]
    fn casting_reader_converts_across_chunk_boundaries() {
        let n = CHUNK / 4 * 3 + 5;
        let input: Vec<u8> = (0..n)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        let mut out = Vec::new();
        Casting::new(&input[..], Dtype::F32, Dtype::F16)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), n * 2);
        let last = half::f16::from_le_bytes([out[out.len() - 2], out[out.len() - 1]]);
        assert_eq!(
            last.to_f32(),
            half::f16::from_f32((n - 1) as f32 * 0.5).to_f32()
        );
        // A stream cut inside an element is an error.
        let err = Casting::new(&input[..6], Dtype::F32, Dtype::F16)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
