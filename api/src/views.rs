//! JSON views of the stored records, as the REST API and the live events present them.
//!
//! - [`Frame`]: the seed contract's WebSocketFrame (`id, trafficId, timestamp,
//!   direction, opcode, data, isBinary, length`, unchanged) plus extra keys.
//! - [`TrafficEntry`]: an HTTP exchange, camelCase, headers as objects.
//! - [`WebSocketConnection`]: a connection, with mitmproxy's `WebSocketData` names
//!   for the close fields (`closed_by_client`, `close_code`, `close_reason`,
//!   `timestamp_end`).
//! - [`WebSocketMessage`]: a message reassembled from its frames
//!   ([`crate::messages`]), mitmproxy's `WebSocketMessage` in camelCase.
//!
//! The `*_json` functions are public: the live event relay sends the same shapes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{FrameId, FrameRecord, FrameTotals, TunnelEnd, WsClose, WsConnection, WsOpen};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::messages::AssembledMessage;

/// Who sent a frame. Written as the seed names it (`client-to-server`,
/// `server-to-client`); on input the rules' names `to-server` and `to-client` are
/// accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the client (browser, app) to the server.
    #[serde(alias = "to-server")]
    ClientToServer,
    /// From the server to the client.
    #[serde(alias = "to-client")]
    ServerToClient,
}

impl Direction {
    /// The direction of a frame sent by the client if `from_client`.
    pub fn from_client(from_client: bool) -> Direction {
        if from_client {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        }
    }

    /// `"client-to-server"` or `"server-to-client"`, as in JSON and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client-to-server",
            Direction::ServerToClient => "server-to-client",
        }
    }

    /// Parses the JSON / query-string form, in either vocabulary (see
    /// [`DirectionParam`]).
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "client-to-server" | "to-server" => Some(Direction::ClientToServer),
            "server-to-client" | "to-client" => Some(Direction::ServerToClient),
            _ => None,
        }
    }

    /// `true` for [`Direction::ClientToServer`] (the store's `from_client`).
    pub fn is_from_client(self) -> bool {
        self == Direction::ClientToServer
    }
}

/// The `direction` query parameter's schema: both vocabularies (serde aliases are
/// invisible to the `ToSchema` derive, and answers use only the seed's names).
pub struct DirectionParam;

impl DirectionParam {
    /// Every spelling accepted, the seed's first.
    pub const SPELLINGS: [&'static str; 4] = [
        "client-to-server",
        "server-to-client",
        "to-server",
        "to-client",
    ];
}

impl utoipa::PartialSchema for DirectionParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(DirectionParam::SPELLINGS))
            .description(Some(
                "Who sent it: `client-to-server` (also written `to-server`) or \
                 `server-to-client` (also written `to-client`).",
            ))
            .into()
    }
}

impl ToSchema for DirectionParam {}

/// One captured WebSocket frame (the seed's WebSocketFrame, plus extra keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Frame {
    /// Frame id: `<trafficId>-<seq as at least 8 hex digits>`.
    #[schema(
        example = "0191a2b3c4d50001-00000001",
        pattern = "^[0-9a-f]{16}-[0-9a-f]{8,16}$"
    )]
    pub id: String,
    /// Id of the connection's traffic entry.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// Capture time, Unix milliseconds.
    pub timestamp: u64,
    /// Who sent the frame.
    pub direction: Direction,
    /// WebSocket opcode: 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    #[schema(maximum = 15)]
    pub opcode: u8,
    /// Standard base64 (with padding) of the stored payload (unmasked, inflated if it
    /// was compressed; only a prefix if `truncated`); `null` when it is empty.
    #[schema(required = true)]
    pub data: Option<String>,
    /// The frame carries (part of) a binary message: opcode 2, or a continuation of
    /// a binary message.
    pub is_binary: bool,
    /// Payload length in bytes, as the application sees it (the whole payload, even
    /// when `data` holds only a truncated prefix).
    pub length: u64,
    /// Sequence number within the connection (from 1, in capture order).
    pub seq: u64,
    /// Final fragment of its message.
    pub fin: bool,
    /// RSV bits: 4 = RSV1, 2 = RSV2, 1 = RSV3.
    #[schema(maximum = 7)]
    pub rsv: u8,
    /// The frame was masked on the wire (client frames are).
    pub masked: bool,
    /// permessage-deflate compressed on the wire.
    pub compressed: bool,
    /// Bytes the frame took on the wire (header and payload).
    pub wire_length: u64,
    /// `data` holds only a prefix of the payload (the agent's per-frame limit).
    pub truncated: bool,
    /// Close frames: the status code.
    #[schema(required = true)]
    pub close_code: Option<u16>,
    /// Close frames: the reason.
    #[schema(required = true)]
    pub close_reason: Option<String>,
    /// Injected by frametap (sent by neither peer).
    pub injected: bool,
    /// Captured but not forwarded.
    pub dropped: bool,
    /// Forwarded by frametap in place of a message a rule replaced (the original's
    /// frames are recorded as received, with `dropped`).
    pub modified: bool,
}

/// The JSON view of a stored frame.
pub fn frame_json(record: &FrameRecord) -> Frame {
    Frame {
        id: record.id().to_string(),
        traffic_id: record.traffic.to_string(),
        timestamp: record.timestamp_ms,
        direction: Direction::from_client(record.from_client),
        opcode: record.opcode,
        data: (!record.payload.is_empty()).then(|| BASE64.encode(&record.payload)),
        is_binary: record.binary_message,
        length: record.payload_len,
        seq: record.seq,
        fin: record.fin,
        rsv: record.rsv,
        masked: record.masked,
        compressed: record.compressed,
        wire_length: record.wire_len,
        truncated: record.truncated,
        close_code: record.close_code,
        close_reason: record.close_reason.clone(),
        injected: record.injected,
        dropped: record.dropped,
        modified: record.modified,
    }
}

impl From<&FrameRecord> for Frame {
    fn from(record: &FrameRecord) -> Frame {
        frame_json(record)
    }
}

pub use frametap_control::MessageType;

/// How a message's `content` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ContentEncoding {
    /// The text itself.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Standard base64, with padding.
    #[serde(rename = "base64")]
    Base64,
}

/// One WebSocket message, reassembled from its frames (mitmproxy's
/// `WebSocketMessage`). Control frames (close, ping, pong) are not messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketMessage {
    /// The id of its first frame.
    #[schema(
        example = "0191a2b3c4d50001-00000001",
        pattern = "^[0-9a-f]{16}-[0-9a-f]{8,16}$"
    )]
    pub id: String,
    /// Id of the connection's traffic entry.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// Who sent the message.
    pub direction: Direction,
    /// Sent by the client (mitmproxy's `from_client`).
    pub from_client: bool,
    /// `text` or `binary`.
    #[serde(rename = "type")]
    pub message_type: MessageType,
    /// The content: the text itself for text messages that are valid UTF-8, base64
    /// otherwise (binary messages, and text that is not valid UTF-8); see
    /// `contentEncoding`. Only a prefix when `truncated`.
    pub content: String,
    /// `utf-8` when `content` is the text, `base64` when it is encoded.
    pub content_encoding: ContentEncoding,
    /// Full length in bytes as the application sees it (sum of the frames' payload
    /// lengths), even when `content` holds only a prefix.
    pub length: u64,
    /// `content` holds only a prefix: a frame was truncated by the agent, or the
    /// message is over the 1 MiB this view shows per message.
    pub truncated: bool,
    /// When its last frame was captured (the message complete), Unix milliseconds.
    pub timestamp: u64,
    /// Frames the message is made of.
    pub frame_count: u64,
    /// The id of its last frame.
    #[schema(
        example = "0191a2b3c4d50001-00000003",
        pattern = "^[0-9a-f]{16}-[0-9a-f]{8,16}$"
    )]
    pub last_frame_id: String,
    /// All its frames were dropped: captured, not forwarded as received (a rule
    /// dropped or replaced it).
    pub dropped: bool,
    /// Injected by frametap (sent by neither peer).
    pub injected: bool,
    /// Produced by a replace rule: forwarded in place of the original message (which
    /// is listed too, `dropped`).
    pub modified: bool,
    /// Frames are missing: its first fragment was not recorded (deleted), or a new
    /// message started before its final fragment.
    pub incomplete: bool,
}

/// The JSON view of a reassembled message.
pub fn message_json(message: &AssembledMessage) -> WebSocketMessage {
    let (content, content_encoding) = message_content(message);
    WebSocketMessage {
        id: FrameId::new(message.traffic, message.first_seq).to_string(),
        traffic_id: message.traffic.to_string(),
        direction: Direction::from_client(message.from_client),
        from_client: message.from_client,
        message_type: if message.binary {
            MessageType::Binary
        } else {
            MessageType::Text
        },
        content,
        content_encoding,
        length: message.length,
        truncated: message.truncated,
        timestamp: message.timestamp_ms,
        frame_count: message.frame_count,
        last_frame_id: FrameId::new(message.traffic, message.last_seq).to_string(),
        dropped: message.dropped,
        injected: message.injected,
        modified: message.modified,
        incomplete: message.incomplete,
    }
}

/// A message's content as text when it is a text message that is valid UTF-8,
/// else as base64. A truncated text whose cut split a character is shown as text up
/// to that character.
pub fn message_content(message: &AssembledMessage) -> (String, ContentEncoding) {
    if !message.binary {
        match std::str::from_utf8(&message.content) {
            Ok(text) => return (text.to_owned(), ContentEncoding::Utf8),
            // `error_len() == None`: the bytes end inside a character, which a cut does.
            Err(e) if message.truncated && e.error_len().is_none() => {
                let text = std::str::from_utf8(&message.content[..e.valid_up_to()])
                    .expect("valid up to here");
                return (text.to_owned(), ContentEncoding::Utf8);
            }
            Err(_) => {}
        }
    }
    (BASE64.encode(&message.content), ContentEncoding::Base64)
}

/// HTTP headers as a JSON object, in the order names first appear. Repeated names
/// (compared case-insensitively) are merged into one value; the name keeps the case of
/// its first occurrence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// Merges `headers` (name, value pairs in wire order): values of a repeated name
    /// are joined with `", "` (RFC 9110 list syntax), except `Set-Cookie`, joined with
    /// `"\n"` because cookies contain commas.
    pub fn merge(headers: &[(String, String)]) -> Headers {
        let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            match merged
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((first_name, joined)) => {
                    let separator = if first_name.eq_ignore_ascii_case("set-cookie") {
                        "\n"
                    } else {
                        ", "
                    };
                    joined.push_str(separator);
                    joined.push_str(value);
                }
                None => merged.push((name.clone(), value.clone())),
            }
        }
        Headers(merged)
    }

    /// The merged value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only for clients and tests reading our JSON back; order is not preserved.
        let map = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Headers(map.into_iter().collect()))
    }
}

/// One HTTP exchange (for WebSockets: the upgrade request and its 101 response), or
/// one connection relayed untouched (protocol `tls` or `tcp`, `notIntercepted` says
/// why; no method, path or status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficEntry {
    /// Traffic id (16 hex digits, sorts by time).
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub id: String,
    /// When the request started, Unix milliseconds.
    pub timestamp: u64,
    /// HTTP method.
    #[schema(example = "GET")]
    pub method: String,
    /// Full URL.
    #[schema(example = "wss://chat.example.com/socket")]
    pub url: String,
    /// `http`, `https`, `ws` or `wss` for HTTP exchanges; `tls` or `tcp` for
    /// connections relayed untouched.
    #[schema(example = "wss")]
    pub protocol: String,
    /// Host (from the URL).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Response status; `null` if no response arrived.
    #[schema(required = true)]
    pub status: Option<u16>,
    /// Request headers, name -> value.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub request_headers: Headers,
    /// Response headers, name -> value.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub response_headers: Headers,
    /// The server's address (`ip:port`).
    pub remote_address: String,
    /// TLS version towards the client, e.g. `TLSv1.3`; `null` for plaintext.
    #[schema(required = true)]
    pub tls_version: Option<String>,
    /// Milliseconds from request start to response end (for a connection relayed
    /// untouched: from its start to its end); `null` if unfinished.
    #[schema(required = true)]
    pub duration: Option<f64>,
    /// Why the exchange failed.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The client's address (`ip:port`).
    pub client_address: String,
    /// The client process id, when known.
    #[schema(required = true)]
    pub pid: Option<u32>,
    /// The client process name, when known.
    #[schema(required = true)]
    pub process: Option<String>,
    /// The client process's cgroup v2 path, when known.
    #[serde(default)]
    #[schema(required = true, example = "/libpod_parent/libpod-3f1c0a9e7b2d")]
    pub cgroup: Option<String>,
    /// The inode of the client's network namespace, when known.
    #[serde(default)]
    #[schema(required = true)]
    pub netns: Option<u64>,
    /// The id of the client's container (64 hexadecimal digits), when the client
    /// ran in one.
    #[serde(default)]
    #[schema(required = true)]
    pub container_id: Option<String>,
    /// The container's name, when the runtime's API socket told the agent.
    #[serde(default)]
    #[schema(required = true)]
    pub container_name: Option<String>,
    /// TLS server name indication sent by the client.
    #[schema(required = true)]
    pub sni: Option<String>,
    /// A replay frametap made (`POST /api/websocket/{trafficId}/replay`): the traffic
    /// id of the connection it played again; `null` for captured traffic.
    #[serde(default)]
    #[schema(required = true, pattern = "^[0-9a-f]{16}$")]
    pub replay_of: Option<String>,
    /// Why the connection was relayed untouched instead of intercepted, e.g. `on the
    /// --passthrough list`, `server selected acme-tls/1`, `neither TLS nor HTTP`;
    /// `null` for intercepted traffic (HTTP/1.x and HTTP/2).
    #[serde(default)]
    #[schema(required = true, example = "on the --passthrough list")]
    pub not_intercepted: Option<String>,
    /// Application protocols (ALPN) the client offered, in its order; empty without TLS
    /// or ALPN.
    #[serde(default)]
    #[schema(example = json!(["h2", "http/1.1"]))]
    pub alpn_offered: Vec<String>,
    /// The application protocol the server selected, when known.
    #[serde(default)]
    #[schema(required = true, example = "h2")]
    pub alpn_selected: Option<String>,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2` for intercepted HTTP and WebSockets (over
    /// HTTP/2: RFC 8441); `null` for connections relayed untouched and for failures
    /// before any request.
    #[serde(default)]
    #[schema(required = true, example = "HTTP/2")]
    pub http_version: Option<String>,
    /// Bytes the client sent through a connection relayed untouched; `null` while it is
    /// open and for HTTP exchanges.
    #[serde(default)]
    #[schema(required = true)]
    pub bytes_from_client: Option<u64>,
    /// Bytes the server sent through a connection relayed untouched; `null` while it is
    /// open and for HTTP exchanges.
    #[serde(default)]
    #[schema(required = true)]
    pub bytes_from_server: Option<u64>,
    /// Bytes of the request body as the client sent it (chunked framing removed,
    /// Content-Encoding kept); `null` when not recorded (entries recorded before
    /// frametap recorded bodies, failures before any request).
    #[schema(required = true)]
    pub request_body_size: Option<u64>,
    /// Only the first bytes of the request body are stored (the agent's
    /// `--max-body-size`); `GET .../request/body` serves what is.
    pub request_body_truncated: bool,
    /// Bytes of the response body as the server sent it, as `requestBodySize`;
    /// `null` also when no response arrived.
    #[schema(required = true)]
    pub response_body_size: Option<u64>,
    /// Only the first bytes of the response body are stored.
    pub response_body_truncated: bool,
}

/// The JSON view of a stored traffic entry.
pub fn traffic_json(entry: &frametap_store::TrafficEntry) -> TrafficEntry {
    TrafficEntry {
        id: entry.id.to_string(),
        timestamp: entry.timestamp_ms,
        method: entry.method.clone(),
        url: entry.url.clone(),
        protocol: entry.protocol.clone(),
        host: entry.host.clone(),
        path: entry.path.clone(),
        status: entry.status,
        request_headers: Headers::merge(&entry.request_headers),
        response_headers: Headers::merge(&entry.response_headers),
        remote_address: entry.remote_address.clone(),
        tls_version: entry.tls_version.clone(),
        // JSON has no NaN or infinity.
        duration: entry.duration_ms.filter(|d| d.is_finite()),
        error: entry.error.clone(),
        client_address: entry.client_address.clone(),
        pid: entry.pid,
        process: entry.process.clone(),
        cgroup: entry.cgroup.clone(),
        netns: entry.netns,
        container_id: entry.container_id.clone(),
        container_name: entry.container_name.clone(),
        sni: entry.sni.clone(),
        replay_of: entry.replay_of.map(|t| t.to_string()),
        not_intercepted: entry.not_intercepted.clone(),
        alpn_offered: entry.alpn_offered.clone(),
        alpn_selected: entry.alpn_selected.clone(),
        // Entries recorded before the field was are all HTTP/1.x exchanges.
        http_version: entry.http_version.clone().or_else(|| {
            (entry.not_intercepted.is_none() && !entry.method.is_empty())
                .then(|| "HTTP/1.1".to_string())
        }),
        bytes_from_client: entry.bytes_from_client,
        bytes_from_server: entry.bytes_from_server,
        request_body_size: entry.request_body.map(|b| b.size),
        request_body_truncated: entry.request_body.is_some_and(|b| b.truncated()),
        response_body_size: entry.response_body.map(|b| b.size),
        response_body_truncated: entry.response_body.is_some_and(|b| b.truncated()),
    }
}

impl From<&frametap_store::TrafficEntry> for TrafficEntry {
    fn from(entry: &frametap_store::TrafficEntry) -> TrafficEntry {
        traffic_json(entry)
    }
}

/// One WebSocket connection. Fields are camelCase, like the rest of the API; the four
/// close fields of mitmproxy's `WebSocketData` are also given under mitmproxy's own
/// names (`timestamp_end`, `closed_by_client`, `close_code`, `close_reason`), which
/// are the contract for mitmproxy users.
///
/// Frame counts say what they count (see the README's table): once the connection
/// has closed, `framesFromClient + framesFromServer + framesFromFrametap =
/// recordedFrameCount = storedFrameCount + deletedFrameCount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketConnection {
    /// Id of the connection's traffic entry.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// The `ws://` or `wss://` URL.
    pub url: String,
    /// No end of the connection recorded yet.
    pub open: bool,
    /// When the connection opened (101 response), Unix milliseconds.
    pub timestamp: u64,
    /// When the connection ended, Unix milliseconds; `null` while open.
    #[schema(required = true)]
    pub timestamp_end: Option<u64>,
    /// Same as `timestamp_end` (mitmproxy's name).
    #[serde(rename = "timestamp_end")]
    #[schema(required = true)]
    pub mitmproxy_timestamp_end: Option<u64>,
    /// Who sent the first close frame: `true` the client, `false` the server; `null`
    /// while open, if nobody sent one, or if frametap did (a close rule).
    #[schema(required = true)]
    pub closed_by_client: Option<bool>,
    /// Same as `closedByClient` (mitmproxy's name).
    #[serde(rename = "closed_by_client")]
    #[schema(required = true)]
    pub mitmproxy_closed_by_client: Option<bool>,
    /// Who sent the first close frame, frametap included (a close rule); `null` while
    /// open or if nobody sent one.
    #[schema(required = true)]
    pub closed_by: Option<ClosedBy>,
    /// Status code of the first close frame.
    #[schema(required = true)]
    pub close_code: Option<u16>,
    /// Same as `closeCode` (mitmproxy's name).
    #[serde(rename = "close_code")]
    #[schema(required = true)]
    pub mitmproxy_close_code: Option<u16>,
    /// Reason of the first close frame.
    #[schema(required = true)]
    pub close_reason: Option<String>,
    /// Same as `closeReason` (mitmproxy's name).
    #[serde(rename = "close_reason")]
    #[schema(required = true)]
    pub mitmproxy_close_reason: Option<String>,
    /// Negotiated subprotocol (`Sec-WebSocket-Protocol`).
    #[schema(required = true)]
    pub subprotocol: Option<String>,
    /// Negotiated extensions (`Sec-WebSocket-Extensions`).
    #[schema(required = true)]
    pub extensions: Option<String>,
    /// permessage-deflate negotiated.
    pub deflate: bool,
    /// The client's address (`ip:port`).
    pub client_address: String,
    /// The server's address (`ip:port`).
    pub server_address: String,
    /// Frames stored now: the same number as `GET .../count` (0 right after `DELETE
    /// .../frames`). Kept under this name for compatibility; `storedFrameCount` says
    /// the same.
    pub frame_count: u64,
    /// How the connection's frames add up.
    #[serde(flatten)]
    pub counts: FrameCounts,
    /// Bytes the client sent on the wire as frames (headers included); `null` while open.
    #[schema(required = true)]
    pub bytes_from_client: Option<u64>,
    /// Bytes the server sent on the wire as frames (headers included); `null` while open.
    #[schema(required = true)]
    pub bytes_from_server: Option<u64>,
    /// Why the connection ended abnormally (e.g. `client reset`, `idle timeout`).
    #[schema(required = true)]
    pub abnormal: Option<String>,
}

/// A connection's frame counts, each named by what it counts. Frames are numbered
/// from 1 without gaps and a deletion removes the oldest, so `recordedFrameCount =
/// storedFrameCount + deletedFrameCount`, and once the connection has closed
/// `recordedFrameCount = framesFromClient + framesFromServer + framesFromFrametap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FrameCounts {
    /// Frames stored now, as `GET .../count` says.
    pub stored_frame_count: u64,
    /// Frames recorded since the connection opened, deleted ones included: every
    /// frame either peer sent (forwarded or dropped) and every frame frametap wrote.
    pub recorded_frame_count: u64,
    /// Frames deleted since they were recorded (`DELETE .../frames`, or retention).
    pub deleted_frame_count: u64,
    /// Frames the client sent on the wire, forwarded or dropped by a rule; `null`
    /// while open.
    #[schema(required = true)]
    pub frames_from_client: Option<u64>,
    /// Frames the server sent on the wire, forwarded or dropped by a rule; `null`
    /// while open.
    #[schema(required = true)]
    pub frames_from_server: Option<u64>,
    /// Frames frametap wrote itself: injected messages, a replace rule's
    /// replacements, a close rule's close frames; `null` while open (and for
    /// connections recorded by agents older than this count).
    #[schema(required = true)]
    pub frames_from_frametap: Option<u64>,
}

impl FrameCounts {
    /// The counts of a connection: `totals` from the store, the per-sender counts
    /// from its close record (when it has closed).
    pub fn new(totals: FrameTotals, close: Option<&WsClose>) -> FrameCounts {
        FrameCounts {
            stored_frame_count: totals.stored,
            recorded_frame_count: totals.recorded,
            deleted_frame_count: totals.deleted,
            frames_from_client: close.map(|c| c.frames_from_client),
            frames_from_server: close.map(|c| c.frames_from_server),
            frames_from_frametap: close.and_then(|c| c.frames_from_frametap),
        }
    }

    /// The counts as the close record gives them (the agent numbered every frame
    /// the record counts), less what was deleted since: for the `websocket:close`
    /// event, which cannot wait for the store to catch up.
    pub fn at_close(close: &WsClose, deleted: u64) -> FrameCounts {
        let recorded = close.frames_from_client
            + close.frames_from_server
            + close.frames_from_frametap.unwrap_or(0);
        let recorded = recorded.max(deleted);
        FrameCounts::new(
            FrameTotals {
                recorded,
                deleted,
                stored: recorded - deleted,
            },
            Some(close),
        )
    }
}

/// The JSON view of a stored connection; `totals` are
/// [`frametap_store::Store::frame_totals`].
pub fn connection_json(connection: &WsConnection, totals: FrameTotals) -> WebSocketConnection {
    // The close record's totals exist only once the connection ended.
    let close = (!connection.open).then(|| WsClose {
        traffic: connection.traffic,
        timestamp_ms: connection.end_timestamp_ms.unwrap_or(0),
        closed_by: connection.closed_by.clone(),
        close_code: connection.close_code,
        close_reason: connection.close_reason.clone(),
        frames_from_client: connection.frames_from_client,
        frames_from_server: connection.frames_from_server,
        bytes_from_client: connection.bytes_from_client,
        bytes_from_server: connection.bytes_from_server,
        abnormal: connection.abnormal.clone(),
        frames_from_frametap: connection.frames_from_frametap,
    });
    let closed_by_client = closed_by_client(connection.closed_by.as_deref());
    WebSocketConnection {
        traffic_id: connection.traffic.to_string(),
        url: connection.url.clone(),
        open: connection.open,
        timestamp: connection.timestamp_ms,
        timestamp_end: connection.end_timestamp_ms,
        mitmproxy_timestamp_end: connection.end_timestamp_ms,
        closed_by_client,
        mitmproxy_closed_by_client: closed_by_client,
        closed_by: ClosedBy::parse(connection.closed_by.as_deref()),
        close_code: connection.close_code,
        mitmproxy_close_code: connection.close_code,
        close_reason: connection.close_reason.clone(),
        mitmproxy_close_reason: connection.close_reason.clone(),
        subprotocol: connection.subprotocol.clone(),
        extensions: connection.extensions.clone(),
        deflate: connection.deflate,
        client_address: connection.client_address.clone(),
        server_address: connection.server_address.clone(),
        frame_count: totals.stored,
        counts: FrameCounts::new(totals, close.as_ref()),
        bytes_from_client: close.as_ref().map(|c| c.bytes_from_client),
        bytes_from_server: close.as_ref().map(|c| c.bytes_from_server),
        abnormal: connection.abnormal.clone(),
    }
}

/// Who sent a connection's first close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClosedBy {
    Client,
    Server,
    /// A close rule (or a message frametap could not re-encode).
    Frametap,
}

impl ClosedBy {
    /// As the agent records it (`client`, `server`, `frametap`).
    fn parse(closed_by: Option<&str>) -> Option<ClosedBy> {
        match closed_by? {
            "client" => Some(ClosedBy::Client),
            "server" => Some(ClosedBy::Server),
            "frametap" => Some(ClosedBy::Frametap),
            _ => None,
        }
    }
}

/// `closed_by` as mitmproxy's `closed_by_client`: `None` when nobody (or frametap)
/// closed.
fn closed_by_client(closed_by: Option<&str>) -> Option<bool> {
    match closed_by {
        Some("client") => Some(true),
        Some("server") => Some(false),
        _ => None,
    }
}

/// The `websocket:open` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketOpened {
    /// Id of the connection's traffic entry (sent before, in `traffic:batch`).
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// The `ws://` or `wss://` URL.
    pub url: String,
    /// When the connection opened (101 response), Unix milliseconds.
    pub timestamp: u64,
    /// The client's address (`ip:port`).
    pub client_address: String,
    /// The server's address (`ip:port`).
    pub server_address: String,
    /// Negotiated subprotocol.
    #[schema(required = true)]
    pub subprotocol: Option<String>,
    /// Negotiated extensions.
    #[schema(required = true)]
    pub extensions: Option<String>,
    /// permessage-deflate negotiated.
    pub deflate: bool,
}

/// The `websocket:open` event of a connection's open record.
pub fn opened_json(open: &WsOpen) -> WebSocketOpened {
    WebSocketOpened {
        traffic_id: open.traffic.to_string(),
        url: open.url.clone(),
        timestamp: open.timestamp_ms,
        client_address: open.client_address.clone(),
        server_address: open.server_address.clone(),
        subprotocol: open.subprotocol.clone(),
        extensions: open.extensions.clone(),
        deflate: open.deflate,
    }
}

/// The `websocket:close` event: how the connection ended, with the same counts and
/// close fields as its connection view (`GET /api/websocket/{trafficId}`) then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketClosed {
    /// Id of the connection's traffic entry.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// Status code of the first close frame (the seed's name; also `closeCode`).
    #[schema(required = true)]
    pub code: Option<u16>,
    /// Reason of the first close frame (the seed's name; also `closeReason`).
    #[schema(required = true)]
    pub reason: Option<String>,
    /// Status code of the first close frame.
    #[schema(required = true)]
    pub close_code: Option<u16>,
    /// Reason of the first close frame.
    #[schema(required = true)]
    pub close_reason: Option<String>,
    /// `true` the client sent the first close frame, `false` the server; `null` if
    /// nobody did or frametap did (a close rule).
    #[schema(required = true)]
    pub closed_by_client: Option<bool>,
    /// Who sent the first close frame, frametap included (a close rule); `null` if
    /// nobody did.
    #[schema(required = true)]
    pub closed_by: Option<ClosedBy>,
    /// When the connection ended, Unix milliseconds (also `timestampEnd`).
    pub timestamp: u64,
    /// When the connection ended, Unix milliseconds.
    pub timestamp_end: u64,
    /// Why the connection ended abnormally.
    #[schema(required = true)]
    pub abnormal: Option<String>,
    /// Frames stored for the connection: what `GET .../count` says at this moment.
    pub frame_count: u64,
    /// How the connection's frames add up.
    #[serde(flatten)]
    pub counts: FrameCounts,
    /// Bytes the client sent on the wire as frames (headers included).
    pub bytes_from_client: u64,
    /// Bytes the server sent on the wire as frames (headers included).
    pub bytes_from_server: u64,
}

/// The `websocket:close` event of a close record; `deleted` frames of the connection
/// were deleted before it ended.
pub fn closed_json(close: &WsClose, deleted: u64) -> WebSocketClosed {
    let counts = FrameCounts::at_close(close, deleted);
    WebSocketClosed {
        traffic_id: close.traffic.to_string(),
        code: close.close_code,
        reason: close.close_reason.clone(),
        close_code: close.close_code,
        close_reason: close.close_reason.clone(),
        closed_by_client: closed_by_client(close.closed_by.as_deref()),
        closed_by: ClosedBy::parse(close.closed_by.as_deref()),
        timestamp: close.timestamp_ms,
        timestamp_end: close.timestamp_ms,
        abnormal: close.abnormal.clone(),
        frame_count: counts.stored_frame_count,
        counts,
        bytes_from_client: close.bytes_from_client,
        bytes_from_server: close.bytes_from_server,
    }
}

/// The `traffic:end` event: a connection relayed untouched (listed by `traffic:batch`
/// when it started) ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelEnded {
    /// Id of the connection's traffic entry.
    #[schema(example = "0191a2b3c4d50001", pattern = "^[0-9a-f]{16}$")]
    pub traffic_id: String,
    /// When the connection ended, Unix milliseconds.
    pub timestamp: u64,
    /// How long it was open, milliseconds.
    #[schema(required = true)]
    pub duration: Option<f64>,
    /// Bytes the client sent.
    pub bytes_from_client: u64,
    /// Bytes the server sent.
    pub bytes_from_server: u64,
    /// How it ended (`closed`, `client reset`, ...).
    pub end: String,
    /// What went wrong, if anything.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The `traffic:end` event of an untouched connection's end record.
pub fn ended_json(end: &TunnelEnd) -> TunnelEnded {
    TunnelEnded {
        traffic_id: end.traffic.to_string(),
        timestamp: end.timestamp_ms,
        duration: Some(end.duration_ms).filter(|d| d.is_finite()),
        bytes_from_client: end.bytes_from_client,
        bytes_from_server: end.bytes_from_server,
        end: end.end.clone(),
        error: end.error.clone(),
    }
}

/// `GET /api/traffic`: one page of matching entries and the number of all matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficPage {
    /// The page, newest first.
    pub entries: Vec<TrafficEntry>,
    /// How many entries match the filters (all pages).
    pub count: u64,
}

/// `DELETE /api/traffic/{id}` and `DELETE /api/traffic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrafficDeleted {
    /// Always `true` (failures are error responses).
    pub success: bool,
    /// How many traffic entries were deleted.
    pub deleted: u64,
    /// How many WebSocket frames went with them.
    pub frames: u64,
}

/// `GET /api/websocket/{trafficId}/count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FrameCount {
    /// Frames stored for the connection now.
    pub count: u64,
}

/// `DELETE /api/websocket/{trafficId}/frames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeleteResult {
    /// Always `true` (failures are error responses).
    pub success: bool,
    /// How many frames were deleted.
    pub deleted: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use frametap_store::TrafficId;

    #[test]
    fn headers_merge_like_http() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let merged = Headers::merge(&h(&[
            ("Accept", "text/html"),
            ("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
            ("accept", "application/json"),
            ("set-cookie", "b=2"),
            ("X-Empty", ""),
        ]));
        assert_eq!(merged.get("ACCEPT"), Some("text/html, application/json"));
        assert_eq!(
            merged.get("set-cookie"),
            Some("a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\nb=2")
        );
        let json = serde_json::to_string(&merged).unwrap();
        assert_eq!(
            json,
            r#"{"Accept":"text/html, application/json","Set-Cookie":"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\nb=2","X-Empty":""}"#
        );
    }

    #[test]
    fn frame_json_follows_the_seed() {
        let record = FrameRecord {
            traffic: TrafficId(0x0191_a2b3_c4d5_0001),
            seq: 1,
            timestamp_ms: 1_709_136_000_100,
            from_client: true,
            opcode: 1,
            fin: true,
            rsv: 0,
            masked: true,
            compressed: false,
            wire_len: 48,
            payload_len: 42,
            truncated: false,
            payload: br#"{"action":"subscribe","channel":"chat"}"#.to_vec(),
            close_code: None,
            close_reason: None,
            injected: false,
            dropped: false,
            binary_message: false,
            modified: false,
        };
        let json = serde_json::to_value(frame_json(&record)).unwrap();
        assert_eq!(json["id"], "0191a2b3c4d50001-00000001");
        assert_eq!(json["trafficId"], "0191a2b3c4d50001");
        assert_eq!(json["direction"], "client-to-server");
        assert_eq!(
            json["data"],
            "eyJhY3Rpb24iOiJzdWJzY3JpYmUiLCJjaGFubmVsIjoiY2hhdCJ9"
        );
        assert_eq!(json["isBinary"], false);
        assert_eq!(json["length"], 42);
        let empty = FrameRecord {
            payload: Vec::new(),
            payload_len: 0,
            opcode: 9,
            from_client: false,
            ..record
        };
        let json = serde_json::to_value(frame_json(&empty)).unwrap();
        assert_eq!(json["data"], serde_json::Value::Null);
        assert_eq!(json["direction"], "server-to-client");
    }
}
