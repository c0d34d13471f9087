//! frametap's session layer, sans-IO: what one intercepted connection means and
//! what frametap does to its bytes. Bytes of either peer go in (with the time and
//! the ids, which the caller passes); records for the store and the bytes to
//! forward come out. No sockets, no clocks, no random source inside, so every
//! decision can be unit-tested and fuzzed (`fuzz/`), and HTTP/2 and replay can be
//! built on the same layer.
//!
//! | module | job |
//! |---|---|
//! | [`connection`] | one HTTP/1.x connection: exchanges, the upgrade, its end |
//! | [`entry`] | an HTTP exchange as a traffic entry |
//! | [`body`] | request and response bodies, recorded as they pass |
//! | [`ws`] | one WebSocket connection: frame records, the rule gate, injection |
//! | [`rules`] | message rules compiled and matched, the agent's rule book |
//! | [`ending`] | how a connection ended |
//!
//! Imports run one way: `connection` → `ws` → `rules`; everything → `frametap-model`
//! and `frametap-proto`.
pub mod body;
pub mod connection;
pub mod ending;
pub mod entry;
pub mod rules;
pub mod ws;

pub use connection::{SessionMeta, SessionState, Settings};
pub use ending::{Closer, Ending, FirstClose};
pub use frametap_proto::Peer;
pub use ws::{Forward, MaskKeys, Outbox};
