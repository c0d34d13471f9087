//! Which container a cgroup path names.
//!
//! Container runtimes name a container's cgroup after its id, each in its own way:
//! Docker `docker-<id>.scope` (systemd) or `docker/<id>` (cgroupfs), Podman
//! `libpod-<id>.scope` or `libpod_parent/libpod-<id>`, containerd
//! `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`; Kubernetes puts those
//! under `kubepods.slice/...`. The id is 64 hexadecimal digits.

const ID_LEN: usize = 64;
/// What runtimes put before the id in a path component.
const PREFIXES: [&str; 5] = [
    "docker-",
    "libpod-",
    "cri-containerd-",
    "crio-",
    "containerd-",
];

/// The container id a cgroup path names, if any: the last component that is a
/// 64-digit hexadecimal id, bare or with a runtime's prefix and `.scope` suffix.
/// Podman's `libpod-conmon-<id>.scope` is its monitor, not the container.
pub fn container_id_in(cgroup_path: &str) -> Option<String> {
    cgroup_path.rsplit('/').find_map(|part| {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let id = PREFIXES
            .iter()
            .find_map(|p| part.strip_prefix(p))
            .unwrap_or(part);
        (id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| id.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c0a9e7b2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f";

    #[test]
    fn ids_of_every_runtime_layout() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/libpod_parent/libpod-{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/burstable/pod1/{ID}"),
            format!("/system.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id_in(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn host_cgroups_and_monitors_are_not_containers() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/docker.service",
            "/frametap",
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("/docker/{}", &ID[..63]),
            &format!("/docker/{}g", &ID[..63]),
        ] {
            assert_eq!(container_id_in(path), None, "{path}");
        }
    }
}
