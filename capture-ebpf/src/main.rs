//! frametap's eBPF programs.
//!
//! * `ft_connect4` / `ft_connect6` (cgroup/connect4|6): for a TCP connect from a
//!   selected cgroup to a selected port, remember the original destination under the
//!   socket cookie and rewrite the destination to the agent's loopback listener: the
//!   one in the agent's namespace, or the one the agent opened inside the
//!   connecting socket's network namespace (a container's). A namespace without
//!   one yet is announced to the agent and its connect left alone.
//! * `ft_sockops` (sock_ops): when such a connection is established, file the original
//!   destination under the client's (address, port), which is what the agent sees as
//!   the peer of the accepted socket; forget both entries when the socket closes.
//! * `ft_getpeer4` / `ft_getpeer6` (cgroup/getpeername4|6): the application still sees
//!   the original destination as its peer.
//!
//! Everything here fails open: a socket we cannot account for is left alone.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{SockAddrContext, SockOpsContext},
};
use capture_common::{
    AF_INET, AF_INET6, AgentConfig, ClientKey, EXCLUDED_CAPACITY, INCLUDED_CAPACITY,
    NETNS_CAPACITY, NETNS_SEEN_BYTES, NetnsListener, NetnsSeen, ORIGINAL_MAP_CAPACITY, OriginalDst,
    SELECTED_PORTS_CAPACITY, SocketKey, is_v4_mapped, stat,
};

const SOCK_STREAM: u32 = 1;
// include/uapi/linux/bpf.h
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;
const BPF_SOCK_OPS_STATE_CB: u32 = 10;
const BPF_SOCK_OPS_STATE_CB_FLAG: u32 = 1 << 2;
const BPF_TCP_CLOSE: u32 = 7;

/// Set by the agent at load time (aya `EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static AGENT: AgentConfig = AgentConfig {
    netns_cookie: 0,
    listen_v6: [0; 4],
    listen_v4: 0,
    listen_port: 0,
    agent_tgid: 0,
    agent_mark: 0,
    include_only: 0,
    reserved: 0,
};

#[map]
static ORIGINAL_BY_COOKIE: LruHashMap<u64, OriginalDst> =
    LruHashMap::with_max_entries(ORIGINAL_MAP_CAPACITY, 0);

#[map]
static ORIGINAL_BY_CLIENT: LruHashMap<ClientKey, OriginalDst> =
    LruHashMap::with_max_entries(ORIGINAL_MAP_CAPACITY, 0);

/// The agent's listener in each other network namespace it serves.
#[map]
static NETNS_LISTENERS: HashMap<u64, NetnsListener> = HashMap::with_max_entries(NETNS_CAPACITY, 0);

/// Selected connects from namespaces without a listener, for the agent to serve.
#[map]
static NETNS_SEEN: RingBuf = RingBuf::with_byte_size(NETNS_SEEN_BYTES, 0);

/// Namespaces announced on NETNS_SEEN and not answered yet: announced once.
#[map]
static NETNS_ANNOUNCED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(NETNS_CAPACITY, 0);

/// Destination ports to capture (host byte order).
#[map]
static SELECTED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(SELECTED_PORTS_CAPACITY, 0);

/// Destination networks never captured. Key data: the address octets. LPM tries
/// because one longest-prefix lookup of the full address answers "inside any of
/// these networks?" however many there are and however they overlap; an array would
/// need a bounded loop over every entry on each connect.
#[map]
static EXCLUDED_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(EXCLUDED_CAPACITY, 0);
#[map]
static EXCLUDED_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(EXCLUDED_CAPACITY, 0);

/// With `AGENT.include_only` set, the only destination networks captured.
#[map]
static INCLUDED_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(INCLUDED_CAPACITY, 0);
#[map]
static INCLUDED_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(INCLUDED_CAPACITY, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Index 0 non-zero: the agent is out of file descriptors, so new connects go direct
/// until it clears the flag (it must never be handed a connection it cannot take).
#[map]
static PAUSED: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn agent() -> AgentConfig {
    // SAFETY: read-only global; volatile so the loader's value is read, not the default.
    unsafe { core::ptr::read_volatile(&AGENT) }
}

#[inline(always)]
fn word_octets(w: u32) -> [u8; 4] {
    w.to_ne_bytes()
}

#[inline(always)]
fn v6_octets(w: &[u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_ne_bytes(),
        w[1].to_ne_bytes(),
        w[2].to_ne_bytes(),
        w[3].to_ne_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// Is the destination inside one of the networks of this pair of tries? IPv4-mapped
/// destinations arrive here as IPv4 (see ft_connect6), so IPv4 networks cover them.
#[inline(always)]
fn in_networks(v4: &LpmTrie<[u8; 4], u8>, v6: &LpmTrie<[u8; 16], u8>, dst: &SocketKey) -> bool {
    if dst.family == AF_INET {
        v4.get(&Key::new(32, word_octets(dst.addr[0]))).is_some()
    } else {
        v6.get(&Key::new(128, v6_octets(&dst.addr))).is_some()
    }
}

/// Where a selected connect goes: the agent's listener in the socket's namespace.
#[derive(Clone, Copy)]
struct Target {
    v4: u32,
    /// All zero: no IPv6 listener.
    v6: [u32; 4],
    port: u32,
    /// In a namespace other than the agent's.
    other_netns: bool,
}

const LOOPBACK_V4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
const LOOPBACK_V6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

/// The listener serving `netns`, if any. A namespace without one is announced
/// (once) so that the agent opens one; until then its connects go direct.
#[inline(always)]
fn target_in(cfg: &AgentConfig, netns: u64) -> Option<Target> {
    if cfg.netns_cookie == 0 || netns == cfg.netns_cookie {
        return Some(Target {
            v4: cfg.listen_v4,
            v6: cfg.listen_v6,
            port: cfg.listen_port,
            other_netns: false,
        });
    }
    // SAFETY: lookup of a u64 key in a hash map.
    if let Some(l) = unsafe { NETNS_LISTENERS.get(&netns) } {
        return Some(Target {
            v4: LOOPBACK_V4,
            v6: if l.has_v6 != 0 { LOOPBACK_V6 } else { [0; 4] },
            port: l.port,
            other_netns: true,
        });
    }
    count(stat::SKIPPED_OTHER_NETNS);
    // SAFETY: lookup of a u64 key in an LRU hash map.
    if unsafe { NETNS_ANNOUNCED.get(&netns) }.is_none()
        && NETNS_ANNOUNCED.insert(&netns, &1, 0).is_ok()
    {
        let seen = NetnsSeen {
            netns,
            tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
            reserved: 0,
        };
        // A full ring loses the event; the agent's periodic scan still finds it.
        let _ = NETNS_SEEN.output(&seen, 0);
    }
    None
}

/// Why not: every check that keeps a connect away from the agent. `Some`: where
/// the connect goes instead.
#[inline(always)]
fn selected(ctx: &SockAddrContext, cfg: &AgentConfig, dst: &SocketKey) -> Option<Target> {
    // SAFETY: ctx pointer is valid for the program's lifetime.
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    if unsafe { core::ptr::read_volatile(&sa.type_) } != SOCK_STREAM {
        return None;
    }
    // SAFETY: lookup of a u16 key in a hash map.
    unsafe { SELECTED_PORTS.get(&dst.port) }?;
    // Never the agent itself: by process and by the mark on its upstream sockets.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.agent_tgid {
        count(stat::SKIPPED_AGENT);
        return None;
    }
    if PAUSED.get(0).is_some_and(|&paused| paused != 0) {
        count(stat::SKIPPED_PAUSED);
        return None;
    }
    let sk = unsafe { core::ptr::read_volatile(&sa.__bindgen_anon_1) };
    let sk = unsafe { sk.sk };
    if !sk.is_null() && unsafe { (*sk).mark } == cfg.agent_mark {
        count(stat::SKIPPED_AGENT);
        return None;
    }
    // Exclusions win over inclusions: an address in both is not captured.
    if in_networks(&EXCLUDED_V4, &EXCLUDED_V6, dst) {
        count(stat::SKIPPED_EXCLUDED);
        return None;
    }
    if cfg.include_only != 0 && !in_networks(&INCLUDED_V4, &INCLUDED_V6, dst) {
        count(stat::SKIPPED_NOT_INCLUDED);
        return None;
    }
    // The listener is on loopback, which is per namespace.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    target_in(cfg, netns)
}

/// Remember where the socket wanted to go. False when the map refused the entry,
/// in which case the connect must go through untouched.
#[inline(always)]
fn remember(ctx: &SockAddrContext, dst: SocketKey) -> bool {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let original = OriginalDst {
        dst,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        netns: unsafe { bpf_get_netns_cookie(ctx.as_ptr()) },
    };
    if ORIGINAL_BY_COOKIE.insert(&cookie, &original, 0).is_err() {
        count(stat::MAP_FULL);
        return false;
    }
    true
}

#[inline(always)]
fn count_redirect(target: &Target) {
    count(if target.other_netns {
        stat::REDIRECTED_OTHER_NETNS
    } else {
        stat::REDIRECTED
    });
}

#[cgroup_sock_addr(connect4)]
pub fn ft_connect4(ctx: SockAddrContext) -> i32 {
    let cfg = agent();
    let sa = ctx.sock_addr;
    // SAFETY: 4-byte reads and writes of bpf_sock_addr fields, as the verifier requires.
    unsafe {
        let ip = core::ptr::read_volatile(&(*sa).user_ip4);
        let port = u16::from_be(core::ptr::read_volatile(&(*sa).user_port) as u16);
        let dst = SocketKey::v4(ip, port);
        let Some(target) = selected(&ctx, &cfg, &dst) else {
            return 1;
        };
        if ip == target.v4 && port as u32 == target.port {
            return 1;
        }
        if !remember(&ctx, dst) {
            return 1;
        }
        core::ptr::write_volatile(&mut (*sa).user_ip4, target.v4);
        core::ptr::write_volatile(&mut (*sa).user_port, (target.port as u16).to_be() as u32);
        count_redirect(&target);
    }
    1
}

#[inline(always)]
unsafe fn read_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    unsafe {
        [
            core::ptr::read_volatile(&(*sa).user_ip6[0]),
            core::ptr::read_volatile(&(*sa).user_ip6[1]),
            core::ptr::read_volatile(&(*sa).user_ip6[2]),
            core::ptr::read_volatile(&(*sa).user_ip6[3]),
        ]
    }
}

#[inline(always)]
unsafe fn write_ip6(sa: *mut bpf_sock_addr, w: [u32; 4]) {
    unsafe {
        core::ptr::write_volatile(&mut (*sa).user_ip6[0], w[0]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[1], w[1]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[2], w[2]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[3], w[3]);
    }
}

const V4_MAPPED_PREFIX: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[cgroup_sock_addr(connect6)]
pub fn ft_connect6(ctx: SockAddrContext) -> i32 {
    let cfg = agent();
    let sa = ctx.sock_addr;
    // SAFETY: as in ft_connect4.
    unsafe {
        let ip = read_ip6(sa);
        let port = u16::from_be(core::ptr::read_volatile(&(*sa).user_port) as u16);
        // A dual-stack socket connecting to ::ffff:a.b.c.d is an IPv4 connection.
        let mapped = is_v4_mapped(&ip);
        let dst = if mapped {
            SocketKey::v4(ip[3], port)
        } else {
            SocketKey::v6(ip, port)
        };
        let Some(target) = selected(&ctx, &cfg, &dst) else {
            return 1;
        };
        let (listen, is_listener) = if mapped {
            ([0, 0, V4_MAPPED_PREFIX, target.v4], ip[3] == target.v4)
        } else {
            (target.v6, ip == target.v6)
        };
        if is_listener && port as u32 == target.port {
            return 1;
        }
        // No IPv6 listener (IPv6 is off in that namespace): leave IPv6 alone.
        if !mapped && target.v6 == [0; 4] {
            return 1;
        }
        if !remember(&ctx, dst) {
            return 1;
        }
        write_ip6(sa, listen);
        core::ptr::write_volatile(&mut (*sa).user_port, (target.port as u16).to_be() as u32);
        count_redirect(&target);
    }
    1
}

#[sock_ops]
pub fn ft_sockops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_established(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    1
}

/// The client's own endpoint: what the agent sees as the peer of the accepted socket.
#[inline(always)]
fn client_key(ctx: &SockOpsContext) -> SocketKey {
    let port = ctx.local_port() as u16;
    if ctx.family() == AF_INET as u32 {
        return SocketKey::v4(ctx.local_ip4(), port);
    }
    let ip = ctx.local_ip6();
    if is_v4_mapped(&ip) {
        SocketKey::v4(ip[3], port)
    } else {
        SocketKey::v6(ip, port)
    }
}

#[inline(always)]
fn on_established(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(original) = (unsafe { ORIGINAL_BY_COOKIE.get(&cookie) }) else {
        return;
    };
    let original = *original;
    let family = ctx.family();
    if family != AF_INET as u32 && family != AF_INET6 as u32 {
        return;
    }
    let key = ClientKey {
        netns: original.netns,
        endpoint: client_key(ctx),
        reserved: 0,
    };
    if ORIGINAL_BY_CLIENT.insert(&key, &original, 0).is_err() {
        count(stat::MAP_FULL);
        return;
    }
    // Ask for state callbacks so both entries go when the socket closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    count(stat::ESTABLISHED);
}

#[inline(always)]
fn on_close(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(original) = (unsafe { ORIGINAL_BY_COOKIE.get(&cookie) }) else {
        return;
    };
    let key = ClientKey {
        netns: original.netns,
        endpoint: client_key(ctx),
        reserved: 0,
    };
    let _ = ORIGINAL_BY_CLIENT.remove(&key);
    let _ = ORIGINAL_BY_COOKIE.remove(&cookie);
}

#[inline(always)]
fn original_of(ctx: &SockAddrContext) -> Option<OriginalDst> {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    unsafe { ORIGINAL_BY_COOKIE.get(&cookie) }.copied()
}

#[cgroup_sock_addr(getpeername4)]
pub fn ft_getpeer4(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_of(&ctx)
        && original.dst.family == AF_INET
    {
        let sa = ctx.sock_addr;
        // SAFETY: 4-byte writes of bpf_sock_addr fields.
        unsafe {
            core::ptr::write_volatile(&mut (*sa).user_ip4, original.dst.addr[0]);
            core::ptr::write_volatile(&mut (*sa).user_port, original.dst.port.to_be() as u32);
        }
        count(stat::PEERNAME_REWRITTEN);
    }
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn ft_getpeer6(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_of(&ctx) {
        let ip = if original.dst.family == AF_INET {
            [0, 0, V4_MAPPED_PREFIX, original.dst.addr[0]]
        } else {
            original.dst.addr
        };
        let sa = ctx.sock_addr;
        // SAFETY: 4-byte writes of bpf_sock_addr fields.
        unsafe {
            write_ip6(sa, ip);
            core::ptr::write_volatile(&mut (*sa).user_port, original.dst.port.to_be() as u32);
        }
        count(stat::PEERNAME_REWRITTEN);
    }
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
