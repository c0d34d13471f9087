//! `POST /api/websocket/{trafficId}/replay`: the plan the API makes from the
//! recording (which messages, edited how, paced how, to which server, with which
//! handshake) as the agent receives it; and the replays' list, progress and cancel.

use frametap_control::ReplayPlan;
use serde_json::{Value, json};

use super::fakes::{AgentCall, REFUSING_HOST};
use super::{CHAT, FEED, Fixture, UNKNOWN, frame_id, get, send_json, send_with};

/// The plan of the last replay the fake agent was asked for.
fn last_plan(fx: &Fixture) -> ReplayPlan {
    fx.agent
        .calls()
        .into_iter()
        .rev()
        .find_map(|c| match c {
            AgentCall::Replay(plan) => Some(plan),
            _ => None,
        })
        .expect("a replay was asked")
}

fn originals(plan: &ReplayPlan) -> Vec<String> {
    plan.messages.iter().map(|m| m.original.clone()).collect()
}

fn feed(seqs: &[u64]) -> Vec<String> {
    seqs.iter().map(|&s| frame_id(FEED, s)).collect()
}

#[tokio::test]
async fn a_replay_by_default_sends_every_client_message_at_the_recorded_pace() {
    let fx = Fixture::new();
    let app = fx.router();
    let reply = send_json(
        &app,
        "POST",
        &format!("/api/websocket/{FEED}/replay"),
        &json!({}),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.body["replayOf"], FEED.to_string());
    assert_eq!(reply.body["state"], "running");
    assert_eq!(reply.body["messagesTotal"], 125);
    let id = reply.body["id"].as_str().unwrap();
    assert_eq!(
        reply.headers.get("location").unwrap(),
        &format!("/api/replays/{id}")
    );

    let plan = last_plan(&fx);
    assert_eq!(plan.original, FEED.to_string());
    // The original destination, as recorded.
    assert_eq!(plan.url, "wss://feed.example.com/live?topic=ws");
    assert_eq!(plan.address, "93.184.216.34:443");
    assert!(plan.tls);
    assert_eq!(plan.server_name, "feed.example.com");
    assert_eq!(plan.host, "feed.example.com");
    assert_eq!(plan.path, "/live?topic=ws");
    assert!(!plan.deflate);
    assert_eq!(plan.linger_ms, 1000);
    // Every client message (odd frames), in order; the first 95 ms after the
    // handshake (frames are 100 ms apart, the open 5 ms after the entry).
    assert_eq!(
        originals(&plan),
        feed(&(1..=250).step_by(2).collect::<Vec<_>>())
    );
    assert_eq!(plan.messages[0].delay_ms, 95);
    assert!(plan.messages[1..].iter().all(|m| m.delay_ms == 200));
    assert!(
        plan.messages
            .iter()
            .all(|m| m.after_server_messages.is_none())
    );
    let first = &plan.messages[0];
    assert!(!first.is_binary);
    assert_eq!(first.payload, "bWVzc2FnZSAx", "base64 of `message 1`");
    // The original handshake headers (the agent writes its own over Host and the rest).
    assert_eq!(
        plan.headers,
        [
            ("Host".to_string(), "feed.example.com".to_string()),
            ("Accept".into(), "text/html".into()),
            ("accept".into(), "application/json".into()),
        ]
    );

    // The list, one replay, and its cancellation.
    let list = get(&app, "/api/replays").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let one = get(&app, &format!("/api/replays/{id}")).await;
    assert_eq!(one.body["id"], id);
    let cancelled = send_with(&app, "DELETE", &format!("/api/replays/{id}"), None).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["state"], "cancelled");
    let again = send_with(&app, "DELETE", &format!("/api/replays/{id}"), None).await;
    assert_eq!(again.status, 409, "{}", again.body);
}

#[tokio::test]
async fn a_replay_plan_follows_the_selection_edits_timing_target_and_headers() {
    let fx = Fixture::new();
    let app = fx.router();
    let uri = format!("/api/websocket/{FEED}/replay");
    let post = |body: Value| {
        let app = app.clone();
        let uri = uri.clone();
        async move { send_json(&app, "POST", &uri, &body).await }
    };

    // Ids in any order, sent in recorded order; the gap is from the message before.
    let reply = post(json!({"messages": [frame_id(FEED, 5), frame_id(FEED, 1)]})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let plan = last_plan(&fx);
    assert_eq!(originals(&plan), feed(&[1, 5]));
    assert_eq!(
        plan.messages.iter().map(|m| m.delay_ms).collect::<Vec<_>>(),
        [95, 400]
    );

    // A range, edited (text and binary), twice as fast.
    let reply = post(json!({
        "messages": {"from": frame_id(FEED, 3), "to": frame_id(FEED, 7)},
        "edits": {
            frame_id(FEED, 3): {"data": "edited"},
            frame_id(FEED, 7): {"data": "AAEC", "isBinary": true},
        },
        "scale": 0.5,
    }))
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let plan = last_plan(&fx);
    assert_eq!(originals(&plan), feed(&[3, 5, 7]));
    assert_eq!(
        plan.messages.iter().map(|m| m.delay_ms).collect::<Vec<_>>(),
        [148, 100, 100],
        "(295, 200, 200) × 0.5"
    );
    assert_eq!(plan.messages[0].payload, "ZWRpdGVk");
    assert!(!plan.messages[0].is_binary);
    assert_eq!(plan.messages[1].payload, "bWVzc2FnZSA1", "not edited");
    assert_eq!(plan.messages[2].payload, "AAEC");
    assert!(plan.messages[2].is_binary);

    // As the server answers: each once the server sent what it had in the original.
    let reply = post(json!({"timing": "answers", "messages": feed(&[1, 3, 9])})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let plan = last_plan(&fx);
    assert_eq!(
        plan.messages
            .iter()
            .map(|m| (m.delay_ms, m.after_server_messages))
            .collect::<Vec<_>>(),
        [(0, Some(0)), (0, Some(1)), (0, Some(4))]
    );
    let reply = post(json!({"timing": "fast", "messages": feed(&[1, 3])})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(last_plan(&fx).messages.iter().all(|m| m.delay_ms == 0));

    // Another server, and the handshake's headers changed.
    let reply = post(json!({
        "target": "wss://staging.example.com:8443/v2/live?x=1",
        "headers": {"Cookie": "session=staging", "ACCEPT": null},
        "messages": feed(&[1]),
        "lingerMs": 250.0,
    }))
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let plan = last_plan(&fx);
    assert_eq!(plan.url, "wss://staging.example.com:8443/v2/live?x=1");
    assert_eq!(plan.address, "staging.example.com:8443");
    assert_eq!(plan.server_name, "staging.example.com");
    assert_eq!(plan.host, "staging.example.com:8443");
    assert_eq!(plan.path, "/v2/live?x=1");
    assert_eq!(plan.linger_ms, 250);
    assert_eq!(
        plan.headers,
        [
            ("Host".to_string(), "feed.example.com".to_string()),
            ("Cookie".into(), "session=staging".into()),
        ]
    );
    let reply = post(json!({"target": "ws://[::1]/", "messages": feed(&[1])})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let plan = last_plan(&fx);
    assert_eq!(
        (plan.address.as_str(), plan.server_name.as_str(), plan.tls),
        ("[::1]:80", "::1", false)
    );
}

#[tokio::test]
async fn replays_refuse_what_cannot_be_played() {
    let fx = Fixture::new();
    let app = fx.router();
    let uri = format!("/api/websocket/{FEED}/replay");
    for (body, status, says) in [
        (json!({"speed": 2}), 400, "unknown field"),
        (json!({"timing": "soon"}), 400, "unknown variant"),
        (
            json!({"messages": [frame_id(FEED, 2)]}),
            404,
            "not a message the client sent",
        ),
        (
            json!({"messages": {"from": frame_id(FEED, 7), "to": frame_id(FEED, 3)}}),
            409,
            "comes after",
        ),
        (
            json!({"messages": feed(&[1]), "edits": {frame_id(FEED, 3): {"data": "x"}}}),
            409,
            "not chosen",
        ),
        (json!([null, null]), 400, "a JSON object"),
        (json!({"lingerMs": 2.5}), 400, "whole number"),
        (
            json!({"messages": feed(&[1]), "edits": {frame_id(FEED, 1): {"data": "%%", "isBinary": true}}}),
            400,
            "not base64",
        ),
        (json!({"scale": 101}), 400, "from 0 to 100"),
        (
            json!({"headers": {"Bad Name": "x"}}),
            400,
            "not an HTTP token",
        ),
        (
            json!({"headers": {"X-A": "a\r\nb"}}),
            400,
            "control character",
        ),
        (
            json!({"headers": {"X-A": "a\u{7f}"}}),
            400,
            "control character",
        ),
        (
            json!({"target": "http://example.com/"}),
            400,
            "not ws:// or wss://",
        ),
        (
            json!({"target": "wss://user@example.com/"}),
            400,
            "user information",
        ),
        (json!({"messages": []}), 409, "nothing to replay"),
        (
            json!({"target": format!("wss://{REFUSING_HOST}/")}),
            502,
            "403 Forbidden",
        ),
    ] {
        let reply = send_json(&app, "POST", &uri, &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert!(reply.error().contains(says), "{body}: {}", reply.body);
    }
    let unknown = send_json(
        &app,
        "POST",
        &format!("/api/websocket/{UNKNOWN}/replay"),
        &json!({}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    // CHAT's client sent one text message (and control frames, which are not messages).
    let chat = send_json(
        &app,
        "POST",
        &format!("/api/websocket/{CHAT}/replay"),
        &json!({}),
    )
    .await;
    assert_eq!(chat.status, 202, "{}", chat.body);
    assert_eq!(originals(&last_plan(&fx)), [frame_id(CHAT, 1)]);
    let missing = get(&app, "/api/replays/nope").await;
    assert_eq!(missing.status, 404);
}
