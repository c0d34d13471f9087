//! Exports: HAR 1.2 (of one entry or a time range) and NDJSON frames.

use axum::Router;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{Record, TrafficId};
use serde_json::{Value, json};

use super::{
    CHAT, DOWNLOAD, FEED, FORM, Fixture, JSON_REPLY, LOCAL, LOGIN, OLD, REFUSED, TALK, TUNNEL,
    UNKNOWN, UPLOAD, entry, frame, frame_id, get, gzip, send_raw, write_exchanges, write_talk,
    write_tls_outcomes,
};

fn har_validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(include_str!("../har-1.2.schema.json")).unwrap();
    jsonschema::draft7::new(&schema).unwrap()
}

/// `GET uri` as a HAR download, checked against the HAR 1.2 schema.
async fn get_har(app: &Router, uri: &str, file_name: &str) -> Value {
    let reply = get(app, uri).await;
    assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_DISPOSITION],
        format!("attachment; filename=\"{file_name}\"")
    );
    if let Err(error) = har_validator().validate(&reply.body) {
        panic!("{uri}: not HAR 1.2: {error}\n{:#}", reply.body);
    }
    reply.body
}

#[tokio::test]
async fn har_of_one_connection_has_its_messages() {
    let fx = Fixture::new();
    let app = fx.router();
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={CHAT}"),
        &format!("frametap-{CHAT}.har"),
    )
    .await;
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "frametap");
    assert_eq!(log["creator"]["version"], env!("CARGO_PKG_VERSION"));
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry["startedDateTime"], "2024-02-28T16:00:00.000Z");
    assert_eq!(entry["time"], 12.5);
    assert_eq!(
        entry["timings"],
        json!({"send": 0.0, "wait": 12.5, "receive": 0.0})
    );
    assert_eq!(entry["cache"], json!({}));
    assert_eq!(entry["serverIPAddress"], "93.184.216.34");
    assert_eq!(entry["request"]["method"], "GET");
    assert_eq!(entry["request"]["url"], "wss://chat.example.com/socket");
    assert_eq!(
        entry["request"]["headers"],
        json!([
            {"name": "Host", "value": "chat.example.com"},
            {"name": "Accept", "value": "text/html"},
            {"name": "accept", "value": "application/json"},
        ])
    );
    assert_eq!(entry["response"]["status"], 101);
    assert_eq!(entry["response"]["statusText"], "Switching Protocols");
    assert_eq!(
        entry["response"]["cookies"],
        json!([{"name": "a", "value": "1"}, {"name": "b", "value": "2"}])
    );
    assert_eq!(entry["_resourceType"], "websocket");
    let at = |seq: u64| (CHAT.timestamp_ms() + 100 * seq) as f64 / 1000.0;
    assert_eq!(
        entry["_webSocketMessages"],
        json!([
            {"type": "send", "time": at(1), "opcode": 1, "data": r#"{"action":"subscribe","channel":"chat"}"#},
            {"type": "receive", "time": at(2), "opcode": 1, "data": r#"{"status":"subscribed","channel":"chat"}"#},
            {"type": "receive", "time": at(6), "opcode": 2, "data": BASE64.encode([0, 1, 2, 0xff, 3, 4])},
        ])
    );

    // A plain HTTP exchange: no WebSocket fields.
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={LOGIN}"),
        &format!("frametap-{LOGIN}.har"),
    )
    .await;
    let entry = &har["log"]["entries"][0];
    assert_eq!(entry["response"]["statusText"], "OK");
    assert!(entry.get("_resourceType").is_none());
    assert!(entry.get("_webSocketMessages").is_none());
    // An open connection's messages so far; one without frames has none.
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={LOCAL}"),
        &format!("frametap-{LOCAL}.har"),
    )
    .await;
    assert_eq!(har["log"]["entries"][0]["_webSocketMessages"], json!([]));

    // The validator has teeth.
    let validator = har_validator();
    let mut broken = har.clone();
    broken["log"]["entries"][0]["timings"]
        .as_object_mut()
        .unwrap()
        .remove("wait");
    assert!(!validator.is_valid(&broken));
    let mut broken = har.clone();
    broken["log"]["entries"][0]["_webSocketMessages"] =
        json!([{"type": "sent", "time": 1.0, "opcode": 1, "data": ""}]);
    assert!(!validator.is_valid(&broken));
    let mut broken = har;
    broken["log"]["entries"][0]["startedDateTime"] = json!("yesterday");
    assert!(!validator.is_valid(&broken));
}

#[tokio::test]
async fn har_of_a_time_range_has_every_entry_in_it() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    let (from, to) = (CHAT.timestamp_ms(), LOGIN.timestamp_ms());
    let har = get_har(
        &app,
        &format!("/api/har?from={from}&to={to}"),
        &format!("frametap-{from}-{to}.har"),
    )
    .await;
    let entries = har["log"]["entries"].as_array().unwrap();
    let urls: Vec<&str> = entries
        .iter()
        .map(|e| e["request"]["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [
            "wss://chat.example.com/socket",
            "wss://feed.example.com/live?topic=ws",
            "https://api.example.com/login"
        ],
        "oldest first, both ends included"
    );
    assert_eq!(
        entries[1]["request"]["queryString"],
        json!([{"name": "topic", "value": "ws"}])
    );
    let feed = entries[1]["_webSocketMessages"].as_array().unwrap();
    assert_eq!(feed.len(), 250);
    assert_eq!(
        feed[0],
        json!({"type": "send", "time": (FEED.timestamp_ms() + 100) as f64 / 1000.0, "opcode": 1, "data": "message 1"})
    );
    assert_eq!(feed[1]["type"], "receive");
    assert!(har["log"].get("comment").is_none());

    // Everything from a point on; TALK has no traffic entry, only its connection.
    let har = get_har(&app, "/api/har?from=0", "frametap-0-latest.har").await;
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 5);
    let har = get_har(
        &app,
        &format!("/api/har?to={}", from - 1),
        &format!("frametap-0-{}.har", from - 1),
    )
    .await;
    assert_eq!(har["log"]["entries"], json!([]));
    // Every combination of the parameters is a selection: none is everything, an
    // entry and a range is the entry if it started in the range, and a range that
    // ends before it starts holds nothing (and says so).
    let har = get_har(&app, "/api/har", "frametap-0-latest.har").await;
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 5);
    let chat_ms = CHAT.timestamp_ms();
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={CHAT}&from={chat_ms}"),
        &format!("frametap-{CHAT}-{chat_ms}-latest.har"),
    )
    .await;
    assert_eq!(har["log"]["entries"].as_array().unwrap().len(), 1);
    let har = get_har(
        &app,
        &format!("/api/har?trafficId={CHAT}&from={}", chat_ms + 1),
        &format!("frametap-{CHAT}-{}-latest.har", chat_ms + 1),
    )
    .await;
    assert_eq!(har["log"]["entries"], json!([]));
    assert!(
        har["log"]["comment"]
            .as_str()
            .unwrap()
            .contains("outside the range"),
        "{har}"
    );
    let har = get_har(&app, "/api/har?from=5&to=4", "frametap-5-4.har").await;
    assert_eq!(har["log"]["entries"], json!([]));
    assert!(
        har["log"]["comment"]
            .as_str()
            .unwrap()
            .contains("before it starts"),
        "{har}"
    );

    for (query, status, needle) in [
        ("from=abc".into(), StatusCode::BAD_REQUEST, "`from`"),
        (
            "to=9223372036854775808".into(),
            StatusCode::BAD_REQUEST,
            "`to`",
        ),
        ("trafficId=".into(), StatusCode::BAD_REQUEST, "`trafficId`"),
        (
            "trafficId=xyz".into(),
            StatusCode::BAD_REQUEST,
            "`trafficId`",
        ),
        (
            format!("trafficId={UNKNOWN}"),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
        (
            format!("trafficId={TALK}"),
            StatusCode::NOT_FOUND,
            "Traffic entry not found",
        ),
    ] {
        let reply = get(&app, &format!("/api/har?{query}")).await;
        assert_eq!(reply.status, status, "{query}");
        assert!(reply.error().contains(needle), "{query}: {}", reply.error());
    }
}

/// A range with more entries than a HAR holds: the oldest ones, and a note.
#[tokio::test]
async fn har_of_a_large_range_keeps_the_oldest_entries() {
    let fx = Fixture::new();
    let start: u64 = 1_800_000_000_000;
    let records: Vec<Record> = (0..10_003u64)
        .map(|i| {
            let id = TrafficId::new(start + i, 1);
            entry(
                id,
                "GET",
                &format!("https://bulk.example.com/{i}"),
                Some(200),
            )
            .into()
        })
        .collect();
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let har = get_har(
        &fx.router(),
        &format!("/api/har?from={start}"),
        &format!("frametap-{start}-latest.har"),
    )
    .await;
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 10_000);
    assert_eq!(entries[0]["request"]["url"], "https://bulk.example.com/0");
    assert_eq!(
        entries[9_999]["request"]["url"],
        "https://bulk.example.com/9999"
    );
    let comment = har["log"]["comment"].as_str().unwrap();
    assert!(comment.contains("10003 entries"), "{comment}");
    assert!(
        comment.contains(&format!("at or after {}", start + 9_999)),
        "{comment}"
    );
}

#[tokio::test]
async fn har_leaves_out_entries_without_an_http_exchange() {
    let fx = Fixture::new();
    write_tls_outcomes(&fx);
    let app = fx.router();
    let from = TUNNEL.timestamp_ms();
    let har = get_har(
        &app,
        &format!("/api/har?from={from}"),
        &format!("frametap-{from}-latest.har"),
    )
    .await;
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the 502 has a request: {entries:#?}");
    let gateway = &entries[0];
    assert_eq!(
        gateway["request"]["url"],
        "https://private.example.com/chat"
    );
    assert_eq!(gateway["response"]["status"], 502);
    assert_eq!(gateway["response"]["statusText"], "Bad Gateway");
    assert!(
        gateway["comment"]
            .as_str()
            .unwrap()
            .contains("upstream TLS failed")
    );
    let comment = har["log"]["comment"].as_str().unwrap();
    assert!(
        comment.contains("2 entries in the range without an HTTP exchange"),
        "{comment}"
    );
    for (id, why) in [
        (TUNNEL, "relayed untouched: server selected h2"),
        (REFUSED, "does not trust the frametap CA"),
    ] {
        let har = get_har(
            &app,
            &format!("/api/har?trafficId={id}"),
            &format!("frametap-{id}.har"),
        )
        .await;
        assert_eq!(har["log"]["entries"], json!([]));
        let comment = har["log"]["comment"].as_str().unwrap();
        assert!(
            comment.contains(why) && comment.contains("no HTTP exchange"),
            "{comment}"
        );
    }
}

#[tokio::test]
async fn har_carries_the_recorded_bodies() {
    let fx = Fixture::new();
    write_exchanges(&fx);
    let app = fx.router();
    let har = get(&app, &format!("/api/har?trafficId={UPLOAD}"))
        .await
        .body;
    assert!(har_validator().is_valid(&har), "{har}");
    let e = &har["log"]["entries"][0];
    assert_eq!(
        e["request"]["postData"],
        json!({"mimeType": "application/x-www-form-urlencoded", "text": "user=alice&password=hunter2"})
    );
    assert_eq!(e["request"]["bodySize"], FORM.len());
    let content = &e["response"]["content"];
    assert_eq!(content["text"], std::str::from_utf8(JSON_REPLY).unwrap());
    assert_eq!(content["mimeType"], "application/json");
    assert_eq!(content["size"], JSON_REPLY.len());
    let sent = gzip(JSON_REPLY).len() as i64;
    assert_eq!(e["response"]["bodySize"], sent);
    assert_eq!(content["compression"], JSON_REPLY.len() as i64 - sent);
    assert_eq!(content.get("encoding"), None);
    assert_eq!(e.get("comment"), None);

    // Binary content is base64, and a stored prefix says so.
    let har = get(&app, &format!("/api/har?trafficId={DOWNLOAD}"))
        .await
        .body;
    let e = &har["log"]["entries"][0];
    let content = &e["response"]["content"];
    assert_eq!(content["encoding"], "base64");
    let binary: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(content["text"], BASE64.encode(&binary));
    assert_eq!(e["response"]["bodySize"], 100_000);
    assert!(
        e["comment"]
            .as_str()
            .unwrap()
            .contains("response body's text is only its beginning (1000 of 100000 bytes"),
        "{e}"
    );
    assert_eq!(e["request"].get("postData"), None, "a GET sends no body");
    // Entries recorded before bodies: no text, sizes as before.
    let har = get(&app, &format!("/api/har?trafficId={OLD}")).await.body;
    let e = &har["log"]["entries"][0];
    assert_eq!(e["response"]["content"].get("text"), None);
    assert_eq!(e["request"]["bodySize"], -1);
}

/// Every line of an NDJSON answer, parsed.
async fn get_ndjson(app: &Router, uri: &str) -> Vec<Value> {
    let reply = send_raw(app, "GET", uri, None, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{uri}");
    assert_eq!(reply.content_type(), Some("application/x-ndjson"));
    let text = String::from_utf8(reply.bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Every frame of a frames listing, following its links.
async fn all_frames(app: &Router, first: &str) -> Vec<Value> {
    let mut uri = first.to_owned();
    let mut frames = Vec::new();
    loop {
        let reply = get(app, &uri).await;
        frames.extend(reply.array().iter().cloned());
        let Some(link) = reply.link() else { break };
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    frames
}

#[tokio::test]
async fn ndjson_lines_are_the_frames_endpoints_json() {
    let fx = Fixture::new();
    // Enough to stream in several chunks.
    let bulk = TrafficId((1_709_136_010_000 << 16) | 1);
    let records: Vec<Record> = (1..=60)
        .map(|seq| frame(bulk, seq, seq % 3 == 0, 2, &vec![seq as u8; 16 << 10]).into())
        .collect();
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let app = fx.router();
    for traffic in [CHAT, FEED, bulk] {
        let lines = get_ndjson(&app, &format!("/api/websocket/{traffic}/frames.ndjson")).await;
        let frames = all_frames(&app, &format!("/api/websocket/{traffic}/frames")).await;
        assert!(!lines.is_empty());
        assert_eq!(lines, frames, "{traffic}");
    }
    for query in [
        "direction=client-to-server&opcode=1".to_owned(),
        format!("after={}", frame_id(FEED, 240)),
        "opcode=9".into(),
    ] {
        let lines = get_ndjson(
            &app,
            &format!("/api/websocket/{FEED}/frames.ndjson?{query}"),
        )
        .await;
        let frames = all_frames(&app, &format!("/api/websocket/{FEED}/frames?{query}")).await;
        assert_eq!(lines, frames, "{query}");
    }
    assert_eq!(
        get_ndjson(
            &app,
            &format!(
                "/api/websocket/{FEED}/frames.ndjson?after={}",
                frame_id(FEED, 240)
            )
        )
        .await
        .len(),
        10
    );
    // Like frames: no such connection, no frames.
    for traffic in [UNKNOWN.to_string(), LOGIN.to_string(), "nope".into()] {
        let uri = format!("/api/websocket/{traffic}/frames.ndjson");
        assert!(get_ndjson(&app, &uri).await.is_empty(), "{traffic}");
    }
    for (traffic, query, status) in [
        (FEED.to_string(), "?opcode=3", StatusCode::BAD_REQUEST),
        (FEED.to_string(), "?after=x", StatusCode::BAD_REQUEST),
    ] {
        let reply = get(
            &app,
            &format!("/api/websocket/{traffic}/frames.ndjson{query}"),
        )
        .await;
        assert_eq!(reply.status, status, "{traffic} {query}");
    }
}
