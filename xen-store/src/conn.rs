//! The connection's state, without I/O: requests in flight by `req_id`, the bytes waiting to
//! be sent, the decoder of received bytes, and the watch events waiting to be taken, by watch.
//!
//! The sync client and the async client drive it the same way: [`Connection::submit`] a
//! request, send [`Connection::outgoing`], feed received bytes through
//! [`Connection::read_buffer`] / [`Connection::received`], take replies with
//! [`Connection::take_reply`] and events with [`Connection::next_event`].

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, ProtocolError};
use crate::op::{self, Op};
use crate::wire::{self, Decoder, Message, MsgType};

/// Identifies a watch of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub(crate) u64);

/// A watch fired: `path` (the watched path or one below it) may have changed.
///
/// Events are hints to look again, not a log of changes: the daemon fires once when the watch
/// is set, may fire spuriously, and when more events arrive than the watch's buffer holds they
/// are coalesced (duplicates dropped, then one event for the watched path itself, meaning
/// "re-read everything below").
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchEvent {
    /// The watch that fired.
    pub watch: WatchId,
    /// The path that changed.
    pub path: String,
}

/// How many events a watch buffers before coalescing (see [`WatchEvent`]).
pub const WATCH_BUFFER: usize = 64;

#[derive(Debug)]
struct Pending {
    ty: MsgType,
    reply: Option<Result<Vec<u8>, Error>>,
    /// Nobody waits for the reply: drop it when it comes.
    detached: bool,
}

#[derive(Debug)]
struct WatchQueue {
    path: String,
    token: String,
    events: VecDeque<(u64, String)>,
    /// Events were coalesced into one for `path`, still to be delivered.
    overflowed: Option<u64>,
}

/// A request sent (or queued to be sent) whose reply is parsed into `R`.
#[derive(Debug)]
#[must_use = "a request's reply must be waited for, or the request detached"]
pub struct Ticket<R> {
    pub(crate) req_id: u32,
    pub(crate) parse: fn(Vec<u8>) -> Result<R, Error>,
}

/// The sans-I/O state of one xenstore connection.
#[derive(Debug, Default)]
pub struct Connection {
    next_req_id: u32,
    pending: BTreeMap<u32, Pending>,
    /// Whole messages to send, one after another, from `out[sent..]` (so that one write sends
    /// them all); the first of `queued` may be partly sent.
    out: Vec<u8>,
    sent: usize,
    /// The `req_id` and length of each message in `out` not wholly sent, in order.
    queued: VecDeque<(u32, usize)>,
    /// Bytes of the first of `queued` already sent.
    front_sent: usize,
    decoder: Decoder,
    watches: BTreeMap<WatchId, WatchQueue>,
    next_watch: u64,
    /// Arrival order of events across watches.
    next_seq: u64,
    broken: Option<Error>,
    /// The longest payload the transport carries (0: `XENSTORE_PAYLOAD_MAX`).
    payload_max: usize,
}

impl Connection {
    /// Refuses payloads longer than `max` ([`Error::RequestTooLong`], before sending): what a
    /// transport carries may be less than `XENSTORE_PAYLOAD_MAX` (`/dev/xen/xenbus` carries
    /// 4080 bytes).
    pub fn set_payload_max(&mut self, max: usize) {
        self.payload_max = max;
    }

    /// A fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a request in transaction `tx_id` (0 for none).
    ///
    /// # Errors
    ///
    /// [`Error::RequestTooLong`] past the connection's payload limit, [`Error::Broken`] (or the
    /// error itself, to its own request) once an error broke the connection.
    pub fn submit<R>(&mut self, op: Op<R>, tx_id: u32) -> Result<Ticket<R>, Error> {
        let req_id = self.enqueue(op.ty, &op.payload, tx_id, false)?;
        Ok(Ticket {
            req_id,
            parse: op.parse,
        })
    }

    /// Queues a request whose reply nobody will wait for (an abort from a `Drop`).
    pub fn submit_detached<R>(&mut self, op: Op<R>, tx_id: u32) {
        // A broken connection sends nothing; there is nobody to tell.
        let _ = self.enqueue(op.ty, &op.payload, tx_id, true);
    }

    fn enqueue(
        &mut self,
        ty: MsgType,
        payload: &[u8],
        tx_id: u32,
        detached: bool,
    ) -> Result<u32, Error> {
        if let Some(error) = &self.broken {
            return Err(error.for_others());
        }
        if self.payload_max != 0 && payload.len() > self.payload_max {
            return Err(Error::RequestTooLong {
                len: payload.len(),
                max: self.payload_max,
            });
        }
        let req_id = self.fresh_req_id();
        let start = self.out.len();
        wire::encode(ty, req_id, tx_id, &[payload], &mut self.out)?;
        self.queued.push_back((req_id, self.out.len() - start));
        self.pending.insert(
            req_id,
            Pending {
                ty,
                reply: None,
                detached,
            },
        );
        Ok(req_id)
    }

    fn fresh_req_id(&mut self) -> u32 {
        loop {
            self.next_req_id = self.next_req_id.wrapping_add(1);
            // 0 is what watch events (and some kernels' synthesized replies) carry.
            if self.next_req_id != 0 && !self.pending.contains_key(&self.next_req_id) {
                return self.next_req_id;
            }
        }
    }

    /// Requests in flight (queued or sent, not yet answered), detached ones included.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The bytes to send next: every queued message, one after another (empty when everything
    /// is sent).
    pub fn outgoing(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` bytes of [`Connection::outgoing`] were sent.
    pub fn sent(&mut self, n: usize) {
        let n = n.min(self.out.len() - self.sent);
        self.sent += n;
        self.front_sent += n;
        while let Some(&(_, len)) = self.queued.front() {
            if self.front_sent < len {
                break;
            }
            self.front_sent -= len;
            self.queued.pop_front();
        }
        // Drop the wholly sent messages, at once when nothing is left, else when they are half
        // of the buffer (the partly sent one is kept whole, for `abandon`).
        let front_start = self.sent - self.front_sent;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if front_start > self.out.len() / 2 {
            self.out.drain(..front_start);
            self.sent = self.front_sent;
        }
    }

    /// A region to receive at least `min` bytes into; then call [`Connection::received`].
    pub fn read_buffer(&mut self, min: usize) -> &mut [u8] {
        self.decoder.buffer(min)
    }

    /// `n` bytes were received into the [`Connection::read_buffer`]`(min)`: routes every whole
    /// message. A protocol violation breaks the connection and is returned.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for a malformed message or a reply to no request.
    pub fn received(&mut self, min: usize, n: usize) -> Result<(), Error> {
        self.decoder.filled(min, n);
        loop {
            let message = match self.decoder.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(error) => return Err(self.break_with(error.into())),
            };
            if let Err(error) = self.route(message) {
                return Err(self.break_with(error.into()));
            }
        }
    }

    /// The peer closed the connection (end of stream).
    pub fn closed(&mut self) -> Error {
        self.break_with(Error::Closed)
    }

    /// Breaks the connection: every request in flight fails with (a copy of) `error`, which
    /// is returned.
    pub fn break_with(&mut self, error: Error) -> Error {
        if self.broken.is_none() {
            self.broken = Some(error.for_others());
        }
        for pending in self.pending.values_mut() {
            if pending.reply.is_none() {
                pending.reply = Some(Err(error.for_others()));
            }
        }
        self.pending.retain(|_, p| !p.detached);
        self.out.clear();
        self.sent = 0;
        self.queued.clear();
        self.front_sent = 0;
        error
    }

    /// The error that broke the connection, if one did.
    pub fn broken(&self) -> Option<Error> {
        self.broken.as_ref().map(Error::for_others)
    }

    fn route(&mut self, message: Message) -> Result<(), ProtocolError> {
        let header = message.header;
        if header.ty == MsgType::WATCH_EVENT {
            let (path, token) = op::parse_watch_event(&message.payload)?;
            self.push_event(path, token);
            return Ok(());
        }
        let Some(pending) = self.pending.get_mut(&header.req_id) else {
            return Err(ProtocolError::UnknownRequest {
                req_id: header.req_id,
            });
        };
        if pending.reply.is_some() {
            return Err(ProtocolError::UnknownRequest {
                req_id: header.req_id,
            });
        }
        if pending.detached {
            self.pending.remove(&header.req_id);
            if header.ty == MsgType::TRANSACTION_START {
                self.end_orphaned_transaction(message.payload);
            }
            return Ok(());
        }
        pending.reply = Some(if header.ty == pending.ty {
            Ok(message.payload)
        } else if header.ty == MsgType::ERROR {
            Err(Error::from_error_reply(&message.payload))
        } else {
            Err(ProtocolError::UnexpectedType {
                expected: pending.ty,
                got: header.ty,
            }
            .into())
        });
        Ok(())
    }

    /// The reply to `ticket`, if it has come (or the connection broke).
    ///
    /// # Errors
    ///
    /// `Some(Err)` with the daemon's refusal ([`Error::Xen`]), a reply this request cannot parse,
    /// or the error that broke the connection.
    pub fn take_reply<R>(&mut self, ticket: &Ticket<R>) -> Option<Result<R, Error>> {
        let pending = self.pending.get_mut(&ticket.req_id)?;
        let reply = pending.reply.take()?;
        self.pending.remove(&ticket.req_id);
        Some(reply.and_then(ticket.parse))
    }

    /// Nobody will wait for `ticket`: an unsent request is withdrawn (returns `true`), a sent
    /// one's reply will be dropped when it comes.
    pub fn abandon<R>(&mut self, ticket: &Ticket<R>) -> bool {
        let unsent = self
            .queued
            .iter()
            .position(|(id, _)| *id == ticket.req_id)
            .filter(|&i| i > 0 || self.front_sent == 0);
        if let Some(index) = unsent {
            // The front message starts where the sent bytes of it do.
            let start = self.sent - self.front_sent
                + self
                    .queued
                    .range(..index)
                    .map(|&(_, len)| len)
                    .sum::<usize>();
            let (_, len) = self.queued.remove(index).unwrap_or_default();
            self.out.drain(start..start + len);
            self.pending.remove(&ticket.req_id);
            return true;
        }
        match self.pending.get_mut(&ticket.req_id) {
            Some(pending) if pending.reply.is_none() => pending.detached = true,
            _ => {
                if let Some(Pending {
                    ty: MsgType::TRANSACTION_START,
                    reply: Some(Ok(payload)),
                    ..
                }) = self.pending.remove(&ticket.req_id)
                {
                    self.end_orphaned_transaction(payload);
                }
            }
        }
        false
    }

    /// A transaction was started for a requester that went away (a `TRANSACTION_START`
    /// abandoned once sent): abort it, or it stays open on the daemon for the connection's
    /// life.
    fn end_orphaned_transaction(&mut self, reply: Vec<u8>) {
        if let (Ok(tx_id), Ok(abort)) = (op::parse_tx_id(reply), op::transaction_end(false)) {
            self.submit_detached(abort, tx_id);
        }
    }

    /// Starts buffering events for a watch of `path` (before the `WATCH` request is sent, so
    /// that the daemon's first event is kept); returns its id and the token to register.
    pub fn add_watch(&mut self, path: &str) -> (WatchId, String) {
        self.next_watch += 1;
        let id = WatchId(self.next_watch);
        let mut token = String::from("xen-store/");
        let mut digits = Vec::new();
        crate::perms::push_decimal(&mut digits, self.next_watch);
        token.extend(digits.iter().map(|&d| d as char));
        self.watches.insert(
            id,
            WatchQueue {
                path: String::from(path),
                token: token.clone(),
                events: VecDeque::new(),
                overflowed: None,
            },
        );
        (id, token)
    }

    /// Stops buffering events for a watch; returns its path and token (for `UNWATCH`).
    pub fn remove_watch(&mut self, id: WatchId) -> Option<(String, String)> {
        self.watches.remove(&id).map(|w| (w.path, w.token))
    }

    fn push_event(&mut self, path: &str, token: &str) {
        // Tokens are this connection's own; an unknown one belongs to a removed watch.
        let Some(queue) = self.watches.values_mut().find(|w| w.token == token) else {
            return;
        };
        self.next_seq += 1;
        if queue.events.iter().any(|(_, p)| p == path) {
            return;
        }
        if queue.events.len() < WATCH_BUFFER {
            queue.events.push_back((self.next_seq, String::from(path)));
        } else if queue.overflowed.is_none() {
            queue.overflowed = Some(self.next_seq);
        }
    }

    /// Starts over on a new transport to the daemon, keeping the watches: for a guest that was
    /// resumed in a new domain (`xl restore`, a migration), whose xenstore ring and event
    /// channel the restore replaced. What was queued or partly received is dropped; every
    /// request in flight fails with [`Error::Closed`] (its reply will never come) and a
    /// transaction it opened is gone with the old connection. The watches keep their ids, their
    /// tokens and the events already buffered; register each again with
    /// [`watch_registrations`](Self::watch_registrations).
    pub fn restart(&mut self) {
        self.pending.retain(|_, pending| !pending.detached);
        for pending in self.pending.values_mut() {
            pending.reply.get_or_insert(Err(Error::Closed));
        }
        self.out.clear();
        self.sent = 0;
        self.queued.clear();
        self.front_sent = 0;
        self.decoder = Decoder::default();
        self.broken = None;
    }

    /// The path and token of every watch, for the `WATCH` requests that set them again on a new
    /// transport (see [`restart`](Self::restart)).
    pub fn watch_registrations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.watches
            .values()
            .map(|w| (w.path.as_str(), w.token.as_str()))
    }

    /// Whether watch `id` is set on this connection.
    pub fn is_watching(&self, id: WatchId) -> bool {
        self.watches.contains_key(&id)
    }

    /// The oldest buffered event of watch `id`.
    pub fn next_event_of(&mut self, id: WatchId) -> Option<WatchEvent> {
        let queue = self.watches.get_mut(&id)?;
        pop(id, queue)
    }

    /// The oldest buffered event of any watch.
    pub fn next_event(&mut self) -> Option<WatchEvent> {
        let (&id, queue) = self
            .watches
            .iter_mut()
            .filter_map(|(id, q)| Some((q.front_seq()?, (id, q))))
            .min_by_key(|(seq, _)| *seq)?
            .1;
        pop(id, queue)
    }
}

impl WatchQueue {
    fn front_seq(&self) -> Option<u64> {
        self.events.front().map(|(seq, _)| *seq).or(self.overflowed)
    }
}

fn pop(id: WatchId, queue: &mut WatchQueue) -> Option<WatchEvent> {
    let path = match queue.events.pop_front() {
        Some((_, path)) => path,
        None => {
            queue.overflowed.take()?;
            queue.path.clone()
        }
    };
    Some(WatchEvent { watch: id, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn feed(conn: &mut Connection, bytes: &[u8]) -> Result<(), Error> {
        let buf = conn.read_buffer(bytes.len());
        buf.copy_from_slice(bytes);
        conn.received(bytes.len(), bytes.len())
    }

    fn reply(ty: MsgType, req_id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(ty, req_id, 0, &[payload], &mut out).unwrap();
        out
    }

    #[test]
    fn replies_are_matched_by_req_id_in_any_order() {
        let mut conn = Connection::new();
        let a = conn.submit(op::read("/a").unwrap(), 0).unwrap();
        let b = conn.submit(op::read("/b").unwrap(), 0).unwrap();
        assert_ne!(a.req_id, b.req_id);
        let mut both = reply(MsgType::READ, b.req_id, b"B");
        both.extend(reply(MsgType::READ, a.req_id, b"A"));
        feed(&mut conn, &both).unwrap();
        assert_eq!(conn.take_reply(&a).unwrap().unwrap(), b"A");
        assert_eq!(conn.take_reply(&b).unwrap().unwrap(), b"B");
        assert_eq!(conn.in_flight(), 0);
    }

    #[test]
    fn error_replies_and_wrong_types_fail_only_their_request() {
        let mut conn = Connection::new();
        let a = conn.submit(op::read("/a").unwrap(), 0).unwrap();
        let b = conn.submit(op::rm("/b").unwrap(), 0).unwrap();
        let c = conn.submit(op::rm("/c").unwrap(), 0).unwrap();
        let mut bytes = reply(MsgType::ERROR, a.req_id, b"ENOENT\0");
        bytes.extend(reply(MsgType::WRITE, b.req_id, b"OK\0"));
        bytes.extend(reply(MsgType::RM, c.req_id, b"OK\0"));
        feed(&mut conn, &bytes).unwrap();
        assert_eq!(
            conn.take_reply(&a).unwrap().unwrap_err().errno(),
            Some(crate::Errno::ENOENT)
        );
        assert!(matches!(
            conn.take_reply(&b).unwrap(),
            Err(Error::Protocol(ProtocolError::UnexpectedType { .. }))
        ));
        conn.take_reply(&c).unwrap().unwrap();
    }

    #[test]
    fn a_reply_to_nothing_breaks_the_connection() {
        let mut conn = Connection::new();
        let a = conn.submit(op::read("/a").unwrap(), 0).unwrap();
        let error = feed(&mut conn, &reply(MsgType::READ, a.req_id + 1, b"x")).unwrap_err();
        assert!(matches!(
            error,
            Error::Protocol(ProtocolError::UnknownRequest { .. })
        ));
        assert!(matches!(conn.take_reply(&a), Some(Err(Error::Protocol(_)))));
        assert!(matches!(
            conn.submit(op::read("/a").unwrap(), 0),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn abandoned_requests_are_withdrawn_or_their_replies_dropped() {
        let mut conn = Connection::new();
        let a = conn.submit(op::read("/a").unwrap(), 0).unwrap();
        let b = conn.submit(op::read("/b").unwrap(), 0).unwrap();
        // `a` is partly sent: it stays, its reply will be dropped; `b` is withdrawn.
        conn.sent(3);
        assert!(!conn.abandon(&a));
        assert!(conn.abandon(&b));
        let rest = conn.outgoing().len();
        conn.sent(rest);
        assert!(conn.outgoing().is_empty());
        assert_eq!(conn.in_flight(), 1);
        feed(&mut conn, &reply(MsgType::READ, a.req_id, b"x")).unwrap();
        assert_eq!(conn.in_flight(), 0);
    }

    #[test]
    fn queued_requests_go_out_together_and_unsent_ones_can_be_withdrawn() {
        let mut conn = Connection::new();
        // The first two are long: sending them makes the buffer drop them.
        let long = ["/a".repeat(40), "/b".repeat(30)];
        let ops = [&long[0][..], &long[1], "/ccc", "/dddd"].map(|p| op::read(p).unwrap());
        let lens: Vec<usize> = ops.iter().map(|op| 16 + op.payload().len()).collect();
        let tickets: Vec<_> = ops
            .into_iter()
            .map(|op| conn.submit(op, 0).unwrap())
            .collect();
        let all = conn.outgoing().to_vec();
        assert_eq!(all.len(), lens.iter().sum::<usize>());
        // The first two and part of the third sent (the first two dropped from the buffer).
        conn.sent(lens[0] + lens[1] + 5);
        assert_eq!(conn.outgoing(), &all[lens[0] + lens[1] + 5..]);
        assert!(!conn.abandon(&tickets[2]));
        // The fourth is withdrawn: the rest of the third is all that is left to send.
        assert!(conn.abandon(&tickets[3]));
        assert_eq!(
            conn.outgoing(),
            &all[lens[0] + lens[1] + 5..all.len() - lens[3]]
        );
        let rest = conn.outgoing().len();
        conn.sent(rest + 100);
        assert!(conn.outgoing().is_empty());
        assert_eq!(conn.in_flight(), 3);
        let e = conn.submit(op::read("/e").unwrap(), 0).unwrap();
        assert_eq!(
            conn.outgoing(),
            &{
                let mut bytes = Vec::new();
                wire::encode(MsgType::READ, e.req_id, 0, &[b"/e\0"], &mut bytes).unwrap();
                bytes
            }[..]
        );
    }

    #[test]
    fn watch_events_are_routed_by_token_and_coalesced_when_full() {
        let mut conn = Connection::new();
        let (w1, t1) = conn.add_watch("/a");
        let (w2, t2) = conn.add_watch("/b");
        let event = |path: &str, token: &str| {
            let mut payload = vec![];
            payload.extend_from_slice(path.as_bytes());
            payload.push(0);
            payload.extend_from_slice(token.as_bytes());
            payload.push(0);
            reply(MsgType::WATCH_EVENT, 0, &payload)
        };
        feed(&mut conn, &event("/b/1", &t2)).unwrap();
        feed(&mut conn, &event("/a/1", &t1)).unwrap();
        feed(&mut conn, &event("/a/1", &t1)).unwrap();
        feed(&mut conn, &event("/x", "someone-else")).unwrap();
        assert_eq!(
            conn.next_event().unwrap(),
            WatchEvent {
                watch: w2,
                path: "/b/1".into()
            }
        );
        assert_eq!(
            conn.next_event().unwrap(),
            WatchEvent {
                watch: w1,
                path: "/a/1".into()
            }
        );
        assert_eq!(conn.next_event(), None);
        for i in 0..WATCH_BUFFER + 10 {
            feed(&mut conn, &event(&alloc::format!("/a/{i}"), &t1)).unwrap();
        }
        let paths: Vec<String> = core::iter::from_fn(|| conn.next_event_of(w1))
            .map(|e| e.path)
            .collect();
        assert_eq!(paths.len(), WATCH_BUFFER + 1);
        assert_eq!(paths.last().unwrap(), "/a");
        assert_eq!(conn.remove_watch(w1), Some(("/a".into(), t1)));
        assert!(matches!(
            feed(&mut conn, &reply(MsgType::WATCH_EVENT, 0, b"/a\0")),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn an_abandoned_transaction_start_ends_the_transaction_it_opened() {
        let aborts = |conn: &Connection| {
            let mut decoder = Decoder::new();
            decoder.push(conn.outgoing());
            core::iter::from_fn(|| decoder.next_message().unwrap())
                .filter(|m| m.header.ty == MsgType::TRANSACTION_END && m.payload == b"F\0")
                .map(|m| m.header.tx_id)
                .collect::<Vec<_>>()
        };
        let mut conn = Connection::new();
        // Abandoned once sent, before its reply: the abort goes out when the reply comes.
        let a = conn.submit(op::transaction_start().unwrap(), 0).unwrap();
        let b = conn.submit(op::transaction_start().unwrap(), 0).unwrap();
        let sent = conn.outgoing().len();
        conn.sent(sent);
        assert!(!conn.abandon(&a));
        feed(
            &mut conn,
            &reply(MsgType::TRANSACTION_START, a.req_id, b"7\0"),
        )
        .unwrap();
        assert_eq!(aborts(&conn), [7]);
        // Abandoned after its reply came, before it was taken.
        feed(
            &mut conn,
            &reply(MsgType::TRANSACTION_START, b.req_id, b"8\0"),
        )
        .unwrap();
        assert!(!conn.abandon(&b));
        assert_eq!(aborts(&conn), [7, 8]);
        // A failed start opened nothing.
        let c = conn.submit(op::transaction_start().unwrap(), 0).unwrap();
        let sent = conn.outgoing().len();
        conn.sent(sent);
        conn.abandon(&c);
        feed(&mut conn, &reply(MsgType::ERROR, c.req_id, b"ENOSPC\0")).unwrap();
        assert!(conn.outgoing().is_empty());
    }

    #[test]
    fn end_of_stream_fails_everything_in_flight() {
        let mut conn = Connection::new();
        let a = conn.submit(op::read("/a").unwrap(), 0).unwrap();
        assert!(matches!(conn.closed(), Error::Closed));
        assert!(matches!(conn.take_reply(&a), Some(Err(Error::Closed))));
    }
}
