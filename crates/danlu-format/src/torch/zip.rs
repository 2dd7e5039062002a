//! A small zip reader: the central directory (ZIP64 too) and each member's local header, enough
//! to locate member data inside the file without copying it (PKWARE APPNOTE 6.3, sections 4.3
//! and 4.4). PyTorch writes members stored and 64-byte aligned (PyTorch
//! `caffe2/serialize/inline_container.cc`), so tensor data can be mapped in place.

use std::io::Read;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// Compression method "stored" (no compression).
pub(crate) const STORED: u16 = 0;
/// Compression method "deflated".
pub(crate) const DEFLATED: u16 = 8;

/// A structural problem, at an offset of the file.
#[derive(Debug)]
pub(crate) struct ZipError {
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

fn err(offset: usize, reason: impl Into<String>) -> ZipError {
    ZipError {
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// One member of the archive, as the central directory and its local header describe it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Name in the central directory (what zip tools and PyTorch list).
    pub(crate) name: String,
    /// Name in the local header (what streaming readers see); normally the same.
    pub(crate) local_name: String,
    /// General-purpose flag bits (bit 0: encrypted, bit 5: patched, bit 6: strong encryption).
    pub(crate) flags: u16,
    /// Compression method.
    pub(crate) method: u16,
    /// Bytes of (compressed) data in the file.
    pub(crate) compressed_size: u64,
    /// Bytes once decompressed.
    pub(crate) size: u64,
    /// Offset of the local header.
    pub(crate) header_offset: u64,
    /// Offset of the first byte of data.
    pub(crate) data_offset: u64,
}

impl Member {
    /// Whether the member is marked encrypted (flag bits 0 or 6).
    pub(crate) fn is_encrypted(&self) -> bool {
        self.flags & 0x41 != 0
    }

    /// The member's bytes as stored in the file.
    pub(crate) fn raw<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        let start = self.data_offset as usize;
        let end = start + self.compressed_size as usize;
        data.get(start..end).unwrap_or_default()
    }

    /// The member's content, decompressed when deflated, at most `max` bytes.
    pub(crate) fn content(&self, data: &[u8], max: u64) -> Result<Vec<u8>, String> {
        let raw = self.raw(data);
        match self.method {
            STORED => {
                if raw.len() as u64 > max {
                    return Err(format!("member is {} bytes, limit is {max}", raw.len()));
                }
                Ok(raw.to_vec())
            }
            DEFLATED => {
                let mut out = Vec::new();
                let mut dec = flate2::read::DeflateDecoder::new(raw).take(max.saturating_add(1));
                dec.read_to_end(&mut out)
                    .map_err(|e| format!("cannot inflate: {e}"))?;
                if out.len() as u64 > max {
                    return Err(format!("member inflates past the limit of {max} bytes"));
                }
                Ok(out)
            }
            m => Err(format!("compression method {m} is not supported")),
        }
    }

    /// The first bytes of the member's content (up to `n`), cheaply.
    pub(crate) fn head(&self, data: &[u8], n: usize) -> Vec<u8> {
        let raw = self.raw(data);
        match self.method {
            STORED => raw.iter().take(n).copied().collect(),
            DEFLATED => {
                let mut out = Vec::new();
                let dec = flate2::read::DeflateDecoder::new(raw);
                // A member that does not inflate has no head worth sniffing.
                let _ = dec.take(n as u64).read_to_end(&mut out);
                out
            }
            _ => Vec::new(),
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn bytes(&self, at: usize, n: usize, what: &str) -> Result<&[u8], ZipError> {
        at.checked_add(n)
            .and_then(|end| self.data.get(at..end))
            .ok_or_else(|| err(at, format!("{what} runs past the end of the file")))
    }

    fn u16(&self, at: usize, what: &str) -> Result<u16, ZipError> {
        let b = self.bytes(at, 2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&self, at: usize, what: &str) -> Result<u32, ZipError> {
        let b = self.bytes(at, 4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&self, at: usize, what: &str) -> Result<u64, ZipError> {
        let b = self.bytes(at, 8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn to_usize(v: u64, at: usize, what: &str) -> Result<usize, ZipError> {
    usize::try_from(v).map_err(|_| err(at, format!("{what} {v} is too large")))
}

/// Reads every member of the archive from its central directory and local headers.
pub(crate) fn read_members(data: &[u8]) -> Result<Vec<Member>, ZipError> {
    let r = Reader { data };
    // End of central directory: 22 bytes plus a comment of up to 65535 bytes, at the end.
    let lowest = data.len().saturating_sub(22 + 65535);
    let eocd = (lowest..=data.len().saturating_sub(22))
        .rev()
        .find(|&i| r.u32(i, "end of central directory").ok() == Some(EOCD_SIG))
        .ok_or_else(|| err(data.len(), "no end-of-central-directory record"))?;
    let mut entries = u64::from(r.u16(eocd + 10, "entry count")?);
    let mut cd_size = u64::from(r.u32(eocd + 12, "central directory size")?);
    let mut cd_offset = u64::from(r.u32(eocd + 16, "central directory offset")?);
    if entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // ZIP64: the locator sits just before the end record and points at the ZIP64 record.
        let loc = eocd
            .checked_sub(20)
            .ok_or_else(|| err(eocd, "ZIP64 fields without a ZIP64 locator"))?;
        if r.u32(loc, "ZIP64 locator")? != ZIP64_LOCATOR_SIG {
            return Err(err(loc, "ZIP64 fields without a ZIP64 locator"));
        }
        let z = to_usize(
            r.u64(loc + 8, "ZIP64 record offset")?,
            loc,
            "ZIP64 record offset",
        )?;
        if r.u32(z, "ZIP64 end record")? != ZIP64_EOCD_SIG {
            return Err(err(z, "bad ZIP64 end-of-central-directory signature"));
        }
        entries = r.u64(z + 32, "ZIP64 entry count")?;
        cd_size = r.u64(z + 40, "ZIP64 central directory size")?;
        cd_offset = r.u64(z + 48, "ZIP64 central directory offset")?;
    }
    let cd_start = to_usize(cd_offset, eocd, "central directory offset")?;
    let cd_end = cd_offset
        .checked_add(cd_size)
        .filter(|&e| e <= data.len() as u64)
        .ok_or_else(|| err(eocd, "central directory runs past the end of the file"))?;
    // Each entry takes at least 46 bytes, which bounds the count whatever the record claims.
    if entries > cd_size / 46 + 1 {
        return Err(err(
            eocd,
            format!("{entries} entries cannot fit in a {cd_size}-byte central directory"),
        ));
    }
    let mut members = Vec::with_capacity(entries as usize);
    let mut at = cd_start;
    for _ in 0..entries {
        if at as u64 >= cd_end {
            return Err(err(at, "central directory ends before its last entry"));
        }
        if r.u32(at, "central directory entry")? != CENTRAL_SIG {
            return Err(err(at, "bad central directory entry signature"));
        }
        let flags = r.u16(at + 8, "entry flags")?;
        let method = r.u16(at + 10, "compression method")?;
        let mut compressed_size = u64::from(r.u32(at + 20, "compressed size")?);
        let mut size = u64::from(r.u32(at + 24, "size")?);
        let name_len = usize::from(r.u16(at + 28, "name length")?);
        let extra_len = usize::from(r.u16(at + 30, "extra length")?);
        let comment_len = usize::from(r.u16(at + 32, "comment length")?);
        let mut header_offset = u64::from(r.u32(at + 42, "local header offset")?);
        let name = String::from_utf8_lossy(r.bytes(at + 46, name_len, "entry name")?).into_owned();
        let extra = r.bytes(at + 46 + name_len, extra_len, "entry extra field")?;
        // ZIP64 extended information (header id 1): the 64-bit values, in this order, for the
        // fields that are 0xffffffff.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16::from_le_bytes([extra[e], extra[e + 1]]);
            let len = usize::from(u16::from_le_bytes([extra[e + 2], extra[e + 3]]));
            let body = extra.get(e + 4..e + 4 + len).unwrap_or_default();
            if id == 1 {
                let mut vals = body.chunks_exact(8).map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    u64::from_le_bytes(a)
                });
                if size == 0xffff_ffff {
                    size = vals.next().unwrap_or(size);
                }
                if compressed_size == 0xffff_ffff {
                    compressed_size = vals.next().unwrap_or(compressed_size);
                }
                if header_offset == 0xffff_ffff {
                    header_offset = vals.next().unwrap_or(header_offset);
                }
            }
            e += 4 + len;
        }
        let h = to_usize(header_offset, at, "local header offset")?;
        if r.u32(h, "local header")? != LOCAL_SIG {
            return Err(err(h, format!("member `{name}` has no local header here")));
        }
        let local_name_len = usize::from(r.u16(h + 26, "local name length")?);
        let local_extra_len = usize::from(r.u16(h + 28, "local extra length")?);
        let local_name =
            String::from_utf8_lossy(r.bytes(h + 30, local_name_len, "local name")?).into_owned();
        let data_offset = (h + 30 + local_name_len + local_extra_len) as u64;
        let end = data_offset.checked_add(compressed_size);
        if end.is_none_or(|end| end > data.len() as u64) {
            return Err(err(
                h,
                format!(
                    "member `{name}` data ({compressed_size} bytes) runs past the end of the file"
                ),
            ));
        }
        members.push(Member {
            name,
            local_name,
            flags,
            method,
            compressed_size,
            size,
            header_offset,
            data_offset,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    check_overlaps(&members)?;
    Ok(members)
}

/// Members must not share bytes: two entries over the same data are a parser-confusion trick.
fn check_overlaps(members: &[Member]) -> Result<(), ZipError> {
    let mut spans: Vec<(u64, u64, &str)> = members
        .iter()
        .map(|m| {
            (
                m.header_offset,
                m.data_offset + m.compressed_size,
                m.name.as_str(),
            )
        })
        .collect();
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (w[0], w[1]);
        if start < end {
            return Err(ZipError {
                offset: start,
                reason: format!("members `{a}` and `{b}` overlap"),
            });
        }
    }
    Ok(())
}
