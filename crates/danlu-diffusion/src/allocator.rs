//! Settings of the C allocator (glibc's malloc) for running the networks on the CPU.
//!
//! A UNet step at 512x512 allocates and frees about a gigabyte of activations, most of them in
//! blocks of tens of megabytes. glibc serves a block above its mmap threshold (which its dynamic
//! rule never raises past 32 MiB) with a fresh `mmap` and unmaps it again on `free`, and each
//! thread allocates from its own arena, whose heaps are at most 64 MiB. So every step faults
//! its activations in page by page, freshly zeroed by the kernel: about 260 thousand page
//! faults and 0.8 s of system time per 64x64-latent step on 2 cores (`perf stat`, issue 10).
//!
//! [`GLIBC_TUNABLES`] keeps freed memory in one heap for the next block of the same size:
//! one arena, no mmap threshold, no trimming. The steps after the first then fault almost no
//! pages (2.67 million faults over a load and four steps became 0.98 million). Peak memory is
//! unchanged, since a step's blocks are reused rather than added; what changes is that the
//! process keeps its peak until it exits instead of handing freed blocks back.
//!
//! glibc reads these settings only when a process starts, so [`reexec_with_malloc_tunables`]
//! replaces the running process with itself under them.

/// The glibc tunables (`GLIBC_TUNABLES`, glibc 2.26 and later) for inference on the CPU: one
/// malloc arena for all threads, no block served by `mmap`, no heap trimming.
pub const GLIBC_TUNABLES: &str = "glibc.malloc.arena_max=1:\
glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295";

/// Why [`reexec_with_malloc_tunables`] returned and the process goes on as it is.
#[derive(Debug)]
pub enum Untuned {
    /// `GLIBC_TUNABLES` is already in the environment: either this process is the re-executed
    /// one, or whoever started it chose the settings (an empty value turns the tuning off).
    AlreadySet,
    /// The C library is not glibc (or the system not Linux); its allocator has no such
    /// settings.
    NotGlibc,
    /// The path of the running executable is unknown.
    NoExecutable(std::io::Error),
    /// `execve` failed.
    Exec(std::io::Error),
}

impl std::fmt::Display for Untuned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadySet => write!(f, "GLIBC_TUNABLES is already set"),
            Self::NotGlibc => write!(f, "the C library is not glibc"),
            Self::NoExecutable(e) => write!(f, "the running executable is unknown: {e}"),
            Self::Exec(e) => write!(f, "re-executing failed: {e}"),
        }
    }
}

/// Replaces the running process with the same executable and arguments under
/// [`GLIBC_TUNABLES`], unless `GLIBC_TUNABLES` is set already. Returns only where it did not
/// (and says why); the process then goes on with the allocator's defaults, slower but correct.
///
/// Call it first thing in `main`, before any thread starts or any file is opened: the new
/// process image starts from the beginning with the same process id, arguments and environment
/// (plus the tunables), and inherits open file descriptors.
pub fn reexec_with_malloc_tunables() -> Untuned {
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return Untuned::AlreadySet;
    }
    reexec()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec() -> Untuned {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Untuned::NoExecutable(e),
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    Untuned::Exec(
        command
            .args(args)
            .env("GLIBC_TUNABLES", GLIBC_TUNABLES)
            .exec(),
    )
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn reexec() -> Untuned {
    Untuned::NotGlibc
}
