//! `danlu reproduce`: plans for real images, and a generated image made again.

use crate::util::{TestEnv, corpus, s, stderr, stdout};
use serde_json::Value;

#[test]
fn dry_run_lists_the_missing_checkpoint_with_its_lookup() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.path("root/models/Stable-diffusion")).unwrap();
    let img = corpus("images/a1111_sd-webui.png");
    let out = env.run(&[
        "reproduce",
        "--json",
        "--dry-run",
        "--root",
        "root",
        s(&img),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "dry_run");
    let ckpt = &v["plan"]["checkpoint"];
    assert_eq!(ckpt["status"], "missing");
    assert_eq!(ckpt["name"], "waiIllustriousSDXL_v160");
    assert_eq!(
        ckpt["lookup"]["civitai_url"],
        "https://civitai.com/api/v1/model-versions/by-hash/45A21EA00A"
    );
    assert_eq!(v["plan"]["sampler"]["engine_sampler"], "DPM++ 2M");
    assert_eq!(v["plan"]["sampler"]["engine_scheduler"], "Karras");
    assert!(v["output"].is_null());

    // Without --dry-run nothing can be generated: exit 1, the reason named.
    let out = env.run(&["reproduce", "--root", "root", s(&img)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("missing: checkpoint `waiIllustriousSDXL_v160`"),
        "{text}"
    );
    assert!(!env.path("a1111_sd-webui.reproduced.png").exists());
}

#[test]
fn a_generated_image_is_made_again_with_equal_parameters() {
    let env = TestEnv::new();
    let sd = env.path("root/models/Stable-diffusion");
    let ckpt = danlu_fixtures::tiny::install("sd1_tiny", &sd, "tiny").unwrap();
    let out = env.run(&[
        "generate",
        "-c",
        s(&ckpt),
        "-p",
        "a red cube",
        "--seed",
        "42",
        "--steps",
        "3",
        "-W",
        "64",
        "-H",
        "64",
        "--sampler",
        "Euler a",
        "--rng",
        "nv",
        "-o",
        "gen.png",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&[
        "reproduce",
        "--json",
        "--root",
        "root",
        "gen.png",
        "-o",
        "again.png",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["status"], "generated");
    assert_eq!(v["equal"], true);
    assert_eq!(v["plan"]["checkpoint"]["matched_by"], "hash");
    let rows = v["comparison"].as_array().unwrap();
    assert!(rows.len() >= 10, "{rows:?}");
    assert!(rows.iter().all(|r| r["equal"] == true), "{rows:?}");
    let a = std::fs::read(env.path("gen.png")).unwrap();
    let b = std::fs::read(env.path("again.png")).unwrap();
    assert_eq!(a, b, "the PNGs differ");
}
