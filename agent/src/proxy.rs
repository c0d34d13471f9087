//! The accept loop and the life of one redirected connection: find where the
//! client wanted to go, connect there, relay, and log what happened.
//!
//! Protocol handling (TLS, HTTP, WebSocket) plugs in at [`handle_redirected`], once
//! the original destination is known and the upstream socket is open.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use capture_common::OriginalDst;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{mpsc, watch},
};
use tracing::{debug, info, warn};

use crate::{
    capture::Capture,
    intercept::{self, Passthrough},
    netns::Netns,
    netns_listeners::Accepting,
    origin::Origin,
    recorder::Recorder,
    relay,
    tls::TlsContext,
};

/// How long the agent waits for the original destination to accept.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the interception layer (TLS, HTTP, WebSocket recording).
pub struct InterceptSettings {
    pub tls: Arc<TlsContext>,
    pub passthrough: Passthrough,
    /// Most payload bytes stored per frame; the rest is counted only. Also the
    /// most a message rule holds back before letting a message through unexamined.
    pub payload_cap: usize,
    /// Most bytes stored of each HTTP request and response body (0: none); the
    /// rest is counted only.
    pub body_cap: u64,
    /// Message rules (drop, replace, close).
    pub rules: Arc<crate::rules::RuleBook>,
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
}

impl ConnectionInfo {
    pub fn destination(&self) -> SocketAddr {
        self.original.dst.to_socket_addr()
    }
}

/// Accept until `shutdown` turns true, then wait for open connections to finish
/// (at most `grace`). Each connection task holds a clone of `drain_tx`; when the
/// last one is gone, `drain_rx` yields None (mini-redis's shutdown pattern).
/// Listeners in other network namespaces arrive on `more` while running.
pub async fn serve(
    listeners: Vec<TcpListener>,
    mut more: mpsc::UnboundedReceiver<Accepting>,
    ctx: Arc<ProxyContext>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    let mut accepts: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                None,
                Arc::clone(&ctx),
                shutdown.clone(),
                drain_tx.clone(),
            ))
        })
        .collect();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepting = more.recv() => {
                let Some(Accepting { listener, netns, stop }) = accepting else { break };
                match TcpListener::from_std(listener) {
                    Ok(listener) => accepts.push(tokio::spawn(accept_loop(
                        listener,
                        Some((netns, stop)),
                        Arc::clone(&ctx),
                        shutdown.clone(),
                        drain_tx.clone(),
                    ))),
                    Err(e) => warn!(error = %e, "cannot serve a listener in another network namespace"),
                }
            }
        }
    }
    drop(drain_tx);
    for a in accepts {
        let _ = a.await;
    }
    if tokio::time::timeout(Duration::from_millis(1), drain_rx.recv())
        .await
        .is_err()
    {
        info!(
            grace_s = grace.as_secs(),
            "waiting for open connections to finish"
        );
        if tokio::time::timeout(grace, drain_rx.recv()).await.is_err() {
            warn!("closing connections still open after the grace period");
        }
    }
}

/// A listener in another namespace, and what closes when it stops being served.
type InNetns = (Arc<Netns>, watch::Receiver<()>);

async fn accept_loop(
    listener: TcpListener,
    mut netns: Option<InNetns>,
    ctx: Arc<ProxyContext>,
    mut shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    loop {
        let unserved = async {
            match netns.as_mut() {
                Some((_, stop)) => {
                    let _ = stop.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            () = unserved => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.fds.accepted(std::os::fd::AsRawFd::as_raw_fd(&stream));
                    let ctx = Arc::clone(&ctx);
                    let drain = drain.clone();
                    let netns = netns.as_ref().map(|(n, _)| Arc::clone(n));
                    tokio::spawn(async move {
                        accept_one(ctx, stream, peer, netns).await;
                        drop(drain);
                    });
                }
                // EMFILE and friends: new connects go direct until descriptors are
                // free (the ones waiting in the backlog are taken then); back off
                // instead of spinning.
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        ctx.fds.report_out_of_fds();
                    }
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn accept_one(
    ctx: Arc<ProxyContext>,
    client: TcpStream,
    client_addr: SocketAddr,
    netns: Option<Arc<Netns>>,
) {
    let accepted_at = Instant::now();
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let cookie = netns
        .as_ref()
        .map_or(ctx.capture.netns_cookie, |n| n.cookie);
    let Some(original) = ctx.capture.take_original_dst(cookie, client_addr) else {
        // Someone connected to the listener directly; relaying it to ourselves would loop.
        warn!(
            conn = id,
            client = %client_addr,
            "connection was not redirected by frametap (no original destination): closed"
        );
        return;
    };
    let _ = client.set_nodelay(true);
    let origin = Origin::of(
        original.tgid,
        netns.as_ref().map(|n| n.inode),
        &ctx.intercept.names,
    );
    let info = ConnectionInfo {
        id,
        client_addr,
        original,
        accepted_at,
        netns,
        origin,
    };
    handle_redirected(&ctx, client, info).await;
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

/// The per-connection pipeline: connect upstream, then intercept (or relay).
pub async fn handle_redirected(ctx: &ProxyContext, client: TcpStream, info: ConnectionInfo) {
    let dst = info.destination();
    debug!(conn = info.id, client = %info.client_addr, original_dst = %dst, pid = info.original.tgid, "accepted");
    let upstream = match connect_upstream(dst, ctx.mark, info.netns.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            // The client's connect already succeeded (to us): the closest thing to
            // "connection refused" we can give it now is a reset.
            relay::reset_on_close(&client);
            log_closed(
                &info,
                &intercept::Outcome {
                    kind: "tcp",
                    bytes_up: 0,
                    bytes_down: 0,
                    end: "upstream connect failed".into(),
                    error: Some(e.to_string()),
                    warn: false,
                    not_intercepted: None,
                },
            );
            return;
        }
    };
    let out = intercept::handle(ctx, client, upstream, &info).await;
    log_closed(&info, &out);
}

/// One line per connection: who, where to, what, how much, how long, how it ended;
/// a warning when something failed that the user can fix (a TLS handshake).
fn log_closed(info: &ConnectionInfo, out: &intercept::Outcome) {
    macro_rules! line {
        ($level:ident) => {
            $level!(
                conn = info.id,
                pid = info.original.tgid,
                comm = info.original.comm(),
                cgroup = info.origin.cgroup.as_deref(),
                container = info.origin.container_id.as_deref(),
                container_name = info.origin.container_name.as_deref(),
                netns = info.origin.netns,
                client = %info.client_addr,
                original_dst = %info.destination(),
                kind = out.kind,
                bytes_up = out.bytes_up,
                bytes_down = out.bytes_down,
                duration_ms = frametap_logging::millis(info.accepted_at.elapsed()),
                end = out.end.as_str(),
                not_intercepted = out.not_intercepted.as_deref(),
                error = out.error.as_deref(),
                "connection closed"
            )
        };
    }
    if out.warn {
        line!(warn);
    } else {
        line!(info);
    }
}
