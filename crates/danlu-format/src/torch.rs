//! PyTorch containers: the zip archive (`*/data.pkl`, `*/data/N`) and the legacy pre-zip format.
//!
//! Both are read through `danlu-pickle`, which never imports or calls anything. The unpickled
//! root is flattened into dotted names (`state_dict.model.diffusion_model.out.2.bias`, list
//! items by index, integer dict keys as decimal text); tensors become [`TensorInfo`]s located by
//! absolute file offset, and scalar leaves become [`TensorIndex::values`].
//!
//! A storage member that a zip tool re-packed with deflate cannot be mapped in place; its
//! tensors are still listed (identification needs only names and shapes), with
//! [`DataRef::quant`] set to `deflate` (or `deflate@N` when the tensor starts `N` bytes into
//! the inflated storage) and `offset`/`len` giving the compressed member's bytes, so that a
//! reader of raw data sees the mismatch instead of reading compressed bytes as weights.

mod zip;

use crate::{DataRef, Error, Result, TensorIndex, TensorInfo};
use danlu_pickle::{Limits, Safety, Storage, Tensor, Value};
use danlu_types::Format;
use std::collections::BTreeMap;
use std::path::Path;
use zip::Member;

/// Largest object pickle read (a full SDXL checkpoint's `data.pkl` is about 1 MiB).
const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Longest string value kept in [`TensorIndex::values`], in characters.
const MAX_VALUE_CHARS: usize = 4096;
/// Most values kept in [`TensorIndex::values`].
const MAX_VALUES: usize = 100_000;
/// The first pickle of a legacy file: `torch.serialization.MAGIC_NUMBER`, 0x1950a86a20f9469cfc6c
/// (PyTorch `torch/serialization.py`).
const LEGACY_MAGIC: &str = "119547037146038801333356";
/// The second pickle of a legacy file: `PROTOCOL_VERSION`.
const LEGACY_PROTOCOL: i64 = 1001;

/// One line summary of a pickle verdict, for error messages.
pub(crate) fn verdict(safety: &Safety) -> String {
    if safety.safe {
        format!(
            "its pickles import {} allowed globals",
            safety.globals.len()
        )
    } else {
        format!("unsafe: {}", safety.findings.join("; "))
    }
}

fn storage_err(path: &Path, key: &str, reason: impl Into<String>) -> Error {
    Error::Storage {
        path: path.to_path_buf(),
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a PyTorch zip archive's tensor index through the restricted pickle reader.
pub(crate) fn read_zip(path: &Path) -> Result<TensorIndex> {
    let map = danlu_fs::map(path)?;
    parse_zip(path, &map)
}

/// Reads a legacy (pre-zip) PyTorch file's tensor index through the restricted pickle reader.
pub(crate) fn read_legacy(path: &Path) -> Result<TensorIndex> {
    let map = danlu_fs::map(path)?;
    parse_legacy(path, &map)
}

/// Whether a member is `<dir>/data.pkl`, the object pickle PyTorch reads (A1111
/// `modules/safe.py` `data_pkl_re`).
fn is_data_pkl(name: &str) -> bool {
    matches!(name.split_once('/'), Some((dir, "data.pkl")) if !dir.is_empty())
}

/// Whether a member is a storage record `<dir>/data/<digits>`, which PyTorch reads as raw bytes.
fn is_storage_record(name: &str) -> bool {
    name.split_once('/')
        .and_then(|(_, rest)| rest.strip_prefix("data/"))
        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// The index of a PyTorch zip archive held in `data`.
fn parse_zip(path: &Path, data: &[u8]) -> Result<TensorIndex> {
    if data.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    let members = zip::read_members(data).map_err(|e| Error::Zip {
        path: path.to_path_buf(),
        offset: e.offset,
        reason: e.reason,
    })?;
    let mut safety = Safety {
        safe: true,
        ..Safety::default()
    };
    for m in &members {
        if !danlu_pickle::is_allowed_zip_name(&m.name) {
            safety.add_finding(format!(
                "member `{}` is not one A1111 allows in a PyTorch archive",
                m.name
            ));
        }
        if m.local_name != m.name {
            safety.add_finding(format!(
                "member `{}` is named `{}` in its local header",
                m.name, m.local_name
            ));
        }
        if m.is_encrypted() {
            safety.add_finding(format!("member `{}` is marked encrypted", m.name));
        }
        if m.flags & 0x20 != 0 {
            safety.add_finding(format!("member `{}` is marked as patched data", m.name));
        }
    }
    let mains: Vec<&Member> = members.iter().filter(|m| is_data_pkl(&m.name)).collect();
    if mains.len() > 1 {
        safety.add_finding(format!(
            "{} `data.pkl` members; PyTorch reads only one",
            mains.len()
        ));
    }
    let main = mains.first().copied();
    // Every other member that is or looks like a pickle is scanned too, so that a pickle under
    // another name (or a central-directory name that differs from the local one) is not missed.
    let limits = Limits::default();
    let mut pickles = 0usize;
    for m in &members {
        if main.is_some_and(|d| std::ptr::eq(d, m)) {
            continue;
        }
        let named = m.name.ends_with(".pkl") || m.local_name.ends_with(".pkl");
        let sniffed = !is_storage_record(&m.name)
            && m.size > 1
            && danlu_pickle::looks_like_pickle(&m.head(data, 2));
        if !(named || sniffed) {
            continue;
        }
        pickles += 1;
        match m.content(data, MAX_PICKLE_BYTES) {
            Ok(bytes) => {
                let s = danlu_pickle::scan(&bytes, &limits);
                if !is_data_pkl(&m.name) {
                    safety.add_finding(format!("member `{}` holds a pickle", m.name));
                }
                safety.merge(s);
            }
            Err(reason) => safety.add_finding(format!(
                "pickle member `{}` cannot be read: {reason}",
                m.name
            )),
        }
    }
    let Some(main) = main else {
        let reason = if pickles == 0 {
            "zip archive without a pickle".to_owned()
        } else {
            "zip archive without a `<dir>/data.pkl` member".to_owned()
        };
        return Err(Error::NotTorch {
            path: path.to_path_buf(),
            reason,
            safety: Box::new(safety),
        });
    };
    let prefix = main.name.trim_end_matches("data.pkl").to_owned();
    if let Some(bo) = members
        .iter()
        .find(|m| m.name == format!("{prefix}byteorder"))
    {
        let content = bo.content(data, 64).unwrap_or_default();
        if content.trim_ascii() == b"big" {
            return Err(Error::BigEndian {
                path: path.to_path_buf(),
            });
        }
    }
    let bytes = main
        .content(data, MAX_PICKLE_BYTES)
        .map_err(|reason| Error::Zip {
            path: path.to_path_buf(),
            offset: main.header_offset,
            reason: format!("member `{}`: {reason}", main.name),
        })?;
    let parsed = danlu_pickle::parse_at(&bytes, 0, &limits);
    safety.merge(parsed.safety);
    let root = parsed.value.map_err(|source| Error::Pickle {
        path: path.to_path_buf(),
        member: main.name.clone(),
        source,
    })?;
    if parsed.end < bytes.len() {
        safety.add_finding(format!(
            "{} bytes after the pickle's STOP in `{}`",
            bytes.len() - parsed.end,
            main.name
        ));
    }
    let by_name: BTreeMap<&str, &Member> = members.iter().map(|m| (m.name.as_str(), m)).collect();
    let locate = |tensor: &Tensor, name: &str| -> Result<DataRef> {
        let key = &tensor.storage.key;
        let member_name = format!("{prefix}data/{key}");
        let m = by_name.get(member_name.as_str()).ok_or_else(|| {
            storage_err(path, key, format!("archive has no member `{member_name}`"))
        })?;
        if m.is_encrypted() {
            return Err(storage_err(path, key, "member is encrypted"));
        }
        let (start, len) = tensor_range(path, tensor, name, m.size)?;
        match m.method {
            zip::STORED => Ok(DataRef {
                file: 0,
                offset: m.data_offset + start,
                len,
                strides: strides(tensor),
                quant: None,
            }),
            zip::DEFLATED => Ok(DataRef {
                file: 0,
                offset: m.data_offset,
                len: m.compressed_size,
                strides: strides(tensor),
                quant: Some(if start == 0 {
                    "deflate".to_owned()
                } else {
                    format!("deflate@{start}")
                }),
            }),
            other => Err(storage_err(
                path,
                key,
                format!(
                    "member `{member_name}` uses compression method {other}, which cannot be mapped"
                ),
            )),
        }
    };
    let mut index = TensorIndex {
        format: Some(Format::Ckpt),
        files: vec![path.to_path_buf()],
        header_len: main.data_offset + main.compressed_size,
        ..TensorIndex::default()
    };
    let mut flat = Flat::default();
    flatten(&root, "", &mut flat, 0);
    for (name, tensor) in flat.tensors {
        let data = locate(tensor, &name)?;
        index.tensors.push(info(path, name, tensor, data)?);
    }
    index.values = flat.values;
    safety.safe = safety.findings.is_empty();
    index.pickle = Some(safety);
    index.sort();
    tracing::debug!(path = %path.display(), tensors = index.tensors.len(), "read PyTorch zip");
    Ok(index)
}

/// The index of a legacy PyTorch file held in `data`: five pickles (magic number, protocol
/// version, system info, the object, the storage keys) and then each storage as an 8-byte
/// little-endian element count followed by its raw bytes (PyTorch `torch/serialization.py`,
/// `_legacy_save` and `_legacy_load`).
fn parse_legacy(path: &Path, data: &[u8]) -> Result<TensorIndex> {
    if data.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    let limits = Limits::default();
    let not_torch = |reason: String| Error::NotTorch {
        path: path.to_path_buf(),
        reason,
        safety: Box::new(danlu_pickle::scan(data, &limits)),
    };
    let mut safety = Safety {
        safe: true,
        ..Safety::default()
    };
    let mut values = Vec::with_capacity(5);
    let mut at = 0usize;
    for n in 0..5 {
        let parsed = danlu_pickle::parse_at(data, at, &limits);
        let start = at;
        safety.merge(parsed.safety);
        let value = match parsed.value {
            Ok(v) => v,
            Err(source) if n < 2 => {
                return Err(match source {
                    danlu_pickle::Error::UnknownOpcode { .. } | danlu_pickle::Error::Empty => {
                        not_torch(format!("no legacy PyTorch header: {source}"))
                    }
                    _ => not_torch(format!("unreadable legacy header: {source}")),
                });
            }
            Err(source) => {
                return Err(Error::Pickle {
                    path: path.to_path_buf(),
                    member: format!("pickle {} at offset {start}", n + 1),
                    source,
                });
            }
        };
        match n {
            0 if value != Value::BigInt(LEGACY_MAGIC.to_owned()) => {
                return Err(not_torch(
                    "the first pickle is not PyTorch's legacy magic number".to_owned(),
                ));
            }
            1 if value.as_i64() != Some(LEGACY_PROTOCOL) => {
                return Err(not_torch(format!(
                    "legacy protocol version is not {LEGACY_PROTOCOL}"
                )));
            }
            2 if value.get("little_endian") == Some(&Value::Bool(false)) => {
                return Err(Error::BigEndian {
                    path: path.to_path_buf(),
                });
            }
            _ => {}
        }
        values.push(value);
        at = parsed.end;
    }
    let (Some(keys), Some(root)) = (values.pop(), values.pop()) else {
        return Err(not_torch("fewer than five pickles".to_owned()));
    };
    let keys: Vec<String> = keys
        .as_seq()
        .map(|k| {
            k.iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    Value::Int(i) => Some(i.to_string()),
                    _ => None,
                })
                .collect::<Option<Vec<String>>>()
        })
        .unwrap_or_default()
        .ok_or_else(|| not_torch("the storage key list is not a list of strings".to_owned()))?;
    // Element sizes of the storages, from every storage the object pickle names.
    let mut element_size: BTreeMap<String, u64> = BTreeMap::new();
    collect_storages(&root, &mut |s: &Storage| {
        let key = s.view.as_ref().map_or(&s.key, |v| &v.0).clone();
        if let Some(size) = s.dtype.as_ref().map_or(Some(1), |d| d.size) {
            element_size.entry(key).or_insert(size);
        }
    });
    // Storage data follows the pickles, in key order: count, then bytes.
    let mut storages: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut pos = at as u64;
    for key in &keys {
        let size = *element_size
            .get(key)
            .ok_or_else(|| storage_err(path, key, "listed but never used, element size unknown"))?;
        let count_end = pos
            .checked_add(8)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| {
                storage_err(
                    path,
                    key,
                    format!("element count at offset {pos} is past the end of the file"),
                )
            })?;
        let mut c = [0u8; 8];
        c.copy_from_slice(&data[pos as usize..count_end as usize]);
        let count = u64::from_le_bytes(c);
        let len = count
            .checked_mul(size)
            .filter(|&l| count_end.checked_add(l).is_some_and(|e| e <= data.len() as u64))
            .ok_or_else(|| {
                storage_err(
                    path,
                    key,
                    format!("{count} elements of {size} bytes at offset {count_end} run past the end of the file ({} bytes)", data.len()),
                )
            })?;
        if storages.insert(key.clone(), (count_end, len)).is_some() {
            return Err(storage_err(path, key, "listed twice"));
        }
        pos = count_end + len;
    }
    let mut index = TensorIndex {
        format: Some(Format::PtLegacy),
        files: vec![path.to_path_buf()],
        header_len: at as u64,
        ..TensorIndex::default()
    };
    let mut flat = Flat::default();
    flatten(&root, "", &mut flat, 0);
    for (name, tensor) in flat.tensors {
        let (key, view_offset) = match &tensor.storage.view {
            Some((root_key, offset, _)) => (root_key.clone(), *offset),
            None => (tensor.storage.key.clone(), 0),
        };
        let &(start, len) = storages
            .get(&key)
            .ok_or_else(|| storage_err(path, &key, "not in the file's storage list"))?;
        let mut t = tensor.clone();
        t.offset = t
            .offset
            .checked_add(view_offset)
            .ok_or_else(|| storage_err(path, &key, "view offset overflows"))?;
        let (off, span) = tensor_range(path, &t, &name, len)?;
        let data_ref = DataRef {
            file: 0,
            offset: start + off,
            len: span,
            strides: strides(&t),
            quant: None,
        };
        index.tensors.push(info(path, name, &t, data_ref)?);
    }
    index.values = flat.values;
    safety.safe = safety.findings.is_empty();
    index.pickle = Some(safety);
    index.sort();
    tracing::debug!(path = %path.display(), tensors = index.tensors.len(), "read legacy PyTorch file");
    Ok(index)
}

/// Byte offset and length of a tensor inside its storage of `available` bytes, checked.
fn tensor_range(path: &Path, t: &Tensor, name: &str, available: u64) -> Result<(u64, u64)> {
    let key = &t.storage.key;
    let elsize = t.dtype.size.ok_or_else(|| {
        storage_err(
            path,
            key,
            format!("tensor `{name}` has an element type of unknown size"),
        )
    })?;
    let declared = t.storage.byte_len();
    if let Some(d) = declared
        && d > available
    {
        return Err(storage_err(
            path,
            key,
            format!("storage declares {d} bytes but the file holds {available}"),
        ));
    }
    let span = t.span().and_then(|s| s.checked_mul(elsize));
    let start = t.offset.checked_mul(elsize);
    let end = match (start, span) {
        (Some(s), Some(l)) => s.checked_add(l),
        _ => None,
    };
    match (start, span, end) {
        (Some(s), Some(l), Some(e))
            if e <= available && (l == 0 || declared.is_none_or(|d| e <= d)) =>
        {
            Ok((s, l))
        }
        _ => Err(storage_err(
            path,
            key,
            format!(
                "tensor `{name}` (offset {} elements, shape {:?}, stride {:?}) lies outside its {available}-byte storage",
                t.offset, t.shape, t.stride
            ),
        )),
    }
}

fn strides(t: &Tensor) -> Option<Vec<u64>> {
    (!t.is_contiguous()).then(|| t.stride.clone())
}

fn info(path: &Path, name: String, t: &Tensor, data: DataRef) -> Result<TensorInfo> {
    let dtype = t.dtype.dtype.ok_or_else(|| Error::UnknownDtype {
        path: path.to_path_buf(),
        tensor: name.clone(),
        dtype: t.dtype.name.clone(),
    })?;
    Ok(TensorInfo {
        name,
        dtype,
        shape: t.shape.clone(),
        data,
    })
}

/// Tensors and scalar leaves of an unpickled root, by dotted path.
#[derive(Default)]
struct Flat<'a> {
    tensors: Vec<(String, &'a Tensor)>,
    values: BTreeMap<String, serde_json::Value>,
}

/// Deepest nesting followed when flattening (the pickle reader already bounds depth).
const MAX_FLATTEN_DEPTH: usize = 512;

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn flatten<'a>(v: &'a Value, path: &str, out: &mut Flat<'a>, depth: usize) {
    if depth > MAX_FLATTEN_DEPTH {
        return;
    }
    let leaf = |json: serde_json::Value, out: &mut Flat<'a>| {
        if out.values.len() < MAX_VALUES {
            out.values.insert(path.to_owned(), json);
        }
    };
    match v {
        Value::Tensor(t) => out.tensors.push((path.to_owned(), t)),
        Value::Dict(items) => {
            for (k, item) in items {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    Value::BigInt(s) => s.clone(),
                    Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
                    _ => continue,
                };
                flatten(item, &join(path, &key), out, depth + 1);
            }
        }
        Value::List(items) | Value::Tuple(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, &join(path, &i.to_string()), out, depth + 1);
            }
        }
        // An object Python would have built (a pickled `nn.Module`, a Lightning callback):
        // its attribute state may hold tensors.
        Value::Call(call) => {
            if let Some(state) = &call.state {
                flatten(state, path, out, depth + 1);
            }
        }
        Value::None => leaf(serde_json::Value::Null, out),
        Value::Bool(b) => leaf(serde_json::Value::Bool(*b), out),
        Value::Int(i) => leaf(serde_json::Value::from(*i), out),
        Value::BigInt(s) => leaf(serde_json::Value::String(s.clone()), out),
        Value::Float(f) => leaf(float_json(*f), out),
        Value::Str(s) => {
            let s = if s.chars().count() > MAX_VALUE_CHARS {
                s.chars().take(MAX_VALUE_CHARS).collect()
            } else {
                s.clone()
            };
            leaf(serde_json::Value::String(s), out);
        }
        Value::Scalar { dtype, bytes } => {
            if let Some(j) = numpy_scalar(dtype, bytes) {
                leaf(j, out);
            }
        }
        _ => {}
    }
}

fn float_json(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or_else(
        || serde_json::Value::String(f.to_string()),
        serde_json::Value::Number,
    )
}

/// A NumPy scalar's value for the common little-endian numeric types.
fn numpy_scalar(dtype: &str, b: &[u8]) -> Option<serde_json::Value> {
    let d = dtype.trim_start_matches(['<', '|', '=']);
    let arr = |n: usize| -> Option<[u8; 8]> {
        (b.len() == n).then(|| {
            let mut a = [0u8; 8];
            a[..n].copy_from_slice(b);
            a
        })
    };
    Some(match d {
        "f8" => float_json(f64::from_le_bytes(arr(8)?)),
        "f4" => {
            let a = arr(4)?;
            float_json(f64::from(f32::from_le_bytes([a[0], a[1], a[2], a[3]])))
        }
        "i8" => serde_json::Value::from(i64::from_le_bytes(arr(8)?)),
        "i4" => {
            let a = arr(4)?;
            serde_json::Value::from(i32::from_le_bytes([a[0], a[1], a[2], a[3]]))
        }
        "b1" => serde_json::Value::Bool(*b.first()? != 0),
        _ => return None,
    })
}

/// Calls `f` on every storage named anywhere in the value (tensors' and bare ones).
fn collect_storages<'a>(v: &'a Value, f: &mut dyn FnMut(&'a Storage)) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Tensor(t) => f(&t.storage),
            Value::Storage(s) => f(s),
            Value::Dict(items) => {
                for (k, x) in items {
                    stack.push(k);
                    stack.push(x);
                }
            }
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => stack.extend(items),
            Value::Call(c) => {
                stack.push(&c.args);
                stack.extend(c.state.iter());
                stack.extend(c.kwargs.iter());
            }
            Value::PersistentId(p) => stack.push(p),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
