//! The backend in a Linux dom0 or driver domain: [`BlockBackend`] serves a file (or block
//! device) to one frontend over `/dev/xen/gntdev` (grant copies), `/dev/xen/evtchn` and
//! xenstore; [`add_vbd`] and [`remove_vbd`] do what a toolstack does to hot-plug the disk.
//!
//! The data path copies (`GNTTABOP_copy` through gntdev), never maps, the frontend's data
//! pages: one `GRANT_COPY` ioctl gathers the writes of a batch of requests, one scatters its
//! reads, so no data page stays mapped and a grant the frontend never made fails that request
//! alone. The ring's pages are the only mapping, unmapped when the [`Connection`] closes or
//! drops ([`ring_pages_mapped`] counts them process-wide).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::string::{String, ToString};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::vec::Vec;
use std::{format, vec};

use embedded_io::{Read, Write};
use xen_bus::{Deadline, Device, Publication, XenbusState};
use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::{BoundPort, EventChannel};
use xen_grant::GrantRef;
use xen_grant::linux::{CopyBatch, CopyDest, CopySegment, CopySource, Gntdev, Mapping};
use xen_hypercall::{DomId, Port};
use xen_shared::ring::RingMemory;
use xen_shared::{AccessError, ReqRingError, SharedMem};
use xen_store::{Access, Perm};
use xen_store::{Client, Store};
use zerocopy::IntoBytes;

use crate::abi::Segment;
use crate::abi::{RSP_OKAY, SECTOR_SIZE, VDISK_READONLY};
use crate::back::{Backend, BlockIo, Checked, Counts, Disk, Kind, MAX_INDIRECT_SEGMENTS};

/// The largest ring this backend maps: 2^4 pages (`max-ring-page-order`, as Linux's blkback).
pub const MAX_RING_PAGE_ORDER: u8 = 4;

/// How long [`Connection::serve_until`] sleeps on the port before it looks at its stop flag.
const STOP_POLL_MS: i32 = 50;

/// The frontend's native `protocol` (`public/io/protocols.h`); the only one served.
#[cfg(target_arch = "x86_64")]
const PROTOCOL: &str = "x86_64-abi";
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const PROTOCOL: &str = "arm-abi";

static RING_PAGES_MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Ring pages this process's backends have mapped and not yet unmapped (0 once every
/// [`Connection`] is closed or dropped).
pub fn ring_pages_mapped() -> usize {
    RING_PAGES_MAPPED.load(Ordering::SeqCst)
}

/// A failed backend operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// xenbus negotiation failed.
    #[error("xenbus: {0}")]
    Bus(#[from] xen_bus::Error),
    /// A xenstore operation failed.
    #[error("xenstore: {0}")]
    Store(#[from] xen_store::Error),
    /// Mapping the ring or copying data failed as a whole.
    #[error("grant: {0}")]
    Grant(#[from] xen_grant::Error),
    /// An event channel operation failed.
    #[error("event channel: {0}")]
    Event(#[from] xen_evtchn::Error),
    /// The frontend published something this backend cannot use.
    #[error("frontend's {key} is {value:?}: {why}")]
    Frontend {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The frontend's ring indices are impossible: it is disconnected.
    #[error("frontend broke the ring: {0}")]
    Ring(#[from] ReqRingError),
    /// The backing file (or an OS transport) failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The backend class [`add_vbd`] files a userspace backend under: `qdisk`, QEMU's, so that
/// Linux's blkback (which takes every device under `backend/vbd`) leaves it alone. The frontend
/// does not care: it follows its `backend` key.
pub const USERSPACE_CLASS: &str = "qdisk";

/// The frontend and backend directories of one virtual block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdPaths {
    /// `/local/domain/<domid>/device/vbd/<devid>`.
    pub frontend: String,
    /// `/local/domain/<backend>/backend/<class>/<domid>/<devid>`.
    pub backend: String,
}

/// Hot-plugs a disk as a toolstack does: writes, in one transaction, the frontend directory
/// (`backend`, `backend-id`, `state` Initialising, `virtual-device`, `device-type`; owned by
/// the guest, readable by the backend) and the backend directory (`frontend`, `frontend-id`,
/// `state` Initialising, `online`, `mode`, `dev`, `type`; owned by the backend, readable by the
/// guest). The guest's xenbus sees a new device under `device/vbd` and probes it. The backend
/// directory is under `backend/<class>`: `vbd` for Linux's blkback, [`USERSPACE_CLASS`] for
/// this crate's backend (Linux's blkback would take a `vbd` too, in a dom0 that loaded it).
/// `devid` is the virtual device number (`202 << 8 | 16` is `xvdb`); `vdev` its name (`xvdb`).
///
/// # Errors
///
/// [`BackendError::Store`] if a write or the transaction fails (e.g. `EACCES` when this
/// domain may not write the guest's directory).
pub fn add_vbd<T: Read + Write>(
    client: &mut Client<T>,
    class: &str,
    frontend_id: DomId,
    backend_id: DomId,
    devid: u32,
    vdev: &str,
    readonly: bool,
) -> Result<VbdPaths, BackendError>
where
    T::Error: 'static,
{
    let front_home = client.get_domain_path(frontend_id)?;
    let back_home = client.get_domain_path(backend_id)?;
    let paths = VbdPaths {
        frontend: format!("{front_home}/device/vbd/{devid}"),
        backend: format!("{back_home}/backend/{class}/{}/{devid}", frontend_id.0),
    };
    let front_perms = [
        Perm::new(frontend_id, Access::None),
        Perm::new(backend_id, Access::Read),
    ];
    let back_perms = [
        Perm::new(backend_id, Access::None),
        Perm::new(frontend_id, Access::Read),
    ];
    let initialising = XenbusState::Initialising.as_u32().to_string();
    let mode = if readonly { "r" } else { "w" };
    client.transact(|tx| {
        // Made first with their permissions, so that the nodes below inherit them.
        tx.mkdir(&paths.frontend)?;
        tx.set_perms(&paths.frontend, &front_perms)?;
        tx.mkdir(&paths.backend)?;
        tx.set_perms(&paths.backend, &back_perms)?;
        let front = |key: &str| format!("{}/{key}", paths.frontend);
        let back = |key: &str| format!("{}/{key}", paths.backend);
        tx.write(&front("backend"), paths.backend.as_bytes())?;
        tx.write(&front("backend-id"), backend_id.0.to_string().as_bytes())?;
        tx.write(&front("virtual-device"), devid.to_string().as_bytes())?;
        tx.write(&front("device-type"), b"disk")?;
        tx.write(&front("state"), initialising.as_bytes())?;
        tx.write(&back("frontend"), paths.frontend.as_bytes())?;
        tx.write(&back("frontend-id"), frontend_id.0.to_string().as_bytes())?;
        tx.write(&back("online"), b"1")?;
        tx.write(&back("removable"), b"0")?;
        tx.write(&back("mode"), mode.as_bytes())?;
        tx.write(&back("dev"), vdev.as_bytes())?;
        tx.write(&back("type"), b"file")?;
        tx.write(&back("state"), initialising.as_bytes())
    })?;
    Ok(paths)
}

/// Removes both directories of a device (after its backend closed), as a toolstack does last.
///
/// # Errors
///
/// [`BackendError::Store`] if a removal or the transaction fails.
pub fn remove_vbd<T: Read + Write>(
    client: &mut Client<T>,
    paths: &VbdPaths,
) -> Result<(), BackendError>
where
    T::Error: 'static,
{
    client.transact(|tx| {
        tx.rm(&paths.backend)?;
        tx.rm(&paths.frontend)
    })?;
    Ok(())
}

/// One disk served to one frontend: the xenbus backend role over a backing file.
#[derive(Debug)]
pub struct BlockBackend {
    device: Device,
    file: File,
    disk: Disk,
}

impl BlockBackend {
    /// Takes the backend directory at `path` (written by a toolstack, or [`add_vbd`]), serving
    /// `file`, whose length is the disk's size (rounded down to 512-byte sectors). Publishes
    /// the features (`feature-flush-cache`, `max-ring-page-order`) and switches to
    /// `InitWait`, so the frontend may set up its ring.
    ///
    /// # Errors
    ///
    /// [`BackendError::Bus`] if the backend directory lacks `frontend` or `frontend-id` or the
    /// publication fails, [`BackendError::Io`] if `file`'s length cannot be read.
    pub fn new<T: Read + Write>(
        client: &mut Client<T>,
        path: &str,
        file: File,
        readonly: bool,
    ) -> Result<Self, BackendError>
    where
        T::Error: 'static,
    {
        let device = Device::backend(client, path)?;
        let sectors = file.metadata()?.len() / SECTOR_SIZE as u64;
        let features = Publication::new()
            .value("feature-flush-cache", 1)
            .value("feature-max-indirect-segments", MAX_INDIRECT_SEGMENTS)
            .value("max-ring-page-order", MAX_RING_PAGE_ORDER);
        device.publish(client, &features, XenbusState::InitWait)?;
        Ok(Self {
            device,
            file,
            disk: Disk { sectors, readonly },
        })
    }

    /// The xenbus device (paths, peer, states).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The disk served.
    pub fn disk(&self) -> Disk {
        self.disk
    }

    /// Waits until the frontend published its ring (`Initialised`), maps the ring
    /// (`ring-ref`, or `ring-page-order` and `ring-ref<i>`), binds its `event-channel`,
    /// publishes the geometry (`sectors`, `sector-size`, `info`) and switches to `Connected`.
    /// Every mapping and binding made is released again if a later step fails.
    ///
    /// `evtchn` must be this connection's alone: [`Connection::serve_until`] takes every port
    /// pending on it, so another user's events would be lost (open one per connection).
    ///
    /// # Errors
    ///
    /// [`BackendError::Bus`] if the wait fails (the frontend closes, `deadline` passes),
    /// [`BackendError::Frontend`] if the frontend published an unusable protocol, ring or port,
    /// [`BackendError::Grant`] if the ring cannot be mapped, [`BackendError::Event`] if the port
    /// cannot be bound, [`BackendError::Store`] or [`BackendError::Bus`] if publishing fails.
    pub fn connect<'d, T: Read + Write>(
        &'d self,
        client: &mut Client<T>,
        gntdev: &'d Gntdev,
        evtchn: &'d EvtchnDevice,
        deadline: &mut impl Deadline,
    ) -> Result<Connection<'d>, BackendError>
    where
        T::Error: 'static,
    {
        let device = &self.device;
        device.wait_for_peer_ready(client, XenbusState::Initialised, deadline)?;
        let domid = device.peer_id();
        if let Some(protocol) = device.read_peer(client, "protocol")? {
            if protocol != PROTOCOL.as_bytes() {
                return Err(BackendError::Frontend {
                    key: "protocol",
                    value: String::from_utf8_lossy(&protocol).into_owned(),
                    why: "only the native ABI is served",
                });
            }
        }
        let (order, refs) = ring_refs(client, device)?;
        let remote_port = read_number(client, device, "event-channel")?;
        let remote_port = u32::try_from(remote_port).map_err(|_| BackendError::Frontend {
            key: "event-channel",
            value: remote_port.to_string(),
            why: "not a port",
        })?;
        let ring = MappedRing::map(gntdev, domid, &refs)?;
        let backend = Backend::new(ring, order, self.disk).map_err(|e| BackendError::Frontend {
            key: "ring-page-order",
            value: order.to_string(),
            why: shape_why(e),
        })?;
        let port = evtchn.bind_interdomain(domid, Port::new(remote_port))?;
        let info = if self.disk.readonly {
            VDISK_READONLY
        } else {
            0
        };
        let geometry = Publication::new()
            .value("sectors", self.disk.sectors)
            .value("sector-size", SECTOR_SIZE)
            .value("physical-sector-size", SECTOR_SIZE)
            .value("info", info);
        // Dropping `backend` and `port` on failure unmaps and unbinds.
        device.publish(client, &geometry, XenbusState::Connected)?;
        Ok(Connection {
            backend,
            port,
            io: FileIo {
                gntdev,
                domid,
                file: &self.file,
                buf: Vec::new(),
            },
        })
    }

    /// Detaches the frontend, in Linux's blkback order: switches to `Closing` (the frontend's
    /// blkfront stops queueing and closes), keeps serving while it waits for the frontend to
    /// close (`Closing`, `Closed` or gone; or `deadline`), then calls `release`, which stops
    /// the serving loop and [closes](Connection::close) the connection (the ring unmapped, the
    /// port closed), and switches to `Closed` last. Returns the frontend's state as last seen
    /// and what `release` returned. `release` runs even if the wait failed. The directories
    /// are the toolstack's to remove after ([`remove_vbd`]).
    ///
    /// # Errors
    ///
    /// [`BackendError::Bus`] if a state write fails or the wait fails otherwise than by
    /// `deadline` (which only ends the wait).
    pub fn detach<T: Read + Write, R>(
        &self,
        client: &mut Client<T>,
        release: impl FnOnce() -> R,
        deadline: &mut impl Deadline,
    ) -> Result<(XenbusState, R), BackendError>
    where
        T::Error: 'static,
    {
        let closing = self.device.switch_state(client, XenbusState::Closing);
        let waited = closing.and_then(|()| {
            match self
                .device
                .wait_for_peer(client, XenbusState::is_closing, deadline)
            {
                // A frontend that does not close cannot hold the backend up.
                Err(xen_bus::Error::TimedOut { last }) => Ok(last),
                other => other,
            }
        });
        let released = release();
        let waited = waited?;
        self.device.switch_state(client, XenbusState::Closed)?;
        Ok((waited, released))
    }
}

/// Why a ring of that order cannot be used.
fn shape_why(error: xen_shared::ShapeError) -> &'static str {
    match error {
        xen_shared::ShapeError::OrderTooLarge(_) => "too large",
        _ => "does not match the pages mapped",
    }
}

/// A frontend key that must be a decimal number.
fn read_number<S: Store>(
    store: &mut S,
    device: &Device,
    key: &'static str,
) -> Result<u64, BackendError> {
    device
        .read_peer_u64(store, key)?
        .ok_or(BackendError::Frontend {
            key,
            value: String::new(),
            why: "missing",
        })
}

/// The ring's page order and grant references, as the frontend published them.
fn ring_refs<S: Store>(
    store: &mut S,
    device: &Device,
) -> Result<(u8, Vec<GrantRef>), BackendError> {
    let gref = |value: u64, key: &'static str| {
        u32::try_from(value)
            .map(GrantRef)
            .map_err(|_| BackendError::Frontend {
                key,
                value: value.to_string(),
                why: "not a grant reference",
            })
    };
    let Some(order) = device.read_peer_u64(store, "ring-page-order")? else {
        let value = read_number(store, device, "ring-ref")?;
        return Ok((0, vec![gref(value, "ring-ref")?]));
    };
    if order > u64::from(MAX_RING_PAGE_ORDER) {
        return Err(BackendError::Frontend {
            key: "ring-page-order",
            value: order.to_string(),
            why: "above max-ring-page-order",
        });
    }
    let mut refs = Vec::new();
    for i in 0..1u32 << order {
        let key = format!("ring-ref{i}");
        let value = device
            .read_peer_u64(store, &key)?
            .ok_or(BackendError::Frontend {
                key: "ring-ref<i>",
                value: key,
                why: "missing",
            })?;
        refs.push(gref(value, "ring-ref<i>")?);
    }
    Ok((order as u8, refs))
}

/// The ring's pages, mapped writable from the frontend; counted in [`ring_pages_mapped`].
#[derive(Debug)]
struct MappedRing<'d> {
    mapping: Option<Mapping<'d>>,
    pages: usize,
}

impl<'d> MappedRing<'d> {
    fn map(gntdev: &'d Gntdev, domid: DomId, refs: &[GrantRef]) -> Result<Self, BackendError> {
        let mapping = gntdev.map(domid, refs, false)?;
        RING_PAGES_MAPPED.fetch_add(refs.len(), Ordering::SeqCst);
        Ok(Self {
            mapping: Some(mapping),
            pages: refs.len(),
        })
    }

    fn mem(&self) -> Result<SharedMem<'_>, AccessError> {
        // Mapped writable, so `mem` is `Some` while the mapping lives.
        self.mapping
            .as_ref()
            .and_then(Mapping::mem)
            .ok_or(AccessError::OutOfBounds {
                offset: 0,
                len: 0,
                size: 0,
            })
    }

    /// Unmaps now, reporting gntdev's answer.
    fn unmap(mut self) -> Result<usize, BackendError> {
        let pages = self.pages;
        let mapping = self.mapping.take();
        RING_PAGES_MAPPED.fetch_sub(pages, Ordering::SeqCst);
        mapping.map(Mapping::unmap).transpose()?;
        Ok(pages)
    }
}

impl Drop for MappedRing<'_> {
    fn drop(&mut self) {
        if self.mapping.take().is_some() {
            RING_PAGES_MAPPED.fetch_sub(self.pages, Ordering::SeqCst);
        }
    }
}

impl RingMemory for MappedRing<'_> {
    fn len(&self) -> usize {
        self.mapping.as_ref().map_or(0, Mapping::len)
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        self.mem()?.load_index(offset, order)
    }
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        self.mem()?.store_index(offset, value, order)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        RingMemory::read(&self.mem()?, offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        RingMemory::write(&self.mem()?, offset, src)
    }
}

/// A connected frontend: its ring mapped, its port bound.
#[derive(Debug)]
pub struct Connection<'d> {
    backend: Backend<MappedRing<'d>>,
    port: BoundPort<&'d EvtchnDevice>,
    io: FileIo<'d>,
}

/// What [`Connection::close`] released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Ring pages unmapped.
    pub ring_pages: usize,
    /// The port closed.
    pub port: Port,
    /// The requests answered over the connection's life.
    pub counts: Counts,
}

impl Connection<'_> {
    /// The requests answered so far.
    pub fn counts(&self) -> Counts {
        self.backend.counts()
    }

    /// The local port bound to the frontend's.
    pub fn port(&self) -> Port {
        self.port.port()
    }

    /// Serves requests until `stop` is set (looked at least every 50 ms) or the frontend
    /// breaks the ring ([`BackendError::Ring`]: the caller disconnects it).
    ///
    /// Who wakes whom: after each pass the ring asks the frontend to notify for its next
    /// request (`req_event`) and checks once more ([`Backend::serve`]), so a request published
    /// later comes with an event on the port. The event wakes `poll` on the evtchn device
    /// (Linux's `evtchn_interrupt` queues the port and masks it), the port is taken and
    /// unmasked before the next pass (an event while masked stays pending and is raised again
    /// by the unmask), so none is lost between the pass and the sleep.
    ///
    /// # Errors
    ///
    /// [`BackendError::Ring`] as above, [`BackendError::Event`] if notifying, waiting or
    /// unmasking fails (a failed read or write of the file only fails its request).
    pub fn serve_until(&mut self, stop: &AtomicBool) -> Result<(), BackendError> {
        let evtchn: &EvtchnDevice = self.port.channel();
        let mut ports = [Port::new(0); 8];
        while !stop.load(Ordering::Acquire) {
            if self.backend.serve(&mut self.io)? {
                self.port.notify()?;
            }
            evtchn.wait_readable(STOP_POLL_MS)?;
            if evtchn.take_pending(&mut ports)? > 0 {
                self.port.unmask()?;
            }
        }
        Ok(())
    }

    /// Ends the connection: unmaps the ring and closes the port (both also happen on drop).
    /// Requests taken were all answered; those still in the ring are not, which the frontend
    /// sees as a disk gone away.
    ///
    /// # Errors
    ///
    /// [`BackendError::Grant`] if unmapping the ring fails, [`BackendError::Event`] if closing
    /// the port fails. The port is closed first, as Linux's blkback unbinds its interrupt
    /// before it unmaps the ring, and the ring is unmapped either way.
    pub fn close(self) -> Result<Released, BackendError> {
        let Self { backend, port, .. } = self;
        let counts = backend.counts();
        let local = port.port();
        let port_result = port.close();
        let ring_pages = backend.into_memory().unmap()?;
        port_result?;
        Ok(Released {
            ring_pages,
            port: local,
            counts,
        })
    }
}

/// The data path of a [`Connection`]: grant copies between the frontend's pages and a buffer,
/// `pread`/`pwrite` between the buffer and the file, `fdatasync` for a flush.
#[derive(Debug)]
struct FileIo<'d> {
    gntdev: &'d Gntdev,
    domid: DomId,
    file: &'d File,
    buf: Vec<u8>,
}

impl FileIo<'_> {
    /// One `GRANT_COPY` of `segments`; whether each was copied.
    fn copy(&self, segments: &mut [CopySegment<'_>]) -> Vec<bool> {
        let count = segments.len();
        if count == 0 {
            return Vec::new();
        }
        let Ok(mut batch) = CopyBatch::new(segments) else {
            return vec![false; count];
        };
        match self.gntdev.copy_batch(&mut batch) {
            Ok(()) | Err(xen_grant::Error::Copy { .. }) => {
                batch.statuses().map(|s| s.0 == 0).collect()
            }
            Err(_) => vec![false; count],
        }
    }
}

impl BlockIo for FileIo<'_> {
    fn read_indirect(&mut self, grefs: &[GrantRef], out: &mut [Segment]) -> bool {
        let bytes = out.as_mut_bytes();
        let mut segments: Vec<CopySegment<'_>> = bytes
            .chunks_mut(xen_grant::PAGE_SIZE)
            .zip(grefs)
            .map(|(chunk, &gref)| CopySegment {
                len: chunk.len() as u16,
                source: CopySource::Grant {
                    domid: self.domid,
                    gref,
                    offset: 0,
                },
                dest: CopyDest::Local(chunk),
            })
            .collect();
        let pages = segments.len();
        pages == grefs.len() && self.copy(&mut segments).into_iter().all(|ok| ok)
    }

    fn perform(&mut self, requests: &[Checked], statuses: &mut [i16]) {
        let total = requests.iter().map(Checked::len).sum();
        let mut buf = core::mem::take(&mut self.buf);
        buf.resize(total, 0);
        let mut ok = vec![true; requests.len()];
        // Each request's piece of the buffer, in order.
        let mut pieces: Vec<&mut [u8]> = Vec::with_capacity(requests.len());
        let mut rest = &mut buf[..];
        for request in requests {
            let (piece, tail) = rest.split_at_mut(request.len());
            pieces.push(piece);
            rest = tail;
        }
        // Gather every write's data with one copy.
        {
            let mut owners = Vec::new();
            let mut segments = Vec::new();
            for (i, (request, piece)) in requests.iter().zip(pieces.iter_mut()).enumerate() {
                if request.reads_disk() {
                    continue;
                }
                let mut piece = &mut piece[..];
                for seg in request.segments() {
                    let (bytes, tail) = piece.split_at_mut(usize::from(seg.len));
                    piece = tail;
                    owners.push(i);
                    segments.push(CopySegment {
                        source: CopySource::Grant {
                            domid: self.domid,
                            gref: seg.gref,
                            offset: seg.offset,
                        },
                        dest: CopyDest::Local(bytes),
                        len: seg.len,
                    });
                }
            }
            for (i, copied) in owners.into_iter().zip(self.copy(&mut segments)) {
                ok[i] &= copied;
            }
        }
        // The disk, in request order (a read after a write of the batch sees it).
        for ((request, piece), ok) in requests.iter().zip(pieces.iter_mut()).zip(&mut ok) {
            if !*ok {
                continue;
            }
            let result = match request.kind() {
                Kind::Read => self.file.read_exact_at(piece, request.offset()),
                Kind::Write => self.file.write_all_at(piece, request.offset()),
                Kind::Flush => self
                    .file
                    .write_all_at(piece, request.offset())
                    .and_then(|()| self.file.sync_data()),
            };
            *ok = result.is_ok();
        }
        // Scatter every read's data with one copy.
        {
            let mut owners = Vec::new();
            let mut segments = Vec::new();
            for (i, (request, piece)) in requests.iter().zip(pieces.iter()).enumerate() {
                if !request.reads_disk() || !ok[i] {
                    continue;
                }
                let mut piece = &piece[..];
                for seg in request.segments() {
                    let (bytes, tail) = piece.split_at(usize::from(seg.len));
                    piece = tail;
                    owners.push(i);
                    segments.push(CopySegment {
                        source: CopySource::Local(bytes),
                        dest: CopyDest::Grant {
                            domid: self.domid,
                            gref: seg.gref,
                            offset: seg.offset,
                        },
                        len: seg.len,
                    });
                }
            }
            for (i, copied) in owners.into_iter().zip(self.copy(&mut segments)) {
                ok[i] &= copied;
            }
        }
        for (status, ok) in statuses.iter_mut().zip(ok) {
            if ok {
                *status = RSP_OKAY;
            }
        }
        drop(pieces);
        self.buf = buf;
    }
}
