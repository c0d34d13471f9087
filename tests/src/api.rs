//! A `frametap-api` process on 127.0.0.1 of the test's own namespace, a blocking
//! HTTP client for it, and the python-socketio listener.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::{Spawned, wait_for, workspace_bin};

pub struct Api {
    pub process: Spawned,
    pub port: u16,
    pub token: String,
    pub log_path: PathBuf,
    _log_dir: tempfile::TempDir,
    http: ureq::Agent,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The body as text (bytes that are not UTF-8 replaced).
    pub body: String,
    /// The body as it came.
    pub bytes: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A free TCP port on 127.0.0.1 (the kernel picks; a tiny race is acceptable).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Api {
    /// Starts on `data_dir` (agent running or not) and waits until it answers.
    pub fn start(data_dir: &Path) -> Api {
        Self::start_on(data_dir, free_port())
    }

    pub fn start_on(data_dir: &Path, port: u16) -> Api {
        Self::launch(data_dir, port, &[])
    }

    /// Starts with extra command-line arguments (such as short timeouts).
    pub fn start_with(data_dir: &Path, args: &[&str]) -> Api {
        Self::launch(data_dir, free_port(), args)
    }

    fn launch(data_dir: &Path, port: u16, args: &[&str]) -> Api {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("api.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(workspace_bin("frametap-api"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .args(args)
            .env_remove("FRAMETAP_API_TOKEN")
            .env("FRAMETAP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        let process = Spawned::spawn("frametap-api", cmd);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let token_file = data_dir.join("api-token");
        let token = wait_for(Duration::from_secs(20), || {
            let token = std::fs::read_to_string(&token_file).ok()?;
            let url = format!("http://127.0.0.1:{port}/api/health");
            http.get(&url)
                .header("Authorization", &format!("Bearer {}", token.trim()))
                .call()
                .ok()
                .map(|_| token.trim().to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "frametap-api did not answer within 20 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
        Api {
            process,
            port,
            token,
            log_path,
            _log_dir: log_dir,
            http,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `method path` with the token (or with `token`, `None` for none at all).
    pub fn request_as(&self, method: &str, path: &str, token: Option<&str>) -> Answer {
        self.call(method, path, token, None)
    }

    /// `method path` with a JSON body, with the token.
    pub fn send_json(&self, method: &str, path: &str, body: &Value) -> Answer {
        self.call(method, path, Some(&self.token), Some(body))
    }

    fn call(&self, method: &str, path: &str, token: Option<&str>, json: Option<&Value>) -> Answer {
        let url = format!("{}{path}", self.base());
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if json.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let body = json.map(Value::to_string).unwrap_or_default();
        let req = req.body(body).expect("request");
        let mut resp = self
            .http
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .unwrap_or_default();
        Answer {
            status: resp.status().as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            headers,
        }
    }

    pub fn request(&self, method: &str, path: &str) -> Answer {
        self.request_as(method, path, Some(&self.token.clone()))
    }

    /// GET that must answer 200 with JSON.
    pub fn get(&self, path: &str) -> Value {
        let a = self.request("GET", path);
        assert_eq!(a.status, 200, "GET {path}: {}", a.body);
        a.json()
    }

    /// Waits until GET `path` answers 200 and `check` accepts the JSON.
    pub fn wait_get(&self, path: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
        wait_for(Duration::from_secs(10), || {
            let a = self.request("GET", path);
            (a.status == 200).then(|| a.json()).filter(|v| check(v))
        })
        .unwrap_or_else(|| {
            panic!(
                "GET {path} never satisfied the check; last answer: {:?}\nAPI log:\n{}",
                self.request("GET", path),
                self.log_text()
            )
        })
    }

    pub fn stop(&mut self) {
        self.process.signal(libc::SIGTERM);
        let _ = self.process.wait_timeout(Duration::from_secs(10));
    }
}

/// Path of the python-socketio listener peer.
pub fn sio_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/sio_listen.py")
}

/// A running python-socketio client printing one JSON line per event.
pub struct SioListener {
    pub process: Spawned,
    lines: mpsc::Receiver<Value>,
}

impl SioListener {
    /// Connects to `api` with `token` and waits for the outcome: `Ok` once
    /// connected, `Err(message)` if the server refused. Events may be printed out of
    /// order (python-socketio's threaded client): see [`SioListener::connect_ordered`].
    pub fn connect(api: &Api, token: Option<&str>) -> Result<SioListener, String> {
        Self::start(api, token, false)
    }

    /// Like [`SioListener::connect`], with events printed in the order the server
    /// sent them (python-socketio's asyncio client).
    pub fn connect_ordered(api: &Api, token: Option<&str>) -> Result<SioListener, String> {
        Self::start(api, token, true)
    }

    fn start(api: &Api, token: Option<&str>, ordered: bool) -> Result<SioListener, String> {
        let mut cmd = Command::new("python3");
        cmd.arg(sio_script()).args(["--url", &api.base()]);
        if ordered {
            cmd.arg("--ordered");
        }
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let mut listener = Self::spawn(cmd);
        match listener.next(Duration::from_secs(20)) {
            Some(v) if v["event"] == "connected" => Ok(listener),
            Some(v) => Err(v["data"].to_string()),
            None => Err("no answer from the Socket.IO listener in 20 s".into()),
        }
    }

    /// `n` subscribers at once, each on its own bare Engine.IO WebSocket, each
    /// waiting for a `websocket:frame` event whose payload is `expect`. Returns once
    /// all have connected or failed, with the listener's count of them
    /// (`{"count", "failed", "errors"}`); [`SioListener::next`] then gives the
    /// summary (`{"received"}`) once every one has its frame (or 120 s passed).
    pub fn many(api: &Api, n: usize, expect: &str) -> (SioListener, Value) {
        let mut cmd = Command::new("python3");
        cmd.arg(sio_script())
            .args(["--url", &api.base(), "--token", &api.token])
            .args(["--many", &n.to_string(), "--expect", expect])
            .args(["--seconds", "120"]);
        let mut listener = Self::spawn(cmd);
        let connected = listener
            .next(Duration::from_secs(130))
            .expect("the subscribers connected or failed within 120 s");
        (listener, connected)
    }

    fn spawn(mut cmd: Command) -> SioListener {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut process = Spawned::spawn("sio_listen", cmd);
        let stdout = process
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("listener stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        SioListener { process, lines }
    }

    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Collects events until `done` says the list is complete (or 20 s pass).
    pub fn collect_until(&mut self, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let mut events = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done(&events) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.next(left) {
                Some(v) => events.push(v),
                None => break,
            }
        }
        events
    }
}
