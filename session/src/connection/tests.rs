//! Unit tests of [`super`] (connection).
use std::sync::Arc;

use frametap_model::{FrameRecord, TrafficEntry, TrafficIds};
use frametap_proto::ws::encode_frame;

use super::*;
use crate::rules::RuleBook;

fn settings(payload_cap: usize, rules: RuleBook) -> Settings {
    Settings {
        ids: Arc::new(TrafficIds::default()),
        payload_cap,
        body_cap: 64 * 1024,
        rules: Arc::new(rules),
        mask_keys: || [1, 2, 3, 4],
    }
}

fn state() -> SessionState {
    SessionState::new(
        SessionMeta {
            conn_id: 7,
            tls: true,
            tls_version: Some("TLSv1.3".into()),
            sni: Some("chat.test".into()),
            client_address: "127.0.0.1:5000".into(),
            server_address: "10.0.0.2:443".into(),
            pid: Some(42),
            process: Some("app".into()),
            ..SessionMeta::default()
        },
        &settings(1 << 20, RuleBook::default()),
    )
}

const UPGRADE: &[u8] = b"GET /chat?room=1 HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCHED: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn frames(records: &[Record]) -> Vec<&FrameRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn upgrade_then_frames_of_both_directions() {
    let mut s = state();
    assert!(s.on_bytes(Peer::Client, UPGRADE, 1).0.is_empty());
    // The server's first frame arrives in the same read as the 101.
    let mut bytes = SWITCHED.to_vec();
    bytes.extend(encode_frame(true, false, 1, None, b"welcome"));
    let records = s.on_bytes(Peer::Server, &bytes, 2).0;
    // The entry before the open record: live subscribers see it first.
    let Record::Traffic(entry) = &records[0] else {
        panic!("{records:?}")
    };
    assert_eq!(entry.protocol, "wss");
    assert_eq!(entry.status, Some(101));
    assert_eq!(entry.url, "wss://chat.test/chat?room=1");
    assert_eq!(entry.path, "/chat?room=1");
    assert_eq!(entry.pid, Some(42));
    assert!(matches!(&records[1], Record::WsOpen(o) if o.traffic == entry.id && !o.deflate));
    let f = frames(&records);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].seq, f[0].from_client, &f[0].payload[..]),
        (1, false, &b"welcome"[..])
    );
    assert_eq!(s.websocket(), Some(entry.id));

    // A masked client frame split over two reads.
    let hello = encode_frame(true, false, 1, Some([1, 2, 3, 4]), b"hello there");
    assert!(frames(&s.on_bytes(Peer::Client, &hello[..5], 3).0).is_empty());
    let records = s.on_bytes(Peer::Client, &hello[5..], 4).0;
    let f = frames(&records);
    assert_eq!((f[0].seq, f[0].from_client, f[0].masked), (2, true, true));
    assert_eq!(f[0].payload, b"hello there");

    let mut close = 1001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"going away");
    s.on_bytes(
        Peer::Client,
        &encode_frame(true, false, 8, Some([9, 9, 9, 9]), &close),
        5,
    );
    s.on_bytes(Peer::Server, &encode_frame(true, false, 8, None, &close), 6);
    let end = s.on_end(&Ending::Closed, 7);
    let [Record::WsClose(c)] = &end[..] else {
        panic!("{end:?}")
    };
    assert_eq!(c.closed_by.as_deref(), Some("client"));
    assert_eq!(
        (c.close_code, c.close_reason.as_deref()),
        (Some(1001), Some("going away"))
    );
    assert_eq!((c.frames_from_client, c.frames_from_server), (2, 2));
    assert_eq!(c.frames_from_frametap, Some(0));
    assert_eq!(c.abnormal, None);
}

/// Every sequence number given out ends up in a record, exactly once, and the
/// close record's counts add up to them: frames of the client, of the server, and
/// frametap's own (a replacement, injections), including what never went out.
#[test]
fn every_numbered_frame_is_recorded_and_counted() {
    let rule: frametap_model::Rule = serde_json::from_str(
        r#"{"direction":"to-server","action":{"kind":"replace","pattern":"secret","replacement":"XXXX"}}"#,
    )
    .unwrap();
    let mut s = SessionState::new(
        state().meta,
        &settings(64, RuleBook::new(vec![rule]).unwrap()),
    );
    let mut all = Vec::new();
    s.on_bytes(Peer::Client, UPGRADE, 1);
    all.extend(s.on_bytes(Peer::Server, SWITCHED, 2).0);
    let ws_id = s.websocket().unwrap();
    let mask = Some([1, 2, 3, 4]);
    // 1 (dropped) and 2 (its replacement).
    let secret = encode_frame(true, false, 1, mask, b"my secret");
    all.extend(s.on_bytes(Peer::Client, &secret, 3).0);
    // 3.
    let hi = encode_frame(true, false, 1, None, b"hi");
    all.extend(s.on_bytes(Peer::Server, &hi, 4).0);
    // 4: between messages, written at once.
    assert_eq!(s.inject(ws_id, Peer::Client, b"inj1", false, 5), Ok(4));
    all.extend(s.take_outbox(Peer::Client).unwrap().records);
    // 5: a first fragment over the hold limit streams through unexamined...
    let long = encode_frame(false, false, 1, mask, &[b'x'; 100]);
    all.extend(s.on_bytes(Peer::Client, &long, 6).0);
    // ... so 6, for the server, waits for that message to end (it never does).
    assert_eq!(s.inject(ws_id, Peer::Server, b"inj2", false, 7), Ok(6));
    // 7: held until its message is complete (it never is).
    let start = encode_frame(false, false, 1, None, b"abc");
    all.extend(s.on_bytes(Peer::Server, &start, 8).0);
    // 8: for the client, never taken by a writer before the end.
    assert_eq!(s.inject(ws_id, Peer::Client, b"inj3", false, 9), Ok(8));
    let end = s.on_end(&Ending::Reset(Peer::Client), 10);
    all.extend(end.iter().cloned());

    let f = frames(&all);
    let seqs: Vec<u64> = f.iter().map(|f| f.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=8).collect::<Vec<_>>(), "{seqs:?}");
    let dropped: Vec<u64> = f.iter().filter(|f| f.dropped).map(|f| f.seq).collect();
    assert_eq!(dropped, [1, 6, 7, 8]);
    let Some(Record::WsClose(c)) = end.last() else {
        panic!("{end:?}")
    };
    assert_eq!((c.frames_from_client, c.frames_from_server), (2, 2));
    assert_eq!(c.frames_from_frametap, Some(4));
}

#[test]
fn keep_alive_exchanges_get_one_entry_each() {
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc", 1);
    let r1 = s
        .on_bytes(
            Peer::Server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            2,
        )
        .0;
    let r2 = s
        .on_bytes(
            Peer::Server,
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            3,
        )
        .0;
    let entry = |r: &[Record]| match r {
        [.., Record::Traffic(t)] => t.clone(),
        other => panic!("{other:?}"),
    };
    let (a, b) = (entry(&r1), entry(&r2));
    assert_eq!(
        (a.method.as_str(), a.path.as_str(), a.status),
        ("GET", "/a", Some(200))
    );
    assert_eq!(
        (b.method.as_str(), b.path.as_str(), b.status),
        ("POST", "/b", Some(201))
    );
    assert_eq!(a.protocol, "https");
    assert!(b.id.0 > a.id.0);
    assert!(s.on_end(&Ending::Closed, 4).is_empty());
}

/// The bodies recorded in `records`: (traffic, of, bytes), chunks joined.
fn bodies(records: &[Record]) -> Vec<(TrafficId, BodyOf, Vec<u8>)> {
    let mut out: Vec<(TrafficId, BodyOf, Vec<u8>)> = Vec::new();
    for r in records {
        if let Record::Body(b) = r {
            match out
                .iter_mut()
                .find(|(t, of, _)| *t == b.traffic && *of == b.of)
            {
                Some((_, _, data)) => data.extend_from_slice(&b.data),
                None => out.push((b.traffic, b.of, b.data.clone())),
            }
        }
    }
    out
}

fn entries(records: &[Record]) -> Vec<TrafficEntry> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Traffic(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn bodies_are_recorded_as_they_stream_and_before_their_entry() {
    let mut s = state();
    let mut records = Vec::new();
    // A chunked upload in small reads, then a pipelined GET.
    let upload = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n";
    for piece in upload.chunks(3) {
        records.extend(s.on_bytes(Peer::Client, piece, 1).0);
    }
    let answers = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndoneHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    records.extend(s.on_bytes(Peer::Server, answers, 2).0);
    let recorded = entries(&records);
    let [up, next] = &recorded[..] else {
        panic!("{records:?}")
    };
    assert_eq!(
        bodies(&records),
        [
            (up.id, BodyOf::Request, b"hello, world".to_vec()),
            (up.id, BodyOf::Response, b"done".to_vec()),
            (next.id, BodyOf::Response, b"abc".to_vec()),
        ]
    );
    let info = |size, stored| Some(frametap_model::BodyInfo { size, stored });
    assert_eq!(
        (up.request_body, up.response_body),
        (info(12, 12), info(4, 4))
    );
    assert_eq!(
        (next.request_body, next.response_body),
        (info(0, 0), info(3, 3))
    );
    // Each body's chunks come before the entry that describes it.
    let position = |wanted: &dyn Fn(&Record) -> bool| records.iter().position(wanted).unwrap();
    let last_chunk = records
        .iter()
        .rposition(|r| matches!(r, Record::Body(b) if b.traffic == up.id))
        .unwrap();
    assert!(last_chunk < position(&|r| matches!(r, Record::Traffic(t) if t.id == up.id)));
}

#[test]
fn bodies_over_the_cap_keep_their_true_size() {
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    let total = 200 * 1024;
    let mut records = s
        .on_bytes(
            Peer::Server,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
            2,
        )
        .0;
    let block = vec![b'z'; 10 * 1024];
    for _ in 0..total / block.len() {
        records.extend(s.on_bytes(Peer::Server, &block, 3).0);
    }
    let [entry] = &entries(&records)[..] else {
        panic!("one entry")
    };
    let body = entry.response_body.unwrap();
    assert_eq!((body.size, body.stored), (total as u64, 64 * 1024));
    assert!(body.truncated());
    assert_eq!(bodies(&records)[0].2.len(), 64 * 1024);
}

#[test]
fn a_connection_that_ends_mid_body_records_what_came() {
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    let mut records = s
        .on_bytes(
            Peer::Server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            2,
        )
        .0;
    records.extend(s.on_end(&Ending::Reset(Peer::Server), 3));
    let [entry] = &entries(&records)[..] else {
        panic!("{records:?}")
    };
    assert_eq!(entry.error.as_deref(), Some("server reset the connection"));
    assert_eq!(
        entry.response_body,
        Some(frametap_model::BodyInfo { size: 7, stored: 7 })
    );
    assert_eq!(bodies(&records)[0].2, b"partial");
}

#[test]
fn an_unanswered_request_is_recorded_with_the_reason() {
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    let end = s.on_end(&Ending::Reset(Peer::Server), 2);
    let [Record::Traffic(t)] = &end[..] else {
        panic!("{end:?}")
    };
    assert_eq!(t.error.as_deref(), Some("server reset the connection"));
    assert_eq!(t.status, None);
}

#[test]
fn a_half_open_timeout_is_recorded_as_the_reason() {
    // The client sent its request and closed its side; the server never answered.
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    let end = s.on_end(&Ending::HalfOpen(Peer::Server), 2);
    let [Record::Traffic(t)] = &end[..] else {
        panic!("{end:?}")
    };
    let why = t.error.as_deref().unwrap();
    assert!(
        why.starts_with("the client closed its side and the server"),
        "{why}"
    );
    // The server closed after a response without a length; the client stayed:
    // the response ended at the server's FIN and is complete.
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    s.on_bytes(Peer::Server, b"HTTP/1.1 200 OK\r\n\r\nuntil close", 2);
    let end = s.on_end(&Ending::HalfOpen(Peer::Client), 3);
    let entries = entries(&end);
    let [entry] = &entries[..] else {
        panic!("{end:?}")
    };
    assert_eq!((entry.status, entry.error.as_deref()), (Some(200), None));
}

#[test]
fn malformed_http_is_recorded_and_the_rest_is_opaque() {
    let mut s = state();
    s.on_bytes(Peer::Client, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1);
    let r = s
        .on_bytes(
            Peer::Server,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            2,
        )
        .0;
    let [Record::Traffic(t)] = &r[..] else {
        panic!("{r:?}")
    };
    assert!(
        t.error
            .as_deref()
            .unwrap()
            .starts_with("server sent malformed HTTP"),
        "{t:?}"
    );
    assert!(s.on_bytes(Peer::Client, b"anything at all", 3).0.is_empty());
}

#[test]
fn a_request_frametap_answered_is_recorded_with_what_was_asked() {
    let s = state();
    let mut http = frametap_proto::http1::Http1Conn::new();
    let mut events = Vec::new();
    http.push_client(UPGRADE, &mut events);
    let Some(HttpEvent::RequestHead(request)) = events.into_iter().next() else {
        panic!("no head")
    };
    let response = ResponseHead {
        status: 502,
        reason: "Bad Gateway".into(),
        version: 1,
        headers: vec![frametap_proto::http1::Header {
            name: "content-type".into(),
            value: "text/plain".into(),
        }],
        head_len: 0,
    };
    let Record::Traffic(t) = s.answered_entry(
        request,
        5_000,
        response,
        "upstream TLS failed".into(),
        7_000,
    ) else {
        panic!()
    };
    assert_eq!(
        (t.method.as_str(), t.url.as_str(), t.path.as_str()),
        ("GET", "wss://chat.test/chat?room=1", "/chat?room=1")
    );
    assert_eq!((t.protocol.as_str(), t.status), ("wss", Some(502)));
    assert_eq!(t.host, "chat.test");
    assert!(
        t.request_headers
            .iter()
            .any(|(k, _)| k == "Sec-WebSocket-Key")
    );
    assert_eq!(
        t.response_headers,
        [("content-type".into(), "text/plain".into())]
    );
    assert_eq!(t.error.as_deref(), Some("upstream TLS failed"));
    assert_eq!(t.timestamp_ms, 5);
    assert_eq!(t.duration_ms, Some(2.0));
}

#[test]
fn websocket_without_close_frames_is_abnormal() {
    let mut s = state();
    s.on_bytes(Peer::Client, UPGRADE, 1);
    s.on_bytes(Peer::Server, SWITCHED, 2);
    let end = s.on_end(&Ending::Reset(Peer::Client), 3);
    let [Record::WsClose(c)] = &end[..] else {
        panic!("{end:?}")
    };
    assert_eq!(c.abnormal.as_deref(), Some("client reset"));
    assert_eq!(c.closed_by, None);
}
