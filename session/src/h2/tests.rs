//! Unit tests of [`super`] (HTTP/2), through the connection's public interface.
use std::sync::Arc;

use frametap_model::{BodyOf, Record, TrafficEntry, TrafficIds};
use frametap_proto::h2::{CLIENT_PREFACE, flag, frame_bytes, kind};
use frametap_proto::ws::encode_frame;

use crate::rules::RuleBook;
use crate::{Ending, Peer, SessionMeta, SessionState, Settings};

fn state() -> SessionState {
    SessionState::new(
        SessionMeta {
            conn_id: 9,
            tls: true,
            sni: Some("api.test".into()),
            server_address: "10.0.0.2:443".into(),
            alpn_offered: vec!["h2".into(), "http/1.1".into()],
            alpn_selected: Some("h2".into()),
            ..SessionMeta::default()
        },
        &Settings {
            ids: Arc::new(TrafficIds::default()),
            payload_cap: 1 << 20,
            body_cap: 1 << 20,
            rules: Arc::new(RuleBook::default()),
            mask_keys: || [1, 2, 3, 4],
        },
    )
}

/// One side's encoder and the frames it writes.
struct Wire {
    hpack: loona_hpack::Encoder<'static>,
}

impl Wire {
    fn new() -> Self {
        Wire {
            hpack: loona_hpack::Encoder::new(),
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        frame_bytes(kind, flags, stream, payload)
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) -> Vec<u8> {
        let block = self
            .hpack
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let flags = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
        Self::frame(kind::HEADERS, flags, stream, &block)
    }

    fn data(stream: u32, data: &[u8], end: bool) -> Vec<u8> {
        Self::frame(
            kind::DATA,
            if end { flag::END_STREAM } else { 0 },
            stream,
            data,
        )
    }
}

fn entries(records: &[Record]) -> Vec<&TrafficEntry> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Traffic(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn body(records: &[Record], of: BodyOf) -> Vec<u8> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Body(b) if b.of == of => Some(b.data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn feed(s: &mut SessionState, side: Peer, bytes: &[u8], now: u64, records: &mut Vec<Record>) {
    let (new, forward) = s.on_bytes(side, bytes, now);
    assert!(
        matches!(forward, crate::Forward::AsIs),
        "HTTP/2 is forwarded as it came"
    );
    records.extend(new);
}

const GET: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "api.test"),
    (":path", "/v1/items?x=1"),
    ("content-type", "application/json"),
];

/// An extended CONNECT for a WebSocket (RFC 8441).
const CONNECT_WEBSOCKET: &[(&str, &str)] = &[
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "https"),
    (":authority", "api.test"),
    (":path", "/live"),
    ("sec-websocket-version", "13"),
];

#[test]
fn interleaved_streams_become_entries_with_bodies_and_trailers() {
    let mut s = state();
    let (mut client, mut server) = (Wire::new(), Wire::new());
    let mut records = Vec::new();
    let mut up = CLIENT_PREFACE.to_vec();
    up.extend(Wire::frame(0x4, 0, 0, &[]));
    up.extend(client.headers(1, GET, false));
    up.extend(client.headers(3, &GET[..4], true));
    up.extend(Wire::data(1, b"{\"a\":", false));
    // Byte by byte: the session reads the same whatever the reads.
    for (i, b) in up.iter().enumerate() {
        feed(&mut s, Peer::Client, &[*b], 10 + i as u64, &mut records);
    }
    feed(
        &mut s,
        Peer::Client,
        &Wire::data(1, b"1}", true),
        2_000,
        &mut records,
    );
    let mut down = Wire::frame(0x4, 0, 0, &[]);
    down.extend(server.headers(3, &[(":status", "103"), ("link", "</a.css>")], false));
    down.extend(server.headers(3, &[(":status", "204")], true));
    down.extend(server.headers(
        1,
        &[(":status", "200"), ("content-type", "application/json")],
        false,
    ));
    down.extend(Wire::data(1, b"{\"ok\":true}", false));
    down.extend(server.headers(1, &[("grpc-status", "0")], true));
    feed(&mut s, Peer::Server, &down, 3_000_000, &mut records);

    let e = entries(&records);
    assert_eq!(e.len(), 2, "{records:?}");
    // Stream 3 ended first.
    assert_eq!((e[0].method.as_str(), e[0].status), ("POST", Some(204)));
    assert_eq!(e[0].path, "/v1/items?x=1");
    let first = e[1];
    assert_eq!(first.url, "https://api.test/v1/items?x=1");
    assert_eq!(first.host, "api.test");
    assert_eq!(first.status, Some(200));
    assert_eq!(first.http_version.as_deref(), Some("HTTP/2"));
    assert_eq!(first.alpn_selected.as_deref(), Some("h2"));
    assert!(
        first
            .request_headers
            .contains(&(":path".into(), "/v1/items?x=1".into()))
    );
    // The trailer follows the response's header fields.
    assert_eq!(
        first.response_headers.last(),
        Some(&("grpc-status".to_string(), "0".to_string()))
    );
    assert_eq!(first.request_body.unwrap().size, 7);
    assert_eq!(first.response_body.unwrap().size, 11);
    assert_eq!(body(&records, BodyOf::Request), b"{\"a\":1}");
    assert_eq!(body(&records, BodyOf::Response), b"{\"ok\":true}");
    assert!(first.id.0 < e[0].id.0, "ids in the order requests arrived");
    assert!(s.on_end(&Ending::Closed, 4_000_000).is_empty());
}

#[test]
fn resets_and_the_connection_end_record_what_was_open_with_why() {
    let mut s = state();
    let mut client = Wire::new();
    let mut records = Vec::new();
    let mut up = CLIENT_PREFACE.to_vec();
    up.extend(client.headers(1, GET, true));
    up.extend(client.headers(3, GET, true));
    up.extend(Wire::frame(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    feed(&mut s, Peer::Client, &up, 1_000, &mut records);
    let e = entries(&records);
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].error.as_deref(),
        Some("client reset the stream (CANCEL)")
    );
    assert_eq!(e[0].status, None);

    let end = s.on_end(&Ending::Reset(Peer::Server), 2_000);
    let e = entries(&end);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].error.as_deref(), Some("server reset the connection"));
}

#[test]
fn malformed_http2_is_recorded_and_the_bytes_still_flow() {
    let mut s = state();
    let mut records = Vec::new();
    feed(
        &mut s,
        Peer::Client,
        b"GET / HTTP/1.1\r\n\r\n",
        1_000,
        &mut records,
    );
    let e = entries(&records);
    assert_eq!(e.len(), 1);
    let error = e[0].error.as_deref().unwrap();
    assert!(error.starts_with("client sent malformed HTTP/2"), "{error}");
    feed(&mut s, Peer::Client, b"more", 2_000, &mut records);
    assert_eq!(entries(&records).len(), 1, "reported once");
}

#[test]
fn an_rfc8441_websocket_is_recorded_like_an_http11_one() {
    let mut s = state();
    let (mut client, mut server) = (Wire::new(), Wire::new());
    let mut records = Vec::new();
    let mut up = CLIENT_PREFACE.to_vec();
    up.extend(client.headers(1, CONNECT_WEBSOCKET, false));
    feed(&mut s, Peer::Client, &up, 1_000, &mut records);
    let answer = server.headers(
        1,
        &[(":status", "200"), ("sec-websocket-protocol", "chat")],
        false,
    );
    feed(&mut s, Peer::Server, &answer, 2_000, &mut records);
    let [Record::Traffic(entry), Record::WsOpen(open)] = &records[..] else {
        panic!("{records:?}");
    };
    assert_eq!(entry.url, "wss://api.test/live");
    assert_eq!(entry.protocol, "wss");
    assert_eq!(entry.method, "CONNECT");
    assert_eq!(entry.http_version.as_deref(), Some("HTTP/2"));
    assert_eq!(open.subprotocol.as_deref(), Some("chat"));
    let traffic = entry.id;
    records.clear();

    // A text message split over two DATA frames, its echo, then closes both ways.
    let hello = encode_frame(true, false, 0x1, Some([9, 8, 7, 6]), b"hello over h2");
    let (a, b) = hello.split_at(5);
    feed(
        &mut s,
        Peer::Client,
        &Wire::data(1, a, false),
        3_000,
        &mut records,
    );
    feed(
        &mut s,
        Peer::Client,
        &Wire::data(1, b, false),
        3_000,
        &mut records,
    );
    let echo = encode_frame(true, false, 0x1, None, b"hello over h2");
    feed(
        &mut s,
        Peer::Server,
        &Wire::data(1, &echo, false),
        4_000,
        &mut records,
    );
    let close = encode_frame(true, false, 0x8, Some([1, 1, 1, 1]), &[0x03, 0xe8]);
    feed(
        &mut s,
        Peer::Client,
        &Wire::data(1, &close, false),
        5_000,
        &mut records,
    );
    let close_back = encode_frame(true, false, 0x8, None, &[0x03, 0xe8]);
    feed(
        &mut s,
        Peer::Server,
        &Wire::data(1, &close_back, true),
        6_000,
        &mut records,
    );
    feed(
        &mut s,
        Peer::Client,
        &Wire::data(1, b"", true),
        7_000,
        &mut records,
    );

    let frames: Vec<_> = records
        .iter()
        .filter_map(|r| match r {
            Record::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 4, "{records:?}");
    assert!(frames.iter().all(|f| f.traffic == traffic));
    assert_eq!(frames[0].payload, b"hello over h2");
    assert!(frames[0].from_client && frames[0].masked);
    assert_eq!(frames[1].payload, b"hello over h2");
    assert!(!frames[1].from_client);
    assert_eq!(frames[2].close_code, Some(1000));
    let Some(Record::WsClose(c)) = records.last() else {
        panic!("{records:?}");
    };
    assert_eq!(c.closed_by.as_deref(), Some("client"));
    assert_eq!(c.close_code, Some(1000));
    assert_eq!(c.abnormal, None);
    assert_eq!((c.frames_from_client, c.frames_from_server), (2, 2));
    assert!(s.on_end(&Ending::Closed, 8_000).is_empty());
}

#[test]
fn a_refused_websocket_is_an_ordinary_exchange() {
    let mut s = state();
    let (mut client, mut server) = (Wire::new(), Wire::new());
    let mut records = Vec::new();
    let mut up = CLIENT_PREFACE.to_vec();
    up.extend(client.headers(1, CONNECT_WEBSOCKET, false));
    feed(&mut s, Peer::Client, &up, 1_000, &mut records);
    let refused = server.headers(1, &[(":status", "403")], true);
    feed(&mut s, Peer::Server, &refused, 2_000, &mut records);
    let e = entries(&records);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].protocol.as_str(), e[0].status), ("https", Some(403)));
    assert!(!records.iter().any(|r| matches!(r, Record::WsOpen(_))));
}

#[test]
fn streams_beyond_the_bound_are_relayed_but_not_followed_and_that_is_said_once() {
    let mut s = state();
    let mut client = Wire::new();
    let mut records = Vec::new();
    let mut up = CLIENT_PREFACE.to_vec();
    let open = super::MAX_OPEN_STREAMS as u32 + 2;
    for n in 0..open {
        up.extend(client.headers(2 * n + 1, &GET[..4], false));
    }
    feed(&mut s, Peer::Client, &up, 1_000, &mut records);
    let e = entries(&records);
    assert_eq!(e.len(), 1, "one entry says it");
    assert!(
        e[0].error
            .as_deref()
            .unwrap()
            .contains("streams open at once")
    );
    // The ones followed are recorded when the connection ends.
    let end = s.on_end(&Ending::Closed, 2_000);
    assert_eq!(entries(&end).len(), super::MAX_OPEN_STREAMS);
}
