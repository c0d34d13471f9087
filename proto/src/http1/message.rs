//! What an HTTP/1.x message head is once parsed (start line and header fields),
//! the limits on it, and why a direction stops parsing.
use std::fmt;

/// Largest message head (start line, header fields and the empty line after them,
/// plus any empty lines before the start line) accepted.
pub const MAX_HEAD_LEN: usize = 64 * 1024;
/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 100;
/// Most requests that may wait for their responses at once. Pipelining clients keep
/// a handful in flight; the limit only bounds what a hostile one can make us keep.
pub const MAX_PIPELINED_REQUESTS: usize = 1024;

/// One header field, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    /// The value without surrounding whitespace; bytes that are not UTF-8 become
    /// U+FFFD.
    pub value: String,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Header>,
    /// Bytes of the head on the wire, from the first byte of the message (empty
    /// lines before the request line included) to the end of the empty line after
    /// the header fields.
    pub head_len: usize,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub headers: Vec<Header>,
    /// Bytes of the head on the wire, as for [`RequestHead::head_len`].
    pub head_len: usize,
}

impl RequestHead {
    /// The value of the first header field called `name`, compared without regard
    /// to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

impl ResponseHead {
    /// The value of the first header field called `name`, compared without regard
    /// to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

/// Why a direction stopped parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// A request line (after the first request) or status line that is not
    /// HTTP/1.x.
    BadStartLine,
    /// A header field line httparse does not accept.
    BadHeader,
    /// A head longer than [`MAX_HEAD_LEN`].
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// A Content-Length value that is not a decimal number.
    InvalidContentLength,
    /// Content-Length values that differ (RFC 9112 section 6.3, item 5).
    ConflictingContentLength,
    /// A request whose Transfer-Encoding does not end in chunked, so where its body
    /// ends cannot be known (RFC 9112 section 6.3, item 4).
    UnsupportedTransferEncoding,
    /// Broken chunked coding; the text says what was wrong.
    BadChunk(&'static str),
    /// A response while no request was waiting for one. This includes a server that
    /// answers requests pipelined after a refused upgrade in the same read as the
    /// refusal, before the caller could feed those requests again.
    ResponseWithoutRequest,
    /// A 101 to a request that had not asked to upgrade.
    UnrequestedSwitch,
    /// More than [`MAX_PIPELINED_REQUESTS`] requests waiting for responses.
    TooManyPipelinedRequests,
    /// The peer closed its side in the middle of a message.
    Truncated,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadStartLine => f.write_str("malformed request or status line"),
            Self::BadHeader => f.write_str("malformed header field"),
            Self::HeadTooLarge => write!(f, "message head longer than {MAX_HEAD_LEN} bytes"),
            Self::TooManyHeaders => write!(f, "more than {MAX_HEADERS} header fields"),
            Self::InvalidContentLength => f.write_str("invalid Content-Length"),
            Self::ConflictingContentLength => f.write_str("conflicting Content-Length values"),
            Self::UnsupportedTransferEncoding => {
                f.write_str("request Transfer-Encoding does not end in chunked")
            }
            Self::BadChunk(what) => write!(f, "bad chunked coding: {what}"),
            Self::ResponseWithoutRequest => f.write_str("response without a request"),
            Self::UnrequestedSwitch => f.write_str("101 to a request that did not ask to upgrade"),
            Self::TooManyPipelinedRequests => {
                write!(
                    f,
                    "more than {MAX_PIPELINED_REQUESTS} requests awaiting responses"
                )
            }
            Self::Truncated => f.write_str("connection closed in the middle of a message"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Every value of header `name` (case-insensitive), in order.
pub(super) fn header_values<'h>(
    headers: &'h [Header],
    name: &str,
) -> impl Iterator<Item = &'h str> {
    headers
        .iter()
        .filter(move |header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str())
}

fn first_header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    header_values(headers, name).next()
}
