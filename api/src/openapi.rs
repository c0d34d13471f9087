//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` attributes and
//! the views' `ToSchema` derives, plus the API's title and its two ways of sending the
//! token.

use std::sync::OnceLock;

use utoipa::Modify;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, SecurityRequirement};

use crate::error::ErrorBody;
use crate::views::{
    DirectionParam, Frame, TrafficEntry, TunnelEnded, WebSocketClosed, WebSocketMessage,
    WebSocketOpened,
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
    crate::rest::routes().split_for_parts().1
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
