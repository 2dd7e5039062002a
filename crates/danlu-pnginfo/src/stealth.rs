//! Metadata hidden in the least significant bits of the pixels ("stealth pnginfo").
//!
//! Format from the A1111 extension `ashen-sensored/sd_webui_stealth_pnginfo` (also
//! `neggles/sd-webui-stealth-pnginfo`, `scripts/stealth_pnginfo.py`
//! `read_info_from_image_stealth`) and NovelAI's published `stealth` reader: pixels are visited
//! column by column (x outer, y inner); each pixel gives one bit (the alpha LSB) in alpha mode
//! or three bits (R, G, B LSBs) in RGB mode; bits are read most significant first. The stream is
//! a 15-byte magic (`stealth_pnginfo` / `stealth_pngcomp` in alpha, `stealth_rgbinfo` /
//! `stealth_rgbcomp` in RGB), a 32-bit big-endian payload length in bits, and the payload:
//! UTF-8 text, gzip-compressed for the `comp` magics. A1111 stores its infotext there, NovelAI
//! a JSON object of its text chunks.

use std::io::Cursor;

use crate::text::{self, MAX_TEXT_BYTES};

/// Largest decoded image danlu reads pixels from (256 MiB of samples).
const MAX_PIXEL_BYTES: usize = 256 << 20;

/// Which pixel bits carried the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StealthMode {
    /// One bit per pixel, the alpha channel's LSB (`stealth_pnginfo`, `stealth_pngcomp`).
    Alpha,
    /// Three bits per pixel, the R, G and B LSBs (`stealth_rgbinfo`, `stealth_rgbcomp`).
    Rgb,
}

/// Text recovered from pixel LSBs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StealthPayload {
    /// Which bits carried it.
    pub mode: StealthMode,
    /// Whether it was gzip-compressed (`..comp` magic).
    pub compressed: bool,
    /// The decoded text (A1111 infotext, or NovelAI JSON).
    pub text: String,
}

/// Decoded 8-bit pixels, interleaved.
struct Pixels {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<u8>,
}

/// Reads stealth metadata from PNG or lossless WebP bytes.
///
/// Returns `Ok(None)` when the pixels hold no magic, and `Err(message)` when the pixels cannot
/// be decoded or the payload is damaged (the caller turns it into a finding).
pub(crate) fn read(bytes: &[u8]) -> std::result::Result<Option<StealthPayload>, String> {
    let pixels = if bytes.starts_with(&crate::png::SIGNATURE) {
        decode_png(bytes)?
    } else if crate::webp::is_webp(bytes) {
        Some(decode_webp(bytes)?)
    } else {
        None
    };
    match pixels {
        Some(pixels) => extract(&pixels),
        None => Ok(None),
    }
}

/// Decodes RGB and RGBA PNGs; `None` for grey images, which carry no stealth data in either
/// tool.
fn decode_png(bytes: &[u8]) -> std::result::Result<Option<Pixels>, String> {
    let limits = png::Limits {
        bytes: MAX_PIXEL_BYTES,
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.ignore_checksums(true);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("pixels could not be decoded for a stealth check ({e})"))?;
    let size = reader
        .output_buffer_size()
        .filter(|&n| n <= MAX_PIXEL_BYTES)
        .ok_or_else(|| "image is too large for a stealth check".to_owned())?;
    let mut data = vec![0; size];
    let info = reader
        .next_frame(&mut data)
        .map_err(|e| format!("pixels could not be decoded for a stealth check ({e})"))?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        _ => return Ok(None),
    };
    data.truncate(info.buffer_size());
    Ok(Some(Pixels {
        width: info.width as usize,
        height: info.height as usize,
        channels,
        data,
    }))
}

fn decode_webp(bytes: &[u8]) -> std::result::Result<Pixels, String> {
    let mut decoder = image_webp::WebPDecoder::new(Cursor::new(bytes))
        .map_err(|e| format!("WebP pixels could not be decoded for a stealth check ({e})"))?;
    decoder.set_memory_limit(MAX_PIXEL_BYTES);
    let (width, height) = decoder.dimensions();
    let channels = if decoder.has_alpha() { 4 } else { 3 };
    let size = decoder
        .output_buffer_size()
        .filter(|&n| n <= MAX_PIXEL_BYTES)
        .ok_or_else(|| "image is too large for a stealth check".to_owned())?;
    let mut data = vec![0; size];
    decoder
        .read_image(&mut data)
        .map_err(|e| format!("WebP pixels could not be decoded for a stealth check ({e})"))?;
    Ok(Pixels {
        width: width as usize,
        height: height as usize,
        channels,
        data,
    })
}

/// A column-major stream of LSBs.
struct Bits<'a> {
    pixels: &'a Pixels,
    mode: StealthMode,
    next: usize,
}

impl Bits<'_> {
    fn per_pixel(&self) -> usize {
        match self.mode {
            StealthMode::Alpha => 1,
            StealthMode::Rgb => 3,
        }
    }

    fn total(&self) -> usize {
        self.pixels.width * self.pixels.height * self.per_pixel()
    }

    fn remaining(&self) -> usize {
        self.total().saturating_sub(self.next)
    }

    fn bit(&mut self) -> Option<u8> {
        let per = self.per_pixel();
        let pixel = self.next / per;
        let sub = self.next % per;
        let h = self.pixels.height;
        if h == 0 {
            return None;
        }
        let (x, y) = (pixel / h, pixel % h);
        if x >= self.pixels.width {
            return None;
        }
        let base = (y * self.pixels.width + x) * self.pixels.channels;
        let channel = match self.mode {
            StealthMode::Alpha => 3,
            StealthMode::Rgb => sub,
        };
        self.next += 1;
        self.pixels.data.get(base + channel).map(|v| v & 1)
    }

    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let mut byte = 0u8;
            for _ in 0..8 {
                byte = (byte << 1) | self.bit()?;
            }
            out.push(byte);
        }
        Some(out)
    }
}

fn extract(pixels: &Pixels) -> std::result::Result<Option<StealthPayload>, String> {
    let modes: &[StealthMode] = if pixels.channels == 4 {
        &[StealthMode::Alpha, StealthMode::Rgb]
    } else {
        &[StealthMode::Rgb]
    };
    for &mode in modes {
        let mut bits = Bits {
            pixels,
            mode,
            next: 0,
        };
        let Some(magic) = bits.bytes(15) else {
            continue;
        };
        let compressed =
            match (mode, magic.as_slice()) {
                (StealthMode::Alpha, b"stealth_pnginfo")
                | (StealthMode::Rgb, b"stealth_rgbinfo") => false,
                (StealthMode::Alpha, b"stealth_pngcomp")
                | (StealthMode::Rgb, b"stealth_rgbcomp") => true,
                _ => continue,
            };
        let len_bytes = bits
            .bytes(4)
            .ok_or_else(|| "stealth metadata is cut off before its length".to_owned())?;
        let len_bits =
            u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        if len_bits > bits.remaining() {
            return Err(format!(
                "stealth metadata claims {len_bits} bits but the image holds only {} more",
                bits.remaining()
            ));
        }
        if len_bits / 8 > MAX_TEXT_BYTES {
            return Err("stealth metadata is over the text limit".to_owned());
        }
        let payload = bits
            .bytes(len_bits / 8)
            .ok_or_else(|| "stealth metadata is cut off".to_owned())?;
        let raw = if compressed {
            text::gunzip_limited(&payload).map_err(|e| format!("stealth metadata: {e}"))?
        } else {
            payload
        };
        let text =
            String::from_utf8(raw).map_err(|_| "stealth metadata is not valid UTF-8".to_owned())?;
        return Ok(Some(StealthPayload {
            mode,
            compressed,
            text,
        }));
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes `payload` into the LSBs of a blank image, as the A1111 extension does.
    pub(crate) fn embed(
        width: usize,
        height: usize,
        channels: usize,
        mode: StealthMode,
        compressed: bool,
        text: &str,
    ) -> Vec<u8> {
        let magic = match (mode, compressed) {
            (StealthMode::Alpha, false) => "stealth_pnginfo",
            (StealthMode::Alpha, true) => "stealth_pngcomp",
            (StealthMode::Rgb, false) => "stealth_rgbinfo",
            (StealthMode::Rgb, true) => "stealth_rgbcomp",
        };
        let payload = if compressed {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(text.as_bytes()).unwrap();
            enc.finish().unwrap()
        } else {
            text.as_bytes().to_vec()
        };
        let mut stream = magic.as_bytes().to_vec();
        stream.extend(((payload.len() * 8) as u32).to_be_bytes());
        stream.extend(payload);
        let bits: Vec<u8> = stream
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        let mut data = vec![0xFEu8; width * height * channels];
        let per = if mode == StealthMode::Alpha { 1 } else { 3 };
        for (i, bit) in bits.iter().enumerate() {
            let pixel = i / per;
            let (x, y) = (pixel / height, pixel % height);
            let base = (y * width + x) * channels;
            let ch = if mode == StealthMode::Alpha {
                3
            } else {
                i % per
            };
            data[base + ch] = (data[base + ch] & !1) | bit;
        }
        data
    }

    /// Encodes raw pixels as a PNG with the `png` crate.
    pub(crate) fn encode_png(width: usize, height: usize, channels: usize, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(if channels == 4 {
            png::ColorType::Rgba
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn all_four_magics_round_trip() {
        for (mode, channels) in [
            (StealthMode::Alpha, 4),
            (StealthMode::Rgb, 3),
            (StealthMode::Rgb, 4),
        ] {
            for compressed in [false, true] {
                let data = embed(40, 30, channels, mode, compressed, "a cat\nSteps: 3");
                let png = encode_png(40, 30, channels, &data);
                let got = read(&png).unwrap().unwrap();
                assert_eq!(got.mode, mode);
                assert_eq!(got.compressed, compressed);
                assert_eq!(got.text, "a cat\nSteps: 3");
            }
        }
    }

    #[test]
    fn lossless_webp_alpha_is_read() {
        let data = embed(50, 20, 4, StealthMode::Alpha, true, r#"{"Comment": "{}"}"#);
        let mut webp = Vec::new();
        image_webp::WebPEncoder::new(&mut webp)
            .encode(&data, 50, 20, image_webp::ColorType::Rgba8)
            .unwrap();
        let got = read(&webp).unwrap().unwrap();
        assert_eq!(got.text, r#"{"Comment": "{}"}"#);
    }

    #[test]
    fn rgb_stealth_without_text_chunks_is_found_by_parse_image() {
        let data = embed(
            64,
            64,
            3,
            StealthMode::Rgb,
            false,
            "a fox\nSteps: 9, Seed: 8, Size: 64x64",
        );
        let p = crate::parse_image(&encode_png(64, 64, 3, &data)).unwrap();
        assert_eq!(
            (p.source, p.seed, p.steps),
            (crate::Source::A1111, Some(8), Some(9))
        );
        assert!(p.findings[0].contains("RGB LSBs"), "{:?}", p.findings);
    }

    #[test]
    fn no_magic_is_none() {
        let png = encode_png(8, 8, 4, &[0u8; 8 * 8 * 4]);
        assert_eq!(read(&png).unwrap(), None);
    }

    #[test]
    fn lying_length_is_an_error() {
        let mut data = embed(40, 30, 4, StealthMode::Alpha, false, "hi");
        // Rewrite the 32 length bits (bits 120..152) to all ones.
        for i in 120..152 {
            let (x, y) = (i / 30, i % 30);
            data[(y * 40 + x) * 4 + 3] |= 1;
        }
        let png = encode_png(40, 30, 4, &data);
        let err = read(&png).unwrap_err();
        assert!(err.contains("claims"), "{err}");
    }
}
