//! A WebSocket client that plays a recorded conversation again, sans-IO: the
//! opening handshake built from the original request's headers (with a new key),
//! then the client's messages encoded as a client sends them (masked, and
//! compressed when the server agrees to permessage-deflate). What the server sends
//! is parsed only as far as the client needs: the handshake's answer, the server's
//! messages (progress, and pacing "as the server answers"), its pings and its close.
//! Masks and the key come from the caller; no sockets, clocks or random source here.
//!
//! The replay's bytes pass through a normal [`crate::SessionState`] on their way to
//! the server, which records them like any captured connection.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use frametap_model::{is_field_value, is_token};
use frametap_proto::Peer;
use frametap_proto::ws::{
    DEFAULT_PAYLOAD_CAP, Deflater, WsDirection, WsEvent, close_payload, encode_frame,
    encode_message, negotiate_extensions,
};
use sha1::{Digest, Sha1};

/// Request headers the replay writes itself and never copies: the handshake's own,
/// hop-by-hop ones, and a body's framing (a handshake has no body).
const OWN_HEADERS: [&str; 14] = [
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-accept",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "te",
    "trailer",
    "proxy-connection",
    "http2-settings",
];

/// The longest response head the client reads before giving up on the server.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The handshake request: `GET path` to `host` with the original's `headers` (in
/// their order, less [`OWN_HEADERS`]), a permessage-deflate offer when `deflate`,
/// and `key`. Names and values are written as given; a header whose name is not a
/// token or whose value holds a control character is left out.
pub fn handshake_request(
    path: &str,
    host: &str,
    headers: &[(String, String)],
    deflate: bool,
    key: &[u8; 16],
) -> Vec<u8> {
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
        STANDARD.encode(key)
    );
    if deflate {
        // Whatever window the server picks, a client that compresses each message
        // on its own (as ours does) is fine; it must accept any server window.
        out.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if OWN_HEADERS.contains(&lower.as_str()) || !is_token(name) || !is_field_value(value) {
            continue;
        }
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub fn accept_for(key: &[u8; 16]) -> String {
    let mut sha = Sha1::new();
    sha.update(STANDARD.encode(key).as_bytes());
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// What the server's bytes meant to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The server switched protocols; `deflate`: it accepted permessage-deflate.
    Accepted {
        deflate: bool,
        subprotocol: Option<String>,
    },
    /// It answered the handshake otherwise, or wrongly: why.
    Refused(String),
    /// A whole data message from the server.
    Message,
    /// A ping, to answer with a pong of this payload.
    Ping(Vec<u8>),
    /// The server's close frame: code and reason, if it gave them.
    Close {
        code: Option<u16>,
        reason: Option<String>,
    },
    /// What the server sent breaks the protocol: the client stops.
    Error(String),
}

/// The client's side of the conversation: see the module docs.
pub struct ReplayClient {
    expected_accept: String,
    /// The response head so far, before the server switched protocols.
    head: Vec<u8>,
    open: Option<Open>,
    /// A Refused or Error was reported: nothing more is parsed.
    failed: bool,
}

struct Open {
    server: WsDirection,
    deflater: Option<Deflater>,
}

impl ReplayClient {
    /// A client whose handshake was sent with `key`.
    pub fn new(key: &[u8; 16]) -> ReplayClient {
        ReplayClient {
            expected_accept: accept_for(key),
            head: Vec::new(),
            open: None,
            failed: false,
        }
    }

    /// The server switched protocols and may be sent messages.
    pub fn is_open(&self) -> bool {
        self.open.is_some() && !self.failed
    }

    /// Takes bytes the server sent, in order.
    pub fn on_server_bytes(&mut self, bytes: &[u8], out: &mut Vec<ServerEvent>) {
        if self.failed {
            return;
        }
        if let Some(open) = &mut self.open {
            let mut events = Vec::new();
            open.server.push(bytes, &mut events);
            for event in events {
                match event {
                    WsEvent::Message(_) => out.push(ServerEvent::Message),
                    WsEvent::Frame(frame) if frame.opcode == 9 => {
                        out.push(ServerEvent::Ping(frame.payload));
                    }
                    WsEvent::Frame(frame) if frame.opcode == 8 => out.push(ServerEvent::Close {
                        code: frame.close_code,
                        reason: frame.close_reason,
                    }),
                    WsEvent::Frame(_) => {}
                    WsEvent::Error(error) => {
                        self.failed = true;
                        out.push(ServerEvent::Error(format!(
                            "the server broke the WebSocket protocol: {error}"
                        )));
                    }
                }
            }
            return;
        }
        self.head.extend_from_slice(bytes);
        let Some(end) = find_head_end(&self.head) else {
            if self.head.len() > MAX_RESPONSE_HEAD {
                self.fail(
                    out,
                    format!(
                        "the server's answer has no end of headers in {MAX_RESPONSE_HEAD} bytes"
                    ),
                );
            }
            return;
        };
        let rest = self.head.split_off(end);
        match self.accept() {
            Ok(event) => {
                out.push(event);
                if !rest.is_empty() {
                    self.on_server_bytes(&rest, out);
                }
            }
            Err(why) => self.fail(out, why),
        }
    }

    fn fail(&mut self, out: &mut Vec<ServerEvent>, why: String) {
        self.failed = true;
        out.push(ServerEvent::Refused(why));
    }

    /// Checks the response head and opens the connection.
    fn accept(&mut self) -> Result<ServerEvent, String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&self.head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err("the server's answer is cut short".into()),
            Err(e) => return Err(format!("the server's answer is not HTTP/1.1: {e}")),
        }
        let status = response.code.unwrap_or(0);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                .collect::<Vec<_>>()
        };
        if status != 101 {
            return Err(format!(
                "the server answered {status} {}, not 101 Switching Protocols",
                response.reason.unwrap_or("")
            ));
        }
        let has = |name: &str, word: &str| {
            header(name)
                .iter()
                .flat_map(|v| v.split(','))
                .any(|v| v.trim().eq_ignore_ascii_case(word))
        };
        if !has("upgrade", "websocket") || !has("connection", "upgrade") {
            return Err("the server's 101 lacks Upgrade: websocket or Connection: Upgrade".into());
        }
        if header("sec-websocket-accept") != [self.expected_accept.clone()] {
            return Err("the server's Sec-WebSocket-Accept does not match the key sent".into());
        }
        let extensions = header("sec-websocket-extensions").join(", ");
        let negotiated = negotiate_extensions(&extensions)
            .map_err(|e| format!("the server's Sec-WebSocket-Extensions is unusable: {e}"))?;
        if !negotiated.others.is_empty() {
            return Err(format!(
                "the server accepted extensions that were not offered: {}",
                negotiated.others.join(", ")
            ));
        }
        let deflate = negotiated.deflate;
        let deflater = deflate
            .as_ref()
            .map(|config| Deflater::new(config.client_max_window_bits));
        let accepted = ServerEvent::Accepted {
            deflate: deflate.is_some(),
            subprotocol: header("sec-websocket-protocol").into_iter().next(),
        };
        self.open = Some(Open {
            server: WsDirection::new(Peer::Server, deflate, DEFAULT_PAYLOAD_CAP),
            deflater,
        });
        Ok(accepted)
    }

    /// A whole message to the server, masked with `mask` (and compressed when
    /// permessage-deflate was agreed). Only once [`ReplayClient::is_open`].
    pub fn message(&mut self, is_text: bool, content: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let deflater = self.open.as_mut().and_then(|o| o.deflater.as_mut());
        encode_message(is_text, content, Some(mask), deflater)
    }

    /// The answer to a ping.
    pub fn pong(&self, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        encode_frame(true, false, 10, Some(mask), payload)
    }

    /// A close frame.
    pub fn close(&self, code: u16, reason: &str, mask: [u8; 4]) -> Vec<u8> {
        encode_frame(true, false, 8, Some(mask), &close_payload(code, reason))
    }
}

fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

#[cfg(test)]
mod tests {
    use frametap_proto::ws::apply_mask;

    use super::*;

    const KEY: [u8; 16] = *b"the sample nonce";

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_handshake_keeps_the_original_headers_but_its_own() {
        let original = headers(&[
            ("Host", "old.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "b2xkIGtleQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; x-webkit"),
            ("Cookie", "session=abc"),
            ("Sec-WebSocket-Protocol", "chat.v1"),
            ("Origin", "https://app.example.com"),
            ("X-Bad", "a\r\nInjected: yes"),
            ("X-Control", "a\u{1}b"),
            ("Bad Name", "x"),
        ]);
        let request = handshake_request("/feed?x=1", "new.example.com:8443", &original, true, &KEY);
        let text = String::from_utf8(request).unwrap();
        assert_eq!(
            text,
            "GET /feed?x=1 HTTP/1.1\r\nHost: new.example.com:8443\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Cookie: session=abc\r\nSec-WebSocket-Protocol: chat.v1\r\n\
             Origin: https://app.example.com\r\n\r\n"
        );
        // RFC 6455's example key and answer.
        assert_eq!(accept_for(&KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn accepted(extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn an_accepted_handshake_then_messages_pings_and_close_byte_by_byte() {
        let mut client = ReplayClient::new(&KEY);
        let mut wire = accepted("Sec-WebSocket-Protocol: chat.v1\r\n");
        wire.extend(encode_frame(true, false, 1, None, b"hello"));
        wire.extend(encode_frame(true, false, 9, None, b"p"));
        wire.extend(encode_frame(
            true,
            false,
            8,
            None,
            &close_payload(1000, "bye"),
        ));
        let mut events = Vec::new();
        for byte in &wire {
            client.on_server_bytes(std::slice::from_ref(byte), &mut events);
        }
        assert_eq!(
            events,
            [
                ServerEvent::Accepted {
                    deflate: false,
                    subprotocol: Some("chat.v1".into())
                },
                ServerEvent::Message,
                ServerEvent::Ping(b"p".to_vec()),
                ServerEvent::Close {
                    code: Some(1000),
                    reason: Some("bye".into())
                },
            ]
        );
        assert!(client.is_open());
        // What the client sends is masked, and unmasks to the content.
        let mask = [1, 2, 3, 4];
        let frame = client.message(true, b"again", mask);
        assert_eq!(frame[0], 0x81);
        assert_eq!(frame[1], 0x80 | 5);
        assert_eq!(&frame[2..6], &mask);
        let mut payload = frame[6..].to_vec();
        apply_mask(&mut payload, mask, 0);
        assert_eq!(payload, b"again");
    }

    #[test]
    fn deflate_agreed_compresses_what_the_client_sends() {
        let mut client = ReplayClient::new(&KEY);
        let mut events = Vec::new();
        client.on_server_bytes(
            &accepted(
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n",
            ),
            &mut events,
        );
        assert_eq!(
            events,
            [ServerEvent::Accepted {
                deflate: true,
                subprotocol: None
            }]
        );
        let content = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let frame = client.message(true, content, [9, 9, 9, 9]);
        assert_eq!(frame[0], 0xc1, "FIN, RSV1 (compressed), text");
        assert!(frame.len() < content.len());
        // The server's own side reads it back as the message.
        let mut server_view = WsDirection::new(
            Peer::Client,
            Some(frametap_proto::ws::DeflateConfig::default()),
            DEFAULT_PAYLOAD_CAP,
        );
        let mut seen = Vec::new();
        server_view.push(&frame, &mut seen);
        assert!(
            seen.iter()
                .any(|e| matches!(e, WsEvent::Message(m) if m.content == content)),
            "{seen:?}"
        );
    }

    #[test]
    fn refusals_say_why() {
        let cases: [(&[u8], &str); 4] = [
            (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "403 Forbidden"),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong=\r\n\r\n",
                "does not match",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Extensions: x-custom\r\n\r\n",
                "not offered",
            ),
        ];
        for (answer, why) in cases {
            let mut client = ReplayClient::new(&KEY);
            let mut events = Vec::new();
            client.on_server_bytes(answer, &mut events);
            match events.as_slice() {
                [ServerEvent::Refused(text)] => assert!(text.contains(why), "{text}"),
                other => panic!("{other:?}"),
            }
            assert!(!client.is_open());
            client.on_server_bytes(b"more", &mut events);
            assert_eq!(events.len(), 1, "nothing after a refusal");
        }
        let mut client = ReplayClient::new(&KEY);
        let mut events = Vec::new();
        client.on_server_bytes(&vec![b'x'; MAX_RESPONSE_HEAD + 1], &mut events);
        assert!(
            matches!(&events[..], [ServerEvent::Refused(t)] if t.contains("no end of headers"))
        );
    }
}
