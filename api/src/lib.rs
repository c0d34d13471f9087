//! frametap's API process, library part: the REST API over the capture store.
//!
//! [`router`] serves, under `/api` and behind the API token ([`auth`]):
//! the seed's WebSocket Frames API (`/api/websocket/...`), the traffic list
//! (`/api/traffic`), `/api/health` and `/api/openapi.json` (generated from the
//! handlers, see [`openapi`]). Reads go to a read-only follower of the agent's RocksDB
//! ([`StoreSource`]); writes go through the agent ([`AgentControl`]).
//!
//! Modules: [`state`] (what handlers need), [`auth`] (token), [`error`] (JSON errors),
//! [`views`] (JSON shapes, shared with the live events), `rest` (handlers), [`openapi`];
//! and for the binary: [`follower`] (the RocksDB secondary, caught up continually),
//! [`agent_link`] (the agent's control socket), [`events`] (Socket.IO), [`health`].

pub mod agent_link;
pub mod auth;
pub mod error;
pub mod events;
pub mod follower;
pub mod health;
pub mod openapi;
mod query;
mod rest;
pub mod state;
pub mod views;

use axum::Router;
use axum::middleware;

pub use auth::{AuthConfig, load_or_create_token};
pub use error::{ApiError, ErrorBody};
pub use state::{
    AgentControl, AgentHealth, AppState, ControlError, DeleteFramesFuture, EventsHealth, Health,
    HealthSource, HealthStatus, StoreHealth, StoreSource,
};
pub use views::{
    Frame, TrafficEntry, WebSocketConnection, connection_json, frame_json, traffic_json,
};

/// The REST API: every `/api` route behind the token check, JSON 404 for unknown paths
/// and JSON 405 for unsupported methods.
pub fn router(state: AppState) -> Router {
    let (routes, _) = rest::routes().split_for_parts();
    routes
        // Before the auth layer, so that wrong methods also need the token.
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_token,
        ))
        .fallback(error::no_such_endpoint)
        .with_state(state)
}

#[cfg(test)]
mod tests;
