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
        replay_of: None,
    }
}

/// The name of process `pid` (its main thread's `comm`), as `ps` shows it. The eBPF
/// hook sees the thread that connected, whose name is often a worker's
/// (`Chrome_ChildIOT`, `tokio-runtime-w`); `None` once the process is gone.
pub fn process_name(pid: u32) -> Option<String> {
    if pid == 0 {
        return None;
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string()).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_name_is_the_main_threads_whatever_thread_asks() {
        let main = super::process_name(std::process::id()).expect("this process");
        let from_thread = std::thread::Builder::new()
            .name("worker-thread".into())
            .spawn(|| super::process_name(std::process::id()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(from_thread.as_deref(), Some(main.as_str()));
        assert_ne!(main, "worker-thread");
        assert_eq!(super::process_name(0), None);
        assert_eq!(super::process_name(u32::MAX), None);
    }
}
