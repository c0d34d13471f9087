//! WebSocket frames reassembled into messages (mitmproxy's `WebSocketMessage` model),
//! sans-IO: [`Reassembler::push`] the frames of one connection in capture (seq) order
//! and take messages out with [`Reassembler::next_message`], in the order of their
//! first frame. The REST view is [`crate::views::WebSocketMessage`]; the HAR export
//! uses the same messages.
//!
//! How frames make messages (RFC 6455 §5.4), and what happens when a recording breaks
//! the rules (deleted frames, a peer that misbehaves), never a panic:
//!
//! - One open message per direction: a data frame (opcode 1 text, 2 binary; the
//!   reserved opcodes 3 to 7 count as binary) starts it, continuations (opcode 0)
//!   extend it, the frame with `fin` completes it.
//! - Control frames (opcode 8 and up: close, ping, pong) are not messages and do not
//!   interrupt one: they may come between fragments.
//! - A data frame while a message of its direction is open ends the open message
//!   there, flagged `incomplete` (its final fragment never came), and starts the next.
//! - A continuation with no open message (its first fragment was deleted, or was never
//!   recorded) starts a message flagged `incomplete`, typed by the frame's
//!   `binary_message`. Except when reading after a cursor ([`Reassembler::after_cursor`]):
//!   then such continuations are the tails of messages at or before the cursor (already
//!   returned) and are skipped until the next data frame of their direction.
//! - Messages come out in the order of their first frame, so a message waits while one
//!   of the other direction that started before it is still open.
//!
//! A message's content is a prefix of what the application received: the stored
//! payloads of its frames, concatenated up to the first frame the agent truncated (the
//! bytes after it are missing, so later frames would leave a gap) and up to a cap.

use std::collections::VecDeque;

use frametap_store::{FrameRecord, TrafficId};

/// Largest content kept per message by the REST view and the HAR export (1 MiB);
/// longer messages are cut and flagged `truncated`.
pub const MESSAGE_CONTENT_CAP: usize = 1 << 20;

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledMessage {
    /// The connection.
    pub traffic: TrafficId,
    /// Seq of its first frame: the message's id is that frame's id.
    pub first_seq: u64,
    /// Seq of its last frame.
    pub last_seq: u64,
    /// Sent by the client.
    pub from_client: bool,
    /// A binary message (opcode 2, or reserved 3 to 7); otherwise text.
    pub binary: bool,
    /// The content, or only a prefix of it if `truncated`.
    pub content: Vec<u8>,
    /// Full length as the application sees it: the sum of the frames' payload lengths.
    pub length: u64,
    /// `content` is not all of the message: a frame was truncated by the agent, or
    /// the cap was reached.
    pub truncated: bool,
    /// Capture time of the last frame, Unix milliseconds.
    pub timestamp_ms: u64,
    /// Capture time of the first frame, Unix milliseconds.
    pub first_timestamp_ms: u64,
    /// Frames the message is made of.
    pub frame_count: u64,
    /// Every frame was dropped (captured, not forwarded).
    pub dropped: bool,
    /// Some frame was injected by frametap.
    pub injected: bool,
    /// Some frame was forwarded in place of a message a rule replaced.
    pub modified: bool,
    /// Frames are missing: its first fragment was not recorded, or a new message
    /// started before its final fragment.
    pub incomplete: bool,
}

/// A message being built, and whether it is complete.
#[derive(Debug)]
struct Slot {
    message: AssembledMessage,
    /// The message ended (final fragment, or cut short by the next message).
    done: bool,
    /// No more bytes are appended to the content (a truncated frame, or the cap).
    content_closed: bool,
}

/// Frames in, messages out. See the module docs for the rules.
#[derive(Debug)]
pub struct Reassembler {
    cap: usize,
    /// Start at most this many messages (`usize::MAX`: no limit).
    max_messages: usize,
    started: usize,
    /// Messages not handed out yet, in the order of their first frame.
    pending: VecDeque<Slot>,
    /// Ordinal (count of messages started before it) of `pending.front()`.
    base: usize,
    /// Per direction (index: `from_client as usize`): ordinal of its open message.
    open: [Option<usize>; 2],
    /// Per direction: continuations are tails of messages before the cursor.
    skip_tails: [bool; 2],
    /// Content bytes held in `pending`.
    buffered: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(MESSAGE_CONTENT_CAP)
    }
}

impl Reassembler {
    /// A reassembler keeping at most `cap` bytes of content per message.
    pub fn new(cap: usize) -> Reassembler {
        Reassembler {
            cap,
            max_messages: usize::MAX,
            started: 0,
            pending: VecDeque::new(),
            base: 0,
            open: [None, None],
            skip_tails: [false, false],
            buffered: 0,
        }
    }

    /// For frames read after a cursor: continuations before the first data frame of
    /// their direction belong to messages at or before the cursor and are skipped.
    pub fn after_cursor(mut self) -> Reassembler {
        self.skip_tails = [true, true];
        self
    }

    /// Starts at most `max` messages (a page): later data frames only end the open
    /// message of their direction, so reading can stop once [`Reassembler::is_done`].
    pub fn max_messages(mut self, max: usize) -> Reassembler {
        self.max_messages = max;
        self
    }

    /// `max_messages` messages were started and all were handed out or are ready:
    /// further frames change nothing.
    pub fn is_done(&self) -> bool {
        self.started >= self.max_messages && self.pending.iter().all(|slot| slot.done)
    }

    /// Content bytes of the messages not handed out yet (open, or waiting for an
    /// earlier open one): what reading on costs in memory.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Takes one frame of the connection; frames must come in seq order.
    pub fn push(&mut self, frame: &FrameRecord) {
        if frame.opcode >= 8 {
            return;
        }
        let direction = usize::from(frame.from_client);
        if frame.opcode == 0 {
            if let Some(ordinal) = self.open[direction] {
                let cap = self.cap;
                let slot = &mut self.pending[ordinal - self.base];
                self.buffered += append(slot, frame, cap);
                if frame.fin {
                    slot.done = true;
                    self.open[direction] = None;
                }
            } else if !self.skip_tails[direction] {
                // Its start is missing: keep what there is, flagged.
                self.start(frame, frame.binary_message, true);
            }
            return;
        }
        self.skip_tails[direction] = false;
        if let Some(ordinal) = self.open[direction].take() {
            let slot = &mut self.pending[ordinal - self.base];
            slot.done = true;
            slot.message.incomplete = true;
        }
        self.start(frame, frame.opcode != 1, false);
    }

    fn start(&mut self, frame: &FrameRecord, binary: bool, incomplete: bool) {
        if self.started >= self.max_messages {
            return;
        }
        let ordinal = self.started;
        self.started += 1;
        let mut slot = Slot {
            message: AssembledMessage {
                traffic: frame.traffic,
                first_seq: frame.seq,
                last_seq: frame.seq,
                from_client: frame.from_client,
                binary,
                content: Vec::new(),
                length: 0,
                truncated: false,
                timestamp_ms: frame.timestamp_ms,
                first_timestamp_ms: frame.timestamp_ms,
                frame_count: 0,
                dropped: true,
                injected: false,
                modified: false,
                incomplete,
            },
            done: frame.fin,
            content_closed: false,
        };
        self.buffered += append(&mut slot, frame, self.cap);
        if !frame.fin {
            self.open[usize::from(frame.from_client)] = Some(ordinal);
        }
        self.pending.push_back(slot);
    }

    /// The next message in first-frame order, once it and every message that started
    /// before it are complete.
    pub fn next_message(&mut self) -> Option<AssembledMessage> {
        if !self.pending.front()?.done {
            return None;
        }
        let slot = self.pending.pop_front()?;
        self.base += 1;
        self.buffered -= slot.message.content.len();
        Some(slot.message)
    }

    /// No more frames will come (the connection ended): open messages end here,
    /// flagged `incomplete`, and every message becomes available.
    pub fn finish(&mut self) {
        for ordinal in self.open.iter_mut().filter_map(Option::take) {
            let slot = &mut self.pending[ordinal - self.base];
            slot.done = true;
            slot.message.incomplete = true;
        }
    }
}

/// Adds `frame` to the message in `slot`; returns how many content bytes it added.
fn append(slot: &mut Slot, frame: &FrameRecord, cap: usize) -> usize {
    let message = &mut slot.message;
    message.last_seq = frame.seq;
    message.timestamp_ms = frame.timestamp_ms;
    message.frame_count += 1;
    message.length = message.length.saturating_add(frame.payload_len);
    message.dropped &= frame.dropped;
    message.injected |= frame.injected;
    message.modified |= frame.modified;
    if slot.content_closed {
        // Bytes are missing before this frame's: no gap in the content.
        if frame.payload_len > 0 {
            message.truncated = true;
        }
        return 0;
    }
    let room = cap.saturating_sub(message.content.len());
    let take = frame.payload.len().min(room);
    message.content.extend_from_slice(&frame.payload[..take]);
    if take < frame.payload.len() || frame.truncated {
        message.truncated = true;
        slot.content_closed = true;
    }
    take
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TrafficId = TrafficId(7 << 16);

    fn frame(seq: u64, from_client: bool, opcode: u8, fin: bool, payload: &[u8]) -> FrameRecord {
        FrameRecord {
            traffic: T,
            seq,
            timestamp_ms: 1000 + seq,
            from_client,
            opcode,
            fin,
            rsv: 0,
            masked: from_client,
            compressed: false,
            wire_len: payload.len() as u64 + 2,
            payload_len: payload.len() as u64,
            truncated: false,
            payload: payload.to_vec(),
            close_code: None,
            close_reason: None,
            injected: false,
            dropped: false,
            binary_message: opcode == 2,
            modified: false,
        }
    }

    fn run(mut r: Reassembler, frames: &[FrameRecord], finish: bool) -> Vec<AssembledMessage> {
        let mut out = Vec::new();
        for f in frames {
            r.push(f);
            while let Some(m) = r.next_message() {
                out.push(m);
            }
        }
        if finish {
            r.finish();
            while let Some(m) = r.next_message() {
                out.push(m);
            }
        }
        out
    }

    fn summary(messages: &[AssembledMessage]) -> Vec<(u64, u64, bool, &[u8], bool)> {
        messages
            .iter()
            .map(|m| {
                (
                    m.first_seq,
                    m.last_seq,
                    m.binary,
                    m.content.as_slice(),
                    m.incomplete,
                )
            })
            .collect()
    }

    #[test]
    fn interleaved_fragments_come_out_in_start_order() {
        let frames = [
            frame(1, true, 1, false, b"hel"),
            frame(2, false, 2, false, &[1]),
            frame(3, true, 9, true, b"ping"),
            frame(4, false, 0, true, &[2]),
            frame(5, true, 0, false, b"lo "),
            frame(6, false, 10, true, b""),
            frame(7, true, 0, true, b"world"),
            frame(8, false, 1, true, b"single"),
        ];
        let messages = run(Reassembler::default(), &frames, false);
        assert_eq!(
            summary(&messages),
            [
                (1, 7, false, &b"hello world"[..], false),
                (2, 4, true, &[1, 2][..], false),
                (8, 8, false, &b"single"[..], false),
            ]
        );
        assert_eq!(messages[0].frame_count, 3);
        assert_eq!(messages[0].length, 11);
        assert_eq!(messages[0].timestamp_ms, 1007);
        assert_eq!(messages[0].first_timestamp_ms, 1001);
    }

    #[test]
    fn an_open_message_holds_back_later_ones_until_finished() {
        let frames = [
            frame(1, true, 1, false, b"a"),
            frame(2, false, 1, true, b"b"),
        ];
        let mut r = Reassembler::default();
        for f in &frames {
            r.push(f);
        }
        assert_eq!(r.next_message(), None);
        assert_eq!(r.buffered_bytes(), 2);
        r.finish();
        let first = r.next_message().unwrap();
        assert_eq!((first.first_seq, first.incomplete), (1, true));
        assert_eq!(r.next_message().unwrap().first_seq, 2);
        assert_eq!(r.next_message(), None);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn broken_sequences_are_flagged_not_panics() {
        let frames = [
            // A tail without its start.
            frame(1, true, 0, false, b"tail"),
            frame(2, true, 0, true, b"!"),
            // A new message while one is open.
            frame(3, false, 1, false, b"abandoned"),
            frame(4, false, 2, true, &[9]),
            // Reserved data opcode: binary.
            frame(5, false, 3, true, b"x"),
        ];
        let messages = run(Reassembler::default(), &frames, false);
        assert_eq!(
            summary(&messages),
            [
                (1, 2, false, &b"tail!"[..], true),
                (3, 3, false, &b"abandoned"[..], true),
                (4, 4, true, &[9][..], false),
                (5, 5, true, &b"x"[..], false),
            ]
        );
        // After a cursor, the tail is part of a message already returned.
        let messages = run(Reassembler::default().after_cursor(), &frames, false);
        assert_eq!(
            messages.iter().map(|m| m.first_seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
    }

    #[test]
    fn content_stops_at_truncation_and_the_cap() {
        let mut cut = frame(1, false, 2, false, &[1, 2]);
        cut.payload_len = 10;
        cut.truncated = true;
        let frames = [cut, frame(2, false, 0, true, &[3, 4])];
        let messages = run(Reassembler::default(), &frames, false);
        assert_eq!(messages[0].content, [1, 2], "no gap");
        assert_eq!(messages[0].length, 12);
        assert!(messages[0].truncated);

        let frames = [
            frame(1, true, 1, false, b"abc"),
            frame(2, true, 0, true, b"def"),
        ];
        let messages = run(Reassembler::new(4), &frames, false);
        assert_eq!(messages[0].content, b"abcd");
        assert_eq!(messages[0].length, 6);
        assert!(messages[0].truncated);
    }

    #[test]
    fn flags_combine_over_frames() {
        let mut a = frame(1, true, 1, false, b"a");
        a.dropped = true;
        let mut b = frame(2, true, 0, true, b"b");
        b.dropped = true;
        let mut c = frame(3, false, 1, true, b"c");
        c.injected = true;
        let mut d = frame(4, false, 1, false, b"d");
        d.modified = true;
        d.dropped = true;
        let e = frame(5, false, 0, true, b"e");
        let messages = run(Reassembler::default(), &[a, b, c, d, e], false);
        let flags: Vec<_> = messages
            .iter()
            .map(|m| (m.dropped, m.injected, m.modified))
            .collect();
        assert_eq!(
            flags,
            [
                (true, false, false),
                (false, true, false),
                (false, false, true)
            ]
        );
    }

    #[test]
    fn max_messages_bounds_a_page() {
        let frames = [
            frame(1, true, 1, false, b"a"),
            frame(2, false, 1, true, b"b"),
            frame(3, false, 1, true, b"c"),
            frame(4, true, 0, true, b"a"),
        ];
        let mut r = Reassembler::default().max_messages(2);
        let mut out = Vec::new();
        for f in &frames {
            assert!(!r.is_done());
            r.push(f);
            while let Some(m) = r.next_message() {
                out.push(m.first_seq);
            }
        }
        assert!(r.is_done());
        assert_eq!(out, [1, 2]);
    }
}
