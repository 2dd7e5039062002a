//! PyTorch files built opcode by opcode: pickles (benign and malicious), zip archives, legacy files.
//!
//! Describe the object with [`Obj`] (nested dicts, lists, scalars and tensors), then write it as
//! a zip archive the way `torch.save` has since PyTorch 1.6 ([`torch_zip`], [`write_torch_zip`])
//! or in the legacy pre-1.6 format ([`torch_legacy`], [`write_torch_legacy`]):
//!
//! ```
//! use danlu_fixtures::torch::{Obj, checkpoint, torch_zip};
//! use danlu_types::Dtype;
//!
//! // {"state_dict": {"model.diffusion_model.out.2.bias": zeros(4)}, "global_step": 10}
//! let root = checkpoint(&[("model.diffusion_model.out.2.bias", Dtype::F32, &[4])], 10);
//! let bytes = torch_zip(&root);
//! assert_eq!(&bytes[..4], b"PK\x03\x04");
//! # let _ = Obj::None;
//! ```
//!
//! Zero-filled tensors cost nothing on disk with the `write_*` functions: their bytes are left
//! as holes of a sparse file, so checkpoints with real Stable Diffusion shapes stay cheap.
//!
//! The layout follows PyTorch `torch/serialization.py` (`_save`, `_legacy_save`) and
//! `caffe2/serialize/inline_container.cc` (stored members, data 64-byte aligned through a
//! padding extra field).

use danlu_types::Dtype;
use std::io::{self, Cursor, Seek, SeekFrom, Write};
use std::path::Path;

/// A Python object to pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A list.
    List(Vec<Obj>),
    /// A tuple.
    Tuple(Vec<Obj>),
    /// A plain dict with string keys.
    Dict(Vec<(String, Obj)>),
    /// A dict with integer keys (hypernetworks use `{768: [...]}`).
    IntDict(Vec<(i64, Obj)>),
    /// A `collections.OrderedDict` with string keys (what `state_dict()` returns).
    OrderedDict(Vec<(String, Obj)>),
    /// A tensor, saved through `torch._utils._rebuild_tensor_v2`.
    Tensor(TensorSpec),
    /// An `nn.Parameter` around a tensor (`torch._utils._rebuild_parameter`).
    Parameter(TensorSpec),
}

/// A tensor to save: element type, shape, and contents.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<u64>,
    /// Contents.
    pub data: TensorData,
}

/// Contents of a [`TensorSpec`].
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// All zeros (a hole in a sparse file).
    Zeros,
    /// These raw little-endian bytes (their length must be numel × element size).
    Bytes(Vec<u8>),
}

impl TensorSpec {
    fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    fn byte_len(&self) -> u64 {
        self.numel() * self.dtype.size_in_bytes().unwrap_or(1)
    }

    fn strides(&self) -> Vec<u64> {
        let mut s = vec![1u64; self.shape.len()];
        for i in (0..self.shape.len().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.shape[i + 1];
        }
        s
    }
}

/// A zero-filled tensor.
pub fn tensor(dtype: Dtype, shape: &[u64]) -> Obj {
    Obj::Tensor(TensorSpec {
        dtype,
        shape: shape.to_vec(),
        data: TensorData::Zeros,
    })
}

/// A tensor holding `bytes` (raw little-endian elements).
pub fn tensor_with(dtype: Dtype, shape: &[u64], bytes: Vec<u8>) -> Obj {
    Obj::Tensor(TensorSpec {
        dtype,
        shape: shape.to_vec(),
        data: TensorData::Bytes(bytes),
    })
}

/// A `state_dict`-style `OrderedDict` of zero-filled tensors, in the order given.
pub fn state_dict(tensors: &[(&str, Dtype, &[u64])]) -> Obj {
    Obj::OrderedDict(
        tensors
            .iter()
            .map(|(name, dtype, shape)| ((*name).to_owned(), tensor(*dtype, shape)))
            .collect(),
    )
}

/// A Lightning-style checkpoint, `{"state_dict": OrderedDict(...), "global_step": step}`, as
/// original Stable Diffusion `.ckpt` files hold.
pub fn checkpoint(tensors: &[(&str, Dtype, &[u64])], global_step: i64) -> Obj {
    Obj::Dict(vec![
        ("state_dict".to_owned(), state_dict(tensors)),
        ("global_step".to_owned(), Obj::Int(global_step)),
    ])
}

// ----- pickles, opcode by opcode -----

/// A pickle being written opcode by opcode.
#[derive(Debug, Default)]
pub struct PickleWriter {
    buf: Vec<u8>,
}

impl PickleWriter {
    /// Starts a pickle with `PROTO protocol` (use 2, as `torch.save`; 0 writes nothing).
    pub fn new(protocol: u8) -> Self {
        let mut w = Self::default();
        if protocol >= 2 {
            w.buf.extend([0x80, protocol]);
        }
        w
    }

    /// Appends raw bytes (an opcode and its operands).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// `GLOBAL module name`.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.buf.push(b'c');
        self.buf
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }

    /// `MARK`.
    pub fn mark(&mut self) -> &mut Self {
        self.raw(b"(")
    }

    /// A `str` as `BINUNICODE`.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.buf.push(b'X');
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.raw(s.as_bytes())
    }

    /// An `int` with the shortest opcode (`BININT1`, `BININT2`, `BININT`, `LONG1`).
    pub fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.raw(&[b'K', v as u8])
        } else if (0..65536).contains(&v) {
            self.buf.push(b'M');
            self.raw(&(v as u16).to_le_bytes())
        } else if i32::try_from(v).is_ok() {
            self.buf.push(b'J');
            self.raw(&(v as i32).to_le_bytes())
        } else {
            self.raw(&[0x8a, 8]);
            self.raw(&v.to_le_bytes())
        }
    }

    /// A `float` as `BINFLOAT`.
    pub fn float(&mut self, v: f64) -> &mut Self {
        self.buf.push(b'G');
        self.raw(&v.to_be_bytes())
    }

    /// `NEWTRUE`/`NEWFALSE`.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.raw(if v { &[0x88] } else { &[0x89] })
    }

    /// `NONE`.
    pub fn none(&mut self) -> &mut Self {
        self.raw(b"N")
    }

    /// `TUPLE` (closing a `MARK`).
    pub fn tuple(&mut self) -> &mut Self {
        self.raw(b"t")
    }

    /// `EMPTY_TUPLE`.
    pub fn empty_tuple(&mut self) -> &mut Self {
        self.raw(b")")
    }

    /// `REDUCE`: call the callable below the argument tuple (never done by danlu).
    pub fn reduce(&mut self) -> &mut Self {
        self.raw(b"R")
    }

    /// `BINPERSID`.
    pub fn binpersid(&mut self) -> &mut Self {
        self.raw(b"Q")
    }

    /// `STOP`, returning the pickle's bytes.
    pub fn stop(&mut self) -> Vec<u8> {
        self.buf.push(b'.');
        std::mem::take(&mut self.buf)
    }

    fn obj(&mut self, o: &Obj, storages: &mut Vec<TensorSpec>, legacy: bool) {
        match o {
            Obj::None => {
                self.none();
            }
            Obj::Bool(b) => {
                self.bool(*b);
            }
            Obj::Int(i) => {
                self.int(*i);
            }
            Obj::Float(f) => {
                self.float(*f);
            }
            Obj::Str(s) => {
                self.str(s);
            }
            Obj::List(items) => {
                self.raw(b"]").mark();
                for i in items {
                    self.obj(i, storages, legacy);
                }
                self.raw(b"e");
            }
            Obj::Tuple(items) => {
                self.mark();
                for i in items {
                    self.obj(i, storages, legacy);
                }
                self.tuple();
            }
            Obj::Dict(items) | Obj::OrderedDict(items) => {
                if matches!(o, Obj::OrderedDict(_)) {
                    self.global("collections", "OrderedDict")
                        .empty_tuple()
                        .reduce();
                } else {
                    self.raw(b"}");
                }
                self.mark();
                for (k, v) in items {
                    self.str(k);
                    self.obj(v, storages, legacy);
                }
                self.raw(b"u");
            }
            Obj::IntDict(items) => {
                self.raw(b"}").mark();
                for (k, v) in items {
                    self.int(*k);
                    self.obj(v, storages, legacy);
                }
                self.raw(b"u");
            }
            Obj::Tensor(t) => self.tensor(t, storages, legacy),
            Obj::Parameter(t) => {
                self.global("torch._utils", "_rebuild_parameter").mark();
                self.tensor(t, storages, legacy);
                self.bool(true);
                self.global("collections", "OrderedDict")
                    .empty_tuple()
                    .reduce();
                self.tuple().reduce();
            }
        }
    }

    /// `_rebuild_tensor_v2((storage persistent id), 0, size, stride, False, OrderedDict())`, or
    /// `_rebuild_tensor_v3(..., dtype)` over an `UntypedStorage` for dtypes that have no typed
    /// storage class (PyTorch `torch/_tensor.py` `_reduce_ex_internal`).
    fn tensor(&mut self, t: &TensorSpec, storages: &mut Vec<TensorSpec>, legacy: bool) {
        let key = storages.len().to_string();
        let typed = storage_class(t.dtype);
        let v3 = typed.is_none();
        self.global(
            "torch._utils",
            if v3 {
                "_rebuild_tensor_v3"
            } else {
                "_rebuild_tensor_v2"
            },
        );
        self.mark();
        self.mark().str("storage");
        match typed {
            Some(class) => self.global("torch", class),
            None => self.global("torch.storage", "UntypedStorage"),
        };
        self.str(&key).str("cpu");
        self.int(if v3 { t.byte_len() } else { t.numel() } as i64);
        if legacy {
            self.none();
        }
        self.tuple().binpersid();
        self.int(0);
        self.mark();
        for d in &t.shape {
            self.int(*d as i64);
        }
        self.tuple().mark();
        for s in t.strides() {
            self.int(s as i64);
        }
        self.tuple().bool(false);
        self.global("collections", "OrderedDict")
            .empty_tuple()
            .reduce();
        if v3 {
            self.global("torch", torch_dtype_name(t.dtype));
        }
        self.tuple().reduce();
        storages.push(t.clone());
    }
}

/// The typed storage class PyTorch pickles for a dtype (PyTorch `torch/storage.py`
/// `_dtype_to_storage_type_map`); `None` for dtypes saved as untyped storage.
fn storage_class(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::F64 => "DoubleStorage",
        Dtype::F32 => "FloatStorage",
        Dtype::F16 => "HalfStorage",
        Dtype::Bf16 => "BFloat16Storage",
        Dtype::I64 => "LongStorage",
        Dtype::I32 => "IntStorage",
        Dtype::I16 => "ShortStorage",
        Dtype::I8 => "CharStorage",
        Dtype::U8 => "ByteStorage",
        Dtype::Bool => "BoolStorage",
        Dtype::C64 => "ComplexFloatStorage",
        _ => return None,
    })
}

fn torch_dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F8E4m3 => "float8_e4m3fn",
        Dtype::F8E5m2 => "float8_e5m2",
        Dtype::U16 => "uint16",
        Dtype::U32 => "uint32",
        Dtype::U64 => "uint64",
        _ => "uint8",
    }
}

/// The object pickle of `root` (protocol 2, as `torch.save` writes it) and its tensors in
/// storage-key order (`"0"`, `"1"`, ...).
pub fn data_pickle(root: &Obj) -> (Vec<u8>, Vec<TensorSpec>) {
    let mut storages = Vec::new();
    let mut w = PickleWriter::new(2);
    w.obj(root, &mut storages, false);
    (w.stop(), storages)
}

/// A protocol-2 pickle whose loading would run `os.system(command)`:
/// `GLOBAL os system`, `(command,)`, `REDUCE`.
pub fn os_system_pickle(command: &str) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.global("os", "system")
        .mark()
        .str(command)
        .tuple()
        .reduce();
    w.stop()
}

/// A protocol-4 pickle that reaches `builtins.eval(expr)` through `STACK_GLOBAL` with the
/// names taken from the memo, which a scanner that only looks at `GLOBAL` opcodes misses.
pub fn stack_global_eval_pickle(expr: &str) -> Vec<u8> {
    let mut w = PickleWriter::new(4);
    w.raw(&[0x8c, 8]).raw(b"builtins").raw(&[0x94]);
    w.raw(&[0x8c, 4]).raw(b"eval").raw(&[0x94]);
    w.raw(b"h\x00h\x01").raw(&[0x93]);
    w.str(expr).raw(&[0x85]).reduce();
    w.stop()
}

/// A pickle nesting `depth` lists inside each other (`[[[...]]]`), a recursion bomb.
pub fn nested_lists_pickle(depth: usize) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    for _ in 0..depth {
        w.raw(b"]");
    }
    for _ in 1..depth {
        w.raw(b"a");
    }
    w.stop()
}

/// A pickle storing `n` memo entries (`LONG_BINPUT 0..n`), a memory bomb.
pub fn memo_flood_pickle(n: u32) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.none();
    for i in 0..n {
        w.raw(b"r").raw(&i.to_le_bytes());
    }
    w.stop()
}

/// A "billion laughs" pickle: each of `levels` lists holds ten references to the previous
/// one, so expanding it would build 10^levels elements.
pub fn billion_laughs_pickle(levels: u8) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.raw(b"]").raw(&[b'q', 0]);
    for l in 1..=levels {
        w.raw(b"]").mark();
        for _ in 0..10 {
            w.raw(&[b'h', l - 1]);
        }
        w.raw(b"e").raw(&[b'q', l]);
    }
    w.stop()
}

/// A torch archive's object pickle holding one float tensor whose shape has `dims` dimensions
/// of `size` elements each (`size^dims` elements in all) over a 1-element storage.
pub fn huge_shape_pickle(size: i64, dims: usize) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.raw(b"}").mark().str("w");
    w.global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark()
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(1)
        .tuple()
        .binpersid();
    w.int(0).mark();
    for _ in 0..dims {
        w.int(size);
    }
    w.tuple().mark();
    for _ in 0..dims {
        w.int(0);
    }
    w.tuple().bool(false);
    w.global("collections", "OrderedDict")
        .empty_tuple()
        .reduce();
    w.tuple().reduce().raw(b"u");
    w.stop()
}

// ----- containers -----

/// Bitwise CRC-32 (ISO-HDLC, as zip uses); fixtures are small.
fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    crc = !crc;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// CRC-32 of `n` zero bytes appended to data whose CRC is `crc`, in O(log n) (zlib's
/// `crc32_combine` method: the effect of one zero bit is a linear map over GF(2)).
fn crc32_zeros(crc: u32, n: u64) -> u32 {
    fn times(mat: &[u32; 32], mut vec: u32) -> u32 {
        let mut sum = 0;
        let mut i = 0;
        while vec != 0 {
            if vec & 1 != 0 {
                sum ^= mat[i];
            }
            vec >>= 1;
            i += 1;
        }
        sum
    }
    fn square(mat: &[u32; 32]) -> [u32; 32] {
        let mut out = [0u32; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = times(mat, mat[i]);
        }
        out
    }
    if n == 0 {
        return crc;
    }
    // Operator for one zero bit on the register (pre/post inversion cancels out for zeros
    // appended after the final inversion is undone).
    let mut odd = [0u32; 32];
    odd[0] = 0xEDB8_8320;
    let mut row = 1u32;
    for o in odd.iter_mut().skip(1) {
        *o = row;
        row <<= 1;
    }
    let mut even = square(&odd); // two zero bits
    odd = square(&even); // four zero bits
    let mut reg = !crc;
    let mut len = n;
    loop {
        even = square(&odd);
        if len & 1 != 0 {
            reg = times(&even, reg);
        }
        len >>= 1;
        if len == 0 {
            break;
        }
        odd = square(&even);
        if len & 1 != 0 {
            reg = times(&odd, reg);
        }
        len >>= 1;
        if len == 0 {
            break;
        }
    }
    !reg
}

struct Entry {
    name: String,
    offset: u64,
    size: u64,
    crc: u32,
}

/// Writes one stored member with its data 64-byte aligned (padding in an extra field, id
/// `FB`, as PyTorch's `PyTorchStreamWriter` does).
fn member<W: Write + Seek>(
    w: &mut W,
    name: &str,
    data: Option<&[u8]>,
    zeros: u64,
) -> io::Result<Entry> {
    let offset = w.stream_position()?;
    let (size, crc) = match data {
        Some(d) => (d.len() as u64, crc32_update(0, d)),
        None => (zeros, crc32_zeros(0, zeros)),
    };
    let base = offset + 30 + name.len() as u64 + 4;
    let pad = (64 - base % 64) % 64;
    let mut h = Vec::with_capacity(64 + name.len());
    h.extend(0x0403_4b50u32.to_le_bytes());
    h.extend(20u16.to_le_bytes()); // version needed
    h.extend(0u16.to_le_bytes()); // flags
    h.extend(0u16.to_le_bytes()); // stored
    h.extend([0u8; 4]); // time, date
    h.extend(crc.to_le_bytes());
    h.extend((size as u32).to_le_bytes());
    h.extend((size as u32).to_le_bytes());
    h.extend((name.len() as u16).to_le_bytes());
    h.extend(((4 + pad) as u16).to_le_bytes());
    h.extend(name.as_bytes());
    h.extend(b"FB");
    h.extend((pad as u16).to_le_bytes());
    h.extend(std::iter::repeat_n(b'Z', pad as usize));
    w.write_all(&h)?;
    match data {
        Some(d) => w.write_all(d)?,
        None => {
            w.seek(SeekFrom::Current(zeros as i64))?;
        }
    }
    Ok(Entry {
        name: name.to_owned(),
        offset,
        size,
        crc,
    })
}

/// Writes the central directory and its end records; with `zip64`, local header offsets and
/// the end record go through ZIP64 records (as PyTorch writes archives over 4 GiB).
fn central<W: Write + Seek>(w: &mut W, entries: &[Entry], zip64: bool) -> io::Result<()> {
    let start = w.stream_position()?;
    let mut cd = Vec::new();
    for e in entries {
        cd.extend(0x0201_4b50u32.to_le_bytes());
        cd.extend(20u16.to_le_bytes()); // made by
        cd.extend(20u16.to_le_bytes()); // needed
        cd.extend(0u16.to_le_bytes()); // flags
        cd.extend(0u16.to_le_bytes()); // stored
        cd.extend([0u8; 4]);
        cd.extend(e.crc.to_le_bytes());
        cd.extend((e.size as u32).to_le_bytes());
        cd.extend((e.size as u32).to_le_bytes());
        cd.extend((e.name.len() as u16).to_le_bytes());
        cd.extend((if zip64 { 12u16 } else { 0 }).to_le_bytes()); // extra length
        cd.extend([0u8; 2 + 2 + 2 + 4]); // comment, disk, attrs
        let offset = if zip64 { u32::MAX } else { e.offset as u32 };
        cd.extend(offset.to_le_bytes());
        cd.extend(e.name.as_bytes());
        if zip64 {
            cd.extend(1u16.to_le_bytes());
            cd.extend(8u16.to_le_bytes());
            cd.extend(e.offset.to_le_bytes());
        }
    }
    let cd_size = cd.len() as u64;
    if zip64 {
        let record = start + cd_size;
        cd.extend(0x0606_4b50u32.to_le_bytes());
        cd.extend(44u64.to_le_bytes());
        cd.extend(45u16.to_le_bytes());
        cd.extend(45u16.to_le_bytes());
        cd.extend([0u8; 8]); // disk numbers
        cd.extend((entries.len() as u64).to_le_bytes());
        cd.extend((entries.len() as u64).to_le_bytes());
        cd.extend(cd_size.to_le_bytes());
        cd.extend(start.to_le_bytes());
        cd.extend(0x0706_4b50u32.to_le_bytes());
        cd.extend(0u32.to_le_bytes());
        cd.extend(record.to_le_bytes());
        cd.extend(1u32.to_le_bytes());
    }
    let (count, size, offset) = if zip64 {
        (u16::MAX, u32::MAX, u32::MAX)
    } else {
        (entries.len() as u16, cd_size as u32, start as u32)
    };
    cd.extend(0x0605_4b50u32.to_le_bytes());
    cd.extend([0u8; 4]); // disk numbers
    cd.extend(count.to_le_bytes());
    cd.extend(count.to_le_bytes());
    cd.extend(size.to_le_bytes());
    cd.extend(offset.to_le_bytes());
    cd.extend(0u16.to_le_bytes()); // comment length
    w.write_all(&cd)
}

fn write_zip<W: Write + Seek>(w: &mut W, root: &Obj, archive: &str, zip64: bool) -> io::Result<()> {
    let (pickle, storages) = data_pickle(root);
    let mut entries = vec![member(w, &format!("{archive}/data.pkl"), Some(&pickle), 0)?];
    entries.push(member(
        w,
        &format!("{archive}/byteorder"),
        Some(b"little"),
        0,
    )?);
    for (i, t) in storages.iter().enumerate() {
        let name = format!("{archive}/data/{i}");
        entries.push(match &t.data {
            TensorData::Bytes(b) => member(w, &name, Some(b), 0)?,
            TensorData::Zeros => member(w, &name, None, t.byte_len())?,
        });
    }
    entries.push(member(w, &format!("{archive}/version"), Some(b"3\n"), 0)?);
    central(w, &entries, zip64)
}

fn write_legacy<W: Write + Seek>(w: &mut W, root: &Obj) -> io::Result<()> {
    // Magic number 0x1950a86a20f9469cfc6c as LONG1, protocol version 1001, system info.
    let mut p = PickleWriter::new(2);
    p.raw(&[
        0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
    ]);
    w.write_all(&p.stop())?;
    w.write_all(&PickleWriter::new(2).int(1001).stop())?;
    let mut p = PickleWriter::new(2);
    p.raw(b"}").mark().str("protocol_version").int(1001);
    p.str("little_endian").bool(true).str("type_sizes");
    p.raw(b"}")
        .mark()
        .str("short")
        .int(2)
        .str("int")
        .int(4)
        .str("long")
        .int(4);
    p.raw(b"u").raw(b"u");
    w.write_all(&p.stop())?;
    let mut storages = Vec::new();
    let mut p = PickleWriter::new(2);
    p.obj(root, &mut storages, true);
    if let Some(t) = storages.iter().find(|t| storage_class(t.dtype).is_none()) {
        return Err(io::Error::other(format!(
            "{:?} tensors did not exist when PyTorch wrote legacy files",
            t.dtype
        )));
    }
    w.write_all(&p.stop())?;
    // Storage keys, sorted as strings (PyTorch sorts `serialized_storages.keys()`).
    let mut keys: Vec<String> = (0..storages.len()).map(|i| i.to_string()).collect();
    keys.sort();
    let mut p = PickleWriter::new(2);
    p.raw(b"]").mark();
    for k in &keys {
        p.str(k);
    }
    p.raw(b"e");
    w.write_all(&p.stop())?;
    for k in &keys {
        let t = k
            .parse::<usize>()
            .ok()
            .and_then(|i| storages.get(i))
            .ok_or_else(|| io::Error::other("storage key out of range"))?;
        let numel = if storage_class(t.dtype).is_some() {
            t.numel()
        } else {
            t.byte_len()
        };
        w.write_all(&numel.to_le_bytes())?;
        match &t.data {
            TensorData::Bytes(b) => w.write_all(b)?,
            TensorData::Zeros => {
                w.seek(SeekFrom::Current(t.byte_len() as i64))?;
            }
        }
    }
    // A trailing hole must still count as file length.
    let end = w.stream_position()?;
    w.seek(SeekFrom::End(0))?;
    let len = w.stream_position()?;
    if len < end {
        w.seek(SeekFrom::Start(end - 1))?;
        w.write_all(&[0])?;
    }
    Ok(())
}

/// `root` as a PyTorch zip archive (archive folder `archive`), in memory.
pub fn torch_zip(root: &Obj) -> Vec<u8> {
    torch_zip_named(root, "archive")
}

/// `root` as a PyTorch zip archive whose members live under `archive/` (PyTorch names it after
/// the file: `model/data.pkl` for `model.pt`).
pub fn torch_zip_named(root: &Obj, archive: &str) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    // Writing to memory cannot fail.
    let _ = write_zip(&mut c, root, archive, false);
    c.into_inner()
}

/// `root` as a PyTorch zip archive whose central directory goes through ZIP64 records, as
/// PyTorch writes archives over 4 GiB.
pub fn torch_zip64(root: &Obj) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    let _ = write_zip(&mut c, root, "archive", true);
    c.into_inner()
}

/// `root` in PyTorch's legacy (pre-1.6) format, in memory.
///
/// # Errors
/// When `root` holds a tensor of a dtype that has no typed storage class (float8, uint16...),
/// which the legacy format cannot express.
pub fn torch_legacy(root: &Obj) -> io::Result<Vec<u8>> {
    let mut c = Cursor::new(Vec::new());
    write_legacy(&mut c, root)?;
    Ok(c.into_inner())
}

fn create(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Writes `root` as a PyTorch zip archive at `path`; zero-filled tensors become holes of a
/// sparse file.
///
/// # Errors
/// When the file cannot be written.
pub fn write_torch_zip(path: impl AsRef<Path>, root: &Obj) -> io::Result<()> {
    let mut f = io::BufWriter::new(create(path.as_ref())?);
    write_zip(&mut f, root, "archive", false)?;
    f.flush()
}

/// Writes `root` in PyTorch's legacy format at `path`; zero-filled tensors become holes.
///
/// # Errors
/// When the file cannot be written.
pub fn write_torch_legacy(path: impl AsRef<Path>, root: &Obj) -> io::Result<()> {
    let mut f = io::BufWriter::new(create(path.as_ref())?);
    write_legacy(&mut f, root)?;
    f.flush()
}

/// Writes bytes made by this module to `path`.
///
/// # Errors
/// When the file cannot be written.
pub fn write(path: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    create(path.as_ref())?.write_all(bytes)
}

/// A torch zip archive with the given members (name, content) and nothing else, stored; for
/// archives that break the rules (extra pickles, missing storages, odd names).
pub fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    let mut entries = Vec::new();
    for (name, data) in members {
        if let Ok(e) = member(&mut c, name, Some(data), 0) {
            entries.push(e);
        }
    }
    let _ = central(&mut c, &entries, false);
    c.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_zeros_matches_bytewise_crc() {
        for n in [0u64, 1, 2, 3, 7, 64, 1000, 4097] {
            let z = vec![0u8; n as usize];
            assert_eq!(crc32_zeros(0, n), crc32_update(0, &z), "{n}");
        }
        // Known value: CRC-32 of "123456789" is 0xCBF43926.
        assert_eq!(crc32_update(0, b"123456789"), 0xCBF4_3926);
    }
}
