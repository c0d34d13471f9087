//! Tests of [`Http1Conn`] as the agent uses it: both directions, whole streams.

use super::*;

fn client(conn: &mut Http1Conn, bytes: &[u8]) -> Vec<HttpEvent> {
    let mut out = Vec::new();
    conn.push_client(bytes, &mut out);
    out
}

fn server(conn: &mut Http1Conn, bytes: &[u8]) -> Vec<HttpEvent> {
    let mut out = Vec::new();
    conn.push_server(bytes, &mut out);
    out
}

fn server_eof(conn: &mut Http1Conn) -> Vec<HttpEvent> {
    let mut out = Vec::new();
    conn.server_eof(&mut out);
    out
}

fn client_eof(conn: &mut Http1Conn) -> Vec<HttpEvent> {
    let mut out = Vec::new();
    conn.client_eof(&mut out);
    out
}

/// One line per event, short enough to write expected sequences by hand.
fn describe(event: &HttpEvent) -> String {
    match event {
        HttpEvent::RequestHead(head) => format!("request {} {}", head.method, head.target),
        HttpEvent::RequestBody(range) => format!("request body {range:?}"),
        HttpEvent::RequestEnd { body_len } => format!("request end {body_len}"),
        HttpEvent::ResponseHead(head) => format!("response {}", head.status),
        HttpEvent::ResponseBody(range) => format!("response body {range:?}"),
        HttpEvent::ResponseEnd { body_len } => format!("response end {body_len}"),
        HttpEvent::Switched { websocket, rest } => format!("switched ws={websocket} rest={rest}"),
        HttpEvent::Tunnel { rest } => format!("tunnel rest={rest}"),
        HttpEvent::HeldForUpgrade { len } => format!("held {len}"),
        HttpEvent::NotHttp => "not http".to_owned(),
        HttpEvent::Error(error) => format!("error {error:?}"),
    }
}

fn describe_all(events: &[HttpEvent]) -> Vec<String> {
    events.iter().map(describe).collect()
}

fn request_head(event: &HttpEvent) -> &RequestHead {
    match event {
        HttpEvent::RequestHead(head) => head,
        other => panic!("expected a request head, got {other:?}"),
    }
}

fn response_head(event: &HttpEvent) -> &ResponseHead {
    match event {
        HttpEvent::ResponseHead(head) => head,
        other => panic!("expected a response head, got {other:?}"),
    }
}

const WS_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const WS_ACCEPT: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// A masked WebSocket text frame "Hello" from the client, and one from the server.
const WS_CLIENT_FRAME: &[u8] = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
const WS_SERVER_FRAME: &[u8] = b"\x81\x05Hello";

#[test]
fn simple_exchange() {
    let mut conn = Http1Conn::new();
    let request = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    let events = client(&mut conn, request);
    assert_eq!(
        events,
        vec![
            HttpEvent::RequestHead(RequestHead {
                method: "GET".to_owned(),
                target: "/index.html?q=1".to_owned(),
                version: 1,
                headers: vec![
                    Header {
                        name: "Host".to_owned(),
                        value: "example.com".to_owned()
                    },
                    Header {
                        name: "Accept".to_owned(),
                        value: "*/*".to_owned()
                    },
                ],
                head_len: request.len(),
            }),
            HttpEvent::RequestEnd { body_len: 0 },
        ]
    );
    let response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    let events = server(&mut conn, response);
    assert_eq!(describe_all(&events), ["response 200", "response end 5"]);
    let head = response_head(&events[0]);
    assert_eq!((head.reason.as_str(), head.version), ("OK", 1));
    assert_eq!(head.head_len, response.len() - 5);
    assert_eq!(head.header("content-type"), Some("text/plain"));
    assert!(server_eof(&mut conn).is_empty());
    assert!(client_eof(&mut conn).is_empty());
}

#[test]
fn header_lookup_ignores_case_and_takes_the_first() {
    let mut conn = Http1Conn::new();
    let events = client(&mut conn, b"GET / HTTP/1.0\r\nX-A: one\r\nx-a: two\r\n\r\n");
    let head = request_head(&events[0]);
    assert_eq!(head.version, 0);
    assert_eq!(head.header("X-A"), Some("one"));
    assert_eq!(head.header("x-A"), Some("one"));
    assert_eq!(head.header("missing"), None);
}

#[test]
fn empty_lines_before_a_request_are_part_of_its_head() {
    let mut conn = Http1Conn::new();
    let events = client(&mut conn, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    assert_eq!(request_head(&events[0]).head_len, 4 + 18);
    // CRLF sent after a body by old clients does not count as a message at close.
    assert!(client(&mut conn, b"\r\n").is_empty());
    assert!(client_eof(&mut conn).is_empty());
}

#[test]
fn request_bodies_by_length_and_chunked() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nChecksum: x\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        [
            "request POST /a",
            "request end 3",
            "request POST /b",
            // "3;ext=1\r\n" 9 + "abc\r\n" 5 + "0\r\n" 3 + "Checksum: x\r\n" 13 + "\r\n" 2
            "request end 32",
        ]
    );
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        [
            "request POST /",
            "request end 5",
            "request GET /next",
            "request end 0"
        ]
    );
    // Same for a response, even with a Content-Length that is not a number.
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    );
    assert_eq!(describe_all(&events), ["response 200", "response end 11"]);
}

#[test]
fn content_length_validation() {
    let outcome = |request: &[u8]| describe_all(&client(&mut Http1Conn::new(), request));
    assert_eq!(
        outcome(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok"),
        ["request POST /", "request end 2"]
    );
    assert_eq!(
        outcome(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"),
        ["request POST /", "error ConflictingContentLength"]
    );
    assert_eq!(
        outcome(b"POST / HTTP/1.1\r\nContent-Length: 2, 3\r\n\r\nok"),
        ["request POST /", "error ConflictingContentLength"]
    );
    for bad in ["+2", "-1", "2 2", "0x10", "", "99999999999999999999"] {
        let request = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            outcome(request.as_bytes()),
            ["request POST /", "error InvalidContentLength"],
            "Content-Length: {bad}"
        );
    }
}

#[test]
fn request_transfer_encoding_must_end_in_chunked() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        ["request POST /", "error UnsupportedTransferEncoding"]
    );
    // The client side has stopped; the server still answers the request.
    assert!(client(&mut conn, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    let events = server(
        &mut conn,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(describe_all(&events), ["response 400", "response end 0"]);
}

#[test]
fn response_without_length_ends_at_close() {
    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET / HTTP/1.0\r\n\r\n");
    let events = server(&mut conn, b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nsome");
    assert_eq!(describe_all(&events), ["response 200"]);
    assert!(server(&mut conn, b" more bytes").is_empty());
    assert_eq!(describe_all(&server_eof(&mut conn)), ["response end 15"]);
    // Transfer-Encoding without chunked last also runs until close.
    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET / HTTP/1.1\r\n\r\n");
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz",
    );
    assert_eq!(describe_all(&events), ["response 200"]);
    assert_eq!(describe_all(&server_eof(&mut conn)), ["response end 3"]);
}

#[test]
fn responses_without_bodies() {
    let mut conn = Http1Conn::new();
    client(
        &mut conn,
        b"HEAD / HTTP/1.1\r\n\r\nGET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
    );
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\
          HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n\
          HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        [
            "response 200",
            "response end 0",
            "response 204",
            "response end 0",
            "response 304",
            "response end 0",
            "response 200",
            "response end 0",
        ]
    );
}

#[test]
fn interim_responses_precede_the_final_one() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"PUT /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    assert_eq!(describe_all(&events), ["request PUT /upload"]);
    let events = server(&mut conn, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(describe_all(&events), ["response 100"]);
    assert_eq!(describe_all(&client(&mut conn, b"data")), ["request end 4"]);
    let events = server(
        &mut conn,
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    );
    assert_eq!(
        describe_all(&events),
        ["response 103", "response 201", "response end 2"]
    );
}

#[test]
fn pipelined_responses_pair_with_requests_in_order() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"GET /1 HTTP/1.1\r\n\r\nHEAD /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    assert_eq!(events.len(), 6);
    // The second response has a Content-Length but answers HEAD: no body, so the
    // third response starts right after its head.
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA\
          HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n\
          HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nC\r\n0\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        [
            "response 200",
            "response end 1",
            "response 200",
            "response end 0",
            "response 200",
            "response end 11",
        ]
    );
    let events = server(&mut conn, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(describe_all(&events), ["error ResponseWithoutRequest"]);
}

#[test]
fn websocket_upgrade_switches_both_directions() {
    let mut conn = Http1Conn::new();
    // The client sends its first frame before the server has answered.
    let input = [WS_REQUEST, WS_CLIENT_FRAME].concat();
    let events = client(&mut conn, &input);
    assert_eq!(
        describe_all(&events),
        [
            "request GET /chat",
            "request end 0",
            &format!("held {}", WS_CLIENT_FRAME.len())
        ]
    );
    assert_eq!(describe_all(&client(&mut conn, b"more")), ["held 4"]);
    assert!(client(&mut conn, b"").is_empty());

    let input = [WS_ACCEPT, WS_SERVER_FRAME].concat();
    let events = server(&mut conn, &input);
    assert_eq!(
        describe_all(&events),
        [
            "response 101",
            &format!("switched ws=true rest={}", WS_SERVER_FRAME.len())
        ]
    );
    let head = response_head(&events[0]);
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // No more HTTP in either direction.
    assert!(client(&mut conn, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    assert!(server(&mut conn, b"HTTP/1.1 200 OK\r\n\r\n").is_empty());
    assert!(client_eof(&mut conn).is_empty());
    assert!(server_eof(&mut conn).is_empty());
}

#[test]
fn switch_without_leftover_bytes_and_to_other_protocols() {
    let mut conn = Http1Conn::new();
    client(
        &mut conn,
        b"GET / HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    let events = server(
        &mut conn,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        ["response 101", "switched ws=false rest=0"]
    );

    // A websocket request answered with another protocol is not a websocket.
    let mut conn = Http1Conn::new();
    client(&mut conn, WS_REQUEST);
    let events = server(
        &mut conn,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        ["response 101", "switched ws=false rest=0"]
    );
}

#[test]
fn refused_upgrade_resumes_http_with_the_held_bytes() {
    let mut conn = Http1Conn::new();
    let next = b"GET /next HTTP/1.1\r\n\r\n";
    let events = client(&mut conn, &[WS_REQUEST, next].concat());
    assert_eq!(
        describe_all(&events),
        [
            "request GET /chat",
            "request end 0",
            &format!("held {}", next.len())
        ]
    );
    // An interim response does not end the wait.
    assert_eq!(
        describe_all(&server(&mut conn, b"HTTP/1.1 100 Continue\r\n\r\n")),
        ["response 100"]
    );
    assert_eq!(describe_all(&client(&mut conn, b"x")), ["held 1"]);

    let refusal = b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope";
    assert_eq!(
        describe_all(&server(&mut conn, refusal)),
        ["response 426", "response end 4"]
    );
    // The caller feeds the held bytes again (the "x" stays part of the next head).
    let events = client(&mut conn, &[next.as_slice(), b"x"].concat());
    assert_eq!(
        describe_all(&events),
        ["request GET /next", "request end 0"]
    );
    let events = server(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(describe_all(&events), ["response 200", "response end 0"]);
}

#[test]
fn upgrade_answered_while_its_body_is_still_arriving() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"POST /up HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 4\r\n\r\nab",
    );
    assert_eq!(describe_all(&events), ["request POST /up"]);
    let events = server(
        &mut conn,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(describe_all(&events), ["response 400", "response end 0"]);
    // The answer came already, so the client is not held after its body.
    let events = client(&mut conn, b"cdGET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        describe_all(&events),
        ["request end 4", "request GET /", "request end 0"]
    );
}

#[test]
fn pipelined_answers_after_a_refused_upgrade_in_the_same_read_cannot_be_paired() {
    let mut conn = Http1Conn::new();
    let next = b"GET /next HTTP/1.1\r\n\r\n";
    client(&mut conn, &[WS_REQUEST, next].concat());
    let events = server(
        &mut conn,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        [
            "response 404",
            "response end 0",
            "error ResponseWithoutRequest"
        ]
    );
    // The client side still parses what it is given.
    assert_eq!(
        describe_all(&client(&mut conn, next)),
        ["request GET /next", "request end 0"]
    );
}

#[test]
fn upgrade_needs_connection_upgrade_and_http11() {
    for request in [
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".as_slice(),
        b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let mut conn = Http1Conn::new();
        let events = client(&mut conn, &[request, b"GET /2 HTTP/1.1\r\n\r\n"].concat());
        assert_eq!(
            describe_all(&events),
            [
                "request GET /",
                "request end 0",
                "request GET /2",
                "request end 0"
            ],
            "{}",
            String::from_utf8_lossy(request)
        );
        let events = server(
            &mut conn,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        );
        assert_eq!(
            describe_all(&events),
            ["response 101", "error UnrequestedSwitch"]
        );
    }
}

#[test]
fn connect_opens_a_tunnel() {
    let mut conn = Http1Conn::new();
    let hello = [0x16, 0x03, 0x01, 0x00, 0x05];
    let request = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    let events = client(&mut conn, &[request.as_slice(), &hello].concat());
    assert_eq!(
        describe_all(&events),
        ["request CONNECT example.com:443", "request end 0", "held 5"]
    );
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x03",
    );
    assert_eq!(describe_all(&events), ["response 200", "tunnel rest=3"]);
    assert!(client(&mut conn, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    assert!(server(&mut conn, b"anything").is_empty());
}

#[test]
fn refused_connect_resumes_http() {
    let mut conn = Http1Conn::new();
    client(&mut conn, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    let events = server(
        &mut conn,
        b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(describe_all(&events), ["response 407", "response end 0"]);
    let events = client(
        &mut conn,
        b"CONNECT example.com:443 HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
    );
    assert_eq!(
        describe_all(&events),
        ["request CONNECT example.com:443", "request end 0"]
    );
    // Also a non-2xx answer to CONNECT has its body framed normally.
    let events = server(
        &mut conn,
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad",
    );
    assert_eq!(describe_all(&events), ["response 502", "response end 3"]);
}

#[test]
fn other_protocols_on_the_client_side_are_not_http() {
    let tls_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x01, 0x4a, 0x01, 0x00, 0x01, 0x46, 0x03, 0x03,
    ];
    for input in [
        tls_hello,
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\r\n\x00\x01",
        b"GET / HTTP/1.1\rX",
        b"get\x00",
    ] {
        let mut conn = Http1Conn::new();
        assert_eq!(
            client(&mut conn, input),
            vec![HttpEvent::NotHttp],
            "{input:?}"
        );
        assert!(client(&mut conn, b"GET / HTTP/1.1\r\n\r\n").is_empty());
        assert!(server(&mut conn, b"HTTP/1.1 400 Bad Request\r\n\r\n").is_empty());
        assert!(client_eof(&mut conn).is_empty());
        assert!(server_eof(&mut conn).is_empty());
    }
}

#[test]
fn not_http_is_recognised_byte_by_byte() {
    let mut conn = Http1Conn::new();
    let mut events = Vec::new();
    for &byte in b"SSH-2.0-OpenSSH_9.6\r\n" {
        conn.push_client(&[byte], &mut events);
    }
    assert_eq!(events, vec![HttpEvent::NotHttp]);
}

#[test]
fn malformed_heads_after_http_began_are_errors() {
    let mut conn = Http1Conn::new();
    let events = client(&mut conn, b"GET / HTTP/1.1\r\n\r\n\x16\x03\x01");
    assert_eq!(
        describe_all(&events),
        ["request GET /", "request end 0", "error BadStartLine"]
    );
    // A valid request line with a broken header field is HTTP, but malformed.
    let mut conn = Http1Conn::new();
    let events = client(&mut conn, b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n");
    assert_eq!(describe_all(&events), ["error BadHeader"]);
    // Garbage from the server is an error on the server side only.
    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        describe_all(&server(&mut conn, b"SSH-2.0-x\r\n")),
        ["error BadStartLine"]
    );
    assert_eq!(
        describe_all(&client(&mut conn, b"GET /2 HTTP/1.1\r\n\r\n")),
        ["request GET /2", "request end 0"]
    );
}

#[test]
fn heads_larger_than_the_limit_are_errors() {
    let mut conn = Http1Conn::new();
    let mut events = client(&mut conn, b"GET / HTTP/1.1\r\n");
    let line = [b"X-Filler: ".as_slice(), &[b'a'; 1000], b"\r\n"].concat();
    for _ in 0..70 {
        events.extend(client(&mut conn, &line));
    }
    assert_eq!(describe_all(&events), ["error HeadTooLarge"]);
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for index in 0..=MAX_HEADERS {
        head.extend_from_slice(format!("X-{index}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert_eq!(
        describe_all(&client(&mut Http1Conn::new(), &head)),
        ["error TooManyHeaders"]
    );
}

#[test]
fn broken_chunked_bodies_are_errors() {
    let mut conn = Http1Conn::new();
    let events = client(
        &mut conn,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    );
    assert_eq!(
        describe_all(&events),
        ["request POST /", "error BadChunk(\"chunk size missing\")"]
    );
    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET / HTTP/1.1\r\n\r\n");
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc",
    );
    assert_eq!(
        describe_all(&events),
        [
            "response 200",
            "error BadChunk(\"chunk data not followed by CRLF\")"
        ]
    );
}

#[test]
fn closing_in_the_middle_of_a_message_is_an_error() {
    let mut conn = Http1Conn::new();
    client(
        &mut conn,
        b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(describe_all(&client_eof(&mut conn)), ["error Truncated"]);
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(describe_all(&events), ["response 200"]);
    assert_eq!(describe_all(&server_eof(&mut conn)), ["error Truncated"]);
    assert!(server_eof(&mut conn).is_empty());

    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET /");
    assert_eq!(describe_all(&client_eof(&mut conn)), ["error Truncated"]);
    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET / HTTP/1.1\r\n\r\n");
    server(&mut conn, b"HTTP/1.1 200 OK\r\nConte");
    assert_eq!(describe_all(&server_eof(&mut conn)), ["error Truncated"]);
}

#[test]
fn half_closed_client_still_gets_its_responses_framed() {
    let mut conn = Http1Conn::new();
    client(&mut conn, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    assert!(client_eof(&mut conn).is_empty());
    let events = server(
        &mut conn,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
    );
    assert_eq!(events.len(), 4);
}

#[test]
fn server_failure_releases_a_held_client() {
    let mut conn = Http1Conn::new();
    client(&mut conn, WS_REQUEST);
    assert_eq!(
        describe_all(&server(&mut conn, b"\x00garbage")),
        ["error BadStartLine"]
    );
    // Nobody can say any more what the client's bytes are.
    assert!(client(&mut conn, WS_CLIENT_FRAME).is_empty());

    // An upgrade request after the server side stopped is not held either.
    let mut conn = Http1Conn::new();
    assert!(server_eof(&mut conn).is_empty());
    let events = client(&mut conn, &[WS_REQUEST, WS_CLIENT_FRAME].concat());
    assert_eq!(
        describe_all(&events),
        ["request GET /chat", "request end 0"]
    );
}

#[test]
fn too_many_pipelined_requests() {
    let mut conn = Http1Conn::new();
    let request = b"GET / HTTP/1.1\r\n\r\n".repeat(MAX_PIPELINED_REQUESTS + 1);
    let events = client(&mut conn, &request);
    assert_eq!(events.len(), 2 * MAX_PIPELINED_REQUESTS + 1);
    assert_eq!(
        events.last(),
        Some(&HttpEvent::Error(HttpError::TooManyPipelinedRequests))
    );
    // The queued ones are still answered.
    let events = server(&mut conn, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(describe_all(&events), ["response 200", "response end 0"]);
}

#[test]
fn large_bodies_are_counted_in_big_steps() {
    let mut conn = Http1Conn::new();
    let total: u64 = 3 << 20;
    client(&mut conn, b"GET /big HTTP/1.1\r\n\r\n");
    let mut events = server(
        &mut conn,
        format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
    );
    let block = vec![b'z'; 64 * 1024];
    for _ in 0..total / block.len() as u64 {
        events.extend(server(&mut conn, &block));
    }
    assert_eq!(
        describe_all(&events),
        ["response 200", &format!("response end {total}")]
    );
}

/// An event with its push-relative counts turned into stream offsets, so that runs
/// with different splits of the same bytes can be compared.
#[derive(Debug, PartialEq)]
enum Seen {
    Event(HttpEvent),
    /// Client bytes from this offset on were held (consecutive reports merged).
    HeldFrom(usize),
    SwitchedAt {
        websocket: bool,
        offset: usize,
    },
    TunnelAt(usize),
}

/// Feeds all client bytes, then all server bytes, in pieces whose sizes come from
/// `sizes`, then closes both sides. Returns what each direction reported.
fn run_split(
    client_bytes: &[u8],
    server_bytes: &[u8],
    sizes: &mut dyn FnMut() -> usize,
) -> (Vec<Seen>, Vec<Seen>) {
    let mut conn = Http1Conn::new();
    let mut client_seen = Vec::new();
    let mut fed = 0;
    while fed < client_bytes.len() {
        let piece = &client_bytes[fed..client_bytes.len().min(fed + sizes())];
        for event in client(&mut conn, piece) {
            match event {
                HttpEvent::HeldForUpgrade { len } => {
                    if !matches!(client_seen.last(), Some(Seen::HeldFrom(_))) {
                        client_seen.push(Seen::HeldFrom(fed + piece.len() - len));
                    }
                }
                event => client_seen.push(Seen::Event(event)),
            }
        }
        fed += piece.len();
    }
    client_seen.extend(client_eof(&mut conn).into_iter().map(Seen::Event));

    let mut server_seen = Vec::new();
    let mut fed = 0;
    while fed < server_bytes.len() {
        let piece = &server_bytes[fed..server_bytes.len().min(fed + sizes())];
        for event in server(&mut conn, piece) {
            server_seen.push(match event {
                HttpEvent::Switched { websocket, rest } => Seen::SwitchedAt {
                    websocket,
                    offset: fed + piece.len() - rest,
                },
                HttpEvent::Tunnel { rest } => Seen::TunnelAt(fed + piece.len() - rest),
                event => Seen::Event(event),
            });
        }
        fed += piece.len();
    }
    server_seen.extend(server_eof(&mut conn).into_iter().map(Seen::Event));
    (client_seen, server_seen)
}

fn describe_seen(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|seen| match seen {
            Seen::Event(event) => describe(event),
            Seen::HeldFrom(offset) => format!("held from {offset}"),
            Seen::SwitchedAt { websocket, offset } => {
                format!("switched ws={websocket} at {offset}")
            }
            Seen::TunnelAt(offset) => format!("tunnel at {offset}"),
        })
        .collect()
}

/// A pipelined conversation touching every framing rule, ending in a websocket
/// upgrade with frames right behind the heads.
fn conversation_with_upgrade() -> (Vec<u8>, Vec<u8>) {
    let client_bytes = [
        b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
        b"POST /b HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
        b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n0\r\nT: 1\r\n\r\n",
        b"HEAD /d HTTP/1.1\n\n",
        b"POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz",
        WS_REQUEST,
        WS_CLIENT_FRAME,
    ]
    .concat();
    let server_bytes = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".as_slice(),
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        WS_ACCEPT,
        WS_SERVER_FRAME,
    ]
    .concat();
    (client_bytes, server_bytes)
}

/// Pipelined requests answered by a CONNECT tunnel.
fn conversation_with_tunnel() -> (Vec<u8>, Vec<u8>) {
    let client_bytes = [
        b"GET / HTTP/1.1\r\n\r\n".as_slice(),
        b"CONNECT db:5432 HTTP/1.1\r\n\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
    ]
    .concat();
    let server_bytes = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".as_slice(),
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"N",
    ]
    .concat();
    (client_bytes, server_bytes)
}

/// HTTP/1.0 keep-alive followed by a response delimited by the server closing.
fn conversation_until_close() -> (Vec<u8>, Vec<u8>) {
    let client_bytes =
        b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n".to_vec();
    let server_bytes =
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nabcdHTTP/1.0 200 OK\r\n\r\nuntil the very end\r\n\r\n"
            .to_vec();
    (client_bytes, server_bytes)
}

#[test]
fn whole_conversations_give_the_expected_events() {
    let (client_bytes, server_bytes) = conversation_with_upgrade();
    let (client_seen, server_seen) = run_split(&client_bytes, &server_bytes, &mut || usize::MAX);
    assert_eq!(
        describe_seen(&client_seen),
        [
            "request GET /a",
            "request end 0",
            "request POST /b",
            "request end 11",
            "request PUT /c",
            "request end 24",
            "request HEAD /d",
            "request end 0",
            "request POST /e",
            "request end 3",
            "request GET /chat",
            "request end 0",
            &format!("held from {}", client_bytes.len() - WS_CLIENT_FRAME.len()),
        ]
    );
    assert_eq!(
        describe_seen(&server_seen),
        [
            "response 200",
            "response end 2",
            "response 201",
            "response end 12",
            "response 204",
            "response end 0",
            "response 200",
            "response end 0",
            "response 100",
            "response 200",
            "response end 0",
            "response 101",
            &format!(
                "switched ws=true at {}",
                server_bytes.len() - WS_SERVER_FRAME.len()
            ),
        ]
    );

    let (client_bytes, server_bytes) = conversation_with_tunnel();
    let (client_seen, server_seen) = run_split(&client_bytes, &server_bytes, &mut || usize::MAX);
    assert_eq!(
        describe_seen(&client_seen),
        [
            "request GET /",
            "request end 0",
            "request CONNECT db:5432",
            "request end 0",
            "held from 46"
        ]
    );
    assert_eq!(
        describe_seen(&server_seen),
        [
            "response 200",
            "response end 3",
            "response 200",
            &format!("tunnel at {}", server_bytes.len() - 1)
        ]
    );

    let (client_bytes, server_bytes) = conversation_until_close();
    let (_, server_seen) = run_split(&client_bytes, &server_bytes, &mut || usize::MAX);
    assert_eq!(
        describe_seen(&server_seen),
        [
            "response 200",
            "response end 4",
            "response 200",
            "response end 22"
        ]
    );
}

#[test]
fn events_do_not_depend_on_how_the_bytes_are_split() {
    for (client_bytes, server_bytes) in [
        conversation_with_upgrade(),
        conversation_with_tunnel(),
        conversation_until_close(),
    ] {
        let whole = run_split(&client_bytes, &server_bytes, &mut || usize::MAX);
        let longest = client_bytes.len().max(server_bytes.len());
        for chunk in 1..=longest {
            assert_eq!(
                run_split(&client_bytes, &server_bytes, &mut || chunk),
                whole,
                "chunk size {chunk}"
            );
        }
        // Uneven pieces, from a fixed pseudo-random sequence.
        for seed in 1..50u32 {
            let mut state = seed;
            let mut sizes = || {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as usize % 23 + 1
            };
            assert_eq!(
                run_split(&client_bytes, &server_bytes, &mut sizes),
                whole,
                "seed {seed}"
            );
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap stand-in for the fuzz target: mutations of a real conversation.
    let (client_bytes, server_bytes) = conversation_with_upgrade();
    for position in (0..client_bytes.len().max(server_bytes.len())).step_by(3) {
        for value in [0x00, b'\n', b'0', b' ', 0xff] {
            let mut client_mutated = client_bytes.clone();
            let mut server_mutated = server_bytes.clone();
            if let Some(byte) = client_mutated.get_mut(position) {
                *byte = value;
            }
            if let Some(byte) = server_mutated.get_mut(position) {
                *byte = value;
            }
            run_split(&client_mutated, &server_mutated, &mut || 7);
        }
    }
}

/// Every message's body data, as a connection asked for it reports it: the bytes of
/// each request's and each response's body (chunked framing left out), in order.
fn bodies_of(
    client_bytes: &[u8],
    server_bytes: &[u8],
    piece: usize,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut conn = Http1Conn::new().with_body_data();
    let mut requests: Vec<Vec<u8>> = Vec::new();
    for bytes in client_bytes.chunks(piece) {
        for event in client(&mut conn, bytes) {
            match event {
                HttpEvent::RequestHead(_) => requests.push(Vec::new()),
                HttpEvent::RequestBody(range) => {
                    assert!(!range.is_empty() && range.end <= bytes.len());
                    requests
                        .last_mut()
                        .unwrap()
                        .extend_from_slice(&bytes[range]);
                }
                _ => {}
            }
        }
    }
    let mut responses: Vec<Vec<u8>> = Vec::new();
    for bytes in server_bytes.chunks(piece) {
        for event in server(&mut conn, bytes) {
            match event {
                HttpEvent::ResponseHead(head) if head.status >= 200 => responses.push(Vec::new()),
                HttpEvent::ResponseBody(range) => {
                    assert!(!range.is_empty() && range.end <= bytes.len());
                    responses
                        .last_mut()
                        .unwrap()
                        .extend_from_slice(&bytes[range]);
                }
                _ => {}
            }
        }
    }
    for event in server_eof(&mut conn) {
        assert!(!matches!(event, HttpEvent::ResponseBody(_)));
    }
    (requests, responses)
}

#[test]
fn body_data_is_reported_only_when_asked_for_and_whatever_the_split() {
    let (client_bytes, server_bytes) = conversation_with_upgrade();
    let expected_requests: Vec<&[u8]> = vec![b"", b"hello world", b"abcd", b"", b"xyz", b""];
    let expected_responses: Vec<&[u8]> = vec![b"ok", b"hi", b"", b"", b""];
    for piece in 1..=client_bytes.len().max(server_bytes.len()) {
        let (requests, responses) = bodies_of(&client_bytes, &server_bytes, piece);
        assert_eq!(requests, expected_requests, "pieces of {piece}");
        assert_eq!(responses, expected_responses, "pieces of {piece}");
    }
    let (client_bytes, server_bytes) = conversation_until_close();
    for piece in [1, 5, usize::MAX] {
        let (_, responses) = bodies_of(&client_bytes, &server_bytes, piece);
        assert_eq!(
            responses,
            [b"abcd".as_slice(), b"until the very end\r\n\r\n"],
            "pieces of {piece}"
        );
    }
    // Without asking, the same bytes give no body events at all.
    let (client_bytes, server_bytes) = conversation_with_upgrade();
    let (client_seen, server_seen) = run_split(&client_bytes, &server_bytes, &mut || 3);
    assert!(client_seen.iter().chain(&server_seen).all(|seen| !matches!(
        seen,
        Seen::Event(HttpEvent::RequestBody(_) | HttpEvent::ResponseBody(_))
    )));
}

#[test]
fn body_data_comes_before_the_end_of_its_message() {
    let mut conn = Http1Conn::new().with_body_data();
    let events = client(
        &mut conn,
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    let head = 48;
    assert_eq!(
        describe_all(&events),
        [
            "request POST /u".to_owned(),
            format!("request body {:?}", head + 3..head + 6),
            format!("request body {:?}", head + 11..head + 13),
            "request end 20".to_owned(),
            "request GET /".to_owned(),
            "request end 0".to_owned(),
        ]
    );
}
