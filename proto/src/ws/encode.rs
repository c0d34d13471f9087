//! Frame encoding, for tests and for injecting frames later.

use super::mask::apply_mask;

/// Encodes one frame with the minimal length encoding. `opcode` keeps only its
/// low four bits; `mask` is the client's masking key (clients must mask, servers
/// must not). RSV2 and RSV3 stay clear: no extension we speak uses them.
pub fn encode_frame(
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.push(u8::from(fin) << 7 | u8::from(rsv1) << 6 | (opcode & 0x0f));
    let mask_bit = if mask.is_some() { 0x80 } else { 0x00 };
    match u16::try_from(payload.len()) {
        Ok(len @ 0..=125) => frame.push(mask_bit | len as u8),
        Ok(len) => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    let payload_start = match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.len()
        }
        None => frame.len(),
    };
    frame.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut frame[payload_start..], key, 0);
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_examples() {
        assert_eq!(
            encode_frame(true, false, 1, None, b"Hello"),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(true, false, 1, Some([0x37, 0xfa, 0x21, 0x3d]), b"Hello"),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        assert_eq!(
            encode_frame(false, false, 1, None, b"Hel"),
            [0x01, 0x03, 0x48, 0x65, 0x6c]
        );
        assert_eq!(
            encode_frame(true, false, 0, None, b"lo"),
            [0x80, 0x02, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(true, false, 9, None, b"Hello"),
            [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            encode_frame(true, false, 10, Some([0x37, 0xfa, 0x21, 0x3d]), b"Hello"),
            [
                0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn rfc7692_compressed_hello_header() {
        let payload = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            encode_frame(true, true, 1, None, &payload),
            [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
    }

    #[test]
    fn uses_minimal_length_encoding() {
        let header_of = |len: usize, mask: Option<[u8; 4]>| {
            let frame = encode_frame(true, false, 2, mask, &vec![0u8; len]);
            let header_len = frame.len() - len;
            frame[..header_len].to_vec()
        };
        assert_eq!(header_of(0, None), [0x82, 0]);
        assert_eq!(header_of(125, None), [0x82, 125]);
        assert_eq!(header_of(126, None), [0x82, 126, 0, 126]);
        assert_eq!(header_of(256, None), [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(header_of(65535, None), [0x82, 126, 0xff, 0xff]);
        assert_eq!(header_of(65536, None), [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            header_of(126, Some([1, 2, 3, 4])),
            [0x82, 0xfe, 0, 126, 1, 2, 3, 4]
        );
    }

    #[test]
    fn opcode_keeps_only_its_low_bits() {
        assert_eq!(encode_frame(true, false, 0xf2, None, b"")[0], 0x82);
    }
}
