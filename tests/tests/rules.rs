//! End to end, as root: message rules, injection and export through the real
//! agent and API, with Python `websockets` peers on both ends. Rules are added and
//! removed over the API while the connection is open; messages are injected both
//! ways; the peers' own logs say what actually arrived.
use std::time::Duration;

use frametap_e2e::{
    Case, Lab, TestCgroup,
    api::{Api, SioListener},
    netns::UPSTREAM_V4,
    ws::{ClientOptions, WsServer, read_echoes, spawn_client_on, unb64},
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";

/// The agent capturing 8443 and trusting the PKI's CA upstream, and the echo server
/// (with permessage-deflate or without) behind it.
fn start(tag: &str, deflate: bool) -> Option<Case<WsServer>> {
    Case::new(tag)
        .ports("8443")
        .upstream_ca()
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), deflate))
        .start()
}

/// The traffic id of the wss connection to `path`, once it is recorded.
fn connection(api: &Api, path: &str) -> String {
    let list = api.wait_get("/api/traffic?protocol=wss", |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|t| t["path"] == path))
    });
    list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == path)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn add_rule(api: &Api, rule: Value) -> String {
    let answer = api.send_json("POST", "/api/rules", &rule);
    assert_eq!(
        answer.status, 201,
        "POST /api/rules {rule}: {}",
        answer.body
    );
    answer.json()["id"].as_str().unwrap().to_string()
}

fn inject(api: &Api, traffic: &str, direction: &str, text: &str) -> Value {
    let answer = api.send_json(
        "POST",
        &format!("/api/websocket/{traffic}/send"),
        &json!({"direction": direction, "data": text, "isBinary": false}),
    );
    assert!(
        answer.status == 201 || answer.status == 200,
        "inject {direction} {text:?}: {} {}",
        answer.status,
        answer.body
    );
    answer.json()
}

/// Texts of the client's received messages, in order.
fn texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|v| v.get("echo").is_some())
        .map(|v| String::from_utf8(unb64(v["data"].as_str().unwrap())).unwrap())
        .collect()
}

/// Every message of a connection, through the messages endpoint's pages.
fn messages(api: &Api, traffic: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let mut path = format!("/api/websocket/{traffic}/messages?limit=3");
        if let Some(last) = all.last() {
            path.push_str(&format!("&after={}", last["id"].as_str().unwrap()));
        }
        let page = api.get(&path);
        let page = page.as_array().unwrap().clone();
        let done = page.len() < 3;
        all.extend(page);
        if done {
            return all;
        }
    }
}

fn content(message: &Value) -> String {
    match message["contentEncoding"].as_str() {
        Some("base64") => {
            String::from_utf8_lossy(&unb64(message["content"].as_str().unwrap())).into_owned()
        }
        _ => message["content"].as_str().unwrap().to_string(),
    }
}

/// Rules added and removed while the connection is open, and injection both ways.
fn rules_and_injection(deflate: bool) {
    let Some(case) = start("rules", deflate) else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    let api = case.api();
    api.wait_get("/api/health", |h| h["agent"]["up"] == true);

    let path = if deflate { "/deflate" } else { "/plain" };
    let ca = dir.join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate,
    };
    let script = json!([
        {"op": "text", "data": "before"},
        {"op": "recv"},
        {"op": "recv"},
        {"op": "text", "data": "my secret token"},
        {"op": "send", "data": "drop me please"},
        {"op": "text", "data": "after drop"},
        {"op": "recv"},
        {"op": "text", "data": "my secret token"},
        {"op": "close", "code": 1000, "reason": "done"},
    ]);
    let mut client = spawn_client_at(&case.lab, &case.cg, &opts, &script, path);
    let mut seen = read_echoes(&mut client, 1);
    assert_eq!(texts(&seen), ["before"], "{seen:?}");
    let traffic = connection(&api, path);

    // Rules take effect on the open connection at once.
    let replace = add_rule(
        &api,
        json!({"host": HOST, "direction": "to-server", "type": "text",
               "action": {"kind": "replace", "pattern": "secret", "replacement": "XXXX"}}),
    );
    let drop = add_rule(
        &api,
        json!({"path": path, "contains": "drop me", "action": {"kind": "drop"}}),
    );
    let listed = api.get("/api/rules");
    assert_eq!(listed["rules"].as_array().unwrap().len(), 2, "{listed}");
    // A rule that does not compile is refused and changes nothing.
    let bad = api.send_json(
        "POST",
        "/api/rules",
        &json!({"regex": "(unclosed", "action": {"kind": "drop"}}),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.json()["error"].as_str().unwrap().contains("regex"),
        "{}",
        bad.body
    );
    assert_eq!(api.get("/api/rules")["rules"].as_array().unwrap().len(), 2);

    let to_client = inject(&api, &traffic, "to-client", "to you");
    inject(&api, &traffic, "to-server", "to server");
    seen.extend(read_echoes(&mut client, 4));
    assert_eq!(
        texts(&seen),
        [
            "before",
            "to you",
            "to server",
            "my XXXX token",
            "after drop"
        ],
        "{seen:?}"
    );

    // Removed while the connection is still open: messages go through untouched.
    for id in [&replace, &drop] {
        let answer = api.request("DELETE", &format!("/api/rules/{id}"));
        assert!(
            answer.status == 204 || answer.status == 200,
            "{}",
            answer.body
        );
    }
    assert_eq!(
        api.request("DELETE", &format!("/api/rules/{drop}")).status,
        404
    );
    inject(&api, &traffic, "to-client", "rules gone");
    let out = client.output();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rest: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    seen.extend(rest);
    assert_eq!(
        texts(&seen),
        [
            "before",
            "to you",
            "to server",
            "my XXXX token",
            "after drop",
            "rules gone",
            "my secret token"
        ],
        "{seen:?}"
    );
    let closed = seen.iter().find_map(|v| v.get("closed")).cloned();
    assert_eq!(closed, Some(json!({"code": 1000, "reason": "done"})));

    // What the server got: never the dropped message, the replaced one rewritten.
    let got: Vec<String> = case
        .server
        .received()
        .into_iter()
        .map(|(_, data)| String::from_utf8(data).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "before",
            "to server",
            "my XXXX token",
            "after drop",
            "my secret token"
        ]
    );

    // The message view says what happened to each.
    let all = wait_messages(&api, &traffic, 14);
    let find = |from_client: bool, text: &str| -> Vec<&Value> {
        all.iter()
            .filter(|m| m["fromClient"] == from_client && content(m) == text)
            .collect()
    };
    let dropped = find(true, "drop me please");
    assert_eq!(dropped.len(), 1, "{all:#?}");
    assert_eq!(dropped[0]["dropped"], true);
    let original = find(true, "my secret token");
    assert_eq!(original.len(), 2, "{all:#?}");
    assert_eq!(
        original[0]["dropped"], true,
        "replaced: the original was not forwarded"
    );
    assert_eq!(
        original[1]["dropped"], false,
        "after the rules were removed"
    );
    let modified = find(true, "my XXXX token");
    assert_eq!(modified.len(), 1);
    assert_eq!(modified[0]["modified"], true);
    let injected = find(false, "to you");
    assert_eq!(injected.len(), 1);
    assert_eq!(injected[0]["injected"], true);
    assert_eq!(injected[0]["type"], "text");
    assert_eq!(to_client["trafficId"], traffic.as_str());
    let injected_up = find(true, "to server");
    assert_eq!(injected_up[0]["injected"], true);
    // The server's echo of the injected message is a normal message.
    assert_eq!(find(false, "to server")[0]["injected"], false);

    // Sending into a closed connection: 409; into an unknown one: 404.
    let closed = api.send_json(
        "POST",
        &format!("/api/websocket/{traffic}/send"),
        &json!({"direction": "to-client", "data": "late", "isBinary": false}),
    );
    assert_eq!(closed.status, 409, "{}", closed.body);
    let unknown = api.send_json(
        "POST",
        "/api/websocket/00000000000000ff/send",
        &json!({"direction": "to-client", "data": "x", "isBinary": false}),
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    check_exports(&api, &traffic, all.len());
}

/// Spawns the scripted client on `path`.
fn spawn_client_at(
    lab: &Lab,
    cg: &TestCgroup,
    opts: &ClientOptions<'_>,
    script: &Value,
    path: &str,
) -> frametap_e2e::procs::Spawned {
    spawn_client_on(lab, Some(cg), opts, script, path)
}

/// The connection's messages once at least `n` are readable.
fn wait_messages(api: &Api, traffic: &str, n: usize) -> Vec<Value> {
    frametap_e2e::wait_for(Duration::from_secs(10), || {
        let all = messages(api, traffic);
        (all.len() >= n).then_some(all)
    })
    .unwrap_or_else(|| panic!("fewer than {n} messages: {:#?}", messages(api, traffic)))
}

/// HAR (validated by an independent reader) and the NDJSON frame export.
fn check_exports(api: &Api, traffic: &str, message_count: usize) {
    let har = api.request("GET", &format!("/api/har?trafficId={traffic}"));
    assert_eq!(har.status, 200, "{}", har.body);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &har.body).unwrap();
    let reimport = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import json, sys
from haralyzer import HarParser
parser = HarParser.from_file(sys.argv[1])
assert parser.har_data["version"] == "1.2", parser.har_data.get("version")
entries = [e for page in parser.pages for e in page.entries] or parser.har_data["entries"]
ws = [e for e in parser.har_data["entries"] if e.get("_resourceType") == "websocket"]
assert len(ws) == 1, len(ws)
messages = ws[0]["_webSocketMessages"]
assert all(m["type"] in ("send", "receive") and m["opcode"] in (1, 2) for m in messages)
print(json.dumps({"entries": len(parser.har_data["entries"]), "messages": len(messages),
                  "texts": [m["data"] for m in messages]}))
"#,
        )
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        reimport.status.success(),
        "haralyzer could not read the HAR: {}\n{}",
        String::from_utf8_lossy(&reimport.stderr),
        har.body
    );
    let summary: Value = serde_json::from_slice(&reimport.stdout).unwrap();
    assert_eq!(summary["messages"], message_count as u64, "{summary}");
    assert!(
        summary["texts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "my XXXX token"),
        "{summary}"
    );

    let count = api.get(&format!("/api/websocket/{traffic}/count"))["count"]
        .as_u64()
        .unwrap();
    let ndjson = api.request("GET", &format!("/api/websocket/{traffic}/frames.ndjson"));
    assert_eq!(ndjson.status, 200, "{}", ndjson.body);
    let lines: Vec<Value> = ndjson
        .body
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len() as u64, count);
    let first = api.get(&format!("/api/websocket/{traffic}/frames?limit=1"));
    assert_eq!(lines[0], first[0]);
}

#[test]
fn rules_and_injection_on_a_plain_websocket() {
    rules_and_injection(false);
}

#[test]
fn rules_and_injection_on_a_deflate_websocket() {
    rules_and_injection(true);
}

#[test]
fn a_close_rule_closes_both_sides() {
    let Some(case) = start("rules-close", false) else {
        return;
    };
    let dir = case.data_dir().to_path_buf();
    let api = case.api();
    api.wait_get("/api/health", |h| h["agent"]["up"] == true);
    add_rule(
        &api,
        json!({"contains": "goodbye",
               "action": {"kind": "close", "code": 4003, "reason": "closed by rule"}}),
    );
    let ca = dir.join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let script = json!([
        {"op": "text", "data": "hello"},
        {"op": "send_expect_close", "data": "goodbye"},
    ]);
    let out = spawn_client_at(&case.lab, &case.cg, &opts, &script, "/close").output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(texts(&lines), ["hello"]);
    let closed = lines.iter().find_map(|v| v.get("closed")).cloned();
    assert_eq!(
        closed,
        Some(json!({"code": 4003, "reason": "closed by rule"}))
    );
    let got: Vec<Vec<u8>> = case.server.received().into_iter().map(|(_, d)| d).collect();
    assert_eq!(got, [b"hello".to_vec()], "the server never saw goodbye");

    let traffic = connection(&api, "/close");
    let ws = api.wait_get(&format!("/api/websocket/{traffic}"), |c| {
        !c["timestamp_end"].is_null()
    });
    assert_eq!(ws["close_code"], 4003, "{ws}");
    assert_eq!(ws["close_reason"], "closed by rule", "{ws}");
}

/// The API on the case's data dir, once it follows the agent's events, for the tests
/// below.
fn connected_api(case: &Case<WsServer>) -> Api {
    let api = case.api();
    api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["events"]["connected"] == true
    });
    api
}

fn plain_client(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    (format!("{UPSTREAM_V4}:8443"), dir.join("ca.pem"))
}

/// Whether a live event belongs to connection `traffic`.
fn belongs(event: &Value, traffic: &str) -> bool {
    match event["event"].as_str() {
        Some("traffic:batch") => event["data"]
            .as_array()
            .is_some_and(|entries| entries.iter().any(|t| t["id"] == traffic)),
        _ => event["data"]["trafficId"] == traffic,
    }
}

/// While a rule holds a message until its last fragment, the other direction's
/// frames are recorded first; the live events still come in `seq` order, the traffic
/// entry before the open, and each message right after its last frame, as the
/// messages endpoint gives it. Watched with python-socketio's asyncio client, which
/// prints events in the order they arrive.
#[test]
fn live_events_keep_capture_order_while_a_rule_holds_messages() {
    let Some(case) = start("rules-order", false) else {
        return;
    };
    let api = connected_api(&case);
    let dir = case.data_dir().to_path_buf();
    // Any rule that applies to the connection makes it hold every message.
    add_rule(
        &api,
        json!({"path": "/order", "contains": "never sent", "action": {"kind": "drop"}}),
    );
    let mut live = SioListener::connect_ordered(&api, Some(&api.token)).expect("Socket.IO");
    let (connect, ca) = plain_client(&dir);
    let opts = ClientOptions {
        connect: &connect,
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    // "B1", "B2" stay one open message while the client pings inside it and the
    // echo of "A" comes back.
    let script = json!([
        {"op": "send", "data": "A"},
        {"op": "fragments_around_recv", "parts": ["B1", "B2"], "ping": "inside"},
        {"op": "close", "code": 1000, "reason": "bye"},
    ]);
    let out = spawn_client_at(&case.lab, &case.cg, &opts, &script, "/order").output();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let traffic = connection(&api, "/order");
    let events = live.collect_until(|ev| {
        ev.iter()
            .any(|e| e["event"] == "websocket:close" && e["data"]["trafficId"] == traffic)
    });
    let mine: Vec<&Value> = events.iter().filter(|e| belongs(e, &traffic)).collect();
    let names: Vec<&str> = mine.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names[..2], ["traffic:batch", "websocket:open"], "{names:?}");
    assert_eq!(names.last(), Some(&"websocket:close"), "{names:?}");

    // Frames in seq order, every one of them.
    let frame_seqs: Vec<u64> = mine
        .iter()
        .filter(|e| e["event"] == "websocket:frame")
        .map(|e| e["data"]["seq"].as_u64().unwrap())
        .collect();
    let count = api.get(&format!("/api/websocket/{traffic}/count"))["count"]
        .as_u64()
        .unwrap();
    assert_eq!(frame_seqs, (1..=count).collect::<Vec<_>>());

    // The hold did reorder the recording: the ping inside the message "B1B2" was
    // recorded at once, the message's frames only once its last one came. (The
    // echo of "A" usually came meanwhile too, but that depends on timing.)
    let all = wait_messages(&api, &traffic, 4);
    let held = all
        .iter()
        .find(|m| m["fromClient"] == true && content(m) == "B1B2")
        .unwrap_or_else(|| panic!("{all:#?}"));
    let seq = |id: &Value| {
        u64::from_str_radix(id.as_str().unwrap().rsplit('-').next().unwrap(), 16).unwrap()
    };
    let pings = api.get(&format!(
        "/api/websocket/{traffic}/frames?opcode=9&direction=to-server"
    ));
    let ping = seq(&pings[0]["id"]);
    assert!(
        seq(&held["id"]) < ping && ping < seq(&held["lastFrameId"]),
        "the ping is inside the held message: {pings} {held}"
    );

    // Messages: right after their last frame, the same JSON as over REST.
    let mut last_frame = None;
    let mut live_messages = Vec::new();
    for event in &mine {
        match event["event"].as_str() {
            Some("websocket:frame") => last_frame = Some(event["data"]["id"].clone()),
            Some("websocket:message") => {
                assert_eq!(
                    Some(&event["data"]["lastFrameId"]),
                    last_frame.as_ref(),
                    "{event}"
                );
                live_messages.push(event["data"].clone());
            }
            _ => {}
        }
    }
    let by_id = |mut v: Vec<Value>| {
        v.sort_by_key(|m| m["id"].as_str().unwrap().to_owned());
        v
    };
    assert_eq!(by_id(live_messages), by_id(all));
    let close = mine.last().unwrap();
    assert_eq!(close["data"]["frameCount"], count);
}

/// The user's three disagreements, under a replace rule and an injected message: the
/// connection view, `/count` and the `websocket:close` event agree, each count says
/// what it counts, and they add up, before and after DELETE. Directions are written
/// in the frames' vocabulary where the rules' is usual, and the other way round.
#[test]
fn counts_agree_under_rules_injection_and_delete() {
    let Some(case) = start("rules-counts", false) else {
        return;
    };
    let api = connected_api(&case);
    let dir = case.data_dir().to_path_buf();
    add_rule(
        &api,
        json!({"path": "/counts", "direction": "client-to-server",
               "action": {"kind": "replace", "pattern": "secret", "replacement": "XXXX"}}),
    );
    let mut live = SioListener::connect(&api, Some(&api.token)).expect("Socket.IO");
    let (connect, ca) = plain_client(&dir);
    let opts = ClientOptions {
        connect: &connect,
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let script = json!([
        {"op": "text", "data": "my secret"},
        {"op": "recv"},
        {"op": "close", "code": 1000, "reason": "done"},
    ]);
    let mut client = spawn_client_at(&case.lab, &case.cg, &opts, &script, "/counts");
    assert_eq!(texts(&read_echoes(&mut client, 1)), ["my XXXX"]);
    let traffic = connection(&api, "/counts");
    inject(&api, &traffic, "server-to-client", "notice");
    let out = client.output();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = live.collect_until(|ev| {
        ev.iter()
            .any(|e| e["event"] == "websocket:close" && e["data"]["trafficId"] == traffic)
    });
    let closed = events
        .iter()
        .find(|e| e["event"] == "websocket:close" && e["data"]["trafficId"] == traffic)
        .map(|e| e["data"].clone())
        .unwrap();

    let count_path = format!("/api/websocket/{traffic}/count");
    api.wait_get(&count_path, |c| c["count"] == closed["frameCount"]);
    let view = api.wait_get(&format!("/api/websocket/{traffic}"), |c| c["open"] == false);
    let keys = [
        "frameCount",
        "storedFrameCount",
        "recordedFrameCount",
        "deletedFrameCount",
        "framesFromClient",
        "framesFromServer",
        "framesFromFrametap",
    ];
    for key in keys {
        assert_eq!(closed[key], view[key], "{key}: {closed} vs {view}");
    }
    assert_eq!(
        view["framesFromFrametap"], 2,
        "the replacement and the injected message: {view}"
    );
    assert_eq!(view["deletedFrameCount"], 0);
    add_up(&view);
    // The query takes the rules' names for directions too.
    assert_eq!(
        api.get(&format!(
            "/api/websocket/{traffic}/frames?direction=to-server"
        )),
        api.get(&format!(
            "/api/websocket/{traffic}/frames?direction=client-to-server"
        ))
    );

    let deleted = api.request("DELETE", &format!("/api/websocket/{traffic}/frames"));
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(api.get(&count_path), json!({"count": 0}));
    let after = api.get(&format!("/api/websocket/{traffic}"));
    assert_eq!(after["frameCount"], 0, "{after}");
    assert_eq!(after["deletedFrameCount"], view["recordedFrameCount"]);
    assert_eq!(after["framesFromClient"], view["framesFromClient"]);
    add_up(&after);
}

/// The counts' rule: stored + deleted = recorded = client + server + frametap.
fn add_up(view: &Value) {
    let n = |key: &str| {
        view[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {view}"))
    };
    assert_eq!(n("frameCount"), n("storedFrameCount"));
    assert_eq!(
        n("storedFrameCount") + n("deletedFrameCount"),
        n("recordedFrameCount"),
        "{view}"
    );
    assert_eq!(
        n("framesFromClient") + n("framesFromServer") + n("framesFromFrametap"),
        n("recordedFrameCount"),
        "{view}"
    );
}
