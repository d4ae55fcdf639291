//! The domU flavour: a guest that Debian's toolstack creates (`xl create`) from a
//! Linux dom0, which reports on its PV console ring and exchanges an event
//! channel and a granted page with dom0 through keys under its xenstore home.
//!
//! The exchange (the dom0 half is the testbed's): the domU reads `name` and
//! `domid` and writes them back as `data/seen-name` and `data/seen-domid`;
//! allocates an unbound port for dom0 (`data/evtchn-port`); grants dom0 a page
//! holding `domU wrote this` (`data/grant-ref`), then writes `data/ready` = `1`.
//! Dom0 binds the port, maps the grant, checks the text, writes
//! `dom0 wrote this` at byte 2048 and notifies; the domU checks that text and
//! notifies back; dom0 unmaps and notifies again; the domU ends access to the
//! page (refused while it was mapped), closes the port, drains its console and
//! powers off. `data/selftest` (`crash`, `silent`, `hang`) makes it misbehave on
//! purpose, for the harness's own tests.
//!
//! Before draining its console, the domU runs the xenstore steps (`store_cases`):
//! a watch on a key dom0 changes, and xenstored's typed refusals outside its home.
//!
//! When dom0 wrote `data/blk` (the block-device run), the domU runs the steps of
//! its disk instead (`blk`).

mod blk;
mod console_bulk;
mod console_ring;
mod control;
mod evtchn_port;
mod grant;
mod grant_phase;
mod heap;
mod soak;
mod store_cases;
#[cfg(any(feature = "pvh", target_arch = "aarch64"))]
mod translated;
mod xenstore;

use core::fmt;
use core::sync::atomic::{AtomicPtr, Ordering};

use xen_evtchn::EventChannel;
use xen_hypercall::Error;
use xen_hypercall::prelude::*;
use xen_hypercall::sched::{Deadline, SuspendOutcome};
use xen_testbed_protocol::exchange::{
    self, DOM0_TEXT, DOM0_TEXT_OFFSET, DOMU_TEXT, SELFTEST_CRASH, SELFTEST_HANG, SELFTEST_SILENT,
};
use xen_testbed_protocol::{Reporter, Shutdown, report_panic, report_shutdown};

use crate::fail::{CaseResult, Fail, fail};
use crate::shared_info::SharedInfo;
use console_ring::RingConsole;
use grant::StaticPage;
#[cfg(feature = "pv")]
pub(crate) use grant::setup_table;
#[cfg(any(feature = "pvh", target_arch = "aarch64"))]
pub(crate) use translated::Translated;
use xenstore::XenStore;

/// How long the domU waits for each of dom0's events.
const EVENT_WAIT_NS: u64 = exchange::DOMU_WAIT_SECONDS * 1_000_000_000;

/// What went wrong in the domU's own code.
#[derive(Debug)]
pub(crate) enum DomuError {
    /// A hypercall failed.
    Xen(Error),
    /// Nothing happened before the deadline while waiting for this.
    TimedOut(&'static str),
    /// The other side of a shared ring wrote impossible indexes or lengths.
    BadRing,
    /// A value does not fit the buffer (or a request, xenstore's limit).
    TooLong,
    /// xenstored answered `XS_ERROR` with this name (e.g. `ENOENT`).
    XenStore { name: [u8; 16], len: u8 },
    /// xen-grant refused.
    Grant(xen_grant::Error),
    /// Anything else, described.
    Unexpected(&'static str),
}

impl DomuError {
    fn xenstore(name: &[u8]) -> Self {
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        let mut error = Self::XenStore {
            name: [0; 16],
            len: name.len().min(16) as u8,
        };
        if let Self::XenStore { name: kept, len } = &mut error {
            kept[..usize::from(*len)].copy_from_slice(&name[..usize::from(*len)]);
        }
        error
    }
}

impl From<Error> for DomuError {
    fn from(error: Error) -> Self {
        Self::Xen(error)
    }
}

impl fmt::Display for DomuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Xen(error) => write!(f, "{error}"),
            Self::TimedOut(what) => write!(f, "timed out waiting for {what}"),
            Self::BadRing => f.write_str("impossible ring indexes or lengths"),
            Self::TooLong => f.write_str("value too long"),
            Self::XenStore { name, len } => write!(
                f,
                "xenstored: {}",
                core::str::from_utf8(&name[..usize::from(*len)]).unwrap_or("?")
            ),
            Self::Grant(error) => write!(f, "{error}"),
            Self::Unexpected(what) => f.write_str(what),
        }
    }
}

impl From<DomuError> for Fail {
    fn from(error: DomuError) -> Self {
        Self::new(format_args!("{error}"))
    }
}

/// A shared page and the event channel that signals changes to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingPage {
    pub(crate) page: *mut u8,
    pub(crate) port: Port,
}

/// What the domU run needs from its architecture.
pub(crate) trait Platform {
    /// The hypercall backend.
    type Hypercall: XenHypercall<Error = Error> + Copy;
    /// The backend.
    fn hypercall(&self) -> Self::Hypercall;
    /// Maps this domain's shared info page.
    fn shared_info(&self) -> Result<SharedInfo, Error>;
    /// The console ring (PV: start_info; PVH and Arm: HVM params 17 and 18).
    fn console(&self) -> Result<RingPage, DomuError>;
    /// The xenstore ring (PV: start_info; PVH and Arm: HVM params 1 and 2).
    fn store(&self) -> Result<RingPage, DomuError>;
    /// The kernel command line xl passed (`extra =`), where the platform reads one.
    fn cmdline(&self) -> &[u8] {
        &[]
    }
    /// Maps grant table frame 0 and returns its address.
    fn map_grant_table(&self) -> Result<*mut u8, DomuError>;
    /// The frame number a grant entry names for `page`, a page of ours (PV: its
    /// machine frame; PVH and Arm: its guest frame).
    fn frame_of(&self, page: *const u8) -> Result<u32, DomuError>;
    /// Whether [`suspend`](Self::suspend) works here.
    fn can_suspend(&self) -> bool {
        false
    }
    /// Prepares what the toolstack's save needs, then `SCHEDOP_shutdown(suspend)`; returns
    /// once the domain runs again. After `Resumed`, the shared info page, the grant table and
    /// the rings must be found and mapped again (the methods above) before they are used.
    fn suspend(&self) -> Result<SuspendOutcome, DomuError> {
        Err(DomuError::Unexpected("this platform cannot suspend"))
    }
}

/// The hypercall backend with the shared info page: waiting for events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Events<H> {
    h: H,
    shared: SharedInfo,
}

impl<H: XenHypercall<Error = Error> + Copy> Events<H> {
    /// Xen's system time in ns, never earlier than Xen's own.
    fn now(&self) -> u64 {
        self.shared.system_time_ns()
    }

    /// The system time `ns` from now.
    pub(crate) fn deadline(&self, ns: u64) -> u64 {
        self.now().saturating_add(ns)
    }

    /// Signals the other end of `port`.
    pub(crate) fn notify(&self, port: Port) -> Result<(), DomuError> {
        Ok(self.h.evtchn_send(port)?)
    }

    /// Waits until an event arrives on `port` (one the toolstack bound, such as
    /// xenstore's) and consumes it.
    pub(crate) fn take_event(
        &self,
        port: Port,
        deadline: u64,
        what: &'static str,
    ) -> Result<(), DomuError> {
        loop {
            if self.shared.take_pending(port) {
                return Ok(());
            }
            if self.now() >= deadline {
                return Err(DomuError::TimedOut(what));
            }
            self.h.poll(&[port], Some(Deadline::from_nanos(deadline)))?;
        }
    }
}

/// The shared info page once mapped, for the panic handler.
static SHARED_INFO: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

/// Runs the domU: finds its rings, runs the exchange, reports, powers off.
pub(crate) fn run<P: Platform>(platform: &P) -> ! {
    let h = platform.hypercall();
    // Without shared info there is no clock and no event to wait for, and
    // without the console nowhere to say so: crash, which xl reports.
    let Ok(shared) = platform.shared_info() else {
        crash(h)
    };
    SHARED_INFO.store(shared.page().cast_mut(), Ordering::Release);
    let events = Events { h, shared };
    let Ok(console) = platform.console() else {
        crash(h)
    };
    // SAFETY: the console page is this domain's (found from start_info or the
    // HVM params), mapped for the program's life, and only used through the
    // console module from here on.
    if unsafe { console_ring::install(console) }.is_err() {
        crash(h)
    }
    let store = platform.store().and_then(|store| {
        // SAFETY: the xenstore page is this domain's (as for the console), used
        // only through this connection.
        unsafe { XenStore::new(events, store) }
    });
    let mut store = store.map_err(Fail::from);
    if let Ok(store) = &mut store {
        console_bulk::bench_if_asked(events, store);
        self_test(events, store);
    }
    let mut reporter = Reporter::new(RingConsole(events));
    if control::requested(platform.cmdline()) {
        match &mut store {
            Ok(store) => control::run(platform, events, &mut reporter, store),
            Err(_) => crash(h),
        }
    }
    let disk = store.as_mut().ok().and_then(blk::requested);
    let soak = store.as_mut().ok().and_then(soak::requested);
    match (disk, soak, store) {
        (Some(sectors), _, Ok(mut store)) => {
            blk::run(platform, events, &mut reporter, &mut store, sectors)
        }
        (None, Some(asked), Ok(mut store)) => soak::run(asked, events, &mut reporter, &mut store),
        (_, _, mut store) => {
            exchange(
                platform,
                events,
                &mut reporter,
                store.as_mut().map_err(|e| Fail::new(format_args!("{e}"))),
            );
            if let Ok(store) = &mut store {
                store_cases::run(&mut reporter, store);
            }
            let bulk = console_bulk::exchange_write(events, &mut reporter);
            reporter.case("console_bulk_written", bulk);
        }
    }
    power_off(events, reporter)
}

/// Reports `console_flushed` and `DONE`; powers off if every case passed (after
/// announcing it), else crashes.
fn power_off<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    mut reporter: Reporter<RingConsole<H>>,
) -> ! {
    let h = events.h;
    let console = RingConsole(events);
    reporter.case("console_flushed", console.flush().map_err(Fail::from));
    let summary = reporter.done();
    if summary.all_passed() {
        report_shutdown(&mut RingConsole(events), Shutdown::Poweroff);
        let _ = console.flush();
        let result = h.shutdown(ShutdownReason::POWEROFF);
        report_panic(
            &mut RingConsole(events),
            format_args!("poweroff returned: {result:?}"),
        );
    }
    let _ = console.flush();
    crash(h)
}

/// `data/selftest`: makes the run fail on purpose, for the harness's own tests.
fn self_test<H: XenHypercall<Error = Error> + Copy>(events: Events<H>, store: &mut XenStore<H>) {
    let mut value = [0; 16];
    match store.read(exchange::SELFTEST, &mut value) {
        Ok(value) if value == SELFTEST_CRASH.as_bytes() => crash(events.h),
        Ok(value) if value == SELFTEST_SILENT.as_bytes() => {
            // Report nothing; sleep through dom0's patience, then power off. Port 0
            // is never bound (event_channel.h), so only the deadline ends the poll.
            let deadline = events.deadline(EVENT_WAIT_NS);
            let port = Port::new(0);
            while events.now() < deadline {
                let _ = events.h.poll(&[port], Some(Deadline::from_nanos(deadline)));
            }
            let _ = events.h.shutdown(ShutdownReason::POWEROFF);
            crash(events.h)
        }
        Ok(value) if value == SELFTEST_HANG.as_bytes() => loop {
            let _ = events.h.sched_yield();
        },
        _ => {}
    }
}

/// The cases of the exchange with dom0, in the order dom0 expects them.
fn exchange<P: Platform>(
    platform: &P,
    events: Events<P::Hypercall>,
    r: &mut Reporter<RingConsole<P::Hypercall>>,
    store: Result<&mut XenStore<P::Hypercall>, Fail>,
) {
    let h = platform.hypercall();
    let store = match store {
        Ok(store) => store,
        Err(error) => return r.case("xenstore_read_name", Err(error)),
    };
    r.case(
        "xenstore_read_name",
        echo_key(store, "name", exchange::SEEN_NAME, |_| Ok(())),
    );
    r.case(
        "xenstore_read_domid",
        echo_key(
            store,
            "domid",
            exchange::SEEN_DOMID,
            |value| match core::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse::<u16>().ok())
            {
                Some(id) if id != 0 && DomId::new(id).is_domain() => Ok(()),
                _ => fail!("domid {:?} is not a domU's", value.escape_ascii()),
            },
        ),
    );
    let channel = events.channel();
    let port = match alloc_port(h, events.alloc_for_dom0(&channel), store) {
        Ok(port) => {
            r.out(format_args!("port {} unbound for dom0", port.raw()));
            r.case("evtchn_alloc_unbound", Ok::<(), Fail>(()));
            port
        }
        Err(error) => return r.case("evtchn_alloc_unbound", Err(error)),
    };
    let table = match grant_table(platform) {
        Ok(table) => table,
        Err(error) => return r.case("grant_access", Err(error)),
    };
    let grant = match grant_page(platform, &table, store) {
        Ok(grant) => {
            r.out(format_args!("grant ref {} to dom0", grant.gref().raw()));
            r.case("grant_access", Ok::<(), Fail>(()));
            grant
        }
        Err(error) => return r.case("grant_access", Err(error)),
    };
    r.case(
        "evtchn_from_dom0",
        events
            .await_event(
                &channel,
                port,
                events.deadline(EVENT_WAIT_NS),
                "dom0's first event",
            )
            .map_err(Fail::from),
    );
    r.case("grant_sees_dom0_write", sees_dom0_write());
    // Dom0 still has the page mapped: ending access must be refused now.
    let refused = match grant.end() {
        Err(still_mapped) => Ok(still_mapped.0),
        Ok(_) => Err(Fail::new(format_args!(
            "end of access allowed while dom0 had the page mapped"
        ))),
    };
    r.case(
        "evtchn_notify_dom0",
        channel
            .notify(port)
            .map_err(|e| Fail::new(format_args!("{e}"))),
    );
    let ended = (|| {
        let grant = refused?;
        events.await_event(
            &channel,
            port,
            events.deadline(EVENT_WAIT_NS),
            "dom0's second event",
        )?;
        let gref = grant.gref();
        grant
            .end()
            .map_err(|e| Fail::new(format_args!("after the unmap: {e}")))?;
        if table.in_use(gref) {
            fail!("entry still in use");
        }
        channel
            .unbind_raw(port)
            .map_err(|e| Fail::new(format_args!("{e}")))?;
        Ok(gref)
    })();
    if let Ok(gref) = ended {
        r.out(format_args!(
            "end of access to ref {} refused while mapped, done after the unmap",
            gref.raw()
        ));
    }
    r.case("grant_end_access", ended.map(drop));
    grant_phase::run(platform, events, &channel, r, store, &table);
}

/// Reads `key`, checks the value, writes it back at `seen`.
fn echo_key<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
    key: &str,
    seen: &str,
    check: impl FnOnce(&[u8]) -> CaseResult,
) -> CaseResult {
    let mut value = [0; 64];
    let value = store.read(key, &mut value)?;
    if value.is_empty() {
        fail!("{key} is empty");
    }
    check(value)?;
    store.write(seen, value)?;
    Ok(())
}

/// `EVTCHNOP_alloc_unbound` for dom0; publishes the port at `data/evtchn-port`.
fn alloc_port<H: XenHypercall<Error = Error> + Copy>(
    h: H,
    allocated: Result<Port, DomuError>,
    store: &mut XenStore<H>,
) -> Result<Port, Fail> {
    let port = allocated?;
    let status = h.evtchn_status(DomId::SELF, port)?;
    if status.state
        != (xen_hypercall::event_channel::ChannelState::Unbound {
            remote_dom: DomId::new(0),
        })
    {
        fail!("port {} is {:?}", port.raw(), status.state);
    }
    let mut digits = Digits::default();
    fmt::Write::write_fmt(&mut digits, format_args!("{}", port.raw()))
        .map_err(|_| Fail::new(format_args!("port")))?;
    store.write(exchange::EVTCHN_PORT, digits.as_bytes())?;
    Ok(port)
}

/// The page granted to dom0.
static GRANTED: crate::arch::RawMemory<[u8; 4096]> = crate::arch::RawMemory::new([0; 4096]);

/// Maps the grant table (frame 0) and makes xen-grant's table over it.
fn grant_table<P: Platform>(platform: &P) -> Result<xen_grant::GrantTable<P::Hypercall>, Fail> {
    let (frames, max_frames) = grant::query_size(&platform.hypercall())?;
    if max_frames == 0 {
        fail!("grant table of {frames}/{max_frames} frames");
    }
    let frame0 = platform.map_grant_table()?;
    // SAFETY: `map_grant_table` mapped grant table frame 0 (version 1, the
    // default) at `frame0` for the program's life; only this table uses it.
    Ok(unsafe { grant::table(platform.hypercall(), frame0) }?)
}

/// Fills and grants `GRANTED` to dom0 (xen-grant picks the reference, never a
/// toolstack one), publishes the reference and then `data/ready`.
fn grant_page<'t, P: Platform>(
    platform: &P,
    table: &'t xen_grant::GrantTable<P::Hypercall>,
    store: &mut XenStore<P::Hypercall>,
) -> Result<xen_grant::Grant<'t, P::Hypercall, StaticPage>, Fail> {
    let page = GRANTED.as_mut_ptr().cast::<u8>();
    for (offset, &byte) in DOMU_TEXT.as_bytes().iter().enumerate() {
        // SAFETY: inside the 4096-byte static, which Rust reaches only through raw
        // pointers; volatile, since dom0 may map it once granted.
        unsafe { core::ptr::write_volatile(page.wrapping_add(offset), byte) };
    }
    let frame = u64::from(platform.frame_of(page)?);
    let grant = table
        .grant_access(DomId::new(0), StaticPage { frame }, false)
        .map_err(|e| Fail::new(format_args!("{}", e.error)))?;
    let mut digits = Digits::default();
    let _ = fmt::Write::write_fmt(&mut digits, format_args!("{}", grant.gref().raw()));
    store.write(exchange::GRANT_REF, digits.as_bytes())?;
    store.write(exchange::READY, b"1")?;
    Ok(grant)
}

/// Whether dom0's text is at its offset of the granted page.
fn sees_dom0_write() -> CaseResult {
    let page = GRANTED.as_mut_ptr().cast::<u8>();
    let mut seen = [0; DOM0_TEXT.len()];
    for (offset, byte) in seen.iter_mut().enumerate() {
        // SAFETY: inside the static page; volatile, as dom0 writes it.
        *byte = unsafe { core::ptr::read_volatile(page.wrapping_add(DOM0_TEXT_OFFSET + offset)) };
    }
    if seen != DOM0_TEXT.as_bytes() {
        fail!("at {DOM0_TEXT_OFFSET}: {:?}", seen.escape_ascii());
    }
    Ok(())
}

/// Text of up to `N` bytes (a decimal number by default), formatted without allocation.
#[derive(Debug)]
struct Digits<const N: usize = 10> {
    len: usize,
    bytes: [u8; N],
}

impl Default for Digits {
    fn default() -> Self {
        Self::empty()
    }
}

impl<const N: usize> Digits<N> {
    const fn empty() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// `args` formatted, cut at `N` bytes.
    fn format(args: fmt::Arguments<'_>) -> Self {
        let mut text = Self::empty();
        let _ = fmt::Write::write_fmt(&mut text, args);
        text
    }
}

impl<const N: usize> fmt::Write for Digits<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `SCHEDOP_shutdown(crash)`; spins if Xen returns.
pub(crate) fn crash<H: XenHypercall<Error = Error>>(h: H) -> ! {
    let _ = h.shutdown(ShutdownReason::CRASH);
    loop {
        core::hint::spin_loop();
    }
}

/// The panic handler's end: `XENTEST PANIC` on the console ring (if installed),
/// a bounded flush, then a crash.
pub(crate) fn panic<H: XenHypercall<Error = Error> + Copy>(
    h: H,
    info: &core::panic::PanicInfo<'_>,
) -> ! {
    let page = SHARED_INFO.load(Ordering::Acquire);
    if !page.is_null() {
        // SAFETY: `run` stored the page of a mapped `SharedInfo`, mapped for the
        // program's life.
        let shared = unsafe { SharedInfo::new(page) };
        let console = RingConsole(Events { h, shared });
        report_panic(&mut { console }, info);
        let _ = console.flush();
    }
    crash(h)
}
