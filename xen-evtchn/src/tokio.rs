//! The tokio integration: one `/dev/xen/evtchn` fd in one [`AsyncFd`],
//! demultiplexed to per-port wakers, without a thread.

use std::boxed::Box;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use xen_hypercall::{DomId, Errno, Port, Virq};

use crate::demux::{Core, Readiness};
use crate::linux::EvtchnDevice;
use crate::{AsyncEventChannel, Error, EventChannel, WaiterTicket};

/// A readiness wait on the fd, for readable or error (the driver reports an
/// overflow as `POLLERR` alone).
type ReadinessWait = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Event channels through `/dev/xen/evtchn`, awaitable on tokio: the RFC's
/// `TokioEventChannel`.
///
/// The channel watches the fd's readiness with a waker of its own: on each
/// edge, it reads every queued port in page-sized batches until a read finds
/// none, records each as delivered, re-arms them with one `write` per batch,
/// and wakes the waiter of each. So a waiter is woken by its port's delivery
/// whether or not any other future is polled (one that is pending and never
/// polled again starves no one). A waiter that finds nothing recorded for it
/// reads the fd itself first, which saves a round through the reactor.
/// Dropping the handle closes the fd, which unbinds every port.
///
/// Ports are re-armed as soon as their delivery is recorded, so
/// [`EventChannel::unmask`] has nothing to do here (it only checks the port).
/// [`take_pending`](EventChannel::take_pending), the stream of
/// [`events`](AsyncEventChannel::events) and
/// [`wait_pending`](EventChannel::wait_pending) take the oldest deliveries of
/// any port, so give each port one kind of waiter. `wait_pending` blocks its
/// thread in `poll(2)` and needs no runtime to be woken.
/// Must be created inside a tokio runtime with IO enabled.
#[derive(Debug)]
pub struct TokioEventChannel {
    core: Arc<Core<FdReadiness>>,
}

/// The fd's readiness from tokio's reactor.
struct FdReadiness {
    fd: Arc<AsyncFd<Arc<EvtchnDevice>>>,
    /// The wait in progress.
    wait: Option<ReadinessWait>,
}

impl Readiness for FdReadiness {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // `AsyncFd::ready` waits in the fd's list of waiters, with the
        // interest given (`poll_read_ready` would miss an error alone), and
        // neither consumes the task budget nor wakes `cx` from inside `poll`
        // (tokio 1.x `ScheduledIo::readiness`): polled from the channel's
        // waker, it cannot recurse.
        let wait = self.wait.get_or_insert_with(|| {
            let fd = Arc::clone(&self.fd);
            Box::pin(async move {
                let mut guard = fd.ready(Interest::READABLE | Interest::ERROR).await?;
                guard.clear_ready();
                Ok(())
            })
        });
        let result = ready!(wait.as_mut().poll(cx));
        self.wait = None;
        Poll::Ready(result.map_err(|e| Error::Os {
            operation: "waiting for the fd",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        }))
    }
}

impl TokioEventChannel {
    /// Opens `/dev/xen/evtchn` and registers it with the current tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`EvtchnDevice::open`] and [`new`](Self::new).
    pub fn open() -> Result<Self, Error> {
        Self::new(EvtchnDevice::open()?)
    }

    /// Wraps an open device; registers it for readable and error readiness.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] outside a tokio runtime or in one without IO
    /// enabled; [`Error::Os`] if the runtime cannot register the fd or the
    /// waiters' eventfd cannot be made.
    pub fn new(device: EvtchnDevice) -> Result<Self, Error> {
        // `register_with_interest` panics outside a runtime: refuse first.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Unsupported(
                "TokioEventChannel must be created inside a tokio runtime",
            ));
        }
        let device = Arc::new(device);
        let interest = Interest::READABLE | Interest::ERROR;
        // SAFETY: the `AsyncFd` holds an `Arc` of the device, which owns its
        // fd (an `OwnedFd` it never replaces) and closes it only when dropped,
        // after the last `Arc`: the fd stays open while the `AsyncFd` lives,
        // and `as_raw_fd` (through the `Arc`) always returns it.
        let fd = unsafe { AsyncFd::register_with_interest(Arc::clone(&device), interest) }
            .map_err(|e| {
                let (_, error) = e.into_parts();
                match error.raw_os_error() {
                    Some(errno) => Error::Os {
                        operation: "registering with tokio",
                        errno: Errno::from_raw(errno),
                    },
                    None => Error::Unsupported("AsyncFd needs a tokio runtime with IO enabled"),
                }
            })?;
        let readiness = FdReadiness {
            fd: Arc::new(fd),
            wait: None,
        };
        Ok(Self {
            core: Core::new(device, readiness)?,
        })
    }

    /// The device, for its own methods (`restrict`, `bind_static_raw`, ...).
    pub fn device(&self) -> &EvtchnDevice {
        self.core.device()
    }
}

impl EventChannel for TokioEventChannel {
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, Error> {
        self.device().alloc_unbound_raw(remote)
    }

    fn bind_interdomain_raw(&self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        self.device().bind_interdomain_raw(remote, remote_port)
    }

    fn bind_virq_raw(&self, virq: Virq) -> Result<Port, Error> {
        self.device().bind_virq_raw(virq)
    }

    fn unbind_raw(&self, port: Port) -> Result<(), Error> {
        self.core.unbind(port)
    }

    fn notify(&self, port: Port) -> Result<(), Error> {
        self.device().notify(port)
    }

    fn unmask(&self, port: Port) -> Result<(), Error> {
        if !self.device().is_bound(port) {
            return Err(Error::NotBound(port));
        }
        Ok(())
    }

    fn take_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        self.core.take_pending(ports)
    }

    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        self.core.wait_pending(ports)
    }
}

impl AsyncEventChannel for TokioEventChannel {
    fn poll_port(&self, port: Port, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_port_with(port, &mut WaiterTicket::default(), cx)
    }

    fn poll_port_with(
        &self,
        port: Port,
        ticket: &mut WaiterTicket,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        self.core.poll_port(port, ticket, cx)
    }

    fn poll_any(&self, cx: &mut Context<'_>) -> Poll<Result<Port, Error>> {
        self.core.poll_any(cx)
    }

    fn forget_port(&self, port: Port) {
        self.forget_port_with(port, WaiterTicket::NONE);
    }

    fn forget_port_with(&self, port: Port, ticket: WaiterTicket) {
        self.core.forget_port(port, ticket);
    }

    fn forget_any(&self) {
        self.core.forget_any();
    }
}
