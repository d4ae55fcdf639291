//! The domU's xenstore connection: the project's `xen-store` client over this domain's ring
//! (`xen-shared`'s byte ring), the event channel as its doorbell; the client's buffers come from
//! the domU's heap (`heap`).

use core::ptr::NonNull;

use xen_hypercall::prelude::SchedOps;
use xen_hypercall::sched::Deadline;
use xen_hypercall::{Error, Port, XenHypercall};
use xen_shared::SharedMem;
use xen_store::ring::{Doorbell, RingTransport};
use xen_store::{Client, Store};

use super::{DomuError, Events, RingPage};

/// How long a request waits for xenstored.
const WAIT_NS: u64 = 5_000_000_000;

/// The size of the xenstore page.
const PAGE_SIZE: usize = 4096;

/// The store's event channel: notify sends on it, wait sleeps in `SCHEDOP_poll` until an
/// event or the deadline of the current request.
#[derive(Debug)]
pub(crate) struct Bell<H> {
    events: Events<H>,
    port: Port,
    deadline: u64,
    /// A port whose every event is answered at once while waiting (the lifecycle run's
    /// ping-pong with dom0, which runs while the domU waits for xenstore).
    echo: Option<Port>,
}

impl<H: XenHypercall<Error = Error> + Copy> Doorbell for Bell<H> {
    fn notify(&mut self) {
        // A failed send shows as a timeout of the wait that follows.
        let _ = self.events.notify(self.port);
    }

    fn wait(&mut self) -> Result<(), embedded_io::ErrorKind> {
        // An event since the ring was last looked at is still pending: taking it returns at
        // once, so none is lost. The same holds for the echoed port: its pending bit is taken
        // before each answer, and `SCHEDOP_poll` returns at once while either is pending.
        let timed_out = |_| embedded_io::ErrorKind::TimedOut;
        let Some(echo) = self.echo else {
            return self
                .events
                .take_event(self.port, self.deadline, "xenstored")
                .map_err(timed_out);
        };
        loop {
            if self.events.shared.take_pending(echo) {
                // A failed answer shows as dom0's timeout.
                let _ = self.events.notify(echo);
            }
            if self.events.shared.take_pending(self.port) {
                return Ok(());
            }
            if self.events.now() >= self.deadline {
                return Err(embedded_io::ErrorKind::TimedOut);
            }
            self.events
                .h
                .poll(
                    &[self.port, echo],
                    Some(Deadline::from_nanos(self.deadline)),
                )
                .map_err(|_| embedded_io::ErrorKind::Other)?;
        }
    }
}

/// The byte stream over the domain's xenstore ring.
pub(crate) type Ring<H> = RingTransport<SharedMem<'static>, Bell<H>>;

/// A xenstore connection over the domain's ring.
pub(crate) struct XenStore<H: XenHypercall<Error = Error> + Copy> {
    client: Client<Ring<H>>,
}

impl<H: XenHypercall<Error = Error> + Copy> core::fmt::Debug for XenStore<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenStore").finish_non_exhaustive()
    }
}

impl<H: XenHypercall<Error = Error> + Copy> XenStore<H> {
    /// Connects over `store`, continuing after what is already in its rings.
    ///
    /// # Safety
    ///
    /// `store.page` is this domain's xenstore page, mapped for reads and writes
    /// for the rest of the program, and used by Rust only through this value.
    pub(crate) unsafe fn new(events: Events<H>, store: RingPage) -> Result<Self, DomuError> {
        // SAFETY: the caller's contract.
        let transport = unsafe { transport(events, store, 0) }?;
        Ok(Self {
            client: Client::new(transport),
        })
    }

    /// Carries the connection over to `store`, the ring and port the restore gave the new
    /// domain: xen-store's `Client::resume` sets every watch again.
    ///
    /// # Safety
    ///
    /// As for [`XenStore::new`].
    pub(crate) unsafe fn resume(
        &mut self,
        events: Events<H>,
        store: RingPage,
    ) -> Result<(), DomuError> {
        // SAFETY: the caller's contract.
        let transport = unsafe { transport(events, store, events.deadline(WAIT_NS)) }?;
        self.client.resume(transport).map_err(to_domu)
    }

    /// Answers every event on `port` at once while waiting for xenstored (`None`: stop).
    pub(crate) fn echo(&mut self, port: Option<Port>) {
        self.client.get_mut().doorbell().echo = port;
    }

    fn start(&mut self) {
        self.start_with(WAIT_NS);
    }

    /// Sets the deadline of the requests and waits that follow to `ns` from now.
    fn start_with(&mut self, ns: u64) {
        let bell = self.client.get_mut().doorbell();
        bell.deadline = bell.events.deadline(ns);
    }

    /// The client itself, for typed errors and watches; its requests and waits (for replies
    /// and watch events) give up `ns` from now.
    pub(crate) fn client(&mut self, ns: u64) -> &mut Client<Ring<H>> {
        self.start_with(ns);
        &mut self.client
    }

    /// `XS_READ` of `path` (relative paths are under the domain's home) into
    /// `out`; returns the value (without a NUL, as xenstored sends it).
    pub(crate) fn read<'b>(
        &mut self,
        path: &str,
        out: &'b mut [u8],
    ) -> Result<&'b [u8], DomuError> {
        self.start();
        let value = self.client.read(path).map_err(to_domu)?;
        let out = out.get_mut(..value.len()).ok_or(DomuError::TooLong)?;
        out.copy_from_slice(&value);
        Ok(out)
    }

    /// `XS_WRITE` of `value` at `path`.
    pub(crate) fn write(&mut self, path: &str, value: &[u8]) -> Result<(), DomuError> {
        self.start();
        self.client.write(path, value).map_err(to_domu)
    }
}

/// The ring transport over `store`, its waits giving up at `deadline`.
///
/// # Safety
///
/// As for [`XenStore::new`].
unsafe fn transport<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    store: RingPage,
    deadline: u64,
) -> Result<Ring<H>, DomuError> {
    let page = NonNull::new(store.page).ok_or(DomuError::Unexpected("no xenstore page"))?;
    // SAFETY: the page is mapped for the program's life and only accessed through this
    // view (caller); xenstored's side is another domain's; 4096 <= isize::MAX.
    let mem = unsafe { SharedMem::from_raw_parts(page, PAGE_SIZE) };
    let bell = Bell {
        events,
        port: store.port,
        deadline,
        echo: None,
    };
    RingTransport::new(mem, bell).map_err(|_| DomuError::Unexpected("ring layout"))
}

fn to_domu(error: xen_store::Error) -> DomuError {
    match error {
        xen_store::Error::Xen(errno) => {
            DomuError::xenstore(errno.name().unwrap_or("E?").as_bytes())
        }
        xen_store::Error::Transport(_) => DomuError::TimedOut("xenstored"),
        xen_store::Error::Protocol(_) => DomuError::BadRing,
        xen_store::Error::RequestTooLong { .. } => DomuError::TooLong,
        _ => DomuError::Unexpected("xenstore request refused"),
    }
}
