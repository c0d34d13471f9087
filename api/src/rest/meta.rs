//! `/api/health` and `/api/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ErrorBody;
use crate::state::{AppState, Health};

/// Health of the API process.
///
/// The agent link, the follower store (catch-up age and lag) and the live event relay.
/// Always 200; `status` is `degraded` when a part is down.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "meta",
    operation_id = "health",
    responses(
        (status = 200, description = "The health report", body = Health),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
    )
)]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(state.health.health())
}

/// This API's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value, content_type = "application/json"),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
    )
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::openapi_json(),
    )
}
