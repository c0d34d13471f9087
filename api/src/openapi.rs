//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and
//! the views' `ToSchema` derives, plus the API's title, its two ways of sending the
//! token and the links between operations; and its route, `/api/openapi.json`.
//!
//! This module is on top of the handlers (`rest`): it builds every route (`routes`)
//! and the document from them, and they never refer to it. The query parameters'
//! schemas live next to their parsers, in the handlers' modules (re-exported here).
//!
//! The document is a contract the handlers keep exactly: every request it allows is
//! accepted (unless what it names does not exist: 404, 409), every request it forbids
//! is refused with 400, and every answer is one it describes. Schemathesis checks
//! that end to end (tests/tests/api.rs, `cargo xtask contract`), so each query
//! parameter's schema is what its parser takes, down to patterns.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr, SecurityRequirement};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ErrorBody;
use crate::state::AppState;
use crate::views::{
    DirectionParam, Frame, TrafficEntry, TunnelEnded, WebSocketClosed, WebSocketMessage,
    WebSocketOpened,
};

// The query parameters' schemas live next to their parsers, in the handlers' modules.
pub use crate::rest::compare::{IgnoreParam, IgnorePathParam};
pub use crate::rest::messages::RegexParam;
pub use crate::rest::traffic::{PidsParam, ProtocolsParam, StatusesParam, TrafficSelection};
pub use crate::rest::websocket::{
    FRAME_ID_PATTERN, FrameIdParam, OpcodeParam, TRAFFIC_ID_PATTERN, TrafficIdParam,
};

/// Name of the `Authorization: Bearer` security scheme in the document.
pub const BEARER_SCHEME: &str = "bearerToken";
/// Name of the `?token=` security scheme in the document.
pub const QUERY_TOKEN_SCHEME: &str = "queryToken";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "frametap API",
        description = "Captured HTTP traffic and WebSocket frames recorded by frametap-agent. \
                       Every route needs the API token (in <data-dir>/api-token, printed by \
                       frametap-api at start) unless authentication is disabled. Every error \
                       is JSON {\"error\": \"...\"}, also those any route can get from the \
                       HTTP layer: 400 (malformed request), 408 (head or body too slow), 413 \
                       (body over 2 MiB), 414 (target over 16 KiB), 431 (head over 64 KiB).\n\n\
                       Live events: Socket.IO on the same port (`auth: {token}`), in capture \
                       order per connection: `traffic:batch` (array of TrafficEntry; a \
                       connection's entry comes before its `websocket:open`), \
                       `websocket:open` (WebSocketOpened), `websocket:frame` (Frame, by \
                       `seq`), `websocket:message` (WebSocketMessage, as the messages \
                       endpoint returns it, right after the frame that completes it), \
                       `websocket:close` (WebSocketClosed, last; its counts are the \
                       connection's then), `traffic:end` (TunnelEnded: a connection relayed \
                       untouched ended). A client that cannot keep up loses events \
                       (counted in /api/health).",
    ),
    modifiers(&Security),
    components(schemas(
        ErrorBody,
        // Only used by query parameters, whose schemas are not collected by themselves.
        DirectionParam,
        FrameIdParam,
        TrafficIdParam,
        OpcodeParam,
        RegexParam,
        IgnoreParam,
        IgnorePathParam,
        ProtocolsParam,
        PidsParam,
        StatusesParam,
        TrafficSelection,
        TrafficEntry,
        WebSocketOpened,
        Frame,
        WebSocketMessage,
        WebSocketClosed,
        TunnelEnded
    )),
    tags(
        (name = "websocket", description = "WebSocket connections and their frames"),
        (name = "traffic", description = "Captured HTTP exchanges"),
        (name = "rules", description = "The agent's message rules: drop, replace or close on matching messages"),
        (name = "export", description = "HAR and NDJSON exports"),
        (name = "meta", description = "Health and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// Adds the security schemes and requires one of them on every operation.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <token>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            QUERY_TOKEN_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "`?token=<token>`, for clients that cannot set headers",
            ))),
        );
        openapi.security = Some(vec![
            SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
            SecurityRequirement::new(QUERY_TOKEN_SCHEME, Vec::<String>::new()),
        ]);
    }
}

/// Every `/api` route with its OpenAPI description: the handlers of `rest` and this
/// document's own, on the document's base ([`ApiDoc`]).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    crate::rest::routes(ApiDoc::openapi()).routes(routes!(openapi_json))
}

/// The OpenAPI document of every route [`crate::router`] serves.
pub fn openapi() -> OpenApi {
    let mut doc = routes().split_for_parts().1;
    // The routes' operations exist only now: what refers to them comes last.
    links(&mut doc);
    raw_bodies(&mut doc);
    long_targets(&mut doc);
    doc
}

/// Every operation may be refused before it is routed when its request target
/// (path and query) is over the server's limit: `414`, with the usual error body.
fn long_targets(doc: &mut OpenApi) {
    let refused = ResponseBuilder::new()
        .description("The request target (path and query) is over 16 KiB")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
            operation
                .responses
                .responses
                .entry("414".to_string())
                .or_insert_with(|| RefOr::T(refused.clone()));
        }
    }
}

/// The operation `method path` of `doc`.
fn operation<'a>(doc: &'a mut OpenApi, method: &str, path: &str) -> &'a mut Operation {
    let item = doc
        .paths
        .paths
        .get_mut(path)
        .unwrap_or_else(|| panic!("no path {path} in the document"));
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("no operation {method} {path} in the document"))
}

/// The links from each answer to the operations its ids feed (OpenAPI runtime
/// expressions): a client, or Schemathesis's stateful tests, can walk from the
/// traffic list to an entry, its bodies, its connection and frames, from frames to
/// one frame and to sending, and from a rule to its deletion.
fn links(doc: &mut OpenApi) {
    // (from method, path, status) -> [(name, to operation id, parameter, expression)]
    type Link = (&'static str, &'static str, &'static str, &'static str);
    let first_entry = "$response.body#/entries/0/id";
    let first_frame = "$response.body#/0/id";
    let this_connection = "$request.path.trafficId";
    let table: [(&str, &str, &str, Vec<Link>); 7] = [
        (
            "get",
            "/api/traffic",
            "200",
            vec![
                ("entry", "getTraffic", "id", first_entry),
                ("requestBody", "getRequestBody", "id", first_entry),
                ("responseBody", "getResponseBody", "id", first_entry),
                ("deleteEntry", "deleteTrafficEntry", "id", first_entry),
                ("connection", "getConnection", "trafficId", first_entry),
                ("frames", "listFrames", "trafficId", first_entry),
                ("frameCount", "countFrames", "trafficId", first_entry),
                ("messages", "listMessages", "trafficId", first_entry),
                (
                    "framesNdjson",
                    "exportFramesNdjson",
                    "trafficId",
                    first_entry,
                ),
                ("har", "exportHar", "trafficId", first_entry),
                ("send", "sendMessage", "trafficId", first_entry),
                ("deleteFrames", "deleteFrames", "trafficId", first_entry),
            ],
        ),
        (
            "get",
            "/api/websocket/{trafficId}/frames",
            "200",
            vec![
                ("frame", "getFrame", "id", first_frame),
                ("send", "sendMessage", "trafficId", this_connection),
                ("connection", "getConnection", "trafficId", this_connection),
                ("deleteFrames", "deleteFrames", "trafficId", this_connection),
            ],
        ),
        (
            // Answered only for WebSocket connections: their operations, sending
            // included (into an open one, or 409).
            "get",
            "/api/websocket/{trafficId}",
            "200",
            vec![
                (
                    "send",
                    "sendMessage",
                    "trafficId",
                    "$response.body#/trafficId",
                ),
                (
                    "frames",
                    "listFrames",
                    "trafficId",
                    "$response.body#/trafficId",
                ),
                (
                    "messages",
                    "listMessages",
                    "trafficId",
                    "$response.body#/trafficId",
                ),
                (
                    "frameCount",
                    "countFrames",
                    "trafficId",
                    "$response.body#/trafficId",
                ),
                (
                    "framesNdjson",
                    "exportFramesNdjson",
                    "trafficId",
                    "$response.body#/trafficId",
                ),
                (
                    "deleteFrames",
                    "deleteFrames",
                    "trafficId",
                    "$response.body#/trafficId",
                ),
                ("entry", "getTraffic", "id", "$response.body#/trafficId"),
            ],
        ),
        (
            "get",
            "/api/websocket/{trafficId}/messages",
            "200",
            vec![("frame", "getFrame", "id", first_frame)],
        ),
        (
            "post",
            "/api/websocket/{trafficId}/send",
            "201",
            vec![
                ("frame", "getFrame", "id", "$response.body#/frameId"),
                ("frames", "listFrames", "trafficId", this_connection),
            ],
        ),
        (
            "post",
            "/api/rules",
            "201",
            vec![("delete", "deleteRule", "id", "$response.body#/id")],
        ),
        (
            "get",
            "/api/rules",
            "200",
            vec![("delete", "deleteRule", "id", "$response.body#/rules/0/id")],
        ),
    ];
    for (method, path, status, links) in table {
        let responses = &mut operation(doc, method, path).responses.responses;
        let Some(RefOr::T(response)) = responses.get_mut(status) else {
            panic!("{method} {path} documents no {status} response");
        };
        for (name, operation_id, parameter, expression) in links {
            response.links.insert(
                name.into(),
                LinkBuilder::new()
                    .operation_id(operation_id)
                    .parameter(parameter, expression)
                    .build()
                    .into(),
            );
        }
    }
}

/// Bodies served as the bytes they are (`*/*`) have no schema: OpenAPI 3.1 says so by
/// leaving it out, and a validator then takes any bytes, whatever `Content-Type`
/// they were recorded with (gzip'd JSON with `raw=true`, a truncated document).
fn raw_bodies(doc: &mut OpenApi) {
    for path in [
        "/api/traffic/{id}/request/body",
        "/api/traffic/{id}/response/body",
    ] {
        let responses = &mut operation(doc, "get", path).responses.responses;
        let Some(RefOr::T(ok)) = responses.get_mut("200") else {
            panic!("get {path} documents no 200 response");
        };
        for content in ok.content.values_mut() {
            if let RefOr::T(content) = content {
                content.schema = None;
            }
        }
    }
}

/// [`openapi`] as JSON, built once.
fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .expect("an OpenAPI document always serialises")
    })
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
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}
