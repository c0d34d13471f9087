//! Live events over Socket.IO, on the API's port: what the agent persisted, as it
//! persisted it (fed by [`crate::agent_link`], never by polling the store).
//!
//! | event               | payload                                                                |
//! |---------------------|------------------------------------------------------------------------|
//! | `traffic:batch`     | array of traffic entries (same JSON as `/api/traffic`)                 |
//! | `websocket:open`    | [`crate::views::WebSocketOpened`]                                      |
//! | `websocket:frame`   | the frame, same JSON as `/api/websocket/frame/:id`                     |
//! | `websocket:message` | the message, same JSON as `/api/websocket/:id/messages`, once complete |
//! | `websocket:close`   | [`crate::views::WebSocketClosed`]: close code and reason, frame counts |
//! | `traffic:end`       | [`crate::views::TunnelEnded`]: a connection relayed untouched ended    |
//! | `recording:degraded` | `{since, error}`: the agent's writes fail; nothing is recorded (or sent here) until `recording:resumed` |
//! | `recording:resumed` | `{stoppedAt, resumedAt, recordsLost, error}`                          |
//!
//! Order: the agent hands over each connection's records in capture order (frames by
//! `seq`), and they are emitted in that order: a connection's traffic entry (in a
//! `traffic:batch`) before its `websocket:open`, then its frames by `seq`, each
//! `websocket:message` right after the frame that completes it, `websocket:close`
//! last. [`LiveRelay`] turns records into events (sans-IO); [`LiveEvents`] emits them.
//!
//! Only records the agent stored are sent: records whose write failed never are.
//!
//! Clients authenticate like REST clients: `auth: {token}` in the Socket.IO
//! handshake, `?token=` or `Authorization: Bearer`. Each client has a bounded
//! buffer; events for a client that cannot keep up are dropped and counted.
//!
//! A client gets every event until it says what it wants: it emits `subscribe` with
//! a list of `{"event": NAME}` (that event of every connection) and `{"event": NAME,
//! "trafficId": ID}` (that event of one connection; not for `traffic:batch`). The
//! list replaces what the client had; `[]` leaves only the `recording:*` events,
//! which every client gets. With an ack the client learns `{"subscribed": N}` or
//! `{"error": "..."}` (an unknown event, a malformed id: nothing changes then). A
//! page that shows one busy connection thus gets its events and nobody else's.
//! Subscriptions are Socket.IO rooms: `NAME` and `NAME@ID`.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, header::AUTHORIZATION};
use frametap_control::RecordingEvent;
use frametap_store::{Record, TrafficId};
use serde::Serialize;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{BroadcastError, SocketError, SocketIo};
use tracing::debug;

use crate::auth::AuthConfig;
use crate::messages::Reassembler;
use crate::state::StoreSource;
use crate::views::{self, Frame, WebSocketClosed, WebSocketMessage, WebSocketOpened};

/// Packets a Socket.IO client may have queued before its events are dropped.
pub const CLIENT_BUFFER: usize = 16 * 1024;

/// Counters for `/api/health`.
#[derive(Default)]
pub struct EventStats {
    /// Events handed to Socket.IO (one per event, whatever the number of clients).
    pub emitted: AtomicU64,
    /// Event deliveries dropped because a client's buffer was full.
    pub dropped: AtomicU64,
}

/// One event to emit.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `traffic:batch`.
    Traffic(Vec<views::TrafficEntry>),
    /// `websocket:open`.
    Open(WebSocketOpened),
    /// `websocket:frame`.
    Frame(Frame),
    /// `websocket:message`.
    Message(WebSocketMessage),
    /// `websocket:close`.
    Close(WebSocketClosed),
    /// `traffic:end`.
    End(views::TunnelEnded),
}

/// The events a client can subscribe to (the `recording:*` events go to everyone).
pub const SUBSCRIBABLE: [&str; 6] = [
    "traffic:batch",
    "websocket:open",
    "websocket:frame",
    "websocket:message",
    "websocket:close",
    "traffic:end",
];

/// Most subscriptions one client may hold: a page holds a handful.
pub const MAX_SUBSCRIPTIONS: usize = 1000;

/// The Socket.IO room of the subscribers of event `name` of connection `traffic`.
fn connection_room(name: &str, traffic: &str) -> String {
    format!("{name}@{traffic}")
}

/// The rooms a `subscribe` payload asks for, or why it cannot be had. Sans-IO.
pub fn subscription_rooms(payload: &serde_json::Value) -> Result<Vec<String>, String> {
    const SHAPE: &str = "subscribe takes a list of {\"event\": NAME} or \
                         {\"event\": NAME, \"trafficId\": ID}";
    let list = payload.as_array().ok_or(SHAPE)?;
    if list.len() > MAX_SUBSCRIPTIONS {
        return Err(format!(
            "{} subscriptions: at most {MAX_SUBSCRIPTIONS} (subscribe to an event of \
             every connection instead)",
            list.len()
        ));
    }
    let mut rooms = Vec::with_capacity(list.len());
    for item in list {
        let Some(object) = item.as_object() else {
            return Err(SHAPE.into());
        };
        if let Some(key) = object.keys().find(|k| *k != "event" && *k != "trafficId") {
            return Err(format!("unknown field `{key}`: {SHAPE}"));
        }
        let event = object.get("event").and_then(|e| e.as_str()).ok_or(SHAPE)?;
        if !SUBSCRIBABLE.contains(&event) {
            return Err(format!(
                "unknown event {event:?}: one of {}",
                SUBSCRIBABLE.join(", ")
            ));
        }
        let room = match object.get("trafficId") {
            None | Some(serde_json::Value::Null) => event.to_string(),
            Some(_) if event == "traffic:batch" => {
                return Err(
                    "traffic:batch carries many entries: subscribe to it without \
                            a trafficId"
                        .into(),
                );
            }
            Some(id) => {
                let id = id
                    .as_str()
                    .and_then(|id| id.parse::<TrafficId>().ok())
                    .ok_or_else(|| {
                        format!("trafficId must be a traffic entry id (16 lowercase hex digits), got {id}")
                    })?;
                connection_room(event, &id.to_string())
            }
        };
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

impl Event {
    /// The rooms of the clients that get this event: those of every connection, and
    /// those of its connection.
    pub fn rooms(&self) -> Vec<String> {
        let name = self.name();
        let traffic = match self {
            Event::Traffic(_) => return vec![name.to_string()],
            Event::Open(open) => &open.traffic_id,
            Event::Frame(frame) => &frame.traffic_id,
            Event::Message(message) => &message.traffic_id,
            Event::Close(close) => &close.traffic_id,
            Event::End(end) => &end.traffic_id,
        };
        vec![name.to_string(), connection_room(name, traffic)]
    }

    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Traffic(_) => "traffic:batch",
            Event::Open(_) => "websocket:open",
            Event::Frame(_) => "websocket:frame",
            Event::Message(_) => "websocket:message",
            Event::Close(_) => "websocket:close",
            Event::End(_) => "traffic:end",
        }
    }
}

/// What the relay keeps of an open connection: the message being reassembled in
/// each direction (index: `from_client`).
struct LiveConnection {
    messages: [Reassembler; 2],
}

impl LiveConnection {
    /// `joined`: the relay started listening after the connection's first frame, so
    /// continuations before a direction's first data frame belong to messages it
    /// never saw the start of, and are skipped rather than shown as fragments.
    fn new(joined: bool) -> LiveConnection {
        let reassembler = || {
            let r = Reassembler::default();
            if joined { r.after_cursor() } else { r }
        };
        LiveConnection {
            messages: [reassembler(), reassembler()],
        }
    }
}

/// Records in, events out, in order (see the module docs). Sans-IO: the frame counts
/// of `websocket:close` need the frames deleted before the close, which the caller
/// looks up.
#[derive(Default)]
pub struct LiveRelay {
    connections: HashMap<TrafficId, LiveConnection>,
}

impl LiveRelay {
    /// The events of `records` (persisted by the agent, in order). `deleted` says how
    /// many frames of a connection were deleted (0 if unknown).
    pub fn on_records(
        &mut self,
        records: Vec<Record>,
        deleted: impl Fn(TrafficId) -> u64,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let mut traffic = Vec::new();
        for record in records {
            if let Record::Traffic(entry) = &record {
                traffic.push(views::traffic_json(entry));
                continue;
            }
            // Entries go out before whatever follows them, e.g. their connection's open.
            if !traffic.is_empty() {
                events.push(Event::Traffic(std::mem::take(&mut traffic)));
            }
            match record {
                Record::Traffic(_) => {}
                Record::WsOpen(open) => {
                    self.connections
                        .insert(open.traffic, LiveConnection::new(false));
                    events.push(Event::Open(views::opened_json(&open)));
                }
                Record::Frame(frame) => {
                    events.push(Event::Frame(views::frame_json(&frame)));
                    let connection = self
                        .connections
                        .entry(frame.traffic)
                        .or_insert_with(|| LiveConnection::new(frame.seq > 1));
                    let messages = &mut connection.messages[usize::from(frame.from_client)];
                    messages.push(&frame);
                    while let Some(message) = messages.next_message() {
                        events.push(Event::Message(views::message_json(&message)));
                    }
                }
                Record::WsClose(close) => {
                    // What is still open ends here, as the messages endpoint shows it.
                    if let Some(mut connection) = self.connections.remove(&close.traffic) {
                        for messages in &mut connection.messages {
                            messages.finish();
                            while let Some(message) = messages.next_message() {
                                events.push(Event::Message(views::message_json(&message)));
                            }
                        }
                    }
                    let gone = deleted(close.traffic);
                    events.push(Event::Close(views::closed_json(&close, gone)));
                }
                Record::TunnelEnd(end) => events.push(Event::End(views::ended_json(&end))),
                // Not a live event (the agent does not stream them anyway).
                Record::Body(_) => {}
            }
        }
        if !traffic.is_empty() {
            events.push(Event::Traffic(traffic));
        }
        events
    }

    /// Records were lost on the way (the agent dropped some for us, or the stream
    /// restarted): what is being reassembled may miss frames, so start afresh.
    pub fn reset(&mut self) {
        self.connections.clear();
    }

    /// Connections with messages being reassembled.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }
}

/// The Socket.IO side of the API.
#[derive(Clone)]
pub struct LiveEvents {
    io: SocketIo,
    relay: Arc<Mutex<LiveRelay>>,
    /// Where deleted frames are counted, for `websocket:close`.
    store: Option<Arc<dyn StoreSource>>,
    pub stats: Arc<EventStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DegradedEvent<'a> {
    since: u64,
    error: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResumedEvent<'a> {
    stopped_at: u64,
    resumed_at: u64,
    records_lost: u64,
    error: &'a str,
}

impl LiveEvents {
    /// The tower layer to put on the router, and the handle that emits. `store`
    /// answers how many frames of a closing connection were deleted.
    pub fn new(
        auth: AuthConfig,
        store: Option<Arc<dyn StoreSource>>,
    ) -> (SocketIoLayer, LiveEvents) {
        let (layer, io) = SocketIo::builder()
            .max_buffer_size(CLIENT_BUFFER)
            .build_layer();
        let on_connect = async |socket: SocketRef| {
            debug!(id = %socket.id, "Socket.IO client connected");
            // Everything until the client subscribes.
            socket.join(SUBSCRIBABLE);
            socket.on("subscribe", subscribe);
        };
        io.ns(
            "/",
            on_connect.with(
                move |socket: SocketRef, TryData(payload): TryData<serde_json::Value>| {
                    let auth = auth.clone();
                    async move { authenticate(&auth, &socket, payload.ok()) }
                },
            ),
        );
        let events = LiveEvents {
            io,
            relay: Arc::default(),
            store,
            stats: Arc::default(),
        };
        (layer, events)
    }

    /// Emits the events of `records` (persisted by the agent, in order) to every client.
    pub async fn publish(&self, records: Vec<Record>) {
        // Only asked when a connection closes.
        let deleted = |traffic| {
            self.store
                .as_ref()
                .and_then(|source| source.store().ok())
                .and_then(|store| store.frame_totals(traffic).ok())
                .map_or(0, |totals| totals.deleted)
        };
        let events = self
            .relay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_records(records, deleted);
        for event in &events {
            let rooms = event.rooms();
            match event {
                Event::Traffic(entries) => self.emit(rooms, event.name(), entries).await,
                Event::Open(open) => self.emit(rooms, event.name(), open).await,
                Event::Frame(frame) => self.emit(rooms, event.name(), frame).await,
                Event::Message(message) => self.emit(rooms, event.name(), message).await,
                Event::Close(close) => self.emit(rooms, event.name(), close).await,
                Event::End(end) => self.emit(rooms, event.name(), end).await,
            }
        }
    }

    /// Records were lost on the way: see [`LiveRelay::reset`].
    pub fn records_lost(&self) {
        self.relay.lock().unwrap_or_else(|p| p.into_inner()).reset();
    }

    /// Emits the agent's recording change as `recording:degraded` or
    /// `recording:resumed`.
    pub async fn publish_recording(&self, event: &RecordingEvent) {
        // Records were lost in between: messages being reassembled may miss frames.
        self.records_lost();
        match event {
            RecordingEvent::Degraded { since_ms, error } => {
                let data = DegradedEvent {
                    since: *since_ms,
                    error,
                };
                self.emit_to_all("recording:degraded", &data).await
            }
            RecordingEvent::Resumed(outage) => {
                let data = ResumedEvent {
                    stopped_at: outage.stopped_at_ms,
                    resumed_at: outage.resumed_at_ms,
                    records_lost: outage.records_lost,
                    error: &outage.error,
                };
                self.emit_to_all("recording:resumed", &data).await
            }
        }
    }

    /// Emits to the clients in any of `rooms` (once each).
    async fn emit<T: Serialize + ?Sized>(&self, rooms: Vec<String>, event: &str, data: &T) {
        self.stats.emitted.fetch_add(1, Ordering::Relaxed);
        let sent = self.io.to(rooms).emit(event, data).await;
        self.count(event, sent);
    }

    async fn emit_to_all<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        self.stats.emitted.fetch_add(1, Ordering::Relaxed);
        let sent = self.io.emit(event, data).await;
        self.count(event, sent);
    }

    fn count(&self, event: &str, sent: Result<(), BroadcastError>) {
        match sent {
            Ok(()) => {}
            Err(BroadcastError::Socket(errors)) => {
                // A client that is leaving (closed) misses nothing it would have read.
                let full = errors
                    .iter()
                    .filter(|e| matches!(e, SocketError::InternalChannelFull))
                    .count();
                self.stats.dropped.fetch_add(full as u64, Ordering::Relaxed);
            }
            Err(e) => debug!(error = %e, event, "cannot emit"),
        }
    }
}

/// The client's `subscribe`: its rooms become the ones asked for (see the module
/// docs), and the ack (if asked) says how many or why not.
async fn subscribe(socket: SocketRef, Data(payload): Data<serde_json::Value>, ack: AckSender) {
    let answer = match subscription_rooms(&payload) {
        Ok(rooms) => {
            let n = rooms.len();
            socket.leave_all();
            socket.join(rooms);
            serde_json::json!({ "subscribed": n })
        }
        Err(error) => serde_json::json!({ "error": error }),
    };
    if let Err(e) = ack.send(&answer) {
        debug!(error = %e, "cannot answer subscribe");
    }
}

/// Socket.IO connect middleware: the same token as the REST API, from the
/// handshake's auth payload (`{"token": "..."}`), the query or the header.
fn authenticate(
    auth: &AuthConfig,
    socket: &SocketRef,
    payload: Option<serde_json::Value>,
) -> Result<(), &'static str> {
    let parts = socket.req_parts();
    let mut headers = parts.headers.clone();
    let offered = payload
        .as_ref()
        .and_then(|p| p.get("token"))
        .and_then(|t| t.as_str())
        .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
    if let Some(value) = offered {
        headers.append(AUTHORIZATION, value);
    }
    auth.check(&headers, parts.uri.query()).map_err(|_| {
        "missing or invalid token: connect with auth {\"token\": \"<token>\"} \
         (printed by frametap-api at start, stored in <data-dir>/api-token)"
    })
}
