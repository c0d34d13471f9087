//! The web UI under a live flood, in headless Chromium (`tests/peers/ui_bench.py`):
//! a WebSocket conversation of stamped messages through the agent, paced and then
//! as fast as one-at-a-time echoes go (about 700 and 2,500 messages a second here),
//! shown live in the page while it arrives. Measures the page's capture-to-row
//! latency, how long it stalled at worst, how busy it was, and its JS heap and
//! document size after 100,000 live messages (the list keeps at most 50,000 items
//! and draws only the rows in view).
use std::process::Stdio;

use anyhow::Context as _;
use frametap_e2e::{Agent, Lab, Spawned, api::Api, pki::TestPki};

use crate::{WsSide, ws_bench_server, ws_client};

/// Messages each way: 50,000 stamped messages and their echoes.
const MESSAGES: u64 = 50_000;

/// One flood: `interval` seconds between a message's echo and the next message.
fn flood(
    lab: &Lab,
    api: &Api,
    side: &WsSide<'_>,
    interval: &str,
) -> anyhow::Result<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ui_bench.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg(format!("http://127.0.0.1:{}", api.port))
        .arg(&api.token)
        .arg((2 * MESSAGES).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let page = Spawned::spawn("ui_bench.py", cmd);
    eprintln!("ui: {MESSAGES} stamped messages and their echoes, {interval} s apart, shown live");
    // Silent for 8 s once connected: the page finds the connection and follows it.
    ws_client(
        lab,
        side,
        "stamped",
        &[
            "--count".into(),
            MESSAGES.to_string(),
            "--interval".into(),
            interval.into(),
            "--delay".into(),
            "8".into(),
        ],
    )?;
    let out = page.output();
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ui_bench.py printed no report: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn section(
    lab: &Lab,
    agent: &Agent,
    pki: &TestPki,
    side: &WsSide<'_>,
) -> anyhow::Result<String> {
    let api = Api::start(agent.data_dir.path());
    api.wait_get("/api/health", |h| {
        h["store"]["open"] == true && h["events"]["connected"] == true
    });
    let _server = ws_bench_server(lab, pki)?;
    let mut rows = String::new();
    let only = std::env::var("FT_UI_FLOODS").ok();
    for (name, interval) in [
        ("paced (0.5 ms after each echo)", "0.0005"),
        ("as fast as one-at-a-time echoes go", "0"),
    ] {
        // FT_UI_FLOODS=0.0005 runs that flood only (for profiling one).
        if only.as_deref().is_some_and(|o| o != interval) {
            continue;
        }
        let report = flood(lab, &api, side, interval)?;
        let f = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
        rows.push_str(&format!(
            "| {name} | {rate:.0} /s | {shown:.0} / {sent} | {p50:.0} / {p99:.0} / {max:.0} ms | {gap:.0} ms | {busy:.0}% | {heap:.1} MiB | {elements:.0} / {rows:.0} |\n",
            rate = f("received") / f("seconds"),
            shown = f("received"),
            sent = 2 * MESSAGES,
            p50 = f("p50"),
            p99 = f("p99"),
            max = f("max"),
            gap = f("gap"),
            busy = f("busy") * 100.0,
            heap = f("heap_used") / 1024.0 / 1024.0,
            elements = f("elements"),
            rows = f("rows"),
        ));
    }
    let dropped = api.get("/api/health")["events"]["dropped"].clone();
    Ok(format!(
        "## Web UI: a live flood in the browser\n\n\
         Headless Chromium follows one WebSocket connection's messages live while {MESSAGES} stamped \
         messages and their echoes arrive (Python `websockets` through frametap, one at a time); \
         the page's own measures, read over the DevTools protocol. Latency: from the agent's \
         capture of a frame to the page appending its item to the list (which redraws at most ten \
         times a second while items stream in: the row shows at most 100 ms later). Busy: the page's main thread, over the flood. The list keeps at most \
         50,000 items and draws only the rows in view. The page subscribes to the connection's \
         `websocket:message` events only (not its frames, nor other connections'); events the API \
         could not hand to the page in time are dropped and counted ({dropped} in all).\n\n\
         | flood | messages/s shown | shown / sent | capture → row p50 / p99 / max | longest stall | page busy | JS heap after (forced GC) | elements / rows drawn |\n\
         |---|---|---|---|---|---|---|---|\n{rows}"
    ))
}
