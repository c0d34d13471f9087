//! `GET /api/websocket/{trafficId}/compare/{other}`: a conversation and its replay (as the agent
//! records both), compared with and without the volatile parts.

use frametap_store::{Record, TrafficId};
use serde_json::{Value, json};

use super::{Fixture, UNKNOWN, entry, frame, get, ws_open};

const ORIGINAL: TrafficId = TrafficId((1_709_136_030_000 << 16) | 1);
const REPLAY: TrafficId = TrafficId((1_709_136_031_000 << 16) | 1);

/// The client's messages, then the server's, as one conversation.
fn conversation(traffic: TrafficId, client: &[&str], server: &[&str]) -> Vec<Record> {
    let url = "wss://prices.example.com/feed";
    let mut records: Vec<Record> = vec![
        entry(traffic, "GET", url, Some(101)).into(),
        ws_open(traffic, url).into(),
    ];
    let mut seq = 0;
    for (from_client, texts) in [(true, client), (false, server)] {
        for text in texts {
            seq += 1;
            records.push(frame(traffic, seq, from_client, 1, text.as_bytes()).into());
        }
    }
    records
}

fn write(fx: &Fixture) {
    fx.primary
        .write(&conversation(
            ORIGINAL,
            &[r#"{"op":"subscribe","ts":1}"#, "ping"],
            &[
                r#"{"id":"a1","price":10}"#,
                r#"{"id":"a2","price":11}"#,
                "bye",
            ],
        ))
        .unwrap();
    let mut replay = conversation(
        REPLAY,
        &[r#"{"op": "subscribe", "ts": 2}"#, "ping"],
        &[
            r#"{"id":"b1","price":10}"#,
            r#"{"id":"b2","price":12}"#,
            "bye",
            "one more",
        ],
    );
    // frametap's own message is not part of what the peers said.
    let mut injected = frame(REPLAY, 99, false, 1, b"injected by a user");
    injected.injected = true;
    replay.push(injected.into());
    fx.primary.write(&replay).unwrap();
    fx.catch_up();
}

fn statuses(lines: &Value) -> Vec<&str> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_replay_compared_with_its_original_message_by_message() {
    let fx = Fixture::new();
    write(&fx);
    let app = fx.router();
    let base = format!("/api/websocket/{ORIGINAL}/compare/{REPLAY}");

    let plain = get(&app, &base).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let c = &plain.body;
    assert_eq!(c["a"], ORIGINAL.to_string());
    assert_eq!(c["b"], REPLAY.to_string());
    assert_eq!(c["same"], false);
    assert_eq!(c["truncated"], false);
    assert_eq!(statuses(&c["toServer"]), ["changed", "same"]);
    assert_eq!(
        statuses(&c["toClient"]),
        ["changed", "changed", "same", "extra"]
    );
    assert_eq!(
        c["counts"],
        json!({"same": 2, "changed": 3, "missing": 0, "extra": 1})
    );
    // Each line carries both messages as the messages endpoint shows them.
    let first = &c["toClient"][0];
    assert_eq!(first["a"]["content"], r#"{"id":"a1","price":10}"#);
    assert_eq!(first["b"]["content"], r#"{"id":"b1","price":10}"#);
    assert_eq!(first["a"]["direction"], "server-to-client");
    let extra = &c["toClient"][3];
    assert_eq!(extra["a"], Value::Null);
    assert_eq!(extra["b"]["content"], "one more");

    // Timestamps and ids ignored (JSON formatting does not count either): what is
    // left is the price that changed and the extra message.
    let ignoring = get(
        &app,
        &format!("{base}?ignorePath=%24.ts&ignorePath=%24..id"),
    )
    .await;
    assert_eq!(ignoring.status, 200, "{}", ignoring.body);
    let c = &ignoring.body;
    assert_eq!(statuses(&c["toServer"]), ["same", "same"]);
    assert_eq!(
        statuses(&c["toClient"]),
        ["same", "changed", "same", "extra"]
    );
    assert_eq!(
        c["counts"],
        json!({"same": 4, "changed": 1, "missing": 0, "extra": 1})
    );
    // The same by a regular expression, on the raw text.
    let by_regex = get(
        &app,
        &format!("{base}?ignore=%22(ts|id)%22%3A%20%3F(%22%5Cw%2B%22%7C%5Cd%2B)&ignore=%5Cs&direction=to-server"),
    )
    .await;
    assert_eq!(by_regex.status, 200, "{}", by_regex.body);
    assert_eq!(statuses(&by_regex.body["toServer"]), ["same", "same"]);
    assert_eq!(by_regex.body["toClient"], json!([]), "one direction only");
    assert_eq!(by_regex.body["same"], true);

    // Swapped: what was extra is missing.
    let swapped = get(&app, &format!("/api/websocket/{REPLAY}/compare/{ORIGINAL}")).await;
    assert_eq!(statuses(&swapped.body["toClient"])[3], "missing");
    // A connection with itself is the same.
    let itself = get(
        &app,
        &format!("/api/websocket/{ORIGINAL}/compare/{ORIGINAL}"),
    )
    .await;
    assert_eq!(itself.body["same"], true);
}

#[tokio::test]
async fn comparisons_refuse_unknown_connections_and_bad_ignores() {
    let fx = Fixture::new();
    write(&fx);
    let app = fx.router();
    let base = format!("/api/websocket/{ORIGINAL}/compare/{REPLAY}");
    for (uri, status, says) in [
        (
            format!("/api/websocket/{ORIGINAL}/compare/{UNKNOWN}"),
            404,
            "no WebSocket connection",
        ),
        (
            format!("/api/websocket/nope/compare/{REPLAY}"),
            404,
            "16 lowercase hex digits",
        ),
        (format!("{base}?ignore=("), 400, "not a regular expression"),
        (format!("{base}?ignore="), 400, "1 to 1024 characters"),
        (format!("{base}?ignorePath=ts"), 400, "`$.timestamp`"),
        (
            format!("{base}?ignorePath=%24%5B%3F%40.a%5D"),
            400,
            "names, indexes",
        ),
        (format!("{base}?direction=up"), 400, "direction"),
        (
            format!("{base}?{}", "ignore=a&".repeat(17)),
            400,
            "at most 16 times",
        ),
    ] {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.body);
        assert!(reply.error().contains(says), "{uri}: {}", reply.body);
    }
}
