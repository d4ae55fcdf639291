//! The domU half of the block-device run ([`exchange::blk`]): the disk dom0 serves through
//! Linux's blkback, found from this domain's frontend directory over xenstore, then driven by
//! xen-blk's frontend: geometry, dom0's pattern read, the domU's pattern written with many
//! requests in flight, flushed and read back, bad requests refused, and the close when dom0
//! detaches the disk.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use xen_blk::{DevicePage, Frontend};
use xen_grant::{GrantPage, GrantTable};
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall::{Error, XenHypercall};
use xen_shared::{PAGE_SIZE, SharedMem};
use xen_store::{ErrorKind, Store};
use xen_testbed_protocol::Reporter;
use xen_testbed_protocol::bulk::Digest;
use xen_testbed_protocol::exchange::{self, blk};

use super::console_ring::RingConsole;
use super::evtchn_port::Channel;
use super::xenstore::XenStore;
use super::{Events, Platform, grant_table};
use crate::arch::RawMemory;
use crate::fail::{CaseResult, Fail, fail};

/// How long one request waits for xenstored.
const REQUEST_NS: u64 = 5_000_000_000;
/// How long the domU waits for the backend, and for dom0.
const WAIT_NS: u64 = blk::WAIT_SECONDS * 1_000_000_000;
/// How long the close may take once the backend is closing: less than libxl waits for the
/// backend to close (`LIBXL_DESTROY_TIMEOUT`, 10 s), so that a close that fails says so first.
const CLOSE_NS: u64 = 8_000_000_000;
/// How long one pass over the whole disk may take.
const PASS_NS: u64 = 60_000_000_000;
/// XenbusStateInitWait (`public/io/xenbus.h`): the backend waits for the frontend.
const INIT_WAIT: &[u8] = b"2";
/// The frontend's data pages, all granted at connect: as many as the one grant-table frame
/// this domain maps holds beside the ring (512 entries, 8 reserved for the toolstack): 28
/// requests of 64 KiB in flight (16 data pages and an indirect page each), or a full ring (32)
/// of up to 56 KiB.
const DATA_PAGES: usize = 28 * 17;
/// The bytes each request of the write pass carries: one page, so the ring fills up.
const WRITE_REQUEST: usize = PAGE_SIZE;
/// The bytes the read passes read at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The frontend's pages: its ring, then its data pages.
static PAGES: RawMemory<[[u8; PAGE_SIZE]; 1 + DATA_PAGES]> =
    RawMemory::new([[0; PAGE_SIZE]; 1 + DATA_PAGES]);
/// Set once [`PAGES`] is handed out (so each page has one owner).
static PAGES_TAKEN: AtomicBool = AtomicBool::new(false);

/// A page of [`PAGES`] for the frontend, by the frame number Xen knows it by.
#[derive(Debug)]
struct DiskPage {
    page: NonNull<u8>,
    frame: u64,
}

// SAFETY: `frame` is the frame of the static page at `page` (`Platform::frame_of` computed it),
// which is never freed; the page is reached only through `SharedMem` views (`mem`), as
// `PAGES_TAKEN` hands each page out once and nothing else touches `PAGES`.
unsafe impl GrantPage for DiskPage {
    fn frame(&self) -> u64 {
        self.frame
    }
}

impl DevicePage for DiskPage {
    fn mem(&self) -> SharedMem<'_> {
        // SAFETY: a whole page-aligned static page, mapped for the program's life, accessed
        // only through such views (see the `GrantPage` implementation).
        unsafe { SharedMem::from_raw_parts(self.page, PAGE_SIZE) }
    }
}

/// The frontend's ring page and data pages, once.
fn take_pages<P: Platform>(platform: &P) -> Result<(DiskPage, Vec<DiskPage>), Fail> {
    if PAGES_TAKEN.swap(true, Ordering::AcqRel) {
        fail!("the frontend's pages are taken");
    }
    let base = PAGES.as_mut_ptr().cast::<u8>();
    let mut pages = Vec::with_capacity(1 + DATA_PAGES);
    for index in 0..1 + DATA_PAGES {
        let address = base.wrapping_add(index * PAGE_SIZE);
        let page = NonNull::new(address).ok_or_else(|| Fail::new(format_args!("null page")))?;
        let frame = u64::from(platform.frame_of(address)?);
        pages.push(DiskPage { page, frame });
    }
    let ring = pages.remove(0);
    Ok((ring, pages))
}

/// The disk dom0 announced in [`blk::BLK`], if any: its size in sectors.
pub(crate) fn requested<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
) -> Option<u64> {
    read_number(store, blk::BLK)
}

/// The rounds dom0 asked for in [`blk::BENCH`], if any.
fn bench_rounds<H: XenHypercall<Error = Error> + Copy>(store: &mut XenStore<H>) -> Option<u32> {
    read_number(store, blk::BENCH)
}

/// The decimal number in `path`, if it is there and one.
fn read_number<H: XenHypercall<Error = Error> + Copy, T: core::str::FromStr>(
    store: &mut XenStore<H>,
    path: &str,
) -> Option<T> {
    let mut value = [0; 24];
    let value = store.read(path, &mut value).ok()?;
    core::str::from_utf8(value).ok()?.parse().ok()
}

/// The frontend over this run's pages, grant table and channel.
type Front<'t, H> = Frontend<'t, H, DiskPage, Channel<H>>;

/// Runs the block steps ([`blk::DOMU_CASES`] but the last).
pub(crate) fn run<P: Platform>(
    platform: &P,
    events: Events<P::Hypercall>,
    r: &mut Reporter<RingConsole<P::Hypercall>>,
    store: &mut XenStore<P::Hypercall>,
    sectors: u64,
) {
    let backend = match find_backend(store) {
        Ok(backend) => {
            r.out(format_args!(
                "device/vbd/{} is served by domain 0 at {backend}",
                blk::DEVID
            ));
            r.case("blk_vbd_found", Ok::<(), Fail>(()));
            backend
        }
        Err(error) => return r.case("blk_vbd_found", Err(error)),
    };
    let state = alloc::format!("{backend}/state");
    let init_wait = wait_for(store, &state, INIT_WAIT).and_then(|()| {
        store
            .client(REQUEST_NS)
            .write(exchange::READY, b"1")
            .map_err(failed("write ready"))
    });
    if init_wait.is_ok() {
        r.out(format_args!("{state} = 2 (InitWait): blkback waits for us"));
    }
    r.case("blk_backend_init_wait", init_wait);
    // Dom0 checks the backend as the toolstack set it up before this domain connects.
    if let Err(error) = wait_for(store, blk::CHECKED, b"1") {
        return r.case("blk_connected", Err(error));
    }
    let table = match grant_table(platform) {
        Ok(table) => table,
        Err(error) => return r.case("blk_connected", Err(error)),
    };
    let channel = events.channel();
    let frontend = connect(platform, events, &table, &channel, store, sectors);
    let mut frontend = match frontend {
        Ok(frontend) => {
            let g = frontend.geometry();
            r.out(format_args!(
                "connected: {} sectors of {} bytes, info {:#x}, flush {}, discard {}, \
                 indirect segments {}, port {}",
                g.sectors,
                g.sector_size,
                g.info,
                g.flush,
                g.discard.is_some(),
                g.max_indirect_segments,
                frontend.port().raw()
            ));
            r.case("blk_connected", Ok::<(), Fail>(()));
            frontend
        }
        Err(error) => return r.case("blk_connected", Err(error)),
    };
    let mut io = Io {
        events,
        channel: &channel,
        port: frontend.port(),
    };
    let bytes = sectors * blk::SECTOR_SIZE as u64;
    if let Some(rounds) = bench_rounds(store) {
        let bench = io.bench(r, &mut frontend, bytes, rounds).and_then(|()| {
            store
                .client(REQUEST_NS)
                .write(blk::BENCHED, b"1")
                .map_err(failed("write"))
        });
        r.case("blk_bench", bench);
        let closed = close_on_detach(events, &table, frontend, store);
        return r.case("blk_closed_on_detach", closed.map(drop));
    }
    let read = io.read_pass(&mut frontend, blk::DOM0_SEED, bytes, false);
    if let Ok((ns, _)) = &read {
        r.out(format_args!(
            "blk read {bytes} bytes of dom0's pattern in {READ_CHUNK}-byte reads: {}",
            rate(bytes, *ns)
        ));
    }
    r.case("blk_read_dom0_pattern", read.map(drop));
    let write = io.write_pass(&mut frontend, bytes);
    if let Ok(pass) = &write {
        r.out(format_args!(
            "blk wrote {bytes} bytes of the domU's pattern in {} requests of {WRITE_REQUEST} \
             bytes, up to {} in flight: {}",
            pass.requests,
            pass.most_in_flight,
            rate(bytes, pass.ns)
        ));
    }
    r.case("blk_write_pattern", write.map(drop));
    r.case("blk_discard", io.discard_and_rewrite(&mut frontend));
    let deadline = events.deadline(WAIT_NS);
    let flush = if frontend.geometry().flush {
        frontend
            .flush(&mut || io.sleep(deadline))
            .map_err(|e| Fail::new(format_args!("{e}")))
    } else {
        Err(Fail::new(format_args!(
            "the backend offers no feature-flush-cache"
        )))
    };
    r.case("blk_flush", flush);
    let read_back = io.read_pass(&mut frontend, blk::DOMU_SEED, bytes, true);
    let digest = read_back.as_ref().ok().map(|(_, digest)| *digest);
    if let Ok((ns, digest)) = &read_back {
        r.out(format_args!(
            "blk read back {bytes} bytes of the domU's pattern (read_async), digest \
             {digest:016x}: {}",
            rate(bytes, *ns)
        ));
    }
    r.case("blk_read_back", read_back.map(drop));
    r.case("blk_bad_requests_refused", io.bad_requests(&mut frontend));
    let closed = digest
        .ok_or_else(|| Fail::new(format_args!("nothing read back to report")))
        .and_then(|digest| {
            let mut value = String::new();
            let _ = write!(value, "{bytes} {digest:016x}");
            store
                .client(REQUEST_NS)
                .write(blk::WRITTEN, value.as_bytes())
                .map_err(failed("write"))
        })
        .and_then(|()| close_on_detach(events, &table, frontend, store));
    if let Ok(port) = &closed {
        r.out(format_args!(
            "the backend closed: our grants ended after blkback unmapped them, port {} closed, \
             state Closed",
            port.raw()
        ));
    }
    r.case("blk_closed_on_detach", closed.map(drop));
}

/// Connects the frontend and checks the geometry against what dom0 announced.
fn connect<'t, P: Platform>(
    platform: &P,
    events: Events<P::Hypercall>,
    table: &'t GrantTable<P::Hypercall>,
    channel: &'t Channel<P::Hypercall>,
    store: &mut XenStore<P::Hypercall>,
    sectors: u64,
) -> Result<Front<'t, P::Hypercall>, Fail> {
    let (ring, data) = take_pages(platform)?;
    let deadline = events.deadline(WAIT_NS);
    let path = alloc::format!("device/vbd/{}", blk::DEVID);
    let frontend = Frontend::connect(
        store.client(WAIT_NS),
        &path,
        table,
        channel,
        ring,
        data,
        &mut || events.now() >= deadline,
    )
    .map_err(|e| Fail::new(format_args!("{e}")))?;
    let g = frontend.geometry();
    if g.sectors != sectors || g.sector_size as usize != blk::SECTOR_SIZE || g.read_only {
        fail!(
            "the backend's disk is {} sectors of {} bytes (read-only {}); dom0 set up {sectors} of {}",
            g.sectors,
            g.sector_size,
            g.read_only,
            blk::SECTOR_SIZE
        );
    }
    Ok(frontend)
}

/// One pass of the write: how it went.
struct WritePass {
    requests: u64,
    most_in_flight: usize,
    ns: u64,
}

/// Waits for the frontend's responses.
struct Io<'c, H: XenHypercall<Error = Error> + Copy> {
    events: Events<H>,
    channel: &'c Channel<H>,
    port: Port,
}

impl<H: XenHypercall<Error = Error> + Copy> Io<'_, H> {
    /// `rounds` of [`blk::BENCH_MEASURES`] over the disk's `bytes`, a
    /// [`blk::BENCH_RESULT`] line each.
    fn bench(
        &mut self,
        r: &mut Reporter<RingConsole<H>>,
        frontend: &mut Front<'_, H>,
        bytes: u64,
        rounds: u32,
    ) -> CaseResult {
        for _ in 0..rounds {
            for (measure, size, depth, write) in blk::BENCH_MEASURES {
                let start = self.events.now();
                self.pass(frontend, bytes, size, depth, write)
                    .map_err(|e| Fail::new(format_args!("{measure}: {e}")))?;
                let end = self.events.now();
                r.out(format_args!(
                    "{}{measure} {bytes} {}.{:09} {}.{:09}",
                    blk::BENCH_RESULT,
                    start / 1_000_000_000,
                    start % 1_000_000_000,
                    end / 1_000_000_000,
                    end % 1_000_000_000
                ));
            }
        }
        Ok(())
    }

    /// One sequential pass over the disk's `bytes` in `size`-byte requests, at most `depth` in
    /// flight: a read copies each completion out, a write copies its data in.
    fn pass(
        &mut self,
        frontend: &mut Front<'_, H>,
        bytes: u64,
        size: usize,
        depth: usize,
        write: bool,
    ) -> CaseResult {
        let err = |what: &str, e: xen_blk::Error| Fail::new(format_args!("{what}: {e}"));
        let mut buf = vec![0; size];
        blk::fill(&mut buf, blk::DOMU_SEED, 0);
        let deadline = self.events.deadline(PASS_NS);
        let mut offset = 0;
        while offset < bytes || frontend.in_flight() > 0 {
            while offset < bytes && frontend.in_flight() < depth && frontend.can_submit(size) {
                let sector = offset / blk::SECTOR_SIZE as u64;
                if write {
                    frontend.submit_write(sector, &buf)
                } else {
                    frontend.submit_read(sector, size)
                }
                .map_err(|e| err("submit", e))?;
                offset += size as u64;
            }
            frontend.kick().map_err(|e| err("kick", e))?;
            let mut completed = false;
            while let Some(completion) = frontend.poll().map_err(|e| err("poll", e))? {
                completion
                    .result()
                    .map_err(|e| Fail::new(format_args!("a request failed: {e}")))?;
                if !write {
                    completion
                        .copy_to(0, &mut buf)
                        .map_err(|e| err("copy", e))?;
                }
                completed = true;
            }
            if !completed {
                self.await_response(frontend, deadline)?;
            }
        }
        Ok(())
    }

    /// Waits for a response: sleeps on the port unless `prepare_to_wait` finds one waiting
    /// (when it finds none, the backend signals the next one it publishes).
    fn await_response(&self, frontend: &mut Front<'_, H>, deadline: u64) -> CaseResult {
        let waiting = frontend
            .prepare_to_wait()
            .map_err(|e| Fail::new(format_args!("prepare: {e}")))?;
        if !waiting && !self.sleep(deadline) {
            fail!(
                "no response within {} s, {} in flight",
                PASS_NS / 1_000_000_000,
                frontend.in_flight()
            );
        }
        Ok(())
    }

    /// Sleeps until an event on the frontend's port; `false` once `deadline` passed.
    fn sleep(&self, deadline: u64) -> bool {
        self.events
            .await_event(self.channel, self.port, deadline, "blkback")
            .is_ok()
    }

    /// Reads the whole disk, [`READ_CHUNK`] bytes at a time, and checks the pattern of `seed`;
    /// returns the time taken and the digest of what it read. `awaited`: through the async API
    /// (`read_async`, run by [`Events::block_on`](super::Events::block_on)), else the blocking
    /// one.
    fn read_pass(
        &mut self,
        frontend: &mut Front<'_, H>,
        seed: u8,
        bytes: u64,
        awaited: bool,
    ) -> Result<(u64, u64), Fail> {
        let mut buf = vec![0; READ_CHUNK];
        let mut digest = Digest::new();
        let start = self.events.now();
        let deadline = self.events.deadline(PASS_NS);
        let mut offset = 0;
        while offset < bytes {
            let n = READ_CHUNK.min((bytes - offset) as usize);
            let sector = offset / blk::SECTOR_SIZE as u64;
            let failed = |e: &dyn core::fmt::Display| {
                Fail::new(format_args!("read at sector {sector}: {e}"))
            };
            if awaited {
                let read = frontend.read_async(sector, &mut buf[..n]);
                self.events
                    .block_on(self.channel, deadline, "blkback", read)
                    .map_err(|e| failed(&e))?
                    .map_err(|e| failed(&e))?;
            } else {
                frontend
                    .read(sector, &mut buf[..n], &mut || self.sleep(deadline))
                    .map_err(|e| failed(&e))?;
            }
            if let Some(at) = blk::first_mismatch(&buf[..n], seed, offset) {
                fail!(
                    "byte {at} (sector {}) reads {:#04x}, the pattern has {:#04x}",
                    at / blk::SECTOR_SIZE as u64,
                    buf[(at - offset) as usize],
                    blk::pattern_byte(seed, at)
                );
            }
            digest.update(&buf[..n]);
            offset += n as u64;
        }
        Ok((self.events.now() - start, digest.value()))
    }

    /// Writes the domU's pattern over the whole disk in [`WRITE_REQUEST`]-byte requests, as
    /// many in flight as the frontend takes (submitted, published, completions taken, then a
    /// sleep only when `prepare_to_wait` says no response is waiting).
    fn write_pass(&mut self, frontend: &mut Front<'_, H>, bytes: u64) -> Result<WritePass, Fail> {
        let err = |what: &str, e: xen_blk::Error| Fail::new(format_args!("{what}: {e}"));
        let mut buf = [0; WRITE_REQUEST];
        let mut pass = WritePass {
            requests: 0,
            most_in_flight: 0,
            ns: 0,
        };
        let start = self.events.now();
        let deadline = self.events.deadline(PASS_NS);
        let mut offset = 0;
        while offset < bytes || frontend.in_flight() > 0 {
            while offset < bytes && frontend.can_submit(WRITE_REQUEST) {
                blk::fill(&mut buf, blk::DOMU_SEED, offset);
                let sector = offset / blk::SECTOR_SIZE as u64;
                frontend
                    .submit_write(sector, &buf)
                    .map_err(|e| err("submit", e))?;
                offset += WRITE_REQUEST as u64;
                pass.requests += 1;
            }
            pass.most_in_flight = pass.most_in_flight.max(frontend.in_flight());
            frontend.kick().map_err(|e| err("kick", e))?;
            let mut completed = false;
            while let Some(completion) = frontend.poll().map_err(|e| err("poll", e))? {
                completion
                    .result()
                    .map_err(|e| Fail::new(format_args!("a write failed: {e}")))?;
                completed = true;
            }
            if !completed {
                self.await_response(frontend, deadline)?;
            }
        }
        pass.ns = self.events.now() - start;
        Ok(pass)
    }

    /// Discards the first [`READ_CHUNK`] bytes (the loop device punches a hole in its file:
    /// they read as zeros), checks them, and writes the domU's pattern there again.
    fn discard_and_rewrite(&mut self, frontend: &mut Front<'_, H>) -> CaseResult {
        if frontend.geometry().discard.is_none() {
            fail!("the backend offers no feature-discard");
        }
        let deadline = self.events.deadline(WAIT_NS);
        let mut sleep = || self.sleep(deadline);
        let sectors = (READ_CHUNK / blk::SECTOR_SIZE) as u64;
        frontend
            .discard(0, sectors, false, &mut sleep)
            .map_err(|e| Fail::new(format_args!("discard: {e}")))?;
        let mut buf = vec![0xff; READ_CHUNK];
        frontend
            .read(0, &mut buf, &mut sleep)
            .map_err(|e| Fail::new(format_args!("read after the discard: {e}")))?;
        if let Some(at) = buf.iter().position(|&b| b != 0) {
            fail!("byte {at} reads {:#04x} after the discard, not 0", buf[at]);
        }
        blk::fill(&mut buf, blk::DOMU_SEED, 0);
        frontend
            .write(0, &buf, &mut sleep)
            .map_err(|e| Fail::new(format_args!("write after the discard: {e}")))
    }

    /// Requests the frontend must refuse, each with its typed error, before granting anything;
    /// a valid request still works after them.
    fn bad_requests(&mut self, frontend: &mut Front<'_, H>) -> CaseResult {
        use xen_blk::Error::{OutOfRange, Unaligned};
        let deadline = self.events.deadline(WAIT_NS);
        let sectors = frontend.geometry().sectors;
        let mut buf = [0; 2 * blk::SECTOR_SIZE];
        let free = frontend.free_pages();
        let mut sleep = || self.sleep(deadline);
        match frontend.read(0, &mut buf[..100], &mut sleep) {
            Err(Unaligned { len: 100, .. }) => {}
            other => fail!("a 100-byte read: {other:?}, not Unaligned"),
        }
        match frontend.write(1, &buf[..0], &mut sleep) {
            Err(Unaligned { len: 0, .. }) => {}
            other => fail!("an empty write: {other:?}, not Unaligned"),
        }
        match frontend.read(sectors - 1, &mut buf, &mut sleep) {
            Err(OutOfRange { .. }) => {}
            other => fail!("a read across the disk's end: {other:?}, not OutOfRange"),
        }
        match frontend.write(sectors, &buf[..blk::SECTOR_SIZE], &mut sleep) {
            Err(OutOfRange { .. }) => {}
            other => fail!("a write past the disk's end: {other:?}, not OutOfRange"),
        }
        match frontend.read(u64::MAX, &mut buf[..blk::SECTOR_SIZE], &mut sleep) {
            Err(OutOfRange { .. }) => {}
            other => fail!("a read at sector 2^64 - 1: {other:?}, not OutOfRange"),
        }
        if frontend.in_flight() != 0 || frontend.free_pages() != free {
            fail!(
                "the refusals left {} in flight, {} of {free} pages free",
                frontend.in_flight(),
                frontend.free_pages()
            );
        }
        frontend
            .read(sectors - 2, &mut buf, &mut sleep)
            .map_err(|e| Fail::new(format_args!("the last two sectors after the refusals: {e}")))?;
        if let Some(at) = blk::first_mismatch(&buf, blk::DOMU_SEED, (sectors - 2) * 512) {
            fail!("the last two sectors differ at byte {at}");
        }
        Ok(())
    }
}

/// Waits, idle, for the backend to close (dom0 detaches the disk), then closes the frontend;
/// checks that its port is closed and no grant is left; returns the port.
fn close_on_detach<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    table: &GrantTable<H>,
    frontend: Front<'_, H>,
    store: &mut XenStore<H>,
) -> Result<Port, Fail> {
    let port = frontend.port();
    let device = frontend.device().clone();
    let deadline = events.deadline(WAIT_NS);
    let state = device
        .wait_for_peer(store.client(WAIT_NS), |s| s.is_closing(), &mut || {
            events.now() >= deadline
        })
        .map_err(|e| Fail::new(format_args!("waiting for the backend to close: {e}")))?;
    let deadline = events.deadline(CLOSE_NS);
    let pages = frontend
        .close(store.client(CLOSE_NS), &mut || events.now() >= deadline)
        .map_err(|e| Fail::new(format_args!("close after the backend's {state:?}: {e}")))?;
    if pages.len() != 1 + DATA_PAGES {
        fail!(
            "close gave back {} of {} pages",
            pages.len(),
            1 + DATA_PAGES
        );
    }
    if table.leaked() != 0 {
        fail!("{} grants leaked", table.leaked());
    }
    match events.h.evtchn_status(DomId::SELF, port)?.state {
        ChannelState::Closed => Ok(port),
        other => fail!("port {} is {other:?} after close", port.raw()),
    }
}

/// `<MB/s> (<ms>)` of `bytes` in `ns`.
fn rate(bytes: u64, ns: u64) -> impl core::fmt::Display {
    struct Rate(u64, u64);
    impl core::fmt::Display for Rate {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            let (bytes, ns) = (self.0, self.1.max(1));
            let kb_per_s = bytes * 1_000_000 / ns;
            write!(
                f,
                "{}.{:03} MB/s ({} ms)",
                kb_per_s / 1000,
                kb_per_s % 1000,
                ns / 1_000_000
            )
        }
    }
    Rate(bytes, ns)
}

/// Reads this domain's frontend directory of [`blk::DEVID`]: the backend must be dom0's; writes
/// the backend path at [`blk::SEEN_BACKEND`] and returns it.
fn find_backend<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
) -> Result<String, Fail> {
    let xs = store.client(REQUEST_NS);
    let frontend = alloc::format!("device/vbd/{}", blk::DEVID);
    let backend_id = xs
        .read(&alloc::format!("{frontend}/backend-id"))
        .map_err(failed("backend-id"))?;
    if backend_id != b"0" {
        fail!("backend-id is {:?}, not dom0", backend_id.escape_ascii());
    }
    let backend = xs
        .read_string(&alloc::format!("{frontend}/backend"))
        .map_err(failed("backend"))?;
    if !backend.starts_with("/local/domain/0/backend/vbd/") {
        fail!("backend {backend:?} is not dom0's blkback");
    }
    xs.write(blk::SEEN_BACKEND, backend.as_bytes())
        .map_err(failed("write"))?;
    Ok(backend)
}

/// Waits until `path` reads `want`, re-reading it after each event of a watch on it (a missing
/// key is read again too), for up to [`WAIT_NS`].
fn wait_for<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
    path: &str,
    want: &[u8],
) -> Result<(), Fail> {
    let xs = store.client(WAIT_NS);
    let watch = xs.watch(path).map_err(failed("watch"))?;
    let result = loop {
        match xs.read(path) {
            Ok(value) if value == want => break Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => break Err(failed("read")(error)),
        }
        if let Err(error) = xs.next_event() {
            break Err(Fail::new(format_args!(
                "waiting for {path} = {:?}: {error}",
                want.escape_ascii()
            )));
        }
    };
    let _ = xs.unwatch(watch);
    result
}

fn failed(what: &'static str) -> impl Fn(xen_store::Error) -> Fail {
    move |error| Fail::new(format_args!("{what}: {error}"))
}
