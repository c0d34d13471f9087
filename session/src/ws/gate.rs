//! The gate of one direction: the bytes its sender sent go in, what goes on to the
//! receiver comes out. Without rules the read passes as it came (and is only
//! recorded); with rules a data message is held until its last frame arrives and
//! then decided ([`super::decide`]); control frames that arrive in between keep
//! their place. The stream offsets (`released`, `frame_start`) say which bytes went
//! out, which are held, and where the next frame starts.
use frametap_model::{FrameRecord, Record};
use frametap_proto::Peer;
use frametap_proto::ws::{Deflater, RecordedFrame, WsDirection, WsEvent};

use super::shared::Shared;
use crate::rules::CompiledRule;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) struct Stream {
    pub(super) sender: Peer,
    pub(super) parser: WsDirection,
    pub(super) events: Vec<WsEvent>,
    /// Stream offset up to which bytes were forwarded or dropped.
    pub(super) released: u64,
    /// The bytes from `released` on (gated mode only).
    pub(super) held: Vec<u8>,
    /// Where the next frame starts (the end of the last complete frame).
    pub(super) frame_start: u64,
    /// A data message has started and its final frame has not arrived.
    pub(super) open_message: bool,
    pub(super) phase: Phase,
    /// Records of the held message's data frames, written when it is decided.
    pub(super) held_records: Vec<FrameRecord>,
    /// Control frames that arrived inside the held message (stream offsets).
    pub(super) control_spans: Vec<(u64, u64)>,
    /// Whether the message being sent is binary, for its continuation frames.
    pub(super) binary_message: bool,
    /// Injected messages waiting for the current message to end.
    pub(super) pending: Vec<(Vec<u8>, FrameRecord)>,
    /// Present when permessage-deflate was negotiated: what frametap writes is compressed.
    pub(super) deflater: Option<Deflater>,
    /// The sender's window bits when permessage-deflate was negotiated. The
    /// compressor (a quarter megabyte of zlib state) is made on first use only.
    pub(super) deflate_bits: Option<u8>,
    /// The sender keeps its LZ77 window from message to message.
    pub(super) context_takeover: bool,
    /// The receiver's window no longer matches the sender's: re-encode compressed messages.
    pub(super) reencode: bool,
    /// Masking keys of the frames frametap writes from the client.
    pub(super) mask_keys: super::output::MaskKeys,
}

impl Stream {
    pub(super) fn needs_gate(&self) -> bool {
        !self.held.is_empty()
            || self.phase == Phase::Holding
            || self.reencode
            || !self.pending.is_empty()
    }

    /// Nothing of a message is out without the rest: an injected message may go now.
    pub(super) fn at_message_boundary(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Holding)
    }

    /// The fast path: record, forward the read as it is.
    pub(super) fn feed_direct(
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

    pub(super) fn track_message(&mut self, f: &RecordedFrame) {
        if matches!(f.opcode, 0..=2) {
            self.open_message = !f.fin;
        }
    }

    /// The gated path: hold data messages until they are complete, then decide.
    pub(super) fn feed_gated(
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
                                // Injected while this message passed: they go now,
                                // before any message that comes after.
                                self.flush_pending(&mut out, records);
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
        if self.at_message_boundary() && !shared.closing {
            self.flush_pending(&mut out, records);
        }
        out
    }

    pub(super) fn emit_controls(&mut self, out: &mut Vec<u8>) {
        for &(start, end) in &self.control_spans {
            let from = (start - self.released) as usize;
            let to = (end - self.released) as usize;
            out.extend_from_slice(&self.held[from..to]);
        }
    }

    /// Injected messages that waited for a message to end go out.
    pub(super) fn flush_pending(&mut self, out: &mut Vec<u8>, records: &mut Vec<Record>) {
        for (bytes, record) in self.pending.drain(..) {
            out.extend_from_slice(&bytes);
            records.push(Record::Frame(record));
        }
    }

    /// Forwards held bytes up to stream offset `end`.
    pub(super) fn release_to(&mut self, end: u64, out: &mut Vec<u8>) {
        let n = (end.saturating_sub(self.released) as usize).min(self.held.len());
        out.extend_from_slice(&self.held[..n]);
        self.held.drain(..n);
        self.released += n as u64;
    }

    /// Forgets held bytes up to stream offset `end` (dropped).
    pub(super) fn discard_to(&mut self, end: u64) {
        let n = (end.saturating_sub(self.released) as usize).min(self.held.len());
        self.held.drain(..n);
        self.released += n as u64;
    }

    /// Closing: whatever is held is recorded as dropped and never sent, and so are
    /// injected messages still waiting (their sequence numbers were given out, so
    /// their records keep the connection's numbering whole).
    pub(super) fn abandon(&mut self, records: &mut Vec<Record>) {
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
    pub(super) fn give_up(&mut self, out: &mut Vec<u8>, records: &mut Vec<Record>) {
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
    pub(super) fn stop(&mut self, out: &mut Vec<u8>, records: &mut Vec<Record>) {
        let all = self.released + self.held.len() as u64;
        self.release_to(all, out);
        records.extend(self.held_records.drain(..).map(Record::Frame));
        self.control_spans.clear();
        self.phase = Phase::Stopped;
    }
}
