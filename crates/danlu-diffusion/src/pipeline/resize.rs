//! Init images resized to the requested size the way A1111 does it (`modules/images.py`
//! `resize_image` with no img2img upscaler, its default): Pillow's `Image.resize(size,
//! resample=LANCZOS)` for the picture, and for the borders of "Resize and fill" Pillow's default
//! filter (bicubic) stretching the edge rows or columns (`resize(size, box=<an edge line>)`).
//!
//! [`resample`] follows Pillow's `libImaging/Resample.c` (Pillow 9.5, which A1111 pins): the
//! filter (Lanczos-3 or bicubic with `a = -0.5`) widened by the scale when shrinking,
//! coefficients normalised per output pixel and rounded to 22-bit fixed point, a horizontal pass
//! over just the rows the vertical pass needs, then the vertical pass, each rounding and clamping
//! to 8 bits.

use super::image::InitImage;
use crate::{Error, Result};

/// A1111's "Resize mode" of img2img (`resize_mode` 0, 1, 2; 3, a latent upscale, is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResizeMode {
    /// "Just resize": stretch to the size.
    #[default]
    JustResize,
    /// "Crop and resize": scale to cover the size, crop the middle.
    CropAndResize,
    /// "Resize and fill": scale to fit inside, fill the borders from the image's edges.
    ResizeAndFill,
}

impl ResizeMode {
    /// A1111's label (written as "Resize mode" by the API, shown in the UI).
    pub fn label(self) -> &'static str {
        match self {
            Self::JustResize => "Just resize",
            Self::CropAndResize => "Crop and resize",
            Self::ResizeAndFill => "Resize and fill",
        }
    }

    /// Parses a label, a CLI word (`just-resize`, `crop`, `fill`) or A1111's number (0, 1, 2).
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything else.
    pub fn parse_name(name: &str) -> Result<Self> {
        let n = name.trim().to_ascii_lowercase().replace(['-', '_'], " ");
        match n.as_str() {
            "0" | "just resize" | "resize" | "just" => Ok(Self::JustResize),
            "1" | "crop and resize" | "crop" => Ok(Self::CropAndResize),
            "2" | "resize and fill" | "fill" => Ok(Self::ResizeAndFill),
            _ => Err(Error::Invalid {
                what: "resize mode",
                reason: format!(
                    "unknown resize mode `{name}` (just-resize, crop-and-resize, resize-and-fill)"
                ),
            }),
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;
const LANCZOS_SUPPORT: f64 = 3.0;

/// A Pillow resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `Image.LANCZOS` (support 3).
    Lanczos,
    /// `Image.BICUBIC` (support 2, `a = -0.5`), Pillow's default for `resize`.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Self::Lanczos => LANCZOS_SUPPORT,
            Self::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Self::Lanczos => lanczos(x),
            Self::Bicubic => bicubic(x),
        }
    }
}

/// Pillow `bicubic_filter` with `a = -0.5`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-LANCZOS_SUPPORT..LANCZOS_SUPPORT).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first input
/// index and the fixed-point weights.
fn coefficients(
    filter: Filter,
    in_size: usize,
    in0: f32,
    in1: f32,
    out_size: usize,
) -> Vec<(usize, Vec<i32>)> {
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            // C `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
            let count = xmax.saturating_sub(xmin);
            let mut k: Vec<f64> = (0..count)
                .map(|x| filter.weight(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                for w in &mut k {
                    *w /= ww;
                }
            }
            let fixed = k
                .iter()
                .map(|&w| {
                    let v = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 {
                        (v - 0.5) as i32
                    } else {
                        (v + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow `Image.resize((width, height), Image.LANCZOS)` of an RGB image.
///
/// # Errors
/// [`Error::Invalid`] for an empty source or target.
pub fn lanczos_resize(image: &InitImage, width: usize, height: usize) -> Result<InitImage> {
    resample(image, width, height, Filter::Lanczos, None)
}

/// Pillow `Image.resize((width, height), filter, box=(x0, y0, x1, y1))` of an RGB image; `box`
/// defaults to the whole image.
///
/// # Errors
/// [`Error::Invalid`] for an empty source or target.
pub fn resample(
    image: &InitImage,
    width: usize,
    height: usize,
    filter: Filter,
    box_: Option<[f32; 4]>,
) -> Result<InitImage> {
    if image.width == 0 || image.height == 0 || width == 0 || height == 0 {
        return Err(Error::Invalid {
            what: "resize",
            reason: format!(
                "cannot resize {}x{} to {width}x{height}",
                image.width, image.height
            ),
        });
    }
    let b = box_.unwrap_or([0.0, 0.0, image.width as f32, image.height as f32]);
    // Pillow's `Image.resize` returns a copy for the same size and the whole box.
    if width == image.width && height == image.height && box_.is_none() {
        return Ok(image.clone());
    }
    let need_h = width != image.width || b[0] != 0.0 || b[2] != width as f32;
    let need_v = height != image.height || b[1] != 0.0 || b[3] != height as f32;
    let horiz = coefficients(filter, image.width, b[0], b[2], width);
    let vert = coefficients(filter, image.height, b[1], b[3], height);
    let first = vert.first().map_or(0, |(m, _)| *m);
    let last = vert.last().map_or(0, |(m, k)| m + k.len());
    let (mut w, mut h, mut px) = (image.width, image.height, image.pixels.clone());
    let mut row_shift = 0;
    if need_h {
        let rows = last.saturating_sub(first);
        let mut out = vec![0u8; width * rows * 3];
        for y in 0..rows {
            let src = &image.pixels[(y + first) * image.width * 3..];
            for (xx, (xmin, k)) in horiz.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &kw) in k.iter().enumerate() {
                        ss += i64::from(src[(x + xmin) * 3 + c]) * i64::from(kw);
                    }
                    out[(y * width + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        (w, h, px) = (width, rows, out);
        row_shift = first;
    }
    if need_v {
        let mut out = vec![0u8; w * height * 3];
        for (yy, (ymin, k)) in vert.iter().enumerate() {
            let ymin = ymin - row_shift;
            for x in 0..w {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (y, &kw) in k.iter().enumerate() {
                        ss += i64::from(px[((y + ymin) * w + x) * 3 + c]) * i64::from(kw);
                    }
                    out[(yy * w + x) * 3 + c] = clip8(ss);
                }
            }
        }
        (h, px) = (height, out);
    }
    InitImage::new(w, h, px)
}

/// Pastes `src` into `dst` with its top-left corner at `(x0, y0)` (PIL `paste`; parts outside
/// are cut off).
fn paste(dst: &mut InitImage, src: &InitImage, x0: i64, y0: i64) {
    for y in 0..src.height {
        let ty = y0 + y as i64;
        if ty < 0 || ty >= dst.height as i64 {
            continue;
        }
        for x in 0..src.width {
            let tx = x0 + x as i64;
            if tx < 0 || tx >= dst.width as i64 {
                continue;
            }
            let s = (y * src.width + x) * 3;
            let d = (ty as usize * dst.width + tx as usize) * 3;
            dst.pixels[d..d + 3].copy_from_slice(&src.pixels[s..s + 3]);
        }
    }
}

/// A1111 `images.resize_image(resize_mode, im, width, height)` without an upscaler.
///
/// # Errors
/// [`Error::Invalid`] for an empty image or size.
pub fn resize_image(
    mode: ResizeMode,
    image: &InitImage,
    width: usize,
    height: usize,
) -> Result<InitImage> {
    if image.width == 0 || image.height == 0 || width == 0 || height == 0 {
        return Err(Error::Invalid {
            what: "resize",
            reason: format!(
                "cannot resize {}x{} to {width}x{height}",
                image.width, image.height
            ),
        });
    }
    let (iw, ih) = (image.width, image.height);
    let ratio = width as f64 / height as f64;
    let src_ratio = iw as f64 / ih as f64;
    match mode {
        ResizeMode::JustResize => lanczos_resize(image, width, height),
        ResizeMode::CropAndResize => {
            let src_w = if ratio > src_ratio {
                width
            } else {
                iw * height / ih
            };
            let src_h = if ratio <= src_ratio {
                height
            } else {
                ih * width / iw
            };
            let resized = lanczos_resize(image, src_w, src_h)?;
            let mut res = InitImage::new(width, height, vec![0; width * height * 3])?;
            paste(
                &mut res,
                &resized,
                (width / 2) as i64 - (src_w / 2) as i64,
                (height / 2) as i64 - (src_h / 2) as i64,
            );
            Ok(res)
        }
        ResizeMode::ResizeAndFill => {
            let src_w = if ratio < src_ratio {
                width
            } else {
                iw * height / ih
            };
            let src_h = if ratio >= src_ratio {
                height
            } else {
                ih * width / iw
            };
            let resized = lanczos_resize(image, src_w, src_h)?;
            let mut res = InitImage::new(width, height, vec![0; width * height * 3])?;
            paste(
                &mut res,
                &resized,
                (width / 2) as i64 - (src_w / 2) as i64,
                (height / 2) as i64 - (src_h / 2) as i64,
            );
            let (rw, rh) = (resized.width as f32, resized.height as f32);
            if ratio < src_ratio {
                let fill = (height / 2) as i64 - (src_h / 2) as i64;
                if fill > 0 {
                    let f = fill as usize;
                    let top = resample(
                        &resized,
                        width,
                        f,
                        Filter::Bicubic,
                        Some([0.0, 0.0, width as f32, 0.0]),
                    )?;
                    paste(&mut res, &top, 0, 0);
                    let bottom = resample(
                        &resized,
                        width,
                        f,
                        Filter::Bicubic,
                        Some([0.0, rh, width as f32, rh]),
                    )?;
                    paste(&mut res, &bottom, 0, fill + src_h as i64);
                }
            } else if ratio > src_ratio {
                let fill = (width / 2) as i64 - (src_w / 2) as i64;
                if fill > 0 {
                    let f = fill as usize;
                    let left = resample(
                        &resized,
                        f,
                        height,
                        Filter::Bicubic,
                        Some([0.0, 0.0, 0.0, height as f32]),
                    )?;
                    paste(&mut res, &left, 0, 0);
                    let right = resample(
                        &resized,
                        f,
                        height,
                        Filter::Bicubic,
                        Some([rw, 0.0, rw, height as f32]),
                    )?;
                    paste(&mut res, &right, fill + src_w as i64, 0);
                }
            }
            Ok(res)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_labels_words_and_numbers() {
        assert_eq!(
            ResizeMode::parse_name("Crop and resize").unwrap(),
            ResizeMode::CropAndResize
        );
        assert_eq!(
            ResizeMode::parse_name("fill").unwrap(),
            ResizeMode::ResizeAndFill
        );
        assert_eq!(ResizeMode::parse_name("0").unwrap(), ResizeMode::JustResize);
        assert!(ResizeMode::parse_name("stretch").is_err());
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let img = InitImage::new(10, 6, vec![77; 10 * 6 * 3]).unwrap();
        let out = lanczos_resize(&img, 17, 4).unwrap();
        assert!(out.pixels.iter().all(|&v| v == 77));
    }
}
