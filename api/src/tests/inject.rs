//! Sending a message into a live connection through the agent.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::{InjectDirection, Refusal};
use serde_json::json;

use crate::router;
use crate::state::{AppState, ControlError};

use super::fakes::{AgentCall, BrokenAgent};
use super::{CHAT, FEED, Fixture, LOGIN, UNKNOWN, frame_id, get, send_body, send_json};

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

#[tokio::test]
async fn send_into_a_websocket_over_http2_goes_to_the_agent_like_any_other() {
    let fx = Fixture::new();
    let h2 = frametap_store::TrafficId((1_709_136_002_000 << 16) | 9);
    let url = "wss://feed.example.com/h2";
    let mut record = super::entry(h2, "CONNECT", url, Some(200));
    record.http_version = Some("HTTP/2".into());
    fx.primary
        .write(&[record.into(), super::ws_open(h2, url).into()])
        .unwrap();
    fx.catch_up();
    let hello = json!({"direction": "to-client", "data": "hello"});
    let reply = send_json(
        &fx.router(),
        "POST",
        &format!("/api/websocket/{h2}/send"),
        &hello,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(fx.agent.calls().len(), 1, "the agent was asked");
}
