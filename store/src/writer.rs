//! Writes for the agent. The usual path is [`Writer::write_now`]: the caller's thread
//! writes its records itself (RocksDB groups concurrent writers into one WAL write), with
//! no queue and no thread switch there and back. When RocksDB would make a write wait
//! (a write stall or slowdown), the records go to the group-commit thread instead: it
//! drains a bounded queue, writes everything queued in one `WriteBatch` (WAL on, no
//! fsync) and acks, so that a waiting write never blocks an async worker.
//!
//! An `Ok` ack means the batch's write call returned: the records are in the WAL (OS
//! page cache), so they survive the agent being killed (even with SIGKILL) right after.
//! They are lost only if the machine itself crashes before the OS writes them back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use crate::records::Record;
use crate::store::Store;

/// At most this many records go into one batch (a single larger request is written
/// whole).
pub const MAX_BATCH_RECORDS: usize = 4096;
/// A batch stops growing once its encoded size reaches this.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// Why a submission was not written. Cheap to clone: one write error is reported to
/// every request of the failed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The queue was full (`try_submit` only): the records were dropped.
    #[error("capture write queue full: records dropped")]
    QueueFull,
    /// The writer was shut down (or its thread died).
    #[error("capture writer stopped")]
    Closed,
    /// RocksDB rejected the batch (e.g. disk full).
    #[error("capture database write failed: {0}")]
    Db(String),
    /// A record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(String),
}

/// Counters of a [`Writer`] (snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Batches written successfully.
    pub batches: u64,
    /// Records written successfully.
    pub records_written: u64,
    /// Records whose write failed (database or encoding error).
    pub records_failed: u64,
    /// Records dropped without trying: queue full or writer stopped.
    pub records_dropped: u64,
    /// Bytes of successfully written batches (`WriteBatch` size, keys + values +
    /// small per-record overhead).
    pub bytes_written: u64,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    records_written: AtomicU64,
    records_failed: AtomicU64,
    records_dropped: AtomicU64,
    bytes_written: AtomicU64,
}

/// Allows one event per period; counts the suppressed ones. Lock-free, shareable.
struct RateLimit {
    start: Instant,
    period_ms: u64,
    /// Milliseconds since `start` of the last allowed event, plus 1 (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    fn new(period: Duration) -> RateLimit {
        RateLimit {
            start: Instant::now(),
            period_ms: period.as_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(number suppressed since the last allowed event)` if allowed now.
    fn check(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now >= last + self.period_ms)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

struct Request {
    records: Vec<Record>,
    ack: oneshot::Sender<Result<(), WriteError>>,
}

enum Msg {
    Write(Request),
    Shutdown,
}

struct Shared {
    store: Store,
    stats: Stats,
    closing: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    queue_full_warn: RateLimit,
    write_failed_warn: RateLimit,
}

/// What [`Writer::write_now`] did.
#[derive(Debug)]
pub enum WrittenNow {
    /// Written (or failed, and counted): the records are done with.
    Done(Result<(), WriteError>),
    /// RocksDB would have made the write wait: nothing was written. Queue the records
    /// with [`Writer::submit`].
    Busy(Vec<Record>),
}

/// Handle to the group-commit thread. Clone it freely; the thread stops (after writing
/// everything queued) when every handle is dropped or [`Writer::shutdown`] is called.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Writer {
    /// Starts the writer thread for `store` (a primary) with room for `queue` pending
    /// requests (at least 1).
    pub fn spawn(store: Store, queue: usize) -> Writer {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let shared = Arc::new(Shared {
            store,
            stats: Stats::default(),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
            queue_full_warn: RateLimit::new(Duration::from_secs(1)),
            write_failed_warn: RateLimit::new(Duration::from_secs(1)),
        });
        let s2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name("frametap-writer".into())
            .spawn(move || run(rx, s2))
            .expect("cannot spawn the capture writer thread");
        *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Writer { tx, shared }
    }

    fn drop_records(&self, n: usize, err: WriteError) -> Result<(), WriteError> {
        self.shared
            .stats
            .records_dropped
            .fetch_add(n as u64, Ordering::Relaxed);
        if err == WriteError::QueueFull
            && let Some(suppressed) = self.shared.queue_full_warn.check()
        {
            tracing::warn!(
                suppressed,
                "capture write queue full: dropping {n} records (storage cannot keep up)"
            );
        }
        Err(err)
    }

    /// Writes `records` on this thread unless RocksDB would make the write wait (then
    /// they come back as [`WrittenNow::Busy`], unwritten). Never waits out a stall, so
    /// it is fine on an async worker: a write is a WAL append and a memtable insert.
    pub fn write_now(&self, records: Vec<Record>) -> WrittenNow {
        if records.is_empty() {
            return WrittenNow::Done(Ok(()));
        }
        if self.shared.closing.load(Ordering::SeqCst) {
            return WrittenNow::Done(self.drop_records(records.len(), WriteError::Closed));
        }
        let shared = &self.shared;
        let mut batch = WriteBatch::default();
        if let Err(e) = put_records(&shared.store, &mut batch, &records) {
            return WrittenNow::Done(Err(encode_failed(&shared.stats, records.len(), &e)));
        }
        match commit(shared, batch, records.len() as u64, true) {
            Err(Commit::Busy) => WrittenNow::Busy(records),
            Err(Commit::Failed(e)) => WrittenNow::Done(Err(e)),
            Ok(()) => WrittenNow::Done(Ok(())),
        }
    }

    /// Queues `records` without ever blocking or awaiting (for async code). The
    /// returned receiver resolves once they are written (`Ok`), or with the error; when
    /// the queue is full the records are dropped and it resolves at once with
    /// [`WriteError::QueueFull`]. Ignoring the receiver is fine.
    pub fn try_submit(&self, records: Vec<Record>) -> oneshot::Receiver<Result<(), WriteError>> {
        let (ack, rx) = oneshot::channel();
        if records.is_empty() {
            let _ = ack.send(Ok(()));
            return rx;
        }
        if self.shared.closing.load(Ordering::SeqCst) {
            let _ = ack.send(self.drop_records(records.len(), WriteError::Closed));
            return rx;
        }
        match self.tx.try_send(Msg::Write(Request { records, ack })) {
            Ok(()) => {}
            Err(e) => {
                let (msg, err) = match e {
                    mpsc::error::TrySendError::Full(m) => (m, WriteError::QueueFull),
                    mpsc::error::TrySendError::Closed(m) => (m, WriteError::Closed),
                };
                if let Msg::Write(req) = msg {
                    let _ = req.ack.send(self.drop_records(req.records.len(), err));
                }
            }
        }
        rx
    }

    /// Waits for queue space, queues `records`, and waits until they are written.
    pub async fn submit(&self, records: Vec<Record>) -> Result<(), WriteError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len();
        if self.shared.closing.load(Ordering::SeqCst) {
            return self.drop_records(n, WriteError::Closed);
        }
        let (ack, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Write(Request { records, ack }))
            .await
            .is_err()
        {
            return self.drop_records(n, WriteError::Closed);
        }
        rx.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Current counters.
    pub fn stats(&self) -> WriterStats {
        let s = &self.shared.stats;
        WriterStats {
            batches: s.batches.load(Ordering::Relaxed),
            records_written: s.records_written.load(Ordering::Relaxed),
            records_failed: s.records_failed.load(Ordering::Relaxed),
            records_dropped: s.records_dropped.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting records, writes everything already queued, and waits for the
    /// thread to exit (any clone may call it; later submissions fail with
    /// [`WriteError::Closed`]). Blocks: from async code, call it via
    /// `spawn_blocking` (or at the very end of `main`).
    pub fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        loop {
            match self.tx.try_send(Msg::Shutdown) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
            }
        }
        let mut guard = self.shared.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = guard.take()
            && handle.join().is_err()
        {
            tracing::error!("capture writer thread panicked");
        }
    }
}

/// Requests gathered for one batch.
struct Pending {
    batch: WriteBatch,
    acks: Vec<oneshot::Sender<Result<(), WriteError>>>,
    records: usize,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            batch: WriteBatch::default(),
            acks: Vec::new(),
            records: 0,
        }
    }

    fn full(&self) -> bool {
        self.records >= MAX_BATCH_RECORDS || self.batch.size_in_bytes() >= MAX_BATCH_BYTES
    }

    /// Encodes a request into the batch; a request with an unencodable record is
    /// failed alone.
    fn add(&mut self, store: &Store, req: Request, stats: &Stats) {
        match put_records(store, &mut self.batch, &req.records) {
            Ok(()) => {
                self.records += req.records.len();
                self.acks.push(req.ack);
            }
            Err(e) => {
                let _ = req
                    .ack
                    .send(Err(encode_failed(stats, req.records.len(), &e)));
            }
        }
    }
}

/// Adds `records` to `batch`; adds nothing if one of them cannot be encoded.
fn put_records(store: &Store, batch: &mut WriteBatch, records: &[Record]) -> anyhow::Result<()> {
    let encoded = records
        .iter()
        .map(|r| {
            let (cf, key, value) = Store::encode_record(r)?;
            Ok((store.cf(cf)?, key, value))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (cf, key, value) in encoded {
        batch.put_cf(cf, key, value);
    }
    Ok(())
}

fn encode_failed(stats: &Stats, records: usize, e: &anyhow::Error) -> WriteError {
    stats
        .records_failed
        .fetch_add(records as u64, Ordering::Relaxed);
    tracing::warn!("capture writer: cannot encode records: {e:#}");
    WriteError::Encode(format!("{e:#}"))
}

enum Commit {
    /// Refused because RocksDB would have waited (only asked for with `no_wait`).
    Busy,
    Failed(WriteError),
}

/// Writes `batch` of `records` records and counts the outcome.
fn commit(shared: &Shared, batch: WriteBatch, records: u64, no_wait: bool) -> Result<(), Commit> {
    let stats = &shared.stats;
    let bytes = batch.size_in_bytes() as u64;
    match shared.store.write_batch_opt(batch, no_wait) {
        Ok(()) => {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.records_written.fetch_add(records, Ordering::Relaxed);
            stats.bytes_written.fetch_add(bytes, Ordering::Relaxed);
            Ok(())
        }
        Err(e) if no_wait && crate::store::is_busy(&e) => Err(Commit::Busy),
        Err(e) => {
            stats.records_failed.fetch_add(records, Ordering::Relaxed);
            if let Some(suppressed) = shared.write_failed_warn.check() {
                tracing::warn!(
                    suppressed,
                    "capture writer: writing {records} records failed (traffic keeps being \
                     relayed, but is not recorded): {e:#}"
                );
            }
            Err(Commit::Failed(WriteError::Db(format!("{e:#}"))))
        }
    }
}

fn handle_msg(
    msg: Msg,
    pending: &mut Pending,
    rx: &mut mpsc::Receiver<Msg>,
    store: &Store,
    stats: &Stats,
) {
    match msg {
        Msg::Write(req) => pending.add(store, req, stats),
        // Stop accepting; what is still queued is received (and written) by the loop
        // in `run` before `blocking_recv` returns `None`.
        Msg::Shutdown => rx.close(),
    }
}

fn run(mut rx: mpsc::Receiver<Msg>, shared: Arc<Shared>) {
    let (store, stats) = (&shared.store, &shared.stats);
    while let Some(first) = rx.blocking_recv() {
        let mut pending = Pending::new();
        handle_msg(first, &mut pending, &mut rx, store, stats);
        while !pending.full() {
            match rx.try_recv() {
                Ok(msg) => handle_msg(msg, &mut pending, &mut rx, store, stats),
                Err(_) => break,
            }
        }
        if pending.acks.is_empty() {
            continue;
        }
        let records = pending.records as u64;
        // A write that may wait is never refused as busy.
        let result = commit(&shared, pending.batch, records, false).map_err(|c| match c {
            Commit::Failed(e) => e,
            Commit::Busy => WriteError::Db("RocksDB refused the write as busy".into()),
        });
        for ack in pending.acks {
            let _ = ack.send(result.clone());
        }
    }
}
