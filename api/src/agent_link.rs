//! The API's side of the agent's control socket: writes (frame and traffic deletion,
//! rules, injected messages) as one-shot requests, the agent's status for `/api/health`,
//! and the live record subscription that feeds Socket.IO. Everything reconnects by itself, so the API
//! and the agent start and restart in any order.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use frametap_control::{
    AgentStatus, DeleteTarget, InjectDirection, Message, ProtocolError, ReplayPlan, ReplayStatus,
    Reply, Request, Rule,
};
use frametap_store::TrafficId;
use tracing::{info, warn};

use crate::events::LiveEvents;
use crate::state::{AgentControl, AgentFuture, ControlError, TrafficDeletion};

/// A request the agent does not answer within this is given up on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the agent's status is polled for `/api/health`.
const STATUS_INTERVAL: Duration = Duration::from_millis(250);
/// Pause between attempts to (re)subscribe while the agent is away.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(200);

pub struct AgentLink {
    data_dir: PathBuf,
    /// The last status the agent gave, or why it could not be asked.
    status: Mutex<Result<AgentStatus, String>>,
    /// The live subscription is up.
    pub subscribed: AtomicBool,
    /// Records received over the subscription since start.
    pub received: AtomicU64,
    /// Records the agent dropped for us (we fell behind), all subscriptions together.
    pub dropped: AtomicU64,
}

impl AgentLink {
    pub fn new(data_dir: &Path) -> Arc<AgentLink> {
        Arc::new(AgentLink {
            data_dir: data_dir.to_path_buf(),
            status: Mutex::new(Err("not asked yet".into())),
            subscribed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// The last known status: `Err(why)` when the agent is not reachable.
    pub fn status(&self) -> Result<AgentStatus, String> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn call(&self, request: Request) -> Result<Reply, ControlError> {
        let path = frametap_control::socket_path(&self.data_dir);
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            frametap_control::call(&self.data_dir, &request),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(ProtocolError::Io(e))) => Err(ControlError::AgentDown(format!(
                "no agent answers on {}: {e}",
                path.display()
            ))),
            Ok(Err(e)) => Err(ControlError::AgentDown(format!(
                "the agent on {} did not answer properly: {e}",
                path.display()
            ))),
            Err(_) => Err(ControlError::AgentDown(format!(
                "the agent on {} did not answer within {REQUEST_TIMEOUT:?}",
                path.display()
            ))),
        }
    }

    /// Polls the agent's status forever (for `/api/health`).
    pub async fn poll_status(self: Arc<Self>) {
        loop {
            let status = match self.call(Request::Status).await {
                Ok(Reply::Status(s)) => Ok(s),
                Ok(other) => Err(format!("unexpected answer to a status request: {other:?}")),
                Err(
                    ControlError::AgentDown(why)
                    | ControlError::Failed(why)
                    | ControlError::Refused(_, why),
                ) => Err(why),
            };
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
            tokio::time::sleep(STATUS_INTERVAL).await;
        }
    }

    /// Subscribes to the agent's records and hands them to `events`, forever,
    /// resubscribing whenever the agent goes away and comes back.
    /// `on_records` runs whenever records arrived (before they are emitted).
    pub async fn follow_records(
        self: Arc<Self>,
        events: LiveEvents,
        on_records: impl Fn() + Send + Sync + 'static,
    ) {
        let mut was_up = None;
        loop {
            let result = self.subscription(&events, &on_records).await;
            self.subscribed.store(false, Ordering::Relaxed);
            let up = result.is_ok();
            if was_up != Some(up) {
                match &result {
                    Ok(()) => info!("agent closed the live record stream; resubscribing"),
                    Err(e) => info!(error = %e, "no live records from the agent yet; retrying"),
                }
            }
            was_up = Some(up);
            tokio::time::sleep(RESUBSCRIBE_DELAY).await;
        }
    }

    /// One subscription, until it ends. `Ok` if it was established.
    async fn subscription(
        &self,
        events: &LiveEvents,
        on_records: &(impl Fn() + Sync),
    ) -> Result<(), ProtocolError> {
        let mut stream =
            tokio::net::UnixStream::connect(frametap_control::socket_path(&self.data_dir)).await?;
        frametap_control::write_message(&mut stream, &Message::Request(Request::Subscribe)).await?;
        match frametap_control::read_message(&mut stream).await? {
            Some(Message::Reply(Reply::Subscribed)) => {}
            other => {
                warn!(?other, "agent refused the live record subscription");
                return Err(ProtocolError::Truncated);
            }
        }
        self.subscribed.store(true, Ordering::Relaxed);
        // A new stream may start in the middle of connections.
        events.records_lost();
        info!("receiving live records from the agent");
        // Drops the agent reports are per subscription; keep the earlier ones.
        let base = self.dropped.load(Ordering::Relaxed);
        loop {
            match frametap_control::read_message(&mut stream).await {
                Ok(Some(Message::Records(records))) => {
                    on_records();
                    self.received
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    events.publish(records).await;
                }
                Ok(Some(Message::Recording(event))) => {
                    match &event {
                        frametap_control::RecordingEvent::Degraded { error, .. } => {
                            warn!(%error, "the agent stopped recording: its writes fail")
                        }
                        frametap_control::RecordingEvent::Resumed(outage) => info!(
                            records_lost = outage.records_lost,
                            "the agent resumed recording"
                        ),
                    }
                    events.publish_recording(&event).await;
                }
                Ok(Some(Message::Dropped(n))) => {
                    self.dropped.store(base + n, Ordering::Relaxed);
                    events.records_lost();
                    warn!(dropped = n, "the API fell behind the agent's live records");
                }
                Ok(Some(other)) => warn!(?other, "unexpected message on the live record stream"),
                Ok(None) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "live record stream broken");
                    return Ok(());
                }
            }
        }
    }
}

/// What an answer to a request other than the expected one means: a refusal the
/// caller can act on, an error, or a protocol mix-up (both 502).
fn unexpected(reply: Reply, request: &str) -> ControlError {
    match reply {
        Reply::Refused { reason, message } => ControlError::Refused(reason, message),
        Reply::Error(e) => ControlError::Failed(e),
        other => ControlError::Failed(format!("unexpected answer to {request}: {other:?}")),
    }
}

impl AgentControl for AgentLink {
    fn delete_frames(&self, traffic: TrafficId) -> AgentFuture<'_, u64> {
        Box::pin(async move {
            match self
                .call(Request::DeleteFrames {
                    traffic: traffic.to_string(),
                })
                .await?
            {
                Reply::Deleted { frames } => Ok(frames),
                other => Err(unexpected(other, "a delete request")),
            }
        })
    }

    fn delete_traffic(&self, target: DeleteTarget) -> AgentFuture<'_, TrafficDeletion> {
        Box::pin(async move {
            match self.call(Request::DeleteTraffic { target }).await? {
                Reply::TrafficDeleted { entries, frames } => {
                    Ok(TrafficDeletion { entries, frames })
                }
                other => Err(unexpected(other, "a traffic deletion")),
            }
        })
    }

    fn list_rules(&self) -> AgentFuture<'_, Vec<Rule>> {
        Box::pin(async move {
            match self.call(Request::ListRules).await? {
                Reply::Rules(rules) => Ok(rules),
                other => Err(unexpected(other, "a rule list request")),
            }
        })
    }

    fn add_rule(&self, rule: Rule) -> AgentFuture<'_, Rule> {
        Box::pin(async move {
            match self.call(Request::AddRule { rule }).await? {
                Reply::RuleAdded(rule) => Ok(rule),
                other => Err(unexpected(other, "a new rule")),
            }
        })
    }

    fn delete_rule(&self, id: String) -> AgentFuture<'_, ()> {
        Box::pin(async move {
            match self.call(Request::DeleteRule { id }).await? {
                Reply::RuleDeleted => Ok(()),
                other => Err(unexpected(other, "a rule deletion")),
            }
        })
    }

    fn send(
        &self,
        traffic: TrafficId,
        direction: InjectDirection,
        payload: Vec<u8>,
        is_binary: bool,
    ) -> AgentFuture<'_, u64> {
        Box::pin(async move {
            let request = Request::Send {
                traffic: traffic.to_string(),
                direction,
                payload: BASE64.encode(&payload),
                is_binary,
            };
            match self.call(request).await? {
                Reply::Sent { seq } => Ok(seq),
                other => Err(unexpected(other, "a send request")),
            }
        })
    }

    fn replay(&self, plan: ReplayPlan) -> AgentFuture<'_, ReplayStatus> {
        Box::pin(async move {
            match self.call(Request::Replay { plan }).await? {
                Reply::Replay(status) => Ok(status),
                other => Err(unexpected(other, "a replay")),
            }
        })
    }

    fn replays(&self) -> AgentFuture<'_, Vec<ReplayStatus>> {
        Box::pin(async move {
            match self.call(Request::Replays).await? {
                Reply::Replays(list) => Ok(list),
                other => Err(unexpected(other, "the replays")),
            }
        })
    }

    fn cancel_replay(&self, id: String) -> AgentFuture<'_, ReplayStatus> {
        Box::pin(async move {
            match self.call(Request::CancelReplay { id }).await? {
                Reply::Replay(status) => Ok(status),
                other => Err(unexpected(other, "a replay's cancellation")),
            }
        })
    }
}
