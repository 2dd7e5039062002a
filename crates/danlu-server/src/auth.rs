//! HTTP basic authentication for `--api-auth` (A1111 `modules/api/api.py` `auth`), over every
//! route: the web UI calls the same API.

use crate::config::Credential;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::sync::Arc;

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization` header value carries one of the credentials.
pub(crate) fn is_authorized(value: Option<&str>, credentials: &[Credential]) -> bool {
    let Some(encoded) = value.and_then(|v| {
        v.strip_prefix("Basic ")
            .or_else(|| v.strip_prefix("basic "))
    }) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    credentials.iter().fold(false, |ok, c| {
        ok | (same(user, c.user.as_bytes()) & same(password, c.password.as_bytes()))
    })
}

/// The middleware: 401 with `WWW-Authenticate: Basic` unless the request carries credentials.
pub(crate) async fn require(
    State(credentials): State<Arc<Vec<Credential>>>,
    request: Request,
    next: Next,
) -> Response {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if is_authorized(value, &credentials) {
        return next.run(request).await;
    }
    let mut response =
        ApiError::with_status(StatusCode::UNAUTHORIZED, "Incorrect username or password")
            .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"danlu\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_checked() {
        let creds = crate::config::parse_api_auth("u:p,v:w:x").unwrap();
        let header = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(is_authorized(Some(&header("u:p")), &creds));
        assert!(is_authorized(Some(&header("v:w:x")), &creds));
        assert!(!is_authorized(Some(&header("u:x")), &creds));
        assert!(!is_authorized(Some(&header("u")), &creds));
        assert!(!is_authorized(Some("Bearer abc"), &creds));
        assert!(!is_authorized(None, &creds));
    }
}
