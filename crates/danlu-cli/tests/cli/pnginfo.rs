//! `danlu pnginfo`: reading parameters from real images.

use crate::util::{TestEnv, corpus, s, stderr, stdout};
use serde_json::Value;

#[test]
fn a1111_png_fields_follow_the_contract() {
    let env = TestEnv::new();
    let p = corpus("images/a1111_sd-webui.png");
    let out = env.run(&["pnginfo", "--json", s(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["source"], "a1111");
    assert_eq!(v["steps"], 20);
    assert_eq!(v["sampler"], "DPM++ 2M");
    assert_eq!(v["scheduler"], "Karras");
    assert_eq!(v["seed"], 3_782_896_554u64);
    assert_eq!(v["width"], 1024);
    assert_eq!(v["model_hash"], "45a21ea00a");
    assert!(v["prompt"].as_str().unwrap().contains("hatsune miku"));
    for field in [
        "negative_prompt",
        "clip_skip",
        "cfg_scale",
        "denoising_strength",
        "model",
        "vae",
        "vae_hash",
        "loras",
        "embeddings",
        "extra",
        "raw",
    ] {
        assert!(v.get(field).is_some(), "missing contract field {field}");
    }
}

#[test]
fn folder_walk_reports_every_image_and_fails_on_the_empty_one() {
    let env = TestEnv::new();
    let dir = corpus("images");
    let out = env.run(&["pnginfo", "--json", s(&dir)]);
    let v: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let count = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(v.len(), count);
    let empty = v
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("edge_empty_file.png"))
        .unwrap();
    assert!(
        empty["error"]
            .as_str()
            .unwrap()
            .contains("edge_empty_file.png")
    );
    assert_eq!(out.status.code(), Some(1));
    let comfy = v
        .iter()
        .find(|r| r["path"].as_str().unwrap().ends_with("/comfyui.png"))
        .unwrap();
    assert_eq!(comfy["source"], "comfyui");
}

#[test]
fn human_output_shows_a1111_text() {
    let env = TestEnv::new();
    let p = corpus("images/a1111_sd-webui.png");
    let out = env.run(&["pnginfo", s(&p)]);
    let text = stdout(&out);
    assert!(text.contains("Steps: 20, Sampler: DPM++ 2M"), "{text}");
    assert!(text.contains("source: a1111"), "{text}");
}
