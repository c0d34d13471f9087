//! frametap's capture store: HTTP traffic entries, WebSocket connections and every
//! WebSocket frame, in RocksDB.
//!
//! - The **agent** opens the database as *primary* ([`Store::open_primary`]) and writes
//!   through a [`Writer`] (group commit on a dedicated thread: one `WriteBatch` per
//!   drained queue, WAL on, no fsync; an ack means "in the WAL", which survives the
//!   agent being killed). It also runs retention ([`spawn_retention`]). When writes
//!   fail (a full disk), the writer reports it ([`RecordingStatus`]) and recovers by
//!   itself once they can succeed again (see [`crate::recording`]).
//! - The **API** opens the same directory as *secondary* ([`Store::open_secondary`])
//!   and calls [`Store::catch_up`] before reads (cheap; do it often).
//! - Both keep the data dir private to its owner ([`data_dir`]): recordings hold
//!   decrypted traffic.
//!
//! # Layout
//!
//! Six column families, all created when the primary opens (a secondary ignores
//! column families created after it opened). Keys are big-endian and, but for
//! `meta`, start with the [`TrafficId`], which starts with the creation time, so
//! everything sorts by time and "older than T" is a key range:
//!
//! | CF          | key                          | value                         |
//! |-------------|------------------------------|-------------------------------|
//! | `traffic`   | `TrafficId`                  | [`TrafficEntry`], JSON        |
//! | `ws`        | `TrafficId` + kind (0 open, 1 close, 2 tunnel end) | [`WsOpen`] / [`WsClose`] / [`TunnelEnd`], JSON |
//! | `frames`    | `TrafficId` + seq            | [`FrameRecord`], [`codec`] binary, lz4 |
//! | `deletions` | `TrafficId` + seq            | deletion time (u64 BE ms)     |
//! | `bodies`    | `TrafficId` + body (0 request, 1 response) + seq (u32) | [`BodyChunk`] bytes, lz4 |
//! | `meta`      | kind (`r`: rules) + version  | the agent's rule set, JSON    |
//!
//! Every key is written once and never rewritten (secondaries can read stale values of
//! overwritten keys after a flush). Counts are derived from keys: a connection's frame
//! count is its last seq minus its latest deletion watermark ([`Store::frame_count`],
//! two seeks). Deleting frames writes a new watermark key plus a range delete;
//! deleting traffic entries ([`Store::delete_traffic`]) deletes their keys. A
//! connection relayed untouched is listed from its start: its traffic entry is written
//! then, and its end (bytes, duration) later under its own `ws` key, merged on read.
//! Range scans use iterate bounds (no prefix extractor is configured).
//!
//! Stores written before bodies and `meta` existed open as they are: the primary
//! creates the missing column families, and entries without body fields read as
//! "not recorded".

mod bodies;
pub mod data_dir;
mod delete;
mod meta;
mod retention;
mod store;
mod writer;

// The data model lives in its own crate (no RocksDB); the store re-exports it so
// that code which opens a store has one import.
pub use frametap_model::{
    BodyChunk, BodyInfo, BodyOf, CodecError, FrameId, FrameRecord, IdParseError, Origin, Outage,
    Record, RecordingChange, RecordingMonitor, RecordingState, RecordingStatus, StatusMatch,
    TrafficEntry, TrafficFilter, TrafficId, TrafficIds, TunnelEnd, WriterStats, WsClose,
    WsConnection, WsOpen, contains_ignoring_case,
};
pub use frametap_model::{codec, recording};
use frametap_model::{filter, ids, records};

pub use bodies::BodyReader;
pub use meta::StoredRules;
pub use retention::{DeleteStats, RetentionHandle, RetentionReport, spawn_retention};
pub use store::{
    CF_BODIES, CF_DELETIONS, CF_FRAMES, CF_META, CF_TRAFFIC, CF_WS, COLUMN_FAMILIES, FrameFilter,
    FrameTotals, Store, StoreOptions, TRAFFIC_COLUMN_FAMILIES, now_ms,
};
pub use writer::{
    MAX_BATCH_BYTES, MAX_BATCH_RECORDS, RECOVERY_TICK, REOPEN_AFTER, WriteError, Writer, WrittenNow,
};

#[cfg(test)]
mod tests;
