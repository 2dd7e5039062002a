//! Real key listings of the shared corpus (`models/keys/`), turned into tensor indexes and
//! identified. Expected values come from the corpus `MANIFEST.md` descriptions.

use crate::index_from_shapes;
use danlu_fixtures::corpus;
use danlu_format::TensorIndex;
use danlu_identify::fingerprint::TextEncoderFamily;
use danlu_identify::{Fingerprint, Hints, Identity, identify};
use danlu_types::{Base, Components, Dtype, Kind, Subformat, Variant};
use std::collections::BTreeMap;

type Shapes = BTreeMap<String, (Dtype, Vec<u64>)>;

fn dtype_of(name: &str) -> Dtype {
    match name.trim_start_matches("torch.") {
        "float16" => Dtype::F16,
        "bfloat16" => Dtype::Bf16,
        "int64" => Dtype::I64,
        "int32" => Dtype::I32,
        _ => Dtype::F32,
    }
}

fn shape_of(v: &serde_json::Value) -> Option<Vec<u64>> {
    v.as_array()?
        .iter()
        .map(serde_json::Value::as_u64)
        .collect()
}

/// Flattens InvokeAI listings: `{key: {"shape", "dtype"}}`, `{key: [shape]}` or nested dicts
/// (`{"params_ema": {...}}`), skipping non-tensor entries.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Shapes) {
    let Some(map) = v.as_object() else { return };
    for (k, v) in map {
        let name = format!("{prefix}{k}");
        if let Some(shape) = shape_of(v) {
            out.insert(name, (Dtype::F32, shape));
        } else if let Some(shape) = v.get("shape").and_then(shape_of) {
            let dtype = v
                .get("dtype")
                .and_then(|d| d.as_str())
                .map_or(Dtype::F32, dtype_of);
            out.insert(name, (dtype, shape));
        } else if v.is_object() && k != "metadata_key_for_stripped_models" {
            flatten(&format!("{name}."), v, out);
        }
    }
}

fn invokeai(file: &str) -> TensorIndex {
    let text = std::fs::read_to_string(corpus::path(&format!("models/keys/{file}"))).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut shapes = Shapes::new();
    flatten("", &doc, &mut shapes);
    assert!(!shapes.is_empty(), "{file}: no tensors");
    index_from_shapes(&shapes)
}

/// sd-mecha listings; `optional` keys only when `with_optional`.
fn sdmecha(file: &str, with_optional: bool) -> TensorIndex {
    let text = std::fs::read_to_string(corpus::path(&format!("models/keys/{file}"))).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut shapes = Shapes::new();
    for (_, keys) in doc["components"].as_mapping().unwrap() {
        for (k, v) in keys.as_mapping().unwrap() {
            if !with_optional && v["optional"].as_bool() == Some(true) {
                continue;
            }
            let shape = v["shape"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            let dtype = dtype_of(v["dtype"].as_str().unwrap_or("float32"));
            shapes.insert(k.as_str().unwrap().to_owned(), (dtype, shape));
        }
    }
    index_from_shapes(&shapes)
}

fn id(index: &TensorIndex) -> Identity {
    identify(index, &Hints::default())
}

fn assert_id(
    file: &str,
    index: &TensorIndex,
    kind: Kind,
    base: Base,
    subformat: Option<Subformat>,
) -> Identity {
    let got = id(index);
    assert_eq!(
        (got.kind, got.base),
        (kind, base),
        "{file}: evidence {:#?}",
        got.evidence
    );
    if subformat.is_some() {
        assert_eq!(got.subformat, subformat, "{file}");
    }
    got
}

#[test]
fn sdmecha_sd1_listing_is_an_sd1_checkpoint_with_every_component() {
    let got = assert_id(
        "sd1",
        &sdmecha("sdmecha_sd1-ldm.yaml", true),
        Kind::Checkpoint,
        Base::Sd1,
        None,
    );
    assert_eq!(
        got.components,
        Some(Components {
            unet: true,
            vae: true,
            text_encoder: true,
            ema: true
        })
    );
    assert_eq!(got.variant, None);
    let got = id(&sdmecha("sdmecha_sd1-ldm.yaml", false));
    assert_eq!(got.components.map(|c| c.ema), Some(false));
}

#[test]
fn sdmecha_sdxl_listing_is_an_sdxl_checkpoint_and_v_pred_key_marks_v_prediction() {
    let got = assert_id(
        "sdxl",
        &sdmecha("sdmecha_sdxl-sgm.yaml", false),
        Kind::Checkpoint,
        Base::Sdxl,
        None,
    );
    assert_eq!(got.variant, None);
    // The listing's optional `v_pred` key is what ComfyUI reads as v-prediction.
    assert_eq!(
        id(&sdmecha("sdmecha_sdxl-sgm.yaml", true)).variant,
        Some(Variant::VPrediction)
    );
}

#[test]
fn sdmecha_flux_and_sd3_listings_are_checkpoints() {
    let got = assert_id(
        "flux",
        &sdmecha("sdmecha_flux-flux.yaml", false),
        Kind::Checkpoint,
        Base::Flux,
        None,
    );
    assert_eq!(
        got.variant,
        Some(Variant::Dev),
        "FLUX.1-dev has guidance_in"
    );
    assert_eq!(got.dtype, Some(Dtype::Bf16));
    let got = assert_id(
        "sd3",
        &sdmecha("sdmecha_sd3-comfyui.yaml", false),
        Kind::Checkpoint,
        Base::Sd3,
        None,
    );
    assert_eq!(
        got.components,
        Some(Components {
            unet: true,
            vae: true,
            text_encoder: true,
            ema: false
        })
    );
}

#[test]
fn invokeai_loras_are_identified_with_base_and_subformat() {
    let cases = [
        (
            "invokeai_sd1_lora_kohya_fp16.keys.json",
            Base::Sd1,
            Subformat::Lora,
        ),
        (
            "invokeai_sdxl_lora_kohya_bf16.keys.json",
            Base::Sdxl,
            Subformat::Lora,
        ),
        (
            "invokeai_flux_lora_kohya.keys.json",
            Base::Flux,
            Subformat::Lora,
        ),
        (
            "invokeai_flux_lora_kohya_with_te1.keys.json",
            Base::Flux,
            Subformat::Lora,
        ),
        (
            "invokeai_flux_lora_diffusers.keys.json",
            Base::Flux,
            Subformat::Diffusers,
        ),
        (
            "invokeai_flux_lora_peft.keys.json",
            Base::Flux,
            Subformat::Diffusers,
        ),
        (
            "invokeai_flux_control_lora_depth.keys.json",
            Base::Flux,
            Subformat::Diffusers,
        ),
        (
            "invokeai_flux_dora_onetrainer.keys.json",
            Base::Flux,
            Subformat::Dora,
        ),
    ];
    for (file, base, sub) in cases {
        assert_id(file, &invokeai(file), Kind::Lora, base, Some(sub));
    }
    assert_eq!(
        id(&invokeai("invokeai_sd1_lora_kohya_fp16.keys.json")).dtype,
        Some(Dtype::F16)
    );
    assert_eq!(
        id(&invokeai("invokeai_sdxl_lora_kohya_bf16.keys.json")).dtype,
        Some(Dtype::Bf16)
    );
}

#[test]
fn invokeai_diffusers_components_are_identified() {
    let f = "invokeai_sdxl_diffusers_unet_JuggernautXLv9.keys.json";
    let got = assert_id(f, &invokeai(f), Kind::DiffusionModel, Base::Sdxl, None);
    assert_eq!(got.dtype, Some(Dtype::F16));
    // The SDXL VAE has the SD1 VAE's shapes: a guess without hints, SDXL with a name hint.
    let f = "invokeai_sdxl_diffusers_vae_JuggernautXLv9.keys.json";
    let got = id(&invokeai(f));
    assert_eq!(got.kind, Kind::Vae);
    assert!(
        got.warnings.iter().any(|w| w.contains("guess")),
        "{:?}",
        got.warnings
    );
    let hinted = identify(
        &invokeai(f),
        &Hints {
            file_name: Some("sdxl_vae.safetensors".into()),
            yaml: None,
        },
    );
    assert_eq!(hinted.base, Base::Sdxl);
    for (f, family) in [
        (
            "invokeai_sdxl_diffusers_text_encoder_JuggernautXLv9.keys.json",
            TextEncoderFamily::ClipL,
        ),
        (
            "invokeai_sdxl_diffusers_text_encoder_2_JuggernautXLv9.keys.json",
            TextEncoderFamily::ClipG,
        ),
        (
            "invokeai_clip_l_text_encoder_bf16.keys.json",
            TextEncoderFamily::ClipL,
        ),
    ] {
        let index = invokeai(f);
        assert_eq!(id(&index).kind, Kind::TextEncoder, "{f}");
        let fp = Fingerprint::from_index(&index);
        assert_eq!(
            fp.main_text_encoder()
                .map(|t| (t.family, t.layers))
                .unwrap()
                .0,
            family,
            "{f}"
        );
    }
}

#[test]
fn invokeai_adapters_embeddings_and_encoders_are_identified() {
    let cases = [
        (
            "invokeai_sd1_controlnet_diffusers_canny.keys.json",
            Kind::Controlnet,
            Base::Sd1,
        ),
        (
            "invokeai_ip_adapter_sd1.keys.json",
            Kind::IpAdapter,
            Base::Sd1,
        ),
        (
            "invokeai_ip_adapter_plus_face_sd1.keys.json",
            Kind::IpAdapter,
            Base::Sd1,
        ),
        (
            "invokeai_clip_vision_vitH_ipadapter_encoder.keys.json",
            Kind::ClipVision,
            Base::Unknown,
        ),
        // A full CLIP (text and vision towers) is what ComfyUI's CLIP-vision loader accepts.
        (
            "invokeai_clip-vit-large-patch14.keys.json",
            Kind::ClipVision,
            Base::Unknown,
        ),
        (
            "invokeai_sd1_embedding_EasyNegative.keys.json",
            Kind::Embedding,
            Base::Sd1,
        ),
        (
            "invokeai_upscaler_RealESRGAN_x2plus.keys.json",
            Kind::Upscaler,
            Base::Unknown,
        ),
        (
            "invokeai_upscaler_SwinIR-L_x4.keys.json",
            Kind::Upscaler,
            Base::Unknown,
        ),
    ];
    for (file, kind, base) in cases {
        assert_id(file, &invokeai(file), kind, base, None);
    }
    let emb = id(&invokeai("invokeai_sd1_embedding_EasyNegative.keys.json"));
    assert_eq!(
        (emb.subformat, emb.vectors),
        (Some(Subformat::Safetensors), Some(8))
    );
}
