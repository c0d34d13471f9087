//! What the HTTP handlers need from the rest of the API process, as traits so the
//! binary can plug in the real follower store, agent link and health reporter, and the
//! tests can plug in fakes.
//!
//! - [`StoreSource`]: the read-only follower ([`Store::open_secondary`]) of the agent's
//!   RocksDB, which may not be readable yet.
//! - [`AgentControl`]: the writes, which only the agent (the store's primary) can make,
//!   and the agent's message rules.
//! - [`HealthSource`]: the [`Health`] report served by `GET /api/health`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use frametap_control::{DeleteTarget, InjectDirection, Refusal, ReplayPlan, ReplayStatus, Rule};
use frametap_store::{Store, TrafficId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthConfig;

/// Gives handlers the follower store.
pub trait StoreSource: Send + Sync + 'static {
    /// The follower store, or `Err(reason)` while it can't be read (agent never started
    /// here, store unreadable): handlers answer 503 with the reason.
    fn store(&self) -> Result<Store, String>;

    /// Catch up with the primary now (after a write made through the agent), so the
    /// next read sees it. Best effort, blocking, ~1 ms: call it from a blocking thread.
    fn refresh(&self);
}

/// The future of an [`AgentControl`] request: the agent's answer, or why there is none.
pub type AgentFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlError>> + Send + 'a>>;

/// The future returned by [`AgentControl::delete_frames`].
pub type DeleteFramesFuture<'a> = AgentFuture<'a, u64>;

/// Writes, made by the agent on the API's behalf (the API only has a read-only follower),
/// and the agent's own state (its message rules), which only it holds.
pub trait AgentControl: Send + Sync + 'static {
    /// Asks the agent to delete every frame of `traffic` recorded so far; returns how
    /// many were deleted. Frames recorded afterwards are kept.
    fn delete_frames(&self, traffic: TrafficId) -> DeleteFramesFuture<'_>;

    /// Asks the agent to delete traffic entries and everything recorded under them
    /// (frames, bodies). [`DeleteTarget::One`] is refused with [`Refusal::NotFound`]
    /// when the entry does not exist.
    fn delete_traffic(&self, target: DeleteTarget) -> AgentFuture<'_, TrafficDeletion>;

    /// The message rules in force, in the order the agent tries them.
    fn list_rules(&self) -> AgentFuture<'_, Vec<Rule>>;

    /// Appends `rule`; returns it as the agent stored it (with its id). The agent
    /// refuses ([`ControlError::Refused`]) rules that do not compile.
    fn add_rule(&self, rule: Rule) -> AgentFuture<'_, Rule>;

    /// Removes the rule `id`; refused with [`Refusal::NotFound`] if there is none.
    fn delete_rule(&self, id: String) -> AgentFuture<'_, ()>;

    /// Sends one message (`payload`, already decoded) into the live connection
    /// `traffic`, towards `direction`; returns the sequence number of the frame the
    /// agent recorded for it. Refused with [`Refusal::NotFound`] or
    /// [`Refusal::Conflict`] when the agent has no such open connection.
    fn send(
        &self,
        traffic: TrafficId,
        direction: InjectDirection,
        payload: Vec<u8>,
        is_binary: bool,
    ) -> AgentFuture<'_, u64>;

    /// Plays a recorded conversation again; answers once the target accepted the
    /// handshake (refused with [`Refusal::Upstream`] when it did not).
    fn replay(&self, plan: ReplayPlan) -> AgentFuture<'_, ReplayStatus>;

    /// The replays the agent knows, newest first.
    fn replays(&self) -> AgentFuture<'_, Vec<ReplayStatus>>;

    /// Stops a running replay; refused with [`Refusal::NotFound`] or
    /// [`Refusal::Conflict`] (it has ended).
    fn cancel_replay(&self, id: String) -> AgentFuture<'_, ReplayStatus>;
}

/// What [`AgentControl::delete_traffic`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficDeletion {
    /// Traffic entries.
    pub entries: u64,
    /// WebSocket frames that went with them.
    pub frames: u64,
}

/// Why the agent did not carry out a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The agent could not be reached (not running, control socket missing): 503.
    AgentDown(String),
    /// The agent answered with an error: 502.
    Failed(String),
    /// The agent refused the request for a reason the caller can act on (invalid
    /// rule, no such rule or connection, connection closed): 400, 404 or 409.
    Refused(Refusal, String),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::AgentDown(reason) => write!(f, "frametap-agent unreachable: {reason}"),
            ControlError::Failed(reason) => write!(f, "frametap-agent failed: {reason}"),
            ControlError::Refused(refusal, message) => {
                write!(f, "frametap-agent refused ({refusal:?}): {message}")
            }
        }
    }
}

impl std::error::Error for ControlError {}

/// Produces the report served by `GET /api/health`.
pub trait HealthSource: Send + Sync + 'static {
    /// The current health report (cheap: no I/O expected).
    fn health(&self) -> Health;
}

/// Everything the router's handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The follower store the handlers read.
    pub store: Arc<dyn StoreSource>,
    /// The agent, for writes.
    pub agent: Arc<dyn AgentControl>,
    /// The health reporter.
    pub health: Arc<dyn HealthSource>,
    /// Who may call `/api`.
    pub auth: AuthConfig,
}

/// Overall verdict of a [`Health`] report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works.
    Ok,
    /// Something is down or lagging; the other fields say what.
    Degraded,
}

/// `GET /api/health`: the state of the agent link, the follower store and the live
/// event relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok`, or `degraded` when any part below is down or lagging.
    pub status: HealthStatus,
    /// frametap-api's version.
    pub version: String,
    /// The agent, as seen through its control socket.
    pub agent: AgentHealth,
    /// The follower store.
    pub store: StoreHealth,
    /// The live event relay from the agent.
    pub events: EventsHealth,
    /// Whether the agent's writes to its store succeed.
    pub recording: RecordingHealth,
}

/// The recording part of [`Health`]: whether what the agent captures is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingHealth {
    /// `ok` while writes succeed, `degraded` while they fail (records are lost,
    /// traffic still flows), `unknown` while the agent does not answer.
    pub state: RecordingState,
    /// Degraded: when writes started failing (ms since the epoch).
    #[schema(required = true)]
    pub since: Option<u64>,
    /// Degraded: the first error of this outage.
    #[schema(required = true)]
    pub error: Option<String>,
    /// Degraded: records lost in this outage so far.
    pub records_lost: u64,
    /// Since the agent started: records written.
    pub records_written: u64,
    /// Since the agent started: records whose write failed.
    pub records_failed: u64,
    /// Since the agent started: records dropped without a write (the write queue was
    /// full).
    pub records_dropped: u64,
    /// The most recent outage that ended.
    #[schema(required = true)]
    pub last_outage: Option<OutageHealth>,
}

/// [`RecordingHealth`]'s verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    Ok,
    Degraded,
    Unknown,
}

/// A period during which the agent's writes failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutageHealth {
    /// When writes started failing (ms since the epoch).
    pub stopped_at: u64,
    /// When a write succeeded again (ms since the epoch).
    pub resumed_at: u64,
    /// Records whose write failed in between.
    pub records_lost: u64,
    /// The first error of the outage.
    pub error: String,
}

/// The agent part of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentHealth {
    /// The agent answers on its control socket.
    pub up: bool,
    /// The agent's process id, when known.
    #[schema(required = true)]
    pub pid: Option<u32>,
    /// Why the agent is considered down.
    #[schema(required = true)]
    pub error: Option<String>,
    /// The agent's listeners in other network namespaces (containers); `null` while
    /// the agent is down.
    #[schema(required = true)]
    pub namespaces: Option<NamespacesHealth>,
}

/// Network namespaces other than the agent's (containers) that it captures in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacesHealth {
    /// Served now.
    pub served: u64,
    /// Since the agent started: listeners opened, and closed when no process was
    /// left in their namespace.
    pub opened: u64,
    pub closed: u64,
    /// Namespaces the agent could not serve (no loopback, gone); their connections
    /// go direct. Each is logged once with the reason.
    pub refused: u64,
}

/// The follower store part of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    /// The follower is open and readable.
    pub open: bool,
    /// Milliseconds since the last successful catch-up with the agent's writes.
    #[schema(required = true)]
    pub last_catch_up_ms_ago: Option<u64>,
    /// The follower's latest RocksDB sequence number.
    #[schema(required = true)]
    pub sequence: Option<u64>,
    /// The agent's latest RocksDB sequence number.
    #[schema(required = true)]
    pub agent_sequence: Option<u64>,
    /// How many writes the follower is behind the agent.
    #[schema(required = true)]
    pub sequence_lag: Option<u64>,
    /// Why the store can't be read, or the last catch-up failed.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The live events part of [`Health`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsHealth {
    /// Subscribed to the agent's record stream.
    pub connected: bool,
    /// Same as `recordsReceived` (kept for compatibility).
    pub received: u64,
    /// `recordsDropped + deliveriesDropped` (kept for compatibility: records and
    /// event deliveries are not the same unit).
    pub dropped: u64,
    /// Records (traffic entries, frames, connection opens and closes) received from
    /// the agent since start.
    pub records_received: u64,
    /// Records the agent dropped for this API because it fell behind, since start:
    /// their events were never emitted.
    pub records_dropped: u64,
    /// Events emitted to Socket.IO since start, once each whatever the number of
    /// clients (a `traffic:batch` carries many records, a `websocket:message`
    /// none of its own).
    pub events_emitted: u64,
    /// Event deliveries dropped since start because a client's buffer was full
    /// (one per event and client).
    pub deliveries_dropped: u64,
}
