//! Every pickle-scanner sample of the shared corpus (`pickles/`, described in its
//! `MANIFEST.md`): malicious pickles are unsafe and name their globals, benign ones are safe,
//! files that are not pickles give a clean error, and no input (or truncation of one) panics.

// Helpers outside `#[test]` functions fail the test on bad corpus files, by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use danlu_pickle::{Limits, parse, parse_at, scan};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn pickles() -> Vec<(String, Vec<u8>)> {
    let dir = danlu_fixtures::corpus::path("pickles");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p: PathBuf| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() > 90, "corpus has {} pickle samples", out.len());
    out
}

/// The globals the MANIFEST lists per file (from a static `pickletools` walk).
fn manifest_globals() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(danlu_fixtures::corpus::path("MANIFEST.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let Some((file, _)) = rest.split_once('`') else {
            continue;
        };
        if let Some((_, g)) = line.split_once("globals (pickletools static scan): ") {
            let list = g.split(" |").next().unwrap_or_default();
            out.insert(
                file.to_owned(),
                list.split(", ").map(|s| s.trim().to_owned()).collect(),
            );
        }
    }
    out
}

fn is_zip(data: &[u8]) -> bool {
    data.starts_with(b"PK")
}

const BENIGN: &[&str] = &[
    "picklescan_data__benign0_v0.pkl",
    "picklescan_data__benign0_v3.pkl",
    "picklescan_data__benign0_v4.pkl",
];

/// Files that are not pickles at all (MANIFEST: PNG signature, "cmod\n" plus invalid bytes, a
/// 7-Zip archive).
const NOT_PICKLES: &[&str] = &[
    "picklescan_data__bad_pytorch.pt",
    "picklescan_data__not_a_pickle.bin",
    "picklescan_data__malicious1.7z",
];

#[test]
fn benign_pickles_are_safe() {
    for (name, data) in pickles() {
        if BENIGN.contains(&name.as_str()) {
            let p = parse(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(p.safety.safe, "{name}: {:?}", p.safety);
            assert!(p.safety.globals.is_empty(), "{name}");
            assert!(scan(&data, &Limits::default()).safe, "{name}");
        }
    }
}

#[test]
fn files_that_are_not_pickles_give_a_clean_error() {
    for (name, data) in pickles() {
        if NOT_PICKLES.contains(&name.as_str()) {
            let err = parse(&data).expect_err(&name);
            assert!(err.offset() < data.len() as u64, "{name}: {err}");
        }
    }
}

#[test]
fn legacy_torch_file_starts_with_the_magic_number_pickle() {
    let (_, data) = pickles()
        .into_iter()
        .find(|(n, _)| n == "picklescan_data__pytorch_model.bin")
        .unwrap();
    let p = parse(&data).unwrap();
    // torch/serialization.py MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
    assert_eq!(
        p.value,
        danlu_pickle::Value::BigInt(0x1950_a86a_20f9_469c_fc6c_u128.to_string())
    );
    assert!(p.safety.safe);
}

#[test]
fn malicious_pickles_are_unsafe_and_name_their_globals() {
    let manifest = manifest_globals();
    // Where the MANIFEST's static walk differs from what the pickle really imports (its
    // STACK_GLOBAL reading is approximate, as it warns): the globals this reader must report.
    let real: BTreeMap<&str, &[&str]> = [
        // `V os`, `V system` stored in the memo, then STACK_GLOBAL from GETs.
        (
            "picklescan_data__malicious-invalid-bytes.pkl",
            &["os.system"][..],
        ),
        ("picklescan_data__malicious11.pkl", &["os.system"][..]),
        // STACK_GLOBAL of 'bdb', 'Bdb.run' style pairs.
        (
            "picklescan_data__malicious15b.pkl",
            &["bdb.Bdb", "bdb.Bdb.run"][..],
        ),
        // collect_env.run_and_read_all reached through the module then attribute.
        (
            "picklescan_data2__GHSA-jhph-76pp-mggw.pkl",
            &["torch.utils.collect_env.run_and_read_all"][..],
        ),
        // The module's attributes are rewritten to strings, so the last STACK_GLOBAL names
        // builtins.eval.
        (
            "picklescan_data__sys_module_override_sploit.pkl",
            &[
                "torch._utils",
                "torch._utils._rebuild_tensor",
                "builtins.eval",
            ][..],
        ),
        (
            "picklescan_data2__cloudpickle_codeinjection.pkl",
            &[
                "cloudpickle.cloudpickle._make_function",
                "cloudpickle.cloudpickle._make_cell",
                "cloudpickle.cloudpickle.subimport",
            ][..],
        ),
    ]
    .into_iter()
    .collect();
    let mut checked = 0;
    let mut missing = Vec::new();
    for (name, data) in pickles() {
        if BENIGN.contains(&name.as_str())
            || NOT_PICKLES.contains(&name.as_str())
            || is_zip(&data)
            || name == "picklescan_data__pytorch_model.bin"
        {
            continue;
        }
        let safety = scan(&data, &Limits::default());
        assert!(!safety.safe, "{name} must be unsafe: {safety:?}");
        assert!(!safety.findings.is_empty(), "{name}");
        let expected: Vec<String> = match real.get(name.as_str()) {
            Some(list) => list.iter().map(|s| (*s).to_owned()).collect(),
            None => manifest.get(&name).cloned().unwrap_or_default(),
        };
        for g in &expected {
            if !safety.globals.contains(g) {
                missing.push(format!("{name}: `{g}` not in {:?}", safety.globals));
                continue;
            }
            if !danlu_pickle::is_allowed(
                g.rsplit_once('.').map_or("", |p| p.0),
                g.rsplit_once('.').map_or("", |p| p.1),
            ) {
                assert!(
                    safety.findings.iter().any(|f| f.contains(g.as_str())),
                    "{name}: no finding names `{g}`"
                );
            }
        }
        checked += 1;
    }
    assert!(missing.is_empty(), "{missing:#?}");
    assert!(checked > 80, "only {checked} malicious samples checked");
}

#[test]
fn a_second_pickle_after_stop_is_scanned() {
    // MANIFEST: malicious6 hides requests.api.get in a second pickle after a benign list.
    let (_, data) = pickles()
        .into_iter()
        .find(|(n, _)| n == "picklescan_data__malicious6.pkl")
        .unwrap();
    let first = parse(&data).unwrap();
    assert!(first.safety.safe);
    assert!(first.end < data.len());
    let all = scan(&data, &Limits::default());
    assert_eq!(all.globals, ["requests.api.get"]);
    assert!(!all.safe);
}

#[test]
fn malformed_malicious_pickles_still_report_globals_seen_before_the_error() {
    // MANIFEST: broken_model.pkl has a truncated BINUNICODE after referencing builtins.exec.
    let (_, data) = pickles()
        .into_iter()
        .find(|(n, _)| n == "picklescan_data__broken_model.pkl")
        .unwrap();
    let parsed = parse_at(&data, 0, &Limits::default());
    let err = parsed.value.expect_err("truncated");
    assert!(
        matches!(err, danlu_pickle::Error::Truncated { .. }),
        "{err}"
    );
    assert!(parsed.safety.globals.contains(&"builtins.exec".to_owned()));
    assert!(!parsed.safety.safe);
}

#[test]
fn every_truncation_of_every_sample_ends_cleanly() {
    for (name, data) in pickles() {
        let limit = data.len().min(4096);
        for cut in 0..limit {
            let prefix = &data[..cut];
            let r = parse_at(prefix, 0, &Limits::default());
            if let Err(e) = &r.value {
                assert!(e.offset() <= cut as u64, "{name}[..{cut}]: {e}");
                assert!(!r.safety.safe, "{name}[..{cut}] failed but was called safe");
            }
            let _ = scan(prefix, &Limits::default());
        }
    }
}

/// xorshift64*, so the random inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_bytes_and_mutated_samples_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = (rng.next() % 300) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = parse_at(&data, 0, &Limits::default());
        // Starting with PROTO makes the rest more likely to be read as opcodes.
        let mut p = vec![0x80, 2];
        p.extend(&data);
        let _ = scan(&p, &Limits::default());
    }
    for (_, data) in pickles() {
        for _ in 0..40 {
            let mut m = data.clone();
            if m.is_empty() {
                continue;
            }
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() % m.len() as u64) as usize;
                m[i] = rng.next() as u8;
            }
            let _ = scan(&m, &Limits::default());
        }
    }
}
