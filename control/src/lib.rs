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

use frametap_model::codec::{self, CodecError};
#[cfg(feature = "openapi")]
pub use frametap_model::rules::raw_schema;
pub use frametap_model::rules::{HOST_PATTERN, MAX_CLOSE_REASON, MAX_RULE_ID, RULE_ID_PATTERN};
pub use frametap_model::{InjectDirection, MessageType, Refusal, Rule, RuleAction, rule_host};
use frametap_model::{
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
    /// Play a recorded conversation again. Answered once the server accepted the
    /// handshake ([`Reply::Replay`]) or refused it ([`Refusal::Upstream`]).
    Replay { plan: ReplayPlan },
    /// The replays the agent knows (running, and the last ones that ended).
    Replays,
    /// Stop a running replay (its connection is closed, and recorded so).
    CancelReplay { id: String },
}

/// What the agent plays again: the API plans it from the recording, so the agent
/// needs only the network and the recorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPlan {
    /// Traffic id of the connection played again.
    pub original: String,
    /// `ws://` or `wss://` URL shown for the target.
    pub url: String,
    /// Where to connect: `ip:port`, or `name:port` to resolve.
    pub address: String,
    /// TLS (`wss`), verified as the agent's upstream legs are, for `server_name`.
    pub tls: bool,
    pub server_name: String,
    /// The handshake's `Host` and request target.
    pub host: String,
    pub path: String,
    /// The original request's headers (the client's own handshake headers are
    /// written anew), with the user's changes.
    pub headers: Vec<(String, String)>,
    /// Offer permessage-deflate (the original negotiated it).
    pub deflate: bool,
    /// The client's messages, in order.
    pub messages: Vec<ReplayMessage>,
    /// After the last message: how long to wait for the server before closing (ms).
    pub linger_ms: u64,
}

/// One client message of a [`ReplayPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayMessage {
    /// The recorded message it replays (its id).
    pub original: String,
    pub is_binary: bool,
    /// The content, base64.
    pub payload: String,
    /// How long to wait after the previous message (or the handshake), ms.
    pub delay_ms: u64,
    /// Send only once the server has sent this many messages (as it had in the
    /// original at this point), or after `delay_ms` more if it never does.
    pub after_server_messages: Option<u64>,
}

/// Where a replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Sending the client's messages.
    Running,
    /// Every message sent, and the connection closed.
    Done,
    /// The server refused, or the connection failed (see `error`).
    Failed,
    /// Stopped by `DELETE`.
    Cancelled,
}

/// A replay's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// The replay's id (for `GET` and `DELETE /api/replays/{id}`).
    pub id: String,
    /// The connection played again (`replayOf` of the new one).
    pub replay_of: String,
    /// The new connection, recorded like any capture: its traffic entry id (`null`
    /// until the server accepted the handshake).
    pub traffic_id: Option<String>,
    /// Where it was played.
    pub url: String,
    pub state: ReplayState,
    /// Client messages to send, and sent so far.
    pub messages_total: u64,
    pub messages_sent: u64,
    /// Messages the server has sent.
    pub server_messages: u64,
    /// Unix milliseconds.
    pub started_at: u64,
    pub ended_at: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
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
    /// A replay, as it is now.
    Replay(ReplayStatus),
    /// Every replay the agent knows, newest first.
    Replays(Vec<ReplayStatus>),
    /// The request was refused for a reason the caller can act on.
    Refused {
        reason: Refusal,
        message: String,
    },
    /// The request was understood but failed; the text says why.
    Error(String),
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
mod tests;
