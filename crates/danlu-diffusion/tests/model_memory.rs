//! Loading full-size SD1.5-shaped networks: time and memory. Ignored by default because it needs
//! the 2.1 GB checkpoint from `scripts/reference/model_make_full_shape.py`; run with
//! `cargo test --release -p danlu-diffusion --test model_memory -- --ignored --nocapture`.
//!
//! Weights are stored in f16 and computed in f32, so the networks take twice the file size on the
//! heap (4.3 GB); the mapped file adds page cache (file-backed, reclaimable), not heap.

use candle_core::{DType, Device, Tensor};
use danlu_diffusion::model::{Checkpoint, TextConfig, UnetConfig, VaeConfig};
use std::time::Instant;

const FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../target/reference/model/sd15_shape.safetensors"
);

/// `(peak RSS, anonymous RSS, file-backed RSS)` in MiB, from `/proc/self/status`.
fn memory() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (field("VmHWM:"), field("RssAnon:"), field("RssFile:"))
}

#[test]
#[ignore = "needs target/reference/model/sd15_shape.safetensors (2.1 GB)"]
fn load_sd15_shaped_checkpoint() -> anyhow::Result<()> {
    let cpu = Device::Cpu;
    let t = Instant::now();
    let ckpt = Checkpoint::from_index(danlu_format::read_index(FILE)?)?;
    eprintln!(
        "index + map: {:.2?}, memory (peak, anon, file) MiB {:?}",
        t.elapsed(),
        memory()
    );
    let t = Instant::now();
    let unet = ckpt.load_unet(UnetConfig::sd1(), DType::F32, &cpu)?;
    assert!(unet.report.is_complete(), "{:?}", unet.report);
    eprintln!("UNet f32: {:.2?}, memory {:?}", t.elapsed(), memory());
    let t = Instant::now();
    let vae = ckpt.load_vae(VaeConfig::sd(), DType::F32, &cpu)?;
    assert!(vae.report.is_complete(), "{:?}", vae.report);
    eprintln!("VAE f32: {:.2?}, memory {:?}", t.elapsed(), memory());
    let t = Instant::now();
    let text = ckpt.load_text_encoder(TextConfig::sd1(), DType::F32, &cpu)?;
    assert!(text.report.is_complete(), "{:?}", text.report);
    eprintln!(
        "text encoder f32: {:.2?}, memory {:?}",
        t.elapsed(),
        memory()
    );

    let t = Instant::now();
    let tokens = Tensor::zeros((2, 77), DType::U32, &cpu)?;
    let context = text.model.forward(&tokens, 1)?;
    eprintln!("text encoding, batch 2: {:.2?}", t.elapsed());
    let latents = Tensor::randn(0f32, 1f32, (2, 4, 64, 64), &cpu)?;
    let t = Instant::now();
    let out = unet.model.forward(&latents, 500.0, &context)?;
    eprintln!(
        "UNet step 512x512, batch 2: {:.2?}, memory {:?}",
        t.elapsed(),
        memory()
    );
    assert_eq!(out.dims(), &[2, 4, 64, 64]);
    let t = Instant::now();
    let image = vae.model.decode(&latents.narrow(0, 0, 1)?)?;
    eprintln!(
        "VAE decode 512x512: {:.2?}, memory {:?}",
        t.elapsed(),
        memory()
    );
    assert_eq!(image.dims(), &[1, 3, 512, 512]);
    Ok(())
}

/// Our UNet (exact GELU, A1111 up path) against candle's `UNet2DConditionModel` on the same
/// weights, same process, one after the other: the step time must not get worse.
#[test]
#[ignore = "needs target/reference/model/sd15_shape.safetensors (2.1 GB)"]
fn unet_step_against_candle() -> anyhow::Result<()> {
    use candle_transformers::models::stable_diffusion::unet_2d::{
        BlockConfig, UNet2DConditionModel, UNet2DConditionModelConfig,
    };
    use danlu_diffusion::model::remap;
    let cpu = Device::Cpu;
    let ckpt = Checkpoint::from_index(danlu_format::read_index(FILE)?)?;
    let config = UnetConfig::sd1();
    let ours = ckpt.load_unet(config.clone(), DType::F32, &cpu)?.model;
    let vb = ckpt.var_builder(
        remap::UNET_PREFIX,
        &remap::unet_table(&config.layout()),
        DType::F32,
        &cpu,
    );
    let bc = |out_channels, use_cross_attn| BlockConfig {
        out_channels,
        use_cross_attn,
        attention_head_dim: 8,
    };
    let candle_config = UNet2DConditionModelConfig {
        blocks: vec![
            bc(320, Some(1)),
            bc(640, Some(1)),
            bc(1280, Some(1)),
            bc(1280, None),
        ],
        cross_attention_dim: 768,
        ..Default::default()
    };
    let theirs = UNet2DConditionModel::new(vb, 4, 4, false, candle_config)?;
    let side: usize = std::env::var("DANLU_BENCH_LATENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let latents = Tensor::randn(0f32, 1f32, (2, 4, side, side), &cpu)?;
    let context = Tensor::randn(0f32, 1f32, (2, 77, 768), &cpu)?;
    for round in 0..2 {
        let t = Instant::now();
        let a = ours.forward(&latents, 500.0, &context)?;
        let ours_s = t.elapsed();
        let t = Instant::now();
        let b = theirs.forward(&latents, 500.0, &context)?;
        let theirs_s = t.elapsed();
        let diff = (&a - &b)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        eprintln!(
            "round {round}, latent {side}x{side} batch 2: ours {ours_s:.2?}, candle {theirs_s:.2?}, \
             relative difference {:.2e}",
            diff / scale
        );
    }
    Ok(())
}

/// SD2.1 at full size (24 OpenCLIP layers, head counts 5/10/20/20, linear projections, 1024-wide
/// context), computed in f16: every stored tensor is used and the shapes fit.
#[test]
#[ignore = "needs target/reference/model/sd21_shape.safetensors (2.6 GB, `model_make_full_shape.py sd21`)"]
fn load_sd21_shaped_checkpoint() -> anyhow::Result<()> {
    let file = FILE.replace("sd15_shape", "sd21_shape");
    let cpu = Device::Cpu;
    let ckpt = Checkpoint::from_index(danlu_format::read_index(file)?)?;
    assert_eq!(ckpt.open_clip_layers(), 24);
    let t = Instant::now();
    let text = ckpt.load_text_encoder(TextConfig::sd2(), DType::F16, &cpu)?;
    assert!(text.report.is_complete(), "{:?}", text.report);
    let unet = ckpt.load_unet(UnetConfig::sd2(), DType::F16, &cpu)?;
    assert!(unet.report.is_complete(), "{:?}", unet.report);
    let vae = ckpt.load_vae(VaeConfig::sd(), DType::F16, &cpu)?;
    assert!(vae.report.is_complete(), "{:?}", vae.report);
    eprintln!(
        "SD2.1 f16 loaded in {:.2?}, memory {:?}",
        t.elapsed(),
        memory()
    );
    let tokens = Tensor::zeros((2, 77), DType::U32, &cpu)?;
    let context = text.model.forward(&tokens, text.model.a1111_skip(1))?;
    assert_eq!(context.dims(), &[2, 77, 1024]);
    let latents = Tensor::zeros((2, 4, 16, 16), DType::F16, &cpu)?;
    let out = unet.model.forward(&latents, 999.0, &context)?;
    assert_eq!(out.dims(), &[2, 4, 16, 16]);
    let image = vae.model.decode(&latents.narrow(0, 0, 1)?)?;
    assert_eq!(image.dims(), &[1, 3, 128, 128]);
    Ok(())
}
