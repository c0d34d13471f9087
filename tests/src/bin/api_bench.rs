//! The API's benchmarks (issue 4): page and count latency on a big store, and the
//! live path from a frame on the wire to its Socket.IO event.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use frametap_e2e::{Agent, Lab, Spawned, TestCgroup, api::Api, big_store::fill_store};
use frametap_store::FrameId;
use serde_json::Value;

use crate::{WsSide, percentile, ws_client};

/// Deterministic pseudo-random numbers (xorshift64*), enough to spread reads.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Client-side latency of `n` GETs (microseconds), each checked by `check`.
fn timed_gets(
    api: &Api,
    n: usize,
    mut path: impl FnMut() -> String,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let p = path();
        let start = Instant::now();
        let answer = api.request("GET", &p);
        let micros = start.elapsed().as_secs_f64() * 1e6;
        if answer.status != 200 || !check(&answer.json()) {
            bail!(
                "GET {p}: unexpected answer {} {}",
                answer.status,
                &answer.body[..answer.body.len().min(200)]
            );
        }
        samples.push(micros);
    }
    Ok(samples)
}

/// Page and count latency over HTTP (keep-alive, one client) on a store of
/// `total` frames whose queried connection holds `hot` of them.
pub fn store_section(total: u64, hot: u64, requests: usize) -> anyhow::Result<String> {
    let connections = total.div_ceil(hot).max(1);
    let data_dir = tempfile::tempdir_in("/var/tmp").context("bench data dir")?;
    eprintln!("api: writing {connections} connections x {hot} frames");
    let start = Instant::now();
    let ids = fill_store(&data_dir.path().join("store"), connections, hot)?;
    let fill_secs = start.elapsed().as_secs_f64();
    let api = Api::start(data_dir.path());
    api.wait_get("/api/health", |h| h["store"]["open"] == true);
    let hot_id = ids[ids.len() / 2];
    let stored = api.get(&format!("/api/websocket/{hot_id}/count"))["count"]
        .as_u64()
        .unwrap_or(0);
    if stored != hot {
        bail!("the API counts {stored} frames on {hot_id}, {hot} were written");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut page_path = || {
        let after = rng.below(hot - 100);
        if after == 0 {
            format!("/api/websocket/{hot_id}/frames?limit=100")
        } else {
            format!(
                "/api/websocket/{hot_id}/frames?limit=100&after={}",
                FrameId::new(hot_id, after)
            )
        }
    };
    let full_page = |v: &Value| v.as_array().is_some_and(|a| a.len() == 100);
    timed_gets(&api, 200, &mut page_path, full_page)?; // warm-up
    let mut pages = timed_gets(&api, requests, &mut page_path, full_page)?;
    let count_path = || format!("/api/websocket/{hot_id}/count");
    let is_count = |v: &Value| v["count"].as_u64() == Some(hot);
    timed_gets(&api, 200, count_path, is_count)?;
    let mut counts = timed_gets(&api, requests, count_path, is_count)?;
    let mut first_pages = timed_gets(
        &api,
        requests / 4,
        || {
            format!(
                "/api/websocket/{}/frames",
                ids[rng.below(ids.len() as u64) as usize]
            )
        },
        full_page,
    )?;
    let size_mb = dir_size(data_dir.path()) as f64 / 1e6;
    let (p50, p99) = (percentile(&mut pages, 0.5), percentile(&mut pages, 0.99));
    let (c50, c99) = (percentile(&mut counts, 0.5), percentile(&mut counts, 0.99));
    let f50 = percentile(&mut first_pages, 0.5);
    Ok(format!(
        "## API: reads on a big store\n\n\
         A store of {total_m:.0} M frames ({connections} connections × {hot_m:.1} M frames, ~100-byte text \
         payloads; {size_mb:.0} MB on disk, written in {fill_secs:.0} s), served by `frametap-api` (RocksDB \
         secondary). One HTTP client with keep-alive on loopback; times are measured by the client \
         (request, handler, JSON, response). Pages start at random cursors in one connection of {hot_m:.1} M \
         frames.\n\n\
         | request | p50 | p99 | target |\n\
         |---|---|---|---|\n\
         | `frames?limit=100&after=<random>` ({requests} requests) | {p50:.0} µs | {p99:.0} µs | p99 < 5 ms |\n\
         | `count` ({requests} requests) | {c50:.0} µs | {c99:.0} µs | < 1 ms |\n\
         | `frames` (first page, random connection, {first} requests) | {f50:.0} µs | | |\n",
        total_m = (connections * hot) as f64 / 1e6,
        hot_m = hot as f64 / 1e6,
        first = requests / 4,
    ))
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the python-socketio listener in bench mode until `frames` frame events
/// arrived (or `seconds` passed) and returns its summary.
fn listener(api: &Api, frames: u64, seconds: f64, raw: bool) -> anyhow::Result<Spawned> {
    let mut cmd = Command::new("python3");
    cmd.arg(frametap_e2e::api::sio_script())
        .args(["--url", &api.base(), "--token", &api.token])
        .args(["--bench", &frames.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if raw {
        cmd.arg("--raw");
    }
    Ok(Spawned::spawn("sio_listen", cmd))
}

fn summary(listener: Spawned) -> anyhow::Result<Value> {
    let out = listener.output();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["summary"] == true)
        .with_context(|| format!("no summary from the Socket.IO listener: {text}"))
}

/// Wire-to-event latency and events per second to one Socket.IO subscriber,
/// through the running agent.
pub fn live_section(
    lab: &Lab,
    cg: &TestCgroup,
    agent: &Agent,
    side: &WsSide<'_>,
    seconds: f64,
) -> anyhow::Result<String> {
    let api = Api::start(agent.data_dir.path());
    api.wait_get("/api/health", |h| {
        h["store"]["open"] == true && h["events"]["connected"] == true
    });
    let _ = cg;

    eprintln!("api: wire-to-event latency");
    let count = 1000u64;
    let watcher = listener(&api, 2 * count, 120.0, false)?;
    std::thread::sleep(Duration::from_secs(2)); // connected before the first frame
    ws_client(
        lab,
        side,
        "stamped",
        &[
            "--count".into(),
            count.to_string(),
            "--interval".into(),
            "0.002".into(),
        ],
    )?;
    let latency = summary(watcher)?;

    eprintln!("api: events per second to one subscriber");
    let watcher = listener(&api, u64::MAX / 2, seconds + 4.0, true)?;
    std::thread::sleep(Duration::from_secs(2));
    let echo = ws_client(
        lab,
        side,
        "echo",
        &[
            "--size".into(),
            "100".into(),
            "--seconds".into(),
            seconds.to_string(),
        ],
    )?;
    let rate = summary(watcher)?;
    let health = api.get("/api/health");
    // Each echoed message is one frame each way.
    let frames_on_wire = echo["messages"].as_f64().unwrap_or(0.0) * 2.0;
    let delivered = rate["frames"].as_f64().unwrap_or(0.0);
    Ok(format!(
        "## API: live events\n\n\
         The agent records a WebSocket conversation (Python `websockets` over TLS through frametap); \
         `frametap-api` relays the agent's live records as Socket.IO events to one python-socketio \
         client. Wire-to-event: the sender stamps each message with its send time (same host \
         clock); the listener subtracts it on arrival of the frame's `websocket:frame` event, so the \
         time covers the TLS legs, parsing, the WAL write, the control socket, the API and Socket.IO.\n\n\
         | measure | value | target |\n\
         |---|---|---|\n\
         | wire-to-event latency, p50 ({n} messages, one at a time) | {l50:.2} ms | < 5 ms |\n\
         | wire-to-event latency, p99 | {l99:.2} ms | |\n\
         | `websocket:frame` events per second to one subscriber (bare Engine.IO client; echo at 64 in flight, 100 B, {seconds} s) | {eps:.0} /s | |\n\
         | frames echoed in that run (2 per message) / `websocket:frame` events delivered | {frames_on_wire:.0} / {delivered:.0} | |\n\
         | events dropped for the slow subscriber (agent + API, counted) | {dropped} | |\n",
        n = latency["latency_samples"],
        l50 = latency["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
        l99 = latency["latency_ms_p99"].as_f64().unwrap_or(f64::NAN),
        eps = rate["events_per_second"].as_f64().unwrap_or(0.0),
        dropped = health["events"]["dropped"],
    ))
}
