//! One direction of a WebSocket connection: a streaming frame parser.

use std::fmt;

use super::ProtocolError;
use super::error::is_valid_close_code;
use super::events::{Message, RecordedFrame, WsEvent};
use super::extension::DeflateConfig;
use super::inflate::Inflater;
use super::mask::apply_mask;
use crate::Peer;

/// Payload kept per frame and per message unless the caller picks another cap.
pub const DEFAULT_PAYLOAD_CAP: usize = 1024 * 1024;

/// 2 fixed bytes, up to 8 bytes of extended length, 4 bytes of masking key.
const MAX_HEADER_LEN: usize = 14;
/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Masked compressed payload is unmasked into a reused buffer of this size
/// before inflating, so a huge frame never needs a huge copy.
const UNMASK_PIECE_LEN: usize = 16 * 1024;
/// Most a frame or message buffer reserves before its bytes arrive.
const INITIAL_RESERVE: usize = 64 * 1024;
/// RFC 7692 7.2.2: senders strip these from every compressed message; receivers
/// append them again before inflating the last bit.
const DEFLATE_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How a frame's payload is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameKind {
    /// Text, binary or continuation: part of a message.
    Data,
    /// Close, ping, pong (and reserved control opcodes owned by a foreign
    /// extension): the whole body is kept, it is at most 125 bytes.
    Control,
    /// A reserved non-control opcode owned by a foreign extension: recorded on
    /// its own, without touching message state.
    Foreign,
}

/// The frame whose payload is being received.
struct FrameInProgress {
    fin: bool,
    rsv1: bool,
    rsv2: bool,
    rsv3: bool,
    opcode: u8,
    mask_key: Option<[u8; 4]>,
    kind: FrameKind,
    compressed: bool,
    wire_len: u64,
    /// Payload bytes received so far; also the masking key offset.
    received: u64,
    /// Kept payload (unmasked, inflated), at most the cap. Control frames keep
    /// theirs in `WsDirection::control_body` instead.
    payload: Vec<u8>,
    payload_len: u64,
}

/// A data message whose final frame has not arrived yet.
struct OpenMessage {
    is_text: bool,
    compressed: bool,
    content: Vec<u8>,
    len: u64,
    frames: u32,
}

/// One direction of a WebSocket connection. Feed it every byte the sender
/// sends, in order and in any split; it reports frames, messages and at most
/// one protocol error.
pub struct WsDirection {
    sender: Peer,
    deflate: Option<DeflateConfig>,
    /// The sender negotiated no_context_takeover: every message starts a fresh window.
    reset_after_message: bool,
    /// Other extensions were negotiated; RSV bits and reserved opcodes may be theirs.
    foreign_extensions: bool,
    payload_cap: usize,
    header: [u8; MAX_HEADER_LEN],
    header_have: usize,
    /// Full header length, known once the first two bytes passed the checks.
    header_len: Option<usize>,
    frame: Option<FrameInProgress>,
    message: Option<OpenMessage>,
    control_body: [u8; MAX_CONTROL_PAYLOAD],
    /// Created with the first compressed message, then reused.
    inflater: Option<Inflater>,
    unmask_scratch: Vec<u8>,
    failed: bool,
    wire_bytes: u64,
    /// Bytes parsed so far (stops growing at a failure).
    parsed: u64,
    /// Stream offsets just past each frame reported by the last push.
    frame_ends: Vec<u64>,
    frames: u64,
}

impl fmt::Debug for WsDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsDirection")
            .field("sender", &self.sender)
            .field("deflate", &self.deflate)
            .field("foreign_extensions", &self.foreign_extensions)
            .field("payload_cap", &self.payload_cap)
            .field("failed", &self.failed)
            .field("wire_bytes", &self.wire_bytes)
            .field("frames", &self.frames)
            .field("mid_message", &self.mid_message())
            .finish_non_exhaustive()
    }
}

impl WsDirection {
    /// A parser for the bytes `sender` sends. `deflate` is what the server's 101
    /// response accepted; `payload_cap` bounds what is kept of each frame and of
    /// each message ([`DEFAULT_PAYLOAD_CAP`] is a sensible choice).
    pub fn new(sender: Peer, deflate: Option<DeflateConfig>, payload_cap: usize) -> Self {
        let reset_after_message = deflate.as_ref().is_some_and(|config| match sender {
            Peer::Client => config.client_no_context_takeover,
            Peer::Server => config.server_no_context_takeover,
        });
        Self {
            sender,
            deflate,
            reset_after_message,
            foreign_extensions: false,
            payload_cap,
            header: [0; MAX_HEADER_LEN],
            header_have: 0,
            header_len: None,
            frame: None,
            message: None,
            control_body: [0; MAX_CONTROL_PAYLOAD],
            inflater: None,
            unmask_scratch: Vec::new(),
            failed: false,
            wire_bytes: 0,
            parsed: 0,
            frame_ends: Vec::new(),
            frames: 0,
        }
    }

    /// Says whether extensions other than permessage-deflate were negotiated
    /// (see [`negotiate_extensions`](super::negotiate_extensions)). Their meaning
    /// is unknown here, so RSV bits that permessage-deflate does not claim and
    /// reserved opcodes are then recorded instead of reported as errors.
    pub fn with_foreign_extensions(mut self, present: bool) -> Self {
        self.foreign_extensions = present;
        self
    }

    pub fn sender(&self) -> Peer {
        self.sender
    }

    /// Feed the next bytes of this direction (any split: 1 byte at a time gives
    /// the same result as all at once). Appends completed frames in order, and a
    /// [`Message`] after the frame that completes a data message, to `out`.
    /// Control frames interleaved inside a fragmented message are reported in
    /// order and do not disturb the message.
    ///
    /// Errors in a frame header or in inflating are reported instead of that
    /// frame; errors in a complete frame's content (close body, text encoding)
    /// are reported after its frame and message, so the record keeps them.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<WsEvent>) {
        self.wire_bytes += bytes.len() as u64;
        self.frame_ends.clear();
        let mut rest = bytes;
        while !rest.is_empty() && !self.failed {
            let reported = self.frames;
            let used = if self.frame.is_some() {
                self.read_payload(rest, out)
            } else {
                self.read_header(rest, out)
            };
            // A frame is complete exactly where the read that finished it stopped.
            self.parsed += used as u64;
            if self.frames > reported {
                self.frame_ends.push(self.parsed);
            }
            rest = rest.get(used..).unwrap_or_default();
        }
    }

    /// Where each frame reported by the last [`push`](Self::push) ends in this
    /// direction's byte stream (offset just past its last byte, counted from the
    /// first byte ever pushed), in order. Lets a caller cut the stream at frame
    /// boundaries, e.g. to hold or replace a message.
    pub fn frame_ends(&self) -> &[u64] {
        &self.frame_ends
    }

    /// True once a protocol error was reported (the rest is not parsed).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Every byte pushed so far, including those after a failure.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Frames reported so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// True while a frame or a fragmented message is only partly received (e.g.
    /// to report an abnormal end). After a failure it describes where parsing stopped.
    pub fn mid_message(&self) -> bool {
        self.header_have > 0 || self.frame.is_some() || self.message.is_some()
    }

    /// Collects header bytes; starts the frame once the header is complete.
    /// Returns how many bytes it used.
    fn read_header(&mut self, bytes: &[u8], out: &mut Vec<WsEvent>) -> usize {
        let target = self.header_len.unwrap_or(2);
        let take = target.saturating_sub(self.header_have).min(bytes.len());
        if let (Some(slot), Some(source)) = (
            self.header
                .get_mut(self.header_have..self.header_have + take),
            bytes.get(..take),
        ) {
            slot.copy_from_slice(source);
        }
        self.header_have += take;
        if self.header_have < target {
            return take;
        }
        if self.header_len.is_none() {
            match self.check_first_bytes() {
                Ok(len) => self.header_len = Some(len),
                Err(error) => {
                    self.fail(error, out);
                    return take;
                }
            }
            if self.header_len > Some(self.header_have) {
                return take;
            }
        }
        match self.begin_frame() {
            Ok(()) => {
                // An empty payload completes the frame right away.
                if self.frame.as_ref().is_some_and(|frame| frame.wire_len == 0) {
                    self.finish_frame(out);
                }
            }
            Err(error) => self.fail(error, out),
        }
        take
    }

    /// Judges the two fixed header bytes, so violations surface as early as
    /// possible, and returns the full header length.
    fn check_first_bytes(&self) -> Result<usize, ProtocolError> {
        let [first, second, ..] = self.header;
        let fin = first & 0x80 != 0;
        let rsv1 = first & 0x40 != 0;
        let rsv2 = first & 0x20 != 0;
        let rsv3 = first & 0x10 != 0;
        let opcode = first & 0x0f;
        let masked = second & 0x80 != 0;

        let kind = self.kind_of(opcode)?;
        let deflate = self.deflate.is_some();
        let unclaimed_rsv1 = rsv1 && !deflate;
        if !self.foreign_extensions && (unclaimed_rsv1 || rsv2 || rsv3) {
            return Err(ProtocolError::ReservedBitsWithoutExtension {
                rsv1: unclaimed_rsv1,
                rsv2,
                rsv3,
            });
        }
        if rsv1 && deflate {
            match opcode {
                0 => return Err(ProtocolError::CompressedContinuation),
                8..=10 => return Err(ProtocolError::CompressedControlFrame { opcode }),
                _ => {}
            }
        }
        if kind == FrameKind::Control && !fin {
            return Err(ProtocolError::FragmentedControlFrame { opcode });
        }
        match (self.sender, masked) {
            (Peer::Client, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Peer::Server, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        match (opcode, self.message.is_some()) {
            (0, false) => return Err(ProtocolError::ContinuationWithoutMessage),
            (1 | 2, true) => return Err(ProtocolError::DataFrameInsideMessage { opcode }),
            _ => {}
        }
        let extended_len = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Ok(2 + extended_len + if masked { 4 } else { 0 })
    }

    fn kind_of(&self, opcode: u8) -> Result<FrameKind, ProtocolError> {
        match opcode {
            0..=2 => Ok(FrameKind::Data),
            8..=10 => Ok(FrameKind::Control),
            11..=15 if self.foreign_extensions => Ok(FrameKind::Control),
            3..=7 if self.foreign_extensions => Ok(FrameKind::Foreign),
            _ => Err(ProtocolError::ReservedOpcode(opcode)),
        }
    }

    /// Reads the length and masking key of a complete header and opens the
    /// frame (and the message, for a first data frame).
    fn begin_frame(&mut self) -> Result<(), ProtocolError> {
        let header = self.header;
        let opcode = header[0] & 0x0f;
        let kind = self.kind_of(opcode)?;
        let (wire_len, key_at) = match header[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let len = u64::from_be_bytes([
                    header[2], header[3], header[4], header[5], header[6], header[7], header[8],
                    header[9],
                ]);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthMsbSet(len));
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        // Checked on the decoded length: non-minimal length encodings are tolerated.
        if kind == FrameKind::Control && wire_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(ProtocolError::ControlFrameTooLong {
                opcode,
                len: wire_len,
            });
        }
        let mask_key = (header[1] & 0x80 != 0).then(|| {
            [
                header[key_at],
                header[key_at + 1],
                header[key_at + 2],
                header[key_at + 3],
            ]
        });
        let rsv1 = header[0] & 0x40 != 0;
        // Room for what the header announces, up to the cap, but a hostile
        // length costs at most INITIAL_RESERVE until the bytes really arrive.
        let kept_len = usize::try_from(wire_len)
            .unwrap_or(usize::MAX)
            .min(self.payload_cap)
            .min(INITIAL_RESERVE);
        let compressed = match (kind, opcode) {
            (FrameKind::Data, 1 | 2) => {
                let compressed = rsv1 && self.deflate.is_some();
                self.message = Some(OpenMessage {
                    is_text: opcode == 1,
                    compressed,
                    content: Vec::with_capacity(if compressed { 0 } else { kept_len }),
                    len: 0,
                    frames: 0,
                });
                compressed
            }
            (FrameKind::Data, _) => self
                .message
                .as_ref()
                .is_some_and(|message| message.compressed),
            _ => false,
        };
        let payload = match kind {
            FrameKind::Control => Vec::new(),
            _ if compressed => Vec::new(),
            _ => Vec::with_capacity(kept_len),
        };
        self.frame = Some(FrameInProgress {
            fin: header[0] & 0x80 != 0,
            rsv1,
            rsv2: header[0] & 0x20 != 0,
            rsv3: header[0] & 0x10 != 0,
            opcode,
            mask_key,
            kind,
            compressed,
            wire_len,
            received: 0,
            payload,
            payload_len: 0,
        });
        Ok(())
    }

    /// Consumes payload bytes of the current frame; finishes it when complete.
    /// Returns how many bytes it used.
    fn read_payload(&mut self, bytes: &[u8], out: &mut Vec<WsEvent>) -> usize {
        let Some(frame) = self.frame.as_ref() else {
            return 0;
        };
        let remaining = frame.wire_len - frame.received;
        let take =
            usize::try_from(remaining).map_or(bytes.len(), |remaining| remaining.min(bytes.len()));
        let chunk = bytes.get(..take).unwrap_or_default();
        let result = match (frame.kind, frame.compressed) {
            (FrameKind::Control, _) => {
                self.keep_control_bytes(chunk);
                Ok(())
            }
            (_, true) => self.inflate_payload(chunk),
            (_, false) => {
                self.keep_plain_bytes(chunk);
                Ok(())
            }
        };
        if let Err(error) = result {
            self.fail(error, out);
            return take;
        }
        let complete = self.frame.as_mut().is_some_and(|frame| {
            frame.received += take as u64;
            frame.received == frame.wire_len
        });
        if complete {
            self.finish_frame(out);
        }
        take
    }

    fn keep_control_bytes(&mut self, chunk: &[u8]) {
        let Some(frame) = self.frame.as_ref() else {
            return;
        };
        // begin_frame checked wire_len <= 125, so this always fits.
        let start = frame.received as usize;
        if let Some(slot) = self.control_body.get_mut(start..start + chunk.len()) {
            slot.copy_from_slice(chunk);
            if let Some(key) = frame.mask_key {
                apply_mask(slot, key, frame.received);
            }
        }
    }

    /// Uncompressed payload: unmask and keep up to the cap, count the rest.
    fn keep_plain_bytes(&mut self, chunk: &[u8]) {
        let Self {
            frame,
            message,
            payload_cap,
            ..
        } = self;
        let Some(frame) = frame.as_mut() else {
            return;
        };
        let mut message = match frame.kind {
            FrameKind::Data => message.as_mut(),
            _ => None,
        };
        let start = frame.payload.len();
        keep_capped(&mut frame.payload, *payload_cap, chunk);
        if let Some(kept) = frame.payload.get_mut(start..)
            && !kept.is_empty()
        {
            if let Some(key) = frame.mask_key {
                apply_mask(kept, key, frame.received);
            }
            // The message holds at least as much as the frame, so bytes past the
            // frame's cap are past the message's cap too.
            if let Some(message) = &mut message {
                keep_capped(&mut message.content, *payload_cap, kept);
            }
        }
        frame.payload_len += chunk.len() as u64;
        if let Some(message) = message {
            message.len += chunk.len() as u64;
        }
    }

    /// Compressed payload: unmask into a reused buffer, inflate, keep what
    /// inflated up to the cap and count the rest.
    fn inflate_payload(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        let Self {
            frame,
            message,
            inflater,
            unmask_scratch,
            payload_cap,
            ..
        } = self;
        let (Some(frame), Some(message)) = (frame.as_mut(), message.as_mut()) else {
            return Ok(());
        };
        let inflater = inflater.get_or_insert_with(Inflater::new);
        let cap = *payload_cap;
        let mask_key = frame.mask_key;
        let mut offset = frame.received;
        let mut sink = |piece: &[u8]| record_inflated(frame, message, cap, piece);
        let result = match mask_key {
            None => inflater.inflate(chunk, &mut sink),
            Some(key) => chunk.chunks(UNMASK_PIECE_LEN).try_for_each(|piece| {
                unmask_scratch.clear();
                unmask_scratch.extend_from_slice(piece);
                apply_mask(unmask_scratch, key, offset);
                offset += piece.len() as u64;
                inflater.inflate(unmask_scratch, &mut sink)
            }),
        };
        result.map_err(ProtocolError::InflateFailed)
    }

    /// Reports the complete current frame, and its message when it was the last.
    fn finish_frame(&mut self, out: &mut Vec<WsEvent>) {
        let Some(mut frame) = self.frame.take() else {
            return;
        };
        self.header_have = 0;
        self.header_len = None;
        match frame.kind {
            FrameKind::Control => self.finish_control_frame(frame, out),
            FrameKind::Foreign => {
                let payload = std::mem::take(&mut frame.payload);
                let payload_len = frame.payload_len;
                self.emit_frame(&frame, payload, payload_len, (None, None), out);
            }
            FrameKind::Data => {
                if frame.fin
                    && frame.compressed
                    && let Err(reason) = self.inflate_trailer(&mut frame)
                {
                    self.fail(ProtocolError::InflateFailed(reason), out);
                    return;
                }
                let payload = std::mem::take(&mut frame.payload);
                let payload_len = frame.payload_len;
                self.emit_frame(&frame, payload, payload_len, (None, None), out);
                if let Some(message) = self.message.as_mut() {
                    message.frames = message.frames.saturating_add(1);
                }
                if frame.fin
                    && let Some(message) = self.message.take()
                {
                    self.emit_message(message, out);
                }
            }
        }
    }

    /// RFC 7692 7.2.2: the end of a compressed message flushes what the sender's
    /// stripped sync marker would have. Then the window is dropped if the sender
    /// does not keep it.
    fn inflate_trailer(&mut self, frame: &mut FrameInProgress) -> Result<(), String> {
        let Self {
            message,
            inflater,
            payload_cap,
            reset_after_message,
            ..
        } = self;
        let Some(message) = message.as_mut() else {
            return Ok(());
        };
        let inflater = inflater.get_or_insert_with(Inflater::new);
        let cap = *payload_cap;
        inflater.inflate(&DEFLATE_TRAILER, &mut |piece| {
            record_inflated(frame, message, cap, piece)
        })?;
        if *reset_after_message {
            inflater.reset();
        }
        Ok(())
    }

    fn finish_control_frame(&mut self, frame: FrameInProgress, out: &mut Vec<WsEvent>) {
        let len = usize::try_from(frame.wire_len)
            .unwrap_or(MAX_CONTROL_PAYLOAD)
            .min(MAX_CONTROL_PAYLOAD);
        let body = &self.control_body[..len];
        let payload = body[..len.min(self.payload_cap)].to_vec();
        let (close, violation) = if frame.opcode == 8 {
            inspect_close_body(body)
        } else {
            ((None, None), None)
        };
        self.emit_frame(&frame, payload, frame.wire_len, close, out);
        if let Some(violation) = violation {
            self.fail(violation, out);
        }
    }

    fn emit_frame(
        &mut self,
        frame: &FrameInProgress,
        payload: Vec<u8>,
        payload_len: u64,
        (close_code, close_reason): (Option<u16>, Option<String>),
        out: &mut Vec<WsEvent>,
    ) {
        self.frames += 1;
        out.push(WsEvent::Frame(RecordedFrame {
            fin: frame.fin,
            rsv1: frame.rsv1,
            rsv2: frame.rsv2,
            rsv3: frame.rsv3,
            opcode: frame.opcode,
            masked: frame.mask_key.is_some(),
            wire_len: frame.wire_len,
            payload_len,
            truncated: payload_len > payload.len() as u64,
            payload,
            compressed: frame.compressed,
            close_code,
            close_reason,
        }));
    }

    fn emit_message(&mut self, message: OpenMessage, out: &mut Vec<WsEvent>) {
        let truncated = message.len > message.content.len() as u64;
        let invalid_text = message.is_text && !could_be_utf8(&message.content, truncated);
        out.push(WsEvent::Message(Message {
            from_client: self.sender == Peer::Client,
            is_text: message.is_text,
            content: message.content,
            len: message.len,
            truncated,
            compressed: message.compressed,
            frames: message.frames,
        }));
        if invalid_text {
            self.fail(ProtocolError::InvalidTextUtf8, out);
        }
    }

    fn fail(&mut self, error: ProtocolError, out: &mut Vec<WsEvent>) {
        self.failed = true;
        out.push(WsEvent::Error(error));
    }
}

/// Appends as much of `data` as fits under `cap`, growing `buffer` at most to `cap`.
fn keep_capped(buffer: &mut Vec<u8>, cap: usize, data: &[u8]) {
    let take = cap.saturating_sub(buffer.len()).min(data.len());
    if take == 0 {
        return;
    }
    let needed = buffer.len() + take;
    if needed > buffer.capacity() {
        // Double as usual, but never past the cap.
        let target = buffer
            .capacity()
            .saturating_mul(2)
            .clamp(needed, cap.max(needed));
        buffer.reserve_exact(target - buffer.len());
    }
    buffer.extend_from_slice(&data[..take]);
}

/// Output of the inflater belongs to the frame being processed and to its message.
fn record_inflated(
    frame: &mut FrameInProgress,
    message: &mut OpenMessage,
    cap: usize,
    piece: &[u8],
) {
    keep_capped(&mut frame.payload, cap, piece);
    keep_capped(&mut message.content, cap, piece);
    frame.payload_len += piece.len() as u64;
    message.len += piece.len() as u64;
}

/// RFC 6455 5.5.1: an optional 2-byte code followed by a UTF-8 reason. Returns
/// what to record and the first rule the body breaks, if any.
#[allow(clippy::type_complexity)]
fn inspect_close_body(body: &[u8]) -> ((Option<u16>, Option<String>), Option<ProtocolError>) {
    match body {
        [] => ((None, None), None),
        [_] => ((None, None), Some(ProtocolError::CloseBodyTooShort)),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let (reason, reason_error) = match std::str::from_utf8(reason) {
                Ok(text) => (text.to_owned(), None),
                Err(_) => (
                    String::from_utf8_lossy(reason).into_owned(),
                    Some(ProtocolError::InvalidCloseReasonUtf8),
                ),
            };
            let violation = if is_valid_close_code(code) {
                reason_error
            } else {
                Some(ProtocolError::InvalidCloseCode(code))
            };
            ((Some(code), Some(reason)), violation)
        }
    }
}

/// Whether `content` is UTF-8, or, when it was cut at the cap, a prefix of
/// some UTF-8 text (a character split by the cut is not an error).
fn could_be_utf8(content: &[u8], truncated: bool) -> bool {
    match std::str::from_utf8(content) {
        Ok(_) => true,
        Err(error) => truncated && error.error_len().is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::encode_frame;
    use flate2::{Compress, Compression, FlushCompress};

    /// The masking key of the RFC 6455 examples.
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn push_all(direction: &mut WsDirection, bytes: &[u8]) -> Vec<WsEvent> {
        let mut out = Vec::new();
        direction.push(bytes, &mut out);
        out
    }

    fn push_in_chunks(direction: &mut WsDirection, bytes: &[u8], chunk_len: usize) -> Vec<WsEvent> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(chunk_len) {
            direction.push(chunk, &mut out);
        }
        out
    }

    fn server() -> WsDirection {
        WsDirection::new(Peer::Server, None, DEFAULT_PAYLOAD_CAP)
    }

    fn client() -> WsDirection {
        WsDirection::new(Peer::Client, None, DEFAULT_PAYLOAD_CAP)
    }

    fn deflating(sender: Peer, config: DeflateConfig) -> WsDirection {
        WsDirection::new(sender, Some(config), DEFAULT_PAYLOAD_CAP)
    }

    fn frame(event: &WsEvent) -> &RecordedFrame {
        match event {
            WsEvent::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn message(event: &WsEvent) -> &Message {
        match event {
            WsEvent::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn frames_in(events: &[WsEvent]) -> Vec<&RecordedFrame> {
        events
            .iter()
            .filter_map(|event| match event {
                WsEvent::Frame(frame) => Some(frame),
                _ => None,
            })
            .collect()
    }

    /// A frame as the parser should record it when nothing is cut, compressed or closed.
    fn plain_frame(fin: bool, opcode: u8, masked: bool, payload: &[u8]) -> RecordedFrame {
        RecordedFrame {
            fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            masked,
            wire_len: payload.len() as u64,
            payload_len: payload.len() as u64,
            payload: payload.to_vec(),
            truncated: false,
            compressed: false,
            close_code: None,
            close_reason: None,
        }
    }

    /// Compresses one message the way permessage-deflate senders do: a sync
    /// flush, then the trailing 0x00 0x00 0xff 0xff removed (RFC 7692 7.2.1).
    fn compress_message(compressor: &mut Compress, payload: &[u8]) -> Vec<u8> {
        let start = compressor.total_in();
        let mut compressed = Vec::new();
        loop {
            compressed.reserve(payload.len() / 2 + 1024);
            let consumed = (compressor.total_in() - start) as usize;
            compressor
                .compress_vec(&payload[consumed..], &mut compressed, FlushCompress::Sync)
                .unwrap();
            let all_in = compressor.total_in() - start == payload.len() as u64;
            if all_in && compressed.len() < compressed.capacity() {
                break;
            }
        }
        assert!(compressed.ends_with(&DEFLATE_TRAILER));
        compressed.truncate(compressed.len() - DEFLATE_TRAILER.len());
        compressed
    }

    fn new_compressor() -> Compress {
        Compress::new(Compression::default(), false)
    }

    /// Deterministic bytes that do not compress.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }

    // ---- RFC 6455 section 5.7 examples ----

    #[test]
    fn frame_ends_are_stream_offsets_across_pushes() {
        let mut direction = server();
        let first = encode_frame(false, false, 1, None, b"abc");
        let ping = encode_frame(true, false, 9, None, b"");
        let last = encode_frame(true, false, 0, None, &[7u8; 300]);
        let stream: Vec<u8> = [first.clone(), ping.clone(), last.clone()].concat();
        let mut events = Vec::new();
        direction.push(&stream[..first.len() + 1], &mut events);
        assert_eq!(direction.frame_ends(), [first.len() as u64]);
        direction.push(&stream[first.len() + 1..stream.len() - 1], &mut events);
        assert_eq!(direction.frame_ends(), [(first.len() + ping.len()) as u64]);
        direction.push(&stream[stream.len() - 1..], &mut events);
        assert_eq!(direction.frame_ends(), [stream.len() as u64]);
    }

    #[test]
    fn rfc6455_unmasked_text_from_server() {
        let mut direction = server();
        let events = push_all(&mut direction, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(
            events,
            [
                WsEvent::Frame(plain_frame(true, 1, false, b"Hello")),
                WsEvent::Message(Message {
                    from_client: false,
                    is_text: true,
                    content: b"Hello".to_vec(),
                    len: 5,
                    truncated: false,
                    compressed: false,
                    frames: 1,
                }),
            ]
        );
        assert!(!direction.failed());
        assert!(!direction.mid_message());
        assert_eq!(direction.wire_bytes(), 7);
        assert_eq!(direction.frames(), 1);
    }

    #[test]
    fn rfc6455_masked_text_from_client() {
        let mut direction = client();
        let events = push_all(
            &mut direction,
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
        );
        assert_eq!(events.len(), 2);
        assert_eq!(*frame(&events[0]), plain_frame(true, 1, true, b"Hello"));
        let message = message(&events[1]);
        assert!(message.from_client && message.is_text);
        assert_eq!(message.content, b"Hello");
    }

    #[test]
    fn rfc6455_fragmented_text() {
        let mut direction = server();
        let first = push_all(&mut direction, &[0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert_eq!(
            first,
            [WsEvent::Frame(plain_frame(false, 1, false, b"Hel"))]
        );
        assert!(direction.mid_message());
        let second = push_all(&mut direction, &[0x80, 0x02, 0x6c, 0x6f]);
        assert_eq!(
            second[0],
            WsEvent::Frame(plain_frame(true, 0, false, b"lo"))
        );
        let message = message(&second[1]);
        assert_eq!(message.content, b"Hello");
        assert_eq!((message.len, message.frames, message.is_text), (5, 2, true));
        assert!(!direction.mid_message());
    }

    #[test]
    fn rfc6455_ping_and_masked_pong() {
        let mut from_server = server();
        let ping = push_all(
            &mut from_server,
            &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
        );
        assert_eq!(
            ping,
            [WsEvent::Frame(plain_frame(true, 9, false, b"Hello"))]
        );
        let mut from_client = client();
        let pong = push_all(
            &mut from_client,
            &[
                0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
        );
        assert_eq!(
            pong,
            [WsEvent::Frame(plain_frame(true, 10, true, b"Hello"))]
        );
    }

    #[test]
    fn rfc6455_256_byte_and_64_kib_binary() {
        let small: Vec<u8> = (0..256).map(|i| i as u8).collect();
        let mut bytes = vec![0x82, 0x7e, 0x01, 0x00];
        bytes.extend_from_slice(&small);
        let large = noise(65536, 1);
        bytes.extend_from_slice(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        bytes.extend_from_slice(&large);
        let mut direction = server();
        let events = push_all(&mut direction, &bytes);
        assert_eq!(events.len(), 4);
        assert_eq!(*frame(&events[0]), plain_frame(true, 2, false, &small));
        assert!(!message(&events[1]).is_text);
        assert_eq!(*frame(&events[2]), plain_frame(true, 2, false, &large));
        assert_eq!(message(&events[3]).content, large);
    }

    #[test]
    fn control_frames_inside_a_fragmented_message_do_not_disturb_it() {
        let mut bytes = encode_frame(false, false, 1, Some(KEY), b"Hel");
        bytes.extend(encode_frame(
            true,
            false,
            9,
            Some([1, 2, 3, 4]),
            b"are you there",
        ));
        bytes.extend(encode_frame(false, false, 0, Some([5, 6, 7, 8]), b"lo, "));
        bytes.extend(encode_frame(true, false, 10, Some([9, 9, 9, 9]), b""));
        bytes.extend(encode_frame(
            true,
            false,
            0,
            Some([0xff, 0, 0xff, 0]),
            b"world",
        ));
        let mut direction = client();
        let events = push_all(&mut direction, &bytes);
        let opcodes: Vec<u8> = frames_in(&events)
            .iter()
            .map(|frame| frame.opcode)
            .collect();
        assert_eq!(opcodes, [1, 9, 0, 10, 0]);
        assert_eq!(frame(&events[1]).payload, b"are you there");
        assert!(matches!(events[5], WsEvent::Message(_)));
        let message = message(&events[5]);
        assert_eq!(message.content, b"Hello, world");
        assert_eq!(message.frames, 3);
        assert_eq!(events.len(), 6);
        assert_eq!(direction.frames(), 5);
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let mut bytes = vec![0x81, 0x7e, 0x00, 0x05];
        bytes.extend_from_slice(b"Hello");
        bytes.extend_from_slice(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0x02, 0xaa, 0xbb]);
        bytes.extend_from_slice(&[0x89, 0x7e, 0x00, 0x02, 0x70, 0x70]);
        let mut direction = server();
        let events = push_all(&mut direction, &bytes);
        assert!(!direction.failed(), "{events:?}");
        let frames = frames_in(&events);
        assert_eq!(frames[0].payload, b"Hello");
        assert_eq!(frames[1].payload, [0xaa, 0xbb]);
        assert_eq!(frames[2].payload, b"pp");
    }

    // ---- RFC 7692 section 7.2.3 examples ----

    fn compressed_hello_frame() -> RecordedFrame {
        RecordedFrame {
            fin: true,
            rsv1: true,
            rsv2: false,
            rsv3: false,
            opcode: 1,
            masked: false,
            wire_len: 7,
            payload_len: 5,
            payload: b"Hello".to_vec(),
            truncated: false,
            compressed: true,
            close_code: None,
            close_reason: None,
        }
    }

    #[test]
    fn rfc7692_compressed_hello() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(
            &mut direction,
            &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        assert_eq!(
            events,
            [
                WsEvent::Frame(compressed_hello_frame()),
                WsEvent::Message(Message {
                    from_client: false,
                    is_text: true,
                    content: b"Hello".to_vec(),
                    len: 5,
                    truncated: false,
                    compressed: true,
                    frames: 1,
                }),
            ]
        );
    }

    #[test]
    fn rfc7692_compressed_hello_in_fragments() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(
            &mut direction,
            &[
                0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
            ],
        );
        let frames = frames_in(&events);
        assert_eq!(frames.len(), 2);
        // Each frame carries what inflated from its own bytes.
        assert_eq!(
            (frames[0].rsv1, frames[0].fin, frames[0].wire_len),
            (true, false, 3)
        );
        assert_eq!(frames[0].payload, b"He");
        assert_eq!(frames[0].payload_len, 2);
        assert_eq!(
            (frames[1].rsv1, frames[1].fin, frames[1].wire_len),
            (false, true, 4)
        );
        assert_eq!(frames[1].payload, b"llo");
        assert!(frames.iter().all(|frame| frame.compressed));
        let message = message(&events[2]);
        assert_eq!(message.content, b"Hello");
        assert_eq!(
            (message.frames, message.compressed, message.len),
            (2, true, 5)
        );
    }

    #[test]
    fn rfc7692_masked_fragments_from_client() {
        let mut bytes = encode_frame(false, true, 1, Some(KEY), &[0xf2, 0x48, 0xcd]);
        bytes.extend(encode_frame(
            true,
            false,
            0,
            Some([1, 2, 3, 4]),
            &[0xc9, 0xc9, 0x07, 0x00],
        ));
        let mut direction = deflating(Peer::Client, DeflateConfig::default());
        let events = push_all(&mut direction, &bytes);
        assert_eq!(message(&events[2]).content, b"Hello");
        assert!(message(&events[2]).from_client);
    }

    const SECOND_HELLO: [u8; 7] = [0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00];
    const FIRST_HELLO: [u8; 9] = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn rfc7692_context_takeover() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        push_all(&mut direction, &FIRST_HELLO);
        let events = push_all(&mut direction, &SECOND_HELLO);
        let mut expected = compressed_hello_frame();
        expected.wire_len = 5;
        assert_eq!(events[0], WsEvent::Frame(expected));
        assert_eq!(message(&events[1]).content, b"Hello");
    }

    /// Whether the second RFC 7692 "Hello" (a back-reference into the first
    /// message) came out as "Hello". After a window reset it cannot: zlib calls
    /// the distance too far back, miniz_oxide (our backend) reads its cleared window.
    fn back_reference_resolved(events: &[WsEvent]) -> bool {
        events
            .iter()
            .any(|event| matches!(event, WsEvent::Message(message) if message.content == b"Hello"))
    }

    #[test]
    fn no_context_takeover_of_the_sender_resets_the_window() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let mut direction = deflating(Peer::Server, config);
        push_all(&mut direction, &FIRST_HELLO);
        let events = push_all(&mut direction, &SECOND_HELLO);
        assert!(!back_reference_resolved(&events), "{events:?}");

        // The client's flag does not concern the server's messages.
        let config = DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let mut direction = deflating(Peer::Server, config);
        push_all(&mut direction, &FIRST_HELLO);
        let events = push_all(&mut direction, &SECOND_HELLO);
        assert!(back_reference_resolved(&events), "{events:?}");
    }

    #[test]
    fn client_no_context_takeover_applies_to_client_frames() {
        let mask = |frame: &[u8]| encode_frame(true, true, 1, Some(KEY), &frame[2..]);
        let config = DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let mut direction = deflating(Peer::Client, config);
        push_all(&mut direction, &mask(&FIRST_HELLO));
        let events = push_all(&mut direction, &mask(&SECOND_HELLO));
        assert!(!back_reference_resolved(&events), "{events:?}");

        let config = DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let mut direction = deflating(Peer::Client, config);
        push_all(&mut direction, &mask(&FIRST_HELLO));
        let events = push_all(&mut direction, &mask(&SECOND_HELLO));
        assert!(back_reference_resolved(&events), "{events:?}");
    }

    #[test]
    fn no_context_takeover_still_inflates_independent_messages() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let mut direction = deflating(Peer::Server, config);
        for _ in 0..3 {
            let events = push_all(&mut direction, &FIRST_HELLO);
            assert_eq!(message(&events[1]).content, b"Hello");
        }
    }

    #[test]
    fn rfc7692_uncompressed_block() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(
            &mut direction,
            &[
                0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
        );
        assert_eq!(message(&events[1]).content, b"Hello");
    }

    #[test]
    fn rfc7692_bfinal_block() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(
            &mut direction,
            &[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
        );
        assert_eq!(message(&events[1]).content, b"Hello");
        // The stream ended, so the next message starts a new one.
        let events = push_all(&mut direction, &FIRST_HELLO);
        assert_eq!(message(&events[1]).content, b"Hello");
    }

    #[test]
    fn rfc7692_two_deflate_blocks_in_one_message() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(
            &mut direction,
            &[
                0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
                0x00,
            ],
        );
        assert_eq!(message(&events[1]).content, b"Hello");
    }

    #[test]
    fn empty_compressed_message_and_empty_final_fragment() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(&mut direction, &[0xc1, 0x01, 0x00]);
        assert_eq!(message(&events[1]).content, b"");
        assert!(message(&events[1]).compressed);
        // "Hello" flushed in the first fragment, then an empty final fragment.
        let mut compressor = new_compressor();
        let mut bytes = encode_frame(
            false,
            true,
            2,
            None,
            &compress_message(&mut compressor, b"Hello"),
        );
        bytes.extend(encode_frame(true, false, 0, None, b""));
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(&mut direction, &bytes);
        assert_eq!(frame(&events[0]).payload, b"Hello");
        assert_eq!(frame(&events[1]).payload, b"");
        assert_eq!(frame(&events[1]).wire_len, 0);
        assert_eq!(message(&events[2]).content, b"Hello");
        assert!(!message(&events[2]).is_text);
    }

    #[test]
    fn uncompressed_message_on_a_deflate_connection() {
        let mut direction = deflating(Peer::Server, DeflateConfig::default());
        let events = push_all(&mut direction, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(*frame(&events[0]), plain_frame(true, 1, false, b"Hello"));
        assert!(!message(&events[1]).compressed);
    }

    #[test]
    fn large_masked_compressed_message_across_unmask_pieces() {
        let text = noise(100_000, 7);
        let mut compressor = new_compressor();
        let compressed = compress_message(&mut compressor, &text);
        assert!(compressed.len() > 3 * UNMASK_PIECE_LEN);
        let cut = compressed.len() / 3;
        let mut bytes = encode_frame(false, true, 2, Some(KEY), &compressed[..cut]);
        bytes.extend(encode_frame(
            true,
            false,
            0,
            Some([0x11, 0x22, 0x33, 0x44]),
            &compressed[cut..],
        ));
        for chunk_len in [bytes.len(), 7777, 4096, 1001] {
            let mut direction = deflating(Peer::Client, DeflateConfig::default());
            let events = push_in_chunks(&mut direction, &bytes, chunk_len);
            let frames = frames_in(&events);
            let mut joined = frames[0].payload.clone();
            joined.extend_from_slice(&frames[1].payload);
            assert_eq!(joined, text);
            assert_eq!(
                frames[0].payload_len + frames[1].payload_len,
                text.len() as u64
            );
            assert_eq!(message(&events[2]).content, text);
        }
    }

    #[test]
    fn compressed_payload_is_capped_per_frame_and_message() {
        let text: Vec<u8> = b"all work and no play makes jack a dull boy. ".repeat(250);
        let mut compressor = new_compressor();
        let compressed = compress_message(&mut compressor, &text);
        let mut direction = WsDirection::new(Peer::Server, Some(DeflateConfig::default()), 100);
        let events = push_all(
            &mut direction,
            &encode_frame(true, true, 1, None, &compressed),
        );
        let frame = frame(&events[0]);
        assert_eq!(frame.payload, text[..100]);
        assert_eq!(frame.payload_len, text.len() as u64);
        assert_eq!(frame.wire_len, compressed.len() as u64);
        assert!(frame.truncated);
        let message = message(&events[1]);
        assert_eq!(message.content, text[..100]);
        assert_eq!(message.len, text.len() as u64);
        assert!(message.truncated);
        assert!(!direction.failed());
    }

    #[test]
    fn deflate_bomb_costs_no_memory() {
        const INFLATED: usize = 32 * 1024 * 1024;
        const CAP: usize = 64 * 1024;
        let mut compressor = Compress::new(Compression::fast(), false);
        let zeros = vec![0u8; 1024 * 1024];
        let mut compressed = Vec::with_capacity(1024 * 1024);
        for _ in 0..INFLATED / zeros.len() {
            compressor
                .compress_vec(&zeros, &mut compressed, FlushCompress::None)
                .unwrap();
        }
        compressed.truncate(compressed.len());
        let tail = compress_message(&mut compressor, b"");
        compressed.extend_from_slice(&tail);
        assert!(compressed.len() < INFLATED / 100);

        let mut direction = WsDirection::new(Peer::Server, Some(DeflateConfig::default()), CAP);
        let bytes = encode_frame(true, true, 2, None, &compressed);
        let mut events = Vec::new();
        for chunk in bytes.chunks(1000) {
            direction.push(chunk, &mut events);
            if let Some(frame) = &direction.frame {
                assert!(frame.payload.capacity() <= CAP);
            }
            if let Some(message) = &direction.message {
                assert!(message.content.capacity() <= CAP);
            }
        }
        let frame = frame(&events[0]);
        assert_eq!(frame.payload_len, INFLATED as u64);
        assert_eq!(frame.payload.len(), CAP);
        assert!(frame.truncated);
        let message = message(&events[1]);
        assert_eq!(message.len, INFLATED as u64);
        assert_eq!(message.content.len(), CAP);
        assert!(message.truncated);
    }

    // ---- streaming and caps ----

    #[test]
    fn huge_frame_streams_with_bounded_memory() {
        const LEN: usize = 8 * 1024 * 1024;
        const CAP: usize = 1024 * 1024;
        let payload: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let bytes = encode_frame(true, false, 2, Some([0xa5, 0x5a, 0x0f, 0xf0]), &payload);
        let mut direction = WsDirection::new(Peer::Client, None, CAP);
        let mut events = Vec::new();
        for chunk in bytes.chunks(64 * 1024 + 3) {
            direction.push(chunk, &mut events);
            if let Some(frame) = &direction.frame {
                assert!(frame.payload.capacity() <= CAP);
                assert!(direction.mid_message());
            }
            if let Some(message) = &direction.message {
                assert!(message.content.capacity() <= CAP);
            }
        }
        assert_eq!(events.len(), 2);
        let frame = frame(&events[0]);
        assert_eq!(frame.wire_len, LEN as u64);
        assert_eq!(frame.payload_len, LEN as u64);
        assert_eq!(frame.payload, payload[..CAP]);
        assert!(frame.truncated);
        let message = message(&events[1]);
        assert_eq!(message.content, payload[..CAP]);
        assert_eq!(message.len, LEN as u64);
        assert!(message.truncated);
        assert_eq!(direction.wire_bytes(), bytes.len() as u64);
    }

    #[test]
    fn announced_length_reserves_little_until_bytes_arrive() {
        let mut direction = server();
        push_all(&mut direction, &[0x82, 0x7f, 0, 0, 0, 1, 0, 0, 0, 0, 0xab]);
        let frame = direction.frame.as_ref().unwrap();
        assert_eq!(
            (frame.wire_len, frame.payload.as_slice()),
            (1 << 32, &[0xab][..])
        );
        assert!(frame.payload.capacity() <= INITIAL_RESERVE);
        assert!(direction.message.as_ref().unwrap().content.capacity() <= INITIAL_RESERVE);
        assert!(direction.mid_message());
    }

    #[test]
    fn message_cap_spans_fragments() {
        let mut bytes = Vec::new();
        for (index, byte) in [b'a', b'b', b'c'].into_iter().enumerate() {
            let opcode = if index == 0 { 1 } else { 0 };
            bytes.extend(encode_frame(index == 2, false, opcode, None, &[byte; 10]));
        }
        let mut direction = WsDirection::new(Peer::Server, None, 25);
        let events = push_all(&mut direction, &bytes);
        for (index, byte) in [b'a', b'b', b'c'].into_iter().enumerate() {
            assert_eq!(frame(&events[index]).payload, [byte; 10]);
            assert!(!frame(&events[index]).truncated);
        }
        let message = message(&events[3]);
        assert_eq!(message.content, b"aaaaaaaaaabbbbbbbbbbccccc");
        assert_eq!(message.len, 30);
        assert!(message.truncated);
        assert_eq!(message.frames, 3);
    }

    #[test]
    fn zero_cap_keeps_nothing_but_counts_everything() {
        let mut direction = WsDirection::new(Peer::Client, None, 0);
        let mut bytes = encode_frame(true, false, 1, Some(KEY), b"Hello");
        bytes.extend(encode_frame(
            true,
            false,
            8,
            Some(KEY),
            &[0x03, 0xe8, b'o', b'k'],
        ));
        let events = push_all(&mut direction, &bytes);
        let text = frame(&events[0]);
        assert_eq!(
            (text.payload.len(), text.payload_len, text.truncated),
            (0, 5, true)
        );
        let message = message(&events[1]);
        assert_eq!(
            (message.content.len(), message.len, message.truncated),
            (0, 5, true)
        );
        let close = frame(&events[2]);
        assert_eq!((close.payload.len(), close.payload_len), (0, 4));
        assert_eq!(close.close_code, Some(1000));
        assert_eq!(close.close_reason.as_deref(), Some("ok"));
    }

    // ---- close frames ----

    #[test]
    fn close_frames() {
        let mut direction = client();
        let mut bytes = encode_frame(true, false, 8, Some(KEY), &[0x03, 0xe8]);
        bytes.extend(encode_frame(
            true,
            false,
            8,
            Some(KEY),
            b"\x0f\xa0gone \xe2\x82\xac",
        ));
        bytes.extend(encode_frame(true, false, 8, Some(KEY), b""));
        let events = push_all(&mut direction, &bytes);
        assert!(!direction.failed(), "{events:?}");
        let frames = frames_in(&events);
        assert_eq!(frames[0].close_code, Some(1000));
        assert_eq!(frames[0].close_reason.as_deref(), Some(""));
        assert_eq!(frames[1].close_code, Some(4000));
        assert_eq!(frames[1].close_reason.as_deref(), Some("gone €"));
        assert_eq!(frames[1].payload, b"\x0f\xa0gone \xe2\x82\xac");
        assert_eq!(
            (frames[2].close_code, frames[2].close_reason.as_deref()),
            (None, None)
        );
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn close_body_is_judged_whole_even_when_cut_at_the_cap() {
        let mut direction = WsDirection::new(Peer::Server, None, 3);
        let events = push_all(
            &mut direction,
            &encode_frame(true, false, 8, None, b"\x03\xe9bye"),
        );
        let close = frame(&events[0]);
        assert_eq!(close.payload, b"\x03\xe9b");
        assert!(close.truncated);
        assert_eq!(
            (close.close_code, close.close_reason.as_deref()),
            (Some(1001), Some("bye"))
        );
    }

    // ---- protocol errors ----

    /// Feeds `bytes` and checks that exactly `frames_before` frames (and maybe a
    /// message) came before `error`, and that nothing is parsed afterwards.
    fn assert_fails(
        mut direction: WsDirection,
        bytes: &[u8],
        frames_before: usize,
        error: ProtocolError,
    ) {
        let events = push_all(&mut direction, bytes);
        assert_eq!(events.last(), Some(&WsEvent::Error(error)), "{events:?}");
        assert_eq!(frames_in(&events).len(), frames_before, "{events:?}");
        let errors = events
            .iter()
            .filter(|event| matches!(event, WsEvent::Error(_)))
            .count();
        assert_eq!(errors, 1);
        assert!(direction.failed());
        let frames = direction.frames();
        let wire_bytes = direction.wire_bytes();
        let valid = match direction.sender {
            Peer::Client => encode_frame(true, false, 1, Some(KEY), b"after"),
            Peer::Server => encode_frame(true, false, 1, None, b"after"),
        };
        assert!(push_all(&mut direction, &valid).is_empty());
        assert_eq!(direction.frames(), frames);
        assert_eq!(direction.wire_bytes(), wire_bytes + valid.len() as u64);
    }

    fn with_deflate(sender: Peer) -> WsDirection {
        deflating(sender, DeflateConfig::default())
    }

    #[test]
    fn reserved_opcodes() {
        for opcode in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            assert_fails(
                server(),
                &[0x80 | opcode, 0x00],
                0,
                ProtocolError::ReservedOpcode(opcode),
            );
        }
    }

    #[test]
    fn reserved_bits_without_extension() {
        let bits =
            |rsv1, rsv2, rsv3| ProtocolError::ReservedBitsWithoutExtension { rsv1, rsv2, rsv3 };
        assert_fails(server(), &[0xc1, 0x00], 0, bits(true, false, false));
        assert_fails(server(), &[0xa1, 0x00], 0, bits(false, true, false));
        assert_fails(server(), &[0x91, 0x00], 0, bits(false, false, true));
        assert_fails(server(), &[0xf1, 0x00], 0, bits(true, true, true));
        // Deflate claims RSV1 only.
        assert_fails(
            with_deflate(Peer::Server),
            &[0xe1, 0x00],
            0,
            bits(false, true, false),
        );
    }

    #[test]
    fn rsv1_only_on_the_first_frame_of_a_data_message() {
        assert_fails(
            with_deflate(Peer::Server),
            &[0x01, 0x01, b'a', 0xc0, 0x01, b'b'],
            1,
            ProtocolError::CompressedContinuation,
        );
        for opcode in [8u8, 9, 10] {
            assert_fails(
                with_deflate(Peer::Server),
                &[0xc0 | opcode, 0x00],
                0,
                ProtocolError::CompressedControlFrame { opcode },
            );
        }
    }

    #[test]
    fn control_frame_rules() {
        let mut too_long = vec![0x89, 0x7e, 0x00, 0x7e];
        too_long.extend_from_slice(&[0u8; 126]);
        assert_fails(
            server(),
            &too_long,
            0,
            ProtocolError::ControlFrameTooLong {
                opcode: 9,
                len: 126,
            },
        );
        assert_fails(
            server(),
            &[0x09, 0x00],
            0,
            ProtocolError::FragmentedControlFrame { opcode: 9 },
        );
        assert_fails(
            server(),
            &[0x08, 0x00],
            0,
            ProtocolError::FragmentedControlFrame { opcode: 8 },
        );
    }

    #[test]
    fn fragmentation_rules() {
        assert_fails(
            server(),
            &[0x80, 0x00],
            0,
            ProtocolError::ContinuationWithoutMessage,
        );
        assert_fails(
            server(),
            &[0x00, 0x00],
            0,
            ProtocolError::ContinuationWithoutMessage,
        );
        assert_fails(
            server(),
            &[0x01, 0x01, b'a', 0x82, 0x00],
            1,
            ProtocolError::DataFrameInsideMessage { opcode: 2 },
        );
        assert_fails(
            server(),
            &[0x02, 0x00, 0x89, 0x00, 0x01, 0x00],
            2,
            ProtocolError::DataFrameInsideMessage { opcode: 1 },
        );
        // A completed message lets a continuation dangle.
        assert_fails(
            server(),
            &[0x81, 0x00, 0x80, 0x00],
            1,
            ProtocolError::ContinuationWithoutMessage,
        );
    }

    #[test]
    fn masking_rules() {
        assert_fails(
            client(),
            &[0x81, 0x00],
            0,
            ProtocolError::UnmaskedClientFrame,
        );
        assert_fails(
            server(),
            &[0x81, 0x80, 1, 2, 3, 4],
            0,
            ProtocolError::MaskedServerFrame,
        );
    }

    #[test]
    fn length_with_most_significant_bit() {
        assert_fails(
            server(),
            &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1],
            0,
            ProtocolError::LengthMsbSet(0x8000_0000_0000_0001),
        );
    }

    #[test]
    fn close_body_rules() {
        assert_fails(
            server(),
            &[0x88, 0x01, 0x03],
            1,
            ProtocolError::CloseBodyTooShort,
        );
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let [high, low] = code.to_be_bytes();
            assert_fails(
                server(),
                &[0x88, 0x02, high, low],
                1,
                ProtocolError::InvalidCloseCode(code),
            );
        }
        assert_fails(
            server(),
            &[0x88, 0x04, 0x03, 0xe8, 0xff, 0xfe],
            1,
            ProtocolError::InvalidCloseReasonUtf8,
        );
        let mut direction = server();
        let events = push_all(&mut direction, &[0x88, 0x04, 0x03, 0xe8, 0xff, 0xfe]);
        assert_eq!(frame(&events[0]).close_code, Some(1000));
        assert_eq!(
            frame(&events[0]).close_reason.as_deref(),
            Some("\u{fffd}\u{fffd}")
        );
    }

    #[test]
    fn invalid_text_is_reported_after_its_message() {
        let mut direction = server();
        let events = push_all(&mut direction, &[0x81, 0x02, 0xc3, 0x28]);
        assert_eq!(events.len(), 3);
        assert_eq!(message(&events[1]).content, [0xc3, 0x28]);
        assert_eq!(events[2], WsEvent::Error(ProtocolError::InvalidTextUtf8));
        // Across fragments, a character split between frames is fine...
        let mut direction = server();
        let events = push_all(&mut direction, &[0x01, 0x01, 0xe2, 0x80, 0x02, 0x82, 0xac]);
        assert_eq!(message(&events[2]).content, "€".as_bytes());
        assert!(!direction.failed());
        // ...but an incomplete one at the end of the message is not.
        assert_fails(
            server(),
            &[0x81, 0x02, b'a', 0xe2],
            1,
            ProtocolError::InvalidTextUtf8,
        );
        // Binary messages are not judged.
        let mut direction = server();
        push_all(&mut direction, &[0x82, 0x02, 0xc3, 0x28]);
        assert!(!direction.failed());
    }

    #[test]
    fn truncated_text_is_judged_only_on_what_was_kept() {
        // "aaa€" cut after 4 bytes splits the euro sign: not an error.
        let mut direction = WsDirection::new(Peer::Server, None, 4);
        push_all(
            &mut direction,
            &encode_frame(true, false, 1, None, "aaa€".as_bytes()),
        );
        assert!(!direction.failed());
        // An invalid byte inside the kept part is an error all the same.
        let direction = WsDirection::new(Peer::Server, None, 4);
        assert_fails(
            direction,
            &[0x81, 0x06, 0xff, b'a', b'b', b'c', b'd', b'e'],
            1,
            ProtocolError::InvalidTextUtf8,
        );
    }

    #[test]
    fn inflate_failure() {
        let mut direction = with_deflate(Peer::Server);
        let events = push_all(&mut direction, &[0xc1, 0x03, 0xff, 0xff, 0xff]);
        assert!(
            matches!(
                events[..],
                [WsEvent::Error(ProtocolError::InflateFailed(_))]
            ),
            "{events:?}"
        );
        assert!(direction.failed());
        assert!(direction.mid_message());
    }

    #[test]
    fn header_errors_surface_after_two_bytes() {
        let mut direction = client();
        let events = push_all(&mut direction, &[0x81, 0x7f]);
        assert_eq!(events, [WsEvent::Error(ProtocolError::UnmaskedClientFrame)]);
    }

    // ---- foreign extensions ----

    #[test]
    fn foreign_extensions_own_unclaimed_bits_and_reserved_opcodes() {
        let mut direction = server().with_foreign_extensions(true);
        let mut bytes = vec![0xf1, 0x02, b'h', b'i']; // RSV1-3 on a text frame, no deflate
        bytes.extend_from_slice(&[0x01, 0x01, b'a']); // open a message
        bytes.extend_from_slice(&[0x83, 0x02, 0x01, 0x02]); // reserved non-control opcode
        bytes.extend_from_slice(&[0x8b, 0x01, 0x07]); // reserved control opcode
        bytes.extend_from_slice(&[0x80, 0x01, b'b']); // the message goes on undisturbed
        let events = push_all(&mut direction, &bytes);
        assert!(!direction.failed(), "{events:?}");
        let first = frame(&events[0]);
        assert!(first.rsv1 && first.rsv2 && first.rsv3 && !first.compressed);
        assert_eq!(message(&events[1]).content, b"hi");
        let opcodes: Vec<u8> = frames_in(&events)
            .iter()
            .map(|frame| frame.opcode)
            .collect();
        assert_eq!(opcodes, [1, 1, 3, 11, 0]);
        assert_eq!(frame(&events[3]).payload, [1, 2]);
        assert_eq!(message(&events[6]).content, b"ab");
        // Control rules still hold for reserved control opcodes.
        let direction = server().with_foreign_extensions(true);
        assert_fails(
            direction,
            &[0x0b, 0x00],
            0,
            ProtocolError::FragmentedControlFrame { opcode: 11 },
        );
    }

    #[test]
    fn deflate_keeps_rsv1_rules_alongside_foreign_extensions() {
        let direction = with_deflate(Peer::Server).with_foreign_extensions(true);
        assert_fails(
            direction,
            &[0xc9, 0x00],
            0,
            ProtocolError::CompressedControlFrame { opcode: 9 },
        );
        let mut direction = with_deflate(Peer::Server).with_foreign_extensions(true);
        let events = push_all(&mut direction, &FIRST_HELLO);
        assert_eq!(message(&events[1]).content, b"Hello");
    }

    // ---- bookkeeping ----

    #[test]
    fn counters_and_mid_message() {
        let mut direction = server();
        assert!(!direction.mid_message());
        assert!(push_all(&mut direction, &[0x01]).is_empty());
        assert!(direction.mid_message());
        push_all(&mut direction, &[0x02, b'a']);
        assert!(direction.mid_message());
        push_all(&mut direction, b"b");
        assert_eq!(direction.frames(), 1);
        assert!(direction.mid_message(), "the message is still open");
        push_all(&mut direction, &[0x89, 0x00]);
        assert!(direction.mid_message());
        push_all(&mut direction, &[0x80, 0x00]);
        assert!(!direction.mid_message());
        assert_eq!(direction.frames(), 3);
        assert_eq!(direction.wire_bytes(), 8);
        assert_eq!(direction.sender(), Peer::Server);
    }

    #[test]
    fn keep_capped_never_grows_past_the_cap() {
        let mut buffer = Vec::new();
        for _ in 0..100 {
            keep_capped(&mut buffer, 1000, &[7; 33]);
            assert!(buffer.capacity() <= 1000);
        }
        assert_eq!(buffer, [7; 1000]);
    }

    // ---- split invariance ----

    /// Client bytes: masked frames with varied keys, fragmented and compressed
    /// messages without context takeover, control frames between fragments, a
    /// truncated binary frame, a close, then a protocol error and trailing junk.
    fn client_stream() -> Vec<u8> {
        let keys = [KEY, [1, 2, 3, 4], [0xff, 0x00, 0x80, 0x7f], [0, 0, 0, 0]];
        let mut key_index = 0;
        let mut next_key = || {
            key_index += 1;
            Some(keys[key_index % keys.len()])
        };
        let mut bytes = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        bytes.extend(encode_frame(false, false, 1, next_key(), b"frag"));
        bytes.extend(encode_frame(true, false, 9, next_key(), b"ping"));
        bytes.extend(encode_frame(
            true,
            false,
            0,
            next_key(),
            "ment €".as_bytes(),
        ));
        let text = b"compress me, compress me, compress me please ".repeat(6);
        let compressed = compress_message(&mut new_compressor(), &text);
        bytes.extend(encode_frame(true, true, 1, next_key(), &compressed));
        let compressed = compress_message(&mut new_compressor(), &noise(300, 3));
        bytes.extend(encode_frame(false, true, 2, next_key(), &compressed[..100]));
        bytes.extend(encode_frame(true, false, 10, next_key(), b""));
        bytes.extend(encode_frame(
            false,
            false,
            0,
            next_key(),
            &compressed[100..250],
        ));
        bytes.extend(encode_frame(true, false, 0, next_key(), &compressed[250..]));
        bytes.extend(encode_frame(true, false, 2, next_key(), &noise(200, 4)));
        bytes.extend(encode_frame(true, false, 8, next_key(), b"\x03\xe8done"));
        bytes.extend_from_slice(&[0x83, 0x80, 1, 2, 3, 4, 0x81, 0x80]);
        bytes
    }

    /// Server bytes: unmasked, compressed messages sharing one window (context
    /// takeover), fragments of varied sizes, truncation, an invalid close code.
    fn server_stream() -> Vec<u8> {
        let mut compressor = new_compressor();
        let mut bytes = vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let greeting = b"{\"type\":\"greeting\",\"text\":\"hello there, hello there\"}";
        for _ in 0..3 {
            bytes.extend(encode_frame(
                true,
                true,
                1,
                None,
                &compress_message(&mut compressor, greeting),
            ));
        }
        let long = b"0123456789abcdef".repeat(40);
        let compressed = compress_message(&mut compressor, &long);
        let third = compressed.len() / 3;
        bytes.extend(encode_frame(false, true, 1, None, &compressed[..third]));
        bytes.extend(encode_frame(true, false, 9, None, b"mid"));
        bytes.extend(encode_frame(
            false,
            false,
            0,
            None,
            &compressed[third..2 * third],
        ));
        bytes.extend(encode_frame(true, false, 0, None, &compressed[2 * third..]));
        bytes.extend(encode_frame(
            true,
            true,
            2,
            None,
            &compress_message(&mut compressor, &[]),
        ));
        bytes.extend(encode_frame(true, false, 2, None, &noise(300, 5)));
        bytes.extend(encode_frame(false, false, 2, None, b""));
        bytes.extend(encode_frame(true, false, 0, None, b"tail"));
        bytes.extend(encode_frame(true, false, 8, None, b"\x03\xedbad code"));
        bytes.extend(encode_frame(true, false, 1, None, b"never parsed"));
        bytes
    }

    fn assert_split_invariant(make: impl Fn() -> WsDirection, bytes: &[u8]) -> Vec<WsEvent> {
        let mut whole = make();
        let expected = push_all(&mut whole, bytes);
        for chunk_len in 1..=bytes.len() {
            let mut direction = make();
            let events = push_in_chunks(&mut direction, bytes, chunk_len);
            assert_eq!(events, expected, "chunks of {chunk_len}");
            assert_eq!(direction.frames(), whole.frames());
            assert_eq!(direction.wire_bytes(), whole.wire_bytes());
            assert_eq!(direction.failed(), whole.failed());
        }
        // Irregular splits too.
        for seed in 0..50u64 {
            let sizes = noise(bytes.len(), seed);
            let mut direction = make();
            let mut events = Vec::new();
            let mut rest = bytes;
            let mut size_index = 0;
            while !rest.is_empty() {
                let len = (usize::from(sizes[size_index]) % 40).min(rest.len());
                size_index += 1;
                direction.push(&rest[..len], &mut events);
                rest = &rest[len..];
            }
            assert_eq!(events, expected, "irregular split, seed {seed}");
        }
        expected
    }

    #[test]
    fn client_stream_is_split_invariant() {
        let config = DeflateConfig {
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let events = assert_split_invariant(
            || WsDirection::new(Peer::Client, Some(config.clone()), 64),
            &client_stream(),
        );
        // The stream exercises what it claims to.
        let messages: Vec<&Message> = events
            .iter()
            .filter_map(|event| match event {
                WsEvent::Message(message) => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[1].content, "fragment €".as_bytes());
        assert!(messages[2].compressed && messages[2].truncated);
        assert_eq!(
            messages[2].content,
            b"compress me, compress me, compress me please ".repeat(6)[..64]
        );
        assert_eq!(messages[3].content, noise(300, 3)[..64]);
        assert_eq!((messages[3].len, messages[3].frames), (300, 3));
        assert!(messages[4].truncated);
        assert_eq!(frames_in(&events).last().unwrap().close_code, Some(1000));
        assert_eq!(
            events.last(),
            Some(&WsEvent::Error(ProtocolError::ReservedOpcode(3)))
        );
    }

    #[test]
    fn server_stream_is_split_invariant() {
        let events = assert_split_invariant(
            || WsDirection::new(Peer::Server, Some(DeflateConfig::default()), 200),
            &server_stream(),
        );
        let messages: Vec<&Message> = events
            .iter()
            .filter_map(|event| match event {
                WsEvent::Message(message) => Some(message),
                _ => None,
            })
            .collect();
        assert_eq!(messages.len(), 8);
        let greeting = b"{\"type\":\"greeting\",\"text\":\"hello there, hello there\"}";
        for message in &messages[1..4] {
            assert_eq!(message.content, greeting);
            assert!(message.compressed);
        }
        assert_eq!(messages[4].content, b"0123456789abcdef".repeat(40)[..200]);
        assert_eq!((messages[4].len, messages[4].frames), (640, 3));
        assert_eq!((messages[5].len, messages[5].compressed), (0, true));
        assert_eq!(messages[7].content, b"tail");
        assert_eq!(
            events.last(),
            Some(&WsEvent::Error(ProtocolError::InvalidCloseCode(1005)))
        );
    }

    /// Found by the `ws_frames` fuzz target: a frame whose data inflates to more
    /// than the decompressor's window, read in 16-byte pieces, was recorded 44
    /// bytes short (65,536 of 65,580): the decompressor still held output when a
    /// piece ran out. What is recorded must not depend on how TCP cut the bytes.
    #[test]
    fn inflated_lengths_do_not_depend_on_read_sizes() {
        let hex: String = [
            "0500c107aa180544030000c20b6260644acacc4b2caa0400c108ca0085a40212",
            "0900c15514ca3b0a80501043d1ad84a95318ffba15b1107c858520f82c44dcbb",
            "b19bcc3d4fe4fb483122ae635d720a22b6d5bb2eff2ba7fdf4980a42845f1551",
            "130dd1121dd11383d39fdd65200b3dc84646b2929986f9fd004255ecc1310100",
            "0000c2a0fea95d094f600000ff2700000000000000000000000000000000ffff",
            "ffffff0000000000000000000000000000000000000000000000000000000000",
            "00000000000000000000000000000000000000000000010000000000062ac907",
            "00",
        ]
        .concat();
        let stream: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let events = |piece: usize| {
            let mut direction = WsDirection::new(Peer::Server, Some(config.clone()), 4096)
                .with_foreign_extensions(true);
            let mut events = Vec::new();
            for chunk in stream.chunks(piece) {
                direction.push(chunk, &mut events);
            }
            events
        };
        let whole = events(stream.len());
        let big = whole.iter().find_map(|e| match e {
            WsEvent::Frame(f) if f.payload_len > 65_536 => Some(f.payload_len),
            _ => None,
        });
        assert_eq!(big, Some(65_580));
        for piece in [1, 16, 100] {
            assert!(events(piece) == whole, "pieces of {piece} bytes");
        }
    }
}
