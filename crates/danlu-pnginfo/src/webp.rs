//! WebP RIFF chunks: `EXIF` and `XMP `.
//!
//! Layout from the WebP container specification (Google, RFC 9649 section 2.7): `RIFF`, a
//! little-endian size, `WEBP`, then chunks `fourcc | size (u32 LE) | data | pad to even`.

use crate::exif;
use crate::text::{self, Found};

/// Reads the metadata chunks of a WebP whose `RIFF....WEBP` header was checked by the caller.
pub(crate) fn read_text(bytes: &[u8], found: &mut Found) {
    let mut pos = 12;
    while pos < bytes.len() {
        let Some(head) = bytes.get(pos..pos + 8) else {
            found.note(format!("WebP chunk header at offset {pos} is truncated"));
            return;
        };
        let fourcc = [head[0], head[1], head[2], head[3]];
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let start = pos + 8;
        let Some(data) = start.checked_add(len).and_then(|end| bytes.get(start..end)) else {
            found.note(format!(
                "WebP chunk `{}` at offset {pos} claims {len} bytes, {} left; stopped reading",
                String::from_utf8_lossy(&fourcc),
                bytes.len() - start
            ));
            return;
        };
        match &fourcc {
            b"EXIF" => {
                // Some writers keep the JPEG APP1 `Exif\0\0` prefix, others do not.
                let tiff = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
                exif::read_tiff(tiff, found);
            }
            b"XMP " => {
                let xmp = text::utf8_lossy(data, "WebP XMP", found);
                found.push("XMP", xmp);
            }
            _ => {}
        }
        pos = start + len + (len & 1);
    }
}

/// Whether the bytes are a RIFF WebP.
pub(crate) fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP"
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exif::tests::{tiff_with_user_comment, unicode_comment};

    pub(crate) fn webp_with(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        for (fourcc, data) in chunks {
            body.extend_from_slice(*fourcc);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn exif_with_and_without_prefix() {
        let tiff = tiff_with_user_comment(&unicode_comment("x\nSteps: 2", true));
        let mut prefixed = b"Exif\0\0".to_vec();
        prefixed.extend_from_slice(&tiff);
        for data in [tiff.clone(), prefixed] {
            let webp = webp_with(&[(b"VP8L", vec![0; 5]), (b"EXIF", data)]);
            let mut found = Found::default();
            read_text(&webp, &mut found);
            assert_eq!(found.entries[0].text, "x\nSteps: 2");
        }
    }

    #[test]
    fn truncated_chunk_is_a_finding() {
        let webp = webp_with(&[(b"EXIF", vec![1; 40])]);
        let mut found = Found::default();
        read_text(&webp[..30], &mut found);
        assert!(found.findings.iter().any(|f| f.contains("claims 40 bytes")));
    }
}
