//! LoRA/LyCORIS merging against `scripts/reference/adapters_reference.py`, name mapping of real
//! LoRAs, and textual-inversion embeddings.
//!
//! The script writes random-weight adapters of every subformat (kohya LoRA in diffusers-style
//! and ldm-style names, LoCon with a CP core, LoHa with and without Tucker cores, LoKr, IA3,
//! DoRA, diffusers/PEFT LoRA) with real key names for the tiny SD1 and SD2 checkpoints, and the
//! merged weights computed in float64 with A1111's and PEFT's formulas. Here each adapter is
//! read, mapped onto the checkpoint's networks and merged as loading does, in float32.
//!
//! Tolerance: the largest absolute difference over the largest absolute reference value of each
//! weight below 1e-5. The merge is one small matrix product and an addition per weight (a
//! Kronecker product, a Hadamard product, a norm for DoRA), so float32 rounding stays near 1e-7;
//! a wrong scale, multiplier, transpose or target changes the weight by the size of the update
//! (1e-2 and more here).

// Measured errors are printed for the record.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use danlu_diffusion::adapters::lora::{LoraModule, ModuleKind};
use danlu_diffusion::adapters::{
    EmbeddingSet, Lora, NetworkSet, WeightPatches, read_embedding, read_lora,
};
use danlu_diffusion::model::{
    Activation, Checkpoint, LayerChoice, TextConfig, TextLayout, UnetConfig,
};
use danlu_diffusion::prompt::{Padding, PromptTokenizer, Token};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/adapters");
const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/model");
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus");
const TOLERANCE: f64 = 1e-5;

/// The shapes of `sd1_tiny` / `sd2_tiny` (`tests/reference/model/*.shapes.json`).
fn tiny(model: &str) -> (TextConfig, UnetConfig) {
    let sd2 = model.starts_with("sd2");
    let text = TextConfig {
        layout: if sd2 {
            TextLayout::OpenClip
        } else {
            TextLayout::Clip
        },
        vocab_size: 49408,
        width: 16,
        intermediate: 64,
        heads: 2,
        layers: 3,
        max_positions: 77,
        activation: if sd2 {
            Activation::Gelu
        } else {
            Activation::QuickGelu
        },
        layer: if sd2 {
            LayerChoice::Fixed(2)
        } else {
            LayerChoice::ClipSkip
        },
    };
    let unet = UnetConfig {
        block_out_channels: vec![32, 64],
        attention: vec![true, false],
        heads: if sd2 { vec![2, 4] } else { vec![2, 2] },
        layers_per_block: 1,
        cross_attention_dim: 16,
        use_linear_projection: sd2,
        ..UnetConfig::sd1()
    };
    (text, unet)
}

fn checkpoint(model: &str) -> anyhow::Result<Checkpoint> {
    let index = danlu_format::read_index(format!("{MODELS}/{model}.safetensors"))?;
    Ok(Checkpoint::from_index(index)?)
}

fn weight(
    ckpt: &Checkpoint,
    text: &TextConfig,
    unet: &UnetConfig,
    name: &str,
) -> anyhow::Result<Tensor> {
    Ok(if let Some(n) = name.strip_prefix("unet/") {
        ckpt.unet_weight(unet, n)?
    } else {
        let n = name
            .strip_prefix("text_encoder/text_model.")
            .ok_or_else(|| anyhow::anyhow!("unexpected reference name {name}"))?;
        ckpt.text_weight(text, n)?
    })
}

fn relative_error(got: &Tensor, want: &Tensor) -> anyhow::Result<f64> {
    let got = got.to_dtype(DType::F64)?;
    let want = want.to_dtype(DType::F64)?;
    let diff = (got - &want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(1e-12))
}

#[test]
fn every_subformat_merges_like_the_reference() -> anyhow::Result<()> {
    let meta: BTreeMap<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(format!("{DIR}/adapters_reference.json"))?,
    )?;
    assert_eq!(
        meta.len(),
        16,
        "8 subformats for each of the two tiny models"
    );
    for (case, m) in &meta {
        let model = m["model"].as_str().unwrap_or_default();
        let te = m["te"].as_f64().unwrap_or(1.0) as f32;
        let un = m["unet"].as_f64().unwrap_or(1.0) as f32;
        let (text, unet) = tiny(model);
        let ckpt = checkpoint(model)?;
        let lora = read_lora(format!("{DIR}/{case}.safetensors"))?;
        assert!(lora.unknown.is_empty(), "{case}: {:?}", lora.unknown);
        let set = NetworkSet {
            loras: vec![(Arc::new(lora), te, un)],
        };
        let resolved = set.patches(&ckpt, &unet, &text)?;
        assert!(
            resolved.unmatched.is_empty(),
            "{case}: {:?}",
            resolved.unmatched
        );
        let reference = candle_core::safetensors::load(
            format!("{DIR}/{case}_merged.safetensors"),
            &Device::Cpu,
        )?;
        assert_eq!(
            resolved.patches.unet.len() + resolved.patches.text.len(),
            reference.len(),
            "{case}: patched weights"
        );
        assert_eq!(m["patched"].as_u64(), Some(reference.len() as u64));
        let patched = ckpt.with_patches(Some(Arc::new(resolved.patches)));
        let mut worst: f64 = 0.0;
        for (name, want) in &reference {
            let got = weight(&patched, &text, &unet, name)?;
            let err = relative_error(&got, want)?;
            assert!(err < TOLERANCE, "{case} {name}: relative error {err:e}");
            worst = worst.max(err);
            // The merge changed the weight, and the unpatched checkpoint still gives the
            // stored weight (the next set starts from it).
            let stored = weight(&ckpt, &text, &unet, name)?;
            assert!(
                relative_error(&stored, want)? > 1e-3,
                "{case} {name}: the patch changed nothing"
            );
        }
        eprintln!(
            "{case}: {} weights, worst relative error {worst:.2e}",
            reference.len()
        );
    }
    Ok(())
}

#[test]
fn two_networks_apply_one_after_the_other_and_switching_back_is_exact() -> anyhow::Result<()> {
    let (text, unet) = tiny("sd1_tiny");
    let ckpt = checkpoint("sd1_tiny")?;
    let a = Arc::new(read_lora(format!("{DIR}/sd1_tiny_kohya.safetensors"))?);
    let b = Arc::new(read_lora(format!("{DIR}/sd1_tiny_peft.safetensors"))?);
    let name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    let stored = ckpt.unet_weight(&unet, name)?;
    let only = |set: &NetworkSet| -> anyhow::Result<Tensor> {
        let p = set.patches(&ckpt, &unet, &text)?.patches;
        Ok(ckpt
            .with_patches(Some(Arc::new(p)))
            .unet_weight(&unet, name)?)
    };
    let wa = only(&NetworkSet {
        loras: vec![(a.clone(), 1.0, 1.0)],
    })?;
    let wb = only(&NetworkSet {
        loras: vec![(b.clone(), 1.0, 1.0)],
    })?;
    let both = only(&NetworkSet {
        loras: vec![(a.clone(), 1.0, 1.0), (b.clone(), 1.0, 1.0)],
    })?;
    // Plain LoRA updates do not depend on the weight, so they add up.
    let sum = ((&wa + &wb)? - &stored)?;
    assert!(relative_error(&both, &sum)? < 1e-6);
    // Back to no network: the stored weight, bit for bit.
    let none = ckpt
        .with_patches(Some(Arc::new(WeightPatches::default())))
        .unet_weight(&unet, name)?;
    assert_eq!(
        none.flatten_all()?.to_vec1::<f32>()?,
        stored.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

fn module(key: &str, down: (usize, usize), up: (usize, usize)) -> anyhow::Result<LoraModule> {
    Ok(LoraModule {
        key: key.to_owned(),
        kind: ModuleKind::Lora {
            up: Tensor::zeros(up, DType::F32, &Device::Cpu)?,
            down: Tensor::zeros(down, DType::F32, &Device::Cpu)?,
            mid: None,
        },
        alpha: None,
        dora_scale: None,
    })
}

#[test]
fn a_lora_for_another_base_is_refused_naming_both() -> anyhow::Result<()> {
    let (text, unet) = tiny("sd1_tiny");
    let ckpt = checkpoint("sd1_tiny")?;
    let key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k";
    let mut modules = BTreeMap::new();
    modules.insert(key.to_owned(), Arc::new(module(key, (4, 768), (32, 4))?));
    let lora = Lora {
        path: "sd15_style.safetensors".into(),
        name: "sd15_style".into(),
        modules,
        unknown: vec![],
    };
    let err = NetworkSet {
        loras: vec![(Arc::new(lora), 1.0, 1.0)],
    }
    .patches(&ckpt, &unet, &text)
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert_eq!(
        err,
        "`sd15_style.safetensors`: the LoRA is for SD 1.x (context width 768), the loaded \
         model is a model with context width 16"
    );
    Ok(())
}

/// A full-size SD1 checkpoint's tensor names and shapes (sd-mecha's `sd1-ldm.yaml`), without
/// data.
fn sd1_names_only() -> anyhow::Result<Checkpoint> {
    let text = std::fs::read_to_string(format!("{CORPUS}/models/keys/sdmecha_sd1-ldm.yaml"))?;
    let mut tensors = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.trim().split_once(": {shape: [") else {
            continue;
        };
        let shape: Vec<u64> = rest
            .split(']')
            .next()
            .unwrap_or_default()
            .split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect();
        tensors.push(danlu_format::TensorInfo {
            name: name.to_owned(),
            dtype: danlu_types::Dtype::F32,
            shape,
            data: danlu_format::DataRef {
                file: 0,
                offset: 0,
                len: 0,
                strides: None,
                quant: None,
            },
        });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let index = danlu_format::TensorIndex {
        tensors,
        ..Default::default()
    };
    Ok(Checkpoint::from_index(index)?)
}

#[test]
fn every_module_of_a_real_sd1_kohya_lora_finds_its_weight() -> anyhow::Result<()> {
    let keys: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!(
            "{CORPUS}/models/keys/invokeai_sd1_lora_kohya_fp16.keys.json"
        ))?)?;
    let mut modules = BTreeMap::new();
    for (key, info) in &keys {
        let Some(module) = key.strip_suffix(".lora_down.weight") else {
            continue;
        };
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|d| d.as_u64())
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default();
        modules.insert(
            module.to_owned(),
            Arc::new(module_of(module, shape.get(1).copied().unwrap_or(1))?),
        );
    }
    assert_eq!(
        modules.len(),
        264,
        "kohya LoRA of SD1: 72 text-encoder and 192 UNet modules"
    );
    let lora = Lora {
        path: "shinkai_makoto_offset.safetensors".into(),
        name: "shinkai_makoto_offset".into(),
        modules,
        unknown: vec![],
    };
    let ckpt = sd1_names_only()?;
    let resolved = NetworkSet {
        loras: vec![(Arc::new(lora), 1.0, 1.0)],
    }
    .patches(&ckpt, &UnetConfig::sd1(), &TextConfig::sd1())?;
    assert!(resolved.unmatched.is_empty(), "{:?}", resolved.unmatched);
    assert_eq!(resolved.patches.text.len(), 72);
    assert_eq!(resolved.patches.unet.len(), 192);
    assert!(
        resolved
            .patches
            .unet
            .contains_key("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight")
    );
    Ok(())
}

fn module_of(key: &str, inputs: usize) -> anyhow::Result<LoraModule> {
    module(key, (1, inputs), (1, 1))
}

#[test]
fn ldm_style_unet_names_map_like_diffusers_style_names() -> anyhow::Result<()> {
    let ckpt = sd1_names_only()?;
    let mut modules = BTreeMap::new();
    for key in [
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k",
        "lora_unet_output_blocks_11_0_in_layers_2",
        "lora_unet_middle_block_2_emb_layers_1",
        "lora_unet_input_blocks_3_0_op",
    ] {
        modules.insert(key.to_owned(), Arc::new(module_of(key, 768)?));
    }
    let lora = Lora {
        path: "ldm.safetensors".into(),
        name: "ldm".into(),
        modules,
        unknown: vec![],
    };
    let resolved = NetworkSet {
        loras: vec![(Arc::new(lora), 1.0, 1.0)],
    }
    .patches(&ckpt, &UnetConfig::sd1(), &TextConfig::sd1())?;
    assert!(resolved.unmatched.is_empty(), "{:?}", resolved.unmatched);
    let targets: Vec<&str> = resolved.patches.unet.keys().map(String::as_str).collect();
    assert_eq!(
        targets,
        [
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "down_blocks.0.downsamplers.0.conv.weight",
            "mid_block.resnets.1.time_emb_proj.weight",
            "up_blocks.3.resnets.2.conv1.weight",
        ]
    );
    Ok(())
}

fn corpus(name: &str) -> String {
    let p = format!("{CORPUS}/models/{name}");
    assert!(Path::new(&p).exists(), "missing corpus file {p}");
    p
}

#[test]
fn corpus_embeddings_load_in_every_format() -> anyhow::Result<()> {
    for (file, vectors) in [
        ("EasyNegative.safetensors", Some(8)),
        ("invokeai_test_embedding.safetensors", Some(5)),
        ("bad-hands-5.pt", None),
        ("bad_prompt_version2.pt", None),
        ("lora_kiriko2.ti.pt", Some(1)),
        ("birb-style_learned_embeds.bin", Some(1)),
    ] {
        let e = read_embedding(corpus(file))?;
        assert_eq!(e.width(), 768, "{file}");
        assert!(!e.is_empty(), "{file}");
        if let Some(n) = vectors {
            assert_eq!(e.len(), n, "{file}");
        }
        let norm = e.vectors.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(
            norm.is_finite() && norm > 0.0,
            "{file}: vectors are not zero"
        );
        eprintln!("{file}: {} vectors", e.len());
    }
    Ok(())
}

#[test]
fn an_embedding_replaces_exactly_its_rows_at_the_text_encoder_input() -> anyhow::Result<()> {
    let (text_cfg, _) = tiny("sd1_tiny");
    let ckpt = checkpoint("sd1_tiny")?;
    let text = ckpt
        .load_text_encoder(text_cfg, DType::F32, &Device::Cpu)?
        .model;
    let tokenizer = PromptTokenizer::new();
    let vectors: Vec<f32> = (0..3 * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    let emb = danlu_diffusion::adapters::Embedding {
        path: "tiny-neg.pt".into(),
        name: "tiny-neg".into(),
        vectors: Tensor::from_vec(vectors, (3, 16), &Device::Cpu)?,
    };
    let set = EmbeddingSet::new([emb.clone()], 16, &tokenizer);
    let with = tokenizer.tokenize("a photo, tiny-neg", &set);
    let without = tokenizer.tokenize("a photo, tiny-neg", &EmbeddingSet::default());
    let chunk = &with.chunks[0];
    let rows: Vec<usize> = chunk
        .tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t, Token::Embedding { .. }))
        .map(|(i, _)| i)
        .collect();
    // BOS, "a", "photo", ",", then the three vectors.
    assert_eq!(rows, [4, 5, 6]);
    // The input rows: the embedding's vectors where it sits, token embeddings elsewhere.
    let ids = chunk.ids(Padding::EndOfText);
    let tokens = Tensor::from_vec(ids, (1, 77), &Device::Cpu)?;
    let base = text.embed_tokens(&tokens)?;
    let patched = set.input_embeds(&text, chunk, Padding::EndOfText, &Device::Cpu)?;
    for row in 0..77 {
        let got = patched.narrow(1, row, 1)?.flatten_all()?.to_vec1::<f32>()?;
        let want = match rows.iter().position(|&r| r == row) {
            Some(v) => emb
                .vectors
                .narrow(0, v, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            None => base.narrow(1, row, 1)?.flatten_all()?.to_vec1::<f32>()?,
        };
        assert_eq!(got, want, "row {row}");
    }
    // The output: rows before the embedding are unchanged (causal attention), its rows differ
    // from the text "tiny-neg" encoded as plain tokens.
    let out = set.encode_chunk(&text, chunk, Padding::EndOfText, 1, &Device::Cpu)?;
    let plain_chunk = &without.chunks[0];
    let plain_ids = plain_chunk.ids(Padding::EndOfText);
    let plain = text.forward(&Tensor::from_vec(plain_ids, (1, 77), &Device::Cpu)?, 1)?;
    let head = |t: &Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(t.narrow(1, 0, 4)?.flatten_all()?.to_vec1::<f32>()?)
    };
    assert_eq!(head(&out)?, head(&plain)?);
    let row4 = |t: &Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(t.narrow(1, 4, 1)?.flatten_all()?.to_vec1::<f32>()?)
    };
    assert_ne!(row4(&out)?, row4(&plain)?);
    Ok(())
}

/// Hypernetworks against `adapters_reference.py`'s reimplementation of A1111's
/// `HypernetworkModule` (float64). Tolerance 1e-5 relative for the modules (a few float32
/// matrix products) and 2e-5 for the UNet output (as `tests/model_parity.rs` allows the
/// network itself).
#[test]
fn hypernetworks_match_a1111s_modules_and_unet() -> anyhow::Result<()> {
    use danlu_diffusion::adapters::hypernetwork::{ActiveHypernetwork, read_hypernetwork};
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!(
        "{DIR}/hypernetworks_reference.json"
    ))?)?;
    let reference = candle_core::safetensors::load(
        format!("{DIR}/hypernetworks_reference.safetensors"),
        &Device::Cpu,
    )?;
    let get = |k: &str| -> anyhow::Result<&Tensor> {
        reference
            .get(k)
            .ok_or_else(|| anyhow::anyhow!("no reference tensor {k}"))
    };
    let mut active = Vec::new();
    for name in ["hn_relu_ln", "hn_swish"] {
        let net = read_hypernetwork(format!("{DIR}/{name}.pt"))?;
        assert_eq!(net.name, name);
        assert_eq!(net.layers.keys().copied().collect::<Vec<_>>(), [16, 32, 64]);
        let multiplier = meta[name]["multiplier"].as_f64().unwrap_or(1.0) as f32;
        for (size, (k, v)) in &net.layers {
            let x = get(&format!("{name}_{size}_x"))?.to_dtype(DType::F32)?;
            for (which, module) in [("k", k), ("v", v)] {
                let got = module.forward(&x, multiplier)?;
                let want = get(&format!("{name}_{size}_{which}"))?;
                let err = relative_error(&got, want)?;
                assert!(err < 1e-5, "{name} {size} {which}: {err:e}");
            }
        }
        active.push(ActiveHypernetwork {
            network: Arc::new(net),
            multiplier,
        });
    }
    let (_, unet_cfg) = tiny("sd1_tiny");
    let ckpt = checkpoint("sd1_tiny")?;
    let mut unet = ckpt.load_unet(unet_cfg, DType::F32, &Device::Cpu)?.model;
    let latents = get("unet_latents")?.to_dtype(DType::F32)?;
    let context = get("unet_context")?.to_dtype(DType::F32)?;
    let t = meta["unet"]["timestep"].as_f64().unwrap_or(500.0);
    let plain = unet.forward(&latents, t, &context)?;
    let plain_err = relative_error(&plain, get("unet_plain")?)?;
    assert!(
        plain_err < 2e-5,
        "UNet without hypernetworks: {plain_err:e}"
    );
    unet.set_hypernetworks(active, &Device::Cpu)?;
    let hyper = unet.forward(&latents, t, &context)?;
    let err = relative_error(&hyper, get("unet_hyper")?)?;
    eprintln!("UNet with two hypernetworks: relative error {err:.2e} (without: {plain_err:.2e})");
    assert!(err < 2e-5, "UNet with hypernetworks: {err:e}");
    Ok(())
}

/// A full short txt2img run with a LoRA and a hypernetwork named by prompt tags and an
/// embedding in the negative prompt, against `adapters_reference.py` (A1111's procedure as
/// `pipeline_reference.py` runs it, in float64). Tolerance as `tests/pipeline_parity.rs`: the
/// final latent within 2e-5 of its largest value, 8-bit pixels within 1.
#[test]
fn a_full_run_with_lora_embedding_and_hypernetwork_matches_a1111() -> anyhow::Result<()> {
    use danlu_diffusion::adapters::AdapterFolders;
    use danlu_diffusion::pipeline::{Architecture, Family, LoadOptions, Pipeline, Request};
    use danlu_diffusion::sampling::{Scheduler, parse_sampler_name};
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!(
        "{DIR}/full_run_reference.json"
    ))?)?;
    let reference = candle_core::safetensors::load(
        format!("{DIR}/full_run_reference.safetensors"),
        &Device::Cpu,
    )?;
    let (text, unet) = tiny("sd1_tiny");
    let architecture = Architecture {
        family: Family::Sd1,
        text,
        unet,
        vae: danlu_diffusion::model::VaeConfig {
            block_out_channels: vec![32, 32, 32, 64],
            layers_per_block: 1,
            ..danlu_diffusion::model::VaeConfig::sd()
        },
    };
    let mut pipeline = Pipeline::load(
        format!("{MODELS}/sd1_tiny.safetensors"),
        LoadOptions::new(architecture),
    )?;
    let warnings = pipeline.set_adapter_folders(AdapterFolders {
        lora: vec![DIR.into()],
        embeddings: vec![format!("{DIR}/embeddings").into()],
        hypernetworks: vec![DIR.into()],
        ..Default::default()
    });
    assert!(warnings.is_empty(), "{warnings:?}");
    let (sampler, scheduler) = parse_sampler_name(
        meta["sampler"].as_str().unwrap_or_default(),
        Scheduler::Automatic,
    )?;
    let num = |k: &str| meta[k].as_f64().unwrap_or_default();
    let request = Request {
        prompt: meta["prompt"].as_str().unwrap_or_default().to_owned(),
        negative_prompt: meta["negative_prompt"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        steps: num("steps") as usize,
        cfg_scale: num("cfg_scale") as f32,
        sampler,
        scheduler,
        seed: num("seed") as u64,
        width: num("width") as usize,
        height: num("height") as usize,
        batch_size: 1,
        clip_skip: num("clip_skip") as usize,
        ..Request::default()
    };
    let applied = pipeline.apply_adapters(&request.prompt, &request.negative_prompt)?;
    assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
    assert_eq!(applied.loras.len(), 1);
    assert_eq!(
        (
            applied.loras[0].name.as_str(),
            applied.loras[0].te_multiplier,
            applied.loras[0].unet_multiplier
        ),
        ("sd1_tiny_kohya", 0.7, 1.3)
    );
    assert_eq!(
        applied
            .embeddings
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["tinyneg"]
    );
    assert_eq!(applied.hypernetworks.len(), 1);
    assert_eq!(applied.hypernetworks[0].multiplier, 0.8);
    let images = pipeline.txt2img(&request, &mut |_| std::ops::ControlFlow::Continue(()))?;
    let latent = images[0].latent.unsqueeze(0)?;
    let want = reference
        .get("latent")
        .ok_or_else(|| anyhow::anyhow!("no latent"))?;
    let err = relative_error(&latent, want)?;
    eprintln!("full run with LoRA, embedding and hypernetwork: latent relative error {err:.2e}");
    assert!(err < 2e-5, "latent relative error {err:e}");
    let want_px = reference
        .get("image")
        .ok_or_else(|| anyhow::anyhow!("no image"))?
        .flatten_all()?
        .to_vec1::<u8>()?;
    let worst = images[0]
        .pixels
        .iter()
        .zip(&want_px)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert_eq!(images[0].pixels.len(), want_px.len());
    assert!(worst <= 1, "a pixel differs by {worst}");

    // The same set again: nothing is rebuilt (same result); no tags: the stored weights again.
    let again = pipeline.apply_adapters(&request.prompt, &request.negative_prompt)?;
    assert_eq!(again, applied);
    let plain = Request {
        prompt: "a cat sitting on a table, photo".into(),
        negative_prompt: "lowres, bad anatomy".into(),
        ..request.clone()
    };
    let none = pipeline.apply_adapters(&plain.prompt, &plain.negative_prompt)?;
    assert!(none.loras.is_empty() && none.hypernetworks.is_empty() && none.embeddings.is_empty());
    let back = pipeline.txt2img(&plain, &mut |_| std::ops::ControlFlow::Continue(()))?;
    let fresh = Pipeline::load(
        format!("{MODELS}/sd1_tiny.safetensors"),
        LoadOptions::new(pipeline.architecture().clone()),
    )?
    .txt2img(&plain, &mut |_| std::ops::ControlFlow::Continue(()))?;
    assert_eq!(back[0].pixels, fresh[0].pixels, "switching back is exact");
    assert_eq!(
        back[0].latent.flatten_all()?.to_vec1::<f32>()?,
        fresh[0].latent.flatten_all()?.to_vec1::<f32>()?
    );
    Ok(())
}

#[test]
fn tags_naming_nothing_installed_are_warnings() -> anyhow::Result<()> {
    use danlu_diffusion::adapters::AdapterFolders;
    use danlu_diffusion::pipeline::{Architecture, Family, LoadOptions, Pipeline};
    let (text, unet) = tiny("sd1_tiny");
    let architecture = Architecture {
        family: Family::Sd1,
        text,
        unet,
        vae: danlu_diffusion::model::VaeConfig {
            block_out_channels: vec![32, 32, 32, 64],
            layers_per_block: 1,
            ..danlu_diffusion::model::VaeConfig::sd()
        },
    };
    let mut pipeline = Pipeline::load(
        format!("{MODELS}/sd1_tiny.safetensors"),
        LoadOptions::new(architecture),
    )?;
    pipeline.set_adapter_folders(AdapterFolders {
        lora: vec![DIR.into()],
        ..Default::default()
    });
    let applied =
        pipeline.apply_adapters("a <lora:missing:1> <hypernet:gone:0.5> <lora:x:y> cat", "")?;
    assert_eq!(
        applied.warnings,
        [
            "<lora:x:y>: the text encoder multiplier `y` is not a number",
            "LoRA `missing` is not installed",
            "hypernetwork `gone` is not installed",
        ]
    );
    Ok(())
}

#[test]
fn a_real_sdxl_lora_is_refused_on_sd1() -> anyhow::Result<()> {
    let keys: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(format!(
            "{CORPUS}/models/keys/invokeai_sdxl_lora_kohya_bf16.keys.json"
        ))?)?;
    let mut modules = BTreeMap::new();
    for key in keys.keys() {
        if let Some(module) = key.strip_suffix(".lora_down.weight") {
            modules.insert(module.to_owned(), Arc::new(module_of(module, 1)?));
        }
    }
    assert!(!modules.is_empty());
    let lora = Lora {
        path: "alien_style.safetensors".into(),
        name: "alien_style".into(),
        modules,
        unknown: vec![],
    };
    let err = NetworkSet {
        loras: vec![(Arc::new(lora), 1.0, 1.0)],
    }
    .patches(&sd1_names_only()?, &UnetConfig::sd1(), &TextConfig::sd1())
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert_eq!(
        err,
        "`alien_style.safetensors`: the LoRA is for SDXL (context width 2048), the loaded model \
         is SD 1.x (context width 768)"
    );
    Ok(())
}
