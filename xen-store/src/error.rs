//! The error type: the daemon's error replies as [`Errno`], the client's own refusals, and
//! protocol violations by the peer.

use alloc::string::String;

pub use xen_hypercall::Errno;

use crate::path::PathError;
use crate::wire::MsgType;

/// Why a xenstore operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The daemon answered with an `ERROR` reply naming this code (`"ENOENT"`).
    #[error("xenstore: {0}")]
    Xen(Errno),
    /// The daemon answered with an `ERROR` reply naming a code this crate does not know.
    #[error("xenstore: unknown error {0:?}")]
    UnknownErrno(String),
    /// The path is not one xenstored accepts (checked before sending).
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    /// The request's payload would exceed the limit (checked before sending): the daemon's
    /// `XENSTORE_PAYLOAD_MAX` (it drops a connection that exceeds it), or less through
    /// `/dev/xen/xenbus` (4080 bytes: the kernel buffers a message, header included, in
    /// `XENSTORE_PAYLOAD_MAX` bytes).
    #[error("request payload of {len} bytes exceeds the {max} byte limit")]
    RequestTooLong {
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An argument cannot be encoded (a NUL inside a string, an empty token).
    #[error("invalid argument: {0}")]
    InvalidInput(&'static str),
    /// The peer broke the protocol (a malformed message, a reply to no request, impossible
    /// ring indices): the connection is unusable from then on. A reply of the wrong type or
    /// with a payload this client cannot parse fails only its own request with this error.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the connection.
    #[error("connection closed by xenstore")]
    Closed,
    /// An earlier error (reported to the request that met it) broke the connection.
    #[error("connection broken by an earlier error")]
    Broken,
    /// The daemon gave up on the guest's shared ring, or the ring is being reset.
    #[error("xenstore ring: {0}")]
    RingAborted(crate::ring::RingTransportError),
    /// A transport without `std` failed.
    #[error("transport error: {0:?}")]
    Transport(embedded_io::ErrorKind),
    /// An I/O error from the operating system.
    #[cfg(feature = "std")]
    #[cfg_attr(docsrs, doc(cfg(feature = "std")))]
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A malformed message from the peer (daemon, kernel driver or ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A header announced a payload longer than `XENSTORE_PAYLOAD_MAX`.
    #[error("payload of {len} bytes exceeds XENSTORE_PAYLOAD_MAX")]
    PayloadTooLong {
        /// The announced length.
        len: usize,
    },
    /// A reply's type is neither the request's nor `ERROR`.
    #[error("reply of type {got:?} to a {expected:?} request")]
    UnexpectedType {
        /// The request's type.
        expected: MsgType,
        /// The reply's type.
        got: MsgType,
    },
    /// A reply carries a `req_id` no request in flight has.
    #[error("reply to request {req_id}, which was never sent or already answered")]
    UnknownRequest {
        /// The reply's `req_id`.
        req_id: u32,
    },
    /// A payload lacks the NUL terminator its format requires.
    #[error("a string in the payload is not NUL-terminated")]
    MissingNul,
    /// A payload does not have the format its type requires.
    #[error("malformed {0} payload")]
    Malformed(&'static str),
    /// The ring's indices are impossible (the producer is more than a ring ahead).
    #[error("impossible ring indices")]
    RingIndices,
}

/// The broad category of an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The node does not exist (`ENOENT`).
    NotFound,
    /// The caller may not do this (`EACCES`, `EPERM`).
    PermissionDenied,
    /// The node already exists (`EEXIST`).
    AlreadyExists,
    /// A transaction conflicted with another writer; run it again (`EAGAIN`).
    Conflict,
    /// The request was rejected: bad path, too long, bad argument (`EINVAL`, `E2BIG`, ...).
    InvalidInput,
    /// The peer broke the protocol.
    Protocol,
    /// The connection is closed or broken.
    Disconnected,
    /// Anything else (I/O errors, quotas, unknown codes).
    Other,
}

/// For `?` in `std` programs: an I/O error is given back as it was, the daemon's error code
/// becomes the raw OS error ([`std::io::Error::raw_os_error`]), any other error is kept whole.
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        use std::io::ErrorKind as Io;
        match e {
            Error::Io(io) => io,
            Error::Xen(errno) => Self::from_raw_os_error(errno.raw()),
            e => {
                let kind = match e.kind() {
                    ErrorKind::NotFound => Io::NotFound,
                    ErrorKind::PermissionDenied => Io::PermissionDenied,
                    ErrorKind::AlreadyExists => Io::AlreadyExists,
                    ErrorKind::Conflict => Io::ResourceBusy,
                    ErrorKind::InvalidInput => Io::InvalidInput,
                    ErrorKind::Protocol => Io::InvalidData,
                    ErrorKind::Disconnected => Io::ConnectionAborted,
                    ErrorKind::Other => Io::Other,
                };
                Self::new(kind, e)
            }
        }
    }
}

impl Error {
    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Xen(errno) => match *errno {
                Errno::ENOENT => ErrorKind::NotFound,
                Errno::EACCES | Errno::EPERM => ErrorKind::PermissionDenied,
                Errno::EEXIST => ErrorKind::AlreadyExists,
                Errno::EAGAIN => ErrorKind::Conflict,
                Errno::EINVAL | Errno::E2BIG | Errno::EISDIR | Errno::ENOTEMPTY => {
                    ErrorKind::InvalidInput
                }
                _ => ErrorKind::Other,
            },
            Self::Path(_) | Self::RequestTooLong { .. } | Self::InvalidInput(_) => {
                ErrorKind::InvalidInput
            }
            Self::Protocol(_) => ErrorKind::Protocol,
            Self::Closed | Self::Broken | Self::RingAborted(_) => ErrorKind::Disconnected,
            Self::Transport(kind) if is_disconnection(*kind) => ErrorKind::Disconnected,
            Self::UnknownErrno(_) | Self::Transport(_) => ErrorKind::Other,
            #[cfg(feature = "std")]
            Self::Io(io) if is_disconnection(embedded_io::ErrorKind::from(io.kind())) => {
                ErrorKind::Disconnected
            }
            #[cfg(feature = "std")]
            Self::Io(_) => ErrorKind::Other,
        }
    }

    /// The daemon's error code, if this is an error reply.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Xen(errno) => Some(*errno),
            _ => None,
        }
    }

    /// Decodes the payload of an `ERROR` reply (`"EAGAIN\0"`).
    pub(crate) fn from_error_reply(payload: &[u8]) -> Self {
        let name = match payload.split_last() {
            Some((0, name)) => name,
            _ => return ProtocolError::MissingNul.into(),
        };
        match errno_by_name(name) {
            Some(errno) => Self::Xen(errno),
            None => Self::UnknownErrno(String::from_utf8_lossy(name).into_owned()),
        }
    }

    /// Converts a transport's error, keeping a `std::io::Error` as it is.
    pub(crate) fn transport<E: embedded_io::Error + 'static>(error: E) -> Self {
        let kind = error.kind();
        use crate::ring::RingTransportError;
        match (&error as &dyn core::any::Any).downcast_ref::<RingTransportError>() {
            Some(RingTransportError::Ring(_)) => return ProtocolError::RingIndices.into(),
            Some(e @ (RingTransportError::Daemon(_) | RingTransportError::Reconnecting)) => {
                return Self::RingAborted(*e);
            }
            _ => {}
        }
        #[cfg(feature = "std")]
        {
            let boxed: alloc::boxed::Box<dyn core::any::Any> = alloc::boxed::Box::new(error);
            if let Ok(io) = boxed.downcast::<std::io::Error>() {
                return Self::Io(*io);
            }
        }
        #[cfg(not(feature = "std"))]
        drop(error);
        Self::Transport(kind)
    }

    /// A copy for the other requests of a connection this error broke.
    pub(crate) fn for_others(&self) -> Self {
        match self {
            Self::Protocol(p) => Self::Protocol(*p),
            Self::RingAborted(e) => Self::RingAborted(*e),
            Self::Closed => Self::Closed,
            _ => Self::Broken,
        }
    }
}

/// Whether a transport failed because the peer went away: a daemon that died resets its
/// sockets, so a blocked client meets these rather than an end of stream.
fn is_disconnection(kind: embedded_io::ErrorKind) -> bool {
    use embedded_io::ErrorKind as K;
    matches!(
        kind,
        K::BrokenPipe | K::ConnectionReset | K::ConnectionAborted | K::NotConnected
    )
}

/// The [`Errno`] whose C name (without `XEN_`) is `name`: xenstored names the codes of
/// `xs_wire.h`'s `xsd_errors` table, all of which are in Xen's `errno.h`.
fn errno_by_name(name: &[u8]) -> Option<Errno> {
    (1..=200)
        .map(Errno::from_raw)
        .find(|errno| errno.name().is_some_and(|n| n.as_bytes() == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_become_errno() {
        for (text, errno) in [
            (&b"ENOENT\0"[..], Errno::ENOENT),
            (b"EACCES\0", Errno::EACCES),
            (b"EAGAIN\0", Errno::EAGAIN),
            (b"E2BIG\0", Errno::E2BIG),
            (b"EISCONN\0", Errno::EISCONN),
            (b"EPERM\0", Errno::EPERM),
        ] {
            let error = Error::from_error_reply(text);
            assert_eq!(error.errno(), Some(errno), "{text:?}");
        }
        assert_eq!(
            Error::from_error_reply(b"EAGAIN\0").kind(),
            ErrorKind::Conflict
        );
        assert!(matches!(
            Error::from_error_reply(b"EWHATEVER\0"),
            Error::UnknownErrno(name) if name == "EWHATEVER"
        ));
        assert!(matches!(
            Error::from_error_reply(b"ENOENT"),
            Error::Protocol(ProtocolError::MissingNul)
        ));
        assert!(matches!(
            Error::from_error_reply(b""),
            Error::Protocol(ProtocolError::MissingNul)
        ));
    }

    #[test]
    fn a_peer_gone_is_disconnected_whatever_the_transport() {
        use embedded_io::ErrorKind as K;
        for kind in [
            K::BrokenPipe,
            K::ConnectionReset,
            K::ConnectionAborted,
            K::NotConnected,
        ] {
            assert_eq!(
                Error::Transport(kind).kind(),
                ErrorKind::Disconnected,
                "{kind:?}"
            );
        }
        assert_eq!(Error::Transport(K::Other).kind(), ErrorKind::Other);
        #[cfg(feature = "std")]
        {
            use std::io::{Error as IoError, ErrorKind as IoKind};
            for kind in [
                IoKind::BrokenPipe,
                IoKind::ConnectionReset,
                IoKind::NotConnected,
            ] {
                let error = Error::Io(IoError::from(kind));
                assert_eq!(error.kind(), ErrorKind::Disconnected, "{kind:?}");
            }
            let error = Error::Io(IoError::from(IoKind::PermissionDenied));
            assert_eq!(error.kind(), ErrorKind::Other);
        }
    }
}
