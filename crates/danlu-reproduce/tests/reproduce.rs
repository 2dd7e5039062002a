//! Plans for corpus and generated images against a library made in a temp dir, and an
//! end-to-end reproduction with the tiny SD1 checkpoint.

// Helpers outside `#[test]` functions fail the test on bad fixtures, as tests do; scratch
// files in temp dirs are written directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use danlu_fixtures::models::{
    Fill, FixtureTensor, LoraStyle, safetensors_embedding, sd1_lora, write_safetensors,
};
use danlu_fixtures::{corpus, tiny};
use danlu_pnginfo::{Source, parse_a1111, read_image, to_a1111_sampler};
use danlu_reproduce::{Library, MatchedBy, Status, engine_sampler, plan};
use danlu_types::{Dtype, NoProgress};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

struct TestRoot {
    _dir: tempfile::TempDir,
    root: PathBuf,
    checkpoint: PathBuf,
    lora: PathBuf,
    vae: PathBuf,
    embedding: PathBuf,
}

/// An A1111-layout root: the tiny SD1 checkpoint as `Anything-V3.0`, a LoRA, a VAE-named
/// file and an embedding, all with seeded contents so that their hashes differ.
fn test_root() -> TestRoot {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("webui");
    let sd = root.join("models/Stable-diffusion");
    let checkpoint = tiny::install("sd1_tiny", &sd, "Anything-V3.0").unwrap();
    let lora_dir = root.join("models/Lora");
    std::fs::create_dir_all(&lora_dir).unwrap();
    let lora = lora_dir.join("detail_tweaker.safetensors");
    write_safetensors(
        &lora,
        &sd1_lora(LoraStyle::Kohya, 2),
        &BTreeMap::new(),
        Fill::Seeded(7),
    )
    .unwrap();
    let vae_dir = root.join("models/VAE");
    std::fs::create_dir_all(&vae_dir).unwrap();
    let vae = vae_dir.join("vae-ft-mse-840000-ema-pruned.safetensors");
    let vae_tensors = vec![FixtureTensor {
        name: "decoder.conv_in.weight".into(),
        dtype: Dtype::F32,
        shape: vec![8, 4, 3, 3],
    }];
    write_safetensors(&vae, &vae_tensors, &BTreeMap::new(), Fill::Seeded(8)).unwrap();
    let emb_dir = root.join("embeddings");
    std::fs::create_dir_all(&emb_dir).unwrap();
    let embedding = emb_dir.join("EasyNegative.safetensors");
    write_safetensors(
        &embedding,
        &safetensors_embedding(2, 768),
        &BTreeMap::new(),
        Fill::Seeded(9),
    )
    .unwrap();
    TestRoot {
        _dir: dir,
        root,
        checkpoint,
        lora,
        vae,
        embedding,
    }
}

fn open(root: &Path) -> Library {
    Library::open(root, &NoProgress, &AtomicBool::new(false)).unwrap()
}

fn hashes(path: &Path) -> danlu_hash::Hashes {
    danlu_hash::hash_file(path, &NoProgress, &AtomicBool::new(false)).unwrap()
}

/// What each corpus image's sampler is in A1111's words, read by hand from its metadata.
const CORPUS_SAMPLERS: &[(&str, &str, Option<&str>)] = &[
    ("a1111_2023_no_negative.png", "Euler a", Some("Uniform")),
    ("a1111_cropped.png", "UniPC", None),
    ("a1111_cropped_exif.jpg", "UniPC", None),
    ("a1111_sd-webui.jpg", "DPM++ 2M", Some("Karras")),
    ("a1111_sd-webui.png", "DPM++ 2M", Some("Karras")),
    ("a1111_sd-webui.webp", "DPM++ 2M", Some("Karras")),
    ("a1111_stealth_pngcomp.png", "Euler", Some("Automatic")),
    ("civitai.jpeg", "Euler a", Some("Uniform")),
    ("comfyui.png", "Euler a", Some("Karras")),
    ("comfyui_animated.webp", "Euler a", Some("Karras")),
    ("comfyui_img2img_cropped.png", "DPM++ 2M", Some("Normal")),
    (
        "comfyui_night_evening_day_morning_cropped.png",
        "DPM++ SDE",
        Some("Normal"),
    ),
    (
        "comfyui_noisy_latents_3_subjects_cropped.png",
        "DPM++ SDE",
        Some("Normal"),
    ),
    (
        "comfyui_save-image-extended.jpeg",
        "Euler a",
        Some("Karras"),
    ),
    ("comfyui_saveimage-plus.jpg", "Euler a", Some("Karras")),
    (
        "comfyui_saveimagewithmetadata.png",
        "Euler a",
        Some("Karras"),
    ),
    ("edge_ztxt_after_idat.png", "UniPC", None),
    ("fooocus_cropped.png", "DPM++ 2M SDE", Some("Karras")),
    ("forge-classic.jpeg", "DPM++ 2M", Some("Karras")),
    ("forge.png", "Euler", Some("Karras")),
    ("invokeai_dream_cropped.png", "LMS", Some("Automatic")),
    ("invokeai_imeta_cropped.png", "Euler", Some("Uniform")),
    ("invokeai_sdmeta_cropped.png", "LMS", Some("Automatic")),
    ("invokeai_v5.png", "Euler a", Some("Uniform")),
    ("novelai_legacy_cropped.png", "Euler a", Some("Automatic")),
    ("novelai_v2_stealth.png", "Euler a", Some("Automatic")),
    ("novelai_v3_sdxl_stealth.png", "Euler", Some("Automatic")),
    ("novelai_v45_curated.webp", "Euler a", Some("Karras")),
    ("novelai_v45_full.png", "Euler a", Some("Karras")),
    ("ruinedfooocus.png", "DPM++ 2M SDE", Some("Karras")),
    ("sdnext.jpg", "Euler a", Some("Uniform")),
    ("sdnext.png", "DDIM", None),
    ("stability-matrix.png", "Euler a", Some("Karras")),
    ("swarmui.png", "Euler a", Some("Karras")),
];

#[test]
fn every_corpus_sampler_maps_to_one_the_engine_runs() {
    let mut seen = 0;
    for entry in std::fs::read_dir(corpus::path("images")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(params) = read_image(&path) else {
            continue;
        };
        let Some(sampler) = params.sampler.as_deref() else {
            continue;
        };
        let (_, label, sched) = CORPUS_SAMPLERS
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("`{name}` (sampler `{sampler}`) has no expected mapping"));
        let mapped = to_a1111_sampler(params.source, sampler, params.scheduler.as_deref())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (mapped.sampler.as_str(), mapped.scheduler.as_deref()),
            (*label, *sched),
            "{name}"
        );
        engine_sampler(&mapped).unwrap_or_else(|e| panic!("{name}: {e}"));
        seen += 1;
    }
    assert_eq!(seen, CORPUS_SAMPLERS.len());
}

#[test]
fn a1111_labels_the_mapping_gives_are_accepted_by_the_engine() {
    use danlu_diffusion::sampling::{SAMPLERS, Scheduler};
    for info in SAMPLERS {
        for sched in Scheduler::ALL {
            let m = to_a1111_sampler(Source::A1111, info.label, Some(sched.label())).unwrap();
            let (kind, _) = engine_sampler(&m).unwrap();
            assert_eq!(kind, info.kind, "{}", info.label);
            // ... and ComfyUI's names for it come back to the same sampler.
            if let Ok(c) = danlu_pnginfo::to_comfyui_sampler(info.label, Some(sched.label())) {
                let back =
                    to_a1111_sampler(Source::ComfyUi, &c.sampler_name, Some(&c.scheduler)).unwrap();
                if info.label != "UniPC" {
                    assert_eq!(back.sampler, info.label, "{c:?}");
                }
            }
        }
    }
}

#[test]
fn corpus_plans_find_files_by_name_and_list_what_is_missing() {
    let t = test_root();
    let lib = open(&t.root);

    // ComfyUI graph: `Anything-V3.0.ckpt` and an external VAE, both present by name.
    let img = corpus::path("images/comfyui_night_evening_day_morning_cropped.png");
    let params = read_image(&img).unwrap();
    let p = plan("x", &params, Some(&lib));
    assert_eq!(p.checkpoint.status, Status::Found);
    assert_eq!(p.checkpoint.matched_by, Some(MatchedBy::Name));
    assert_eq!(
        Path::new(p.checkpoint.path.as_deref().unwrap()),
        std::path::absolute(&t.checkpoint).unwrap()
    );
    let vae = p.vae.as_ref().unwrap();
    assert_eq!(
        (vae.status, vae.matched_by),
        (Status::Found, Some(MatchedBy::Name))
    );
    assert_eq!(
        Path::new(vae.path.as_deref().unwrap()),
        std::path::absolute(&t.vae).unwrap()
    );
    assert_eq!(p.sampler.engine_sampler.as_deref(), Some("DPM++ SDE"));
    assert_eq!(p.sampler.engine_scheduler.as_deref(), Some("Uniform"));
    assert_eq!(p.settings.rng, "CPU");
    assert!(p.is_ready(), "{:?}", p.blockers);

    // A1111 SDXL image: its checkpoint is not in the library; the hash to look up is given.
    let params = read_image(corpus::path("images/a1111_sd-webui.png")).unwrap();
    let p = plan("y", &params, Some(&lib));
    assert_eq!(p.checkpoint.status, Status::Missing);
    let lookup = p.checkpoint.lookup.as_ref().unwrap();
    assert_eq!(lookup.hash.as_deref(), Some("45A21EA00A"));
    assert_eq!(
        lookup.civitai_url.as_deref(),
        Some("https://civitai.com/api/v1/model-versions/by-hash/45A21EA00A")
    );
    assert!(lookup.download.starts_with("danlu download civitai:"));
    assert!(!p.is_ready());
    assert!(
        p.blockers
            .iter()
            .any(|b| b.contains("waiIllustriousSDXL_v160")),
        "{:?}",
        p.blockers
    );
    // `Version` and the rest are metadata, not parameters.
    assert!(p.not_reproduced.is_empty(), "{:?}", p.not_reproduced);
    // No `RNG` in an A1111 image: the GPU default, NV numbers.
    assert_eq!(p.settings.rng, "NV");

    // Fooocus: its own features are named.
    let params = read_image(corpus::path("images/fooocus_cropped.png")).unwrap();
    let p = plan("z", &params, Some(&lib));
    let features: Vec<&str> = p
        .not_reproduced
        .iter()
        .map(|n| n.feature.as_str())
        .collect();
    for f in ["Fooocus sharpness", "Fooocus ADM guidance", "styles"] {
        assert!(features.contains(&f), "{f} not in {features:?}");
    }

    // NovelAI SDXL: SMEA and CFG rescale are named.
    let params = read_image(corpus::path("images/novelai_v3_sdxl_stealth.png")).unwrap();
    let p = plan("n", &params, Some(&lib));
    let keys: Vec<&str> = p.not_reproduced.iter().map(|n| n.key.as_str()).collect();
    for k in ["sm", "sm_dyn", "cfg_rescale"] {
        assert!(keys.contains(&k), "{k} not in {keys:?}");
    }
    // `dynamic_thresholding: false` makes its settings moot.
    assert!(
        !keys.iter().any(|k| k.starts_with("dynamic_thresholding")),
        "{keys:?}"
    );

    // Without a library everything needed is missing.
    let params = read_image(corpus::path("images/a1111_cropped.png")).unwrap();
    let p = plan("w", &params, None);
    assert_eq!(p.checkpoint.status, Status::Missing);
    assert_eq!(
        p.checkpoint.lookup.as_ref().unwrap().hash.as_deref(),
        Some("C0D1994C73")
    );
}

#[test]
fn generated_plans_find_files_by_hash() {
    let t = test_root();
    let lib = open(&t.root);
    let ckpt = hashes(&t.checkpoint);
    let lora = hashes(&t.lora);
    let vae = hashes(&t.vae);
    let emb = hashes(&t.embedding);
    let text = format!(
        "a cat <lora:renamed_lora:0.7>, <hypernet:anime_3:0.5>\n\
         Negative prompt: EasyNegative, blurry\n\
         Steps: 12, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 77, Size: 64x64, \
         Model hash: {}, Model: some_other_name, VAE hash: {}, VAE: renamed.vae.pt, \
         Clip skip: 2, ENSD: 31337, Hires upscale: 2, Hires upscaler: Latent, \
         Denoising strength: 0.5, ADetailer model: face_yolov8n.pt, \
         Lora hashes: \"renamed_lora: {}\", TI hashes: \"EasyNeg: {}\", Version: v1.10.1",
        ckpt.autov2,
        vae.autov2,
        lora.autov3,
        &emb.sha256[..12],
    );
    let params = parse_a1111(&text);
    let p = plan("gen.png", &params, Some(&lib));
    assert_eq!(
        (p.checkpoint.status, p.checkpoint.matched_by),
        (Status::Found, Some(MatchedBy::Hash))
    );
    assert_eq!(p.checkpoint.autov2.as_deref(), Some(ckpt.autov2.as_str()));
    let v = p.vae.as_ref().unwrap();
    assert_eq!(
        (v.status, v.matched_by),
        (Status::Found, Some(MatchedBy::Hash))
    );
    assert_eq!(p.loras.len(), 1);
    assert_eq!(
        (p.loras[0].status, p.loras[0].matched_by, p.loras[0].weight),
        (Status::Found, Some(MatchedBy::Hash), Some(0.7))
    );
    // Found by hash under another file name: applied under the image's name.
    assert!(p.loras[0].applied);
    let folders = p.adapter_folders();
    assert_eq!(folders.aliases.lora.len(), 1);
    assert_eq!(folders.aliases.lora[0].0, "renamed_lora");
    assert_eq!(
        folders.aliases.lora[0].1.to_string_lossy(),
        p.loras[0].path.clone().unwrap()
    );
    assert_eq!(p.embeddings.len(), 1, "{:?}", p.embeddings);
    assert_eq!(
        (p.embeddings[0].status, p.embeddings[0].matched_by),
        (Status::Found, Some(MatchedBy::Hash))
    );
    // The hypernetwork is not in the library: it blocks, with no hash to look up.
    assert_eq!(p.hypernetworks.len(), 1);
    assert_eq!(p.hypernetworks[0].status, Status::Missing);
    assert_eq!(
        p.blockers,
        vec!["hypernetwork `anime_3` is not in the library".to_owned()]
    );
    // Hires fix and ADetailer are named as not reproduced; the found adapters are not.
    let named: Vec<(&str, &str)> = p
        .not_reproduced
        .iter()
        .map(|n| (n.feature.as_str(), n.key.as_str()))
        .collect();
    assert!(!named.contains(&("LoRA", "renamed_lora")), "{named:?}");
    assert!(!named.contains(&("embedding", "EasyNeg")), "{named:?}");
    for want in [
        ("hires fix", "Hires upscale"),
        ("hires fix", "Hires upscaler"),
        ("hires fix", "Denoising strength"),
        ("ADetailer", "ADetailer model"),
    ] {
        assert!(named.contains(&want), "{want:?} not in {named:?}");
    }
    assert_eq!(p.settings.clip_skip, 2);
    assert_eq!(p.settings.eta_noise_seed_delta, 31337);
    assert_eq!(p.sampler.engine_sampler.as_deref(), Some("DPM++ 2M"));
    assert_eq!(p.sampler.engine_scheduler.as_deref(), Some("Karras"));

    // The old 8-hex A1111 hash finds the checkpoint too; a wrong hash falls back to the
    // name, with a note.
    let old = parse_a1111(&format!(
        "x\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64, Model hash: {}, Model: nope",
        ckpt.autov1
    ));
    let p = plan("old.png", &old, Some(&lib));
    assert_eq!(p.checkpoint.matched_by, Some(MatchedBy::Hash));
    let wrong = parse_a1111(
        "x\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64, Model hash: 0123456789, \
         Model: Anything-V3.0",
    );
    let p = plan("wrong.png", &wrong, Some(&lib));
    assert_eq!(p.checkpoint.matched_by, Some(MatchedBy::Name));
    assert!(
        p.checkpoint.note.as_deref().unwrap().contains("0123456789"),
        "{:?}",
        p.checkpoint.note
    );
    // An embedding named only in the prompt is found by its file name.
    let prompt_only = parse_a1111(
        "x\nNegative prompt: (EasyNegative:1.2)\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64",
    );
    let p = plan("emb.png", &prompt_only, Some(&lib));
    assert_eq!(p.embeddings.len(), 1);
    assert_eq!(p.embeddings[0].matched_by, Some(MatchedBy::Prompt));
}

#[test]
fn a_generated_image_is_reproduced_pixel_for_pixel() {
    use danlu_diffusion::pipeline::Request;
    use danlu_diffusion::rng::RngSource;
    use danlu_diffusion::sampling::{SamplerKind, Scheduler};
    use danlu_generate::{Job, LoadedModel, ModelSpec};
    use std::ops::ControlFlow;

    let t = test_root();
    let cancel = AtomicBool::new(false);
    // A LoRA made for the tiny checkpoint, in the library's LoRA folder.
    let lora_dir = t.root.join("models/Lora");
    std::fs::copy(
        tiny::model_dir().join("../adapters/sd1_tiny_kohya.safetensors"),
        lora_dir.join("tiny_style.safetensors"),
    )
    .unwrap();
    // A tiny embedding and hypernetwork made for it.
    let adapters = tiny::model_dir().join("../adapters");
    std::fs::copy(
        adapters.join("embeddings/tinyneg.pt"),
        t.root.join("embeddings/tinyneg.pt"),
    )
    .unwrap();
    let hn_dir = t.root.join("models/hypernetworks");
    std::fs::create_dir_all(&hn_dir).unwrap();
    std::fs::copy(adapters.join("hn_relu_ln.pt"), hn_dir.join("hn_relu_ln.pt")).unwrap();
    // Made by danlu-generate directly, as `danlu generate` would.
    let mut model = LoadedModel::load(ModelSpec::new(&t.checkpoint), &NoProgress, &cancel).unwrap();
    for (sampler, scheduler, rng, ensd, prompt) in [
        (
            SamplerKind::DpmPp2M,
            Scheduler::Automatic,
            RngSource::Cpu,
            0,
            "a (red:1.2) cube",
        ),
        (
            SamplerKind::EulerAncestral,
            Scheduler::Karras,
            RngSource::Nv,
            31337,
            "a cube",
        ),
        (
            SamplerKind::Euler,
            Scheduler::Exponential,
            RngSource::Cpu,
            1,
            "a cube <lora:tiny_style:0.8>",
        ),
        (
            SamplerKind::DpmPp2M,
            Scheduler::Karras,
            RngSource::Cpu,
            2,
            "a cube <hypernet:hn_relu_ln:0.6>",
        ),
    ] {
        let job = Job {
            request: Request {
                prompt: prompt.to_owned(),
                negative_prompt: "blurry, tinyneg".to_owned(),
                steps: 4,
                cfg_scale: 5.5,
                sampler,
                scheduler,
                seed: 123_456_789,
                width: 64,
                height: 64,
                clip_skip: 2,
                rng,
                eta_noise_seed_delta: ensd,
                ..Request::default()
            },
            img2img: None,
        };
        let warnings = model.set_adapter_folders(danlu_diffusion::adapters::AdapterFolders {
            lora: vec![lora_dir.clone()],
            embeddings: vec![t.root.join("embeddings")],
            hypernetworks: vec![hn_dir.clone()],
            ..Default::default()
        });
        // The 768-wide fixture embedding does not fit the tiny text encoder.
        assert!(warnings.len() <= 1, "{warnings:?}");
        model.apply_adapters(&job, &NoProgress, &cancel).unwrap();
        let original = model
            .generate(&job, &mut |_| ControlFlow::Continue(()))
            .unwrap()
            .remove(0);
        let image = t.root.join(format!("source-{ensd}.png"));
        std::fs::write(&image, &original.png).unwrap();

        let params = read_image(&image).unwrap();
        let lib = open(&t.root);
        let p = plan(&image.display().to_string(), &params, Some(&lib));
        assert!(p.is_ready(), "{:?}", p.blockers);
        assert_eq!(p.checkpoint.matched_by, Some(MatchedBy::Hash));
        assert!(p.not_reproduced.is_empty(), "{:?}", p.not_reproduced);
        let done = danlu_reproduce::generate(&p, &params, &NoProgress, &cancel, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        for row in &done.comparison {
            assert!(row.equal, "{row:?}");
        }
        let fields: Vec<&str> = done.comparison.iter().map(|r| r.field.as_str()).collect();
        for f in [
            "prompt",
            "seed",
            "sampler",
            "scheduler",
            "model_hash",
            "RNG",
        ] {
            assert!(fields.contains(&f), "{f} not compared: {fields:?}");
        }
        if ensd == 31337 {
            assert!(fields.contains(&"ENSD"), "{fields:?}");
        }
        assert!(
            original.parameters.contains("TI hashes: \"tinyneg: "),
            "{}",
            original.parameters
        );
        let tinyneg: Vec<_> = p
            .embeddings
            .iter()
            .filter(|e| e.name.as_deref() == Some("tinyneg"))
            .collect();
        assert_eq!(tinyneg.len(), 1, "{:?}", p.embeddings);
        assert_eq!(tinyneg[0].matched_by, Some(MatchedBy::Hash));
        assert!(tinyneg[0].applied);
        assert!(fields.contains(&"embeddings"), "{fields:?}");
        if prompt.contains("<hypernet:") {
            assert_eq!(p.hypernetworks.len(), 1);
            assert_eq!(p.hypernetworks[0].matched_by, Some(MatchedBy::Hash));
            assert!(p.hypernetworks[0].applied);
            assert!(fields.contains(&"Hypernet"), "{fields:?}");
        }
        if prompt.contains("<lora:") {
            assert_eq!(p.loras.len(), 1);
            assert_eq!(p.loras[0].matched_by, Some(MatchedBy::Hash));
            assert!(p.loras[0].applied);
            assert!(fields.contains(&"loras"), "{fields:?}");
            assert!(
                original.parameters.contains("Lora hashes"),
                "{}",
                original.parameters
            );
        }
        assert_eq!(done.generated.image.pixels, original.image.pixels);
        assert_eq!(done.generated.parameters, original.parameters);
    }
}
