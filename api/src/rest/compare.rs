//! `GET /api/websocket/{trafficId}/compare/{other}`: two conversations compared message by
//! message ([`crate::compare`]), for a replay against its original or any two
//! captures of the same exchange.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use frametap_store::{FrameFilter, Store, TrafficId};
use serde::Serialize;
use serde_json_path::JsonPath;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use super::common::follower;
use super::messages::{RegexParam, user_regex};
use super::websocket::direction_param;
use crate::compare::{Ignore, Pair, Status, compare, sent_by_peer};
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::messages::{AssembledMessage, Reassembler};
use crate::query::QueryParams;
use crate::state::AppState;
use crate::views::{Direction, DirectionParam, WebSocketMessage, message_json};

/// Messages compared per connection: a longer one is compared up to here
/// (`truncated`), which keeps the diff and the answer bounded.
pub const MAX_COMPARED: usize = 10_000;

/// Content read per connection (each message shows at most 1 MiB, as the messages
/// endpoint does): beyond it, the rest is not compared (`truncated`).
const CONTENT_BUDGET: usize = 64 << 20;

/// `ignore` and `ignorePath` given at most this many times each.
const MAX_IGNORES: usize = 16;

/// Frames read per step.
const READ_STEP: usize = 1024;

/// The JSONPaths `ignorePath` takes (a subset of RFC 9535 that every client can
/// write and every such string is one): names, indexes and wildcards, each as a
/// child (`.name`, `[0]`, `[*]`, `.*`) or a descendant (`..name`, `..*`).
const IGNORE_PATH_PATTERN: &str =
    r"^\$(\.\.?([A-Za-z_][A-Za-z0-9_]*|\*)|\[(0|[1-9][0-9]{0,8}|\*)\])+$";

/// Longest `ignorePath`.
const MAX_PATH_LEN: usize = 256;

fn path_shape() -> &'static regex::Regex {
    static SHAPE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    SHAPE.get_or_init(|| regex::Regex::new(IGNORE_PATH_PATTERN).expect("a valid pattern"))
}

/// `ignore`: up to 16 regular expressions.
pub struct IgnoreParam;

impl PartialSchema for IgnoreParam {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(RegexParam::schema())
            .max_items(Some(MAX_IGNORES))
            .into()
    }
}

impl ToSchema for IgnoreParam {}

/// `ignorePath`: up to 16 JSONPaths of the shape [`IGNORE_PATH_PATTERN`].
pub struct IgnorePathParam;

impl PartialSchema for IgnorePathParam {
    fn schema() -> RefOr<Schema> {
        let path = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(IGNORE_PATH_PATTERN))
            .max_length(Some(MAX_PATH_LEN))
            .description(Some(
                "A JSONPath (RFC 9535) of names, indexes and wildcards: `$.timestamp`, \
                 `$.items[*].id`, `$..id`",
            ));
        ArrayBuilder::new()
            .items(path)
            .max_items(Some(MAX_IGNORES))
            .into()
    }
}

impl ToSchema for IgnorePathParam {}

/// How a message fares in the other conversation.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PairStatus {
    /// Equal contents (once ignored parts are left out).
    Same,
    /// Paired by the diff, contents differ.
    Changed,
    /// Only in the first conversation (`a`).
    Missing,
    /// Only in the second conversation (`b`).
    Extra,
}

/// One line of a comparison.
#[derive(Debug, Serialize, ToSchema)]
pub struct ComparedPair {
    pub status: PairStatus,
    /// The message of the first conversation; `null` when `extra`.
    #[schema(required = true)]
    pub a: Option<WebSocketMessage>,
    /// The message of the second conversation; `null` when `missing`.
    #[schema(required = true)]
    pub b: Option<WebSocketMessage>,
}

/// How many lines have each status.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ComparisonCounts {
    pub same: u64,
    pub changed: u64,
    pub missing: u64,
    pub extra: u64,
}

/// Two conversations compared.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    /// The first connection's traffic id.
    pub a: String,
    /// The second connection's traffic id.
    pub b: String,
    /// Every message compared is `same`.
    pub same: bool,
    pub counts: ComparisonCounts,
    /// Only the first 10,000 messages (or 64 MiB of content) of a connection were
    /// compared.
    pub truncated: bool,
    /// The client's messages, in order; `[]` when `direction` leaves them out.
    pub to_server: Vec<ComparedPair>,
    /// The server's messages, in order; `[]` when `direction` leaves them out.
    pub to_client: Vec<ComparedPair>,
}

/// Compare two WebSocket conversations.
///
/// Message by message, per direction: what the client sent, and what the server
/// sent, each in order (frametap's own messages, injected or put in by a replace
/// rule, are left out; messages a rule dropped count, since the peer sent them).
/// The two lists are aligned by a diff of the contents: a message is `same`,
/// `changed` (paired, content differs), `missing` (only in `a`) or `extra` (only in
/// `b`). Volatile parts can be ignored: `ignore` (a regular expression, given up to
/// 16 times) removes what it matches from any message; `ignorePath` (a JSONPath,
/// RFC 9535, such as `$.ts` or `$..id`) replaces those values in text messages that
/// are JSON, whose formatting then does not count either. The first 10,000 messages
/// of each connection are compared (`truncated` says when there were more).
#[utoipa::path(
    get,
    path = "/api/websocket/{trafficId}/compare/{other}",
    tag = "websocket",
    operation_id = "compareConnections",
    params(
        ("trafficId" = String, Path, description = "Traffic entry id of the first WebSocket connection, `a` (16 hex digits)"),
        ("other" = String, Path, description = "Traffic entry id of the second, `b` (a replay, say)"),
        ("ignore" = Option<IgnoreParam>, Query, explode = true, description = "Regular expression whose matches are ignored (repeat the parameter for several, at most 16)"),
        ("ignorePath" = Option<IgnorePathParam>, Query, explode = true, description = "JSONPath (RFC 9535) of values ignored in JSON messages, such as `$.timestamp` or `$..id` (repeat for several, at most 16)"),
        ("direction" = Option<DirectionParam>, Query, description = "Compare only the messages sent in this direction"),
    ),
    responses(
        (status = 200, description = "The comparison", body = Comparison),
        (status = 400, description = "A malformed `ignore`, `ignorePath` or `direction`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "Either id is not a recorded WebSocket connection", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn compare_connections(
    State(state): State<AppState>,
    Path((a, b)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Comparison>, ApiError> {
    let params = QueryParams::parse(query.as_deref());
    let ignore = ignore_params(&params)?;
    let direction = direction_param(&params)?;
    let (a, b) = (connection_id(&a)?, connection_id(&b)?);
    let store = follower(&state)?;
    for traffic in [a, b] {
        let known = store
            .ws_connection(traffic)
            .map_err(|e| ApiError::store_read(&e))?
            .is_some();
        if !known {
            return Err(ApiError::NotFound(format!(
                "no WebSocket connection {traffic} (see GET /api/traffic?protocol=wss)"
            )));
        }
    }
    let from_client = direction.map(Direction::is_from_client);
    tokio::task::spawn_blocking(move || {
        let (messages_a, cut_a) = peer_messages(&store, a, from_client)?;
        let (messages_b, cut_b) = peer_messages(&store, b, from_client)?;
        let mut comparison = Comparison {
            a: a.to_string(),
            b: b.to_string(),
            same: true,
            counts: ComparisonCounts::default(),
            truncated: cut_a || cut_b,
            to_server: Vec::new(),
            to_client: Vec::new(),
        };
        for client in [true, false] {
            let side = |messages: &[AssembledMessage]| -> Vec<AssembledMessage> {
                messages
                    .iter()
                    .filter(|m| m.from_client == client)
                    .cloned()
                    .collect()
            };
            let (side_a, side_b) = (side(&messages_a), side(&messages_b));
            let pairs = compare(&side_a, &side_b, &ignore);
            let lines = pairs
                .iter()
                .map(|pair| line(pair, &side_a, &side_b, &mut comparison.counts))
                .collect();
            if client {
                comparison.to_server = lines;
            } else {
                comparison.to_client = lines;
            }
        }
        let c = &comparison.counts;
        comparison.same = c.changed + c.missing + c.extra == 0;
        Ok(Json(comparison))
    })
    .await
    .map_err(|e| ApiError::worker_failed(&e))?
    .map_err(|e: anyhow::Error| ApiError::store_read(&e))
}

fn connection_id(text: &str) -> Result<TrafficId, ApiError> {
    text.parse::<TrafficId>().map_err(|_| {
        ApiError::NotFound(format!(
            "{} is not a traffic entry id (16 lowercase hex digits)",
            excerpt(text)
        ))
    })
}

fn ignore_params(params: &QueryParams) -> Result<Ignore, ApiError> {
    let mut ignore = Ignore::default();
    let too_many = |name: &str| {
        ApiError::BadRequest(format!("`{name}` may be given at most {MAX_IGNORES} times"))
    };
    for pattern in params.all("ignore") {
        if ignore.patterns.len() == MAX_IGNORES {
            return Err(too_many("ignore"));
        }
        ignore.patterns.push(user_regex("ignore", pattern)?);
    }
    for path in params.all("ignorePath") {
        if ignore.json_paths.len() == MAX_IGNORES {
            return Err(too_many("ignorePath"));
        }
        let bad = |why: &dyn std::fmt::Display| {
            ApiError::BadRequest(format!(
                "`ignorePath` {:?} is not a path frametap takes: `$` then names, \
                 indexes and wildcards, such as `$.timestamp`, `$.items[*].id`, `$..id` \
                 ({why})",
                excerpt(path)
            ))
        };
        if path.len() > MAX_PATH_LEN || !path_shape().is_match(path) {
            return Err(bad(&format!(
                "at most {MAX_PATH_LEN} characters matching {IGNORE_PATH_PATTERN}"
            )));
        }
        ignore
            .json_paths
            .push(JsonPath::parse(path).map_err(|e| bad(&e))?);
    }
    Ok(ignore)
}

/// The peers' messages of `traffic` (of one direction if `from_client` is given), up
/// to [`MAX_COMPARED`] or [`CONTENT_BUDGET`]; `true` when there were more.
pub(super) fn peer_messages(
    store: &Store,
    traffic: TrafficId,
    from_client: Option<bool>,
) -> anyhow::Result<(Vec<AssembledMessage>, bool)> {
    // Read before the frames: if closed now, every frame is stored.
    let closed = store.ws_connection(traffic)?.is_some_and(|c| !c.open);
    let filter = FrameFilter {
        from_client,
        opcode: None,
    };
    let mut assembler = Reassembler::default();
    let mut messages = Vec::new();
    let mut content = 0;
    let mut keep = |message: AssembledMessage, messages: &mut Vec<AssembledMessage>| {
        if !sent_by_peer(&message) {
            return true;
        }
        if messages.len() == MAX_COMPARED || content + message.content.len() > CONTENT_BUDGET {
            return false;
        }
        content += message.content.len();
        messages.push(message);
        true
    };
    let mut cursor = None;
    loop {
        let frames = store.frames(traffic, cursor, READ_STEP, &filter)?;
        for frame in &frames {
            cursor = Some(frame.seq);
            assembler.push(frame);
            while let Some(message) = assembler.next_message() {
                if !keep(message, &mut messages) {
                    return Ok((messages, true));
                }
            }
        }
        if frames.len() < READ_STEP {
            break;
        }
    }
    if closed {
        assembler.finish();
        while let Some(message) = assembler.next_message() {
            if !keep(message, &mut messages) {
                return Ok((messages, true));
            }
        }
    }
    Ok((messages, false))
}

fn line(
    pair: &Pair,
    a: &[AssembledMessage],
    b: &[AssembledMessage],
    counts: &mut ComparisonCounts,
) -> ComparedPair {
    let status = match pair.status {
        Status::Same => {
            counts.same += 1;
            PairStatus::Same
        }
        Status::Changed => {
            counts.changed += 1;
            PairStatus::Changed
        }
        Status::Missing => {
            counts.missing += 1;
            PairStatus::Missing
        }
        Status::Extra => {
            counts.extra += 1;
            PairStatus::Extra
        }
    };
    ComparedPair {
        status,
        a: pair.a.map(|i| message_json(&a[i])),
        b: pair.b.map(|i| message_json(&b[i])),
    }
}
