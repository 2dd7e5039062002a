//! A Python pickle reader that never imports or calls anything.
//!
//! [`parse`] runs every opcode of Python's `pickletools` (protocols 0 to 5) over symbolic values:
//! a global that Python would import becomes a [`Value::Global`], a call it would make becomes
//! a [`Value::Call`], and PyTorch's tensor rebuild functions become [`Tensor`] descriptions
//! (storage key, dtype, offset, shape, strides) without touching tensor data. Along the way
//! every global is recorded, and [`Safety`] says whether AUTOMATIC1111's safe unpickler (A1111
//! `modules/safe.py`) would have allowed the pickle.
//!
//! Resource [`Limits`] end pickle bombs (deep nesting, huge memos, billion-element shapes) with
//! an [`Error`] that gives the opcode's offset, and no declared length can make the reader
//! allocate more than the input's size.
//!
//! ```
//! // {'step': 1} at protocol 2
//! let p = danlu_pickle::parse(b"\x80\x02}q\x00X\x04\x00\x00\x00stepq\x01K\x01s.")?;
//! assert_eq!(p.value.get("step").and_then(|v| v.as_i64()), Some(1));
//! assert!(p.safety.safe);
//!
//! // os.system('echo hi'), never run
//! let bad = danlu_pickle::parse(b"cos\nsystem\n(S'echo hi'\ntR.")?;
//! assert!(!bad.safety.safe);
//! assert_eq!(bad.safety.globals, ["os.system"]);
//! # Ok::<(), danlu_pickle::Error>(())
//! ```

mod error;
mod machine;
mod safety;
mod value;

pub use error::{Error, Result};
pub use safety::{Safety, is_allowed, is_allowed_zip_name};
pub use value::{Array, Call, Storage, Tensor, TorchDtype, Value};

/// Resource limits of one pickle read. The defaults admit any real checkpoint (a full Stable
/// Diffusion checkpoint with EMA weights uses well under 1% of them) and stop bombs early.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Deepest nesting of containers in the result.
    pub max_depth: usize,
    /// Most memo entries.
    pub max_memo: usize,
    /// Most values on the stack (and marks).
    pub max_stack: usize,
    /// Most values and container items built in all (also bounds the expansion of shared
    /// values into the result tree).
    pub max_elements: u64,
    /// Most elements of one tensor.
    pub max_numel: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 200,
            max_memo: 1 << 22,
            max_stack: 1 << 22,
            max_elements: 1 << 22,
            max_numel: 1 << 40,
        }
    }
}

/// A pickle read to its `STOP`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pickle {
    /// The unpickled object, symbolically.
    pub value: Value,
    /// The globals met and the verdict.
    pub safety: Safety,
    /// Offset one past the `STOP` opcode (where a following pickle would start).
    pub end: usize,
}

/// What reading a pickle gave, even when it failed part-way: the globals met before an error
/// still count for the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The object, or why reading stopped.
    pub value: Result<Value>,
    /// The globals met and the verdict; a read that failed is unsafe, with a finding saying
    /// where.
    pub safety: Safety,
    /// Offset one past the `STOP` opcode, or where reading stopped.
    pub end: usize,
}

impl Parsed {
    /// The pickle, or the error that stopped it.
    ///
    /// # Errors
    /// When the pickle was malformed, truncated or over a limit.
    pub fn into_result(self) -> Result<Pickle> {
        Ok(Pickle {
            value: self.value?,
            safety: self.safety,
            end: self.end,
        })
    }
}

/// Reads one pickle from the start of `data` with default [`Limits`].
///
/// # Errors
/// When `data` is empty, is not a pickle, is truncated, or exceeds a limit; the error gives the
/// opcode's offset.
pub fn parse(data: &[u8]) -> Result<Pickle> {
    parse_at(data, 0, &Limits::default()).into_result()
}

/// Reads one pickle starting at `start` in `data` (for files holding several pickles in a row);
/// offsets in the result and in errors are offsets in `data`.
pub fn parse_at(data: &[u8], start: usize, limits: &Limits) -> Parsed {
    let outcome = machine::Machine::new(data, start, limits).run();
    let mut findings = outcome.findings;
    if let Err(e) = &outcome.value {
        findings.push(format!("unreadable pickle: {e}"));
    }
    let safety = Safety::from_parts(outcome.globals, findings);
    tracing::debug!(
        start,
        end = outcome.end,
        safe = safety.safe,
        globals = safety.globals.len(),
        "read pickle"
    );
    Parsed {
        value: outcome.value,
        safety,
        end: outcome.end,
    }
}

/// The verdict on a whole pickle file: pickles are read back to back until the input ends
/// (a file may hide a second pickle after the first `STOP`, and PyTorch's legacy format is
/// several pickles in a row), and their verdicts merged. Bytes after the last pickle that do
/// not read as a pickle make the verdict unsafe, with a finding giving the offset.
pub fn scan(data: &[u8], limits: &Limits) -> Safety {
    let mut start = 0;
    let mut safety = Safety {
        safe: true,
        ..Safety::default()
    };
    loop {
        let parsed = parse_at(data, start, limits);
        safety.merge(parsed.safety);
        match parsed.value {
            Ok(_) if parsed.end < data.len() && parsed.end > start => start = parsed.end,
            _ => return safety,
        }
    }
}

/// Whether `data` starts like a binary pickle (`PROTO` 2 to 5), the way PyTorch and Python 3
/// write them; protocol 0 and 1 pickles have no such marker.
pub fn looks_like_pickle(data: &[u8]) -> bool {
    matches!(data, [0x80, 2..=5, ..])
}
