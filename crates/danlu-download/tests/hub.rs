//! Downloads against a local server that plays HuggingFace and Civitai.

// Test helpers outside #[test] functions: a failed expectation is a test failure.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use danlu_download::mock::{Fault, MockFile, MockHub, MockVersion};
use danlu_download::{Client, ClientOptions, Endpoints, Error, LeaveInPlace, fetch};
use danlu_types::{Reporter, TaskId};
use std::sync::Mutex;
use std::time::Duration;

/// Deterministic pseudo-random bytes (not compressible, not periodic at small scales).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn client(hub: &MockHub) -> Client {
    Client::new(ClientOptions {
        endpoints: Endpoints {
            huggingface: hub.base(),
            civitai: hub.base(),
        },
        attempts: 5,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        read_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    })
    .unwrap()
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    advanced: Mutex<u64>,
}

impl Reporter for Recorder {
    fn start(&self, label: &str, total: Option<u64>) -> TaskId {
        self.events
            .lock()
            .unwrap()
            .push(format!("start {label} {total:?}"));
        TaskId(1)
    }
    fn advance(&self, _task: TaskId, by: u64) {
        *self.advanced.lock().unwrap() += by;
    }
    fn finish(&self, _task: TaskId) {
        self.events.lock().unwrap().push("finish".into());
    }
}

fn version(id: u64, model_id: u64, key: &str, file_name: &str) -> MockVersion {
    MockVersion {
        id,
        model_id,
        model_name: "Test Hat".into(),
        model_type: "LORA".into(),
        base_model: "SD 1.5".into(),
        trained_words: vec!["ohwx hat".into(), "red".into()],
        file_name: file_name.into(),
        storage_key: key.into(),
        needs_token: false,
        early_access: false,
    }
}

#[tokio::test]
async fn hf_file_is_downloaded_verified_and_progress_is_reported() {
    let hub = MockHub::start().await.unwrap();
    let bytes = data(300_000, 1);
    hub.put_file("k1", MockFile::new(bytes.clone()));
    hub.put_hf("org/repo", "main", "sub/m.safetensors", "k1");
    let dir = tempfile::tempdir().unwrap();
    let c = client(&hub);
    let plan = c.resolve("hf:org/repo/sub/m.safetensors").await.unwrap();
    assert_eq!(plan.size, Some(300_000));
    assert_eq!(plan.file_name.as_deref(), Some("m.safetensors"));
    let rec = Recorder::default();
    let done = c.download(&plan, dir.path(), None, &rec).await.unwrap();
    assert!(done.verified);
    assert!(std::fs::read(&done.path).unwrap() == bytes);
    assert_eq!(done.path, dir.path().join("m.safetensors"));
    assert_eq!(
        *rec.events.lock().unwrap(),
        ["start m.safetensors Some(300000)", "finish"]
    );
    assert_eq!(*rec.advanced.lock().unwrap(), 300_000);
    // Nothing but the model is left in the folder (no part, lock or meta file).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["m.safetensors"]);
    // The metadata came from a HEAD on the resolve URL, the data through the redirect.
    let log = hub.log();
    assert_eq!(log[0], "HEAD /org/repo/resolve/main/sub/m.safetensors");
    assert!(log.iter().any(|l| l == "GET /storage/k1"), "{log:?}");
}

#[tokio::test]
async fn throttling_errors_and_disconnects_are_retried_and_resumed() {
    let hub = MockHub::start().await.unwrap();
    let bytes = data(500_000, 2);
    hub.put_file("k2", MockFile::new(bytes.clone()));
    hub.put_hf("o/r", "v1", "x.bin", "k2");
    hub.push_faults([
        Fault::Status(429, Some(0)),
        Fault::Disconnect(123_456),
        Fault::Status(503, None),
        Fault::Disconnect(400_000),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let c = client(&hub);
    let plan = c.resolve("hf:o/r/x.bin@v1").await.unwrap();
    let done = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap();
    assert!(std::fs::read(&done.path).unwrap() == bytes);
    assert!(done.verified);
    let log = hub.log();
    // After the first disconnect the client asks for the rest, not the whole file again.
    assert!(
        log.iter().any(|l| l.starts_with("GET /storage/k2 bytes=")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l == "GET /storage/k2 bytes=0-"),
        "{log:?}"
    );
}

#[tokio::test]
async fn retries_run_out_and_the_part_is_kept_for_later() {
    let hub = MockHub::start().await.unwrap();
    let bytes = data(200_000, 3);
    hub.put_file("k3", MockFile::new(bytes.clone()));
    hub.put_hf("o/r", "main", "y.bin", "k3");
    hub.push_faults([Fault::Disconnect(50_000)]);
    hub.push_faults(std::iter::repeat_n(Fault::Status(500, None), 10));
    let dir = tempfile::tempdir().unwrap();
    let c = client(&hub);
    let plan = c.resolve("hf:o/r/y.bin").await.unwrap();
    let err = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GaveUp { .. }), "{err}");
    assert!(!dir.path().join("y.bin").exists());
    assert!(std::fs::read(dir.path().join("y.bin.part")).unwrap() == bytes[..50_000]);
    // A later run resumes from the part.
    if let Ok(mut f) = hub.state.faults.lock() {
        f.clear();
    }
    let done = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap();
    assert_eq!(done.resumed_from, 50_000);
    assert!(std::fs::read(&done.path).unwrap() == bytes);
}

#[tokio::test]
async fn a_hash_mismatch_keeps_the_data_aside_and_files_nothing() {
    let hub = MockHub::start().await.unwrap();
    let mut file = MockFile::new(data(100_000, 4));
    file.published_sha256 = "ab".repeat(32);
    hub.put_file("k4", file);
    hub.put_hf("o/r", "main", "bad.safetensors", "k4");
    let dir = tempfile::tempdir().unwrap();
    let c = client(&hub);
    let plan = c.resolve("hf:o/r/bad.safetensors").await.unwrap();
    let err = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap_err();
    let Error::HashMismatch { kept, expected, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(expected, &"ab".repeat(32));
    assert_eq!(kept, &dir.path().join("bad.safetensors.sha256-mismatch"));
    assert!(std::fs::read(kept).unwrap() == data(100_000, 4));
    assert!(!dir.path().join("bad.safetensors").exists());
    assert!(err.to_string().contains("kept as"), "{err}");
}

#[tokio::test]
async fn a_server_that_lies_about_the_size_is_refused() {
    let hub = MockHub::start().await.unwrap();
    let mut file = MockFile::new(data(10_000, 5));
    file.published_size = 9_000;
    hub.put_file("k5", file);
    hub.put_hf("o/r", "main", "liar.bin", "k5");
    let dir = tempfile::tempdir().unwrap();
    let c = client(&hub);
    let plan = c.resolve("hf:o/r/liar.bin").await.unwrap();
    let err = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch {
                expected: 9_000,
                announced: 10_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.path().join("liar.bin").exists());
}

#[tokio::test]
async fn hub_errors_are_explained() {
    let hub = MockHub::start().await.unwrap();
    hub.put_file("k6", MockFile::new(data(1000, 6)));
    hub.put_hf("gated/repo", "main", "m.bin", "k6");
    hub.state.gated.lock().unwrap().push("gated/repo".into());
    let c = client(&hub);
    let err = c.resolve("hf:o/r/missing.bin").await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("no such file"), "{err}");
    let err = c.resolve("hf:gated/repo/m.bin").await.unwrap_err();
    assert!(err.to_string().contains("gated"), "{err}");
    let err = c.resolve("civitai:999").await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 404, .. }), "{err}");

    let mut v = version(70, 7, "k6", "m.safetensors");
    v.needs_token = true;
    hub.put_version(v);
    *hub.state.civitai_token.lock().unwrap() = Some("secret".into());
    let dir = tempfile::tempdir().unwrap();
    let plan = c.resolve("civitai:7").await.unwrap();
    let err = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 401, .. }), "{err}");
    assert!(err.to_string().contains("CIVITAI_TOKEN"), "{err}");
    let with_token = Client::new(ClientOptions {
        civitai_token: Some("secret".into()),
        ..c.options().clone()
    })
    .unwrap();
    let done = with_token
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap();
    assert!(done.verified);

    let mut v = version(80, 8, "k6", "early.safetensors");
    v.early_access = true;
    hub.put_version(v);
    let plan = c.resolve("civitai:8@80").await.unwrap();
    let err = c
        .download(&plan, dir.path(), None, &danlu_types::NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("early access"), "{err}");
}

#[tokio::test]
async fn a_redirect_loop_is_an_error() {
    let hub = MockHub::start().await.unwrap();
    let c = client(&hub);
    let plan = c.resolve(&format!("{}/loop/a", hub.base())).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = c
        .download(&plan, dir.path(), Some("x.bin"), &danlu_types::NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redirects { .. }), "{err}");
    assert!(!dir.path().join("x.bin").exists());
}

#[tokio::test]
async fn a_server_file_name_cannot_escape_the_folder() {
    let hub = MockHub::start().await.unwrap();
    let mut file = MockFile::new(data(5000, 7));
    file.disposition = Some("../../etc/CON.safetensors".into());
    hub.put_file("k7", file);
    let c = client(&hub);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b");
    let plan = c
        .resolve(&format!("{}/storage/k7", hub.base()))
        .await
        .unwrap();
    let done = c
        .download(&plan, &dir, None, &danlu_types::NoProgress)
        .await
        .unwrap();
    assert_eq!(done.path, dir.join("_CON.safetensors"));
    assert!(!done.verified, "a plain URL publishes no hash");
    assert!(std::fs::read(&done.path).unwrap() == data(5000, 7));
}

#[tokio::test]
async fn civitai_download_writes_the_a1111_sidecars() {
    let hub = MockHub::start().await.unwrap();
    let bytes = data(64_000, 8);
    hub.put_file("k8", MockFile::new(bytes.clone()));
    hub.put_version(version(101, 10, "k8", "hat_v1.safetensors"));
    *hub.state.preview.lock().unwrap() = b"\x89PNG\r\n\x1a\nfake".to_vec();
    let c = client(&hub);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/models/10/test-hat?modelVersionId=101", hub.base());
    let report = fetch(
        &c,
        &url,
        dir.path(),
        None,
        &LeaveInPlace,
        &danlu_types::NoProgress,
    )
    .await
    .unwrap();
    assert!(report.verified);
    assert_eq!(report.sha256.len(), 64);
    let model = dir.path().join("hat_v1.safetensors");
    assert!(std::fs::read(&model).unwrap() == bytes);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("hat_v1.civitai.info")).unwrap())
            .unwrap();
    assert_eq!(info["id"], 101);
    assert_eq!(info["model"]["type"], "LORA");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("hat_v1.json")).unwrap()).unwrap();
    assert_eq!(meta["activation text"], "ohwx hat, red");
    assert_eq!(meta["sd version"], "SD1");
    assert_eq!(meta["preferred weight"], 1.0);
    assert_eq!(meta["description"], "A test model");
    assert!(
        std::fs::read(dir.path().join("hat_v1.preview.png")).unwrap() == b"\x89PNG\r\n\x1a\nfake"
    );
    assert_eq!(report.sidecars.len(), 3);

    // By-hash lookup finds the same version; an unknown hash is None.
    let found = c.civitai_by_hash(&report.sha256).await.unwrap().unwrap();
    assert_eq!(found.version.id, 101);
    assert!(c.civitai_by_hash(&"00".repeat(32)).await.unwrap().is_none());
}

#[tokio::test]
async fn two_downloads_of_the_same_file_do_not_write_beside_each_other() {
    let hub = MockHub::start().await.unwrap();
    let bytes = data(200_000, 9);
    let mut file = MockFile::new(bytes.clone());
    file.rate = Some(1_000_000);
    hub.put_file("k9", file);
    hub.put_hf("o/r", "main", "same.bin", "k9");
    let c = client(&hub);
    let dir = tempfile::tempdir().unwrap();
    let plan = c.resolve("hf:o/r/same.bin").await.unwrap();
    let (a, b) = tokio::join!(
        c.download(&plan, dir.path(), None, &danlu_types::NoProgress),
        c.download(&plan, dir.path(), None, &danlu_types::NoProgress)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.path, b.path);
    assert!(
        a.already_present != b.already_present,
        "one waits for the other"
    );
    assert!(std::fs::read(&a.path).unwrap() == bytes);
    let fetched = hub
        .log()
        .iter()
        .filter(|l| l.starts_with("GET /storage/k9"))
        .count();
    assert_eq!(fetched, 1, "{:?}", hub.log());
}
