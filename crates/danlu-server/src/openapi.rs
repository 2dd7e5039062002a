//! `GET /openapi.json` and `GET /docs`: the route table, served as an OpenAPI 3 document and a
//! small page that lists it.

use axum::Json;
use axum::response::Html;
use serde_json::{Map, Value, json};

/// Every API route: method, path, summary. The router and this table are checked against each
/// other by the tests.
pub(crate) const ROUTES: &[(&str, &str, &str)] = &[
    (
        "get",
        "/sdapi/v1/sd-models",
        "List checkpoints (A1111 SDModelItem)",
    ),
    (
        "post",
        "/sdapi/v1/refresh-checkpoints",
        "Rescan the library",
    ),
    ("get", "/sdapi/v1/sd-vae", "List VAEs"),
    ("post", "/sdapi/v1/refresh-vae", "Rescan the library"),
    ("get", "/sdapi/v1/loras", "List LoRAs"),
    ("post", "/sdapi/v1/refresh-loras", "Rescan the library"),
    (
        "get",
        "/sdapi/v1/embeddings",
        "List textual-inversion embeddings",
    ),
    ("post", "/sdapi/v1/refresh-embeddings", "Rescan the library"),
    ("get", "/sdapi/v1/hypernetworks", "List hypernetworks"),
    ("get", "/sdapi/v1/samplers", "List samplers"),
    ("get", "/sdapi/v1/schedulers", "List schedulers"),
    ("get", "/sdapi/v1/upscalers", "List upscalers"),
    ("get", "/sdapi/v1/options", "Read settings"),
    (
        "post",
        "/sdapi/v1/options",
        "Change settings (switches checkpoint and VAE)",
    ),
    ("get", "/sdapi/v1/cmd-flags", "Command-line settings"),
    ("post", "/sdapi/v1/txt2img", "Text to image"),
    (
        "post",
        "/sdapi/v1/img2img",
        "Image to image; with `mask`, inpainting (whole picture or only masked)",
    ),
    (
        "post",
        "/sdapi/v1/png-info",
        "Generation parameters of an image",
    ),
    (
        "get",
        "/sdapi/v1/progress",
        "Progress of the running job, with a preview",
    ),
    ("post", "/sdapi/v1/interrupt", "Stop the running job"),
    ("post", "/sdapi/v1/skip", "Skip the running batch"),
    ("get", "/sdapi/v1/memory", "Memory use"),
    ("get", "/sdapi/v1/scripts", "Scripts (none)"),
    (
        "get",
        "/danlu/v1/status",
        "Root, loaded model, and how to fill an empty library",
    ),
    (
        "get",
        "/danlu/v1/library",
        "Library models with filters (kind, base, category, q) and sort",
    ),
    ("get", "/danlu/v1/preview", "A model's preview image"),
    (
        "get",
        "/danlu/v1/doctor",
        "Problems in the library and their fixes",
    ),
    ("get", "/danlu/v1/tags", "Categories and tags with counts"),
    (
        "get",
        "/danlu/v1/vae",
        "Which VAE a checkpoint uses and why",
    ),
    (
        "post",
        "/danlu/v1/inspect",
        "Identify an uploaded model (body, X-File-Name) or a library file",
    ),
    (
        "post",
        "/danlu/v1/uploads/{id}/place",
        "File an upload where its kind belongs",
    ),
    (
        "post",
        "/danlu/v1/png-info",
        "Parameters of an image (raw body) and the models it lacks",
    ),
    (
        "post",
        "/danlu/v1/reproduce",
        "Plan (and with ?run=true make and compare) an image again",
    ),
    ("get", "/danlu/v1/queue", "The running and waiting jobs"),
    ("get", "/danlu/v1/events", "Progress as server-sent events"),
];

/// The OpenAPI document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary) in ROUTES {
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "Successful Response"},
                "422": {"description": "Validation Error"}
            }
        });
        if *method == "post" && path.starts_with("/sdapi/") {
            op["requestBody"] = json!({
                "content": {"application/json": {"schema": {"type": "object"}}}
            });
        }
        if let Value::Object(entry) = paths
            .entry((*path).to_owned())
            .or_insert_with(|| Value::Object(Map::new()))
        {
            entry.insert((*method).to_owned(), op);
        }
    }
    json!({
        "openapi": "3.0.2",
        "info": {"title": "danlu", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths
    })
}

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> Json<Value> {
    Json(document())
}

/// `GET /docs`: the routes, rendered from `/openapi.json` in the browser.
pub(crate) async fn docs() -> Html<&'static str> {
    Html(include_str!("../ui/docs.html"))
}
