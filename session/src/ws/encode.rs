//! What frametap writes itself: whole messages (injected, replaced, re-encoded),
//! compressed when permessage-deflate was negotiated and masked toward the server,
//! and close frames, each with its record.
use frametap_model::FrameRecord;
use frametap_proto::Peer;
use frametap_proto::ws::{Deflater, close_payload, encode_frame, encode_message};

use super::gate::Stream;
use super::shared::Shared;

impl Stream {
    /// A whole message from this stream's sender, as frametap writes it, and its record.
    pub(super) fn encode(
        &mut self,
        shared: &mut Shared,
        is_text: bool,
        content: &[u8],
        now_ms: u64,
    ) -> (Vec<u8>, FrameRecord) {
        let (bytes, mask) = self.message_bytes(is_text, content);
        let compressed = self.deflate_bits.is_some();
        let stored = content.len().min(shared.payload_cap);
        let record = FrameRecord {
            traffic: shared.traffic,
            seq: shared.next_seq(),
            timestamp_ms: now_ms,
            from_client: self.sender == Peer::Client,
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
    pub(super) fn message_bytes(
        &mut self,
        is_text: bool,
        content: &[u8],
    ) -> (Vec<u8>, Option<[u8; 4]>) {
        let mask = self.mask();
        let deflater = match self.deflate_bits {
            Some(bits) => Some(self.deflater.get_or_insert_with(|| Deflater::new(bits))),
            None => None,
        };
        let bytes = encode_message(is_text, content, mask, deflater);
        (bytes, mask)
    }

    /// A close frame from this stream's sender, as frametap writes it.
    pub(super) fn encode_close(
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
            from_client: self.sender == Peer::Client,
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
    pub(super) fn mask(&self) -> Option<[u8; 4]> {
        (self.sender == Peer::Client).then(self.mask_keys)
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
