//! Record types stored by the agent and read by the API.

use serde::{Deserialize, Serialize};

use crate::ids::{FrameId, TrafficId};

/// One HTTP exchange, written once when the exchange completes or fails; or one
/// connection relayed untouched (`not_intercepted` says why), written once when it
/// starts and completed by its [`TunnelEnd`] when it ends.
/// Stored as JSON in the `traffic` column family. Fields added after the first
/// version have serde defaults, so entries written by older agents still decode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficEntry {
    pub id: TrafficId,
    pub timestamp_ms: u64,
    /// TCP connection number in the agent.
    pub conn_id: u64,
    pub method: String,
    pub url: String,
    /// `"http"`, `"https"`, `"ws"` or `"wss"` for HTTP exchanges; `"tls"` or `"tcp"`
    /// for connections relayed untouched.
    pub protocol: String,
    pub host: String,
    pub path: String,
    pub status: Option<u16>,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub remote_address: String,
    pub tls_version: Option<String>,
    pub duration_ms: Option<f64>,
    pub error: Option<String>,
    pub client_address: String,
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// The client process's cgroup v2 path (relative to the mount), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The inode of the client's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// The id of the client's container, as its cgroup path names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The container's name, when its runtime's API socket told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    pub sni: Option<String>,
    /// Why the connection was relayed untouched instead of intercepted (e.g.
    /// `"on the --passthrough list"`); `None` for intercepted traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_intercepted: Option<String>,
    /// Application protocols (ALPN) the client offered in its ClientHello, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_offered: Vec<String>,
    /// The application protocol the server selected, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn_selected: Option<String>,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2` for intercepted HTTP; `None` for connections
    /// relayed untouched, failures before any request, and entries recorded before
    /// frametap wrote it (all HTTP/1.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<String>,
    /// Bytes the client sent, for connections relayed untouched: filled in from the
    /// [`TunnelEnd`] when reading (`None` while the connection is open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_from_client: Option<u64>,
    /// Bytes the server sent, as `bytes_from_client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_from_server: Option<u64>,
    /// The request body: its size and how much of it is stored (as [`BodyChunk`]s).
    /// `None` for entries recorded before frametap recorded bodies, and for failures
    /// with no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<BodyInfo>,
    /// The response body, as `request_body`; `None` also when no response came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<BodyInfo>,
    /// A replay the agent made: the recorded connection it played again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<TrafficId>,
}

impl TrafficEntry {
    /// Whether this is a connection relayed untouched (no HTTP exchange).
    pub fn is_tunnel(&self) -> bool {
        self.not_intercepted.is_some()
    }

    /// Completes a tunnel's entry with what its end record says.
    pub fn apply_end(&mut self, end: &TunnelEnd) {
        self.duration_ms = Some(end.duration_ms);
        self.bytes_from_client = Some(end.bytes_from_client);
        self.bytes_from_server = Some(end.bytes_from_server);
        if self.error.is_none() {
            self.error = end.error.clone();
        }
    }
}

/// How big a message body was and how much of it the agent stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyInfo {
    /// Bytes of the body as the application sent it: chunked framing removed,
    /// Content-Encoding (gzip, ...) kept.
    pub size: u64,
    /// Bytes stored: the first `stored` bytes of the body (the agent's
    /// `--max-body-size`).
    pub stored: u64,
}

impl BodyInfo {
    /// Only a prefix of the body is stored.
    pub fn truncated(&self) -> bool {
        self.stored < self.size
    }
}

/// Which message of an exchange a body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyOf {
    Request,
    Response,
}

impl BodyOf {
    /// The byte that stands for it in keys.
    pub fn key_byte(self) -> u8 {
        match self {
            BodyOf::Request => 0,
            BodyOf::Response => 1,
        }
    }

    pub fn from_key_byte(b: u8) -> Option<BodyOf> {
        match b {
            0 => Some(BodyOf::Request),
            1 => Some(BodyOf::Response),
            _ => None,
        }
    }
}

/// A connection relayed untouched ended. Its [`TrafficEntry`] was written when it
/// started (so it is listed while open); this is written once, under its own key, so
/// no key is ever rewritten. JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelEnd {
    pub traffic: TrafficId,
    /// When the connection ended.
    pub timestamp_ms: u64,
    pub duration_ms: f64,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    /// How it ended: `"closed"`, `"client reset"`, `"server reset"`.
    pub end: String,
    /// Why relaying failed, if it did (e.g. the new upstream connection was refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A piece of a message body, stored as it streamed through: the pieces of one
/// body, in `seq` order (from 0, contiguous), are its first [`BodyInfo::stored`]
/// bytes. Written before the traffic entry that describes the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyChunk {
    pub traffic: TrafficId,
    pub of: BodyOf,
    pub seq: u32,
    pub data: Vec<u8>,
}

/// One WebSocket frame. Stored in the `frames` column family with the compact binary
/// format of [`crate::codec`] (not JSON, and deliberately not `Serialize`: the API
/// decides how to present payloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRecord {
    pub traffic: TrafficId,
    /// Sequence number within the connection: starts at 1, contiguous.
    pub seq: u64,
    pub timestamp_ms: u64,
    pub from_client: bool,
    /// WebSocket opcode (0..=15).
    pub opcode: u8,
    pub fin: bool,
    /// RSV bits: 4 = rsv1, 2 = rsv2, 1 = rsv3.
    pub rsv: u8,
    pub masked: bool,
    /// permessage-deflate compressed on the wire (payload is stored decompressed if
    /// the agent inflated it).
    pub compressed: bool,
    /// Length of the frame on the wire (header + payload).
    pub wire_len: u64,
    /// Length of the (unmasked) payload as sent.
    pub payload_len: u64,
    /// `payload` holds only a prefix of the payload.
    pub truncated: bool,
    pub payload: Vec<u8>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// Frame injected by frametap (not sent by either peer).
    pub injected: bool,
    /// Frame captured but not forwarded.
    pub dropped: bool,
    /// The frame carries (part of) a binary message: opcode 2, or a continuation of
    /// one. The API's `isBinary`.
    pub binary_message: bool,
    /// Frame frametap forwarded in place of a message a rule replaced (the
    /// original's frames are recorded as received, with `dropped`).
    pub modified: bool,
}

impl FrameRecord {
    /// The peer that sent the frame (frametap's own frames: the peer it wrote as).
    pub fn sender(&self) -> frametap_proto::Peer {
        frametap_proto::Peer::from_client(self.from_client)
    }
}

impl FrameRecord {
    /// This frame's id.
    pub fn id(&self) -> FrameId {
        FrameId::new(self.traffic, self.seq)
    }
}

/// A WebSocket connection was established (after the 101 response). JSON, written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsOpen {
    pub traffic: TrafficId,
    pub timestamp_ms: u64,
    pub url: String,
    pub client_address: String,
    pub server_address: String,
    pub subprotocol: Option<String>,
    pub extensions: Option<String>,
    /// permessage-deflate negotiated.
    pub deflate: bool,
}

/// A WebSocket connection ended. JSON, written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsClose {
    pub traffic: TrafficId,
    /// When the connection ended.
    pub timestamp_ms: u64,
    /// `"client"` or `"server"`: who sent the first close frame; `None` if nobody did.
    pub closed_by: Option<String>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    /// Frames the client sent (forwarded or dropped), as parsed on the wire.
    pub frames_from_client: u64,
    /// Frames the server sent (forwarded or dropped), as parsed on the wire.
    pub frames_from_server: u64,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    /// Why the connection ended abnormally, e.g. `"client reset"`, `"idle timeout"`.
    pub abnormal: Option<String>,
    /// Frames frametap wrote itself (injected messages, replacements, a close rule's
    /// close frames). With the two counts above: every frame recorded for the
    /// connection. `None` in records of agents from before this field.
    #[serde(default)]
    pub frames_from_frametap: Option<u64>,
}

/// Read model of a WebSocket connection: its [`WsOpen`] plus, once it ended, its
/// [`WsClose`]. While the connection is open, the close-side fields are `None` and the
/// frame/byte counters 0 (use the store's `frame_count` for the live frame count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsConnection {
    pub traffic: TrafficId,
    /// When the connection opened.
    pub timestamp_ms: u64,
    pub url: String,
    pub client_address: String,
    pub server_address: String,
    pub subprotocol: Option<String>,
    pub extensions: Option<String>,
    pub deflate: bool,
    /// `true` until a [`WsClose`] was recorded.
    pub open: bool,
    /// When the connection ended (`WsClose::timestamp_ms`).
    pub end_timestamp_ms: Option<u64>,
    pub closed_by: Option<String>,
    pub close_code: Option<u16>,
    pub close_reason: Option<String>,
    pub frames_from_client: u64,
    pub frames_from_server: u64,
    pub bytes_from_client: u64,
    pub bytes_from_server: u64,
    pub abnormal: Option<String>,
    /// [`WsClose::frames_from_frametap`].
    pub frames_from_frametap: Option<u64>,
}

impl WsConnection {
    /// Combines an open record with its close record, if any.
    pub fn new(open: WsOpen, close: Option<WsClose>) -> WsConnection {
        let mut c = WsConnection {
            traffic: open.traffic,
            timestamp_ms: open.timestamp_ms,
            url: open.url,
            client_address: open.client_address,
            server_address: open.server_address,
            subprotocol: open.subprotocol,
            extensions: open.extensions,
            deflate: open.deflate,
            open: true,
            end_timestamp_ms: None,
            closed_by: None,
            close_code: None,
            close_reason: None,
            frames_from_client: 0,
            frames_from_server: 0,
            bytes_from_client: 0,
            bytes_from_server: 0,
            abnormal: None,
            frames_from_frametap: None,
        };
        if let Some(close) = close {
            c.open = false;
            c.end_timestamp_ms = Some(close.timestamp_ms);
            c.closed_by = close.closed_by;
            c.close_code = close.close_code;
            c.close_reason = close.close_reason;
            c.frames_from_client = close.frames_from_client;
            c.frames_from_server = close.frames_from_server;
            c.bytes_from_client = close.bytes_from_client;
            c.bytes_from_server = close.bytes_from_server;
            c.abnormal = close.abnormal;
            c.frames_from_frametap = close.frames_from_frametap;
        }
        c
    }
}

/// Anything the agent writes.
// `TrafficEntry` is not boxed so that the variants match the documented interface
// (`Record::Traffic(entry)`); frames dominate, and a `Record` is ~370 bytes in queues.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Traffic(TrafficEntry),
    WsOpen(WsOpen),
    WsClose(WsClose),
    Frame(FrameRecord),
    TunnelEnd(TunnelEnd),
    Body(BodyChunk),
}

impl Record {
    /// The traffic entry / connection the record belongs to.
    pub fn traffic_id(&self) -> TrafficId {
        match self {
            Record::Traffic(t) => t.id,
            Record::WsOpen(o) => o.traffic,
            Record::WsClose(c) => c.traffic,
            Record::Frame(f) => f.traffic,
            Record::TunnelEnd(e) => e.traffic,
            Record::Body(b) => b.traffic,
        }
    }
}

impl From<BodyChunk> for Record {
    fn from(v: BodyChunk) -> Record {
        Record::Body(v)
    }
}

impl From<TrafficEntry> for Record {
    fn from(v: TrafficEntry) -> Record {
        Record::Traffic(v)
    }
}

impl From<WsOpen> for Record {
    fn from(v: WsOpen) -> Record {
        Record::WsOpen(v)
    }
}

impl From<WsClose> for Record {
    fn from(v: WsClose) -> Record {
        Record::WsClose(v)
    }
}

impl From<FrameRecord> for Record {
    fn from(v: FrameRecord) -> Record {
        Record::Frame(v)
    }
}

impl From<TunnelEnd> for Record {
    fn from(v: TunnelEnd) -> Record {
        Record::TunnelEnd(v)
    }
}

/// What the agent knows about a connection's origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// cgroup v2 path of the process, relative to the mount.
    pub cgroup: Option<String>,
    /// Inode of the process's network namespace.
    pub netns: Option<u64>,
    /// Container id, from the cgroup path.
    pub container_id: Option<String>,
    /// Its name, when the runtime's API told it.
    pub container_name: Option<String>,
    /// The agent's own replay of this recorded connection (no process captured).
    pub replay_of: Option<TrafficId>,
}

impl Origin {
    /// An empty traffic entry carrying this origin, to complete entries with
    /// (`..origin.entry_base()`).
    pub fn entry_base(&self) -> TrafficEntry {
        TrafficEntry {
            cgroup: self.cgroup.clone(),
            netns: self.netns,
            container_id: self.container_id.clone(),
            container_name: self.container_name.clone(),
            replay_of: self.replay_of,
            ..TrafficEntry::default()
        }
    }
}

/// Whether `name` is an HTTP token (RFC 9110), as a header name must be.
pub fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be written as an HTTP/1.1 header value (RFC 9110's field
/// value): visible characters, spaces, tabs and non-ASCII bytes; no other control
/// character (CR and LF would end the header).
pub fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}
