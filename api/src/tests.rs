//! Router tests over a real store: records written by a primary, served from a
//! secondary that catches up, exactly as the API process runs next to the agent.
//! Every response is parsed as JSON (a plain-text rejection fails the test), and the
//! OpenAPI test validates real bodies against the schemas the document declares.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{
    FrameRecord, Record, Store, StoreOptions, TrafficEntry as StoredEntry, TrafficId, WsClose,
    WsOpen,
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::state::{
    AgentControl, AgentHealth, AppState, ControlError, DeleteFramesFuture, EventsHealth, Health,
    HealthSource, HealthStatus, StoreHealth, StoreSource,
};
use crate::{AuthConfig, router};

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

/// Deletes through the primary, as the real agent does on request.
struct Agent(Store);

impl AgentControl for Agent {
    fn delete_frames(&self, traffic: TrafficId) -> DeleteFramesFuture<'_> {
        Box::pin(async move {
            self.0
                .delete_frames(traffic)
                .map_err(|e| ControlError::Failed(format!("{e:#}")))
        })
    }
}

/// An agent that answers with `ControlError`s.
struct BrokenAgent(ControlError);

impl AgentControl for BrokenAgent {
    fn delete_frames(&self, _traffic: TrafficId) -> DeleteFramesFuture<'_> {
        let error = self.0.clone();
        Box::pin(async move { Err(error) })
    }
}

struct FixedHealth;

fn sample_health() -> Health {
    Health {
        status: HealthStatus::Degraded,
        version: "0.1.0".into(),
        agent: AgentHealth {
            up: false,
            pid: None,
            error: Some("control socket /var/lib/frametap/agent.sock: connection refused".into()),
        },
        store: StoreHealth {
            open: true,
            last_catch_up_ms_ago: Some(3),
            sequence: Some(42),
            agent_sequence: None,
            sequence_lag: None,
            error: None,
        },
        events: EventsHealth {
            connected: false,
            received: 7,
            dropped: 0,
        },
    }
}

impl HealthSource for FixedHealth {
    fn health(&self) -> Health {
        sample_health()
    }
}

struct Fixture {
    primary: Store,
    secondary: Store,
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
            }
            .into(),
        );
        records.extend((1..=250).map(|seq| Record::from(feed_frame(seq))));
        primary.write(&records).unwrap();
        let secondary = Store::open_secondary(&primary_dir, &dir.path().join("secondary")).unwrap();
        secondary.catch_up().unwrap();
        Fixture {
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
            agent: Arc::new(Agent(self.primary.clone())),
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

async fn send_with(router: &Router, method: &str, uri: &str, authorization: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{method} {uri} -> {status}: not JSON: {}",
        String::from_utf8_lossy(&bytes)
    );
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{method} {uri} -> {status}: invalid JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply {
        status,
        headers,
        body,
    }
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
// Frames.

#[tokio::test]
async fn frames_have_the_seed_shape() {
    let fx = Fixture::new();
    let app = fx.router();
    let reply = get(&app, &format!("/api/websocket/{CHAT}/frames")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.link(), None, "a short page has no next link");
    let frames = reply.array();
    assert_eq!(seqs(frames), (1..=8).collect::<Vec<_>>());

    let seed_keys = [
        "id",
        "trafficId",
        "timestamp",
        "direction",
        "opcode",
        "data",
        "isBinary",
        "length",
    ];
    let extra_keys = [
        "seq",
        "fin",
        "rsv",
        "masked",
        "compressed",
        "wireLength",
        "truncated",
        "closeCode",
        "closeReason",
        "injected",
        "dropped",
    ];
    let all_keys: BTreeSet<&str> = seed_keys.iter().chain(&extra_keys).copied().collect();
    for f in frames {
        assert_eq!(keys(f), all_keys);
    }

    let first = &frames[0];
    assert_eq!(first["id"], frame_id(CHAT, 1));
    assert_eq!(first["id"], "018df071b4000001-00000001");
    assert_eq!(first["trafficId"], CHAT.to_string());
    assert_eq!(first["timestamp"], CHAT.timestamp_ms() + 100);
    assert_eq!(first["direction"], "client-to-server");
    assert_eq!(first["opcode"], 1);
    // The seed's own example: base64 of the subscribe message.
    assert_eq!(
        first["data"],
        "eyJhY3Rpb24iOiJzdWJzY3JpYmUiLCJjaGFubmVsIjoiY2hhdCJ9"
    );
    assert_eq!(first["isBinary"], false);
    assert_eq!(first["length"], 39);
    assert_eq!(first["masked"], true);
    assert_eq!(first["wireLength"], 45);
    assert_eq!(first["closeCode"], Value::Null);

    let second = &frames[1];
    assert_eq!(second["direction"], "server-to-client");
    assert_eq!(
        BASE64.decode(second["data"].as_str().unwrap()).unwrap(),
        br#"{"status":"subscribed","channel":"chat"}"#
    );
    // Padding is kept (41 bytes is not a multiple of 3).
    assert!(second["data"].as_str().unwrap().ends_with('='));

    // Ping and pong without payload: data null, length 0 (as in the seed).
    for (f, opcode) in [(&frames[2], 9), (&frames[3], 10)] {
        assert_eq!(f["opcode"], opcode);
        assert_eq!(f["data"], Value::Null);
        assert_eq!(f["length"], 0);
        assert_eq!(f["isBinary"], false);
    }

    // A binary message in two fragments: both frames are binary.
    let (start, cont) = (&frames[4], &frames[5]);
    assert_eq!(
        (start["opcode"].as_u64(), start["fin"].as_bool()),
        (Some(2), Some(false))
    );
    assert_eq!(
        (cont["opcode"].as_u64(), cont["fin"].as_bool()),
        (Some(0), Some(true))
    );
    assert_eq!(start["isBinary"], true);
    assert_eq!(cont["isBinary"], true);
    assert_eq!(
        BASE64.decode(start["data"].as_str().unwrap()).unwrap(),
        [0, 1, 2, 0xff]
    );
    assert_eq!(start["length"], 4);

    let close = &frames[6];
    assert_eq!(close["opcode"], 8);
    assert_eq!(close["closeCode"], 1000);
    assert_eq!(close["closeReason"], "bye");
    assert_eq!(
        BASE64.decode(close["data"].as_str().unwrap()).unwrap(),
        b"\x03\xe8bye"
    );
    assert_eq!(frames[7]["closeReason"], "");
}

#[tokio::test]
async fn one_frame_by_id_and_404s() {
    let fx = Fixture::new();
    let app = fx.router();
    let all = get(&app, &format!("/api/websocket/{CHAT}/frames")).await;
    for f in all.array() {
        let one = get(
            &app,
            &format!("/api/websocket/frame/{}", f["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(one.status, StatusCode::OK);
        assert_eq!(&one.body, f);
    }
    let long = "a".repeat(10_000);
    let absent = [
        frame_id(CHAT, 9),
        frame_id(CHAT, 0),
        frame_id(UNKNOWN, 1),
        frame_id(CHAT, 1).to_uppercase(),
        format!("{CHAT}-1"),
        "frame-uuid-1".into(),
        "%FF%FE".into(),
        "%ZZ".into(),
        long,
    ];
    for id in absent {
        let reply = get(&app, &format!("/api/websocket/frame/{id}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id:.40}");
        assert_eq!(reply.body, json!({"error": "Frame not found"}));
    }
}

#[tokio::test]
async fn counts_are_exact_and_zero_for_unknown() {
    let fx = Fixture::new();
    let app = fx.router();
    for (traffic, count) in [
        (CHAT.to_string(), 8),
        (FEED.to_string(), 250),
        (LOGIN.to_string(), 0),
    ] {
        let reply = get(&app, &format!("/api/websocket/{traffic}/count")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({ "count": count }));
    }
    for traffic in [
        UNKNOWN.to_string(),
        "traffic-uuid-1".into(),
        "f".repeat(10_000),
        "%FF".into(),
    ] {
        let reply = get(&app, &format!("/api/websocket/{traffic}/count")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"count": 0}));
    }
}

#[tokio::test]
async fn unknown_connections_have_no_frames() {
    let fx = Fixture::new();
    let app = fx.router();
    for traffic in [
        UNKNOWN.to_string(),
        LOGIN.to_string(),
        "traffic-uuid-1".into(),
        "0".repeat(10_000),
        "%FF".into(),
    ] {
        let reply = get(&app, &format!("/api/websocket/{traffic}/frames?limit=50")).await;
        assert_eq!(reply.status, StatusCode::OK, "{traffic:.40}");
        assert_eq!(reply.body, json!([]));
        assert_eq!(reply.link(), None);
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_and_link_header() {
    let fx = Fixture::new();
    let app = fx.router();
    let mut uri = format!("/api/websocket/{FEED}/frames");
    let mut pages = Vec::new();
    let mut collected = Vec::new();
    loop {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, StatusCode::OK);
        pages.push(reply.array().len());
        collected.extend(seqs(reply.array()));
        let Some(link) = reply.link() else { break };
        let last = reply.array().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            link,
            format!("</api/websocket/{FEED}/frames?after={last}&limit=100>; rel=\"next\"")
        );
        uri = link
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap()
            .to_owned();
    }
    assert_eq!(pages, [100, 100, 50]);
    assert_eq!(collected, (1..=250).collect::<Vec<_>>());

    // `after` by hand, and a page that ends exactly at the last frame: full, so it
    // links on; the next page is empty and does not.
    let reply = get(
        &app,
        &format!(
            "/api/websocket/{FEED}/frames?after={}&limit=50",
            frame_id(FEED, 200)
        ),
    )
    .await;
    assert_eq!(seqs(reply.array()), (201..=250).collect::<Vec<_>>());
    assert!(reply.link().is_some());
    let reply = get(
        &app,
        &format!(
            "/api/websocket/{FEED}/frames?after={}&limit=50",
            frame_id(FEED, 250)
        ),
    )
    .await;
    assert_eq!(reply.body, json!([]));
    assert_eq!(reply.link(), None);

    // The maximum page size takes everything at once.
    let reply = get(&app, &format!("/api/websocket/{FEED}/frames?limit=1000")).await;
    assert_eq!(reply.array().len(), 250);
    assert_eq!(reply.link(), None);
    // A cursor past a deleted or missing frame still works.
    let reply = get(
        &app,
        &format!("/api/websocket/{CHAT}/frames?after={}", frame_id(CHAT, 999)),
    )
    .await;
    assert_eq!(reply.body, json!([]));
}

#[tokio::test]
async fn filters_by_direction_and_opcode() {
    let fx = Fixture::new();
    let app = fx.router();
    let uri = |q: &str| format!("/api/websocket/{CHAT}/frames?{q}");
    let reply = get(&app, &uri("direction=client-to-server")).await;
    assert_eq!(seqs(reply.array()), [1, 4, 7]);
    assert!(
        reply
            .array()
            .iter()
            .all(|f| f["direction"] == "client-to-server")
    );
    let reply = get(&app, &uri("direction=server-to-client")).await;
    assert_eq!(seqs(reply.array()), [2, 3, 5, 6, 8]);
    for (opcode, expected) in [
        (0, vec![6]),
        (1, vec![1, 2]),
        (2, vec![5]),
        (8, vec![7, 8]),
        (9, vec![3]),
        (10, vec![4]),
    ] {
        let reply = get(&app, &uri(&format!("opcode={opcode}"))).await;
        assert_eq!(seqs(reply.array()), expected, "opcode {opcode}");
    }
    let reply = get(
        &app,
        &uri("opcode=8&direction=server-to-client&unknown=ignored"),
    )
    .await;
    assert_eq!(seqs(reply.array()), [8]);

    // The next link keeps the filters.
    let mut uri =
        format!("/api/websocket/{FEED}/frames?direction=client-to-server&limit=50&opcode=1");
    let mut collected = Vec::new();
    loop {
        let reply = get(&app, &uri).await;
        collected.extend(seqs(reply.array()));
        let Some(link) = reply.link() else { break };
        assert!(
            link.contains("&direction=client-to-server&opcode=1>"),
            "{link}"
        );
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    assert_eq!(collected, (1..=250).step_by(2).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_frame_queries_are_json_400s() {
    let fx = Fixture::new();
    let app = fx.router();
    let other_connections_frame = frame_id(CHAT, 1);
    let cases: Vec<(String, &str)> = vec![
        (
            "limit=abc".into(),
            "`limit` must be an integer from 1 to 1000",
        ),
        ("limit=0".into(), "`limit`"),
        ("limit=-1".into(), "`limit`"),
        ("limit=1e3".into(), "`limit`"),
        ("limit=1.5".into(), "`limit`"),
        ("limit=".into(), "`limit`"),
        ("limit=1001".into(), "`limit`"),
        ("limit=99999999999999999999".into(), "`limit`"),
        ("limit=10&limit=20".into(), "more than once"),
        ("direction=up".into(), "`direction`"),
        ("direction=CLIENT-TO-SERVER".into(), "`direction`"),
        (
            "opcode=3".into(),
            "`opcode` must be one of 0, 1, 2, 8, 9, 10",
        ),
        ("opcode=abc".into(), "`opcode`"),
        ("opcode=-1".into(), "`opcode`"),
        ("after=garbage".into(), "malformed cursor"),
        (format!("after={}", "1".repeat(10_000)), "malformed cursor"),
        (
            format!("after={other_connections_frame}"),
            "malformed cursor",
        ),
    ];
    for (query, needle) in cases {
        let reply = get(&app, &format!("/api/websocket/{FEED}/frames?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query:.60}");
        assert_eq!(keys(&reply.body), BTreeSet::from(["error"]));
        assert!(
            reply.error().contains(needle),
            "{query:.60}: {}",
            reply.error()
        );
        assert!(
            reply.error().len() < 300,
            "echoes too much: {}",
            reply.error()
        );
    }
}

/// The 64 MiB cut: a page of 1 MiB frames ends after the frame that crosses it,
/// with a next link even though it holds fewer than `limit` frames.
#[tokio::test]
async fn pages_stop_at_the_payload_budget() {
    let fx = Fixture::new();
    let big = TrafficId((1_709_136_005_000 << 16) | 1);
    const MIB: usize = 1 << 20;
    for chunk in (1..=66u64).collect::<Vec<_>>().chunks(8) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|&seq| frame(big, seq, false, 2, &vec![seq as u8; MIB]).into())
            .collect();
        fx.primary.write(&records).unwrap();
    }
    fx.catch_up();
    let app = fx.router();
    let reply = get(&app, &format!("/api/websocket/{big}/frames?limit=1000")).await;
    assert_eq!(
        reply.array().len(),
        65,
        "64 MiB reached, the 65th frame crosses it"
    );
    assert_eq!(
        reply.link().unwrap(),
        format!(
            "</api/websocket/{big}/frames?after={}&limit=1000>; rel=\"next\"",
            frame_id(big, 65)
        )
    );
    assert_eq!(reply.array()[64]["length"], MIB);
    let rest = get(
        &app,
        &format!(
            "/api/websocket/{big}/frames?limit=1000&after={}",
            frame_id(big, 65)
        ),
    )
    .await;
    assert_eq!(seqs(rest.array()), [66]);
    assert_eq!(rest.link(), None);
}

// ---------------------------------------------------------------------------------
// Deletion.

#[tokio::test]
async fn delete_then_count_zero_and_new_frames_still_served() {
    let fx = Fixture::new();
    let app = fx.router();
    let reply = send_with(
        &app,
        "DELETE",
        &format!("/api/websocket/{CHAT}/frames"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"success": true, "deleted": 8}));

    // Read-your-writes: no explicit catch-up here, the handler refreshed.
    let count = get(&app, &format!("/api/websocket/{CHAT}/count")).await;
    assert_eq!(count.body, json!({"count": 0}));
    for seq in 1..=8 {
        let reply = get(
            &app,
            &format!("/api/websocket/frame/{}", frame_id(CHAT, seq)),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.body, json!({"error": "Frame not found"}));
    }
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/frames"))
            .await
            .body,
        json!([])
    );
    // Other connections are untouched.
    assert_eq!(
        get(&app, &format!("/api/websocket/{FEED}/count"))
            .await
            .body,
        json!({"count": 250})
    );

    // The connection is still open in the agent: frames recorded afterwards count.
    fx.primary
        .write(&[
            frame(CHAT, 9, true, 1, b"after").into(),
            frame(CHAT, 10, false, 1, b"delete").into(),
        ])
        .unwrap();
    fx.catch_up();
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count"))
            .await
            .body,
        json!({"count": 2})
    );
    let frames = get(&app, &format!("/api/websocket/{CHAT}/frames")).await;
    assert_eq!(seqs(frames.array()), [9, 10]);
    let nine = get(&app, &format!("/api/websocket/frame/{}", frame_id(CHAT, 9))).await;
    assert_eq!(nine.status, StatusCode::OK);
    assert_eq!(
        BASE64.decode(nine.body["data"].as_str().unwrap()).unwrap(),
        b"after"
    );
    // The connection view counts what is stored now.
    let connection = get(&app, &format!("/api/websocket/{CHAT}")).await;
    assert_eq!(connection.body["frameCount"], 2);

    // Deleting again deletes only the new ones; a known entry without frames deletes 0.
    let again = send_with(
        &app,
        "DELETE",
        &format!("/api/websocket/{CHAT}/frames"),
        None,
    )
    .await;
    assert_eq!(again.body, json!({"success": true, "deleted": 2}));
    let none = send_with(
        &app,
        "DELETE",
        &format!("/api/websocket/{LOGIN}/frames"),
        None,
    )
    .await;
    assert_eq!(none.body, json!({"success": true, "deleted": 0}));
}

#[tokio::test]
async fn delete_of_unknown_traffic_is_404() {
    let fx = Fixture::new();
    let app = fx.router();
    for traffic in [
        UNKNOWN.to_string(),
        "traffic-uuid-1".into(),
        "f".repeat(10_000),
        "%FF".into(),
    ] {
        let reply = send_with(
            &app,
            "DELETE",
            &format!("/api/websocket/{traffic}/frames"),
            None,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{traffic:.40}");
        assert_eq!(reply.body, json!({"error": "Traffic not found"}));
    }
}

#[tokio::test]
async fn delete_catches_up_before_saying_not_found() {
    let fx = Fixture::new();
    let fresh = TrafficId((1_709_136_006_000 << 16) | 1);
    // Written after the secondary's last catch-up: only a refresh reveals it.
    fx.primary
        .write(&[frame(fresh, 1, true, 1, b"hi").into()])
        .unwrap();
    let reply = send_with(
        &fx.router(),
        "DELETE",
        &format!("/api/websocket/{fresh}/frames"),
        None,
    )
    .await;
    assert_eq!(reply.body, json!({"success": true, "deleted": 1}));
}

#[tokio::test]
async fn delete_reports_agent_failures_and_deletes_nothing() {
    let fx = Fixture::new();
    let down = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::AgentDown(
            "no control socket at /var/lib/frametap/agent.sock".into(),
        ))),
        ..fx.state()
    });
    let reply = send_with(
        &down,
        "DELETE",
        &format!("/api/websocket/{CHAT}/frames"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.error(),
        "frametap-agent is not running (no control socket at /var/lib/frametap/agent.sock): \
         nothing was deleted. Start the agent and retry."
    );
    fx.catch_up();
    assert_eq!(
        get(&down, &format!("/api/websocket/{CHAT}/count"))
            .await
            .body,
        json!({"count": 8})
    );

    let failing = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::Failed("disk full".into()))),
        ..fx.state()
    });
    let reply = send_with(
        &failing,
        "DELETE",
        &format!("/api/websocket/{CHAT}/frames"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.error().contains("disk full"), "{}", reply.error());
}

// ---------------------------------------------------------------------------------
// Connections and traffic.

#[tokio::test]
async fn connection_views_use_mitmproxy_close_names() {
    let fx = Fixture::new();
    let app = fx.router();
    let closed = get(&app, &format!("/api/websocket/{CHAT}")).await;
    assert_eq!(closed.status, StatusCode::OK);
    assert_eq!(
        closed.body,
        json!({
            "trafficId": CHAT.to_string(),
            "url": "wss://chat.example.com/socket",
            "open": false,
            "timestamp": CHAT.timestamp_ms() + 5,
            "timestamp_end": CHAT.timestamp_ms() + 900,
            "closed_by_client": true,
            "close_code": 1000,
            "close_reason": "bye",
            "subprotocol": "chat.v1",
            "extensions": null,
            "deflate": false,
            "clientAddress": "10.0.0.2:50000",
            "serverAddress": "93.184.216.34:443",
            "frameCount": 8,
            "framesFromClient": 3,
            "framesFromServer": 5,
            "bytesFromClient": 120,
            "bytesFromServer": 140,
            "abnormal": null,
        })
    );
    let open = get(&app, &format!("/api/websocket/{FEED}")).await;
    assert_eq!(open.body["open"], true);
    assert_eq!(open.body["frameCount"], 250);
    for key in [
        "timestamp_end",
        "closed_by_client",
        "close_code",
        "close_reason",
        "framesFromClient",
        "framesFromServer",
        "bytesFromClient",
        "bytesFromServer",
        "abnormal",
    ] {
        assert_eq!(open.body[key], Value::Null, "{key}");
    }
    assert_eq!(keys(&open.body), keys(&closed.body));
    for traffic in [
        UNKNOWN.to_string(),
        LOGIN.to_string(),
        "frame".into(),
        "x".repeat(10_000),
    ] {
        let reply = get(&app, &format!("/api/websocket/{traffic}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{traffic:.40}");
        assert_eq!(
            reply.body,
            json!({"error": "WebSocket connection not found"})
        );
    }
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn traffic_list_filters_pages_and_counts() {
    let fx = Fixture::new();
    let app = fx.router();
    let all = get(&app, "/api/traffic").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(keys(&all.body), BTreeSet::from(["count", "entries"]));
    assert_eq!(all.body["count"], 5);
    let newest_first: Vec<String> = [LOCAL, DOCS, LOGIN, FEED, CHAT]
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(ids(&all), newest_first);

    let page = get(&app, "/api/traffic?limit=2&offset=1").await;
    assert_eq!(ids(&page), newest_first[1..3]);
    assert_eq!(
        page.body["count"], 5,
        "count is of all matches, not the page"
    );
    let past_end = get(&app, "/api/traffic?offset=99").await;
    assert_eq!(past_end.body, json!({"entries": [], "count": 5}));

    for (query, expected) in [
        ("methods=post", vec![LOGIN]),
        ("methods=GET,POST", vec![LOCAL, DOCS, LOGIN, FEED, CHAT]),
        ("methods=get&protocol=ws,WSS", vec![LOCAL, FEED, CHAT]),
        ("protocol=https", vec![LOGIN]),
        ("search=EXAMPLE.COM", vec![LOGIN, FEED, CHAT]),
        ("search=wsguide", vec![DOCS]),
        ("search=%2Flogin", vec![LOGIN]),
        ("search=nothing-matches", vec![]),
        ("methods=DELETE", vec![]),
        ("search=ws&limit=1&offset=1&other=ignored", vec![DOCS]),
    ] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
        let expected: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(ids(&reply), expected, "{query}");
    }
    let counted = get(&app, "/api/traffic?search=ws&limit=1").await;
    assert_eq!(counted.body["count"], 4, "all but the login mention ws");

    for query in [
        "protocol=ftp",
        "protocol=wss,gopher",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "offset=-1",
        "offset=1e3",
        "offset=99999999999999999999",
        "methods=GET&methods=POST",
    ] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let param = query.split('=').next().unwrap();
        assert!(
            reply.error().contains(&format!("`{param}`")),
            "{query}: {}",
            reply.error()
        );
    }
}

/// The seed's pipeline:
/// `curl ".../api/traffic?methods=GET&search=ws" | jq '.entries[] | select(.protocol == "wss")'`.
#[tokio::test]
async fn seed_jq_selection_finds_the_wss_connections() {
    let fx = Fixture::new();
    let reply = get(&fx.router(), "/api/traffic?methods=GET&search=ws").await;
    let selected: Vec<&Value> = reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protocol"] == "wss")
        .collect();
    let found: Vec<&str> = selected.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(found, [FEED.to_string(), CHAT.to_string()]);
    // Step 2 of the seed: the id feeds the count endpoint.
    let count = get(&fx.router(), &format!("/api/websocket/{}/count", found[1])).await;
    assert_eq!(count.body, json!({"count": 8}));
}

#[tokio::test]
async fn traffic_entry_view_and_404() {
    let fx = Fixture::new();
    let app = fx.router();
    let reply = get(&app, &format!("/api/traffic/{CHAT}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({
            "id": CHAT.to_string(),
            "timestamp": CHAT.timestamp_ms(),
            "method": "GET",
            "url": "wss://chat.example.com/socket",
            "protocol": "wss",
            "host": "chat.example.com",
            "path": "/socket",
            "status": 101,
            "requestHeaders": {"Host": "chat.example.com", "Accept": "text/html, application/json"},
            "responseHeaders": {"Set-Cookie": "a=1; Path=/\nb=2"},
            "remoteAddress": "93.184.216.34:443",
            "tlsVersion": "TLSv1.3",
            "duration": 12.5,
            "error": null,
            "clientAddress": "10.0.0.2:50000",
            "pid": 4242,
            "process": "chat-app",
            "sni": "chat.example.com",
        })
    );
    // The list shows the same view.
    let list = get(&app, "/api/traffic?protocol=wss&search=chat").await;
    assert_eq!(list.body["entries"][0], reply.body);
    let http = get(&app, &format!("/api/traffic/{DOCS}")).await;
    assert_eq!(http.body["tlsVersion"], Value::Null);
    for id in [
        UNKNOWN.to_string(),
        "traffic-uuid-1".into(),
        "0".repeat(10_000),
        "%FF".into(),
    ] {
        let reply = get(&app, &format!("/api/traffic/{id}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id:.40}");
        assert_eq!(reply.body, json!({"error": "Traffic entry not found"}));
    }
}

// ---------------------------------------------------------------------------------
// Health, availability, authentication, routing.

#[tokio::test]
async fn health_reports_the_health_source() {
    let fx = Fixture::new();
    let reply = get(&fx.router(), "/api/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({
            "status": "degraded",
            "version": "0.1.0",
            "agent": {"up": false, "pid": null, "error": "control socket /var/lib/frametap/agent.sock: connection refused"},
            "store": {"open": true, "lastCatchUpMsAgo": 3, "sequence": 42, "agentSequence": null, "sequenceLag": null, "error": null},
            "events": {"connected": false, "received": 7, "dropped": 0},
        })
    );
}

#[tokio::test]
async fn unreadable_store_is_503_everywhere() {
    let fx = Fixture::new();
    let app = router(AppState {
        store: Arc::new(NoStore),
        ..fx.state()
    });
    let expected = "capture store not readable yet: no frametap data in /var/lib/frametap: start \
                    frametap-agent first";
    for (method, uri) in [
        ("GET", format!("/api/websocket/{CHAT}/frames")),
        ("GET", format!("/api/websocket/frame/{}", frame_id(CHAT, 1))),
        ("GET", format!("/api/websocket/{CHAT}/count")),
        ("GET", format!("/api/websocket/{CHAT}")),
        ("DELETE", format!("/api/websocket/{CHAT}/frames")),
        ("GET", "/api/traffic".into()),
        ("GET", format!("/api/traffic/{CHAT}")),
    ] {
        let reply = send_with(&app, method, &uri, None).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(reply.body, json!({ "error": expected }));
    }
    // Health still answers (it reports the store problem itself).
    assert_eq!(get(&app, "/api/health").await.status, StatusCode::OK);
}

#[tokio::test]
async fn token_is_required_in_header_or_query() {
    let fx = Fixture::new();
    let app = router(AppState {
        auth: AuthConfig {
            token: Some(TOKEN.into()),
        },
        ..fx.state()
    });
    let routes = [
        format!("/api/websocket/{CHAT}/frames"),
        format!("/api/websocket/frame/{}", frame_id(CHAT, 1)),
        format!("/api/websocket/{CHAT}/count"),
        format!("/api/websocket/{CHAT}"),
        "/api/traffic".into(),
        format!("/api/traffic/{CHAT}"),
        "/api/health".into(),
        "/api/openapi.json".into(),
    ];
    for uri in &routes {
        for authorization in [None, Some("Bearer wrong"), Some(&*format!("Basic {TOKEN}"))] {
            let reply = send_with(&app, "GET", uri, authorization).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{uri} {authorization:?}"
            );
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert!(
                reply.error().contains("Authorization: Bearer <token>"),
                "{}",
                reply.error()
            );
            assert!(
                reply.error().contains("<data-dir>/api-token"),
                "{}",
                reply.error()
            );
        }
        let wrong_query = format!("{uri}?token=wrong");
        assert_eq!(
            get(&app, &wrong_query).await.status,
            StatusCode::UNAUTHORIZED
        );

        let bearer = send_with(&app, "GET", uri, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(bearer.status, StatusCode::OK, "{uri}");
        let query = get(&app, &format!("{uri}?token={TOKEN}")).await;
        assert_eq!(query.status, StatusCode::OK, "{uri}");
    }
    let missing = get(&app, "/api/health").await;
    assert!(
        missing.error().starts_with("missing API token"),
        "{}",
        missing.error()
    );
    let wrong = send_with(&app, "GET", "/api/health", Some("Bearer nope")).await;
    assert!(
        wrong.error().starts_with("wrong API token"),
        "{}",
        wrong.error()
    );
    // Deletion too; nothing is deleted without the token.
    let delete = format!("/api/websocket/{CHAT}/frames");
    assert_eq!(
        send_with(&app, "DELETE", &delete, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count?token={TOKEN}"))
            .await
            .body,
        json!({"count": 8})
    );
    // The token does not leak into the next link.
    let page = get(
        &app,
        &format!("/api/websocket/{FEED}/frames?token={TOKEN}&limit=10"),
    )
    .await;
    assert!(!page.link().unwrap().contains(TOKEN));

    // Wrong methods are checked after the token, so they reveal nothing either.
    assert_eq!(
        send_with(&app, "POST", "/api/traffic", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let post = send_with(
        &app,
        "POST",
        "/api/traffic",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    // Unknown paths answer 404 without a token: there is nothing behind them to protect.
    assert_eq!(get(&app, "/api/nope").await.status, StatusCode::NOT_FOUND);

    // Authentication disabled explicitly: no token needed.
    let open = fx.router();
    for uri in &routes {
        assert_eq!(get(&open, uri).await.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let fx = Fixture::new();
    let app = fx.router();
    for uri in [
        "/",
        "/nope",
        "/api",
        "/api/websocket",
        "/api/websocket/a/b/c",
        "/api/traffic/a/b",
        "/api/websocket/frame/",
    ] {
        let reply = get(&app, &format!("{uri}?token=secret")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            reply.body,
            json!({ "error": format!("No such endpoint: GET {uri}") })
        );
    }
    let long = format!("/{}", "x".repeat(10_000));
    let reply = get(&app, &long).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.error().len() < 200);

    for (method, uri) in [
        ("POST", "/api/traffic".to_owned()),
        ("PUT", format!("/api/websocket/{CHAT}/frames")),
        ("DELETE", format!("/api/websocket/{CHAT}")),
        ("POST", "/api/health".into()),
        (
            "PATCH",
            format!("/api/websocket/frame/{}", frame_id(CHAT, 1)),
        ),
    ] {
        let reply = send_with(&app, method, &uri, None).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert!(
            reply
                .error()
                .starts_with(&format!("Method {method} not allowed")),
            "{}",
            reply.error()
        );
        assert!(reply.headers.contains_key(header::ALLOW), "{method} {uri}");
    }
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count"))
            .await
            .body,
        json!({"count": 8})
    );
}

// ---------------------------------------------------------------------------------
// OpenAPI: the document matches the router and the real responses.

/// Every route the router serves: (method, OpenAPI path).
const ROUTES: [(&str, &str); 9] = [
    ("get", "/api/websocket/{trafficId}/frames"),
    ("delete", "/api/websocket/{trafficId}/frames"),
    ("get", "/api/websocket/frame/{id}"),
    ("get", "/api/websocket/{trafficId}/count"),
    ("get", "/api/websocket/{trafficId}"),
    ("get", "/api/traffic"),
    ("get", "/api/traffic/{id}"),
    ("get", "/api/health"),
    ("get", "/api/openapi.json"),
];

const DOC_URI: &str = "https://frametap.invalid/openapi.json";

/// A validator for the body of `status` responses of `method path`, as the document
/// declares it (refs resolved against the whole document).
fn response_validator(doc: &Value, method: &str, path: &str, status: u16) -> jsonschema::Validator {
    let declared = &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"];
    assert!(
        !declared.is_null(),
        "{method} {path} does not document a {status} JSON body"
    );
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        path.replace('~', "~0").replace('/', "~1")
    );
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let registry = jsonschema::Registry::new()
        .add(DOC_URI, doc.clone())
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&json!({ "$ref": format!("{DOC_URI}#{fragment}") }))
        .unwrap_or_else(|e| panic!("schema of {method} {path} {status}: {e}"))
}

#[derive(Clone, Copy, Debug)]
enum Setup {
    Normal,
    WithToken,
    NoStore,
    AgentDown,
    AgentFails,
}

#[tokio::test]
async fn openapi_document_matches_routes_and_responses() {
    let fx = Fixture::new();
    let app_for = |setup: Setup| -> Router {
        let state = fx.state();
        router(match setup {
            Setup::Normal => state,
            Setup::WithToken => AppState {
                auth: AuthConfig {
                    token: Some(TOKEN.into()),
                },
                ..state
            },
            Setup::NoStore => AppState {
                store: Arc::new(NoStore),
                ..state
            },
            Setup::AgentDown => AppState {
                agent: Arc::new(BrokenAgent(ControlError::AgentDown(
                    "connection refused".into(),
                ))),
                ..state
            },
            Setup::AgentFails => AppState {
                agent: Arc::new(BrokenAgent(ControlError::Failed("disk full".into()))),
                ..state
            },
        })
    };

    let doc = get(&app_for(Setup::Normal), "/api/openapi.json").await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerToken"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["queryToken"]["name"],
        "token"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["queryToken"]["in"],
        "query"
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    [
                        "get", "put", "post", "delete", "patch", "head", "options", "trace",
                    ]
                    .contains(&k.as_str())
                })
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    for schema in [
        "Frame",
        "TrafficEntry",
        "TrafficPage",
        "WebSocketConnection",
        "FrameCount",
        "DeleteResult",
        "ErrorBody",
        "Health",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    let frames_200 = &doc["paths"]["/api/websocket/{trafficId}/frames"]["get"]["responses"]["200"];
    assert!(frames_200["headers"]["Link"].is_object());

    // Real requests for every route and documented status: (setup, method, uri, path, status).
    let t = CHAT.to_string();
    let frames = format!("/api/websocket/{t}/frames");
    let cases: Vec<(Setup, &str, String, &str, u16)> = vec![
        (Setup::Normal, "get", frames.clone(), ROUTES[0].1, 200),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{UNKNOWN}/frames"),
            ROUTES[0].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("{frames}?limit=0"),
            ROUTES[0].1,
            400,
        ),
        (Setup::WithToken, "get", frames.clone(), ROUTES[0].1, 401),
        (Setup::NoStore, "get", frames.clone(), ROUTES[0].1, 503),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/frame/{}", frame_id(CHAT, 7)),
            ROUTES[2].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            "/api/websocket/frame/nope".into(),
            ROUTES[2].1,
            404,
        ),
        (
            Setup::WithToken,
            "get",
            "/api/websocket/frame/nope".into(),
            ROUTES[2].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/websocket/frame/{}", frame_id(CHAT, 7)),
            ROUTES[2].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{t}/count"),
            ROUTES[3].1,
            200,
        ),
        (
            Setup::WithToken,
            "get",
            format!("/api/websocket/{t}/count"),
            ROUTES[3].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/websocket/{t}/count"),
            ROUTES[3].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{t}"),
            ROUTES[4].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{FEED}"),
            ROUTES[4].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{UNKNOWN}"),
            ROUTES[4].1,
            404,
        ),
        (
            Setup::WithToken,
            "get",
            format!("/api/websocket/{t}"),
            ROUTES[4].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/websocket/{t}"),
            ROUTES[4].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            "/api/traffic".into(),
            ROUTES[5].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            "/api/traffic?protocol=ftp".into(),
            ROUTES[5].1,
            400,
        ),
        (
            Setup::WithToken,
            "get",
            "/api/traffic".into(),
            ROUTES[5].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            "/api/traffic".into(),
            ROUTES[5].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/traffic/{t}"),
            ROUTES[6].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/traffic/{DOCS}"),
            ROUTES[6].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/traffic/{UNKNOWN}"),
            ROUTES[6].1,
            404,
        ),
        (
            Setup::WithToken,
            "get",
            format!("/api/traffic/{t}"),
            ROUTES[6].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/traffic/{t}"),
            ROUTES[6].1,
            503,
        ),
        (Setup::Normal, "get", "/api/health".into(), ROUTES[7].1, 200),
        (
            Setup::WithToken,
            "get",
            "/api/health".into(),
            ROUTES[7].1,
            401,
        ),
        (
            Setup::Normal,
            "get",
            "/api/openapi.json".into(),
            ROUTES[8].1,
            200,
        ),
        (
            Setup::WithToken,
            "get",
            "/api/openapi.json".into(),
            ROUTES[8].1,
            401,
        ),
        (
            Setup::Normal,
            "delete",
            format!("/api/websocket/{UNKNOWN}/frames"),
            ROUTES[1].1,
            404,
        ),
        (Setup::WithToken, "delete", frames.clone(), ROUTES[1].1, 401),
        (Setup::NoStore, "delete", frames.clone(), ROUTES[1].1, 503),
        (Setup::AgentDown, "delete", frames.clone(), ROUTES[1].1, 503),
        (
            Setup::AgentFails,
            "delete",
            frames.clone(),
            ROUTES[1].1,
            502,
        ),
        // Last: it changes the store.
        (Setup::Normal, "delete", frames.clone(), ROUTES[1].1, 200),
    ];
    let mut exercised = BTreeSet::new();
    for (setup, method, uri, path, status) in &cases {
        let reply = send_with(&app_for(*setup), &method.to_uppercase(), uri, None).await;
        assert_eq!(
            reply.status.as_u16(),
            *status,
            "{setup:?} {method} {uri}: {}",
            reply.body
        );
        let validator = response_validator(&doc, method, path, *status);
        if let Err(error) = validator.validate(&reply.body) {
            panic!(
                "{method} {uri} -> {status} does not match the document: {error}\n{}",
                reply.body
            );
        }
        exercised.insert((method.to_string(), path.to_string()));
    }
    assert_eq!(exercised, served, "every route is exercised");

    // The validators have teeth: wrong shapes are rejected.
    let frame_schema = response_validator(&doc, "get", "/api/websocket/frame/{id}", 200);
    let good = get(
        &app_for(Setup::Normal),
        &format!("/api/websocket/frame/{}", frame_id(FEED, 1)),
    )
    .await
    .body;
    assert!(frame_schema.is_valid(&good));
    for (key, bad) in [
        ("data", json!(5)),
        ("direction", json!("up")),
        ("isBinary", json!("no")),
        ("id", json!("frame-1")),
    ] {
        let mut broken = good.clone();
        broken[key] = bad;
        assert!(!frame_schema.is_valid(&broken), "{key} accepted");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("data");
    assert!(
        !frame_schema.is_valid(&missing),
        "a missing `data` accepted"
    );

    // Documented paths serve nothing undocumented: other methods are 405.
    let normal = app_for(Setup::Normal);
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{trafficId}", &t).replace("{id}", &t);
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                let reply = send_with(&normal, &method.to_uppercase(), &uri, None).await;
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}"
                );
            }
        }
    }
}
