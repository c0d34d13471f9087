//! End to end, as root: the web UI in real browsers (Debian's Chromium over the
//! DevTools protocol, and Firefox ESR over WebDriver BiDi, both headless), through the
//! real agent and API, with a Python `websockets` conversation captured live. The page signs in with the token from
//! the link frametap-api prints, lists the connection, shows its messages in both
//! directions, finds one, sends one to the client (which receives it), and adds
//! and deletes a rule. Screenshots of each view go to
//! `$CARGO_TARGET_DIR/test-artifacts/ui/<browser>/`.
use frametap_e2e::{
    Case,
    api::Api,
    big_store::fill_store,
    netns::UPSTREAM_V4,
    peers::{ui_big_connection, ui_driver},
    ws::{ClientOptions, WsServer, read_echoes, spawn_client_on, unb64},
};
use serde_json::{Value, json};

const HOST: &str = "upstream.frametap.test";
const SENT: &str = "hello from the UI";

fn text(event: &Value) -> String {
    String::from_utf8(unb64(event["data"].as_str().unwrap())).unwrap()
}

#[test]
fn the_ui_shows_a_live_conversation_finds_sends_and_manages_rules_in_chromium() {
    scenario("chromium");
}

#[test]
fn the_ui_shows_a_live_conversation_finds_sends_and_manages_rules_in_firefox() {
    scenario("firefox");
}

/// Frames in the big connection: one-frame text messages numbered in their payload.
const BIG: u64 = 1_000_000;

#[test]
fn the_ui_opens_a_million_frame_connection_at_its_latest_and_pages_both_ways() {
    let data = tempfile::tempdir().unwrap();
    let ids = fill_store(&data.path().join("store"), 1, BIG).unwrap();
    let traffic = ids[0].to_string();
    let api = Api::start(data.path());
    api.wait_get(&format!("/api/websocket/{traffic}/count"), |c| {
        c["count"] == BIG
    });
    let shots = artifacts("chromium");
    let report = ui_big_connection("chromium", &api, &traffic, &shots);
    let seq = |id: &Value| {
        let id = id
            .as_str()
            .unwrap_or_else(|| panic!("an item id: {report}"));
        u64::from_str_radix(id.rsplit('-').next().unwrap(), 16).unwrap()
    };
    // Every step: the window in memory is contiguous (no gap where pages met) and
    // bounded, and the page draws a screenful of rows, not the window.
    for step in ["opened", "earlier", "earlier_again", "start", "latest"] {
        let at = &report[step];
        let window = &at["window"];
        let (first, last) = (seq(&window["first"]), seq(&window["last"]));
        assert_eq!(
            window["items"].as_u64().unwrap(),
            last - first + 1,
            "{step}: {report}"
        );
        assert!(
            window["items"].as_u64().unwrap() <= 50_000,
            "{step}: {report}"
        );
        let drawn = at["rowsDrawn"].as_u64().unwrap();
        assert!((10..100).contains(&drawn), "{step}: {report}");
        assert!(at["elements"].as_u64().unwrap() < 1000, "{step}: {report}");
    }
    // Opened following, on the latest messages: the last row is the last frame.
    assert_eq!(seq(&report["opened"]["window"]["last"]), BIG, "{report}");
    assert_eq!(report["opened"]["lastRowSeq"], BIG, "{report}");
    assert_eq!(report["opened"]["follow"], true, "{report}");
    // Scrolling to the top loaded the pages before, in front, twice.
    let opened_first = seq(&report["opened"]["window"]["first"]);
    assert_eq!(
        seq(&report["earlier"]["window"]["first"]),
        opened_first - 1000
    );
    assert_eq!(
        seq(&report["earlier_again"]["window"]["last"]),
        BIG,
        "{report}"
    );
    assert_eq!(report["earlier_again"]["follow"], false, "{report}");
    // The first messages, then the latest again.
    assert_eq!(report["start"]["firstRowSeq"], 1, "{report}");
    assert_eq!(seq(&report["start"]["window"]["first"]), 1);
    assert_eq!(seq(&report["latest"]["window"]["last"]), BIG, "{report}");
    assert_eq!(report["latest"]["lastRowSeq"], BIG, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    for shot in ["big-latest.png", "big-first.png"] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 1000, "no screenshot {shot}");
    }
}

/// Where a browser's screenshots go: `$CARGO_TARGET_DIR/test-artifacts/ui/<browser>/`.
fn artifacts(browser: &str) -> std::path::PathBuf {
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("..")
        .join("test-artifacts")
        .join("ui")
        .join(browser);
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

fn scenario(browser: &str) {
    let Some(case) = Case::new(&format!("ui-{browser}"))
        .ports("8443")
        .upstream_ca()
        .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
        .start()
    else {
        return;
    };
    let api = case.api();
    api.wait_get("/api/health", |h| {
        h["agent"]["up"] == true && h["events"]["connected"] == true
    });
    let ca = case.data_dir().join("ca.pem");
    let opts = ClientOptions {
        connect: &format!("{UPSTREAM_V4}:8443"),
        host: HOST,
        cafile: Some(&ca),
        deflate: false,
    };
    let script = json!([
        {"op": "text", "data": "message 1"},
        {"op": "text", "data": "message 2"},
        {"op": "text", "data": "message 3"},
        {"op": "recv"},
        {"op": "close", "code": 1000, "reason": "done"},
    ]);
    let mut client = spawn_client_on(&case.lab, Some(&case.cg), &opts, &script, "/ui");
    let echoes = read_echoes(&mut client, 3);
    assert_eq!(
        echoes.iter().map(text).collect::<Vec<_>>(),
        ["message 1", "message 2", "message 3"]
    );
    let list = api.wait_get("/api/traffic?protocol=wss", |v| {
        v["entries"].as_array().is_some_and(|e| !e.is_empty())
    });
    let traffic = list["entries"][0]["id"].as_str().unwrap().to_string();
    api.wait_get(&format!("/api/websocket/{traffic}/count"), |c| {
        c["count"] == 6
    });

    let shots = artifacts(browser);
    let ready_dir = tempfile::tempdir().unwrap();
    let ready = ready_dir.path().join("list-shown");
    // A second conversation once the page shows the list: it must appear there live.
    let report = std::thread::scope(|scope| {
        let second = scope.spawn(|| {
            let shown = frametap_e2e::wait_for(std::time::Duration::from_secs(30), || {
                ready.exists().then_some(())
            });
            shown?;
            let script = json!([{"op": "text", "data": "second"}, {"op": "close", "code": 1000, "reason": "done"}]);
            let client = spawn_client_on(&case.lab, Some(&case.cg), &opts, &script, "/second");
            Some(client.output())
        });
        let report = ui_driver(browser, &api, &traffic, SENT, &shots, &ready);
        let second = second.join().unwrap().expect("the page showed the list");
        assert!(
            second.status.success(),
            "{}",
            String::from_utf8_lossy(&second.stderr)
        );
        report
    });

    assert!(
        report["wrong_token"]
            .as_str()
            .unwrap()
            .contains("wrong API token"),
        "{report}"
    );
    let address = report["address"].as_str().unwrap();
    assert!(
        !address.contains("token"),
        "the token left the address bar: {address}"
    );
    assert!(address.ends_with("#/traffic"), "{address}");
    assert_eq!(report["live"], "live");
    assert_eq!(report["traffic_rows"], 1, "{report}");
    assert_eq!(report["live_rows"], 2, "{report}");
    assert_eq!(report["same_document"], true, "no reload: {report}");
    // Each view subscribes to the live events it shows, and to no others.
    assert_eq!(
        report["list_subscriptions"],
        json!([{"event": "traffic:batch"}]),
        "{report}"
    );
    assert_eq!(
        report["connection_subscriptions"],
        json!([
            {"event": "websocket:close", "trafficId": traffic},
            {"event": "websocket:message", "trafficId": traffic},
        ]),
        "{report}"
    );
    let messages: Vec<(bool, &str)> = report["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["up"].as_bool().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        messages,
        [
            (true, "message 1"),
            (false, "message 1"),
            (true, "message 2"),
            (false, "message 2"),
            (true, "message 3"),
            (false, "message 3"),
        ]
    );
    assert_eq!(report["state"], "open");
    assert_eq!(report["search"], "2 matches", "both directions: {report}");
    assert!(
        report["opened"].as_str().unwrap().contains("message 2"),
        "{report}"
    );
    assert!(
        report["sent"].as_str().unwrap().starts_with("sent: frame "),
        "{report}"
    );
    let sent_row = report["after_send"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["text"] == SENT)
        .cloned()
        .unwrap_or_default();
    assert_eq!(sent_row["up"], false, "{report}");
    assert_eq!(sent_row["flags"], json!(["injected"]), "{report}");
    assert!(
        report["replayed"]
            .as_str()
            .unwrap()
            .starts_with("replaying 3 messages: the new connection"),
        "{report}"
    );
    let replay_link = report["replay_link"].as_str().unwrap();
    let copy = replay_link.trim_start_matches("#/traffic/");
    assert_eq!(
        api.get(&format!("/api/traffic/{copy}"))["replayOf"],
        traffic.as_str()
    );
    // The page compares it with the original: the same messages both ways (the
    // message the page injected is frametap's, not the peers').
    assert!(
        report["compare_summary"]
            .as_str()
            .unwrap()
            .starts_with("The same: 6 same"),
        "{report}"
    );
    assert_eq!(report["compare_rows"], json!(vec!["same"; 6]), "{report}");
    assert!(
        report["bad_rule"].as_str().unwrap().contains("regex"),
        "the API's own words: {report}"
    );
    assert_eq!(report["rules_listed"], json!(["ui-rule"]));
    assert_eq!(report["rules_after_delete"], 0);
    assert_eq!(api.get("/api/rules")["rules"], json!([]));
    for view in ["signin", "traffic", "connection", "compare", "rules"] {
        let shot = shots.join(format!("{view}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "no screenshot {}", shot.display());
    }

    // The client got the message the page sent.
    let got = read_echoes(&mut client, 1);
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), [SENT]);
}
