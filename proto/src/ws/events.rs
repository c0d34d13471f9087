//! What a direction reports: frames, reassembled messages, and a final error.

use super::ProtocolError;

/// A frame as recorded: header facts plus the payload as the application sees it
/// (unmasked, and inflated when the message is compressed), capped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub rsv2: bool,
    pub rsv3: bool,
    /// Raw opcode, 0..=15.
    pub opcode: u8,
    pub masked: bool,
    /// Payload length on the wire (the compressed size when compressed).
    pub wire_len: u64,
    /// Length of the payload as the application sees it (after inflating), in
    /// full even when `payload` was cut at the cap. For a compressed message,
    /// what inflated from this frame's bytes (the last frame also gets what the
    /// RFC 7692 trailer flushed).
    pub payload_len: u64,
    /// The first `payload_cap` bytes of that payload.
    pub payload: Vec<u8>,
    /// `payload_len > payload.len()`.
    pub truncated: bool,
    /// This frame belongs to a permessage-deflate compressed message.
    pub compressed: bool,
    /// For close frames (opcode 8) with a body: the code, first two bytes big-endian.
    pub close_code: Option<u16>,
    /// For close frames (opcode 8) with a body: the rest, as text (lossily
    /// decoded when it is not UTF-8, which is also reported as an error).
    pub close_reason: Option<String>,
}

/// A complete data message reassembled from its fragments (mitmproxy's
/// WebSocketMessage model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from_client: bool,
    /// From the first frame's opcode: 1 is text, 2 binary.
    pub is_text: bool,
    /// The first `payload_cap` bytes of the message, inflated when compressed.
    pub content: Vec<u8>,
    /// Full length of the message as the application sees it.
    pub len: u64,
    /// `len > content.len()`.
    pub truncated: bool,
    pub compressed: bool,
    /// How many frames carried it.
    pub frames: u32,
}

/// What [`WsDirection::push`](super::WsDirection::push) reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WsEvent {
    Frame(RecordedFrame),
    Message(Message),
    /// The last event of a direction: parsing stopped here.
    Error(ProtocolError),
}
