//! `/dev/xen/evtchn`'s ioctls (Linux `include/uapi/xen/evtchn.h`), their
//! numbers built from the `_IOC` encoding and checked against the known values.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno as OsErrno;
use nix::libc;

/// `_IOC(dir, type, nr, size)` (asm-generic/ioctl.h, used by x86 and arm64):
/// `dir << 30 | size << 16 | type << 8 | nr`, the size in 14 bits.
const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    assert!(size < 1 << 14);
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `_IOC_NONE`: every evtchn ioctl passes its argument without a direction.
const IOC_NONE: u64 = 0;
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

/// An ioctl of the device: its name (for errors) and number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ioctl {
    pub(crate) name: &'static str,
    pub(crate) number: u64,
}

pub(crate) const BIND_VIRQ: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_BIND_VIRQ",
    number: ioc(IOC_NONE, TYPE, 0, size_of::<BindVirq>()),
};
pub(crate) const BIND_INTERDOMAIN: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_BIND_INTERDOMAIN",
    number: ioc(IOC_NONE, TYPE, 1, size_of::<BindInterdomain>()),
};
pub(crate) const BIND_UNBOUND_PORT: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
    number: ioc(IOC_NONE, TYPE, 2, size_of::<BindUnboundPort>()),
};
pub(crate) const UNBIND: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_UNBIND",
    number: ioc(IOC_NONE, TYPE, 3, size_of::<PortArg>()),
};
pub(crate) const NOTIFY: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_NOTIFY",
    number: ioc(IOC_NONE, TYPE, 4, size_of::<PortArg>()),
};
/// No argument: size 0, and the type byte kept (a macro that drops it gives 0x505: ENOSYS).
pub(crate) const RESET: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_RESET",
    number: ioc(IOC_NONE, TYPE, 5, 0),
};
pub(crate) const RESTRICT_DOMID: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_RESTRICT_DOMID",
    number: ioc(IOC_NONE, TYPE, 6, size_of::<RestrictDomid>()),
};
pub(crate) const BIND_STATIC: Ioctl = Ioctl {
    name: "IOCTL_EVTCHN_BIND_STATIC",
    number: ioc(IOC_NONE, TYPE, 7, size_of::<PortArg>()),
};

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

/// Issues `ioctl` with `arg` (or no argument), returning the non-negative result.
///
/// # Safety
///
/// `T` is the structure the kernel expects for `ioctl` (the types above, as
/// paired in this module's constants), or `()` for `RESET`.
pub(crate) unsafe fn ioctl<T>(
    fd: BorrowedFd<'_>,
    ioctl: Ioctl,
    arg: Option<&mut T>,
) -> Result<libc::c_long, OsErrno> {
    let arg: *mut T = arg.map_or(core::ptr::null_mut(), |a| a);
    // SAFETY:
    // - `fd` is open for the duration of the call (it is borrowed);
    // - `arg` is NULL (RESET takes none) or a live, writable `T` of the size
    //   encoded in the number, which `evtchn_ioctl` copies in with
    //   `copy_from_user` (the caller's contract pairs them).
    // The raw system call, as libc's `ioctl()` prototype differs between C libraries.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, fd.as_raw_fd(), ioctl.number, arg) };
    if ret < 0 {
        Err(OsErrno::last())
    } else {
        Ok(ret)
    }
}
