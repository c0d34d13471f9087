//! Replays: a recorded WebSocket conversation played again by the agent, against its
//! server or another, recorded as a new connection like any capture (the store keeps
//! its one writer). The API plans what to send ([`ReplayPlan`]); here are the
//! connection, the pacing, and the book of replays (progress, cancel).
//!
//! The client's bytes come from the sans-IO [`ReplayClient`] and reach the server
//! through a normal session ([`crate::intercept::pump`]) over a socket pair, so the
//! replay is parsed, ruled and recorded exactly as a captured client's would be.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::{Refusal, ReplayPlan, ReplayState, ReplayStatus};
use frametap_session::SessionMeta;
use frametap_session::replay::{ReplayClient, ServerEvent, handshake_request};
use frametap_store::TrafficId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use crate::context::{ProxyContext, connect_upstream};
use crate::intercept::https::tls_version_name;
use crate::intercept::{pump, random_mask_key};

/// Replays running at once; more are refused until one ends.
pub const MAX_RUNNING: usize = 8;
/// Replays that ended, kept for `GET /api/replays`.
const KEPT_ENDED: usize = 100;
/// Connecting (TCP and TLS) may take this long, and so may the server's answer to
/// the handshake: both within the API's 10 s wait for the agent's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(4);
/// A message paced "as the server answers" waits at most this for the answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// After our close frame: how long the server has to answer it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Shared = Arc<Mutex<ReplayStatus>>;

struct Entry {
    status: Shared,
    /// Set to `true` to cancel.
    cancel: watch::Sender<bool>,
}

/// Every replay of this agent: running ones and the last ones that ended.
#[derive(Default)]
pub struct ReplayBook {
    /// Set once the proxy context exists (after the control socket's).
    ctx: OnceLock<Arc<ProxyContext>>,
    replays: Mutex<VecDeque<Entry>>,
    started: AtomicU64,
}

impl ReplayBook {
    pub fn attach(&self, ctx: Arc<ProxyContext>) {
        let _ = self.ctx.set(ctx);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.replays.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every replay, newest first.
    pub fn list(&self) -> Vec<ReplayStatus> {
        self.lock().iter().map(|e| snapshot(&e.status)).collect()
    }

    /// Cancels a running replay; its status as it is.
    pub fn cancel(&self, id: &str) -> Result<ReplayStatus, (Refusal, String)> {
        let replays = self.lock();
        let entry = replays
            .iter()
            .find(|e| snapshot(&e.status).id == id)
            .ok_or_else(|| (Refusal::NotFound, format!("no replay {id:?}")))?;
        let status = snapshot(&entry.status);
        if status.state != ReplayState::Running {
            return Err((
                Refusal::Conflict,
                format!("replay {id} has already ended ({:?})", status.state),
            ));
        }
        let _ = entry.cancel.send(true);
        Ok(status)
    }

    /// Starts a replay and answers once the server accepted the handshake, or why
    /// not.
    pub async fn start(
        self: &Arc<Self>,
        plan: ReplayPlan,
    ) -> Result<ReplayStatus, (Refusal, String)> {
        let ctx = self
            .ctx
            .get()
            .cloned()
            .ok_or((Refusal::Conflict, "the agent is still starting".to_string()))?;
        let messages = decode(&plan)?;
        let started_at = frametap_store::now_ms();
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        let status = Arc::new(Mutex::new(ReplayStatus {
            id: format!("{started_at:x}{n:04x}"),
            replay_of: plan.original.clone(),
            traffic_id: None,
            url: plan.url.clone(),
            state: ReplayState::Running,
            messages_total: messages.len() as u64,
            messages_sent: 0,
            server_messages: 0,
            started_at,
            ended_at: None,
            error: None,
        }));
        let (cancel, cancelled) = watch::channel(false);
        {
            let mut replays = self.lock();
            let running = replays
                .iter()
                .filter(|e| snapshot(&e.status).state == ReplayState::Running)
                .count();
            if running >= MAX_RUNNING {
                return Err((
                    Refusal::Conflict,
                    format!(
                        "{running} replays are running, the most at once: wait for one to end or cancel one"
                    ),
                ));
            }
            replays.push_front(Entry {
                status: Arc::clone(&status),
                cancel,
            });
            let ended = replays.len().saturating_sub(MAX_RUNNING + KEPT_ENDED);
            for _ in 0..ended {
                let last = replays
                    .iter()
                    .rposition(|e| snapshot(&e.status).state != ReplayState::Running);
                if let Some(i) = last {
                    replays.remove(i);
                }
            }
        }
        let (accepted_tx, accepted) = oneshot::channel();
        let task_status = Arc::clone(&status);
        tokio::spawn(async move {
            let outcome = run(&ctx, &plan, messages, &task_status, cancelled, accepted_tx).await;
            finish(&task_status, outcome);
        });
        match accepted.await {
            Ok(Ok(())) => Ok(snapshot(&status)),
            Ok(Err(why)) => Err((Refusal::Upstream, why)),
            Err(_) => Err((
                Refusal::Upstream,
                snapshot(&status)
                    .error
                    .unwrap_or_else(|| "the replay ended before the handshake".into()),
            )),
        }
    }
}

fn snapshot(status: &Shared) -> ReplayStatus {
    status.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn update(status: &Shared, f: impl FnOnce(&mut ReplayStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// A message to send, decoded.
struct Planned {
    is_text: bool,
    content: Vec<u8>,
    delay: Duration,
    after_server_messages: Option<u64>,
}

fn decode(plan: &ReplayPlan) -> Result<Vec<Planned>, (Refusal, String)> {
    plan.messages
        .iter()
        .map(|m| {
            let content = BASE64.decode(&m.payload).map_err(|e| {
                (
                    Refusal::BadRequest,
                    format!("message {} is not base64: {e}", m.original),
                )
            })?;
            Ok(Planned {
                is_text: !m.is_binary,
                content,
                delay: Duration::from_millis(m.delay_ms),
                after_server_messages: m.after_server_messages,
            })
        })
        .collect()
}

/// How a replay ended.
enum Ended {
    Done(Option<String>),
    Cancelled,
    Failed(String),
}

fn finish(status: &Shared, outcome: Ended) {
    update(status, |s| {
        s.ended_at = Some(frametap_store::now_ms());
        match outcome {
            Ended::Done(note) => {
                s.state = ReplayState::Done;
                s.error = note;
            }
            Ended::Cancelled => s.state = ReplayState::Cancelled,
            Ended::Failed(why) => {
                s.state = ReplayState::Failed;
                s.error = Some(why);
            }
        }
    });
    let s = snapshot(status);
    info!(
        replay = s.id,
        of = s.replay_of,
        state = ?s.state,
        sent = s.messages_sent,
        total = s.messages_total,
        error = s.error.as_deref().unwrap_or(""),
        "replay ended"
    );
}

async fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

async fn run(
    ctx: &Arc<ProxyContext>,
    plan: &ReplayPlan,
    messages: Vec<Planned>,
    status: &Shared,
    cancelled: watch::Receiver<bool>,
    accepted: oneshot::Sender<Result<(), String>>,
) -> Ended {
    let connected = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(ctx, plan)).await;
    let (server, fd, tls_version) = match connected {
        Ok(Ok(server)) => server,
        Ok(Err(why)) => return refused(accepted, why),
        Err(_) => {
            return refused(
                accepted,
                format!(
                    "{} did not accept a connection within {HANDSHAKE_TIMEOUT:?}",
                    plan.address
                ),
            );
        }
    };
    let (client_end, session_end) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return refused(accepted, format!("cannot make a socket pair: {e}")),
    };
    let original = plan.original.parse::<TrafficId>().ok();
    let meta = SessionMeta {
        conn_id: ctx.next_connection_id(),
        tls: plan.tls,
        tls_version,
        sni: plan.tls.then(|| plan.server_name.clone()),
        client_address: "frametap replay".into(),
        server_address: plan.address.clone(),
        pid: Some(std::process::id()),
        process: Some("frametap-agent (replay)".into()),
        alpn_offered: Vec::new(),
        alpn_selected: None,
        origin: frametap_store::Origin {
            replay_of: original,
            ..Default::default()
        },
    };
    let (opened_tx, opened) = oneshot::channel();
    let session_fd = std::os::fd::AsRawFd::as_raw_fd(&session_end);
    let relay = async {
        match server {
            Upstream::Plain(tcp) => {
                pump::session_telling(
                    ctx,
                    session_end,
                    tcp,
                    (session_fd, fd),
                    meta,
                    "replay",
                    Some(opened_tx),
                )
                .await
            }
            Upstream::Tls(tls) => {
                pump::session_telling(
                    ctx,
                    session_end,
                    *tls,
                    (session_fd, fd),
                    meta,
                    "replay",
                    Some(opened_tx),
                )
                .await
            }
        }
    };
    let client = Client {
        stream: client_end,
        client: None,
        status,
        cancelled,
    };
    let drive = client.drive(plan, messages, accepted, opened);
    let (ended, _) = tokio::join!(drive, relay);
    ended
}

fn refused(accepted: oneshot::Sender<Result<(), String>>, why: String) -> Ended {
    warn!(%why, "replay refused");
    let _ = accepted.send(Err(why.clone()));
    Ended::Failed(why)
}

enum Upstream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

/// The connection to the target, TLS verified as the upstream legs are.
async fn connect(
    ctx: &ProxyContext,
    plan: &ReplayPlan,
) -> Result<(Upstream, std::os::fd::RawFd, Option<String>), String> {
    let addr = resolve(&plan.address).await?;
    let tcp = connect_upstream(addr, ctx.mark, None)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    if !plan.tls {
        return Ok((Upstream::Plain(tcp), fd, None));
    }
    let name = ServerName::try_from(plan.server_name.clone())
        .map_err(|e| format!("{:?} is not a server name for TLS: {e}", plan.server_name))?;
    let tls = TlsConnector::from(ctx.intercept.tls.upstream_config(true))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {} ({addr}) failed: {e}", plan.server_name))?;
    let version = tls_version_name(tls.get_ref().1.protocol_version());
    Ok((Upstream::Tls(Box::new(tls)), fd, version))
}

/// Ready when a cancel is asked; never if nobody can ask any more.
async fn cancel_asked(cancelled: &mut watch::Receiver<bool>) {
    if cancelled.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The replaying client, on its end of the socket pair.
struct Client<'a, S> {
    stream: S,
    client: Option<ReplayClient>,
    status: &'a Shared,
    cancelled: watch::Receiver<bool>,
}

/// What reading the server gave while waiting.
enum Heard {
    /// Nothing that ends the wait.
    Nothing,
    /// The server closed (or the connection ended): why.
    Gone(String),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<'_, S> {
    /// Plays the conversation, then reads what is left until the session ends our
    /// side (dropping it early would look like a client reset).
    async fn drive(
        mut self,
        plan: &ReplayPlan,
        messages: Vec<Planned>,
        accepted: oneshot::Sender<Result<(), String>>,
        opened: oneshot::Receiver<TrafficId>,
    ) -> Ended {
        let ended = self.play(plan, messages, accepted, opened).await;
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
        ended
    }

    async fn play(
        &mut self,
        plan: &ReplayPlan,
        messages: Vec<Planned>,
        accepted: oneshot::Sender<Result<(), String>>,
        opened: oneshot::Receiver<TrafficId>,
    ) -> Ended {
        let mut key = [0u8; 16];
        for chunk in key.chunks_mut(4) {
            chunk.copy_from_slice(&random_mask_key());
        }
        let request = handshake_request(&plan.path, &plan.host, &plan.headers, plan.deflate, &key);
        self.client = Some(ReplayClient::new(&key));
        if let Err(e) = self.stream.write_all(&request).await {
            return refused(accepted, format!("cannot send the handshake: {e}"));
        }
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut buf = vec![0u8; 16 * 1024];
        let answer = loop {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await;
            let n = match read {
                Err(_) => {
                    break Err(format!(
                        "{} did not answer the handshake within {HANDSHAKE_TIMEOUT:?}",
                        plan.url
                    ));
                }
                Ok(Err(e)) => {
                    break Err(format!("the connection failed during the handshake: {e}"));
                }
                Ok(Ok(0)) => {
                    break Err("the server closed the connection during the handshake".into());
                }
                Ok(Ok(n)) => n,
            };
            let mut events = Vec::new();
            self.client().on_server_bytes(&buf[..n], &mut events);
            if let Some(event) = events
                .into_iter()
                .find(|e| matches!(e, ServerEvent::Accepted { .. } | ServerEvent::Refused(_)))
            {
                match event {
                    ServerEvent::Refused(why) => break Err(why),
                    _ => break Ok(()),
                }
            }
        };
        if let Err(why) = answer {
            let _ = self.stream.shutdown().await;
            return refused(accepted, why);
        }
        let traffic = tokio::time::timeout(Duration::from_secs(1), opened).await;
        if let Ok(Ok(traffic)) = traffic {
            update(self.status, |s| s.traffic_id = Some(traffic.to_string()));
        }
        let _ = accepted.send(Ok(()));

        for (i, message) in messages.iter().enumerate() {
            let waited = match message.after_server_messages {
                Some(n) => {
                    let until = Instant::now() + ANSWER_TIMEOUT;
                    self.wait(until, Some(n)).await
                }
                None => self.wait(Instant::now() + message.delay, None).await,
            };
            match waited {
                Ok(Heard::Nothing) => {}
                Ok(Heard::Gone(why)) => {
                    return Ended::Done(Some(format!(
                        "{why} after {i} of {} messages",
                        messages.len()
                    )));
                }
                Err(ended) => return ended,
            }
            let mask = random_mask_key();
            let bytes = self
                .client()
                .message(message.is_text, &message.content, mask);
            if let Err(e) = self.stream.write_all(&bytes).await {
                return Ended::Failed(format!("the connection failed after {i} messages: {e}"));
            }
            update(self.status, |s| s.messages_sent += 1);
        }
        let linger = Instant::now() + Duration::from_millis(plan.linger_ms);
        match self.wait(linger, None).await {
            Ok(Heard::Nothing) => {}
            Ok(Heard::Gone(_)) => return Ended::Done(None),
            Err(ended) => return ended,
        }
        self.close(1000, "replay done").await;
        Ended::Done(None)
    }

    fn client(&mut self) -> &mut ReplayClient {
        self.client.as_mut().expect("made before the handshake")
    }

    /// Reads the server until `until` (or until it has sent `server_messages`
    /// messages), answering pings. `Err` when the replay must end now (cancelled, or
    /// the connection failed).
    async fn wait(&mut self, until: Instant, server_messages: Option<u64>) -> Result<Heard, Ended> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let have = snapshot(self.status).server_messages;
            if server_messages.is_some_and(|n| have >= n) {
                return Ok(Heard::Nothing);
            }
            if *self.cancelled.borrow() {
                self.close(1001, "replay cancelled").await;
                return Err(Ended::Cancelled);
            }
            let read = tokio::select! {
                read = self.stream.read(&mut buf) => read,
                () = tokio::time::sleep_until(until) => return Ok(Heard::Nothing),
                () = cancel_asked(&mut self.cancelled) => continue,
            };
            let n = match read {
                Ok(0) => return Ok(Heard::Gone("the server ended the connection".into())),
                Ok(n) => n,
                Err(e) => return Err(Ended::Failed(format!("the connection failed: {e}"))),
            };
            let mut events = Vec::new();
            self.client().on_server_bytes(&buf[..n], &mut events);
            for event in events {
                match event {
                    ServerEvent::Message => update(self.status, |s| s.server_messages += 1),
                    ServerEvent::Ping(payload) => {
                        let pong = self.client().pong(&payload, random_mask_key());
                        if let Err(e) = self.stream.write_all(&pong).await {
                            return Err(Ended::Failed(format!("the connection failed: {e}")));
                        }
                    }
                    ServerEvent::Close { code, reason } => {
                        // Answer it, as a client does, and stop sending.
                        let echo = self.client().close(
                            code.unwrap_or(1000),
                            reason.as_deref().unwrap_or(""),
                            random_mask_key(),
                        );
                        let _ = self.stream.write_all(&echo).await;
                        let _ = self.stream.shutdown().await;
                        return Ok(Heard::Gone(format!(
                            "the server closed the connection ({})",
                            code.map_or("no code".to_string(), |c| c.to_string())
                        )));
                    }
                    ServerEvent::Error(why) => return Err(Ended::Failed(why)),
                    ServerEvent::Accepted { .. } | ServerEvent::Refused(_) => {}
                }
            }
        }
    }

    /// Sends a close frame and waits a little for the server's, then ends our side.
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = self.client().close(code, reason, random_mask_key());
        if self.stream.write_all(&frame).await.is_ok() {
            let mut buf = vec![0u8; 16 * 1024];
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            loop {
                match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(n)) => {
                        let mut events = Vec::new();
                        self.client().on_server_bytes(&buf[..n], &mut events);
                        for event in events {
                            if event == ServerEvent::Message {
                                update(self.status, |s| s.server_messages += 1);
                            }
                        }
                    }
                }
            }
        }
        let _ = self.stream.shutdown().await;
    }
}
