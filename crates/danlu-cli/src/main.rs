//! The `danlu` binary: everything lives in the `danlu_cli` library.

fn main() -> std::process::ExitCode {
    danlu_cli::prepare_process();
    danlu_cli::main(std::env::args_os())
}
