//! The Brownian-tree step noise of A1111's SDE samplers against torchsde 0.2.6 and NumPy.
//!
//! `scripts/reference/sampling_brownian.py` records NumPy `SeedSequence` states and the outputs
//! of k-diffusion's `BrownianTreeNoiseSampler` (batched seeds, float32, CPU) for the queries
//! DPM++ SDE and DPM++ 2M SDE make on a Karras schedule.
//!
//! Tolerance: none for the seed sequences and the trees' increments. Every value comes from
//! torch's CPU `randn` (bit-exact, see `rng_parity.rs`) combined in float32 in torchsde's order,
//! and the times are the same float32 values rounded to 6 decimals, so the increments are equal
//! bit for bit. The noise divides them by `sqrt(|sigma_next - sigma|)`; torch's CPU `sqrt` of a
//! float32 scalar is not always correctly rounded (one ulp off for about a fifth of the values;
//! CUDA's is), so the noise is allowed 2 ulp.
//! The float32 query times DPM++ SDE computes (`exp(-(t + h / 2))`) go through `logf`/`expf`;
//! torch's CPU kernels and the C library differ in the last bit now and then, and `exp` of a
//! sum carries that into a few ulp of the time (3 ulp, 3e-6, for one of the 10 times here),
//! which can move a time across a 6-decimal boundary of the tree; allowed: 1e-6 relative.

// Helpers read the committed reference; a panic there is the test failure.
#![allow(clippy::unwrap_used, clippy::panic, clippy::print_stderr)]

use danlu_diffusion::rng::RngSource;
use danlu_diffusion::sampling::brownian::{BrownianNoise, SeedSequence};
use danlu_diffusion::sampling::kdiffusion::sde_query_sigmas;
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/sampling/brownian_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn u128s(v: &Value) -> Vec<u128> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u128::from(x.as_u64().unwrap()))
        .collect()
}

#[test]
fn seed_sequences_match_numpy() {
    let r = reference();
    for case in r["seed_sequences"].as_array().unwrap() {
        let entropy = u128::from(case["entropy"].as_u64().unwrap());
        let key = u128s(&case["spawn_key"]);
        let pool = case["pool_size"].as_u64().unwrap() as usize;
        let want: Vec<u32> = u128s(&case["state"]).iter().map(|&v| v as u32).collect();
        let got = SeedSequence::new(entropy, &key, pool).generate_state(4);
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn brownian_tree_noise_matches_torchsde_bit_for_bit() {
    let r = reference();
    for case in r["trees"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let seeds: Vec<u64> = case["seeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut noise = BrownianNoise::new(&seeds, [shape[0], shape[1], shape[2]], RngSource::Cpu);
        noise
            .build(
                case["sigma_min"].as_f64().unwrap() as f32,
                case["sigma_max"].as_f64().unwrap() as f32,
            )
            .unwrap();
        let queries = case["queries"].as_array().unwrap();
        let incs = case["increments"].as_array().unwrap();
        let outs = case["noise"].as_array().unwrap();
        let mut worst_ulps = 0;
        for (i, ((q, inc), out)) in queries.iter().zip(incs).zip(outs).enumerate() {
            let (s, sn) = (q[0].as_f64().unwrap() as f32, q[1].as_f64().unwrap() as f32);
            let got = noise.increments(s, sn).unwrap();
            let want = f32s(inc);
            assert_eq!(got.len(), want.len(), "{name} query {i}");
            let differ = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                differ, 0,
                "{name} query {i} ({s}, {sn}): {differ} increments differ"
            );
            let got = noise.sample(s, sn).unwrap();
            for (a, b) in got.iter().zip(f32s(out)) {
                worst_ulps = worst_ulps.max(ulps(*a, b));
            }
        }
        eprintln!("{name}: noise within {worst_ulps} ulp of torch's CPU division");
        assert!(worst_ulps <= 2, "{name}: {worst_ulps} ulp");
    }
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ulps(a: f32, b: f32) -> i64 {
    (i64::from(a.to_bits() as i32) - i64::from(b.to_bits() as i32)).abs()
}

#[test]
fn dpmpp_sde_query_times_match_torch_to_1e_6() {
    let r = reference();
    let karras: Vec<f32> = r["karras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let mut ours = Vec::new();
    for w in karras.windows(2) {
        if w[1] > 0.0 {
            let (a, b, c) = sde_query_sigmas(w[0], w[1]);
            ours.push((a, b));
            ours.push((a, c));
        }
    }
    let theirs = r["sde_queries"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    let mut inexact = 0;
    for ((a, b), q) in ours.iter().zip(theirs) {
        for (x, y) in [(a, &q[0]), (b, &q[1])] {
            let y = y.as_f64().unwrap() as f32;
            let d = ulps(*x, y);
            assert!((x - y).abs() <= 1e-6 * y.abs(), "{x} vs {y}: {d} ulp");
            inexact += usize::from(d != 0);
        }
    }
    eprintln!(
        "DPM++ SDE query times differing in the last bits: {inexact} of {}",
        2 * ours.len()
    );
}
