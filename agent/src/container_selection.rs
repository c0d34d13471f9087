//! Keeps the containers named by `--container` captured: each name is resolved at
//! start and then every [`RESOLVE_INTERVAL`]; a container that starts (or starts
//! again, with a new id and cgroup) under that name gets its cgroup attached and a
//! listener in its network namespace at once; one that stops is detached.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tracing::{info, warn};

use crate::{
    capture::{Attachment, Capture},
    containers::{self, Running},
    netns_listeners::NetnsListeners,
    runtime_api,
};

pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

struct Attached {
    id: String,
    dir: PathBuf,
    attachment: Attachment,
}

pub struct ContainerSelection {
    wanted: Vec<String>,
    capture: Arc<Capture>,
    namespaces: Arc<NetnsListeners>,
    mount: PathBuf,
    attached: HashMap<String, Attached>,
    /// The last problem logged per name (each logged once until it changes).
    problems: HashMap<String, String>,
}

impl ContainerSelection {
    pub fn new(
        wanted: Vec<String>,
        capture: Arc<Capture>,
        namespaces: Arc<NetnsListeners>,
        mount: PathBuf,
    ) -> Self {
        Self {
            wanted,
            capture,
            namespaces,
            mount,
            attached: HashMap::new(),
            problems: HashMap::new(),
        }
    }

    /// Names that cannot ever resolve (a name without an API socket) fail here, at
    /// start; containers not running yet are only logged.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let socket = runtime_api::find_socket();
        for wanted in self.wanted.clone() {
            let found = containers::resolve(&wanted, socket.as_deref())?;
            self.settle(&wanted, found);
        }
        Ok(())
    }

    /// Resolve every name again and attach or detach what changed.
    pub fn refresh(&mut self) {
        let socket = runtime_api::find_socket();
        for wanted in self.wanted.clone() {
            match containers::resolve(&wanted, socket.as_deref()) {
                Ok(found) => self.settle(&wanted, found),
                Err(e) => self.problem(&wanted, format!("{e:#}")),
            }
        }
    }

    fn settle(&mut self, wanted: &str, found: Option<Running>) {
        let current = self.attached.get(wanted).map(|a| a.id.clone());
        match (current, found) {
            (Some(id), Some(running)) if id == running.id => {}
            (current, Some(running)) => {
                if current.is_some() {
                    self.release(wanted, "it restarted with a new id");
                }
                let dir = running.cgroup_dir(&self.mount);
                match self.capture.attach(&dir) {
                    Ok(attachment) => {
                        if let Some(name) = &running.name {
                            self.namespaces
                                .names()
                                .remember(&running.id, Some(name.clone()));
                        }
                        self.namespaces.select(dir.clone());
                        // Its namespace is served before its next connect.
                        let _ = self.namespaces.serve_pid(running.pid);
                        info!(
                            container = wanted,
                            id = running.id.as_str(),
                            cgroup = running.cgroup.as_str(),
                            netns = running.netns,
                            "capturing container"
                        );
                        self.problems.remove(wanted);
                        self.attached.insert(
                            wanted.to_string(),
                            Attached {
                                id: running.id,
                                dir,
                                attachment,
                            },
                        );
                    }
                    Err(e) => self.problem(wanted, format!("cannot capture it: {e:#}")),
                }
            }
            (Some(_), None) => self.release(wanted, "it stopped"),
            (None, None) => self.problem(
                wanted,
                "not running: captured as soon as it starts".to_string(),
            ),
        }
    }

    fn release(&mut self, wanted: &str, why: &str) {
        if let Some(a) = self.attached.remove(wanted) {
            self.capture.detach(a.attachment);
            self.namespaces.unselect(&a.dir);
            info!(
                container = wanted,
                id = a.id.as_str(),
                reason = why,
                "no longer capturing container"
            );
        }
    }

    fn problem(&mut self, wanted: &str, what: String) {
        if self.problems.get(wanted) != Some(&what) {
            warn!(container = wanted, "{what}");
            self.problems.insert(wanted.to_string(), what);
        }
    }

    /// On a thread of its own (the runtime's API is called synchronously) until
    /// `stop` is set; detaches everything at the end.
    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("frametap-containers".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(RESOLVE_INTERVAL);
                    self.refresh();
                }
                let names: Vec<String> = self.attached.keys().cloned().collect();
                for name in names {
                    self.release(&name, "the agent is stopping");
                }
            })
    }
}
