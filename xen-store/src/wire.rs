//! The wire format of `io/xs_wire.h`: a 16-byte header `{type, req_id, tx_id, len}` in the
//! host's byte order, then `len` bytes of payload (at most [`PAYLOAD_MAX`]).

use alloc::vec::Vec;
use core::fmt;

use xen_sys::xsd_sockmsg_type as C;
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Error, ProtocolError};

/// The largest payload either side may send (`XENSTORE_PAYLOAD_MAX`). xenstored drops a
/// connection that exceeds it, so requests are checked before they are sent.
pub const PAYLOAD_MAX: usize = xen_sys::XENSTORE_PAYLOAD_MAX as usize;
/// The longest absolute path xenstored accepts (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = xen_sys::XENSTORE_ABS_PATH_MAX as usize;
/// The longest relative path xenstored accepts (`XENSTORE_REL_PATH_MAX`).
pub const REL_PATH_MAX: usize = xen_sys::XENSTORE_REL_PATH_MAX as usize;
/// The size of the message header (`struct xsd_sockmsg`).
pub const HEADER_LEN: usize = core::mem::size_of::<xen_sys::xsd_sockmsg>();

/// A message type (`enum xsd_sockmsg_type`).
///
/// A newtype, not an enum: the type of a reply comes from the peer, and a value this crate does
/// not know is still representable (and rejected where a known one is expected).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgType(pub u32);

macro_rules! msg_types {
    ($($name:ident = $value:literal, $c:ident;)*) => {
        impl MsgType {
            $(
                #[doc = concat!("`", stringify!($c), "`.")]
                pub const $name: Self = Self($value);
            )*

            /// The C name without its `XS_` prefix (`"READ"`), if known.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
        // Every number equals the one generated from Xen's `io/xs_wire.h`.
        $(const _: () = assert!(MsgType::$name.0 == C::$c.0);)*
    };
}

msg_types! {
    CONTROL = 0, XS_CONTROL;
    DIRECTORY = 1, XS_DIRECTORY;
    READ = 2, XS_READ;
    GET_PERMS = 3, XS_GET_PERMS;
    WATCH = 4, XS_WATCH;
    UNWATCH = 5, XS_UNWATCH;
    TRANSACTION_START = 6, XS_TRANSACTION_START;
    TRANSACTION_END = 7, XS_TRANSACTION_END;
    INTRODUCE = 8, XS_INTRODUCE;
    RELEASE = 9, XS_RELEASE;
    GET_DOMAIN_PATH = 10, XS_GET_DOMAIN_PATH;
    WRITE = 11, XS_WRITE;
    MKDIR = 12, XS_MKDIR;
    RM = 13, XS_RM;
    SET_PERMS = 14, XS_SET_PERMS;
    WATCH_EVENT = 15, XS_WATCH_EVENT;
    ERROR = 16, XS_ERROR;
    IS_DOMAIN_INTRODUCED = 17, XS_IS_DOMAIN_INTRODUCED;
    RESUME = 18, XS_RESUME;
    SET_TARGET = 19, XS_SET_TARGET;
    RESET_WATCHES = 21, XS_RESET_WATCHES;
    DIRECTORY_PART = 22, XS_DIRECTORY_PART;
}

// Every type the header defines is covered above (20, the removed XS_RESTRICT, excepted).
const _: () = assert!(C::XS_TYPE_COUNT.0 == 23);

impl fmt::Debug for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "XS_{name}"),
            None => write!(f, "MsgType({})", self.0),
        }
    }
}

/// A message header (`struct xsd_sockmsg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the message is.
    pub ty: MsgType,
    /// Chosen by the client, echoed in the reply; 0 in watch events.
    pub req_id: u32,
    /// The transaction the request belongs to, 0 for none.
    pub tx_id: u32,
    /// The payload's length in bytes.
    pub len: u32,
}

impl Header {
    /// The header's bytes as they go on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let raw = xen_sys::xsd_sockmsg {
            type_: self.ty.0,
            req_id: self.req_id,
            tx_id: self.tx_id,
            len: self.len,
        };
        let mut out = [0; HEADER_LEN];
        out.copy_from_slice(raw.as_bytes());
        out
    }

    /// Reads a header from its wire bytes.
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Self {
        let raw = xen_sys::xsd_sockmsg::read_from_bytes(bytes)
            .expect("HEADER_LEN is the size of xsd_sockmsg");
        Self {
            ty: MsgType(raw.type_),
            req_id: raw.req_id,
            tx_id: raw.tx_id,
            len: raw.len,
        }
    }
}

/// A whole message: a header and its payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `header.len == payload.len()`.
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("header", &self.header)
            .field("payload", &Escaped(&self.payload))
            .finish()
    }
}

/// Bytes shown as a string with escapes (payloads are mostly NUL-separated text).
pub(crate) struct Escaped<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Appends one message (header, then the parts one after another) to `out`.
///
/// # Errors
///
/// [`Error::RequestTooLong`], appending nothing, if the payload would exceed [`PAYLOAD_MAX`].
pub fn encode(
    ty: MsgType,
    req_id: u32,
    tx_id: u32,
    parts: &[&[u8]],
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > PAYLOAD_MAX {
        return Err(Error::RequestTooLong {
            len,
            max: PAYLOAD_MAX,
        });
    }
    let header = Header {
        ty,
        req_id,
        tx_id,
        len: len as u32,
    };
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&header.to_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Splits a byte stream into messages.
///
/// Bytes go in with [`Decoder::buffer`] (or [`Decoder::push`]), whole messages come out of
/// [`Decoder::next_message`]. A header announcing more than [`PAYLOAD_MAX`] bytes is an error
/// the stream cannot recover from (its framing is lost), and every later call repeats it.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed (compacted lazily).
    start: usize,
    poisoned: Option<ProtocolError>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// A spare region of at least `min` bytes to read into; report how many were filled with
    /// [`Decoder::filled`].
    pub fn buffer(&mut self, min: usize) -> &mut [u8] {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + min, 0);
        &mut self.buf[len..]
    }

    /// After [`Decoder::buffer`]`(min)`: `n` of those bytes were filled.
    pub fn filled(&mut self, min: usize, n: usize) {
        let n = n.min(min);
        let new_len = self.buf.len() - min + n;
        self.buf.truncate(new_len);
    }

    /// Whether some bytes of an incomplete message are buffered.
    pub fn has_partial(&self) -> bool {
        self.buf.len() > self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next whole message, if one has arrived.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::PayloadTooLong`] if a header announces more than [`PAYLOAD_MAX`]: the
    /// stream cannot be resynchronised, and every later call returns it again.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        if let Some(error) = self.poisoned {
            return Err(error);
        }
        let available = &self.buf[self.start..];
        let Some(header_bytes) = available.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::from_bytes(header_bytes);
        let len = header.len as usize;
        if len > PAYLOAD_MAX {
            let error = ProtocolError::PayloadTooLong { len };
            self.poisoned = Some(error);
            return Err(error);
        }
        let Some(payload) = available.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(Message { header, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn header_round_trips_in_host_order() {
        let header = Header {
            ty: MsgType::WRITE,
            req_id: 7,
            tx_id: 3,
            len: 9,
        };
        let bytes = header.to_bytes();
        assert_eq!(&bytes[..4], &11u32.to_ne_bytes());
        assert_eq!(&bytes[12..], &9u32.to_ne_bytes());
        assert_eq!(Header::from_bytes(&bytes), header);
    }

    #[test]
    fn encode_refuses_oversized_payloads_and_appends_nothing() {
        let mut out = vec![1];
        let big = vec![b'x'; PAYLOAD_MAX];
        assert!(matches!(
            encode(MsgType::WRITE, 1, 0, &[b"/a\0", &big], &mut out),
            Err(Error::RequestTooLong { len, .. }) if len == PAYLOAD_MAX + 3
        ));
        assert_eq!(out, [1]);
        encode(MsgType::WRITE, 1, 0, &[&big], &mut out).unwrap();
        assert_eq!(out.len(), 1 + HEADER_LEN + PAYLOAD_MAX);
    }

    #[test]
    fn decoder_reassembles_messages_split_anywhere() {
        let mut stream = Vec::new();
        encode(MsgType::READ, 1, 0, &[b"abc"], &mut stream).unwrap();
        encode(MsgType::WATCH_EVENT, 0, 0, &[b"/p\0tok\0"], &mut stream).unwrap();
        for split in 0..stream.len() {
            let mut decoder = Decoder::new();
            decoder.push(&stream[..split]);
            let mut got = Vec::new();
            while let Some(m) = decoder.next_message().unwrap() {
                got.push(m);
            }
            decoder.push(&stream[split..]);
            while let Some(m) = decoder.next_message().unwrap() {
                got.push(m);
            }
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0].payload, b"abc");
            assert_eq!(got[1].header.ty, MsgType::WATCH_EVENT);
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn decoder_rejects_an_oversized_header_for_good() {
        let mut decoder = Decoder::new();
        let header = Header {
            ty: MsgType::READ,
            req_id: 1,
            tx_id: 0,
            len: PAYLOAD_MAX as u32 + 1,
        };
        decoder.push(&header.to_bytes());
        let expected = ProtocolError::PayloadTooLong {
            len: PAYLOAD_MAX + 1,
        };
        assert_eq!(decoder.next_message(), Err(expected));
        decoder.push(&[0; 64]);
        assert_eq!(decoder.next_message(), Err(expected));
    }

    #[test]
    fn buffer_and_filled_append_only_what_was_read() {
        let mut decoder = Decoder::new();
        let mut bytes = Vec::new();
        encode(MsgType::RM, 5, 0, &[b"/x\0"], &mut bytes).unwrap();
        let region = decoder.buffer(64);
        region[..bytes.len()].copy_from_slice(&bytes);
        decoder.filled(64, bytes.len());
        let message = decoder.next_message().unwrap().unwrap();
        assert_eq!(message.header.req_id, 5);
        assert_eq!(decoder.next_message().unwrap(), None);
    }

    #[test]
    fn unknown_types_print_their_number() {
        assert_eq!(alloc::format!("{:?}", MsgType(20)), "MsgType(20)");
        assert_eq!(
            alloc::format!("{:?}", MsgType::DIRECTORY_PART),
            "XS_DIRECTORY_PART"
        );
    }
}
