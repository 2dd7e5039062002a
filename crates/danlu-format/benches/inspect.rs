//! `read_index` cost does not depend on the size of the tensor data: a 6 GB checkpoint-shaped
//! safetensors file (sparse: header, then `set_len`) against a 6 MB one with the same tensor
//! names, count and header size, in the same run.
//!
//! `cargo bench -p danlu-format --bench inspect`. Files live in the target folder and are deleted
//! afterwards.

// A bench prints its measurements; failing to set up is fatal.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const TENSORS: u64 = 1000;

/// Writes a safetensors header for `TENSORS` F32 tensors of shape `[rows, cols]` and extends the
/// file to its full size without writing the data (a sparse file).
fn write_sparse(path: &Path, rows: u64, cols: u64) -> u64 {
    let len = rows * cols * 4;
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    for i in 0..TENSORS {
        header.push_str(&format!(
            ",\"model.diffusion_model.input_blocks.{i}.0.proj.weight\":{{\"dtype\":\"F32\",\"shape\":[{rows},{cols}],\"data_offsets\":[{},{}]}}",
            i * len,
            (i + 1) * len
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    let size = 8 + header.len() as u64 + TENSORS * len;
    f.set_len(size).unwrap();
    size
}

fn time(path: &Path, runs: u32) -> (Duration, Duration) {
    let mut all = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let t = Instant::now();
        let idx = danlu_format::read_index(path).unwrap();
        all.push(t.elapsed());
        assert_eq!(idx.tensors.len() as u64, TENSORS);
    }
    all.sort();
    (all[all.len() / 2], all[0])
}

fn main() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let big = dir.join("danlu-bench-6gb.safetensors");
    let small = dir.join("danlu-bench-6mb.safetensors");
    // 1000 x [1536, 1000] F32 = 6.1 GB; 1000 x [1536, 1] F32 = 6.1 MB.
    let big_size = write_sparse(&big, 1536, 1000);
    let small_size = write_sparse(&small, 1536, 1);
    let runs = 200;
    // Warm-up, then interleave to share any drift between both.
    time(&big, 5);
    time(&small, 5);
    let (big_med, big_min) = time(&big, runs);
    let (small_med, small_min) = time(&small, runs);
    println!("read_index over {runs} runs, {TENSORS} tensors:");
    println!(
        "  {:>13} bytes (sparse): median {:?}, min {:?}",
        big_size, big_med, big_min
    );
    println!(
        "  {:>13} bytes:          median {:?}, min {:?}",
        small_size, small_med, small_min
    );
    println!(
        "  ratio of medians 6 GB / 6 MB: {:.2}",
        big_med.as_secs_f64() / small_med.as_secs_f64()
    );
    std::fs::remove_file(&big).unwrap();
    std::fs::remove_file(&small).unwrap();
}
