//! Whether records are being stored: the recording state machine of the store's writer.
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

/// Counters of the store's writer (snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches written successfully.
    pub batches: u64,
    /// Records written successfully.
    pub records_written: u64,
    /// Records whose write failed (database or encoding error).
    pub records_failed: u64,
    /// Records dropped without trying: queue full or writer stopped.
    pub records_dropped: u64,
    /// Bytes of successfully written batches (`WriteBatch` size, keys + values +
    /// small per-record overhead).
    pub bytes_written: u64,
    /// Times the store was reopened to get out of a write error.
    pub reopens: u64,
}

#[cfg(test)]
mod tests;
