//! The library benchmark of issue 3: a generated library of 2,000 files (mixed kinds, several
//! sparse multi-GB checkpoints); cold scan without hashing, warm rescan with no change (which
//! must read no file contents), and hashing on all cores against `sha256sum` run in parallel on
//! the same files.
//!
//! `cargo run --release -p danlu-library --example library_bench -- [DIR] [--checkpoints N]`
//!
//! DIR defaults to a temporary folder; it is emptied first. Numbers are printed, never asserted.

#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    missing_docs
)]

use danlu_fixtures::models::{
    CheckpointOpts, Fill, LoraStyle, UpscalerArch, ldm_vae, safetensors_embedding, sd1_checkpoint,
    sd1_lora, sdxl_checkpoint, sdxl_lora, upscaler, write_safetensors,
};
use danlu_library::{Cache, Root, ScanOptions, scan};
use danlu_types::NoProgress;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Bytes this process has read through read(2) and from storage (`/proc/self/io`).
fn io_counters() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("rchar:"), get("read_bytes:"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut checkpoints = 4usize;
    while let Some(a) = args.next() {
        if a == "--checkpoints" {
            checkpoints = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
        } else {
            dir = Some(PathBuf::from(a));
        }
    }
    let temp = tempfile::tempdir().unwrap();
    let root_dir = dir.unwrap_or_else(|| temp.path().join("library"));
    let _ = std::fs::remove_dir_all(&root_dir);
    let total_files = 2000usize;
    let t = Instant::now();
    let put = |rel: &str, tensors: &[danlu_fixtures::models::FixtureTensor], fill: Fill| {
        let p = root_dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_safetensors(&p, tensors, &BTreeMap::new(), fill).unwrap()
    };
    let mut logical = 0u64;
    let sd1 = sd1_checkpoint(&CheckpointOpts::default());
    let sdxl = sdxl_checkpoint(&CheckpointOpts::default());
    for i in 0..checkpoints {
        let (t, name) = if i.is_multiple_of(2) {
            (&sd1, "sd1")
        } else {
            (&sdxl, "sdxl")
        };
        logical += put(
            &format!("models/Stable-diffusion/{name}_{i}.safetensors"),
            t,
            Fill::Sparse,
        );
    }
    let vae = ldm_vae("", 4, true, danlu_types::Dtype::F16);
    let lora1 = sd1_lora(LoraStyle::Kohya, 4);
    let loraxl = sdxl_lora(LoraStyle::Kohya, 4);
    let emb = safetensors_embedding(8, 768);
    let up = upscaler(UpscalerArch::Compact);
    let mut n = checkpoints;
    for i in 0..10 {
        logical += put(
            &format!("models/VAE/vae_{i}.safetensors"),
            &vae,
            Fill::Sparse,
        );
        n += 1;
    }
    for i in 0..20 {
        logical += put(
            &format!("models/ESRGAN/up_{i}.safetensors"),
            &up,
            Fill::Seeded(i + 1),
        );
        n += 1;
    }
    for i in 0..300 {
        logical += put(
            &format!("embeddings/emb_{i}.safetensors"),
            &emb,
            Fill::Seeded(i + 1000),
        );
        n += 1;
    }
    let mut i = 0u64;
    while n < total_files {
        let (t, base) = if i.is_multiple_of(4) {
            (&loraxl, "xl")
        } else {
            (&lora1, "sd1")
        };
        // Every tenth LoRA holds seeded bytes, the rest are sparse: hashing reads them alike.
        let fill = if i.is_multiple_of(10) {
            Fill::Seeded(i + 5000)
        } else {
            Fill::Sparse
        };
        logical += put(&format!("models/Lora/{base}/lora_{i}.safetensors"), t, fill);
        n += 1;
        i += 1;
    }
    println!(
        "generated {n} files, {:.1} GB logical (sparse), in {:.1} s at `{}`",
        logical as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        root_dir.display()
    );

    let root = Root::open(&root_dir).unwrap();
    let cache = Cache::open(&root.cache_path()).unwrap();
    let cancel = AtomicBool::new(false);
    let no_hash = ScanOptions {
        hash: false,
        ..ScanOptions::default()
    };
    let t = Instant::now();
    let r = scan(&root, &cache, &no_hash, &NoProgress, &cancel).unwrap();
    println!(
        "cold scan, no hashing: {} files, {} read, {} errors, {:.2} s",
        r.files,
        r.read,
        r.errors.len(),
        t.elapsed().as_secs_f64()
    );

    let (rchar0, bytes0) = io_counters();
    let t = Instant::now();
    let r = scan(&root, &cache, &no_hash, &NoProgress, &cancel).unwrap();
    let (rchar1, bytes1) = io_counters();
    let db = std::fs::metadata(root.cache_path())
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "warm rescan, no change: {} files, {} unchanged, {} read (file contents opened), {:.3} s; \
         process read(2) bytes {} (cache file is {} bytes), storage reads {} bytes",
        r.files,
        r.unchanged,
        r.read,
        t.elapsed().as_secs_f64(),
        rchar1 - rchar0,
        db,
        bytes1 - bytes0
    );

    let files: Vec<String> = cache.all().unwrap().into_iter().map(|m| m.path).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t = Instant::now();
    let r = scan(&root, &cache, &ScanOptions::default(), &NoProgress, &cancel).unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "danlu hashing ({cores} files at once; SHA-256 + AutoV3 SHA-256 + BLAKE3 per file): {} files, {:.1} GB in {secs:.1} s = {:.2} GB/s",
        r.hashed,
        r.hashed_bytes as f64 / 1e9,
        r.hashed_bytes as f64 / 1e9 / secs
    );

    let list = root_dir.join(".danlu/files.txt");
    std::fs::write(&list, files.join("\0")).unwrap();
    let t = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xargs -0 -P {cores} -n 16 sha256sum < '{}' > /dev/null",
            list.display()
        ))
        .status();
    let secs = t.elapsed().as_secs_f64();
    match status {
        Ok(s) if s.success() => println!(
            "sha256sum, {cores} in parallel (SHA-256 only): {:.1} GB in {secs:.1} s = {:.2} GB/s",
            logical as f64 / 1e9,
            logical as f64 / 1e9 / secs
        ),
        other => println!("sha256sum failed: {other:?}"),
    }
}
