//! End to end, as root: the eBPF redirect and the agent's relay, with real peers in
//! network namespaces. Each test builds its own lab and cleans it up on drop.
use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use frametap_e2e::{
    Agent, Case, Lab, TestCgroup,
    case::CaseBuilder,
    frametap_program_ids,
    netns::{UPSTREAM_V4, UPSTREAM_V6},
    original_map_entries, original_map_ids,
    peers::{Server, probe},
    pki::TestPki,
    wait_for, workspace_bin,
};
use serde_json::{Value, json};

fn assert_echo(reply: &Value, sent: &str) {
    assert_eq!(reply["error"], Value::Null, "probe failed: {reply}");
    assert_eq!(reply["reply"], format!("echo {sent}"), "{reply}");
}

/// A case whose agent captures port 8080, with `ft-probe serve` in `mode` on the
/// upstream host's port 8080.
fn on_8080(tag: &str, mode: &'static str) -> CaseBuilder<impl FnOnce(&Lab, &TestPki) -> Server> {
    Case::new(tag)
        .ports("8080")
        .server(move |lab, _| Server::start(lab, &format!("{UPSTREAM_V4}:8080"), mode, &[]))
}

#[test]
fn captured_connection_is_relayed_transparently() {
    let Some(prepared) = on_8080("v4", "echo").prepare() else {
        return;
    };
    let maps_before = original_map_ids();
    let case = prepared.start();
    let maps: Vec<u32> = original_map_ids()
        .into_iter()
        .filter(|id| !maps_before.contains(id))
        .collect();
    assert_eq!(maps.len(), 2, "the agent's cookie and client maps");

    let reply = probe(
        &case.lab,
        Some(&case.cg),
        &format!("{UPSTREAM_V4}:8080"),
        "hello upstream",
    );
    assert_echo(&reply, "hello upstream");
    // The application sees the original destination, not the agent.
    assert_eq!(reply["peer"], format!("{UPSTREAM_V4}:8080"));

    let served = case.server.connections();
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["result"]["received"], "hello upstream");

    let conns = case.agent.wait_connections(1);
    assert_eq!(conns.len(), 1, "{conns:?}");
    let c = &conns[0];
    assert_eq!(c["original_dst"], format!("{UPSTREAM_V4}:8080"));
    assert_eq!(
        c["client"], reply["local"],
        "agent saw the client's own endpoint"
    );
    assert_eq!(c["comm"], "ft-probe");
    assert!(c["pid"].as_u64().unwrap() > 0);
    assert_eq!(c["bytes_up"], "hello upstream".len());
    assert_eq!(c["bytes_down"], "echo hello upstream".len());
    assert_eq!(c["end"], "closed");

    // The connection is over: both map entries are gone again.
    let emptied = wait_for(Duration::from_secs(2), || {
        maps.iter()
            .all(|&id| original_map_entries(id) == 0)
            .then_some(())
    });
    assert!(
        emptied.is_some(),
        "map entries left after the connection closed"
    );
}

/// What `duration_ms` holds in a log line: milliseconds with at most two decimals.
fn assert_rounded_millis(value: &str) {
    let (whole, decimals) = value.split_once('.').unwrap_or((value, ""));
    assert!(
        !whole.is_empty()
            && whole.chars().all(|c| c.is_ascii_digit())
            && decimals.len() <= 2
            && decimals.chars().all(|c| c.is_ascii_digit()),
        "duration_ms={value}"
    );
}

#[test]
fn logs_in_a_file_have_no_colour_codes_and_rounded_durations() {
    // Agents of the test's own: one with text logs, then one with JSON logs.
    let Some(setup) = on_8080("logs", "echo").prepare() else {
        return;
    };
    let dst = format!("{UPSTREAM_V4}:8080");

    let mut agent = Agent::start_with_text_logs(&setup.lab, &setup.agent_args());
    assert_echo(&probe(&setup.lab, Some(&setup.cg), &dst, "plain"), "plain");
    let closed = wait_for(Duration::from_secs(5), || {
        let text = agent.log_text();
        text.lines()
            .find(|l| l.contains("connection closed"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no connection logged:\n{}", agent.log_text()));
    agent.stop();
    let text = agent.log_text();
    assert!(text.contains("detached"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text}"
    );
    let duration = closed
        .split_whitespace()
        .find_map(|field| field.strip_prefix("duration_ms="))
        .unwrap_or_else(|| panic!("no duration_ms in {closed:?}"));
    assert_rounded_millis(duration);

    // JSON logs: the duration is a number, rounded the same way.
    let agent = Agent::start(&setup.lab, &setup.agent_args());
    assert_echo(&probe(&setup.lab, Some(&setup.cg), &dst, "json"), "json");
    let c = &agent.wait_connections(1)[0];
    assert!(c["duration_ms"].is_number(), "{c}");
    assert_rounded_millis(&c["duration_ms"].to_string());
    assert!(!agent.log_text().contains('\x1b'));
}

#[test]
fn bulk_data_arrives_byte_identical() {
    let Some(case) = on_8080("bulk", "echo").start() else {
        return;
    };
    // 200 KB of varied text through the relay and back.
    let payload: String = (0..20_000)
        .map(|i| format!("{:09}|", i * 7919 % 1_000_003))
        .collect();
    let reply = probe(
        &case.lab,
        Some(&case.cg),
        &format!("{UPSTREAM_V4}:8080"),
        &payload,
    );
    assert_echo(&reply, &payload);
    let c = &case.agent.wait_connections(1)[0];
    assert_eq!(c["bytes_up"], payload.len());
    assert_eq!(case.server.connections()[0]["result"]["received"], payload);
}

#[test]
fn curl_reaches_a_python_http_server() {
    let Some(case) = Case::new("curl")
        .ports("80")
        .server(|lab, _| {
            let root = tempfile::tempdir().unwrap();
            std::fs::write(root.path().join("index.html"), "frametap says hi\n").unwrap();
            let mut py = lab.upstream.command("python3");
            py.args(["-m", "http.server", "80", "--bind", UPSTREAM_V4])
                .current_dir(root.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            let py = frametap_e2e::Spawned::spawn("python3 http.server", py);
            (py, root)
        })
        .start()
    else {
        return;
    };
    // Wait until the server listens, from outside the cgroup (not captured).
    let url = format!("http://{UPSTREAM_V4}/index.html");
    let curl = |captured: bool| {
        let mut c = case
            .lab
            .client_command(captured.then_some(&case.cg), "curl");
        c.args([
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{remote_ip}:%{remote_port}",
            &url,
        ]);
        c.output().expect("curl")
    };
    wait_for(Duration::from_secs(5), || {
        curl(false).status.success().then_some(())
    })
    .expect("python http.server did not come up");
    let out = curl(true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, format!("frametap says hi\n\n200 {UPSTREAM_V4}:80"));
    let conns = case.agent.wait_connections(1);
    assert_eq!(
        conns.len(),
        1,
        "only the captured curl went through the agent"
    );
    assert_eq!(conns[0]["comm"], "curl");
    assert_eq!(conns[0]["original_dst"], format!("{UPSTREAM_V4}:80"));
}

#[test]
fn uncaptured_cgroup_port_and_excluded_cidr_go_direct() {
    let Some(case) = Case::new("sel")
        .ports("8080")
        .args(&["--exclude", "fd77::2/128"])
        .server(|lab, _| {
            let s80 = Server::start(lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
            let s81 = Server::start(lab, &format!("{UPSTREAM_V4}:8081"), "echo", &[]);
            let s6 = Server::start(lab, &format!("[{UPSTREAM_V6}]:8080"), "echo", &[]);
            (s6, s81, s80)
        })
        .start()
    else {
        return;
    };
    // Outside the cgroup: direct.
    assert_echo(
        &probe(&case.lab, None, &format!("{UPSTREAM_V4}:8080"), "outside"),
        "outside",
    );
    // Port not selected: direct.
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8081"),
            "port",
        ),
        "port",
    );
    // Excluded destination: direct.
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("[{UPSTREAM_V6}]:8080"),
            "excl",
        ),
        "excl",
    );
    // And the control: captured.
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8080"),
            "in",
        ),
        "in",
    );
    let conns = case.agent.wait_connections(1);
    std::thread::sleep(Duration::from_millis(200));
    let conns_after = case.agent.connections();
    assert_eq!(
        conns_after.len(),
        1,
        "only the control went through the agent: {conns_after:?}"
    );
    assert_eq!(conns[0]["bytes_up"], 2);

    // An excluded IPv4 network, in a second agent run.
    drop(case.agent);
    let agent = Agent::start(
        &case.lab,
        &[
            "--cgroup",
            &case.cg.relative,
            "--ports",
            "8080",
            "--exclude",
            "10.77.0.0/16",
        ],
    );
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8080"),
            "ex4",
        ),
        "ex4",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(agent.connections().is_empty(), "{}", agent.log_text());
}

/// An endpoint as printed by the probe or the server, IPv4-mapped ones as IPv4.
fn endpoint(text: &Value) -> SocketAddr {
    let addr: SocketAddr = text
        .as_str()
        .expect("an endpoint")
        .parse()
        .expect("endpoint");
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

#[test]
fn include_captures_only_its_networks_and_exclude_still_wins() {
    let Some(case) = Case::new("incl")
        .ports("8080")
        .args(&[
            // Comma lists and repeated flags both work.
            "--include",
            "10.77.0.0/25,fd77::/120",
            "--exclude",
            "10.77.0.3",
            "--exclude",
            "fd77::3",
        ])
        .server(|lab, _| {
            // Upstream addresses inside and outside the included networks.
            for extra in [
                "10.77.0.3/24",
                "10.77.0.130/24",
                "fd77::3/64",
                "fd77::1:2/64",
            ] {
                lab.add_upstream_address(extra);
            }
            [
                UPSTREAM_V4,
                "10.77.0.3",
                "10.77.0.130",
                "[fd77::2]",
                "[fd77::3]",
                "[fd77::1:2]",
            ]
            .into_iter()
            .map(|host| {
                (
                    host,
                    Server::start(lab, &format!("{host}:8080"), "echo", &[]),
                )
            })
            .collect::<Vec<(&str, Server)>>()
        })
        .start()
    else {
        return;
    };
    let servers = &case.server;
    let server_of = |dst: &str| {
        let ip = endpoint(&Value::from(dst)).ip();
        &servers
            .iter()
            .find(|(host, _)| host.trim_matches(['[', ']']).parse::<IpAddr>() == Ok(ip))
            .unwrap_or_else(|| panic!("no server for {dst}"))
            .1
    };
    let cases = [
        (format!("{UPSTREAM_V4}:8080"), true),
        (format!("[::ffff:{UPSTREAM_V4}]:8080"), true),
        ("[fd77::2]:8080".to_string(), true),
        // Outside every included network.
        ("10.77.0.130:8080".to_string(), false),
        ("[::ffff:10.77.0.130]:8080".to_string(), false),
        ("[fd77::1:2]:8080".to_string(), false),
        // Inside an included network, but excluded.
        ("10.77.0.3:8080".to_string(), false),
        ("[::ffff:10.77.0.3]:8080".to_string(), false),
        ("[fd77::3]:8080".to_string(), false),
    ];
    let mut captured = Vec::new();
    for (i, (dst, expect_captured)) in cases.iter().enumerate() {
        let payload = format!("case {i}");
        let reply = probe(&case.lab, Some(&case.cg), dst, &payload);
        assert_echo(&reply, &payload);
        let seen = server_of(dst)
            .connections()
            .into_iter()
            .find(|c| c["result"]["received"] == payload.as_str())
            .unwrap_or_else(|| panic!("{dst}: the server did not get {payload:?}"));
        // Direct: the server saw the probe's own endpoint. Captured: the agent's.
        let direct = endpoint(&seen["peer"]) == endpoint(&reply["local"]);
        assert_eq!(!direct, *expect_captured, "{dst}: {reply} vs {seen}");
        if *expect_captured {
            captured.push((dst.clone(), endpoint(&reply["local"])));
        }
    }
    // The agent relayed exactly the captured ones (workers may log them in any order).
    let conns = case.agent.wait_connections(captured.len());
    let mut relayed: Vec<SocketAddr> = conns.iter().map(|c| endpoint(&c["client"])).collect();
    let mut expected: Vec<SocketAddr> = captured.iter().map(|(_, client)| *client).collect();
    relayed.sort();
    expected.sort();
    assert_eq!(relayed, expected, "{captured:?}\n{conns:?}");
}

#[test]
fn ipv6_and_ipv4_mapped_connections_are_captured() {
    let Some(case) = Case::new("v6")
        .ports("8443")
        .server(|lab, _| {
            let s4 = Server::start(lab, &format!("{UPSTREAM_V4}:8443"), "echo", &[]);
            let s6 = Server::start(lab, &format!("[{UPSTREAM_V6}]:8443"), "echo", &[]);
            (s6, s4)
        })
        .start()
    else {
        return;
    };

    let v6 = probe(
        &case.lab,
        Some(&case.cg),
        &format!("[{UPSTREAM_V6}]:8443"),
        "six",
    );
    assert_echo(&v6, "six");
    assert_eq!(v6["peer"], format!("[{UPSTREAM_V6}]:8443"));

    // A dual-stack (AF_INET6) socket connecting to an IPv4-mapped address.
    let mapped = probe(
        &case.lab,
        Some(&case.cg),
        &format!("[::ffff:{UPSTREAM_V4}]:8443"),
        "mapped",
    );
    assert_echo(&mapped, "mapped");
    assert_eq!(mapped["peer"], format!("[::ffff:{UPSTREAM_V4}]:8443"));

    let conns = case.agent.wait_connections(2);
    let dsts: Vec<_> = conns
        .iter()
        .map(|c| c["original_dst"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        dsts,
        vec![
            format!("[{UPSTREAM_V6}]:8443"),
            format!("{UPSTREAM_V4}:8443")
        ]
    );
}

#[test]
fn host_wide_mode_captures_without_looping() {
    // --cgroup / : the agent itself is inside the captured tree.
    let Some(case) = Case::new("host-wide")
        .host_wide()
        .ports("8090")
        .server(|lab, _| Server::start(lab, &format!("{UPSTREAM_V4}:8090"), "echo", &[]))
        .start()
    else {
        return;
    };
    let reply = probe(
        &case.lab,
        None,
        &format!("{UPSTREAM_V4}:8090"),
        "everywhere",
    );
    assert_echo(&reply, "everywhere");
    let conns = case.agent.wait_connections(1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        case.agent.connections().len(),
        1,
        "the agent's own upstream connect was not captured: {conns:?}"
    );
    assert_eq!(case.server.connections().len(), 1);
}

#[test]
fn sigkill_of_the_agent_fails_open_within_a_second() {
    let Some(prepared) = on_8080("kill", "echo").prepare() else {
        return;
    };
    let before = frametap_program_ids();
    let mut case = prepared.start();
    let ours: Vec<u32> = frametap_program_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(
        ours.len(),
        5,
        "connect4/6, getpeername4/6 and sock_ops are loaded"
    );
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8080"),
            "one",
        ),
        "one",
    );

    case.agent.process.signal(libc::SIGKILL);
    case.agent
        .process
        .wait_timeout(Duration::from_secs(5))
        .expect("agent died");
    let gone = wait_for(Duration::from_secs(1), || {
        let now = frametap_program_ids();
        ours.iter().all(|id| !now.contains(id)).then_some(())
    });
    assert!(
        gone.is_some(),
        "programs still loaded a second after SIGKILL"
    );
    let reply = probe(
        &case.lab,
        Some(&case.cg),
        &format!("{UPSTREAM_V4}:8080"),
        "direct",
    );
    assert_echo(&reply, "direct");
    assert_eq!(case.server.connections().len(), 2);
}

#[test]
fn clean_shutdown_detaches_everything() {
    let Some(prepared) = on_8080("term", "echo").prepare() else {
        return;
    };
    let before = frametap_program_ids();
    let mut case = prepared.start();
    let ours: Vec<u32> = frametap_program_ids()
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8080"),
            "x",
        ),
        "x",
    );
    let status = case.agent.stop();
    assert!(
        status.success(),
        "clean exit: {status}\n{}",
        case.agent.log_text()
    );
    let now = frametap_program_ids();
    assert!(
        ours.iter().all(|id| !now.contains(id)),
        "programs left loaded"
    );
    // Nothing pinned anywhere under bpffs.
    let pinned = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains("frametap"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(pinned, 0);
    assert!(case.agent.log_text().contains("detached"));
    assert_echo(
        &probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8080"),
            "after",
        ),
        "after",
    );
}

#[test]
fn upstream_refusal_resets_the_client() {
    // Nothing listens on 8080 upstream.
    let Some(case) = Case::new("refuse").ports("8080").start() else {
        return;
    };
    let reply = probe(
        &case.lab,
        Some(&case.cg),
        &format!("{UPSTREAM_V4}:8080"),
        "anyone?",
    );
    assert_eq!(reply["kind"], "ConnectionReset", "{reply}");
    let c = &case.agent.wait_connections(1)[0];
    assert_eq!(c["end"], "upstream connect failed");
    assert!(c["error"].as_str().unwrap().contains("refused"), "{c}");
}

#[test]
fn a_connection_left_half_open_and_silent_is_closed_after_the_half_open_timeout() {
    // The server reads to EOF and then neither answers nor closes; the probe gives
    // up by itself after 10 s (a read timeout, an error).
    let Some(case) = on_8080("halfopen", "silent")
        .args(&["--half-open-timeout", "2"])
        .start()
    else {
        return;
    };
    // Relayed untouched (not HTTP), then watched as HTTP: both are closed by frametap.
    for (n, send) in [(1, "hello"), (2, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")] {
        let reply = probe(
            &case.lab,
            Some(&case.cg),
            &format!("{UPSTREAM_V4}:8080"),
            send,
        );
        assert_eq!(
            reply["reply"], "",
            "the client sees a FIN, not its own timeout: {reply}"
        );
        let c = &case.agent.wait_connections(n)[n - 1];
        assert_eq!(c["end"], "half-open timeout", "{c}");
    }
    let api = case.api();
    let list = api.wait_get("/api/traffic?protocol=http", |v| {
        v["entries"][0].is_object()
    });
    let entry = &list["entries"][0];
    let why = entry["error"].as_str().unwrap_or_default();
    assert!(why.contains("--half-open-timeout"), "{entry}");
}

/// The `exec` command line the agent suggested at start, up to its ` -- `. It is
/// logged just after the agent says what it captures, which is when the test may
/// already be looking: wait for it.
fn exec_hint_prefix(agent: &Agent) -> String {
    let hint = || {
        agent.logs().into_iter().find_map(|v| {
            v["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("to capture one command: "))
                .map(str::to_string)
        })
    };
    let line = frametap_e2e::wait_for(std::time::Duration::from_secs(10), hint)
        .unwrap_or_else(|| panic!("no exec hint logged:\n{}", agent.log_text()));
    let (prefix, _) = line.split_once(" -- ").expect("hint has a command");
    prefix.to_string()
}

#[test]
fn exec_runs_a_command_captured_and_returns_its_status() {
    // The agent's data dir is a temporary one, not the default that exec once read.
    let Some(case) = on_8080("exec", "echo").start() else {
        return;
    };
    // Run the agent's own suggestion, as printed, through a shell.
    let prefix = exec_hint_prefix(&case.agent);
    assert!(prefix.contains(&case.cg.relative), "{prefix}");
    let exec = |command: &str| {
        let mut c = case.lab.client_command(None, "sh");
        c.args(["-c", &format!("{prefix} -- {command}")]);
        c.output().expect("exec")
    };
    let out = exec("sh -c 'exit 7'");
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("WARN"),
        "a captured cgroup got a warning:\n{stderr}"
    );

    let probe_bin = workspace_bin("ft-probe");
    let out = exec(&format!(
        "{} connect {UPSTREAM_V4}:8080 --send 'via exec'",
        probe_bin.display()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("WARN"),
        "a captured cgroup got a warning:\n{stderr}"
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_echo(&reply, "via exec");
    let conns = case.agent.wait_connections(1);
    assert_eq!(conns[0]["comm"], "ft-probe");
    assert_eq!(conns[0]["client"], reply["local"]);
    // The per-command child cgroup is gone again.
    let leftovers = std::fs::read_dir(&case.cg.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("exec-"))
        .count();
    assert_eq!(leftovers, 0);

    // The old --data-dir flag still parses, says it is not needed, and changes nothing.
    let mut c = case
        .lab
        .client_command(None, workspace_bin("frametap-agent"));
    c.args([
        "exec",
        "--cgroup",
        &case.cg.relative,
        "--data-dir",
        "/nonexistent",
    ])
    .args(["--", "true"]);
    let out = c.output().expect("exec");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--data-dir is ignored"), "{stderr}");
    assert!(!stderr.contains("uncaptured"), "{stderr}");
}

#[test]
fn exec_warns_only_when_its_cgroup_is_not_captured() {
    // The case's cgroup is served; another one is not.
    let Some(case) = Case::new("served")
        .ports("8080")
        .server(|lab, _| {
            let other = TestCgroup::new("other");
            let server = Server::start(lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
            (server, other)
        })
        .start()
    else {
        return;
    };
    let (server, other) = &case.server;
    let mut c = case
        .lab
        .client_command(None, workspace_bin("frametap-agent"));
    c.args(["exec", "--cgroup", &other.relative, "--"])
        .arg(workspace_bin("ft-probe"))
        .args([
            "connect",
            &format!("{UPSTREAM_V4}:8080"),
            "--send",
            "elsewhere",
        ]);
    let out = c.output().expect("exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the command runs uncaptured"), "{stderr}");
    // It says where the agent does capture, with the ports.
    assert!(
        stderr.contains("Captured cgroups: ")
            && stderr.contains(&format!("{} (ports 8080)", case.cg.relative)),
        "{stderr}"
    );
    // And it was right: the connection went direct (the server saw the probe itself).
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_echo(&reply, "elsewhere");
    let seen = server.connections();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["peer"], reply["local"]);
    assert!(
        case.agent.connections().is_empty(),
        "{}",
        case.agent.log_text()
    );
}

#[test]
fn startup_errors_are_clear_and_attach_nothing() {
    // No agent of the case's own: starts that fail.
    let Some(setup) = Case::new("err").prepare() else {
        return;
    };
    let before = frametap_program_ids();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--ports".into(), "0".into()], "not a TCP port"),
        (vec!["--ports".into(), "http".into()], "not a TCP port"),
        (vec!["--exclude".into(), "10.0.0.0/33".into()], "not a CIDR"),
        (
            vec!["--include".into(), "10.0.0.0/8,nope".into()],
            "not a CIDR",
        ),
        (
            vec!["--cgroup".into(), "no/such/cgroup".into()],
            "does not exist",
        ),
        (vec!["--listen".into(), "0.0.0.0:15001".into()], "loopback"),
    ];
    for (args, expected) in cases {
        let mut all: Vec<&str> = vec!["--cgroup", &setup.cg.relative];
        all.extend(args.iter().map(String::as_str));
        let Err(f) = Agent::try_start(&setup.lab, &all) else {
            panic!("agent started with {args:?}");
        };
        assert_eq!(
            f.status.code(),
            Some(
                if expected.contains("TCP port") || expected.contains("CIDR") {
                    2
                } else {
                    1
                }
            ),
            "{args:?}: {}",
            f.stderr
        );
        assert!(
            f.stderr.contains(expected),
            "{args:?}: expected {expected:?} in:\n{}",
            f.stderr
        );
    }
    // Listen address in use.
    let blocker = setup.lab.client_command(None, "python3")
        .args(["-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',15001)); s.listen(); print('up',flush=True); time.sleep(30)"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut blocker = frametap_e2e::Spawned {
        child: Some(blocker),
        name: "blocker".into(),
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(blocker.child.as_mut().unwrap().stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let Err(f) = Agent::try_start(&setup.lab, &["--cgroup", &setup.cg.relative]) else {
        panic!("agent started although the listen port is taken");
    };
    assert!(
        f.stderr.contains("cannot listen on 127.0.0.1:15001"),
        "{}",
        f.stderr
    );
    drop(blocker);

    // Not root: an unprivileged user.
    let mut cmd = setup.lab.client_command(None, "setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(workspace_bin("frametap-agent"))
    .args([
        "serve",
        "--cgroup",
        &setup.cg.relative,
        "--data-dir",
        "/tmp/ft-nonroot",
    ]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");

    let after = frametap_program_ids();
    assert!(
        after.iter().all(|id| before.contains(id)),
        "a failed start left programs loaded"
    );
}

#[test]
fn out_of_file_descriptors_new_connections_go_direct_and_none_breaks() {
    let Some(mut case) = on_8080("fds", "pingpong").start() else {
        return;
    };
    let addr = format!("{UPSTREAM_V4}:8080");
    // Room for a few dozen connections besides what the agent holds already (its
    // store, maps, programs, listeners): far fewer than 150 held connections need.
    let open = std::fs::read_dir(format!("/proc/{}/fd", case.agent.pid()))
        .unwrap()
        .count();
    let limit = open + 200;
    let limited = Command::new("prlimit")
        .arg(format!("--pid={}", case.agent.pid()))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(limited.success());
    let hold = |count: usize| -> Value {
        let out = case
            .lab
            .client_command(Some(&case.cg), workspace_bin("ft-probe"))
            .args(["hold", &addr, "--count", &count.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Every connection works: those the agent could not take went direct.
    let held = hold(150);
    assert_eq!(
        held,
        json!({"ok": 150, "errors": []}),
        "limit {limit}, {open} open before\n{}",
        case.agent.log_text()
    );
    let warned = |text: &str| {
        case.agent
            .logs()
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m.contains(text)))
    };
    // The watcher logs the pause at its next count (every 100 ms).
    wait_for(Duration::from_secs(10), || {
        warned("new connections go direct").then_some(())
    })
    .unwrap_or_else(|| panic!("no pause was logged:\n{}", case.agent.log_text()));
    // Once they closed, new connections are captured again.
    wait_for(Duration::from_secs(10), || {
        warned("new connections are captured again").then_some(())
    })
    .unwrap_or_else(|| panic!("capturing did not resume:\n{}", case.agent.log_text()));
    let captured_before = case.agent.connections().len();
    assert!(
        captured_before < 150,
        "{captured_before} of 150 were captured with {limit} descriptors ({open} in use before)"
    );
    assert_eq!(hold(1), json!({"ok": 1, "errors": []}));
    case.agent.wait_connections(captured_before + 1);
    assert!(case.agent.stop().success());
    let skipped = case
        .agent
        .logs()
        .iter()
        .find(|l| l["counter"] == "skipped_paused")
        .and_then(|l| l["value"].as_u64());
    assert!(skipped.is_some_and(|n| n > 0), "{skipped:?}");
}
