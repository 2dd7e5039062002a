//! `danlu inspect`: identification, JSON contract, exit codes, bad input, safety.

use crate::util::{TestEnv, corpus, s, stderr, stdout};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The `inspect --json` object of `contracts.md`, plus danlu's documented extensions
/// (`warnings`, `evidence`). Unknown fields fail the test: schema drift is caught here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Report {
    path: String,
    kind: Option<String>,
    base: Option<String>,
    #[serde(default)]
    variant: Option<Option<String>>,
    format: Option<String>,
    #[serde(default)]
    subformat: Option<Option<String>>,
    components: Option<Components>,
    dtype: Option<String>,
    parameters: Option<u64>,
    folders: Option<Folders>,
    hashes: Option<Hashes>,
    safety: Option<Safety>,
    vectors: Option<u64>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    evidence: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Components {
    unet: bool,
    vae: bool,
    text_encoder: bool,
    ema: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Folders {
    a1111: Option<String>,
    comfyui: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hashes {
    sha256: String,
    autov1: String,
    autov2: String,
    autov3: String,
    blake3: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Safety {
    safe: bool,
    globals: Vec<String>,
    findings: Vec<String>,
}

fn one(env: &TestEnv, args: &[&str]) -> (Report, std::process::Output) {
    let out = env.run(args);
    let r: Report = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}\nstderr: {}", stdout(&out), stderr(&out)));
    (r, out)
}

/// The raw JSON object, to tell a `null` field from a missing one.
fn raw(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap()
}

#[test]
fn help_lists_inspect() {
    let env = TestEnv::new();
    let out = env.run(&["--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("inspect"), "{}", stdout(&out));
}

#[test]
fn easynegative_is_an_sd1_safetensors_embedding_with_eight_vectors() {
    let env = TestEnv::new();
    let p = corpus("models/EasyNegative.safetensors");
    let (r, out) = one(&env, &["inspect", "--json", s(&p)]);
    assert!(out.status.success());
    assert_eq!(r.kind.as_deref(), Some("embedding"));
    assert_eq!(r.base.as_deref(), Some("sd1"));
    assert_eq!(r.format.as_deref(), Some("safetensors"));
    assert_eq!(r.subformat, Some(Some("safetensors".into())));
    assert_eq!(r.vectors, Some(8));
    assert_eq!(r.parameters, Some(8 * 768));
    assert_eq!(r.dtype.as_deref(), Some("f32"));
    let f = r.folders.expect("folders");
    assert_eq!(f.a1111.as_deref(), Some("embeddings"));
    assert_eq!(f.comfyui.as_deref(), Some("models/embeddings"));
    assert!(
        r.safety.is_none(),
        "safetensors has no pickle safety report"
    );
}

#[test]
fn a1111_pt_embedding_reports_safe_pickle() {
    let env = TestEnv::new();
    let p = corpus("models/bad-hands-5.pt");
    let (r, out) = one(&env, &["inspect", "--json", s(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r.kind.as_deref(), Some("embedding"));
    assert_eq!(r.subformat, Some(Some("a1111_pt".into())));
    assert_eq!(r.vectors, Some(2));
    assert_eq!(r.format.as_deref(), Some("ckpt"));
    let safety = r.safety.expect("pickles carry a safety report");
    assert!(safety.safe, "{safety:?}");
    assert!(
        safety
            .globals
            .iter()
            .any(|g| g == "torch._utils._rebuild_tensor_v2"),
        "{safety:?}"
    );
}

#[test]
fn hashes_match_an_independent_sha256() {
    use sha2::Digest;
    let env = TestEnv::new();
    let p = corpus("models/EasyNegative.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let full = hex::encode(sha2::Sha256::digest(&bytes));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let payload = hex::encode(sha2::Sha256::digest(&bytes[8 + n..]));
    let (r, _) = one(&env, &["inspect", "--json", "--hash", s(&p)]);
    let h = r.hashes.expect("hashes with --hash");
    assert_eq!(h.sha256, full);
    assert_eq!(h.autov2, full[..10]);
    assert_eq!(h.autov3, payload[..12]);
    assert_eq!(h.blake3, blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(h.autov1.len(), 8);
}

#[test]
fn malicious_pickle_is_unsafe_and_its_payload_never_runs() {
    let env = TestEnv::new();
    let p = corpus("pickles/picklescan_data__malicious1_v4.pkl");
    let out = env.run(&["inspect", "--json", s(&p)]);
    let text = stdout(&out);
    // A bare pickle is not a model container; either it is reported unsafe or it is an error,
    // never executed. The zip-wrapped form below must be reported with its globals.
    assert!(!text.is_empty());
    let zip = corpus("pickles/picklescan_data__malicious1.zip");
    let out = env.run(&["inspect", "--json", s(&zip)]);
    let r: Report = serde_json::from_str(&stdout(&out)).unwrap();
    if let Some(safety) = r.safety {
        assert!(!safety.safe);
        assert!(!safety.findings.is_empty(), "{safety:?}");
        assert!(
            safety.globals.iter().any(|g| g.contains("eval")),
            "{safety:?}"
        );
    } else {
        assert!(r.error.is_some(), "{r:?}");
    }
}

#[test]
fn bad_files_are_reported_one_line_each_and_exit_1_while_good_ones_still_report() {
    let env = TestEnv::new();
    std::fs::write(env.path("empty.safetensors"), b"").unwrap();
    std::fs::write(env.path("random.safetensors"), [0x5au8; 333]).unwrap();
    let mut header = Vec::new();
    header.extend_from_slice(&(1_000_000u64).to_le_bytes());
    header.extend_from_slice(b"{\"a\":");
    std::fs::write(env.path("past_end.safetensors"), &header).unwrap();
    let good = corpus("models/EasyNegative.safetensors");
    std::fs::copy(&good, env.path("good.safetensors")).unwrap();
    let out = env.run(&["inspect", "--json", s(env.dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let reports: Vec<Report> = serde_json::from_str(&stdout(&out)).unwrap();
    let by_name: BTreeMap<String, &Report> = reports
        .iter()
        .map(|r| (r.path.rsplit('/').next().unwrap().to_owned(), r))
        .collect();
    for bad in [
        "empty.safetensors",
        "random.safetensors",
        "past_end.safetensors",
    ] {
        let r = by_name[bad];
        let err = r
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{bad} should fail: {r:?}"));
        assert!(err.contains(bad), "error names the file: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert!(r.kind.is_none());
    }
    assert_eq!(
        by_name["good.safetensors"].kind.as_deref(),
        Some("embedding")
    );
}

#[test]
fn human_output_says_what_and_where() {
    let env = TestEnv::new();
    let p = corpus("models/EasyNegative.safetensors");
    let out = env.run(&["inspect", s(&p)]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("embedding (sd1"), "{text}");
    assert!(text.contains("`embeddings`"), "{text}");
    assert!(text.contains("`models/embeddings`"), "{text}");
}

#[test]
fn missing_path_is_an_error_naming_it() {
    let env = TestEnv::new();
    let out = env.run(&["inspect", "--json", "nope.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    let r: Report = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(r.error.unwrap().contains("nope.safetensors"));
}

#[test]
fn sparse_sdxl_checkpoint_is_identified_from_its_header_alone() {
    use danlu_fixtures::models::{CheckpointOpts, Fill, sdxl_checkpoint, write_safetensors};
    let env = TestEnv::new();
    let path = env.path("sd_xl_base_1.0.safetensors");
    let tensors = sdxl_checkpoint(&CheckpointOpts::default());
    let size = write_safetensors(&path, &tensors, &Default::default(), Fill::Sparse).unwrap();
    assert!(
        size > 6_000_000_000,
        "a real-size SDXL checkpoint ({size} bytes)"
    );
    let (r, out) = one(&env, &["inspect", "--json", s(&path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r.kind.as_deref(), Some("checkpoint"));
    assert_eq!(r.base.as_deref(), Some("sdxl"));
    assert!(
        raw(&out)["variant"].is_null(),
        "variant is present and null"
    );
    assert_eq!(r.dtype.as_deref(), Some("f16"));
    let c = r.components.expect("checkpoints list components");
    assert!(c.unet && c.vae && c.text_encoder && !c.ema, "{c:?}");
    assert_eq!(
        r.folders.unwrap().comfyui.as_deref(),
        Some("models/checkpoints")
    );
    let p = r.parameters.unwrap();
    assert!((3_000_000_000..4_000_000_000).contains(&p), "{p}");
}

#[test]
fn sd1_inpainting_ckpt_with_ema_is_read_through_the_restricted_pickle_reader() {
    use danlu_fixtures::models::{CheckpointOpts, sd1_checkpoint};
    use danlu_fixtures::torch::{checkpoint, write_torch_zip};
    let env = TestEnv::new();
    let opts = CheckpointOpts {
        in_channels: 9,
        ema: true,
        // f16 keeps the archive under 4 GiB: the fixture writer makes no ZIP64 records.
        dtype: danlu_types::Dtype::F16,
        ..CheckpointOpts::default()
    };
    let tensors = sd1_checkpoint(&opts);
    let spec: Vec<(&str, danlu_types::Dtype, &[u64])> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice()))
        .collect();
    let path = env.path("sd-v1-5-inpainting.ckpt");
    write_torch_zip(&path, &checkpoint(&spec, 440_000)).unwrap();
    let (r, out) = one(&env, &["inspect", "--json", s(&path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r.format.as_deref(), Some("ckpt"));
    assert_eq!(r.kind.as_deref(), Some("checkpoint"));
    assert_eq!(r.base.as_deref(), Some("sd1"));
    assert_eq!(r.variant, Some(Some("inpaint".into())));
    assert!(r.components.unwrap().ema);
    let safety = r.safety.expect("a pickle");
    assert!(safety.safe, "{safety:?}");
}

#[test]
fn ckpt_whose_pickle_would_run_a_shell_command_is_unsafe_and_nothing_runs() {
    use danlu_fixtures::torch::{os_system_pickle, write, zip_of};
    let env = TestEnv::new();
    let marker = env.path("pwned");
    let pickle = os_system_pickle(&format!("touch {}", marker.display()));
    let path = env.path("evil.ckpt");
    write(
        &path,
        &zip_of(&[("archive/data.pkl", &pickle), ("archive/version", b"3\n")]),
    )
    .unwrap();
    let out = env.run(&["inspect", "--json", s(&path)]);
    let r: Report = serde_json::from_str(&stdout(&out)).unwrap();
    let text = format!("{r:?}");
    assert!(text.contains("system"), "the global is reported: {text}");
    if let Some(safety) = &r.safety {
        assert!(!safety.safe);
    }
    assert!(!marker.exists(), "the payload must never run");
}
