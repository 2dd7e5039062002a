//! The real `webuiapi` client (PyPI) against the server (`tests/webuiapi/check.py`): list
//! models, switch checkpoint and VAE by options, txt2img, img2img, png-info, progress,
//! interrupt, all behind `--api-auth`.
//!
//! Needs `DANLU_PYTHON`, a Python with `webuiapi` (`.ci/run` installs it in `target/ci-venv`).
//! Without it the test says so and checks nothing; with `CI` set it fails instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use danlu_server::{Server, ServerConfig, parse_api_auth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webuiapi_client_works_against_danlu() {
    let Some(python) = std::env::var_os("DANLU_PYTHON") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set DANLU_PYTHON to a Python with webuiapi (see .ci/run)"
        );
        eprintln!("DANLU_PYTHON is not set: skipping the webuiapi check");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("webui");
    let ck = root.join("models/Stable-diffusion");
    std::fs::create_dir_all(&ck).unwrap();
    for name in ["tiny", "second"] {
        danlu_fixtures::tiny::install("sd1_tiny", &ck, name).unwrap();
    }
    let mut config = ServerConfig::new(&root);
    config.port = 0;
    config.auth = parse_api_auth("tester:pw").unwrap();
    let server = Server::bind(config).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webuiapi/check.py");
    let mut command = std::process::Command::new(python);
    command.args([script, &url, "tester", "pw"]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running python");
    assert!(
        out.status.success(),
        "webuiapi check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
