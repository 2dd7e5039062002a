//! The web UI in headless Chromium (`tests/browser/ui.cjs`, playwright-core). Runs only when
//! `DANLU_BROWSER_TESTS=1`: it needs `node`, `chromium` and playwright-core on `NODE_PATH`
//! (`.ci/run` installs them).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use danlu_server::{Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_picks_refreshes_generates_reads_png_info_and_files_a_model() {
    if std::env::var("DANLU_BROWSER_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set DANLU_BROWSER_TESTS=1 to run the browser test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("webui");
    let shots = std::env::var_os("DANLU_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let tiny = danlu_fixtures::tiny::model_dir().join("sd1_tiny.safetensors");
    let shapes = danlu_fixtures::tiny::model_dir().join("sd1_tiny.shapes.json");
    // The root exists before the server starts, with one checkpoint in A1111 layout.
    let ck = root.join("models/Stable-diffusion");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::copy(&tiny, ck.join("tiny.safetensors")).unwrap();
    std::fs::copy(&shapes, ck.join("tiny.shapes.json")).unwrap();
    let mut config = ServerConfig::new(&root);
    config.port = 0;
    let server = Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/ui.cjs");
    let mut command = std::process::Command::new("node");
    command
        .arg(script)
        .env("DANLU_URL", &url)
        .env("DANLU_ROOT", &root)
        .env("DANLU_TINY", &tiny)
        .env("DANLU_SHAPES", &shapes)
        .env("DANLU_SHOTS", &shots);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running node");
    assert!(
        out.status.success(),
        "browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
