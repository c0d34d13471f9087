//! How a connection ended, who closed a WebSocket, and the words records use for them.
use frametap_proto::Peer;

/// How the connection ended, for the records of what was still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Both sides closed in order.
    Closed,
    /// One side reset (or failed); the other was reset in turn.
    Reset(Peer),
    /// The other side closed its half and this one sent nothing for the
    /// half-open timeout; frametap closed the connection.
    HalfOpen(Peer),
}

impl std::fmt::Display for Ending {
    /// As logs and tunnel records write it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Closed => f.write_str("closed"),
            Ending::Reset(peer) => write!(f, "{} reset", peer.name()),
            Ending::HalfOpen(_) => f.write_str("half-open timeout"),
        }
    }
}

pub(crate) fn half_open_why(silent: Peer) -> String {
    let other = silent.other();
    format!(
        "the {} closed its side and the {} sent nothing more within the half-open \
         timeout (--half-open-timeout), so frametap closed the connection",
        other.name(),
        silent.name()
    )
}

/// Who sent a WebSocket connection's first close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    Peer(Peer),
    /// A close rule (or a message frametap could not re-encode).
    Frametap,
}

impl Closer {
    /// As `closedBy` writes it: `client`, `server` or `frametap`.
    pub fn name(self) -> &'static str {
        match self {
            Closer::Peer(peer) => peer.name(),
            Closer::Frametap => "frametap",
        }
    }
}

/// The first close frame of a WebSocket connection: who, code, reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirstClose {
    pub by: Closer,
    pub code: Option<u16>,
    pub reason: Option<String>,
}
