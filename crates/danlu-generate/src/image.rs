//! PNG in (init images) and out (generated images).

use crate::{Error, Result};
use danlu_diffusion::pipeline::{Image, InitImage};

/// Decodes an 8-bit or 16-bit PNG of any colour type as RGB (alpha dropped, grey widened).
///
/// # Errors
/// [`Error::Image`] when the bytes are not a decodable PNG.
pub fn read_init_image(bytes: &[u8]) -> Result<InitImage> {
    let image_err = |e: &dyn std::fmt::Display| Error::Image(format!("init image: {e}"));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| image_err(&e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| Error::Image("init image too large".to_owned()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| image_err(&e))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for px in buf[..info.buffer_size()].chunks_exact(channels) {
        match channels {
            1 | 2 => rgb.extend_from_slice(&[px[0]; 3]),
            _ => rgb.extend_from_slice(&px[..3]),
        }
    }
    Ok(InitImage::new(w, h, rgb)?)
}

/// Encodes an 8-bit RGB image as PNG (no metadata).
///
/// # Errors
/// [`Error::Image`] when the size does not fit PNG.
pub fn encode_png(image: &Image) -> Result<Vec<u8>> {
    let image_err = |e: png::EncodingError| Error::Image(format!("encoding PNG: {e}"));
    let (w, h) = (
        u32::try_from(image.width).map_err(|e| Error::Image(e.to_string()))?,
        u32::try_from(image.height).map_err(|e| Error::Image(e.to_string()))?,
    );
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(image_err)?;
        writer.write_image_data(&image.pixels).map_err(image_err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_alpha_png_reads_as_rgb() {
        let mut bytes = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut bytes, 2, 1);
            encoder.set_color(png::ColorType::GrayscaleAlpha);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[10, 255, 200, 0]).unwrap();
        }
        let image = read_init_image(&bytes).unwrap();
        assert_eq!((image.width, image.height), (2, 1));
        assert_eq!(image.pixels, vec![10, 10, 10, 200, 200, 200]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            read_init_image(b"not a png"),
            Err(Error::Image(_))
        ));
    }
}
