//! The agent's control socket: how the API process asks the agent to change things
//! (the API only ever reads the store) and receives live records.
//!
//! One Unix stream socket, `<data-dir>/control.sock`, root-owned, mode 0600. Every
//! connection carries one request: the client sends a [`Request`], the agent answers
//! with one [`Reply`]; after [`Request::Subscribe`] the agent keeps sending
//! [`Message::Records`] (and [`Message::Dropped`] and [`Message::Recording`] notices)
//! until either side closes.
//!
//! Messages are length-prefixed: `u32` big-endian body length, then the body, whose
//! first byte says what it is. [`encode`] and [`Decoder`] are sans-IO; [`read_message`]
//! and [`write_message`] are the thin async glue.

use std::path::{Path, PathBuf};

use frametap_store::codec::{self, CodecError};
use frametap_store::{
    Outage, Record, RecordingChange, RecordingState, RecordingStatus, TrafficFilter, WriterStats,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// File name of the control socket inside the agent's data dir.
pub const SOCKET_FILE: &str = "control.sock";

/// Largest message accepted (a batch of records with capped payloads fits easily).
pub const MAX_MESSAGE: usize = 256 << 20;

const KIND_REQUEST: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_RECORDS: u8 = 3;
const KIND_DROPPED: u8 = 4;
const KIND_RECORDING: u8 = 5;

/// Where the agent of `data_dir` listens.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// What the API asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Is the agent up, and how far has it written?
    Status,
    /// Delete every frame of a connection recorded so far.
    DeleteFrames { traffic: String },
    /// Delete traffic entries with everything recorded under them (frames,
    /// messages, bodies).
    DeleteTraffic { target: DeleteTarget },
    /// Stream every record the agent persists from now on.
    Subscribe,
    /// The rules in force, in the order they are tried.
    ListRules,
    /// Append a rule (its id is assigned when it has none). Refused with
    /// [`Refusal::BadRequest`] when it does not compile; nothing changes then.
    AddRule { rule: Rule },
    /// Remove a rule by id.
    DeleteRule { id: String },
    /// Send a message into a live WebSocket connection.
    Send {
        traffic: String,
        direction: InjectDirection,
        /// The message content, base64 (standard alphabet, padded).
        payload: String,
        is_binary: bool,
    },
}

/// Which traffic entries a [`Request::DeleteTraffic`] deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DeleteTarget {
    /// This one entry; refused with [`Refusal::NotFound`] when it does not exist.
    One { id: String },
    /// Every entry the filter matches. The API never sends an empty filter here:
    /// deleting everything is [`DeleteTarget::All`], asked for explicitly.
    Matching { filter: TrafficFilter },
    /// Every entry.
    All,
}

/// What the agent writes into the store whenever its rules change (and at start),
/// so that the API can show the last rules known while the agent is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSnapshot {
    /// When the agent recorded this set, Unix milliseconds.
    pub recorded_at_ms: u64,
    /// The agent that recorded it.
    pub agent_pid: u32,
    /// The rules in force, in order.
    pub rules: Vec<Rule>,
}

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

/// The agent's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reply {
    Status(AgentStatus),
    Deleted {
        frames: u64,
    },
    /// Traffic entries deleted, and the frames that went with them.
    TrafficDeleted {
        entries: u64,
        frames: u64,
    },
    Subscribed,
    /// The rules in force, in order.
    Rules(Vec<Rule>),
    /// The rule as added, with its id.
    RuleAdded(Rule),
    RuleDeleted,
    /// The injected message was recorded and written; the frame's sequence number.
    Sent {
        seq: u64,
    },
    /// The request was refused for a reason the caller can act on.
    Refused {
        reason: Refusal,
        message: String,
    },
    /// The request was understood but failed; the text says why.
    Error(String),
}

/// Why a request was refused (the API maps these to 400, 404 and 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// Invalid input: a rule that does not compile, bad base64, a bad close code.
    BadRequest,
    /// No such connection or rule.
    NotFound,
    /// The connection exists but is no longer open.
    Conflict,
}

/// [`Request::Status`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub pid: u32,
    pub version: String,
    /// RocksDB's latest sequence number on the primary: a follower that reached it has
    /// seen every write so far.
    pub sequence: u64,
    /// Records handed to the store, and those it could not write.
    pub records_submitted: u64,
    pub records_failed: u64,
    /// Records the live stream dropped for subscribers that could not keep up.
    pub events_dropped: u64,
    /// Whether records are being stored (absent from older agents).
    #[serde(default)]
    pub recording: RecordingReport,
    /// Its listeners in other network namespaces (absent from older agents).
    #[serde(default)]
    pub namespaces: NamespacesReport,
}

/// The agent's listeners in other network namespaces (containers), in
/// [`AgentStatus`]. Counts since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacesReport {
    /// Namespaces served now.
    pub served: u64,
    /// Listeners opened and closed (a namespace served, then gone).
    pub opened: u64,
    pub closed: u64,
    /// Namespaces that could not be served (no loopback, gone): their connections
    /// went direct.
    pub refused: u64,
}

/// Whether the agent's writes to its store succeed, in [`AgentStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingReport {
    /// `true` while writes fail and records are being lost.
    pub degraded: bool,
    /// Degraded: when the first write of this outage failed (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Degraded: records lost so far in this outage.
    pub records_lost: u64,
    /// Degraded: the first error of this outage.
    pub error: Option<String>,
    /// Since the agent started: records written, records whose write failed, and
    /// records dropped without a write (queue full).
    pub records_written: u64,
    pub records_failed: u64,
    pub records_dropped: u64,
    /// The most recent outage that ended.
    pub last_outage: Option<OutageReport>,
}

/// A period during which the agent's writes failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutageReport {
    pub stopped_at_ms: u64,
    pub resumed_at_ms: u64,
    pub records_lost: u64,
    pub error: String,
}

impl From<&Outage> for OutageReport {
    fn from(o: &Outage) -> Self {
        OutageReport {
            stopped_at_ms: o.stopped_at_ms,
            resumed_at_ms: o.resumed_at_ms,
            records_lost: o.records_lost,
            error: o.error.clone(),
        }
    }
}

impl RecordingReport {
    pub fn new(status: &RecordingStatus, stats: &WriterStats) -> Self {
        RecordingReport {
            degraded: status.state == RecordingState::Degraded,
            since_ms: status.since_ms,
            records_lost: status.records_lost,
            error: status.error.clone(),
            records_written: stats.records_written,
            records_failed: stats.records_failed,
            records_dropped: stats.records_dropped,
            last_outage: status.last_outage.as_ref().map(OutageReport::from),
        }
    }
}

/// A change of the agent's recording state, sent on the live record stream in order
/// with the records (no record of the outage is ever sent: it was not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "camelCase")]
pub enum RecordingEvent {
    /// Writes started failing: what follows is not recorded until `Resumed`.
    #[serde(rename_all = "camelCase")]
    Degraded { since_ms: u64, error: String },
    /// Writes succeed again.
    Resumed(OutageReport),
}

impl From<&RecordingChange> for RecordingEvent {
    fn from(change: &RecordingChange) -> Self {
        match change {
            RecordingChange::Stopped { at_ms, error } => RecordingEvent::Degraded {
                since_ms: *at_ms,
                error: error.clone(),
            },
            RecordingChange::Resumed(outage) => RecordingEvent::Resumed(outage.into()),
        }
    }
}

/// One control socket message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Reply(Reply),
    /// Records the agent persisted (in the WAL), in order.
    Records(Vec<Record>),
    /// This subscriber has missed this many records in total since it subscribed
    /// (it fell behind and its queue was full).
    Dropped(u64),
    /// The agent's recording stopped or resumed.
    Recording(RecordingEvent),
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("control message of {0} bytes is over the {MAX_MESSAGE} byte limit")]
    TooLarge(usize),
    #[error("empty control message")]
    Empty,
    #[error("unknown control message kind {0}")]
    UnknownKind(u8),
    #[error("invalid control message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid record in control message: {0}")]
    Record(#[from] CodecError),
    #[error("truncated control message")]
    Truncated,
}

/// Encodes records as one [`Message::Records`] message, ready to write (length
/// prefix included). The agent encodes once and sends the bytes to every subscriber.
pub fn encode_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<u8> {
    let mut body = vec![KIND_RECORDS];
    for record in records {
        let encoded = codec::encode_record(record);
        body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        body.extend_from_slice(&encoded);
    }
    frame(body)
}

/// Encodes `message` with its length prefix.
pub fn encode(message: &Message) -> Vec<u8> {
    let body = match message {
        Message::Records(records) => return encode_records(records),
        Message::Request(r) => json_body(KIND_REQUEST, r),
        Message::Reply(r) => json_body(KIND_REPLY, r),
        Message::Recording(e) => json_body(KIND_RECORDING, e),
        Message::Dropped(n) => {
            let mut body = vec![KIND_DROPPED];
            body.extend_from_slice(&n.to_be_bytes());
            body
        }
    };
    frame(body)
}

fn json_body(kind: u8, value: &impl Serialize) -> Vec<u8> {
    let mut body = vec![kind];
    serde_json::to_writer(&mut body, value).expect("control messages serialise to JSON");
    body
}

fn frame(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes one message body (without its length prefix).
pub fn decode_body(body: &[u8]) -> Result<Message, ProtocolError> {
    let (&kind, rest) = body.split_first().ok_or(ProtocolError::Empty)?;
    Ok(match kind {
        KIND_REQUEST => Message::Request(serde_json::from_slice(rest)?),
        KIND_REPLY => Message::Reply(serde_json::from_slice(rest)?),
        KIND_RECORDING => Message::Recording(serde_json::from_slice(rest)?),
        KIND_DROPPED => {
            let n: [u8; 8] = rest.try_into().map_err(|_| ProtocolError::Truncated)?;
            Message::Dropped(u64::from_be_bytes(n))
        }
        KIND_RECORDS => {
            let mut records = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(ProtocolError::Truncated);
                }
                let (len, tail) = rest.split_at(4);
                let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                if tail.len() < len {
                    return Err(ProtocolError::Truncated);
                }
                let (record, tail) = tail.split_at(len);
                records.push(codec::decode_record(record)?);
                rest = tail;
            }
            Message::Records(records)
        }
        other => return Err(ProtocolError::UnknownKind(other)),
    })
}

/// Sans-IO reader: push bytes as they arrive, take whole messages out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has fully arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_MESSAGE {
            return Err(ProtocolError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = decode_body(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        message.map(Some)
    }
}

/// Reads one message; `None` on a clean end of stream between messages.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Message>, ProtocolError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::Truncated
        } else {
            e.into()
        }
    })?;
    decode_body(&body).map(Some)
}

/// Writes one message.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> Result<(), ProtocolError> {
    writer.write_all(&encode(message)).await?;
    writer.flush().await?;
    Ok(())
}

/// Client side: connects to the agent of `data_dir`, sends `request` and reads the
/// reply. Errors mean the agent is not reachable (not running, or not ours).
pub async fn call(data_dir: &Path, request: &Request) -> Result<Reply, ProtocolError> {
    let mut stream = tokio::net::UnixStream::connect(socket_path(data_dir)).await?;
    write_message(&mut stream, &Message::Request(request.clone())).await?;
    match read_message(&mut stream).await? {
        Some(Message::Reply(reply)) => Ok(reply),
        Some(_) => Err(ProtocolError::UnknownKind(0)),
        None => Err(ProtocolError::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frametap_store::{FrameRecord, TrafficId, WsOpen};

    fn frame(seq: u64) -> Record {
        Record::Frame(FrameRecord {
            traffic: TrafficId(42),
            seq,
            timestamp_ms: 1_700_000_000_000 + seq,
            from_client: seq.is_multiple_of(2),
            opcode: 2,
            fin: true,
            rsv: 0,
            masked: seq.is_multiple_of(2),
            compressed: false,
            wire_len: 9,
            payload_len: 3,
            truncated: false,
            payload: vec![0, 1, 2],
            close_code: None,
            close_reason: None,
            injected: false,
            dropped: false,
            binary_message: true,
            modified: false,
        })
    }

    fn all_kinds() -> Vec<Message> {
        vec![
            Message::Request(Request::DeleteFrames {
                traffic: "00000000000000ff".into(),
            }),
            Message::Request(Request::Subscribe),
            Message::Request(Request::DeleteTraffic {
                target: DeleteTarget::One {
                    id: "00000000000000ff".into(),
                },
            }),
            Message::Request(Request::DeleteTraffic {
                target: DeleteTarget::Matching {
                    filter: TrafficFilter {
                        pids: Some(vec![42]),
                        statuses: Some(vec![frametap_store::StatusMatch::Class(5)]),
                        ..TrafficFilter::default()
                    },
                },
            }),
            Message::Request(Request::DeleteTraffic {
                target: DeleteTarget::All,
            }),
            Message::Reply(Reply::TrafficDeleted {
                entries: 3,
                frames: 40,
            }),
            Message::Reply(Reply::Status(AgentStatus {
                namespaces: NamespacesReport {
                    served: 1,
                    opened: 3,
                    closed: 2,
                    refused: 1,
                },
                pid: 7,
                version: "0.1.0".into(),
                sequence: 99,
                records_submitted: 5,
                records_failed: 1,
                events_dropped: 2,
                recording: RecordingReport {
                    degraded: true,
                    since_ms: Some(1_700_000_000_000),
                    records_lost: 3,
                    error: Some("No space left on device".into()),
                    records_written: 10,
                    records_failed: 3,
                    records_dropped: 0,
                    last_outage: Some(OutageReport {
                        stopped_at_ms: 1,
                        resumed_at_ms: 2,
                        records_lost: 4,
                        error: "full".into(),
                    }),
                },
            })),
            Message::Recording(RecordingEvent::Degraded {
                since_ms: 5,
                error: "No space left on device".into(),
            }),
            Message::Recording(RecordingEvent::Resumed(OutageReport {
                stopped_at_ms: 5,
                resumed_at_ms: 9,
                records_lost: 77,
                error: "No space left on device".into(),
            })),
            Message::Reply(Reply::Error("no".into())),
            Message::Request(Request::AddRule {
                rule: Rule {
                    id: None,
                    host: Some("*.chat.test".into()),
                    path: Some("/ws".into()),
                    direction: Some(InjectDirection::ToServer),
                    message_type: Some(MessageType::Text),
                    contains: Some("secret".into()),
                    regex: None,
                    action: RuleAction::Replace {
                        pattern: "secret".into(),
                        replacement: "REDACTED".into(),
                    },
                },
            }),
            Message::Request(Request::Send {
                traffic: "00000000000000ff".into(),
                direction: InjectDirection::ToClient,
                payload: "aGk=".into(),
                is_binary: false,
            }),
            Message::Reply(Reply::Refused {
                reason: Refusal::Conflict,
                message: "closed".into(),
            }),
            Message::Dropped(12),
            Message::Records(vec![
                frame(1),
                Record::Body(frametap_store::BodyChunk {
                    traffic: TrafficId(42),
                    of: frametap_store::BodyOf::Request,
                    seq: 0,
                    data: b"a=1&b=2".to_vec(),
                }),
                Record::WsOpen(WsOpen {
                    traffic: TrafficId(42),
                    timestamp_ms: 1,
                    url: "wss://h/p".into(),
                    client_address: "10.0.0.1:5".into(),
                    server_address: "10.0.0.2:443".into(),
                    subprotocol: None,
                    extensions: None,
                    deflate: false,
                }),
                frame(2),
            ]),
            Message::Records(vec![]),
        ]
    }

    #[test]
    fn messages_roundtrip_whatever_the_chunking() {
        let messages = all_kinds();
        let bytes: Vec<u8> = messages.iter().flat_map(encode).collect();
        for chunk in [1, 3, 7, bytes.len()] {
            let mut decoder = Decoder::default();
            let mut out = Vec::new();
            for piece in bytes.chunks(chunk) {
                decoder.push(piece);
                while let Some(m) = decoder.next_message().unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out, messages, "chunks of {chunk}");
        }
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        for body in [
            &[][..],
            &[9][..],
            &[KIND_DROPPED, 1, 2][..],
            &[KIND_REQUEST, b'{'][..],
            &[KIND_RECORDING, b'{', b'}'][..],
            &[KIND_RECORDS, 0, 0, 0, 9, 1][..],
            &[KIND_RECORDS, 0, 0][..],
            &[KIND_RECORDS, 0, 0, 0, 1, 77][..],
        ] {
            assert!(decode_body(body).is_err(), "{body:?}");
        }
        let mut decoder = Decoder::default();
        decoder.push(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decoder.next_message(),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn delete_requests_read_as_documented() {
        let all: Request =
            serde_json::from_str(r#"{"op":"deleteTraffic","target":{"kind":"all"}}"#).unwrap();
        assert_eq!(
            all,
            Request::DeleteTraffic {
                target: DeleteTarget::All
            }
        );
        let snapshot = RuleSnapshot {
            recorded_at_ms: 5,
            agent_pid: 9,
            rules: vec![serde_json::from_str(r#"{"id":"r1","action":{"kind":"drop"}}"#).unwrap()],
        };
        let json = serde_json::to_string(&snapshot).unwrap();
        assert_eq!(
            json,
            r#"{"recordedAtMs":5,"agentPid":9,"rules":[{"id":"r1","action":{"kind":"drop"}}]}"#
        );
        assert_eq!(
            serde_json::from_str::<RuleSnapshot>(&json).unwrap(),
            snapshot
        );
    }

    #[test]
    fn rules_read_as_users_write_them() {
        let rule: Rule = serde_json::from_str(
            r#"{"host":"chat.test","direction":"to-client","type":"binary","action":{"kind":"close","code":4000}}"#,
        )
        .unwrap();
        assert_eq!(rule.message_type, Some(MessageType::Binary));
        assert_eq!(
            rule.action,
            RuleAction::Close {
                code: 4000,
                reason: String::new()
            }
        );
        assert!(serde_json::from_str::<Rule>(r#"{"action":{"kind":"drop"},"hots":"x"}"#).is_err());
        // Both vocabularies for directions; rules are written back in their own.
        for (spelling, direction) in [
            ("to-client", InjectDirection::ToClient),
            ("server-to-client", InjectDirection::ToClient),
            ("to-server", InjectDirection::ToServer),
            ("client-to-server", InjectDirection::ToServer),
        ] {
            let rule: Rule = serde_json::from_str(&format!(
                r#"{{"direction":"{spelling}","action":{{"kind":"drop"}}}}"#
            ))
            .unwrap();
            assert_eq!(rule.direction, Some(direction), "{spelling}");
            let written = serde_json::to_value(&rule).unwrap();
            assert_eq!(written["direction"], direction.as_str());
        }
        assert!(
            serde_json::from_str::<Rule>(r#"{"direction":"upstream","action":{"kind":"drop"}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<Rule>(r#"{"action":{"kind":"explode"}}"#).is_err());
        // Unknown fields inside an action are refused too, whatever its kind.
        for action in [
            r#"{"kind":"drop","x":1}"#,
            r#"{"kind":"replace","pattern":"a","replacement":"b","x":1}"#,
            r#"{"kind":"close","code":1000,"x":1}"#,
        ] {
            let rule = format!(r#"{{"action":{action}}}"#);
            assert!(serde_json::from_str::<Rule>(&rule).is_err(), "{rule}");
        }
        // A close code is a number, however JSON writes it, if it is a whole u16.
        for (code, expected) in [
            ("1000", Some(1000)),
            ("1000.0", Some(1000)),
            ("4.999e3", Some(4999)),
            ("1000.5", None),
            ("-1000", None),
            ("65536", None),
            ("\"1000\"", None),
        ] {
            let rule = format!(r#"{{"action":{{"kind":"close","code":{code}}}}}"#);
            let got = serde_json::from_str::<Rule>(&rule)
                .ok()
                .map(|rule| match rule.action {
                    RuleAction::Close { code, .. } => code,
                    other => panic!("{other:?}"),
                });
            assert_eq!(got, expected, "{rule}");
        }
    }

    #[test]
    fn rules_are_checked_before_they_reach_the_regex_engine() {
        let rule = |action: RuleAction| Rule {
            id: None,
            host: None,
            path: None,
            direction: None,
            message_type: None,
            contains: None,
            regex: None,
            action,
        };
        let close = |code, reason: &str| {
            rule(RuleAction::Close {
                code,
                reason: reason.into(),
            })
        };
        assert!(close(1000, "bye").check().is_ok());
        assert!(close(4999, &"x".repeat(123)).check().is_ok());
        for code in [0, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert!(close(code, "").check().is_err(), "{code}");
        }
        assert!(close(1000, &"x".repeat(124)).check().is_err());
        // Characters are counted, as the document's maxLength counts them; the close
        // frame cuts the bytes to fit.
        assert!(close(1000, &"é".repeat(123)).check().is_ok());
        assert!(close(1000, &"é".repeat(124)).check().is_err());
        let host = |host: &str| Rule {
            host: Some(host.into()),
            ..rule(RuleAction::Drop {})
        };
        for good in [
            "chat.test",
            "*.test",
            " *.test ",
            "*",
            " * ",
            "",
            "  ",
            "*.*",
            "\t*\r\n",
        ] {
            assert!(host(good).check().is_ok(), "{good:?}");
        }
        // Only ASCII whitespace is trimmed: U+00A0 is part of the name.
        for bad in [
            "*.", " *. ", "**", "chat.*", "a*b", "x *.test", "*x", "\u{a0}*",
        ] {
            assert!(host(bad).check().is_err(), "{bad:?}");
        }
        let replace = Rule {
            message_type: Some(MessageType::Binary),
            ..rule(RuleAction::Replace {
                pattern: "a".into(),
                replacement: "b".into(),
            })
        };
        assert!(replace.check().unwrap_err().contains("text messages only"));
        for id in ["", "a/b", "with space", &"x".repeat(65)] {
            let bad = Rule {
                id: Some(id.into()),
                ..rule(RuleAction::Drop {})
            };
            assert!(bad.check().is_err(), "{id:?}");
        }
        let good = Rule {
            id: Some("redact-1.v2_~".into()),
            ..rule(RuleAction::Drop {})
        };
        assert!(good.check().is_ok());
    }

    #[tokio::test]
    async fn async_glue_reads_what_it_wrote() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let messages = all_kinds();
        let expected = messages.clone();
        let writer = tokio::spawn(async move {
            for m in &messages {
                write_message(&mut a, m).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(m) = read_message(&mut b).await.unwrap() {
            got.push(m);
        }
        writer.await.unwrap();
        assert_eq!(got, expected);
    }
}
