//! Unknown routes and methods: JSON 404 and 405.

use axum::http::{StatusCode, header};
use serde_json::json;

use super::{CHAT, Fixture, frame_id, get, send_with};

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let fx = Fixture::new();
    let app = fx.router();
    // `/` is the web UI's page (see tests::ui).
    for uri in [
        "/nope",
        "/api",
        "/api/websocket",
        "/api/websocket/a/b/c",
        "/api/traffic/a/b",
        "/api/websocket/frame/",
    ] {
        let reply = get(&app, &format!("{uri}?token=secret")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(
            reply.body,
            json!({ "error": format!("No such endpoint: GET {uri}") })
        );
    }
    let long = format!("/{}", "x".repeat(10_000));
    let reply = get(&app, &long).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.error().len() < 200);

    for (method, uri) in [
        ("POST", "/api/traffic".to_owned()),
        ("PUT", format!("/api/websocket/{CHAT}/frames")),
        ("DELETE", format!("/api/websocket/{CHAT}")),
        ("POST", "/api/health".into()),
        (
            "PATCH",
            format!("/api/websocket/frame/{}", frame_id(CHAT, 1)),
        ),
    ] {
        let reply = send_with(&app, method, &uri, None).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}"
        );
        assert!(
            reply
                .error()
                .starts_with(&format!("Method {method} not allowed")),
            "{}",
            reply.error()
        );
        assert!(reply.headers.contains_key(header::ALLOW), "{method} {uri}");
    }
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count"))
            .await
            .body,
        json!({"count": 8})
    );
}
