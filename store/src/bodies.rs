//! Reading stored message bodies: the [`BodyChunk`]s of one body, in order. Chunk
//! seqs are contiguous from 0, so a body is read with point gets, one chunk at a
//! time, whatever its size.

use std::io::Read;

use anyhow::{Context, Result};

use crate::codec;
use crate::ids::TrafficId;
use crate::records::{BodyChunk, BodyOf};
use crate::store::{CF_BODIES, Store, cf};

impl Store {
    /// Chunk `seq` of a body, or `None` past its end (or if it was never stored).
    pub fn body_chunk(
        &self,
        traffic: TrafficId,
        of: BodyOf,
        seq: u32,
    ) -> Result<Option<BodyChunk>> {
        let db = self.db()?;
        let data = db
            .get_cf(cf(&db, CF_BODIES)?, codec::body_key(traffic, of, seq))
            .with_context(|| format!("reading body chunk {seq} of {traffic}"))?;
        Ok(data.map(|data| BodyChunk {
            traffic,
            of,
            seq,
            data,
        }))
    }

    /// The stored body's first `max` bytes at most (all of it when it is shorter).
    pub fn body(&self, traffic: TrafficId, of: BodyOf, max: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.body_reader(traffic, of)
            .take(max as u64)
            .read_to_end(&mut out)
            .with_context(|| format!("reading the body of {traffic}"))?;
        Ok(out)
    }

    /// The stored body as a byte stream, read one chunk at a time.
    pub fn body_reader(&self, traffic: TrafficId, of: BodyOf) -> BodyReader {
        BodyReader {
            store: self.clone(),
            traffic,
            of,
            next_seq: Some(0),
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

/// A stored body as [`Read`]: what the agent recorded of it, in order. Blocking (it
/// reads the store).
pub struct BodyReader {
    store: Store,
    traffic: TrafficId,
    of: BodyOf,
    /// The chunk to read next; `None` once the body is over.
    next_seq: Option<u32>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            let Some(seq) = self.next_seq else {
                return Ok(0);
            };
            match self.store.body_chunk(self.traffic, self.of, seq) {
                Ok(Some(chunk)) => {
                    self.chunk = chunk.data;
                    self.pos = 0;
                    self.next_seq = seq.checked_add(1);
                }
                Ok(None) => self.next_seq = None,
                Err(e) => return Err(std::io::Error::other(format!("{e:#}"))),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
