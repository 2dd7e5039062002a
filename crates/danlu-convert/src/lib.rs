//! Safe conversion of model files to safetensors.
//!
//! [`convert`] reads any container `danlu-format` opens (a `.ckpt` only through the restricted
//! pickle reader, so nothing in it ever runs), and writes a safetensors file tensor by tensor:
//! - `prune` drops EMA copies (`model_ema.*`) and optimizer, scheduler and loss state;
//!   `use_ema` first puts the EMA weights in place of the live UNet weights;
//! - floating-point tensors change element type as PyTorch's `.half()`/`.bfloat16()`/`.float()`
//!   would ([`TargetDtype`]); integer tensors are kept;
//! - known defects are repaired and reported ([`FixKind`]);
//! - a VAE can be baked in (`first_stage_model.`) or written out as its own file;
//! - the source's `__metadata__` is kept and `danlu.convert` added (source hash, what was done);
//! - `verify` re-reads the output and compares every tensor with the source.
//!
//! Memory: a contiguous tensor is streamed in 1 MiB chunks, so the process holds the index, a
//! few MiB of buffers and, for a strided (non-contiguous) PyTorch view, that one tensor twice
//! ([`ConvertReport::max_buffer_bytes`]); never the model. The output is written to a temporary
//! file beside it, synced and renamed, and never replaces the source or an existing file.
//!
//! ```no_run
//! use danlu_convert::{convert, ConvertOptions, TargetDtype};
//! let opts = ConvertOptions { dtype: TargetDtype::F16, prune: true, ..Default::default() };
//! let report = convert(
//!     "model.ckpt".as_ref(),
//!     "model.safetensors".as_ref(),
//!     &opts,
//!     &danlu_types::NoProgress,
//! )?;
//! println!("{} tensors, {} bytes", report.tensors, report.output_bytes);
//! # Ok::<(), danlu_convert::Error>(())
//! ```

mod cast;
mod error;
mod plan;
pub mod report;
mod source;

pub use cast::{f32_to_bf16, f32_to_f16};
pub use error::{Error, Result};
pub use report::{
    BakedVae, ConvertReport, DropReason, Dropped, EmaSwap, ExtractedVae, Fix, FixKind,
    IdentityCheck, TargetDtype, Verification,
};

use danlu_format::{SafetensorsWriter, TensorIndex, TensorSpec};
use danlu_fs::Overwrite;
use danlu_types::{Format, Reporter};
use plan::{Entry, Origin, Plan, Request, Src};
use source::{Casting, open_tensor};
use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The metadata key holding provenance.
pub const PROVENANCE_KEY: &str = "danlu.convert";

/// What to do besides writing safetensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Element type of floating-point tensors.
    pub dtype: TargetDtype,
    /// Drop EMA copies and training state.
    pub prune: bool,
    /// Replace the UNet weights with their EMA copies (and drop the copies).
    pub use_ema: bool,
    /// An LDM-layout VAE file to bake in as `first_stage_model.*`.
    pub bake_vae: Option<PathBuf>,
    /// Also write the baked VAE (without `first_stage_model.`) to this file.
    pub extract_vae: Option<PathBuf>,
    /// Re-read the output(s) and compare every tensor with the source.
    pub verify: bool,
}

/// The output path `danlu convert` uses when none is given: `x.ckpt` becomes
/// `x.safetensors`, and a safetensors source `x.safetensors` becomes `x.converted.safetensors`.
pub fn default_output(input: &Path) -> PathBuf {
    let is_safetensors = input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if is_safetensors {
        input.with_extension("converted.safetensors")
    } else {
        input.with_extension("safetensors")
    }
}

/// `path` with its folder resolved, for comparing an output with the source.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses an output that is a source or already exists.
fn check_output(output: &Path, sources: &[&Path]) -> Result<()> {
    let out = resolved(output);
    if sources.iter().any(|s| resolved(s) == out) {
        return Err(Error::Output {
            path: output.to_path_buf(),
            reason: "the output would replace a source file".into(),
        });
    }
    if output.exists() {
        return Err(Error::Output {
            path: output.to_path_buf(),
            reason: "already exists; danlu never overwrites a file".into(),
        });
    }
    Ok(())
}

fn read_index(path: &Path) -> Result<TensorIndex> {
    let index = danlu_format::read_index(path).map_err(|source| Error::Index {
        path: path.to_path_buf(),
        source,
    })?;
    if index.format == Some(Format::DiffusersDir) {
        return Err(Error::Invalid {
            path: path.to_path_buf(),
            reason: "a diffusers folder; converting it to one file needs a key remap, which \
                     `convert` does not do"
                .into(),
        });
    }
    Ok(index)
}

fn sha256(path: &Path, reporter: &dyn Reporter) -> Result<String> {
    danlu_hash::hash_file(path, reporter, &AtomicBool::new(false))
        .map(|h| h.sha256)
        .map_err(|source| Error::Hash {
            path: path.to_path_buf(),
            source,
        })
}

/// The indexes a plan refers to.
struct Indexes<'a> {
    source: &'a TensorIndex,
    vae: Option<&'a TensorIndex>,
}

impl Indexes<'_> {
    fn get(&self, origin: Origin) -> Option<&TensorIndex> {
        match origin {
            Origin::Source => Some(self.source),
            Origin::Vae => self.vae,
        }
    }
}

/// A reader of an entry's output bytes and the bytes it buffers.
fn entry_reader(e: &Entry, ix: &Indexes<'_>, out: &Path) -> Result<(Box<dyn Read>, u64)> {
    match &e.src {
        Src::Bytes(b) => Ok((Box::new(Cursor::new(b.clone())), b.len() as u64)),
        Src::Tensor(origin, i) => {
            let t = ix
                .get(*origin)
                .and_then(|index| index.tensors.get(*i).map(|t| (index, t)));
            let Some((index, t)) = t else {
                return Err(Error::Invalid {
                    path: out.to_path_buf(),
                    reason: format!("tensor `{}` has no source", e.name),
                });
            };
            let r = open_tensor(index, t)?;
            if e.src_dtype == e.dtype {
                Ok((r.reader, r.buffered))
            } else {
                Ok((
                    Box::new(Casting::new(r.reader, e.src_dtype, e.dtype)),
                    r.buffered,
                ))
            }
        }
    }
}

/// Writes `entries` to `dest`; returns the file size and the largest buffer held.
fn write_entries(
    dest: &Path,
    entries: &BTreeMap<String, Entry>,
    ix: &Indexes<'_>,
    metadata: &BTreeMap<String, String>,
    reporter: &dyn Reporter,
) -> Result<(u64, u64)> {
    let wr = |source| Error::Write {
        path: dest.to_path_buf(),
        source,
    };
    let specs = entries
        .values()
        .map(|e| TensorSpec {
            name: e.name.clone(),
            dtype: e.dtype,
            shape: e.shape.clone(),
        })
        .collect();
    let mut w = SafetensorsWriter::create(dest, specs, metadata, Overwrite::Never).map_err(wr)?;
    let order: Vec<(String, u64)> = w.order().map(|(s, l)| (s.name.clone(), l)).collect();
    let total: u64 = order.iter().map(|(_, l)| l).sum();
    let label = dest
        .file_name()
        .map(|n| format!("writing {}", n.to_string_lossy()))
        .unwrap_or_default();
    let task = reporter.start(&label, Some(total));
    let mut max_buffer = 0;
    for (name, len) in order {
        let Some(e) = entries.get(&name) else {
            continue;
        };
        let (mut r, buffered) = entry_reader(e, ix, dest)?;
        max_buffer = max_buffer.max(buffered);
        w.write_tensor_from(&name, &mut r).map_err(wr)?;
        reporter.advance(task, len);
    }
    let size = w.header_len() + total;
    w.commit().map_err(wr)?;
    reporter.finish(task);
    Ok((size, max_buffer))
}

/// Compares the file at `dest` with what `entries` say it should hold.
fn verify_entries(
    dest: &Path,
    entries: &BTreeMap<String, Entry>,
    ix: &Indexes<'_>,
    reporter: &dyn Reporter,
) -> Result<(usize, u64)> {
    let fail = |reason: String| Error::Verify {
        path: dest.to_path_buf(),
        reason,
    };
    let out = danlu_format::read_index(dest).map_err(|source| Error::Index {
        path: dest.to_path_buf(),
        source,
    })?;
    if out.tensors.len() != entries.len() {
        return Err(fail(format!(
            "{} tensors written, {} expected",
            out.tensors.len(),
            entries.len()
        )));
    }
    let task = reporter.start("verifying", Some(entries.len() as u64));
    let mut bytes = 0u64;
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    for e in entries.values() {
        let t = out
            .get(&e.name)
            .ok_or_else(|| fail(format!("tensor `{}` is missing", e.name)))?;
        if t.dtype != e.dtype || t.shape != e.shape {
            return Err(fail(format!(
                "tensor `{}` is {} {:?}, expected {} {:?}",
                e.name, t.dtype, t.shape, e.dtype, e.shape
            )));
        }
        let (mut want, _) = entry_reader(e, ix, dest)?;
        let mut got = open_tensor(&out, t)?.reader;
        let io = |source| Error::Io {
            path: dest.to_path_buf(),
            action: format!("re-reading tensor `{}`", e.name),
            source,
        };
        let mut at = 0u64;
        loop {
            let n = read_full(&mut want, &mut a).map_err(io)?;
            let m = read_full(&mut got, &mut b).map_err(io)?;
            if a[..n] != b[..m] {
                let k = a[..n]
                    .iter()
                    .zip(&b[..m])
                    .position(|(x, y)| x != y)
                    .unwrap_or(n.min(m));
                return Err(fail(format!(
                    "tensor `{}` differs from the source at byte {}",
                    e.name,
                    at + k as u64
                )));
            }
            if n == 0 {
                break;
            }
            at += n as u64;
        }
        bytes += at;
        reporter.advance(task, 1);
    }
    reporter.finish(task);
    Ok((entries.len(), bytes))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Converts `input` to a safetensors file at `output` as `opts` says.
///
/// # Errors
/// When `output` (or the extracted VAE's path) is a source or exists; a source cannot be read
/// or holds a tensor that cannot be rebuilt (the error names the key); an option does not apply
/// (`use_ema` without EMA weights, a VAE of the wrong layout or shapes, `extract_vae` without a
/// baked VAE); writing fails; or `verify` finds a difference. Nothing is left under the
/// output's name when an error occurs before it was complete.
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    reporter: &dyn Reporter,
) -> Result<ConvertReport> {
    let mut sources = vec![input];
    if let Some(v) = &opts.bake_vae {
        sources.push(v);
    }
    check_output(output, &sources)?;
    if let Some(x) = &opts.extract_vae {
        sources.push(output);
        check_output(x, &sources)?;
    }
    let source = read_index(input)?;
    let vae = opts.bake_vae.as_deref().map(read_index).transpose()?;
    let req = Request {
        dtype: opts.dtype.dtype(),
        prune: opts.prune,
        use_ema: opts.use_ema,
        extract_vae: opts.extract_vae.is_some(),
    };
    let bake = match (&opts.bake_vae, &vae) {
        (Some(p), Some(v)) => Some((p.as_path(), v)),
        _ => None,
    };
    let plan: Plan = plan::plan(input, &source, bake, &req)?;
    let source_sha256 = sha256(input, reporter)?;
    let baked_vae = match &opts.bake_vae {
        Some(p) => Some(BakedVae {
            path: p.clone(),
            sha256: sha256(p, reporter)?,
            replaced: plan.vae_replaced,
            added: plan.vae_added,
        }),
        None => None,
    };

    let mut provenance = serde_json::Map::new();
    provenance.insert("source".into(), file_name(input).into());
    provenance.insert("source_sha256".into(), source_sha256.clone().into());
    provenance.insert("dtype".into(), opts.dtype.to_string().into());
    provenance.insert("prune".into(), opts.prune.into());
    provenance.insert("use_ema".into(), opts.use_ema.into());
    if let Some(b) = &baked_vae {
        provenance.insert("bake_vae".into(), file_name(&b.path).into());
        provenance.insert("bake_vae_sha256".into(), b.sha256.clone().into());
    }
    let fixes: Vec<serde_json::Value> = plan
        .fixes
        .iter()
        .filter_map(|f| serde_json::to_value(f.kind).ok())
        .collect();
    provenance.insert("fixes".into(), fixes.into());
    provenance.insert(
        "tool".into(),
        format!("danlu {}", env!("CARGO_PKG_VERSION")).into(),
    );
    let mut metadata = source.metadata.clone();
    if source.format != Some(Format::Safetensors) {
        // Only safetensors metadata is `__metadata__`; other containers' text (GGUF keys) is not
        // carried over as if it were.
        metadata.clear();
    }
    metadata.insert(
        PROVENANCE_KEY.into(),
        serde_json::Value::Object(provenance.clone()).to_string(),
    );

    let ix = Indexes {
        source: &source,
        vae: vae.as_ref(),
    };
    let (output_bytes, mut max_buffer) =
        write_entries(output, &plan.main, &ix, &metadata, reporter)?;
    let mut extracted_vae = None;
    if let (Some(path), Some(entries)) = (&opts.extract_vae, &plan.vae) {
        let mut p = provenance.clone();
        p.insert("extract_vae".into(), true.into());
        let md = BTreeMap::from([(
            PROVENANCE_KEY.to_owned(),
            serde_json::Value::Object(p).to_string(),
        )]);
        let (bytes, buf) = write_entries(path, entries, &ix, &md, reporter)?;
        max_buffer = max_buffer.max(buf);
        extracted_vae = Some(ExtractedVae {
            path: path.clone(),
            tensors: entries.len(),
            bytes,
        });
    }
    let verify = if opts.verify {
        let (mut tensors, mut bytes) = verify_entries(output, &plan.main, &ix, reporter)?;
        if let (Some(path), Some(entries)) = (&opts.extract_vae, &plan.vae) {
            let (t, b) = verify_entries(path, entries, &ix, reporter)?;
            tensors += t;
            bytes += b;
        }
        Some(Verification {
            tensors,
            bytes,
            rule: match opts.dtype {
                TargetDtype::Keep => "bytes equal to the source".into(),
                d => format!(
                    "{d} tensors equal, bit for bit, to the source rounded to nearest even as \
                     PyTorch rounds; other tensors equal to the source"
                ),
            },
            identity: None,
        })
    } else {
        None
    };
    let source_bytes = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
    Ok(ConvertReport {
        source: input.to_path_buf(),
        source_format: source.format,
        source_sha256,
        source_bytes,
        source_tensors: source.tensors.len(),
        pickle: source.pickle.clone(),
        values_dropped: source.values.len(),
        output: output.to_path_buf(),
        output_bytes,
        tensors: plan.main.len(),
        dtype: opts.dtype,
        dropped: plan.dropped,
        fixes: plan.fixes,
        ema: plan.ema,
        baked_vae,
        extracted_vae,
        metadata,
        max_buffer_bytes: max_buffer,
        verify,
    })
}
