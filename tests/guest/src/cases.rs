//! The test cases every guest runs, on any backend.

use core::fmt::{self, Write};

use xen_hypercall::prelude::*;
use xen_hypercall::sched::Deadline;
use xen_hypercall::{Errno, Error};
use xen_testbed_protocol::{Reporter, Shutdown, report_panic, report_shutdown};

pub(crate) use crate::fail::{CaseResult, Fail, fail};
use crate::shared_info::SharedInfo;

/// `fmt::Write` onto Xen's console with `CONSOLEIO_write` (allowed for dom0).
#[derive(Debug)]
pub(crate) struct Console<'a, H>(pub(crate) &'a H);

impl<H: XenHypercall> Write for Console<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.console_write(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Checks that `result` is Xen's error `expected`.
pub(crate) fn expect_errno<T: fmt::Debug>(result: Result<T, Error>, expected: Errno) -> CaseResult {
    match result {
        Err(Error::Xen(errno)) if errno == expected => Ok(()),
        other => fail!("expected {expected:?}, got {other:?}"),
    }
}

/// The Xen release (`major.minor`, e.g. `4.20`) the testbed boots this build on: it builds each
/// release's guests with `XENTEST_XEN_VERSION` set. Without it only plausibility is checked.
const EXPECTED_XEN: Option<&str> = option_env!("XENTEST_XEN_VERSION");

/// `(major, minor)` of a `major.minor` text.
fn parse_version(text: &str) -> Option<(u16, u16)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Whether `version` is `expected` (`major.minor`).
fn is_version(version: xen_hypercall::version::Version, expected: &str) -> bool {
    parse_version(expected) == Some((version.major, version.minor))
}

/// The `virt_start` Xen reports: 4.17 reports its `HYPERVISOR_VIRT_START` to every guest; 4.18
/// and later only to 64-bit PV guests, 0 to translated ones (PVH, Arm).
fn expected_virt_start(expect: &Expect) -> u64 {
    let after_4_17 = EXPECTED_XEN
        .and_then(parse_version)
        .is_some_and(|release| release > (4, 17));
    if after_4_17 && expect.translated {
        0
    } else {
        expect.virt_start
    }
}

/// The reporter the guests write with.
pub(crate) type GuestReporter<'a, H> = Reporter<Console<'a, H>>;

/// What the architecture knows that the cases check against.
#[derive(Debug)]
pub(crate) struct Expect {
    /// A word `XENVER_capabilities` must contain, e.g. `"xen-3.0-x86_64"`.
    pub(crate) capability: &'static str,
    /// `XENVER_platform_parameters.virt_start` on Xen 4.17, which reports its
    /// `HYPERVISOR_VIRT_START` to every guest (see [`expected_virt_start`]).
    pub(crate) virt_start: u64,
    /// Whether the guest's physmap is translated (PVH, Arm: Xen sets
    /// `XENFEAT_auto_translated_physmap`) or not (PV).
    pub(crate) translated: bool,
}

/// x86_64's `HYPERVISOR_VIRT_START` (`public/arch-x86/xen-x86_64.h`).
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub(crate) const X86_64_VIRT_START: u64 = 0xffff_8000_0000_0000;

/// Runs the cases common to every guest.
pub(crate) fn run_common<H: XenHypercall<Error = Error>>(
    h: &H,
    reporter: &mut GuestReporter<'_, H>,
    shared_info: Result<SharedInfo, Error>,
    expect: &Expect,
) {
    version_cases(h, reporter, expect);
    reporter.case(
        "console_io_write",
        h.console_write(b"xen-test-guest: console_io write\n"),
    );
    crate::console::run(h, reporter);
    match shared_info {
        Ok(shared) => {
            reporter.case("shared_info_map", Ok::<(), Fail>(()));
            let input = crate::console::input(h, reporter, shared);
            reporter.case("console_input_read", input);
            event_channel_cases(h, reporter, shared);
            crate::evtchn::run(h, reporter, shared);
        }
        Err(error) => reporter.case("shared_info_map", Err(Fail::from(error))),
    }
    reporter.case(
        "evtchn_send_bad_port",
        expect_errno(h.evtchn_send(Port::new(4000)), Errno::EINVAL),
    );
    reporter.case(
        "evtchn_close_bad_port",
        expect_errno(h.evtchn_close(Port::new(4000)), Errno::EINVAL),
    );
    // SAFETY: hypercall 63 does not exist in Xen 4.17 (public/xen.h numbers end
    // at 41, arch ones at 48..55): Xen answers -ENOSYS and touches nothing.
    reporter.case(
        "unknown_hypercall",
        expect_errno(unsafe { h.hypercall0(63) }, Errno::ENOSYS),
    );
    // SAFETY: xen_version sub-op 64 does not exist (public/version.h ends at
    // XENVER_build_id = 10): Xen answers -ENOSYS before looking at the argument.
    reporter.case(
        "xen_version_unknown_subop",
        expect_errno(
            unsafe { h.hypercall2(xen_sys::__HYPERVISOR_xen_version as usize, [64, 0]) },
            Errno::ENOSYS,
        ),
    );
}

fn version_cases<H: XenHypercall<Error = Error>>(
    h: &H,
    r: &mut GuestReporter<'_, H>,
    expect: &Expect,
) {
    r.case(
        "xen_version",
        (|| {
            let v = h.xen_version()?;
            match EXPECTED_XEN {
                Some(expected) if !is_version(v, expected) => {
                    fail!("Xen {v}, expected {expected}")
                }
                None if v.major < 4 => fail!("implausible version {v}"),
                _ => Ok(()),
            }
        })(),
    );
    r.case(
        "xen_extraversion",
        (|| {
            // A point release, maybe with a suffix: ".7", ".5-pre".
            let e = h.extraversion()?;
            if !e.as_bytes().starts_with(b".") || e.as_bytes().len() < 2 {
                fail!("extraversion {e:?} is not \".<release>\"");
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_compile_info",
        (|| {
            let info = h.compile_info()?;
            if info.compiler.is_empty() {
                fail!("empty compiler string");
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_capabilities",
        (|| {
            let caps = h.capabilities()?;
            let text = caps
                .to_str()
                .map_err(|_| Fail::new(format_args!("not UTF-8")))?;
            if !text.split(' ').any(|word| word == expect.capability) {
                fail!("{:?} lacks {}", text, expect.capability);
            }
            Ok(())
        })(),
    );
    // No second source in a freestanding guest: the value goes to the log (the
    // Linux dom0 test compares it with /sys/hypervisor). Debian's Xen has an
    // empty changeset, and prints no "Latest ChangeSet" line at boot.
    let changeset = h.changeset();
    if let Ok(changeset) = &changeset {
        r.out(format_args!("Xen changeset {changeset}"));
    }
    r.case(
        "xen_changeset",
        (|| {
            let changeset = changeset?;
            if changeset.to_str().is_err() {
                fail!("changeset {changeset:?}");
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_platform_parameters",
        (|| {
            let params = h.platform_parameters()?;
            let expected = expected_virt_start(expect);
            if params.virt_start != expected {
                fail!(
                    "virt_start {:#x}, expected {expected:#x}",
                    params.virt_start,
                );
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_get_features",
        (|| {
            // Every testbed guest is the hardware domain (`do_xen_version`
            // sets XENFEAT_dom0 for it), translated or not as its type says.
            let features = h.features(0)?;
            let dom0 = 1 << xen_sys::XENFEAT_dom0;
            let translated = 1 << xen_sys::XENFEAT_auto_translated_physmap;
            if features & dom0 == 0 || (features & translated != 0) != expect.translated {
                fail!("features {features:#x}: dom0 or auto_translated_physmap wrong");
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_pagesize",
        (|| {
            let size = h.pagesize()?;
            if size != 4096 {
                fail!("page size {size}");
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_guest_handle",
        (|| {
            // Xen builds dom0 with no handle (zeroed `dom0_cfg`); only the
            // toolstack gives one to the domains it creates.
            let handle = h.guest_handle()?;
            if handle.0 != [0; 16] {
                fail!("dom0's handle is {:?}, not zero", handle.0);
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_commandline",
        (|| {
            let line = h.commandline()?;
            if line.is_empty() {
                fail!("empty command line");
            }
            Ok(())
        })(),
    );
    r.case(
        "xen_build_id",
        (|| {
            let id = h.build_id()?;
            if id.as_bytes().is_empty() {
                fail!("empty build id");
            }
            Ok(())
        })(),
    );
    if let (Ok(v), Ok(e)) = (h.xen_version(), h.extraversion()) {
        r.out(format_args!("Xen {v}{e}"));
    }
}

/// Loopback: alloc_unbound + bind_interdomain to it, send, observe the pending
/// bit in shared_info, poll, close.
fn event_channel_cases<H: XenHypercall<Error = Error>>(
    h: &H,
    r: &mut GuestReporter<'_, H>,
    shared: SharedInfo,
) {
    let unbound = match h.evtchn_alloc_unbound(DomId::SELF, DomId::SELF) {
        Ok(port) => {
            r.case("evtchn_alloc_unbound", Ok::<(), Fail>(()));
            port
        }
        Err(e) => return r.case("evtchn_alloc_unbound", Err(Fail::from(e))),
    };
    let bound = match h.evtchn_bind_interdomain(DomId::SELF, unbound) {
        Ok(port) => {
            r.case("evtchn_bind_interdomain", Ok::<(), Fail>(()));
            port
        }
        Err(e) => return r.case("evtchn_bind_interdomain", Err(Fail::from(e))),
    };
    // Binding leaves the new local port pending; start from a clean state.
    shared.clear_pending(bound);
    shared.clear_pending(unbound);
    r.case(
        "evtchn_send_pending",
        (|| {
            h.evtchn_send(bound)?;
            if !shared.is_pending(unbound) {
                fail!(
                    "port {} not pending in shared_info after send on {}",
                    unbound.raw(),
                    bound.raw()
                );
            }
            if shared.is_pending(bound) {
                fail!("the sending port {} became pending", bound.raw());
            }
            Ok(())
        })(),
    );
    // A pending port: poll returns at once (no deadline: it would hang if broken,
    // which the runner's timeout catches).
    r.case(
        "sched_poll_pending",
        h.poll(&[unbound], None).map_err(Fail::from),
    );
    shared.clear_pending(unbound);
    // Nothing pending: the deadline (1 ns after boot, long past) ends the poll.
    r.case(
        "sched_poll_timeout",
        (|| {
            h.poll(&[unbound], Some(Deadline::from_nanos(1)))?;
            if shared.is_pending(unbound) {
                fail!("port became pending without a send");
            }
            Ok(())
        })(),
    );
    r.case(
        "evtchn_close",
        (|| {
            h.evtchn_close(bound)?;
            h.evtchn_close(unbound)?;
            expect_errno(h.evtchn_send(bound), Errno::EINVAL)
        })(),
    );
}

/// Ends the run's report. Writes DONE; when every case passed, announces
/// `XENTEST SHUTDOWN reboot` and asks Xen to reboot the machine
/// (`SCHEDOP_shutdown`, `SHUTDOWN_reboot`): for the hardware domain Xen prints
/// `Hardware Dom0 shutdown: rebooting machine` and resets, which ends QEMU under
/// `-no-reboot`; the runner judges that as the `clean_shutdown` case.
///
/// Returns the failure code (1) for the caller's QEMU exit only when a case
/// failed, or when the hypercall returned (it must not), which is reported as a
/// `PANIC`.
pub(crate) fn finish<H: XenHypercall<Error = Error>>(h: &H, reporter: GuestReporter<'_, H>) -> u8 {
    let summary = reporter.done();
    if !summary.all_passed() {
        return summary.exit_code();
    }
    report_shutdown(&mut Console(h), Shutdown::Reboot);
    match h.shutdown(ShutdownReason::REBOOT) {
        Ok(()) => report_panic(&mut Console(h), "shutdown returned: no error"),
        Err(error) => report_panic(&mut Console(h), format_args!("shutdown returned: {error}")),
    }
    1
}
