//! Is a cgroup captured right now? Asked of the kernel, not of any file, so the answer
//! holds whatever `--data-dir`, cgroups or ports the serving agents were started with.
//!
//! A TCP connect from a cgroup is redirected when frametap's `ft_connect4` program is
//! among the cgroup's *effective* connect4 programs (attached to it or inherited from
//! an ancestor) and that program belongs to an agent in the caller's network
//! namespace (an agent only redirects sockets of its own namespace, whose loopback
//! its listener is on). `exec` uses this to warn only when its command would really
//! run uncaptured, and then to say where agents do capture.
//!
//! aya lists loaded programs and maps, but has no query of a cgroup's attached or
//! effective programs for the connect4 hook, nor an untyped map lookup, so those two
//! calls (`BPF_PROG_QUERY`, `BPF_MAP_LOOKUP_ELEM`) are made here with `bpf(2)`.
use std::{
    collections::BTreeSet,
    fs::File,
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, Map, MapData, MapInfo},
    programs::{ProgramInfo, loaded_programs},
};
use capture_common::MAP_SELECTED_PORTS;

/// The name of frametap's connect4 program, as the kernel reports it.
pub const CONNECT4_PROGRAM: &str = "ft_connect4";

/// One loaded `ft_connect4` program: one serving agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentProgram {
    pub id: u32,
    /// The agent's network namespace cookie, when it could be read from the
    /// program's settings (its read-only data map).
    pub netns_cookie: Option<u64>,
    /// The destination ports it captures, when its ports map could be read.
    pub ports: Option<BTreeSet<u16>>,
}

impl AgentProgram {
    /// Does this agent redirect sockets of the network namespace `netns`? When its
    /// namespace is unknown, assume so: better silent than a false warning.
    pub fn serves_netns(&self, netns: u64) -> bool {
        self.netns_cookie.is_none_or(|c| c == 0 || c == netns)
    }
}

/// Every frametap connect4 program loaded now (one per serving agent).
pub fn agent_programs() -> anyhow::Result<Vec<AgentProgram>> {
    let mut found = Vec::new();
    for info in loaded_programs() {
        let info = info?;
        if info.name_as_str() == Some(CONNECT4_PROGRAM) {
            found.push(describe(&info));
        }
    }
    Ok(found)
}

fn describe(info: &ProgramInfo) -> AgentProgram {
    let mut program = AgentProgram {
        id: info.id(),
        netns_cookie: None,
        ports: None,
    };
    let map_ids = info.map_ids().ok().flatten().unwrap_or_default();
    for map_id in map_ids {
        let Ok(map_info) = MapInfo::from_id(map_id) else {
            continue;
        };
        let name = map_info.name_as_str().unwrap_or_default();
        if name == MAP_SELECTED_PORTS {
            program.ports = read_ports(map_id);
        } else if name.starts_with(".rodata") {
            program.netns_cookie = read_netns_cookie(map_id, map_info.value_size() as usize);
        }
    }
    program
}

fn open_map(id: u32) -> Option<Map> {
    Map::from_map_data(MapData::from_id(id).ok()?).ok()
}

fn read_ports(map_id: u32) -> Option<BTreeSet<u16>> {
    let map = HashMap::<_, u16, u8>::try_from(open_map(map_id)?).ok()?;
    Some(map.keys().filter_map(Result::ok).collect())
}

/// The agent's network namespace cookie from the program's read-only data: the
/// object's only read-only global is `AGENT`, whose first member is the cookie (in
/// every version of `AgentConfig`, so an agent of another build is read right too).
fn read_netns_cookie(map_id: u32, value_size: usize) -> Option<u64> {
    if value_size < std::mem::size_of::<u64>() {
        return None;
    }
    let map = MapData::from_id(map_id).ok()?;
    let mut value = vec![0u8; value_size];
    lookup(map.fd().as_fd(), 0, &mut value).ok()?;
    Some(u64::from_ne_bytes(value[..8].try_into().ok()?))
}

// include/uapi/linux/bpf.h
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

/// The `map_elem` member of `union bpf_attr`.
#[repr(C)]
struct MapLookupAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// One element of an array map, whatever its value size (aya's typed maps need the
/// size at compile time). `value` must be exactly the map's value size.
fn lookup(map: BorrowedFd<'_>, index: u32, value: &mut [u8]) -> io::Result<()> {
    let mut attr = MapLookupAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &index as *const u32 as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the kernel reads a 4-byte key and writes value_size bytes, which is
    // `value.len()`; both buffers outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            &mut attr as *mut MapLookupAttr,
            std::mem::size_of::<MapLookupAttr>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_F_QUERY_EFFECTIVE: u32 = 1;

/// The `query` member of `union bpf_attr` up to `prog_cnt` (Linux 4.15); the kernel
/// treats the members it has beyond these as zero.
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// Ids of the connect4 programs of a cgroup: the ones in effect for its sockets
/// (`effective`, inherited ones included), or only those attached to it directly.
pub fn connect4_programs(cgroup_dir: &Path, effective: bool) -> io::Result<Vec<u32>> {
    let dir = File::open(cgroup_dir)?;
    let mut ids = vec![0u32; 16];
    loop {
        let mut attr = ProgQueryAttr {
            target_fd: dir.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_INET4_CONNECT,
            query_flags: if effective { BPF_F_QUERY_EFFECTIVE } else { 0 },
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: BPF_PROG_QUERY reads `attr` and writes at most `prog_cnt` ids into
        // `ids`, which outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &mut attr as *mut ProgQueryAttr,
                std::mem::size_of::<ProgQueryAttr>() as u32,
            )
        };
        let count = attr.prog_cnt as usize;
        if rc == 0 {
            ids.truncate(count);
            return Ok(ids);
        }
        let err = io::Error::last_os_error();
        // ENOSPC: more programs than room; the kernel said how many there are.
        if err.raw_os_error() == Some(libc::ENOSPC) && count > ids.len() {
            ids.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

/// The cgroups below `mount` (paths relative to it, "/" for the root) that one of
/// `programs` is attached to directly, with that program's id.
pub fn cgroups_with(mount: &Path, programs: &BTreeSet<u32>) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut pending: Vec<PathBuf> = vec![mount.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if let Ok(ids) = connect4_programs(&dir, false) {
            for id in ids.into_iter().filter(|id| programs.contains(id)) {
                found.push((relative(mount, &dir), id));
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            pending.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    found.sort();
    found
}

fn relative(mount: &Path, dir: &Path) -> String {
    match dir.strip_prefix(mount) {
        Ok(r) if !r.as_os_str().is_empty() => r.display().to_string(),
        _ => "/".to_string(),
    }
}

/// What `exec` learned about the cgroup its command will run in.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// An agent of this network namespace captures it (on these ports, if known).
    Captured { ports: Option<BTreeSet<u16>> },
    /// No agent captures it.
    NotCaptured {
        /// Cgroups that agents of this namespace do capture, with their ports.
        elsewhere: Vec<(String, Option<BTreeSet<u16>>)>,
        /// Agents that serve other network namespaces only.
        other_netns: usize,
    },
}

/// Decide from the cgroup's effective connect4 programs, the loaded agents, our
/// network namespace, and (only asked when needed) where agents are attached.
pub fn judge(
    effective: &[u32],
    agents: &[AgentProgram],
    netns: u64,
    attached: impl FnOnce(&BTreeSet<u32>) -> Vec<(String, u32)>,
) -> Finding {
    let (ours, others): (Vec<&AgentProgram>, Vec<&AgentProgram>) =
        agents.iter().partition(|a| a.serves_netns(netns));
    if let Some(agent) = ours.iter().find(|a| effective.contains(&a.id)) {
        return Finding::Captured {
            ports: agent.ports.clone(),
        };
    }
    let ids: BTreeSet<u32> = ours.iter().map(|a| a.id).collect();
    let elsewhere = if ids.is_empty() {
        Vec::new()
    } else {
        attached(&ids)
            .into_iter()
            .map(|(cgroup, id)| {
                let ports = ours
                    .iter()
                    .find(|a| a.id == id)
                    .and_then(|a| a.ports.clone());
                (cgroup, ports)
            })
            .collect()
    };
    Finding::NotCaptured {
        elsewhere,
        other_netns: others.len(),
    }
}

fn port_list(ports: &BTreeSet<u16>) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Finding {
    /// The warning for a command about to run in `cgroup` (None: it is captured).
    pub fn warning(&self, cgroup: &str) -> Option<String> {
        let Finding::NotCaptured {
            elsewhere,
            other_netns,
        } = self
        else {
            return None;
        };
        if !elsewhere.is_empty() {
            let list = elsewhere
                .iter()
                .map(|(c, ports)| match ports {
                    Some(p) => format!("{c} (ports {})", port_list(p)),
                    None => c.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Some(format!(
                "the command runs uncaptured: no frametap agent captures cgroup {cgroup}. Captured \
                 cgroups: {list}. Pass one of them to exec with --cgroup, or serve this cgroup too"
            ));
        }
        if *other_netns > 0 {
            return Some(format!(
                "the command runs uncaptured: frametap agents serve only other network namespaces \
                 ({other_netns} of them). Run exec in the agent's network namespace, or start \
                 `frametap-agent serve --cgroup {cgroup}` in this one"
            ));
        }
        Some(format!(
            "the command runs uncaptured: no frametap agent is running. Start one first: \
             `frametap-agent serve --cgroup {cgroup}`"
        ))
    }

    /// A short description of what is captured, for a debug line.
    pub fn captured_ports(&self) -> Option<String> {
        match self {
            Finding::Captured { ports: Some(p) } => Some(port_list(p)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: u32, netns: Option<u64>, ports: &[u16]) -> AgentProgram {
        AgentProgram {
            id,
            netns_cookie: netns,
            ports: Some(ports.iter().copied().collect()),
        }
    }

    fn never(_: &BTreeSet<u32>) -> Vec<(String, u32)> {
        panic!("no need to look for attachments")
    }

    #[test]
    fn effective_program_of_our_namespace_means_captured() {
        let agents = [agent(7, Some(1), &[80, 443]), agent(9, Some(2), &[8080])];
        let f = judge(&[3, 7], &agents, 1, never);
        assert_eq!(
            f,
            Finding::Captured {
                ports: Some(BTreeSet::from([80, 443]))
            }
        );
        assert_eq!(f.warning("frametap"), None);
        assert_eq!(f.captured_ports().as_deref(), Some("80,443"));
        // Namespace unknown (settings unreadable): trusted, no false warning.
        let f = judge(&[9], &[agent(9, None, &[1])], 1, never);
        assert!(matches!(f, Finding::Captured { .. }));
    }

    #[test]
    fn program_of_another_namespace_does_not_capture() {
        let agents = [agent(9, Some(2), &[8080])];
        let f = judge(&[9], &agents, 1, never);
        assert_eq!(
            f,
            Finding::NotCaptured {
                elsewhere: vec![],
                other_netns: 1
            }
        );
        let w = f.warning("app").unwrap();
        assert!(w.contains("other network namespaces"), "{w}");
    }

    #[test]
    fn not_captured_names_the_cgroups_that_are() {
        let agents = [agent(7, Some(1), &[80, 443]), agent(8, Some(1), &[5432])];
        let f = judge(&[], &agents, 1, |ids| {
            assert_eq!(ids, &BTreeSet::from([7, 8]));
            vec![("db".into(), 8), ("frametap".into(), 7)]
        });
        let w = f.warning("other").unwrap();
        assert!(w.starts_with("the command runs uncaptured"), "{w}");
        assert!(
            w.contains("Captured cgroups: db (ports 5432), frametap (ports 80,443)"),
            "{w}"
        );
    }

    #[test]
    fn no_agent_at_all_says_how_to_start_one() {
        let f = judge(&[], &[], 1, never);
        let w = f.warning("frametap").unwrap();
        assert!(w.contains("no frametap agent is running"), "{w}");
        assert!(
            w.contains("`frametap-agent serve --cgroup frametap`"),
            "{w}"
        );
    }

    #[test]
    fn query_of_a_path_that_is_no_cgroup_fails() {
        let dir = tempfile::tempdir().unwrap();
        // A plain directory is not a cgroup: the kernel refuses the query (or, without
        // privileges, the bpf call itself); either way an error, never a false answer.
        assert!(connect4_programs(dir.path(), true).is_err());
        assert!(connect4_programs(&dir.path().join("missing"), true).is_err());
    }
}
