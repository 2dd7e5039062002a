//! Library tests on generated roots of both layouts: scan, cache, A1111 hash import, sort, VAE
//! pairing, doctor.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use danlu_fixtures::models::{
    CheckpointOpts, Fill, FixtureTensor, LoraStyle, UpscalerArch, flux_lora, ldm_vae,
    safetensors_embedding, sd1_checkpoint, sd1_lora, sdxl_checkpoint, sdxl_lora, upscaler,
    write_safetensors,
};
use danlu_library::doctor::{Fix, Problem, apply_fixes};
use danlu_library::sort::SortAction;
use danlu_library::vae::VaeChoice;
use danlu_library::{
    Cache, Layout, Root, ScanOptions, SortMode, SortOptions, doctor, find_model, resolve_vae, scan,
    sort,
};
use danlu_types::{Base, Kind, NoProgress, Reporter, TaskId};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

fn put(path: &Path, tensors: &[FixtureTensor], fill: Fill) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_safetensors(path, tensors, &BTreeMap::new(), fill).unwrap();
    path.to_path_buf()
}

fn no_hash() -> ScanOptions {
    ScanOptions {
        hash: false,
        ..ScanOptions::default()
    }
}

fn sha256_file(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// An A1111 root: sparse SD1 (baked VAE) and SDXL checkpoints, an SD1 checkpoint without a VAE,
/// LoRAs of three families (one in the wrong folder), embeddings, a VAE, an upscaler, a
/// duplicate, a broken file and sidecars.
fn a1111_root(dir: &Path) -> Root {
    let sd = dir.join("models/Stable-diffusion");
    std::fs::write(dir.join("webui.py"), "").unwrap();
    put(
        &sd.join("dream.safetensors"),
        &sd1_checkpoint(&CheckpointOpts::default()),
        Fill::Sparse,
    );
    put(
        &sd.join("xl/juggernaut.safetensors"),
        &sdxl_checkpoint(&CheckpointOpts::default()),
        Fill::Sparse,
    );
    let novae = CheckpointOpts {
        vae: false,
        ..CheckpointOpts::default()
    };
    put(
        &sd.join("pruned.safetensors"),
        &sd1_checkpoint(&novae),
        Fill::Sparse,
    );
    for i in 0..10 {
        put(
            &dir.join(format!("models/Lora/style{i}.safetensors")),
            &sd1_lora(LoraStyle::Kohya, 4),
            Fill::Seeded(i + 1),
        );
    }
    put(
        &dir.join("models/Lora/xl_detail.safetensors"),
        &sdxl_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(50),
    );
    put(
        &dir.join("models/VAE/flux_lora_here.safetensors"),
        &flux_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(51),
    );
    for i in 0..5 {
        put(
            &dir.join(format!("embeddings/emb{i}.safetensors")),
            &safetensors_embedding(4, 768),
            Fill::Seeded(100 + i),
        );
    }
    put(
        &dir.join("models/VAE/vae-ft-mse.safetensors"),
        &ldm_vae("", 4, true, danlu_types::Dtype::F16),
        Fill::Sparse,
    );
    put(
        &dir.join("models/ESRGAN/4x.pth.safetensors"),
        &upscaler(UpscalerArch::Rrdb),
        Fill::Sparse,
    );
    std::fs::copy(
        dir.join("models/Lora/style0.safetensors"),
        dir.join("models/Lora/copy_of_style0.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.join("models/Lora/broken.safetensors"), b"not a model").unwrap();
    std::fs::write(
        dir.join("models/Lora/style1.civitai.info"),
        r#"{"model":{"tags":["anime","girl"]}}"#,
    )
    .unwrap();
    Root::open(dir).unwrap()
}

fn kind_of(cache: &Cache, path: &Path) -> Kind {
    cache
        .get(&path.display().to_string())
        .unwrap()
        .unwrap()
        .kind()
}

#[test]
fn scan_identifies_every_file_and_a_rescan_of_an_unchanged_library_reads_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = a1111_root(d.path());
    assert_eq!(root.layout, Layout::A1111);
    let cache = Cache::open(&root.cache_path()).unwrap();
    let cancel = AtomicBool::new(false);
    let r = scan(&root, &cache, &no_hash(), &NoProgress, &cancel).unwrap();
    assert_eq!(r.files, 24, "{r:?}");
    assert_eq!((r.new, r.read, r.unchanged), (24, 24, 0));
    assert_eq!(r.errors.len(), 1, "the broken file: {:?}", r.errors);
    let all = cache.all().unwrap();
    let count = |k: Kind| all.iter().filter(|m| m.kind() == k).count();
    assert_eq!(count(Kind::Checkpoint), 3);
    assert_eq!(count(Kind::Lora), 13);
    assert_eq!(count(Kind::Embedding), 5);
    assert_eq!(count(Kind::Vae), 1);
    assert_eq!(count(Kind::Upscaler), 1);
    let xl = find_model(&all, "juggernaut", &root.path).unwrap();
    assert_eq!(xl.base(), Base::Sdxl);
    assert!(xl.size > 6_000_000_000);
    // Civitai sidecar tags became categories.
    let s1 = find_model(&all, "style1", &root.path).unwrap();
    assert_eq!(s1.categories, vec![danlu_library::Category::Anime]);

    // Replace a LoRA's bytes with garbage of the same size and put its mtime back: a rescan
    // that read it would now call it unknown.
    let lora = d.path().join("models/Lora/style3.safetensors");
    let meta = std::fs::metadata(&lora).unwrap();
    let garbage = vec![0xAB; meta.len() as usize];
    std::fs::write(&lora, &garbage).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&lora)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let r = scan(&root, &cache, &no_hash(), &NoProgress, &cancel).unwrap();
    assert_eq!(
        (r.read, r.unchanged, r.new, r.changed, r.hashed),
        (0, 24, 0, 0, 0)
    );
    assert_eq!(
        kind_of(&cache, &lora),
        Kind::Lora,
        "the rescan did not open the file"
    );

    // A changed mtime makes it read again.
    std::fs::File::options()
        .write(true)
        .open(&lora)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    std::fs::remove_file(d.path().join("embeddings/emb4.safetensors")).unwrap();
    let r = scan(&root, &cache, &no_hash(), &NoProgress, &cancel).unwrap();
    assert_eq!((r.read, r.changed, r.removed), (1, 1, 1));
    assert_eq!(kind_of(&cache, &lora), Kind::Unknown);
}

/// Sets the cancel flag once `after` files have been hashed.
struct CancelAfter<'a> {
    cancel: &'a AtomicBool,
    after: usize,
    seen: AtomicUsize,
}

impl Reporter for CancelAfter<'_> {
    fn start(&self, _label: &str, _total: Option<u64>) -> TaskId {
        TaskId(0)
    }
    fn advance(&self, _task: TaskId, _by: u64) {}
    fn finish(&self, _task: TaskId) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.after {
            self.cancel.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn hashing_is_interrupted_and_resumed_with_nothing_lost_or_hashed_twice() {
    let d = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..8 {
        files.push(put(
            &d.path().join(format!("models/Lora/l{i}.safetensors")),
            &sd1_lora(LoraStyle::Kohya, 4),
            Fill::Seeded(i + 7),
        ));
    }
    let root = Root::open(d.path()).unwrap();
    let cache = Cache::open(&root.cache_path()).unwrap();
    let cancel = AtomicBool::new(false);
    let opts = ScanOptions {
        threads: 2,
        ..ScanOptions::default()
    };
    // Identifying starts and finishes one task, then each hashed file one more: cancel after
    // three files are hashed.
    let rep = CancelAfter {
        cancel: &cancel,
        after: 4,
        seen: AtomicUsize::new(0),
    };
    let first = scan(&root, &cache, &opts, &rep, &cancel).unwrap();
    assert!(first.cancelled);
    assert!(first.hashed >= 3 && first.hashed < 8, "{first:?}");
    assert_eq!(first.hash_pending, 8 - first.hashed);
    let cancel = AtomicBool::new(false);
    let second = scan(&root, &cache, &opts, &NoProgress, &cancel).unwrap();
    assert_eq!(second.hashed + first.hashed, 8, "no file hashed twice");
    assert_eq!((second.hash_pending, second.read), (0, 0));
    for f in &files {
        let rec = cache.get(&f.display().to_string()).unwrap().unwrap();
        let h = rec.hashes.unwrap();
        assert_eq!(h.sha256.as_deref(), Some(sha256_file(f).as_str()));
        assert_eq!(h.autov2.as_deref(), Some(&sha256_file(f)[..10]));
        assert!(h.blake3.is_some() && h.autov1.is_some());
    }
}

#[test]
fn fresh_a1111_cache_json_hashes_are_imported_and_stale_ones_are_not() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("webui.py"), "").unwrap();
    let a = put(
        &d.path().join("models/Lora/fresh.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(1),
    );
    let b = put(
        &d.path().join("models/Lora/stale.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(2),
    );
    let c = put(
        &d.path().join("models/Stable-diffusion/sub/m.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(3),
    );
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // Values that are not these files' hashes: only an import can have put them there.
    let fake = |c: char| c.to_string().repeat(64);
    let json = serde_json::json!({
        "hashes": {
            "lora/fresh": {"mtime": mtime(&a) + 1.0, "sha256": fake('a')},
            "lora/stale": {"mtime": mtime(&b) - 100.0, "sha256": fake('b')},
            "checkpoint/sub/m.safetensors": {"mtime": mtime(&c), "sha256": fake('c')},
        },
        "hashes-addnet": {"lora/fresh": {"mtime": mtime(&a) + 1.0, "sha256": fake('d')}},
    });
    std::fs::write(d.path().join("cache.json"), json.to_string()).unwrap();
    let root = Root::open(d.path()).unwrap();
    let cache = Cache::open(&root.cache_path()).unwrap();
    let r = scan(
        &root,
        &cache,
        &ScanOptions::default(),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!((r.imported, r.hashed), (2, 1), "{r:?}");
    let h = |p: &Path| {
        cache
            .get(&p.display().to_string())
            .unwrap()
            .unwrap()
            .hashes
            .unwrap()
    };
    assert_eq!(h(&a).sha256, Some(fake('a')));
    assert_eq!(h(&a).autov3, Some(fake('d')[..12].to_owned()));
    assert_eq!(h(&a).source.as_deref(), Some("a1111_cache"));
    assert_eq!(h(&c).sha256, Some(fake('c')));
    assert_eq!(h(&b).sha256, Some(sha256_file(&b)));
}

#[test]
fn comfyui_root_reads_extra_model_paths_and_shares_an_a1111_library() {
    let d = tempfile::tempdir().unwrap();
    let a1111 = d.path().join("webui");
    let comfy = d.path().join("ComfyUI");
    put(
        &a1111.join("models/Lora/shared.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(1),
    );
    put(
        &comfy.join("models/checkpoints/own.safetensors"),
        &sd1_checkpoint(&CheckpointOpts::default()),
        Fill::Sparse,
    );
    std::fs::write(
        comfy.join("extra_model_paths.yaml"),
        "a111:\n    base_path: ../webui/\n    checkpoints: models/Stable-diffusion\n    loras: |\n        models/Lora\n        models/LyCORIS\n",
    )
    .unwrap();
    let root = Root::open(&comfy).unwrap();
    assert_eq!(root.layout, Layout::ComfyUi);
    let cache = Cache::open(&root.cache_path()).unwrap();
    let r = scan(
        &root,
        &cache,
        &no_hash(),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert_eq!(r.files, 2);
    let all = cache.all().unwrap();
    let shared = find_model(&all, "shared", &root.path).unwrap();
    assert!(root.is_in_place(shared.as_path(), Kind::Lora));
    assert!(
        doctor(&root, &all)
            .findings
            .iter()
            .all(|f| f.problem != Problem::WrongFolder)
    );
}

#[test]
fn sort_files_by_kind_keeps_sidecars_never_overwrites_and_leaves_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let lib = d.path().join("lib");
    std::fs::create_dir_all(lib.join("models/checkpoints")).unwrap();
    let inbox = d.path().join("inbox");
    let lora = put(
        &inbox.join("detail.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(1),
    );
    std::fs::write(inbox.join("detail.preview.png"), b"png").unwrap();
    std::fs::write(inbox.join("detail.civitai.info"), b"{}").unwrap();
    let same = put(
        &inbox.join("sub/detail_again.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(1),
    );
    let clash = put(
        &lib.join("models/loras/other.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(2),
    );
    let other = put(
        &inbox.join("other.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(3),
    );
    std::fs::write(inbox.join("notes.bin"), b"nothing known").unwrap();
    put(
        &inbox.join("xl.safetensors"),
        &sdxl_checkpoint(&CheckpointOpts::default()),
        Fill::Sparse,
    );
    let (lora_sha, other_sha, clash_sha) =
        (sha256_file(&lora), sha256_file(&other), sha256_file(&clash));

    let root = Root::open(&lib).unwrap();
    let cache = Cache::open(&root.cache_path()).unwrap();
    let opts = SortOptions {
        mode: SortMode::Move,
        dry_run: true,
        step_delay: None,
    };
    let cancel = AtomicBool::new(false);
    let dry = sort(
        &root,
        Some(&cache),
        std::slice::from_ref(&inbox),
        &opts,
        &NoProgress,
        &cancel,
    )
    .unwrap();
    assert!(dry.items.iter().any(|i| i.action == SortAction::Move));
    assert!(lora.exists(), "a dry run changes nothing");

    let opts = SortOptions {
        dry_run: false,
        ..opts
    };
    let r = sort(
        &root,
        Some(&cache),
        std::slice::from_ref(&inbox),
        &opts,
        &NoProgress,
        &cancel,
    )
    .unwrap();
    let item = |name: &str| r.items.iter().find(|i| i.source.ends_with(name)).unwrap();
    let placed = lib.join("models/loras/detail.safetensors");
    assert_eq!(item("/detail.safetensors").action, SortAction::Move);
    assert_eq!(sha256_file(&placed), lora_sha);
    assert!(!lora.exists());
    assert_eq!(
        std::fs::read(lib.join("models/loras/detail.preview.png")).unwrap(),
        b"png"
    );
    assert!(lib.join("models/loras/detail.civitai.info").exists());
    // Same content as a file filed a moment before: reported, source left.
    let dup = item("detail_again.safetensors");
    assert_eq!(dup.action, SortAction::Duplicate);
    assert_eq!(
        dup.duplicate_of.as_deref(),
        Some(placed.display().to_string().as_str())
    );
    assert!(same.exists());
    // Same name, other content: both kept.
    let o = item("/other.safetensors");
    assert!(o.renamed);
    assert_eq!(sha256_file(&clash), clash_sha);
    assert_eq!(
        sha256_file(&lib.join("models/loras/other-2.safetensors")),
        other_sha
    );
    assert_eq!(
        item("xl.safetensors")
            .destination
            .as_deref()
            .map(|p| p.contains("models/checkpoints")),
        Some(true)
    );
    assert_eq!(item("notes.bin").action, SortAction::Failed);
    // The cache follows the moves.
    assert!(cache.get(&placed.display().to_string()).unwrap().is_some());
}

#[test]
fn vae_pairing_follows_a1111_order_and_refuses_another_family() {
    let d = tempfile::tempdir().unwrap();
    let sd = d.path().join("models/Stable-diffusion");
    let novae = CheckpointOpts {
        vae: false,
        ..CheckpointOpts::default()
    };
    put(
        &sd.join("anything.safetensors"),
        &sd1_checkpoint(&novae),
        Fill::Sparse,
    );
    put(
        &sd.join("baked.safetensors"),
        &sd1_checkpoint(&CheckpointOpts::default()),
        Fill::Sparse,
    );
    put(
        &sd.join("lonely.safetensors"),
        &sd1_checkpoint(&novae),
        Fill::Sparse,
    );
    let vae = |name: &str| {
        put(
            &d.path().join("models/VAE").join(name),
            &ldm_vae("", 4, true, danlu_types::Dtype::F16),
            Fill::Sparse,
        )
    };
    vae("anything-v4.vae.safetensors");
    vae("kl-f8-anime.safetensors");
    vae("sdxl_vae.safetensors");
    let root = Root::open(d.path()).unwrap();
    let cache = Cache::open(&root.cache_path()).unwrap();
    scan(
        &root,
        &cache,
        &no_hash(),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    let all = cache.all().unwrap();
    let ck = |n: &str| find_model(&all, n, &root.path).unwrap();

    let near = resolve_vae(&root, &all, ck("anything"), None);
    assert_eq!(near.choice, VaeChoice::NearCheckpoint);
    assert!(near.vae.unwrap().ends_with("anything-v4.vae.safetensors"));
    let explicit = resolve_vae(&root, &all, ck("anything"), Some("kl-f8-anime.safetensors"));
    assert_eq!(explicit.choice, VaeChoice::Explicit);
    assert_eq!(
        resolve_vae(&root, &all, ck("baked"), None).choice,
        VaeChoice::Baked
    );
    let none = resolve_vae(&root, &all, ck("lonely"), None);
    assert_eq!(none.choice, VaeChoice::None);
    // An SDXL VAE (named so) on an SD1 checkpoint is refused, naming both.
    let bad = resolve_vae(&root, &all, ck("anything"), Some("sdxl_vae.safetensors"));
    let refusal = bad.refused.expect("refused");
    assert!(
        refusal.contains("sdxl_vae.safetensors") && refusal.contains("anything.safetensors"),
        "{refusal}"
    );

    // User metadata beats the name rule; `None` means the baked VAE.
    std::fs::write(
        sd.join("anything.json"),
        r#"{"description": "x", "vae": "kl-f8-anime.safetensors"}"#,
    )
    .unwrap();
    let meta = resolve_vae(&root, &all, ck("anything"), None);
    assert_eq!(meta.choice, VaeChoice::UserMetadata);
    assert!(meta.vae.unwrap().ends_with("kl-f8-anime.safetensors"));

    // Doctor: `lonely` has no VAE; --fix pairs it through its `.json` sidecar.
    let mut report = doctor(&root, &all);
    let f = report
        .findings
        .iter()
        .find(|f| f.problem == Problem::NoVae)
        .unwrap();
    assert!(f.path.ends_with("lonely.safetensors"));
    assert!(matches!(f.fix, Some(Fix::Pair { .. })));
    assert!(report.findings.iter().any(|f| f.problem == Problem::Fp16Overflow && f.path.ends_with("sdxl_vae.safetensors")));
    apply_fixes(&mut report, &cache).unwrap();
    assert!(
        report.applied.iter().all(|a| a.error.is_none()),
        "{:?}",
        report.applied
    );
    assert_ne!(
        resolve_vae(&root, &all, ck("lonely"), None).choice,
        VaeChoice::None
    );
}

#[test]
fn doctor_finds_wrong_folders_orphan_bases_broken_files_and_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let root = a1111_root(d.path());
    let cache = Cache::open(&root.cache_path()).unwrap();
    let opts = ScanOptions {
        hash: false,
        ..ScanOptions::default()
    };
    scan(&root, &cache, &opts, &NoProgress, &AtomicBool::new(false)).unwrap();
    // Hash only the small files (the sparse checkpoints would take long in a debug test).
    for r in cache.all().unwrap() {
        if r.size < 50_000_000 && r.error.is_none() {
            let h = danlu_hash::hash_file(&r.path, &NoProgress, &AtomicBool::new(false)).unwrap();
            cache
                .set_hashes(&r.path, &danlu_library::RecordHashes::from_hashes(&h))
                .unwrap();
        }
    }
    let mut report = doctor(&root, &cache.all().unwrap());
    let has = |p: Problem, name: &str| {
        report
            .findings
            .iter()
            .any(|f| f.problem == p && f.path.ends_with(name))
    };
    assert!(has(Problem::WrongFolder, "flux_lora_here.safetensors"));
    assert!(has(
        Problem::NoCheckpointForBase,
        "flux_lora_here.safetensors"
    ));
    assert!(!has(Problem::NoCheckpointForBase, "xl_detail.safetensors"));
    assert!(has(Problem::Unreadable, "broken.safetensors"));
    assert!(has(Problem::NoVae, "pruned.safetensors"));
    assert!(!has(Problem::NoVae, "dream.safetensors"));
    let dup = report
        .findings
        .iter()
        .find(|f| f.problem == Problem::Duplicate)
        .unwrap();
    assert!(dup.message.contains("copy_of_style0") && dup.message.contains("style0.safetensors"));
    apply_fixes(&mut report, &cache).unwrap();
    assert!(
        d.path()
            .join("models/Lora/flux_lora_here.safetensors")
            .exists()
    );
    assert!(
        !d.path()
            .join("models/VAE/flux_lora_here.safetensors")
            .exists()
    );
}
