//! Replays: `POST /api/websocket/{trafficId}/replay` plans the replay of a recorded
//! conversation from the store (which client messages, edited how, paced how, with
//! which handshake, against which server) and hands the plan to the agent, which
//! plays it and records it as a new connection (`replayOf`); `GET /api/replays`,
//! `GET` and `DELETE /api/replays/{id}` follow and cancel it.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::{ReplayMessage, ReplayPlan, ReplayStatus};
use frametap_store::{FrameId, TrafficId};
use serde::Deserialize;

use super::common::{JsonBody, PathText, agent_error, follower};
use super::compare::{MAX_COMPARED, peer_messages};
use crate::agent_views::BASE64_PATTERN;
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::messages::AssembledMessage;
use crate::state::AppState;

/// `target`: a ws:// or wss:// URL of a host name or IPv4 address, a port from 1 to
/// 65535, and a path of the characters a request target may hold.
const TARGET_PATTERN: &str = "^wss?://[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?\
     (:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?\
     (/[A-Za-z0-9._~!$&'()*+,;=:@/?-]*)?$";

/// Longest wait between two messages, and whole replay, as planned.
const MAX_GAP_MS: u64 = 10 * 60 * 1000;
const MAX_DURATION_MS: u64 = 60 * 60 * 1000;
/// How long the agent waits for the server after the last message, by default and
/// at most.
const DEFAULT_LINGER_MS: u64 = 1000;
const MAX_LINGER_MS: u64 = 60_000;

/// What to replay, and how. Every field is optional: by default every client
/// message is sent again to the original server, with the original handshake
/// headers, at the recorded pace.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplayRequest {
    /// `ws://` or `wss://` URL of another server (a staging one, say).
    #[serde(default)]
    target: Option<String>,
    /// Which client messages: a list of message ids, or `{"from": id, "to": id}`.
    #[serde(default)]
    messages: Option<Selection>,
    /// New content for some of them, by message id: `{"data", "isBinary"}` as
    /// `POST .../send` takes it.
    #[serde(default)]
    edits: BTreeMap<String, Edit>,
    #[serde(default)]
    timing: Timing,
    /// With `timing: recorded`: the recorded gaps multiplied by this (0.5 is twice
    /// as fast); the other timings have no gaps to scale.
    #[serde(default)]
    scale: Option<f64>,
    /// Handshake headers to set (a string) or leave out (`null`).
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
    /// How long to wait for the server after the last message before closing, ms
    /// (a whole number; JSON writes some as `250.0`).
    #[serde(default)]
    linger_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Selection {
    Ids(Vec<String>),
    Range(Range),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Edit {
    data: String,
    #[serde(default)]
    is_binary: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Timing {
    /// The recorded gaps between the client's messages (times `scale`).
    #[default]
    Recorded,
    /// No waiting.
    Fast,
    /// Each message once the server has sent as many messages as it had at that
    /// point of the original.
    Answers,
}

impl utoipa::PartialSchema for ReplayRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let id = serde_json::json!({"type": "string", "pattern": "^[0-9a-f]{16}-[0-9a-f]{8}$"});
        frametap_control::raw_schema(serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "description": "What to replay, and how; every field is optional (default: every \
                client message, to the original server, with the original handshake headers, \
                at the recorded pace).",
            "properties": {
                "target": {"type": "string", "pattern": TARGET_PATTERN,
                    "maxLength": 2048,
                    "description": "`ws://` or `wss://` URL of another server (the handshake's Host, \
                    TLS name and path come from it)"},
                "messages": {"oneOf": [
                    {"type": "array", "items": id, "maxItems": MAX_COMPARED,
                        "description": "ids of client messages (as `.../messages` lists them)"},
                    {"type": "object", "additionalProperties": false, "required": ["from", "to"],
                        "properties": {"from": id, "to": id},
                        "description": "the client messages from one id to another, both included"},
                ]},
                "edits": {"type": "object", "propertyNames": id, "additionalProperties": {"oneOf": [
                    {"type": "object", "additionalProperties": false, "required": ["data"],
                        "properties": {"data": {"type": "string"}, "isBinary": {"const": false}}},
                    {"type": "object", "additionalProperties": false, "required": ["data", "isBinary"],
                        "properties": {"data": {"type": "string", "pattern": BASE64_PATTERN},
                            "isBinary": {"const": true}}},
                    ]},
                    "description": "new content by message id: `data` is the text, or base64 with `isBinary`"},
                "timing": {"type": "string", "enum": ["recorded", "fast", "answers"],
                    "description": "`recorded` (default): the recorded gaps between the client's \
                    messages, times `scale`; `fast`: no waiting; `answers`: each message once the \
                    server has sent as many messages as it had at that point of the original"},
                "scale": {"type": "number", "minimum": 0.0, "maximum": 100.0,
                    "description": "with `recorded`: gaps multiplied by this (0.5: twice as fast)"},
                "headers": {"type": "object",
                    "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                    "additionalProperties": {"type": ["string", "null"],
                        "pattern": "^[^\\u0000-\\u0008\\u000a-\\u001f\\u007f]*$"},
                    "description": "handshake headers to set, or to leave out with `null`"},
                "lingerMs": {"type": "integer", "minimum": 0, "maximum": MAX_LINGER_MS,
                    "description": "how long to wait for the server after the last message (default 1000)"},
            },
        }))
    }
}

impl utoipa::ToSchema for ReplayRequest {}

/// Replay a recorded WebSocket conversation.
///
/// The agent opens a new connection (to the original server, or `target`) with the
/// original handshake's headers (cookies, authorization, subprotocol; a new key;
/// permessage-deflate offered again when the original had it, used as the server
/// agrees), sends the chosen client messages (edited where asked) at the chosen
/// pace, waits `lingerMs` for the server, and closes. That connection is recorded
/// like any capture, its traffic entry's `replayOf` naming the original: compare the
/// two with `GET /api/websocket/{trafficId}/compare/{other}`. TLS is verified as for the agent's
/// upstream legs. Answers `202` once the server accepted the handshake, with the
/// replay's progress (`Location: /api/replays/{id}`); `502` with the server's
/// reason when it refused. At most 10,000 messages, 10 minutes between two, one hour
/// in all; 8 replays at once.
#[utoipa::path(
    post,
    path = "/api/websocket/{trafficId}/replay",
    tag = "websocket",
    operation_id = "replayConnection",
    params(("trafficId" = String, Path, description = "Traffic entry id of the recorded WebSocket connection")),
    request_body(content = ReplayRequest, description = "What to replay, and how",
        example = json!({"timing": "recorded", "scale": 0.5, "headers": {"Cookie": "session=staging"}})),
    responses(
        (status = 202, description = "Playing: the server accepted the handshake", body = ReplayStatus,
            headers(("Location" = String, description = "`/api/replays/{id}`"))),
        (status = 400, description = "A malformed body: not an object, unknown fields, bad base64, a header that cannot be sent, a target that is not a ws:// or wss:// URL", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such WebSocket connection, or a message id that is not one of its client messages", body = ErrorBody),
        (status = 409, description = "Nothing to replay (no client messages chosen, or `from` after `to`), an edit of a message not chosen, a message recorded truncated, more than 10,000 messages, a replay longer than an hour (or 10 minutes between two messages), or 8 replays running", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The target refused or could not be reached (the reason is recorded)", body = ErrorBody),
        (status = 503, description = "The agent is not running, or the store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn replay_connection(
    State(state): State<AppState>,
    traffic: PathText,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    // An object only: serde would also take a struct from a JSON array.
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object (`{}` replays everything as recorded)".into(),
        ));
    }
    let request: ReplayRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?;
    let linger_ms = linger(request.linger_ms)?;
    let not_found = || ApiError::NotFound("WebSocket connection not found".into());
    let traffic = traffic.parse::<TrafficId>().ok_or_else(not_found)?;
    let store = follower(&state)?;
    let read = |e: anyhow::Error| ApiError::store_read(&e);
    let entry = store
        .traffic(traffic)
        .map_err(read)?
        .ok_or_else(not_found)?;
    let connection = store
        .ws_connection(traffic)
        .map_err(read)?
        .ok_or_else(not_found)?;
    let (messages, truncated) =
        tokio::task::spawn_blocking(move || peer_messages(&store, traffic, None))
            .await
            .map_err(|e| ApiError::worker_failed(&e))?
            .map_err(read)?;
    if truncated {
        return Err(ApiError::Conflict(format!(
            "{traffic} has more than {MAX_COMPARED} messages (or 64 MiB): replay a range of them \
             (`messages: {{\"from\": id, \"to\": id}}`) from the first {MAX_COMPARED}"
        )));
    }
    let target = Target::of(&request, &entry)?;
    let chosen = choose(&request, &messages, traffic)?;
    let planned = plan_messages(&request, &messages, &chosen, connection.timestamp_ms)?;
    let plan = ReplayPlan {
        original: traffic.to_string(),
        url: target.url,
        address: target.address,
        tls: target.tls,
        server_name: target.server_name,
        host: target.host,
        path: target.path,
        headers: handshake_headers(&entry.request_headers, &request.headers)?,
        deflate: connection.deflate,
        messages: planned,
        linger_ms,
    };
    let status = state
        .agent
        .replay(plan)
        .await
        .map_err(|e| agent_error(e, &format!("replay {traffic}"), "nothing was replayed"))?;
    let location = HeaderValue::from_str(&format!("/api/replays/{}", status.id))
        .map_err(|e| ApiError::Internal(format!("replay id: {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(status),
    )
        .into_response())
}

/// `lingerMs` as a whole number of milliseconds up to [`MAX_LINGER_MS`].
fn linger(given: Option<f64>) -> Result<u64, ApiError> {
    match given {
        None => Ok(DEFAULT_LINGER_MS),
        Some(ms) if ms.fract() == 0.0 && (0.0..=MAX_LINGER_MS as f64).contains(&ms) => {
            Ok(ms as u64)
        }
        Some(ms) => Err(ApiError::BadRequest(format!(
            "`lingerMs` must be a whole number from 0 to {MAX_LINGER_MS}, got {ms}"
        ))),
    }
}

/// Where to connect, and the handshake's Host and path.
struct Target {
    url: String,
    address: String,
    tls: bool,
    server_name: String,
    host: String,
    path: String,
}

impl Target {
    fn of(
        request: &ReplayRequest,
        entry: &frametap_store::TrafficEntry,
    ) -> Result<Target, ApiError> {
        let Some(url) = &request.target else {
            // The original destination, as the client reached it.
            let tls = entry.protocol == "wss";
            let name = entry
                .sni
                .clone()
                .unwrap_or_else(|| host_name(&entry.host).to_string());
            return Ok(Target {
                url: entry.url.clone(),
                address: entry.remote_address.clone(),
                tls,
                server_name: name,
                host: entry.host.clone(),
                path: if entry.path.is_empty() {
                    "/".into()
                } else {
                    entry.path.clone()
                },
            });
        };
        let bad = |why: &str| {
            ApiError::BadRequest(format!(
                "`target` {:?} {why}: give a ws:// or wss:// URL, such as wss://staging.example.com:8443/feed",
                excerpt(url)
            ))
        };
        let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad("is not ws:// or wss://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("has user information"));
        }
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if name.is_empty() {
            return Err(bad("has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let address = if name.contains(':') {
            format!("[{name}]:{port}")
        } else {
            format!("{name}:{port}")
        };
        Ok(Target {
            url: url.clone(),
            address,
            tls,
            server_name: name.to_string(),
            host: authority.as_str().to_string(),
            path: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }
}

/// `host` without a port (`[::1]:443` → `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Indexes (into `messages`) of the client messages chosen.
fn choose(
    request: &ReplayRequest,
    messages: &[AssembledMessage],
    traffic: TrafficId,
) -> Result<Vec<usize>, ApiError> {
    let id_of = |m: &AssembledMessage| FrameId::new(traffic, m.first_seq).to_string();
    let client: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i].from_client)
        .collect();
    let position = |id: &str| {
        client
            .iter()
            .copied()
            .find(|&i| id_of(&messages[i]) == id)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "{:?} is not a message the client sent on {traffic} (see GET /api/websocket/{traffic}/messages?direction=to-server)",
                    excerpt(id)
                ))
            })
    };
    let chosen = match &request.messages {
        None => client.clone(),
        Some(Selection::Ids(ids)) => {
            let mut chosen = ids
                .iter()
                .map(|id| position(id))
                .collect::<Result<Vec<_>, _>>()?;
            chosen.sort_unstable();
            chosen.dedup();
            chosen
        }
        Some(Selection::Range(range)) => {
            let (from, to) = (position(&range.from)?, position(&range.to)?);
            if from > to {
                return Err(ApiError::Conflict(
                    "`messages.from` comes after `messages.to`: nothing between them".into(),
                ));
            }
            client
                .iter()
                .copied()
                .filter(|&i| (from..=to).contains(&i))
                .collect()
        }
    };
    if chosen.is_empty() {
        return Err(ApiError::Conflict(format!(
            "nothing to replay: the client sent no messages on {traffic}"
        )));
    }
    for id in request.edits.keys() {
        let i = position(id)?;
        if !chosen.contains(&i) {
            return Err(ApiError::Conflict(format!(
                "the edit of {id} is for a message not chosen for the replay"
            )));
        }
    }
    Ok(chosen)
}

/// The chosen messages with their content (edited) and pace.
fn plan_messages(
    request: &ReplayRequest,
    messages: &[AssembledMessage],
    chosen: &[usize],
    opened_ms: u64,
) -> Result<Vec<ReplayMessage>, ApiError> {
    let scale = request.scale.unwrap_or(1.0);
    if !(0.0..=100.0).contains(&scale) {
        return Err(ApiError::BadRequest("`scale` must be from 0 to 100".into()));
    }
    let mut planned = Vec::with_capacity(chosen.len());
    let mut previous_ms = opened_ms;
    let mut total_ms = 0u64;
    for &i in chosen {
        let message = &messages[i];
        let id = FrameId::new(message.traffic, message.first_seq).to_string();
        let (content, is_binary) = match request.edits.get(&id) {
            Some(edit) if edit.is_binary => (
                BASE64.decode(&edit.data).map_err(|e| {
                    ApiError::BadRequest(format!("the edit of {id}: `data` is not base64: {e}"))
                })?,
                true,
            ),
            Some(edit) => (edit.data.clone().into_bytes(), false),
            None => (message.content.clone(), message.binary),
        };
        if message.truncated && !request.edits.contains_key(&id) {
            return Err(ApiError::Conflict(format!(
                "message {id} was not recorded whole (truncated): edit it or leave it out"
            )));
        }
        let gap = message.first_timestamp_ms.saturating_sub(previous_ms);
        previous_ms = message.first_timestamp_ms;
        let delay_ms = match request.timing {
            Timing::Recorded => ((gap as f64) * scale).round() as u64,
            Timing::Fast | Timing::Answers => 0,
        };
        if delay_ms > MAX_GAP_MS {
            return Err(ApiError::Conflict(format!(
                "message {id} would wait {} s: at most {} s between two messages (use `scale` or `timing: fast`)",
                delay_ms / 1000,
                MAX_GAP_MS / 1000
            )));
        }
        total_ms += delay_ms;
        let after_server_messages = (request.timing == Timing::Answers)
            .then(|| messages[..i].iter().filter(|m| !m.from_client).count() as u64);
        planned.push(ReplayMessage {
            original: id,
            is_binary,
            payload: BASE64.encode(&content),
            delay_ms,
            after_server_messages,
        });
    }
    if total_ms > MAX_DURATION_MS {
        return Err(ApiError::Conflict(format!(
            "the replay would take {} s: at most {} s (use `scale` or `timing: fast`)",
            total_ms / 1000,
            MAX_DURATION_MS / 1000
        )));
    }
    Ok(planned)
}

/// The original request's headers with the user's changes: a name given replaces
/// every header of that name (any case), `null` removes them.
fn handshake_headers(
    original: &[(String, String)],
    changes: &BTreeMap<String, Option<String>>,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut headers: Vec<(String, String)> = original
        .iter()
        .filter(|(name, _)| !changes.keys().any(|c| c.eq_ignore_ascii_case(name)))
        .cloned()
        .collect();
    for (name, value) in changes {
        if !frametap_model::is_token(name) {
            return Err(ApiError::BadRequest(format!(
                "header name {:?} is not an HTTP token",
                excerpt(name)
            )));
        }
        if let Some(value) = value {
            if !frametap_model::is_field_value(value) {
                return Err(ApiError::BadRequest(format!(
                    "the value of header {name} has a control character (a line break, say)"
                )));
            }
            headers.push((name.clone(), value.clone()));
        }
    }
    Ok(headers)
}

/// List replays.
///
/// The replays the agent knows, newest first: running ones and the last 100 that
/// ended (the agent forgets them when it restarts; their recordings stay).
#[utoipa::path(
    get,
    path = "/api/replays",
    tag = "websocket",
    operation_id = "listReplays",
    responses(
        (status = 200, description = "Replays, newest first", body = Vec<ReplayStatus>),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 502, description = "The agent failed to answer", body = ErrorBody),
        (status = 503, description = "The agent is not running", body = ErrorBody),
    )
)]
pub(crate) async fn list_replays(
    State(state): State<AppState>,
) -> Result<Json<Vec<ReplayStatus>>, ApiError> {
    let list = state
        .agent
        .replays()
        .await
        .map_err(|e| agent_error(e, "list its replays", "nothing is known of them"))?;
    Ok(Json(list))
}

/// Get a replay's progress.
#[utoipa::path(
    get,
    path = "/api/replays/{id}",
    tag = "websocket",
    operation_id = "getReplay",
    params(("id" = String, Path, description = "The replay's id")),
    responses(
        (status = 200, description = "The replay", body = ReplayStatus),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such replay (or the agent restarted since)", body = ErrorBody),
        (status = 502, description = "The agent failed to answer", body = ErrorBody),
        (status = 503, description = "The agent is not running", body = ErrorBody),
    )
)]
pub(crate) async fn get_replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReplayStatus>, ApiError> {
    let list = state
        .agent
        .replays()
        .await
        .map_err(|e| agent_error(e, "list its replays", "nothing is known of them"))?;
    list.into_iter()
        .find(|r| r.id == id)
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no replay {:?} (GET /api/replays lists them)",
                excerpt(&id)
            ))
        })
}

/// Cancel a replay.
///
/// The agent stops sending, closes the connection (1001 "replay cancelled") and
/// records it so; the replay's state becomes `cancelled`.
#[utoipa::path(
    delete,
    path = "/api/replays/{id}",
    tag = "websocket",
    operation_id = "cancelReplay",
    params(("id" = String, Path, description = "The replay's id")),
    responses(
        (status = 200, description = "Cancelled: the replay as it was", body = ReplayStatus),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such replay", body = ErrorBody),
        (status = 409, description = "The replay has already ended", body = ErrorBody),
        (status = 502, description = "The agent failed to answer", body = ErrorBody),
        (status = 503, description = "The agent is not running", body = ErrorBody),
    )
)]
pub(crate) async fn cancel_replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReplayStatus>, ApiError> {
    let status = state
        .agent
        .cancel_replay(id.clone())
        .await
        .map_err(|e| agent_error(e, &format!("cancel replay {id}"), "nothing was cancelled"))?;
    Ok(Json(status))
}
