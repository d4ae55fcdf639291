//! The tokio integration: one `/dev/xen/evtchn` fd in one [`AsyncFd`],
//! demultiplexed to per-port wakers, without a thread.

use std::boxed::Box;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use xen_hypercall::{DomId, Port, Virq};

use crate::demux::{Demux, Readiness};
use crate::linux::EvtchnDevice;
use crate::{AsyncEventChannel, Error, EventChannel, WaiterTicket};

/// A readiness wait on the fd, for readable or error (the driver reports an
/// overflow as `POLLERR` alone).
type ReadinessWait = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Event channels through `/dev/xen/evtchn`, awaitable on tokio: the RFC's
/// `TokioEventChannel`.
///
/// Whichever future is polled reads every queued port in page-sized batches
/// until a read finds none, records each as delivered, re-arms them with one
/// `write` per batch, and wakes the waiter of each. One pending waiter's
/// waker watches the fd; it hands that duty to another pending waiter (waking
/// it) as soon as it completes or is dropped, so a completed future or stream
/// that is not polled again starves no one. Dropping the handle closes the
/// fd, which unbinds every port.
///
/// Ports are re-armed as soon as their delivery is recorded, so
/// [`EventChannel::unmask`] has nothing to do here (it only checks the port).
/// Must be created inside a tokio runtime with IO enabled.
#[derive(Debug)]
pub struct TokioEventChannel {
    fd: Arc<AsyncFd<EvtchnDevice>>,
    demux: Mutex<Demux<FdReadiness>>,
}

/// The fd's readiness from tokio's reactor.
struct FdReadiness {
    fd: Arc<AsyncFd<EvtchnDevice>>,
    /// The wait in progress.
    wait: Option<ReadinessWait>,
}

impl Readiness for FdReadiness {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
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
            errno: e.raw_os_error().unwrap_or(0),
        }))
    }
}

impl TokioEventChannel {
    /// Opens `/dev/xen/evtchn` and registers it with the current tokio runtime.
    pub fn open() -> Result<Self, Error> {
        Self::new(EvtchnDevice::open()?)
    }

    /// Wraps an open device; registers it for readable and error readiness.
    pub fn new(device: EvtchnDevice) -> Result<Self, Error> {
        // `register_with_interest` panics outside a runtime: refuse first.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Unsupported(
                "TokioEventChannel must be created inside a tokio runtime",
            ));
        }
        let interest = Interest::READABLE | Interest::ERROR;
        // SAFETY: `EvtchnDevice` owns its fd (an `OwnedFd` it never replaces),
        // open until the device is dropped, which happens only with the
        // `AsyncFd` that owns it; `as_raw_fd` always returns that fd.
        let fd = unsafe { AsyncFd::register_with_interest(device, interest) }.map_err(|e| {
            let (_, error) = e.into_parts();
            match error.raw_os_error() {
                Some(errno) => Error::Os {
                    operation: "registering with tokio",
                    errno,
                },
                None => Error::Unsupported("AsyncFd needs a tokio runtime with IO enabled"),
            }
        })?;
        let fd = Arc::new(fd);
        let readiness = FdReadiness {
            fd: Arc::clone(&fd),
            wait: None,
        };
        Ok(Self {
            fd,
            demux: Mutex::new(Demux::new(readiness)),
        })
    }

    /// The device, for its own methods (`restrict`, `bind_static_raw`, ...).
    pub fn device(&self) -> &EvtchnDevice {
        self.fd.get_ref()
    }

    fn demux(&self) -> MutexGuard<'_, Demux<FdReadiness>> {
        self.demux.lock().unwrap_or_else(|e| e.into_inner())
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
        self.demux().unbind(self.device(), port)
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
        self.demux().take_pending(self.device(), ports)
    }

    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        loop {
            let count = self.take_pending(ports)?;
            if count > 0 || ports.is_empty() {
                return Ok(count);
            }
            self.device().wait_readable(-1)?;
        }
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
        self.demux().poll_port(self.device(), port, ticket, cx)
    }

    fn poll_any(&self, cx: &mut Context<'_>) -> Poll<Result<Port, Error>> {
        self.demux().poll_any(self.device(), cx)
    }

    fn forget_port(&self, port: Port) {
        self.forget_port_with(port, WaiterTicket::NONE);
    }

    fn forget_port_with(&self, port: Port, ticket: WaiterTicket) {
        self.demux().forget_port(port, ticket);
    }

    fn forget_any(&self) {
        self.demux().forget_any();
    }
}
