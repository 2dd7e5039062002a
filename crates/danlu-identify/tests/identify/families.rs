//! Every signature row identified on a generated fixture, and no fixture matching two rows.

use crate::{index_of, index_with};
use danlu_fixtures::models::*;
use danlu_format::TensorIndex;
use danlu_identify::signatures::{SIGNATURES, all_matches};
use danlu_identify::{Fingerprint, Hints, Identity, identify};
use danlu_types::{Base, Components, Dtype, Kind, Subformat, Variant};
use std::collections::BTreeSet;

/// What a fixture must be identified as.
struct Case {
    name: &'static str,
    index: TensorIndex,
    hints: Hints,
    kind: Kind,
    base: Base,
    variant: Option<Variant>,
    subformat: Option<Subformat>,
}

fn case(name: &'static str, index: TensorIndex, kind: Kind, base: Base) -> Case {
    Case {
        name,
        index,
        hints: Hints::default(),
        kind,
        base,
        variant: None,
        subformat: None,
    }
}

impl Case {
    fn variant(mut self, v: Variant) -> Self {
        self.variant = Some(v);
        self
    }
    fn sub(mut self, s: Subformat) -> Self {
        self.subformat = Some(s);
        self
    }
    fn named(mut self, file: &str) -> Self {
        self.hints.file_name = Some(file.to_owned());
        self
    }
}

fn no_ema() -> CheckpointOpts {
    CheckpointOpts::default()
}

fn inpaint(ch: u64) -> CheckpointOpts {
    CheckpointOpts {
        in_channels: ch,
        ..CheckpointOpts::default()
    }
}

fn te_only(targets: Vec<LoraTarget>) -> Vec<LoraTarget> {
    targets
        .into_iter()
        .filter(|t| t.kohya_prefix.starts_with("lora_te"))
        .collect()
}

fn without_attn2(targets: Vec<LoraTarget>) -> Vec<LoraTarget> {
    targets
        .into_iter()
        .filter(|t| !t.module.contains("attn2"))
        .collect()
}

fn flux_controlnet() -> Vec<FixtureTensor> {
    // XLabs-AI x-flux ControlNet: a short Flux transformer with `controlnet_blocks` and a hint encoder.
    let cfg = FluxConfig {
        double_blocks: 2,
        single_blocks: 0,
        ..FluxConfig::DEV
    };
    let mut t = flux_transformer("", &cfg, Dtype::Bf16, Dtype::Bf16);
    for i in 0..2 {
        t.push(FixtureTensor {
            name: format!("controlnet_blocks.{i}.weight"),
            dtype: Dtype::Bf16,
            shape: vec![3072, 3072],
        });
        t.push(FixtureTensor {
            name: format!("controlnet_blocks.{i}.bias"),
            dtype: Dtype::Bf16,
            shape: vec![3072],
        });
    }
    t.push(FixtureTensor {
        name: "input_hint_block.0.weight".into(),
        dtype: Dtype::Bf16,
        shape: vec![16, 3, 3, 3],
    });
    t
}

fn sd3_diffusers_transformer() -> Vec<FixtureTensor> {
    // diffusers `SD3Transformer2DModel` (stabilityai/stable-diffusion-3-medium-diffusers), abridged.
    let f = |name: &str, shape: &[u64]| FixtureTensor {
        name: name.into(),
        dtype: Dtype::F16,
        shape: shape.to_vec(),
    };
    let mut t = vec![
        f("pos_embed.proj.weight", &[1536, 16, 2, 2]),
        f("pos_embed.proj.bias", &[1536]),
        f("context_embedder.weight", &[1536, 4096]),
        f("proj_out.weight", &[64, 1536]),
    ];
    for i in 0..24 {
        for n in [
            "to_q",
            "to_k",
            "to_v",
            "add_k_proj",
            "add_q_proj",
            "add_v_proj",
        ] {
            t.push(f(
                &format!("transformer_blocks.{i}.attn.{n}.weight"),
                &[1536, 1536],
            ));
        }
    }
    t
}

fn sd3_controlnet() -> Vec<FixtureTensor> {
    // diffusers `SD3ControlNetModel` (`controlnets/controlnet_sd3.py`): the transformer's first
    // blocks, `pos_embed_input` for the hint latents and one `controlnet_blocks` linear per block.
    let mut t = sd3_diffusers_transformer();
    t.retain(|x| !x.name.starts_with("proj_out"));
    t.push(FixtureTensor {
        name: "pos_embed_input.proj.weight".into(),
        dtype: Dtype::F16,
        shape: vec![1536, 16, 2, 2],
    });
    for i in 0..24 {
        t.push(FixtureTensor {
            name: format!("controlnet_blocks.{i}.weight"),
            dtype: Dtype::F16,
            shape: vec![1536, 1536],
        });
    }
    t
}

fn hat_upscaler() -> Vec<FixtureTensor> {
    // XPixelGroup HAT (`hat/archs/hat_arch.py`): Swin-like residual groups with a channel-attention
    // `conv_block` in every block and an overlapping cross-attention block per group.
    let f = |name: String, shape: &[u64]| FixtureTensor {
        name,
        dtype: Dtype::F32,
        shape: shape.to_vec(),
    };
    let mut t = vec![
        f("conv_first.weight".into(), &[180, 3, 3, 3]),
        f("relative_position_index_SA".into(), &[256, 256]),
        f("relative_position_index_OCA".into(), &[256, 576]),
    ];
    for g in 0..2 {
        for b in 0..2 {
            let p = format!("layers.{g}.residual_group.blocks.{b}");
            t.push(f(format!("{p}.attn.qkv.weight"), &[540, 180]));
            t.push(f(format!("{p}.conv_block.cab.0.weight"), &[60, 180, 3, 3]));
        }
        t.push(f(
            format!("layers.{g}.residual_group.overlap_attn.qkv.weight"),
            &[540, 180],
        ));
    }
    t
}

fn hypernetwork_index(dims: &[u64]) -> TensorIndex {
    let mut index = index_of(&hypernetwork(dims, &[1, 2, 1]));
    index
        .values
        .insert("layer_structure".into(), serde_json::json!([1.0, 2.0, 1.0]));
    index
        .values
        .insert("activation_func".into(), serde_json::json!("linear"));
    index
        .values
        .insert("name".into(), serde_json::json!("test"));
    index
}

fn a1111_embedding_index(width: u64) -> TensorIndex {
    let mut index = index_of(&a1111_embedding(5, width));
    index
        .values
        .insert("string_to_token.*".into(), serde_json::json!(265));
    index
        .values
        .insert("name".into(), serde_json::json!("bad-hands-5"));
    index.values.insert("step".into(), serde_json::json!(1500));
    index
}

fn cases() -> Vec<Case> {
    use Base::*;
    use Kind::*;
    let refiner = UnetConfig::sdxl_refiner();
    vec![
        // Checkpoints and diffusion models.
        case(
            "sd1 checkpoint",
            index_of(&sd1_checkpoint(&CheckpointOpts::full())),
            Checkpoint,
            Sd1,
        ),
        case(
            "sd1 pickled checkpoint",
            index_of(&prefixed("state_dict.", sd1_checkpoint(&no_ema()))),
            Checkpoint,
            Sd1,
        ),
        case(
            "sd1 inpaint",
            index_of(&sd1_checkpoint(&inpaint(9))),
            Checkpoint,
            Sd1,
        )
        .variant(Variant::Inpaint),
        case(
            "sd1 pix2pix",
            index_of(&sd1_checkpoint(&inpaint(8))),
            Checkpoint,
            Sd1,
        )
        .variant(Variant::Pix2pix),
        case(
            "sd2 depth",
            index_of(&sd2_checkpoint(&inpaint(5))),
            Checkpoint,
            Sd2,
        )
        .variant(Variant::Depth),
        case(
            "sd1 bare unet",
            index_of(&ldm_unet("", &UnetConfig::sd1(), Dtype::F16)),
            DiffusionModel,
            Sd1,
        ),
        case(
            "sd1 unet only",
            index_of(&ldm_unet(
                "model.diffusion_model.",
                &UnetConfig::sd1(),
                Dtype::F16,
            )),
            DiffusionModel,
            Sd1,
        ),
        case(
            "sd2 checkpoint",
            index_of(&sd2_checkpoint(&no_ema())),
            Checkpoint,
            Sd2,
        ),
        case(
            "sdxl checkpoint",
            index_of(&sdxl_checkpoint(&no_ema())),
            Checkpoint,
            Sdxl,
        ),
        case(
            "sdxl inpaint",
            index_of(&sdxl_checkpoint(&inpaint(9))),
            Checkpoint,
            Sdxl,
        )
        .variant(Variant::Inpaint),
        case(
            "sdxl diffusers pipeline",
            index_of(&diffusers_pipeline(&UnetConfig::sdxl(), Dtype::F16)),
            Checkpoint,
            Sdxl,
        ),
        case(
            "sd1 diffusers pipeline",
            index_of(&diffusers_pipeline(&UnetConfig::sd1(), Dtype::F16)),
            Checkpoint,
            Sd1,
        ),
        case(
            "sdxl diffusers unet",
            index_of(&diffusers_unet("", &UnetConfig::sdxl(), Dtype::F16)),
            DiffusionModel,
            Sdxl,
        ),
        case(
            "sdxl refiner checkpoint",
            index_of(&sdxl_refiner_checkpoint(&no_ema())),
            Checkpoint,
            SdxlRefiner,
        ),
        case(
            "sd3 checkpoint",
            index_of(&sd3_checkpoint(&no_ema())),
            Checkpoint,
            Sd3,
        ),
        case(
            "sd3 without text encoders",
            index_of(&sd3_checkpoint(&CheckpointOpts {
                text_encoder: false,
                ..no_ema()
            })),
            Checkpoint,
            Sd3,
        ),
        case(
            "sd3 mmdit alone",
            index_of(&sd3_mmdit("", 24, Dtype::F16)),
            DiffusionModel,
            Sd3,
        ),
        case(
            "sd3 diffusers transformer",
            index_of(&sd3_diffusers_transformer()),
            DiffusionModel,
            Sd3,
        ),
        case(
            "flux dev checkpoint",
            index_of(&flux_checkpoint(&FluxConfig::DEV, &no_ema())),
            Checkpoint,
            Flux,
        )
        .variant(Variant::Dev),
        case(
            "flux diffusers pipeline",
            index_of(&diffusers_flux_pipeline(&FluxConfig::DEV, Dtype::Bf16)),
            Checkpoint,
            Flux,
        )
        .variant(Variant::Dev),
        case(
            "flux schnell diffusers transformer",
            index_of(&diffusers_flux_transformer(
                "",
                &FluxConfig::SCHNELL,
                Dtype::Bf16,
            )),
            DiffusionModel,
            Flux,
        )
        .variant(Variant::Schnell),
        case(
            "flux schnell transformer",
            index_of(&flux_transformer(
                "",
                &FluxConfig::SCHNELL,
                Dtype::Bf16,
                Dtype::Bf16,
            )),
            DiffusionModel,
            Flux,
        )
        .variant(Variant::Schnell),
        case(
            "flux fill transformer",
            index_of(&flux_transformer(
                "model.diffusion_model.",
                &FluxConfig::FILL,
                Dtype::Bf16,
                Dtype::Bf16,
            )),
            DiffusionModel,
            Flux,
        )
        .variant(Variant::Fill),
        case(
            "flux dev gguf",
            index_of(&flux_transformer(
                "",
                &FluxConfig::DEV,
                Dtype::Quantized,
                Dtype::F32,
            )),
            DiffusionModel,
            Flux,
        )
        .variant(Variant::Dev),
        // VAEs.
        case(
            "kl-f8 vae",
            index_of(&ldm_vae("", 4, true, Dtype::F32)),
            Vae,
            Sd1,
        ),
        case(
            "kl-f8 vae named sdxl",
            index_of(&ldm_vae("", 4, true, Dtype::F32)),
            Vae,
            Sdxl,
        )
        .named("sdxl_vae.safetensors"),
        case(
            "diffusers vae",
            index_of(&diffusers_vae("", 4, true, Dtype::F16)),
            Vae,
            Sd1,
        ),
        case(
            "16-channel vae",
            index_of(&ldm_vae("", 16, false, Dtype::F32)),
            Vae,
            Flux,
        ),
        case(
            "16-channel vae named sd3",
            index_of(&ldm_vae("", 16, false, Dtype::F32)),
            Vae,
            Sd3,
        )
        .named("sd3_vae.safetensors"),
        // LoRAs.
        case(
            "sd1 kohya lora",
            index_of(&sd1_lora(LoraStyle::Kohya, 8)),
            Lora,
            Sd1,
        )
        .sub(Subformat::Lora),
        case(
            "sd1 locon",
            index_of(&sd1_lora(LoraStyle::Locon, 8)),
            Lora,
            Sd1,
        )
        .sub(Subformat::Locon),
        case(
            "sd1 loha",
            index_of(&sd1_lora(LoraStyle::Loha, 8)),
            Lora,
            Sd1,
        )
        .sub(Subformat::Loha),
        case(
            "sd1 peft lora",
            index_of(&sd1_lora(LoraStyle::Peft, 8)),
            Lora,
            Sd1,
        )
        .sub(Subformat::Diffusers),
        case(
            "sd1 dora",
            index_of(&sd1_lora(LoraStyle::Dora, 8)),
            Lora,
            Sd1,
        )
        .sub(Subformat::Dora),
        case(
            "sd1 ia3 with metadata",
            index_with(
                &sd1_lora(LoraStyle::Ia3, 8),
                &[("ss_base_model_version", "sd_v1")],
            ),
            Lora,
            Sd1,
        )
        .sub(Subformat::Ia3),
        case(
            "sd1 lora without cross-attention",
            index_of(&lora(
                &without_attn2(sd1_lora_targets(false)),
                LoraStyle::Kohya,
                4,
                Dtype::F16,
            )),
            Lora,
            Sd1,
        )
        .sub(Subformat::Lora),
        case(
            "sd2 lora",
            index_of(&lora(
                &unet_lora_targets(&UnetConfig::sd2(), true, false),
                LoraStyle::Kohya,
                4,
                Dtype::F16,
            )),
            Lora,
            Sd2,
        )
        .sub(Subformat::Lora),
        case(
            "sd2 text-encoder lora",
            index_of(&lora(
                &text_encoder_lora_targets(ClipText::H, "lora_te", "text_encoder"),
                LoraStyle::Kohya,
                4,
                Dtype::F16,
            )),
            Lora,
            Sd2,
        ),
        case(
            "sdxl kohya lora",
            index_of(&sdxl_lora(LoraStyle::Kohya, 8)),
            Lora,
            Sdxl,
        )
        .sub(Subformat::Lora),
        case(
            "sdxl peft lora",
            index_of(&sdxl_lora(LoraStyle::Peft, 8)),
            Lora,
            Sdxl,
        )
        .sub(Subformat::Diffusers),
        case(
            "sdxl locon",
            index_of(&sdxl_lora(LoraStyle::Locon, 8)),
            Lora,
            Sdxl,
        )
        .sub(Subformat::Locon),
        case(
            "sdxl lokr",
            index_of(&sdxl_lora(LoraStyle::Lokr, 8)),
            Lora,
            Sdxl,
        )
        .sub(Subformat::Lokr),
        case(
            "sdxl text-encoder lokr",
            index_of(&lora(
                &te_only(sdxl_lora_targets(false)),
                LoraStyle::Lokr,
                4,
                Dtype::F16,
            )),
            Lora,
            Sdxl,
        )
        .sub(Subformat::Lokr),
        case(
            "sdxl refiner lora",
            index_of(&lora(
                &unet_lora_targets(&refiner, false, false),
                LoraStyle::Kohya,
                4,
                Dtype::F16,
            )),
            Lora,
            SdxlRefiner,
        ),
        case(
            "flux kohya lora",
            index_of(&flux_lora(LoraStyle::Kohya, 16)),
            Lora,
            Flux,
        )
        .sub(Subformat::Lora),
        case(
            "flux peft lora (bfl names)",
            index_of(&flux_lora(LoraStyle::Peft, 16)),
            Lora,
            Flux,
        )
        .sub(Subformat::Diffusers),
        case(
            "flux diffusers lora",
            index_of(&lora(
                &diffusers_transformer_lora_targets(3072, 19, 38),
                LoraStyle::Peft,
                16,
                Dtype::Bf16,
            )),
            Lora,
            Flux,
        )
        .sub(Subformat::Diffusers),
        case(
            "sd3 lora (joint blocks)",
            index_of(&lora(&sd3_lora_targets(), LoraStyle::Kohya, 16, Dtype::F16)),
            Lora,
            Sd3,
        ),
        case(
            "sd3 diffusers lora",
            index_of(&lora(
                &diffusers_transformer_lora_targets(1536, 24, 0),
                LoraStyle::Peft,
                16,
                Dtype::F16,
            )),
            Lora,
            Sd3,
        ),
        // Embeddings.
        case(
            "a1111 embedding",
            a1111_embedding_index(768),
            Embedding,
            Sd1,
        )
        .sub(Subformat::A1111Pt),
        case(
            "sd2 a1111 embedding",
            a1111_embedding_index(1024),
            Embedding,
            Sd2,
        )
        .sub(Subformat::A1111Pt),
        case(
            "safetensors embedding",
            index_of(&safetensors_embedding(8, 768)),
            Embedding,
            Sd1,
        )
        .sub(Subformat::Safetensors),
        case(
            "sdxl embedding",
            index_of(&sdxl_embedding(4)),
            Embedding,
            Sdxl,
        )
        .sub(Subformat::SdxlPair),
        // Hypernetworks.
        case(
            "sd1 hypernetwork",
            hypernetwork_index(&[768, 320, 640, 1280]),
            Hypernetwork,
            Sd1,
        ),
        case(
            "sd2 hypernetwork",
            hypernetwork_index(&[1024, 320, 640, 1280]),
            Hypernetwork,
            Sd2,
        ),
        // ControlNets, adapters.
        case(
            "sd1 ldm controlnet",
            index_of(&ldm_controlnet(&UnetConfig::sd1(), Dtype::F16)),
            Controlnet,
            Sd1,
        ),
        case(
            "sd2 ldm controlnet",
            index_of(&ldm_controlnet(&UnetConfig::sd2(), Dtype::F16)),
            Controlnet,
            Sd2,
        ),
        case(
            "sdxl diffusers controlnet",
            index_of(&diffusers_controlnet(&UnetConfig::sdxl(), Dtype::F16)),
            Controlnet,
            Sdxl,
        ),
        case(
            "flux controlnet",
            index_of(&flux_controlnet()),
            Controlnet,
            Flux,
        ),
        case(
            "sd3 controlnet",
            index_of(&sd3_controlnet()),
            Controlnet,
            Sd3,
        ),
        case(
            "sd1 t2i-adapter",
            index_of(&t2i_adapter(192, Dtype::F32)),
            T2iAdapter,
            Sd1,
        ),
        case(
            "sdxl t2i-adapter",
            index_of(&t2i_adapter(768, Dtype::F16)),
            T2iAdapter,
            Sdxl,
        ),
        case(
            "sd1 ip-adapter",
            index_of(&ip_adapter(&UnetConfig::sd1(), 1024, Dtype::F16)),
            IpAdapter,
            Sd1,
        ),
        case(
            "sd2 ip-adapter",
            index_of(&ip_adapter(&UnetConfig::sd2(), 1024, Dtype::F16)),
            IpAdapter,
            Sd2,
        ),
        case(
            "sdxl ip-adapter",
            index_of(&ip_adapter(&UnetConfig::sdxl(), 1280, Dtype::F16)),
            IpAdapter,
            Sdxl,
        ),
        // Encoders.
        case(
            "clip vision vit-h",
            index_of(&clip_vision(1280, 32, 1024, Dtype::F16)),
            ClipVision,
            Base::Unknown,
        ),
        case(
            "openclip-h text encoder",
            index_of(&open_clip_text("", ClipText::H, Dtype::F16)),
            TextEncoder,
            Sd2,
        ),
        case(
            "clip-l text encoder",
            index_of(&hf_clip_text("", ClipText::L, false, false, Dtype::F16)),
            TextEncoder,
            Base::Unknown,
        ),
        case(
            "t5xxl text encoder",
            index_of(&t5xxl_encoder("", Dtype::Bf16)),
            TextEncoder,
            Base::Unknown,
        ),
        // Upscalers.
        case(
            "esrgan old",
            index_of(&upscaler(UpscalerArch::EsrganOld)),
            Upscaler,
            Base::Unknown,
        ),
        case(
            "real-esrgan",
            index_of(&prefixed("params_ema.", upscaler(UpscalerArch::Rrdb))),
            Upscaler,
            Base::Unknown,
        ),
        case(
            "compact",
            index_of(&prefixed("params.", upscaler(UpscalerArch::Compact))),
            Upscaler,
            Base::Unknown,
        ),
        case(
            "swinir",
            index_of(&upscaler(UpscalerArch::SwinIr)),
            Upscaler,
            Base::Unknown,
        ),
    ]
}

fn check(c: &Case) -> Identity {
    let id = identify(&c.index, &c.hints);
    assert_eq!(
        (id.kind, id.base),
        (c.kind, c.base),
        "{}: evidence {:#?}",
        c.name,
        id.evidence
    );
    assert_eq!(
        id.variant, c.variant,
        "{}: variant; evidence {:#?}",
        c.name, id.evidence
    );
    if c.subformat.is_some() {
        assert_eq!(id.subformat, c.subformat, "{}: subformat", c.name);
    }
    id
}

#[test]
fn every_fixture_is_identified_as_its_family() {
    for c in cases() {
        check(&c);
    }
}

#[test]
fn no_fixture_matches_two_signature_rows_and_every_row_is_exercised() {
    let mut used = BTreeSet::new();
    for c in cases() {
        let fp = Fingerprint::from_index(&c.index);
        let rows = all_matches(&fp);
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        assert!(
            rows.len() <= 1,
            "{} matches several rows: {names:?}",
            c.name
        );
        used.extend(names);
    }
    let unused: Vec<&str> = SIGNATURES
        .iter()
        .map(|r| r.name)
        .filter(|n| !used.contains(n))
        .collect();
    assert!(unused.is_empty(), "rows without a fixture: {unused:?}");
    let names: BTreeSet<&str> = SIGNATURES.iter().map(|r| r.name).collect();
    assert_eq!(names.len(), SIGNATURES.len(), "row names must be unique");
}

#[test]
fn checkpoint_components_follow_the_parts_present() {
    let id = identify(
        &index_of(&sd1_checkpoint(&CheckpointOpts::full())),
        &Hints::default(),
    );
    assert_eq!(
        id.components,
        Some(Components {
            unet: true,
            vae: true,
            text_encoder: true,
            ema: true
        })
    );
    let no_vae = CheckpointOpts {
        vae: false,
        ..CheckpointOpts::default()
    };
    let id = identify(&index_of(&sdxl_checkpoint(&no_vae)), &Hints::default());
    assert_eq!(id.kind, Kind::Checkpoint);
    assert_eq!(
        id.components,
        Some(Components {
            unet: true,
            vae: false,
            text_encoder: true,
            ema: false
        })
    );
    let id = identify(
        &index_of(&flux_transformer(
            "",
            &FluxConfig::DEV,
            Dtype::Bf16,
            Dtype::Bf16,
        )),
        &Hints::default(),
    );
    assert_eq!(
        id.components,
        Some(Components {
            unet: true,
            vae: false,
            text_encoder: false,
            ema: false
        })
    );
    let id = identify(&index_of(&sd1_lora(LoraStyle::Kohya, 4)), &Hints::default());
    assert_eq!(id.components, None);
}

#[test]
fn dtype_is_dominant_by_elements_and_parameters_count_float_weights() {
    let mut t = sd1_checkpoint(&CheckpointOpts::default());
    let expected: u64 = t
        .iter()
        .filter(|x| x.dtype.is_float())
        .map(FixtureTensor::numel)
        .sum();
    // A few large f32 tensors do not outweigh the f16 bulk.
    t.push(FixtureTensor {
        name: "extra".into(),
        dtype: Dtype::F32,
        shape: vec![1000],
    });
    let id = identify(&index_of(&t), &Hints::default());
    assert_eq!(id.dtype, Some(Dtype::F16));
    assert_eq!(id.parameters, expected + 1000);
    // SD1.5 has about 1.07 billion parameters with its VAE and text encoder.
    assert!(
        (1_000_000_000..1_100_000_000).contains(&id.parameters),
        "{}",
        id.parameters
    );
    let gguf = identify(
        &index_of(&flux_transformer(
            "",
            &FluxConfig::DEV,
            Dtype::Quantized,
            Dtype::F32,
        )),
        &Hints::default(),
    );
    assert_eq!(gguf.dtype, Some(Dtype::Quantized));
    // Flux.1 is a 12-billion-parameter transformer.
    assert!(
        (11_500_000_000..12_500_000_000).contains(&gguf.parameters),
        "{}",
        gguf.parameters
    );
}

#[test]
fn embeddings_report_their_vectors() {
    let id = identify(&index_of(&safetensors_embedding(8, 768)), &Hints::default());
    assert_eq!(id.vectors, Some(8));
    let id = identify(&index_of(&sdxl_embedding(3)), &Hints::default());
    assert_eq!(id.vectors, Some(3));
    let id = identify(&index_of(&sd1_lora(LoraStyle::Kohya, 4)), &Hints::default());
    assert_eq!(id.vectors, None);
}

#[test]
fn guessed_vae_base_carries_a_warning_and_a_hint_removes_it() {
    let vae = index_of(&ldm_vae("", 4, true, Dtype::F32));
    let id = identify(&vae, &Hints::default());
    assert!(
        id.warnings.iter().any(|w| w.contains("guess")),
        "{:?}",
        id.warnings
    );
    let id = identify(
        &vae,
        &Hints {
            file_name: Some("sdxl_vae.safetensors".into()),
            yaml: None,
        },
    );
    assert_eq!(id.base, Base::Sdxl);
    assert!(id.warnings.is_empty(), "{:?}", id.warnings);
    // diffusers `config.json` scaling factor (0.13025 is SDXL's).
    let dv = index_with(
        &diffusers_vae("", 4, true, Dtype::F16),
        &[("config.scaling_factor", "0.13025")],
    );
    assert_eq!(identify(&dv, &Hints::default()).base, Base::Sdxl);
    // A hint for a family with another latent layout is ignored.
    let id = identify(
        &vae,
        &Hints {
            file_name: Some("flux_vae.safetensors".into()),
            yaml: None,
        },
    );
    assert_eq!(id.base, Base::Sd1);
}

#[test]
fn v_prediction_only_when_the_file_says_so() {
    let sd2 = index_of(&sd2_checkpoint(&CheckpointOpts::default()));
    assert_eq!(identify(&sd2, &Hints::default()).variant, None);
    let yaml = "model:\n  params:\n    parameterization: \"v\"\n    linear_start: 0.00085\n";
    let hints = Hints {
        file_name: Some("768-v-ema.ckpt".into()),
        yaml: Some(yaml.into()),
    };
    assert_eq!(identify(&sd2, &hints).variant, Some(Variant::VPrediction));
    let eps = Hints {
        file_name: None,
        yaml: Some("    parameterization: eps\n".into()),
    };
    assert_eq!(identify(&sd2, &eps).variant, None);
    let mut xl = sdxl_checkpoint(&CheckpointOpts::default());
    xl.push(FixtureTensor {
        name: "v_pred".into(),
        dtype: Dtype::I64,
        shape: vec![0],
    });
    assert_eq!(
        identify(&index_of(&xl), &Hints::default()).variant,
        Some(Variant::VPrediction)
    );
}

#[test]
fn hints_from_path_read_the_same_name_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.ckpt");
    let hints = Hints::from_path(&model);
    assert_eq!(hints.file_name.as_deref(), Some("model.ckpt"));
    assert_eq!(hints.yaml, None);
    std::fs::write(dir.path().join("model.yaml"), "parameterization: 'v'\n").unwrap();
    assert!(Hints::from_path(&model).is_v_parameterization());
}

#[test]
fn lora_metadata_fills_an_unknown_base_and_flags_a_disagreement() {
    let ia3 = index_with(
        &sd1_lora(LoraStyle::Ia3, 4),
        &[("modelspec.architecture", "stable-diffusion-xl-v1-base/lora")],
    );
    let id = identify(&ia3, &Hints::default());
    assert_eq!(id.base, Base::Sdxl);
    assert!(
        id.evidence
            .iter()
            .any(|e| e.contains("modelspec.architecture")),
        "{:?}",
        id.evidence
    );
    let wrong = index_with(
        &sd1_lora(LoraStyle::Kohya, 4),
        &[("ss_base_model_version", "sdxl_base_v1-0")],
    );
    let id = identify(&wrong, &Hints::default());
    assert_eq!(id.base, Base::Sd1, "keys win over metadata");
    assert!(
        id.warnings
            .iter()
            .any(|w| w.contains("ss_base_model_version")),
        "{:?}",
        id.warnings
    );
}

#[test]
fn unknown_files_report_their_top_key_prefixes() {
    let t: Vec<FixtureTensor> = (0..5)
        .map(|i| FixtureTensor {
            name: format!("encoder.layer{i}.weight"),
            dtype: Dtype::F32,
            shape: vec![4, 4],
        })
        .chain(std::iter::once(FixtureTensor {
            name: "head.weight".into(),
            dtype: Dtype::F32,
            shape: vec![2, 4],
        }))
        .collect();
    let id = identify(&index_of(&t), &Hints::default());
    assert_eq!(id.kind, Kind::Unknown);
    assert_eq!(id.base, Base::Unknown);
    assert!(
        id.evidence
            .iter()
            .any(|e| e.contains("encoder (5)") && e.contains("head (1)")),
        "{:?}",
        id.evidence
    );
    assert!(!id.warnings.is_empty());
}

#[test]
fn identity_serializes_with_contract_words() {
    let id = identify(&index_of(&sdxl_embedding(2)), &Hints::default());
    let json = serde_json::to_value(&id).unwrap();
    assert_eq!(json["kind"], "embedding");
    assert_eq!(json["base"], "sdxl");
    assert_eq!(json["subformat"], "sdxl_pair");
    assert_eq!(json["variant"], serde_json::Value::Null);
    assert_eq!(json["dtype"], "f32");
    assert_eq!(json["vectors"], 2);
}

#[test]
fn crate_docs_list_every_signature_row_in_order() {
    let docs: String = include_str!("../../src/lib.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    let table = danlu_identify::signatures::rows_markdown();
    assert!(
        docs.contains(&table),
        "regenerate the row table in src/lib.rs docs:\n{table}"
    );
}

#[test]
fn upscaler_architectures_are_told_apart() {
    use danlu_identify::fingerprint::UpscalerArch as A;
    let cases = [
        (upscaler(UpscalerArch::EsrganOld), A::EsrganOld),
        (
            prefixed("params_ema.", upscaler(UpscalerArch::Rrdb)),
            A::Esrgan,
        ),
        (upscaler(UpscalerArch::Compact), A::Compact),
        (upscaler(UpscalerArch::SwinIr), A::SwinIr),
        (hat_upscaler(), A::Hat),
    ];
    for (tensors, arch) in cases {
        assert_eq!(
            Fingerprint::from_index(&index_of(&tensors)).upscaler,
            Some(arch)
        );
    }
}

#[test]
fn gguf_architecture_metadata_is_checked_against_the_keys() {
    // city96 GGUF conversions write `general.architecture` (`flux`, `sdxl`, `t5encoder`, ...).
    let flux = flux_transformer("", &FluxConfig::DEV, Dtype::Quantized, Dtype::F32);
    let agree = identify(
        &index_with(&flux, &[("general.architecture", "flux")]),
        &Hints::default(),
    );
    assert_eq!(
        (agree.base, agree.warnings.len()),
        (Base::Flux, 0),
        "{:?}",
        agree.warnings
    );
    let disagree = identify(
        &index_with(&flux, &[("general.architecture", "sdxl")]),
        &Hints::default(),
    );
    assert_eq!(disagree.base, Base::Flux, "keys win");
    assert!(
        disagree
            .warnings
            .iter()
            .any(|w| w.contains("general.architecture")),
        "{:?}",
        disagree.warnings
    );
    let t5 = identify(
        &index_with(
            &t5xxl_encoder("", Dtype::Quantized),
            &[("general.architecture", "t5encoder")],
        ),
        &Hints::default(),
    );
    assert_eq!((t5.kind, t5.base), (Kind::TextEncoder, Base::Unknown));
}
