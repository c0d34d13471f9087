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
//!
//! Every write outcome feeds the [recording state machine](crate::recording). While
//! writes fail (a full disk, say), a recovery thread probes once a second; when writes
//! still fail after [`REOPEN_AFTER`] although the filesystem has room again, it reopens
//! the database ([`Store::reopen`]), because RocksDB does not always leave its error
//! state by itself. The first write that works again ends the outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;
use tokio::sync::{mpsc, oneshot};

use crate::recording::{RecordingChange, RecordingMonitor, RecordingStatus, WriterStats};
use crate::records::Record;
use crate::store::{Store, now_ms};

/// How often the recovery thread looks at a degraded store.
pub const RECOVERY_TICK: Duration = Duration::from_secs(1);
/// Writes failing for this long (with room on the filesystem) get the store reopened.
pub const REOPEN_AFTER: Duration = Duration::from_secs(2);
/// Longest pause between two reopen attempts (the pause doubles after each).
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A reopen is tried only with at least this much free space (and as much as the
/// live WAL, which the reopen replays and flushes).
const REOPEN_MIN_FREE: u64 = 4 << 20;
/// How long a reopen waits for operations in flight to let go of the database.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

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

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    records_written: AtomicU64,
    records_failed: AtomicU64,
    records_dropped: AtomicU64,
    bytes_written: AtomicU64,
    reopens: AtomicU64,
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

/// Who hears about [`RecordingChange`]s besides the log.
type RecordingListener = Box<dyn Fn(&RecordingChange) + Send + Sync>;

/// The recording state shared by every write path: a lock-free "degraded?" flag in
/// front of the state machine, which is locked only for failures and for the first
/// success after them.
#[derive(Default)]
struct Recording {
    degraded: AtomicBool,
    monitor: Mutex<RecordingMonitor>,
    listener: Mutex<Option<RecordingListener>>,
}

impl Recording {
    fn written(&self, dir: &std::path::Path) {
        if self.degraded.load(Ordering::Relaxed) {
            self.update(dir, |m| m.written(now_ms()));
        }
    }

    fn failed(&self, dir: &std::path::Path, records: u64, error: &str) {
        self.update(dir, |m| m.failed(now_ms(), records, error));
    }

    /// Applies one transition; logs and announces a change while still holding the
    /// lock, so listeners hear changes in the order they happened.
    fn update(
        &self,
        dir: &std::path::Path,
        step: impl FnOnce(&mut RecordingMonitor) -> Option<RecordingChange>,
    ) {
        let mut monitor = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
        let change = step(&mut monitor);
        self.degraded
            .store(monitor.is_degraded(), Ordering::Relaxed);
        let Some(change) = change else { return };
        log_change(dir, &change);
        if let Some(listener) = &*self.listener.lock().unwrap_or_else(|p| p.into_inner()) {
            listener(&change);
        }
    }

    fn status(&self) -> RecordingStatus {
        self.monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status()
            .clone()
    }
}

/// `2026-11-30T12:00:00.123Z` for `ms` since the epoch.
fn utc(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms after the epoch"))
}

fn log_change(dir: &std::path::Path, change: &RecordingChange) {
    match change {
        RecordingChange::Stopped { at_ms, error } => tracing::error!(
            since = %utc(*at_ms),
            "recording stopped: cannot write to the capture database in {} ({error}). \
             Traffic is still relayed, but not recorded. frametap resumes recording by \
             itself as soon as writes work again: free disk space if the disk is full",
            dir.display()
        ),
        RecordingChange::Resumed(outage) => tracing::warn!(
            stopped_at = %utc(outage.stopped_at_ms),
            resumed_at = %utc(outage.resumed_at_ms),
            records_lost = outage.records_lost,
            "recording resumed after {:.1} s: {} records were lost between {} and {}",
            outage.duration().as_secs_f64(),
            outage.records_lost,
            utc(outage.stopped_at_ms),
            utc(outage.resumed_at_ms),
        ),
    }
}

struct Shared {
    store: Store,
    stats: Stats,
    recording: Recording,
    closing: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The recovery thread, and the sender whose drop stops it.
    recovery: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
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
            recording: Recording::default(),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
            recovery: Mutex::new(None),
            queue_full_warn: RateLimit::new(Duration::from_secs(1)),
            write_failed_warn: RateLimit::new(Duration::from_secs(1)),
        });
        let s2 = shared.clone();
        let handle = std::thread::Builder::new()
            .name("frametap-writer".into())
            .spawn(move || run(rx, s2))
            .expect("cannot spawn the capture writer thread");
        *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let (stop, stopped) = std::sync::mpsc::channel();
        let weak = Arc::downgrade(&shared);
        let recovery = std::thread::Builder::new()
            .name("frametap-recovery".into())
            .spawn(move || recovery_loop(weak, stopped))
            .expect("cannot spawn the capture recovery thread");
        *shared.recovery.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, recovery));
        Writer { tx, shared }
    }

    /// Whether records are being stored, and the current or last outage.
    pub fn recording(&self) -> RecordingStatus {
        self.shared.recording.status()
    }

    /// Calls `listener` on every [`RecordingChange`] (replacing any earlier listener),
    /// in order, on the thread whose write caused it: it must not block.
    pub fn on_recording_change(&self, listener: impl Fn(&RecordingChange) + Send + Sync + 'static) {
        *self
            .shared
            .recording
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(listener));
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
        if let Err(e) = put_records(shared, &mut batch, &records) {
            return WrittenNow::Done(Err(e));
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
            reopens: s.reopens.load(Ordering::Relaxed),
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
        drop(guard);
        let recovery = self
            .shared
            .recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((stop, handle)) = recovery {
            drop(stop);
            if handle.join().is_err() {
                tracing::error!("capture recovery thread panicked");
            }
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
    fn add(&mut self, shared: &Shared, req: Request) {
        match put_records(shared, &mut self.batch, &req.records) {
            Ok(()) => {
                self.records += req.records.len();
                self.acks.push(req.ack);
            }
            Err(e) => {
                let _ = req.ack.send(Err(e));
            }
        }
    }
}

/// Adds `records` to `batch`; adds nothing if one of them cannot be encoded. Failures
/// are counted (the store being closed for a reopen counts as a failed write).
fn put_records(
    shared: &Shared,
    batch: &mut WriteBatch,
    records: &[Record],
) -> Result<(), WriteError> {
    let n = records.len() as u64;
    let db = shared.store.db().map_err(|e| db_failed(shared, n, &e))?;
    let encoded = records
        .iter()
        .map(|r| {
            let (name, key, value) = Store::encode_record(r)?;
            Ok((crate::store::cf(&db, name)?, key, value))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(|e| encode_failed(&shared.stats, records.len(), &e))?;
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
            shared.recording.written(shared.store.dir());
            Ok(())
        }
        Err(e) if no_wait && crate::store::is_busy(&e) => Err(Commit::Busy),
        Err(e) => Err(Commit::Failed(db_failed(shared, records, &e))),
    }
}

/// Counts and reports a write of `records` records that the database refused.
fn db_failed(shared: &Shared, records: u64, e: &anyhow::Error) -> WriteError {
    let error = format!("{e:#}");
    shared
        .stats
        .records_failed
        .fetch_add(records, Ordering::Relaxed);
    shared.recording.failed(shared.store.dir(), records, &error);
    if let Some(suppressed) = shared.write_failed_warn.check() {
        tracing::warn!(
            suppressed,
            "capture writer: writing {records} records failed (traffic keeps being relayed, \
             but is not recorded): {error}"
        );
    }
    WriteError::Db(error)
}

fn handle_msg(msg: Msg, pending: &mut Pending, rx: &mut mpsc::Receiver<Msg>, shared: &Shared) {
    match msg {
        Msg::Write(req) => pending.add(shared, req),
        // Stop accepting; what is still queued is received (and written) by the loop
        // in `run` before `blocking_recv` returns `None`.
        Msg::Shutdown => rx.close(),
    }
}

fn run(mut rx: mpsc::Receiver<Msg>, shared: Arc<Shared>) {
    while let Some(first) = rx.blocking_recv() {
        let mut pending = Pending::new();
        handle_msg(first, &mut pending, &mut rx, &shared);
        while !pending.full() {
            match rx.try_recv() {
                Ok(msg) => handle_msg(msg, &mut pending, &mut rx, &shared),
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

/// While recording is degraded: probes once a [`RECOVERY_TICK`] whether writes work
/// again (RocksDB may recover by itself), and reopens the store when they still fail
/// [`REOPEN_AFTER`] the outage began (then after a doubling pause) although there is
/// room on the filesystem. Ends when `stop` is dropped or the writer is gone.
fn recovery_loop(weak: Weak<Shared>, stop: std::sync::mpsc::Receiver<()>) {
    let mut backoff = REOPEN_AFTER;
    let mut next_reopen: Option<Instant> = None;
    let mut told_full = false;
    loop {
        match stop.recv_timeout(RECOVERY_TICK) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(shared) = weak.upgrade() else { return };
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        if !shared.recording.degraded.load(Ordering::Relaxed) {
            (backoff, next_reopen, told_full) = (REOPEN_AFTER, None, false);
            continue;
        }
        let store = &shared.store;
        let dir = store.dir();
        if probe(&shared) {
            continue;
        }
        let now = Instant::now();
        if now < *next_reopen.get_or_insert(now + backoff) {
            continue;
        }
        let needed = REOPEN_MIN_FREE.max(store.live_wal_bytes());
        match store.free_bytes() {
            Ok(free) if free >= needed => told_full = false,
            Ok(free) => {
                if !told_full {
                    tracing::warn!(
                        "recording stays stopped until {} has room: {free} bytes free, \
                         {needed} needed to reopen the capture database",
                        dir.display()
                    );
                    told_full = true;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot tell how much space is free: {e:#}");
                continue;
            }
        }
        tracing::info!(
            "writes still fail although {} has room again: reopening the capture database",
            dir.display()
        );
        match store.reopen(REOPEN_WAIT) {
            Ok(()) => {
                shared.stats.reopens.fetch_add(1, Ordering::Relaxed);
                if !probe(&shared) {
                    tracing::warn!("the capture database reopened, but writes still fail");
                }
            }
            Err(e) => tracing::warn!(
                "cannot reopen the capture database: {e:#}; trying again in {backoff:?}"
            ),
        }
        next_reopen = Some(Instant::now() + backoff);
        backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
    }
}

/// One probe write; a success ends the outage. `true` if writes work.
fn probe(shared: &Shared) -> bool {
    match shared.store.probe_write() {
        Ok(true) => {
            shared.recording.written(shared.store.dir());
            true
        }
        Ok(false) | Err(_) => false,
    }
}
