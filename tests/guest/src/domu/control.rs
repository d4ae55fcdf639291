//! The domU half of the lifecycle run ([`exchange::CONTROL_CMDLINE`] on its command line, which
//! survives `xl reboot`): it advertises `feature-poweroff`, `feature-reboot` and, where it can
//! suspend, `feature-suspend` with `xen-guest`'s control module, watches `control/shutdown`,
//! sets up its side of an exchange with dom0 ([`exchange::suspend`]: a port, a granted page, a
//! watched key, a memory pattern), writes [`exchange::READY`], and carries out the toolstack's
//! requests: poweroff and reboot with `SCHEDOP_shutdown`; suspend, after which it carries on
//! (cancelled: a checkpoint) or rebuilds every connection (resumed in a new domain: shared info,
//! console, xenstore and its watches, event channel, grant). dom0 judges the run from xl's view
//! of it and from the exchange; a failure here is a crash, which xl reports.

use core::fmt;

use xen_evtchn::EventChannel;
use xen_grant::{Grant, GrantTable};
use xen_guest::control::{self, ControlWatches, Features, ShutdownRequest};
use xen_hypercall::Error;
use xen_hypercall::prelude::*;
use xen_hypercall::sched::SuspendOutcome;
use xen_testbed_protocol::exchange::suspend::{
    CONSOLE_MARK, NO_SUSPEND_CMDLINE, PATTERN, PING, PONG, SUSPENDED,
};
use xen_testbed_protocol::{Reporter, exchange};

use super::console_ring::{self, RingConsole};
use super::evtchn_port::Channel;
use super::grant::StaticPage;
use super::xenstore::XenStore;
use super::{Digits, Events, Platform, crash, grant_table};
use crate::fail::{Fail, fail};

/// How long a request to xenstored may take.
const REQUEST_NS: u64 = 5_000_000_000;
/// How long the domU waits for the toolstack's next request.
const REQUEST_WAIT_NS: u64 = 300_000_000_000;

/// Whether the command line asks for this run.
pub(crate) fn requested(cmdline: &[u8]) -> bool {
    has_word(cmdline, exchange::CONTROL_CMDLINE)
}

fn has_word(cmdline: &[u8], word: &str) -> bool {
    cmdline.split(|&b| b == b' ').any(|w| w == word.as_bytes())
}

/// The page granted to dom0 in this run.
static SHARED_PAGE: crate::arch::RawMemory<[u8; 4096]> = crate::arch::RawMemory::new([0; 4096]);

/// Memory whose contents must survive a save and restore: 64 KiB of a pattern.
static PATTERN_MEMORY: crate::arch::RawMemory<[u8; 65536]> =
    crate::arch::RawMemory::new([0; 65536]);

/// The pattern's byte at `offset`.
fn pattern_byte(offset: usize) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 8)) as u8
}

fn fill_pattern() {
    let base = PATTERN_MEMORY.as_mut_ptr().cast::<u8>();
    for offset in 0..65536 {
        // SAFETY: inside the static, which Rust reaches only through raw pointers.
        unsafe {
            base.wrapping_add(offset)
                .write_volatile(pattern_byte(offset))
        };
    }
}

/// The first offset where the pattern differs, if any.
fn pattern_damage() -> Option<usize> {
    let base = PATTERN_MEMORY.as_mut_ptr().cast::<u8>();
    // SAFETY: as in `fill_pattern`.
    (0..65536).find(
        |&offset| unsafe { base.wrapping_add(offset).read_volatile() } != pattern_byte(offset),
    )
}

/// Runs the lifecycle: never returns (the domain shuts down, reboots or crashes).
pub(crate) fn run<P: Platform>(
    platform: &P,
    events: Events<P::Hypercall>,
    r: &mut Reporter<RingConsole<P::Hypercall>>,
    store: &mut XenStore<P::Hypercall>,
) -> ! {
    let reason = serve(platform, events, r, store);
    let console = RingConsole(events);
    match reason {
        Ok(reason) => {
            let _ = console.flush();
            let result = events.h.shutdown(reason);
            r.out(format_args!("SCHEDOP_shutdown returned: {result:?}"));
        }
        Err(error) => r.case("control_request", Err::<(), Fail>(error)),
    }
    let _ = console.flush();
    crash(events.h)
}

fn failed(what: &'static str) -> impl Fn(xen_store::Error) -> Fail {
    move |e| Fail::new(format_args!("{what}: {e}"))
}

/// What the domU shares with dom0: a port and a granted page, both published.
struct Shared<'t, H: XenHypercall<Error = Error> + Copy> {
    port: Port,
    grant: Grant<'t, H, StaticPage>,
}

/// Allocates a port for dom0 and grants it `SHARED_PAGE` (holding [`exchange::DOMU_TEXT`]);
/// publishes both.
fn share<'t, P: Platform>(
    platform: &P,
    channel: &Channel<P::Hypercall>,
    table: &'t GrantTable<P::Hypercall>,
    store: &mut XenStore<P::Hypercall>,
) -> Result<Shared<'t, P::Hypercall>, Fail> {
    let port = channel
        .alloc_unbound_raw(DomId::new(0))
        .map_err(|e| Fail::new(format_args!("port for dom0: {e}")))?;
    let page = SHARED_PAGE.as_mut_ptr().cast::<u8>();
    for (offset, &byte) in exchange::DOMU_TEXT.as_bytes().iter().enumerate() {
        // SAFETY: inside the 4096-byte static, which Rust reaches only through raw pointers;
        // volatile, since dom0 may map it once granted.
        unsafe { page.wrapping_add(offset).write_volatile(byte) };
    }
    let frame = u64::from(platform.frame_of(page)?);
    let grant = table
        .grant_access(DomId::new(0), StaticPage { frame }, false)
        .map_err(|e| Fail::new(format_args!("grant: {}", e.error)))?;
    write_number(store, exchange::EVTCHN_PORT, port.raw())?;
    write_number(store, exchange::GRANT_REF, grant.gref().raw())?;
    Ok(Shared { port, grant })
}

fn write_number<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
    key: &str,
    value: u32,
) -> Result<(), Fail> {
    let mut digits = Digits::default();
    fmt::Write::write_fmt(&mut digits, format_args!("{value}"))
        .map_err(|_| Fail::new(format_args!("{key}")))?;
    Ok(store.write(key, digits.as_bytes())?)
}

/// Advertises, watches, shares, reports ready, then serves the toolstack's requests and dom0's
/// pings until a request ends the domain (its reason).
fn serve<P: Platform>(
    platform: &P,
    mut events: Events<P::Hypercall>,
    r: &mut Reporter<RingConsole<P::Hypercall>>,
    store: &mut XenStore<P::Hypercall>,
) -> Result<ShutdownReason, Fail> {
    let mut features = Features::POWEROFF | Features::REBOOT;
    if platform.can_suspend() && !has_word(platform.cmdline(), NO_SUSPEND_CMDLINE) {
        features |= Features::SUSPEND;
    }
    let xs = store.client(REQUEST_NS);
    let watches = ControlWatches::new(xs, features).map_err(failed("watch"))?;
    let ping = xs.watch(PING).map_err(failed("watch ping"))?;
    let mut channel = events.channel();
    let table = grant_table(platform)?;
    let mut shared = share(platform, &channel, &table, store)?;
    fill_pattern();
    store.write(exchange::READY, b"1")?;
    r.out(format_args!(
        "control: {features:?} advertised, port {} and grant ref {} shared, watching",
        shared.port.raw(),
        shared.grant.gref().raw()
    ));
    let mut suspends = 0u32;
    loop {
        store.echo(Some(shared.port));
        let xs = store.client(REQUEST_WAIT_NS);
        let event = xs.next_event().map_err(failed("the toolstack's request"))?;
        if event.watch == ping {
            answer_ping(store)?;
            continue;
        }
        if !watches.is_shutdown(event.watch) {
            continue;
        }
        // None on the watch's first firing, once a request was taken, or for a suspend this
        // domU did not advertise (left for xl to cancel).
        let Some(request) = watches
            .take_shutdown(store.client(REQUEST_NS))
            .map_err(failed("take"))?
        else {
            continue;
        };
        r.out(format_args!("control: the toolstack asked {request:?}"));
        if request != ShutdownRequest::Suspend {
            return request
                .reason()
                .ok_or_else(|| Fail::new(format_args!("request {request:?} not handled")));
        }
        suspends += 1;
        let _ = RingConsole(events).flush();
        let outcome = platform.suspend()?;
        let text = match outcome {
            SuspendOutcome::Cancelled => "cancelled",
            SuspendOutcome::Resumed => {
                events = reconnect(platform, &mut channel, store)?;
                // libxl made the new domain's `control/feature-*` nodes empty.
                control::advertise(store.client(REQUEST_NS), features)
                    .map_err(failed("advertise"))?;
                // The old grant's entry went with the old domain's table: ending it only frees
                // the reference, before a new grant may take it.
                let _ = shared.grant.end();
                shared = share(platform, &channel, &table, store)?;
                let pattern = match pattern_damage() {
                    None => Digits::<24>::format(format_args!("intact")),
                    Some(offset) => Digits::format(format_args!("differs at {offset}")),
                };
                store.write(PATTERN, pattern.as_bytes())?;
                r.out(format_args!(
                    "{CONSOLE_MARK}; port {} and grant ref {} shared again",
                    shared.port.raw(),
                    shared.grant.gref().raw()
                ));
                "resumed"
            }
        };
        let outcome = Digits::<24>::format(format_args!("{text} {suspends}"));
        store.write(SUSPENDED, outcome.as_bytes())?;
        r.out(format_args!("control: suspend {suspends}: {text}"));
    }
}

/// Copies [`PING`] to [`PONG`] (the watch's first firing finds no ping yet).
fn answer_ping<H: XenHypercall<Error = Error> + Copy>(store: &mut XenStore<H>) -> Result<(), Fail> {
    let mut value = [0; 32];
    match store.read(PING, &mut value) {
        Ok(value) => {
            let mut copy = [0; 32];
            let copy = &mut copy[..value.len()];
            copy.copy_from_slice(value);
            Ok(store.write(PONG, copy)?)
        }
        Err(super::DomuError::XenStore { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// After a resume in a new domain: maps shared info again, reconnects the console (new port)
/// and xenstore (new port, cleared ring, watches set again), forgets the old domain's ports,
/// maps the (fresh) grant table frame again at the same place. Returns the new `Events`.
fn reconnect<P: Platform>(
    platform: &P,
    channel: &mut Channel<P::Hypercall>,
    store: &mut XenStore<P::Hypercall>,
) -> Result<Events<P::Hypercall>, Fail> {
    let h = platform.hypercall();
    // Without shared info there is no clock and no event: crash, which xl reports.
    let Ok(shared) = platform.shared_info() else {
        crash(h)
    };
    let events = Events { h, shared };
    // SAFETY: as at boot (`super::run`): the console page is this domain's, mapped for the
    // program's life (the same page, found again with its new port), used only by the console
    // module.
    if unsafe { console_ring::install(platform.console()?) }.is_err() {
        crash(h)
    }
    channel.resume(events.evtchn_shared_info());
    let ring = platform.store()?;
    // SAFETY: as at boot: this domain's xenstore page (the restore cleared it), mapped for the
    // program's life, used only through this connection.
    unsafe { store.resume(events, ring) }?;
    let frame0 = platform.map_grant_table()?;
    if frame0.is_null() {
        fail!("grant table frame 0 mapped at null");
    }
    Ok(events)
}
