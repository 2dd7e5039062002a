//! Tests of the PyTorch readers: real files of the corpus, generated archives and legacy files,
//! and broken or hostile inputs.

use super::*;
use danlu_fixtures::torch::{
    Obj, PickleWriter, TensorData, TensorSpec, checkpoint, data_pickle, huge_shape_pickle,
    nested_lists_pickle, os_system_pickle, tensor, tensor_with, torch_legacy, torch_zip,
    torch_zip_named, torch_zip64, write_torch_zip, zip_of,
};
use danlu_types::Dtype;
use std::path::PathBuf;

fn corpus(rel: &str) -> (PathBuf, Vec<u8>) {
    let p = danlu_fixtures::corpus::path(rel);
    let d = std::fs::read(&p).unwrap();
    (p, d)
}

fn fake() -> PathBuf {
    PathBuf::from("test.ckpt")
}

fn value(ix: &TensorIndex, k: &str) -> serde_json::Value {
    ix.values
        .get(k)
        .cloned()
        .unwrap_or_else(|| panic!("no value `{k}` in {:?}", ix.values))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Every tensor's range lies in the file and covers exactly numel × element size bytes (for
/// contiguous, uncompressed tensors).
fn assert_ranges_sane(ix: &TensorIndex, file_len: u64) {
    for t in &ix.tensors {
        assert!(t.data.offset + t.data.len <= file_len, "{}", t.name);
        if t.data.quant.is_none() && t.data.strides.is_none() {
            let size = t.dtype.size_in_bytes().unwrap();
            assert_eq!(t.data.len, t.numel() * size, "{}", t.name);
        }
    }
}

// ----- real files -----

#[test]
fn a1111_embedding_pt_opens_with_its_values() {
    // MANIFEST: string_to_token/string_to_param{"*": [n,768]}/name/step/sd_checkpoint
    // "5d2f8777af"/sd_checkpoint_name "7th7-any3".
    let (p, d) = corpus("models/bad-hands-5.pt");
    let ix = parse_zip(&p, &d).unwrap();
    assert_eq!(ix.format, Some(Format::Ckpt));
    let t = ix.get("string_to_param.*").unwrap();
    assert_eq!((t.dtype, t.shape[1]), (Dtype::F32, 768));
    assert_eq!(value(&ix, "name"), "bad-hands-5");
    assert_eq!(value(&ix, "sd_checkpoint"), "5d2f8777af");
    assert_eq!(value(&ix, "sd_checkpoint_name"), "7th7-any3");
    assert!(value(&ix, "step").is_u64());
    assert!(ix.pickle.as_ref().unwrap().safe);
    // torch.save aligns member data to 64 bytes.
    assert_eq!(t.data.offset % 64, 0);
    assert_ranges_sane(&ix, d.len() as u64);
    assert_eq!(ix.files, [p]);
}

#[test]
fn every_corpus_torch_model_opens() {
    // (file, tensors, one tensor, its dtype, its shape), from the MANIFEST's descriptions.
    let cases: &[(&str, usize, &str, Dtype, &[u64])] = &[
        (
            "models/bad_prompt_version2.pt",
            1,
            "string_to_param.*",
            Dtype::F32,
            &[8, 768],
        ),
        (
            "models/birb-style_learned_embeds.bin",
            1,
            "<birb-style>",
            Dtype::F32,
            &[768],
        ),
        ("models/lora_kiriko2.ti.pt", 1, "<krk>", Dtype::F32, &[768]),
        (
            "models/lora_kiriko2.text_encoder.pt",
            96,
            "0",
            Dtype::F32,
            &[768, 4],
        ),
        ("models/lora_pop.pt", 256, "0", Dtype::F32, &[320, 4]),
        (
            "models/vaeapprox-sd1_model.pt",
            16,
            "conv1.weight",
            Dtype::F32,
            &[8, 4, 7, 7],
        ),
        (
            "models/vaeapprox-sdxl.pt",
            16,
            "conv8.bias",
            Dtype::F32,
            &[3],
        ),
        (
            "models/taef2_decoder.pth",
            79,
            "3.conv.0.weight",
            Dtype::F16,
            &[64, 64, 3, 3],
        ),
        (
            "models/realesr-animevideov3.pth",
            53,
            "params.body.0.weight",
            Dtype::F32,
            &[64, 3, 3, 3],
        ),
    ];
    for (rel, n, name, dtype, shape) in cases {
        let (p, d) = corpus(rel);
        let ix = parse_zip(&p, &d).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(ix.tensors.len(), *n, "{rel}");
        let t = ix.get(name).unwrap_or_else(|| panic!("{rel}: no `{name}`"));
        assert_eq!((t.dtype, t.shape.as_slice()), (*dtype, *shape), "{rel}");
        assert!(ix.pickle.as_ref().unwrap().safe, "{rel}: {:?}", ix.pickle);
        assert_ranges_sane(&ix, d.len() as u64);
    }
}

#[test]
fn deflated_storages_are_listed_but_marked() {
    // MANIFEST: realesr-animevideov3.pth was re-zipped (directory entries); its members are
    // deflated, so the bytes cannot be mapped in place.
    let (p, d) = corpus("models/realesr-animevideov3.pth");
    let ix = parse_zip(&p, &d).unwrap();
    assert!(
        ix.tensors
            .iter()
            .all(|t| t.data.quant.as_deref() == Some("deflate"))
    );
}

#[test]
fn picklescan_zip_checkpoint_is_a_bare_tensor() {
    let (p, d) = corpus("pickles/picklescan_data__new_pytorch_model.bin");
    let ix = parse_zip(&p, &d).unwrap();
    assert_eq!(ix.tensors.len(), 1);
    assert_eq!(ix.tensors[0].shape, [3, 4]);
    assert_eq!(ix.tensors[0].name, "");
}

#[test]
fn legacy_checkpoint_opens_with_storage_offsets() {
    let (p, d) = corpus("pickles/picklescan_data__pytorch_model.bin");
    let ix = parse_legacy(&p, &d).unwrap();
    assert_eq!(ix.format, Some(Format::PtLegacy));
    assert!(ix.pickle.as_ref().unwrap().safe);
    // Its object pickle names this tensor over storage '140483767857136' (57992 elements),
    // the first key of the storage list; the five pickles end at byte 8102, followed by the
    // 8-byte element count.
    let t = ix
        .get("distilbert.embeddings.word_embeddings.weight")
        .unwrap();
    assert_eq!(t.shape, [28996, 2]);
    assert_eq!(t.data.offset, 8102 + 8);
    assert_eq!(t.data.len, 28996 * 2 * 4);
    assert_eq!(u64::from_le_bytes(d[8102..8110].try_into().unwrap()), 57992);
    assert_ranges_sane(&ix, d.len() as u64);
}

#[test]
fn hostile_zips_are_not_torch_and_keep_their_verdict() {
    // MANIFEST: each holds a pickle calling builtins.eval, hidden from naive scanners.
    for (rel, finding) in [
        ("pickles/picklescan_data__malicious1.zip", "data.pkl"),
        ("pickles/picklescan_data2__malicious1_crc.zip", "data.pkl"),
        (
            "pickles/picklescan_data__malicious1_wrong_ext.zip",
            "data.txt",
        ),
        (
            "pickles/picklescan_data__malicious1_central_directory.zip",
            "local header",
        ),
        ("pickles/picklescan_data__malicious1_0x1.zip", "encrypted"),
        ("pickles/picklescan_data__malicious1_0x40.zip", "encrypted"),
        ("pickles/picklescan_data__malicious1_0x20.zip", "patched"),
    ] {
        let (p, d) = corpus(rel);
        match parse_zip(&p, &d) {
            Err(Error::NotTorch { safety, .. }) => {
                assert!(!safety.safe, "{rel}");
                assert!(
                    safety.globals.contains(&"builtins.eval".to_owned()),
                    "{rel}: {safety:?}"
                );
                assert!(
                    safety.findings.iter().any(|f| f.contains(finding)),
                    "{rel}: {safety:?}"
                );
            }
            other => panic!("{rel}: {other:?}"),
        }
    }
}

#[test]
fn zips_without_pickles_are_clean_errors() {
    for rel in [
        "pickles/picklescan_data__benign_password_protected.zip",
        "pickles/picklescan_data2__int_arrays.npz",
        "pickles/picklescan_data2__object_arrays_compressed.npz",
    ] {
        let (p, d) = corpus(rel);
        let err = parse_zip(&p, &d).unwrap_err();
        assert!(matches!(err, Error::NotTorch { .. }), "{rel}: {err}");
        assert!(err.to_string().contains("not a PyTorch file"), "{err}");
    }
}

#[test]
fn bare_pickles_read_as_legacy_are_not_torch_but_keep_their_verdict() {
    let (p, d) = corpus("pickles/picklescan_data__pytorch_magic_bypass.pt");
    match parse_legacy(&p, &d) {
        Err(Error::NotTorch { safety, .. }) => {
            assert!(!safety.safe);
            assert!(safety.globals.contains(&"__builtin__.eval".to_owned()));
        }
        other => panic!("{other:?}"),
    }
    let (p, d) = corpus("pickles/picklescan_data__benign0_v4.pkl");
    match parse_legacy(&p, &d) {
        Err(Error::NotTorch { safety, .. }) => assert!(safety.safe),
        other => panic!("{other:?}"),
    }
    let (p, d) = corpus("pickles/picklescan_data__not_a_pickle.bin");
    assert!(parse_legacy(&p, &d).is_err());
}

// ----- generated files -----

fn sample_root() -> Obj {
    Obj::Dict(vec![
        (
            "state_dict".into(),
            Obj::OrderedDict(vec![
                (
                    "model.diffusion_model.out.2.bias".into(),
                    tensor_with(Dtype::F32, &[2, 2], f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
                ),
                ("first_stage_model.w".into(), tensor(Dtype::F16, &[3, 5])),
                (
                    "p".into(),
                    Obj::Parameter(TensorSpec {
                        dtype: Dtype::Bf16,
                        shape: vec![2],
                        data: TensorData::Bytes(vec![1, 2, 3, 4]),
                    }),
                ),
            ]),
        ),
        ("global_step".into(), Obj::Int(470_000)),
        (
            "layers".into(),
            Obj::IntDict(vec![(
                768,
                Obj::List(vec![
                    Obj::Float(1.5),
                    Obj::Str("linear".into()),
                    Obj::None,
                    Obj::Bool(true),
                ]),
            )]),
        ),
        ("list".into(), Obj::List(vec![tensor(Dtype::I64, &[1])])),
    ])
}

fn check_sample(ix: &TensorIndex, d: &[u8]) {
    let names: Vec<&str> = ix.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "list.0",
            "state_dict.first_stage_model.w",
            "state_dict.model.diffusion_model.out.2.bias",
            "state_dict.p",
        ]
    );
    let b = ix
        .get("state_dict.model.diffusion_model.out.2.bias")
        .unwrap();
    let at = b.data.offset as usize;
    assert_eq!(&d[at..at + 16], f32_bytes(&[1.0, 2.0, 3.0, 4.0]).as_slice());
    let p = ix.get("state_dict.p").unwrap();
    assert_eq!(p.dtype, Dtype::Bf16);
    assert_eq!(&d[p.data.offset as usize..][..4], &[1, 2, 3, 4]);
    assert_eq!(
        ix.get("state_dict.first_stage_model.w").unwrap().dtype,
        Dtype::F16
    );
    assert_eq!(value(ix, "global_step"), 470_000);
    assert_eq!(value(ix, "layers.768.0"), 1.5);
    assert_eq!(value(ix, "layers.768.1"), "linear");
    assert_eq!(value(ix, "layers.768.2"), serde_json::Value::Null);
    assert_eq!(value(ix, "layers.768.3"), true);
    assert!(ix.pickle.as_ref().unwrap().safe, "{:?}", ix.pickle);
    assert_ranges_sane(ix, d.len() as u64);
}

#[test]
fn generated_zip_archive_round_trips() {
    let d = torch_zip(&sample_root());
    let ix = parse_zip(&fake(), &d).unwrap();
    check_sample(&ix, &d);
    for t in &ix.tensors {
        assert_eq!(
            t.data.offset % 64,
            0,
            "{} not aligned like torch.save",
            t.name
        );
    }
}

#[test]
fn zip64_archive_round_trips() {
    let d = torch_zip64(&sample_root());
    // The end record defers to the ZIP64 record.
    let eocd = d.len() - 22;
    assert_eq!(&d[eocd..eocd + 4], b"PK\x05\x06");
    assert_eq!(&d[eocd + 16..eocd + 20], &[0xff; 4]);
    let ix = parse_zip(&fake(), &d).unwrap();
    check_sample(&ix, &d);
}

#[test]
fn unexpected_member_names_make_an_archive_unsafe() {
    let (pickle, _) = data_pickle(&Obj::Dict(vec![("a".into(), Obj::Int(1))]));
    let d = zip_of(&[
        ("archive/data.pkl", &pickle),
        ("archive/notes.txt", b"hello"),
    ]);
    let s = parse_zip(&fake(), &d).unwrap().pickle.unwrap();
    assert!(!s.safe);
    assert!(
        s.findings.iter().any(|f| f.contains("archive/notes.txt")),
        "{s:?}"
    );
}

#[test]
fn generated_legacy_file_round_trips() {
    let d = torch_legacy(&sample_root()).unwrap();
    let ix = parse_legacy(&fake(), &d).unwrap();
    assert_eq!(ix.format, Some(Format::PtLegacy));
    check_sample(&ix, &d);
}

#[test]
fn sparse_checkpoint_with_real_shapes_reads_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sd15.ckpt");
    // SD 1.x UNet input conv and the token embedding, zero-filled as holes.
    let root = checkpoint(
        &[
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                Dtype::F32,
                &[320, 4, 3, 3],
            ),
            (
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                Dtype::F32,
                &[49408, 768],
            ),
        ],
        1,
    );
    write_torch_zip(&path, &root).unwrap();
    let ix = read_zip(&path).unwrap();
    let t = ix
        .get("state_dict.cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
        .unwrap();
    assert_eq!(t.data.len, 49408 * 768 * 4);
    assert_eq!(value(&ix, "global_step"), 1);
}

#[test]
fn float8_tensors_use_rebuild_v3_which_a1111_forbids() {
    let root = Obj::OrderedDict(vec![(
        "w".into(),
        tensor_with(Dtype::F8E4m3, &[3], vec![1, 2, 3]),
    )]);
    let d = torch_zip(&root);
    let ix = parse_zip(&fake(), &d).unwrap();
    let t = ix.get("w").unwrap();
    assert_eq!((t.dtype, t.data.len), (Dtype::F8E4m3, 3));
    assert_eq!(&d[t.data.offset as usize..][..3], &[1, 2, 3]);
    let s = ix.pickle.unwrap();
    assert!(!s.safe);
    assert!(s.findings.iter().any(|f| f.contains("_rebuild_tensor_v3")));
}

/// An archive whose `data.pkl` is `{"t": tensor}` over storage `0` of `numel` floats, viewed
/// with the given offset, shape and stride; storage member holds `bytes` bytes.
fn view_archive(offset: i64, shape: &[i64], stride: &[i64], numel: i64, bytes: usize) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.raw(b"}").mark().str("t");
    w.global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark()
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(numel)
        .tuple()
        .binpersid();
    w.int(offset).mark();
    for s in shape {
        w.int(*s);
    }
    w.tuple().mark();
    for s in stride {
        w.int(*s);
    }
    w.tuple().bool(false);
    w.global("collections", "OrderedDict")
        .empty_tuple()
        .reduce();
    w.tuple().reduce().raw(b"u");
    let pickle = w.stop();
    let data = vec![0u8; bytes];
    zip_of(&[
        ("archive/data.pkl", &pickle),
        ("archive/data/0", &data),
        ("archive/version", b"3\n"),
    ])
}

#[test]
fn transposed_views_get_strides_and_span() {
    // x = arange(12).reshape(3, 4).t(): shape (4, 3), stride (1, 4), offset 0.
    let d = view_archive(0, &[4, 3], &[1, 4], 12, 48);
    let ix = parse_zip(&fake(), &d).unwrap();
    let t = ix.get("t").unwrap();
    assert_eq!(t.shape, [4, 3]);
    assert_eq!(t.data.strides.as_deref(), Some(&[1u64, 4][..]));
    assert_eq!(t.data.len, 48);
    // A row view x[1] = offset 4, shape (4,), stride (1,): contiguous.
    let d = view_archive(4, &[4], &[1], 12, 48);
    let ix = parse_zip(&fake(), &d).unwrap();
    let t = ix.get("t").unwrap();
    assert_eq!(t.data.strides, None);
    assert_eq!(t.data.len, 16);
    let member_start = ix.get("t").unwrap().data.offset - 16;
    assert_eq!(member_start % 64, 0);
}

#[test]
fn malicious_data_pkl_in_a_torch_archive_is_reported_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let pickle = os_system_pickle(&format!("touch {}", marker.display()));
    let d = zip_of(&[("archive/data.pkl", &pickle), ("archive/version", b"3\n")]);
    let path = dir.path().join("evil.ckpt");
    danlu_fixtures::torch::write(&path, &d).unwrap();
    let ix = read_zip(&path).unwrap();
    assert!(!marker.exists(), "the pickle's command ran");
    let s = ix.pickle.unwrap();
    assert!(!s.safe);
    assert_eq!(s.globals, ["os.system"]);
    assert!(ix.tensors.is_empty());
}

#[test]
fn an_extra_pickle_member_makes_an_archive_unsafe() {
    let (good, _) = data_pickle(&Obj::Dict(vec![("a".into(), Obj::Int(1))]));
    let evil = os_system_pickle("true");
    let d = zip_of(&[
        ("archive/data.pkl", &good),
        ("archive/extra.pkl", &evil),
        ("archive/version", b"3\n"),
    ]);
    let ix = parse_zip(&fake(), &d).unwrap();
    let s = ix.pickle.clone().unwrap();
    assert!(!s.safe);
    assert!(s.globals.contains(&"os.system".to_owned()));
    assert!(s.findings.iter().any(|f| f.contains("archive/extra.pkl")));
    assert_eq!(value(&ix, "a"), 1);
}

#[test]
fn archive_folder_name_follows_the_file() {
    let d = torch_zip_named(
        &Obj::OrderedDict(vec![("w".into(), tensor(Dtype::F32, &[2]))]),
        "model",
    );
    let ix = parse_zip(&fake(), &d).unwrap();
    assert!(ix.get("w").is_some());
}

// ----- bad input -----

#[test]
fn empty_truncated_and_random_inputs_are_clean_errors() {
    assert!(matches!(parse_zip(&fake(), b""), Err(Error::Empty { .. })));
    assert!(matches!(
        parse_legacy(&fake(), b""),
        Err(Error::Empty { .. })
    ));
    let good = torch_zip(&sample_root());
    for cut in (0..good.len()).step_by(7) {
        let r = parse_zip(&fake(), &good[..cut]);
        assert!(r.is_err(), "truncated at {cut} still opened");
    }
    let legacy = torch_legacy(&sample_root()).unwrap();
    for cut in (0..legacy.len()).step_by(5) {
        let r = parse_legacy(&fake(), &legacy[..cut]);
        assert!(r.is_err(), "legacy truncated at {cut} still opened");
    }
    let mut x = 0x1234_5678_9abc_def0_u64;
    for len in 0..400 {
        let mut data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(
            parse_legacy(&fake(), &data).is_err(),
            "random bytes opened as legacy"
        );
        if len >= 4 {
            data[..4].copy_from_slice(b"PK\x03\x04");
        }
        let _ = parse_zip(&fake(), &data);
        // Flip bytes of a real archive.
        let mut g = good.clone();
        let i = (x as usize) % g.len();
        g[i] ^= x as u8 | 1;
        let _ = parse_zip(&fake(), &g);
        let mut l = legacy.clone();
        let i = (x as usize) % l.len();
        l[i] ^= x as u8 | 1;
        let _ = parse_legacy(&fake(), &l);
    }
}

#[test]
fn pickle_bombs_in_data_pkl_are_errors() {
    for bomb in [nested_lists_pickle(50_000), huge_shape_pickle(1 << 20, 3)] {
        let d = zip_of(&[("archive/data.pkl", &bomb), ("archive/data/0", &[0u8; 4])]);
        match parse_zip(&fake(), &d) {
            Err(Error::Pickle { source, member, .. }) => {
                assert_eq!(member, "archive/data.pkl");
                assert!(
                    matches!(source, danlu_pickle::Error::Limit { .. }),
                    "{source}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn out_of_range_and_missing_storages_are_errors() {
    // Storage of 12 floats but only 40 bytes stored.
    let d = view_archive(0, &[12], &[1], 12, 40);
    let e = parse_zip(&fake(), &d).unwrap_err();
    assert!(matches!(e, Error::Storage { .. }), "{e}");
    // A view past the end of its storage.
    let d = view_archive(10, &[4], &[1], 12, 48);
    let e = parse_zip(&fake(), &d).unwrap_err();
    assert!(e.to_string().contains("outside its"), "{e}");
    // No data/0 member at all.
    let (pickle, _) = data_pickle(&Obj::OrderedDict(vec![(
        "w".into(),
        tensor(Dtype::F32, &[2]),
    )]));
    let d = zip_of(&[("archive/data.pkl", &pickle)]);
    let e = parse_zip(&fake(), &d).unwrap_err();
    assert!(e.to_string().contains("archive/data/0"), "{e}");
}

#[test]
fn overlapping_members_are_an_error() {
    let mut d = zip_of(&[
        ("archive/data.pkl", b"\x80\x02K\x01."),
        ("archive/version", b"3\n"),
    ]);
    // Point the second central entry at the first local header.
    let cd = d.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let second = cd + 46 + "archive/data.pkl".len();
    d[second + 42..second + 46].copy_from_slice(&0u32.to_le_bytes());
    let e = parse_zip(&fake(), &d).unwrap_err();
    assert!(matches!(e, Error::Zip { .. }), "{e}");
}

#[test]
fn big_endian_files_are_refused() {
    let (pickle, _) = data_pickle(&Obj::Dict(vec![]));
    let d = zip_of(&[("archive/data.pkl", &pickle), ("archive/byteorder", b"big")]);
    assert!(matches!(
        parse_zip(&fake(), &d),
        Err(Error::BigEndian { .. })
    ));
    let mut legacy = torch_legacy(&Obj::Dict(vec![])).unwrap();
    // sys_info's `little_endian: True` (NEWTRUE) becomes False (NEWFALSE).
    let at = legacy
        .windows(14)
        .position(|w| w == b"little_endian\x88")
        .unwrap();
    legacy[at + 13] = 0x89;
    assert!(matches!(
        parse_legacy(&fake(), &legacy),
        Err(Error::BigEndian { .. })
    ));
}

#[test]
fn legacy_storage_running_past_the_end_is_an_error() {
    let root = Obj::OrderedDict(vec![("w".into(), tensor(Dtype::F32, &[100]))]);
    let d = torch_legacy(&root).unwrap();
    let e = parse_legacy(&fake(), &d[..d.len() - 4]).unwrap_err();
    assert!(matches!(e, Error::Storage { .. }), "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");
}

#[test]
fn read_index_dispatches_to_the_torch_readers() {
    let ix = crate::read_index(danlu_fixtures::corpus::path("models/bad-hands-5.pt")).unwrap();
    assert_eq!(ix.format, Some(Format::Ckpt));
    let ix = crate::read_index(danlu_fixtures::corpus::path(
        "pickles/picklescan_data__pytorch_model.bin",
    ))
    .unwrap();
    assert_eq!(ix.format, Some(Format::PtLegacy));
}
