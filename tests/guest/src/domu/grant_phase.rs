//! The domU half of the exchange's grant phase (`exchange::grant`): pages granted for dom0 to
//! copy, to map with an unmap notification and to be refused; the page dom0 shares through
//! gntalloc, mapped here with xen-grant's `MappedGrant` (PV: over a page of the image, by
//! virtual address; PVH and Arm: at a free guest frame) and unmapped.

use core::fmt;
use core::ptr::NonNull;

use xen_evtchn::EventChannel;
use xen_grant::{Grant, GrantRef, GrantTable, MapSlot, MappedGrant};
use xen_hypercall::prelude::*;
use xen_hypercall::{Error, Port};
use xen_testbed_protocol::Reporter;
use xen_testbed_protocol::exchange::grant::{
    self as phase, COPY_PAGES, DOM0_SEED, DOMU_SEED, NOTIFY_MARK, NOTIFY_OFFSET, copy_pattern,
};
use xen_testbed_protocol::exchange::{DOM0_TEXT, DOM0_TEXT_OFFSET, DOMU_TEXT};

use super::console_ring::RingConsole;
use super::evtchn_port::Channel;
use super::grant::StaticPage;
use super::xenstore::XenStore;
use super::{Digits, EVENT_WAIT_NS, Events, Platform};
use crate::arch::RawMemory;
use crate::fail::{CaseResult, Fail, fail};

const PAGE: usize = 4096;

/// The pages dom0 grant-copies: 1 MiB.
static COPY: RawMemory<[u8; COPY_PAGES * PAGE]> = RawMemory::new([0; COPY_PAGES * PAGE]);
/// The page dom0 maps with an unmap notification.
static NOTIFY: RawMemory<[u8; PAGE]> = RawMemory::new([0; PAGE]);
/// Granted and revoked; granted to another domain.
static REVOKED: RawMemory<[u8; PAGE]> = RawMemory::new([0; PAGE]);
static OTHER: RawMemory<[u8; PAGE]> = RawMemory::new([0; PAGE]);

/// PV: the page of the image whose page-table entry Xen points at dom0's page (the image's
/// own frame is then unmapped, never used again).
#[cfg(feature = "pv")]
static MAP_SLOT: RawMemory<[u8; PAGE]> = RawMemory::new([0; PAGE]);

/// Where dom0's page is mapped: PV, a virtual address of the image (VIRT_BASE 0, 4 KiB
/// entries); PVH, a guest frame at 1 GiB, far above the domU's RAM (the testbed gives it tens
/// of MiB from 0) and below the MMIO hole; Arm, a guest frame in the middle of the 16 MiB grant
/// table region of Xen's guest memory map (`GUEST_GNTTAB_BASE` 0x38000000, `arch-arm.h`), far
/// above the table frames, where nothing is populated. The PVH and Arm addresses are inside
/// the identity map (Arm: in its first GiB, Normal write-back memory), so virtual = physical.
fn map_address() -> u64 {
    #[cfg(feature = "pv")]
    let address = MAP_SLOT.as_mut_ptr() as u64;
    #[cfg(feature = "pvh")]
    let address = 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    let address = 0x3880_0000;
    address
}

/// The one place this domU maps another domain's page ([`map_address`]).
#[derive(Debug)]
struct Slot;

// SAFETY: `map_address` is page-aligned and, as its comment says, either a page of the image
// that Rust reaches only through this slot (PV: an L1 entry of the initial page tables) or an
// unpopulated guest frame inside the identity map (virtual = physical); one `Slot` exists at a
// time (made once, in `map_dom0_page`), and the page is reached only through `MappedGrant`'s
// atomics.
unsafe impl MapSlot for Slot {
    fn host_addr(&self) -> u64 {
        map_address()
    }

    fn page(&self) -> NonNull<u8> {
        NonNull::new(map_address() as *mut u8).unwrap_or(NonNull::dangling())
    }
}

/// What the domU granted and allocated for this phase.
struct Published<'t, H: XenHypercall<Error = Error>> {
    port: Port,
    notify_port: Port,
    copy: [Option<Grant<'t, H, StaticPage>>; COPY_PAGES],
    notify: Grant<'t, H, StaticPage>,
    other: Grant<'t, H, StaticPage>,
}

/// `value` in decimal.
fn decimal(value: u32) -> Digits {
    let mut text = Digits::default();
    let _ = fmt::Write::write_fmt(&mut text, format_args!("{value}"));
    text
}

fn volatile_fill(page: *mut u8, len: usize, byte: impl Fn(usize) -> u8) {
    for offset in 0..len {
        // SAFETY: inside a static of at least `len` bytes that Rust reaches only through raw
        // pointers; volatile, as dom0 may map or copy it.
        unsafe { core::ptr::write_volatile(page.wrapping_add(offset), byte(offset)) };
    }
}

fn volatile_read(page: *const u8, offset: usize) -> u8 {
    // SAFETY: callers stay inside the static `page` points into; volatile, as above.
    unsafe { core::ptr::read_volatile(page.wrapping_add(offset)) }
}

/// Grants `page` (a static page of ours) to `domid`.
fn grant<'t, P: Platform>(
    platform: &P,
    table: &'t GrantTable<P::Hypercall>,
    domid: DomId,
    page: *const u8,
) -> Result<Grant<'t, P::Hypercall, StaticPage>, Fail> {
    let frame = u64::from(platform.frame_of(page)?);
    table
        .grant_access(domid, StaticPage { frame }, false)
        .map_err(|e| Fail::new(format_args!("{}", e.error)))
}

/// Step 1: the ports and grants, published under `data/grant/`.
fn publish<'t, P: Platform>(
    platform: &P,
    channel: &Channel<P::Hypercall>,
    store: &mut XenStore<P::Hypercall>,
    table: &'t GrantTable<P::Hypercall>,
) -> Result<Published<'t, P::Hypercall>, Fail> {
    let events = |e: xen_evtchn::Error| Fail::new(format_args!("{e}"));
    let port = channel.alloc_unbound_raw(DomId(0)).map_err(events)?;
    let notify_port = channel.alloc_unbound_raw(DomId(0)).map_err(events)?;
    let copy_base = COPY.as_mut_ptr().cast::<u8>();
    volatile_fill(copy_base, COPY_PAGES * PAGE, |i| copy_pattern(DOMU_SEED, i));
    let mut copy = [const { None }; COPY_PAGES];
    let mut refs = Digits::<{ COPY_PAGES * 6 }>::empty();
    for (index, slot) in copy.iter_mut().enumerate() {
        let granted = grant(
            platform,
            table,
            DomId(0),
            copy_base.wrapping_add(index * PAGE),
        )?;
        let separator = if index == 0 { "" } else { " " };
        fmt::Write::write_fmt(
            &mut refs,
            format_args!("{separator}{}", granted.gref().raw()),
        )
        .map_err(|_| Fail::new(format_args!("the reference list is too long")))?;
        *slot = Some(granted);
    }
    let notify_page = NOTIFY.as_mut_ptr().cast::<u8>();
    volatile_fill(notify_page, PAGE, |_| NOTIFY_MARK);
    let notify = grant(platform, table, DomId(0), notify_page)?;
    let revoked = grant(platform, table, DomId(0), REVOKED.as_mut_ptr().cast::<u8>())?;
    let revoked_ref = revoked.gref();
    revoked
        .end()
        .map_err(|e| Fail::new(format_args!("revoking: {e}")))?;
    let other = grant(
        platform,
        table,
        DomId(phase::OTHER_DOMAIN),
        OTHER.as_mut_ptr().cast::<u8>(),
    )?;
    store.write(phase::PORT, decimal(port.raw()).as_bytes())?;
    store.write(phase::NOTIFY_PORT, decimal(notify_port.raw()).as_bytes())?;
    store.write(phase::COPY_REFS, refs.as_bytes())?;
    store.write(phase::NOTIFY_REF, decimal(notify.gref().raw()).as_bytes())?;
    store.write(phase::REVOKED_REF, decimal(revoked_ref.raw()).as_bytes())?;
    store.write(
        phase::OTHER_DOMAIN_REF,
        decimal(other.gref().raw()).as_bytes(),
    )?;
    store.write(phase::READY, b"1")?;
    Ok(Published {
        port,
        notify_port,
        copy,
        notify,
        other,
    })
}

/// Step 3: maps dom0's gntalloc page, checks dom0's text and writes the domU's.
fn map_dom0_page<'h, H: XenHypercall<Error = Error> + Copy>(
    h: &'h H,
    store: &mut XenStore<H>,
) -> Result<MappedGrant<'h, H, Slot>, Fail> {
    let mut value = [0; 16];
    let value = store.read(phase::DOM0_REF, &mut value)?;
    let Some(gref) = core::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
    else {
        fail!("{} is {:?}", phase::DOM0_REF, value.escape_ascii());
    };
    let mapping = MappedGrant::map(h, DomId(0), GrantRef(gref), Slot, false)
        .map_err(|e| Fail::new(format_args!("map of dom0's gref {gref}: {e}")))?;
    let mut seen = [0; DOM0_TEXT.len()];
    mapping
        .read(0, &mut seen)
        .map_err(|e| Fail::new(format_args!("{e}")))?;
    if seen != DOM0_TEXT.as_bytes() {
        fail!("dom0's page reads {:?}", seen.escape_ascii());
    }
    let Some(mem) = mapping.mem() else {
        fail!("a writable mapping has no view");
    };
    mem.write(DOM0_TEXT_OFFSET, DOMU_TEXT.as_bytes())
        .map_err(|e| Fail::new(format_args!("{e}")))?;
    Ok(mapping)
}

/// Step 3: the 1 MiB dom0 copied in, byte by byte; then access to it ends (nothing maps it).
fn check_copy<H: XenHypercall<Error = Error> + Copy>(
    r: &mut Reporter<RingConsole<H>>,
    copy: &mut [Option<Grant<'_, H, StaticPage>>; COPY_PAGES],
) -> CaseResult {
    let base = COPY.as_mut_ptr().cast::<u8>().cast_const();
    let len = COPY_PAGES * PAGE;
    if let Some(at) = (0..len).find(|&i| volatile_read(base, i) != copy_pattern(DOM0_SEED, i)) {
        fail!(
            "byte {at} (page {}) is {:#x}, dom0 copied {:#x}",
            at / PAGE,
            volatile_read(base, at),
            copy_pattern(DOM0_SEED, at)
        );
    }
    let digest = phase::digest((0..len).map(|i| volatile_read(base, i)));
    if digest != phase::pattern_digest(DOM0_SEED) {
        fail!("digest {digest:#x} of the copied MiB differs from dom0's pattern");
    }
    r.out(format_args!(
        "the {COPY_PAGES} pages dom0 grant-copied hold its 1 MiB pattern (digest {digest:#018x})"
    ));
    for grant in copy.iter_mut().filter_map(Option::take) {
        let gref = grant.gref();
        if grant.end().is_err() {
            fail!("end of access to copied {gref} refused");
        }
    }
    Ok(())
}

/// Step 3: the notify page's byte cleared (its neighbours kept) and the event on the notify
/// port; then access to the page ends (the exit unmapped it) and the port is closed.
fn check_unmap_notify<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    channel: &Channel<H>,
    notify_port: Port,
    notify: Grant<'_, H, StaticPage>,
) -> CaseResult {
    let page = NOTIFY.as_mut_ptr().cast::<u8>().cast_const();
    let bytes = [-1isize, 0, 1].map(|d| volatile_read(page, NOTIFY_OFFSET.wrapping_add_signed(d)));
    if bytes != [NOTIFY_MARK, 0, NOTIFY_MARK] {
        fail!("bytes around {NOTIFY_OFFSET} are {bytes:x?} after dom0's process exited");
    }
    events.await_event(
        channel,
        notify_port,
        events.deadline(2_000_000_000),
        "the unmap notification's event",
    )?;
    let gref = notify.gref();
    notify
        .end()
        .map_err(|_| Fail::new(format_args!("{gref} still mapped after the notification")))?;
    channel
        .unbind_raw(notify_port)
        .map_err(|e| Fail::new(format_args!("{e}")))
}

/// Runs the grant phase and reports its cases (every one, also after a failure).
pub(super) fn run<P: Platform>(
    platform: &P,
    events: Events<P::Hypercall>,
    channel: &Channel<P::Hypercall>,
    r: &mut Reporter<RingConsole<P::Hypercall>>,
    store: &mut XenStore<P::Hypercall>,
    table: &GrantTable<P::Hypercall>,
) {
    const LATER: [&str; 4] = [
        "grant_map_dom0_page",
        "grant_copy_1mib_from_dom0",
        "grant_unmap_notify_seen",
        "grant_unmap_dom0_page",
    ];
    let h = platform.hypercall();
    let mut published = match publish(platform, channel, store, table) {
        Ok(published) => {
            r.case("grant_pages_for_dom0", Ok::<(), Fail>(()));
            published
        }
        Err(error) => {
            r.case("grant_pages_for_dom0", Err(error));
            for name in LATER {
                r.case(name, Err(Fail::new(format_args!("not run"))));
            }
            return;
        }
    };
    let port = published.port;
    let wait = |what| {
        events
            .await_event(channel, port, events.deadline(EVENT_WAIT_NS), what)
            .map_err(Fail::from)
    };
    let mapping = wait("dom0's grant phase").and_then(|()| map_dom0_page(&h, store));
    let mapping = match mapping {
        Ok(mapping) => {
            r.out(format_args!(
                "mapped dom0's gntalloc {} at {:#x}; it reads {DOM0_TEXT:?}",
                mapping.gref(),
                mapping.slot().host_addr()
            ));
            r.case("grant_map_dom0_page", Ok::<(), Fail>(()));
            Some(mapping)
        }
        Err(error) => {
            r.case("grant_map_dom0_page", Err(error));
            None
        }
    };
    let copied = check_copy(r, &mut published.copy);
    r.case("grant_copy_1mib_from_dom0", copied);
    let notified = check_unmap_notify(events, channel, published.notify_port, published.notify);
    r.case("grant_unmap_notify_seen", notified);
    let unmapped = (|| {
        let Some(mapping) = mapping else {
            fail!("nothing mapped");
        };
        channel
            .notify(port)
            .map_err(|e| Fail::new(format_args!("{e}")))?;
        wait("dom0 to see the domU's text")?;
        mapping
            .unmap()
            .map_err(|e| Fail::new(format_args!("unmap: {e}")))?;
        published
            .other
            .end()
            .map_err(|e| Fail::new(format_args!("{e}")))?;
        channel
            .unbind_raw(port)
            .map_err(|e| Fail::new(format_args!("{e}")))
    })();
    if unmapped.is_ok() {
        r.out(format_args!(
            "unmapped dom0's page after dom0 saw the domU's text"
        ));
    }
    r.case("grant_unmap_dom0_page", unmapped);
}
