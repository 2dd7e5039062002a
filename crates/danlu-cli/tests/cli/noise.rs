//! `danlu noise`: the written `.npy` equals `torch.randn` for the same seed.

use crate::util::{TestEnv, s, stderr};
use std::path::PathBuf;

fn reference(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../danlu-diffusion/tests/reference/rng")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The float payload of a `.npy` file (after its header).
fn payload(npy: &[u8]) -> &[u8] {
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    &npy[10 + header_len..]
}

#[test]
fn cpu_noise_is_bit_for_bit_torch_randn() {
    let env = TestEnv::new();
    let out = env.path("n.npy");
    let o = env.run(&[
        "noise",
        "--seed",
        "42",
        "--shape",
        "1x4x64x64",
        "--rng",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = std::fs::read(&out).unwrap();
    let torch = reference("cpu_avx2_s42_1x4x64x64.npy");
    assert_eq!(payload(&ours).len(), 4 * 4 * 64 * 64);
    assert!(
        payload(&ours) == payload(&torch),
        "noise differs from torch.randn"
    );
}

#[test]
fn existing_output_is_never_overwritten() {
    let env = TestEnv::new();
    let out = env.path("n.npy");
    std::fs::write(&out, b"keep").unwrap();
    let o = env.run(&["noise", "--seed", "1", "--shape", "2x2", "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}
