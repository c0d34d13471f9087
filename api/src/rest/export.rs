//! Exports: `GET /api/har` (HAR 1.2 of one connection or of a time range, see
//! [`crate::har`]) and `GET /api/websocket/{trafficId}/frames.ndjson` (every frame of
//! a connection, one JSON per line, streamed).
//!
//! Both read the store on a blocking thread. The HAR is built in memory, so it is
//! capped (entries, and the messages it carries); the NDJSON stream is not: it reads
//! the store a page at a time and hands chunks through a bounded channel, so memory
//! stays a few chunks whatever the connection's size, and a slow client slows the
//! reading down instead of piling data up.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use frametap_store::{BodyOf, FrameFilter, Store, TrafficEntry, TrafficId};
use tokio::sync::mpsc;

use super::common::{PathText, follower};
use super::websocket::{
    FrameIdParam, OpcodeParam, TrafficIdParam, after_cursor, check_cursor, direction_param,
    opcode_param,
};
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::har::{
    Har, HarBodies, HarEntry, HarWebSocketMessage, har, har_body, har_entry, har_message,
    has_http_exchange, is_websocket,
};
use crate::messages::Reassembler;
use crate::query::{MAX_INTEGER, QueryParams};
use crate::state::AppState;
use crate::views::{Direction, DirectionParam, Frame, frame_json};

/// Most entries in a HAR of a time range: the oldest ones in the range are kept.
pub(crate) const MAX_HAR_ENTRIES: usize = 10_000;
/// Most WebSocket messages in one HAR, all entries together.
pub(crate) const MAX_HAR_MESSAGES: usize = 100_000;
/// Most message and body content in one HAR (bytes before encoding), all entries
/// together.
pub(crate) const HAR_CONTENT_BUDGET: u64 = 64 << 20;
/// Frames read from the store per step (HAR messages and NDJSON).
const READ_STEP: usize = 64;
/// NDJSON bytes gathered before they are handed to the response.
const NDJSON_CHUNK: usize = 256 << 10;
/// NDJSON chunks that may wait for the client: with [`NDJSON_CHUNK`], the memory a
/// stream can hold.
const NDJSON_QUEUE: usize = 4;

/// What a HAR export covers: the entries started from `from` to `to` (Unix ms, both
/// included), only `traffic` if given. Every combination of the three parameters is
/// a selection (the OpenAPI document cannot relate parameters): none is every entry,
/// and a range that ends before it starts selects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HarSelection {
    traffic: Option<TrafficId>,
    from: u64,
    to: Option<u64>,
}

impl HarSelection {
    fn parse(params: &QueryParams) -> Result<HarSelection, ApiError> {
        let traffic = match params.single("trafficId")? {
            None => None,
            Some(raw) => Some(raw.parse::<TrafficId>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "query parameter `trafficId` must be a traffic entry id (16 hex digits), \
                     got {:?}",
                    excerpt(raw)
                ))
            })?),
        };
        let from = params.integer("from", 0, MAX_INTEGER, 0)?;
        let to = match params.single("to")? {
            None => None,
            Some(_) => Some(params.integer("to", 0, MAX_INTEGER, MAX_INTEGER)?),
        };
        Ok(HarSelection { traffic, from, to })
    }

    fn contains(&self, timestamp_ms: u64) -> bool {
        (self.from..=self.to.unwrap_or(u64::MAX)).contains(&timestamp_ms)
    }

    /// Why the range selects nothing, if it is empty.
    fn empty_range(&self) -> Option<String> {
        self.to.filter(|to| *to < self.from).map(|to| {
            format!(
                "frametap: the range ends (`to` {to}) before it starts (`from` {}): no entry \
                 started in it.",
                self.from
            )
        })
    }

    /// The download's file name.
    fn file_name(self) -> String {
        let range = || match self.to {
            Some(to) => format!("{}-{to}", self.from),
            None => format!("{}-latest", self.from),
        };
        match self.traffic {
            Some(id) if self.from == 0 && self.to.is_none() => format!("frametap-{id}.har"),
            Some(id) => format!("frametap-{id}-{}.har", range()),
            None => format!("frametap-{}.har", range()),
        }
    }
}

/// Export traffic as HAR 1.2.
///
/// Every entry started in a time range (`from` and/or `to`, Unix milliseconds, both
/// included; without either, every entry), oldest first; with `trafficId`, only that
/// entry (a HAR without entries, saying why, when it started outside the range). A
/// range that ends before it starts selects nothing: a HAR without entries. WebSocket
/// connections carry their messages in Chrome's `_resourceType: "websocket"` and
/// `_webSocketMessages` (as Chrome DevTools and HTTP Toolkit import them): `send` from
/// the client, `receive` to it, each message as frametap saw it (dropped and injected
/// ones included), text as text and binary as base64, at most 1 MiB each.
///
/// Capped: a range exports its 10,000 oldest entries, and one HAR carries at most
/// 100,000 messages and about 64 MiB of message content; `log.comment` and the entries'
/// `comment` say what was left out (the messages endpoint pages through everything).
///
/// Only HTTP exchanges are exported: entries without a request (connections relayed
/// untouched, protocol `tls` or `tcp`, and TLS handshakes that failed before the client
/// sent a request) are left out, and `log.comment` counts them. Such an entry asked
/// for by `trafficId` gives a HAR with no entries that says why.
#[utoipa::path(
    get,
    path = "/api/har",
    tag = "export",
    operation_id = "exportHar",
    params(
        ("trafficId" = Option<TrafficIdParam>, Query, description = "Export only this traffic entry (16 hex digits)"),
        ("from" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_i64, description = "Export the entries started at or after this time (Unix ms; default 0)"),
        ("to" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_i64, description = "Export the entries started at or before this time (Unix ms; default: no end)"),
    ),
    responses(
        (status = 200, description = "The HAR file", body = Har, content_type = "application/json",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"frametap-<trafficId and/or range>.har\"`"))),
        (status = 400, description = "A malformed value", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such traffic entry", body = ErrorBody,
            example = json!({"error": "Traffic entry not found"})),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn export_har(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let selection = HarSelection::parse(&QueryParams::parse(query.as_deref()))?;
    let store = follower(&state)?;
    let har = tokio::task::spawn_blocking(move || build_har(&store, selection))
        .await
        .map_err(|e| ApiError::worker_failed(&e))?
        .map_err(|e| ApiError::store_read(&e))?
        .ok_or_else(|| ApiError::NotFound("Traffic entry not found".into()))?;
    let mut response = Json(har).into_response();
    let disposition = format!("attachment; filename=\"{}\"", selection.file_name());
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// What is left of one HAR's message allowance.
struct MessageBudget {
    messages: usize,
    bytes: u64,
}

/// The HAR of `selection`; `None` for an unknown traffic entry.
fn build_har(store: &Store, selection: HarSelection) -> anyhow::Result<Option<Har>> {
    let mut budget = MessageBudget {
        messages: MAX_HAR_MESSAGES,
        bytes: HAR_CONTENT_BUDGET,
    };
    let (entries, comment) = match selection.traffic {
        Some(id) => match store.traffic(id)? {
            None => return Ok(None),
            Some(entry) if !selection.contains(entry.timestamp_ms) => {
                let note = format!(
                    "frametap: traffic entry {id} started at {}, outside the range asked for.",
                    entry.timestamp_ms
                );
                return Ok(Some(har(Vec::new(), Some(note))));
            }
            Some(entry) if !has_http_exchange(&entry) => {
                let why = entry
                    .not_intercepted
                    .as_deref()
                    .map(|why| format!("relayed untouched: {why}"))
                    .or_else(|| entry.error.clone())
                    .unwrap_or_else(|| "no request was recorded".into());
                let note = format!(
                    "frametap: traffic entry {id} has no HTTP exchange ({why}); HAR holds HTTP \
                     exchanges only (GET /api/traffic/{id} has the entry)."
                );
                return Ok(Some(har(Vec::new(), Some(note))));
            }
            Some(entry) => (vec![entry], None),
        },
        None => {
            if let Some(note) = selection.empty_range() {
                return Ok(Some(har(Vec::new(), Some(note))));
            }
            let from = selection.from;
            // One pass over the table (newest first), keeping the oldest entries.
            let kept = RefCell::new(VecDeque::new());
            let left_out = std::cell::Cell::new(0u64);
            let (_, total) = store.traffic_page(0, 0, |entry| {
                let in_range = selection.contains(entry.timestamp_ms);
                let hit = in_range && has_http_exchange(entry);
                if in_range && !hit {
                    left_out.set(left_out.get() + 1);
                }
                if hit {
                    let mut kept = kept.borrow_mut();
                    kept.push_back(entry.clone());
                    if kept.len() > MAX_HAR_ENTRIES {
                        kept.pop_front();
                    }
                }
                hit
            })?;
            let mut entries: Vec<_> = kept.into_inner().into();
            entries.reverse();
            let mut notes = Vec::new();
            if total > entries.len() as u64 {
                notes.push(format!(
                    "frametap: {total} entries started in the range; this export holds the \
                     {MAX_HAR_ENTRIES} oldest. The rest started at or after {}.",
                    entries.last().map_or(from, |e| e.timestamp_ms)
                ));
            }
            if left_out.get() > 0 {
                notes.push(format!(
                    "frametap: {} entries in the range without an HTTP exchange (connections \
                     relayed untouched, TLS handshakes that failed before a request) are left \
                     out; GET /api/traffic lists them.",
                    left_out.get()
                ));
            }
            (entries, (!notes.is_empty()).then(|| notes.join(" ")))
        }
    };
    let mut har_entries: Vec<HarEntry> = Vec::with_capacity(entries.len());
    for entry in &entries {
        let bodies = bodies(store, entry, &mut budget)?;
        if !is_websocket(entry) {
            har_entries.push(har_entry(entry, None, bodies));
            continue;
        }
        let (messages, cut) = websocket_messages(store, entry.id, &mut budget)?;
        let mut har_entry = har_entry(entry, Some(messages), bodies);
        if cut {
            let note = format!(
                "frametap: this export's message allowance ({MAX_HAR_MESSAGES} messages, \
                 {} MiB) ran out here: later messages of {} are left out \
                 (GET /api/websocket/{}/messages has them all).",
                HAR_CONTENT_BUDGET >> 20,
                entry.id,
                entry.id
            );
            har_entry.comment = Some(match har_entry.comment {
                Some(error) => format!("{error}; {note}"),
                None => note,
            });
        }
        har_entries.push(har_entry);
    }
    Ok(Some(har(har_entries, comment)))
}

/// The recorded bodies of `entry` within `budget` (which they use up).
fn bodies(
    store: &Store,
    entry: &TrafficEntry,
    budget: &mut MessageBudget,
) -> anyhow::Result<HarBodies> {
    let mut read = |of: BodyOf| -> anyhow::Result<_> {
        let (info, headers) = match of {
            BodyOf::Request => (entry.request_body, &entry.request_headers),
            BodyOf::Response => (entry.response_body, &entry.response_headers),
        };
        let Some(info) = info else {
            return Ok(None);
        };
        let limit = usize::try_from(budget.bytes).unwrap_or(usize::MAX);
        let stored = store.body(entry.id, of, limit)?;
        let encoding = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, value)| value.as_str());
        let body = har_body(info, &stored, encoding, limit);
        budget.bytes = budget.bytes.saturating_sub(body.content_len);
        Ok(Some(body))
    };
    Ok(HarBodies {
        request: read(BodyOf::Request)?,
        response: read(BodyOf::Response)?,
    })
}

/// The messages of connection `traffic` within `budget` (which they use up), and
/// whether the budget cut them short. Messages still open end the list, flagged
/// nowhere in HAR: Chrome's format has no field for it.
fn websocket_messages(
    store: &Store,
    traffic: TrafficId,
    budget: &mut MessageBudget,
) -> anyhow::Result<(Vec<HarWebSocketMessage>, bool)> {
    let mut messages = Vec::new();
    if budget.messages == 0 || budget.bytes == 0 {
        let any = !store
            .frames(traffic, None, 1, &FrameFilter::default())?
            .is_empty();
        return Ok((messages, any));
    }
    let mut assembler = Reassembler::default().max_messages(budget.messages);
    let mut cursor = None;
    let mut used: u64 = 0;
    let mut cut = false;
    'read: loop {
        let records = store.frames(traffic, cursor, READ_STEP, &FrameFilter::default())?;
        for record in &records {
            cursor = Some(record.seq);
            assembler.push(record);
            while let Some(message) = assembler.next_message() {
                used += message.content.len() as u64;
                messages.push(har_message(&message));
            }
            if assembler.is_done() || used + assembler.buffered_bytes() as u64 > budget.bytes {
                // Cut short only if anything follows.
                cut = !store
                    .frames(traffic, cursor, 1, &FrameFilter::default())?
                    .is_empty();
                break 'read;
            }
        }
        if records.len() < READ_STEP {
            break;
        }
    }
    // The export is a snapshot: what is still open is shown as far as it goes.
    assembler.finish();
    while let Some(message) = assembler.next_message() {
        used += message.content.len() as u64;
        messages.push(har_message(&message));
    }
    budget.messages = budget.messages.saturating_sub(messages.len());
    budget.bytes = budget.bytes.saturating_sub(used);
    Ok((messages, cut))
}

/// Export a connection's frames as NDJSON.
///
/// Every frame of the connection, oldest first, one JSON object per line, exactly
/// as `GET /api/websocket/{trafficId}/frames` shows it, streamed (no paging, no
/// size limit) up to the last frame recorded when the stream gets there. The same
/// filters as the frames endpoint apply; `after` resumes after a frame. An unknown
/// connection has no frames: an empty stream. A store failure mid-stream aborts the
/// response (the body ends without its final chunk).
#[utoipa::path(
    get,
    path = "/api/websocket/{trafficId}/frames.ndjson",
    tag = "export",
    operation_id = "exportFramesNdjson",
    params(
        ("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection (16 hex digits)"),
        ("after" = Option<FrameIdParam>, Query, description = "Start after this frame id (of the same connection; one of another connection is 404)"),
        ("direction" = Option<DirectionParam>, Query, description = "Only frames sent in this direction: `client-to-server` (or `to-server`), `server-to-client` (or `to-client`)"),
        ("opcode" = Option<OpcodeParam>, Query, description = "Only frames with this opcode: 0, 1, 2, 8, 9 or 10"),
    ),
    responses(
        (status = 200, description = "One Frame per line (`\\n`-terminated)", body = Frame, content_type = "application/x-ndjson"),
        (status = 400, description = "A malformed query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "`after` is a frame of another connection", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn export_frames_ndjson(
    State(state): State<AppState>,
    traffic: PathText,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(query.as_deref());
    let after = after_cursor(&params, "frame")?;
    let filter = FrameFilter {
        from_client: direction_param(&params)?.map(Direction::is_from_client),
        opcode: opcode_param(&params)?,
    };
    // Like frames: an unknown or malformed id has no frames, an empty stream.
    let Some(traffic) = traffic.parse::<TrafficId>() else {
        return Ok(ndjson_response(Body::empty()));
    };
    check_cursor(after, traffic)?;
    let store = follower(&state)?;
    let (chunks, receiver) = mpsc::channel(NDJSON_QUEUE);
    let after = after.map(|id| id.seq);
    tokio::task::spawn_blocking(move || stream_frames(&store, traffic, after, &filter, &chunks));
    Ok(ndjson_response(Body::from_stream(ChunkStream(receiver))))
}

fn ndjson_response(body: Body) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// A chunk of the NDJSON body, or the failure that ends it.
type Chunk = Result<Bytes, std::io::Error>;

/// Reads the frames a step at a time and sends them, as NDJSON chunks, until the
/// last one or until the client is gone (the channel closed).
fn stream_frames(
    store: &Store,
    traffic: TrafficId,
    after: Option<u64>,
    filter: &FrameFilter,
    chunks: &mpsc::Sender<Chunk>,
) {
    let mut cursor = after;
    let mut chunk: Vec<u8> = Vec::new();
    loop {
        let records = match store.frames(traffic, cursor, READ_STEP, filter) {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), %traffic, "NDJSON export: reading frames failed");
                let _ = chunks.blocking_send(Err(std::io::Error::other(format!("{error:#}"))));
                return;
            }
        };
        for record in &records {
            cursor = Some(record.seq);
            serde_json::to_writer(&mut chunk, &frame_json(record))
                .expect("a frame serialises to JSON");
            chunk.push(b'\n');
            if chunk.len() >= NDJSON_CHUNK
                && chunks
                    .blocking_send(Ok(Bytes::from(std::mem::take(&mut chunk))))
                    .is_err()
            {
                return;
            }
        }
        if records.len() < READ_STEP {
            break;
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.blocking_send(Ok(Bytes::from(chunk)));
    }
}

/// The receiving end of the chunk channel, as the `Stream` a streamed body reads.
pub(super) struct ChunkStream(pub(super) mpsc::Receiver<Chunk>);

impl futures_core::Stream for ChunkStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frametap_store::{FrameRecord, StoreOptions};

    /// A store holding one connection of five one-frame text messages of 10 bytes.
    fn five_messages() -> (tempfile::TempDir, Store, TrafficId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_primary(dir.path(), StoreOptions::default()).unwrap();
        let traffic = TrafficId(9 << 16);
        let records: Vec<_> = (1..=5u64)
            .map(|seq| {
                FrameRecord {
                    traffic,
                    seq,
                    timestamp_ms: 1000 + seq,
                    from_client: seq % 2 == 1,
                    opcode: 1,
                    fin: true,
                    rsv: 0,
                    masked: false,
                    compressed: false,
                    wire_len: 12,
                    payload_len: 10,
                    truncated: false,
                    payload: format!("message {seq:02}").into_bytes(),
                    close_code: None,
                    close_reason: None,
                    injected: false,
                    dropped: false,
                    binary_message: false,
                    modified: false,
                }
                .into()
            })
            .collect();
        store.write(&records).unwrap();
        (dir, store, traffic)
    }

    #[test]
    fn har_messages_stop_at_the_budget() {
        let (_dir, store, traffic) = five_messages();
        for (messages, bytes, expected, cut) in [
            (100, 1000, 5, false),
            (5, 1000, 5, false),
            (3, 1000, 3, true),
            (100, 25, 3, true),
            (0, 1000, 0, true),
        ] {
            let mut budget = MessageBudget { messages, bytes };
            let (got, was_cut) = websocket_messages(&store, traffic, &mut budget).unwrap();
            assert_eq!((got.len(), was_cut), (expected, cut), "{messages} {bytes}");
            assert_eq!(budget.messages, messages.saturating_sub(expected));
        }
    }

    fn parse(q: &str) -> Result<HarSelection, ApiError> {
        HarSelection::parse(&QueryParams::parse(Some(q)))
    }

    #[test]
    fn har_selection_takes_every_combination() {
        let id = TrafficId(0x0191_a2b3_c4d5_0001);
        let sel = |traffic, from, to| HarSelection { traffic, from, to };
        assert_eq!(
            parse("trafficId=0191a2b3c4d50001").unwrap(),
            sel(Some(id), 0, None)
        );
        assert_eq!(parse("from=5&to=9").unwrap(), sel(None, 5, Some(9)));
        assert_eq!(parse("to=9").unwrap(), sel(None, 0, Some(9)));
        // Nothing: every entry; an entry and a range: the entry if it is in it.
        assert_eq!(parse("").unwrap(), sel(None, 0, None));
        assert_eq!(
            parse("trafficId=0191a2b3c4d50001&from=1").unwrap(),
            sel(Some(id), 1, None)
        );
        assert_eq!(
            parse("from=7").unwrap().file_name(),
            "frametap-7-latest.har"
        );
        assert_eq!(parse("").unwrap().file_name(), "frametap-0-latest.har");
        assert_eq!(
            parse("trafficId=0191a2b3c4d50001").unwrap().file_name(),
            "frametap-0191a2b3c4d50001.har"
        );
        assert_eq!(
            parse("trafficId=0191a2b3c4d50001&to=3")
                .unwrap()
                .file_name(),
            "frametap-0191a2b3c4d50001-0-3.har"
        );
        // A range that ends first is empty, not an error.
        let empty = parse("from=9&to=5").unwrap();
        assert!(empty.empty_range().unwrap().contains("before it starts"));
        assert!(!empty.contains(7));
        assert!(parse("from=5&to=9").unwrap().empty_range().is_none());
        assert!(
            parse("to=9223372036854775807")
                .unwrap()
                .contains(u64::MAX >> 1)
        );
        for (q, needle) in [
            ("trafficId=nope", "`trafficId`"),
            ("trafficId=", "`trafficId`"),
            ("trafficId=0191A2B3C4D50001", "`trafficId`"),
            ("from=-1", "`from`"),
            ("to=1e3", "`to`"),
            ("to=9223372036854775808", "`to`"),
            ("from=1&from=2", "more than once"),
        ] {
            let err = parse(q).unwrap_err();
            assert_eq!(err.status(), 400, "{q}");
            assert!(err.message().contains(needle), "{q}: {err}");
        }
    }
}
