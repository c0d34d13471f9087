//! [`Store`]: opening RocksDB as primary (agent) or secondary (API), reads, direct
//! writes and frame deletion. Retention lives in [`crate::retention`], group commit in
//! [`crate::writer`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRawIterator, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use crate::codec::{self, TUNNEL_END, WS_CLOSE, WS_OPEN};
use crate::ids::{FrameId, TrafficId};
use crate::records::{FrameRecord, Record, TrafficEntry, TunnelEnd, WsClose, WsConnection, WsOpen};

/// Column family of [`TrafficEntry`] records (key: `TrafficId`).
pub const CF_TRAFFIC: &str = "traffic";
/// Column family of per-connection records: [`WsOpen`] / [`WsClose`] and
/// [`TunnelEnd`] (key: `TrafficId` + kind).
pub const CF_WS: &str = "ws";
/// Column family of [`FrameRecord`]s (key: `TrafficId` + seq).
pub const CF_FRAMES: &str = "frames";
/// Column family of frame deletion watermarks (key: `TrafficId` + seq).
pub const CF_DELETIONS: &str = "deletions";
/// Column family of [`crate::BodyChunk`]s (key: `TrafficId` + which body + seq).
pub const CF_BODIES: &str = "bodies";
/// Column family of the agent's own state (key: kind + version): its rule sets.
pub const CF_META: &str = "meta";
/// Every column family, all created when the primary opens.
pub const COLUMN_FAMILIES: [&str; 6] = [
    CF_TRAFFIC,
    CF_WS,
    CF_FRAMES,
    CF_DELETIONS,
    CF_BODIES,
    CF_META,
];
/// The column families whose keys start with a [`TrafficId`]: what retention and
/// traffic deletion go through.
pub const TRAFFIC_COLUMN_FAMILIES: [&str; 5] =
    [CF_TRAFFIC, CF_WS, CF_FRAMES, CF_DELETIONS, CF_BODIES];

/// Tuning and retention settings of a primary store. Secondaries ignore them.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Delete traffic (and its connections and frames) older than this.
    pub max_age: Option<Duration>,
    /// Keep the database (SST files + memtables + live WAL) below this many bytes by
    /// deleting the oldest traffic.
    pub max_bytes: Option<u64>,
    /// Memtable size of the `frames` column family (the others use at most 8 MiB).
    /// Smaller memtables keep secondaries' catch-up cheap.
    pub write_buffer_size: usize,
    /// Once the live WAL exceeds this, RocksDB flushes the memtables holding it.
    pub max_total_wal_size: u64,
    /// How long obsolete WAL files are kept for secondaries to finish reading them.
    /// A WAL file is obsolete only once every memtable it holds has been flushed, so a
    /// secondary that misses one loses nothing (it reads the flushed files instead);
    /// the archive only covers a catch-up that is listing the directory meanwhile.
    /// Keep it short: archived files hold their page-cache pages until deleted, and
    /// every WAL file written meanwhile fills fresh pages instead of reusing theirs,
    /// which at 60 s made the WAL append cost the agent 2x (issue 15).
    pub wal_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_age: None,
            max_bytes: None,
            write_buffer_size: 32 << 20,
            max_total_wal_size: 256 << 20,
            wal_ttl: Duration::from_secs(2),
        }
    }
}

/// A connection's frame counts ([`Store::frame_totals`]). Frames are numbered from 1
/// with no gaps and deletions remove a prefix, so `recorded = deleted + stored`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameTotals {
    /// Frames recorded since the connection opened: the last sequence number.
    pub recorded: u64,
    /// Frames deleted since (`DELETE .../frames`, or trimmed by retention).
    pub deleted: u64,
    /// Frames stored now: what `/count` says.
    pub stored: u64,
}

/// Which frames [`Store::frames`] returns. `None` fields match everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameFilter {
    pub from_client: Option<bool>,
    pub opcode: Option<u8>,
}

impl FrameFilter {
    fn is_empty(&self) -> bool {
        self.from_client.is_none() && self.opcode.is_none()
    }

    fn matches(&self, from_client: bool, opcode: u8) -> bool {
        self.from_client.is_none_or(|c| c == from_client) && self.opcode.is_none_or(|o| o == opcode)
    }
}

/// How a [`Store`] was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opened {
    Primary,
    Secondary,
    /// Tests only: a read-only primary view on which every write fails.
    #[cfg_attr(not(test), allow(dead_code))]
    ReadOnly,
}

pub(crate) struct Inner {
    /// The open database; `None` only while [`Store::reopen`] replaces it (or after a
    /// reopen failed). Operations clone the `Arc` and hold no lock while they run.
    db: RwLock<Option<Arc<DB>>>,
    /// The latest sequence number seen, for [`Store::latest_sequence`] while closed.
    last_sequence: AtomicU64,
    pub(crate) dir: PathBuf,
    secondary: bool,
    /// Opened by [`Store::open_primary`], so [`Store::reopen`] can open it again.
    reopenable: bool,
    pub(crate) options: StoreOptions,
    /// Serialises deletions (delete_frames, retention) so watermark keys are written
    /// once each.
    admin: Mutex<()>,
    /// Test-only failure injection: number of upcoming batch writes that fail.
    #[cfg(test)]
    pub(crate) fail_writes: std::sync::atomic::AtomicU64,
}

/// A frametap RocksDB database, opened as primary (agent: reads and writes) or as
/// secondary (API: reads; call [`Store::catch_up`] to see new writes).
///
/// Cheap to clone (an `Arc`). The database closes when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("secondary", &self.inner.secondary)
            .finish()
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it): the timestamps
/// of every record.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The smallest key greater than every key starting with `prefix` (`None` if there is
/// none, i.e. the prefix is all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The handle of column family `name` in `db`.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| anyhow!("column family {name} missing"))
}

/// A raw iterator over `cf` restricted to `[lower, upper)`.
pub(crate) fn bounded_iter<'a>(
    db: &'a DB,
    name: &str,
    lower: Option<&[u8]>,
    upper: Option<&[u8]>,
) -> Result<DBRawIterator<'a>> {
    let handle = cf(db, name)?;
    let mut ro = ReadOptions::default();
    if let Some(l) = lower {
        ro.set_iterate_lower_bound(l.to_vec());
    }
    if let Some(u) = upper {
        ro.set_iterate_upper_bound(u.to_vec());
    }
    Ok(db.raw_iterator_cf_opt(handle, ro))
}

/// Largest seq stored under `traffic` in `cf` (`frames` or `deletions`): one reverse
/// seek.
pub(crate) fn last_seq(db: &DB, name: &str, traffic: TrafficId) -> Result<Option<u64>> {
    let prefix = traffic.to_be_bytes();
    let upper = prefix_end(&prefix);
    let mut it = bounded_iter(db, name, Some(&prefix), upper.as_deref())?;
    it.seek_to_last();
    let seq = match it.key() {
        Some(k) => Some(codec::parse_frame_key(k)?.seq),
        None => None,
    };
    it.status()?;
    Ok(seq)
}

/// Seq up to which the frames of `traffic` were deleted (0 if never).
pub(crate) fn deletion_watermark(db: &DB, traffic: TrafficId) -> Result<u64> {
    Ok(last_seq(db, CF_DELETIONS, traffic)?.unwrap_or(0))
}

/// One frame, or `None` if it was never stored or was deleted. One point get.
pub(crate) fn frame_in(db: &DB, id: &FrameId) -> Result<Option<FrameRecord>> {
    match db.get_pinned_cf(cf(db, CF_FRAMES)?, codec::frame_key(*id))? {
        None => Ok(None),
        Some(v) => Ok(Some(
            codec::decode_frame(*id, &v).with_context(|| format!("decoding frame {id}"))?,
        )),
    }
}

/// Frame payloads from this size on are stored in blob files.
const MIN_BLOB_SIZE: u64 = 4096;
const BLOB_FILE_SIZE: u64 = 64 << 20;
/// Not among rust-rocksdb's named properties.
const TOTAL_BLOB_FILE_SIZE: &str = "rocksdb.total-blob-file-size";

fn cf_options(name: &str, o: &StoreOptions) -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    let wbs = if name == CF_FRAMES {
        o.write_buffer_size
    } else {
        o.write_buffer_size.min(8 << 20)
    };
    opts.set_write_buffer_size(wbs.max(64 << 10));
    opts.set_level_compaction_dynamic_level_bytes(true);
    if name == CF_FRAMES {
        // Large payloads go to blob files, written once at flush, so that compactions
        // move keys and references instead of rewriting (and re-compressing) every
        // payload at every level: with payloads in the SST files, compaction took
        // most of the agent's CPU once a few GB were recorded (BENCHMARKS.md).
        // Blob files are not compressed: LZ4 over every recorded byte cost more CPU
        // than relaying it. No blob garbage collection: retention deletes the oldest
        // traffic, whose blob files are the oldest ones, and a file goes once no
        // frame refers to it; and relocating blobs made secondaries that were open
        // meanwhile keep seeing deleted frames after catching up (RocksDB 11.8).
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(MIN_BLOB_SIZE);
        opts.set_blob_file_size(BLOB_FILE_SIZE);
        opts.set_blob_compression_type(DBCompressionType::None);
        opts.set_enable_blob_gc(false);
    }
    opts
}

/// Whether a write failed only because RocksDB would have had to wait (see
/// [`Store::write_batch_opt`]).
pub(crate) fn is_busy(e: &anyhow::Error) -> bool {
    e.downcast_ref::<rocksdb::Error>()
        .is_some_and(|e| e.kind() == rocksdb::ErrorKind::Incomplete)
}

/// Whether files in `dir` can be written with O_DIRECT. tmpfs, for one, refuses it, and
/// RocksDB would then fail every flush.
fn supports_direct_io(dir: &Path) -> bool {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    const BLOCK: usize = 4096;
    let probe = dir.join(".direct-io-probe");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .and_then(|mut file| {
            // O_DIRECT needs a buffer aligned to the logical block size.
            let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).expect("valid layout");
            // SAFETY: the layout has a non-zero size; the buffer is zeroed, used as a
            // slice of exactly its size, and freed with the same layout.
            unsafe {
                let buf = std::alloc::alloc_zeroed(layout);
                if buf.is_null() {
                    return Err(std::io::ErrorKind::OutOfMemory.into());
                }
                let result = file.write_all(std::slice::from_raw_parts(buf, BLOCK));
                std::alloc::dealloc(buf, layout);
                result
            }
        });
    let _ = std::fs::remove_file(&probe);
    written.is_ok()
}

fn describe_primary_open_error(dir: &Path, e: rocksdb::Error) -> anyhow::Error {
    let msg = e.into_string();
    let lower = msg.to_ascii_lowercase();
    let d = dir.display();
    if lower.contains("lock") {
        anyhow!(
            "data dir {d} is locked by another frametap-agent (or another process opened it \
             as primary): stop that process or give this agent a different data dir ({msg})"
        )
    } else if lower.contains("permission denied") || lower.contains("read-only file system") {
        anyhow!("data dir {d} is not writable: fix its permissions or choose another ({msg})")
    } else if lower.contains("no space") {
        anyhow!("no space left for data dir {d}: free disk space or lower max_bytes ({msg})")
    } else if lower.contains("corruption") {
        anyhow!(
            "data in {d} is corrupt: move the directory away to start with an empty store \
             ({msg})"
        )
    } else {
        anyhow!("cannot open RocksDB data dir {d} as primary: {msg}")
    }
}

/// Opens the RocksDB database in `dir` as primary with frametap's options (WAL on,
/// without fsync; obsolete WAL files kept for `options.wal_ttl` for secondaries).
fn open_primary_db(dir: &Path, options: &StoreOptions) -> Result<DB> {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_wal_ttl_seconds(options.wal_ttl.as_secs().max(1));
    db_opts.set_max_total_wal_size(options.max_total_wal_size);
    db_opts.set_max_background_jobs(2);
    db_opts.set_keep_log_file_num(4);
    db_opts.set_max_log_file_size(8 << 20);
    // Flushes and compactions bypass the page cache where the filesystem allows it:
    // they write each recorded byte once more, and filling fresh page-cache pages
    // costs more CPU than the disk write itself (it competes with the relay).
    if supports_direct_io(dir) {
        db_opts.set_use_direct_io_for_flush_and_compaction(true);
    } else {
        tracing::info!(
            "{} does not support O_DIRECT: flushes and compactions go through the page cache",
            dir.display()
        );
    }

    // Also open column families a newer version may have added, so opening never
    // fails on them.
    let mut names: Vec<String> = COLUMN_FAMILIES.iter().map(|s| s.to_string()).collect();
    if let Ok(existing) = DB::list_cf(&Options::default(), dir) {
        for n in existing {
            if n != "default" && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let cfs = names
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(n, cf_options(n, options)));
    DB::open_cf_descriptors(&db_opts, dir, cfs).map_err(|e| describe_primary_open_error(dir, e))
}

impl Store {
    /// Opens (creating if needed) the database in `dir` as primary: the single writer,
    /// normally the agent. Creates every column family, keeps the WAL on (without
    /// fsync) and keeps obsolete WAL files for `options.wal_ttl` for secondaries.
    pub fn open_primary(dir: &Path, options: StoreOptions) -> Result<Store> {
        // Owner-only: it holds decrypted traffic.
        crate::data_dir::create_private(dir).with_context(|| {
            format!(
                "cannot create data dir {}: check that its parent exists and is writable",
                dir.display()
            )
        })?;
        let db = open_primary_db(dir, &options)?;
        Ok(Store::from_db(db, dir, Opened::Primary, options))
    }

    /// Opens the database of a running (or stopped) primary in `primary_dir` as a
    /// read-only secondary; `secondary_dir` holds the secondary's own info logs and
    /// must differ per process. Call [`Store::catch_up`] to see newer writes.
    pub fn open_secondary(primary_dir: &Path, secondary_dir: &Path) -> Result<Store> {
        if !primary_dir.join("CURRENT").is_file() {
            bail!(
                "no frametap data in {}: start frametap-agent first, or point at the data dir \
                 it uses",
                primary_dir.display()
            );
        }
        crate::data_dir::create_private(secondary_dir).with_context(|| {
            format!(
                "cannot create secondary dir {}: check that its parent exists and is writable",
                secondary_dir.display()
            )
        })?;
        let mut db_opts = Options::default();
        // Required: the primary deletes files the secondary may still need to read.
        db_opts.set_max_open_files(-1);
        let options = StoreOptions::default();
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n, &options)));
        let db = DB::open_cf_descriptors_as_secondary(&db_opts, primary_dir, secondary_dir, cfs)
            .map_err(|e| {
                let msg = e.into_string();
                if msg.to_ascii_lowercase().contains("column famil") {
                    anyhow!(
                        "data dir {} lacks frametap's column families (written by an older \
                         frametap-agent?): start the current frametap-agent on it once, then \
                         retry ({msg})",
                        primary_dir.display()
                    )
                } else {
                    anyhow!(
                        "cannot open RocksDB data dir {} as secondary (in {}): {msg}",
                        primary_dir.display(),
                        secondary_dir.display()
                    )
                }
            })?;
        Ok(Store::from_db(db, primary_dir, Opened::Secondary, options))
    }

    fn from_db(db: DB, dir: &Path, opened: Opened, options: StoreOptions) -> Store {
        Store {
            inner: Arc::new(Inner {
                last_sequence: AtomicU64::new(db.latest_sequence_number()),
                db: RwLock::new(Some(Arc::new(db))),
                dir: dir.to_path_buf(),
                secondary: opened == Opened::Secondary,
                reopenable: opened == Opened::Primary,
                options,
                admin: Mutex::new(()),
                #[cfg(test)]
                fail_writes: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Test helper: opens a read-only (non-secondary) view, on which every write fails.
    #[cfg(test)]
    pub(crate) fn open_read_only_for_test(dir: &Path) -> Result<Store> {
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
        let db = DB::open_cf_descriptors_read_only(&Options::default(), dir, cfs, false)?;
        Ok(Store::from_db(
            db,
            dir,
            Opened::ReadOnly,
            StoreOptions::default(),
        ))
    }

    /// `true` if opened with [`Store::open_secondary`].
    pub fn is_secondary(&self) -> bool {
        self.inner.secondary
    }

    /// The (primary's) data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Secondary: replays what the primary wrote since the last catch-up (about 1 ms
    /// when idle; cost grows with unflushed data, so call it often). Primary: no-op.
    pub fn catch_up(&self) -> Result<()> {
        if self.inner.secondary {
            self.db()?
                .try_catch_up_with_primary()
                .context("catching up with the frametap-agent's database")?;
        }
        Ok(())
    }

    pub(crate) fn ensure_primary(&self, what: &str) -> Result<()> {
        if self.inner.secondary {
            bail!("cannot {what}: this store is a read-only secondary (only the agent writes)");
        }
        Ok(())
    }

    pub(crate) fn admin_lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .admin
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open database. Hold the `Arc` only for the operation at hand: a reopen
    /// waits until every clone is dropped.
    pub(crate) fn db(&self) -> Result<Arc<DB>> {
        self.inner
            .db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                anyhow!(
                    "the capture database in {} is closed while frametap reopens it after \
                     an error",
                    self.inner.dir.display()
                )
            })
    }

    /// RocksDB's latest sequence number: on the primary, that of the last write; on a
    /// secondary, that of the last write it caught up with. The difference is how far
    /// a follower is behind.
    pub fn latest_sequence(&self) -> u64 {
        let last = &self.inner.last_sequence;
        if let Ok(db) = self.db() {
            last.fetch_max(db.latest_sequence_number(), Ordering::Relaxed);
        }
        last.load(Ordering::Relaxed)
    }

    /// One frame, or `None` if it was never stored or was deleted. One point get.
    pub fn frame(&self, id: &FrameId) -> Result<Option<FrameRecord>> {
        let db = self.db()?;
        frame_in(&db, id)
    }

    /// Frames of `traffic` in capture order, starting after seq `after` (from the first
    /// if `None`), at most `limit` of those matching `filter`.
    pub fn frames(
        &self,
        traffic: TrafficId,
        after: Option<u64>,
        limit: usize,
        filter: &FrameFilter,
    ) -> Result<Vec<FrameRecord>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let start = match after {
            None => 0,
            Some(s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(out),
            },
        };
        let lower = codec::frame_key(FrameId::new(traffic, start));
        let upper = prefix_end(&traffic.to_be_bytes());
        let db = self.db()?;
        let mut it = bounded_iter(&db, CF_FRAMES, Some(&lower), upper.as_deref())?;
        it.seek(lower);
        while out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            let id = codec::parse_frame_key(k)?;
            if !filter.is_empty() {
                let (from_client, opcode) =
                    codec::peek_frame(v).with_context(|| format!("decoding frame {id}"))?;
                if !filter.matches(from_client, opcode) {
                    it.next();
                    continue;
                }
            }
            out.push(codec::decode_frame(id, v).with_context(|| format!("decoding frame {id}"))?);
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    /// Number of frames of `traffic` currently stored, in O(1): the last frame's seq
    /// minus the latest deletion watermark (two reverse seeks, no scan). Relies on seqs
    /// being contiguous from 1 and deletions always removing a prefix.
    pub fn frame_count(&self, traffic: TrafficId) -> Result<u64> {
        Ok(self.frame_totals(traffic)?.stored)
    }

    /// Frames of `traffic` recorded, deleted since (`DELETE` or retention) and stored
    /// now, in O(1) like [`Store::frame_count`].
    pub fn frame_totals(&self, traffic: TrafficId) -> Result<FrameTotals> {
        let db = self.db()?;
        let last = last_seq(&db, CF_FRAMES, traffic)?.unwrap_or(0);
        let deleted = deletion_watermark(&db, traffic)?;
        Ok(FrameTotals {
            recorded: last.max(deleted),
            deleted,
            stored: last.saturating_sub(deleted),
        })
    }

    /// One traffic entry (a connection relayed untouched completed by its end record).
    pub fn traffic(&self, id: TrafficId) -> Result<Option<TrafficEntry>> {
        let db = self.db()?;
        match db.get_pinned_cf(cf(&db, CF_TRAFFIC)?, codec::traffic_key(id))? {
            None => Ok(None),
            Some(v) => {
                let mut entry: TrafficEntry = serde_json::from_slice(&v)
                    .with_context(|| format!("decoding traffic entry {id}"))?;
                self.complete_tunnel(&mut entry)?;
                Ok(Some(entry))
            }
        }
    }

    /// The end record of the connection relayed untouched `traffic`, once it ended.
    pub fn tunnel_end(&self, traffic: TrafficId) -> Result<Option<TunnelEnd>> {
        let db = self.db()?;
        match db.get_pinned_cf(cf(&db, CF_WS)?, codec::ws_key(traffic, TUNNEL_END))? {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_slice(&v).with_context(|| {
                format!("decoding the end record of connection {traffic}")
            })?)),
        }
    }

    /// Fills in a tunnel's byte counts and duration from its end record (one point
    /// get; nothing for HTTP exchanges).
    fn complete_tunnel(&self, entry: &mut TrafficEntry) -> Result<()> {
        if entry.is_tunnel()
            && let Some(end) = self.tunnel_end(entry.id)?
        {
            entry.apply_end(&end);
        }
        Ok(())
    }

    /// Traffic entries matching `filter`, newest first: skips `offset` matches, returns
    /// at most `limit`, and counts all matches (a full scan of the `traffic` column
    /// family). Entries of connections relayed untouched are completed by their end
    /// records (the filter sees them as first written).
    pub fn traffic_page(
        &self,
        offset: usize,
        limit: usize,
        filter: impl Fn(&TrafficEntry) -> bool,
    ) -> Result<(Vec<TrafficEntry>, u64)> {
        let db = self.db()?;
        let mut it = bounded_iter(&db, CF_TRAFFIC, None, None)?;
        it.seek_to_last();
        let mut page = Vec::new();
        let mut total: u64 = 0;
        while let Some(v) = it.value() {
            let entry: TrafficEntry = serde_json::from_slice(v).with_context(|| {
                let id = it.key().and_then(TrafficId::from_key_prefix);
                format!("decoding traffic entry {id:?}")
            })?;
            if filter(&entry) {
                if total >= offset as u64 && page.len() < limit {
                    page.push(entry);
                }
                total += 1;
            }
            it.prev();
        }
        it.status()?;
        for entry in &mut page {
            self.complete_tunnel(entry)?;
        }
        Ok((page, total))
    }

    /// The WebSocket connection `traffic` (`None` if no [`WsOpen`] was recorded).
    pub fn ws_connection(&self, traffic: TrafficId) -> Result<Option<WsConnection>> {
        let db = self.db()?;
        let cf = cf(&db, CF_WS)?;
        let Some(open) = db.get_pinned_cf(cf, codec::ws_key(traffic, WS_OPEN))? else {
            return Ok(None);
        };
        let open: WsOpen = serde_json::from_slice(&open)
            .with_context(|| format!("decoding ws open record {traffic}"))?;
        let close: Option<WsClose> = match db.get_pinned_cf(cf, codec::ws_key(traffic, WS_CLOSE))? {
            None => None,
            Some(v) => Some(
                serde_json::from_slice(&v)
                    .with_context(|| format!("decoding ws close record {traffic}"))?,
            ),
        };
        Ok(Some(WsConnection::new(open, close)))
    }

    /// The column family, key and value of `record` (JSON, frame codec or raw
    /// bytes, see [`crate::codec`]).
    pub(crate) fn encode_record(record: &Record) -> Result<(&'static str, Key, Vec<u8>)> {
        Ok(match record {
            Record::Traffic(t) => (
                CF_TRAFFIC,
                Key::new(&codec::traffic_key(t.id)),
                serde_json::to_vec(t)?,
            ),
            Record::WsOpen(o) => (
                CF_WS,
                Key::new(&codec::ws_key(o.traffic, WS_OPEN)),
                serde_json::to_vec(o)?,
            ),
            Record::WsClose(c) => (
                CF_WS,
                Key::new(&codec::ws_key(c.traffic, WS_CLOSE)),
                serde_json::to_vec(c)?,
            ),
            Record::TunnelEnd(e) => (
                CF_WS,
                Key::new(&codec::ws_key(e.traffic, TUNNEL_END)),
                serde_json::to_vec(e)?,
            ),
            Record::Frame(f) => (
                CF_FRAMES,
                Key::new(&codec::frame_key(f.id())),
                codec::encode_frame(f),
            ),
            Record::Body(b) => (
                CF_BODIES,
                Key::new(&codec::body_key(b.traffic, b.of, b.seq)),
                b.data.clone(),
            ),
        })
    }

    /// Writes one batch (WAL on, no fsync). Once this returns `Ok` the batch is in the
    /// WAL (OS page cache): it survives the process being killed.
    pub(crate) fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        self.write_batch_opt(batch, false)
    }

    /// [`Store::write_batch`]; with `no_wait`, RocksDB refuses the batch with
    /// [`is_busy`] instead of waiting out a write stall or slowdown.
    pub(crate) fn write_batch_opt(&self, batch: WriteBatch, no_wait: bool) -> Result<()> {
        self.ensure_primary("write")?;
        #[cfg(test)]
        {
            use std::sync::atomic::Ordering;
            let f = &self.inner.fail_writes;
            if f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                bail!("injected write failure");
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        wo.disable_wal(false);
        wo.set_no_slowdown(no_wait);
        self.db()?.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Writes `records` in one batch, bypassing the [`crate::Writer`] (primary only).
    pub fn write(&self, records: &[Record]) -> Result<()> {
        self.ensure_primary("write")?;
        let mut batch = WriteBatch::default();
        let db = self.db()?;
        for r in records {
            let (name, key, value) = Store::encode_record(r)?;
            batch.put_cf(cf(&db, name)?, key, value);
        }
        drop(db);
        self.write_batch(batch)
    }

    /// Adds "frames of `traffic` up to and including `upto` are deleted" to `batch`: a
    /// watermark key in `deletions` and a range delete in `frames`.
    pub(crate) fn add_frame_deletion(
        db: &DB,
        batch: &mut WriteBatch,
        traffic: TrafficId,
        upto: u64,
    ) -> Result<()> {
        let marker = codec::frame_key(FrameId::new(traffic, upto));
        batch.put_cf(cf(db, CF_DELETIONS)?, marker, now_ms().to_be_bytes());
        let from = codec::frame_key(FrameId::new(traffic, 0)).to_vec();
        let to = match upto.checked_add(1) {
            Some(next) => codec::frame_key(FrameId::new(traffic, next)).to_vec(),
            None => prefix_end(&traffic.to_be_bytes()).unwrap_or_else(|| vec![0xff; 17]),
        };
        batch.delete_range_cf(cf(db, CF_FRAMES)?, from, to);
        Ok(())
    }

    /// Deletes every frame of `traffic` stored so far (primary only) and returns how
    /// many were deleted. Frames recorded afterwards (higher seqs) are kept and counted
    /// by [`Store::frame_count`].
    pub fn delete_frames(&self, traffic: TrafficId) -> Result<u64> {
        self.ensure_primary("delete frames")?;
        let _guard = self.admin_lock();
        let db = self.db()?;
        let Some(last) = last_seq(&db, CF_FRAMES, traffic)? else {
            return Ok(0);
        };
        let watermark = deletion_watermark(&db, traffic)?;
        if last <= watermark {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        Store::add_frame_deletion(&db, &mut batch, traffic, last)?;
        drop(db);
        self.write_batch(batch)
            .with_context(|| format!("deleting frames of {traffic}"))?;
        Ok(last - watermark)
    }

    /// Approximate on-disk size: SST and blob files and memtables of every column
    /// family, and the live (not yet archived) WAL files. Archived WAL files, kept
    /// `wal_ttl` for secondaries, are not counted.
    pub fn size_bytes(&self) -> Result<u64> {
        let db = self.db()?;
        let mut total = 0u64;
        for name in COLUMN_FAMILIES {
            let cf = cf(&db, name)?;
            for prop in [
                rocksdb::properties::TOTAL_SST_FILES_SIZE,
                rocksdb::properties::CUR_SIZE_ALL_MEM_TABLES,
            ] {
                total += db.property_int_value_cf(cf, prop)?.unwrap_or(0);
            }
            total += db
                .property_int_value_cf(cf, TOTAL_BLOB_FILE_SIZE)?
                .unwrap_or(0);
        }
        Ok(total + self.live_wal_bytes())
    }

    /// Size of the live (not yet archived) WAL files: what a reopen replays.
    pub(crate) fn live_wal_bytes(&self) -> u64 {
        let Ok(rd) = std::fs::read_dir(&self.inner.dir) else {
            return 0;
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Flushes every memtable to SST files (primary only). Mostly for tests and
    /// shutdown; the WAL already makes writes durable against process crashes.
    pub fn flush(&self) -> Result<()> {
        self.ensure_primary("flush")?;
        let db = self.db()?;
        for name in COLUMN_FAMILIES {
            db.flush_cf(cf(&db, name)?)?;
        }
        Ok(())
    }

    /// Closes the primary database and opens it again, with the same directory and
    /// options: the way out of errors RocksDB does not recover from by itself (after a
    /// full disk, say). What reached the WAL is replayed. Meanwhile every operation
    /// fails at once, saying the store is reopening; no lock is held while it runs.
    ///
    /// Waits up to `wait` for operations in flight to finish before closing; if they
    /// don't, the open database is kept and an error returned. If opening fails, the
    /// store stays closed until a later reopen succeeds.
    pub fn reopen(&self, wait: Duration) -> Result<()> {
        self.ensure_primary("reopen")?;
        if !self.inner.reopenable {
            bail!("this store was not opened with Store::open_primary: it cannot be reopened");
        }
        let slot = || self.inner.db.write().unwrap_or_else(|p| p.into_inner());
        let taken = slot().take();
        if let Some(mut db) = taken {
            let deadline = Instant::now() + wait;
            loop {
                match Arc::try_unwrap(db) {
                    // Closes it (RocksDB holds a lock file per process and directory).
                    Ok(only) => {
                        drop(only);
                        break;
                    }
                    Err(shared) if Instant::now() >= deadline => {
                        *slot() = Some(shared);
                        bail!(
                            "the capture database in {} is still in use after {wait:?}: not \
                             reopened",
                            self.inner.dir.display()
                        );
                    }
                    Err(shared) => {
                        db = shared;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        let db = open_primary_db(&self.inner.dir, &self.inner.options)?;
        self.inner
            .last_sequence
            .fetch_max(db.latest_sequence_number(), Ordering::Relaxed);
        *slot() = Some(Arc::new(db));
        Ok(())
    }

    /// Writes a tiny record (into the otherwise unused default column family) to see
    /// whether writes work: `Ok(true)` if it was written, `Ok(false)` if RocksDB was
    /// too busy to take it without waiting.
    pub(crate) fn probe_write(&self) -> Result<bool> {
        let mut batch = WriteBatch::default();
        batch.put(b"frametap/write-probe", now_ms().to_be_bytes());
        match self.write_batch_opt(batch, true) {
            Ok(()) => Ok(true),
            Err(e) if is_busy(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bytes available to frametap on the filesystem of the data directory.
    pub fn free_bytes(&self) -> Result<u64> {
        let path = std::ffi::CString::new(self.inner.dir.as_os_str().as_encoded_bytes())
            .context("data dir path contains a NUL byte")?;
        // SAFETY: `path` is a valid C string; `stat` is plain data that statvfs fills.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("statvfs {}", self.inner.dir.display()));
        }
        Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
}

/// A key of at most 16 bytes, without allocating.
pub(crate) struct Key {
    buf: [u8; 16],
    len: usize,
}

impl Key {
    pub(crate) fn new(k: &[u8]) -> Key {
        let mut buf = [0u8; 16];
        buf[..k.len()].copy_from_slice(k);
        Key { buf, len: k.len() }
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}
