//! Unit tests of [`super`] (body).
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
