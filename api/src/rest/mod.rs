//! The REST endpoints, each documented with `#[utoipa::path]` and registered through
//! [`OpenApiRouter`], so the served routes and the OpenAPI document come from one
//! source.
//!
//! - [`websocket`]: frames, frame count, frame deletion, connection.
//! - [`messages`]: a connection's messages, reassembled from its frames.
//! - [`compare`]: two connections' messages compared.
//! - [`replay`]: a recorded conversation played again by the agent, and its progress.
//! - [`inject`]: sending a message into a live connection.
//! - [`rules`]: the agent's message rules.
//! - [`export`]: HAR and NDJSON exports.
//! - [`traffic`]: the traffic list and single entries, and their deletion.
//! - [`bodies`]: the recorded request and response bodies.
//! - [`meta`]: the health of the API process.
//! - [`common`]: what every handler uses: JSON body and path extractors, agent
//!   errors, the store.
//!
//! The OpenAPI document and its route (`/api/openapi.json`) are built on top of these,
//! in `crate::openapi`: nothing here depends on it.

pub(crate) mod bodies;
pub(crate) mod common;
pub(crate) mod compare;
pub(crate) mod export;
pub(crate) mod inject;
pub(crate) mod messages;
pub(crate) mod meta;
pub(crate) mod replay;
pub(crate) mod rules;
pub(crate) mod traffic;
pub(crate) mod websocket;

use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Every REST route, with its OpenAPI description added to `doc` (the document's base:
/// title, security, shared schemas). `crate::openapi` adds the document's own route.
pub(crate) fn routes(doc: OpenApi) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(doc)
        .routes(routes!(websocket::list_frames, websocket::delete_frames))
        .routes(routes!(websocket::get_frame))
        .routes(routes!(websocket::frame_count))
        .routes(routes!(websocket::get_connection))
        .routes(routes!(messages::list_messages))
        .routes(routes!(compare::compare_connections))
        .routes(routes!(replay::replay_connection))
        .routes(routes!(replay::list_replays))
        .routes(routes!(replay::get_replay, replay::cancel_replay))
        .routes(routes!(inject::send_message))
        .routes(routes!(export::export_frames_ndjson))
        .routes(routes!(export::export_har))
        .routes(routes!(rules::list_rules, rules::add_rule))
        .routes(routes!(rules::delete_rule))
        .routes(routes!(traffic::list_traffic, traffic::delete_traffic))
        .routes(routes!(traffic::get_traffic, traffic::delete_traffic_entry))
        .routes(routes!(bodies::request_body))
        .routes(routes!(bodies::response_body))
        .routes(routes!(meta::health))
}
