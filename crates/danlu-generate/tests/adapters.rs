//! A job whose prompt names a LoRA and a hypernetwork and whose negative prompt uses an
//! embedding, on the tiny SD1 checkpoint: the infotext records them as A1111 does, and tags that
//! name nothing installed come back as warnings.

use danlu_diffusion::adapters::AdapterFolders;
use danlu_diffusion::pipeline::Request;
use danlu_diffusion::sampling::{SamplerKind, Scheduler};
use danlu_generate::{Job, LoadedModel, ModelSpec};
use danlu_types::NoProgress;
use sha2::{Digest, Sha256};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

const ADAPTERS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../danlu-diffusion/tests/reference/adapters"
);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A1111 `network.shorthash` for a safetensors LoRA: SHA-256 of the bytes after the header.
fn lora_hash(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    Some(sha256_hex(bytes.get(8 + n..)?)[..12].to_owned())
}

#[test]
fn adapters_from_tags_are_applied_and_written_as_a1111_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = danlu_fixtures::tiny::install("sd1_tiny", dir.path(), "tinymix").unwrap();
    let cancel = AtomicBool::new(false);
    let mut model = LoadedModel::load(ModelSpec::new(&checkpoint), &NoProgress, &cancel).unwrap();
    let warnings = model.set_adapter_folders(AdapterFolders {
        lora: vec![PathBuf::from(ADAPTERS)],
        embeddings: vec![PathBuf::from(format!("{ADAPTERS}/embeddings"))],
        hypernetworks: vec![PathBuf::from(ADAPTERS)],
        ..Default::default()
    });
    assert!(warnings.is_empty(), "{warnings:?}");
    let job = Job {
        request: Request {
            prompt: "a fox <lora:sd1_tiny_kohya:0.7:1.3> <hypernet:hn_relu_ln:0.8> <lora:nope:1>"
                .to_owned(),
            negative_prompt: "tinyneg, blurry".to_owned(),
            steps: 2,
            sampler: SamplerKind::Euler,
            scheduler: Scheduler::Automatic,
            seed: 5,
            width: 32,
            height: 32,
            ..Request::default()
        },
        img2img: None,
    };
    let applied = model.apply_adapters(&job, &NoProgress, &cancel).unwrap();
    assert_eq!(applied.warnings, ["LoRA `nope` is not installed"]);
    let images = model
        .generate(&job, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let params = &images[0].params;
    let extra = &params.extra;
    let lora = lora_hash(&std::fs::read(format!("{ADAPTERS}/sd1_tiny_kohya.safetensors")).unwrap())
        .unwrap();
    assert_eq!(params.loras.len(), 1);
    assert_eq!(params.loras[0].hash.as_deref(), Some(lora.as_str()));
    let ti = sha256_hex(&std::fs::read(format!("{ADAPTERS}/embeddings/tinyneg.pt")).unwrap());
    assert!(
        images[0]
            .parameters
            .contains(&format!("TI hashes: \"tinyneg: {}\"", &ti[..12])),
        "{}",
        images[0].parameters
    );
    let hn = sha256_hex(&std::fs::read(format!("{ADAPTERS}/hn_relu_ln.pt")).unwrap());
    assert_eq!(
        extra.get("Hypernet").map(String::as_str),
        Some("hn_relu_ln")
    );
    assert_eq!(
        extra.get("Hypernet hash").map(String::as_str),
        Some(&hn[..10])
    );
    assert_eq!(
        extra.get("Hypernet strength").map(String::as_str),
        Some("0.8")
    );
    // The infotext quotes the lists, as A1111 does for values with `:` or `,`.
    assert!(
        images[0]
            .parameters
            .contains(&format!("Lora hashes: \"sd1_tiny_kohya: {lora}\"")),
        "{}",
        images[0].parameters
    );
    // The prompt keeps its tags in the infotext (A1111 records the prompt as typed).
    assert!(
        images[0]
            .params
            .prompt
            .contains("<lora:sd1_tiny_kohya:0.7:1.3>")
    );

    // Without tags (and without applying again) nothing is recorded for the new prompt.
    let plain = Job {
        request: Request {
            prompt: "a fox".to_owned(),
            negative_prompt: "blurry".to_owned(),
            ..job.request.clone()
        },
        img2img: None,
    };
    let applied = model.apply_adapters(&plain, &NoProgress, &cancel).unwrap();
    assert!(applied.loras.is_empty() && applied.embeddings.is_empty());
    let images = model
        .generate(&plain, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    for key in ["Lora hashes", "TI hashes", "Hypernet"] {
        assert!(!images[0].parameters.contains(key), "{key}");
    }
}
