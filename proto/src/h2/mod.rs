//! HTTP/2 (RFC 9113) for recording, sans-IO: one [`H2Direction`] per direction reads
//! the frames the agent forwards and reports what they carry: header blocks
//! (HPACK-decoded by [`hpack`], so every block of the connection is decoded in order
//! to keep the dynamic table in step), DATA payload as ranges of the bytes pushed,
//! stream ends and resets, and what flow control needs (DATA lengths, window
//! updates, the initial stream window), so that the session can keep the peers'
//! windows right when it changes what a WebSocket stream carries. PING, priorities
//! and other settings are the peers' business.
//!
//! After a violation of the framing (a wrong preface, a CONTINUATION missing, a header
//! block HPACK cannot decode) a direction reports one [`H2Event::Error`] and stops
//! reading; the bytes still flow, and the peers decide. Memory stays bounded: DATA
//! is never buffered, header blocks up to [`MAX_HEADER_BLOCK`].
mod frame;
pub mod hpack;
#[cfg(test)]
mod tests;

use std::ops::Range;

pub use frame::{
    CLIENT_PREFACE, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, FrameHeader, HEADER_LEN,
    SETTINGS_INITIAL_WINDOW_SIZE, error_name, flag, frame_bytes, kind,
};

/// Largest header block (HEADERS or PUSH_PROMISE with its CONTINUATIONs) read.
pub const MAX_HEADER_BLOCK: usize = 4 << 20;

/// Largest SETTINGS frame read (a thousand settings; peers send a handful).
const MAX_SETTINGS_FRAME: usize = 6 * 1024;

/// A header field as decoded (pseudo-header fields such as `:path` included).
pub type Field = (String, String);

/// What a direction's bytes carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum H2Event {
    /// A complete header block on `stream`: a request, a response (interim ones
    /// included) or trailers. `end_stream`: the sender's last frame on the stream.
    Headers {
        stream: u32,
        fields: Vec<Field>,
        end_stream: bool,
    },
    /// The server announces a pushed request on `promised`.
    PushPromise {
        stream: u32,
        promised: u32,
        fields: Vec<Field>,
    },
    /// A DATA frame on `stream` begins: `len` payload bytes, padding included, which
    /// is what flow control counts (RFC 9113 §6.9.1). Its data follows as [`Self::Data`].
    DataFrame {
        stream: u32,
        len: usize,
    },
    /// DATA payload (padding left out) of `stream`: `range` indexes the bytes of
    /// the [`H2Direction::push`] that reported it.
    Data {
        stream: u32,
        range: Range<usize>,
    },
    /// The sender ended `stream` with its DATA (END_STREAM after the payload).
    End {
        stream: u32,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
    /// The receiver of `stream`'s DATA (0: of the whole connection's) allows
    /// `increment` more bytes.
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    /// SETTINGS (not an acknowledgement) that set the sender's initial stream window.
    InitialWindow(u32),
    /// Not HTTP/2 as RFC 9113 says; this direction reads no more.
    Error(String),
}

/// The frame being read.
struct Frame {
    header: FrameHeader,
    /// Payload bytes read so far.
    read: usize,
    /// DATA: where the data ends in the payload, once the pad length is known.
    data_end: Option<usize>,
    /// Payload kept for frames that are interpreted once whole.
    payload: Vec<u8>,
}

/// A header block waiting for its CONTINUATION frames.
struct Block {
    stream: u32,
    promised: Option<u32>,
    end_stream: bool,
    fragment: Vec<u8>,
}

/// One direction of an HTTP/2 connection.
pub struct H2Direction {
    /// Bytes of the client's connection preface still expected.
    preface_left: usize,
    head: [u8; HEADER_LEN],
    head_len: usize,
    frame: Option<Frame>,
    block: Option<Block>,
    hpack: hpack::HpackDecoder,
    failed: bool,
}

impl H2Direction {
    /// The client's direction, which starts with the connection preface.
    pub fn client() -> Self {
        Self::new(CLIENT_PREFACE.len())
    }

    /// The server's direction.
    pub fn server() -> Self {
        Self::new(0)
    }

    fn new(preface_left: usize) -> Self {
        H2Direction {
            preface_left,
            head: [0; HEADER_LEN],
            head_len: 0,
            frame: None,
            block: None,
            hpack: hpack::HpackDecoder::new(),
            failed: false,
        }
    }

    /// Whether this direction stopped reading after an error.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether the bytes pushed so far end a frame and no header block is waiting
    /// for CONTINUATION: a frame of frametap's may go next in this direction.
    pub fn at_frame_boundary(&self) -> bool {
        self.preface_left == 0
            && self.head_len == 0
            && self.frame.is_none()
            && !self.in_header_block()
    }

    /// Whether a header block began and its CONTINUATION frames have not all come.
    pub fn in_header_block(&self) -> bool {
        self.block.is_some()
    }

    /// How many of the next bytes surely belong to the preface, frame header or
    /// frame payload being read (never 0): pushing at most these never goes past a
    /// frame boundary.
    pub fn bytes_in_current_frame(&self) -> usize {
        match &self.frame {
            _ if self.preface_left > 0 => self.preface_left,
            Some(f) => f.header.len - f.read,
            None => HEADER_LEN - self.head_len,
        }
    }

    /// Reads `bytes`, the next ones of this direction, reporting into `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<H2Event>) {
        let mut i = 0;
        while i < bytes.len() && !self.failed {
            if self.preface_left > 0 {
                let seen = CLIENT_PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(bytes.len() - i);
                if bytes[i..i + n] != CLIENT_PREFACE[seen..seen + n] {
                    return self.fail("the client did not start with the HTTP/2 preface", out);
                }
                self.preface_left -= n;
                i += n;
                continue;
            }
            let Some(frame) = &mut self.frame else {
                let n = (HEADER_LEN - self.head_len).min(bytes.len() - i);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[i..i + n]);
                self.head_len += n;
                i += n;
                if self.head_len == HEADER_LEN {
                    self.head_len = 0;
                    self.start_frame(FrameHeader::parse(&self.head), out);
                }
                continue;
            };
            let n = (frame.header.len - frame.read).min(bytes.len() - i);
            if frame.header.kind == kind::DATA {
                if let Some(range) = data_in(frame, &bytes[i..i + n], i) {
                    if !range.is_empty() {
                        out.push(H2Event::Data {
                            stream: frame.header.stream,
                            range,
                        });
                    }
                } else {
                    return self.fail("a DATA frame's padding is longer than the frame", out);
                }
            } else {
                let keep = kept_len(frame.header.kind).saturating_sub(frame.payload.len());
                frame.payload.extend_from_slice(&bytes[i..i + n.min(keep)]);
            }
            frame.read += n;
            i += n;
            if frame.read == frame.header.len {
                self.end_frame(out);
            }
        }
    }

    fn start_frame(&mut self, header: FrameHeader, out: &mut Vec<H2Event>) {
        if self.block.is_some() && header.kind != kind::CONTINUATION {
            return self.fail("a header block was not followed by its CONTINUATION", out);
        }
        if matches!(
            header.kind,
            kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION
        ) && self.block.as_ref().map_or(0, |b| b.fragment.len()) + header.len > MAX_HEADER_BLOCK
        {
            let why = format!("a header block longer than {MAX_HEADER_BLOCK} bytes");
            return self.fail(&why, out);
        }
        if header.kind == kind::DATA {
            out.push(H2Event::DataFrame {
                stream: header.stream,
                len: header.len,
            });
        }
        self.frame = Some(Frame {
            header,
            read: 0,
            data_end: None,
            payload: Vec::new(),
        });
        if header.len == 0 {
            self.end_frame(out);
        }
    }

    fn end_frame(&mut self, out: &mut Vec<H2Event>) {
        let Some(frame) = self.frame.take() else {
            return;
        };
        let h = frame.header;
        let p = frame.payload;
        match h.kind {
            kind::DATA if h.has(flag::PADDED) && h.len == 0 => {
                self.fail("a padded DATA frame without its pad length", out)
            }
            kind::DATA if h.has(flag::END_STREAM) => out.push(H2Event::End { stream: h.stream }),
            kind::HEADERS | kind::PUSH_PROMISE => {
                let promised_len = if h.kind == kind::PUSH_PROMISE { 4 } else { 0 };
                let priority_len = if h.has(flag::PRIORITY) && h.kind == kind::HEADERS {
                    5
                } else {
                    0
                };
                let Some(body) = unpadded(&h, &p) else {
                    return self.fail("a header frame's padding is longer than the frame", out);
                };
                if body.len() < promised_len + priority_len {
                    return self.fail("a header frame too short for its fields", out);
                }
                let promised = (promised_len == 4).then(|| {
                    u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff
                });
                self.block = Some(Block {
                    stream: h.stream,
                    promised,
                    end_stream: h.kind == kind::HEADERS && h.has(flag::END_STREAM),
                    fragment: body[promised_len + priority_len..].to_vec(),
                });
                if h.has(flag::END_HEADERS) {
                    self.decode_block(out);
                }
            }
            kind::CONTINUATION => match &mut self.block {
                Some(block) if block.stream == h.stream => {
                    block.fragment.extend_from_slice(&p);
                    if h.has(flag::END_HEADERS) {
                        self.decode_block(out);
                    }
                }
                _ => self.fail("a CONTINUATION frame without a header block", out),
            },
            kind::RST_STREAM if p.len() == 4 => out.push(H2Event::Reset {
                stream: h.stream,
                code: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            }),
            kind::GOAWAY if p.len() >= 8 => out.push(H2Event::GoAway {
                last_stream: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            }),
            kind::RST_STREAM | kind::GOAWAY => self.fail("a RST_STREAM or GOAWAY too short", out),
            kind::WINDOW_UPDATE if p.len() == 4 => out.push(H2Event::WindowUpdate {
                stream: h.stream,
                increment: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
            }),
            kind::WINDOW_UPDATE => self.fail("a WINDOW_UPDATE that is not 4 bytes long", out),
            kind::SETTINGS if !h.has(flag::ACK) => {
                if h.len % 6 != 0 {
                    return self.fail("a SETTINGS frame whose length is not a multiple of 6", out);
                }
                let initial = p
                    .chunks_exact(6)
                    .rev()
                    .find(|s| u16::from_be_bytes([s[0], s[1]]) == SETTINGS_INITIAL_WINDOW_SIZE)
                    .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
                if let Some(window) = initial {
                    out.push(H2Event::InitialWindow(window));
                }
            }
            // PING, PRIORITY, SETTINGS acknowledgements and extensions: the peers'.
            _ => {}
        }
    }

    fn decode_block(&mut self, out: &mut Vec<H2Event>) {
        let Some(block) = self.block.take() else {
            return;
        };
        let mut fields = Vec::new();
        let decoded = self.hpack.decode(&block.fragment, |name, value| {
            fields.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        });
        if let Err(e) = decoded {
            return self.fail(&format!("a header block HPACK cannot decode ({e})"), out);
        }
        out.push(match block.promised {
            Some(promised) => H2Event::PushPromise {
                stream: block.stream,
                promised,
                fields,
            },
            None => H2Event::Headers {
                stream: block.stream,
                fields,
                end_stream: block.end_stream,
            },
        });
    }

    fn fail(&mut self, why: &str, out: &mut Vec<H2Event>) {
        self.failed = true;
        self.frame = None;
        self.block = None;
        out.push(H2Event::Error(why.to_string()));
    }
}

/// Payload bytes kept of a frame of `kind` (interpreted once the frame is whole).
fn kept_len(kind: u8) -> usize {
    match kind {
        kind::HEADERS | kind::PUSH_PROMISE | kind::CONTINUATION => MAX_HEADER_BLOCK,
        kind::RST_STREAM | kind::GOAWAY => 8,
        kind::WINDOW_UPDATE => 4,
        // Six bytes per setting; a peer sends a handful.
        kind::SETTINGS => MAX_SETTINGS_FRAME,
        _ => 0,
    }
}

/// A frame's payload without its pad length and padding (None: the padding is
/// longer than the frame).
fn unpadded<'a>(h: &FrameHeader, p: &'a [u8]) -> Option<&'a [u8]> {
    if !h.has(flag::PADDED) {
        return Some(p);
    }
    let pad = usize::from(*p.first()?);
    p.len().checked_sub(1 + pad).map(|len| &p[1..1 + len])
}

/// The part of `chunk` (payload bytes of a DATA frame, pushed at `at`) that is data
/// rather than pad length or padding, as a range of the pushed bytes. None when the
/// padding is longer than the frame.
fn data_in(frame: &mut Frame, chunk: &[u8], at: usize) -> Option<Range<usize>> {
    let h = frame.header;
    let start = usize::from(h.has(flag::PADDED));
    if frame.data_end.is_none() {
        if !h.has(flag::PADDED) {
            frame.data_end = Some(h.len);
        } else if let Some(&pad) = chunk.first() {
            frame.data_end = Some(h.len.checked_sub(1 + usize::from(pad))? + 1);
        }
    }
    let end = frame.data_end.unwrap_or(start);
    let lo = frame.read.max(start);
    let hi = (frame.read + chunk.len()).min(end);
    Some(if lo < hi {
        at + lo - frame.read..at + hi - frame.read
    } else {
        at..at
    })
}
