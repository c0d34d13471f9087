//! HTTP/2 bytes through frametap-session's connection (both legs negotiated h2) into
//! records: streams to traffic entries, bodies, trailers, resets, RFC 8441
//! WebSockets. Input: the client's length (2 bytes, big-endian), the client's bytes,
//! the server's bytes, and one byte that picks read sizes and how the connection
//! ends (and whether frametap sends a message into the first WebSocket). Nothing
//! panics; until a WebSocket opens, HTTP/2 is forwarded as it came; every entry has
//! its own id and says HTTP/2; bodies stay within the cap; a WebSocket's open and
//! close records follow its entry, once each, and every one opened is closed at the
//! end. (That frametap's rewriting of WebSocket streams changes no byte without
//! rules, and keeps to the windows, is checked by the session's unit tests.)
#![no_main]

use frametap_model::Record;
use frametap_proto::Peer;
use frametap_session::{Forward, SessionMeta, SessionState};

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
    let ending = frametap_fuzz::ending(last);
    let settings = frametap_fuzz::settings(BODY_CAP);
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
    let inject_to = match last >> 6 {
        1 => Some(Peer::Client),
        2 => Some(Peer::Server),
        _ => None,
    };
    let mut injected = false;
    let mut websockets = Vec::new();
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
            let opened = records
                .iter()
                .chain(&new)
                .any(|r| matches!(r, Record::WsOpen(_)));
            assert!(
                opened || matches!(forward, Forward::AsIs),
                "HTTP/2 is not rewritten before a WebSocket opens"
            );
            records.extend(new);
            websockets.clear();
            session.websockets(&mut websockets);
            if let (Some(to), Some(&traffic), false) = (inject_to, websockets.first(), injected) {
                injected = session.inject(traffic, to, b"fuzz", false, now).is_ok();
            }
            for to in [Peer::Client, Peer::Server] {
                if let Some(outbox) = session.take_outbox(to) {
                    assert!(!outbox.bytes.is_empty());
                    records.extend(outbox.records);
                }
            }
        }
    }
    records.extend(session.on_end(&ending, now + 1));

    frametap_fuzz::check_records(&records, BODY_CAP, |t| {
        matches!(t.protocol.as_str(), "ws" | "wss")
    });
    for record in &records {
        if let Record::Traffic(t) = record {
            assert_eq!(t.http_version.as_deref(), Some("HTTP/2"));
        }
    }
});
