//! End to end, as root: `frametap-api` over a real agent's recording. A Python
//! `websockets` conversation goes through the agent; the API is queried over HTTP
//! (ureq and the seed's curl commands) and watched live with python-socketio.
use std::process::Command;
use std::time::Duration;

use frametap_e2e::{
    Agent, Lab, TestCgroup,
    api::{Api, SioListener},
    netns::UPSTREAM_V4,
    pki::TestPki,
    require_root, serial,
    ws::{ClientOptions, WsServer, b64, run_client, unb64},
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";

fn agent_args(cg: &TestCgroup, pki: &TestPki) -> Vec<String> {
    vec![
        "--cgroup".into(),
        cg.relative.clone(),
        "--ports".into(),
        "8443".into(),
        "--upstream-ca".into(),
        pki.ca.display().to_string(),
    ]
}

fn start_agent(lab: &Lab, cg: &TestCgroup, pki: &TestPki, data_dir: tempfile::TempDir) -> Agent {
    let args = agent_args(cg, pki);
    Agent::start_in(
        lab,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        data_dir,
    )
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
    if !require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::new();
    let cg = TestCgroup::new("api");
    let pki = TestPki::new(&[HOST, UPSTREAM_V4]);
    let _server = WsServer::start(&lab, UPSTREAM_V4, 8443, Some(&pki), false);
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

    let agent = start_agent(&lab, &cg, &pki, data_dir);
    let health = api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["store"]["open"] == true && h["events"]["connected"] == true
    });
    assert_eq!(health["status"], "ok");
    assert_eq!(health["agent"]["pid"], agent.pid());

    let mut live = SioListener::connect(&api, Some(&api.token)).expect("Socket.IO connects");
    let binary = vec![0u8, 1, 2, 250, 255];
    converse(
        &lab,
        &cg,
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
    drop(live);
    drop(agent);
}

#[test]
fn api_writes_need_the_agent_and_both_survive_restarts() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::new();
    let cg = TestCgroup::new("api-restart");
    let pki = TestPki::new(&[HOST, UPSTREAM_V4]);
    let _server = WsServer::start(&lab, UPSTREAM_V4, 8443, Some(&pki), false);
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_path_buf();
    let mut agent = start_agent(&lab, &cg, &pki, data_dir);
    let mut api = Api::start(&dir);
    api.wait_get("/api/health", |h| h["store"]["open"] == true);

    let script = |text: &str| json!([{"op": "text", "data": text}, {"op": "close", "code": 1000, "reason": ""}]);
    converse(&lab, &cg, &dir, &script("first"));
    let first = wss_entry(&api, "/chat")["id"].as_str().unwrap().to_string();
    let count_path = format!("/api/websocket/{first}/count");
    let before = api.wait_get(&count_path, |c| c["count"] == 4);

    // Agent down: reads still work, writes are refused and change nothing.
    assert!(agent.stop().success());
    let Agent { data_dir, .. } = agent;
    api.wait_get("/api/health", |h| h["agent"]["up"] == false);
    let refused = api.request("DELETE", &format!("/api/websocket/{first}/frames"));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("agent"));
    assert_eq!(api.get(&count_path), before);

    // Agent back on the same data dir: the running API follows it again.
    let agent = start_agent(&lab, &cg, &pki, data_dir);
    api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["events"]["connected"] == true
    });
    let mut live = SioListener::connect(&api, Some(&api.token)).expect("Socket.IO connects");
    converse(&lab, &cg, &dir, &script("second"));
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
    drop(agent);
}

#[test]
fn api_refuses_bad_requests_with_json_errors() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::new();
    let cg = TestCgroup::new("api-errors");
    let pki = TestPki::new(&[HOST, UPSTREAM_V4]);
    let _server = WsServer::start(&lab, UPSTREAM_V4, 8443, Some(&pki), false);
    let data_dir = tempfile::tempdir().unwrap();
    let dir = data_dir.path().to_path_buf();
    let _agent = start_agent(&lab, &cg, &pki, data_dir);
    let api = Api::start(&dir);
    converse(&lab, &cg, &dir, &json!([{"op": "text", "data": "x"}]));
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
        "after=0000000000000001-00000001",
        "direction=sideways",
        "opcode=3",
        "opcode=x",
    ] {
        let a = api.request("GET", &format!("{frames}?{bad}"));
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json()["error"].as_str().unwrap().len() > 10, "{bad}");
    }
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
    // Unknown connections have no frames (not an error).
    assert_eq!(api.get("/api/websocket/00000000000000aa/frames"), json!([]));
    assert_eq!(
        api.get("/api/websocket/00000000000000aa/count"),
        json!({"count": 0})
    );
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
