//! The pickle virtual machine: every opcode of Python's `pickletools` (protocols 0 to 5),
//! interpreted over an arena of symbolic nodes. Nothing is imported or called: globals become
//! names, calls become records, and the known PyTorch and NumPy rebuild functions become tensor
//! and array descriptions.

use crate::value::{Array, Call, Storage, Tensor, TorchDtype, Value};
use crate::{Error, Limits, Result};
use std::collections::{BTreeSet, HashMap};

type Id = usize;

/// A node of the object graph. Containers hold ids, so sharing (memo, `DUP`) costs nothing and
/// mutation after memoization (`EMPTY_DICT`, `BINPUT`, `SETITEMS`) is seen by every holder, as
/// in Python.
#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i64),
    BigInt(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    ByteArray(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Set(Vec<Id>),
    FrozenSet(Vec<Id>),
    Global {
        module: String,
        name: String,
    },
    Call {
        callable: Id,
        args: Id,
        kwargs: Option<Id>,
        state: Option<Id>,
    },
    PersistentId(Id),
    Storage(Storage),
    Tensor(Tensor),
    Array(Array),
    Scalar {
        dtype: String,
        bytes: Vec<u8>,
    },
    NumpyDtype(String),
    Extension(u32),
    Buffer,
}

/// What one run of the machine produced.
pub(crate) struct Outcome {
    /// The root value, or why reading stopped.
    pub(crate) value: Result<Value>,
    /// Every global met, as `module.name`.
    pub(crate) globals: BTreeSet<String>,
    /// Problems met besides globals.
    pub(crate) findings: Vec<String>,
    /// Offset one past the `STOP` opcode (or where reading stopped).
    pub(crate) end: usize,
}

pub(crate) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    nodes: Vec<Node>,
    elements: u64,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
    globals: BTreeSet<String>,
    findings: Vec<String>,
    op_offset: usize,
    op_name: &'static str,
    /// Attributes set on imported objects by `BUILD` (a module's `__dict__` rewritten, as in
    /// the `sys.modules` override exploits), by dotted object path then attribute name; later
    /// globals naming them resolve to the value set.
    overrides: HashMap<String, Vec<(String, Id)>>,
}

impl<'a> Machine<'a> {
    pub(crate) fn new(data: &'a [u8], start: usize, limits: &'a Limits) -> Self {
        Self {
            data,
            pos: start,
            limits,
            nodes: Vec::new(),
            elements: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            globals: BTreeSet::new(),
            findings: Vec::new(),
            op_offset: start,
            op_name: "start",
            overrides: HashMap::new(),
        }
    }

    pub(crate) fn run(mut self) -> Outcome {
        let value = self.execute().and_then(|root| self.to_value(root));
        Outcome {
            value,
            globals: self.globals,
            findings: self.findings,
            end: self.pos,
        }
    }

    // ----- errors -----

    fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::Malformed {
            offset: self.op_offset as u64,
            opcode: self.op_name,
            reason: reason.into(),
        }
    }

    fn limit(&self, limit: &'static str, max: u64) -> Error {
        Error::Limit {
            offset: self.op_offset as u64,
            limit,
            max,
        }
    }

    // ----- input -----

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= data.len());
        match end {
            Some(end) => {
                let s = &data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::Truncated {
                offset: self.op_offset as u64,
                what,
            }),
        }
    }

    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take_array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take_array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take_array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array(what)?))
    }

    /// A length operand: it must fit in what is left of the input, so that no declared length
    /// makes us allocate more than the input's size.
    fn len_operand(&mut self, len: u64, what: &'static str) -> Result<usize> {
        let left = (self.data.len() - self.pos) as u64;
        if len > left {
            return Err(Error::Truncated {
                offset: self.op_offset as u64,
                what,
            });
        }
        Ok(len as usize)
    }

    fn line(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(Error::Truncated {
                offset: self.op_offset as u64,
                what,
            }),
        }
    }

    fn text_line(&mut self, what: &'static str) -> Result<String> {
        let l = self.line(what)?;
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        std::str::from_utf8(l)
            .map(str::to_owned)
            .map_err(|_| self.malformed(format!("{what} is not UTF-8 text")))
    }

    // ----- arena and stack -----

    fn alloc(&mut self, node: Node, items: usize) -> Result<Id> {
        self.charge(1 + items as u64)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn charge(&mut self, n: u64) -> Result<()> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > self.limits.max_elements {
            return Err(self.limit("total elements", self.limits.max_elements));
        }
        Ok(())
    }

    fn push_id(&mut self, id: Id) -> Result<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(self.limit("stack size", self.limits.max_stack as u64));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<()> {
        let items = match &node {
            Node::Tuple(v) | Node::List(v) | Node::Set(v) | Node::FrozenSet(v) => v.len(),
            Node::Dict(v) => v.len() * 2,
            _ => 0,
        };
        let id = self.alloc(node, items)?;
        self.push_id(id)
    }

    fn pop(&mut self) -> Result<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed("stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.malformed("no MARK on the stack"));
        };
        if mark > self.stack.len() {
            return Err(self.malformed("MARK above the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn node(&self, id: Id) -> &Node {
        // Ids are only ever created by `alloc`, so they are always in range.
        &self.nodes[id]
    }

    fn memo_put(&mut self, key: u64) -> Result<()> {
        let top = self.top()?;
        if !self.memo.contains_key(&key) && self.memo.len() >= self.limits.max_memo {
            return Err(self.limit("memo entries", self.limits.max_memo as u64));
        }
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<()> {
        match self.memo.get(&key) {
            Some(&id) => self.push_id(id),
            None => Err(self.malformed(format!("memo key {key} was never stored"))),
        }
    }

    fn decimal_key(&self, line: &[u8]) -> Result<u64> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| self.malformed("memo key is not a decimal number"))
    }

    fn str_of(&self, id: Id) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int_of(&self, id: Id) -> Option<i64> {
        match self.node(id) {
            Node::Int(i) => Some(*i),
            Node::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn seq_of(&self, id: Id) -> Option<&[Id]> {
        match self.node(id) {
            Node::Tuple(v) | Node::List(v) => Some(v),
            _ => None,
        }
    }

    fn global_of(&self, id: Id) -> Option<(&str, &str)> {
        match self.node(id) {
            Node::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    fn push_global(&mut self, module: String, name: String) -> Result<Id> {
        self.globals.insert(format!("{module}.{name}"));
        let overridden = self
            .overrides
            .get(&module)
            .and_then(|attrs| attrs.iter().rev().find(|(a, _)| *a == name))
            .map(|&(_, id)| id);
        match overridden {
            Some(id) => Ok(id),
            None => self.alloc(Node::Global { module, name }, 0),
        }
    }

    // ----- the interpreter -----

    fn execute(&mut self) -> Result<Id> {
        if self.pos >= self.data.len() {
            return Err(Error::Empty);
        }
        loop {
            self.op_offset = self.pos;
            self.op_name = "opcode";
            let op = self.u8("an opcode (no STOP)")?;
            match op {
                b'(' => {
                    self.op_name = "MARK";
                    if self.marks.len() >= self.limits.max_stack {
                        return Err(self.limit("stack size", self.limits.max_stack as u64));
                    }
                    self.marks.push(self.stack.len());
                }
                b'.' => {
                    self.op_name = "STOP";
                    return self.pop();
                }
                b'0' => {
                    self.op_name = "POP";
                    if self.stack.len() > self.marks.last().copied().unwrap_or(0) {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.op_name = "POP_MARK";
                    self.pop_mark()?;
                }
                b'2' => {
                    self.op_name = "DUP";
                    let t = self.top()?;
                    self.push_id(t)?;
                }
                b'F' => {
                    self.op_name = "FLOAT";
                    let s = self.text_line("FLOAT operand")?;
                    let f = s
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| self.malformed(format!("`{s}` is not a float")))?;
                    self.push(Node::Float(f))?;
                }
                b'I' => {
                    self.op_name = "INT";
                    let s = self.text_line("INT operand")?;
                    let node = match s.as_str() {
                        "00" => Node::Bool(false),
                        "01" => Node::Bool(true),
                        t => self.parse_decimal(t)?,
                    };
                    self.push(node)?;
                }
                b'J' => {
                    self.op_name = "BININT";
                    let v = self.i32("BININT operand")?;
                    self.push(Node::Int(i64::from(v)))?;
                }
                b'K' => {
                    self.op_name = "BININT1";
                    let v = self.u8("BININT1 operand")?;
                    self.push(Node::Int(i64::from(v)))?;
                }
                b'M' => {
                    self.op_name = "BININT2";
                    let v = self.u16("BININT2 operand")?;
                    self.push(Node::Int(i64::from(v)))?;
                }
                b'L' => {
                    self.op_name = "LONG";
                    let s = self.text_line("LONG operand")?;
                    let t = s.strip_suffix('L').unwrap_or(&s);
                    let node = self.parse_decimal(t)?;
                    self.push(node)?;
                }
                b'N' => {
                    self.op_name = "NONE";
                    self.push(Node::None)?;
                }
                b'P' => {
                    self.op_name = "PERSID";
                    let s = self.text_line("PERSID operand")?;
                    let id = self.alloc(Node::Str(s), 0)?;
                    self.persistent(id)?;
                }
                b'Q' => {
                    self.op_name = "BINPERSID";
                    let pid = self.pop()?;
                    self.persistent(pid)?;
                }
                b'R' => {
                    self.op_name = "REDUCE";
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let id = self.reduce(callable, args)?;
                    self.push_id(id)?;
                }
                b'S' => {
                    self.op_name = "STRING";
                    let l = self.line("STRING operand")?;
                    let s = self.decode_string_repr(l)?;
                    self.push(Node::Str(s))?;
                }
                b'T' => {
                    self.op_name = "BINSTRING";
                    let n = self.i32("BINSTRING length")?;
                    if n < 0 {
                        return Err(self.malformed("negative BINSTRING length"));
                    }
                    let n = self.len_operand(n as u64, "BINSTRING data")?;
                    let b = self.take(n, "BINSTRING data")?;
                    self.push(Node::Str(latin1(b)))?;
                }
                b'U' => {
                    self.op_name = "SHORT_BINSTRING";
                    let n = self.u8("SHORT_BINSTRING length")?;
                    let b = self.take(usize::from(n), "SHORT_BINSTRING data")?;
                    self.push(Node::Str(latin1(b)))?;
                }
                b'V' => {
                    self.op_name = "UNICODE";
                    let l = self.line("UNICODE operand")?;
                    let s = decode_raw_unicode_escape(l);
                    self.push(Node::Str(s))?;
                }
                b'X' => {
                    self.op_name = "BINUNICODE";
                    let n = self.u32("BINUNICODE length")?;
                    self.unicode(u64::from(n), "BINUNICODE data")?;
                }
                0x8c => {
                    self.op_name = "SHORT_BINUNICODE";
                    let n = self.u8("SHORT_BINUNICODE length")?;
                    self.unicode(u64::from(n), "SHORT_BINUNICODE data")?;
                }
                0x8d => {
                    self.op_name = "BINUNICODE8";
                    let n = self.u64("BINUNICODE8 length")?;
                    self.unicode(n, "BINUNICODE8 data")?;
                }
                b'B' => {
                    self.op_name = "BINBYTES";
                    let n = self.u32("BINBYTES length")?;
                    self.bytes(u64::from(n), false, "BINBYTES data")?;
                }
                b'C' => {
                    self.op_name = "SHORT_BINBYTES";
                    let n = self.u8("SHORT_BINBYTES length")?;
                    self.bytes(u64::from(n), false, "SHORT_BINBYTES data")?;
                }
                0x8e => {
                    self.op_name = "BINBYTES8";
                    let n = self.u64("BINBYTES8 length")?;
                    self.bytes(n, false, "BINBYTES8 data")?;
                }
                0x96 => {
                    self.op_name = "BYTEARRAY8";
                    let n = self.u64("BYTEARRAY8 length")?;
                    self.bytes(n, true, "BYTEARRAY8 data")?;
                }
                b'a' => {
                    self.op_name = "APPEND";
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.extend(target, vec![v])?;
                }
                b'e' => {
                    self.op_name = "APPENDS";
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.extend(target, items)?;
                }
                b'b' => {
                    self.op_name = "BUILD";
                    let state = self.pop()?;
                    let target = self.top()?;
                    self.build(target, state)?;
                }
                b'c' => {
                    self.op_name = "GLOBAL";
                    let module = self.text_line("GLOBAL module")?;
                    let name = self.text_line("GLOBAL name")?;
                    let id = self.push_global(module, name)?;
                    self.push_id(id)?;
                }
                0x93 => {
                    self.op_name = "STACK_GLOBAL";
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (self.str_of(module), self.str_of(name)) else {
                        return Err(self.malformed("STACK_GLOBAL operands are not strings"));
                    };
                    let (m, n) = (m.to_owned(), n.to_owned());
                    let id = self.push_global(m, n)?;
                    self.push_id(id)?;
                }
                b'i' => {
                    self.op_name = "INST";
                    let module = self.text_line("INST module")?;
                    let name = self.text_line("INST name")?;
                    let items = self.pop_mark()?;
                    let class = self.push_global(module, name)?;
                    let args = self.alloc_tuple(items)?;
                    let id = self.call(class, args, None)?;
                    self.push_id(id)?;
                }
                b'o' => {
                    self.op_name = "OBJ";
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(self.malformed("OBJ without a class"));
                    }
                    let class = items.remove(0);
                    let args = self.alloc_tuple(items)?;
                    let id = self.call(class, args, None)?;
                    self.push_id(id)?;
                }
                0x81 => {
                    self.op_name = "NEWOBJ";
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let id = self.call(class, args, None)?;
                    self.push_id(id)?;
                }
                0x92 => {
                    self.op_name = "NEWOBJ_EX";
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let id = self.call(class, args, Some(kwargs))?;
                    self.push_id(id)?;
                }
                b'd' => {
                    self.op_name = "DICT";
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs))?;
                }
                b'}' => {
                    self.op_name = "EMPTY_DICT";
                    self.push(Node::Dict(Vec::new()))?;
                }
                b's' => {
                    self.op_name = "SETITEM";
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.set_items(target, vec![(k, v)])?;
                }
                b'u' => {
                    self.op_name = "SETITEMS";
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let target = self.top()?;
                    self.set_items(target, pairs)?;
                }
                b'l' => {
                    self.op_name = "LIST";
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?;
                }
                b']' => {
                    self.op_name = "EMPTY_LIST";
                    self.push(Node::List(Vec::new()))?;
                }
                b't' => {
                    self.op_name = "TUPLE";
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?;
                }
                b')' => {
                    self.op_name = "EMPTY_TUPLE";
                    self.push(Node::Tuple(Vec::new()))?;
                }
                0x85..=0x87 => {
                    self.op_name = ["TUPLE1", "TUPLE2", "TUPLE3"][usize::from(op - 0x85)];
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items))?;
                }
                0x8f => {
                    self.op_name = "EMPTY_SET";
                    self.push(Node::Set(Vec::new()))?;
                }
                0x90 => {
                    self.op_name = "ADDITEMS";
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.charge(items.len() as u64)?;
                    match &mut self.nodes[target] {
                        Node::Set(v) => v.extend(items),
                        _ => return Err(self.malformed("ADDITEMS on something not a set")),
                    }
                }
                0x91 => {
                    self.op_name = "FROZENSET";
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items))?;
                }
                b'g' => {
                    self.op_name = "GET";
                    let l = self.line("GET operand")?;
                    let k = self.decimal_key(l)?;
                    self.memo_get(k)?;
                }
                b'h' => {
                    self.op_name = "BINGET";
                    let k = self.u8("BINGET operand")?;
                    self.memo_get(u64::from(k))?;
                }
                b'j' => {
                    self.op_name = "LONG_BINGET";
                    let k = self.u32("LONG_BINGET operand")?;
                    self.memo_get(u64::from(k))?;
                }
                b'p' => {
                    self.op_name = "PUT";
                    let l = self.line("PUT operand")?;
                    let k = self.decimal_key(l)?;
                    self.memo_put(k)?;
                }
                b'q' => {
                    self.op_name = "BINPUT";
                    let k = self.u8("BINPUT operand")?;
                    self.memo_put(u64::from(k))?;
                }
                b'r' => {
                    self.op_name = "LONG_BINPUT";
                    let k = self.u32("LONG_BINPUT operand")?;
                    self.memo_put(u64::from(k))?;
                }
                0x94 => {
                    self.op_name = "MEMOIZE";
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                b'G' => {
                    self.op_name = "BINFLOAT";
                    let b = self.take_array::<8>("BINFLOAT operand")?;
                    self.push(Node::Float(f64::from_be_bytes(b)))?;
                }
                0x80 => {
                    self.op_name = "PROTO";
                    let p = self.u8("PROTO operand")?;
                    if p > 5 {
                        return Err(self.malformed(format!("unsupported protocol {p}")));
                    }
                }
                0x82..=0x84 => {
                    self.op_name = ["EXT1", "EXT2", "EXT4"][usize::from(op - 0x82)];
                    let code = match op {
                        0x82 => u32::from(self.u8("EXT1 operand")?),
                        0x83 => u32::from(self.u16("EXT2 operand")?),
                        _ => self.u32("EXT4 operand")?,
                    };
                    self.findings.push(format!(
                        "extension code {code} (copyreg registry) at offset {}",
                        self.op_offset
                    ));
                    self.push(Node::Extension(code))?;
                }
                0x88 => {
                    self.op_name = "NEWTRUE";
                    self.push(Node::Bool(true))?;
                }
                0x89 => {
                    self.op_name = "NEWFALSE";
                    self.push(Node::Bool(false))?;
                }
                0x8a => {
                    self.op_name = "LONG1";
                    let n = self.u8("LONG1 length")?;
                    let b = self.take(usize::from(n), "LONG1 data")?;
                    self.push(long_from_le(b))?;
                }
                0x8b => {
                    self.op_name = "LONG4";
                    let n = self.i32("LONG4 length")?;
                    if n < 0 {
                        return Err(self.malformed("negative LONG4 length"));
                    }
                    let n = self.len_operand(n as u64, "LONG4 data")?;
                    let b = self.take(n, "LONG4 data")?;
                    self.push(long_from_le(b))?;
                }
                0x95 => {
                    self.op_name = "FRAME";
                    let n = self.u64("FRAME length")?;
                    // Frames only group opcodes for buffered reading; the length must fit.
                    self.len_operand(n, "FRAME contents")?;
                }
                0x97 => {
                    self.op_name = "NEXT_BUFFER";
                    self.findings.push(format!(
                        "out-of-band buffer (NEXT_BUFFER) at offset {}, which a file cannot carry",
                        self.op_offset
                    ));
                    self.push(Node::Buffer)?;
                }
                0x98 => {
                    self.op_name = "READONLY_BUFFER";
                    self.top()?;
                }
                other => {
                    return Err(Error::UnknownOpcode {
                        offset: self.op_offset as u64,
                        opcode: other,
                    });
                }
            }
        }
    }

    fn parse_decimal(&self, text: &str) -> Result<Node> {
        let t = text.trim();
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Node::Int(i));
        }
        let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.malformed(format!("`{text}` is not an integer")));
        }
        Ok(Node::BigInt(t.trim_start_matches('+').to_owned()))
    }

    fn unicode(&mut self, len: u64, what: &'static str) -> Result<()> {
        let n = self.len_operand(len, what)?;
        let b = self.take(n, what)?;
        let s = String::from_utf8_lossy(b).into_owned();
        self.push(Node::Str(s))
    }

    fn bytes(&mut self, len: u64, bytearray: bool, what: &'static str) -> Result<()> {
        let n = self.len_operand(len, what)?;
        let b = self.take(n, what)?.to_vec();
        self.push(if bytearray {
            Node::ByteArray(b)
        } else {
            Node::Bytes(b)
        })
    }

    fn decode_string_repr(&self, line: &[u8]) -> Result<String> {
        let l = line.strip_suffix(b"\r").unwrap_or(line);
        let inner = match l {
            [q, inner @ .., e] if (*q == b'\'' || *q == b'"') && q == e => inner,
            _ => return Err(self.malformed("STRING operand is not quoted")),
        };
        Ok(latin1(&decode_escapes(inner)))
    }

    fn alloc_tuple(&mut self, items: Vec<Id>) -> Result<Id> {
        let n = items.len();
        self.alloc(Node::Tuple(items), n)
    }

    fn pairs(&self, items: Vec<Id>) -> Result<Vec<(Id, Id)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for key/value pairs"));
        }
        Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
    }

    fn extend(&mut self, target: Id, items: Vec<Id>) -> Result<()> {
        self.charge(items.len() as u64)?;
        match &mut self.nodes[target] {
            Node::List(v) | Node::Set(v) => {
                v.extend(items);
                Ok(())
            }
            // Python would call `target.append`/`extend`; the call is recorded by the global
            // that made `target`, and the items do not matter for a verdict or an index.
            Node::Call { .. } => Ok(()),
            _ => Err(self.malformed("APPEND to something not a list")),
        }
    }

    fn set_items(&mut self, target: Id, pairs: Vec<(Id, Id)>) -> Result<()> {
        self.charge(2 * pairs.len() as u64)?;
        match &mut self.nodes[target] {
            Node::Dict(v) => {
                v.extend(pairs);
                Ok(())
            }
            // `__setitem__` on an object made by a call: recorded by its global.
            Node::Call { .. } => Ok(()),
            _ => Err(self.malformed("SETITEM on something not a dict")),
        }
    }

    fn call(&mut self, callable: Id, args: Id, kwargs: Option<Id>) -> Result<Id> {
        self.alloc(
            Node::Call {
                callable,
                args,
                kwargs,
                state: None,
            },
            0,
        )
    }

    fn persistent(&mut self, pid: Id) -> Result<()> {
        let node = match self.storage_from_pid(pid) {
            Some(s) => Node::Storage(s),
            None => Node::PersistentId(pid),
        };
        self.push(node)
    }

    /// `('storage', storage_type, key, location, numel[, view_metadata])` (PyTorch
    /// `torch/serialization.py`, `persistent_id` of `_save` and `_legacy_save`).
    fn storage_from_pid(&self, pid: Id) -> Option<Storage> {
        let items = self.seq_of(pid)?;
        if items.len() < 5 || self.str_of(items[0]) != Some("storage") {
            return None;
        }
        let (module, class) = self.global_of(items[1])?;
        let untyped = matches!(
            (module, class),
            ("torch" | "torch.storage", "UntypedStorage")
        );
        let dtype = if untyped {
            None
        } else if module == "torch" {
            Some(TorchDtype::from_storage_class(class)?)
        } else {
            return None;
        };
        let key = match self.node(items[2]) {
            Node::Str(s) => s.clone(),
            Node::Int(i) => i.to_string(),
            _ => return None,
        };
        let location = self.str_of(items[3]).unwrap_or_default().to_owned();
        let numel = u64::try_from(self.int_of(items[4])?).ok()?;
        let view = items.get(5).and_then(|&v| {
            let t = self.seq_of(v)?;
            let (k, o, s) = (t.first()?, t.get(1)?, t.get(2)?);
            let k = match self.node(*k) {
                Node::Str(s) => s.clone(),
                Node::Int(i) => i.to_string(),
                _ => return None,
            };
            Some((
                k,
                u64::try_from(self.int_of(*o)?).ok()?,
                u64::try_from(self.int_of(*s)?).ok()?,
            ))
        });
        Some(Storage {
            key,
            storage_type: format!("{module}.{class}"),
            dtype,
            location,
            numel,
            view,
        })
    }

    fn reduce(&mut self, callable: Id, args: Id) -> Result<Id> {
        let Some((module, name)) = self.global_of(callable) else {
            return self.call(callable, args, None);
        };
        let (module, name) = (module.to_owned(), name.to_owned());
        let arg_ids: Vec<Id> = self.seq_of(args).map(<[Id]>::to_vec).unwrap_or_default();
        let node = match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
                self.tensor(&name, &arg_ids)?.map(Node::Tensor)
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match (arg_ids.first().map(|&a| self.node(a)), arg_ids.get(1)) {
                    (Some(Node::Tensor(t)), Some(&rg)) => {
                        let mut t = t.clone();
                        t.parameter = true;
                        t.requires_grad = self.int_of(rg) == Some(1);
                        Some(Node::Tensor(t))
                    }
                    _ => None,
                }
            }
            // `_rebuild_from_type_v2(func, new_type, args, state)`: a tensor subclass (PyTorch
            // `torch/_tensor.py`); the tensor is `func(*args)`.
            ("torch._tensor", "_rebuild_from_type_v2") => match (arg_ids.first(), arg_ids.get(2)) {
                (Some(&func), Some(&inner)) if self.global_of(func).is_some() => {
                    let id = self.reduce(func, inner)?;
                    return Ok(id);
                }
                _ => None,
            },
            ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
                match arg_ids.as_slice() {
                    [] => Some(Node::Dict(Vec::new())),
                    [items] => self.pairs_from_seq(*items).map(Node::Dict),
                    _ => None,
                }
            }
            ("builtins" | "__builtin__", "set" | "frozenset") => {
                let items = match arg_ids.as_slice() {
                    [] => Some(Vec::new()),
                    [items] => self.seq_of(*items).map(<[Id]>::to_vec),
                    _ => None,
                };
                items.map(|v| {
                    if name == "set" {
                        Node::Set(v)
                    } else {
                        Node::FrozenSet(v)
                    }
                })
            }
            // Python 3 pickles `bytes` at protocol 2 as `_codecs.encode(text, 'latin1')`.
            ("_codecs", "encode") => match arg_ids.as_slice() {
                [text, enc] => match (self.str_of(*text), self.str_of(*enc)) {
                    (Some(t), Some("latin1" | "latin-1" | "iso-8859-1")) => t
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).ok())
                        .collect::<Option<Vec<u8>>>()
                        .map(Node::Bytes),
                    (Some(t), Some("utf-8" | "utf8")) => Some(Node::Bytes(t.as_bytes().to_vec())),
                    _ => None,
                },
                _ => None,
            },
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Some(Node::Array(Array {
                    shape: Vec::new(),
                    dtype: None,
                    fortran: false,
                    data_len: 0,
                    objects: false,
                }))
            }
            ("numpy", "dtype") => arg_ids
                .first()
                .and_then(|&d| self.str_of(d))
                .map(|d| Node::NumpyDtype(d.to_owned())),
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => {
                match arg_ids.as_slice() {
                    [d, b, ..] => match (self.node(*d), self.node(*b)) {
                        (Node::NumpyDtype(d), Node::Bytes(b)) => Some(Node::Scalar {
                            dtype: d.clone(),
                            bytes: b.clone(),
                        }),
                        _ => None,
                    },
                    _ => None,
                }
            }
            ("torch", "Size") => arg_ids
                .first()
                .and_then(|&s| self.seq_of(s))
                .map(|s| Node::Tuple(s.to_vec())),
            _ => None,
        };
        match node {
            Some(n) => self.alloc(n, 0),
            None => self.call(callable, args, None),
        }
    }

    fn pairs_from_seq(&self, id: Id) -> Option<Vec<(Id, Id)>> {
        self.seq_of(id)?
            .iter()
            .map(|&p| match self.seq_of(p) {
                Some([k, v]) => Some((*k, *v)),
                _ => None,
            })
            .collect()
    }

    fn dims(&self, id: Id, what: &str) -> Result<Vec<u64>> {
        let items = self
            .seq_of(id)
            .ok_or_else(|| self.malformed(format!("tensor {what} is not a tuple")))?;
        items
            .iter()
            .map(|&i| {
                self.int_of(i)
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| {
                        self.malformed(format!("tensor {what} holds a negative or non-integer"))
                    })
            })
            .collect()
    }

    /// `_rebuild_tensor(storage, offset, size, stride)`,
    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`,
    /// `_rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])`
    /// (PyTorch `torch/_utils.py`).
    fn tensor(&self, func: &str, args: &[Id]) -> Result<Option<Tensor>> {
        let [storage, offset, size, stride, rest @ ..] = args else {
            return Ok(None);
        };
        let Node::Storage(storage) = self.node(*storage) else {
            return Ok(None);
        };
        let offset = self
            .int_of(*offset)
            .and_then(|o| u64::try_from(o).ok())
            .ok_or_else(|| self.malformed("tensor storage offset is not a non-negative integer"))?;
        let shape = self.dims(*size, "size")?;
        let stride = self.dims(*stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(self.malformed(format!(
                "tensor size has {} dimensions but stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        let numel = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= self.limits.max_numel)
            .ok_or_else(|| self.limit("tensor elements", self.limits.max_numel))?;
        let _ = numel;
        let requires_grad = rest.first().is_some_and(|&r| self.int_of(r) == Some(1));
        let dtype = if func == "_rebuild_tensor_v3" {
            let name = rest
                .get(2)
                .and_then(|&d| self.global_of(d))
                .filter(|(m, _)| *m == "torch")
                .map(|(_, n)| n)
                .ok_or_else(|| self.malformed("_rebuild_tensor_v3 without a torch dtype"))?;
            TorchDtype::from_name(name)
                .ok_or_else(|| self.malformed(format!("unknown torch dtype `{name}`")))?
        } else {
            match &storage.dtype {
                Some(d) => d.clone(),
                None => TorchDtype::from_name("uint8")
                    .ok_or_else(|| self.malformed("uint8 is not a torch dtype"))?,
            }
        };
        Ok(Some(Tensor {
            storage: storage.clone(),
            dtype,
            offset,
            shape,
            stride,
            requires_grad,
            parameter: false,
        }))
    }

    fn build(&mut self, target: Id, state: Id) -> Result<()> {
        let array_state = match self.node(target) {
            Node::Array(_) => self.array_state(state),
            _ => None,
        };
        let dtype_order = match (self.node(target), self.seq_of(state)) {
            (Node::NumpyDtype(_), Some(s)) => {
                s.get(1).and_then(|&b| self.str_of(b)).map(str::to_owned)
            }
            _ => None,
        };
        if let Some((module, name)) = self.global_of(target) {
            // Python would set attributes on the imported object itself: record them so that
            // later globals through it resolve to what was set, and flag the rewrite.
            let path = format!("{module}.{name}");
            self.findings.push(format!(
                "BUILD at offset {} rewrites attributes of global `{path}`",
                self.op_offset
            ));
            let dict = match self.node(state) {
                Node::Dict(p) => Some(p.clone()),
                Node::Tuple(t) => t.get(1).and_then(|&d| match self.node(d) {
                    Node::Dict(p) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            };
            for (k, v) in dict.unwrap_or_default() {
                if let Some(attr) = self.str_of(k).map(str::to_owned) {
                    self.overrides
                        .entry(path.clone())
                        .or_default()
                        .push((attr, v));
                }
            }
            return Ok(());
        }
        match &mut self.nodes[target] {
            Node::Call { state: s, .. } => *s = Some(state),
            Node::Array(a) => {
                if let Some(new) = array_state {
                    *a = new;
                }
            }
            Node::NumpyDtype(d) => {
                if let Some(order) = dtype_order
                    && order != "|"
                    && !d.starts_with(['<', '>', '|', '='])
                {
                    *d = format!("{order}{d}");
                }
            }
            // Attributes of a dict subclass (an `OrderedDict`'s `_metadata`) or of a tensor:
            // not part of the mapping.
            _ => {}
        }
        Ok(())
    }

    /// NumPy's `ndarray.__setstate__((version, shape, dtype, is_fortran, data))`.
    fn array_state(&self, state: Id) -> Option<Array> {
        let s = self.seq_of(state)?;
        let (shape, dtype, fortran, data) = match s {
            [_, shape, dtype, fortran, data] => (*shape, *dtype, *fortran, *data),
            [shape, dtype, fortran, data] => (*shape, *dtype, *fortran, *data),
            _ => return None,
        };
        let shape = self
            .seq_of(shape)?
            .iter()
            .map(|&d| self.int_of(d).and_then(|v| u64::try_from(v).ok()))
            .collect::<Option<Vec<u64>>>()?;
        let dtype = match self.node(dtype) {
            Node::NumpyDtype(d) => Some(d.clone()),
            _ => None,
        };
        let (data_len, objects) = match self.node(data) {
            Node::Bytes(b) | Node::ByteArray(b) => (b.len() as u64, false),
            Node::Str(s) => (s.chars().count() as u64, false),
            Node::List(_) => (0, true),
            _ => (0, false),
        };
        Some(Array {
            shape,
            dtype,
            fortran: self.int_of(fortran) == Some(1),
            data_len,
            objects,
        })
    }

    // ----- conversion to an owned tree -----

    fn to_value(&self, root: Id) -> Result<Value> {
        let mut budget = self.limits.max_elements;
        let mut on_path = vec![false; self.nodes.len()];
        self.convert(root, 0, &mut budget, &mut on_path)
    }

    // The recursion keeps `convert` small (leaves and calls are converted out of line), so
    // that the default depth limit fits a 2 MiB thread stack even in debug builds.
    fn convert(
        &self,
        id: Id,
        depth: usize,
        budget: &mut u64,
        on_path: &mut [bool],
    ) -> Result<Value> {
        if depth > self.limits.max_depth {
            return Err(self.limit("nesting depth", self.limits.max_depth as u64));
        }
        if *budget == 0 {
            return Err(self.limit("total elements", self.limits.max_elements));
        }
        *budget -= 1;
        if on_path[id] {
            return Ok(Value::Recursive);
        }
        on_path[id] = true;
        let v = match self.node(id) {
            Node::Tuple(v) => Value::Tuple(self.convert_all(v, depth, budget, on_path)?),
            Node::List(v) => Value::List(self.convert_all(v, depth, budget, on_path)?),
            Node::Set(v) => Value::Set(self.convert_all(v, depth, budget, on_path)?),
            Node::FrozenSet(v) => Value::FrozenSet(self.convert_all(v, depth, budget, on_path)?),
            Node::Dict(pairs) => Value::Dict(self.convert_pairs(pairs, depth, budget, on_path)?),
            Node::Call { .. } => self.convert_call(id, depth, budget, on_path)?,
            Node::PersistentId(p) => {
                Value::PersistentId(Box::new(self.convert(*p, depth + 1, budget, on_path)?))
            }
            leaf => leaf_value(leaf),
        };
        on_path[id] = false;
        Ok(v)
    }

    #[inline(never)]
    fn convert_all(
        &self,
        items: &[Id],
        depth: usize,
        budget: &mut u64,
        on_path: &mut [bool],
    ) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(items.len());
        for &i in items {
            out.push(self.convert(i, depth + 1, budget, on_path)?);
        }
        Ok(out)
    }

    #[inline(never)]
    fn convert_pairs(
        &self,
        pairs: &[(Id, Id)],
        depth: usize,
        budget: &mut u64,
        on_path: &mut [bool],
    ) -> Result<Vec<(Value, Value)>> {
        let mut out = Vec::with_capacity(pairs.len());
        for &(k, v) in pairs {
            let k = self.convert(k, depth + 1, budget, on_path)?;
            let v = self.convert(v, depth + 1, budget, on_path)?;
            out.push((k, v));
        }
        Ok(out)
    }

    #[inline(never)]
    fn convert_call(
        &self,
        id: Id,
        depth: usize,
        budget: &mut u64,
        on_path: &mut [bool],
    ) -> Result<Value> {
        let Node::Call {
            callable,
            args,
            kwargs,
            state,
        } = self.node(id)
        else {
            return Ok(Value::None);
        };
        let callable = self.convert(*callable, depth + 1, budget, on_path)?;
        let args = self.convert(*args, depth + 1, budget, on_path)?;
        let kwargs = match kwargs {
            Some(k) => Some(self.convert(*k, depth + 1, budget, on_path)?),
            None => None,
        };
        let state = match state {
            Some(s) => Some(self.convert(*s, depth + 1, budget, on_path)?),
            None => None,
        };
        Ok(Value::Call(Box::new(Call {
            callable,
            args,
            kwargs,
            state,
        })))
    }
}

/// A node without children as a value.
#[inline(never)]
fn leaf_value(node: &Node) -> Value {
    match node {
        Node::None => Value::None,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::Int(*i),
        Node::BigInt(s) => Value::BigInt(s.clone()),
        Node::Float(f) => Value::Float(*f),
        Node::Str(s) => Value::Str(s.clone()),
        Node::Bytes(b) => Value::Bytes(b.clone()),
        Node::ByteArray(b) => Value::ByteArray(b.clone()),
        Node::Global { module, name } => Value::Global {
            module: module.clone(),
            name: name.clone(),
        },
        Node::Storage(s) => Value::Storage(s.clone()),
        Node::Tensor(t) => Value::Tensor(t.clone()),
        Node::Array(a) => Value::Array(a.clone()),
        Node::Scalar { dtype, bytes } => Value::Scalar {
            dtype: dtype.clone(),
            bytes: bytes.clone(),
        },
        Node::NumpyDtype(d) => Value::NumpyDtype(d.clone()),
        Node::Extension(c) => Value::Extension(*c),
        Node::Buffer => Value::Buffer,
        // Containers are converted by `Machine::convert`.
        Node::Tuple(_)
        | Node::List(_)
        | Node::Dict(_)
        | Node::Set(_)
        | Node::FrozenSet(_)
        | Node::Call { .. }
        | Node::PersistentId(_) => Value::Recursive,
    }
}

/// Latin-1 bytes as text (each byte one character), as Python 2 strings read with
/// `encoding='latin1'`.
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Python's `codecs.escape_decode` for the body of a quoted protocol-0 `STRING`.
fn decode_escapes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' || i >= s.len() {
            out.push(c);
            continue;
        }
        let e = s[i];
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => {}
            b'x' if i + 2 <= s.len() => {
                match std::str::from_utf8(&s[i..i + 2])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + u32::from(s[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xff) as u8);
            }
            other => {
                if !matches!(other, b'\\' | b'\'' | b'"') {
                    out.push(b'\\');
                }
                out.push(other);
            }
        }
    }
    out
}

/// Python's `raw-unicode-escape` codec: `\uXXXX` and `\UXXXXXXXX`, other bytes as Latin-1.
fn decode_raw_unicode_escape(s: &[u8]) -> String {
    let s = s.strip_suffix(b"\r").unwrap_or(s);
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() && (s[i + 1] == b'u' || s[i + 1] == b'U') {
            let n = if s[i + 1] == b'u' { 4 } else { 8 };
            let code = s
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            if let Some(c) = code {
                out.push(char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER));
                i += 2 + n;
                continue;
            }
        }
        out.push(char::from(s[i]));
        i += 1;
    }
    out
}

/// A `LONG1`/`LONG4` operand: little-endian two's complement.
fn long_from_le(b: &[u8]) -> Node {
    if b.is_empty() {
        return Node::Int(0);
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    if b.len() <= 16 {
        let fill = if negative { 0xff } else { 0 };
        let mut buf = [fill; 16];
        buf[..b.len()].copy_from_slice(b);
        let v = i128::from_le_bytes(buf);
        return match i64::try_from(v) {
            Ok(i) => Node::Int(i),
            Err(_) => Node::BigInt(v.to_string()),
        };
    }
    // Magnitude in hex: negate the two's complement for negative numbers.
    let mut mag: Vec<u8> = b.to_vec();
    if negative {
        let mut carry = true;
        for byte in &mut mag {
            *byte = !*byte;
            if carry {
                let (v, c) = byte.overflowing_add(1);
                *byte = v;
                carry = c;
            }
        }
    }
    let hex: String = mag
        .iter()
        .rev()
        .skip_while(|&&x| x == 0)
        .map(|x| format!("{x:02x}"))
        .collect();
    let hex = if hex.is_empty() { "0".to_owned() } else { hex };
    Node::BigInt(format!("{}0x{hex}", if negative { "-" } else { "" }))
}
