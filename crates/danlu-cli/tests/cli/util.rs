//! Test harness: a temp folder per test and a way to run the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh temp folder and the environment a test runs `danlu` in.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_danlu"));
        c.current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("DANLU_NO_PROGRESS", "1")
            .env("HOME", self.dir.path())
            .env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run danlu")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn corpus(rel: &str) -> PathBuf {
    danlu_fixtures::corpus::path(rel)
}

#[allow(dead_code)]
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
