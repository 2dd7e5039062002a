//! The symbolic values a pickle describes: plain Python data, and inert records of everything
//! that Python would have imported or called.

use danlu_types::Dtype;
use serde::Serialize;

/// One value of an unpickled object graph, built without importing or calling anything.
///
/// Plain data (numbers, strings, containers) comes out as itself. Whatever Python would have
/// imported is a [`Value::Global`], and whatever it would have called is a [`Value::Call`]
/// naming the callable and its arguments. PyTorch tensors and NumPy arrays are recognised and
/// described ([`Value::Tensor`], [`Value::Array`]) instead of being rebuilt.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Value {
    /// Python `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A larger integer: decimal text when it fits in 128 bits, otherwise `0x`-prefixed hex of
    /// its two's complement bytes (big-endian).
    BigInt(String),
    /// A float.
    Float(f64),
    /// A `str` (or a protocol-0 `STRING` decoded as Latin-1).
    Str(String),
    /// A `bytes` object.
    Bytes(Vec<u8>),
    /// A `bytearray`.
    ByteArray(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict or `collections.OrderedDict`, items in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A set.
    Set(Vec<Value>),
    /// A frozenset.
    FrozenSet(Vec<Value>),
    /// A global Python would have imported (`GLOBAL`, `STACK_GLOBAL`, `INST`, `OBJ`).
    Global {
        /// The module, e.g. `torch._utils`.
        module: String,
        /// The attribute, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// A call Python would have made (`REDUCE`, `NEWOBJ`, `NEWOBJ_EX`, `INST`, `OBJ`), never made.
    Call(Box<Call>),
    /// A persistent id that is not a PyTorch storage.
    PersistentId(Box<Value>),
    /// A PyTorch storage met outside a tensor.
    Storage(Storage),
    /// A PyTorch tensor or parameter, described.
    Tensor(Tensor),
    /// A NumPy array, described (`numpy.core.multiarray._reconstruct` plus its state).
    Array(Array),
    /// A NumPy scalar (`numpy.core.multiarray.scalar(dtype, bytes)`).
    Scalar {
        /// NumPy type string, e.g. `<f8`.
        dtype: String,
        /// The raw little- or big-endian bytes.
        bytes: Vec<u8>,
    },
    /// A NumPy `dtype` object, e.g. `<f4`.
    NumpyDtype(String),
    /// An object from the `copyreg` extension registry (`EXT1`, `EXT2`, `EXT4`), by code.
    Extension(u32),
    /// An out-of-band buffer (`NEXT_BUFFER`), which a file cannot carry.
    Buffer,
    /// A reference back to a container that encloses it (a cycle), or a shared value whose
    /// expansion was cut off.
    Recursive,
}

impl Value {
    /// The string, when this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, when this is an `int` that fits in 64 bits (or a bool, as in Python).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items, when this is a tuple or a list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A call that Python would have made while unpickling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    /// What would have been called (usually a [`Value::Global`]).
    pub callable: Value,
    /// The positional arguments (a tuple).
    pub args: Value,
    /// Keyword arguments (`NEWOBJ_EX`).
    pub kwargs: Option<Value>,
    /// The state `BUILD` would have passed to `__setstate__`.
    pub state: Option<Value>,
}

/// A PyTorch storage named by a persistent id:
/// `('storage', storage_type, key, location, numel[, view_metadata])`
/// (PyTorch `torch/serialization.py`, `persistent_id` in `_save` and `_legacy_save`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// The key: the member `data/<key>` of a zip archive, or the storage's id in a legacy file.
    pub key: String,
    /// The storage class, e.g. `torch.FloatStorage` or `torch.storage.UntypedStorage`.
    pub storage_type: String,
    /// Element type given by a typed storage class; `None` for untyped storages (bytes).
    pub dtype: Option<TorchDtype>,
    /// Device the storage was saved from (`cpu`, `cuda:0`).
    pub location: String,
    /// Size as written: elements for typed storages, bytes for `UntypedStorage`.
    pub numel: u64,
    /// Legacy view metadata `(root_key, offset, size)`: this storage is a view of the storage
    /// `root_key`, starting `offset` elements in.
    pub view: Option<(String, u64, u64)>,
}

impl Storage {
    /// Size of the storage in bytes, when its element size is known.
    pub fn byte_len(&self) -> Option<u64> {
        match &self.dtype {
            None => Some(self.numel),
            Some(d) => d.size.and_then(|s| self.numel.checked_mul(s)),
        }
    }
}

/// A PyTorch element type, by its torch name (`float16`) with its danlu equivalent when one
/// exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TorchDtype {
    /// Torch's name without the `torch.` prefix, e.g. `float16`, `bfloat16`, `qint8`.
    pub name: String,
    /// The danlu dtype, `None` for types danlu does not model (complex128, quantized types).
    pub dtype: Option<Dtype>,
    /// Bytes per element, when known.
    pub size: Option<u64>,
}

impl TorchDtype {
    /// The element type of a typed storage class name (`FloatStorage`, ...), as listed in
    /// PyTorch `torch/storage.py` `_dtype_to_storage_type_map`.
    pub fn from_storage_class(class: &str) -> Option<Self> {
        let name = match class {
            "DoubleStorage" => "float64",
            "FloatStorage" => "float32",
            "HalfStorage" => "float16",
            "LongStorage" => "int64",
            "IntStorage" => "int32",
            "ShortStorage" => "int16",
            "CharStorage" => "int8",
            "ByteStorage" => "uint8",
            "BoolStorage" => "bool",
            "BFloat16Storage" => "bfloat16",
            "ComplexDoubleStorage" => "complex128",
            "ComplexFloatStorage" => "complex64",
            "QInt8Storage" => "qint8",
            "QInt32Storage" => "qint32",
            "QUInt8Storage" => "quint8",
            "QUInt4x2Storage" => "quint4x2",
            "QUInt2x4Storage" => "quint2x4",
            _ => return None,
        };
        Self::from_name(name)
    }

    /// The element type of a `torch.<name>` dtype global (`float16`, `float8_e4m3fn`, `half`...).
    pub fn from_name(name: &str) -> Option<Self> {
        let (canonical, dtype, size) = match name {
            "float64" | "double" => ("float64", Some(Dtype::F64), 8),
            "float32" | "float" => ("float32", Some(Dtype::F32), 4),
            "float16" | "half" => ("float16", Some(Dtype::F16), 2),
            "bfloat16" => ("bfloat16", Some(Dtype::Bf16), 2),
            "float8_e4m3fn" => ("float8_e4m3fn", Some(Dtype::F8E4m3), 1),
            "float8_e5m2" => ("float8_e5m2", Some(Dtype::F8E5m2), 1),
            "float8_e4m3fnuz" | "float8_e5m2fnuz" | "float8_e8m0fnu" => (name, None, 1),
            "int64" | "long" => ("int64", Some(Dtype::I64), 8),
            "int32" | "int" => ("int32", Some(Dtype::I32), 4),
            "int16" | "short" => ("int16", Some(Dtype::I16), 2),
            "int8" => ("int8", Some(Dtype::I8), 1),
            "uint64" => ("uint64", Some(Dtype::U64), 8),
            "uint32" => ("uint32", Some(Dtype::U32), 4),
            "uint16" => ("uint16", Some(Dtype::U16), 2),
            "uint8" => ("uint8", Some(Dtype::U8), 1),
            "bool" => ("bool", Some(Dtype::Bool), 1),
            "complex64" | "cfloat" => ("complex64", Some(Dtype::C64), 8),
            "complex128" | "cdouble" => ("complex128", None, 16),
            "qint8" | "quint8" | "quint4x2" | "quint2x4" => (name, None, 1),
            "qint32" => ("qint32", None, 4),
            _ => return None,
        };
        Some(Self {
            name: canonical.to_owned(),
            dtype,
            size: Some(size),
        })
    }
}

/// A PyTorch tensor rebuilt symbolically from `torch._utils._rebuild_tensor_v2` (or
/// `_rebuild_tensor`, `_rebuild_tensor_v3`, `_rebuild_parameter`, ...; PyTorch
/// `torch/_utils.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tensor {
    /// The storage holding the elements.
    pub storage: Storage,
    /// Element type (from the storage class, or the explicit dtype of `_rebuild_tensor_v3`).
    pub dtype: TorchDtype,
    /// Offset of the first element in the storage, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
    /// `requires_grad` as saved.
    pub requires_grad: bool,
    /// Whether it was saved as an `nn.Parameter`.
    pub parameter: bool,
}

impl Tensor {
    /// Number of elements (product of the shape).
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Whether the strides are those of a contiguous row-major tensor of this shape
    /// (dimensions of size 1 may have any stride, as in PyTorch).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1u64;
        for (&dim, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(dim);
        }
        true
    }

    /// Number of elements from the first to one past the last element addressed, following the
    /// strides; 0 for an empty tensor.
    pub fn span(&self) -> Option<u64> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        let mut last = 0u64;
        for (&dim, &stride) in self.shape.iter().zip(&self.stride) {
            last = last.checked_add((dim - 1).checked_mul(stride)?)?;
        }
        last.checked_add(1)
    }
}

/// A NumPy array described from `numpy.core.multiarray._reconstruct` and its `BUILD` state
/// `(version, shape, dtype, is_fortran, data)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Array {
    /// Shape.
    pub shape: Vec<u64>,
    /// NumPy type string, e.g. `<f4`; `None` when the state did not give one.
    pub dtype: Option<String>,
    /// Fortran (column-major) order.
    pub fortran: bool,
    /// Bytes of raw data in the pickle (0 for object arrays).
    pub data_len: u64,
    /// Whether the data is a list of Python objects (object dtype).
    pub objects: bool,
}
