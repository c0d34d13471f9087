//! [`ApiError`]: every error the API answers, as `{"error": "..."}` JSON with the
//! matching status. Handlers never let axum's plain-text rejections through: bad input
//! is a 400 (or a 404 for identifiers) with a message naming what to fix.

use axum::Json;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, and what to do about it.
    #[schema(example = "Frame not found")]
    pub error: String,
}

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: a query parameter is malformed or out of range.
    BadRequest(String),
    /// 401: no or wrong API token.
    Unauthorized(String),
    /// 404: no such resource (or no such endpoint).
    NotFound(String),
    /// 405: the path exists, the method does not.
    MethodNotAllowed(String),
    /// 408: the request body stopped arriving.
    RequestTimeout(String),
    /// 409: the request conflicts with the current state (a closed connection, a rule
    /// id in use).
    Conflict(String),
    /// 413: the request body is over the size limit.
    PayloadTooLarge(String),
    /// 415: the request body is not `application/json`.
    UnsupportedMediaType(String),
    /// 500: a bug (a panicked worker); never caused by input.
    Internal(String),
    /// 502: the agent answered with an error.
    BadGateway(String),
    /// 503: the store can't be read or the agent can't be reached.
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The message sent as `error`.
    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::NotFound(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::RequestTimeout(m)
            | ApiError::Conflict(m)
            | ApiError::PayloadTooLarge(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::Internal(m)
            | ApiError::BadGateway(m)
            | ApiError::Unavailable(m) => m,
        }
    }

    /// The follower store can't be opened or read yet (agent never started, data dir
    /// unreadable): 503 with the reason.
    pub fn store_unavailable(reason: &str) -> ApiError {
        ApiError::Unavailable(format!("capture store not readable yet: {reason}"))
    }

    /// Reading the store failed (I/O error, corrupt record): 503, since it is the
    /// store, not the request, that is at fault.
    pub fn store_read(error: &anyhow::Error) -> ApiError {
        tracing::warn!(error = format!("{error:#}"), "capture store read failed");
        ApiError::Unavailable(format!("reading the capture store failed: {error:#}"))
    }

    /// A blocking worker panicked or was cancelled.
    pub fn worker_failed(error: &tokio::task::JoinError) -> ApiError {
        tracing::error!(%error, "blocking worker failed");
        ApiError::Internal(format!("internal error: worker failed ({error})"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status().as_u16(), self.message())
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message().to_owned(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(self, ApiError::Unauthorized(_)) {
            // RFC 6750: tell the client which scheme to use.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Shortens user input before it is echoed in an error message.
pub(crate) fn excerpt(s: &str) -> String {
    excerpt_to(s, 64)
}

/// `s` cut to at most `max` bytes (at a character boundary), `...` marking a cut.
pub(crate) fn excerpt_to(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Router fallback: `404 {"error": "No such endpoint: METHOD PATH"}`.
pub(crate) async fn no_such_endpoint(method: Method, uri: Uri) -> ApiError {
    // The path only: the query may hold the API token.
    ApiError::NotFound(format!(
        "No such endpoint: {method} {}",
        excerpt(uri.path())
    ))
}

/// Fallback for a known path with an unsupported method: 405 (axum adds `Allow`).
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "Method {method} not allowed on {}: see the Allow header for the supported ones",
        excerpt(uri.path())
    ))
}
