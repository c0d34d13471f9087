//! Two recorded conversations compared message by message (sans-IO): what each peer
//! sent, in order, per direction, aligned by a diff of their contents after what is
//! volatile (timestamps, ids) is ignored. A message of the first conversation is
//! `same` as its partner in the second, `changed` (the diff paired them, their
//! contents differ), `missing` (only in the first) or `extra` (only in the second).

use std::borrow::Cow;

use serde_json::Value;
use serde_json_path::JsonPath;
use similar::{Algorithm, DiffOp, capture_diff_slices};

use crate::messages::AssembledMessage;

/// Placeholder for an ignored JSON value: equal in both conversations whatever it was.
const IGNORED: &str = "<ignored>";

/// What to leave out of the comparison.
#[derive(Default)]
pub struct Ignore {
    /// Parts of any message's content (text or bytes) matching one of these are
    /// removed.
    pub patterns: Vec<regex::bytes::Regex>,
    /// Values at these JSONPaths (RFC 9535) in text messages that are JSON.
    pub json_paths: Vec<JsonPath>,
}

impl Ignore {
    /// The content as it is compared: JSON with the ignored values replaced by a
    /// placeholder (and re-serialized, so formatting does not count), then what the
    /// patterns match removed.
    pub fn normalize<'a>(&self, message: &'a AssembledMessage) -> Cow<'a, [u8]> {
        let mut content = Cow::Borrowed(message.content.as_slice());
        if !self.json_paths.is_empty()
            && !message.binary
            && let Ok(mut json) = serde_json::from_slice::<Value>(&content)
        {
            for path in &self.json_paths {
                let pointers: Vec<String> = path
                    .query_located(&json)
                    .locations()
                    .map(|location| location.to_json_pointer())
                    .collect();
                for pointer in pointers {
                    if let Some(value) = json.pointer_mut(&pointer) {
                        *value = Value::String(IGNORED.into());
                    }
                }
            }
            content = Cow::Owned(serde_json::to_vec(&json).unwrap_or_default());
        }
        for pattern in &self.patterns {
            let replaced = match pattern.replace_all(&content, &b""[..]) {
                Cow::Owned(replaced) => Some(replaced),
                Cow::Borrowed(_) => None,
            };
            if let Some(replaced) = replaced {
                content = Cow::Owned(replaced);
            }
        }
        content
    }
}

/// How a message of one conversation fares in the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Same,
    Changed,
    Missing,
    Extra,
}

/// One line of the comparison: indexes into the two message lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    pub status: Status,
    pub a: Option<usize>,
    pub b: Option<usize>,
}

/// What the two peers' messages of one direction come to, in order: `a` and `b`
/// are that direction's messages of each conversation.
pub fn compare(a: &[AssembledMessage], b: &[AssembledMessage], ignore: &Ignore) -> Vec<Pair> {
    let key = |m: &AssembledMessage| (m.binary, ignore.normalize(m).into_owned());
    let keys_a: Vec<_> = a.iter().map(key).collect();
    let keys_b: Vec<_> = b.iter().map(key).collect();
    let mut pairs = Vec::with_capacity(a.len().max(b.len()));
    let pair = |status, a, b| Pair { status, a, b };
    for op in capture_diff_slices(Algorithm::Myers, &keys_a, &keys_b) {
        match op {
            DiffOp::Equal {
                old_index,
                new_index,
                len,
            } => pairs.extend(
                (0..len).map(|i| pair(Status::Same, Some(old_index + i), Some(new_index + i))),
            ),
            DiffOp::Delete {
                old_index, old_len, ..
            } => pairs.extend(
                (old_index..old_index + old_len).map(|i| pair(Status::Missing, Some(i), None)),
            ),
            DiffOp::Insert {
                new_index, new_len, ..
            } => pairs.extend(
                (new_index..new_index + new_len).map(|i| pair(Status::Extra, None, Some(i))),
            ),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                // Side by side while both have messages; the rest is missing or extra.
                let common = old_len.min(new_len);
                pairs.extend(
                    (0..common)
                        .map(|i| pair(Status::Changed, Some(old_index + i), Some(new_index + i))),
                );
                pairs.extend(
                    (old_index + common..old_index + old_len)
                        .map(|i| pair(Status::Missing, Some(i), None)),
                );
                pairs.extend(
                    (new_index + common..new_index + new_len)
                        .map(|i| pair(Status::Extra, None, Some(i))),
                );
            }
        }
    }
    pairs
}

/// A peer's own message: frametap's (injected, or a replace rule's replacement) are
/// not part of what the peers said to each other.
pub fn sent_by_peer(message: &AssembledMessage) -> bool {
    !message.injected && !message.modified
}

#[cfg(test)]
mod tests {
    use frametap_store::TrafficId;

    use super::*;

    fn message(seq: u64, text: &str) -> AssembledMessage {
        AssembledMessage {
            traffic: TrafficId(1 << 16),
            first_seq: seq,
            last_seq: seq,
            from_client: false,
            binary: false,
            content: text.as_bytes().to_vec(),
            length: text.len() as u64,
            truncated: false,
            timestamp_ms: 0,
            first_timestamp_ms: 0,
            frame_count: 1,
            dropped: false,
            injected: false,
            modified: false,
            incomplete: false,
        }
    }

    fn messages(texts: &[&str]) -> Vec<AssembledMessage> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| message(i as u64 + 1, t))
            .collect()
    }

    fn statuses(pairs: &[Pair]) -> Vec<(Status, Option<usize>, Option<usize>)> {
        pairs.iter().map(|p| (p.status, p.a, p.b)).collect()
    }

    #[test]
    fn same_changed_missing_and_extra() {
        use Status::*;
        let a = messages(&["hello", "price 1", "bye", "only in a"]);
        let b = messages(&["hello", "price 2", "bye", "new 1", "new 2"]);
        let pairs = compare(&a, &b, &Ignore::default());
        assert_eq!(
            statuses(&pairs),
            [
                (Same, Some(0), Some(0)),
                (Changed, Some(1), Some(1)),
                (Same, Some(2), Some(2)),
                (Changed, Some(3), Some(3)),
                (Extra, None, Some(4)),
            ]
        );
        let pairs = compare(&a[..3], &b[..1], &Ignore::default());
        assert_eq!(
            statuses(&pairs),
            [
                (Same, Some(0), Some(0)),
                (Missing, Some(1), None),
                (Missing, Some(2), None)
            ]
        );
        assert!(compare(&[], &[], &Ignore::default()).is_empty());
    }

    #[test]
    fn ignored_patterns_and_json_paths_make_volatile_parts_equal() {
        let a = messages(&[
            r#"{"ts": 1, "id": "x1", "data": {"n": 1, "at": 5}}"#,
            "t=100 ok",
        ]);
        let b = messages(&[r#"{"id":"y2","ts":2,"data":{"at":6,"n":1}}"#, "t=200 ok"]);
        let plain = compare(&a, &b, &Ignore::default());
        assert!(plain.iter().all(|p| p.status == Status::Changed));
        let ignore = Ignore {
            patterns: vec![regex::bytes::Regex::new(r"t=\d+").unwrap()],
            json_paths: vec![
                JsonPath::parse("$.ts").unwrap(),
                JsonPath::parse("$.id").unwrap(),
                JsonPath::parse("$..at").unwrap(),
            ],
        };
        let pairs = compare(&a, &b, &ignore);
        assert!(pairs.iter().all(|p| p.status == Status::Same), "{pairs:?}");
        // A value the paths do not name still counts.
        let c = messages(&[
            r#"{"ts": 3, "id": "z", "data": {"n": 2, "at": 7}}"#,
            "t=1 ok",
        ]);
        assert_eq!(compare(&a, &c, &ignore)[0].status, Status::Changed);
    }

    #[test]
    fn text_and_binary_of_the_same_bytes_differ() {
        let a = messages(&["abc"]);
        let mut b = messages(&["abc"]);
        b[0].binary = true;
        assert_eq!(
            compare(&a, &b, &Ignore::default())[0].status,
            Status::Changed
        );
    }
}
