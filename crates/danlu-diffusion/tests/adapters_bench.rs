//! Switching LoRA sets on an SD1.5-shaped checkpoint (`scripts/reference/model_make_full_shape.py
//! sd15`), CPU, float32: two random rank-16 LoRAs with the 264 module names of a real kohya SD1
//! LoRA (`invokeai_sd1_lora_kohya_fp16.keys.json` in the corpus), timed as
//!
//! * applying set A after none, switching to set B, back to none (each rebuilds the text
//!   encoder and UNet from the mapped checkpoint with the patched tensors computed on the way);
//! * applying the same set again (nothing to do).
//!
//! A generation with a set applied costs what one without costs: the weights are merged, the
//! networks are the same size and nothing runs per step.
//!
//! Ignored by default; run with `DANLU_BENCH_CHECKPOINT=target/reference/model/sd15_shape.safetensors
//! cargo test --release -p danlu-diffusion --test adapters_bench -- --ignored --nocapture`.
//! Numbers go in the issue notes, not in assertions.

#![allow(clippy::print_stderr)]

use candle_core::{DType, Device, Tensor};
use danlu_diffusion::adapters::AdapterFolders;
use danlu_diffusion::pipeline::{Architecture, LoadOptions, Pipeline};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

const KEYS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/corpus/models/keys/invokeai_sd1_lora_kohya_fp16.keys.json"
);

fn write_lora(path: &std::path::Path, seed: u64) -> anyhow::Result<()> {
    let keys: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(KEYS)?)?;
    let device = Device::Cpu;
    let mut tensors = HashMap::new();
    for (key, info) in &keys {
        let mut shape: Vec<usize> = info["shape"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default();
        if key.ends_with(".alpha") {
            tensors.insert(key.clone(), Tensor::new(8f32, &device)?);
            continue;
        }
        if key.ends_with("lora_down.weight") {
            shape[0] = 16;
        } else if key.ends_with("lora_up.weight") {
            shape[1] = 16;
        }
        // Deterministic small values (candle's CPU device has no seedable generator).
        let n: usize = shape.iter().product();
        let values = (Tensor::arange(0u32, n as u32, &device)?.to_dtype(DType::F32)?
            * (0.37 + seed as f64))?
            .sin()?;
        tensors.insert(key.clone(), (values.reshape(shape)? * 0.01)?);
    }
    candle_core::safetensors::save(&tensors, path)?;
    Ok(())
}

#[test]
#[ignore = "needs DANLU_BENCH_CHECKPOINT (an SD1.5-shaped checkpoint) and minutes of CPU"]
fn switching_lora_sets_on_sd15_shapes() -> anyhow::Result<()> {
    let Ok(checkpoint) = std::env::var("DANLU_BENCH_CHECKPOINT") else {
        eprintln!("DANLU_BENCH_CHECKPOINT is not set; nothing to measure");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    write_lora(&dir.path().join("a.safetensors"), 1)?;
    write_lora(&dir.path().join("b.safetensors"), 2)?;
    let t = Instant::now();
    let mut pipeline = Pipeline::load(&checkpoint, LoadOptions::new(Architecture::sd1()))?;
    eprintln!("load: {:.2} s", t.elapsed().as_secs_f64());
    pipeline.set_adapter_folders(AdapterFolders {
        lora: vec![dir.path().to_path_buf()],
        ..Default::default()
    });
    let mut time = |prompt: &str, label: &str| -> anyhow::Result<()> {
        let t = Instant::now();
        let applied = pipeline.apply_adapters(prompt, "")?;
        anyhow::ensure!(applied.warnings.is_empty(), "{:?}", applied.warnings);
        eprintln!("{label}: {:.2} s", t.elapsed().as_secs_f64());
        Ok(())
    };
    time("x <lora:a:1>", "none -> A (first use reads the file)")?;
    time("x <lora:b:0.8>", "A -> B (first use reads the file)")?;
    time("x <lora:a:1>", "B -> A")?;
    time("x <lora:a:1>", "A -> A (same set)")?;
    time("x <lora:a:1> <lora:b:0.5>", "A -> A+B")?;
    time("x", "A+B -> none")?;
    time("x", "none -> none")?;
    Ok(())
}
