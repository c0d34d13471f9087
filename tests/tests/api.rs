//! End to end, as root: `frametap-api` over a real agent's recording. A Python
//! `websockets` conversation goes through the agent; the API is queried over HTTP
//! (ureq and the seed's curl commands) and watched live with python-socketio.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use frametap_e2e::{
    Case, Lab, TestCgroup,
    api::{Api, SioListener},
    case::CaseBuilder,
    netns::UPSTREAM_V4,
    pki::TestPki,
    require_root,
    ws::{ClientOptions, WsServer, b64, run_client, spawn_client_on, unb64},
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";

/// The echo server on 8443, and an agent capturing it that trusts the PKI's CA.
fn wss_case(tag: &str) -> CaseBuilder<impl FnOnce(&Lab, &TestPki) -> WsServer> {
    Case::new(tag)
        .ports("8443")
        .upstream_ca()
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
}

/// Runs `script` as a captured wss client trusting the agent's CA.
fn converse(lab: &Lab, cg: &TestCgroup, data_dir: &std::path::Path, script: &Value) {
    let ca = data_dir.join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let run = run_client(lab, Some(cg), &opts, script);
    assert!(run.success, "client failed: {}", run.stderr);
}

/// The id of the only wss traffic entry whose URL ends with `path`.
fn wss_entry(api: &Api, path: &str) -> Value {
    let list = api.wait_get("/api/traffic?protocol=wss", |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|t| t["path"] == path))
    });
    let found: Vec<&Value> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["path"] == path)
        .collect();
    assert_eq!(found.len(), 1, "one wss entry for {path}: {list}");
    found[0].clone()
}

/// (direction, opcode, decoded data, isBinary, length) of frames, as the API shows them.
fn shapes(frames: &[Value]) -> Vec<(String, u64, Vec<u8>, bool, u64)> {
    frames
        .iter()
        .map(|f| {
            let data = match &f["data"] {
                Value::Null => Vec::new(),
                Value::String(s) => {
                    assert!(!s.is_empty(), "empty payloads are null, not \"\": {f}");
                    unb64(s)
                }
                other => panic!("data must be a string or null: {other}"),
            };
            assert_eq!(f["length"].as_u64().unwrap(), data.len() as u64, "{f}");
            (
                f["direction"].as_str().unwrap().to_string(),
                f["opcode"].as_u64().unwrap(),
                data,
                f["isBinary"].as_bool().unwrap(),
                f["length"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn frame(dir: &str, opcode: u64, data: &[u8], binary: bool) -> (String, u64, Vec<u8>, bool, u64) {
    (
        dir.to_string(),
        opcode,
        data.to_vec(),
        binary,
        data.len() as u64,
    )
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Every frame of `traffic`, through the cursor, `page` at a time.
fn all_frames(api: &Api, traffic: &str, page: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = format!("/api/websocket/{traffic}/frames?limit={page}");
    loop {
        let answer = api.request("GET", &path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        let frames = answer.json().as_array().unwrap().clone();
        assert!(frames.len() <= page);
        out.extend(frames.iter().cloned());
        match answer.header("link") {
            Some(link) => {
                assert_eq!(frames.len(), page, "a Link header only on full pages");
                let next = link
                    .strip_prefix('<')
                    .and_then(|l| l.split_once(">; rel=\"next\""))
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_else(|| panic!("bad Link header {link}"));
                path = next;
            }
            None => return out,
        }
    }
}

/// Runs one of the seed's curl examples as written, with our port, ids and token.
fn seed_curl(api: &Api, example: &str, traffic: &str, frame: &str) -> Value {
    let command = example
        .replacen("curl ", "curl -sS -H \"Authorization: Bearer $TOKEN\" ", 1)
        .replace("8889", &api.port.to_string())
        .replace("traffic-uuid-1", traffic)
        .replace("TRAFFIC_ID", traffic)
        .replace("frame-uuid-1", frame);
    let out = Command::new("bash")
        .args(["-c", &command])
        .env("TOKEN", &api.token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{command}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const SEED_PIPELINE: &str = r#"curl -s -H "Authorization: Bearer $TOKEN" "http://localhost:$PORT/api/traffic?methods=GET&search=ws" | jq '.entries[] | select(.protocol == "wss")'"#;

#[test]
fn api_serves_a_recorded_wss_conversation_rest_and_live() {
    let Some(prepared) = wss_case("api").prepare() else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_path_buf();

    // The API may start first: it answers, says what is missing, and 503s reads.
    let api = Api::start(&dir);
    let health = api.get("/api/health");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["agent"]["up"], false, "{health}");
    assert_eq!(health["store"]["open"], false, "{health}");
    let early = api.request("GET", "/api/websocket/0000000000000001/count");
    assert_eq!(early.status, 503, "{}", early.body);
    assert!(early.json()["error"].as_str().unwrap().contains("store"));

    let case = prepared.start_in(data_dir);
    let health = api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["store"]["open"] == true && h["events"]["connected"] == true
    });
    assert_eq!(health["status"], "ok");
    assert_eq!(health["agent"]["pid"], case.agent.pid());

    let mut live = SioListener::connect(&api, Some(&api.token)).expect("Socket.IO connects");
    let binary = vec![0u8, 1, 2, 250, 255];
    converse(
        &case.lab,
        &case.cg,
        &dir,
        &json!([
            {"op": "text", "data": "{\"action\":\"subscribe\",\"channel\":\"chat\"}"},
            {"op": "binary", "data": b64(&binary)},
            {"op": "binary_fragments", "parts": [b64(b"bin-a"), b64(b"bin-b")]},
            {"op": "ping", "data": ""},
            {"op": "ping", "data": "p1"},
            {"op": "close", "code": 4000, "reason": "bye now"},
        ]),
    );

    // Live: open, every frame, close, and the traffic entry, as they happened.
    // Until the close event and as many frame events as it counts (the listener may
    // print them in any order).
    let events = live.collect_until(|ev| {
        let frames = ev
            .iter()
            .filter(|e| e["event"] == "websocket:frame")
            .count();
        ev.iter()
            .any(|e| e["event"] == "websocket:close" && e["data"]["frameCount"] == frames)
    });
    let entry = wss_entry(&api, "/chat");
    let traffic = entry["id"].as_str().unwrap().to_string();
    let named = |name: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .map(|e| e["data"].clone())
            .collect()
    };
    let opens = named("websocket:open");
    assert_eq!(opens.len(), 1, "{events:?}");
    assert_eq!(opens[0]["trafficId"], traffic.as_str());
    let batches = named("traffic:batch");
    assert!(
        batches
            .iter()
            .flat_map(|b| b.as_array().unwrap().iter())
            .any(|t| t["id"] == traffic.as_str() && t["protocol"] == "wss"),
        "traffic:batch carries the wss entry: {batches:?}"
    );
    let mut live_frames = named("websocket:frame");
    // python-socketio runs each event handler on its own thread, so the listener may
    // print events out of order; the frame's seq gives capture order back.
    live_frames.sort_by_key(|f| f["seq"].as_u64());
    let closes = named("websocket:close");
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0]["trafficId"], traffic.as_str());
    assert_eq!(closes[0]["code"], 4000);
    assert_eq!(closes[0]["reason"], "bye now");
    assert_eq!(closes[0]["frameCount"], live_frames.len());

    // REST: the entry as the seed's pipeline finds it, verbatim (plus the token).
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["status"], 101);
    assert_eq!(entry["url"], format!("wss://{HOST}:8443/chat"));
    assert_eq!(entry["host"], format!("{HOST}:8443"));
    assert_eq!(entry["tlsVersion"], "TLSv1.3");
    assert_eq!(entry["remoteAddress"], format!("{UPSTREAM_V4}:8443"));
    assert!(entry["requestHeaders"].is_object() && entry["responseHeaders"].is_object());
    assert!(entry["timestamp"].is_u64() && entry["duration"].is_number());
    assert_eq!(api.get(&format!("/api/traffic/{traffic}")), entry);
    let out = Command::new("bash")
        .args(["-c", SEED_PIPELINE])
        .env("TOKEN", &api.token)
        .env("PORT", api.port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let piped: Value = serde_json::from_slice(&out.stdout).expect("jq printed one entry");
    assert_eq!(piped["id"], traffic.as_str());

    // Count, frames (default page, then through the cursor), each frame by id.
    // Events may arrive a moment before the follower has caught up with their frames.
    let n = live_frames.len();
    api.wait_get(&format!("/api/websocket/{traffic}/count"), |c| {
        c == &json!({"count": n})
    });
    let frames = api.get(&format!("/api/websocket/{traffic}/frames"));
    let frames = frames.as_array().unwrap().clone();
    // The seed's own curl examples, verbatim but for the token and the ids.
    let first_id = frames[0]["id"].as_str().unwrap();
    assert_eq!(
        seed_curl(
            &api,
            r#"curl "http://localhost:8889/api/websocket/traffic-uuid-1/frames?limit=50""#,
            &traffic,
            first_id
        ),
        json!(frames)
    );
    assert_eq!(
        seed_curl(
            &api,
            "curl http://localhost:8889/api/websocket/frame/frame-uuid-1",
            &traffic,
            first_id
        ),
        frames[0]
    );
    assert_eq!(
        seed_curl(
            &api,
            "curl http://localhost:8889/api/websocket/TRAFFIC_ID/count",
            &traffic,
            first_id
        ),
        json!({"count": n})
    );
    assert_eq!(
        seed_curl(
            &api,
            r#"curl "http://localhost:8889/api/websocket/TRAFFIC_ID/frames?limit=10""#,
            &traffic,
            first_id
        ),
        json!(frames[..10])
    );
    assert_eq!(
        frames, live_frames,
        "live events carry the very same frame JSON"
    );
    assert_eq!(all_frames(&api, &traffic, 3), frames);
    let from_client: Vec<Value> = frames
        .iter()
        .filter(|f| f["direction"] == "client-to-server")
        .cloned()
        .collect();
    let from_server: Vec<Value> = frames
        .iter()
        .filter(|f| f["direction"] == "server-to-client")
        .cloned()
        .collect();
    let c2s = "client-to-server";
    let s2c = "server-to-client";
    let subscribe = br#"{"action":"subscribe","channel":"chat"}"#;
    assert_eq!(
        shapes(&from_client),
        vec![
            frame(c2s, 1, subscribe, false),
            frame(c2s, 2, &binary, true),
            frame(c2s, 2, b"bin-a", true),
            frame(c2s, 0, b"bin-b", true),
            // websockets ends a fragmented message with an empty final frame.
            frame(c2s, 0, b"", true),
            frame(c2s, 9, b"", false),
            frame(c2s, 9, b"p1", false),
            frame(c2s, 8, &close_payload(4000, "bye now"), false),
        ]
    );
    assert_eq!(
        shapes(&from_server),
        vec![
            frame(s2c, 1, subscribe, false),
            frame(s2c, 2, &binary, true),
            frame(s2c, 2, b"bin-abin-b", true),
            frame(s2c, 10, b"", false),
            frame(s2c, 10, b"p1", false),
            frame(s2c, 8, &close_payload(4000, "bye now"), false),
        ]
    );
    let client_close = &from_client[7];
    assert_eq!(client_close["closeCode"], 4000);
    assert_eq!(client_close["closeReason"], "bye now");
    for f in &frames {
        assert_eq!(f["trafficId"], traffic.as_str());
        assert!(f["timestamp"].as_u64().unwrap() >= entry["timestamp"].as_u64().unwrap());
        let id = f["id"].as_str().unwrap();
        assert_eq!(&api.get(&format!("/api/websocket/frame/{id}")), f);
    }
    let only_pings = api.get(&format!(
        "/api/websocket/{traffic}/frames?opcode=9&direction=client-to-server"
    ));
    assert_eq!(only_pings.as_array().unwrap().len(), 2);

    // The connection, as mitmproxy's WebSocketData describes it.
    let conn = api.wait_get(&format!("/api/websocket/{traffic}"), |c| c["open"] == false);
    assert_eq!(conn["closed_by_client"], true);
    assert_eq!(conn["close_code"], 4000);
    assert_eq!(conn["close_reason"], "bye now");
    assert!(conn["timestamp_end"].as_u64().unwrap() >= conn["timestamp"].as_u64().unwrap());
    assert_eq!(conn["framesFromClient"], from_client.len());
    assert_eq!(conn["framesFromServer"], from_server.len());

    // DELETE (through the agent), then nothing is left of those frames.
    let deleted = seed_curl(
        &api,
        "curl -X DELETE http://localhost:8889/api/websocket/traffic-uuid-1/frames",
        &traffic,
        first_id,
    );
    assert_eq!(deleted["success"], true, "{deleted}");
    assert_eq!(
        api.get(&format!("/api/websocket/{traffic}/count")),
        json!({"count": 0})
    );
    assert_eq!(
        api.get(&format!("/api/websocket/{traffic}/frames")),
        json!([])
    );
    for f in &frames {
        let gone = api.request(
            "GET",
            &format!("/api/websocket/frame/{}", f["id"].as_str().unwrap()),
        );
        assert_eq!(gone.status, 404);
        assert_eq!(gone.json(), json!({"error": "Frame not found"}));
    }
    // The agent, then the API, then the rest of the case.
    drop(live);
    drop(case.agent);
    drop(api);
}

#[test]
fn api_writes_need_the_agent_and_both_survive_restarts() {
    let Some(mut case) = wss_case("api-restart").start() else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    let mut api = case.api();
    api.wait_get("/api/health", |h| h["store"]["open"] == true);

    let script = |text: &str| json!([{"op": "text", "data": text}, {"op": "close", "code": 1000, "reason": ""}]);
    converse(&case.lab, &case.cg, &dir, &script("first"));
    let first = wss_entry(&api, "/chat")["id"].as_str().unwrap().to_string();
    let count_path = format!("/api/websocket/{first}/count");
    let before = api.wait_get(&count_path, |c| c["count"] == 4);

    // Agent down: reads still work, writes are refused and change nothing.
    assert!(case.agent.stop().success());
    api.wait_get("/api/health", |h| h["agent"]["up"] == false);
    let refused = api.request("DELETE", &format!("/api/websocket/{first}/frames"));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("agent"));
    assert_eq!(api.get(&count_path), before);

    // Agent back on the same data dir: the running API follows it again.
    case.restart_agent();
    api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["events"]["connected"] == true
    });
    let mut live = SioListener::connect(&api, Some(&api.token)).expect("Socket.IO connects");
    converse(&case.lab, &case.cg, &dir, &script("second"));
    let frames = live.collect_until(|ev| ev.iter().any(|e| e["event"] == "websocket:close"));
    let second_frame = frames
        .iter()
        .find(|e| e["event"] == "websocket:frame")
        .expect("live frame after the agent restarted");
    let second = second_frame["data"]["trafficId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second, first);
    api.wait_get(&format!("/api/websocket/{second}/count"), |c| {
        c["count"] == 4
    });

    // API restarted: the same answers from the same store, same token.
    let token = api.token.clone();
    api.stop();
    let api = Api::start(&dir);
    assert_eq!(api.token, token, "the token is kept in the data dir");
    assert_eq!(api.get(&count_path), before);
    let deleted = api.request("DELETE", &format!("/api/websocket/{first}/frames"));
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(api.get(&count_path), json!({"count": 0}));
    assert_eq!(
        api.get(&format!("/api/websocket/{second}/count")),
        json!({"count": 4}),
        "other connections keep their frames"
    );
    drop(case.agent);
}

#[test]
fn a_thousand_live_subscribers_each_get_every_frame_and_rest_stays_served() {
    let Some(case) = wss_case("api-many").start() else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    // The API with its default limits: a thousand Socket.IO connections fit.
    let api = case.api();
    let (mut subscribers, connected) = SioListener::many(&api, 1000, "for everyone");
    assert_eq!(
        (connected["count"].as_u64(), connected["failed"].as_u64()),
        (Some(1000), Some(0)),
        "{connected}"
    );
    // While all of them are connected, REST requests are still answered.
    assert_eq!(api.get("/api/health")["status"], "ok");
    converse(
        &case.lab,
        &case.cg,
        &dir,
        &json!([
            {"op": "text", "data": "for everyone"},
            {"op": "close", "code": 1000, "reason": ""}
        ]),
    );
    let summary = subscribers
        .next(Duration::from_secs(130))
        .expect("the subscribers' summary");
    assert_eq!(summary["received"], 1000, "{summary}");
    assert_eq!(api.get("/api/health")["events"]["dropped"], 0);
}

#[test]
fn api_refuses_bad_requests_with_json_errors() {
    let Some(case) = wss_case("api-errors").start() else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    let api = case.api();
    converse(
        &case.lab,
        &case.cg,
        &dir,
        &json!([{"op": "text", "data": "x"}]),
    );
    let traffic = wss_entry(&api, "/chat")["id"].as_str().unwrap().to_string();

    // The token file is private, and every route wants the token.
    let mode = std::fs::metadata(dir.join("api-token"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    for path in [
        "/api/health",
        "/api/traffic",
        &format!("/api/websocket/{traffic}/count"),
    ] {
        for token in [None, Some("wrong")] {
            let a = api.request_as("GET", path, token);
            assert_eq!(a.status, 401, "{path} {token:?}: {}", a.body);
            assert!(a.json()["error"].is_string());
        }
    }
    let via_query = api.request_as(
        "GET",
        &format!("/api/websocket/{traffic}/count?token={}", api.token),
        None,
    );
    assert_eq!(via_query.status, 200);
    let refused = SioListener::connect(&api, None)
        .err()
        .expect("no token, no events");
    assert!(refused.contains("token"), "{refused}");
    assert!(SioListener::connect(&api, Some("wrong")).is_err());

    let frames = format!("/api/websocket/{traffic}/frames");
    for bad in [
        "limit=0",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=1001",
        "limit=99999999999999999999",
        "after=nonsense",
        "after=",
        "direction=sideways",
        "opcode=3",
        "opcode=x",
    ] {
        let a = api.request("GET", &format!("{frames}?{bad}"));
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json()["error"].as_str().unwrap().len() > 10, "{bad}");
    }
    // A well-formed cursor of another connection names no page of this one.
    let foreign = api.request("GET", &format!("{frames}?after=0000000000000001-00000001"));
    assert_eq!(foreign.status, 404, "{}", foreign.body);
    assert!(foreign.json()["error"].as_str().unwrap().contains("cursor"));
    for bad in ["limit=0", "offset=-3", "protocol=gopher", "limit=x"] {
        let a = api.request("GET", &format!("/api/traffic?{bad}"));
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
    }
    let long = "f".repeat(10_000);
    for path in [
        "/api/websocket/frame/garbage".to_string(),
        format!("/api/websocket/frame/{long}"),
        format!("/api/websocket/frame/{traffic}-0000ffff"),
        "/api/traffic/garbage".to_string(),
        format!("/api/traffic/{long}"),
        "/api/websocket/garbage".to_string(),
        "/api/nothing/here".to_string(),
    ] {
        let a = api.request("GET", &path);
        assert_eq!(a.status, 404, "{}: {}", &path[..path.len().min(60)], a.body);
        assert!(a.json()["error"].is_string());
    }
    assert_eq!(
        api.request("GET", "/api/websocket/frame/garbage").json(),
        json!({"error": "Frame not found"})
    );
    // Unknown connections (or malformed ids) have no frames, on every endpoint that
    // lists them (not an error).
    for id in ["00000000000000aa", "garbage"] {
        assert_eq!(api.get(&format!("/api/websocket/{id}/frames")), json!([]));
        assert_eq!(
            api.get(&format!("/api/websocket/{id}/count")),
            json!({"count": 0})
        );
        assert_eq!(api.get(&format!("/api/websocket/{id}/messages")), json!([]));
        let ndjson = api.request("GET", &format!("/api/websocket/{id}/frames.ndjson"));
        assert_eq!((ndjson.status, ndjson.body.as_str()), (200, ""), "{id}");
    }
    let wrong_method = api.request("PUT", &frames);
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.json()["error"].is_string());
    assert!(
        !api.log_text().contains("panicked"),
        "no handler panicked:\n{}",
        api.log_text()
    );
    let openapi = api.get("/api/openapi.json");
    assert!(openapi["paths"]["/api/websocket/{trafficId}/frames"].is_object());
    std::thread::sleep(Duration::from_millis(10));
}

// ---------------------------------------------------------------------------------
// HTTP bodies, filters and deletion, through the agent with a real client and server.

const HTTP_PORT: &str = "8080";

/// `tests/peers/http_peer.py` on the upstream host, once it answers.
fn start_http_peer(lab: &Lab) -> frametap_e2e::Spawned {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/http_peer.py");
    let mut py = lab.upstream.command("python3");
    py.arg(script)
        .args([UPSTREAM_V4, HTTP_PORT])
        .stdout(std::process::Stdio::null());
    let peer = frametap_e2e::Spawned::spawn("http_peer.py", py);
    frametap_e2e::wait_for(Duration::from_secs(10), || {
        let out = lab
            .client_command(None, "curl")
            .args(["-sS", "--max-time", "2"])
            .arg(format!("http://{UPSTREAM_V4}:{HTTP_PORT}/cl/1"))
            .output()
            .ok()?;
        out.status.success().then_some(())
    })
    .expect("http_peer.py did not come up");
    peer
}

/// curl with `args`, captured; its output.
fn captured_curl(lab: &Lab, cg: &TestCgroup, args: &[&str]) -> Vec<u8> {
    let out = lab
        .client_command(Some(cg), "curl")
        .args(["-sS", "--fail-with-body", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    let status = out.status.code();
    // `status/…` answers 4xx/5xx on purpose: curl then exits with 22.
    assert!(
        out.status.success() || status == Some(22),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn digits(n: usize) -> Vec<u8> {
    b"0123456789".iter().copied().cycle().take(n).collect()
}

/// The one entry whose path is `path`.
fn entry_at(entries: &[Value], path: &str) -> Value {
    let found: Vec<&Value> = entries.iter().filter(|e| e["path"] == path).collect();
    assert_eq!(found.len(), 1, "one entry for {path}: {entries:?}");
    found[0].clone()
}

#[test]
fn http_bodies_are_recorded_filtered_exported_and_deleted() {
    let Some(case) = Case::new("api-bodies")
        .ports(HTTP_PORT)
        .args(&["--max-body-size", "64KiB"])
        .server(|lab, _| start_http_peer(lab))
        .start()
    else {
        return;
    };
    let api = case.api();
    let base = format!("http://{UPSTREAM_V4}:{HTTP_PORT}");

    // Content-Length and chunked responses, under and over the cap; a chunked and a
    // Content-Length upload; a gzip'd answer; two failures.
    assert_eq!(
        captured_curl(&case.lab, &case.cg, &[&format!("{base}/cl/5000")]),
        digits(5000)
    );
    let over = 300_000;
    assert_eq!(
        captured_curl(&case.lab, &case.cg, &[&format!("{base}/chunked/{over}")]).len(),
        over
    );
    let upload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(upload.path(), digits(40_000)).unwrap();
    let echoed = captured_curl(
        &case.lab,
        &case.cg,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &format!("@{}", upload.path().display()),
            &format!("{base}/echo?chunked"),
        ],
    );
    assert_eq!(echoed, digits(40_000));
    assert_eq!(
        captured_curl(
            &case.lab,
            &case.cg,
            &["--data-binary", "a=1&b=2", &format!("{base}/echo?form")]
        ),
        b"a=1&b=2"
    );
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/gzip")]);
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/status/404")]);
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/status/503")]);

    let list = api.wait_get("/api/traffic", |v| v["count"] == 7);
    let entries = list["entries"].as_array().unwrap().clone();
    let body = |id: &Value, which: &str, query: &str| {
        let id = id.as_str().unwrap();
        api.request("GET", &format!("/api/traffic/{id}/{which}/body{query}"))
    };

    // Content-Length, under the cap: all of it.
    let cl = entry_at(&entries, "/cl/5000");
    assert_eq!(
        (
            cl["responseBodySize"].clone(),
            cl["responseBodyTruncated"].clone()
        ),
        (json!(5000), json!(false))
    );
    assert_eq!(cl["requestBodySize"], 0);
    let got = body(&cl["id"], "response", "");
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes, digits(5000));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("x-frametap-truncated"), Some("false"));

    // Chunked, over the 64 KiB cap: the first 64 KiB, and the true size.
    let big = entry_at(&entries, &format!("/chunked/{over}"));
    assert_eq!(big["responseBodySize"], over);
    assert_eq!(big["responseBodyTruncated"], true);
    let got = body(&big["id"], "response", "");
    assert_eq!(got.bytes, digits(64 * 1024));
    assert_eq!(got.header("x-frametap-body-size"), Some("300000"));
    assert_eq!(got.header("x-frametap-stored-size"), Some("65536"));
    assert_eq!(got.header("x-frametap-truncated"), Some("true"));

    // Uploads: chunked (framing removed) and Content-Length, both ways.
    let chunked = entry_at(&entries, "/echo?chunked");
    assert_eq!(chunked["requestBodySize"], 40_000);
    assert_eq!(body(&chunked["id"], "request", "").bytes, digits(40_000));
    assert_eq!(body(&chunked["id"], "response", "").bytes, digits(40_000));
    let form = entry_at(&entries, "/echo?form");
    let got = body(&form["id"], "request", "");
    assert_eq!(got.bytes, b"a=1&b=2");
    assert_eq!(
        got.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );

    // gzip: decoded by default, as sent with raw=true.
    let gz = entry_at(&entries, "/gzip");
    let decoded = body(&gz["id"], "response", "");
    assert_eq!(decoded.body, r#"{"frametap":"decoded","n":[1,2,3]}"#);
    assert_eq!(decoded.header("x-frametap-decoded"), Some("true"));
    assert_eq!(decoded.header("x-frametap-content-encoding"), Some("gzip"));
    let raw = body(&gz["id"], "response", "?raw=true");
    assert_eq!(raw.bytes[..2], [0x1f, 0x8b], "gzip magic");
    assert_eq!(
        raw.bytes.len() as u64,
        gz["responseBodySize"].as_u64().unwrap()
    );

    // HAR carries the texts.
    let har = api.get(&format!(
        "/api/har?trafficId={}",
        gz["id"].as_str().unwrap()
    ));
    assert_eq!(
        har["log"]["entries"][0]["response"]["content"]["text"],
        r#"{"frametap":"decoded","n":[1,2,3]}"#
    );
    let har = api.get(&format!(
        "/api/har?trafficId={}",
        form["id"].as_str().unwrap()
    ));
    let post = &har["log"]["entries"][0]["request"]["postData"];
    assert_eq!(post["text"], "a=1&b=2");
    assert_eq!(post["mimeType"], "application/x-www-form-urlencoded");

    // Filters: status codes and classes, process, pid; bad ones are 400s.
    let ids_of = |query: &str| -> Vec<String> {
        let page = api.get(&format!("/api/traffic?{query}"));
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids_of("status=404"), ["/status/404"]);
    assert_eq!(ids_of("status=5xx"), ["/status/503"]);
    assert_eq!(ids_of("status=4xx,5xx&methods=GET").len(), 2);
    assert_eq!(ids_of("process=curl").len(), 7);
    assert!(ids_of("process=wget").is_empty());
    assert!(ids_of("error=true").is_empty());
    let pid = cl["pid"].as_u64().expect("the client's pid is recorded");
    assert_eq!(ids_of(&format!("pid={pid}")), ["/cl/5000"]);
    for bad in ["status=6xx", "pid=me", "error=perhaps"] {
        assert_eq!(
            api.request("GET", &format!("/api/traffic?{bad}")).status,
            400,
            "{bad}"
        );
    }

    // Delete one, by filter, then all (explicitly); bodies go with them.
    let not_found = entry_at(&entries, "/status/404");
    let id = not_found["id"].as_str().unwrap();
    let deleted = api.request("DELETE", &format!("/api/traffic/{id}"));
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(
        deleted.json(),
        json!({"success": true, "deleted": 1, "frames": 0})
    );
    assert_eq!(
        api.request("GET", &format!("/api/traffic/{id}")).status,
        404
    );
    assert_eq!(
        api.request("DELETE", &format!("/api/traffic/{id}")).status,
        404
    );
    let by_filter = api.request("DELETE", "/api/traffic?status=5xx");
    assert_eq!(by_filter.json()["deleted"], 1);
    assert!(ids_of("status=4xx,5xx").is_empty());
    let refused = api.request("DELETE", "/api/traffic");
    assert_eq!(refused.status, 400, "an empty filter deletes nothing");
    assert_eq!(api.get("/api/traffic")["count"], 5);
    let all = api.request("DELETE", "/api/traffic?all=true");
    assert_eq!(all.json()["deleted"], 5);
    assert_eq!(api.get("/api/traffic"), json!({"entries": [], "count": 0}));
    assert_eq!(body(&big["id"], "response", "").status, 404);
}

#[test]
fn rules_are_known_while_the_agent_is_stopped() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "[[rules]]\nid = \"no-passwords\"\ncontains = \"password\"\naction = { kind = \"drop\" }\n",
    )
    .unwrap();
    let config_path = config.path().display().to_string();
    let Some(mut case) = Case::new("api-rules-down")
        .ports(HTTP_PORT)
        .args(&["--config", &config_path])
        .start()
    else {
        return;
    };
    let api = case.api();
    api.wait_get("/api/health", |h| h["agent"]["up"] == true);
    let live = api.get("/api/rules");
    assert_eq!(live["live"], true, "{live}");
    assert_eq!(live["recordedAt"], Value::Null);
    assert_eq!(live["rules"][0]["id"], "no-passwords");
    let added = api.send_json(
        "POST",
        "/api/rules",
        &json!({"id": "close-chat", "host": "chat.test", "action": {"kind": "close", "code": 4000}}),
    );
    assert_eq!(added.status, 201, "{}", added.body);
    let rules_then = api.get("/api/rules")["rules"].clone();
    assert_eq!(rules_then.as_array().unwrap().len(), 2);

    // Stopped: the rules it had, from the store, saying so.
    assert!(case.agent.stop().success());
    api.wait_get("/api/health", |h| h["agent"]["up"] == false);
    let known = api.wait_get("/api/rules", |r| r["live"] == false);
    assert_eq!(known["rules"], rules_then);
    assert!(known["recordedAt"].as_u64().unwrap() > 1_700_000_000_000);
    // Writes still need the agent.
    let refused = api.request("DELETE", "/api/rules/no-passwords");
    assert_eq!(refused.status, 503, "{}", refused.body);
    let refused = api.request("DELETE", "/api/traffic?all=true");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("nothing was deleted")
    );
}

/// One raw exchange with the API on a new connection: writes `request`, reads one
/// answer. Its status and JSON body, and whether the API closed the connection after
/// it (`None` when that was not waited for).
fn raw_exchange(api: &Api, request: &[u8], wait_close: bool) -> (u16, Value, Option<bool>) {
    let mut stream = TcpStream::connect(("127.0.0.1", api.port)).unwrap();
    // Only so that a regression fails instead of hanging.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut buf = Vec::new();
    let (head_end, length) = loop {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).expect("an answer");
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a Content-Length");
        assert!(
            head.contains("content-type: application/json"),
            "not JSON: {head}"
        );
        if buf.len() >= end + 4 + length {
            break (end + 4, length);
        }
    };
    let status: u16 = String::from_utf8_lossy(&buf[9..12]).parse().unwrap();
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
    let closed = wait_close.then(|| {
        let mut rest = [0u8; 64];
        matches!(stream.read(&mut rest), Ok(0))
    });
    (status, body, closed)
}

/// The `error` of a JSON error body, which must hold nothing else.
fn error_text(body: &Value) -> &str {
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    body["error"].as_str().unwrap()
}

#[test]
fn api_refuses_oversized_and_slow_requests_with_json() {
    let data_dir = tempfile::tempdir().unwrap();
    let api = Api::start_with(
        data_dir.path(),
        &["--header-timeout", "1", "--body-timeout", "1"],
    );
    let auth = format!("Authorization: Bearer {}\r\n", api.token);

    // A body declared too large is refused at once, without waiting for it.
    let request = format!(
        "POST /api/rules HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: 3000000\r\n\r\n"
    );
    let (status, body, closed) = raw_exchange(&api, request.as_bytes(), true);
    assert_eq!(status, 413, "{body}");
    assert!(error_text(&body).contains("2 MiB"), "{body}");
    assert_eq!(closed, Some(true));

    // An overlong request target, an oversized head, a malformed one.
    let long = format!(
        "GET /api/websocket/{}/frames HTTP/1.1\r\nHost: x\r\n{auth}\r\n",
        "f".repeat(100_000)
    );
    let (status, body, _) = raw_exchange(&api, long.as_bytes(), false);
    assert_eq!(status, 414, "{body}");
    assert!(error_text(&body).contains("request target"), "{body}");
    let mut large = format!("GET /api/health HTTP/1.1\r\nHost: x\r\n{auth}");
    for i in 0..200 {
        large.push_str(&format!("X-Padding-{i}: {}\r\n", "p".repeat(400)));
    }
    large.push_str("\r\n");
    let (status, body, _) = raw_exchange(&api, large.as_bytes(), false);
    assert_eq!(status, 431, "{body}");
    assert!(error_text(&body).contains("request head"), "{body}");
    let (status, body, _) = raw_exchange(&api, b"GET /api/health HTTP/7.0\r\n\r\n", false);
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).starts_with("malformed HTTP request"));

    // A head that stops arriving (slowloris): 408 after --header-timeout, then closed.
    let (status, body, closed) = raw_exchange(
        &api,
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Wait:",
        true,
    );
    assert_eq!(status, 408, "{body}");
    assert!(error_text(&body).contains("1 s"), "{body}");
    assert_eq!(closed, Some(true));

    // A body that stops arriving: 408 after --body-timeout.
    let request = format!(
        "POST /api/rules HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"contains\":"
    );
    let (status, body, _) = raw_exchange(&api, request.as_bytes(), false);
    assert_eq!(status, 408, "{body}");
    assert!(error_text(&body).contains("stopped arriving"), "{body}");

    // The router's own errors stay JSON too.
    let (status, body, _) = raw_exchange(
        &api,
        format!("GET /nowhere HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
        false,
    );
    assert_eq!(status, 404, "{body}");
    error_text(&body);
    let (status, body, _) = raw_exchange(
        &api,
        format!("PATCH /api/health HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
        false,
    );
    assert_eq!(status, 405, "{body}");
    error_text(&body);
}

#[test]
fn api_outlasts_clients_that_hold_every_connection() {
    let data_dir = tempfile::tempdir().unwrap();
    let api = Api::start_with(
        data_dir.path(),
        &["--header-timeout", "1", "--max-connections", "4"],
    );
    // More half-sent heads than there are connection slots (slowloris)...
    let slow: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", api.port)).unwrap();
            stream
                .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    // ...do not keep a new client out: each gets its 408 and frees its slot.
    let request = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        api.token
    );
    let (status, body, _) = raw_exchange(&api, request.as_bytes(), false);
    assert_eq!(status, 200, "{body}");
    assert!(body["status"].is_string(), "{body}");
    for mut stream in slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
}

/// Names in `dir`, sorted.
fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn api_working_files_are_private_and_removed_when_it_stops() {
    let parent = tempfile::tempdir().unwrap();
    // Created by the API, as on a first start.
    let data_dir = parent.path().join("data");
    let dir = data_dir.as_path();
    let followers = dir.join("api-followers");
    let mut api = Api::start(dir);
    let pid = api.process.pid();
    assert!(
        !Path::new(&format!("/tmp/frametap-api-{pid}")).exists(),
        "nothing in a predictable /tmp path"
    );
    let names = dir_names(&followers);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with(&format!("{pid}-")), "{names:?}");
    assert_eq!(mode(&followers), 0o700);
    assert_eq!(mode(&followers.join(&names[0])), 0o700);
    assert_eq!(mode(dir), 0o711);

    // SIGTERM: the working directory goes with the process.
    api.process.signal(libc::SIGTERM);
    let status = api.process.wait_timeout(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        api.log_text()
    );
    assert_eq!(dir_names(&followers), Vec::<String>::new());

    // SIGKILL leaves it behind; the next start removes it and says so.
    let mut killed = Api::start(dir);
    killed.process.signal(libc::SIGKILL);
    assert!(
        killed
            .process
            .wait_timeout(Duration::from_secs(20))
            .is_some()
    );
    let left = dir_names(&followers);
    assert_eq!(left.len(), 1, "{left:?}");
    let next = Api::start(dir);
    let names = dir_names(&followers);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with(&format!("{}-", next.process.pid())),
        "{names:?}"
    );
    assert!(
        next.log_text()
            .contains("removed the working directory of an API process that is gone"),
        "{}",
        next.log_text()
    );
}

/// Every entry under the data dir `dir` is its owner's only, but for the public CA
/// certificate, and the dir itself is traversable only.
fn assert_private(dir: &Path) {
    assert_eq!(mode(dir), 0o711, "{}", dir.display());
    let mut open = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let m = meta.permissions().mode() & 0o777;
            if path == dir.join("ca.pem") {
                assert_eq!(m, 0o644, "the CA certificate is public");
            } else if m & 0o077 != 0 {
                open.push(format!("{} {m:o}", path.display()));
            }
        }
    }
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

/// Runs `script` with sh as user nobody.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv (util-linux) runs")
}

#[test]
fn recordings_are_root_only_and_an_open_data_dir_is_closed_at_start() {
    let Some(mut case) = wss_case("api-private").start() else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    let api = case.api();
    converse(
        &case.lab,
        &case.cg,
        &dir,
        &json!([{"op": "text", "data": "private hello"}, {"op": "close", "code": 1000, "reason": ""}]),
    );
    let traffic = wss_entry(&api, "/chat")["id"].as_str().unwrap().to_string();
    api.wait_get(&format!("/api/websocket/{traffic}/count"), |c| {
        c["count"] == 4
    });

    assert_private(&dir);
    // The recording is there in plain text for root...
    let store = dir.join("store");
    let grep = format!("grep -r -a -l {HOST} {}", store.display());
    let as_root = Command::new("sh").args(["-c", &grep]).output().unwrap();
    assert!(as_root.status.success(), "root reads the recording");
    // ...and for nobody else, who can still read the CA certificate.
    let denied = as_nobody(&grep);
    assert!(!denied.status.success());
    assert!(denied.stdout.is_empty(), "{:?}", denied.stdout);
    let ca = as_nobody(&format!("cat {}", dir.join("ca.pem").display()));
    assert!(
        ca.status.success(),
        "{}",
        String::from_utf8_lossy(&ca.stderr)
    );
    assert!(ca.stdout.starts_with(b"-----BEGIN CERTIFICATE-----"));

    // A data dir left open (as older versions did) is closed when the agent starts.
    assert!(case.agent.stop().success());
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }
    assert!(as_nobody(&grep).status.success(), "opened up for the test");
    case.restart_agent();
    assert_private(&dir);
    assert!(!as_nobody(&grep).status.success());
    let warned = case.agent.logs().into_iter().any(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("the data dir was open to other users"))
            && line["entries"].as_u64().is_some_and(|n| n > 3)
    });
    assert!(warned, "{}", case.agent.log_text());
    drop(api);
}

// ---------------------------------------------------------------------------------
// The API contract: Schemathesis fuzzes every operation from /api/openapi.json.

/// Seconds of a long contract run (`cargo xtask contract` sets it); unset, the run is
/// the bounded one of the normal test suite.
const CONTRACT_SECONDS: &str = "FRAMETAP_CONTRACT_SECONDS";
/// More Schemathesis arguments, whitespace-separated (e.g. `--report har
/// --report-dir /tmp/st`; relative paths are inside a temporary directory).
const CONTRACT_ARGS: &str = "FRAMETAP_CONTRACT_ARGS";
/// Test cases per operation and phase in the bounded run.
const CONTRACT_EXAMPLES: &str = "100";
/// The bounded run's seed: the same cases every time.
const CONTRACT_SEED: &str = "20261207";

/// Schemathesis, as `cargo xtask setup` installs it.
const SCHEMATHESIS: &str = "/opt/frametap/schemathesis/bin/schemathesis";

/// New traffic until `stop`, one thing about every quarter second: an HTTP exchange,
/// a short wss conversation, and every 4 s a new connection held open (for 16 s), so
/// that the newest entries (what the traffic list's links lead to) are of every
/// kind. Nothing here waits on the peers for long: the fuzzer's
/// rules may drop any message.
fn keep_recording(
    lab: &Lab,
    cg: &TestCgroup,
    opts: &ClientOptions<'_>,
    base: &str,
    stop: &std::sync::atomic::AtomicBool,
) {
    // The last few connections held open, each for some seconds: what `send` can
    // send into (the oldest is cut when a new one opens).
    let mut open = std::collections::VecDeque::new();
    let paths = ["/cl/300", "/gzip", "/status/404", "/chunked/2000"];
    for round in 0usize.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        match round % 16 {
            4 => {
                open.push_back(spawn_client_on(
                    lab,
                    Some(cg),
                    opts,
                    &json!([{"op": "send", "data": format!("open {round}")}, {"op": "drain"}]),
                    "/live",
                ));
                if open.len() > 4 {
                    open.pop_front();
                }
            }
            0 | 8 | 12 => {
                let url = format!("{base}{}", paths[round / 4 % paths.len()]);
                // Whatever happens to one exchange (a rule closing it, say), the next
                // comes.
                let _ = lab
                    .client_command(Some(cg), "curl")
                    .args(["-sS", "--max-time", "5", "-o", "/dev/null", &url])
                    .output();
            }
            2 | 6 | 10 | 14 => {
                // Sent without waiting for echoes (a rule the fuzzer added may drop
                // them, or close the connection), and cut after 10 s whatever happens.
                let mut client = spawn_client_on(
                    lab,
                    Some(cg),
                    opts,
                    &json!([
                        {"op": "send", "data": format!("round {round}")},
                        {"op": "send", "data": format!("and more {round}")},
                        {"op": "close", "code": 1000, "reason": "done"},
                    ]),
                    "/chat",
                );
                let child = client.child.as_mut().expect("running");
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while child.try_wait().ok().flatten().is_none()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Schemathesis against the real API on a real recording, with the agent running (so
/// writes work): every check but `use_after_free` (whose complaint, `[]` for the
/// frames of a deleted connection, is what the contract specifies), every phase,
/// including stateful sequences that follow the document's links (traffic ->
/// entry, bodies, frames -> frame, send). Zero failures: no server error, no
/// response the document does not describe, no request the document allows
/// refused and none it forbids accepted.
/// Two answers the defaults would count as failures, by design here: 414 and 431 are
/// how the server refuses a request target or head over its limits (a rejection, as
/// 400 is); a replay whose target refuses, or cannot be reached, is a 502.
const SCHEMATHESIS_SETTINGS: &str = r#"
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428", "429", "431", "5xx"]

[[operations]]
include-name = "POST /api/websocket/{trafficId}/replay"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "502"]
"#;

#[test]
fn api_keeps_its_openapi_contract_under_schemathesis() {
    if !require_root() {
        return;
    }
    assert!(
        Path::new(SCHEMATHESIS).exists(),
        "{SCHEMATHESIS} is missing: run `cargo xtask setup`"
    );
    let Some(case) = Case::new("api-contract")
        .ports(&format!("8443,{HTTP_PORT}"))
        .upstream_ca()
        .server(|lab, pki| {
            let server = WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false);
            (start_http_peer(lab), server)
        })
        .start()
    else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    let api = case.api();
    api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["store"]["open"] == true
    });

    // A closed conversation with every kind of frame, one left open to send into,
    // and plain HTTP exchanges with bodies (gzip'd, uploaded, failed).
    converse(
        &case.lab,
        &case.cg,
        &dir,
        &json!([
            {"op": "text", "data": "{\"action\":\"subscribe\",\"channel\":\"chat\"}"},
            {"op": "binary", "data": b64(&[0, 1, 2, 250, 255])},
            {"op": "fragments", "parts": ["frag-a", "frag-b"]},
            {"op": "ping", "data": "p1"},
            {"op": "many", "count": 5},
            {"op": "close", "code": 4000, "reason": "bye now"},
        ]),
    );
    let ca_file = dir.join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca_file),
        deflate: false,
    };
    let _open = spawn_client_on(
        &case.lab,
        Some(&case.cg),
        &opts,
        &json!([{"op": "text", "data": "still here"}, {"op": "drain"}]),
        "/live",
    );
    let base = format!("http://{UPSTREAM_V4}:{HTTP_PORT}");
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/cl/5000")]);
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/gzip")]);
    captured_curl(
        &case.lab,
        &case.cg,
        &["--data-binary", "a=1&b=2", &format!("{base}/echo?form")],
    );
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/status/404")]);
    captured_curl(&case.lab, &case.cg, &[&format!("{base}/status/503")]);
    let live = wss_entry(&api, "/live");
    api.wait_get(
        &format!("/api/websocket/{}", live["id"].as_str().unwrap()),
        |c| c["open"] == true && c["frameCount"].as_u64() >= Some(2),
    );
    api.wait_get("/api/traffic", |v| v["count"] == 7);

    // Two passes over the same recording. The fuzzer deletes traffic as it goes (one
    // entry, by filter, all) faster than any recording refills it: the first pass
    // leaves DELETE out, so that reads, links and sending meet real entries, frames
    // and open connections; the second runs every operation. A long run gives each
    // half of its time.
    let seconds = std::env::var(CONTRACT_SECONDS).ok().map(|s| {
        s.parse::<u64>()
            .expect("FRAMETAP_CONTRACT_SECONDS: whole seconds")
    });
    let passes: [(&str, &[&str]); 2] = [
        (
            "every operation but DELETE",
            &["--exclude-method", "DELETE"],
        ),
        ("every operation", &[]),
    ];
    let work = tempfile::tempdir().unwrap();
    // Schemathesis reads its settings from the directory it runs in.
    std::fs::write(work.path().join("schemathesis.toml"), SCHEMATHESIS_SETTINGS).unwrap();
    let run = |args: &[&str]| {
        let mut st = Command::new(SCHEMATHESIS);
        st.current_dir(work.path())
            .arg("run")
            .arg(format!("{}/api/openapi.json", api.base()))
            .args(["-H", &format!("Authorization: Bearer {}", api.token)])
            .args(["--checks", "all", "--exclude-checks", "use_after_free"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--workers", "2", "--request-timeout", "30"])
            .args(["--generation-database", "none", "--no-color"])
            .args(args);
        match seconds {
            // A long run: fuzzing and stateful rounds repeat until the time is spent,
            // each run with a new seed (printed in the summary, for `--seed`).
            Some(seconds) => st.args(["--max-time", &(seconds / 2).max(1).to_string()]),
            None => st.args(["--max-examples", CONTRACT_EXAMPLES, "--seed", CONTRACT_SEED]),
        };
        if let Ok(more) = std::env::var(CONTRACT_ARGS) {
            st.args(more.split_whitespace());
        }
        let started = std::time::Instant::now();
        let out = st.output().expect("schemathesis runs");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status, output, started.elapsed())
    };
    // New traffic keeps coming meanwhile. Every pass runs before any result is
    // judged: the recording thread must stop first.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let results = std::thread::scope(|scope| {
        scope.spawn(|| keep_recording(&case.lab, &case.cg, &opts, &base, &stop));
        let mut results = Vec::new();
        for (name, args) in passes {
            let (status, output, took) = run(args);
            let failed = !status.success();
            results.push((name, status, output, took));
            if failed {
                break;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        results
    });
    for (name, status, output, took) in results {
        assert!(
            status.success(),
            "schemathesis ({name}) found contract violations ({status}):\n{output}\n\nAPI log:\n{}",
            api.log_text()
        );
        // Phases, links followed, warnings and totals, for `cargo xtask contract` (and
        // `--nocapture`).
        eprintln!(
            "schemathesis ({name}) passed in {:.0} s:\n{output}",
            took.as_secs_f64()
        );
    }
    assert!(
        !api.log_text().contains("panicked"),
        "no handler panicked:\n{}",
        api.log_text()
    );
}
