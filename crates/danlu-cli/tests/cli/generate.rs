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
        // The thread count changes no pixel: every kernel splits work, never a sum.
        "--device",
        "cpu",
        "--threads",
        "1",
        "--precision",
        "f32",
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
    // A GPU this build cannot drive is named with the cargo feature it needs; nothing is made.
    if cfg!(not(feature = "cuda")) {
        let o = env.run(&[
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--device",
            "cuda:1",
            "-o",
            s(&env.path("x.png")),
        ]);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(
            err.contains("cuda:1") && err.contains("--features cuda"),
            "{err}"
        );
        assert!(!env.path("x.png").exists());
    }
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--device",
        "tpu",
        "-o",
        s(&env.path("x.png")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected auto, cpu, cuda"),
        "{}",
        stderr(&o)
    );
}

/// `--lora-dir`, `--embeddings-dir`, `--hypernetwork-dir`: the prompt's tags and the negative
/// prompt's embedding give danlu-diffusion's `full_run_reference` picture (A1111's procedure
/// with the three adapters, `adapters_reference.py`), the infotext names them with hashes, and
/// a tag naming nothing installed is a warning in the report.
#[test]
fn adapters_from_folders_apply_and_are_recorded() {
    let env = TestEnv::new();
    let cfg = model_config(&env);
    let adapters = diffusion_tests().join("adapters");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapters.join("full_run_reference.json")).unwrap(),
    )
    .unwrap();
    let out = env.path("a.png");
    let prompt = format!("{} <lora:absent:1>", meta["prompt"].as_str().unwrap());
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&checkpoint()),
        "--model-config",
        s(&cfg),
        "--lora-dir",
        s(&adapters),
        "--embeddings-dir",
        s(&adapters.join("embeddings")),
        "--hypernetwork-dir",
        s(&adapters),
        "--prompt",
        &prompt,
        "--negative-prompt",
        meta["negative_prompt"].as_str().unwrap(),
        "--steps",
        "5",
        "--sampler",
        "Euler a",
        "--seed",
        "31",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["loras"], serde_json::json!(["sd1_tiny_kohya"]));
    assert_eq!(report["embeddings"], serde_json::json!(["tinyneg"]));
    assert_eq!(report["hypernetworks"], serde_json::json!(["hn_relu_ln"]));
    assert_eq!(
        report["warnings"],
        serde_json::json!(["LoRA `absent` is not installed"])
    );
    let path = PathBuf::from(report["images"][0]["path"].as_str().unwrap());
    let want = candle_core::safetensors::load(
        adapters.join("full_run_reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()["image"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let got = pixels(&path);
    assert_eq!(got.len(), want.len());
    let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
    assert!(worst <= Some(1), "a pixel differs by {worst:?}");
    let p = danlu_pnginfo::read_image(&path).unwrap();
    // Both tags of the prompt are read back; only the installed one has a hash.
    let names: Vec<(&str, Option<usize>)> = p
        .loras
        .iter()
        .map(|l| (l.name.as_str(), l.hash.as_ref().map(String::len)))
        .collect();
    assert_eq!(names, [("sd1_tiny_kohya", Some(12)), ("absent", None)]);
    assert_eq!(p.embeddings.len(), 1);
    assert_eq!(p.embeddings[0].name, "tinyneg");
    assert_eq!(p.extra["Hypernet"], "hn_relu_ln");
    assert_eq!(p.extra["Hypernet strength"], "0.8");
}

/// An init image of another size is fitted by `--resize-mode` (A1111 "Resize mode").
#[test]
fn init_image_of_another_size_is_resized() {
    let env = TestEnv::new();
    let ckpt = checkpoint();
    let cfg = model_config(&env);
    let init = env.path("init.png");
    let base = env.run(&[
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
        "48",
        "-o",
        s(&init),
    ]);
    assert!(base.status.success(), "{}", stderr(&base));
    for mode in ["just-resize", "crop-and-resize", "resize-and-fill"] {
        let out = env.path(&format!("{mode}.png"));
        let o = env.run(&[
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--model-config",
            s(&cfg),
            "--init-image",
            s(&init),
            "--resize-mode",
            mode,
            "-W",
            "40",
            "-H",
            "64",
            "--steps",
            "2",
            "-o",
            s(&out),
        ]);
        assert!(o.status.success(), "{mode}: {}", stderr(&o));
        assert_eq!(pixels(&out).len(), 40 * 64 * 3, "{mode}");
    }
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--init-image",
        s(&init),
        "--resize-mode",
        "stretch",
        "-W",
        "40",
        "-o",
        s(&env.path("bad.png")),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("resize mode"), "{}", stderr(&o));
}

/// `--vae auto` follows the library's pairing rule (A1111 "Automatic"): a VAE in the VAE folder
/// named like the checkpoint is used, and its hash is written; `--vae none` keeps the baked one.
#[test]
fn vae_auto_pairs_the_vae_named_like_the_checkpoint() {
    let env = TestEnv::new();
    let root = env.path("lib");
    let ckpt = danlu_fixtures::tiny::install(
        "sd1_tiny",
        &root.join("models/Stable-diffusion"),
        "tinymodel",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("models/VAE")).unwrap();
    let vae = root.join("models/VAE/tinymodel.vae.safetensors");
    std::fs::copy(&ckpt, &vae).unwrap();
    let run = |choice: &str, out: &str| {
        let o = env.run(&[
            "generate",
            "--checkpoint",
            s(&ckpt),
            "--root",
            s(&root),
            "--vae",
            choice,
            "--steps",
            "1",
            "-W",
            "64",
            "-H",
            "64",
            "--json",
            "-o",
            s(&env.path(out)),
        ]);
        assert!(o.status.success(), "{choice}: {}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let auto = run("auto", "auto.png");
    assert!(
        auto["vae"]
            .as_str()
            .is_some_and(|v| v.ends_with("tinymodel.vae.safetensors")),
        "{auto}"
    );
    assert_eq!(auto["vae_hash"], autov2(&vae).as_str());
    let none = run("none", "none.png");
    assert!(none["vae"].is_null(), "{none}");
}

/// An 8-bit RGB PNG.
fn write_rgb_png(path: &Path, width: u32, height: u32, rgb: &[u8]) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(rgb)
        .unwrap();
}

/// `--mask` on an inpainting checkpoint gives A1111's picture (`pipeline_inpaint.py`); the
/// checkpoint is `sd1_tiny` with the 9-channel UNet of the parity tests.
#[test]
fn mask_inpaints_like_a1111() {
    let env = TestEnv::new();
    let model = diffusion_tests().join("model");
    let mut tensors = candle_core::safetensors::load(
        model.join("sd1_tiny.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    tensors.retain(|k, _| !k.starts_with("model.diffusion_model."));
    tensors.extend(
        candle_core::safetensors::load(
            model.join("sd1_tiny_inpaint_unet.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap(),
    );
    let ckpt = env.path("tiny_inpainting.safetensors");
    candle_core::safetensors::save(&tensors, &ckpt).unwrap();
    let reference = candle_core::safetensors::load(
        diffusion_tests().join("pipeline/inpaint_reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let bytes = |k: &str| reference[k].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let init = env.path("init.png");
    write_rgb_png(&init, 64, 64, &bytes("init"));
    let mask = env.path("mask.png");
    let grey: Vec<u8> = bytes("mask").iter().flat_map(|&m| [m, m, m]).collect();
    write_rgb_png(&mask, 64, 64, &grey);
    let out = env.path("inpainted.png");
    let cfg = model_config(&env);
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
        "--init-image",
        s(&init),
        "--mask",
        s(&mask),
        "--mask-blur",
        "0",
        "--denoising-strength",
        "0.75",
        "--sampler",
        "Euler a",
        "--seed",
        "4242",
        "--steps",
        "8",
        "--cfg-scale",
        "7",
        "-o",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = bytes("inpaint_9ch_img2img_image");
    let got = pixels(&out);
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "an 8-bit value differs by {worst}");
    let p = danlu_pnginfo::read_image(&out).unwrap();
    assert_eq!(p.denoising_strength, Some(0.75));
    assert!(!p.extra.contains_key("Mask blur"));

    // The mask settings reach the infotext under A1111's keys.
    let out2 = env.path("inpainted_inverted.png");
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--model-config",
        s(&cfg),
        "--prompt",
        PROMPT,
        "--init-image",
        s(&init),
        "--mask",
        s(&mask),
        "--inpainting-fill",
        "latent-nothing",
        "--inpainting-mask-invert",
        "--steps",
        "2",
        "-o",
        s(&out2),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p = danlu_pnginfo::read_image(&out2).unwrap();
    assert_eq!(p.extra.get("Mask blur").map(String::as_str), Some("4"));
    assert_eq!(
        p.extra.get("Masked content").map(String::as_str),
        Some("latent nothing")
    );
    assert_eq!(
        p.extra.get("Mask mode").map(String::as_str),
        Some("Inpaint not masked")
    );
}

/// With `--root`, adapters come from the library: its LoRA, embedding and hypernetwork folders
/// by file stem, and a tag that no stem matches by the hashes `danlu scan` stores,
/// so a LoRA filed under another name still gives the reference picture.
#[test]
fn adapters_resolve_through_the_library_by_name_then_hash() {
    let env = TestEnv::new();
    let root = env.path("webui");
    let adapters = diffusion_tests().join("adapters");
    let ckpt =
        danlu_fixtures::tiny::install("sd1_tiny", &root.join("models/Stable-diffusion"), "tinymix")
            .unwrap();
    for (from, to) in [
        (
            "sd1_tiny_kohya.safetensors",
            "models/Lora/style/renamed_lora.safetensors",
        ),
        ("hn_relu_ln.pt", "models/hypernetworks/hn_relu_ln.pt"),
        ("embeddings/tinyneg.pt", "embeddings/tinyneg.pt"),
    ] {
        let dest = root.join(to);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(adapters.join(from), dest).unwrap();
    }
    let o = env.run(&["scan", s(&root)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lora_hash = autov2(&root.join("models/Lora/style/renamed_lora.safetensors"));

    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapters.join("full_run_reference.json")).unwrap(),
    )
    .unwrap();
    let prompt = meta["prompt"]
        .as_str()
        .unwrap()
        .replace("sd1_tiny_kohya", &lora_hash);
    let out = env.path("a.png");
    let o = env.run(&[
        "generate",
        "--root",
        s(&root),
        "--checkpoint",
        s(&ckpt),
        "--prompt",
        &prompt,
        "--negative-prompt",
        meta["negative_prompt"].as_str().unwrap(),
        "--steps",
        "5",
        "--sampler",
        "Euler a",
        "--seed",
        "31",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["loras"], serde_json::json!([lora_hash]));
    assert_eq!(report["embeddings"], serde_json::json!(["tinyneg"]));
    assert_eq!(report["hypernetworks"], serde_json::json!(["hn_relu_ln"]));
    assert_eq!(report["warnings"], serde_json::json!([]));
    let want = candle_core::safetensors::load(
        adapters.join("full_run_reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()["image"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap();
    let got = pixels(&out);
    let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
    assert!(worst <= Some(1), "a pixel differs by {worst:?}");

    // Without the root, the same tag names nothing installed.
    let o = env.run(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--prompt",
        &prompt,
        "--steps",
        "1",
        "--width",
        "64",
        "--height",
        "64",
        "-o",
        s(&env.path("b.png")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        report["warnings"][0],
        format!("LoRA `{lora_hash}` is not installed")
    );
}
