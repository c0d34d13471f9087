//! frametap-proto's HPACK decoder against a reference, `loona-hpack`: the input is a
//! sequence of header blocks (a length byte, then that many bytes), decoded in order
//! by both, each keeping its dynamic table. Nothing panics, and while the reference
//! accepts the blocks ours decodes the same fields (unless a size update asks for
//! more than frametap keeps, which it refuses on purpose).
#![no_main]

use frametap_proto::h2::hpack::{HpackDecoder, HpackError};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut ours = HpackDecoder::new();
    let mut reference = loona_hpack::Decoder::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let block = &tail[..usize::from(len).min(tail.len())];
        rest = &tail[block.len()..];
        let mut expected = Vec::new();
        let accepted =
            reference.decode_with_cb(block, |n, v| expected.push((n.to_vec(), v.to_vec())));
        let mut got = Vec::new();
        let decoded = ours.decode(block, |n, v| got.push((n.to_vec(), v.to_vec())));
        match (accepted, decoded) {
            (Ok(()), Ok(())) => assert_eq!(got, expected),
            (Ok(()), Err(HpackError::TableTooLarge(_))) => return,
            (Ok(()), Err(e)) => panic!("the reference accepts what ours refuses: {e}"),
            // Once either refuses a block, the tables may differ.
            (Err(_), _) => return,
        }
    }
});
