//! The control socket server (`<data-dir>/control.sock`, mode 0600): the API process
//! asks here for status, deletions, rules, injected messages, replays and the live
//! record stream. The protocol is in `frametap-control`; this is the agent's thin async
//! side of it. Every change to the rules is also recorded in the store
//! ([`record_rules`]), so the API knows them while the agent is down.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::{
    AgentStatus, DeleteTarget, InjectDirection, Message, RecordingReport, Refusal, Reply, Request,
    RuleSnapshot, read_message, write_message,
};
use frametap_store::{DeleteStats, Store, TrafficFilter, TrafficId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use frametap_session::rules::RuleBook;

use crate::{live::LiveConnections, recorder::Recorder};

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
    /// Listeners in other network namespaces, for the status.
    pub namespaces: Arc<crate::netns_listeners::NetnsStats>,
    /// Serialises rule changes, so the snapshots reach the store in order.
    pub rule_changes: tokio::sync::Mutex<()>,
    /// Replays of recorded conversations.
    pub replays: Arc<crate::replay::ReplayBook>,
}

/// Writes the rules now in force to the store (a new version; see
/// [`frametap_store::Store::record_rules`]).
pub fn record_rules(store: &Store, rules: &RuleBook) -> anyhow::Result<()> {
    let snapshot = RuleSnapshot {
        recorded_at_ms: frametap_store::now_ms(),
        agent_pid: std::process::id(),
        rules: rules.list(),
    };
    let json = serde_json::to_vec(&snapshot).context("encoding the rules")?;
    store
        .record_rules(&json)
        .context("recording the rules in the store")?;
    Ok(())
}

/// After a rule change: the new set goes to the store. The change stands either way
/// (the agent holds the rules); a failure is logged, and the API shows the previous
/// set while the agent is down.
async fn persist_rules(ctx: &ControlContext) {
    let (store, rules) = (ctx.store.clone(), Arc::clone(&ctx.rules));
    match tokio::task::spawn_blocking(move || record_rules(&store, &rules)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %format!("{e:#}"), "rules changed but not recorded"),
        Err(e) => warn!(error = %e, "rules changed but not recorded"),
    }
}

/// Deletes the traffic entries `target` names, off the async thread.
async fn delete_traffic(ctx: &ControlContext, target: DeleteTarget) -> Reply {
    let store = ctx.store.clone();
    let one = match &target {
        DeleteTarget::One { id } => match id.parse::<TrafficId>() {
            Ok(id) => Some(id),
            Err(e) => {
                return Reply::Refused {
                    reason: Refusal::NotFound,
                    message: format!("bad traffic id {id:?}: {e}"),
                };
            }
        },
        _ => None,
    };
    let work = move || -> anyhow::Result<DeleteStats> {
        match (one, target) {
            (Some(id), _) => store.delete_traffic(&[id]),
            (None, DeleteTarget::Matching { filter }) => store.delete_traffic_matching(&filter),
            (None, _) => store.delete_traffic_matching(&TrafficFilter::default()),
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(stats)) if one.is_some() && stats.traffic == 0 => Reply::Refused {
            reason: Refusal::NotFound,
            message: "Traffic entry not found".into(),
        },
        Ok(Ok(stats)) => {
            info!(
                entries = stats.traffic,
                frames = stats.frames,
                "traffic entries deleted"
            );
            Reply::TrafficDeleted {
                entries: stats.traffic,
                frames: stats.frames,
            }
        }
        Ok(Err(e)) => Reply::Error(format!("deleting traffic: {e:#}")),
        Err(e) => Reply::Error(format!("deleting traffic: {e}")),
    }
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
        Request::DeleteTraffic { target } => {
            let answer = delete_traffic(&ctx, target).await;
            let _ = reply(&mut stream, answer).await;
        }
        Request::Subscribe => stream_records(stream, &ctx).await,
        Request::ListRules => {
            let _ = reply(&mut stream, Reply::Rules(ctx.rules.list())).await;
        }
        Request::AddRule { rule } => {
            let _serial = ctx.rule_changes.lock().await;
            let answer = match ctx.rules.add(rule) {
                Ok(rule) => {
                    info!(rule = %serde_json::to_string(&rule).unwrap_or_default(), "rule added");
                    persist_rules(&ctx).await;
                    Reply::RuleAdded(rule)
                }
                Err((reason, message)) => Reply::Refused { reason, message },
            };
            let _ = reply(&mut stream, answer).await;
        }
        Request::DeleteRule { id } => {
            let _serial = ctx.rule_changes.lock().await;
            let answer = if ctx.rules.delete(&id) {
                info!(%id, "rule deleted");
                persist_rules(&ctx).await;
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
        Request::Replay { plan } => {
            info!(
                of = plan.original,
                url = plan.url,
                messages = plan.messages.len(),
                "replay asked"
            );
            let answer = match ctx.replays.start(plan).await {
                Ok(status) => Reply::Replay(status),
                Err((reason, message)) => Reply::Refused { reason, message },
            };
            let _ = reply(&mut stream, answer).await;
        }
        Request::Replays => {
            let _ = reply(&mut stream, Reply::Replays(ctx.replays.list())).await;
        }
        Request::CancelReplay { id } => {
            let answer = match ctx.replays.cancel(&id) {
                Ok(status) => Reply::Replay(status),
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
    ctx.live
        .inject(id, direction.receiver(), content, is_binary)
        .await
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
        recording: RecordingReport::new(
            &ctx.recorder.writer().recording(),
            &ctx.recorder.writer().stats(),
        ),
        namespaces: ctx.namespaces.report(),
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
            batch = subscription.recv() => {
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
