//! What one intercepted HTTP/1.x connection means, as a state machine with no I/O:
//! bytes of either direction go in, records for the store come out (traffic
//! entries, WebSocket open/close, frames). The async pumps around it forward every
//! byte unchanged; this only watches.
//!
//! Modes: HTTP/1.x (requests and responses paired in order, their bodies recorded
//! as they pass, see [`super::body`]), then, after a `101 Switching Protocols` for
//! `Upgrade: websocket`, WebSocket (one frame parser per direction); anything that
//! stops being parseable HTTP becomes opaque bytes.
use std::{collections::VecDeque, sync::Arc, time::Instant};

use frametap_control::Refusal;
use frametap_proto::{
    http1::{Http1Conn, HttpEvent, RequestHead, ResponseHead},
    ws,
};
use frametap_store::{BodyOf, Record, TrafficEntry, TrafficId, WsClose, WsOpen};

use super::body::BodyCapture;
use super::websocket::{Forward, Outbox, WsSession, WsSetup};
use crate::{
    recorder::TrafficIds,
    rules::{ConnectionFacts, RuleBook},
};

/// Facts about the connection that every record carries.
#[derive(Clone, Debug, Default)]
pub struct SessionMeta {
    pub conn_id: u64,
    pub tls: bool,
    pub tls_version: Option<String>,
    pub sni: Option<String>,
    pub client_address: String,
    pub server_address: String,
    pub pid: Option<u32>,
    pub process: Option<String>,
    /// ALPN the client offered, and what the server selected (TLS only).
    pub alpn_offered: Vec<String>,
    pub alpn_selected: Option<String>,
    /// cgroup, network namespace and container of the client.
    pub origin: crate::origin::Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// How the connection ended, for the records of what was still open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both sides closed in order.
    Closed,
    /// One side reset (or failed); the other was reset in turn.
    Reset(Side),
    /// The other side closed its half and this one sent nothing for the
    /// half-open timeout; frametap closed the connection.
    HalfOpen(Side),
}

fn half_open_why(silent: Side) -> String {
    let other = match silent {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    };
    format!(
        "the {} closed its side and the {} sent nothing more within the half-open \
         timeout (--half-open-timeout), so frametap closed the connection",
        other.name(),
        silent.name()
    )
}

struct Exchange {
    id: TrafficId,
    started_ms: u64,
    started: Instant,
    request: RequestHead,
    response: Option<ResponseHead>,
    request_body: BodyCapture,
    response_body: BodyCapture,
}

enum Mode {
    Http,
    WebSocket(Box<WsSession>),
    Opaque,
}

pub struct SessionState {
    meta: SessionMeta,
    ids: Arc<TrafficIds>,
    payload_cap: usize,
    /// Most bytes stored per body.
    body_cap: u64,
    rules: Arc<RuleBook>,
    http: Http1Conn,
    mode: Mode,
    exchanges: VecDeque<Exchange>,
    /// The exchange whose request body the client is sending.
    request_in_progress: Option<TrafficId>,
    held_client: Vec<u8>,
    http_events: Vec<HttpEvent>,
}

impl SessionState {
    pub fn new(
        meta: SessionMeta,
        ids: Arc<TrafficIds>,
        payload_cap: usize,
        body_cap: u64,
        rules: Arc<RuleBook>,
    ) -> Self {
        Self {
            meta,
            ids,
            payload_cap,
            body_cap,
            rules,
            // Body data is followed even with a cap of 0: sizes are recorded anyway.
            http: Http1Conn::new().with_body_data(),
            mode: Mode::Http,
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

    /// Bytes `side` sent: the records they complete, and what to forward.
    pub fn on_bytes(&mut self, side: Side, bytes: &[u8], now_ms: u64) -> (Vec<Record>, Forward) {
        let mut records = Vec::new();
        let mut forward = Forward::AsIs;
        match &mut self.mode {
            Mode::Opaque => {}
            Mode::WebSocket(ws) => forward = ws.feed(side, bytes, now_ms, &mut records),
            Mode::Http => {
                let mut events = std::mem::take(&mut self.http_events);
                match side {
                    Side::Client => self.http.push_client(bytes, &mut events),
                    Side::Server => self.http.push_server(bytes, &mut events),
                }
                for event in events.drain(..) {
                    self.on_http_event(side, event, bytes, now_ms, &mut records);
                }
                self.http_events = events;
            }
        }
        (records, forward)
    }

    /// Sends a message into the WebSocket connection (see [`WsSession::inject`]).
    pub fn inject(
        &mut self,
        to: Side,
        content: &[u8],
        is_binary: bool,
        now_ms: u64,
    ) -> Result<u64, (Refusal, String)> {
        match &mut self.mode {
            Mode::WebSocket(ws) => ws.inject(to, content, is_binary, now_ms),
            _ => Err((
                Refusal::Conflict,
                "the WebSocket connection has ended".into(),
            )),
        }
    }

    /// Bytes to write to `to` before the next read's (injected messages, close frames).
    pub fn take_outbox(&mut self, to: Side) -> Option<Outbox> {
        match &mut self.mode {
            Mode::WebSocket(ws) => ws.take_outbox(to),
            _ => None,
        }
    }

    pub fn has_outbox(&self, to: Side) -> bool {
        matches!(&self.mode, Mode::WebSocket(ws) if ws.has_outbox(to))
    }

    fn on_http_event(
        &mut self,
        side: Side,
        event: HttpEvent,
        input: &[u8],
        now_ms: u64,
        records: &mut Vec<Record>,
    ) {
        match event {
            HttpEvent::RequestHead(request) => {
                let id = self.ids.next();
                self.request_in_progress = Some(id);
                self.exchanges.push_back(Exchange {
                    id,
                    started_ms: now_ms,
                    started: Instant::now(),
                    request,
                    response: None,
                    request_body: BodyCapture::new(id, BodyOf::Request, self.body_cap),
                    response_body: BodyCapture::new(id, BodyOf::Response, self.body_cap),
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
                    self.record(x, "", None, records);
                }
            }
            HttpEvent::Switched { websocket, rest } => {
                let rest = &input[input.len() - rest.min(input.len())..];
                let Some(x) = self.exchanges.pop_front() else {
                    self.mode = Mode::Opaque;
                    return;
                };
                if !websocket {
                    self.record(x, "", None, records);
                    self.mode = Mode::Opaque;
                    return;
                }
                self.upgrade(x, rest, now_ms, records);
            }
            HttpEvent::Tunnel { .. } => {
                if let Some(x) = self.exchanges.pop_front() {
                    self.record(x, "", None, records);
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
                    Some(x) => self.record(x, "", Some(error), records),
                    None => records.push(Record::Traffic(self.bare_entry(now_ms, error))),
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
        records: &mut Vec<Record>,
    ) {
        x.request_body.finish(records);
        x.response_body.finish(records);
        records.push(Record::Traffic(self.entry(x, protocol, error)));
    }

    fn upgrade(&mut self, mut x: Exchange, rest: &[u8], now_ms: u64, records: &mut Vec<Record>) {
        x.request_body.finish(records);
        x.response_body.finish(records);
        let response = x.response.as_ref();
        let extensions = response
            .and_then(|r| r.header("sec-websocket-extensions"))
            .map(str::to_string);
        let subprotocol = response
            .and_then(|r| r.header("sec-websocket-protocol"))
            .map(str::to_string);
        let (negotiated, error) = match extensions.as_deref().map(ws::negotiate_extensions) {
            None => (ws::NegotiatedExtensions::default(), None),
            Some(Ok(n)) => (n, None),
            Some(Err(e)) => (
                ws::NegotiatedExtensions::default(),
                Some(format!("unusable Sec-WebSocket-Extensions: {e}")),
            ),
        };
        // RSV bits of extensions we don't know are theirs to use, not errors.
        let foreign = !negotiated.others.is_empty() || error.is_some();
        let deflate = negotiated.deflate;
        let entry = self.entry(x, if self.meta.tls { "wss" } else { "ws" }, None);
        // The entry first: live subscribers get it before they hear the connection opened.
        records.push(Record::Traffic(entry.clone()));
        records.push(Record::WsOpen(WsOpen {
            traffic: entry.id,
            timestamp_ms: now_ms,
            url: entry.url.clone(),
            client_address: self.meta.client_address.clone(),
            server_address: self.meta.server_address.clone(),
            subprotocol,
            extensions,
            deflate: deflate.is_some(),
        }));
        let conn = ConnectionFacts {
            host: entry.host.clone(),
            path: entry.path.clone(),
        };
        let mut ws = Box::new(WsSession::new(WsSetup {
            traffic: entry.id,
            conn,
            deflate,
            foreign_extensions: foreign,
            error,
            payload_cap: self.payload_cap,
            rules: self.rules.clone(),
        }));
        // These bytes go out with the HTTP read that carried them: recorded, not gated.
        let held = std::mem::take(&mut self.held_client);
        ws.feed_direct(Side::Client, &held, now_ms, records);
        ws.feed_direct(Side::Server, rest, now_ms, records);
        self.mode = Mode::WebSocket(ws);
    }

    /// The connection is over: what was still open gets its final record.
    pub fn on_end(&mut self, ending: &Ending, now_ms: u64) -> Vec<Record> {
        let mut records = Vec::new();
        let mut events = Vec::new();
        // The server's FIN ends a response delimited by the connection's end.
        let server_closed = matches!(ending, Ending::Closed | Ending::HalfOpen(Side::Client));
        if matches!(self.mode, Mode::Http) && server_closed {
            self.http.server_eof(&mut events);
            for event in events.drain(..) {
                self.on_http_event(Side::Server, event, &[], now_ms, &mut records);
            }
        }
        let why = match ending {
            Ending::Closed => "connection closed before the response".to_string(),
            Ending::Reset(side) => format!("{} reset the connection", side.name()),
            Ending::HalfOpen(side) => half_open_why(*side),
        };
        while let Some(x) = self.exchanges.pop_front() {
            self.record(x, "", Some(why.clone()), &mut records);
        }
        if let Mode::WebSocket(ws) = &mut self.mode {
            // Before the counts: what never went out is recorded as dropped.
            ws.finish(&mut records);
            let abnormal = match ending {
                Ending::Reset(side) => Some(format!("{} reset", side.name())),
                Ending::Closed if ws.mid_message() => {
                    Some("closed in the middle of a frame or message".into())
                }
                Ending::Closed if ws.first_close().is_none() => {
                    Some("closed without a close frame".into())
                }
                Ending::Closed => ws.error().cloned(),
                Ending::HalfOpen(side) if ws.mid_message() || ws.first_close().is_none() => {
                    Some(half_open_why(*side))
                }
                Ending::HalfOpen(_) => ws.error().cloned(),
            };
            let (closed_by, close_code, close_reason) = match ws.first_close() {
                Some((who, code, reason)) => (Some(who.to_string()), *code, reason.clone()),
                None => (None, None, None),
            };
            let (frames_from_client, bytes_from_client) = ws.counts(Side::Client);
            let (frames_from_server, bytes_from_server) = ws.counts(Side::Server);
            records.push(Record::WsClose(WsClose {
                traffic: ws.traffic(),
                timestamp_ms: now_ms,
                closed_by,
                close_code,
                close_reason,
                frames_from_client,
                frames_from_server,
                bytes_from_client,
                bytes_from_server,
                abnormal,
                frames_from_frametap: Some(ws.frametap_frames()),
            }));
        }
        self.mode = Mode::Opaque;
        records
    }

    /// A traffic entry for a finished (or failed) exchange, whose bodies are
    /// finished. `protocol` overrides http/https (for ws/wss).
    fn entry(&self, x: Exchange, protocol: &str, error: Option<String>) -> TrafficEntry {
        let req = &x.request;
        let host = req
            .header("host")
            .map(str::to_string)
            .or_else(|| self.meta.sni.clone())
            .unwrap_or_else(|| self.meta.server_address.clone());
        let scheme = match (protocol, self.meta.tls) {
            ("", true) => "https",
            ("", false) => "http",
            (p, _) => p,
        };
        // Absolute-form targets (proxies) already carry scheme and host.
        let (url, path) = if req.target.contains("://") {
            let path = req
                .target
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                .unwrap_or_else(|| "/".into());
            (req.target.clone(), path)
        } else {
            (
                format!("{scheme}://{host}{}", req.target),
                req.target.clone(),
            )
        };
        let headers = |h: &[frametap_proto::http1::Header]| {
            h.iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect::<Vec<_>>()
        };
        TrafficEntry {
            id: x.id,
            timestamp_ms: x.started_ms,
            conn_id: self.meta.conn_id,
            method: req.method.clone(),
            url,
            protocol: scheme.to_string(),
            host,
            path,
            status: x.response.as_ref().map(|r| r.status),
            request_headers: headers(&req.headers),
            response_headers: x
                .response
                .as_ref()
                .map(|r| headers(&r.headers))
                .unwrap_or_default(),
            remote_address: self.meta.server_address.clone(),
            tls_version: self.meta.tls_version.clone(),
            duration_ms: Some(x.started.elapsed().as_secs_f64() * 1e3),
            error,
            client_address: self.meta.client_address.clone(),
            pid: self.meta.pid,
            process: self.meta.process.clone(),
            sni: self.meta.sni.clone(),
            alpn_offered: self.meta.alpn_offered.clone(),
            alpn_selected: self.meta.alpn_selected.clone(),
            request_body: Some(x.request_body.info()),
            response_body: x.response.is_some().then(|| x.response_body.info()),
            ..self.meta.origin.entry_base()
        }
    }

    /// An entry for an error with no request to attach it to.
    fn bare_entry(&self, now_ms: u64, error: String) -> TrafficEntry {
        TrafficEntry {
            id: self.ids.next(),
            timestamp_ms: now_ms,
            conn_id: self.meta.conn_id,
            method: String::new(),
            url: String::new(),
            protocol: if self.meta.tls { "https" } else { "http" }.into(),
            host: self
                .meta
                .sni
                .clone()
                .unwrap_or_else(|| self.meta.server_address.clone()),
            path: String::new(),
            status: None,
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            remote_address: self.meta.server_address.clone(),
            tls_version: self.meta.tls_version.clone(),
            duration_ms: None,
            error: Some(error),
            client_address: self.meta.client_address.clone(),
            pid: self.meta.pid,
            process: self.meta.process.clone(),
            sni: self.meta.sni.clone(),
            alpn_offered: self.meta.alpn_offered.clone(),
            alpn_selected: self.meta.alpn_selected.clone(),
            request_body: None,
            response_body: None,
            ..self.meta.origin.entry_base()
        }
    }

    /// A record for a connection that failed before any HTTP (e.g. TLS refused).
    pub fn failure_entry(&self, now_ms: u64, error: String) -> Record {
        Record::Traffic(self.bare_entry(now_ms, error))
    }

    /// A record for a request frametap answered itself (`response`, e.g. a 502 when
    /// the upstream's certificate was refused), with why. A WebSocket upgrade request
    /// is listed as `ws`/`wss`, what the client asked for.
    pub fn answered_entry(
        &self,
        request: RequestHead,
        started_ms: u64,
        started: Instant,
        response: ResponseHead,
        error: String,
    ) -> Record {
        let websocket = request
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let protocol = match (websocket, self.meta.tls) {
            (false, _) => "",
            (true, true) => "wss",
            (true, false) => "ws",
        };
        let id = self.ids.next();
        let exchange = Exchange {
            id,
            started_ms,
            started,
            request,
            response: Some(response),
            // Neither body is read or recorded: frametap answered without the server.
            request_body: BodyCapture::new(id, BodyOf::Request, 0),
            response_body: BodyCapture::new(id, BodyOf::Response, 0),
        };
        let mut entry = self.entry(exchange, protocol, Some(error));
        (entry.request_body, entry.response_body) = (None, None);
        Record::Traffic(entry)
    }
}

#[cfg(test)]
mod tests {
    use frametap_proto::ws::encode_frame;
    use frametap_store::FrameRecord;

    use super::*;

    fn state() -> SessionState {
        SessionState::new(
            SessionMeta {
                conn_id: 7,
                tls: true,
                tls_version: Some("TLSv1.3".into()),
                sni: Some("chat.test".into()),
                client_address: "127.0.0.1:5000".into(),
                server_address: "10.0.0.2:443".into(),
                pid: Some(42),
                process: Some("app".into()),
                ..SessionMeta::default()
            },
            Arc::new(TrafficIds::default()),
            1 << 20,
            64 * 1024,
            Arc::new(RuleBook::default()),
        )
    }

    const UPGRADE: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    fn frames(records: &[Record]) -> Vec<&FrameRecord> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn upgrade_then_frames_of_both_directions() {
        let mut s = state();
        assert!(s.on_bytes(Side::Client, UPGRADE, 1).0.is_empty());
        // The server's first frame arrives in the same read as the 101.
        let mut bytes = SWITCHED.to_vec();
        bytes.extend(encode_frame(true, false, 1, None, b"welcome"));
        let records = s.on_bytes(Side::Server, &bytes, 2).0;
        // The entry before the open record: live subscribers see it first.
        let Record::Traffic(entry) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(entry.protocol, "wss");
        assert_eq!(entry.status, Some(101));
        assert_eq!(entry.url, "wss://chat.test/chat?room=1");
        assert_eq!(entry.path, "/chat?room=1");
        assert_eq!(entry.pid, Some(42));
        assert!(matches!(&records[1], Record::WsOpen(o) if o.traffic == entry.id && !o.deflate));
        let f = frames(&records);
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].seq, f[0].from_client, &f[0].payload[..]),
            (1, false, &b"welcome"[..])
        );
        assert_eq!(s.websocket(), Some(entry.id));

        // A masked client frame split over two reads.
        let hello = encode_frame(true, false, 1, Some([1, 2, 3, 4]), b"hello there");
        assert!(frames(&s.on_bytes(Side::Client, &hello[..5], 3).0).is_empty());
        let records = s.on_bytes(Side::Client, &hello[5..], 4).0;
        let f = frames(&records);
        assert_eq!((f[0].seq, f[0].from_client, f[0].masked), (2, true, true));
        assert_eq!(f[0].payload, b"hello there");

        let mut close = 1001u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"going away");
        s.on_bytes(
            Side::Client,
            &encode_frame(true, false, 8, Some([9, 9, 9, 9]), &close),
            5,
        );
        s.on_bytes(Side::Server, &encode_frame(true, false, 8, None, &close), 6);
        let end = s.on_end(&Ending::Closed, 7);
        let [Record::WsClose(c)] = &end[..] else {
            panic!("{end:?}")
        };
        assert_eq!(c.closed_by.as_deref(), Some("client"));
        assert_eq!(
            (c.close_code, c.close_reason.as_deref()),
            (Some(1001), Some("going away"))
        );
        assert_eq!((c.frames_from_client, c.frames_from_server), (2, 2));
        assert_eq!(c.frames_from_frametap, Some(0));
        assert_eq!(c.abnormal, None);
    }

    /// Every sequence number given out ends up in a record, exactly once, and the
    /// close record's counts add up to them: frames of the client, of the server, and
    /// frametap's own (a replacement, injections), including what never went out.
    #[test]
    fn every_numbered_frame_is_recorded_and_counted() {
        let rule: frametap_control::Rule = serde_json::from_str(
            r#"{"direction":"to-server","action":{"kind":"replace","pattern":"secret","replacement":"XXXX"}}"#,
        )
        .unwrap();
        let mut s = SessionState::new(
            state().meta,
            Arc::new(TrafficIds::default()),
            64,
            64 * 1024,
            Arc::new(RuleBook::new(vec![rule]).unwrap()),
        );
        let mut all = Vec::new();
        s.on_bytes(Side::Client, UPGRADE, 1);
        all.extend(s.on_bytes(Side::Server, SWITCHED, 2).0);
        let mask = Some([1, 2, 3, 4]);
        // 1 (dropped) and 2 (its replacement).
        let secret = encode_frame(true, false, 1, mask, b"my secret");
        all.extend(s.on_bytes(Side::Client, &secret, 3).0);
        // 3.
        let hi = encode_frame(true, false, 1, None, b"hi");
        all.extend(s.on_bytes(Side::Server, &hi, 4).0);
        // 4: between messages, written at once.
        assert_eq!(s.inject(Side::Client, b"inj1", false, 5), Ok(4));
        all.extend(s.take_outbox(Side::Client).unwrap().records);
        // 5: a first fragment over the hold limit streams through unexamined...
        let long = encode_frame(false, false, 1, mask, &[b'x'; 100]);
        all.extend(s.on_bytes(Side::Client, &long, 6).0);
        // ... so 6, for the server, waits for that message to end (it never does).
        assert_eq!(s.inject(Side::Server, b"inj2", false, 7), Ok(6));
        // 7: held until its message is complete (it never is).
        let start = encode_frame(false, false, 1, None, b"abc");
        all.extend(s.on_bytes(Side::Server, &start, 8).0);
        // 8: for the client, never taken by a writer before the end.
        assert_eq!(s.inject(Side::Client, b"inj3", false, 9), Ok(8));
        let end = s.on_end(&Ending::Reset(Side::Client), 10);
        all.extend(end.iter().cloned());

        let f = frames(&all);
        let seqs: Vec<u64> = f.iter().map(|f| f.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=8).collect::<Vec<_>>(), "{seqs:?}");
        let dropped: Vec<u64> = f.iter().filter(|f| f.dropped).map(|f| f.seq).collect();
        assert_eq!(dropped, [1, 6, 7, 8]);
        let Some(Record::WsClose(c)) = end.last() else {
            panic!("{end:?}")
        };
        assert_eq!((c.frames_from_client, c.frames_from_server), (2, 2));
        assert_eq!(c.frames_from_frametap, Some(4));
    }

    #[test]
    fn keep_alive_exchanges_get_one_entry_each() {
        let mut s = state();
        s.on_bytes(Side::Client, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 1);
        let r1 = s
            .on_bytes(
                Side::Server,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                2,
            )
            .0;
        let r2 = s
            .on_bytes(
                Side::Server,
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                3,
            )
            .0;
        let entry = |r: &[Record]| match r {
            [.., Record::Traffic(t)] => t.clone(),
            other => panic!("{other:?}"),
        };
        let (a, b) = (entry(&r1), entry(&r2));
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), a.status),
            ("GET", "/a", Some(200))
        );
        assert_eq!(
            (b.method.as_str(), b.path.as_str(), b.status),
            ("POST", "/b", Some(201))
        );
        assert_eq!(a.protocol, "https");
        assert!(b.id.0 > a.id.0);
        assert!(s.on_end(&Ending::Closed, 4).is_empty());
    }

    /// The bodies recorded in `records`: (traffic, of, bytes), chunks joined.
    fn bodies(records: &[Record]) -> Vec<(TrafficId, BodyOf, Vec<u8>)> {
        let mut out: Vec<(TrafficId, BodyOf, Vec<u8>)> = Vec::new();
        for r in records {
            if let Record::Body(b) = r {
                match out
                    .iter_mut()
                    .find(|(t, of, _)| *t == b.traffic && *of == b.of)
                {
                    Some((_, _, data)) => data.extend_from_slice(&b.data),
                    None => out.push((b.traffic, b.of, b.data.clone())),
                }
            }
        }
        out
    }

    fn entries(records: &[Record]) -> Vec<TrafficEntry> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Traffic(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn bodies_are_recorded_as_they_stream_and_before_their_entry() {
        let mut s = state();
        let mut records = Vec::new();
        // A chunked upload in small reads, then a pipelined GET.
        let upload = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n";
        for piece in upload.chunks(3) {
            records.extend(s.on_bytes(Side::Client, piece, 1).0);
        }
        let answers = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndoneHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        records.extend(s.on_bytes(Side::Server, answers, 2).0);
        let recorded = entries(&records);
        let [up, next] = &recorded[..] else {
            panic!("{records:?}")
        };
        assert_eq!(
            bodies(&records),
            [
                (up.id, BodyOf::Request, b"hello, world".to_vec()),
                (up.id, BodyOf::Response, b"done".to_vec()),
                (next.id, BodyOf::Response, b"abc".to_vec()),
            ]
        );
        let info = |size, stored| Some(frametap_store::BodyInfo { size, stored });
        assert_eq!(
            (up.request_body, up.response_body),
            (info(12, 12), info(4, 4))
        );
        assert_eq!(
            (next.request_body, next.response_body),
            (info(0, 0), info(3, 3))
        );
        // Each body's chunks come before the entry that describes it.
        let position = |wanted: &dyn Fn(&Record) -> bool| records.iter().position(wanted).unwrap();
        let last_chunk = records
            .iter()
            .rposition(|r| matches!(r, Record::Body(b) if b.traffic == up.id))
            .unwrap();
        assert!(last_chunk < position(&|r| matches!(r, Record::Traffic(t) if t.id == up.id)));
    }

    #[test]
    fn bodies_over_the_cap_keep_their_true_size() {
        let mut s = state();
        s.on_bytes(Side::Client, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n", 1);
        let total = 200 * 1024;
        let mut records = s
            .on_bytes(
                Side::Server,
                format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
                2,
            )
            .0;
        let block = vec![b'z'; 10 * 1024];
        for _ in 0..total / block.len() {
            records.extend(s.on_bytes(Side::Server, &block, 3).0);
        }
        let [entry] = &entries(&records)[..] else {
            panic!("one entry")
        };
        let body = entry.response_body.unwrap();
        assert_eq!((body.size, body.stored), (total as u64, 64 * 1024));
        assert!(body.truncated());
        assert_eq!(bodies(&records)[0].2.len(), 64 * 1024);
    }

    #[test]
    fn a_connection_that_ends_mid_body_records_what_came() {
        let mut s = state();
        s.on_bytes(Side::Client, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1);
        let mut records = s
            .on_bytes(
                Side::Server,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
                2,
            )
            .0;
        records.extend(s.on_end(&Ending::Reset(Side::Server), 3));
        let [entry] = &entries(&records)[..] else {
            panic!("{records:?}")
        };
        assert_eq!(entry.error.as_deref(), Some("server reset the connection"));
        assert_eq!(
            entry.response_body,
            Some(frametap_store::BodyInfo { size: 7, stored: 7 })
        );
        assert_eq!(bodies(&records)[0].2, b"partial");
    }

    #[test]
    fn an_unanswered_request_is_recorded_with_the_reason() {
        let mut s = state();
        s.on_bytes(Side::Client, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1);
        let end = s.on_end(&Ending::Reset(Side::Server), 2);
        let [Record::Traffic(t)] = &end[..] else {
            panic!("{end:?}")
        };
        assert_eq!(t.error.as_deref(), Some("server reset the connection"));
        assert_eq!(t.status, None);
    }

    #[test]
    fn a_half_open_timeout_is_recorded_as_the_reason() {
        // The client sent its request and closed its side; the server never answered.
        let mut s = state();
        s.on_bytes(Side::Client, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1);
        let end = s.on_end(&Ending::HalfOpen(Side::Server), 2);
        let [Record::Traffic(t)] = &end[..] else {
            panic!("{end:?}")
        };
        let why = t.error.as_deref().unwrap();
        assert!(
            why.starts_with("the client closed its side and the server"),
            "{why}"
        );
        // The server closed after a response without a length; the client stayed:
        // the response ended at the server's FIN and is complete.
        let mut s = state();
        s.on_bytes(Side::Client, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1);
        s.on_bytes(Side::Server, b"HTTP/1.1 200 OK\r\n\r\nuntil close", 2);
        let end = s.on_end(&Ending::HalfOpen(Side::Client), 3);
        let entries = entries(&end);
        let [entry] = &entries[..] else {
            panic!("{end:?}")
        };
        assert_eq!((entry.status, entry.error.as_deref()), (Some(200), None));
    }

    #[test]
    fn malformed_http_is_recorded_and_the_rest_is_opaque() {
        let mut s = state();
        s.on_bytes(Side::Client, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1);
        let r = s
            .on_bytes(
                Side::Server,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                2,
            )
            .0;
        let [Record::Traffic(t)] = &r[..] else {
            panic!("{r:?}")
        };
        assert!(
            t.error
                .as_deref()
                .unwrap()
                .starts_with("server sent malformed HTTP"),
            "{t:?}"
        );
        assert!(s.on_bytes(Side::Client, b"anything at all", 3).0.is_empty());
    }

    #[test]
    fn a_request_frametap_answered_is_recorded_with_what_was_asked() {
        let s = state();
        let mut http = frametap_proto::http1::Http1Conn::new();
        let mut events = Vec::new();
        http.push_client(UPGRADE, &mut events);
        let Some(HttpEvent::RequestHead(request)) = events.into_iter().next() else {
            panic!("no head")
        };
        let response = ResponseHead {
            status: 502,
            reason: "Bad Gateway".into(),
            version: 1,
            headers: vec![frametap_proto::http1::Header {
                name: "content-type".into(),
                value: "text/plain".into(),
            }],
            head_len: 0,
        };
        let Record::Traffic(t) = s.answered_entry(
            request,
            5,
            Instant::now(),
            response,
            "upstream TLS failed".into(),
        ) else {
            panic!()
        };
        assert_eq!(
            (t.method.as_str(), t.url.as_str(), t.path.as_str()),
            ("GET", "wss://chat.test/chat?room=1", "/chat?room=1")
        );
        assert_eq!((t.protocol.as_str(), t.status), ("wss", Some(502)));
        assert_eq!(t.host, "chat.test");
        assert!(
            t.request_headers
                .iter()
                .any(|(k, _)| k == "Sec-WebSocket-Key")
        );
        assert_eq!(
            t.response_headers,
            [("content-type".into(), "text/plain".into())]
        );
        assert_eq!(t.error.as_deref(), Some("upstream TLS failed"));
        assert_eq!(t.timestamp_ms, 5);
    }

    #[test]
    fn websocket_without_close_frames_is_abnormal() {
        let mut s = state();
        s.on_bytes(Side::Client, UPGRADE, 1);
        s.on_bytes(Side::Server, SWITCHED, 2);
        let end = s.on_end(&Ending::Reset(Side::Client), 3);
        let [Record::WsClose(c)] = &end[..] else {
            panic!("{end:?}")
        };
        assert_eq!(c.abnormal.as_deref(), Some("client reset"));
        assert_eq!(c.closed_by, None);
    }
}
