//! `danlu serve`: the web UI and the AUTOMATIC1111-compatible API.

use crate::ExitStatus;
use crate::args::ServeArgs;
use crate::commands::download::runtime;
use crate::commands::scan::config_path;
use crate::printer::Printer;
use anyhow::Context as _;
use danlu_library::{choose_root, parse_config};
use danlu_server::{Server, ServerConfig, parse_api_auth};
use serde::Serialize;
use std::path::PathBuf;

/// What `danlu serve --json` prints once the server listens.
#[derive(Debug, Serialize)]
pub struct ServeReport {
    /// The URL of the web UI.
    pub url: String,
    /// The library root served.
    pub root: String,
}

/// The root: `--root`, `DANLU_ROOT`, the config file, else `~/danlu` (created when missing).
fn serve_root(args: &ServeArgs) -> anyhow::Result<PathBuf> {
    let env = std::env::var_os("DANLU_ROOT").map(PathBuf::from);
    let config = match config_path() {
        Some(p) if p.is_file() => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading config `{}`", p.display()))?;
            Some(parse_config(&text).with_context(|| format!("reading config `{}`", p.display()))?)
        }
        _ => None,
    };
    if let Some((path, _)) = choose_root(args.root.root.as_deref(), env.as_deref(), config.as_ref())
    {
        return Ok(path);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("no library root: pass `--root ROOT` or set `DANLU_ROOT`")?;
    Ok(home.join("danlu"))
}

/// Runs `danlu serve` until Ctrl-C.
///
/// # Errors
/// Bad `--api-auth`, `--listen` without credentials, a root that cannot be made, or an
/// address that cannot be bound.
pub fn run(args: &ServeArgs, printer: &Printer) -> anyhow::Result<ExitStatus> {
    let mut config = ServerConfig::new(serve_root(args)?);
    config.host = args.host;
    config.port = args.port;
    config.listen = args.listen;
    config.insecure = args.insecure;
    config.auth = match &args.api_auth {
        Some(text) => parse_api_auth(text)?,
        None => Vec::new(),
    };
    config.body_limit = args.max_body_mib.saturating_mul(1024 * 1024);
    let engine = crate::commands::engine::configure(&args.engine)?;
    config.device = engine.device;
    config.dtype = engine.dtype;
    // Refuse before anything is created or bound.
    config.bind_addr()?;
    let rt = runtime()?;
    rt.block_on(async {
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let host = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let report = ServeReport {
            url: format!("http://{host}/"),
            root: server.root().display().to_string(),
        };
        if printer.json {
            printer.json(&report)?;
        } else {
            printer.text(&format!(
                "danlu serves `{}` on {} (API docs: {}docs); Ctrl-C stops\n",
                report.root, report.url, report.url
            ))?;
        }
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = std::sync::Arc::clone(&stop);
        // A second Ctrl-C exits at once, as in the other commands.
        let pressed = std::sync::atomic::AtomicBool::new(false);
        let _ = ctrlc::set_handler(move || {
            if pressed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
            notify.notify_one();
        });
        server.run(async move { stop.notified().await }).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitStatus::Success)
}
