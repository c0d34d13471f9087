//! What a connection task has to work with: the settings and shared state of the
//! agent ([`ProxyContext`]), what is known about the connection once accepted
//! ([`ConnectionInfo`]), and how the upstream socket is opened.
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use capture_common::OriginalDst;
use tokio::net::{TcpSocket, TcpStream};

use crate::{
    capture::Capture, intercept::passthrough::Passthrough, netns::Netns, origin::Origin,
    recorder::Recorder, tls::TlsContext,
};

/// How long the agent waits for the original destination to accept.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the interception layer (TLS, HTTP, WebSocket recording).
pub struct InterceptSettings {
    pub tls: Arc<TlsContext>,
    pub passthrough: Passthrough,
    /// What every intercepted connection's session shares: traffic ids (the
    /// recorder's), the payload and body caps, the message rules, masking keys.
    pub session: frametap_session::Settings,
    /// Open WebSocket connections, for injecting messages.
    pub live: Arc<crate::live::LiveConnections>,
    /// What servers selected for clients offering more than http/1.1.
    pub alpn: crate::intercept::alpn::AlpnCache,
    /// How long TLS handshakes (both legs) may take after the ClientHello.
    pub handshake_timeout: Duration,
    /// How long one side may stay silent after the other closed its half.
    pub half_open_timeout: Option<Duration>,
    /// Container names, for the records.
    pub names: Arc<crate::containers::ContainerNames>,
}

/// What every connection task shares.
pub struct ProxyContext {
    pub capture: Arc<Capture>,
    /// Told when an accept fails for lack of file descriptors.
    pub fds: Arc<crate::fd_budget::FdGuard>,
    /// SO_MARK on upstream sockets, so the eBPF hooks leave them alone.
    pub mark: u32,
    pub intercept: InterceptSettings,
    pub recorder: Recorder,
    next_id: AtomicU64,
}

impl ProxyContext {
    pub fn new(
        capture: Arc<Capture>,
        fds: Arc<crate::fd_budget::FdGuard>,
        mark: u32,
        intercept: InterceptSettings,
        recorder: Recorder,
    ) -> Self {
        Self {
            capture,
            fds,
            mark,
            intercept,
            recorder,
            next_id: AtomicU64::new(1),
        }
    }

    /// The id of the next accepted connection (for logs and records).
    pub fn next_connection_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// What is known about a redirected connection once it is accepted.
pub struct ConnectionInfo {
    pub id: u64,
    pub client_addr: SocketAddr,
    pub original: OriginalDst,
    pub accepted_at: Instant,
    /// The client's network namespace when it is not the agent's (a container's):
    /// the upstream connection is made from there.
    pub netns: Option<Arc<Netns>>,
    /// The client's cgroup, network namespace and container.
    pub origin: Origin,
    /// The client process's name (see [`crate::origin::process_name`]).
    pub process: String,
}

impl ConnectionInfo {
    pub fn destination(&self) -> SocketAddr {
        self.original.dst.to_socket_addr()
    }

    /// The facts every record of this connection's session carries.
    pub fn session_meta(
        &self,
        tls: bool,
        sni: Option<String>,
        tls_version: Option<String>,
    ) -> frametap_session::SessionMeta {
        frametap_session::SessionMeta {
            conn_id: self.id,
            tls,
            tls_version,
            sni,
            client_address: self.client_addr.to_string(),
            server_address: self.destination().to_string(),
            pid: (self.original.tgid != 0).then_some(self.original.tgid),
            process: Some(self.process.clone()).filter(|c| !c.is_empty()),
            alpn_offered: Vec::new(),
            alpn_selected: None,
            origin: self.origin.clone(),
        }
    }
}

/// Open the agent's own connection to the original destination, from the
/// client's network namespace (its routes, DNS answer, firewall and NAT). The mark
/// keeps the eBPF hooks from redirecting it back to us.
pub async fn connect_upstream(
    dst: SocketAddr,
    mark: u32,
    netns: Option<&Netns>,
) -> std::io::Result<TcpStream> {
    let socket = match netns {
        Some(n) => TcpSocket::from_std_stream(n.socket_for(dst)?.into()),
        None => match dst {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        },
    };
    socket2::SockRef::from(&socket).set_mark(mark)?;
    socket.set_nodelay(true)?;
    match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, socket.connect(dst)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}s", UPSTREAM_CONNECT_TIMEOUT.as_secs()),
        )),
    }
}
