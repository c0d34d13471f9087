//! Relay bytes between the client and the upstream socket, in both directions,
//! until both sides are done. A FIN from one side becomes a FIN to the other
//! (half-close); a reset on one side becomes a reset on the other.
//!
//! Bytes move with splice(2) through a pipe, so they never enter userspace: on a
//! 2-core machine that is the difference between the relay costing a copy per byte
//! each way or not. When a pipe cannot be had, the relay copies through a buffer.
use std::{
    io,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use std::{
    cell::RefCell,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use frametap_session::{Ending, Peer};
use tokio::{io::Interest, net::TcpStream};

/// Per-direction buffer. Large enough for loopback bulk transfers to move in few
/// syscalls, small enough that idle connections don't pin much memory.
pub const RELAY_BUFFER: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayOutcome {
    pub client_to_server: u64,
    pub server_to_client: u64,
    pub end: Ending,
}

/// Which side of one direction failed.
enum PumpEnd {
    /// Reader sent FIN and we passed it on.
    Eof,
    /// The reading side broke: reset the writing side.
    ReaderFailed,
    /// The writing side broke: reset the reading side.
    WriterFailed,
}

/// Make the socket's close send RST instead of FIN.
pub fn reset_on_close(socket: &impl std::os::fd::AsFd) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// Bytes a TCP socket has carried so far, as the kernel counts them (TCP_INFO):
/// `(received, written)`, where written counts what this side wrote, whether it
/// went out yet or still waits in the send queue. `None` where TCP_INFO lacks them.
pub fn wire_bytes(socket: &impl std::os::fd::AsFd) -> Option<(u64, u64)> {
    // SAFETY: an all-zero tcp_info is valid (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the fd is borrowed for the call; info and len describe a buffer of
    // exactly that size, which the kernel fills at most.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    // Kernels older than 4.19 fill less than tcpi_bytes_retrans.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_retrans) + 8;
    if rc != 0 || (len as usize) < needed {
        return None;
    }
    let written = (info.tcpi_bytes_sent - info.tcpi_bytes_retrans.min(info.tcpi_bytes_sent))
        + u64::from(info.tcpi_notsent_bytes);
    Some((info.tcpi_bytes_received, written))
}

/// Bytes one pipe holds (F_SETPIPE_SZ); also the most one splice call moves.
const PIPE_CAPACITY: usize = 1 << 20;
/// Spare pipes kept per worker thread for the next fills (each holds two file
/// descriptors, so the pool is small: pipes are taken and given back all the time).
const PIPE_POOL: usize = 16;

/// A pipe used as the relay's in-kernel buffer.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

thread_local! {
    static SPARE_PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// A pipe from this thread's pool, or a new one.
    fn take() -> io::Result<Self> {
        if let Some(p) = SPARE_PIPES.with(|pool| pool.borrow_mut().pop()) {
            return Ok(p);
        }
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills two fds on success; we own them from then on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fds owned by nobody else.
        let pipe = unsafe {
            Self {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        // A bigger pipe moves more per call; the default (64 KiB) still works.
        // SAFETY: fcntl on a pipe fd we own.
        unsafe {
            libc::fcntl(
                pipe.write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_CAPACITY as libc::c_int,
            )
        };
        Ok(pipe)
    }

    /// Back to the pool; only empty pipes may be reused.
    fn give_back(self) {
        SPARE_PIPES.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < PIPE_POOL {
                pool.push(self);
            }
        });
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between two fds we hold, no offsets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// One direction: socket -> pipe -> socket, until EOF or an error. The pipe is held
/// only while bytes move: a direction waiting for data gives it back to the pool,
/// so an idle connection costs its two sockets and no pipe.
async fn splice_pump(from: &TcpStream, to: &TcpStream, moved: &AtomicU64) -> PumpEnd {
    let mut pipe: Option<Pipe> = None;
    loop {
        let held = match pipe.take() {
            Some(p) => p,
            None => {
                if from.readable().await.is_err() {
                    reset_on_close(to);
                    return PumpEnd::ReaderFailed;
                }
                match Pipe::take() {
                    Ok(p) => p,
                    Err(_) => return copy_pump(from, to, moved).await,
                }
            }
        };
        let (pipe_in, pipe_out) = (held.write.as_raw_fd(), held.read.as_raw_fd());
        // Fill: the pipe is empty here, so EAGAIN can only mean the socket is drained
        // (which is what try_io needs to be told to clear the readiness).
        let filled = from.try_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), pipe_in, PIPE_CAPACITY)
        });
        let mut queued = match filled {
            Ok(0) => {
                held.give_back();
                break;
            }
            Ok(n) => n,
            Err(e) if is_would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                // Nothing to move now: wait without the (empty) pipe.
                held.give_back();
                continue;
            }
            Err(_) => {
                held.give_back();
                reset_on_close(to);
                return PumpEnd::ReaderFailed;
            }
        };
        // Drain: the pipe holds data, so EAGAIN means the peer's window is full.
        while queued > 0 {
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_out, to.as_raw_fd(), queued)
            }) {
                Ok(n) => {
                    queued -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if is_would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    if to.writable().await.is_err() {
                        reset_on_close(from);
                        return PumpEnd::WriterFailed;
                    }
                }
                // The pipe still holds bytes: it is dropped, not reused.
                Err(_) => {
                    reset_on_close(from);
                    return PumpEnd::WriterFailed;
                }
            }
        }
        // Empty again: keep it for the next fill while the socket has more.
        pipe = Some(held);
    }
    pass_fin(from, to)
}

/// One direction through a userspace buffer (fallback when no pipe can be had).
async fn copy_pump(from: &TcpStream, to: &TcpStream, moved: &AtomicU64) -> PumpEnd {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = match from.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                if from.readable().await.is_err() {
                    reset_on_close(to);
                    return PumpEnd::ReaderFailed;
                }
                continue;
            }
            Err(_) => {
                reset_on_close(to);
                return PumpEnd::ReaderFailed;
            }
        };
        let mut written = 0;
        while written < n {
            match to.try_write(&buf[written..n]) {
                Ok(w) => written += w,
                Err(e) if is_would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    if to.writable().await.is_err() {
                        reset_on_close(from);
                        return PumpEnd::WriterFailed;
                    }
                }
                Err(_) => {
                    reset_on_close(from);
                    return PumpEnd::WriterFailed;
                }
            }
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
    pass_fin(from, to)
}

/// Half-close: pass the FIN on and keep the other direction going.
fn pass_fin(from: &TcpStream, to: &TcpStream) -> PumpEnd {
    match socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write) {
        Ok(()) => PumpEnd::Eof,
        Err(_) => {
            reset_on_close(from);
            PumpEnd::WriterFailed
        }
    }
}

/// The half-open timeout's clock: once one direction of a connection has ended,
/// ready when the other has moved no bytes for `limit`; bytes moving restart it.
pub struct SilenceTimer {
    limit: Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The open direction's byte count when the clock last started.
    seen: u64,
}

impl SilenceTimer {
    /// Starts the clock; `moved`: the open direction's bytes so far.
    pub fn new(limit: Duration, moved: u64) -> Self {
        Self {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            seen: moved,
        }
    }

    /// Ready once `moved` (the open direction's bytes so far) has stayed the same
    /// for the whole limit.
    pub fn poll_silent(
        &mut self,
        cx: &mut std::task::Context<'_>,
        moved: u64,
    ) -> std::task::Poll<()> {
        if moved != self.seen {
            self.seen = moved;
            self.sleep
                .as_mut()
                .reset(tokio::time::Instant::now() + self.limit);
        }
        self.sleep.as_mut().poll(cx)
    }
}

/// Relay until both directions have ended (or one side resets). Once one direction
/// has ended, the other may stay silent for at most `half_open` (if given).
pub async fn relay(
    client: TcpStream,
    server: TcpStream,
    half_open: Option<Duration>,
) -> RelayOutcome {
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    // Both directions use the same two sockets through shared references: tokio
    // tracks read and write readiness separately, and nothing here sends a FIN on
    // drop (which would reach the peer before a RST we mean to send).
    let upstream = splice_pump(&client, &server, &up);
    let downstream = splice_pump(&server, &client, &down);
    tokio::pin!(upstream, downstream);

    let (mut up_done, mut down_done) = (false, false);
    let mut silence: Option<SilenceTimer> = None;
    let end = loop {
        tokio::select! {
            r = &mut upstream, if !up_done => match r {
                PumpEnd::Eof => up_done = true,
                PumpEnd::ReaderFailed => break Ending::Reset(Peer::Client),
                PumpEnd::WriterFailed => break Ending::Reset(Peer::Server),
            },
            r = &mut downstream, if !down_done => match r {
                PumpEnd::Eof => down_done = true,
                PumpEnd::ReaderFailed => break Ending::Reset(Peer::Server),
                PumpEnd::WriterFailed => break Ending::Reset(Peer::Client),
            },
            () = std::future::poll_fn(|cx| {
                let open = if up_done { &down } else { &up };
                let timer = silence.as_mut().expect("checked");
                timer.poll_silent(cx, open.load(Ordering::Relaxed))
            }), if silence.is_some() => {
                break Ending::HalfOpen(if up_done { Peer::Server } else { Peer::Client });
            }
        }
        if up_done && down_done {
            break Ending::Closed;
        }
        if let (Some(limit), None, true) = (half_open, &silence, up_done || down_done) {
            let open = if up_done { &down } else { &up };
            silence = Some(SilenceTimer::new(limit, open.load(Ordering::Relaxed)));
        }
    };
    // Leaving drops both pumps and so closes both sockets (with RST where set).
    RelayOutcome {
        client_to_server: up.load(Ordering::Relaxed),
        server_to_client: down.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// app <-> (proxy_client | proxy_server) <-> origin
    async fn relayed() -> (TcpStream, TcpStream, tokio::task::JoinHandle<RelayOutcome>) {
        let (app, proxy_client) = pair().await;
        let (proxy_server, origin) = pair().await;
        let task = tokio::spawn(relay(proxy_client, proxy_server, None));
        (app, origin, task)
    }

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (mut app, mut origin, task) = relayed().await;
        app.write_all(b"request").await.unwrap();
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // The server answers after the client's FIN.
        origin.write_all(b"late reply").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut reply = Vec::new();
        app.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"late reply");
        let out = task.await.unwrap();
        assert_eq!(out.end, Ending::Closed);
        assert_eq!((out.client_to_server, out.server_to_client), (7, 10));
    }

    #[tokio::test]
    async fn a_silent_half_open_connection_is_closed_but_a_talking_one_is_not() {
        let limit = Duration::from_millis(300);
        let (mut app, proxy_client) = pair().await;
        let (proxy_server, mut origin) = pair().await;
        let task = tokio::spawn(relay(proxy_client, proxy_server, Some(limit)));
        app.shutdown().await.unwrap();
        let mut sink = Vec::new();
        origin.read_to_end(&mut sink).await.unwrap();
        // The server keeps talking for three timeouts: the connection stays.
        for _ in 0..9 {
            origin.write_all(b"tick").await.unwrap();
            tokio::time::sleep(limit / 3).await;
        }
        assert!(!task.is_finished(), "closed while bytes still moved");
        let mut got = [0u8; 36];
        app.read_exact(&mut got).await.unwrap();
        // Then it goes silent: closed within about two timeouts.
        let silent = std::time::Instant::now();
        let out = task.await.unwrap();
        assert!(matches!(out.end, Ending::HalfOpen(_)));
        assert!(silent.elapsed() < limit * 3, "{:?}", silent.elapsed());
        assert_eq!(
            app.read(&mut got).await.unwrap(),
            0,
            "the client sees a FIN"
        );
    }

    #[tokio::test]
    async fn client_reset_resets_the_server() {
        let (app, mut origin, task) = relayed().await;
        reset_on_close(&app);
        drop(app);
        let mut buf = [0u8; 16];
        let err = origin.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(task.await.unwrap().end, Ending::Reset(Peer::Client));
    }

    #[tokio::test]
    async fn server_reset_resets_the_client() {
        let (mut app, origin, task) = relayed().await;
        reset_on_close(&origin);
        drop(origin);
        let mut buf = [0u8; 16];
        let err = app.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(task.await.unwrap().end, Ending::Reset(Peer::Server));
    }

    #[tokio::test]
    async fn copy_fallback_relays_and_half_closes() {
        let (mut app, proxy_client) = pair().await;
        let (proxy_server, mut origin) = pair().await;
        let task = tokio::spawn(async move {
            let moved = AtomicU64::new(0);
            let end = copy_pump(&proxy_client, &proxy_server, &moved).await;
            (matches!(end, PumpEnd::Eof), moved.load(Ordering::Relaxed))
        });
        let data = vec![7u8; 300_000];
        app.write_all(&data).await.unwrap();
        app.shutdown().await.unwrap();
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(task.await.unwrap(), (true, 300_000));
    }

    #[tokio::test]
    async fn pipes_are_reused_after_clean_connections() {
        SPARE_PIPES.with(|p| p.borrow_mut().clear());
        let (mut app, mut origin, task) = relayed().await;
        app.write_all(b"x").await.unwrap();
        app.shutdown().await.unwrap();
        origin.shutdown().await.unwrap();
        let mut sink = Vec::new();
        origin.read_to_end(&mut sink).await.unwrap();
        app.read_to_end(&mut sink).await.unwrap();
        assert_eq!(task.await.unwrap().end, Ending::Closed);
        // Two pipes, or one if the second direction started after the first had
        // already handed its pipe back.
        let spare = SPARE_PIPES.with(|p| p.borrow().len());
        assert!((1..=2).contains(&spare), "{spare} spare pipes");
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_pipe() {
        SPARE_PIPES.with(|p| p.borrow_mut().clear());
        let (mut app, mut origin, _task) = relayed().await;
        for _ in 0..3 {
            app.write_all(b"ping").await.unwrap();
            let mut four = [0u8; 4];
            origin.read_exact(&mut four).await.unwrap();
            origin.write_all(b"pong").await.unwrap();
            app.read_exact(&mut four).await.unwrap();
        }
        // Open but idle: both directions gave their pipe back to the pool.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let spare = SPARE_PIPES.with(|p| p.borrow().len());
        assert!((1..=2).contains(&spare), "{spare} spare pipes");
    }

    #[tokio::test]
    async fn wire_bytes_counts_what_a_socket_carried() {
        let (mut a, mut b) = pair().await;
        a.write_all(b"hello").await.unwrap();
        let mut five = [0u8; 5];
        b.read_exact(&mut five).await.unwrap();
        b.write_all(b"hi").await.unwrap();
        let mut two = [0u8; 2];
        a.read_exact(&mut two).await.unwrap();
        assert_eq!(wire_bytes(&a), Some((2, 5)));
        assert_eq!(wire_bytes(&b), Some((5, 2)));
    }

    #[tokio::test]
    async fn bulk_bytes_arrive_identical() {
        let (mut app, mut origin, task) = relayed().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            app.write_all(&sent).await.unwrap();
            app.shutdown().await.unwrap();
            app
        });
        let mut got = Vec::new();
        origin.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "payload differs");
        drop(origin);
        drop(writer.await.unwrap());
        let out = task.await.unwrap();
        assert_eq!(out.client_to_server, data.len() as u64);
    }
}
