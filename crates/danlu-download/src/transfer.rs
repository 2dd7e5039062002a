//! One file onto disk: `NAME.part`, a lock beside it, resume, retries, hash check, rename.

use crate::client::{Client, Plan, classify, status_error};
use crate::error::{Error, Result, io_err};
use crate::filename::parse_content_disposition;
use danlu_hash::{Hasher, Hashes};
use danlu_types::{Reporter, TaskId};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_DISPOSITION, CONTENT_RANGE, ETAG, IF_RANGE, RANGE};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Bytes buffered before a write to the part file.
const WRITE_BUFFER: usize = 1 << 20;

/// A file on disk, complete and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    /// Its path (the final name in the download folder).
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its hashes, computed while it streamed in.
    pub hashes: Hashes,
    /// Whether the SHA-256 was compared with a published one (and matched).
    pub verified: bool,
    /// Bytes already in the part file when this run started (0 for a fresh download).
    pub resumed_from: u64,
    /// HTTP requests made for the file body.
    pub attempts: u32,
    /// The file was already there, complete (another process finished it, or an earlier run).
    pub already_present: bool,
}

/// What is remembered about a part file between runs, in `NAME.part.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PartMeta {
    /// The strong `ETag` of the answer the part came from, for `If-Range`.
    etag: Option<String>,
    /// The published SHA-256 it is meant to have; a part of another file is discarded.
    sha256: Option<String>,
}

/// An advisory lock on a file beside a download, removed on drop.
pub(crate) struct PartLock {
    file: File,
    path: PathBuf,
}

impl Drop for PartLock {
    fn drop(&mut self) {
        // Remove the name first, then unlock: a waiter holding the old file notices the name
        // changed and locks again (see `acquire_lock`).
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Locks `path`, waiting while another process holds it.
pub(crate) async fn acquire_lock(path: &Path, reporter_label: &str) -> Result<PartLock> {
    let mut told = false;
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path, "opening the lock file"))?;
        match file.try_lock() {
            Ok(()) => {
                if same_file(&file, path) {
                    return Ok(PartLock {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                // The holder removed the name as it finished: lock the new one.
                continue;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                if !told {
                    info!(file = reporter_label, lock = %path.display(), "another danlu is downloading this file; waiting");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_err(path, "locking")(e));
            }
        }
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// `NAME` + `suffix` in the same folder.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Hashes an existing file from the start, reporting progress.
fn hash_existing(path: &Path, reporter: &dyn Reporter, task: TaskId) -> Result<Hasher> {
    let mut hasher = Hasher::new();
    let mut f = File::open(path).map_err(io_err(path, "opening to re-hash"))?;
    let mut buf = vec![0u8; WRITE_BUFFER];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path, "re-hashing"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        reporter.advance(task, n as u64);
    }
    Ok(hasher)
}

/// Where bad data is kept: `NAME.sha256-mismatch`, then `NAME.sha256-mismatch.2`, ...
fn mismatch_path(dest: &Path) -> PathBuf {
    let first = sibling(dest, ".sha256-mismatch");
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|i| sibling(dest, &format!(".sha256-mismatch.{i}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// `bytes START-END/TOTAL` of a `Content-Range` header.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    let total = total.trim().parse().ok();
    Some((start, total))
}

impl Client {
    /// Downloads a resolved source into `dir` as `name` (or the source's name).
    ///
    /// The data goes to `NAME.part` under an advisory lock `NAME.part.lock` (a second process
    /// asked for the same file waits, then finds it done), is hashed as it arrives, and is
    /// renamed to `NAME` only once complete and, when the source publishes a SHA-256, matching
    /// it. An interrupted part is resumed with `Range` and `If-Range` after re-hashing it.
    ///
    /// # Errors
    /// Status errors with explanations; [`Error::HashMismatch`] (the data is kept aside under
    /// `NAME.sha256-mismatch`); [`Error::TooLong`] and [`Error::SizeMismatch`] for a server
    /// whose sizes disagree; [`Error::GaveUp`] when retries run out (the part is kept for a
    /// later resume); [`Error::Exists`] when a different file has the final name; I/O errors
    /// (a full disk) name the part file.
    pub async fn download(
        &self,
        plan: &Plan,
        dir: &Path,
        name: Option<&str>,
        reporter: &dyn Reporter,
    ) -> Result<Downloaded> {
        let name = match name.map(str::to_owned).or_else(|| plan.file_name.clone()) {
            Some(n) => n,
            None => self.probe_name(plan).await?,
        };
        let name = crate::filename::sanitize_file_name(&name).ok_or_else(|| Error::BadSource {
            source_text: plan.source.clone(),
            reason: format!("`{name}` cannot be a file name"),
        })?;
        fs_create_dir_all(dir)?;
        let dest = dir.join(&name);
        let part = sibling(&dest, ".part");
        let meta_path = sibling(&dest, ".part.json");
        let _lock = acquire_lock(&sibling(&dest, ".part.lock"), &name).await?;

        let total_hint = plan.size.or(plan.size_hint);
        let task = reporter.start(&name, total_hint);
        let result = self
            .download_locked(plan, &dest, &part, &meta_path, reporter, task)
            .await;
        reporter.finish(task);
        result
    }

    /// Learns the file name from the server (`Content-Disposition`, else the last segment of
    /// the final URL) with a GET whose body is not read.
    async fn probe_name(&self, plan: &Plan) -> Result<String> {
        let mut req = self.http.get(&plan.url);
        if let Some(a) = self.auth(plan.origin) {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_redirect() {
                Error::Redirects {
                    url: plan.url.clone(),
                }
            } else {
                Error::Request {
                    url: plan.url.clone(),
                    attempts: 1,
                    source: e,
                }
            }
        })?;
        if !resp.status().is_success() && classify(&resp).is_none() {
            return Err(status_error(
                &plan.url,
                resp.status(),
                resp.headers(),
                plan.origin,
            ));
        }
        let from_header = resp
            .headers()
            .get(CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_disposition);
        let from_url = resp
            .url()
            .path_segments()
            .and_then(|mut s| s.next_back().map(crate::source::percent_decode))
            .and_then(|n| crate::filename::sanitize_file_name(&n));
        from_header.or(from_url).ok_or_else(|| Error::BadSource {
            source_text: plan.source.clone(),
            reason: "the server gives no file name: pass --name".to_owned(),
        })
    }

    #[allow(clippy::too_many_lines)]
    async fn download_locked(
        &self,
        plan: &Plan,
        dest: &Path,
        part: &Path,
        meta_path: &Path,
        reporter: &dyn Reporter,
        task: TaskId,
    ) -> Result<Downloaded> {
        // Finished already (by another process that held the lock, or an earlier run)?
        if dest.exists() {
            let hasher = hash_existing(dest, reporter, task)?;
            let size = hasher.len();
            let hashes = hasher.finish();
            return match &plan.sha256 {
                Some(want) if *want == hashes.sha256 => Ok(Downloaded {
                    path: dest.to_path_buf(),
                    size,
                    hashes,
                    verified: true,
                    resumed_from: size,
                    attempts: 0,
                    already_present: true,
                }),
                Some(_) => Err(Error::Exists {
                    path: dest.to_path_buf(),
                }),
                None if plan.size.is_none_or(|s| s == size) => Ok(Downloaded {
                    path: dest.to_path_buf(),
                    size,
                    hashes,
                    verified: false,
                    resumed_from: size,
                    attempts: 0,
                    already_present: true,
                }),
                None => Err(Error::Exists {
                    path: dest.to_path_buf(),
                }),
            };
        }

        let mut meta: PartMeta = std::fs::read(meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if part.exists() && meta.sha256.is_some() && meta.sha256 != plan.sha256 {
            // A part of another file (the source changed): start again.
            warn!(part = %part.display(), "the part file belongs to another version; starting again");
            std::fs::remove_file(part).map_err(io_err(part, "removing a stale part file"))?;
            meta = PartMeta::default();
        }
        meta.sha256.clone_from(&plan.sha256);

        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(part)
            .map_err(io_err(part, "opening the part file"))?;
        // Resume: the data already there is hashed again first, so the final hash covers
        // every byte of the file.
        let mut hasher = hash_existing(part, reporter, task)?;
        let resumed_from = hasher.len();
        if resumed_from > 0 {
            info!(part = %part.display(), bytes = resumed_from, "resuming");
        }
        let mut have = resumed_from;
        let attempts_max = self.opts.attempts.max(1);
        let mut attempts = 0;
        let mut last = String::new();
        let mut announced: Option<u64> = plan.size;

        loop {
            if attempts >= attempts_max {
                write_meta(meta_path, &meta);
                return Err(Error::GaveUp {
                    url: plan.url.clone(),
                    attempts,
                    last,
                });
            }
            if attempts > 0 {
                tokio::time::sleep(self.backoff(attempts, None)).await;
            }
            attempts += 1;
            if let Some(total) = announced
                && have == total
            {
                break;
            }

            let mut req = self.http.get(&plan.url);
            if let Some(a) = self.auth(plan.origin) {
                req = req.header(AUTHORIZATION, a);
            }
            if have > 0 {
                req = req.header(RANGE, format!("bytes={have}-"));
                // A weak validator is not allowed in If-Range (RFC 9110 13.1.5).
                if let Some(etag) = meta.etag.as_deref().filter(|e| !e.starts_with("W/")) {
                    req = req.header(IF_RANGE, etag);
                }
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_redirect() => {
                    return Err(Error::Redirects {
                        url: plan.url.clone(),
                    });
                }
                Err(e) => {
                    last = e.to_string();
                    warn!(url = %plan.url, attempt = attempts, error = %e, "request failed; retrying");
                    continue;
                }
            };
            if let Some(retry) = classify(&resp) {
                last = retry.why.clone();
                let pause = self.backoff(attempts, retry.after);
                warn!(url = %plan.url, attempt = attempts, why = %retry.why, pause_ms = pause.as_millis() as u64, "server busy; retrying");
                // The loop's own pause is replaced by the server's.
                tokio::time::sleep(pause.saturating_sub(self.backoff(attempts, None))).await;
                continue;
            }
            let status = resp.status();
            let headers = resp.headers().clone();
            match status {
                StatusCode::PARTIAL_CONTENT => {
                    let range = headers
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_content_range);
                    match range {
                        Some((start, total)) if start == have => {
                            if total.is_some() {
                                announced = announced.or(total);
                                check_announced(plan, total)?;
                            }
                        }
                        _ => {
                            // A range we did not ask for: start again from zero.
                            warn!(url = %plan.url, "unexpected Content-Range; starting again");
                            restart(&mut file, part, &mut hasher, &mut have, reporter, task)?;
                            continue;
                        }
                    }
                }
                StatusCode::OK => {
                    if have > 0 {
                        // The server ignored the range or the file changed (If-Range failed).
                        debug!(url = %plan.url, "full answer to a range request; starting again");
                        restart(&mut file, part, &mut hasher, &mut have, reporter, task)?;
                    }
                    let total = resp.content_length();
                    check_announced(plan, total)?;
                    announced = plan.size.or(total);
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // Everything may already be here; otherwise the part is wrong.
                    let total = headers
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().strip_prefix("bytes */"))
                        .and_then(|t| t.parse::<u64>().ok());
                    if total == Some(have) {
                        break;
                    }
                    restart(&mut file, part, &mut hasher, &mut have, reporter, task)?;
                    continue;
                }
                s if s.is_success() => {
                    return Err(status_error(&plan.url, s, &headers, plan.origin));
                }
                s => return Err(status_error(&plan.url, s, &headers, plan.origin)),
            }
            if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
                meta.etag = Some(etag.to_owned());
                write_meta(meta_path, &meta);
            }

            file.seek(SeekFrom::Start(have))
                .map_err(io_err(part, "seeking in the part file"))?;
            let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, &mut file);
            let mut stream = resp.bytes_stream();
            let mut broke = None;
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        broke = Some(e.to_string());
                        break;
                    }
                };
                if let Some(total) = announced
                    && have + chunk.len() as u64 > total
                {
                    drop(out);
                    write_meta(meta_path, &meta);
                    return Err(Error::TooLong {
                        path: part.to_path_buf(),
                        expected: total,
                    });
                }
                out.write_all(&chunk)
                    .map_err(io_err(part, "writing the part file"))?;
                hasher.update(&chunk);
                have += chunk.len() as u64;
                reporter.advance(task, chunk.len() as u64);
            }
            out.flush().map_err(io_err(part, "writing the part file"))?;
            drop(out);
            if let Some(why) = broke {
                last = format!("connection lost after {have} bytes: {why}");
                warn!(url = %plan.url, bytes = have, "connection lost; resuming");
                continue;
            }
            match announced {
                Some(total) if have < total => {
                    last = format!("truncated answer: {have} of {total} bytes");
                    warn!(url = %plan.url, bytes = have, total, "truncated answer; resuming");
                    continue;
                }
                _ => break,
            }
        }

        file.sync_all()
            .map_err(io_err(part, "syncing the part file"))?;
        drop(file);
        let size = hasher.len();
        let hashes = hasher.finish();
        let verified = match &plan.sha256 {
            Some(want) if *want != hashes.sha256 => {
                let kept = mismatch_path(dest);
                danlu_fs::move_file(part, &kept)?;
                let _ = std::fs::remove_file(meta_path);
                return Err(Error::HashMismatch {
                    path: dest.to_path_buf(),
                    kept,
                    expected: want.clone(),
                    actual: hashes.sha256,
                });
            }
            Some(_) => true,
            None => false,
        };
        danlu_fs::move_file(part, dest).map_err(|e| match e {
            danlu_fs::Error::Exists { path } => Error::Exists { path },
            e => Error::Fs(e),
        })?;
        let _ = std::fs::remove_file(meta_path);
        Ok(Downloaded {
            path: dest.to_path_buf(),
            size,
            hashes,
            verified,
            resumed_from,
            attempts,
            already_present: false,
        })
    }
}

/// Fails when the size a download answer announces differs from the published one.
fn check_announced(plan: &Plan, announced: Option<u64>) -> Result<()> {
    match (plan.size, announced) {
        (Some(expected), Some(announced)) if expected != announced => Err(Error::SizeMismatch {
            url: plan.url.clone(),
            expected,
            announced,
        }),
        _ => Ok(()),
    }
}

/// Empties the part file and the hasher to download from byte 0.
fn restart(
    file: &mut File,
    part: &Path,
    hasher: &mut Hasher,
    have: &mut u64,
    reporter: &dyn Reporter,
    task: TaskId,
) -> Result<()> {
    file.set_len(0)
        .map_err(io_err(part, "emptying the part file"))?;
    *hasher = Hasher::new();
    // Progress cannot go backwards; a new task would break the caller's bar, so the bar simply
    // counts the repeated bytes again.
    let _ = (reporter, task);
    *have = 0;
    Ok(())
}

fn write_meta(path: &Path, meta: &PartMeta) {
    if let Ok(bytes) = serde_json::to_vec(meta)
        && let Err(e) = danlu_fs::write_atomic(path, &bytes, danlu_fs::Overwrite::Replace)
    {
        warn!(path = %path.display(), error = %e, "cannot record the part's ETag; a resume will not send If-Range");
    }
}

fn fs_create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "creating the download folder"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn mismatch_names_do_not_overwrite_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.safetensors");
        let a = mismatch_path(&dest);
        assert!(a.ends_with("m.safetensors.sha256-mismatch"));
        danlu_fs::write_atomic(&a, b"x", danlu_fs::Overwrite::Never).unwrap();
        assert!(mismatch_path(&dest).ends_with("m.safetensors.sha256-mismatch.2"));
    }
}
