//! Router tests over a real store: records written by a primary, served from a
//! secondary that catches up, exactly as the API process runs next to the agent.
//! Every response is parsed as JSON (a plain-text rejection fails the test), and the
//! OpenAPI test validates real bodies against the schemas the document declares.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{
    BodyChunk, BodyInfo, BodyOf, FrameRecord, Record, Store, StoreOptions,
    TrafficEntry as StoredEntry, TrafficFilter, TrafficId, WsClose, WsOpen,
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use frametap_control::{DeleteTarget, InjectDirection, Refusal, Rule, RuleSnapshot};

use crate::events::{Event, LiveRelay};
use crate::state::{
    AgentControl, AgentFuture, AgentHealth, AppState, ControlError, DeleteFramesFuture,
    EventsHealth, Health, HealthSource, HealthStatus, OutageHealth, RecordingHealth,
    RecordingState, StoreHealth, StoreSource, TrafficDeletion,
};
use crate::views::WebSocketMessage;
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

/// A request the fake agent received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AgentCall {
    DeleteFrames(TrafficId),
    DeleteTraffic(DeleteTarget),
    ListRules,
    AddRule(Rule),
    DeleteRule(String),
    Send {
        traffic: TrafficId,
        direction: InjectDirection,
        payload: Vec<u8>,
        is_binary: bool,
    },
}

/// The one regex the fake agent can't compile.
const BAD_REGEX: &str = "(unclosed";

/// Acts as the real agent does on request: deletes and injects through the primary,
/// keeps rules; records every call.
struct Agent {
    primary: Store,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<AgentCall>>,
}

impl Agent {
    fn new(primary: Store) -> Agent {
        Agent {
            primary,
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, call: AgentCall) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<AgentCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Records the injected frame as the agent would, and returns its seq.
    fn inject(
        &self,
        traffic: TrafficId,
        direction: InjectDirection,
        payload: &[u8],
        is_binary: bool,
    ) -> Result<u64, ControlError> {
        let refuse = |reason, message: &str| Err(ControlError::Refused(reason, message.into()));
        match self.primary.ws_connection(traffic).unwrap() {
            None => return refuse(Refusal::NotFound, "no such connection"),
            Some(c) if !c.open => return refuse(Refusal::Conflict, "connection closed"),
            Some(_) => {}
        }
        let last = self
            .primary
            .frames(traffic, None, usize::MAX, &Default::default())
            .unwrap()
            .last()
            .map_or(0, |f| f.seq);
        let from_client = direction == InjectDirection::ToServer;
        let mut injected = frame(
            traffic,
            last + 1,
            from_client,
            if is_binary { 2 } else { 1 },
            payload,
        );
        injected.injected = true;
        injected.masked = false;
        self.primary.write(&[injected.into()]).unwrap();
        Ok(last + 1)
    }
}

impl AgentControl for Agent {
    fn delete_frames(&self, traffic: TrafficId) -> DeleteFramesFuture<'_> {
        self.record(AgentCall::DeleteFrames(traffic));
        Box::pin(async move {
            self.primary
                .delete_frames(traffic)
                .map_err(|e| ControlError::Failed(format!("{e:#}")))
        })
    }

    fn delete_traffic(&self, target: DeleteTarget) -> AgentFuture<'_, TrafficDeletion> {
        self.record(AgentCall::DeleteTraffic(target.clone()));
        Box::pin(async move {
            let failed = |e: anyhow::Error| ControlError::Failed(format!("{e:#}"));
            let stats = match &target {
                DeleteTarget::One { id } => {
                    let id: TrafficId = id.parse().map_err(|e| failed(anyhow::Error::new(e)))?;
                    let stats = self.primary.delete_traffic(&[id]).map_err(failed)?;
                    if stats.traffic == 0 {
                        return Err(ControlError::Refused(
                            Refusal::NotFound,
                            "Traffic entry not found".into(),
                        ));
                    }
                    stats
                }
                DeleteTarget::Matching { filter } => self
                    .primary
                    .delete_traffic_matching(filter)
                    .map_err(failed)?,
                DeleteTarget::All => self
                    .primary
                    .delete_traffic_matching(&TrafficFilter::default())
                    .map_err(failed)?,
            };
            Ok(TrafficDeletion {
                entries: stats.traffic,
                frames: stats.frames,
            })
        })
    }

    fn list_rules(&self) -> AgentFuture<'_, Vec<Rule>> {
        self.record(AgentCall::ListRules);
        Box::pin(async move { Ok(self.rules.lock().unwrap().clone()) })
    }

    fn add_rule(&self, rule: Rule) -> AgentFuture<'_, Rule> {
        self.record(AgentCall::AddRule(rule.clone()));
        Box::pin(async move {
            let mut rules = self.rules.lock().unwrap();
            if rule.regex.as_deref() == Some(BAD_REGEX) {
                return Err(ControlError::Refused(
                    Refusal::BadRequest,
                    "regex parse error: unclosed group".into(),
                ));
            }
            if rules.iter().any(|r| r.id.is_some() && r.id == rule.id) {
                return Err(ControlError::Refused(
                    Refusal::Conflict,
                    "a rule with this id exists".into(),
                ));
            }
            let added = Rule {
                id: rule
                    .id
                    .clone()
                    .or(Some(format!("rule-{}", rules.len() + 1))),
                ..rule
            };
            rules.push(added.clone());
            Ok(added)
        })
    }

    fn delete_rule(&self, id: String) -> AgentFuture<'_, ()> {
        self.record(AgentCall::DeleteRule(id.clone()));
        Box::pin(async move {
            let mut rules = self.rules.lock().unwrap();
            let before = rules.len();
            rules.retain(|r| r.id.as_deref() != Some(&id));
            if rules.len() == before {
                return Err(ControlError::Refused(
                    Refusal::NotFound,
                    format!("no rule with id {id:?}"),
                ));
            }
            Ok(())
        })
    }

    fn send(
        &self,
        traffic: TrafficId,
        direction: InjectDirection,
        payload: Vec<u8>,
        is_binary: bool,
    ) -> AgentFuture<'_, u64> {
        self.record(AgentCall::Send {
            traffic,
            direction,
            payload: payload.clone(),
            is_binary,
        });
        Box::pin(async move { self.inject(traffic, direction, &payload, is_binary) })
    }
}

/// An agent that answers every request with a `ControlError`.
struct BrokenAgent(ControlError);

impl BrokenAgent {
    fn fail<T>(&self) -> AgentFuture<'_, T> {
        let error = self.0.clone();
        Box::pin(async move { Err(error) })
    }
}

impl AgentControl for BrokenAgent {
    fn delete_frames(&self, _traffic: TrafficId) -> DeleteFramesFuture<'_> {
        self.fail()
    }
    fn delete_traffic(&self, _target: DeleteTarget) -> AgentFuture<'_, TrafficDeletion> {
        self.fail()
    }
    fn list_rules(&self) -> AgentFuture<'_, Vec<Rule>> {
        self.fail()
    }
    fn add_rule(&self, _rule: Rule) -> AgentFuture<'_, Rule> {
        self.fail()
    }
    fn delete_rule(&self, _id: String) -> AgentFuture<'_, ()> {
        self.fail()
    }
    fn send(
        &self,
        _traffic: TrafficId,
        _direction: InjectDirection,
        _payload: Vec<u8>,
        _is_binary: bool,
    ) -> AgentFuture<'_, u64> {
        self.fail()
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
            namespaces: None,
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
            dropped: 3,
            records_received: 7,
            records_dropped: 1,
            events_emitted: 9,
            deliveries_dropped: 2,
        },
        recording: RecordingHealth {
            state: RecordingState::Degraded,
            since: Some(1_764_000_000_000),
            error: Some("IO error: No space left on device".into()),
            records_lost: 120,
            records_written: 5_000,
            records_failed: 130,
            records_dropped: 0,
            last_outage: Some(OutageHealth {
                stopped_at: 1_763_000_000_000,
                resumed_at: 1_763_000_004_000,
                records_lost: 10,
                error: "IO error: No space left on device".into(),
            }),
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
        "modified",
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
        ("after=".into(), "malformed cursor"),
        (format!("after={}", "1".repeat(10_000)), "malformed cursor"),
        (format!("after={FEED}-000000001"), "malformed cursor"),
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
    // A well-formed cursor of another connection names no page of this one: 404, as
    // the document (which cannot relate `after` to the path) allows it.
    for endpoint in ["frames", "messages", "frames.ndjson"] {
        let reply = get(
            &app,
            &format!("/api/websocket/{FEED}/{endpoint}?after={other_connections_frame}"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{endpoint}");
        assert!(
            reply
                .error()
                .contains(&format!("connection {FEED} has no page after it")),
            "{endpoint}: {}",
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
            "timestampEnd": CHAT.timestamp_ms() + 900,
            "closedByClient": true,
            "closeCode": 1000,
            "closeReason": "bye",
            "subprotocol": "chat.v1",
            "extensions": null,
            "deflate": false,
            "clientAddress": "10.0.0.2:50000",
            "serverAddress": "93.184.216.34:443",
            "frameCount": 8,
            "storedFrameCount": 8,
            "recordedFrameCount": 8,
            "deletedFrameCount": 0,
            "framesFromClient": 3,
            "framesFromServer": 5,
            "framesFromFrametap": 0,
            "bytesFromClient": 120,
            "bytesFromServer": 140,
            "abnormal": null,
        })
    );
    let open = get(&app, &format!("/api/websocket/{FEED}")).await;
    assert_eq!(open.body["open"], true);
    assert_eq!(open.body["frameCount"], 250);
    assert_eq!(open.body["storedFrameCount"], 250);
    assert_eq!(open.body["recordedFrameCount"], 250);
    for key in [
        "timestamp_end",
        "closed_by_client",
        "close_code",
        "close_reason",
        "timestampEnd",
        "closedByClient",
        "closeCode",
        "closeReason",
        "framesFromClient",
        "framesFromServer",
        "framesFromFrametap",
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
            "cgroup": null,
            "netns": null,
            "containerId": null,
            "containerName": null,
            "sni": "chat.example.com",
            "notIntercepted": null,
            "alpnOffered": [],
            "alpnSelected": null,
            "bytesFromClient": null,
            "bytesFromServer": null,
            "requestBodySize": 0,
            "requestBodyTruncated": false,
            "responseBodySize": 0,
            "responseBodyTruncated": false,
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

#[tokio::test]
async fn connections_relayed_untouched_are_listed_and_completed_at_their_end() {
    let fx = Fixture::new();
    write_tls_outcomes(&fx);
    let app = fx.router();
    let open = get(&app, &format!("/api/traffic/{TUNNEL}")).await;
    assert_eq!(open.status, StatusCode::OK);
    assert_eq!(open.body["protocol"], "tls");
    assert_eq!(open.body["notIntercepted"], "server selected h2");
    assert_eq!(open.body["alpnOffered"], json!(["h2", "http/1.1"]));
    assert_eq!(open.body["alpnSelected"], "h2");
    assert_eq!(open.body["status"], Value::Null);
    assert_eq!(open.body["bytesFromClient"], Value::Null, "still open");
    assert_eq!(open.body["duration"], Value::Null);

    let listed = get(&app, "/api/traffic?protocol=tls,tcp").await;
    assert_eq!(ids(&listed), [TUNNEL.to_string()]);
    let listed = get(&app, "/api/traffic?search=h2.example").await;
    assert_eq!(ids(&listed), [TUNNEL.to_string()]);

    fx.primary
        .write(&[Record::TunnelEnd(frametap_store::TunnelEnd {
            traffic: TUNNEL,
            timestamp_ms: TUNNEL.timestamp_ms() + 80,
            duration_ms: 80.5,
            bytes_from_client: 900,
            bytes_from_server: 4200,
            end: "closed".into(),
            error: None,
        })])
        .unwrap();
    fx.catch_up();
    for view in [
        get(&app, &format!("/api/traffic/{TUNNEL}")).await.body,
        get(&app, "/api/traffic?protocol=tls").await.body["entries"][0].clone(),
    ] {
        assert_eq!(view["bytesFromClient"], 900);
        assert_eq!(view["bytesFromServer"], 4200);
        assert_eq!(view["duration"], 80.5);
    }
}

#[tokio::test]
async fn har_leaves_out_entries_without_an_http_exchange() {
    let fx = Fixture::new();
    write_tls_outcomes(&fx);
    let app = fx.router();
    let from = TUNNEL.timestamp_ms();
    let har = get_har(
        &app,
        &format!("/api/har?from={from}"),
        &format!("frametap-{from}-latest.har"),
    )
    .await;
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the 502 has a request: {entries:#?}");
    let gateway = &entries[0];
    assert_eq!(
        gateway["request"]["url"],
        "https://private.example.com/chat"
    );
    assert_eq!(gateway["response"]["status"], 502);
    assert_eq!(gateway["response"]["statusText"], "Bad Gateway");
    assert!(
        gateway["comment"]
            .as_str()
            .unwrap()
            .contains("upstream TLS failed")
    );
    let comment = har["log"]["comment"].as_str().unwrap();
    assert!(
        comment.contains("2 entries in the range without an HTTP exchange"),
        "{comment}"
    );
    for (id, why) in [
        (TUNNEL, "relayed untouched: server selected h2"),
        (REFUSED, "does not trust the frametap CA"),
    ] {
        let har = get_har(
            &app,
            &format!("/api/har?trafficId={id}"),
            &format!("frametap-{id}.har"),
        )
        .await;
        assert_eq!(har["log"]["entries"], json!([]));
        let comment = har["log"]["comment"].as_str().unwrap();
        assert!(
            comment.contains(why) && comment.contains("no HTTP exchange"),
            "{comment}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Traffic filters, deletion and bodies.

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

fn header<'a>(reply: &'a RawReply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn traffic_entries_carry_body_sizes() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let upload = get(&app, &format!("/api/traffic/{UPLOAD}")).await.body;
    assert_eq!(upload["requestBodySize"], FORM.len());
    assert_eq!(upload["requestBodyTruncated"], false);
    assert_eq!(upload["responseBodySize"], gzip(JSON_REPLY).len());
    let download = get(&app, &format!("/api/traffic/{DOWNLOAD}")).await.body;
    assert_eq!(download["responseBodySize"], 100_000);
    assert_eq!(download["responseBodyTruncated"], true);
    let old = get(&app, &format!("/api/traffic/{OLD}")).await.body;
    assert_eq!(old["requestBodySize"], Value::Null);
    assert_eq!(old["responseBodySize"], Value::Null);
    assert_eq!(old["responseBodyTruncated"], false);
}

#[tokio::test]
async fn bodies_are_served_decoded_or_raw_with_what_was_recorded() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let get_raw = |uri: String| {
        let app = app.clone();
        async move { send_raw(&app, "GET", &uri, None, None).await }
    };

    let form = get_raw(format!("/api/traffic/{UPLOAD}/request/body")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(form.bytes, FORM);
    assert_eq!(
        form.content_type(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(header(&form, "x-frametap-body-size"), Some("27"));
    assert_eq!(header(&form, "x-frametap-stored-size"), Some("27"));
    assert_eq!(header(&form, "x-frametap-truncated"), Some("false"));
    assert_eq!(header(&form, "x-frametap-decoded"), Some("false"));
    assert_eq!(header(&form, "x-frametap-content-encoding"), None);
    assert_eq!(header(&form, "content-length"), Some("27"));

    // Decoded by default, as a browser would; as sent with raw=true.
    let reply = get_raw(format!("/api/traffic/{UPLOAD}/response/body")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.bytes, JSON_REPLY);
    assert_eq!(reply.content_type(), Some("application/json"));
    assert_eq!(header(&reply, "x-frametap-decoded"), Some("true"));
    assert_eq!(header(&reply, "x-frametap-content-encoding"), Some("gzip"));
    assert_eq!(header(&reply, "content-encoding"), None);
    let raw = get_raw(format!("/api/traffic/{UPLOAD}/response/body?raw=true")).await;
    assert_eq!(raw.bytes, gzip(JSON_REPLY));
    assert_eq!(header(&raw, "x-frametap-decoded"), Some("false"));
    assert_eq!(
        header(&raw, "x-frametap-body-size"),
        Some(gzip(JSON_REPLY).len().to_string().as_str())
    );

    // Only a prefix stored: what there is, and the true size.
    let cut = get_raw(format!("/api/traffic/{DOWNLOAD}/response/body")).await;
    assert_eq!(cut.bytes.len(), 1000);
    assert_eq!(cut.bytes[..3], [0, 7, 14]);
    assert_eq!(header(&cut, "x-frametap-body-size"), Some("100000"));
    assert_eq!(header(&cut, "x-frametap-stored-size"), Some("1000"));
    assert_eq!(header(&cut, "x-frametap-truncated"), Some("true"));
    assert_eq!(cut.content_type(), Some("application/octet-stream"));
    // A body with no bytes is an empty 200.
    let empty = get_raw(format!("/api/traffic/{CHAT}/response/body")).await;
    assert_eq!((empty.status, empty.bytes.len()), (StatusCode::OK, 0));

    // No body recorded, no entry, bad parameters: JSON errors.
    for (uri, status, needle) in [
        (
            format!("/api/traffic/{OLD}/response/body"),
            StatusCode::NOT_FOUND,
            "recorded before frametap recorded bodies",
        ),
        (
            format!("/api/traffic/{FAILED}/response/body"),
            StatusCode::NOT_FOUND,
            "no response arrived",
        ),
        (
            format!("/api/traffic/{UNKNOWN}/request/body"),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
        (
            "/api/traffic/garbage/request/body".into(),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
        (
            format!("/api/traffic/{UPLOAD}/request/body?raw=maybe"),
            StatusCode::BAD_REQUEST,
            "`raw`",
        ),
    ] {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, status, "{uri}");
        assert!(reply.error().contains(needle), "{uri}: {}", reply.error());
    }
    let no_store = router(AppState {
        store: Arc::new(NoStore),
        ..fx.state()
    });
    let reply = get(&no_store, &format!("/api/traffic/{UPLOAD}/request/body")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_body_that_is_not_what_its_header_claims_is_served_as_sent() {
    let fx = Fixture::new();
    let mut liar = entry(UPLOAD, "GET", "https://api.example.com/x", Some(200));
    liar.response_headers = vec![("Content-Encoding".into(), "gzip".into())];
    liar.response_body = Some(BodyInfo {
        size: 11,
        stored: 11,
    });
    fx.primary
        .write(&[
            chunk(UPLOAD, BodyOf::Response, 0, b"not gzipped"),
            liar.into(),
        ])
        .unwrap();
    fx.catch_up();
    let reply = send_raw(
        &fx.router(),
        "GET",
        &format!("/api/traffic/{UPLOAD}/response/body"),
        None,
        None,
    )
    .await;
    assert_eq!(reply.bytes, b"not gzipped");
    assert_eq!(header(&reply, "x-frametap-decoded"), Some("false"));
}

#[tokio::test]
async fn har_carries_the_recorded_bodies() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let har = get(&app, &format!("/api/har?trafficId={UPLOAD}"))
        .await
        .body;
    assert!(har_validator().is_valid(&har), "{har}");
    let e = &har["log"]["entries"][0];
    assert_eq!(
        e["request"]["postData"],
        json!({"mimeType": "application/x-www-form-urlencoded", "text": "user=alice&password=hunter2"})
    );
    assert_eq!(e["request"]["bodySize"], FORM.len());
    let content = &e["response"]["content"];
    assert_eq!(content["text"], std::str::from_utf8(JSON_REPLY).unwrap());
    assert_eq!(content["mimeType"], "application/json");
    assert_eq!(content["size"], JSON_REPLY.len());
    let sent = gzip(JSON_REPLY).len() as i64;
    assert_eq!(e["response"]["bodySize"], sent);
    assert_eq!(content["compression"], JSON_REPLY.len() as i64 - sent);
    assert_eq!(content.get("encoding"), None);
    assert_eq!(e.get("comment"), None);

    // Binary content is base64, and a stored prefix says so.
    let har = get(&app, &format!("/api/har?trafficId={DOWNLOAD}"))
        .await
        .body;
    let e = &har["log"]["entries"][0];
    let content = &e["response"]["content"];
    assert_eq!(content["encoding"], "base64");
    let binary: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(content["text"], BASE64.encode(&binary));
    assert_eq!(e["response"]["bodySize"], 100_000);
    assert!(
        e["comment"]
            .as_str()
            .unwrap()
            .contains("response body's text is only its beginning (1000 of 100000 bytes"),
        "{e}"
    );
    assert_eq!(e["request"].get("postData"), None, "a GET sends no body");
    // Entries recorded before bodies: no text, sizes as before.
    let har = get(&app, &format!("/api/har?trafficId={OLD}")).await.body;
    let e = &har["log"]["entries"][0];
    assert_eq!(e["response"]["content"].get("text"), None);
    assert_eq!(e["request"]["bodySize"], -1);
}

#[tokio::test]
async fn traffic_is_filtered_by_process_status_and_error() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    for (query, expected) in [
        ("pid=7", vec![UPLOAD]),
        ("pid=7,8", vec![DOWNLOAD, UPLOAD]),
        ("process=CURL", vec![UPLOAD]),
        ("process=wget,curl&status=2xx", vec![DOWNLOAD, UPLOAD]),
        ("status=404", vec![OLD]),
        ("status=4xx,201", vec![OLD, UPLOAD]),
        ("status=101", vec![LOCAL, FEED, CHAT]),
        ("status=5xx", vec![]),
        ("error=true", vec![FAILED]),
        ("errorContains=CERTIFICATE", vec![FAILED]),
        ("errorContains=reset", vec![]),
        ("error=false&protocol=https", vec![UPLOAD, LOGIN]),
        ("pid=4242&methods=post", vec![LOGIN]),
    ] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        let expected: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(ids(&reply), expected, "{query}");
        assert_eq!(reply.body["count"], expected.len(), "{query}");
    }
    for query in ["pid=x", "status=700", "status=abc", "error=yes", "pid=0"] {
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

#[tokio::test]
async fn traffic_is_deleted_one_by_filter_and_all_through_the_agent() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let delete = |uri: String| {
        let app = app.clone();
        async move { send_with(&app, "DELETE", &uri, None).await }
    };
    // Deleting everything is never what an empty query means.
    for (uri, needle) in [
        ("/api/traffic", "say what to delete"),
        ("/api/traffic?all=true&status=5xx", "not both"),
        ("/api/traffic?status=200&limit=1", "`limit`"),
        ("/api/traffic?status=200&offset=1", "`offset`"),
        ("/api/traffic?all=yes", "`all`"),
        ("/api/traffic?all=false", "say what to delete"),
        ("/api/traffic?status=6xx", "`status`"),
    ] {
        let reply = delete(uri.into()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(reply.error().contains(needle), "{uri}: {}", reply.error());
    }
    assert!(fx.agent.calls().is_empty(), "refused by the API itself");
    for uri in [
        format!("/api/traffic/{UNKNOWN}"),
        "/api/traffic/garbage".into(),
    ] {
        let reply = delete(uri.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.body, json!({"error": "Traffic entry not found"}));
    }

    // One: the entry, its frames (so its messages) and its bodies.
    let reply = delete(format!("/api/traffic/{CHAT}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"success": true, "deleted": 1, "frames": 8})
    );
    assert_eq!(
        get(&app, &format!("/api/traffic/{CHAT}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count"))
            .await
            .body,
        json!({"count": 0})
    );
    // An unknown connection's messages are an empty list, like its frames.
    let messages = get(&app, &format!("/api/websocket/{CHAT}/messages")).await;
    assert_eq!(
        (messages.status, messages.body),
        (StatusCode::OK, json!([]))
    );
    let reply = delete(format!("/api/traffic/{UPLOAD}")).await;
    assert_eq!(reply.body["deleted"], 1);
    assert_eq!(fx.primary.body(UPLOAD, BodyOf::Response, 100).unwrap(), b"");
    assert_eq!(fx.primary.body(UPLOAD, BodyOf::Request, 100).unwrap(), b"");

    // By filter: what the same query lists.
    let listed = ids(&get(&app, "/api/traffic?status=4xx,5xx&error=false").await);
    assert_eq!(listed, [OLD.to_string()]);
    let reply = delete("/api/traffic?status=4xx,5xx&error=false".into()).await;
    assert_eq!(
        reply.body,
        json!({"success": true, "deleted": 1, "frames": 0})
    );
    assert_eq!(
        get(&app, "/api/traffic?status=4xx,5xx&error=false")
            .await
            .body["count"],
        0
    );
    let reply = delete("/api/traffic?process=nobody".into()).await;
    assert_eq!(reply.body["deleted"], 0);

    // Not without the agent.
    let down = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::AgentDown(
            "connection refused".into(),
        ))),
        ..fx.state()
    });
    let before = get(&app, "/api/traffic").await.body["count"].clone();
    for uri in [
        format!("/api/traffic/{FEED}"),
        "/api/traffic?all=true".into(),
    ] {
        let reply = send_with(&down, "DELETE", &uri, None).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(
            reply.error().contains("nothing was deleted"),
            "{}",
            reply.error()
        );
    }
    assert_eq!(get(&app, "/api/traffic").await.body["count"], before);

    // All, when asked for in so many words.
    let left = before.as_u64().unwrap();
    let reply = delete("/api/traffic?all=true".into()).await;
    assert_eq!(
        reply.body,
        json!({"success": true, "deleted": left, "frames": 250})
    );
    assert_eq!(
        get(&app, "/api/traffic").await.body,
        json!({"entries": [], "count": 0})
    );
    let calls: Vec<AgentCall> = fx.agent.calls();
    assert_eq!(
        calls[..2],
        [
            AgentCall::DeleteTraffic(DeleteTarget::One {
                id: CHAT.to_string()
            }),
            AgentCall::DeleteTraffic(DeleteTarget::One {
                id: UPLOAD.to_string()
            }),
        ]
    );
    assert_eq!(
        calls.last(),
        Some(&AgentCall::DeleteTraffic(DeleteTarget::All))
    );
}

#[tokio::test]
async fn rules_are_known_while_the_agent_is_down() {
    let fx = Fixture::new();
    let down = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::AgentDown(
            "connection refused".into(),
        ))),
        ..fx.state()
    });
    // Nothing recorded yet: nothing to show.
    let reply = get(&down, "/api/rules").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.error().contains("never recorded its rules"),
        "{}",
        reply.error()
    );
    let rule: Rule = serde_json::from_value(
        json!({"id": "r1", "contains": "password", "action": {"kind": "drop"}}),
    )
    .unwrap();
    let snapshot = RuleSnapshot {
        recorded_at_ms: 1_709_136_000_000,
        agent_pid: 99,
        rules: vec![rule],
    };
    fx.primary
        .record_rules(&serde_json::to_vec(&snapshot).unwrap())
        .unwrap();
    fx.catch_up();
    let reply = get(&down, "/api/rules").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "rules": [{"id": "r1", "contains": "password", "action": {"kind": "drop"}}],
            "live": false,
            "recordedAt": 1_709_136_000_000u64,
        })
    );
    // A running agent's answer wins; one that fails is not papered over.
    assert_eq!(get(&fx.router(), "/api/rules").await.body["live"], true);
    let failing = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::Failed("disk full".into()))),
        ..fx.state()
    });
    assert_eq!(
        get(&failing, "/api/rules").await.status,
        StatusCode::BAD_GATEWAY
    );
}

// ---------------------------------------------------------------------------------
// Messages.

/// An open connection whose messages are fragmented and interleaved.
const TALK: TrafficId = TrafficId((1_709_136_007_000 << 16) | 1);
/// A closed connection with dropped, replaced, injected and odd text messages.
const ODD: TrafficId = TrafficId((1_709_136_008_000 << 16) | 1);

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

fn message_ids(reply: &Reply) -> Vec<String> {
    reply
        .array()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn messages_are_reassembled_from_interleaved_fragments() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    let reply = get(&app, &format!("/api/websocket/{TALK}/messages")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.link(), None);
    let ts = TALK.timestamp_ms();
    let message = |first: u64,
                   last: u64,
                   from_client: bool,
                   kind: &str,
                   content: &str,
                   encoding: &str,
                   length: u64,
                   frames: u64| {
        json!({
            "id": frame_id(TALK, first),
            "trafficId": TALK.to_string(),
            "direction": if from_client { "client-to-server" } else { "server-to-client" },
            "fromClient": from_client,
            "type": kind,
            "content": content,
            "contentEncoding": encoding,
            "length": length,
            "truncated": false,
            "timestamp": ts + 100 * last,
            "frameCount": frames,
            "lastFrameId": frame_id(TALK, last),
            "dropped": false,
            "injected": false,
            "modified": false,
            "incomplete": false,
        })
    };
    // In the order of their first frame; the server's text left open is not there yet.
    assert_eq!(
        reply.body,
        json!([
            message(1, 7, true, "text", "Hello, wörld", "utf-8", 13, 3),
            message(
                2,
                6,
                false,
                "binary",
                &BASE64.encode([0, 1, 2, 3]),
                "base64",
                4,
                2
            ),
            message(8, 8, false, "text", "ok", "utf-8", 2, 1),
            message(
                9,
                10,
                true,
                "binary",
                &BASE64.encode([9, 8]),
                "base64",
                2,
                2
            ),
        ])
    );

    let by_direction = |direction: &str| {
        let app = app.clone();
        let uri = format!("/api/websocket/{TALK}/messages?direction={direction}");
        async move { message_ids(&get(&app, &uri).await) }
    };
    assert_eq!(
        by_direction("client-to-server").await,
        [frame_id(TALK, 1), frame_id(TALK, 9)]
    );
    assert_eq!(
        by_direction("server-to-client").await,
        [frame_id(TALK, 2), frame_id(TALK, 8)]
    );

    // The seed's chat: control frames are not messages.
    let chat = get(&app, &format!("/api/websocket/{CHAT}/messages")).await;
    assert_eq!(
        message_ids(&chat),
        [frame_id(CHAT, 1), frame_id(CHAT, 2), frame_id(CHAT, 5)]
    );
    assert_eq!(
        chat.body[0]["content"],
        r#"{"action":"subscribe","channel":"chat"}"#
    );
    assert_eq!(
        chat.body[2]["content"],
        BASE64.encode([0, 1, 2, 0xff, 3, 4])
    );
    assert_eq!(chat.body[2]["lastFrameId"], frame_id(CHAT, 6));
}

#[tokio::test]
async fn message_pages_follow_the_cursor_and_wait_for_open_messages() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    // One message per page: each cursor skips the tails of messages already returned.
    let mut uri = format!("/api/websocket/{TALK}/messages?limit=1");
    let mut collected = Vec::new();
    loop {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, StatusCode::OK);
        collected.extend(message_ids(&reply));
        let Some(link) = reply.link() else { break };
        let last = collected.last().unwrap();
        assert_eq!(
            link,
            format!("</api/websocket/{TALK}/messages?after={last}&limit=1>; rel=\"next\"")
        );
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    let expected: Vec<String> = [1, 2, 8, 9].map(|seq| frame_id(TALK, seq)).to_vec();
    assert_eq!(collected, expected);

    // The open message is not returned and the page stops before it; once its final
    // fragment is recorded, the same cursor picks it up.
    let after_last = format!("/api/websocket/{TALK}/messages?after={}", frame_id(TALK, 9));
    assert_eq!(get(&app, &after_last).await.body, json!([]));
    fx.primary
        .write(&[fragment(TALK, 12, false, 0, true, b"b").into()])
        .unwrap();
    fx.catch_up();
    let reply = get(&app, &after_last).await;
    assert_eq!(message_ids(&reply), [frame_id(TALK, 11)]);
    assert_eq!(reply.body[0]["content"], "ab");
    assert_eq!(reply.body[0]["incomplete"], false);

    // A message that never finished, on a connection that ended: returned, incomplete.
    fx.primary
        .write(&[
            fragment(TALK, 13, true, 1, false, b"never finished").into(),
            WsClose {
                traffic: TALK,
                timestamp_ms: TALK.timestamp_ms() + 5000,
                closed_by: None,
                close_code: None,
                close_reason: None,
                frames_from_client: 6,
                frames_from_server: 7,
                bytes_from_client: 100,
                bytes_from_server: 100,
                abnormal: Some("client reset".into()),
                frames_from_frametap: Some(0),
            }
            .into(),
        ])
        .unwrap();
    fx.catch_up();
    let reply = get(
        &app,
        &format!(
            "/api/websocket/{TALK}/messages?after={}",
            frame_id(TALK, 11)
        ),
    )
    .await;
    assert_eq!(message_ids(&reply), [frame_id(TALK, 13)]);
    assert_eq!(reply.body[0]["incomplete"], true);
    assert_eq!(reply.body[0]["content"], "never finished");

    // 250 single-frame messages: pages of 100, 100, 50.
    let mut uri = format!("/api/websocket/{FEED}/messages");
    let mut pages = Vec::new();
    loop {
        let reply = get(&app, &uri).await;
        pages.push(reply.array().len());
        let Some(link) = reply.link() else { break };
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    assert_eq!(pages, [100, 100, 50]);
    let reply = get(
        &app,
        &format!(
            "/api/websocket/{FEED}/messages?direction=client-to-server&limit=2&after={}",
            frame_id(FEED, 10)
        ),
    )
    .await;
    assert_eq!(
        message_ids(&reply),
        [frame_id(FEED, 11), frame_id(FEED, 13)]
    );
    assert_eq!(reply.body[0]["content"], "message 11");
    assert!(
        reply
            .link()
            .unwrap()
            .ends_with("&limit=2&direction=client-to-server>; rel=\"next\""),
        "{:?}",
        reply.link()
    );
}

#[tokio::test]
async fn messages_carry_flags_and_show_bad_text_as_base64() {
    let fx = Fixture::new();
    let mut frames = vec![
        frame(ODD, 1, true, 1, b"password=hunter2"),
        frame(ODD, 2, true, 1, b"password=***"),
        frame(ODD, 3, false, 1, b"notice"),
        frame(ODD, 4, false, 1, b"\xff\xfe ok"),
        frame(ODD, 5, false, 1, b"a\xc3"),
        fragment(ODD, 6, true, 2, false, &[1]),
        fragment(ODD, 7, true, 0, true, &[2]),
        fragment(ODD, 8, true, 1, false, b"half "),
        fragment(ODD, 9, true, 0, true, b"dropped"),
    ];
    frames[0].dropped = true;
    frames[1].modified = true;
    frames[2].injected = true;
    frames[4].payload_len = 3;
    frames[4].truncated = true;
    frames[5].dropped = true;
    frames[6].dropped = true;
    frames[6].binary_message = true;
    frames[7].dropped = true;
    let mut records: Vec<Record> = vec![ws_open(ODD, "wss://odd.example.com/").into()];
    records.extend(frames.into_iter().map(Record::from));
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let reply = get(&fx.router(), &format!("/api/websocket/{ODD}/messages")).await;
    let summary: Vec<Value> = reply
        .array()
        .iter()
        .map(|m| {
            json!([
                m["content"],
                m["contentEncoding"],
                m["type"],
                m["dropped"],
                m["injected"],
                m["modified"],
                m["truncated"],
                m["length"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!([
                "password=hunter2",
                "utf-8",
                "text",
                true,
                false,
                false,
                false,
                16
            ]),
            json!([
                "password=***",
                "utf-8",
                "text",
                false,
                false,
                true,
                false,
                12
            ]),
            json!(["notice", "utf-8", "text", false, true, false, false, 6]),
            // Not UTF-8: base64, saying so.
            json!([
                BASE64.encode(b"\xff\xfe ok"),
                "base64",
                "text",
                false,
                false,
                false,
                false,
                5
            ]),
            // Cut inside a character by the agent's truncation: text up to it.
            json!(["a", "utf-8", "text", false, false, false, true, 3]),
            json!([
                BASE64.encode([1, 2]),
                "base64",
                "binary",
                true,
                false,
                false,
                false,
                2
            ]),
            // Dropped only if every frame was.
            json!([
                "half dropped",
                "utf-8",
                "text",
                false,
                false,
                false,
                false,
                12
            ]),
        ]
    );
}

#[tokio::test]
async fn message_errors_are_json() {
    let fx = Fixture::new();
    let app = fx.router();
    // The rule of frames and count: an unknown or malformed id has none.
    for traffic in [
        UNKNOWN.to_string(),
        LOGIN.to_string(),
        "nope".into(),
        "%FF".into(),
    ] {
        for endpoint in ["messages", "frames"] {
            let reply = get(&app, &format!("/api/websocket/{traffic}/{endpoint}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{traffic} {endpoint}");
            assert_eq!(reply.body, json!([]), "{traffic} {endpoint}");
        }
        let count = get(&app, &format!("/api/websocket/{traffic}/count")).await;
        assert_eq!(count.body, json!({"count": 0}), "{traffic}");
    }
    for (query, needle) in [
        ("limit=0".to_owned(), "`limit`"),
        ("limit=1001".into(), "`limit`"),
        ("direction=up".into(), "`direction`"),
        ("after=nope".into(), "malformed cursor"),
    ] {
        let reply = get(&app, &format!("/api/websocket/{FEED}/messages?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.error().contains(needle), "{query}: {}", reply.error());
    }
    let reply = get(&app, &format!("/api/websocket/{FEED}/messages?after=nope")).await;
    assert!(
        reply.error().contains("the `id` of a message"),
        "{}",
        reply.error()
    );
}

// ---------------------------------------------------------------------------------
// Sending into a connection.

#[tokio::test]
async fn send_injects_through_the_agent() {
    let fx = Fixture::new();
    let app = fx.router();
    let uri = format!("/api/websocket/{FEED}/send");
    let reply = send_json(
        &app,
        "POST",
        &uri,
        &json!({"direction": "to-client", "data": "hello ✓", "isBinary": false}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let id = frame_id(FEED, 251);
    assert_eq!(
        reply.body,
        json!({"frameId": id, "trafficId": FEED.to_string(), "direction": "to-client"})
    );
    assert_eq!(
        reply.headers[header::LOCATION],
        format!("/api/websocket/frame/{id}")
    );
    // `isBinary` defaults to false; binary data is base64, decoded before the agent.
    let reply = send_json(
        &app,
        "POST",
        &uri,
        &json!({"direction": "to-server", "data": "AAEC/w=="}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = send_json(
        &app,
        "POST",
        &uri,
        &json!({"direction": "to-server", "data": "AAEC/w==", "isBinary": true}),
    )
    .await;
    assert_eq!(reply.body["frameId"], frame_id(FEED, 253));
    assert_eq!(
        fx.agent.calls(),
        [
            AgentCall::Send {
                traffic: FEED,
                direction: InjectDirection::ToClient,
                payload: "hello ✓".as_bytes().to_vec(),
                is_binary: false,
            },
            AgentCall::Send {
                traffic: FEED,
                direction: InjectDirection::ToServer,
                payload: b"AAEC/w==".to_vec(),
                is_binary: false,
            },
            AgentCall::Send {
                traffic: FEED,
                direction: InjectDirection::ToServer,
                payload: vec![0, 1, 2, 0xff],
                is_binary: true,
            },
        ]
    );
    // Read-your-writes: the injected frame is there, flagged, without a catch-up here.
    let injected = get(&app, &format!("/api/websocket/frame/{id}")).await;
    assert_eq!(injected.status, StatusCode::OK);
    assert_eq!(injected.body["injected"], true);
    assert_eq!(injected.body["direction"], "server-to-client");
    assert_eq!(injected.body["data"], BASE64.encode("hello ✓"));
    let messages = get(
        &app,
        &format!(
            "/api/websocket/{FEED}/messages?after={}",
            frame_id(FEED, 250)
        ),
    )
    .await;
    assert_eq!(messages.body[0]["content"], "hello ✓");
    assert_eq!(messages.body[0]["injected"], true);
    assert_eq!(messages.body[2]["content"], BASE64.encode([0, 1, 2, 0xff]));
}

#[tokio::test]
async fn send_refuses_what_it_can_not_send() {
    let fx = Fixture::new();
    let app = fx.router();
    let hello = json!({"direction": "to-client", "data": "hello"});
    for traffic in [UNKNOWN.to_string(), LOGIN.to_string(), "nope".into()] {
        let reply = send_json(
            &app,
            "POST",
            &format!("/api/websocket/{traffic}/send"),
            &hello,
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{traffic}");
        assert_eq!(
            reply.body,
            json!({"error": "WebSocket connection not found"})
        );
    }
    let closed = send_json(&app, "POST", &format!("/api/websocket/{CHAT}/send"), &hello).await;
    assert_eq!(closed.status, StatusCode::CONFLICT);
    assert!(closed.error().contains("is closed"), "{}", closed.error());

    let uri = format!("/api/websocket/{FEED}/send");
    for (body, needle) in [
        (
            json!({"direction": "to-client", "data": "not base64!", "isBinary": true}),
            "`data` must be standard base64",
        ),
        (
            json!({"direction": "to-client", "data": "x", "binary": true}),
            "unknown field `binary`",
        ),
        (json!({"data": "x"}), "missing field `direction`"),
        (
            json!({"direction": "up", "data": "x"}),
            "unknown variant `up`",
        ),
        (json!(["x"]), "invalid request body"),
    ] {
        let reply = send_json(&app, "POST", &uri, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.error().contains(needle), "{body}: {}", reply.error());
    }
    let malformed = send_body(&app, "POST", &uri, None, Some(("application/json", b"{"))).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let untyped = send_body(&app, "POST", &uri, None, Some(("text/plain", b"hello"))).await;
    assert_eq!(untyped.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(untyped.error().contains("application/json"));
    assert!(fx.agent.calls().is_empty(), "nothing reached the agent");

    for (error, status, needle) in [
        (
            ControlError::Refused(Refusal::Conflict, "connection closed".into()),
            StatusCode::CONFLICT,
            "connection closed",
        ),
        (
            ControlError::Refused(Refusal::NotFound, "no such connection".into()),
            StatusCode::CONFLICT,
            "no longer open",
        ),
        (
            ControlError::Refused(Refusal::BadRequest, "too big".into()),
            StatusCode::BAD_REQUEST,
            "too big",
        ),
        (
            ControlError::AgentDown("connection refused".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "nothing was sent",
        ),
        (
            ControlError::Failed("disk full".into()),
            StatusCode::BAD_GATEWAY,
            "disk full",
        ),
    ] {
        let app = router(AppState {
            agent: Arc::new(BrokenAgent(error)),
            ..fx.state()
        });
        let reply = send_json(&app, "POST", &uri, &hello).await;
        assert_eq!(reply.status, status, "{needle}");
        assert!(reply.error().contains(needle), "{}", reply.error());
    }
}

// ---------------------------------------------------------------------------------
// Rules.

#[tokio::test]
async fn rules_are_listed_added_and_deleted_through_the_agent() {
    let fx = Fixture::new();
    let app = fx.router();
    assert_eq!(
        get(&app, "/api/rules").await.body,
        json!({"rules": [], "live": true, "recordedAt": null})
    );
    let redact = json!({
        "host": "chat.example.com",
        "direction": "to-client",
        "type": "text",
        "contains": "password",
        "action": {"kind": "replace", "pattern": "password=\\S+", "replacement": "password=***"},
    });
    let reply = send_json(&app, "POST", "/api/rules", &redact).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let mut expected = redact.clone();
    expected["id"] = json!("rule-1");
    assert_eq!(reply.body, expected);
    let close = json!({"id": "r2", "type": "binary", "action": {"kind": "close", "code": 4000}});
    let reply = send_json(&app, "POST", "/api/rules", &close).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // As the agent writes it: the default reason spelled out.
    assert_eq!(
        reply.body,
        json!({"id": "r2", "type": "binary", "action": {"kind": "close", "code": 4000, "reason": ""}})
    );
    let list = get(&app, "/api/rules").await;
    assert_eq!(list.body["rules"], json!([expected, reply.body]));
    // The agent got the control crate's rule, field for field.
    let sent: Rule = serde_json::from_value(redact).unwrap();
    assert_eq!(fx.agent.calls()[1], AgentCall::AddRule(sent));

    let reply = send_with(&app, "DELETE", "/api/rules/r2", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"success": true, "id": "r2"}));
    let again = send_with(&app, "DELETE", "/api/rules/r2", None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.body, json!({"error": "no rule with id \"r2\""}));
    let not_utf8 = send_with(&app, "DELETE", "/api/rules/%FF", None).await;
    assert_eq!(not_utf8.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/api/rules").await.body["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_rules_are_json_400s_and_agent_refusals_map() {
    let fx = Fixture::new();
    let app = fx.router();
    // Refused by the API itself: the agent never hears of them.
    for (body, needle) in [
        (
            json!({"action": {"kind": "drop"}, "hots": "x"}),
            "unknown field `hots`",
        ),
        (
            json!({"action": {"kind": "explode"}}),
            "unknown variant `explode`",
        ),
        (json!({"contains": "x"}), "missing field `action`"),
        (
            json!({"type": "TEXT", "action": {"kind": "drop"}}),
            "unknown variant `TEXT`",
        ),
        (
            json!({"action": {"kind": "close", "code": 1005}}),
            "close code 1005",
        ),
        (
            json!({"action": {"kind": "close", "code": 4000, "reason": "x".repeat(200)}}),
            "at most 123",
        ),
        (
            json!({"type": "binary", "action": {"kind": "replace", "pattern": "a", "replacement": "b"}}),
            "text messages only",
        ),
        (
            json!({"id": "a/b", "action": {"kind": "drop"}}),
            "rule `id`",
        ),
        (json!("drop"), "invalid request body"),
    ] {
        let reply = send_json(&app, "POST", "/api/rules", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(keys(&reply.body), BTreeSet::from(["error"]));
        assert!(reply.error().contains(needle), "{body}: {}", reply.error());
        assert!(reply.error().len() < 600, "{}", reply.error());
    }
    for (content_type, bytes, status) in [
        ("application/json", &b"{"[..], StatusCode::BAD_REQUEST),
        ("application/json", &b""[..], StatusCode::BAD_REQUEST),
        (
            "text/plain",
            &br#"{"action":{"kind":"drop"}}"#[..],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let reply = send_body(
            &app,
            "POST",
            "/api/rules",
            None,
            Some((content_type, bytes)),
        )
        .await;
        assert_eq!(reply.status, status, "{content_type} {bytes:?}");
        assert_eq!(keys(&reply.body), BTreeSet::from(["error"]));
    }
    let no_body = send_with(&app, "POST", "/api/rules", None).await;
    assert_eq!(no_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(fx.agent.calls().is_empty(), "{:?}", fx.agent.calls());

    // The agent's verdicts: a regex that does not compile, an id in use.
    let reply = send_json(
        &app,
        "POST",
        "/api/rules",
        &json!({"regex": BAD_REGEX, "action": {"kind": "drop"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"error": "regex parse error: unclosed group"})
    );
    let rule = json!({"id": "same", "action": {"kind": "drop"}});
    assert_eq!(
        send_json(&app, "POST", "/api/rules", &rule).await.status,
        StatusCode::CREATED
    );
    let reply = send_json(&app, "POST", "/api/rules", &rule).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body, json!({"error": "a rule with this id exists"}));

    for (error, status, needle) in [
        (
            ControlError::AgentDown("connection refused".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "frametap-agent is not running (connection refused)",
        ),
        (
            ControlError::Failed("disk full".into()),
            StatusCode::BAD_GATEWAY,
            "disk full",
        ),
        (
            ControlError::Refused(Refusal::NotFound, "gone".into()),
            StatusCode::NOT_FOUND,
            "gone",
        ),
    ] {
        let app = router(AppState {
            agent: Arc::new(BrokenAgent(error)),
            ..fx.state()
        });
        for reply in [
            get(&app, "/api/rules").await,
            send_json(&app, "POST", "/api/rules", &rule).await,
            send_with(&app, "DELETE", "/api/rules/same", None).await,
        ] {
            assert_eq!(reply.status, status, "{needle}");
            assert!(reply.error().contains(needle), "{}", reply.error());
        }
    }
}

// ---------------------------------------------------------------------------------
// Exports.

fn har_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("har-1.2.schema.json")).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

/// `GET uri` as a HAR download, checked against the HAR 1.2 schema.
async fn get_har(app: &Router, uri: &str, file_name: &str) -> Value {
    let reply = get(app, uri).await;
    assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_DISPOSITION],
        format!("attachment; filename=\"{file_name}\"")
    );
    if let Err(error) = har_validator().validate(&reply.body) {
        panic!("{uri}: not HAR 1.2: {error}\n{:#}", reply.body);
    }
    reply.body
}

#[tokio::test]
async fn har_of_one_connection_has_its_messages() {
    let fx = Fixture::new();
    let app = fx.router();
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={CHAT}"),
        &format!("frametap-{CHAT}.har"),
    )
    .await;
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "frametap");
    assert_eq!(log["creator"]["version"], env!("CARGO_PKG_VERSION"));
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry["startedDateTime"], "2024-02-28T16:00:00.000Z");
    assert_eq!(entry["time"], 12.5);
    assert_eq!(
        entry["timings"],
        json!({"send": 0.0, "wait": 12.5, "receive": 0.0})
    );
    assert_eq!(entry["cache"], json!({}));
    assert_eq!(entry["serverIPAddress"], "93.184.216.34");
    assert_eq!(entry["request"]["method"], "GET");
    assert_eq!(entry["request"]["url"], "wss://chat.example.com/socket");
    assert_eq!(
        entry["request"]["headers"],
        json!([
            {"name": "Host", "value": "chat.example.com"},
            {"name": "Accept", "value": "text/html"},
            {"name": "accept", "value": "application/json"},
        ])
    );
    assert_eq!(entry["response"]["status"], 101);
    assert_eq!(entry["response"]["statusText"], "Switching Protocols");
    assert_eq!(
        entry["response"]["cookies"],
        json!([{"name": "a", "value": "1"}, {"name": "b", "value": "2"}])
    );
    assert_eq!(entry["_resourceType"], "websocket");
    let at = |seq: u64| (CHAT.timestamp_ms() + 100 * seq) as f64 / 1000.0;
    assert_eq!(
        entry["_webSocketMessages"],
        json!([
            {"type": "send", "time": at(1), "opcode": 1, "data": r#"{"action":"subscribe","channel":"chat"}"#},
            {"type": "receive", "time": at(2), "opcode": 1, "data": r#"{"status":"subscribed","channel":"chat"}"#},
            {"type": "receive", "time": at(6), "opcode": 2, "data": BASE64.encode([0, 1, 2, 0xff, 3, 4])},
        ])
    );

    // A plain HTTP exchange: no WebSocket fields.
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={LOGIN}"),
        &format!("frametap-{LOGIN}.har"),
    )
    .await;
    let entry = &har["log"]["entries"][0];
    assert_eq!(entry["response"]["statusText"], "OK");
    assert!(entry.get("_resourceType").is_none());
    assert!(entry.get("_webSocketMessages").is_none());
    // An open connection's messages so far; one without frames has none.
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={LOCAL}"),
        &format!("frametap-{LOCAL}.har"),
    )
    .await;
    assert_eq!(har["log"]["entries"][0]["_webSocketMessages"], json!([]));

    // The validator has teeth.
    let validator = har_validator();
    let mut broken = har.clone();
    broken["log"]["entries"][0]["timings"]
        .as_object_mut()
        .unwrap()
        .remove("wait");
    assert!(!validator.is_valid(&broken));
    let mut broken = har.clone();
    broken["log"]["entries"][0]["_webSocketMessages"] =
        json!([{"type": "sent", "time": 1.0, "opcode": 1, "data": ""}]);
    assert!(!validator.is_valid(&broken));
    let mut broken = har;
    broken["log"]["entries"][0]["startedDateTime"] = json!("yesterday");
    assert!(!validator.is_valid(&broken));
}

#[tokio::test]
async fn har_of_a_time_range_has_every_entry_in_it() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    let (from, to) = (CHAT.timestamp_ms(), LOGIN.timestamp_ms());
    let har = get_har(
        &app,
        &format!("/api/har?from={from}&to={to}"),
        &format!("frametap-{from}-{to}.har"),
    )
    .await;
    let entries = har["log"]["entries"].as_array().unwrap();
    let urls: Vec<&str> = entries
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "wss://chat.example.com/socket",
            "wss://feed.example.com/live?topic=ws",
            "https://api.example.com/login"
        ],
        "oldest first, both ends included"
    );
    assert_eq!(
        entries[1]["request"]["queryString"],
        json!([{"name": "topic", "value": "ws"}])
    );
    let feed = entries[1]["_webSocketMessages"].as_array().unwrap();
    assert_eq!(feed.len(), 250);
    assert_eq!(
        feed[0],
        json!({"type": "send", "time": (FEED.timestamp_ms() + 100) as f64 / 1000.0, "opcode": 1, "data": "message 1"})
    );
    assert_eq!(feed[1]["type"], "receive");
    assert!(har["log"].get("comment").is_none());

    // Everything from a point on; TALK has no traffic entry, only its connection.
    let har = get_har(&app, "/api/har?from=0", "frametap-0-latest.har").await;
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 5);
    let har = get_har(
        &app,
        &format!("/api/har?to={}", from - 1),
        &format!("frametap-0-{}.har", from - 1),
    )
    .await;
    assert_eq!(har["log"]["entries"], json!([]));
    // Every combination of the parameters is a selection: none is everything, an
    // entry and a range is the entry if it started in the range, and a range that
    // ends before it starts holds nothing (and says so).
    let har = get_har(&app, "/api/har", "frametap-0-latest.har").await;
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 5);
    let chat_ms = CHAT.timestamp_ms();
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={CHAT}&from={chat_ms}"),
        &format!("frametap-{CHAT}-{chat_ms}-latest.har"),
    )
    .await;
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 1);
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={CHAT}&from={}", chat_ms + 1),
        &format!("frametap-{CHAT}-{}-latest.har", chat_ms + 1),
    )
    .await;
    assert_eq!(har["log"]["entries"], json!([]));
    assert!(
        har["log"]["comment"]
            .as_str()
            .unwrap()
            .contains("outside the range"),
        "{har}"
    );
    let har = get_har(&app, "/api/har?from=5&to=4", "frametap-5-4.har").await;
    assert_eq!(har["log"]["entries"], json!([]));
    assert!(
        har["log"]["comment"]
            .as_str()
            .unwrap()
            .contains("before it starts"),
        "{har}"
    );

    for (query, status, needle) in [
        ("from=abc".into(), StatusCode::BAD_REQUEST, "`from`"),
        (
            "to=9223372036854775808".into(),
            StatusCode::BAD_REQUEST,
            "`to`",
        ),
        ("trafficId=".into(), StatusCode::BAD_REQUEST, "`trafficId`"),
        (
            "trafficId=xyz".into(),
            StatusCode::BAD_REQUEST,
            "`trafficId`",
        ),
        (
            format!("trafficId={UNKNOWN}"),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
        (
            format!("trafficId={TALK}"),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
    ] {
        let reply = get(&app, &format!("/api/har?{query}")).await;
        assert_eq!(reply.status, status, "{query}");
        assert!(reply.error().contains(needle), "{query}: {}", reply.error());
    }
}

/// A range with more entries than a HAR holds: the oldest ones, and a note.
#[tokio::test]
async fn har_of_a_large_range_keeps_the_oldest_entries() {
    let fx = Fixture::new();
    let start: u64 = 1_800_000_000_000;
    let records: Vec<Record> = (0..10_003u64)
        .map(|i| {
            let id = TrafficId::new(start + i, 1);
            entry(
                id,
                "GET",
                &format!("https://bulk.example.com/{i}"),
                Some(200),
            )
            .into()
        })
        .collect();
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let har = get_har(
        &fx.router(),
        &format!("/api/har?from={start}"),
        &format!("frametap-{start}-latest.har"),
    )
    .await;
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 10_000);
    assert_eq!(entries[0]["request"]["url"], "https://bulk.example.com/0");
    assert_eq!(
        entries[9_999]["request"]["url"],
        "https://bulk.example.com/9999"
    );
    let comment = har["log"]["comment"].as_str().unwrap();
    assert!(comment.contains("10003 entries"), "{comment}");
    assert!(
        comment.contains(&format!("at or after {}", start + 9_999)),
        "{comment}"
    );
}

/// Every line of an NDJSON answer, parsed.
async fn get_ndjson(app: &Router, uri: &str) -> Vec<Value> {
    let reply = send_raw(app, "GET", uri, None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{uri}");
    assert_eq!(reply.content_type(), Some("application/x-ndjson"));
    let text = String::from_utf8(reply.bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every frame of a frames listing, following its links.
async fn all_frames(app: &Router, first: &str) -> Vec<Value> {
    let mut uri = first.to_owned();
    let mut frames = Vec::new();
    loop {
        let reply = get(app, &uri).await;
        frames.extend(reply.array().iter().cloned());
        let Some(link) = reply.link() else { break };
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    frames
}

#[tokio::test]
async fn ndjson_lines_are_the_frames_endpoints_json() {
    let fx = Fixture::new();
    // Enough to stream in several chunks.
    let bulk = TrafficId((1_709_136_010_000 << 16) | 1);
    let records: Vec<Record> = (1..=60)
        .map(|seq| frame(bulk, seq, seq % 3 == 0, 2, &vec![seq as u8; 16 << 10]).into())
        .collect();
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let app = fx.router();
    for traffic in [CHAT, FEED, bulk] {
        let lines = get_ndjson(&app, &format!("/api/websocket/{traffic}/frames.ndjson")).await;
        let frames = all_frames(&app, &format!("/api/websocket/{traffic}/frames")).await;
        assert!(!lines.is_empty());
        assert_eq!(lines, frames, "{traffic}");
    }
    for query in [
        "direction=client-to-server&opcode=1".to_owned(),
        format!("after={}", frame_id(FEED, 240)),
        "opcode=9".into(),
    ] {
        let lines = get_ndjson(
            &app,
            &format!("/api/websocket/{FEED}/frames.ndjson?{query}"),
        )
        .await;
        let frames = all_frames(&app, &format!("/api/websocket/{FEED}/frames?{query}")).await;
        assert_eq!(lines, frames, "{query}");
    }
    assert_eq!(
        get_ndjson(
            &app,
            &format!(
                "/api/websocket/{FEED}/frames.ndjson?after={}",
                frame_id(FEED, 240)
            )
        )
        .await
        .len(),
        10
    );
    // Like frames: no such connection, no frames.
    for traffic in [UNKNOWN.to_string(), LOGIN.to_string(), "nope".into()] {
        let uri = format!("/api/websocket/{traffic}/frames.ndjson");
        assert!(get_ndjson(&app, &uri).await.is_empty(), "{traffic}");
    }
    for (traffic, query, status) in [
        (FEED.to_string(), "?opcode=3", StatusCode::BAD_REQUEST),
        (FEED.to_string(), "?after=x", StatusCode::BAD_REQUEST),
    ] {
        let reply = get(
            &app,
            &format!("/api/websocket/{traffic}/frames.ndjson{query}"),
        )
        .await;
        assert_eq!(reply.status, status, "{traffic} {query}");
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
            "agent": {"up": false, "pid": null, "error": "control socket /var/lib/frametap/agent.sock: connection refused", "namespaces": null},
            "store": {"open": true, "lastCatchUpMsAgo": 3, "sequence": 42, "agentSequence": null, "sequenceLag": null, "error": null},
            "events": {"connected": false, "received": 7, "dropped": 3, "recordsReceived": 7,
                       "recordsDropped": 1, "eventsEmitted": 9, "deliveriesDropped": 2},
            "recording": {
                "state": "degraded", "since": 1_764_000_000_000_u64,
                "error": "IO error: No space left on device",
                "recordsLost": 120, "recordsWritten": 5000, "recordsFailed": 130, "recordsDropped": 0,
                "lastOutage": {
                    "stoppedAt": 1_763_000_000_000_u64, "resumedAt": 1_763_000_004_000_u64,
                    "recordsLost": 10, "error": "IO error: No space left on device",
                },
            },
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
        ("GET", format!("/api/websocket/{CHAT}/messages")),
        ("GET", format!("/api/websocket/{CHAT}/frames.ndjson")),
        ("GET", format!("/api/har?trafficId={CHAT}")),
        ("GET", "/api/har?from=0".into()),
    ] {
        let reply = send_with(&app, method, &uri, None).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(reply.body, json!({ "error": expected }));
    }
    let send = send_json(
        &app,
        "POST",
        &format!("/api/websocket/{FEED}/send"),
        &json!({"direction": "to-client", "data": "x"}),
    )
    .await;
    assert_eq!(send.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send.body, json!({ "error": expected }));
    // Rules live in the agent: they don't need the store.
    assert_eq!(get(&app, "/api/rules").await.status, StatusCode::OK);
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
        format!("/api/websocket/{CHAT}/messages"),
        "/api/rules".into(),
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
    // Deletion too; nothing is deleted without the token. Nor sent, nor any rule changed.
    let delete = format!("/api/websocket/{CHAT}/frames");
    assert_eq!(
        send_with(&app, "DELETE", &delete, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for (method, uri) in [
        ("POST", format!("/api/websocket/{FEED}/send")),
        ("POST", "/api/rules".to_owned()),
        ("DELETE", "/api/rules/r1".to_owned()),
    ] {
        let reply = send_body(
            &app,
            method,
            &uri,
            None,
            Some((
                "application/json",
                br#"{"direction":"to-client","data":"x"}"#,
            )),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    assert_eq!(
        send_raw(
            &app,
            "GET",
            &format!("/api/websocket/{FEED}/frames.ndjson"),
            None,
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // Only the authorised rule listings above reached the agent.
    assert!(
        fx.agent
            .calls()
            .iter()
            .all(|call| *call == AgentCall::ListRules),
        "{:?}",
        fx.agent.calls()
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
const ROUTES: [(&str, &str); 20] = [
    ("get", "/api/websocket/{trafficId}/frames"),
    ("delete", "/api/websocket/{trafficId}/frames"),
    ("get", "/api/websocket/frame/{id}"),
    ("get", "/api/websocket/{trafficId}/count"),
    ("get", "/api/websocket/{trafficId}"),
    ("get", "/api/traffic"),
    ("get", "/api/traffic/{id}"),
    ("get", "/api/health"),
    ("get", "/api/openapi.json"),
    ("get", "/api/websocket/{trafficId}/messages"),
    ("post", "/api/websocket/{trafficId}/send"),
    ("get", "/api/websocket/{trafficId}/frames.ndjson"),
    ("get", "/api/har"),
    ("get", "/api/rules"),
    ("post", "/api/rules"),
    ("delete", "/api/rules/{id}"),
    ("delete", "/api/traffic"),
    ("delete", "/api/traffic/{id}"),
    ("get", "/api/traffic/{id}/request/body"),
    ("get", "/api/traffic/{id}/response/body"),
];

/// Cases of [`openapi_document_matches_routes_and_responses`] for traffic deletion
/// and bodies. The last one deletes DOCS.
fn traffic_route_cases() -> Vec<(Setup, &'static str, String, Payload, &'static str, u16)> {
    use Setup::*;
    let (dl, d1, rq, rs) = (ROUTES[16].1, ROUTES[17].1, ROUTES[18].1, ROUTES[19].1);
    let one = |t: TrafficId| format!("/api/traffic/{t}");
    let request = |t: TrafficId| format!("/api/traffic/{t}/request/body");
    let response = |t: TrafficId| format!("/api/traffic/{t}/response/body");
    let none = || Payload::None;
    vec![
        (
            Normal,
            "delete",
            "/api/traffic?status=599".into(),
            none(),
            dl,
            200,
        ),
        (Normal, "delete", "/api/traffic".into(), none(), dl, 400),
        (
            WithToken,
            "delete",
            "/api/traffic?all=true".into(),
            none(),
            dl,
            401,
        ),
        (
            AgentFails,
            "delete",
            "/api/traffic?all=true".into(),
            none(),
            dl,
            502,
        ),
        (
            AgentDown,
            "delete",
            "/api/traffic?all=true".into(),
            none(),
            dl,
            503,
        ),
        (WithToken, "delete", one(DOCS), none(), d1, 401),
        (Normal, "delete", one(UNKNOWN), none(), d1, 404),
        (AgentFails, "delete", one(DOCS), none(), d1, 502),
        (AgentDown, "delete", one(DOCS), none(), d1, 503),
        (NoStore, "delete", one(DOCS), none(), d1, 503),
        (Normal, "get", request(LOGIN), none(), rq, 200),
        (
            Normal,
            "get",
            format!("{}?raw=x", request(LOGIN)),
            none(),
            rq,
            400,
        ),
        (WithToken, "get", request(LOGIN), none(), rq, 401),
        (Normal, "get", request(UNKNOWN), none(), rq, 404),
        (NoStore, "get", request(LOGIN), none(), rq, 503),
        (Normal, "get", response(LOGIN), none(), rs, 200),
        (
            Normal,
            "get",
            format!("{}?raw=x", response(LOGIN)),
            none(),
            rs,
            400,
        ),
        (WithToken, "get", response(LOGIN), none(), rs, 401),
        (Normal, "get", response(UNKNOWN), none(), rs, 404),
        (NoStore, "get", response(LOGIN), none(), rs, 503),
        (Normal, "delete", one(DOCS), none(), d1, 200),
    ]
}

const DOC_URI: &str = "https://frametap.invalid/openapi.json";

/// A validator for the body of `status` responses of `method path`, as the document
/// declares it (refs resolved against the whole document).
fn response_validator(doc: &Value, method: &str, path: &str, status: u16) -> jsonschema::Validator {
    media_validator(doc, method, path, status, "application/json")
}

/// [`response_validator`] for a body of type `media` (NDJSON: each line).
fn media_validator(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    media: &str,
) -> jsonschema::Validator {
    let declared =
        &doc["paths"][path][method]["responses"][status.to_string()]["content"][media]["schema"];
    assert!(
        !declared.is_null(),
        "{method} {path} does not document a {status} {media} body"
    );
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}/content/{}/schema",
        path.replace('~', "~0").replace('/', "~1"),
        media.replace('~', "~0").replace('/', "~1")
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
    AgentRefuses(Refusal),
}

/// The body of a test request.
#[derive(Clone, Debug)]
enum Payload {
    None,
    Json(Value),
    /// Content type and bytes.
    Raw(&'static str, Vec<u8>),
}

impl Payload {
    fn parts(&self) -> Option<(&str, Vec<u8>)> {
        match self {
            Payload::None => None,
            Payload::Json(value) => Some(("application/json", serde_json::to_vec(value).unwrap())),
            Payload::Raw(content_type, bytes) => Some((content_type, bytes.clone())),
        }
    }
}

/// Cases of [`openapi_document_matches_routes_and_responses`] for the message, send,
/// export and rule routes: every documented status that can be produced.
fn new_route_cases() -> Vec<(Setup, &'static str, String, Payload, &'static str, u16)> {
    use Setup::*;
    let messages = format!("/api/websocket/{FEED}/messages");
    let send = |t: TrafficId| format!("/api/websocket/{t}/send");
    let ndjson = |t: TrafficId| format!("/api/websocket/{t}/frames.ndjson");
    let text = |data: &str| Payload::Json(json!({"direction": "to-client", "data": data}));
    let rule = |id: &str| {
        Payload::Json(json!({"id": id, "contains": "secret", "action": {"kind": "drop"}}))
    };
    let big = Payload::Json(json!({"direction": "to-client", "data": "x".repeat(3 << 20)}));
    let (m, s, n, h) = (ROUTES[9].1, ROUTES[10].1, ROUTES[11].1, ROUTES[12].1);
    let (rl, ra, rd) = (ROUTES[13].1, ROUTES[14].1, ROUTES[15].1);
    let chat_ms = CHAT.timestamp_ms();
    vec![
        (Normal, "get", messages.clone(), Payload::None, m, 200),
        (
            Normal,
            "get",
            format!("/api/websocket/{CHAT}/messages?direction=server-to-client"),
            Payload::None,
            m,
            200,
        ),
        (
            Normal,
            "get",
            format!("{messages}?limit=0"),
            Payload::None,
            m,
            400,
        ),
        (WithToken, "get", messages.clone(), Payload::None, m, 401),
        (NoStore, "get", messages.clone(), Payload::None, m, 503),
        (Normal, "post", send(FEED), text("hello"), s, 201),
        (
            Normal,
            "post",
            send(FEED),
            Payload::Json(json!({"direction": "to-server", "data": "%%", "isBinary": true})),
            s,
            400,
        ),
        (WithToken, "post", send(FEED), text("hello"), s, 401),
        (Normal, "post", send(UNKNOWN), text("hello"), s, 404),
        (Normal, "post", send(CHAT), text("hello"), s, 409),
        (
            AgentRefuses(Refusal::Conflict),
            "post",
            send(FEED),
            text("hello"),
            s,
            409,
        ),
        (Normal, "post", send(FEED), big, s, 413),
        (
            Normal,
            "post",
            send(FEED),
            Payload::Raw("text/plain", b"hello".to_vec()),
            s,
            415,
        ),
        (AgentFails, "post", send(FEED), text("hello"), s, 502),
        (AgentDown, "post", send(FEED), text("hello"), s, 503),
        (NoStore, "post", send(FEED), text("hello"), s, 503),
        (Normal, "get", ndjson(FEED), Payload::None, n, 200),
        (
            Normal,
            "get",
            format!("{}?opcode=3", ndjson(FEED)),
            Payload::None,
            n,
            400,
        ),
        (WithToken, "get", ndjson(FEED), Payload::None, n, 401),
        (NoStore, "get", ndjson(FEED), Payload::None, n, 503),
        (
            Normal,
            "get",
            format!("/api/har?trafficId={CHAT}"),
            Payload::None,
            h,
            200,
        ),
        (
            Normal,
            "get",
            format!("/api/har?from={chat_ms}&to={}", chat_ms + 5000),
            Payload::None,
            h,
            200,
        ),
        (Normal, "get", "/api/har".into(), Payload::None, h, 200),
        (
            Normal,
            "get",
            "/api/har?trafficId=".into(),
            Payload::None,
            h,
            400,
        ),
        (
            WithToken,
            "get",
            format!("/api/har?trafficId={CHAT}"),
            Payload::None,
            h,
            401,
        ),
        (
            Normal,
            "get",
            format!("/api/har?trafficId={UNKNOWN}"),
            Payload::None,
            h,
            404,
        ),
        (
            NoStore,
            "get",
            "/api/har?from=0".into(),
            Payload::None,
            h,
            503,
        ),
        (Normal, "post", "/api/rules".into(), rule("r1"), ra, 201),
        (Normal, "get", "/api/rules".into(), Payload::None, rl, 200),
        (
            WithToken,
            "get",
            "/api/rules".into(),
            Payload::None,
            rl,
            401,
        ),
        (
            AgentFails,
            "get",
            "/api/rules".into(),
            Payload::None,
            rl,
            502,
        ),
        (
            AgentDown,
            "get",
            "/api/rules".into(),
            Payload::None,
            rl,
            503,
        ),
        (
            Normal,
            "post",
            "/api/rules".into(),
            Payload::Raw("application/json", b"{".to_vec()),
            ra,
            400,
        ),
        (
            Normal,
            "post",
            "/api/rules".into(),
            Payload::Json(json!({"regex": BAD_REGEX, "action": {"kind": "drop"}})),
            ra,
            400,
        ),
        (WithToken, "post", "/api/rules".into(), rule("r2"), ra, 401),
        (Normal, "post", "/api/rules".into(), rule("r1"), ra, 409),
        (
            Normal,
            "post",
            "/api/rules".into(),
            Payload::Raw("application/json", vec![b' '; 3 << 20]),
            ra,
            413,
        ),
        (
            Normal,
            "post",
            "/api/rules".into(),
            Payload::Raw("text/plain", b"{}".to_vec()),
            ra,
            415,
        ),
        (AgentFails, "post", "/api/rules".into(), rule("r2"), ra, 502),
        (AgentDown, "post", "/api/rules".into(), rule("r2"), ra, 503),
        (
            Normal,
            "delete",
            "/api/rules/r1".into(),
            Payload::None,
            rd,
            200,
        ),
        (
            WithToken,
            "delete",
            "/api/rules/r1".into(),
            Payload::None,
            rd,
            401,
        ),
        (
            Normal,
            "delete",
            "/api/rules/r1".into(),
            Payload::None,
            rd,
            404,
        ),
        (
            AgentFails,
            "delete",
            "/api/rules/r1".into(),
            Payload::None,
            rd,
            502,
        ),
        (
            AgentDown,
            "delete",
            "/api/rules/r1".into(),
            Payload::None,
            rd,
            503,
        ),
    ]
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
            Setup::AgentRefuses(refusal) => AppState {
                agent: Arc::new(BrokenAgent(ControlError::Refused(
                    refusal,
                    "refused by the agent".into(),
                ))),
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
        "RecordingHealth",
        "WebSocketMessage",
        "Rule",
        "RuleAction",
        "RuleList",
        "RuleDeleted",
        "SendMessage",
        "Sent",
        "Har",
        "HarEntry",
        "HarWebSocketMessage",
        "TrafficDeleted",
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
        (
            Setup::Normal,
            "get",
            format!("{frames}?after={}", frame_id(FEED, 1)),
            ROUTES[0].1,
            404,
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
    let mut cases: Vec<(Setup, &str, String, Payload, &str, u16)> = cases
        .into_iter()
        .map(|(setup, method, uri, path, status)| (setup, method, uri, Payload::None, path, status))
        .collect();
    // Before the deletion, which must stay last.
    let last = cases.pop().unwrap();
    cases.extend(new_route_cases());
    cases.extend(traffic_route_cases());
    cases.push(last);
    let mut exercised = BTreeSet::new();
    for (setup, method, uri, payload, path, status) in &cases {
        let parts = payload.parts();
        let reply = send_raw(
            &app_for(*setup),
            &method.to_uppercase(),
            uri,
            None,
            parts.as_ref().map(|(t, b)| (*t, b.as_slice())),
        )
        .await;
        let text = String::from_utf8_lossy(&reply.bytes);
        assert_eq!(
            reply.status.as_u16(),
            *status,
            "{setup:?} {method} {uri}: {text:.300}"
        );
        let media = reply.content_type().unwrap().to_owned();
        if path.ends_with("/body") && *status == 200 {
            // A recorded body, whatever its type: documented as any media type.
            let content = &doc["paths"][*path][*method]["responses"]["200"]["content"];
            assert!(content["*/*"].is_object(), "{path}: {content}");
            assert!(reply.headers.contains_key("x-frametap-body-size"));
            exercised.insert((method.to_string(), path.to_string()));
            continue;
        }
        let bodies: Vec<Value> = if media == "application/x-ndjson" {
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        } else {
            assert_eq!(media, "application/json", "{method} {uri}");
            vec![serde_json::from_slice(&reply.bytes).unwrap()]
        };
        assert!(!bodies.is_empty(), "{method} {uri}: empty body");
        let validator = media_validator(&doc, method, path, *status, &media);
        for body in &bodies {
            if let Err(error) = validator.validate(body) {
                panic!("{method} {uri} -> {status} does not match the document: {error}\n{body}");
            }
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

// ---------------------------------------------------------------------------------
// Counts that agree, and live events.

/// A connection recorded under a replace rule, with an injected message: what the
/// agent writes for it, close record included.
const RULED: TrafficId = TrafficId((1_709_136_010_000 << 16) | 1);

fn ruled_records() -> Vec<Record> {
    let mut original = frame(RULED, 1, true, 1, b"my secret");
    original.dropped = true;
    let mut replacement = frame(RULED, 2, true, 1, b"my XXXX");
    replacement.modified = true;
    let mut injected = frame(RULED, 4, false, 1, b"notice");
    injected.injected = true;
    vec![
        entry(RULED, "GET", "wss://ruled.example.com/ws", Some(101)).into(),
        ws_open(RULED, "wss://ruled.example.com/ws").into(),
        original.into(),
        replacement.into(),
        frame(RULED, 3, false, 1, b"my XXXX").into(),
        injected.into(),
        close_frame(RULED, 5, true, 1000, "done").into(),
        close_frame(RULED, 6, false, 1000, "done").into(),
        ruled_close().into(),
    ]
}

/// The client and the server each sent two frames; frametap wrote two.
fn ruled_close() -> WsClose {
    WsClose {
        traffic: RULED,
        timestamp_ms: RULED.timestamp_ms() + 700,
        closed_by: Some("client".into()),
        close_code: Some(1000),
        close_reason: Some("done".into()),
        frames_from_client: 2,
        frames_from_server: 2,
        bytes_from_client: 40,
        bytes_from_server: 30,
        abnormal: None,
        frames_from_frametap: Some(2),
    }
}

/// Every count a user sees of the connection, from the view and the close event.
const COUNT_KEYS: [&str; 7] = [
    "frameCount",
    "storedFrameCount",
    "recordedFrameCount",
    "deletedFrameCount",
    "framesFromClient",
    "framesFromServer",
    "framesFromFrametap",
];

/// The `websocket:close` event the relay makes of `records`, with deletions as the
/// follower store knows them.
fn close_event(fx: &Fixture, relay: &mut LiveRelay, records: Vec<Record>) -> Value {
    let events = relay.on_records(records, |t| fx.secondary.frame_totals(t).unwrap().deleted);
    match events.last() {
        Some(Event::Close(close)) => serde_json::to_value(close).unwrap(),
        other => panic!("no close event last: {other:?}"),
    }
}

fn assert_counts_add_up(counts: &Value) {
    let n = |key: &str| {
        counts[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {counts}"))
    };
    assert_eq!(n("frameCount"), n("storedFrameCount"), "{counts}");
    assert_eq!(
        n("recordedFrameCount"),
        n("storedFrameCount") + n("deletedFrameCount"),
        "{counts}"
    );
    assert_eq!(
        n("recordedFrameCount"),
        n("framesFromClient") + n("framesFromServer") + n("framesFromFrametap"),
        "{counts}"
    );
}

/// The user's reports: a view with `frameCount 40` but `framesFromClient 15` +
/// `framesFromServer 15` (frames frametap wrote), `frameCount 0` but
/// `framesFromClient 15` after DELETE, and a close event whose `frameCount` was not
/// the REST `count`. Each count now says what it counts, and they add up.
#[tokio::test]
async fn every_count_agrees_under_rules_and_after_delete() {
    let fx = Fixture::new();
    fx.primary.write(&ruled_records()).unwrap();
    fx.catch_up();
    let app = fx.router();
    let (count_uri, view_uri) = (
        format!("/api/websocket/{RULED}/count"),
        format!("/api/websocket/{RULED}"),
    );
    let count = || get(&app, &count_uri);
    let view = || get(&app, &view_uri);

    assert_eq!(count().await.body, json!({"count": 6}));
    let before = view().await.body;
    assert_eq!(before["frameCount"], 6, "{before}");
    assert_eq!(before["recordedFrameCount"], 6);
    assert_eq!(
        before["framesFromFrametap"], 2,
        "the replacement and the injection"
    );
    assert_counts_add_up(&before);
    let mut relay = LiveRelay::default();
    let closed = close_event(&fx, &mut relay, ruled_records());
    assert_eq!(closed["frameCount"], count().await.body["count"]);
    for key in COUNT_KEYS
        .into_iter()
        .chain(["closeCode", "closeReason", "closedByClient", "timestampEnd"])
        .chain(["bytesFromClient", "bytesFromServer"])
    {
        assert_eq!(closed[key], before[key], "{key}: {closed} vs {before}");
    }
    assert_eq!(
        (&closed["code"], &closed["reason"]),
        (&json!(1000), &json!("done"))
    );

    // DELETE: nothing stored, everything still accounted for.
    let reply = send_with(
        &app,
        "DELETE",
        &format!("/api/websocket/{RULED}/frames"),
        None,
    )
    .await;
    assert_eq!(reply.body, json!({"success": true, "deleted": 6}));
    assert_eq!(count().await.body, json!({"count": 0}));
    let after = view().await.body;
    assert_eq!(after["frameCount"], 0, "{after}");
    assert_eq!(after["deletedFrameCount"], 6);
    assert_eq!(
        after["framesFromClient"], 2,
        "sent on the wire, deleted or not"
    );
    assert_counts_add_up(&after);
    // A connection that closes after a DELETE: its close event counts what `/count` does.
    let closed = close_event(&fx, &mut relay, vec![ruled_close().into()]);
    for key in COUNT_KEYS {
        assert_eq!(closed[key], after[key], "{key}: {closed} vs {after}");
    }

    // Recorded by an agent that did not count frametap's frames: unknown, not wrong.
    fx.primary
        .write(&[WsClose {
            frames_from_frametap: None,
            ..ruled_close()
        }
        .into()])
        .unwrap();
    fx.catch_up();
    assert_eq!(view().await.body["framesFromFrametap"], Value::Null);
}

/// Live events come in capture order: a connection's traffic entry before its open,
/// frames by seq, each message right after the frame that completes it (the very
/// JSON the messages endpoint gives), the close last.
#[tokio::test]
async fn live_events_follow_capture_order_and_carry_messages() {
    let fx = Fixture::new();
    write_talk(&fx);
    let mut talk: Vec<Record> = vec![
        entry(TALK, "GET", "wss://talk.example.com/ws", Some(101)).into(),
        ws_open(TALK, "wss://talk.example.com/ws").into(),
    ];
    talk.extend(
        fx.secondary
            .frames(TALK, None, usize::MAX, &Default::default())
            .unwrap()
            .into_iter()
            .map(Record::from),
    );
    let mut relay = LiveRelay::default();
    let events = relay.on_records(talk, |_| 0);
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    assert_eq!(
        &names[..3],
        ["traffic:batch", "websocket:open", "websocket:frame"]
    );
    let mut seqs = Vec::new();
    let mut live_messages = Vec::new();
    for event in &events {
        match event {
            Event::Frame(frame) => seqs.push(frame.seq),
            Event::Message(message) => {
                // Right after its last frame.
                assert_eq!(
                    message.last_frame_id,
                    frame_id(TALK, *seqs.last().unwrap()),
                    "{message:?}"
                );
                live_messages.push(serde_json::to_value(message).unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());
    // The server's text left open is not a message yet, as over REST.
    let app = fx.router();
    let rest = get(&app, &format!("/api/websocket/{TALK}/messages")).await;
    let by_id = |mut v: Vec<Value>| {
        v.sort_by_key(|m| m["id"].as_str().unwrap().to_owned());
        v
    };
    assert_eq!(by_id(live_messages.clone()), by_id(rest.array().clone()));

    // It closes: the open message ends there, incomplete, as REST then shows it.
    let mut close = ruled_close();
    close.traffic = TALK;
    fx.primary.write(&[close.clone().into()]).unwrap();
    fx.catch_up();
    let events = relay.on_records(vec![close.into()], |_| 0);
    let names: Vec<&str> = events.iter().map(Event::name).collect();
    assert_eq!(names, ["websocket:message", "websocket:close"]);
    let Event::Message(last) = &events[0] else {
        unreachable!()
    };
    assert!(last.incomplete);
    live_messages.push(serde_json::to_value(last).unwrap());
    let rest = get(&app, &format!("/api/websocket/{TALK}/messages")).await;
    assert_eq!(by_id(live_messages), by_id(rest.array().clone()));
    assert_eq!(relay.open_connections(), 0, "forgotten once closed");
}

/// Joining a connection mid-message (the API started late, or records were lost):
/// the tail of a message whose start was never seen is not shown as a message.
#[test]
fn live_messages_skip_tails_of_messages_joined_midway() {
    let mut relay = LiveRelay::default();
    let tail = fragment(TALK, 7, true, 0, true, b"tail");
    let whole = frame(TALK, 8, true, 1, b"whole");
    let events = relay.on_records(vec![tail.into(), whole.into()], |_| 0);
    let messages: Vec<&WebSocketMessage> = events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content, "whole");
    // The same after records were lost.
    relay.reset();
    let events = relay.on_records(vec![fragment(TALK, 20, false, 0, true, b"x").into()], |_| 0);
    assert!(events.iter().all(|e| e.name() == "websocket:frame"));
}

/// Both vocabularies for directions work wherever a direction is taken (the frames,
/// messages and NDJSON `direction` query, a rule's `direction`, `/send`'s
/// `direction`); answers keep their own (frames: the seed's, rules and `/send`:
/// `to-client` / `to-server`); the OpenAPI document lists every spelling.
#[tokio::test]
async fn direction_spellings_are_accepted_wherever_a_direction_is_taken() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    for (path, field) in [
        (format!("/api/websocket/{CHAT}/frames"), "direction"),
        (format!("/api/websocket/{TALK}/messages"), "direction"),
    ] {
        for (seed, rules) in [
            ("client-to-server", "to-server"),
            ("server-to-client", "to-client"),
        ] {
            let by_seed = get(&app, &format!("{path}?direction={seed}")).await;
            let by_rules = get(&app, &format!("{path}?direction={rules}")).await;
            assert_eq!(by_seed.status, StatusCode::OK);
            assert_eq!(by_rules.body, by_seed.body, "{path} {rules}");
            assert!(!by_seed.array().is_empty(), "{path} {seed}");
            assert!(by_seed.array().iter().all(|f| f[field] == seed), "{path}");
        }
    }
    let ndjson = |direction: &str| {
        let uri = format!("/api/websocket/{CHAT}/frames.ndjson?direction={direction}");
        let app = app.clone();
        async move { send_raw(&app, "GET", &uri, None, None).await.bytes }
    };
    assert_eq!(ndjson("to-client").await, ndjson("server-to-client").await);

    let uri = format!("/api/websocket/{FEED}/send");
    for (spelling, direction) in [
        ("server-to-client", InjectDirection::ToClient),
        ("client-to-server", InjectDirection::ToServer),
    ] {
        let reply = send_json(
            &app,
            "POST",
            &uri,
            &json!({"direction": spelling, "data": "x"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.body["direction"], direction.as_str());
        assert!(matches!(
            fx.agent.calls().last(),
            Some(AgentCall::Send { direction: d, .. }) if *d == direction
        ));
    }
    let rule = json!({"direction": "client-to-server", "action": {"kind": "drop"}});
    let reply = send_json(&app, "POST", "/api/rules", &rule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["direction"], "to-server");
    let bad = get(
        &app,
        &format!("/api/websocket/{CHAT}/frames?direction=upstream"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error().contains("to-server"), "{}", bad.error());

    let doc = get(&app, "/api/openapi.json").await.body;
    // Every `$ref` in the document resolves.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                out.extend(map.get("$ref").and_then(Value::as_str));
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }
    let every = json!([
        "client-to-server",
        "server-to-client",
        "to-server",
        "to-client"
    ]);
    // The enum of a schema, through `$ref`s and `oneOf` (an optional value).
    fn spellings_in(doc: &Value, schema: &Value) -> Option<BTreeSet<String>> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap();
            return spellings_in(doc, &doc["components"]["schemas"][name]);
        }
        if let Some(values) = schema["enum"].as_array() {
            return Some(
                values
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
            );
        }
        ["oneOf", "anyOf", "allOf"]
            .iter()
            .filter_map(|k| schema[*k].as_array())
            .flatten()
            .find_map(|s| spellings_in(doc, s))
    }
    let spellings = |schema: &Value| -> BTreeSet<String> {
        spellings_in(&doc, schema).unwrap_or_else(|| panic!("no enum in {schema}"))
    };
    let every: BTreeSet<String> = spellings(&json!({"enum": every}));
    for path in [
        "/api/websocket/{trafficId}/frames",
        "/api/websocket/{trafficId}/messages",
        "/api/websocket/{trafficId}/frames.ndjson",
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let direction = params.iter().find(|p| p["name"] == "direction").unwrap();
        assert_eq!(spellings(&direction["schema"]), every, "{path}");
    }
    let send = &doc["components"]["schemas"]["SendMessage"]["properties"]["direction"];
    assert_eq!(spellings(send), every);
    let rule = &doc["components"]["schemas"]["Rule"]["properties"]["direction"];
    assert_eq!(spellings(rule), every);
}

// ---------------------------------------------------------------------------------
// The document says exactly what the handlers take: a request it allows is never
// refused with 400, one it forbids always is. (Schemathesis checks this end to end,
// tests/tests/api.rs; these are the edges, one by one.)

/// A validator for the schema at `pointer` of `doc` (refs resolved in `doc`).
fn schema_at(doc: &Value, pointer: &str) -> jsonschema::Validator {
    assert!(doc.pointer(pointer).is_some(), "nothing at {pointer}");
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let registry = jsonschema::Registry::new()
        .add(DOC_URI, doc.clone())
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&json!({ "$ref": format!("{DOC_URI}#{fragment}") }))
        .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
}

/// The JSON pointer of parameter `name` of `method path`'s schema.
fn parameter_schema(doc: &Value, method: &str, path: &str, name: &str) -> String {
    let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let index = params
        .iter()
        .position(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    format!(
        "/paths/{}/{method}/parameters/{index}/schema",
        path.replace('~', "~0").replace('/', "~1")
    )
}

/// What a query value spells, when it spells a number or a boolean (as a client
/// generating from the document writes them).
fn typed(value: &str) -> Value {
    match value {
        "true" => json!(true),
        "false" => json!(false),
        _ if !value.is_empty()
            && value.bytes().all(|b| b.is_ascii_digit())
            && (value == "0" || !value.starts_with('0')) =>
        {
            value
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(value.parse::<f64>().unwrap()))
        }
        _ => json!(value),
    }
}

fn query_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test]
async fn query_parameters_are_exactly_what_the_document_says() {
    let fx = Fixture::new();
    let app = fx.router();
    let doc = get(&app, "/api/openapi.json").await.body;
    let frames = "/api/websocket/{trafficId}/frames";
    let feed_frame = frame_id(FEED, 1);
    let chat_frame = frame_id(CHAT, 1);
    let long_seq = format!("{FEED}-100000000");
    let padded_seq = format!("{FEED}-000000001");
    let upper = FEED.to_string().to_uppercase();
    let widest = format!("{FEED}-ffffffffffffffff");
    let too_wide = format!("{FEED}-1ffffffffffffffff");
    // (method, path, parameter, values)
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "get",
            "/api/traffic",
            "protocol",
            vec![
                "wss",
                "WSS, ws",
                " ,, ",
                "",
                "tls,tcp,HTTP,https",
                "wss ws",
                "ftp",
                "ws s",
                "wss,\u{a0}tls",
                "wss,\u{1c}tls",
                "wss\u{85}",
                "https,",
                ",",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "pid",
            vec![
                "1",
                "007",
                "999999999",
                "1000000000",
                "0",
                "000",
                "0,1",
                " 1 , 2 ",
                "1 2",
                "+1",
                "-1",
                "\u{661}",
                "4294967295",
                "00000000001",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "status",
            vec![
                "404", "4xx", "4XX", "4xX", "600", "40x", "099", " 5xx,", "5 xx", "1xx,599", "100",
                "0xx",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "error",
            vec!["true", "false", "TRUE", "True", "1", ""],
        ),
        (
            "get",
            "/api/traffic",
            "offset",
            vec![
                "0",
                "9223372036854775807",
                "9223372036854775808",
                "18446744073709551615",
                "-1",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "limit",
            vec!["1", "1000", "0", "1001"],
        ),
        (
            "get",
            "/api/traffic",
            "methods",
            vec!["GET", "", ",", "get, post", "\u{0}"],
        ),
        (
            "get",
            frames,
            "after",
            vec![
                &feed_frame,
                "",
                "x",
                &long_seq,
                &padded_seq,
                &upper,
                &widest,
                &too_wide,
            ],
        ),
        (
            "get",
            frames,
            "opcode",
            vec!["0", "1", "2", "3", "7", "8", "10", "11", "256", "x"],
        ),
        (
            "get",
            "/api/websocket/{trafficId}/messages",
            "after",
            vec![&feed_frame, "", &padded_seq],
        ),
        (
            "get",
            "/api/websocket/{trafficId}/frames.ndjson",
            "opcode",
            vec!["9", "4"],
        ),
        (
            "get",
            "/api/har",
            "trafficId",
            vec!["", "0191a2b3c4d50001", "0191A2B3C4D50001", "xyz"],
        ),
        (
            "get",
            "/api/har",
            "from",
            vec!["0", "9223372036854775807", "9223372036854775808"],
        ),
        (
            "get",
            "/api/traffic/{id}/response/body",
            "raw",
            vec!["true", "false", "TRUE", "yes"],
        ),
    ];
    for (method, path, name, values) in cases {
        let validator = schema_at(&doc, &parameter_schema(&doc, method, path, name));
        for value in values {
            // As the schema's type has it: a string, or what the text spells.
            let allowed = validator.is_valid(&json!(value)) || validator.is_valid(&typed(value));
            let uri = path
                .replace("{trafficId}", &FEED.to_string())
                .replace("{id}", &LOGIN.to_string());
            let uri = format!("{uri}?{name}={}", query_escape(value));
            let reply = send_raw(&app, &method.to_uppercase(), &uri, None, None).await;
            assert_eq!(
                reply.status != StatusCode::BAD_REQUEST,
                allowed,
                "{method} {uri}: the document {} {value:?}, the handler answered {}",
                if allowed { "allows" } else { "forbids" },
                reply.status
            );
        }
    }
    // A cursor of another connection is well formed: not a 400 (but a 404).
    let reply = get(
        &app,
        &format!("/api/websocket/{FEED}/frames?after={chat_frame}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn traffic_deletion_takes_what_its_selection_schema_says() {
    let fx = Fixture::new();
    let doc = get(&fx.router(), "/api/openapi.json").await.body;
    let selection = schema_at(
        &doc,
        &parameter_schema(&doc, "delete", "/api/traffic", "selection"),
    );
    // The agent says "not found" to whatever reaches it: nothing is deleted, and
    // every 400 is the API's own.
    let app = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::Refused(
            Refusal::NotFound,
            "nothing".into(),
        ))),
        ..fx.state()
    });
    for query in [
        "all=true",
        "all=true&search=",
        "all=true&status=5xx",
        "all=true&error=false",
        "all=false",
        "all=false&status=5xx",
        "all=TRUE",
        "",
        "search=x",
        "search=",
        "search=%20",
        "methods=,",
        "methods=%20,%20",
        "methods=,GET",
        "process=curl",
        "protocol=wss",
        "protocol=,",
        "protocol=ftp",
        "pid=1",
        "pid=0",
        "status=5xx",
        "status=6xx",
        "error=false",
        "error=yes",
        "errorContains=",
        "errorContains=tls",
        "status=5xx&limit=1",
        "all=true&offset=0",
        "unknown=1",
        "unknown=1&search=x",
        "search=x&limit%5Ba%5D=1",
        "search%5B%5D=x&status=5xx",
    ] {
        // The object an exploded `selection` spells: `name[key]=v` is `name: {key: v}`.
        let mut object = serde_json::Map::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = match (name.as_ref(), value.as_ref()) {
                ("all" | "error", "true") => json!(true),
                ("all" | "error", "false") => json!(false),
                (_, value) => json!(value),
            };
            match name.split_once('[') {
                Some((name, key)) => {
                    let key = key.trim_end_matches(']').to_owned();
                    object.insert(name.to_owned(), json!({ key: value }));
                }
                None => {
                    object.insert(name.into_owned(), value);
                }
            }
        }
        let allowed = selection.is_valid(&Value::Object(object));
        let reply = send_raw(&app, "DELETE", &format!("/api/traffic?{query}"), None, None).await;
        assert_eq!(
            reply.status != StatusCode::BAD_REQUEST,
            allowed,
            "DELETE /api/traffic?{query}: the document {}, the handler answered {}",
            if allowed { "allows it" } else { "forbids it" },
            reply.status
        );
    }
}

#[tokio::test]
async fn bodies_are_exactly_what_the_document_says() {
    let fx = Fixture::new();
    let app = fx.router();
    let doc = get(&app, "/api/openapi.json").await.body;
    let rule = schema_at(&doc, "/components/schemas/Rule");
    let send = schema_at(&doc, "/components/schemas/SendMessage");
    let drop = || json!({"kind": "drop"});
    let rules = [
        json!({"action": drop()}),
        json!({"action": drop(), "id": "ok-1.v2_~"}),
        json!({"action": drop(), "id": ""}),
        json!({"action": drop(), "id": "a/b"}),
        json!({"action": drop(), "id": "x".repeat(65)}),
        json!({"action": drop(), "host": "chat.test"}),
        json!({"action": drop(), "host": " *.test "}),
        json!({"action": drop(), "host": "*"}),
        json!({"action": drop(), "host": "\u{a0}*\u{a0}"}),
        json!({"action": drop(), "host": ""}),
        json!({"action": drop(), "host": "*."}),
        json!({"action": drop(), "host": "*.\u{2003}"}),
        json!({"action": drop(), "host": "a*b"}),
        json!({"action": drop(), "host": "**"}),
        json!({"action": drop(), "host": null, "path": null, "regex": null}),
        json!({"action": drop(), "regex": "a+b?"}),
        json!({"action": {"kind": "drop", "x": 1}}),
        json!({"action": drop(), "x": 1}),
        json!({"action": {"kind": "close", "code": 1000}}),
        json!({"action": {"kind": "close", "code": 1000.0}}),
        json!({"action": {"kind": "close", "code": 1004}}),
        json!({"action": {"kind": "close", "code": 2999}}),
        json!({"action": {"kind": "close", "code": 4999, "reason": "é".repeat(123)}}),
        json!({"action": {"kind": "close", "code": 4999, "reason": "x".repeat(124)}}),
        json!({"action": {"kind": "close", "code": 1000, "x": 1}}),
        json!({"action": {"kind": "replace", "pattern": "a", "replacement": "b"}}),
        json!({"action": {"kind": "replace", "pattern": "a", "replacement": "b"}, "type": "text"}),
        json!({"action": {"kind": "replace", "pattern": "a", "replacement": "b"}, "type": "binary"}),
        json!({"action": {"kind": "replace", "pattern": "a"}}),
        json!({"action": drop(), "type": "binary", "direction": "client-to-server"}),
        json!({"action": drop(), "direction": "up"}),
        json!({"action": {"kind": "explode"}}),
    ];
    for body in rules {
        let allowed = rule.is_valid(&body);
        let reply = send_json(&app, "POST", "/api/rules", &body).await;
        assert_eq!(
            reply.status != StatusCode::BAD_REQUEST,
            allowed,
            "POST /api/rules {body}: the document {}, the handler answered {} {}",
            if allowed { "allows it" } else { "forbids it" },
            reply.status,
            reply.body
        );
    }
    let text = |data: &str| json!({"direction": "to-client", "data": data});
    let binary = |data: &str| json!({"direction": "to-client", "data": data, "isBinary": true});
    let mut bodies = vec![
        text("hello"),
        text(""),
        json!({"direction": "to-client", "data": "{\"action\":\"ping\"}", "isBinary": false}),
        binary("{\"action\":\"ping\"}"),
        binary(""),
        binary("AA=="),
        binary("AB=="),
        binary("AAA="),
        binary("AAB="),
        binary("AAAA"),
        binary("AAA"),
        binary("A==="),
        binary("AA==AA=="),
        json!({"direction": "to-client", "data": "x", "isBinary": null}),
        json!({"direction": "to-client", "data": "x", "extra": 1}),
        json!({"direction": "to-client"}),
        json!({"direction": "sideways", "data": "x"}),
    ];
    // Every last quantum of base64: the pattern and the decoder agree.
    for c in (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain(*b"+/")
    {
        let c = c as char;
        bodies.push(binary(&format!("A{c}==")));
        bodies.push(binary(&format!("AA{c}=")));
    }
    for body in bodies {
        let allowed = send.is_valid(&body);
        let reply = send_json(&app, "POST", &format!("/api/websocket/{FEED}/send"), &body).await;
        assert_eq!(
            reply.status != StatusCode::BAD_REQUEST,
            allowed,
            "POST send {body}: the document {}, the handler answered {} {}",
            if allowed { "allows it" } else { "forbids it" },
            reply.status,
            reply.body
        );
    }
}

#[tokio::test]
async fn links_name_operations_and_parameters_that_exist() {
    let fx = Fixture::new();
    let doc = get(&fx.router(), "/api/openapi.json").await.body;
    let mut operations = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let params: BTreeSet<String> = operation["parameters"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|p| p["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            operations.insert(
                operation["operationId"].as_str().unwrap().to_owned(),
                (format!("{method} {path}"), params),
            );
        }
    }
    let mut count = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for response in operation["responses"].as_object().unwrap().values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().unwrap();
                    let (label, params) = operations
                        .get(target)
                        .unwrap_or_else(|| panic!("link {name} to unknown {target}"));
                    for parameter in link["parameters"].as_object().unwrap().keys() {
                        assert!(params.contains(parameter), "{label} has no {parameter}");
                    }
                    count += 1;
                }
            }
        }
    }
    assert!(count >= 20, "{count} links");
    // From the traffic list to a connection's frames, from frames to one frame.
    let frames = &doc["paths"]["/api/websocket/{trafficId}/frames"]["get"]["responses"]["200"];
    assert_eq!(
        frames["links"]["frame"],
        json!({"operationId": "getFrame", "parameters": {"id": "$response.body#/0/id"}})
    );
}
