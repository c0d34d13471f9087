//! End to end, as root: TLS with peers we did not write. Node's `http2` module as an
//! h2-only server (with RFC 8441 WebSockets) and its `https` module as an HTTP/1.1
//! server, curl (which offers `h2, http/1.1`) and Node's `http2` client (`h2` only)
//! as the captured clients. Capturing must never make a working
//! application fail; what frametap did not intercept, and why a handshake failed,
//! must be visible in the traffic list.
use std::path::{Path, PathBuf};

use frametap_e2e::{
    Agent, Case,
    api::Api,
    netns::UPSTREAM_V4,
    peers::{
        Curl, CurlRun, GrpcServer, H2WebSocket, NodeTlsServer, chromium_title, grpc_calls,
        h2_websocket,
    },
    pki::TestPki,
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";
const PORT: u16 = 8443;

/// Node's TLS server in `mode` (see [`NodeTlsServer`]) on the upstream host, and the
/// agent capturing its port, told about the upstream's CA when `upstream_ca`.
fn start(tag: &str, mode: &'static str, upstream_ca: bool) -> Option<Case<NodeTlsServer>> {
    let case = Case::new(tag).ports(&PORT.to_string()).pki(&[HOST]);
    let case = if upstream_ca {
        case.upstream_ca()
    } else {
        case
    };
    case.server(move |lab, pki| NodeTlsServer::start(lab, mode, UPSTREAM_V4, PORT, pki))
        .start()
}

/// A CA bundle with the upstream's CA and the agent's, as on a host where the
/// frametap CA was installed next to the system's.
fn both_cas(dir: &Path, pki: &TestPki, agent: &Agent) -> PathBuf {
    let mut bundle = std::fs::read_to_string(&pki.ca).unwrap();
    bundle.push_str(&std::fs::read_to_string(agent.data_dir.path().join("ca.pem")).unwrap());
    let path = dir.join("bundle.pem");
    std::fs::write(&path, bundle).unwrap();
    path
}

fn curl<'a>(cafile: &'a Path, extra: &'a [&'a str]) -> Curl<'a> {
    Curl {
        host: HOST,
        addr: UPSTREAM_V4,
        port: PORT,
        cafile,
        extra,
    }
}

fn ok(run: &CurlRun) {
    assert!(run.success, "curl failed: {run:?}");
    assert_eq!(run.status, "200", "{run:?}");
}

/// Entries of `protocol` once `n` of them are listed and `done` holds for each.
fn listed(api: &Api, protocol: &str, n: usize, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let list = api.wait_get(&format!("/api/traffic?protocol={protocol}"), |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.len() == n && e.iter().all(&done))
    });
    list["entries"].as_array().unwrap().clone()
}

#[test]
fn an_h2_only_server_works_through_frametap_and_every_stream_is_recorded() {
    let Some(case) = start("h2only", "h2-only", true) else {
        return;
    };
    let api = case.api();
    let dir = tempfile::tempdir().unwrap();
    let bundle = both_cas(dir.path(), &case.pki, &case.agent);
    let client = curl(&bundle, &[]);

    let direct = client.get(&case.lab, None, "/hello");
    ok(&direct);
    assert_eq!(direct.http_version, "2");
    assert_eq!(direct.body, "h2-only saw GET /hello over HTTP/2.0\n");
    // Every connection asks the server first (the client leg can offer h2 only once
    // the server chose it).
    for _ in 0..2 {
        let captured = client.get(&case.lab, Some(&case.cg), "/hello");
        ok(&captured);
        assert_eq!(captured.http_version, "2");
        assert_eq!(captured.body, direct.body, "identical to direct");
    }
    // A request body, a response body and a trailer.
    let body = "a request body over h2 ".repeat(100);
    let post_args = ["--data-binary", body.as_str()];
    let post = curl(&bundle, &post_args);
    let echoed = post.get(&case.lab, Some(&case.cg), "/echo");
    ok(&echoed);
    assert_eq!(echoed.http_version, "2");
    assert_eq!(echoed.body, body);

    let entries = listed(&api, "https", 3, |_| true);
    for e in &entries {
        assert_eq!(e["httpVersion"], "HTTP/2", "{e}");
        assert_eq!(e["alpnOffered"], json!(["h2", "http/1.1"]));
        assert_eq!(e["alpnSelected"], "h2");
        assert_eq!(e["notIntercepted"], Value::Null, "{e}");
        assert_eq!(e["error"], Value::Null, "{e}");
        assert_eq!(e["status"], 200);
        assert_eq!(e["host"], format!("{HOST}:{PORT}"));
        assert_eq!(e["sni"], HOST);
        assert_eq!(e["process"], "curl");
        assert_eq!(e["remoteAddress"], format!("{UPSTREAM_V4}:{PORT}"));
    }
    let (posts, gets): (Vec<&Value>, Vec<&Value>) =
        entries.iter().partition(|e| e["method"] == "POST");
    assert_eq!((posts.len(), gets.len()), (1, 2));
    for e in gets {
        assert_eq!(e["url"], format!("https://{HOST}:{PORT}/hello"));
        assert_eq!(e["path"], "/hello");
        assert_eq!(e["requestHeaders"][":path"], "/hello", "{e}");
        assert_eq!(e["responseBodySize"], direct.body.len(), "{e}");
    }
    let e = posts[0];
    assert_eq!(e["url"], format!("https://{HOST}:{PORT}/echo"));
    assert_eq!(e["requestBodySize"], body.len(), "{e}");
    assert_eq!(e["responseBodySize"], body.len(), "{e}");
    // The trailer follows the response's header fields.
    assert_eq!(
        e["responseHeaders"]["x-body-length"],
        body.len().to_string(),
        "{e}"
    );
    let id = e["id"].as_str().unwrap();
    let stored = api.request("GET", &format!("/api/traffic/{id}/request/body"));
    assert_eq!((stored.status, stored.body.as_str()), (200, body.as_str()));
    let har = api.get(&format!("/api/har?trafficId={id}"));
    assert_eq!(
        har["log"]["entries"][0]["request"]["httpVersion"], "HTTP/2",
        "{har}"
    );

    assert_eq!(
        api.get("/api/traffic?protocol=tls")["count"],
        0,
        "nothing relayed untouched"
    );
    let logged = case.agent.wait_connections(3);
    for c in &logged {
        assert_eq!(c["kind"], "h2", "{c}");
    }
}

#[test]
fn a_server_speaking_both_gets_the_protocol_each_client_prefers() {
    let Some(case) = start("h2h1", "h2-h1", true) else {
        return;
    };
    let api = case.api();
    let dir = tempfile::tempdir().unwrap();
    let bundle = both_cas(dir.path(), &case.pki, &case.agent);
    for (extra, version, body) in [
        (&[][..], "2", "h2-h1 saw GET /both over HTTP/2.0\n"),
        (
            &["--http1.1"][..],
            "1.1",
            "h2-h1 saw GET /both over HTTP/1.1\n",
        ),
    ] {
        let client = curl(&bundle, extra);
        let direct = client.get(&case.lab, None, "/both");
        let captured = client.get(&case.lab, Some(&case.cg), "/both");
        for run in [&direct, &captured] {
            ok(run);
            assert_eq!(
                (run.http_version.as_str(), run.body.as_str()),
                (version, body)
            );
        }
    }
    let entries = listed(&api, "https", 2, |_| true);
    let mut versions: Vec<&str> = entries
        .iter()
        .map(|e| e["httpVersion"].as_str().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["HTTP/1.1", "HTTP/2"]);
    for e in &entries {
        assert_eq!(e["url"], format!("https://{HOST}:{PORT}/both"), "{e}");
        assert_eq!(e["status"], 200);
        assert_eq!(e["responseBodySize"], 34, "{e}");
    }
}

#[test]
fn a_websocket_over_h2_rfc8441_is_recorded_frame_by_frame() {
    let Some(case) = start("h2ws", "h2-only", true) else {
        return;
    };
    let api = case.api();
    let dir = tempfile::tempdir().unwrap();
    let bundle = both_cas(dir.path(), &case.pki, &case.agent);
    let target = (HOST, UPSTREAM_V4, PORT);
    const MESSAGES: usize = 5;

    let direct = h2_websocket(&case.lab, None, target, &bundle, "/chat", MESSAGES);
    assert_eq!(direct.error, None, "{direct:?}");
    assert_eq!(direct.status, Some(200));
    assert_eq!(direct.echoes.len(), MESSAGES, "{direct:?}");
    // Node's client offers h2 alone: the server is asked, then both legs speak h2.
    let captured = h2_websocket(
        &case.lab,
        Some(&case.cg),
        target,
        &bundle,
        "/chat",
        MESSAGES,
    );
    assert_eq!(captured.error, None, "{captured:?}");
    assert_eq!(captured.status, direct.status);
    assert_eq!(captured.echoes, direct.echoes, "identical to direct");
    assert_eq!(captured.close, direct.close);
    assert_eq!(
        captured.close,
        Some(json!({"code": 1000, "reason": "done"}))
    );

    let entries = listed(&api, "wss", 1, |_| true);
    let e = &entries[0];
    assert_eq!(e["httpVersion"], "HTTP/2", "{e}");
    assert_eq!(e["method"], "CONNECT");
    assert_eq!(e["url"], format!("wss://{HOST}:{PORT}/chat"));
    assert_eq!(e["status"], 200);
    assert_eq!(e["requestHeaders"][":protocol"], "websocket", "{e}");
    assert_eq!(e["alpnOffered"], json!(["h2"]));
    assert_eq!(e["process"], "node");
    let traffic = e["id"].as_str().unwrap();
    let n = 2 * MESSAGES + 2;
    api.wait_get(&format!("/api/websocket/{traffic}/count"), |c| {
        c == &json!({"count": n})
    });
    let frames = api.get(&format!("/api/websocket/{traffic}/frames?limit=100"));
    let frames = frames.as_array().unwrap();
    let text = |f: &Value| {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(f["data"].as_str().unwrap())
            .unwrap();
        String::from_utf8_lossy(&data).into_owned()
    };
    for (i, pair) in frames[..2 * MESSAGES].chunks(2).enumerate() {
        let sent = format!("message {} over h2", i + 1);
        assert_eq!(pair[0]["direction"], "client-to-server", "{pair:?}");
        assert_eq!(pair[1]["direction"], "server-to-client", "{pair:?}");
        assert_eq!(text(&pair[0]), sent);
        assert_eq!(text(&pair[1]), sent);
    }
    let closes = &frames[2 * MESSAGES..];
    assert!(closes.iter().all(|f| f["opcode"] == 8), "{closes:?}");
    let ws = api.wait_get(&format!("/api/websocket/{traffic}"), |w| {
        w["closeCode"].is_u64()
    });
    assert_eq!(ws["closeCode"], 1000, "{ws}");
    assert_eq!(ws["closedByClient"], true, "{ws}");
    assert_eq!(ws["open"], false, "{ws}");
}

/// Rules and injection on a WebSocket over HTTP/2, with Node's http2 (nghttp2) on
/// both ends, which end the connection with FLOW_CONTROL_ERROR if frametap ever
/// sends more than a window allows: a dropped message, a replaced one (longer),
/// messages sent into the stream both ways, and 200,000-byte messages both ways,
/// three times Node's 65,535-byte windows, which frametap cannot hold whole and
/// lets through unexamined.
#[test]
fn rules_and_injection_work_on_a_websocket_over_h2_within_both_peers_windows() {
    let Some(case) = start("h2rules", "h2-only", true) else {
        return;
    };
    let api = case.api();
    let dir = tempfile::tempdir().unwrap();
    let bundle = both_cas(dir.path(), &case.pki, &case.agent);
    for rule in [
        json!({"direction": "to-server", "contains": "drop me", "action": {"kind": "drop"}}),
        json!({"direction": "to-client", "action":
            {"kind": "replace", "pattern": "secret", "replacement": "[a much longer redaction]"}}),
    ] {
        let answer = api.send_json("POST", "/api/rules", &rule);
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    let big = "b".repeat(200_000);
    let messages = json!([
        "hello 1",
        "drop me please",
        "a secret word",
        {"fill": "b", "len": 200_000},
        "after the big one",
    ]);
    // Four echoes (the dropped message has none), the message sent to the client,
    // and the server's echo of the one sent to the server.
    let client = H2WebSocket::pipelined(
        &case.lab,
        Some(&case.cg),
        (HOST, UPSTREAM_V4, PORT),
        &bundle,
        "/chat",
        &messages,
        6,
    );
    let entries = listed(&api, "wss", 1, |_| true);
    let traffic = entries[0]["id"].as_str().unwrap().to_string();
    for (direction, text) in [
        ("to-client", "sent to the client"),
        ("to-server", "sent to the server"),
    ] {
        let answer = api.send_json(
            "POST",
            &format!("/api/websocket/{traffic}/send"),
            &json!({"direction": direction, "data": text}),
        );
        assert_eq!(answer.status, 201, "{direction}: {}", answer.body);
    }
    let run = client.finish();
    assert_eq!(run.error, None, "{run:?}");
    let mut echoes = run.echoes.clone();
    echoes.sort();
    let mut expected = vec![
        "hello 1".to_string(),
        "a [a much longer redaction] word".into(),
        big.clone(),
        "after the big one".into(),
        "sent to the client".into(),
        "sent to the server".into(),
    ];
    expected.sort();
    assert!(
        echoes == expected,
        "the client got {:?}",
        run.echoes
            .iter()
            .map(|e| &e[..e.len().min(40)])
            .collect::<Vec<_>>()
    );
    // The echoes keep their order; the injected message goes between them.
    let order: Vec<_> = run
        .echoes
        .iter()
        .filter(|e| !e.starts_with("sent to"))
        .collect();
    assert_eq!(
        order,
        [
            "hello 1",
            "a [a much longer redaction] word",
            &big,
            "after the big one"
        ]
    );
    assert_eq!(run.close, Some(json!({"code": 1000, "reason": "done"})));

    let ws = api.wait_get(&format!("/api/websocket/{traffic}"), |w| w["open"] == false);
    assert_eq!(ws["closeCode"], 1000, "{ws}");
    let frames = api.get(&format!("/api/websocket/{traffic}/frames?limit=100"));
    let frames = frames.as_array().unwrap();
    let text = |f: &Value| {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD
            .decode(f["data"].as_str().unwrap())
            .unwrap();
        String::from_utf8_lossy(&data).into_owned()
    };
    let find = |to_server: bool, t: &str| -> Vec<&Value> {
        let direction = if to_server {
            "client-to-server"
        } else {
            "server-to-client"
        };
        frames
            .iter()
            .filter(|f| f["direction"] == direction && text(f) == t)
            .collect()
    };
    let dropped = find(true, "drop me please");
    assert_eq!(dropped.len(), 1, "{frames:?}");
    assert_eq!(dropped[0]["dropped"], true);
    assert_eq!(
        find(false, "a [a much longer redaction] word")[0]["modified"],
        true
    );
    assert_eq!(find(false, "sent to the client")[0]["injected"], true);
    assert_eq!(find(true, "sent to the server")[0]["injected"], true);
    assert_eq!(find(false, "sent to the server")[0]["injected"], false);
    // The large messages were recorded whole (the payload cap is larger) and passed.
    let large: Vec<_> = frames.iter().filter(|f| f["length"] == 200_000).collect();
    assert_eq!(large.len(), 2, "one each way: {frames:?}");
    assert!(
        large
            .iter()
            .all(|f| f["dropped"] == false && f["modified"] == false)
    );
}

#[test]
fn chromium_opens_its_websocket_over_h2_through_frametap_and_every_frame_is_recorded() {
    let Some(case) = start("chromium", "h2-only", true) else {
        return;
    };
    let api = case.api();
    let page = format!("https://{HOST}:{PORT}/ws-page?messages=4");
    let target = (HOST, UPSTREAM_V4);
    case.lab.wait_addresses_settled();
    let direct = chromium_title(&case.lab, None, &page, target);
    let expected = json!({
        "echoes": (1..=4).map(|i| format!("hello from chromium {i}")).collect::<Vec<_>>(),
        "code": 1000,
    });
    assert_eq!(
        serde_json::from_str::<Value>(&direct).ok(),
        Some(expected.clone()),
        "{direct}"
    );
    // The server speaks h2 only: Chromium's WebSocket works only over RFC 8441.
    let captured = chromium_title(&case.lab, Some(&case.cg), &page, target);
    assert_eq!(
        serde_json::from_str::<Value>(&captured).ok(),
        Some(expected),
        "{captured}"
    );

    let entries = listed(&api, "wss", 1, |_| true);
    let e = &entries[0];
    assert_eq!(e["httpVersion"], "HTTP/2", "{e}");
    assert_eq!(e["url"], format!("wss://{HOST}:{PORT}/chat"));
    assert_eq!(e["requestHeaders"][":protocol"], "websocket", "{e}");
    // The process's name, not that of the thread that connected (`Chrome_ChildIOT`).
    assert_eq!(e["process"], "chromium", "{e}");
    assert!(e["pid"].is_u64(), "{e}");
    let traffic = e["id"].as_str().unwrap();
    api.wait_get(&format!("/api/websocket/{traffic}"), |w| {
        w["closeCode"].is_u64()
    });
    // Messages through the mitmproxy-style view: text as sent, both directions.
    let messages = api.get(&format!("/api/websocket/{traffic}/messages"));
    let texts: Vec<(bool, String)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["fromClient"].as_bool().unwrap(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let sent: Vec<(bool, String)> = (1..=4)
        .flat_map(|i| {
            let text = format!("hello from chromium {i}");
            [(true, text.clone()), (false, text)]
        })
        .collect();
    assert_eq!(texts, sent, "{messages}");
    // The page itself (and Chromium's favicon request) came over the same h2
    // connection, as exchanges of their own.
    let list = api.wait_get("/api/traffic?protocol=https", |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["path"] == "/ws-page?messages=4"))
    });
    for e in list["entries"].as_array().unwrap() {
        assert_eq!(e["httpVersion"], "HTTP/2", "{e}");
        assert_eq!(
            e["clientAddress"], entries[0]["clientAddress"],
            "one connection"
        );
    }

    // A rule on Chromium's stream: each echo comes back longer than the server sent
    // it, in frametap's own DATA frames, and Chromium's HTTP/2 stack takes them.
    let rule = json!({"direction": "to-client", "action":
        {"kind": "replace", "pattern": "chromium", "replacement": "Chromium, rewritten by frametap"}});
    assert_eq!(api.send_json("POST", "/api/rules", &rule).status, 201);
    let ruled = chromium_title(&case.lab, Some(&case.cg), &page, target);
    let rewritten = json!({
        "echoes": (1..=4)
            .map(|i| format!("hello from Chromium, rewritten by frametap {i}"))
            .collect::<Vec<_>>(),
        "code": 1000,
    });
    assert_eq!(
        serde_json::from_str::<Value>(&ruled).ok(),
        Some(rewritten),
        "{ruled}"
    );
}

#[test]
fn grpc_calls_work_through_frametap_and_keep_their_trailers() {
    let Some(case) = Case::new("grpc")
        .ports(&PORT.to_string())
        .pki(&[HOST])
        .upstream_ca()
        .server(|lab, pki| GrpcServer::start(lab, UPSTREAM_V4, PORT, pki))
        .start()
    else {
        return;
    };
    let api = case.api();
    let dir = tempfile::tempdir().unwrap();
    let bundle = both_cas(dir.path(), &case.pki, &case.agent);
    let target = (HOST, UPSTREAM_V4, PORT);

    let direct = grpc_calls(&case.lab, None, target, &bundle);
    assert_eq!(direct["say"], "echo:hello grpc");
    assert_eq!(direct["trailers"]["x-echo-length"], "10");
    assert_eq!(
        direct["chat"],
        json!(["echo:one", "echo:two", "echo:three"])
    );
    let captured = grpc_calls(&case.lab, Some(&case.cg), target, &bundle);
    assert_eq!(captured, direct, "identical to direct");

    let entries = listed(&api, "https", 2, |_| true);
    for e in &entries {
        assert_eq!(e["httpVersion"], "HTTP/2", "{e}");
        assert_eq!(e["method"], "POST");
        assert_eq!(e["status"], 200);
        assert_eq!(e["error"], Value::Null, "{e}");
        assert_eq!(
            e["requestHeaders"]["content-type"], "application/grpc",
            "{e}"
        );
        // gRPC's status is a trailer, after the response's header fields.
        assert_eq!(e["responseHeaders"]["grpc-status"], "0", "{e}");
        assert_eq!(e["alpnSelected"], "h2");
    }
    let say = entries
        .iter()
        .find(|e| e["path"] == "/frametap.Echo/Say")
        .expect("the unary call");
    assert_eq!(
        say["url"],
        format!("https://{HOST}:{PORT}/frametap.Echo/Say")
    );
    assert_eq!(say["responseHeaders"]["x-echo-length"], "10", "{say}");
    // Length-prefixed messages: 5 bytes of framing each.
    assert_eq!(say["requestBodySize"], 5 + 10);
    assert_eq!(say["responseBodySize"], 5 + 15);
    let chat = entries
        .iter()
        .find(|e| e["path"] == "/frametap.Echo/Chat")
        .expect("the streaming call");
    assert_eq!(chat["requestBodySize"], 3 * 5 + 3 + 3 + 5);
    assert_eq!(chat["responseBodySize"], 3 * 5 + 3 * 5 + 3 + 3 + 5);
}

#[test]
fn an_http11_server_is_still_intercepted_for_a_client_offering_h2() {
    let Some(case) = start("h1alpn", "http1", true) else {
        return;
    };
    let api = case.api();
    let dir = tempfile::tempdir().unwrap();
    let bundle = both_cas(dir.path(), &case.pki, &case.agent);
    let client = curl(&bundle, &[]);

    let direct = client.get(&case.lab, None, "/hello?x=1");
    ok(&direct);
    assert_eq!(direct.http_version, "1.1");
    // Cold (the server is asked first), then from what the agent learned.
    for _ in 0..2 {
        let captured = client.get(&case.lab, Some(&case.cg), "/hello?x=1");
        ok(&captured);
        assert_eq!(captured.http_version, "1.1");
        assert_eq!(captured.body, direct.body);
    }
    let entries = listed(&api, "https", 2, |_| true);
    for e in &entries {
        assert_eq!(e["method"], "GET");
        assert_eq!(e["url"], format!("https://{HOST}:{PORT}/hello?x=1"));
        assert_eq!(e["path"], "/hello?x=1");
        assert_eq!(e["status"], 200);
        assert_eq!(e["alpnOffered"], json!(["h2", "http/1.1"]));
        assert_eq!(e["alpnSelected"], "http/1.1");
        assert_eq!(e["notIntercepted"], Value::Null);
        assert_eq!(e["error"], Value::Null);
    }
    assert_eq!(api.get("/api/traffic?protocol=tls,tcp")["count"], 0);
}

#[test]
fn a_private_upstream_ca_gets_a_502_that_says_why_and_the_request_is_recorded() {
    // The agent is not told about the upstream's CA.
    let Some(case) = start("privca", "http1", false) else {
        return;
    };
    let api = case.api();
    let ca = case.agent_ca();

    // curl offers h2 too (the server is asked first); with --http1.1 it offers only
    // http/1.1 (both handshakes at once). Both get the same answer.
    for extra in [&[][..], &["--http1.1"][..]] {
        let run = curl(&ca, extra).get(&case.lab, Some(&case.cg), "/chat");
        assert!(run.success, "{run:?}");
        assert_eq!(run.status, "502", "{run:?}");
        let lines: Vec<&str> = run.body.lines().collect();
        assert!(
            lines[0].starts_with(&format!(
                "frametap: upstream TLS failed for {HOST} ({UPSTREAM_V4}:{PORT}): its certificate is issued by a certificate authority frametap does not trust"
            )),
            "{}",
            run.body
        );
        assert!(lines[1].contains("--upstream-ca"), "{}", run.body);
        assert!(
            lines[2].contains(&format!("--passthrough {HOST}")),
            "{}",
            run.body
        );
        assert!(lines[3].contains("--insecure-upstream"), "{}", run.body);
    }

    let entries = listed(&api, "https", 2, |_| true);
    for e in &entries {
        assert_eq!(e["method"], "GET", "{e}");
        assert_eq!(e["url"], format!("https://{HOST}:{PORT}/chat"));
        assert_eq!(e["path"], "/chat");
        assert_eq!(e["host"], format!("{HOST}:{PORT}"));
        assert_eq!(e["status"], 502);
        assert_eq!(
            e["requestHeaders"]["User-Agent"]
                .as_str()
                .map(|u| u.starts_with("curl/")),
            Some(true),
            "{e}"
        );
        let error = e["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("upstream TLS failed for {HOST}"))
                && error.contains("UnknownIssuer")
                && error.contains("--upstream-ca"),
            "{error}"
        );
    }
    // Exported as what it was: a request answered 502, never an empty URL or status 0.
    let har = api.get("/api/har?from=0");
    let har_entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(har_entries.len(), 2, "{har}");
    for e in har_entries {
        assert_eq!(e["request"]["url"], format!("https://{HOST}:{PORT}/chat"));
        assert_eq!(e["response"]["status"], 502);
    }

    let logged = case.agent.wait_connections(2);
    for c in &logged {
        assert_eq!(c["level"], "WARN", "{c}");
        assert_eq!(c["end"], "upstream TLS failed", "{c}");
        assert!(c["bytes_up"].as_u64().unwrap() > 0, "real byte counts: {c}");
        assert!(
            c["bytes_down"].as_u64().unwrap() > 0,
            "real byte counts: {c}"
        );
        assert!(
            c["error"].as_str().unwrap().contains("UnknownIssuer"),
            "{c}"
        );
    }
}

#[test]
fn a_client_that_does_not_trust_the_frametap_ca_is_told_to_install_it() {
    let Some(case) = start("noca", "http1", true) else {
        return;
    };
    let api = case.api();

    // curl trusts the real server's CA only, as before frametap's CA was installed.
    let run = curl(&case.pki.ca, &[]).get(&case.lab, Some(&case.cg), "/");
    assert!(!run.success, "{run:?}");
    assert!(run.stderr.contains("SSL certificate problem"), "{run:?}");

    let entries = listed(&api, "https", 1, |_| true);
    let error = entries[0]["error"].as_str().unwrap();
    let ca = case.agent_ca();
    assert!(
        error.starts_with("client TLS handshake failed: the client does not trust the frametap CA")
            && error.contains(&format!(
                "install {} (see `frametap-agent ca`)",
                ca.display()
            ))
            && error.contains("--passthrough"),
        "{error}"
    );
    assert_eq!(entries[0]["sni"], HOST);
    let logged = case.agent.wait_connections(1);
    assert_eq!(logged[0]["level"], "WARN", "{}", logged[0]);
    assert_eq!(logged[0]["end"], "client does not trust the frametap CA");
    assert!(logged[0]["bytes_up"].as_u64().unwrap() > 0);
    assert!(
        logged[0]["bytes_down"].as_u64().unwrap() > 0,
        "the certificate went out"
    );

    // No request, so no HAR entry; the export says what it left out.
    let har = api.get("/api/har?from=0");
    assert_eq!(har["log"]["entries"], json!([]));
    assert!(
        har["log"]["comment"]
            .as_str()
            .unwrap()
            .contains("1 entries in the range without an HTTP exchange"),
        "{har}"
    );
}
