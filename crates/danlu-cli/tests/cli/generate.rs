//! `danlu generate` on the tiny SD1 checkpoint of danlu-diffusion's parity tests: the PNGs hold
//! A1111's picture for the parameters (checked against `pipeline_reference.py`'s images) and an
//! A1111 `parameters` chunk with the fields that were asked for.

use crate::util::{TestEnv, s, stderr, stdout};
use sha2::Digest as _;
use std::path::{Path, PathBuf};

fn diffusion_tests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../danlu-diffusion/tests/reference")
}

fn checkpoint() -> PathBuf {
    diffusion_tests().join("model/sd1_tiny.safetensors")
}

/// The shapes `model_make_tiny.py` gives `sd1_tiny`.
const TINY_SD1: &str = r#"{
  "family": "sd1",
  "text": {"width": 16, "intermediate": 64, "heads": 2, "layers": 3},
  "unet": {"block_out_channels": [32, 64], "attention": [true, false], "heads": [2, 2],
           "layers_per_block": 1, "cross_attention_dim": 16, "use_linear_projection": false},
  "vae": {"block_out_channels": [32, 32, 32, 64], "layers_per_block": 1}
}"#;

const PROMPT: &str = "(masterpiece:1.2), a cat sitting on a (wooden:0.8) table";
const NEGATIVE: &str = "lowres, bad anatomy";

fn model_config(env: &TestEnv) -> PathBuf {
    let p = env.path("tiny.json");
    std::fs::write(&p, TINY_SD1).unwrap();
    p
}

/// RGB bytes of an 8-bit RGB PNG.
fn pixels(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    buf
}

fn reference_image(name: &str) -> Vec<u8> {
    let tensors = candle_core::safetensors::load(
        diffusion_tests().join("pipeline/pipeline_reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    tensors[&format!("{name}_image")]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap()
}

fn autov2(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    hex::encode(sha2::Sha256::digest(&bytes))[..10].to_owned()
}

#[test]
fn txt2img_writes_a1111_picture_and_parameters() {
    let env = TestEnv::new();
    let cfg = model_config(&env);
    let out = env.path("out/cat.png");
    std::fs::create_dir_all(env.path("out")).unwrap();
    let ckpt = checkpoint();
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--model-config",
        s(&cfg),
        "--prompt",
        PROMPT,
        "--negative-prompt",
        NEGATIVE,
        "--steps",
        "6",
        "--cfg-scale",
        "7",
        "--sampler",
        "Euler a",
        "--seed",
        "1234",
        "--width",
        "64",
        "--height",
        "64",
        "--batch-size",
        "2",
        "-o",
        s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(report["sampler"], "Euler a");
    assert_eq!(report["model_hash"], autov2(&ckpt));

    let want = reference_image("euler_a_batch2");
    let mut got = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let path = PathBuf::from(image["path"].as_str().unwrap());
        assert_eq!(path, env.path(&format!("out/cat-{i}.png")));
        assert_eq!(image["seed"], 1234 + i as u64);
        got.extend(pixels(&path));

        let p = danlu_pnginfo::read_image(&path).unwrap();
        assert_eq!(p.source, danlu_pnginfo::Source::A1111);
        assert_eq!(p.prompt, PROMPT);
        assert_eq!(p.negative_prompt, NEGATIVE);
        assert_eq!(p.steps, Some(6));
        assert_eq!(p.sampler.as_deref(), Some("Euler a"));
        assert_eq!(p.scheduler.as_deref(), Some("Uniform"));
        assert_eq!(p.cfg_scale, Some(7.0));
        assert_eq!(p.seed, Some(1234 + i as u64));
        assert_eq!((p.width, p.height), (Some(64), Some(64)));
        assert_eq!(p.model.as_deref(), Some("sd1_tiny"));
        assert_eq!(p.model_hash.as_deref(), Some(autov2(&ckpt).as_str()));
        assert_eq!(p.denoising_strength, None);
        assert!(p.extra["Version"].starts_with("danlu "), "{:?}", p.extra);
        assert_eq!(image["parameters"].as_str(), Some(p.raw.as_str()));
    }
    // The same picture as A1111's procedure (pipeline_reference.py), up to float32 rounding at
    // the 8-bit truncation boundary.
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
    assert!(worst <= Some(1), "8-bit values differ by {worst:?}");

    // Never over an existing file.
    let again = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--model-config",
        s(&cfg),
        "--steps",
        "1",
        "-W",
        "64",
        "-H",
        "64",
        "--batch-size",
        "2",
        "-o",
        s(&out),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn img2img_takes_size_from_init_image_and_records_strength() {
    let env = TestEnv::new();
    let cfg = model_config(&env);
    let ckpt = checkpoint();
    let init = env.path("init.png");
    let base = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--model-config",
        s(&cfg),
        "--steps",
        "2",
        "--seed",
        "5",
        "-W",
        "64",
        "-H",
        "48",
        "-o",
        s(&init),
    ]);
    assert!(base.status.success(), "{}", stderr(&base));
    let folder = env.path("img2img");
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--model-config",
        s(&cfg),
        "--prompt",
        "a red house",
        "--init-image",
        s(&init),
        "--denoising-strength",
        "0.5",
        "--sampler",
        "DPM++ 2M Karras",
        "--clip-skip",
        "2",
        "--steps",
        "4",
        "--seed",
        "77",
        "--n-iter",
        "2",
        "-o",
        s(&folder),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (i, name) in ["00000-77.png", "00001-78.png"].iter().enumerate() {
        let p = danlu_pnginfo::read_image(folder.join(name)).unwrap();
        assert_eq!(p.seed, Some(77 + i as u64));
        assert_eq!((p.width, p.height), (Some(64), Some(48)));
        assert_eq!(p.denoising_strength, Some(0.5));
        assert_eq!(p.clip_skip, Some(2));
        assert_eq!(p.sampler.as_deref(), Some("DPM++ 2M"));
        assert_eq!(p.scheduler.as_deref(), Some("Karras"));
        assert_eq!(pixels(&folder.join(name)).len(), 64 * 48 * 3);
    }
}

#[test]
fn bad_sizes_and_samplers_are_refused_before_loading() {
    let env = TestEnv::new();
    let ckpt = checkpoint();
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "-W",
        "100",
        "-o",
        s(&env.path("x.png")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("width"), "{}", stderr(&o));
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--sampler",
        "Nope",
        "-o",
        s(&env.path("x.png")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown sampler"), "{}", stderr(&o));
}
