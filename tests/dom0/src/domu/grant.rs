//! The dom0 half of the exchange's grant phase (`exchange::grant`), through xen-grant's Linux
//! side: a page shared with the domU through gntalloc, 1 MiB grant-copied both ways through
//! gntdev, the domU's revoked and misdirected references refused, and a child process
//! (`xen-dom0-tests grant-notify-child`) whose exit unmaps a domU page with a notification.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::{EventChannel, Port};
use xen_grant::linux::{CopyDest, CopySegment, CopySource, Gntalloc, Gntdev, UnmapNotify};
use xen_grant::{Error, GrantRef};
use xen_hypercall::{DomId, ErrorKind};
use xen_testbed_protocol::exchange::grant::{
    self as phase, COPY_PAGES, DOM0_SEED, DOMU_SEED, NOTIFY_MARK, NOTIFY_OFFSET, copy_pattern,
};
use xen_testbed_protocol::exchange::{DOM0_TEXT, DOM0_TEXT_OFFSET, DOMU_TEXT};

use super::{Domain, EVENT_TIMEOUT, READY_TIMEOUT, Steps, expect_equal};
use crate::devices::InterdomainPort;

const PAGE: usize = 4096;

/// The child process's subcommand.
const NOTIFY_CHILD: &str = "grant-notify-child";

fn text(error: Error) -> String {
    error.to_string()
}

/// Reads a decimal reference `key`.
fn read_ref(domain: &Domain, key: &str) -> Result<GrantRef, String> {
    domain.read_number(key).map(GrantRef::new)
}

/// Runs the grant phase's steps after the first exchange.
pub(super) fn run(steps: &mut Steps, domain: &Domain) {
    let domid = DomId::new(domain.domid as u16);
    let start = Instant::now();
    let published = steps.step("grant_domu_pages_published", |out| {
        domain.wait_for_key(phase::READY, "1", READY_TIMEOUT)?;
        let mut port = InterdomainPort::bind(domain.domid, domain.read_number(phase::PORT)?)?;
        // Xen marks a newly bound port pending: drain that event.
        port.wait(Duration::from_secs(2))
            .map_err(|e| format!("the pending event after binding: {e}"))?;
        let list = domain.read(phase::COPY_REFS)?;
        let refs = list
            .split(' ')
            .map(|r| r.parse().map(GrantRef::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", phase::COPY_REFS))?;
        if refs.len() != COPY_PAGES {
            return Err(format!("{} references to copy", refs.len()));
        }
        out.out(format_args!(
            "the domU published {COPY_PAGES} pages to copy, a notify page and two bad references"
        ));
        Ok((port, refs))
    });
    let Some((mut port, refs)) = published else {
        for case in [
            "grant_gntalloc_page_to_domu",
            "grant_copy_1mib_with_domu",
            "grant_map_revoked_refused",
            "grant_unmap_notify_by_exit",
            "grant_domu_wrote_dom0_page",
        ] {
            steps.step(case, |_| Ok(()));
        }
        return;
    };
    let gntalloc = Gntalloc::open().map_err(text);
    let share = steps.step("grant_gntalloc_page_to_domu", |out| {
        let share = gntalloc
            .as_ref()
            .map_err(Clone::clone)?
            .share(domid, 1, false)
            .map_err(text)?;
        share
            .mem()
            .write(0, DOM0_TEXT.as_bytes())
            .map_err(|e| e.to_string())?;
        let gref = share.grefs()[0];
        domain.write(phase::DOM0_REF, &gref.raw().to_string())?;
        out.out(format_args!(
            "shared a page with the domU through gntalloc: {gref}"
        ));
        Ok(share)
    });
    steps.step("grant_copy_1mib_with_domu", |out| {
        copy_1mib(domid, &refs, out)
    });
    steps.step("grant_map_revoked_refused", |out| {
        let gntdev = Gntdev::open().map_err(text)?;
        let refused = [
            ("revoked", read_ref(domain, phase::REVOKED_REF)?),
            (
                "granted to another domain",
                read_ref(domain, phase::OTHER_DOMAIN_REF)?,
            ),
            ("past the table", GrantRef::new(0x00ff_ffff)),
        ];
        for (what, gref) in refused {
            match gntdev.map(domid, &[gref], false) {
                Err(error @ Error::MapRefused { errno, .. })
                    if error.kind() == ErrorKind::PermissionDenied =>
                {
                    out.out(format_args!("{what} {gref}: refused ({errno})"));
                }
                other => return Err(format!("{what} {gref}: {other:?}, expected MapRefused")),
            }
        }
        Ok(())
    });
    steps.step("grant_unmap_notify_by_exit", |out| {
        let notify_ref = read_ref(domain, phase::NOTIFY_REF)?;
        let notify_port = domain.read_number(phase::NOTIFY_PORT)?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let status = Command::new(exe)
            .args([
                NOTIFY_CHILD,
                &domain.domid.to_string(),
                &notify_ref.raw().to_string(),
                &notify_port.to_string(),
            ])
            .status()
            .map_err(|e| format!("{NOTIFY_CHILD}: {e}"))?;
        if !status.success() {
            return Err(format!("{NOTIFY_CHILD} ended with {status}"));
        }
        port.notify()?;
        out.out(format_args!(
            "a child mapped {notify_ref} with an unmap notification (byte {NOTIFY_OFFSET}, the \
             domU's port {notify_port}) and exited without unmapping; notified the domU"
        ));
        Ok(())
    });
    steps.step("grant_domu_wrote_dom0_page", |out| {
        let share = share.as_ref().ok_or("no shared page")?;
        port.wait(EVENT_TIMEOUT)?;
        let mut seen = [0; DOMU_TEXT.len()];
        share
            .mem()
            .read(DOM0_TEXT_OFFSET, &mut seen)
            .map_err(|e| e.to_string())?;
        expect_equal(
            "the shared page",
            &String::from_utf8_lossy(&seen),
            DOMU_TEXT,
        )?;
        port.notify()?;
        out.out(format_args!(
            "the domU's text is in the gntalloc page at byte {DOM0_TEXT_OFFSET}; notified the \
             domU; the grant phase took {} ms",
            start.elapsed().as_millis()
        ));
        Ok(())
    });
}

/// Grant-copies the domU's 1 MiB out (checking its pattern) and dom0's pattern in, each in one
/// `GRANT_COPY` of 256 page segments.
fn copy_1mib(
    domid: DomId,
    refs: &[GrantRef],
    out: &mut xen_testbed_protocol::Reporter<xen_testbed_protocol::Stdout>,
) -> Result<(), String> {
    let gntdev = Gntdev::open().map_err(text)?;
    let len = COPY_PAGES * PAGE;
    let grant = |gref: &GrantRef| (domid, *gref);
    let mut from_domu = vec![0u8; len];
    let start = Instant::now();
    let mut segments: Vec<CopySegment<'_>> = from_domu
        .chunks_mut(PAGE)
        .zip(refs.iter().map(grant))
        .map(|(chunk, (domid, gref))| CopySegment {
            source: CopySource::Grant {
                domid,
                gref,
                offset: 0,
            },
            dest: CopyDest::Local(chunk),
            len: PAGE as u16,
        })
        .collect();
    gntdev.copy(&mut segments).map_err(text)?;
    drop(segments);
    let copied_out = start.elapsed();
    if let Some(at) = (0..len).find(|&i| from_domu[i] != copy_pattern(DOMU_SEED, i)) {
        return Err(format!(
            "byte {at} (page {}) copied out is {:#x}, the domU wrote {:#x}",
            at / PAGE,
            from_domu[at],
            copy_pattern(DOMU_SEED, at)
        ));
    }
    let out_digest = phase::digest(from_domu.iter().copied());
    let to_domu: Vec<u8> = (0..len).map(|i| copy_pattern(DOM0_SEED, i)).collect();
    let start = Instant::now();
    let mut segments: Vec<CopySegment<'_>> = to_domu
        .chunks(PAGE)
        .zip(refs.iter().map(grant))
        .map(|(chunk, (domid, gref))| CopySegment {
            source: CopySource::Local(chunk),
            dest: CopyDest::Grant {
                domid,
                gref,
                offset: 0,
            },
            len: PAGE as u16,
        })
        .collect();
    gntdev.copy(&mut segments).map_err(text)?;
    let copied_in = start.elapsed();
    out.out(format_args!(
        "grant-copied 1 MiB out of the domU's {COPY_PAGES} pages in {} ms (its pattern, digest \
         {out_digest:#018x}) and 1 MiB in in {} ms (digest {:#018x})",
        copied_out.as_millis(),
        copied_in.as_millis(),
        phase::digest(to_domu.iter().copied())
    ));
    Ok(())
}

/// `xen-dom0-tests grant-notify-child <domid> <gref> <port>`: maps the domU's page through
/// gntdev, asks for byte `NOTIFY_OFFSET` to be cleared and the domU's `port` (bound here) to
/// be signalled on unmap, and exits without unmapping: Linux does both when the files close.
pub(crate) fn notify_child(args: &[&str]) -> ExitCode {
    match map_with_notify(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xen-dom0-tests {NOTIFY_CHILD}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn map_with_notify(args: &[&str]) -> Result<(), String> {
    let [domid, gref, port] = args else {
        return Err("usage: <domid> <gref> <port>".into());
    };
    let number = |text: &str| text.parse::<u32>().map_err(|e| format!("{text:?}: {e}"));
    let domid = DomId::new(u16::try_from(number(domid)?).map_err(|e| e.to_string())?);
    let gref = GrantRef::new(number(gref)?);
    let events = EvtchnDevice::open().map_err(|e| format!("open /dev/xen/evtchn: {e}"))?;
    let local = events
        .bind_interdomain_raw(domid, Port::new(number(port)?))
        .map_err(|e| format!("bind the domU's port: {e}"))?;
    let gntdev = Gntdev::open().map_err(text)?;
    let mapping = gntdev.map(domid, &[gref], false).map_err(text)?;
    let mut mark = [0];
    mapping.read(NOTIFY_OFFSET, &mut mark).map_err(text)?;
    if mark[0] != NOTIFY_MARK {
        return Err(format!("byte {NOTIFY_OFFSET} reads {:#x}", mark[0]));
    }
    mapping
        .notify_on_unmap(UnmapNotify {
            clear_byte: Some(NOTIFY_OFFSET),
            event: Some(local),
        })
        .map_err(text)?;
    // Leave with the mapping and both devices open: the exit releases them.
    std::mem::forget(mapping);
    std::mem::forget(gntdev);
    std::mem::forget(events);
    Ok(())
}
