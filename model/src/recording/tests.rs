//! Unit tests of [`super`] (recording).
use super::*;

#[test]
fn an_outage_runs_from_the_first_failure_to_the_first_success() {
    let mut m = RecordingMonitor::default();
    assert_eq!(m.written(1_000), None);
    assert_eq!(m.status(), &RecordingStatus::default());

    assert_eq!(
        m.failed(2_000, 10, "No space left on device"),
        Some(RecordingChange::Stopped {
            at_ms: 2_000,
            error: "No space left on device".into()
        })
    );
    // Later failures only add to the count; the first error is kept.
    assert_eq!(m.failed(3_000, 5, "other"), None);
    assert_eq!(m.failed(4_000, 1, "other"), None);
    let s = m.status().clone();
    assert!(m.is_degraded());
    assert_eq!(s.state, RecordingState::Degraded);
    assert_eq!(s.since_ms, Some(2_000));
    assert_eq!(s.records_lost, 16);
    assert_eq!(s.error.as_deref(), Some("No space left on device"));
    assert_eq!(s.last_outage, None);

    let outage = Outage {
        stopped_at_ms: 2_000,
        resumed_at_ms: 9_500,
        records_lost: 16,
        error: "No space left on device".into(),
    };
    assert_eq!(
        m.written(9_500),
        Some(RecordingChange::Resumed(outage.clone()))
    );
    assert_eq!(outage.duration(), Duration::from_millis(7_500));
    assert_eq!(m.written(9_600), None);
    let s = m.status();
    assert!(!m.is_degraded());
    assert_eq!(
        (s.since_ms, s.records_lost, s.error.as_ref()),
        (None, 0, None)
    );
    assert_eq!(s.last_outage, Some(outage));

    // A second outage starts its own count and keeps the previous one until it ends.
    assert!(matches!(
        m.failed(20_000, 3, "again"),
        Some(RecordingChange::Stopped { at_ms: 20_000, .. })
    ));
    assert_eq!(m.status().records_lost, 3);
    assert_eq!(m.status().last_outage.as_ref().unwrap().records_lost, 16);
    let Some(RecordingChange::Resumed(second)) = m.written(21_000) else {
        panic!("expected a resume");
    };
    assert_eq!((second.records_lost, second.error.as_str()), (3, "again"));
}
