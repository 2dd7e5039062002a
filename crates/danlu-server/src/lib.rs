//! `danlu serve`: the AUTOMATIC1111-compatible HTTP API, danlu's own API and the embedded web
//! UI, with one engine thread that owns the device and runs one generation at a time.
//!
//! - [`ServerConfig`]: root, address, `--listen` and `--api-auth` rules, body limit;
//!   [`parse_api_auth`] reads `user:pass[,user2:pass2]`.
//! - [`Server`]: [`Server::bind`] prepares the root (created in A1111 layout when missing),
//!   scans it, starts the engine and binds; [`Server::run`] serves until shutdown.
//! - Hashes: the library is hashed in the background after startup and after each refresh
//!   that finds new files (the library's incremental scan, on its own cache connection), so
//!   checkpoint titles gain A1111's `[SHORTHASH]`; a checkpoint or VAE still unhashed is hashed
//!   when loaded, as A1111 does, and stored.
//! - Images are saved when asked (`save_images`, which the UI always sets) as A1111 saves them:
//!   `ROOT/outputs/txt2img-images/YYYY-MM-DD/NNNNN-SEED.png` (and `img2img-images`).
//! - Routes: `/sdapi/v1/*` (A1111's paths, fields and defaults; `modules/api/api.py`),
//!   `/danlu/v1/*` (library, doctor, tags, inspect and file uploads, image parameters, queue,
//!   server-sent progress), `/openapi.json`, `/docs` and the UI at `/`.
//!
//! ```no_run
//! # async fn f() -> danlu_server::Result<()> {
//! let server = danlu_server::Server::bind(danlu_server::ServerConfig::new("/sd/webui")).await?;
//! println!("serving on http://{}", server.local_addr());
//! server.run(std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod auth;
pub mod config;
mod danlu_v1;
mod engine;
mod error;
mod library;
mod openapi;
mod sdapi;
mod server;
mod state;
mod ui;

pub use config::{Credential, DEFAULT_BODY_LIMIT, DEFAULT_PORT, ServerConfig, parse_api_auth};
pub use error::{ApiError, Error, Result};
pub use library::prepare_root;
pub use server::Server;
