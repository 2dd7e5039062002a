//! EXIF (TIFF) tags that carry generation parameters: IFD0 `ImageDescription`, `Make`, `Model`,
//! `Software`, `DocumentName`, `XPComment`, and `UserComment` in the Exif sub-IFD (or, as some
//! ComfyUI nodes write it, in IFD0).
//!
//! Layout from TIFF 6.0 section 2 and EXIF 2.32 (CIPA DC-008) 4.6: a byte-order mark (`II` or
//! `MM`), 42, the IFD0 offset; each IFD is a count and 12-byte entries `tag, type, count,
//! value-or-offset`. Every offset is checked against the data; a lying one is a finding.

use crate::text::{self, Found, MAX_TEXT_BYTES};

/// Tags read from IFD0 and the Exif IFD, with the entry name they are filed under.
const TAGS: &[(u16, &str)] = &[
    (0x010D, "DocumentName"),
    (0x010E, "ImageDescription"),
    (0x010F, "Make"),
    (0x0110, "Model"),
    (0x0131, "Software"),
    (0x013B, "Artist"),
    (0x9286, "UserComment"),
    (0x9C9C, "XPComment"),
];

const EXIF_IFD: u16 = 0x8769;

/// Most entries read from one IFD; real images have a few dozen.
const MAX_ENTRIES: usize = 1024;

struct Tiff<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Tiff<'_> {
    fn u16_at(&self, off: usize) -> Option<u16> {
        let b = self.data.get(off..off.checked_add(2)?)?;
        Some(if self.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.data.get(off..off.checked_add(4)?)?;
        Some(if self.big_endian {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })
    }
}

/// Size in bytes of one value of a TIFF field type, `None` for unknown types.
fn type_size(kind: u16) -> Option<usize> {
    match kind {
        1 | 2 | 6 | 7 => Some(1),
        3 | 8 => Some(2),
        4 | 9 | 11 => Some(4),
        5 | 10 | 12 => Some(8),
        _ => None,
    }
}

/// Reads the tags of interest from a TIFF structure (the APP1 payload after `Exif\0\0`).
pub(crate) fn read_tiff(data: &[u8], found: &mut Found) {
    let big_endian = match data.get(..4) {
        Some([b'M', b'M', 0, 42]) => true,
        Some([b'I', b'I', 42, 0]) => false,
        _ => {
            found.note(format!(
                "EXIF data does not start with a TIFF header ({} bytes); skipped",
                data.len()
            ));
            return;
        }
    };
    let tiff = Tiff { data, big_endian };
    let Some(ifd0) = tiff.u32_at(4) else {
        return;
    };
    let mut visited = Vec::new();
    let exif_ifd = read_ifd(&tiff, ifd0 as usize, "IFD0", found, &mut visited);
    if let Some(off) = exif_ifd {
        read_ifd(&tiff, off as usize, "Exif IFD", found, &mut visited);
    }
}

/// Reads one IFD; returns the Exif sub-IFD offset when it has one.
fn read_ifd(
    tiff: &Tiff<'_>,
    offset: usize,
    name: &str,
    found: &mut Found,
    visited: &mut Vec<usize>,
) -> Option<u32> {
    if visited.contains(&offset) {
        found.note(format!(
            "EXIF {name} at offset {offset} was already read (a loop); skipped"
        ));
        return None;
    }
    visited.push(offset);
    let Some(count) = tiff.u16_at(offset) else {
        found.note(format!(
            "EXIF {name} offset {offset} is past the end of the {}-byte EXIF data",
            tiff.data.len()
        ));
        return None;
    };
    let mut count = usize::from(count);
    let available = tiff.data.len().saturating_sub(offset + 2) / 12;
    if count > available {
        found.note(format!(
            "EXIF {name} claims {count} entries but only {available} fit; reading those"
        ));
        count = available;
    }
    count = count.min(MAX_ENTRIES);
    let mut sub_ifd = None;
    for i in 0..count {
        let entry = offset + 2 + i * 12;
        let (Some(tag), Some(kind), Some(n), Some(value)) = (
            tiff.u16_at(entry),
            tiff.u16_at(entry + 2),
            tiff.u32_at(entry + 4),
            tiff.u32_at(entry + 8),
        ) else {
            break;
        };
        if tag == EXIF_IFD {
            sub_ifd = Some(value);
            continue;
        }
        let Some(&(_, tag_name)) = TAGS.iter().find(|(t, _)| *t == tag) else {
            continue;
        };
        let Some(size) = type_size(kind) else {
            found.note(format!(
                "EXIF tag {tag_name} has unknown type {kind}; skipped"
            ));
            continue;
        };
        let Some(len) = (n as usize).checked_mul(size) else {
            continue;
        };
        let bytes = if len <= 4 {
            &tiff.data[entry + 8..entry + 8 + len]
        } else {
            let start = value as usize;
            match start
                .checked_add(len)
                .and_then(|end| tiff.data.get(start..end))
            {
                Some(b) => b,
                None => {
                    found.note(format!(
                        "EXIF tag {tag_name} points past the end: {len} bytes at offset {start}, EXIF data is {} bytes; skipped",
                        tiff.data.len()
                    ));
                    continue;
                }
            }
        };
        if bytes.len() > MAX_TEXT_BYTES {
            found.note(format!(
                "EXIF tag {tag_name} is {} bytes, over the text limit; skipped",
                bytes.len()
            ));
            continue;
        }
        let decoded = match tag {
            0x9286 => decode_user_comment(bytes, kind, found),
            0x9C9C => decode_utf16(bytes, false),
            _ => decode_ascii(bytes, tag_name, found),
        };
        found.push(tag_name, decoded);
    }
    sub_ifd
}

/// Decodes an ASCII-typed tag: trailing and leading NULs dropped, UTF-8 when valid (tools put
/// UTF-8 there), repaired when it is UTF-8 that was mis-decoded as Latin-1 earlier.
fn decode_ascii(bytes: &[u8], tag_name: &str, found: &mut Found) -> String {
    let trimmed = trim_nuls(bytes);
    let s = match std::str::from_utf8(trimmed) {
        Ok(s) => s.to_owned(),
        Err(_) => text::latin1(trimmed),
    };
    match text::repair_mojibake(&s) {
        Some(fixed) => {
            found.note(format!(
                "EXIF {tag_name} held UTF-8 mis-decoded as Latin-1 (mojibake); repaired"
            ));
            fixed
        }
        None => s,
    }
}

fn trim_nuls(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != 0).map_or(start, |p| p + 1);
    &bytes[start..end.max(start)]
}

/// Decodes `UserComment`: an 8-byte character code then the text (EXIF 2.32 table 9).
///
/// `UNICODE\0` is UCS-2/UTF-16. A1111 writes it big-endian through
/// `piexif.helper.UserComment.dump(..., encoding="unicode")` (A1111 `modules/images.py`
/// `save_image_with_geninfo`); others follow the TIFF byte order, so a byte-order mark is
/// honoured and otherwise the side with more zero bytes decides. `ASCII\0\0\0` and an all-zero
/// code are read as UTF-8; an `ASCII`-typed tag with no code (ComfyUI SaveImage-Plus) is text.
fn decode_user_comment(bytes: &[u8], kind: u16, found: &mut Found) -> String {
    let (code, rest) = if bytes.len() >= 8 {
        bytes.split_at(8)
    } else {
        (&bytes[..0], bytes)
    };
    match code {
        b"UNICODE\0" => {
            let big = utf16_is_big_endian(rest);
            decode_utf16(rest, big)
        }
        b"ASCII\0\0\0" | [0, 0, 0, 0, 0, 0, 0, 0] => {
            text::utf8_lossy(trim_nuls(rest), "EXIF UserComment", found)
        }
        b"JIS\0\0\0\0\0" => {
            found.note(
                "EXIF UserComment is JIS-encoded, which danlu does not decode; read as UTF-8",
            );
            text::utf8_lossy(trim_nuls(rest), "EXIF UserComment", found)
        }
        _ if kind == 2 || code.is_empty() => {
            text::utf8_lossy(trim_nuls(bytes), "EXIF UserComment", found)
        }
        _ => text::utf8_lossy(trim_nuls(bytes), "EXIF UserComment", found),
    }
}

/// Guesses UTF-16 byte order: a BOM wins, else the half with more zero bytes is the high byte.
fn utf16_is_big_endian(bytes: &[u8]) -> bool {
    match bytes {
        [0xFE, 0xFF, ..] => return true,
        [0xFF, 0xFE, ..] => return false,
        _ => {}
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for (i, &b) in bytes.iter().enumerate() {
        if b == 0 {
            if i % 2 == 0 {
                even += 1;
            } else {
                odd += 1;
            }
        }
    }
    even >= odd
}

/// Decodes UTF-16 (BOM dropped, trailing NULs dropped, lone surrogates replaced).
fn decode_utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks_exact(2).map(|p| {
        if big_endian {
            u16::from_be_bytes([p[0], p[1]])
        } else {
            u16::from_le_bytes([p[0], p[1]])
        }
    });
    let s: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    s.trim_start_matches('\u{FEFF}')
        .trim_end_matches('\0')
        .to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A big-endian TIFF with IFD0 pointing to an Exif IFD holding one `UserComment`.
    pub(crate) fn tiff_with_user_comment(comment: &[u8]) -> Vec<u8> {
        let mut t = b"MM\0\x2a\0\0\0\x08".to_vec();
        // IFD0: 1 entry (ExifIFD pointer), next-IFD 0.
        t.extend_from_slice(&1u16.to_be_bytes());
        t.extend_from_slice(&EXIF_IFD.to_be_bytes());
        t.extend_from_slice(&4u16.to_be_bytes());
        t.extend_from_slice(&1u32.to_be_bytes());
        t.extend_from_slice(&26u32.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        // Exif IFD at 26: 1 entry UserComment UNDEFINED.
        t.extend_from_slice(&1u16.to_be_bytes());
        t.extend_from_slice(&0x9286u16.to_be_bytes());
        t.extend_from_slice(&7u16.to_be_bytes());
        t.extend_from_slice(&(comment.len() as u32).to_be_bytes());
        t.extend_from_slice(&44u32.to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(comment);
        t
    }

    pub(crate) fn unicode_comment(s: &str, big: bool) -> Vec<u8> {
        let mut c = b"UNICODE\0".to_vec();
        for u in s.encode_utf16() {
            c.extend_from_slice(&if big {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            });
        }
        c
    }

    #[test]
    fn user_comment_utf16_both_byte_orders() {
        for big in [true, false] {
            let mut found = Found::default();
            read_tiff(
                &tiff_with_user_comment(&unicode_comment("a テスト\nb", big)),
                &mut found,
            );
            assert_eq!(found.entries[0].key, "UserComment");
            assert_eq!(found.entries[0].text, "a テスト\nb", "big endian {big}");
        }
    }

    #[test]
    fn ascii_user_comment() {
        let mut found = Found::default();
        read_tiff(&tiff_with_user_comment(b"ASCII\0\0\0{\"a\":1}"), &mut found);
        assert_eq!(found.entries[0].text, "{\"a\":1}");
    }

    #[test]
    fn lying_offsets_are_findings() {
        let mut t = tiff_with_user_comment(&unicode_comment("hello", true));
        // UserComment value offset -> far past the end.
        t[26 + 2 + 8..26 + 2 + 12].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
        let mut found = Found::default();
        read_tiff(&t, &mut found);
        assert!(found.entries.is_empty());
        assert!(
            found
                .findings
                .iter()
                .any(|f| f.contains("points past the end"))
        );

        // Exif IFD pointer past the end.
        let mut t = tiff_with_user_comment(b"ASCII\0\0\0x");
        t[8 + 2 + 8..8 + 2 + 12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        let mut found = Found::default();
        read_tiff(&t, &mut found);
        assert!(found.findings.iter().any(|f| f.contains("past the end")));

        // IFD pointing to itself.
        let mut t = tiff_with_user_comment(b"ASCII\0\0\0x");
        t[8 + 2 + 8..8 + 2 + 12].copy_from_slice(&8u32.to_be_bytes());
        let mut found = Found::default();
        read_tiff(&t, &mut found);
        assert!(found.findings.iter().any(|f| f.contains("loop")));
    }

    #[test]
    fn every_truncation_is_safe() {
        let t = tiff_with_user_comment(&unicode_comment("hello world", true));
        for cut in 0..t.len() {
            let mut found = Found::default();
            read_tiff(&t[..cut], &mut found);
        }
    }
}
