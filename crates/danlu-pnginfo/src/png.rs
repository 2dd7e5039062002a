//! PNG chunks: reading `tEXt`, `zTXt`, `iTXt` and `eXIf`, and writing a `parameters` chunk.
//!
//! Layout from the PNG specification (W3C, third edition), section 5: an 8-byte signature, then
//! chunks of `length (u32 BE) | type (4 bytes) | data | CRC-32 of type and data`.

use std::path::Path;

use crate::error::{Error, Result, magic_hex};
use crate::exif;
use crate::text::{self, Found, MAX_TEXT_BYTES};

/// The 8-byte PNG signature.
pub(crate) const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Largest chunk length the specification allows (2^31 - 1).
const MAX_CHUNK: u64 = (1 << 31) - 1;

/// One chunk as located in the file.
struct Chunk<'a> {
    offset: usize,
    kind: [u8; 4],
    data: &'a [u8],
    crc_ok: bool,
    /// The whole chunk (length, type, data, CRC) as stored.
    whole: &'a [u8],
}

/// Walks the chunks after the signature; damage ends the walk with a finding.
fn walk<'a>(bytes: &'a [u8], findings: &mut Vec<String>) -> Vec<Chunk<'a>> {
    let mut chunks = Vec::new();
    let mut pos = SIGNATURE.len();
    loop {
        if pos == bytes.len() {
            findings.push("PNG ends without an IEND chunk".to_owned());
            break;
        }
        let Some(head) = bytes.get(pos..pos + 8) else {
            findings.push(format!(
                "PNG chunk header at offset {pos} is truncated ({} bytes left)",
                bytes.len() - pos
            ));
            break;
        };
        let len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let kind = [head[4], head[5], head[6], head[7]];
        let name = String::from_utf8_lossy(&kind).into_owned();
        if len > MAX_CHUNK {
            findings.push(format!(
                "PNG chunk `{name}` at offset {pos} claims {len} bytes, over the 2^31-1 limit; stopped reading"
            ));
            break;
        }
        let data_start = pos + 8;
        let data_end = data_start.saturating_add(len as usize);
        let crc_end = data_end.saturating_add(4);
        if crc_end > bytes.len() {
            findings.push(format!(
                "PNG chunk `{name}` at offset {pos} is truncated: needs {} bytes, {} left",
                len + 12,
                bytes.len() - pos
            ));
            break;
        }
        let data = &bytes[data_start..data_end];
        let stored = u32::from_be_bytes([
            bytes[data_end],
            bytes[data_end + 1],
            bytes[data_end + 2],
            bytes[data_end + 3],
        ]);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&kind);
        hasher.update(data);
        let crc_ok = hasher.finalize() == stored;
        chunks.push(Chunk {
            offset: pos,
            kind,
            data,
            crc_ok,
            whole: &bytes[pos..crc_end],
        });
        pos = crc_end;
        if &kind == b"IEND" {
            break;
        }
    }
    chunks
}

/// Reads the text metadata of a PNG whose signature was checked by the caller.
pub(crate) fn read_text(bytes: &[u8], found: &mut Found) {
    let chunks = walk(bytes, &mut found.findings);
    for chunk in chunks {
        let name = String::from_utf8_lossy(&chunk.kind).into_owned();
        let is_text = matches!(&chunk.kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf");
        if !is_text {
            continue;
        }
        if !chunk.crc_ok {
            found.note(format!(
                "PNG chunk `{name}` at offset {} has a wrong CRC; read anyway",
                chunk.offset
            ));
        }
        if chunk.data.len() > MAX_TEXT_BYTES {
            found.note(format!(
                "PNG chunk `{name}` at offset {} is {} bytes, over the {} MiB text limit; skipped",
                chunk.offset,
                chunk.data.len(),
                MAX_TEXT_BYTES >> 20
            ));
            continue;
        }
        match &chunk.kind {
            b"tEXt" => read_text_chunk(chunk.data, chunk.offset, found),
            b"zTXt" => read_ztxt_chunk(chunk.data, chunk.offset, found),
            b"iTXt" => read_itxt_chunk(chunk.data, chunk.offset, found),
            _ => {
                let mut sub = Found::default();
                exif::read_tiff(chunk.data, &mut sub);
                found.entries.extend(sub.entries);
                found
                    .findings
                    .extend(sub.findings.into_iter().map(|f| format!("eXIf chunk: {f}")));
            }
        }
    }
}

/// Splits `keyword \0 rest`; the keyword is Latin-1, 1 to 79 bytes.
fn split_keyword(data: &[u8]) -> Option<(String, &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    if nul == 0 {
        return None;
    }
    Some((text::latin1(&data[..nul]), &data[nul + 1..]))
}

fn read_text_chunk(data: &[u8], offset: usize, found: &mut Found) {
    let Some((key, rest)) = split_keyword(data) else {
        found.note(format!(
            "tEXt chunk at offset {offset} has no keyword separator; skipped"
        ));
        return;
    };
    let text = text::decode_latin1_chunk(rest, &key, found);
    found.push(key, text);
}

fn read_ztxt_chunk(data: &[u8], offset: usize, found: &mut Found) {
    let Some((key, rest)) = split_keyword(data) else {
        found.note(format!(
            "zTXt chunk at offset {offset} has no keyword separator; skipped"
        ));
        return;
    };
    let Some((&method, compressed)) = rest.split_first() else {
        found.note(format!(
            "zTXt chunk `{key}` at offset {offset} is truncated; skipped"
        ));
        return;
    };
    if method != 0 {
        found.note(format!(
            "zTXt chunk `{key}` uses unknown compression method {method}; skipped"
        ));
        return;
    }
    match text::inflate_limited(compressed) {
        Ok(raw) => {
            let text = text::decode_latin1_chunk(&raw, &key, found);
            found.push(key, text);
        }
        Err(e) => found.note(format!("zTXt chunk `{key}` at offset {offset}: {e}")),
    }
}

fn read_itxt_chunk(data: &[u8], offset: usize, found: &mut Found) {
    let Some((key, rest)) = split_keyword(data) else {
        found.note(format!(
            "iTXt chunk at offset {offset} has no keyword separator; skipped"
        ));
        return;
    };
    let truncated = |found: &mut Found| {
        found.note(format!(
            "iTXt chunk `{key}` at offset {offset} is truncated; skipped"
        ));
    };
    let [flag, method, rest @ ..] = rest else {
        truncated(found);
        return;
    };
    // Language tag, then translated keyword, each NUL-terminated.
    let Some(lang_end) = rest.iter().position(|&b| b == 0) else {
        truncated(found);
        return;
    };
    let rest = &rest[lang_end + 1..];
    let Some(tkey_end) = rest.iter().position(|&b| b == 0) else {
        truncated(found);
        return;
    };
    let payload = &rest[tkey_end + 1..];
    let raw = if *flag == 1 {
        if *method != 0 {
            found.note(format!(
                "iTXt chunk `{key}` uses unknown compression method {method}; skipped"
            ));
            return;
        }
        match text::inflate_limited(payload) {
            Ok(raw) => raw,
            Err(e) => {
                found.note(format!("iTXt chunk `{key}` at offset {offset}: {e}"));
                return;
            }
        }
    } else {
        payload.to_vec()
    };
    let text = text::utf8_lossy(&raw, &format!("iTXt chunk `{key}`"), found);
    found.push(key, text);
}

/// Builds one PNG chunk with its length and CRC.
pub(crate) fn make_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(kind);
    hasher.update(data);
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out
}

/// The chunk A1111 writes for a `parameters` text, through Pillow's `PngInfo.add_text`:
/// `tEXt` when the text encodes to Latin-1, otherwise an uncompressed `iTXt` with empty language
/// and translated keyword (Pillow `PngImagePlugin.PngInfo.add_text`, `add_itxt`).
pub(crate) fn text_chunk(key: &str, value: &str) -> Vec<u8> {
    let latin1: Option<Vec<u8>> = value
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    let mut data = Vec::with_capacity(key.len() + value.len() + 5);
    data.extend_from_slice(key.as_bytes());
    data.push(0);
    match latin1 {
        Some(bytes) => {
            data.extend_from_slice(&bytes);
            make_chunk(b"tEXt", &data)
        }
        None => {
            data.extend_from_slice(&[0, 0, 0, 0]);
            data.extend_from_slice(value.as_bytes());
            make_chunk(b"iTXt", &data)
        }
    }
}

/// Whether a text chunk's keyword is `key`.
fn chunk_keyword_is(chunk: &Chunk<'_>, key: &str) -> bool {
    matches!(&chunk.kind, b"tEXt" | b"zTXt" | b"iTXt")
        && chunk
            .data
            .iter()
            .position(|&b| b == 0)
            .is_some_and(|nul| &chunk.data[..nul] == key.as_bytes())
}

/// Returns a copy of `png` whose `parameters` text is `text`: every existing `parameters`
/// chunk (`tEXt`, `zTXt` or `iTXt`) is dropped and one new chunk is put before the first
/// `IDAT`, as A1111 saves it.
pub(crate) fn with_parameters(png: &[u8], text: &str, path: &Path) -> Result<Vec<u8>> {
    if !png.starts_with(&SIGNATURE) {
        return Err(Error::NotPng {
            path: path.to_path_buf(),
            magic: magic_hex(png),
        });
    }
    let encoded_len = text.len() + "parameters".len() + 5;
    if encoded_len as u64 > MAX_CHUNK {
        return Err(Error::TextTooLarge {
            path: path.to_path_buf(),
            len: encoded_len as u64,
            max: MAX_CHUNK,
        });
    }
    let mut findings = Vec::new();
    let chunks = walk(png, &mut findings);
    let damaged = |offset: usize, problem: String| Error::DamagedPng {
        path: path.to_path_buf(),
        offset: offset as u64,
        problem,
    };
    match chunks.first() {
        Some(c) if &c.kind == b"IHDR" => {}
        Some(c) => {
            return Err(damaged(c.offset, "first chunk is not IHDR".to_owned()));
        }
        None => return Err(damaged(SIGNATURE.len(), "no chunks".to_owned())),
    }
    if chunks.last().is_none_or(|c| &c.kind != b"IEND") {
        let problem = findings
            .first()
            .cloned()
            .unwrap_or_else(|| "no IEND chunk".to_owned());
        let offset = chunks
            .last()
            .map_or(SIGNATURE.len(), |c| c.offset + c.whole.len());
        return Err(damaged(offset, problem));
    }
    if !chunks.iter().any(|c| &c.kind == b"IDAT") {
        return Err(damaged(SIGNATURE.len(), "no IDAT chunk".to_owned()));
    }
    let new_chunk = text_chunk("parameters", text);
    let mut out = Vec::with_capacity(png.len() + new_chunk.len());
    out.extend_from_slice(&SIGNATURE);
    let mut inserted = false;
    for chunk in &chunks {
        if chunk_keyword_is(chunk, "parameters") {
            continue;
        }
        if !inserted && &chunk.kind == b"IDAT" {
            out.extend_from_slice(&new_chunk);
            inserted = true;
        }
        out.extend_from_slice(chunk.whole);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 1x1 RGB PNG built chunk by chunk, with optional extra chunks before IDAT.
    pub(crate) fn tiny_png(extra: &[Vec<u8>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0];
        out.extend(make_chunk(b"IHDR", &ihdr));
        for c in extra {
            out.extend_from_slice(c);
        }
        // zlib stream of one filter byte and three zero samples.
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &[0, 0, 0, 0]).unwrap();
        out.extend(make_chunk(b"IDAT", &enc.finish().unwrap()));
        out.extend(make_chunk(b"IEND", &[]));
        out
    }

    fn read(bytes: &[u8]) -> Found {
        let mut found = Found::default();
        read_text(bytes, &mut found);
        found
    }

    #[test]
    fn text_ztxt_and_itxt_are_read() {
        let mut z = b"z\0\0".to_vec();
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, b"zipped").unwrap();
        z.extend(enc.finish().unwrap());
        let png = tiny_png(&[
            make_chunk(b"tEXt", b"a\0caf\xe9"),
            make_chunk(b"zTXt", &z),
            make_chunk(b"iTXt", "i\0\0\0en\0\0テスト".as_bytes()),
        ]);
        let found = read(&png);
        let got: Vec<(&str, &str)> = found
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.text.as_str()))
            .collect();
        assert_eq!(got, [("a", "café"), ("z", "zipped"), ("i", "テスト")]);
        assert!(found.findings.is_empty(), "{:?}", found.findings);
    }

    #[test]
    fn compressed_itxt_and_exif_chunk_are_read() {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, "テスト\nSteps: 1".as_bytes()).unwrap();
        let mut itxt = b"parameters\0\x01\0\0\0".to_vec();
        itxt.extend(enc.finish().unwrap());
        let exif = crate::exif::tests::tiff_with_user_comment(
            &crate::exif::tests::unicode_comment("from exif", true),
        );
        let found = read(&tiny_png(&[
            make_chunk(b"iTXt", &itxt),
            make_chunk(b"eXIf", &exif),
        ]));
        assert_eq!(found.entries[0].text, "テスト\nSteps: 1");
        assert_eq!(found.entries[1].key, "UserComment");
        assert_eq!(found.entries[1].text, "from exif");
        assert!(found.findings.is_empty(), "{:?}", found.findings);
    }

    #[test]
    fn wrong_crc_is_a_finding_and_text_is_kept() {
        let mut bad = make_chunk(b"tEXt", b"parameters\0hello");
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let found = read(&tiny_png(&[bad]));
        assert_eq!(found.entries[0].text, "hello");
        assert!(found.findings.iter().any(|f| f.contains("wrong CRC")));
    }

    #[test]
    fn truncated_chunk_is_a_finding_not_a_panic() {
        let png = tiny_png(&[make_chunk(b"tEXt", b"parameters\0hello world")]);
        for cut in 8..png.len() {
            let found = read(&png[..cut]);
            assert!(!found.findings.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn lying_chunk_length_stops_the_walk() {
        let mut png = tiny_png(&[]);
        // IHDR length field says 0xFFFFFFF0.
        png[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        let found = read(&png);
        assert!(found.findings.iter().any(|f| f.contains("over the 2^31-1")));
    }

    #[test]
    fn parameters_chunk_replaces_old_ones_before_idat() {
        let png = tiny_png(&[
            make_chunk(b"tEXt", b"parameters\0old"),
            make_chunk(b"tEXt", b"other\0kept"),
        ]);
        let out = with_parameters(&png, "new", Path::new("x.png")).unwrap();
        let found = read(&out);
        let keys: Vec<_> = found.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["other", "parameters"]);
        assert_eq!(found.entries[1].text, "new");
        assert!(found.findings.is_empty());
        let mut f2 = Vec::new();
        let kinds: Vec<[u8; 4]> = walk(&out, &mut f2).iter().map(|c| c.kind).collect();
        let idat = kinds.iter().position(|k| k == b"IDAT").unwrap();
        let params = kinds.iter().position(|k| k == b"tEXt").unwrap();
        assert!(params < idat);
    }

    #[test]
    fn non_latin1_parameters_go_to_itxt() {
        let chunk = text_chunk("parameters", "テスト");
        assert_eq!(&chunk[4..8], b"iTXt");
        let chunk = text_chunk("parameters", "café");
        assert_eq!(&chunk[4..8], b"tEXt");
    }

    #[test]
    fn rewriting_a_truncated_png_is_an_error() {
        let png = tiny_png(&[]);
        let err = with_parameters(&png[..png.len() - 3], "x", Path::new("t.png")).unwrap_err();
        assert!(matches!(err, Error::DamagedPng { .. }), "{err}");
        assert!(err.to_string().contains("t.png"));
    }
}
