//! JSON shapes of what the agent does on the API's behalf: message rules and injected
//! messages. Rules themselves are `frametap_control`'s types (with their OpenAPI
//! schemas), so a rule reads the same in the agent's config file, on the control
//! socket and over the API.

use frametap_control::{InjectDirection, Rule};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleList {
    /// The rules in force, in the order they are tried.
    pub rules: Vec<Rule>,
    /// `true`: the running agent's rules. `false`: the agent is not running; these
    /// are the rules it had when it last recorded them (at its start or its last
    /// rule change), which it starts with again unless its config file changed.
    pub live: bool,
    /// When the agent recorded these rules, Unix milliseconds; `null` when `live`.
    #[schema(required = true)]
    pub recorded_at: Option<u64>,
}

/// `DELETE /api/rules/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleDeleted {
    /// Always `true` (failures are error responses).
    pub success: bool,
    /// The id of the rule removed.
    pub id: String,
}

/// `POST /api/websocket/{trafficId}/send`: a message to inject. Its OpenAPI schema
/// is written out ([`PartialSchema`](utoipa::PartialSchema) below): the text and the
/// binary form are two shapes, and the binary one's `data` is canonical base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessage {
    /// Which peer receives it.
    pub direction: InjectDirection,
    /// The content: the text itself when `isBinary` is false (sent as a text
    /// message), standard base64 of the bytes when it is true (a binary message).
    pub data: String,
    /// Send a binary message (`data` is base64). Default `false`.
    #[serde(default)]
    pub is_binary: bool,
}

/// Standard base64 with padding, as the `base64` crate's `STANDARD` engine decodes
/// it: whole quanta, then a padded last one whose unused bits are zero.
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*\
     (?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

impl utoipa::PartialSchema for SendMessage {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        frametap_control::raw_schema(serde_json::json!({
            "type": "object",
            "description": "A message to inject: text (`isBinary` false or absent, `data` \
                the text itself) or binary (`isBinary` true, `data` standard base64 with \
                padding). Unknown fields are refused.",
            "required": ["direction", "data"],
            "additionalProperties": false,
            "properties": {
                "direction": {
                    "$ref": "#/components/schemas/InjectDirection",
                    "description": "Which peer receives it.",
                },
                "data": {
                    "type": "string",
                    "description": "The content: the text itself when `isBinary` is false \
                        (sent as a text message), standard base64 of the bytes when it is \
                        true (a binary message).",
                    "example": "{\"action\":\"ping\"}",
                },
                "isBinary": {
                    "type": "boolean",
                    "default": false,
                    "description": "Send a binary message (`data` is base64). Default `false`.",
                },
            },
            "oneOf": [
                {"title": "text", "properties": {"isBinary": {"const": false}}},
                {
                    "title": "binary",
                    "required": ["isBinary"],
                    "properties": {
                        "isBinary": {"const": true},
                        "data": {"pattern": BASE64_PATTERN},
                    },
                },
            ],
        }))
    }
}

impl ToSchema for SendMessage {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "InjectDirection".into(),
            <InjectDirection as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// The answer to a [`SendMessage`]: the frame the agent recorded for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// Id of the injected frame (its `injected` flag is set).
    #[schema(
        example = "0191a2b3c4d50001-000000fb",
        pattern = "^[0-9a-f]{16}-[0-9a-f]{8,16}$"
    )]
    pub frame_id: String,
    /// The connection.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// Which peer received it, as requested.
    pub direction: InjectDirection,
}
