//! `danlu sort`: filing, duplicates, renames, sidecars, and a sorter killed at many points.

use crate::scan::{json, put};
use crate::util::{TestEnv, s, stderr};
use danlu_fixtures::models::{Fill, LoraStyle, sd1_lora};
use serde::Deserialize;
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SortReport {
    root: String,
    layout: String,
    mode: String,
    dry_run: bool,
    cancelled: bool,
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Item {
    source: String,
    kind: String,
    base: String,
    action: String,
    destination: Option<String>,
    renamed: bool,
    duplicate_of: Option<String>,
    sidecars: Vec<Sidecar>,
    reason: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Sidecar {
    source: String,
    destination: String,
}

fn sha(p: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if e.file_type().is_file() && !e.path().components().any(|c| c.as_os_str() == ".danlu") {
            out.push(e.path().to_path_buf());
        }
    }
    out
}

#[test]
fn sort_files_an_inbox_into_a_comfyui_root_with_sidecars_duplicates_and_renames() {
    let env = TestEnv::new();
    let lib = env.path("ComfyUI");
    std::fs::create_dir_all(lib.join("models/checkpoints")).unwrap();
    let inbox = env.path("Downloads");
    let a = put(
        &inbox.join("ink.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(1),
    );
    std::fs::write(inbox.join("ink.preview.png"), b"preview").unwrap();
    std::fs::write(inbox.join("ink.txt"), b"trigger: ink").unwrap();
    let existing = put(
        &lib.join("models/loras/ink.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(2),
    );
    let dup = put(
        &inbox.join("copy.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(2),
    );
    let (a_sha, existing_sha) = (sha(&a), sha(&existing));

    let dry: SortReport =
        json(&env.run(&["sort", s(&inbox), "--root", s(&lib), "--dry-run", "--json"]));
    assert!(dry.dry_run);
    assert!(a.exists());

    let out = env.run(&["sort", s(&inbox), "--root", s(&lib), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: SortReport = json(&out);
    assert_eq!((r.layout.as_str(), r.mode.as_str()), ("comfyui", "move"));
    let ink = r
        .items
        .iter()
        .find(|i| i.source.ends_with("ink.safetensors"))
        .unwrap();
    assert_eq!(ink.action, "move");
    assert!(ink.renamed);
    let dest = PathBuf::from(ink.destination.as_ref().unwrap());
    assert_eq!(dest, lib.join("models/loras/ink-2.safetensors"));
    assert_eq!(sha(&dest), a_sha);
    assert_eq!(sha(&existing), existing_sha, "never overwritten");
    assert_eq!(
        std::fs::read(lib.join("models/loras/ink-2.preview.png")).unwrap(),
        b"preview"
    );
    assert_eq!(
        std::fs::read(lib.join("models/loras/ink-2.txt")).unwrap(),
        b"trigger: ink"
    );
    assert!(!inbox.join("ink.txt").exists());
    let d = r
        .items
        .iter()
        .find(|i| i.source.ends_with("copy.safetensors"))
        .unwrap();
    assert_eq!(d.action, "duplicate");
    assert_eq!(d.duplicate_of.as_deref(), Some(s(&existing)));
    assert!(dup.exists(), "a duplicate's source is left");

    let text = crate::util::stdout(&env.run(&["sort", s(&inbox), "--root", s(&lib)]));
    assert!(
        text.contains("duplicate") && text.contains("left in place"),
        "{text}"
    );
}

/// Kills `danlu sort` at many instants (each file operation is preceded by a pause, so the
/// kills land between and inside steps) and checks that every file's content is still where
/// it was or complete where it goes, and that no final name holds a partial file.
#[test]
fn a_sorter_killed_at_any_point_loses_and_truncates_nothing() {
    let mut interrupted = 0;
    for (run, mode) in (0..14).map(|i| (i, if i % 2 == 0 { "--move" } else { "--copy" })) {
        let env = TestEnv::new();
        let lib = env.path("lib");
        let inbox = env.path("inbox");
        std::fs::create_dir_all(lib.join("models/Stable-diffusion")).unwrap();
        for i in 0..3u64 {
            let p = put(
                &inbox.join(format!("m{i}.safetensors")),
                &sd1_lora(LoraStyle::Kohya, 8),
                Fill::Seeded(i + 1),
            );
            std::fs::write(p.with_extension("json"), format!("{{\"n\": {i}}}")).unwrap();
        }
        // A same-name file already filed, so renames happen too.
        put(
            &lib.join("models/Lora/m1.safetensors"),
            &sd1_lora(LoraStyle::Kohya, 8),
            Fill::Seeded(77),
        );
        let before: BTreeMap<String, PathBuf> = files_under(env.dir.path())
            .into_iter()
            .map(|p| (sha(&p), p))
            .collect();
        let filed = |lib: &Path| {
            files_under(lib)
                .iter()
                .filter(|p| !p.to_string_lossy().ends_with(".danlu-tmp"))
                .count()
                - 1 // the file that was there before
        };
        let mut child = env
            .cmd()
            .args(["sort", s(&inbox), "--root", s(&lib), mode])
            .env("DANLU_TEST_SORT_DELAY_MS", "25")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        if run >= 2 {
            // Wait until the first file is filed, then kill a little later each run, so the
            // kills walk through every step (25 ms pause before each of the 6 operations).
            let t = std::time::Instant::now();
            while filed(&lib) == 0 && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis((run - 2) * 12));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let n = filed(&lib);
        if (1..6).contains(&n) {
            interrupted += 1;
        }

        let mut after = BTreeSet::new();
        for p in files_under(env.dir.path()) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".danlu-tmp") {
                continue; // a temporary file, never under a final name
            }
            let h = sha(&p);
            assert!(
                before.contains_key(&h),
                "run {run} {mode}: `{}` holds content that was never a whole file",
                p.display()
            );
            after.insert(h);
        }
        for (h, p) in &before {
            assert!(
                after.contains(h),
                "run {run} {mode}: content of `{}` lost",
                p.display()
            );
        }
        // A second, uninterrupted run finishes the job without losing anything either.
        let out = env.run(&["sort", s(&inbox), "--root", s(&lib), mode]);
        assert!(out.status.success(), "{}", stderr(&out));
        let finished: BTreeSet<String> = files_under(&lib).iter().map(|p| sha(p)).collect();
        // Every model is in the library now (a sidecar whose model was filed just before the
        // kill stays beside the old place: kept, not lost, as checked above).
        for (h, p) in before
            .iter()
            .filter(|(_, p)| p.extension().is_some_and(|e| e == "safetensors"))
        {
            assert!(
                finished.contains(h),
                "run {run} {mode}: `{}` not in the library",
                p.display()
            );
        }
    }
    // Many kills landed in the middle of the work (some files filed, some not).
    assert!(
        interrupted >= 2,
        "only {interrupted} runs were killed mid-way"
    );
}
