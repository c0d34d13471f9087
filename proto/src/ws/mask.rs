//! Payload masking (RFC 6455 section 5.3).

/// XORs `data` with the masking `key`, where `data` starts `offset` bytes into
/// the frame's payload. Masking is its own inverse, so this both masks and
/// unmasks. It runs over every byte a client sends, hence eight bytes at a time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    // Rotate the key so that key[0] applies to data[0], whatever the offset.
    let shift = (offset % 4) as usize;
    let key = [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let (words, tail) = data.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
    }
    // The tail starts at a multiple of 8, so the key lines up with index 0 again.
    for (byte, key_byte) in tail.iter_mut().zip(key.iter().cycle()) {
        *byte ^= key_byte;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8], key: [u8; 4], offset: u64) -> Vec<u8> {
        data.iter()
            .enumerate()
            .map(|(i, byte)| byte ^ key[((offset + i as u64) % 4) as usize])
            .collect()
    }

    #[test]
    fn rfc6455_masked_hello() {
        let mut data = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&data, b"Hello");
    }

    #[test]
    fn matches_bytewise_masking_for_every_length_and_offset() {
        let key = [0x01, 0x80, 0xfe, 0x5a];
        let source: Vec<u8> = (0..=255u8).cycle().take(70).collect();
        for offset in 0..9u64 {
            for len in 0..source.len() {
                let mut data = source[..len].to_vec();
                apply_mask(&mut data, key, offset);
                assert_eq!(
                    data,
                    naive(&source[..len], key, offset),
                    "len {len} offset {offset}"
                );
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let key = [9, 8, 7, 6];
        let source: Vec<u8> = (0..100u8).collect();
        let mut whole = source.clone();
        apply_mask(&mut whole, key, 0);
        for split in 0..source.len() {
            let mut pieces = source.clone();
            let (head, tail) = pieces.split_at_mut(split);
            apply_mask(head, key, 0);
            apply_mask(tail, key, split as u64);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[test]
    fn masking_twice_restores_the_data() {
        let source = b"the quick brown fox jumps over the lazy dog".to_vec();
        let mut data = source.clone();
        apply_mask(&mut data, [0xde, 0xad, 0xbe, 0xef], 3);
        assert_ne!(data, source);
        apply_mask(&mut data, [0xde, 0xad, 0xbe, 0xef], 3);
        assert_eq!(data, source);
    }
}
