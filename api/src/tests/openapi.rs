//! OpenAPI: the document matches the router and the real responses.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::{AppState, ControlError};
use crate::{AuthConfig, router};

use super::fakes::BrokenAgent;
use super::openapi_cases::{
    Payload, ROUTES, Setup, compare_route_cases, new_route_cases, replay_route_cases,
    traffic_route_cases,
};
use super::{
    CHAT, DOC_URI, DOCS, FEED, Fixture, NoStore, TOKEN, UNKNOWN, frame_id, get, send_raw, send_with,
};

/// A validator for the body of `status` responses of `method path`, as the document
/// declares it (refs resolved against the whole document).
fn response_validator(doc: &Value, method: &str, path: &str, status: u16) -> jsonschema::Validator {
    media_validator(doc, method, path, status, "application/json")
}

/// [`response_validator`] for a body of type `media` (NDJSON: each line).
fn media_validator(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    media: &str,
) -> jsonschema::Validator {
    let declared =
        &doc["paths"][path][method]["responses"][status.to_string()]["content"][media]["schema"];
    assert!(
        !declared.is_null(),
        "{method} {path} does not document a {status} {media} body"
    );
    let pointer = format!(
        "/paths/{}/{method}/responses/{status}/content/{}/schema",
        path.replace('~', "~0").replace('/', "~1"),
        media.replace('~', "~0").replace('/', "~1")
    );
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let registry = jsonschema::Registry::new()
        .add(DOC_URI, doc.clone())
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&json!({ "$ref": format!("{DOC_URI}#{fragment}") }))
        .unwrap_or_else(|e| panic!("schema of {method} {path} {status}: {e}"))
}

#[tokio::test]
async fn openapi_document_matches_routes_and_responses() {
    let fx = Fixture::new();
    let app_for = |setup: Setup| -> Router {
        let state = fx.state();
        router(match setup {
            Setup::Normal => state,
            Setup::WithToken => AppState {
                auth: AuthConfig {
                    token: Some(TOKEN.into()),
                },
                ..state
            },
            Setup::NoStore => AppState {
                store: Arc::new(NoStore),
                ..state
            },
            Setup::AgentDown => AppState {
                agent: Arc::new(BrokenAgent(ControlError::AgentDown(
                    "connection refused".into(),
                ))),
                ..state
            },
            Setup::AgentFails => AppState {
                agent: Arc::new(BrokenAgent(ControlError::Failed("disk full".into()))),
                ..state
            },
            Setup::AgentRefuses(refusal) => AppState {
                agent: Arc::new(BrokenAgent(ControlError::Refused(
                    refusal,
                    "refused by the agent".into(),
                ))),
                ..state
            },
        })
    };

    let doc = get(&app_for(Setup::Normal), "/api/openapi.json").await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerToken"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["queryToken"]["name"],
        "token"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["queryToken"]["in"],
        "query"
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| {
                    [
                        "get", "put", "post", "delete", "patch", "head", "options", "trace",
                    ]
                    .contains(&k.as_str())
                })
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, served);
    for schema in [
        "Frame",
        "TrafficEntry",
        "TrafficPage",
        "WebSocketConnection",
        "FrameCount",
        "DeleteResult",
        "ErrorBody",
        "Health",
        "RecordingHealth",
        "WebSocketMessage",
        "Rule",
        "RuleAction",
        "RuleList",
        "RuleDeleted",
        "SendMessage",
        "Sent",
        "Har",
        "HarEntry",
        "HarWebSocketMessage",
        "TrafficDeleted",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    let frames_200 = &doc["paths"]["/api/websocket/{trafficId}/frames"]["get"]["responses"]["200"];
    assert!(frames_200["headers"]["Link"].is_object());

    // Real requests for every route and documented status: (setup, method, uri, path, status).
    let t = CHAT.to_string();
    let frames = format!("/api/websocket/{t}/frames");
    let cases: Vec<(Setup, &str, String, &str, u16)> = vec![
        (Setup::Normal, "get", frames.clone(), ROUTES[0].1, 200),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{UNKNOWN}/frames"),
            ROUTES[0].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("{frames}?limit=0"),
            ROUTES[0].1,
            400,
        ),
        (
            Setup::Normal,
            "get",
            format!("{frames}?after={}", frame_id(FEED, 1)),
            ROUTES[0].1,
            404,
        ),
        (Setup::WithToken, "get", frames.clone(), ROUTES[0].1, 401),
        (Setup::NoStore, "get", frames.clone(), ROUTES[0].1, 503),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/frame/{}", frame_id(CHAT, 7)),
            ROUTES[2].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            "/api/websocket/frame/nope".into(),
            ROUTES[2].1,
            404,
        ),
        (
            Setup::WithToken,
            "get",
            "/api/websocket/frame/nope".into(),
            ROUTES[2].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/websocket/frame/{}", frame_id(CHAT, 7)),
            ROUTES[2].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{t}/count"),
            ROUTES[3].1,
            200,
        ),
        (
            Setup::WithToken,
            "get",
            format!("/api/websocket/{t}/count"),
            ROUTES[3].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/websocket/{t}/count"),
            ROUTES[3].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{t}"),
            ROUTES[4].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{FEED}"),
            ROUTES[4].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/websocket/{UNKNOWN}"),
            ROUTES[4].1,
            404,
        ),
        (
            Setup::WithToken,
            "get",
            format!("/api/websocket/{t}"),
            ROUTES[4].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/websocket/{t}"),
            ROUTES[4].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            "/api/traffic".into(),
            ROUTES[5].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            "/api/traffic?protocol=ftp".into(),
            ROUTES[5].1,
            400,
        ),
        (
            Setup::WithToken,
            "get",
            "/api/traffic".into(),
            ROUTES[5].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            "/api/traffic".into(),
            ROUTES[5].1,
            503,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/traffic/{t}"),
            ROUTES[6].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/traffic/{DOCS}"),
            ROUTES[6].1,
            200,
        ),
        (
            Setup::Normal,
            "get",
            format!("/api/traffic/{UNKNOWN}"),
            ROUTES[6].1,
            404,
        ),
        (
            Setup::WithToken,
            "get",
            format!("/api/traffic/{t}"),
            ROUTES[6].1,
            401,
        ),
        (
            Setup::NoStore,
            "get",
            format!("/api/traffic/{t}"),
            ROUTES[6].1,
            503,
        ),
        (Setup::Normal, "get", "/api/health".into(), ROUTES[7].1, 200),
        (
            Setup::WithToken,
            "get",
            "/api/health".into(),
            ROUTES[7].1,
            401,
        ),
        (
            Setup::Normal,
            "get",
            "/api/openapi.json".into(),
            ROUTES[8].1,
            200,
        ),
        (
            Setup::WithToken,
            "get",
            "/api/openapi.json".into(),
            ROUTES[8].1,
            401,
        ),
        (
            Setup::Normal,
            "delete",
            format!("/api/websocket/{UNKNOWN}/frames"),
            ROUTES[1].1,
            404,
        ),
        (Setup::WithToken, "delete", frames.clone(), ROUTES[1].1, 401),
        (Setup::NoStore, "delete", frames.clone(), ROUTES[1].1, 503),
        (Setup::AgentDown, "delete", frames.clone(), ROUTES[1].1, 503),
        (
            Setup::AgentFails,
            "delete",
            frames.clone(),
            ROUTES[1].1,
            502,
        ),
        // Last: it changes the store.
        (Setup::Normal, "delete", frames.clone(), ROUTES[1].1, 200),
    ];
    let mut cases: Vec<(Setup, &str, String, Payload, &str, u16)> = cases
        .into_iter()
        .map(|(setup, method, uri, path, status)| (setup, method, uri, Payload::None, path, status))
        .collect();
    // Before the deletion, which must stay last.
    let last = cases.pop().unwrap();
    cases.extend(new_route_cases());
    cases.extend(traffic_route_cases());
    cases.extend(compare_route_cases());
    cases.extend(replay_route_cases());
    cases.push(last);
    let mut exercised = BTreeSet::new();
    for (setup, method, uri, payload, path, status) in &cases {
        let parts = payload.parts();
        let reply = send_raw(
            &app_for(*setup),
            &method.to_uppercase(),
            uri,
            None,
            parts.as_ref().map(|(t, b)| (*t, b.as_slice())),
        )
        .await;
        let text = String::from_utf8_lossy(&reply.bytes);
        assert_eq!(
            reply.status.as_u16(),
            *status,
            "{setup:?} {method} {uri}: {text:.300}"
        );
        let media = reply.content_type().unwrap().to_owned();
        if path.ends_with("/body") && *status == 200 {
            // A recorded body, whatever its type: documented as any media type.
            let content = &doc["paths"][*path][*method]["responses"]["200"]["content"];
            assert!(content["*/*"].is_object(), "{path}: {content}");
            assert!(reply.headers.contains_key("x-frametap-body-size"));
            exercised.insert((method.to_string(), path.to_string()));
            continue;
        }
        let bodies: Vec<Value> = if media == "application/x-ndjson" {
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        } else {
            assert_eq!(media, "application/json", "{method} {uri}");
            vec![serde_json::from_slice(&reply.bytes).unwrap()]
        };
        assert!(!bodies.is_empty(), "{method} {uri}: empty body");
        let validator = media_validator(&doc, method, path, *status, &media);
        for body in &bodies {
            if let Err(error) = validator.validate(body) {
                panic!("{method} {uri} -> {status} does not match the document: {error}\n{body}");
            }
        }
        exercised.insert((method.to_string(), path.to_string()));
    }
    assert_eq!(exercised, served, "every route is exercised");

    // The validators have teeth: wrong shapes are rejected.
    let frame_schema = response_validator(&doc, "get", "/api/websocket/frame/{id}", 200);
    let good = get(
        &app_for(Setup::Normal),
        &format!("/api/websocket/frame/{}", frame_id(FEED, 1)),
    )
    .await
    .body;
    assert!(frame_schema.is_valid(&good));
    for (key, bad) in [
        ("data", json!(5)),
        ("direction", json!("up")),
        ("isBinary", json!("no")),
        ("id", json!("frame-1")),
    ] {
        let mut broken = good.clone();
        broken[key] = bad;
        assert!(!frame_schema.is_valid(&broken), "{key} accepted");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("data");
    assert!(
        !frame_schema.is_valid(&missing),
        "a missing `data` accepted"
    );

    // Documented paths serve nothing undocumented: other methods are 405.
    let normal = app_for(Setup::Normal);
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{trafficId}", &t).replace("{id}", &t);
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                let reply = send_with(&normal, &method.to_uppercase(), &uri, None).await;
                assert_eq!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri}"
                );
            }
        }
    }
}
