//! The mask of an inpainting job, with A1111's img2img mask settings
//! (`modules/processing.py` `StableDiffusionProcessingImg2Img`).

pub use danlu_diffusion::pipeline::InpaintFill;

/// A1111's default `mask_blur` (the UI's "Mask blur" and the API's `mask_blur_x`/`mask_blur_y`).
pub const DEFAULT_MASK_BLUR: u32 = 4;

/// An inpainting mask and how it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    /// 8-bit grey, one value per pixel of the init image (its size, row-major): white (255) is
    /// repainted, black kept.
    pub pixels: Vec<u8>,
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
}
