//! Real files: generated safetensors read back through `danlu-format`, and the corpus's small
//! model files (expected values from the corpus `MANIFEST.md`).

use crate::index_of;
use danlu_fixtures::corpus;
use danlu_fixtures::models::*;
use danlu_identify::{Hints, identify};
use danlu_types::{Base, Kind, Subformat, Variant};
use std::collections::BTreeMap;

#[test]
fn sparse_generated_checkpoints_read_back_identify_like_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "sdxl.safetensors",
            sdxl_checkpoint(&CheckpointOpts::default()),
            Kind::Checkpoint,
            Base::Sdxl,
            None,
        ),
        (
            "flux1-schnell.safetensors",
            flux_transformer(
                "",
                &FluxConfig::SCHNELL,
                danlu_types::Dtype::Bf16,
                danlu_types::Dtype::Bf16,
            ),
            Kind::DiffusionModel,
            Base::Flux,
            Some(Variant::Schnell),
        ),
        (
            "lora.safetensors",
            sd1_lora(LoraStyle::Kohya, 16),
            Kind::Lora,
            Base::Sd1,
            None,
        ),
    ];
    for (name, tensors, kind, base, variant) in cases {
        let path = dir.path().join(name);
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_owned(), "pt".to_owned());
        write_safetensors(&path, &tensors, &metadata, Fill::Sparse).unwrap();
        let index = danlu_format::read_index(&path).unwrap();
        let from_file = identify(&index, &Hints::from_path(&path));
        assert_eq!(
            (from_file.kind, from_file.base, from_file.variant),
            (kind, base, variant),
            "{name}"
        );
        let in_memory = identify(&index_of(&tensors), &Hints::from_path(&path));
        assert_eq!(from_file.parameters, in_memory.parameters, "{name}");
        assert_eq!(from_file.dtype, in_memory.dtype, "{name}");
    }
}

#[test]
fn corpus_embeddings_are_sd1_embeddings() {
    let cases = [
        ("models/EasyNegative.safetensors", Subformat::Safetensors, 8),
        (
            "models/invokeai_test_embedding.safetensors",
            Subformat::Safetensors,
            5,
        ),
        ("models/bad-hands-5.pt", Subformat::A1111Pt, 0),
        ("models/bad_prompt_version2.pt", Subformat::A1111Pt, 0),
        (
            "models/birb-style_learned_embeds.bin",
            Subformat::Safetensors,
            1,
        ),
        ("models/lora_kiriko2.ti.pt", Subformat::Safetensors, 1),
    ];
    for (file, subformat, vectors) in cases {
        let path = corpus::path(file);
        let index = danlu_format::read_index(&path).unwrap();
        let id = identify(&index, &Hints::from_path(&path));
        assert_eq!(
            (id.kind, id.base, id.subformat),
            (Kind::Embedding, Base::Sd1, Some(subformat)),
            "{file}: {:#?}",
            id.evidence
        );
        if vectors > 0 {
            assert_eq!(id.vectors, Some(vectors), "{file}");
        } else {
            assert!(id.vectors.is_some_and(|v| v >= 1), "{file}");
        }
    }
}

#[test]
fn corpus_compact_upscaler_is_an_upscaler() {
    let path = corpus::path("models/realesr-animevideov3.pth");
    let id = identify(&danlu_format::read_index(&path).unwrap(), &Hints::default());
    assert_eq!(id.kind, Kind::Upscaler, "{:#?}", id.evidence);
}

#[test]
fn corpus_cloneofsimo_lora_is_an_sd1_lora() {
    // cloneofsimo/lora LoRA-PTI: `unet:N:up/down`, `text_encoder:N:up/down` (rank 1) plus the
    // learned tokens `<s1>`, `<s2>`.
    let path = corpus::path("models/lora_disney.safetensors");
    let id = identify(&danlu_format::read_index(&path).unwrap(), &Hints::default());
    assert_eq!(
        (id.kind, id.base, id.subformat),
        (Kind::Lora, Base::Sd1, Some(Subformat::Lora)),
        "{:#?}",
        id.evidence
    );
}
