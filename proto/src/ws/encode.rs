//! Frame and message encoding: for messages frametap injects or rewrites, and for tests.

use flate2::{Compress, Compression, FlushCompress, Status};

use super::mask::apply_mask;

/// The empty stored block a sync flush ends with, which permessage-deflate senders
/// strip (RFC 7692 7.2.1).
const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses whole messages for permessage-deflate, each on its own: nothing
/// refers back to earlier messages, so the result is valid whatever window the
/// receiver keeps (with or without context takeover).
pub struct Deflater {
    compress: Compress,
}

impl Deflater {
    /// `max_window_bits` is what the sender of these messages negotiated. Below 15
    /// the receiver may keep a smaller window than our compressor would use, so
    /// the output is then made of stored blocks (valid deflate, no back-references).
    pub fn new(max_window_bits: u8) -> Self {
        let level = if max_window_bits >= 15 {
            Compression::fast()
        } else {
            Compression::none()
        };
        Self {
            compress: Compress::new(level, false),
        }
    }

    /// The message's compressed payload, sync trailer stripped.
    pub fn compress_message(&mut self, message: &[u8]) -> Vec<u8> {
        self.compress.reset();
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let mut input = message;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.compress.total_in();
            let status = self
                .compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("compressing into a growable buffer cannot fail");
            let used = usize::try_from(self.compress.total_in() - before).unwrap_or(input.len());
            input = &input[used..];
            let room_left = out.capacity() > out.len();
            if input.is_empty() && room_left && matches!(status, Status::Ok | Status::BufError) {
                break;
            }
        }
        if out.ends_with(&SYNC_TRAILER) {
            out.truncate(out.len() - SYNC_TRAILER.len());
        }
        out
    }
}

/// Encodes a whole data message as one final frame: text (opcode 1) or binary
/// (2), compressed with RSV1 set when `deflater` is given, masked with `mask`
/// when it goes to the server.
pub fn encode_message(
    is_text: bool,
    content: &[u8],
    mask: Option<[u8; 4]>,
    deflater: Option<&mut Deflater>,
) -> Vec<u8> {
    let opcode = if is_text { 1 } else { 2 };
    match deflater {
        Some(deflater) => {
            let payload = deflater.compress_message(content);
            encode_frame(true, true, opcode, mask, &payload)
        }
        None => encode_frame(true, false, opcode, mask, content),
    }
}

/// A close frame's payload: the code, then the reason (cut to fit the 125-byte
/// control frame limit on a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// Encodes one frame with the minimal length encoding. `opcode` keeps only its
/// low four bits; `mask` is the client's masking key (clients must mask, servers
/// must not). RSV2 and RSV3 stay clear: no extension we speak uses them.
pub fn encode_frame(
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0x00 };
    match u16::try_from(payload.len()) {
        Ok(len @ 0..=125) => frame.push(mask_bit | len as u8),
        Ok(len) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    let payload_start = match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.len()
        }
        None => frame.len(),
    };
    frame.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut frame[payload_start..], key, 0);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_examples() {
        assert_eq!(
            encode_frame(true, false, 1, None, b"Hello"),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(true, false, 1, Some([0x37, 0xfa, 0x21, 0x3d]), b"Hello"),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        assert_eq!(
            encode_frame(false, false, 1, None, b"Hel"),
            [0x01, 0x03, 0x48, 0x65, 0x6c]
        );
        assert_eq!(
            encode_frame(true, false, 0, None, b"lo"),
            [0x80, 0x02, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(true, false, 9, None, b"Hello"),
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(true, false, 10, Some([0x37, 0xfa, 0x21, 0x3d]), b"Hello"),
            [
                0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn rfc7692_compressed_hello_header() {
        let payload = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            encode_frame(true, true, 1, None, &payload),
            [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
    }

    #[test]
    fn uses_minimal_length_encoding() {
        let header_of = |len: usize, mask: Option<[u8; 4]>| {
            let frame = encode_frame(true, false, 2, mask, &vec![0u8; len]);
            let header_len = frame.len() - len;
            frame[..header_len].to_vec()
        };
        assert_eq!(header_of(0, None), [0x82, 0]);
        assert_eq!(header_of(125, None), [0x82, 125]);
        assert_eq!(header_of(126, None), [0x82, 126, 0, 126]);
        assert_eq!(header_of(256, None), [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(header_of(65535, None), [0x82, 126, 0xff, 0xff]);
        assert_eq!(header_of(65536, None), [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            header_of(126, Some([1, 2, 3, 4])),
            [0x82, 0xfe, 0, 126, 1, 2, 3, 4]
        );
    }

    fn parse(sender: crate::Peer, deflate: bool, bytes: &[u8]) -> Vec<super::super::WsEvent> {
        let config = deflate.then(super::super::DeflateConfig::default);
        let mut direction = super::super::WsDirection::new(sender, config, 1 << 20);
        let mut events = Vec::new();
        direction.push(bytes, &mut events);
        events
    }

    fn message_of(events: &[super::super::WsEvent]) -> super::super::Message {
        events
            .iter()
            .find_map(|e| match e {
                super::super::WsEvent::Message(m) => Some(m.clone()),
                _ => None,
            })
            .expect("a message")
    }

    #[test]
    fn compressed_messages_inflate_back_on_any_window() {
        let text = "the same words, the same words, the same words again".repeat(50);
        for bits in [15, 9] {
            let mut deflater = Deflater::new(bits);
            // Two messages in a row: each stands alone.
            for _ in 0..2 {
                let bytes = encode_message(true, text.as_bytes(), None, Some(&mut deflater));
                assert_eq!(bytes[0], 0xc1, "FIN, RSV1, text");
                if bits == 15 {
                    assert!(bytes.len() < text.len() / 4, "compressed: {}", bytes.len());
                }
                let message = message_of(&parse(crate::Peer::Server, true, &bytes));
                assert!(message.compressed && message.is_text);
                assert_eq!(message.content, text.as_bytes());
            }
        }
        let mut deflater = Deflater::new(15);
        let empty = encode_message(false, b"", Some([1, 2, 3, 4]), Some(&mut deflater));
        let message = message_of(&parse(crate::Peer::Client, true, &empty));
        assert_eq!((message.is_text, message.content.len()), (false, 0));
    }

    #[test]
    fn plain_masked_message_and_close_payload() {
        let bytes = encode_message(false, &[0, 1, 2, 255], Some([9, 8, 7, 6]), None);
        let message = message_of(&parse(crate::Peer::Client, false, &bytes));
        assert_eq!(message.content, [0, 1, 2, 255]);
        assert_eq!(close_payload(4000, "bye"), b"\x0f\xa0bye");
        let long = "é".repeat(100);
        let payload = close_payload(1000, &long);
        assert!(payload.len() <= 125);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }

    #[test]
    fn opcode_keeps_only_its_low_bits() {
        assert_eq!(encode_frame(true, false, 0xf2, None, b"")[0], 0x82);
    }
}
