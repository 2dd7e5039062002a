//! `danlu scan`: index a library root into its cache; also the root and cache opening shared by
//! the library commands.

use crate::ExitStatus;
use crate::args::{RootArgs, ScanArgs};
use crate::printer::Printer;
use crate::progress::Bars;
use anyhow::Context as _;
use danlu_library::{Cache, Root, ScanOptions, ScanReport, choose_root, parse_config};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by Ctrl-C: long work stops at the next file and keeps what is done.
static CANCEL: AtomicBool = AtomicBool::new(false);

/// The cancel flag, with a Ctrl-C handler installed on first use (a second Ctrl-C exits at once).
pub(crate) fn cancel_flag() -> &'static AtomicBool {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if CANCEL.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("stopping after the current files; run the command again to resume");
        });
    });
    &CANCEL
}

/// danlu's config file: `$XDG_CONFIG_HOME/danlu/config.yaml`, else `~/.config/danlu/config.yaml`.
pub(crate) fn config_path() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("danlu/config.yaml"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/danlu/config.yaml"))
}

/// Opens the library root chosen by the positional path, `--root`, `DANLU_ROOT` (read here: the
/// library reads no environment) or the config file, and its cache.
///
/// # Errors
/// When no root is given anywhere, the root does not exist, or the cache cannot be opened.
pub(crate) fn open_library(
    positional: Option<&Path>,
    args: &RootArgs,
) -> anyhow::Result<(Root, Cache)> {
    let env = std::env::var_os("DANLU_ROOT").map(PathBuf::from);
    let config = match config_path() {
        Some(p) if p.is_file() => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading config `{}`", p.display()))?;
            Some(parse_config(&text).with_context(|| format!("reading config `{}`", p.display()))?)
        }
        _ => None,
    };
    let flag = positional.or(args.root.as_deref());
    let Some((path, _source)) = choose_root(flag, env.as_deref(), config.as_ref()) else {
        anyhow::bail!(
            "no library root: pass `--root ROOT`, set `DANLU_ROOT`, or write `root: ROOT` in `{}`",
            config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    };
    let root =
        Root::open(&path).with_context(|| format!("opening library `{}`", path.display()))?;
    let cache = Cache::open(&root.cache_path())
        .with_context(|| format!("opening the cache of `{}`", root.path.display()))?;
    Ok((root, cache))
}

/// Brings the cache up to date without hashing (unchanged files are only stat'ed).
///
/// # Errors
/// When the cache fails.
pub(crate) fn refresh(root: &Root, cache: &Cache) -> anyhow::Result<ScanReport> {
    let opts = ScanOptions {
        hash: false,
        threads: 1,
        import_a1111: true,
    };
    Ok(danlu_library::scan(
        root,
        cache,
        &opts,
        &danlu_types::NoProgress,
        cancel_flag(),
    )?)
}

/// Runs `danlu scan`.
///
/// # Errors
/// When no root can be opened or the cache fails; unreadable files are reported in the result.
pub fn run(
    args: &ScanArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let (root, cache) = open_library(args.path.as_deref(), &args.root)?;
    let bars = Bars::new(progress_hidden);
    let opts = ScanOptions {
        hash: !args.no_hash,
        threads: args.threads,
        import_a1111: !args.no_import,
    };
    let report = danlu_library::scan(&root, &cache, &opts, &bars, cancel_flag())
        .with_context(|| format!("scanning `{}`", root.path.display()))?;
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&render(&report))?;
    }
    Ok(if report.errors.is_empty() && !report.cancelled {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

fn render(r: &ScanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "`{}` ({} layout)", r.root, r.layout.as_str());
    let _ = writeln!(
        out,
        "  files      {} ({} unchanged, {} new, {} changed, {} removed)",
        r.files, r.unchanged, r.new, r.changed, r.removed
    );
    let _ = writeln!(out, "  read       {} files (headers)", r.read);
    let _ = writeln!(
        out,
        "  hashed     {} files, {:.1} MB; {} imported from A1111's cache.json; {} still unhashed",
        r.hashed,
        r.hashed_bytes as f64 / 1e6,
        r.imported,
        r.hash_pending
    );
    for e in &r.errors {
        let _ = writeln!(out, "  error      {}", e.error);
    }
    if r.cancelled {
        out.push_str("  cancelled: run `danlu scan` again to resume\n");
    }
    out
}
