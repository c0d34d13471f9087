//! Which application protocol (ALPN) a server will pick, decided before the client's
//! TLS leg is committed: frametap intercepts HTTP/1.1 and HTTP/2 inside TLS, and the
//! client leg must answer with the protocol the server chose, or the application
//! breaks. Anything else is relayed untouched.
//!
//! A client that offers only `http/1.1` (or no ALPN) is intercepted with both
//! handshakes at once. A client that offers more (`h2, http/1.1`, or `h2` alone) makes
//! the agent ask the server first, with the client's whole list ([`Plan::Probe`]),
//! and the client leg then answers what the server chose. The choice is remembered
//! per destination (server name, address and offered list) for [`CACHE_TTL`], so
//! later connections to a known HTTP/1.1 server take the concurrent path again and
//! servers known to pick another protocol are relayed at once; a server known to
//! pick h2 is asked each time, as the client leg can only offer h2 once it did.
//! No I/O here: the caller passes the time in.
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

pub const HTTP11: &[u8] = b"http/1.1";
pub const H2: &[u8] = b"h2";
/// Destinations remembered (oldest forgotten first).
pub const CACHE_CAPACITY: usize = 1024;
/// How long a server's choice is trusted before it is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(600);

/// A server as the client addressed it, with what the client offered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    pub sni: Option<String>,
    pub addr: SocketAddr,
    pub offered: Vec<Vec<u8>>,
}

/// How to handle a TLS connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Both handshakes at once; upstream offers `http/1.1` when the client offered
    /// ALPN. `cached`: chosen because the server picked HTTP/1.1 before.
    Concurrent { cached: bool },
    /// Handshake upstream first, offering the client's whole list, then decide.
    Probe,
    /// Relay untouched: the server picked this protocol for the same offer before.
    Relay { selected: Vec<u8> },
    /// Relay untouched: the client offers neither `http/1.1` nor `h2`.
    UnknownProtocols,
}

/// Whether frametap can intercept a connection on which the server selected this
/// protocol (`None`: no ALPN, which means HTTP/1.1 for an HTTPS server).
pub fn interceptable(selected: Option<&[u8]>) -> bool {
    selected.is_none_or(|p| p == HTTP11 || p == H2)
}

/// The plan for a client offering `offered`, given what the cache knows about its
/// destination (`Some(selected)` when known and fresh).
pub fn plan(offered: &[Vec<u8>], known: Option<Option<&[u8]>>) -> Plan {
    if offered.is_empty() || offered.iter().all(|p| p == HTTP11) {
        return Plan::Concurrent { cached: false };
    }
    let offers_http11 = offered.iter().any(|p| p == HTTP11);
    if !offers_http11 && !offered.iter().any(|p| p == H2) {
        return Plan::UnknownProtocols;
    }
    match known {
        Some(selected) if offers_http11 && selected.is_none_or(|p| p == HTTP11) => {
            Plan::Concurrent { cached: true }
        }
        Some(Some(selected)) if !interceptable(Some(selected)) => Plan::Relay {
            selected: selected.to_vec(),
        },
        _ => Plan::Probe,
    }
}

/// A protocol id as text (`h2`), for records and messages.
pub fn name(protocol: &[u8]) -> String {
    String::from_utf8_lossy(protocol).into_owned()
}

/// A list of protocol ids as text.
pub fn names(protocols: &[Vec<u8>]) -> Vec<String> {
    protocols.iter().map(|p| name(p)).collect()
}

struct Known {
    selected: Option<Vec<u8>>,
    learned: Instant,
}

/// What each destination's server selected, bounded and shared by all connections.
#[derive(Default)]
pub struct AlpnCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<Destination, Known>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<Destination>,
}

impl AlpnCache {
    /// What the server selected for this offer, if learned within [`CACHE_TTL`].
    pub fn get(&self, destination: &Destination, now: Instant) -> Option<Option<Vec<u8>>> {
        let inner = self.lock();
        let known = inner.map.get(destination)?;
        (now.saturating_duration_since(known.learned) < CACHE_TTL).then(|| known.selected.clone())
    }

    /// Remember what the server selected.
    pub fn put(&self, destination: Destination, selected: Option<Vec<u8>>, now: Instant) {
        let mut inner = self.lock();
        let known = Known {
            selected,
            learned: now,
        };
        if let Some(slot) = inner.map.get_mut(&destination) {
            *slot = known;
            return;
        }
        inner.order.push_back(destination.clone());
        inner.map.insert(destination, known);
        while inner.map.len() > CACHE_CAPACITY {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.map.remove(&oldest);
        }
    }

    /// Forget a destination whose server no longer behaves as remembered.
    pub fn forget(&self, destination: &Destination) {
        let mut inner = self.lock();
        if inner.map.remove(destination).is_some() {
            inner.order.retain(|d| d != destination);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    fn destination(n: u16) -> Destination {
        Destination {
            sni: Some("api.test".into()),
            addr: SocketAddr::from(([10, 0, 0, 1], n)),
            offered: list(&["h2", "http/1.1"]),
        }
    }

    #[test]
    fn plans_follow_the_offer_and_what_is_known() {
        let both = list(&["h2", "http/1.1"]);
        assert_eq!(plan(&[], None), Plan::Concurrent { cached: false });
        assert_eq!(
            plan(&list(&["http/1.1"]), None),
            Plan::Concurrent { cached: false }
        );
        // h2 is intercepted: the server is asked first, whatever is known of it.
        assert_eq!(plan(&list(&["h2"]), None), Plan::Probe);
        assert_eq!(plan(&list(&["h2"]), Some(Some(b"h2"))), Plan::Probe);
        assert_eq!(plan(&list(&["h2"]), Some(None)), Plan::Probe);
        assert_eq!(
            plan(&list(&["spdy/3", "acme"]), None),
            Plan::UnknownProtocols
        );
        assert_eq!(plan(&both, None), Plan::Probe);
        assert_eq!(
            plan(&both, Some(Some(b"http/1.1"))),
            Plan::Concurrent { cached: true }
        );
        assert_eq!(plan(&both, Some(None)), Plan::Concurrent { cached: true });
        assert_eq!(plan(&both, Some(Some(b"h2"))), Plan::Probe);
        let with_other = list(&["grpc-exp", "h2", "http/1.1"]);
        assert_eq!(
            plan(&with_other, Some(Some(b"grpc-exp"))),
            Plan::Relay {
                selected: b"grpc-exp".to_vec()
            }
        );
        assert!(interceptable(None) && interceptable(Some(b"http/1.1")));
        assert!(interceptable(Some(b"h2")));
        assert!(!interceptable(Some(b"grpc-exp")));
    }

    #[test]
    fn cache_expires_forgets_and_stays_bounded() {
        let cache = AlpnCache::default();
        let t0 = Instant::now();
        let d = destination(443);
        assert_eq!(cache.get(&d, t0), None);
        cache.put(d.clone(), Some(b"h2".to_vec()), t0);
        assert_eq!(cache.get(&d, t0), Some(Some(b"h2".to_vec())));
        // Another offer to the same server is another question.
        let mut other_offer = d.clone();
        other_offer.offered = list(&["h2", "http/1.1", "h3"]);
        assert_eq!(cache.get(&other_offer, t0), None);
        assert_eq!(cache.get(&d, t0 + CACHE_TTL), None, "stale: ask again");
        cache.put(d.clone(), None, t0 + CACHE_TTL);
        assert_eq!(cache.get(&d, t0 + CACHE_TTL), Some(None));
        cache.forget(&d);
        assert_eq!(cache.get(&d, t0), None);

        for n in 0..(CACHE_CAPACITY as u16 + 10) {
            cache.put(destination(n), None, t0);
        }
        let inner = cache.lock();
        assert_eq!(inner.map.len(), CACHE_CAPACITY);
        assert_eq!(inner.order.len(), CACHE_CAPACITY);
        assert!(!inner.map.contains_key(&destination(0)), "oldest forgotten");
        assert!(
            inner
                .map
                .contains_key(&destination(CACHE_CAPACITY as u16 + 9))
        );
    }
}
