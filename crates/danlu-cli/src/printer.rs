//! Output on stdout: one JSON document or human text, and the broken-pipe rule.

use serde::Serialize;
use std::io::{self, Write};

/// Where command results go, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// Machine-readable JSON instead of text.
    pub json: bool,
}

impl Printer {
    /// Writes a value as pretty JSON followed by a newline.
    pub fn json<T: Serialize>(&self, value: &T) -> io::Result<()> {
        let mut out = io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value).map_err(io::Error::from)?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Writes text exactly as given.
    pub fn text(&self, text: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

/// Whether an error chain ends in a broken pipe (the reader went away: not a failure).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
