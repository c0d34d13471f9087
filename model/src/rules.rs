//! Message rules as users write them (config file and API), the direction a rule
//! or an injected message names, and why the agent refuses a request. Shared by the
//! agent (which compiles and applies rules), the control socket and the API.

use serde::{Deserialize, Serialize};

/// Which peer receives a message: the direction a rule matches, or where an injected
/// message goes. Written `to-client` / `to-server`; the frames' names for the same
/// directions, `server-to-client` / `client-to-server`, are accepted as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InjectDirection {
    /// Towards the client (sent by the server).
    #[serde(alias = "server-to-client")]
    ToClient,
    /// Towards the server (sent by the client).
    #[serde(alias = "client-to-server")]
    ToServer,
}

impl InjectDirection {
    /// Every spelling accepted on input: the canonical one first, then the frames'.
    pub const SPELLINGS: [&'static str; 4] = [
        "to-client",
        "to-server",
        "server-to-client",
        "client-to-server",
    ];

    /// The peer that receives the message.
    pub fn receiver(self) -> frametap_proto::Peer {
        match self {
            InjectDirection::ToClient => frametap_proto::Peer::Client,
            InjectDirection::ToServer => frametap_proto::Peer::Server,
        }
    }

    /// The canonical name, as rules and `/send` answers write it.
    pub fn as_str(self) -> &'static str {
        match self {
            InjectDirection::ToClient => "to-client",
            InjectDirection::ToServer => "to-server",
        }
    }
}

/// The schema lists both vocabularies: serde aliases are invisible to the derive.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for InjectDirection {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(InjectDirection::SPELLINGS))
            .description(Some(
                "Which peer receives the message: `to-client` (sent by the server) or \
                 `to-server` (sent by the client). The frames' names `server-to-client` and \
                 `client-to-server` are accepted too; answers always use `to-client` / \
                 `to-server`.",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for InjectDirection {}

/// A message rule, as written in the agent's config file and over the API.
/// Every condition given must hold; absent conditions match anything. Rules are
/// tried in order; the first that matches a message decides.
///
/// Its OpenAPI schema ([`rule_schema`]) says exactly what [`Rule::check`] and serde
/// accept; only a regex the agent cannot compile is refused beyond it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Assigned by the agent when absent. When given: 1 to 64 of
    /// `A-Z a-z 0-9 . _ ~ -` (it goes into `DELETE /api/rules/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Host of the connection (the Host header, else SNI): `chat.example.com`, or
    /// `*.example.com` for any subdomain (`*` or empty: any host). Case-insensitive;
    /// ASCII whitespace around it is ignored; no other `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Prefix of the upgrade request's path (query included), e.g. `/chat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which way the message travels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<InjectDirection>,
    /// `text` or `binary`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub message_type: Option<MessageType>,
    /// The content contains this text (bytes of its UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// The content matches this regex (Rust `regex` syntax; binary messages are
    /// matched as bytes). The agent compiles it and refuses the rule if it can't.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// What happens to a matching message.
    pub action: RuleAction,
}

/// `text` or `binary`: the kind of a message (and of the messages a rule matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Opcode 1: UTF-8 text (as the sender claimed).
    Text,
    /// Opcode 2: bytes.
    Binary,
}

/// What a matching rule does to the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum RuleAction {
    /// Not forwarded; recorded with `dropped`. (A struct variant, written
    /// `{"kind": "drop"}`: serde ignores unknown fields of a unit variant in an
    /// internally tagged enum, and the API refuses them, as its document says.)
    Drop {},
    /// Text messages only: every match of `pattern` (a regex) is replaced by
    /// `replacement` (`$1`, `${name}` refer to groups). Matches only messages the
    /// pattern occurs in. The original is recorded with `dropped`, what is forwarded
    /// with `modified`.
    Replace {
        /// The regex to replace.
        pattern: String,
        /// Its replacement.
        replacement: String,
    },
    /// Close the connection: both peers get a close frame with this code and reason.
    Close {
        /// A close code an endpoint may send: 1000 to 1003, 1007 to 1014, 3000 to 4999.
        #[serde(deserialize_with = "whole_u16")]
        code: u16,
        /// At most [`MAX_CLOSE_REASON`] characters; a close frame carries 123 bytes
        /// of it (longer UTF-8 is cut there, at a character boundary).
        #[serde(default)]
        reason: String,
    },
}

/// A number that is a whole `u16`, however JSON writes it: `1000`, `1000.0` and `1e3`
/// are one number to JSON (and to JSON Schema's `integer`), so all are taken.
fn whole_u16<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    use serde::de::{Error, Unexpected};
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => u16::try_from(n).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&f) => {
            Some(f as u16)
        }
        _ => None,
    };
    whole.ok_or_else(|| {
        D::Error::invalid_value(
            Unexpected::Other(&format!("the number {number}")),
            &"a whole number from 0 to 65535",
        )
    })
}

/// Most characters of a close rule's reason: a close frame has room for 123 bytes,
/// which is 123 characters of ASCII (others take more bytes and are cut to fit).
pub const MAX_CLOSE_REASON: usize = 123;

/// Most characters of a rule id.
pub const MAX_RULE_ID: usize = 64;

/// A rule id: what [`Rule::check`] accepts (and what fits in a URL path unescaped).
pub const RULE_ID_PATTERN: &str = "^[A-Za-z0-9._~-]{1,64}$";

/// A rule's `host`, as [`Rule::check`] takes it: no `*` at all, `*` alone, or `*.`
/// and a domain, with ASCII whitespace around it ignored ([`rule_host`]). Spelled
/// out rather than with `\s`, which regex engines (and `str::trim`) read differently.
pub const HOST_PATTERN: &str =
    r"^(?:[^*]*|[\t\n\f\r ]*\*[\t\n\f\r ]*|[\t\n\f\r ]*\*\.[\s\S]*[^\t\n\f\r ][\s\S]*)$";

/// A rule's `host` as it is matched: without the ASCII whitespace around it.
pub fn rule_host(host: &str) -> &str {
    host.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Whether `host` is a rule host [`HOST_PATTERN`] describes.
fn host_ok(host: &str) -> bool {
    let host = rule_host(host);
    match host.strip_prefix("*.") {
        Some(domain) => !domain.is_empty(),
        None => host == "*" || !host.contains('*'),
    }
}

#[cfg(feature = "openapi")]
mod rule_schema {
    use serde_json::{Value, json};
    use utoipa::openapi::RefOr;
    use utoipa::openapi::extensions::Extensions;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType};

    use super::{HOST_PATTERN, MAX_CLOSE_REASON, RULE_ID_PATTERN};

    /// A schema written as JSON: every keyword of JSON Schema 2020-12 (`not`,
    /// `const`, `anyOf` of ranges), which utoipa's builders do not all have.
    pub fn raw(value: Value) -> RefOr<Schema> {
        let Value::Object(keywords) = value else {
            panic!("a schema is a JSON object");
        };
        // No `type` of the builder's own: every keyword comes from `value`.
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .extensions(Some(Extensions::from_iter(keywords)))
            .into()
    }

    pub fn rule() -> Value {
        let nullable = |schema: Value| json!({"oneOf": [schema, {"type": "null"}]});
        json!({
            "type": "object",
            "description": "A message rule, as written in the agent's config file and over \
                the API. Every condition given must hold; absent (or null) conditions match \
                anything. Rules are tried in order; the first that matches a message decides. \
                Unknown fields are refused. A `replace` action does not go with \
                `\"type\": \"binary\"` (it changes text only).",
            "required": ["action"],
            "additionalProperties": false,
            "properties": {
                "id": {
                    "type": ["string", "null"],
                    "description": "Assigned by the agent when absent. When given: 1 to 64 of \
                        `A-Z a-z 0-9 . _ ~ -` (it goes into `DELETE /api/rules/{id}`); an id \
                        in use is refused with 409.",
                    "pattern": RULE_ID_PATTERN,
                    "example": "redact-secrets",
                },
                "host": {
                    "type": ["string", "null"],
                    "description": "Host of the connection (the Host header, else SNI): \
                        `chat.example.com`, or `*.example.com` for any subdomain (`*` or \
                        empty: any host). Case-insensitive; ASCII whitespace around it \
                        is ignored; `*` only as that wildcard.",
                    "pattern": HOST_PATTERN,
                    "example": "*.example.com",
                },
                "path": {
                    "type": ["string", "null"],
                    "description": "Prefix of the upgrade request's path (query included), \
                        e.g. `/chat`.",
                },
                "direction": nullable(json!({
                    "$ref": "#/components/schemas/InjectDirection",
                    "description": "Which way the message travels.",
                })),
                "type": nullable(json!({
                    "$ref": "#/components/schemas/MessageType",
                    "description": "`text` or `binary`.",
                })),
                "contains": {
                    "type": ["string", "null"],
                    "description": "The content contains this text (bytes of its UTF-8).",
                },
                "regex": {
                    "type": ["string", "null"],
                    "format": "regex",
                    "description": "The content matches this regex (Rust `regex` syntax, \
                        which is close to ECMA 262's without look-around and backreferences; \
                        binary messages are matched as bytes). The agent compiles it (up to \
                        1 MiB of compiled program) and refuses the rule with 400 if it can't.",
                },
                "action": {
                    "$ref": "#/components/schemas/RuleAction",
                    "description": "What happens to a matching message.",
                },
            },
            "not": {
                "required": ["type", "action"],
                "properties": {
                    "type": {"const": "binary"},
                    "action": {"required": ["kind"], "properties": {"kind": {"const": "replace"}}},
                },
            },
        })
    }

    pub fn action() -> Value {
        json!({
            "description": "What a matching rule does to the message, by `kind`. Unknown \
                fields are refused.",
            "oneOf": [
                {
                    "type": "object",
                    "title": "drop",
                    "description": "Not forwarded; recorded with `dropped`.",
                    "required": ["kind"],
                    "additionalProperties": false,
                    "properties": {"kind": {"type": "string", "enum": ["drop"]}},
                },
                {
                    "type": "object",
                    "title": "replace",
                    "description": "Text messages only: every match of `pattern` (a regex) \
                        is replaced by `replacement` (`$1`, `${name}` refer to groups). \
                        Matches only messages the pattern occurs in. The original is recorded \
                        with `dropped`, what is forwarded with `modified`.",
                    "required": ["kind", "pattern", "replacement"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": {"type": "string", "enum": ["replace"]},
                        "pattern": {
                            "type": "string",
                            "format": "regex",
                            "description": "The regex to replace (Rust `regex` syntax; one \
                                the agent cannot compile is refused with 400).",
                        },
                        "replacement": {"type": "string", "description": "Its replacement."},
                    },
                },
                {
                    "type": "object",
                    "title": "close",
                    "description": "Close the connection: both peers get a close frame \
                        with this code and reason.",
                    "required": ["kind", "code"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": {"type": "string", "enum": ["close"]},
                        "code": {
                            "type": "integer",
                            "description": "A close code an endpoint may send: 1000 to \
                                1003, 1007 to 1014, 3000 to 4999.",
                            "anyOf": [
                                {"minimum": 1000, "maximum": 1003},
                                {"minimum": 1007, "maximum": 1014},
                                {"minimum": 3000, "maximum": 4999},
                            ],
                        },
                        "reason": {
                            "type": "string",
                            "maxLength": MAX_CLOSE_REASON,
                            "description": "Default empty. The close frame carries its first \
                                123 bytes of UTF-8 (cut at a character boundary).",
                        },
                    },
                },
            ],
        })
    }
}

#[cfg(feature = "openapi")]
pub use rule_schema::raw as raw_schema;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Rule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        rule_schema::raw(rule_schema::rule())
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Rule {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push(("RuleAction".into(), rule_schema::raw(rule_schema::action())));
        schemas.push((
            "InjectDirection".into(),
            <InjectDirection as utoipa::PartialSchema>::schema(),
        ));
        schemas.push((
            "MessageType".into(),
            <MessageType as utoipa::PartialSchema>::schema(),
        ));
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RuleAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        rule_schema::raw(rule_schema::action())
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RuleAction {}

impl Rule {
    /// Everything about the rule that can be checked without compiling its regexes:
    /// the id's form, `replace` on binary messages, the close code and reason. The
    /// API checks this before it calls the agent; the agent checks it again with the
    /// regexes before a rule takes effect.
    pub fn check(&self) -> Result<(), String> {
        if let Some(id) = &self.id
            && (id.is_empty()
                || id.len() > MAX_RULE_ID
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)))
        {
            return Err(format!(
                "rule `id` must be 1 to 64 of A-Z a-z 0-9 . _ ~ -, got {:?}",
                id.chars().take(80).collect::<String>()
            ));
        }
        if let Some(host) = &self.host
            && !host_ok(host)
        {
            return Err(format!(
                "rule `host` {:?}: expected a host name, or `*.` and a domain for its \
                 subdomains (`*` alone, or nothing: any host); no other `*`",
                host.chars().take(80).collect::<String>()
            ));
        }
        match &self.action {
            RuleAction::Replace { .. } if self.message_type == Some(MessageType::Binary) => Err(
                "a `replace` action applies to text messages only: drop `\"type\": \"binary\"` \
                 or choose another action"
                    .into(),
            ),
            RuleAction::Close { code, reason } => {
                if !frametap_proto::ws::is_valid_close_code(*code) {
                    return Err(format!(
                        "close code {code} can't be sent: use 1000 to 1003, 1007 to 1014 or \
                         3000 to 4999"
                    ));
                }
                let chars = reason.chars().count();
                if chars > MAX_CLOSE_REASON {
                    return Err(format!(
                        "close reason is {chars} characters: at most {MAX_CLOSE_REASON} \
                         (a close frame holds 123 bytes of it)"
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Why a request was refused (the API maps these to 400, 404, 409 and 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// Invalid input: a rule that does not compile, bad base64, a bad close code.
    BadRequest,
    /// No such connection or rule.
    NotFound,
    /// The connection exists but is no longer open (or a replay has ended, or too
    /// many are running).
    Conflict,
    /// A server the agent connected to for the request (a replay's target) refused
    /// or could not be reached.
    Upstream,
}
