//! A1111's emphasis step on the text encoder output (`modules/sd_emphasis.py`).

use candle_core::{D, DType, Tensor};

use super::chunks::Emphasis;
use crate::{Error, Result};

/// Applies the per-token multipliers to the encoder output of one chunk for a batch of prompts.
///
/// `z` is `[B, T, C]` (float32) and `multipliers` `[B, T]`. "Original" multiplies every token
/// vector by its weight and rescales the whole tensor so its mean equals the mean before
/// (`z * (original_mean / new_mean)`, both means over all of `z`, the whole batch, as A1111
/// computes them per chunk); "No norm" only multiplies; "None" and "Ignore" return `z`.
///
/// # Errors
/// [`Error::Invalid`] when the shapes do not match, or a candle error.
pub fn apply_emphasis(z: &Tensor, multipliers: &Tensor, emphasis: Emphasis) -> Result<Tensor> {
    if matches!(emphasis, Emphasis::None | Emphasis::Ignore) {
        return Ok(z.clone());
    }
    let (b, t, _) = z.dims3()?;
    if multipliers.dims() != [b, t] {
        return Err(Error::Invalid {
            what: "emphasis multipliers",
            reason: format!(
                "shape {:?} does not match encoder output {:?}",
                multipliers.dims(),
                z.dims()
            ),
        });
    }
    let weights = multipliers
        .to_dtype(z.dtype())?
        .unsqueeze(D::Minus1)?
        .broadcast_as(z.shape())?;
    let scaled = (z * weights)?;
    if emphasis == Emphasis::NoNorm {
        return Ok(scaled);
    }
    let original_mean = mean_all(z)?;
    let new_mean = mean_all(&scaled)?;
    Ok((scaled * f64::from(original_mean / new_mean))?)
}

/// The float32 mean of all elements, accumulated in float64.
fn mean_all(t: &Tensor) -> Result<f32> {
    let sum = t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
    Ok((sum / t.elem_count().max(1) as f64) as f32)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn original_keeps_the_mean_and_no_norm_does_not() {
        let z = Tensor::new(&[[[1.0f32, 2.0], [3.0, 4.0]]], &Device::Cpu).unwrap();
        let m = Tensor::new(&[[1.0f32, 2.0]], &Device::Cpu).unwrap();
        let orig = apply_emphasis(&z, &m, Emphasis::Original).unwrap();
        let no_norm = apply_emphasis(&z, &m, Emphasis::NoNorm).unwrap();
        assert_eq!(
            no_norm.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 2.0, 6.0, 8.0]
        );
        // Mean 2.5 restored from 4.25: factor 10/17.
        let got = orig.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = [10.0 / 17.0, 20.0 / 17.0, 60.0 / 17.0, 80.0 / 17.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6);
        }
        assert!(apply_emphasis(&z, &m.t().unwrap(), Emphasis::Original).is_err());
    }
}
