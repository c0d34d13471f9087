//! One HTTP/1 connection from arbitrary bytes: the first half of the input is what
//! the client sends, the second half what the server sends, fed interleaved in
//! small pieces as the agent would. Nothing may panic, and counts and ranges in
//! events may only refer to bytes of the push that reported them.
#![no_main]

use frametap_proto::http1::{Http1Conn, HttpEvent};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (client, server) = data.split_at(data.len() / 2);
    // Piece sizes taken from the input, so the fuzzer explores splits too.
    let client_piece = 1 + usize::from(data.first().copied().unwrap_or(0) % 16);
    let server_piece = 1 + usize::from(data.last().copied().unwrap_or(0) % 16);
    let mut client_pieces = client.chunks(client_piece);
    let mut server_pieces = server.chunks(server_piece);

    let mut conn = Http1Conn::new().with_body_data();
    let mut events = Vec::new();
    // Client bytes the parser held back while an upgrade was pending, fed again
    // after a final response as the agent does on a refusal (approximately: that
    // response may have answered an earlier pipelined request instead).
    let mut held: Vec<u8> = Vec::new();
    loop {
        let client_bytes = client_pieces.next();
        let server_bytes = server_pieces.next();
        if client_bytes.is_none() && server_bytes.is_none() {
            break;
        }
        if let Some(bytes) = client_bytes {
            events.clear();
            conn.push_client(bytes, &mut events);
            for event in &events {
                match event {
                    HttpEvent::HeldForUpgrade { len } => {
                        assert!(*len <= bytes.len());
                        held.extend_from_slice(&bytes[bytes.len() - len..]);
                    }
                    HttpEvent::RequestBody(range) => {
                        assert!(range.start < range.end && range.end <= bytes.len());
                    }
                    _ => {}
                }
            }
        }
        if let Some(bytes) = server_bytes {
            events.clear();
            conn.push_server(bytes, &mut events);
            let mut refused = false;
            for event in &events {
                match event {
                    HttpEvent::Switched { rest, .. } | HttpEvent::Tunnel { rest } => {
                        assert!(*rest <= bytes.len());
                        held.clear();
                    }
                    HttpEvent::ResponseHead(head) if head.status >= 200 => refused = true,
                    HttpEvent::ResponseBody(range) => {
                        assert!(range.start < range.end && range.end <= bytes.len());
                    }
                    _ => {}
                }
            }
            if refused && !held.is_empty() {
                let again = std::mem::take(&mut held);
                events.clear();
                conn.push_client(&again, &mut events);
                for event in &events {
                    if let HttpEvent::HeldForUpgrade { len } = *event {
                        assert!(len <= again.len());
                        held.extend_from_slice(&again[again.len() - len..]);
                    }
                }
            }
        }
    }
    events.clear();
    conn.client_eof(&mut events);
    conn.server_eof(&mut events);
});
