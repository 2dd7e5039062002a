//! The danlu command line: argument parsing, commands, and their human and `--json` renderings.
//!
//! Every command is one module in [`commands`] with a `run` function that returns an
//! [`ExitStatus`]; [`main`] maps it (or an error) to the process exit code: 0 success, 1 when
//! some input failed, 2 for bad usage or a failure before any work. A broken pipe counts as
//! success.

// The binary's purpose is printing; libraries below it never print.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod args;
pub mod commands;
pub mod printer;
pub mod progress;

use clap::Parser;
use std::ffi::OsString;
use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything worked.
    Success,
    /// The command ran, but some inputs failed (each is reported).
    Failure,
    /// Bad usage or a failure before any work was done.
    Error,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        match s {
            ExitStatus::Success => ExitCode::from(0),
            ExitStatus::Failure => ExitCode::from(1),
            ExitStatus::Error => ExitCode::from(2),
        }
    }
}

/// Runs danlu with the given arguments (the first is the program name) and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match args::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(cli.global.verbose);
    let printer = printer::Printer {
        json: cli.global.json,
    };
    match commands::run(&cli, &printer) {
        Ok(status) => status.into(),
        Err(err) if printer::is_broken_pipe(&err) => ExitCode::from(0),
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitStatus::Error.into()
        }
    }
}

/// First thing in the `danlu` binary: for the commands that run the networks (`generate`,
/// `reproduce`, `serve`), replaces the process with itself under the C allocator settings of
/// [`danlu_diffusion::allocator`], which keep a step's freed activations for the next step
/// instead of faulting them in afresh. Other commands, unparsable arguments, and systems
/// without glibc go on unchanged; with `-v`, a failed re-execution is reported.
pub fn prepare_process() {
    use danlu_diffusion::allocator::{Untuned, reexec_with_malloc_tunables};
    let Ok(cli) = args::Cli::try_parse_from(std::env::args_os()) else {
        return;
    };
    if !matches!(
        cli.command,
        args::Command::Generate(_) | args::Command::Reproduce(_) | args::Command::Serve(_)
    ) {
        return;
    }
    let untuned = reexec_with_malloc_tunables();
    if cli.global.verbose > 0 && matches!(untuned, Untuned::NoExecutable(_) | Untuned::Exec(_)) {
        eprintln!("danlu: the C allocator keeps its defaults: {untuned}");
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
