//! Whether records are being stored: the recording state machine of a [`crate::Writer`].
//!
//! ```text
//!            write failed                         write failed (counted as lost)
//! recording ─────────────► degraded since T ◄───┐
//!     ▲                          │  └───────────┘
//!     └──────────────────────────┘
//!        a write succeeded: the outage (stopped at, resumed at, records lost) is kept
//! ```
//!
//! Sans-IO: times and outcomes go in, [`RecordingChange`]s come out; the writer logs
//! them and hands them to whoever listens (the agent's live events).

use std::time::Duration;

/// Stored or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordingState {
    /// Writes succeed.
    #[default]
    Recording,
    /// The last write failed: records are being lost.
    Degraded,
}

/// One period during which writes failed, from the first failed write to the first
/// write that succeeded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// When the first write failed (ms since the epoch).
    pub stopped_at_ms: u64,
    /// When a write succeeded again (ms since the epoch).
    pub resumed_at_ms: u64,
    /// Records whose write failed in between.
    pub records_lost: u64,
    /// The first error of the outage.
    pub error: String,
}

impl Outage {
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.resumed_at_ms.saturating_sub(self.stopped_at_ms))
    }
}

/// Snapshot of the recording state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingStatus {
    pub state: RecordingState,
    /// Degraded: when the first write of this outage failed (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Degraded: records lost so far in this outage.
    pub records_lost: u64,
    /// Degraded: the first error of this outage.
    pub error: Option<String>,
    /// The most recent outage that ended.
    pub last_outage: Option<Outage>,
}

/// A transition of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingChange {
    /// Writes started failing.
    Stopped { at_ms: u64, error: String },
    /// Writes succeed again after an outage.
    Resumed(Outage),
}

/// The state machine: feed it every write outcome.
#[derive(Debug, Default)]
pub struct RecordingMonitor {
    status: RecordingStatus,
}

impl RecordingMonitor {
    pub fn status(&self) -> &RecordingStatus {
        &self.status
    }

    pub fn is_degraded(&self) -> bool {
        self.status.state == RecordingState::Degraded
    }

    /// A write of `records` records failed at `now_ms` with `error`.
    pub fn failed(&mut self, now_ms: u64, records: u64, error: &str) -> Option<RecordingChange> {
        let s = &mut self.status;
        s.records_lost += records;
        if s.state == RecordingState::Degraded {
            return None;
        }
        s.state = RecordingState::Degraded;
        s.since_ms = Some(now_ms);
        s.records_lost = records;
        s.error = Some(error.to_string());
        Some(RecordingChange::Stopped {
            at_ms: now_ms,
            error: error.to_string(),
        })
    }

    /// A write succeeded at `now_ms`.
    pub fn written(&mut self, now_ms: u64) -> Option<RecordingChange> {
        let s = &mut self.status;
        if s.state == RecordingState::Recording {
            return None;
        }
        let outage = Outage {
            stopped_at_ms: s.since_ms.take().unwrap_or(now_ms),
            resumed_at_ms: now_ms,
            records_lost: std::mem::take(&mut s.records_lost),
            error: s.error.take().unwrap_or_default(),
        };
        s.state = RecordingState::Recording;
        s.last_outage = Some(outage.clone());
        Some(RecordingChange::Resumed(outage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_runs_from_the_first_failure_to_the_first_success() {
        let mut m = RecordingMonitor::default();
        assert_eq!(m.written(1_000), None);
        assert_eq!(m.status(), &RecordingStatus::default());

        assert_eq!(
            m.failed(2_000, 10, "No space left on device"),
            Some(RecordingChange::Stopped {
                at_ms: 2_000,
                error: "No space left on device".into()
            })
        );
        // Later failures only add to the count; the first error is kept.
        assert_eq!(m.failed(3_000, 5, "other"), None);
        assert_eq!(m.failed(4_000, 1, "other"), None);
        let s = m.status().clone();
        assert!(m.is_degraded());
        assert_eq!(s.state, RecordingState::Degraded);
        assert_eq!(s.since_ms, Some(2_000));
        assert_eq!(s.records_lost, 16);
        assert_eq!(s.error.as_deref(), Some("No space left on device"));
        assert_eq!(s.last_outage, None);

        let outage = Outage {
            stopped_at_ms: 2_000,
            resumed_at_ms: 9_500,
            records_lost: 16,
            error: "No space left on device".into(),
        };
        assert_eq!(
            m.written(9_500),
            Some(RecordingChange::Resumed(outage.clone()))
        );
        assert_eq!(outage.duration(), Duration::from_millis(7_500));
        assert_eq!(m.written(9_600), None);
        let s = m.status();
        assert!(!m.is_degraded());
        assert_eq!(
            (s.since_ms, s.records_lost, s.error.as_ref()),
            (None, 0, None)
        );
        assert_eq!(s.last_outage, Some(outage));

        // A second outage starts its own count and keeps the previous one until it ends.
        assert!(matches!(
            m.failed(20_000, 3, "again"),
            Some(RecordingChange::Stopped { at_ms: 20_000, .. })
        ));
        assert_eq!(m.status().records_lost, 3);
        assert_eq!(m.status().last_outage.as_ref().unwrap().records_lost, 16);
        let Some(RecordingChange::Resumed(second)) = m.written(21_000) else {
            panic!("expected a resume");
        };
        assert_eq!((second.records_lost, second.error.as_str()), (3, "again"));
    }
}
