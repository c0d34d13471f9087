//! The Python `websockets` peers (tests/peers/ws_peer.py) run from the lab.
use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine as _;
use serde_json::Value;

use crate::{Lab, Spawned, TestCgroup, pki::TestPki};

pub fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ws_peer.py")
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// A WebSocket echo server in the upstream namespace.
pub struct WsServer {
    pub process: Spawned,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WsServer {
    pub fn start(lab: &Lab, host: &str, port: u16, pki: Option<&TestPki>, deflate: bool) -> Self {
        Self::start_from(lab.upstream.command("python3"), host, port, pki, deflate)
    }

    /// A server in the test's own network namespace (the host's), e.g. on the
    /// address of Podman's bridge, for containers to reach.
    pub fn start_on_host(host: &str, port: u16, pki: Option<&TestPki>, deflate: bool) -> Self {
        Self::start_from(
            std::process::Command::new("python3"),
            host,
            port,
            pki,
            deflate,
        )
    }

    fn start_from(
        mut cmd: std::process::Command,
        host: &str,
        port: u16,
        pki: Option<&TestPki>,
        deflate: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("ws-server.log");
        cmd.arg(peer_script())
            .args([
                "server",
                "--host",
                host,
                "--port",
                &port.to_string(),
                "--log",
            ])
            .arg(&log)
            .stdout(Stdio::null());
        if let Some(pki) = pki {
            cmd.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        if !deflate {
            cmd.arg("--no-deflate");
        }
        let process = Spawned::spawn("ws server", cmd);
        assert!(
            crate::wait_ready(&log, Duration::from_secs(10)),
            "WebSocket server on {host}:{port} did not start"
        );
        Self {
            process,
            log,
            _dir: dir,
        }
    }

    /// The opening handshakes the server answered, in order: `{"path", "headers"
    /// (lower-case names), "extensions" (agreed, or null)}`.
    pub fn handshakes(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("handshake").cloned())
            .collect()
    }

    /// Messages the server received: (is_text, bytes).
    pub fn received(&self) -> Vec<(bool, Vec<u8>)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("type").is_some())
            .map(|v| (v["type"] == "text", unb64(v["data"].as_str().unwrap_or(""))))
            .collect()
    }
}

pub struct ClientOptions<'a> {
    /// Address dialled, e.g. "10.77.0.2:8443".
    pub connect: &'a str,
    /// Name in the URL (and SNI when TLS).
    pub host: &'a str,
    /// CA file the client trusts; None means plain ws://.
    pub cafile: Option<&'a Path>,
    pub deflate: bool,
}

/// Start the scripted client (captured when `cgroup` is given); stdout is piped.
pub fn spawn_client(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    opts: &ClientOptions<'_>,
    script: &Value,
) -> Spawned {
    spawn_client_on(lab, cgroup, opts, script, "/chat")
}

/// [`spawn_client`] with the URL path to connect to.
pub fn spawn_client_on(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    opts: &ClientOptions<'_>,
    script: &Value,
    path: &str,
) -> Spawned {
    let mut cmd = lab.client_command(cgroup, "python3");
    cmd.arg(peer_script())
        .args([
            "client",
            "--connect",
            opts.connect,
            "--host",
            opts.host,
            "--path",
            path,
            "--script",
        ])
        .arg(script.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ca) = opts.cafile {
        cmd.arg("--cafile").arg(ca);
    }
    if !opts.deflate {
        cmd.arg("--no-deflate");
    }
    Spawned::spawn("ws client", cmd)
}

pub struct ClientRun {
    pub success: bool,
    pub events: Vec<Value>,
    pub stderr: String,
}

impl ClientRun {
    /// The echoes the client received, in order: (is_text, bytes).
    pub fn echoes(&self) -> Vec<(bool, Vec<u8>)> {
        self.events
            .iter()
            .filter(|v| v.get("echo").is_some())
            .map(|v| (v["type"] == "text", unb64(v["data"].as_str().unwrap_or(""))))
            .collect()
    }

    pub fn closed(&self) -> Option<&Value> {
        self.events.iter().find_map(|v| v.get("closed"))
    }
}

pub fn run_client(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    opts: &ClientOptions<'_>,
    script: &Value,
) -> ClientRun {
    let out = spawn_client(lab, cgroup, opts, script).output();
    ClientRun {
        success: out.status.success(),
        events: String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Read a running client's stdout until `n` echoes arrived; returns the lines read.
pub fn read_echoes(client: &mut Spawned, n: usize) -> Vec<Value> {
    let stdout = client
        .child
        .as_mut()
        .and_then(|c| c.stdout.as_mut())
        .expect("piped stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut events = Vec::new();
    let mut line = String::new();
    while events.len() < n {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            events.push(v);
        }
    }
    events
}
