//! File names that come from servers, made safe to use as one name in one folder.

/// Names Windows reserves whatever the extension (`CON.txt` is still `CON`).
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Longest name kept, in bytes (ext4 and NTFS allow 255; room is left for `.part.lock`).
const MAX_NAME: usize = 200;

/// Turns a name from a server into a single safe file name, or `None` when nothing usable is
/// left. Only the last path component is kept (`../../x` and `/etc/x` become `x`), control
/// characters and characters Windows forbids become `_`, leading dots and trailing dots and
/// spaces are dropped, Windows reserved names get a `_` prefix, and the length is bounded.
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    name = name
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
        .to_owned();
    if name.is_empty() {
        return None;
    }
    let stem = name.split('.').next().unwrap_or_default();
    if RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem.trim_end()))
    {
        name.insert(0, '_');
    }
    if name.len() > MAX_NAME {
        // Keep the extension, cut the stem at a character boundary.
        let ext = name
            .rfind('.')
            .map(|i| name[i..].to_owned())
            .filter(|e| e.len() < 16)
            .unwrap_or_default();
        let mut cut = MAX_NAME - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name = format!("{}{ext}", &name[..cut]);
    }
    Some(name)
}

/// The file name a `Content-Disposition` header gives: `filename*=UTF-8''...` (RFC 6266,
/// preferred) or `filename="..."`, sanitised with [`sanitize_file_name`].
pub fn parse_content_disposition(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for part in header.split(';').map(str::trim) {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let v = value.trim().trim_matches('"');
                // charset'language'percent-encoded
                let encoded = v.splitn(3, '\'').nth(2).unwrap_or(v);
                extended = Some(crate::source::percent_decode(encoded));
            }
            "filename" => {
                let v = value.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                plain = Some(v.replace("\\\"", "\""));
            }
            _ => {}
        }
    }
    extended.or(plain).and_then(|n| sanitize_file_name(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_absolute_paths_keep_only_the_last_component() {
        assert_eq!(
            sanitize_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_file_name("/abs/m.safetensors").as_deref(),
            Some("m.safetensors")
        );
        assert_eq!(
            sanitize_file_name("..\\..\\win.ckpt").as_deref(),
            Some("win.ckpt")
        );
        assert_eq!(sanitize_file_name(".."), None);
        assert_eq!(sanitize_file_name("/"), None);
        assert_eq!(sanitize_file_name(".hidden").as_deref(), Some("hidden"));
    }

    #[test]
    fn reserved_names_and_control_characters_are_neutralised() {
        assert_eq!(
            sanitize_file_name("CON.safetensors").as_deref(),
            Some("_CON.safetensors")
        );
        assert_eq!(sanitize_file_name("nul").as_deref(), Some("_nul"));
        assert_eq!(
            sanitize_file_name("a\nb\u{7}.ckpt").as_deref(),
            Some("a_b_.ckpt")
        );
        assert_eq!(sanitize_file_name("what?.pt ").as_deref(), Some("what_.pt"));
        let long = format!("{}.safetensors", "x".repeat(400));
        let s = sanitize_file_name(&long).unwrap();
        assert!(s.len() <= MAX_NAME && s.ends_with(".safetensors"));
    }

    #[test]
    fn content_disposition_prefers_the_extended_form() {
        assert_eq!(
            parse_content_disposition(r#"attachment; filename="a b.safetensors""#).as_deref(),
            Some("a b.safetensors")
        );
        assert_eq!(
            parse_content_disposition(
                "attachment; filename=\"x.bin\"; filename*=UTF-8''%E5%9B%BD%E9%A3%8E.safetensors"
            )
            .as_deref(),
            Some("国风.safetensors")
        );
        assert_eq!(
            parse_content_disposition("attachment; filename=\"../../evil.ckpt\"").as_deref(),
            Some("evil.ckpt")
        );
        assert_eq!(parse_content_disposition("inline"), None);
    }
}
