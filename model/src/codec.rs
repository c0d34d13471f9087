//! Key layouts and the binary encoding of [`FrameRecord`] values.
//!
//! Keys (all big-endian so they sort by time, then by sequence):
//! - `traffic`:   `TrafficId` (8 bytes)
//! - `ws`:        `TrafficId` + kind (1 byte: [`WS_OPEN`] / [`WS_CLOSE`] of a
//!   WebSocket connection, [`TUNNEL_END`] of a connection relayed untouched)
//! - `frames`:    `TrafficId` + seq (8 bytes)
//! - `deletions`: `TrafficId` + seq (8 bytes): frames of the connection up to and
//!   including seq were deleted.
//! - `bodies`:    `TrafficId` + which body (1 byte: 0 request, 1 response) + chunk
//!   seq (u32); the value is the chunk's bytes, as they are.
//! - `meta`:      kind (1 byte: [`META_RULES`]) + version (u64); the value is JSON.
//!
//! Frame value, format 1 (the traffic id and seq live in the key, not the value):
//!
//! ```text
//! u8      format (1)
//! u8      flags: 1 from_client, 2 fin, 4 masked, 8 compressed, 16 truncated,
//!                32 injected, 64 dropped, 128 has close_code
//! u8      flags2: 1 has close_reason, 2 binary message, 4 modified by a rule;
//!                other bits must be 0
//! u8      opcode
//! u8      rsv
//! varint  timestamp_ms
//! varint  wire_len
//! varint  payload_len
//! varint  stored payload length, then that many bytes
//! [u16 BE close_code]                  if flags & 128
//! [varint length, UTF-8 close_reason]  if flags2 & 1
//! ```
//!
//! Varints are unsigned LEB128 (at most 10 bytes). Decoding rejects unknown formats,
//! reserved bits, overlong/overflowing varints, lengths past the end, invalid UTF-8
//! and trailing bytes; it never panics and never allocates more than the input size.

use crate::ids::{FrameId, TrafficId};
use crate::records::{BodyChunk, BodyOf, FrameRecord, Record};

/// Current frame value format.
pub const FRAME_FORMAT_V1: u8 = 1;
/// `ws` key kind byte of a [`crate::WsOpen`] record.
pub const WS_OPEN: u8 = 0;
/// `ws` key kind byte of a [`crate::WsClose`] record.
pub const WS_CLOSE: u8 = 1;
/// `ws` key kind byte of a [`crate::TunnelEnd`] record (the end of a connection
/// relayed untouched; readers that predate it ignore the key).
pub const TUNNEL_END: u8 = 2;
/// `meta` key kind byte of the agent's rule set snapshots.
pub const META_RULES: u8 = b'r';

/// Why a stored value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("empty frame value")]
    Empty,
    #[error("unknown frame format {0} (written by a newer frametap?)")]
    UnknownFormat(u8),
    #[error("frame value truncated while reading {0}")]
    Truncated(&'static str),
    #[error("invalid varint in {0}")]
    BadVarint(&'static str),
    #[error("reserved flag bits set: {0:#x}")]
    ReservedBits(u8),
    #[error("close reason is not UTF-8")]
    BadUtf8,
    #[error("{0} trailing bytes after frame value")]
    Trailing(usize),
    #[error("bad key length {0}")]
    BadKey(usize),
    #[error("unknown record kind {0}")]
    UnknownRecordKind(u8),
    #[error("invalid record: {0}")]
    BadRecord(String),
}

const F_FROM_CLIENT: u8 = 1;
const F_FIN: u8 = 2;
const F_MASKED: u8 = 4;
const F_COMPRESSED: u8 = 8;
const F_TRUNCATED: u8 = 16;
const F_INJECTED: u8 = 32;
const F_DROPPED: u8 = 64;
const F_CLOSE_CODE: u8 = 128;
const F2_CLOSE_REASON: u8 = 1;
const F2_BINARY_MESSAGE: u8 = 2;
const F2_MODIFIED: u8 = 4;
const HEADER_LEN: usize = 5;

/// Key of a traffic entry.
pub fn traffic_key(id: TrafficId) -> [u8; 8] {
    id.to_be_bytes()
}

/// Key of a `ws` record (`kind` is [`WS_OPEN`] or [`WS_CLOSE`]).
pub fn ws_key(id: TrafficId, kind: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8] = kind;
    k
}

/// Key of a frame (also the layout of `deletions` keys).
pub fn frame_key(id: FrameId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.traffic.to_be_bytes());
    k[8..].copy_from_slice(&id.seq.to_be_bytes());
    k
}

/// Key of a body chunk.
pub fn body_key(traffic: TrafficId, of: BodyOf, seq: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..8].copy_from_slice(&traffic.to_be_bytes());
    k[8] = of.key_byte();
    k[9..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Inverse of [`body_key`].
pub fn parse_body_key(k: &[u8]) -> Result<(TrafficId, BodyOf, u32), CodecError> {
    if k.len() != 13 {
        return Err(CodecError::BadKey(k.len()));
    }
    let traffic = TrafficId::from_key_prefix(k).ok_or(CodecError::BadKey(k.len()))?;
    let of = BodyOf::from_key_byte(k[8]).ok_or(CodecError::BadKey(k.len()))?;
    let seq = u32::from_be_bytes([k[9], k[10], k[11], k[12]]);
    Ok((traffic, of, seq))
}

/// Key of a `meta` record.
pub fn meta_key(kind: u8, version: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = kind;
    k[1..].copy_from_slice(&version.to_be_bytes());
    k
}

/// Inverse of [`frame_key`].
pub fn parse_frame_key(k: &[u8]) -> Result<FrameId, CodecError> {
    if k.len() != 16 {
        return Err(CodecError::BadKey(k.len()));
    }
    let traffic = TrafficId::from_key_prefix(k).ok_or(CodecError::BadKey(k.len()))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&k[8..]);
    Ok(FrameId::new(traffic, u64::from_be_bytes(seq)))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes a frame value (everything but the traffic id and seq, which are the key).
pub fn encode_frame(f: &FrameRecord) -> Vec<u8> {
    let reason = f.close_reason.as_deref();
    let mut out =
        Vec::with_capacity(HEADER_LEN + 40 + f.payload.len() + reason.map_or(0, str::len));
    let mut flags = 0u8;
    for (on, bit) in [
        (f.from_client, F_FROM_CLIENT),
        (f.fin, F_FIN),
        (f.masked, F_MASKED),
        (f.compressed, F_COMPRESSED),
        (f.truncated, F_TRUNCATED),
        (f.injected, F_INJECTED),
        (f.dropped, F_DROPPED),
        (f.close_code.is_some(), F_CLOSE_CODE),
    ] {
        if on {
            flags |= bit;
        }
    }
    let mut flags2 = if reason.is_some() { F2_CLOSE_REASON } else { 0 };
    if f.binary_message {
        flags2 |= F2_BINARY_MESSAGE;
    }
    if f.modified {
        flags2 |= F2_MODIFIED;
    }
    out.extend_from_slice(&[FRAME_FORMAT_V1, flags, flags2, f.opcode, f.rsv]);
    put_varint(&mut out, f.timestamp_ms);
    put_varint(&mut out, f.wire_len);
    put_varint(&mut out, f.payload_len);
    put_varint(&mut out, f.payload.len() as u64);
    out.extend_from_slice(&f.payload);
    if let Some(code) = f.close_code {
        out.extend_from_slice(&code.to_be_bytes());
    }
    if let Some(r) = reason {
        put_varint(&mut out, r.len() as u64);
        out.extend_from_slice(r.as_bytes());
    }
    out
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if n > self.b.len() {
            return Err(CodecError::Truncated(what));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some((&byte, rest)) = self.b.split_first() else {
                return Err(CodecError::Truncated(what));
            };
            self.b = rest;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 1 {
                // The 10th byte may only contribute the top bit of a u64.
                return Err(CodecError::BadVarint(what));
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    // Overlong encoding: keep one representation per value.
                    return Err(CodecError::BadVarint(what));
                }
                return Ok(v);
            }
        }
        Err(CodecError::BadVarint(what))
    }

    fn len(&mut self, what: &'static str) -> Result<usize, CodecError> {
        let n = self.varint(what)?;
        // Checked against the remaining input before any allocation.
        if n > self.b.len() as u64 {
            return Err(CodecError::Truncated(what));
        }
        Ok(n as usize)
    }
}

/// Reads only `(from_client, opcode)` from a frame value (for filtering without a full
/// decode).
pub fn peek_frame(v: &[u8]) -> Result<(bool, u8), CodecError> {
    match v.first() {
        None => Err(CodecError::Empty),
        Some(&FRAME_FORMAT_V1) if v.len() >= HEADER_LEN => Ok((v[1] & F_FROM_CLIENT != 0, v[3])),
        Some(&FRAME_FORMAT_V1) => Err(CodecError::Truncated("header")),
        Some(&other) => Err(CodecError::UnknownFormat(other)),
    }
}

/// Decodes a frame value produced by [`encode_frame`]; `id` comes from the key.
pub fn decode_frame(id: FrameId, v: &[u8]) -> Result<FrameRecord, CodecError> {
    let mut r = Reader { b: v };
    let format = *v.first().ok_or(CodecError::Empty)?;
    if format != FRAME_FORMAT_V1 {
        return Err(CodecError::UnknownFormat(format));
    }
    let h = r.take(HEADER_LEN, "header")?;
    let (flags, flags2, opcode, rsv) = (h[1], h[2], h[3], h[4]);
    if flags2 & !(F2_CLOSE_REASON | F2_BINARY_MESSAGE | F2_MODIFIED) != 0 {
        return Err(CodecError::ReservedBits(flags2));
    }
    let timestamp_ms = r.varint("timestamp")?;
    let wire_len = r.varint("wire_len")?;
    let payload_len = r.varint("payload_len")?;
    let n = r.len("payload")?;
    let payload = r.take(n, "payload")?.to_vec();
    let close_code = if flags & F_CLOSE_CODE != 0 {
        let c = r.take(2, "close code")?;
        Some(u16::from_be_bytes([c[0], c[1]]))
    } else {
        None
    };
    let close_reason = if flags2 & F2_CLOSE_REASON != 0 {
        let n = r.len("close reason")?;
        let bytes = r.take(n, "close reason")?;
        Some(
            std::str::from_utf8(bytes)
                .map_err(|_| CodecError::BadUtf8)?
                .to_owned(),
        )
    } else {
        None
    };
    if !r.b.is_empty() {
        return Err(CodecError::Trailing(r.b.len()));
    }
    Ok(FrameRecord {
        traffic: id.traffic,
        seq: id.seq,
        timestamp_ms,
        from_client: flags & F_FROM_CLIENT != 0,
        opcode,
        fin: flags & F_FIN != 0,
        rsv,
        masked: flags & F_MASKED != 0,
        compressed: flags & F_COMPRESSED != 0,
        wire_len,
        payload_len,
        truncated: flags & F_TRUNCATED != 0,
        payload,
        close_code,
        close_reason,
        injected: flags & F_INJECTED != 0,
        dropped: flags & F_DROPPED != 0,
        binary_message: flags2 & F2_BINARY_MESSAGE != 0,
        modified: flags2 & F2_MODIFIED != 0,
    })
}

const RECORD_TRAFFIC: u8 = 1;
const RECORD_WS_OPEN: u8 = 2;
const RECORD_WS_CLOSE: u8 = 3;
const RECORD_FRAME: u8 = 4;
const RECORD_TUNNEL_END: u8 = 5;
const RECORD_BODY: u8 = 6;

/// Encodes one [`Record`] on its own (kind byte, then the record): how the agent
/// streams records to other processes. Frames use the compact value format above,
/// preceded by their 16-byte key; body chunks are their 13-byte key and their
/// bytes; the others are JSON, as in the store.
pub fn encode_record(record: &Record) -> Vec<u8> {
    fn json(kind: u8, value: &impl serde::Serialize) -> Vec<u8> {
        let mut out = vec![kind];
        // Plain structs with string keys: serialising cannot fail.
        serde_json::to_writer(&mut out, value).expect("records serialise to JSON");
        out
    }
    match record {
        Record::Traffic(t) => json(RECORD_TRAFFIC, t),
        Record::WsOpen(o) => json(RECORD_WS_OPEN, o),
        Record::WsClose(c) => json(RECORD_WS_CLOSE, c),
        Record::TunnelEnd(e) => json(RECORD_TUNNEL_END, e),
        Record::Frame(f) => {
            let value = encode_frame(f);
            let mut out = Vec::with_capacity(1 + 16 + value.len());
            out.push(RECORD_FRAME);
            out.extend_from_slice(&frame_key(f.id()));
            out.extend_from_slice(&value);
            out
        }
        Record::Body(b) => {
            let mut out = Vec::with_capacity(1 + 13 + b.data.len());
            out.push(RECORD_BODY);
            out.extend_from_slice(&body_key(b.traffic, b.of, b.seq));
            out.extend_from_slice(&b.data);
            out
        }
    }
}

/// Decodes what [`encode_record`] produced.
pub fn decode_record(bytes: &[u8]) -> Result<Record, CodecError> {
    let (&kind, rest) = bytes.split_first().ok_or(CodecError::Empty)?;
    let bad = |e: serde_json::Error| CodecError::BadRecord(e.to_string());
    Ok(match kind {
        RECORD_TRAFFIC => Record::Traffic(serde_json::from_slice(rest).map_err(bad)?),
        RECORD_WS_OPEN => Record::WsOpen(serde_json::from_slice(rest).map_err(bad)?),
        RECORD_WS_CLOSE => Record::WsClose(serde_json::from_slice(rest).map_err(bad)?),
        RECORD_TUNNEL_END => Record::TunnelEnd(serde_json::from_slice(rest).map_err(bad)?),
        RECORD_FRAME => {
            if rest.len() < 16 {
                return Err(CodecError::BadKey(rest.len()));
            }
            let (key, value) = rest.split_at(16);
            Record::Frame(decode_frame(parse_frame_key(key)?, value)?)
        }
        RECORD_BODY => {
            if rest.len() < 13 {
                return Err(CodecError::BadKey(rest.len()));
            }
            let (key, data) = rest.split_at(13);
            let (traffic, of, seq) = parse_body_key(key)?;
            Record::Body(BodyChunk {
                traffic,
                of,
                seq,
                data: data.to_vec(),
            })
        }
        other => return Err(CodecError::UnknownRecordKind(other)),
    })
}

#[cfg(test)]
mod tests;
