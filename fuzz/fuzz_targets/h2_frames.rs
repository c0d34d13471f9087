//! One direction of HTTP/2 through frametap-proto's `H2Direction`: frame headers,
//! padding, CONTINUATION, HPACK. The last byte picks the direction (bit 7: the
//! server's, without the preface) and a read size. Nothing panics, every DATA range
//! lies within the bytes it indexes, and the events are the same whether the bytes
//! arrive at once or in pieces (DATA joined per stream, as pieces split it).
#![no_main]

use frametap_proto::h2::{H2Direction, H2Event};

#[derive(Debug, PartialEq)]
enum Seen {
    Event(H2Event),
    Data(u32, Vec<u8>),
}

fn read(bytes: &[u8], server: bool, piece: usize) -> Vec<Seen> {
    let mut dir = if server {
        H2Direction::server()
    } else {
        H2Direction::client()
    };
    let mut seen: Vec<Seen> = Vec::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(piece) {
        dir.push(chunk, &mut out);
        for event in out.drain(..) {
            match event {
                H2Event::Data { stream, range } => {
                    assert!(range.start < range.end && range.end <= chunk.len());
                    match seen.last_mut() {
                        Some(Seen::Data(s, data)) if *s == stream => {
                            data.extend_from_slice(&chunk[range])
                        }
                        _ => seen.push(Seen::Data(stream, chunk[range].to_vec())),
                    }
                }
                other => seen.push(Seen::Event(other)),
            }
        }
    }
    seen
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_last() else {
        return;
    };
    let server = choice & 0x80 != 0;
    let piece = 1 + usize::from(choice & 0x7f) % 37;
    let whole = read(bytes, server, bytes.len().max(1));
    assert_eq!(read(bytes, server, piece), whole, "pieces of {piece}");
});
