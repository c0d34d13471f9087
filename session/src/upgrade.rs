//! A WebSocket's life as a connection's records: its opening (traffic entry, open
//! record, a [`WsSession`] set up from what the handshake negotiated) and its close
//! record. Shared by HTTP/1.1 upgrades and WebSockets over HTTP/2 (RFC 8441).
use frametap_model::{Record, TrafficEntry, WsClose, WsOpen};
use frametap_proto::{Peer, ws};

use crate::ending::{Ending, half_open_why};
use crate::entry::SessionMeta;
use crate::rules::ConnectionFacts;
use crate::settings::Settings;
use crate::ws::{WsSession, WsSetup};

/// What the server's handshake answer said.
pub(crate) struct Negotiated {
    /// `Sec-WebSocket-Extensions` of the answer.
    pub extensions: Option<String>,
    /// `Sec-WebSocket-Protocol` of the answer.
    pub subprotocol: Option<String>,
}

/// Records the opening (`entry`, then its open record: live subscribers get the
/// entry first) and returns the session that reads the frames.
pub(crate) fn open(
    settings: &Settings,
    meta: &SessionMeta,
    entry: TrafficEntry,
    negotiated: Negotiated,
    now_ms: u64,
    records: &mut Vec<Record>,
) -> Box<WsSession> {
    let Negotiated {
        extensions,
        subprotocol,
    } = negotiated;
    let (negotiated, error) = match extensions.as_deref().map(ws::negotiate_extensions) {
        None => (ws::NegotiatedExtensions::default(), None),
        Some(Ok(n)) => (n, None),
        Some(Err(e)) => (
            ws::NegotiatedExtensions::default(),
            Some(format!("unusable Sec-WebSocket-Extensions: {e}")),
        ),
    };
    // RSV bits of extensions we don't know are theirs to use, not errors.
    let foreign = !negotiated.others.is_empty() || error.is_some();
    let deflate = negotiated.deflate;
    records.push(Record::Traffic(entry.clone()));
    records.push(Record::WsOpen(WsOpen {
        traffic: entry.id,
        timestamp_ms: now_ms,
        url: entry.url.clone(),
        client_address: meta.client_address.clone(),
        server_address: meta.server_address.clone(),
        subprotocol,
        extensions,
        deflate: deflate.is_some(),
    }));
    let conn = ConnectionFacts {
        host: entry.host.clone(),
        path: entry.path.clone(),
    };
    Box::new(WsSession::new(WsSetup {
        traffic: entry.id,
        conn,
        deflate,
        foreign_extensions: foreign,
        error,
        payload_cap: settings.payload_cap,
        rules: settings.rules.clone(),
        mask_keys: settings.mask_keys,
    }))
}

/// The WebSocket is over (`ending` says how its transport ended): what never went
/// out is recorded as dropped, then the close record with the counts.
pub(crate) fn close(ws: &mut WsSession, ending: &Ending, now_ms: u64, records: &mut Vec<Record>) {
    // Before the counts: what never went out is recorded as dropped.
    ws.finish(records);
    let abnormal = match ending {
        Ending::Reset(side) => Some(format!("{} reset", side.name())),
        Ending::Closed if ws.mid_message() => {
            Some("closed in the middle of a frame or message".into())
        }
        Ending::Closed if ws.first_close().is_none() => Some("closed without a close frame".into()),
        Ending::Closed => ws.error().cloned(),
        Ending::HalfOpen(side) if ws.mid_message() || ws.first_close().is_none() => {
            Some(half_open_why(*side))
        }
        Ending::HalfOpen(_) => ws.error().cloned(),
    };
    let (closed_by, close_code, close_reason) = match ws.first_close() {
        Some(first) => (
            Some(first.by.name().to_string()),
            first.code,
            first.reason.clone(),
        ),
        None => (None, None, None),
    };
    let (frames_from_client, bytes_from_client) = ws.counts(Peer::Client);
    let (frames_from_server, bytes_from_server) = ws.counts(Peer::Server);
    records.push(Record::WsClose(WsClose {
        traffic: ws.traffic(),
        timestamp_ms: now_ms,
        closed_by,
        close_code,
        close_reason,
        frames_from_client,
        frames_from_server,
        bytes_from_client,
        bytes_from_server,
        abnormal,
        frames_from_frametap: Some(ws.frametap_frames()),
    }));
}
