//! Where a held message's fate is decided: the first matching rule drops it,
//! rewrites it, or closes the connection; without one it passes byte for byte (or
//! re-encoded, once the receiver's compression window has diverged).
use std::borrow::Cow;

use frametap_model::{FrameRecord, Record};
use frametap_proto::ws::Message;

use super::gate::{Phase, Stream};
use super::shared::Shared;
use crate::ending::{Closer, FirstClose};
use crate::rules::{Action, CompiledRule, MessageFacts};

impl Stream {
    /// The held message is complete: forward, drop, replace, or close.
    pub(super) fn decide(
        &mut self,
        message: Message,
        now_ms: u64,
        shared: &mut Shared,
        rules: &[CompiledRule],
        out: &mut Vec<u8>,
        records: &mut Vec<Record>,
    ) {
        let end = self.frame_start;
        let facts = MessageFacts {
            sender: self.sender,
            is_text: message.is_text,
            content: &message.content,
        };
        match rules.iter().find(|r| r.matches(&facts)).map(|r| &r.action) {
            None => self.pass(message, end, now_ms, shared, out, records),
            Some(Action::Drop) => {
                self.drop_held(end, out, records);
                if message.compressed && self.context_takeover {
                    self.reencode = true;
                }
            }
            Some(Action::Replace {
                pattern,
                replacement,
            }) => {
                let text = (!message.truncated)
                    .then(|| std::str::from_utf8(&message.content).ok())
                    .flatten();
                let Some(Cow::Owned(new)) =
                    text.map(|t| pattern.replace_all(t, replacement.as_str()))
                else {
                    // No match (or nothing we can rewrite): byte for byte as it came.
                    return self.pass(message, end, now_ms, shared, out, records);
                };
                self.drop_held(end, out, records);
                let (bytes, record) = self.encode(shared, true, new.as_bytes(), now_ms);
                out.extend_from_slice(&bytes);
                records.push(Record::Frame(FrameRecord {
                    modified: true,
                    ..record
                }));
                if self.context_takeover {
                    self.reencode = true;
                }
            }
            Some(Action::Close { code, reason }) => {
                let (code, reason) = (*code, reason.clone());
                self.close_both(code, &reason, now_ms, shared, out, records);
            }
        }
    }

    /// Forwards the held message unchanged (re-encoded when the window diverged).
    pub(super) fn pass(
        &mut self,
        message: Message,
        end: u64,
        now_ms: u64,
        shared: &mut Shared,
        out: &mut Vec<u8>,
        records: &mut Vec<Record>,
    ) {
        if self.reencode && message.compressed {
            if message.truncated {
                let reason = "message too large for frametap to re-encode";
                return self.close_both(1009, reason, now_ms, shared, out, records);
            }
            self.emit_controls(out);
            self.discard_to(end);
            // The peer's frames are what happened; the re-encoding is not recorded.
            let (bytes, _) = self.message_bytes(message.is_text, &message.content);
            out.extend_from_slice(&bytes);
            records.extend(self.held_records.drain(..).map(Record::Frame));
        } else {
            self.release_to(end, out);
            records.extend(self.held_records.drain(..).map(Record::Frame));
        }
        self.control_spans.clear();
        self.phase = Phase::Idle;
    }

    /// The held message's data frames are not forwarded; its control frames are.
    pub(super) fn drop_held(&mut self, end: u64, out: &mut Vec<u8>, records: &mut Vec<Record>) {
        self.emit_controls(out);
        self.discard_to(end);
        records.extend(
            self.held_records
                .drain(..)
                .map(|r| Record::Frame(FrameRecord { dropped: true, ..r })),
        );
        self.control_spans.clear();
        self.phase = Phase::Idle;
    }

    /// A close rule (or an impossible re-encode): the receiver gets a close frame
    /// now, the sender through the other stream; nothing else moves afterwards.
    pub(super) fn close_both(
        &mut self,
        code: u16,
        reason: &str,
        now_ms: u64,
        shared: &mut Shared,
        out: &mut Vec<u8>,
        records: &mut Vec<Record>,
    ) {
        let end = self.frame_start.max(self.released);
        self.drop_held(end, out, records);
        let (bytes, record) = self.encode_close(shared, code, reason, now_ms);
        out.extend_from_slice(&bytes);
        records.push(Record::Frame(record));
        if shared.first_close.is_none() {
            shared.first_close = Some(FirstClose {
                by: Closer::Frametap,
                code: Some(code),
                reason: Some(reason.to_string()),
            });
        }
        shared.closing = true;
        shared.close_back = Some((self.sender, code, reason.to_string()));
        self.abandon(records);
    }
}
