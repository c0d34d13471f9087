//! One intercepted HTTP/2 connection (RFC 9113), sans-IO. Both TLS legs negotiated
//! h2 and the agent forwards every frame unchanged, so SETTINGS, priorities, resets
//! and pushes stay the peers' own, and so does flow control until frametap changes
//! what a WebSocket stream carries.
//!
//! Every stream becomes a traffic entry like an HTTP/1.1 exchange (pseudo-header
//! fields give method, URL and status; trailers follow the headers they trail;
//! bodies are recorded as they pass), written when the server ends the stream, or
//! with an error when the stream is reset or the connection ends first. An extended
//! CONNECT with `:protocol = websocket` (RFC 8441) that the server accepts with a
//! 2xx becomes a WebSocket connection: its DATA carries WebSocket frames, recorded by
//! the same session as an HTTP/1.1 WebSocket's, in both directions, and ruled and
//! injected into the same way.
//!
//! Rules and injection on those streams are [`rewrite`]'s; both peers' flow-control
//! windows, [`flow`]'s.
//!
//! Time and ids come from the caller, as for [`crate::connection`].
mod flow;
mod rewrite;

use std::collections::HashMap;

use frametap_model::{BodyOf, Record, TrafficEntry, TrafficId};
use frametap_proto::{
    Peer,
    h2::{Field, H2Direction, H2Event, error_name},
    http1::{Header, RequestHead, ResponseHead},
};

use self::flow::Flow;

use crate::body::BodyCapture;
use crate::ending::{Ending, half_open_why};
use crate::entry::{Exchange, SessionMeta, bare_entry, entry};
use crate::settings::Settings;
use crate::upgrade::{self, Negotiated};
use crate::ws::{Forward, Outbox, WsSession};

#[cfg(test)]
mod tests;

/// What traffic entries of HTTP/2 streams say in `httpVersion`.
pub const HTTP2: &str = "HTTP/2";
/// Streams followed at once per connection. Servers refuse more than they allow
/// (SETTINGS_MAX_CONCURRENT_STREAMS, usually 100 to 1,000); this bounds the memory a
/// connection whose server does not can take.
pub const MAX_OPEN_STREAMS: usize = 4096;

/// One stream, request first.
struct Stream {
    id: TrafficId,
    started_us: u64,
    /// Request header fields (pseudo-header fields first, then trailers, as sent).
    request: Vec<Field>,
    /// The final response's header fields, then trailers.
    response: Option<Vec<Field>>,
    request_body: BodyCapture,
    response_body: BodyCapture,
    /// Which peers ended the stream (END_STREAM), by [`Peer::index`].
    ended: [bool; 2],
    /// Once the server accepted an RFC 8441 WebSocket on this stream.
    ws: Option<Box<WsSession>>,
}

impl Stream {
    fn pseudo<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// An extended CONNECT for a WebSocket (RFC 8441 §4).
    fn asks_for_websocket(&self) -> bool {
        Self::pseudo(&self.request, ":method") == Some("CONNECT")
            && Self::pseudo(&self.request, ":protocol")
                .is_some_and(|p| p.eq_ignore_ascii_case("websocket"))
    }

    fn status(fields: &[Field]) -> Option<u16> {
        Self::pseudo(fields, ":status").and_then(|s| s.parse().ok())
    }
}

pub(crate) struct H2Session {
    directions: [H2Direction; 2],
    streams: HashMap<u32, Stream>,
    events: Vec<H2Event>,
    /// Streams not followed because [`MAX_OPEN_STREAMS`] were open (said once).
    untracked: u64,
    /// Data by sender ([`Peer::index`]): both peers' windows, frametap's queues.
    flows: [Flow; 2],
    /// A WebSocket was accepted: each direction goes to whole frames at its next
    /// frame boundary.
    wants_whole_frames: bool,
    /// By sender: read in whole frames, so the bytes forwarded end on a frame
    /// boundary after every read and frametap's frames may go between them.
    whole_frames: [bool; 2],
    /// By sender, in whole-frame mode: the start of a frame not yet complete.
    partial: [Vec<u8>; 2],
    /// By receiver: frametap's frames waiting for a boundary, with their records.
    pending: [Outbox; 2],
}

impl H2Session {
    pub(crate) fn new() -> Self {
        H2Session {
            directions: [H2Direction::client(), H2Direction::server()],
            streams: HashMap::new(),
            events: Vec::new(),
            untracked: 0,
            flows: [Flow::new(), Flow::new()],
            wants_whole_frames: false,
            whole_frames: [false; 2],
            partial: [Vec::new(), Vec::new()],
            pending: [Outbox::default(), Outbox::default()],
        }
    }

    /// Whether reading stopped (a framing error; the bytes still flow).
    pub(crate) fn failed(&self) -> bool {
        self.directions.iter().any(H2Direction::failed)
    }

    /// Whether frametap may change what WebSocket streams carry: both directions are
    /// read in whole frames.
    fn rewriting(&self) -> bool {
        self.whole_frames == [true; 2] && !self.failed()
    }

    /// Bytes `side` sent; their records go to `records`. Says what to forward.
    pub(crate) fn feed(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        bytes: &[u8],
        now_us: u64,
        records: &mut Vec<Record>,
    ) -> Forward {
        let i = side.index();
        if self.failed() {
            // A frame begun in whole-frame mode still goes on, then bytes flow as-is.
            let partial = std::mem::take(&mut self.partial[i]);
            return match partial.is_empty() {
                true => Forward::AsIs,
                false => Forward::Bytes([&partial[..], bytes].concat()),
            };
        }
        if self.whole_frames[i] {
            return self.feed_whole(ctx, side, bytes, now_us, records);
        }
        // The rest of the current frame goes as it came; whole frames from the next.
        let mut k = 0;
        while k < bytes.len() && !(self.wants_whole_frames && self.at_boundary(side)) {
            let n = match self.wants_whole_frames {
                true => self.directions[i].bytes_in_current_frame(),
                false => bytes.len(),
            };
            let n = n.min(bytes.len() - k);
            self.feed_as_is(ctx, side, &bytes[k..k + n], now_us, records);
            k += n;
        }
        self.switch_when_due(side);
        if k == bytes.len() || !self.whole_frames[i] {
            return Forward::AsIs;
        }
        let rest = self.feed_whole(ctx, side, &bytes[k..], now_us, records);
        Forward::Bytes(match rest {
            Forward::AsIs => bytes.to_vec(),
            Forward::Bytes(rest) => [&bytes[..k], &rest[..]].concat(),
        })
    }

    /// Whether what `side` sent so far ends on a frame boundary outside any header block.
    fn at_boundary(&self, side: Peer) -> bool {
        self.directions[side.index()].at_frame_boundary()
    }

    /// Switches `side` to whole frames once that is wanted and it is at a boundary.
    fn switch_when_due(&mut self, side: Peer) {
        if self.wants_whole_frames && !self.failed() && self.at_boundary(side) {
            self.whole_frames[side.index()] = true;
        }
    }

    /// Bytes forwarded as they came: watched, and counted in both views of the windows.
    fn feed_as_is(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        bytes: &[u8],
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        let mut events = std::mem::take(&mut self.events);
        self.directions[side.index()].push(bytes, &mut events);
        for event in events.drain(..) {
            self.on_event(ctx, side, event, bytes, true, now_us, records);
        }
        self.events = events;
    }

    /// The WebSocket connections (streams) open on this connection.
    pub(crate) fn websockets(&self, out: &mut Vec<TrafficId>) {
        if self.wants_whole_frames {
            out.extend(
                self.streams
                    .values()
                    .filter_map(|s| s.ws.as_ref().map(|ws| ws.traffic())),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_event(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        event: H2Event,
        input: &[u8],
        forwarded: bool,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        let (i, r) = (side.index(), side.other().index());
        match event {
            H2Event::DataFrame { stream, len } => self.flows[i].on_data(stream, len, forwarded),
            H2Event::WindowUpdate { stream, increment } => {
                self.flows[r].on_update(stream, increment, forwarded);
            }
            H2Event::InitialWindow(window) => self.flows[r].on_initial_window(window),
            H2Event::Headers {
                stream,
                fields,
                end_stream,
            } => {
                self.on_headers(ctx, side, stream, fields, now_us, records);
                if end_stream {
                    self.flows[i].ended_as_sent(stream);
                    self.on_stream_end(ctx, side, stream, now_us, records);
                }
            }
            H2Event::PushPromise {
                promised, fields, ..
            } if side == Peer::Server => {
                if !self.room_for_one(ctx, now_us, records) {
                    return;
                }
                let mut pushed = self.new_stream(ctx, fields, now_us);
                // A pushed request has no body: the client's side is over.
                pushed.ended[Peer::Client.index()] = true;
                self.streams.insert(promised, pushed);
            }
            H2Event::PushPromise { .. } => {}
            H2Event::Data { stream, range } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                let data = &input[range];
                match (&mut s.ws, side) {
                    (Some(ws), _) => ws.feed_direct(side, data, now_us / 1000, records),
                    (None, Peer::Client) => s.request_body.push(data, records),
                    (None, Peer::Server) => s.response_body.push(data, records),
                }
            }
            H2Event::End { stream } => {
                self.flows[i].ended_as_sent(stream);
                self.on_stream_end(ctx, side, stream, now_us, records);
            }
            H2Event::Reset { stream, code } => {
                self.flows[i].forget(stream);
                self.flows[r].forget(stream);
                if let Some(s) = self.streams.remove(&stream) {
                    let why = format!("{} reset the stream ({})", side.name(), error_name(code));
                    record(ctx, s, Some(why), &Ending::Reset(side), now_us, records);
                }
            }
            H2Event::GoAway { .. } => {}
            H2Event::Error(why) => {
                let error = format!("{} sent malformed HTTP/2: {why}", side.name());
                let mut open: Vec<_> = self.streams.drain().collect();
                open.sort_by_key(|(n, _)| *n);
                if open.is_empty() {
                    records.push(connection_entry(ctx, now_us, error.clone()));
                }
                for (_, s) in open {
                    let ending = Ending::Reset(side);
                    record(ctx, s, Some(error.clone()), &ending, now_us, records);
                }
            }
        }
    }

    /// Whether another stream can be followed; the first time one cannot, an entry
    /// says so.
    fn room_for_one(&mut self, ctx: &Ctx<'_>, now_us: u64, records: &mut Vec<Record>) -> bool {
        if self.streams.len() < MAX_OPEN_STREAMS {
            return true;
        }
        self.untracked += 1;
        if self.untracked == 1 {
            let why = format!(
                "more than {MAX_OPEN_STREAMS} HTTP/2 streams open at once on this connection: \
                 streams that began while so many were open are relayed but not recorded"
            );
            records.push(connection_entry(ctx, now_us, why));
        }
        false
    }

    fn new_stream(&self, ctx: &Ctx<'_>, request: Vec<Field>, now_us: u64) -> Stream {
        let id = ctx.settings.ids.next(now_us / 1000);
        let cap = ctx.settings.body_cap;
        Stream {
            id,
            started_us: now_us,
            request,
            response: None,
            request_body: BodyCapture::new(id, BodyOf::Request, cap),
            response_body: BodyCapture::new(id, BodyOf::Response, cap),
            ended: [false; 2],
            ws: None,
        }
    }

    fn on_headers(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        stream: u32,
        fields: Vec<Field>,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        if side == Peer::Client {
            if let Some(s) = self.streams.get_mut(&stream) {
                // Trailers.
                s.request.extend(fields);
            } else if self.room_for_one(ctx, now_us, records) {
                let s = self.new_stream(ctx, fields, now_us);
                if s.asks_for_websocket() {
                    // Its windows are followed from the start, in case it is rewritten.
                    for flow in &mut self.flows {
                        flow.track(stream);
                    }
                }
                self.streams.insert(stream, s);
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        if s.response.is_some() {
            // Trailers.
            s.response.get_or_insert_default().extend(fields);
            return;
        }
        let status = Stream::status(&fields);
        // Interim responses (100 Continue, 103 Early Hints) precede the real one.
        if status.is_some_and(|s| (100..200).contains(&s)) {
            return;
        }
        let accepted_websocket = s.asks_for_websocket() && status.is_some_and(|s| s / 100 == 2);
        let negotiated = Negotiated {
            extensions: Stream::pseudo(&fields, "sec-websocket-extensions").map(str::to_string),
            subprotocol: Stream::pseudo(&fields, "sec-websocket-protocol").map(str::to_string),
        };
        s.response = Some(fields);
        if !accepted_websocket {
            return;
        }
        s.request_body.finish(records);
        s.response_body.finish(records);
        let protocol = if ctx.meta.tls { "wss" } else { "ws" };
        let entry = stream_entry(ctx, s, protocol, None, now_us);
        let now_ms = now_us / 1000;
        s.ws = Some(upgrade::open(
            ctx.settings,
            ctx.meta,
            entry,
            negotiated,
            now_ms,
            records,
        ));
        self.wants_whole_frames = true;
        self.switch_when_due(Peer::Client);
    }

    fn on_stream_end(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        stream: u32,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.ended[side.index()] = true;
        if side == Peer::Client && s.ws.is_none() {
            s.request_body.finish(records);
        }
        // An exchange is over with its response; a WebSocket once both sides ended.
        let over = if s.ws.is_some() {
            s.ended == [true; 2]
        } else {
            side == Peer::Server
        };
        if over && let Some(s) = self.streams.remove(&stream) {
            if s.ws.is_none() {
                for flow in &mut self.flows {
                    flow.forget(stream);
                }
            }
            record(ctx, s, None, &Ending::Closed, now_us, records);
        }
    }

    /// The connection is over: streams still open get their final records, with why.
    pub(crate) fn on_end(
        &mut self,
        ctx: &Ctx<'_>,
        ending: &Ending,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        let why = match ending {
            Ending::Closed => "connection closed before the stream ended".to_string(),
            Ending::Reset(side) => format!("{} reset the connection", side.name()),
            Ending::HalfOpen(side) => half_open_why(*side),
        };
        let mut open: Vec<_> = self.streams.drain().collect();
        open.sort_by_key(|(n, _)| *n);
        for (_, s) in open {
            record(ctx, s, Some(why.clone()), ending, now_us, records);
        }
        // frametap's frames that were never written: numbered, so recorded, as dropped.
        for pending in &mut self.pending {
            records.extend(
                std::mem::take(&mut pending.records)
                    .into_iter()
                    .map(|r| match r {
                        Record::Frame(f) => {
                            Record::Frame(frametap_model::FrameRecord { dropped: true, ..f })
                        }
                        other => other,
                    }),
            );
        }
    }
}

/// What recording a stream needs from its connection.
pub(crate) struct Ctx<'a> {
    pub settings: &'a Settings,
    pub meta: &'a SessionMeta,
}

/// Records a stream that is over: an exchange's bodies and entry, or a WebSocket's
/// close record (`ending` says how its transport ended).
fn record(
    ctx: &Ctx<'_>,
    mut s: Stream,
    error: Option<String>,
    ending: &Ending,
    now_us: u64,
    records: &mut Vec<Record>,
) {
    if let Some(ws) = &mut s.ws {
        upgrade::close(ws, ending, now_us / 1000, records);
        return;
    }
    s.request_body.finish(records);
    s.response_body.finish(records);
    records.push(Record::Traffic(stream_entry(
        ctx, &mut s, "", error, now_us,
    )));
}

/// The stream as an [`Exchange`] (its bodies move out).
fn exchange_of(s: &mut Stream) -> Exchange {
    let headers = |fields: &[Field]| {
        fields
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    let method = Stream::pseudo(&s.request, ":method").unwrap_or_default();
    // CONNECT names the authority, not a path (RFC 9113 §8.5).
    let target = Stream::pseudo(&s.request, ":path")
        .or_else(|| Stream::pseudo(&s.request, ":authority"))
        .unwrap_or_default();
    let placeholder = || BodyCapture::new(s.id, BodyOf::Request, 0);
    Exchange {
        id: s.id,
        started_us: s.started_us,
        request: RequestHead {
            method: method.to_string(),
            target: target.to_string(),
            version: 2,
            headers: headers(&s.request),
            head_len: 0,
        },
        response: s.response.as_deref().map(|fields| ResponseHead {
            status: Stream::status(fields).unwrap_or_default(),
            reason: String::new(),
            version: 2,
            headers: headers(fields),
            head_len: 0,
        }),
        request_body: std::mem::replace(&mut s.request_body, placeholder()),
        response_body: std::mem::replace(&mut s.response_body, placeholder()),
    }
}

/// The traffic entry of a stream (its bodies move out): as an HTTP/1.1 exchange's,
/// with host and URL from `:authority` and `:scheme`, and `httpVersion` HTTP/2.
fn stream_entry(
    ctx: &Ctx<'_>,
    s: &mut Stream,
    protocol: &str,
    error: Option<String>,
    now_us: u64,
) -> TrafficEntry {
    let authority = Stream::pseudo(&s.request, ":authority").map(str::to_string);
    let scheme = Stream::pseudo(&s.request, ":scheme").map(str::to_string);
    let x = exchange_of(s);
    let is_connect = x.request.method == "CONNECT" && protocol.is_empty();
    let mut e = entry(ctx.meta, x, protocol, error, now_us);
    if let Some(authority) = authority {
        e.host = authority;
    }
    let scheme = match (protocol, scheme) {
        ("", Some(scheme)) => scheme,
        _ => e.protocol.clone(),
    };
    if !is_connect {
        e.url = format!("{scheme}://{}{}", e.host, e.path);
    }
    e.http_version = Some(HTTP2.into());
    e
}

/// An entry that says something about the connection rather than one stream.
fn connection_entry(ctx: &Ctx<'_>, now_us: u64, why: String) -> Record {
    let id = ctx.settings.ids.next(now_us / 1000);
    let mut e = bare_entry(ctx.meta, id, now_us / 1000, why);
    e.http_version = Some(HTTP2.into());
    Record::Traffic(e)
}
