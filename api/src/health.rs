//! `/api/health`'s answer, assembled from the follower (how far behind the store
//! view is), the agent link (is the agent up, its latest sequence, whether its writes
//! succeed) and the live event counters.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use frametap_control::RecordingReport;

use crate::agent_link::AgentLink;
use crate::events::EventStats;
use crate::follower::Follower;
use crate::state::{
    AgentHealth, EventsHealth, Health, HealthSource, HealthStatus, NamespacesHealth, OutageHealth,
    RecordingHealth, RecordingState, StoreHealth,
};

pub struct ApiHealth {
    pub follower: Arc<Follower>,
    pub agent: Arc<AgentLink>,
    pub events: Arc<EventStats>,
}

impl HealthSource for ApiHealth {
    fn health(&self) -> Health {
        let agent = self.agent.status();
        let sequence = self.follower.sequence();
        let agent_sequence = agent.as_ref().ok().map(|s| s.sequence);
        let store_error = self.follower.error();
        let open = sequence.is_some();
        let agent_up = agent.is_ok();
        let recording = recording_health(agent.as_ref().ok().map(|s| &s.recording));
        Health {
            status: if open && agent_up && recording.state == RecordingState::Ok {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            agent: AgentHealth {
                up: agent_up,
                pid: agent.as_ref().ok().map(|s| s.pid),
                namespaces: agent.as_ref().ok().map(|s| NamespacesHealth {
                    served: s.namespaces.served,
                    opened: s.namespaces.opened,
                    closed: s.namespaces.closed,
                    refused: s.namespaces.refused,
                }),
                error: agent.err(),
            },
            store: StoreHealth {
                open,
                last_catch_up_ms_ago: self.follower.since_catch_up().map(|d| d.as_millis() as u64),
                sequence,
                agent_sequence,
                // The agent's sequence is sampled every 250 ms, so a busy agent can
                // look a little ahead of a follower that is in fact current.
                sequence_lag: sequence
                    .zip(agent_sequence)
                    .map(|(ours, theirs)| theirs.saturating_sub(ours)),
                error: store_error,
            },
            events: {
                let records_received = self.agent.received.load(Ordering::Relaxed);
                let records_dropped = self.agent.dropped.load(Ordering::Relaxed);
                let deliveries_dropped = self.events.dropped.load(Ordering::Relaxed);
                EventsHealth {
                    connected: self.agent.subscribed.load(Ordering::Relaxed),
                    received: records_received,
                    dropped: records_dropped + deliveries_dropped,
                    records_received,
                    records_dropped,
                    events_emitted: self.events.emitted.load(Ordering::Relaxed),
                    deliveries_dropped,
                }
            },
            recording,
        }
    }
}

/// The agent's recording report as `/api/health` shows it (`None`: the agent is down).
pub fn recording_health(report: Option<&RecordingReport>) -> RecordingHealth {
    let Some(r) = report else {
        return RecordingHealth {
            state: RecordingState::Unknown,
            since: None,
            error: None,
            records_lost: 0,
            records_written: 0,
            records_failed: 0,
            records_dropped: 0,
            last_outage: None,
        };
    };
    RecordingHealth {
        state: if r.degraded {
            RecordingState::Degraded
        } else {
            RecordingState::Ok
        },
        since: r.since_ms,
        error: r.error.clone(),
        records_lost: r.records_lost,
        records_written: r.records_written,
        records_failed: r.records_failed,
        records_dropped: r.records_dropped,
        last_outage: r.last_outage.as_ref().map(|o| OutageHealth {
            stopped_at: o.stopped_at_ms,
            resumed_at: o.resumed_at_ms,
            records_lost: o.records_lost,
            error: o.error.clone(),
        }),
    }
}
