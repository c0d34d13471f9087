//! Live events over a real Socket.IO server on loopback, read by a bare Engine.IO
//! client (as the web UI speaks it): subscriptions give each client what it asked
//! for, once, and nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use frametap_control::RecordingEvent;
use frametap_store::{Record, TrafficId, WsClose};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, tungstenite::Message};

use crate::AuthConfig;
use crate::events::{LiveEvents, subscription_rooms};

use super::{entry, frame, ws_open};

const A: TrafficId = TrafficId((1_709_136_020_000 << 16) | 1);
const B: TrafficId = TrafficId((1_709_136_021_000 << 16) | 1);

/// One client: Engine.IO 4 and Socket.IO 5 packets over one WebSocket.
struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, _) = client_async(url, MaybeTlsStream::Plain(tcp)).await.unwrap();
        let mut client = RawClient { ws };
        assert!(client.next().await.starts_with('0'), "Engine.IO open");
        client.send("40").await;
        let connected = client.next().await;
        assert!(connected.starts_with("40"), "{connected}");
        client
    }

    async fn send(&mut self, packet: &str) {
        self.ws.send(Message::text(packet)).await.unwrap();
    }

    /// The next packet that is not a ping (pings are answered).
    async fn next(&mut self) -> String {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a packet within 10 s")
                .expect("the server keeps the connection")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            if text.as_str() == "2" {
                self.send("3").await;
                continue;
            }
            return text.as_str().to_string();
        }
    }

    /// Emits `subscribe` with an ack and returns the server's answer.
    async fn subscribe(&mut self, payload: Value) -> Value {
        self.send(&format!("421{}", json!(["subscribe", payload])))
            .await;
        let answer = self.next().await;
        let body = answer
            .strip_prefix("431")
            .unwrap_or_else(|| panic!("an ack, got {answer}"));
        let list: Value = serde_json::from_str(body).unwrap();
        list[0].clone()
    }

    /// Every event up to `recording:degraded` (the end marker), as (name, trafficId).
    async fn events_until_marker(&mut self) -> Vec<(String, String)> {
        let mut events = Vec::new();
        loop {
            let packet = self.next().await;
            let body = packet.strip_prefix("42").expect("an event");
            let [name, data]: [Value; 2] = serde_json::from_str(body).unwrap();
            let name = name.as_str().unwrap().to_string();
            if name == "recording:degraded" {
                return events;
            }
            let traffic = match &data {
                Value::Array(entries) => entries
                    .iter()
                    .map(|e| e["id"].as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => data["trafficId"].as_str().unwrap().to_string(),
            };
            events.push((name, traffic));
        }
    }
}

fn close(traffic: TrafficId) -> WsClose {
    WsClose {
        traffic,
        timestamp_ms: traffic.timestamp_ms() + 900,
        closed_by: Some("frametap".into()),
        close_code: Some(1008),
        close_reason: Some("rule".into()),
        frames_from_client: 2,
        frames_from_server: 2,
        bytes_from_client: 40,
        bytes_from_server: 40,
        abnormal: None,
        frames_from_frametap: Some(0),
    }
}

/// Two connections, A and B, each: entry, open, four one-frame messages, close.
fn two_connections() -> Vec<Record> {
    let mut records = Vec::new();
    for (traffic, name) in [(A, "a"), (B, "b")] {
        let url = format!("wss://{name}.example.com/ws");
        records.push(entry(traffic, "GET", &url, Some(101)).into());
        records.push(ws_open(traffic, &url).into());
    }
    for seq in 1..=4 {
        for traffic in [A, B] {
            records.push(frame(traffic, seq, seq % 2 == 1, 1, b"hi").into());
        }
    }
    records.push(close(A).into());
    records.push(close(B).into());
    records
}

fn count(events: &[(String, String)], name: &str, traffic: TrafficId) -> usize {
    let id = traffic.to_string();
    events
        .iter()
        .filter(|(n, t)| n == name && t.split(',').any(|t| t == id))
        .count()
}

#[tokio::test]
async fn subscribers_get_what_they_asked_for_once_and_nothing_else() {
    let (layer, events) = LiveEvents::new(AuthConfig { token: None }, None);
    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut everything = RawClient::connect(addr).await;
    let mut one = RawClient::connect(addr).await;
    let mut nothing = RawClient::connect(addr).await;
    let mut overlapping = RawClient::connect(addr).await;

    // Mistakes are refused with the reason, and change nothing.
    let refused = [
        (json!({"event": "websocket:frame"}), "a list"),
        (json!([{"event": "websocket:frames"}]), "unknown event"),
        (
            json!([{"event": "traffic:batch", "trafficId": A.to_string()}]),
            "without a trafficId",
        ),
        (
            json!([{"event": "websocket:frame", "trafficId": "nope"}]),
            "16 lowercase hex digits",
        ),
        (
            json!([{"event": "websocket:frame", "id": A.to_string()}]),
            "unknown field `id`",
        ),
    ];
    for (payload, why) in refused {
        let answer = one.subscribe(payload.clone()).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{payload} -> {answer}");
    }
    let a = A.to_string();
    let answer = one
        .subscribe(json!([
            {"event": "websocket:message", "trafficId": a},
            {"event": "websocket:close", "trafficId": a},
        ]))
        .await;
    assert_eq!(answer, json!({"subscribed": 2}));
    assert_eq!(nothing.subscribe(json!([])).await, json!({"subscribed": 0}));
    // In both rooms of A's frames: each frame still comes once.
    let answer = overlapping
        .subscribe(json!([
            {"event": "websocket:frame"},
            {"event": "websocket:frame", "trafficId": a},
        ]))
        .await;
    assert_eq!(answer, json!({"subscribed": 2}));

    events.publish(two_connections()).await;
    let marker = RecordingEvent::Degraded {
        since_ms: 1,
        error: "end of the test".into(),
    };
    events.publish_recording(&marker).await;

    let got = everything.events_until_marker().await;
    for traffic in [A, B] {
        assert_eq!(count(&got, "traffic:batch", traffic), 1, "{got:?}");
        assert_eq!(count(&got, "websocket:open", traffic), 1, "{got:?}");
        assert_eq!(count(&got, "websocket:frame", traffic), 4, "{got:?}");
        assert_eq!(count(&got, "websocket:message", traffic), 4, "{got:?}");
        assert_eq!(count(&got, "websocket:close", traffic), 1, "{got:?}");
    }
    assert_eq!(got.len(), 2 * (1 + 1 + 4 + 4 + 1), "{got:?}");

    let got = one.events_until_marker().await;
    let mut expected = vec![("websocket:message".to_string(), a.clone()); 4];
    expected.push(("websocket:close".to_string(), a.clone()));
    assert_eq!(got, expected);

    assert_eq!(nothing.events_until_marker().await, []);

    let got = overlapping.events_until_marker().await;
    assert_eq!(count(&got, "websocket:frame", A), 4, "{got:?}");
    assert_eq!(count(&got, "websocket:frame", B), 4, "{got:?}");
    assert_eq!(got.len(), 8, "{got:?}");
}

#[test]
fn subscription_rooms_name_the_event_and_the_connection() {
    let a = A.to_string();
    assert_eq!(
        subscription_rooms(&json!([
            {"event": "traffic:batch"},
            {"event": "websocket:frame", "trafficId": a},
            {"event": "websocket:frame", "trafficId": a},
            {"event": "websocket:close", "trafficId": null},
        ]))
        .unwrap(),
        [
            "traffic:batch".to_string(),
            format!("websocket:frame@{a}"),
            "websocket:close".to_string(),
        ]
    );
    let upper = a.to_uppercase();
    let error =
        subscription_rooms(&json!([{"event": "websocket:frame", "trafficId": upper}])).unwrap_err();
    assert!(
        error.contains("lowercase"),
        "as the API writes ids: {error}"
    );
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"event": "traffic:batch"}))
        .collect();
    let error = subscription_rooms(&Value::Array(many)).unwrap_err();
    assert!(error.contains("at most 1000"), "{error}");
}
