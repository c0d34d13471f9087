//! The store's codec (frametap-model's `codec`): values and keys as read back from
//! RocksDB, or from a damaged database. Decoding never panics, and whatever decodes
//! encodes back to something that decodes the same.
#![no_main]

use frametap_model::FrameId;
use frametap_model::codec::{
    body_key, decode_frame, decode_record, encode_frame, encode_record, frame_key, parse_body_key,
    parse_frame_key, peek_frame,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(record) = decode_record(bytes) {
                let again = decode_record(&encode_record(&record)).expect("re-encoded record");
                assert_eq!(again, record);
            }
        }
        1 => {
            let id = FrameId::new(frametap_model::TrafficId(0x0190_a1b2_c3d4_0001), 7);
            let _ = peek_frame(bytes);
            if let Ok(frame) = decode_frame(id, bytes) {
                let again = decode_frame(id, &encode_frame(&frame)).expect("re-encoded frame");
                assert_eq!(again, frame);
                assert_eq!(
                    peek_frame(&encode_frame(&frame)).ok().map(|p| p.1),
                    Some(frame.opcode)
                );
            }
        }
        2 => {
            if let Ok(id) = parse_frame_key(bytes) {
                assert_eq!(&frame_key(id)[..], bytes);
            }
        }
        _ => {
            if let Ok((traffic, of, seq)) = parse_body_key(bytes) {
                assert_eq!(&body_key(traffic, of, seq)[..], bytes);
            }
            if let Ok(text) = std::str::from_utf8(bytes)
                && let Ok(id) = text.parse::<frametap_model::TrafficId>()
            {
                assert_eq!(
                    id.to_string().parse::<frametap_model::TrafficId>().ok(),
                    Some(id)
                );
            }
        }
    }
});
