//! Live previews: latents to RGB without the VAE.
//!
//! A1111's "Approx cheap" preview (`modules/sd_vae_approx.py`, `cheap_approximation`): each pixel's
//! colour is a fixed linear mix of its four latent channels (SD1 and SD2 share the VAE and so the
//! coefficients), then `* 0.5 + 0.5`, clamped to `[0, 1]` and truncated to 8 bits
//! (`sd_samplers_common.py`, `single_sample_to_image`). The preview is one eighth of the image
//! size.

use candle_core::{DType, Tensor};

/// `coefs[l][r]`: contribution of latent channel `l` to colour `r` (A1111
/// `cheap_approximation`, after <https://discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204/2>).
pub const SD_LATENT_RGB: [[f32; 3]; 4] = [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
];

/// An 8-bit RGB picture, rows top to bottom, three bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

/// The cheap preview of one latent, `[4, h, w]` (the sampler's current `x` or denoised
/// estimate, in the scaled latent space), as an `h x w` picture.
///
/// # Errors
/// When the latent is not `[4, h, w]`.
pub fn preview_cheap(latent: &Tensor) -> crate::Result<Rgb8> {
    let (channels, height, width) = latent.dims3()?;
    if channels != 4 {
        return Err(crate::Error::Invalid {
            what: "preview latent",
            reason: format!("{channels} channels, expected 4"),
        });
    }
    let values = latent
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = height * width;
    let mut pixels = Vec::with_capacity(plane * 3);
    for i in 0..plane {
        let mix = |r: usize| -> f32 {
            SD_LATENT_RGB
                .iter()
                .enumerate()
                .map(|(l, row)| values.get(l * plane + i).copied().unwrap_or(0.0) * row[r])
                .sum()
        };
        for v in [mix(0), mix(1), mix(2)] {
            // numpy's `astype(np.uint8)` truncates.
            pixels.push(((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    Ok(Rgb8 {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn mixes_channels_and_clamps() -> crate::Result<()> {
        // Pixel 0: channel 0 = 1 only -> (0.298, 0.207, 0.208) * 0.5 + 0.5 -> 0.649, 0.6035, 0.604
        // -> 165.495, 153.89, 154.02 -> 165, 153, 154. Pixel 1: channel 3 = 4 -> colours
        // -0.736, -1.084, -1.892 -> 0.132, -0.042, -0.446 -> 33.66 (33), then two clamped to 0.
        let data = vec![1.0f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0];
        let latent = Tensor::from_vec(data, (4, 1, 2), &Device::Cpu)?;
        let rgb = preview_cheap(&latent)?;
        assert_eq!((rgb.width, rgb.height), (2, 1));
        assert_eq!(rgb.pixels, vec![165, 153, 154, 33, 0, 0]);
        Ok(())
    }

    #[test]
    fn rejects_other_channel_counts() -> crate::Result<()> {
        let latent = Tensor::zeros((3, 2, 2), DType::F32, &Device::Cpu)?;
        assert!(preview_cheap(&latent).is_err());
        Ok(())
    }
}
