//! The API token: required in the header or the query on every route.

use axum::http::{StatusCode, header};
use serde_json::json;

use crate::state::AppState;
use crate::{AuthConfig, router};

use super::fakes::AgentCall;
use super::{CHAT, FEED, Fixture, TOKEN, frame_id, get, send_body, send_raw, send_with};

#[tokio::test]
async fn token_is_required_in_header_or_query() {
    let fx = Fixture::new();
    let app = router(AppState {
        auth: AuthConfig {
            token: Some(TOKEN.into()),
        },
        ..fx.state()
    });
    let routes = [
        format!("/api/websocket/{CHAT}/frames"),
        format!("/api/websocket/frame/{}", frame_id(CHAT, 1)),
        format!("/api/websocket/{CHAT}/count"),
        format!("/api/websocket/{CHAT}"),
        "/api/traffic".into(),
        format!("/api/traffic/{CHAT}"),
        "/api/health".into(),
        "/api/openapi.json".into(),
        format!("/api/websocket/{CHAT}/messages"),
        "/api/rules".into(),
    ];
    for uri in &routes {
        for authorization in [None, Some("Bearer wrong"), Some(&*format!("Basic {TOKEN}"))] {
            let reply = send_with(&app, "GET", uri, authorization).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{uri} {authorization:?}"
            );
            assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert!(
                reply.error().contains("Authorization: Bearer <token>"),
                "{}",
                reply.error()
            );
            assert!(
                reply.error().contains("<data-dir>/api-token"),
                "{}",
                reply.error()
            );
        }
        let wrong_query = format!("{uri}?token=wrong");
        assert_eq!(
            get(&app, &wrong_query).await.status,
            StatusCode::UNAUTHORIZED
        );

        let bearer = send_with(&app, "GET", uri, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(bearer.status, StatusCode::OK, "{uri}");
        let query = get(&app, &format!("{uri}?token={TOKEN}")).await;
        assert_eq!(query.status, StatusCode::OK, "{uri}");
    }
    let missing = get(&app, "/api/health").await;
    assert!(
        missing.error().starts_with("missing API token"),
        "{}",
        missing.error()
    );
    let wrong = send_with(&app, "GET", "/api/health", Some("Bearer nope")).await;
    assert!(
        wrong.error().starts_with("wrong API token"),
        "{}",
        wrong.error()
    );
    // Deletion too; nothing is deleted without the token. Nor sent, nor any rule changed.
    let delete = format!("/api/websocket/{CHAT}/frames");
    assert_eq!(
        send_with(&app, "DELETE", &delete, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    for (method, uri) in [
        ("POST", format!("/api/websocket/{FEED}/send")),
        ("POST", "/api/rules".to_owned()),
        ("DELETE", "/api/rules/r1".to_owned()),
    ] {
        let reply = send_body(
            &app,
            method,
            &uri,
            None,
            Some((
                "application/json",
                br#"{"direction":"to-client","data":"x"}"#,
            )),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    assert_eq!(
        send_raw(
            &app,
            "GET",
            &format!("/api/websocket/{FEED}/frames.ndjson"),
            None,
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    // Only the authorised rule listings above reached the agent.
    assert!(
        fx.agent
            .calls()
            .iter()
            .all(|call| *call == AgentCall::ListRules),
        "{:?}",
        fx.agent.calls()
    );
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count?token={TOKEN}"))
            .await
            .body,
        json!({"count": 8})
    );
    // The token does not leak into the next link.
    let page = get(
        &app,
        &format!("/api/websocket/{FEED}/frames?token={TOKEN}&limit=10"),
    )
    .await;
    assert!(!page.link().unwrap().contains(TOKEN));

    // Wrong methods are checked after the token, so they reveal nothing either.
    assert_eq!(
        send_with(&app, "POST", "/api/traffic", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let post = send_with(
        &app,
        "POST",
        "/api/traffic",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    // Unknown paths answer 404 without a token: there is nothing behind them to protect.
    assert_eq!(get(&app, "/api/nope").await.status, StatusCode::NOT_FOUND);

    // Authentication disabled explicitly: no token needed.
    let open = fx.router();
    for uri in &routes {
        assert_eq!(get(&open, uri).await.status, StatusCode::OK, "{uri}");
    }
}
