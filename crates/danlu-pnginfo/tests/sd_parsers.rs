//! Other readers read the PNGs danlu writes: every corpus image's parameters are written as
//! A1111 text into a PNG by danlu, then `sd-parsers` (PyPI, the version `.ci/run` installs)
//! reads each one back through `reference/written.py`, which fails on any field that differs
//! from danlu's own reading.
//!
//! Needs `DANLU_PYTHON`, the path to a Python with `sd-parsers` installed (`.ci/run` makes one
//! in `target/ci-venv`). Without it the test says so and checks nothing; with `CI` set it fails
//! instead, so that CI cannot pass without the check.

// Helpers outside `#[test]` functions fail the test on bad fixtures, as tests do; scratch
// files in temp dirs are written directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use danlu_fixtures::corpus;
use danlu_pnginfo::{
    GenerationParams, Lora, Source, read_image, to_a1111_infotext, write_png_parameters,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An 8×8 RGB PNG without any text, as the carrier of the written parameters.
fn plain_png() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 8, 8);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        let pixels: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 7 % 251) as u8).collect();
        writer.write_image_data(&pixels).unwrap();
    }
    out
}

/// Parameters made in code, with the A1111 forms other readers trip on: quoted values with
/// commas, LoRA tags and hashes, a multi-line prompt.
fn generated_cases() -> Vec<(String, GenerationParams)> {
    let base = GenerationParams {
        source: Source::A1111,
        prompt: "a cat, masterpiece\nsecond line <lora:detail_tweaker:0.6>".to_owned(),
        negative_prompt: "blurry, lowres".to_owned(),
        steps: Some(28),
        seed: Some(3_141_592_653),
        width: Some(512),
        height: Some(768),
        clip_skip: Some(2),
        sampler: Some("DPM++ 2M".to_owned()),
        scheduler: Some("Karras".to_owned()),
        cfg_scale: Some(6.5),
        model: Some("dreamshaper_8".to_owned()),
        model_hash: Some("879db523c3".to_owned()),
        loras: vec![Lora {
            name: "detail_tweaker".to_owned(),
            weight: 0.6,
            hash: Some("e3a6b2c9f1d0".to_owned()),
        }],
        ..GenerationParams::default()
    };
    let mut euler = base.clone();
    euler.sampler = Some("Euler a".to_owned());
    euler.scheduler = None;
    euler.prompt = "plain prompt".to_owned();
    euler.negative_prompt = String::new();
    euler.loras.clear();
    euler.clip_skip = None;
    euler.extra.insert(
        "Hires upscaler".to_owned(),
        "R-ESRGAN 4x+, Anime6B".to_owned(),
    );
    vec![
        ("generated_lora.png".to_owned(), base),
        ("generated_euler.png".to_owned(), euler),
    ]
}

#[test]
fn sd_parsers_reads_what_danlu_writes() {
    let Some(python) = std::env::var_os("DANLU_PYTHON").map(PathBuf::from) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set DANLU_PYTHON to a Python with sd-parsers (see .ci/run)"
        );
        eprintln!("DANLU_PYTHON is not set: skipping the sd-parsers check");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("written");
    std::fs::create_dir(&out_dir).unwrap();
    let plain = plain_png();

    let mut cases: Vec<(String, GenerationParams)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(corpus::path("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let Ok(params) = read_image(&path) else {
            continue;
        };
        // Nothing to write: no parameters, or none A1111 text has (NovelAI's augment
        // requests carry only `req_type`).
        if params.source == Source::None || (params.prompt.is_empty() && params.steps.is_none()) {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        cases.push((name, params));
    }
    assert!(cases.len() >= 25, "only {} corpus images read", cases.len());
    cases.extend(generated_cases());

    let mut listing = Vec::new();
    for (name, params) in &cases {
        let text = to_a1111_infotext(params);
        let png = write_png_parameters(&plain, &text).unwrap();
        std::fs::write(out_dir.join(format!("{name}.png")), png).unwrap();
        // What danlu reads back from its own PNG is what sd-parsers must read too.
        let ours = danlu_pnginfo::parse_image(
            &std::fs::read(out_dir.join(format!("{name}.png"))).unwrap(),
        )
        .unwrap();
        let mut value = serde_json::to_value(&ours).unwrap();
        value["path"] = serde_json::Value::String(name.clone());
        listing.push(value);
    }
    let listing_path = tmp.path().join("danlu.json");
    std::fs::write(&listing_path, serde_json::to_vec(&listing).unwrap()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/written.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&listing_path)
        .arg(&out_dir)
        .output()
        .unwrap_or_else(|e| panic!("running `{}`: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sd-parsers disagrees with danlu:\n{stdout}\n{stderr}"
    );
    let expected = format!("{n}/{n} written images", n = cases.len());
    assert!(stdout.contains(&expected), "{stdout}\n{stderr}");
}
