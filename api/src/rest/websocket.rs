//! `/api/websocket/...`: the seed's WebSocket Frames API (frames of a connection, one
//! frame, frame count, frame deletion) and the connection itself.
//!
//! Reads are point lookups of the follower store (well under a millisecond), so they
//! run on the async worker directly; only frame pages, which can scan or carry a lot,
//! go to a blocking thread. Deletion is a write: the agent, the store's only writer,
//! does it.
//!
//! The query helpers (`limit`, `after`, `direction`, `opcode`, the `Link` header) are
//! shared with the messages and NDJSON endpoints, so all three read them alike.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use frametap_store::{FrameFilter, FrameId, Store, TrafficId};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::common::{PathText, agent_error, follower};
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::query::QueryParams;
use crate::state::AppState;
use crate::views::{
    DeleteResult, Direction, DirectionParam, Frame, FrameCount, WebSocketConnection,
    connection_json, frame_json,
};

/// Frames per page when `limit` is not given.
pub(crate) const DEFAULT_FRAMES_LIMIT: u64 = 100;
/// Largest allowed `limit` of a frames page.
pub(crate) const MAX_FRAMES_LIMIT: u64 = 1000;
/// A frames page ends early once its payloads exceed this many bytes (before base64),
/// so a page of large frames stays a sane response size; a `Link` header still points
/// at the rest.
pub(crate) const PAGE_PAYLOAD_BUDGET: u64 = 64 << 20;
/// Frames read from the store per step while filling a page: bounds how far a page
/// can overshoot [`PAGE_PAYLOAD_BUDGET`] in memory before it is cut.
const READ_STEP: usize = 32;
/// Opcodes a frame can have (RFC 6455).
pub(crate) const OPCODES: [u8; 6] = [0, 1, 2, 8, 9, 10];

// The schemas of the ids and opcodes taken here (and by the messages and NDJSON
// endpoints), as the parsers below read them.

/// A traffic id as `TrafficId` parses it: 16 lowercase hex digits.
pub const TRAFFIC_ID_PATTERN: &str = "^[0-9a-f]{16}$";
/// A frame id as `FrameId` parses it: the traffic id, `-`, and the seq in lowercase
/// hex, 8 digits zero-padded or up to 16 without a leading zero.
pub const FRAME_ID_PATTERN: &str = "^[0-9a-f]{16}-(?:[0-9a-f]{8}|[1-9a-f][0-9a-f]{8,15})$";

/// A string schema with a pattern.
pub(crate) fn pattern_schema(pattern: &str, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

/// `after`: a frame id (a message's id is its first frame's).
pub struct FrameIdParam;

impl PartialSchema for FrameIdParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            FRAME_ID_PATTERN,
            "A frame id, e.g. `0191a2b3c4d50001-00000001`: the connection's traffic id, `-`, \
             and the frame's seq in lowercase hex (8 digits, zero-padded, or more without a \
             leading zero).",
        )
    }
}

impl ToSchema for FrameIdParam {}

/// `trafficId` of a HAR export.
pub struct TrafficIdParam;

impl PartialSchema for TrafficIdParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            TRAFFIC_ID_PATTERN,
            "A traffic entry id: 16 lowercase hex digits, e.g. `0191a2b3c4d50001`.",
        )
    }
}

impl ToSchema for TrafficIdParam {}

/// `opcode`: the opcodes a frame can have.
pub struct OpcodeParam;

impl PartialSchema for OpcodeParam {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .enum_values(Some(OPCODES))
            .description(Some(
                "A WebSocket opcode (RFC 6455): 0 continuation, 1 text, 2 binary, 8 close, \
                 9 ping, 10 pong; in decimal, without sign or leading zeros.",
            ))
            .into()
    }
}

impl ToSchema for OpcodeParam {}

/// The validated query of a frames page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FramesQuery {
    limit: u64,
    after: Option<FrameId>,
    direction: Option<Direction>,
    opcode: Option<u8>,
}

impl FramesQuery {
    fn parse(params: &QueryParams) -> Result<FramesQuery, ApiError> {
        Ok(FramesQuery {
            limit: page_limit(params)?,
            after: after_cursor(params, "frame")?,
            direction: direction_param(params)?,
            opcode: opcode_param(params)?,
        })
    }

    fn filter(&self) -> FrameFilter {
        FrameFilter {
            from_client: self.direction.map(Direction::is_from_client),
            opcode: self.opcode,
        }
    }

    /// The URL of the page after the one ending with frame `last`.
    fn next_page(&self, traffic: TrafficId, last: &str) -> String {
        let mut url = format!(
            "/api/websocket/{traffic}/frames?after={last}&limit={}",
            self.limit
        );
        if let Some(direction) = self.direction {
            url.push_str("&direction=");
            url.push_str(direction.as_str());
        }
        if let Some(opcode) = self.opcode {
            url.push_str(&format!("&opcode={opcode}"));
        }
        url
    }
}

/// `limit`: the size of a page of frames or messages (1 to 1000, default 100).
pub(super) fn page_limit(params: &QueryParams) -> Result<u64, ApiError> {
    params.integer("limit", 1, MAX_FRAMES_LIMIT, DEFAULT_FRAMES_LIMIT)
}

/// `after`: a cursor, the id of a `what` (frame or message: both are frame ids).
pub(super) fn after_cursor(params: &QueryParams, what: &str) -> Result<Option<FrameId>, ApiError> {
    let Some(raw) = params.single("after")? else {
        return Ok(None);
    };
    raw.parse::<FrameId>().map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "malformed cursor `after`: expected the `id` of a {what} of this connection, \
             such as 0191a2b3c4d50001-00000001, got {:?}",
            excerpt(raw)
        ))
    })
}

/// A cursor is a position in the connection being read: one of another connection
/// names no page of it, 404 (the request is well formed, as the OpenAPI document
/// says, but what it asks for does not exist).
pub(super) fn check_cursor(after: Option<FrameId>, traffic: TrafficId) -> Result<(), ApiError> {
    match after {
        Some(after) if after.traffic != traffic => Err(ApiError::NotFound(format!(
            "cursor `after` is frame {after} of connection {}: connection {traffic} has no \
             page after it (use the `id` of one of its own frames)",
            after.traffic
        ))),
        _ => Ok(()),
    }
}

/// `direction`: `client-to-server` or `server-to-client`, or the rules' names for
/// them, `to-server` and `to-client`.
pub(super) fn direction_param(params: &QueryParams) -> Result<Option<Direction>, ApiError> {
    let Some(raw) = params.single("direction")? else {
        return Ok(None);
    };
    Direction::parse(raw).map(Some).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "query parameter `direction` must be client-to-server (or to-server) or \
             server-to-client (or to-client), got {:?}",
            excerpt(raw)
        ))
    })
}

/// `opcode`: one of the opcodes a frame can have.
pub(super) fn opcode_param(params: &QueryParams) -> Result<Option<u8>, ApiError> {
    let Some(raw) = params.single("opcode")? else {
        return Ok(None);
    };
    raw.parse::<u8>()
        .ok()
        // `parse` takes "+1"; only the canonical form is an opcode.
        .filter(|op| OPCODES.contains(op) && op.to_string() == raw)
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter `opcode` must be one of 0, 1, 2, 8, 9, 10, got {:?}",
                excerpt(raw)
            ))
        })
}

/// Adds `Link: <next>; rel="next"` to a page's response when there is a next page.
pub(super) fn with_next_link(mut response: Response, next: Option<String>) -> Response {
    if let Some(next) = next {
        // Ids and known parameter values only: always a valid header value.
        if let Ok(link) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    response
}

/// Get frames for a WebSocket connection.
///
/// Frames oldest first, in capture order. Page on with `after` (the `id` of the last
/// frame received) or follow the `Link: <...>; rel="next"` header, sent whenever a page
/// is full (or cut at 64 MiB of payload). An unknown connection has no frames: `[]`.
#[utoipa::path(
    get,
    path = "/api/websocket/{trafficId}/frames",
    tag = "websocket",
    operation_id = "listFrames",
    params(
        ("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection (16 hex digits)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most frames to return (1 to 1000, default 100)"),
        ("after" = Option<FrameIdParam>, Query, description = "Cursor: return the frames after this frame id (of the same connection; one of another connection is 404)"),
        ("direction" = Option<DirectionParam>, Query, description = "Only frames sent in this direction: `client-to-server` (or `to-server`), `server-to-client` (or `to-client`)"),
        ("opcode" = Option<OpcodeParam>, Query, description = "Only frames with this opcode: 0, 1, 2, 8, 9 or 10"),
    ),
    responses(
        (status = 200, description = "Frames, oldest first", body = Vec<Frame>,
            headers(("Link" = String, description = "`</api/websocket/{trafficId}/frames?after=...>; rel=\"next\"` when more frames may follow"))),
        (status = 400, description = "A malformed query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "`after` is a frame of another connection", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn list_frames(
    State(state): State<AppState>,
    traffic: PathText,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = FramesQuery::parse(&QueryParams::parse(query.as_deref()))?;
    let Some(traffic) = traffic.parse::<TrafficId>() else {
        return Ok(Json(Vec::<Frame>::new()).into_response());
    };
    check_cursor(query.after, traffic)?;
    let store = follower(&state)?;
    let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
    // Usually a sub-millisecond seek, but a filter that rarely matches scans the whole
    // connection and a page can carry 64 MiB to encode: keep it off the async workers.
    let (after, filter) = (query.after.map(|id| id.seq), query.filter());
    let (page, over_budget) =
        tokio::task::spawn_blocking(move || read_page(&store, traffic, after, limit, &filter))
            .await
            .map_err(|e| ApiError::worker_failed(&e))?
            .map_err(|e| ApiError::store_read(&e))?;
    let next = match page.last() {
        Some(last) if page.len() == limit || over_budget => {
            Some(query.next_page(traffic, &last.id))
        }
        _ => None,
    };
    Ok(with_next_link(Json(page).into_response(), next))
}

/// Up to `limit` frames of `traffic` after seq `after` matching `filter`, cut once they
/// hold more than [`PAGE_PAYLOAD_BUDGET`] bytes of payload; `true` if it was cut.
fn read_page(
    store: &Store,
    traffic: TrafficId,
    after: Option<u64>,
    limit: usize,
    filter: &FrameFilter,
) -> anyhow::Result<(Vec<Frame>, bool)> {
    let mut page: Vec<Frame> = Vec::new();
    let mut cursor = after;
    let mut payload_bytes: u64 = 0;
    // Read in small steps so a page of large frames is cut near the budget instead of
    // after loading `limit` of them.
    while page.len() < limit {
        let step = (limit - page.len()).min(READ_STEP);
        let records = store.frames(traffic, cursor, step, filter)?;
        for record in &records {
            cursor = Some(record.seq);
            payload_bytes += record.payload.len() as u64;
            page.push(frame_json(record));
            if payload_bytes > PAGE_PAYLOAD_BUDGET {
                return Ok((page, true));
            }
        }
        if records.len() < step {
            break;
        }
    }
    Ok((page, false))
}

/// Get a specific frame.
#[utoipa::path(
    get,
    path = "/api/websocket/frame/{id}",
    tag = "websocket",
    operation_id = "getFrame",
    params(("id" = String, Path, description = "Frame id, e.g. 0191a2b3c4d50001-00000001")),
    responses(
        (status = 200, description = "The frame", body = Frame),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such frame (never captured, deleted, or a malformed id)", body = ErrorBody,
            example = json!({"error": "Frame not found"})),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn get_frame(
    State(state): State<AppState>,
    id: PathText,
) -> Result<Json<Frame>, ApiError> {
    let not_found = || ApiError::NotFound("Frame not found".into());
    let id = id.parse::<FrameId>().ok_or_else(not_found)?;
    let store = follower(&state)?;
    match store.frame(&id).map_err(|e| ApiError::store_read(&e))? {
        Some(record) => Ok(Json(frame_json(&record))),
        None => Err(not_found()),
    }
}

/// Get frame count for a connection.
///
/// Frames stored now (deleted ones excluded), in O(1). 0 for an unknown connection.
#[utoipa::path(
    get,
    path = "/api/websocket/{trafficId}/count",
    tag = "websocket",
    operation_id = "countFrames",
    params(("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection")),
    responses(
        (status = 200, description = "The frame count", body = FrameCount),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn frame_count(
    State(state): State<AppState>,
    traffic: PathText,
) -> Result<Json<FrameCount>, ApiError> {
    let Some(traffic) = traffic.parse::<TrafficId>() else {
        return Ok(Json(FrameCount { count: 0 }));
    };
    let store = follower(&state)?;
    let count = store
        .frame_count(traffic)
        .map_err(|e| ApiError::store_read(&e))?;
    Ok(Json(FrameCount { count }))
}

/// Delete all frames for a connection.
///
/// Deletes every frame recorded so far (through the agent, the store's only writer);
/// afterwards the count is 0 and each deleted frame id is 404. Frames of a still-open
/// connection keep being recorded and served.
#[utoipa::path(
    delete,
    path = "/api/websocket/{trafficId}/frames",
    tag = "websocket",
    operation_id = "deleteFrames",
    params(("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection")),
    responses(
        (status = 200, description = "Frames deleted", body = DeleteResult),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such traffic entry, connection or frames", body = ErrorBody,
            example = json!({"error": "Traffic not found"})),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The agent failed to delete", body = ErrorBody),
        (status = 503, description = "The agent is not running (nothing was deleted), or the store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn delete_frames(
    State(state): State<AppState>,
    traffic: PathText,
) -> Result<Json<DeleteResult>, ApiError> {
    let not_found = || ApiError::NotFound("Traffic not found".into());
    let traffic = traffic.parse::<TrafficId>().ok_or_else(not_found)?;
    if !traffic_known(&state, traffic)? {
        // The follower may lag a just-opened connection: catch up once before saying no.
        refresh(&state).await?;
        if !traffic_known(&state, traffic)? {
            return Err(not_found());
        }
    }
    let deleted = state.agent.delete_frames(traffic).await.map_err(|e| {
        agent_error(
            e,
            &format!("delete the frames of {traffic}"),
            "nothing was deleted",
        )
    })?;
    // Read-your-writes: the next count or frame read must not see the deleted frames.
    if let Err(error) = refresh(&state).await {
        tracing::warn!(%error, "catching up after deleting frames failed");
    }
    Ok(Json(DeleteResult {
        success: true,
        deleted,
    }))
}

/// Whether the store knows `traffic`: a traffic entry, a connection, or frames.
pub(super) fn traffic_known(state: &AppState, traffic: TrafficId) -> Result<bool, ApiError> {
    let store = follower(state)?;
    let read = |e: anyhow::Error| ApiError::store_read(&e);
    Ok(store.traffic(traffic).map_err(read)?.is_some()
        || store.ws_connection(traffic).map_err(read)?.is_some()
        || store.frame_count(traffic).map_err(read)? > 0)
}

/// Catches the follower up with the agent's writes, off the async workers.
pub(super) async fn refresh(state: &AppState) -> Result<(), ApiError> {
    let source = state.store.clone();
    tokio::task::spawn_blocking(move || source.refresh())
        .await
        .map_err(|e| ApiError::worker_failed(&e))
}

/// Get a WebSocket connection.
///
/// Its URL, negotiation, addresses, frame counts and, once it ended, who closed it
/// and how. Fields are camelCase; mitmproxy's `WebSocketData` names for the close
/// fields (`closed_by_client`, `close_code`, `close_reason`, `timestamp_end`) are
/// given too. Each frame count says what it counts: `frameCount` and
/// `storedFrameCount` are what `/count` says (frames stored now), `recordedFrameCount`
/// includes deleted frames, and once closed `framesFromClient + framesFromServer +
/// framesFromFrametap = recordedFrameCount`.
#[utoipa::path(
    get,
    path = "/api/websocket/{trafficId}",
    tag = "websocket",
    operation_id = "getConnection",
    params(("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection")),
    responses(
        (status = 200, description = "The connection", body = WebSocketConnection),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such connection", body = ErrorBody,
            example = json!({"error": "WebSocket connection not found"})),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn get_connection(
    State(state): State<AppState>,
    traffic: PathText,
) -> Result<Json<WebSocketConnection>, ApiError> {
    let not_found = || ApiError::NotFound("WebSocket connection not found".into());
    let traffic = traffic.parse::<TrafficId>().ok_or_else(not_found)?;
    let store = follower(&state)?;
    let read = |e: anyhow::Error| ApiError::store_read(&e);
    let connection = store
        .ws_connection(traffic)
        .map_err(read)?
        .ok_or_else(not_found)?;
    let totals = store.frame_totals(traffic).map_err(read)?;
    Ok(Json(connection_json(&connection, totals)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<FramesQuery, ApiError> {
        FramesQuery::parse(&QueryParams::parse(Some(q)))
    }

    #[test]
    fn frames_query_defaults_and_link() {
        let q = parse("").unwrap();
        assert_eq!(q.limit, 100);
        assert_eq!(q.filter(), FrameFilter::default());
        let q = parse("limit=5&direction=server-to-client&opcode=10&unknown=1").unwrap();
        assert_eq!(
            q.filter(),
            FrameFilter {
                from_client: Some(false),
                opcode: Some(10)
            }
        );
        // The rules' names for the directions work too; links use the seed's.
        assert_eq!(
            parse("direction=to-client").unwrap(),
            parse("direction=server-to-client").unwrap()
        );
        assert_eq!(
            parse("direction=to-server").unwrap().filter().from_client,
            Some(true)
        );
        assert_eq!(
            parse("direction=client-to-server")
                .unwrap()
                .filter()
                .from_client,
            Some(true)
        );
        assert_eq!(
            q.next_page(TrafficId(1), "0000000000000001-00000005"),
            "/api/websocket/0000000000000001/frames?after=0000000000000001-00000005&limit=5\
             &direction=server-to-client&opcode=10"
        );
    }

    #[test]
    fn frames_query_rejects_bad_values() {
        for (q, needle) in [
            ("opcode=3", "`opcode`"),
            ("opcode=+1", "`opcode`"),
            ("opcode=01", "`opcode`"),
            ("opcode=256", "`opcode`"),
            ("direction=up", "`direction`"),
            ("after=nope", "malformed cursor"),
            ("limit=0", "`limit`"),
            ("opcode=1&opcode=2", "more than once"),
        ] {
            let err = parse(q).unwrap_err();
            assert_eq!(err.status(), 400, "{q}");
            assert!(err.message().contains(needle), "{q}: {err}");
        }
    }
}
