//! `/api/health`. (`/api/openapi.json` is served by `crate::openapi`.)

use axum::Json;
use axum::extract::State;

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
