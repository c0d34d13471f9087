//! Router tests over a real store: records written by a primary, served from a
//! secondary that catches up, exactly as the API process runs next to the agent.
//! Every response is parsed as JSON (a plain-text rejection fails the test), and the
//! OpenAPI test validates real bodies against the schemas the document declares.
//!
//! This module holds what the topics share: the recorded connections and entries,
//! the [`Fixture`] (primary, secondary, router), the request helpers and the data
//! sets several topics write; [`fakes`] holds the fake agent and health source. Each
//! other module is one topic.

mod auth;
mod bodies;
mod compare;
mod events;
mod export;
mod fakes;
mod health;
mod inject;
mod live;
mod messages;
mod openapi;
mod openapi_cases;
mod openapi_contract;
mod replay;
mod routing;
mod rules;
mod traffic;
mod ui;
mod websocket;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use frametap_store::{
    BodyChunk, BodyInfo, BodyOf, FrameRecord, Record, Store, StoreOptions,
    TrafficEntry as StoredEntry, TrafficId, WsClose, WsOpen,
};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::state::{AppState, StoreSource};
use crate::{AuthConfig, router};

use fakes::{Agent, FixedHealth};

/// The closed chat connection of the seed's example (8 frames).
const CHAT: TrafficId = TrafficId((1_709_136_000_000 << 16) | 1);
/// A still-open connection with 250 frames.
const FEED: TrafficId = TrafficId((1_709_136_001_000 << 16) | 1);
/// A plain HTTPS POST.
const LOGIN: TrafficId = TrafficId((1_709_136_002_000 << 16) | 1);
/// An HTTP GET whose URL contains "ws" (matched by `search=ws`, but not `wss`).
const DOCS: TrafficId = TrafficId((1_709_136_003_000 << 16) | 1);
/// A plaintext `ws://` connection.
const LOCAL: TrafficId = TrafficId((1_709_136_004_000 << 16) | 1);
/// Well-formed, never recorded.
const UNKNOWN: TrafficId = TrafficId((1_709_136_009_000 << 16) | 7);

const TOKEN: &str = "0123456789abcdef-test-token";

// ---------------------------------------------------------------------------------
// Fixture: a primary with records, a secondary serving them, fake agent and health.

fn frame(
    traffic: TrafficId,
    seq: u64,
    from_client: bool,
    opcode: u8,
    payload: &[u8],
) -> FrameRecord {
    FrameRecord {
        traffic,
        seq,
        timestamp_ms: traffic.timestamp_ms() + 100 * seq,
        from_client,
        opcode,
        fin: true,
        rsv: 0,
        masked: from_client,
        compressed: false,
        wire_len: payload.len() as u64 + if from_client { 6 } else { 2 },
        payload_len: payload.len() as u64,
        truncated: false,
        payload: payload.to_vec(),
        close_code: None,
        close_reason: None,
        injected: false,
        dropped: false,
        binary_message: opcode == 2,
        modified: false,
    }
}

fn close_frame(
    traffic: TrafficId,
    seq: u64,
    from_client: bool,
    code: u16,
    reason: &str,
) -> FrameRecord {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    FrameRecord {
        close_code: Some(code),
        close_reason: Some(reason.to_owned()),
        ..frame(traffic, seq, from_client, 8, &payload)
    }
}

fn entry(id: TrafficId, method: &str, url: &str, status: Option<u16>) -> StoredEntry {
    let (protocol, rest) = url.split_once("://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    StoredEntry {
        id,
        timestamp_ms: id.timestamp_ms(),
        conn_id: id.0 & 0xff,
        method: method.into(),
        url: url.into(),
        protocol: protocol.into(),
        host: host.into(),
        path: path.into(),
        status,
        request_headers: vec![
            ("Host".into(), host.into()),
            ("Accept".into(), "text/html".into()),
            ("accept".into(), "application/json".into()),
        ],
        response_headers: vec![
            ("Set-Cookie".into(), "a=1; Path=/".into()),
            ("set-cookie".into(), "b=2".into()),
        ],
        remote_address: "93.184.216.34:443".into(),
        tls_version: (protocol == "https" || protocol == "wss").then(|| "TLSv1.3".into()),
        duration_ms: Some(12.5),
        error: None,
        client_address: "10.0.0.2:50000".into(),
        pid: Some(4242),
        process: Some("chat-app".into()),
        sni: Some(host.into()),
        request_body: Some(BodyInfo::default()),
        response_body: status.map(|_| BodyInfo::default()),
        ..StoredEntry::default()
    }
}

fn ws_open(traffic: TrafficId, url: &str) -> WsOpen {
    WsOpen {
        traffic,
        timestamp_ms: traffic.timestamp_ms() + 5,
        url: url.into(),
        client_address: "10.0.0.2:50000".into(),
        server_address: "93.184.216.34:443".into(),
        subprotocol: Some("chat.v1".into()),
        extensions: None,
        deflate: false,
    }
}

/// The seed's chat conversation: text both ways, ping/pong without payload, a binary
/// message in two fragments, and the closing handshake.
fn chat_frames() -> Vec<FrameRecord> {
    let mut first_fragment = frame(CHAT, 5, false, 2, &[0x00, 0x01, 0x02, 0xff]);
    first_fragment.fin = false;
    let mut continuation = frame(CHAT, 6, false, 0, &[0x03, 0x04]);
    continuation.binary_message = true;
    vec![
        frame(
            CHAT,
            1,
            true,
            1,
            br#"{"action":"subscribe","channel":"chat"}"#,
        ),
        frame(
            CHAT,
            2,
            false,
            1,
            br#"{"status":"subscribed","channel":"chat"}"#,
        ),
        frame(CHAT, 3, false, 9, b""),
        frame(CHAT, 4, true, 10, b""),
        first_fragment,
        continuation,
        close_frame(CHAT, 7, true, 1000, "bye"),
        close_frame(CHAT, 8, false, 1000, ""),
    ]
}

fn feed_frame(seq: u64) -> FrameRecord {
    frame(
        FEED,
        seq,
        seq % 2 == 1,
        1,
        format!("message {seq}").as_bytes(),
    )
}

/// Serves the secondary; `refresh` catches it up.
struct Follower(Store);

impl StoreSource for Follower {
    fn store(&self) -> Result<Store, String> {
        Ok(self.0.clone())
    }
    fn refresh(&self) {
        self.0.catch_up().expect("catch up");
    }
}

/// A store that can't be opened.
struct NoStore;

impl StoreSource for NoStore {
    fn store(&self) -> Result<Store, String> {
        Err("no frametap data in /var/lib/frametap: start frametap-agent first".into())
    }
    fn refresh(&self) {}
}

struct Fixture {
    primary: Store,
    secondary: Store,
    agent: Arc<Agent>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let primary_dir = dir.path().join("store");
        let primary = Store::open_primary(&primary_dir, StoreOptions::default()).unwrap();
        let mut records: Vec<Record> = vec![
            entry(CHAT, "GET", "wss://chat.example.com/socket", Some(101)).into(),
            ws_open(CHAT, "wss://chat.example.com/socket").into(),
            entry(
                FEED,
                "GET",
                "wss://feed.example.com/live?topic=ws",
                Some(101),
            )
            .into(),
            ws_open(FEED, "wss://feed.example.com/live?topic=ws").into(),
            entry(LOGIN, "POST", "https://api.example.com/login", Some(200)).into(),
            entry(DOCS, "GET", "http://docs.example.org/wsguide", Some(200)).into(),
            entry(LOCAL, "GET", "ws://localhost:9000/ws", Some(101)).into(),
            ws_open(LOCAL, "ws://localhost:9000/ws").into(),
        ];
        records.extend(chat_frames().into_iter().map(Record::from));
        records.push(
            WsClose {
                traffic: CHAT,
                timestamp_ms: CHAT.timestamp_ms() + 900,
                closed_by: Some("client".into()),
                close_code: Some(1000),
                close_reason: Some("bye".into()),
                frames_from_client: 3,
                frames_from_server: 5,
                bytes_from_client: 120,
                bytes_from_server: 140,
                abnormal: None,
                frames_from_frametap: Some(0),
            }
            .into(),
        );
        records.extend((1..=250).map(|seq| Record::from(feed_frame(seq))));
        primary.write(&records).unwrap();
        let secondary = Store::open_secondary(&primary_dir, &dir.path().join("secondary")).unwrap();
        secondary.catch_up().unwrap();
        Fixture {
            agent: Arc::new(Agent::new(primary.clone())),
            primary,
            secondary,
            _dir: dir,
        }
    }

    fn catch_up(&self) {
        self.secondary.catch_up().unwrap();
    }

    fn state(&self) -> AppState {
        AppState {
            store: Arc::new(Follower(self.secondary.clone())),
            agent: self.agent.clone(),
            health: Arc::new(FixedHealth),
            auth: AuthConfig { token: None },
        }
    }

    /// No authentication, working store and agent.
    fn router(&self) -> Router {
        router(self.state())
    }
}

// ---------------------------------------------------------------------------------
// Requests.

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.body))
    }

    fn link(&self) -> Option<&str> {
        self.headers.get(header::LINK).map(|v| v.to_str().unwrap())
    }

    fn array(&self) -> &Vec<Value> {
        self.body
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", self.body))
    }
}

/// A response whatever its type.
struct RawReply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl RawReply {
    fn content_type(&self) -> Option<&str> {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap())
    }
}

/// Sends a request; `body` is `(content type, bytes)`.
async fn send_raw(
    router: &Router,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> RawReply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(header::CONTENT_TYPE, content_type);
            Body::from(bytes.to_vec())
        }
        None => Body::empty(),
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    RawReply {
        status,
        headers,
        bytes,
    }
}

/// Sends a request whose answer must be JSON.
async fn send_body(
    router: &Router,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Reply {
    let raw = send_raw(router, method, uri, authorization, body).await;
    let status = raw.status;
    assert_eq!(
        raw.content_type(),
        Some("application/json"),
        "{method} {uri} -> {status}: not JSON: {}",
        String::from_utf8_lossy(&raw.bytes)
    );
    let body = serde_json::from_slice(&raw.bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {uri} -> {status}: invalid JSON ({e}): {}",
            String::from_utf8_lossy(&raw.bytes)
        )
    });
    Reply {
        status,
        headers: raw.headers,
        body,
    }
}

async fn send_with(router: &Router, method: &str, uri: &str, authorization: Option<&str>) -> Reply {
    send_body(router, method, uri, authorization, None).await
}

/// `method uri` with a JSON body.
async fn send_json(router: &Router, method: &str, uri: &str, body: &Value) -> Reply {
    let bytes = serde_json::to_vec(body).unwrap();
    send_body(
        router,
        method,
        uri,
        None,
        Some(("application/json", &bytes)),
    )
    .await
}

async fn get(router: &Router, uri: &str) -> Reply {
    send_with(router, "GET", uri, None).await
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect()
}

fn frame_id(traffic: TrafficId, seq: u64) -> String {
    format!("{traffic}-{seq:08x}")
}

// ---------------------------------------------------------------------------------
// Data sets several topics write.

/// A TLS connection relayed untouched because the server chose h2.
const TUNNEL: TrafficId = TrafficId((1_709_136_005_000 << 16) | 1);
/// A client that refused the frametap certificate: no request.
const REFUSED: TrafficId = TrafficId((1_709_136_005_500 << 16) | 1);
/// A request answered with 502 because the upstream's certificate was refused.
const GATEWAY: TrafficId = TrafficId((1_709_136_006_000 << 16) | 1);

/// Writes [`TUNNEL`] (still open), [`REFUSED`] and [`GATEWAY`].
fn write_tls_outcomes(fx: &Fixture) {
    let tunnel = StoredEntry {
        id: TUNNEL,
        timestamp_ms: TUNNEL.timestamp_ms(),
        conn_id: 40,
        url: "tls://h2.example.com:443".into(),
        protocol: "tls".into(),
        host: "h2.example.com".into(),
        remote_address: "93.184.216.35:443".into(),
        client_address: "10.0.0.2:50040".into(),
        sni: Some("h2.example.com".into()),
        not_intercepted: Some("server selected h2".into()),
        alpn_offered: vec!["h2".into(), "http/1.1".into()],
        alpn_selected: Some("h2".into()),
        ..StoredEntry::default()
    };
    let refused = StoredEntry {
        id: REFUSED,
        timestamp_ms: REFUSED.timestamp_ms(),
        protocol: "https".into(),
        host: "pinned.example.com".into(),
        error: Some(
            "client TLS handshake failed: the client does not trust the frametap CA".into(),
        ),
        ..StoredEntry::default()
    };
    let gateway = StoredEntry {
        status: Some(502),
        error: Some("upstream TLS failed for private.example.com".into()),
        ..entry(GATEWAY, "GET", "https://private.example.com/chat", None)
    };
    fx.primary
        .write(&[tunnel.into(), refused.into(), gateway.into()])
        .unwrap();
    fx.catch_up();
}

/// A form POST answered with gzip'd JSON, both bodies recorded whole.
const UPLOAD: TrafficId = TrafficId((1_709_136_005_000 << 16) | 1);
/// A download of which the agent stored only the first 1000 bytes.
const DOWNLOAD: TrafficId = TrafficId((1_709_136_005_100 << 16) | 1);
/// An exchange recorded before frametap recorded bodies.
const OLD: TrafficId = TrafficId((1_709_136_005_200 << 16) | 1);
/// An exchange that failed: no response.
const FAILED: TrafficId = TrafficId((1_709_136_005_300 << 16) | 1);

const FORM: &[u8] = b"user=alice&password=hunter2";
const JSON_REPLY: &[u8] = br#"{"token":"abc","expires":3600,"note":"caf\u00e9 ok"}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn chunk(traffic: TrafficId, of: BodyOf, seq: u32, data: &[u8]) -> Record {
    Record::Body(BodyChunk {
        traffic,
        of,
        seq,
        data: data.to_vec(),
    })
}

/// Writes UPLOAD, DOWNLOAD, OLD and FAILED, as the agent records them.
fn write_exchanges(fx: &Fixture) {
    let gzipped = gzip(JSON_REPLY);
    let mut upload = entry(UPLOAD, "POST", "https://api.example.com/session", Some(201));
    upload.request_headers = vec![
        ("Host".into(), "api.example.com".into()),
        (
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
    ];
    upload.response_headers = vec![
        ("Content-Type".into(), "application/json".into()),
        ("Content-Encoding".into(), "gzip".into()),
    ];
    upload.request_body = Some(BodyInfo {
        size: FORM.len() as u64,
        stored: FORM.len() as u64,
    });
    upload.response_body = Some(BodyInfo {
        size: gzipped.len() as u64,
        stored: gzipped.len() as u64,
    });
    upload.pid = Some(7);
    upload.process = Some("curl".into());
    let mut download = entry(
        DOWNLOAD,
        "GET",
        "http://files.example.org/big.bin",
        Some(200),
    );
    download.response_headers = vec![("Content-Type".into(), "application/octet-stream".into())];
    download.response_body = Some(BodyInfo {
        size: 100_000,
        stored: 1000,
    });
    download.pid = Some(8);
    download.process = Some("wget".into());
    let mut old = entry(OLD, "GET", "http://docs.example.org/old", Some(404));
    old.request_body = None;
    old.response_body = None;
    let mut failed = entry(FAILED, "GET", "https://down.example.net/", None);
    failed.error = Some("upstream TLS failed: certificate expired".into());
    let (first, second) = gzipped.split_at(gzipped.len() / 2);
    let binary: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    fx.primary
        .write(&[
            chunk(UPLOAD, BodyOf::Request, 0, &FORM[..10]),
            chunk(UPLOAD, BodyOf::Request, 1, &FORM[10..]),
            chunk(UPLOAD, BodyOf::Response, 0, first),
            chunk(UPLOAD, BodyOf::Response, 1, second),
            upload.into(),
            chunk(DOWNLOAD, BodyOf::Response, 0, &binary),
            download.into(),
            old.into(),
            failed.into(),
        ])
        .unwrap();
    fx.catch_up();
}

/// An open connection whose messages are fragmented and interleaved.
const TALK: TrafficId = TrafficId((1_709_136_007_000 << 16) | 1);

fn fragment(
    traffic: TrafficId,
    seq: u64,
    from_client: bool,
    opcode: u8,
    fin: bool,
    payload: &[u8],
) -> FrameRecord {
    FrameRecord {
        fin,
        ..frame(traffic, seq, from_client, opcode, payload)
    }
}

/// TALK: client text "Hello, wörld" in three fragments and server binary [0, 1, 2, 3]
/// in two, interleaved, with a ping and a pong between fragments; a server text;
/// a client binary in two fragments; a server text left open.
fn write_talk(fx: &Fixture) {
    let mut records: Vec<Record> = vec![ws_open(TALK, "wss://talk.example.com/ws").into()];
    let mut binary_continuation = fragment(TALK, 6, false, 0, true, &[2, 3]);
    binary_continuation.binary_message = true;
    let mut client_binary_end = fragment(TALK, 10, true, 0, true, &[8]);
    client_binary_end.binary_message = true;
    records.extend(
        [
            fragment(TALK, 1, true, 1, false, b"Hel"),
            fragment(TALK, 2, false, 2, false, &[0, 1]),
            fragment(TALK, 3, true, 9, true, b"p"),
            fragment(TALK, 4, true, 0, false, b"lo, "),
            fragment(TALK, 5, false, 10, true, b""),
            binary_continuation,
            fragment(TALK, 7, true, 0, true, "wörld".as_bytes()),
            fragment(TALK, 8, false, 1, true, b"ok"),
            fragment(TALK, 9, true, 2, false, &[9]),
            client_binary_end,
            fragment(TALK, 11, false, 1, false, b"a"),
        ]
        .map(Record::from),
    );
    fx.primary.write(&records).unwrap();
    fx.catch_up();
}

/// The base URI the OpenAPI document is registered under for `$ref` resolution.
const DOC_URI: &str = "https://frametap.invalid/openapi.json";
