//! frametap's API process, library part: the REST API over the capture store.
//!
//! [`router`] serves, under `/api` and behind the API token ([`auth`]):
//!
//! - the seed's WebSocket Frames API: `GET /api/websocket/{trafficId}/frames`,
//!   `GET /api/websocket/frame/{id}`, `GET /api/websocket/{trafficId}/count`,
//!   `DELETE /api/websocket/{trafficId}/frames`, and the connection,
//!   `GET /api/websocket/{trafficId}`;
//! - messages: `GET /api/websocket/{trafficId}/messages`, the frames reassembled into
//!   messages ([`messages`]), paged like frames;
//! - injection: `POST /api/websocket/{trafficId}/send` (`201`, the injected frame's id);
//! - comparison: `GET /api/websocket/{trafficId}/compare/{other}`, two conversations message by
//!   message ([`compare`]);
//! - replays: `POST /api/websocket/{trafficId}/replay` (`202`), `GET /api/replays`,
//!   `GET`/`DELETE /api/replays/{id}`: a recorded conversation played again by the
//!   agent and recorded as a new connection;
//! - rules: `GET /api/rules`, `POST /api/rules` (`201`), `DELETE /api/rules/{id}`
//!   (`200`), the agent's drop / replace / close rules ([`agent_views`]);
//! - exports: `GET /api/har?trafficId=` or `?from=&to=` (HAR 1.2 with Chrome's
//!   WebSocket fields, [`har`]) and `GET /api/websocket/{trafficId}/frames.ndjson`
//!   (every frame, one JSON per line, streamed);
//! - the traffic list (`/api/traffic`, `/api/traffic/{id}`, filtered by method,
//!   protocol, process, status, error), its deletion (`DELETE /api/traffic/{id}`,
//!   `DELETE /api/traffic?…` with the list's filters or `all=true`), the recorded
//!   bodies (`/api/traffic/{id}/request/body`, `/response/body`, decoded by
//!   [`content`]), `/api/health` and `/api/openapi.json` (generated from the
//!   handlers, see [`openapi`]);
//! - the web UI at `/` ([`ui`]: embedded JavaScript modules over this API and the
//!   Socket.IO events), served without the token, which the page sends with each call.
//!
//! Reads go to a read-only follower of the agent's RocksDB ([`StoreSource`]); writes,
//! rules and injected messages go through the agent ([`AgentControl`]).
//!
//! Modules: [`state`] (what handlers need), [`auth`] (token), [`error`] (JSON errors),
//! [`views`] (JSON shapes, shared with the live events), [`agent_views`] (rule and
//! injection shapes), [`messages`] (sans-IO message reassembly), [`har`] (HAR
//! building), `rest` (handlers), [`openapi`]; and for the binary: [`server`] (the
//! HTTP server: connection limit, timeouts, and `gate`, the sans-IO check of each
//! request head), [`follower`] (the RocksDB secondary, caught up continually, in its
//! [`secondary_dir`]), [`agent_link`] (the agent's control socket), [`events`]
//! (Socket.IO: records in capture order to events, messages reassembled live),
//! [`health`]; [`replay_command`] is `frametap-api replay`, a client of this API.

pub mod agent_link;
pub mod agent_views;
pub mod auth;
pub mod compare;
pub mod content;
pub mod error;
pub mod events;
pub mod follower;
mod gate;
pub mod har;
pub mod health;
pub mod messages;
pub mod openapi;
mod query;
pub mod replay_command;
mod rest;
pub mod secondary_dir;
pub mod server;
pub mod state;
pub mod ui;
pub mod views;

use axum::Router;
use axum::middleware;

pub use auth::{AuthConfig, load_or_create_token};
pub use error::{ApiError, ErrorBody};
pub use state::{
    AgentControl, AgentFuture, AgentHealth, AppState, ControlError, DeleteFramesFuture,
    EventsHealth, Health, HealthSource, HealthStatus, StoreHealth, StoreSource, TrafficDeletion,
};
/// Names of the `X-Frametap-*` headers of the body endpoints.
pub mod body_headers {
    pub use crate::rest::bodies::{
        DECODED_HEADER, ENCODING_HEADER, SIZE_HEADER, STORED_HEADER, TRUNCATED_HEADER,
    };
}

pub use views::{
    Frame, FrameCounts, TrafficEntry, WebSocketClosed, WebSocketConnection, WebSocketMessage,
    WebSocketOpened, connection_json, frame_json, message_json, traffic_json,
};

/// The REST API: every `/api` route behind the token check, JSON 404 for unknown paths
/// and JSON 405 for unsupported methods.
pub fn router(state: AppState) -> Router {
    let (routes, _) = openapi::routes().split_for_parts();
    routes
        // Before the auth layer, so that wrong methods also need the token.
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_token,
        ))
        // The UI's files hold no data: served without the token, which the page sends.
        .merge(ui::routes())
        .fallback(error::no_such_endpoint)
        .with_state(state)
}

#[cfg(test)]
mod tests;
