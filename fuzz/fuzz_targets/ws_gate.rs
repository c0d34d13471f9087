//! The WebSocket gate (frametap-session's `ws`), the code that rewrites what is
//! forwarded. One direction of a connection is fed in chunks, with rules and
//! injected messages, and what the receiver gets is checked against what it must
//! get:
//!
//! - no rules and nothing injected: the output is the input, byte for byte, for
//!   every chunking (raw bytes included);
//! - otherwise the output parses as valid frames for the receiver, inflating with
//!   the negotiated context, and its messages are exactly the input's with each
//!   rule's decision applied (dropped, rewritten, or closed after), plus each
//!   injected message once, never inside another message and never before a
//!   message that had ended when it was injected;
//! - every frame the sender sent is recorded once, dropped ones as dropped, and
//!   sequence numbers run 1..=n without a gap.
//!
//! Input: `flags, chunk, ops...` (see [`Scenario::parse`]); `flags` bit 7 selects
//! raw mode, where the rest is wire bytes of the direction.
#![no_main]

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use frametap_model::{FrameRecord, Record, TrafficId};
use frametap_proto::Peer;
use frametap_proto::ws::{DeflateConfig, WsDirection, WsEvent, encode_frame};
use frametap_session::rules::{Action, CompiledRule, ConnectionFacts, MessageFacts, RuleBook};
use frametap_session::ws::{Forward, WsSession, WsSetup};

/// Rule sets, written for messages the client sends ("to-server"); for a server
/// sender the directions are swapped. Text content is lowercase a-h, so these
/// match often.
const RULE_SETS: [&[&str]; 8] = [
    &[],
    &[r#"{"direction":"to-server","contains":"ab","action":{"kind":"drop"}}"#],
    &[
        r#"{"direction":"to-server","type":"text","action":{"kind":"replace","pattern":"a+","replacement":"Z"}}"#,
    ],
    &[
        r#"{"direction":"to-server","regex":"abc","action":{"kind":"close","code":4000,"reason":"stop"}}"#,
    ],
    &[r#"{"direction":"to-server","type":"binary","action":{"kind":"drop"}}"#],
    // Only the other direction: gated, nothing changes.
    &[r#"{"direction":"to-client","action":{"kind":"drop"}}"#],
    &[
        r#"{"direction":"to-server","type":"text","action":{"kind":"replace","pattern":"b","replacement":""}}"#,
        r#"{"direction":"to-server","contains":"cc","action":{"kind":"drop"}}"#,
    ],
    // Another host: never applies.
    &[r#"{"host":"other.test","action":{"kind":"drop"}}"#],
];

const BIG_CAP: usize = 1 << 16;
const SMALL_CAP: usize = 48;

fn books() -> &'static [[Arc<RuleBook>; 2]; 8] {
    static BOOKS: OnceLock<[[Arc<RuleBook>; 2]; 8]> = OnceLock::new();
    BOOKS.get_or_init(|| {
        RULE_SETS.map(|set| {
            let book = |swap: bool| {
                let rules = set
                    .iter()
                    .map(|r| {
                        let r = if swap {
                            r.replace("to-server", "TMP")
                                .replace("to-client", "to-server")
                                .replace("TMP", "to-client")
                        } else {
                            r.to_string()
                        };
                        serde_json::from_str(&r).expect("rule parses")
                    })
                    .collect();
                Arc::new(RuleBook::new(rules).expect("rule compiles"))
            };
            [book(false), book(true)]
        })
    })
}

fn conn() -> ConnectionFacts {
    ConnectionFacts {
        host: "chat.test".into(),
        path: "/ws".into(),
    }
}

#[derive(Debug)]
enum Op {
    /// A data message: its frames' wire bytes, and what it means.
    Message {
        is_text: bool,
        content: Vec<u8>,
        /// Frames to split it into (fewer when it is short).
        frames: usize,
        /// A ping between its first and second frame.
        ping_inside: bool,
        /// Sent without compression although permessage-deflate was negotiated.
        uncompressed: bool,
    },
    /// A ping alone between messages.
    Ping,
    /// Inject this text toward the receiver once everything before is fed.
    Inject(String),
}

#[derive(Debug)]
struct Scenario {
    sender: Peer,
    deflate: Option<DeflateConfig>,
    rules: usize,
    small_cap: bool,
    chunk: usize,
    raw: Option<Vec<u8>>,
    ops: Vec<Op>,
}

impl Scenario {
    /// `flags`: bit 0 sender (server if set), bit 1 permessage-deflate, bit 2 the
    /// sender drops its window between messages, bits 3-5 the rule set, bit 6 a
    /// small payload cap, bit 7 raw mode. `chunk`: read size (0: one read).
    /// Ops: `kind` byte (bits 0-1: 0/1 message, 2 inject, 3 ping; bit 2 binary;
    /// bits 3-4 fragments - 1; bit 5 a ping inside; bit 6 sent uncompressed), then
    /// a length byte and that many content bytes.
    fn parse(data: &[u8]) -> Option<Self> {
        let (&flags, rest) = data.split_first()?;
        let (&chunk, mut rest) = rest.split_first()?;
        let sender = if flags & 1 == 0 {
            Peer::Client
        } else {
            Peer::Server
        };
        let deflate = (flags & 2 != 0).then(|| DeflateConfig {
            client_no_context_takeover: flags & 4 != 0,
            server_no_context_takeover: flags & 4 != 0,
            ..DeflateConfig::default()
        });
        let mut scenario = Scenario {
            sender,
            deflate,
            rules: usize::from((flags >> 3) & 7),
            small_cap: flags & 64 != 0,
            chunk: usize::from(chunk),
            raw: None,
            ops: Vec::new(),
        };
        if flags & 128 != 0 {
            scenario.raw = Some(rest.to_vec());
            return Some(scenario);
        }
        let mut injected = 0;
        while let Some((&kind, after)) = rest.split_first() {
            let (&len, after) = after.split_first().unwrap_or((&0, &[]));
            let len = usize::from(len).min(after.len());
            let (bytes, after) = after.split_at(len);
            rest = after;
            match kind & 3 {
                0 | 1 => {
                    let is_text = kind & 4 == 0;
                    let content = if is_text {
                        bytes.iter().map(|b| b'a' + b % 8).collect()
                    } else {
                        bytes.to_vec()
                    };
                    scenario.ops.push(Op::Message {
                        is_text,
                        content,
                        frames: 1 + usize::from((kind >> 3) & 3),
                        ping_inside: kind & 32 != 0,
                        uncompressed: kind & 64 != 0,
                    });
                }
                2 => {
                    injected += 1;
                    scenario.ops.push(Op::Inject(format!("INJ{injected}")));
                }
                _ => scenario.ops.push(Op::Ping),
            }
            if scenario.ops.len() > 64 {
                break;
            }
        }
        Some(scenario)
    }
}

/// The sender's encoder: masks toward the server, compresses with a kept or fresh
/// window as negotiated.
struct SenderEncoder {
    sender: Peer,
    /// The compressor (made on first use) and whether the sender keeps its window.
    deflate: Option<(Option<flate2::Compress>, bool)>,
    key: u8,
}

impl SenderEncoder {
    fn new(sender: Peer, deflate: &Option<DeflateConfig>) -> Self {
        let deflate = deflate.as_ref().map(|d| {
            let keep = match sender {
                Peer::Client => !d.client_no_context_takeover,
                Peer::Server => !d.server_no_context_takeover,
            };
            (None, keep)
        });
        Self {
            sender,
            deflate,
            key: 0,
        }
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        self.key = self.key.wrapping_add(37);
        (self.sender == Peer::Client).then_some([self.key, 7, self.key ^ 0x5a, 1])
    }

    fn compress(&mut self, content: &[u8]) -> Vec<u8> {
        let (compress, keep) = self.deflate.as_mut().expect("deflate negotiated");
        let compress = compress
            .get_or_insert_with(|| flate2::Compress::new(flate2::Compression::fast(), false));
        if !*keep {
            compress.reset();
        }
        let mut out = Vec::with_capacity(content.len() + 64);
        compress
            .compress_vec(content, &mut out, flate2::FlushCompress::Sync)
            .expect("compress");
        while out.capacity() - out.len() < 16 {
            out.reserve(64);
        }
        compress
            .compress_vec(&[], &mut out, flate2::FlushCompress::Sync)
            .expect("flush");
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    /// The frames of one message (a ping after the first when `ping_inside` and
    /// there is a second): bytes, data frames, pings.
    fn message(
        &mut self,
        is_text: bool,
        content: &[u8],
        frames: usize,
        compressed: bool,
        ping_inside: bool,
    ) -> (Vec<u8>, usize, usize) {
        let payload = if compressed {
            self.compress(content)
        } else {
            content.to_vec()
        };
        let pieces: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]; 1]
        } else {
            payload
                .chunks(payload.len().div_ceil(frames).max(1))
                .collect()
        };
        let mut out = Vec::new();
        let mut pings = 0;
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 {
                if is_text { 1 } else { 2 }
            } else {
                0
            };
            let fin = i + 1 == pieces.len();
            let mask = self.mask();
            out.extend(encode_frame(fin, compressed && i == 0, opcode, mask, piece));
            if i == 0 && ping_inside && !fin {
                let mask = self.mask();
                out.extend(encode_frame(true, false, 9, mask, b"p"));
                pings += 1;
            }
        }
        (out, pieces.len(), pings)
    }

    fn ping(&mut self) -> Vec<u8> {
        let mask = self.mask();
        encode_frame(true, false, 9, mask, b"p")
    }
}

/// What one fed message is expected to become.
#[derive(Debug)]
struct Sent {
    is_text: bool,
    content: Vec<u8>,
    /// Stream offsets of its first and one past its last byte.
    start: usize,
    end: usize,
    frames: usize,
}

struct Run {
    ws: WsSession,
    out: Vec<u8>,
    records: Vec<Record>,
    receiver: Peer,
}

impl Run {
    fn new(s: &Scenario) -> Self {
        let book = &books()[s.rules][usize::from(s.sender == Peer::Server)];
        let ws = WsSession::new(WsSetup {
            traffic: TrafficId(1),
            conn: conn(),
            deflate: s.deflate.clone(),
            foreign_extensions: false,
            error: None,
            payload_cap: if s.small_cap { SMALL_CAP } else { BIG_CAP },
            rules: Arc::clone(book),
            mask_keys: || [9, 8, 7, 6],
        });
        Run {
            ws,
            out: Vec::new(),
            records: Vec::new(),
            receiver: s.sender.other(),
        }
    }

    fn drain_outboxes(&mut self) {
        if let Some(outbox) = self.ws.take_outbox(self.receiver) {
            self.records.extend(outbox.records);
            self.out.extend(outbox.bytes);
        }
        // The close frame a close rule sends back to the sender: recorded only.
        if let Some(outbox) = self.ws.take_outbox(self.receiver.other()) {
            self.records.extend(outbox.records);
        }
    }

    fn feed(&mut self, sender: Peer, piece: &[u8]) {
        self.drain_outboxes();
        match self.ws.feed(sender, piece, 1, &mut self.records) {
            Forward::AsIs => self.out.extend_from_slice(piece),
            Forward::Bytes(bytes) => self.out.extend(bytes),
        }
    }

    fn finish(mut self) -> (Vec<u8>, Vec<FrameRecord>) {
        self.drain_outboxes();
        self.ws.finish(&mut self.records);
        let frames = self
            .records
            .into_iter()
            .filter_map(|r| match r {
                Record::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        (self.out, frames)
    }
}

/// What the receiver makes of the output: data messages and close frames, in
/// order; panics on any protocol error.
fn receive(s: &Scenario, bytes: &[u8]) -> Vec<(bool, Vec<u8>, Option<u16>)> {
    let mut parser = WsDirection::new(s.sender, s.deflate.clone(), 1 << 24);
    let mut events = Vec::new();
    parser.push(bytes, &mut events);
    let mut got = Vec::new();
    for event in events {
        match event {
            WsEvent::Error(e) => panic!("the receiver cannot parse what frametap sent: {e}"),
            WsEvent::Message(m) => got.push((m.is_text, m.content, None)),
            WsEvent::Frame(f) if f.opcode == 8 => got.push((false, Vec::new(), f.close_code)),
            WsEvent::Frame(_) => {}
        }
    }
    assert!(!parser.mid_message(), "frametap left a message unfinished");
    got
}

fn check_sequence(frames: &[FrameRecord]) {
    let mut seqs: Vec<u64> = frames.iter().map(|f| f.seq).collect();
    seqs.sort_unstable();
    for (i, seq) in seqs.iter().enumerate() {
        assert_eq!(
            *seq,
            i as u64 + 1,
            "sequence numbers skip or repeat: {seqs:?}"
        );
    }
}

fn raw(s: &Scenario, bytes: &[u8]) {
    let chunk = if s.chunk == 0 {
        bytes.len().max(1)
    } else {
        s.chunk
    };
    let mut run = Run::new(s);
    for piece in bytes.chunks(chunk) {
        run.feed(s.sender, piece);
    }
    let (out, frames) = run.finish();
    check_sequence(&frames);
    if matches!(s.rules, 0 | 7) {
        assert_eq!(out, bytes, "without rules the bytes must pass unchanged");
    }
}

fn structured(s: &Scenario) {
    let mut encoder = SenderEncoder::new(s.sender, &s.deflate);
    // The stream, its messages, and where each injection happens.
    let mut stream = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut injections: Vec<(usize, String)> = Vec::new();
    let mut pings = 0;
    for op in &s.ops {
        match op {
            Op::Message {
                is_text,
                content,
                frames,
                ping_inside,
                uncompressed,
            } => {
                let compressed = s.deflate.is_some() && !uncompressed;
                let start = stream.len();
                let (bytes, frames, pings_inside) =
                    encoder.message(*is_text, content, *frames, compressed, *ping_inside);
                stream.extend(bytes);
                pings += pings_inside;
                sent.push(Sent {
                    is_text: *is_text,
                    content: content.clone(),
                    start,
                    end: stream.len(),
                    frames,
                });
            }
            Op::Ping => {
                stream.extend(encoder.ping());
                pings += 1;
            }
            Op::Inject(text) => injections.push((stream.len(), text.clone())),
        }
    }
    let chunk = if s.chunk == 0 {
        stream.len().max(1)
    } else {
        s.chunk
    };
    let mut run = Run::new(s);
    let mut fed = 0;
    let mut next_injection = 0;
    // Offsets at which each injection actually happened, and whether it was taken.
    let mut injected_at: Vec<(usize, String, bool)> = Vec::new();
    loop {
        while next_injection < injections.len() && injections[next_injection].0 <= fed {
            let text = injections[next_injection].1.clone();
            let taken = run
                .ws
                .inject(run.receiver, text.as_bytes(), false, 1)
                .is_ok();
            injected_at.push((fed, text, taken));
            run.drain_outboxes();
            next_injection += 1;
        }
        if fed >= stream.len() {
            break;
        }
        let end = (fed + chunk).min(stream.len());
        run.feed(s.sender, &stream[fed..end]);
        fed = end;
    }
    let (out, frames) = run.finish();
    check_sequence(&frames);
    let from_sender = frames.iter().filter(|f| !f.injected && !f.modified).count();
    let sent_frames: usize = sent.iter().map(|m| m.frames).sum::<usize>() + pings;
    assert_eq!(
        from_sender, sent_frames,
        "every frame the sender sent is recorded once"
    );

    if injected_at.is_empty() && matches!(s.rules, 0 | 7) {
        assert_eq!(out, stream, "without rules the bytes must pass unchanged");
    }
    let got = receive(s, &out);
    if s.small_cap {
        // Messages over the cap pass unexamined (or close with 1009): only validity.
        return;
    }

    // What the rules make of each message, in order, up to a close.
    let book = &books()[s.rules][usize::from(s.sender == Peer::Server)];
    let rules: Vec<CompiledRule> = book.current().for_connection(&conn());
    let mut expected: Vec<(usize, bool, Vec<u8>, Option<u16>)> = Vec::new();
    let mut closed_at = None;
    for (index, m) in sent.iter().enumerate() {
        let facts = MessageFacts {
            sender: s.sender,
            is_text: m.is_text,
            content: &m.content,
        };
        match rules.iter().find(|r| r.matches(&facts)).map(|r| &r.action) {
            None => expected.push((index, m.is_text, m.content.clone(), None)),
            Some(Action::Drop) => {}
            Some(Action::Replace {
                pattern,
                replacement,
            }) => {
                let text = std::str::from_utf8(&m.content).ok();
                match text.map(|t| pattern.replace_all(t, replacement.as_str())) {
                    Some(Cow::Owned(new)) => expected.push((index, true, new.into_bytes(), None)),
                    _ => expected.push((index, m.is_text, m.content.clone(), None)),
                }
            }
            Some(Action::Close { code, .. }) => {
                expected.push((index, false, Vec::new(), Some(*code)));
                closed_at = Some(index);
                break;
            }
        }
    }
    // The receiver's items without the injected ones must be exactly that.
    let is_injected = |item: &(bool, Vec<u8>, Option<u16>)| item.0 && item.1.starts_with(b"INJ");
    let rest: Vec<_> = got.iter().filter(|i| !is_injected(i)).cloned().collect();
    let want: Vec<_> = expected
        .iter()
        .map(|(_, t, c, code)| (*t, c.clone(), *code))
        .collect();
    assert_eq!(
        rest, want,
        "the receiver's messages differ from the rules' decisions"
    );

    // Each injection once, after what had ended before it, before what started after.
    for (at, text, taken) in &injected_at {
        let positions: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|(_, i)| i.0 && i.1 == text.as_bytes())
            .map(|(p, _)| p)
            .collect();
        if !taken {
            assert!(positions.is_empty(), "a refused injection went out");
            continue;
        }
        if closed_at.is_some() {
            assert!(positions.len() <= 1, "{text} went out twice");
            if positions.is_empty() {
                continue;
            }
        } else {
            assert_eq!(positions.len(), 1, "{text} must go out exactly once");
        }
        let pos = positions[0];
        // Index in `got` of each expected item.
        let mut item_positions = Vec::new();
        let mut k = 0;
        for (p, item) in got.iter().enumerate() {
            if !is_injected(item) {
                item_positions.push((expected[k].0, p));
                k += 1;
            }
        }
        for (index, p) in item_positions {
            let m = &sent[index];
            if m.end <= *at {
                assert!(
                    p < pos,
                    "{text} overtook a message that had ended before it"
                );
            }
            if m.start >= *at && closed_at.is_none() {
                assert!(p > pos, "{text} came after a message that started after it");
            }
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(scenario) = Scenario::parse(data) else {
        return;
    };
    match &scenario.raw {
        Some(bytes) => raw(&scenario, bytes),
        None => structured(&scenario),
    }
});
