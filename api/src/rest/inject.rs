//! `POST /api/websocket/{trafficId}/send`: inject a message into a live connection.
//!
//! The store says whether the connection exists and is still open (404, 409); the
//! agent, which holds the connection, sends the message and records it as an injected
//! frame, whose id is the answer.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::Refusal;
use frametap_store::{FrameId, TrafficId};

use super::common::{JsonBody, PathText, agent_error, follower};
use super::websocket::refresh;
use crate::agent_views::{SendMessage, Sent};
use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, ControlError};

/// Send a message into a WebSocket connection.
///
/// The agent sends it to the chosen peer as one frame (text, or binary with
/// `isBinary`), as if the other peer had, and records that frame with `injected`.
/// Answers `201` with the frame's id (`Location` points at it) once the agent has
/// taken it. It is written (and recorded) between messages: at once, or as soon as
/// a fragmented message that is under way has its last fragment through.
#[utoipa::path(
    post,
    path = "/api/websocket/{trafficId}/send",
    tag = "websocket",
    operation_id = "sendMessage",
    params(("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection")),
    request_body(content = SendMessage, description = "The message",
        example = json!({"direction": "to-client", "data": "{\"type\":\"notice\",\"text\":\"hello\"}", "isBinary": false})),
    responses(
        (status = 201, description = "Sent and recorded", body = Sent,
            headers(("Location" = String, description = "`/api/websocket/frame/{frameId}`: the injected frame"))),
        (status = 400, description = "A malformed body (not JSON, unknown fields, `data` not base64 with `isBinary`), or a message the agent refused", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such WebSocket connection", body = ErrorBody,
            example = json!({"error": "WebSocket connection not found"})),
        (status = 409, description = "The connection is closed, or cannot take a message now (its HTTP/2 stream ended, or too many are waiting)", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The agent failed to send", body = ErrorBody),
        (status = 503, description = "The agent is not running (nothing was sent), or the store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn send_message(
    State(state): State<AppState>,
    traffic: PathText,
    JsonBody(message): JsonBody<SendMessage>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("WebSocket connection not found".into());
    let traffic = traffic.parse::<TrafficId>().ok_or_else(not_found)?;
    let payload = if message.is_binary {
        BASE64.decode(message.data.as_bytes()).map_err(|e| {
            ApiError::BadRequest(format!(
                "`data` must be standard base64 (with padding) when `isBinary` is true: {e}"
            ))
        })?
    } else {
        message.data.into_bytes()
    };
    let mut open = connection_open(&state, traffic)?;
    if open.is_none() {
        // The follower may lag a just-opened connection: catch up once before saying no.
        refresh(&state).await?;
        open = connection_open(&state, traffic)?;
    }
    match open {
        None => return Err(not_found()),
        Some(false) => {
            return Err(ApiError::Conflict(format!(
                "WebSocket connection {traffic} is closed: nothing can be sent into it"
            )));
        }
        Some(true) => {}
    }
    let seq = state
        .agent
        .send(traffic, message.direction, payload, message.is_binary)
        .await
        .map_err(|error| match error {
            // The store knows the connection: an agent that does not has seen it end
            // (or restarted since), which is a closed connection too.
            ControlError::Refused(Refusal::NotFound | Refusal::Conflict, reason) => {
                ApiError::Conflict(format!(
                    "WebSocket connection {traffic} is no longer open: {reason}"
                ))
            }
            other => agent_error(other, &format!("send into {traffic}"), "nothing was sent"),
        })?;
    // Usually the injected frame is recorded by now: make it readable.
    if let Err(error) = refresh(&state).await {
        tracing::warn!(%error, "catching up after sending a message failed");
    }
    let frame_id = FrameId::new(traffic, seq).to_string();
    let location = format!("/api/websocket/frame/{frame_id}");
    let mut response = (
        StatusCode::CREATED,
        Json(Sent {
            frame_id,
            traffic_id: traffic.to_string(),
            direction: message.direction,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `Some(open)` for a connection the store knows, `None` otherwise.
fn connection_open(state: &AppState, traffic: TrafficId) -> Result<Option<bool>, ApiError> {
    let store = follower(state)?;
    Ok(store
        .ws_connection(traffic)
        .map_err(|e| ApiError::store_read(&e))?
        .map(|connection| connection.open))
}
