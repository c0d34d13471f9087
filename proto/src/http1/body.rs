//! Finding where a message body ends (RFC 9112 sections 6 and 7.1) by counting its
//! bytes. Body bytes are never copied or stored: a Content-Length body and the data
//! of each chunk are skipped in one step, only the few framing bytes of the chunked
//! coding (sizes, CRLFs, trailer lines) are looked at one by one. Where the body's
//! data lies in the input (the chunked framing left out) is reported as ranges, for
//! a caller that wants to record it.

use std::ops::Range;

use super::message::{HttpError, MAX_HEAD_LEN};

/// Longest chunk-size line (size, extensions, line end) accepted. Extensions are
/// rare and short; a longer line is garbage or an attack.
const MAX_CHUNK_LINE_LEN: usize = 4096;
/// Longest trailer section accepted: trailers are header fields, so the head limit.
const MAX_TRAILER_LEN: usize = MAX_HEAD_LEN;

/// How the end of a body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (more than zero).
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Everything until the server closes (responses only).
    UntilClose,
}

/// Counts one body as it passes.
#[derive(Debug)]
pub(super) struct BodyReader {
    kind: BodyKind,
    /// Bytes of the body seen on the wire so far, chunk framing included.
    wire_len: u64,
}

#[derive(Debug)]
enum BodyKind {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// What one [`BodyReader::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Progress {
    /// Input bytes that belonged to the body.
    pub(super) used: usize,
    /// The body is over; input after `used` belongs to what follows.
    pub(super) done: bool,
}

impl BodyReader {
    /// A reader for a body that is not [`Framing::Empty`] (that one needs none).
    pub(super) fn new(framing: Framing) -> Self {
        let kind = match framing {
            Framing::Empty => BodyKind::Length { remaining: 0 },
            Framing::Length(len) => BodyKind::Length { remaining: len },
            Framing::Chunked => BodyKind::Chunked(ChunkedDecoder::new()),
            Framing::UntilClose => BodyKind::UntilClose,
        };
        Self { kind, wire_len: 0 }
    }

    /// Takes what of `input` belongs to the body. `data` is called with the ranges of
    /// `input` that hold the body's data (for a chunked body, the chunk data without
    /// the framing), in order; never with an empty range.
    pub(super) fn feed(
        &mut self,
        input: &[u8],
        data: &mut impl FnMut(Range<usize>),
    ) -> Result<Progress, HttpError> {
        let progress = match &mut self.kind {
            BodyKind::Length { remaining } => {
                let used = (*remaining).min(input.len() as u64);
                *remaining -= used;
                Progress {
                    // `used` is at most `input.len()`, so it fits.
                    used: used as usize,
                    done: *remaining == 0,
                }
            }
            BodyKind::Chunked(decoder) => decoder.feed(input, data)?,
            BodyKind::UntilClose => Progress {
                used: input.len(),
                done: false,
            },
        };
        if !matches!(self.kind, BodyKind::Chunked(_)) && progress.used > 0 {
            data(0..progress.used);
        }
        self.wire_len += progress.used as u64;
        Ok(progress)
    }

    /// Bytes of the body on the wire so far.
    pub(super) fn wire_len(&self) -> u64 {
        self.wire_len
    }

    /// Whether the peer closing ends this body properly.
    pub(super) fn ends_at_close(&self) -> bool {
        matches!(self.kind, BodyKind::UntilClose)
    }
}

/// Where the chunked decoder is within `chunked-body` (RFC 9112 section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size.
    Size { size: u64, any_digit: bool },
    /// After the size digits: whitespace and `;` extensions until the line ends.
    SizeLineRest { size: u64, in_extension: bool },
    /// A CR ended the chunk-size line; LF must follow.
    SizeLineLf { size: u64 },
    /// Chunk data still to skip.
    Data { remaining: u64 },
    /// The chunk data is over; CRLF must follow.
    DataCr,
    /// The CR after the chunk data came; LF must follow.
    DataLf,
    /// Trailer field lines after the last chunk, up to an empty line.
    Trailer {
        line_has_content: bool,
        after_cr: bool,
    },
    /// The final empty line has passed.
    Done,
}

/// Tracks the chunked transfer coding byte by byte, skipping chunk data by count.
#[derive(Debug)]
struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes of the current chunk-size line.
    line_len: usize,
    /// Bytes of the trailer section.
    trailer_len: usize,
}

impl ChunkedDecoder {
    fn new() -> Self {
        Self {
            state: ChunkState::Size {
                size: 0,
                any_digit: false,
            },
            line_len: 0,
            trailer_len: 0,
        }
    }

    fn feed(
        &mut self,
        input: &[u8],
        data: &mut impl FnMut(Range<usize>),
    ) -> Result<Progress, HttpError> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => {
                    return Ok(Progress {
                        used: pos,
                        done: true,
                    });
                }
                ChunkState::Data { remaining } => {
                    if pos == input.len() {
                        break;
                    }
                    let skipped = remaining.min((input.len() - pos) as u64);
                    // `skipped` is at most what is left of `input`, so it fits.
                    data(pos..pos + skipped as usize);
                    pos += skipped as usize;
                    self.state = match remaining - skipped {
                        0 => ChunkState::DataCr,
                        remaining => ChunkState::Data { remaining },
                    };
                }
                state => {
                    let Some(&byte) = input.get(pos) else { break };
                    pos += 1;
                    self.state = self.after_byte(state, byte)?;
                }
            }
        }
        Ok(Progress {
            used: pos,
            done: false,
        })
    }

    /// The state after one framing byte. `Data` and `Done` are handled by
    /// [`feed`](Self::feed) and never get here.
    fn after_byte(&mut self, state: ChunkState, byte: u8) -> Result<ChunkState, HttpError> {
        match state {
            ChunkState::Size { size, any_digit } => {
                self.count_line_byte()?;
                match hex_digit_value(byte) {
                    Some(digit) => {
                        let size = size
                            .checked_mul(16)
                            .and_then(|size| size.checked_add(digit))
                            .ok_or(HttpError::BadChunk("chunk size does not fit 64 bits"))?;
                        Ok(ChunkState::Size {
                            size,
                            any_digit: true,
                        })
                    }
                    None if !any_digit => Err(HttpError::BadChunk("chunk size missing")),
                    None => self.size_line_rest(size, false, byte),
                }
            }
            ChunkState::SizeLineRest { size, in_extension } => {
                self.count_line_byte()?;
                self.size_line_rest(size, in_extension, byte)
            }
            ChunkState::SizeLineLf { size } if byte == b'\n' => Ok(self.end_size_line(size)),
            ChunkState::SizeLineLf { .. } => {
                Err(HttpError::BadChunk("CR without LF after chunk size"))
            }
            ChunkState::DataCr if byte == b'\r' => Ok(ChunkState::DataLf),
            ChunkState::DataCr | ChunkState::DataLf if byte == b'\n' => Ok(self.start_chunk()),
            ChunkState::DataCr | ChunkState::DataLf => {
                Err(HttpError::BadChunk("chunk data not followed by CRLF"))
            }
            ChunkState::Trailer {
                line_has_content,
                after_cr,
            } => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILER_LEN {
                    return Err(HttpError::BadChunk("trailer section too large"));
                }
                match byte {
                    b'\n' if line_has_content => Ok(ChunkState::Trailer {
                        line_has_content: false,
                        after_cr: false,
                    }),
                    b'\n' => Ok(ChunkState::Done),
                    _ if after_cr => Err(HttpError::BadChunk("CR without LF in trailer")),
                    b'\r' => Ok(ChunkState::Trailer {
                        line_has_content,
                        after_cr: true,
                    }),
                    _ => Ok(ChunkState::Trailer {
                        line_has_content: true,
                        after_cr: false,
                    }),
                }
            }
            ChunkState::Data { .. } | ChunkState::Done => Ok(state),
        }
    }

    /// After the size digits: `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`
    /// up to the line end. Extensions are skipped without checking their grammar,
    /// but control bytes in them are refused.
    fn size_line_rest(
        &mut self,
        size: u64,
        in_extension: bool,
        byte: u8,
    ) -> Result<ChunkState, HttpError> {
        match byte {
            b'\r' => Ok(ChunkState::SizeLineLf { size }),
            b'\n' => Ok(self.end_size_line(size)),
            b';' => Ok(ChunkState::SizeLineRest {
                size,
                in_extension: true,
            }),
            b' ' | b'\t' => Ok(ChunkState::SizeLineRest { size, in_extension }),
            0x21..=0x7e | 0x80..=0xff if in_extension => {
                Ok(ChunkState::SizeLineRest { size, in_extension })
            }
            _ => Err(HttpError::BadChunk("invalid byte in chunk-size line")),
        }
    }

    fn count_line_byte(&mut self) -> Result<(), HttpError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE_LEN {
            return Err(HttpError::BadChunk("chunk-size line too long"));
        }
        Ok(())
    }

    fn end_size_line(&mut self, size: u64) -> ChunkState {
        self.line_len = 0;
        if size == 0 {
            ChunkState::Trailer {
                line_has_content: false,
                after_cr: false,
            }
        } else {
            ChunkState::Data { remaining: size }
        }
    }

    fn start_chunk(&mut self) -> ChunkState {
        self.line_len = 0;
        ChunkState::Size {
            size: 0,
            any_digit: false,
        }
    }
}

fn hex_digit_value(byte: u8) -> Option<u64> {
    char::from(byte).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes; returns the body's wire length once
    /// it is done, and checks it ended where expected.
    fn body_end(framing: Framing, input: &[u8], chunk: usize) -> Result<Option<u64>, HttpError> {
        Ok(body_data(framing, input, chunk)?.map(|(len, _)| len))
    }

    /// [`body_end`], with the body's data as the reader reported it.
    fn body_data(
        framing: Framing,
        input: &[u8],
        chunk: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, HttpError> {
        let mut reader = BodyReader::new(framing);
        let mut data = Vec::new();
        for piece in input.chunks(chunk) {
            let progress = reader.feed(piece, &mut |range| {
                assert!(!range.is_empty());
                data.extend_from_slice(&piece[range]);
            })?;
            if progress.done {
                return Ok(Some((reader.wire_len(), data)));
            }
            assert_eq!(progress.used, piece.len());
        }
        Ok(None)
    }

    #[test]
    fn data_ranges_leave_the_chunked_framing_out() {
        let body: &[u8] = b"5;name=value\r\nhello\r\nA\r\n, world!!!\r\n0\r\nTrailer: 1\r\n\r\n";
        for chunk in 1..=body.len() {
            assert_eq!(
                body_data(Framing::Chunked, body, chunk),
                Ok(Some((body.len() as u64, b"hello, world!!!".to_vec()))),
                "pieces of {chunk}"
            );
        }
        for chunk in 1..=9 {
            assert_eq!(
                body_data(Framing::Length(9), b"123456789", chunk),
                Ok(Some((9, b"123456789".to_vec())))
            );
        }
        // Bytes after the body are not its data.
        let mut reader = BodyReader::new(Framing::Length(3));
        let mut ranges = Vec::new();
        reader.feed(b"abcGET", &mut |r| ranges.push(r)).unwrap();
        assert_eq!(ranges, vec![Range { start: 0, end: 3 }]);
        let mut reader = BodyReader::new(Framing::UntilClose);
        let mut ranges = Vec::new();
        reader.feed(b"all of it", &mut |r| ranges.push(r)).unwrap();
        reader.feed(b"", &mut |r| ranges.push(r)).unwrap();
        assert_eq!(ranges, vec![Range { start: 0, end: 9 }]);
    }

    #[test]
    fn content_length_body_ends_after_its_length() {
        let mut reader = BodyReader::new(Framing::Length(5));
        assert_eq!(
            reader.feed(b"abc", &mut |_| {}).unwrap(),
            Progress {
                used: 3,
                done: false
            }
        );
        assert_eq!(
            reader.feed(b"defGET", &mut |_| {}).unwrap(),
            Progress {
                used: 2,
                done: true
            }
        );
        assert_eq!(reader.wire_len(), 5);
        assert!(!reader.ends_at_close());
    }

    #[test]
    fn large_lengths_are_counted_not_stored() {
        let mut reader = BodyReader::new(Framing::Length(u64::MAX));
        let block = vec![0u8; 1 << 16];
        for _ in 0..64 {
            assert!(!reader.feed(&block, &mut |_| {}).unwrap().done);
        }
        assert_eq!(reader.wire_len(), 64 << 16);
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let body: &[u8] =
            b"5;name=value;flag\r\nhello\r\nA \t; x=\"q\"\r\n0123456789\r\n000\r\nTrailer: 1\r\nOther: 2\r\n\r\n";
        for chunk in 1..=body.len() {
            assert_eq!(
                body_end(Framing::Chunked, body, chunk),
                Ok(Some(body.len() as u64))
            );
        }
        let mut reader = BodyReader::new(Framing::Chunked);
        let mut input = body.to_vec();
        input.extend_from_slice(b"NEXT");
        let progress = reader.feed(&input, &mut |_| {}).unwrap();
        assert_eq!(
            progress,
            Progress {
                used: body.len(),
                done: true
            }
        );
    }

    #[test]
    fn chunked_accepts_bare_lf_and_uppercase_hex() {
        let body = b"1F\n0123456789012345678901234567890\n0\n\n";
        assert_eq!(
            body_end(Framing::Chunked, body, 4),
            Ok(Some(body.len() as u64))
        );
    }

    #[test]
    fn chunked_errors() {
        let error = |body: &[u8]| body_end(Framing::Chunked, body, 1).unwrap_err();
        assert!(matches!(error(b"x\r\n"), HttpError::BadChunk(_)));
        assert!(matches!(error(b";ext\r\n"), HttpError::BadChunk(_)));
        assert!(matches!(error(b"5x\r\n"), HttpError::BadChunk(_)));
        assert!(matches!(error(b"5\rX"), HttpError::BadChunk(_)));
        assert!(matches!(error(b"3\r\nabcX"), HttpError::BadChunk(_)));
        assert!(matches!(error(b"3\r\nabc\rX"), HttpError::BadChunk(_)));
        assert!(matches!(error(b"1;a\x01b\r\n"), HttpError::BadChunk(_)));
        assert!(matches!(error(b"0\r\nX: 1\rY"), HttpError::BadChunk(_)));
        assert!(matches!(
            error(b"10000000000000000\r\n"),
            HttpError::BadChunk(_)
        ));
        let long_extension = [b"1;".as_slice(), &[b'a'; MAX_CHUNK_LINE_LEN]].concat();
        assert!(matches!(error(&long_extension), HttpError::BadChunk(_)));
        let huge_trailer = [b"0\r\nX: ".as_slice(), &[b'a'; MAX_TRAILER_LEN]].concat();
        assert!(matches!(error(&huge_trailer), HttpError::BadChunk(_)));
    }

    #[test]
    fn largest_chunk_size_is_accepted() {
        let mut reader = BodyReader::new(Framing::Chunked);
        let progress = reader
            .feed(b"ffffffffffffffff\r\nabc", &mut |_| {})
            .unwrap();
        assert_eq!(
            progress,
            Progress {
                used: 21,
                done: false
            }
        );
    }

    #[test]
    fn until_close_takes_everything() {
        let mut reader = BodyReader::new(Framing::UntilClose);
        assert_eq!(
            reader.feed(b"HTTP/1.1 200", &mut |_| {}).unwrap(),
            Progress {
                used: 12,
                done: false
            }
        );
        assert!(reader.ends_at_close());
        assert_eq!(reader.wire_len(), 12);
    }
}
