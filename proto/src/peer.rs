//! [`Peer`]: which end of a connection. One name for it everywhere: the sender of a
//! frame, the side that reset, the receiver of an injected message.

/// The client (who connected) or the server (who was connected to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Client,
    Server,
}

impl Peer {
    /// Both peers, client first (the order of per-peer arrays).
    pub const BOTH: [Peer; 2] = [Peer::Client, Peer::Server];

    /// `"client"` or `"server"`, as messages and records write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }

    /// The other end.
    pub fn other(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }

    /// 0 for the client, 1 for the server: an index into per-peer arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The peer that sent a frame recorded with `from_client`.
    pub fn from_client(from_client: bool) -> Self {
        if from_client {
            Self::Client
        } else {
            Self::Server
        }
    }
}
