//! What every fuzz target that turns bytes into records checks of the records.
use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use frametap_model::{Record, TrafficEntry, TrafficIds};
use frametap_proto::Peer;
use frametap_session::rules::RuleBook;
use frametap_session::{Ending, Settings};

/// How a connection ends, picked by the top two bits of `choice`.
pub fn ending(choice: u8) -> Ending {
    match choice / 64 {
        0 => Ending::Closed,
        1 => Ending::Reset(Peer::Client),
        2 => Ending::Reset(Peer::Server),
        _ => Ending::HalfOpen(Peer::Client),
    }
}

/// Session settings with small caps (so that fuzzing reaches them) and no rules.
pub fn settings(body_cap: u64) -> Settings {
    Settings {
        ids: Arc::new(TrafficIds::default()),
        payload_cap: 256,
        body_cap,
        rules: Arc::new(RuleBook::default()),
        mask_keys: || [1, 2, 3, 4],
    }
}

/// Checks `records`, a whole connection's in order: every entry has its own id and a
/// sane duration, an entry with a method has a URL, bodies stay within `body_cap`
/// (stored and in chunks), a WebSocket's open record follows its entry (one for
/// which `is_websocket` holds) once, frames follow the open, the close comes once,
/// and every WebSocket opened is closed by the end.
pub fn check_records(
    records: &[Record],
    body_cap: u64,
    is_websocket: impl Fn(&TrafficEntry) -> bool,
) {
    let mut ids = HashSet::new();
    let mut websockets = HashSet::new();
    let mut opened = HashSet::new();
    let mut closed = HashSet::new();
    let mut body_bytes = HashMap::new();
    for record in records {
        match record {
            Record::Traffic(t) => {
                assert!(ids.insert(t.id), "two entries with id {}", t.id);
                assert!(t.duration_ms.is_none_or(|d| d >= 0.0));
                if !t.method.is_empty() {
                    assert!(t.url.contains("://"), "url {:?}", t.url);
                }
                for info in [&t.request_body, &t.response_body].into_iter().flatten() {
                    assert!(
                        info.stored <= info.size,
                        "stored {} of {}",
                        info.stored,
                        info.size
                    );
                    assert!(
                        info.stored <= body_cap,
                        "stored {} over the cap",
                        info.stored
                    );
                }
                if is_websocket(t) {
                    websockets.insert(t.id);
                }
            }
            Record::Body(chunk) => {
                let total = body_bytes.entry((chunk.traffic, chunk.of)).or_insert(0u64);
                *total += chunk.data.len() as u64;
                assert!(*total <= body_cap, "body chunks over the cap");
            }
            Record::WsOpen(open) => {
                assert!(websockets.contains(&open.traffic), "open before its entry");
                assert!(opened.insert(open.traffic), "opened twice");
            }
            Record::WsClose(close) => {
                assert!(opened.contains(&close.traffic), "closed before it opened");
                assert!(closed.insert(close.traffic), "closed twice");
            }
            Record::Frame(f) => assert!(opened.contains(&f.traffic), "a frame before its open"),
            Record::TunnelEnd(_) => {}
        }
    }
    assert_eq!(
        opened, closed,
        "every opened WebSocket is closed at the end"
    );
}
