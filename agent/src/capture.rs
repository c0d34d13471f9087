//! The eBPF side of the agent: load the programs, give them our settings, fill the
//! port, exclusion and inclusion maps, attach them to the captured cgroups, and answer "where
//! did this client want to go?".
//!
//! Attachments are bpf_links owned by this process and never pinned: when the agent
//! exits, however it exits (SIGKILL included), the kernel drops the links and the
//! captured applications connect directly again. That is our fail-open guarantee.
use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, SockOps,
        cgroup_sock_addr::CgroupSockAddrLinkId, sock_ops::SockOpsLinkId,
    },
};
use capture_common::{
    AgentConfig, ClientKey, GLOBAL_AGENT, MAP_EXCLUDED_V4, MAP_EXCLUDED_V6, MAP_INCLUDED_V4,
    MAP_INCLUDED_V6, MAP_NETNS_ANNOUNCED, MAP_NETNS_LISTENERS, MAP_NETNS_SEEN,
    MAP_ORIGINAL_BY_CLIENT, MAP_PAUSED, MAP_SELECTED_PORTS, MAP_STATS, NetnsListener, OriginalDst,
    SocketKey, stat,
};
use ipnet::IpNet;

/// The compiled eBPF object, built by build.rs (aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture-ebpf"));

/// Program names in the object, the hook each one goes on, in attach order: the
/// bookkeeping hooks first, the redirecting connect hooks last, so that no
/// connection is redirected before its original destination can be found.
const SOCK_OPS: &str = "ft_sockops";
const SOCK_ADDR_PROGRAMS: [(&str, &str); 4] = [
    ("ft_getpeer4", "cgroup/getpeername4"),
    ("ft_getpeer6", "cgroup/getpeername6"),
    ("ft_connect4", "cgroup/connect4"),
    ("ft_connect6", "cgroup/connect6"),
];

pub struct CaptureSettings {
    pub cgroup_dirs: Vec<PathBuf>,
    pub ports: Vec<u16>,
    pub exclude: Vec<IpNet>,
    /// When not empty, only destinations inside these networks are captured.
    pub include: Vec<IpNet>,
    /// `include_only` is set here from `include`.
    pub agent: AgentConfig,
}

/// Loaded and attached programs. Dropping it detaches everything.
pub struct Capture {
    /// Owns the programs and their links.
    ebpf: Mutex<Ebpf>,
    original_by_client: Mutex<HashMap<MapData, ClientKey, OriginalDst>>,
    stats: PerCpuArray<MapData, u64>,
    /// See [`Capture::set_paused`].
    paused: Mutex<Array<MapData, u32>>,
    netns_listeners: Mutex<HashMap<MapData, u64, NetnsListener>>,
    /// An LRU hash map (aya's HashMap type covers both kinds).
    netns_announced: Mutex<HashMap<MapData, u64, u8>>,
    /// Taken once by whoever serves other namespaces.
    netns_seen: Mutex<Option<RingBuf<MapData>>>,
    /// The agent's own namespace.
    pub netns_cookie: u64,
}

fn program_error(name: &str, hook: &str, what: &str, err: ProgramError) -> anyhow::Error {
    let hint = match &err {
        ProgramError::LoadError { verifier_log, .. } => {
            format!("\nverifier log:\n{verifier_log}")
        }
        _ => String::new(),
    };
    let cause = std::error::Error::source(&err)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    anyhow!(
        "cannot {what} eBPF program {name} ({hook}): {err}{cause}. This kernel must support {hook} \
         programs (Linux 5.8+ with CONFIG_CGROUP_BPF and CONFIG_BPF_SYSCALL).{hint}"
    )
}

/// Put `networks` into a pair of LPM tries (IPv4, IPv6). IPv4 networks also cover
/// IPv4-mapped IPv6 destinations, which the connect6 hook looks up as IPv4. The maps
/// stay in `ebpf` (borrowed): the programs, loaded later, refer to them by fd.
fn fill_networks(
    ebpf: &mut Ebpf,
    (v4_name, v6_name): (&str, &str),
    networks: &[IpNet],
    what: &str,
) -> anyhow::Result<()> {
    let lacks = |name: &str| format!("eBPF object lacks the {name} map");
    let mut v4: LpmTrie<_, [u8; 4], u8> =
        LpmTrie::try_from(ebpf.map_mut(v4_name).with_context(|| lacks(v4_name))?)?;
    for net in networks {
        if let IpAddr::V4(a) = net.network() {
            v4.insert(&Key::new(net.prefix_len().into(), a.octets()), 1, 0)
                .with_context(|| format!("cannot add {net} to the {what}"))?;
        }
    }
    let mut v6: LpmTrie<_, [u8; 16], u8> =
        LpmTrie::try_from(ebpf.map_mut(v6_name).with_context(|| lacks(v6_name))?)?;
    for net in networks {
        if let IpAddr::V6(a) = net.network() {
            v6.insert(&Key::new(net.prefix_len().into(), a.octets()), 1, 0)
                .with_context(|| format!("cannot add {net} to the {what}"))?;
        }
    }
    Ok(())
}

impl Capture {
    pub fn load_and_attach(settings: &CaptureSettings) -> anyhow::Result<Self> {
        let agent = AgentConfig {
            include_only: u32::from(!settings.include.is_empty()),
            ..settings.agent
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_AGENT, &agent, true)
            .load(EBPF_OBJECT)
            .context(
                "cannot load the frametap eBPF object (is this kernel built with BPF and BTF?)",
            )?;

        {
            let mut ports: HashMap<_, u16, u8> = HashMap::try_from(
                ebpf.map_mut(MAP_SELECTED_PORTS)
                    .context("eBPF object lacks the ports map")?,
            )?;
            for &port in &settings.ports {
                ports
                    .insert(port, 1, 0)
                    .context("cannot fill the ports map")?;
            }
        }
        fill_networks(
            &mut ebpf,
            (MAP_EXCLUDED_V4, MAP_EXCLUDED_V6),
            &settings.exclude,
            "exclusions",
        )?;
        fill_networks(
            &mut ebpf,
            (MAP_INCLUDED_V4, MAP_INCLUDED_V6),
            &settings.include,
            "inclusions",
        )?;

        // Load every program before attaching any: a kernel that lacks one hook
        // type fails here with nothing attached.
        {
            let prog: &mut SockOps = ebpf
                .program_mut(SOCK_OPS)
                .context("eBPF object lacks ft_sockops")?
                .try_into()?;
            prog.load()
                .map_err(|e| program_error(SOCK_OPS, "sock_ops", "load", e))?;
        }
        for (name, hook) in SOCK_ADDR_PROGRAMS {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .with_context(|| format!("eBPF object lacks {name}"))?
                .try_into()?;
            prog.load()
                .map_err(|e| program_error(name, hook, "load", e))?;
        }

        // On any error below, `ebpf` is dropped and every link made so far goes with it.
        for dir in &settings.cgroup_dirs {
            attach_to(&mut ebpf, dir)?;
        }

        let original_by_client = HashMap::try_from(
            ebpf.take_map(MAP_ORIGINAL_BY_CLIENT)
                .context("eBPF object lacks the original-destination map")?,
        )?;
        let stats = PerCpuArray::try_from(ebpf.take_map(MAP_STATS).context("no STATS map")?)?;
        let paused = Array::try_from(ebpf.take_map(MAP_PAUSED).context("no PAUSED map")?)?;
        let lacks = |name: &str| format!("eBPF object lacks the {name} map");
        let netns_listeners = HashMap::try_from(
            ebpf.take_map(MAP_NETNS_LISTENERS)
                .with_context(|| lacks(MAP_NETNS_LISTENERS))?,
        )?;
        let netns_announced = HashMap::try_from(
            ebpf.take_map(MAP_NETNS_ANNOUNCED)
                .with_context(|| lacks(MAP_NETNS_ANNOUNCED))?,
        )?;
        let netns_seen = RingBuf::try_from(
            ebpf.take_map(MAP_NETNS_SEEN)
                .with_context(|| lacks(MAP_NETNS_SEEN))?,
        )?;
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            original_by_client: Mutex::new(original_by_client),
            stats,
            paused: Mutex::new(paused),
            netns_listeners: Mutex::new(netns_listeners),
            netns_announced: Mutex::new(netns_announced),
            netns_seen: Mutex::new(Some(netns_seen)),
            netns_cookie: agent.netns_cookie,
        })
    }

    /// The original destination of a redirected connection, found by the client's
    /// endpoint (the accepted socket's peer). The entry is taken: each connection is
    /// accepted once, and the eBPF side also forgets it when the socket closes.
    pub fn take_original_dst(&self, netns: u64, client: SocketAddr) -> Option<OriginalDst> {
        let key = ClientKey {
            netns,
            endpoint: SocketKey::from_socket_addr(client),
            reserved: 0,
        };
        let mut map = self
            .original_by_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let found = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(found)
    }

    /// Capture one more cgroup (and its descendants) from now on, until
    /// [`Capture::detach`].
    pub fn attach(&self, dir: &Path) -> anyhow::Result<Attachment> {
        attach_to(&mut lock(&self.ebpf), dir)
    }

    /// Stop capturing a cgroup attached with [`Capture::attach`] (already gone: fine).
    pub fn detach(&self, attachment: Attachment) {
        detach_from(&mut lock(&self.ebpf), attachment);
    }

    /// From now on, selected connects from namespace `netns` go to the agent's
    /// listener there (127.0.0.1, and ::1 with `has_v6`, on `port`).
    pub fn add_netns_listener(&self, netns: u64, port: u16, has_v6: bool) -> anyhow::Result<()> {
        let listener = NetnsListener {
            port: port.into(),
            has_v6: has_v6.into(),
        };
        lock(&self.netns_listeners)
            .insert(netns, listener, 0)
            .context("cannot add to the eBPF NETNS_LISTENERS map (is it full?)")?;
        let _ = lock(&self.netns_announced).remove(&netns);
        Ok(())
    }

    /// Connects from `netns` go direct again (its listener is closing).
    pub fn remove_netns_listener(&self, netns: u64) {
        let _ = lock(&self.netns_listeners).remove(&netns);
        let _ = lock(&self.netns_announced).remove(&netns);
    }

    /// Let the connect hooks announce `netns` again (its announcement could not be
    /// answered: the process had already gone).
    pub fn forget_announced(&self, netns: u64) {
        let _ = lock(&self.netns_announced).remove(&netns);
    }

    /// The ring of namespaces announced by the connect hooks (once: the first
    /// caller gets it).
    pub fn take_netns_seen(&self) -> Option<RingBuf<MapData>> {
        lock(&self.netns_seen).take()
    }

    /// While paused, new connects are not redirected (they go direct): the agent
    /// could not take them.
    pub fn set_paused(&self, paused: bool) -> anyhow::Result<()> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set(0, u32::from(paused), 0)
            .context("cannot write the eBPF PAUSED map")
    }

    /// One counter of the eBPF programs ([`stat`]), summed over CPUs.
    pub fn stat(&self, index: u32) -> u64 {
        self.stats
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    /// Counters of the eBPF programs, summed over CPUs.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        (0..stat::COUNT)
            .map(|i| (stat::NAMES[i as usize], self.stat(i)))
            .collect()
    }
}

/// The links that capture one cgroup.
pub struct Attachment {
    sock_ops: SockOpsLinkId,
    sock_addr: Vec<(&'static str, CgroupSockAddrLinkId)>,
}

/// Attach every (loaded) program to the cgroup at `dir`: the bookkeeping hooks
/// first, the redirecting connect hooks last, so that no connection is redirected
/// before its original destination can be found.
fn attach_to(ebpf: &mut Ebpf, dir: &Path) -> anyhow::Result<Attachment> {
    let cgroup =
        File::open(dir).with_context(|| format!("cannot open cgroup {}", dir.display()))?;
    // Links are always multi-attach (they coexist with other programs on the cgroup);
    // the kernel wants no mode flag with them, which is what `Single` sends.
    let prog: &mut SockOps = ebpf
        .program_mut(SOCK_OPS)
        .context("no ft_sockops")?
        .try_into()?;
    let sock_ops = prog
        .attach(&cgroup, CgroupAttachMode::Single)
        .map_err(|e| program_error(SOCK_OPS, "sock_ops", "attach", e))
        .with_context(|| format!("attaching to {}", dir.display()))?;
    let mut attachment = Attachment {
        sock_ops,
        sock_addr: Vec::new(),
    };
    for (name, hook) in SOCK_ADDR_PROGRAMS {
        let prog: &mut CgroupSockAddr = ebpf.program_mut(name).context("a program")?.try_into()?;
        match prog
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| program_error(name, hook, "attach", e))
            .with_context(|| format!("attaching to {}", dir.display()))
        {
            Ok(link) => attachment.sock_addr.push((name, link)),
            Err(e) => {
                // Nothing half-attached stays behind.
                detach_from(ebpf, attachment);
                return Err(e);
            }
        }
    }
    Ok(attachment)
}

fn detach_from(ebpf: &mut Ebpf, attachment: Attachment) {
    if let Some(Ok(prog)) = ebpf.program_mut(SOCK_OPS).map(<&mut SockOps>::try_from) {
        let _ = prog.detach(attachment.sock_ops);
    }
    for (name, link) in attachment.sock_addr {
        if let Some(Ok(prog)) = ebpf.program_mut(name).map(<&mut CgroupSockAddr>::try_from) {
            let _ = prog.detach(link);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The network namespace cookie of the calling thread (SO_NETNS_COOKIE, Linux 5.14+).
pub fn current_netns_cookie() -> anyhow::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .context("cannot create a socket to read the network namespace cookie")?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the given length on a valid socket.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot read the network namespace cookie (needs Linux 5.14+)");
    }
    Ok(cookie)
}
