//! The Linux transports: the daemon's Unix socket (dom0, or wherever xenstored runs) and the
//! kernel's `/dev/xen/xenbus` (any domain running Linux, through the kernel's own ring).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::store::Client;

/// The daemon's socket (`XENSTORED_PATH` overrides it, as for libxenstore).
pub const SOCKET_PATH: &str = "/var/run/xenstored/socket";
/// The kernel's xenstore device.
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";

/// Where the daemon's socket is: `XENSTORED_PATH`, or [`SOCKET_PATH`].
pub(crate) fn socket_path() -> PathBuf {
    std::env::var_os("XENSTORED_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| SOCKET_PATH.into())
}

/// A byte stream to xenstore from Linux userland.
///
/// Through `/dev/xen/xenbus` the kernel forwards requests over its own ring: it buffers a
/// partly written message until it is whole, answers `WATCH`/`UNWATCH` itself, and ends the
/// fd's open transactions when it is closed. It takes one message per `write` (Linux drops
/// whatever follows the first message in a write), so writes to it stop after the first
/// message of the buffer.
#[derive(Debug)]
pub enum Local {
    /// The daemon's Unix socket.
    Socket(UnixStream),
    /// `/dev/xen/xenbus`.
    Xenbus(File),
}

impl Local {
    /// The daemon's socket.
    pub fn socket() -> io::Result<Self> {
        UnixStream::connect(socket_path()).map(Self::Socket)
    }

    /// The kernel's device.
    pub fn xenbus() -> io::Result<Self> {
        // Rust opens files with O_CLOEXEC.
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(XENBUS_PATH)
            .map(Self::Xenbus)
    }

    /// The socket if the daemon's is reachable, otherwise the kernel's device (as
    /// libxenstore's `xs_open` does).
    pub fn open() -> io::Result<Self> {
        Self::socket().or_else(|_| Self::xenbus())
    }
}

impl embedded_io::ErrorType for Local {
    type Error = io::Error;
}

impl embedded_io::Read for Local {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use io::Read;
        loop {
            let result = match self {
                Self::Socket(s) => s.read(buf),
                Self::Xenbus(f) => f.read(buf),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl embedded_io::Write for Local {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use io::Write;
        loop {
            let result = match self {
                Self::Socket(s) => s.write(buf),
                Self::Xenbus(f) => f.write(first_message(buf)),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The first message of `bytes`, which start at a message's header (all of `bytes` if they
/// hold less than one message): what one write to `/dev/xen/xenbus` may carry.
pub(crate) fn first_message(bytes: &[u8]) -> &[u8] {
    let Some(header) = bytes.first_chunk::<{ crate::wire::HEADER_LEN }>() else {
        return bytes;
    };
    let len = crate::wire::Header::from_bytes(header).len as usize;
    &bytes[..bytes.len().min(crate::wire::HEADER_LEN + len)]
}

impl Client<Local> {
    /// Connects to xenstore: the daemon's socket, or `/dev/xen/xenbus`.
    pub fn open() -> io::Result<Self> {
        Local::open().map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, MsgType};
    use std::vec::Vec;

    #[test]
    fn a_xenbus_write_carries_one_message() {
        let mut bytes = Vec::new();
        wire::encode(MsgType::READ, 1, 0, &[b"/a\0"], &mut bytes).unwrap();
        let first = bytes.len();
        wire::encode(MsgType::WRITE, 2, 0, &[b"/b\0", b"v"], &mut bytes).unwrap();
        assert_eq!(first_message(&bytes).len(), first);
        assert_eq!(first_message(&bytes[first..]), &bytes[first..]);
        assert_eq!(first_message(&bytes[..first - 1]).len(), first - 1);
        assert_eq!(first_message(&bytes[..5]), &bytes[..5]);
        assert!(first_message(&[]).is_empty());
    }
}
