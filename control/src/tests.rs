//! Unit tests of the control socket protocol.
use super::*;
use frametap_model::{FrameRecord, TrafficId, WsOpen};

fn frame(seq: u64) -> Record {
    Record::Frame(FrameRecord {
        wire_len: 9,
        ..frametap_model::testing::binary_frame(
            TrafficId(42),
            seq,
            seq.is_multiple_of(2),
            &[0, 1, 2],
        )
    })
}

fn all_kinds() -> Vec<Message> {
    vec![
        Message::Request(Request::DeleteFrames {
            traffic: "00000000000000ff".into(),
        }),
        Message::Request(Request::Subscribe),
        Message::Request(Request::DeleteTraffic {
            target: DeleteTarget::One {
                id: "00000000000000ff".into(),
            },
        }),
        Message::Request(Request::DeleteTraffic {
            target: DeleteTarget::Matching {
                filter: TrafficFilter {
                    pids: Some(vec![42]),
                    statuses: Some(vec![frametap_model::StatusMatch::Class(5)]),
                    ..TrafficFilter::default()
                },
            },
        }),
        Message::Request(Request::DeleteTraffic {
            target: DeleteTarget::All,
        }),
        Message::Reply(Reply::TrafficDeleted {
            entries: 3,
            frames: 40,
        }),
        Message::Reply(Reply::Status(AgentStatus {
            namespaces: NamespacesReport {
                served: 1,
                opened: 3,
                closed: 2,
                refused: 1,
            },
            pid: 7,
            version: "0.1.0".into(),
            sequence: 99,
            records_submitted: 5,
            records_failed: 1,
            events_dropped: 2,
            recording: RecordingReport {
                degraded: true,
                since_ms: Some(1_700_000_000_000),
                records_lost: 3,
                error: Some("No space left on device".into()),
                records_written: 10,
                records_failed: 3,
                records_dropped: 0,
                last_outage: Some(OutageReport {
                    stopped_at_ms: 1,
                    resumed_at_ms: 2,
                    records_lost: 4,
                    error: "full".into(),
                }),
            },
        })),
        Message::Recording(RecordingEvent::Degraded {
            since_ms: 5,
            error: "No space left on device".into(),
        }),
        Message::Recording(RecordingEvent::Resumed(OutageReport {
            stopped_at_ms: 5,
            resumed_at_ms: 9,
            records_lost: 77,
            error: "No space left on device".into(),
        })),
        Message::Reply(Reply::Error("no".into())),
        Message::Request(Request::AddRule {
            rule: Rule {
                id: None,
                host: Some("*.chat.test".into()),
                path: Some("/ws".into()),
                direction: Some(InjectDirection::ToServer),
                message_type: Some(MessageType::Text),
                contains: Some("secret".into()),
                regex: None,
                action: RuleAction::Replace {
                    pattern: "secret".into(),
                    replacement: "REDACTED".into(),
                },
            },
        }),
        Message::Request(Request::Send {
            traffic: "00000000000000ff".into(),
            direction: InjectDirection::ToClient,
            payload: "aGk=".into(),
            is_binary: false,
        }),
        Message::Reply(Reply::Refused {
            reason: Refusal::Conflict,
            message: "closed".into(),
        }),
        Message::Dropped(12),
        Message::Records(vec![
            frame(1),
            Record::Body(frametap_model::BodyChunk {
                traffic: TrafficId(42),
                of: frametap_model::BodyOf::Request,
                seq: 0,
                data: b"a=1&b=2".to_vec(),
            }),
            Record::WsOpen(WsOpen {
                traffic: TrafficId(42),
                timestamp_ms: 1,
                url: "wss://h/p".into(),
                client_address: "10.0.0.1:5".into(),
                server_address: "10.0.0.2:443".into(),
                subprotocol: None,
                extensions: None,
                deflate: false,
            }),
            frame(2),
        ]),
        Message::Records(vec![]),
    ]
}

#[test]
fn messages_roundtrip_whatever_the_chunking() {
    let messages = all_kinds();
    let bytes: Vec<u8> = messages.iter().flat_map(encode).collect();
    for chunk in [1, 3, 7, bytes.len()] {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk) {
            decoder.push(piece);
            while let Some(m) = decoder.next_message().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, messages, "chunks of {chunk}");
    }
}

#[test]
fn bad_messages_are_errors_not_panics() {
    for body in [
        &[][..],
        &[9][..],
        &[KIND_DROPPED, 1, 2][..],
        &[KIND_REQUEST, b'{'][..],
        &[KIND_RECORDING, b'{', b'}'][..],
        &[KIND_RECORDS, 0, 0, 0, 9, 1][..],
        &[KIND_RECORDS, 0, 0][..],
        &[KIND_RECORDS, 0, 0, 0, 1, 77][..],
    ] {
        assert!(decode_body(body).is_err(), "{body:?}");
    }
    let mut decoder = Decoder::default();
    decoder.push(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decoder.next_message(),
        Err(ProtocolError::TooLarge(_))
    ));
}

#[test]
fn delete_requests_read_as_documented() {
    let all: Request =
        serde_json::from_str(r#"{"op":"deleteTraffic","target":{"kind":"all"}}"#).unwrap();
    assert_eq!(
        all,
        Request::DeleteTraffic {
            target: DeleteTarget::All
        }
    );
    let snapshot = RuleSnapshot {
        recorded_at_ms: 5,
        agent_pid: 9,
        rules: vec![serde_json::from_str(r#"{"id":"r1","action":{"kind":"drop"}}"#).unwrap()],
    };
    let json = serde_json::to_string(&snapshot).unwrap();
    assert_eq!(
        json,
        r#"{"recordedAtMs":5,"agentPid":9,"rules":[{"id":"r1","action":{"kind":"drop"}}]}"#
    );
    assert_eq!(
        serde_json::from_str::<RuleSnapshot>(&json).unwrap(),
        snapshot
    );
}

#[test]
fn rules_read_as_users_write_them() {
    let rule: Rule = serde_json::from_str(
        r#"{"host":"chat.test","direction":"to-client","type":"binary","action":{"kind":"close","code":4000}}"#,
    )
    .unwrap();
    assert_eq!(rule.message_type, Some(MessageType::Binary));
    assert_eq!(
        rule.action,
        RuleAction::Close {
            code: 4000,
            reason: String::new()
        }
    );
    assert!(serde_json::from_str::<Rule>(r#"{"action":{"kind":"drop"},"hots":"x"}"#).is_err());
    // Both vocabularies for directions; rules are written back in their own.
    for (spelling, direction) in [
        ("to-client", InjectDirection::ToClient),
        ("server-to-client", InjectDirection::ToClient),
        ("to-server", InjectDirection::ToServer),
        ("client-to-server", InjectDirection::ToServer),
    ] {
        let rule: Rule = serde_json::from_str(&format!(
            r#"{{"direction":"{spelling}","action":{{"kind":"drop"}}}}"#
        ))
        .unwrap();
        assert_eq!(rule.direction, Some(direction), "{spelling}");
        let written = serde_json::to_value(&rule).unwrap();
        assert_eq!(written["direction"], direction.as_str());
    }
    assert!(
        serde_json::from_str::<Rule>(r#"{"direction":"upstream","action":{"kind":"drop"}}"#)
            .is_err()
    );
    assert!(serde_json::from_str::<Rule>(r#"{"action":{"kind":"explode"}}"#).is_err());
    // Unknown fields inside an action are refused too, whatever its kind.
    for action in [
        r#"{"kind":"drop","x":1}"#,
        r#"{"kind":"replace","pattern":"a","replacement":"b","x":1}"#,
        r#"{"kind":"close","code":1000,"x":1}"#,
    ] {
        let rule = format!(r#"{{"action":{action}}}"#);
        assert!(serde_json::from_str::<Rule>(&rule).is_err(), "{rule}");
    }
    // A close code is a number, however JSON writes it, if it is a whole u16.
    for (code, expected) in [
        ("1000", Some(1000)),
        ("1000.0", Some(1000)),
        ("4.999e3", Some(4999)),
        ("1000.5", None),
        ("-1000", None),
        ("65536", None),
        ("\"1000\"", None),
    ] {
        let rule = format!(r#"{{"action":{{"kind":"close","code":{code}}}}}"#);
        let got = serde_json::from_str::<Rule>(&rule)
            .ok()
            .map(|rule| match rule.action {
                RuleAction::Close { code, .. } => code,
                other => panic!("{other:?}"),
            });
        assert_eq!(got, expected, "{rule}");
    }
}

#[test]
fn rules_are_checked_before_they_reach_the_regex_engine() {
    let rule = |action: RuleAction| Rule {
        id: None,
        host: None,
        path: None,
        direction: None,
        message_type: None,
        contains: None,
        regex: None,
        action,
    };
    let close = |code, reason: &str| {
        rule(RuleAction::Close {
            code,
            reason: reason.into(),
        })
    };
    assert!(close(1000, "bye").check().is_ok());
    assert!(close(4999, &"x".repeat(123)).check().is_ok());
    for code in [0, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
        assert!(close(code, "").check().is_err(), "{code}");
    }
    assert!(close(1000, &"x".repeat(124)).check().is_err());
    // Characters are counted, as the document's maxLength counts them; the close
    // frame cuts the bytes to fit.
    assert!(close(1000, &"é".repeat(123)).check().is_ok());
    assert!(close(1000, &"é".repeat(124)).check().is_err());
    let host = |host: &str| Rule {
        host: Some(host.into()),
        ..rule(RuleAction::Drop {})
    };
    for good in [
        "chat.test",
        "*.test",
        " *.test ",
        "*",
        " * ",
        "",
        "  ",
        "*.*",
        "\t*\r\n",
    ] {
        assert!(host(good).check().is_ok(), "{good:?}");
    }
    // Only ASCII whitespace is trimmed: U+00A0 is part of the name.
    for bad in [
        "*.", " *. ", "**", "chat.*", "a*b", "x *.test", "*x", "\u{a0}*",
    ] {
        assert!(host(bad).check().is_err(), "{bad:?}");
    }
    let replace = Rule {
        message_type: Some(MessageType::Binary),
        ..rule(RuleAction::Replace {
            pattern: "a".into(),
            replacement: "b".into(),
        })
    };
    assert!(replace.check().unwrap_err().contains("text messages only"));
    for id in ["", "a/b", "with space", &"x".repeat(65)] {
        let bad = Rule {
            id: Some(id.into()),
            ..rule(RuleAction::Drop {})
        };
        assert!(bad.check().is_err(), "{id:?}");
    }
    let good = Rule {
        id: Some("redact-1.v2_~".into()),
        ..rule(RuleAction::Drop {})
    };
    assert!(good.check().is_ok());
}

#[tokio::test]
async fn async_glue_reads_what_it_wrote() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let messages = all_kinds();
    let expected = messages.clone();
    let writer = tokio::spawn(async move {
        for m in &messages {
            write_message(&mut a, m).await.unwrap();
        }
    });
    let mut got = Vec::new();
    while let Some(m) = read_message(&mut b).await.unwrap() {
        got.push(m);
    }
    writer.await.unwrap();
    assert_eq!(got, expected);
}

/// Writes the fuzz targets' seeds for the control socket and the store codec
/// (`fuzz/corpus/control_codec`, `store_codec`) when `FRAMETAP_FUZZ_SEEDS` names
/// the corpus directory; otherwise only checks that every seed decodes.
#[test]
fn fuzz_seeds() {
    use frametap_model::codec;
    let mut control = Vec::new();
    let mut store = Vec::new();
    for (i, message) in all_kinds().iter().enumerate() {
        let mut seed = vec![i as u8];
        seed.extend(encode(message));
        control.push(seed);
        if let Message::Records(records) = message {
            for record in records {
                store.push([&[0u8][..], &codec::encode_record(record)].concat());
                if let Record::Frame(f) = record {
                    store.push([&[1u8][..], &codec::encode_frame(f)].concat());
                    let id = frametap_model::FrameId::new(f.traffic, f.seq);
                    store.push([&[2u8][..], &codec::frame_key(id)].concat());
                }
                if let Record::Body(b) = record {
                    store.push([&[3u8][..], &codec::body_key(b.traffic, b.of, b.seq)].concat());
                }
            }
        }
    }
    // Every message at once, read in small pieces.
    let mut all = vec![3u8];
    all.extend(all_kinds().iter().flat_map(encode));
    control.push(all);
    for seed in &control {
        let mut decoder = Decoder::default();
        decoder.push(&seed[1..]);
        while decoder.next_message().expect("a seed decodes").is_some() {}
    }
    let Some(dir) = std::env::var_os("FRAMETAP_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for (target, seeds) in [("control_codec", &control), ("store_codec", &store)] {
        std::fs::create_dir_all(dir.join(target)).unwrap();
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(target).join(format!("seed-{i:03}")), seed).unwrap();
        }
    }
}
