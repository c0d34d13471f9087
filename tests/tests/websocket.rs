//! End to end, as root: TLS interception and WebSocket recording, with Python
//! `websockets` peers (an implementation we did not write) on both sides. What the
//! peers saw is compared with what they sent, and every frame in RocksDB is checked
//! through the store crate.
use std::time::Duration;

use frametap_e2e::{
    Agent, Case,
    case::CaseBuilder,
    netns::UPSTREAM_V4,
    peers::{Server, probe},
    pki::TestPki,
    ws::{ClientOptions, WsServer, b64, read_echoes, run_client, spawn_client},
};
use frametap_store::{FrameFilter, FrameRecord, Store, StoreOptions, TrafficEntry};
use serde_json::json;

const HOST: &str = "upstream.frametap.test";

/// Everything the agent recorded, read after it stopped (or died).
struct Recorded {
    traffic: Vec<TrafficEntry>,
    store: Store,
}

impl Recorded {
    fn open(agent: &Agent) -> Self {
        let store = Store::open_primary(
            &agent.data_dir.path().join("store"),
            StoreOptions::default(),
        )
        .expect("open the agent's store");
        let (mut traffic, _) = store.traffic_page(0, 10_000, |_| true).expect("traffic");
        traffic.reverse(); // oldest first
        Self { traffic, store }
    }

    fn websocket(&self) -> &TrafficEntry {
        let ws: Vec<_> = self
            .traffic
            .iter()
            .filter(|t| t.protocol == "ws" || t.protocol == "wss")
            .collect();
        assert_eq!(ws.len(), 1, "one WebSocket connection: {:?}", self.traffic);
        ws[0]
    }

    fn frames(&self, entry: &TrafficEntry) -> Vec<FrameRecord> {
        self.store
            .frames(entry.id, None, 1_000_000, &FrameFilter::default())
            .expect("frames")
    }
}

/// A case whose agent captures 443, 8080 and 8443 and trusts the PKI's CA upstream.
fn setup(tag: &str) -> CaseBuilder {
    Case::new(tag)
        .ports("443,8080,8443")
        .upstream_ca()
        .pki(&[HOST])
}

/// (from_client, opcode, fin, payload) of one direction's frames.
fn shape(frames: &[FrameRecord], from_client: bool) -> Vec<(u8, bool, Vec<u8>)> {
    frames
        .iter()
        .filter(|f| f.from_client == from_client)
        .map(|f| (f.opcode, f.fin, f.payload.clone()))
        .collect()
}

fn text(s: &str) -> (u8, bool, Vec<u8>) {
    (1, true, s.as_bytes().to_vec())
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

#[test]
fn wss_conversation_is_recorded_frame_by_frame() {
    let Some(mut case) = setup("wss")
        .pki(&[HOST, UPSTREAM_V4])
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
        .start()
    else {
        return;
    };
    let ca = case.agent_ca();

    let binary = vec![0u8, 1, 2, 250, 255];
    let script = json!([
        {"op": "text", "data": "hello"},
        {"op": "binary", "data": b64(&binary)},
        {"op": "fragments", "parts": ["frag-a ", "frag-b ", "frag-c"]},
        {"op": "ping", "data": "p1"},
        {"op": "server_ping", "data": "sp"},
        {"op": "close", "code": 4000, "reason": "bye now"},
    ]);
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let run = run_client(&case.lab, Some(&case.cg), &opts, &script);
    assert!(run.success, "client failed: {}", run.stderr);

    // The peers had the conversation they would have had without us.
    let sent = vec![
        (true, b"hello".to_vec()),
        (false, binary.clone()),
        (true, b"frag-a frag-b frag-c".to_vec()),
        (true, b"ping:sp".to_vec()),
    ];
    assert_eq!(run.echoes(), sent);
    assert_eq!(case.server.received(), sent);
    assert_eq!(
        run.closed(),
        Some(&json!({"code": 4000, "reason": "bye now"}))
    );

    assert!(case.agent.stop().success());
    let rec = Recorded::open(&case.agent);
    let entry = rec.websocket();
    assert_eq!(entry.protocol, "wss");
    assert_eq!(entry.status, Some(101));
    assert_eq!(entry.method, "GET");
    assert_eq!(entry.host, format!("{HOST}:8443"));
    assert_eq!(entry.path, "/chat");
    assert_eq!(entry.url, format!("wss://{HOST}:8443/chat"));
    assert_eq!(entry.tls_version.as_deref(), Some("TLSv1.3"));
    assert_eq!(entry.remote_address, format!("{UPSTREAM_V4}:8443"));
    assert_eq!(entry.process.as_deref(), Some("python3"));
    assert!(
        entry
            .request_headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"))
    );

    let frames = rec.frames(entry);
    // Capture order: sequence numbers 1..=n, no gaps.
    assert_eq!(
        frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
        (1..=frames.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        shape(&frames, true),
        vec![
            text("hello"),
            (2, true, binary.clone()),
            (1, false, b"frag-a ".to_vec()),
            (0, false, b"frag-b ".to_vec()),
            (0, false, b"frag-c".to_vec()),
            // websockets ends a fragmented message with an empty final frame.
            (0, true, Vec::new()),
            (9, true, b"p1".to_vec()),
            text("ping:sp"),
            (10, true, b"sp".to_vec()),
            (8, true, close_payload(4000, "bye now")),
        ]
    );
    assert_eq!(
        shape(&frames, false),
        vec![
            text("hello"),
            (2, true, binary),
            text("frag-a frag-b frag-c"),
            (10, true, b"p1".to_vec()),
            (9, true, b"sp".to_vec()),
            text("ping:sp"),
            (8, true, close_payload(4000, "bye now")),
        ]
    );
    for f in &frames {
        assert_eq!(
            f.masked, f.from_client,
            "client frames masked, server frames not"
        );
        assert!(!f.compressed && !f.truncated);
        assert_eq!(f.payload_len, f.payload.len() as u64);
        assert_eq!(f.wire_len, f.payload_len);
    }
    let close = frames
        .iter()
        .find(|f| f.opcode == 8 && f.from_client)
        .unwrap();
    assert_eq!(
        (close.close_code, close.close_reason.as_deref()),
        (Some(4000), Some("bye now"))
    );

    let conn = rec
        .store
        .ws_connection(entry.id)
        .unwrap()
        .expect("connection record");
    assert!(!conn.open);
    assert_eq!(conn.closed_by.as_deref(), Some("client"));
    assert_eq!(conn.close_code, Some(4000));
    assert_eq!(conn.close_reason.as_deref(), Some("bye now"));
    assert_eq!((conn.frames_from_client, conn.frames_from_server), (10, 7));
    assert_eq!(conn.abnormal, None);
    assert_eq!(rec.store.frame_count(entry.id).unwrap(), 17);
}

#[test]
fn permessage_deflate_payloads_are_stored_inflated() {
    let Some(mut case) = setup("deflate")
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), true))
        .start()
    else {
        return;
    };
    let ca = case.agent_ca();
    let script = json!([
        {"op": "text", "data": "compress me, compress me, compress me"},
        {"op": "text", "data": "compress me, compress me, compress me"},
        {"op": "fragments", "parts": ["one one one ", "two two two ", "three three three"]},
        {"op": "big", "size": 200000, "varied": true},
        {"op": "server_close", "code": 4001, "reason": "server done"},
    ]);
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: true,
    };
    let run = run_client(&case.lab, Some(&case.cg), &opts, &script);
    assert!(run.success, "client failed: {}", run.stderr);
    assert_eq!(run.echoes().len(), 4);
    assert_eq!(case.server.received().len(), 5);
    assert_eq!(
        run.closed(),
        Some(&json!({"code": 4001, "reason": "server done"}))
    );

    assert!(case.agent.stop().success());
    let rec = Recorded::open(&case.agent);
    let entry = rec.websocket();
    let frames = rec.frames(entry);
    let data: Vec<_> = frames.iter().filter(|f| f.opcode < 8).collect();
    assert!(
        data.iter().all(|f| f.compressed),
        "every data frame is marked compressed"
    );
    // RSV1 on the first frame of each message only.
    for f in &data {
        assert_eq!(f.rsv & 4 != 0, f.opcode != 0, "seq {}", f.seq);
    }
    let c: Vec<_> = frames
        .iter()
        .filter(|f| f.from_client && f.opcode < 8)
        .map(|f| f.payload.clone())
        .collect();
    let big: Vec<u8> = (0..200_000u32)
        .map(|i| ((i * 31 + 7) % 251) as u8)
        .collect();
    assert_eq!(
        c,
        vec![
            b"compress me, compress me, compress me".to_vec(),
            b"compress me, compress me, compress me".to_vec(),
            b"one one one ".to_vec(),
            b"two two two ".to_vec(),
            b"three three three".to_vec(),
            // websockets ends a fragmented message with an empty final frame.
            Vec::new(),
            big.clone(),
            b"close:4001:server done".to_vec(),
        ]
    );
    let second = data.iter().filter(|f| f.from_client).nth(1).unwrap();
    assert!(
        second.wire_len < second.payload_len,
        "context takeover shrinks the repeat"
    );
    let s: Vec<_> = frames
        .iter()
        .filter(|f| !f.from_client && f.opcode < 8)
        .map(|f| f.payload.clone())
        .collect();
    assert_eq!(s[3], big);
    let conn = rec.store.ws_connection(entry.id).unwrap().unwrap();
    assert_eq!(conn.closed_by.as_deref(), Some("server"));
    assert_eq!(
        (conn.close_code, conn.close_reason.as_deref()),
        (Some(4001), Some("server done"))
    );
}

#[test]
fn plain_ws_thousand_messages_and_a_5_mib_one() {
    let Some(mut case) = setup("ws")
        .server(|lab, _| WsServer::start(lab, UPSTREAM_V4, 8080, None, false))
        .start()
    else {
        return;
    };
    let script = json!([
        {"op": "many", "count": 1000},
        {"op": "big", "size": 5 * 1024 * 1024, "varied": true},
        {"op": "close", "code": 1000, "reason": ""},
    ]);
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8080"),
        host: HOST,
        cafile: None,
        deflate: false,
    };
    let run = run_client(&case.lab, Some(&case.cg), &opts, &script);
    assert!(run.success, "client failed: {}", run.stderr);
    let big: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| ((i * 31 + 7) % 251) as u8)
        .collect();
    let echoes = run.echoes();
    assert_eq!(echoes.len(), 1001);
    assert!(echoes[1000].1 == big, "the 5 MiB message came back intact");
    assert_eq!(case.server.received().len(), 1001);

    assert!(case.agent.stop().success());
    let rec = Recorded::open(&case.agent);
    let entry = rec.websocket();
    assert_eq!(entry.protocol, "ws");
    let frames = rec.frames(entry);
    assert_eq!(frames.len(), 2 * 1001 + 2);
    for i in [0usize, 499, 999] {
        let c = frames.iter().filter(|f| f.from_client).nth(i).unwrap();
        let s = frames.iter().filter(|f| !f.from_client).nth(i).unwrap();
        assert_eq!(c.payload, format!("message {i}").into_bytes());
        assert_eq!(s.payload, c.payload);
    }
    let big_frames: Vec<_> = frames
        .iter()
        .filter(|f| f.payload_len == big.len() as u64)
        .collect();
    assert_eq!(big_frames.len(), 2);
    for f in big_frames {
        assert!(f.truncated);
        assert_eq!(
            f.payload.len(),
            1024 * 1024,
            "stored payload capped at the default 1 MiB"
        );
        assert_eq!(f.payload[..], big[..1024 * 1024]);
        assert_eq!(f.wire_len, big.len() as u64);
    }
    assert_eq!(
        rec.store.frame_count(entry.id).unwrap(),
        frames.len() as u64
    );
}

#[test]
fn untrusted_upstream_certificate_is_refused_and_recorded() {
    // The agent trusts the case's PKI; the server has a certificate of another.
    let Some(mut case) = setup("badcert")
        .server(|lab, _| {
            let rogue = TestPki::new(&[HOST]);
            let server = WsServer::start(lab, UPSTREAM_V4, 8443, Some(&rogue), false);
            (server, rogue)
        })
        .start()
    else {
        return;
    };
    let ca = case.agent_ca();
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let run = run_client(
        &case.lab,
        Some(&case.cg),
        &opts,
        &json!([{"op": "text", "data": "secret"}]),
    );
    assert!(!run.success, "the client must not get through");
    assert!(
        run.stderr.contains("502"),
        "the client is told: {}",
        run.stderr
    );
    assert!(
        case.server.0.received().is_empty(),
        "nothing reached the impostor"
    );
    assert!(case.agent.stop().success());
    let rec = Recorded::open(&case.agent);
    let failed: Vec<_> = rec.traffic.iter().filter(|t| t.error.is_some()).collect();
    assert_eq!(failed.len(), 1, "{:?}", rec.traffic);
    let error = failed[0].error.as_deref().unwrap();
    // Both test CAs share a name, so rustls may say BadSignature instead of UnknownIssuer.
    assert!(
        error.contains(&format!(
            "upstream TLS failed for {HOST} ({UPSTREAM_V4}:8443)"
        )) && (error.contains("UnknownIssuer") || error.contains("BadSignature")),
        "{error}"
    );
    assert_eq!(failed[0].sni.as_deref(), Some(HOST));
    // What the client asked for is recorded, with the answer it got.
    assert_eq!(failed[0].method, "GET");
    assert_eq!(failed[0].path, "/chat");
    assert_eq!(failed[0].protocol, "wss");
    assert_eq!(failed[0].url, format!("wss://{HOST}:8443/chat"));
    assert_eq!(failed[0].status, Some(502));
}

#[test]
fn non_http_bytes_on_443_are_relayed() {
    let Some(case) = setup("raw443")
        .server(|lab, _| Server::start(lab, &format!("{UPSTREAM_V4}:443"), "echo", &[]))
        .start()
    else {
        return;
    };
    let reply = probe(
        &case.lab,
        Some(&case.cg),
        &format!("{UPSTREAM_V4}:443"),
        "\u{1}\u{2}not tls, not http",
    );
    assert_eq!(
        reply["reply"], "echo \u{1}\u{2}not tls, not http",
        "{reply}"
    );
    let conns = case.agent.wait_connections(1);
    assert_eq!(conns[0]["kind"], "tcp");
}

#[test]
fn sigkill_during_a_stream_loses_no_echoed_frame() {
    let Some(mut case) = setup("kill9")
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), true))
        .start()
    else {
        return;
    };
    let ca = case.agent_ca();
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: true,
    };
    let mut client = spawn_client(
        &case.lab,
        Some(&case.cg),
        &opts,
        &json!([{"op": "many", "count": 1_000_000}]),
    );
    let mut seen = read_echoes(&mut client, 300);
    case.agent.process.signal(libc::SIGKILL);
    case.agent
        .process
        .wait_timeout(Duration::from_secs(5))
        .expect("agent died");
    // Whatever the client still read before the connection broke counts too.
    seen.extend(read_echoes(&mut client, usize::MAX));
    drop(client);
    let echoed: Vec<Vec<u8>> = seen
        .iter()
        .filter(|v| v.get("echo").is_some())
        .map(|v| frametap_e2e::ws::unb64(v["data"].as_str().unwrap()))
        .collect();
    assert!(echoed.len() >= 300);

    let rec = Recorded::open(&case.agent);
    let frames = rec.frames(rec.websocket());
    let from_server: Vec<_> = frames
        .iter()
        .filter(|f| !f.from_client && f.opcode == 1)
        .map(|f| f.payload.clone())
        .collect();
    let from_client: Vec<_> = frames
        .iter()
        .filter(|f| f.from_client && f.opcode == 1)
        .map(|f| f.payload.clone())
        .collect();
    assert!(
        from_server.len() >= echoed.len(),
        "{} recorded < {} echoed",
        from_server.len(),
        echoed.len()
    );
    assert_eq!(from_server[..echoed.len()], echoed[..]);
    let received: Vec<Vec<u8>> = case.server.received().into_iter().map(|(_, d)| d).collect();
    assert!(
        from_client.len() >= received.len(),
        "every message the server got is recorded"
    );
    assert_eq!(from_client[..received.len()], received[..]);
}

#[test]
fn bad_tls_clients_are_recorded_and_break_nothing() {
    let Some(mut case) = setup("abuse")
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
        .start()
    else {
        return;
    };
    let abuse = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/tls_abuse.py");
    for mode in ["half-hello", "garbage"] {
        let out = case
            .lab
            .client_command(Some(&case.cg), "python3")
            .arg(&abuse)
            .args([mode, UPSTREAM_V4, "8443", HOST])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The agent is still fine: a normal conversation right after.
    let ca = case.agent_ca();
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let run = run_client(
        &case.lab,
        Some(&case.cg),
        &opts,
        &json!([{"op": "text", "data": "still here"}, {"op": "close", "code": 1000, "reason": ""}]),
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(case.server.received(), vec![(true, b"still here".to_vec())]);
    let conns = case.agent.wait_connections(3);
    assert_eq!(conns.len(), 3, "{conns:?}");
    assert!(case.agent.stop().success());
    let rec = Recorded::open(&case.agent);
    let errors: Vec<_> = rec.traffic.iter().filter_map(|t| t.error.clone()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("client TLS handshake failed")),
        "{errors:?}"
    );
}

#[test]
fn a_client_that_stops_mid_handshake_is_closed_after_the_handshake_timeout() {
    let Some(mut case) = setup("silent-hello")
        .args(&["--handshake-timeout", "2"])
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
        .start()
    else {
        return;
    };
    let abuse = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/tls_abuse.py");
    let out = case
        .lab
        .client_command(Some(&case.cg), "python3")
        .arg(&abuse)
        .args(["silent", UPSTREAM_V4, "8443", HOST])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Held for the 2 s configured, not for as long as the client likes (60 s here).
    let secs: f64 = said
        .strip_prefix("closed after ")
        .unwrap_or_else(|| panic!("the agent held the connection: {said}"))
        .parse()
        .unwrap();
    assert!((1.5..30.0).contains(&secs), "{said}");
    case.agent.wait_connections(1);
    assert!(case.agent.stop().success());
    let rec = Recorded::open(&case.agent);
    let errors: Vec<_> = rec.traffic.iter().filter_map(|t| t.error.clone()).collect();
    assert!(
        errors.iter().any(|e| e.contains("--handshake-timeout")),
        "{errors:?}"
    );
}

#[test]
fn a_full_disk_never_stops_traffic() {
    // The data dir on a 3 MB tmpfs, unmounted right after the agent stopped.
    let Some(mut case) = setup("fulldisk")
        .args(&["--max-frame-payload", "64KiB"])
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
        .tmpfs("3m")
        .start()
    else {
        return;
    };
    let ca = case.agent_ca();
    // 400 × 60 KB each way: far more than 3 MB of WAL.
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let script = json!([{"op": "big", "size": 60000}, {"op": "big", "size": 60000}]);
    for _ in 0..200 {
        let run = run_client(&case.lab, Some(&case.cg), &opts, &script);
        assert!(
            run.success,
            "traffic must keep flowing on a full disk: {}",
            run.stderr
        );
        assert_eq!(run.echoes().len(), 2);
    }
    assert_eq!(case.server.received().len(), 400);
    assert!(case.agent.stop().success(), "{}", case.agent.log_text());
    let log = case.agent.log_text();
    assert!(
        log.contains("No space left on device") && log.contains("traffic keeps being relayed"),
        "the agent reports what it could not record"
    );
    let failed: u64 = case
        .agent
        .logs()
        .iter()
        .find(|l| l["message"] == "recorder")
        .and_then(|l| l["failed"].as_u64())
        .unwrap_or(0);
    assert!(
        failed > 0,
        "some records could not be written and were counted"
    );
}
