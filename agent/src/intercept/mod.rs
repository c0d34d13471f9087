//! Interception of one redirected connection, once the upstream socket is open.
//!
//! 1. Sniff the client's first bytes (the upstream may speak first instead: then
//!    it is not HTTP and is relayed untouched).
//! 2. A TLS ClientHello: see [`https`]: intercept (mint a leaf for its SNI,
//!    terminate TLS on the client leg, open a verified TLS connection upstream with
//!    the same SNI, then 3), or relay untouched when interception would change what
//!    the application gets (passthrough list, a server that selects h2).
//! 3. HTTP/1.x: relay bytes while [`session::SessionState`] watches them and emits
//!    traffic entries and WebSocket frames, which are recorded before the bytes that
//!    complete them are forwarded. Bytes go out unchanged unless a rule changes a
//!    WebSocket message; injected messages are written between messages.
//! 4. Anything else: relayed untouched ([`untouched`]), and listed as such.
pub mod alpn;
pub mod body;
pub mod diagnose;
pub mod https;
pub mod prefixed;
pub mod session;
pub mod untouched;
pub mod websocket;

use std::{
    future::Future,
    net::SocketAddr,
    os::fd::{AsRawFd as _, RawFd},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use frametap_proto::tls_hello::{self, Sniff};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tracing::debug;

use self::{
    prefixed::Prefixed,
    session::{Ending, SessionMeta, SessionState, Side},
    untouched::Untouched,
    websocket::Forward,
};
use crate::{
    live::{Injection, Registration},
    proxy::{ConnectionInfo, ProxyContext},
    recorder::{Recorder, SharedOrder, now_ms},
    relay,
};

/// How long to wait for the client's first bytes before treating the connection
/// as something we don't interpret (it is relayed either way; nothing is lost).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(1);
/// Per-direction read buffer of intercepted connections.
const READ_BUFFER: usize = 64 * 1024;
/// Socket read buffer under each TLS leg: rustls asks for 4 KiB at a time, so without
/// it a 16 KiB record costs five read(2) calls.
const TLS_SOCKET_BUFFER: usize = 64 * 1024;

/// What happened to a connection, for the one log line per connection.
pub struct Outcome {
    pub kind: &'static str,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub end: String,
    pub error: Option<String>,
    /// Logged as a warning: something failed that the user can fix (a TLS handshake).
    pub warn: bool,
    /// Why the connection was relayed untouched, when it was.
    pub not_intercepted: Option<String>,
}

/// Hosts relayed without interception (certificate-pinned apps): exact names,
/// `*.suffix` wildcards, or CIDRs of the destination.
#[derive(Clone, Debug, Default)]
pub struct Passthrough {
    pub names: Vec<String>,
    pub networks: Vec<ipnet::IpNet>,
}

impl Passthrough {
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let mut p = Self::default();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if let Ok(net) = crate::config::parse_cidr(item) {
                p.networks.push(net);
            } else if item
                .trim_start_matches("*.")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                p.names.push(item.to_ascii_lowercase());
            } else {
                return Err(format!("{item:?} is not a host name, *.domain or CIDR"));
            }
        }
        Ok(p)
    }

    pub fn matches(&self, sni: Option<&str>, dst: SocketAddr) -> bool {
        if self.networks.iter().any(|n| n.contains(&dst.ip())) {
            return true;
        }
        let Some(sni) = sni.map(str::to_ascii_lowercase) else {
            return false;
        };
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => sni.ends_with(&format!(".{suffix}")),
            None => *n == sni,
        })
    }
}

enum First {
    Tls(tls_hello::ClientHello),
    Http,
    /// Not interpreted; why.
    Other(&'static str),
}

/// A method token and a space: what an HTTP/1.x request line starts with.
fn looks_like_http(prefix: &[u8]) -> Option<bool> {
    for (i, &b) in prefix.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'-' | b'_' if i < 24 => {}
            b' ' if i > 0 => return Some(true),
            // Tolerated before a request line (RFC 9112 2.2).
            b'\r' | b'\n' if i == 0 => return looks_like_http(&prefix[1..]),
            _ => return Some(false),
        }
    }
    None
}

fn classify(prefix: &[u8]) -> Option<First> {
    if prefix.first() == Some(&0x16) {
        return match tls_hello::sniff(prefix) {
            Sniff::NeedMore => None,
            Sniff::Hello(h) => Some(First::Tls(h)),
            Sniff::NotTls => Some(First::Other("neither TLS nor HTTP")),
            Sniff::Malformed(_) => Some(First::Other("malformed TLS ClientHello")),
        };
    }
    match looks_like_http(prefix)? {
        true => Some(First::Http),
        false => Some(First::Other("neither TLS nor HTTP")),
    }
}

/// Read the client's first bytes until they can be classified; when they can't (the
/// upstream spoke first, the client sent nothing in time, or closed), why.
async fn sniff(client: &TcpStream, upstream: &TcpStream, prefix: &mut Vec<u8>) -> First {
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut buf = [0u8; 4096];
    let closed = |prefix: &[u8]| {
        First::Other(if prefix.is_empty() {
            "the client closed before sending anything"
        } else {
            "the client closed before its first bytes could be classified"
        })
    };
    loop {
        tokio::select! {
            biased;
            r = client.readable() => {
                if r.is_err() {
                    return closed(prefix);
                }
                match client.try_read(&mut buf) {
                    Ok(0) => return closed(prefix),
                    Ok(n) => prefix.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return closed(prefix),
                }
                if let Some(first) = classify(prefix) {
                    return first;
                }
                if prefix.len() > tls_hello::MAX_CLIENT_HELLO {
                    return First::Other("first bytes too long to classify");
                }
            }
            _ = upstream.readable() => return First::Other("the server spoke first"),
            _ = tokio::time::sleep_until(deadline) => {
                return First::Other("the client sent nothing for a second");
            }
        }
    }
}

pub async fn handle(
    ctx: &ProxyContext,
    client: TcpStream,
    upstream: TcpStream,
    info: &ConnectionInfo,
) -> Outcome {
    let mut prefix = Vec::new();
    match sniff(&client, &upstream, &mut prefix).await {
        First::Tls(hello) => https::handle(ctx, client, upstream, prefix, hello, info).await,
        First::Http => {
            let meta = meta(info, false, None, None);
            let fds = (client.as_raw_fd(), upstream.as_raw_fd());
            session(
                ctx,
                Prefixed::new(prefix, client),
                upstream,
                fds,
                meta,
                "http",
            )
            .await
        }
        First::Other(why) => {
            debug!(conn = info.id, why, "relaying untouched");
            untouched::relay(ctx, client, upstream, prefix, info, Untouched::tcp(why)).await
        }
    }
}

fn meta(
    info: &ConnectionInfo,
    tls: bool,
    sni: Option<String>,
    tls_version: Option<String>,
) -> SessionMeta {
    SessionMeta {
        conn_id: info.id,
        tls,
        tls_version,
        sni,
        client_address: info.client_addr.to_string(),
        server_address: info.destination().to_string(),
        pid: (info.original.tgid != 0).then_some(info.original.tgid),
        process: Some(info.original.comm()).filter(|c| !c.is_empty()),
        alpn_offered: Vec::new(),
        alpn_selected: None,
        origin: info.origin.clone(),
    }
}

/// Relay an HTTP/1.x connection (plain or TLS) while the session watches it.
///
/// One future owns both streams and polls both directions itself, like tokio's
/// `copy_bidirectional`, rather than splitting each TLS stream in two: a rustls
/// read may also flush pending TLS output, and with split halves that steals the
/// writing half's wake-up, stalling the relay.
async fn session<C, S>(
    ctx: &ProxyContext,
    mut client: C,
    mut server: S,
    fds: (RawFd, RawFd),
    meta: SessionMeta,
    kind: &'static str,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let state = Mutex::new(SessionState::new(
        meta,
        ctx.recorder.ids.clone(),
        ctx.intercept.payload_cap,
        ctx.intercept.body_cap,
        ctx.intercept.rules.clone(),
    ));
    let mut up = Direction::new(Side::Client, fds.1, fds.0);
    let mut down = Direction::new(Side::Server, fds.0, fds.1);
    // Both directions' records reach live subscribers in capture order.
    let order = SharedOrder::default();
    let recording = Recording {
        recorder: &ctx.recorder,
        order: &order,
    };
    // Present once the connection is a WebSocket: messages the API sends into it.
    let mut injections: Option<(Registration, tokio::sync::mpsc::Receiver<Injection>)> = None;
    // Once one direction has ended: the half-open timeout's clock.
    let mut half_open: Option<relay::SilenceTimer> = None;
    let ending = std::future::poll_fn(|cx| {
        if let Some((_, queue)) = injections.as_mut() {
            while let Poll::Ready(Some(injection)) = queue.poll_recv(cx) {
                let result = lock(&state).inject(
                    injection.to,
                    &injection.content,
                    injection.is_binary,
                    now_ms(),
                );
                let _ = injection.reply.send(result);
            }
        }
        if up.result.is_none()
            && let Poll::Ready(r) = up.poll(cx, &mut client, &mut server, &state, &recording)
        {
            up.result = Some(r);
        }
        if down.result.is_none()
            && let Poll::Ready(r) = down.poll(cx, &mut server, &mut client, &state, &recording)
        {
            down.result = Some(r);
        }
        // One look at the session after the reads: a connection that just upgraded
        // registers for injections (its queue is polled next time), and bytes a read
        // left for the direction polled before it (a close rule answers the
        // sender) are written next time. Either way: poll again soon.
        let again = {
            let session = lock(&state);
            let upgraded = match (&injections, session.websocket()) {
                (None, Some(traffic)) => {
                    injections = Some(ctx.intercept.live.register(traffic));
                    true
                }
                _ => false,
            };
            upgraded || (up.result.is_none() && session.has_outbox(Side::Server))
        };
        if again {
            cx.waker().wake_by_ref();
        }
        match (up.result, down.result) {
            (Some(PumpEnd::Failed(side)), _) | (_, Some(PumpEnd::Failed(side))) => {
                Poll::Ready(Ending::Reset(side))
            }
            (Some(PumpEnd::Eof), Some(PumpEnd::Eof)) => Poll::Ready(Ending::Closed),
            (Some(PumpEnd::Eof), None) => silent_too_long(&mut half_open, &down, ctx, cx),
            (None, Some(PumpEnd::Eof)) => silent_too_long(&mut half_open, &up, ctx, cx),
            _ => Poll::Pending,
        }
    })
    .await;
    drop(injections);
    let was_websocket = lock(&state).websocket().is_some();
    let records = lock(&state).on_end(&ending, now_ms());
    ctx.recorder.persist(records, Some(order)).await;
    Outcome {
        kind: if was_websocket { "websocket" } else { kind },
        bytes_up: up.moved,
        bytes_down: down.moved,
        end: match ending {
            Ending::Closed => "closed".into(),
            Ending::Reset(Side::Client) => "client reset".into(),
            Ending::Reset(Side::Server) => "server reset".into(),
            Ending::HalfOpen(_) => "half-open timeout".into(),
        },
        error: None,
        warn: false,
        not_intercepted: None,
    }
}

/// The other direction has ended: ready with the ending once `open` has moved no
/// bytes for the half-open timeout (never, without one).
fn silent_too_long(
    timer: &mut Option<relay::SilenceTimer>,
    open: &Direction,
    ctx: &ProxyContext,
    cx: &mut Context<'_>,
) -> Poll<Ending> {
    let Some(limit) = ctx.intercept.half_open_timeout else {
        return Poll::Pending;
    };
    timer
        .get_or_insert_with(|| relay::SilenceTimer::new(limit, open.moved))
        .poll_silent(cx, open.moved)
        .map(|()| Ending::HalfOpen(open.side))
}

fn lock(state: &Mutex<SessionState>) -> std::sync::MutexGuard<'_, SessionState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy)]
enum PumpEnd {
    Eof,
    /// This side failed (reset); the other side has been set to reset too.
    Failed(Side),
}

fn reset_fd(fd: RawFd) {
    // SAFETY: fd is one of the two sockets this session owns, open for its whole life.
    relay::reset_on_close(&unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
}

type Persisting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a session's records go: the store, then live subscribers in `order`.
struct Recording<'a> {
    recorder: &'a Recorder,
    order: &'a SharedOrder,
}

enum Step {
    Read,
    /// Records completed by the last read are on their way to the WAL.
    Persist(Persisting),
    Write,
    Shutdown,
}

/// One direction: read, let the session see the bytes, persist what they completed,
/// then forward them (unchanged unless a rule changed a message).
struct Direction {
    side: Side,
    /// Socket to reset when this direction's reader fails (the other side).
    to_fd: RawFd,
    /// Socket to reset when this direction's writer fails (this side).
    from_fd: RawFd,
    buf: Box<[u8]>,
    /// What the session wants written instead of `buf` (or before the next read).
    replacement: Option<Vec<u8>>,
    len: usize,
    pos: usize,
    step: Step,
    moved: u64,
    result: Option<PumpEnd>,
}

impl Direction {
    fn new(side: Side, to_fd: RawFd, from_fd: RawFd) -> Self {
        Self {
            side,
            to_fd,
            from_fd,
            buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            replacement: None,
            len: 0,
            pos: 0,
            step: Step::Read,
            moved: 0,
            result: None,
        }
    }

    fn other(&self) -> Side {
        match self.side {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    fn persist_then_write(&mut self, records: Vec<frametap_store::Record>, rec: &Recording<'_>) {
        // Recorded before forwarded: once the peer has a frame, so does the store.
        // Usually written right here; a busy store hands the records back to wait in
        // the writer's queue without blocking this thread.
        self.step = match rec.recorder.persist_now(records, Some(rec.order)) {
            None => Step::Write,
            Some(records) => {
                let recorder = rec.recorder.clone();
                let order = Arc::clone(rec.order);
                Step::Persist(Box::pin(async move {
                    recorder.persist(records, Some(order)).await
                }))
            }
        };
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        state: &Mutex<SessionState>,
        recording: &Recording<'_>,
    ) -> Poll<PumpEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            match &mut self.step {
                Step::Read => {
                    // Injected messages and close frames for our peer go first.
                    if let Some(outbox) = lock(state).take_outbox(self.other()) {
                        (self.len, self.pos) = (outbox.bytes.len(), 0);
                        self.replacement = Some(outbox.bytes);
                        self.persist_then_write(outbox.records, recording);
                        continue;
                    }
                    let mut read = ReadBuf::new(&mut self.buf);
                    match Pin::new(&mut *from).poll_read(cx, &mut read) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => {
                            reset_fd(self.to_fd);
                            return Poll::Ready(PumpEnd::Failed(self.side));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    let n = read.filled().len();
                    if n == 0 {
                        self.step = Step::Shutdown;
                        continue;
                    }
                    let (records, forward) =
                        lock(state).on_bytes(self.side, &self.buf[..n], now_ms());
                    match forward {
                        Forward::AsIs => (self.len, self.pos) = (n, 0),
                        Forward::Bytes(bytes) => {
                            (self.len, self.pos) = (bytes.len(), 0);
                            self.replacement = Some(bytes);
                        }
                    }
                    self.persist_then_write(records, recording);
                }
                Step::Persist(persisting) => {
                    ready!(persisting.as_mut().poll(cx));
                    self.step = Step::Write;
                }
                Step::Write => {
                    while self.pos < self.len {
                        let pending = match &self.replacement {
                            Some(bytes) => &bytes[self.pos..self.len],
                            None => &self.buf[self.pos..self.len],
                        };
                        match ready!(Pin::new(&mut *to).poll_write(cx, pending)) {
                            Ok(n) if n > 0 => self.pos += n,
                            _ => {
                                reset_fd(self.from_fd);
                                return Poll::Ready(PumpEnd::Failed(self.other()));
                            }
                        }
                    }
                    if ready!(Pin::new(&mut *to).poll_flush(cx)).is_err() {
                        reset_fd(self.from_fd);
                        return Poll::Ready(PumpEnd::Failed(self.other()));
                    }
                    self.moved += self.len as u64;
                    self.replacement = None;
                    self.step = Step::Read;
                }
                Step::Shutdown => {
                    // Half-close (for TLS: close_notify, then FIN).
                    let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
                    return Poll::Ready(PumpEnd::Eof);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_detection() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(looks_like_http(b"\r\nPOST /x"), Some(true));
        assert_eq!(looks_like_http(b"GE"), None);
        assert_eq!(looks_like_http(b"SSH-2.0-OpenSSH"), Some(false));
        assert_eq!(looks_like_http(b"\x00\x01"), Some(false));
        assert_eq!(looks_like_http(b" GET"), Some(false));
    }

    #[test]
    fn passthrough_matching() {
        let p = Passthrough::parse(&[
            "pinned.example.com".into(),
            "*.bank.test".into(),
            "10.9.0.0/16".into(),
        ])
        .unwrap();
        let dst: SocketAddr = "10.1.1.1:443".parse().unwrap();
        assert!(p.matches(Some("pinned.example.com"), dst));
        assert!(p.matches(Some("API.Bank.test"), dst));
        assert!(!p.matches(Some("bank.test"), dst));
        assert!(!p.matches(Some("other.com"), dst));
        assert!(p.matches(None, "10.9.3.4:443".parse().unwrap()));
        assert!(Passthrough::parse(&["bad host!".into()]).is_err());
    }
}
