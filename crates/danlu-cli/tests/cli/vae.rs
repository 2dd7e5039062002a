//! `danlu vae`: which VAE and why; a VAE of another family is refused naming both.

use crate::scan::{json, library, put};
use crate::util::{TestEnv, s, stderr, stdout};
use danlu_fixtures::models::{Fill, ldm_vae};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct VaeReport {
    checkpoint: String,
    checkpoint_base: String,
    vae: Option<String>,
    vae_base: Option<String>,
    choice: String,
    reason: String,
    refused: Option<String>,
    warnings: Vec<String>,
}

#[test]
fn vae_says_which_vae_and_why() {
    let env = TestEnv::new();
    let root = library(&env, "lib", false);
    let r = s(&root);
    let baked: VaeReport = json(&env.run(&["vae", "--root", r, "--json", "dream"]));
    assert_eq!((baked.choice.as_str(), baked.vae), ("baked", None));
    let none = env.run(&["vae", "--root", r, "--json", "pruned"]);
    assert_eq!(none.status.code(), Some(1), "no VAE at all is a failure");
    let none: VaeReport = json(&none);
    assert_eq!(none.choice, "none");
    assert!(none.warnings.iter().any(|w| w.contains("washed out")));
    // A VAE named after the checkpoint is paired (A1111 `find_vae_near_checkpoint`).
    put(
        &root.join("models/VAE/pruned.vae.safetensors"),
        &ldm_vae("", 4, true, danlu_types::Dtype::F16),
        Fill::Seeded(9),
    );
    let near: VaeReport = json(&env.run(&["vae", "--root", r, "--json", "pruned"]));
    assert_eq!(near.choice, "near_checkpoint");
    assert!(near.vae.unwrap().ends_with("pruned.vae.safetensors"));
    let text = stdout(&env.run(&["vae", "--root", r, "pruned"]));
    assert!(
        text.contains("because   its file name starts with the checkpoint's name `pruned`"),
        "{text}"
    );
}

#[test]
fn an_sdxl_vae_on_an_sd1_checkpoint_is_refused_naming_both() {
    let env = TestEnv::new();
    let root = library(&env, "lib", false);
    put(
        &root.join("models/VAE/sdxl_vae.safetensors"),
        &ldm_vae("", 4, true, danlu_types::Dtype::F16),
        Fill::Seeded(3),
    );
    let out = env.run(&[
        "vae",
        "--root",
        s(&root),
        "dream",
        "--vae",
        "sdxl_vae.safetensors",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("REFUSED   VAE `sdxl_vae.safetensors` is for `sdxl` but checkpoint `dream.safetensors` is `sd1`"),
        "{text}"
    );
    let ok = env.run(&[
        "vae",
        "--root",
        s(&root),
        "xl",
        "--vae",
        "sdxl_vae.safetensors",
        "--json",
    ]);
    assert!(ok.status.success(), "{}", stdout(&ok));
}
