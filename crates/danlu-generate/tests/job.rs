//! A whole job on the tiny SD1 checkpoint: shapes from its sidecar, PNG parameters that read
//! back to the request, the same pixels for the same inputs.

use danlu_diffusion::pipeline::{Img2Img, Request};
use danlu_diffusion::rng::RngSource;
use danlu_diffusion::sampling::{SamplerKind, Scheduler};
use danlu_generate::{Job, KnownHashes, LoadedModel, ModelSpec};
use danlu_types::NoProgress;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicBool;

fn request() -> Request {
    Request {
        prompt: "a (red:1.2) fox".to_owned(),
        negative_prompt: "blurry".to_owned(),
        steps: 3,
        cfg_scale: 6.5,
        sampler: SamplerKind::EulerAncestral,
        scheduler: Scheduler::Karras,
        seed: 1234,
        width: 64,
        height: 48,
        batch_size: 2,
        rng: RngSource::Nv,
        eta_noise_seed_delta: 31337,
        ..Request::default()
    }
}

#[test]
fn a_job_writes_a1111_parameters_that_read_back_and_repeats_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = danlu_fixtures::tiny::install("sd1_tiny", dir.path(), "tinymix_v1").unwrap();
    let cancel = AtomicBool::new(false);
    let model = LoadedModel::load(ModelSpec::new(&checkpoint), &NoProgress, &cancel).unwrap();
    assert_eq!(model.architecture().unet.block_out_channels, vec![32, 64]);
    let bytes = std::fs::read(&checkpoint).unwrap();
    let sha = sha256_hex(&bytes);
    assert_eq!(model.model_hash, sha[..10]);

    let job = Job {
        request: request(),
        img2img: None,
    };
    let mut steps = 0;
    let images = model
        .generate(&job, &mut |_| {
            steps += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(steps, 3);
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].image.seed, 1234);
    assert_eq!(images[1].image.seed, 1235);

    let png = dir.path().join("out.png");
    danlu_fs::write_atomic(&png, &images[1].png, danlu_fs::Overwrite::Never).unwrap();
    let read = danlu_pnginfo::read_image(&png).unwrap();
    assert_eq!(read.prompt, "a (red:1.2) fox");
    assert_eq!(read.negative_prompt, "blurry");
    assert_eq!(read.steps, Some(3));
    assert_eq!(read.seed, Some(1235));
    assert_eq!((read.width, read.height), (Some(64), Some(48)));
    assert_eq!(read.sampler.as_deref(), Some("Euler a"));
    assert_eq!(read.scheduler.as_deref(), Some("Karras"));
    assert_eq!(read.cfg_scale, Some(6.5));
    assert_eq!(read.model.as_deref(), Some("tinymix_v1"));
    assert_eq!(read.model_hash.as_deref(), Some(&sha[..10]));
    assert_eq!(read.extra.get("RNG").map(String::as_str), Some("NV"));
    assert_eq!(read.extra.get("ENSD").map(String::as_str), Some("31337"));

    // Same inputs, same pixels; known hashes skip hashing and are written as given.
    let spec = ModelSpec {
        known_hashes: KnownHashes {
            checkpoint: Some("0123456789".to_owned()),
            vae: None,
        },
        ..ModelSpec::new(&checkpoint)
    };
    let again = LoadedModel::load(spec, &NoProgress, &cancel).unwrap();
    let second = again
        .generate(&job, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(second[1].image.pixels, images[1].image.pixels);
    assert!(second[1].parameters.contains("Model hash: 0123456789"));
    assert_ne!(images[0].image.pixels, images[1].image.pixels);

    // img2img from the first image records its denoising strength.
    let init = danlu_generate::read_init_image(&images[0].png).unwrap();
    let job = Job {
        request: Request {
            batch_size: 1,
            ..request()
        },
        img2img: Some(Img2Img {
            image: init,
            denoising_strength: 0.5,
        }),
    };
    let out = model
        .generate(&job, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(out[0].params.denoising_strength, Some(0.5));
    assert!(out[0].parameters.contains("Denoising strength: 0.5"));
}

#[test]
fn cancelling_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = danlu_fixtures::tiny::install("sd1_tiny", dir.path(), "tiny").unwrap();
    let cancel = AtomicBool::new(false);
    let model = LoadedModel::load(ModelSpec::new(&checkpoint), &NoProgress, &cancel).unwrap();
    let job = Job {
        request: request(),
        img2img: None,
    };
    let result = model.generate(&job, &mut |_| ControlFlow::Break(()));
    assert!(result.is_err());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
