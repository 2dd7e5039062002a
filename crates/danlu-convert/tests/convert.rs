//! Conversions of generated checkpoints, read back with the reference `safetensors` crate.

// Test harness: a failed expectation is a test failure, and fixtures are written directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

use danlu_convert::{ConvertOptions, DropReason, Error, FixKind, TargetDtype, convert};
use danlu_fixtures::models::{
    CheckpointOpts, Fill, FixtureTensor, sd1_checkpoint, sdxl_checkpoint, write_safetensors,
};
use danlu_fixtures::torch::{Obj, PickleWriter, tensor_with, torch_zip, write, zip_of};
use danlu_types::{Dtype, NoProgress};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::Path;

/// Deterministic pseudo-random f32 values (normal-ish magnitudes, both signs) as bytes.
fn seeded_f32(n: u64, seed: u64) -> Vec<u8> {
    let mut s = seed.max(1);
    (0..n)
        .flat_map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) as f32 * 0.2;
            x.to_le_bytes()
        })
        .collect()
}

fn bytes_for(t: &FixtureTensor, seed: u64) -> Vec<u8> {
    match t.dtype {
        Dtype::F32 => seeded_f32(t.numel(), seed),
        Dtype::I64 => (0..t.numel())
            .flat_map(|k| (k as i64).to_le_bytes())
            .collect(),
        Dtype::I32 => (0..t.numel())
            .flat_map(|k| (k as i32).to_le_bytes())
            .collect(),
        d => vec![7u8; (t.numel() * d.size_in_bytes().unwrap()) as usize],
    }
}

/// Real key names of a layout, with every dimension capped at 3 so the data stays small.
fn small(tensors: Vec<FixtureTensor>) -> Vec<FixtureTensor> {
    tensors
        .into_iter()
        .map(|t| FixtureTensor {
            shape: t.shape.iter().map(|&d| d.min(3)).collect(),
            ..t
        })
        .collect()
}

/// A Lightning-style `.ckpt`: `{"state_dict": {...}, "global_step": 7, "optimizer_states":
/// [{"exp_avg": tensor}]}` holding `tensors` with seeded data. Returns each tensor's bytes.
fn write_ckpt(path: &Path, tensors: &[FixtureTensor]) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    let items = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let b = bytes_for(t, i as u64 + 1);
            data.insert(t.name.clone(), b.clone());
            (t.name.clone(), tensor_with(t.dtype, &t.shape, b))
        })
        .collect();
    let root = Obj::Dict(vec![
        ("state_dict".into(), Obj::OrderedDict(items)),
        ("global_step".into(), Obj::Int(7)),
        (
            "optimizer_states".into(),
            Obj::List(vec![Obj::Dict(vec![(
                "exp_avg".into(),
                tensor_with(Dtype::F32, &[2], seeded_f32(2, 99)),
            )])]),
        ),
    ]);
    write(path, &torch_zip(&root)).unwrap();
    data
}

fn f16_of(b: &[u8]) -> Vec<u8> {
    b.chunks_exact(4)
        .flat_map(|c| {
            half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap()))
                .to_bits()
                .to_le_bytes()
        })
        .collect()
}

fn metadata(bytes: &[u8]) -> std::collections::HashMap<String, String> {
    let (_, m) = SafeTensors::read_metadata(bytes).unwrap();
    m.metadata().clone().unwrap()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn sd1_small() -> Vec<FixtureTensor> {
    let mut t = small(sd1_checkpoint(&CheckpointOpts::full()));
    // A position_ids stored as floats, as some merges leave it.
    for x in &mut t {
        if x.name.ends_with("position_ids") {
            x.dtype = Dtype::F32;
            x.shape = vec![1, 77];
        }
    }
    t
}

#[test]
fn fp32_ckpt_with_ema_and_vae_becomes_pruned_f16_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.ckpt");
    let tensors = sd1_small();
    let data = write_ckpt(&src, &tensors);
    let out = dir.path().join("model.safetensors");
    let opts = ConvertOptions {
        dtype: TargetDtype::F16,
        prune: true,
        verify: true,
        ..Default::default()
    };
    let report = convert(&src, &out, &opts, &NoProgress).unwrap();

    let bytes = read(&out);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    assert!(
        names.iter().all(|n| !n.starts_with("model_ema")),
        "EMA kept"
    );
    assert!(names.iter().all(|n| !n.starts_with("state_dict")));
    assert!(
        names.iter().all(|n| !n.contains("exp_avg")),
        "optimizer kept"
    );
    let ema = tensors
        .iter()
        .filter(|t| t.name.starts_with("model_ema."))
        .count();
    assert_eq!(names.len(), tensors.len() - ema);
    assert_eq!(report.tensors, names.len());
    // Float weights became f16 as `Tensor.half()` rounds them.
    let k = "model.diffusion_model.input_blocks.0.0.weight";
    let w = st.tensor(k).unwrap();
    assert_eq!(w.dtype(), safetensors::Dtype::F16);
    assert_eq!(w.data(), f16_of(&data[k]).as_slice());
    let vae = st
        .tensor("first_stage_model.decoder.conv_out.weight")
        .unwrap();
    assert_eq!(
        vae.data(),
        f16_of(&data["first_stage_model.decoder.conv_out.weight"])
    );
    // The float position_ids became int64 0..77.
    let pid = st
        .tensor("cond_stage_model.transformer.text_model.embeddings.position_ids")
        .unwrap();
    assert_eq!(pid.dtype(), safetensors::Dtype::I64);
    assert_eq!(pid.shape(), [1, 77]);
    let want: Vec<u8> = (0..77i64).flat_map(i64::to_le_bytes).collect();
    assert_eq!(pid.data(), want.as_slice());
    assert!(report.fixes.iter().any(|f| f.kind == FixKind::PositionIds));
    // The report names what was dropped.
    let by = |r| report.dropped.iter().find(|d| d.reason == r).unwrap();
    assert_eq!(by(DropReason::Ema).tensors, ema);
    assert_eq!(by(DropReason::OutsideStateDict).tensors, 1);
    assert_eq!(report.values_dropped, 1, "global_step");
    assert!(report.pickle.as_ref().unwrap().safe);
    // Provenance names the source and its hash.
    let md = metadata(&bytes);
    let prov: serde_json::Value = serde_json::from_str(&md["danlu.convert"]).unwrap();
    assert_eq!(prov["source"], "model.ckpt");
    assert_eq!(prov["dtype"], "f16");
    assert_eq!(prov["prune"], true);
    let sha = report.source_sha256.clone();
    assert_eq!(prov["source_sha256"], sha);
    assert_eq!(sha.len(), 64);
    assert_eq!(report.verify.as_ref().unwrap().tensors, names.len());
    assert_eq!(report.output_bytes, bytes.len() as u64);
    assert_eq!(
        report.max_buffer_bytes,
        77 * 8,
        "only the rewritten position_ids"
    );
}

#[test]
fn use_ema_puts_the_ema_weights_in_place_of_the_unet() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model.ckpt");
    let data = write_ckpt(&src, &sd1_small());
    let out = dir.path().join("ema.safetensors");
    let opts = ConvertOptions {
        use_ema: true,
        verify: true,
        ..Default::default()
    };
    let report = convert(&src, &out, &opts, &NoProgress).unwrap();
    let bytes = read(&out);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // LDM `LitEma`: the EMA copy of `model.diffusion_model.out.2.bias` is
    // `model_ema.diffusion_modelout2bias`.
    for (live, ema) in [
        (
            "model.diffusion_model.out.2.bias",
            "model_ema.diffusion_modelout2bias",
        ),
        (
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
            "model_ema.diffusion_modelinput_blocks11transformer_blocks0attn1to_qweight",
        ),
    ] {
        assert_ne!(data[live], data[ema], "fixture data differ");
        assert_eq!(
            st.tensor(live).unwrap().data(),
            data[ema].as_slice(),
            "{live}"
        );
    }
    let swap = report.ema.unwrap();
    assert_eq!(swap.missing, 0);
    assert!(swap.replaced > 300, "{}", swap.replaced);
    assert!(st.names().iter().all(|n| !n.starts_with("model_ema")));
    // Without EMA weights the option is refused and nothing is written.
    let plain = dir.path().join("plain.safetensors");
    let err = convert(&out, &plain, &opts, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("no EMA weights"), "{err}");
    assert!(!plain.exists());
}

#[test]
fn sdxl_layout_keeps_its_names_and_gets_position_ids_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = small(sdxl_checkpoint(&CheckpointOpts::default()));
    // Older transformers saved this int64 buffer; zero-filled here, so its values are wrong.
    let bad = "conditioner.embedders.0.transformer.text_model.embeddings.position_ids".to_owned();
    tensors.push(FixtureTensor {
        name: bad.clone(),
        dtype: Dtype::I64,
        shape: vec![1, 77],
    });
    let src = dir.path().join("xl.safetensors");
    write_safetensors(
        &src,
        &tensors,
        &BTreeMap::from([("k".into(), "v".into())]),
        Fill::Zeros,
    )
    .unwrap();
    let out = dir.path().join("xl.fp16.safetensors");
    let opts = ConvertOptions {
        dtype: TargetDtype::F16,
        verify: true,
        ..Default::default()
    };
    let report = convert(&src, &out, &opts, &NoProgress).unwrap();
    let bytes = read(&out);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut want: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    want.sort();
    let mut got: Vec<&str> = st.names();
    got.sort();
    assert_eq!(got, want);
    let fix = report
        .fixes
        .iter()
        .find(|f| f.kind == FixKind::PositionIds)
        .unwrap();
    assert_eq!(fix.examples, std::slice::from_ref(&bad));
    assert!(fix.detail.contains("at index 1"), "{}", fix.detail);
    let pid = st.tensor(&bad).unwrap();
    assert_eq!(pid.data()[8], 1);
    // The source's metadata is kept beside the provenance.
    let md = metadata(&bytes);
    assert_eq!(md["k"], "v");
    assert!(md.contains_key("danlu.convert"));
    let f16 = st
        .tensor("conditioner.embedders.1.model.text_projection")
        .unwrap();
    assert_eq!(f16.dtype(), safetensors::Dtype::F16);
}

#[test]
fn round_trip_f32_to_f16_to_f32_and_keep_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = small(sd1_checkpoint(&CheckpointOpts {
        dtype: Dtype::F32,
        ..Default::default()
    }));
    let src = dir.path().join("a.ckpt");
    let data = write_ckpt(&src, &tensors);
    let keep = dir.path().join("keep.safetensors");
    convert(&src, &keep, &ConvertOptions::default(), &NoProgress).unwrap();
    let half = dir.path().join("half.safetensors");
    let opts = |dtype| ConvertOptions {
        dtype,
        verify: true,
        ..Default::default()
    };
    convert(&keep, &half, &opts(TargetDtype::F16), &NoProgress).unwrap();
    let back = dir.path().join("back.safetensors");
    convert(&half, &back, &opts(TargetDtype::F32), &NoProgress).unwrap();
    let (kb, hb, bb) = (read(&keep), read(&half), read(&back));
    let (k, h, b) = (
        SafeTensors::deserialize(&kb).unwrap(),
        SafeTensors::deserialize(&hb).unwrap(),
        SafeTensors::deserialize(&bb).unwrap(),
    );
    let name = "model.diffusion_model.out.2.weight";
    assert_eq!(
        k.tensor(name).unwrap().data(),
        data[name].as_slice(),
        "keep is exact"
    );
    // f16 -> f32 is exact: every value of `back` is the f16 value widened.
    let widened: Vec<u8> = h
        .tensor(name)
        .unwrap()
        .data()
        .chunks_exact(2)
        .flat_map(|c| {
            half::f16::from_le_bytes([c[0], c[1]])
                .to_f32()
                .to_le_bytes()
        })
        .collect();
    assert_eq!(b.tensor(name).unwrap().data(), widened.as_slice());
    // And converting `back` to f16 again gives the same bits (the round-trip rule).
    let again = dir.path().join("again.safetensors");
    convert(&back, &again, &opts(TargetDtype::F16), &NoProgress).unwrap();
    let ab = read(&again);
    let a = SafeTensors::deserialize(&ab).unwrap();
    assert_eq!(
        a.tensor(name).unwrap().data(),
        h.tensor(name).unwrap().data()
    );
}

#[test]
fn bake_and_extract_a_vae() {
    let dir = tempfile::tempdir().unwrap();
    let all = small(sd1_checkpoint(&CheckpointOpts::default()));
    let (vae, model): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|t| t.name.starts_with("first_stage_model."));
    let no_vae = dir.path().join("novae.safetensors");
    write_safetensors(&no_vae, &model, &BTreeMap::new(), Fill::Seeded(1)).unwrap();
    // A standalone VAE as A1111 ships them: LDM names without the prefix, plus `loss.*`.
    let mut vae_file: Vec<FixtureTensor> = vae
        .iter()
        .map(|t| FixtureTensor {
            name: t.name.trim_start_matches("first_stage_model.").into(),
            ..t.clone()
        })
        .collect();
    vae_file.push(FixtureTensor {
        name: "loss.logvar".into(),
        dtype: Dtype::F32,
        shape: vec![],
    });
    let vae_path = dir.path().join("vae.safetensors");
    write_safetensors(&vae_path, &vae_file, &BTreeMap::new(), Fill::Seeded(2)).unwrap();

    let baked = dir.path().join("baked.safetensors");
    let opts = ConvertOptions {
        bake_vae: Some(vae_path.clone()),
        verify: true,
        ..Default::default()
    };
    let report = convert(&no_vae, &baked, &opts, &NoProgress).unwrap();
    let b = report.baked_vae.unwrap();
    assert_eq!((b.added, b.replaced), (vae.len(), 0));
    let vb = read(&vae_path);
    let v = SafeTensors::deserialize(&vb).unwrap();
    let bb = read(&baked);
    let st = SafeTensors::deserialize(&bb).unwrap();
    assert!(st.tensor("first_stage_model.loss.logvar").is_err());
    assert_eq!(
        st.tensor("first_stage_model.decoder.conv_out.weight")
            .unwrap()
            .data(),
        v.tensor("decoder.conv_out.weight").unwrap().data()
    );
    assert_eq!(st.names().len(), model.len() + vae.len());

    // Extracting it again gives the same tensors under the VAE's own names.
    let rest = dir.path().join("rest.safetensors");
    let out_vae = dir.path().join("vae.out.safetensors");
    let opts = ConvertOptions {
        extract_vae: Some(out_vae.clone()),
        verify: true,
        ..Default::default()
    };
    let report = convert(&baked, &rest, &opts, &NoProgress).unwrap();
    assert_eq!(report.extracted_vae.unwrap().tensors, vae.len());
    let ob = read(&out_vae);
    let o = SafeTensors::deserialize(&ob).unwrap();
    assert_eq!(o.names().len(), vae.len());
    for n in o.names() {
        assert_eq!(
            o.tensor(n).unwrap().data(),
            v.tensor(n).unwrap().data(),
            "{n}"
        );
    }
    // A diffusers-layout VAE is refused with a clear error, and nothing is written.
    let dvae = dir.path().join("dvae.safetensors");
    write_safetensors(
        &dvae,
        &[FixtureTensor {
            name: "encoder.down_blocks.0.resnets.0.conv1.weight".into(),
            dtype: Dtype::F32,
            shape: vec![2],
        }],
        &BTreeMap::new(),
        Fill::Zeros,
    )
    .unwrap();
    let never = dir.path().join("never.safetensors");
    let opts = ConvertOptions {
        bake_vae: Some(dvae),
        ..Default::default()
    };
    let err = convert(&no_vae, &never, &opts, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("diffusers-layout"), "{err}");
    assert!(!never.exists());
}

/// A pickle holding `{"w": <f32 view of shape [3, 2], strides [1, 3] over a 6-element
/// storage>}` (a transposed 2x3 matrix, as `t.T` pickles), in a zip with its storage.
fn strided_ckpt(storage: &[f32]) -> Vec<u8> {
    let mut w = PickleWriter::new(2);
    w.raw(b"}").mark().str("w");
    w.global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark()
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(6)
        .tuple()
        .binpersid();
    w.int(0)
        .mark()
        .int(3)
        .int(2)
        .tuple()
        .mark()
        .int(1)
        .int(3)
        .tuple();
    w.bool(false)
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce();
    w.tuple().reduce();
    w.raw(b"u");
    let pkl = w.stop();
    let data: Vec<u8> = storage.iter().flat_map(|x| x.to_le_bytes()).collect();
    zip_of(&[
        ("archive/data.pkl", &pkl),
        ("archive/data/0", &data),
        ("archive/version", b"3\n"),
    ])
}

#[test]
fn strided_views_are_written_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("t.ckpt");
    write(&src, &strided_ckpt(&[0., 1., 2., 3., 4., 5.])).unwrap();
    let out = dir.path().join("t.safetensors");
    let opts = ConvertOptions {
        verify: true,
        ..Default::default()
    };
    let report = convert(&src, &out, &opts, &NoProgress).unwrap();
    let b = read(&out);
    let st = SafeTensors::deserialize(&b).unwrap();
    let w = st.tensor("w").unwrap();
    assert_eq!(w.shape(), [3, 2]);
    let vals: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // torch: torch.arange(6.).reshape(2, 3).T == [[0, 3], [1, 4], [2, 5]]
    assert_eq!(vals, [0., 3., 1., 4., 2., 5.]);
    assert!(report.max_buffer_bytes >= 24);
}

#[test]
fn malicious_ckpt_is_converted_without_running_its_payload() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    // {"state_dict": {...}} with one more item whose unpickling calls
    // os.system("touch <marker>"): the root dict gets `"payload": os.system(...)` by SETITEM.
    let root = Obj::Dict(vec![(
        "state_dict".into(),
        Obj::OrderedDict(vec![(
            "model.diffusion_model.out.2.bias".into(),
            tensor_with(Dtype::F32, &[4], seeded_f32(4, 5)),
        )]),
    )]);
    let (mut pkl, storages) = danlu_fixtures::torch::data_pickle(&root);
    assert_eq!(pkl.pop(), Some(b'.'));
    let mut w = PickleWriter::new(2);
    w.str("payload")
        .global("os", "system")
        .mark()
        .str(&format!("touch {}", marker.display()))
        .tuple()
        .reduce();
    let tail = w.stop();
    // Skip the PROTO header of the second writer, keep its opcodes, SETITEM, then STOP.
    pkl.extend_from_slice(&tail[2..tail.len() - 1]);
    pkl.extend_from_slice(b"s.");
    let data = match &storages[0].data {
        danlu_fixtures::torch::TensorData::Bytes(b) => b.clone(),
        danlu_fixtures::torch::TensorData::Zeros => unreachable!(),
    };
    let src = dir.path().join("evil.ckpt");
    write(
        &src,
        &zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", &data)]),
    )
    .unwrap();
    let out = dir.path().join("evil.safetensors");
    let report = convert(&src, &out, &ConvertOptions::default(), &NoProgress).unwrap();
    let pickle = report.pickle.unwrap();
    assert!(!pickle.safe);
    assert!(
        pickle.globals.iter().any(|g| g == "os.system"),
        "{:?}",
        pickle.globals
    );
    let b = read(&out);
    let st = SafeTensors::deserialize(&b).unwrap();
    assert_eq!(st.names(), ["model.diffusion_model.out.2.bias"]);
    assert_eq!(
        st.tensor("model.diffusion_model.out.2.bias")
            .unwrap()
            .data(),
        data.as_slice()
    );
    assert!(!marker.exists(), "the payload ran");
}

#[test]
fn module_and_state_dict_prefixes_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let t = |n: &str| FixtureTensor {
        name: n.into(),
        dtype: Dtype::F32,
        shape: vec![2],
    };
    let src = dir.path().join("p.safetensors");
    write_safetensors(
        &src,
        &[
            t("module.model.diffusion_model.out.2.bias"),
            t("state_dict.cond_stage_model.x"),
        ],
        &BTreeMap::new(),
        Fill::Seeded(3),
    )
    .unwrap();
    let out = dir.path().join("p2.safetensors");
    let report = convert(&src, &out, &ConvertOptions::default(), &NoProgress).unwrap();
    let b = read(&out);
    let st = SafeTensors::deserialize(&b).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        ["cond_stage_model.x", "model.diffusion_model.out.2.bias"]
    );
    let kinds: Vec<FixKind> = report.fixes.iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&FixKind::ModulePrefix) && kinds.contains(&FixKind::StateDictPrefix));
}

#[test]
fn output_never_replaces_the_source_or_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.safetensors");
    let t = [FixtureTensor {
        name: "a".into(),
        dtype: Dtype::F32,
        shape: vec![2],
    }];
    write_safetensors(&src, &t, &BTreeMap::new(), Fill::Seeded(1)).unwrap();
    let before = read(&src);
    let opts = ConvertOptions::default();
    let err = convert(&src, &src, &opts, &NoProgress).unwrap_err();
    assert!(matches!(err, Error::Output { .. }), "{err}");
    let other = dir.path().join("other.bin");
    std::fs::write(&other, b"keep me").unwrap();
    let err = convert(&src, &other, &opts, &NoProgress).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(read(&src), before);
    assert_eq!(read(&other), b"keep me");
}
