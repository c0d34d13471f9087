//! Real containers from Podman (Debian's), run the way that works on these hosts
//! (cgroup v2 in a hybrid layout, where crun refuses): runc, cgroupfs, the host's
//! own root filesystem as an overlay (no image to pull), Podman's bridge network.
//! Removed when dropped, also when the test panics.
use std::process::{Command, Output, Stdio};

/// `podman` with the runtime and cgroup manager that work here.
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .expect("cannot run podman (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The address of Podman's bridge on the host, where containers reach the host.
pub const BRIDGE_HOST_V4: &str = "10.88.0.1";

pub struct Container {
    pub name: String,
    pub id: String,
}

impl Container {
    /// Starts `command` detached in a new container named `name` (an old one of
    /// that name is removed first).
    pub fn start(name: &str, command: &[&str]) -> Self {
        let _ = podman().args(["rm", "-f", "-t", "0", name]).output();
        let out = run(podman()
            .args(["run", "-d", "--name", name, "--network", "bridge"])
            .args([
                "--ulimit",
                "nofile=20000:20000",
                "--ulimit",
                "nproc=1000:1000",
            ])
            // The test's PATH (its Python and packages), inside.
            .arg("--env")
            .arg(format!(
                "PATH={}",
                std::env::var("PATH").unwrap_or_default()
            ))
            .args(["--rootfs", "/:O"])
            .args(command));
        Self {
            name: name.to_string(),
            id: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }

    /// Its main process, as the host sees it.
    pub fn pid(&self) -> u32 {
        let out = run(podman().args(["inspect", "--format", "{{.State.Pid}}", &self.name]));
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pid")
    }

    /// Its cgroup v2 path, relative to the mount (e.g. `libpod_parent/libpod-<id>`).
    pub fn cgroup(&self) -> String {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid()))
            .expect("the container's cgroup");
        text.lines()
            .find_map(|l| l.strip_prefix("0::/"))
            .expect("a cgroup v2 path")
            .to_string()
    }

    /// `podman exec`: the command's output (not checked).
    pub fn exec(&self, command: &[&str]) -> Output {
        podman()
            .args(["exec", &self.name])
            .args(command)
            .output()
            .expect("podman exec")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman()
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Podman's Docker-compatible API on `/run/podman/podman.sock`, as the
/// `podman.socket` unit provides it on a normal host: started here when nothing
/// answers there yet, stopped (and its socket removed) when dropped.
pub struct ApiService {
    child: Option<std::process::Child>,
}

pub const API_SOCKET: &str = "/run/podman/podman.sock";

impl ApiService {
    pub fn start() -> Self {
        if std::os::unix::net::UnixStream::connect(API_SOCKET).is_ok() {
            return Self { child: None };
        }
        // Without the directory, the service fails silently.
        std::fs::create_dir_all("/run/podman").expect("create /run/podman");
        let _ = std::fs::remove_file(API_SOCKET);
        let child = podman()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{API_SOCKET}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service");
        let up = crate::wait_for(std::time::Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(API_SOCKET).ok()
        });
        assert!(up.is_some(), "podman's API did not come up on {API_SOCKET}");
        Self { child: Some(child) }
    }
}

impl Drop for ApiService {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(API_SOCKET);
        }
    }
}
