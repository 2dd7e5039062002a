//! One module per command.

pub mod inspect;
pub mod pnginfo;

use crate::ExitStatus;
use crate::args::{Cli, Command};
use crate::printer::Printer;

/// Runs the command the user asked for.
///
/// # Errors
/// A failure before any work could be done (the command reports per-input failures itself).
pub fn run(cli: &Cli, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let progress_hidden = cli.global.quiet
        || cli.global.verbose > 0
        || std::env::var_os("DANLU_NO_PROGRESS").is_some();
    match &cli.command {
        Command::Inspect(args) => inspect::run(args, progress_hidden, printer),
        Command::Pnginfo(args) => pnginfo::run(args, printer),
    }
}
