//! Mask preparation of A1111 inpainting (`modules/processing.py`
//! `StableDiffusionProcessingImg2Img.init`, `modules/masking.py` `fill`) on 8-bit pixels:
//! OpenCV's Gaussian blur of the mask, Pillow's box-blur "Gaussian" blur, premultiplied alpha and
//! alpha compositing, each with the integer arithmetic of the library A1111 calls.

/// Inverts an 8-bit mask (Pillow `ImageOps.invert`).
pub fn invert_mask(mask: &mut [u8]) {
    for m in mask {
        *m = 255 - *m;
    }
}

/// A1111's mask blur: for `blur_x > 0`
/// `cv2.GaussianBlur(mask, (2 * int(2.5 * blur_x + 0.5) + 1, 1), blur_x)`, then the same
/// vertically with `blur_y`, on a `width`x`height` 8-bit mask.
///
/// OpenCV blurs 8-bit images in fixed point (`smooth.dispatch.cpp`: `getGaussianKernelBitExact`,
/// its weights rounded to 8 fractional bits with error diffusion, `GaussianBlurFixedPoint`) with
/// `BORDER_REFLECT_101`; so does this.
pub fn blur_mask(mask: &[u8], width: usize, height: usize, blur_x: u32, blur_y: u32) -> Vec<u8> {
    let mut out = mask.to_vec();
    if blur_x > 0 {
        let kernel = fixed_gaussian_kernel(kernel_size(blur_x), f64::from(blur_x));
        for row in out.chunks_exact_mut(width.max(1)) {
            let line = row.to_vec();
            blur_line(&line, &kernel, row.iter_mut());
        }
    }
    if blur_y > 0 && width > 0 {
        let kernel = fixed_gaussian_kernel(kernel_size(blur_y), f64::from(blur_y));
        for x in 0..width {
            let column: Vec<u8> = (0..height).map(|y| out[y * width + x]).collect();
            blur_line(&column, &kernel, out.iter_mut().skip(x).step_by(width));
        }
    }
    out
}

/// A1111's kernel size for a blur: `2 * int(2.5 * blur + 0.5) + 1`.
fn kernel_size(blur: u32) -> usize {
    2 * ((2.5 * f64::from(blur) + 0.5) as usize) + 1
}

/// OpenCV `getGaussianKernelBitExact` then `getGaussianKernelFixedPoint_ED` with 8 fractional
/// bits: the weights sum to exactly 256.
fn fixed_gaussian_kernel(n: usize, sigma: f64) -> Vec<u32> {
    let half = n / 2;
    let scale2 = -0.125 / (sigma * sigma);
    // Doubled offsets from the centre: x = 1 - n, 3 - n, ...
    let values: Vec<f64> = (0..half)
        .map(|i| {
            let x = 2.0 * i as f64 + 1.0 - n as f64;
            (x * x * scale2).exp()
        })
        .collect();
    let mut sum = values.iter().sum::<f64>() * 2.0;
    sum += 1.0;
    let mul = 1.0 / sum;
    let mut kernel = vec![0_u32; n];
    let mut err = 0.0_f64;
    let mut total = 0_u32;
    for (i, v) in values.iter().enumerate() {
        let adjusted = v * mul * 256.0 + err;
        let rounded = adjusted.round_ties_even();
        err = adjusted - rounded;
        let w = rounded.max(0.0) as u32;
        kernel[i] = w;
        kernel[n - 1 - i] = w;
        total += w;
    }
    kernel[half] = 256_u32.saturating_sub(total * 2);
    kernel
}

/// OpenCV `borderInterpolate` for `BORDER_REFLECT_101` (`gfedcb|abcdefgh|gfedcba`).
fn reflect_101(mut p: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * (len - 1) - p };
    }
    p as usize
}

/// One line through the fixed-point kernel: `(sum(k_i * x_i) + 128) >> 8`.
fn blur_line<'a>(line: &[u8], kernel: &[u32], out: impl Iterator<Item = &'a mut u8>) {
    let half = (kernel.len() / 2) as isize;
    for (x, o) in out.enumerate() {
        let acc: u32 = kernel
            .iter()
            .enumerate()
            .map(|(k, &w)| {
                w * u32::from(line[reflect_101(x as isize + k as isize - half, line.len())])
            })
            .sum();
        *o = ((acc + 128) >> 8).min(255) as u8;
    }
}

/// Pillow's `DIV255` rounding of `a / 255`.
fn div255(a: u32) -> u32 {
    let t = a + 128;
    ((t >> 8) + t) >> 8
}

/// Pillow's `image.convert("RGBA").convert("RGBa")` pasted onto a new transparent `RGBa` image
/// through `mask` (`paste_mask_L`: `DIV255(in * m)` on every byte): the picture premultiplied,
/// its alpha the mask.
pub(super) fn masked_premultiplied(rgb: &[u8], mask: &[u8]) -> Vec<[u8; 4]> {
    rgb.chunks_exact(3)
        .zip(mask)
        .map(|(px, &m)| {
            let m = u32::from(m);
            let c = |v: u8| div255(u32::from(v) * m) as u8;
            [c(px[0]), c(px[1]), c(px[2]), div255(255 * m) as u8]
        })
        .collect()
}

/// Pillow `RGBa` to `RGBA` (`rgba2rgbA`: `255 * c / a` truncated, kept as is for alpha 0 or 255).
pub(super) fn unpremultiply(px: &mut [[u8; 4]]) {
    for p in px {
        let a = u32::from(p[3]);
        if a != 0 && a != 255 {
            for c in &mut p[..3] {
                *c = (255 * u32::from(*c) / a).min(255) as u8;
            }
        }
    }
}

/// Pillow `ImagingAlphaComposite`: `src` over `dst`, in place on `dst`.
pub(super) fn alpha_composite(dst: &mut [[u8; 4]], src: &[[u8; 4]]) {
    const PRECISION_BITS: u32 = 7;
    let shift255 = |a: u32| ((a >> 8) + a) >> 8;
    for (d, s) in dst.iter_mut().zip(src) {
        if s[3] == 0 {
            continue;
        }
        let (sa, da) = (u32::from(s[3]), u32::from(d[3]));
        let blend = da * (255 - sa);
        let outa255 = sa * 255 + blend;
        let coef1 = sa * 255 * 255 * (1 << PRECISION_BITS) / outa255;
        let coef2 = 255 * (1 << PRECISION_BITS) - coef1;
        for c in 0..3 {
            let t = u32::from(s[c]) * coef1 + u32::from(d[c]) * coef2;
            d[c] = (shift255(t + (0x80 << PRECISION_BITS)) >> PRECISION_BITS) as u8;
        }
        d[3] = shift255(outa255 + 0x80) as u8;
    }
}

/// Pillow `_gaussian_blur_radius` (`BoxBlur.c`, float arithmetic): the box radius of each of
/// `passes` box blurs that approximate a Gaussian of standard deviation `radius`.
fn box_radius(radius: f32, passes: u32) -> f32 {
    let sigma2 = radius * radius / passes as f32;
    let big_l = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(big_l) - 1.0) / 2.0).floor() as f32;
    let mut a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    a /= 6.0 * (sigma2 - (l + 1.0) * (l + 1.0));
    l + a
}

/// Pillow `ImagingLineBoxBlur32` on one line of 4-byte pixels (edges repeat the end pixels).
fn box_blur_line(line: &mut [[u8; 4]], radius: f32) {
    let n = line.len();
    if n == 0 {
        return;
    }
    let r = radius as usize;
    // `(UINT32)(1 << 24) / (floatRadius * 2 + 1)` in float, truncated.
    let ww = ((1_u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u32;
    let fw = ((1_u32 << 24).wrapping_sub(((r * 2 + 1) as u32).wrapping_mul(ww))) / 2;
    let input = line.to_vec();
    let at = |i: isize| input[i.clamp(0, n as isize - 1) as usize];
    for c in 0..4 {
        // The window sum over [x - r, x + r], edges clamped, plus the two far pixels weighted fw.
        let mut acc: u64 = (-(r as isize)..=r as isize)
            .map(|i| u64::from(at(i - 1)[c]))
            .sum();
        for (x, out) in line.iter_mut().enumerate() {
            let x = x as isize;
            acc = acc + u64::from(at(x + r as isize)[c]) - u64::from(at(x - r as isize - 1)[c]);
            let far = u64::from(at(x - r as isize - 1)[c]) + u64::from(at(x + r as isize + 1)[c]);
            let bulk = acc * u64::from(ww) + far * u64::from(fw);
            out[c] = ((bulk + (1 << 23)) >> 24) as u8;
        }
    }
}

/// Pillow `ImageFilter.GaussianBlur(radius)` on an `RGBa`/`RGBA` image (three box blurs each
/// way, `ImagingGaussianBlur`).
pub(super) fn pillow_gaussian_blur(
    px: &[[u8; 4]],
    width: usize,
    height: usize,
    radius: f32,
) -> Vec<[u8; 4]> {
    const PASSES: u32 = 3;
    let r = box_radius(radius, PASSES);
    let mut out = px.to_vec();
    if width == 0 || height == 0 {
        return out;
    }
    for row in out.chunks_exact_mut(width) {
        for _ in 0..PASSES {
            box_blur_line(row, r);
        }
    }
    let mut column = vec![[0_u8; 4]; height];
    for x in 0..width {
        for (y, c) in column.iter_mut().enumerate() {
            *c = out[y * width + x];
        }
        for _ in 0..PASSES {
            box_blur_line(&mut column, r);
        }
        for (y, c) in column.iter().enumerate() {
            out[y * width + x] = *c;
        }
    }
    out
}

/// A1111 `masking.fill(image, mask)`: the picture with the masked part (white) cut out,
/// blurred with radii 256, 64, 16 (twice), 4 (four times), 2 (twice) and 0 and composited over
/// a transparent picture in that order, so the hole fills with colours from around it.
pub fn fill_masked(rgb: &[u8], mask: &[u8], width: usize, height: usize) -> Vec<u8> {
    let inverted: Vec<u8> = mask.iter().map(|&m| 255 - m).collect();
    let masked = masked_premultiplied(rgb, &inverted);
    let mut canvas = vec![[0_u8; 4]; masked.len()];
    for (radius, repeats) in [
        (256.0, 1),
        (64.0, 1),
        (16.0, 2),
        (4.0, 4),
        (2.0, 2),
        (0.0, 1),
    ] {
        let mut blurred = pillow_gaussian_blur(&masked, width, height, radius);
        unpremultiply(&mut blurred);
        for _ in 0..repeats {
            alpha_composite(&mut canvas, &blurred);
        }
    }
    canvas.iter().flat_map(|p| [p[0], p[1], p[2]]).collect()
}

/// A1111 `apply_overlay`: the original pixels come back outside the mask through
/// `mask_for_overlay = clip(mask * 2)`: the original pasted onto a transparent `RGBa` picture
/// through the inverted overlay mask, converted to `RGBA` and alpha-composited over the
/// generated picture (Pillow's integer arithmetic throughout). `generated` and `original` are
/// 8-bit RGB, `mask` one value per pixel.
pub fn apply_overlay(generated: &mut [u8], original: &[u8], mask: &[u8]) {
    let keep: Vec<u8> = mask
        .iter()
        .map(|&m| 255 - (u32::from(m) * 2).min(255) as u8)
        .collect();
    let mut top = masked_premultiplied(original, &keep);
    unpremultiply(&mut top);
    let mut base: Vec<[u8; 4]> = generated
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2], 255])
        .collect();
    alpha_composite(&mut base, &top);
    for (g, b) in generated.chunks_exact_mut(3).zip(&base) {
        g.copy_from_slice(&b[..3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sums_to_one_in_fixed_point_and_is_symmetric() {
        for blur in [1, 4, 7, 64] {
            let k = fixed_gaussian_kernel(kernel_size(blur), f64::from(blur));
            assert_eq!(k.iter().sum::<u32>(), 256);
            assert!(k.iter().eq(k.iter().rev()));
        }
        assert_eq!(kernel_size(4), 21);
    }

    #[test]
    fn reflect_101_mirrors_without_repeating_the_edge() {
        let got: Vec<usize> = (-3..8).map(|p| reflect_101(p, 5)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
    }

    #[test]
    fn blur_keeps_a_flat_mask_flat() {
        let flat = vec![200_u8; 12 * 7];
        assert_eq!(blur_mask(&flat, 12, 7, 4, 4), flat);
    }

    #[test]
    fn overlay_keeps_the_unmasked_pixels() {
        let mut generated = vec![10, 20, 30, 40, 50, 60];
        apply_overlay(&mut generated, &[1, 2, 3, 4, 5, 6], &[0, 255]);
        assert_eq!(generated, vec![1, 2, 3, 40, 50, 60]);
    }

    #[test]
    fn zero_radius_blur_is_the_identity() {
        let px: Vec<[u8; 4]> = (0..20_u8).map(|i| [i, i * 3, 255 - i, i * 7]).collect();
        assert_eq!(pillow_gaussian_blur(&px, 5, 4, 0.0), px);
    }
}
