//! The per-operation benchmark of issue 10, danlu side. `scripts/bench` runs it next to
//! `scripts/reference/ops_bench.py` (diffusers on PyTorch) on the same SD1.5-shaped checkpoint
//! (`scripts/reference/model_make_full_shape.py sd15`) and prints both with their ratio.
//!
//! Operations, float32 on the CPU, all threads:
//!
//! * `text_2x77`: CLIP ViT-L on token ids `[2, 77]` (prompt and negative prompt);
//! * `unet_step_64`, `unet_step_32`: one CFG step, the UNet on latents `[2, 4, 64, 64]`
//!   (512x512) and `[2, 4, 32, 32]` (256x256), context `[2, 77, 768]`;
//! * `vae_decode_512`: the VAE decoder on `[1, 4, 64, 64]`;
//! * `attention_4096`: self-attention alone, `q`, `k`, `v` `[2, 8, 4096, 40]` (the first level
//!   of the UNet at 512x512: batch 2, 8 heads of 40), computed as `unet.rs` does it;
//! * `attention_4096_tiled`: the same through [`danlu_diffusion::kernels::attention`];
//! * `conv3x3_320_64`: a 3x3 convolution, 320 to 320 channels, padding 1, on `[2, 320, 64, 64]`,
//!   through [`danlu_diffusion::kernels::conv2d`];
//! * `conv3x3_320_64_candle`: the same through `candle_nn::Conv2d`;
//! * `group_norm_320_64`: group norm with 32 groups on `[2, 320, 64, 64]`, through
//!   [`danlu_diffusion::kernels::group_norm`]; `group_norm_silu_320_64` the same followed by
//!   SiLU (fused), `group_norm_320_64_candle` the same through `candle_nn::GroupNorm`;
//! * `geglu_4096`: the GEGLU gate of the UNet's first level at 512x512, `[2, 4096, 2560]` (the
//!   feed-forward projection before its bias) to `[2, 4096, 1280]`, through
//!   [`danlu_diffusion::kernels::geglu`] with the bias folded in; `geglu_4096_candle` the same as
//!   candle operations (bias, `narrow`, `gelu_erf`, product), as `unet.rs` computed it before.
//!
//! Each operation runs once to warm up, then `DANLU_BENCH_REPEAT` times (default 3; the single
//! operations three times as often); the median and the minimum are written as JSON to
//! `DANLU_BENCH_OUT` (or printed). `DANLU_BENCH_OPS` (comma-separated names) runs a subset,
//! which is how `docs/performance.md` profiles one step; `DANLU_BENCH_ATTENTION_HEADS` (default
//! 8) shrinks the attention ops for instruction counts.
//! Ignored by default; run with `DANLU_BENCH_CHECKPOINT=target/reference/model/sd15_shape.safetensors
//! cargo test --release -p danlu-diffusion --test ops_bench -- --ignored --nocapture`.

#![allow(clippy::print_stderr, clippy::print_stdout)]

use candle_core::{DType, Device, Module, Tensor};
use candle_nn as nn;
use danlu_diffusion::model::{Checkpoint, TextConfig, UnetConfig, VaeConfig};
use std::time::Instant;

/// Median and minimum seconds of `repeat` runs after one warm-up.
fn time(repeat: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<(f64, f64)> {
    f()?;
    let mut times = Vec::new();
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 0 {
        (times[mid - 1] + times[mid]) / 2.0
    } else {
        times[mid]
    };
    Ok((median, times[0]))
}

/// Plain attention as `unet.rs` computes it: scores, softmax over the last axis, values.
#[inline(never)]
fn attention_plain(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let scale = (q.dim(3)? as f64).powf(-0.5);
    let scores = (q.matmul(&k.t()?)? * scale)?;
    nn::ops::softmax_last_dim(&scores)?.matmul(v)
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
#[ignore = "needs DANLU_BENCH_CHECKPOINT (an SD1.5-shaped checkpoint) and minutes of CPU"]
fn sd15_shape_ops() -> anyhow::Result<()> {
    // The allocator settings the `danlu` binary runs the networks under (this test then starts
    // again as a new process image; run it alone, as scripts/bench does).
    let _ = danlu_diffusion::allocator::reexec_with_malloc_tunables();
    let path = std::env::var("DANLU_BENCH_CHECKPOINT")
        .map_err(|_| anyhow::anyhow!("set DANLU_BENCH_CHECKPOINT"))?;
    let repeat: usize = std::env::var("DANLU_BENCH_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let only = std::env::var("DANLU_BENCH_OPS").ok();
    let wanted = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n.trim() == name))
    };
    let dev = Device::Cpu;
    let mut results = serde_json::Map::new();
    let mut record = |name: &str, (median, min): (f64, f64)| {
        eprintln!("danlu {name:<22} median {median:8.4} s  min {min:8.4} s");
        results.insert(
            name.to_owned(),
            serde_json::json!({ "median_s": median, "min_s": min }),
        );
    };

    let needs_model = [
        "text_2x77",
        "unet_step_64",
        "unet_step_32",
        "vae_decode_512",
    ]
    .iter()
    .any(|n| wanted(n));
    let t = Instant::now();
    if needs_model {
        let ckpt = Checkpoint::from_index(danlu_format::read_index(&path)?)?;
        if wanted("text_2x77") {
            let text = ckpt
                .load_text_encoder(TextConfig::sd1(), DType::F32, &dev)?
                .model;
            let tokens = Tensor::arange(0u32, 154, &dev)?.reshape((2, 77))?;
            record(
                "text_2x77",
                time(repeat, || {
                    text.forward(&tokens, 1)?;
                    Ok(())
                })?,
            );
        }
        if wanted("unet_step_64") || wanted("unet_step_32") {
            let unet = ckpt.load_unet(UnetConfig::sd1(), DType::F32, &dev)?.model;
            let context = Tensor::randn(0f32, 1.0, (2, 77, 768), &dev)?;
            for (name, side) in [("unet_step_64", 64), ("unet_step_32", 32)] {
                if wanted(name) {
                    let latent = Tensor::randn(0f32, 1.0, (2, 4, side, side), &dev)?;
                    record(
                        name,
                        time(repeat, || {
                            unet.forward(&latent, 500.5, &context)?;
                            Ok(())
                        })?,
                    );
                }
            }
        }
        if wanted("vae_decode_512") {
            let vae = ckpt.load_vae(VaeConfig::sd(), DType::F32, &dev)?.model;
            let latent = Tensor::randn(0f32, 1.0, (1, 4, 64, 64), &dev)?;
            record(
                "vae_decode_512",
                time(repeat, || {
                    vae.decode(&latent)?;
                    Ok(())
                })?,
            );
        }
    }
    let load_and_model_s = t.elapsed().as_secs_f64();

    let small = repeat.max(1) * 3;
    let heads: usize = std::env::var("DANLU_BENCH_ATTENTION_HEADS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(8);
    let qkv = || Tensor::randn(0f32, 1.0, (2, heads, 4096, 40), &dev);
    let (q, k, v) = (qkv()?, qkv()?, qkv()?);
    if wanted("attention_4096") {
        record(
            "attention_4096",
            time(small, || {
                attention_plain(&q, &k, &v)?;
                Ok(())
            })?,
        );
    }
    if wanted("attention_4096_tiled") {
        record(
            "attention_4096_tiled",
            time(small, || {
                danlu_diffusion::kernels::attention(&q, &k, &v)?;
                Ok(())
            })?,
        );
    }
    let image = Tensor::randn(0f32, 1.0, (2, 320, 64, 64), &dev)?;
    let conv_weight = (Tensor::randn(0f32, 1.0, (320, 320, 3, 3), &dev)? * 0.02)?;
    let conv_bias = Tensor::zeros(320, DType::F32, &dev)?;
    if wanted("conv3x3_320_64") {
        record(
            "conv3x3_320_64",
            time(small, || {
                danlu_diffusion::kernels::conv2d(&image, &conv_weight, Some(&conv_bias), 1, 1)?;
                Ok(())
            })?,
        );
    }
    if wanted("conv3x3_320_64_candle") {
        let conv = nn::Conv2d::new(
            conv_weight.clone(),
            Some(conv_bias.clone()),
            nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
        );
        record(
            "conv3x3_320_64_candle",
            time(small, || {
                conv.forward(&image)?;
                Ok(())
            })?,
        );
    }
    let norm_weight = Tensor::ones(320, DType::F32, &dev)?;
    let norm_bias = Tensor::zeros(320, DType::F32, &dev)?;
    for (name, silu) in [
        ("group_norm_320_64", false),
        ("group_norm_silu_320_64", true),
    ] {
        if wanted(name) {
            record(
                name,
                time(small, || {
                    danlu_diffusion::kernels::group_norm(
                        &image,
                        32,
                        1e-6,
                        &norm_weight,
                        &norm_bias,
                        silu,
                    )?;
                    Ok(())
                })?,
            );
        }
    }
    if wanted("group_norm_320_64_candle") {
        let norm = nn::GroupNorm::new(norm_weight.clone(), norm_bias.clone(), 320, 32, 1e-6)?;
        record(
            "group_norm_320_64_candle",
            time(small, || {
                norm.forward(&image)?;
                Ok(())
            })?,
        );
    }
    if wanted("geglu_4096") || wanted("geglu_4096_candle") {
        let h = Tensor::randn(0f32, 1.0, (2, 4096, 2560), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 2560, &dev)?;
        if wanted("geglu_4096") {
            record(
                "geglu_4096",
                time(small, || {
                    danlu_diffusion::kernels::geglu(&h, Some(&bias))?;
                    Ok(())
                })?,
            );
        }
        if wanted("geglu_4096_candle") {
            record(
                "geglu_4096_candle",
                time(small, || {
                    let h = h.broadcast_add(&bias)?;
                    (h.narrow(2, 0, 1280)? * h.narrow(2, 1280, 1280)?.gelu_erf()?)?;
                    Ok(())
                })?,
            );
        }
    }

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = serde_json::json!({
        "engine": "danlu candle 0.11",
        "threads": threads,
        "repeat": repeat,
        "load_and_model_s": load_and_model_s,
        "peak_rss_bytes": peak_rss_bytes(),
        "ops": results,
    });
    match std::env::var("DANLU_BENCH_OUT") {
        Ok(out) => {
            danlu_fs::write_atomic(
                out,
                serde_json::to_string_pretty(&report)?.as_bytes(),
                danlu_fs::Overwrite::Replace,
            )?;
        }
        Err(_) => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}
