//! Recording one HTTP message body as it streams through, with no I/O: the body's
//! data goes in piece by piece (as [`frametap_proto::http1`] finds it, chunked
//! framing removed), [`BodyChunk`] records come out. The first `cap` bytes are
//! stored, the rest only counted, and nothing is held back from forwarding: at most
//! [`CHUNK`] bytes wait here to be stored together, so memory stays bounded whatever
//! the body's size.

use frametap_store::{BodyChunk, BodyInfo, BodyOf, Record, TrafficId};

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
mod tests {
    use super::*;

    fn chunks(records: &[Record]) -> Vec<(u32, Vec<u8>)> {
        records
            .iter()
            .map(|r| match r {
                Record::Body(b) => (b.seq, b.data.clone()),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn capture(cap: u64) -> BodyCapture {
        BodyCapture::new(TrafficId(7), BodyOf::Response, cap)
    }

    #[test]
    fn small_pieces_are_gathered_into_chunks() {
        let mut c = capture(1 << 20);
        let mut records = Vec::new();
        let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        for piece in body.chunks(1000) {
            c.push(piece, &mut records);
        }
        assert_eq!(records.len(), 2, "two full chunks so far");
        c.finish(&mut records);
        let got = chunks(&records);
        assert_eq!(
            got.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(got[..2].iter().all(|(_, d)| d.len() >= CHUNK));
        assert_eq!(got.concat_data(), body);
        assert_eq!(
            c.info(),
            BodyInfo {
                size: 40_000,
                stored: 40_000
            }
        );
        // Finishing twice adds nothing.
        c.finish(&mut records);
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn beyond_the_cap_bytes_are_counted_not_stored() {
        let mut c = capture(10_000);
        let mut records = Vec::new();
        for _ in 0..100 {
            c.push(&[b'x'; 1000], &mut records);
        }
        c.finish(&mut records);
        let data = chunks(&records).concat_data();
        assert_eq!(data.len(), 10_000);
        let info = c.info();
        assert_eq!(
            (info.size, info.stored, info.truncated()),
            (100_000, 10_000, true)
        );
    }

    #[test]
    fn a_zero_cap_stores_nothing_and_still_counts() {
        let mut c = capture(0);
        let mut records = Vec::new();
        c.push(b"hello", &mut records);
        c.finish(&mut records);
        assert!(records.is_empty());
        assert_eq!(c.info(), BodyInfo { size: 5, stored: 0 });
        let mut empty = capture(100);
        empty.finish(&mut records);
        assert!(records.is_empty());
        assert_eq!(empty.info(), BodyInfo::default());
        assert!(!empty.info().truncated());
    }

    #[test]
    fn a_large_read_is_one_record() {
        let mut c = capture(1 << 20);
        let mut records = Vec::new();
        c.push(&[1; 100], &mut records);
        c.push(&[2; 64 * 1024], &mut records);
        let got = chunks(&records);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 100 + 64 * 1024);
    }

    trait ConcatData {
        fn concat_data(&self) -> Vec<u8>;
    }

    impl ConcatData for Vec<(u32, Vec<u8>)> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|(_, d)| d.iter().copied()).collect()
        }
    }
}
