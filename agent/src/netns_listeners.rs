//! The agent's listeners inside other network namespaces (containers): opened when a
//! selected process is found in a namespace without one, closed when no process is
//! left in it.
//!
//! Found two ways: the connect hooks announce a namespace whose selected connect
//! had to go direct (a ring buffer, answered within milliseconds), and a scan of
//! `/proc` every second finds processes of the selected cgroups in namespaces not
//! served yet (so that usually a container's first connection is captured too) and
//! namespaces no process uses any more.
//!
//! Each namespace gets one listener per worker on 127.0.0.1 (and ::1 when the
//! namespace has it) on the agent's port, or on another port when that one is taken
//! there; the eBPF map then sends that namespace's connects to it. A namespace that
//! cannot be served (no loopback, gone) is left alone, logged once and counted.
use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::{
    capture::Capture,
    cgroup,
    netns::{self, Netns, bind_listener},
};

/// How often `/proc` is scanned for new and abandoned namespaces.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// A listener handed to a worker: accept on it until `stop` closes.
pub struct Accepting {
    pub listener: std::net::TcpListener,
    pub netns: Arc<Netns>,
    /// Closed (its sender dropped) when the namespace is no longer served.
    pub stop: watch::Receiver<()>,
}

struct Served {
    netns: Arc<Netns>,
    port: u16,
    /// Dropping it ends the accept loops of this namespace.
    _stop: watch::Sender<()>,
}

/// Counters for the API's health.
#[derive(Default)]
pub struct NetnsStats {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    /// Namespaces that could not be served (each counted once).
    pub refused: AtomicU64,
}

impl NetnsStats {
    pub fn report(&self) -> frametap_control::NamespacesReport {
        let (opened, closed) = (
            self.opened.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
        );
        frametap_control::NamespacesReport {
            served: opened.saturating_sub(closed),
            opened,
            closed,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

pub struct NetnsListeners {
    capture: Arc<Capture>,
    /// Port tried first in every namespace: the agent's own.
    port: u16,
    workers: Vec<mpsc::UnboundedSender<Accepting>>,
    /// Names of the containers whose namespaces are served, for the records.
    names: Arc<crate::containers::ContainerNames>,
    /// Captured cgroup directories (absolute), for the scan.
    selection: Mutex<Vec<PathBuf>>,
    cgroup_mount: PathBuf,
    host_inode: u64,
    served: Mutex<HashMap<u64, Served>>,
    /// Namespaces (inodes) that could not be served, with why.
    refused: Mutex<HashMap<u64, String>>,
    pub stats: Arc<NetnsStats>,
}

impl NetnsListeners {
    pub fn new(
        capture: Arc<Capture>,
        port: u16,
        workers: Vec<mpsc::UnboundedSender<Accepting>>,
        selection: Vec<PathBuf>,
        cgroup_mount: PathBuf,
        stats: Arc<NetnsStats>,
        names: Arc<crate::containers::ContainerNames>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            names,
            capture,
            port,
            workers,
            selection: Mutex::new(selection),
            cgroup_mount,
            host_inode: netns::current_inode()?,
            served: Mutex::default(),
            refused: Mutex::default(),
            stats,
        })
    }

    /// Until `stop` turns true: answer the connect hooks' announcements and scan.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ring = match self.capture.take_netns_seen() {
            // SAFETY: the ring owns its fd and keeps it open while registered; it
            // is never replaced.
            Some(r) => match unsafe { tokio::io::unix::AsyncFd::register(r) } {
                Ok(fd) => Some(fd),
                Err(e) => {
                    warn!(error = %e, "cannot watch the eBPF namespace ring: containers are found by the scan only");
                    None
                }
            },
            None => None,
        };
        let mut tick = tokio::time::interval(SCAN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = tick.tick() => self.scan(),
                ready = async { ring.as_mut().expect("checked").readable_mut().await }, if ring.is_some() => {
                    let Ok(mut guard) = ready else { continue };
                    let mut seen = Vec::new();
                    while let Some(item) = guard.get_inner_mut().next() {
                        if item.len() >= std::mem::size_of::<capture_common::NetnsSeen>() {
                            // SAFETY: the item is a NetnsSeen written by the eBPF side
                            // (checked size; read unaligned).
                            let event = unsafe {
                                std::ptr::read_unaligned(item.as_ptr().cast::<capture_common::NetnsSeen>())
                            };
                            seen.push(event);
                        }
                    }
                    guard.clear_ready();
                    for event in seen {
                        debug!(pid = event.tgid, netns_cookie = event.netns, "selected connect from a namespace without a listener");
                        if !self.serve_pid(event.tgid) {
                            // The process was gone: the namespace's next connect
                            // announces it again.
                            self.capture.forget_announced(event.netns);
                        }
                    }
                }
            }
        }
        self.close_all();
    }

    /// Serve the namespaces of selected processes found in `/proc`; close the ones
    /// no process uses any more.
    pub fn scan(&self) {
        let mut live = HashSet::new();
        let Ok(pids) = cgroup::pids() else {
            return;
        };
        let own = std::process::id();
        for pid in pids {
            if pid == own {
                continue;
            }
            let Ok(inode) = netns::inode_of(pid) else {
                continue;
            };
            live.insert(inode);
            if inode == self.host_inode || self.known(inode) {
                continue;
            }
            if self.is_selected(pid) {
                let _ = self.serve_pid(pid);
            }
        }
        let gone: Vec<u64> = lock(&self.served)
            .keys()
            .filter(|inode| !live.contains(inode))
            .copied()
            .collect();
        for inode in gone {
            self.close(inode, "no process is left in it");
        }
        lock(&self.refused).retain(|inode, _| live.contains(inode));
    }

    fn known(&self, inode: u64) -> bool {
        lock(&self.served).contains_key(&inode) || lock(&self.refused).contains_key(&inode)
    }

    fn is_selected(&self, pid: u32) -> bool {
        let Some(path) = cgroup::cgroup_of(pid) else {
            return false;
        };
        let dir = cgroup::cgroup_dir(&self.cgroup_mount, &path);
        lock(&self.selection).iter().any(|s| dir.starts_with(s))
    }

    /// The container names learnt so far.
    pub fn names(&self) -> &crate::containers::ContainerNames {
        &self.names
    }

    /// One more captured cgroup directory (a container's) for the scan.
    pub fn select(&self, dir: PathBuf) {
        lock(&self.selection).push(dir);
    }

    /// A cgroup directory no longer captured.
    pub fn unselect(&self, dir: &std::path::Path) {
        lock(&self.selection).retain(|d| d != dir);
    }

    /// Opens listeners in the namespace of `pid` unless it is the agent's own or
    /// served already. False when the process (and so its namespace) was not found.
    pub fn serve_pid(&self, pid: u32) -> bool {
        let netns = match Netns::of_pid(pid) {
            Ok(n) => n,
            // The process is gone; its namespace may be too.
            Err(e) => {
                debug!(pid, error = %e, "cannot open the network namespace of a process");
                return false;
            }
        };
        if netns.inode == self.host_inode || self.known(netns.inode) {
            return true;
        }
        let inode = netns.inode;
        let comm = crate::origin::process_name(pid).unwrap_or_default();
        let cgroup = cgroup::cgroup_of(pid).unwrap_or_default();
        if let Some(id) = crate::container_id::container_id_in(&cgroup) {
            self.names.learn(&id);
        }
        match self.open(netns) {
            Ok((port, has_v6)) => {
                self.stats.opened.fetch_add(1, Ordering::Relaxed);
                info!(
                    netns = inode,
                    pid,
                    comm,
                    cgroup,
                    port,
                    ipv6 = has_v6,
                    "capturing in another network namespace"
                );
            }
            Err(why) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(
                    netns = inode,
                    pid,
                    comm,
                    cgroup,
                    reason = why.as_str(),
                    "cannot capture in this network namespace: its connections go direct"
                );
                lock(&self.refused).insert(inode, why);
            }
        }
        true
    }

    /// Listeners in `netns` for every worker, then the eBPF map entry.
    fn open(&self, netns: Netns) -> Result<(u16, bool), String> {
        let netns = Arc::new(netns);
        let v4 = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // SO_REUSEPORT would share a port someone already listens on there (another
        // agent, or the application): take it only when a plain bind can.
        let wanted = match netns::ensure_free(Some(&netns), v4(self.port)) {
            Ok(()) => self.port,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => 0,
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                return Err("it has no loopback address (is lo down?)".into());
            }
            Err(e) => return Err(format!("cannot listen on 127.0.0.1 there: {e}")),
        };
        let first = bind_listener(Some(&netns), v4(wanted))
            .map_err(|e| format!("cannot listen on 127.0.0.1 there: {e}"))?;
        let port = first.local_addr().map_err(|e| e.to_string())?.port();
        answers_on_loopback(&netns, &first, v4(port))?;
        let mut v4_listeners = vec![first];
        for _ in 1..self.workers.len() {
            v4_listeners.push(
                bind_listener(Some(&netns), v4(port))
                    .map_err(|e| format!("cannot listen on 127.0.0.1:{port} there: {e}"))?,
            );
        }
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let v6_listeners: Vec<_> = (0..self.workers.len())
            .map_while(|_| bind_listener(Some(&netns), v6).ok())
            .collect();
        let has_v6 = v6_listeners.len() == self.workers.len();
        let (stop_tx, stop_rx) = watch::channel(());
        let mut v6_listeners = v6_listeners.into_iter().filter(|_| has_v6);
        for (worker, v4_listener) in self.workers.iter().zip(v4_listeners) {
            for listener in std::iter::once(v4_listener).chain(v6_listeners.next()) {
                let _ = worker.send(Accepting {
                    listener,
                    netns: Arc::clone(&netns),
                    stop: stop_rx.clone(),
                });
            }
        }
        self.capture
            .add_netns_listener(netns.cookie, port, has_v6)
            .map_err(|e| format!("{e:#}"))?;
        lock(&self.served).insert(
            netns.inode,
            Served {
                netns,
                port,
                _stop: stop_tx,
            },
        );
        Ok((port, has_v6))
    }

    /// New connects from the namespace go direct; its listeners close (connections
    /// already accepted run to their end).
    fn close(&self, inode: u64, why: &str) {
        let Some(served) = lock(&self.served).remove(&inode) else {
            return;
        };
        self.capture.remove_netns_listener(served.netns.cookie);
        self.stats.closed.fetch_add(1, Ordering::Relaxed);
        info!(
            netns = inode,
            port = served.port,
            reason = why,
            "stopped capturing in a network namespace"
        );
    }

    fn close_all(&self) {
        let all: Vec<u64> = lock(&self.served).keys().copied().collect();
        for inode in all {
            self.close(inode, "the agent is stopping");
        }
    }
}

/// Whether a connect inside the namespace reaches `listener` (a loopback that is
/// down keeps its address, so binding alone proves nothing); the test connection is
/// taken off the listener again.
fn answers_on_loopback(
    netns: &Netns,
    listener: &std::net::TcpListener,
    addr: SocketAddr,
) -> Result<(), String> {
    let probe = netns.socket_for(addr).map_err(|e| e.to_string())?;
    probe.set_nonblocking(false).map_err(|e| e.to_string())?;
    probe
        .connect_timeout(&addr.into(), LOOPBACK_CHECK)
        .map_err(|e| format!("its loopback does not answer ({e}): is lo down?"))?;
    let deadline = std::time::Instant::now() + LOOPBACK_CHECK;
    while std::time::Instant::now() < deadline {
        match listener.accept() {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("cannot accept on its loopback: {e}")),
        }
    }
    Err("its loopback does not answer: is lo down?".into())
}

/// How long the loopback check may take.
const LOOPBACK_CHECK: Duration = Duration::from_millis(500);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
