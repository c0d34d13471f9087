//! A `frametap-agent serve` process in a lab's client namespace, with JSON logs
//! kept in a file for the test to read.
use std::{
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{Lab, Spawned, workspace_bin};

pub struct Agent {
    pub process: Spawned,
    pub data_dir: tempfile::TempDir,
    pub log_path: PathBuf,
    /// Logs live outside the data dir, which a test may fill up.
    _log_dir: tempfile::TempDir,
}

/// How a start that was meant to fail ended.
pub struct Failed {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Has the agent logged that its programs are attached? Its logs are JSON lines or
/// text lines (`... INFO frametap_agent: capturing outbound ...`).
fn attached(log_path: &std::path::Path) -> bool {
    const ATTACHED: &str = "capturing outbound TCP connects";
    std::fs::read_to_string(log_path)
        .unwrap_or_default()
        .lines()
        .any(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) => v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(ATTACHED)),
            Err(_) => line
                .split_once(": ")
                .is_some_and(|(_, message)| message.starts_with(ATTACHED)),
        })
}

impl Agent {
    /// Start and wait until it is attached (it logs what it captures).
    pub fn start(lab: &Lab, args: &[&str]) -> Self {
        match Self::try_start(lab, args) {
            Ok(a) => a,
            Err(f) => panic!("agent did not start ({}):\n{}", f.status, f.stderr),
        }
    }

    pub fn try_start(lab: &Lab, args: &[&str]) -> Result<Self, Failed> {
        Self::try_start_in(lab, args, tempfile::tempdir().expect("tempdir"))
    }

    /// Start with a given data dir (e.g. one on a small filesystem).
    pub fn start_in(lab: &Lab, args: &[&str], data_dir: tempfile::TempDir) -> Self {
        match Self::try_start_in(lab, args, data_dir) {
            Ok(a) => a,
            Err(f) => panic!("agent did not start ({}):\n{}", f.status, f.stderr),
        }
    }

    pub fn try_start_in(
        lab: &Lab,
        args: &[&str],
        data_dir: tempfile::TempDir,
    ) -> Result<Self, Failed> {
        Self::try_start_logging(
            lab.client.command(workspace_bin("frametap-agent")),
            args,
            data_dir,
            "json",
        )
    }

    /// Start in the test's own network namespace (the host's), for containers: pass
    /// a `--listen` of its own.
    pub fn start_on_host(args: &[&str]) -> Self {
        let cmd = std::process::Command::new(workspace_bin("frametap-agent"));
        match Self::try_start_logging(cmd, args, tempfile::tempdir().expect("tempdir"), "json") {
            Ok(a) => a,
            Err(f) => panic!("agent did not start ({}):\n{}", f.status, f.stderr),
        }
    }

    /// Start with text logs, as an operator would run it with its stderr sent to a
    /// file (or journald); `NO_COLOR` is unset, so only the agent decides on colour.
    pub fn start_with_text_logs(lab: &Lab, args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let cmd = lab.client.command(workspace_bin("frametap-agent"));
        match Self::try_start_logging(cmd, args, data_dir, "text") {
            Ok(a) => a,
            Err(f) => panic!("agent did not start ({}):\n{}", f.status, f.stderr),
        }
    }

    fn try_start_logging(
        mut cmd: std::process::Command,
        args: &[&str],
        data_dir: tempfile::TempDir,
        log_format: &str,
    ) -> Result<Self, Failed> {
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log_path = log_dir.path().join("agent.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        cmd.arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--log-format", log_format, "--shutdown-grace", "1"])
            .env("FRAMETAP_LOG", "info")
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(log);
        let mut process = Spawned::spawn("frametap-agent", cmd);
        let started = crate::wait_for(Duration::from_secs(20), || {
            if attached(&log_path) {
                return Some(None);
            }
            process.child.as_mut()?.try_wait().ok().flatten().map(Some)
        });
        match started {
            Some(None) => Ok(Self {
                process,
                data_dir,
                log_path,
                _log_dir: log_dir,
            }),
            Some(Some(status)) => Err(Failed {
                status,
                stderr: std::fs::read_to_string(&log_path).unwrap_or_default(),
            }),
            None => panic!(
                "agent neither attached nor exited in 20 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every JSON log line so far.
    pub fn logs(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The "connection closed" records so far.
    pub fn connections(&self) -> Vec<Value> {
        self.logs()
            .into_iter()
            .filter(|v| v["message"] == "connection closed")
            .collect()
    }

    /// Wait until at least `n` connections were logged (the agent logs a connection
    /// when both sides are done, a moment after the client sees the end).
    pub fn wait_connections(&self, n: usize) -> Vec<Value> {
        crate::wait_for(Duration::from_secs(5), || {
            let c = self.connections();
            (c.len() >= n).then_some(c)
        })
        .unwrap_or_else(|| {
            panic!(
                "agent logged fewer than {n} connections:\n{}",
                self.log_text()
            )
        })
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.process.signal(libc::SIGTERM);
        self.process
            .wait_timeout(Duration::from_secs(10))
            .expect("agent did not exit within 10 s of SIGTERM")
    }
}
