//! The block frontend: connects to a backend through xenbus, then issues requests over the
//! shared ring, many in flight.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};

use embedded_io::{Read, Write};
use xen_bus::{Deadline, Device, DevicePage, GrantedPages, Publication, XenbusState};
use xen_evtchn::{AsyncEventChannel, EventChannel};
use xen_grant::GrantTable;
use xen_hypercall::{Port, XenHypercall};
use xen_shared::{FrontRing, InFlight, PAGE_SIZE, RingMemory};
use xen_store::{Client, Store};

use crate::abi::{self, Request, Response, RingRequest, Segment};
use crate::{ConnectError, Error, IoError, ProtocolError};

/// Requests in flight at most: the entries of a one-page ring.
pub const MAX_IN_FLIGHT: usize = 32;

/// The `protocol` the frontend announces: its native ABI (`public/io/protocols.h`).
#[cfg(target_arch = "x86_64")]
const PROTOCOL: &str = "x86_64-abi";
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const PROTOCOL: &str = "arm-abi";

/// The disk as the backend describes it (its xenstore directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// `sectors`: the disk's size in 512-byte sectors (the unit of every sector number: this
    /// frontend does not offer `feature-large-sector-size`).
    pub sectors: u64,
    /// `sector-size`: the logical block size in bytes (a power of two, 512 to 4096); every
    /// request's offset and length are multiples of it.
    pub sector_size: u32,
    /// `physical-sector-size` (`sector-size` if absent).
    pub physical_sector_size: u32,
    /// `info`: the `VDISK_*` flags.
    pub info: u32,
    /// Whether writes are refused: `VDISK_READONLY` in `info`, or `mode` `r`.
    pub read_only: bool,
    /// `feature-flush-cache`: [`Frontend::submit_flush`] is offered.
    pub flush: bool,
    /// `feature-discard`, with its parameters.
    pub discard: Option<Discard>,
    /// `feature-max-indirect-segments` (0 if absent).
    pub max_indirect_segments: u32,
}

impl Geometry {
    /// The disk's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors * abi::SECTOR_SIZE as u64
    }
}

/// How the backend discards (`feature-discard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discard {
    /// `discard-granularity` in bytes (`sector-size` if absent).
    pub granularity: u32,
    /// `discard-alignment` in bytes.
    pub alignment: u32,
    /// `discard-secure`: secure discards are honoured.
    pub secure: bool,
}

/// Names a request from submission to completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u32);

impl RequestId {
    /// The id in the ring (`blkif_request.id`).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reads into the request's pages.
    Read,
    /// Writes the request's pages.
    Write,
    /// Flushes the disk's cache.
    Flush,
    /// Discards sectors.
    Discard,
}

/// A request in flight: what the response is checked against, and the pages it holds.
struct Pending<'t, H: XenHypercall<Error = xen_hypercall::Error>, P: DevicePage> {
    operation: Operation,
    /// The `operation` the response carries: the request's, or for an indirect request its
    /// `indirect_op` (as Linux's blkback answers; `BLKIF_OP_INDIRECT` is accepted too).
    ring_op: u8,
    indirect: bool,
    len: usize,
    data: GrantedPages<'t, H, P>,
    /// The pages holding an indirect request's segments.
    segments: GrantedPages<'t, H, P>,
}

/// A block frontend (Linux's xen-blkfront, in Rust): `no_std`, over any xenstore transport,
/// this domain's grant table and an event channel.
///
/// Two ways to use it. Blocking: [`read`](Self::read), [`write`](Self::write),
/// [`flush`](Self::flush), [`discard`](Self::discard), each given a `sleep` closure that waits
/// for an event on [`port`](Self::port) (or returns at once) and returns `false` when the
/// caller's deadline passed. Polled: `submit_*` queue requests (up to [`MAX_IN_FLIGHT`], and
/// as many data pages as the pool holds), [`kick`](Self::kick) publishes them, and
/// [`poll`](Self::poll) takes completions; before sleeping on the port, call
/// [`prepare_to_wait`](Self::prepare_to_wait): `false` means a response published from then on
/// comes with an event.
///
/// Data moves through the frontend's own pages (given at [`connect`](Self::connect)), granted
/// to the backend once, at connect, and kept granted (`feature-persistent`: Linux's blkback
/// then maps each once, not per request), ended at [`close`](Self::close) once the backend has
/// unmapped them: the caller's buffers are never shared with the backend. A request is checked
/// (alignment to the disk's sector size, range, read-only, features) before it takes a page. A backend breaking the protocol (an impossible ring index, an unknown or repeated
/// id, a mismatched operation) is [`Error::Protocol`]: the frontend stops.
///
/// Close it with [`close`](Self::close). Dropped instead, its grants are ended or, where the
/// backend still maps them, leaked (counted by the grant table); its port stays bound.
pub struct Frontend<'t, H, P, E>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
{
    device: Device,
    events: &'t E,
    port: Port,
    ring: FrontRing<RingRequest, Response, GrantedPages<'t, H, P>>,
    geometry: Geometry,
    handle: u16,
    pending: InFlight<Pending<'t, H, P>, MAX_IN_FLIGHT>,
    /// Free data pages, granted to the backend once, at connect (`feature-persistent`).
    pool: GrantedPages<'t, H, P>,
    broken: Option<ProtocolError>,
}

impl<'t, H, P, E> Frontend<'t, H, P, E>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
    E: EventChannel,
{
    /// Connects the frontend whose xenstore directory is `path` (e.g. `device/vbd/768`):
    /// waits for the backend's `InitWait`, grants it `ring_page` and the `data_pages`, allocates
    /// a port for it, publishes `ring-ref`, `event-channel`, `protocol` and
    /// `feature-persistent` with state `Initialised` in one transaction, waits for the backend's
    /// `Connected`, reads the [`Geometry`], and goes `Connected`. If a step after the grants
    /// fails, the device is closed as by [`close`](Self::close) (within what is left of
    /// `deadline`) before the error is returned. A failure gives the pages back
    /// ([`ConnectError::pages`]: all of them, but for any the backend still maps when that
    /// close gives up).
    ///
    /// `data_pages` are the frontend's buffers, each granted for the frontend's life (one grant
    /// reference each: a one-frame grant table has 504 to give): a request of `n` bytes holds
    /// `n / 4096` (rounded up) of them while in flight, and an indirect one a page of segments
    /// too, so they bound how much is in flight (32 requests of 44 KiB take 352). `deadline`
    /// bounds each wait for the backend.
    ///
    /// # Errors
    ///
    /// [`ConnectError`] holding the pages given back and why: [`Error::Bus`] if the device's
    /// directory is incomplete, the backend closes or `deadline` passes
    /// ([`xen_bus::Error::TimedOut`]), or a page's view is shorter than a page; [`Error::Grant`] if
    /// no grant reference is free; [`Error::Event`] if no port can be allocated;
    /// [`Error::BadGeometry`] if the backend published an unusable geometry.
    #[allow(clippy::too_many_arguments)]
    pub fn connect<T: Read + Write>(
        client: &mut Client<T>,
        path: &str,
        table: &'t GrantTable<H>,
        events: &'t E,
        ring_page: P,
        data_pages: Vec<P>,
        deadline: &mut impl Deadline,
    ) -> Result<Self, ConnectError<P>>
    where
        T::Error: 'static,
    {
        let refused = |error: Error, mut pages: Vec<P>, more: Vec<P>| {
            pages.extend(more);
            ConnectError { error, pages }
        };
        if ring_page.mem().len() < PAGE_SIZE {
            let error = Error::Bus(xen_bus::Error::InvalidInput(
                "a blkif ring needs a 4096-byte page",
            ));
            return Err(refused(error, Vec::from([ring_page]), data_pages));
        }
        let device = match Device::frontend(client, path).and_then(|device| {
            device.wait_for_peer_ready(client, XenbusState::InitWait, deadline)?;
            Ok(device)
        }) {
            Ok(device) => device,
            Err(error) => return Err(refused(error.into(), Vec::from([ring_page]), data_pages)),
        };
        let backend = device.peer_id();
        let ring_pages = match GrantedPages::grant(table, backend, [ring_page], false) {
            Ok(pages) => pages,
            Err(grant) => return Err(refused(grant.error.into(), grant.pages, data_pages)),
        };
        // The page is a whole one (checked above): the ring fits.
        let ring = match FrontRing::init(ring_pages, 0) {
            Ok(ring) => ring,
            Err(_) => {
                let error = Error::Bus(xen_bus::Error::InvalidInput(
                    "a blkif ring needs a 4096-byte page",
                ));
                return Err(refused(error, Vec::new(), data_pages));
            }
        };
        let pool = match GrantedPages::grant(table, backend, data_pages, false) {
            Ok(pool) => pool,
            Err(grant) => {
                let ring_pages = end_unpublished([ring.into_memory()]);
                return Err(refused(grant.error.into(), ring_pages, grant.pages));
            }
        };
        let port_and_handle = events
            .alloc_unbound_raw(backend)
            .map_err(Error::from)
            .and_then(|port| match device_handle(client, &device) {
                Ok(handle) => Ok((port, handle)),
                Err(error) => {
                    let _ = events.unbind_raw(port);
                    Err(error)
                }
            });
        let (port, handle) = match port_and_handle {
            Ok(both) => both,
            Err(error) => {
                let pages = end_unpublished([ring.into_memory(), pool]);
                return Err(refused(error, pages, Vec::new()));
            }
        };
        let mut this = Self {
            device,
            events,
            port,
            ring,
            geometry: Geometry {
                sectors: 0,
                sector_size: abi::SECTOR_SIZE as u32,
                physical_sector_size: abi::SECTOR_SIZE as u32,
                info: 0,
                read_only: true,
                flush: false,
                discard: None,
                max_indirect_segments: 0,
            },
            handle,
            pending: InFlight::new(),
            pool,
            broken: None,
        };
        match this.negotiate(client, deadline) {
            Ok(()) => Ok(this),
            Err(error) => {
                // The backend may map the ring already (blkback does once the frontend is
                // `Initialised`): close as `close` does, so that it unmaps and the grants end
                // rather than leak. That close's own failure (e.g. the deadline already passed:
                // then what is still mapped is leaked, the port closed) is secondary to `error`.
                let pages = this.close(client, deadline).unwrap_or_default();
                Err(refused(error, pages, Vec::new()))
            }
        }
    }

    fn negotiate<T: Read + Write>(
        &mut self,
        client: &mut Client<T>,
        deadline: &mut impl Deadline,
    ) -> Result<(), Error>
    where
        T::Error: 'static,
    {
        let publication = Publication::new()
            .ring_refs(self.ring.memory().refs())?
            .event_channel(self.port)
            .value("protocol", PROTOCOL)
            .value("feature-persistent", 1);
        self.device
            .publish(client, &publication, XenbusState::Initialised)?;
        self.device
            .wait_for_peer_ready(client, XenbusState::Connected, deadline)?;
        self.geometry = read_geometry(client, &self.device)?;
        self.device.switch_state(client, XenbusState::Connected)?;
        Ok(())
    }

    /// The disk's geometry and the backend's features.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The xenbus device (to watch the backend's state, e.g. for `Closing`).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The event channel's port: the backend signals it when it published responses.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Requests submitted and not yet taken by [`poll`](Self::poll).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Data pages free for new requests.
    pub fn free_pages(&self) -> usize {
        self.pool.len()
    }

    /// The most bytes one request carries: 11 pages ([`abi::MAX_SEGMENTS`]), or with
    /// `feature-max-indirect-segments` that many pages (at most 8 pages of segments, 4096).
    pub fn max_request_len(&self) -> usize {
        self.max_segments() * PAGE_SIZE
    }

    fn max_segments(&self) -> usize {
        let indirect = self.geometry.max_indirect_segments as usize;
        indirect.clamp(
            abi::MAX_SEGMENTS,
            abi::MAX_INDIRECT_PAGES * abi::SEGMENTS_PER_INDIRECT_PAGE,
        )
    }

    /// The pages a request of `len` bytes takes: its data, and for more than
    /// [`abi::MAX_SEGMENTS`] the indirect pages listing them.
    fn pages_for(len: usize) -> (usize, usize) {
        let data = len.div_ceil(PAGE_SIZE);
        let segments = if data > abi::MAX_SEGMENTS {
            data.div_ceil(abi::SEGMENTS_PER_INDIRECT_PAGE)
        } else {
            0
        };
        (data, segments)
    }

    /// Whether a request of `len` bytes could be submitted now (a ring slot, an id and enough
    /// free pages).
    pub fn can_submit(&self, len: usize) -> bool {
        let (data, segments) = Self::pages_for(len);
        self.broken.is_none() && self.has_slot() && data + segments <= self.pool.len()
    }

    /// Checks a data request before anything is granted.
    fn check(&self, sector: u64, len: usize, write: bool) -> Result<(), Error> {
        self.check_extent(sector, len)?;
        if len > self.max_request_len() {
            return Err(Error::TooLong {
                len,
                max: self.max_request_len(),
            });
        }
        self.check_writable(write)
    }

    /// Whether `len` bytes from `sector` are aligned to the disk's sector size and on the disk.
    fn check_extent(&self, sector: u64, len: usize) -> Result<(), Error> {
        let g = &self.geometry;
        let sector_size = g.sector_size as usize;
        let aligned = len > 0
            && len % sector_size == 0
            && sector % (sector_size / abi::SECTOR_SIZE) as u64 == 0;
        if !aligned {
            return Err(Error::Unaligned {
                sector,
                len,
                sector_size: g.sector_size,
            });
        }
        let end = sector.checked_add((len / abi::SECTOR_SIZE) as u64);
        if end.is_none_or(|end| end > g.sectors) {
            return Err(Error::OutOfRange {
                sector,
                len,
                sectors: g.sectors,
            });
        }
        Ok(())
    }

    fn check_writable(&self, write: bool) -> Result<(), Error> {
        if write && self.geometry.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    fn usable(&self) -> Result<(), Error> {
        match self.broken {
            Some(error) => Err(Error::Protocol(error)),
            None => Ok(()),
        }
    }

    /// Queues a read of `len` bytes from `sector` (512-byte units); its completion holds the
    /// data. `len` and the offset are multiples of the sector size; `len` at most
    /// [`max_request_len`](Self::max_request_len). [`Error::Busy`] if no slot or not enough
    /// free pages: take completions first.
    ///
    /// # Errors
    ///
    /// [`Error::Unaligned`], [`Error::OutOfRange`] or [`Error::TooLong`] for a request the disk
    /// cannot take, [`Error::Busy`] if no slot, id or enough pages are free, [`Error::Protocol`]
    /// if the backend broke the protocol earlier.
    pub fn submit_read(&mut self, sector: u64, len: usize) -> Result<RequestId, Error> {
        self.usable()?;
        self.check(sector, len, false)?;
        self.submit_data(Operation::Read, sector, len, |_| Ok(()))
    }

    /// Queues a write of `data` at `sector` (512-byte units), as for
    /// [`submit_read`](Self::submit_read). The data is copied into the frontend's pages.
    ///
    /// # Errors
    ///
    /// Those of [`submit_read`](Self::submit_read), and [`Error::ReadOnly`] on a read-only disk.
    pub fn submit_write(&mut self, sector: u64, data: &[u8]) -> Result<RequestId, Error> {
        self.usable()?;
        self.check(sector, data.len(), true)?;
        self.submit_data(Operation::Write, sector, data.len(), |pages| {
            pages.write(0, data).map_err(|_| {
                Error::Bus(xen_bus::Error::InvalidInput(
                    "a data page's view is shorter than a page",
                ))
            })
        })
    }

    /// Queues a flush of the disk's cache (`BLKIF_OP_FLUSH_DISKCACHE`, no data); only if the
    /// backend offers `feature-flush-cache`.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the backend does not offer `feature-flush-cache`,
    /// [`Error::Busy`] if no slot or id is free, [`Error::Protocol`] if the backend broke the
    /// protocol earlier.
    pub fn submit_flush(&mut self) -> Result<RequestId, Error> {
        self.usable()?;
        if !self.geometry.flush {
            return Err(Error::Unsupported("feature-flush-cache"));
        }
        self.submit_data(Operation::Flush, 0, 0, |_| Ok(()))
    }

    /// Queues a discard of `sectors` 512-byte sectors from `sector` (secure if `secure` and the
    /// backend offers `discard-secure`); only if the backend offers `feature-discard`.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the backend does not offer `feature-discard`,
    /// [`Error::Unaligned`] or [`Error::OutOfRange`] for a range the disk does not hold,
    /// [`Error::ReadOnly`] on a read-only disk, [`Error::Busy`] if no slot or id is free,
    /// [`Error::Protocol`] if the backend broke the protocol earlier.
    pub fn submit_discard(
        &mut self,
        sector: u64,
        sectors: u64,
        secure: bool,
    ) -> Result<RequestId, Error> {
        self.usable()?;
        let Some(discard) = self.geometry.discard else {
            return Err(Error::Unsupported("feature-discard"));
        };
        let len = usize::try_from(sectors)
            .ok()
            .and_then(|s| s.checked_mul(abi::SECTOR_SIZE))
            .ok_or(Error::OutOfRange {
                sector,
                len: usize::MAX,
                sectors: self.geometry.sectors,
            })?;
        // Range, alignment and read-only as for a write of that length (not its size limit).
        self.check_extent(sector, len)?;
        self.check_writable(true)?;
        if !self.has_slot() {
            return Err(Error::Busy);
        }
        let pending = Pending {
            operation: Operation::Discard,
            ring_op: abi::OP_DISCARD,
            indirect: false,
            len: 0,
            data: GrantedPages::empty(),
            segments: GrantedPages::empty(),
        };
        let id = self.pending.insert(pending).map_err(|_| Error::Busy)?;
        let request = abi::DiscardRequest {
            operation: abi::OP_DISCARD,
            flag: if secure && discard.secure {
                abi::DISCARD_SECURE
            } else {
                0
            },
            handle: self.handle,
            id: id.into(),
            sector_number: sector,
            nr_sectors: sectors,
            ..Default::default()
        };
        self.start(id, &RingRequest::new(&request))
    }

    fn has_slot(&self) -> bool {
        !self.ring.is_full() && self.pending.len() < MAX_IN_FLIGHT
    }

    /// Takes pages for `len` bytes from the pool, fills them with `fill`, and queues the
    /// request (indirect beyond [`abi::MAX_SEGMENTS`] pages).
    fn submit_data(
        &mut self,
        operation: Operation,
        sector: u64,
        len: usize,
        fill: impl FnOnce(&GrantedPages<'t, H, P>) -> Result<(), Error>,
    ) -> Result<RequestId, Error> {
        let (count, segment_count) = Self::pages_for(len);
        if !self.can_submit(len) {
            return Err(Error::Busy);
        }
        let (Some(mut data), Some(mut segments)) = (
            self.pool.take_last(count),
            self.pool.take_last(segment_count),
        ) else {
            return Err(Error::Busy);
        };
        if let Err(error) = fill(&data) {
            self.pool.append(&mut data);
            self.pool.append(&mut segments);
            return Err(error);
        }
        let ring_op = match operation {
            Operation::Read => abi::OP_READ,
            Operation::Write => abi::OP_WRITE,
            Operation::Flush | Operation::Discard => abi::OP_FLUSH_DISKCACHE,
        };
        let segs = data.refs().enumerate().map(|(i, gref)| {
            let bytes = (len - i * PAGE_SIZE).min(PAGE_SIZE);
            Segment {
                gref: gref.0,
                first_sect: 0,
                last_sect: (bytes / abi::SECTOR_SIZE - 1) as u8,
                _pad: [0; 2],
            }
        });
        let request = if segment_count == 0 {
            let mut request = Request {
                operation: ring_op,
                nr_segments: count as u8,
                handle: self.handle,
                sector_number: sector,
                ..Default::default()
            };
            for (slot, seg) in request.seg.iter_mut().zip(segs) {
                *slot = seg;
            }
            RingRequest::new(&request)
        } else {
            for (i, seg) in segs.enumerate() {
                let at = i * size_of::<Segment>();
                let page = segments.page(at / PAGE_SIZE);
                // A `DevicePage` view is a page (a shorter one fails the backend's request).
                if let Some(page) = page {
                    let _ = page
                        .mem()
                        .write(at % PAGE_SIZE, zerocopy::IntoBytes::as_bytes(&seg));
                }
            }
            let mut request = abi::IndirectRequest {
                operation: abi::OP_INDIRECT,
                indirect_op: ring_op,
                nr_segments: count as u16,
                sector_number: sector,
                handle: self.handle,
                ..Default::default()
            };
            for (slot, gref) in request.indirect_grefs.iter_mut().zip(segments.refs()) {
                *slot = gref.0;
            }
            RingRequest::new(&request)
        };
        let pending = Pending {
            operation,
            ring_op,
            indirect: segment_count > 0,
            len,
            data,
            segments,
        };
        let id = match self.pending.insert(pending) {
            Ok(id) => id,
            Err(pending) => {
                self.give_back(pending);
                return Err(Error::Busy);
            }
        };
        // The id sits at offset 8 in every request kind.
        let mut request = request;
        request.set_id(id.into());
        self.start(id, &request)
    }

    /// Puts the request recorded under `id` in the ring.
    fn start(&mut self, id: u32, request: &RingRequest) -> Result<RequestId, Error> {
        if let Err(error) = self.ring.start_request(request) {
            if let Ok(pending) = self.pending.remove(id.into()) {
                self.give_back(pending);
            }
            return Err(Error::Protocol(ProtocolError::Ring(error)));
        }
        Ok(RequestId(id))
    }

    /// Returns a request's pages to the pool (they stay granted).
    fn give_back(&mut self, mut pending: Pending<'t, H, P>) {
        self.pool.append(&mut pending.data);
        self.pool.append(&mut pending.segments);
    }

    /// Publishes the queued requests, and notifies the backend if it asked for it.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the ring's indices are impossible (the frontend stops), or earlier;
    /// [`Error::Event`] if the notification fails.
    pub fn kick(&mut self) -> Result<(), Error> {
        self.usable()?;
        let notify = self
            .ring
            .push_requests()
            .map_err(|e| self.break_with(e.into()))?;
        if notify {
            self.events.notify(self.port)?;
        }
        Ok(())
    }

    fn break_with(&mut self, error: ProtocolError) -> Error {
        self.broken.get_or_insert(error);
        Error::Protocol(error)
    }

    /// Takes the next completed request, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if a response breaks the protocol (impossible indices, an unknown id,
    /// the wrong operation): the frontend stops and every later call returns it. A request that
    /// failed is not an error here: see [`Completion::result`].
    pub fn poll(&mut self) -> Result<Option<Completion<'_, 't, H, P>>, Error> {
        self.usable()?;
        let rsp = match self.ring.next_response() {
            Ok(Some(rsp)) => rsp,
            Ok(None) => return Ok(None),
            Err(error) => return Err(self.break_with(error.into())),
        };
        let mut pending = match self.pending.remove(rsp.id) {
            Ok(pending) => pending,
            Err(unknown) => return Err(self.break_with(ProtocolError::UnknownId(unknown.0))),
        };
        let echoed = rsp.operation == pending.ring_op
            || (pending.indirect && rsp.operation == abi::OP_INDIRECT);
        if !echoed {
            let error = ProtocolError::WrongOperation {
                id: rsp.id,
                expected: pending.ring_op,
                got: rsp.operation,
            };
            self.give_back(pending);
            return Err(self.break_with(error));
        }
        let result = match rsp.status {
            abi::RSP_OKAY => Ok(()),
            abi::RSP_ERROR => Err(IoError::Failed),
            abi::RSP_EOPNOTSUPP => Err(IoError::NotSupported),
            other => Err(IoError::BadStatus(other)),
        };
        self.pool.append(&mut pending.segments);
        Ok(Some(Completion {
            id: RequestId(rsp.id as u32),
            operation: pending.operation,
            result,
            len: pending.len,
            pages: pending.data,
            pool: &mut self.pool,
        }))
    }

    /// Before sleeping on the port: whether responses are waiting (then poll, do not sleep);
    /// if none, asks the backend for an event at the next one and checks again
    /// (`RING_FINAL_CHECK_FOR_RESPONSES`). `false`: sleeping is safe, the next response comes
    /// with an event.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the backend broke the protocol (now or earlier).
    pub fn prepare_to_wait(&mut self) -> Result<bool, Error> {
        self.usable()?;
        self.ring
            .final_check_for_responses()
            .map_err(|e| self.break_with(e.into()))
    }

    /// Reads `buf.len()` bytes from `sector` (512-byte units), in as many requests as it
    /// takes, many in flight. Needs no request in flight before ([`Error::RequestsInFlight`]).
    /// `sleep` waits for an event on [`port`](Self::port) (or returns at once) and returns
    /// `false` to give up ([`Error::TimedOut`]; the requests then stay in flight).
    ///
    /// # Errors
    ///
    /// [`Error::RequestsInFlight`], [`Error::TimedOut`], [`Error::Io`] if a request failed, and
    /// the errors of [`submit_read`](Self::submit_read), [`kick`](Self::kick) and
    /// [`poll`](Self::poll).
    pub fn read(
        &mut self,
        sector: u64,
        buf: &mut [u8],
        sleep: &mut impl FnMut() -> bool,
    ) -> Result<(), Error> {
        now(self.read_with(sector, buf, &mut Wait::Sleep(sleep)))
    }

    /// Writes `data` at `sector` (512-byte units), as [`read`](Self::read) reads.
    ///
    /// # Errors
    ///
    /// As for [`read`](Self::read), with those of [`submit_write`](Self::submit_write).
    pub fn write(
        &mut self,
        sector: u64,
        data: &[u8],
        sleep: &mut impl FnMut() -> bool,
    ) -> Result<(), Error> {
        now(self.write_with(sector, data, &mut Wait::Sleep(sleep)))
    }

    /// Flushes the disk's cache (see [`submit_flush`](Self::submit_flush)), waiting as
    /// [`read`](Self::read) does.
    ///
    /// # Errors
    ///
    /// As for [`read`](Self::read), with those of [`submit_flush`](Self::submit_flush).
    pub fn flush(&mut self, sleep: &mut impl FnMut() -> bool) -> Result<(), Error> {
        now(self.one(&mut Wait::Sleep(sleep), Self::submit_flush))
    }

    /// Discards sectors (see [`submit_discard`](Self::submit_discard)), waiting as
    /// [`read`](Self::read) does.
    ///
    /// # Errors
    ///
    /// As for [`read`](Self::read), with those of [`submit_discard`](Self::submit_discard).
    pub fn discard(
        &mut self,
        sector: u64,
        sectors: u64,
        secure: bool,
        sleep: &mut impl FnMut() -> bool,
    ) -> Result<(), Error> {
        now(self.one(&mut Wait::Sleep(sleep), |this| {
            this.submit_discard(sector, sectors, secure)
        }))
    }

    async fn read_with(
        &mut self,
        sector: u64,
        buf: &mut [u8],
        wait: &mut Wait<'_, '_>,
    ) -> Result<(), Error> {
        self.check_range(sector, buf.len(), false)?;
        let len = buf.len();
        self.run_chunks(
            sector,
            len,
            wait,
            |this, sector, range| this.submit_read(sector, range.len()),
            |range, completion| completion.copy_to(0, &mut buf[range]),
        )
        .await
    }

    async fn write_with(
        &mut self,
        sector: u64,
        data: &[u8],
        wait: &mut Wait<'_, '_>,
    ) -> Result<(), Error> {
        self.check_range(sector, data.len(), true)?;
        self.run_chunks(
            sector,
            data.len(),
            wait,
            |this, sector, range| this.submit_write(sector, &data[range]),
            |_, _| Ok(()),
        )
        .await
    }

    /// The checks of a request of the whole length (but for its size limit), before any is
    /// submitted.
    fn check_range(&self, sector: u64, len: usize, write: bool) -> Result<(), Error> {
        self.usable()?;
        if self.in_flight() > 0 {
            return Err(Error::RequestsInFlight);
        }
        self.check_extent(sector, len)?;
        self.check_writable(write)
    }

    async fn one(
        &mut self,
        wait: &mut Wait<'_, '_>,
        submit: impl FnOnce(&mut Self) -> Result<RequestId, Error>,
    ) -> Result<(), Error> {
        if self.in_flight() > 0 {
            return Err(Error::RequestsInFlight);
        }
        submit(self)?;
        self.kick()?;
        let mut result = Ok(());
        while self.in_flight() > 0 {
            let mut any = false;
            while let Some(completion) = self.poll()? {
                any = true;
                if let Err(error) = completion.result() {
                    result = Err(Error::Io(error));
                }
            }
            if !any && self.in_flight() > 0 {
                self.wait_for_response(wait).await?;
            }
        }
        result
    }

    /// Submits `len` bytes from `sector` in chunks of at most a request each, keeping as many
    /// in flight as the ring and pool allow; `done(range, completion)` takes each completion.
    async fn run_chunks(
        &mut self,
        sector: u64,
        len: usize,
        wait: &mut Wait<'_, '_>,
        mut submit: impl FnMut(&mut Self, u64, core::ops::Range<usize>) -> Result<RequestId, Error>,
        mut done: impl FnMut(core::ops::Range<usize>, &Completion<'_, 't, H, P>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // The longest request whose data and segment pages the whole pool holds.
        let mut chunk = self.max_request_len().min(self.pool.len() * PAGE_SIZE);
        while chunk > 0 && {
            let (data, segments) = Self::pages_for(chunk);
            data + segments > self.pool.len()
        } {
            chunk -= PAGE_SIZE;
        }
        if chunk == 0 {
            return Err(Error::Busy);
        }
        // Each chunk's range, by request id.
        let mut ranges: [Option<core::ops::Range<usize>>; MAX_IN_FLIGHT] =
            core::array::from_fn(|_| None);
        let mut next = 0;
        let mut first_error = None;
        while next < len || self.in_flight() > 0 {
            // Submit what fits.
            let mut submitted = false;
            while next < len && first_error.is_none() {
                let n = chunk.min(len - next);
                if !self.can_submit(n) {
                    break;
                }
                let at = sector + (next / abi::SECTOR_SIZE) as u64;
                let id = submit(self, at, next..next + n)?;
                ranges[id.0 as usize] = Some(next..next + n);
                next += n;
                submitted = true;
            }
            if submitted {
                self.kick()?;
            } else if next < len && self.in_flight() == 0 && first_error.is_none() {
                // Nothing in flight to wait for, and the next chunk does not fit.
                return Err(Error::Busy);
            }
            // Take what completed.
            let mut any = false;
            while let Some(completion) = self.poll()? {
                any = true;
                let range = ranges[completion.id().0 as usize].take().unwrap_or(0..0);
                let outcome = completion
                    .result()
                    .map_err(Error::Io)
                    .and_then(|()| done(range, &completion));
                if let Err(error) = outcome {
                    first_error.get_or_insert(error);
                }
            }
            if first_error.is_some() && self.in_flight() == 0 {
                break;
            }
            if !any && self.in_flight() > 0 {
                self.wait_for_response(wait).await?;
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Waits (with requests in flight and none answered) until a response may be waiting:
    /// [`prepare_to_wait`](Self::prepare_to_wait), then, if that found none, the wait.
    async fn wait_for_response(&mut self, wait: &mut Wait<'_, '_>) -> Result<(), Error> {
        match wait {
            Wait::Sleep(sleep) => {
                if !self.prepare_to_wait()? && !sleep() {
                    return Err(Error::TimedOut);
                }
                Ok(())
            }
            // Each event consumed, look again: an event may come for a response taken already.
            Wait::Port(port_event) => {
                while !self.prepare_to_wait()? {
                    port_event().await?;
                }
                Ok(())
            }
        }
    }

    /// Closes the device: `Closing`, then `Closed` once the backend is closing too; then, once
    /// the backend has unmapped them, ends the grants of the ring and of every request
    /// (answered or not), and closes the port (see [`Device::close`]). Gives back every page,
    /// ring page included.
    ///
    /// If `deadline` passes first, the grants still mapped are leaked (never reused; counted by
    /// the grant table), the port is closed, and the error is returned.
    ///
    /// # Errors
    ///
    /// [`Error::Bus`] if a state write or watch fails or `deadline` passes
    /// ([`xen_bus::Error::TimedOut`]): the grants still mapped are then leaked, the port is closed.
    pub fn close<T: Read + Write>(
        self,
        client: &mut Client<T>,
        deadline: &mut impl Deadline,
    ) -> Result<Vec<P>, Error>
    where
        T::Error: 'static,
    {
        let Self {
            device,
            events,
            port,
            ring,
            mut pending,
            pool,
            ..
        } = self;
        let mut held = Vec::from([ring.into_memory(), pool]);
        for id in 0..MAX_IN_FLIGHT as u64 {
            if let Ok(request) = pending.remove(id) {
                held.push(request.data);
                held.push(request.segments);
            }
        }
        let mut pool = Vec::new();
        let mut port_open = true;
        let closed = {
            // Ends what the backend unmapped; once all is, closes the port.
            let mut release = || {
                for data in &mut held {
                    pool.extend(data.end_unmapped());
                }
                if held.iter().any(|data| !data.is_empty()) {
                    return false;
                }
                if port_open {
                    port_open = false;
                    let _ = events.unbind_raw(port);
                }
                true
            };
            device.close(client, &mut release, deadline)
        };
        // Timed out: what is still mapped is leaked when `held` drops; the port is closed.
        if port_open {
            let _ = events.unbind_raw(port);
        }
        closed?;
        Ok(pool)
    }
}

/// The async API: the blocking calls' work, awaiting the port instead of sleeping.
///
/// Who wakes whom: before a task waits, [`prepare_to_wait`](Frontend::prepare_to_wait) sets
/// `rsp_event` past the last response taken and reads `rsp_prod` again after a full barrier
/// (`RING_FINAL_CHECK_FOR_RESPONSES`); a response the backend pushes after that read finds
/// `rsp_event` reached and notifies the port (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`). The
/// event channel keeps that delivery pending until a poll of the port consumes it, and wakes
/// the task's waker registered by [`AsyncEventChannel::wait_port`] (an upcall, or the
/// executor's poll of the port): a response published while the task is not yet registered
/// is found by the registration's own check of the pending bit. Each event consumed, the
/// task looks at the ring again, so an event for a response already taken only costs a look.
///
/// A future dropped before it completes leaves its requests in flight, as a blocking call
/// that timed out does: [`poll`](Frontend::poll) takes them.
impl<'t, H, P, E> Frontend<'t, H, P, E>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
    E: AsyncEventChannel,
{
    /// [`read`](Self::read), awaiting the port.
    ///
    /// # Errors
    ///
    /// Those of [`read`](Self::read) but [`Error::TimedOut`]; [`Error::Event`] if waiting on the
    /// port fails.
    pub async fn read_async(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
        let (events, port) = (self.events, self.port);
        let port_event = move || -> PortEvent<'t> { Box::pin(events.wait_port(port)) };
        self.read_with(sector, buf, &mut Wait::Port(&port_event))
            .await
    }

    /// [`write`](Self::write), awaiting the port.
    ///
    /// # Errors
    ///
    /// Those of [`write`](Self::write) but [`Error::TimedOut`]; [`Error::Event`] if waiting on the
    /// port fails.
    pub async fn write_async(&mut self, sector: u64, data: &[u8]) -> Result<(), Error> {
        let (events, port) = (self.events, self.port);
        let port_event = move || -> PortEvent<'t> { Box::pin(events.wait_port(port)) };
        self.write_with(sector, data, &mut Wait::Port(&port_event))
            .await
    }

    /// [`flush`](Self::flush), awaiting the port.
    ///
    /// # Errors
    ///
    /// Those of [`flush`](Self::flush) but [`Error::TimedOut`]; [`Error::Event`] if waiting on the
    /// port fails.
    pub async fn flush_async(&mut self) -> Result<(), Error> {
        let (events, port) = (self.events, self.port);
        let port_event = move || -> PortEvent<'t> { Box::pin(events.wait_port(port)) };
        self.one(&mut Wait::Port(&port_event), Self::submit_flush)
            .await
    }

    /// [`discard`](Self::discard), awaiting the port.
    ///
    /// # Errors
    ///
    /// Those of [`discard`](Self::discard) but [`Error::TimedOut`]; [`Error::Event`] if waiting on
    /// the port fails.
    pub async fn discard_async(
        &mut self,
        sector: u64,
        sectors: u64,
        secure: bool,
    ) -> Result<(), Error> {
        let (events, port) = (self.events, self.port);
        let port_event = move || -> PortEvent<'t> { Box::pin(events.wait_port(port)) };
        self.one(&mut Wait::Port(&port_event), |this| {
            this.submit_discard(sector, sectors, secure)
        })
        .await
    }

    /// The next completion of the polled API ([`submit_read`](Self::submit_read), ...),
    /// awaiting the port until one is answered; `None` if nothing is in flight. Call
    /// [`kick`](Self::kick) first.
    ///
    /// # Errors
    ///
    /// Those of [`poll`](Self::poll) and [`prepare_to_wait`](Self::prepare_to_wait);
    /// [`Error::Event`] if waiting on the port fails.
    pub async fn next_completion(&mut self) -> Result<Option<Completion<'_, 't, H, P>>, Error> {
        if self.in_flight() == 0 {
            return Ok(None);
        }
        let (events, port) = (self.events, self.port);
        let port_event = move || -> PortEvent<'t> { Box::pin(events.wait_port(port)) };
        self.wait_for_response(&mut Wait::Port(&port_event)).await?;
        self.poll()
    }
}

impl<H, P, E> fmt::Debug for Frontend<'_, H, P, E>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frontend")
            .field("device", &self.device)
            .field("port", &self.port)
            .field("geometry", &self.geometry)
            .field("in_flight", &self.pending.len())
            .field("free_pages", &self.pool.len())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// A completed request: its outcome and, for a read, its data. Dropping it gives its pages
/// back to the frontend.
pub struct Completion<'a, 't, H, P>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
{
    id: RequestId,
    operation: Operation,
    result: Result<(), IoError>,
    len: usize,
    pages: GrantedPages<'t, H, P>,
    pool: &'a mut GrantedPages<'t, H, P>,
}

impl<H, P> Completion<'_, '_, H, P>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
{
    /// The request's id, as `submit_*` returned it.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The request's operation.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The backend's answer.
    ///
    /// # Errors
    ///
    /// The backend's failure: [`IoError::Failed`], [`IoError::NotSupported`] or
    /// [`IoError::BadStatus`].
    pub fn result(&self) -> Result<(), IoError> {
        self.result
    }

    /// The request's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it carries no data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the request's bytes `offset..offset + dst.len()` into `dst` (for a read: the
    /// data read).
    ///
    /// # Errors
    ///
    /// [`Error::TooLong`] if `offset + dst.len()` passes the request's length.
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> Result<(), Error> {
        let end = offset.checked_add(dst.len()).filter(|&end| end <= self.len);
        if end.is_none() {
            return Err(Error::TooLong {
                len: offset.saturating_add(dst.len()),
                max: self.len,
            });
        }
        self.pages.read(offset, dst).map_err(|_| {
            Error::Bus(xen_bus::Error::InvalidInput(
                "a data page's view is shorter than a page",
            ))
        })
    }
}

impl<H, P> Drop for Completion<'_, '_, H, P>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
{
    fn drop(&mut self) {
        self.pool.append(&mut self.pages);
    }
}

impl<H, P> fmt::Debug for Completion<'_, '_, H, P>
where
    H: XenHypercall<Error = xen_hypercall::Error>,
    P: DevicePage,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("result", &self.result)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// How a call that runs requests waits for the backend's responses.
enum Wait<'w, 'e> {
    /// The blocking caller's `sleep` (see [`Frontend::read`]).
    Sleep(&'w mut dyn FnMut() -> bool),
    /// A future of the next event on the port (from an [`AsyncEventChannel`]).
    Port(&'w dyn Fn() -> PortEvent<'e>),
}

/// [`AsyncEventChannel::wait_port`]'s future, boxed so that [`Wait`] needs no bound on the
/// event channel.
type PortEvent<'w> = Pin<Box<dyn Future<Output = Result<(), xen_evtchn::Error>> + 'w>>;

/// The outcome of a future that never waits: one run with [`Wait::Sleep`], whose every await
/// is ready at once (the sleeping is done inside `sleep`).
fn now<T>(future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        // Not reached: nothing in a `Wait::Sleep` run returns `Pending`.
        Poll::Pending => Err(Error::TimedOut),
    }
}

/// `blkif_vdev_t handle`: the frontend's `virtual-device` number, or if absent the last
/// component of its path (as Linux's blkfront takes it), 0 if that is no number either (the
/// backend does not use it); truncated to 16 bits as C's cast does (an extended device number
/// is wider). A failed read of `virtual-device` other than its absence, or a value that is no
/// decimal number, is an error.
fn device_handle(store: &mut impl Store, device: &Device) -> Result<u16, Error> {
    let path = alloc::format!("{}/virtual-device", device.path());
    let from_key = match store.read(&path) {
        Ok(value) => Some(
            core::str::from_utf8(&value)
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok())
                .ok_or_else(|| xen_bus::Error::BadValue {
                    value: alloc::string::String::from_utf8_lossy(&value[..value.len().min(64)])
                        .into_owned(),
                    path,
                    expected: "a decimal device number",
                })?,
        ),
        Err(error) if error.kind() == xen_store::ErrorKind::NotFound => None,
        Err(error) => return Err(Error::Bus(error.into())),
    };
    let from_path = || {
        device
            .path()
            .rsplit('/')
            .next()
            .and_then(|last| last.parse::<u32>().ok())
    };
    Ok(from_key.or_else(from_path).unwrap_or(0) as u16)
}

/// Ends the grants of pages not yet published to the backend and gives the pages back (one it
/// mapped all the same, by guessing its reference, stays granted, leaked).
fn end_unpublished<'t, H, P>(sets: impl IntoIterator<Item = GrantedPages<'t, H, P>>) -> Vec<P>
where
    H: XenHypercall<Error = xen_hypercall::Error> + 't,
    P: DevicePage,
{
    let mut pages = Vec::new();
    for mut set in sets {
        pages.extend(set.end_unmapped());
    }
    pages
}

/// The backend's description of the disk.
fn read_geometry(store: &mut impl Store, device: &Device) -> Result<Geometry, Error> {
    let number = |store: &mut _, key| device.read_peer_u64(store, key);
    let sectors = number(store, "sectors")?.ok_or(xen_bus::Error::Missing {
        path: alloc::format!("{}/sectors", device.peer_path()),
    })?;
    let sector_size = number(store, "sector-size")?.unwrap_or(abi::SECTOR_SIZE as u64);
    let bad = |key, value, why| Error::BadGeometry { key, value, why };
    let sector_size = u32::try_from(sector_size)
        .ok()
        .filter(|s| s.is_power_of_two() && (512..=PAGE_SIZE as u32).contains(s))
        .ok_or(bad(
            "sector-size",
            sector_size,
            "not a power of two from 512 to 4096",
        ))?;
    if sectors.checked_mul(abi::SECTOR_SIZE as u64).is_none() {
        return Err(bad("sectors", sectors, "larger than 2^64 bytes"));
    }
    let physical = number(store, "physical-sector-size")?.unwrap_or(sector_size.into());
    let info = number(store, "info")?.unwrap_or(0);
    let info = u32::try_from(info).map_err(|_| bad("info", info, "not a u32"))?;
    let mode_read_only = device
        .read_peer(store, "mode")?
        .is_some_and(|mode| mode.trim_ascii() == b"r");
    let discard = if device.peer_feature(store, "discard")? {
        let granularity = number(store, "discard-granularity")?.unwrap_or(sector_size.into());
        let alignment = number(store, "discard-alignment")?.unwrap_or(0);
        Some(Discard {
            granularity: u32::try_from(granularity).unwrap_or(u32::MAX),
            alignment: u32::try_from(alignment).unwrap_or(0),
            secure: number(store, "discard-secure")?.is_some_and(|v| v != 0),
        })
    } else {
        None
    };
    let indirect = number(store, "feature-max-indirect-segments")?.unwrap_or(0);
    Ok(Geometry {
        sectors,
        sector_size,
        physical_sector_size: u32::try_from(physical).unwrap_or(sector_size),
        info,
        read_only: info & abi::VDISK_READONLY != 0 || mode_read_only,
        flush: device.peer_feature(store, "flush-cache")?,
        discard,
        max_indirect_segments: u32::try_from(indirect).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use xen_store::mock::{MockConnection, MockStore};
    use xen_store::{Client, DomId, Errno, ErrorKind, Store};

    use super::*;

    const FRONT: &str = "/local/domain/1/device/vbd/768";

    /// A store whose reads of `virtual-device` fail with `EACCES`.
    struct Unreadable(Client<MockConnection>);

    impl Store for Unreadable {
        fn run<R>(&mut self, op: xen_store::op::Op<R>) -> Result<R, xen_store::Error> {
            self.0.run(op)
        }

        fn read(&mut self, path: &str) -> Result<Vec<u8>, xen_store::Error> {
            if path.ends_with("/virtual-device") {
                return Err(xen_store::Error::Xen(Errno::EACCES));
            }
            self.0.read(path)
        }
    }

    /// A frontend directory holding `virtual-device` = `value` (absent if `None`).
    fn directory(value: Option<&[u8]>) -> (Client<MockConnection>, Device) {
        let store = MockStore::new();
        store.write_as_dom0(
            &alloc::format!("{FRONT}/backend"),
            b"/local/domain/0/backend/vbd/1/768",
        );
        store.write_as_dom0(&alloc::format!("{FRONT}/backend-id"), b"0");
        if let Some(value) = value {
            store.write_as_dom0(&alloc::format!("{FRONT}/virtual-device"), value);
        }
        let mut client = Client::new(store.connect(DomId(0)));
        let device = Device::frontend(&mut client, FRONT).unwrap();
        (client, device)
    }

    #[test]
    fn the_handle_is_virtual_device_or_the_paths_last_component() {
        let (mut client, device) = directory(Some(b"51712"));
        assert_eq!(device_handle(&mut client, &device).unwrap(), 51712);
        let (mut client, device) = directory(None);
        assert_eq!(device_handle(&mut client, &device).unwrap(), 768);
    }

    #[test]
    fn a_failed_read_of_virtual_device_is_an_error() {
        let (client, device) = directory(Some(b"51712"));
        let error = device_handle(&mut Unreadable(client), &device).unwrap_err();
        assert!(
            matches!(&error, Error::Bus(xen_bus::Error::Store(e)) if e.kind() == ErrorKind::PermissionDenied),
            "{error:?}"
        );
    }

    #[test]
    fn a_virtual_device_that_is_no_number_is_an_error() {
        let (mut client, device) = directory(Some(b"xvda"));
        let error = device_handle(&mut client, &device).unwrap_err();
        assert!(
            matches!(&error, Error::Bus(xen_bus::Error::BadValue { .. })),
            "{error:?}"
        );
    }
}
