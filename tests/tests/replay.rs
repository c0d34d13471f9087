//! End to end, as root: a wss conversation recorded through the real agent, then
//! played again by the agent (`POST /api/websocket/{id}/replay`) to the same Python
//! `websockets` server and to a second one, each replay recorded as a new connection
//! (`replayOf`) and compared with the original. The servers' own logs say what they
//! received and with which handshake.
use frametap_e2e::{
    Case,
    api::Api,
    netns::UPSTREAM_V4,
    ws::{ClientOptions, WsServer, b64, read_echoes, spawn_client_on},
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";
/// What the client waited between its messages, ms.
const GAP_MS: u64 = 400;

/// The traffic id of the wss connection to `path`, once its close is recorded.
fn recorded(api: &Api, path: &str) -> String {
    let list = api.wait_get("/api/traffic?protocol=wss", |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|t| t["path"] == path))
    });
    let id = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == path)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.wait_get(&format!("/api/websocket/{id}"), |c| c["open"] == false);
    id
}

/// Waits until the replay has ended; its last status.
fn ended(api: &Api, replay: &str) -> Value {
    api.wait_get(&format!("/api/replays/{replay}"), |r| {
        r["state"] != "running"
    })
}

fn client_messages(api: &Api, traffic: &str) -> Vec<Value> {
    api.get(&format!(
        "/api/websocket/{traffic}/messages?direction=to-server"
    ))
    .as_array()
    .unwrap()
    .clone()
}

fn statuses(lines: &Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_recorded_conversation_is_replayed_compared_edited_and_cancelled() {
    let Some(case) = Case::new("replay")
        .ports("8443")
        .upstream_ca()
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), true))
        .start()
    else {
        return;
    };
    let api = case.api();
    api.wait_get("/api/health", |h| h["agent"]["up"] == true);
    let ca = case.data_dir().join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: true,
    };
    // The original: three messages with pauses between them, permessage-deflate on.
    let script = json!([
        {"op": "text", "data": "one"},
        {"op": "sleep", "ms": GAP_MS},
        {"op": "text", "data": "two"},
        {"op": "sleep", "ms": GAP_MS},
        {"op": "binary", "data": b64(&[1, 2, 3])},
        {"op": "close", "code": 1000, "reason": "done"},
    ]);
    let mut client = spawn_client_on(&case.lab, Some(&case.cg), &opts, &script, "/talk");
    assert_eq!(read_echoes(&mut client, 3).len(), 3);
    let original = recorded(&api, "/talk");
    assert_eq!(
        api.get(&format!("/api/websocket/{original}"))["deflate"],
        true
    );

    // 1. Played again to the same server, as recorded, with a cookie added.
    let answer = api.send_json(
        "POST",
        &format!("/api/websocket/{original}/replay"),
        &json!({"headers": {"Cookie": "replayed=yes"}, "lingerMs": 300}),
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let started = answer.json();
    assert_eq!(started["replayOf"], original.as_str());
    assert_eq!(started["messagesTotal"], 3);
    let replay = started["id"].as_str().unwrap().to_string();
    let done = ended(&api, &replay);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["messagesSent"], 3, "{done}");
    assert_eq!(done["serverMessages"], 3, "the echoes: {done}");
    let copy = done["trafficId"]
        .as_str()
        .expect("the replay's connection")
        .to_string();
    let entry = api.get(&format!("/api/traffic/{copy}"));
    assert_eq!(entry["replayOf"], original.as_str(), "{entry}");
    assert_eq!(entry["protocol"], "wss");
    assert_eq!(entry["status"], 101);
    let connection = api.wait_get(&format!("/api/websocket/{copy}"), |c| c["open"] == false);
    assert_eq!(
        connection["deflate"], true,
        "deflate agreed again: {connection}"
    );
    assert_eq!(connection["closedBy"], "client", "{connection}");
    assert_eq!(connection["closeCode"], 1000);
    // The server got the same messages, and the handshake carried the original
    // client's headers plus the cookie, with a new key.
    let received = case.server.received();
    assert_eq!(
        received[3..],
        [
            (true, b"one".to_vec()),
            (true, b"two".to_vec()),
            (false, vec![1, 2, 3])
        ]
    );
    let handshakes = case.server.handshakes();
    assert_eq!(handshakes.len(), 2);
    let (first, again) = (&handshakes[0]["headers"], &handshakes[1]["headers"]);
    assert_eq!(again["cookie"], "replayed=yes");
    assert_eq!(
        again["user-agent"], first["user-agent"],
        "copied from the original"
    );
    assert_ne!(again["sec-websocket-key"], first["sec-websocket-key"]);
    assert_eq!(handshakes[1]["path"], "/talk");
    assert!(
        handshakes[1]["extensions"]
            .as_str()
            .is_some_and(|e| e.contains("permessage-deflate")),
        "{handshakes:?}"
    );
    // The gaps were kept (not collapsed): each message at least the recorded pause
    // after the one before.
    let sent = client_messages(&api, &copy);
    let times: Vec<u64> = sent
        .iter()
        .map(|m| m["timestamp"].as_u64().unwrap())
        .collect();
    assert!(times[1] - times[0] >= GAP_MS - 50, "{times:?}");
    assert!(times[2] - times[1] >= GAP_MS - 50, "{times:?}");
    // The echo server answered the same: the conversations compare equal.
    let same = api.get(&format!("/api/websocket/{original}/compare/{copy}"));
    assert_eq!(same["same"], true, "{same}");
    assert_eq!(statuses(&same["toServer"]), ["same", "same", "same"]);
    assert_eq!(statuses(&same["toClient"]), ["same", "same", "same"]);

    // The same from a shell: `frametap-api replay` asks the running API, waits, and
    // prints the comparison (the data dir gives it the token).
    let out = std::process::Command::new(frametap_e2e::workspace_bin("frametap-api"))
        .arg("replay")
        .arg(&original)
        .args(["--timing", "fast", "--ignore-path", "$..id"])
        .args(["--listen", &format!("127.0.0.1:{}", api.port)])
        .arg("--data-dir")
        .arg(case.data_dir())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("3 of 3 messages sent") && printed.contains("the same as the original"),
        "{printed}"
    );
    assert!(
        printed.contains("to the server: 3 same, 0 changed, 0 missing, 0 extra"),
        "{printed}"
    );

    // 2. To a second server (plain ws, no deflate), edited, as fast as it goes.
    let second = WsServer::start(&case.lab, UPSTREAM_V4, 8444, None, false);
    let two = client_messages(&api, &original)[1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = api.send_json(
        "POST",
        &format!("/api/websocket/{original}/replay"),
        &json!({
            "target": format!("ws://{UPSTREAM_V4}:8444/staging"),
            "edits": {two.as_str(): {"data": "TWO"}},
            "timing": "fast",
        }),
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let done = ended(&api, answer.json()["id"].as_str().unwrap());
    assert_eq!(done["state"], "done", "{done}");
    let staging = done["trafficId"].as_str().unwrap().to_string();
    assert_eq!(
        second.received(),
        [
            (true, b"one".to_vec()),
            (true, b"TWO".to_vec()),
            (false, vec![1, 2, 3])
        ]
    );
    assert_eq!(second.handshakes()[0]["path"], "/staging");
    let staged = api.wait_get(&format!("/api/websocket/{staging}"), |c| c["open"] == false);
    assert_eq!(
        staged["deflate"], false,
        "the second server declined it: {staged}"
    );
    assert_eq!(
        api.get(&format!("/api/traffic/{staging}"))["protocol"],
        "ws"
    );
    let diff = api.get(&format!("/api/websocket/{original}/compare/{staging}"));
    assert_eq!(
        statuses(&diff["toServer"]),
        ["same", "changed", "same"],
        "{diff}"
    );
    assert_eq!(
        statuses(&diff["toClient"]),
        ["same", "changed", "same"],
        "{diff}"
    );
    assert_eq!(diff["toServer"][1]["b"]["content"], "TWO");

    // 3. Cancelled mid-way: the recorded pauses stretched 50 times.
    let answer = api.send_json(
        "POST",
        &format!("/api/websocket/{original}/replay"),
        &json!({"scale": 50}),
    );
    assert_eq!(answer.status, 202, "{}", answer.body);
    let slow = answer.json()["id"].as_str().unwrap().to_string();
    api.wait_get(&format!("/api/replays/{slow}"), |r| r["messagesSent"] == 1);
    let cancelled = api.request("DELETE", &format!("/api/replays/{slow}"));
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    let stopped = ended(&api, &slow);
    assert_eq!(stopped["state"], "cancelled", "{stopped}");
    assert_eq!(stopped["messagesSent"], 1, "{stopped}");
    let gone = stopped["trafficId"].as_str().unwrap();
    let closed = api.wait_get(&format!("/api/websocket/{gone}"), |c| c["open"] == false);
    assert_eq!(closed["closeCode"], 1001, "{closed}");
    assert_eq!(closed["closedBy"], "client", "{closed}");
    let again = api.request("DELETE", &format!("/api/replays/{slow}"));
    assert_eq!(again.status, 409, "{}", again.body);
    // The same from a shell: Ctrl-C cancels the replay the command follows.
    let mut shell = std::process::Command::new(frametap_e2e::workspace_bin("frametap-api"))
        .arg("replay")
        .arg(&original)
        .args(["--scale", "50"])
        .args(["--listen", &format!("127.0.0.1:{}", api.port)])
        .arg("--data-dir")
        .arg(case.data_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = api.wait_get("/api/replays", |list| {
        list[0]["state"] == "running" && list[0]["messagesSent"] == 1
    });
    let interrupted = running[0]["id"].as_str().unwrap().to_string();
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(shell.id() as i32, libc::SIGINT) };
    let status = shell.wait().unwrap();
    assert!(!status.success(), "the replay did not run to its end");
    let mut printed = String::new();
    std::io::Read::read_to_string(shell.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert!(printed.contains(": cancelled"), "{printed}");
    assert_eq!(ended(&api, &interrupted)["state"], "cancelled");

    // 4. A target that refuses: 502 with the reason, and the replay says so too.
    let refused = api.send_json(
        "POST",
        &format!("/api/websocket/{original}/replay"),
        &json!({"target": format!("ws://{UPSTREAM_V4}:8449/")}),
    );
    assert_eq!(refused.status, 502, "{}", refused.body);
    let why = refused.json()["error"].as_str().unwrap().to_string();
    assert!(why.contains("cannot connect"), "{why}");
    let list = api.get("/api/replays");
    assert_eq!(list[0]["state"], "failed", "{list}");
    assert_eq!(list.as_array().unwrap().len(), 6);
}
