//! Binding the address and serving the routes.

use crate::config::ServerConfig;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::library::{Library, prepare_root};
use crate::state::{AppState, Shared};
use crate::{Error, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: Router,
    root: std::path::PathBuf,
    state: Shared,
}

/// All routes with their state and layers.
fn app(state: Shared) -> Router {
    let mut router = Router::new()
        .nest("/sdapi/v1", crate::sdapi::router())
        .nest("/danlu/v1", crate::danlu_v1::router())
        .route("/", get(crate::ui::index))
        .route("/ui/{file}", get(crate::ui::asset))
        .route("/openapi.json", get(crate::openapi::openapi))
        .route("/docs", get(crate::openapi::docs))
        .fallback(|| async { ApiError::not_found("Not Found") })
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(Arc::clone(&state));
    if !state.config.auth.is_empty() {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(state.config.auth.clone()),
            crate::auth::require,
        ));
    }
    router
}

impl Server {
    /// Checks the address rules, prepares the root (creating it in A1111 layout when
    /// missing), scans it, starts the engine thread and binds the address.
    ///
    /// # Errors
    /// A network-facing address without credentials, a root that cannot be made, or an
    /// address that cannot be bound.
    pub async fn bind(config: ServerConfig) -> Result<Self> {
        let addr = config.bind_addr()?;
        let root_path = config.root.clone();
        let library = tokio::task::spawn_blocking(move || -> Result<Library> {
            let root = prepare_root(&root_path)?;
            let stale = crate::library::remove_stale_uploads(&root);
            if stale > 0 {
                tracing::info!(stale, "removed uploads that were never filed");
            }
            let library = Library::open(root)?;
            if let Err(e) = library.refresh() {
                tracing::warn!(error = %e, "first scan failed");
            }
            Ok(library)
        })
        .await
        .map_err(|e| Error::Serve(std::io::Error::other(e)))??;
        let library = Arc::new(library);
        let root = library.root.path.clone();
        let folders_of = |kind: danlu_types::Kind| -> Vec<std::path::PathBuf> {
            library
                .root
                .folders()
                .into_iter()
                .filter(|f| f.kinds.contains(&kind))
                .map(|f| f.path)
                .collect()
        };
        let engine = Engine::start(
            danlu_diffusion::adapters::AdapterFolders {
                lora: folders_of(danlu_types::Kind::Lora),
                embeddings: folders_of(danlu_types::Kind::Embedding),
                hypernetworks: folders_of(danlu_types::Kind::Hypernetwork),
                ..Default::default()
            },
            Arc::clone(&library),
        )?;
        let state = Arc::new(AppState::new(config, Arc::clone(&library), engine));
        if state.config.hash_in_background {
            library.start_hashing(Arc::clone(&state.hash_stop))?;
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Self {
            listener,
            addr,
            router: app(Arc::clone(&state)),
            root,
            state,
        })
    }

    /// The bound address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The library root served.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    /// Serves until `shutdown` completes.
    ///
    /// # Errors
    /// [`Error::Serve`] when accepting connections fails.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let state = self.state;
        let shutdown = async move {
            shutdown.await;
            state
                .stopping
                .store(true, std::sync::atomic::Ordering::SeqCst);
            state
                .hash_stop
                .store(true, std::sync::atomic::Ordering::SeqCst);
            state.library.stop_hashing();
        };
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}
