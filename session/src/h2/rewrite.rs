//! Rewriting the WebSocket streams of an HTTP/2 connection, sans-IO: whole-frame
//! mode, frametap's frames between the peers', and sending into a stream.
//!
//! Once a WebSocket is accepted, each direction is read in whole frames from its
//! next frame boundary on ([`super::H2Session::feed`] switches), so that after every
//! read what was forwarded ends on a boundary and frametap's own frames (DATA of a
//! rewritten stream, WINDOW_UPDATEs for a sender) may go next. A frame that came
//! whole in a read and goes on unchanged is not copied.
//!
//! A WebSocket stream's DATA goes through its WebSocket session's gate, as an
//! HTTP/1.1 WebSocket's bytes do: data that passes unchanged goes on in the frame
//! it came in when the receiver's windows allow; otherwise it waits in the stream's
//! queue ([`super::flow`]) and goes out in frametap's frames. The receiver's window
//! updates for the connection and for these streams stop here, and the sender gets
//! what the receiver can take. A held message whose sender has no window left goes
//! on unexamined (as one above the hold limit does), since the sender could never
//! send its end.
use std::collections::HashMap;

use frametap_model::{Record, Refusal, TrafficId};
use frametap_proto::{
    Peer,
    h2::{FrameHeader, H2Event, HEADER_LEN, flag, kind},
};

use super::{Ctx, H2Session, Stream};
use crate::ws::{Forward, Outbox, WsSession};

impl H2Session {
    /// Whole-frame mode: complete frames are forwarded, or taken and replaced by
    /// frametap's; the start of an incomplete one waits for the next read.
    pub(super) fn feed_whole(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        bytes: &[u8],
        now_us: u64,
        records: &mut Vec<Record>,
    ) -> Forward {
        let i = side.index();
        let mut out = Output::new(bytes);
        // frametap's frames that waited for this direction's boundary go first.
        if !self.directions[i].in_header_block() {
            self.release_pending(side.other(), &mut out, records);
        }
        let mut pos = 0;
        let mut partial = std::mem::take(&mut self.partial[i]);
        if !partial.is_empty() {
            loop {
                let need = frame_len(&partial).unwrap_or(HEADER_LEN);
                let take = (need - partial.len().min(need)).min(bytes.len() - pos);
                partial.extend_from_slice(&bytes[pos..pos + take]);
                pos += take;
                if partial.len() == need && frame_len(&partial) == Some(need) {
                    self.whole_frame(ctx, side, &partial, None, &mut out, now_us, records);
                    partial.clear();
                    break;
                }
                if pos == bytes.len() {
                    break;
                }
            }
        }
        while pos < bytes.len() && partial.is_empty() {
            match frame_len(&bytes[pos..]).filter(|&n| n <= bytes.len() - pos) {
                Some(n) => {
                    let frame = &bytes[pos..pos + n];
                    self.whole_frame(ctx, side, frame, Some(pos), &mut out, now_us, records);
                    pos += n;
                }
                None => {
                    partial.extend_from_slice(&bytes[pos..]);
                    pos = bytes.len();
                }
            }
        }
        self.partial[i] = partial;
        out.finish()
    }

    /// One complete frame from `side` (`at`: where it starts in the read, if it came
    /// whole in it).
    #[allow(clippy::too_many_arguments)]
    fn whole_frame(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        frame: &[u8],
        at: Option<usize>,
        out: &mut Output<'_>,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        let (i, r) = (side.index(), side.other().index());
        let h = FrameHeader::parse(frame[..HEADER_LEN].try_into().expect("a whole frame"));
        let rewrite = self.rewriting();
        let websocket = rewrite
            && h.kind == kind::DATA
            && self.flows[i].tracks(h.stream)
            && self.streams.get(&h.stream).is_some_and(|s| s.ws.is_some());
        // The receiver's window updates stop here; frametap grants the sender its own.
        let taken_update = rewrite
            && h.kind == kind::WINDOW_UPDATE
            && (h.stream == 0 || self.flows[r].tracks(h.stream));
        let mut events = std::mem::take(&mut self.events);
        self.directions[i].push(frame, &mut events);
        if websocket {
            self.websocket_data(ctx, side, h, frame, at, &mut events, out, now_us, records);
        } else {
            for event in events.drain(..) {
                self.on_event(ctx, side, event, frame, !taken_update, now_us, records);
            }
            match taken_update {
                true => out.changed(),
                false => out.keep(frame, at),
            }
        }
        self.events = events;
        if rewrite {
            self.settle(side, out, records);
        }
    }

    /// A DATA frame of a WebSocket stream, in rewriting mode: its data goes through
    /// the WebSocket session, then on as it came or into the stream's queue.
    #[allow(clippy::too_many_arguments)]
    fn websocket_data(
        &mut self,
        ctx: &Ctx<'_>,
        side: Peer,
        h: FrameHeader,
        frame: &[u8],
        at: Option<usize>,
        events: &mut Vec<H2Event>,
        out: &mut Output<'_>,
        now_us: u64,
        records: &mut Vec<Record>,
    ) {
        let i = side.index();
        let mut data = Vec::new();
        let mut unchanged = !h.has(flag::PADDED);
        let mut end = false;
        for event in events.drain(..) {
            match event {
                H2Event::Data { stream, range } => {
                    let Some(ws) = self.ws_mut(stream) else {
                        continue;
                    };
                    match ws.feed(side, &frame[range.clone()], now_us / 1000, records) {
                        Forward::AsIs => data.extend_from_slice(&frame[range]),
                        Forward::Bytes(bytes) => {
                            unchanged = false;
                            data.extend_from_slice(&bytes);
                        }
                    }
                }
                H2Event::End { .. } => end = true,
                H2Event::DataFrame { .. } => {}
                other => self.on_event(ctx, side, other, frame, true, now_us, records),
            }
        }
        let flow = &mut self.flows[i];
        if unchanged && flow.may_pass(h.stream, h.len) {
            flow.on_data(h.stream, h.len, true);
            if end {
                flow.ended_as_sent(h.stream);
            }
            out.keep(frame, at);
        } else {
            flow.on_data(h.stream, h.len, false);
            flow.queue(h.stream, &data);
            if end {
                flow.end(h.stream);
            }
            out.changed();
        }
        self.take_ws_outboxes(h.stream, records);
        if end {
            self.on_stream_end(ctx, side, h.stream, now_us, records);
        }
    }

    fn ws_mut(&mut self, stream: u32) -> Option<&mut WsSession> {
        self.streams.get_mut(&stream)?.ws.as_deref_mut()
    }

    /// What the WebSocket session of `stream` wrote outside the flow (a close rule's
    /// close frame back to the sender, injected messages) joins the queue toward
    /// its receiver.
    fn take_ws_outboxes(&mut self, stream: u32, records: &mut Vec<Record>) {
        for to in [Peer::Client, Peer::Server] {
            let Some(outbox) = self.ws_mut(stream).and_then(|ws| ws.take_outbox(to)) else {
                continue;
            };
            self.flows[to.other().index()].queue(stream, &outbox.bytes);
            records.extend(outbox.records);
        }
    }

    /// After a frame from `side` in rewriting mode: held messages whose sender has
    /// no window left go on unexamined, queues go out as far as windows allow, and
    /// senders get the window they are owed. Frames for `side`'s receiver go in
    /// this read's output (or wait, inside a header block); frames for `side` wait
    /// for the other direction's next write.
    fn settle(&mut self, side: Peer, out: &mut Output<'_>, records: &mut Vec<Record>) {
        for sender in [Peer::Client, Peer::Server] {
            let f = sender.index();
            for stream in self.flows[f].stream_ids() {
                let starved = self.flows[f].starved(stream);
                let Some(ws) = self.ws_mut(stream) else {
                    continue;
                };
                if starved && ws.held_len(sender) > 0 {
                    let released = ws.stop_holding(sender, records);
                    self.flows[f].queue(stream, &released);
                }
            }
        }
        let (i, r) = (side.index(), side.other().index());
        let streams = &self.streams;
        let mut toward_receiver = Vec::new();
        self.flows[i].send_queued(&mut toward_receiver);
        let held_by = |sender: Peer| held_by(streams, sender);
        self.flows[r].grant(held_by(side.other()), &mut toward_receiver);
        let mut toward_side = Vec::new();
        self.flows[r].send_queued(&mut toward_side);
        self.flows[i].grant(held_by(side), &mut toward_side);
        self.pending[i].bytes.extend_from_slice(&toward_side);
        if self.directions[i].in_header_block() {
            self.pending[r].bytes.extend_from_slice(&toward_receiver);
        } else {
            self.release_pending(side.other(), out, records);
            out.push(&toward_receiver);
        }
    }

    /// frametap's frames waiting for `to` go into this read's output.
    fn release_pending(&mut self, to: Peer, out: &mut Output<'_>, records: &mut Vec<Record>) {
        let pending = std::mem::take(&mut self.pending[to.index()]);
        out.push(&pending.bytes);
        records.extend(pending.records);
    }

    /// frametap's frames for `to` that can be written now, between reads.
    pub(crate) fn take_outbox(&mut self, to: Peer) -> Option<Outbox> {
        self.has_outbox(to)
            .then(|| std::mem::take(&mut self.pending[to.index()]))
    }

    /// Whether frametap has frames for `to` that may be written before the next read.
    pub(crate) fn has_outbox(&self, to: Peer) -> bool {
        let from = to.other().index();
        self.whole_frames[from]
            && !self.directions[from].in_header_block()
            && !self.pending[to.index()].is_empty()
    }

    /// Sends a message into the WebSocket stream `traffic` (see [`WsSession::inject`]).
    pub(crate) fn inject(
        &mut self,
        traffic: TrafficId,
        to: Peer,
        content: &[u8],
        is_binary: bool,
        now_us: u64,
    ) -> Result<u64, (Refusal, String)> {
        let Some((&stream, _)) = self
            .streams
            .iter()
            .find(|(_, s)| s.ws.as_ref().is_some_and(|ws| ws.traffic() == traffic))
        else {
            return Err((
                Refusal::Conflict,
                "the WebSocket connection has ended".into(),
            ));
        };
        if !self.rewriting() {
            return Err((
                Refusal::Conflict,
                "frametap cannot write into this HTTP/2 connection yet (a frame is still \
                 passing, or a peer sent malformed HTTP/2); try again"
                    .into(),
            ));
        }
        let sender = to.other();
        if self.flows[sender.index()].sender_ended(stream) {
            return Err((
                Refusal::Conflict,
                format!(
                    "the {} ended the HTTP/2 stream of this WebSocket: nothing more can go to the {}",
                    sender.name(),
                    to.name()
                ),
            ));
        }
        let ws = self.ws_mut(stream).expect("found above");
        let seq = ws.inject(to, content, is_binary, now_us / 1000)?;
        let mut records = Vec::new();
        self.take_ws_outboxes(stream, &mut records);
        let pending = &mut self.pending[to.index()];
        pending.records.extend(records);
        self.flows[sender.index()].send_queued(&mut pending.bytes);
        Ok(seq)
    }
}

/// How many bytes `sender` sent on a stream that its WebSocket session holds back.
fn held_by(streams: &HashMap<u32, Stream>, sender: Peer) -> impl Fn(u32) -> usize + '_ {
    move |id| {
        streams
            .get(&id)
            .and_then(|s| s.ws.as_ref())
            .map_or(0, |ws| ws.held_len(sender))
    }
}

/// A whole frame's length (header included) once its header is in `bytes`.
fn frame_len(bytes: &[u8]) -> Option<usize> {
    let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    Some(HEADER_LEN + FrameHeader::parse(header).len)
}

/// What a read in whole-frame mode forwards: the read as it came as long as every
/// frame does, a copy from the first difference on.
struct Output<'a> {
    read: &'a [u8],
    /// How much of `read` goes as it came, when `copy` is None.
    as_is: usize,
    copy: Option<Vec<u8>>,
}

impl<'a> Output<'a> {
    fn new(read: &'a [u8]) -> Self {
        Output {
            read,
            as_is: 0,
            copy: None,
        }
    }

    fn copy(&mut self) -> &mut Vec<u8> {
        let read = &self.read[..self.as_is];
        self.copy.get_or_insert_with(|| read.to_vec())
    }

    /// The frame goes on as it came (`at`: where it is in the read, if it is).
    fn keep(&mut self, frame: &[u8], at: Option<usize>) {
        if self.copy.is_none() && at == Some(self.as_is) {
            self.as_is += frame.len();
        } else {
            self.copy().extend_from_slice(frame);
        }
    }

    /// frametap's bytes go on.
    fn push(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.copy().extend_from_slice(bytes);
        }
    }

    /// Something of the read does not go on as it came.
    fn changed(&mut self) {
        self.copy();
    }

    fn finish(self) -> Forward {
        match self.copy {
            None if self.as_is == self.read.len() => Forward::AsIs,
            None => Forward::Bytes(self.read[..self.as_is].to_vec()),
            Some(copy) => Forward::Bytes(copy),
        }
    }
}
