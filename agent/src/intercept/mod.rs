//! Interception of one redirected connection, once the upstream socket is open.
//!
//! 1. Sniff the client's first bytes (the upstream may speak first instead: then
//!    it is not HTTP and is relayed untouched).
//! 2. A TLS ClientHello: see [`https`]: intercept (mint a leaf for its SNI,
//!    terminate TLS on the client leg, open a verified TLS connection upstream with
//!    the same SNI, then 3), or relay untouched when interception would change what
//!    the application gets (passthrough list, a server that selects h2).
//! 3. HTTP/1.x and HTTP/2: relay bytes while [`SessionState`] (`frametap-session`)
//!    watches them and emits traffic entries and WebSocket frames, which are
//!    recorded before the bytes that complete them are forwarded. Bytes go out
//!    unchanged unless a rule changes a WebSocket message; injected messages are
//!    written between messages (over HTTP/2, between frames, within the windows).
//! 4. Anything else: relayed untouched ([`untouched`]), and listed as such.
pub mod alpn;
pub mod diagnose;
pub mod https;
pub mod outcome;
pub mod passthrough;
pub mod prefixed;
pub mod pump;
pub mod read_ahead;
pub mod untouched;

use std::{os::fd::AsRawFd as _, time::Duration};

use frametap_proto::tls_hello::{self, Sniff};
use tokio::net::TcpStream;
use tracing::debug;

pub use self::outcome::{End, Outcome};
pub use self::passthrough::Passthrough;
use self::{prefixed::Prefixed, untouched::Untouched};
use crate::context::{ConnectionInfo, ProxyContext};

/// A fresh masking key for a frame frametap sends toward a server (RFC 6455 5.3),
/// from the OS's random source.
pub fn random_mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    // A predictable key only weakens cache-poisoning defences of old proxies.
    if getrandom::fill(&mut key).is_err() {
        key = (std::process::id() ^ 0x5a5a_a5a5).to_be_bytes();
    }
    key
}

/// How long to wait for the client's first bytes before treating the connection
/// as something we don't interpret (it is relayed either way; nothing is lost).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(1);

enum First {
    Tls(tls_hello::ClientHello),
    Http,
    /// Not interpreted; why.
    Other(&'static str),
}

/// A method token and a space: what an HTTP/1.x request line starts with.
fn looks_like_http(prefix: &[u8]) -> Option<bool> {
    for (i, &b) in prefix.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'-' | b'_' if i < 24 => {}
            b' ' if i > 0 => return Some(true),
            // Tolerated before a request line (RFC 9112 2.2).
            b'\r' | b'\n' if i == 0 => return looks_like_http(&prefix[1..]),
            _ => return Some(false),
        }
    }
    None
}

fn classify(prefix: &[u8]) -> Option<First> {
    if prefix.first() == Some(&0x16) {
        return match tls_hello::sniff(prefix) {
            Sniff::NeedMore => None,
            Sniff::Hello(h) => Some(First::Tls(h)),
            Sniff::NotTls => Some(First::Other("neither TLS nor HTTP")),
            Sniff::Malformed(_) => Some(First::Other("malformed TLS ClientHello")),
        };
    }
    match looks_like_http(prefix)? {
        true => Some(First::Http),
        false => Some(First::Other("neither TLS nor HTTP")),
    }
}

/// Read the client's first bytes until they can be classified; when they can't (the
/// upstream spoke first, the client sent nothing in time, or closed), why.
async fn sniff(client: &TcpStream, upstream: &TcpStream, prefix: &mut Vec<u8>) -> First {
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut buf = [0u8; 4096];
    let closed = |prefix: &[u8]| {
        First::Other(if prefix.is_empty() {
            "the client closed before sending anything"
        } else {
            "the client closed before its first bytes could be classified"
        })
    };
    loop {
        tokio::select! {
            biased;
            r = client.readable() => {
                if r.is_err() {
                    return closed(prefix);
                }
                match client.try_read(&mut buf) {
                    Ok(0) => return closed(prefix),
                    Ok(n) => prefix.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return closed(prefix),
                }
                if let Some(first) = classify(prefix) {
                    return first;
                }
                if prefix.len() > tls_hello::MAX_CLIENT_HELLO {
                    return First::Other("first bytes too long to classify");
                }
            }
            _ = upstream.readable() => return First::Other("the server spoke first"),
            _ = tokio::time::sleep_until(deadline) => {
                return First::Other("the client sent nothing for a second");
            }
        }
    }
}

pub async fn handle(
    ctx: &ProxyContext,
    client: TcpStream,
    upstream: TcpStream,
    info: &ConnectionInfo,
) -> Outcome {
    let mut prefix = Vec::new();
    match sniff(&client, &upstream, &mut prefix).await {
        First::Tls(hello) => https::handle(ctx, client, upstream, prefix, hello, info).await,
        First::Http => {
            let meta = info.session_meta(false, None, None);
            let fds = (client.as_raw_fd(), upstream.as_raw_fd());
            pump::session(
                ctx,
                Prefixed::new(prefix, client),
                upstream,
                fds,
                meta,
                "http",
            )
            .await
        }
        First::Other(why) => {
            debug!(conn = info.id, why, "relaying untouched");
            untouched::relay(ctx, client, upstream, prefix, info, Untouched::tcp(why)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_detection() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(looks_like_http(b"\r\nPOST /x"), Some(true));
        assert_eq!(looks_like_http(b"GE"), None);
        assert_eq!(looks_like_http(b"SSH-2.0-OpenSSH"), Some(false));
        assert_eq!(looks_like_http(b"\x00\x01"), Some(false));
        assert_eq!(looks_like_http(b" GET"), Some(false));
    }
}
