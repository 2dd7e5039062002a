//! `danlu reproduce`: read an image's parameters, find its files in the library, generate it
//! again and compare (the work lives in `danlu-reproduce`).

use crate::ExitStatus;
use crate::args::ReproduceArgs;
use crate::printer::Printer;
use crate::progress::Bars;
use anyhow::Context as _;
use danlu_diffusion::pipeline::Progress;
use danlu_library::{choose_root, parse_config};
use danlu_reproduce::{FieldComparison, Library, Plan, Resource, Status};
use danlu_types::Reporter as _;
use serde::Serialize;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// What `danlu reproduce --json` prints.
#[derive(Debug, Serialize)]
pub struct ReproduceReport {
    /// `generated`, `dry_run` or `blocked`.
    pub status: &'static str,
    /// The plan: files found and missing, sampler, settings, what is not reproduced.
    pub plan: Plan,
    /// The image written, when generated.
    pub output: Option<String>,
    /// The `parameters` text of the new image.
    pub parameters: Option<String>,
    /// One row per supported field: source, expected, reproduced, equal.
    pub comparison: Vec<FieldComparison>,
    /// Whether every compared field is equal (null when nothing was generated).
    pub equal: Option<bool>,
    /// What the engine said about LoRAs, embeddings and hypernetworks.
    pub warnings: Vec<String>,
}

/// The library root from `--root`, `DANLU_ROOT` or the config file; `None` when none is set.
fn root_path(args: &ReproduceArgs) -> anyhow::Result<Option<PathBuf>> {
    let env = std::env::var_os("DANLU_ROOT").map(PathBuf::from);
    let config = match super::scan::config_path() {
        Some(p) if p.is_file() => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading config `{}`", p.display()))?;
            Some(parse_config(&text).with_context(|| format!("reading config `{}`", p.display()))?)
        }
        _ => None,
    };
    Ok(choose_root(args.root.root.as_deref(), env.as_deref(), config.as_ref()).map(|(p, _)| p))
}

/// Runs `danlu reproduce`.
///
/// # Errors
/// An unreadable image or library, or a failed generation.
pub fn run(
    args: &ReproduceArgs,
    progress_hidden: bool,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let params = danlu_pnginfo::read_image(&args.image)
        .with_context(|| format!("reading `{}`", args.image.display()))?;
    let engine = super::engine::configure(&args.engine)?;
    let bars = Bars::new(progress_hidden);
    let cancel = super::scan::cancel_flag();
    let library = root_path(args)?
        .map(|root| {
            Library::open(&root, &bars, cancel)
                .with_context(|| format!("opening library `{}`", root.display()))
        })
        .transpose()?;
    let plan = danlu_reproduce::plan(&args.image.display().to_string(), &params, library.as_ref());
    let mut report = ReproduceReport {
        status: if args.dry_run {
            "dry_run"
        } else if plan.is_ready() {
            "generated"
        } else {
            "blocked"
        },
        plan,
        output: None,
        parameters: None,
        comparison: Vec::new(),
        equal: None,
        warnings: Vec::new(),
    };
    if report.status == "generated" {
        let seed = report.plan.settings.seed.unwrap_or_default();
        let output = args.output.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "{}.reproduced.png",
                danlu_reproduce::model_stem(
                    &args
                        .image
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            ))
        });
        let path = danlu_generate::output_paths(&output, &[seed])?
            .into_iter()
            .next()
            .context("no output path")?;
        if path.exists() {
            anyhow::bail!("`{}` already exists", path.display());
        }
        let mut task = None;
        let mut on_step = |p: &Progress<'_>| {
            let t = *task.get_or_insert_with(|| bars.start("sampling", Some(p.steps as u64)));
            bars.advance(t, 1);
            if cancel.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let (mut spec, _) = danlu_reproduce::to_job(&report.plan)?;
        engine.apply(&mut spec);
        let checkpoint = spec.checkpoint.clone();
        let mut model = danlu_generate::LoadedModel::load(spec, &bars, cancel)
            .with_context(|| format!("loading `{}`", checkpoint.display()))?;
        let done = danlu_reproduce::generate_with(
            &mut model,
            &report.plan,
            &params,
            &bars,
            cancel,
            &mut on_step,
        );
        if let Some(t) = task {
            bars.finish(t);
        }
        let done = done?;
        danlu_fs::write_atomic(&path, &done.generated.png, danlu_fs::Overwrite::Never)?;
        report.equal = Some(done.is_equal());
        report.output = Some(path.display().to_string());
        report.parameters = Some(done.generated.parameters.clone());
        report.comparison = done.comparison;
        report.warnings = done.warnings;
    }
    let status = match (report.status, report.equal) {
        ("dry_run", _) | ("generated", Some(true)) => ExitStatus::Success,
        _ => ExitStatus::Failure,
    };
    if printer.json {
        printer.json(&report)?;
    } else {
        printer.text(&render(&report))?;
    }
    Ok(status)
}

fn resource_line(out: &mut String, label: &str, r: &Resource) {
    let name = r.name.as_deref().unwrap_or("(unnamed)");
    let hash = r
        .hash
        .as_deref()
        .map(|h| format!(" (hash `{h}`)"))
        .unwrap_or_default();
    match r.status {
        Status::Found => {
            let by = match r.matched_by {
                Some(danlu_reproduce::MatchedBy::Hash) => "by hash",
                Some(danlu_reproduce::MatchedBy::Name) => "by name",
                Some(danlu_reproduce::MatchedBy::Prompt) => "named in the prompt",
                None => "",
            };
            let applied = if r.applied {
                ""
            } else {
                ", found but not applied yet"
            };
            let _ = writeln!(
                out,
                "{label} `{name}`{hash}: found {by}: `{}`{applied}",
                r.path.as_deref().unwrap_or_default()
            );
        }
        Status::Missing => {
            let _ = writeln!(out, "{label} `{name}`{hash}: missing");
            if let Some(l) = &r.lookup {
                if let Some(url) = &l.civitai_url {
                    let _ = writeln!(out, "  look up: {url}");
                }
                if let Some(url) = &l.search_url {
                    let _ = writeln!(out, "  search: {url}");
                }
                let _ = writeln!(out, "  then: `{}`", l.download);
            }
        }
    }
    if let Some(n) = &r.note {
        let _ = writeln!(out, "  note: {n}");
    }
}

fn render(r: &ReproduceReport) -> String {
    let p = &r.plan;
    let mut out = String::new();
    let source = serde_json::to_value(p.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = writeln!(out, "`{}` (parameters from {source})", p.image);
    resource_line(&mut out, "checkpoint", &p.checkpoint);
    if let Some(v) = &p.vae {
        resource_line(&mut out, "VAE", v);
    }
    for l in &p.loras {
        resource_line(&mut out, "LoRA", l);
    }
    for e in &p.embeddings {
        resource_line(&mut out, "embedding", e);
    }
    for h in &p.hypernetworks {
        resource_line(&mut out, "hypernetwork", h);
    }
    let s = &p.sampler;
    let _ = writeln!(
        out,
        "sampler `{}`{}: {}",
        s.stated.as_deref().unwrap_or("-"),
        s.stated_scheduler
            .as_deref()
            .map(|x| format!(" + `{x}`"))
            .unwrap_or_default(),
        match (&s.engine_sampler, &s.error) {
            (Some(e), _) => format!(
                "`{e}`{}",
                s.engine_scheduler
                    .as_deref()
                    .map(|x| format!(", schedule `{x}`"))
                    .unwrap_or_default()
            ),
            (None, Some(err)) => err.clone(),
            (None, None) => "-".to_owned(),
        }
    );
    let st = &p.settings;
    let _ = writeln!(
        out,
        "seed {}, {}x{}, {} steps, CFG {}, clip skip {}, RNG {}",
        st.seed.map_or("-".to_owned(), |v| v.to_string()),
        st.width,
        st.height,
        st.steps,
        st.cfg_scale,
        st.clip_skip,
        st.rng
    );
    for n in &p.not_reproduced {
        let _ = writeln!(
            out,
            "not reproduced: {}: `{}` = `{}`",
            n.feature, n.key, n.value
        );
    }
    for n in &p.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for b in &p.blockers {
        let _ = writeln!(out, "missing: {b}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    if let Some(o) = &r.output {
        let _ = writeln!(out, "wrote `{o}`");
        for c in &r.comparison {
            let _ = writeln!(
                out,
                "  {} {}: {} -> {}",
                if c.equal { "=" } else { "!" },
                c.field,
                c.expected.as_deref().unwrap_or("-"),
                c.reproduced.as_deref().unwrap_or("-")
            );
        }
    } else if r.status == "blocked" {
        let _ = writeln!(out, "nothing generated");
    }
    out
}
