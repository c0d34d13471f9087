//! HTTP/2 requests per second, direct and through frametap, side by side in one run:
//! h2load (nghttp2) as the client, many streams on one connection and on several,
//! Node's `http2` server (tests/peers/tls_server.js) as the server. Through frametap
//! every frame is read (headers HPACK-decoded) and every stream recorded as a
//! traffic entry, while the bytes pass unchanged.
use anyhow::{Context as _, bail};
use frametap_e2e::{
    Agent, Lab, TestCgroup, netns::UPSTREAM_V4, peers::NodeTlsServer, pki::TestPki,
};

use crate::{
    WS_HOST,
    rust_echo::{cpu_of_run, median},
};

/// The Node h2 server's port on the upstream host.
pub const PORT: u16 = 8445;

pub struct Settings {
    /// Requests per run.
    pub requests: usize,
    pub rounds: usize,
}

/// Connections and streams in flight on each.
const WORKLOADS: [(usize, usize); 2] = [(1, 100), (8, 16)];

/// One h2load run from the client namespace (inside `cgroup`: captured): requests
/// per second, after checking that every request succeeded.
fn h2load(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    requests: usize,
    (c, m): (usize, usize),
) -> anyhow::Result<f64> {
    let mut cmd = lab.client_command(cgroup, "h2load");
    cmd.args([
        "-n",
        &requests.to_string(),
        "-c",
        &c.to_string(),
        "-m",
        &m.to_string(),
        &format!("--connect-to={UPSTREAM_V4}:{PORT}"),
        &format!("https://{WS_HOST}:{PORT}/hello"),
    ]);
    let out = cmd
        .output()
        .context("h2load (cargo xtask setup installs nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let succeeded = text
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" succeeded")))
        .and_then(|n| n.parse::<usize>().ok());
    if !out.status.success() || succeeded != Some(requests) {
        bail!("h2load: {succeeded:?} of {requests} succeeded:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.strip_suffix(" req/s"))
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("no req/s in h2load's output:\n{text}"))
}

pub fn section(
    lab: &Lab,
    cg: &TestCgroup,
    agent: &Agent,
    pki: &TestPki,
    settings: Settings,
) -> anyhow::Result<String> {
    let server = NodeTlsServer::start(lab, "h2-only", UPSTREAM_V4, PORT, pki);
    // Leaves minted, caches and the server's JIT warm.
    for cgroup in [None, Some(cg)] {
        h2load(lab, cgroup, 2_000, (1, 10))?;
    }
    let mut rows = String::new();
    for workload in WORKLOADS {
        eprintln!(
            "h2 requests: {} connection(s) x {} streams",
            workload.0, workload.1
        );
        let (mut direct, mut captured, mut agent_cpu, mut server_cpu) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..settings.rounds {
            for captured_side in [round % 2 == 1, round % 2 == 0] {
                if !captured_side {
                    direct.push(h2load(lab, None, settings.requests, workload)?);
                    continue;
                }
                let (rate, agent_used, server_used) =
                    cpu_of_run(Some(agent.pid()), server.process.pid(), || {
                        h2load(lab, Some(cg), settings.requests, workload)
                    })?;
                captured.push(rate);
                let per_request = |seconds: f64| seconds / settings.requests as f64 * 1e6;
                agent_cpu.push(per_request(agent_used));
                server_cpu.push(per_request(server_used));
            }
        }
        let (d, c) = (median(direct), median(captured));
        rows.push_str(&format!(
            "| {} × {} | {d:.0} | {c:.0} | {:.0}% | {:.1} µs | {:.1} µs |\n",
            workload.0,
            workload.1,
            c / d * 100.0,
            median(agent_cpu),
            median(server_cpu),
        ));
    }
    Ok(format!(
        "## HTTP/2: requests through frametap\n\n\
         h2load (nghttp2 1.52) against Node's `http2` server, GET of a 33-byte answer over TLS, {} \
         requests per run, {} rounds with the order of the sides rotating; medians. Through frametap \
         both legs speak h2, every frame passes unchanged and every stream is recorded as a traffic \
         entry. Workload: connections × streams in flight on each.\n\n\
         | workload | direct req/s | frametap req/s | frametap vs direct | agent CPU per request | server CPU per request (frametap side) |\n\
         |---|---|---|---|---|---|\n{rows}",
        settings.requests, settings.rounds
    ))
}
