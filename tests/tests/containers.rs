//! End to end, as root: applications in network namespaces other than the agent's
//! (containers) are captured like host processes: made with `ip netns` and veth
//! here, and with Podman (a container runtime we did not write) below.
use std::{process::Stdio, time::Duration};

use frametap_e2e::{
    Agent, Case, Spawned, TestCgroup,
    netns::{NAMESPACED_V4, Namespaced, UPSTREAM_V4},
    peers::Server,
    require_root, serial, wait_for, workspace_bin,
};
use serde_json::Value;

/// `ft-probe connect` from inside `ns` (in `cgroup` when given): its JSON report.
fn probe_in(ns: &Namespaced, cgroup: Option<&TestCgroup>, addr: &str, send: &str) -> Value {
    frametap_e2e::peers::probe_from(ns.command(cgroup, workspace_bin("ft-probe")), addr, send)
}

/// The agent's log lines with this message.
fn logged(agent: &Agent, message: &str) -> Vec<Value> {
    agent
        .logs()
        .into_iter()
        .filter(|v| v["message"] == message)
        .collect()
}

fn wait_logged(agent: &Agent, message: &str, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(10), || {
        let lines = logged(agent, message);
        (lines.len() >= n).then_some(lines)
    })
    .unwrap_or_else(|| panic!("agent never logged {message:?}:\n{}", agent.log_text()))
}

const SERVING: &str = "capturing in another network namespace";
const STOPPED: &str = "stopped capturing in a network namespace";

#[test]
fn an_application_in_another_network_namespace_is_captured_like_a_host_one() {
    // The application namespace goes right after the agent, then the server.
    let Some(case) = Case::new("netns")
        .ports("8080")
        .server(|lab, _| {
            let server = Server::start(lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
            (lab.namespaced(true), server)
        })
        .start()
    else {
        return;
    };
    let (ns, server) = (&case.server.0, &case.server.1);
    let addr = format!("{UPSTREAM_V4}:8080");

    // A process of the captured cgroup lives in the namespace: the agent's scan
    // finds it and listens there before the application's first connect.
    let mut holder = ns.command(Some(&case.cg), "sleep");
    holder.arg("60");
    let holder = Spawned::spawn("sleep", holder);
    let serving = wait_logged(&case.agent, SERVING, 1);
    assert_eq!(
        serving[0]["cgroup"],
        format!("/{}", case.cg.relative),
        "{serving:?}"
    );

    let reply = probe_in(ns, Some(&case.cg), &addr, "from a container");
    assert_eq!(reply["reply"], "echo from a container", "{reply}");
    assert_eq!(
        reply["peer"], addr,
        "getpeername() is the original destination"
    );
    let c = &case.agent.wait_connections(1)[0];
    assert_eq!(
        (&c["original_dst"], &c["end"]),
        (&Value::from(addr.clone()), &Value::from("closed"))
    );
    assert_eq!(c["cgroup"], format!("/{}", case.cg.relative), "{c}");
    assert_eq!(c["netns"], serving[0]["netns"], "{c}");
    // The agent's own connection left from inside the namespace: its routes, its
    // address.
    let served = server.connections();
    let peer = served[0]["peer"].as_str().unwrap();
    assert!(peer.starts_with(&format!("{NAMESPACED_V4}:")), "{served:?}");

    // Not in the captured cgroup: direct, even from the same namespace.
    let direct = probe_in(ns, None, &addr, "not selected");
    assert_eq!(direct["reply"], "echo not selected");
    assert!(
        direct["local"].as_str().unwrap().starts_with(NAMESPACED_V4),
        "{direct}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(case.agent.connections().len(), 1);

    // The namespace goes away: the agent stops serving it by itself.
    drop(holder);
    drop(case.server.0);
    let stopped = wait_logged(&case.agent, STOPPED, 1);
    assert_eq!(stopped[0]["netns"], serving[0]["netns"]);
}

#[test]
fn a_namespace_without_loopback_is_left_alone_and_its_connections_go_direct() {
    let Some(case) = Case::new("netns-nolo")
        .ports("8080")
        .server(|lab, _| {
            let server = Server::start(lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
            (lab.namespaced(false), server)
        })
        .start()
    else {
        return;
    };
    let ns = &case.server.0;
    let addr = format!("{UPSTREAM_V4}:8080");
    for n in 0..3 {
        let reply = probe_in(ns, Some(&case.cg), &addr, &format!("direct {n}"));
        assert_eq!(reply["reply"], format!("echo direct {n}"), "{reply}");
    }
    let refused = wait_logged(
        &case.agent,
        "cannot capture in this network namespace: its connections go direct",
        1,
    );
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("loopback"),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        logged(
            &case.agent,
            "cannot capture in this network namespace: its connections go direct"
        )
        .len(),
        1,
        "logged once"
    );
    assert!(case.agent.connections().is_empty());
    // Counted in the API's health.
    let api = case.api();
    let health = api.wait_get("/api/health", |h| h["agent"]["up"] == true);
    assert_eq!(health["agent"]["namespaces"]["refused"], 1, "{health}");
    assert_eq!(health["agent"]["namespaces"]["served"], 0, "{health}");
}

const HOST: &str = "podman.frametap.test";
const WSS_PORT: u16 = 18443;

/// A Python `websockets` client inside a Podman container talks wss to a server
/// on the host's side of Podman's bridge, selected by the container's cgroup: its
/// messages arrive byte for byte, it sees the original destination as its peer,
/// and the agent records every frame with the container's id.
#[test]
fn a_podman_container_selected_by_its_cgroup_is_captured_frame_by_frame() {
    use frametap_e2e::{
        api::Api,
        pki::TestPki,
        podman::{BRIDGE_HOST_V4, Container},
        ws::{WsServer, peer_script},
    };
    if !require_root() {
        return;
    }
    let _g = serial();
    let container = Container::start(&format!("ft-e2e-{}", std::process::id()), &["sleep", "300"]);
    let cgroup = container.cgroup();
    assert!(cgroup.contains(&container.id), "{cgroup}");
    let pki = TestPki::new(&[HOST, BRIDGE_HOST_V4]);
    let server = WsServer::start_on_host(BRIDGE_HOST_V4, WSS_PORT, Some(&pki), true);
    let ca = pki.ca.display().to_string();
    let agent = Agent::start_on_host(&[
        "--cgroup",
        &cgroup,
        "--ports",
        &WSS_PORT.to_string(),
        "--listen",
        "127.0.0.1:15071",
        "--upstream-ca",
        &ca,
    ]);
    let serving = wait_logged(&agent, SERVING, 1);
    assert_eq!(serving[0]["cgroup"], format!("/{cgroup}"));

    let agent_ca = agent.data_dir.path().join("ca.pem");
    let messages = ["hello from a container", "ünïcödé", &"x".repeat(70_000)];
    let mut script: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::json!({"op": "text", "data": m}))
        .collect();
    script.push(serde_json::json!({"op": "close", "code": 1000, "reason": "bye"}));
    let connect = format!("{BRIDGE_HOST_V4}:{WSS_PORT}");
    let peer = peer_script().display().to_string();
    let out = container.exec(&[
        "python3",
        &peer,
        "client",
        "--connect",
        &connect,
        "--host",
        HOST,
        "--cafile",
        &agent_ca.display().to_string(),
        "--print-peer",
        "--script",
        &Value::Array(script).to_string(),
    ]);
    assert!(
        out.status.success(),
        "client in the container: {}\nagent:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        events[0]["peer"], connect,
        "getpeername() inside the container"
    );
    let received: Vec<Vec<u8>> = server.received().into_iter().map(|(_, m)| m).collect();
    let sent: Vec<Vec<u8>> = messages.iter().map(|m| m.as_bytes().to_vec()).collect();
    assert_eq!(received, sent, "byte-identical at the server");

    // Recorded with the container's id, frame by frame, both directions.
    let c = &agent.wait_connections(1)[0];
    assert_eq!(c["container"], container.id.as_str(), "{c}");
    let api = Api::start(agent.data_dir.path());
    let short = &container.id[..12];
    let list = api.wait_get(&format!("/api/traffic?container={short}"), |v| {
        v["entries"].as_array().is_some_and(|e| e.len() == 1)
    });
    let entry = &list["entries"][0];
    assert_eq!(entry["protocol"], "wss");
    assert_eq!(entry["containerId"], container.id.as_str());
    assert_eq!(entry["cgroup"], format!("/{cgroup}"));
    let id = entry["id"].as_str().unwrap();
    let frames = api.get(&format!("/api/websocket/{id}/frames?limit=100"));
    let text = |direction: &str| -> Vec<Vec<u8>> {
        frames
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["direction"] == direction && f["opcode"] == 1)
            .map(|f| frametap_e2e::ws::unb64(f["data"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(text("client-to-server"), sent);
    assert_eq!(text("server-to-client"), sent, "the echoes");
    // Nothing of other containers or the host under this container's id.
    let none = api.get("/api/traffic?container=0000");
    assert_eq!(none["entries"], serde_json::json!([]));
}

/// Selected by name through Podman's API socket, before the container exists: the
/// agent captures it once it starts, and again (new id, new cgroup) after it was
/// replaced by another container of the same name. `frametap-agent containers`
/// lists it as captured.
#[test]
fn a_container_selected_by_name_is_captured_when_it_starts_and_restarts() {
    use frametap_e2e::{
        pki::TestPki,
        podman::{ApiService, BRIDGE_HOST_V4, Container},
        ws::{WsServer, peer_script},
    };
    if !require_root() {
        return;
    }
    let _g = serial();
    let _api = ApiService::start();
    let name = format!("ft-e2e-named-{}", std::process::id());
    let pki = TestPki::new(&[HOST, BRIDGE_HOST_V4]);
    // Started first, so that Podman's bridge (and its host address) exists.
    let first = Container::start(&name, &["sleep", "300"]);
    let _server = WsServer::start_on_host(BRIDGE_HOST_V4, WSS_PORT + 1, Some(&pki), false);
    drop(first);
    let ca = pki.ca.display().to_string();
    let agent = Agent::start_on_host(&[
        "--container",
        &name,
        "--ports",
        &(WSS_PORT + 1).to_string(),
        "--listen",
        "127.0.0.1:15072",
        "--upstream-ca",
        &ca,
    ]);
    let waiting = wait_logged(&agent, "not running: captured as soon as it starts", 1);
    assert_eq!(waiting[0]["container"], name.as_str());

    let agent_ca = agent.data_dir.path().join("ca.pem").display().to_string();
    let connect = format!("{BRIDGE_HOST_V4}:{}", WSS_PORT + 1);
    let peer = peer_script().display().to_string();
    let converse = |container: &Container, text: &str| {
        let script = serde_json::json!([{"op": "text", "data": text}, {"op": "close", "code": 1000, "reason": ""}]);
        let out = container.exec(&[
            "python3",
            &peer,
            "client",
            "--connect",
            &connect,
            "--host",
            HOST,
            "--cafile",
            &agent_ca,
            "--no-deflate",
            "--script",
            &script.to_string(),
        ]);
        assert!(
            out.status.success(),
            "client in {}: {}\nagent:\n{}",
            container.name,
            String::from_utf8_lossy(&out.stderr),
            agent.log_text()
        );
    };
    for round in 1..=2 {
        let container = Container::start(&name, &["sleep", "300"]);
        let capturing = wait_logged(&agent, "capturing container", round);
        assert_eq!(
            capturing[round - 1]["id"],
            container.id.as_str(),
            "{capturing:?}"
        );
        converse(&container, &format!("round {round}"));
        let c = &agent.wait_connections(round)[round - 1];
        assert_eq!(c["container"], container.id.as_str(), "{c}");
        assert_eq!(
            c["container_name"],
            name.as_str(),
            "named by the runtime: {c}"
        );
        if round == 1 {
            let list = std::process::Command::new(workspace_bin("frametap-agent"))
                .arg("containers")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&list.stdout);
            let line = text
                .lines()
                .find(|l| l.contains(&name))
                .unwrap_or_else(|| panic!("{name} not listed:\n{text}"));
            assert!(line.starts_with(&container.id[..12]), "{line}");
            assert!(line.contains(" yes "), "listed as captured: {line}");
        }
        drop(container);
        wait_logged(&agent, "no longer capturing container", round);
    }
}

/// The agent's threads, and what its open descriptors are (sockets, pipes and
/// namespaces by kind, files by path), from /proc.
fn threads_and_fds(agent: &Agent) -> (usize, Vec<String>) {
    let threads = std::fs::read_dir(format!("/proc/{}/task", agent.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| {
                    let t = t.display().to_string();
                    // socket:[inode] -> socket
                    t.split(":[").next().unwrap_or(&t).to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    (threads, fds)
}

/// 200 namespaces come and go, each served: listeners, threads, descriptors and
/// map entries all return to where they started.
#[test]
fn namespaces_that_come_and_go_leave_nothing_behind() {
    // One worker: what each thread sets up once (its namespace handle, its pipe
    // pool) is then all set up after the first rounds.
    let Some(prepared) = Case::new("netns-churn")
        .ports("8080")
        .args(&["--workers", "1"])
        .server(|lab, _| Server::start(lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]))
        .prepare()
    else {
        return;
    };
    let maps_before = frametap_e2e::netns_listener_map_ids();
    let case = prepared.start();
    let map = *frametap_e2e::netns_listener_map_ids()
        .iter()
        .find(|id| !maps_before.contains(id))
        .expect("the agent's NETNS_LISTENERS map");
    let addr = format!("{UPSTREAM_V4}:8080");
    // Measured after two rounds: what the first connections set up once (per-thread
    // namespace handles, pooled pipes) is not a leak.
    let mut before = None;
    const ROUNDS: usize = 200;
    for round in 1..=ROUNDS {
        if round == 3 {
            wait_logged(&case.agent, STOPPED, 2);
            before = Some(threads_and_fds(&case.agent));
        }
        let ns = case.lab.namespaced(true);
        // A connect from a namespace without a listener goes direct and announces
        // it; a short-lived process may be gone before the agent gets there, so its
        // next one announces again. Once served, connects are captured.
        let captured = wait_for(Duration::from_secs(5), || {
            let reply = probe_in(&ns, Some(&case.cg), &addr, "hello");
            assert_eq!(reply["reply"], "echo hello", "round {round}: {reply}");
            reply["local"]
                .as_str()
                .is_some_and(|l| l.starts_with("127.0.0.1:"))
                .then_some(())
        });
        assert!(
            captured.is_some(),
            "round {round}: never captured:\n{}",
            case.agent.log_text()
        );
        assert_eq!(logged(&case.agent, SERVING).len(), round);
        drop(ns);
    }
    let stopped = wait_for(Duration::from_secs(15), || {
        let n = logged(&case.agent, STOPPED).len();
        (n == ROUNDS).then_some(n)
    });
    assert_eq!(stopped, Some(ROUNDS), "{}", case.agent.log_text());
    assert_eq!(
        frametap_e2e::original_map_entries(map),
        0,
        "NETNS_LISTENERS entries left"
    );
    let (threads_before, fds_before) = before.expect("measured");
    let (threads, fds) = threads_and_fds(&case.agent);
    assert_eq!(threads, threads_before, "threads");
    // Sockets, pipes and namespaces as before; the store may have opened a table
    // file or two for the entries recorded.
    let kinds = |fds: &[String]| -> Vec<String> {
        fds.iter()
            .filter(|f| !f.ends_with(".sst") && !f.ends_with(".log"))
            .cloned()
            .collect()
    };
    assert_eq!(
        kinds(&fds),
        kinds(&fds_before),
        "descriptors other than the store's"
    );
    assert!(
        fds.len() <= fds_before.len() + 4,
        "descriptors: {fds_before:?} before, {fds:?} after"
    );
}

/// The agent dies while a namespace is served and a connection from it is open:
/// the namespace's next connection goes direct.
#[test]
fn after_a_sigkill_of_the_agent_namespaced_applications_go_direct() {
    let Some(mut case) = Case::new("netns-kill")
        .ports("8081")
        .server(|lab, _| {
            let server = Server::start(lab, &format!("{UPSTREAM_V4}:8081"), "pingpong", &[]);
            (lab.namespaced(true), server)
        })
        .start()
    else {
        return;
    };
    let ns = &case.server.0;
    let mut holder = ns.command(Some(&case.cg), "sleep");
    holder.arg("60");
    let _holder = Spawned::spawn("sleep", holder);
    wait_logged(&case.agent, SERVING, 1);
    // One connection open through the agent (ft-probe hold keeps it).
    let mut open = ns.command(Some(&case.cg), workspace_bin("ft-probe"));
    open.args(["hold", &format!("{UPSTREAM_V4}:8081"), "--count", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _open = Spawned::spawn("ft-probe hold", open);
    std::thread::sleep(Duration::from_millis(300));
    case.agent.process.signal(libc::SIGKILL);
    case.agent.process.wait_timeout(Duration::from_secs(5));
    let _server2 = Server::start(&case.lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
    let after = wait_for(Duration::from_secs(2), || {
        let r = probe_in(ns, Some(&case.cg), &format!("{UPSTREAM_V4}:8080"), "direct");
        (r["reply"] == "echo direct").then_some(r)
    })
    .expect("the namespace's connections work again");
    assert!(
        after["local"].as_str().unwrap().starts_with(NAMESPACED_V4),
        "direct: {after}"
    );
}

/// Host-wide mode (`--cgroup /`) captures processes of other namespaces too.
#[test]
fn host_wide_mode_captures_other_namespaces() {
    let Some(case) = Case::new("host-wide")
        .host_wide()
        .ports("8092")
        .server(|lab, _| {
            let server = Server::start(lab, &format!("{UPSTREAM_V4}:8092"), "echo", &[]);
            (lab.namespaced(true), server)
        })
        .start()
    else {
        return;
    };
    let ns = &case.server.0;
    let addr = format!("{UPSTREAM_V4}:8092");
    let captured = wait_for(Duration::from_secs(5), || {
        let r = probe_in(ns, None, &addr, "anywhere");
        assert_eq!(r["reply"], "echo anywhere", "{r}");
        r["local"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
            .then_some(r)
    });
    assert!(
        captured.is_some(),
        "never captured:\n{}",
        case.agent.log_text()
    );
    let inode = std::fs::metadata(format!("/var/run/netns/{}", ns.netns.name))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let conns = case.agent.wait_connections(1);
    assert!(conns.iter().any(|c| c["netns"] == inode), "{conns:?}");
}
