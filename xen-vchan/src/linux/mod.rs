//! The Linux side: a server that grants its pages with `/dev/xen/gntalloc` and a client that
//! maps them with `/dev/xen/gntdev`, each with its own event-channel fd and xenstore for the
//! rendezvous, as libxenvchan's `libxenvchan_server_init` and `libxenvchan_client_init` do.
//!
//! The server allocates an unbound port for the client's domain, shares the page (Linux clears
//! `srv_live` and signals the port if the process dies), lays it out, shares the rings' own
//! pages, and writes `<path>/ring-ref` and `<path>/event-channel` in one transaction, readable
//! by the client's domain alone (owner: the server's domain, others: nothing). It removes
//! `<path>` when it closes. The client reads both keys, binds the port, maps the page (Linux
//! clears `cli_live` and signals if it dies), reads the orders and grants once, maps the rings,
//! marks itself live and signals.
//!
//! Blocking reads and writes wait in a blocking `read(2)` of the channel's event-channel fd:
//! give each channel an event channel of its own (an [`EvtchnDevice`] per channel), or a waiter
//! may take another channel's event. With feature `tokio-1`, a channel over a
//! [`TokioEventChannel`](xen_evtchn::tokio::TokioEventChannel) is `AsyncRead + AsyncWrite`.

#[cfg(feature = "tokio-1")]
mod tokio;

use core::num::NonZeroU32;
use std::boxed::Box;
use std::format;
use std::io;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use xen_evtchn::EventChannel;
pub use xen_evtchn::linux::EvtchnDevice;
use xen_grant::GrantRef;
use xen_grant::linux::{Mapping, Share, UnmapNotify};
pub use xen_hypercall::DomId;
use xen_hypercall::Port;
use xen_shared::SharedMem;
use xen_store::{Access, Perm, Store};

pub use xen_grant::linux::{Gntalloc, Gntdev};
/// A blocking xenstore connection to the local daemon (`StoreClient::open()`).
pub type StoreClient = xen_store::Client<xen_store::unix::Local>;

use crate::layout::{CLI_LIVE, SRV_LIVE};
use crate::{Endpoint, Orders, PeerState, RingPages, Shared, Step};

/// A failed vchan operation on Linux.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The protocol: a corrupt peer, a packet that cannot fit, orders not allowed.
    #[error(transparent)]
    Vchan(#[from] crate::Error),
    /// Sharing or mapping pages.
    #[error("grant: {0}")]
    Grant(#[from] xen_grant::Error),
    /// The event channel.
    #[error("event channel: {0}")]
    Evtchn(#[from] xen_evtchn::Error),
    /// Xenstore.
    #[error("xenstore: {0}")]
    Store(#[from] xen_store::Error),
    /// A xenstore key does not hold the number it should: a non-zero one for the channel's
    /// keys, a domain id for `domid`.
    #[error("xenstore key {path} holds {value:?}, not the number it should")]
    BadKey {
        /// The key.
        path: String,
        /// What it holds.
        value: String,
    },
    /// The peer closed the channel (a write, or a packet read that cannot complete).
    #[error("the peer closed the channel")]
    Closed,
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Vchan(crate::Error::Corrupt(_)) => io::ErrorKind::InvalidData,
            Error::Vchan(_) => io::ErrorKind::InvalidInput,
            Error::Closed => io::ErrorKind::BrokenPipe,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The conventional place of a channel's keys (Qubes', and libxenvchan's tools'):
/// `<server's home>/data/vchan/<client>/<port>`, a directory the server's domain may write.
pub fn conventional_path(server_home: &str, client: DomId, port: u32) -> String {
    format!("{server_home}/data/vchan/{}/{port}", client.0)
}

/// Removes the server's xenstore directory, when it closes.
type Cleanup<'d> = Box<dyn FnMut() -> Result<(), xen_store::Error> + Send + 'd>;

/// The pages of a channel: the shared page, and the pages of each ring of order 12 or more.
#[derive(Debug)]
enum Pages<'d> {
    Server {
        page: Share<'d>,
        left: Option<Share<'d>>,
        right: Option<Share<'d>>,
    },
    Client {
        page: Mapping<'d>,
        left: Option<Mapping<'d>>,
        right: Option<Mapping<'d>>,
    },
    /// Unshared or unmapped (the channel is being dropped).
    Gone,
}

/// A writable mapping's view (the page and the client's write ring are mapped writable).
fn mapped<'a>(mapping: &'a Mapping<'_>) -> SharedMem<'a> {
    mapping.mem().unwrap_or(SharedMem::from_words(&[]))
}

/// A ring's writable view, or an empty one for a ring in the page.
fn writable(mem: Option<SharedMem<'_>>) -> RingPages<'_> {
    mem.unwrap_or(SharedMem::from_words(&[])).into()
}

impl Pages<'_> {
    fn shared(&self) -> Shared<'_> {
        let empty = SharedMem::from_words(&[]);
        match self {
            Self::Server { page, left, right } => Shared {
                page: page.mem(),
                left: writable(left.as_ref().map(Share::mem)),
                right: writable(right.as_ref().map(Share::mem)),
            },
            Self::Client { page, left, right } => Shared {
                page: mapped(page),
                left: writable(left.as_ref().map(mapped)),
                right: right
                    .as_ref()
                    .map_or(RingPages::from(empty), |m| m.read_only().into()),
            },
            Self::Gone => Shared::in_page(empty),
        }
    }
}

/// One end of a vchan on Linux, over the event channel `E`: blocking `std::io::Read` and
/// `Write`, and with `tokio-1` over a `TokioEventChannel`, `AsyncRead` and `AsyncWrite`.
///
/// Dropping it closes the channel as [`close`](Self::close) does, ignoring errors (the server's
/// xenstore removal blocks), unshares or unmaps the pages, and unbinds the port: the event
/// channel `E` may outlive the channel, so its own drop is not relied on.
pub struct Vchan<'d, E: EventChannel> {
    endpoint: Endpoint,
    /// Declared before `evtchn`: when the pages go, Linux signals the port (unmap notify),
    /// which must still be bound.
    pages: Pages<'d>,
    cleanup: Option<Cleanup<'d>>,
    port: Port,
    evtchn: E,
    closed: bool,
    #[cfg(feature = "tokio-1")]
    wakers: std::sync::Arc<tokio::Wakers>,
}

impl<E: EventChannel> core::fmt::Debug for Vchan<'_, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vchan")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Reads the number in xenstore key `path`; what does not parse as an `N` is
/// [`Error::BadKey`].
fn read_number<N: core::str::FromStr>(store: &mut impl Store, path: String) -> Result<N, Error> {
    let value = store.read_string(&path)?;
    value
        .trim()
        .parse()
        .map_err(|_| Error::BadKey { path, value })
}

impl<'d, E: EventChannel> Vchan<'d, E> {
    /// Offers a channel to domain `client` under xenstore directory `path` (see
    /// [`conventional_path`]), with rings of at least `read_min` bytes (client to server) and
    /// `write_min` bytes (server to client), at most 1 MiB each: libxenvchan's
    /// `libxenvchan_server_init`.
    ///
    /// `store` is kept to remove `path` when the channel closes. The client may connect at any
    /// time; reads wait for it, writes fill the ring meanwhile ([`peer_state`](Self::peer_state)
    /// says [`PeerState::Waiting`] until it comes).
    ///
    /// # Errors
    ///
    /// [`Error::Vchan`] if a size is more than 1 MiB, [`Error::Evtchn`] if no port can be
    /// allocated, [`Error::Grant`] if the pages cannot be allocated or shared,
    /// [`Error::Store`] if publishing the keys fails (e.g. `EACCES` when this domain may not write
    /// `path`).
    pub fn server<T>(
        gntalloc: &'d Gntalloc,
        evtchn: E,
        mut store: xen_store::Client<T>,
        client: DomId,
        path: &str,
        read_min: usize,
        write_min: usize,
    ) -> Result<Self, Error>
    where
        T: embedded_io::Read + embedded_io::Write + Send + 'd,
        T::Error: 'static,
    {
        let orders = Orders::for_sizes(read_min, write_min)?;
        let port = evtchn.alloc_unbound_raw(client)?;
        let shared = Self::share(gntalloc, &evtchn, port, client, orders).and_then(
            |(pages, endpoint, ring_ref)| {
                Self::publish(&mut store, client, path, ring_ref, port)?;
                Ok((pages, endpoint))
            },
        );
        let (pages, endpoint) = match shared {
            Ok(done) => done,
            Err(e) => {
                let _ = evtchn.unbind_raw(port);
                return Err(e);
            }
        };
        let path = path.to_string();
        let cleanup: Cleanup<'d> = Box::new(move || store.rm(&path));
        Ok(Self::new(endpoint, pages, Some(cleanup), port, evtchn))
    }

    /// Shares the page and the rings' pages with `client` and lays the page out.
    fn share(
        gntalloc: &'d Gntalloc,
        evtchn: &E,
        port: Port,
        client: DomId,
        orders: Orders,
    ) -> Result<(Pages<'d>, Endpoint, GrantRef), Error> {
        evtchn.unmask(port)?;
        let page = gntalloc.share(client, 1, false)?;
        let ring_ref = page.grefs()[0];
        page.notify_on_unmap(UnmapNotify {
            clear_byte: Some(SRV_LIVE),
            event: Some(port),
        })?;
        let ring = |order: crate::Order| match order.pages() {
            0 => Ok(None),
            n => gntalloc.share(client, n, false).map(Some),
        };
        let left = ring(orders.left)?;
        let right = ring(orders.right)?;
        let refs = |share: &Option<Share<'_>>| -> Vec<u32> {
            share
                .as_ref()
                .map_or(Vec::new(), |s| s.grefs().iter().map(|g| g.0).collect())
        };
        let endpoint = Endpoint::init_server(page.mem(), orders, &refs(&left), &refs(&right))?;
        Ok((Pages::Server { page, left, right }, endpoint, ring_ref))
    }

    /// Writes `ring-ref` and `event-channel` under `path`, readable by `client` only.
    fn publish<T>(
        store: &mut xen_store::Client<T>,
        client: DomId,
        path: &str,
        ring_ref: GrantRef,
        port: Port,
    ) -> Result<(), Error>
    where
        T: embedded_io::Read + embedded_io::Write,
        T::Error: 'static,
    {
        let own = DomId(read_number(store, "domid".to_string())?);
        let perms = [
            Perm::new(own, Access::None),
            Perm::new(client, Access::Read),
        ];
        let ring_ref_path = format!("{path}/ring-ref");
        let port_path = format!("{path}/event-channel");
        store.transact(|tx| {
            tx.write(&ring_ref_path, ring_ref.0.to_string().as_bytes())?;
            tx.set_perms(&ring_ref_path, &perms)?;
            tx.write(&port_path, port.0.to_string().as_bytes())?;
            tx.set_perms(&port_path, &perms)
        })?;
        Ok(())
    }

    /// Connects to the channel domain `server` offers under xenstore directory `path`:
    /// libxenvchan's `libxenvchan_client_init`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if a key cannot be read, [`Error::BadKey`] if it holds no non-zero
    /// number, [`Error::Evtchn`] if the port cannot be bound, [`Error::Grant`] if a page cannot be
    /// mapped, [`Error::Vchan`] if the server wrote orders vchan does not allow.
    pub fn client(
        gntdev: &'d Gntdev,
        evtchn: E,
        store: &mut impl Store,
        server: DomId,
        path: &str,
    ) -> Result<Self, Error> {
        let non_zero = |store: &mut _, key| {
            read_number::<NonZeroU32>(store, format!("{path}/{key}")).map(NonZeroU32::get)
        };
        let ring_ref = GrantRef(non_zero(store, "ring-ref")?);
        let remote_port = Port(non_zero(store, "event-channel")?);
        let port = evtchn.bind_interdomain_raw(server, remote_port)?;
        let mapped = Self::map(gntdev, &evtchn, port, server, ring_ref).and_then(|connected| {
            // The server may be waiting for this client.
            evtchn.notify(port)?;
            Ok(connected)
        });
        match mapped {
            Ok((pages, endpoint)) => Ok(Self::new(endpoint, pages, None, port, evtchn)),
            Err(e) => {
                let _ = evtchn.unbind_raw(port);
                Err(e)
            }
        }
    }

    /// Maps the page, reads its orders and grants once, maps the rings, connects.
    fn map(
        gntdev: &'d Gntdev,
        evtchn: &E,
        port: Port,
        server: DomId,
        ring_ref: GrantRef,
    ) -> Result<(Pages<'d>, Endpoint), Error> {
        evtchn.unmask(port)?;
        let page = gntdev.map(server, &[ring_ref], false)?;
        page.notify_on_unmap(UnmapNotify {
            clear_byte: Some(CLI_LIVE),
            event: Some(port),
        })?;
        let orders = Endpoint::peer_orders(mapped(&page))?;
        let mut grants = vec![0u32; orders.grant_count()];
        Endpoint::peer_grants(mapped(&page), orders, &mut grants)?;
        let (left_grants, right_grants) = grants.split_at(orders.left.pages());
        let ring = |grants: &[u32], readonly| -> Result<Option<Mapping<'d>>, Error> {
            if grants.is_empty() {
                return Ok(None);
            }
            let refs: Vec<GrantRef> = grants.iter().map(|&g| GrantRef(g)).collect();
            Ok(Some(gntdev.map(server, &refs, readonly)?))
        };
        // The ring this end writes, writable; the one it reads, read-only, as libxenvchan's
        // client maps them (gntdev maps a grant read-only when its first mmap is not
        // PROT_WRITE: Xen then refuses any writable mapping of those pages by this process).
        let left = ring(left_grants, false)?;
        let right = ring(right_grants, true)?;
        let endpoint = Endpoint::connect_client(mapped(&page), orders)?;
        Ok((Pages::Client { page, left, right }, endpoint))
    }

    fn new(
        endpoint: Endpoint,
        pages: Pages<'d>,
        cleanup: Option<Cleanup<'d>>,
        port: Port,
        evtchn: E,
    ) -> Self {
        Self {
            endpoint,
            pages,
            cleanup,
            port,
            evtchn,
            closed: false,
            #[cfg(feature = "tokio-1")]
            wakers: std::sync::Arc::default(),
        }
    }

    /// The local event-channel port.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The event channel (for its fd, to wait on several channels).
    pub fn event_channel(&self) -> &E {
        &self.evtchn
    }

    /// The rings' orders.
    pub fn orders(&self) -> Orders {
        self.endpoint.orders()
    }

    /// What the peer's liveness byte says.
    ///
    /// # Errors
    ///
    /// [`Error::Vchan`] if the peer corrupted the channel.
    pub fn peer_state(&mut self) -> Result<PeerState, Error> {
        Ok(self.endpoint.peer_state(&self.pages.shared())?)
    }

    /// Bytes ready to read now.
    ///
    /// # Errors
    ///
    /// [`Error::Vchan`] if the peer corrupted the channel.
    pub fn data_ready(&mut self) -> Result<usize, Error> {
        Ok(self.endpoint.data_ready(&self.pages.shared())?)
    }

    /// Room to write now.
    ///
    /// # Errors
    ///
    /// [`Error::Vchan`] if the peer corrupted the channel.
    pub fn buffer_space(&mut self) -> Result<usize, Error> {
        Ok(self.endpoint.buffer_space(&self.pages.shared())?)
    }

    /// Runs one step of the endpoint and signals the peer if it asked.
    fn step(
        &mut self,
        op: impl FnOnce(&mut Endpoint, &Shared<'_>) -> Result<Step, crate::Error>,
    ) -> Result<Step, Error> {
        if self.closed {
            return Ok(Step::Closed);
        }
        let step = op(&mut self.endpoint, &self.pages.shared())?;
        if let Step::Moved { notify: true, .. } = step {
            self.evtchn.notify(self.port)?;
        }
        Ok(step)
    }

    /// Reads what is ready without waiting: `Ok(None)` if nothing is (the peer is asked to
    /// signal its next write), `Ok(Some(0))` at the end of the stream.
    ///
    /// # Errors
    ///
    /// [`Error::Vchan`] if the peer corrupted the channel, [`Error::Evtchn`] if signalling it
    /// fails.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        Ok(match self.step(|ep, mem| ep.read(mem, buf))? {
            Step::Moved { bytes, .. } => Some(bytes),
            Step::Closed => Some(0),
            Step::WouldBlock => None,
        })
    }

    /// Closes the channel: marks this end closed, signals the peer, and (the server) removes
    /// its xenstore directory. The pages and the port go when the value is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Evtchn`] if signalling the peer fails, [`Error::Store`] if the server's directory
    /// cannot be removed.
    pub fn close(mut self) -> Result<(), Error> {
        self.shut()
    }

    fn shut(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let marked = self.endpoint.close(&self.pages.shared());
        let signalled = self.evtchn.notify(self.port);
        let removed = self.cleanup.as_mut().map_or(Ok(()), |rm| rm());
        marked?;
        signalled?;
        removed?;
        Ok(())
    }
}

/// An event channel a [`Vchan`] can block on: one fd per channel, whose only port is the
/// channel's.
pub trait Sleep: EventChannel {
    /// Blocks until `port` may have fired, then re-arms it; may return without an event (the
    /// caller looks at the rings again either way).
    fn sleep(&self, port: Port) -> Result<(), xen_evtchn::Error> {
        let mut ports = [port];
        if self.wait_pending(&mut ports)? > 0 {
            self.unmask(ports[0])?;
        }
        Ok(())
    }
}

/// Two system calls per sleep, as libxenvchan's: one blocking read of the fd (made blocking the
/// first time: the device is the channel's alone), then the unmask of the port it returns. The
/// driver masks a port when it queues it, so every port read needs that unmask; the peer's
/// signal wakes the read (`evtchn_interrupt` wakes the reader when it queues into an empty
/// ring), and one queued before the read is found by it, so none is missed.
impl Sleep for EvtchnDevice {
    fn sleep(&self, port: Port) -> Result<(), xen_evtchn::Error> {
        self.set_blocking()?;
        let mut ports = [port];
        if self.wait_pending(&mut ports)? > 0 {
            self.unmask(ports[0])?;
        }
        Ok(())
    }
}

#[cfg(feature = "tokio-1")]
impl Sleep for xen_evtchn::tokio::TokioEventChannel {}

impl<E: Sleep> Vchan<'_, E> {
    /// Runs `op` until it moves bytes or the peer is gone, waiting for events in between.
    fn blocking(
        &mut self,
        mut op: impl FnMut(&mut Endpoint, &Shared<'_>) -> Result<Step, crate::Error>,
    ) -> Result<Option<usize>, Error> {
        loop {
            match self.step(&mut op)? {
                Step::Moved { bytes, .. } => return Ok(Some(bytes)),
                Step::Closed => return Ok(None),
                Step::WouldBlock => self.evtchn.sleep(self.port)?,
            }
        }
    }

    /// Reads at least one byte (up to `buf.len()`), waiting for them; 0 once the peer closed
    /// and every byte it wrote was read.
    ///
    /// # Errors
    ///
    /// [`Error::Vchan`] if the peer corrupted the channel, [`Error::Evtchn`] if waiting or
    /// signalling fails.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        Ok(self.blocking(|ep, mem| ep.read(mem, buf))?.unwrap_or(0))
    }

    /// Writes at least one byte of `buf` (as many as fit), waiting for room.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the peer closed, and those of [`read`](Self::read).
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Error> {
        self.blocking(|ep, mem| ep.write(mem, buf))?
            .ok_or(Error::Closed)
    }

    /// Reads exactly `buf.len()` bytes, waiting until they are all there (a packet).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the peer closed before the packet was whole, [`Error::Vchan`]
    /// ([`crate::Error::PacketTooLarge`]) for a packet larger than the ring, and those of
    /// [`read`](Self::read).
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.blocking(|ep, mem| ep.recv(mem, buf))?
            .map(drop)
            .ok_or(Error::Closed)
    }

    /// Writes all of `buf` at once, waiting until there is room for it (a packet).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the peer closed, [`Error::Vchan`] ([`crate::Error::PacketTooLarge`])
    /// for a packet larger than the ring, and those of [`read`](Self::read).
    pub fn send(&mut self, buf: &[u8]) -> Result<(), Error> {
        self.blocking(|ep, mem| ep.send(mem, buf))?
            .map(drop)
            .ok_or(Error::Closed)
    }
}

impl<E: EventChannel> Drop for Vchan<'_, E> {
    fn drop(&mut self) {
        let _ = self.shut();
        // The pages first: when they go, Linux signals the port (the unmap notify, which holds
        // its own reference to the port, so the unbind below cannot close it before).
        drop(core::mem::replace(&mut self.pages, Pages::Gone));
        let _ = self.evtchn.unbind_raw(self.port);
    }
}

impl<E: Sleep> io::Read for Vchan<'_, E> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(Vchan::read(self, buf)?)
    }
}

impl<E: Sleep> io::Write for Vchan<'_, E> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(Vchan::write(self, buf)?)
    }

    /// Written bytes are in the ring already: nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
