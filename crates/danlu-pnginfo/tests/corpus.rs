//! Every image of the shared corpus, parsed, against values written by hand from each image's
//! raw metadata (text chunks and EXIF tags as Pillow shows them, and a separate reading of the
//! stealth LSBs); see `../shared/corpus/MANIFEST.md` for what each image holds.

// Helpers outside `#[test]` functions fail the test on bad fixtures, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use danlu_fixtures::corpus;
use danlu_pnginfo::{GenerationParams, Source, read_image};

/// What a corpus image must give; `None` fields are not checked.
#[derive(Default)]
struct Expect<'a> {
    source: Option<Source>,
    prompt: Option<&'a str>,
    prompt_contains: Option<&'a str>,
    negative: Option<&'a str>,
    steps: Option<u64>,
    seed: Option<u64>,
    size: Option<(u32, u32)>,
    cfg: Option<f64>,
    sampler: Option<&'a str>,
    scheduler: Option<&'a str>,
    model: Option<&'a str>,
    model_hash: Option<&'a str>,
    clip_skip: Option<u32>,
    denoise: Option<f64>,
    vae: Option<&'a str>,
    extra: &'a [(&'a str, &'a str)],
    finding: Option<&'a str>,
}

fn read(name: &str) -> GenerationParams {
    let path = corpus::path(&format!("images/{name}"));
    read_image(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check(name: &str, e: Expect<'_>) {
    let p = read(name);
    if let Some(s) = e.source {
        assert_eq!(p.source, s, "{name}: source");
    }
    if let Some(v) = e.prompt {
        assert_eq!(p.prompt, v, "{name}: prompt");
    }
    if let Some(v) = e.prompt_contains {
        assert!(
            p.prompt.contains(v),
            "{name}: prompt {:?} lacks {v:?}",
            p.prompt
        );
    }
    if let Some(v) = e.negative {
        assert_eq!(p.negative_prompt, v, "{name}: negative prompt");
    }
    if e.steps.is_some() {
        assert_eq!(p.steps, e.steps, "{name}: steps");
    }
    if e.seed.is_some() {
        assert_eq!(p.seed, e.seed, "{name}: seed");
    }
    if let Some((w, h)) = e.size {
        assert_eq!((p.width, p.height), (Some(w), Some(h)), "{name}: size");
    }
    if e.cfg.is_some() {
        assert_eq!(p.cfg_scale, e.cfg, "{name}: cfg");
    }
    if let Some(v) = e.sampler {
        assert_eq!(p.sampler.as_deref(), Some(v), "{name}: sampler");
    }
    if let Some(v) = e.scheduler {
        assert_eq!(p.scheduler.as_deref(), Some(v), "{name}: scheduler");
    }
    if let Some(v) = e.model {
        assert_eq!(p.model.as_deref(), Some(v), "{name}: model");
    }
    if let Some(v) = e.model_hash {
        assert_eq!(p.model_hash.as_deref(), Some(v), "{name}: model hash");
    }
    if e.clip_skip.is_some() {
        assert_eq!(p.clip_skip, e.clip_skip, "{name}: clip skip");
    }
    if e.denoise.is_some() {
        assert_eq!(p.denoising_strength, e.denoise, "{name}: denoise");
    }
    if let Some(v) = e.vae {
        assert_eq!(p.vae.as_deref(), Some(v), "{name}: vae");
    }
    for (k, v) in e.extra {
        assert_eq!(
            p.extra.get(*k).map(String::as_str),
            Some(*v),
            "{name}: extra {k}"
        );
    }
    if let Some(f) = e.finding {
        assert!(
            p.findings.iter().any(|x| x.contains(f)),
            "{name}: no finding with {f:?} in {:?}",
            p.findings
        );
    }
    // Every parsed image serializes to the contract shape.
    let json = serde_json::to_value(&p).unwrap();
    assert!(json.get("raw").is_some() && json.get("extra").is_some());
}

const WAI_PROMPT_A1111: &str =
    "general, masterpiece, best quality, amazing quality,\n1girl, solo, hatsune miku, テスト\n";
const WAI_NEG_A1111: &str = "bad quality, worst quality, worst detail, sketch, censor,\n";

/// Every image in the corpus folder has a case below.
const CASES: &[&str] = &[
    "a1111_2023_no_negative.png",
    "a1111_cropped.png",
    "a1111_cropped_exif.jpg",
    "a1111_sd-webui.jpg",
    "a1111_sd-webui.png",
    "a1111_sd-webui.webp",
    "a1111_stealth_pngcomp.png",
    "civitai.jpeg",
    "comfyui.png",
    "comfyui_animated.webp",
    "comfyui_img2img_cropped.png",
    "comfyui_night_evening_day_morning_cropped.png",
    "comfyui_noisy_latents_3_subjects_cropped.png",
    "comfyui_save-image-extended.jpeg",
    "comfyui_saveimage-plus.jpg",
    "comfyui_saveimagewithmetadata.png",
    "edge_empty_file.png",
    "edge_no_sd_metadata.png",
    "edge_ztxt_after_idat.png",
    "fooocus_cropped.png",
    "forge-classic.jpeg",
    "forge.png",
    "invokeai_dream_cropped.png",
    "invokeai_imeta_cropped.png",
    "invokeai_sdmeta_cropped.png",
    "invokeai_v5.png",
    "none_empty.jpg",
    "none_empty.png",
    "novelai_augment_sketch.png",
    "novelai_legacy_cropped.png",
    "novelai_v2_stealth.png",
    "novelai_v3_sdxl_stealth.png",
    "novelai_v45_curated.webp",
    "novelai_v45_full.png",
    "ruinedfooocus.png",
    "sdnext.jpg",
    "sdnext.png",
    "stability-matrix.png",
    "swarmui.png",
];

#[test]
fn every_corpus_image_has_a_case() {
    let dir = corpus::path("images");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, CASES);
}

#[test]
fn every_corpus_image_parses_or_fails_cleanly() {
    for name in CASES {
        let path = corpus::path(&format!("images/{name}"));
        match read_image(&path) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(*name, "edge_empty_file.png", "{name}: {e}");
                assert!(e.to_string().contains("edge_empty_file.png"), "{e}");
            }
        }
    }
}

#[test]
fn a1111_png_jpeg_webp() {
    check(
        "a1111_2023_no_negative.png",
        Expect {
            source: Some(Source::A1111),
            prompt: Some("girl background"),
            negative: Some(""),
            steps: Some(20),
            sampler: Some("Euler a"),
            cfg: Some(7.0),
            seed: Some(2_932_492_919),
            size: Some((512, 704)),
            model_hash: Some("a64573359a"),
            ..Expect::default()
        },
    );
    for name in [
        "a1111_cropped.png",
        "a1111_cropped_exif.jpg",
        "edge_ztxt_after_idat.png",
    ] {
        check(
            name,
            Expect {
                source: Some(Source::A1111),
                prompt: Some("photo of a duck"),
                negative: Some("monochrome"),
                steps: Some(15),
                sampler: Some("UniPC"),
                cfg: Some(5.0),
                seed: Some(235_284_042),
                size: Some((512, 400)),
                model_hash: Some("c0d1994c73"),
                model: Some("realistic_realisticVisionV20_v20"),
                ..Expect::default()
            },
        );
    }
    check(
        "edge_ztxt_after_idat.png",
        Expect {
            extra: &[("date:create", "2023-04-22T00:01:01+00:00")],
            ..Expect::default()
        },
    );
    for (name, seed, cfg) in [
        ("a1111_sd-webui.png", 3_782_896_554, 7.0),
        ("a1111_sd-webui.jpg", 3_623_174_757, 5.5),
        ("a1111_sd-webui.webp", 1_028_435_836, 5.5),
    ] {
        check(
            name,
            Expect {
                source: Some(Source::A1111),
                prompt: Some(WAI_PROMPT_A1111),
                negative: Some(WAI_NEG_A1111),
                steps: Some(20),
                sampler: Some("DPM++ 2M"),
                scheduler: Some("Karras"),
                cfg: Some(cfg),
                seed: Some(seed),
                size: Some((1024, 1024)),
                model_hash: Some("45a21ea00a"),
                model: Some("waiIllustriousSDXL_v160"),
                extra: &[("Version", "v1.10.1")],
                ..Expect::default()
            },
        );
    }
}

#[test]
fn forge_sdnext_civitai() {
    check(
        "forge.png",
        Expect {
            source: Some(Source::A1111),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality,\n1girl, solo, hatsune miku, テスト",
            ),
            negative: Some("bad quality, worst quality, worst detail, sketch, censor,"),
            steps: Some(25),
            sampler: Some("Euler"),
            scheduler: Some("Karras"),
            cfg: Some(5.0),
            seed: Some(747_066_619),
            model_hash: Some("45a21ea00a"),
            extra: &[("Version", "f2.0.1v1.10.1-previous-669-gdfdcbab6")],
            ..Expect::default()
        },
    );
    check(
        "forge-classic.jpeg",
        Expect {
            source: Some(Source::A1111),
            steps: Some(20),
            sampler: Some("DPM++ 2M"),
            scheduler: Some("Karras"),
            cfg: Some(6.0),
            seed: Some(2_547_514_258),
            extra: &[("RNG", "CPU"), ("Version", "classic")],
            ..Expect::default()
        },
    );
    for (name, sampler, seed, sigma) in [
        ("sdnext.png", "DDIM", 2_427_651_458, "exponential"),
        ("sdnext.jpg", "Euler a", 899_700_607, "karras"),
    ] {
        check(
            name,
            Expect {
                source: Some(Source::A1111),
                prompt: Some(
                    "general, masterpiece, best quality, amazing quality,\n1girl, solo, hatsune miku, #テスト\n",
                ),
                negative: Some(WAI_NEG_A1111),
                steps: Some(20),
                size: Some((1024, 1024)),
                sampler: Some(sampler),
                seed: Some(seed),
                cfg: Some(6.0),
                model: Some("waiIllustriousSDXL_v160"),
                model_hash: Some("45a21ea00a"),
                extra: &[
                    ("App", "SD.Next"),
                    ("Sampler sigma", sigma),
                    ("Version", "56a8aea"),
                ],
                ..Expect::default()
            },
        );
    }
    check(
        "civitai.jpeg",
        Expect {
            source: Some(Source::A1111),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality,\n1girl, solo, hatsune miku, #テスト",
            ),
            negative: Some(WAI_NEG_A1111),
            steps: Some(25),
            sampler: Some("Euler a"),
            cfg: Some(5.0),
            seed: Some(1_311_178_179),
            size: Some((1024, 1024)),
            clip_skip: Some(2),
            extra: &[
                ("Created Date", "2026-01-04T01:27:21.2717070Z"),
                (
                    "Civitai resources",
                    r#"[{"type":"checkpoint","modelVersionId":2514310,"modelName":"WAI-illustrious-SDXL","modelVersionName":"v16.0"}]"#,
                ),
                ("Civitai metadata", "{}"),
            ],
            ..Expect::default()
        },
    );
    check(
        "stability-matrix.png",
        Expect {
            source: Some(Source::A1111),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality,\n1girl, solo, hatsune miku, #テスト\n",
            ),
            negative: Some(WAI_NEG_A1111),
            steps: Some(20),
            sampler: Some("Euler Ancestral Karras"),
            cfg: Some(5.0),
            seed: Some(395_309_383),
            model: Some("waiIllustriousSDXL_v160.safetensors"),
            model_hash: Some("A5F58EB1C33616C4F06BCA55AF39876A7B817913CD829CAA8ACB111B770C85CC"),
            finding: Some("UTF-8 where PNG says Latin-1"),
            ..Expect::default()
        },
    );
    check(
        "comfyui_saveimagewithmetadata.png",
        Expect {
            source: Some(Source::A1111),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality,\n1girl, solo, hatsune miku,",
            ),
            negative: Some(WAI_NEG_A1111),
            sampler: Some("euler_ancestral_karras"),
            seed: Some(38_802_053_347_333),
            clip_skip: Some(2),
            model: Some("waiIllustriousSDXL_v160.safetensors"),
            model_hash: Some("45a21ea00a"),
            finding: Some("ComfyUI graph"),
            ..Expect::default()
        },
    );
}

#[test]
fn a1111_stealth_only() {
    check(
        "a1111_stealth_pngcomp.png",
        Expect {
            source: Some(Source::A1111),
            prompt: Some("a circle"),
            negative: Some("a square"),
            steps: Some(20),
            sampler: Some("Euler"),
            scheduler: Some("Automatic"),
            cfg: Some(7.0),
            seed: Some(2_015_833_630),
            size: Some((64, 64)),
            model_hash: Some("15012c538f"),
            model: Some("realisticVisionV51_v51VAE"),
            clip_skip: Some(2),
            finding: Some("stealth metadata in the alpha LSBs"),
            ..Expect::default()
        },
    );
}

#[test]
fn comfyui_graphs() {
    let wai_pos =
        "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, ";
    let wai_neg = "bad quality, worst quality, worst detail, sketch, censor, \n";
    for (name, seed, positive) in [
        (
            "comfyui.png",
            422_847_914_351_919,
            "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, テスト, ",
        ),
        (
            "comfyui_animated.webp",
            270_932_924_124_066,
            "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, テスト, ",
        ),
        (
            "comfyui_save-image-extended.jpeg",
            813_617_545_434_765,
            wai_pos,
        ),
        ("comfyui_saveimage-plus.jpg", 577_723_948_579_568, wai_pos),
    ] {
        check(
            name,
            Expect {
                source: Some(Source::ComfyUi),
                prompt: Some(positive),
                negative: Some(wai_neg),
                seed: Some(seed),
                steps: Some(20),
                cfg: Some(5.0),
                sampler: Some("euler_ancestral"),
                scheduler: Some("karras"),
                denoise: Some(1.0),
                model: Some("waiIllustriousSDXL_v160.safetensors"),
                size: Some((1024, 1024)),
                clip_skip: Some(2),
                ..Expect::default()
            },
        );
    }
    check(
        "comfyui_img2img_cropped.png",
        Expect {
            source: Some(Source::ComfyUi),
            prompt: Some("photograph of victorian woman with wings, sky clouds, meadow grass\n"),
            negative: Some("watermark, text\n"),
            seed: Some(280_823_642_470_253),
            steps: Some(20),
            cfg: Some(8.0),
            sampler: Some("sample_dpmpp_2m"),
            scheduler: Some("normal"),
            denoise: Some(0.870_000_000_000_000_1),
            model: Some("v1-5-pruned-emaonly.ckpt"),
            ..Expect::default()
        },
    );
    // Two KSamplers: node 3 samples the empty latent, node 24 refines its upscaled output.
    check(
        "comfyui_night_evening_day_morning_cropped.png",
        Expect {
            source: Some(Source::ComfyUi),
            prompt_contains: Some("(best quality) (daytime:1.2) sky (blue)"),
            seed: Some(335_608_130_539_327),
            steps: Some(13),
            cfg: Some(8.5),
            sampler: Some("dpmpp_sde"),
            scheduler: Some("normal"),
            size: Some((704, 1280)),
            model: Some("Anything-V3.0.ckpt"),
            clip_skip: Some(2),
            vae: Some("vae-ft-mse-840000-ema-pruned.safetensors"),
            ..Expect::default()
        },
    );
    let night = read("comfyui_night_evening_day_morning_cropped.png");
    assert!(night.prompt.contains("morning sky"));
    assert!(night.negative_prompt.starts_with("(hands), text, error"));
    let samplers = &night.extra["comfyui_samplers"];
    assert!(samplers.contains("1122440447966177") && samplers.contains("\"id\":\"24\""));
    // Five samplers; node 57 is the first (in file order) that starts from an empty latent.
    check(
        "comfyui_noisy_latents_3_subjects_cropped.png",
        Expect {
            source: Some(Source::ComfyUi),
            prompt_contains: Some("(solo) girl (flat chest:0.9)"),
            seed: Some(890_421_140_397_575),
            steps: Some(16),
            cfg: Some(7.0),
            sampler: Some("sample_dpmpp_sde"),
            size: Some((256, 512)),
            model: Some("Anything-V3.0.ckpt"),
            ..Expect::default()
        },
    );
}

#[test]
fn novelai() {
    check(
        "novelai_legacy_cropped.png",
        Expect {
            source: Some(Source::NovelAi),
            prompt: Some("masterpiece, best quality,  cat, space, icon"),
            steps: Some(50),
            sampler: Some("k_euler_ancestral"),
            seed: Some(2_253_955_223),
            cfg: Some(10.0),
            model: Some("Stable Diffusion 1D44365E"),
            ..Expect::default()
        },
    );
    assert!(
        read("novelai_legacy_cropped.png")
            .negative_prompt
            .starts_with("lowres, bad anatomy, bad hands")
    );
    check(
        "novelai_v2_stealth.png",
        Expect {
            source: Some(Source::NovelAi),
            prompt: Some("masterpiece, best quality,  silvery white"),
            negative: Some(
                "nsfw, worst quality, low quality, what has science done, what, nightmare fuel, eldritch horror, where is your god now, why, small",
            ),
            steps: Some(28),
            size: Some((128, 128)),
            cfg: Some(10.0),
            seed: Some(4_091_185_279),
            sampler: Some("k_euler_ancestral"),
            denoise: Some(0.7),
            ..Expect::default()
        },
    );
    check(
        "novelai_v3_sdxl_stealth.png",
        Expect {
            source: Some(Source::NovelAi),
            prompt: Some(
                " silvery white, best quality, amazing quality, very aesthetic, absurdres",
            ),
            steps: Some(28),
            size: Some((128, 128)),
            cfg: Some(10.0),
            seed: Some(1_148_692_016),
            sampler: Some("k_euler"),
            scheduler: Some("native"),
            model: Some("Stable Diffusion XL C1E1DE52"),
            ..Expect::default()
        },
    );
    check(
        "novelai_v45_full.png",
        Expect {
            source: Some(Source::NovelAi),
            prompt: Some(
                "1girl, solo, hatsune miku, #テスト, very aesthetic, masterpiece, no text",
            ),
            steps: Some(28),
            size: Some((832, 1216)),
            cfg: Some(5.0),
            seed: Some(2_043_807_047),
            sampler: Some("k_euler_ancestral"),
            scheduler: Some("karras"),
            model: Some("NovelAI Diffusion V4.5 4BDE2A90"),
            ..Expect::default()
        },
    );
    check(
        "novelai_v45_curated.webp",
        Expect {
            source: Some(Source::NovelAi),
            prompt: Some(
                "1girl, solo, hatsune miku, #テスト, very aesthetic, masterpiece, no text, -0.8::feet::, rating:general",
            ),
            negative: Some(
                "blurry, lowres, upscaled, artistic error, scan artifacts, jpeg artifacts, logo, too many watermarks, negative space, blank page",
            ),
            steps: Some(23),
            size: Some((1024, 1024)),
            cfg: Some(5.0),
            seed: Some(880_673_757),
            sampler: Some("k_euler_ancestral"),
            scheduler: Some("karras"),
            extra: &[("DocumentName", "NovelAI generated image")],
            ..Expect::default()
        },
    );
    check(
        "novelai_augment_sketch.png",
        Expect {
            source: Some(Source::NovelAi),
            prompt: Some(""),
            extra: &[("req_type", "sketch"), ("Title", "AI augmented image")],
            ..Expect::default()
        },
    );
}

#[test]
fn invokeai() {
    let woman = "professional full body photo of young woman, hyper long brunette hair";
    for name in ["invokeai_dream_cropped.png", "invokeai_sdmeta_cropped.png"] {
        check(
            name,
            Expect {
                source: Some(Source::InvokeAi),
                prompt_contains: Some(woman),
                negative: Some("rendering, glowing eyes, skinny"),
                steps: Some(50),
                seed: Some(2_980_747_362),
                size: Some((512, 768)),
                cfg: Some(5.0),
                sampler: Some("k_lms"),
                ..Expect::default()
            },
        );
    }
    check(
        "invokeai_sdmeta_cropped.png",
        Expect {
            model: Some("deliberateForInvoke_v08"),
            model_hash: Some("56d1442a0feefd64836a19ac8e3527ec71c884fc962e246ddf67b03e42921272"),
            ..Expect::default()
        },
    );
    check(
        "invokeai_imeta_cropped.png",
        Expect {
            source: Some(Source::InvokeAi),
            prompt: Some("digital artwork, oil painting. painterly brushstrokes, holidays,"),
            negative: Some(
                "grainy+, photo, oversaturated, overexposed, blurry, compressed jpg+, noisy++, unfocused , black and white",
            ),
            size: Some((1024, 1024)),
            seed: Some(3_293_022_630),
            cfg: Some(8.0),
            steps: Some(35),
            sampler: Some("euler"),
            model: Some("juggernautXL"),
            vae: Some("VAEFix"),
            ..Expect::default()
        },
    );
    check(
        "invokeai_v5.png",
        Expect {
            source: Some(Source::InvokeAi),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, #テスト\n",
            ),
            negative: Some("bad quality, worst quality, worst detail, sketch, censor, \n"),
            size: Some((1024, 1024)),
            seed: Some(3_951_921_344),
            cfg: Some(6.0),
            steps: Some(24),
            sampler: Some("euler_a"),
            model: Some("waiIllustriousSDXL_v160"),
            model_hash: Some(
                "blake3:7c1631b481e1566448f49db7e3b67a8a9d04742fa3c7d4548a0c81b619160c56",
            ),
            ..Expect::default()
        },
    );
}

#[test]
fn fooocus_and_swarmui() {
    check(
        "fooocus_cropped.png",
        Expect {
            source: Some(Source::Fooocus),
            prompt: Some("a smiling goldfish"),
            negative: Some(""),
            steps: Some(30),
            seed: Some(6_952_411_511_246_973_023),
            size: Some((768, 1280)),
            cfg: Some(4.0),
            sampler: Some("dpmpp_2m_sde_gpu"),
            scheduler: Some("karras"),
            model: Some("juggernautXL_v8Rundiffusion"),
            model_hash: Some("aeb7e9e689"),
            clip_skip: Some(2),
            extra: &[("version", "Fooocus v2.4.3"), ("fooocus_scheme", "fooocus")],
            ..Expect::default()
        },
    );
    check(
        "ruinedfooocus.png",
        Expect {
            source: Some(Source::Fooocus),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, #テスト",
            ),
            negative: Some("bad quality, worst quality, worst detail, sketch, censor, "),
            steps: Some(30),
            cfg: Some(8.0),
            size: Some((1024, 1024)),
            seed: Some(2_020_047_614),
            sampler: Some("dpmpp_2m_sde_gpu"),
            scheduler: Some("karras"),
            model: Some("waiNSFWIllustrious_v150.safetensors"),
            model_hash: Some("BEFC694A296F75E996488EBF9F9DB8A1493BD059B6E704B975829E87D5AEB4FA"),
            extra: &[("software", "RuinedFooocus")],
            ..Expect::default()
        },
    );
    check(
        "swarmui.png",
        Expect {
            source: Some(Source::SwarmUi),
            prompt: Some(
                "general, masterpiece, best quality, amazing quality, \n1girl, solo, hatsune miku, #テスト",
            ),
            negative: Some("bad quality, worst quality, worst detail, sketch, censor, "),
            model: Some("waiIllustriousSDXL_v160"),
            model_hash: Some("22d8cb95b807b0c242576b676a12b07ae6b782b57ae4fe07a07254801b2d5d61"),
            seed: Some(2_083_100_758),
            steps: Some(20),
            cfg: Some(7.0),
            size: Some((1024, 1024)),
            sampler: Some("euler_ancestral"),
            scheduler: Some("karras"),
            extra: &[("swarm_version", "0.9.7.4")],
            ..Expect::default()
        },
    );
}

#[test]
fn images_without_parameters_are_none() {
    for name in [
        "none_empty.png",
        "none_empty.jpg",
        "edge_no_sd_metadata.png",
    ] {
        let p = read(name);
        assert_eq!(p.source, Source::None, "{name}");
        assert_eq!(p.prompt, "");
        assert_eq!(p.steps, None);
    }
    let p = read("edge_no_sd_metadata.png");
    assert_eq!(
        p.extra.get("date:create").map(String::as_str),
        Some("2025-03-27T21:10:17+00:00")
    );
}

/// The stealth copies agree with the text chunks beside them.
#[test]
fn stealth_copies_in_corpus_images() {
    for (name, source, seed) in [
        ("forge.png", Source::A1111, 747_066_619),
        ("novelai_v2_stealth.png", Source::NovelAi, 4_091_185_279),
        (
            "novelai_v3_sdxl_stealth.png",
            Source::NovelAi,
            1_148_692_016,
        ),
        ("novelai_v45_full.png", Source::NovelAi, 2_043_807_047),
        ("novelai_v45_curated.webp", Source::NovelAi, 880_673_757),
    ] {
        let bytes = std::fs::read(corpus::path(&format!("images/{name}"))).unwrap();
        let payload = danlu_pnginfo::parse_stealth(&bytes)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no stealth metadata"));
        assert_eq!(payload.mode, danlu_pnginfo::StealthMode::Alpha, "{name}");
        assert!(payload.compressed, "{name}");
        let p = payload.to_params();
        assert_eq!((p.source, p.seed), (source, Some(seed)), "{name}");
    }
    let none = std::fs::read(corpus::path("images/none_empty.png")).unwrap();
    assert_eq!(danlu_pnginfo::parse_stealth(&none).unwrap(), None);
}

/// Drops every text chunk, as a re-save by an image editor or a web upload does.
fn strip_text_chunks(png: &[u8]) -> Vec<u8> {
    let mut out = png[..8].to_vec();
    let mut pos = 8;
    while pos + 12 <= png.len() {
        let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &png[pos + 4..pos + 8];
        let end = pos + 12 + len;
        if !matches!(kind, b"tEXt" | b"zTXt" | b"iTXt") {
            out.extend_from_slice(&png[pos..end]);
        }
        pos = end;
    }
    out
}

#[test]
fn stealth_is_read_when_text_chunks_were_stripped() {
    for (name, source, seed) in [
        ("forge.png", Source::A1111, 747_066_619),
        ("novelai_v45_full.png", Source::NovelAi, 2_043_807_047),
    ] {
        let bytes = std::fs::read(corpus::path(&format!("images/{name}"))).unwrap();
        let stripped = strip_text_chunks(&bytes);
        assert!(stripped.len() < bytes.len());
        let p = danlu_pnginfo::parse_image(&stripped).unwrap();
        assert_eq!((p.source, p.seed), (source, Some(seed)), "{name}");
        assert!(p.findings.iter().any(|f| f.contains("stealth")), "{name}");
    }
}
