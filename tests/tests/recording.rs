//! End to end, as root: recording through a full disk. The agent's data dir sits on a
//! 64 MB tmpfs that the test fills while wss conversations run, then frees. Traffic
//! must keep flowing, `/api/health` and the live events must say that recording
//! stopped and how much was lost, and recording must come back by itself.
use std::collections::BTreeSet;
use std::time::Duration;

use frametap_e2e::{
    Agent, Case, Lab, TestCgroup,
    api::{Api, SioListener},
    netns::UPSTREAM_V4,
    tmpfs::Tmpfs,
    wait_for,
    ws::{ClientOptions, WsServer, spawn_client_on},
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";

/// Runs `script` as a captured wss client on `path`; traffic must always flow.
fn converse(lab: &Lab, cg: &TestCgroup, agent: &Agent, path: &str, script: &Value) {
    let ca = agent.data_dir.path().join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let out = spawn_client_on(lab, Some(cg), &opts, script, path).output();
    assert!(
        out.status.success(),
        "traffic must flow whatever happens to recording ({path}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (up to 60 s) until `/api/health` satisfies `check`.
fn wait_health(api: &Api, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(60), || {
        let h = api.get("/api/health");
        check(&h).then_some(h)
    })
    .unwrap_or_else(|| {
        panic!(
            "health never got there; last: {}\nAPI log:\n{}",
            api.get("/api/health"),
            api.log_text()
        )
    })
}

/// The traffic entries whose path is `path`.
fn entries(api: &Api, path: &str) -> Vec<Value> {
    api.get("/api/traffic?protocol=wss&limit=1000")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["path"] == path)
        .cloned()
        .collect()
}

#[test]
fn recording_stops_on_a_full_disk_and_resumes_by_itself() {
    // The data dir on a 64 MB tmpfs.
    let Some(mut case) = Case::new("recover")
        .ports("8443")
        .upstream_ca()
        .pki(&[HOST])
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
        .tmpfs("64m")
        .start()
    else {
        return;
    };
    let api = case.api();
    let mut live = SioListener::connect(&api, Some(&api.token)).expect("Socket.IO connects");
    let healthy = wait_health(&api, |h| {
        h["events"]["connected"] == true && h["recording"]["state"] == "ok"
    });
    assert_eq!(healthy["status"], "ok", "{healthy}");
    assert_eq!(healthy["recording"]["lastOutage"], Value::Null);

    converse(
        &case.lab,
        &case.cg,
        &case.agent,
        "/before",
        &json!([{"op": "text", "data": "before"}]),
    );

    // Fill the disk, then talk until the agent's writes fail: 50 echoed 60 KB
    // messages per run, so the WAL and memtables outgrow what is left.
    let filler = case.tmpfs.as_ref().unwrap().path().join("filler");
    Tmpfs::fill(&filler);
    let big = json!([{"op": "big", "size": 60000}]);
    let script = Value::Array(std::iter::repeat_n(big[0].clone(), 50).collect());
    let mut runs = 0;
    let degraded = loop {
        converse(&case.lab, &case.cg, &case.agent, "/filling", &script);
        runs += 1;
        let h = api.get("/api/health");
        if h["recording"]["state"] == "degraded" {
            break h;
        }
        assert!(
            runs < 40,
            "2 × 120 MB through a 64 MB disk and no write failed: {h}"
        );
    };
    // While writes fail, this conversation is relayed but not recorded.
    converse(
        &case.lab,
        &case.cg,
        &case.agent,
        "/during",
        &json!([{"op": "text", "data": "lost"}]),
    );
    let during = wait_health(&api, |h| {
        h["recording"]["recordsLost"].as_u64() > degraded["recording"]["recordsLost"].as_u64()
    });
    assert_eq!(during["status"], "degraded", "{during}");
    let rec = &during["recording"];
    assert_eq!(rec["state"], "degraded");
    assert!(rec["since"].as_u64().unwrap() > 0, "{rec}");
    assert!(
        rec["error"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{rec}"
    );
    assert!(rec["recordsFailed"].as_u64().unwrap() >= rec["recordsLost"].as_u64().unwrap());

    // Give the space back: recording resumes without anybody touching the agent.
    std::fs::remove_file(&filler).unwrap();
    let resumed = wait_health(&api, |h| h["recording"]["state"] == "ok");
    let outage = &resumed["recording"]["lastOutage"];
    assert_eq!(outage["stoppedAt"], rec["since"], "{resumed}");
    assert!(outage["resumedAt"].as_u64() > outage["stoppedAt"].as_u64());
    let lost = outage["recordsLost"].as_u64().unwrap();
    assert!(lost >= rec["recordsLost"].as_u64().unwrap(), "{outage}");
    assert_eq!(resumed["recording"]["recordsLost"], 0);
    assert_eq!(resumed["recording"]["since"], Value::Null);

    converse(
        &case.lab,
        &case.cg,
        &case.agent,
        "/after",
        &json!([{"op": "text", "data": "after"}]),
    );
    let after = api.wait_get("/api/traffic?protocol=wss", |v| {
        v["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|t| t["path"] == "/after"))
    });
    let after_id = after["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["path"] == "/after")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let frames = api.wait_get(&format!("/api/websocket/{after_id}/frames"), |f| {
        f.as_array().is_some_and(|f| f.len() >= 2)
    });
    assert_eq!(frames[0]["data"], "YWZ0ZXI=", "{frames}"); // "after"
    assert_eq!(
        entries(&api, "/before").len(),
        1,
        "recorded before the disk filled"
    );
    assert!(
        entries(&api, "/during").is_empty(),
        "nothing of the outage is stored"
    );

    // Live events: the outage in order, and only frames that were stored.
    let events = live.collect_until(|ev| {
        ev.iter()
            .any(|e| e["event"] == "websocket:close" && e["data"]["trafficId"] == after_id)
    });
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|n| n.starts_with("recording:"))
        .collect();
    assert_eq!(
        names,
        ["recording:degraded", "recording:resumed"],
        "{events:?}"
    );
    let down = events
        .iter()
        .find(|e| e["event"] == "recording:degraded")
        .unwrap();
    assert_eq!(down["data"]["since"], outage["stoppedAt"]);
    assert!(
        down["data"]["error"]
            .as_str()
            .unwrap()
            .contains("No space left")
    );
    let up = events
        .iter()
        .find(|e| e["event"] == "recording:resumed")
        .unwrap();
    assert_eq!(up["data"]["recordsLost"], outage["recordsLost"], "{up}");
    assert_eq!(up["data"]["resumedAt"], outage["resumedAt"]);
    let frame_ids: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["event"] == "websocket:frame")
        .map(|e| e["data"]["id"].as_str().unwrap())
        .collect();
    assert!(!frame_ids.is_empty());
    for id in &frame_ids {
        let a = api.request("GET", &format!("/api/websocket/frame/{id}"));
        assert_eq!(
            a.status, 200,
            "a live frame event for a frame never stored: {id}"
        );
    }
    assert!(
        !events.iter().any(|e| e["event"] == "websocket:open"
            && e["data"]["url"].as_str().unwrap().ends_with("/during")),
        "no live event for a connection that was not recorded"
    );

    // The agent's log says when recording stopped and resumed and what was lost.
    assert!(case.agent.stop().success(), "{}", case.agent.log_text());
    let logs = case.agent.logs();
    let message = |prefix: &str| {
        logs.iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .unwrap_or_else(|| panic!("no {prefix:?} in the agent log:\n{}", case.agent.log_text()))
            .clone()
    };
    let stopped = message("recording stopped");
    assert!(stopped["since"].is_string(), "{stopped}");
    let resumed_log = message("recording resumed");
    assert_eq!(
        resumed_log["records_lost"].as_u64(),
        Some(lost),
        "{resumed_log}"
    );
    assert!(resumed_log["stopped_at"].is_string() && resumed_log["resumed_at"].is_string());
    eprintln!(
        "outage: {} ms, {lost} records lost, {} live frame events all stored, {runs} filling runs",
        outage["resumedAt"].as_u64().unwrap() - outage["stoppedAt"].as_u64().unwrap(),
        frame_ids.len()
    );
    drop(case.agent);
    drop(case.tmpfs);
}
