//! Finding and parsing one message head (start line and header fields, RFC 9112
//! sections 2 to 5) in a byte stream that arrives in arbitrary pieces.
//!
//! Bytes are kept only while a head is incomplete, and never more than
//! [`MAX_HEAD_LEN`]. httparse is run on the head once its final empty line has
//! arrived, so a head fed one byte at a time costs linear time, not quadratic. The
//! start line is checked as soon as it is there (or, while unfinished, its first
//! [`EARLY_CHECK_LEN`] bytes), so that a client speaking another protocol is
//! recognised at once rather than after 64 KiB.

use super::message::{Header, HttpError, MAX_HEAD_LEN, MAX_HEADERS, RequestHead, ResponseHead};

/// How much of an unfinished start line is checked eagerly. A foreign protocol
/// shows itself in its first bytes; checking more of a long line on every push would
/// cost quadratic time.
const EARLY_CHECK_LEN: usize = 1024;

/// Which start line a head begins with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadKind {
    Request,
    Response,
}

/// What [`HeadReader::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadStep<'a> {
    /// All of the input belongs to a head that is not finished yet.
    NeedMore,
    /// The head is complete: `head` holds all of its bytes, its start line is known
    /// to be valid, and its last `consumed` bytes came from the input just fed.
    Complete { head: &'a [u8], consumed: usize },
    /// The start line is not an HTTP/1.x request line or status line.
    BadStartLine,
    /// No head ended within [`MAX_HEAD_LEN`] bytes.
    TooLarge,
}

/// Collects the bytes of one head until its end.
#[derive(Debug)]
pub(super) struct HeadReader {
    kind: HeadKind,
    /// The head bytes so far, when the head spans several pushes.
    buf: Vec<u8>,
    /// A non-empty line has ended: from now on an empty line ends the head. Empty
    /// lines before the start line are tolerated (RFC 9112 section 2.2).
    started: bool,
    /// The current line has a byte other than CR.
    line_has_content: bool,
    /// Length of the head up to and including the LF of the start line.
    start_line_len: Option<usize>,
    /// The complete start line has passed httparse.
    start_line_valid: bool,
    /// How many bytes of the unfinished start line have passed httparse.
    early_checked: usize,
}

impl HeadReader {
    pub(super) fn new(kind: HeadKind) -> Self {
        Self {
            kind,
            buf: Vec::new(),
            started: false,
            line_has_content: false,
            start_line_len: None,
            start_line_valid: false,
            early_checked: 0,
        }
    }

    /// True once bytes of a message, not just empty lines, have arrived; a peer
    /// closing then leaves a message unfinished.
    pub(super) fn in_message(&self) -> bool {
        self.started || self.line_has_content
    }

    /// Forgets the head just returned by [`feed`](Self::feed), ready for the next.
    pub(super) fn reset(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // A head near the limit should not pin 64 KiB for the connection's lifetime.
        if buf.capacity() > 8 * 1024 {
            buf = Vec::new();
        }
        *self = Self {
            buf,
            ..Self::new(self.kind)
        };
    }

    /// Takes the next bytes of the stream. After `Complete`, call
    /// [`reset`](Self::reset) before feeding the bytes that follow the head.
    pub(super) fn feed<'a>(&'a mut self, input: &'a [u8]) -> HeadStep<'a> {
        let room = MAX_HEAD_LEN - self.buf.len();
        let scanned = &input[..input.len().min(room)];
        if let Some(end) = self.find_end(scanned) {
            let head: &[u8] = if self.buf.is_empty() {
                // The whole head came in this push: parse it in place.
                &input[..end]
            } else {
                self.buf.extend_from_slice(&input[..end]);
                &self.buf
            };
            if !self.start_line_valid {
                let line_len = self.start_line_len.unwrap_or(head.len());
                if !start_line_is_valid(self.kind, &head[..line_len]) {
                    return HeadStep::BadStartLine;
                }
            }
            return HeadStep::Complete {
                head,
                consumed: end,
            };
        }
        self.buf.extend_from_slice(scanned);
        if !self.start_line_valid {
            match self.start_line_len {
                Some(line_len) => {
                    if !start_line_is_valid(self.kind, &self.buf[..line_len]) {
                        return HeadStep::BadStartLine;
                    }
                    self.start_line_valid = true;
                }
                None => {
                    let check_len = self.buf.len().min(EARLY_CHECK_LEN);
                    if check_len > self.early_checked {
                        if !start_line_is_valid(self.kind, &self.buf[..check_len]) {
                            return HeadStep::BadStartLine;
                        }
                        self.early_checked = check_len;
                    }
                }
            }
        }
        if self.buf.len() >= MAX_HEAD_LEN {
            return HeadStep::TooLarge;
        }
        HeadStep::NeedMore
    }

    /// Scans bytes that continue the buffered ones for the empty line ending the
    /// head; returns the offset just past it. Lines may end in CRLF or a bare LF, as
    /// httparse accepts both.
    fn find_end(&mut self, input: &[u8]) -> Option<usize> {
        for (index, &byte) in input.iter().enumerate() {
            match byte {
                b'\n' if self.line_has_content => {
                    if self.start_line_len.is_none() {
                        self.start_line_len = Some(self.buf.len() + index + 1);
                    }
                    self.started = true;
                    self.line_has_content = false;
                }
                b'\n' if self.started => return Some(index + 1),
                b'\n' | b'\r' => {}
                _ => self.line_has_content = true,
            }
        }
        None
    }
}

/// Whether httparse accepts `prefix`, which ends at or before the end of the start
/// line, as the beginning of a head.
fn start_line_is_valid(kind: HeadKind, prefix: &[u8]) -> bool {
    // No header fields follow within the prefix, so no header slots are needed.
    let result = match kind {
        HeadKind::Request => httparse::Request::new(&mut []).parse(prefix),
        HeadKind::Response => httparse::Response::new(&mut []).parse(prefix),
    };
    result.is_ok()
}

/// Parses a complete request head whose start line is known to be valid.
pub(super) fn parse_request_head(head: &[u8]) -> Result<RequestHead, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    check_complete(request.parse(head), head.len())?;
    Ok(RequestHead {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        version: request.version.unwrap_or(1),
        headers: owned_headers(request.headers),
        head_len: head.len(),
    })
}

/// Parses a complete response head whose start line is known to be valid.
pub(super) fn parse_response_head(head: &[u8]) -> Result<ResponseHead, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    check_complete(response.parse(head), head.len())?;
    let status = response.code.unwrap_or_default();
    // httparse takes any three digits; RFC 9110 section 15 starts at 100.
    if status < 100 {
        return Err(HttpError::BadStartLine);
    }
    Ok(ResponseHead {
        status,
        reason: response.reason.unwrap_or_default().to_owned(),
        version: response.version.unwrap_or(1),
        headers: owned_headers(response.headers),
        head_len: head.len(),
    })
}

/// httparse must agree with [`HeadReader`] on where the head ends; anything else
/// means a header line it could not accept.
fn check_complete(result: httparse::Result<usize>, head_len: usize) -> Result<(), HttpError> {
    match result {
        Ok(httparse::Status::Complete(len)) if len == head_len => Ok(()),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        _ => Err(HttpError::BadHeader),
    }
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|header| Header {
            name: header.name.to_owned(),
            value: String::from_utf8_lossy(header.value.trim_ascii()).into_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes; returns the head and how many input
    /// bytes it took, or the failure.
    fn read_head(kind: HeadKind, input: &[u8], chunk: usize) -> Result<(Vec<u8>, usize), String> {
        let mut reader = HeadReader::new(kind);
        let mut fed = 0;
        for piece in input.chunks(chunk) {
            match reader.feed(piece) {
                HeadStep::NeedMore => fed += piece.len(),
                HeadStep::Complete { head, consumed } => {
                    return Ok((head.to_vec(), fed + consumed));
                }
                other => return Err(format!("{other:?}")),
            }
        }
        Err("NeedMore".to_owned())
    }

    #[test]
    fn finds_the_end_of_a_head_in_any_split() {
        let input = b"\r\n\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        let head_len = input.len() - 4;
        for chunk in 1..=input.len() {
            let (head, consumed) = read_head(HeadKind::Request, input, chunk).unwrap();
            assert_eq!(consumed, head_len, "chunk {chunk}");
            assert_eq!(head, &input[..head_len]);
        }
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let input = b"HTTP/1.1 200 OK\nContent-Length: 0\n\n";
        let (head, _) = read_head(HeadKind::Response, input, 3).unwrap();
        let parsed = parse_response_head(&head).unwrap();
        assert_eq!(parsed.status, 200);
        assert_eq!(parsed.header("content-length"), Some("0"));
    }

    #[test]
    fn a_bad_start_line_is_seen_before_the_line_ends() {
        let mut reader = HeadReader::new(HeadKind::Request);
        assert_eq!(reader.feed(b"GE"), HeadStep::NeedMore);
        assert_eq!(reader.feed(b"T /pa"), HeadStep::NeedMore);
        assert_eq!(reader.feed(b"th\x01"), HeadStep::BadStartLine);

        let mut reader = HeadReader::new(HeadKind::Request);
        assert_eq!(reader.feed(&[0x16, 0x03, 0x01]), HeadStep::BadStartLine);
    }

    #[test]
    fn bad_header_lines_are_found_when_the_head_is_complete() {
        let mut reader = HeadReader::new(HeadKind::Request);
        assert_eq!(
            reader.feed(b"GET / HTTP/1.1\r\nBad Header\r\n"),
            HeadStep::NeedMore
        );
        let HeadStep::Complete { head, .. } = reader.feed(b"\r\n") else {
            panic!("head should be complete");
        };
        assert_eq!(parse_request_head(head), Err(HttpError::BadHeader));
    }

    #[test]
    fn a_head_may_fill_the_limit_but_not_exceed_it() {
        let start = b"GET / HTTP/1.1\r\nX: ";
        let filler = MAX_HEAD_LEN - start.len() - 4;
        let mut input = start.to_vec();
        input.resize(start.len() + filler, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(input.len(), MAX_HEAD_LEN);
        let (head, consumed) = read_head(HeadKind::Request, &input, 1000).unwrap();
        assert_eq!((head.len(), consumed), (MAX_HEAD_LEN, MAX_HEAD_LEN));

        input.insert(start.len(), b'a');
        assert_eq!(
            read_head(HeadKind::Request, &input, 1000),
            Err("TooLarge".to_owned())
        );
        assert_eq!(
            read_head(HeadKind::Request, &input, input.len()),
            Err("TooLarge".to_owned())
        );
    }

    #[test]
    fn byte_by_byte_feeding_of_a_huge_head_stays_linear() {
        // 64 KiB fed one byte at a time: quadratic re-parsing would take minutes.
        let mut input = b"GET /".to_vec();
        input.resize(MAX_HEAD_LEN - 20, b'a');
        input.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let (head, _) = read_head(HeadKind::Request, &input, 1).unwrap();
        assert_eq!(
            parse_request_head(&head).unwrap().target.len(),
            MAX_HEAD_LEN - 24
        );
    }

    #[test]
    fn header_values_are_trimmed_and_lossy() {
        let head = b"HTTP/1.0 404 Not Found\r\nX-Name: \xffab \t\r\n\r\n";
        let parsed = parse_response_head(head).unwrap();
        assert_eq!(parsed.version, 0);
        assert_eq!(parsed.reason, "Not Found");
        assert_eq!(parsed.headers[0].value, "\u{fffd}ab");
    }

    #[test]
    fn status_below_100_is_rejected() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 099 X\r\n\r\n"),
            Err(HttpError::BadStartLine)
        );
    }

    #[test]
    fn header_count_is_capped() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for index in 0..MAX_HEADERS {
            head.extend_from_slice(format!("X-{index}: v\r\n").as_bytes());
        }
        let mut at_limit = head.clone();
        at_limit.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request_head(&at_limit).unwrap().headers.len(),
            MAX_HEADERS
        );
        head.extend_from_slice(b"X-Last: v\r\n\r\n");
        assert_eq!(parse_request_head(&head), Err(HttpError::TooManyHeaders));
    }
}
