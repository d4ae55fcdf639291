//! The async client on tokio 1: one connection, many requests in flight, watches as
//! [`Stream`]s, no background task.
//!
//! Whoever polls drives the connection: a request future (or a watch stream) writes what is
//! queued, reads what has arrived, routes every reply by `req_id` and every watch event by
//! token, and then looks for its own. The socket's readiness wakes every waiting future, so
//! no wake-up is lost when the future that last polled the socket is dropped.
//!
//! - Many in flight: at most [`AsyncClient::with_max_in_flight`] requests (64 by default);
//!   more wait (backpressure), they never fail.
//! - Watch events are buffered per watch and coalesced when the buffer is full (see
//!   [`WatchEvent`]), so a slow watch consumer never stalls replies, and no change is lost.
//! - Cancellation-safe: dropping a request before it is sent withdraws it; after, its reply is
//!   dropped when it comes. A dropped transaction is aborted, a dropped [`Watch`] removed (both
//!   queued without I/O in `Drop`, sent with the next request; the daemon also ends them when
//!   the connection closes), and a transaction a dropped [`AsyncClient::transaction`] future
//!   had started is aborted when its reply comes.
//! - Requests held back by the bound wait in order: room that frees up goes to the oldest.

use std::boxed::Box;
use std::collections::VecDeque;
use std::future::Future;
#[cfg(not(loom))]
use std::io;
use std::pin::Pin;
use std::string::String;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use futures_core::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use xen_hypercall::DomId;

use crate::conn::{Connection, Ticket, WatchEvent, WatchId};
use crate::error::{Errno, Error};
use crate::op::{self, Op};
use crate::perms::Perm;
use crate::store::run_again;
use crate::sync::{Mutex, MutexGuard};

/// The default bound on requests in flight.
pub const MAX_IN_FLIGHT: usize = 64;

trait Io: AsyncRead + AsyncWrite + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}

/// An async xenstore connection. Clones share the connection.
#[derive(Clone)]
pub struct AsyncClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("max_in_flight", &self.inner.max_in_flight)
            .finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    waiters: Arc<Waiters>,
    max_in_flight: usize,
}

struct State {
    conn: Connection,
    io: Pin<Box<dyn Io>>,
    admission: Admission,
}

/// The requests held back by the bound on requests in flight, oldest first. Room that frees
/// up goes to the oldest: a request may go out only when fewer are waiting ahead of it than
/// there is room, so none starves and none barges in ahead of a woken one.
///
/// Only the oldest (the front) also waits on the socket, to route the replies that free room
/// when no request in flight has an owner polling it (they were dropped once sent); the
/// others sleep until room reaches them or they reach the front, so a reply wakes a few
/// futures, not every held-back one.
#[derive(Default)]
struct Admission {
    /// The place the next request to wait takes (places only grow, so `waiting` is sorted).
    next_place: u64,
    waiting: VecDeque<(u64, Waker)>,
    /// The place of the last front that was polled as the front (and so waits on the socket).
    front_polled: u64,
}

impl Admission {
    /// Whether the request at `place` (`None`: not waiting) may go out, with room for `room`
    /// more in flight; if not, it waits at its place, to be woken by [`Admission::due`].
    fn enter(&mut self, place: &mut Option<u64>, room: usize, waker: &Waker) -> bool {
        let ahead = match *place {
            Some(place) => self.waiting.partition_point(|(p, _)| *p < place),
            None => self.waiting.len(),
        };
        if ahead < room {
            if let Some(place) = place.take() {
                self.leave(place);
            }
            return true;
        }
        match *place {
            Some(_) => {
                let (_, slot) = &mut self.waiting[ahead];
                if !slot.will_wake(waker) {
                    slot.clone_from(waker);
                }
            }
            None => {
                self.next_place += 1;
                *place = Some(self.next_place);
                self.waiting.push_back((self.next_place, waker.clone()));
            }
        }
        false
    }

    /// Whether the request at `place` is the front; if so, it is now known to have been
    /// polled as the front (see [`Admission::due`]).
    fn at_front(&mut self, place: u64) -> bool {
        let front = self.waiting.front().is_some_and(|(p, _)| *p == place);
        if front {
            self.front_polled = place;
        }
        front
    }

    /// The request at `place` stopped waiting (it went out, or was dropped).
    fn leave(&mut self, place: u64) {
        let index = self.waiting.partition_point(|(p, _)| *p < place);
        if self.waiting.get(index).is_some_and(|(p, _)| *p == place) {
            self.waiting.remove(index);
        }
    }

    /// The wakers of the waiting requests that may go out with room for `room` more, and of a
    /// front not yet polled as the front (so that it comes to wait on the socket). Neither
    /// wakes a request that will stay put: one woken by room goes out, and a front is woken
    /// once.
    fn due(&self, room: usize) -> Vec<Waker> {
        let new_front = self
            .waiting
            .front()
            .filter(|(p, _)| room == 0 && *p != self.front_polled);
        self.waiting
            .iter()
            .take(room)
            .chain(new_front)
            .map(|(_, waker)| waker.clone())
            .collect()
    }
}

/// Every future waiting on the connection; the socket's readiness wakes them all.
#[derive(Default)]
struct Waiters {
    wakers: Mutex<Vec<Waker>>,
}

impl Waiters {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many more requests may go out now (all of them once the connection is broken:
    /// they fail at once).
    fn room(&self, state: &State) -> usize {
        if state.conn.broken().is_some() {
            usize::MAX
        } else {
            self.max_in_flight.saturating_sub(state.conn.in_flight())
        }
    }

    /// Whether the request at `place` may go out now (see [`Admission::enter`]).
    fn admit(&self, state: &mut State, place: &mut Option<u64>, waker: &Waker) -> bool {
        let room = self.room(state);
        state.admission.enter(place, room, waker)
    }

    /// Unlocks the state, then wakes whoever may now move on: the held-back requests that fit
    /// in the room now free (every path that lowers the count in flight ends here), a new
    /// front of them (every path that removes the front ends here), and, when `progress` was
    /// made on the connection, every waiter on the socket.
    fn unlock(&self, state: MutexGuard<'_, State>, progress: bool) {
        let due = state.admission.due(self.room(&state));
        drop(state);
        for waker in due {
            waker.wake();
        }
        if progress {
            self.waiters.wake_all();
        }
    }

    /// Sends `op` for no one (an unwatch or abort from a `Drop`) at once, not with the next
    /// request that happens to drive the connection: an idle client would otherwise leave the
    /// daemon holding the watch or transaction. What cannot be written now goes out with the
    /// next drive.
    fn send_detached(&self, mut state: MutexGuard<'_, State>, op: Op<()>, tx_id: u32) {
        state.conn.submit_detached(op, tx_id);
        let progress = self.drive(&mut state);
        self.unlock(state, progress);
    }

    /// Writes what is queued and routes what has arrived; whether anything moved.
    fn drive(&self, state: &mut State) -> bool {
        const CHUNK: usize = 4096;
        let waker = Waker::from(Arc::clone(&self.waiters));
        let mut cx = Context::from_waker(&waker);
        let mut progress = false;
        let State { conn, io, .. } = state;
        while !conn.outgoing().is_empty() {
            match io.as_mut().poll_write(&mut cx, conn.outgoing()) {
                Poll::Ready(Ok(0)) => {
                    conn.closed();
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    conn.sent(n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    conn.break_with(e.into());
                    return true;
                }
                Poll::Pending => break,
            }
        }
        while conn.broken().is_none() {
            let mut buf = ReadBuf::new(conn.read_buffer(CHUNK));
            let polled = io.as_mut().poll_read(&mut cx, &mut buf);
            let n = buf.filled().len();
            match polled {
                Poll::Ready(Ok(())) if n > 0 => {
                    // A protocol violation breaks the connection; the requests learn it
                    // from their replies.
                    let _ = conn.received(CHUNK, n);
                    progress = true;
                }
                Poll::Ready(Ok(())) => {
                    let _ = conn.received(CHUNK, 0);
                    conn.closed();
                    return true;
                }
                Poll::Ready(Err(e)) => {
                    let _ = conn.received(CHUNK, 0);
                    conn.break_with(e.into());
                    return true;
                }
                Poll::Pending => {
                    let _ = conn.received(CHUNK, 0);
                    break;
                }
            }
        }
        progress
    }
}

impl AsyncClient {
    /// A client over any async byte stream (a `tokio::net::UnixStream`, a ring adapter, ...).
    pub fn new<T: AsyncRead + AsyncWrite + Send + 'static>(io: T) -> Self {
        Self::with_max_in_flight(io, MAX_IN_FLIGHT)
    }

    /// A client allowing at most `max_in_flight` requests in flight (at least 1).
    pub fn with_max_in_flight<T: AsyncRead + AsyncWrite + Send + 'static>(
        io: T,
        max_in_flight: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    conn: Connection::new(),
                    io: Box::pin(io),
                    admission: Admission::default(),
                }),
                waiters: Arc::default(),
                max_in_flight: max_in_flight.max(1),
            }),
        }
    }

    #[cfg(not(loom))]
    /// Connects to the daemon's socket (`XENSTORED_PATH` overrides it).
    ///
    /// # Errors
    ///
    /// The socket's connect error (`NotFound` when no daemon runs here, e.g. in a domU: use
    /// [`AsyncClient::xenbus`] there).
    pub async fn connect() -> io::Result<Self> {
        let path = crate::unix::socket_path();
        Ok(Self::new(tokio::net::UnixStream::connect(path).await?))
    }

    #[cfg(not(loom))]
    /// Opens `/dev/xen/xenbus`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled (see [`AsyncXenbus::open`]).
    ///
    /// # Errors
    ///
    /// The OS's error if the device cannot be opened (`ENOENT`: not on Xen or no xenbus driver;
    /// `EACCES`: not allowed).
    pub fn xenbus() -> io::Result<Self> {
        let client = Self::new(AsyncXenbus::open()?);
        client.set_payload_max(crate::unix::XENBUS_PAYLOAD_MAX);
        Ok(client)
    }

    /// Refuses payloads longer than `max` before sending them ([`Error::RequestTooLong`]):
    /// `/dev/xen/xenbus` carries at most [`XENBUS_PAYLOAD_MAX`](crate::unix::XENBUS_PAYLOAD_MAX).
    pub fn set_payload_max(&self, max: usize) {
        self.inner.lock().conn.set_payload_max(max);
    }

    /// Runs `op` in transaction `tx_id` (0 for none).
    pub fn run_in<R>(&self, op: Result<Op<R>, Error>, tx_id: u32) -> Request<R> {
        Request {
            inner: Arc::clone(&self.inner),
            op: Some(op),
            tx_id,
            place: None,
            ticket: None,
        }
    }

    /// Watches `path` (and below; or a special path such as `@releaseDomain`). The daemon
    /// fires the watch once right away.
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`E2BIG`: this domain has too many watches),
    /// [`Error::Path`] for a path xenstore would refuse, or a transport or protocol error
    /// ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    pub async fn watch(&self, path: &str) -> Result<Watch, Error> {
        crate::path::check_watch(path)?;
        let (id, token) = self.inner.lock().conn.add_watch(path);
        // From here a dropped future removes the watch again.
        let watch = Watch {
            inner: Arc::clone(&self.inner),
            id,
            ended: false,
        };
        self.run_in(op::watch(path, &token), 0).await?;
        Ok(watch)
    }

    /// Starts a transaction; it is aborted when dropped without [`AsyncTransaction::commit`].
    ///
    /// # Errors
    ///
    /// [`Error::Xen`] with the daemon's code (`ENOSPC`: too many open transactions), or a transport
    /// or protocol error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    pub async fn transaction(&self) -> Result<AsyncTransaction, Error> {
        let id = self.run_in(op::transaction_start(), 0).await?;
        Ok(AsyncTransaction {
            client: self.clone(),
            id,
            open: true,
        })
    }

    /// Runs `body` in a transaction and commits it, running it again from the start when the
    /// daemon reports a conflict (`EAGAIN`), up to [`crate::TRANSACTION_ATTEMPTS`] times.
    ///
    /// # Errors
    ///
    /// The first error of `body` (the transaction is aborted), those of
    /// [`transaction`](Self::transaction), and `EAGAIN` ([`crate::ErrorKind::Conflict`]) when
    /// every attempt met a conflict.
    pub async fn transact<R, F>(&self, mut body: F) -> Result<R, Error>
    where
        F: AsyncFnMut(&AsyncTransaction) -> Result<R, Error>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.transaction().await?;
            let result = match body(&tx).await {
                Ok(value) => tx.end(true).await.map(|()| value),
                Err(error) => Err(error),
            };
            if !run_again(&result, attempt) {
                return result;
            }
        }
    }
}

/// Every xenstore operation, on a connection ([`AsyncClient`]) or inside an
/// [`AsyncTransaction`]. Each returns a future; many may be in flight at once.
pub trait AsyncStore {
    /// Sends `op` (or reports why it could not be built) and waits for its reply.
    fn run<R>(&self, op: Result<Op<R>, Error>) -> Request<R>;

    /// The node's value.
    fn read(&self, path: &str) -> Request<Vec<u8>> {
        self.run(op::read(path))
    }

    /// The node's value as UTF-8 text.
    fn read_string(&self, path: &str) -> Request<String> {
        self.run(op::read_string(path))
    }

    /// Sets the node's value, creating it and missing parents.
    fn write(&self, path: &str, value: &[u8]) -> Request<()> {
        self.run(op::write(path, value))
    }

    /// Creates the node (and parents) if missing.
    fn mkdir(&self, path: &str) -> Request<()> {
        self.run(op::mkdir(path))
    }

    /// Removes the node and everything below it.
    fn rm(&self, path: &str) -> Request<()> {
        self.run(op::rm(path))
    }

    /// The node's permissions, owner first.
    fn get_perms(&self, path: &str) -> Request<Vec<Perm>> {
        self.run(op::get_perms(path))
    }

    /// Replaces the node's permissions (owner first).
    fn set_perms(&self, path: &str, perms: &[Perm]) -> Request<()> {
        self.run(op::set_perms(path, perms))
    }

    /// The home of a domain (`/local/domain/<domid>`).
    fn get_domain_path(&self, domid: DomId) -> Request<String> {
        self.run(op::get_domain_path(domid))
    }

    /// The names of the node's children, however many (`DIRECTORY`, then `DIRECTORY_PART`
    /// on `E2BIG`, restarted if the node changes meanwhile).
    fn directory(&self, path: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send
    where
        Self: Sync,
    {
        let path = String::from(path);
        async move {
            match self.run(op::directory(&path)).await {
                Err(Error::Xen(Errno::E2BIG)) => {}
                other => return other,
            }
            let mut listing = op::DirectoryParts::new(&path);
            loop {
                let part = self.run(listing.next()).await?;
                if let Some(names) = listing.add(part)? {
                    return Ok(names);
                }
            }
        }
    }
}

impl AsyncStore for AsyncClient {
    fn run<R>(&self, op: Result<Op<R>, Error>) -> Request<R> {
        self.run_in(op, 0)
    }
}

/// A request in flight; resolves to its parsed reply.
#[must_use = "futures do nothing unless polled"]
pub struct Request<R> {
    inner: Arc<Inner>,
    op: Option<Result<Op<R>, Error>>,
    tx_id: u32,
    /// Its place among the requests held back by the bound on requests in flight.
    place: Option<u64>,
    ticket: Option<Ticket<R>>,
}

impl<R> std::fmt::Debug for Request<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("tx_id", &self.tx_id)
            .field("sent", &self.ticket.is_some())
            .finish_non_exhaustive()
    }
}

impl<R> Unpin for Request<R> {}

impl<R> Future for Request<R> {
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = Arc::clone(&this.inner);
        let mut state = inner.lock();
        let mut progress = false;
        if this.ticket.is_none() {
            let Some(op) = this.op.take() else {
                return Poll::Ready(Err(Error::InvalidInput("polled after completion")));
            };
            let op = match op {
                Ok(op) => op,
                Err(error) => return Poll::Ready(Err(error)),
            };
            // No room: route what has arrived (replies taken free room), then look again.
            if !inner.admit(&mut state, &mut this.place, cx.waker()) {
                // The front waits on the socket too (see `Admission`): registered before the
                // drive, as the socket's readiness wakes the waiters without this lock.
                if this
                    .place
                    .is_some_and(|place| state.admission.at_front(place))
                {
                    inner.waiters.register(cx.waker());
                }
                progress = inner.drive(&mut state);
                if !inner.admit(&mut state, &mut this.place, cx.waker()) {
                    this.op = Some(Ok(op));
                    inner.unlock(state, progress);
                    return Poll::Pending;
                }
            }
            let submitted = state.conn.submit(op, this.tx_id);
            match submitted {
                Ok(ticket) => this.ticket = Some(ticket),
                Err(error) => {
                    inner.unlock(state, progress);
                    return Poll::Ready(Err(error));
                }
            }
        }
        inner.waiters.register(cx.waker());
        progress |= inner.drive(&mut state);
        let ticket = this.ticket.as_ref().expect("submitted above");
        let reply = state.conn.take_reply(ticket);
        inner.unlock(state, progress);
        match reply {
            Some(reply) => {
                this.ticket = None;
                Poll::Ready(reply)
            }
            None => Poll::Pending,
        }
    }
}

impl<R> Drop for Request<R> {
    fn drop(&mut self) {
        if self.place.is_none() && self.ticket.is_none() {
            return;
        }
        let mut state = self.inner.lock();
        if let Some(place) = self.place.take() {
            state.admission.leave(place);
        }
        if let Some(ticket) = self.ticket.take() {
            state.conn.abandon(&ticket);
        }
        self.inner.unlock(state, false);
    }
}

/// A watch's events, as a [`Stream`]. Dropping it removes the watch.
///
/// The stream ends (after yielding the error) when the connection breaks.
pub struct Watch {
    inner: Arc<Inner>,
    id: WatchId,
    ended: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// This watch's id (as in [`WatchEvent::watch`]).
    pub fn id(&self) -> WatchId {
        self.id
    }
}

impl Stream for Watch {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let inner = Arc::clone(&this.inner);
        let mut state = inner.lock();
        inner.waiters.register(cx.waker());
        let progress = inner.drive(&mut state);
        let item = match state.conn.next_event_of(this.id) {
            Some(event) => Some(Ok(event)),
            None => state.conn.broken().map(|error| {
                this.ended = true;
                Err(error)
            }),
        };
        inner.unlock(state, progress);
        match item {
            Some(item) => Poll::Ready(Some(item)),
            None => Poll::Pending,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if let Some((path, token)) = state.conn.remove_watch(self.id) {
            if let Ok(unwatch) = op::unwatch(&path, &token) {
                self.inner.send_detached(state, unwatch, 0);
            }
        }
    }
}

/// A transaction. Dropped without [`AsyncTransaction::commit`] it is aborted.
#[derive(Debug)]
pub struct AsyncTransaction {
    client: AsyncClient,
    id: u32,
    open: bool,
}

impl AsyncTransaction {
    /// The daemon's id for this transaction.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Applies the transaction; `EAGAIN` ([`crate::ErrorKind::Conflict`]) means another writer
    /// got in first and nothing was applied.
    ///
    /// # Errors
    ///
    /// `EAGAIN` as above, the daemon's other refusals ([`Error::Xen`]), or a transport or protocol
    /// error ([`Error::Closed`], [`Error::Broken`], [`Error::Protocol`], ...).
    pub async fn commit(mut self) -> Result<(), Error> {
        self.end(true).await
    }

    /// Discards the transaction.
    ///
    /// # Errors
    ///
    /// The daemon's refusal ([`Error::Xen`]), or a transport or protocol error ([`Error::Closed`],
    /// [`Error::Broken`], [`Error::Protocol`], ...).
    pub async fn abort(mut self) -> Result<(), Error> {
        self.end(false).await
    }

    async fn end(&mut self, commit: bool) -> Result<(), Error> {
        let result = self
            .client
            .run_in(op::transaction_end(commit), self.id)
            .await;
        // Only now: a future dropped before its request went out leaves the abort to `Drop`.
        self.open = false;
        result
    }
}

impl AsyncStore for AsyncTransaction {
    fn run<R>(&self, op: Result<Op<R>, Error>) -> Request<R> {
        let op = if self.open {
            op
        } else {
            Err(Error::InvalidInput("the transaction has ended"))
        };
        self.client.run_in(op, self.id)
    }
}

impl Drop for AsyncTransaction {
    fn drop(&mut self) {
        if self.open {
            if let Ok(abort) = op::transaction_end(false) {
                let inner = &self.client.inner;
                inner.send_detached(inner.lock(), abort, self.id);
            }
        }
    }
}

// tokio leaves out its I/O driver under the loom models.
#[cfg(not(loom))]
/// `/dev/xen/xenbus` for tokio: reads wait for readiness (the device polls readable when a
/// reply or event is queued); writes never block for long (the kernel buffers them), so they
/// are issued directly, one message each; a request the kernel refuses is answered with an
/// `ERROR` reply (see [`Xenbus`](crate::unix::Xenbus)).
#[derive(Debug)]
pub struct AsyncXenbus {
    fd: tokio::io::unix::AsyncFd<std::fs::File>,
    refused: crate::unix::Refused,
}

// tokio leaves out its I/O driver under the loom models.
#[cfg(not(loom))]
impl AsyncXenbus {
    /// Opens the device, non-blocking, and registers it with the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with I/O enabled, as `tokio::io::unix::AsyncFd` does.
    ///
    /// # Errors
    ///
    /// The OS's error if the device cannot be opened (`ENOENT`: not on Xen or no xenbus driver;
    /// `EACCES`: not allowed) or registered with the runtime.
    pub fn open() -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(crate::unix::XENBUS_PATH)?;
        let interest = tokio::io::Interest::READABLE;
        #[allow(unsafe_code)]
        // SAFETY: `file` is an open descriptor, moved into the `AsyncFd`, which owns it until
        // it is dropped; `File::as_raw_fd` always returns that same descriptor.
        let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, interest) }
            .map_err(io::Error::from)?;
        Ok(Self {
            fd,
            refused: crate::unix::Refused::default(),
        })
    }
}

// tokio leaves out its I/O driver under the loom models.
#[cfg(not(loom))]
impl AsyncRead for AsyncXenbus {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use std::io::Read;
        let this = self.get_mut();
        if let Some(n) = this.refused.read(buf.initialize_unfilled()) {
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut guard = match this.fd.poll_read_ready(cx) {
                Poll::Ready(guard) => guard?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

// tokio leaves out its I/O driver under the loom models.
#[cfg(not(loom))]
impl AsyncWrite for AsyncXenbus {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use std::io::Write;
        let this = self.get_mut();
        let mut file: &std::fs::File = this.fd.get_ref();
        let message = crate::unix::first_message(buf);
        let written = loop {
            match file.write(message) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break this.refused.refuse(message, e),
                written => break written,
            }
        };
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
