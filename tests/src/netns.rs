//! Two network namespaces joined by a veth pair: a client host (agent and captured
//! applications) and an upstream host (real servers). Deleted when dropped.
use std::{
    fs::File,
    process::{Command, Stdio},
};

use crate::procs::{Placement, place};

pub const CLIENT_V4: &str = "10.77.0.1";
pub const UPSTREAM_V4: &str = "10.77.0.2";
pub const CLIENT_V6: &str = "fd77::1";
pub const UPSTREAM_V6: &str = "fd77::2";
/// The client host's side of the link to a [`Namespaced`] application, and the
/// application's address.
pub const BRIDGE_V4: &str = "10.78.0.1";
pub const NAMESPACED_V4: &str = "10.78.0.2";

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run `ip` (install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Netns {
    pub name: String,
    pub file: File,
}

impl Netns {
    pub fn create(name: String) -> Self {
        ip(&["netns", "add", &name]);
        let file = File::open(format!("/var/run/netns/{name}")).expect("netns file");
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Self { name, file }
    }

    /// A command inside this namespace and, when given, inside `cgroup`.
    pub fn command_in(
        &self,
        cgroup: Option<&crate::TestCgroup>,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        let mut cmd = Command::new(program);
        place(
            &mut cmd,
            Placement {
                netns: Some(&self.file),
                cgroup_procs: cgroup.map(|c| c.procs_path()),
            },
        );
        cmd
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        place(
            &mut cmd,
            Placement {
                netns: Some(&self.file),
                cgroup_procs: None,
            },
        );
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub struct Lab {
    pub client: Netns,
    pub upstream: Netns,
}

impl Lab {
    pub fn new() -> Self {
        crate::cgroup::remove_stale();
        remove_stale();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let client = Netns::create(format!("ftc-{pid}-{n}"));
        let upstream = Netns::create(format!("ftu-{pid}-{n}"));
        let (c, u) = (client.name.as_str(), upstream.name.as_str());
        ip(&[
            "link", "add", "ftv0", "netns", c, "type", "veth", "peer", "name", "ftv1", "netns", u,
        ]);
        for (ns, dev, v4, v6) in [
            (c, "ftv0", CLIENT_V4, CLIENT_V6),
            (u, "ftv1", UPSTREAM_V4, UPSTREAM_V6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        Self { client, upstream }
    }

    /// One more address on the upstream host's link (e.g. "10.77.0.130/24",
    /// "fd77::1:2/64"), for servers outside the usual address.
    pub fn add_upstream_address(&self, cidr: &str) {
        let mut args = vec![
            "-n",
            &self.upstream.name,
            "addr",
            "add",
            cidr,
            "dev",
            "ftv1",
        ];
        if cidr.contains(':') {
            args.push("nodad");
        }
        ip(&args);
    }

    /// Waits (at most 10 s) until no address of either host is still tentative: the
    /// kernel gives each veth an IPv6 link-local address whose duplicate address
    /// detection ends about a second after the link comes up, and the change it
    /// announces makes Chromium close its connections (ERR_NETWORK_CHANGED).
    pub fn wait_addresses_settled(&self) {
        let settled = crate::wait_for(std::time::Duration::from_secs(10), || {
            [&self.client, &self.upstream]
                .iter()
                .all(|ns| {
                    Command::new("ip")
                        .args(["-n", &ns.name, "-6", "addr", "show", "tentative"])
                        .output()
                        .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
                })
                .then_some(())
        });
        assert!(
            settled.is_some(),
            "IPv6 addresses in the lab stayed tentative"
        );
    }

    /// A command in the client namespace, inside `cgroup` when given (captured).
    pub fn client_command(
        &self,
        cgroup: Option<&crate::TestCgroup>,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        self.client.command_in(cgroup, program)
    }
}

/// An application namespace on the client host, as a container has: its own
/// loopback and its own address on a link to the client host, which routes it to
/// the upstream host. Deleted when dropped.
pub struct Namespaced {
    pub netns: Netns,
}

impl Namespaced {
    /// A command in the namespace, inside `cgroup` when given (captured).
    pub fn command(
        &self,
        cgroup: Option<&crate::TestCgroup>,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        self.netns.command_in(cgroup, program)
    }
}

impl Lab {
    /// A new application namespace linked to the client host (one per lab: the
    /// addresses are fixed). With `loopback: false` its `lo` stays down.
    pub fn namespaced(&self, loopback: bool) -> Namespaced {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ftk-{}-{n}", std::process::id());
        let netns = Netns::create(name.clone());
        if !loopback {
            ip(&["-n", &name, "link", "set", "lo", "down"]);
        }
        let (c, u, k) = (
            self.client.name.as_str(),
            self.upstream.name.as_str(),
            name.as_str(),
        );
        // The link of an earlier one goes only once nothing holds its namespace any
        // more (the agent lets go of it within a scan).
        let link_gone = crate::wait_for(std::time::Duration::from_secs(10), || {
            let out = Command::new("ip")
                .args(["-n", c, "link", "show", "ftk0"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()?;
            (!out.success()).then_some(())
        });
        assert!(
            link_gone.is_some(),
            "the link to an earlier namespace stayed"
        );
        ip(&[
            "link", "add", "ftk0", "netns", c, "type", "veth", "peer", "name", "ftk1", "netns", k,
        ]);
        ip(&[
            "-n",
            c,
            "addr",
            "add",
            &format!("{BRIDGE_V4}/24"),
            "dev",
            "ftk0",
        ]);
        ip(&[
            "-n",
            k,
            "addr",
            "add",
            &format!("{NAMESPACED_V4}/24"),
            "dev",
            "ftk1",
        ]);
        ip(&["-n", c, "link", "set", "ftk0", "up"]);
        ip(&["-n", k, "link", "set", "ftk1", "up"]);
        ip(&["-n", k, "route", "add", "default", "via", BRIDGE_V4]);
        ip(&[
            "-n",
            u,
            "route",
            "replace",
            "10.78.0.0/24",
            "via",
            CLIENT_V4,
        ]);
        let forward = self
            .client
            .command("sh")
            .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .status()
            .expect("sh");
        assert!(forward.success(), "enable forwarding on the client host");
        Namespaced { netns }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

/// Delete namespaces left behind by earlier test runs whose process is gone.
pub fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rest = name
            .strip_prefix("ftc-")
            .or_else(|| name.strip_prefix("ftu-"))
            .or_else(|| name.strip_prefix("ftk-"));
        let Some(pid) = rest.and_then(|r| r.split('-').next()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}
