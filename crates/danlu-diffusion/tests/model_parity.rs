//! Network parity against PyTorch on tiny random-weight SD1 and SD2 checkpoints.
//!
//! `scripts/reference/model_make_tiny.py --commit` builds the checkpoints (real architectures,
//! small widths, A1111 single-file key names, half-precision storage) and computes the reference
//! outputs in float64 with diffusers, transformers and open_clip from the stored weights. Here the
//! same files are loaded through `danlu-format` and the LDM-to-diffusers remap and run in float32.
//!
//! Tolerance: the largest absolute difference divided by the largest absolute reference value
//! must stay below 1e-5. The weights are exact on both sides (half-precision values are exact in
//! float32 and float64), so the difference is float32 rounding only: a unit roundoff of 6e-8
//! grown over a few hundred accumulated products per output and a few dozen layers. PyTorch's own
//! float32 run of the same UNet differs from float64 by about 1e-6 on this scale (the script
//! prints it), so 1e-5 leaves a margin of ten while any wrong key, transpose, head split or
//! activation gives errors of order one.

// The measured errors are printed by the shared `check` helper, which is not itself a test.
#![allow(clippy::print_stderr)]

use candle_core::{DType, Device, Tensor};
use danlu_diffusion::model::{
    Activation, Checkpoint, LayerChoice, LoadReport, TextConfig, TextLayout, UnetConfig, VaeConfig,
};
use std::collections::{BTreeSet, HashMap};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference/model");
const TOLERANCE: f64 = 1e-5;

fn checkpoint(name: &str) -> anyhow::Result<Checkpoint> {
    let index = danlu_format::read_index(format!("{DIR}/{name}.safetensors"))?;
    Ok(Checkpoint::from_index(index)?)
}

fn reference(name: &str) -> anyhow::Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        format!("{DIR}/{name}_ref.safetensors"),
        &Device::Cpu,
    )?)
}

fn get<'a>(r: &'a HashMap<String, Tensor>, k: &str) -> anyhow::Result<&'a Tensor> {
    r.get(k)
        .ok_or_else(|| anyhow::anyhow!("reference has no `{k}`"))
}

fn f32_of(r: &HashMap<String, Tensor>, k: &str) -> anyhow::Result<Tensor> {
    Ok(get(r, k)?.to_dtype(DType::F32)?)
}

/// Largest absolute difference over largest absolute reference value.
fn relative_error(got: &Tensor, want: &Tensor) -> anyhow::Result<f64> {
    anyhow::ensure!(
        got.dims() == want.dims(),
        "shape {:?} != {:?}",
        got.dims(),
        want.dims()
    );
    let got = got.to_dtype(DType::F64)?;
    let want = want.to_dtype(DType::F64)?;
    let diff = (&got - &want)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale)
}

fn check(what: &str, got: &Tensor, want: &Tensor) -> anyhow::Result<()> {
    let e = relative_error(got, want)?;
    eprintln!("{what}: relative error {e:.2e}");
    anyhow::ensure!(
        e < TOLERANCE,
        "{what}: relative error {e:.2e} >= {TOLERANCE:e}"
    );
    Ok(())
}

// Tiny configurations: the shapes written by `model_make_tiny.py` (`SD1`, `SD2`, `VAE`).
fn tiny_unet(sd2: bool) -> UnetConfig {
    UnetConfig {
        block_out_channels: vec![32, 64],
        attention: vec![true, false],
        heads: if sd2 { vec![2, 4] } else { vec![2, 2] },
        layers_per_block: 1,
        cross_attention_dim: 16,
        use_linear_projection: sd2,
        ..if sd2 {
            UnetConfig::sd2()
        } else {
            UnetConfig::sd1()
        }
    }
}

fn tiny_vae() -> VaeConfig {
    VaeConfig {
        block_out_channels: vec![32, 32, 32, 64],
        layers_per_block: 1,
        ..VaeConfig::sd()
    }
}

fn tiny_text(sd2: bool) -> TextConfig {
    TextConfig {
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
    }
}

fn name(sd2: bool) -> &'static str {
    if sd2 { "sd2_tiny" } else { "sd1_tiny" }
}

fn text_parity(sd2: bool) -> anyhow::Result<()> {
    let ckpt = checkpoint(name(sd2))?;
    let r = reference(name(sd2))?;
    let text = ckpt
        .load_text_encoder(tiny_text(sd2), DType::F32, &Device::Cpu)?
        .model;
    // Batch of two prompts of different lengths: the causal mask must broadcast over batch and
    // heads.
    let tokens = get(&r, "tokens")?;
    check(
        "text, last layer",
        &text.forward(tokens, 1)?,
        get(&r, "text_last")?,
    )?;
    check(
        "text, clip skip 2 / penultimate",
        &text.forward(tokens, text.a1111_skip(2))?,
        get(&r, "text_skip2")?,
    )?;
    Ok(())
}

#[test]
fn sd1_text_encoder_matches_transformers() -> anyhow::Result<()> {
    text_parity(false)
}

#[test]
fn sd2_text_encoder_matches_open_clip() -> anyhow::Result<()> {
    text_parity(true)
}

#[test]
fn sd2_ignores_clip_skip_and_takes_the_penultimate_layer() -> anyhow::Result<()> {
    let ckpt = checkpoint("sd2_tiny")?;
    let text = ckpt
        .load_text_encoder(tiny_text(true), DType::F32, &Device::Cpu)?
        .model;
    assert_eq!(text.a1111_skip(1), 2);
    assert_eq!(text.a1111_skip(3), 2);
    let sd1 = checkpoint("sd1_tiny")?
        .load_text_encoder(tiny_text(false), DType::F32, &Device::Cpu)?
        .model;
    assert_eq!(sd1.a1111_skip(0), 1);
    assert_eq!(sd1.a1111_skip(2), 2);
    Ok(())
}

fn unet_parity(sd2: bool) -> anyhow::Result<()> {
    let ckpt = checkpoint(name(sd2))?;
    let r = reference(name(sd2))?;
    let unet = ckpt
        .load_unet(tiny_unet(sd2), DType::F32, &Device::Cpu)?
        .model;
    let t = get(&r, "unet_timestep")?
        .flatten_all()?
        .to_vec1::<f64>()?
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("empty timestep"))?;
    let out = unet.forward(&f32_of(&r, "unet_latent")?, t, &f32_of(&r, "unet_context")?)?;
    check("UNet", &out, get(&r, "unet_out")?)?;
    // Sides that do not halve evenly: A1111's up path (upsample by two, convolve, resize to the
    // skip connection), which differs from diffusers' by about 0.2 here.
    let odd = unet.forward(
        &f32_of(&r, "unet_odd_latent")?,
        t,
        &f32_of(&r, "unet_context")?,
    )?;
    check(
        "UNet, 13x10 latent, A1111 up path",
        &odd,
        get(&r, "unet_odd_out")?,
    )?;
    let e = relative_error(&odd, get(&r, "unet_odd_out_diffusers")?)?;
    anyhow::ensure!(e > 1e-3, "diffusers' up path should differ, got {e:.2e}");
    Ok(())
}

#[test]
fn sd1_unet_matches_diffusers() -> anyhow::Result<()> {
    unet_parity(false)
}

#[test]
fn sd2_unet_matches_diffusers() -> anyhow::Result<()> {
    unet_parity(true)
}

fn vae_parity(sd2: bool) -> anyhow::Result<()> {
    let ckpt = checkpoint(name(sd2))?;
    let r = reference(name(sd2))?;
    let vae = ckpt.load_vae(tiny_vae(), DType::F32, &Device::Cpu)?.model;
    check(
        "VAE decode",
        &vae.decode(&f32_of(&r, "vae_latent")?)?,
        get(&r, "vae_decoded")?,
    )?;
    let dist = vae.encode(&f32_of(&r, "vae_image")?)?;
    check("VAE encode mean", &dist.mean, get(&r, "vae_mean")?)?;
    check("VAE encode std", &dist.std, get(&r, "vae_std")?)
}

#[test]
fn sd1_vae_matches_diffusers() -> anyhow::Result<()> {
    vae_parity(false)
}

#[test]
fn sd2_vae_matches_diffusers() -> anyhow::Result<()> {
    vae_parity(true)
}

fn reports(ckpt: &Checkpoint, sd2: bool) -> anyhow::Result<Vec<(&'static str, LoadReport)>> {
    let cpu = Device::Cpu;
    Ok(vec![
        (
            "UNet",
            ckpt.load_unet(tiny_unet(sd2), DType::F32, &cpu)?.report,
        ),
        ("VAE", ckpt.load_vae(tiny_vae(), DType::F32, &cpu)?.report),
        (
            "text encoder",
            ckpt.load_text_encoder(tiny_text(sd2), DType::F32, &cpu)?
                .report,
        ),
    ])
}

fn every_tensor_is_used(sd2: bool) -> anyhow::Result<()> {
    let ckpt = checkpoint(name(sd2))?;
    let mut accounted = BTreeSet::new();
    let mut problems = Vec::new();
    let mut used = 0;
    for (what, report) in reports(&ckpt, sd2)? {
        if !report.is_complete() {
            problems.push(format!("{what}: {report:?}"));
        }
        used += report.used;
        accounted.extend(report.ignored.iter().cloned());
    }
    // ldm's diffusion schedule buffers belong to no network.
    accounted.extend(["betas".to_string(), "alphas_cumprod".to_string()]);
    let all = ckpt.index().tensors.len();
    let leftovers: Vec<_> = ckpt
        .index()
        .tensors
        .iter()
        .map(|t| &t.name)
        .filter(|n| !accounted.contains(*n))
        .collect();
    // Every tensor not accounted for above must have been read by exactly one network.
    assert_eq!(
        used,
        leftovers.len(),
        "read {used} of {} network tensors; problems: {problems:?}",
        leftovers.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(used > 0 && used + accounted.len() >= all);
    Ok(())
}

#[test]
fn sd1_every_tensor_is_used_once() -> anyhow::Result<()> {
    every_tensor_is_used(false)
}

#[test]
fn sd2_every_tensor_is_used_once() -> anyhow::Result<()> {
    every_tensor_is_used(true)
}

#[test]
fn leftover_and_missing_tensors_are_reported() -> anyhow::Result<()> {
    let mut index = danlu_format::read_index(format!("{DIR}/sd1_tiny.safetensors"))?;
    // A stray tensor under the UNet prefix, reusing existing bytes.
    let mut stray = index
        .get("model.diffusion_model.out.2.bias")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no out.2.bias"))?;
    stray.name = "model.diffusion_model.extra_head.bias".into();
    index.tensors.push(stray);
    // And a tensor the UNet needs, removed.
    index
        .tensors
        .retain(|t| t.name != "model.diffusion_model.input_blocks.1.1.proj_in.weight");
    index.sort();
    let ckpt = Checkpoint::from_index(index)?;
    let err = ckpt
        .load_unet(tiny_unet(false), DType::F32, &Device::Cpu)
        .err()
        .ok_or_else(|| anyhow::anyhow!("loaded without proj_in"))?;
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(
        chain.contains("down_blocks.0.attentions.0.proj_in.weight"),
        "{chain}"
    );
    let vae = ckpt.load_vae(tiny_vae(), DType::F32, &Device::Cpu)?;
    assert!(vae.report.is_complete());
    Ok(())
}

#[test]
fn unused_tensors_are_reported() -> anyhow::Result<()> {
    let mut index = danlu_format::read_index(format!("{DIR}/sd1_tiny.safetensors"))?;
    let mut stray = index
        .get("model.diffusion_model.out.2.bias")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no out.2.bias"))?;
    stray.name = "model.diffusion_model.extra_head.bias".into();
    index.tensors.push(stray);
    index.sort();
    let ckpt = Checkpoint::from_index(index)?;
    let report = ckpt
        .load_unet(tiny_unet(false), DType::F32, &Device::Cpu)?
        .report;
    assert_eq!(
        report.unmapped,
        vec!["model.diffusion_model.extra_head.bias"]
    );
    assert!(!report.is_complete());
    Ok(())
}

#[test]
fn inpainting_in_channels_come_from_the_weights() -> anyhow::Result<()> {
    let ckpt = checkpoint("sd1_tiny")?;
    assert_eq!(ckpt.unet_in_channels(), Some(4));
    let mut config = tiny_unet(false);
    config.in_channels = 9;
    let unet = ckpt.load_unet(config, DType::F32, &Device::Cpu)?.model;
    assert_eq!(unet.config.in_channels, 4);
    Ok(())
}

/// Half-precision compute: weights are converted from their stored dtype (f16, and bf16 for the
/// SD2 token embedding) to the compute dtype. f16 keeps 11 significant bits (steps of 4.9e-4 near
/// 1), so the bound is a few dozen such steps accumulated over the layers. bf16 keeps 8
/// significant bits (steps of 3.9e-3 near 1, eight times coarser), and the bound scales with it;
/// measured: about 1.2e-2 to 1.9e-2 for text, UNet and VAE, against 1.2e-3 to 2.2e-3 in f16. On
/// the CPU, bf16 convolutions run through `kernels::conv2d` (float32 inside), since candle
/// 0.11.1's own has no bf16 matmul.
#[test]
fn f16_compute_stays_close() -> anyhow::Result<()> {
    for (dtype, bound) in [(DType::F16, 1e-2), (DType::BF16, 8e-2)] {
        for sd2 in [false, true] {
            let ckpt = checkpoint(name(sd2))?;
            let r = reference(name(sd2))?;
            let cpu = Device::Cpu;
            let text = ckpt.load_text_encoder(tiny_text(sd2), dtype, &cpu)?.model;
            let got = text.forward(get(&r, "tokens")?, 2)?;
            let e_text = relative_error(&got, get(&r, "text_skip2")?)?;
            let unet = ckpt.load_unet(tiny_unet(sd2), dtype, &cpu)?.model;
            let got = unet.forward(
                &get(&r, "unet_latent")?.to_dtype(dtype)?,
                421.375,
                &get(&r, "unet_context")?.to_dtype(dtype)?,
            )?;
            let e_unet = relative_error(&got, get(&r, "unet_out")?)?;
            let vae = ckpt.load_vae(tiny_vae(), dtype, &cpu)?.model;
            let got = vae.decode(&get(&r, "vae_latent")?.to_dtype(dtype)?)?;
            let e_vae = relative_error(&got, get(&r, "vae_decoded")?)?;
            eprintln!(
                "{dtype:?} {}: text {e_text:.2e}, UNet {e_unet:.2e}, VAE {e_vae:.2e}",
                name(sd2)
            );
            for e in [e_text, e_unet, e_vae] {
                anyhow::ensure!(e < bound, "{dtype:?} {}: {e:.2e} >= {bound}", name(sd2));
            }
        }
    }
    Ok(())
}

#[test]
fn sd1_unet_from_ckpt_matches_diffusers() -> anyhow::Result<()> {
    // The same UNet tensors as `sd1_tiny.safetensors`, in a zip pickle under `state_dict.`.
    let index = danlu_format::read_index(format!("{DIR}/sd1_tiny_unet.ckpt"))?;
    let ckpt = Checkpoint::from_index(index)?;
    let r = reference("sd1_tiny")?;
    let loaded = ckpt.load_unet(tiny_unet(false), DType::F32, &Device::Cpu)?;
    assert!(loaded.report.is_complete(), "{:?}", loaded.report);
    let out = loaded.model.forward(
        &f32_of(&r, "unet_latent")?,
        421.375,
        &f32_of(&r, "unet_context")?,
    )?;
    check("UNet from .ckpt", &out, get(&r, "unet_out")?)
}

/// Component -> diffusers name -> (stored name, third of a fused tensor or -1, diffusers shape).
type NameMap = HashMap<String, HashMap<String, (String, i64, Vec<u64>)>>;

/// A diffusers pipeline folder's index (`unet/…`, `vae/…`, `text_encoder/…`) over the same bytes:
/// each diffusers name points at the stored tensor (or third of OpenCLIP's fused `in_proj`) that
/// diffusers' own converters give it (`*_diffusers_names.json`, written by the script). SD2's
/// last text layer is left out, as in diffusers' SD2 releases (23 of OpenCLIP's 24 layers).
fn diffusers_index(sd2: bool) -> anyhow::Result<danlu_format::TensorIndex> {
    let ldm = danlu_format::read_index(format!("{DIR}/{}.safetensors", name(sd2)))?;
    let text = std::fs::read_to_string(format!("{DIR}/{}_diffusers_names.json", name(sd2)))?;
    let names: NameMap = serde_json::from_str(&text)?;
    let mut index = danlu_format::TensorIndex {
        files: ldm.files.clone(),
        ..Default::default()
    };
    for (component, map) in &names {
        for (dname, (lname, chunk, shape)) in map {
            if sd2 && dname.contains("encoder.layers.2.") {
                continue;
            }
            let mut info = ldm
                .get(lname)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no `{lname}`"))?;
            info.name = format!("{component}/{dname}");
            if *chunk >= 0 {
                info.data.len /= 3;
                info.data.offset += *chunk as u64 * info.data.len;
            }
            anyhow::ensure!(
                shape.iter().product::<u64>() == info.numel() / if *chunk >= 0 { 3 } else { 1 },
                "`{dname}`: shape {shape:?} does not fit `{lname}`"
            );
            info.shape = shape.clone();
            index.tensors.push(info);
        }
    }
    index.sort();
    Ok(index)
}

fn diffusers_layout(sd2: bool) -> anyhow::Result<()> {
    let ckpt = Checkpoint::from_index(diffusers_index(sd2)?)?;
    let r = reference(name(sd2))?;
    let cpu = Device::Cpu;
    let mut text_config = tiny_text(sd2);
    text_config.layout = TextLayout::Clip;
    if sd2 {
        text_config.layers = 2;
        text_config.layer = LayerChoice::Fixed(1);
    }
    let text = ckpt.load_text_encoder(text_config, DType::F32, &cpu)?;
    let unet = ckpt.load_unet(tiny_unet(sd2), DType::F32, &cpu)?;
    let vae = ckpt.load_vae(tiny_vae(), DType::F32, &cpu)?;
    for report in [&text.report, &unet.report, &vae.report] {
        assert!(report.is_complete(), "{report:?}");
    }
    let text = text.model;
    check(
        "diffusers folder: text, A1111 layer for clip skip 2",
        &text.forward(get(&r, "tokens")?, text.a1111_skip(2))?,
        get(&r, "text_skip2")?,
    )?;
    let out = unet.model.forward(
        &f32_of(&r, "unet_latent")?,
        421.375,
        &f32_of(&r, "unet_context")?,
    )?;
    check("diffusers folder: UNet", &out, get(&r, "unet_out")?)?;
    let decoded = vae.model.decode(&f32_of(&r, "vae_latent")?)?;
    check(
        "diffusers folder: VAE decode",
        &decoded,
        get(&r, "vae_decoded")?,
    )
}

#[test]
fn sd1_diffusers_layout_matches() -> anyhow::Result<()> {
    diffusers_layout(false)
}

#[test]
fn sd2_diffusers_layout_matches() -> anyhow::Result<()> {
    diffusers_layout(true)
}

#[test]
fn networks_can_move_to_an_engine_thread() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Checkpoint>();
    is_send_sync::<danlu_diffusion::model::Unet>();
    is_send_sync::<danlu_diffusion::model::Vae>();
    is_send_sync::<danlu_diffusion::model::TextEncoder>();
}
