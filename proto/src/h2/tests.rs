use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    frame_bytes(kind, flags, stream, payload)
}

fn block(encoder: &mut loona_hpack::Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn fields(list: &[(&str, &str)]) -> Vec<Field> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Events with DATA merged per stream (splits depend on how bytes arrive).
#[derive(Debug, PartialEq)]
enum Seen {
    Event(H2Event),
    Data(u32, Vec<u8>),
}

fn read_in_pieces(dir: &mut H2Direction, bytes: &[u8], piece: usize) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    for chunk in bytes.chunks(piece) {
        let mut out = Vec::new();
        dir.push(chunk, &mut out);
        for e in out {
            match e {
                H2Event::Data { stream, range } => match seen.last_mut() {
                    Some(Seen::Data(s, data)) if *s == stream => {
                        data.extend_from_slice(&chunk[range])
                    }
                    _ => seen.push(Seen::Data(stream, chunk[range].to_vec())),
                },
                e => seen.push(Seen::Event(e)),
            }
        }
    }
    seen
}

const REQUEST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "https"),
    (":authority", "example.test"),
    (":path", "/upload?x=1"),
    ("content-type", "text/plain"),
];

/// A client's side of a connection: preface, SETTINGS, a request whose header block
/// is split over a CONTINUATION, padded DATA, a WINDOW_UPDATE and a second request
/// that reuses the dynamic table.
fn client_bytes() -> Vec<u8> {
    let mut enc = loona_hpack::Encoder::new();
    let mut wire = CLIENT_PREFACE.to_vec();
    wire.extend(frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0])); // SETTINGS_ENABLE_PUSH = 0
    let first = block(&mut enc, REQUEST);
    let (a, b) = first.split_at(first.len() / 2);
    // HEADERS with PRIORITY and padding, then the rest in a CONTINUATION.
    let mut headers = vec![3u8, 0, 0, 0, 0, 16];
    headers.extend_from_slice(a);
    headers.extend_from_slice(&[0, 0, 0]);
    wire.extend(frame(
        kind::HEADERS,
        flag::PADDED | flag::PRIORITY,
        1,
        &headers,
    ));
    wire.extend(frame(kind::CONTINUATION, flag::END_HEADERS, 1, b));
    let mut data = vec![4u8];
    data.extend_from_slice(b"hello ");
    data.extend_from_slice(&[0; 4]);
    wire.extend(frame(kind::DATA, flag::PADDED, 1, &data));
    wire.extend(frame(0x8, 0, 0, &[0, 0, 1, 0])); // WINDOW_UPDATE
    wire.extend(frame(kind::DATA, flag::END_STREAM, 1, b"world"));
    let again = block(&mut enc, REQUEST);
    wire.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        3,
        &again,
    ));
    wire
}

#[test]
fn a_client_direction_reads_the_same_whatever_the_pieces() {
    let expected = vec![
        Seen::Event(H2Event::Headers {
            stream: 1,
            fields: fields(REQUEST),
            end_stream: false,
        }),
        // Padding counts in flow control: 11 bytes for "hello ".
        Seen::Event(H2Event::DataFrame { stream: 1, len: 11 }),
        Seen::Data(1, b"hello ".to_vec()),
        Seen::Event(H2Event::WindowUpdate {
            stream: 0,
            increment: 256,
        }),
        Seen::Event(H2Event::DataFrame { stream: 1, len: 5 }),
        Seen::Data(1, b"world".to_vec()),
        Seen::Event(H2Event::End { stream: 1 }),
        Seen::Event(H2Event::Headers {
            stream: 3,
            fields: fields(REQUEST),
            end_stream: true,
        }),
    ];
    let wire = client_bytes();
    for piece in [1, 2, 7, 9, 10, 64, wire.len()] {
        let mut dir = H2Direction::client();
        let seen = read_in_pieces(&mut dir, &wire, piece);
        // Data split over pieces is reported piece by piece.
        let merged: Vec<Seen> = seen.into_iter().fold(Vec::new(), |mut acc, s| {
            match (acc.last_mut(), s) {
                (Some(Seen::Data(a, d)), Seen::Data(b, more)) if *a == b => d.extend(more),
                (_, s) => acc.push(s),
            }
            acc
        });
        assert_eq!(merged, expected, "pieces of {piece}");
        assert!(!dir.failed());
    }
}

#[test]
fn a_server_direction_reports_responses_pushes_resets_and_goaway() {
    let mut enc = loona_hpack::Encoder::new();
    // SETTINGS: the last INITIAL_WINDOW_SIZE counts; an acknowledgement says nothing.
    let mut wire = frame(
        0x4,
        0,
        0,
        &[0, 4, 0, 0, 0, 9, 0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0],
    );
    wire.extend(frame(0x4, flag::ACK, 0, &[]));
    let response = [(":status", "200"), ("content-type", "application/grpc")];
    wire.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS,
        1,
        &block(&mut enc, &response),
    ));
    let mut promise = vec![0, 0, 0, 2];
    promise.extend(block(
        &mut enc,
        &[(":method", "GET"), (":path", "/style.css")],
    ));
    wire.extend(frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &promise));
    wire.extend(frame(kind::DATA, 0, 1, b"abc"));
    let trailers = [("grpc-status", "0")];
    wire.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block(&mut enc, &trailers),
    ));
    wire.extend(frame(kind::RST_STREAM, 0, 2, &8u32.to_be_bytes()));
    wire.extend(frame(
        kind::GOAWAY,
        0,
        0,
        &[0, 0, 0, 1, 0, 0, 0, 0, b'b', b'y', b'e'],
    ));
    let mut dir = H2Direction::server();
    assert_eq!(
        read_in_pieces(&mut dir, &wire, 5),
        vec![
            Seen::Event(H2Event::InitialWindow(65_536)),
            Seen::Event(H2Event::Headers {
                stream: 1,
                fields: fields(&response),
                end_stream: false
            }),
            Seen::Event(H2Event::PushPromise {
                stream: 1,
                promised: 2,
                fields: fields(&[(":method", "GET"), (":path", "/style.css")]),
            }),
            Seen::Event(H2Event::DataFrame { stream: 1, len: 3 }),
            Seen::Data(1, b"abc".to_vec()),
            Seen::Event(H2Event::Headers {
                stream: 1,
                fields: fields(&trailers),
                end_stream: true
            }),
            Seen::Event(H2Event::Reset { stream: 2, code: 8 }),
            Seen::Event(H2Event::GoAway {
                last_stream: 1,
                code: 0
            }),
        ]
    );
    assert_eq!(error_name(8), "CANCEL");
    for (bad, why) in [
        (frame(0x4, 0, 0, &[0, 4, 0]), "multiple of 6"),
        (frame(0x8, 0, 1, &[0, 0, 1]), "WINDOW_UPDATE"),
    ] {
        let mut dir = H2Direction::server();
        let error = first_error(&mut dir, &bad).unwrap();
        assert!(error.contains(why), "{error}");
    }
}

#[test]
fn boundaries_are_known_between_frames_and_never_inside_a_header_block() {
    let mut dir = H2Direction::client();
    assert!(!dir.at_frame_boundary(), "the preface comes first");
    assert_eq!(dir.bytes_in_current_frame(), CLIENT_PREFACE.len());
    dir.push(CLIENT_PREFACE, &mut Vec::new());
    assert!(dir.at_frame_boundary());
    assert_eq!(dir.bytes_in_current_frame(), HEADER_LEN);
    let data = frame(kind::DATA, 0, 1, b"hello");
    dir.push(&data[..4], &mut Vec::new());
    assert_eq!(dir.bytes_in_current_frame(), HEADER_LEN - 4);
    dir.push(&data[4..11], &mut Vec::new());
    assert_eq!(dir.bytes_in_current_frame(), 3, "the payload's rest");
    dir.push(&data[11..], &mut Vec::new());
    assert!(dir.at_frame_boundary());
    // HEADERS without END_HEADERS: nothing may go before its CONTINUATION.
    let mut enc = loona_hpack::Encoder::new();
    dir.push(
        &frame(kind::HEADERS, 0, 3, &block(&mut enc, REQUEST)),
        &mut Vec::new(),
    );
    assert!(dir.in_header_block() && !dir.at_frame_boundary());
    dir.push(
        &frame(kind::CONTINUATION, flag::END_HEADERS, 3, &[]),
        &mut Vec::new(),
    );
    assert!(dir.at_frame_boundary());
}

fn first_error(dir: &mut H2Direction, wire: &[u8]) -> Option<String> {
    let mut out = Vec::new();
    dir.push(wire, &mut out);
    out.into_iter().find_map(|e| match e {
        H2Event::Error(why) => Some(why),
        _ => None,
    })
}

#[test]
fn framing_errors_are_reported_once_and_reading_stops() {
    let mut dir = H2Direction::client();
    let why = first_error(&mut dir, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(why.contains("preface"), "{why}");
    assert!(dir.failed());
    let mut out = Vec::new();
    dir.push(&client_bytes(), &mut out);
    assert!(out.is_empty(), "nothing read after an error: {out:?}");

    // A header block interrupted by another frame.
    let mut dir = H2Direction::server();
    let mut wire = frame(kind::HEADERS, 0, 1, &[0x88]);
    wire.extend(frame(kind::DATA, 0, 1, b"x"));
    let why = first_error(&mut dir, &wire).unwrap();
    assert!(why.contains("CONTINUATION"), "{why}");

    // Padding longer than the frame, in DATA and in HEADERS.
    let mut dir = H2Direction::server();
    let why = first_error(&mut dir, &frame(kind::DATA, flag::PADDED, 1, &[9, 1, 2])).unwrap();
    assert!(why.contains("padding"), "{why}");
    let mut dir = H2Direction::server();
    let bad = frame(
        kind::HEADERS,
        flag::PADDED | flag::END_HEADERS,
        1,
        &[9, 0x88],
    );
    assert!(first_error(&mut dir, &bad).unwrap().contains("padding"));

    // An index HPACK's tables do not have.
    let mut dir = H2Direction::server();
    let why = first_error(
        &mut dir,
        &frame(kind::HEADERS, flag::END_HEADERS, 1, &[0xff, 0x7f]),
    )
    .unwrap();
    assert!(why.contains("HPACK"), "{why}");

    // A header block beyond the bound, announced by a frame header alone.
    let mut dir = H2Direction::server();
    let big = FrameHeader {
        len: MAX_HEADER_BLOCK + 1,
        kind: kind::HEADERS,
        flags: 0,
        stream: 1,
    };
    let why = first_error(&mut dir, &big.encode()).unwrap();
    assert!(why.contains("longer than"), "{why}");
}

#[test]
fn frames_it_does_not_interpret_are_skipped_without_being_kept() {
    // A 1 MiB frame of an extension type, then a response.
    let mut enc = loona_hpack::Encoder::new();
    let mut wire = frame(0xfa, 0, 0, &vec![7u8; 1 << 20]);
    wire.extend(frame(
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block(&mut enc, &[(":status", "204")]),
    ));
    let mut dir = H2Direction::server();
    let seen = read_in_pieces(&mut dir, &wire, 4096);
    assert_eq!(
        seen,
        vec![Seen::Event(H2Event::Headers {
            stream: 1,
            fields: fields(&[(":status", "204")]),
            end_stream: true
        })]
    );
}
