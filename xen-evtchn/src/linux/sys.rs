//! `/dev/xen/evtchn`'s ioctls (Linux `include/uapi/xen/evtchn.h`), their
//! numbers built from the `_IOC` encoding and checked against the known values.

use core::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno as OsErrno;
use nix::libc;

/// The ioctl type of `/dev/xen/evtchn`.
const TYPE: u8 = b'E';

/// `struct ioctl_evtchn_bind_virq`.
#[repr(C)]
pub(crate) struct BindVirq {
    pub(crate) virq: u32,
}
/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
pub(crate) struct BindInterdomain {
    pub(crate) remote_domain: u32,
    pub(crate) remote_port: u32,
}
/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
pub(crate) struct BindUnboundPort {
    pub(crate) remote_domain: u32,
}
/// `struct ioctl_evtchn_unbind`, `ioctl_evtchn_notify` and `ioctl_evtchn_bind`
/// (each one `unsigned int port`).
#[repr(C)]
pub(crate) struct PortArg {
    pub(crate) port: u32,
}
/// `struct ioctl_evtchn_restrict_domid`.
#[repr(C)]
pub(crate) struct RestrictDomid {
    pub(crate) domid: u16,
}

/// An ioctl of the device: its name (for errors), its number, and (as `T`) the
/// structure it takes, so that [`ioctl`] cannot be handed another one.
pub(crate) struct Ioctl<T> {
    pub(crate) name: &'static str,
    pub(crate) number: libc::c_ulong,
    arg: PhantomData<fn(&mut T)>,
}

impl<T> Ioctl<T> {
    /// `_IOC(_IOC_NONE, 'E', nr, sizeof(T))`, as Linux's header defines each one.
    const fn new(name: &'static str, nr: u8) -> Self {
        Self {
            name,
            number: xen_hypercall::ioctl::ioc_none(TYPE, nr, size_of::<T>()),
            arg: PhantomData,
        }
    }
}

pub(crate) const BIND_VIRQ: Ioctl<BindVirq> = Ioctl::new("IOCTL_EVTCHN_BIND_VIRQ", 0);
pub(crate) const BIND_INTERDOMAIN: Ioctl<BindInterdomain> =
    Ioctl::new("IOCTL_EVTCHN_BIND_INTERDOMAIN", 1);
pub(crate) const BIND_UNBOUND_PORT: Ioctl<BindUnboundPort> =
    Ioctl::new("IOCTL_EVTCHN_BIND_UNBOUND_PORT", 2);
pub(crate) const UNBIND: Ioctl<PortArg> = Ioctl::new("IOCTL_EVTCHN_UNBIND", 3);
pub(crate) const NOTIFY: Ioctl<PortArg> = Ioctl::new("IOCTL_EVTCHN_NOTIFY", 4);
/// No argument: size 0, and the type byte kept (a macro that drops it gives 0x505: ENOSYS).
pub(crate) const RESET: Ioctl<()> = Ioctl::new("IOCTL_EVTCHN_RESET", 5);
pub(crate) const RESTRICT_DOMID: Ioctl<RestrictDomid> =
    Ioctl::new("IOCTL_EVTCHN_RESTRICT_DOMID", 6);
pub(crate) const BIND_STATIC: Ioctl<PortArg> = Ioctl::new("IOCTL_EVTCHN_BIND_STATIC", 7);

// The numbers as Linux's header expands them (existing crates shipped
// BIND_UNBOUND_PORT and UNBIND swapped, and RESET without its type byte).
const _: () = {
    assert!(BIND_VIRQ.number == 0x0004_4500);
    assert!(BIND_INTERDOMAIN.number == 0x0008_4501);
    assert!(BIND_UNBOUND_PORT.number == 0x0004_4502);
    assert!(UNBIND.number == 0x0004_4503);
    assert!(NOTIFY.number == 0x0004_4504);
    assert!(RESET.number == 0x0000_4505);
    assert!(RESTRICT_DOMID.number == 0x0002_4506);
    assert!(BIND_STATIC.number == 0x0004_4507);
};

/// Issues `ioctl` with `arg` (no argument for `RESET`, whose `T` is `()`),
/// returning the non-negative result.
pub(crate) fn ioctl<T>(
    fd: BorrowedFd<'_>,
    ioctl: &Ioctl<T>,
    arg: &mut T,
) -> Result<libc::c_long, OsErrno> {
    let arg: *mut T = if size_of::<T>() == 0 {
        core::ptr::null_mut()
    } else {
        arg
    };
    // SAFETY:
    // - `fd` is open for the duration of the call (it is borrowed);
    // - `ioctl` is one of this module's constants, each of which pairs its
    //   number with the structure Linux's `include/uapi/xen/evtchn.h` names for
    //   it (numbers asserted above), so `arg` is a live, writable structure of
    //   the size the number encodes, which `evtchn_ioctl` (drivers/xen/evtchn.c)
    //   copies in with `copy_from_user` and never keeps; RESET, the one without
    //   an argument, gets NULL and reads none.
    // The raw system call, as libc's `ioctl()` prototype differs between C libraries.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), ioctl.number, arg) };
    if ret < 0 {
        Err(OsErrno::last())
    } else {
        Ok(ret)
    }
}
