//! HTTP/1.1 and HTTP/1.0 message framing for both directions of one connection
//! (RFC 9112), with pipelining, interim responses, upgrades and CONNECT.
//!
//! The agent forwards every byte unchanged and feeds the same bytes to an
//! [`Http1Conn`]: client bytes to [`Http1Conn::push_client`], server bytes to
//! [`Http1Conn::push_server`]. It gets back [`HttpEvent`]s saying where heads and
//! bodies begin and end and when the connection stops being HTTP. Client bytes must
//! be pushed before the server's answer to them, which holds naturally when the
//! agent pushes what it reads before forwarding it.
//!
//! Each push only produces events about its own direction. Heads are parsed with
//! httparse once complete; bodies are skipped by counting, never copied. A caller
//! that records bodies asks for [`HttpEvent::RequestBody`] and
//! [`HttpEvent::ResponseBody`] ([`Http1Conn::with_body_data`]): where in its input
//! the body's data is, chunked framing left out. Hostile input cannot make the state
//! grow: a head is buffered up to [`MAX_HEAD_LEN`], and at most
//! [`MAX_PIPELINED_REQUESTS`] requests wait for responses.

mod body;
mod head;
mod message;
#[cfg(test)]
mod tests;

use message::header_values;
pub use message::{
    Header, HttpError, MAX_HEAD_LEN, MAX_HEADERS, MAX_PIPELINED_REQUESTS, RequestHead, ResponseHead,
};

use std::collections::VecDeque;
use std::ops::Range;

use body::{BodyReader, Framing};
use head::{HeadKind, HeadReader, HeadStep, parse_request_head, parse_response_head};

/// What the bytes pushed into an [`Http1Conn`] turned out to be. Events from
/// `push_client`/`client_eof` concern the client direction, those from
/// `push_server`/`server_eof` the server direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    RequestHead(RequestHead),
    /// Data of the current request's body: this range of the current `push_client`
    /// input, as the client application sent it (for a chunked body, chunk data
    /// without the framing; Content-Encoding untouched). Only from an
    /// [`Http1Conn::with_body_data`]; never empty.
    RequestBody(Range<usize>),
    /// The request's body is over. `body_len` is the message body as sent on the
    /// wire (RFC 9112 section 6): for a chunked body it includes the chunk framing
    /// and trailers, so `head_len + body_len` is the request's size in the stream.
    RequestEnd {
        body_len: u64,
    },
    /// Also for 1xx interim responses (100 Continue and the like); those have no
    /// body and are not followed by a `ResponseEnd`: the final response for the same
    /// request comes next.
    ResponseHead(ResponseHead),
    /// Data of the current response's body, a range of the current `push_server`
    /// input; as for [`HttpEvent::RequestBody`].
    ResponseBody(Range<usize>),
    /// The response's body is over; `body_len` as for `RequestEnd`.
    ResponseEnd {
        body_len: u64,
    },
    /// The server agreed to switch protocols (101 to a request that asked to
    /// Upgrade), right after that 101's `ResponseHead`. `rest` is the number of bytes
    /// at the end of the current `push_server` input that already belong to the new
    /// protocol. `websocket` is true when the request had `Upgrade: websocket`
    /// (case-insensitive token) and the 101 response too. Both directions are done
    /// with HTTP: further pushes do nothing.
    Switched {
        websocket: bool,
        rest: usize,
    },
    /// A 2xx answer to CONNECT, right after its `ResponseHead`: the rest of the
    /// connection is an opaque tunnel; `rest` as for `Switched`.
    Tunnel {
        rest: usize,
    },
    /// Client bytes that arrived after an Upgrade or CONNECT request, before the
    /// server answered it. They are not parsed: `len` bytes at the end of the
    /// current `push_client` input. If the server accepts, they belong to the new
    /// protocol or the tunnel; if it refuses (any other final response), the caller
    /// feeds them again with `push_client` once that `push_server` call returns.
    HeldForUpgrade {
        len: usize,
    },
    /// The client is not speaking HTTP/1.x at all: its first bytes are not a request
    /// line (a TLS ClientHello or an SSH banner on port 80, HTTP/2 prior knowledge).
    /// Nothing more is parsed in either direction.
    NotHttp,
    /// The direction of the push that reported it stops parsing.
    Error(HttpError),
}

/// HTTP/1.x framing state of one connection, both directions.
#[derive(Debug)]
pub struct Http1Conn {
    client: ClientState,
    client_head: HeadReader,
    server: ServerState,
    server_head: HeadReader,
    /// Requests still waiting for their final response, oldest first.
    pending: VecDeque<PendingRequest>,
    /// Number given to the next request, to tell which one a response answers.
    next_seq: u64,
    /// A request head has been parsed: from now on a bad request line is an error
    /// in HTTP, not a sign of another protocol.
    seen_request: bool,
    /// Report where body data is ([`HttpEvent::RequestBody`], `ResponseBody`).
    body_data: bool,
}

#[derive(Debug)]
enum ClientState {
    /// Reading a request head (or waiting for one).
    Head,
    /// Counting a request body. `hold_for` is the request's number when it asked to
    /// upgrade or is a CONNECT: the client must wait for the answer after the body.
    Body {
        body: BodyReader,
        hold_for: Option<u64>,
    },
    /// Waiting for the answer to request `seq`, an upgrade or CONNECT.
    Held { seq: u64 },
    /// No more HTTP from the client.
    Done,
}

#[derive(Debug)]
enum ServerState {
    /// Reading a response head (or waiting for one).
    Head,
    /// Counting a response body.
    Body(BodyReader),
    /// No more HTTP from the server.
    Done,
}

/// What the server side needs to know about a request to frame its response.
#[derive(Debug, Clone, Copy)]
struct PendingRequest {
    seq: u64,
    is_head: bool,
    is_connect: bool,
    /// `Some(offers_websocket)` when the request asked to upgrade.
    upgrade: Option<bool>,
}

impl Default for Http1Conn {
    fn default() -> Self {
        Self::new()
    }
}

impl Http1Conn {
    /// A connection before either side has sent anything.
    pub fn new() -> Self {
        Self {
            client: ClientState::Head,
            client_head: HeadReader::new(HeadKind::Request),
            server: ServerState::Head,
            server_head: HeadReader::new(HeadKind::Response),
            pending: VecDeque::new(),
            next_seq: 0,
            seen_request: false,
            body_data: false,
        }
    }

    /// This connection also reports where body data is in its input
    /// ([`HttpEvent::RequestBody`], [`HttpEvent::ResponseBody`]).
    pub fn with_body_data(mut self) -> Self {
        self.body_data = true;
        self
    }

    /// Feeds bytes the client sent.
    pub fn push_client(&mut self, bytes: &[u8], out: &mut Vec<HttpEvent>) {
        let mut pos = 0;
        loop {
            match &mut self.client {
                ClientState::Done => return,
                ClientState::Held { .. } => {
                    if pos < bytes.len() {
                        out.push(HttpEvent::HeldForUpgrade {
                            len: bytes.len() - pos,
                        });
                    }
                    return;
                }
                ClientState::Head => {
                    if pos == bytes.len() {
                        return;
                    }
                    match self.client_head.feed(&bytes[pos..]) {
                        HeadStep::NeedMore => return,
                        HeadStep::Complete { head, consumed } => {
                            let parsed = parse_request_head(head);
                            self.client_head.reset();
                            pos += consumed;
                            match parsed {
                                Ok(head) => self.start_request(head, out),
                                Err(error) => self.fail_client(error, out),
                            }
                        }
                        HeadStep::BadStartLine if !self.seen_request => {
                            out.push(HttpEvent::NotHttp);
                            self.finish_http();
                        }
                        HeadStep::BadStartLine => self.fail_client(HttpError::BadStartLine, out),
                        HeadStep::TooLarge => self.fail_client(HttpError::HeadTooLarge, out),
                    }
                }
                ClientState::Body { body, hold_for } => {
                    if pos == bytes.len() {
                        return;
                    }
                    let hold_for = *hold_for;
                    let report = self.body_data;
                    let mut data = |range: Range<usize>| {
                        if report {
                            out.push(HttpEvent::RequestBody(pos + range.start..pos + range.end));
                        }
                    };
                    match body.feed(&bytes[pos..], &mut data) {
                        Ok(progress) => {
                            pos += progress.used;
                            if progress.done {
                                let body_len = body.wire_len();
                                self.finish_request(body_len, hold_for, out);
                            }
                        }
                        Err(error) => self.fail_client(error, out),
                    }
                }
            }
        }
    }

    /// Feeds bytes the server sent.
    pub fn push_server(&mut self, bytes: &[u8], out: &mut Vec<HttpEvent>) {
        let mut pos = 0;
        loop {
            match &mut self.server {
                ServerState::Done => return,
                ServerState::Head => {
                    if pos == bytes.len() {
                        return;
                    }
                    match self.server_head.feed(&bytes[pos..]) {
                        HeadStep::NeedMore => return,
                        HeadStep::Complete { head, consumed } => {
                            let parsed = parse_response_head(head);
                            self.server_head.reset();
                            pos += consumed;
                            match parsed {
                                Ok(head) => self.start_response(head, bytes.len() - pos, out),
                                Err(error) => self.fail_server(error, out),
                            }
                        }
                        HeadStep::BadStartLine => self.fail_server(HttpError::BadStartLine, out),
                        HeadStep::TooLarge => self.fail_server(HttpError::HeadTooLarge, out),
                    }
                }
                ServerState::Body(body) => {
                    if pos == bytes.len() {
                        return;
                    }
                    let report = self.body_data;
                    let mut data = |range: Range<usize>| {
                        if report {
                            out.push(HttpEvent::ResponseBody(pos + range.start..pos + range.end));
                        }
                    };
                    match body.feed(&bytes[pos..], &mut data) {
                        Ok(progress) => {
                            pos += progress.used;
                            if progress.done {
                                out.push(HttpEvent::ResponseEnd {
                                    body_len: body.wire_len(),
                                });
                                self.server = ServerState::Head;
                            }
                        }
                        Err(error) => self.fail_server(error, out),
                    }
                }
            }
        }
    }

    /// The server closed its side: a close-delimited response body ends here
    /// (`ResponseEnd`), a truncated message is an `Error`. Closing between messages
    /// reports nothing, even with requests unanswered.
    pub fn server_eof(&mut self, out: &mut Vec<HttpEvent>) {
        match &self.server {
            ServerState::Done => return,
            ServerState::Head if !self.server_head.in_message() => {}
            ServerState::Head => out.push(HttpEvent::Error(HttpError::Truncated)),
            ServerState::Body(body) if body.ends_at_close() => out.push(HttpEvent::ResponseEnd {
                body_len: body.wire_len(),
            }),
            ServerState::Body(_) => out.push(HttpEvent::Error(HttpError::Truncated)),
        }
        self.stop_server();
    }

    /// The client closed its side (possibly only half-closed: responses to its
    /// requests are still framed). Closing in the middle of a request is an `Error`.
    pub fn client_eof(&mut self, out: &mut Vec<HttpEvent>) {
        let truncated = match &self.client {
            ClientState::Head => self.client_head.in_message(),
            ClientState::Body { .. } => true,
            ClientState::Held { .. } | ClientState::Done => false,
        };
        if truncated {
            out.push(HttpEvent::Error(HttpError::Truncated));
        }
        self.client = ClientState::Done;
    }

    /// A request head has arrived: queue it for the server side and start its body.
    fn start_request(&mut self, head: RequestHead, out: &mut Vec<HttpEvent>) {
        self.seen_request = true;
        let request = PendingRequest {
            seq: self.next_seq,
            is_head: head.method == "HEAD",
            is_connect: head.method == "CONNECT",
            upgrade: requested_upgrade(&head),
        };
        self.next_seq += 1;
        // A stopped server side answers nothing, so there is nothing to pair with.
        if !matches!(self.server, ServerState::Done) {
            if self.pending.len() >= MAX_PIPELINED_REQUESTS {
                self.fail_client(HttpError::TooManyPipelinedRequests, out);
                return;
            }
            self.pending.push_back(request);
        }
        let framing = request_framing(&head);
        out.push(HttpEvent::RequestHead(head));
        let hold_for = (request.is_connect || request.upgrade.is_some()).then_some(request.seq);
        match framing {
            Ok(Framing::Empty) => self.finish_request(0, hold_for, out),
            Ok(framing) => {
                self.client = ClientState::Body {
                    body: BodyReader::new(framing),
                    hold_for,
                }
            }
            Err(error) => self.fail_client(error, out),
        }
    }

    /// A request is complete. After an upgrade or CONNECT request, the client waits
    /// for the answer, unless it has come already.
    fn finish_request(&mut self, body_len: u64, hold_for: Option<u64>, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::RequestEnd { body_len });
        self.client = match hold_for {
            // No answer can come: what follows cannot be understood.
            Some(_) if matches!(self.server, ServerState::Done) => ClientState::Done,
            // Requests are queued in order, so an unanswered one is the newest.
            Some(seq)
                if self
                    .pending
                    .back()
                    .is_some_and(|request| request.seq == seq) =>
            {
                ClientState::Held { seq }
            }
            _ => ClientState::Head,
        };
    }

    /// A response head has arrived: pair it with the oldest unanswered request and
    /// decide what follows. `rest` is the number of input bytes after the head.
    fn start_response(&mut self, head: ResponseHead, rest: usize, out: &mut Vec<HttpEvent>) {
        let Some(&request) = self.pending.front() else {
            self.fail_server(HttpError::ResponseWithoutRequest, out);
            return;
        };
        let status = head.status;
        if status == 101 {
            let Some(offered_websocket) = request.upgrade else {
                out.push(HttpEvent::ResponseHead(head));
                self.fail_server(HttpError::UnrequestedSwitch, out);
                return;
            };
            let websocket = offered_websocket && lists_websocket(&head.headers);
            out.push(HttpEvent::ResponseHead(head));
            out.push(HttpEvent::Switched { websocket, rest });
            self.finish_http();
            return;
        }
        if status < 200 {
            // Interim: the final response for the same request follows.
            out.push(HttpEvent::ResponseHead(head));
            return;
        }
        self.pending.pop_front();
        if request.is_connect && (200..300).contains(&status) {
            out.push(HttpEvent::ResponseHead(head));
            out.push(HttpEvent::Tunnel { rest });
            self.finish_http();
            return;
        }
        if matches!(self.client, ClientState::Held { seq } if seq == request.seq) {
            // Refused: the held bytes will be fed again and parsed as HTTP.
            self.client = ClientState::Head;
        }
        let framing = response_framing(&request, &head);
        out.push(HttpEvent::ResponseHead(head));
        match framing {
            Ok(Framing::Empty) => out.push(HttpEvent::ResponseEnd { body_len: 0 }),
            Ok(framing) => self.server = ServerState::Body(BodyReader::new(framing)),
            Err(error) => self.fail_server(error, out),
        }
    }

    fn fail_client(&mut self, error: HttpError, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::Error(error));
        self.client = ClientState::Done;
    }

    fn fail_server(&mut self, error: HttpError, out: &mut Vec<HttpEvent>) {
        out.push(HttpEvent::Error(error));
        self.stop_server();
    }

    /// The server side parses no more. A client waiting for an answer can never
    /// learn whether its held bytes are HTTP, so it stops too.
    fn stop_server(&mut self) {
        self.server = ServerState::Done;
        self.pending = VecDeque::new();
        if matches!(self.client, ClientState::Held { .. }) {
            self.client = ClientState::Done;
        }
    }

    /// The connection has left HTTP (switched protocols, tunnel, not HTTP at all).
    fn finish_http(&mut self) {
        self.client = ClientState::Done;
        self.server = ServerState::Done;
        self.pending = VecDeque::new();
    }
}

/// How a request body is delimited (RFC 9112 section 6.3, items 4 to 7).
fn request_framing(head: &RequestHead) -> Result<Framing, HttpError> {
    match transfer_coding_is_chunked(&head.headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Err(HttpError::UnsupportedTransferEncoding),
        None => Ok(match content_length(&head.headers)? {
            None | Some(0) => Framing::Empty,
            Some(len) => Framing::Length(len),
        }),
    }
}

/// How a final (non-1xx) response body is delimited (RFC 9112 section 6.3, items 1,
/// 3, 4, 5 and 8); the CONNECT tunnel of item 2 is handled before.
fn response_framing(request: &PendingRequest, head: &ResponseHead) -> Result<Framing, HttpError> {
    if request.is_head || head.status == 204 || head.status == 304 {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding overrides Content-Length, whatever that says.
    match transfer_coding_is_chunked(&head.headers) {
        Some(true) => Ok(Framing::Chunked),
        Some(false) => Ok(Framing::UntilClose),
        None => Ok(match content_length(&head.headers)? {
            Some(0) => Framing::Empty,
            Some(len) => Framing::Length(len),
            None => Framing::UntilClose,
        }),
    }
}

/// `None` without a Transfer-Encoding field; otherwise whether its last coding, over
/// all such fields, is chunked.
fn transfer_coding_is_chunked(headers: &[Header]) -> Option<bool> {
    let mut present = false;
    let mut last_coding = None;
    for value in header_values(headers, "transfer-encoding") {
        present = true;
        for coding in value.split(',') {
            let name = coding.split(';').next().unwrap_or_default().trim();
            if !name.is_empty() {
                last_coding = Some(name);
            }
        }
    }
    present.then(|| last_coding.is_some_and(|coding| coding.eq_ignore_ascii_case("chunked")))
}

/// The Content-Length, if any. Repeated fields and lists of identical values are
/// one length (RFC 9110 section 8.6); differing values are an error.
fn content_length(headers: &[Header]) -> Result<Option<u64>, HttpError> {
    let mut length = None;
    for value in header_values(headers, "content-length") {
        for item in value.split(',') {
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() || !item.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(HttpError::InvalidContentLength);
            }
            let parsed: u64 = item.parse().map_err(|_| HttpError::InvalidContentLength)?;
            match length {
                Some(previous) if previous != parsed => {
                    return Err(HttpError::ConflictingContentLength);
                }
                _ => length = Some(parsed),
            }
        }
    }
    Ok(length)
}

/// `Some(offers_websocket)` for a request that asked to upgrade: `Connection:
/// upgrade` and a non-empty `Upgrade` field. An HTTP/1.0 request's Upgrade is
/// ignored (RFC 9110 section 7.8).
fn requested_upgrade(head: &RequestHead) -> Option<bool> {
    let asked = head.version >= 1
        && has_token(&head.headers, "connection", "upgrade")
        && header_values(&head.headers, "upgrade").any(|value| !value.is_empty());
    asked.then(|| lists_websocket(&head.headers))
}

/// Whether an Upgrade field lists the websocket protocol (any version).
fn lists_websocket(headers: &[Header]) -> bool {
    header_values(headers, "upgrade")
        .flat_map(|value| value.split(','))
        .any(|protocol| {
            let name = protocol.split('/').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case("websocket")
        })
}

/// Whether the comma-separated fields called `name` contain `token`, ignoring case.
fn has_token(headers: &[Header], name: &str, token: &str) -> bool {
    header_values(headers, name)
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}
