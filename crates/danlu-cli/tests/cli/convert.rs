//! `danlu convert`: JSON report, inspect agreement, refusal, a kill in the middle, and the
//! diffusers reference check (only with `DANLU_REFERENCE=1`).

use crate::util::{TestEnv, s, stderr, stdout};
use danlu_fixtures::models::{CheckpointOpts, Fill, sd1_checkpoint, write_safetensors};
use danlu_fixtures::torch::{PickleWriter, write, zip_of};
use danlu_types::Dtype;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The top level of `danlu convert --json` (`danlu_convert::ConvertReport`); nested objects are
/// kept as JSON values and checked where they matter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    source: String,
    source_format: Option<String>,
    source_sha256: String,
    source_bytes: u64,
    source_tensors: usize,
    pickle: Option<Pickle>,
    values_dropped: usize,
    output: String,
    output_bytes: u64,
    tensors: usize,
    dtype: String,
    dropped: Vec<serde_json::Value>,
    fixes: Vec<serde_json::Value>,
    ema: Option<serde_json::Value>,
    baked_vae: Option<serde_json::Value>,
    extracted_vae: Option<serde_json::Value>,
    metadata: BTreeMap<String, String>,
    max_buffer_bytes: u64,
    verify: Option<Verify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pickle {
    safe: bool,
    globals: Vec<String>,
    findings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Verify {
    tensors: usize,
    bytes: u64,
    rule: String,
    identity: Option<Identity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    source_kind: String,
    source_base: String,
    output_kind: String,
    output_base: String,
    agrees: bool,
}

#[test]
fn sd1_checkpoint_converts_and_inspect_agrees() {
    let env = TestEnv::new();
    // Real SD1 names and shapes (sparse zeros): the fingerprint `inspect` uses is the real one.
    let tensors = sd1_checkpoint(&CheckpointOpts::default());
    let src = env.path("sd1.safetensors");
    write_safetensors(&src, &tensors, &BTreeMap::new(), Fill::Sparse).unwrap();
    let out = env.path("sd1.pruned.safetensors");
    let o = env.run(&[
        "--json",
        "convert",
        s(&src),
        "-o",
        s(&out),
        "--prune",
        "--verify",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Report = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r.tensors, tensors.len());
    assert_eq!(r.dtype, "keep");
    assert_eq!(r.source_format.as_deref(), Some("safetensors"));
    let id = r.verify.unwrap().identity.unwrap();
    assert!(id.agrees);
    assert_eq!(
        (id.source_kind.as_str(), id.source_base.as_str()),
        ("checkpoint", "sd1")
    );
    assert_eq!(
        (id.output_kind.as_str(), id.output_base.as_str()),
        ("checkpoint", "sd1")
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), r.output_bytes);
    // Streaming: no tensor was held in memory but the repaired `position_ids` (all zeros in a
    // sparse file, so wrong values), 77 int64.
    assert_eq!(r.max_buffer_bytes, 77 * 8);
    assert_eq!(r.fixes.len(), 1);
    assert_eq!(r.fixes[0]["kind"], "position_ids");
}

#[test]
fn malicious_ckpt_reports_its_payload_and_never_runs_it() {
    let env = TestEnv::new();
    let marker = env.path("pwned");
    // {"w": tensor, "x": os.system("touch <marker>")}
    let mut w = PickleWriter::new(2);
    w.raw(b"}").mark().str("w");
    w.global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark()
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(2)
        .tuple()
        .binpersid();
    w.int(0)
        .mark()
        .int(2)
        .tuple()
        .mark()
        .int(1)
        .tuple()
        .bool(false);
    w.global("collections", "OrderedDict")
        .empty_tuple()
        .reduce();
    w.tuple().reduce();
    w.str("x")
        .global("os", "system")
        .mark()
        .str(&format!("touch {}", marker.display()))
        .tuple()
        .reduce();
    w.raw(b"u");
    let pkl = w.stop();
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let src = env.path("evil.ckpt");
    write(
        &src,
        &zip_of(&[("archive/data.pkl", &pkl), ("archive/data/0", &data)]),
    )
    .unwrap();

    let o = env.run(&["--json", "convert", s(&src), "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Report = serde_json::from_str(&stdout(&o)).unwrap();
    let p = r.pickle.unwrap();
    assert!(!p.safe);
    assert!(
        p.globals.contains(&"os.system".to_owned()),
        "{:?}",
        p.globals
    );
    assert!(
        p.findings.iter().any(|f| f.contains("os.system")),
        "{:?}",
        p.findings
    );
    assert_eq!(r.tensors, 1);
    assert!(!marker.exists(), "the payload ran");
    // The default output name, holding only the tensor.
    let bytes = std::fs::read(env.path("evil.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), ["w"]);
    assert_eq!(st.tensor("w").unwrap().data(), data.as_slice());
    // Human output says so too.
    let o = env.run(&["convert", s(&src), "-o", "again.safetensors"]);
    assert!(
        stdout(&o).contains("UNSAFE, nothing in it was run"),
        "{}",
        stdout(&o)
    );
    assert!(!marker.exists());
}

#[test]
fn existing_output_is_refused_with_exit_2() {
    let env = TestEnv::new();
    let t = [danlu_fixtures::models::FixtureTensor {
        name: "a".into(),
        dtype: Dtype::F32,
        shape: vec![2],
    }];
    let src = env.path("m.safetensors");
    write_safetensors(&src, &t, &BTreeMap::new(), Fill::Seeded(1)).unwrap();
    std::fs::write(env.path("taken.safetensors"), b"x").unwrap();
    let o = env.run(&["--json", "convert", s(&src), "-o", "taken.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).is_empty(),
        "nothing on stdout after a fatal error"
    );
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(env.path("taken.safetensors")).unwrap(), b"x");
    let o = env.run(&["convert", s(&src), "-o", s(&src)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("replace a source"), "{}", stderr(&o));
}

#[test]
fn a_kill_in_the_middle_leaves_nothing_under_the_final_name() {
    let env = TestEnv::new();
    let tensors = sd1_checkpoint(&CheckpointOpts::default());
    let src = env.path("big.safetensors");
    write_safetensors(&src, &tensors, &BTreeMap::new(), Fill::Sparse).unwrap();
    let out = env.path("out.safetensors");
    let mut child = env
        .cmd()
        .args(["convert", s(&src), "-o", s(&out)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the temporary output holds data, then kill the process outright.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        seen = std::fs::read_dir(env.dir.path())
            .unwrap()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".out.safetensors.")
                    && n.ends_with(".danlu-tmp")
                    && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
            });
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(seen, "the conversion finished before it could be killed");
    assert!(!status.success());
    assert!(!out.exists(), "a partial output under the final name");
}

/// The real-peer check: diffusers' `StableDiffusionPipeline.from_single_file` loads a converted
/// SD1.5-layout file and finds the same tensors as in the `.ckpt` it loads itself (f32 rounded
/// to f16 by PyTorch). Needs the Python environment of `scripts/reference/` (`DANLU_PYTHON`,
/// default `.venv/bin/python` at the repository root), about 10 GB of disk and 12 GB of memory;
/// runs only with `DANLU_REFERENCE=1`.
#[test]
fn diffusers_loads_a_converted_sd15_file() {
    if std::env::var_os("DANLU_REFERENCE").is_none_or(|v| v != "1") {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let python =
        std::env::var("DANLU_PYTHON").unwrap_or_else(|_| format!("{root}/.venv/bin/python"));
    let script = format!("{root}/scripts/reference/convert_diffusers_check.py");
    let env = TestEnv::new();
    let src = env.path("sd15.ckpt");
    let out = env.path("sd15.fp16.safetensors");
    let py = |args: &[&str]| {
        let o = std::process::Command::new(&python)
            .arg(&script)
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        println!("{}", stdout(&o));
        assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    py(&["--make-source", s(&src)]);
    let o = env.run(&[
        "convert",
        s(&src),
        "-o",
        s(&out),
        "--dtype",
        "f16",
        "--prune",
        "--verify",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = py(&["--source", s(&src), "--converted", s(&out)]);
    assert!(text.contains("all tensors match"), "{text}");
}

/// A small SD1 `.ckpt`: the real SD1 key names and shapes of every checkpoint tensor up to
/// 300k elements (enough for `inspect` to see an SD1 UNet, VAE and CLIP-L), f16 zeros.
fn small_sd1_state_dict() -> Vec<danlu_fixtures::models::FixtureTensor> {
    let opts = CheckpointOpts {
        dtype: Dtype::F16,
        ..CheckpointOpts::default()
    };
    sd1_checkpoint(&opts)
        .into_iter()
        .filter(|t| t.shape.iter().product::<u64>() <= 300_000)
        .collect()
}

fn spec_of(t: &[danlu_fixtures::models::FixtureTensor]) -> Vec<(&str, Dtype, &[u64])> {
    t.iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice()))
        .collect()
}

/// Every file under `dir` (skipping danlu's own `.danlu`), with its SHA-256.
fn hash_tree(dir: &std::path::Path) -> BTreeMap<String, String> {
    use sha2::Digest as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.file_name().is_some_and(|n| n == ".danlu") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let h = sha2::Sha256::digest(std::fs::read(&p).unwrap());
                out.insert(
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    format!("{h:x}"),
                );
            }
        }
    }
    out
}

/// `convert --all-ckpt --json`, the fields the test reads.
#[derive(Debug, Deserialize)]
struct AllReport {
    dry_run: bool,
    kinds: Vec<String>,
    items: Vec<AllItem>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct AllItem {
    source: String,
    format: Option<String>,
    kind: String,
    output: String,
    safe: Option<bool>,
    findings: Vec<String>,
    action: String,
    sidecars: Vec<String>,
    original_moved_to: Option<String>,
    error: Option<String>,
}

#[test]
fn all_ckpt_lists_then_converts_every_pickle_model_of_a_library() {
    use danlu_fixtures::models::{LoraStyle, sd1_lora};
    use danlu_fixtures::torch::{checkpoint, data_pickle, state_dict, write_torch_zip};
    let env = TestEnv::new();
    let root = env.path("webui");
    let ck = root.join("models/Stable-diffusion");
    let lora_dir = root.join("models/Lora");
    let emb_dir = root.join("embeddings");
    for d in [&ck, &lora_dir, &emb_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let tensors = small_sd1_state_dict();
    let spec = spec_of(&tensors);
    // A clean checkpoint with an A1111 preview beside it.
    write_torch_zip(ck.join("good.ckpt"), &checkpoint(&spec, 1000)).unwrap();
    std::fs::write(ck.join("good.preview.png"), b"\x89PNG preview").unwrap();
    // The same checkpoint whose top-level dict also gets `"x": os.system("touch MARKER")`.
    let marker = env.path("pwned");
    let (pkl, storages) = data_pickle(&checkpoint(&spec, 1000));
    let mut w = PickleWriter::new(2);
    w.raw(&pkl[2..pkl.len() - 1])
        .str("x")
        .global("os", "system")
        .mark()
        .str(&format!("touch {}", marker.display()))
        .tuple()
        .reduce()
        .raw(b"s");
    let evil = w.stop();
    let data: Vec<(String, Vec<u8>)> = storages
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let n: u64 = t.shape.iter().product();
            let size = t.dtype.size_in_bytes().unwrap();
            (format!("archive/data/{i}"), vec![0u8; (n * size) as usize])
        })
        .collect();
    let mut members: Vec<(&str, &[u8])> = vec![("archive/data.pkl", &evil)];
    members.extend(data.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    write(ck.join("evil.ckpt"), &zip_of(&members)).unwrap();
    // An A1111 `.pt` embedding (left alone) and a safetensors LoRA (not a pickle).
    // A1111 `modules/textual_inversion/textual_inversion.py`: `{"string_to_param": {"*": t}}`.
    write_torch_zip(
        emb_dir.join("style.pt"),
        &danlu_fixtures::torch::Obj::Dict(vec![
            (
                "string_to_param".into(),
                state_dict(&[("*", Dtype::F32, &[2, 768])]),
            ),
            (
                "name".into(),
                danlu_fixtures::torch::Obj::Str("style".into()),
            ),
        ]),
    )
    .unwrap();
    write_safetensors(
        lora_dir.join("detail.safetensors"),
        &sd1_lora(LoraStyle::Kohya, 4),
        &BTreeMap::new(),
        Fill::Seeded(3),
    )
    .unwrap();
    let r = s(&root);

    // The library sees the two checkpoints as SD1 ckpt files, the evil one as unsafe.
    let o = env.run(&["--json", "list", "--root", r]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(before.len(), 4, "{before:#?}");

    // Dry run: exactly the two checkpoints, nothing changed.
    let files_before = hash_tree(&root);
    let o = env.run(&["--json", "convert", "--all-ckpt", "--root", r]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dry: AllReport = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(dry.dry_run);
    assert!(dry.kinds.contains(&"checkpoint".to_owned()));
    assert!(!dry.kinds.contains(&"embedding".to_owned()));
    let names: Vec<&str> = dry.items.iter().map(|i| i.source.as_str()).collect();
    assert_eq!(names.len(), 2, "{dry:#?}");
    assert!(names[0].ends_with("models/Stable-diffusion/evil.ckpt"));
    assert!(names[1].ends_with("models/Stable-diffusion/good.ckpt"));
    for i in &dry.items {
        assert_eq!(i.action, "convert");
        assert_eq!(i.kind, "checkpoint");
        assert_eq!(i.format.as_deref(), Some("ckpt"));
        assert_eq!(i.output, i.source.replace(".ckpt", ".safetensors"));
    }
    assert_eq!(dry.items[0].safe, Some(false));
    assert!(
        dry.items[0]
            .findings
            .iter()
            .any(|f| f.contains("os.system")),
        "{:?}",
        dry.items[0].findings
    );
    assert_eq!(dry.items[1].safe, Some(true));
    assert!(dry.items[1].sidecars[0].ends_with("good.preview.png"));
    assert_eq!(hash_tree(&root), files_before, "a dry run changes nothing");
    let text = stdout(&env.run(&["convert", "--all-ckpt", "--root", r]));
    assert!(text.contains("run again with `--yes`"), "{text}");
    assert_eq!(hash_tree(&root), files_before);
    assert!(!marker.exists(), "the payload ran");

    // `--yes`: both converted, originals kept out of the UI's sight, sidecar still beside.
    let o = env.run(&["--json", "convert", "--all-ckpt", "--root", r, "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let done: AllReport = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(!done.dry_run);
    for i in &done.items {
        assert_eq!(i.action, "converted", "{i:?}");
        assert!(std::path::Path::new(&i.output).is_file());
        assert!(!std::path::Path::new(&i.source).exists());
    }
    assert!(!marker.exists(), "the payload ran");
    for name in ["good.ckpt", "evil.ckpt"] {
        let kept = root
            .join(".danlu/converted-originals/models/Stable-diffusion")
            .join(name);
        assert_eq!(
            done.items
                .iter()
                .filter(|i| i.original_moved_to.as_deref() == Some(s(&kept)))
                .count(),
            1
        );
        let rel = format!("models/Stable-diffusion/{name}");
        assert_eq!(
            files_before[&rel],
            hash_tree(&root.join(".danlu/converted-originals/models/Stable-diffusion"))[name],
            "the original is kept byte for byte"
        );
    }
    assert!(ck.join("good.preview.png").is_file());
    assert!(ck.join("good.safetensors").is_file());
    // The evil file's output holds the tensors only.
    let bytes = std::fs::read(ck.join("evil.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), tensors.len());
    // The embedding and the LoRA are untouched.
    let after = hash_tree(&root);
    for rel in ["embeddings/style.pt", "models/Lora/detail.safetensors"] {
        assert_eq!(after[rel], files_before[rel], "{rel}");
    }

    // The library now shows two safetensors checkpoints and no pickle.
    let o = env.run(&["--json", "list", "--root", r, "--kind", "checkpoint"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    let mut paths: Vec<&str> = list.iter().map(|m| m["path"].as_str().unwrap()).collect();
    paths.sort_unstable();
    assert_eq!(paths.len(), 2, "{list:#?}");
    assert!(paths[0].ends_with("Stable-diffusion/evil.safetensors"));
    assert!(paths[1].ends_with("Stable-diffusion/good.safetensors"));
    assert!(list.iter().all(|m| m["format"] == "safetensors"));
    assert!(list.iter().all(|m| m["base"] == "sd1"));
    let o = env.run(&["--json", "list", "--root", r]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    // The only pickle left is the embedding.
    let pickles: Vec<&serde_json::Value> = all.iter().filter(|m| m["format"] == "ckpt").collect();
    assert_eq!(pickles.len(), 1, "{all:#?}");
    assert_eq!(pickles[0]["kind"], "embedding");
    assert_eq!(all.len(), 4);

    // A second run finds nothing more to do.
    let o = env.run(&["--json", "convert", "--all-ckpt", "--root", r, "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again: AllReport = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(again.items.is_empty(), "{again:#?}");
}

#[test]
fn convert_needs_in_or_all_ckpt() {
    let env = TestEnv::new();
    let o = env.run(&["convert"]);
    assert_eq!(o.status.code(), Some(2));
    let o = env.run(&["convert", "--yes", "x.ckpt"]);
    assert_eq!(o.status.code(), Some(2), "`--yes` needs `--all-ckpt`");
    let o = env.run(&["convert", "--all-ckpt", "x.ckpt"]);
    assert_eq!(o.status.code(), Some(2), "`--all-ckpt` takes no `IN`");
}

#[test]
fn all_ckpt_skips_a_pickle_whose_safetensors_name_is_taken() {
    use danlu_fixtures::torch::{checkpoint, write_torch_zip};
    let env = TestEnv::new();
    let ck = env.path("webui/models/Stable-diffusion");
    std::fs::create_dir_all(&ck).unwrap();
    let tensors = small_sd1_state_dict();
    write_torch_zip(ck.join("m.ckpt"), &checkpoint(&spec_of(&tensors), 1)).unwrap();
    std::fs::write(ck.join("m.safetensors"), b"someone else's file").unwrap();
    let r = env.path("webui");
    let o = env.run(&["--json", "convert", "--all-ckpt", "--root", s(&r), "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rep: AllReport = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(rep.items.len(), 1, "{rep:#?}");
    assert_eq!(rep.items[0].action, "skipped");
    assert!(ck.join("m.ckpt").is_file(), "the original stays");
    assert_eq!(
        std::fs::read(ck.join("m.safetensors")).unwrap(),
        b"someone else's file"
    );
    let text = stdout(&env.run(&["convert", "--all-ckpt", "--root", s(&r)]));
    assert!(text.contains("already exists"), "{text}");
}
