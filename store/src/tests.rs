//! Tests against real RocksDB databases in temporary directories.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use crate::*;

const T0: u64 = 1_750_000_000_000;

/// Minimal executor for the async API (the crate only depends on tokio's "sync").
fn block_on<F: Future>(f: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn primary(dir: &Path) -> Store {
    Store::open_primary(dir, StoreOptions::default()).unwrap()
}

fn frame(traffic: TrafficId, seq: u64, ts: u64) -> FrameRecord {
    let from_client = seq % 2 == 1;
    let payload = format!("frame {seq} of {traffic}").into_bytes();
    let frame = if seq.is_multiple_of(5) {
        frametap_model::testing::binary_frame
    } else {
        frametap_model::testing::frame
    };
    FrameRecord {
        timestamp_ms: ts,
        wire_len: payload.len() as u64 + if from_client { 6 } else { 2 },
        ..frame(traffic, seq, from_client, &payload)
    }
}

fn frames(traffic: TrafficId, seqs: std::ops::RangeInclusive<u64>, ts: u64) -> Vec<Record> {
    seqs.map(|s| Record::Frame(frame(traffic, s, ts + s)))
        .collect()
}

fn entry(id: TrafficId, url: &str, status: Option<u16>) -> TrafficEntry {
    TrafficEntry {
        id,
        timestamp_ms: id.timestamp_ms(),
        conn_id: 7,
        method: "GET".into(),
        url: url.into(),
        protocol: if url.starts_with("wss") {
            "wss"
        } else {
            "https"
        }
        .into(),
        host: "example.com".into(),
        path: "/".into(),
        status,
        request_headers: vec![("host".into(), "example.com".into())],
        response_headers: vec![("content-type".into(), "text/html".into())],
        remote_address: "93.184.216.34:443".into(),
        tls_version: Some("TLSv1.3".into()),
        duration_ms: Some(12.5),
        error: None,
        client_address: "10.0.0.2:51234".into(),
        pid: Some(1234),
        process: Some("curl".into()),
        sni: Some("example.com".into()),
        request_body: Some(BodyInfo::default()),
        response_body: Some(BodyInfo {
            size: 11,
            stored: 11,
        }),
        ..TrafficEntry::default()
    }
}

fn body_chunk(traffic: TrafficId, of: BodyOf, seq: u32, data: &[u8]) -> Record {
    Record::Body(BodyChunk {
        traffic,
        of,
        seq,
        data: data.to_vec(),
    })
}

fn ws_open(traffic: TrafficId, ts: u64) -> WsOpen {
    WsOpen {
        traffic,
        timestamp_ms: ts,
        url: "wss://example.com/socket".into(),
        client_address: "10.0.0.2:51234".into(),
        server_address: "93.184.216.34:443".into(),
        subprotocol: Some("chat".into()),
        extensions: Some("permessage-deflate".into()),
        deflate: true,
    }
}

fn ws_close(traffic: TrafficId, ts: u64) -> WsClose {
    WsClose {
        traffic,
        timestamp_ms: ts,
        closed_by: Some("client".into()),
        close_code: Some(1000),
        close_reason: Some("bye".into()),
        frames_from_client: 3,
        frames_from_server: 4,
        bytes_from_client: 30,
        bytes_from_server: 40,
        abnormal: None,
        frames_from_frametap: Some(1),
    }
}

fn seqs(v: &[FrameRecord]) -> Vec<u64> {
    v.iter().map(|f| f.seq).collect()
}

fn all_frames(store: &Store, t: TrafficId) -> Vec<FrameRecord> {
    store
        .frames(t, None, usize::MAX, &FrameFilter::default())
        .unwrap()
}

#[test]
fn frames_paging_and_filters() {
    let dir = tmp();
    let store = primary(dir.path());
    let a = TrafficId::new(T0, 1);
    let b = TrafficId::new(T0, 2);
    // Neighbouring connections must not leak into a's pages.
    store.write(&frames(b, 1..=5, T0)).unwrap();
    store.write(&frames(a, 1..=30, T0)).unwrap();
    let before = TrafficId::new(T0 - 1, 0xffff);
    store.write(&frames(before, 1..=3, T0)).unwrap();

    let all = FrameFilter::default();
    assert_eq!(
        seqs(&store.frames(a, None, 10, &all).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&store.frames(a, Some(10), 10, &all).unwrap()),
        (11..=20).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&store.frames(a, Some(25), 10, &all).unwrap()),
        (26..=30).collect::<Vec<_>>()
    );
    assert!(store.frames(a, Some(30), 10, &all).unwrap().is_empty());
    assert!(
        store
            .frames(a, Some(u64::MAX), 10, &all)
            .unwrap()
            .is_empty()
    );
    assert!(store.frames(a, None, 0, &all).unwrap().is_empty());
    assert_eq!(all_frames(&store, a).len(), 30);
    assert_eq!(all_frames(&store, b).len(), 5);
    assert_eq!(all_frames(&store, before).len(), 3);
    assert!(all_frames(&store, TrafficId::new(T0, 3)).is_empty());

    // Round trip through the store.
    let got = store.frame(&FrameId::new(a, 7)).unwrap().unwrap();
    assert_eq!(got, frame(a, 7, T0 + 7));
    assert_eq!(got.id().to_string(), format!("{a}-00000007"));
    assert!(store.frame(&FrameId::new(a, 31)).unwrap().is_none());

    let client = FrameFilter {
        from_client: Some(true),
        opcode: None,
    };
    let page = store.frames(a, None, 5, &client).unwrap();
    assert_eq!(seqs(&page), vec![1, 3, 5, 7, 9]);
    let page = store.frames(a, Some(9), 5, &client).unwrap();
    assert_eq!(seqs(&page), vec![11, 13, 15, 17, 19]);

    let binary = FrameFilter {
        from_client: None,
        opcode: Some(2),
    };
    assert_eq!(
        seqs(&store.frames(a, None, 100, &binary).unwrap()),
        vec![5, 10, 15, 20, 25, 30]
    );
    let server_binary = FrameFilter {
        from_client: Some(false),
        opcode: Some(2),
    };
    assert_eq!(
        seqs(&store.frames(a, Some(10), 2, &server_binary).unwrap()),
        vec![20, 30]
    );

    // Edge traffic ids: the very last possible id has no prefix successor.
    let max = TrafficId(u64::MAX);
    store.write(&frames(max, 1..=3, T0)).unwrap();
    assert_eq!(seqs(&all_frames(&store, max)), vec![1, 2, 3]);
    assert_eq!(store.frame_count(max).unwrap(), 3);
    assert_eq!(store.delete_frames(max).unwrap(), 3);
    assert_eq!(store.frame_count(max).unwrap(), 0);
}

#[test]
fn frame_count_and_deletion() {
    let dir = tmp();
    let store = primary(dir.path());
    let t = TrafficId::new(T0, 9);
    let other = TrafficId::new(T0, 10);
    assert_eq!(store.frame_count(t).unwrap(), 0);
    assert_eq!(store.delete_frames(t).unwrap(), 0);

    store.write(&frames(t, 1..=50, T0)).unwrap();
    store.write(&frames(other, 1..=7, T0)).unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 50);
    assert_eq!(store.frame_count(other).unwrap(), 7);

    assert_eq!(
        store.frame_totals(t).unwrap(),
        FrameTotals {
            recorded: 50,
            deleted: 0,
            stored: 50
        }
    );

    assert_eq!(store.delete_frames(t).unwrap(), 50);
    assert_eq!(store.frame_count(t).unwrap(), 0);
    // Deleted, but still counted as recorded.
    assert_eq!(
        store.frame_totals(t).unwrap(),
        FrameTotals {
            recorded: 50,
            deleted: 50,
            stored: 0
        }
    );
    assert!(store.frame(&FrameId::new(t, 1)).unwrap().is_none());
    assert!(store.frame(&FrameId::new(t, 50)).unwrap().is_none());
    assert!(all_frames(&store, t).is_empty());
    // Nothing new to delete.
    assert_eq!(store.delete_frames(t).unwrap(), 0);
    // Other connections untouched.
    assert_eq!(store.frame_count(other).unwrap(), 7);
    assert_eq!(all_frames(&store, other).len(), 7);

    // The connection keeps recording: only the new frames count.
    store.write(&frames(t, 51..=60, T0)).unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 10);
    assert_eq!(
        store.frame_totals(t).unwrap(),
        FrameTotals {
            recorded: 60,
            deleted: 50,
            stored: 10
        }
    );
    assert_eq!(seqs(&all_frames(&store, t)), (51..=60).collect::<Vec<_>>());
    assert_eq!(
        seqs(
            &store
                .frames(t, Some(55), 3, &FrameFilter::default())
                .unwrap()
        ),
        vec![56, 57, 58]
    );
    assert!(store.frame(&FrameId::new(t, 50)).unwrap().is_none());
    assert!(store.frame(&FrameId::new(t, 51)).unwrap().is_some());

    // Survives a flush to SST files too.
    store.flush().unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 10);
    assert_eq!(store.delete_frames(t).unwrap(), 10);
    store.write(&frames(t, 61..=61, T0)).unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 1);
    assert_eq!(seqs(&all_frames(&store, t)), vec![61]);

    // And a reopen.
    drop(store);
    let store = primary(dir.path());
    assert_eq!(store.frame_count(t).unwrap(), 1);
    assert_eq!(store.frame_count(other).unwrap(), 7);
}

#[test]
fn traffic_and_ws_reads() {
    let dir = tmp();
    let store = primary(dir.path());
    let mut records = Vec::new();
    for i in 0..20u16 {
        let id = TrafficId::new(T0 + u64::from(i) * 10, i);
        let status = if i % 4 == 0 { None } else { Some(200 + i) };
        records.push(Record::Traffic(entry(
            id,
            &format!("https://example.com/{i}"),
            status,
        )));
    }
    store.write(&records).unwrap();
    let id3 = TrafficId::new(T0 + 30, 3);
    assert_eq!(
        store.traffic(id3).unwrap().unwrap(),
        entry(id3, "https://example.com/3", Some(203))
    );
    assert!(store.traffic(TrafficId::new(T0, 99)).unwrap().is_none());

    let (page, total) = store.traffic_page(0, 5, |_| true).unwrap();
    assert_eq!(total, 20);
    let counters: Vec<u16> = page.iter().map(|e| e.id.counter()).collect();
    assert_eq!(counters, vec![19, 18, 17, 16, 15]);
    let (page, total) = store.traffic_page(18, 5, |_| true).unwrap();
    assert_eq!(total, 20);
    assert_eq!(
        page.iter().map(|e| e.id.counter()).collect::<Vec<_>>(),
        vec![1, 0]
    );
    let (page, total) = store.traffic_page(1, 2, |e| e.status.is_none()).unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|e| e.id.counter()).collect::<Vec<_>>(),
        vec![12, 8]
    );
    let (page, total) = store.traffic_page(100, 2, |_| true).unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 20);

    let ws = TrafficId::new(T0 + 500, 0);
    assert!(store.ws_connection(ws).unwrap().is_none());
    store
        .write(&[Record::WsOpen(ws_open(ws, T0 + 501))])
        .unwrap();
    let c = store.ws_connection(ws).unwrap().unwrap();
    assert!(c.open);
    assert_eq!(c.url, "wss://example.com/socket");
    assert_eq!(c.subprotocol.as_deref(), Some("chat"));
    assert_eq!(c.end_timestamp_ms, None);
    assert_eq!(c.frames_from_client, 0);
    store
        .write(&[Record::WsClose(ws_close(ws, T0 + 900))])
        .unwrap();
    let c = store.ws_connection(ws).unwrap().unwrap();
    assert!(!c.open);
    assert_eq!(c.timestamp_ms, T0 + 501);
    assert_eq!(c.end_timestamp_ms, Some(T0 + 900));
    assert_eq!(c.closed_by.as_deref(), Some("client"));
    assert_eq!(c.close_code, Some(1000));
    assert_eq!(c.frames_from_server, 4);
    assert_eq!(c.bytes_from_client, 30);
    // JSON of the read model keeps ids as strings.
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["traffic"], ws.to_string());
}

#[test]
fn tunnels_are_listed_while_open_and_completed_by_their_end() {
    let dir = tmp();
    let pdir = dir.path().join("primary");
    let store = primary(&pdir);
    let sec = Store::open_secondary(&pdir, &dir.path().join("secondary")).unwrap();
    let id = TrafficId::new(T0, 1);
    let start = TrafficEntry {
        id,
        timestamp_ms: T0,
        protocol: "tls".into(),
        url: "tls://h2.example.com:443".into(),
        host: "h2.example.com".into(),
        sni: Some("h2.example.com".into()),
        not_intercepted: Some("server selected h2".into()),
        alpn_offered: vec!["h2".into(), "http/1.1".into()],
        alpn_selected: Some("h2".into()),
        ..TrafficEntry::default()
    };
    store.write(&[Record::Traffic(start.clone())]).unwrap();
    sec.catch_up().unwrap();
    let open = sec.traffic(id).unwrap().unwrap();
    assert_eq!(open, start, "listed while open, without counts");
    assert_eq!(open.bytes_from_client, None);

    let end = TunnelEnd {
        traffic: id,
        timestamp_ms: T0 + 2500,
        duration_ms: 2500.0,
        bytes_from_client: 517,
        bytes_from_server: 9000,
        end: "closed".into(),
        error: None,
    };
    store.write(&[Record::TunnelEnd(end.clone())]).unwrap();
    // Also through a flush: the entry's key was never rewritten.
    store.flush().unwrap();
    sec.catch_up().unwrap();
    for read in [
        sec.traffic(id).unwrap().unwrap(),
        sec.traffic_page(0, 10, |_| true).unwrap().0.remove(0),
    ] {
        assert_eq!(read.bytes_from_client, Some(517));
        assert_eq!(read.bytes_from_server, Some(9000));
        assert_eq!(read.duration_ms, Some(2500.0));
        assert_eq!(read.not_intercepted.as_deref(), Some("server selected h2"));
    }
    assert_eq!(sec.tunnel_end(id).unwrap(), Some(end));
    // A WebSocket reader never mistakes the tunnel's end for a connection.
    assert!(sec.ws_connection(id).unwrap().is_none());
}

#[test]
fn traffic_entries_of_the_previous_version_still_decode() {
    let dir = tmp();
    let store = primary(dir.path());
    let id = TrafficId::new(T0, 3);
    // An entry as the previous agent wrote it: none of the fields added since.
    let old = serde_json::json!({
        "id": id, "timestamp_ms": T0, "conn_id": 1, "method": "GET",
        "url": "https://example.com/", "protocol": "https", "host": "example.com",
        "path": "/", "status": 200, "request_headers": [["host", "example.com"]],
        "response_headers": [], "remote_address": "93.184.216.34:443",
        "tls_version": "TLSv1.3", "duration_ms": 3.5, "error": null,
        "client_address": "10.0.0.2:5000", "pid": 9, "process": "curl",
        "sni": "example.com"
    });
    let db = store.db().unwrap();
    db.put_cf(
        crate::store::cf(&db, CF_TRAFFIC).unwrap(),
        codec::traffic_key(id),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    let read = store.traffic(id).unwrap().unwrap();
    assert_eq!(read.status, Some(200));
    assert_eq!(read.not_intercepted, None);
    assert!(read.alpn_offered.is_empty());
    // And an entry written now omits the new fields when they are empty.
    let json = serde_json::to_value(&read).unwrap();
    assert!(json.get("not_intercepted").is_none() && json.get("alpn_offered").is_none());
}

#[test]
fn open_errors_are_actionable() {
    let dir = tmp();
    let store = primary(dir.path());
    let err = Store::open_primary(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("locked by another frametap-agent"),
        "{err:#}"
    );
    drop(store);
    // Reopens fine once the first one is gone.
    primary(dir.path());

    let missing = dir.path().join("nope");
    let err = Store::open_secondary(&missing, &dir.path().join("sec")).unwrap_err();
    assert!(
        format!("{err:#}").contains("start frametap-agent first"),
        "{err:#}"
    );

    // A file where the data dir should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open_primary(&file.join("db"), StoreOptions::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot create data dir"),
        "{err:#}"
    );
}

#[test]
fn secondary_sees_writer_frames_and_deletions() {
    let dir = tmp();
    let pdir = dir.path().join("primary");
    let sdir = dir.path().join("secondary");
    let store = primary(&pdir);
    assert!(!store.is_secondary());
    let writer = Writer::spawn(store.clone(), 64);
    let t = TrafficId::new(T0, 1);
    let mut first = vec![Record::Traffic(entry(
        t,
        "wss://example.com/socket",
        Some(101),
    ))];
    first.push(Record::WsOpen(ws_open(t, T0)));
    first.extend(frames(t, 1..=100, T0));
    block_on(writer.submit(first)).unwrap();

    let sec = Store::open_secondary(&pdir, &sdir).unwrap();
    assert!(sec.is_secondary());
    sec.catch_up().unwrap();
    assert_eq!(sec.frame_count(t).unwrap(), 100);
    assert_eq!(all_frames(&sec, t).len(), 100);
    assert!(sec.ws_connection(t).unwrap().unwrap().open);
    assert_eq!(sec.traffic(t).unwrap().unwrap().status, Some(101));

    // More writes, partly after a flush (SST path), partly in the memtable.
    block_on(writer.submit(frames(t, 101..=150, T0))).unwrap();
    store.flush().unwrap();
    block_on(writer.submit(frames(t, 151..=200, T0))).unwrap();
    assert_eq!(sec.frame_count(t).unwrap(), 100, "not caught up yet");
    sec.catch_up().unwrap();
    assert_eq!(sec.frame_count(t).unwrap(), 200);
    assert_eq!(
        sec.frame(&FrameId::new(t, 200)).unwrap().unwrap(),
        frame(t, 200, T0 + 200)
    );

    // A deletion becomes visible on the secondary, then new frames after it.
    assert_eq!(store.delete_frames(t).unwrap(), 200);
    sec.catch_up().unwrap();
    assert_eq!(sec.frame_count(t).unwrap(), 0);
    assert!(sec.frame(&FrameId::new(t, 1)).unwrap().is_none());
    assert!(all_frames(&sec, t).is_empty());
    block_on(writer.submit(frames(t, 201..=205, T0))).unwrap();
    let close = vec![Record::WsClose(ws_close(t, T0 + 1000))];
    block_on(writer.submit(close)).unwrap();
    store.flush().unwrap();
    sec.catch_up().unwrap();
    assert_eq!(sec.frame_count(t).unwrap(), 5);
    assert_eq!(seqs(&all_frames(&sec, t)), (201..=205).collect::<Vec<_>>());
    assert!(!sec.ws_connection(t).unwrap().unwrap().open);

    // Secondaries are read-only.
    assert!(sec.delete_frames(t).is_err());
    assert!(sec.write(&frames(t, 206..=206, T0)).is_err());
    assert!(sec.enforce_retention(T0).is_err());
    writer.shutdown();
}

#[test]
fn writer_acks_after_data_is_readable() {
    let dir = tmp();
    let store = primary(dir.path());
    let writer = Writer::spawn(store.clone(), 128);
    let t = TrafficId::new(T0, 5);
    for seq in 1..=20u64 {
        let rx = writer.try_submit(frames(t, seq..=seq, T0));
        rx.blocking_recv().unwrap().unwrap();
        // Readable as soon as acked, from the same and from another handle.
        assert!(store.frame(&FrameId::new(t, seq)).unwrap().is_some());
        assert_eq!(store.frame_count(t).unwrap(), seq);
    }
    // Empty submissions succeed without touching the database.
    writer
        .try_submit(Vec::new())
        .blocking_recv()
        .unwrap()
        .unwrap();
    block_on(writer.submit(Vec::new())).unwrap();
    let s = writer.stats();
    assert_eq!(s.records_written, 20);
    assert_eq!(s.records_failed, 0);
    assert!(s.batches >= 1 && s.batches <= 20);
    assert!(s.bytes_written > 20 * 20);

    // Dropping every handle writes what was queued before the thread exits.
    let rxs: Vec<_> = (21..=120u64)
        .map(|seq| writer.try_submit(frames(t, seq..=seq, T0)))
        .collect();
    let clone = writer.clone();
    drop(writer);
    drop(clone);
    for rx in rxs {
        rx.blocking_recv().unwrap().unwrap();
    }
    assert_eq!(store.frame_count(t).unwrap(), 120);
}

#[test]
fn writer_shutdown_flushes_and_then_refuses() {
    let dir = tmp();
    let store = primary(dir.path());
    let writer = Writer::spawn(store.clone(), 1000);
    let t = TrafficId::new(T0, 6);
    let rxs: Vec<_> = (1..=500u64)
        .map(|seq| writer.try_submit(frames(t, seq..=seq, T0)))
        .collect();
    let other = writer.clone();
    other.shutdown();
    for rx in rxs {
        rx.blocking_recv().unwrap().unwrap();
    }
    assert_eq!(store.frame_count(t).unwrap(), 500);
    assert_eq!(
        writer
            .try_submit(frames(t, 501..=501, T0))
            .blocking_recv()
            .unwrap(),
        Err(WriteError::Closed)
    );
    assert_eq!(
        block_on(writer.submit(frames(t, 501..=502, T0))),
        Err(WriteError::Closed)
    );
    assert_eq!(writer.stats().records_dropped, 3);
    writer.shutdown(); // idempotent
}

#[test]
fn writer_queue_full_drops_without_blocking() {
    let dir = tmp();
    let store = primary(dir.path());
    // A huge first request keeps the writer thread busy while the queue of 1 fills up.
    let writer = Writer::spawn(store.clone(), 1);
    let t = TrafficId::new(T0, 8);
    let big = writer.try_submit(frames(TrafficId::new(T0, 9), 1..=100_000, T0));
    let mut rxs = Vec::new();
    let start = Instant::now();
    for seq in 1..=2000u64 {
        rxs.push(writer.try_submit(frames(t, seq..=seq, T0)));
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "try_submit blocked"
    );
    let mut ok = 0;
    let mut full = 0;
    for rx in rxs {
        match rx.blocking_recv().unwrap() {
            Ok(()) => ok += 1,
            Err(WriteError::QueueFull) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    big.blocking_recv().unwrap().unwrap();
    assert_eq!(ok + full, 2000);
    assert!(full > 0, "queue never filled up");
    let s = writer.stats();
    assert_eq!(s.records_written, ok + 100_000);
    assert_eq!(all_frames(&store, t).len() as u64, ok);
    assert_eq!(s.records_dropped, full);
    writer.shutdown();
}

#[test]
fn writer_reports_failures_and_keeps_going() {
    let dir = tmp();
    let store = primary(dir.path());
    let writer = Writer::spawn(store.clone(), 16);
    let t = TrafficId::new(T0, 11);

    store.inner.fail_writes.store(1, Ordering::SeqCst);
    let err = block_on(writer.submit(frames(t, 1..=10, T0))).unwrap_err();
    assert!(
        matches!(&err, WriteError::Db(m) if m.contains("injected")),
        "{err}"
    );
    assert_eq!(writer.stats().records_failed, 10);
    assert_eq!(writer.stats().records_written, 0);
    assert_eq!(store.frame_count(t).unwrap(), 0);

    // Later requests are served normally.
    block_on(writer.submit(frames(t, 1..=10, T0))).unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 10);
    let s = writer.stats();
    assert_eq!((s.records_written, s.records_failed), (10, 10));
    writer.shutdown();

    // A real RocksDB error: a read-only handle refuses writes.
    let ro = Store::open_read_only_for_test(dir.path()).unwrap();
    let ro_writer = Writer::spawn(ro.clone(), 16);
    for _ in 0..3 {
        let e = block_on(ro_writer.submit(frames(t, 11..=12, T0))).unwrap_err();
        assert!(matches!(e, WriteError::Db(_)), "{e}");
    }
    assert_eq!(ro_writer.stats().records_failed, 6);
    ro_writer.shutdown();
    assert_eq!(store.frame_count(t).unwrap(), 10);
}

#[test]
fn write_now_writes_on_the_callers_thread() {
    let dir = tmp();
    let store = primary(dir.path());
    let writer = Writer::spawn(store.clone(), 16);
    let t = TrafficId::new(T0, 12);
    for seq in 1..=5u64 {
        let done = writer.write_now(frames(t, seq..=seq, T0));
        assert!(matches!(done, WrittenNow::Done(Ok(()))), "{done:?}");
        // Readable as soon as it returns.
        assert_eq!(store.frame_count(t).unwrap(), seq);
    }
    assert!(matches!(
        writer.write_now(Vec::new()),
        WrittenNow::Done(Ok(()))
    ));
    // A failed write is counted like a queued one.
    store.inner.fail_writes.store(1, Ordering::SeqCst);
    let done = writer.write_now(frames(t, 6..=8, T0));
    assert!(
        matches!(&done, WrittenNow::Done(Err(WriteError::Db(m))) if m.contains("injected")),
        "{done:?}"
    );
    let s = writer.stats();
    assert_eq!((s.records_written, s.records_failed), (5, 3));
    // Queued and direct writes mix freely.
    block_on(writer.submit(frames(t, 6..=8, T0))).unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 8);
    writer.shutdown();
    assert!(matches!(
        writer.write_now(frames(t, 9..=9, T0)),
        WrittenNow::Done(Err(WriteError::Closed))
    ));
    assert_eq!(writer.stats().records_dropped, 1);
}

#[test]
fn retention_by_age() {
    let dir = tmp();
    let opts = StoreOptions {
        max_age: Some(Duration::from_secs(3600)),
        ..StoreOptions::default()
    };
    let store = Store::open_primary(dir.path(), opts).unwrap();
    let now = T0;
    let old = now - 2 * 3600 * 1000;
    let recent = now - 60 * 1000;

    let old_http = TrafficId::new(old, 1);
    let old_closed = TrafficId::new(old + 1, 0);
    let old_live = TrafficId::new(old + 2, 0);
    let old_idle = TrafficId::new(old + 3, 0);
    let new_http = TrafficId::new(recent, 0);
    let new_ws = TrafficId::new(recent + 1, 0);
    let mut r = vec![
        Record::Traffic(entry(old_http, "https://example.com/old", Some(200))),
        Record::Traffic(entry(old_closed, "wss://example.com/a", Some(101))),
        Record::WsOpen(ws_open(old_closed, old + 1)),
        Record::WsClose(ws_close(old_closed, old + 5000)),
        Record::Traffic(entry(old_live, "wss://example.com/b", Some(101))),
        Record::WsOpen(ws_open(old_live, old + 2)),
        Record::WsOpen(ws_open(old_idle, old + 3)),
        Record::Traffic(entry(new_http, "https://example.com/new", Some(200))),
        Record::WsOpen(ws_open(new_ws, recent + 1)),
    ];
    r.extend(frames(old_closed, 1..=10, old));
    r.extend(frames(old_idle, 1..=4, old));
    r.extend(frames(new_ws, 1..=6, recent));
    // old_live: 1..=30 are older than the cutoff, 31..=40 recent.
    r.extend((1..=30).map(|s| Record::Frame(frame(old_live, s, old + s))));
    r.extend((31..=40).map(|s| Record::Frame(frame(old_live, s, recent + s))));
    store.write(&r).unwrap();
    store.write(&frames(old_live, 41..=41, recent)).unwrap();
    assert_eq!(store.frame_count(old_live).unwrap(), 41);
    store.flush().unwrap();

    let report = store.enforce_retention(now).unwrap();
    assert_eq!(report.age_cutoff_ms, Some(now - 3600 * 1000));
    assert_eq!(report.traffic_deleted, 2, "{report:?}");
    assert_eq!(report.connections_deleted, 2, "{report:?}");
    assert_eq!(report.connections_trimmed, 1, "{report:?}");
    assert_eq!(report.frames_deleted, 10 + 4 + 30, "{report:?}");
    assert!(report.deleted_anything());

    // Old things are gone.
    assert!(store.traffic(old_http).unwrap().is_none());
    assert!(store.traffic(old_closed).unwrap().is_none());
    assert!(store.ws_connection(old_closed).unwrap().is_none());
    assert_eq!(store.frame_count(old_closed).unwrap(), 0);
    assert!(all_frames(&store, old_closed).is_empty());
    assert!(store.ws_connection(old_idle).unwrap().is_none());
    assert_eq!(store.frame_count(old_idle).unwrap(), 0);

    // The old-but-live connection keeps its records and recent frames.
    assert!(store.traffic(old_live).unwrap().is_some());
    assert!(store.ws_connection(old_live).unwrap().unwrap().open);
    assert_eq!(store.frame_count(old_live).unwrap(), 11);
    assert_eq!(
        seqs(&all_frames(&store, old_live)),
        (31..=41).collect::<Vec<_>>()
    );
    store.write(&frames(old_live, 42..=43, now)).unwrap();
    assert_eq!(store.frame_count(old_live).unwrap(), 13);

    // New things stay.
    assert!(store.traffic(new_http).unwrap().is_some());
    assert!(store.ws_connection(new_ws).unwrap().is_some());
    assert_eq!(store.frame_count(new_ws).unwrap(), 6);
    let (_, total) = store.traffic_page(0, 10, |_| true).unwrap();
    assert_eq!(total, 2);

    // A second pass has nothing more to delete.
    let again = store.enforce_retention(now).unwrap();
    assert!(!again.deleted_anything(), "{again:?}");
    assert_eq!(store.frame_count(old_live).unwrap(), 13);

    // Once it closes, it goes too.
    store
        .write(&[Record::WsClose(ws_close(old_live, now))])
        .unwrap();
    let gone = store.enforce_retention(now + 1).unwrap();
    assert_eq!(gone.connections_deleted, 1, "{gone:?}");
    assert_eq!(gone.frames_deleted, 13, "{gone:?}");
    assert!(store.ws_connection(old_live).unwrap().is_none());
    assert_eq!(store.frame_count(old_live).unwrap(), 0);
    assert_eq!(store.frame_count(new_ws).unwrap(), 6);
}

#[test]
fn retention_takes_bodies_along_and_keeps_the_rules() {
    let dir = tmp();
    let opts = StoreOptions {
        max_age: Some(Duration::from_secs(3600)),
        ..StoreOptions::default()
    };
    let store = Store::open_primary(dir.path(), opts).unwrap();
    let old = TrafficId::new(T0 - 2 * 3600 * 1000, 0);
    let new = TrafficId::new(T0 - 1000, 0);
    store
        .write(&[
            body_chunk(old, BodyOf::Response, 0, b"old body"),
            Record::Traffic(entry(old, "https://example.com/old", Some(200))),
            body_chunk(new, BodyOf::Response, 0, b"new body"),
            Record::Traffic(entry(new, "https://example.com/new", Some(200))),
        ])
        .unwrap();
    store.record_rules(b"[]").unwrap();
    let report = store.enforce_retention(T0).unwrap();
    assert_eq!(report.traffic_deleted, 1, "{report:?}");
    assert_eq!(store.body(old, BodyOf::Response, 100).unwrap(), b"");
    assert_eq!(store.body(new, BodyOf::Response, 100).unwrap(), b"new body");
    assert_eq!(store.latest_rules().unwrap().unwrap().value, b"[]");
}

#[test]
fn bodies_are_read_back_in_order_by_the_secondary() {
    let dir = tmp();
    let store = primary(dir.path());
    let t = TrafficId::new(T0, 3);
    let other = TrafficId::new(T0, 4);
    store
        .write(&[
            body_chunk(t, BodyOf::Request, 0, b"name=frame"),
            body_chunk(t, BodyOf::Request, 1, b"tap"),
            body_chunk(t, BodyOf::Response, 0, b"{\"ok\":"),
            body_chunk(other, BodyOf::Request, 0, b"not mine"),
        ])
        .unwrap();
    let secondary = Store::open_secondary(dir.path(), &dir.path().join("secondary")).unwrap();
    // Written after the secondary opened: seen after catching up.
    store
        .write(&[body_chunk(t, BodyOf::Response, 1, b"true}")])
        .unwrap();
    secondary.catch_up().unwrap();
    for s in [&store, &secondary] {
        assert_eq!(
            s.body(t, BodyOf::Request, 1 << 20).unwrap(),
            b"name=frametap"
        );
        assert_eq!(
            s.body(t, BodyOf::Response, 1 << 20).unwrap(),
            b"{\"ok\":true}"
        );
        assert_eq!(s.body(t, BodyOf::Request, 6).unwrap(), b"name=f");
        assert_eq!(
            s.body(TrafficId::new(T0, 9), BodyOf::Request, 10).unwrap(),
            b""
        );
        let mut reader = s.body_reader(t, BodyOf::Request);
        let mut small = [0u8; 4];
        let mut read = Vec::new();
        loop {
            let n = std::io::Read::read(&mut reader, &mut small).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&small[..n]);
        }
        assert_eq!(read, b"name=frametap");
    }
}

#[test]
fn old_entries_without_body_fields_still_read() {
    // An entry as frametap wrote it before bodies were recorded.
    let old_json = r#"{"id":"0190a1b2c3d40001","timestamp_ms":1,"conn_id":1,"method":"GET","url":"http://h/","protocol":"http","host":"h","path":"/","status":200,"request_headers":[],"response_headers":[],"remote_address":"10.0.0.1:80","tls_version":null,"duration_ms":1.0,"error":null,"client_address":"10.0.0.2:5","pid":null,"process":null,"sni":null}"#;
    let entry: TrafficEntry = serde_json::from_str(old_json).unwrap();
    assert_eq!((entry.request_body, entry.response_body), (None, None));
    // And entries without bodies are written without the fields.
    let json = serde_json::to_string(&entry).unwrap();
    assert!(!json.contains("body"), "{json}");
}

#[test]
fn deleting_traffic_takes_everything_recorded_under_it() {
    let dir = tmp();
    let store = primary(dir.path());
    let http = TrafficId::new(T0, 1);
    let closed = TrafficId::new(T0 + 1, 0);
    let open = TrafficId::new(T0 + 2, 0);
    let kept = TrafficId::new(T0 + 3, 0);
    let mut records = vec![
        body_chunk(http, BodyOf::Request, 0, b"q=1"),
        body_chunk(http, BodyOf::Response, 0, b"hello"),
        body_chunk(http, BodyOf::Response, 1, b" world"),
        Record::Traffic(entry(http, "https://example.com/a", Some(200))),
        Record::Traffic(entry(closed, "wss://example.com/b", Some(101))),
        Record::WsOpen(ws_open(closed, T0 + 1)),
        Record::WsClose(ws_close(closed, T0 + 9)),
        Record::Traffic(entry(open, "wss://example.com/c", Some(101))),
        Record::WsOpen(ws_open(open, T0 + 2)),
        body_chunk(kept, BodyOf::Response, 0, b"kept"),
        Record::Traffic(entry(kept, "https://example.com/d", Some(404))),
    ];
    records.extend(frames(closed, 1..=5, T0));
    records.extend(frames(open, 1..=3, T0));
    store.write(&records).unwrap();
    let secondary = Store::open_secondary(dir.path(), &dir.path().join("secondary")).unwrap();

    let stats = store
        .delete_traffic(&[http, closed, open, TrafficId::new(T0 + 7, 0)])
        .unwrap();
    assert_eq!(
        stats,
        DeleteStats {
            traffic: 3,
            connections: 2,
            frames: 8,
            trimmed: 0
        }
    );
    secondary.catch_up().unwrap();
    for s in [&store, &secondary] {
        for id in [http, closed, open] {
            assert!(s.traffic(id).unwrap().is_none());
            assert!(s.ws_connection(id).unwrap().is_none());
            assert_eq!(s.frame_count(id).unwrap(), 0);
        }
        assert_eq!(s.body(http, BodyOf::Response, 100).unwrap(), b"");
        assert_eq!(s.body(http, BodyOf::Request, 100).unwrap(), b"");
        assert_eq!(s.body(kept, BodyOf::Response, 100).unwrap(), b"kept");
        assert!(s.traffic(kept).unwrap().is_some());
    }
    // The open connection keeps recording: later frames are counted right.
    store.write(&frames(open, 4..=5, T0)).unwrap();
    assert_eq!(store.frame_count(open).unwrap(), 2);
    // Deleting again deletes nothing.
    assert_eq!(
        store.delete_traffic(&[http]).unwrap(),
        DeleteStats::default()
    );
}

#[test]
fn deleting_by_filter_and_all() {
    let dir = tmp();
    let store = primary(dir.path());
    let mut records = Vec::new();
    for i in 0..3000u16 {
        let id = TrafficId::new(T0 + u64::from(i), 0);
        let mut e = entry(
            id,
            "https://example.com/x",
            Some(if i % 3 == 0 { 500 } else { 200 }),
        );
        e.pid = Some(u32::from(i % 2));
        records.push(Record::Traffic(e));
        records.push(body_chunk(id, BodyOf::Response, 0, b"b"));
    }
    store.write(&records).unwrap();
    let errors_of_pid_0 = TrafficFilter {
        statuses: Some(vec![StatusMatch::Class(5)]),
        pids: Some(vec![0]),
        ..TrafficFilter::default()
    };
    let stats = store.delete_traffic_matching(&errors_of_pid_0).unwrap();
    // i % 3 == 0 and i % 2 == 0: i % 6 == 0.
    assert_eq!(stats.traffic, 500);
    let (_, left) = store.traffic_page(0, 0, |_| true).unwrap();
    assert_eq!(left, 2500);
    let (_, matching) = store
        .traffic_page(0, 0, |e| errors_of_pid_0.matches(e))
        .unwrap();
    assert_eq!(matching, 0);
    assert_eq!(
        store
            .body(TrafficId::new(T0, 0), BodyOf::Response, 9)
            .unwrap(),
        b""
    );
    assert_eq!(
        store
            .body(TrafficId::new(T0 + 1, 0), BodyOf::Response, 9)
            .unwrap(),
        b"b"
    );
    let all = store
        .delete_traffic_matching(&TrafficFilter::default())
        .unwrap();
    assert_eq!(all.traffic, 2500);
    assert_eq!(store.traffic_page(0, 0, |_| true).unwrap().1, 0);
    let db = store.db().unwrap();
    let mut it = crate::store::bounded_iter(&db, CF_BODIES, None, None).unwrap();
    it.seek_to_first();
    assert!(!it.valid(), "no body chunk is left");
}

#[test]
fn rules_are_versioned_and_only_the_newest_few_kept() {
    let dir = tmp();
    let store = primary(dir.path());
    assert_eq!(store.latest_rules().unwrap(), None);
    let secondary = Store::open_secondary(dir.path(), &dir.path().join("secondary")).unwrap();
    for n in 1..=40u64 {
        assert_eq!(store.record_rules(format!("[{n}]").as_bytes()).unwrap(), n);
    }
    secondary.catch_up().unwrap();
    for s in [&store, &secondary] {
        let latest = s.latest_rules().unwrap().unwrap();
        assert_eq!(
            (latest.version, latest.value.as_slice()),
            (40, &b"[40]"[..])
        );
        let db = s.db().unwrap();
        let mut it = crate::store::bounded_iter(&db, CF_META, None, None).unwrap();
        it.seek_to_first();
        let mut kept = 0;
        while it.valid() {
            kept += 1;
            it.next();
        }
        assert_eq!(kept, 16);
    }
    // Reopened (an agent restart): versions go on from the newest.
    drop(secondary);
    drop(store);
    let store = primary(dir.path());
    assert_eq!(store.record_rules(b"[]").unwrap(), 41);
    // Rule records are not traffic: retention and deletion leave them alone.
    store
        .delete_traffic_matching(&TrafficFilter::default())
        .unwrap();
    assert_eq!(store.latest_rules().unwrap().unwrap().version, 41);
}

fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn retention_by_size() {
    let dir = tmp();
    let opts = StoreOptions {
        max_bytes: Some(4 << 20),
        write_buffer_size: 1 << 20,
        ..StoreOptions::default()
    };
    let store = Store::open_primary(dir.path(), opts).unwrap();
    let now = T0;
    // 100 closed connections over 100 minutes, ~160 KiB of incompressible frames each.
    let ids: Vec<TrafficId> = (0..100u64)
        .map(|i| TrafficId::new(now - (100 - i) * 60_000, 0))
        .collect();
    for (i, &t) in ids.iter().enumerate() {
        let mut r = vec![Record::WsOpen(ws_open(t, t.timestamp_ms()))];
        for seq in 1..=40u64 {
            let mut f = frame(t, seq, t.timestamp_ms() + seq);
            f.payload = noise(i as u64 * 1000 + seq, 4096);
            f.payload_len = 4096;
            r.push(Record::Frame(f));
        }
        r.push(Record::WsClose(ws_close(t, t.timestamp_ms() + 1000)));
        store.write(&r).unwrap();
    }
    store.flush().unwrap();
    // 4 KiB payloads live in blob files, which the size counts.
    let blob_files = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "blob"))
        .count();
    assert!(blob_files > 0, "no blob files in {}", dir.path().display());
    let before = store.size_bytes().unwrap();
    assert!(before > 12 << 20, "size {before}");
    // A secondary opened before retention compacts files away keeps working.
    let sec = Store::open_secondary(dir.path(), &dir.path().join("sec")).unwrap();
    assert_eq!(sec.frame_count(ids[0]).unwrap(), 40);

    let report = store.enforce_retention(now).unwrap();
    eprintln!("size retention: {report:?}");
    assert_eq!(report.size_before, Some(before));
    let after = report.size_after.unwrap();
    assert!(after <= 4 << 20, "{report:?}");
    assert!(report.size_steps >= 1);
    assert!(report.connections_deleted >= 50, "{report:?}");
    // Oldest gone, newest kept.
    assert!(store.ws_connection(ids[0]).unwrap().is_none());
    assert_eq!(store.frame_count(ids[0]).unwrap(), 0);
    assert_eq!(store.frame_count(ids[99]).unwrap(), 40);
    assert!(store.ws_connection(ids[99]).unwrap().is_some());
    // Deleted connections are exactly a prefix of the timeline.
    let kept: Vec<bool> = ids
        .iter()
        .map(|&t| store.ws_connection(t).unwrap().is_some())
        .collect();
    let first_kept = kept.iter().position(|&k| k).unwrap();
    assert!(kept[first_kept..].iter().all(|&k| k));
    assert_eq!(report.connections_deleted as usize, first_kept);

    sec.catch_up().unwrap();
    assert!(sec.ws_connection(ids[0]).unwrap().is_none());
    assert_eq!(sec.frame_count(ids[0]).unwrap(), 0);
    assert!(all_frames(&sec, ids[0]).is_empty());
    assert_eq!(all_frames(&sec, ids[99]).len(), 40);
    assert_eq!(sec.frame_count(ids[first_kept]).unwrap(), 40);
}

#[test]
fn retention_thread_runs_and_stops() {
    let dir = tmp();
    let opts = StoreOptions {
        max_age: Some(Duration::from_secs(60)),
        ..StoreOptions::default()
    };
    let store = Store::open_primary(dir.path(), opts).unwrap();
    let old = TrafficId::new(1_000_000, 0);
    store.write(&frames(old, 1..=5, 1_000_000)).unwrap();
    let handle = spawn_retention(store.clone(), Duration::from_millis(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.frame_count(old).unwrap() != 0 {
        assert!(Instant::now() < deadline, "retention thread did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.stop();

    // With the handle merely dropped, the thread exits once the store is dropped, and
    // then the directory can be opened again.
    let handle = spawn_retention(store.clone(), Duration::from_millis(10));
    std::mem::forget(handle);
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_primary(dir.path(), StoreOptions::default()) {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "store never released: {e:#}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn writer_throughput_smoke() {
    let dir = tmp();
    let store = primary(dir.path());
    let writer = Writer::spawn(store.clone(), 4096);
    const N: u64 = 100_000;
    const CONNS: u64 = 10;
    const CHUNK: u64 = 256;
    let conns: Vec<TrafficId> = (0..CONNS).map(|i| TrafficId::new(T0, i as u16)).collect();
    let start = Instant::now();
    let mut rxs = Vec::new();
    let per_conn = N / CONNS;
    let mut seq = 1;
    while seq <= per_conn {
        let end = (seq + CHUNK - 1).min(per_conn);
        for &t in &conns {
            let mut recs = Vec::with_capacity(CHUNK as usize);
            for s in seq..=end {
                let mut f = frame(t, s, T0 + s);
                f.payload = vec![b'x'; 100];
                recs.push(Record::Frame(f));
            }
            rxs.push(writer.try_submit(recs));
        }
        seq = end + 1;
    }
    for rx in rxs {
        rx.blocking_recv().unwrap().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let s = writer.stats();
    eprintln!(
        "writer: {N} frames in {secs:.3}s = {:.0} frames/s, {} batches, {:.1} MB",
        N as f64 / secs,
        s.batches,
        s.bytes_written as f64 / 1e6
    );
    assert_eq!(s.records_written, N);
    assert_eq!(s.records_dropped + s.records_failed, 0);
    let mut total = 0;
    for &t in &conns {
        assert_eq!(store.frame_count(t).unwrap(), per_conn);
        let all = all_frames(&store, t);
        assert_eq!(all.len() as u64, per_conn);
        assert!(all.iter().zip(1..).all(|(f, s)| f.seq == s));
        total += all.len() as u64;
    }
    assert_eq!(total, N);
    writer.shutdown();
}

const CHILD_ENV: &str = "FRAMETAP_STORE_SIGKILL_CHILD_DIR";

/// Child half of `sigkill_after_ack_loses_nothing` (a no-op in normal test runs):
/// writes through a Writer, reports the acks, then waits to be killed.
#[test]
fn sigkill_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = primary(Path::new(&dir));
    let writer = Writer::spawn(store, 1024);
    let t = TrafficId::new(T0, 77);
    let rxs: Vec<_> = (0..40u64)
        .map(|i| writer.try_submit(frames(t, i * 250 + 1..=(i + 1) * 250, T0)))
        .collect();
    for rx in rxs {
        rx.blocking_recv().unwrap().unwrap();
    }
    println!("\nFRAMETAP-ACKED");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn sigkill_after_ack_loses_nothing() {
    use std::io::BufRead;
    let dir = tmp();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::sigkill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if line.is_ok_and(|l| l.contains("FRAMETAP-ACKED")) {
                let _ = tx.send(());
            }
        }
    });
    // Kill right after the ack (or after a generous timeout): SIGKILL, no chance to
    // flush anything.
    let acked = rx.recv_timeout(Duration::from_secs(120)).is_ok();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked, "child did not ack");
    let store = primary(dir.path());
    let t = TrafficId::new(T0, 77);
    assert_eq!(store.frame_count(t).unwrap(), 10_000);
    let all = all_frames(&store, t);
    assert_eq!(all.len(), 10_000);
    assert_eq!(all[9_999], frame(t, 10_000, T0 + 10_000));
}

/// Records every [`RecordingChange`] of `writer`.
fn watch_changes(writer: &Writer) -> Arc<std::sync::Mutex<Vec<RecordingChange>>> {
    let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = changes.clone();
    writer.on_recording_change(move |c| sink.lock().unwrap().push(c.clone()));
    changes
}

/// Polls `f` every 20 ms until it returns `Some` (at most 60 s).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reopen_keeps_what_was_written_and_waits_for_operations_in_flight() {
    let dir = tmp();
    let store = primary(dir.path());
    let t = TrafficId::new(T0, 40);
    store.write(&frames(t, 1..=10, T0)).unwrap();
    let seq = store.latest_sequence();

    // An operation holding the database keeps it open: the reopen gives up and
    // changes nothing.
    let held = store.db().unwrap();
    let err = store.reopen(Duration::from_millis(50)).unwrap_err();
    assert!(format!("{err:#}").contains("still in use"), "{err:#}");
    assert_eq!(store.frame_count(t).unwrap(), 10);
    drop(held);

    store.reopen(Duration::from_secs(5)).unwrap();
    assert_eq!(store.frame_count(t).unwrap(), 10, "the WAL was replayed");
    assert!(store.latest_sequence() >= seq);
    store.write(&frames(t, 11..=12, T0)).unwrap();
    assert_eq!(all_frames(&store, t).len(), 12);

    // Secondaries and read-only views cannot be reopened.
    let ro = Store::open_read_only_for_test(dir.path()).unwrap();
    assert!(ro.reopen(Duration::ZERO).is_err());
}

#[test]
fn failed_writes_degrade_recording_until_a_write_works_again() {
    let dir = tmp();
    let store = primary(dir.path());
    let writer = Writer::spawn(store.clone(), 16);
    let changes = watch_changes(&writer);
    let t = TrafficId::new(T0, 41);
    assert_eq!(writer.recording(), RecordingStatus::default());

    // Every write fails (the recovery thread's probes too), long enough for the
    // store to be reopened; the outage lasts until writes work again.
    store.inner.fail_writes.store(u64::MAX, Ordering::SeqCst);
    let err = block_on(writer.submit(frames(t, 1..=10, T0))).unwrap_err();
    assert!(matches!(err, WriteError::Db(_)), "{err}");
    assert!(matches!(
        writer.write_now(frames(t, 1..=5, T0)),
        WrittenNow::Done(Err(WriteError::Db(_)))
    ));
    let status = writer.recording();
    assert_eq!(status.state, RecordingState::Degraded);
    assert_eq!(status.records_lost, 15);
    assert!(status.error.as_deref().unwrap().contains("injected"));
    let since = status.since_ms.unwrap();
    assert!(since <= now_ms());
    eventually("the store is reopened", || {
        (writer.stats().reopens > 0).then_some(())
    });
    assert!(writer.recording().state == RecordingState::Degraded);

    store.inner.fail_writes.store(0, Ordering::SeqCst);
    // The recovery thread's probe may notice first; either way the next write works.
    block_on(writer.submit(frames(t, 1..=3, T0))).unwrap();
    let status = writer.recording();
    assert_eq!(status.state, RecordingState::Recording);
    let outage = status.last_outage.clone().unwrap();
    assert_eq!(outage.stopped_at_ms, since);
    assert!(outage.resumed_at_ms >= since);
    assert_eq!(outage.records_lost, 15);
    assert!(outage.error.contains("injected"));
    assert_eq!(
        *changes.lock().unwrap(),
        vec![
            RecordingChange::Stopped {
                at_ms: since,
                error: outage.error.clone()
            },
            RecordingChange::Resumed(outage),
        ]
    );
    let s = writer.stats();
    assert_eq!((s.records_failed, s.records_written), (15, 3));
    assert_eq!(store.frame_count(t).unwrap(), 3);
    writer.shutdown();
}

/// A tmpfs of `size` on a fresh directory, unmounted when dropped (also when the test
/// fails). `None` (the test is skipped) without root, except under CI.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("this test needs root (it mounts a tmpfs)");
            }
            eprintln!("skipped: needs root (it mounts a tmpfs)");
            return None;
        }
        let dir = tmp();
        let target = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        let options = std::ffi::CString::new(format!("size={size}")).unwrap();
        // SAFETY: valid C strings; mounting a tmpfs on our own fresh directory.
        let rc = unsafe {
            libc::mount(
                c"frametap-test".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with `file`; removing it gives the space back.
    fn fill(&self, file: &str) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join(file);
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a_u8; 1 << 20];
        while matches!(f.write(&chunk), Ok(n) if n > 0) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; a lazy unmount of the tmpfs we mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_full_disk_stops_recording_and_freeing_space_resumes_it() {
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let dir = fs.path().join("store");
    let store = primary(&dir);
    let writer = Writer::spawn(store.clone(), 64);
    let changes = watch_changes(&writer);
    let before = TrafficId::new(T0, 50);
    let after = TrafficId::new(T0, 51);
    let full = TrafficId::new(T0, 52);
    // 100 frames of 1 KB (noise: RocksDB cannot compress it away).
    let batch = |t: TrafficId, first: u64| -> Vec<Record> {
        (first..first + 100)
            .map(|seq| {
                let mut f = frame(t, seq, T0 + seq);
                f.payload = noise(seq, 1000);
                f.payload_len = 1000;
                Record::Frame(f)
            })
            .collect()
    };
    let write = |records: Vec<Record>| match writer.write_now(records) {
        WrittenNow::Done(result) => result,
        WrittenNow::Busy(records) => block_on(writer.submit(records)),
    };
    write(batch(before, 1)).unwrap();

    let filler = fs.fill("filler");
    // Writes fail once what RocksDB had reserved (its preallocated WAL) is used up.
    let mut lost = 0u64;
    let mut seq = 1;
    for _ in 0..1_000 {
        match write(batch(full, seq)) {
            Ok(()) => seq += 100,
            Err(e) => {
                assert!(e.to_string().contains("No space left on device"), "{e}");
                lost += 100;
                break;
            }
        }
    }
    assert_eq!(lost, 100, "writes kept working on a full 64 MB disk");
    for _ in 0..10 {
        assert!(write(batch(full, seq)).is_err(), "the disk is still full");
        lost += 100;
    }
    let status = writer.recording();
    assert_eq!(status.state, RecordingState::Degraded);
    assert_eq!(status.records_lost, lost);
    let since = status.since_ms.unwrap();
    assert!(matches!(
        &changes.lock().unwrap()[..],
        [RecordingChange::Stopped { at_ms, error }] if *at_ms == since && error.contains("No space")
    ));

    // Space comes back: writes work again by themselves (nobody reopens by hand).
    std::fs::remove_file(filler).unwrap();
    let mut next = 1;
    eventually("a write works again", || match write(batch(after, next)) {
        Ok(()) => Some(()),
        Err(_) => {
            lost += 100;
            None
        }
    });
    next += 100;
    write(batch(after, next)).unwrap();

    let status = writer.recording();
    assert_eq!(status.state, RecordingState::Recording);
    let outage = status.last_outage.unwrap();
    assert_eq!(outage.stopped_at_ms, since);
    assert_eq!(outage.records_lost, lost);
    assert_eq!(
        changes.lock().unwrap().last(),
        Some(&RecordingChange::Resumed(outage.clone()))
    );
    assert_eq!(changes.lock().unwrap().len(), 2, "one outage");
    assert_eq!(writer.stats().records_failed, lost);
    // What was written before the outage survived it; what came after is stored.
    assert_eq!(store.frame_count(before).unwrap(), 100);
    assert_eq!(all_frames(&store, after).len(), 200);
    eprintln!(
        "outage of {:?}, {lost} records lost, {} reopens",
        outage.duration(),
        writer.stats().reopens
    );
    writer.shutdown();
}
