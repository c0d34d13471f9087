//! What both directions of a WebSocket connection share: frame sequence numbers,
//! the close state, the outboxes, the first protocol error; and how a frame the
//! parser reported becomes its record.
use frametap_model::{FrameRecord, TrafficId};
use frametap_proto::Peer;
use frametap_proto::ws::{self, RecordedFrame};

use super::output::Outbox;
use crate::ending::{Closer, FirstClose};

/// Facts shared by both streams.
pub(super) struct Shared {
    pub(super) traffic: TrafficId,
    pub(super) next_seq: u64,
    pub(super) payload_cap: usize,
    /// A close rule fired: nothing more is forwarded either way.
    pub(super) closing: bool,
    /// A close rule fired on a message of this sender: the sender gets a close frame too.
    pub(super) close_back: Option<(Peer, u16, String)>,
    /// The first close frame either way.
    pub(super) first_close: Option<FirstClose>,
    pub(super) error: Option<String>,
    pub(super) outbox: [Outbox; 2],
}

impl Shared {
    pub(super) fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The record of a frame the parser reported.
    pub(super) fn record(
        &mut self,
        sender: Peer,
        f: RecordedFrame,
        now_ms: u64,
        binary_message: &mut bool,
    ) -> FrameRecord {
        if f.opcode == 8 && self.first_close.is_none() {
            self.first_close = Some(FirstClose {
                by: Closer::Peer(sender),
                code: f.close_code,
                reason: f.close_reason.clone(),
            });
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
            from_client: sender == Peer::Client,
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

    pub(super) fn note_error(&mut self, sender: Peer, error: ws::ProtocolError) {
        if self.error.is_none() {
            self.error = Some(format!(
                "{} sent an invalid WebSocket frame: {error}",
                sender.name()
            ));
        }
    }
}
