//! Hostile bytes into one WebSocket direction: no panic, payloads stay under the
//! cap, at most one error ends the events, and chunking never changes them.
#![no_main]

use frametap_proto::Peer;
use frametap_proto::ws::{DeflateConfig, WsDirection, WsEvent};

/// Small, so that truncation paths run often.
const CAP: usize = 4096;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    // Bit 0: sender. Bit 1: deflate negotiated. Bit 2: no_context_takeover for
    // both peers. Bit 3: foreign extensions. Bits 4-7: chunk size.
    let sender = if selector & 1 == 0 {
        Peer::Client
    } else {
        Peer::Server
    };
    let deflate = (selector & 2 != 0).then(|| DeflateConfig {
        server_no_context_takeover: selector & 4 != 0,
        client_no_context_takeover: selector & 4 != 0,
        ..DeflateConfig::default()
    });
    let foreign = selector & 8 != 0;
    let chunk_len = match selector >> 4 {
        0 => stream.len().max(1),
        n => usize::from(n) * usize::from(n),
    };
    let new_direction =
        || WsDirection::new(sender, deflate.clone(), CAP).with_foreign_extensions(foreign);

    let mut chunked = new_direction();
    let mut events = Vec::new();
    for chunk in stream.chunks(chunk_len) {
        chunked.push(chunk, &mut events);
    }

    let mut errors = 0;
    for (index, event) in events.iter().enumerate() {
        match event {
            WsEvent::Frame(frame) => {
                assert!(frame.payload.len() <= CAP);
                assert_eq!(
                    frame.truncated,
                    frame.payload_len > frame.payload.len() as u64
                );
                assert!(frame.opcode <= 15);
            }
            WsEvent::Message(message) => {
                assert!(message.content.len() <= CAP);
                assert_eq!(
                    message.truncated,
                    message.len > message.content.len() as u64
                );
                assert!(message.frames >= 1);
            }
            WsEvent::Error(error) => {
                errors += 1;
                assert_eq!(index, events.len() - 1, "an error is the last event");
                assert!(!error.to_string().is_empty());
            }
        }
    }
    assert!(errors <= 1);
    assert_eq!(chunked.failed(), errors == 1);
    assert_eq!(chunked.wire_bytes(), stream.len() as u64);
    let frames = events
        .iter()
        .filter(|event| matches!(event, WsEvent::Frame(_)))
        .count();
    assert_eq!(chunked.frames(), frames as u64);

    let mut whole = new_direction();
    let mut whole_events = Vec::new();
    whole.push(stream, &mut whole_events);
    assert_eq!(whole_events, events, "chunking changed the events");
    assert_eq!(whole.mid_message(), chunked.mid_message());
});
