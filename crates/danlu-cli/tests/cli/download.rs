//! `danlu download`, `danlu catalog` and `danlu civitai lookup` against a local server that plays
//! HuggingFace and Civitai.

use crate::util::{TestEnv, stderr, stdout};
use danlu_download::mock::{MockFile, MockHub, MockVersion};
use danlu_fixtures::models::{Fill, LoraStyle, sd1_lora, write_safetensors};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// `download --json` for one source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    source: String,
    url: String,
    path: String,
    size: u64,
    sha256: String,
    verified: bool,
    resumed_from: u64,
    already_present: bool,
    sidecars: Vec<String>,
    kind: String,
    base: String,
}

/// `catalog --json` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Entry {
    name: String,
    title: String,
    category: String,
    base: String,
    source: Option<String>,
    alternatives: Vec<String>,
    verified: bool,
    note: String,
}

/// A real kohya LoRA file's bytes (so the library identifies and files it).
fn lora_bytes(env: &TestEnv) -> Vec<u8> {
    let p = env.path("fixture.safetensors");
    write_safetensors(
        &p,
        &sd1_lora(LoraStyle::Kohya, 4),
        &BTreeMap::new(),
        Fill::Seeded(3),
    )
    .unwrap();
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    b
}

fn hat_version() -> MockVersion {
    MockVersion {
        id: 501,
        model_id: 50,
        model_name: "Ink Hat".into(),
        model_type: "LORA".into(),
        base_model: "SD 1.5".into(),
        trained_words: vec!["inkhat".into()],
        file_name: "inkhat_v1.safetensors".into(),
        storage_key: "hat".into(),
        needs_token: false,
        early_access: false,
    }
}

fn a1111_root(env: &TestEnv) -> std::path::PathBuf {
    let lib = env.path("webui");
    std::fs::create_dir_all(lib.join("models/Stable-diffusion")).unwrap();
    lib
}

fn danlu(env: &TestEnv, hub: &MockHub) -> std::process::Command {
    let mut c = env.cmd();
    c.env("HF_ENDPOINT", hub.base())
        .env("CIVITAI_ENDPOINT", hub.base())
        .env("DANLU_DOWNLOAD_BACKOFF_MS", "10")
        .env_remove("HF_TOKEN")
        .env_remove("CIVITAI_TOKEN")
        .env_remove("DANLU_ROOT");
    c
}

async fn output(mut c: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civitai_download_is_filed_with_its_sidecars() {
    let env = TestEnv::new();
    let hub = MockHub::start().await.unwrap();
    let bytes = lora_bytes(&env);
    hub.put_file("hat", MockFile::new(bytes.clone()));
    hub.put_version(hat_version());
    *hub.state.preview.lock().unwrap() = b"\x89PNG\r\n\x1a\npreview".to_vec();
    let lib = a1111_root(&env);

    let mut c = danlu(&env, &hub);
    c.args(["download", "civitai:50", "--root"])
        .arg(&lib)
        .arg("--json");
    let out = output(c).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Report = serde_json::from_str(&stdout(&out)).unwrap();
    let model = lib.join("models/Lora/inkhat_v1.safetensors");
    assert_eq!(Path::new(&r.path), model);
    assert_eq!((r.kind.as_str(), r.base.as_str()), ("lora", "sd1"));
    assert!(r.verified);
    assert!(std::fs::read(&model).unwrap() == bytes);
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lib.join("models/Lora/inkhat_v1.civitai.info")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["id"], 501);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lib.join("models/Lora/inkhat_v1.json")).unwrap())
            .unwrap();
    assert_eq!(meta["activation text"], "inkhat");
    assert_eq!(
        std::fs::read(lib.join("models/Lora/inkhat_v1.preview.png")).unwrap(),
        b"\x89PNG\r\n\x1a\npreview"
    );
    assert_eq!(r.sidecars.len(), 3, "{:?}", r.sidecars);
    // Nothing is left in the download area.
    let staging: Vec<_> = std::fs::read_dir(lib.join(".danlu-downloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(staging.is_empty(), "{staging:?}");

    // The filed model is in the library's cache: `list --json` shows it.
    let mut c = danlu(&env, &hub);
    c.args(["list", "--root"]).arg(&lib).arg("--json");
    let out = output(c).await;
    assert!(
        stdout(&out).contains("inkhat_v1.safetensors"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_mismatch_leaves_the_library_unchanged() {
    let env = TestEnv::new();
    let hub = MockHub::start().await.unwrap();
    let mut f = MockFile::new(lora_bytes(&env));
    f.published_sha256 = "cd".repeat(32);
    hub.put_file("hat", f);
    hub.put_version(hat_version());
    let lib = a1111_root(&env);
    let mut c = danlu(&env, &hub);
    c.args(["download", "civitai:50@501", "--root"]).arg(&lib);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sha256 is"), "{err}");
    assert!(
        err.contains("inkhat_v1.safetensors.sha256-mismatch"),
        "{err}"
    );
    assert!(!lib.join("models/Lora").exists());
    assert!(
        lib.join(".danlu-downloads/inkhat_v1.safetensors.sha256-mismatch")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_download_resumes_to_a_byte_identical_file() {
    let env = TestEnv::new();
    let hub = MockHub::start().await.unwrap();
    // Pseudo-random bytes, streamed slowly enough to kill the process midway.
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    let mut slow = MockFile::new(bytes.clone());
    slow.rate = Some(1_000_000);
    hub.put_file("big", slow);
    hub.put_hf("org/big", "main", "big.bin", "big");
    let to = env.path("dl");

    let mut c = danlu(&env, &hub);
    c.args(["download", "hf:org/big/big.bin", "--to"]).arg(&to);
    let mut child = c.spawn().unwrap();
    let part = to.join("big.bin.part");
    let start = Instant::now();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 600_000 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the download never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    let had = std::fs::metadata(&part).unwrap().len();
    assert!(had > 0 && had < 3_000_000);
    assert!(!to.join("big.bin").exists(), "nothing under the final name");

    hub.put_file("big", MockFile::new(bytes.clone()));
    let mut c = danlu(&env, &hub);
    c.args(["download", "hf:org/big/big.bin", "--json", "--to"])
        .arg(&to);
    let out = output(c).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Report = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(r.resumed_from >= had, "{} < {had}", r.resumed_from);
    assert!(r.verified);
    assert!(std::fs::read(to.join("big.bin")).unwrap() == bytes);
    assert!(!part.exists());
    assert!(
        hub.log()
            .iter()
            .any(|l| l == &format!("GET /storage/big bytes={}-", r.resumed_from)),
        "{:?}",
        hub.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civitai_lookup_by_hash_writes_sidecars_and_categories() {
    let env = TestEnv::new();
    let hub = MockHub::start().await.unwrap();
    let bytes = lora_bytes(&env);
    hub.put_file("hat", MockFile::new(bytes.clone()));
    hub.put_version(hat_version());
    let dir = env.path("loras");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine.safetensors"), &bytes).unwrap();
    let mut c = danlu(&env, &hub);
    c.args(["civitai", "lookup", "--json"]).arg(&dir);
    let out = output(c).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let items: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(items[0]["found"], true);
    assert_eq!(items[0]["version_id"], 501);
    assert_eq!(items[0]["categories"], serde_json::json!(["anime"]));
    assert!(dir.join("mine.civitai.info").exists());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("mine.json")).unwrap()).unwrap();
    assert_eq!(meta["activation text"], "inkhat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn civitai_lookup_all_covers_the_root_and_skips_files_already_looked_up() {
    let env = TestEnv::new();
    let hub = MockHub::start().await.unwrap();
    let bytes = lora_bytes(&env);
    hub.put_file("hat", MockFile::new(bytes.clone()));
    hub.put_version(hat_version());
    let lib = env.path("webui");
    let loras = lib.join("models/Lora");
    std::fs::create_dir_all(&loras).unwrap();
    std::fs::create_dir_all(lib.join("models/Stable-diffusion")).unwrap();
    std::fs::write(loras.join("hat.safetensors"), &bytes).unwrap();
    std::fs::write(loras.join("done.safetensors"), &bytes).unwrap();
    std::fs::write(loras.join("done.civitai.info"), b"{}").unwrap();
    let mut c = danlu(&env, &hub);
    c.args(["civitai", "lookup", "--all", "--json", "--root"])
        .arg(&lib);
    let out = output(c).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let items: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    let by = |stem: &str| {
        items
            .iter()
            .find(|i| i["path"].as_str().unwrap().ends_with(stem))
            .unwrap()
            .clone()
    };
    assert_eq!(by("hat.safetensors")["found"], true);
    assert_eq!(by("done.safetensors")["skipped"], true);
    assert!(loras.join("hat.civitai.info").exists());
    assert_eq!(
        std::fs::read(loras.join("done.civitai.info")).unwrap(),
        b"{}"
    );
}

#[test]
fn catalog_lists_the_lesson_models_and_filters_by_category() {
    let env = TestEnv::new();
    let out = env.run(&["catalog", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Vec<Entry> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(all.len(), 9);
    let out = env.run(&["catalog", "--category", "2.5d", "--json"]);
    let some: Vec<Entry> = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<_> = some.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["neverending-dream", "protogen", "guofeng3"]);
    let out = env.run(&["catalog", "--category", "cubist"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["catalog"]);
    assert!(
        stdout(&out).contains("danlu download catalog:counterfeit"),
        "{}",
        stdout(&out)
    );
}

/// A folder on a 256 KiB tmpfs, unmounted on drop; `None` where mounting is not allowed
/// (not root, or no mount namespace rights), in which case the test says so and passes.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_leaves_nothing_under_the_final_name() {
    let env = TestEnv::new();
    let hub = MockHub::start().await.unwrap();
    let bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    hub.put_file("big", MockFile::new(bytes));
    hub.put_hf("org/big", "main", "big.bin", "big");
    let to = env.path("small");
    let Some(_disk) = SmallDisk::mount(&to) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut c = danlu(&env, &hub);
    c.args(["download", "hf:org/big/big.bin", "--to"]).arg(&to);
    let out = output(c).await;
    assert!(!out.status.success(), "a 2 MB file cannot fit on 256 KiB");
    let err = stderr(&out);
    assert!(
        err.contains("big.bin") && err.to_lowercase().contains("space"),
        "the error names the file and the cause: {err}"
    );
    assert!(!to.join("big.bin").exists(), "nothing under the final name");
}
