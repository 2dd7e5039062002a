//! Text entries found in an image container, and the decoding rules shared by all containers.

use std::io::Read;

/// Largest text kept from one chunk or tag, after decompression (32 MiB).
///
/// ComfyUI workflows reach a few MiB; anything larger is treated as hostile and skipped with a
/// finding, so that a crafted file cannot make danlu hold gigabytes of text.
pub const MAX_TEXT_BYTES: usize = 32 << 20;

/// One piece of text metadata found in an image, before interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextEntry {
    /// The keyword (PNG) or a tag name (`UserComment`, `Make`, `comment` for JPEG COM, `XMP`).
    pub key: String,
    /// The decoded text.
    pub text: String,
}

/// Everything a container walk found: text entries, and problems met on the way.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub entries: Vec<TextEntry>,
    pub findings: Vec<String>,
}

impl Found {
    pub(crate) fn push(&mut self, key: impl Into<String>, text: impl Into<String>) {
        self.entries.push(TextEntry {
            key: key.into(),
            text: text.into(),
        });
    }

    pub(crate) fn note(&mut self, finding: impl Into<String>) {
        self.findings.push(finding.into());
    }
}

/// Decodes Latin-1 (the PNG `tEXt`/`zTXt` encoding) into a string.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Decodes a `tEXt`/`zTXt` payload.
///
/// The PNG specification says Latin-1, but several tools (Stability Matrix among them) store
/// UTF-8 bytes there; read with Latin-1 they give mojibake such as `ã\u{83}\u{86}`. When the
/// bytes are valid UTF-8 and not plain ASCII, they are read as UTF-8 and a finding says so.
pub(crate) fn decode_latin1_chunk(bytes: &[u8], key: &str, found: &mut Found) -> String {
    if !bytes.is_ascii()
        && let Ok(s) = std::str::from_utf8(bytes)
    {
        found.note(format!(
            "text chunk `{key}` holds UTF-8 where PNG says Latin-1; read as UTF-8 (Latin-1 would give mojibake)"
        ));
        return s.to_owned();
    }
    latin1(bytes)
}

/// Undoes UTF-8 text that was mis-decoded as Latin-1, when the result round-trips.
///
/// Returns the repaired text when every character is below U+0100, some are above U+007F, and
/// their bytes form valid UTF-8 with at least one multi-byte sequence; `None` otherwise.
pub(crate) fn repair_mojibake(s: &str) -> Option<String> {
    if s.is_ascii() || s.chars().any(|c| u32::from(c) > 0xFF) {
        return None;
    }
    let bytes: Vec<u8> = s.chars().map(|c| u32::from(c) as u8).collect();
    match String::from_utf8(bytes) {
        Ok(fixed) if fixed != s => Some(fixed),
        _ => None,
    }
}

/// Inflates zlib data, refusing to produce more than [`MAX_TEXT_BYTES`].
///
/// # Errors
/// A message naming the problem (corrupt stream, or over the limit) for a finding.
pub(crate) fn inflate_limited(data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let decoder = flate2::read::ZlibDecoder::new(data);
    read_limited(decoder, "zlib")
}

/// Inflates gzip data with the same limit as [`inflate_limited`].
pub(crate) fn gunzip_limited(data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let decoder = flate2::read::GzDecoder::new(data);
    read_limited(decoder, "gzip")
}

fn read_limited(reader: impl Read, what: &str) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut limited = reader.take(MAX_TEXT_BYTES as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} stream is corrupt ({e})"))?;
    if out.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "{what} stream inflates past the {} MiB limit (a decompression bomb?); skipped",
            MAX_TEXT_BYTES >> 20
        ));
    }
    Ok(out)
}

/// Decodes UTF-8 with U+FFFD for bad bytes, noting the problem.
pub(crate) fn utf8_lossy(bytes: &[u8], what: &str, found: &mut Found) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            found.note(format!(
                "{what} is not valid UTF-8; bad bytes replaced with U+FFFD"
            ));
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// Parses JSON as Python writes it: `NaN`, `Infinity` and `-Infinity` outside strings (which
/// Python's `json.dumps` emits and ComfyUI graphs can contain) are read as `null`.
pub(crate) fn parse_json_lenient(text: &str) -> Option<serde_json::Value> {
    if let Ok(v) = serde_json::from_str(text) {
        return Some(v);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let mut replaced = false;
        for token in ["-Infinity", "Infinity", "NaN"] {
            if rest.starts_with(token) {
                out.push_str("null");
                rest = &rest[token.len()..];
                replaced = true;
                break;
            }
        }
        if !replaced {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    serde_json::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mojibake_of_katakana_is_repaired() {
        let broken = latin1("テスト".as_bytes());
        assert_eq!(repair_mojibake(&broken).as_deref(), Some("テスト"));
    }

    #[test]
    fn real_latin1_text_is_left_alone() {
        assert_eq!(repair_mojibake("café"), None);
        assert_eq!(repair_mojibake("plain"), None);
    }

    #[test]
    fn python_nan_in_json_reads_as_null() {
        let v = parse_json_lenient(r#"{"a": NaN, "b": "NaN", "c": -Infinity}"#).unwrap();
        assert!(v["a"].is_null());
        assert_eq!(v["b"], "NaN");
        assert!(v["c"].is_null());
    }

    #[test]
    fn zlib_bomb_is_refused() {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_TEXT_BYTES >> 20) + 2 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 200_000);
        let err = inflate_limited(&bomb).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }
}
