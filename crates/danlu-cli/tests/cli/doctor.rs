//! `danlu doctor`: findings with fixes, and `--fix`.

use crate::scan::{json, library, put};
use crate::util::{TestEnv, s, stderr, stdout};
use danlu_fixtures::models::{Fill, LoraStyle, flux_lora};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct DoctorReport {
    root: String,
    models: usize,
    findings: Vec<Finding>,
    applied: Vec<Applied>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Finding {
    problem: String,
    severity: String,
    path: String,
    message: String,
    hint: String,
    fix: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Applied {
    fix: serde_json::Value,
    error: Option<String>,
}

#[test]
fn doctor_reports_problems_and_fix_applies_the_safe_ones() {
    let env = TestEnv::new();
    let root = library(&env, "lib", false);
    let misplaced = put(
        &root.join("models/VAE/flux_style.safetensors"),
        &flux_lora(LoraStyle::Kohya, 4),
        Fill::Seeded(8),
    );
    // Not hashed: the sparse checkpoints are big (duplicates are tested in danlu-library).
    assert!(env.run(&["scan", s(&root), "--no-hash"]).status.success());
    let out = env.run(&["doctor", "--root", s(&root), "--json"]);
    assert_eq!(out.status.code(), Some(1), "errors found: {}", stderr(&out));
    let r: DoctorReport = json(&out);
    let find = |p: &str, name: &str| {
        r.findings
            .iter()
            .find(|f| f.problem == p && f.path.ends_with(name))
    };
    let novae = find("no_vae", "pruned.safetensors").expect("no VAE");
    assert_eq!(novae.fix.as_ref().unwrap()["action"], "pair");
    let wrong = find("wrong_folder", "flux_style.safetensors").expect("wrong folder");
    assert_eq!(wrong.fix.as_ref().unwrap()["action"], "move");
    assert!(find("no_checkpoint_for_base", "flux_style.safetensors").is_some());
    assert!(find("no_checkpoint_for_base", "xl_detail.safetensors").is_none());
    let text = stdout(&env.run(&["doctor", "--root", s(&root)]));
    assert!(text.contains("hint: "), "{text}");

    let out = env.run(&["doctor", "--root", s(&root), "--fix"]);
    let text = stdout(&out);
    assert!(
        text.contains("fix (--fix): move"),
        "fixes are shown first: {text}"
    );
    assert!(
        text.contains("fixed: pair with `anime-vae.safetensors`"),
        "{text}"
    );
    assert!(!misplaced.exists());
    assert!(root.join("models/Lora/flux_style.safetensors").exists());
    let pair: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/Stable-diffusion/pruned.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pair["vae"], "anime-vae.safetensors");
    let after: DoctorReport = json(&env.run(&["doctor", "--root", s(&root), "--json"]));
    assert!(
        after
            .findings
            .iter()
            .all(|f| f.problem != "no_vae" && f.problem != "wrong_folder"),
        "{:?}",
        after.findings
    );
}
