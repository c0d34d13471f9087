use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(d: &mut HpackDecoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
    let mut fields = Vec::new();
    d.decode(block, |n, v| {
        fields.push((
            String::from_utf8(n.to_vec()).unwrap(),
            String::from_utf8(v.to_vec()).unwrap(),
        ))
    })?;
    Ok(fields)
}

fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The codes as the RFC lists them, from the lengths (the code is canonical).
fn codes() -> Vec<(u32, u8)> {
    let mut symbols: Vec<usize> = (0..257).collect();
    symbols.sort_by_key(|&s| (HUFFMAN_LENGTHS[s], s));
    let mut out = vec![(0, 0); 257];
    let (mut code, mut previous) = (0u32, 0u8);
    for (i, &s) in symbols.iter().enumerate() {
        let len = HUFFMAN_LENGTHS[s];
        if i > 0 {
            code = (code + 1) << (len - previous);
        }
        previous = len;
        out[s] = (code, len);
    }
    out
}

fn huffman_encode(data: &[u8]) -> Vec<u8> {
    let codes = codes();
    let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for &b in data {
        let (code, len) = codes[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Padding: the most significant bits of EOS (all ones).
        out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
    }
    out
}

#[test]
fn the_rfcs_huffman_examples_decode() {
    // RFC 7541 C.4.1 to C.4.3: requests with Huffman-coded strings and a dynamic
    // table carried from one block to the next.
    let mut d = HpackDecoder::new();
    let first = decode(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
    assert_eq!(
        first,
        fields(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ])
    );
    let second = decode(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
    assert_eq!(
        second.last().unwrap(),
        &("cache-control".into(), "no-cache".into())
    );
    assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
    let third = decode(
        &mut d,
        &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    )
    .unwrap();
    assert_eq!(
        third,
        fields(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );
    // Three entries: 57 + 53 + 54 bytes (RFC 7541 C.4.3).
    assert_eq!(d.size, 164);
}

#[test]
fn huffman_round_trips_and_agrees_with_the_reference() {
    let tree = &*HUFFMAN_TREE;
    // The code is complete: no node lacks a child.
    assert!(tree.iter().all(|children| children.iter().all(|&c| c != 0)));
    let samples: Vec<Vec<u8>> = vec![
        b"www.example.com".to_vec(),
        b"Mon, 21 Oct 2013 20:13:21 GMT".to_vec(),
        (0u8..=255).collect(),
        (0u8..=255).rev().cycle().take(1000).collect(),
        Vec::new(),
    ];
    for sample in samples {
        let coded = huffman_encode(&sample);
        let mut out = Vec::new();
        huffman_decode(&coded, &mut out).unwrap();
        assert_eq!(out, sample);
        let reference = loona_hpack::huffman::HuffmanDecoder::new()
            .decode(&coded)
            .unwrap();
        assert_eq!(reference, sample);
    }
}

#[test]
fn invalid_huffman_is_refused() {
    let mut out = Vec::new();
    // EOS itself (30 ones) inside the string.
    assert_eq!(
        huffman_decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
        Err(HpackError::BadHuffman)
    );
    // Padding of 8 bits or more.
    let mut coded = huffman_encode(b"a");
    coded.push(0xff);
    assert_eq!(
        huffman_decode(&coded, &mut out),
        Err(HpackError::BadHuffman)
    );
    // Padding that is not all ones: "a" is 00011, then 000 instead of 111.
    assert_eq!(
        huffman_decode(&[0b0001_1000], &mut out),
        Err(HpackError::BadHuffman)
    );
}

#[test]
fn size_updates_evict_and_bound_the_table() {
    let mut d = HpackDecoder::new();
    // Literal with indexing, new name: "a"="1" (34 bytes), then "b"="2".
    let mut block = vec![0x40, 1, b'a', 1, b'1', 0x40, 1, b'b', 1, b'2'];
    decode(&mut d, &block).unwrap();
    assert_eq!(d.dynamic.len(), 2);
    // A size update to 40 keeps only the newest; index 62 is "b".
    block = vec![0x3f, 40 - 31, 0xbe];
    assert_eq!(decode(&mut d, &block).unwrap(), fields(&[("b", "2")]));
    assert_eq!((d.max_size(), d.dynamic.len()), (40, 1));
    assert_eq!(decode(&mut d, &[0xbf]), Err(HpackError::BadIndex(63)));
    // An entry larger than the table empties it.
    let big = [vec![0x40, 3], b"big".to_vec(), vec![10], vec![b'x'; 10]].concat();
    decode(&mut d, &big).unwrap();
    assert!(d.dynamic.is_empty() && d.size == 0);
    // Beyond what an observer keeps.
    let huge = [0x3f, 0xe1, 0xff, 0x7f];
    assert!(matches!(
        decode(&mut d, &huge),
        Err(HpackError::TableTooLarge(_))
    ));
}

#[test]
fn malformed_blocks_are_errors_not_panics() {
    for (block, error) in [
        (vec![0x80], HpackError::BadIndex(0)),
        (vec![0xff, 0x80], HpackError::Truncated),
        (
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            HpackError::IntegerOverflow,
        ),
        (vec![0x40, 5, b'a'], HpackError::Truncated),
        (
            vec![0x00, 0x7f, 0xff, 0xff, 0xff, 0x0f],
            HpackError::Truncated,
        ),
        (vec![0x10], HpackError::Truncated),
    ] {
        assert_eq!(
            decode(&mut HpackDecoder::new(), &block),
            Err(error),
            "{block:?}"
        );
    }
}
