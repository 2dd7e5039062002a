//! Inpainting: masks, A1111's latent blend and the image conditioning of inpainting UNets
//! (A1111 `modules/processing.py`, `sd_samplers_cfg_denoiser.py`).

use candle_core::{DType, Device, Tensor};

use super::Pipeline;
use super::image::InitImage;
use super::mask::{blur_mask, invert_mask};
use super::resize::{Filter, ResizeMode, resample, resize_image};
use crate::rng::TorchCpuGenerator;
use crate::sampling::{Denoiser, EpsDenoiser};
use crate::{Error, Result};

/// A1111 "Masked content": what the masked part starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InpaintFill {
    /// `fill` (0): the masked part filled with blurred colours from around it.
    Fill,
    /// `original` (1): the picture as it is.
    #[default]
    Original,
    /// `latent noise` (2): the masked latent replaced by noise.
    LatentNoise,
    /// `latent nothing` (3): the masked latent zeroed.
    LatentNothing,
}

impl InpaintFill {
    /// A1111's label (its infotext writes "Masked content" only in the UI's own fields).
    pub fn label(self) -> &'static str {
        match self {
            Self::Fill => "fill",
            Self::Original => "original",
            Self::LatentNoise => "latent noise",
            Self::LatentNothing => "latent nothing",
        }
    }

    /// Parses a label (`latent-noise` and `latent_noise` too) or A1111's number (0-3).
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything else.
    pub fn parse_name(name: &str) -> Result<Self> {
        let n = name.trim().to_ascii_lowercase().replace(['-', '_'], " ");
        match n.as_str() {
            "0" | "fill" => Ok(Self::Fill),
            "1" | "original" => Ok(Self::Original),
            "2" | "latent noise" => Ok(Self::LatentNoise),
            "3" | "latent nothing" => Ok(Self::LatentNothing),
            _ => Err(Error::Invalid {
                what: "masked content",
                reason: format!(
                    "unknown mode `{name}` (fill, original, latent-noise, latent-nothing)"
                ),
            }),
        }
    }
}

/// A mask of another size than the picture: its own size and how it is brought to the
/// picture's size once it is inverted and blurred (A1111 `StableDiffusionProcessingImg2Img.init`:
/// `images.resize_image(p.resize_mode, image_mask, p.width, p.height)`, Lanczos for a grey mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskResize {
    /// The mask's width in pixels.
    pub width: usize,
    /// The mask's height in pixels.
    pub height: usize,
    /// The img2img resize mode (the init image's).
    pub mode: ResizeMode,
}

/// An inpainting input (see [`Pipeline::inpaint`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Inpaint {
    /// The picture (its size must equal the request's).
    pub image: InitImage,
    /// One 8-bit value per pixel, row-major, at the picture's size or at `mask_resize`'s: white
    /// (255) is repainted, black kept (A1111 "Inpaint masked").
    pub mask: Vec<u8>,
    /// The mask's own size when it is not the picture's (`None`: the picture's size).
    pub mask_resize: Option<MaskResize>,
    /// A1111 "Denoising strength".
    pub denoising_strength: f32,
    /// A1111 "Masked content".
    pub fill: InpaintFill,
    /// A1111 `inpainting_mask_weight` ("Inpainting conditioning mask strength", default 1).
    pub mask_weight: f32,
    /// A1111 `mask_blur_x`: the standard deviation of the horizontal Gaussian blur of the mask
    /// (0: none; A1111's default is 4).
    pub blur_x: u32,
    /// A1111 `mask_blur_y`: the same vertically.
    pub blur_y: u32,
    /// A1111 `inpainting_mask_invert`: repaint where the mask is black.
    pub invert: bool,
}

impl Inpaint {
    /// The mask as A1111 uses it for "Inpaint area: Whole picture", one value per pixel of the
    /// picture ([`prepare_mask`] with this input's settings).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the mask's length is not its size's.
    pub fn prepared_mask(&self) -> Result<Vec<u8>> {
        prepare_mask(
            &self.mask,
            self.mask_resize,
            self.invert,
            self.blur_x,
            self.blur_y,
            self.image.width,
            self.image.height,
        )
    }
}

/// A1111's mask for "Inpaint area: Whole picture" (`StableDiffusionProcessingImg2Img.init`
/// without `inpaint_full_res`), in A1111's order: inverted when asked (Pillow
/// `ImageOps.invert`), blurred at its own size ([`blur_mask`]), then resized to `width`x`height`
/// by `resize`'s mode ([`resize_image`] on the grey mask, A1111 `images.resize_image`). `mask`
/// is at `resize`'s size, or at `width`x`height` for `None`.
///
/// # Errors
/// [`Error::Invalid`] when the mask's length is not its size's or a size is 0.
pub fn prepare_mask(
    mask: &[u8],
    resize: Option<MaskResize>,
    invert: bool,
    blur_x: u32,
    blur_y: u32,
    width: usize,
    height: usize,
) -> Result<Vec<u8>> {
    let (mw, mh) = resize.map_or((width, height), |r| (r.width, r.height));
    if mask.len() != mw * mh || mw == 0 || mh == 0 {
        return Err(Error::Invalid {
            what: "mask",
            reason: format!("{} values for a {mw}x{mh} mask", mask.len()),
        });
    }
    let mut mask = mask.to_vec();
    if invert {
        invert_mask(&mut mask);
    }
    let mask = blur_mask(&mask, mw, mh, blur_x, blur_y);
    match resize {
        Some(r) if (mw, mh) != (width, height) => {
            let grey = InitImage::new(mw, mh, mask.iter().flat_map(|&v| [v, v, v]).collect())?;
            let resized = resize_image(r.mode, &grey, width, height)?;
            Ok(resized.pixels.chunks_exact(3).map(|p| p[0]).collect())
        }
        _ => Ok(mask),
    }
}

/// `x * nmask + init * mask`.
#[derive(Debug, Clone)]
pub(super) struct LatentBlend {
    pub(super) init: Tensor,
    pub(super) mask: Tensor,
    pub(super) nmask: Tensor,
}

impl LatentBlend {
    pub(super) fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok((x.broadcast_mul(&self.nmask)? + self.init.broadcast_mul(&self.mask)?)?)
    }
}

/// A1111 `CFGDenoiser` with a mask. The k-diffusion samplers (`CFGDenoiser`,
/// `mask_before_denoising` off) get the denoised prediction blended with the init latent; the
/// timestep samplers (`CFGDenoiserTimesteps`, `mask_before_denoising = True`) get the model's
/// input blended instead, `x * nmask + init_latent * mask` with the clean init latent, while the
/// sampler goes on from its own unblended `x`.
pub(super) struct MaskedDenoiser<D> {
    pub(super) inner: D,
    pub(super) blend: Option<LatentBlend>,
}

impl<D: Denoiser> Denoiser for MaskedDenoiser<D> {
    fn denoise(&mut self, x: &Tensor, sigma: f32) -> Result<Tensor> {
        let denoised = self.inner.denoise(x, sigma)?;
        match &self.blend {
            Some(b) => b.apply(&denoised),
            None => Ok(denoised),
        }
    }
}

/// A1111 `CFGDenoiser.forward` with `mask_before_denoising`: the blend before the model, none
/// after it.
impl<D: EpsDenoiser> EpsDenoiser for MaskedDenoiser<D> {
    fn eps(&mut self, x: &Tensor, timestep: f32) -> Result<Tensor> {
        match &self.blend {
            Some(b) => self.inner.eps(&b.apply(x)?, timestep),
            None => self.inner.eps(x, timestep),
        }
    }

    fn alphas_cumprod(&self) -> &[f32] {
        self.inner.alphas_cumprod()
    }
}

/// A1111's `latmask`: the mask as RGB resized to the latent size by Pillow's default filter
/// (bicubic), its first channel `/ 255`, rounded; returns `(mask, nmask)` = `(1 - latmask,
/// latmask)` as `[1, channels, h/8, w/8]`.
pub(super) fn latent_masks(
    image: &InitImage,
    mask: &[u8],
    channels: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (w, h) = (image.width, image.height);
    let (lw, lh) = (w / super::LATENT_FACTOR, h / super::LATENT_FACTOR);
    let rgb = InitImage::new(w, h, mask.iter().flat_map(|&v| [v, v, v]).collect())?;
    let small = resample(&rgb, lw, lh, Filter::Bicubic, None)?;
    let lat: Vec<f32> = small
        .pixels
        .chunks_exact(3)
        .map(|px| (f32::from(px[0]) / 255.0).round_ties_even())
        .collect();
    let nmask = Tensor::from_vec(lat, (1, 1, lh, lw), device)?.repeat((1, channels, 1, 1))?;
    let mask = (1.0 - &nmask)?;
    Ok((mask, nmask))
}

/// `torch.lerp(start, end, weight)` on the CPU: `start + weight * (end - start)` below 0.5,
/// `end - (end - start) * (1 - weight)` from 0.5 up.
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let diff = end - start;
    if weight < 0.5 {
        start + weight * diff
    } else {
        end - diff * (1.0 - weight)
    }
}

impl Pipeline {
    /// A1111 `inpainting_image_conditioning`: `[batch, 5, h/8, w/8]` = the mask (rounded, nearest
    /// resize) and the latent of the image with the masked part blanked `weight` of the way.
    /// Without a mask the whole picture counts as masked.
    pub(super) fn inpainting_conditioning(
        &self,
        image: &InitImage,
        inpaint: Option<&super::Inpaint>,
        batch: usize,
        generator: &mut TorchCpuGenerator,
    ) -> Result<Tensor> {
        let (w, h) = (image.width, image.height);
        let full: Vec<f32> = match inpaint {
            Some(i) => i
                .mask
                .iter()
                .map(|&v| (f32::from(v) / 255.0).round_ties_even())
                .collect(),
            None => vec![1.0; w * h],
        };
        let weight = inpaint.map_or(1.0, |i| i.mask_weight);
        let src = self.pixels(image)?.flatten_all()?.to_vec1::<f32>()?;
        let plane = w * h;
        let masked: Vec<f32> = src
            .iter()
            .enumerate()
            .map(|(i, &s)| lerp(s, s * (1.0 - full[i % plane]), weight))
            .collect();
        let masked = Tensor::from_vec(masked, (1, 3, h, w), &self.device)?;
        let latent = self.encode_samples(&masked, batch, generator)?;
        let f = super::LATENT_FACTOR;
        let (lw, lh) = (w / f, h / f);
        let small: Vec<f32> = (0..lh)
            .flat_map(|y| (0..lw).map(move |x| (y, x)))
            .map(|(y, x)| full[y * f * w + x * f])
            .collect();
        let small =
            Tensor::from_vec(small, (1, 1, lh, lw), &self.device)?.repeat((batch, 1, 1, 1))?;
        Ok(Tensor::cat(&[&small, &latent], 1)?.to_dtype(DType::F32)?)
    }

    /// A1111 `txt2img_image_conditioning` of an inpainting UNet: a 0.5 grey picture encoded,
    /// behind a mask channel of ones.
    pub(super) fn txt2img_conditioning(
        &self,
        batch: usize,
        lh: usize,
        lw: usize,
        generator: &mut TorchCpuGenerator,
    ) -> Result<Tensor> {
        let f = super::LATENT_FACTOR;
        // `ones * 0.5`, then `* 2 - 1` on the way into the VAE.
        let grey =
            ((Tensor::ones((1, 3, lh * f, lw * f), DType::F32, &self.device)? * 0.5)? * 2.0)?;
        let grey = (grey - 1.0)?;
        let latent = self.encode_samples(&grey, batch, generator)?;
        let ones = Tensor::ones((batch, 1, lh, lw), DType::F32, &self.device)?;
        Ok(Tensor::cat(&[&ones, &latent], 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_modes_parse() {
        assert_eq!(
            InpaintFill::parse_name("latent-noise").unwrap(),
            InpaintFill::LatentNoise
        );
        assert_eq!(InpaintFill::parse_name("1").unwrap(), InpaintFill::Original);
        assert!(InpaintFill::parse_name("blur").is_err());
    }

    #[test]
    fn lerp_matches_torch_at_the_ends() {
        assert_eq!(lerp(0.3, 0.0, 1.0), 0.0);
        assert_eq!(lerp(0.3, 0.0, 0.0), 0.3);
    }
}
