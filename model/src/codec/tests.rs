//! Unit tests of [`super`] (codec).
use super::*;

fn sample() -> FrameRecord {
    FrameRecord {
        traffic: TrafficId::new(1_700_000_000_000, 3),
        seq: 42,
        timestamp_ms: 1_700_000_000_123,
        from_client: true,
        opcode: 1,
        fin: true,
        rsv: 4,
        masked: true,
        compressed: true,
        wire_len: 19,
        payload_len: 13,
        truncated: false,
        payload: b"hello, world!".to_vec(),
        close_code: None,
        close_reason: None,
        injected: false,
        dropped: false,
        binary_message: true,
        modified: false,
    }
}

fn roundtrip(f: &FrameRecord) {
    let v = encode_frame(f);
    let back = decode_frame(f.id(), &v).unwrap();
    assert_eq!(&back, f);
    assert_eq!(peek_frame(&v).unwrap(), (f.from_client, f.opcode));
}

#[test]
fn roundtrips() {
    let f = sample();
    roundtrip(&f);
    // Compact: header + small varints + payload.
    assert!(
        encode_frame(&f).len() <= 5 + 6 + 1 + 1 + 1 + 13,
        "{:?}",
        encode_frame(&f)
    );

    let mut empty = sample();
    empty.payload.clear();
    empty.payload_len = 0;
    empty.from_client = false;
    empty.masked = false;
    empty.opcode = 9;
    roundtrip(&empty);

    let mut big = sample();
    big.opcode = 2;
    big.payload = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    big.payload_len = 10_000_000_000;
    big.wire_len = u64::MAX;
    big.truncated = true;
    big.timestamp_ms = u64::MAX;
    roundtrip(&big);

    let mut close = sample();
    close.opcode = 8;
    close.close_code = Some(1001);
    close.close_reason = Some("going away — bye".into());
    close.payload = b"\x03\xe9going away".to_vec();
    roundtrip(&close);

    let mut code_only = close.clone();
    code_only.close_reason = None;
    roundtrip(&code_only);
    let mut reason_only = close.clone();
    reason_only.close_code = None;
    reason_only.close_reason = Some(String::new());
    roundtrip(&reason_only);

    let mut all = sample();
    all.injected = true;
    all.dropped = true;
    all.modified = true;
    all.fin = false;
    all.rsv = 7;
    all.opcode = 0;
    all.seq = u64::MAX;
    all.traffic = TrafficId(u64::MAX);
    roundtrip(&all);
    let mut weird = sample();
    weird.opcode = 0xff;
    weird.rsv = 0xff;
    roundtrip(&weird);
}

#[test]
fn decode_rejects_truncation_and_garbage() {
    let mut close = sample();
    close.close_code = Some(1000);
    close.close_reason = Some("done".into());
    let v = encode_frame(&close);
    let id = close.id();
    // Every strict prefix is an error.
    for n in 0..v.len() {
        assert!(decode_frame(id, &v[..n]).is_err(), "prefix {n} decoded");
    }
    // Trailing bytes.
    let mut t = v.clone();
    t.push(0);
    assert_eq!(decode_frame(id, &t), Err(CodecError::Trailing(1)));
    // Unknown format.
    let mut u = v.clone();
    u[0] = 2;
    assert_eq!(decode_frame(id, &u), Err(CodecError::UnknownFormat(2)));
    assert!(peek_frame(&u).is_err());
    assert!(peek_frame(&[]).is_err());
    assert!(peek_frame(&[1, 0]).is_err());
    // Reserved flag bits.
    let mut r = v.clone();
    r[2] |= 0x80;
    assert!(matches!(
        decode_frame(id, &r),
        Err(CodecError::ReservedBits(_))
    ));
    // Payload length pointing past the end.
    let mut long = vec![1, 0, 0, 1, 0, 5, 5, 5];
    long.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(decode_frame(id, &long).is_err());
    // Varint too long / overflowing / overlong.
    let mut ov = vec![1, 0, 0, 1, 0];
    ov.extend_from_slice(&[0xff; 11]);
    assert!(decode_frame(id, &ov).is_err());
    let mut ov2 = vec![1, 0, 0, 1, 0];
    ov2.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
    assert!(matches!(
        decode_frame(id, &ov2),
        Err(CodecError::BadVarint(_))
    ));
    let overlong = vec![1, 0, 0, 1, 0, 0x80, 0x00, 0, 0, 0];
    assert!(matches!(
        decode_frame(id, &overlong),
        Err(CodecError::BadVarint(_))
    ));
    // Invalid UTF-8 in the close reason.
    let mut bad = sample();
    bad.close_reason = Some("ab".into());
    let mut b = encode_frame(&bad);
    let n = b.len();
    b[n - 1] = 0xff;
    assert_eq!(decode_frame(id, &b), Err(CodecError::BadUtf8));
    // Pseudo-random garbage never panics.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..2000usize {
        let mut g = Vec::with_capacity(len % 64);
        for _ in 0..len % 64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g.push(x as u8);
        }
        if len % 3 == 0 && !g.is_empty() {
            g[0] = FRAME_FORMAT_V1;
        }
        let _ = decode_frame(id, &g);
        let _ = peek_frame(&g);
    }
    // Mutating each byte of a valid value never panics either.
    for i in 0..v.len() {
        for bit in 0..8 {
            let mut m = v.clone();
            m[i] ^= 1 << bit;
            let _ = decode_frame(id, &m);
        }
    }
}

#[test]
fn keys() {
    let id = FrameId::new(TrafficId(0x0102_0304_0506_0708), 0x1112_1314_1516_1718);
    let k = frame_key(id);
    assert_eq!(
        k,
        [
            1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18
        ]
    );
    assert_eq!(parse_frame_key(&k).unwrap(), id);
    assert!(parse_frame_key(&k[..15]).is_err());
    assert_eq!(ws_key(id.traffic, WS_CLOSE)[8], 1);
    assert_eq!(traffic_key(id.traffic), [1, 2, 3, 4, 5, 6, 7, 8]);
    // seq order == key order
    let a = frame_key(FrameId::new(id.traffic, 255));
    let b = frame_key(FrameId::new(id.traffic, 256));
    assert!(a < b);
    let body = body_key(id.traffic, BodyOf::Response, 0x0102_0304);
    assert_eq!(body, [1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 2, 3, 4]);
    assert_eq!(
        parse_body_key(&body).unwrap(),
        (id.traffic, BodyOf::Response, 0x0102_0304)
    );
    assert!(body_key(id.traffic, BodyOf::Request, u32::MAX) < body);
    assert!(
        body_key(id.traffic, BodyOf::Response, 255) < body_key(id.traffic, BodyOf::Response, 256)
    );
    assert!(parse_body_key(&body[..12]).is_err());
    assert_eq!(meta_key(META_RULES, 2), [b'r', 0, 0, 0, 0, 0, 0, 0, 2]);
}

#[test]
fn records_roundtrip_on_their_own() {
    let frame = sample();
    let traffic = TrafficId(0x0102_0304_0506_0708);
    let close = crate::records::WsClose {
        traffic,
        timestamp_ms: 5,
        closed_by: Some("client".into()),
        close_code: Some(1000),
        close_reason: Some("bye".into()),
        frames_from_client: 3,
        frames_from_server: 4,
        bytes_from_client: 30,
        bytes_from_server: 40,
        abnormal: None,
        frames_from_frametap: Some(2),
    };
    let end = crate::records::TunnelEnd {
        traffic,
        timestamp_ms: 9,
        duration_ms: 1.5,
        bytes_from_client: 517,
        bytes_from_server: 4096,
        end: "closed".into(),
        error: None,
    };
    let body = Record::Body(BodyChunk {
        traffic,
        of: BodyOf::Response,
        seq: 7,
        data: b"{\"ok\":true}".to_vec(),
    });
    for record in [
        Record::Frame(frame),
        Record::WsClose(close.clone()),
        Record::TunnelEnd(end),
        body,
    ] {
        assert_eq!(decode_record(&encode_record(&record)).unwrap(), record);
    }
    // A close record of an agent from before `frames_from_frametap` still reads.
    let mut old = serde_json::to_value(&close).unwrap();
    old.as_object_mut().unwrap().remove("frames_from_frametap");
    let mut bytes = vec![RECORD_WS_CLOSE];
    bytes.extend_from_slice(old.to_string().as_bytes());
    assert_eq!(
        decode_record(&bytes).unwrap(),
        Record::WsClose(crate::records::WsClose {
            frames_from_frametap: None,
            ..close
        })
    );
    assert_eq!(decode_record(&[]), Err(CodecError::Empty));
    assert_eq!(
        decode_record(&[9, 1]),
        Err(CodecError::UnknownRecordKind(9))
    );
    assert!(matches!(
        decode_record(&[4, 0, 1]),
        Err(CodecError::BadKey(2))
    ));
    assert!(matches!(
        decode_record(&[RECORD_BODY, 0, 1]),
        Err(CodecError::BadKey(2))
    ));
    let mut bad_body = vec![5];
    bad_body.extend_from_slice(&body_key(traffic, BodyOf::Request, 1));
    bad_body[9] = 2;
    assert!(decode_record(&bad_body).is_err(), "unknown body kind");
    assert!(matches!(
        decode_record(b"\x01{"),
        Err(CodecError::BadRecord(_))
    ));
}
