//! Records for other crates' tests (feature `testing`): one place that knows how
//! to fill every field, so a new field is added here and not in every test.
use crate::{FrameRecord, TrafficEntry, TrafficId};

/// A whole data frame of `sender` carrying `payload` (text unless `binary`), as a
/// peer sends it: masked from the client, uncompressed, with its wire length.
pub fn frame(traffic: TrafficId, seq: u64, from_client: bool, payload: &[u8]) -> FrameRecord {
    FrameRecord {
        traffic,
        seq,
        timestamp_ms: 1_700_000_000_000 + seq,
        from_client,
        opcode: 1,
        fin: true,
        rsv: 0,
        masked: from_client,
        compressed: false,
        wire_len: payload.len() as u64,
        payload_len: payload.len() as u64,
        truncated: false,
        payload: payload.to_vec(),
        close_code: None,
        close_reason: None,
        injected: false,
        dropped: false,
        binary_message: false,
        modified: false,
    }
}

/// The same as a binary frame.
pub fn binary_frame(
    traffic: TrafficId,
    seq: u64,
    from_client: bool,
    payload: &[u8],
) -> FrameRecord {
    FrameRecord {
        opcode: 2,
        binary_message: true,
        ..frame(traffic, seq, from_client, payload)
    }
}

/// A finished `GET https://chat.test/ws` WebSocket upgrade (101, `wss`).
pub fn websocket_entry(id: TrafficId) -> TrafficEntry {
    TrafficEntry {
        id,
        timestamp_ms: id.timestamp_ms(),
        conn_id: 1,
        method: "GET".into(),
        url: "wss://chat.test/ws".into(),
        protocol: "wss".into(),
        host: "chat.test".into(),
        path: "/ws".into(),
        status: Some(101),
        remote_address: "10.0.0.2:443".into(),
        client_address: "127.0.0.1:40000".into(),
        ..TrafficEntry::default()
    }
}
