//! The web UI: plain HTML, CSS and JavaScript embedded at build time, so `cargo build` alone
//! makes a working UI and nothing needs Node at run time.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE_CSS: &str = include_str!("../ui/style.css");

/// `GET /`.
pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// `GET /ui/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    let (mime, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        _ => return ApiError::not_found(format!("`{file}` not found")).into_response(),
    };
    ([(header::CONTENT_TYPE, mime)], body).into_response()
}
