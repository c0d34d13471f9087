//! Counts that agree between REST and live events, and the live events (Socket.IO)
//! themselves: capture order, messages reassembled live.

use frametap_store::{Record, TrafficId, WsClose};
use serde_json::{Value, json};

use crate::events::{Event, LiveRelay};
use crate::views::WebSocketMessage;

use super::{
    Fixture, TALK, close_frame, entry, fragment, frame, frame_id, get, send_with, write_talk,
    ws_open,
};

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
