//! The REST endpoints, each documented with `#[utoipa::path]` and registered through
//! [`OpenApiRouter`], so the served routes and the OpenAPI document come from one
//! source.
//!
//! - [`websocket`]: frames, frame count, frame deletion, connection.
//! - [`traffic`]: the traffic list and single entries.
//! - [`meta`]: health and the OpenAPI document.

pub(crate) mod meta;
pub(crate) mod traffic;
pub(crate) mod websocket;

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use frametap_store::Store;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// Every `/api` route, with its OpenAPI description.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(websocket::list_frames, websocket::delete_frames))
        .routes(routes!(websocket::get_frame))
        .routes(routes!(websocket::frame_count))
        .routes(routes!(websocket::get_connection))
        .routes(routes!(traffic::list_traffic))
        .routes(routes!(traffic::get_traffic))
        .routes(routes!(meta::health))
        .routes(routes!(meta::openapi_json))
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

/// The follower store, or 503 while it can't be read.
pub(crate) fn follower(state: &AppState) -> Result<Store, ApiError> {
    state
        .store
        .store()
        .map_err(|reason| ApiError::store_unavailable(&reason))
}
