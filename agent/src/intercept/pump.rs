//! The async glue of an intercepted HTTP/1.x or HTTP/2 connection: both directions pumped by
//! one future, every read fed to the sans-IO session (`frametap-session`), its
//! records persisted before the bytes that complete them are written, injected
//! messages and close frames written between reads, the half-open timeout kept.
use std::{
    future::Future,
    os::fd::RawFd,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use frametap_session::{Ending, Forward, Peer, SessionMeta, SessionState};
use frametap_store::TrafficId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::outcome::{End, Outcome};
use crate::{
    context::ProxyContext,
    live::{Injection, Registration},
    recorder::{Recorder, SharedOrder, now_us},
    relay,
};

/// Per-direction read buffer of intercepted connections: it starts small, as most
/// connections are idle most of the time and thousands may be held at once, and
/// doubles up to its largest size whenever a read fills it.
const READ_BUFFER_FIRST: usize = 8 * 1024;
const READ_BUFFER_LARGEST: usize = 64 * 1024;

/// Relay an HTTP/1.x or HTTP/2 connection (plain or TLS) while the session watches it.
///
/// One future owns both streams and polls both directions itself, like tokio's
/// `copy_bidirectional`, rather than splitting each TLS stream in two: a rustls
/// read may also flush pending TLS output, and with split halves that steals the
/// writing half's wake-up, stalling the relay.
pub async fn session<C, S>(
    ctx: &ProxyContext,
    client: C,
    server: S,
    fds: (RawFd, RawFd),
    meta: SessionMeta,
    kind: &'static str,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    session_telling(ctx, client, server, fds, meta, kind, None).await
}

/// [`session`], telling `opened` the traffic id of the first WebSocket that opens
/// on the connection (a replay learns its own so).
pub async fn session_telling<C, S>(
    ctx: &ProxyContext,
    mut client: C,
    mut server: S,
    fds: (RawFd, RawFd),
    meta: SessionMeta,
    kind: &'static str,
    opened: Option<oneshot::Sender<TrafficId>>,
) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let state = Mutex::new(SessionState::new(meta, &ctx.intercept.session));
    let mut up = Direction::new(Peer::Client, fds.1, fds.0);
    let mut down = Direction::new(Peer::Server, fds.0, fds.1);
    // Both directions' records reach live subscribers in capture order.
    let order = SharedOrder::default();
    let recording = Recording {
        recorder: &ctx.recorder,
        order: &order,
    };
    // One per WebSocket open on the connection (several streams of one HTTP/2
    // connection): messages the API sends into it.
    let mut injections = Injections {
        opened,
        ..Injections::default()
    };
    // Once one direction has ended: the half-open timeout's clock.
    let mut half_open: Option<relay::SilenceTimer> = None;
    let ending = std::future::poll_fn(|cx| {
        injections.take(cx, &state);
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
        // One look at the session after the reads: a WebSocket that just opened
        // registers for injections (its queue is polled next time), and bytes a read
        // left for the direction polled before it (a close rule answers the
        // sender; HTTP/2 window updates and queued data) are written next time.
        // Either way: poll again soon.
        let again = {
            let session = lock(&state);
            let registered = injections.follow(&session, ctx);
            registered || (up.result.is_none() && session.has_outbox(Peer::Server))
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
    let was_websocket = injections.ever;
    drop(injections);
    let records = lock(&state).on_end(&ending, now_us());
    ctx.recorder.persist(records, Some(order)).await;
    Outcome {
        kind: if was_websocket { "websocket" } else { kind },
        bytes_up: up.moved,
        bytes_down: down.moved,
        end: End::Connection(ending),
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

/// The WebSockets of a connection that the API can send into.
#[derive(Default)]
struct Injections {
    open: Vec<(TrafficId, Registration, mpsc::Receiver<Injection>)>,
    /// Reused for the session's list of open WebSockets.
    scratch: Vec<TrafficId>,
    /// Whether the connection ever carried a WebSocket.
    ever: bool,
    /// Told the first WebSocket's traffic id.
    opened: Option<oneshot::Sender<TrafficId>>,
}

impl Injections {
    /// Hands the messages waiting for each WebSocket to the session.
    fn take(&mut self, cx: &mut Context<'_>, state: &Mutex<SessionState>) {
        for (traffic, _, queue) in &mut self.open {
            while let Poll::Ready(Some(injection)) = queue.poll_recv(cx) {
                let result = lock(state).inject(
                    *traffic,
                    injection.to,
                    &injection.content,
                    injection.is_binary,
                    now_us(),
                );
                let _ = injection.reply.send(result);
            }
        }
    }

    /// Registers the WebSockets that opened and forgets those that ended; says
    /// whether one was registered.
    fn follow(&mut self, session: &SessionState, ctx: &ProxyContext) -> bool {
        self.scratch.clear();
        session.websockets(&mut self.scratch);
        if self.scratch.is_empty() && self.open.is_empty() {
            return false;
        }
        self.open.retain(|(t, _, _)| self.scratch.contains(t));
        let mut registered = false;
        for &traffic in &self.scratch {
            if !self.open.iter().any(|(t, _, _)| *t == traffic) {
                let (registration, queue) = ctx.intercept.live.register(traffic);
                self.open.push((traffic, registration, queue));
                registered = true;
                self.ever = true;
                if let Some(opened) = self.opened.take() {
                    let _ = opened.send(traffic);
                }
            }
        }
        registered
    }
}

fn lock(state: &Mutex<SessionState>) -> std::sync::MutexGuard<'_, SessionState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Copy)]
enum PumpEnd {
    Eof,
    /// This side failed (reset); the other side has been set to reset too.
    Failed(Peer),
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
    side: Peer,
    /// Socket to reset when this direction's reader fails (the other side).
    to_fd: RawFd,
    /// Socket to reset when this direction's writer fails (this side).
    from_fd: RawFd,
    /// What the last read returned (its capacity is the read size).
    buf: Vec<u8>,
    /// The last read filled `buf`: a larger one replaces it once its bytes are written.
    grow_later: bool,
    /// What the session wants written instead of `buf` (or before the next read).
    replacement: Option<Vec<u8>>,
    len: usize,
    pos: usize,
    step: Step,
    moved: u64,
    result: Option<PumpEnd>,
}

impl Direction {
    fn new(side: Peer, to_fd: RawFd, from_fd: RawFd) -> Self {
        Self {
            side,
            to_fd,
            from_fd,
            buf: Vec::with_capacity(READ_BUFFER_FIRST),
            grow_later: false,
            replacement: None,
            len: 0,
            pos: 0,
            step: Step::Read,
            moved: 0,
            result: None,
        }
    }

    fn other(&self) -> Peer {
        self.side.other()
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
                    // Read into spare capacity: the buffer is never zeroed, so an idle
                    // connection's holds no touched pages.
                    self.buf.clear();
                    let mut read = ReadBuf::uninit(self.buf.spare_capacity_mut());
                    match Pin::new(&mut *from).poll_read(cx, &mut read) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => {
                            reset_fd(self.to_fd);
                            return Poll::Ready(PumpEnd::Failed(self.side));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    let n = read.filled().len();
                    // SAFETY: the read initialised the first `n` bytes of the spare
                    // capacity (ReadBuf tracks them), and `buf` was empty.
                    unsafe { self.buf.set_len(n) };
                    if n == 0 {
                        self.step = Step::Shutdown;
                        continue;
                    }
                    let filled = n == self.buf.capacity();
                    let (records, forward) =
                        lock(state).on_bytes(self.side, &self.buf[..n], now_us());
                    match forward {
                        Forward::AsIs => (self.len, self.pos) = (n, 0),
                        Forward::Bytes(bytes) => {
                            (self.len, self.pos) = (bytes.len(), 0);
                            self.replacement = Some(bytes);
                        }
                    }
                    self.persist_then_write(records, recording);
                    // Bulk traffic: read more at a time from now on.
                    self.grow_later |= filled && self.buf.capacity() < READ_BUFFER_LARGEST;
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
                    if std::mem::take(&mut self.grow_later) {
                        let larger = (self.buf.capacity() * 2).min(READ_BUFFER_LARGEST);
                        self.buf = Vec::with_capacity(larger);
                    }
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
