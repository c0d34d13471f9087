//! The cases of `openapi_document_matches_routes_and_responses` ([`super::openapi`]):
//! every route the router serves and, per route, requests for each documented status.

use frametap_control::Refusal;
use frametap_store::TrafficId;
use serde_json::{Value, json};

use super::fakes::BAD_REGEX;
use super::{CHAT, DOCS, FEED, LOGIN, UNKNOWN};

/// Every route the router serves: (method, OpenAPI path).
pub(super) const ROUTES: [(&str, &str); 25] = [
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
    ("get", "/api/websocket/{trafficId}/compare/{other}"),
    ("post", "/api/websocket/{trafficId}/replay"),
    ("get", "/api/replays"),
    ("get", "/api/replays/{id}"),
    ("delete", "/api/replays/{id}"),
];

/// Cases of [`openapi_document_matches_routes_and_responses`] for traffic deletion
/// and bodies. The last one deletes DOCS.
pub(super) fn traffic_route_cases() -> Vec<(Setup, &'static str, String, Payload, &'static str, u16)>
{
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

/// Cases of [`openapi_document_matches_routes_and_responses`] for the comparison.
pub(super) fn compare_route_cases() -> Vec<(Setup, &'static str, String, Payload, &'static str, u16)>
{
    use Setup::*;
    let c = ROUTES[20].1;
    let compare = format!("/api/websocket/{CHAT}/compare/{FEED}");
    let none = || Payload::None;
    vec![
        (Normal, "get", compare.clone(), none(), c, 200),
        (
            Normal,
            "get",
            format!("{compare}?ignore=%5Cd%2B&ignorePath=%24..id&direction=to-client"),
            none(),
            c,
            200,
        ),
        (Normal, "get", format!("{compare}?ignore=("), none(), c, 400),
        (
            Normal,
            "get",
            format!("{compare}?ignorePath=id"),
            none(),
            c,
            400,
        ),
        (WithToken, "get", compare.clone(), none(), c, 401),
        (
            Normal,
            "get",
            format!("/api/websocket/{CHAT}/compare/{UNKNOWN}"),
            none(),
            c,
            404,
        ),
        (NoStore, "get", compare, none(), c, 503),
    ]
}

/// Cases of [`openapi_document_matches_routes_and_responses`] for replays, in order:
/// the first replay (`replay-1`) is read, cancelled, and cancelled again.
pub(super) fn replay_route_cases() -> Vec<(Setup, &'static str, String, Payload, &'static str, u16)>
{
    use Setup::*;
    let (start, list, one, cancel) = (ROUTES[21].1, ROUTES[22].1, ROUTES[23].1, ROUTES[24].1);
    let replay = |t: TrafficId| format!("/api/websocket/{t}/replay");
    let body = |v: Value| Payload::Json(v);
    vec![
        (
            Normal,
            "post",
            replay(FEED),
            body(json!({"timing": "fast"})),
            start,
            202,
        ),
        (
            Normal,
            "post",
            replay(FEED),
            body(json!({"timing": "soon"})),
            start,
            400,
        ),
        (WithToken, "post", replay(FEED), body(json!({})), start, 401),
        (Normal, "post", replay(UNKNOWN), body(json!({})), start, 404),
        (
            Normal,
            "post",
            replay(FEED),
            body(json!({"messages": []})),
            start,
            409,
        ),
        (
            Normal,
            "post",
            replay(FEED),
            body(json!({"target": format!("wss://{}/", super::fakes::REFUSING_HOST)})),
            start,
            502,
        ),
        (NoStore, "post", replay(FEED), body(json!({})), start, 503),
        (
            Normal,
            "get",
            "/api/replays".into(),
            Payload::None,
            list,
            200,
        ),
        (
            AgentDown,
            "get",
            "/api/replays".into(),
            Payload::None,
            list,
            503,
        ),
        (
            Normal,
            "get",
            "/api/replays/replay-1".into(),
            Payload::None,
            one,
            200,
        ),
        (
            Normal,
            "get",
            "/api/replays/nope".into(),
            Payload::None,
            one,
            404,
        ),
        (
            Normal,
            "delete",
            "/api/replays/replay-1".into(),
            Payload::None,
            cancel,
            200,
        ),
        (
            Normal,
            "delete",
            "/api/replays/replay-1".into(),
            Payload::None,
            cancel,
            409,
        ),
        (
            Normal,
            "delete",
            "/api/replays/nope".into(),
            Payload::None,
            cancel,
            404,
        ),
    ]
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Setup {
    Normal,
    WithToken,
    NoStore,
    AgentDown,
    AgentFails,
    AgentRefuses(Refusal),
}

/// The body of a test request.
#[derive(Clone, Debug)]
pub(super) enum Payload {
    None,
    Json(Value),
    /// Content type and bytes.
    Raw(&'static str, Vec<u8>),
}

impl Payload {
    pub(super) fn parts(&self) -> Option<(&str, Vec<u8>)> {
        match self {
            Payload::None => None,
            Payload::Json(value) => Some(("application/json", serde_json::to_vec(value).unwrap())),
            Payload::Raw(content_type, bytes) => Some((content_type, bytes.clone())),
        }
    }
}

/// Cases of [`openapi_document_matches_routes_and_responses`] for the message, send,
/// export and rule routes: every documented status that can be produced.
pub(super) fn new_route_cases() -> Vec<(Setup, &'static str, String, Payload, &'static str, u16)> {
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
