//! The accept loop and the life of one redirected connection: find where the
//! client wanted to go, connect there, relay, and log what happened.
//!
//! Protocol handling (TLS, HTTP, WebSocket) plugs in at [`handle_redirected`], once
//! the original destination is known and the upstream socket is open.
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tracing::{debug, info, warn};

use crate::{
    context::{ConnectionInfo, ProxyContext, connect_upstream},
    intercept,
    netns::Netns,
    netns_listeners::Accepting,
    relay,
};

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
    let id = ctx.next_connection_id();
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
    let origin = crate::origin::origin_of(
        original.tgid,
        netns.as_ref().map(|n| n.inode),
        &ctx.intercept.names,
    );
    let process = crate::origin::process_name(original.tgid).unwrap_or_else(|| original.comm());
    let info = ConnectionInfo {
        id,
        client_addr,
        original,
        accepted_at,
        netns,
        origin,
        process,
    };
    handle_redirected(&ctx, client, info).await;
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
                    end: crate::intercept::End::UpstreamConnectFailed,
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
                comm = info.process.as_str(),
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
                end = %out.end,
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
