//! The agent's own state, kept in the store so that readers (the API) know it while
//! the agent is down: its message rules. Each change writes a new version under a
//! new key (append-only: secondaries can read stale values of overwritten keys);
//! only the newest few versions are kept.

use anyhow::{Context, Result};
use rocksdb::WriteBatch;

use crate::codec::{self, META_RULES};
use crate::store::{CF_META, Store, bounded_iter, cf, prefix_end};

/// Rule set versions kept; older ones are deleted when a new one is written.
const KEEP_VERSIONS: u64 = 16;

/// A snapshot of the agent's rules as it recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRules {
    /// Increases with every snapshot, across agent restarts.
    pub version: u64,
    /// What the agent wrote (JSON; its shape is the control protocol's business).
    pub value: Vec<u8>,
}

impl Store {
    /// Records a new snapshot of the agent's rules (primary only) and returns its
    /// version.
    pub fn record_rules(&self, value: &[u8]) -> Result<u64> {
        self.ensure_primary("record rules")?;
        let _guard = self.admin_lock();
        let version = self.latest_rules()?.map_or(1, |r| r.version + 1);
        let db = self.db()?;
        let cf = cf(&db, CF_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, codec::meta_key(META_RULES, version), value);
        if version > KEEP_VERSIONS {
            batch.delete_range_cf(
                cf,
                codec::meta_key(META_RULES, 0),
                codec::meta_key(META_RULES, version - KEEP_VERSIONS + 1),
            );
        }
        drop(db);
        self.write_batch(batch).context("recording the rules")?;
        Ok(version)
    }

    /// The newest rule snapshot, if the agent ever recorded one.
    pub fn latest_rules(&self) -> Result<Option<StoredRules>> {
        let prefix = [META_RULES];
        let upper = prefix_end(&prefix);
        let db = self.db()?;
        let mut it = bounded_iter(&db, CF_META, Some(&prefix), upper.as_deref())?;
        it.seek_to_last();
        let found = match (it.key(), it.value()) {
            (Some(key), Some(value)) if key.len() == 9 => Some(StoredRules {
                version: u64::from_be_bytes(key[1..].try_into().expect("8 bytes")),
                value: value.to_vec(),
            }),
            _ => None,
        };
        it.status()?;
        Ok(found)
    }
}
