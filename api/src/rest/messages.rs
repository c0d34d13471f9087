//! `GET /api/websocket/{trafficId}/messages`: a connection's frames reassembled into
//! messages ([`crate::messages`]), paged like its frames.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use frametap_store::{FrameFilter, FrameId, Store, TrafficId};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use super::common::{PathText, follower};
use super::websocket::{
    FrameIdParam, PAGE_PAYLOAD_BUDGET, after_cursor, check_cursor, direction_param, page_limit,
    with_next_link,
};
use crate::error::{ApiError, ErrorBody};
use crate::messages::Reassembler;
use crate::query::QueryParams;
use crate::state::AppState;
use crate::views::{Direction, DirectionParam, WebSocketMessage, message_json};

/// Frames read from the store per step while filling a page of messages.
const READ_STEP: usize = 128;

/// Frames one request reads when searching (`contains`, `regex`): a rare match in a
/// long connection is found page by page, each bounded, following the `Link`.
const SEARCH_SCAN: usize = 100_000;

/// Longest `contains` or `regex` accepted.
const MAX_SEARCH_LEN: usize = 1024;

/// `regex`: a regular expression, as the rules' `regex` is documented (format
/// `regex`: not every string is one).
pub struct RegexParam;

impl PartialSchema for RegexParam {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("regex".into())))
            .min_length(Some(1))
            .max_length(Some(MAX_SEARCH_LEN))
            .description(Some(
                "A regular expression in Rust `regex` syntax (close to ECMA 262's, without \
                 look-around and backreferences), up to 1 MiB compiled.",
            ))
            .into()
    }
}

impl ToSchema for RegexParam {}

/// The regular expression a user gave as `name` ([`RegexParam`]), or a 400 saying
/// why not.
pub(super) fn user_regex(name: &str, pattern: &str) -> Result<regex::bytes::Regex, ApiError> {
    if pattern.is_empty() || pattern.chars().count() > MAX_SEARCH_LEN {
        return Err(ApiError::BadRequest(format!(
            "`{name}` must be 1 to {MAX_SEARCH_LEN} characters long"
        )));
    }
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "`{name}` is not a regular expression frametap can use (Rust regex syntax; \
                 (?i) makes it case-insensitive): {e}"
            ))
        })
}

/// A search in message content: every given condition must hold.
struct ContentSearch {
    contains: Option<Vec<u8>>,
    regex: Option<regex::bytes::Regex>,
    /// The parameters as given, for the next page's URL.
    query: Vec<(&'static str, String)>,
}

impl ContentSearch {
    fn parse(params: &QueryParams) -> Result<Option<ContentSearch>, ApiError> {
        let mut query = Vec::new();
        for name in ["contains", "regex"] {
            if let Some(value) = params.single(name)? {
                if value.is_empty() || value.chars().count() > MAX_SEARCH_LEN {
                    return Err(ApiError::BadRequest(format!(
                        "`{name}` must be 1 to {MAX_SEARCH_LEN} characters long"
                    )));
                }
                query.push((name, value.to_string()));
            }
        }
        if query.is_empty() {
            return Ok(None);
        }
        let text = |name| query.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        let regex = text("regex")
            .map(|pattern| user_regex("regex", pattern))
            .transpose()?;
        let contains = text("contains").map(|t| t.as_bytes().to_vec());
        Ok(Some(ContentSearch {
            contains,
            regex,
            query,
        }))
    }

    fn matches(&self, content: &[u8]) -> bool {
        self.contains.as_ref().is_none_or(|needle| {
            content
                .windows(needle.len())
                .any(|window| window == needle.as_slice())
        }) && self.regex.as_ref().is_none_or(|re| re.is_match(content))
    }
}

/// Get messages of a WebSocket connection.
///
/// The connection's text and binary messages, each reassembled from its fragments,
/// in the order of their first frame (control frames are not messages; see the
/// connection's frames for those). A message's `id` is its first frame's id.
///
/// Page on with `after` (the `id` of the last message received) or the
/// `Link: <...>; rel="next"` header, sent whenever a page is full (or cut at 64 MiB
/// of content). `contains` and `regex` search the content (as much of it as is shown:
/// text, or the bytes of a binary message): only matching messages are returned, and
/// a search reads at most 100,000 frames per request, so a page may hold fewer
/// messages than `limit` (even none) while its `Link` says where to go on. A message whose final fragment is not recorded yet is not returned
/// yet, and the page stops before it, so a later request with the same cursor picks
/// it up once it is complete; once the connection has closed, such a message is
/// returned with `incomplete`. Content is shown up to 1 MiB per message (`truncated`
/// beyond). Finding the end of a long-open message may scan the rest of the
/// connection. An unknown connection has no messages: `[]`.
#[utoipa::path(
    get,
    path = "/api/websocket/{trafficId}/messages",
    tag = "websocket",
    operation_id = "listMessages",
    params(
        ("trafficId" = String, Path, description = "Traffic entry id of the WebSocket connection (16 hex digits)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most messages to return (1 to 1000, default 100)"),
        ("after" = Option<FrameIdParam>, Query, description = "Cursor: return the messages whose first frame comes after this frame (a message id of the same connection; one of another connection is 404)"),
        ("direction" = Option<DirectionParam>, Query, description = "Only messages sent in this direction: `client-to-server` (or `to-server`), `server-to-client` (or `to-client`)"),
        ("contains" = Option<String>, Query, min_length = 1, max_length = 1024, description = "Only messages whose content contains this text (case-sensitive; bytes of a binary message)"),
        ("regex" = Option<RegexParam>, Query, description = "Only messages whose content matches this regular expression (Rust regex syntax; `(?i)` for case-insensitive); one that does not compile is a 400"),
    ),
    responses(
        (status = 200, description = "Messages, oldest first", body = Vec<WebSocketMessage>,
            headers(("Link" = String, description = "`</api/websocket/{trafficId}/messages?after=...>; rel=\"next\"` when more messages may follow"))),
        (status = 400, description = "A malformed query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "`after` is a message of another connection", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    traffic: PathText,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(query.as_deref());
    let limit = page_limit(&params)?;
    let after = after_cursor(&params, "message")?;
    let direction = direction_param(&params)?;
    let search = ContentSearch::parse(&params)?;
    // Like frames: an unknown or malformed id has no messages.
    let Some(traffic) = traffic.parse::<TrafficId>() else {
        return Ok(Json(Vec::<WebSocketMessage>::new()).into_response());
    };
    check_cursor(after, traffic)?;
    let store = follower(&state)?;
    let page_size = usize::try_from(limit).unwrap_or(usize::MAX);
    let from_client = direction.map(Direction::is_from_client);
    let after_seq = after.map(|id| id.seq);
    // Scans frames, possibly many: off the async workers.
    let (page, more, search) = tokio::task::spawn_blocking(move || {
        let searching = search.as_ref();
        read_messages(
            &store,
            traffic,
            after_seq,
            page_size,
            from_client,
            searching,
        )
        .map(|(page, more)| (page, more, search))
    })
    .await
    .map_err(|e| ApiError::worker_failed(&e))?
    .map_err(|e| ApiError::store_read(&e))?;
    let next = more.map(|seq| {
        let mut url = format!(
            "/api/websocket/{traffic}/messages?after={}&limit={limit}",
            FrameId::new(traffic, seq)
        );
        if let Some(direction) = direction {
            url.push_str("&direction=");
            url.push_str(direction.as_str());
        }
        for (name, value) in search.iter().flat_map(|s| &s.query) {
            url.push_str(&format!("&{name}="));
            url.extend(form_urlencoded::byte_serialize(value.as_bytes()));
        }
        url
    });
    Ok(with_next_link(Json(page).into_response(), next))
}

/// Up to `limit` messages of `traffic` whose first frame comes after seq `after`, of
/// one direction if `from_client` is given, matching `search` if given; cut once their
/// content exceeds [`PAGE_PAYLOAD_BUDGET`], or a search has read [`SEARCH_SCAN`]
/// frames. With the page: when more may follow, the seq of the last message read
/// (the next page's cursor).
fn read_messages(
    store: &Store,
    traffic: TrafficId,
    after: Option<u64>,
    limit: usize,
    from_client: Option<bool>,
    search: Option<&ContentSearch>,
) -> anyhow::Result<(Vec<WebSocketMessage>, Option<u64>)> {
    // Before reading frames: the agent writes a connection's close record after its
    // last frame, so if it is there now, every frame is too.
    let closed = store.ws_connection(traffic)?.is_some_and(|c| !c.open);
    let mut assembler = Reassembler::default();
    if search.is_none() {
        assembler = assembler.max_messages(limit);
    }
    if after.is_some() {
        assembler = assembler.after_cursor();
    }
    let filter = FrameFilter {
        from_client,
        opcode: None,
    };
    let mut page = Vec::new();
    let mut content_bytes: u64 = 0;
    let mut cursor = after;
    // The first frame of the last message read, matching or not.
    let mut last_read = None;
    let mut scanned = 0;
    loop {
        let records = store.frames(traffic, cursor, READ_STEP, &filter)?;
        for record in &records {
            cursor = Some(record.seq);
            scanned += 1;
            assembler.push(record);
            while let Some(message) = assembler.next_message() {
                last_read = Some(message.first_seq);
                if search.is_some_and(|s| !s.matches(&message.content)) {
                    continue;
                }
                content_bytes += message.content.len() as u64;
                page.push(message_json(&message));
                if content_bytes > PAGE_PAYLOAD_BUDGET || page.len() == limit {
                    return Ok((page, last_read));
                }
            }
            if assembler.is_done() {
                return Ok((page, last_read));
            }
            if content_bytes + assembler.buffered_bytes() as u64 > PAGE_PAYLOAD_BUDGET
                || (search.is_some() && scanned >= SEARCH_SCAN)
            {
                // Messages held back behind an open one fill the budget, or the
                // search read its share: stop here.
                return Ok((page, last_read));
            }
        }
        if records.len() < READ_STEP {
            break;
        }
    }
    if closed {
        // No final fragment will come: what is open ends here, incomplete.
        assembler.finish();
        while let Some(message) = assembler.next_message() {
            last_read = Some(message.first_seq);
            if search.is_some_and(|s| !s.matches(&message.content)) {
                continue;
            }
            content_bytes += message.content.len() as u64;
            page.push(message_json(&message));
            if content_bytes > PAGE_PAYLOAD_BUDGET || page.len() == limit {
                return Ok((page, last_read));
            }
        }
    }
    Ok((page, None))
}
