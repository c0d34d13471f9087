//! Serving the API over HTTP/1.1 with bounded resources: at most
//! `max_connections` connections at a time (more wait in the listen backlog),
//! every one of them behind a [`Gate`] (head timeout, size limits, JSON refusals),
//! request bodies that must keep arriving (`body_timeout` between their chunks), and
//! clients that must keep reading (`idle_timeout` for a stalled write).
//!
//! [`serve`] is the accept loop; [`GuardedIo`] is the thin async glue between the
//! socket, the gate and hyper. The gate's refusals are answered once hyper lets go
//! of the socket, after everything hyper answered before them. WebSocket upgrades
//! (Socket.IO) keep their connection slot for as long as they last.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;
use tracing::{debug, info, warn};

use crate::gate::{Gate, GateLimits, GateTimeouts};

/// Largest request body: the JSON bodies of rules and injected messages.
pub const MAX_REQUEST_BODY: u64 = 2 << 20;
/// Longest request head (request line and header fields).
pub const MAX_REQUEST_HEAD: usize = 64 << 10;
/// Longest request target.
pub const MAX_REQUEST_URI: usize = 16 << 10;
/// Most header fields in a request.
pub const MAX_REQUEST_HEADERS: usize = 100;
/// How long in-flight requests may finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After a refusal, how long (and how much) the client's remaining upload is read and
/// dropped, so that closing does not reset the connection before the client has read
/// the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 << 10;

/// How the server treats its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request head must arrive in full within this (and a new connection must
    /// start sending one within it).
    pub header_timeout: Duration,
    /// A request body may pause at most this long between two pieces.
    pub body_timeout: Duration,
    /// A kept-alive connection may idle this long between requests, and a client may
    /// stop reading an answer for this long.
    pub idle_timeout: Duration,
    /// Connections served at the same time; more wait to be accepted.
    pub max_connections: usize,
}

impl ServerLimits {
    fn gate_limits(&self) -> GateLimits {
        GateLimits {
            max_head: MAX_REQUEST_HEAD,
            max_uri: MAX_REQUEST_URI,
            max_headers: MAX_REQUEST_HEADERS,
            max_body: MAX_REQUEST_BODY,
        }
    }

    fn gate_timeouts(&self) -> GateTimeouts {
        GateTimeouts {
            header: self.header_timeout,
            idle: self.idle_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets in-flight
/// requests finish (for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut full = false;
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 && !full {
            warn!(
                max_connections = limits.max_connections,
                "connection limit reached: new connections wait until one closes (--max-connections)"
            );
        }
        full = slots.available_permits() == 0;
        let slot = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next() => continue,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to close
                    // instead of spinning.
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let io = GuardedIo::new(stream, &limits, slot);
        connections.spawn(serve_connection(io, app.clone(), limits, stopping.clone()));
    }
    // In-flight requests finish; idle connections close at once.
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        info!(
            open = connections.len(),
            "closing connections still busy after {} s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// One connection, over HTTP/1.1 (with upgrades, for Socket.IO's WebSocket).
async fn serve_connection(
    io: GuardedIo,
    app: Router,
    limits: ServerLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // The gate hands over complete heads only and closes idle connections; this
        // is a backstop.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout + limits.idle_timeout + SHUTDOWN_GRACE)
        .max_headers(MAX_REQUEST_HEADERS)
        // The end of the gate's bytes must not cut an answer short: it is the
        // gate's way to end a connection once every answer is out.
        .half_close(true);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut stop_asked = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|&stop| stop), if !stop_asked => {
                stop_asked = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The client's socket, seen by hyper through its [`Gate`]; holds a connection slot
/// for as long as it lives (an upgraded WebSocket included).
pub struct GuardedIo {
    /// Taken only when dropped, to answer a refusal.
    stream: Option<TcpStream>,
    gate: Gate,
    scratch: Box<[u8]>,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    /// A write has waited since then for the client to read.
    write_stalled: Option<Instant>,
    write_stall_limit: Duration,
    /// Released after the stream is closed.
    slot: Option<OwnedSemaphorePermit>,
}

impl GuardedIo {
    fn new(stream: TcpStream, limits: &ServerLimits, slot: OwnedSemaphorePermit) -> GuardedIo {
        let now = Instant::now();
        GuardedIo {
            stream: Some(stream),
            gate: Gate::new(limits.gate_limits(), limits.gate_timeouts(), now),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            read_timer: Box::pin(tokio::time::sleep_until(now.into())),
            write_timer: Box::pin(tokio::time::sleep_until(now.into())),
            write_stalled: None,
            write_stall_limit: limits.idle_timeout,
            slot: Some(slot),
        }
    }

    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("the stream is taken only on drop"),
        )
    }

    /// Whether `deadline` has passed, else arranges a wake-up for it.
    fn timer_fired(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
        if timer.deadline() != deadline.into() {
            timer.as_mut().reset(deadline.into());
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// A write to the socket, failing once the client has not read for too long.
    fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match write(self.stream(), cx) {
            Poll::Ready(Ok(n)) => {
                self.write_stalled = None;
                self.gate.sent(Instant::now());
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let since = *self.write_stalled.get_or_insert_with(Instant::now);
                if Self::timer_fired(&mut self.write_timer, since + self.write_stall_limit, cx) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let ready = this.gate.ready();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.gate.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.gate.is_finished() {
                return Poll::Ready(Ok(()));
            }
            let stream = Pin::new(this.stream.as_mut().expect("not dropped"));
            let mut read = ReadBuf::new(&mut this.scratch);
            match stream.poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => this.gate.receive_eof(),
                Poll::Ready(Ok(())) => this.gate.receive(read.filled(), Instant::now()),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    let Some(deadline) = this.gate.deadline() else {
                        return Poll::Pending;
                    };
                    if !Self::timer_fired(&mut this.read_timer, deadline, cx) {
                        return Poll::Pending;
                    }
                    this.gate.expire();
                }
            }
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |stream, cx| stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |stream, cx| stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gate.has_refusal() {
            // The refusal goes out first, when hyper lets go of the socket.
            return Poll::Ready(Ok(()));
        }
        this.stream().poll_shutdown(cx)
    }
}

impl Drop for GuardedIo {
    /// Hyper is done with the connection (however it ended): a refusal of the gate is
    /// answered now, after everything hyper answered before it.
    fn drop(&mut self) {
        let Some(refusal) = self.gate.take_refusal() else {
            return;
        };
        let (Some(stream), Ok(runtime)) =
            (self.stream.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        debug!(status = refusal.status().0, "refusing a request");
        runtime.spawn(answer(
            stream,
            refusal.response(),
            self.write_stall_limit,
            self.slot.take(),
        ));
    }
}

/// Writes `response` and closes the connection, reading (and dropping) what the
/// client still sends for a moment, so that the close does not reset the connection
/// before the client has read the answer.
async fn answer(
    mut stream: TcpStream,
    response: Vec<u8>,
    write_limit: Duration,
    _slot: Option<OwnedSemaphorePermit>,
) {
    let written = tokio::time::timeout(write_limit, stream.write_all(&response)).await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use axum::Json;
    use axum::routing::{get, post};
    use serde_json::Value;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::rest::common::JsonBody;

    const SLOW: Duration = Duration::from_secs(600);

    fn limits() -> ServerLimits {
        ServerLimits {
            header_timeout: SLOW,
            body_timeout: SLOW,
            idle_timeout: SLOW,
            max_connections: 16,
        }
    }

    /// The server on a free loopback port, with `/hello` and a JSON `/echo`.
    async fn start(limits: ServerLimits) -> std::net::SocketAddr {
        let app = Router::new()
            .route("/hello", get(|| async { "hi" }))
            .route(
                "/echo",
                post(|JsonBody(value): JsonBody<Value>| async move { Json(value) }),
            )
            .fallback(crate::error::no_such_endpoint);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, app, limits, std::future::pending()));
        addr
    }

    /// One answer: status, headers and body.
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn error(&self) -> String {
            assert!(
                self.headers
                    .iter()
                    .any(|(n, v)| n == "content-type" && v == "application/json"),
                "{:?}",
                self.headers
            );
            let body: Value = serde_json::from_slice(&self.body).unwrap();
            assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
            body["error"].as_str().unwrap().to_owned()
        }
    }

    /// A client connection; keeps what it read past an answer (pipelining).
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn connect(addr: std::net::SocketAddr) -> Client {
            Client {
                stream: TcpStream::connect(addr).await.unwrap(),
                buf: Vec::new(),
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.unwrap();
        }

        /// The next answer (with a Content-Length); `None` at EOF.
        async fn answer(&mut self) -> Option<Answer> {
            loop {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut fields);
                if let httparse::Status::Complete(head) = response.parse(&self.buf).unwrap() {
                    let headers: Vec<(String, String)> = response
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    if self.buf.len() >= head + length {
                        let status = response.code.unwrap();
                        let body = self.buf[head..head + length].to_vec();
                        self.buf.drain(..head + length);
                        return Some(Answer {
                            status,
                            headers,
                            body,
                        });
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    assert!(self.buf.is_empty(), "cut answer: {:?}", self.buf);
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Sends `request` on a new connection; the one answer, and whether the server
    /// closed the connection after it.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> (Answer, bool) {
        let mut client = Client::connect(addr).await;
        client.send(request).await;
        let answer = client.answer().await.expect("an answer");
        let closed = client.answer().await.is_none();
        (answer, closed)
    }

    #[tokio::test]
    async fn a_head_that_stops_arriving_gets_a_json_408_and_the_connection_closes() {
        let addr = start(ServerLimits {
            header_timeout: Duration::from_secs(1),
            ..limits()
        })
        .await;
        let (answer, closed) = exchange(addr, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow:").await;
        assert_eq!(answer.status, 408);
        assert!(
            answer.error().contains("did not arrive in full"),
            "{}",
            answer.error()
        );
        assert!(closed);
        // A connection that never sends anything is closed without a word.
        let mut silent = Client::connect(addr).await;
        assert!(silent.answer().await.is_none());
    }

    #[tokio::test]
    async fn oversized_declared_bodies_are_413_without_waiting_for_them() {
        let addr = start(limits()).await;
        let (answer, closed) = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 3000000\r\n\r\n",
        )
        .await;
        assert_eq!(answer.status, 413);
        assert!(answer.error().contains("2 MiB"), "{}", answer.error());
        assert!(closed);
    }

    #[tokio::test]
    async fn oversized_heads_are_json_414_and_431() {
        let addr = start(limits()).await;
        let target = format!("/{}", "a".repeat(100_000));
        let (answer, closed) =
            exchange(addr, format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes()).await;
        assert_eq!(answer.status, 414);
        assert!(answer.error().contains("16384 bytes"), "{}", answer.error());
        assert!(closed);

        let mut head = String::from("GET /hello HTTP/1.1\r\n");
        for i in 0..2000 {
            head.push_str(&format!("X-Field-{i}: {}\r\n", "v".repeat(40)));
        }
        head.push_str("\r\n");
        let (answer, _) = exchange(addr, head.as_bytes()).await;
        assert_eq!(answer.status, 431);
        assert!(answer.error().contains("65536 bytes"), "{}", answer.error());

        let (answer, _) = exchange(addr, b"GET / HTTP/9.9\r\n\r\n").await;
        assert_eq!(answer.status, 400);
        assert!(answer.error().starts_with("malformed HTTP request"));
    }

    #[tokio::test]
    async fn a_stalled_body_gets_a_json_408() {
        let addr = start(ServerLimits {
            body_timeout: Duration::from_secs(1),
            ..limits()
        })
        .await;
        let (answer, _) = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 10\r\n\r\n{\"a\"",
        )
        .await;
        assert_eq!(answer.status, 408);
        assert!(
            answer.error().contains("stopped arriving"),
            "{}",
            answer.error()
        );
    }

    #[tokio::test]
    async fn kept_alive_and_pipelined_requests_are_answered_in_order_before_a_refusal() {
        let addr = start(ServerLimits {
            idle_timeout: Duration::from_secs(1),
            ..limits()
        })
        .await;
        let mut client = Client::connect(addr).await;
        client
            .send(
                b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n\
                  POST /echo HTTP/1.1\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n1\r\n]\r\n0\r\n\r\n\
                  GET /hello HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            )
            .await;
        let first = client.answer().await.unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"hi"[..]));
        let second = client.answer().await.unwrap();
        assert_eq!(
            (second.status, second.body.as_slice()),
            (200, &b"[1,2]"[..])
        );
        assert_eq!(client.answer().await.unwrap().status, 413);
        assert!(client.answer().await.is_none());

        // Idle after an answer: closed without a word once the idle timeout passes.
        let mut idle = Client::connect(addr).await;
        idle.send(b"GET /hello HTTP/1.1\r\n\r\n").await;
        assert_eq!(idle.answer().await.unwrap().status, 200);
        assert!(idle.answer().await.is_none());
    }

    #[tokio::test]
    async fn connections_over_the_limit_wait_for_a_free_slot() {
        let addr = start(ServerLimits {
            max_connections: 1,
            ..limits()
        })
        .await;
        let hello = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut first = Client::connect(addr).await;
        first.send(hello).await;
        assert_eq!(first.answer().await.unwrap().status, 200);
        // The kernel completes the second connection, but the server does not take it.
        let mut second = Client::connect(addr).await;
        second.send(hello).await;
        // The first is still served meanwhile.
        first.send(hello).await;
        assert_eq!(first.answer().await.unwrap().status, 200);
        let mut peek = [0u8; 1];
        assert_eq!(
            second.stream.try_read(&mut peek).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the second connection must wait"
        );
        drop(first);
        assert_eq!(second.answer().await.unwrap().status, 200);
    }

    #[tokio::test]
    async fn unknown_paths_stay_json_404s() {
        let addr = start(limits()).await;
        let (answer, _) =
            exchange(addr, b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert_eq!(answer.status, 404);
        assert!(answer.error().contains("No such endpoint"));
    }
}
