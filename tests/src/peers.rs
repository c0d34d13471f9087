//! Servers in the upstream namespace and probe clients in the client namespace.
use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::Value;

use crate::{Lab, Spawned, TestCgroup, netns::Netns, workspace_bin};

/// An `ft-probe serve` in the upstream namespace, with its connection log.
pub struct Server {
    pub process: Spawned,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server on the upstream host.
    pub fn start(lab: &Lab, addr: &str, mode: &str, extra: &[&str]) -> Self {
        Self::start_in(&lab.upstream, addr, mode, extra)
    }

    /// A server in any namespace (e.g. on the client host's loopback).
    pub fn start_in(netns: &Netns, addr: &str, mode: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("server.log");
        let mut cmd = netns.command(workspace_bin("ft-probe"));
        cmd.args(["serve", addr, "--mode", mode, "--log"])
            .arg(&log)
            .args(extra)
            .stdout(Stdio::null());
        let process = Spawned::spawn("ft-probe serve", cmd);
        crate::wait_for(Duration::from_secs(5), || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("ready"))
        })
        .unwrap_or_else(|| panic!("server on {addr} did not start"));
        Self {
            process,
            log,
            _dir: dir,
        }
    }

    /// Connections the server has finished, as logged.
    pub fn connections(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "connection")
            .collect()
    }
}

/// One request/response with `ft-probe connect` from the client namespace,
/// inside `cgroup` (captured) or not.
pub fn probe(lab: &Lab, cgroup: Option<&TestCgroup>, addr: &str, send: &str) -> Value {
    let payload = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(payload.path(), send).expect("write payload");
    let mut cmd = lab.client_command(cgroup, workspace_bin("ft-probe"));
    cmd.args(["connect", addr, "--send-file"])
        .arg(payload.path())
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
