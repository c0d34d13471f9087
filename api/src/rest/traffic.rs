//! `/api/traffic`: the captured HTTP exchanges (WebSocket upgrades included), newest
//! first, filtered by method, protocol, search string, process, status and error;
//! and their deletion, one, by the same filters, or all (through the agent).

use axum::Json;
use axum::extract::{RawQuery, State};

use super::common::{PathText, agent_error, follower};
use super::websocket::{pattern_schema, refresh};
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::query::{MAX_INTEGER, QueryParams};
use crate::state::AppState;
use crate::views::{TrafficDeleted, TrafficEntry, TrafficPage, traffic_json};
use frametap_control::DeleteTarget;
use frametap_store::{StatusMatch, TrafficFilter, TrafficId};
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;
use utoipa::{PartialSchema, ToSchema};

/// Entries per page when `limit` is not given.
pub(crate) const DEFAULT_TRAFFIC_LIMIT: u64 = 100;
/// Largest allowed `limit` of a traffic page.
pub(crate) const MAX_TRAFFIC_LIMIT: u64 = 1000;
/// The values of `protocol` (and of a traffic entry's `protocol`).
const PROTOCOLS: [&str; 6] = ["http", "https", "ws", "wss", "tls", "tcp"];
/// The query parameters that filter traffic (a list, a deletion).
pub(crate) const FILTER_PARAMS: [&str; 9] = [
    "methods",
    "search",
    "protocol",
    "pid",
    "process",
    "container",
    "status",
    "error",
    "errorContains",
];
/// Most digits of a pid (after leading zeros): Linux pids stay below 2^22.
const MAX_PID_DIGITS: usize = 9;

/// The whitespace [`QueryParams::list`] trims from items, as a regex class: ASCII's,
/// spelled out (`\s` means more, and not the same more in every regex engine).
pub(crate) const LIST_SPACE: &str = r"[\t\n\f\r ]";

/// A comma-separated list of `item`s as [`QueryParams::list`] reads it (items
/// trimmed, empty ones skipped), as a pattern of the OpenAPI document. `item` must
/// match neither whitespace nor a comma.
pub(crate) fn list_pattern(item: &str) -> String {
    format!(
        r"^[\t\n\f\r ,]*(?:(?:{item}){LIST_SPACE}*,[\t\n\f\r ,]*)*(?:(?:{item}){LIST_SPACE}*)?$"
    )
}

/// One item of `protocol`: [`PROTOCOLS`], in any case.
pub(crate) const PROTOCOL_ITEM: &str =
    "[hH][tT][tT][pP][sS]?|[wW][sS][sS]?|[tT][lL][sS]|[tT][cC][pP]";
/// One item of `pid`: a positive integer of at most [`MAX_PID_DIGITS`] digits,
/// leading zeros aside.
pub(crate) const PID_ITEM: &str = "0*[1-9][0-9]{0,8}";
/// One item of `status`: a code from 100 to 599, or a class 1xx to 5xx.
pub(crate) const STATUS_ITEM: &str = "[1-5](?:[0-9]{2}|[xX]{2})";

// The schemas of the traffic filters, as `parse_filter` below reads them.

/// `protocol` of the traffic filters.
pub struct ProtocolsParam;

impl PartialSchema for ProtocolsParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            &list_pattern(PROTOCOL_ITEM),
            "A comma-separated list of http, https, ws, wss, tls, tcp (any case); ASCII \
             whitespace around items and empty items are ignored.",
        )
    }
}

impl ToSchema for ProtocolsParam {}

/// `pid` of the traffic filters.
pub struct PidsParam;

impl PartialSchema for PidsParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            &list_pattern(PID_ITEM),
            "A comma-separated list of process ids: positive decimal integers below 10^9 \
             (leading zeros allowed); ASCII whitespace around items and empty items are \
             ignored.",
        )
    }
}

impl ToSchema for PidsParam {}

/// `status` of the traffic filters.
pub struct StatusesParam;

impl PartialSchema for StatusesParam {
    fn schema() -> RefOr<Schema> {
        pattern_schema(
            &list_pattern(STATUS_ITEM),
            "A comma-separated list of status codes (100 to 599) or classes (1xx to 5xx, \
             any case); ASCII whitespace around items and empty items are ignored.",
        )
    }
}

impl ToSchema for StatusesParam {}

/// What `DELETE /api/traffic` deletes: its query string as one exploded object, the
/// only way OpenAPI can relate parameters. Either `all=true` and no filter
/// parameter, or (without `all`, or `all=false`) at least one filter that selects:
/// what `delete_traffic` accepts.
pub struct TrafficSelection;

/// The traffic filters' schemas, by parameter name ([`FILTER_PARAMS`]).
fn filter_schemas() -> Vec<(&'static str, Value)> {
    let schema = |schema: RefOr<Schema>| serde_json::to_value(schema).expect("a schema");
    let text = |description: &str| json!({"type": "string", "description": description});
    let filters = vec![
        (
            "methods",
            text("Comma-separated HTTP methods, case-insensitive, e.g. GET,POST"),
        ),
        (
            "search",
            text("Case-insensitive substring of the URL, host or path"),
        ),
        ("protocol", schema(ProtocolsParam::schema())),
        ("pid", schema(PidsParam::schema())),
        (
            "process",
            text("Comma-separated process names of the client, case-insensitive"),
        ),
        (
            "container",
            text("Comma-separated container names or ids or id prefixes, case-insensitive"),
        ),
        ("status", schema(StatusesParam::schema())),
        (
            "error",
            json!({"type": "boolean", "description": "`true`: entries that failed; `false`: those that did not"}),
        ),
        (
            "errorContains",
            text("Case-insensitive substring of the entry's `error`"),
        ),
    ];
    debug_assert!(
        filters
            .iter()
            .map(|(name, _)| *name)
            .eq(FILTER_PARAMS.iter().copied())
    );
    filters
}

/// The [`TrafficSelection`] schema.
fn traffic_selection() -> Value {
    let mut properties = serde_json::Map::new();
    for (name, schema) in filter_schemas() {
        properties.insert(name.into(), schema);
    }
    properties.insert(
        "all".into(),
        json!({"type": "boolean", "description": "`true`: delete every entry (and give no filter)"}),
    );
    // Named, so that a value given for them is one that reaches the server as
    // `limit=...` (a deletion refuses paging).
    for paging in ["limit", "offset"] {
        properties.insert(
            paging.into(),
            json!({"type": "string", "description": "Refused: a deletion deletes every entry it selects"}),
        );
    }
    let present = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|name| json!({"required": [name]}))
            .collect()
    };
    // A filter that selects: a list naming an item, a non-empty text, or `error`.
    let selects = |name: &str| match name {
        "search" | "errorContains" => {
            json!({"required": [name], "properties": {name: {"minLength": 1}}})
        }
        "error" => json!({"required": [name]}),
        _ => json!({"required": [name], "properties": {name: {"pattern": "[^\\t\\n\\f\\r ,]"}}}),
    };
    json!({
        "type": "object",
        "description": "What to delete, as separate query parameters: `all=true` alone, or \
            filters of which one at least selects something.",
        "properties": properties,
        "not": {"anyOf": present(&["limit", "offset"])},
        "oneOf": [
            {
                "title": "everything",
                "required": ["all"],
                "properties": {"all": {"const": true}},
                "not": {"anyOf": present(&FILTER_PARAMS)},
            },
            {
                "title": "filtered",
                "properties": {"all": {"const": false}},
                "anyOf": FILTER_PARAMS.iter().map(|name| selects(name)).collect::<Vec<_>>(),
            },
        ],
    })
}

impl PartialSchema for TrafficSelection {
    fn schema() -> RefOr<Schema> {
        frametap_control::raw_schema(traffic_selection())
    }
}

impl ToSchema for TrafficSelection {}

/// The filter of a list or a deletion, from the query string: every parameter
/// checked, and a 400 that says what it takes.
fn parse_filter(params: &QueryParams) -> Result<TrafficFilter, ApiError> {
    let methods = params
        .list("methods")?
        .map(|methods| methods.iter().map(|m| m.to_ascii_uppercase()).collect());
    let search = params
        .single("search")?
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);
    let protocols = params
        .list("protocol")?
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    PROTOCOLS
                        .into_iter()
                        .find(|p| p.eq_ignore_ascii_case(item))
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!(
                                "query parameter `protocol` takes a comma-separated list of \
                                 http, https, ws, wss, tls, tcp; got {:?}",
                                excerpt(item)
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let pids = params
        .list("pid")?
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let digits = item.trim_start_matches('0');
                    Some(digits)
                        .filter(|d| {
                            (1..=MAX_PID_DIGITS).contains(&d.len())
                                && d.bytes().all(|b| b.is_ascii_digit())
                        })
                        .and_then(|d| d.parse::<u32>().ok())
                        .ok_or_else(|| {
                            ApiError::BadRequest(format!(
                                "query parameter `pid` takes a comma-separated list of process \
                                 ids (positive integers below 10^9); got {:?}",
                                excerpt(item)
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let processes = params
        .list("process")?
        .map(|items| items.iter().map(|p| (*p).to_owned()).collect());
    let containers = params
        .list("container")?
        .map(|items| items.iter().map(|c| c.to_ascii_lowercase()).collect());
    let statuses = params
        .list("status")?
        .map(|items| {
            items
                .iter()
                .map(|item| status_match(item))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let has_error = params.boolean(
        "error",
        " (true: entries that failed, false: those that did not; to match the error's \
         text use `errorContains`)",
    )?;
    let error_contains = params
        .single("errorContains")?
        .filter(|s| !s.is_empty())
        .map(str::to_lowercase);
    Ok(TrafficFilter {
        methods,
        search,
        protocols,
        pids,
        processes,
        containers,
        statuses,
        has_error,
        error_contains,
    })
}

/// One item of `status`: a code (`404`) or a class (`4xx`).
fn status_match(item: &str) -> Result<StatusMatch, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "query parameter `status` takes a comma-separated list of status codes (100 to 599) \
             or classes (1xx to 5xx); got {:?}",
            excerpt(item)
        ))
    };
    let bytes = item.as_bytes();
    if bytes.len() != 3 || !(b'1'..=b'5').contains(&bytes[0]) {
        return Err(bad());
    }
    if bytes[1..].eq_ignore_ascii_case(b"xx") {
        return Ok(StatusMatch::Class(bytes[0] - b'0'));
    }
    match item.parse::<u16>() {
        Ok(code) if item.bytes().all(|b| b.is_ascii_digit()) => Ok(StatusMatch::Code(code)),
        _ => Err(bad()),
    }
}

/// List traffic entries.
///
/// HTTP exchanges and connections relayed untouched (protocol `tls` or `tcp`, with
/// `notIntercepted` saying why; listed from their start). Newest first. Every filter
/// given must hold. `count` is the number of all entries matching the filters, not
/// just the page. Scans the whole traffic table.
#[utoipa::path(
    get,
    path = "/api/traffic",
    tag = "traffic",
    operation_id = "listTraffic",
    params(
        ("methods" = Option<String>, Query, description = "Comma-separated HTTP methods, case-insensitive, e.g. GET,POST"),
        ("search" = Option<String>, Query, description = "Case-insensitive substring of the URL, host or path"),
        ("protocol" = Option<ProtocolsParam>, Query, description = "Comma-separated protocols among http, https, ws, wss (HTTP exchanges) and tls, tcp (connections relayed untouched), case-insensitive"),
        ("pid" = Option<PidsParam>, Query, description = "Comma-separated process ids of the client, e.g. 4242,4243"),
        ("process" = Option<String>, Query, description = "Comma-separated process names of the client, case-insensitive, e.g. curl,python3"),
        ("container" = Option<String>, Query, description = "Comma-separated container names or ids or id prefixes (the 12-digit short id works), case-insensitive; entries from outside containers never match"),
        ("status" = Option<StatusesParam>, Query, description = "Comma-separated response statuses: codes (404) or classes (4xx); entries without a response never match"),
        ("error" = Option<bool>, Query, description = "`true`: only entries that failed (they have an `error`); `false`: only those that did not"),
        ("errorContains" = Option<String>, Query, description = "Case-insensitive substring of the entry's `error`"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most entries to return (1 to 1000, default 100)"),
        ("offset" = Option<u64>, Query, minimum = 0, maximum = 9223372036854775807_i64, description = "Matching entries to skip (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of matching entries", body = TrafficPage),
        (status = 400, description = "A malformed query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn list_traffic(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<TrafficPage>, ApiError> {
    let params = QueryParams::parse(query.as_deref());
    let filter = parse_filter(&params)?;
    let limit = params.integer("limit", 1, MAX_TRAFFIC_LIMIT, DEFAULT_TRAFFIC_LIMIT)?;
    let offset = params.integer("offset", 0, MAX_INTEGER, 0)?;
    let (limit, offset) = (
        usize::try_from(limit).unwrap_or(usize::MAX),
        usize::try_from(offset).unwrap_or(usize::MAX),
    );
    let store = follower(&state)?;
    // A full scan of the traffic table: keep it off the async workers.
    let (entries, count) = tokio::task::spawn_blocking(move || {
        store.traffic_page(offset, limit, |entry| filter.matches(entry))
    })
    .await
    .map_err(|e| ApiError::worker_failed(&e))?
    .map_err(|e| ApiError::store_read(&e))?;
    Ok(Json(TrafficPage {
        entries: entries.iter().map(traffic_json).collect(),
        count,
    }))
}

/// Get a traffic entry.
#[utoipa::path(
    get,
    path = "/api/traffic/{id}",
    tag = "traffic",
    operation_id = "getTraffic",
    params(("id" = String, Path, description = "Traffic entry id (16 hex digits)")),
    responses(
        (status = 200, description = "The entry", body = TrafficEntry),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody,
            example = json!({"error": "Traffic entry not found"})),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn get_traffic(
    State(state): State<AppState>,
    id: PathText,
) -> Result<Json<TrafficEntry>, ApiError> {
    let not_found = || ApiError::NotFound("Traffic entry not found".into());
    let id = id.parse::<TrafficId>().ok_or_else(not_found)?;
    let store = follower(&state)?;
    match store.traffic(id).map_err(|e| ApiError::store_read(&e))? {
        Some(entry) => Ok(Json(traffic_json(&entry))),
        None => Err(not_found()),
    }
}

/// Delete traffic entries.
///
/// Deletes every entry the filters select (the same filters as the list), or every
/// entry with `all=true`, and with each everything recorded under it: its WebSocket
/// frames (so its messages) and its bodies. A query with neither is refused: deleting
/// everything is never the default. The agent does the deletion (the API only reads
/// the store), so nothing is deleted while it is not running.
#[utoipa::path(
    delete,
    path = "/api/traffic",
    tag = "traffic",
    operation_id = "deleteTraffic",
    params(
        ("selection" = TrafficSelection, Query, style = Form, explode,
            description = "What to delete, as separate query parameters: filters as for \
                `GET /api/traffic` (at least one that selects something: a non-empty \
                `search` or `errorContains`, a list naming at least one item, or `error`), or \
                `all=true` without any filter parameter. Never `limit` or `offset`."),
    ),
    responses(
        (status = 200, description = "What was deleted", body = TrafficDeleted),
        (status = 400, description = "No filter and no `all=true`, both, `limit`/`offset`, or a malformed parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 502, description = "The agent failed to delete", body = ErrorBody),
        (status = 503, description = "The agent is not running (nothing was deleted)", body = ErrorBody),
    )
)]
pub(crate) async fn delete_traffic(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<TrafficDeleted>, ApiError> {
    let params = QueryParams::parse(query.as_deref());
    let filter = parse_filter(&params)?;
    for paging in ["limit", "offset"] {
        if params.single(paging)?.is_some() {
            return Err(ApiError::BadRequest(format!(
                "`{paging}` does not apply to a deletion: it deletes every entry the filters \
                 select. Leave `{paging}` out."
            )));
        }
    }
    let all = params.boolean("all", "")?.unwrap_or(false);
    // With `all=true`, a filter parameter given at all (even empty) is a mistake.
    let filtered = FILTER_PARAMS
        .iter()
        .any(|name| params.all(name).next().is_some());
    let target = match (all, filter.is_empty()) {
        (true, _) if filtered => {
            return Err(ApiError::BadRequest(
                "give filters or `all=true`, not both: `all=true` deletes every entry".into(),
            ));
        }
        (true, _) => DeleteTarget::All,
        (false, false) => DeleteTarget::Matching { filter },
        (false, true) => {
            return Err(ApiError::BadRequest(
                "say what to delete: filters as for GET /api/traffic (e.g. `?status=5xx`, \
                 `?process=curl`), or `?all=true` to delete every entry"
                    .into(),
            ));
        }
    };
    let deleted = state
        .agent
        .delete_traffic(target)
        .await
        .map_err(|e| agent_error(e, "delete the traffic entries", "nothing was deleted"))?;
    // Read-your-writes: the next list must not show what was deleted.
    if let Err(error) = refresh(&state).await {
        tracing::warn!(%error, "catching up after deleting traffic failed");
    }
    Ok(Json(TrafficDeleted {
        success: true,
        deleted: deleted.entries,
        frames: deleted.frames,
    }))
}

/// Delete a traffic entry.
///
/// Deletes the entry and everything recorded under it: its WebSocket frames (so its
/// messages) and its bodies. A WebSocket connection that is still open keeps being
/// recorded: frames recorded afterwards are kept. Done by the agent, so nothing is
/// deleted while it is not running.
#[utoipa::path(
    delete,
    path = "/api/traffic/{id}",
    tag = "traffic",
    operation_id = "deleteTrafficEntry",
    params(("id" = String, Path, description = "Traffic entry id (16 hex digits)")),
    responses(
        (status = 200, description = "The entry was deleted", body = TrafficDeleted),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody,
            example = json!({"error": "Traffic entry not found"})),
        (status = 502, description = "The agent failed to delete", body = ErrorBody),
        (status = 503, description = "The agent is not running (nothing was deleted), or the capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn delete_traffic_entry(
    State(state): State<AppState>,
    id: PathText,
) -> Result<Json<TrafficDeleted>, ApiError> {
    let not_found = || ApiError::NotFound("Traffic entry not found".into());
    let id = id.parse::<TrafficId>().ok_or_else(not_found)?;
    let known = |state: &AppState| -> Result<bool, ApiError> {
        Ok(follower(state)?
            .traffic(id)
            .map_err(|e| ApiError::store_read(&e))?
            .is_some())
    };
    if !known(&state)? {
        // The follower may lag a just-recorded entry: catch up once before saying no.
        refresh(&state).await?;
        if !known(&state)? {
            return Err(not_found());
        }
    }
    let deleted = state
        .agent
        .delete_traffic(DeleteTarget::One { id: id.to_string() })
        .await
        .map_err(|e| agent_error(e, &format!("delete {id}"), "nothing was deleted"))?;
    if let Err(error) = refresh(&state).await {
        tracing::warn!(%error, "catching up after deleting traffic failed");
    }
    Ok(Json(TrafficDeleted {
        success: true,
        deleted: deleted.entries,
        frames: deleted.frames,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<TrafficFilter, ApiError> {
        parse_filter(&QueryParams::parse(Some(q)))
    }

    #[test]
    fn filter_parses_lists_case_insensitively() {
        let f = parse("methods=get,%20Post&protocol=WSS,ws&search=Chat").unwrap();
        assert_eq!(f.methods, Some(vec!["GET".to_string(), "POST".to_string()]));
        assert_eq!(f.protocols, Some(vec!["wss".to_string(), "ws".to_string()]));
        assert_eq!(f.search.as_deref(), Some("chat"));
        let f = parse("protocol=TLS,tcp").unwrap();
        assert_eq!(
            f.protocols,
            Some(vec!["tls".to_string(), "tcp".to_string()])
        );
        assert_eq!(parse("search=&methods=").unwrap(), TrafficFilter::default());
    }

    #[test]
    fn process_status_and_error_filters() {
        let f =
            parse("pid=42,7&process=curl,Python3&status=404,5xx,2XX&error=true&errorContains=TLS")
                .unwrap();
        assert_eq!(f.pids, Some(vec![42, 7]));
        assert_eq!(
            f.processes,
            Some(vec!["curl".to_string(), "Python3".to_string()])
        );
        assert_eq!(
            f.statuses,
            Some(vec![
                StatusMatch::Code(404),
                StatusMatch::Class(5),
                StatusMatch::Class(2)
            ])
        );
        assert_eq!(f.has_error, Some(true));
        assert_eq!(f.error_contains.as_deref(), Some("tls"));
        assert_eq!(parse("error=false").unwrap().has_error, Some(false));
        assert_eq!(
            parse("container=3F1C0A9E7B2D,%20ab").unwrap().containers,
            Some(vec!["3f1c0a9e7b2d".to_string(), "ab".to_string()])
        );
        assert_eq!(
            parse("pid=007,999999999,%20%2C1").unwrap().pids,
            Some(vec![7, 999_999_999, 1])
        );
        for (q, needle) in [
            ("pid=abc", "`pid`"),
            ("pid=0", "`pid`"),
            ("pid=000", "`pid`"),
            ("pid=-1", "`pid`"),
            ("pid=%2B1", "`pid`"),
            ("pid=1000000000", "`pid`"),
            ("pid=99999999999", "`pid`"),
            ("error=FALSE", "`error`"),
            ("status=600", "`status`"),
            ("status=6xx", "`status`"),
            ("status=099", "`status`"),
            ("status=4x", "`status`"),
            ("status=40x", "`status`"),
            ("status=+40", "`status`"),
            ("error=maybe", "errorContains"),
            ("error=true&error=false", "more than once"),
        ] {
            let err = parse(q).unwrap_err();
            assert_eq!(err.status(), 400, "{q}");
            assert!(err.message().contains(needle), "{q}: {err}");
        }
    }

    #[test]
    fn filter_rejects_unknown_protocols() {
        let err = parse("protocol=wss,ftp").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("\"ftp\""), "{err}");
        assert!(err.message().contains("`protocol`"), "{err}");
    }
}
