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
use std::{borrow::Cow, sync::Arc};

use frametap_control::Refusal;
use frametap_proto::ws::{
    self, Deflater, Message, RecordedFrame, Sender, WsDirection, WsEvent, close_payload,
    encode_frame, encode_message,
};
use frametap_store::{FrameRecord, Record, TrafficId};

use super::session::Side;
use crate::rules::{Action, CompiledRule, ConnectionFacts, MessageFacts, RuleBook};

/// What to send on after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Forward {
    /// The bytes just read, unchanged.
    AsIs,
    /// These bytes instead (possibly none).
    Bytes(Vec<u8>),
}

/// Bytes (and their records) to write to a side outside the flow of the stream
/// going there: injected messages, and the close frame a close rule sends back.
#[derive(Debug, Default)]
pub struct Outbox {
    pub bytes: Vec<u8>,
    /// Persisted before `bytes` are written.
    pub records: Vec<Record>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between messages: a new data frame starts a held message.
    Idle,
    /// Holding the current message until its last frame.
    Holding,
    /// Part of the current frame or message went out already: forward as it comes
    /// until the message ends.
    Passing,
    /// The parser gave up on this stream (protocol error): bytes pass unexamined.
    Stopped,
}

/// One direction of the connection, named by its sender.
struct Stream {
    sender: Side,
    parser: WsDirection,
    events: Vec<WsEvent>,
    /// Stream offset up to which bytes were forwarded or dropped.
    released: u64,
    /// The bytes from `released` on (gated mode only).
    held: Vec<u8>,
    /// Where the next frame starts (the end of the last complete frame).
    frame_start: u64,
    /// A data message has started and its final frame has not arrived.
    open_message: bool,
    phase: Phase,
    /// Records of the held message's data frames, written when it is decided.
    held_records: Vec<FrameRecord>,
    /// Control frames that arrived inside the held message (stream offsets).
    control_spans: Vec<(u64, u64)>,
    /// Whether the message being sent is binary, for its continuation frames.
    binary_message: bool,
    /// Injected messages waiting for the current message to end.
    pending: Vec<(Vec<u8>, FrameRecord)>,
    /// Present when permessage-deflate was negotiated: what frametap writes is compressed.
    deflater: Option<Deflater>,
    /// The sender keeps its LZ77 window from message to message.
    context_takeover: bool,
    /// The receiver's window no longer matches the sender's: re-encode compressed messages.
    reencode: bool,
}

/// Facts shared by both streams.
struct Shared {
    traffic: TrafficId,
    next_seq: u64,
    payload_cap: usize,
    /// A close rule fired: nothing more is forwarded either way.
    closing: bool,
    /// A close rule fired on a message of this sender: the sender gets a close frame too.
    close_back: Option<(Side, u16, String)>,
    /// Who sent the first close frame ("client", "server", or "frametap"), code, reason.
    first_close: Option<(&'static str, Option<u16>, Option<String>)>,
    error: Option<String>,
    outbox: [Outbox; 2],
}

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
}

impl WsSession {
    pub fn new(setup: WsSetup) -> Self {
        let stream = |sender: Side| {
            let (proto_sender, takeover, bits) = match (sender, &setup.deflate) {
                (Side::Client, Some(d)) => (
                    Sender::Client,
                    !d.client_no_context_takeover,
                    d.client_max_window_bits,
                ),
                (Side::Server, Some(d)) => (
                    Sender::Server,
                    !d.server_no_context_takeover,
                    d.server_max_window_bits,
                ),
                (Side::Client, None) => (Sender::Client, false, 15),
                (Side::Server, None) => (Sender::Server, false, 15),
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
                deflater: setup.deflate.as_ref().map(|_| Deflater::new(bits)),
                context_takeover: setup.deflate.is_some() && takeover,
                reencode: false,
            }
        };
        Self {
            streams: [stream(Side::Client), stream(Side::Server)],
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
        side: Side,
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
        side: Side,
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
        to: Side,
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
    pub fn take_outbox(&mut self, to: Side) -> Option<Outbox> {
        let outbox = &mut self.shared.outbox[to as usize];
        (!outbox.is_empty()).then(|| std::mem::take(outbox))
    }

    pub fn has_outbox(&self, to: Side) -> bool {
        !self.shared.outbox[to as usize].is_empty()
    }

    fn refresh_rules(&mut self) {
        let version = self.rules.version();
        if self.rules_version != Some(version) {
            self.applicable = self.rules.current().for_connection(&self.conn);
            self.rules_version = Some(version);
        }
    }

    pub fn mid_message(&self) -> bool {
        self.streams.iter().any(|s| s.parser.mid_message())
    }

    pub fn first_close(&self) -> Option<&(&'static str, Option<u16>, Option<String>)> {
        self.shared.first_close.as_ref()
    }

    pub fn error(&self) -> Option<&String> {
        self.shared.error.as_ref()
    }

    /// Frames and wire bytes each sender sent.
    pub fn counts(&self, side: Side) -> (u64, u64) {
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

impl Shared {
    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The record of a frame the parser reported.
    fn record(
        &mut self,
        sender: Side,
        f: RecordedFrame,
        now_ms: u64,
        binary_message: &mut bool,
    ) -> FrameRecord {
        if f.opcode == 8 && self.first_close.is_none() {
            self.first_close = Some((sender.name(), f.close_code, f.close_reason.clone()));
        }
        if matches!(f.opcode, 1 | 2) {
            *binary_message = f.opcode == 2;
        }
        let binary = match f.opcode {
            0 => *binary_message,
            opcode => opcode == 2,
        };
        FrameRecord {
            traffic: self.traffic,
            seq: self.next_seq(),
            timestamp_ms: now_ms,
            from_client: sender == Side::Client,
            opcode: f.opcode,
            fin: f.fin,
            rsv: (u8::from(f.rsv1) << 2) | (u8::from(f.rsv2) << 1) | u8::from(f.rsv3),
            masked: f.masked,
            compressed: f.compressed,
            wire_len: f.wire_len,
            payload_len: f.payload_len,
            truncated: f.truncated,
            payload: f.payload,
            close_code: f.close_code,
            close_reason: f.close_reason,
            injected: false,
            dropped: false,
            binary_message: binary,
            modified: false,
        }
    }

    fn note_error(&mut self, sender: Side, error: ws::ProtocolError) {
        if self.error.is_none() {
            self.error = Some(format!(
                "{} sent an invalid WebSocket frame: {error}",
                sender.name()
            ));
        }
    }
}

impl Stream {
    fn needs_gate(&self) -> bool {
        !self.held.is_empty()
            || self.phase == Phase::Holding
            || self.reencode
            || !self.pending.is_empty()
    }

    /// Nothing of a message is out without the rest: an injected message may go now.
    fn at_message_boundary(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Holding)
    }

    /// The fast path: record, forward the read as it is.
    fn feed_direct(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        shared: &mut Shared,
        records: &mut Vec<Record>,
    ) {
        let mut events = std::mem::take(&mut self.events);
        self.parser.push(bytes, &mut events);
        let mut frame_index = 0;
        for event in events.drain(..) {
            match event {
                WsEvent::Frame(f) => {
                    if let Some(&end) = self.parser.frame_ends().get(frame_index) {
                        self.frame_start = end;
                    }
                    frame_index += 1;
                    self.track_message(&f);
                    let record = shared.record(self.sender, f, now_ms, &mut self.binary_message);
                    records.push(Record::Frame(record));
                }
                WsEvent::Message(_) => {}
                WsEvent::Error(e) => {
                    shared.note_error(self.sender, e);
                    self.phase = Phase::Stopped;
                }
            }
        }
        self.events = events;
        self.released += bytes.len() as u64;
        if self.phase != Phase::Stopped {
            self.phase = if self.released > self.frame_start || self.open_message {
                Phase::Passing
            } else {
                Phase::Idle
            };
        }
    }

    fn track_message(&mut self, f: &RecordedFrame) {
        if matches!(f.opcode, 0..=2) {
            self.open_message = !f.fin;
        }
    }

    /// The gated path: hold data messages until they are complete, then decide.
    fn feed_gated(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        shared: &mut Shared,
        rules: &[CompiledRule],
        records: &mut Vec<Record>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        self.held.extend_from_slice(bytes);
        let mut events = std::mem::take(&mut self.events);
        self.parser.push(bytes, &mut events);
        let mut frame_index = 0;
        for event in events.drain(..) {
            match event {
                WsEvent::Frame(f) => {
                    let end = self
                        .parser
                        .frame_ends()
                        .get(frame_index)
                        .copied()
                        .unwrap_or(self.frame_start);
                    frame_index += 1;
                    let start = std::mem::replace(&mut self.frame_start, end);
                    let data = matches!(f.opcode, 0..=2);
                    let starts_message = matches!(f.opcode, 1 | 2);
                    self.track_message(&f);
                    let mut record =
                        shared.record(self.sender, f, now_ms, &mut self.binary_message);
                    if shared.closing {
                        record.dropped = true;
                        records.push(Record::Frame(record));
                        self.discard_to(end);
                        continue;
                    }
                    match self.phase {
                        Phase::Passing | Phase::Stopped => {
                            self.release_to(end, &mut out);
                            records.push(Record::Frame(record));
                            if self.phase == Phase::Passing && !self.open_message {
                                self.phase = Phase::Idle;
                            }
                        }
                        Phase::Idle if starts_message => {
                            self.phase = Phase::Holding;
                            self.held_records.push(record);
                        }
                        Phase::Idle => {
                            self.release_to(end, &mut out);
                            records.push(Record::Frame(record));
                        }
                        Phase::Holding if data => self.held_records.push(record),
                        Phase::Holding => {
                            self.control_spans.push((start, end));
                            records.push(Record::Frame(record));
                        }
                    }
                }
                WsEvent::Message(message) => {
                    if self.phase == Phase::Holding && !shared.closing {
                        self.decide(message, now_ms, shared, rules, &mut out, records);
                    }
                }
                WsEvent::Error(e) => {
                    shared.note_error(self.sender, e);
                    self.stop(&mut out, records);
                }
            }
        }
        self.events = events;
        let parsed_end = self.released + self.held.len() as u64;
        if shared.closing {
            self.abandon(records);
        } else if matches!(self.phase, Phase::Passing | Phase::Stopped) {
            self.release_to(parsed_end, &mut out);
        } else if self.held.len() > shared.payload_cap {
            if self.reencode {
                let reason = "message too large for frametap to re-encode";
                self.close_both(1009, reason, now_ms, shared, &mut out, records);
            } else {
                // Too large to hold: it goes out as it comes, unexamined.
                self.give_up(&mut out, records);
            }
        }
        if self.at_message_boundary() && !self.pending.is_empty() && !shared.closing {
            for (bytes, record) in self.pending.drain(..) {
                out.extend_from_slice(&bytes);
                records.push(Record::Frame(record));
            }
        }
        out
    }

    /// The held message is complete: forward, drop, replace, or close.
    fn decide(
        &mut self,
        message: Message,
        now_ms: u64,
        shared: &mut Shared,
        rules: &[CompiledRule],
        out: &mut Vec<u8>,
        records: &mut Vec<Record>,
    ) {
        let end = self.frame_start;
        let facts = MessageFacts {
            from_client: self.sender == Side::Client,
            is_text: message.is_text,
            content: &message.content,
        };
        match rules.iter().find(|r| r.matches(&facts)).map(|r| &r.action) {
            None => self.pass(message, end, now_ms, shared, out, records),
            Some(Action::Drop) => {
                self.drop_held(end, out, records);
                if message.compressed && self.context_takeover {
                    self.reencode = true;
                }
            }
            Some(Action::Replace {
                pattern,
                replacement,
            }) => {
                let text = (!message.truncated)
                    .then(|| std::str::from_utf8(&message.content).ok())
                    .flatten();
                let Some(Cow::Owned(new)) =
                    text.map(|t| pattern.replace_all(t, replacement.as_str()))
                else {
                    // No match (or nothing we can rewrite): byte for byte as it came.
                    return self.pass(message, end, now_ms, shared, out, records);
                };
                self.drop_held(end, out, records);
                let (bytes, record) = self.encode(shared, true, new.as_bytes(), now_ms);
                out.extend_from_slice(&bytes);
                records.push(Record::Frame(FrameRecord {
                    modified: true,
                    ..record
                }));
                if self.context_takeover {
                    self.reencode = true;
                }
            }
            Some(Action::Close { code, reason }) => {
                let (code, reason) = (*code, reason.clone());
                self.close_both(code, &reason, now_ms, shared, out, records);
            }
        }
    }

    /// Forwards the held message unchanged (re-encoded when the window diverged).
    fn pass(
        &mut self,
        message: Message,
        end: u64,
        now_ms: u64,
        shared: &mut Shared,
        out: &mut Vec<u8>,
        records: &mut Vec<Record>,
    ) {
        if self.reencode && message.compressed {
            if message.truncated {
                let reason = "message too large for frametap to re-encode";
                return self.close_both(1009, reason, now_ms, shared, out, records);
            }
            self.emit_controls(out);
            self.discard_to(end);
            // The peer's frames are what happened; the re-encoding is not recorded.
            let (bytes, _) = self.message_bytes(message.is_text, &message.content);
            out.extend_from_slice(&bytes);
            records.extend(self.held_records.drain(..).map(Record::Frame));
        } else {
            self.release_to(end, out);
            records.extend(self.held_records.drain(..).map(Record::Frame));
        }
        self.control_spans.clear();
        self.phase = Phase::Idle;
    }

    /// The held message's data frames are not forwarded; its control frames are.
    fn drop_held(&mut self, end: u64, out: &mut Vec<u8>, records: &mut Vec<Record>) {
        self.emit_controls(out);
        self.discard_to(end);
        records.extend(
            self.held_records
                .drain(..)
                .map(|r| Record::Frame(FrameRecord { dropped: true, ..r })),
        );
        self.control_spans.clear();
        self.phase = Phase::Idle;
    }

    /// A close rule (or an impossible re-encode): the receiver gets a close frame
    /// now, the sender through the other stream; nothing else moves afterwards.
    fn close_both(
        &mut self,
        code: u16,
        reason: &str,
        now_ms: u64,
        shared: &mut Shared,
        out: &mut Vec<u8>,
        records: &mut Vec<Record>,
    ) {
        let end = self.frame_start.max(self.released);
        self.drop_held(end, out, records);
        let (bytes, record) = self.encode_close(shared, code, reason, now_ms);
        out.extend_from_slice(&bytes);
        records.push(Record::Frame(record));
        if shared.first_close.is_none() {
            shared.first_close = Some(("frametap", Some(code), Some(reason.to_string())));
        }
        shared.closing = true;
        shared.close_back = Some((self.sender, code, reason.to_string()));
        self.abandon(records);
    }

    fn emit_controls(&mut self, out: &mut Vec<u8>) {
        for &(start, end) in &self.control_spans {
            let from = (start - self.released) as usize;
            let to = (end - self.released) as usize;
            out.extend_from_slice(&self.held[from..to]);
        }
    }

    /// Forwards held bytes up to stream offset `end`.
    fn release_to(&mut self, end: u64, out: &mut Vec<u8>) {
        let n = (end.saturating_sub(self.released) as usize).min(self.held.len());
        out.extend_from_slice(&self.held[..n]);
        self.held.drain(..n);
        self.released += n as u64;
    }

    /// Forgets held bytes up to stream offset `end` (dropped).
    fn discard_to(&mut self, end: u64) {
        let n = (end.saturating_sub(self.released) as usize).min(self.held.len());
        self.held.drain(..n);
        self.released += n as u64;
    }

    /// Closing: whatever is held is recorded as dropped and never sent, and so are
    /// injected messages still waiting (their sequence numbers were given out, so
    /// their records keep the connection's numbering whole).
    fn abandon(&mut self, records: &mut Vec<Record>) {
        records.extend(
            self.held_records
                .drain(..)
                .map(|r| Record::Frame(FrameRecord { dropped: true, ..r })),
        );
        self.released += self.held.len() as u64;
        self.held.clear();
        self.control_spans.clear();
        records.extend(
            self.pending
                .drain(..)
                .map(|(_, r)| Record::Frame(FrameRecord { dropped: true, ..r })),
        );
    }

    /// The message outgrew the hold limit: send what is held, then stream the rest.
    fn give_up(&mut self, out: &mut Vec<u8>, records: &mut Vec<Record>) {
        let all = self.released + self.held.len() as u64;
        self.release_to(all, out);
        records.extend(self.held_records.drain(..).map(Record::Frame));
        self.control_spans.clear();
        self.phase = if self.released > self.frame_start || self.open_message {
            Phase::Passing
        } else {
            Phase::Idle
        };
    }

    /// The parser failed: from here on bytes pass unexamined.
    fn stop(&mut self, out: &mut Vec<u8>, records: &mut Vec<Record>) {
        let all = self.released + self.held.len() as u64;
        self.release_to(all, out);
        records.extend(self.held_records.drain(..).map(Record::Frame));
        self.control_spans.clear();
        self.phase = Phase::Stopped;
    }

    /// A whole message from this stream's sender, as frametap writes it, and its record.
    fn encode(
        &mut self,
        shared: &mut Shared,
        is_text: bool,
        content: &[u8],
        now_ms: u64,
    ) -> (Vec<u8>, FrameRecord) {
        let (bytes, mask) = self.message_bytes(is_text, content);
        let compressed = self.deflater.is_some();
        let stored = content.len().min(shared.payload_cap);
        let record = FrameRecord {
            traffic: shared.traffic,
            seq: shared.next_seq(),
            timestamp_ms: now_ms,
            from_client: self.sender == Side::Client,
            opcode: if is_text { 1 } else { 2 },
            fin: true,
            rsv: if compressed { 4 } else { 0 },
            masked: mask.is_some(),
            compressed,
            wire_len: wire_payload_len(&bytes),
            payload_len: content.len() as u64,
            truncated: stored < content.len(),
            payload: content[..stored].to_vec(),
            close_code: None,
            close_reason: None,
            injected: false,
            dropped: false,
            binary_message: !is_text,
            modified: false,
        };
        (bytes, record)
    }

    /// The wire bytes of a whole message from this stream's sender, and its mask.
    fn message_bytes(&mut self, is_text: bool, content: &[u8]) -> (Vec<u8>, Option<[u8; 4]>) {
        let mask = self.mask();
        let bytes = encode_message(is_text, content, mask, self.deflater.as_mut());
        (bytes, mask)
    }

    /// A close frame from this stream's sender, as frametap writes it.
    fn encode_close(
        &mut self,
        shared: &mut Shared,
        code: u16,
        reason: &str,
        now_ms: u64,
    ) -> (Vec<u8>, FrameRecord) {
        let payload = close_payload(code, reason);
        let mask = self.mask();
        let bytes = encode_frame(true, false, 8, mask, &payload);
        let record = FrameRecord {
            traffic: shared.traffic,
            seq: shared.next_seq(),
            timestamp_ms: now_ms,
            from_client: self.sender == Side::Client,
            opcode: 8,
            fin: true,
            rsv: 0,
            masked: mask.is_some(),
            compressed: false,
            wire_len: payload.len() as u64,
            payload_len: payload.len() as u64,
            truncated: false,
            close_code: Some(code),
            close_reason: Some(String::from_utf8_lossy(&payload[2..]).into_owned()),
            payload,
            injected: true,
            dropped: false,
            binary_message: false,
            modified: false,
        };
        (bytes, record)
    }

    /// Frames toward the server are masked with a fresh key (RFC 6455 5.3).
    fn mask(&self) -> Option<[u8; 4]> {
        (self.sender == Side::Client).then(|| {
            let mut key = [0u8; 4];
            // A predictable key only weakens cache-poisoning defences of old proxies.
            if getrandom::fill(&mut key).is_err() {
                key = (std::process::id() ^ 0x5a5a_a5a5).to_be_bytes();
            }
            key
        })
    }
}

/// Payload length of a frame frametap encoded (what follows its header).
fn wire_payload_len(frame: &[u8]) -> u64 {
    let masked = frame.get(1).is_some_and(|b| b & 0x80 != 0);
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    } + if masked { 4 } else { 0 };
    frame.len().saturating_sub(header) as u64
}

#[cfg(test)]
mod tests {
    use frametap_control::Rule;

    use super::*;

    const CAP: usize = 1 << 16;

    fn session(rules: &[&str], deflate: Option<ws::DeflateConfig>) -> (WsSession, Arc<RuleBook>) {
        let book = Arc::new(
            RuleBook::new(
                rules
                    .iter()
                    .map(|r| serde_json::from_str::<Rule>(r).unwrap())
                    .collect(),
            )
            .unwrap(),
        );
        let ws = WsSession::new(WsSetup {
            traffic: TrafficId(9),
            conn: ConnectionFacts {
                host: "chat.test".into(),
                path: "/ws".into(),
            },
            deflate,
            foreign_extensions: false,
            error: None,
            payload_cap: CAP,
            rules: Arc::clone(&book),
        });
        (ws, book)
    }

    /// Feeds `bytes` in reads of `chunk`; returns what was forwarded and the records.
    fn feed(
        ws: &mut WsSession,
        side: Side,
        bytes: &[u8],
        chunk: usize,
    ) -> (Vec<u8>, Vec<FrameRecord>) {
        let mut out = Vec::new();
        let mut records = Vec::new();
        for piece in bytes.chunks(chunk) {
            match ws.feed(side, piece, 1, &mut records) {
                Forward::AsIs => out.extend_from_slice(piece),
                Forward::Bytes(b) => out.extend(b),
            }
        }
        (out, frames(records))
    }

    fn frames(records: Vec<Record>) -> Vec<FrameRecord> {
        records
            .into_iter()
            .filter_map(|r| match r {
                Record::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// What a receiver makes of `bytes`: its messages (and any protocol error).
    fn received(sender: Sender, deflate: Option<ws::DeflateConfig>, bytes: &[u8]) -> Vec<WsEvent> {
        let mut parser = WsDirection::new(sender, deflate, 1 << 24);
        let mut events = Vec::new();
        parser.push(bytes, &mut events);
        events
            .into_iter()
            .filter(|e| !matches!(e, WsEvent::Frame(f) if f.opcode < 8))
            .collect()
    }

    fn texts(events: &[WsEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                WsEvent::Message(m) => String::from_utf8_lossy(&m.content).into_owned(),
                WsEvent::Frame(f) => format!("<opcode {}>", f.opcode),
                WsEvent::Error(e) => format!("<error {e}>"),
            })
            .collect()
    }

    fn client_text(fin: bool, opcode: u8, text: &str) -> Vec<u8> {
        encode_frame(fin, false, opcode, Some([1, 2, 3, 4]), text.as_bytes())
    }

    #[test]
    fn without_rules_reads_go_out_as_they_came() {
        let (mut ws, _) = session(&[], None);
        let bytes = [client_text(true, 1, "hello"), client_text(true, 1, "again")].concat();
        let mut records = Vec::new();
        assert_eq!(
            ws.feed(Side::Client, &bytes[..9], 1, &mut records),
            Forward::AsIs
        );
        assert_eq!(
            ws.feed(Side::Client, &bytes[9..], 1, &mut records),
            Forward::AsIs
        );
        assert_eq!(frames(records).len(), 2);
    }

    #[test]
    fn untouched_messages_stay_byte_identical_with_rules_on() {
        let (mut ws, _) = session(&[r#"{"contains":"secret","action":{"kind":"drop"}}"#], None);
        // A fragmented message with a ping between its fragments, then a plain one.
        let bytes = [
            client_text(false, 1, "frag"),
            encode_frame(true, false, 9, Some([5, 5, 5, 5]), b"p"),
            client_text(true, 0, "mented"),
            client_text(true, 1, "plain"),
        ]
        .concat();
        for chunk in [1, 3, 7, bytes.len()] {
            let (mut ws, _) = session(&[r#"{"contains":"secret","action":{"kind":"drop"}}"#], None);
            let (out, records) = feed(&mut ws, Side::Client, &bytes, chunk);
            assert_eq!(out, bytes, "chunk {chunk}");
            assert_eq!(records.len(), 4);
            assert!(
                records
                    .iter()
                    .all(|r| !r.dropped && !r.injected && !r.modified)
            );
            let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
            seqs.sort();
            assert_eq!(seqs, [1, 2, 3, 4]);
        }
        let _ = feed(&mut ws, Side::Client, &bytes, 5);
    }

    #[test]
    fn drop_keeps_the_control_frames_of_the_message() {
        let (mut ws, _) = session(
            &[r#"{"direction":"to-server","contains":"secret","action":{"kind":"drop"}}"#],
            None,
        );
        let ping = encode_frame(true, false, 9, Some([5, 5, 5, 5]), b"p");
        let bytes = [
            client_text(false, 1, "my sec"),
            ping.clone(),
            client_text(true, 0, "ret"),
            client_text(true, 1, "fine"),
        ]
        .concat();
        let (out, records) = feed(&mut ws, Side::Client, &bytes, 4);
        assert_eq!(out, [ping, client_text(true, 1, "fine")].concat());
        let dropped: Vec<u8> = records
            .iter()
            .filter(|r| r.dropped)
            .map(|r| r.opcode)
            .collect();
        assert_eq!(dropped, [1, 0]);
        // The rule is for client messages only.
        let server = encode_frame(true, false, 1, None, b"secret");
        let (out, _) = feed(&mut ws, Side::Server, &server, 100);
        assert_eq!(out, server);
    }

    #[test]
    fn replace_reframes_and_records_both() {
        let (mut ws, _) = session(
            &[r#"{"action":{"kind":"replace","pattern":"pass(word)?","replacement":"****"}}"#],
            None,
        );
        let bytes = [
            client_text(false, 1, "my pass"),
            client_text(true, 0, "word is x"),
        ]
        .concat();
        let (out, records) = feed(&mut ws, Side::Client, &bytes, 3);
        assert_eq!(
            texts(&received(Sender::Client, None, &out)),
            ["my **** is x"]
        );
        assert_eq!(out[1] & 0x80, 0x80, "masked toward the server");
        let modified: Vec<_> = records.iter().filter(|r| r.modified).collect();
        assert_eq!(modified.len(), 1);
        assert_eq!(modified[0].payload, b"my **** is x");
        assert!(modified[0].masked && modified[0].from_client && !modified[0].dropped);
        assert_eq!(records.iter().filter(|r| r.dropped).count(), 2);
        // No match: the original bytes.
        let other = client_text(true, 1, "nothing to hide");
        assert_eq!(feed(&mut ws, Side::Client, &other, 2).0, other);
    }

    fn deflate_session(rules: &[&str], config: ws::DeflateConfig) -> WsSession {
        session(rules, Some(config)).0
    }

    /// Compressed messages as a real server sends them (context kept across messages).
    fn compressed_stream(messages: &[&str]) -> Vec<u8> {
        let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
        let mut bytes = Vec::new();
        for m in messages {
            let mut payload = Vec::with_capacity(m.len() + 64);
            compress
                .compress_vec(m.as_bytes(), &mut payload, flate2::FlushCompress::Sync)
                .unwrap();
            payload.truncate(payload.len() - 4);
            bytes.extend(encode_frame(true, true, 1, None, &payload));
        }
        bytes
    }

    #[test]
    fn replace_on_deflate_with_context_takeover_re_encodes_what_follows() {
        let config = ws::DeflateConfig::default();
        let mut ws = deflate_session(
            &[r#"{"action":{"kind":"replace","pattern":"secret","replacement":"XXXX"}}"#],
            config.clone(),
        );
        let messages = [
            "hello secret world",
            "hello secret world again",
            "hello world hello world",
        ];
        let bytes = compressed_stream(&messages);
        let (out, records) = feed(&mut ws, Side::Server, &bytes, 5);
        // The receiver, keeping its window, reads every message correctly.
        assert_eq!(
            texts(&received(Sender::Server, Some(config), &out)),
            [
                "hello XXXX world",
                "hello XXXX world again",
                "hello world hello world"
            ]
        );
        let modified: Vec<_> = records.iter().filter(|r| r.modified).collect();
        assert_eq!(modified.len(), 2);
        assert!(modified.iter().all(|r| r.compressed && r.rsv == 4));
        // The third message was re-encoded, not recorded twice.
        assert_eq!(records.len(), 5);
    }

    #[test]
    fn drop_on_deflate_without_context_takeover_leaves_the_rest_untouched() {
        let config = ws::DeflateConfig {
            server_no_context_takeover: true,
            ..ws::DeflateConfig::default()
        };
        let mut ws = deflate_session(
            &[r#"{"contains":"drop me","action":{"kind":"drop"}}"#],
            config.clone(),
        );
        let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
        let mut frame = |text: &str| {
            compress.reset();
            let mut payload = Vec::with_capacity(text.len() + 64);
            compress
                .compress_vec(text.as_bytes(), &mut payload, flate2::FlushCompress::Sync)
                .unwrap();
            payload.truncate(payload.len() - 4);
            encode_frame(true, true, 1, None, &payload)
        };
        let (a, b, c) = (
            frame("keep one"),
            frame("please drop me"),
            frame("keep two"),
        );
        let (out, _) = feed(
            &mut ws,
            Side::Server,
            &[a.clone(), b, c.clone()].concat(),
            1000,
        );
        assert_eq!(out, [a, c].concat());
    }

    #[test]
    fn close_rule_closes_both_sides_and_stops_forwarding() {
        let (mut ws, _) = session(
            &[r#"{"contains":"bye","action":{"kind":"close","code":4001,"reason":"rule"}}"#],
            None,
        );
        let (out, records) = feed(&mut ws, Side::Client, &client_text(true, 1, "say bye"), 100);
        let events = received(Sender::Client, None, &out);
        let WsEvent::Frame(close) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!((close.opcode, close.close_code), (8, Some(4001)));
        assert!(records.iter().any(|r| r.dropped && r.opcode == 1));
        assert!(
            records
                .iter()
                .any(|r| r.injected && r.opcode == 8 && r.from_client)
        );
        // The client gets a close frame too, unmasked, through the outbox.
        let outbox = ws
            .take_outbox(Side::Client)
            .expect("a close for the client");
        let events = received(Sender::Server, None, &outbox.bytes);
        assert!(
            matches!(&events[0], WsEvent::Frame(f) if f.opcode == 8 && f.close_code == Some(4001))
        );
        assert_eq!(ws.first_close().map(|c| c.0), Some("frametap"));
        // Nothing more moves, either way; it is all recorded as dropped.
        let (out, records) = feed(
            &mut ws,
            Side::Server,
            &encode_frame(true, false, 1, None, b"late"),
            3,
        );
        assert!(out.is_empty());
        assert!(records.iter().all(|r| r.dropped));
        assert!(ws.inject(Side::Client, b"x", false, 1).is_err());
    }

    #[test]
    fn inject_waits_for_the_end_of_a_fragmented_message() {
        let (mut ws, _) = session(&[], None);
        let first = client_text(false, 1, "part one, ");
        let (out, _) = feed(&mut ws, Side::Client, &first, 100);
        assert_eq!(out, first);
        let seq = ws.inject(Side::Server, b"injected", false, 1).unwrap();
        assert!(
            ws.take_outbox(Side::Server).is_none(),
            "not inside the message"
        );
        let last = client_text(true, 0, "part two");
        let (out, records) = feed(&mut ws, Side::Client, &last, 100);
        let stream = [first, out].concat();
        assert_eq!(
            texts(&received(Sender::Client, None, &stream)),
            ["part one, part two", "injected"]
        );
        let injected = records.iter().find(|r| r.injected).unwrap();
        assert_eq!((injected.seq, injected.from_client), (seq, true));
        // Between messages it goes out at once, through the outbox.
        let seq2 = ws.inject(Side::Client, &[0, 1, 2], true, 1).unwrap();
        assert!(seq2 > seq);
        let outbox = ws.take_outbox(Side::Client).unwrap();
        let events = received(Sender::Server, None, &outbox.bytes);
        assert!(matches!(&events[0], WsEvent::Message(m) if !m.is_text && m.content == [0, 1, 2]));
        assert!(
            matches!(&outbox.records[0], Record::Frame(f) if f.injected && !f.from_client && f.binary_message)
        );
        assert!(
            ws.inject(Side::Client, &[0xff], false, 1).is_err(),
            "text must be UTF-8"
        );
    }

    #[test]
    fn compressed_inject_keeps_the_receiver_in_step() {
        let config = ws::DeflateConfig::default();
        let mut ws = deflate_session(&[], config.clone());
        let bytes = compressed_stream(&["repeat repeat repeat", "repeat repeat repeat"]);
        // Right after the first message: the injected one goes out at once.
        let half = compressed_stream(&["repeat repeat repeat"]).len();
        let (out1, _) = feed(&mut ws, Side::Server, &bytes[..half], 1000);
        ws.inject(Side::Client, b"from frametap", false, 1).unwrap();
        let outbox = ws.take_outbox(Side::Client).unwrap();
        let (out2, _) = feed(&mut ws, Side::Server, &bytes[half..], 1000);
        let stream = [out1, outbox.bytes, out2].concat();
        assert_eq!(
            texts(&received(Sender::Server, Some(config), &stream)),
            [
                "repeat repeat repeat",
                "from frametap",
                "repeat repeat repeat"
            ]
        );
    }

    #[test]
    fn rules_added_mid_message_start_at_the_next_message() {
        let (mut ws, book) = session(&[], None);
        let first = client_text(false, 1, "secret ");
        assert_eq!(feed(&mut ws, Side::Client, &first, 100).0, first);
        book.add(
            serde_json::from_str(r#"{"contains":"secret","action":{"kind":"drop"}}"#).unwrap(),
        )
        .unwrap();
        let rest = [
            client_text(true, 0, "tail"),
            client_text(true, 1, "secret two"),
        ]
        .concat();
        let (out, records) = feed(&mut ws, Side::Client, &rest, 3);
        assert_eq!(out, client_text(true, 0, "tail"));
        assert_eq!(records.iter().filter(|r| r.dropped).count(), 1);
        // Removed again: forwarded as is.
        assert!(book.delete("r1"));
        let third = client_text(true, 1, "secret three");
        assert_eq!(feed(&mut ws, Side::Client, &third, 100).0, third);
    }

    #[test]
    fn messages_over_the_hold_limit_stream_through_unexamined() {
        let (mut ws, _) = session(&[r#"{"contains":"x","action":{"kind":"drop"}}"#], None);
        let big = "x".repeat(CAP * 3);
        let bytes = [client_text(true, 1, &big), client_text(true, 1, "x small")].concat();
        let (out, records) = feed(&mut ws, Side::Client, &bytes, 4096);
        assert_eq!(out, client_text(true, 1, &big));
        assert_eq!(records.iter().filter(|r| r.dropped).count(), 1);
    }

    #[test]
    fn garbage_stops_the_gate_and_passes_everything() {
        let (mut ws, _) = session(&[r#"{"action":{"kind":"drop"}}"#], None);
        // Unmasked client frame: a protocol error.
        let bytes = [
            encode_frame(true, false, 1, None, b"bad"),
            b"more junk".to_vec(),
        ]
        .concat();
        let (out, _) = feed(&mut ws, Side::Client, &bytes, 2);
        assert_eq!(out, bytes);
        assert!(ws.error().is_some());
        assert!(ws.inject(Side::Server, b"x", false, 1).is_err());
    }
}
