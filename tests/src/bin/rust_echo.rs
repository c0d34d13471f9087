//! The WebSocket echo benchmark with Rust peers (`ft-wsecho`), which cost little
//! enough to leave the machine to the proxy measured: throughput direct and
//! through each proxy side by side, and each proxy's CPU per echoed message
//! (from its /proc) beside the physical floor measured in the same run.
use std::{path::PathBuf, process::Stdio};

use anyhow::{Context as _, bail};
use frametap_e2e::{
    Agent, Lab, Spawned, TestCgroup, netns::UPSTREAM_V4, pki::TestPki, workspace_bin,
};
use serde_json::Value;

use crate::{WS_HOST, cpu_seconds, tls_floor};

/// The Rust echo server's port on the upstream host (the Python one has 8443).
pub const PORT: u16 = 8444;
const HUDSUCKER_LISTEN: &str = "127.0.0.1:13000";

pub struct Settings {
    pub sizes: Vec<usize>,
    pub connections: Vec<usize>,
    pub seconds: f64,
    pub rounds: usize,
    pub in_flight: usize,
    /// The hudsucker peer binary; None leaves its side out.
    pub hudsucker: Option<PathBuf>,
    /// mitmproxy in reverse mode in front of the Rust server on 127.0.0.1:18444 of
    /// the client host, when wanted: its pid and its CA.
    pub mitmproxy: Option<(u32, PathBuf)>,
}

/// What one client run asks for.
struct Load {
    size: usize,
    connections: usize,
    in_flight: usize,
    seconds: f64,
}

/// One side: how the client dials, and the proxy process whose CPU is its cost.
struct Side<'a> {
    name: &'static str,
    dial: Vec<String>,
    cgroup: Option<&'a TestCgroup>,
    proxy_pid: Option<u32>,
}

/// What one client run measured.
struct Run {
    messages_per_s: f64,
    /// The proxy's CPU seconds per echoed message.
    proxy_cpu: f64,
    /// Client and server CPU seconds per echoed message.
    peers_cpu: f64,
}

/// Waits (at most a minute) until `pid` uses less than 2% of a core over half a
/// second.
fn wait_idle(pid: u32) {
    const WINDOW: std::time::Duration = std::time::Duration::from_millis(500);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut before = cpu_seconds(pid);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(WINDOW);
        let now = cpu_seconds(pid);
        if now - before < 0.02 * WINDOW.as_secs_f64() {
            return;
        }
        before = now;
    }
}

/// Runs `run` and returns what it gave, with the CPU seconds the proxy (if any) and
/// `other` used from its start until the proxy is idle again: work a run leaves
/// behind (RocksDB flushes and compactions of what it recorded) is part of its cost,
/// and must not land on the next run.
pub fn cpu_of_run<T>(
    proxy: Option<u32>,
    other: u32,
    run: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, f64, f64)> {
    if let Some(pid) = proxy {
        wait_idle(pid);
    }
    let proxy_before = proxy.map(cpu_seconds).unwrap_or(0.0);
    let other_before = cpu_seconds(other);
    let value = run()?;
    if let Some(pid) = proxy {
        wait_idle(pid);
    }
    let proxy_used = proxy.map(cpu_seconds).unwrap_or(0.0) - proxy_before;
    Ok((value, proxy_used, cpu_seconds(other) - other_before))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn start_server(lab: &Lab, pki: &TestPki) -> anyhow::Result<Spawned> {
    let ready = tempfile::NamedTempFile::new()?;
    let mut cmd = lab.upstream.command(workspace_bin("ft-wsecho"));
    cmd.args(["server", "--listen", &format!("{UPSTREAM_V4}:{PORT}")])
        .arg("--cert")
        .arg(&pki.cert)
        .arg("--key")
        .arg(&pki.key)
        .arg("--ready")
        .arg(ready.path());
    let server = Spawned::spawn("ft-wsecho server", cmd);
    if !frametap_e2e::wait_ready(ready.path(), std::time::Duration::from_secs(10)) {
        bail!("ft-wsecho server did not start");
    }
    Ok(server)
}

/// hudsucker in the client namespace, signing with the test CA the client trusts.
fn start_hudsucker(lab: &Lab, pki: &TestPki, bin: &PathBuf) -> anyhow::Result<Spawned> {
    let mut cmd = lab.client.command(bin);
    cmd.args(["--listen", HUDSUCKER_LISTEN])
        .arg("--ca-cert")
        .arg(&pki.ca)
        .arg("--ca-key")
        .arg(&pki.ca_key)
        .arg("--upstream-ca")
        .arg(&pki.ca)
        .arg(format!("--resolve={WS_HOST}={UPSTREAM_V4}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let process = Spawned::spawn("hudsucker-peer", cmd);
    let listening = frametap_e2e::wait_for(std::time::Duration::from_secs(10), || {
        let mut probe = lab.client_command(None, "python3");
        probe.args([
            "-c",
            "import socket; socket.create_connection(('127.0.0.1', 13000), timeout=1)",
        ]);
        probe
            .output()
            .is_ok_and(|o| o.status.success())
            .then_some(())
    });
    if listening.is_none() {
        bail!("hudsucker-peer did not listen on {HUDSUCKER_LISTEN} in the client namespace");
    }
    Ok(process)
}

fn run_client(lab: &Lab, side: &Side<'_>, server_pid: u32, load: &Load) -> anyhow::Result<Run> {
    let mut cmd = lab.client_command(side.cgroup, workspace_bin("ft-wsecho"));
    cmd.arg("echo")
        .args(&side.dial)
        .args(["--size", &load.size.to_string()])
        .args(["--connections", &load.connections.to_string()])
        .args(["--in-flight", &load.in_flight.to_string()])
        .args(["--seconds", &load.seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (out, proxy, server) = cpu_of_run(side.proxy_pid, server_pid, || {
        let out = Spawned::spawn("ft-wsecho echo", cmd).output();
        if !out.status.success() {
            bail!(
                "ft-wsecho echo via {}: {}",
                side.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    })?;
    let v: Value = serde_json::from_slice(&out.stdout).context("ft-wsecho echo output")?;
    let messages = v["messages"].as_f64().unwrap_or(0.0).max(1.0);
    let client = v["client_cpu_seconds"].as_f64().unwrap_or(0.0);
    Ok(Run {
        messages_per_s: v["messages_per_s"].as_f64().unwrap_or(0.0),
        proxy_cpu: proxy / messages,
        peers_cpu: (client + server) / messages,
    })
}

pub fn section(
    lab: &Lab,
    cg: &TestCgroup,
    agent: &Agent,
    pki: &TestPki,
    settings: Settings,
) -> anyhow::Result<String> {
    let server = start_server(lab, pki)?;
    let target = format!("{UPSTREAM_V4}:{PORT}");
    let dial = |connect: &str, cafile: &std::path::Path, proxy: Option<&str>| {
        let mut d = vec![
            "--connect".to_string(),
            connect.to_string(),
            "--host".into(),
            WS_HOST.into(),
            "--cafile".into(),
            cafile.display().to_string(),
        ];
        if let Some(p) = proxy {
            d.extend(["--proxy".to_string(), p.to_string()]);
        }
        d
    };
    let mut sides = vec![
        Side {
            name: "direct",
            dial: dial(&target, &pki.ca, None),
            cgroup: None,
            proxy_pid: None,
        },
        Side {
            name: "frametap",
            dial: dial(&target, &agent.data_dir.path().join("ca.pem"), None),
            cgroup: Some(cg),
            proxy_pid: Some(agent.pid()),
        },
    ];
    let hudsucker = match &settings.hudsucker {
        Some(bin) => Some(start_hudsucker(lab, pki, bin)?),
        None => None,
    };
    if let Some(h) = &hudsucker {
        sides.push(Side {
            name: "hudsucker",
            dial: dial(&target, &pki.ca, Some(HUDSUCKER_LISTEN)),
            cgroup: None,
            proxy_pid: Some(h.pid()),
        });
    }
    if let Some((pid, ca)) = &settings.mitmproxy {
        sides.push(Side {
            name: "mitmproxy",
            dial: dial("127.0.0.1:18444", ca, None),
            cgroup: None,
            proxy_pid: Some(*pid),
        });
    }
    // Every side once, so that leaves are minted and caches warm.
    let warm = Load {
        size: 100,
        connections: 1,
        in_flight: 8,
        seconds: 0.3,
    };
    for side in &sides {
        run_client(lab, side, server.pid(), &warm)?;
    }

    // The floors first: a failure shows before minutes of runs.
    let mut floors = std::collections::BTreeMap::new();
    let data_dir = agent.data_dir.path();
    for &size in &settings.sizes {
        let tls = tls_floor::per_echo(size, 0.3)?;
        let logged = tls_floor::page_cache_per_echo(data_dir, size, 0.3)?;
        floors.insert(size, (tls, logged));
    }
    let (first_touch, touch_again) = tls_floor::first_touch_per_byte()?;
    let mut rate_rows = String::new();
    let mut cpu_rows = String::new();
    let mut suite = String::new();
    for &connections in &settings.connections {
        for &size in &settings.sizes {
            eprintln!(
                "rust echo: {size} B, {connections} connection(s), {} rounds",
                settings.rounds
            );
            let load = Load {
                size,
                connections,
                in_flight: settings.in_flight,
                seconds: settings.seconds,
            };
            let mut runs: Vec<Vec<Run>> = sides.iter().map(|_| Vec::new()).collect();
            for round in 0..settings.rounds {
                // Each round starts with another side, so drift hits all of them.
                for k in 0..sides.len() {
                    let i = (k + round) % sides.len();
                    runs[i].push(run_client(lab, &sides[i], server.pid(), &load)?);
                }
            }
            let (floor, logged) = &floors[&size];
            suite.clone_from(&floor.suite);
            let recorded_floor = floor.per_echo + logged;
            let rate = |i: usize| median(runs[i].iter().map(|r| r.messages_per_s).collect());
            let cpu = |i: usize| median(runs[i].iter().map(|r| r.proxy_cpu).collect());
            let workload = format!("{} × {connections}", size_label(size));
            let mut row = format!(
                "| {workload} | {:.0} | {:.0} | {:.0}% |",
                rate(0),
                rate(1),
                rate(1) / rate(0) * 100.0
            );
            let mut cpu_row = format!(
                "| {workload} | {:.1} µs | {:.1} µs | {:.1} µs | {:.2} ns | {:.1}× | {:.1}× |",
                floor.per_echo * 1e6,
                recorded_floor * 1e6,
                cpu(1) * 1e6,
                cpu(1) * 1e9 / (2.0 * size as f64),
                cpu(1) / floor.per_echo,
                cpu(1) / recorded_floor,
            );
            for i in 2..sides.len() {
                row.push_str(&format!(" {:.0} | {:.2}× |", rate(i), rate(1) / rate(i)));
                cpu_row.push_str(&format!(" {:.1} µs |", cpu(i) * 1e6));
            }
            let peers = median(runs[0].iter().map(|r| r.peers_cpu).collect());
            cpu_row.push_str(&format!(" {:.1} µs |", peers * 1e6));
            rate_rows.push_str(&row);
            rate_rows.push('\n');
            cpu_rows.push_str(&cpu_row);
            cpu_rows.push('\n');
        }
    }
    let others: Vec<&str> = sides.iter().skip(2).map(|s| s.name).collect();
    let rate_head: String = others
        .iter()
        .map(|n| format!(" {n} msg/s | frametap vs {n} |"))
        .collect();
    let cpu_head: String = others
        .iter()
        .map(|n| format!(" {n} CPU per echo |"))
        .collect();
    let dashes = |n: usize| "---|".repeat(n);
    Ok(format!(
        "## WebSocket over TLS with Rust peers: throughput and CPU per message\n\n\
         `ft-wsecho` client and server (tokio + rustls, one thread each, binary messages, \
         {in_flight} in flight per connection), {secs} s per run, {rounds} rounds with the \
         order of the sides rotating; medians. Through frametap every frame of both \
         directions is parsed and written to RocksDB (WAL on) before it is forwarded. \
         Workload: message size × connections.\n\n\
         | workload | direct msg/s | frametap msg/s | frametap vs direct |{rate_head}\n\
         |{d1}\n{rate_rows}\n\
         CPU per echoed message, both directions, from each proxy's /proc, from the start \
         of a run until the proxy is idle again (so the RocksDB flushes and compactions a \
         run leaves behind count for it). The floor is \
         what two TLS decryptions and two encryptions of the message ({suite}, the agent's \
         rustls provider) and one copy of it per direction cost in one thread, measured \
         in the same run. A recording proxy must also write both payloads to its log: \
         \"floor + log\" adds what writing them into new page-cache pages of a file on the \
         agent's data-dir filesystem costs (files rotated every 8 MiB, as WAL files are), \
         measured the same way.\n\n\
         | workload | floor | floor + log | frametap | frametap per relayed byte | frametap / floor | frametap / (floor + log) |{cpu_head} peers (client + server, direct) |\n\
         |{d2}\n{cpu_rows}\n\
         What the peers do and do not do. frametap is transparent (the client dials the \
         server; eBPF redirects it), forwards every frame byte for byte (masks, \
         fragmentation and extensions as sent; permessage-deflate negotiated end to end \
         and inflated only for the record) and writes every frame to RocksDB's \
         write-ahead log before forwarding it. hudsucker 0.25 is an explicit proxy (the \
         client sends CONNECT), answers the upgrade itself and re-encodes every message \
         with tungstenite (new frames and masks), does not carry permessage-deflate \
         through (it failed when the server accepted it, when issue 15 was filed), and \
         records nothing. mitmproxy 12 runs in reverse mode and keeps its flows in memory \
         (no `-w`); its eBPF local mode, the one that would make it transparent, attaches \
         to `/sys/fs/cgroup` and fails on this host's hybrid cgroup layout, so it is not \
         used.\n\n\
         Reading these numbers: at 100 B the cost is per message (syscalls, wake-ups, the \
         session's parsing, one WAL append per read); from 64 KiB on it is per byte, and \
         beyond the TLS work of the floor the agent appends every payload to the WAL, \
         which here means filling page-cache pages that the VM's host must back again \
         (this Firecracker guest reports free memory to the host, \
         `page_reporting.page_reporting_order=11`), a cost the in-process \"floor + log\" \
         (whose pages are reused at once) does not see. Measured in this run: writing \
         newly mapped memory costs {ft:.2} ns per byte the first time and {ta:.2} ns the \
         second, so 128 KiB of log (a 64 KiB echo) in fresh pages costs {fresh:.0} µs more \
         than in pages already backed. hudsucker's CPU per message is the price of TLS \
         and tungstenite without recording.\n",
        in_flight = settings.in_flight,
        secs = settings.seconds,
        rounds = settings.rounds,
        d1 = dashes(4 + 2 * others.len()),
        d2 = dashes(8 + others.len()),
        ft = first_touch * 1e9,
        ta = touch_again * 1e9,
        fresh = (first_touch - touch_again) * 131072.0 * 1e6,
    ))
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
