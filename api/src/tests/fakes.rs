//! The fake agent and health source the fixture's router is built with.

use std::sync::Mutex;

use frametap_control::{
    DeleteTarget, InjectDirection, Refusal, ReplayPlan, ReplayState, ReplayStatus, Rule,
};
use frametap_store::{Store, TrafficFilter, TrafficId};

use crate::state::{
    AgentControl, AgentFuture, AgentHealth, ControlError, DeleteFramesFuture, EventsHealth, Health,
    HealthSource, HealthStatus, OutageHealth, RecordingHealth, RecordingState, StoreHealth,
    TrafficDeletion,
};

use super::frame;

/// A request the fake agent received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AgentCall {
    DeleteFrames(TrafficId),
    DeleteTraffic(DeleteTarget),
    ListRules,
    AddRule(Rule),
    DeleteRule(String),
    Send {
        traffic: TrafficId,
        direction: InjectDirection,
        payload: Vec<u8>,
        is_binary: bool,
    },
    Replay(ReplayPlan),
    CancelReplay(String),
}

/// The one target host the fake agent's replays cannot reach.
pub(super) const REFUSING_HOST: &str = "refusing.example.com";

/// The one regex the fake agent can't compile.
pub(super) const BAD_REGEX: &str = "(unclosed";

/// Acts as the real agent does on request: deletes and injects through the primary,
/// keeps rules; records every call.
pub(super) struct Agent {
    primary: Store,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<AgentCall>>,
    replays: Mutex<Vec<ReplayStatus>>,
}

impl Agent {
    pub(super) fn new(primary: Store) -> Agent {
        Agent {
            primary,
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            replays: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, call: AgentCall) {
        self.calls.lock().unwrap().push(call);
    }

    pub(super) fn calls(&self) -> Vec<AgentCall> {
        self.calls.lock().unwrap().clone()
    }

    /// Records the injected frame as the agent would, and returns its seq.
    fn inject(
        &self,
        traffic: TrafficId,
        direction: InjectDirection,
        payload: &[u8],
        is_binary: bool,
    ) -> Result<u64, ControlError> {
        let refuse = |reason, message: &str| Err(ControlError::Refused(reason, message.into()));
        match self.primary.ws_connection(traffic).unwrap() {
            None => return refuse(Refusal::NotFound, "no such connection"),
            Some(c) if !c.open => return refuse(Refusal::Conflict, "connection closed"),
            Some(_) => {}
        }
        let last = self
            .primary
            .frames(traffic, None, usize::MAX, &Default::default())
            .unwrap()
            .last()
            .map_or(0, |f| f.seq);
        let from_client = direction == InjectDirection::ToServer;
        let mut injected = frame(
            traffic,
            last + 1,
            from_client,
            if is_binary { 2 } else { 1 },
            payload,
        );
        injected.injected = true;
        injected.masked = false;
        self.primary.write(&[injected.into()]).unwrap();
        Ok(last + 1)
    }
}

impl AgentControl for Agent {
    fn delete_frames(&self, traffic: TrafficId) -> DeleteFramesFuture<'_> {
        self.record(AgentCall::DeleteFrames(traffic));
        Box::pin(async move {
            self.primary
                .delete_frames(traffic)
                .map_err(|e| ControlError::Failed(format!("{e:#}")))
        })
    }

    fn delete_traffic(&self, target: DeleteTarget) -> AgentFuture<'_, TrafficDeletion> {
        self.record(AgentCall::DeleteTraffic(target.clone()));
        Box::pin(async move {
            let failed = |e: anyhow::Error| ControlError::Failed(format!("{e:#}"));
            let stats = match &target {
                DeleteTarget::One { id } => {
                    let id: TrafficId = id.parse().map_err(|e| failed(anyhow::Error::new(e)))?;
                    let stats = self.primary.delete_traffic(&[id]).map_err(failed)?;
                    if stats.traffic == 0 {
                        return Err(ControlError::Refused(
                            Refusal::NotFound,
                            "Traffic entry not found".into(),
                        ));
                    }
                    stats
                }
                DeleteTarget::Matching { filter } => self
                    .primary
                    .delete_traffic_matching(filter)
                    .map_err(failed)?,
                DeleteTarget::All => self
                    .primary
                    .delete_traffic_matching(&TrafficFilter::default())
                    .map_err(failed)?,
            };
            Ok(TrafficDeletion {
                entries: stats.traffic,
                frames: stats.frames,
            })
        })
    }

    fn list_rules(&self) -> AgentFuture<'_, Vec<Rule>> {
        self.record(AgentCall::ListRules);
        Box::pin(async move { Ok(self.rules.lock().unwrap().clone()) })
    }

    fn add_rule(&self, rule: Rule) -> AgentFuture<'_, Rule> {
        self.record(AgentCall::AddRule(rule.clone()));
        Box::pin(async move {
            let mut rules = self.rules.lock().unwrap();
            if rule.regex.as_deref() == Some(BAD_REGEX) {
                return Err(ControlError::Refused(
                    Refusal::BadRequest,
                    "regex parse error: unclosed group".into(),
                ));
            }
            if rules.iter().any(|r| r.id.is_some() && r.id == rule.id) {
                return Err(ControlError::Refused(
                    Refusal::Conflict,
                    "a rule with this id exists".into(),
                ));
            }
            let added = Rule {
                id: rule
                    .id
                    .clone()
                    .or(Some(format!("rule-{}", rules.len() + 1))),
                ..rule
            };
            rules.push(added.clone());
            Ok(added)
        })
    }

    fn delete_rule(&self, id: String) -> AgentFuture<'_, ()> {
        self.record(AgentCall::DeleteRule(id.clone()));
        Box::pin(async move {
            let mut rules = self.rules.lock().unwrap();
            let before = rules.len();
            rules.retain(|r| r.id.as_deref() != Some(&id));
            if rules.len() == before {
                return Err(ControlError::Refused(
                    Refusal::NotFound,
                    format!("no rule with id {id:?}"),
                ));
            }
            Ok(())
        })
    }

    fn send(
        &self,
        traffic: TrafficId,
        direction: InjectDirection,
        payload: Vec<u8>,
        is_binary: bool,
    ) -> AgentFuture<'_, u64> {
        self.record(AgentCall::Send {
            traffic,
            direction,
            payload: payload.clone(),
            is_binary,
        });
        Box::pin(async move { self.inject(traffic, direction, &payload, is_binary) })
    }

    /// Accepts every plan but one to [`REFUSING_HOST`]; the replay stays running
    /// until cancelled.
    fn replay(&self, plan: ReplayPlan) -> AgentFuture<'_, ReplayStatus> {
        self.record(AgentCall::Replay(plan.clone()));
        Box::pin(async move {
            if plan.server_name == REFUSING_HOST {
                return Err(ControlError::Refused(
                    Refusal::Upstream,
                    "the server answered 403 Forbidden, not 101 Switching Protocols".into(),
                ));
            }
            let mut replays = self.replays.lock().unwrap();
            let status = ReplayStatus {
                id: format!("replay-{}", replays.len() + 1),
                replay_of: plan.original.clone(),
                traffic_id: None,
                url: plan.url.clone(),
                state: ReplayState::Running,
                messages_total: plan.messages.len() as u64,
                messages_sent: 0,
                server_messages: 0,
                started_at: 1_709_136_100_000,
                ended_at: None,
                error: None,
            };
            replays.insert(0, status.clone());
            Ok(status)
        })
    }

    fn replays(&self) -> AgentFuture<'_, Vec<ReplayStatus>> {
        Box::pin(async move { Ok(self.replays.lock().unwrap().clone()) })
    }

    fn cancel_replay(&self, id: String) -> AgentFuture<'_, ReplayStatus> {
        self.record(AgentCall::CancelReplay(id.clone()));
        Box::pin(async move {
            let mut replays = self.replays.lock().unwrap();
            let Some(status) = replays.iter_mut().find(|r| r.id == id) else {
                return Err(ControlError::Refused(
                    Refusal::NotFound,
                    format!("no replay {id:?}"),
                ));
            };
            if status.state != ReplayState::Running {
                return Err(ControlError::Refused(
                    Refusal::Conflict,
                    format!("replay {id} has already ended"),
                ));
            }
            status.state = ReplayState::Cancelled;
            Ok(status.clone())
        })
    }
}

/// An agent that answers every request with a `ControlError`.
pub(super) struct BrokenAgent(pub(super) ControlError);

impl BrokenAgent {
    fn fail<T>(&self) -> AgentFuture<'_, T> {
        let error = self.0.clone();
        Box::pin(async move { Err(error) })
    }
}

impl AgentControl for BrokenAgent {
    fn delete_frames(&self, _traffic: TrafficId) -> DeleteFramesFuture<'_> {
        self.fail()
    }
    fn delete_traffic(&self, _target: DeleteTarget) -> AgentFuture<'_, TrafficDeletion> {
        self.fail()
    }
    fn list_rules(&self) -> AgentFuture<'_, Vec<Rule>> {
        self.fail()
    }
    fn add_rule(&self, _rule: Rule) -> AgentFuture<'_, Rule> {
        self.fail()
    }
    fn delete_rule(&self, _id: String) -> AgentFuture<'_, ()> {
        self.fail()
    }
    fn send(
        &self,
        _traffic: TrafficId,
        _direction: InjectDirection,
        _payload: Vec<u8>,
        _is_binary: bool,
    ) -> AgentFuture<'_, u64> {
        self.fail()
    }
    fn replay(&self, _plan: ReplayPlan) -> AgentFuture<'_, ReplayStatus> {
        self.fail()
    }
    fn replays(&self) -> AgentFuture<'_, Vec<ReplayStatus>> {
        self.fail()
    }
    fn cancel_replay(&self, _id: String) -> AgentFuture<'_, ReplayStatus> {
        self.fail()
    }
}

pub(super) struct FixedHealth;

fn sample_health() -> Health {
    Health {
        status: HealthStatus::Degraded,
        version: "0.1.0".into(),
        agent: AgentHealth {
            up: false,
            pid: None,
            namespaces: None,
            error: Some("control socket /var/lib/frametap/agent.sock: connection refused".into()),
        },
        store: StoreHealth {
            open: true,
            last_catch_up_ms_ago: Some(3),
            sequence: Some(42),
            agent_sequence: None,
            sequence_lag: None,
            error: None,
        },
        events: EventsHealth {
            connected: false,
            received: 7,
            dropped: 3,
            records_received: 7,
            records_dropped: 1,
            events_emitted: 9,
            deliveries_dropped: 2,
        },
        recording: RecordingHealth {
            state: RecordingState::Degraded,
            since: Some(1_764_000_000_000),
            error: Some("IO error: No space left on device".into()),
            records_lost: 120,
            records_written: 5_000,
            records_failed: 130,
            records_dropped: 0,
            last_outage: Some(OutageHealth {
                stopped_at: 1_763_000_000_000,
                resumed_at: 1_763_000_004_000,
                records_lost: 10,
                error: "IO error: No space left on device".into(),
            }),
        },
    }
}

impl HealthSource for FixedHealth {
    fn health(&self) -> Health {
        sample_health()
    }
}
