//! What one intercepted HTTP/1.x connection means, as a state machine with no I/O:
//! bytes of either direction go in, records for the store come out (traffic
//! entries, WebSocket open/close, frames). The async pumps around it forward every
//! byte unchanged; this only watches.
//!
//! Modes: HTTP/1.x (requests and responses paired in order, their bodies recorded
//! as they pass, see [`super::body`]), then, after a `101 Switching Protocols` for
//! `Upgrade: websocket`, WebSocket (one frame parser per direction); anything that
//! stops being parseable HTTP becomes opaque bytes.
//!
//! Time and ids come from the caller: every call that can make a record takes
//! `now_us` (microseconds since the Unix epoch), and ids come from the
//! [`TrafficIds`] it passes in.
use std::collections::VecDeque;

use frametap_model::{BodyOf, Record, Refusal, TrafficId};
use frametap_proto::{
    Peer,
    http1::{Http1Conn, HttpEvent, RequestHead, ResponseHead},
};

use crate::body::BodyCapture;
use crate::ending::{Ending, half_open_why};
pub use crate::entry::SessionMeta;
use crate::entry::{Exchange, bare_entry, entry};
use crate::h2::{self, H2Session};
pub use crate::settings::Settings;
use crate::upgrade::{self, Negotiated};
use crate::ws::{Forward, Outbox, WsSession};

enum Mode {
    Http,
    /// Both legs negotiated h2 (ALPN): HTTP/2 streams, see [`crate::h2`].
    H2(Box<H2Session>),
    WebSocket(Box<WsSession>),
    Opaque,
}

pub struct SessionState {
    meta: SessionMeta,
    settings: Settings,
    http: Http1Conn,
    mode: Mode,
    exchanges: VecDeque<Exchange>,
    /// The exchange whose request body the client is sending.
    request_in_progress: Option<TrafficId>,
    held_client: Vec<u8>,
    http_events: Vec<HttpEvent>,
}

impl SessionState {
    pub fn new(meta: SessionMeta, settings: &Settings) -> Self {
        let meta_is_h2 = meta.alpn_selected.as_deref() == Some("h2");
        Self {
            meta,
            settings: settings.clone(),
            // Body data is followed even with a cap of 0: sizes are recorded anyway.
            http: Http1Conn::new().with_body_data(),
            mode: if meta_is_h2 {
                Mode::H2(Box::new(H2Session::new()))
            } else {
                Mode::Http
            },
            exchanges: VecDeque::new(),
            request_in_progress: None,
            held_client: Vec::new(),
            http_events: Vec::new(),
        }
    }

    /// The WebSocket connection's traffic id, once upgraded.
    pub fn websocket(&self) -> Option<TrafficId> {
        match &self.mode {
            Mode::WebSocket(ws) => Some(ws.traffic()),
            _ => None,
        }
    }

    /// Every WebSocket connection open on this connection, into `out`: the upgraded
    /// one, or the streams of an HTTP/2 connection (RFC 8441).
    pub fn websockets(&self, out: &mut Vec<TrafficId>) {
        match &self.mode {
            Mode::WebSocket(ws) => out.push(ws.traffic()),
            Mode::H2(h2) => h2.websockets(out),
            Mode::Http | Mode::Opaque => {}
        }
    }

    /// Bytes `side` sent: the records they complete, and what to forward.
    pub fn on_bytes(&mut self, side: Peer, bytes: &[u8], now_us: u64) -> (Vec<Record>, Forward) {
        let mut records = Vec::new();
        let mut forward = Forward::AsIs;
        match &mut self.mode {
            Mode::Opaque => {}
            Mode::WebSocket(ws) => forward = ws.feed(side, bytes, now_us / 1000, &mut records),
            Mode::H2(h2) => {
                let ctx = h2::Ctx {
                    settings: &self.settings,
                    meta: &self.meta,
                };
                forward = h2.feed(&ctx, side, bytes, now_us, &mut records);
            }
            Mode::Http => {
                let mut events = std::mem::take(&mut self.http_events);
                match side {
                    Peer::Client => self.http.push_client(bytes, &mut events),
                    Peer::Server => self.http.push_server(bytes, &mut events),
                }
                for event in events.drain(..) {
                    self.on_http_event(side, event, bytes, now_us, &mut records);
                }
                self.http_events = events;
            }
        }
        (records, forward)
    }

    /// Sends a message into the WebSocket connection `traffic` (see
    /// [`WsSession::inject`]).
    pub fn inject(
        &mut self,
        traffic: TrafficId,
        to: Peer,
        content: &[u8],
        is_binary: bool,
        now_us: u64,
    ) -> Result<u64, (Refusal, String)> {
        match &mut self.mode {
            Mode::WebSocket(ws) if ws.traffic() == traffic => {
                ws.inject(to, content, is_binary, now_us / 1000)
            }
            Mode::H2(h2) => h2.inject(traffic, to, content, is_binary, now_us),
            _ => Err((
                Refusal::Conflict,
                "the WebSocket connection has ended".into(),
            )),
        }
    }

    /// Bytes to write to `to` before the next read's (injected messages, close
    /// frames, and for HTTP/2 frametap's DATA and WINDOW_UPDATE frames).
    pub fn take_outbox(&mut self, to: Peer) -> Option<Outbox> {
        match &mut self.mode {
            Mode::WebSocket(ws) => ws.take_outbox(to),
            Mode::H2(h2) => h2.take_outbox(to),
            _ => None,
        }
    }

    pub fn has_outbox(&self, to: Peer) -> bool {
        match &self.mode {
            Mode::WebSocket(ws) => ws.has_outbox(to),
            Mode::H2(h2) => h2.has_outbox(to),
            _ => false,
        }
    }

    fn on_http_event(
        &mut self,
        side: Peer,
        event: HttpEvent,
        input: &[u8],
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        match event {
            HttpEvent::RequestHead(request) => {
                let id = self.settings.ids.next(now_us / 1000);
                self.request_in_progress = Some(id);
                self.exchanges.push_back(Exchange {
                    id,
                    started_us: now_us,
                    request,
                    response: None,
                    request_body: BodyCapture::new(id, BodyOf::Request, self.settings.body_cap),
                    response_body: BodyCapture::new(id, BodyOf::Response, self.settings.body_cap),
                });
            }
            HttpEvent::RequestBody(range) => {
                // Gone already when the server answered before the body was over.
                if let Some(x) = self.request_exchange() {
                    x.request_body.push(&input[range], records);
                }
            }
            HttpEvent::RequestEnd { .. } => {
                if let Some(x) = self.request_exchange() {
                    x.request_body.finish(records);
                }
                self.request_in_progress = None;
            }
            HttpEvent::ResponseBody(range) => {
                // Responses come in order: the oldest exchange's is the one streaming.
                if let Some(x) = self.exchanges.front_mut() {
                    x.response_body.push(&input[range], records);
                }
            }
            HttpEvent::ResponseHead(response) => {
                // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                let interim = (100..200).contains(&response.status) && response.status != 101;
                if !interim
                    && let Some(x) = self.exchanges.iter_mut().find(|x| x.response.is_none())
                {
                    x.response = Some(response);
                }
            }
            HttpEvent::ResponseEnd { .. } => {
                if let Some(x) = self.exchanges.pop_front() {
                    self.record(x, "", None, now_us, records);
                }
            }
            HttpEvent::Switched { websocket, rest } => {
                let rest = &input[input.len() - rest.min(input.len())..];
                let Some(x) = self.exchanges.pop_front() else {
                    self.mode = Mode::Opaque;
                    return;
                };
                if !websocket {
                    self.record(x, "", None, now_us, records);
                    self.mode = Mode::Opaque;
                    return;
                }
                self.upgrade(x, rest, now_us, records);
            }
            HttpEvent::Tunnel { .. } => {
                if let Some(x) = self.exchanges.pop_front() {
                    self.record(x, "", None, now_us, records);
                }
                self.mode = Mode::Opaque;
            }
            HttpEvent::HeldForUpgrade { len } => {
                self.held_client
                    .extend_from_slice(&input[input.len() - len.min(input.len())..]);
            }
            HttpEvent::NotHttp => self.mode = Mode::Opaque,
            HttpEvent::Error(e) => {
                let error = format!("{} sent malformed HTTP: {e}", side.name());
                match self.exchanges.pop_front() {
                    Some(x) => self.record(x, "", Some(error), now_us, records),
                    None => records.push(self.failure_entry(now_us, error)),
                }
                // A faithful proxy passes the bytes on and lets the peer judge them.
                self.mode = Mode::Opaque;
            }
        }
    }

    /// The exchange whose request body is streaming, if it is still waiting.
    fn request_exchange(&mut self) -> Option<&mut Exchange> {
        let id = self.request_in_progress?;
        self.exchanges.iter_mut().rev().find(|x| x.id == id)
    }

    /// Records a finished (or failed) exchange: what is left of its bodies, then its
    /// traffic entry. `protocol` as for [`Self::entry`].
    fn record(
        &self,
        mut x: Exchange,
        protocol: &str,
        error: Option<String>,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        x.request_body.finish(records);
        x.response_body.finish(records);
        records.push(Record::Traffic(entry(
            &self.meta, x, protocol, error, now_us,
        )));
    }

    fn upgrade(&mut self, mut x: Exchange, rest: &[u8], now_us: u64, records: &mut Vec<Record>) {
        let now_ms = now_us / 1000;
        x.request_body.finish(records);
        x.response_body.finish(records);
        let response = x.response.as_ref();
        let negotiated = Negotiated {
            extensions: response
                .and_then(|r| r.header("sec-websocket-extensions"))
                .map(str::to_string),
            subprotocol: response
                .and_then(|r| r.header("sec-websocket-protocol"))
                .map(str::to_string),
        };
        let protocol = if self.meta.tls { "wss" } else { "ws" };
        let entry = entry(&self.meta, x, protocol, None, now_us);
        let mut ws = upgrade::open(
            &self.settings,
            &self.meta,
            entry,
            negotiated,
            now_ms,
            records,
        );
        // These bytes go out with the HTTP read that carried them: recorded, not gated.
        let held = std::mem::take(&mut self.held_client);
        ws.feed_direct(Peer::Client, &held, now_ms, records);
        ws.feed_direct(Peer::Server, rest, now_ms, records);
        self.mode = Mode::WebSocket(ws);
    }

    /// The connection is over: what was still open gets its final record.
    pub fn on_end(&mut self, ending: &Ending, now_us: u64) -> Vec<Record> {
        let now_ms = now_us / 1000;
        let mut records = Vec::new();
        let mut events = Vec::new();
        // The server's FIN ends a response delimited by the connection's end.
        let server_closed = matches!(ending, Ending::Closed | Ending::HalfOpen(Peer::Client));
        if matches!(self.mode, Mode::Http) && server_closed {
            self.http.server_eof(&mut events);
            for event in events.drain(..) {
                self.on_http_event(Peer::Server, event, &[], now_us, &mut records);
            }
        }
        let why = match ending {
            Ending::Closed => "connection closed before the response".to_string(),
            Ending::Reset(side) => format!("{} reset the connection", side.name()),
            Ending::HalfOpen(side) => half_open_why(*side),
        };
        while let Some(x) = self.exchanges.pop_front() {
            self.record(x, "", Some(why.clone()), now_us, &mut records);
        }
        match &mut self.mode {
            Mode::WebSocket(ws) => upgrade::close(ws, ending, now_ms, &mut records),
            Mode::H2(h2) => {
                let ctx = h2::Ctx {
                    settings: &self.settings,
                    meta: &self.meta,
                };
                h2.on_end(&ctx, ending, now_us, &mut records);
            }
            Mode::Http | Mode::Opaque => {}
        }
        self.mode = Mode::Opaque;
        records
    }

    /// A record for a connection that failed before any HTTP (e.g. TLS refused).
    pub fn failure_entry(&self, now_us: u64, error: String) -> Record {
        Record::Traffic(bare_entry(
            &self.meta,
            self.settings.ids.next(now_us / 1000),
            now_us / 1000,
            error,
        ))
    }

    /// A record for a request frametap answered itself (`response`, e.g. a 502 when
    /// the upstream's certificate was refused), with why. A WebSocket upgrade request
    /// is listed as `ws`/`wss`, what the client asked for.
    pub fn answered_entry(
        &self,
        request: RequestHead,
        started_us: u64,
        response: ResponseHead,
        error: String,
        now_us: u64,
    ) -> Record {
        let websocket = request
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let protocol = match (websocket, self.meta.tls) {
            (false, _) => "",
            (true, true) => "wss",
            (true, false) => "ws",
        };
        let id = self.settings.ids.next(now_us / 1000);
        let exchange = Exchange {
            id,
            started_us,
            request,
            response: Some(response),
            // Neither body is read or recorded: frametap answered without the server.
            request_body: BodyCapture::new(id, BodyOf::Request, 0),
            response_body: BodyCapture::new(id, BodyOf::Response, 0),
        };
        let mut entry = entry(&self.meta, exchange, protocol, Some(error), now_us);
        (entry.request_body, entry.response_body) = (None, None);
        Record::Traffic(entry)
    }
}

#[cfg(test)]
mod tests;
