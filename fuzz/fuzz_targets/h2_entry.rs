//! HTTP/2 bytes through frametap-session's connection (both legs negotiated h2) into
//! records: streams to traffic entries, bodies, trailers, resets, RFC 8441
//! WebSockets. Input: the client's length (2 bytes, big-endian), the client's bytes,
//! the server's bytes, and one byte that picks read sizes and how the connection
//! ends. Nothing panics; HTTP/2 is always forwarded as it came; every entry has its
//! own id and says HTTP/2; bodies stay within the cap; a WebSocket's open and close
//! records follow its entry, once each, and every one opened is closed at the end.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use frametap_model::{Record, TrafficIds};
use frametap_proto::Peer;
use frametap_session::rules::RuleBook;
use frametap_session::{Ending, Forward, SessionMeta, SessionState, Settings};

const BODY_CAP: u64 = 64;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&last, data)) = data.split_last() else {
        return;
    };
    let Some((len, data)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (client, server) = data.split_at(usize::from(u16::from_be_bytes(*len)).min(data.len()));
    let client_piece = 1 + usize::from(last % 8) * 7;
    let server_piece = 1 + usize::from(last / 8 % 8) * 11;
    let ending = match last / 64 {
        0 => Ending::Closed,
        1 => Ending::Reset(Peer::Client),
        2 => Ending::Reset(Peer::Server),
        _ => Ending::HalfOpen(Peer::Client),
    };
    let settings = Settings {
        ids: Arc::new(TrafficIds::default()),
        payload_cap: 256,
        body_cap: BODY_CAP,
        rules: Arc::new(RuleBook::default()),
        mask_keys: || [1, 2, 3, 4],
    };
    let meta = SessionMeta {
        conn_id: 1,
        tls: true,
        sni: Some("sni.test".into()),
        client_address: "127.0.0.1:40000".into(),
        server_address: "127.0.0.1:443".into(),
        alpn_selected: Some("h2".into()),
        ..SessionMeta::default()
    };
    let mut session = SessionState::new(meta, &settings);
    let mut records = Vec::new();
    let mut now = 1_700_000_000_000_000u64;
    let mut client_pieces = client.chunks(client_piece);
    let mut server_pieces = server.chunks(server_piece);
    loop {
        let c = client_pieces.next();
        let s = server_pieces.next();
        if c.is_none() && s.is_none() {
            break;
        }
        for (side, bytes) in [(Peer::Client, c), (Peer::Server, s)] {
            let Some(bytes) = bytes else { continue };
            now += 7;
            let (new, forward) = session.on_bytes(side, bytes, now);
            assert!(matches!(forward, Forward::AsIs), "HTTP/2 is never rewritten");
            records.extend(new);
        }
    }
    records.extend(session.on_end(&ending, now + 1));

    let mut ids = HashSet::new();
    let mut websockets = HashSet::new();
    let mut opened = HashSet::new();
    let mut closed = HashSet::new();
    let mut body_bytes = HashMap::new();
    for record in &records {
        match record {
            Record::Traffic(t) => {
                assert!(ids.insert(t.id), "two entries with id {}", t.id);
                assert_eq!(t.http_version.as_deref(), Some("HTTP/2"));
                if !t.method.is_empty() && t.method != "CONNECT" {
                    assert!(t.url.contains("://"), "url {:?}", t.url);
                }
                for info in [&t.request_body, &t.response_body].into_iter().flatten() {
                    assert!(info.stored <= info.size && info.stored <= BODY_CAP);
                }
                if matches!(t.protocol.as_str(), "ws" | "wss") {
                    websockets.insert(t.id);
                }
            }
            Record::Body(chunk) => {
                let total = body_bytes.entry((chunk.traffic, chunk.of)).or_insert(0u64);
                *total += chunk.data.len() as u64;
                assert!(*total <= BODY_CAP, "body chunks over the cap");
            }
            Record::WsOpen(open) => {
                assert!(websockets.contains(&open.traffic), "open before its entry");
                assert!(opened.insert(open.traffic), "opened twice");
            }
            Record::WsClose(close) => {
                assert!(opened.contains(&close.traffic), "closed before it opened");
                assert!(closed.insert(close.traffic), "closed twice");
            }
            Record::Frame(f) => assert!(opened.contains(&f.traffic), "a frame before its open"),
            Record::TunnelEnd(_) => {}
        }
    }
    assert_eq!(opened, closed, "every opened WebSocket is closed at the end");
});
