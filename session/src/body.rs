//! Recording one HTTP message body as it streams through, with no I/O: the body's
//! data goes in piece by piece (as [`frametap_proto::http1`] finds it, chunked
//! framing removed), [`BodyChunk`] records come out. The first `cap` bytes are
//! stored, the rest only counted, and nothing is held back from forwarding: at most
//! [`CHUNK`] bytes wait here to be stored together, so memory stays bounded whatever
//! the body's size.

use frametap_model::{BodyChunk, BodyInfo, BodyOf, Record, TrafficId};

/// Body bytes gathered into one record (the last one of a body may be smaller; one
/// read can make a larger one).
pub const CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub struct BodyCapture {
    traffic: TrafficId,
    of: BodyOf,
    /// Most bytes to store.
    cap: u64,
    /// Bytes of the body seen so far.
    size: u64,
    /// Bytes handed out as records.
    stored: u64,
    next_seq: u32,
    /// Bytes to store that are not in a record yet.
    pending: Vec<u8>,
}

impl BodyCapture {
    pub fn new(traffic: TrafficId, of: BodyOf, cap: u64) -> Self {
        Self {
            traffic,
            of,
            cap,
            size: 0,
            stored: 0,
            next_seq: 0,
            pending: Vec::new(),
        }
    }

    /// The next bytes of the body. Records ready to be stored go to `records`.
    pub fn push(&mut self, data: &[u8], records: &mut Vec<Record>) {
        self.size += data.len() as u64;
        // The last possible seq ends recording: a body that long is beyond any cap.
        if self.next_seq == u32::MAX {
            return;
        }
        let room = self
            .cap
            .saturating_sub(self.stored + self.pending.len() as u64);
        let keep = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        if keep.is_empty() {
            return;
        }
        if self.pending.len() + keep.len() >= CHUNK {
            let mut chunk = std::mem::take(&mut self.pending);
            chunk.extend_from_slice(keep);
            self.emit(chunk, records);
        } else {
            if self.pending.is_empty() {
                self.pending.reserve(CHUNK.min(room as usize));
            }
            self.pending.extend_from_slice(keep);
        }
    }

    /// The body is over (or will not be followed further): what is still pending
    /// goes to `records`.
    pub fn finish(&mut self, records: &mut Vec<Record>) {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.emit(chunk, records);
        }
    }

    /// Size and stored bytes, for the traffic entry (after [`Self::finish`]).
    pub fn info(&self) -> BodyInfo {
        BodyInfo {
            size: self.size,
            stored: self.stored + self.pending.len() as u64,
        }
    }

    fn emit(&mut self, data: Vec<u8>, records: &mut Vec<Record>) {
        self.stored += data.len() as u64;
        records.push(Record::Body(BodyChunk {
            traffic: self.traffic,
            of: self.of,
            seq: self.next_seq,
            data,
        }));
        self.next_seq += 1;
    }
}

#[cfg(test)]
mod tests;
