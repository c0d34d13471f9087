//! One end-to-end case, set up in one expression: the serial lock, a [`Lab`], a
//! [`TestCgroup`], a [`TestPki`], the test's upstream peers and an agent capturing the
//! cgroup, each cleaned up on drop in the order the tests always used.
//!
//! ```ignore
//! use frametap_e2e::{Case, netns::UPSTREAM_V4, ws::WsServer};
//!
//! let Some(case) = Case::new("wss")
//!     .ports("8443")
//!     .upstream_ca()
//!     .server(|lab, pki| WsServer::start(lab, UPSTREAM_V4, 8443, Some(pki), false))
//!     .start()
//! else {
//!     return; // not root (see `require_root`)
//! };
//! let api = case.api();
//! // case.lab, case.cg, case.pki, case.server, case.agent ...
//! ```
//!
//! [`CaseBuilder::prepare`] stops before the agent, for a test that does something
//! first (starts the API, counts loaded programs) or starts agents of its own.
use std::{
    path::{Path, PathBuf},
    sync::MutexGuard,
};

use crate::{
    Agent, Lab, TestCgroup, api::Api, netns::UPSTREAM_V4, pki::TestPki, require_root, serial,
    tmpfs::Tmpfs,
};

/// The upstream's name in the default [`TestPki`].
pub const HOST: &str = "upstream.frametap.test";

/// What [`Case::new`] starts as upstream peers: nothing.
pub type NoServer = fn(&Lab, &TestPki);

/// How a [`Case`] is set up; see [`Case::new`].
#[must_use = "nothing is set up until `start` or `prepare`"]
pub struct CaseBuilder<F = NoServer> {
    config: Config,
    server: F,
}

struct Config {
    tag: String,
    host_wide: bool,
    ports: Option<String>,
    upstream_ca: bool,
    pki_names: Vec<String>,
    extra: Vec<String>,
    tmpfs: Option<String>,
}

/// Everything but the agent: what [`CaseBuilder::prepare`] gives. Fields are dropped
/// in the order they are declared: the data dir's filesystem, the peers, the PKI,
/// the cgroup, the namespaces, and last the serial lock.
pub struct Prepared<S = ()> {
    /// Where the agent's data dir goes, when the case has one ([`CaseBuilder::tmpfs`]).
    pub tmpfs: Option<Tmpfs>,
    /// What the [`CaseBuilder::server`] closure returned.
    pub server: S,
    pub pki: TestPki,
    pub cg: TestCgroup,
    pub lab: Lab,
    /// The agent's command line (without `--data-dir` and the logging flags).
    pub args: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

/// A running case. Fields are dropped in the order they are declared, as the tests'
/// locals were: the agent stops first, then its data dir's filesystem is unmounted,
/// then the peers, the PKI, the cgroup and the namespaces go, and last the serial
/// lock is released. A test may move a field out (`drop(case.agent)`) to end it
/// earlier; the others are still dropped in this order.
pub struct Case<S = ()> {
    pub agent: Agent,
    pub tmpfs: Option<Tmpfs>,
    pub server: S,
    pub pki: TestPki,
    pub cg: TestCgroup,
    pub lab: Lab,
    /// The agent's command line (without `--data-dir` and the logging flags).
    pub args: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

impl Case {
    /// A case whose cgroup is named after `tag`. Unless told otherwise: no
    /// `--ports`, no `--upstream-ca`, a PKI for [`HOST`] and the upstream's IPv4
    /// address, no peers, and the agent's data dir a fresh temporary directory.
    // The builder, so that a case reads `Case::new(..)...start()`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(tag: &str) -> CaseBuilder {
        let config = Config {
            tag: tag.to_string(),
            host_wide: false,
            ports: None,
            upstream_ca: false,
            pki_names: vec![HOST.to_string(), UPSTREAM_V4.to_string()],
            extra: Vec::new(),
            tmpfs: None,
        };
        CaseBuilder {
            config,
            server: |_, _| (),
        }
    }
}

impl<F> CaseBuilder<F> {
    /// `--ports`, e.g. `"8443"` or `"443,8080,8443"`.
    pub fn ports(mut self, ports: &str) -> Self {
        self.config.ports = Some(ports.to_string());
        self
    }

    /// `--upstream-ca` with the case's [`TestPki`] CA.
    pub fn upstream_ca(mut self) -> Self {
        self.config.upstream_ca = true;
        self
    }

    /// The names (DNS names or IP addresses) of the PKI's server certificate.
    pub fn pki(mut self, names: &[&str]) -> Self {
        self.config.pki_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// More agent arguments, after `--cgroup`, `--ports` and `--upstream-ca`.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.config
            .extra
            .extend(extra.iter().map(|a| a.to_string()));
        self
    }

    /// `--cgroup /` (host-wide mode) instead of the case's cgroup, which is still
    /// made (and unused).
    pub fn host_wide(mut self) -> Self {
        self.config.host_wide = true;
        self
    }

    /// The agent's data dir on a tmpfs of `size` (e.g. `"3m"`), mounted after the
    /// peers started and unmounted right after the agent stopped.
    pub fn tmpfs(mut self, size: &str) -> Self {
        self.config.tmpfs = Some(size.to_string());
        self
    }

    /// Starts the case's upstream peers with `start`, after the lab, cgroup and PKI
    /// and before the agent; what it returns is [`Case::server`]. Anything else that
    /// has to exist before the agent and go right after it (a second cgroup, an
    /// application namespace) can be returned with it, in a tuple: a tuple's fields
    /// are dropped first to last.
    pub fn server<G, S>(self, start: G) -> CaseBuilder<G>
    where
        G: FnOnce(&Lab, &TestPki) -> S,
    {
        CaseBuilder {
            config: self.config,
            server: start,
        }
    }

    /// Everything but the agent, in this order: the serial lock, the lab, the
    /// cgroup, the PKI, the peers, the tmpfs. `None` when the test may not run (see
    /// [`require_root`]).
    pub fn prepare<S>(self) -> Option<Prepared<S>>
    where
        F: FnOnce(&Lab, &TestPki) -> S,
    {
        if !require_root() {
            return None;
        }
        let Self { config, server } = self;
        let serial = serial();
        let lab = Lab::new();
        let cg = TestCgroup::new(&config.tag);
        let pki = TestPki::new(&strs(&config.pki_names));
        let server = server(&lab, &pki);
        let tmpfs = config.tmpfs.as_deref().map(Tmpfs::mount);

        let cgroup = if config.host_wide { "/" } else { &cg.relative };
        let mut args = vec!["--cgroup".to_string(), cgroup.to_string()];
        if let Some(ports) = config.ports {
            args.extend(["--ports".to_string(), ports]);
        }
        if config.upstream_ca {
            args.extend(["--upstream-ca".to_string(), pki.ca.display().to_string()]);
        }
        args.extend(config.extra);
        Some(Prepared {
            tmpfs,
            server,
            pki,
            cg,
            lab,
            args,
            _serial: serial,
        })
    }

    /// The whole case: [`CaseBuilder::prepare`], then the agent, attached.
    pub fn start<S>(self) -> Option<Case<S>>
    where
        F: FnOnce(&Lab, &TestPki) -> S,
    {
        self.prepare().map(Prepared::start)
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl<S> Prepared<S> {
    /// The agent's arguments, for `Agent::start(&prepared.lab, &prepared.agent_args())`.
    pub fn agent_args(&self) -> Vec<&str> {
        strs(&self.args)
    }

    /// Starts the agent (on the tmpfs when the case has one) and waits until it is
    /// attached.
    pub fn start(self) -> Case<S> {
        let data_dir = match &self.tmpfs {
            Some(fs) => tempfile::TempDir::new_in(fs.path()).expect("data dir on the tmpfs"),
            None => tempfile::tempdir().expect("tempdir"),
        };
        self.start_in(data_dir)
    }

    /// Starts the agent on `data_dir` and waits until it is attached.
    pub fn start_in(self, data_dir: tempfile::TempDir) -> Case<S> {
        let agent = Agent::start_in(&self.lab, &self.agent_args(), data_dir);
        let Prepared {
            tmpfs,
            server,
            pki,
            cg,
            lab,
            args,
            _serial,
        } = self;
        Case {
            agent,
            tmpfs,
            server,
            pki,
            cg,
            lab,
            args,
            _serial,
        }
    }
}

impl<S> Case<S> {
    /// The agent's arguments, for another `Agent::start(&case.lab, ..)` like it.
    pub fn agent_args(&self) -> Vec<&str> {
        strs(&self.args)
    }

    /// The agent's data dir.
    pub fn data_dir(&self) -> &Path {
        self.agent.data_dir.path()
    }

    /// The agent's CA certificate, which captured clients must trust.
    pub fn agent_ca(&self) -> PathBuf {
        self.data_dir().join("ca.pem")
    }

    /// A `frametap-api` on the agent's data dir, once it answers.
    pub fn api(&self) -> Api {
        Api::start(self.data_dir())
    }

    /// Starts the agent again, with the same arguments on the same data dir, once it
    /// has exited ([`Agent::stop`], or a SIGKILL waited for). What is left of the old
    /// one (its exit status, its logs) goes after the new one attached.
    pub fn restart_agent(&mut self) {
        let placeholder = tempfile::tempdir().expect("tempdir");
        let data_dir = std::mem::replace(&mut self.agent.data_dir, placeholder);
        let agent = Agent::start_in(&self.lab, &strs(&self.args), data_dir);
        self.agent = agent;
    }
}
