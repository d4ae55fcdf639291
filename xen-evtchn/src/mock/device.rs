//! A mock of Linux's `/dev/xen/evtchn` (drivers/xen/evtchn.c), one open file,
//! with the driver's delivery rules, behind a real fd that epoll and tokio
//! watch: [`EvtchnDriver`].

use std::boxed::Box;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::vec::Vec;

use nix::errno::Errno;
use nix::libc::{c_long, c_ulong};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use xen_hypercall::Port;

use crate::linux::EvtchnDevice;
use crate::linux::sys;
use crate::sync::{Mutex, MutexGuard};

/// The ring size of older Linux kernels (`PAGE_SIZE / sizeof(evtchn_port_t)`);
/// current ones size it to the bound ports (64, doubled as needed).
pub const RING_SIZE: usize = 4096 / size_of::<u32>();

/// A hook run inside `read`, between the snapshot of `ring_prod` and the
/// advance of `ring_cons`, with the number of ports copied (0: `EAGAIN`).
type ReadHook = Box<dyn FnMut(usize) + Send>;
/// A hook run inside `UNBIND` after the port is closed, or inside a bind after
/// the port is bound (and any event pending at bind queued).
type PortHook = Box<dyn FnMut(Port) + Send>;
/// A hook run when the driver wakes its readers.
type WakeHook = Box<dyn Fn() + Send + Sync>;

/// A mock of one open `/dev/xen/evtchn` and of the loopback Xen behind it,
/// with the driver's exact rules:
///
/// - `evtchn_interrupt`: a port that fires while enabled is disabled and
///   queued in the ring; readers are woken only when the ring goes from empty
///   to non-empty (`if (cons == prod) wake_up_interruptible(...)`); a full
///   ring sets `ring_overflow` and wakes nobody.
/// - `evtchn_read`: `EFBIG` once overflowed, `EAGAIN` when empty (the fd is
///   non-blocking), else it snapshots `ring_prod`, copies, and only then
///   advances `ring_cons` ([`set_read_hook`](Self::set_read_hook) runs code
///   between the two, as an interrupt on another CPU would).
/// - `evtchn_write`: re-enables each disabled port of this file; one that
///   Xen marked pending while it was disabled fires again at once.
/// - `IOCTL_EVTCHN_RESET` empties the ring and clears the overflow.
/// - Xen hands out the lowest free port, and marks a port bound interdomain
///   pending.
///
/// The fd the device gets is an eventfd standing for the driver's wait
/// queue: it is written (an epoll edge) exactly when the driver would wake
/// readers, and emptied when a read leaves the ring empty, so `poll` sees it
/// readable exactly when the driver's `evtchn_poll` says `POLLIN`. (An
/// overflowed ring is readable here where the driver says `POLLERR` alone.)
pub struct EvtchnDriver {
    event: EventFd,
    /// `ring_cons_mutex`: serialises readers and `RESET`.
    cons_mutex: Mutex<()>,
    /// `ring_prod_lock`, and everything else.
    inner: Mutex<Inner>,
    read_hook: Mutex<Option<ReadHook>>,
    unbind_hook: Mutex<Option<PortHook>>,
    bind_hook: Mutex<Option<PortHook>>,
    /// Run at each wake-up, besides the eventfd's edge (for the loom models).
    wake_hook: Mutex<Option<WakeHook>>,
    /// The file's `O_NONBLOCK` is cleared: reads wait for a port.
    blocking: AtomicBool,
    /// System calls made on the file: reads, writes, ioctls, polls and `fcntl`s.
    calls: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    ring: Vec<u32>,
    cons: u32,
    prod: u32,
    overflow: bool,
    /// Xen's ports: the bound peer of each (none while unbound or a VIRQ).
    xen: BTreeMap<u32, Option<u32>>,
    /// This file's ports.
    ports: BTreeMap<u32, Channel>,
    /// How many times readers were woken (empty to non-empty).
    wakes: u64,
}

#[derive(Debug, Default)]
struct Channel {
    /// The driver's `enabled`: cleared when it fires, set by a write.
    enabled: bool,
    /// Xen's pending bit, for an event that came while disabled.
    pending: bool,
}

impl core::fmt::Debug for EvtchnDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EvtchnDriver")
            .field("inner", &*self.inner())
            .finish_non_exhaustive()
    }
}

/// The lowest port Xen hands out (port 0 is reserved).
const FIRST_PORT: u32 = 1;
/// One past the highest port (the 2-level ABI's 4096 on 64-bit guests).
const MAX_PORT: u32 = 4096;

impl EvtchnDriver {
    /// A driver with [`RING_SIZE`] ring slots.
    pub fn new() -> Arc<Self> {
        Self::with_ring_size(RING_SIZE)
    }

    /// A driver with `ring_size` ring slots (a power of two), to overflow it.
    pub fn with_ring_size(ring_size: usize) -> Arc<Self> {
        assert!(
            ring_size.is_power_of_two(),
            "the ring size is a power of two"
        );
        let event =
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).expect("eventfd");
        Arc::new(Self {
            event,
            cons_mutex: Mutex::new(()),
            inner: Mutex::new(Inner {
                ring: std::vec![0; ring_size],
                cons: 0,
                prod: 0,
                overflow: false,
                xen: BTreeMap::new(),
                ports: BTreeMap::new(),
                wakes: 0,
            }),
            read_hook: Mutex::new(None),
            unbind_hook: Mutex::new(None),
            bind_hook: Mutex::new(None),
            wake_hook: Mutex::new(None),
            blocking: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        })
    }

    /// The device, as [`EvtchnDevice::open`] gives it (one per driver).
    pub fn device(self: &Arc<Self>) -> EvtchnDevice {
        let fd: OwnedFd = self.event.as_fd().try_clone_to_owned().expect("dup");
        EvtchnDevice::from_mock(fd, Arc::clone(self))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Xen signals `port` (its interrupt runs), from any thread.
    pub fn fire(&self, port: Port) {
        let mut inner = self.inner();
        self.raise(&mut inner, port.raw());
    }

    /// Runs `hook` inside every `read`, as an interrupt on another CPU may
    /// run: between the snapshot of `ring_prod` and the advance of
    /// `ring_cons`, with the number of ports copied; or, for a read that found
    /// the ring empty, before it returns `EAGAIN`, with 0. `None`: no hook.
    pub fn set_read_hook(&self, hook: Option<Box<dyn FnMut(usize) + Send>>) {
        *self.read_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Runs `hook` inside `IOCTL_EVTCHN_UNBIND`, after Xen closed the port
    /// and before the call returns, with the port: what another thread may
    /// do while this one returns (Xen may hand it the same port). `None`: none.
    pub fn set_unbind_hook(&self, hook: Option<Box<dyn FnMut(Port) + Send>>) {
        *self.unbind_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Runs `hook` inside every bind ioctl that succeeds, after the port is
    /// bound and any event pending at bind is queued, before the ioctl returns
    /// (`None`: no hook).
    pub fn set_bind_hook(&self, hook: Option<Box<dyn FnMut(Port) + Send>>) {
        *self.bind_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Runs `hook` each time the driver wakes its readers, as well as making
    /// the fd readable (`None`: no hook); it must not call back into the
    /// driver.
    pub fn set_wake_hook(&self, hook: Option<Box<dyn Fn() + Send + Sync>>) {
        *self.wake_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// How many times the driver woke its readers (the ring went non-empty).
    pub fn wakes(&self) -> u64 {
        self.inner().wakes
    }

    /// How many ports are queued in the ring.
    pub fn queued(&self) -> usize {
        let inner = self.inner();
        inner.prod.wrapping_sub(inner.cons) as usize
    }

    /// Whether the ring overflowed (until `RESET`).
    pub fn overflowed(&self) -> bool {
        self.inner().overflow
    }

    /// The ports bound through this file.
    pub fn bound_ports(&self) -> Vec<Port> {
        self.inner().ports.keys().map(|&p| Port::new(p)).collect()
    }

    /// The ports Xen has open (bound through this file or not).
    pub fn xen_ports(&self) -> Vec<Port> {
        self.inner().xen.keys().map(|&p| Port::new(p)).collect()
    }

    /// Whether `port` is bound here and enabled (not delivered, or re-armed).
    pub fn is_enabled(&self, port: Port) -> bool {
        self.inner()
            .ports
            .get(&port.raw())
            .is_some_and(|c| c.enabled)
    }

    /// `evtchn_interrupt` for an enabled port; Xen's pending bit otherwise.
    fn raise(&self, inner: &mut Inner, port: u32) {
        let Some(channel) = inner.ports.get_mut(&port) else {
            return; // Not this file's: Xen keeps it pending for nobody.
        };
        if !channel.enabled {
            channel.pending = true;
            return;
        }
        channel.enabled = false;
        let size = inner.ring.len() as u32;
        if inner.prod.wrapping_sub(inner.cons) < size {
            let slot = (inner.prod & (size - 1)) as usize;
            inner.ring[slot] = port;
            let was_empty = inner.cons == inner.prod;
            inner.prod = inner.prod.wrapping_add(1);
            if was_empty {
                inner.wakes += 1;
                // The wait queue's wake-up: an edge for epoll.
                let _ = self.event.write(1);
                if let Some(hook) = &*self.wake_hook.lock().unwrap_or_else(|e| e.into_inner()) {
                    hook();
                }
            }
        } else {
            inner.overflow = true;
        }
    }

    /// How many system calls were made on the file (reads, writes, ioctls, polls, `fcntl`s).
    pub fn system_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `fcntl(F_SETFL)` without `O_NONBLOCK`.
    pub(crate) fn set_blocking(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.blocking.store(true, Ordering::Relaxed);
    }

    /// Counts a `poll(2)` of the file.
    pub(crate) fn count_poll(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// `evtchn_read`: ports into `buf`, returns how many; on a blocking file, waits while the
    /// ring is empty (`wait_event_interruptible(evtchn_wait, ring_cons != ring_prod)`).
    pub(crate) fn read(&self, buf: &mut [Port]) -> Result<usize, Errno> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        loop {
            match self.read_now(buf) {
                Err(Errno::EAGAIN) if self.blocking.load(Ordering::Relaxed) => {
                    // The eventfd is readable once a port is queued (or the ring overflowed).
                    let mut fds = [PollFd::new(self.event.as_fd(), PollFlags::POLLIN)];
                    match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(errno) => return Err(errno),
                    }
                }
                result => return result,
            }
        }
    }

    /// `evtchn_read` on a non-blocking file.
    fn read_now(&self, buf: &mut [Port]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let cons_mutex = self.cons_mutex.lock().unwrap_or_else(|e| e.into_inner());
        let (c, count) = {
            let inner = self.inner();
            if inner.overflow {
                return Err(Errno::EFBIG);
            }
            let (c, p) = (inner.cons, inner.prod);
            if c == p {
                drop(inner);
                drop(cons_mutex);
                self.run_read_hook(0);
                return Err(Errno::EAGAIN);
            }
            let size = inner.ring.len() as u32;
            let count = (p.wrapping_sub(c) as usize).min(buf.len()).min(RING_SIZE);
            for (i, slot) in buf[..count].iter_mut().enumerate() {
                let index = c.wrapping_add(i as u32) & (size - 1);
                *slot = Port::new(inner.ring[index as usize]);
            }
            (c, count)
        };
        // Between the copy and the advance, as `copy_to_user` runs.
        self.run_read_hook(count);
        let mut inner = self.inner();
        inner.cons = c.wrapping_add(count as u32);
        if inner.cons == inner.prod {
            self.clear_wake();
        }
        Ok(count)
    }

    fn run_read_hook(&self, count: usize) {
        let mut hook = self.read_hook.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hook) = hook.as_mut() {
            hook(count);
        }
    }

    /// The wait queue has nothing to report: `poll` sees no `POLLIN`.
    fn clear_wake(&self) {
        let _ = self.event.read();
    }

    /// `evtchn_write`: re-enables this file's disabled ports.
    pub(crate) fn write(&self, ports: &[Port]) -> Result<usize, Errno> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner();
        for port in ports.iter().take(RING_SIZE) {
            let port = port.raw();
            let Some(channel) = inner.ports.get_mut(&port) else {
                continue;
            };
            if channel.enabled {
                continue;
            }
            channel.enabled = true;
            if core::mem::take(&mut channel.pending) {
                self.raise(&mut inner, port);
            }
        }
        Ok(ports.len().min(RING_SIZE) * size_of::<u32>())
    }

    /// `evtchn_ioctl` for the structure `arg` of the ioctl numbered `number`.
    pub(crate) fn ioctl<T: 'static>(&self, number: c_ulong, arg: &mut T) -> Result<c_long, Errno> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let arg: &mut dyn core::any::Any = arg;
        let result = self.dispatch(number, arg);
        if let (Ok(_), Some(unbind)) = (&result, arg.downcast_mut::<sys::PortArg>()) {
            if number == sys::UNBIND.number {
                Self::run_hook(&self.unbind_hook, Port::new(unbind.port));
            }
        }
        let binds = [
            sys::BIND_UNBOUND_PORT.number,
            sys::BIND_INTERDOMAIN.number,
            sys::BIND_VIRQ.number,
        ];
        if let Some(port) = result.ok().and_then(|port| u32::try_from(port).ok()) {
            if binds.contains(&number) {
                Self::run_hook(&self.bind_hook, Port::new(port));
            }
        }
        result
    }

    fn run_hook(slot: &Mutex<Option<PortHook>>, port: Port) {
        // Taken out while it runs: the hook may bind or unbind as well.
        let hook = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut hook) = hook {
            hook(port);
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    fn dispatch(&self, number: c_ulong, arg: &mut dyn core::any::Any) -> Result<c_long, Errno> {
        if number == sys::BIND_UNBOUND_PORT.number {
            let _ = arg
                .downcast_mut::<sys::BindUnboundPort>()
                .ok_or(Errno::EFAULT)?;
            let mut inner = self.inner();
            let port = inner.allocate()?;
            inner.xen.insert(port, None);
            Ok(self.bind_here(&mut inner, port))
        } else if number == sys::BIND_INTERDOMAIN.number {
            let bind = arg
                .downcast_mut::<sys::BindInterdomain>()
                .ok_or(Errno::EFAULT)?;
            let mut inner = self.inner();
            let remote = bind.remote_port;
            if inner.xen.get(&remote) != Some(&None) {
                return Err(Errno::EINVAL);
            }
            let port = inner.allocate()?;
            inner.xen.insert(port, Some(remote));
            inner.xen.insert(remote, Some(port));
            let ret = self.bind_here(&mut inner, port);
            // Xen marks the new local port pending.
            self.raise(&mut inner, port);
            Ok(ret)
        } else if number == sys::BIND_VIRQ.number {
            let _ = arg.downcast_mut::<sys::BindVirq>().ok_or(Errno::EFAULT)?;
            let mut inner = self.inner();
            let port = inner.allocate()?;
            inner.xen.insert(port, None);
            Ok(self.bind_here(&mut inner, port))
        } else if number == sys::UNBIND.number {
            let port = arg
                .downcast_mut::<sys::PortArg>()
                .ok_or(Errno::EFAULT)?
                .port;
            let mut inner = self.inner();
            if inner.ports.remove(&port).is_none() {
                return Err(Errno::ENOTCONN);
            }
            // EVTCHNOP_close: the peer goes back to unbound.
            if let Some(Some(peer)) = inner.xen.remove(&port) {
                if let Some(peer) = inner.xen.get_mut(&peer) {
                    *peer = None;
                }
            }
            Ok(0)
        } else if number == sys::NOTIFY.number {
            let port = arg
                .downcast_mut::<sys::PortArg>()
                .ok_or(Errno::EFAULT)?
                .port;
            let mut inner = self.inner();
            if !inner.ports.contains_key(&port) {
                return Err(Errno::ENOTCONN);
            }
            if let Some(&Some(peer)) = inner.xen.get(&port) {
                self.raise(&mut inner, peer);
            }
            Ok(0)
        } else if number == sys::RESET.number {
            let _cons = self.cons_mutex.lock().unwrap_or_else(|e| e.into_inner());
            let mut inner = self.inner();
            inner.cons = 0;
            inner.prod = 0;
            inner.overflow = false;
            self.clear_wake();
            Ok(0)
        } else if number == sys::RESTRICT_DOMID.number {
            Ok(0)
        } else {
            Err(Errno::ENOSYS)
        }
    }

    /// `evtchn_bind_to_user`: the port starts enabled.
    fn bind_here(&self, inner: &mut Inner, port: u32) -> c_long {
        inner.ports.insert(
            port,
            Channel {
                enabled: true,
                pending: false,
            },
        );
        // Ports are below `MAX_PORT`, which any `long` holds.
        port as c_long
    }
}

impl Inner {
    /// Xen's `get_free_port`: the lowest free port.
    fn allocate(&self) -> Result<u32, Errno> {
        (FIRST_PORT..MAX_PORT)
            .find(|p| !self.xen.contains_key(p))
            .ok_or(Errno::ENOSPC)
    }
}
