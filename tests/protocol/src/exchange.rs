//! The cross-domain exchange between a dom0 test program and a domU test kernel: the xenstore keys,
//! the texts written into the granted page and the case names of both halves.
//!
//! Keys are relative to the domU's home `/local/domain/<domid>/`. The steps, in order:
//!
//! 1. dom0 creates the domU paused (`xl create -p`), may write [`SELFTEST`], and unpauses it.
//! 2. The domU reads [`SELFTEST`] first (absent in a normal run), then its `name` and `domid`
//!    and writes what it read to [`SEEN_NAME`] and [`SEEN_DOMID`].
//! 3. The domU allocates an unbound port P for dom0 (writes it to [`EVTCHN_PORT`], decimal), grants
//!    one page read-write to dom0 (ref R, never 0 or 1, written to [`GRANT_REF`]), fills its first bytes
//!    with [`DOMU_TEXT`], writes [`READY`] = `1` and waits (SCHEDOP_poll, [`DOMU_WAIT_SECONDS`]) for
//!    an event on P.
//! 4. dom0 waits for [`READY`], binds (domid, P) through `/dev/xen/evtchn` (port L), maps R through
//!    gntdev, checks [`DOMU_TEXT`], writes [`DOM0_TEXT`] at [`DOM0_TEXT_OFFSET`] and notifies L.
//! 5. The domU sees the event, checks [`DOM0_TEXT`] and notifies P; dom0 waits for it on L.
//! 6. dom0 unmaps the grant and notifies L again.
//! 7. The domU ends access to R (which succeeds: nothing maps it), closes P, runs the grant phase
//!    with dom0 ([`grant`]) and the [`store`] steps, writes 1 MiB of bulk data through its console
//!    ring and reports its digest there ([`crate::bulk`]), which dom0 compares with what
//!    xenconsoled logged; reports `DONE`, waits until the console backend consumed its output,
//!    prints `XENTEST SHUTDOWN poweroff` and powers off.
//!
//! The domU reports its cases ([`DOMU_CASES`]) on its PV console ring; dom0 forwards the console
//! log to the serial line, each line behind [`FORWARD_PREFIX`], and reports its own
//! ([`DOM0_CASES`]). The xenstore steps that follow are in [`store`].

pub mod store;

pub mod blk;
pub mod blkback;
pub mod grant;
pub mod linux;

/// The domU's data directory (a domU may write under it).
pub const DATA: &str = "data";
/// Written by dom0 before unpausing the domU, for the harness's self-tests: one of
/// [`SELFTEST_CRASH`], [`SELFTEST_SILENT`], [`SELFTEST_HANG`].
pub const SELFTEST: &str = "data/selftest";
/// The domU shuts down with `SHUTDOWN_crash` at once.
pub const SELFTEST_CRASH: &str = "crash";
/// The domU reports nothing and powers off.
pub const SELFTEST_SILENT: &str = "silent";
/// The domU hangs (never writes [`READY`]).
pub const SELFTEST_HANG: &str = "hang";
/// The name the domU read from its `name` key.
pub const SEEN_NAME: &str = "data/seen-name";
/// The domid the domU read from its `domid` key.
pub const SEEN_DOMID: &str = "data/seen-domid";
/// The port the domU allocated for dom0 (decimal).
pub const EVTCHN_PORT: &str = "data/evtchn-port";
/// The grant reference of the page the domU granted to dom0 (decimal).
pub const GRANT_REF: &str = "data/grant-ref";
/// `1` once every other key is written.
pub const READY: &str = "data/ready";
/// What the domU writes at the start of the granted page.
pub const DOMU_TEXT: &str = "domU wrote this";
/// What dom0 writes into the granted page, at [`DOM0_TEXT_OFFSET`].
pub const DOM0_TEXT: &str = "dom0 wrote this";
/// Where in the granted page dom0 writes [`DOM0_TEXT`].
pub const DOM0_TEXT_OFFSET: usize = 2048;
/// How long the domU waits for each event from dom0.
pub const DOMU_WAIT_SECONDS: u64 = 20;

/// What dom0 puts before each line of the domU's console it forwards to the serial line:
/// `[domu <name>] <line>`.
pub const FORWARD_PREFIX: &str = "[domu ";

/// How `xen-dom0-tests run-domu` reports how a domU ended: `XENTEST OUT domu-exit <name> <how>`,
/// `<how>` being a `SHUTDOWN_*` name (`poweroff`, `crash`, ...), `timeout` or `create-failed`.
pub const DOMU_EXIT: &str = "domu-exit";

/// The domU's cases, in the order it reports them.
pub const DOMU_CASES: &[&str] = &[
    "xenstore_read_name",
    "xenstore_read_domid",
    "evtchn_alloc_unbound",
    "grant_access",
    "evtchn_from_dom0",
    "grant_sees_dom0_write",
    "evtchn_notify_dom0",
    "grant_end_access",
    // The grant phase (`grant`).
    "grant_pages_for_dom0",
    "grant_map_dom0_page",
    "grant_copy_1mib_from_dom0",
    "grant_unmap_notify_seen",
    "grant_unmap_dom0_page",
    "console_bulk_written",
    "console_flushed",
];

/// dom0's cases, in the order it reports them.
pub const DOM0_CASES: &[&str] = &[
    "xl_create",
    "domu_ready",
    "domu_read_its_name",
    "domu_read_its_domid",
    "evtchn_bind_domu_port",
    "grant_map_domu_page",
    "evtchn_notify_domu",
    "evtchn_from_domu",
    "grant_unmap",
    // The grant phase (`grant`).
    "grant_domu_pages_published",
    "grant_gntalloc_page_to_domu",
    "grant_copy_1mib_with_domu",
    "grant_map_revoked_refused",
    "grant_unmap_notify_by_exit",
    "grant_domu_wrote_dom0_page",
    "console_bulk_intact",
    "domu_powered_off",
];

/// On a domU's command line (xl's `extra`, kept across `xl reboot`) instead of the exchange: the
/// lifecycle run. The domU advertises `control/feature-poweroff` and `feature-reboot`, watches
/// `control/shutdown`, writes [`READY`], and carries out the toolstack's request; dom0 reboots
/// it once (`xl reboot`: the domain comes back with a new domid and the same command line) and
/// then shuts it down (`xl shutdown`), judging both from xl's log.
pub const CONTROL_CMDLINE: &str = "xentest=control";

/// dom0's cases in the lifecycle run.
pub const CONTROL_DOM0_CASES: &[&str] = &[
    "xl_create",
    "domu_ready",
    "control_features_advertised",
    "control_xl_reboot",
    "domu_ready_after_reboot",
    "control_xl_shutdown",
];

/// The suspend cases of the lifecycle run, with a domU that advertises `feature-suspend` (x86 PV
/// and PVH): dom0 binds the domU's port ([`EVTCHN_PORT`]) and maps its page ([`GRANT_REF`],
/// holding [`DOMU_TEXT`]); each of dom0's events is answered at once, and each value dom0 writes
/// at [`suspend::PING`] is copied to [`suspend::PONG`] (a watch). Then `xl save -c` (the domU
/// carries on in place: [`suspend::SUSPENDED`] = `cancelled 1`, the same port, page and watch
/// work), `xl save` and `xl restore` (`resumed 2`: a new port and reference are published, dom0
/// binds and maps them, the watch and console work again, [`suspend::PATTERN`] says whether the
/// domU's memory survived).
pub mod suspend {
    /// Written by dom0, watched by the domU, which copies each value to [`PONG`].
    pub const PING: &str = "data/ping";
    /// The domU's copy of [`PING`].
    pub const PONG: &str = "data/pong";
    /// The outcome of the domU's latest suspend, `cancelled <n>` or `resumed <n>`, `n` counting
    /// its suspends.
    pub const SUSPENDED: &str = "data/suspended";
    /// After a resume: `intact`, or where the domU's memory pattern first differs.
    pub const PATTERN: &str = "data/pattern";
    /// What the domU writes on its console after each resume (dom0 looks for it in the log).
    pub const CONSOLE_MARK: &str = "control: resumed, console reconnected";

    /// On the domU's command line beside [`CONTROL_CMDLINE`](crate::exchange::CONTROL_CMDLINE):
    /// the domU does not advertise `feature-suspend`, though it could suspend (the run where
    /// xl's suspend request is refused).
    pub const NO_SUSPEND_CMDLINE: &str = "xentest=no-suspend";

    /// dom0's suspend cases, after `control_features_advertised`.
    pub const DOM0_CASES: &[&str] = &[
        "suspend_exchange_before",
        "suspend_xl_save_checkpoint",
        "suspend_exchange_after_checkpoint",
        "suspend_xl_save",
        "suspend_xl_restore",
        "suspend_exchange_after_restore",
    ];

    /// dom0's case with a domU that does not advertise `feature-suspend`: `xl save` fails and
    /// the domU runs on.
    pub const REFUSED_DOM0_CASES: &[&str] = &["suspend_refused"];
}

/// Written by dom0 before unpausing the domU instead of the exchange above: the event-channel
/// soak, `<round trips> <bind/unbind cycles>`. The domU publishes [`EVTCHN_PORT`] and [`READY`],
/// answers each of dom0's events on it, then (dom0 having bound, drained and closed its end
/// `<cycles>` times) answers one last event, closes the port and powers off.
pub const SOAK: &str = "data/soak";

/// The domU's cases in the soak.
pub const SOAK_DOMU_CASES: &[&str] = &[
    "evtchn_soak_port",
    "evtchn_soak_round_trips",
    "evtchn_soak_after_rebinds",
    "console_flushed",
];

/// dom0's cases in the soak.
pub const SOAK_DOM0_CASES: &[&str] = &[
    "xl_create",
    "domu_ready",
    "evtchn_soak_round_trips",
    "evtchn_soak_rebinds",
    "evtchn_soak_after_rebinds",
    "domu_powered_off",
];

/// dom0's cases in the fault table (`xen-dom0-tests domu-faults`): the domU runs the exchange
/// up to [`READY`] and waits for dom0's event, and dom0 destroys it meanwhile (its console is
/// not judged: it never finishes).
pub const FAULTS_DOM0_CASES: &[&str] = &[
    "xl_create",
    "domu_ready",
    "fault_domu_destroyed",
    "fault_evtchn_overflow",
    "fault_xenstored_restarted",
];

/// The forwarded form of `line` from domU `name`'s console.
#[cfg(feature = "std")]
pub fn forwarded(name: &str, line: &str) -> std::string::String {
    std::format!("{FORWARD_PREFIX}{name}] {line}")
}

/// Splits a forwarded line into the domU's name and its console line, or `None` for any other line.
pub fn split_forwarded(line: &str) -> Option<(&str, &str)> {
    let rest = &line[line.find(FORWARD_PREFIX)? + FORWARD_PREFIX.len()..];
    let (name, console) = rest.split_once("] ")?;
    (!name.is_empty() && !name.contains(' ')).then_some((name, console))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_lines_round_trip() {
        let line = forwarded("xentest-pv", "XENTEST CASE grant_access ok");
        assert_eq!(line, "[domu xentest-pv] XENTEST CASE grant_access ok");
        assert_eq!(
            split_forwarded(&line),
            Some(("xentest-pv", "XENTEST CASE grant_access ok"))
        );
        assert_eq!(split_forwarded("[  5.1] [domu d] x"), Some(("d", "x")));
        assert_eq!(split_forwarded("XENTEST CASE a ok"), None);
        assert_eq!(split_forwarded("[domu a b] x"), None);
        assert_eq!(split_forwarded("[domu ] x"), None);
    }

    #[test]
    fn case_names_are_valid_and_distinct() {
        for cases in [DOMU_CASES, DOM0_CASES, FAULTS_DOM0_CASES] {
            for (index, name) in cases.iter().enumerate() {
                assert!(crate::is_valid_case_name(name), "{name}");
                assert!(!cases[..index].contains(name), "{name} twice");
            }
        }
        assert!(DOM0_TEXT_OFFSET + DOM0_TEXT.len() <= 4096);
        assert!(DOMU_TEXT.len() <= DOM0_TEXT_OFFSET);
    }
}
