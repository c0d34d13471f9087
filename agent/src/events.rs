//! The live record stream: every record the recorder persisted, fanned out to the
//! control socket's subscribers (the API process).
//!
//! Publishing never waits: each subscriber has a bounded queue, and a subscriber
//! that falls behind loses records (counted, and told how many) instead of slowing
//! the relay. With no subscriber, publishing costs one atomic load.
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
    pub batches: mpsc::Receiver<Arc<Batch>>,
    pub dropped: Arc<AtomicU64>,
}

struct Subscriber {
    queue: mpsc::Sender<Arc<Batch>>,
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

    pub fn has_subscribers(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub fn subscribe(&self) -> Subscription {
        let (queue, batches) = mpsc::channel(Self::QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subscribers = self.lock();
        subscribers.push(Subscriber {
            queue,
            dropped: Arc::clone(&dropped),
        });
        self.count.store(subscribers.len(), Ordering::Relaxed);
        Subscription { batches, dropped }
    }

    /// Encodes `records` once for every subscriber. Call it only when
    /// [`Self::has_subscribers`] (encoding is the expensive part).
    pub fn encode(records: &[Record]) -> Arc<Batch> {
        Arc::new(Batch {
            records: records.len() as u64,
            bytes: frametap_control::encode_records(records),
        })
    }

    /// Queues `batch` for every subscriber without waiting; a full queue drops it for
    /// that subscriber, a closed one unsubscribes it.
    pub fn publish(&self, batch: Arc<Batch>) {
        let mut subscribers = self.lock();
        subscribers.retain(|s| match s.queue.try_send(Arc::clone(&batch)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.dropped.fetch_add(batch.records, Ordering::Relaxed);
                self.dropped.fetch_add(batch.records, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        self.count.store(subscribers.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frametap_store::{TrafficId, WsClose};

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
        })
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
            bus.publish(EventBus::encode(&[close(n), close(n)]));
            // The fast one keeps up.
            assert!(fast.batches.try_recv().is_ok());
        }
        let mut got = 0;
        while slow.batches.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, EventBus::QUEUE as u64);
        assert_eq!(slow.dropped.load(Ordering::Relaxed), 20);
        assert_eq!(fast.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(bus.dropped.load(Ordering::Relaxed), 20);
        drop(slow);
        drop(fast);
        bus.publish(EventBus::encode(&[close(0)]));
        assert!(!bus.has_subscribers());
    }
}
