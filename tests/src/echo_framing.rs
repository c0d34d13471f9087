//! Just enough RFC 6455 framing for the benchmark's echo peers (`ft-wsecho`): final
//! frames only, no extensions. The client masks with the all-zero key (valid: the RFC
//! asks for a key, and XOR with zero leaves the payload as it is), so one frame is
//! built once and sent again and again.
use anyhow::bail;
use tokio::io::{AsyncRead, AsyncReadExt as _};

pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;
/// Bytes read from a stream at most at once.
pub const READ_CHUNK: usize = 64 * 1024;

pub struct Header {
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

pub fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (payload_len, mut at) = match b[1] & 0x7f {
        126 => (
            u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let key = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    Some(Header {
        opcode: b[0] & 0x0f,
        mask,
        header_len: at,
        payload_len,
    })
}

/// A final frame's header; masked with the zero key when `masked`.
pub fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, masked: bool) {
    out.push(0x80 | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&[0; 4]);
    }
}

pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    push_header(&mut frame, opcode, payload.len(), true);
    frame.extend_from_slice(payload);
    frame
}

pub fn unmask(payload: &mut [u8], key: [u8; 4]) {
    if key == [0; 4] {
        return;
    }
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Bytes read but not yet consumed, read in chunks of [`READ_CHUNK`].
pub struct Inbox {
    pub buf: Vec<u8>,
    pub start: usize,
}

impl Inbox {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads once more; false at end of stream.
    pub async fn fill(&mut self, from: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<bool> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK);
        Ok(from.read_buf(&mut self.buf).await? > 0)
    }

    /// One whole frame: its header, and where its payload lies in `pending()`.
    pub async fn frame(
        &mut self,
        from: &mut (impl AsyncRead + Unpin),
    ) -> anyhow::Result<Option<(Header, std::ops::Range<usize>)>> {
        loop {
            if let Some(h) = parse_header(self.pending()) {
                let end = h.header_len + h.payload_len;
                if self.pending().len() >= end {
                    let range = h.header_len..end;
                    return Ok(Some((h, range)));
                }
                self.buf.reserve(end.saturating_sub(self.pending().len()));
            }
            if !self.fill(from).await? {
                return Ok(None);
            }
        }
    }

    /// The HTTP head up to the blank line, consumed.
    pub async fn head(&mut self, from: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.pending().windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.pending()[..end]).into_owned();
                self.consume(end + 4);
                return Ok(head);
            }
            if !self.fill(from).await? {
                bail!("the peer closed before the end of the HTTP head");
            }
        }
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form_parse_back() {
        for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
            for masked in [false, true] {
                let mut frame = Vec::new();
                push_header(&mut frame, OP_BINARY, len, masked);
                let h = parse_header(&frame).expect("whole header");
                assert_eq!(
                    (h.opcode, h.payload_len, h.header_len),
                    (OP_BINARY, len, frame.len())
                );
                assert_eq!(h.mask, masked.then_some([0; 4]));
                assert!(parse_header(&frame[..frame.len() - 1]).is_none());
            }
        }
    }

    #[test]
    fn unmasking_matches_the_rfc_example() {
        // RFC 6455 5.7: "Hello" masked with 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        unmask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&payload, b"Hello");
        let mut long: Vec<u8> = (0..37u8).collect();
        let key = [1, 2, 3, 4];
        unmask(&mut long, key);
        let expected: Vec<u8> = (0..37u8).map(|b| b ^ key[b as usize % 4]).collect();
        assert_eq!(long, expected);
    }

    #[tokio::test]
    async fn an_inbox_yields_whole_frames_across_reads() {
        let mut wire = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        wire.extend(client_frame(OP_BINARY, &[7; 70_000]));
        wire.extend(client_frame(OP_CLOSE, &1000u16.to_be_bytes()));
        let mut stream = &wire[..];
        let mut inbox = Inbox::new();
        assert!(
            inbox
                .head(&mut stream)
                .await
                .unwrap()
                .starts_with("HTTP/1.1 101")
        );
        let (h, range) = inbox.frame(&mut stream).await.unwrap().unwrap();
        assert_eq!((h.opcode, range.len()), (OP_BINARY, 70_000));
        inbox.consume(h.header_len + h.payload_len);
        let (h, _) = inbox.frame(&mut stream).await.unwrap().unwrap();
        assert_eq!(h.opcode, OP_CLOSE);
        inbox.consume(h.header_len + h.payload_len);
        assert!(inbox.frame(&mut stream).await.unwrap().is_none());
    }
}
