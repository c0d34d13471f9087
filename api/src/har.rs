//! HAR 1.2 (<http://www.softwareishard.com/blog/har-12-spec/>) for captured traffic,
//! with WebSocket messages in Chrome's extension fields, as Chrome DevTools writes
//! them and Chrome and HTTP Toolkit import them: an entry of a WebSocket connection
//! (protocol `ws`/`wss`, status 101) has `_resourceType: "websocket"` and
//! `_webSocketMessages: [{type: "send" | "receive", time, opcode, data}]`.
//!
//! Bodies are the recorded ones (`postData.text`, `content.text`), with their
//! Content-Encoding undone where the API can (gzip, deflate, br), as text when they
//! are UTF-8 and as base64 (`encoding: "base64"`) otherwise; a body the agent stored
//! only a prefix of says so in the entry's `comment`. What frametap does not record
//! is written as HAR says to: sizes `-1`, no `text`. The HTTP version is not
//! recorded either; entries say `HTTP/1.1` (what every WebSocket upgrade is).
//!
//! HAR describes HTTP exchanges, so traffic entries without an HTTP request are left
//! out ([`has_http_exchange`]): connections relayed untouched (`tls`, `tcp`) and TLS
//! handshakes that failed before the client sent a request. `log.comment` says how
//! many were left out. An exchange frametap answered itself (a `502` when the
//! upstream's certificate was refused) has its request and is exported.

use std::net::SocketAddr;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{BodyInfo, TrafficEntry};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::content;
use crate::messages::AssembledMessage;

/// A HAR file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Har {
    /// The export.
    pub log: HarLog,
}

/// The HAR `log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HarLog {
    /// Always `1.2`.
    #[schema(example = "1.2")]
    pub version: String,
    /// frametap and its version.
    pub creator: HarCreator,
    /// The exchanges, oldest first.
    pub entries: Vec<HarEntry>,
    /// Notes on the export, e.g. that it was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The HAR `creator`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HarCreator {
    /// `frametap`.
    pub name: String,
    /// frametap's version.
    pub version: String,
}

/// One HAR entry: an HTTP exchange (a WebSocket connection's upgrade, with its
/// messages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarEntry {
    /// When the request started (ISO 8601, UTC, milliseconds).
    #[schema(example = "2024-02-28T16:00:00.000Z")]
    pub started_date_time: String,
    /// Milliseconds from request start to response end (0 when unknown).
    #[schema(minimum = 0)]
    pub time: f64,
    /// The request.
    pub request: HarRequest,
    /// The response (status 0 when none arrived).
    pub response: HarResponse,
    /// Always empty: frametap sees no browser cache.
    pub cache: HarCache,
    /// `wait` is the whole `time`: frametap does not split it.
    pub timings: HarTimings,
    /// The server's IP address.
    #[serde(
        rename = "serverIPAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub server_ip_address: Option<String>,
    /// The agent's number of the TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Why the exchange failed, and notes such as messages left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Chrome's extension: `websocket` for a WebSocket connection.
    #[serde(
        rename = "_resourceType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_type: Option<String>,
    /// Chrome's extension: a WebSocket connection's messages, in order.
    #[serde(
        rename = "_webSocketMessages",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub web_socket_messages: Option<Vec<HarWebSocketMessage>>,
}

/// The HAR `request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarRequest {
    /// HTTP method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// Always `HTTP/1.1` (not recorded).
    pub http_version: String,
    /// From the `Cookie` headers.
    pub cookies: Vec<HarCookie>,
    /// In wire order, repeated names kept.
    pub headers: Vec<HarHeader>,
    /// The URL's query, decoded.
    pub query_string: Vec<HarHeader>,
    /// The recorded request body, when the request had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_data: Option<HarPostData>,
    /// `-1`: not recorded.
    pub headers_size: i64,
    /// Bytes of the request body as sent; `-1` when not recorded.
    pub body_size: i64,
}

/// The HAR `request.postData`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarPostData {
    /// `Content-Type` of the request, else `x-unknown`.
    pub mime_type: String,
    /// The body (Content-Encoding undone where possible): the text itself, or
    /// base64 when `encoding` says so. Only a prefix when the entry's `comment` says
    /// it was truncated.
    pub text: String,
    /// `base64` when `text` is base64 (the body is not UTF-8 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// The HAR `response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarResponse {
    /// Status code; 0 when no response arrived.
    pub status: u16,
    /// The status's reason phrase (the standard one).
    pub status_text: String,
    /// Always `HTTP/1.1` (not recorded).
    pub http_version: String,
    /// From the `Set-Cookie` headers.
    pub cookies: Vec<HarCookie>,
    /// In wire order, repeated names kept.
    pub headers: Vec<HarHeader>,
    /// What frametap knows of the body: its `Content-Length` and `Content-Type`.
    pub content: HarContent,
    /// The `Location` header, or empty.
    #[serde(rename = "redirectURL")]
    pub redirect_url: String,
    /// `-1`: not recorded.
    pub headers_size: i64,
    /// `Content-Length`, 0 for a 101, else `-1` (not recorded).
    pub body_size: i64,
}

/// The HAR `response.content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarContent {
    /// Bytes of the content: decoded when `text` is decoded, as sent otherwise;
    /// without a recorded body, `Content-Length`, else 0.
    pub size: i64,
    /// Bytes saved by the Content-Encoding (`size` minus the body's size as sent),
    /// when the whole body was decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<i64>,
    /// `Content-Type`, else `x-unknown`.
    pub mime_type: String,
    /// The recorded body (Content-Encoding undone where possible): the text itself,
    /// or base64 when `encoding` says so; absent when none was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `base64` when `text` is base64 (the body is not UTF-8 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

/// A recorded body, as HAR carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarBody {
    /// The content: the text itself, or base64 when `base64`.
    pub text: String,
    pub base64: bool,
    /// Bytes of content in `text` (before base64).
    pub content_len: u64,
    /// The Content-Encoding was undone.
    pub decoded: bool,
    /// `text` holds only a prefix of the body.
    pub truncated: bool,
    /// What the agent recorded of the body.
    pub info: BodyInfo,
}

/// The HAR view of a recorded body: `stored` is what the store holds of it (at most
/// `limit` bytes of content are kept), `content_encoding` its header.
pub fn har_body(
    info: BodyInfo,
    stored: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> HarBody {
    let decoded = match content::codings(content_encoding) {
        Ok(codings) if !codings.is_empty() => content::decode(stored, &codings, limit),
        _ => None,
    };
    let (content, decoded, cut) = match decoded {
        Some((content, cut)) => (content, true, cut),
        None => {
            let end = stored.len().min(limit);
            (stored[..end].to_vec(), false, stored.len() > limit)
        }
    };
    let truncated = cut || info.truncated() || (stored.len() as u64) < info.stored;
    let (text, base64) = match std::str::from_utf8(&content) {
        Ok(text) => (text.to_owned(), false),
        // A cut in the middle of a character still shows as text.
        Err(e) if truncated && e.error_len().is_none() => (
            std::str::from_utf8(&content[..e.valid_up_to()])
                .expect("valid up to here")
                .to_owned(),
            false,
        ),
        Err(_) => (BASE64.encode(&content), true),
    };
    HarBody {
        text,
        base64,
        content_len: content.len() as u64,
        decoded,
        truncated,
        info,
    }
}

/// The recorded bodies of an exchange, for [`har_entry`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HarBodies {
    pub request: Option<HarBody>,
    pub response: Option<HarBody>,
}

/// A header or query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HarHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A cookie (its name and value; attributes are in the `Set-Cookie` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HarCookie {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// The HAR `cache`: always empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HarCache {}

/// The HAR `timings`, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HarTimings {
    /// 0.
    #[schema(minimum = 0)]
    pub send: f64,
    /// The entry's whole `time`.
    #[schema(minimum = 0)]
    pub wait: f64,
    /// 0.
    #[schema(minimum = 0)]
    pub receive: f64,
}

/// Who sent a WebSocket message, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HarMessageType {
    /// The client sent it.
    Send,
    /// The client received it.
    Receive,
}

/// One WebSocket message, as Chrome writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HarWebSocketMessage {
    /// `send` (from the client) or `receive`.
    #[serde(rename = "type")]
    pub message_type: HarMessageType,
    /// When it was complete (its last frame), Unix seconds with milliseconds.
    pub time: f64,
    /// 1 text, 2 binary.
    #[schema(minimum = 1, maximum = 2)]
    pub opcode: u8,
    /// Text messages: the text (bytes that are not UTF-8 replaced by U+FFFD);
    /// binary messages: standard base64. At most 1 MiB of the message.
    pub data: String,
}

/// A HAR log of `entries`, made by this frametap.
pub fn har(entries: Vec<HarEntry>, comment: Option<String>) -> Har {
    Har {
        log: HarLog {
            version: "1.2".into(),
            creator: HarCreator {
                name: "frametap".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            entries,
            comment,
        },
    }
}

/// Whether `entry` holds an HTTP request (and so belongs in a HAR): not a connection
/// relayed untouched, not a handshake that failed before any request.
pub fn has_http_exchange(entry: &TrafficEntry) -> bool {
    !entry.is_tunnel() && !entry.method.is_empty()
}

/// Whether `entry` is a WebSocket connection (its upgrade succeeded).
pub fn is_websocket(entry: &TrafficEntry) -> bool {
    matches!(entry.protocol.as_str(), "ws" | "wss") && entry.status == Some(101)
}

/// The HAR entry of a stored exchange; `messages` for a WebSocket connection,
/// `bodies` as recorded.
pub fn har_entry(
    entry: &TrafficEntry,
    messages: Option<Vec<HarWebSocketMessage>>,
    bodies: HarBodies,
) -> HarEntry {
    let time = entry
        .duration_ms
        .filter(|d| d.is_finite() && *d >= 0.0)
        .unwrap_or(0.0);
    let header = |headers: &[(String, String)], name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let content_length = header(&entry.response_headers, "content-length")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|n| *n >= 0);
    let status = entry.status.unwrap_or(0);
    let websocket = is_websocket(entry);
    let mime_type = |headers: &[(String, String)]| {
        header(headers, "content-type").unwrap_or_else(|| "x-unknown".into())
    };
    let encoding = |body: &HarBody| body.base64.then(|| "base64".to_owned());
    let post_data = bodies
        .request
        .as_ref()
        .filter(|body| body.info.size > 0)
        .map(|body| HarPostData {
            mime_type: mime_type(&entry.request_headers),
            text: body.text.clone(),
            encoding: encoding(body),
        });
    let response = bodies.response.as_ref();
    let content_size = match response {
        Some(body) if body.decoded => body.content_len as i64,
        Some(body) => body.info.size as i64,
        None => content_length.unwrap_or(0),
    };
    let http_version = entry
        .http_version
        .clone()
        .unwrap_or_else(|| "HTTP/1.1".into());
    let mut notes: Vec<String> = entry.error.iter().cloned().collect();
    for (name, body) in [("request", &bodies.request), ("response", &bodies.response)] {
        if let Some(body) = body
            && body.truncated
        {
            notes.push(format!(
                "frametap: the {name} body's text is only its beginning ({} of {} bytes \
                 as sent were stored)",
                body.info.stored, body.info.size
            ));
        }
    }
    HarEntry {
        started_date_time: iso8601(entry.timestamp_ms),
        time,
        request: HarRequest {
            method: entry.method.clone(),
            url: entry.url.clone(),
            http_version: http_version.clone(),
            cookies: request_cookies(&entry.request_headers),
            headers: har_headers(&entry.request_headers),
            query_string: query_string(&entry.url),
            post_data,
            headers_size: -1,
            body_size: entry.request_body.map_or(-1, |b| b.size as i64),
        },
        response: HarResponse {
            status,
            status_text: StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .into(),
            http_version: http_version.clone(),
            cookies: response_cookies(&entry.response_headers),
            headers: har_headers(&entry.response_headers),
            content: HarContent {
                size: content_size,
                compression: response
                    .filter(|body| body.decoded && !body.truncated)
                    .map(|body| body.content_len as i64 - body.info.size as i64),
                mime_type: mime_type(&entry.response_headers),
                text: response.map(|body| body.text.clone()),
                encoding: response.and_then(encoding),
            },
            redirect_url: header(&entry.response_headers, "location").unwrap_or_default(),
            headers_size: -1,
            body_size: match entry.response_body {
                Some(body) => body.size as i64,
                None => content_length.unwrap_or(if status == 101 { 0 } else { -1 }),
            },
        },
        cache: HarCache {},
        timings: HarTimings {
            send: 0.0,
            wait: time,
            receive: 0.0,
        },
        server_ip_address: entry
            .remote_address
            .parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip().to_string()),
        connection: Some(entry.conn_id.to_string()),
        comment: (!notes.is_empty()).then(|| notes.join("; ")),
        resource_type: websocket.then(|| "websocket".into()),
        web_socket_messages: if websocket {
            Some(messages.unwrap_or_default())
        } else {
            None
        },
    }
}

/// A reassembled message as Chrome writes it.
pub fn har_message(message: &AssembledMessage) -> HarWebSocketMessage {
    HarWebSocketMessage {
        message_type: if message.from_client {
            HarMessageType::Send
        } else {
            HarMessageType::Receive
        },
        time: message.timestamp_ms as f64 / 1000.0,
        opcode: if message.binary { 2 } else { 1 },
        data: if message.binary {
            BASE64.encode(&message.content)
        } else {
            String::from_utf8_lossy(&message.content).into_owned()
        },
    }
}

fn har_headers(headers: &[(String, String)]) -> Vec<HarHeader> {
    headers
        .iter()
        .map(|(name, value)| HarHeader {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

/// `name=value` pairs of every `Cookie` header.
fn request_cookies(headers: &[(String, String)]) -> Vec<HarCookie> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, value)| value.split(';'))
        .filter_map(cookie)
        .collect()
}

/// The `name=value` of every `Set-Cookie` header (before its attributes).
fn response_cookies(headers: &[(String, String)]) -> Vec<HarCookie> {
    headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, value)| cookie(value.split(';').next().unwrap_or("")))
        .collect()
}

fn cookie(pair: &str) -> Option<HarCookie> {
    let (name, value) = pair.trim().split_once('=')?;
    let name = name.trim();
    (!name.is_empty()).then(|| HarCookie {
        name: name.into(),
        value: value.trim().into(),
    })
}

/// The decoded query parameters of `url`.
fn query_string(url: &str) -> Vec<HarHeader> {
    let without_fragment = url.split('#').next().unwrap_or("");
    let Some((_, query)) = without_fragment.split_once('?') else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| HarHeader {
            name: name.into_owned(),
            value: value.into_owned(),
        })
        .collect()
}

/// Unix milliseconds as ISO 8601 in UTC: `2024-02-28T16:00:00.000Z`.
pub fn iso8601(unix_ms: u64) -> String {
    let (secs, ms) = (unix_ms / 1000, unix_ms % 1000);
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso8601_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_709_136_000_100), "2024-02-28T16:00:00.100Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(iso8601(1_709_251_199_000), "2024-02-29T23:59:59.000Z");
        assert_eq!(iso8601(1_709_251_200_000), "2024-03-01T00:00:00.000Z");
    }

    #[test]
    fn bodies_are_text_or_base64_and_say_when_cut() {
        let info = |size, stored| BodyInfo { size, stored };
        let json = har_body(info(10, 10), b"{\"a\":\"b\"}x", None, usize::MAX);
        assert_eq!(
            (json.text.as_str(), json.base64, json.truncated),
            ("{\"a\":\"b\"}x", false, false)
        );
        let binary = har_body(info(3, 3), &[0xff, 0, 1], None, usize::MAX);
        assert_eq!((binary.text.as_str(), binary.base64), ("/wAB", true));
        // "é" is two bytes; the agent kept only the first.
        let cut = har_body(info(10, 3), b"ab\xc3", None, usize::MAX);
        assert_eq!(
            (cut.text.as_str(), cut.base64, cut.truncated),
            ("ab", false, true)
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"hello hello hello hello").unwrap();
        let gz = gz.finish().unwrap();
        let size = gz.len() as u64;
        let decoded = har_body(info(size, size), &gz, Some("gzip"), usize::MAX);
        assert_eq!(decoded.text, "hello hello hello hello");
        assert!(decoded.decoded && !decoded.truncated);
        // Not what it claims: shown as sent.
        let liar = har_body(info(5, 5), b"plain", Some("gzip"), usize::MAX);
        assert_eq!((liar.text.as_str(), liar.decoded), ("plain", false));
        // The export's budget cuts too.
        let budget = har_body(info(6, 6), b"abcdef", None, 4);
        assert_eq!((budget.text.as_str(), budget.truncated), ("abcd", true));
    }

    #[test]
    fn cookies_and_query_are_split() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            request_cookies(&h(&[("Cookie", "a=1; b=x=y"), ("cookie", " c = 3 ;junk")])),
            [("a", "1"), ("b", "x=y"), ("c", "3")]
                .map(|(name, value)| HarCookie {
                    name: name.into(),
                    value: value.into()
                })
                .to_vec()
        );
        assert_eq!(
            response_cookies(&h(&[("Set-Cookie", "sid=abc; Path=/; HttpOnly")])),
            [HarCookie {
                name: "sid".into(),
                value: "abc".into()
            }]
        );
        let q = query_string("wss://h/p?topic=a%20b&x&y=1#frag?z=2");
        let pairs: Vec<(&str, &str)> = q
            .iter()
            .map(|p| (p.name.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(pairs, [("topic", "a b"), ("x", ""), ("y", "1")]);
        assert!(query_string("https://h/p").is_empty());
    }
}
