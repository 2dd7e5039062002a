//! Errors: [`Error`] for starting the server, [`ApiError`] for one request (mapped to A1111's
//! error shapes).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::net::IpAddr;
use std::path::PathBuf;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--api-auth` is malformed.
    #[error("`--api-auth`: {reason}")]
    Auth {
        /// What is wrong.
        reason: String,
    },
    /// A network-facing address without credentials.
    #[error(
        "refusing to serve on `{addr}` without `--api-auth`: anyone on the network could use \
         the API; add `--api-auth user:password`, or `--insecure` if that is what you want"
    )]
    ListenWithoutAuth {
        /// The address that would be bound.
        addr: IpAddr,
    },
    /// The library root could not be created or opened.
    #[error("`{}`: cannot prepare the library root", path.display())]
    Root {
        /// The root.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The address could not be bound.
    #[error("cannot listen on `{addr}`")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("serving failed")]
    Serve(#[source] std::io::Error),
}

/// The result type of starting the server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One request's failure: a status and a message, sent in A1111's shapes.
///
/// A1111 (`modules/api/api.py` `handle_exception`) answers `HTTPException`s with
/// `{"error", "detail", "body", "errors"}`; request validation errors keep FastAPI's 422
/// `{"detail": [{"loc", "msg", "type"}]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// Whether this is a request validation error (FastAPI's 422 shape).
    pub validation: bool,
}

impl ApiError {
    /// A request that is not valid: 422.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            validation: true,
        }
    }

    /// A name that matches nothing: 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::with_status(StatusCode::NOT_FOUND, message)
    }

    /// Any status with a message.
    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            validation: false,
        }
    }

    /// An internal failure: 500, logged with its full chain, answered with its top message.
    pub fn internal(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "request failed");
        Self::with_status(StatusCode::INTERNAL_SERVER_ERROR, chain)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Serialize)]
struct HttpExceptionBody<'a> {
    error: &'a str,
    detail: &'a str,
    body: &'a str,
    errors: String,
}

#[derive(Serialize)]
struct ValidationItem<'a> {
    loc: [&'a str; 1],
    msg: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct ValidationBody<'a> {
    detail: [ValidationItem<'a>; 1],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.validation {
            let body = ValidationBody {
                detail: [ValidationItem {
                    loc: ["body"],
                    msg: &self.message,
                    kind: "value_error",
                }],
            };
            return (self.status, Json(body)).into_response();
        }
        let body = HttpExceptionBody {
            error: "HTTPException",
            detail: &self.message,
            body: "",
            errors: format!("{}: {}", self.status.as_u16(), self.message),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The result type of a handler.
pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;
