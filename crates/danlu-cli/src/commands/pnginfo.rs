//! `danlu pnginfo`: the generation parameters stored in images.

use crate::ExitStatus;
use crate::args::PnginfoArgs;
use crate::printer::Printer;
use danlu_pnginfo::{IMAGE_EXTENSIONS, ImageReport, to_a1111_infotext};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Runs `danlu pnginfo`.
///
/// # Errors
/// Only when output cannot be written; unreadable images are reported in the results.
pub fn run(args: &PnginfoArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let mut reports = Vec::new();
    for path in &args.paths {
        match walk_images(path) {
            Ok(files) => reports.extend(files.iter().map(|f| ImageReport::read(f))),
            Err(e) => reports.push(ImageReport {
                path: path.display().to_string(),
                params: None,
                error: Some(format!("`{}`: {e}", path.display())),
            }),
        }
    }
    let failed = reports.iter().any(ImageReport::is_error);
    if printer.json {
        if reports.len() == 1 && args.paths.len() == 1 && args.paths[0].is_file() {
            printer.json(&reports[0])?;
        } else {
            printer.json(&reports)?;
        }
    } else {
        let mut text = String::new();
        for r in &reports {
            let _ = writeln!(text, "`{}`", r.path);
            match (&r.params, &r.error) {
                (_, Some(err)) => {
                    let _ = writeln!(text, "  error: {err}");
                }
                (Some(p), None) => {
                    let _ = writeln!(text, "  source: {}", source_name(p));
                    if p.raw.is_empty() && p.prompt.is_empty() {
                        let _ = writeln!(text, "  (no generation parameters)");
                    } else {
                        for line in to_a1111_infotext(p).lines() {
                            let _ = writeln!(text, "  {line}");
                        }
                    }
                }
                (None, None) => {}
            }
            text.push('\n');
        }
        printer.text(&text)?;
    }
    Ok(if failed {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    })
}

fn source_name(p: &danlu_pnginfo::GenerationParams) -> String {
    serde_json::to_value(p.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The path itself when it is a file, else every image below it, sorted.
fn walk_images(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !std::fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
        let entry = entry.map_err(std::io::Error::other)?;
        let p = entry.path();
        if entry.file_type().is_file()
            && p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(p.to_path_buf());
        }
    }
    Ok(out)
}
