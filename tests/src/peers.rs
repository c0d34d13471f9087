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
        assert!(
            crate::wait_ready(&log, Duration::from_secs(5)),
            "server on {addr} did not start"
        );
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
    probe_from(
        lab.client_command(cgroup, workspace_bin("ft-probe")),
        addr,
        send,
    )
}

/// [`probe`] with `ft-probe` started as `cmd` (placed in some namespace and cgroup).
pub fn probe_from(mut cmd: std::process::Command, addr: &str, send: &str) -> Value {
    let payload = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(payload.path(), send).expect("write payload");
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

/// A TLS server from Node's own `http2` or `https` module (tests/peers/tls_server.js)
/// in the upstream namespace: `h2-only` (allowHTTP1: false) or `http1`.
pub struct NodeTlsServer {
    pub process: Spawned,
    _dir: tempfile::TempDir,
}

impl NodeTlsServer {
    pub fn start(lab: &Lab, mode: &str, addr: &str, port: u16, pki: &crate::pki::TestPki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/tls_server.js");
        let mut cmd = lab.upstream.command("node");
        cmd.arg(script)
            .args([mode, addr, &port.to_string()])
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(&ready)
            .stdout(Stdio::null());
        let process = Spawned::spawn("node tls_server.js", cmd);
        crate::wait_for(Duration::from_secs(10), || ready.exists().then_some(()))
            .unwrap_or_else(|| panic!("node {mode} server on {addr}:{port} did not start (is nodejs installed? cargo xtask setup)"));
        Self { process, _dir: dir }
    }
}

/// A gRPC server from grpcio (tests/peers/grpc_peer.py) in the upstream namespace:
/// `frametap.Echo/Say` (unary, with a trailer) and `frametap.Echo/Chat` (streaming).
pub struct GrpcServer {
    pub process: Spawned,
    _dir: tempfile::TempDir,
}

fn grpc_script() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/grpc_peer.py")
}

impl GrpcServer {
    pub fn start(lab: &Lab, addr: &str, port: u16, pki: &crate::pki::TestPki) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready");
        let mut cmd = lab.upstream.command("python3");
        cmd.arg(grpc_script())
            .args(["server", addr, &port.to_string()])
            .arg(&pki.cert)
            .arg(&pki.key)
            .arg(&ready)
            .stdout(Stdio::null());
        let process = Spawned::spawn("grpc_peer.py server", cmd);
        crate::wait_for(Duration::from_secs(15), || ready.exists().then_some(()))
            .unwrap_or_else(|| panic!("gRPC server on {addr}:{port} did not start (is grpcio installed? cargo xtask setup)"));
        Self { process, _dir: dir }
    }
}

/// Both gRPC calls from the client namespace (inside `cgroup` or not) to
/// `name:port` at `addr`, trusting `cafile`: what the client printed.
pub fn grpc_calls(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    (name, addr, port): (&str, &str, u16),
    cafile: &std::path::Path,
) -> Value {
    let mut cmd = lab.client_command(cgroup, "python3");
    cmd.arg(grpc_script())
        .args(["client", name, addr, &port.to_string()])
        .arg(cafile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Spawned::spawn("grpc_peer.py client", cmd).output();
    assert!(
        out.status.success(),
        "gRPC client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("grpc_peer.py prints JSON")
}

/// Opens `url` in headless Chromium (Debian's, tests/peers/chromium_page.py) from the
/// client namespace, inside `cgroup` or not, with `name` resolving to `addr`, and
/// returns the page's `document.title` once it is no longer "pending".
pub fn chromium_title(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    url: &str,
    (name, addr): (&str, &str),
) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/chromium_page.py");
    let mut cmd = lab.client_command(cgroup, "python3");
    cmd.arg(script)
        .args([url, name, addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = Spawned::spawn("chromium_page.py", cmd).output();
    assert!(
        out.status.success(),
        "chromium_page.py failed (is chromium installed? cargo xtask setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What `tests/peers/h2_ws_client.js` saw: a WebSocket over HTTP/2 (RFC 8441) from
/// Node's `http2` client, which offers ALPN `h2` only.
#[derive(Debug, serde::Deserialize)]
pub struct H2WebSocketRun {
    pub status: Option<u16>,
    pub echoes: Vec<String>,
    pub close: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Opens a WebSocket over HTTP/2 to `https://{host}:{port}{path}` (resolved to
/// `addr`, trusting `cafile`) from the client namespace, inside `cgroup` or not, and
/// echoes `messages` text messages before closing with 1000.
pub fn h2_websocket(
    lab: &Lab,
    cgroup: Option<&TestCgroup>,
    target: (&str, &str, u16),
    cafile: &std::path::Path,
    path: &str,
    messages: usize,
) -> H2WebSocketRun {
    H2WebSocket::spawn(lab, cgroup, target, cafile, path, &[&messages.to_string()]).finish()
}

/// `tests/peers/h2_ws_client.js` running: see [`h2_websocket`], and
/// [`H2WebSocket::pipelined`] for a client that sends everything at once.
pub struct H2WebSocket(Spawned);

impl H2WebSocket {
    fn spawn(
        lab: &Lab,
        cgroup: Option<&TestCgroup>,
        (host, addr, port): (&str, &str, u16),
        cafile: &std::path::Path,
        path: &str,
        args: &[&str],
    ) -> Self {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/h2_ws_client.js");
        let mut cmd = lab.client_command(cgroup, "node");
        cmd.arg(script)
            .args([host, addr, &port.to_string()])
            .arg(cafile)
            .arg(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        H2WebSocket(Spawned::spawn("node h2_ws_client.js", cmd))
    }

    /// Sends `messages` at once (`{"fill": "b", "len": N}` stands for N bytes of
    /// "b"), then closes once `expect` messages came back, whatever they are.
    pub fn pipelined(
        lab: &Lab,
        cgroup: Option<&TestCgroup>,
        target: (&str, &str, u16),
        cafile: &std::path::Path,
        path: &str,
        messages: &Value,
        expect: usize,
    ) -> Self {
        let args = [&messages.to_string()[..], &expect.to_string()];
        Self::spawn(lab, cgroup, target, cafile, path, &args)
    }

    /// Waits for the client's end and what it saw.
    pub fn finish(self) -> H2WebSocketRun {
        let out = self.0.output();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "h2_ws_client.js printed no result ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// What one `curl` run saw.
#[derive(Debug)]
pub struct CurlRun {
    pub success: bool,
    pub status: String,
    /// The HTTP version curl used (`1.1`, `2`).
    pub http_version: String,
    pub body: String,
    pub stderr: String,
}

/// `curl https://{host}:{port}{path}`, resolving `host` to `addr` and trusting
/// `cafile`. curl offers ALPN `h2, http/1.1` unless `extra` says otherwise.
pub struct Curl<'a> {
    pub host: &'a str,
    pub addr: &'a str,
    pub port: u16,
    pub cafile: &'a std::path::Path,
    pub extra: &'a [&'a str],
}

impl Curl<'_> {
    /// One GET from the client namespace, inside `cgroup` (captured) or not.
    pub fn get(&self, lab: &Lab, cgroup: Option<&TestCgroup>, path: &str) -> CurlRun {
        let body = tempfile::NamedTempFile::new().expect("temp file");
        let mut cmd = lab.client_command(cgroup, "curl");
        cmd.args(["-sS", "--max-time", "20", "--resolve"])
            .arg(format!("{}:{}:{}", self.host, self.port, self.addr))
            .arg("--cacert")
            .arg(self.cafile)
            .arg("-o")
            .arg(body.path())
            .args(["-w", "%{http_code} %{http_version}"])
            .args(self.extra)
            .arg(format!("https://{}:{}{path}", self.host, self.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = Spawned::spawn("curl", cmd).output();
        let written = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, http_version) = written.split_once(' ').unwrap_or((&written, ""));
        CurlRun {
            success: out.status.success(),
            status: status.to_string(),
            http_version: http_version.to_string(),
            body: std::fs::read_to_string(body.path()).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs the browser driver on a connection of a million frames
/// (`tests/peers/ui_big_connection.py`); screenshots go to `shots`. Returns the
/// report.
pub fn ui_big_connection(
    browser: &str,
    api: &crate::api::Api,
    traffic: &str,
    shots: &std::path::Path,
) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ui_big_connection.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg(browser)
        .arg(format!("http://127.0.0.1:{}", api.port))
        .args([api.token.as_str(), traffic])
        .arg(shots);
    browser_report("ui_big_connection.py", browser, cmd)
}

/// Drives the web UI in headless `browser` (`chromium` or `firefox`;
/// `tests/peers/ui_driver.py`) against the API, on the live WebSocket connection
/// `traffic`, sending `send` to its client; screenshots go to `shots`; `ready` is
/// created once the traffic list shows (then the page waits for a second connection
/// to appear in it). Returns the report.
pub fn ui_driver(
    browser: &str,
    api: &crate::api::Api,
    traffic: &str,
    send: &str,
    shots: &std::path::Path,
    ready: &std::path::Path,
) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/ui_driver.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script)
        .arg(browser)
        .arg(format!("http://127.0.0.1:{}", api.port))
        .args([api.token.as_str(), traffic, send])
        .arg(shots)
        .arg(ready);
    browser_report("ui_driver.py", browser, cmd)
}

/// Runs a browser driver script and parses the JSON report it prints.
fn browser_report(name: &str, browser: &str, mut cmd: std::process::Command) -> Value {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = Spawned::spawn(name, cmd).output();
    assert!(
        out.status.success(),
        "{name} {browser} failed (is it installed? cargo xtask setup): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name} printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
