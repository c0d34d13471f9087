//! Unit tests of [`super`] (ids).
use super::*;

#[test]
fn traffic_ids_are_unique_and_increasing_even_when_the_clock_goes_back() {
    let ids = TrafficIds::default();
    let mut prev = ids.next(1_700_000_000_000);
    for i in 0..100_000u64 {
        // Every tenth call the clock steps back a second.
        let now = 1_700_000_000_000 + i / 100 - if i % 10 == 0 { 1000 } else { 0 };
        let next = ids.next(now);
        assert!(next.0 > prev.0);
        prev = next;
    }
    assert!(prev.timestamp_ms() >= 1_700_000_000_000);
}

#[test]
fn traffic_id_layout_and_display() {
    let id = TrafficId::new(0x0190_a1b2_c3d4, 1);
    assert_eq!(id.0, 0x0190_a1b2_c3d4_0001);
    assert_eq!(id.timestamp_ms(), 0x0190_a1b2_c3d4);
    assert_eq!(id.counter(), 1);
    assert_eq!(id.to_string(), "0190a1b2c3d40001");
    assert_eq!("0190a1b2c3d40001".parse::<TrafficId>().unwrap(), id);
    assert_eq!(TrafficId(0).to_string(), "0000000000000000");
    assert_eq!(TrafficId(u64::MAX).to_string(), "ffffffffffffffff");
    assert_eq!(
        "ffffffffffffffff".parse::<TrafficId>().unwrap(),
        TrafficId(u64::MAX)
    );
    // Later time sorts later, both as ids and as key bytes.
    let a = TrafficId::new(1000, 65535);
    let b = TrafficId::new(1001, 0);
    assert!(a < b);
    assert!(a.to_be_bytes() < b.to_be_bytes());
    assert_eq!(TrafficId::from_key_prefix(&b.to_be_bytes()), Some(b));
    assert_eq!(TrafficId::from_key_prefix(&[1, 2, 3]), None);
}

#[test]
fn traffic_id_strict_parse() {
    let long = "0".repeat(100_000);
    let bad = [
        "",
        "0190a1b2c3d4000",
        "0190a1b2c3d400011",
        "0190A1B2C3D40001",
        "0x90a1b2c3d40001",
        "+190a1b2c3d40001",
        "-190a1b2c3d40001",
        " 190a1b2c3d40001",
        "0190a1b2c3d4000g",
        "0190a1b2c3d4000é",
        "garbage",
        long.as_str(),
    ];
    for s in bad {
        assert!(s.parse::<TrafficId>().is_err(), "{s:?} should not parse");
    }
    // The error message stays short even for huge input.
    let e = long.parse::<TrafficId>().unwrap_err().to_string();
    assert!(e.len() < 200, "{e}");
}

#[test]
fn frame_id_display_and_parse() {
    let id = FrameId::new(TrafficId(0x0190_a1b2_c3d4_0001), 42);
    assert_eq!(id.to_string(), "0190a1b2c3d40001-0000002a");
    assert_eq!("0190a1b2c3d40001-0000002a".parse::<FrameId>().unwrap(), id);
    let big = FrameId::new(TrafficId(7), 0x1_0000_0000);
    assert_eq!(big.to_string(), "0000000000000007-100000000");
    assert_eq!(big.to_string().parse::<FrameId>().unwrap(), big);
    let max = FrameId::new(TrafficId(u64::MAX), u64::MAX);
    assert_eq!(max.to_string().parse::<FrameId>().unwrap(), max);
}

#[test]
fn frame_id_strict_parse() {
    let long = format!("0190a1b2c3d40001-{}", "1".repeat(10_000));
    let bad = [
        "",
        "-",
        "0190a1b2c3d40001",
        "0190a1b2c3d40001-",
        "0190a1b2c3d40001-2a",
        "0190a1b2c3d40001-0000002A",
        "0190a1b2c3d40001-0000002a-",
        "0190a1b2c3d40001-0000002a-1",
        "0190a1b2c3d40001--000002a",
        "0190a1b2c3d40001-+000002a",
        "0190a1b2c3d40001-00000002a",
        "0190a1b2c3d40001-10000000000000000",
        "0190a1b2c3d4001-0000002a",
        "0190A1B2C3D40001-0000002a",
        "0190a1b2c3d40001 0000002a",
        "0190a1b2c3d40001_0000002a",
        "zz90a1b2c3d40001-0000002a",
        "0190a1b2c3d40001-0000002a ",
        long.as_str(),
    ];
    for s in bad {
        assert!(s.parse::<FrameId>().is_err(), "{s:?} should not parse");
    }
}

#[test]
fn ids_serialize_as_strings() {
    let t = TrafficId(0x0190_a1b2_c3d4_0001);
    assert_eq!(serde_json::to_string(&t).unwrap(), "\"0190a1b2c3d40001\"");
    assert_eq!(
        serde_json::from_str::<TrafficId>("\"0190a1b2c3d40001\"").unwrap(),
        t
    );
    assert!(serde_json::from_str::<TrafficId>("12").is_err());
    assert!(serde_json::from_str::<TrafficId>("\"nope\"").is_err());
    let f = FrameId::new(t, 3);
    let s = serde_json::to_string(&f).unwrap();
    assert_eq!(s, "\"0190a1b2c3d40001-00000003\"");
    assert_eq!(serde_json::from_str::<FrameId>(&s).unwrap(), f);
}
