//! A minimal xenstore client over this domain's ring (`public/io/xs_wire.h`):
//! one request at a time, `XS_READ` and `XS_WRITE` of short values.
//!
//! Test-kernel-local: the project's xenstore crate will replace it.

use core::mem::size_of;

use xen_hypercall::{Error, Port, XenHypercall};

use super::ring::ByteRing;
use super::{DomuError, Events, RingPage};

/// `enum xsd_sockmsg_type` values (xs_wire.h).
const XS_READ: u32 = 2;
const XS_WRITE: u32 = 11;
const XS_WATCH_EVENT: u32 = 15;
const XS_ERROR: u32 = 16;
/// `XENSTORE_PAYLOAD_MAX`: the longest payload of a message.
const PAYLOAD_MAX: u32 = 4096;
/// `XENSTORE_RING_SIZE` and the index offsets of `struct xenstore_domain_interface`
/// (`char req[1024]; char rsp[1024]; req_cons, req_prod, rsp_cons, rsp_prod`).
const RING_SIZE: u32 = 1024;
const REQ_CONS: usize = 2048;
const REQ_PROD: usize = 2052;
const RSP_CONS: usize = 2056;
const RSP_PROD: usize = 2060;
/// How long a request waits for xenstored.
const WAIT_NS: u64 = 5_000_000_000;

/// `struct xsd_sockmsg`, the header of every message.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: u32,
    req_id: u32,
    tx_id: u32,
    len: u32,
}

impl Header {
    const SIZE: usize = 4 * size_of::<u32>();

    fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut bytes = [0; Self::SIZE];
        for (chunk, word) in
            bytes
                .chunks_exact_mut(4)
                .zip([self.kind, self.req_id, self.tx_id, self.len])
        {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: [u8; Self::SIZE]) -> Self {
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self {
            kind: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }
}

/// A xenstore connection over the domain's ring.
#[derive(Debug)]
pub(crate) struct XenStore<H> {
    events: Events<H>,
    port: Port,
    requests: ByteRing,
    responses: ByteRing,
    /// Our indexes: `req_prod` and `rsp_cons`.
    req_prod: u32,
    rsp_cons: u32,
    next_id: u32,
}

impl<H: XenHypercall<Error = Error> + Copy> XenStore<H> {
    /// Connects over `store`, continuing after what is already in its rings.
    ///
    /// # Safety
    ///
    /// `store.page` is this domain's xenstore page, mapped for reads and writes
    /// for the rest of the program, and used by Rust only through this value.
    pub(crate) unsafe fn new(events: Events<H>, store: RingPage) -> Result<Self, DomuError> {
        let at = |offset: usize| store.page.wrapping_add(offset);
        // SAFETY: the page is an `xenstore_domain_interface` (caller), whose
        // `req` array and 4-aligned indexes are at these offsets (xs_wire.h).
        let requests =
            unsafe { ByteRing::new(at(0), RING_SIZE, at(REQ_CONS).cast(), at(REQ_PROD).cast()) };
        // SAFETY: as above, for the `rsp` array.
        let responses = unsafe {
            ByteRing::new(
                at(1024),
                RING_SIZE,
                at(RSP_CONS).cast(),
                at(RSP_PROD).cast(),
            )
        };
        let req_prod = requests.load_prod();
        let rsp_cons = responses.load_cons();
        requests.unconsumed(req_prod)?;
        responses.available(rsp_cons)?;
        Ok(Self {
            events,
            port: store.port,
            requests,
            responses,
            req_prod,
            rsp_cons,
            next_id: 1,
        })
    }

    /// `XS_READ` of `path` (relative paths are under the domain's home) into
    /// `out`; returns the value (without a NUL, as xenstored sends it).
    pub(crate) fn read<'b>(
        &mut self,
        path: &str,
        out: &'b mut [u8],
    ) -> Result<&'b [u8], DomuError> {
        let len = self.request(XS_READ, &[path.as_bytes(), b"\0"], out)?;
        Ok(&out[..len])
    }

    /// `XS_WRITE` of `value` at `path`.
    pub(crate) fn write(&mut self, path: &str, value: &[u8]) -> Result<(), DomuError> {
        let mut reply = [0; 8];
        let len = self.request(XS_WRITE, &[path.as_bytes(), b"\0", value], &mut reply)?;
        if &reply[..len] != b"OK\0" {
            return Err(DomuError::Unexpected("XS_WRITE reply is not OK"));
        }
        Ok(())
    }

    /// Sends one request made of `parts` and reads its reply's payload into `out`.
    fn request(&mut self, kind: u32, parts: &[&[u8]], out: &mut [u8]) -> Result<usize, DomuError> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|&len| len <= PAYLOAD_MAX)
            .ok_or(DomuError::TooLong)?;
        let req_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let deadline = self.events.deadline(WAIT_NS);
        let header = Header {
            kind,
            req_id,
            tx_id: 0,
            len,
        };
        self.send(&header.to_bytes(), deadline)?;
        for part in parts {
            self.send(part, deadline)?;
        }
        self.events.notify(self.port)?;
        loop {
            let mut bytes = [0; Header::SIZE];
            self.receive(&mut bytes, deadline)?;
            let reply = Header::from_bytes(bytes);
            if reply.len > PAYLOAD_MAX {
                return Err(DomuError::BadRing);
            }
            // Unrequested watch events (none are set) and stale replies are skipped.
            if reply.kind == XS_WATCH_EVENT || reply.req_id != req_id {
                self.skip(reply.len, deadline)?;
                continue;
            }
            let len = reply.len as usize;
            if reply.kind == XS_ERROR {
                let mut name = [0; 16];
                let kept = len.min(name.len());
                self.receive(&mut name[..kept], deadline)?;
                self.skip((len - kept) as u32, deadline)?;
                return Err(DomuError::xenstore(&name[..kept]));
            }
            if reply.kind != kind {
                self.skip(reply.len, deadline)?;
                return Err(DomuError::Unexpected("a reply of another type"));
            }
            if len > out.len() {
                self.skip(reply.len, deadline)?;
                return Err(DomuError::TooLong);
            }
            self.receive(&mut out[..len], deadline)?;
            return Ok(len);
        }
    }

    /// Writes all of `bytes` into the request ring, waiting for room (the
    /// caller notifies xenstored once the whole request is in).
    fn send(&mut self, mut bytes: &[u8], deadline: u64) -> Result<(), DomuError> {
        while !bytes.is_empty() {
            let written = self.requests.produce(&mut self.req_prod, bytes)?;
            bytes = &bytes[written..];
            if !bytes.is_empty() {
                // Full: let xenstored read what is there.
                self.events.notify(self.port)?;
                let (ring, prod) = (self.requests, self.req_prod);
                self.events
                    .wait_until(self.port, deadline, "room in the xenstore ring", || {
                        Ok(ring.unconsumed(prod)? < RING_SIZE)
                    })?;
            }
        }
        Ok(())
    }

    /// Fills `out` from the response ring, waiting for xenstored.
    fn receive(&mut self, out: &mut [u8], deadline: u64) -> Result<(), DomuError> {
        let mut filled = 0;
        while filled < out.len() {
            let (ring, cons) = (self.responses, self.rsp_cons);
            self.events
                .wait_until(self.port, deadline, "a xenstore reply", || {
                    Ok(ring.available(cons)? > 0)
                })?;
            filled += self
                .responses
                .consume(&mut self.rsp_cons, &mut out[filled..])?;
            // Room for xenstored's next bytes.
            self.events.notify(self.port)?;
        }
        Ok(())
    }

    /// Reads and drops `len` bytes of the response ring.
    fn skip(&mut self, mut len: u32, deadline: u64) -> Result<(), DomuError> {
        let mut scratch = [0; 64];
        while len > 0 {
            let chunk = len.min(scratch.len() as u32);
            self.receive(&mut scratch[..chunk as usize], deadline)?;
            len -= chunk;
        }
        Ok(())
    }
}
