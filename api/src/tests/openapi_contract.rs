//! The document says exactly what the handlers take: a request it allows is never
//! refused with 400, one it forbids always is; directions in every spelling; links
//! that resolve.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::StatusCode;
use frametap_control::{InjectDirection, Refusal};
use serde_json::{Value, json};

use crate::router;
use crate::state::{AppState, ControlError};

use super::fakes::{AgentCall, BrokenAgent};
use super::{
    CHAT, DOC_URI, FEED, Fixture, LOGIN, TALK, frame_id, get, send_json, send_raw, write_talk,
};

/// Both vocabularies for directions work wherever a direction is taken (the frames,
/// messages and NDJSON `direction` query, a rule's `direction`, `/send`'s
/// `direction`); answers keep their own (frames: the seed's, rules and `/send`:
/// `to-client` / `to-server`); the OpenAPI document lists every spelling.
#[tokio::test]
async fn direction_spellings_are_accepted_wherever_a_direction_is_taken() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    for (path, field) in [
        (format!("/api/websocket/{CHAT}/frames"), "direction"),
        (format!("/api/websocket/{TALK}/messages"), "direction"),
    ] {
        for (seed, rules) in [
            ("client-to-server", "to-server"),
            ("server-to-client", "to-client"),
        ] {
            let by_seed = get(&app, &format!("{path}?direction={seed}")).await;
            let by_rules = get(&app, &format!("{path}?direction={rules}")).await;
            assert_eq!(by_seed.status, StatusCode::OK);
            assert_eq!(by_rules.body, by_seed.body, "{path} {rules}");
            assert!(!by_seed.array().is_empty(), "{path} {seed}");
            assert!(by_seed.array().iter().all(|f| f[field] == seed), "{path}");
        }
    }
    let ndjson = |direction: &str| {
        let uri = format!("/api/websocket/{CHAT}/frames.ndjson?direction={direction}");
        let app = app.clone();
        async move { send_raw(&app, "GET", &uri, None, None).await.bytes }
    };
    assert_eq!(ndjson("to-client").await, ndjson("server-to-client").await);

    let uri = format!("/api/websocket/{FEED}/send");
    for (spelling, direction) in [
        ("server-to-client", InjectDirection::ToClient),
        ("client-to-server", InjectDirection::ToServer),
    ] {
        let reply = send_json(
            &app,
            "POST",
            &uri,
            &json!({"direction": spelling, "data": "x"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.body["direction"], direction.as_str());
        assert!(matches!(
            fx.agent.calls().last(),
            Some(AgentCall::Send { direction: d, .. }) if *d == direction
        ));
    }
    let rule = json!({"direction": "client-to-server", "action": {"kind": "drop"}});
    let reply = send_json(&app, "POST", "/api/rules", &rule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    assert_eq!(reply.body["direction"], "to-server");
    let bad = get(
        &app,
        &format!("/api/websocket/{CHAT}/frames?direction=upstream"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error().contains("to-server"), "{}", bad.error());

    let doc = get(&app, "/api/openapi.json").await.body;
    // Every `$ref` in the document resolves.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                out.extend(map.get("$ref").and_then(Value::as_str));
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }
    let every = json!([
        "client-to-server",
        "server-to-client",
        "to-server",
        "to-client"
    ]);
    // The enum of a schema, through `$ref`s and `oneOf` (an optional value).
    fn spellings_in(doc: &Value, schema: &Value) -> Option<BTreeSet<String>> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap();
            return spellings_in(doc, &doc["components"]["schemas"][name]);
        }
        if let Some(values) = schema["enum"].as_array() {
            return Some(
                values
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
            );
        }
        ["oneOf", "anyOf", "allOf"]
            .iter()
            .filter_map(|k| schema[*k].as_array())
            .flatten()
            .find_map(|s| spellings_in(doc, s))
    }
    let spellings = |schema: &Value| -> BTreeSet<String> {
        spellings_in(&doc, schema).unwrap_or_else(|| panic!("no enum in {schema}"))
    };
    let every: BTreeSet<String> = spellings(&json!({"enum": every}));
    for path in [
        "/api/websocket/{trafficId}/frames",
        "/api/websocket/{trafficId}/messages",
        "/api/websocket/{trafficId}/frames.ndjson",
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let direction = params.iter().find(|p| p["name"] == "direction").unwrap();
        assert_eq!(spellings(&direction["schema"]), every, "{path}");
    }
    let send = &doc["components"]["schemas"]["SendMessage"]["properties"]["direction"];
    assert_eq!(spellings(send), every);
    let rule = &doc["components"]["schemas"]["Rule"]["properties"]["direction"];
    assert_eq!(spellings(rule), every);
}

// ---------------------------------------------------------------------------------
// The document says exactly what the handlers take: a request it allows is never
// refused with 400, one it forbids always is. (Schemathesis checks this end to end,
// tests/tests/api.rs; these are the edges, one by one.)

/// A validator for the schema at `pointer` of `doc` (refs resolved in `doc`).
fn schema_at(doc: &Value, pointer: &str) -> jsonschema::Validator {
    assert!(doc.pointer(pointer).is_some(), "nothing at {pointer}");
    let fragment = pointer.replace('{', "%7B").replace('}', "%7D");
    let registry = jsonschema::Registry::new()
        .add(DOC_URI, doc.clone())
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .build(&json!({ "$ref": format!("{DOC_URI}#{fragment}") }))
        .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
}

/// The JSON pointer of parameter `name` of `method path`'s schema.
fn parameter_schema(doc: &Value, method: &str, path: &str, name: &str) -> String {
    let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
    let index = params
        .iter()
        .position(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    format!(
        "/paths/{}/{method}/parameters/{index}/schema",
        path.replace('~', "~0").replace('/', "~1")
    )
}

/// What a query value spells, when it spells a number or a boolean (as a client
/// generating from the document writes them).
fn typed(value: &str) -> Value {
    match value {
        "true" => json!(true),
        "false" => json!(false),
        _ if !value.is_empty()
            && value.bytes().all(|b| b.is_ascii_digit())
            && (value == "0" || !value.starts_with('0')) =>
        {
            value
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(value.parse::<f64>().unwrap()))
        }
        _ => json!(value),
    }
}

fn query_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[tokio::test]
async fn query_parameters_are_exactly_what_the_document_says() {
    let fx = Fixture::new();
    let app = fx.router();
    let doc = get(&app, "/api/openapi.json").await.body;
    let frames = "/api/websocket/{trafficId}/frames";
    let feed_frame = frame_id(FEED, 1);
    let chat_frame = frame_id(CHAT, 1);
    let long_seq = format!("{FEED}-100000000");
    let padded_seq = format!("{FEED}-000000001");
    let upper = FEED.to_string().to_uppercase();
    let widest = format!("{FEED}-ffffffffffffffff");
    let too_wide = format!("{FEED}-1ffffffffffffffff");
    // (method, path, parameter, values)
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "get",
            "/api/traffic",
            "protocol",
            vec![
                "wss",
                "WSS, ws",
                " ,, ",
                "",
                "tls,tcp,HTTP,https",
                "wss ws",
                "ftp",
                "ws s",
                "wss,\u{a0}tls",
                "wss,\u{1c}tls",
                "wss\u{85}",
                "https,",
                ",",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "pid",
            vec![
                "1",
                "007",
                "999999999",
                "1000000000",
                "0",
                "000",
                "0,1",
                " 1 , 2 ",
                "1 2",
                "+1",
                "-1",
                "\u{661}",
                "4294967295",
                "00000000001",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "status",
            vec![
                "404", "4xx", "4XX", "4xX", "600", "40x", "099", " 5xx,", "5 xx", "1xx,599", "100",
                "0xx",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "error",
            vec!["true", "false", "TRUE", "True", "1", ""],
        ),
        (
            "get",
            "/api/traffic",
            "offset",
            vec![
                "0",
                "9223372036854775807",
                "9223372036854775808",
                "18446744073709551615",
                "-1",
            ],
        ),
        (
            "get",
            "/api/traffic",
            "limit",
            vec!["1", "1000", "0", "1001"],
        ),
        (
            "get",
            "/api/traffic",
            "methods",
            vec!["GET", "", ",", "get, post", "\u{0}"],
        ),
        (
            "get",
            frames,
            "after",
            vec![
                &feed_frame,
                "",
                "x",
                &long_seq,
                &padded_seq,
                &upper,
                &widest,
                &too_wide,
            ],
        ),
        (
            "get",
            frames,
            "opcode",
            vec!["0", "1", "2", "3", "7", "8", "10", "11", "256", "x"],
        ),
        (
            "get",
            "/api/websocket/{trafficId}/messages",
            "after",
            vec![&feed_frame, "", &padded_seq],
        ),
        (
            "get",
            "/api/websocket/{trafficId}/frames.ndjson",
            "opcode",
            vec!["9", "4"],
        ),
        (
            "get",
            "/api/har",
            "trafficId",
            vec!["", "0191a2b3c4d50001", "0191A2B3C4D50001", "xyz"],
        ),
        (
            "get",
            "/api/har",
            "from",
            vec!["0", "9223372036854775807", "9223372036854775808"],
        ),
        (
            "get",
            "/api/traffic/{id}/response/body",
            "raw",
            vec!["true", "false", "TRUE", "yes"],
        ),
    ];
    for (method, path, name, values) in cases {
        let validator = schema_at(&doc, &parameter_schema(&doc, method, path, name));
        for value in values {
            // As the schema's type has it: a string, or what the text spells.
            let allowed = validator.is_valid(&json!(value)) || validator.is_valid(&typed(value));
            let uri = path
                .replace("{trafficId}", &FEED.to_string())
                .replace("{id}", &LOGIN.to_string());
            let uri = format!("{uri}?{name}={}", query_escape(value));
            let reply = send_raw(&app, &method.to_uppercase(), &uri, None, None).await;
            assert_eq!(
                reply.status != StatusCode::BAD_REQUEST,
                allowed,
                "{method} {uri}: the document {} {value:?}, the handler answered {}",
                if allowed { "allows" } else { "forbids" },
                reply.status
            );
        }
    }
    // A cursor of another connection is well formed: not a 400 (but a 404).
    let reply = get(
        &app,
        &format!("/api/websocket/{FEED}/frames?after={chat_frame}"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn traffic_deletion_takes_what_its_selection_schema_says() {
    let fx = Fixture::new();
    let doc = get(&fx.router(), "/api/openapi.json").await.body;
    let selection = schema_at(
        &doc,
        &parameter_schema(&doc, "delete", "/api/traffic", "selection"),
    );
    // The agent says "not found" to whatever reaches it: nothing is deleted, and
    // every 400 is the API's own.
    let app = router(AppState {
        agent: Arc::new(BrokenAgent(ControlError::Refused(
            Refusal::NotFound,
            "nothing".into(),
        ))),
        ..fx.state()
    });
    for query in [
        "all=true",
        "all=true&search=",
        "all=true&status=5xx",
        "all=true&error=false",
        "all=false",
        "all=false&status=5xx",
        "all=TRUE",
        "",
        "search=x",
        "search=",
        "search=%20",
        "methods=,",
        "methods=%20,%20",
        "methods=,GET",
        "process=curl",
        "protocol=wss",
        "protocol=,",
        "protocol=ftp",
        "pid=1",
        "pid=0",
        "status=5xx",
        "status=6xx",
        "error=false",
        "error=yes",
        "errorContains=",
        "errorContains=tls",
        "status=5xx&limit=1",
        "all=true&offset=0",
        "unknown=1",
        "unknown=1&search=x",
        "search=x&limit%5Ba%5D=1",
        "search%5B%5D=x&status=5xx",
    ] {
        // The object an exploded `selection` spells: `name[key]=v` is `name: {key: v}`.
        let mut object = serde_json::Map::new();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = match (name.as_ref(), value.as_ref()) {
                ("all" | "error", "true") => json!(true),
                ("all" | "error", "false") => json!(false),
                (_, value) => json!(value),
            };
            match name.split_once('[') {
                Some((name, key)) => {
                    let key = key.trim_end_matches(']').to_owned();
                    object.insert(name.to_owned(), json!({ key: value }));
                }
                None => {
                    object.insert(name.into_owned(), value);
                }
            }
        }
        let allowed = selection.is_valid(&Value::Object(object));
        let reply = send_raw(&app, "DELETE", &format!("/api/traffic?{query}"), None, None).await;
        assert_eq!(
            reply.status != StatusCode::BAD_REQUEST,
            allowed,
            "DELETE /api/traffic?{query}: the document {}, the handler answered {}",
            if allowed { "allows it" } else { "forbids it" },
            reply.status
        );
    }
}

#[tokio::test]
async fn bodies_are_exactly_what_the_document_says() {
    let fx = Fixture::new();
    let app = fx.router();
    let doc = get(&app, "/api/openapi.json").await.body;
    let rule = schema_at(&doc, "/components/schemas/Rule");
    let send = schema_at(&doc, "/components/schemas/SendMessage");
    let drop = || json!({"kind": "drop"});
    let rules = [
        json!({"action": drop()}),
        json!({"action": drop(), "id": "ok-1.v2_~"}),
        json!({"action": drop(), "id": ""}),
        json!({"action": drop(), "id": "a/b"}),
        json!({"action": drop(), "id": "x".repeat(65)}),
        json!({"action": drop(), "host": "chat.test"}),
        json!({"action": drop(), "host": " *.test "}),
        json!({"action": drop(), "host": "*"}),
        json!({"action": drop(), "host": "\u{a0}*\u{a0}"}),
        json!({"action": drop(), "host": ""}),
        json!({"action": drop(), "host": "*."}),
        json!({"action": drop(), "host": "*.\u{2003}"}),
        json!({"action": drop(), "host": "a*b"}),
        json!({"action": drop(), "host": "**"}),
        json!({"action": drop(), "host": null, "path": null, "regex": null}),
        json!({"action": drop(), "regex": "a+b?"}),
        json!({"action": {"kind": "drop", "x": 1}}),
        json!({"action": drop(), "x": 1}),
        json!({"action": {"kind": "close", "code": 1000}}),
        json!({"action": {"kind": "close", "code": 1000.0}}),
        json!({"action": {"kind": "close", "code": 1004}}),
        json!({"action": {"kind": "close", "code": 2999}}),
        json!({"action": {"kind": "close", "code": 4999, "reason": "é".repeat(123)}}),
        json!({"action": {"kind": "close", "code": 4999, "reason": "x".repeat(124)}}),
        json!({"action": {"kind": "close", "code": 1000, "x": 1}}),
        json!({"action": {"kind": "replace", "pattern": "a", "replacement": "b"}}),
        json!({"action": {"kind": "replace", "pattern": "a", "replacement": "b"}, "type": "text"}),
        json!({"action": {"kind": "replace", "pattern": "a", "replacement": "b"}, "type": "binary"}),
        json!({"action": {"kind": "replace", "pattern": "a"}}),
        json!({"action": drop(), "type": "binary", "direction": "client-to-server"}),
        json!({"action": drop(), "direction": "up"}),
        json!({"action": {"kind": "explode"}}),
    ];
    for body in rules {
        let allowed = rule.is_valid(&body);
        let reply = send_json(&app, "POST", "/api/rules", &body).await;
        assert_eq!(
            reply.status != StatusCode::BAD_REQUEST,
            allowed,
            "POST /api/rules {body}: the document {}, the handler answered {} {}",
            if allowed { "allows it" } else { "forbids it" },
            reply.status,
            reply.body
        );
    }
    let text = |data: &str| json!({"direction": "to-client", "data": data});
    let binary = |data: &str| json!({"direction": "to-client", "data": data, "isBinary": true});
    let mut bodies = vec![
        text("hello"),
        text(""),
        json!({"direction": "to-client", "data": "{\"action\":\"ping\"}", "isBinary": false}),
        binary("{\"action\":\"ping\"}"),
        binary(""),
        binary("AA=="),
        binary("AB=="),
        binary("AAA="),
        binary("AAB="),
        binary("AAAA"),
        binary("AAA"),
        binary("A==="),
        binary("AA==AA=="),
        json!({"direction": "to-client", "data": "x", "isBinary": null}),
        json!({"direction": "to-client", "data": "x", "extra": 1}),
        json!({"direction": "to-client"}),
        json!({"direction": "sideways", "data": "x"}),
    ];
    // Every last quantum of base64: the pattern and the decoder agree.
    for c in (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain(*b"+/")
    {
        let c = c as char;
        bodies.push(binary(&format!("A{c}==")));
        bodies.push(binary(&format!("AA{c}=")));
    }
    for body in bodies {
        let allowed = send.is_valid(&body);
        let reply = send_json(&app, "POST", &format!("/api/websocket/{FEED}/send"), &body).await;
        assert_eq!(
            reply.status != StatusCode::BAD_REQUEST,
            allowed,
            "POST send {body}: the document {}, the handler answered {} {}",
            if allowed { "allows it" } else { "forbids it" },
            reply.status,
            reply.body
        );
    }
}

#[tokio::test]
async fn links_name_operations_and_parameters_that_exist() {
    let fx = Fixture::new();
    let doc = get(&fx.router(), "/api/openapi.json").await.body;
    let mut operations = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let params: BTreeSet<String> = operation["parameters"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|p| p["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            operations.insert(
                operation["operationId"].as_str().unwrap().to_owned(),
                (format!("{method} {path}"), params),
            );
        }
    }
    let mut count = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for response in operation["responses"].as_object().unwrap().values() {
                for (name, link) in response["links"].as_object().into_iter().flatten() {
                    let target = link["operationId"].as_str().unwrap();
                    let (label, params) = operations
                        .get(target)
                        .unwrap_or_else(|| panic!("link {name} to unknown {target}"));
                    for parameter in link["parameters"].as_object().unwrap().keys() {
                        assert!(params.contains(parameter), "{label} has no {parameter}");
                    }
                    count += 1;
                }
            }
        }
    }
    assert!(count >= 20, "{count} links");
    // From the traffic list to a connection's frames, from frames to one frame.
    let frames = &doc["paths"]["/api/websocket/{trafficId}/frames"]["get"]["responses"]["200"];
    assert_eq!(
        frames["links"]["frame"],
        json!({"operationId": "getFrame", "parameters": {"id": "$response.body#/0/id"}})
    );
}
