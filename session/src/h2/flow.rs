//! Flow control (RFC 9113 §6.9) of one direction of an HTTP/2 connection whose
//! WebSocket streams frametap rewrites, sans-IO.
//!
//! Forwarding a frame unchanged moves both peers' view of a window together. Once
//! frametap drops, replaces, holds or injects WebSocket messages, what the receiver
//! gets differs from what the sender sent, so the two views part, and frametap
//! keeps both:
//!
//! - the *sender's* window: what the sender believes it may still send (its DATA
//!   takes from it, the WINDOW_UPDATEs frametap writes to it add to it);
//! - the *receiver's* window: what frametap may still send the receiver (frametap's
//!   DATA takes from it, the receiver's WINDOW_UPDATEs add to it).
//!
//! The receiver's WINDOW_UPDATEs for the connection and for rewritten streams stop
//! at frametap, which grants the sender only `receiver − owed − sender`: `owed` is
//! what frametap holds or has queued for the receiver. So the sender can never send
//! more than the receiver accepts (the other streams' DATA passes straight through
//! and stays within the receiver's connection window), a dropped message is given
//! back to the sender at once, and an injected one is paid for out of the
//! receiver's next updates. With nothing rewritten the grant equals the update,
//! so the bytes are the same as the peers'.
//!
//! Rewritten DATA waits in a per-stream queue until both of the receiver's windows
//! (stream and connection) have room, and goes out in frames of at most 16,384
//! bytes, which every peer accepts; END_STREAM goes with the last byte.
use std::collections::BTreeMap;

use frametap_proto::h2::{DEFAULT_MAX_FRAME, DEFAULT_WINDOW, flag, frame_bytes, kind};

/// Below this much window a sender may wait for more before sending the rest of a
/// message (some send only whole frames), so a held message would never complete.
pub(crate) const STARVED_BELOW: i64 = DEFAULT_MAX_FRAME as i64;

/// One direction of data: its sender, its receiver, its rewritten streams.
pub(crate) struct Flow {
    /// The connection window the sender believes it has.
    sender: i64,
    /// The receiver's connection window: what frametap may still send it.
    receiver: i64,
    /// The receiver's SETTINGS_INITIAL_WINDOW_SIZE: new streams start with it.
    initial: i64,
    streams: BTreeMap<u32, StreamFlow>,
}

/// One stream frametap may rewrite (an extended CONNECT), in this direction.
struct StreamFlow {
    sender: i64,
    receiver: i64,
    /// DATA payload owed to the receiver, from `sent` on.
    queue: Vec<u8>,
    sent: usize,
    /// The sender ended the stream: END_STREAM goes with the queue's last byte.
    end: bool,
    end_sent: bool,
}

impl StreamFlow {
    fn queued(&self) -> usize {
        self.queue.len() - self.sent
    }
}

impl Flow {
    pub(crate) fn new() -> Self {
        let window = i64::from(DEFAULT_WINDOW);
        Flow {
            sender: window,
            receiver: window,
            initial: window,
            streams: BTreeMap::new(),
        }
    }

    /// Follows `stream`'s windows from its first frame on.
    pub(crate) fn track(&mut self, stream: u32) {
        self.streams.entry(stream).or_insert(StreamFlow {
            sender: self.initial,
            receiver: self.initial,
            queue: Vec::new(),
            sent: 0,
            end: false,
            end_sent: false,
        });
    }

    pub(crate) fn tracks(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// The stream is gone (reset): what was queued for it is never sent.
    pub(crate) fn forget(&mut self, stream: u32) {
        self.streams.remove(&stream);
    }

    /// Whether the sender ended `stream` (or it is not followed): nothing more may
    /// go to the receiver on it.
    pub(crate) fn sender_ended(&self, stream: u32) -> bool {
        self.streams.get(&stream).is_none_or(|s| s.end)
    }

    /// A DATA frame of `len` flow-controlled bytes from the sender. `forwarded`: as
    /// it came (both views move); otherwise frametap took it (the sender's only).
    pub(crate) fn on_data(&mut self, stream: u32, len: usize, forwarded: bool) {
        let len = len as i64;
        self.sender -= len;
        if forwarded {
            self.receiver -= len;
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            s.sender -= len;
            if forwarded {
                s.receiver -= len;
            }
        }
    }

    /// A WINDOW_UPDATE from the receiver. `forwarded`: the sender got it too.
    pub(crate) fn on_update(&mut self, stream: u32, increment: u32, forwarded: bool) {
        let increment = i64::from(increment);
        let (sender, receiver) = if stream == 0 {
            (&mut self.sender, &mut self.receiver)
        } else if let Some(s) = self.streams.get_mut(&stream) {
            (&mut s.sender, &mut s.receiver)
        } else {
            return;
        };
        *receiver += increment;
        if forwarded {
            *sender += increment;
        }
    }

    /// The receiver changed its initial stream window: every stream's windows move
    /// by the difference, in both views (the SETTINGS frame is forwarded).
    pub(crate) fn on_initial_window(&mut self, window: u32) {
        let delta = i64::from(window) - self.initial;
        self.initial = i64::from(window);
        for s in self.streams.values_mut() {
            s.sender += delta;
            s.receiver += delta;
        }
    }

    /// Bytes owed to the receiver on `stream`.
    pub(crate) fn queue(&mut self, stream: u32, bytes: &[u8]) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.queue.extend_from_slice(bytes);
        }
    }

    /// The sender ended `stream`: the receiver gets END_STREAM after the queue.
    pub(crate) fn end(&mut self, stream: u32) {
        if let Some(s) = self.streams.get_mut(&stream) {
            s.end = true;
        }
    }

    /// Whether a frame of `len` bytes may go to the receiver as it came: nothing of
    /// its stream is queued before it and both windows have room.
    pub(crate) fn may_pass(&self, stream: u32, len: usize) -> bool {
        let len = len as i64;
        self.streams
            .get(&stream)
            .is_some_and(|s| s.queued() == 0 && !s.end && len <= s.receiver)
            && len <= self.receiver
    }

    /// The sender ended `stream` with a frame that went as it came.
    pub(crate) fn ended_as_sent(&mut self, stream: u32) {
        self.streams.remove(&stream);
    }

    /// Writes DATA frames of the queues as far as the receiver's windows allow.
    pub(crate) fn send_queued(&mut self, out: &mut Vec<u8>) {
        let mut done = Vec::new();
        for (&id, s) in &mut self.streams {
            while s.queued() > 0 {
                let room = self.receiver.min(s.receiver).min(DEFAULT_MAX_FRAME as i64);
                if room <= 0 {
                    break;
                }
                let n = (room as usize).min(s.queued());
                let last = s.end && n == s.queued();
                let flags = if last { flag::END_STREAM } else { 0 };
                out.extend_from_slice(&frame_bytes(
                    kind::DATA,
                    flags,
                    id,
                    &s.queue[s.sent..s.sent + n],
                ));
                s.sent += n;
                self.receiver -= n as i64;
                s.receiver -= n as i64;
                s.end_sent |= last;
            }
            if s.queued() == 0 {
                s.queue.clear();
                s.sent = 0;
                if s.end && !s.end_sent {
                    // END_STREAM on an empty frame needs no window.
                    out.extend_from_slice(&frame_bytes(kind::DATA, flag::END_STREAM, id, &[]));
                    s.end_sent = true;
                }
            }
            if s.end_sent {
                done.push(id);
            }
        }
        for id in done {
            self.streams.remove(&id);
        }
    }

    /// Writes the WINDOW_UPDATEs the sender is owed (for the connection, then per
    /// stream): the receiver's window less what frametap owes it (`held` says what a
    /// stream's WebSocket session holds back) less what the sender already has.
    pub(crate) fn grant(&mut self, held: impl Fn(u32) -> usize, out: &mut Vec<u8>) {
        let owed_on = |id: u32, s: &StreamFlow| (s.queued() + held(id)) as i64;
        let owed: i64 = self.streams.iter().map(|(&id, s)| owed_on(id, s)).sum();
        let credit = self.receiver - owed - self.sender;
        if credit > 0 {
            out.extend_from_slice(&window_update(0, credit));
            self.sender += credit;
        }
        for (&id, s) in &mut self.streams {
            let credit = s.receiver - owed_on(id, s) - s.sender;
            if credit > 0 && !s.end {
                out.extend_from_slice(&window_update(id, credit));
                s.sender += credit;
            }
        }
    }

    /// Whether the sender has so little window left for `stream` that it may not
    /// send more until frametap lets held bytes go.
    pub(crate) fn starved(&self, stream: u32) -> bool {
        self.sender < STARVED_BELOW
            || self
                .streams
                .get(&stream)
                .is_some_and(|s| s.sender < STARVED_BELOW)
    }

    /// Streams whose windows are followed.
    pub(crate) fn stream_ids(&self) -> Vec<u32> {
        self.streams.keys().copied().collect()
    }
}

fn window_update(stream: u32, increment: i64) -> Vec<u8> {
    // The windows never exceed 2^31 - 1, so neither does an increment.
    let increment = increment.min(i64::from(i32::MAX)) as u32;
    frame_bytes(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use frametap_proto::h2::{FrameHeader, HEADER_LEN};

    fn frames(bytes: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let h = FrameHeader::parse(rest[..HEADER_LEN].try_into().unwrap());
            out.push((h, rest[HEADER_LEN..HEADER_LEN + h.len].to_vec()));
            rest = &rest[HEADER_LEN + h.len..];
        }
        out
    }

    fn increments(bytes: &[u8]) -> Vec<(u32, u32)> {
        frames(bytes)
            .into_iter()
            .map(|(h, p)| {
                assert_eq!(h.kind, kind::WINDOW_UPDATE);
                (h.stream, u32::from_be_bytes(p.try_into().unwrap()))
            })
            .collect()
    }

    #[test]
    fn unchanged_data_grants_exactly_the_receivers_updates() {
        let mut f = Flow::new();
        f.track(1);
        f.on_data(1, 1000, true);
        f.on_data(3, 500, true);
        let mut out = Vec::new();
        f.grant(|_| 0, &mut out);
        assert!(out.is_empty(), "nothing owed before the receiver updates");
        f.on_update(0, 1500, false);
        f.on_update(1, 1000, false);
        f.grant(|_| 0, &mut out);
        assert_eq!(increments(&out), [(0, 1500), (1, 1000)]);
    }

    #[test]
    fn a_dropped_message_is_given_back_and_an_injected_one_withheld() {
        let mut f = Flow::new();
        f.track(1);
        // 300 bytes taken and dropped: the sender gets them back at once.
        f.on_data(1, 300, false);
        let mut out = Vec::new();
        f.grant(|_| 0, &mut out);
        assert_eq!(increments(&out), [(0, 300), (1, 300)]);
        // 200 injected bytes go to the receiver, out of its window.
        f.queue(1, &[7; 200]);
        let mut data = Vec::new();
        f.send_queued(&mut data);
        assert_eq!(frames(&data)[0].1.len(), 200);
        // The receiver's update for them is not passed on.
        let mut out = Vec::new();
        f.on_update(0, 200, false);
        f.on_update(1, 200, false);
        f.grant(|_| 0, &mut out);
        assert!(out.is_empty(), "{:?}", increments(&out));
        f.on_update(0, 50, false);
        f.grant(|_| 0, &mut out);
        assert_eq!(increments(&out), [(0, 50)]);
    }

    #[test]
    fn queued_data_waits_for_both_windows_and_ends_the_stream_last() {
        let mut f = Flow::new();
        f.on_initial_window(20_000);
        f.track(5);
        f.on_data(5, 20_000, false);
        f.queue(5, &vec![1; 100_000]);
        f.end(5);
        let mut out = Vec::new();
        f.send_queued(&mut out);
        let sent: Vec<_> = frames(&out)
            .iter()
            .map(|(h, p)| (h.flags, p.len()))
            .collect();
        assert_eq!(sent, [(0, 16_384), (0, 3_616)], "stream window of 20,000");
        assert!(f.sender_ended(5) && f.tracks(5), "ended, not yet done");
        f.on_update(5, 100_000, false);
        let mut out = Vec::new();
        f.send_queued(&mut out);
        let sent: Vec<_> = frames(&out)
            .iter()
            .map(|(h, p)| (h.flags, p.len()))
            .collect();
        // What is left of the connection window (65,535) is the limit now.
        assert_eq!(sent, [(0, 16_384), (0, 16_384), (0, 12_767)]);
        f.on_update(0, 100_000, false);
        let mut out = Vec::new();
        f.send_queued(&mut out);
        let sent: Vec<_> = frames(&out)
            .iter()
            .map(|(h, p)| (h.flags, p.len()))
            .collect();
        assert_eq!(sent, [(0, 16_384), (0, 16_384), (flag::END_STREAM, 1_697)]);
        assert!(!f.tracks(5), "done once END_STREAM is out");
    }

    #[test]
    fn held_bytes_are_owed_and_starve_the_sender() {
        let mut f = Flow::new();
        f.track(1);
        f.on_data(1, 60_000, false);
        let mut out = Vec::new();
        f.grant(|_| 60_000, &mut out);
        assert!(out.is_empty());
        assert!(f.starved(1));
        // Released and sent: the receiver's update comes back to the sender.
        f.queue(1, &vec![0; 60_000]);
        f.send_queued(&mut out);
        f.on_update(0, 60_000, false);
        f.on_update(1, 60_000, false);
        let mut grants = Vec::new();
        f.grant(|_| 0, &mut grants);
        assert_eq!(increments(&grants), [(0, 60_000), (1, 60_000)]);
        assert!(!f.starved(1));
    }

    #[test]
    fn a_new_initial_window_moves_both_views() {
        let mut f = Flow::new();
        f.track(1);
        f.on_initial_window(1_000_000);
        assert!(f.may_pass(1, 65_535));
        assert!(!f.may_pass(1, 65_536), "the connection window stays 65,535");
        f.on_initial_window(100);
        assert!(!f.may_pass(1, 101));
        let mut out = Vec::new();
        f.grant(|_| 0, &mut out);
        assert!(out.is_empty());
    }
}
