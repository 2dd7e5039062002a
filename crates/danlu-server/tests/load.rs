//! A load run, ignored by default (`cargo test -p danlu-server --test load -- --ignored
//! --nocapture`): 200 concurrent clients on loopback read the lists and queue small
//! generations for a bounded time; every generation must come back, and the read latencies
//! (p50, p99) are printed, never asserted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::print_stderr
)]

use danlu_server::{Server, ServerConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CLIENTS: usize = 200;
const RUN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load run: minutes of CPU, prints latencies"]
async fn two_hundred_clients_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("webui");
    let ck = root.join("models/Stable-diffusion");
    std::fs::create_dir_all(&ck).unwrap();
    danlu_fixtures::tiny::install("sd1_tiny", &ck, "tiny").unwrap();
    let mut config = ServerConfig::new(&root);
    config.port = 0;
    let server = Server::bind(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut reads = Vec::new();
            let (mut sent, mut done) = (0usize, 0usize);
            let paths = ["/sdapi/v1/sd-models", "/sdapi/v1/samplers", "/sdapi/v1/options", "/sdapi/v1/progress", "/danlu/v1/library"];
            let mut n = 0;
            while started.elapsed() < RUN {
                // One client in ten queues one small generation; the others read.
                if i % 10 == 0 && sent == 0 {
                    sent += 1;
                    let r = client
                        .post(format!("{base}/sdapi/v1/txt2img"))
                        .json(&json!({"prompt": format!("client {i}"), "steps": 1, "width": 64, "height": 64, "seed": i}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v: Value = r.json().await.unwrap();
                    assert_eq!(v["images"].as_array().unwrap().len(), 1);
                    done += 1;
                    continue;
                }
                let t = Instant::now();
                let r = client
                    .get(format!("{base}{}", paths[n % paths.len()]))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                reads.push(t.elapsed());
                n += 1;
            }
            (reads, sent, done)
        }));
    }
    let mut reads = Vec::new();
    let (mut sent, mut done) = (0, 0);
    for t in tasks {
        let (r, s, d) = t.await.unwrap();
        reads.extend(r);
        sent += s;
        done += d;
    }
    reads.sort();
    let pct = |p: f64| reads[((reads.len() - 1) as f64 * p) as usize];
    eprintln!(
        "{CLIENTS} clients, {:.1} s: {} reads, p50 {:?}, p99 {:?}; generations {done}/{sent}",
        started.elapsed().as_secs_f64(),
        reads.len(),
        pct(0.5),
        pct(0.99)
    );
    assert_eq!(done, sent, "every queued generation came back");
}
