//! The ioctl numbers of Linux's Xen drivers, for the Linux backends of this family
//! (`/dev/xen/privcmd`, `/dev/xen/evtchn`, `/dev/xen/gntdev`, `/dev/xen/gntalloc`).

use core::ffi::c_ulong;

/// `_IOC(_IOC_NONE, ty, nr, size)` (`asm-generic/ioctl.h`, as x86 and arm64 use it):
/// `size << 16 | ty << 8 | nr`, the size in 14 bits.
///
/// Linux's Xen drivers define every ioctl this way: no direction, but the argument's size
/// (its padding included) is part of the number, so a wrong structure gives a number the
/// driver rejects. Fails to compile (in a `const`) for a size past 14 bits.
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> c_ulong {
    assert!(size < 1 << 14, "an ioctl argument's size has 14 bits");
    ((size as c_ulong) << 16) | ((ty as c_ulong) << 8) | nr as c_ulong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_linux_headers_expand_them() {
        // IOCTL_PRIVCMD_HYPERCALL: 'P', 0, sizeof(struct privcmd_hypercall) = 48.
        assert_eq!(ioc_none(b'P', 0, 48), 0x0030_5000);
        // IOCTL_EVTCHN_RESET: 'E', 5, size 0 (the type byte stays).
        assert_eq!(ioc_none(b'E', 5, 0), 0x0000_4505);
        // IOCTL_GNTALLOC_ALLOC_GREF: 'G', 5, sizeof(struct ioctl_gntalloc_alloc_gref) = 24.
        assert_eq!(ioc_none(b'G', 5, 24), 0x0018_4705);
    }
}
