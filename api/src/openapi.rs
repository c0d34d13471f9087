//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and
//! the views' `ToSchema` derives, plus the API's title, its two ways of sending the
//! token, the links between operations and the query parameters' schemas.
//!
//! The document is a contract the handlers keep exactly: every request it allows is
//! accepted (unless what it names does not exist: 404, 409), every request it forbids
//! is refused with 400, and every answer is one it describes. Schemathesis checks
//! that end to end (tests/tests/api.rs, `cargo xtask contract`), so each query
//! parameter's schema here is what its parser takes, down to patterns.

use std::sync::OnceLock;

use serde_json::{Value, json};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, SecurityRequirement};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::error::ErrorBody;
use crate::rest::traffic::{FILTER_PARAMS, PID_ITEM, PROTOCOL_ITEM, STATUS_ITEM, list_pattern};
use crate::rest::websocket::OPCODES;
use crate::views::{
    DirectionParam, Frame, TrafficEntry, TunnelEnded, WebSocketClosed, WebSocketMessage,
    WebSocketOpened,
};

/// A traffic id as `TrafficId` parses it: 16 lowercase hex digits.
pub const TRAFFIC_ID_PATTERN: &str = "^[0-9a-f]{16}$";
/// A frame id as `FrameId` parses it: the traffic id, `-`, and the seq in lowercase
/// hex, 8 digits zero-padded or up to 16 without a leading zero.
pub const FRAME_ID_PATTERN: &str = "^[0-9a-f]{16}-(?:[0-9a-f]{8}|[1-9a-f][0-9a-f]{8,15})$";

/// A string schema with a pattern.
fn pattern_schema(pattern: &str, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// `after`: a frame id (a message's id is its first frame's).
pub struct FrameIdParam;

impl PartialSchema for FrameIdParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            FRAME_ID_PATTERN,
            "A frame id, e.g. `0191a2b3c4d50001-00000001`: the connection's traffic id, `-`, \
             and the frame's seq in lowercase hex (8 digits, zero-padded, or more without a \
             leading zero).",
        )
    }
}

impl ToSchema for FrameIdParam {}

/// `trafficId` of a HAR export.
pub struct TrafficIdParam;

impl PartialSchema for TrafficIdParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            TRAFFIC_ID_PATTERN,
            "A traffic entry id: 16 lowercase hex digits, e.g. `0191a2b3c4d50001`.",
        )
    }
}

impl ToSchema for TrafficIdParam {}

/// `opcode`: the opcodes a frame can have.
pub struct OpcodeParam;

impl PartialSchema for OpcodeParam {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some(OPCODES))
            .description(Some(
                "A WebSocket opcode (RFC 6455): 0 continuation, 1 text, 2 binary, 8 close, \
                 9 ping, 10 pong; in decimal, without sign or leading zeros.",
            ))
            .into()
    }
}

impl ToSchema for OpcodeParam {}

/// `protocol` of the traffic filters.
pub struct ProtocolsParam;

impl PartialSchema for ProtocolsParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            &list_pattern(PROTOCOL_ITEM),
            "A comma-separated list of http, https, ws, wss, tls, tcp (any case); ASCII \
             whitespace around items and empty items are ignored.",
        )
    }
}

impl ToSchema for ProtocolsParam {}

/// `pid` of the traffic filters.
pub struct PidsParam;

impl PartialSchema for PidsParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            &list_pattern(PID_ITEM),
            "A comma-separated list of process ids: positive decimal integers below 10^9 \
             (leading zeros allowed); ASCII whitespace around items and empty items are \
             ignored.",
        )
    }
}

impl ToSchema for PidsParam {}

/// `status` of the traffic filters.
pub struct StatusesParam;

impl PartialSchema for StatusesParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            &list_pattern(STATUS_ITEM),
            "A comma-separated list of status codes (100 to 599) or classes (1xx to 5xx, \
             any case); ASCII whitespace around items and empty items are ignored.",
        )
    }
}

impl ToSchema for StatusesParam {}

/// What `DELETE /api/traffic` deletes: its query string as one exploded object, the
/// only way OpenAPI can relate parameters. Either `all=true` and no filter
/// parameter, or (without `all`, or `all=false`) at least one filter that selects:
/// what `delete_traffic` accepts.
pub struct TrafficSelection;

/// The traffic filters' schemas, by parameter name ([`FILTER_PARAMS`]).
fn filter_schemas() -> Vec<(&'static str, Value)> {
    let schema = |schema: RefOr<Schema>| serde_json::to_value(schema).expect("a schema");
    let text = |description: &str| json!({"type": "string", "description": description});
    let filters = vec![
        (
            "methods",
            text("Comma-separated HTTP methods, case-insensitive, e.g. GET,POST"),
        ),
        (
            "search",
            text("Case-insensitive substring of the URL, host or path"),
        ),
        ("protocol", schema(ProtocolsParam::schema())),
        ("pid", schema(PidsParam::schema())),
        (
            "process",
            text("Comma-separated process names of the client, case-insensitive"),
        ),
        (
            "container",
            text("Comma-separated container names or ids or id prefixes, case-insensitive"),
        ),
        ("status", schema(StatusesParam::schema())),
        (
            "error",
            json!({"type": "boolean", "description": "`true`: entries that failed; `false`: those that did not"}),
        ),
        (
            "errorContains",
            text("Case-insensitive substring of the entry's `error`"),
        ),
    ];
    debug_assert!(
        filters
            .iter()
            .map(|(name, _)| *name)
            .eq(FILTER_PARAMS.iter().copied())
    );
    filters
}

/// The [`TrafficSelection`] schema.
fn traffic_selection() -> Value {
    let mut properties = serde_json::Map::new();
    for (name, schema) in filter_schemas() {
        properties.insert(name.into(), schema);
    }
    properties.insert(
        "all".into(),
        json!({"type": "boolean", "description": "`true`: delete every entry (and give no filter)"}),
    );
    // Named, so that a value given for them is one that reaches the server as
    // `limit=...` (a deletion refuses paging).
    for paging in ["limit", "offset"] {
        properties.insert(
            paging.into(),
            json!({"type": "string", "description": "Refused: a deletion deletes every entry it selects"}),
        );
    }
    let present = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|name| json!({"required": [name]}))
            .collect()
    };
    // A filter that selects: a list naming an item, a non-empty text, or `error`.
    let selects = |name: &str| match name {
        "search" | "errorContains" => {
            json!({"required": [name], "properties": {name: {"minLength": 1}}})
        }
        "error" => json!({"required": [name]}),
        _ => json!({"required": [name], "properties": {name: {"pattern": "[^\\t\\n\\f\\r ,]"}}}),
    };
    json!({
        "type": "object",
        "description": "What to delete, as separate query parameters: `all=true` alone, or \
            filters of which one at least selects something.",
        "properties": properties,
        "not": {"anyOf": present(&["limit", "offset"])},
        "oneOf": [
            {
                "title": "everything",
                "required": ["all"],
                "properties": {"all": {"const": true}},
                "not": {"anyOf": present(&FILTER_PARAMS)},
            },
            {
                "title": "filtered",
                "properties": {"all": {"const": false}},
                "anyOf": FILTER_PARAMS.iter().map(|name| selects(name)).collect::<Vec<_>>(),
            },
        ],
    })
}

impl PartialSchema for TrafficSelection {
    fn schema() -> RefOr<Schema> {
        frametap_control::raw_schema(traffic_selection())
    }
}

impl ToSchema for TrafficSelection {}

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

/// The OpenAPI document of every route [`crate::router`] serves.
pub fn openapi() -> OpenApi {
    let mut doc = crate::rest::routes().split_for_parts().1;
    // The routes' operations exist only now: what refers to them comes last.
    links(&mut doc);
    raw_bodies(&mut doc);
    doc
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
pub(crate) fn openapi_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .expect("an OpenAPI document always serialises")
    })
}
