//! The one error type of the hypercall layer.

use core::fmt;

/// An error code returned by Xen: the positive `XEN_E*` value of `public/errno.h`.
///
/// Xen took its codes from Linux, so they are Linux's `errno` values too: this type also names
/// the OS errors of the Linux backends ([`Error::Os`]), and prints every code the same way,
/// `permission denied (EACCES)`.
///
/// Xen returns `-XEN_Exxx` from a failing hypercall. This is a newtype, not an
/// enum, because the value comes from the hypervisor: a code this crate does not
/// know is still representable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(i32);

macro_rules! errno_table {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl Errno {
            $(
                #[doc = concat!("`XEN_", stringify!($name), "`: ", $text, ".")]
                pub const $name: Self = Self($value);
            )*

            /// The C name of this code without its `XEN_` prefix (`"EPERM"`), if known.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// What this code means, in words (`"operation not permitted"`), if known.
            pub const fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

// The codes of Xen 4.17's `public/errno.h`. Aliases (EWOULDBLOCK = EAGAIN,
// EDEADLOCK = EDEADLK) are separate consts below so that `name()` stays unique.
errno_table! {
    EPERM = 1, "operation not permitted";
    ENOENT = 2, "no such file or directory";
    ESRCH = 3, "no such process or domain";
    EINTR = 4, "interrupted system call";
    EIO = 5, "I/O error";
    ENXIO = 6, "no such device or address";
    E2BIG = 7, "argument list too long";
    ENOEXEC = 8, "exec format error";
    EBADF = 9, "bad file number";
    ECHILD = 10, "no child processes";
    EAGAIN = 11, "try again";
    ENOMEM = 12, "out of memory";
    EACCES = 13, "permission denied";
    EFAULT = 14, "bad address";
    EBUSY = 16, "device or resource busy";
    EEXIST = 17, "already exists";
    EXDEV = 18, "cross-device link";
    ENODEV = 19, "no such device";
    ENOTDIR = 20, "not a directory";
    EISDIR = 21, "is a directory";
    EINVAL = 22, "invalid argument";
    ENFILE = 23, "file table overflow";
    EMFILE = 24, "too many open files";
    ENOSPC = 28, "no space left on device";
    EROFS = 30, "read-only file system";
    EMLINK = 31, "too many links";
    EDOM = 33, "math argument out of domain of function";
    ERANGE = 34, "math result not representable";
    EDEADLK = 35, "resource deadlock would occur";
    ENAMETOOLONG = 36, "file name too long";
    ENOLCK = 37, "no record locks available";
    ENOSYS = 38, "function not implemented";
    ENOTEMPTY = 39, "directory not empty";
    ENODATA = 61, "no data available";
    ETIME = 62, "timer expired";
    EBADMSG = 74, "not a data message";
    EOVERFLOW = 75, "value too large for defined data type";
    EILSEQ = 84, "illegal byte sequence";
    ERESTART = 85, "interrupted system call should be restarted";
    ENOTSOCK = 88, "socket operation on non-socket";
    EMSGSIZE = 90, "message too large";
    EOPNOTSUPP = 95, "operation not supported";
    EADDRINUSE = 98, "address already in use";
    EADDRNOTAVAIL = 99, "cannot assign requested address";
    ENOBUFS = 105, "no buffer space available";
    EISCONN = 106, "transport endpoint is already connected";
    ENOTCONN = 107, "transport endpoint is not connected";
    ETIMEDOUT = 110, "connection timed out";
    ECONNREFUSED = 111, "connection refused";
}

impl Errno {
    /// `XEN_EWOULDBLOCK`, an alias of [`Errno::EAGAIN`].
    pub const EWOULDBLOCK: Self = Self::EAGAIN;
    /// `XEN_EDEADLOCK`, an alias of [`Errno::EDEADLK`].
    pub const EDEADLOCK: Self = Self::EDEADLK;

    /// Wraps a positive error code.
    pub const fn from_raw(code: i32) -> Self {
        Self(code)
    }

    /// The positive error code.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The broad category of this code, Xen's or the OS's (where Linux's devices return codes
    /// Xen's header lacks, they are placed too: `ENOTTY`, `EFBIG`).
    pub const fn kind(self) -> ErrorKind {
        /// Linux's `ENOTTY`: the ioctl is unknown to this kernel.
        const ENOTTY: Errno = Errno(25);
        /// Linux's `EFBIG`: e.g. the event-channel device's ring overflowed.
        const EFBIG: Errno = Errno(27);
        match self {
            Self::EPERM | Self::EACCES => ErrorKind::PermissionDenied,
            // ENOTCONN: e.g. a port not bound through the event-channel device.
            Self::ENOENT
            | Self::ESRCH
            | Self::ENXIO
            | Self::ENODEV
            | Self::ENODATA
            | Self::ENOTCONN => ErrorKind::NotFound,
            Self::EINVAL
            | Self::EBADF
            | Self::E2BIG
            | Self::EFAULT
            | Self::EDOM
            | Self::ERANGE
            | Self::ENAMETOOLONG
            | Self::EOVERFLOW
            | Self::EMSGSIZE
            | Self::EILSEQ
            | EFBIG => ErrorKind::InvalidInput,
            Self::ENOSYS | Self::EOPNOTSUPP | ENOTTY => ErrorKind::Unsupported,
            Self::ENOMEM | Self::ENOSPC | Self::ENOBUFS | Self::ENFILE | Self::EMFILE => {
                ErrorKind::OutOfMemory
            }
            Self::EAGAIN => ErrorKind::WouldBlock,
            Self::EBUSY | Self::EDEADLK => ErrorKind::Busy,
            Self::EEXIST | Self::EISCONN | Self::EADDRINUSE => ErrorKind::AlreadyExists,
            Self::ETIME | Self::ETIMEDOUT => ErrorKind::TimedOut,
            Self::EINTR | Self::ERESTART => ErrorKind::Interrupted,
            _ => ErrorKind::Other,
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "XEN_{name}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.description(), self.name()) {
            (Some(text), Some(name)) => write!(f, "{text} ({name})"),
            _ => write!(f, "error code {}", self.0),
        }
    }
}

/// The broad category of an [`Error`], for code that reacts to failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller may not do this (`EPERM`, `EACCES`, a restricted or unopenable device).
    PermissionDenied,
    /// The domain, port, object or data does not exist.
    NotFound,
    /// An argument was rejected.
    InvalidInput,
    /// The operation is not implemented here (`ENOSYS`, `EOPNOTSUPP`).
    Unsupported,
    /// Memory or another resource ran out.
    OutOfMemory,
    /// Nothing is ready yet; try again (`EAGAIN`).
    WouldBlock,
    /// The resource is in use.
    Busy,
    /// The object already exists or is already connected.
    AlreadyExists,
    /// A timer expired.
    TimedOut,
    /// The operation was interrupted and may be retried.
    Interrupted,
    /// The program does not run on Xen, or the Xen interface is not available.
    NotOnXen,
    /// Anything else.
    Other,
}

/// Why a hypercall or a hypercall interface failed.
///
/// Usable without `std`. [`Error::kind`] gives the broad category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The hypervisor refused the request with this code.
    #[error("the Xen hypervisor refused the request: {0}")]
    Xen(Errno),
    /// The hypervisor refused one grant operation with this status
    /// (`GNTST_*`, written into the operation, not returned).
    #[error("the Xen hypervisor refused the grant operation: {0}")]
    Grant(crate::grant_table::GrantStatus),
    /// The program does not run on Xen.
    #[error("not running on the Xen hypervisor ({0})")]
    NotOnXen(&'static str),
    /// A Xen device node is missing because its kernel module is not loaded.
    #[error("{device} is missing: load the {module} kernel module (`modprobe {module}`)")]
    DriverNotLoaded {
        /// The device node, e.g. `/dev/xen/privcmd`.
        device: &'static str,
        /// The Linux module that provides it, e.g. `xen-privcmd`.
        module: &'static str,
    },
    /// The OS refused access to a Xen device.
    #[error(
        "permission denied opening {device}: run as root or give this user read-write access to it"
    )]
    PermissionDenied {
        /// The device node.
        device: &'static str,
    },
    /// The request was refused because the interface is restricted to one domain.
    #[error(
        "the hypercall was refused because this interface is restricted to domain {domid} \
         (privcmd restriction, see XSA-482): only operations on that domain are allowed"
    )]
    Restricted {
        /// The domain the interface is restricted to.
        domid: u16,
    },
    /// Linux refuses every hypercall on this privcmd device by itself: in a domU, privcmd
    /// restricts each fd to the domU's device-model target, or to no domain when it has none
    /// (XSA-482), unless `xen-privcmd` was loaded with `unrestricted=1`.
    #[error(
        "Linux refuses hypercalls on this privcmd device: in a domU it is restricted to the \
         domain's device-model target (XSA-482); load xen-privcmd with unrestricted=1 on a \
         kernel that is not locked down"
    )]
    RestrictedByKernel,
    /// An operating-system call failed with this `errno`.
    #[error("{operation} failed: {errno}")]
    Os {
        /// What was being done, e.g. `"mmap of /dev/xen/hypercall"`.
        operation: &'static str,
        /// The OS's `errno` (Linux's numbers are Xen's, see [`Errno`]).
        errno: Errno,
    },
    /// Memory that Xen may access could not be obtained.
    #[error("could not allocate a {bytes}-byte hypercall buffer")]
    OutOfMemory {
        /// The size that was asked for.
        bytes: usize,
    },
    /// An argument was rejected before any hypercall was made.
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
    /// The backend cannot perform this operation in this environment.
    #[error("not supported by this hypercall interface: {0}")]
    Unsupported(&'static str),
}

impl Error {
    /// The broad category of this error.
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Self::Xen(errno) => errno.kind(),
            Self::Grant(status) => status.kind(),
            Self::NotOnXen(_) | Self::DriverNotLoaded { .. } => ErrorKind::NotOnXen,
            Self::PermissionDenied { .. } | Self::Restricted { .. } | Self::RestrictedByKernel => {
                ErrorKind::PermissionDenied
            }
            Self::Os { errno, .. } => errno.kind(),
            Self::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            Self::InvalidInput(_) => ErrorKind::InvalidInput,
            Self::Unsupported(_) => ErrorKind::Unsupported,
        }
    }

    /// The Xen error code, if the hypervisor refused the request.
    pub const fn errno(&self) -> Option<Errno> {
        match self {
            Self::Xen(errno) => Some(*errno),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl From<ErrorKind> for std::io::ErrorKind {
    fn from(kind: ErrorKind) -> Self {
        use std::io::ErrorKind as Io;
        match kind {
            ErrorKind::PermissionDenied => Io::PermissionDenied,
            ErrorKind::NotFound => Io::NotFound,
            ErrorKind::InvalidInput => Io::InvalidInput,
            ErrorKind::Unsupported | ErrorKind::NotOnXen => Io::Unsupported,
            ErrorKind::OutOfMemory => Io::OutOfMemory,
            ErrorKind::WouldBlock => Io::WouldBlock,
            ErrorKind::Busy => Io::ResourceBusy,
            ErrorKind::AlreadyExists => Io::AlreadyExists,
            ErrorKind::TimedOut => Io::TimedOut,
            ErrorKind::Interrupted => Io::Interrupted,
            ErrorKind::Other => Io::Other,
        }
    }
}

/// For `?` in `std` programs. An errno, the OS's or Xen's (the same numbers, see [`Errno`]),
/// stays the raw OS error ([`std::io::Error::raw_os_error`]); any other error is kept whole,
/// with the [`std::io::ErrorKind`] of its [`Error::kind`].
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Xen(errno) => Self::from_raw_os_error(errno.raw()),
            Error::Os { errno, .. } => Self::from_raw_os_error(errno.raw()),
            e => Self::new(e.kind().into(), e),
        }
    }
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Self {
        Self::Xen(errno)
    }
}

/// Decodes a hypercall's raw return value, a C `long`.
///
/// Xen returns `-XEN_Exxx` on failure; any other value is the result (`memory_op`
/// may return more than 31 bits). Error codes occupy `-4095..=-1`, as on Linux.
///
/// # Errors
///
/// [`Error::Xen`] with the [`Errno`] for a value in `-4095..=-1`.
pub const fn decode_result(ret: isize) -> Result<usize, Error> {
    if ret < 0 && ret >= -4095 {
        Err(Error::Xen(Errno(-ret as i32)))
    } else {
        Ok(ret as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn errnos_print_their_names() {
        assert_eq!(Errno::EACCES.to_string(), "permission denied (EACCES)");
        assert_eq!(Errno::from_raw(4000).to_string(), "error code 4000");
        let os = Error::Os {
            operation: "IOCTL_PRIVCMD_HYPERCALL",
            errno: Errno::EACCES,
        };
        assert_eq!(
            os.to_string(),
            "IOCTL_PRIVCMD_HYPERCALL failed: permission denied (EACCES)"
        );
    }

    #[test]
    fn os_errors_have_their_errnos_kind() {
        let os = |errno| Error::Os {
            operation: "ioctl",
            errno: Errno::from_raw(errno),
        };
        assert_eq!(os(13).kind(), ErrorKind::PermissionDenied);
        assert_eq!(os(107).kind(), ErrorKind::NotFound); // ENOTCONN
        assert_eq!(os(25).kind(), ErrorKind::Unsupported); // ENOTTY
        assert_eq!(os(27).kind(), ErrorKind::InvalidInput); // EFBIG
        assert_eq!(os(4000).kind(), ErrorKind::Other);
    }

    #[cfg(feature = "std")]
    #[test]
    fn io_errors_keep_the_errno() {
        let io = std::io::Error::from(Error::Xen(Errno::ENOSPC));
        assert_eq!(io.raw_os_error(), Some(28));
        let os = Error::Os {
            operation: "mmap",
            errno: Errno::ENOMEM,
        };
        assert_eq!(std::io::Error::from(os).raw_os_error(), Some(12));
        let io = std::io::Error::from(Error::InvalidInput("bad"));
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(io.raw_os_error(), None);
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<Error>());
        assert_eq!(inner, Some(&Error::InvalidInput("bad")));
    }

    #[test]
    fn only_the_error_range_decodes_as_an_error() {
        assert_eq!(decode_result(-1), Err(Error::Xen(Errno::EPERM)));
        assert_eq!(decode_result(-4095), Err(Error::Xen(Errno(4095))));
        assert_eq!(decode_result(0), Ok(0));
        // Below the error range a negative `long` is a value, as the trait says.
        assert_eq!(decode_result(-4096), Ok((-4096isize) as usize));
        assert_eq!(decode_result(isize::MIN), Ok(isize::MIN as usize));
    }
}
