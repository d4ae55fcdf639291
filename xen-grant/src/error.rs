//! The errors of this crate.

use xen_hypercall::DomId;
#[cfg(feature = "linux")]
use xen_hypercall::Errno;
use xen_hypercall::grant_table::{GrantRef, GrantStatus};

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hypercall failed, or Xen refused a grant operation
    /// ([`xen_hypercall::Error::Grant`] holds its `GNTST_*` status).
    #[error(transparent)]
    Xen(#[from] xen_hypercall::Error),
    /// Every reference of the table is in use.
    #[error("no free grant reference among the table's {entries} entries")]
    NoFreeReference {
        /// The table's size.
        entries: u32,
    },
    /// The frame does not fit a version-1 grant entry (32 bits).
    #[error("frame {0:#x} does not fit a version-1 grant entry")]
    FrameTooLarge(u64),
    /// Access can only be granted to a domain (not `DOMID_SELF` or another reserved id).
    #[error("{0} is not a domain access can be granted to")]
    BadDomain(DomId),
    /// A domain cannot map a grant of its own: Xen would take the frame out
    /// of the physmap where it lives (x86 HVM and PVH).
    #[error("{0} is this domain: a domain does not map its own grants")]
    OwnDomain(DomId),
    /// The other domain still has the page mapped, or is copying it: ending
    /// the access now would let it write a page this domain reuses.
    #[error("{0} is still mapped (or being copied) by the other domain")]
    StillInUse(GrantRef),
    /// Xen refused copy number `index` of a batch.
    #[error("grant copy {index} refused: {status}")]
    Copy {
        /// The copy's index in the caller's batch.
        index: usize,
        /// Xen's status for it.
        status: GrantStatus,
    },
    /// An argument was rejected before anything was done.
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
    /// A Linux device call failed.
    #[cfg(feature = "linux")]
    #[cfg_attr(docsrs, doc(cfg(feature = "linux")))]
    #[error("{operation} failed: {errno}")]
    Os {
        /// What was being done, e.g. `"open /dev/xen/gntdev"`.
        operation: &'static str,
        /// The OS error.
        errno: Errno,
    },
    /// Xen refused to map a grant (gntdev reports it when the pages are
    /// mapped into the process): a wrong, revoked or read-only reference, or
    /// a domain that did not grant it to this one.
    #[cfg(feature = "linux")]
    #[cfg_attr(docsrs, doc(cfg(feature = "linux")))]
    #[error("mapping {gref} of domain {domid} failed: {errno}")]
    MapRefused {
        /// The granting domain.
        domid: DomId,
        /// The first reference of the mapping.
        gref: GrantRef,
        /// What gntdev's mmap returned.
        errno: Errno,
    },
}

/// For `?` in `std` programs: an OS error keeps its `errno` as the raw OS error
/// ([`std::io::Error::raw_os_error`]), a hypercall's error converts as
/// [`xen_hypercall::Error`]'s does, any other is kept whole.
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Xen(e) => e.into(),
            #[cfg(feature = "linux")]
            Error::Os { errno, .. } | Error::MapRefused { errno, .. } => {
                Self::from_raw_os_error(errno.raw())
            }
            e => Self::new(e.kind().into(), e),
        }
    }
}

/// A Linux errno as this crate's errors hold it (the numbers are Xen's, see [`Errno`]).
#[cfg(feature = "linux")]
pub(crate) fn os_errno(errno: nix::errno::Errno) -> Errno {
    Errno::from_raw(errno as i32)
}

impl Error {
    /// The broad category of this error.
    pub fn kind(&self) -> xen_hypercall::ErrorKind {
        use xen_hypercall::ErrorKind;
        match self {
            Self::Xen(error) => error.kind(),
            Self::NoFreeReference { .. } => ErrorKind::OutOfMemory,
            Self::FrameTooLarge(_)
            | Self::BadDomain(_)
            | Self::OwnDomain(_)
            | Self::InvalidInput(_) => ErrorKind::InvalidInput,
            Self::StillInUse(_) => ErrorKind::Busy,
            Self::Copy { status, .. } => status.kind(),
            #[cfg(feature = "linux")]
            Self::Os { errno, .. } => errno.kind(),
            #[cfg(feature = "linux")]
            Self::MapRefused { .. } => ErrorKind::PermissionDenied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "linux")]
    #[test]
    fn os_errors_print_the_errno_name_and_keep_it_in_io() {
        let e = Error::Os {
            operation: "IOCTL_GNTALLOC_ALLOC_GREF",
            errno: Errno::ENOSPC,
        };
        assert_eq!(
            e.to_string(),
            "IOCTL_GNTALLOC_ALLOC_GREF failed: no space left on device (ENOSPC)"
        );
        assert_eq!(std::io::Error::from(e).raw_os_error(), Some(28));
    }

    #[cfg(feature = "std")]
    #[test]
    fn io_errors_keep_xens_code() {
        let e = Error::Xen(xen_hypercall::Errno::EPERM.into());
        assert_eq!(std::io::Error::from(e).raw_os_error(), Some(1));
        let io = std::io::Error::from(Error::StillInUse(GrantRef(3)));
        assert_eq!(io.kind(), std::io::ErrorKind::ResourceBusy);
    }
}
