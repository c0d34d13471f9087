//! Map keys, map values and load-time settings shared by the eBPF programs
//! (`capture-ebpf`) and the agent. Everything is `#[repr(C)]` with explicit
//! padding so both sides agree byte for byte.
//!
//! Address words (`[u32; 4]`) hold the address octets in memory order, exactly
//! as the kernel hands them to BPF programs (network byte order). Ports are in
//! host byte order everywhere in these types.
#![no_std]

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Names of the maps, as the eBPF object defines them.
pub const MAP_ORIGINAL_BY_COOKIE: &str = "ORIGINAL_BY_COOKIE";
pub const MAP_ORIGINAL_BY_CLIENT: &str = "ORIGINAL_BY_CLIENT";
pub const MAP_SELECTED_PORTS: &str = "SELECTED_PORTS";
pub const MAP_EXCLUDED_V4: &str = "EXCLUDED_V4";
pub const MAP_EXCLUDED_V6: &str = "EXCLUDED_V6";
pub const MAP_INCLUDED_V4: &str = "INCLUDED_V4";
pub const MAP_INCLUDED_V6: &str = "INCLUDED_V6";
pub const MAP_STATS: &str = "STATS";
/// One `u32`: non-zero while the agent cannot take more connections (it is out of
/// file descriptors); new connects then go direct.
pub const MAP_PAUSED: &str = "PAUSED";
/// Network namespace cookie -> [`NetnsListener`]: where connects from that
/// namespace (a container's) are redirected to.
pub const MAP_NETNS_LISTENERS: &str = "NETNS_LISTENERS";
/// Ring buffer of [`NetnsSeen`]: a selected connect came from a namespace that
/// has no listener yet.
pub const MAP_NETNS_SEEN: &str = "NETNS_SEEN";
/// Namespaces already announced on [`MAP_NETNS_SEEN`] (so each is announced once
/// until the agent answers it).
pub const MAP_NETNS_ANNOUNCED: &str = "NETNS_ANNOUNCED";
/// Name of the global the agent sets at load time.
pub const GLOBAL_AGENT: &str = "AGENT";

/// Capacity of the LRU maps that remember original destinations. Entries are
/// removed when a connection closes; the LRU bound only matters for leaks.
pub const ORIGINAL_MAP_CAPACITY: u32 = 65_536;
/// Most networks per list (`--exclude`, `--include`), per address family.
pub const EXCLUDED_CAPACITY: u32 = 1_024;
pub const INCLUDED_CAPACITY: u32 = 1_024;
pub const SELECTED_PORTS_CAPACITY: u32 = 1_024;
/// Most network namespaces with a listener at once.
pub const NETNS_CAPACITY: u32 = 4_096;
/// Bytes of the [`MAP_NETNS_SEEN`] ring buffer (a power of two, whole pages).
pub const NETNS_SEEN_BYTES: u32 = 64 * 1024;

/// One endpoint: family, address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SocketKey {
    pub addr: [u32; 4],
    /// Host byte order.
    pub port: u16,
    pub family: u16,
}

/// What the connect hook remembers about a redirected connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst {
    /// Where the application wanted to go.
    pub dst: SocketKey,
    /// Thread group id (process id) of the task that called connect().
    pub tgid: u32,
    /// `comm` of that task, NUL padded.
    pub comm: [u8; 16],
    /// Cookie of the network namespace the connect came from.
    pub netns: u64,
}

/// A client endpoint in a network namespace: what the agent sees as the peer of
/// a socket its listener in that namespace accepted. Endpoints alone are not
/// unique: every container has its own 127.0.0.1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientKey {
    pub netns: u64,
    pub endpoint: SocketKey,
    pub reserved: u32,
}

/// The agent's listener inside one network namespace: 127.0.0.1 (and ::1 when
/// `has_v6`) on `port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetnsListener {
    /// Host byte order.
    pub port: u32,
    pub has_v6: u32,
}

/// A selected connect from a network namespace without a listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NetnsSeen {
    pub netns: u64,
    /// The process that connected (its `/proc/PID/ns/net` is the namespace).
    pub tgid: u32,
    pub reserved: u32,
}

/// Load-time settings of the eBPF programs (a read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AgentConfig {
    /// Network namespace cookie of the agent: only sockets in this namespace
    /// are redirected (the listener is on loopback, which is per namespace).
    /// Stays the first member: `exec` reads it from agents of any version.
    pub netns_cookie: u64,
    /// Listener for IPv6 clients (normally ::1).
    pub listen_v6: [u32; 4],
    /// Listener for IPv4 clients and IPv4-mapped IPv6 clients (normally 127.0.0.1).
    pub listen_v4: u32,
    /// Listener port, host byte order.
    pub listen_port: u32,
    /// The agent's own process: its sockets are never redirected.
    pub agent_tgid: u32,
    /// SO_MARK the agent puts on its upstream sockets: never redirected either.
    pub agent_mark: u32,
    /// Non-zero when `--include` networks were given: only destinations inside one
    /// of them (the `INCLUDED_V4`/`INCLUDED_V6` maps) are captured.
    pub include_only: u32,
    /// Keeps the size a multiple of 8 with no hidden padding.
    pub reserved: u32,
}

/// Counters in the `STATS` per-CPU array.
pub mod stat {
    pub const REDIRECTED: u32 = 0;
    pub const SKIPPED_AGENT: u32 = 1;
    pub const SKIPPED_EXCLUDED: u32 = 2;
    pub const SKIPPED_OTHER_NETNS: u32 = 3;
    pub const ESTABLISHED: u32 = 4;
    pub const PEERNAME_REWRITTEN: u32 = 5;
    pub const MAP_FULL: u32 = 6;
    pub const SKIPPED_NOT_INCLUDED: u32 = 7;
    pub const SKIPPED_PAUSED: u32 = 8;
    /// Redirected to a listener in another network namespace (a container's).
    pub const REDIRECTED_OTHER_NETNS: u32 = 9;
    pub const COUNT: u32 = 10;
    pub const NAMES: [&str; COUNT as usize] = [
        "redirected",
        "skipped_agent",
        "skipped_excluded",
        "skipped_other_netns",
        "established",
        "peername_rewritten",
        "map_update_failed",
        "skipped_not_included",
        "skipped_paused",
        "redirected_other_netns",
    ];
}

/// The value the agent puts on its own upstream sockets (SO_MARK), "ft" + 0x0001.
pub const DEFAULT_AGENT_MARK: u32 = 0x6674_0001;

impl SocketKey {
    pub const fn v4(addr_word: u32, port: u16) -> Self {
        Self {
            addr: [addr_word, 0, 0, 0],
            port,
            family: AF_INET,
        }
    }

    pub const fn v6(addr: [u32; 4], port: u16) -> Self {
        Self {
            addr,
            port,
            family: AF_INET6,
        }
    }
}

/// Is `addr` an IPv4-mapped IPv6 address (::ffff:a.b.c.d)? Words are in memory order.
#[inline(always)]
pub const fn is_v4_mapped(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

#[cfg(feature = "user")]
mod user {
    extern crate std;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::*;

    // SAFETY: plain #[repr(C)] data with no padding and no invalid bit patterns.
    unsafe impl aya::Pod for SocketKey {}
    unsafe impl aya::Pod for OriginalDst {}
    unsafe impl aya::Pod for AgentConfig {}
    unsafe impl aya::Pod for ClientKey {}
    unsafe impl aya::Pod for NetnsListener {}
    unsafe impl aya::Pod for NetnsSeen {}

    fn words(octets: [u8; 16]) -> [u32; 4] {
        let mut w = [0u32; 4];
        for (i, chunk) in octets.chunks_exact(4).enumerate() {
            w[i] = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        w
    }

    fn octets(words: [u32; 4]) -> [u8; 16] {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        o
    }

    impl SocketKey {
        /// The key under which the eBPF side files a client endpoint. IPv4-mapped
        /// IPv6 addresses are filed as IPv4, the way the kernel reports them.
        pub fn from_socket_addr(addr: SocketAddr) -> Self {
            match addr {
                SocketAddr::V4(a) => Self::v4(u32::from_ne_bytes(a.ip().octets()), a.port()),
                SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                    Some(v4) => Self::v4(u32::from_ne_bytes(v4.octets()), a.port()),
                    None => Self::v6(words(a.ip().octets()), a.port()),
                },
            }
        }

        pub fn to_socket_addr(&self) -> SocketAddr {
            let ip = if self.family == AF_INET {
                IpAddr::V4(Ipv4Addr::from(self.addr[0].to_ne_bytes()))
            } else {
                IpAddr::V6(Ipv6Addr::from(octets(self.addr)))
            };
            SocketAddr::new(ip, self.port)
        }
    }

    impl OriginalDst {
        /// The process name, as far as the kernel's 16-byte `comm` goes.
        pub fn comm(&self) -> std::string::String {
            let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
            std::string::String::from_utf8_lossy(&self.comm[..end]).into_owned()
        }
    }

    impl AgentConfig {
        pub fn new(listen_v4: Ipv4Addr, listen_v6: Ipv6Addr, port: u16) -> Self {
            Self {
                netns_cookie: 0,
                listen_v6: words(listen_v6.octets()),
                listen_v4: u32::from_ne_bytes(listen_v4.octets()),
                listen_port: port as u32,
                agent_tgid: 0,
                agent_mark: DEFAULT_AGENT_MARK,
                include_only: 0,
                reserved: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::mem::{align_of, size_of};
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<SocketKey>(), 20);
        assert_eq!(align_of::<SocketKey>(), 4);
        assert_eq!(size_of::<OriginalDst>(), 48);
        assert_eq!(core::mem::offset_of!(OriginalDst, netns), 40);
        assert_eq!(size_of::<ClientKey>(), 32);
        assert_eq!(core::mem::offset_of!(ClientKey, endpoint), 8);
        assert_eq!(size_of::<NetnsListener>(), 8);
        assert_eq!(size_of::<NetnsSeen>(), 16);
        assert_eq!(size_of::<AgentConfig>(), 48);
        assert_eq!(align_of::<AgentConfig>(), 8);
        assert_eq!(core::mem::offset_of!(SocketKey, port), 16);
        assert_eq!(core::mem::offset_of!(SocketKey, family), 18);
        assert_eq!(core::mem::offset_of!(OriginalDst, tgid), 20);
        assert_eq!(core::mem::offset_of!(AgentConfig, netns_cookie), 0);
        assert_eq!(core::mem::offset_of!(AgentConfig, listen_v4), 24);
        assert_eq!(core::mem::offset_of!(AgentConfig, include_only), 40);
    }

    #[test]
    fn v4_mapped_detection() {
        let mapped = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), 1];
        assert!(is_v4_mapped(&mapped));
        assert!(!is_v4_mapped(&[0, 0, 0, 1]));
    }

    #[cfg(feature = "user")]
    #[test]
    fn socket_key_round_trips_and_files_mapped_as_v4() {
        for s in ["10.1.2.3:443", "[fd00::2]:80", "[::1]:15001"] {
            let addr: SocketAddr = s.parse().unwrap();
            let key = SocketKey::from_socket_addr(addr);
            assert_eq!(key.to_socket_addr(), addr, "{s}");
        }
        let v4 = SocketKey::from_socket_addr("10.1.2.3:443".parse().unwrap());
        // Memory order of the word is the octet order, as the kernel stores it.
        assert_eq!(v4.addr[0].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(v4.family, AF_INET);
        let mapped = SocketKey::from_socket_addr("[::ffff:10.1.2.3]:443".parse().unwrap());
        assert_eq!(mapped, v4);
    }

    #[cfg(feature = "user")]
    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let o = OriginalDst {
            dst: SocketKey::default(),
            tgid: 1,
            comm,
            netns: 0,
        };
        assert_eq!(o.comm(), "curl");
    }
}
