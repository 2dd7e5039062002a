//! `cargo run --release -p danlu-convert --example convert -- IN OUT [f16|bf16|f32|keep] [prune]`:
//! the library's conversion without the CLI, for the benchmark in
//! `scripts/reference/convert_bench.py` (a release build of this crate alone is much quicker to
//! make than one of the whole `danlu` binary). Prints the JSON report.

// A measurement tool: printing its report is its purpose.
#![allow(clippy::print_stdout)]

use danlu_convert::{ConvertOptions, TargetDtype, convert};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, rest @ ..] = args.as_slice() else {
        return Err("usage: convert IN OUT [f16|bf16|f32|keep] [prune]".into());
    };
    let dtype = match rest.first().map(String::as_str) {
        Some("f16") => TargetDtype::F16,
        Some("bf16") => TargetDtype::Bf16,
        Some("f32") => TargetDtype::F32,
        _ => TargetDtype::Keep,
    };
    let opts = ConvertOptions {
        dtype,
        prune: rest.iter().any(|a| a == "prune"),
        ..Default::default()
    };
    let report = convert(
        input.as_ref(),
        output.as_ref(),
        &opts,
        &danlu_types::NoProgress,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
