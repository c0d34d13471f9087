//! Where a captured connection came from beyond its process: the process's cgroup,
//! its network namespace, and the container that cgroup belongs to.
pub use frametap_store::Origin;

use crate::{cgroup, container_id::container_id_in, containers::ContainerNames};

/// The origin of process `pid` (gone processes give what is left: `netns`);
/// container names come from `names` (never asked for here: this runs as
/// connections are accepted).
pub fn origin_of(pid: u32, netns: Option<u64>, names: &ContainerNames) -> Origin {
    let cgroup = cgroup::cgroup_of(pid);
    let container_id = cgroup.as_deref().and_then(container_id_in);
    Origin {
        container_name: container_id.as_deref().and_then(|id| names.name_of(id)),
        container_id,
        cgroup,
        netns: netns.or_else(|| crate::netns::inode_of(pid).ok()),
    }
}
