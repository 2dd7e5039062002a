//! Element-type conversion of raw little-endian tensor bytes, rounding as PyTorch does.
//!
//! `Tensor.half()` and `Tensor.bfloat16()` round to nearest, ties to even, overflow to infinity
//! and keep subnormals (PyTorch `c10/util/Half.h` `fp16_ieee_from_fp32_value`,
//! `c10/util/BFloat16.h` `round_to_nearest_even`). NaN is where the two differ from a plain
//! IEEE conversion: to f16 PyTorch keeps the sign and the top payload bits with the quiet bit
//! set (as the `half` crate does), while to bf16 its vectorised CPU kernel
//! (`aten/src/ATen/cpu/vec/vec256/vec256_bfloat16.h` `cvtfp32_bf16`) writes `0xffff` for every
//! NaN, which is what a checkpoint converted with PyTorch holds. Both are reproduced here and
//! checked against values PyTorch 2.15 produced (see the tests).

use danlu_types::Dtype;
use half::{bf16, f16};

/// The bf16 bit pattern PyTorch writes for every NaN.
const TORCH_BF16_NAN: u16 = 0xffff;

/// Whether this module converts between `from` and `to` (both floating-point, of fixed size).
pub(crate) fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F64 | Dtype::F32 | Dtype::F16 | Dtype::Bf16)
}

/// One f32 to f16 bits, as `Tensor.half()`.
pub fn f32_to_f16(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// One f32 to bf16 bits, as `Tensor.bfloat16()`.
pub fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        TORCH_BF16_NAN
    } else {
        bf16::from_f32(x).to_bits()
    }
}

fn f64_to_f16(x: f64) -> u16 {
    f16::from_f64(x).to_bits()
}

fn f64_to_bf16(x: f64) -> u16 {
    if x.is_nan() {
        TORCH_BF16_NAN
    } else {
        bf16::from_f64(x).to_bits()
    }
}

fn read_f64(b: &[u8]) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    f64::from_le_bytes(a)
}

fn read_f32(b: &[u8]) -> f32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    f32::from_le_bytes(a)
}

fn read_u16(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

/// Appends `input` (whole elements of `from`) converted to `to` onto `out`.
///
/// Widening (f16 or bf16 to f32 or f64, f32 to f64) is exact; narrowing rounds as PyTorch does.
/// Types this module does not convert, or equal types, are copied unchanged. A trailing partial
/// element is ignored; callers pass whole elements.
pub(crate) fn cast_into(from: Dtype, to: Dtype, input: &[u8], out: &mut Vec<u8>) {
    if from == to || !is_float(from) || !is_float(to) {
        out.extend_from_slice(input);
        return;
    }
    let in_size = from.size_in_bytes().unwrap_or(1) as usize;
    let out_size = to.size_in_bytes().unwrap_or(1) as usize;
    out.reserve(input.len() / in_size * out_size);
    let elements = input.chunks_exact(in_size);
    // One loop per pair, so that the hot f32 to f16/bf16 loops carry no per-element dispatch.
    match (from, to) {
        (Dtype::F32, Dtype::F16) => {
            for e in elements {
                out.extend_from_slice(&f32_to_f16(read_f32(e)).to_le_bytes());
            }
        }
        (Dtype::F32, Dtype::Bf16) => {
            for e in elements {
                out.extend_from_slice(&f32_to_bf16(read_f32(e)).to_le_bytes());
            }
        }
        (Dtype::F32, _) => {
            for e in elements {
                out.extend_from_slice(&f64::from(read_f32(e)).to_le_bytes());
            }
        }
        (Dtype::F64, _) => {
            for e in elements {
                let x = read_f64(e);
                match to {
                    Dtype::F16 => out.extend_from_slice(&f64_to_f16(x).to_le_bytes()),
                    Dtype::Bf16 => out.extend_from_slice(&f64_to_bf16(x).to_le_bytes()),
                    // `as f32` rounds to nearest even, as `Tensor.float()` does.
                    _ => out.extend_from_slice(&(x as f32).to_le_bytes()),
                }
            }
        }
        (Dtype::F16, _) => {
            for e in elements {
                push_f32_as(f16::from_bits(read_u16(e)).to_f32(), to, out);
            }
        }
        _ => {
            for e in elements {
                push_f32_as(bf16::from_bits(read_u16(e)).to_f32(), to, out);
            }
        }
    }
}

/// Pushes an f32 (widened from f16 or bf16, so exact) as `to`.
fn push_f32_as(x: f32, to: Dtype, out: &mut Vec<u8>) {
    match to {
        Dtype::F64 => out.extend_from_slice(&f64::from(x).to_le_bytes()),
        Dtype::F32 => out.extend_from_slice(&x.to_le_bytes()),
        Dtype::F16 => out.extend_from_slice(&f32_to_f16(x).to_le_bytes()),
        _ => out.extend_from_slice(&f32_to_bf16(x).to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 bit patterns and what PyTorch 2.15 (CPU) gives for them with `.half()` and
    /// `.bfloat16()`. Made with:
    /// `t = torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)`, then
    /// `t.half().view(torch.int16)` and `t.bfloat16().view(torch.int16)` (masked to 16 bits), on
    /// the tensor repeated 64 times (vectorised kernel) and alone; both agreed.
    const TORCH: [(u32, u16, u16); 32] = [
        (0x0000_0000, 0x0000, 0x0000), // +0
        (0x8000_0000, 0x8000, 0x8000), // -0
        (0x7f80_0000, 0x7c00, 0x7f80), // +inf
        (0xff80_0000, 0xfc00, 0xff80), // -inf
        (0x7fc0_0000, 0x7e00, 0xffff), // quiet NaN
        (0xffc0_0000, 0xfe00, 0xffff), // negative quiet NaN
        (0x7f80_0001, 0x7e00, 0xffff), // signalling NaN, low payload
        (0x7fa0_0001, 0x7f00, 0xffff), // signalling NaN, high payload kept in f16
        (0xffbf_ffff, 0xffff, 0xffff), // negative NaN, full payload
        (0x3f80_0000, 0x3c00, 0x3f80), // 1.0
        (0x3300_0000, 0x0000, 0x3300), // 2^-25: f16 tie between 0 and the least subnormal, to even
        (0x3300_0001, 0x0001, 0x3300), // just above the tie
        (0x337f_ffff, 0x0001, 0x3380),
        (0x3380_0000, 0x0001, 0x3380), // 2^-24: least f16 subnormal
        (0x387f_c000, 0x03ff, 0x3880), // largest f16 subnormal
        (0x3880_0000, 0x0400, 0x3880), // least f16 normal
        (0x3880_1000, 0x0400, 0x3880), // tie, to even (down)
        (0x3880_3000, 0x0402, 0x3880), // tie, to even (up)
        (0x477f_e000, 0x7bff, 0x4780), // 65504, f16 max
        (0x477f_f000, 0x7c00, 0x4780), // 65520: rounds to f16 infinity
        (0x477f_efff, 0x7bff, 0x4780), // just below 65520
        (0x4780_0000, 0x7c00, 0x4780), // 65536
        (0x7f7f_ffff, 0x7c00, 0x7f80), // f32 max: both overflow to infinity
        (0x0000_0001, 0x0000, 0x0000), // least f32 subnormal
        (0x3f80_8000, 0x3c04, 0x3f80), // bf16 tie, to even (down)
        (0x3f81_8000, 0x3c0c, 0x3f82), // bf16 tie, to even (up)
        (0x3f80_8001, 0x3c04, 0x3f81), // just above the bf16 tie
        (0x3f7f_ffff, 0x3c00, 0x3f80),
        (0xc2c8_0000, 0xd640, 0xc2c8), // -100
        (0x3eaa_aaab, 0x3555, 0x3eab), // 1/3
        (0x0040_0000, 0x0000, 0x0040), // f32 subnormal kept by bf16
        (0x807f_ffff, 0x8000, 0x8080), // largest negative f32 subnormal
    ];

    #[test]
    fn f32_to_f16_and_bf16_match_pytorch_bit_for_bit() {
        for (bits, h, b) in TORCH {
            let x = f32::from_bits(bits);
            assert_eq!(f32_to_f16(x), h, "f16 of {bits:#010x}");
            assert_eq!(f32_to_bf16(x), b, "bf16 of {bits:#010x}");
        }
    }

    #[test]
    fn byte_casts_match_the_scalar_functions_and_widen_exactly() {
        let input: Vec<u8> = TORCH.iter().flat_map(|(b, _, _)| b.to_le_bytes()).collect();
        let mut h = Vec::new();
        cast_into(Dtype::F32, Dtype::F16, &input, &mut h);
        let want: Vec<u8> = TORCH.iter().flat_map(|(_, h, _)| h.to_le_bytes()).collect();
        assert_eq!(h, want);
        let mut b = Vec::new();
        cast_into(Dtype::F32, Dtype::Bf16, &input, &mut b);
        let want: Vec<u8> = TORCH.iter().flat_map(|(_, _, b)| b.to_le_bytes()).collect();
        assert_eq!(b, want);
        // Widening f16 back to f32 and narrowing again gives the same f16 (the round-trip rule).
        let mut wide = Vec::new();
        cast_into(Dtype::F16, Dtype::F32, &h, &mut wide);
        let mut again = Vec::new();
        cast_into(Dtype::F32, Dtype::F16, &wide, &mut again);
        assert_eq!(again, h);
        // 1.0 in f16 widens to exactly 1.0f32.
        assert_eq!(&wide[36..40], &1.0f32.to_le_bytes());
    }

    #[test]
    fn integer_and_equal_types_are_copied() {
        let bytes = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut out = Vec::new();
        cast_into(Dtype::I64, Dtype::F16, &bytes, &mut out);
        assert_eq!(out, bytes);
        out.clear();
        cast_into(Dtype::F32, Dtype::F32, &bytes, &mut out);
        assert_eq!(out, bytes);
    }
}
