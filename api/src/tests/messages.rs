//! Messages: frames reassembled into messages, paged and flagged.

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_store::{Record, TrafficId, WsClose};
use serde_json::{Value, json};

use super::{
    CHAT, FEED, Fixture, LOGIN, Reply, TALK, UNKNOWN, fragment, frame, frame_id, get, write_talk,
    ws_open,
};

/// A closed connection with dropped, replaced, injected and odd text messages.
const ODD: TrafficId = TrafficId((1_709_136_008_000 << 16) | 1);

fn message_ids(reply: &Reply) -> Vec<String> {
    reply
        .array()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn messages_are_reassembled_from_interleaved_fragments() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    let reply = get(&app, &format!("/api/websocket/{TALK}/messages")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.link(), None);
    let ts = TALK.timestamp_ms();
    let message = |first: u64,
                   last: u64,
                   from_client: bool,
                   kind: &str,
                   content: &str,
                   encoding: &str,
                   length: u64,
                   frames: u64| {
        json!({
            "id": frame_id(TALK, first),
            "trafficId": TALK.to_string(),
            "direction": if from_client { "client-to-server" } else { "server-to-client" },
            "fromClient": from_client,
            "type": kind,
            "content": content,
            "contentEncoding": encoding,
            "length": length,
            "truncated": false,
            "timestamp": ts + 100 * last,
            "frameCount": frames,
            "lastFrameId": frame_id(TALK, last),
            "dropped": false,
            "injected": false,
            "modified": false,
            "incomplete": false,
        })
    };
    // In the order of their first frame; the server's text left open is not there yet.
    assert_eq!(
        reply.body,
        json!([
            message(1, 7, true, "text", "Hello, wörld", "utf-8", 13, 3),
            message(
                2,
                6,
                false,
                "binary",
                &BASE64.encode([0, 1, 2, 3]),
                "base64",
                4,
                2
            ),
            message(8, 8, false, "text", "ok", "utf-8", 2, 1),
            message(
                9,
                10,
                true,
                "binary",
                &BASE64.encode([9, 8]),
                "base64",
                2,
                2
            ),
        ])
    );

    let by_direction = |direction: &str| {
        let app = app.clone();
        let uri = format!("/api/websocket/{TALK}/messages?direction={direction}");
        async move { message_ids(&get(&app, &uri).await) }
    };
    assert_eq!(
        by_direction("client-to-server").await,
        [frame_id(TALK, 1), frame_id(TALK, 9)]
    );
    assert_eq!(
        by_direction("server-to-client").await,
        [frame_id(TALK, 2), frame_id(TALK, 8)]
    );

    // The seed's chat: control frames are not messages.
    let chat = get(&app, &format!("/api/websocket/{CHAT}/messages")).await;
    assert_eq!(
        message_ids(&chat),
        [frame_id(CHAT, 1), frame_id(CHAT, 2), frame_id(CHAT, 5)]
    );
    assert_eq!(
        chat.body[0]["content"],
        r#"{"action":"subscribe","channel":"chat"}"#
    );
    assert_eq!(
        chat.body[2]["content"],
        BASE64.encode([0, 1, 2, 0xff, 3, 4])
    );
    assert_eq!(chat.body[2]["lastFrameId"], frame_id(CHAT, 6));
}

#[tokio::test]
async fn message_pages_follow_the_cursor_and_wait_for_open_messages() {
    let fx = Fixture::new();
    write_talk(&fx);
    let app = fx.router();
    // One message per page: each cursor skips the tails of messages already returned.
    let mut uri = format!("/api/websocket/{TALK}/messages?limit=1");
    let mut collected = Vec::new();
    loop {
        let reply = get(&app, &uri).await;
        assert_eq!(reply.status, StatusCode::OK);
        collected.extend(message_ids(&reply));
        let Some(link) = reply.link() else { break };
        let last = collected.last().unwrap();
        assert_eq!(
            link,
            format!("</api/websocket/{TALK}/messages?after={last}&limit=1>; rel=\"next\"")
        );
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    let expected: Vec<String> = [1, 2, 8, 9].map(|seq| frame_id(TALK, seq)).to_vec();
    assert_eq!(collected, expected);

    // The open message is not returned and the page stops before it; once its final
    // fragment is recorded, the same cursor picks it up.
    let after_last = format!("/api/websocket/{TALK}/messages?after={}", frame_id(TALK, 9));
    assert_eq!(get(&app, &after_last).await.body, json!([]));
    fx.primary
        .write(&[fragment(TALK, 12, false, 0, true, b"b").into()])
        .unwrap();
    fx.catch_up();
    let reply = get(&app, &after_last).await;
    assert_eq!(message_ids(&reply), [frame_id(TALK, 11)]);
    assert_eq!(reply.body[0]["content"], "ab");
    assert_eq!(reply.body[0]["incomplete"], false);

    // A message that never finished, on a connection that ended: returned, incomplete.
    fx.primary
        .write(&[
            fragment(TALK, 13, true, 1, false, b"never finished").into(),
            WsClose {
                traffic: TALK,
                timestamp_ms: TALK.timestamp_ms() + 5000,
                closed_by: None,
                close_code: None,
                close_reason: None,
                frames_from_client: 6,
                frames_from_server: 7,
                bytes_from_client: 100,
                bytes_from_server: 100,
                abnormal: Some("client reset".into()),
                frames_from_frametap: Some(0),
            }
            .into(),
        ])
        .unwrap();
    fx.catch_up();
    let reply = get(
        &app,
        &format!(
            "/api/websocket/{TALK}/messages?after={}",
            frame_id(TALK, 11)
        ),
    )
    .await;
    assert_eq!(message_ids(&reply), [frame_id(TALK, 13)]);
    assert_eq!(reply.body[0]["incomplete"], true);
    assert_eq!(reply.body[0]["content"], "never finished");

    // 250 single-frame messages: pages of 100, 100, 50.
    let mut uri = format!("/api/websocket/{FEED}/messages");
    let mut pages = Vec::new();
    loop {
        let reply = get(&app, &uri).await;
        pages.push(reply.array().len());
        let Some(link) = reply.link() else { break };
        uri = link[1..link.find('>').unwrap()].to_owned();
    }
    assert_eq!(pages, [100, 100, 50]);
    let reply = get(
        &app,
        &format!(
            "/api/websocket/{FEED}/messages?direction=client-to-server&limit=2&after={}",
            frame_id(FEED, 10)
        ),
    )
    .await;
    assert_eq!(
        message_ids(&reply),
        [frame_id(FEED, 11), frame_id(FEED, 13)]
    );
    assert_eq!(reply.body[0]["content"], "message 11");
    assert!(
        reply
            .link()
            .unwrap()
            .ends_with("&limit=2&direction=client-to-server>; rel=\"next\""),
        "{:?}",
        reply.link()
    );
}

#[tokio::test]
async fn messages_carry_flags_and_show_bad_text_as_base64() {
    let fx = Fixture::new();
    let mut frames = vec![
        frame(ODD, 1, true, 1, b"password=hunter2"),
        frame(ODD, 2, true, 1, b"password=***"),
        frame(ODD, 3, false, 1, b"notice"),
        frame(ODD, 4, false, 1, b"\xff\xfe ok"),
        frame(ODD, 5, false, 1, b"a\xc3"),
        fragment(ODD, 6, true, 2, false, &[1]),
        fragment(ODD, 7, true, 0, true, &[2]),
        fragment(ODD, 8, true, 1, false, b"half "),
        fragment(ODD, 9, true, 0, true, b"dropped"),
    ];
    frames[0].dropped = true;
    frames[1].modified = true;
    frames[2].injected = true;
    frames[4].payload_len = 3;
    frames[4].truncated = true;
    frames[5].dropped = true;
    frames[6].dropped = true;
    frames[6].binary_message = true;
    frames[7].dropped = true;
    let mut records: Vec<Record> = vec![ws_open(ODD, "wss://odd.example.com/").into()];
    records.extend(frames.into_iter().map(Record::from));
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let reply = get(&fx.router(), &format!("/api/websocket/{ODD}/messages")).await;
    let summary: Vec<Value> = reply
        .array()
        .iter()
        .map(|m| {
            json!([
                m["content"],
                m["contentEncoding"],
                m["type"],
                m["dropped"],
                m["injected"],
                m["modified"],
                m["truncated"],
                m["length"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!([
                "password=hunter2",
                "utf-8",
                "text",
                true,
                false,
                false,
                false,
                16
            ]),
            json!([
                "password=***",
                "utf-8",
                "text",
                false,
                false,
                true,
                false,
                12
            ]),
            json!(["notice", "utf-8", "text", false, true, false, false, 6]),
            // Not UTF-8: base64, saying so.
            json!([
                BASE64.encode(b"\xff\xfe ok"),
                "base64",
                "text",
                false,
                false,
                false,
                false,
                5
            ]),
            // Cut inside a character by the agent's truncation: text up to it.
            json!(["a", "utf-8", "text", false, false, false, true, 3]),
            json!([
                BASE64.encode([1, 2]),
                "base64",
                "binary",
                true,
                false,
                false,
                false,
                2
            ]),
            // Dropped only if every frame was.
            json!([
                "half dropped",
                "utf-8",
                "text",
                false,
                false,
                false,
                false,
                12
            ]),
        ]
    );
}

/// `contains` and `regex` search the content of every message (text, and the bytes
/// of binary ones), across fragments; the next page's link keeps the search.
#[tokio::test]
async fn messages_can_be_searched_by_substring_and_regex_page_by_page() {
    let fx = Fixture::new();
    let frames = vec![
        frame(ODD, 1, true, 1, b"password=hunter2"),
        frame(ODD, 2, false, 1, b"notice: Password changed"),
        fragment(ODD, 3, true, 1, false, b"pass"),
        fragment(ODD, 4, true, 0, true, b"word split over fragments"),
        frame(ODD, 5, false, 2, b"\x00password\xff"),
        frame(ODD, 6, true, 1, b"nothing here"),
    ];
    let mut records: Vec<Record> = vec![ws_open(ODD, "wss://odd.example.com/").into()];
    records.extend(frames.into_iter().map(Record::from));
    fx.primary.write(&records).unwrap();
    fx.catch_up();
    let app = fx.router();
    let firsts = |uri: String| {
        let app = app.clone();
        async move {
            let reply = get(&app, &uri).await;
            assert_eq!(reply.status, StatusCode::OK, "{uri}: {:?}", reply.body);
            let seqs: Vec<String> = message_ids(&reply)
                .iter()
                .map(|id| {
                    id.rsplit('-')
                        .next()
                        .unwrap()
                        .trim_start_matches('0')
                        .to_string()
                })
                .collect();
            let next = reply.link().map(|link| {
                let url = link
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'));
                url.expect("<URL>; rel=\"next\"").0.to_string()
            });
            (seqs, next)
        }
    };
    let base = format!("/api/websocket/{ODD}/messages");
    // Case-sensitive substring: across fragments, and inside binary messages.
    let (found, _) = firsts(format!("{base}?contains=password")).await;
    assert_eq!(found, ["1", "3", "5"]);
    let (found, _) = firsts(format!(
        "{base}?regex=(%3Fi)password%5Cb&direction=to-client"
    ))
    .await;
    assert_eq!(found, ["2", "5"]);
    let (found, _) = firsts(format!("{base}?contains=pass&regex=hunter%5Cd")).await;
    assert_eq!(found, ["1"], "both must hold");
    // Page by page: the link keeps the search (and the direction).
    let (found, link) = firsts(format!("{base}?contains=pass&limit=1&direction=to-server")).await;
    assert_eq!(found, ["1"]);
    let link = link.expect("more may follow");
    assert!(
        link.contains("contains=pass") && link.contains("direction=client-to-server"),
        "{link}"
    );
    let (found, _) = firsts(link).await;
    assert_eq!(found, ["3"]);
    // A search needs something to look for, and a regex that compiles.
    for (query, needle) in [
        ("contains=", "`contains` must be 1 to 1024 characters"),
        ("regex=(", "`regex` is not a regular expression"),
    ] {
        let reply = get(&app, &format!("{base}?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.error().contains(needle), "{}", reply.error());
    }
}

#[tokio::test]
async fn message_errors_are_json() {
    let fx = Fixture::new();
    let app = fx.router();
    // The rule of frames and count: an unknown or malformed id has none.
    for traffic in [
        UNKNOWN.to_string(),
        LOGIN.to_string(),
        "nope".into(),
        "%FF".into(),
    ] {
        for endpoint in ["messages", "frames"] {
            let reply = get(&app, &format!("/api/websocket/{traffic}/{endpoint}")).await;
            assert_eq!(reply.status, StatusCode::OK, "{traffic} {endpoint}");
            assert_eq!(reply.body, json!([]), "{traffic} {endpoint}");
        }
        let count = get(&app, &format!("/api/websocket/{traffic}/count")).await;
        assert_eq!(count.body, json!({"count": 0}), "{traffic}");
    }
    for (query, needle) in [
        ("limit=0".to_owned(), "`limit`"),
        ("limit=1001".into(), "`limit`"),
        ("direction=up".into(), "`direction`"),
        ("after=nope".into(), "malformed cursor"),
    ] {
        let reply = get(&app, &format!("/api/websocket/{FEED}/messages?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.error().contains(needle), "{query}: {}", reply.error());
    }
    let reply = get(&app, &format!("/api/websocket/{FEED}/messages?after=nope")).await;
    assert!(
        reply.error().contains("the `id` of a message"),
        "{}",
        reply.error()
    );
}
