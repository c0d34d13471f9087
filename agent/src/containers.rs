//! Running containers: which they are (id, and name when a runtime API socket
//! answers), where they are (cgroup, network namespace), and which one a
//! `--container NAME_OR_ID` means.
//!
//! Without an API socket, containers are found in the cgroup tree: every process
//! whose cgroup path names a container id (see [`crate::origin`]); they are then
//! known by id only.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::bail;

use crate::{cgroup, container_id::container_id_in, netns, runtime_api};

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub id: String,
    /// Known through the runtime's API socket only.
    pub name: Option<String>,
    /// Its main process (the lowest pid found in its cgroup, without a socket).
    pub pid: u32,
    /// Its cgroup v2 path, relative to the mount, with a leading `/`.
    pub cgroup: String,
    pub netns: Option<u64>,
}

impl Running {
    fn of(id: String, name: Option<String>, pid: u32) -> Option<Self> {
        Some(Self {
            id,
            name,
            pid,
            cgroup: cgroup::cgroup_of(pid)?,
            netns: netns::inode_of(pid).ok(),
        })
    }

    /// The container's cgroup directory under the mount.
    pub fn cgroup_dir(&self, mount: &Path) -> PathBuf {
        cgroup::cgroup_dir(mount, &self.cgroup)
    }
}

/// Every running container, from `socket` (a runtime's API) or the cgroup tree.
pub fn running(socket: Option<&Path>) -> anyhow::Result<Vec<Running>> {
    if let Some(socket) = socket {
        return Ok(runtime_api::running(socket)?
            .into_iter()
            .filter(|i| i.pid != 0)
            .filter_map(|i| Running::of(i.id, Some(i.name), i.pid))
            .collect());
    }
    let mut by_id: BTreeMap<String, u32> = BTreeMap::new();
    for pid in cgroup::pids()? {
        let Some(id) = cgroup::cgroup_of(pid).as_deref().and_then(container_id_in) else {
            continue;
        };
        let lowest = by_id.entry(id).or_insert(pid);
        *lowest = (*lowest).min(pid);
    }
    Ok(by_id
        .into_iter()
        .filter_map(|(id, pid)| Running::of(id, None, pid))
        .collect())
}

/// The running container `wanted` names (a name, a full id or an id prefix of at
/// least 3 digits), or `None` when none runs now.
pub fn resolve(wanted: &str, socket: Option<&Path>) -> anyhow::Result<Option<Running>> {
    if let Some(socket) = socket {
        return Ok(runtime_api::inspect(socket, wanted)?
            .filter(|i| i.pid != 0)
            .and_then(|i| Running::of(i.id, Some(i.name), i.pid)));
    }
    let prefix = wanted.to_ascii_lowercase();
    if prefix.len() < 3 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "container {wanted:?}: no container runtime API socket answers ({}), so \
             containers can only be named by id (3 or more hex digits); start the \
             runtime's API (`systemctl start podman.socket`, or Docker) or give the id",
            runtime_api::SOCKETS.join(", ")
        );
    }
    Ok(running(None)?
        .into_iter()
        .find(|r| r.id.starts_with(&prefix)))
}

/// Container names by id, learnt from the runtime's API socket off the connection
/// path (when a container's namespace is first served, or a `--container` name
/// resolves) and read without blocking when a connection is accepted.
#[derive(Default)]
pub struct ContainerNames {
    by_id: Mutex<HashMap<String, Option<String>>>,
}

/// Ids remembered at most; the oldest are not tracked, the map is just cleared.
const NAMES_KEPT: usize = 4096;

impl ContainerNames {
    /// The name of container `id`, if known.
    pub fn name_of(&self, id: &str) -> Option<String> {
        self.lock().get(id).cloned().flatten()
    }

    /// Remember `name` for `id`.
    pub fn remember(&self, id: &str, name: Option<String>) {
        let mut map = self.lock();
        if map.len() >= NAMES_KEPT {
            map.clear();
        }
        map.insert(id.to_string(), name);
    }

    /// Ask the runtime (blocking) for the name of `id` unless asked before.
    pub fn learn(&self, id: &str) {
        if self.lock().contains_key(id) {
            return;
        }
        let name = runtime_api::find_socket()
            .and_then(|socket| runtime_api::inspect(&socket, id).ok().flatten())
            .map(|i| i.name);
        self.remember(id, name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}
