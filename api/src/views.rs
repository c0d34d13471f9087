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
use frametap_store::{FrameId, FrameRecord, WsConnection};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::messages::AssembledMessage;

/// Who sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From the client (browser, app) to the server.
    ClientToServer,
    /// From the server to the client.
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

    /// Parses the JSON / query-string form.
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "client-to-server" => Some(Direction::ClientToServer),
            "server-to-client" => Some(Direction::ServerToClient),
            _ => None,
        }
    }

    /// `true` for [`Direction::ClientToServer`] (the store's `from_client`).
    pub fn is_from_client(self) -> bool {
        self == Direction::ClientToServer
    }
}

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
    /// TLS server name indication sent by the client.
    #[schema(required = true)]
    pub sni: Option<String>,
    /// Why the connection was relayed untouched instead of intercepted, e.g. `server
    /// selected h2`, `on the --passthrough list`, `neither TLS nor HTTP`; `null` for
    /// intercepted traffic.
    #[serde(default)]
    #[schema(required = true, example = "server selected h2")]
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
        sni: entry.sni.clone(),
        not_intercepted: entry.not_intercepted.clone(),
        alpn_offered: entry.alpn_offered.clone(),
        alpn_selected: entry.alpn_selected.clone(),
        bytes_from_client: entry.bytes_from_client,
        bytes_from_server: entry.bytes_from_server,
    }
}

impl From<&frametap_store::TrafficEntry> for TrafficEntry {
    fn from(entry: &frametap_store::TrafficEntry) -> TrafficEntry {
        traffic_json(entry)
    }
}

/// One WebSocket connection. Close fields are named as mitmproxy's `WebSocketData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WebSocketConnection {
    /// Id of the connection's traffic entry.
    #[serde(rename = "trafficId")]
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
    /// Who sent the first close frame: `true` the client, `false` the server; `null`
    /// while open or if nobody sent one.
    #[schema(required = true)]
    pub closed_by_client: Option<bool>,
    /// Status code of the first close frame.
    #[schema(required = true)]
    pub close_code: Option<u16>,
    /// Reason of the first close frame.
    #[schema(required = true)]
    pub close_reason: Option<String>,
    /// Negotiated subprotocol (`Sec-WebSocket-Protocol`).
    #[schema(required = true)]
    pub subprotocol: Option<String>,
    /// Negotiated extensions (`Sec-WebSocket-Extensions`).
    #[schema(required = true)]
    pub extensions: Option<String>,
    /// permessage-deflate negotiated.
    pub deflate: bool,
    /// The client's address (`ip:port`).
    #[serde(rename = "clientAddress")]
    pub client_address: String,
    /// The server's address (`ip:port`).
    #[serde(rename = "serverAddress")]
    pub server_address: String,
    /// Frames stored now (deleted frames excluded).
    #[serde(rename = "frameCount")]
    pub frame_count: u64,
    /// Frames the client sent; `null` while open.
    #[serde(rename = "framesFromClient")]
    #[schema(required = true)]
    pub frames_from_client: Option<u64>,
    /// Frames the server sent; `null` while open.
    #[serde(rename = "framesFromServer")]
    #[schema(required = true)]
    pub frames_from_server: Option<u64>,
    /// Bytes the client sent on the wire as frames (headers included); `null` while open.
    #[serde(rename = "bytesFromClient")]
    #[schema(required = true)]
    pub bytes_from_client: Option<u64>,
    /// Bytes the server sent on the wire as frames (headers included); `null` while open.
    #[serde(rename = "bytesFromServer")]
    #[schema(required = true)]
    pub bytes_from_server: Option<u64>,
    /// Why the connection ended abnormally (e.g. `client reset`, `idle timeout`).
    #[schema(required = true)]
    pub abnormal: Option<String>,
}

/// The JSON view of a stored connection; `frame_count` is [`frametap_store::Store::frame_count`].
pub fn connection_json(connection: &WsConnection, frame_count: u64) -> WebSocketConnection {
    // The close record's totals exist only once the connection ended.
    let total = |n: u64| (!connection.open).then_some(n);
    WebSocketConnection {
        traffic_id: connection.traffic.to_string(),
        url: connection.url.clone(),
        open: connection.open,
        timestamp: connection.timestamp_ms,
        timestamp_end: connection.end_timestamp_ms,
        closed_by_client: match connection.closed_by.as_deref() {
            Some("client") => Some(true),
            Some("server") => Some(false),
            _ => None,
        },
        close_code: connection.close_code,
        close_reason: connection.close_reason.clone(),
        subprotocol: connection.subprotocol.clone(),
        extensions: connection.extensions.clone(),
        deflate: connection.deflate,
        client_address: connection.client_address.clone(),
        server_address: connection.server_address.clone(),
        frame_count,
        frames_from_client: total(connection.frames_from_client),
        frames_from_server: total(connection.frames_from_server),
        bytes_from_client: total(connection.bytes_from_client),
        bytes_from_server: total(connection.bytes_from_server),
        abnormal: connection.abnormal.clone(),
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
