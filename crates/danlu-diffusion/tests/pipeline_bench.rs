//! The engine benchmark of issue 5, danlu side: an SD1.5-shaped checkpoint
//! (`scripts/reference/model_make_full_shape.py sd15`) timed on the CPU with the same operations
//! as `scripts/reference/pipeline_bench.py` times with diffusers on PyTorch:
//!
//! * text encoding: one 77-token chunk through CLIP ViT-L (all 12 layers);
//! * one sampling step at 512x512: the UNet on a batch of 2 (CFG's prompt and negative prompt),
//!   latent `[2, 4, 64, 64]`, context `[2, 77, 768]`;
//! * VAE decode of one `[1, 4, 64, 64]` latent;
//! * peak resident memory (`VmHWM`).
//!
//! Each timing is the best of two runs after one warm-up, float32. Ignored by default; run with
//! `DANLU_BENCH_CHECKPOINT=target/reference/model/sd15_shape.safetensors cargo test -p
//! danlu-diffusion --test pipeline_bench -- --ignored --nocapture`.

#![allow(clippy::print_stderr)]

use candle_core::{DType, Device, Tensor};
use danlu_diffusion::model::{Checkpoint, TextConfig, UnetConfig, VaeConfig};
use std::time::Instant;

fn best(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times.into_iter().fold(f64::INFINITY, f64::min))
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
#[ignore = "needs DANLU_BENCH_CHECKPOINT (an SD1.5-shaped checkpoint) and minutes of CPU"]
fn sd15_shape_cpu_timings() -> anyhow::Result<()> {
    let path = std::env::var("DANLU_BENCH_CHECKPOINT")
        .map_err(|_| anyhow::anyhow!("set DANLU_BENCH_CHECKPOINT"))?;
    let dev = Device::Cpu;
    let t = Instant::now();
    let ckpt = Checkpoint::from_index(danlu_format::read_index(&path)?)?;
    let text = ckpt
        .load_text_encoder(TextConfig::sd1(), DType::F32, &dev)?
        .model;
    let unet = ckpt.load_unet(UnetConfig::sd1(), DType::F32, &dev)?.model;
    let vae = ckpt.load_vae(VaeConfig::sd(), DType::F32, &dev)?.model;
    let load = t.elapsed().as_secs_f64();
    let tokens = Tensor::arange(0u32, 77, &dev)?.unsqueeze(0)?;
    let latent = Tensor::randn(0f32, 1.0, (2, 4, 64, 64), &dev)?;
    let context = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev)?;
    let text_s = best(|| {
        text.forward(&tokens, 1)?;
        Ok(())
    })?;
    let step_s = best(|| {
        unet.forward(&latent, 500.5, &context)?;
        Ok(())
    })?;
    let one = latent.narrow(0, 0, 1)?;
    let vae_s = best(|| {
        vae.decode(&one)?;
        Ok(())
    })?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "{{\"engine\": \"danlu candle\", \"threads\": {threads}, \"load_s\": {load:.3}, \
         \"text_s\": {text_s:.3}, \"step_s\": {step_s:.3}, \"vae_decode_s\": {vae_s:.3}, \
         \"peak_rss_bytes\": {}}}",
        peak_rss_bytes().unwrap_or(0)
    );
    Ok(())
}
