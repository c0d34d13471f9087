//! What the REST handlers share: the JSON body and path text extractors (errors as
//! JSON), the answer to a failed agent call, and the store follower.
use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use frametap_control::Refusal;
use frametap_store::Store;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, excerpt_to};
use crate::state::{AppState, ControlError};

/// A JSON request body parsed as `T`. Every way the body can be wrong is a JSON
/// [`ApiError`] instead of axum's plain-text rejection: not `application/json` 415,
/// over the size limit (2 MiB) 413, stalled (see [`crate::server`]) 408, malformed
/// JSON or the wrong shape (unknown fields included) 400 with serde's explanation.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// The API's error for a body axum's JSON extractor rejected.
fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
            "the request body must be JSON, sent with `Content-Type: application/json`".into(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
            "the request body is over the {} MiB limit",
            crate::server::MAX_REQUEST_BODY >> 20
        )),
        _ if body_timed_out(rejection) => ApiError::RequestTimeout(
            "the request body stopped arriving before its end (--body-timeout)".into(),
        ),
        _ => ApiError::BadRequest(format!(
            "invalid request body: {}",
            excerpt_to(&rejection.body_text(), 400)
        )),
    }
}

/// Whether reading the body failed because it stopped arriving.
fn body_timed_out(rejection: &JsonRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The single path parameter of a route, as text; `None` when it is not valid
/// percent-encoded UTF-8. Handlers parse it themselves and treat `None` like any other
/// malformed id (404 or empty result), so axum's plain-text rejection never shows.
pub(crate) struct PathText(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let text = Path::<String>::from_request_parts(parts, state).await.ok();
        Ok(PathText(text.map(|Path(text)| text)))
    }
}

impl PathText {
    /// The parameter parsed as `T`; `None` if absent or malformed.
    pub(crate) fn parse<T: std::str::FromStr>(&self) -> Option<T> {
        self.0.as_deref().and_then(|s| s.parse().ok())
    }
}

/// The API's answer when the agent did not `doing` (e.g. "delete the frames of
/// ..."): 503 while it is not running (`undone` says what that left undone), 502 when
/// it failed, and its refusals with its own message: invalid input 400, no such rule
/// or connection 404, a closed connection or a conflicting rule 409.
pub(crate) fn agent_error(error: ControlError, doing: &str, undone: &str) -> ApiError {
    match error {
        ControlError::AgentDown(reason) => ApiError::Unavailable(format!(
            "frametap-agent is not running ({reason}): {undone}. Start the agent and retry."
        )),
        ControlError::Failed(reason) => {
            ApiError::BadGateway(format!("frametap-agent could not {doing}: {reason}"))
        }
        ControlError::Refused(Refusal::BadRequest, message) => ApiError::BadRequest(message),
        ControlError::Refused(Refusal::NotFound, message) => ApiError::NotFound(message),
        ControlError::Refused(Refusal::Conflict, message) => ApiError::Conflict(message),
        ControlError::Refused(Refusal::Upstream, message) => ApiError::BadGateway(message),
    }
}

/// The follower store, or 503 while it can't be read.
pub(crate) fn follower(state: &AppState) -> Result<Store, ApiError> {
    state
        .store
        .store()
        .map_err(|reason| ApiError::store_unavailable(&reason))
}
