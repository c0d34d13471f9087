//! Health, and availability when the store can't be read.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::router;
use crate::state::AppState;

use super::{CHAT, FEED, Fixture, NoStore, frame_id, get, send_json, send_with};

#[tokio::test]
async fn health_reports_the_health_source() {
    let fx = Fixture::new();
    let reply = get(&fx.router(), "/api/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({
            "status": "degraded",
            "version": "0.1.0",
            "agent": {"up": false, "pid": null, "error": "control socket /var/lib/frametap/agent.sock: connection refused", "namespaces": null},
            "store": {"open": true, "lastCatchUpMsAgo": 3, "sequence": 42, "agentSequence": null, "sequenceLag": null, "error": null},
            "events": {"connected": false, "received": 7, "dropped": 3, "recordsReceived": 7,
                       "recordsDropped": 1, "eventsEmitted": 9, "deliveriesDropped": 2},
            "recording": {
                "state": "degraded", "since": 1_764_000_000_000_u64,
                "error": "IO error: No space left on device",
                "recordsLost": 120, "recordsWritten": 5000, "recordsFailed": 130, "recordsDropped": 0,
                "lastOutage": {
                    "stoppedAt": 1_763_000_000_000_u64, "resumedAt": 1_763_000_004_000_u64,
                    "recordsLost": 10, "error": "IO error: No space left on device",
                },
            },
        })
    );
}

#[tokio::test]
async fn unreadable_store_is_503_everywhere() {
    let fx = Fixture::new();
    let app = router(AppState {
        store: Arc::new(NoStore),
        ..fx.state()
    });
    let expected = "capture store not readable yet: no frametap data in /var/lib/frametap: start \
                    frametap-agent first";
    for (method, uri) in [
        ("GET", format!("/api/websocket/{CHAT}/frames")),
        ("GET", format!("/api/websocket/frame/{}", frame_id(CHAT, 1))),
        ("GET", format!("/api/websocket/{CHAT}/count")),
        ("GET", format!("/api/websocket/{CHAT}")),
        ("DELETE", format!("/api/websocket/{CHAT}/frames")),
        ("GET", "/api/traffic".into()),
        ("GET", format!("/api/traffic/{CHAT}")),
        ("GET", format!("/api/websocket/{CHAT}/messages")),
        ("GET", format!("/api/websocket/{CHAT}/frames.ndjson")),
        ("GET", format!("/api/har?trafficId={CHAT}")),
        ("GET", "/api/har?from=0".into()),
    ] {
        let reply = send_with(&app, method, &uri, None).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(reply.body, json!({ "error": expected }));
    }
    let send = send_json(
        &app,
        "POST",
        &format!("/api/websocket/{FEED}/send"),
        &json!({"direction": "to-client", "data": "x"}),
    )
    .await;
    assert_eq!(send.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send.body, json!({ "error": expected }));
    // Rules live in the agent: they don't need the store.
    assert_eq!(get(&app, "/api/rules").await.status, StatusCode::OK);
    // Health still answers (it reports the store problem itself).
    assert_eq!(get(&app, "/api/health").await.status, StatusCode::OK);
}
