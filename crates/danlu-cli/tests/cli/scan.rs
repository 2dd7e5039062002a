//! `danlu scan`, `show`, `tag` and root selection on generated roots of both layouts.

use crate::util::{TestEnv, s, stderr, stdout};
use danlu_fixtures::models::{
    CheckpointOpts, Fill, FixtureTensor, LoraStyle, ldm_vae, safetensors_embedding, sd1_checkpoint,
    sd1_lora, sdxl_checkpoint, sdxl_lora, write_safetensors,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `scan --json`, every field; unknown fields fail the test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ScanReport {
    pub root: String,
    pub layout: String,
    pub cache: String,
    pub files: usize,
    pub unchanged: usize,
    pub new: usize,
    pub changed: usize,
    pub removed: usize,
    pub read: usize,
    pub hashed: usize,
    pub hashed_bytes: u64,
    pub imported: usize,
    pub hash_pending: usize,
    pub cancelled: bool,
    pub errors: Vec<Failure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

/// One model of `list --json` / `show --json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Model {
    pub path: String,
    pub name: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub format: Option<String>,
    pub kind: Option<String>,
    pub base: Option<String>,
    pub variant: Option<String>,
    pub subformat: Option<String>,
    pub components: Option<serde_json::Value>,
    pub dtype: Option<String>,
    pub parameters: Option<u64>,
    pub vectors: Option<u64>,
    #[serde(default)]
    pub evidence: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    pub hashes: Option<Hashes>,
    pub safety: Option<serde_json::Value>,
    pub error: Option<String>,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Hashes {
    pub sha256: Option<String>,
    pub autov1: Option<String>,
    pub autov2: Option<String>,
    pub autov3: Option<String>,
    pub blake3: Option<String>,
    pub source: Option<String>,
}

pub fn put(path: &Path, tensors: &[FixtureTensor], fill: Fill) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_safetensors(path, tensors, &BTreeMap::new(), fill).unwrap();
    path.to_path_buf()
}

/// A small library in A1111 or ComfyUI layout: LoRAs of two families, embeddings, a VAE,
/// sidecars, and (with `checkpoints`) three sparse multi-GB checkpoints, one without a VAE.
pub fn library(env: &TestEnv, name: &str, comfy: bool) -> PathBuf {
    library_with(env, name, comfy, true)
}

/// [`library`], optionally without the big checkpoints (for tests that hash everything).
pub fn library_with(env: &TestEnv, name: &str, comfy: bool, checkpoints: bool) -> PathBuf {
    let root = env.path(name);
    let (ck, lora, vae, emb) = if comfy {
        (
            "models/checkpoints",
            "models/loras",
            "models/vae",
            "models/embeddings",
        )
    } else {
        (
            "models/Stable-diffusion",
            "models/Lora",
            "models/VAE",
            "embeddings",
        )
    };
    std::fs::create_dir_all(root.join(ck)).unwrap();
    if checkpoints {
        put(
            &root.join(ck).join("dream.safetensors"),
            &sd1_checkpoint(&CheckpointOpts::default()),
            Fill::Sparse,
        );
        let novae = CheckpointOpts {
            vae: false,
            ..CheckpointOpts::default()
        };
        put(
            &root.join(ck).join("pruned.safetensors"),
            &sd1_checkpoint(&novae),
            Fill::Sparse,
        );
        put(
            &root.join(ck).join("xl.safetensors"),
            &sdxl_checkpoint(&CheckpointOpts::default()),
            Fill::Sparse,
        );
    }
    for i in 0..6 {
        put(
            &root.join(lora).join(format!("style{i}.safetensors")),
            &sd1_lora(LoraStyle::Kohya, 4),
            Fill::Seeded(i + 1),
        );
    }
    put(
        &root.join(lora).join("xl_detail.safetensors"),
        &sdxl_lora(LoraStyle::Locon, 4),
        Fill::Seeded(40),
    );
    std::fs::write(
        root.join(lora).join("style1.civitai.info"),
        r#"{"model":{"tags":["realistic"]}}"#,
    )
    .unwrap();
    for i in 0..3 {
        put(
            &root.join(emb).join(format!("emb{i}.safetensors")),
            &safetensors_embedding(2, 768),
            Fill::Seeded(90 + i),
        );
    }
    put(
        &root.join(vae).join("anime-vae.safetensors"),
        &ldm_vae("", 4, true, danlu_types::Dtype::F16),
        Fill::Seeded(5),
    );
    root
}

pub fn json<T: for<'de> Deserialize<'de>>(out: &std::process::Output) -> T {
    serde_json::from_str(&stdout(out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn scan_of_both_layouts_indexes_everything_and_a_rescan_reads_nothing() {
    let env = TestEnv::new();
    for (name, comfy, layout) in [("webui", false, "a1111"), ("ComfyUI", true, "comfyui")] {
        let root = library(&env, name, comfy);
        let out = env.run(&["scan", s(&root), "--no-hash", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let r: ScanReport = json(&out);
        assert_eq!(r.layout, layout);
        assert_eq!((r.files, r.new, r.read), (14, 14, 14), "{r:?}");
        assert!(root.join(".danlu/library.sqlite").is_file());
        let again: ScanReport = json(&env.run(&["scan", s(&root), "--no-hash", "--json"]));
        assert_eq!(
            (again.read, again.unchanged, again.hash_pending),
            (0, 14, 14),
            "{again:?}"
        );
    }
}

#[test]
fn scan_hashes_what_has_no_hash_once_and_then_nothing() {
    let env = TestEnv::new();
    let root = library_with(&env, "lib", true, false);
    let first: ScanReport = json(&env.run(&["scan", s(&root), "--json"]));
    assert_eq!(
        (first.files, first.read, first.hashed, first.hash_pending),
        (11, 11, 11, 0),
        "{first:?}"
    );
    let again: ScanReport = json(&env.run(&["scan", s(&root), "--json"]));
    assert_eq!(
        (again.read, again.hashed, again.unchanged),
        (0, 0, 11),
        "{again:?}"
    );
}

#[test]
fn human_scan_output_names_the_root_and_counts() {
    let env = TestEnv::new();
    let root = library(&env, "lib", false);
    let out = env.run(&["scan", s(&root), "--no-hash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(a1111 layout)"), "{text}");
    assert!(
        text.contains("14 (0 unchanged, 14 new, 0 changed, 0 removed)"),
        "{text}"
    );
}

#[test]
fn root_comes_from_flag_then_env_then_config_file() {
    let env = TestEnv::new();
    let root = library(&env, "lib", false);
    // No root anywhere: usage error naming the three ways.
    let out = env.run(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DANLU_ROOT"), "{}", stderr(&out));
    // Config file.
    std::fs::create_dir_all(env.path(".config/danlu")).unwrap();
    std::fs::write(
        env.path(".config/danlu/config.yaml"),
        format!("root: {}\n", root.display()),
    )
    .unwrap();
    let models: Vec<Model> = json(&env.run(&["list", "--json"]));
    assert_eq!(models.len(), 14);
    // Env beats config.
    let out = env
        .cmd()
        .args(["list", "--json"])
        .env("DANLU_ROOT", env.path("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("missing"));
    // Flag beats env.
    let out = env
        .cmd()
        .args(["list", "--json", "--root", s(&root)])
        .env("DANLU_ROOT", env.path("missing"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn show_finds_a_model_by_name_and_by_hash_and_tag_sets_categories() {
    let env = TestEnv::new();
    let root = library_with(&env, "lib", false, false);
    assert!(env.run(&["scan", s(&root)]).status.success());
    let m: Model = json(&env.run(&["show", "--root", s(&root), "--json", "style2"]));
    assert_eq!(m.kind.as_deref(), Some("lora"));
    let bytes = std::fs::read(&m.path).unwrap();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let h = m.hashes.unwrap();
    assert_eq!(h.sha256.as_deref(), Some(sha.as_str()));
    let by_hash: Model = json(&env.run(&["show", "--root", s(&root), "--json", &sha[..10]]));
    assert_eq!(by_hash.path, m.path);
    let missing = env.run(&["show", "--root", s(&root), "nothing-like-this"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("nothing-like-this"));
    // Sidecar categories, then a user category.
    let s1: Model = json(&env.run(&["show", "--root", s(&root), "--json", "style1"]));
    assert_eq!(s1.categories, vec!["realistic"]);
    let tagged: Model = json(&env.run(&[
        "tag",
        "--root",
        s(&root),
        "--json",
        "style2",
        "--category",
        "anime",
        "--tag",
        "ink",
    ]));
    assert_eq!(
        (tagged.categories, tagged.tags),
        (vec!["anime".to_string()], vec!["ink".to_string()])
    );
    let bad = env.run(&["tag", "--root", s(&root), "style2", "--category", "cute"]);
    assert_eq!(bad.status.code(), Some(2));
}
