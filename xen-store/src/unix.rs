//! The Linux transports: the daemon's Unix socket (dom0, or wherever xenstored runs) and the
//! kernel's `/dev/xen/xenbus` (any domain running Linux, through the kernel's own ring).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::store::Client;

/// The daemon's socket (`XENSTORED_PATH` overrides it, as for libxenstore).
pub const SOCKET_PATH: &str = "/var/run/xenstored/socket";
/// The kernel's xenstore device.
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";
/// The longest payload `/dev/xen/xenbus` carries: Linux buffers one whole message, header
/// included, in `XENSTORE_PAYLOAD_MAX` bytes (`xenbus_file_write`: `EINVAL` beyond).
pub const XENBUS_PAYLOAD_MAX: usize = crate::wire::PAYLOAD_MAX - crate::wire::HEADER_LEN;

/// Where the daemon's socket is: `XENSTORED_PATH`, or [`SOCKET_PATH`].
pub(crate) fn socket_path() -> PathBuf {
    std::env::var_os("XENSTORED_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| SOCKET_PATH.into())
}

/// A byte stream to xenstore from Linux userland.
#[derive(Debug)]
pub enum Local {
    /// The daemon's Unix socket.
    Socket(UnixStream),
    /// `/dev/xen/xenbus`.
    Xenbus(Xenbus),
}

/// `/dev/xen/xenbus` (or a device that behaves like it) as a byte stream of xenstore messages.
///
/// The kernel forwards requests over its own ring: it buffers a partly written message until
/// it is whole, answers `WATCH`/`UNWATCH` itself, and ends the fd's open transactions when it
/// is closed. It takes one message per `write` (Linux drops whatever follows the first
/// message in a write), so writes stop after the first message of the buffer. A request the
/// kernel refuses comes back as the `write`'s error (a failed `WATCH`, a message too long for
/// its buffer, no memory for a `TRANSACTION_START`): that request is answered with an `ERROR`
/// reply naming the errno, as the daemon would, and the connection carries on.
#[derive(Debug)]
pub struct Xenbus<F = File> {
    device: F,
    refused: Refused,
}

impl<F: io::Read + io::Write> Xenbus<F> {
    /// Speaks over `device`.
    pub fn new(device: F) -> Self {
        Self {
            device,
            refused: Refused::default(),
        }
    }

    /// The device.
    pub fn device_mut(&mut self) -> &mut F {
        &mut self.device
    }
}

impl<F: io::Read + io::Write> embedded_io::ErrorType for Xenbus<F> {
    type Error = io::Error;
}

impl<F: io::Read + io::Write> embedded_io::Read for Xenbus<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(n) = self.refused.read(buf) {
            return Ok(n);
        }
        retry_interrupted(|| self.device.read(buf))
    }
}

impl<F: io::Read + io::Write> embedded_io::Write for Xenbus<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let message = first_message(buf);
        match retry_interrupted(|| self.device.write(message)) {
            Err(error) => self.refused.refuse(message, error),
            written => written,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn retry_interrupted<T>(mut io: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match io() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The `ERROR` replies to the requests `/dev/xen/xenbus` refused, waiting to be read.
#[derive(Debug, Default)]
pub(crate) struct Refused {
    replies: VecDeque<u8>,
}

impl Refused {
    /// The device refused `message`, one whole request, with `error`: queues the `ERROR`
    /// reply naming the errno and reports the message written. An error that is not a
    /// refusal (no whole message, no errno) is returned as it is.
    pub(crate) fn refuse(&mut self, message: &[u8], error: io::Error) -> io::Result<usize> {
        use crate::wire::{HEADER_LEN, Header, MsgType};
        let (Some(header), Some(code)) =
            (message.first_chunk::<HEADER_LEN>(), error.raw_os_error())
        else {
            return Err(error);
        };
        let header = Header::from_bytes(header);
        if message.len() != HEADER_LEN + header.len as usize
            || error.kind() == io::ErrorKind::WouldBlock
        {
            return Err(error);
        }
        // Linux's errno values are Xen's (xen/include/public/errno.h).
        let name = crate::Errno::from_raw(code).name().unwrap_or("EIO");
        let mut payload = name.as_bytes().to_vec();
        payload.push(0);
        let mut reply = std::vec::Vec::new();
        crate::wire::encode(
            MsgType::ERROR,
            header.req_id,
            header.tx_id,
            &[&payload],
            &mut reply,
        )
        .map_err(|_| error)?;
        self.replies.extend(reply);
        Ok(message.len())
    }

    /// Reads queued replies; `None` when there are none.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.replies.is_empty() {
            return None;
        }
        let n = buf.len().min(self.replies.len());
        for (slot, byte) in buf.iter_mut().zip(self.replies.drain(..n)) {
            *slot = byte;
        }
        Some(n)
    }
}

impl Local {
    /// The daemon's socket.
    ///
    /// # Errors
    ///
    /// The OS's error if the socket cannot be connected (`ENOENT`: no daemon runs here;
    /// `EACCES`: not allowed).
    pub fn socket() -> io::Result<Self> {
        UnixStream::connect(socket_path()).map(Self::Socket)
    }

    /// The kernel's device.
    ///
    /// # Errors
    ///
    /// The OS's error if the device cannot be opened (`ENOENT`: not on Xen or no xenbus driver;
    /// `EACCES`: not allowed).
    pub fn xenbus() -> io::Result<Self> {
        // Rust opens files with O_CLOEXEC.
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(XENBUS_PATH)
            .map(|file| Self::Xenbus(Xenbus::new(file)))
    }

    /// The longest request payload this transport carries.
    pub fn payload_max(&self) -> usize {
        match self {
            Self::Socket(_) => crate::wire::PAYLOAD_MAX,
            Self::Xenbus(_) => XENBUS_PAYLOAD_MAX,
        }
    }

    /// The socket if the daemon's is reachable, otherwise the kernel's device (as
    /// libxenstore's `xs_open` does).
    ///
    /// # Errors
    ///
    /// The device's open error when neither can be opened (`NotFound` off Xen,
    /// `PermissionDenied` when not root).
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
        match self {
            Self::Socket(s) => retry_interrupted(|| s.read(buf)),
            Self::Xenbus(x) => embedded_io::Read::read(x, buf),
        }
    }
}

impl embedded_io::Write for Local {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use io::Write;
        match self {
            Self::Socket(s) => retry_interrupted(|| s.write(buf)),
            Self::Xenbus(x) => embedded_io::Write::write(x, buf),
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
    /// Connects to xenstore: the daemon's socket, or `/dev/xen/xenbus` (whose shorter
    /// payload limit it then applies, see [`Client::set_payload_max`]).
    ///
    /// # Errors
    ///
    /// As [`Local::open`].
    pub fn open() -> io::Result<Self> {
        Local::open().map(Self::from_local)
    }

    /// A client over `local`, with its transport's payload limit.
    pub fn from_local(local: Local) -> Self {
        let max = local.payload_max();
        let mut client = Self::new(local);
        client.set_payload_max(max);
        client
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
