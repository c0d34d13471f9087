//! `/api/traffic`: the captured HTTP exchanges (WebSocket upgrades included), newest
//! first, filtered by method, protocol and a search string.

use axum::Json;
use axum::extract::{RawQuery, State};

use super::{PathText, follower};
use crate::error::{ApiError, ErrorBody, excerpt};
use crate::query::QueryParams;
use crate::state::AppState;
use crate::views::{TrafficEntry, TrafficPage, traffic_json};
use frametap_store::TrafficId;

/// Entries per page when `limit` is not given.
pub(crate) const DEFAULT_TRAFFIC_LIMIT: u64 = 100;
/// Largest allowed `limit` of a traffic page.
pub(crate) const MAX_TRAFFIC_LIMIT: u64 = 1000;
/// The values of `protocol` (and of a traffic entry's `protocol`).
const PROTOCOLS: [&str; 6] = ["http", "https", "ws", "wss", "tls", "tcp"];

/// Which traffic entries a list returns. `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TrafficFilter {
    /// Upper-cased methods.
    methods: Option<Vec<String>>,
    /// Lower-cased search string.
    search: Option<String>,
    /// Protocols, from [`PROTOCOLS`].
    protocols: Option<Vec<&'static str>>,
}

impl TrafficFilter {
    fn parse(params: &QueryParams) -> Result<TrafficFilter, ApiError> {
        let methods = params
            .list("methods")?
            .map(|methods| methods.iter().map(|m| m.to_ascii_uppercase()).collect());
        let search = params
            .single("search")?
            .filter(|s| !s.is_empty())
            .map(str::to_lowercase);
        let protocols = match params.list("protocol")? {
            None => None,
            Some(items) => Some(
                items
                    .iter()
                    .map(|item| {
                        PROTOCOLS
                            .into_iter()
                            .find(|p| p.eq_ignore_ascii_case(item))
                            .ok_or_else(|| {
                                ApiError::BadRequest(format!(
                                    "query parameter `protocol` takes a comma-separated list of \
                                     http, https, ws, wss, tls, tcp; got {:?}",
                                    excerpt(item)
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(TrafficFilter {
            methods,
            search,
            protocols,
        })
    }

    fn matches(&self, entry: &frametap_store::TrafficEntry) -> bool {
        if let Some(methods) = &self.methods
            && !methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&entry.method))
        {
            return false;
        }
        if let Some(protocols) = &self.protocols
            && !protocols
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&entry.protocol))
        {
            return false;
        }
        match &self.search {
            None => true,
            Some(needle) => [&entry.url, &entry.host, &entry.path]
                .into_iter()
                .any(|field| contains_ignoring_case(field, needle)),
        }
    }
}

/// Whether `haystack` contains `needle_lower` (already lower-cased), ignoring case.
/// ASCII needles (the usual case) are matched without allocating, since the list scans
/// every stored entry.
fn contains_ignoring_case(haystack: &str, needle_lower: &str) -> bool {
    if !needle_lower.is_ascii() {
        return haystack.to_lowercase().contains(needle_lower);
    }
    let needle = needle_lower.as_bytes();
    needle.is_empty()
        || haystack
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

/// List traffic entries.
///
/// HTTP exchanges and connections relayed untouched (protocol `tls` or `tcp`, with
/// `notIntercepted` saying why; listed from their start). Newest first. `count` is the number of all entries matching the filters, not just
/// the page. Scans the whole traffic table.
#[utoipa::path(
    get,
    path = "/api/traffic",
    tag = "traffic",
    operation_id = "listTraffic",
    params(
        ("methods" = Option<String>, Query, description = "Comma-separated HTTP methods, case-insensitive, e.g. GET,POST"),
        ("search" = Option<String>, Query, description = "Case-insensitive substring of the URL, host or path"),
        ("protocol" = Option<String>, Query, description = "Comma-separated protocols among http, https, ws, wss (HTTP exchanges) and tls, tcp (connections relayed untouched)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most entries to return (1 to 1000, default 100)"),
        ("offset" = Option<u64>, Query, minimum = 0, description = "Matching entries to skip (default 0)"),
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
    let filter = TrafficFilter::parse(&params)?;
    let limit = params.integer("limit", 1, MAX_TRAFFIC_LIMIT, DEFAULT_TRAFFIC_LIMIT)?;
    let offset = params.integer("offset", 0, u64::MAX, 0)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<TrafficFilter, ApiError> {
        TrafficFilter::parse(&QueryParams::parse(Some(q)))
    }

    #[test]
    fn filter_parses_lists_case_insensitively() {
        let f = parse("methods=get,%20Post&protocol=WSS,ws&search=Chat").unwrap();
        assert_eq!(f.methods, Some(vec!["GET".to_string(), "POST".to_string()]));
        assert_eq!(f.protocols, Some(vec!["wss", "ws"]));
        assert_eq!(f.search.as_deref(), Some("chat"));
        let f = parse("protocol=TLS,tcp").unwrap();
        assert_eq!(f.protocols, Some(vec!["tls", "tcp"]));
        assert_eq!(parse("search=&methods=").unwrap(), TrafficFilter::default());
    }

    #[test]
    fn search_ignores_case_with_and_without_ascii() {
        assert!(contains_ignoring_case(
            "wss://Chat.Example.com/",
            "chat.example"
        ));
        assert!(contains_ignoring_case("anything", ""));
        assert!(!contains_ignoring_case("ws", "wss"));
        assert!(contains_ignoring_case("https://MÜNCHEN.de/", "münchen"));
        assert!(!contains_ignoring_case("https://munchen.de/", "münchen"));
    }

    #[test]
    fn filter_rejects_unknown_protocols() {
        let err = parse("protocol=wss,ftp").unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("\"ftp\""), "{err}");
        assert!(err.message().contains("`protocol`"), "{err}");
    }
}
