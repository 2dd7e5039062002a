//! Writing A1111 infotext into PNGs and reading it back.

// Helpers outside `#[test]` functions fail the test on bad fixtures, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use danlu_fixtures::corpus;
use danlu_pnginfo::{
    GenerationParams, Lora, Source, parse_a1111, parse_image, read_image, to_a1111_infotext,
    write_png_file, write_png_parameters,
};

/// The fields A1111 text can carry, with each prompt line trimmed (A1111's parser strips
/// every line, so trailing spaces on a line cannot survive any A1111 round trip).
fn a1111_view(p: &GenerationParams) -> GenerationParams {
    let trim_lines = |s: &str| {
        s.trim()
            .split('\n')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("\n")
    };
    GenerationParams {
        source: Source::A1111,
        prompt: trim_lines(&p.prompt),
        negative_prompt: trim_lines(&p.negative_prompt),
        steps: p.steps,
        seed: p.seed,
        width: p.width,
        height: p.height,
        clip_skip: p.clip_skip.filter(|&c| c > 1),
        sampler: p.sampler.clone(),
        scheduler: p.scheduler.clone(),
        cfg_scale: p.cfg_scale,
        denoising_strength: p.denoising_strength,
        model: p.model.clone(),
        model_hash: p.model_hash.clone(),
        vae: p.vae.clone(),
        vae_hash: p.vae_hash.clone(),
        loras: p.loras.clone(),
        embeddings: p.embeddings.clone(),
        // Only keys of the A1111 text itself are written back, not the image's other entries.
        extra: if p.source == Source::A1111 {
            p.extra
                .iter()
                .filter(|(k, _)| p.raw.contains(&format!("{k}: ")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            Default::default()
        },
        raw: String::new(),
        findings: Vec::new(),
    }
}

#[test]
fn every_corpus_image_round_trips_through_a1111_text() {
    let dir = corpus::path("images");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(p) = read_image(&path) else { continue };
        if p.source == Source::None {
            continue;
        }
        let text = to_a1111_infotext(&p);
        let back = parse_a1111(&text);
        assert_eq!(
            a1111_view(&back),
            a1111_view(&p),
            "{}\n{text}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 30, "only {n} images round-tripped");
}

#[test]
fn png_file_write_then_read_gives_the_same_fields() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus::path("images/a1111_cropped.png");
    let dest = dir.path().join("out.png");
    let mut p = read_image(&source).unwrap();
    p.prompt = "a duck, テスト <lora:duckify:0.6>".to_owned();
    p.loras = vec![Lora {
        name: "duckify".into(),
        weight: 0.6,
        hash: Some("0123456789ab".into()),
    }];
    p.clip_skip = Some(2);
    p.denoising_strength = Some(0.45);
    p.vae = Some("sdxl_vae.safetensors".into());
    p.vae_hash = Some("235745af8d".into());
    p.extra
        .insert("Hires upscaler".into(), "4x-UltraSharp, v2".into());
    let text = to_a1111_infotext(&p);
    p.raw = text.clone();
    write_png_file(&source, &dest, &text).unwrap();
    let back = read_image(&dest).unwrap();
    assert_eq!(back.raw, text);
    assert!(back.findings.is_empty(), "{:?}", back.findings);
    assert_eq!(a1111_view(&back), a1111_view(&p));
    assert_eq!(
        back.extra.get("Hires upscaler").map(String::as_str),
        Some("4x-UltraSharp, v2")
    );
    // The text is not Latin-1, so it went into an iTXt chunk, before IDAT.
    let bytes = std::fs::read(&dest).unwrap();
    let itxt = bytes.windows(4).position(|w| w == b"iTXt").unwrap();
    let idat = bytes.windows(4).position(|w| w == b"IDAT").unwrap();
    assert!(itxt < idat);
    assert!(
        bytes.windows(4).all(|w| w != b"tEXt"),
        "old parameters chunk left behind"
    );
    // The pixels are untouched: same chunks other than the text.
    let original = std::fs::read(&source).unwrap();
    let idat_orig = original.windows(4).position(|w| w == b"IDAT").unwrap();
    assert_eq!(&bytes[idat..], &original[idat_orig..]);
}

#[test]
fn writing_replaces_in_place_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("img.png");
    std::fs::copy(corpus::path("images/none_empty.png"), &path).unwrap();
    write_png_file(&path, &path, "a cat\nSteps: 1, Seed: 2, Size: 8x8").unwrap();
    let p = read_image(&path).unwrap();
    assert_eq!(
        (p.source, p.seed, p.width),
        (Source::A1111, Some(2), Some(8))
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
}

#[test]
fn writing_into_a_jpeg_is_an_error() {
    let jpeg = std::fs::read(corpus::path("images/a1111_cropped_exif.jpg")).unwrap();
    let err = write_png_parameters(&jpeg, "x").unwrap_err();
    assert!(err.to_string().contains("not a PNG"), "{err}");
}

#[test]
fn comfyui_params_become_a1111_text_with_lora_tags() {
    let mut p = read_image(corpus::path("images/comfyui.png")).unwrap();
    p.loras = vec![Lora {
        name: "styles/ink.safetensors".into(),
        weight: 0.8,
        hash: None,
    }];
    let text = to_a1111_infotext(&p);
    assert!(text.contains("<lora:ink:0.8>"), "{text}");
    assert!(text.ends_with(
        "Steps: 20, Sampler: euler_ancestral, Schedule type: karras, CFG scale: 5, Seed: 422847914351919, Size: 1024x1024, Model: waiIllustriousSDXL_v160.safetensors, Denoising strength: 1.0, Clip skip: 2"
    ), "{text}");
    let png = std::fs::read(corpus::path("images/none_empty.png")).unwrap();
    let back = parse_image(&write_png_parameters(&png, &text).unwrap()).unwrap();
    assert_eq!(
        back.loras,
        [Lora {
            name: "ink".into(),
            weight: 0.8,
            hash: None
        }]
    );
    assert_eq!(back.seed, p.seed);
}
