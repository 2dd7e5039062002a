//! The mask of an inpainting job, with A1111's img2img mask settings
//! (`modules/processing.py` `StableDiffusionProcessingImg2Img`).

pub use danlu_diffusion::pipeline::{InpaintFill, MaskResize};

/// A1111's default `mask_blur` (the UI's "Mask blur" and the API's `mask_blur_x`/`mask_blur_y`).
pub const DEFAULT_MASK_BLUR: u32 = 4;

/// An inpainting mask and how it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// 8-bit grey, row-major, at the init image's size or at `resize`'s: white (255) is
    /// repainted, black kept.
    pub pixels: Vec<u8>,
    /// The mask's own size when it is not the init image's, and the img2img resize mode that
    /// brings it there after the blur (A1111 blurs a mask at its own size, then resizes it;
    /// `None`: the init image's size).
    pub resize: Option<MaskResize>,
    /// A1111 `mask_blur_x`: the standard deviation of the horizontal Gaussian blur, 0 for none.
    pub blur_x: u32,
    /// A1111 `mask_blur_y`: the same vertically.
    pub blur_y: u32,
    /// A1111 `inpainting_fill` ("Masked content").
    pub fill: InpaintFill,
    /// A1111 `inpainting_mask_invert` ("Mask mode: Inpaint not masked").
    pub invert: bool,
}

impl Mask {
    /// `pixels` with A1111's UI defaults: blur 4 both ways, masked content "original", not
    /// inverted.
    pub fn new(pixels: Vec<u8>) -> Self {
        Self {
            pixels,
            resize: None,
            blur_x: DEFAULT_MASK_BLUR,
            blur_y: DEFAULT_MASK_BLUR,
            fill: InpaintFill::Original,
            invert: false,
        }
    }

    /// A1111's `mask_blur` property: the blur when both directions agree.
    pub fn blur(&self) -> Option<u32> {
        (self.blur_x == self.blur_y).then_some(self.blur_x)
    }

    /// The mask inverted and blurred as set, at `width`x`height`: A1111's order, the blur at
    /// the mask's own size and the resize after it
    /// ([`prepare_mask`](danlu_diffusion::pipeline::prepare_mask)).
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine) when the pixel count is not the mask's size's.
    pub fn prepared(&self, width: usize, height: usize) -> crate::Result<Vec<u8>> {
        Ok(danlu_diffusion::pipeline::prepare_mask(
            &self.pixels,
            self.resize,
            self.invert,
            self.blur_x,
            self.blur_y,
            width,
            height,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a1111s_ui_defaults() {
        let m = Mask::new(vec![0, 255]);
        assert_eq!((m.blur_x, m.blur_y, m.invert), (4, 4, false));
        assert_eq!(m.fill, InpaintFill::Original);
        assert_eq!(m.blur(), Some(4));
        let uneven = Mask { blur_y: 2, ..m };
        assert_eq!(uneven.blur(), None);
    }

    #[test]
    fn a_mask_of_another_size_is_blurred_before_it_is_resized() {
        // A 4x4 mask with one white pixel, to 8x8: blurring first spreads the pixel before
        // Lanczos doubles it, so the result differs from blurring the resized mask.
        let mut pixels = vec![0_u8; 16];
        pixels[5] = 255;
        let mask = Mask {
            pixels,
            resize: Some(MaskResize {
                width: 4,
                height: 4,
                mode: danlu_diffusion::pipeline::ResizeMode::JustResize,
            }),
            blur_x: 1,
            blur_y: 1,
            ..Mask::new(Vec::new())
        };
        let got = mask.prepared(8, 8).unwrap();
        assert_eq!(got.len(), 64);
        let resized_first = Mask {
            pixels: danlu_diffusion::pipeline::resize_image(
                danlu_diffusion::pipeline::ResizeMode::JustResize,
                &danlu_diffusion::pipeline::InitImage::new(
                    4,
                    4,
                    mask.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
                )
                .unwrap(),
                8,
                8,
            )
            .unwrap()
            .pixels
            .chunks_exact(3)
            .map(|p| p[0])
            .collect(),
            resize: None,
            ..mask.clone()
        };
        assert_ne!(got, resized_first.prepared(8, 8).unwrap());
        // The same size needs no resize: invert and blur only.
        let same = Mask {
            invert: true,
            ..Mask::new(vec![0; 16])
        };
        assert_eq!(same.prepared(4, 4).unwrap(), vec![255; 16]);
        assert!(same.prepared(8, 8).is_err());
    }
}
