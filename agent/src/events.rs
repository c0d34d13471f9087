//! The live record stream: every record the recorder persisted, fanned out to the
//! control socket's subscribers (the API process). Body chunks are left out: they
//! are no live event, and the API reads them from the store.
//!
//! Publishing never waits: each subscriber has a queue bounded in batches and in
//! bytes ([`EventBus::QUEUE`], [`EventBus::QUEUE_BYTES`]), and a subscriber that
//! falls behind (or stops reading) loses records, counted and told how many, instead
//! of slowing the relay or growing the agent's memory. With no subscriber,
//! publishing costs one atomic load.
//!
//! A connection's records go out in capture order ([`LiveOrder`]): frames by
//! sequence number, although a frame can be persisted after later ones (a rule holds
//! a message until its last fragment, an injected message waits for the message
//! under way, and the two directions persist on their own).
use std::collections::BTreeMap;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use frametap_store::Record;
use tokio::sync::mpsc;

/// Encoded [`frametap_control::Message::Records`] bytes and how many records they hold.
pub struct Batch {
    pub records: u64,
    pub bytes: Vec<u8>,
}

/// One subscriber's end: batches in order, and its running count of dropped records.
pub struct Subscription {
    batches: mpsc::Receiver<Arc<Batch>>,
    /// Bytes of the batches queued for it.
    queued: Arc<AtomicUsize>,
    pub dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next batch; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Batch>> {
        let batch = self.batches.recv().await?;
        self.queued.fetch_sub(batch.bytes.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// The next batch if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Batch>> {
        let batch = self.batches.try_recv().ok()?;
        self.queued.fetch_sub(batch.bytes.len(), Ordering::Relaxed);
        Some(batch)
    }
}

struct Subscriber {
    queue: mpsc::Sender<Arc<Batch>>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<Vec<Subscriber>>,
    count: AtomicUsize,
    /// Records dropped for slow subscribers, all subscribers together, since start.
    pub dropped: AtomicU64,
}

impl EventBus {
    /// Batches a subscriber may have queued before it starts losing records.
    pub const QUEUE: usize = 4096;
    /// Bytes a subscriber may have queued before it starts losing records. A batch
    /// larger than this still goes to a subscriber whose queue is empty.
    pub const QUEUE_BYTES: usize = 16 << 20;

    pub fn has_subscribers(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub fn subscribe(&self) -> Subscription {
        let (queue, batches) = mpsc::channel(Self::QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queued = Arc::new(AtomicUsize::new(0));
        let mut subscribers = self.lock();
        subscribers.push(Subscriber {
            queue,
            queued: Arc::clone(&queued),
            dropped: Arc::clone(&dropped),
        });
        self.count.store(subscribers.len(), Ordering::Relaxed);
        Subscription {
            batches,
            queued,
            dropped,
        }
    }

    /// Encodes `records` once for every subscriber; `None` when none of them is
    /// streamed. Call it only when [`Self::has_subscribers`] (encoding is the
    /// expensive part).
    pub fn encode(records: &[Record]) -> Option<Arc<Batch>> {
        let streamed = || records.iter().filter(|r| !matches!(r, Record::Body(_)));
        let count = streamed().count() as u64;
        (count > 0).then(|| {
            Arc::new(Batch {
                records: count,
                bytes: frametap_control::encode_records(streamed()),
            })
        })
    }

    /// Queues `batch` for every subscriber without waiting; a full queue (in batches
    /// or bytes) drops it for that subscriber, a closed one unsubscribes it.
    pub fn publish(&self, batch: Arc<Batch>) {
        let len = batch.bytes.len();
        let mut subscribers = self.lock();
        subscribers.retain(|s| {
            let queued = s.queued.load(Ordering::Relaxed);
            if queued > 0 && queued + len > Self::QUEUE_BYTES {
                self.count_dropped(s, batch.records);
                return true;
            }
            // Counted before the subscriber can receive (and uncount) it.
            s.queued.fetch_add(len, Ordering::Relaxed);
            match s.queue.try_send(Arc::clone(&batch)) {
                Ok(()) => true,
                Err(e) => {
                    s.queued.fetch_sub(len, Ordering::Relaxed);
                    let full = matches!(e, mpsc::error::TrySendError::Full(_));
                    if full {
                        self.count_dropped(s, batch.records);
                    }
                    full
                }
            }
        });
        self.count.store(subscribers.len(), Ordering::Relaxed);
    }

    fn count_dropped(&self, subscriber: &Subscriber, records: u64) {
        subscriber.dropped.fetch_add(records, Ordering::Relaxed);
        self.dropped.fetch_add(records, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A persisted record's place in its connection's live order, and its copy for
/// subscribers (`None` when nobody listened as it was persisted: only its place
/// counts then).
#[derive(Debug)]
pub enum Slot {
    /// A frame, by sequence number.
    Frame(u64, Option<Record>),
    /// The connection's end: whatever still waits goes out before it.
    Close(Option<Record>),
    /// Anything else (traffic entries, the open record): goes out at once.
    Other(Option<Record>),
}

impl Slot {
    /// The same place in the order, with nothing to publish (its record was lost).
    pub fn without_copy(self) -> Slot {
        match self {
            Slot::Frame(seq, _) => Slot::Frame(seq, None),
            Slot::Close(_) => Slot::Close(None),
            Slot::Other(_) => Slot::Other(None),
        }
    }

    /// The slot of `record`, with a copy of it if `copy`.
    pub fn of(record: &Record, copy: bool) -> Slot {
        let copy = copy.then(|| record.clone());
        match record {
            Record::Frame(f) => Slot::Frame(f.seq, copy),
            Record::WsClose(_) => Slot::Close(copy),
            Record::Traffic(_) | Record::WsOpen(_) | Record::TunnelEnd(_) => Slot::Other(copy),
            // Not streamed: see [`EventBus::encode`].
            Record::Body(_) => Slot::Other(None),
        }
    }
}

/// One connection's records in the order subscribers get them: frames in sequence
/// order, each only once every frame before it went out, the close record last.
/// Sans-IO: persisted records in, records to publish out.
///
/// Every sequence number the session gives out is recorded (frames that never went
/// out are recorded as dropped), so a gap always fills, at the latest when the
/// connection ends. A message held for very long would hold back the other
/// direction's frames without bound, so past [`LiveOrder::MAX_WAITING`] frames the
/// gap is skipped: the late frame then goes out when it comes.
#[derive(Debug)]
pub struct LiveOrder {
    /// The sequence number subscribers get next.
    next: u64,
    /// Persisted frames waiting for an earlier one.
    waiting: BTreeMap<u64, Option<Record>>,
}

impl Default for LiveOrder {
    fn default() -> Self {
        Self {
            next: 1,
            waiting: BTreeMap::new(),
        }
    }
}

impl LiveOrder {
    /// Frames that may wait behind a missing one before it is skipped.
    pub const MAX_WAITING: usize = 4096;

    /// Takes the slots of records just persisted, in the order they were persisted;
    /// returns the records subscribers may have now, in order.
    pub fn release(&mut self, slots: Vec<Slot>) -> Vec<Record> {
        let mut out = Vec::new();
        for slot in slots {
            match slot {
                Slot::Other(record) => out.extend(record),
                // Late (its gap was skipped), or not numbered by this order: at once.
                Slot::Frame(seq, record) if seq < self.next => out.extend(record),
                Slot::Frame(seq, record) if seq == self.next && self.waiting.is_empty() => {
                    self.next += 1;
                    out.extend(record);
                }
                Slot::Frame(seq, record) => {
                    self.waiting.insert(seq, record);
                    self.drain(&mut out);
                    if self.waiting.len() > Self::MAX_WAITING {
                        self.flush(&mut out);
                    }
                }
                Slot::Close(record) => {
                    self.flush(&mut out);
                    out.extend(record);
                }
            }
        }
        out
    }

    /// Everything that follows on without a gap.
    fn drain(&mut self, out: &mut Vec<Record>) {
        while let Some(record) = self.waiting.remove(&self.next) {
            self.next += 1;
            out.extend(record);
        }
    }

    /// Everything waiting, gaps skipped.
    fn flush(&mut self, out: &mut Vec<Record>) {
        let waiting = std::mem::take(&mut self.waiting);
        if let Some(&last) = waiting.keys().next_back() {
            self.next = last + 1;
        }
        out.extend(waiting.into_values().flatten());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frametap_store::{FrameRecord, TrafficId, WsClose};

    fn close(n: u64) -> Record {
        Record::WsClose(WsClose {
            traffic: TrafficId(n),
            timestamp_ms: n,
            closed_by: None,
            close_code: None,
            close_reason: None,
            frames_from_client: 0,
            frames_from_server: 0,
            bytes_from_client: 0,
            bytes_from_server: 0,
            abnormal: None,
            frames_from_frametap: Some(0),
        })
    }

    fn frame(seq: u64) -> Record {
        Record::Frame(FrameRecord {
            timestamp_ms: seq,
            ..frametap_model::testing::frame(TrafficId(1), seq, seq.is_multiple_of(2), b"")
        })
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records
            .iter()
            .map(|r| match r {
                Record::Frame(f) => f.seq,
                Record::WsClose(_) => 0,
                _ => u64::MAX,
            })
            .collect()
    }

    fn slots(records: &[Record]) -> Vec<Slot> {
        records.iter().map(|r| Slot::of(r, true)).collect()
    }

    #[test]
    fn frames_go_out_in_sequence_whatever_order_they_were_persisted_in() {
        let mut order = LiveOrder::default();
        assert_eq!(seqs(&order.release(slots(&[frame(1)]))), [1]);
        // 2 and 3 are held (a rule waits for the message's last fragment) while the
        // other direction's 4 and 5 are persisted: they wait for them.
        assert!(order.release(slots(&[frame(4), frame(5)])).is_empty());
        assert_eq!(seqs(&order.release(slots(&[frame(2)]))), [2]);
        assert_eq!(
            seqs(&order.release(slots(&[frame(3), frame(6)]))),
            [3, 4, 5, 6]
        );
        // Persisted while nobody listened: their places count, nothing goes out.
        let unheard = [frame(8), frame(7)]
            .iter()
            .map(|r| Slot::of(r, false))
            .collect();
        assert!(order.release(unheard).is_empty());
        assert_eq!(seqs(&order.release(slots(&[frame(9)]))), [9]);
        // The end: what waits goes out before the close record, gaps or not.
        assert!(order.release(slots(&[frame(12), frame(11)])).is_empty());
        assert_eq!(seqs(&order.release(slots(&[close(1)]))), [11, 12, 0]);
        // A frame whose gap was skipped goes out when it comes.
        assert_eq!(seqs(&order.release(slots(&[frame(10)]))), [10]);
    }

    #[test]
    fn a_gap_that_holds_back_too_much_is_skipped() {
        let mut order = LiveOrder::default();
        let later: Vec<Record> = (2..=LiveOrder::MAX_WAITING as u64 + 1).map(frame).collect();
        assert!(order.release(slots(&later)).is_empty());
        let released = order.release(slots(&[frame(LiveOrder::MAX_WAITING as u64 + 2)]));
        assert_eq!(
            seqs(&released),
            (2..=LiveOrder::MAX_WAITING as u64 + 2).collect::<Vec<_>>()
        );
        assert_eq!(seqs(&order.release(slots(&[frame(1)]))), [1]);
        let next = LiveOrder::MAX_WAITING as u64 + 3;
        assert_eq!(seqs(&order.release(slots(&[frame(next)]))), [next]);
    }

    #[test]
    fn slow_subscribers_lose_records_and_know_it_fast_ones_do_not() {
        let bus = EventBus::default();
        assert!(!bus.has_subscribers());
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        assert!(bus.has_subscribers());
        let total = EventBus::QUEUE as u64 + 10;
        for n in 0..total {
            bus.publish(EventBus::encode(&[close(n), close(n)]).unwrap());
            // The fast one keeps up.
            assert!(fast.try_recv().is_some());
        }
        let mut got = 0;
        while slow.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, EventBus::QUEUE as u64);
        assert_eq!(slow.dropped.load(Ordering::Relaxed), 20);
        assert_eq!(fast.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(bus.dropped.load(Ordering::Relaxed), 20);
        drop(slow);
        drop(fast);
        bus.publish(EventBus::encode(&[close(0)]).unwrap());
        assert!(!bus.has_subscribers());
    }

    #[test]
    fn a_subscriber_that_stops_reading_holds_a_bounded_number_of_bytes() {
        let bus = EventBus::default();
        let mut stalled = bus.subscribe();
        let big = |n: u64| {
            let payload = vec![b'x'; 1 << 20];
            Arc::new(Batch {
                records: n,
                bytes: payload,
            })
        };
        // 64 batches of 1 MiB: only QUEUE_BYTES of them stay queued.
        for _ in 0..64 {
            bus.publish(big(1));
        }
        let kept = EventBus::QUEUE_BYTES >> 20;
        assert_eq!(stalled.queued.load(Ordering::Relaxed), kept << 20);
        assert_eq!(stalled.dropped.load(Ordering::Relaxed), 64 - kept as u64);
        // Reading frees room: the next batch is queued again.
        assert!(stalled.try_recv().is_some());
        bus.publish(big(1));
        assert_eq!(stalled.queued.load(Ordering::Relaxed), kept << 20);
        assert_eq!(stalled.dropped.load(Ordering::Relaxed), 64 - kept as u64);
        // One batch larger than the bound still reaches an empty queue.
        while stalled.try_recv().is_some() {}
        bus.publish(Arc::new(Batch {
            records: 1,
            bytes: vec![0; EventBus::QUEUE_BYTES + 1],
        }));
        assert!(stalled.try_recv().is_some());
        assert_eq!(stalled.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn body_chunks_are_not_streamed() {
        let body = Record::Body(frametap_store::BodyChunk {
            traffic: TrafficId(1),
            of: frametap_store::BodyOf::Response,
            seq: 0,
            data: vec![0; 1000],
        });
        assert!(EventBus::encode(std::slice::from_ref(&body)).is_none());
        let batch = EventBus::encode(&[body, close(1)]).unwrap();
        assert_eq!(batch.records, 1);
        assert_eq!(batch.bytes, frametap_control::encode_records(&[close(1)]));
    }
}
