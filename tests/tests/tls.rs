//! End to end, as root: TLS with peers we did not write. Node's `http2` module as an
//! h2-only server and its `https` module as an HTTP/1.1 server, curl (which offers
//! `h2, http/1.1`) as the captured client. Capturing must never make a working
//! application fail; what frametap did not intercept, and why a handshake failed,
//! must be visible in the traffic list.
use std::path::{Path, PathBuf};

use frametap_e2e::{
    Agent, Case,
    api::Api,
    netns::UPSTREAM_V4,
    peers::{Curl, CurlRun, NodeTlsServer},
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
fn an_h2_only_server_works_through_frametap_and_is_listed_as_relayed_untouched() {
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
    // The first connection asks the server, the second uses what it learned.
    for _ in 0..2 {
        let captured = client.get(&case.lab, Some(&case.cg), "/hello");
        ok(&captured);
        assert_eq!(captured.http_version, "2");
        assert_eq!(captured.body, direct.body, "identical to direct");
    }

    let entries = listed(&api, "tls", 2, |e| e["bytesFromServer"].is_u64());
    for e in &entries {
        assert_eq!(e["notIntercepted"], "server selected h2", "{e}");
        assert_eq!(e["alpnOffered"], json!(["h2", "http/1.1"]));
        assert_eq!(e["alpnSelected"], "h2");
        assert_eq!(e["sni"], HOST);
        assert_eq!(e["host"], HOST);
        assert_eq!(e["url"], format!("tls://{HOST}:{PORT}"));
        assert_eq!(e["remoteAddress"], format!("{UPSTREAM_V4}:{PORT}"));
        assert_eq!(e["process"], "curl");
        assert_eq!(e["status"], Value::Null);
        assert!(e["bytesFromClient"].as_u64().unwrap() > 100, "{e}");
        assert!(e["bytesFromServer"].as_u64().unwrap() > 1000, "{e}");
        assert!(e["duration"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        api.get("/api/traffic?protocol=https")["count"],
        0,
        "nothing was intercepted"
    );
    let logged = case.agent.wait_connections(2);
    for c in &logged {
        assert_eq!(c["kind"], "tls", "{c}");
        assert_eq!(c["not_intercepted"], "server selected h2", "{c}");
        assert_eq!(c["level"], "INFO", "{c}");
    }
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
