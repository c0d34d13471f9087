//! Hands records to the store's writer and waits until they are in the WAL, so a
//! frame is durable before the peer can have it. Recording never stops traffic: a
//! failed write is counted and logged (by the writer) and the relay carries on.
//!
//! Live subscribers get exactly what was stored: records whose write failed are not
//! published; instead they hear when recording stopped and when it resumed.
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use frametap_control::{Message, RecordingEvent};
use frametap_store::{Record, RecordingChange, TrafficIds, Writer, WrittenNow};

use crate::events::{Batch, EventBus, LiveOrder, Slot};

/// A connection's live order, shared by its two directions and the persists in flight.
pub type SharedOrder = Arc<Mutex<LiveOrder>>;

/// What subscribers get of records being persisted.
enum Live {
    /// Nothing: nobody listens, and no order to keep.
    Nothing,
    /// These bytes, as soon as the records are persisted.
    Batch(Arc<Batch>),
    /// The records' places (and copies) in their connection's order.
    Ordered(Vec<Slot>),
}

pub use frametap_store::now_ms;

/// Microseconds since the Unix epoch: the time the session layer is given.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct RecorderStats {
    pub records_submitted: AtomicU64,
    pub records_failed: AtomicU64,
}

#[derive(Clone)]
pub struct Recorder {
    writer: Writer,
    pub ids: Arc<TrafficIds>,
    pub stats: Arc<RecorderStats>,
    /// Where persisted records go live (the control socket's subscribers).
    pub events: Arc<EventBus>,
}

impl Recorder {
    pub fn new(writer: Writer) -> Self {
        let events = Arc::new(EventBus::default());
        let bus = Arc::clone(&events);
        writer.on_recording_change(move |change| publish_recording_change(&bus, change));
        Self {
            writer,
            ids: Arc::new(TrafficIds::default()),
            stats: Arc::new(RecorderStats::default()),
            events,
        }
    }

    /// The store's writer (its counters and recording state).
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Persists `records` on this thread when the store takes them without waiting
    /// (the usual case: no queue, no thread switch), then publishes them (in
    /// `order`, a connection's, when given). Gives them back, unwritten, when the
    /// store is busy: pass them to [`Recorder::persist`].
    pub fn persist_now(
        &self,
        records: Vec<Record>,
        order: Option<&SharedOrder>,
    ) -> Option<Vec<Record>> {
        self.try_now(records, order)
            .err()
            .map(|(records, _)| records)
    }

    /// Persist `records` and wait until they reached the WAL (or failed to), then
    /// publish them to live subscribers (in `order` when given). Never blocks the
    /// thread: when the store is busy the records wait in the writer's queue.
    pub async fn persist(&self, records: Vec<Record>, order: Option<SharedOrder>) {
        let Err((records, live)) = self.try_now(records, order.as_ref()) else {
            return;
        };
        let n = records.len() as u64;
        let written = self.writer.submit(records).await.is_ok();
        self.finish(n, written, live, order.as_ref());
    }

    fn try_now(
        &self,
        records: Vec<Record>,
        order: Option<&SharedOrder>,
    ) -> Result<(), (Vec<Record>, Live)> {
        if records.is_empty() {
            return Ok(());
        }
        // Taken before the writer takes the records; copies only when somebody listens.
        let listening = self.events.has_subscribers();
        let live = match order {
            Some(_) => Live::Ordered(records.iter().map(|r| Slot::of(r, listening)).collect()),
            None if listening => EventBus::encode(&records).map_or(Live::Nothing, Live::Batch),
            None => Live::Nothing,
        };
        let n = records.len() as u64;
        match self.writer.write_now(records) {
            WrittenNow::Busy(records) => Err((records, live)),
            WrittenNow::Done(result) => {
                self.finish(n, result.is_ok(), live, order);
                Ok(())
            }
        }
    }

    fn finish(&self, records: u64, written: bool, live: Live, order: Option<&SharedOrder>) {
        self.stats
            .records_submitted
            .fetch_add(records, Ordering::Relaxed);
        if !written {
            self.stats
                .records_failed
                .fetch_add(records, Ordering::Relaxed);
        }
        // Only what was stored goes live; records lost still take their place in
        // their connection's order (without a copy), so later frames are not held.
        match (live, order) {
            (Live::Batch(batch), _) if written => self.events.publish(batch),
            (Live::Ordered(slots), Some(order)) => {
                let slots = if written {
                    slots
                } else {
                    slots.into_iter().map(Slot::without_copy).collect()
                };
                let ready = order
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .release(slots);
                if !ready.is_empty()
                    && self.events.has_subscribers()
                    && let Some(batch) = EventBus::encode(&ready)
                {
                    self.events.publish(batch);
                }
            }
            (Live::Batch(_) | Live::Ordered(_) | Live::Nothing, _) => {}
        }
    }
}

/// Tells live subscribers that recording stopped or resumed (it needs no records).
fn publish_recording_change(events: &EventBus, change: &RecordingChange) {
    if events.has_subscribers() {
        let message = Message::Recording(RecordingEvent::from(change));
        events.publish(Arc::new(Batch {
            records: 0,
            bytes: frametap_control::encode(&message),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(n: u64) -> Record {
        Record::WsClose(frametap_store::WsClose {
            traffic: frametap_store::TrafficId(n),
            timestamp_ms: n,
            closed_by: None,
            close_code: None,
            close_reason: None,
            frames_from_client: 0,
            frames_from_server: 0,
            bytes_from_client: 0,
            bytes_from_server: 0,
            abnormal: None,
            frames_from_frametap: None,
        })
    }

    fn decode(bytes: &[u8]) -> Vec<Message> {
        let mut decoder = frametap_control::Decoder::default();
        decoder.push(bytes);
        std::iter::from_fn(|| decoder.next_message().unwrap()).collect()
    }

    #[test]
    fn only_stored_records_go_live_and_outages_are_announced() {
        let dir = tempfile::tempdir().unwrap();
        let store = frametap_store::Store::open_primary(dir.path(), Default::default()).unwrap();
        let writer = Writer::spawn(store.clone(), 4);
        let recorder = Recorder::new(writer.clone());
        let mut live = recorder.events.subscribe();

        assert!(recorder.persist_now(vec![close(1)], None).is_none());
        let stored = live.try_recv().expect("a stored record goes live");
        assert_eq!(decode(&stored.bytes), [Message::Records(vec![close(1)])]);

        // Records the writer refuses are counted, never published.
        writer.shutdown();
        assert!(
            recorder
                .persist_now(vec![close(2), close(3)], None)
                .is_none()
        );
        assert!(live.try_recv().is_none(), "no event for unstored records");
        let stats = &recorder.stats;
        assert_eq!(stats.records_submitted.load(Ordering::Relaxed), 3);
        assert_eq!(stats.records_failed.load(Ordering::Relaxed), 2);

        // Recording changes reach subscribers in order.
        let outage = frametap_store::Outage {
            stopped_at_ms: 10,
            resumed_at_ms: 20,
            records_lost: 2,
            error: "No space left on device".into(),
        };
        for change in [
            RecordingChange::Stopped {
                at_ms: 10,
                error: "No space left on device".into(),
            },
            RecordingChange::Resumed(outage.clone()),
        ] {
            publish_recording_change(&recorder.events, &change);
        }
        let got: Vec<Message> = std::iter::from_fn(|| live.try_recv())
            .flat_map(|b| decode(&b.bytes))
            .collect();
        assert_eq!(
            got,
            [
                Message::Recording(RecordingEvent::Degraded {
                    since_ms: 10,
                    error: "No space left on device".into()
                }),
                Message::Recording(RecordingEvent::Resumed((&outage).into())),
            ]
        );
    }
}
