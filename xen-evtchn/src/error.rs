//! The one error type of every event-channel backend.

use xen_hypercall::{Errno, ErrorKind, Port};

/// Why an event-channel operation failed. [`Error::kind`] gives the broad category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hypercall failed (the freestanding backend), with Xen's code.
    #[error(transparent)]
    Hypercall(#[from] xen_hypercall::Error),
    /// A system call on the event-channel device failed with this `errno`.
    #[error("{operation} on the event-channel device failed: {errno}")]
    Os {
        /// What was being done, e.g. `"IOCTL_EVTCHN_NOTIFY"`.
        operation: &'static str,
        /// The OS's `errno`.
        errno: Errno,
    },
    /// The event-channel device is missing: not on Xen, or the module is not loaded.
    #[error("{device} is missing: load the xen-evtchn kernel module (`modprobe xen-evtchn`)")]
    DeviceMissing {
        /// The device node.
        device: &'static str,
    },
    /// The OS refused to open the event-channel device.
    #[error("permission denied opening {device}: run as root or give this user access to it")]
    PermissionDenied {
        /// The device node.
        device: &'static str,
    },
    /// The port is beyond what the event-channel ABI can name (the 2-level
    /// ABI has 4096 ports on 64-bit guests).
    #[error("{0} is beyond the event-channel ABI's ports")]
    PortOutOfRange(Port),
    /// The port was not bound through this handle.
    #[error("{0} is not bound through this event-channel handle")]
    NotBound(Port),
    /// Every waiter slot of the handle is in use.
    #[error("all {0} waiter slots of this event-channel handle are in use")]
    TooManyWaiters(usize),
    /// A wait could never end: no port of the handle is armed (each one was
    /// reported and not yet unmasked, or none is bound).
    #[error("nothing to wait for: no port of this event-channel handle is armed")]
    NothingToWaitFor,
    /// The operation is not available with this backend or kernel.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

impl Error {
    /// The broad category of this error.
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Self::Hypercall(e) => e.kind(),
            Self::Os { errno, .. } => errno.kind(),
            Self::DeviceMissing { .. } => ErrorKind::NotOnXen,
            Self::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Self::PortOutOfRange(_) | Self::NotBound(_) | Self::NothingToWaitFor => {
                ErrorKind::InvalidInput
            }
            Self::TooManyWaiters(_) => ErrorKind::OutOfMemory,
            Self::Unsupported(_) => ErrorKind::Unsupported,
        }
    }

    /// The OS `errno`, for a failed system call.
    pub const fn os_errno(&self) -> Option<Errno> {
        match self {
            Self::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// For `?` in `std` programs: an OS error keeps its `errno` as the raw OS error
/// ([`std::io::Error::raw_os_error`]), a hypercall's error converts as
/// [`xen_hypercall::Error`]'s does, any other is kept whole.
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Hypercall(e) => e.into(),
            Error::Os { errno, .. } => Self::from_raw_os_error(errno.raw()),
            e => Self::new(e.kind().into(), e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn os_errors_print_the_errno_name() {
        let e = Error::Os {
            operation: "IOCTL_EVTCHN_RESTRICT_DOMID",
            errno: Errno::EACCES,
        };
        assert_eq!(
            e.to_string(),
            "IOCTL_EVTCHN_RESTRICT_DOMID on the event-channel device failed: permission denied (EACCES)"
        );
    }

    #[cfg(feature = "std")]
    #[test]
    fn io_errors_keep_the_errno() {
        let os = Error::Os {
            operation: "poll",
            errno: Errno::EINTR,
        };
        assert_eq!(std::io::Error::from(os).raw_os_error(), Some(4));
        let xen = Error::Hypercall(xen_hypercall::Errno::ESRCH.into());
        assert_eq!(std::io::Error::from(xen).raw_os_error(), Some(3));
        let io = std::io::Error::from(Error::NotBound(Port(7)));
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    }
}
