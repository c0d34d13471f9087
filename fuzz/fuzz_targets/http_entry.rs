//! HTTP/1.x bytes through frametap-session's connection into records: the path
//! from request and response heads (and bodies, and the upgrade) to traffic
//! entries. Half the input is the client's, half the server's, fed interleaved in
//! small pieces; the connection ends as the last byte says. Nothing panics; every
//! entry has its own id; bodies stay within the cap; a WebSocket's open and close
//! records follow its entry, once each; and, when the server sent nothing, every
//! request head the client sent gets exactly one entry.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use frametap_model::{Record, TrafficIds};
use frametap_proto::Peer;
use frametap_proto::http1::{Http1Conn, HttpEvent};
use frametap_session::rules::RuleBook;
use frametap_session::{Ending, SessionMeta, SessionState, Settings};

const BODY_CAP: u64 = 64;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&last, data)) = data.split_last() else {
        return;
    };
    let (client, server) = data.split_at(data.len() / 2);
    let client_piece = 1 + usize::from(last % 8) * 3;
    let server_piece = 1 + usize::from(last / 8 % 8) * 5;
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
        tls: last & 1 == 0,
        sni: Some("sni.test".into()),
        client_address: "127.0.0.1:40000".into(),
        server_address: "127.0.0.1:443".into(),
        ..SessionMeta::default()
    };
    let mut session = SessionState::new(meta, &settings);
    // A reference parser sees the client's bytes alone, to count request heads
    // sent before anything that ends HTTP on this connection.
    let mut reference = Http1Conn::new();
    let mut events = Vec::new();
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
        if let Some(bytes) = c {
            reference.push_client(bytes, &mut events);
            now += 7;
            records.extend(session.on_bytes(Peer::Client, bytes, now).0);
        }
        if let Some(bytes) = s {
            now += 11;
            records.extend(session.on_bytes(Peer::Server, bytes, now).0);
        }
    }
    records.extend(session.on_end(&ending, now + 1));

    let mut ids = HashSet::new();
    let mut websockets = HashSet::new();
    let mut opened = HashSet::new();
    let mut closed = HashSet::new();
    let mut body_bytes = std::collections::HashMap::new();
    for record in &records {
        match record {
            Record::Traffic(t) => {
                assert!(ids.insert(t.id), "two entries with id {}", t.id);
                assert!(t.duration_ms.is_none_or(|d| d >= 0.0));
                if !t.method.is_empty() {
                    assert!(!t.url.is_empty());
                    assert!(t.url.contains("://"), "url {:?}", t.url);
                }
                for info in [&t.request_body, &t.response_body].into_iter().flatten() {
                    assert!(
                        info.stored <= info.size,
                        "stored {} of {}",
                        info.stored,
                        info.size
                    );
                    assert!(
                        info.stored <= BODY_CAP,
                        "stored {} over the cap",
                        info.stored
                    );
                }
                if matches!(t.protocol.as_str(), "ws" | "wss") && t.status == Some(101) {
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
    assert_eq!(
        opened, closed,
        "every opened WebSocket is closed at the end"
    );

    // Request heads the client sent while the connection was still plain HTTP/1.
    let mut heads = 0;
    for event in &events {
        match event {
            HttpEvent::RequestHead(_) => heads += 1,
            HttpEvent::HeldForUpgrade { .. }
            | HttpEvent::NotHttp
            | HttpEvent::Error(_)
            | HttpEvent::Switched { .. }
            | HttpEvent::Tunnel { .. } => break,
            _ => {}
        }
    }
    let entries = records
        .iter()
        .filter(|r| matches!(r, Record::Traffic(t) if !t.method.is_empty()))
        .count();
    // With a server that said nothing, nothing else ended HTTP: one entry per head.
    if server.is_empty() {
        assert_eq!(entries, heads, "a request head without its entry");
    }
});
