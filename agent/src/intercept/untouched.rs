//! Connections relayed untouched: a host on the passthrough list, a server that picks
//! h2, a server that speaks first, bytes that are neither TLS nor HTTP. frametap
//! does not interpret them, but lists each one in the traffic list, so a user can see
//! that it happened and why.
//!
//! Recorded as two records, each key written once: the traffic entry when the
//! connection starts (a long-lived tunnel is listed while open), and a
//! [`TunnelEnd`] with bytes and duration when it ends, which readers merge in.
use std::net::SocketAddr;

use frametap_session::{Ending, Peer};
use frametap_store::{Record, TrafficEntry, TunnelEnd};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

use super::outcome::{End, Outcome};
use crate::{
    context::{ConnectionInfo, ProxyContext},
    recorder::now_ms,
    relay,
};

/// What is known about a connection relayed untouched.
#[derive(Clone, Debug, Default)]
pub struct Untouched {
    /// `tls` when it began with a ClientHello, else `tcp`.
    pub protocol: &'static str,
    pub sni: Option<String>,
    pub alpn_offered: Vec<String>,
    pub alpn_selected: Option<String>,
    /// Why frametap did not intercept it.
    pub reason: String,
}

impl Untouched {
    /// Bytes that are not TLS (or a server that spoke first, ...).
    pub fn tcp(reason: impl Into<String>) -> Self {
        Self {
            protocol: "tcp",
            reason: reason.into(),
            ..Self::default()
        }
    }

    /// The traffic entry written when the connection starts.
    pub fn start_entry(&self, ctx: &ProxyContext, info: &ConnectionInfo) -> TrafficEntry {
        let dst = info.destination();
        let host = self.sni.clone().unwrap_or_else(|| dst.ip().to_string());
        TrafficEntry {
            id: ctx.recorder.ids.next(now_ms()),
            timestamp_ms: now_ms(),
            conn_id: info.id,
            url: url(self.protocol, &host, dst),
            protocol: self.protocol.into(),
            host,
            remote_address: dst.to_string(),
            client_address: info.client_addr.to_string(),
            pid: (info.original.tgid != 0).then_some(info.original.tgid),
            process: Some(info.process.clone()).filter(|c| !c.is_empty()),
            sni: self.sni.clone(),
            not_intercepted: Some(self.reason.clone()),
            alpn_offered: self.alpn_offered.clone(),
            alpn_selected: self.alpn_selected.clone(),
            ..info.origin.entry_base()
        }
    }
}

/// `tls://name:443`, `tcp://10.0.0.7:5432` (IPv6 in brackets).
fn url(protocol: &str, host: &str, dst: SocketAddr) -> String {
    if host.contains(':') {
        format!("{protocol}://[{host}]:{}", dst.port())
    } else {
        format!("{protocol}://{host}:{}", dst.port())
    }
}

/// Relay `client` and `upstream` unchanged (the client's `prefix`, already read,
/// goes first), recording the connection at its start and its end.
pub async fn relay(
    ctx: &ProxyContext,
    client: TcpStream,
    mut upstream: TcpStream,
    prefix: Vec<u8>,
    info: &ConnectionInfo,
    untouched: Untouched,
) -> Outcome {
    let entry = untouched.start_entry(ctx, info);
    let id = entry.id;
    // The prefix goes out before the record is written: the server is already at
    // work while the store takes the entry.
    let sent = prefix.is_empty() || upstream.write_all(&prefix).await.is_ok();
    ctx.recorder
        .persist(vec![Record::Traffic(entry)], None)
        .await;
    let (up, down, end, error) = if sent {
        let out = relay::relay(client, upstream, ctx.intercept.half_open_timeout).await;
        (
            out.client_to_server + prefix.len() as u64,
            out.server_to_client,
            out.end,
            None,
        )
    } else {
        relay::reset_on_close(&client);
        (
            0,
            0,
            Ending::Reset(Peer::Server),
            Some(
                "the server closed the connection before the client's first bytes reached it"
                    .to_string(),
            ),
        )
    };
    finish(ctx, info, untouched, id, up, down, end, error).await
}

/// The client is relayed untouched, but the new connection to its server failed:
/// the client gets a reset (as if the server had refused it), and the attempt is
/// listed like any connection relayed untouched.
pub async fn refused(
    ctx: &ProxyContext,
    client: TcpStream,
    info: &ConnectionInfo,
    untouched: Untouched,
    error: String,
) -> Outcome {
    relay::reset_on_close(&client);
    drop(client);
    let entry = untouched.start_entry(ctx, info);
    let id = entry.id;
    ctx.recorder
        .persist(vec![Record::Traffic(entry)], None)
        .await;
    finish(
        ctx,
        info,
        untouched,
        id,
        0,
        0,
        Ending::Reset(Peer::Server),
        Some(error),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &ProxyContext,
    info: &ConnectionInfo,
    untouched: Untouched,
    id: frametap_store::TrafficId,
    bytes_up: u64,
    bytes_down: u64,
    end: Ending,
    error: Option<String>,
) -> Outcome {
    ctx.recorder
        .persist(
            vec![Record::TunnelEnd(TunnelEnd {
                traffic: id,
                timestamp_ms: now_ms(),
                duration_ms: info.accepted_at.elapsed().as_secs_f64() * 1e3,
                bytes_from_client: bytes_up,
                bytes_from_server: bytes_down,
                end: end.to_string(),
                error: error.clone(),
            })],
            None,
        )
        .await;
    Outcome {
        kind: untouched.protocol,
        bytes_up,
        bytes_down,
        end: End::Connection(end),
        warn: error.is_some(),
        error,
        not_intercepted: Some(untouched.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_protocol_host_and_port() {
        let v4: SocketAddr = "10.0.0.7:443".parse().unwrap();
        let v6: SocketAddr = "[fd77::2]:5432".parse().unwrap();
        assert_eq!(url("tls", "h2.test", v4), "tls://h2.test:443");
        assert_eq!(url("tcp", "10.0.0.7", v4), "tcp://10.0.0.7:443");
        assert_eq!(url("tcp", "fd77::2", v6), "tcp://[fd77::2]:5432");
    }
}
