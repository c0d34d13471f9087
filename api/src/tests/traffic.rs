//! The traffic list and single entries: filters, pages, counts, connections relayed
//! untouched, and deletion through the agent.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use frametap_control::DeleteTarget;
use frametap_store::{BodyOf, Record};
use serde_json::{Value, json};

use crate::router;
use crate::state::{AppState, ControlError};

use super::fakes::{AgentCall, BrokenAgent};
use super::{
    CHAT, DOCS, DOWNLOAD, FAILED, FEED, Fixture, LOCAL, LOGIN, OLD, Reply, TUNNEL, UNKNOWN, UPLOAD,
    get, keys, send_with, write_exchanges, write_tls_outcomes,
};

// ---------------------------------------------------------------------------------
// Traffic.

fn ids(reply: &Reply) -> Vec<String> {
    reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn traffic_list_filters_pages_and_counts() {
    let fx = Fixture::new();
    let app = fx.router();
    let all = get(&app, "/api/traffic").await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(keys(&all.body), BTreeSet::from(["count", "entries"]));
    assert_eq!(all.body["count"], 5);
    let newest_first: Vec<String> = [LOCAL, DOCS, LOGIN, FEED, CHAT]
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(ids(&all), newest_first);

    let page = get(&app, "/api/traffic?limit=2&offset=1").await;
    assert_eq!(ids(&page), newest_first[1..3]);
    assert_eq!(
        page.body["count"], 5,
        "count is of all matches, not the page"
    );
    let past_end = get(&app, "/api/traffic?offset=99").await;
    assert_eq!(past_end.body, json!({"entries": [], "count": 5}));

    for (query, expected) in [
        ("methods=post", vec![LOGIN]),
        ("methods=GET,POST", vec![LOCAL, DOCS, LOGIN, FEED, CHAT]),
        ("methods=get&protocol=ws,WSS", vec![LOCAL, FEED, CHAT]),
        ("protocol=https", vec![LOGIN]),
        ("search=EXAMPLE.COM", vec![LOGIN, FEED, CHAT]),
        ("search=wsguide", vec![DOCS]),
        ("search=%2Flogin", vec![LOGIN]),
        ("search=nothing-matches", vec![]),
        ("methods=DELETE", vec![]),
        ("search=ws&limit=1&offset=1&other=ignored", vec![DOCS]),
    ] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
        let expected: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(ids(&reply), expected, "{query}");
    }
    let counted = get(&app, "/api/traffic?search=ws&limit=1").await;
    assert_eq!(counted.body["count"], 4, "all but the login mention ws");

    for query in [
        "protocol=ftp",
        "protocol=wss,gopher",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "offset=-1",
        "offset=1e3",
        "offset=99999999999999999999",
        "methods=GET&methods=POST",
    ] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let param = query.split('=').next().unwrap();
        assert!(
            reply.error().contains(&format!("`{param}`")),
            "{query}: {}",
            reply.error()
        );
    }
}

/// The seed's pipeline:
/// `curl ".../api/traffic?methods=GET&search=ws" | jq '.entries[] | select(.protocol == "wss")'`.
#[tokio::test]
async fn seed_jq_selection_finds_the_wss_connections() {
    let fx = Fixture::new();
    let reply = get(&fx.router(), "/api/traffic?methods=GET&search=ws").await;
    let selected: Vec<&Value> = reply.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["protocol"] == "wss")
        .collect();
    let found: Vec<&str> = selected.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(found, [FEED.to_string(), CHAT.to_string()]);
    // Step 2 of the seed: the id feeds the count endpoint.
    let count = get(&fx.router(), &format!("/api/websocket/{}/count", found[1])).await;
    assert_eq!(count.body, json!({"count": 8}));
}

#[tokio::test]
async fn traffic_entry_view_and_404() {
    let fx = Fixture::new();
    let app = fx.router();
    let reply = get(&app, &format!("/api/traffic/{CHAT}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({
            "id": CHAT.to_string(),
            "timestamp": CHAT.timestamp_ms(),
            "method": "GET",
            "url": "wss://chat.example.com/socket",
            "protocol": "wss",
            "host": "chat.example.com",
            "path": "/socket",
            "status": 101,
            "requestHeaders": {"Host": "chat.example.com", "Accept": "text/html, application/json"},
            "responseHeaders": {"Set-Cookie": "a=1; Path=/\nb=2"},
            "remoteAddress": "93.184.216.34:443",
            "replayOf": null,
            "tlsVersion": "TLSv1.3",
            "duration": 12.5,
            "error": null,
            "clientAddress": "10.0.0.2:50000",
            "pid": 4242,
            "process": "chat-app",
            "cgroup": null,
            "netns": null,
            "containerId": null,
            "containerName": null,
            "sni": "chat.example.com",
            "notIntercepted": null,
            "alpnOffered": [],
            "alpnSelected": null,
            // Recorded before frametap wrote the version: an HTTP/1.x exchange.
            "httpVersion": "HTTP/1.1",
            "bytesFromClient": null,
            "bytesFromServer": null,
            "requestBodySize": 0,
            "requestBodyTruncated": false,
            "responseBodySize": 0,
            "responseBodyTruncated": false,
        })
    );
    // The list shows the same view.
    let list = get(&app, "/api/traffic?protocol=wss&search=chat").await;
    assert_eq!(list.body["entries"][0], reply.body);
    let http = get(&app, &format!("/api/traffic/{DOCS}")).await;
    assert_eq!(http.body["tlsVersion"], Value::Null);
    for id in [
        UNKNOWN.to_string(),
        "traffic-uuid-1".into(),
        "0".repeat(10_000),
        "%FF".into(),
    ] {
        let reply = get(&app, &format!("/api/traffic/{id}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id:.40}");
        assert_eq!(reply.body, json!({"error": "Traffic entry not found"}));
    }
}

#[tokio::test]
async fn connections_relayed_untouched_are_listed_and_completed_at_their_end() {
    let fx = Fixture::new();
    write_tls_outcomes(&fx);
    let app = fx.router();
    let open = get(&app, &format!("/api/traffic/{TUNNEL}")).await;
    assert_eq!(open.status, StatusCode::OK);
    assert_eq!(open.body["protocol"], "tls");
    assert_eq!(open.body["notIntercepted"], "server selected h2");
    assert_eq!(open.body["alpnOffered"], json!(["h2", "http/1.1"]));
    assert_eq!(open.body["alpnSelected"], "h2");
    assert_eq!(open.body["status"], Value::Null);
    assert_eq!(open.body["bytesFromClient"], Value::Null, "still open");
    assert_eq!(open.body["duration"], Value::Null);

    let listed = get(&app, "/api/traffic?protocol=tls,tcp").await;
    assert_eq!(ids(&listed), [TUNNEL.to_string()]);
    let listed = get(&app, "/api/traffic?search=h2.example").await;
    assert_eq!(ids(&listed), [TUNNEL.to_string()]);

    fx.primary
        .write(&[Record::TunnelEnd(frametap_store::TunnelEnd {
            traffic: TUNNEL,
            timestamp_ms: TUNNEL.timestamp_ms() + 80,
            duration_ms: 80.5,
            bytes_from_client: 900,
            bytes_from_server: 4200,
            end: "closed".into(),
            error: None,
        })])
        .unwrap();
    fx.catch_up();
    for view in [
        get(&app, &format!("/api/traffic/{TUNNEL}")).await.body,
        get(&app, "/api/traffic?protocol=tls").await.body["entries"][0].clone(),
    ] {
        assert_eq!(view["bytesFromClient"], 900);
        assert_eq!(view["bytesFromServer"], 4200);
        assert_eq!(view["duration"], 80.5);
    }
}

// ---------------------------------------------------------------------------------
// Traffic filters and deletion.

#[tokio::test]
async fn traffic_is_filtered_by_process_status_and_error() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    for (query, expected) in [
        ("pid=7", vec![UPLOAD]),
        ("pid=7,8", vec![DOWNLOAD, UPLOAD]),
        ("process=CURL", vec![UPLOAD]),
        ("process=wget,curl&status=2xx", vec![DOWNLOAD, UPLOAD]),
        ("status=404", vec![OLD]),
        ("status=4xx,201", vec![OLD, UPLOAD]),
        ("status=101", vec![LOCAL, FEED, CHAT]),
        ("status=5xx", vec![]),
        ("error=true", vec![FAILED]),
        ("errorContains=CERTIFICATE", vec![FAILED]),
        ("errorContains=reset", vec![]),
        ("error=false&protocol=https", vec![UPLOAD, LOGIN]),
        ("pid=4242&methods=post", vec![LOGIN]),
    ] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
        let expected: Vec<String> = expected.iter().map(|t| t.to_string()).collect();
        assert_eq!(ids(&reply), expected, "{query}");
        assert_eq!(reply.body["count"], expected.len(), "{query}");
    }
    for query in ["pid=x", "status=700", "status=abc", "error=yes", "pid=0"] {
        let reply = get(&app, &format!("/api/traffic?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let param = query.split('=').next().unwrap();
        assert!(
            reply.error().contains(&format!("`{param}`")),
            "{query}: {}",
            reply.error()
        );
    }
}

#[tokio::test]
async fn traffic_is_deleted_one_by_filter_and_all_through_the_agent() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let delete = |uri: String| {
        let app = app.clone();
        async move { send_with(&app, "DELETE", &uri, None).await }
    };
    // Deleting everything is never what an empty query means.
    for (uri, needle) in [
        ("/api/traffic", "say what to delete"),
        ("/api/traffic?all=true&status=5xx", "not both"),
        ("/api/traffic?status=200&limit=1", "`limit`"),
        ("/api/traffic?status=200&offset=1", "`offset`"),
        ("/api/traffic?all=yes", "`all`"),
        ("/api/traffic?all=false", "say what to delete"),
        ("/api/traffic?status=6xx", "`status`"),
    ] {
        let reply = delete(uri.into()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(reply.error().contains(needle), "{uri}: {}", reply.error());
    }
    assert!(fx.agent.calls().is_empty(), "refused by the API itself");
    for uri in [
        format!("/api/traffic/{UNKNOWN}"),
        "/api/traffic/garbage".into(),
    ] {
        let reply = delete(uri.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.body, json!({"error": "Traffic entry not found"}));
    }

    // One: the entry, its frames (so its messages) and its bodies.
    let reply = delete(format!("/api/traffic/{CHAT}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body,
        json!({"success": true, "deleted": 1, "frames": 8})
    );
    assert_eq!(
        get(&app, &format!("/api/traffic/{CHAT}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, &format!("/api/websocket/{CHAT}/count"))
            .await
            .body,
        json!({"count": 0})
    );
    // An unknown connection's messages are an empty list, like its frames.
    let messages = get(&app, &format!("/api/websocket/{CHAT}/messages")).await;
    assert_eq!(
        (messages.status, messages.body),
        (StatusCode::OK, json!([]))
    );
    let reply = delete(format!("/api/traffic/{UPLOAD}")).await;
    assert_eq!(reply.body["deleted"], 1);
    assert_eq!(fx.primary.body(UPLOAD, BodyOf::Response, 100).unwrap(), b"");
    assert_eq!(fx.primary.body(UPLOAD, BodyOf::Request, 100).unwrap(), b"");

    // By filter: what the same query lists.
    let listed = ids(&get(&app, "/api/traffic?status=4xx,5xx&error=false").await);
    assert_eq!(listed, [OLD.to_string()]);
    let reply = delete("/api/traffic?status=4xx,5xx&error=false".into()).await;
    assert_eq!(
        reply.body,
        json!({"success": true, "deleted": 1, "frames": 0})
    );
    assert_eq!(
        get(&app, "/api/traffic?status=4xx,5xx&error=false")
            .await
            .body["count"],
        0
    );
    let reply = delete("/api/traffic?process=nobody".into()).await;
    assert_eq!(reply.body["deleted"], 0);

    // Not without the agent.
    let down = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::AgentDown(
            "connection refused".into(),
        ))),
        ..fx.state()
    });
    let before = get(&app, "/api/traffic").await.body["count"].clone();
    for uri in [
        format!("/api/traffic/{FEED}"),
        "/api/traffic?all=true".into(),
    ] {
        let reply = send_with(&down, "DELETE", &uri, None).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(
            reply.error().contains("nothing was deleted"),
            "{}",
            reply.error()
        );
    }
    assert_eq!(get(&app, "/api/traffic").await.body["count"], before);

    // All, when asked for in so many words.
    let left = before.as_u64().unwrap();
    let reply = delete("/api/traffic?all=true".into()).await;
    assert_eq!(
        reply.body,
        json!({"success": true, "deleted": left, "frames": 250})
    );
    assert_eq!(
        get(&app, "/api/traffic").await.body,
        json!({"entries": [], "count": 0})
    );
    let calls: Vec<AgentCall> = fx.agent.calls();
    assert_eq!(
        calls[..2],
        [
            AgentCall::DeleteTraffic(DeleteTarget::One {
                id: CHAT.to_string()
            }),
            AgentCall::DeleteTraffic(DeleteTarget::One {
                id: UPLOAD.to_string()
            }),
        ]
    );
    assert_eq!(
        calls.last(),
        Some(&AgentCall::DeleteTraffic(DeleteTarget::All))
    );
}
