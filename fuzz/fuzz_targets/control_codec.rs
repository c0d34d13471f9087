//! The control socket's codec, from arbitrary bytes in arbitrary pieces: nothing
//! panics, and every message it decodes encodes back to bytes that decode to the
//! same message.
#![no_main]

use frametap_control::{Decoder, decode_body, encode};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::default();
    for chunk in stream.chunks(1 + usize::from(piece % 64)) {
        decoder.push(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    let bytes = encode(&message);
                    let again = decode_body(&bytes[4..]).expect("an encoded message decodes");
                    assert_eq!(again, message, "a message changed crossing the socket");
                }
                Ok(None) => break,
                // The agent closes the connection on a bad message.
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    return;
                }
            }
        }
    }
});
