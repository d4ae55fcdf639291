//! The blocking API: [`Store`] (every operation, for a connection or a transaction),
//! [`Client`] over any blocking byte stream, and [`Transaction`].

use alloc::string::String;
use alloc::vec::Vec;

use embedded_io::{Read, Write};
use xen_hypercall::DomId;

use crate::conn::{Connection, Ticket, WatchEvent, WatchId};
use crate::error::{Errno, Error, ErrorKind};
use crate::op::{self, Op};
use crate::perms::Perm;

/// How often [`Client::transact`] runs a transaction that keeps conflicting.
pub const TRANSACTION_ATTEMPTS: usize = 16;

/// Whether `transact` runs a transaction again after its `attempt`-th run ended with
/// `result`: a conflict, with attempts left.
pub(crate) fn run_again<R>(result: &Result<R, Error>, attempt: usize) -> bool {
    matches!(result, Err(error) if error.kind() == ErrorKind::Conflict)
        && attempt < TRANSACTION_ATTEMPTS
}

/// Every xenstore operation, on a connection ([`Client`]) or inside a [`Transaction`].
pub trait Store {
    /// Sends `op` and waits for its reply.
    fn run<R>(&mut self, op: Op<R>) -> Result<R, Error>;

    /// The node's value.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOENT`: no such node, `EACCES`: not
    /// readable by this domain), [`Error::Path`] for a path xenstore would refuse, or a
    /// transport or protocol error.
    #[doc(alias("xs_read"))]
    fn read(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        self.run(op::read(path)?)
    }

    /// The node's value as UTF-8 text.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOENT`: no such node, `EACCES`: not readable by
    /// this domain), [`Error::Path`] for a path xenstore would refuse, or a transport or protocol
    /// error. [`Error::InvalidInput`] if the value is not UTF-8.
    fn read_string(&mut self, path: &str) -> Result<String, Error> {
        self.run(op::read_string(path)?)
    }

    /// Sets the node's value, creating it and missing parents.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`EACCES`: this domain may not write the node or
    /// create it under its parent), [`Error::Path`] for a path xenstore would refuse, or a
    /// transport or protocol error.
    #[doc(alias("xs_write"))]
    fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Error> {
        self.run(op::write(path, value)?)
    }

    /// Creates the node (and parents) if missing.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`EACCES`: this domain may not create it),
    /// [`Error::Path`] for a path xenstore would refuse, or a transport or protocol error.
    #[doc(alias("xs_mkdir"))]
    fn mkdir(&mut self, path: &str) -> Result<(), Error> {
        self.run(op::mkdir(path)?)
    }

    /// Removes the node and everything below it.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOENT`: the parent does not exist, `EACCES`: not
    /// writable by this domain), [`Error::Path`] for a path xenstore would refuse, or a transport
    /// or protocol error.
    #[doc(alias("xs_rm"))]
    fn rm(&mut self, path: &str) -> Result<(), Error> {
        self.run(op::rm(path)?)
    }

    /// The names of the node's children, however many: `DIRECTORY`, and `DIRECTORY_PART`
    /// when they do not fit in one reply (`E2BIG`), restarted if the node changes meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOENT`: no such node, `EACCES`: not readable by
    /// this domain), [`Error::Path`] for a path xenstore would refuse, or a transport or protocol
    /// error.
    #[doc(alias("xs_directory"))]
    fn directory(&mut self, path: &str) -> Result<Vec<String>, Error> {
        match self.run(op::directory(path)?) {
            Err(Error::Xen(Errno::E2BIG)) => {}
            other => return other,
        }
        let mut listing = op::DirectoryParts::new(path);
        loop {
            let part = self.run(listing.next()?)?;
            if let Some(names) = listing.add(part)? {
                return Ok(names);
            }
        }
    }

    /// The node's permissions, owner first.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOENT`: no such node, `EACCES`: not readable by
    /// this domain), [`Error::Path`] for a path xenstore would refuse, or a transport or protocol
    /// error.
    fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>, Error> {
        self.run(op::get_perms(path)?)
    }

    /// Replaces the node's permissions (owner first).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOENT`: no such node, a permission error when this
    /// domain may not change them), [`Error::Path`] for a path xenstore would refuse, or a
    /// transport or protocol error.
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), Error> {
        self.run(op::set_perms(path, perms)?)
    }

    /// The home of a domain (`/local/domain/<domid>`).
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code, or a transport or protocol error.
    fn get_domain_path(&mut self, domid: DomId) -> Result<String, Error> {
        self.run(op::get_domain_path(domid)?)
    }
}

/// A blocking xenstore connection over any byte stream: the daemon's socket, `/dev/xen/xenbus`
/// (the `unix` module, feature `linux`), or a guest's shared ring.
///
/// One request at a time with the [`Store`] methods, or many in flight with
/// [`Client::submit`] and [`Client::wait`].
#[derive(Debug)]
pub struct Client<T> {
    conn: Connection,
    io: T,
}

impl<T: Read + Write> Client<T>
where
    T::Error: 'static,
{
    /// A client speaking over `io`.
    pub fn new(io: T) -> Self {
        Self {
            conn: Connection::new(),
            io,
        }
    }

    /// Refuses payloads longer than `max` before sending them ([`Error::RequestTooLong`]):
    /// `/dev/xen/xenbus` carries at most 4080 bytes (`unix::XENBUS_PAYLOAD_MAX`).
    pub fn set_payload_max(&mut self, max: usize) {
        self.conn.set_payload_max(max);
    }

    /// The byte stream.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The byte stream, e.g. to reach a ring transport's doorbell.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Sends a request (in transaction `tx_id`, 0 for none) without waiting for its reply.
    ///
    /// # Errors
    ///
    /// [`Error::RequestTooLong`] past the connection's payload limit, [`Error::Broken`] if an
    /// earlier error broke the connection, or a transport error while sending.
    pub fn submit<R>(&mut self, op: Op<R>, tx_id: u32) -> Result<Ticket<R>, Error> {
        let ticket = self.queue(op, tx_id)?;
        self.flush()?;
        Ok(ticket)
    }

    /// Queues a request without sending it: every queued request goes out in one write at the
    /// next [`Client::flush`], [`Client::submit`], or wait for a reply or an event.
    ///
    /// # Errors
    ///
    /// [`Error::RequestTooLong`] past the connection's payload limit, [`Error::Broken`] if an
    /// earlier error broke the connection.
    pub fn queue<R>(&mut self, op: Op<R>, tx_id: u32) -> Result<Ticket<R>, Error> {
        self.conn.submit(op, tx_id)
    }

    /// Waits for the reply to a submitted request; replies to others that arrive meanwhile
    /// are kept for their own `wait`, watch events for [`Client::next_event`].
    ///
    /// # Errors
    ///
    /// The daemon's refusal ([`Error::Xen`], e.g. `ENOENT` for a missing node, `EACCES` when the
    /// permissions forbid it), or a transport or protocol error ([`Error::Closed`],
    /// [`Error::Broken`], [`Error::Protocol`], ...).
    pub fn wait<R>(&mut self, ticket: Ticket<R>) -> Result<R, Error> {
        loop {
            if let Some(reply) = self.conn.take_reply(&ticket) {
                return reply;
            }
            self.receive()?;
        }
    }

    /// Sends every queued request.
    ///
    /// # Errors
    ///
    /// A transport or protocol error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`],
    /// ...).
    pub fn flush(&mut self) -> Result<(), Error> {
        while !self.conn.outgoing().is_empty() {
            match self.io.write(self.conn.outgoing()) {
                Ok(0) => return Err(self.conn.closed()),
                Ok(n) => self.conn.sent(n),
                Err(e) => return Err(self.conn.break_with(Error::transport(e))),
            }
        }
        self.io
            .flush()
            .map_err(|e| self.conn.break_with(Error::transport(e)))
    }

    /// Blocks until some bytes arrive, and routes them.
    fn receive(&mut self) -> Result<(), Error> {
        const CHUNK: usize = 4096;
        if let Some(error) = self.conn.broken() {
            return Err(error);
        }
        self.flush()?;
        let read = self.io.read(self.conn.read_buffer(CHUNK));
        match read {
            Ok(0) => {
                self.conn.received(CHUNK, 0)?;
                Err(self.conn.closed())
            }
            Ok(n) => self.conn.received(CHUNK, n),
            Err(e) => {
                self.conn.received(CHUNK, 0)?;
                Err(self.conn.break_with(Error::transport(e)))
            }
        }
    }

    /// Watches `path` (and everything below it; or a special path such as `@releaseDomain`).
    /// The daemon fires the watch once right away.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`E2BIG`: this domain has too many watches),
    /// [`Error::Path`] for a path xenstore would refuse, or a transport or protocol error.
    #[doc(alias("xs_watch"))]
    pub fn watch(&mut self, path: &str) -> Result<WatchId, Error> {
        crate::path::check_watch(path)?;
        let (id, token) = self.conn.add_watch(path);
        let result = op::watch(path, &token).and_then(|op| self.run(op));
        match result {
            Ok(()) => Ok(id),
            Err(error) => {
                self.conn.remove_watch(id);
                Err(error)
            }
        }
    }

    /// Carries on over `io`, a new transport to the same daemon, after this domain was resumed
    /// in a new domain (`SCHEDOP_shutdown(suspend)` answered "resumed": `xl restore`, a
    /// migration), which gave it a fresh xenstore ring and event channel. After a suspend that
    /// was cancelled (a checkpoint, `xl save -c`) the old transport still works: keep it.
    ///
    /// What survives: the client and its watches, with the same [`WatchId`]s; each is set again
    /// on the daemon, which fires it once, so the caller re-reads what it watches and misses no
    /// change made while the domain was suspended. What does not: requests in flight (they fail
    /// with [`Error::Closed`]) and transactions (none can be open here, as a [`Transaction`]
    /// borrows the client; run [`transact`](Self::transact)'s body again). Fails with the first
    /// watch the daemon refused; the others are set.
    ///
    /// # Errors
    ///
    /// The first watch the daemon refused ([`Error::Xen`]), or a transport or protocol error
    /// ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    #[doc(alias("xs_resume"))]
    pub fn resume(&mut self, io: T) -> Result<(), Error> {
        self.io = io;
        self.conn.restart();
        let watches: Vec<(String, String)> = self
            .conn
            .watch_registrations()
            .map(|(path, token)| (path.into(), token.into()))
            .collect();
        let mut result = Ok(());
        for (path, token) in watches {
            let set = op::watch(&path, &token).and_then(|op| self.run(op));
            result = result.and(set);
        }
        result
    }

    /// Removes a watch; its buffered events are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if `id` names no watch of this client, the daemon's refusal
    /// ([`Error::Xen`]), or a transport or protocol error ([`Error::Closed`], [`Error::Broken`],
    /// [`Error::Protocol`], ...).
    pub fn unwatch(&mut self, id: WatchId) -> Result<(), Error> {
        let (path, token) = self
            .conn
            .remove_watch(id)
            .ok_or(Error::InvalidInput("no such watch"))?;
        self.run(op::unwatch(&path, &token)?)
    }

    /// The next watch event, blocking until one arrives.
    ///
    /// # Errors
    ///
    /// A transport or protocol error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`],
    /// ...).
    pub fn next_event(&mut self) -> Result<WatchEvent, Error> {
        self.receive_until(Connection::next_event)
    }

    /// The next event of watch `id`, blocking until one arrives; events of other watches
    /// that arrive meanwhile stay queued for their own callers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if `id` names no watch of this client, or a transport or protocol
    /// error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    pub fn next_event_of(&mut self, id: WatchId) -> Result<WatchEvent, Error> {
        if !self.conn.is_watching(id) {
            return Err(Error::InvalidInput("no such watch"));
        }
        self.receive_until(|conn| conn.next_event_of(id))
    }

    /// Receives until `take` finds an event among those buffered.
    fn receive_until(
        &mut self,
        mut take: impl FnMut(&mut Connection) -> Option<WatchEvent>,
    ) -> Result<WatchEvent, Error> {
        loop {
            if let Some(event) = take(&mut self.conn) {
                return Ok(event);
            }
            self.receive()?;
        }
    }

    /// A watch event already received, if any (never blocks).
    pub fn try_next_event(&mut self) -> Option<WatchEvent> {
        self.conn.next_event()
    }

    /// Starts a transaction; it aborts when dropped without [`Transaction::commit`].
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOSPC`: too many open transactions), or a
    /// transport or protocol error.
    #[doc(alias("xs_transaction_start"))]
    pub fn transaction(&mut self) -> Result<Transaction<'_, T>, Error> {
        let id = self.run(op::transaction_start()?)?;
        Ok(Transaction {
            client: self,
            id,
            open: true,
        })
    }

    /// Runs `body` in a transaction and commits it, running it again from the start when the
    /// daemon reports a conflict (`EAGAIN`), up to [`TRANSACTION_ATTEMPTS`] times.
    ///
    /// # Errors
    ///
    /// The first error of `body` (the transaction is aborted), those of
    /// [`transaction`](Self::transaction), and `EAGAIN` ([`ErrorKind::Conflict`]) when every
    /// attempt met a conflict.
    pub fn transact<R>(
        &mut self,
        mut body: impl FnMut(&mut Transaction<'_, T>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.transaction()?;
            let result = body(&mut tx).and_then(|value| tx.commit().map(|()| value));
            if !run_again(&result, attempt) {
                return result;
            }
        }
    }

    /// Tells the daemon to serve a domain's ring (dom0 only).
    ///
    /// # Errors
    ///
    /// The daemon's refusal ([`Error::Xen`]: `EACCES` from an unprivileged domain), or a transport
    /// or protocol error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    pub fn introduce(&mut self, domid: DomId, mfn: u64, port: u32) -> Result<(), Error> {
        self.run(op::introduce(domid, mfn, port)?)
    }

    /// Tells the daemon to stop serving a domain (dom0 only).
    ///
    /// # Errors
    ///
    /// The daemon's refusal ([`Error::Xen`]: `EACCES` from an unprivileged domain), or a transport
    /// or protocol error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    pub fn release(&mut self, domid: DomId) -> Result<(), Error> {
        self.run(op::release(domid)?)
    }

    /// Whether the daemon serves a domain.
    ///
    /// # Errors
    ///
    /// The daemon's refusal ([`Error::Xen`]), or a transport or protocol error ([`Error::Closed`],
    /// [`Error::Broken`], [`Error::Protocol`], ...).
    pub fn is_domain_introduced(&mut self, domid: DomId) -> Result<bool, Error> {
        self.run(op::is_domain_introduced(domid)?)
    }
}

impl<T: Read + Write> Store for Client<T>
where
    T::Error: 'static,
{
    fn run<R>(&mut self, op: Op<R>) -> Result<R, Error> {
        let ticket = self.submit(op, 0)?;
        self.wait(ticket)
    }
}

/// A transaction: operations on a snapshot, applied together by [`Transaction::commit`].
///
/// Dropped without a commit it is aborted (the abort is queued and sent with the
/// connection's next request; the daemon also ends it when the connection closes).
#[derive(Debug)]
pub struct Transaction<'a, T: Read + Write>
where
    T::Error: 'static,
{
    client: &'a mut Client<T>,
    id: u32,
    open: bool,
}

impl<T: Read + Write> Transaction<'_, T>
where
    T::Error: 'static,
{
    /// The daemon's id for this transaction.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Applies the transaction; `EAGAIN` ([`ErrorKind::Conflict`]) means another writer got in
    /// first and nothing was applied.
    ///
    /// # Errors
    ///
    /// `EAGAIN` ([`ErrorKind::Conflict`]) as above, the daemon's other refusals ([`Error::Xen`]),
    /// or a transport or protocol error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`],
    /// ...).
    pub fn commit(&mut self) -> Result<(), Error> {
        self.end(true)
    }

    /// Discards the transaction.
    ///
    /// # Errors
    ///
    /// The daemon's refusal ([`Error::Xen`]), or a transport or protocol error ([`Error::Closed`],
    /// [`Error::Broken`], [`Error::Protocol`], ...).
    pub fn abort(&mut self) -> Result<(), Error> {
        self.end(false)
    }

    fn end(&mut self, commit: bool) -> Result<(), Error> {
        if !self.open {
            return Err(Error::InvalidInput("the transaction has ended"));
        }
        self.open = false;
        let ticket = self.client.submit(op::transaction_end(commit)?, self.id)?;
        self.client.wait(ticket)
    }
}

impl<T: Read + Write> Store for Transaction<'_, T>
where
    T::Error: 'static,
{
    fn run<R>(&mut self, op: Op<R>) -> Result<R, Error> {
        if !self.open {
            return Err(Error::InvalidInput("the transaction has ended"));
        }
        let ticket = self.client.submit(op, self.id)?;
        self.client.wait(ticket)
    }
}

impl<T: Read + Write> Drop for Transaction<'_, T>
where
    T::Error: 'static,
{
    fn drop(&mut self) {
        if self.open {
            if let Ok(abort) = op::transaction_end(false) {
                self.client.conn.submit_detached(abort, self.id);
            }
        }
    }
}
