//! Where generated images go, and A1111's random seed.

use crate::{Error, Result, stem};
use std::path::{Path, PathBuf};

/// Where each image of a job goes: an `-o x.png` names the file (with `-N` before `.png` when
/// there are several); any other path is a folder where A1111-style `NNNNN-SEED.png` names
/// continue after the highest number present.
///
/// # Errors
/// [`Error::Io`] when the folder cannot be created or listed.
pub fn output_paths(output: &Path, seeds: &[u64]) -> Result<Vec<PathBuf>> {
    let is_file = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_file {
        if seeds.len() == 1 {
            return Ok(vec![output.to_path_buf()]);
        }
        let parent = output.parent().unwrap_or(Path::new(""));
        let s = stem(output);
        return Ok((0..seeds.len())
            .map(|i| parent.join(format!("{s}-{i}.png")))
            .collect());
    }
    let io = |source| Error::Io {
        path: output.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(output).map_err(io)?;
    let mut next = 0u64;
    for entry in std::fs::read_dir(output).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((n, _)) = name.split_once('-')
            && let Ok(n) = n.parse::<u64>()
        {
            next = next.max(n + 1);
        }
    }
    Ok(seeds
        .iter()
        .enumerate()
        .map(|(i, seed)| output.join(format!("{:05}-{seed}.png", next + i as u64)))
        .collect())
}

/// A seed for "-1": A1111 `get_fixed_seed` draws `random.randrange(4294967294)`.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Mix the clock so that two calls in the same tick still differ.
    let mut x = (nanos as u64) ^ ((nanos >> 64) as u64) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x % 4_294_967_294
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_follow_the_flag() {
        let one = output_paths(Path::new("out/a.png"), &[5]).unwrap();
        assert_eq!(one, vec![PathBuf::from("out/a.png")]);
        let two = output_paths(Path::new("out/a.png"), &[5, 6]).unwrap();
        assert_eq!(
            two,
            vec![PathBuf::from("out/a-0.png"), PathBuf::from("out/a-1.png")]
        );
        let dir = tempfile::tempdir().unwrap();
        danlu_fs::write_atomic(
            dir.path().join("00007-1.png"),
            b"",
            danlu_fs::Overwrite::Never,
        )
        .unwrap();
        let next = output_paths(dir.path(), &[9]).unwrap();
        assert_eq!(next, vec![dir.path().join("00008-9.png")]);
    }

    #[test]
    fn random_seeds_stay_in_a1111s_range() {
        for _ in 0..100 {
            assert!(random_seed() < 4_294_967_294);
        }
    }
}
