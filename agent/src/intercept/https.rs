//! A connection that began with a TLS ClientHello: intercept it (terminate TLS with
//! a minted leaf, open a verified TLS connection upstream, record HTTP/1.1), or relay
//! it untouched when interception would change what the application gets.
//!
//! * Relayed untouched: hosts on `--passthrough`, clients that do not offer
//!   `http/1.1`, servers that select another protocol (h2) for the client's offer,
//!   and leaves that cannot be minted. See [`super::alpn`] for how the server's
//!   choice is learned before the client leg is committed.
//! * Upstream handshake failed (say, a private CA): the client still gets its TLS
//!   leg, its request head is read (bounded in size and time) and answered with a
//!   `502` that says why and what fixes it; the exchange is recorded with the request.
//! * Client leg failed: usually the client does not trust the frametap CA; recorded
//!   with what to install.
use std::{
    os::fd::{AsRawFd as _, RawFd},
    time::{Duration, Instant},
};

use frametap_proto::{
    http1::{Header, Http1Conn, HttpEvent, RequestHead, ResponseHead},
    tls_hello::ClientHello,
};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{
    alpn::{self, Destination, Plan},
    diagnose::{self, Upstream, UpstreamFailure},
    outcome::{End, Outcome},
    prefixed::Prefixed,
    read_ahead::ReadAhead,
    untouched::{self, Untouched},
};
use frametap_session::SessionState;

use crate::{
    context::{ConnectionInfo, ProxyContext, connect_upstream},
    recorder::now_us,
    relay::wire_bytes,
    tls::{LeafSubject, upstream_server_name},
};

/// How long the client may take to send its request head before a 502 goes out
/// without it.
const REQUEST_HEAD_WAIT: Duration = Duration::from_secs(3);
/// After a 502, how long the client's remaining bytes are read and discarded before
/// closing: closing with unread bytes would reset the connection and could destroy
/// the 502 before the client read it.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const LINGER_MAX: u64 = 1 << 20;

type ClientIo = Prefixed<ReadAhead<TcpStream>>;

/// Everything about one TLS connection the steps below need.
struct Conn<'a> {
    ctx: &'a ProxyContext,
    info: &'a ConnectionInfo,
    hello: ClientHello,
    client: TcpStream,
    prefix: Vec<u8>,
    offered: Vec<String>,
    /// When the handshakes (both legs, and the probe) must be done
    /// (`--handshake-timeout` after the ClientHello arrived).
    deadline: tokio::time::Instant,
}

impl Conn<'_> {
    fn untouched(&self, reason: String, selected: Option<&[u8]>) -> Untouched {
        Untouched {
            protocol: "tls",
            sni: self.hello.sni.clone(),
            alpn_offered: self.offered.clone(),
            alpn_selected: selected.map(alpn::name),
            reason,
        }
    }

    fn upstream(&self) -> Upstream<'_> {
        Upstream {
            sni: self.hello.sni.as_deref(),
            addr: self.info.destination(),
        }
    }

    /// Only used to shape the records of failures and answered requests.
    fn state(&self, selected: Option<&[u8]>) -> SessionState {
        let mut meta = self.info.session_meta(true, self.hello.sni.clone(), None);
        meta.alpn_offered = self.offered.clone();
        meta.alpn_selected = selected.map(alpn::name);
        SessionState::new(meta, &self.ctx.intercept.session)
    }

    fn client_leg(
        self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> (tokio_rustls::FallibleAccept<ClientIo>, RawFd) {
        let fd = self.client.as_raw_fd();
        let io = Prefixed::new(self.prefix, ReadAhead::new(self.client));
        (TlsAcceptor::from(config).accept(io).into_fallible(), fd)
    }
}

pub async fn handle(
    ctx: &ProxyContext,
    client: TcpStream,
    upstream: TcpStream,
    prefix: Vec<u8>,
    hello: ClientHello,
    info: &ConnectionInfo,
) -> Outcome {
    let dst = info.destination();
    let conn = Conn {
        ctx,
        info,
        offered: alpn::names(&hello.alpn),
        hello,
        client,
        prefix,
        deadline: tokio::time::Instant::now() + ctx.intercept.handshake_timeout,
    };
    if ctx
        .intercept
        .passthrough
        .matches(conn.hello.sni.as_deref(), dst)
    {
        let u = conn.untouched("on the --passthrough list".into(), None);
        return untouched::relay(ctx, conn.client, upstream, conn.prefix, info, u).await;
    }
    let destination = Destination {
        sni: conn.hello.sni.clone(),
        addr: dst,
        offered: conn.hello.alpn.clone(),
    };
    let known = ctx.intercept.alpn.get(&destination, Instant::now());
    let plan = alpn::plan(&conn.hello.alpn, known.as_ref().map(Option::as_deref));
    match &plan {
        Plan::UnknownProtocols => {
            let why = format!(
                "the client offered {} but neither http/1.1 nor h2",
                conn.offered.join(", ")
            );
            let u = conn.untouched(why, None);
            return untouched::relay(ctx, conn.client, upstream, conn.prefix, info, u).await;
        }
        Plan::Relay { selected } => {
            let u = conn.untouched(server_selected(selected), Some(selected));
            return untouched::relay(ctx, conn.client, upstream, conn.prefix, info, u).await;
        }
        Plan::Concurrent { .. } | Plan::Probe => {}
    }
    // Both legs need these; without them nothing can be intercepted.
    let subject = match &conn.hello.sni {
        Some(name) => LeafSubject::Dns(name.clone()),
        None => LeafSubject::Ip(dst.ip()),
    };
    let offers_alpn = !conn.hello.alpn.is_empty();
    let tls = &ctx.intercept.tls;
    let (client_config, server_name) = match (
        tls.client_leg_config(&subject, offers_alpn.then_some(alpn::HTTP11)),
        upstream_server_name(&subject),
    ) {
        (Ok(c), Ok(n)) => (c, n),
        (Err(e), _) | (_, Err(e)) => {
            let why = format!(
                "no certificate can be minted for {}: {e:#}",
                subject.label()
            );
            let u = conn.untouched(why, None);
            return untouched::relay(ctx, conn.client, upstream, conn.prefix, info, u).await;
        }
    };
    let legs = Legs {
        client_config,
        server_name,
        subject,
        destination,
    };
    match plan {
        Plan::Probe => probe_first(conn, upstream, legs).await,
        Plan::Concurrent { cached } => both_at_once(conn, upstream, legs, cached).await,
        Plan::UnknownProtocols | Plan::Relay { .. } => unreachable!("handled above"),
    }
}

struct Legs {
    client_config: std::sync::Arc<rustls::ServerConfig>,
    server_name: ServerName<'static>,
    subject: LeafSubject,
    destination: Destination,
}

fn server_selected(selected: &[u8]) -> String {
    format!("server selected {}", alpn::name(selected))
}

/// The fast path: both handshakes at once, the client leg's not waiting for the
/// server's. Upstream is offered http/1.1 when the client offered ALPN.
async fn both_at_once(conn: Conn<'_>, upstream: TcpStream, legs: Legs, cached: bool) -> Outcome {
    let ctx = conn.ctx;
    let offers_alpn = !conn.hello.alpn.is_empty();
    let upstream_fd = upstream.as_raw_fd();
    let server_leg = TlsConnector::from(ctx.intercept.tls.upstream_config(offers_alpn))
        .connect(legs.server_name, ReadAhead::new(upstream));
    let state = conn.state(None);
    let upstream_label = conn.upstream().label();
    let sni = conn.hello.sni.clone();
    let offered = conn.offered.clone();
    let info = conn.info;
    let deadline = conn.deadline;
    let (client_leg, client_fd) = conn.client_leg(legs.client_config);
    let handshakes = async { tokio::join!(client_leg, server_leg) };
    let Ok((client_tls, server_tls)) = tokio::time::timeout_at(deadline, handshakes).await else {
        return timed_out(ctx, &state).await;
    };
    match (client_tls, server_tls) {
        (Ok(client_tls), Ok(server_tls)) => {
            let selected = server_tls.get_ref().1.alpn_protocol().map(alpn::name);
            let mut meta = info.session_meta(true, sni, tls_version(&client_tls));
            meta.alpn_offered = offered;
            meta.alpn_selected = selected;
            super::pump::session(
                ctx,
                client_tls,
                server_tls,
                (client_fd, upstream_fd),
                meta,
                "https",
            )
            .await
        }
        (Ok(client_tls), Err(e)) => {
            let upstream = Upstream {
                sni: sni.as_deref(),
                addr: info.destination(),
            };
            let http11 = if offers_alpn {
                vec!["http/1.1".to_string()]
            } else {
                Vec::new()
            };
            let mut failure = diagnose::upstream_failure(&e, &upstream, &http11);
            if cached && diagnose::is_no_common_protocol(&e) {
                // The server no longer takes http/1.1: ask it again next time.
                ctx.intercept.alpn.forget(&legs.destination);
                failure.fixes.insert(
                    0,
                    format!(
                        "{upstream_label} accepted http/1.1 before; frametap will ask it again on the next \
                         connection and relay it untouched if it now wants {} (retry).",
                        offered
                            .iter()
                            .find(|p| *p != "http/1.1")
                            .map_or("another protocol", String::as_str)
                    ),
                );
            }
            answer_gateway_error(ctx, client_tls, &state, &failure).await
        }
        (Err((e, io)), _) => client_failed(ctx, &state, &e, io, &legs.subject).await,
    }
}

/// The client offers more than http/1.1 and this server's choice is not known: ask
/// the server first with the client's own list, then either intercept (the server
/// chose http/1.1 or nothing: this connection is the upstream leg) or relay untouched
/// on a new connection, replaying the ClientHello.
async fn probe_first(conn: Conn<'_>, upstream: TcpStream, legs: Legs) -> Outcome {
    let ctx = conn.ctx;
    let upstream_fd = upstream.as_raw_fd();
    let config = ctx.intercept.tls.upstream_config_offering(&conn.hello.alpn);
    let probe = TlsConnector::from(config).connect(legs.server_name, ReadAhead::new(upstream));
    let Ok(probe) = tokio::time::timeout_at(conn.deadline, probe).await else {
        return timed_out(ctx, &conn.state(None)).await;
    };
    let server_tls = match probe {
        Ok(server_tls) => server_tls,
        Err(e) if diagnose::is_no_common_protocol(&e) => {
            // Directly, the client would fail just the same: let it, faithfully.
            let why = format!(
                "the server accepts none of the offered protocols ({})",
                conn.offered.join(", ")
            );
            return relay_on_new_connection(conn, why, None).await;
        }
        Err(e) => {
            let failure = diagnose::upstream_failure(&e, &conn.upstream(), &conn.offered);
            let state = conn.state(None);
            let ctx = conn.ctx;
            let deadline = conn.deadline;
            let (client_leg, _) = conn.client_leg(legs.client_config);
            return match tokio::time::timeout_at(deadline, client_leg).await {
                Ok(Ok(client_tls)) => answer_gateway_error(ctx, client_tls, &state, &failure).await,
                Ok(Err((e, io))) => client_failed(ctx, &state, &e, io, &legs.subject).await,
                Err(_) => timed_out(ctx, &state).await,
            };
        }
    };
    let selected = server_tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    ctx.intercept
        .alpn
        .put(legs.destination, selected.clone(), Instant::now());
    if !alpn::interceptable(selected.as_deref()) {
        drop(server_tls);
        let selected = selected.unwrap_or_default();
        return relay_on_new_connection(conn, server_selected(&selected), Some(&selected)).await;
    }
    // The client leg selects what the server selected: h2 when it did, and nothing
    // when it selected nothing, as the client would have seen directly.
    let answer = match selected.as_deref() {
        Some(alpn::H2) => Some(alpn::H2),
        Some(_) => Some(alpn::HTTP11),
        None => None,
    };
    let client_config = match ctx.intercept.tls.client_leg_config(&legs.subject, answer) {
        Ok(config) => config,
        Err(e) => {
            let why = format!(
                "no certificate can be minted for {}: {e:#}",
                legs.subject.label()
            );
            return relay_on_new_connection(conn, why, selected.as_deref()).await;
        }
    };
    let state = conn.state(selected.as_deref());
    let sni = conn.hello.sni.clone();
    let offered = conn.offered.clone();
    let info = conn.info;
    let deadline = conn.deadline;
    let (client_leg, client_fd) = conn.client_leg(client_config);
    let Ok(client_tls) = tokio::time::timeout_at(deadline, client_leg).await else {
        return timed_out(ctx, &state).await;
    };
    match client_tls {
        Ok(client_tls) => {
            let mut meta = info.session_meta(true, sni, tls_version(&client_tls));
            meta.alpn_offered = offered;
            meta.alpn_selected = selected.as_deref().map(alpn::name);
            super::pump::session(
                ctx,
                client_tls,
                server_tls,
                (client_fd, upstream_fd),
                meta,
                if answer == Some(alpn::H2) {
                    "h2"
                } else {
                    "https"
                },
            )
            .await
        }
        Err((e, io)) => client_failed(ctx, &state, &e, io, &legs.subject).await,
    }
}

/// Relay untouched on a fresh connection to the original destination: the probe's
/// connection has already spoken TLS, so the client's ClientHello goes to a new one.
async fn relay_on_new_connection(conn: Conn<'_>, why: String, selected: Option<&[u8]>) -> Outcome {
    let u = conn.untouched(why, selected);
    let dst = conn.info.destination();
    match connect_upstream(dst, conn.ctx.mark, conn.info.netns.as_deref()).await {
        Ok(upstream) => {
            untouched::relay(conn.ctx, conn.client, upstream, conn.prefix, conn.info, u).await
        }
        Err(e) => {
            let error = format!("cannot connect to {dst} again to relay untouched: {e}");
            untouched::refused(conn.ctx, conn.client, conn.info, u, error).await
        }
    }
}

fn tls_version<IO>(client_tls: &tokio_rustls::server::TlsStream<IO>) -> Option<String> {
    tls_version_name(client_tls.get_ref().1.protocol_version())
}

/// A negotiated TLS version as records write it: `TLSv1.3`, `TLSv1.2`, `TLSv1`.
pub(crate) fn tls_version_name(version: Option<rustls::ProtocolVersion>) -> Option<String> {
    version
        .and_then(|v| v.as_str())
        .map(|v| v.replace("TLSv1_", "TLSv1.").replace("TLSv1.0", "TLSv1"))
}

/// The client trusts us but the upstream failed: answer its request with a 502 that
/// says why and what fixes it, and record the request with that answer.
async fn answer_gateway_error(
    ctx: &ProxyContext,
    mut client_tls: tokio_rustls::server::TlsStream<ClientIo>,
    state: &SessionState,
    failure: &UpstreamFailure,
) -> Outcome {
    let started_us = now_us();
    let request = read_request_head(&mut client_tls).await;
    let body = failure.body();
    let headers = [
        ("content-type", "text/plain; charset=utf-8".to_string()),
        ("content-length", body.len().to_string()),
        ("connection", "close".to_string()),
    ];
    let mut response = String::from("HTTP/1.1 502 Bad Gateway\r\n");
    for (name, value) in &headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    let _ = client_tls.write_all(response.as_bytes()).await;
    let _ = client_tls.shutdown().await;
    linger(&mut client_tls).await;
    let error = failure.one_line();
    let record = match request {
        Some(request) => state.answered_entry(
            request,
            started_us,
            ResponseHead {
                status: 502,
                reason: "Bad Gateway".into(),
                version: 1,
                headers: headers
                    .iter()
                    .map(|(name, value)| Header {
                        name: (*name).into(),
                        value: value.clone(),
                    })
                    .collect(),
                head_len: 0,
            },
            error.clone(),
            now_us(),
        ),
        None => state.failure_entry(now_us(), error.clone()),
    };
    ctx.recorder.persist(vec![record], None).await;
    let (up, down) = wire_bytes(client_tls.get_ref().0.get_ref().get_ref()).unwrap_or((0, 0));
    Outcome {
        kind: "https",
        bytes_up: up,
        bytes_down: down,
        end: End::UpstreamTlsFailed,
        error: Some(error),
        warn: true,
        not_intercepted: None,
    }
}

/// The client's request head, read with the HTTP/1 parser: at most
/// [`frametap_proto::http1::MAX_HEAD_LEN`] bytes (the parser refuses more) and
/// [`REQUEST_HEAD_WAIT`]. `None` when the client sends something else, nothing, or
/// closes.
async fn read_request_head<S: AsyncRead + Unpin>(client: &mut S) -> Option<RequestHead> {
    let deadline = tokio::time::Instant::now() + REQUEST_HEAD_WAIT;
    let mut http = Http1Conn::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        http.push_client(&buf[..n], &mut events);
        for event in events.drain(..) {
            match event {
                HttpEvent::RequestHead(head) => return Some(head),
                HttpEvent::NotHttp | HttpEvent::Error(_) => return None,
                _ => {}
            }
        }
    }
}

/// Read and discard what the client still sends, until it closes, for at most
/// [`LINGER`] and [`LINGER_MAX`] bytes.
async fn linger<S: AsyncRead + Unpin>(client: &mut S) {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0u64;
    while read < LINGER_MAX {
        match tokio::time::timeout_at(deadline, client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => read += n as u64,
            _ => return,
        }
    }
}

/// The handshakes did not finish by the deadline: a client that sent its
/// ClientHello and then nothing (or a server that never answered) is not held. The
/// handshake futures owned the sockets and are dropped by now, which closed them;
/// the attempt is recorded.
async fn timed_out(ctx: &ProxyContext, state: &SessionState) -> Outcome {
    let secs = ctx.intercept.handshake_timeout.as_secs_f64();
    let error = format!(
        "the TLS handshakes did not finish within {secs} s (--handshake-timeout): the client \
         or the server stopped answering; the connection was closed"
    );
    ctx.recorder
        .persist(vec![state.failure_entry(now_us(), error.clone())], None)
        .await;
    Outcome {
        kind: "https",
        bytes_up: 0,
        bytes_down: 0,
        end: End::HandshakeTimeout,
        error: Some(error),
        warn: true,
        not_intercepted: None,
    }
}

/// The client leg's handshake failed: record why (usually it does not trust the
/// frametap CA) and say so in a warning.
async fn client_failed(
    ctx: &ProxyContext,
    state: &SessionState,
    error: &std::io::Error,
    io: ClientIo,
    subject: &LeafSubject,
) -> Outcome {
    let failure = diagnose::client_failure(
        error,
        &subject.label(),
        ctx.intercept.tls.minter.ca_cert_path(),
    );
    let (up, down) = wire_bytes(io.get_ref().get_ref()).unwrap_or((0, 0));
    drop(io);
    ctx.recorder
        .persist(
            vec![state.failure_entry(now_us(), failure.text.clone())],
            None,
        )
        .await;
    Outcome {
        kind: "https",
        bytes_up: up,
        bytes_down: down,
        end: if failure.distrusts_ca {
            End::ClientDistrustsCa
        } else {
            End::ClientTlsFailed
        },
        error: Some(failure.text),
        warn: true,
        not_intercepted: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_head_is_read_within_bounds() {
        let mut split: &[u8] = b"GET /chat HTTP/1.1\r\nHost: h\r\n\r\nbody";
        let head = read_request_head(&mut split).await.unwrap();
        assert_eq!(
            (head.method.as_str(), head.target.as_str()),
            ("GET", "/chat")
        );
        let mut not_http: &[u8] = b"\x00\x01binary";
        assert!(read_request_head(&mut not_http).await.is_none());
        let mut closed: &[u8] = b"GET /unfinished HTTP/1.1\r\nHost:";
        assert!(read_request_head(&mut closed).await.is_none());
        // A head past the parser's limit is refused, not buffered without end.
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(
            b'a',
            frametap_proto::http1::MAX_HEAD_LEN + 10,
        ));
        let mut huge: &[u8] = &huge;
        assert!(read_request_head(&mut huge).await.is_none());
    }
}
