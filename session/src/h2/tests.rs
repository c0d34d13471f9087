//! Unit tests of [`super`] (HTTP/2), through the connection's public interface.
use std::sync::Arc;

use frametap_model::{BodyOf, Record, TrafficEntry, TrafficIds};
use frametap_proto::h2::{CLIENT_PREFACE, flag, frame_bytes, kind};
use frametap_proto::ws::encode_frame;

use crate::rules::RuleBook;
use crate::{Ending, Peer, SessionMeta, SessionState, Settings};

fn meta() -> SessionMeta {
    SessionMeta {
        conn_id: 9,
        tls: true,
        sni: Some("api.test".into()),
        server_address: "10.0.0.2:443".into(),
        alpn_offered: vec!["h2".into(), "http/1.1".into()],
        alpn_selected: Some("h2".into()),
        ..SessionMeta::default()
    }
}

fn settings(rules: RuleBook) -> Settings {
    Settings {
        ids: Arc::new(TrafficIds::default()),
        payload_cap: 1 << 20,
        body_cap: 1 << 20,
        rules: Arc::new(rules),
        mask_keys: || [1, 2, 3, 4],
    }
}

fn state() -> SessionState {
    SessionState::new(meta(), &settings(RuleBook::default()))
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

// ---- Rewriting WebSocket streams: rules, injection, flow control ----

use frametap_proto::h2::{FrameHeader, HEADER_LEN};

/// Both peers' sides of a connection through the session, as the pump drives it:
/// what each peer receives, outboxes included.
struct Pipe {
    s: SessionState,
    to: [Vec<u8>; 2],
    records: Vec<Record>,
    /// Whether any read was forwarded other than as it came.
    rewritten: bool,
}

impl Pipe {
    fn new(rules: &str) -> Self {
        let rules: Vec<frametap_model::Rule> = serde_json::from_str(rules).unwrap();
        Pipe {
            s: SessionState::new(meta(), &settings(RuleBook::new(rules).unwrap())),
            to: [Vec::new(), Vec::new()],
            records: Vec::new(),
            rewritten: false,
        }
    }

    /// `from` sends `bytes`, read `chunk` bytes at a time.
    fn send(&mut self, from: Peer, bytes: &[u8], chunk: usize) {
        for piece in bytes.chunks(chunk) {
            let (records, forward) = self.s.on_bytes(from, piece, 1_000);
            self.records.extend(records);
            let out = match forward {
                crate::Forward::AsIs => piece.to_vec(),
                crate::Forward::Bytes(b) => {
                    self.rewritten = true;
                    b
                }
            };
            self.to[from.other().index()].extend(out);
            self.outboxes();
        }
    }

    fn outboxes(&mut self) {
        for to in [Peer::Client, Peer::Server] {
            if let Some(outbox) = self.s.take_outbox(to) {
                self.rewritten = true;
                self.records.extend(outbox.records);
                self.to[to.index()].extend(outbox.bytes);
            }
        }
    }

    /// What `peer` received since the last look, as frames.
    fn received(&mut self, peer: Peer) -> Vec<(FrameHeader, Vec<u8>)> {
        let bytes = std::mem::take(&mut self.to[peer.index()]);
        let mut rest = &bytes[..];
        if peer == Peer::Server && rest.starts_with(CLIENT_PREFACE) {
            rest = &rest[CLIENT_PREFACE.len()..];
        }
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let h = FrameHeader::parse(rest[..HEADER_LEN].try_into().unwrap());
            frames.push((h, rest[HEADER_LEN..HEADER_LEN + h.len].to_vec()));
            rest = &rest[HEADER_LEN + h.len..];
        }
        frames
    }

    /// A WebSocket accepted on stream 1; returns its traffic id.
    fn open(&mut self, server_initial_window: Option<u32>) -> frametap_model::TrafficId {
        let (mut client, mut server) = (Wire::new(), Wire::new());
        let mut up = CLIENT_PREFACE.to_vec();
        up.extend(Wire::frame(kind::SETTINGS, 0, 0, &[]));
        up.extend(client.headers(1, CONNECT_WEBSOCKET, false));
        self.send(Peer::Client, &up, 1 << 20);
        let mut settings = vec![0, 8, 0, 0, 0, 1]; // ENABLE_CONNECT_PROTOCOL
        if let Some(window) = server_initial_window {
            settings.extend([0, 4]);
            settings.extend(window.to_be_bytes());
        }
        let mut down = Wire::frame(kind::SETTINGS, 0, 0, &settings);
        down.extend(server.headers(1, &[(":status", "200")], false));
        self.send(Peer::Server, &down, 1 << 20);
        self.received(Peer::Client);
        self.received(Peer::Server);
        let id = self.records.iter().find_map(|r| match r {
            Record::WsOpen(open) => Some(open.traffic),
            _ => None,
        });
        self.records.clear();
        assert!(!self.rewritten, "opening changes nothing");
        id.expect("the WebSocket opened")
    }

    fn frames(&self) -> Vec<&frametap_model::FrameRecord> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Frame(f) => Some(f),
                _ => None,
            })
            .collect()
    }
}

fn update(stream: u32, increment: u32) -> Vec<u8> {
    Wire::frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

fn ws_payloads(frames: &[(FrameHeader, Vec<u8>)], stream: u32) -> Vec<u8> {
    frames
        .iter()
        .filter(|(h, _)| h.kind == kind::DATA && h.stream == stream)
        .flat_map(|(_, p)| p.clone())
        .collect()
}

fn increments(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter(|(h, _)| h.kind == kind::WINDOW_UPDATE)
        .map(|(h, p)| (h.stream, u32::from_be_bytes(p[..4].try_into().unwrap())))
        .collect()
}

const MASK: Option<[u8; 4]> = Some([9, 8, 7, 6]);

/// Without rules or injections frametap's whole-frame mode changes no byte, read
/// in any size: the peers' window updates come out as they went in.
#[test]
fn without_rules_every_byte_goes_as_it_came_whatever_the_read_size() {
    for chunk in [1, 7, 100, 1 << 20] {
        let mut p = Pipe::new("[]");
        p.open(Some(1 << 20));
        let mut up = Vec::new();
        for i in 0..20u8 {
            let message = encode_frame(true, false, 1, MASK, &vec![b'a' + i; 3000]);
            up.extend(Wire::data(1, &message, false));
        }
        p.send(Peer::Client, &up, chunk);
        if chunk == 1 << 20 {
            // Frames split over reads go on whole, from the read that completes them;
            // whole ones go as they came, without a copy.
            assert!(!p.rewritten);
        }
        // Window updates stop at frametap, which writes the same ones.
        let mut more = update(0, 4000);
        more.extend(Wire::frame(0x6, 0, 0, &[1; 8])); // PING
        p.send(Peer::Client, &more, chunk);
        up.extend(more);
        let mut down = update(0, 60_000);
        down.extend(update(1, 60_000));
        down.extend(Wire::data(
            1,
            &encode_frame(true, false, 1, None, b"ok"),
            false,
        ));
        p.send(Peer::Server, &down, chunk);
        assert_eq!(p.to[Peer::Server.index()], up, "read {chunk} at a time");
        assert_eq!(p.to[Peer::Client.index()], down);
        assert_eq!(p.frames().len(), 21);
    }
}

/// A dropped message never reaches the server, and the client gets its window back
/// at once, for the connection and for the stream; the next message passes.
#[test]
fn a_dropped_message_is_given_back_to_the_senders_windows() {
    let mut p =
        Pipe::new(r#"[{"direction":"to-server","contains":"secret","action":{"kind":"drop"}}]"#);
    p.open(None);
    let secret = encode_frame(true, false, 1, MASK, b"my secret");
    p.send(Peer::Client, &Wire::data(1, &secret, false), 5);
    assert!(p.received(Peer::Server).is_empty());
    let len = secret.len() as u32;
    assert_eq!(increments(&p.received(Peer::Client)), [(0, len), (1, len)]);
    let fine = encode_frame(true, false, 1, MASK, b"fine");
    p.send(Peer::Client, &Wire::data(1, &fine, false), 1 << 20);
    assert_eq!(ws_payloads(&p.received(Peer::Server), 1), fine);
    let f = p.frames();
    assert_eq!(f.len(), 2);
    assert!(f[0].dropped && f[0].payload == b"my secret");
    assert!(!f[1].dropped);
}

/// A replacement goes out as frametap's DATA; an injected message is written
/// between the peers' frames and the receiver's window updates pay for it before
/// the sender gets any of them.
#[test]
fn replaced_and_injected_messages_are_paid_for_out_of_the_receivers_updates() {
    let mut p = Pipe::new(
        r#"[{"direction":"to-client","action":{"kind":"replace","pattern":"short","replacement":"a much longer text"}}]"#,
    );
    let traffic = p.open(None);
    let message = encode_frame(true, false, 1, None, b"short");
    p.send(Peer::Server, &Wire::data(1, &message, false), 1 << 20);
    let got = p.received(Peer::Client);
    let replaced = encode_frame(true, false, 1, None, b"a much longer text");
    assert_eq!(ws_payloads(&got, 1), replaced);
    // 1: the server's message (dropped), 2: its replacement, 3: the injection.
    assert_eq!(
        p.s.inject(traffic, Peer::Client, b"hi", false, 2_000),
        Ok(3)
    );
    p.outboxes();
    let injected = encode_frame(true, false, 1, None, b"hi");
    assert_eq!(ws_payloads(&p.received(Peer::Client), 1), injected);
    // The client took 13 + 4 bytes more than the server sent: its updates for them
    // stop at frametap, and only what is left goes on.
    let extra = (replaced.len() - message.len() + injected.len()) as u32;
    let mut down = update(0, extra);
    down.extend(update(1, extra));
    p.send(Peer::Client, &down, 1 << 20);
    assert!(increments(&p.received(Peer::Server)).is_empty());
    let mut down = update(0, 1000);
    down.extend(update(1, 1000));
    p.send(Peer::Client, &down, 1 << 20);
    assert_eq!(
        increments(&p.received(Peer::Server)),
        [(0, 1000), (1, 1000)]
    );
}

/// frametap never sends a receiver more than its window: an injection larger than
/// what the client allows waits for the client's updates.
#[test]
fn frametaps_data_waits_for_the_receivers_window() {
    let mut p = Pipe::new("[]");
    let traffic = p.open(None);
    let big = vec![b'x'; 100_000];
    p.s.inject(traffic, Peer::Client, &big, true, 2_000)
        .unwrap();
    p.outboxes();
    let first = ws_payloads(&p.received(Peer::Client), 1).len();
    assert_eq!(first, 65_535, "the client's initial windows");
    let mut credit = update(0, 50_000);
    credit.extend(update(1, 50_000));
    p.send(Peer::Client, &credit, 1 << 20);
    p.outboxes();
    let rest = ws_payloads(&p.received(Peer::Client), 1).len();
    assert_eq!(first + rest, encode_frame(true, false, 2, None, &big).len());
}

/// A held message whose sender has spent its window would never complete: frametap
/// lets it go unexamined (as above the hold limit), so the server can take it and
/// give the window back.
#[test]
fn a_message_held_across_the_whole_window_goes_on_unexamined() {
    let mut p =
        Pipe::new(r#"[{"direction":"to-server","contains":"zzz","action":{"kind":"drop"}}]"#);
    p.open(None);
    // 100,000 bytes in one message: the client may send 65,535 of them.
    let message = encode_frame(true, false, 2, MASK, &vec![b'a'; 100_000]);
    let mut up = Vec::new();
    for piece in message[..65_535].chunks(16_384) {
        up.extend(Wire::data(1, piece, false));
    }
    p.send(Peer::Client, &up, 1 << 20);
    let first = ws_payloads(&p.received(Peer::Server), 1);
    assert_eq!(first, message[..65_535]);
    // The server reads it and updates: the client gets that window.
    let mut credit = update(0, 65_535);
    credit.extend(update(1, 65_535));
    p.send(Peer::Server, &credit, 1 << 20);
    assert_eq!(
        increments(&p.received(Peer::Client)),
        [(0, 65_535), (1, 65_535)]
    );
    p.send(
        Peer::Client,
        &Wire::data(1, &message[65_535..], false),
        1 << 20,
    );
    assert_eq!(ws_payloads(&p.received(Peer::Server), 1), message[65_535..]);
    assert!(!p.frames()[0].dropped);
}
