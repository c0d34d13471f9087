//! The replay client (`frametap_session::replay`) against hostile servers: no panic;
//! the handshake's answer comes first and once; nothing after a refusal or an
//! error; chunking never changes what the server's bytes mean; and what the client
//! sends reads back, on the server's side, as the message it was given. The
//! handshake built from hostile original headers is one well-formed request.
#![no_main]

use frametap_proto::Peer;
use frametap_proto::ws::{DEFAULT_PAYLOAD_CAP, DeflateConfig, WsDirection, WsEvent};
use frametap_session::replay::{ReplayClient, ServerEvent, accept_for, handshake_request};

const KEY: [u8; 16] = *b"fuzzing the key!";

fn events(input: &[u8], chunk: usize) -> (Vec<ServerEvent>, ReplayClient) {
    let mut client = ReplayClient::new(&KEY);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        client.on_server_bytes(piece, &mut out);
    }
    (out, client)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Bit 0: the bytes follow a valid 101 (else they are the answer themselves).
    // Bit 1: that 101 agrees to permessage-deflate. Bits 4-7: chunk size.
    let deflate = selector & 2 != 0;
    let mut input = Vec::new();
    if selector & 1 != 0 {
        input.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n{}\r\n",
                accept_for(&KEY),
                if deflate {
                    "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                } else {
                    ""
                }
            )
            .as_bytes(),
        );
    }
    input.extend_from_slice(rest);
    let chunk = usize::from(selector >> 4).pow(2);

    let (whole, mut client) = events(&input, input.len());
    let (chunked, _) = events(&input, chunk);
    assert_eq!(whole, chunked, "chunking changed what the bytes mean");

    let answers = whole
        .iter()
        .filter(|e| matches!(e, ServerEvent::Accepted { .. } | ServerEvent::Refused(_)))
        .count();
    assert!(answers <= 1);
    if answers == 1 {
        assert!(matches!(
            whole[0],
            ServerEvent::Accepted { .. } | ServerEvent::Refused(_)
        ));
    } else {
        assert!(whole.is_empty(), "events before the handshake's answer");
    }
    if let Some(end) = whole
        .iter()
        .position(|e| matches!(e, ServerEvent::Refused(_) | ServerEvent::Error(_)))
    {
        assert_eq!(end, whole.len() - 1, "events after a refusal or an error");
    }

    // What the client sends reads back as the message, with the agreed extension.
    if let Some(ServerEvent::Accepted {
        deflate: agreed, ..
    }) = whole.first()
    {
        let mut server = WsDirection::new(
            Peer::Client,
            agreed.then(DeflateConfig::default),
            DEFAULT_PAYLOAD_CAP,
        );
        let content = &rest[..rest.len().min(4096)];
        let frame = client.message(selector & 4 != 0, content, [selector, 1, 2, 3]);
        let mut seen = Vec::new();
        server.push(&frame, &mut seen);
        assert!(
            seen.iter()
                .any(|e| matches!(e, WsEvent::Message(m) if m.content == content)),
            "{seen:?}"
        );
    }

    // Original headers from the bytes (name, value pairs split on NUL): the
    // request is one complete HTTP/1.1 request with one Host, whatever they held.
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        headers.push((name.to_string(), value.to_string()));
    }
    let request = handshake_request("/x", "example.com", &headers, deflate, &KEY);
    // Room for every header the handshake may hold: its own six and the originals.
    let mut fields = vec![httparse::EMPTY_HEADER; headers.len() + 8];
    let mut parsed = httparse::Request::new(&mut fields);
    let status = parsed.parse(&request).expect("a well-formed request");
    assert_eq!(status, httparse::Status::Complete(request.len()));
    let hosts = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    assert_eq!(hosts, 1);
});
