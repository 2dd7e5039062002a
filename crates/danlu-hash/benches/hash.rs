//! Throughput of [`danlu_hash::hash_file`] against `sha256sum` (and `b3sum` when installed) on
//! the same real, non-sparse file of random bytes, in the same run.
//!
//! `cargo bench -p danlu-hash --bench hash`; the size in MiB is `DANLU_BENCH_HASH_MIB` (default
//! 2048). The file lives in the target folder and is deleted afterwards.

// A bench prints its measurements; failing to set up is fatal.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::io::Write;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn run_tool(tool: &str, path: &std::path::Path) -> Option<(String, Duration)> {
    let (out, d) = timed(|| Command::new(tool).arg(path).output());
    let out = out.ok().filter(|o| o.status.success())?;
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .to_owned();
    Some((hex, d))
}

/// All hashes on the calling thread, for comparison with the threaded `hash_file`.
fn sequential(path: &std::path::Path) -> danlu_hash::Hashes {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = danlu_hash::Hasher::new();
    let mut buf = vec![0u8; danlu_hash::CHUNK_SIZE];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finish()
}

fn main() {
    let mib: u64 = std::env::var("DANLU_BENCH_HASH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("danlu-bench-hash.bin");
    {
        let mut f = std::io::BufWriter::new(
            std::fs::File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap(),
        );
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for w in buf.chunks_exact_mut(8) {
                // xorshift64*: incompressible enough that no file system shortcut applies.
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                w.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
        f.into_inner().unwrap().sync_all().unwrap();
    }
    let bytes = (mib << 20) as f64;
    let gbps = |d: Duration| bytes / d.as_secs_f64() / 1e9;
    // Warm the page cache once so that every contender reads from memory.
    let _ = run_tool("cat", &path);

    let (ours, d_ours) = timed(|| {
        danlu_hash::hash_file(&path, &danlu_types::NoProgress, &AtomicBool::new(false)).unwrap()
    });
    println!("file: {mib} MiB of random bytes");
    println!(
        "danlu hash_file (sha256 + autov1 + autov3 + blake3): {:.2} s, {:.2} GB/s",
        d_ours.as_secs_f64(),
        gbps(d_ours)
    );
    match run_tool("sha256sum", &path) {
        Some((hex, d)) => {
            assert_eq!(hex, ours.sha256, "sha256sum disagrees");
            println!("sha256sum: {:.2} s, {:.2} GB/s", d.as_secs_f64(), gbps(d));
            println!(
                "throughput ratio hash_file / sha256sum: {:.2}",
                d.as_secs_f64() / d_ours.as_secs_f64()
            );
        }
        None => println!("sha256sum: not available"),
    }
    match run_tool("b3sum", &path) {
        Some((hex, d)) => {
            assert_eq!(hex, ours.blake3, "b3sum disagrees");
            println!("b3sum: {:.2} s, {:.2} GB/s", d.as_secs_f64(), gbps(d));
        }
        None => println!("b3sum: not available"),
    }
    let (seq, d_seq) = timed(|| sequential(&path));
    assert_eq!(seq, ours);
    println!(
        "danlu Hasher, one thread: {:.2} s, {:.2} GB/s (threads speed-up {:.2})",
        d_seq.as_secs_f64(),
        gbps(d_seq),
        d_seq.as_secs_f64() / d_ours.as_secs_f64()
    );

    // Make the file safetensors-shaped (an empty 8-byte header), so that the AutoV3 lane (a
    // second SHA-256 over the tensor bytes) runs too: the worst case.
    {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::options().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&8u64.to_le_bytes()).unwrap();
        f.write_all(b"{}      ").unwrap();
        f.sync_all().unwrap();
    }
    let (st, d_st) = timed(|| {
        danlu_hash::hash_file(&path, &danlu_types::NoProgress, &AtomicBool::new(false)).unwrap()
    });
    assert_ne!(st.autov3, st.sha256[..12]);
    println!(
        "safetensors-shaped, hash_file (adds the AutoV3 SHA-256 lane): {:.2} s, {:.2} GB/s",
        d_st.as_secs_f64(),
        gbps(d_st)
    );
    let (_, d_st_seq) = timed(|| sequential(&path));
    println!(
        "safetensors-shaped, Hasher one thread: {:.2} s, {:.2} GB/s (threads speed-up {:.2})",
        d_st_seq.as_secs_f64(),
        gbps(d_st_seq),
        d_st_seq.as_secs_f64() / d_st.as_secs_f64()
    );
    if let Some((_, d)) = run_tool("sha256sum", &path) {
        println!(
            "safetensors-shaped, throughput ratio hash_file / sha256sum: {:.2}",
            d.as_secs_f64() / d_st.as_secs_f64()
        );
    }
    std::fs::remove_file(&path).unwrap();
}
