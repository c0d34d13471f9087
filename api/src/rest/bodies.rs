//! `/api/traffic/{id}/request/body` and `/response/body`: a recorded body, as the
//! bytes it is (with the recorded `Content-Type`), not JSON, so that `curl -o`,
//! `jq` or a browser take it as it is. By default its Content-Encoding (gzip,
//! deflate, br) is undone, as a browser would; `?raw=true` serves the bytes as sent.
//! What the agent recorded about it goes into `X-Frametap-*` headers.
//!
//! The body is read from the store a chunk at a time on a blocking thread and
//! streamed through a bounded channel, so memory stays small whatever the agent's
//! `--max-body-size`.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use frametap_store::{BodyInfo, BodyOf, Store, TrafficEntry, TrafficId};
use tokio::sync::{mpsc, oneshot};

use super::common::{PathText, follower};
use super::export::ChunkStream;
use crate::content::{self, Coding};
use crate::error::{ApiError, ErrorBody};
use crate::query::QueryParams;
use crate::state::AppState;

/// Bytes read (and decoded) per chunk of the response.
const STEP: usize = 64 * 1024;
/// Chunks that may wait for a slow client.
const QUEUE: usize = 4;

/// The body's size as sent (chunked framing removed, Content-Encoding kept).
pub const SIZE_HEADER: &str = "x-frametap-body-size";
/// How many bytes of it the agent stored.
pub const STORED_HEADER: &str = "x-frametap-stored-size";
/// `true` when only a prefix is stored.
pub const TRUNCATED_HEADER: &str = "x-frametap-truncated";
/// The Content-Encoding it was sent with, if any.
pub const ENCODING_HEADER: &str = "x-frametap-content-encoding";
/// `true` when this answer has the Content-Encoding undone.
pub const DECODED_HEADER: &str = "x-frametap-decoded";

/// Get the request body of a traffic entry.
///
/// The bytes the client sent as the request's body (chunked framing removed), as far
/// as the agent stored them (`--max-body-size`), with the recorded `Content-Type`.
/// Its Content-Encoding (gzip, deflate, br) is undone unless `raw=true`; a body that
/// does not decode is served as sent (`X-Frametap-Decoded: false`). A body with no
/// bytes is an empty 200.
#[utoipa::path(
    get,
    path = "/api/traffic/{id}/request/body",
    tag = "traffic",
    operation_id = "getRequestBody",
    params(
        ("id" = String, Path, description = "Traffic entry id (16 hex digits)"),
        ("raw" = Option<bool>, Query, description = "`true`: the bytes as sent, Content-Encoding kept (default `false`: undone where possible)"),
    ),
    responses(
        (status = 200, description = "The body", content_type = "*/*", body = [u8], headers(
            ("Content-Type" = String, description = "The body's recorded `Content-Type`, else `application/octet-stream`"),
            ("X-Frametap-Body-Size" = u64, description = "Bytes of the body as sent (chunked framing removed, Content-Encoding kept)"),
            ("X-Frametap-Stored-Size" = u64, description = "Bytes of it the agent stored"),
            ("X-Frametap-Truncated" = bool, description = "`true` when only the first stored bytes are here"),
            ("X-Frametap-Content-Encoding" = String, description = "The Content-Encoding it was sent with, when it had one"),
            ("X-Frametap-Decoded" = bool, description = "`true` when this answer has the Content-Encoding undone"),
        )),
        (status = 400, description = "A malformed `raw`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such entry, or no body recorded for it", body = ErrorBody,
            example = json!({"error": "Traffic entry not found"})),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn request_body(
    State(state): State<AppState>,
    id: PathText,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    serve_body(&state, id, BodyOf::Request, query.as_deref()).await
}

/// Get the response body of a traffic entry.
///
/// As the request body: the bytes the server sent as the response's body, undecoded
/// only with `raw=true`.
#[utoipa::path(
    get,
    path = "/api/traffic/{id}/response/body",
    tag = "traffic",
    operation_id = "getResponseBody",
    params(
        ("id" = String, Path, description = "Traffic entry id (16 hex digits)"),
        ("raw" = Option<bool>, Query, description = "`true`: the bytes as sent, Content-Encoding kept (default `false`: undone where possible)"),
    ),
    responses(
        (status = 200, description = "The body", content_type = "*/*", body = [u8], headers(
            ("Content-Type" = String, description = "The body's recorded `Content-Type`, else `application/octet-stream`"),
            ("X-Frametap-Body-Size" = u64, description = "Bytes of the body as sent (chunked framing removed, Content-Encoding kept)"),
            ("X-Frametap-Stored-Size" = u64, description = "Bytes of it the agent stored"),
            ("X-Frametap-Truncated" = bool, description = "`true` when only the first stored bytes are here"),
            ("X-Frametap-Content-Encoding" = String, description = "The Content-Encoding it was sent with, when it had one"),
            ("X-Frametap-Decoded" = bool, description = "`true` when this answer has the Content-Encoding undone"),
        )),
        (status = 400, description = "A malformed `raw`", body = ErrorBody),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 404, description = "No such entry, or no response body recorded for it", body = ErrorBody,
            example = json!({"error": "Traffic entry not found"})),
        (status = 503, description = "The capture store is not readable", body = ErrorBody),
    )
)]
pub(crate) async fn response_body(
    State(state): State<AppState>,
    id: PathText,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    serve_body(&state, id, BodyOf::Response, query.as_deref()).await
}

/// What the recorded headers of one message of an entry say about its body.
struct BodyFacts {
    info: BodyInfo,
    content_type: Option<String>,
    content_encoding: Option<String>,
}

/// The body `of` of `entry`, or the 404 that says why there is none.
fn body_facts(entry: &TrafficEntry, of: BodyOf) -> Result<BodyFacts, ApiError> {
    let (info, headers, name) = match of {
        BodyOf::Request => (entry.request_body, &entry.request_headers, "request"),
        BodyOf::Response => (entry.response_body, &entry.response_headers, "response"),
    };
    let Some(info) = info else {
        let why = match of {
            BodyOf::Response if entry.status.is_none() => "no response arrived",
            _ if entry.method.is_empty() => "the exchange failed before any request",
            _ => "it was recorded before frametap recorded bodies",
        };
        return Err(ApiError::NotFound(format!(
            "No {name} body recorded for {}: {why}",
            entry.id
        )));
    };
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.clone())
    };
    Ok(BodyFacts {
        info,
        content_type: header("content-type"),
        content_encoding: header("content-encoding"),
    })
}

async fn serve_body(
    state: &AppState,
    id: PathText,
    of: BodyOf,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(query);
    let raw = params
        .boolean("raw", " (true: the bytes as sent)")?
        .unwrap_or(false);
    let not_found = || ApiError::NotFound("Traffic entry not found".into());
    let id = id.parse::<TrafficId>().ok_or_else(not_found)?;
    let store = follower(state)?;
    let entry = store
        .traffic(id)
        .map_err(|e| ApiError::store_read(&e))?
        .ok_or_else(not_found)?;
    let facts = body_facts(&entry, of)?;
    // Decode only what the API knows how to; anything else is served as sent.
    let codings = match content::codings(facts.content_encoding.as_deref()) {
        Ok(codings) if !raw && !codings.is_empty() => Some(codings),
        _ => None,
    };

    let (decided, decided_rx) = oneshot::channel();
    let (chunks, receiver) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || stream_body(&store, id, of, codings, decided, &chunks));
    let decoded = decided_rx.await.unwrap_or(false);

    let mut response = Body::from_stream(ChunkStream(receiver)).into_response();
    let headers = response.headers_mut();
    let content_type = facts
        .content_type
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    if !decoded {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(facts.info.stored));
    }
    let mut set = |name: &'static str, value: HeaderValue| {
        headers.insert(HeaderName::from_static(name), value);
    };
    set(SIZE_HEADER, HeaderValue::from(facts.info.size));
    set(STORED_HEADER, HeaderValue::from(facts.info.stored));
    set(
        TRUNCATED_HEADER,
        HeaderValue::from_static(if facts.info.truncated() {
            "true"
        } else {
            "false"
        }),
    );
    set(
        DECODED_HEADER,
        HeaderValue::from_static(if decoded { "true" } else { "false" }),
    );
    if let Some(value) = facts
        .content_encoding
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        set(ENCODING_HEADER, value);
    }
    Ok(response)
}

/// Reads the stored body (decoded through `codings` when given and possible), says
/// whether it decoded on `decided` before the first chunk, and sends it in chunks
/// until it is over or the client is gone.
fn stream_body(
    store: &Store,
    id: TrafficId,
    of: BodyOf,
    codings: Option<Vec<Coding>>,
    decided: oneshot::Sender<bool>,
    chunks: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut buf = vec![0u8; STEP];
    let raw = || -> Box<dyn Read + Send> { Box::new(store.body_reader(id, of)) };
    let as_sent = |buf: &mut [u8]| {
        let mut reader = raw();
        let first = fill(&mut reader, buf);
        (reader, first, false)
    };
    // The first read tells whether the body decodes: one that does not (it is not
    // what its header claims) is served as sent.
    let (mut reader, first, decoded) = match codings {
        Some(codings) => {
            let mut decoding = content::decoder(raw(), &codings);
            match fill(&mut decoding, &mut buf) {
                Ok(n) => (decoding, Ok(n), true),
                Err(_) => as_sent(&mut buf),
            }
        }
        None => as_sent(&mut buf),
    };
    let _ = decided.send(decoded);
    let mut next = first;
    loop {
        match next {
            Ok(0) => return,
            Ok(n) => {
                if chunks
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    return;
                }
            }
            // A decoded body that breaks off (a stored prefix of a compressed body)
            // ends where it breaks.
            Err(_) if decoded => return,
            Err(error) => {
                tracing::warn!(%error, %id, "reading a stored body failed");
                let _ = chunks.blocking_send(Err(error));
                return;
            }
        }
        next = fill(&mut reader, &mut buf);
    }
}

/// Reads until `buf` is full or the reader is over; an error after some bytes is
/// kept for the next call (the bytes come first).
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
