//! The WebSocket gate's unit tests: forwarding, rules, injection, re-encoding.
use frametap_model::Rule;
use frametap_proto::ws::{WsEvent, encode_frame};

use super::*;

const CAP: usize = 1 << 16;

fn session(rules: &[&str], deflate: Option<ws::DeflateConfig>) -> (WsSession, Arc<RuleBook>) {
    let book = Arc::new(
        RuleBook::new(
            rules
                .iter()
                .map(|r| serde_json::from_str::<Rule>(r).unwrap())
                .collect(),
        )
        .unwrap(),
    );
    let ws = WsSession::new(WsSetup {
        traffic: TrafficId(9),
        conn: ConnectionFacts {
            host: "chat.test".into(),
            path: "/ws".into(),
        },
        deflate,
        foreign_extensions: false,
        error: None,
        payload_cap: CAP,
        rules: Arc::clone(&book),
        mask_keys: || [1, 2, 3, 4],
    });
    (ws, book)
}

/// Feeds `bytes` in reads of `chunk`; returns what was forwarded and the records.
fn feed(ws: &mut WsSession, side: Peer, bytes: &[u8], chunk: usize) -> (Vec<u8>, Vec<FrameRecord>) {
    let mut out = Vec::new();
    let mut records = Vec::new();
    for piece in bytes.chunks(chunk) {
        match ws.feed(side, piece, 1, &mut records) {
            Forward::AsIs => out.extend_from_slice(piece),
            Forward::Bytes(b) => out.extend(b),
        }
    }
    (out, frames(records))
}

fn frames(records: Vec<Record>) -> Vec<FrameRecord> {
    records
        .into_iter()
        .filter_map(|r| match r {
            Record::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// What a receiver makes of `bytes`: its messages (and any protocol error).
fn received(sender: Peer, deflate: Option<ws::DeflateConfig>, bytes: &[u8]) -> Vec<WsEvent> {
    let mut parser = WsDirection::new(sender, deflate, 1 << 24);
    let mut events = Vec::new();
    parser.push(bytes, &mut events);
    events
        .into_iter()
        .filter(|e| !matches!(e, WsEvent::Frame(f) if f.opcode < 8))
        .collect()
}

fn texts(events: &[WsEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            WsEvent::Message(m) => String::from_utf8_lossy(&m.content).into_owned(),
            WsEvent::Frame(f) => format!("<opcode {}>", f.opcode),
            WsEvent::Error(e) => format!("<error {e}>"),
        })
        .collect()
}

fn client_text(fin: bool, opcode: u8, text: &str) -> Vec<u8> {
    encode_frame(fin, false, opcode, Some([1, 2, 3, 4]), text.as_bytes())
}

#[test]
fn without_rules_reads_go_out_as_they_came() {
    let (mut ws, _) = session(&[], None);
    let bytes = [client_text(true, 1, "hello"), client_text(true, 1, "again")].concat();
    let mut records = Vec::new();
    assert_eq!(
        ws.feed(Peer::Client, &bytes[..9], 1, &mut records),
        Forward::AsIs
    );
    assert_eq!(
        ws.feed(Peer::Client, &bytes[9..], 1, &mut records),
        Forward::AsIs
    );
    assert_eq!(frames(records).len(), 2);
}

#[test]
fn untouched_messages_stay_byte_identical_with_rules_on() {
    let (mut ws, _) = session(&[r#"{"contains":"secret","action":{"kind":"drop"}}"#], None);
    // A fragmented message with a ping between its fragments, then a plain one.
    let bytes = [
        client_text(false, 1, "frag"),
        encode_frame(true, false, 9, Some([5, 5, 5, 5]), b"p"),
        client_text(true, 0, "mented"),
        client_text(true, 1, "plain"),
    ]
    .concat();
    for chunk in [1, 3, 7, bytes.len()] {
        let (mut ws, _) = session(&[r#"{"contains":"secret","action":{"kind":"drop"}}"#], None);
        let (out, records) = feed(&mut ws, Peer::Client, &bytes, chunk);
        assert_eq!(out, bytes, "chunk {chunk}");
        assert_eq!(records.len(), 4);
        assert!(
            records
                .iter()
                .all(|r| !r.dropped && !r.injected && !r.modified)
        );
        let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        seqs.sort();
        assert_eq!(seqs, [1, 2, 3, 4]);
    }
    let _ = feed(&mut ws, Peer::Client, &bytes, 5);
}

#[test]
fn drop_keeps_the_control_frames_of_the_message() {
    let (mut ws, _) = session(
        &[r#"{"direction":"to-server","contains":"secret","action":{"kind":"drop"}}"#],
        None,
    );
    let ping = encode_frame(true, false, 9, Some([5, 5, 5, 5]), b"p");
    let bytes = [
        client_text(false, 1, "my sec"),
        ping.clone(),
        client_text(true, 0, "ret"),
        client_text(true, 1, "fine"),
    ]
    .concat();
    let (out, records) = feed(&mut ws, Peer::Client, &bytes, 4);
    assert_eq!(out, [ping, client_text(true, 1, "fine")].concat());
    let dropped: Vec<u8> = records
        .iter()
        .filter(|r| r.dropped)
        .map(|r| r.opcode)
        .collect();
    assert_eq!(dropped, [1, 0]);
    // The rule is for client messages only.
    let server = encode_frame(true, false, 1, None, b"secret");
    let (out, _) = feed(&mut ws, Peer::Server, &server, 100);
    assert_eq!(out, server);
}

#[test]
fn replace_reframes_and_records_both() {
    let (mut ws, _) = session(
        &[r#"{"action":{"kind":"replace","pattern":"pass(word)?","replacement":"****"}}"#],
        None,
    );
    let bytes = [
        client_text(false, 1, "my pass"),
        client_text(true, 0, "word is x"),
    ]
    .concat();
    let (out, records) = feed(&mut ws, Peer::Client, &bytes, 3);
    assert_eq!(texts(&received(Peer::Client, None, &out)), ["my **** is x"]);
    assert_eq!(out[1] & 0x80, 0x80, "masked toward the server");
    let modified: Vec<_> = records.iter().filter(|r| r.modified).collect();
    assert_eq!(modified.len(), 1);
    assert_eq!(modified[0].payload, b"my **** is x");
    assert!(modified[0].masked && modified[0].from_client && !modified[0].dropped);
    assert_eq!(records.iter().filter(|r| r.dropped).count(), 2);
    // No match: the original bytes.
    let other = client_text(true, 1, "nothing to hide");
    assert_eq!(feed(&mut ws, Peer::Client, &other, 2).0, other);
}

fn deflate_session(rules: &[&str], config: ws::DeflateConfig) -> WsSession {
    session(rules, Some(config)).0
}

/// Compressed messages as a real server sends them (context kept across messages).
fn compressed_stream(messages: &[&str]) -> Vec<u8> {
    let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
    let mut bytes = Vec::new();
    for m in messages {
        let mut payload = Vec::with_capacity(m.len() + 64);
        compress
            .compress_vec(m.as_bytes(), &mut payload, flate2::FlushCompress::Sync)
            .unwrap();
        payload.truncate(payload.len() - 4);
        bytes.extend(encode_frame(true, true, 1, None, &payload));
    }
    bytes
}

#[test]
fn replace_on_deflate_with_context_takeover_re_encodes_what_follows() {
    let config = ws::DeflateConfig::default();
    let mut ws = deflate_session(
        &[r#"{"action":{"kind":"replace","pattern":"secret","replacement":"XXXX"}}"#],
        config.clone(),
    );
    let messages = [
        "hello secret world",
        "hello secret world again",
        "hello world hello world",
    ];
    let bytes = compressed_stream(&messages);
    let (out, records) = feed(&mut ws, Peer::Server, &bytes, 5);
    // The receiver, keeping its window, reads every message correctly.
    assert_eq!(
        texts(&received(Peer::Server, Some(config), &out)),
        [
            "hello XXXX world",
            "hello XXXX world again",
            "hello world hello world"
        ]
    );
    let modified: Vec<_> = records.iter().filter(|r| r.modified).collect();
    assert_eq!(modified.len(), 2);
    assert!(modified.iter().all(|r| r.compressed && r.rsv == 4));
    // The third message was re-encoded, not recorded twice.
    assert_eq!(records.len(), 5);
}

#[test]
fn drop_on_deflate_without_context_takeover_leaves_the_rest_untouched() {
    let config = ws::DeflateConfig {
        server_no_context_takeover: true,
        ..ws::DeflateConfig::default()
    };
    let mut ws = deflate_session(
        &[r#"{"contains":"drop me","action":{"kind":"drop"}}"#],
        config.clone(),
    );
    let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
    let mut frame = |text: &str| {
        compress.reset();
        let mut payload = Vec::with_capacity(text.len() + 64);
        compress
            .compress_vec(text.as_bytes(), &mut payload, flate2::FlushCompress::Sync)
            .unwrap();
        payload.truncate(payload.len() - 4);
        encode_frame(true, true, 1, None, &payload)
    };
    let (a, b, c) = (
        frame("keep one"),
        frame("please drop me"),
        frame("keep two"),
    );
    let (out, _) = feed(
        &mut ws,
        Peer::Server,
        &[a.clone(), b, c.clone()].concat(),
        1000,
    );
    assert_eq!(out, [a, c].concat());
}

#[test]
fn close_rule_closes_both_sides_and_stops_forwarding() {
    let (mut ws, _) = session(
        &[r#"{"contains":"bye","action":{"kind":"close","code":4001,"reason":"rule"}}"#],
        None,
    );
    let (out, records) = feed(&mut ws, Peer::Client, &client_text(true, 1, "say bye"), 100);
    let events = received(Peer::Client, None, &out);
    let WsEvent::Frame(close) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((close.opcode, close.close_code), (8, Some(4001)));
    assert!(records.iter().any(|r| r.dropped && r.opcode == 1));
    assert!(
        records
            .iter()
            .any(|r| r.injected && r.opcode == 8 && r.from_client)
    );
    // The client gets a close frame too, unmasked, through the outbox.
    let outbox = ws
        .take_outbox(Peer::Client)
        .expect("a close for the client");
    let events = received(Peer::Server, None, &outbox.bytes);
    assert!(matches!(&events[0], WsEvent::Frame(f) if f.opcode == 8 && f.close_code == Some(4001)));
    assert_eq!(
        ws.first_close().map(|c| c.by),
        Some(crate::Closer::Frametap)
    );
    // Nothing more moves, either way; it is all recorded as dropped.
    let (out, records) = feed(
        &mut ws,
        Peer::Server,
        &encode_frame(true, false, 1, None, b"late"),
        3,
    );
    assert!(out.is_empty());
    assert!(records.iter().all(|r| r.dropped));
    assert!(ws.inject(Peer::Client, b"x", false, 1).is_err());
}

#[test]
fn inject_waits_for_the_end_of_a_fragmented_message() {
    let (mut ws, _) = session(&[], None);
    let first = client_text(false, 1, "part one, ");
    let (out, _) = feed(&mut ws, Peer::Client, &first, 100);
    assert_eq!(out, first);
    let seq = ws.inject(Peer::Server, b"injected", false, 1).unwrap();
    assert!(
        ws.take_outbox(Peer::Server).is_none(),
        "not inside the message"
    );
    let last = client_text(true, 0, "part two");
    let (out, records) = feed(&mut ws, Peer::Client, &last, 100);
    let stream = [first, out].concat();
    assert_eq!(
        texts(&received(Peer::Client, None, &stream)),
        ["part one, part two", "injected"]
    );
    let injected = records.iter().find(|r| r.injected).unwrap();
    assert_eq!((injected.seq, injected.from_client), (seq, true));
    // Between messages it goes out at once, through the outbox.
    let seq2 = ws.inject(Peer::Client, &[0, 1, 2], true, 1).unwrap();
    assert!(seq2 > seq);
    let outbox = ws.take_outbox(Peer::Client).unwrap();
    let events = received(Peer::Server, None, &outbox.bytes);
    assert!(matches!(&events[0], WsEvent::Message(m) if !m.is_text && m.content == [0, 1, 2]));
    assert!(
        matches!(&outbox.records[0], Record::Frame(f) if f.injected && !f.from_client && f.binary_message)
    );
    assert!(
        ws.inject(Peer::Client, &[0xff], false, 1).is_err(),
        "text must be UTF-8"
    );
}

/// Found by the `ws_gate` fuzz target: a message injected while another passed
/// went out after the next message too when that one came in the same read.
#[test]
fn a_waiting_injection_goes_before_the_next_message_of_the_same_read() {
    let (mut ws, _) = session(&[], None);
    let first = client_text(false, 1, "part one, ");
    let (out, _) = feed(&mut ws, Peer::Client, &first, 100);
    assert_eq!(out, first);
    ws.inject(Peer::Server, b"INJ", false, 1).unwrap();
    let rest = [
        client_text(true, 0, "part two"),
        client_text(true, 1, "next"),
    ]
    .concat();
    let (out, _) = feed(&mut ws, Peer::Client, &rest, rest.len());
    assert_eq!(
        texts(&received(Peer::Client, None, &[first, out].concat())),
        ["part one, part two", "INJ", "next"]
    );
}

#[test]
fn compressed_inject_keeps_the_receiver_in_step() {
    let config = ws::DeflateConfig::default();
    let mut ws = deflate_session(&[], config.clone());
    let bytes = compressed_stream(&["repeat repeat repeat", "repeat repeat repeat"]);
    // Right after the first message: the injected one goes out at once.
    let half = compressed_stream(&["repeat repeat repeat"]).len();
    let (out1, _) = feed(&mut ws, Peer::Server, &bytes[..half], 1000);
    ws.inject(Peer::Client, b"from frametap", false, 1).unwrap();
    let outbox = ws.take_outbox(Peer::Client).unwrap();
    let (out2, _) = feed(&mut ws, Peer::Server, &bytes[half..], 1000);
    let stream = [out1, outbox.bytes, out2].concat();
    assert_eq!(
        texts(&received(Peer::Server, Some(config), &stream)),
        [
            "repeat repeat repeat",
            "from frametap",
            "repeat repeat repeat"
        ]
    );
}

#[test]
fn rules_added_mid_message_start_at_the_next_message() {
    let (mut ws, book) = session(&[], None);
    let first = client_text(false, 1, "secret ");
    assert_eq!(feed(&mut ws, Peer::Client, &first, 100).0, first);
    book.add(serde_json::from_str(r#"{"contains":"secret","action":{"kind":"drop"}}"#).unwrap())
        .unwrap();
    let rest = [
        client_text(true, 0, "tail"),
        client_text(true, 1, "secret two"),
    ]
    .concat();
    let (out, records) = feed(&mut ws, Peer::Client, &rest, 3);
    assert_eq!(out, client_text(true, 0, "tail"));
    assert_eq!(records.iter().filter(|r| r.dropped).count(), 1);
    // Removed again: forwarded as is.
    assert!(book.delete("r1"));
    let third = client_text(true, 1, "secret three");
    assert_eq!(feed(&mut ws, Peer::Client, &third, 100).0, third);
}

#[test]
fn messages_over_the_hold_limit_stream_through_unexamined() {
    let (mut ws, _) = session(&[r#"{"contains":"x","action":{"kind":"drop"}}"#], None);
    let big = "x".repeat(CAP * 3);
    let bytes = [client_text(true, 1, &big), client_text(true, 1, "x small")].concat();
    let (out, records) = feed(&mut ws, Peer::Client, &bytes, 4096);
    assert_eq!(out, client_text(true, 1, &big));
    assert_eq!(records.iter().filter(|r| r.dropped).count(), 1);
}

#[test]
fn garbage_stops_the_gate_and_passes_everything() {
    let (mut ws, _) = session(&[r#"{"action":{"kind":"drop"}}"#], None);
    // Unmasked client frame: a protocol error.
    let bytes = [
        encode_frame(true, false, 1, None, b"bad"),
        b"more junk".to_vec(),
    ]
    .concat();
    let (out, _) = feed(&mut ws, Peer::Client, &bytes, 2);
    assert_eq!(out, bytes);
    assert!(ws.error().is_some());
    assert!(ws.inject(Peer::Server, b"x", false, 1).is_err());
}
