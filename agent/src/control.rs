//! The control socket server (`<data-dir>/control.sock`, mode 0600): the API process
//! asks here for status, frame deletion and the live record stream. The protocol is
//! in `frametap-control`; this is the agent's thin async side of it.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::{
    AgentStatus, InjectDirection, Message, Refusal, Reply, Request, read_message, write_message,
};
use frametap_store::{Store, TrafficId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use crate::{intercept::session::Side, live::LiveConnections, recorder::Recorder, rules::RuleBook};

/// A client has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound socket; removes its file when dropped.
pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `<data_dir>/control.sock`. A socket file left by a dead agent is
    /// replaced; one a live agent answers on is an error (one agent per data dir).
    pub fn bind(data_dir: &Path) -> anyhow::Result<ControlSocket> {
        let path = frametap_control::socket_path(data_dir);
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                bail!(
                    "another frametap-agent is already serving from {} (its control socket {} answers): stop it, or use another --data-dir",
                    data_dir.display(),
                    path.display()
                );
            }
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
        }
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .with_context(|| format!("cannot create the control socket {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {} to root", path.display()))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests until the future is dropped (it never ends by itself). Must
    /// run inside a tokio runtime.
    pub async fn serve(&self, ctx: Arc<ControlContext>) {
        let listener = match self.listener.try_clone().map(UnixListener::from_std) {
            Ok(Ok(l)) => l,
            Ok(Err(e)) | Err(e) => {
                warn!(error = %e, "control socket unusable: the API cannot reach this agent");
                return std::future::pending().await;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, Arc::clone(&ctx)));
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What requests act on.
pub struct ControlContext {
    pub store: Store,
    pub recorder: Recorder,
    pub rules: Arc<RuleBook>,
    pub live: Arc<LiveConnections>,
}

async fn handle(mut stream: UnixStream, ctx: Arc<ControlContext>) {
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_message(&mut stream)).await {
        Ok(Ok(Some(Message::Request(r)))) => r,
        Ok(Ok(None)) => return,
        Ok(Ok(Some(_))) => {
            let _ = reply(&mut stream, Reply::Error("expected a request".into())).await;
            return;
        }
        Ok(Err(e)) => {
            let _ = reply(&mut stream, Reply::Error(e.to_string())).await;
            return;
        }
        Err(_) => return,
    };
    debug!(?request, "control request");
    match request {
        Request::Status => {
            let _ = reply(&mut stream, Reply::Status(status(&ctx))).await;
        }
        Request::DeleteFrames { traffic } => {
            let answer = match traffic.parse::<TrafficId>() {
                Err(e) => Reply::Error(format!("bad traffic id {traffic:?}: {e}")),
                Ok(id) => {
                    let store = ctx.store.clone();
                    match tokio::task::spawn_blocking(move || store.delete_frames(id)).await {
                        Ok(Ok(frames)) => Reply::Deleted { frames },
                        Ok(Err(e)) => Reply::Error(format!("deleting frames of {id}: {e:#}")),
                        Err(e) => Reply::Error(format!("deleting frames of {id}: {e}")),
                    }
                }
            };
            let _ = reply(&mut stream, answer).await;
        }
        Request::Subscribe => stream_records(stream, &ctx).await,
        Request::ListRules => {
            let _ = reply(&mut stream, Reply::Rules(ctx.rules.list())).await;
        }
        Request::AddRule { rule } => {
            let answer = match ctx.rules.add(rule) {
                Ok(rule) => {
                    info!(rule = %serde_json::to_string(&rule).unwrap_or_default(), "rule added");
                    Reply::RuleAdded(rule)
                }
                Err((reason, message)) => Reply::Refused { reason, message },
            };
            let _ = reply(&mut stream, answer).await;
        }
        Request::DeleteRule { id } => {
            let answer = if ctx.rules.delete(&id) {
                info!(%id, "rule deleted");
                Reply::RuleDeleted
            } else {
                Reply::Refused {
                    reason: Refusal::NotFound,
                    message: format!("no rule with id {id:?}"),
                }
            };
            let _ = reply(&mut stream, answer).await;
        }
        Request::Send {
            traffic,
            direction,
            payload,
            is_binary,
        } => {
            let answer = match send(&ctx, &traffic, direction, &payload, is_binary).await {
                Ok(seq) => Reply::Sent { seq },
                Err((reason, message)) => Reply::Refused { reason, message },
            };
            let _ = reply(&mut stream, answer).await;
        }
    }
}

async fn send(
    ctx: &ControlContext,
    traffic: &str,
    direction: InjectDirection,
    payload: &str,
    is_binary: bool,
) -> Result<u64, (Refusal, String)> {
    let id = traffic.parse::<TrafficId>().map_err(|e| {
        (
            Refusal::NotFound,
            format!("bad traffic id {traffic:?}: {e}"),
        )
    })?;
    let content = BASE64
        .decode(payload)
        .map_err(|e| (Refusal::BadRequest, format!("payload is not base64: {e}")))?;
    let to = match direction {
        InjectDirection::ToClient => Side::Client,
        InjectDirection::ToServer => Side::Server,
    };
    ctx.live.inject(id, to, content, is_binary).await
}

fn status(ctx: &ControlContext) -> AgentStatus {
    let stats = &ctx.recorder.stats;
    AgentStatus {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        sequence: ctx.store.latest_sequence(),
        records_submitted: stats.records_submitted.load(Ordering::Relaxed),
        records_failed: stats.records_failed.load(Ordering::Relaxed),
        events_dropped: ctx.recorder.events.dropped.load(Ordering::Relaxed),
    }
}

async fn reply(
    stream: &mut UnixStream,
    reply: Reply,
) -> Result<(), frametap_control::ProtocolError> {
    write_message(stream, &Message::Reply(reply)).await
}

/// Sends every persisted record until the subscriber hangs up. Batches arrive
/// already encoded; a drop notice follows whenever the subscriber lost some.
async fn stream_records(mut stream: UnixStream, ctx: &ControlContext) {
    let mut subscription = ctx.recorder.events.subscribe();
    if reply(&mut stream, Reply::Subscribed).await.is_err() {
        return;
    }
    let (mut read, mut write) = stream.into_split();
    let mut reported_dropped = 0;
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            batch = subscription.batches.recv() => {
                let Some(batch) = batch else { return };
                if write.write_all(&batch.bytes).await.is_err() {
                    return;
                }
                let dropped = subscription.dropped.load(Ordering::Relaxed);
                if dropped != reported_dropped {
                    reported_dropped = dropped;
                    let notice = frametap_control::encode(&Message::Dropped(dropped));
                    if write.write_all(&notice).await.is_err() {
                        return;
                    }
                }
            }
            // The subscriber sends nothing after subscribing: a read returns only when
            // it hangs up.
            n = read.read(&mut scratch) => {
                if matches!(n, Ok(0) | Err(_)) {
                    return;
                }
            }
        }
    }
}
