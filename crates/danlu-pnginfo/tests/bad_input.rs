//! Damaged and hostile images: a finding or a clean error, never a panic, bounded memory.
//! All inputs are generated here or derived from corpus images in memory.

// Helpers outside `#[test]` functions fail the test on bad fixtures, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use danlu_fixtures::corpus;
use danlu_pnginfo::{Error, Source, parse_image};

const SIG: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut h = crc32fast::Hasher::new();
    h.update(kind);
    h.update(data);
    out.extend_from_slice(&h.finalize().to_be_bytes());
    out
}

/// A 1x1 RGB PNG with `extra` chunks before IDAT.
fn png_with(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut out = SIG.to_vec();
    out.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
    for c in extra {
        out.extend_from_slice(c);
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&[0, 0, 0, 0]).unwrap();
    out.extend(chunk(b"IDAT", &enc.finish().unwrap()));
    out.extend(chunk(b"IEND", &[]));
    out
}

fn corpus_bytes(name: &str) -> Vec<u8> {
    std::fs::read(corpus::path(&format!("images/{name}"))).unwrap()
}

#[test]
fn every_truncation_of_real_images_is_safe() {
    for name in [
        "a1111_cropped.png",
        "a1111_cropped_exif.jpg",
        "edge_ztxt_after_idat.png",
        "invokeai_imeta_cropped.png",
    ] {
        let bytes = corpus_bytes(name);
        for cut in 0..bytes.len() {
            match parse_image(&bytes[..cut]) {
                Ok(p) if cut < bytes.len() / 2 => {
                    assert_ne!(
                        p.seed,
                        Some(235_284_042),
                        "{name} cut at {cut} still has its seed"
                    )
                }
                Ok(_) => {}
                Err(Error::UnknownFormat { .. }) => assert!(cut < 12, "{name} cut at {cut}"),
                Err(e) => panic!("{name} cut at {cut}: unexpected error {e}"),
            }
        }
    }
}

#[test]
fn truncated_text_chunk_is_named() {
    let bytes = corpus_bytes("a1111_cropped.png");
    // The `parameters` tEXt chunk sits before IDAT; cut inside it.
    let at = bytes.windows(4).position(|w| w == b"tEXt").unwrap() + 40;
    let p = parse_image(&bytes[..at]).unwrap();
    assert_eq!(p.source, Source::None);
    assert!(
        p.findings
            .iter()
            .any(|f| f.contains("`tEXt`") && f.contains("truncated")),
        "{:?}",
        p.findings
    );
}

#[test]
fn corrupted_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for name in [
        "a1111_cropped.png",
        "a1111_cropped_exif.jpg",
        "comfyui_img2img_cropped.png",
        "novelai_v2_stealth.png",
    ] {
        let original = corpus_bytes(name);
        for _ in 0..300 {
            let mut bytes = original.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = (state % bytes.len() as u64) as usize;
                bytes[i] = (state >> 32) as u8;
            }
            let _ = parse_image(&bytes);
        }
    }
}

#[test]
fn wrong_crc_is_a_finding_and_the_text_is_still_read() {
    let mut bytes = corpus_bytes("a1111_cropped.png");
    let start = bytes.windows(4).position(|w| w == b"tEXt").unwrap() - 4;
    let len = u32::from_be_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
    let crc_at = start + 8 + len;
    bytes[crc_at] ^= 0x55;
    let p = parse_image(&bytes).unwrap();
    assert_eq!(p.seed, Some(235_284_042));
    assert!(
        p.findings.iter().any(|f| f.contains("wrong CRC")),
        "{:?}",
        p.findings
    );
}

#[test]
fn hundred_megabyte_text_chunk_is_skipped() {
    let mut data = b"parameters\0".to_vec();
    data.resize(100 * 1024 * 1024, b'a');
    let png = png_with(&[chunk(b"tEXt", &data), chunk(b"tEXt", b"Software\0x")]);
    drop(data);
    let p = parse_image(&png).unwrap();
    assert_eq!(p.source, Source::None);
    assert_eq!(p.extra.get("Software").map(String::as_str), Some("x"));
    assert!(
        p.findings
            .iter()
            .any(|f| f.contains("over the 32 MiB text limit")),
        "{:?}",
        p.findings
    );
}

#[test]
fn ztxt_bomb_is_refused() {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b'a'; 1 << 20];
    for _ in 0..40 {
        enc.write_all(&block).unwrap();
    }
    let mut data = b"parameters\0\0".to_vec();
    data.extend(enc.finish().unwrap());
    assert!(data.len() < 1 << 20);
    let p = parse_image(&png_with(&[chunk(b"zTXt", &data)])).unwrap();
    assert_eq!(p.source, Source::None);
    assert!(
        p.findings.iter().any(|f| f.contains("decompression bomb")),
        "{:?}",
        p.findings
    );
}

#[test]
fn non_utf8_text_is_replaced_and_named() {
    let mut itxt =
        b"parameters\0\0\0\0\0a cat \xff\xfe\nSteps: 3, Seed: 4, Sampler: Euler".to_vec();
    itxt.push(b'!');
    let p = parse_image(&png_with(&[chunk(b"iTXt", &itxt)])).unwrap();
    assert_eq!(p.source, Source::A1111);
    assert_eq!(p.prompt, "a cat \u{FFFD}\u{FFFD}");
    assert_eq!(p.seed, Some(4));
    assert!(
        p.findings.iter().any(|f| f.contains("not valid UTF-8")),
        "{:?}",
        p.findings
    );

    // Latin-1 tEXt that is not UTF-8 is read as Latin-1.
    let p = parse_image(&png_with(&[chunk(
        b"tEXt",
        b"parameters\0caf\xe9\nSteps: 3, Seed: 4, Sampler: Euler",
    )]))
    .unwrap();
    assert_eq!(p.prompt, "café");
}

#[test]
fn exif_with_lying_offsets_in_a_jpeg() {
    // Big-endian TIFF: IFD0 with an ExifIFD pointer; Exif IFD with a UserComment whose offset
    // points 1 GiB past the end.
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&[0, 1, 0x87, 0x69, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0]);
    tiff.extend_from_slice(&[
        0, 1, 0x92, 0x86, 0, 7, 0, 0, 0, 64, 0x40, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE1];
    jpeg.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    jpeg.extend(app1);
    jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
    let p = parse_image(&jpeg).unwrap();
    assert_eq!(p.source, Source::None);
    assert!(
        p.findings
            .iter()
            .any(|f| f.contains("UserComment points past the end")),
        "{:?}",
        p.findings
    );

    // Entry count larger than the data.
    let mut bytes = corpus_bytes("a1111_cropped_exif.jpg");
    let exif = bytes.windows(6).position(|w| w == b"Exif\0\0").unwrap() + 6;
    bytes[exif + 8] = 0xFF;
    bytes[exif + 9] = 0xFF;
    let p = parse_image(&bytes).unwrap();
    assert!(
        p.findings
            .iter()
            .any(|f| f.contains("claims 65535 entries")),
        "{:?}",
        p.findings
    );
}

#[test]
fn graph_with_cycles_and_missing_nodes_in_a_png() {
    let graph = br#"{"1": {"class_type": "KSampler", "inputs": {"seed": 9, "steps": 4, "cfg": 2, "sampler_name": "euler", "scheduler": "normal", "denoise": 1, "model": ["2", 0], "positive": ["3", 0], "negative": ["77", 0], "latent_image": ["1", 0]}},
      "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "l.safetensors", "strength_model": 0.5, "model": ["2", 0]}},
      "3": {"class_type": "CLIPTextEncode", "inputs": {"text": ["4", 0]}},
      "4": {"class_type": "PrimitiveString", "inputs": {"value": ["4", 0]}}}"#;
    let data = [&b"prompt\0"[..], &graph[..]].concat();
    let p = parse_image(&png_with(&[chunk(b"tEXt", &data)])).unwrap();
    assert_eq!(p.source, Source::ComfyUi);
    assert_eq!(p.seed, Some(9));
    assert_eq!(p.loras.len(), 1);
    assert!(
        p.findings.iter().any(|f| f.contains("cycle")),
        "{:?}",
        p.findings
    );
    assert!(
        p.findings.iter().any(|f| f.contains("`77`")),
        "{:?}",
        p.findings
    );
    assert!(
        p.findings
            .iter()
            .any(|f| f.contains("linked through too many")),
        "{:?}",
        p.findings
    );
}

#[test]
fn empty_and_foreign_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.png");
    danlu_fs::write_atomic(&path, b"GIF89a...", danlu_fs::Overwrite::Never).unwrap();
    let err = danlu_pnginfo::read_image(&path).unwrap_err();
    assert!(err.to_string().contains("notes.png"), "{err}");
    assert!(err.to_string().contains("47 49 46 38"), "{err}");
    let err = danlu_pnginfo::read_image(dir.path().join("missing.png")).unwrap_err();
    assert!(matches!(err, Error::Read { .. }), "{err}");
}
