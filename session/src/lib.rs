//! frametap's session layer, sans-IO: what one intercepted connection means and
//! what frametap does to its bytes. Bytes of either peer go in (with the time and
//! the ids, which the caller passes); records for the store and the bytes to
//! forward come out. No sockets, no clocks, no random source inside, so every
//! decision can be unit-tested and fuzzed (`fuzz/`), and HTTP/2 and replay can be
//! built on the same layer.
//!
//! | module | job |
//! |---|---|
//! | [`connection`] | one intercepted connection: HTTP/1.x exchanges, the upgrade, its end; HTTP/2 handed to `h2` |
//! | `h2` | one HTTP/2 connection: streams as exchanges, RFC 8441 WebSockets, their rewriting; `h2::flow` keeps both peers' windows |
//! | `upgrade` | a WebSocket's open and close records, for both HTTP versions |
//! | `settings` | what every session of an agent shares |
//! | [`entry`] | an HTTP exchange as a traffic entry |
//! | [`body`] | request and response bodies, recorded as they pass |
//! | [`ws`] | one WebSocket connection: frame records, the rule gate, injection |
//! | [`rules`] | message rules compiled and matched, the agent's rule book |
//! | [`ending`] | how a connection ended |
//! | [`replay`] | a WebSocket client playing a recorded conversation again, its bytes then passing through a session like any connection's |
//!
//! Imports run one way: `connection` → `h2` → `upgrade` → `ws` → `rules`; everything → `frametap-model`
//! and `frametap-proto`.
pub mod body;
pub mod connection;
pub mod ending;
pub mod entry;
mod h2;
pub mod replay;
pub mod rules;
mod settings;
mod upgrade;
pub mod ws;

pub use connection::{SessionMeta, SessionState, Settings};
pub use ending::{Closer, Ending, FirstClose};
pub use frametap_proto::Peer;
pub use ws::{Forward, MaskKeys, Outbox};
