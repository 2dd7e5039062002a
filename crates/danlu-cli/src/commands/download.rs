//! `danlu download`: fetch models from HuggingFace, Civitai, the catalogue or a URL, check them
//! and file them into the library with their sidecars.

use crate::ExitStatus;
use crate::args::DownloadArgs;
use crate::commands::scan::open_library;
use crate::printer::Printer;
use crate::progress::Bars;
use anyhow::Context as _;
use danlu_download::{
    Client, ClientOptions, DownloadReport, Endpoints, Filed, Filer, LeaveInPlace, fetch,
};
use danlu_library::sort::SortAction;
use danlu_library::{Cache, Root, SortMode, SortOptions};
use danlu_types::NoProgress;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

/// The client settings from the environment (`HF_ENDPOINT`, `HF_TOKEN`, `CIVITAI_ENDPOINT`,
/// `CIVITAI_TOKEN`; `HTTPS_PROXY` is read by the HTTP library). `DANLU_DOWNLOAD_BACKOFF_MS`
/// shortens the pause between retries (tests).
pub(crate) fn client_from_env() -> anyhow::Result<Client> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let defaults = Endpoints::default();
    let mut opts = ClientOptions {
        endpoints: Endpoints {
            huggingface: var("HF_ENDPOINT").unwrap_or(defaults.huggingface),
            civitai: var("CIVITAI_ENDPOINT").unwrap_or(defaults.civitai),
        },
        hf_token: var("HF_TOKEN"),
        civitai_token: var("CIVITAI_TOKEN"),
        ..ClientOptions::default()
    };
    if let Some(ms) = var("DANLU_DOWNLOAD_BACKOFF_MS").and_then(|v| v.parse().ok()) {
        opts.backoff = std::time::Duration::from_millis(ms);
        opts.max_backoff = opts.backoff * 4;
    }
    Client::new(opts).context("starting the HTTP client")
}

/// A tokio runtime for the async download library.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Files downloads with the library's `sort` (move, sidecars travel along, cache updated).
struct LibraryFiler {
    root: Root,
    cache: Mutex<Cache>,
}

impl Filer for LibraryFiler {
    fn file(
        &self,
        model: &Path,
        sidecars: &[PathBuf],
    ) -> Result<Filed, Box<dyn std::error::Error + Send + Sync>> {
        let cache = self
            .cache
            .lock()
            .map_err(|_| "the cache lock is poisoned")?;
        let opts = SortOptions {
            mode: SortMode::Move,
            dry_run: false,
            step_delay: None,
        };
        let report = danlu_library::sort(
            &self.root,
            Some(&cache),
            &[model.to_path_buf()],
            &opts,
            &NoProgress,
            &AtomicBool::new(false),
        )?;
        let item = report
            .items
            .into_iter()
            .next()
            .ok_or("sort reported nothing for the download")?;
        let moved_sidecars = || {
            item.sidecars
                .iter()
                .map(|s| PathBuf::from(&s.destination))
                .collect::<Vec<_>>()
        };
        match item.action {
            SortAction::Move | SortAction::Copy | SortAction::Link => Ok(Filed {
                path: item
                    .destination
                    .clone()
                    .map_or_else(|| model.to_path_buf(), PathBuf::from),
                sidecars: moved_sidecars(),
                kind: item.kind,
                base: item.base,
            }),
            SortAction::InPlace => Ok(Filed {
                path: model.to_path_buf(),
                sidecars: sidecars.to_vec(),
                kind: item.kind,
                base: item.base,
            }),
            SortAction::Duplicate => {
                // The library already has these bytes: the download is not kept twice.
                let _ = std::fs::remove_file(model);
                for s in sidecars {
                    let _ = std::fs::remove_file(s);
                }
                let existing = item.duplicate_of.clone().unwrap_or_default();
                Ok(Filed {
                    path: PathBuf::from(existing),
                    sidecars: Vec::new(),
                    kind: item.kind,
                    base: item.base,
                })
            }
            SortAction::Skipped => Err(format!(
                "not filed ({}); the download stays at `{}`",
                item.reason.unwrap_or_else(|| "unknown kind".to_owned()),
                model.display()
            )
            .into()),
            _ => Err(item
                .error
                .unwrap_or_else(|| "sort failed".to_owned())
                .into()),
        }
    }
}

/// One source's outcome, for `--json`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Outcome {
    Done(DownloadReport),
    Failed { source: String, error: String },
}

/// The error and its causes on one line each (`error:`, `caused by:`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(text, "\n  caused by: {c}");
        cause = c.source();
    }
    text
}

/// Runs `danlu download`.
///
/// # Errors
/// No library root (without `--to`), or output that cannot be written; each source's failure is
/// reported and gives exit status 1.
pub fn run(
    args: &DownloadArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    if args.name.is_some() && args.sources.len() > 1 {
        anyhow::bail!("`--name` needs exactly one SOURCE");
    }
    let client = client_from_env()?;
    let (dir, filer): (PathBuf, Box<dyn Filer>) = match &args.to {
        Some(to) => (to.clone(), Box::new(LeaveInPlace)),
        None => {
            let (root, cache) = open_library(None, &args.root)?;
            (
                // Beside the state folder, not in it: `sort` ignores files under `ROOT/.danlu`.
                root.path.join(".danlu-downloads"),
                Box::new(LibraryFiler {
                    root,
                    cache: Mutex::new(cache),
                }),
            )
        }
    };
    let bars = Bars::new(progress_hidden);
    let rt = runtime()?;
    let results = rt.block_on(futures_util::future::join_all(args.sources.iter().map(
        |s| {
            fetch(
                &client,
                s,
                &dir,
                args.name.as_deref(),
                filer.as_ref(),
                &bars,
            )
        },
    )));
    let mut outcomes = Vec::new();
    let mut failed = false;
    for (source, r) in args.sources.iter().zip(results) {
        match r {
            Ok(rep) => outcomes.push(Outcome::Done(rep)),
            Err(e) => {
                failed = true;
                let text = error_chain(&e);
                eprintln!("error: {text}");
                outcomes.push(Outcome::Failed {
                    source: source.clone(),
                    error: text,
                });
            }
        }
    }
    if printer.json {
        match outcomes.as_slice() {
            [one @ Outcome::Done(_)] => printer.json(one)?,
            [Outcome::Failed { .. }] => {}
            _ => printer.json(&outcomes)?,
        }
    } else {
        let mut text = String::new();
        for o in &outcomes {
            if let Outcome::Done(r) = o {
                render(r, &mut text);
            }
        }
        printer.text(&text)?;
    }
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn render(r: &DownloadReport, out: &mut String) {
    let what = if r.already_present {
        "already here"
    } else if r.resumed_from > 0 {
        "resumed"
    } else {
        "downloaded"
    };
    let _ = writeln!(out, "{what} `{}`", r.path);
    let _ = writeln!(out, "  from      {}", r.source);
    let _ = writeln!(out, "  kind      {} ({})", r.kind, r.base);
    let check = if r.verified {
        "matches the published hash"
    } else {
        "no hash published: not verified"
    };
    let _ = writeln!(out, "  sha256    {} ({check})", r.sha256);
    let _ = writeln!(out, "  size      {} bytes", r.size);
    for s in &r.sidecars {
        let _ = writeln!(out, "  sidecar   `{s}`");
    }
    out.push('\n');
}
