//! Parity of `danlu_diffusion::rng` with `torch.randn` and A1111's Philox generator.
//!
//! The reference files come from `scripts/reference/rng_reference.py`; every comparison is
//! bit for bit except the variation slerp (float32 reductions in a different order).

// Helpers outside `#[test]` functions read the committed reference data; a panic there is
// the test failure.
#![allow(clippy::unwrap_used, clippy::panic)]

use danlu_diffusion::rng::{
    CpuKernel, ImageRng, PhiloxGenerator, RngSource, TorchCpuGenerator, noise_with_kernel,
    parse_npy, slerp,
};

fn reference(name: &str) -> Vec<f32> {
    let path = format!(
        "{}/tests/reference/rng/{name}.npy",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading `{path}`: {e}"));
    parse_npy(&bytes).unwrap().1
}

fn assert_bits_equal(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff: Vec<usize> = (0..got.len())
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    assert!(
        diff.is_empty(),
        "{what}: {} of {} values differ, first at {}: {} vs {}",
        diff.len(),
        got.len(),
        diff[0],
        got[diff[0]],
        want[diff[0]]
    );
}

/// Draws the successive shapes of one case from one generator, as the script does.
fn draws(seed: u64, kernel: CpuKernel, shapes: &[&[usize]]) -> Vec<f32> {
    let mut g = TorchCpuGenerator::with_kernel(seed, kernel);
    shapes
        .iter()
        .flat_map(|s| g.randn(s.iter().product()))
        .collect()
}

const CASES: &[(&str, u64, &[&[usize]])] = &[
    ("s42_1x4x64x64", 42, &[&[1, 4, 64, 64]]),
    ("s0_2x4x8x8", 0, &[&[2, 4, 8, 8]]),
    ("s1_small", 1, &[&[3], &[5], &[1], &[2, 3], &[15]]),
    ("s2_17_then_small", 2, &[&[17], &[3], &[33]]),
    ("s4294967295_4x8x8", 4_294_967_295, &[&[4, 8, 8]]),
    ("s4294967303_4x8x8", 4_294_967_303, &[&[4, 8, 8]]),
    (
        "s7_image_rng_4x8x8",
        7,
        &[&[4, 8, 8], &[4, 8, 8], &[4, 8, 8]],
    ),
];

#[test]
fn cpu_randn_is_bit_exact_for_the_avx2_kernel() {
    for (name, seed, shapes) in CASES {
        let want = reference(&format!("cpu_avx2_{name}"));
        assert_bits_equal(&draws(*seed, CpuKernel::Avx2, shapes), &want, name);
    }
}

#[test]
fn cpu_randn_is_bit_exact_for_the_scalar_kernel() {
    for (name, seed, shapes) in CASES {
        let want = reference(&format!("cpu_scalar_{name}"));
        assert_bits_equal(&draws(*seed, CpuKernel::Scalar, shapes), &want, name);
    }
}

#[test]
fn cpu_randn_is_bit_exact_for_a_text_embedding_sized_tensor() {
    let want = reference("cpu_avx2_s12345_4x77x768");
    let got = noise_with_kernel(12_345, &[4, 77, 768], RngSource::Cpu, CpuKernel::Avx2).unwrap();
    assert_bits_equal(&got, &want, "4x77x768");
}

#[test]
fn image_rng_step_noise_continues_the_per_image_generator() {
    let want = reference("cpu_avx2_s7_image_rng_4x8x8");
    let mut rng = ImageRng::new([4, 8, 8], &[7], RngSource::Cpu);
    let mut got = rng.first_vec().unwrap();
    got.extend(rng.next_noise_vec().unwrap());
    got.extend(
        rng.next_noise()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    assert_bits_equal(&got, &want, "image rng");
}

#[test]
fn image_rng_batch_is_one_generator_per_seed() {
    // A batch of seeds 0 and 1 is not one 2x4x8x8 draw but two 4x8x8 draws.
    let mut rng = ImageRng::new([4, 8, 8], &[42, 0], RngSource::Cpu);
    let got = rng
        .first()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want0 = noise_with_kernel(42, &[4, 8, 8], RngSource::Cpu, CpuKernel::Avx2).unwrap();
    let want1 = reference("cpu_avx2_s0_2x4x8x8");
    assert_bits_equal(&got[..256], &want0, "image 0");
    assert_bits_equal(&got[256..], &want1[..256], "image 1");
}

#[test]
fn nv_randn_is_bit_exact_with_a1111_philox() {
    let want = reference("nv_s42_1x4x64x64");
    assert_bits_equal(&PhiloxGenerator::new(42).randn(16_384), &want, "nv 42");

    let want = reference("nv_s7_offsets_0_1_2_256");
    let mut g = PhiloxGenerator::new(7);
    let got: Vec<f32> = (0..3).flat_map(|_| g.randn(256)).collect();
    assert_bits_equal(&got, &want, "nv offsets");

    let want = reference("nv_s5000000000_100");
    assert_bits_equal(
        &PhiloxGenerator::new(5_000_000_000).randn(100),
        &want,
        "nv 64-bit seed",
    );
}

#[test]
fn variation_slerp_matches_a1111_within_float32_rounding() {
    let want = reference("slerp_s100_s200_0.3_4x16x16");
    let low = noise_with_kernel(100, &[4, 16, 16], RngSource::Cpu, CpuKernel::Avx2).unwrap();
    let high = noise_with_kernel(200, &[4, 16, 16], RngSource::Cpu, CpuKernel::Avx2).unwrap();
    let got = slerp(0.3, &low, &high, [4, 16, 16]).unwrap();
    let max = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // Values are O(1); the reference sums in float32 in another order: a few ulps.
    assert!(max < 2e-6, "max abs diff {max}");

    let mut rng = ImageRng::new([4, 16, 16], &[100], RngSource::Cpu).with_variation(&[200], 0.3);
    let mixed = rng.first_vec().unwrap();
    assert_eq!(mixed, got);
}
