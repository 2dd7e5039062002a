//! JPEG segments: APP1 `Exif`, APP1 XMP and COM comments.
//!
//! Layout from ITU-T T.81 annex B: markers `FF xx`; all but SOI, EOI, RSTn and TEM carry a
//! 2-byte big-endian length that counts itself. Metadata comes before the first SOS.

use crate::exif;
use crate::text::{self, Found};

const XMP_ID: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// Reads the metadata segments of a JPEG whose SOI was checked by the caller.
pub(crate) fn read_text(bytes: &[u8], found: &mut Found) {
    let mut pos = 2;
    let mut exif_seen = false;
    loop {
        // Skip fill bytes up to the next marker.
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(pos), bytes.get(pos + 1)) else {
            if pos < bytes.len() {
                found.note(format!(
                    "JPEG has no marker at offset {pos}; stopped reading segments"
                ));
            } else {
                found.note("JPEG ends before image data");
            }
            return;
        };
        pos += 2;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => return,
            _ => {}
        }
        let Some(len_bytes) = bytes.get(pos..pos + 2) else {
            found.note(format!("JPEG segment length at offset {pos} is truncated"));
            return;
        };
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            found.note(format!(
                "JPEG segment at offset {} has impossible length {len}",
                pos - 2
            ));
            return;
        }
        let Some(payload) = bytes.get(pos + 2..pos + len) else {
            found.note(format!(
                "JPEG segment FF{marker:02X} at offset {} is truncated: {} bytes claimed, {} left",
                pos - 2,
                len,
                bytes.len() - pos
            ));
            return;
        };
        match marker {
            0xE1 if payload.starts_with(b"Exif\0\0") => {
                if exif_seen {
                    found.note("JPEG has a second EXIF segment; ignored");
                } else {
                    exif_seen = true;
                    exif::read_tiff(&payload[6..], found);
                }
            }
            0xE1 if payload.starts_with(XMP_ID) => {
                let xmp = text::utf8_lossy(&payload[XMP_ID.len()..], "JPEG XMP", found);
                found.push("XMP", xmp);
            }
            0xFE => {
                let comment = text::utf8_lossy(payload, "JPEG comment", found);
                found.push("comment", comment);
            }
            _ => {}
        }
        pos += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exif::tests::{tiff_with_user_comment, unicode_comment};

    pub(crate) fn jpeg_with(segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8];
        for (marker, payload) in segments {
            out.extend_from_slice(&[0xFF, *marker]);
            out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out.extend_from_slice(&[0xFF, 0xDA, 0, 2, 0xFF, 0xD9]);
        out
    }

    #[test]
    fn exif_and_comment_are_read() {
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff_with_user_comment(&unicode_comment(
            "p\nSteps: 1",
            true,
        )));
        let jpeg = jpeg_with(&[(0xE1, app1), (0xFE, b"hello".to_vec())]);
        let mut found = Found::default();
        read_text(&jpeg, &mut found);
        assert_eq!(found.entries[0].text, "p\nSteps: 1");
        assert_eq!(found.entries[1].key, "comment");
        assert_eq!(found.entries[1].text, "hello");
    }

    #[test]
    fn truncated_segments_never_panic() {
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff_with_user_comment(&unicode_comment("p", true)));
        let jpeg = jpeg_with(&[(0xE1, app1)]);
        for cut in 2..jpeg.len() {
            let mut found = Found::default();
            read_text(&jpeg[..cut], &mut found);
        }
    }
}
