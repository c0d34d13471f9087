//! A big store written straight into RocksDB (no agent, no network): WebSocket
//! connections of as many frames as asked, for the API's read benchmarks and the web
//! UI's test of a connection with a million frames.
use frametap_store::{FrameRecord, Record, Store, StoreOptions, TrafficEntry, TrafficId, WsOpen};

fn traffic_entry(id: TrafficId) -> TrafficEntry {
    TrafficEntry {
        id,
        timestamp_ms: id.timestamp_ms(),
        conn_id: id.counter() as u64,
        method: "GET".into(),
        url: format!("wss://bench.frametap.test/stream/{}", id.counter()),
        protocol: "wss".into(),
        host: "bench.frametap.test".into(),
        path: format!("/stream/{}", id.counter()),
        status: Some(101),
        request_headers: vec![("Upgrade".into(), "websocket".into())],
        response_headers: vec![("Upgrade".into(), "websocket".into())],
        remote_address: "10.77.0.2:443".into(),
        tls_version: Some("TLSv1.3".into()),
        duration_ms: Some(1.0),
        error: None,
        client_address: "10.77.0.1:40000".into(),
        pid: Some(1),
        process: Some("bench".into()),
        sni: Some("bench.frametap.test".into()),
        request_body: Some(Default::default()),
        response_body: Some(Default::default()),
        ..TrafficEntry::default()
    }
}

/// Writes `connections` WebSocket connections of `per_connection` frames each
/// (~100-byte text payloads, both directions) straight into a primary store.
pub fn fill_store(
    dir: &std::path::Path,
    connections: u64,
    per_connection: u64,
) -> anyhow::Result<Vec<TrafficId>> {
    let store = Store::open_primary(dir, StoreOptions::default())?;
    let base_ms = frametap_store::now_ms() - 3_600_000;
    let mut ids = Vec::new();
    const BATCH: u64 = 10_000;
    for c in 0..connections {
        let id = TrafficId::new(base_ms + c, c as u16);
        ids.push(id);
        let entry = traffic_entry(id);
        store.write(&[
            Record::WsOpen(WsOpen {
                traffic: id,
                timestamp_ms: id.timestamp_ms(),
                url: entry.url.clone(),
                client_address: entry.client_address.clone(),
                server_address: entry.remote_address.clone(),
                subprotocol: None,
                extensions: None,
                deflate: false,
            }),
            Record::Traffic(entry),
        ])?;
        let mut seq = 1;
        while seq <= per_connection {
            let end = (seq + BATCH).min(per_connection + 1);
            let batch: Vec<Record> = (seq..end)
                .map(|s| {
                    let payload = format!(
                        "{{\"seq\":{s},\"channel\":\"bench\",\"body\":\"{}\"}}",
                        "x".repeat(64)
                    )
                    .into_bytes();
                    Record::Frame(FrameRecord {
                        traffic: id,
                        seq: s,
                        timestamp_ms: id.timestamp_ms() + s / 100,
                        from_client: s % 2 == 1,
                        opcode: 1,
                        fin: true,
                        rsv: 0,
                        masked: s % 2 == 1,
                        compressed: false,
                        wire_len: payload.len() as u64,
                        payload_len: payload.len() as u64,
                        truncated: false,
                        payload,
                        close_code: None,
                        close_reason: None,
                        injected: false,
                        dropped: false,
                        binary_message: false,
                        modified: false,
                    })
                })
                .collect();
            store.write(&batch)?;
            seq = end;
        }
    }
    store.flush()?;
    Ok(ids)
}
