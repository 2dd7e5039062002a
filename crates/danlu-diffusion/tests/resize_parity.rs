//! Init-image resizing against Pillow, as A1111's `images.resize_image` runs it.
//!
//! `scripts/reference/pipeline_resize.py` resizes a noise image and a gradient with each
//! resize mode (Just resize, Crop and resize, Resize and fill in both directions, up and down)
//! through A1111's function and Pillow's `LANCZOS`.
//!
//! Reference: Pillow 9.5.0, the version A1111 pins (newer Pillow 13 wheels run the vertical pass
//! first for some sizes and differ by up to 10 there).
//!
//! Tolerance: every 8-bit value within 1 of Pillow's (measured: equal). The filter weights are
//! computed in float64 from `sin`, which may differ from the C library's in the last bit; after
//! rounding the weights to 22-bit fixed point that could move a sum across a rounding boundary.

// Helpers read the committed reference; a panic there is the test failure.
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stderr)]

use candle_core::Device;
use danlu_diffusion::pipeline::{InitImage, ResizeMode, resize_image};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/pipeline");

#[test]
fn resize_modes_match_pillow_within_one() {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DIR}/resize_reference.json")).unwrap(),
    )
    .unwrap();
    let tensors =
        candle_core::safetensors::load(format!("{DIR}/resize_reference.safetensors"), &Device::Cpu)
            .unwrap();
    let image = |key: &str| {
        let t = &tensors[key];
        let (h, w, _) = t.dims3().unwrap();
        InitImage::new(w, h, t.flatten_all().unwrap().to_vec1::<u8>().unwrap()).unwrap()
    };
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let src = image(&format!("src_{}", case["source"].as_str().unwrap()));
        let mode = match case["mode"].as_u64().unwrap() {
            0 => ResizeMode::JustResize,
            1 => ResizeMode::CropAndResize,
            _ => ResizeMode::ResizeAndFill,
        };
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let want = image(name);
        let got = resize_image(mode, &src, w, h).unwrap();
        assert_eq!((got.width, got.height), (want.width, want.height), "{name}");
        let worst = got
            .pixels
            .iter()
            .zip(&want.pixels)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let off = got
            .pixels
            .iter()
            .zip(&want.pixels)
            .filter(|(a, b)| a != b)
            .count();
        eprintln!(
            "{name}: {off} of {} values differ, by at most {worst}",
            got.pixels.len()
        );
        assert!(worst <= 1, "{name}: a value differs by {worst}");
    }
}
