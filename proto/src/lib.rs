//! Sans-IO protocol layers of frametap: bytes in, events out, no sockets, no
//! clocks. The agent's async glue feeds them what it reads and forwards the bytes
//! unchanged; these layers only tell it what the bytes mean. Each one can be unit
//! tested and fuzzed on its own (see `fuzz/`).
//!
//! * [`tls_hello`]: is this a TLS ClientHello, and which SNI and ALPN does it carry?
//! * [`h2`]: HTTP/2 frames and HPACK-decoded header blocks in both directions.
//! * [`http1`]: HTTP/1.1 message framing in both directions, pipelining, upgrades.
//! * [`ws`]: WebSocket frames (RFC 6455), permessage-deflate (RFC 7692), messages.
//! * [`Peer`]: which end of a connection, the one name for it across frametap.
pub mod h2;
pub mod http1;
mod peer;
pub mod tls_hello;
pub mod ws;

pub use peer::Peer;
