//! Deleting traffic entries on request (primary only): one, those a
//! [`TrafficFilter`] matches, or all. An entry goes with everything recorded under
//! its id: its WebSocket records and frames, and its bodies.
//!
//! Frames are deleted as [`Store::delete_frames`] does (a watermark and a range
//! delete), so a connection that is still open keeps a correct count of the frames
//! it records afterwards. Everything else is deleted key by key (point tombstones:
//! one range tombstone per entry would slow every later read down).

use anyhow::{Context, Result};
use rocksdb::WriteBatch;

use crate::codec::{self, TUNNEL_END, WS_CLOSE, WS_OPEN};
use crate::filter::TrafficFilter;
use crate::ids::TrafficId;
use crate::retention::DeleteStats;
use crate::store::{
    CF_BODIES, CF_FRAMES, CF_TRAFFIC, CF_WS, Store, bounded_iter, cf, deletion_watermark, last_seq,
    prefix_end,
};

/// Entries deleted per write batch.
const BATCH_ENTRIES: usize = 1024;

impl Store {
    /// Deletes the entries `ids` (those that exist) and everything recorded under
    /// them. `traffic` in the answer counts the entries that existed.
    pub fn delete_traffic(&self, ids: &[TrafficId]) -> Result<DeleteStats> {
        self.ensure_primary("delete traffic")?;
        let mut stats = DeleteStats::default();
        for batch_ids in ids.chunks(BATCH_ENTRIES) {
            let _guard = self.admin_lock();
            let mut batch = WriteBatch::default();
            for &id in batch_ids {
                self.add_entry_deletion(&mut batch, id, &mut stats)?;
            }
            self.write_batch(batch)
                .context("deleting traffic entries")?;
        }
        Ok(stats)
    }

    /// Deletes every entry `filter` matches (all of them for the empty filter), as
    /// [`Store::delete_traffic`]. Entries recorded while this runs may be left.
    pub fn delete_traffic_matching(&self, filter: &TrafficFilter) -> Result<DeleteStats> {
        self.ensure_primary("delete traffic")?;
        let mut ids = Vec::new();
        let db = self.db()?;
        let mut it = bounded_iter(&db, CF_TRAFFIC, None, None)?;
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            if let Some(id) = TrafficId::from_key_prefix(key) {
                // An entry that can't be read only matches "everything".
                let matches = match serde_json::from_slice(value) {
                    Ok(entry) => filter.matches(&entry),
                    Err(_) => filter.is_empty(),
                };
                if matches {
                    ids.push(id);
                }
            }
            it.next();
        }
        it.status()?;
        drop(it);
        drop(db);
        self.delete_traffic(&ids)
    }

    /// Adds the deletion of entry `id` and what belongs to it to `batch`.
    fn add_entry_deletion(
        &self,
        batch: &mut WriteBatch,
        id: TrafficId,
        stats: &mut DeleteStats,
    ) -> Result<()> {
        let db = self.db()?;
        let traffic_cf = cf(&db, CF_TRAFFIC)?;
        if db
            .get_pinned_cf(traffic_cf, codec::traffic_key(id))?
            .is_none()
        {
            return Ok(());
        }
        batch.delete_cf(traffic_cf, codec::traffic_key(id));
        stats.traffic += 1;
        let ws_cf = cf(&db, CF_WS)?;
        if db
            .get_pinned_cf(ws_cf, codec::ws_key(id, WS_OPEN))?
            .is_some()
        {
            stats.connections += 1;
        }
        for kind in [WS_OPEN, WS_CLOSE, TUNNEL_END] {
            batch.delete_cf(ws_cf, codec::ws_key(id, kind));
        }
        if let Some(last) = last_seq(&db, CF_FRAMES, id)? {
            let watermark = deletion_watermark(&db, id)?;
            if last > watermark {
                Store::add_frame_deletion(&db, batch, id, last)?;
                stats.frames += last - watermark;
            }
        }
        let prefix = id.to_be_bytes();
        let upper = prefix_end(&prefix);
        let bodies_cf = cf(&db, CF_BODIES)?;
        let mut it = bounded_iter(&db, CF_BODIES, Some(&prefix), upper.as_deref())?;
        it.seek(prefix);
        while let Some(key) = it.key() {
            batch.delete_cf(bodies_cf, key);
            it.next();
        }
        it.status()?;
        Ok(())
    }
}
