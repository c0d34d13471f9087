//! The agent's message rules: listed, added and deleted through the agent, refused
//! when bad, and known from the store while the agent is down.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use frametap_control::{Refusal, Rule, RuleSnapshot};
use serde_json::json;

use crate::router;
use crate::state::{AppState, ControlError};

use super::fakes::{AgentCall, BAD_REGEX, BrokenAgent};
use super::{Fixture, get, keys, send_body, send_json, send_with};

#[tokio::test]
async fn rules_are_listed_added_and_deleted_through_the_agent() {
    let fx = Fixture::new();
    let app = fx.router();
    assert_eq!(
        get(&app, "/api/rules").await.body,
        json!({"rules": [], "live": true, "recordedAt": null})
    );
    let redact = json!({
        "host": "chat.example.com",
        "direction": "to-client",
        "type": "text",
        "contains": "password",
        "action": {"kind": "replace", "pattern": "password=\\S+", "replacement": "password=***"},
    });
    let reply = send_json(&app, "POST", "/api/rules", &redact).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let mut expected = redact.clone();
    expected["id"] = json!("rule-1");
    assert_eq!(reply.body, expected);
    let close = json!({"id": "r2", "type": "binary", "action": {"kind": "close", "code": 4000}});
    let reply = send_json(&app, "POST", "/api/rules", &close).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    // As the agent writes it: the default reason spelled out.
    assert_eq!(
        reply.body,
        json!({"id": "r2", "type": "binary", "action": {"kind": "close", "code": 4000, "reason": ""}})
    );
    let list = get(&app, "/api/rules").await;
    assert_eq!(list.body["rules"], json!([expected, reply.body]));
    // The agent got the control crate's rule, field for field.
    let sent: Rule = serde_json::from_value(redact).unwrap();
    assert_eq!(fx.agent.calls()[1], AgentCall::AddRule(sent));

    let reply = send_with(&app, "DELETE", "/api/rules/r2", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"success": true, "id": "r2"}));
    let again = send_with(&app, "DELETE", "/api/rules/r2", None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.body, json!({"error": "no rule with id \"r2\""}));
    let not_utf8 = send_with(&app, "DELETE", "/api/rules/%FF", None).await;
    assert_eq!(not_utf8.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&app, "/api/rules").await.body["rules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_rules_are_json_400s_and_agent_refusals_map() {
    let fx = Fixture::new();
    let app = fx.router();
    // Refused by the API itself: the agent never hears of them.
    for (body, needle) in [
        (
            json!({"action": {"kind": "drop"}, "hots": "x"}),
            "unknown field `hots`",
        ),
        (
            json!({"action": {"kind": "explode"}}),
            "unknown variant `explode`",
        ),
        (json!({"contains": "x"}), "missing field `action`"),
        (
            json!({"type": "TEXT", "action": {"kind": "drop"}}),
            "unknown variant `TEXT`",
        ),
        (
            json!({"action": {"kind": "close", "code": 1005}}),
            "close code 1005",
        ),
        (
            json!({"action": {"kind": "close", "code": 4000, "reason": "x".repeat(200)}}),
            "at most 123",
        ),
        (
            json!({"type": "binary", "action": {"kind": "replace", "pattern": "a", "replacement": "b"}}),
            "text messages only",
        ),
        (
            json!({"id": "a/b", "action": {"kind": "drop"}}),
            "rule `id`",
        ),
        (json!("drop"), "invalid request body"),
    ] {
        let reply = send_json(&app, "POST", "/api/rules", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(keys(&reply.body), BTreeSet::from(["error"]));
        assert!(reply.error().contains(needle), "{body}: {}", reply.error());
        assert!(reply.error().len() < 600, "{}", reply.error());
    }
    for (content_type, bytes, status) in [
        ("application/json", &b"{"[..], StatusCode::BAD_REQUEST),
        ("application/json", &b""[..], StatusCode::BAD_REQUEST),
        (
            "text/plain",
            &br#"{"action":{"kind":"drop"}}"#[..],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let reply = send_body(
            &app,
            "POST",
            "/api/rules",
            None,
            Some((content_type, bytes)),
        )
        .await;
        assert_eq!(reply.status, status, "{content_type} {bytes:?}");
        assert_eq!(keys(&reply.body), BTreeSet::from(["error"]));
    }
    let no_body = send_with(&app, "POST", "/api/rules", None).await;
    assert_eq!(no_body.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(fx.agent.calls().is_empty(), "{:?}", fx.agent.calls());

    // The agent's verdicts: a regex that does not compile, an id in use.
    let reply = send_json(
        &app,
        "POST",
        "/api/rules",
        &json!({"regex": BAD_REGEX, "action": {"kind": "drop"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({"error": "regex parse error: unclosed group"})
    );
    let rule = json!({"id": "same", "action": {"kind": "drop"}});
    assert_eq!(
        send_json(&app, "POST", "/api/rules", &rule).await.status,
        StatusCode::CREATED
    );
    let reply = send_json(&app, "POST", "/api/rules", &rule).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body, json!({"error": "a rule with this id exists"}));

    for (error, status, needle) in [
        (
            ControlError::AgentDown("connection refused".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "frametap-agent is not running (connection refused)",
        ),
        (
            ControlError::Failed("disk full".into()),
            StatusCode::BAD_GATEWAY,
            "disk full",
        ),
        (
            ControlError::Refused(Refusal::NotFound, "gone".into()),
            StatusCode::NOT_FOUND,
            "gone",
        ),
    ] {
        let app = router(AppState {
            agent: Arc::new(BrokenAgent(error)),
            ..fx.state()
        });
        for reply in [
            get(&app, "/api/rules").await,
            send_json(&app, "POST", "/api/rules", &rule).await,
            send_with(&app, "DELETE", "/api/rules/same", None).await,
        ] {
            assert_eq!(reply.status, status, "{needle}");
            assert!(reply.error().contains(needle), "{}", reply.error());
        }
    }
}

#[tokio::test]
async fn rules_are_known_while_the_agent_is_down() {
    let fx = Fixture::new();
    let down = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::AgentDown(
            "connection refused".into(),
        ))),
        ..fx.state()
    });
    // Nothing recorded yet: nothing to show.
    let reply = get(&down, "/api/rules").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.error().contains("never recorded its rules"),
        "{}",
        reply.error()
    );
    let rule: Rule = serde_json::from_value(
        json!({"id": "r1", "contains": "password", "action": {"kind": "drop"}}),
    )
    .unwrap();
    let snapshot = RuleSnapshot {
        recorded_at_ms: 1_709_136_000_000,
        agent_pid: 99,
        rules: vec![rule],
    };
    fx.primary
        .record_rules(&serde_json::to_vec(&snapshot).unwrap())
        .unwrap();
    fx.catch_up();
    let reply = get(&down, "/api/rules").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({
            "rules": [{"id": "r1", "contains": "password", "action": {"kind": "drop"}}],
            "live": false,
            "recordedAt": 1_709_136_000_000u64,
        })
    );
    // A running agent's answer wins; one that fails is not papered over.
    assert_eq!(get(&fx.router(), "/api/rules").await.body["live"], true);
    let failing = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::Failed("disk full".into()))),
        ..fx.state()
    });
    assert_eq!(
        get(&failing, "/api/rules").await.status,
        StatusCode::BAD_GATEWAY
    );
}
