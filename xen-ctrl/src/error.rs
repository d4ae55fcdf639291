//! The error of domain control.

use xen_hypercall::{DomId, Errno};

use crate::InterfaceKind;

/// Why a domain control operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The domain does not exist (Xen's `ESRCH`).
    #[error("no domain {0}")]
    NoSuchDomain(DomId),
    /// Xen's security policy refused the caller: `EPERM` (the default policy lets only the
    /// control domain through), or `EACCES` from an XSM (FLASK) policy. Never a version
    /// mismatch: the interface version was proven first.
    #[error("Xen's security policy denied the operation: {0}")]
    Denied(Errno),
    /// The running Xen speaks none of the interface versions this crate knows
    /// ([`KNOWN_DOMCTL_VERSIONS`](crate::KNOWN_DOMCTL_VERSIONS)).
    #[error("the running Xen speaks no {0} interface version this crate knows")]
    UnknownInterface(InterfaceKind),
    /// Xen refused the request with this code (e.g. `EINVAL` for pausing oneself or
    /// unpausing a domain that is not paused).
    #[error("the Xen hypervisor refused the request: {0}")]
    Xen(Errno),
    /// The hypercall backend failed before reaching Xen (a device, a buffer).
    #[error(transparent)]
    Hypercall(xen_hypercall::Error),
}

/// For `?` in `std` programs: Xen's code stays the raw OS error
/// ([`std::io::Error::raw_os_error`]), a backend's error converts as
/// [`xen_hypercall::Error`]'s does, any other is kept whole.
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Denied(errno) | Error::Xen(errno) => Self::from_raw_os_error(errno.raw()),
            Error::Hypercall(e) => e.into(),
            e => Self::new(e.kind().into(), e),
        }
    }
}

impl Error {
    /// The broad category of this error.
    pub fn kind(&self) -> xen_hypercall::ErrorKind {
        use xen_hypercall::ErrorKind;
        match self {
            Self::NoSuchDomain(_) => ErrorKind::NotFound,
            Self::Denied(_) => ErrorKind::PermissionDenied,
            Self::UnknownInterface(_) => ErrorKind::Unsupported,
            Self::Xen(errno) => errno.kind(),
            Self::Hypercall(error) => error.kind(),
        }
    }

    /// An error of a hypercall whose interface version was proven, about domain `domid` when
    /// it names one: `ESRCH` is [`Error::NoSuchDomain`], `EPERM` and `EACCES` are
    /// [`Error::Denied`].
    pub(crate) fn from_proven(error: xen_hypercall::Error, domid: Option<DomId>) -> Self {
        match (error, domid) {
            (xen_hypercall::Error::Xen(Errno::ESRCH), Some(domid)) => Self::NoSuchDomain(domid),
            (xen_hypercall::Error::Xen(errno @ (Errno::EPERM | Errno::EACCES)), _) => {
                Self::Denied(errno)
            }
            (xen_hypercall::Error::Xen(errno), _) => Self::Xen(errno),
            (other, _) => Self::Hypercall(other),
        }
    }
}
