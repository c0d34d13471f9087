//! The WebSocket frames API: frames, one frame, counts, pages and filters, frame
//! deletion, and the connection view.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{Record, TrafficId};
use serde_json::{Value, json};

use crate::router;
use crate::state::{AppState, ControlError};

use super::fakes::BrokenAgent;
use super::{CHAT, FEED, Fixture, LOGIN, UNKNOWN, frame, frame_id, get, keys, send_with, seqs};

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
// Connections.

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
            "closedBy": "client",
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
