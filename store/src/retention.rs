//! Retention: deleting old traffic by age ([`StoreOptions::max_age`]) and by database
//! size ([`StoreOptions::max_bytes`]).
//!
//! Everything but the agent's `meta` is keyed by `TrafficId`, which starts with the
//! creation time, so "older than T" is the key range `[.., TrafficId::new(T, 0))` in
//! those column families (traffic, WebSocket records, frames, bodies) and is removed
//! with range deletes.
//!
//! One exception keeps the data consistent: a WebSocket connection created before the
//! cutoff that is still open (a [`crate::WsOpen`] but no [`crate::WsClose`]) and was
//! active after the cutoff (its last frame, or its opening, is newer) is *kept*: its
//! traffic entry and `ws` records stay, and only its frames older than the cutoff are
//! deleted, exactly like [`Store::delete_frames`] (watermark + range delete), so the
//! agent can keep appending frames and [`Store::frame_count`] stays right. Unclosed
//! connections idle for longer than the cutoff are treated as dead and deleted whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use rocksdb::{DB, WriteBatch};

use crate::codec::{WS_CLOSE, WS_OPEN};
use crate::ids::{FrameId, TrafficId};
use crate::store::{
    CF_FRAMES, CF_TRAFFIC, CF_WS, Inner, Store, StoreOptions, TRAFFIC_COLUMN_FAMILIES,
    bounded_iter, cf, deletion_watermark, frame_in, last_seq, now_ms,
};

/// What one [`Store::enforce_retention`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Cutoff applied because of `max_age` (unix ms), if any.
    pub age_cutoff_ms: Option<u64>,
    /// Final cutoff applied because of `max_bytes` (unix ms), if size had to be reduced.
    pub size_cutoff_ms: Option<u64>,
    /// Traffic entries deleted.
    pub traffic_deleted: u64,
    /// WebSocket connections deleted whole.
    pub connections_deleted: u64,
    /// Frames deleted (those of connections with a `ws` record).
    pub frames_deleted: u64,
    /// Old but still-open connections kept, with their old frames trimmed.
    pub connections_trimmed: u64,
    /// Database size before / after the pass (only measured when `max_bytes` is set).
    pub size_before: Option<u64>,
    pub size_after: Option<u64>,
    /// Number of size-driven deletion steps.
    pub size_steps: u32,
}

impl RetentionReport {
    /// `true` if anything was deleted.
    pub fn deleted_anything(&self) -> bool {
        self.traffic_deleted + self.connections_deleted + self.frames_deleted > 0
    }

    fn add(&mut self, d: &DeleteStats) {
        self.traffic_deleted += d.traffic;
        self.connections_deleted += d.connections;
        self.frames_deleted += d.frames;
        self.connections_trimmed += d.trimmed;
    }
}

/// Counts of one [`Store::delete_before`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteStats {
    pub traffic: u64,
    pub connections: u64,
    pub frames: u64,
    pub trimmed: u64,
}

impl DeleteStats {
    fn any(&self) -> bool {
        self.traffic + self.connections + self.frames > 0
    }
}

#[derive(Default)]
struct WsSeen {
    open_ts: Option<u64>,
    closed: bool,
}

/// Maximum number of size-driven steps per pass (each deletes ~10% of the time span).
const MAX_SIZE_STEPS: u32 = 10;

impl Store {
    /// Applies `max_age` and `max_bytes` (primary only). `now_ms` is the current unix
    /// time in milliseconds.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<RetentionReport> {
        self.ensure_primary("enforce retention")?;
        let StoreOptions {
            max_age, max_bytes, ..
        } = self.inner.options.clone();
        let mut report = RetentionReport::default();

        if let Some(age) = max_age {
            let cutoff = now_ms.saturating_sub(age.as_millis() as u64);
            report.age_cutoff_ms = Some(cutoff);
            let d = self.delete_before(cutoff)?;
            report.add(&d);
            if d.any() {
                self.compact_before(cutoff)?;
            }
        }

        if let Some(max) = max_bytes {
            let mut size = self.size_bytes()?;
            report.size_before = Some(size);
            if size > max
                && let Some(oldest) = self.oldest_timestamp_ms()?
                && oldest < now_ms
            {
                let step = ((now_ms - oldest) / 10).max(1);
                let mut cutoff = oldest;
                while size > max && cutoff < now_ms && report.size_steps < MAX_SIZE_STEPS {
                    cutoff = cutoff.saturating_add(step).min(now_ms);
                    let d = self.delete_before(cutoff)?;
                    report.add(&d);
                    report.size_steps += 1;
                    report.size_cutoff_ms = Some(cutoff);
                    // Flush so deleted memtable data reaches SST files and the live WAL
                    // shrinks, then compact the range so the space is really freed.
                    self.flush()?;
                    self.compact_before(cutoff)?;
                    size = self.size_bytes()?;
                }
            }
            report.size_after = Some(size);
        }
        Ok(report)
    }

    /// Creation time of the oldest traffic id present in any column family.
    fn oldest_timestamp_ms(&self) -> Result<Option<u64>> {
        let mut oldest: Option<u64> = None;
        let db = self.db()?;
        for name in TRAFFIC_COLUMN_FAMILIES {
            let mut it = bounded_iter(&db, name, None, None)?;
            it.seek_to_first();
            if let Some(id) = it.key().and_then(TrafficId::from_key_prefix) {
                let ts = id.timestamp_ms();
                oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
            }
            it.status()?;
        }
        Ok(oldest)
    }

    fn any_before(db: &DB, name: &str, end: &[u8]) -> Result<bool> {
        let mut it = bounded_iter(db, name, None, Some(end))?;
        it.seek_to_first();
        let found = it.valid();
        it.status()?;
        Ok(found)
    }

    fn compact_before(&self, cutoff_ms: u64) -> Result<()> {
        let end = TrafficId::new(cutoff_ms, 0).to_be_bytes();
        let db = self.db()?;
        for name in TRAFFIC_COLUMN_FAMILIES {
            db.compact_range_cf(cf(&db, name)?, None::<&[u8]>, Some(&end[..]));
        }
        Ok(())
    }

    /// Last seq in `[first, last]` whose frame is older than `cutoff_ms` (binary search
    /// by point gets; frames are contiguous and in capture order). Missing frames count
    /// as old.
    fn last_seq_before(
        db: &DB,
        traffic: TrafficId,
        first: u64,
        last: u64,
        cutoff_ms: u64,
    ) -> Result<Option<u64>> {
        let is_old = |seq: u64| -> Result<bool> {
            Ok(frame_in(db, &FrameId::new(traffic, seq))?
                .is_none_or(|f| f.timestamp_ms < cutoff_ms))
        };
        if first > last || !is_old(first)? {
            return Ok(None);
        }
        // Invariant: lo is old; everything after hi is new.
        let (mut lo, mut hi) = (first, last);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if is_old(mid)? {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Some(lo))
    }

    /// Deletes all traffic, connections and frames whose traffic id was created before
    /// `cutoff_ms` (primary only), except still-active open connections, whose old
    /// frames are trimmed instead (see the module docs).
    pub fn delete_before(&self, cutoff_ms: u64) -> Result<DeleteStats> {
        self.ensure_primary("delete traffic")?;
        let _guard = self.admin_lock();
        let mut stats = DeleteStats::default();
        let end = TrafficId::new(cutoff_ms, 0).to_be_bytes();
        let db = self.db()?;
        let mut any = false;
        for name in TRAFFIC_COLUMN_FAMILIES {
            any |= Store::any_before(&db, name, &end)?;
        }
        if !any {
            return Ok(stats);
        }

        // Connections in the range and whether they are closed.
        let mut conns: BTreeMap<TrafficId, WsSeen> = BTreeMap::new();
        {
            let mut it = bounded_iter(&db, CF_WS, None, Some(&end))?;
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if let (Some(id), Some(&kind)) = (TrafficId::from_key_prefix(k), k.get(8)) {
                    let seen = conns.entry(id).or_default();
                    match kind {
                        WS_OPEN => {
                            seen.open_ts = Some(
                                serde_json::from_slice::<crate::WsOpen>(v)
                                    .map(|o| o.timestamp_ms)
                                    .unwrap_or(0),
                            );
                        }
                        WS_CLOSE => seen.closed = true,
                        _ => {}
                    }
                }
                it.next();
            }
            it.status()?;
        }

        // Split them into kept (open and active after the cutoff) and deleted.
        let mut keep: Vec<TrafficId> = Vec::new();
        let mut batch = WriteBatch::default();
        for (&id, seen) in &conns {
            let last = last_seq(&db, CF_FRAMES, id)?;
            let watermark = deletion_watermark(&db, id)?;
            if let (Some(open_ts), false) = (seen.open_ts, seen.closed) {
                let last_activity = match last {
                    Some(seq) if seq > watermark => frame_in(&db, &FrameId::new(id, seq))?
                        .map_or(open_ts, |f| f.timestamp_ms.max(open_ts)),
                    _ => open_ts,
                };
                if last_activity >= cutoff_ms {
                    keep.push(id);
                    stats.trimmed += 1;
                    if let Some(last) = last
                        && let Some(upto) =
                            Store::last_seq_before(&db, id, watermark + 1, last, cutoff_ms)?
                    {
                        Store::add_frame_deletion(&db, &mut batch, id, upto)?;
                        stats.frames += upto - watermark;
                    }
                    continue;
                }
            }
            stats.connections += 1;
            stats.frames += last.unwrap_or(0).saturating_sub(watermark);
        }

        // Count the traffic entries going away.
        {
            let mut it = bounded_iter(&db, CF_TRAFFIC, None, Some(&end))?;
            it.seek_to_first();
            while let Some(k) = it.key() {
                if let Some(id) = TrafficId::from_key_prefix(k)
                    && keep.binary_search(&id).is_err()
                {
                    stats.traffic += 1;
                }
                it.next();
            }
            it.status()?;
        }

        // Range-delete [.., end) in every column family, skipping the kept connections.
        let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut start: Vec<u8> = Vec::new();
        for id in &keep {
            let k = id.to_be_bytes().to_vec();
            if start < k {
                ranges.push((start, k));
            }
            // id < cutoff id, so id + 1 cannot overflow.
            start = (id.0 + 1).to_be_bytes().to_vec();
        }
        if start.as_slice() < end.as_slice() {
            ranges.push((start, end.to_vec()));
        }
        for name in TRAFFIC_COLUMN_FAMILIES {
            let cf = cf(&db, name)?;
            for (from, to) in &ranges {
                batch.delete_range_cf(cf, from, to);
            }
        }
        drop(db);
        self.write_batch(batch)?;
        Ok(stats)
    }
}

/// Handle of the thread started by [`spawn_retention`].
#[derive(Debug)]
pub struct RetentionHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RetentionHandle {
    /// Stops the thread and waits for it (it finishes a pass in progress first).
    pub fn stop(mut self) {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn signal(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for RetentionHandle {
    /// Asks the thread to stop without waiting for it.
    fn drop(&mut self) {
        self.signal();
    }
}

/// Starts a thread that runs [`Store::enforce_retention`] now and then every
/// `interval`, until the handle is stopped/dropped or every clone of `store` is dropped
/// (the thread only holds a weak reference between passes).
pub fn spawn_retention(store: Store, interval: Duration) -> RetentionHandle {
    let weak: Weak<Inner> = Arc::downgrade(&store.inner);
    drop(store);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("frametap-retention".into())
        .spawn(move || retention_loop(weak, stop2, interval))
        .expect("cannot spawn the retention thread");
    RetentionHandle {
        stop,
        thread: Some(thread),
    }
}

fn retention_loop(weak: Weak<Inner>, stop: Arc<AtomicBool>, interval: Duration) {
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let store = Store { inner };
        match store.enforce_retention(now_ms()) {
            Ok(r) if r.deleted_anything() => tracing::info!(?r, "retention deleted old data"),
            Ok(_) => {}
            Err(e) => tracing::warn!("retention pass failed: {e:#}"),
        }
        drop(store);
        let deadline = Instant::now() + interval;
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}
