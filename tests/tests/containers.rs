//! End to end, as root: applications in network namespaces other than the agent's
//! (containers) are captured like host processes: made with `ip netns` and veth
//! here, and with Podman (a container runtime we did not write) below.
use std::{process::Stdio, time::Duration};

use frametap_e2e::{
    Agent, Lab, Spawned, TestCgroup,
    netns::{NAMESPACED_V4, Namespaced, UPSTREAM_V4},
    peers::Server,
    require_root, serial, wait_for, workspace_bin,
};
use serde_json::Value;

/// `ft-probe connect` from inside `ns` (in `cgroup` when given): its JSON report.
fn probe_in(ns: &Namespaced, cgroup: Option<&TestCgroup>, addr: &str, send: &str) -> Value {
    let mut cmd = ns.command(cgroup, workspace_bin("ft-probe"));
    cmd.args(["connect", addr, "--send", send])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Spawned::spawn("ft-probe connect", cmd).output();
    assert!(
        out.status.success(),
        "ft-probe connect failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe prints JSON")
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
    if !require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::new();
    let cg = TestCgroup::new("netns");
    let server = Server::start(&lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
    let ns = lab.namespaced(true);
    let agent = Agent::start(&lab, &["--cgroup", &cg.relative, "--ports", "8080"]);
    let addr = format!("{UPSTREAM_V4}:8080");

    // A process of the captured cgroup lives in the namespace: the agent's scan
    // finds it and listens there before the application's first connect.
    let mut holder = ns.command(Some(&cg), "sleep");
    holder.arg("60");
    let holder = Spawned::spawn("sleep", holder);
    let serving = wait_logged(&agent, SERVING, 1);
    assert_eq!(serving[0]["cgroup"], format!("/{}", cg.relative), "{serving:?}");

    let reply = probe_in(&ns, Some(&cg), &addr, "from a container");
    assert_eq!(reply["reply"], "echo from a container", "{reply}");
    assert_eq!(reply["peer"], addr, "getpeername() is the original destination");
    let c = &agent.wait_connections(1)[0];
    assert_eq!((&c["original_dst"], &c["end"]), (&Value::from(addr.clone()), &Value::from("closed")));
    assert_eq!(c["cgroup"], format!("/{}", cg.relative), "{c}");
    assert_eq!(c["netns"], serving[0]["netns"], "{c}");
    // The agent's own connection left from inside the namespace: its routes, its
    // address.
    let served = server.connections();
    let peer = served[0]["peer"].as_str().unwrap();
    assert!(peer.starts_with(&format!("{NAMESPACED_V4}:")), "{served:?}");

    // Not in the captured cgroup: direct, even from the same namespace.
    let direct = probe_in(&ns, None, &addr, "not selected");
    assert_eq!(direct["reply"], "echo not selected");
    assert!(direct["local"].as_str().unwrap().starts_with(NAMESPACED_V4), "{direct}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(agent.connections().len(), 1);

    // The namespace goes away: the agent stops serving it by itself.
    drop(holder);
    drop(ns);
    let stopped = wait_logged(&agent, STOPPED, 1);
    assert_eq!(stopped[0]["netns"], serving[0]["netns"]);
}

#[test]
fn a_namespace_without_loopback_is_left_alone_and_its_connections_go_direct() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::new();
    let cg = TestCgroup::new("netns-nolo");
    let _server = Server::start(&lab, &format!("{UPSTREAM_V4}:8080"), "echo", &[]);
    let ns = lab.namespaced(false);
    let agent = Agent::start(&lab, &["--cgroup", &cg.relative, "--ports", "8080"]);
    let addr = format!("{UPSTREAM_V4}:8080");
    for n in 0..3 {
        let reply = probe_in(&ns, Some(&cg), &addr, &format!("direct {n}"));
        assert_eq!(reply["reply"], format!("echo direct {n}"), "{reply}");
    }
    let refused = wait_logged(
        &agent,
        "cannot capture in this network namespace: its connections go direct",
        1,
    );
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("loopback"),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        logged(&agent, "cannot capture in this network namespace: its connections go direct").len(),
        1,
        "logged once"
    );
    assert!(agent.connections().is_empty());
}
