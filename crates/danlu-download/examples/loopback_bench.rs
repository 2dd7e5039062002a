//! Download throughput on loopback against `curl` on the same file in the same run, and the
//! cost of a resume (re-hashing the part, then fetching the rest).
//!
//! `cargo run --release -p danlu-download --example loopback_bench [MIB]` (default 256 MiB).
//! Numbers go in notes, never in assertions.

// A measuring tool: prints its numbers and writes scratch files directly.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

use danlu_download::mock::{MockFile, MockHub};
use danlu_download::{Client, ClientOptions, Endpoints};
use std::time::Instant;

#[tokio::main]
async fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let len = mib << 20;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let hub = MockHub::start().await.expect("bind");
    hub.put_file("f", MockFile::new(data));
    hub.put_hf("o/r", "main", "f.bin", "f");
    let client = Client::new(ClientOptions {
        endpoints: Endpoints {
            huggingface: hub.base(),
            civitai: hub.base(),
        },
        ..ClientOptions::default()
    })
    .expect("client");
    let dir = tempfile::tempdir().expect("tmp");
    let mb = len as f64 / 1e6;

    let plan = client.resolve("hf:o/r/f.bin").await.expect("resolve");
    let t = Instant::now();
    let done = client
        .download(&plan, dir.path(), Some("a.bin"), &danlu_types::NoProgress)
        .await
        .expect("download");
    let ours = t.elapsed().as_secs_f64();
    assert!(done.verified);

    let url = format!("{}/storage/f", hub.base());
    let out = dir.path().join("curl.bin");
    let t = Instant::now();
    let curl = std::process::Command::new("curl")
        .args(["-s", "-o"])
        .arg(&out)
        .arg(&url)
        .status();
    let curl_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = std::process::Command::new("sha256sum").arg(&out).output();
    let sha_s = t.elapsed().as_secs_f64();

    // Resume: a part holding 90% of the file, then the rest.
    let part = dir.path().join("b.bin.part");
    let full = std::fs::read(&done.path).expect("read");
    std::fs::write(&part, &full[..len / 10 * 9]).expect("write part");
    let t = Instant::now();
    let resumed = client
        .download(&plan, dir.path(), Some("b.bin"), &danlu_types::NoProgress)
        .await
        .expect("resume");
    let resume_s = t.elapsed().as_secs_f64();

    println!("file: {mib} MiB on 127.0.0.1");
    println!(
        "danlu download (stream + SHA-256/AutoV3/BLAKE3 + write): {ours:.2} s, {:.0} MB/s",
        mb / ours
    );
    match curl {
        Ok(s) if s.success() => {
            println!("curl -o (no hash): {curl_s:.2} s, {:.0} MB/s", mb / curl_s);
            println!(
                "curl -o then sha256sum: {:.2} s, {:.0} MB/s",
                curl_s + sha_s,
                mb / (curl_s + sha_s)
            );
            println!("ratio danlu/curl: {:.2}", ours / curl_s);
        }
        _ => println!("curl: not available"),
    }
    println!(
        "resume from 90%: {resume_s:.2} s (re-hash {} MiB + fetch the rest), {:.0}% of a full download",
        resumed.resumed_from >> 20,
        100.0 * resume_s / ours
    );
}
