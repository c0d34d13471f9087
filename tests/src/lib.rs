//! Test harness: network namespaces with veth links, throw-away cgroups, and a
//! frametap agent process, each removed again when dropped (also when a test
//! panics). Everything here needs root; see [`require_root`].
//!
//! Topology of a [`Lab`]: a "client host" namespace where the agent and the
//! captured applications run, linked by a veth pair to an "upstream host"
//! namespace that runs the real servers:
//!
//! ```text
//!  client ns  10.77.0.1/24  fd77::1/64  ==veth==  10.77.0.2/24  fd77::2/64  upstream ns
//! ```
//! Both ends live in namespaces the lab creates, so no traffic leaves them.
pub mod agent;
pub mod api;
pub mod big_store;
pub mod case;
pub mod cgroup;
pub mod echo_framing;
pub mod netns;
pub mod peers;
pub mod pki;
pub mod podman;
pub mod procs;
pub mod tmpfs;
pub mod ws;

use std::sync::{Mutex, MutexGuard};

pub use agent::Agent;
pub use case::Case;
pub use cgroup::TestCgroup;
pub use netns::Lab;
pub use procs::Spawned;

/// Tests attach eBPF programs and look at what is loaded host-wide: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when the test may run. As root: always. Otherwise it fails under CI=true
/// (CI must never silently skip) and skips with a message elsewhere.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("this end-to-end test needs root (it loads eBPF programs and creates namespaces)");
    }
    eprintln!("skipped: needs root");
    false
}

/// Path of a binary built by this workspace (next to the test executable's folder).
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let env_key = format!("FRAMETAP_{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&env_key) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --bins; `cargo xtask test` does) or set {env_key}",
        path.display()
    );
    path
}

/// Wait until `f` returns Some, polling every 10 ms, at most `timeout`.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Wait (at most `timeout`) until the file a test peer writes once it listens says
/// "ready"; false if it never does.
pub fn wait_ready(path: &std::path::Path, timeout: std::time::Duration) -> bool {
    wait_for(timeout, || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| t.contains("ready"))
    })
    .is_some()
}

/// IDs of the frametap eBPF programs currently loaded in the kernel.
pub fn frametap_program_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("ft_")))
        .map(|p| p.id())
        .collect()
}

/// IDs of the original-destination maps of frametap agents now loaded
/// ("ORIGINAL_BY_COOKIE" and "ORIGINAL_BY_CLIENT"; the kernel keeps 15 characters).
pub fn original_map_ids() -> Vec<u32> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| {
            m.name_as_str()
                .is_some_and(|n| n.starts_with("ORIGINAL_BY_"))
        })
        .map(|m| m.id())
        .collect()
}

/// Number of entries in a hash map of frametap's (the original-destination maps:
/// keys a u64 cookie or a 32-byte namespace and endpoint, values the 48-byte
/// original destination; `NETNS_LISTENERS`: u64 keys, 8-byte values).
pub fn original_map_entries(id: u32) -> usize {
    use aya::maps::{HashMap, Map, MapData};
    let map = || Map::from_map_data(MapData::from_id(id).expect("map by id")).expect("map");
    let info = aya::maps::MapInfo::from_id(id).expect("map info");
    match (info.key_size(), info.value_size()) {
        (8, 48) => HashMap::<_, u64, [u8; 48]>::try_from(map())
            .expect("hash map")
            .keys()
            .count(),
        (8, 8) => HashMap::<_, u64, [u8; 8]>::try_from(map())
            .expect("hash map")
            .keys()
            .count(),
        _ => HashMap::<_, [u8; 32], [u8; 48]>::try_from(map())
            .expect("hash map")
            .keys()
            .count(),
    }
}

/// IDs of the `NETNS_LISTENERS` maps of the frametap agents now loaded.
pub fn netns_listener_map_ids() -> Vec<u32> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some("NETNS_LISTENERS"))
        .map(|m| m.id())
        .collect()
}
