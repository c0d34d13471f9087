//! One upgraded WebSocket connection: frame records, and the message-level decision
//! point where rules drop, replace or close and where injected messages enter.
//!
//! Sans-IO like the rest of the session: bytes of one direction go in, records and
//! what to forward come out. Each direction ("stream", named by its sender) has a
//! parser and a gate:
//!
//! - With no rule for this connection, nothing to inject and nothing re-encoded,
//!   the read is forwarded as it came ([`Forward::AsIs`]): no copy, no delay.
//! - Otherwise the gate holds a data message's bytes until its last frame arrives,
//!   then asks the rules. Untouched messages go out byte for byte; control frames
//!   that arrived in the middle keep their place. A message larger than the hold
//!   limit is forwarded unmodified as it streams (rules see at most the limit).
//! - Injected messages go out only between messages, never inside another
//!   message's fragments.
//!
//! permessage-deflate: frametap compresses the messages it writes on their own
//! (no back-references). When the sender keeps its compression context across
//! messages, a dropped, replaced or injected message leaves the receiver's window
//! different from the sender's, so from then on that stream's compressed messages
//! are re-encoded (same content, new bytes). A message too large to re-encode then
//! closes the connection with 1009, since forwarding it would corrupt the stream.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | the connection's interface: feed, inject, outboxes, the end |
//! | [`gate`] | one direction: hold, release, pass through |
//! | [`decide`] | the drop / replace / close decision on a held message |
//! | [`encode`] | the frames frametap writes (and re-encodes) |
//! | [`shared`] | sequence numbers, close state, frame records |
//! | [`output`] | what a read produces: bytes to forward, outboxes |
mod decide;
mod encode;
mod gate;
mod output;
mod shared;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use frametap_model::{FrameRecord, Record, Refusal, TrafficId};
use frametap_proto::Peer;
use frametap_proto::ws::{self, WsDirection};

use self::gate::{Phase, Stream};
pub use self::output::{Forward, MaskKeys, Outbox};
use self::shared::Shared;
use crate::ending::FirstClose;
use crate::rules::{CompiledRule, ConnectionFacts, RuleBook};

pub struct WsSession {
    streams: [Stream; 2],
    shared: Shared,
    conn: ConnectionFacts,
    rules: Arc<RuleBook>,
    /// The rule book version `applicable` was filtered from.
    rules_version: Option<u64>,
    applicable: Vec<CompiledRule>,
}

/// Settings of a new WebSocket session.
pub struct WsSetup {
    pub traffic: TrafficId,
    pub conn: ConnectionFacts,
    pub deflate: Option<ws::DeflateConfig>,
    /// Extensions other than permessage-deflate were negotiated.
    pub foreign_extensions: bool,
    pub error: Option<String>,
    pub payload_cap: usize,
    pub rules: Arc<RuleBook>,
    pub mask_keys: MaskKeys,
}

impl WsSession {
    pub fn new(setup: WsSetup) -> Self {
        let stream = |sender: Peer| {
            let (proto_sender, takeover, bits) = match (sender, &setup.deflate) {
                (Peer::Client, Some(d)) => (
                    Peer::Client,
                    !d.client_no_context_takeover,
                    d.client_max_window_bits,
                ),
                (Peer::Server, Some(d)) => (
                    Peer::Server,
                    !d.server_no_context_takeover,
                    d.server_max_window_bits,
                ),
                (Peer::Client, None) => (Peer::Client, false, 15),
                (Peer::Server, None) => (Peer::Server, false, 15),
            };
            Stream {
                sender,
                parser: WsDirection::new(proto_sender, setup.deflate.clone(), setup.payload_cap)
                    .with_foreign_extensions(setup.foreign_extensions),
                events: Vec::new(),
                released: 0,
                held: Vec::new(),
                frame_start: 0,
                open_message: false,
                phase: Phase::Idle,
                held_records: Vec::new(),
                control_spans: Vec::new(),
                binary_message: false,
                pending: Vec::new(),
                deflater: None,
                deflate_bits: setup.deflate.as_ref().map(|_| bits),
                context_takeover: setup.deflate.is_some() && takeover,
                reencode: false,
                mask_keys: setup.mask_keys,
            }
        };
        Self {
            streams: [stream(Peer::Client), stream(Peer::Server)],
            shared: Shared {
                traffic: setup.traffic,
                next_seq: 1,
                payload_cap: setup.payload_cap,
                closing: false,
                close_back: None,
                first_close: None,
                error: setup.error,
                outbox: [Outbox::default(), Outbox::default()],
            },
            conn: setup.conn,
            rules: setup.rules,
            rules_version: None,
            applicable: Vec::new(),
        }
    }

    pub fn traffic(&self) -> TrafficId {
        self.shared.traffic
    }

    /// Bytes `side` sent. Appends the records they complete; says what to forward.
    pub fn feed(
        &mut self,
        side: Peer,
        bytes: &[u8],
        now_ms: u64,
        records: &mut Vec<Record>,
    ) -> Forward {
        if bytes.is_empty() {
            return Forward::AsIs;
        }
        self.refresh_rules();
        let index = side as usize;
        let stream = &mut self.streams[index];
        let gated = self.shared.closing || !self.applicable.is_empty() || stream.needs_gate();
        if !gated {
            stream.feed_direct(bytes, now_ms, &mut self.shared, records);
            return Forward::AsIs;
        }
        let out = stream.feed_gated(bytes, now_ms, &mut self.shared, &self.applicable, records);
        if let Some((sender, code, reason)) = self.shared.close_back.take() {
            // The sender of the closed message gets a close frame through the other
            // stream, unless that one is in the middle of a frame.
            let back = &mut self.streams[1 - sender as usize];
            back.abandon(records);
            if back.released == back.frame_start {
                let (bytes, record) = back.encode_close(&mut self.shared, code, &reason, now_ms);
                let outbox = &mut self.shared.outbox[sender as usize];
                outbox.bytes.extend_from_slice(&bytes);
                outbox.records.push(Record::Frame(record));
            }
        }
        Forward::Bytes(out)
    }

    /// Bytes that went out already, with the HTTP read that carried them: recorded only.
    pub fn feed_direct(
        &mut self,
        side: Peer,
        bytes: &[u8],
        now_ms: u64,
        records: &mut Vec<Record>,
    ) {
        if !bytes.is_empty() {
            self.streams[side as usize].feed_direct(bytes, now_ms, &mut self.shared, records);
        }
    }

    /// Sends a message to `to` (masked toward the server, compressed when
    /// negotiated), between messages of the stream going there. Returns the
    /// injected frame's sequence number.
    pub fn inject(
        &mut self,
        to: Peer,
        content: &[u8],
        is_binary: bool,
        now_ms: u64,
    ) -> Result<u64, (Refusal, String)> {
        if self.shared.closing || self.shared.first_close.is_some() {
            return Err((
                Refusal::Conflict,
                "the WebSocket connection is closing".into(),
            ));
        }
        if !is_binary && std::str::from_utf8(content).is_err() {
            return Err((
                Refusal::BadRequest,
                "a text message must be valid UTF-8 (send it as binary instead)".into(),
            ));
        }
        let stream = &mut self.streams[1 - to as usize];
        if stream.phase == Phase::Stopped {
            return Err((
                Refusal::Conflict,
                format!(
                    "the {} sent bytes that are not valid WebSocket frames; frametap no longer writes into this connection",
                    stream.sender.name()
                ),
            ));
        }
        let (bytes, record) = stream.encode(&mut self.shared, !is_binary, content, now_ms);
        let seq = record.seq;
        let record = FrameRecord {
            injected: true,
            ..record
        };
        if stream.context_takeover {
            stream.reencode = true;
        }
        if stream.at_message_boundary() {
            let outbox = &mut self.shared.outbox[to as usize];
            outbox.bytes.extend_from_slice(&bytes);
            outbox.records.push(Record::Frame(record));
        } else {
            stream.pending.push((bytes, record));
        }
        Ok(seq)
    }

    /// What must be written to `to` before anything else (then forgotten).
    pub fn take_outbox(&mut self, to: Peer) -> Option<Outbox> {
        let outbox = &mut self.shared.outbox[to as usize];
        (!outbox.is_empty()).then(|| std::mem::take(outbox))
    }

    pub fn has_outbox(&self, to: Peer) -> bool {
        !self.shared.outbox[to as usize].is_empty()
    }

    fn refresh_rules(&mut self) {
        let version = self.rules.version();
        if self.rules_version != Some(version) {
            self.applicable = self.rules.current().for_connection(&self.conn);
            self.rules_version = Some(version);
        }
    }

    /// Bytes `side` sent that are held back (a message waiting for its last frame,
    /// or a partial frame).
    pub fn held_len(&self, side: Peer) -> usize {
        self.streams[side as usize].held.len()
    }

    /// Stops holding what `side` sent: what is held goes out now and the rest of its
    /// message streams through unexamined, as for a message above the hold limit.
    /// HTTP/2 needs this when the sender's flow-control window is spent on the held
    /// bytes, since it could never send the message's end otherwise.
    pub fn stop_holding(&mut self, side: Peer, records: &mut Vec<Record>) -> Vec<u8> {
        let stream = &mut self.streams[side as usize];
        let mut out = Vec::new();
        if !stream.held.is_empty() && matches!(stream.phase, Phase::Idle | Phase::Holding) {
            stream.give_up(&mut out, records);
        }
        out
    }

    pub fn mid_message(&self) -> bool {
        self.streams.iter().any(|s| s.parser.mid_message())
    }

    pub fn first_close(&self) -> Option<&FirstClose> {
        self.shared.first_close.as_ref()
    }

    pub fn error(&self) -> Option<&String> {
        self.shared.error.as_ref()
    }

    /// Frames and wire bytes each sender sent.
    pub fn counts(&self, side: Peer) -> (u64, u64) {
        let parser = &self.streams[side as usize].parser;
        (parser.frames(), parser.wire_bytes())
    }

    /// Frames frametap wrote itself: injected messages, replacements, and the close
    /// frames of a close rule. Every sequence number goes to a frame a peer sent or
    /// to one of these.
    pub fn frametap_frames(&self) -> u64 {
        let given_out = self.shared.next_seq - 1;
        let from_peers: u64 = self.streams.iter().map(|s| s.parser.frames()).sum();
        given_out.saturating_sub(from_peers)
    }

    /// The connection is over: what was held or waiting to be written never went
    /// out, and is recorded so (`dropped`), so that every frame numbered is recorded.
    pub fn finish(&mut self, records: &mut Vec<Record>) {
        for stream in &mut self.streams {
            stream.abandon(records);
        }
        for outbox in &mut self.shared.outbox {
            records.extend(std::mem::take(outbox).records.into_iter().map(|r| match r {
                Record::Frame(f) => Record::Frame(FrameRecord { dropped: true, ..f }),
                other => other,
            }));
        }
    }
}
