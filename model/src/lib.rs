//! frametap's data model, with no I/O: what is recorded (traffic entries, WebSocket
//! open/close, frames, bodies) and its byte encoding, the ids, the traffic filter,
//! the recording state machine, and the message rules. The store, the control
//! socket, the session layer and the API all speak these types; none of this
//! links RocksDB.
//!
//! | module | job |
//! |---|---|
//! | [`records`] | the record types, as stored and as the API shows them |
//! | [`ids`] | traffic and frame ids, and how ids are given out |
//! | [`codec`] | records and keys as bytes (the store's values, the control socket's payloads) |
//! | [`filter`] | which traffic entries a list or a deletion selects |
//! | [`recording`] | whether records are being stored (sans-IO state machine) |
//! | [`rules`] | message rules as written, directions, refusals |
//! | `testing` | record builders for tests (feature `testing`) |

pub mod codec;
pub mod filter;
pub mod ids;
pub mod recording;
pub mod records;
pub mod rules;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use codec::CodecError;
pub use filter::{StatusMatch, TrafficFilter, contains_ignoring_case};
pub use ids::{FrameId, IdParseError, TrafficId, TrafficIds};
pub use recording::{
    Outage, RecordingChange, RecordingMonitor, RecordingState, RecordingStatus, WriterStats,
};
pub use records::{
    BodyChunk, BodyInfo, BodyOf, FrameRecord, Origin, Record, TrafficEntry, TunnelEnd, WsClose,
    WsConnection, WsOpen, is_field_value, is_token,
};
pub use rules::{InjectDirection, MessageType, Refusal, Rule, RuleAction, rule_host};
