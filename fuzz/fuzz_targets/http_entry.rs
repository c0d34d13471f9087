//! HTTP/1.x bytes through frametap-session's connection into records: the path
//! from request and response heads (and bodies, and the upgrade) to traffic
//! entries. Half the input is the client's, half the server's, fed interleaved in
//! small pieces; the connection ends as the last byte says. Nothing panics; every
//! entry has its own id; bodies stay within the cap; a WebSocket's open and close
//! records follow its entry, once each; and, when the server sent nothing, every
//! request head the client sent gets exactly one entry.
#![no_main]

use frametap_model::Record;
use frametap_proto::Peer;
use frametap_proto::http1::{Http1Conn, HttpEvent};
use frametap_session::{SessionMeta, SessionState};

const BODY_CAP: u64 = 64;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&last, data)) = data.split_last() else {
        return;
    };
    let (client, server) = data.split_at(data.len() / 2);
    let client_piece = 1 + usize::from(last % 8) * 3;
    let server_piece = 1 + usize::from(last / 8 % 8) * 5;
    let ending = frametap_fuzz::ending(last);
    let settings = frametap_fuzz::settings(BODY_CAP);
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

    frametap_fuzz::check_records(&records, BODY_CAP, |t| {
        matches!(t.protocol.as_str(), "ws" | "wss") && t.status == Some(101)
    });

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
