//! One module per command.

pub mod catalog;
pub mod civitai;
pub mod convert;
pub mod doctor;
pub mod download;
pub mod engine;
pub mod generate;
pub mod inspect;
pub mod list;
pub mod noise;
pub mod pnginfo;
pub mod reproduce;
pub mod scan;
pub mod serve;
pub mod show;
pub mod sort;
pub mod tag;
pub mod vae;

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
        Command::Convert(args) => convert::run(args, progress_hidden, printer),
        Command::Pnginfo(args) => pnginfo::run(args, printer),
        Command::Scan(args) => scan::run(args, progress_hidden, printer),
        Command::List(args) => list::run(args, printer),
        Command::Show(args) => show::run(args, printer),
        Command::Sort(args) => sort::run(args, progress_hidden, printer),
        Command::Vae(args) => vae::run(args, printer),
        Command::Doctor(args) => doctor::run(args, printer),
        Command::Tag(args) => tag::run(args, printer),
        Command::Noise(args) => noise::run(args, printer),
        Command::Generate(args) => generate::run(args, progress_hidden, printer),
        Command::Download(args) => download::run(args, progress_hidden, printer),
        Command::Catalog(args) => catalog::run(args, printer),
        Command::Civitai(args) => civitai::run(args, progress_hidden, printer),
        Command::Serve(args) => serve::run(args, printer),
        Command::Reproduce(args) => reproduce::run(args, progress_hidden, printer),
    }
}
