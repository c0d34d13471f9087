//! Live events over Socket.IO, on the API's port: what the agent persisted, as it
//! persisted it (fed by [`crate::agent_link`], never by polling the store).
//!
//! | event             | payload                                                    |
//! |-------------------|------------------------------------------------------------|
//! | `traffic:batch`   | array of traffic entries (same JSON as `/api/traffic`)     |
//! | `websocket:open`  | `{trafficId, url, timestamp, clientAddress, serverAddress, subprotocol, extensions, deflate}` |
//! | `websocket:frame` | the frame, same JSON as `/api/websocket/frame/:id`         |
//! | `websocket:close` | `{trafficId, code, reason, frameCount, closedByClient, timestamp, abnormal}` |
//! | `traffic:end`     | a connection relayed untouched ended: `{trafficId, timestamp, duration, bytesFromClient, bytesFromServer, end, error}` |
//!
//! Clients authenticate like REST clients: `auth: {token}` in the Socket.IO
//! handshake, `?token=` or `Authorization: Bearer`. Each client has a bounded
//! buffer; events for a client that cannot keep up are dropped and counted.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, header::AUTHORIZATION};
use frametap_store::{Record, TunnelEnd, WsClose, WsOpen};
use serde::Serialize;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::{BroadcastError, SocketIo};
use tracing::debug;

use crate::auth::AuthConfig;
use crate::views;

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

/// The Socket.IO side of the API.
#[derive(Clone)]
pub struct LiveEvents {
    io: SocketIo,
    pub stats: Arc<EventStats>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OpenEvent<'a> {
    traffic_id: String,
    url: &'a str,
    timestamp: u64,
    client_address: &'a str,
    server_address: &'a str,
    subprotocol: Option<&'a str>,
    extensions: Option<&'a str>,
    deflate: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CloseEvent<'a> {
    traffic_id: String,
    code: Option<u16>,
    reason: Option<&'a str>,
    frame_count: u64,
    closed_by_client: Option<bool>,
    timestamp: u64,
    abnormal: Option<&'a str>,
}

impl LiveEvents {
    /// The tower layer to put on the router, and the handle that emits.
    pub fn new(auth: AuthConfig) -> (SocketIoLayer, LiveEvents) {
        let (layer, io) = SocketIo::builder()
            .max_buffer_size(CLIENT_BUFFER)
            .build_layer();
        let on_connect = async |socket: SocketRef| {
            debug!(id = %socket.id, "Socket.IO client connected");
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
            stats: Arc::default(),
        };
        (layer, events)
    }

    /// Emits `records` (persisted by the agent, in order) to every client.
    pub async fn publish(&self, records: Vec<Record>) {
        let mut traffic = Vec::new();
        for record in &records {
            match record {
                Record::Traffic(entry) => traffic.push(views::traffic_json(entry)),
                Record::WsOpen(open) => self.emit("websocket:open", &open_event(open)).await,
                Record::Frame(frame) => {
                    self.emit("websocket:frame", &views::frame_json(frame))
                        .await
                }
                Record::WsClose(close) => self.emit("websocket:close", &close_event(close)).await,
                Record::TunnelEnd(end) => self.emit("traffic:end", &end_event(end)).await,
            }
        }
        if !traffic.is_empty() {
            self.emit("traffic:batch", &traffic).await;
        }
    }

    async fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) {
        self.stats.emitted.fetch_add(1, Ordering::Relaxed);
        match self.io.emit(event, data).await {
            Ok(()) => {}
            Err(BroadcastError::Socket(errors)) => {
                self.stats
                    .dropped
                    .fetch_add(errors.len() as u64, Ordering::Relaxed);
            }
            Err(e) => debug!(error = %e, event, "cannot emit"),
        }
    }
}

fn open_event(open: &WsOpen) -> OpenEvent<'_> {
    OpenEvent {
        traffic_id: open.traffic.to_string(),
        url: &open.url,
        timestamp: open.timestamp_ms,
        client_address: &open.client_address,
        server_address: &open.server_address,
        subprotocol: open.subprotocol.as_deref(),
        extensions: open.extensions.as_deref(),
        deflate: open.deflate,
    }
}

/// `traffic:end`: a connection relayed untouched (listed by `traffic:batch` when it
/// started) ended.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndEvent<'a> {
    traffic_id: String,
    timestamp: u64,
    duration: Option<f64>,
    bytes_from_client: u64,
    bytes_from_server: u64,
    end: &'a str,
    error: Option<&'a str>,
}

fn end_event(end: &TunnelEnd) -> EndEvent<'_> {
    EndEvent {
        traffic_id: end.traffic.to_string(),
        timestamp: end.timestamp_ms,
        duration: Some(end.duration_ms).filter(|d| d.is_finite()),
        bytes_from_client: end.bytes_from_client,
        bytes_from_server: end.bytes_from_server,
        end: &end.end,
        error: end.error.as_deref(),
    }
}

fn close_event(close: &WsClose) -> CloseEvent<'_> {
    CloseEvent {
        traffic_id: close.traffic.to_string(),
        code: close.close_code,
        reason: close.close_reason.as_deref(),
        frame_count: close.frames_from_client + close.frames_from_server,
        closed_by_client: close.closed_by.as_deref().map(|who| who == "client"),
        timestamp: close.timestamp_ms,
        abnormal: close.abnormal.as_deref(),
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
