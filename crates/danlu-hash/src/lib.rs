//! Streaming model hashes as A1111 and Civitai show them (SHA-256, AutoV1, AutoV2, AutoV3, BLAKE3).
//!
//! All five hashes of `contracts.md` (`hashes` object of `inspect --json`) come from one pass
//! over the file with fixed-size buffers, so memory does not grow with the file:
//!
//! | field | what | source |
//! |---|---|---|
//! | `sha256` | SHA-256 of the whole file | |
//! | `autov1` | first 8 hex of the SHA-256 of the 64 KiB at offset 1 MiB (fewer or no bytes when the file is shorter) | A1111 `modules/sd_models.py` `model_hash` |
//! | `autov2` | first 10 hex of `sha256` | A1111 `modules/hashes.py` `sha256` shortened by callers, Civitai "AutoV2" |
//! | `autov3` | first 12 hex of the SHA-256 of a safetensors file's bytes after its `8 + N` header bytes; for other files the first 12 hex of `sha256` | A1111 `modules/hashes.py` `addnet_hash_safetensors` (kohya-ss `train_util.py`) |
//! | `blake3` | BLAKE3 of the whole file | |
//!
//! [`hash_file`] runs SHA-256, the after-header SHA-256 and BLAKE3 on separate threads fed the
//! same read buffers; [`Hasher`] computes the same values sequentially from bytes pushed into it
//! (for data that arrives in pieces, such as a download).
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! let hashes = danlu_hash::hash_file(
//!     "model.safetensors",
//!     &danlu_types::NoProgress,
//!     &AtomicBool::new(false),
//! )?;
//! println!("{} {}", hashes.autov2, hashes.sha256);
//! # Ok::<(), danlu_hash::Error>(())
//! ```

use danlu_types::Reporter;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Offset of the region A1111's old model hash reads (`model_hash`: `file.seek(0x100000)`).
pub const AUTOV1_OFFSET: u64 = 0x10_0000;
/// Length of the region A1111's old model hash reads (`file.read(0x10000)`).
pub const AUTOV1_LEN: u64 = 0x1_0000;
/// Size of each read buffer of [`hash_file`].
pub const CHUNK_SIZE: usize = 1 << 20;
/// Buffers that may wait in each hashing thread's queue; with [`CHUNK_SIZE`] this bounds memory.
const QUEUE_DEPTH: usize = 4;
/// Buffers the reader keeps for reuse: enough to cover every queue plus one per thread.
const MAX_IN_FLIGHT: usize = 3 * (QUEUE_DEPTH + 1) + 1;

/// Errors of hashing a file. Each names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or reading the file failed.
    #[error("`{}`: {action} at offset {offset}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`opening`, `reading`).
        action: &'static str,
        /// Bytes hashed before the failure.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The caller's cancel flag was set while hashing.
    #[error("`{}`: hashing cancelled after {offset} bytes", path.display())]
    Cancelled {
        /// The file.
        path: PathBuf,
        /// Bytes hashed before cancelling.
        offset: u64,
    },
    /// A hashing thread stopped unexpectedly.
    #[error("`{}`: a hashing thread stopped unexpectedly", path.display())]
    Worker {
        /// The file.
        path: PathBuf,
    },
}

/// Result of hashing.
pub type Result<T> = std::result::Result<T, Error>;

/// The hashes of one file, lower-case hex, named as `contracts.md` names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Hashes {
    /// SHA-256 of the whole file, 64 hex digits.
    pub sha256: String,
    /// A1111's old model hash: first 8 hex of the SHA-256 of the 64 KiB at offset 1 MiB.
    pub autov1: String,
    /// First 10 hex of [`sha256`](Self::sha256) (Civitai "AutoV2", A1111 "Model hash").
    pub autov2: String,
    /// First 12 hex of the SHA-256 of a safetensors file's tensor bytes (after `8 + N`), or of
    /// the whole file for other containers (A1111's LoRA hash, Civitai "AutoV3").
    pub autov3: String,
    /// BLAKE3 of the whole file, 64 hex digits.
    pub blake3: String,
}

/// Returns the absolute offset where a safetensors file's tensor bytes start (`8 + N`), when the
/// first 9 bytes look like a safetensors header: a little-endian length `N` followed by `{`.
///
/// Whether the file is long enough is checked by the caller once the size is known.
pub fn parse_safetensors_data_start(head: &[u8]) -> Option<u64> {
    let len_bytes: [u8; 8] = head.get(..8)?.try_into().ok()?;
    if head.get(8) != Some(&b'{') {
        return None;
    }
    u64::from_le_bytes(len_bytes).checked_add(8)
}

/// Lower-case hex of bytes.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The part of `data` (which starts at absolute `offset`) that lies in `[start, end)`.
fn window(offset: u64, data: &[u8], start: u64, end: u64) -> &[u8] {
    let data_end = offset.saturating_add(data.len() as u64);
    let lo = start.max(offset);
    let hi = end.min(data_end);
    if lo >= hi {
        return &[];
    }
    // Both bounds lie within `data`, so the differences fit in usize.
    let a = usize::try_from(lo - offset).unwrap_or(data.len());
    let b = usize::try_from(hi - offset).unwrap_or(data.len());
    data.get(a..b).unwrap_or(&[])
}

/// SHA-256 of the whole stream plus the AutoV1 window.
#[derive(Default)]
struct FullLane {
    sha: Sha256,
    autov1: Sha256,
}

impl FullLane {
    fn update(&mut self, offset: u64, data: &[u8]) {
        self.sha.update(data);
        self.autov1.update(window(
            offset,
            data,
            AUTOV1_OFFSET,
            AUTOV1_OFFSET + AUTOV1_LEN,
        ));
    }
}

/// SHA-256 of the bytes from `start` on (safetensors tensor data, for AutoV3).
struct TailLane {
    sha: Sha256,
    start: u64,
}

impl TailLane {
    fn update(&mut self, offset: u64, data: &[u8]) {
        self.sha.update(window(offset, data, self.start, u64::MAX));
    }
}

/// Computes [`Hashes`] sequentially from bytes pushed in order.
///
/// ```
/// let mut h = danlu_hash::Hasher::new();
/// h.update(b"abc");
/// let hashes = h.finish();
/// assert_eq!(hashes.autov2, "ba7816bf8f");
/// ```
pub struct Hasher {
    full: FullLane,
    tail: Option<TailLane>,
    blake: blake3::Hasher,
    head: Vec<u8>,
    len: u64,
}

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self {
            full: FullLane::default(),
            tail: None,
            blake: blake3::Hasher::new(),
            head: Vec::with_capacity(9),
            len: 0,
        }
    }

    /// Hashes the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        let offset = self.len;
        if self.head.len() < 9 {
            let take = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(data.get(..take).unwrap_or(&[]));
            if self.head.len() == 9 {
                self.tail = parse_safetensors_data_start(&self.head).map(|start| TailLane {
                    sha: Sha256::new(),
                    start,
                });
            }
        }
        self.full.update(offset, data);
        if let Some(tail) = &mut self.tail {
            tail.update(offset, data);
        }
        self.blake.update(data);
        self.len = offset.saturating_add(data.len() as u64);
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes were hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hashes of everything pushed so far.
    pub fn finish(self) -> Hashes {
        let tail = self.tail.map(|t| (t.start, t.sha.finalize().to_vec()));
        finish_parts(
            self.len,
            self.full.sha.finalize().to_vec(),
            self.full.autov1.finalize().to_vec(),
            tail,
            self.blake.finalize(),
        )
    }
}

fn finish_parts(
    len: u64,
    sha: Vec<u8>,
    autov1: Vec<u8>,
    tail: Option<(u64, Vec<u8>)>,
    blake: blake3::Hash,
) -> Hashes {
    let sha256 = to_hex(&sha);
    let autov1 = to_hex(&autov1);
    // A safetensors header that claims more bytes than the file has is not a safetensors file:
    // the whole-file hash is used then, as for any other container.
    let autov3 = match tail {
        Some((start, tail)) if start <= len => to_hex(&tail),
        _ => sha256.clone(),
    };
    Hashes {
        autov1: autov1.get(..8).unwrap_or_default().to_owned(),
        autov2: sha256.get(..10).unwrap_or_default().to_owned(),
        autov3: autov3.get(..12).unwrap_or_default().to_owned(),
        blake3: blake.to_hex().to_string(),
        sha256,
    }
}

/// A read buffer shared by the hashing threads, with its absolute offset.
type Chunk = (u64, Arc<Vec<u8>>);

/// Reads into `buf` until it is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Hashes a file in one pass, reporting progress in bytes.
///
/// The calling thread reads [`CHUNK_SIZE`] buffers; SHA-256, the AutoV3 after-header SHA-256 (for
/// safetensors files only) and BLAKE3 each run on their own thread over the same buffers, with
/// at most a few buffers queued per thread, so memory is independent of the file size.
///
/// Cancelling: set `cancel` (from any thread) and the call returns [`Error::Cancelled`] after the
/// current buffer.
///
/// # Errors
/// When the file cannot be opened or read, or `cancel` was set.
pub fn hash_file(
    path: impl AsRef<Path>,
    reporter: &dyn Reporter,
    cancel: &AtomicBool,
) -> Result<Hashes> {
    let path = path.as_ref();
    let io_err = |action: &'static str, offset: u64| {
        move |source| Error::Io {
            path: path.to_path_buf(),
            action,
            offset,
            source,
        }
    };
    let mut file = File::open(path).map_err(io_err("opening", 0))?;
    let size = file.metadata().ok().map(|m| m.len());
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let task = reporter.start(&format!("hashing {label}"), size);

    // The first buffer decides whether the AutoV3 lane is needed.
    let mut first = vec![0u8; CHUNK_SIZE];
    let n = read_full(&mut file, &mut first).map_err(io_err("reading", 0))?;
    first.truncate(n);
    let tail_start = parse_safetensors_data_start(&first);

    let result = std::thread::scope(|scope| -> Result<Hashes> {
        let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(QUEUE_DEPTH);
        let (blake_tx, blake_rx) = mpsc::sync_channel::<Chunk>(QUEUE_DEPTH);
        let full = scope.spawn(move || {
            let mut lane = FullLane::default();
            for (offset, data) in full_rx {
                lane.update(offset, &data);
            }
            (
                lane.sha.finalize().to_vec(),
                lane.autov1.finalize().to_vec(),
            )
        });
        let blake = scope.spawn(move || {
            let mut h = blake3::Hasher::new();
            for (_, data) in blake_rx {
                h.update(&data);
            }
            h.finalize()
        });
        let (tail_tx, tail) = match tail_start {
            Some(start) => {
                let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE_DEPTH);
                let handle = scope.spawn(move || {
                    let mut lane = TailLane {
                        sha: Sha256::new(),
                        start,
                    };
                    for (offset, data) in rx {
                        lane.update(offset, &data);
                    }
                    (lane.start, lane.sha.finalize().to_vec())
                });
                (Some(tx), Some(handle))
            }
            None => (None, None),
        };

        let worker_gone = || Error::Worker {
            path: path.to_path_buf(),
        };
        let mut offset = 0u64;
        let mut chunk = first;
        let mut in_flight: VecDeque<Arc<Vec<u8>>> = VecDeque::new();
        let mut outcome = Ok(());
        while !chunk.is_empty() {
            if cancel.load(Ordering::Relaxed) {
                outcome = Err(Error::Cancelled {
                    path: path.to_path_buf(),
                    offset,
                });
                break;
            }
            let len = chunk.len() as u64;
            let shared = Arc::new(chunk);
            let sent = full_tx.send((offset, Arc::clone(&shared))).is_ok()
                && blake_tx.send((offset, Arc::clone(&shared))).is_ok()
                && tail_tx
                    .as_ref()
                    .is_none_or(|tx| tx.send((offset, Arc::clone(&shared))).is_ok());
            if !sent {
                outcome = Err(worker_gone());
                break;
            }
            reporter.advance(task, len);
            offset += len;
            // Reuse the oldest buffer once every thread is done with it, so that no new
            // megabyte is allocated and zeroed per read in the steady state.
            in_flight.push_back(shared);
            let reusable = in_flight
                .front()
                .is_some_and(|oldest| Arc::strong_count(oldest) == 1);
            let recycled = if reusable {
                in_flight.pop_front().and_then(|a| Arc::try_unwrap(a).ok())
            } else {
                None
            };
            if in_flight.len() > MAX_IN_FLIGHT {
                in_flight.pop_front();
            }
            let mut next = match recycled {
                Some(mut buf) => {
                    buf.resize(CHUNK_SIZE, 0);
                    buf
                }
                None => vec![0u8; CHUNK_SIZE],
            };
            match read_full(&mut file, &mut next) {
                Ok(n) => {
                    next.truncate(n);
                    chunk = next;
                }
                Err(e) => {
                    outcome = Err(io_err("reading", offset)(e));
                    break;
                }
            }
        }
        // Closing the channels ends the threads, also on error.
        drop(full_tx);
        drop(blake_tx);
        drop(tail_tx);
        let (sha, autov1) = full.join().map_err(|_| worker_gone())?;
        let blake = blake.join().map_err(|_| worker_gone())?;
        let tail = match tail {
            Some(h) => Some(h.join().map_err(|_| worker_gone())?),
            None => None,
        };
        outcome?;
        Ok(finish_parts(offset, sha, autov1, tail, blake))
    });
    reporter.finish(task);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use danlu_types::{NoProgress, TaskId};
    use std::io::Write;
    use std::sync::Mutex;

    /// Expected values computed by an independent route: `sha2` and `blake3` over the whole
    /// in-memory buffer, and the AutoV1/AutoV3 regions sliced out by hand.
    fn expected(bytes: &[u8]) -> Hashes {
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let sha256 = hex(&Sha256::digest(bytes));
        let start = 0x10_0000.min(bytes.len());
        let end = 0x11_0000.min(bytes.len());
        let autov1 = hex(&Sha256::digest(&bytes[start..end]))[..8].to_owned();
        let autov3 = if bytes.len() >= 9 && bytes[8] == b'{' {
            let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            match n.checked_add(8) {
                Some(s) if s <= bytes.len() as u64 => {
                    hex(&Sha256::digest(&bytes[s as usize..]))[..12].to_owned()
                }
                _ => sha256[..12].to_owned(),
            }
        } else {
            sha256[..12].to_owned()
        };
        Hashes {
            autov1,
            autov2: sha256[..10].to_owned(),
            autov3,
            blake3: blake3::hash(bytes).to_hex().to_string(),
            sha256,
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        // A simple LCG so that the data has no period a hash window could hide in.
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    }

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        f
    }

    fn hash_bytes(bytes: &[u8]) -> Hashes {
        let f = file_with(bytes);
        hash_file(f.path(), &NoProgress, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn known_values_of_abc_match_published_test_vectors() {
        // SHA-256("abc") is FIPS 180-2 appendix B.1; BLAKE3("abc") from `printf abc | b3sum`
        // (b3sum 1.2.0).
        let h = hash_bytes(b"abc");
        assert_eq!(
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            h.blake3,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(h.autov2, "ba7816bf8f");
        assert_eq!(h.autov3, "ba7816bf8f01");
        // Shorter than 1 MiB: A1111 seeks past the end, reads nothing and hashes b"" (SHA-256 of
        // the empty string, FIPS 180-2).
        assert_eq!(h.autov1, "e3b0c442");
    }

    #[test]
    fn file_past_the_autov1_window_matches_a1111_model_hash() {
        // Bytes `i % 251` for i in 0..0x110010. Expected values from A1111's `model_hash`
        // (modules/sd_models.py) run in Python with hashlib, `sha256sum` and `b3sum` 1.2.0.
        let data: Vec<u8> = (0..0x11_0010u32).map(|i| (i % 251) as u8).collect();
        let h = hash_bytes(&data);
        assert_eq!(h.autov1, "15ffd73b");
        assert_eq!(
            h.sha256,
            "f480aa75052a8e0bb7856eab5d16a367144e37810933a69b576896c2f55cc648"
        );
        assert_eq!(
            h.blake3,
            "07ebea4afcab11dab6294fa0df01e51b696c5990dc67945748916dad74476e38"
        );
    }

    #[test]
    fn empty_file_hashes_the_empty_string() {
        let h = hash_bytes(b"");
        assert_eq!(
            h.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(h, expected(b""));
    }

    #[test]
    fn sizes_around_the_autov1_window_and_chunk_boundaries_match_whole_buffer_hashes() {
        let data = pattern(0x11_0000 + 3 * CHUNK_SIZE / 2);
        for len in [
            1,
            8,
            9,
            0xF_FFFF,
            0x10_0000,
            0x10_0001,
            0x10_8000,
            0x10_FFFF,
            0x11_0000,
            0x11_0001,
            CHUNK_SIZE - 1,
            CHUNK_SIZE + 1,
            2 * CHUNK_SIZE,
            data.len(),
        ] {
            let bytes = &data[..len];
            assert_eq!(hash_bytes(bytes), expected(bytes), "length {len}");
        }
    }

    #[test]
    fn sequential_hasher_fed_in_odd_pieces_agrees_with_hash_file() {
        let mut data = pattern(0x12_3457);
        // Make it safetensors-shaped so that the AutoV3 lane starts mid-piece.
        data[..8].copy_from_slice(&1000u64.to_le_bytes());
        data[8] = b'{';
        let mut h = Hasher::new();
        for piece in data.chunks(7777) {
            h.update(piece);
        }
        let mut tiny = Hasher::new();
        for b in &data[..20] {
            tiny.update(std::slice::from_ref(b));
        }
        tiny.update(&data[20..]);
        let want = expected(&data);
        assert_eq!(h.finish(), want);
        assert_eq!(tiny.finish(), want);
        assert_eq!(hash_bytes(&data), want);
    }

    #[test]
    fn autov3_of_a_safetensors_file_skips_the_header() {
        let header = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}  "#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"wxyz");
        let h = hash_bytes(&bytes);
        // The tensor bytes alone, hashed by `sha2` directly.
        let tail: String = Sha256::digest(b"wxyz")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h.autov3, tail[..12]);
        assert_ne!(h.autov3, h.sha256[..12]);
        assert_eq!(h, expected(&bytes));
    }

    #[test]
    fn safetensors_header_longer_than_the_file_falls_back_to_the_full_hash() {
        let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{\"x\":1}");
        let h = hash_bytes(&bytes);
        assert_eq!(h.autov3, h.sha256[..12]);
    }

    #[test]
    fn easynegative_hashes_match_sha256sum() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpus/models/EasyNegative.safetensors"
        );
        let h = hash_file(path, &NoProgress, &AtomicBool::new(false))
            .unwrap_or_else(|e| panic!("corpus file missing or unreadable: {e}"));
        // `sha256sum EasyNegative.safetensors` (GNU coreutils), also listed in the corpus
        // MANIFEST.md; Civitai shows AutoV2 C74B4E810B for this embedding.
        assert_eq!(
            h.sha256,
            "c74b4e810b030f6b75fde959e2db678c268d07115b85356d3c0138ba5eb42340"
        );
        assert_eq!(h.autov2, "c74b4e810b");
        // `b3sum` 1.2.0.
        assert_eq!(
            h.blake3,
            "edc4d4ca619f612417fc4b463b3b2864e42e8cc5f291835e1312f2a6c8923507"
        );
        // 24,655 bytes, shorter than 1 MiB: A1111 hashes nothing (SHA-256 of b"").
        assert_eq!(h.autov1, "e3b0c442");
        // A1111 `addnet_hash_safetensors` (modules/hashes.py) run in Python on the file.
        assert_eq!(h.autov3, "9ae1bbc35e56");
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(h, expected(&bytes));
    }

    #[test]
    fn lora_disney_autov3_matches_a1111() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/corpus/models/lora_disney.safetensors"
        );
        let h = hash_file(path, &NoProgress, &AtomicBool::new(false))
            .unwrap_or_else(|e| panic!("corpus file missing or unreadable: {e}"));
        // A1111 `addnet_hash_safetensors` (modules/hashes.py) run in Python on the file;
        // `sha256sum` gives the full hash (also in the corpus MANIFEST.md).
        assert_eq!(h.autov3, "deb8561122de");
        assert_eq!(
            h.sha256,
            "cea222b3653ff7eb4ee8b89f70b995bf81d4cbf01111605128c2c9704ae66c19"
        );
        // 1,582,501 bytes: longer than 1 MiB + 64 KiB, so AutoV1 covers a full window; value
        // from A1111 `model_hash` (modules/sd_models.py) run in Python.
        assert_eq!(h.autov1, "e7613d8b");
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<(String, u64)>>,
    }

    impl Reporter for Recorder {
        fn start(&self, label: &str, total: Option<u64>) -> TaskId {
            self.events
                .lock()
                .unwrap()
                .push((format!("start {label}"), total.unwrap_or(0)));
            TaskId(7)
        }
        fn advance(&self, task: TaskId, by: u64) {
            assert_eq!(task, TaskId(7));
            self.events.lock().unwrap().push(("advance".into(), by));
        }
        fn finish(&self, task: TaskId) {
            assert_eq!(task, TaskId(7));
            self.events.lock().unwrap().push(("finish".into(), 0));
        }
    }

    #[test]
    fn progress_reports_every_byte_and_finishes() {
        let data = pattern(CHUNK_SIZE * 2 + 5);
        let f = file_with(&data);
        let rec = Recorder::default();
        hash_file(f.path(), &rec, &AtomicBool::new(false)).unwrap();
        let events = rec.events.lock().unwrap();
        assert!(events[0].0.starts_with("start hashing "));
        assert_eq!(events[0].1, data.len() as u64);
        let advanced: u64 = events
            .iter()
            .filter(|e| e.0 == "advance")
            .map(|e| e.1)
            .sum();
        assert_eq!(advanced, data.len() as u64);
        assert_eq!(events.last().unwrap().0, "finish");
    }

    #[test]
    fn cancel_flag_stops_hashing_with_an_error() {
        let f = file_with(&pattern(CHUNK_SIZE * 3));
        let err = hash_file(f.path(), &NoProgress, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(err, Error::Cancelled { offset: 0, .. }), "{err}");
        assert!(err.to_string().contains("cancelled"));
    }

    #[test]
    fn missing_file_error_names_it() {
        let err = hash_file(
            "/nonexistent/danlu/x.safetensors",
            &NoProgress,
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("x.safetensors"), "{err}");
    }
}
