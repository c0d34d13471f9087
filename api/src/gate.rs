//! The request gate: sans-IO, in front of hyper's HTTP/1 parser. It reads each request
//! head in full before hyper sees any of it, and refuses, itself and in the API's
//! JSON error format, what hyper would refuse with an empty body or not at all:
//!
//! - a head that does not arrive in full within the header timeout (slowloris):
//!   `408`; a connection that stays silent that long (or, between requests, for the
//!   idle timeout) is closed without an answer;
//! - a request target over the URI limit: `414`; a head over the size limit or with
//!   too many header fields: `431`;
//! - a declared `Content-Length` over the body limit: `413`, at once, without
//!   waiting for the body;
//! - a head hyper could not parse: `400`.
//!
//! Bytes come in with [`Gate::receive`]; what hyper may read is [`Gate::ready`]. The
//! gate follows each body (`Content-Length` or chunked) to find where the next head
//! starts, and steps aside after a protocol switch (the Socket.IO WebSocket upgrade).
//! A refusal ends the connection: the glue answers [`Gate::take_refusal`] once hyper
//! has finished what came before.

use std::time::{Duration, Instant};

use axum::http::{HeaderName, Method, Uri};

use crate::error::ErrorBody;

/// Size limits of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Longest head: request line and header fields, line endings included.
    pub max_head: usize,
    /// Longest request target (path and query).
    pub max_uri: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest declared `Content-Length`.
    pub max_body: u64,
}

/// How long the gate waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateTimeouts {
    /// From a head's first byte (or, on a new connection, from its start) to its end.
    pub header: Duration,
    /// Between requests on a kept-alive connection.
    pub idle: Duration,
}

/// Why the gate refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not a request hyper would parse.
    Malformed(String),
    /// 408: the head did not arrive in time.
    HeadTimeout(Duration),
    /// 413: the declared body is over the limit.
    BodyTooLarge { declared: u64, limit: u64 },
    /// 414: the request target is over the limit.
    UriTooLong { limit: usize },
    /// 431: the head is over the size limit.
    HeadTooLarge { limit: usize },
    /// 431: more header fields than allowed.
    TooManyHeaders { limit: usize },
}

impl Refusal {
    /// Status code and reason phrase.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::Malformed(_) => (400, "Bad Request"),
            Refusal::HeadTimeout(_) => (408, "Request Timeout"),
            Refusal::BodyTooLarge { .. } => (413, "Payload Too Large"),
            Refusal::UriTooLong { .. } => (414, "URI Too Long"),
            Refusal::HeadTooLarge { .. } | Refusal::TooManyHeaders { .. } => {
                (431, "Request Header Fields Too Large")
            }
        }
    }

    /// The `error` of the answer.
    pub fn message(&self) -> String {
        match self {
            Refusal::Malformed(why) => format!("malformed HTTP request: {why}"),
            Refusal::HeadTimeout(timeout) => format!(
                "the request head did not arrive in full within {} s",
                timeout.as_secs_f64()
            ),
            Refusal::BodyTooLarge { declared, limit } => format!(
                "the request body ({declared} bytes declared) is over the {} limit",
                bytes(*limit)
            ),
            Refusal::UriTooLong { limit } => {
                format!("the request target (path and query) is longer than {limit} bytes")
            }
            Refusal::HeadTooLarge { limit } => {
                format!("the request head is larger than {limit} bytes")
            }
            Refusal::TooManyHeaders { limit } => {
                format!("the request has more than {limit} header fields")
            }
        }
    }

    /// The whole HTTP/1.1 answer: the JSON error, and the connection closes after it.
    pub fn response(&self) -> Vec<u8> {
        let (code, reason) = self.status();
        let body = serde_json::to_vec(&ErrorBody {
            error: self.message(),
        })
        .expect("an error body serialises");
        let mut out = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }
}

/// `limit` bytes, in MiB or KiB when it is a whole number of them.
fn bytes(limit: u64) -> String {
    match limit {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// Slack for the method, spaces and version around the request target: a request
/// line without its end that is longer than the URI limit plus this is refused
/// before it ends.
const REQUEST_LINE_SLACK: usize = 64;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Where the connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for a head, or reading one: `started` when its first byte came.
    Head { started: Option<Instant> },
    /// In a body of known length: this many bytes to go.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunked),
    /// After a protocol switch: the bytes are not HTTP any more.
    Passthrough,
    /// Nothing more goes to hyper (refused, timed out, or a body it cannot follow).
    Stopped,
}

/// Follows a chunked body to its end (RFC 9112, 7.1), without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line (kept, to read the size).
    SizeLine(Vec<u8>),
    /// In a chunk's data: this many bytes to go.
    Data(u64),
    /// The line ending after a chunk's data: this many bytes of it so far.
    DataEnd(usize),
    /// A trailer line after the last chunk: this many bytes of it so far (an empty
    /// one ends the body), and of all trailers.
    Trailer { line: usize, total: usize },
}

/// What one step through a chunked body found.
enum ChunkStep {
    /// Consumed this many bytes; more to come.
    More(usize),
    /// Consumed this many bytes, the last of the body.
    Done(usize),
    /// Not a chunked body hyper could read either.
    Broken,
}

impl Chunked {
    /// Consumes what it can of `input`.
    fn step(&mut self, input: &[u8], max_trailers: usize) -> ChunkStep {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match self {
                Chunked::SizeLine(line) => {
                    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(rest);
                        if line.len() > MAX_CHUNK_LINE {
                            return ChunkStep::Broken;
                        }
                        return ChunkStep::More(input.len());
                    };
                    line.extend_from_slice(&rest[..end]);
                    used += end + 1;
                    let Some(size) = chunk_size(line) else {
                        return ChunkStep::Broken;
                    };
                    *self = if size == 0 {
                        Chunked::Trailer { line: 0, total: 0 }
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    let take = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    used += take;
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Chunked::DataEnd(0);
                    }
                }
                Chunked::DataEnd(seen) => {
                    // Exactly CRLF, as hyper wants it.
                    let expected = b"\r\n"[*seen];
                    if rest[0] != expected {
                        return ChunkStep::Broken;
                    }
                    used += 1;
                    *seen += 1;
                    if *seen == 2 {
                        *self = Chunked::SizeLine(Vec::new());
                    }
                }
                Chunked::Trailer { line, total } => {
                    let byte = rest[0];
                    used += 1;
                    *total += 1;
                    if *total > max_trailers {
                        return ChunkStep::Broken;
                    }
                    match byte {
                        b'\n' if *line == 0 => return ChunkStep::Done(used),
                        b'\n' => *line = 0,
                        // A CR only ends a line with the LF after it.
                        b'\r' if *line == 0 => {}
                        _ => *line += 1,
                    }
                }
            }
        }
        ChunkStep::More(used)
    }
}

/// The size of a chunk-size line (`1a`, `1a;name=value`, CR stripped), `None` if it
/// is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

/// The gate of one connection.
#[derive(Debug)]
pub struct Gate {
    limits: GateLimits,
    timeouts: GateTimeouts,
    phase: Phase,
    /// Received, not yet looked at (the head being read, and what follows it).
    inbox: Vec<u8>,
    /// How far `inbox` was searched for the end of the head.
    scanned: usize,
    /// Whether the head's first line ended within what was searched.
    line_ended: bool,
    /// Checked, for hyper to read.
    ready: Vec<u8>,
    /// Bytes of `ready` hyper has read.
    taken: usize,
    /// When bytes last went either way.
    last_activity: Instant,
    /// Whether a request went through already (the wait for the next one is idling).
    served: bool,
    /// The client sent everything it will.
    eof: bool,
    refusal: Option<Refusal>,
}

impl Gate {
    /// The gate of a connection accepted at `now`.
    pub fn new(limits: GateLimits, timeouts: GateTimeouts, now: Instant) -> Gate {
        Gate {
            limits,
            timeouts,
            phase: Phase::Head { started: None },
            inbox: Vec::new(),
            scanned: 0,
            line_ended: false,
            ready: Vec::new(),
            taken: 0,
            last_activity: now,
            served: false,
            eof: false,
            refusal: None,
        }
    }

    /// Bytes from the client.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.last_activity = now;
        if let Phase::Head { started } = &mut self.phase {
            started.get_or_insert(now);
        }
        match self.phase {
            Phase::Stopped => {}
            Phase::Passthrough => self.push_ready(bytes),
            _ => {
                self.inbox.extend_from_slice(bytes);
                self.advance(now);
            }
        }
    }

    /// The client closed its side: hyper gets what is ready, then the end.
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// Bytes went to the client: the connection is not idle.
    pub fn sent(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// What hyper may read now.
    pub fn ready(&self) -> &[u8] {
        &self.ready[self.taken..]
    }

    /// Hyper read `n` bytes of [`Gate::ready`].
    pub fn consume(&mut self, n: usize) {
        self.taken = (self.taken + n).min(self.ready.len());
        if self.taken == self.ready.len() {
            self.ready.clear();
            self.taken = 0;
        }
    }

    /// Whether hyper has read everything it will get: its reads end (EOF).
    pub fn is_finished(&self) -> bool {
        self.ready().is_empty() && (self.eof || self.phase == Phase::Stopped)
    }

    /// When the wait for the client runs out, if it can (only while a head is
    /// awaited: bodies have their own timeout, switched protocols none).
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            _ if self.eof => None,
            Phase::Head {
                started: Some(started),
            } => Some(started + self.timeouts.header),
            Phase::Head { started: None } if self.served => {
                Some(self.last_activity + self.timeouts.idle)
            }
            Phase::Head { started: None } => Some(self.last_activity + self.timeouts.header),
            _ => None,
        }
    }

    /// The [`Gate::deadline`] passed: a partial head is refused (408), a silent
    /// connection ends.
    pub fn expire(&mut self) {
        if let Phase::Head { started } = self.phase {
            if started.is_some() {
                self.refuse(Refusal::HeadTimeout(self.timeouts.header));
            } else {
                self.phase = Phase::Stopped;
            }
        }
    }

    /// Whether a refusal waits to be answered.
    pub fn has_refusal(&self) -> bool {
        self.refusal.is_some()
    }

    /// The refusal to answer, once (after hyper has answered what came before it).
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    fn push_ready(&mut self, bytes: &[u8]) {
        self.ready.extend_from_slice(bytes);
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.phase = Phase::Stopped;
        self.inbox = Vec::new();
        self.refusal = Some(refusal);
    }

    /// Moves what can be checked from the inbox to `ready`.
    fn advance(&mut self, now: Instant) {
        loop {
            if self.inbox.is_empty() {
                return;
            }
            match &mut self.phase {
                Phase::Stopped => {
                    self.inbox.clear();
                    return;
                }
                Phase::Passthrough => {
                    let rest = std::mem::take(&mut self.inbox);
                    self.push_ready(&rest);
                    return;
                }
                Phase::Body(left) => {
                    let take = self
                        .inbox
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    if *left == 0 {
                        self.phase = Phase::Head { started: None };
                    }
                    let body: Vec<u8> = self.inbox.drain(..take).collect();
                    self.push_ready(&body);
                }
                Phase::Chunked(chunked) => {
                    let (used, done) = match chunked.step(&self.inbox, self.limits.max_head) {
                        ChunkStep::More(used) => (used, false),
                        ChunkStep::Done(used) => (used, true),
                        ChunkStep::Broken => {
                            // Hyper gets the body up to here and then its end, fails
                            // the request, and answers it; nothing for us to say.
                            self.phase = Phase::Stopped;
                            self.inbox.clear();
                            return;
                        }
                    };
                    let body: Vec<u8> = self.inbox.drain(..used).collect();
                    self.push_ready(&body);
                    if done {
                        self.phase = Phase::Head { started: None };
                    }
                }
                Phase::Head { .. } => {
                    if !self.read_head(now) {
                        return;
                    }
                }
            }
        }
    }

    /// Looks for the end of the head in the inbox; checks and releases a complete
    /// one. False while the head is incomplete (or refused).
    fn read_head(&mut self, now: Instant) -> bool {
        // Its first bytes may have come with the end of the request before.
        if let Phase::Head { started } = &mut self.phase {
            started.get_or_insert(now);
        }
        if self.scanned == 0 {
            // Empty lines before a request are allowed (RFC 9112, 2.2).
            let blank = self
                .inbox
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.inbox.drain(..blank);
            if self.inbox.is_empty() {
                return false;
            }
        }
        let Some(end) = self.find_head_end() else {
            if !self.line_ended && self.inbox.len() > self.limits.max_uri + REQUEST_LINE_SLACK {
                self.refuse(Refusal::UriTooLong {
                    limit: self.limits.max_uri,
                });
            } else if self.inbox.len() > self.limits.max_head {
                self.refuse(Refusal::HeadTooLarge {
                    limit: self.limits.max_head,
                });
            }
            return false;
        };
        if end > self.limits.max_head {
            self.refuse(Refusal::HeadTooLarge {
                limit: self.limits.max_head,
            });
            return false;
        }
        let head: Vec<u8> = self.inbox.drain(..end).collect();
        self.scanned = 0;
        self.line_ended = false;
        match self.check_head(&head) {
            Ok(next) => {
                self.push_ready(&head);
                self.served = true;
                self.last_activity = now;
                self.phase = next;
                true
            }
            Err(refusal) => {
                self.refuse(refusal);
                false
            }
        }
    }

    /// The end of the head (just past its empty line), searching only what came since
    /// the last search. The line endings hyper accepts: CRLF CRLF, LF LF, LF CRLF.
    fn find_head_end(&mut self) -> Option<usize> {
        let bytes = &self.inbox;
        let from = self.scanned.saturating_sub(3);
        let mut found = None;
        for i in from..bytes.len() {
            if bytes[i] != b'\n' {
                continue;
            }
            self.line_ended = true;
            match &bytes[i + 1..] {
                [b'\n', ..] => found = Some(i + 2),
                [b'\r', b'\n', ..] => found = Some(i + 3),
                _ => {}
            }
            if found.is_some() {
                break;
            }
        }
        self.scanned = bytes.len();
        found
    }

    /// Parses a complete head as hyper will, and says how its body is framed.
    fn check_head(&self, head: &[u8]) -> Result<Phase, Refusal> {
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut request = httparse::Request::new(&mut fields);
        match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(Refusal::Malformed("the request head is incomplete".into()));
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refusal::TooManyHeaders {
                    limit: self.limits.max_headers,
                });
            }
            Err(e) => return Err(Refusal::Malformed(format!("{e}"))),
        }
        let (Some(method), Some(target), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return Err(Refusal::Malformed("the request head is incomplete".into()));
        };
        if target.len() > self.limits.max_uri {
            return Err(Refusal::UriTooLong {
                limit: self.limits.max_uri,
            });
        }
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Refusal::Malformed("invalid method".into()))?;
        Uri::try_from(target).map_err(|_| Refusal::Malformed("invalid request target".into()))?;
        let http11 = version == 1;
        let mut upgrade = method == Method::CONNECT;
        // The last Transfer-Encoding field decides, as in hyper.
        let mut chunked: Option<bool> = None;
        let mut length: Option<u64> = None;
        for field in request.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| Refusal::Malformed("invalid header field name".into()))?;
            if name == axum::http::header::TRANSFER_ENCODING {
                if !http11 {
                    return Err(Refusal::Malformed(
                        "Transfer-Encoding in an HTTP/1.0 request".into(),
                    ));
                }
                chunked = Some(ends_with_chunked(field.value));
            } else if name == axum::http::header::CONTENT_LENGTH {
                let value = content_length(field.value)
                    .ok_or_else(|| Refusal::Malformed("invalid Content-Length".into()))?;
                if length.is_some_and(|l| l != value) {
                    return Err(Refusal::Malformed(
                        "conflicting Content-Length fields".into(),
                    ));
                }
                length = Some(value);
            } else if name == axum::http::header::UPGRADE {
                upgrade |= http11;
            }
        }
        let body = match (chunked, length) {
            (Some(false), _) => {
                return Err(Refusal::Malformed(
                    "Transfer-Encoding must end with chunked".into(),
                ));
            }
            (Some(true), _) => Phase::Chunked(Chunked::SizeLine(Vec::new())),
            (None, Some(declared)) if declared > self.limits.max_body => {
                return Err(Refusal::BodyTooLarge {
                    declared,
                    limit: self.limits.max_body,
                });
            }
            (None, Some(0) | None) => Phase::Head { started: None },
            (None, Some(declared)) => Phase::Body(declared),
        };
        Ok(if upgrade { Phase::Passthrough } else { body })
    }
}

/// Whether a Transfer-Encoding value's last coding is `chunked`.
fn ends_with_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A Content-Length value: digits, or a list of equal ones (`5, 5`).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(item).ok()?.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GateLimits = GateLimits {
        max_head: 1024,
        max_uri: 256,
        max_headers: 8,
        max_body: 100,
    };
    const TIMEOUTS: GateTimeouts = GateTimeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    fn gate() -> (Gate, Instant) {
        let now = Instant::now();
        (Gate::new(LIMITS, TIMEOUTS, now), now)
    }

    /// Everything hyper may read now, taken.
    fn take(gate: &mut Gate) -> Vec<u8> {
        let out = gate.ready().to_vec();
        gate.consume(out.len());
        out
    }

    /// The status and JSON error of the refusal's answer.
    fn answer(refusal: &Refusal) -> (u16, String) {
        let bytes = refusal.response();
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut fields);
        let httparse::Status::Complete(head) = response.parse(&bytes).unwrap() else {
            panic!("incomplete answer");
        };
        let length: usize = response
            .headers
            .iter()
            .find(|h| h.name == "content-length")
            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
            .unwrap();
        assert_eq!(bytes.len() - head, length);
        assert!(
            response
                .headers
                .iter()
                .any(|h| h.name == "content-type" && h.value == b"application/json")
        );
        let body: serde_json::Value = serde_json::from_slice(&bytes[head..]).unwrap();
        (
            response.code.unwrap(),
            body["error"].as_str().unwrap().to_owned(),
        )
    }

    fn refused(gate: &mut Gate) -> (u16, String) {
        assert!(gate.is_finished(), "{gate:?}");
        answer(&gate.take_refusal().expect("a refusal"))
    }

    #[test]
    fn complete_heads_and_bodies_pass_unchanged_byte_by_byte() {
        let stream: &[u8] = b"\r\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /api/rules HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\n\
            GET /last HTTP/1.0\n\n";
        for step in [1, 3, 7, stream.len()] {
            let (mut gate, now) = gate();
            let mut passed = Vec::new();
            for piece in stream.chunks(step) {
                gate.receive(piece, now);
                passed.extend(take(&mut gate));
            }
            // The leading empty line is dropped; nothing else is touched.
            assert_eq!(passed, &stream[2..], "step {step}");
            assert!(!gate.is_finished());
            assert_eq!(gate.take_refusal(), None);
        }
    }

    #[test]
    fn a_head_is_held_back_until_it_is_complete() {
        let (mut gate, now) = gate();
        gate.receive(b"GET / HTTP/1.1\r\nHost: x\r\n", now);
        assert!(gate.ready().is_empty());
        gate.receive(b"\r\n", now);
        assert_eq!(take(&mut gate), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[test]
    fn a_slow_head_is_refused_408_and_a_silent_connection_just_ends() {
        let (mut gate, start) = gate();
        assert_eq!(gate.deadline(), Some(start + TIMEOUTS.header));
        let later = start + Duration::from_secs(3);
        gate.receive(b"GET / HTTP/1.1\r\nHos", later);
        assert_eq!(gate.deadline(), Some(later + TIMEOUTS.header));
        // More bytes do not buy more time.
        gate.receive(b"t: x\r\n", later + Duration::from_secs(5));
        assert_eq!(gate.deadline(), Some(later + TIMEOUTS.header));
        gate.expire();
        let (status, error) = refused(&mut gate);
        assert_eq!(status, 408);
        assert!(error.contains("10 s"), "{error}");

        let (mut silent, start) = self::gate();
        silent.expire();
        assert!(silent.is_finished());
        assert_eq!(silent.take_refusal(), None);

        // Between requests, the idle timeout runs from the last bytes either way.
        let (mut kept, start2) = self::gate();
        kept.receive(b"GET / HTTP/1.1\r\n\r\n", start2);
        take(&mut kept);
        let answered = start2 + Duration::from_secs(30);
        kept.sent(answered);
        assert_eq!(kept.deadline(), Some(answered + TIMEOUTS.idle));
        kept.expire();
        assert!(kept.is_finished());
        assert_eq!(kept.take_refusal(), None);
        // Empty lines alone are a head that never completes.
        let (mut blank, _) = self::gate();
        blank.receive(b"\r\n", start);
        assert_eq!(blank.deadline(), Some(start + TIMEOUTS.header));
    }

    #[test]
    fn long_targets_are_414_even_before_the_line_ends() {
        let (mut gate, now) = gate();
        let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(256));
        gate.receive(line.as_bytes(), now);
        assert_eq!(refused(&mut gate).0, 414);

        let (mut gate, now) = self::gate();
        gate.receive(b"GET /", now);
        for _ in 0..10 {
            gate.receive(&[b'a'; 100], now);
        }
        let (status, error) = refused(&mut gate);
        assert_eq!(status, 414);
        assert!(error.contains("256 bytes"), "{error}");
        // Nothing of it reached hyper.
        assert!(gate.ready().is_empty());

        let (mut fits, now) = self::gate();
        let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(255));
        fits.receive(line.as_bytes(), now);
        assert_eq!(take(&mut fits), line.as_bytes());
    }

    #[test]
    fn large_heads_and_many_fields_are_431() {
        let (mut gate, now) = gate();
        gate.receive(b"GET / HTTP/1.1\r\n", now);
        for i in 0..40 {
            gate.receive(
                format!("X-Field-{i}: {}\r\n", "v".repeat(20)).as_bytes(),
                now,
            );
        }
        let (status, error) = refused(&mut gate);
        assert_eq!(status, 431);
        assert!(error.contains("1024 bytes"), "{error}");

        let (mut gate, now) = self::gate();
        let mut head = String::from("GET / HTTP/1.1\r\n");
        for i in 0..9 {
            head.push_str(&format!("X-{i}: v\r\n"));
        }
        head.push_str("\r\n");
        gate.receive(head.as_bytes(), now);
        let (status, error) = refused(&mut gate);
        assert_eq!(status, 431);
        assert!(error.contains("more than 8 header fields"), "{error}");
    }

    #[test]
    fn an_oversized_declared_body_is_413_at_once() {
        let (mut gate, now) = gate();
        gate.receive(
            b"POST /api/rules HTTP/1.1\r\nContent-Length: 3000000\r\n\r\n",
            now,
        );
        let (status, error) = refused(&mut gate);
        assert_eq!(status, 413);
        assert_eq!(
            error,
            "the request body (3000000 bytes declared) is over the 100 bytes limit"
        );
        assert!(gate.ready().is_empty());
        // What the client sends afterwards goes nowhere.
        gate.receive(b"data", now);
        assert!(gate.is_finished());

        let (mut at_limit, now) = self::gate();
        at_limit.receive(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n", now);
        assert!(!at_limit.ready().is_empty());
    }

    #[test]
    fn malformed_heads_are_400() {
        for head in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (mut gate, now) = gate();
            gate.receive(head, now);
            assert_eq!(
                refused(&mut gate).0,
                400,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        // Equal lengths, listed or repeated, are one length.
        let (mut gate, now) = gate();
        gate.receive(
            b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n\r\n",
            now,
        );
        assert!(take(&mut gate).ends_with(b"hiGET / HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn refusals_come_after_what_was_fine_before_them() {
        let (mut gate, now) = gate();
        gate.receive(
            b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\nContent-Length: 999\r\n\r\n",
            now,
        );
        assert!(!gate.is_finished());
        assert_eq!(take(&mut gate), b"GET /one HTTP/1.1\r\n\r\n");
        assert_eq!(refused(&mut gate).0, 413);
    }

    #[test]
    fn a_broken_chunked_body_ends_the_connection_without_an_answer() {
        for body in [&b"zz\r\n"[..], b"3\r\nabcX", b"3\r\nabc\rX"] {
            let (mut gate, now) = gate();
            gate.receive(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                now,
            );
            take(&mut gate);
            gate.receive(body, now);
            take(&mut gate);
            assert!(gate.is_finished(), "{body:?}");
            assert_eq!(gate.take_refusal(), None);
        }
        // Trailers are bounded like a head.
        let (mut gate, now) = gate();
        gate.receive(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            now,
        );
        gate.receive(&[b'x'; 2000], now);
        take(&mut gate);
        assert!(gate.is_finished());
    }

    #[test]
    fn after_an_upgrade_bytes_pass_unchecked() {
        let (mut gate, now) = gate();
        let head = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\
            Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        gate.receive(head, now);
        let frames = [0x81u8, 0x85, 1, 2, 3, 4, b'\n', b'\n', 0, 0, 0];
        gate.receive(&frames, now);
        let mut expected = head.to_vec();
        expected.extend_from_slice(&frames);
        assert_eq!(take(&mut gate), expected);
        assert_eq!(gate.deadline(), None);
    }

    #[test]
    fn eof_ends_reads_after_what_is_ready() {
        let (mut gate, now) = gate();
        gate.receive(b"GET / HTTP/1.1\r\n\r\nGET /par", now);
        gate.receive_eof();
        assert!(!gate.is_finished());
        assert_eq!(take(&mut gate), b"GET / HTTP/1.1\r\n\r\n");
        assert!(gate.is_finished());
        assert_eq!(gate.deadline(), None);
        assert_eq!(gate.take_refusal(), None);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"1A;x=y\r"), Some(26));
        assert_eq!(chunk_size(b"0 ;x"), Some(0));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"x"), None);
        assert_eq!(chunk_size(b"1 2"), None);
        assert_eq!(chunk_size(b"11111111111111111"), None);
        assert_eq!(bytes(2 << 20), "2 MiB");
        assert_eq!(bytes(3 << 10), "3 KiB");
    }
}
