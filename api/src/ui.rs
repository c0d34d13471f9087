//! The web UI: plain JavaScript modules, HTML and CSS from `api/ui/`, embedded in the
//! binary (no Node, no build step) and served at `/` and `/ui/*`.
//!
//! The assets are served without the token: they hold no captured data, and every
//! call they make to `/api` and Socket.IO carries it. A strict Content-Security-Policy
//! lets the page load only its own scripts and styles and talk only to its own
//! origin, so nothing is fetched from a third party and nothing captured is sent
//! anywhere else.
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use crate::error::ApiError;

/// What the page may load and talk to: its own origin only (`'self'` covers the
/// Socket.IO WebSocket on the same host and port).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The UI's files: name under `/ui/`, content, content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", include_str!("../ui/app.js"), JS),
    ("api.js", include_str!("../ui/api.js"), JS),
    ("live.js", include_str!("../ui/live.js"), JS),
    ("dom.js", include_str!("../ui/dom.js"), JS),
    ("traffic.js", include_str!("../ui/traffic.js"), JS),
    ("connection.js", include_str!("../ui/connection.js"), JS),
    ("virtual_list.js", include_str!("../ui/virtual_list.js"), JS),
    ("payload.js", include_str!("../ui/payload.js"), JS),
    ("rules.js", include_str!("../ui/rules.js"), JS),
    ("compare.js", include_str!("../ui/compare.js"), JS),
    (
        "style.css",
        include_str!("../ui/style.css"),
        "text/css; charset=utf-8",
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = include_str!("../ui/index.html");

/// `/` and `/ui/{file}`, for merging into the API's router outside the token check.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", any(page))
        .route("/ui/{file}", any(ui_file))
}

/// Other methods than GET (and HEAD) get the API's JSON 405, as everywhere else.
async fn readable(method: &Method, uri: &Uri) -> Result<(), ApiError> {
    match *method {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(crate::error::method_not_allowed(method.clone(), uri.clone()).await),
    }
}

async fn page(method: Method, uri: Uri) -> Result<Response, ApiError> {
    readable(&method, &uri).await?;
    Ok(asset(INDEX, "text/html; charset=utf-8"))
}

async fn ui_file(method: Method, uri: Uri, Path(file): Path<String>) -> Result<Response, ApiError> {
    readable(&method, &uri).await?;
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, body, kind)| asset(body, kind))
        .ok_or_else(|| ApiError::NotFound(format!("the UI has no file {file:?}")))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // A new binary may serve new files: always ask.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The names of the UI's files (for tests).
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(name, _, _)| *name)
}
