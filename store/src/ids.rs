//! Identifiers: [`TrafficId`] (one per HTTP exchange / WebSocket connection) and
//! [`FrameId`] (one WebSocket frame of a connection).
//!
//! Both have a strict textual form used in URLs and JSON, and a big-endian binary form
//! used in RocksDB keys so that keys sort by capture time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Error returned when parsing a [`TrafficId`] or [`FrameId`] from text fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdParseError {
    /// The traffic id is not exactly 16 lowercase hexadecimal digits.
    #[error("invalid traffic id {0:?}: expected 16 lowercase hex digits")]
    Traffic(String),
    /// The frame id is not `<16 hex digits>-<8..16 hex digits>`.
    #[error("invalid frame id {0:?}: expected <16 hex digits>-<8 to 16 hex digits>")]
    Frame(String),
}

/// Shortens user input before it goes into an error message.
fn excerpt(s: &str) -> String {
    if s.len() <= 40 {
        s.to_owned()
    } else {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// Parses lowercase hex digits only (no sign, no prefix, no uppercase); `None` on anything
/// else or on overflow.
fn parse_lower_hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Identifies one traffic entry (HTTP exchange or WebSocket connection):
/// `(unix_ms << 16) | counter`, so ids (and the keys built from them) sort by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TrafficId(pub u64);

impl TrafficId {
    /// Number of low bits holding the per-millisecond counter.
    pub const COUNTER_BITS: u32 = 16;

    /// Builds an id from a unix timestamp in milliseconds and a counter (only its low
    /// 16 bits are used; the timestamp's top 16 bits are dropped, which is fine until
    /// the year 10889).
    pub fn new(unix_ms: u64, counter: u16) -> TrafficId {
        TrafficId((unix_ms << Self::COUNTER_BITS) | u64::from(counter))
    }

    /// The unix timestamp (milliseconds) the id was created at.
    pub fn timestamp_ms(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }

    /// The per-millisecond counter.
    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// Big-endian key bytes (sort by time).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Inverse of [`TrafficId::to_be_bytes`]; `None` unless `b` starts with 8 bytes.
    pub fn from_key_prefix(b: &[u8]) -> Option<TrafficId> {
        let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
        Some(TrafficId(u64::from_be_bytes(arr)))
    }
}

impl fmt::Display for TrafficId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for TrafficId {
    type Err = IdParseError;

    /// Accepts exactly 16 lowercase hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(IdParseError::Traffic(excerpt(s)));
        }
        parse_lower_hex(s)
            .map(TrafficId)
            .ok_or_else(|| IdParseError::Traffic(excerpt(s)))
    }
}

impl Serialize for TrafficId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // As a string: JSON consumers (browsers) cannot represent every u64 exactly.
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TrafficId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Identifies one WebSocket frame: the connection's [`TrafficId`] and the frame's
/// sequence number within the connection (starts at 1, contiguous, assigned by the
/// agent in capture order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameId {
    /// The connection.
    pub traffic: TrafficId,
    /// Sequence number within the connection.
    pub seq: u64,
}

impl FrameId {
    /// Builds a frame id.
    pub fn new(traffic: TrafficId, seq: u64) -> FrameId {
        FrameId { traffic, seq }
    }
}

impl fmt::Display for FrameId {
    /// `"{traffic}-{seq:08x}"`, e.g. `0190a1b2c3d40001-0000002a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:08x}", self.traffic, self.seq)
    }
}

impl FromStr for FrameId {
    type Err = IdParseError;

    /// Accepts exactly what `Display` produces: 16 lowercase hex digits, `-`, then 8 to
    /// 16 lowercase hex digits, zero-padded to 8 (so every seq has exactly one form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdParseError::Frame(excerpt(s));
        if s.len() > 16 + 1 + 16 {
            return Err(err());
        }
        let (t, q) = s.split_once('-').ok_or_else(err)?;
        let traffic: TrafficId = t.parse().map_err(|_| err())?;
        if q.len() < 8 || q.len() > 16 {
            return Err(err());
        }
        let seq = parse_lower_hex(q).ok_or_else(err)?;
        // Canonical form only: no extra leading zeros beyond the 8-digit padding.
        if q.len() > 8 && q.starts_with('0') {
            return Err(err());
        }
        Ok(FrameId { traffic, seq })
    }
}

impl Serialize for FrameId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FrameId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
