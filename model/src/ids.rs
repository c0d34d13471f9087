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

/// Gives out traffic ids: (unix ms << 16) | counter, increasing and never repeating
/// within a run, whatever the clock does. The caller says what time it is.
#[derive(Debug, Default)]
pub struct TrafficIds {
    last: std::sync::atomic::AtomicU64,
}

impl TrafficIds {
    /// The next id, at `now_ms` (or after the last one, if the clock went back).
    pub fn next(&self, now_ms: u64) -> TrafficId {
        use std::sync::atomic::Ordering;
        let floor = TrafficId::new(now_ms, 0).0;
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let next = floor.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return TrafficId(next),
                Err(actual) => prev = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests;
