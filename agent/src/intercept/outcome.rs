//! What became of one connection the agent handled, for its log line.
use frametap_session::Ending;

/// What happened to a connection, for the one log line per connection.
pub struct Outcome {
    pub kind: &'static str,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub end: End,
    pub error: Option<String>,
    /// Logged as a warning: something failed that the user can fix (a TLS handshake).
    pub warn: bool,
    /// Why the connection was relayed untouched, when it was.
    pub not_intercepted: Option<String>,
}

/// How a connection handled by the agent ended, as its log line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Relayed (or intercepted) to the end: closed, reset, or half-open timeout.
    Connection(Ending),
    UpstreamConnectFailed,
    UpstreamTlsFailed,
    HandshakeTimeout,
    /// The client refused frametap's leaf: it does not trust the CA.
    ClientDistrustsCa,
    ClientTlsFailed,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Connection(ending) => ending.fmt(f),
            End::UpstreamConnectFailed => f.write_str("upstream connect failed"),
            End::UpstreamTlsFailed => f.write_str("upstream TLS failed"),
            End::HandshakeTimeout => f.write_str("handshake timeout"),
            End::ClientDistrustsCa => f.write_str("client does not trust the frametap CA"),
            End::ClientTlsFailed => f.write_str("client TLS failed"),
        }
    }
}
