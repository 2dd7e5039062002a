//! Pixels in and out: A1111's 8-bit conversions.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// An RGB picture, 8 bits per channel, row-major (what an img2img job starts from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl InitImage {
    /// Wraps RGB bytes.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the byte count is not `width * height * 3`.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Self> {
        if pixels.len() != width * height * 3 {
            return Err(Error::Invalid {
                what: "init image",
                reason: format!(
                    "{} bytes for {width}x{height} RGB, expected {}",
                    pixels.len(),
                    width * height * 3
                ),
            });
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// `[1, 3, h, w]` float32 in `[0, 1]`: A1111 `np.array(image).astype(np.float32) / 255.0`,
    /// channels first.
    ///
    /// # Errors
    /// A candle error.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let plane = self.width * self.height;
        let mut chw = vec![0f32; plane * 3];
        for (i, px) in self.pixels.chunks_exact(3).enumerate() {
            for (c, &v) in px.iter().enumerate() {
                chw[c * plane + i] = f32::from(v) / 255.0;
            }
        }
        Ok(Tensor::from_vec(
            chw,
            (1, 3, self.height, self.width),
            device,
        )?)
    }
}

/// A decoded image `[3, h, w]` (nominally in `[-1, 1]`) as 8-bit RGB bytes, row-major, the way
/// A1111 converts it: `torch.clamp((x + 1.0) / 2.0, min=0.0, max=1.0)` (`processing.py`), then
/// `255. * x` and `.astype(np.uint8)`, which truncates (`processing.py` `save_images` path),
/// all in float32.
///
/// # Errors
/// When the tensor is not `[3, h, w]`.
pub fn to_rgb8(x: &Tensor) -> Result<Vec<u8>> {
    let (c, h, w) = x.dims3()?;
    if c != 3 {
        return Err(Error::Invalid {
            what: "decoded image",
            reason: format!("{c} channels, expected 3"),
        });
    }
    let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let plane = h * w;
    let mut out = vec![0u8; plane * 3];
    for ch in 0..3 {
        for i in 0..plane {
            let v = ((values[ch * plane + i] + 1.0) / 2.0).clamp(0.0, 1.0);
            // `as u8` truncates towards zero like NumPy's float -> uint8 cast for [0, 255].
            out[i * 3 + ch] = (255.0 * v) as u8;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_clamps_and_truncates() -> Result<()> {
        // (x + 1) / 2 = 0.999 -> 254.745 -> 254 (truncated, not rounded); 2.0 clamps to 255;
        // -3 clamps to 0; 0 -> 127.5 -> 127.
        let x = Tensor::from_vec(
            vec![0.998f32, 2.0, -3.0, 0.0, 0.0, 0.0],
            (3, 1, 2),
            &Device::Cpu,
        )?;
        let px = to_rgb8(&x)?;
        assert_eq!(px, vec![254, 0, 127, 255, 127, 127]);
        Ok(())
    }

    #[test]
    fn init_image_is_channels_first_in_unit_range() -> Result<()> {
        let img = InitImage::new(2, 1, vec![255, 0, 51, 0, 255, 102])?;
        let t = img.to_tensor(&Device::Cpu)?;
        assert_eq!(t.dims(), [1, 3, 1, 2]);
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(v, vec![1.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
        assert!(InitImage::new(2, 2, vec![0; 3]).is_err());
        Ok(())
    }
}
