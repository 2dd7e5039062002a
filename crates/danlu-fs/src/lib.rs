//! How danlu touches the file system.
//!
//! A user's model is never written in place and never half-written: every write goes to a
//! temporary file in the destination's folder, is flushed to disk, and is renamed over the final
//! name, after which the folder itself is synced ([`write_atomic`], [`AtomicFile`]). Reading a
//! model maps it ([`map`]); this is the one place in danlu that uses `unsafe`.
//!
//! ```no_run
//! use std::io::Write;
//! let mut out = danlu_fs::AtomicFile::create("model.safetensors")?;
//! out.write_all(b"...")?;
//! out.commit()?; // only now does `model.safetensors` exist, complete
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub use fs_err;

/// Errors of file-system operations, each naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on a path failed.
    #[error("`{}`: {action}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done (`creating a temporary file`, ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The destination exists and overwriting was not asked for.
    #[error("`{}` already exists; danlu never overwrites a file unless asked", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
}

/// Result of file-system operations.
pub type Result<T> = std::result::Result<T, Error>;

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Whether an existing destination may be replaced by [`AtomicFile::commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`Error::Exists`] when the destination exists.
    Never,
    /// Replace the destination atomically.
    Replace,
}

/// A file being written under a temporary name in its destination's folder.
///
/// Dropping it without [`commit`](AtomicFile::commit) removes the temporary file and leaves the
/// destination untouched.
#[derive(Debug)]
pub struct AtomicFile {
    temp: tempfile::NamedTempFile,
    dest: PathBuf,
    overwrite: Overwrite,
}

impl AtomicFile {
    /// Starts writing `dest`, failing at commit time if it already exists.
    ///
    /// # Errors
    /// When the temporary file cannot be created in `dest`'s folder.
    pub fn create(dest: impl AsRef<Path>) -> Result<Self> {
        Self::with_overwrite(dest, Overwrite::Never)
    }

    /// Starts writing `dest` with an explicit overwrite policy.
    ///
    /// # Errors
    /// When the temporary file cannot be created in `dest`'s folder.
    pub fn with_overwrite(dest: impl AsRef<Path>, overwrite: Overwrite) -> Result<Self> {
        let dest = dest.as_ref().to_path_buf();
        let dir = parent_dir(&dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".danlu-tmp")
            .tempfile_in(&dir)
            .map_err(io_err(&dest, "creating a temporary file beside it"))?;
        Ok(Self {
            temp,
            dest,
            overwrite,
        })
    }

    /// The final path this file will have after commit.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary path being written now.
    pub fn temp_path(&self) -> &Path {
        self.temp.path()
    }

    /// Flushes, syncs and renames the file into place, then syncs the folder.
    ///
    /// # Errors
    /// When syncing or renaming fails, or the destination exists under [`Overwrite::Never`].
    pub fn commit(mut self) -> Result<PathBuf> {
        self.temp
            .as_file_mut()
            .flush()
            .map_err(io_err(&self.dest, "flushing"))?;
        self.temp
            .as_file()
            .sync_all()
            .map_err(io_err(&self.dest, "syncing to disk"))?;
        let dest = self.dest;
        match self.overwrite {
            Overwrite::Replace => {
                self.temp
                    .persist(&dest)
                    .map_err(|e| io_err(&dest, "renaming into place")(e.error))?;
            }
            Overwrite::Never => {
                self.temp.persist_noclobber(&dest).map_err(|e| {
                    if e.error.kind() == io::ErrorKind::AlreadyExists {
                        Error::Exists { path: dest.clone() }
                    } else {
                        io_err(&dest, "renaming into place")(e.error)
                    }
                })?;
            }
        }
        sync_dir(&parent_dir(&dest))?;
        Ok(dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

impl io::Seek for AtomicFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.temp.seek(pos)
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Syncs a folder so that a rename inside it survives a crash.
///
/// # Errors
/// When the folder cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let f = std::fs::File::open(dir).map_err(io_err(dir, "opening folder to sync it"))?;
        f.sync_all().map_err(io_err(dir, "syncing folder"))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `dest` atomically (temp file, fsync, rename, fsync folder).
///
/// # Errors
/// See [`AtomicFile`]; fails if `dest` exists and `overwrite` is [`Overwrite::Never`].
pub fn write_atomic(dest: impl AsRef<Path>, bytes: &[u8], overwrite: Overwrite) -> Result<PathBuf> {
    let mut f = AtomicFile::with_overwrite(dest, overwrite)?;
    let dest = f.dest().to_path_buf();
    f.write_all(bytes).map_err(io_err(&dest, "writing"))?;
    f.commit()
}

/// How [`move_file`] or [`link_file`] placed a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// A new name on the same file system (hard link, then the old name removed for a move).
    Linked,
    /// A complete copy (temporary file, fsync, rename), for moves across file systems.
    Copied,
    /// A symbolic link, when a hard link is impossible (across file systems).
    Symlinked,
}

/// Copies `src` to `dest` through a temporary file in `dest`'s folder (fsync, rename without
/// overwriting, fsync folder), keeping the source's modification time, so that `dest` either
/// does not exist or is complete.
///
/// # Errors
/// When reading or writing fails, or [`Error::Exists`] when `dest` exists.
pub fn copy_file(src: &Path, dest: &Path) -> Result<PathBuf> {
    let mut input = std::fs::File::open(src).map_err(io_err(src, "opening to copy"))?;
    let modified = input.metadata().and_then(|m| m.modified()).ok();
    if dest.symlink_metadata().is_ok() {
        return Err(Error::Exists {
            path: dest.to_path_buf(),
        });
    }
    let mut out = AtomicFile::create(dest)?;
    io::copy(&mut input, &mut out).map_err(io_err(src, "copying"))?;
    if let Some(t) = modified {
        out.temp
            .as_file()
            .set_modified(t)
            .map_err(io_err(dest, "setting the modification time"))?;
    }
    out.commit()
}

/// Moves `src` to `dest` without ever overwriting `dest` and without a moment where the data
/// exists under neither name complete: on one file system a hard link is made and then the old
/// name removed; across file systems the file is copied completely ([`copy_file`]) and only
/// then is the source removed.
///
/// # Errors
/// [`Error::Exists`] when `dest` exists; I/O failures name the file. On failure the source is
/// left in place.
pub fn move_file(src: &Path, dest: &Path) -> Result<Placed> {
    let how = match std::fs::hard_link(src, dest) {
        Ok(()) => {
            sync_dir(&parent_dir(dest))?;
            Placed::Linked
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::Exists {
                path: dest.to_path_buf(),
            });
        }
        // Across file systems (EXDEV) or where hard links are unsupported: copy.
        Err(_) => {
            copy_file(src, dest)?;
            Placed::Copied
        }
    };
    std::fs::remove_file(src).map_err(io_err(src, "removing the moved source"))?;
    sync_dir(&parent_dir(src))?;
    Ok(how)
}

/// Gives `src` a second name `dest`: a hard link, or a symbolic link across file systems.
///
/// # Errors
/// [`Error::Exists`] when `dest` exists; I/O failures name the file.
pub fn link_file(src: &Path, dest: &Path) -> Result<Placed> {
    match std::fs::hard_link(src, dest) {
        Ok(()) => {
            sync_dir(&parent_dir(dest))?;
            Ok(Placed::Linked)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::Exists {
            path: dest.to_path_buf(),
        }),
        Err(e) => {
            #[cfg(unix)]
            {
                let _ = e;
                let target = std::path::absolute(src).map_err(io_err(src, "resolving"))?;
                std::os::unix::fs::symlink(&target, dest).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Error::Exists {
                            path: dest.to_path_buf(),
                        }
                    } else {
                        io_err(dest, "making a symbolic link")(e)
                    }
                })?;
                sync_dir(&parent_dir(dest))?;
                Ok(Placed::Symlinked)
            }
            #[cfg(not(unix))]
            Err(io_err(dest, "making a hard link")(e))
        }
    }
}

/// A read-only memory map of a whole file.
pub type Map = memmap2::Mmap;

/// Maps a file read-only. An empty file gives an empty map.
///
/// The map stays valid while another process truncates the file only in the sense that the
/// kernel may then raise `SIGBUS` on access; danlu maps model files that users do not edit
/// while danlu reads them, as every model tool does.
///
/// # Errors
/// When the file cannot be opened or mapped.
pub fn map(path: impl AsRef<Path>) -> Result<Map> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(io_err(path, "opening"))?;
    // SAFETY: the map is read-only and private to this process; the file is a model the user
    // keeps, not something danlu or another thread writes while the map lives. This is the one
    // `unsafe` block in danlu (style.md §2.7).
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::MmapOptions::new().map(&file) };
    map.map_err(io_err(path, "memory-mapping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model.safetensors");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_never_overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.bin");
        write_atomic(&dest, b"first", Overwrite::Never).unwrap();
        let err = write_atomic(&dest, b"second", Overwrite::Never).unwrap_err();
        assert!(matches!(err, Error::Exists { .. }), "{err}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        write_atomic(&dest, b"third", Overwrite::Replace).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"third");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn move_and_copy_never_overwrite_and_keep_contents() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        let b = dir.path().join("b.bin");
        let c = dir.path().join("c.bin");
        write_atomic(&a, b"alpha", Overwrite::Never).unwrap();
        write_atomic(&b, b"beta", Overwrite::Never).unwrap();
        assert!(matches!(move_file(&a, &b), Err(Error::Exists { .. })));
        assert!(matches!(copy_file(&a, &b), Err(Error::Exists { .. })));
        assert_eq!(std::fs::read(&a).unwrap(), b"alpha");
        assert_eq!(std::fs::read(&b).unwrap(), b"beta");
        assert_eq!(move_file(&a, &c).unwrap(), Placed::Linked);
        assert!(!a.exists());
        assert_eq!(std::fs::read(&c).unwrap(), b"alpha");
        let d = dir.path().join("d.bin");
        copy_file(&c, &d).unwrap();
        assert_eq!(std::fs::read(&d).unwrap(), b"alpha");
        assert_eq!(
            std::fs::metadata(&d).unwrap().modified().unwrap(),
            std::fs::metadata(&c).unwrap().modified().unwrap()
        );
        let e = dir.path().join("e.bin");
        link_file(&d, &e).unwrap();
        assert_eq!(std::fs::read(&e).unwrap(), b"alpha");
        assert!(d.exists());
    }

    #[test]
    fn map_reads_the_file_and_empty_files_map_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_atomic(&p, b"hello", Overwrite::Never).unwrap();
        assert_eq!(&map(&p).unwrap()[..], b"hello");
        let e = dir.path().join("empty");
        write_atomic(&e, b"", Overwrite::Never).unwrap();
        assert_eq!(map(&e).unwrap().len(), 0);
        assert!(map(dir.path().join("missing")).is_err());
    }
}
