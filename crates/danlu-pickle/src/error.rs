//! Errors of reading a pickle. Each gives the byte offset of the opcode where reading stopped.

/// Why a pickle could not be read to its `STOP`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is empty.
    #[error("pickle is empty")]
    Empty,
    /// The input ends inside an opcode or before `STOP`.
    #[error("pickle ends early at offset {offset} while reading {what}")]
    Truncated {
        /// Offset of the opcode being read.
        offset: u64,
        /// What was being read (`BINUNICODE length`, `opcode`, ...).
        what: &'static str,
    },
    /// A byte that is not a pickle opcode.
    #[error("not a pickle: unknown opcode 0x{opcode:02x} at offset {offset}")]
    UnknownOpcode {
        /// Offset of the byte.
        offset: u64,
        /// The byte.
        opcode: u8,
    },
    /// An opcode whose operands or stack do not make sense.
    #[error("malformed pickle at offset {offset} ({opcode}): {reason}")]
    Malformed {
        /// Offset of the opcode.
        offset: u64,
        /// The opcode's name, as in Python's `pickletools`.
        opcode: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A resource limit of [`crate::Limits`] was reached (a pickle bomb or a corrupt file).
    #[error("pickle exceeds the limit on {limit} ({max}) at offset {offset}")]
    Limit {
        /// Offset of the opcode.
        offset: u64,
        /// Which limit (`nesting depth`, `memo entries`, ...).
        limit: &'static str,
        /// The limit's value.
        max: u64,
    },
}

impl Error {
    /// Offset of the opcode where reading stopped (0 for an empty input).
    pub fn offset(&self) -> u64 {
        match self {
            Error::Empty => 0,
            Error::Truncated { offset, .. }
            | Error::UnknownOpcode { offset, .. }
            | Error::Malformed { offset, .. }
            | Error::Limit { offset, .. } => *offset,
        }
    }
}

/// Result of reading a pickle.
pub type Result<T> = std::result::Result<T, Error>;
