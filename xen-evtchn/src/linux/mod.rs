//! The Linux backend over `/dev/xen/evtchn`.

pub(crate) mod sys;

use std::collections::{BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
#[cfg(feature = "mock")]
use std::sync::Arc;
use std::sync::TryLockError;
use std::vec::Vec;

use nix::errno::Errno as OsErrno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use xen_hypercall::{DomId, Errno, Port, Virq};
use zerocopy::IntoBytes;

use self::sys::Ioctl;
use crate::sync::{Mutex, MutexGuard};
use crate::{Error, EventChannel};

/// The device node.
pub const DEVICE: &str = "/dev/xen/evtchn";

/// Ports beyond this number exist in no event-channel ABI (the FIFO ABI's
/// `EVTCHN_FIFO_NR_CHANNELS`, 2^17; the 2-level ABI has fewer).
pub const MAX_PORTS: u32 = 1 << 17;

/// [`Error::PortOutOfRange`] for a port no ABI has.
fn check_range(port: Port) -> Result<Port, Error> {
    if port.raw() >= MAX_PORTS {
        return Err(Error::PortOutOfRange(port));
    }
    Ok(port)
}

/// The most ports one `read` returns: a page of `u32`s (the driver's limit).
pub const READ_BATCH: usize = 4096 / size_of::<u32>();

/// Event channels through one open `/dev/xen/evtchn`: the ports it binds
/// are delivered to it alone, and closed with it.
///
/// `Send + Sync`: its calls may come from several threads; its bookkeeping
/// is behind a lock. Reads never block (the fd is `O_NONBLOCK`);
/// [`wait_pending`](EventChannel::wait_pending) waits in `poll`, or in one
/// blocking `read` once [`set_blocking`](Self::set_blocking) was called.
///
/// Overflow (the driver's ring lost events: `read` fails with `EFBIG`, `poll`
/// says `POLLERR`) is recovered by `IOCTL_EVTCHN_RESET` and reporting every
/// bound port once as possibly pending, so no event is lost.
#[derive(Debug)]
pub struct EvtchnDevice {
    fd: OwnedFd,
    state: Mutex<State>,
    /// Held by a read of a blocking fd ([`EvtchnDevice::set_blocking`]): a waiting read holds
    /// it while it sleeps, and a non-waiting read holds it from its `poll` to its `read`, so no
    /// other reader takes the ports that `poll` saw and the read never sleeps.
    reader: Mutex<()>,
    /// The driver mock the system calls go to instead of the kernel.
    #[cfg(feature = "mock")]
    mock: Option<Arc<crate::mock::EvtchnDriver>>,
}

#[derive(Debug, Default)]
struct State {
    /// The ports bound through this fd.
    bound: BTreeSet<Port>,
    /// Ports still to report after an overflow.
    resync: VecDeque<Port>,
    /// How many overflows were recovered.
    overflows: u64,
    /// The fd's reads block ([`EvtchnDevice::set_blocking`]).
    blocking: bool,
}

impl EvtchnDevice {
    /// Opens [`DEVICE`].
    ///
    /// # Errors
    ///
    /// As [`open_path`](Self::open_path).
    pub fn open() -> Result<Self, Error> {
        Self::open_path(DEVICE)
    }

    /// Opens the event-channel device at `path` (for a device node elsewhere).
    ///
    /// # Errors
    ///
    /// [`Error::DeviceMissing`] when the node does not exist (not on Xen, or the
    /// `xen-evtchn` module is not loaded), [`Error::PermissionDenied`] when the OS refuses to
    /// open it, [`Error::Os`] for any other `open` failure.
    pub fn open_path(path: &'static str) -> Result<Self, Error> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| match e.raw_os_error().unwrap_or(libc::EIO) {
                libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::DeviceMissing { device: path },
                libc::EACCES | libc::EPERM => Error::PermissionDenied { device: path },
                errno => Error::Os {
                    operation: "open",
                    errno: Errno::from_raw(errno),
                },
            })?;
        Ok(Self {
            fd: file.into(),
            state: Mutex::default(),
            reader: Mutex::default(),
            #[cfg(feature = "mock")]
            mock: None,
        })
    }

    /// A device whose system calls go to `mock`; `fd` stands for its wait queue.
    #[cfg(feature = "mock")]
    pub(crate) fn from_mock(fd: OwnedFd, mock: Arc<crate::mock::EvtchnDriver>) -> Self {
        Self {
            fd,
            state: Mutex::default(),
            reader: Mutex::default(),
            mock: Some(mock),
        }
    }

    /// `read(2)` of ports.
    fn sys_read(&self, ports: &mut [Port]) -> Result<usize, OsErrno> {
        #[cfg(feature = "mock")]
        if let Some(mock) = &self.mock {
            return mock.read(ports);
        }
        nix::unistd::read(&self.fd, ports.as_mut_bytes()).map(|bytes| bytes / size_of::<u32>())
    }

    /// Clears the fd's `O_NONBLOCK`: its reads wait until a port is queued.
    fn sys_set_blocking(&self) -> Result<(), OsErrno> {
        use nix::fcntl::{FcntlArg, OFlag, fcntl};
        #[cfg(feature = "mock")]
        if let Some(mock) = &self.mock {
            mock.set_blocking();
            return Ok(());
        }
        let flags = OFlag::from_bits_retain(fcntl(&self.fd, FcntlArg::F_GETFL)?);
        fcntl(&self.fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK)).map(drop)
    }

    /// `write(2)` of ports.
    fn sys_write(&self, ports: &[Port]) -> Result<usize, OsErrno> {
        #[cfg(feature = "mock")]
        if let Some(mock) = &self.mock {
            return mock.write(ports);
        }
        nix::unistd::write(&self.fd, ports.as_bytes())
    }

    /// `ioctl(2)`.
    fn sys_ioctl<T: 'static>(
        &self,
        ioctl: &Ioctl<T>,
        arg: &mut T,
    ) -> Result<libc::c_long, OsErrno> {
        #[cfg(feature = "mock")]
        if let Some(mock) = &self.mock {
            return mock.ioctl(ioctl.number, arg);
        }
        sys::ioctl(self.fd.as_fd(), ioctl, arg)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation completes before the lock is released.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ioctl<T: 'static>(&self, ioctl: &Ioctl<T>, arg: &mut T) -> Result<u32, Error> {
        let ret = self.sys_ioctl(ioctl, arg).map_err(|errno| Error::Os {
            operation: ioctl.name,
            errno: Errno::from_raw(errno as i32),
        })?;
        u32::try_from(ret).map_err(|_| Error::Os {
            operation: ioctl.name,
            errno: Errno::ERANGE,
        })
    }

    /// A bind ioctl: records the new port.
    ///
    /// The lock is held across the ioctl: the driver queues the event Xen
    /// marks pending at bind before the ioctl returns, and a `read` on another
    /// thread (which takes the same lock) must not hand out the port before it
    /// is recorded here, or its unmask would be refused and the port stay masked.
    fn bind<T: 'static>(&self, ioctl: &Ioctl<T>, mut arg: T) -> Result<Port, Error> {
        let mut state = self.state();
        let port = Port::new(self.ioctl(ioctl, &mut arg)?);
        state.bound.insert(port);
        Ok(port)
    }

    /// Restricts this fd to domain `domid` (for a device-model or backend
    /// process), `IOCTL_EVTCHN_RESTRICT_DOMID`. One way: from then on Linux's
    /// driver refuses, with `EACCES`, an interdomain bind to another domain, a
    /// VIRQ bind and an unbound-port allocation; ports bound before keep working.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] with the driver's errno: `EACCES` if this fd is already
    /// restricted, `EINVAL` if `domid` is domain 0 or a reserved id
    /// (`DOMID_FIRST_RESERVED` and above).
    pub fn restrict(&self, domid: DomId) -> Result<(), Error> {
        let mut arg = sys::RestrictDomid { domid: domid.raw() };
        self.ioctl(&sys::RESTRICT_DOMID, &mut arg).map(drop)
    }

    /// Binds a statically allocated channel (Xen on Arm's dom0less
    /// `xen,evtchn` nodes), `IOCTL_EVTCHN_BIND_STATIC`, and returns `port`.
    /// Linux does not ask Xen whether the port is static: the caller's word.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on kernels without it (Linux 6.1 lacks it),
    /// [`Error::PortOutOfRange`] for a port the ABI cannot name, [`Error::Os`] with
    /// the driver's errno otherwise.
    pub fn bind_static_raw(&self, port: Port) -> Result<Port, Error> {
        let mut arg = sys::PortArg {
            port: check_range(port)?.raw(),
        };
        // Unlike the other binds, the driver answers 0, not the port. The lock
        // is held across the ioctl, as in `bind`.
        let mut state = self.state();
        match self.ioctl(&sys::BIND_STATIC, &mut arg) {
            Ok(_) => {
                state.bound.insert(port);
                Ok(port)
            }
            Err(Error::Os { errno, .. })
                if errno == Errno::ENOSYS || errno.raw() == libc::ENOTTY =>
            {
                Err(Error::Unsupported(
                    "IOCTL_EVTCHN_BIND_STATIC (this kernel predates it)",
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// The ports bound through this fd.
    pub fn bound_ports(&self) -> Vec<Port> {
        self.state().bound.iter().copied().collect()
    }

    /// Whether `port` was bound through this fd.
    pub fn is_bound(&self, port: Port) -> bool {
        self.state().bound.contains(&port)
    }

    /// Re-arms `ports` with one `write` per [`READ_BATCH`], unchecked: the
    /// driver's `evtchn_write` skips a port not bound through this fd, and one
    /// already enabled.
    pub(crate) fn rearm(&self, ports: &[Port]) -> Result<(), Error> {
        for chunk in ports.chunks(READ_BATCH) {
            self.sys_write(chunk).map_err(|errno| Error::Os {
                operation: "write (unmask)",
                errno: Errno::from_raw(errno as i32),
            })?;
        }
        Ok(())
    }

    /// How many ring overflows this handle recovered from.
    pub fn overflows(&self) -> u64 {
        self.state().overflows
    }

    /// Makes `wait_pending` one blocking `read(2)`, as libxenvchan's wait is,
    /// instead of `poll(2)` then a read: for a device one thread waits on
    /// (one per channel). Idempotent, and a system call only the first time.
    ///
    /// The driver's `evtchn_read` then sleeps until `ring_cons != ring_prod`;
    /// `evtchn_interrupt` wakes it when it queues a port in the empty ring,
    /// and a port queued before the read is found by it, so none is missed.
    /// (The ring overflows only when full, which a waiting read never is.)
    /// [`take_pending`](EventChannel::take_pending) still does not wait: it
    /// polls, then reads, with no other read between the two; while another
    /// thread waits in its read, it takes nothing (the ports go to the waiter).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `fcntl(2)` fails.
    pub fn set_blocking(&self) -> Result<(), Error> {
        let mut state = self.state();
        if !state.blocking {
            // Under the lock: no read of this handle sees the flag and the fd disagree.
            self.sys_set_blocking().map_err(|errno| Error::Os {
                operation: "fcntl",
                errno: Errno::from_raw(errno as i32),
            })?;
            state.blocking = true;
        }
        Ok(())
    }

    /// Fills `ports` with the ports left over from an overflow, then with one
    /// `read` of at most [`READ_BATCH`] more; 0 if none is queued (or, with
    /// `wait` on a blocking fd, if a signal interrupted the wait). A short
    /// result does not mean the queue is empty: a port the driver queued
    /// while the `read` copied is left for the next one (and woke nobody).
    ///
    /// With `wait`, a blocking fd's read waits for a port, outside the lock
    /// (a bind or unbind on another thread must not wait for an event).
    fn read_ports(&self, ports: &mut [Port], wait: bool) -> Result<usize, Error> {
        let mut state = self.state();
        let mut count = 0;
        while count < ports.len() {
            let Some(port) = state.resync.pop_front() else {
                break;
            };
            ports[count] = port;
            count += 1;
        }
        if count == ports.len() {
            return Ok(count);
        }
        let end = ports.len().min(count + READ_BATCH);
        let read = if !state.blocking {
            self.sys_read(&mut ports[count..end])
        } else if count > 0 {
            return Ok(count);
        } else if wait {
            drop(state);
            let read = {
                let _reading = self.reader.lock().unwrap_or_else(|e| e.into_inner());
                self.sys_read(&mut ports[..end])
            };
            state = self.state();
            read
        } else {
            // A read that waits holds `reader`: the ports it will get are its, and this call
            // takes none rather than wait with it.
            let reading = match self.reader.try_lock() {
                Ok(reading) => Some(reading),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            match reading {
                Some(_reading) if self.poll(0)? => self.sys_read(&mut ports[..end]),
                _ => Err(OsErrno::EAGAIN),
            }
        };
        match read {
            Ok(read) => Ok(count + read),
            Err(OsErrno::EAGAIN | OsErrno::EINTR) => Ok(count),
            Err(OsErrno::EFBIG) => {
                // The ring overflowed: clear it, then report every bound port.
                self.ioctl(&sys::RESET, &mut ())?;
                state.overflows += 1;
                let State { bound, resync, .. } = &mut *state;
                resync.clear();
                resync.extend(bound.iter().copied());
                drop(state);
                Ok(count + self.read_ports(&mut ports[count..], false)?)
            }
            Err(errno) => Err(Error::Os {
                operation: "read",
                errno: Errno::from_raw(errno as i32),
            }),
        }
    }

    /// Waits until the fd is readable or in error (overflow), or `timeout_ms`
    /// passes (negative: no limit).
    ///
    /// `Ok(())` does not say which: it is also returned when the timeout
    /// passed and when a signal interrupted the wait. The caller reads the
    /// ports next, which finds none after a timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `poll(2)` fails other than by `EINTR`.
    pub fn wait_readable(&self, timeout_ms: i32) -> Result<(), Error> {
        self.poll(timeout_ms).map(drop)
    }

    /// `poll(2)` for `POLLIN` (or an error) for up to `timeout_ms`: whether it came.
    fn poll(&self, timeout_ms: i32) -> Result<bool, Error> {
        #[cfg(feature = "mock")]
        if let Some(mock) = &self.mock {
            mock.count_poll();
        }
        let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::NONE);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(ready) => Ok(ready > 0),
            Err(OsErrno::EINTR) => Ok(false),
            Err(errno) => Err(Error::Os {
                operation: "poll",
                errno: Errno::from_raw(errno as i32),
            }),
        }
    }

    /// Checks `ports` were bound here: the driver ignores others silently.
    fn check_bound(&self, ports: &[Port]) -> Result<(), Error> {
        ports.iter().try_for_each(|&p| check_range(p).map(drop))?;
        let state = self.state();
        match ports.iter().find(|p| !state.bound.contains(p)) {
            Some(&port) => Err(Error::NotBound(port)),
            None => Ok(()),
        }
    }
}

impl EventChannel for EvtchnDevice {
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, Error> {
        let arg = sys::BindUnboundPort {
            remote_domain: remote.raw().into(),
        };
        self.bind(&sys::BIND_UNBOUND_PORT, arg)
    }

    fn bind_interdomain_raw(&self, remote: DomId, remote_port: Port) -> Result<Port, Error> {
        let arg = sys::BindInterdomain {
            remote_domain: remote.raw().into(),
            remote_port: check_range(remote_port)?.raw(),
        };
        self.bind(&sys::BIND_INTERDOMAIN, arg)
    }

    fn bind_virq_raw(&self, virq: Virq) -> Result<Port, Error> {
        self.bind(&sys::BIND_VIRQ, sys::BindVirq { virq: virq.0 })
    }

    fn unbind_raw(&self, port: Port) -> Result<(), Error> {
        check_range(port)?;
        // Forgotten before the unbind, restored if it fails: once Xen closed
        // the port, a bind on another thread may get the same number, and
        // records it (the driver serialises binds and unbinds of one fd with
        // its `bind_mutex`, but not this bookkeeping).
        {
            let mut state = self.state();
            if !state.bound.remove(&port) {
                return Err(Error::NotBound(port));
            }
            state.resync.retain(|&p| p != port);
        }
        let mut arg = sys::PortArg { port: port.raw() };
        self.ioctl(&sys::UNBIND, &mut arg).inspect_err(|_| {
            self.state().bound.insert(port);
        })?;
        Ok(())
    }

    fn notify(&self, port: Port) -> Result<(), Error> {
        // The driver answers ENOTCONN for a port this fd does not own.
        let mut arg = sys::PortArg {
            port: check_range(port)?.raw(),
        };
        self.ioctl(&sys::NOTIFY, &mut arg).map(drop)
    }

    fn unmask(&self, port: Port) -> Result<(), Error> {
        self.unmask_all(&[port])
    }

    fn unmask_all(&self, ports: &[Port]) -> Result<(), Error> {
        ports.iter().try_for_each(|&p| check_range(p).map(drop))?;
        let bound = self.check_bound(ports);
        // All of them, even when one is not bound here (unbound meanwhile by
        // another thread): the driver re-arms only this fd's ports and skips
        // the rest, and no other port of the batch may stay masked.
        self.rearm(ports)?;
        bound
    }

    fn take_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        self.read_ports(ports, false)
    }

    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, Error> {
        loop {
            let blocking = self.state().blocking;
            let count = self.read_ports(ports, blocking)?;
            if count > 0 || ports.is_empty() {
                return Ok(count);
            }
            if !blocking {
                self.wait_readable(-1)?;
            }
        }
    }
}

impl AsFd for EvtchnDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for EvtchnDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
