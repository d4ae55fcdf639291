//! The scenarios, building their payloads, running them (at most two QEMUs at once) and reporting.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xen_testbed_protocol::{INPUT_LINE, INPUT_PROMPT, Log, exchange, parse_log};

use crate::c_program;
use crate::linux_domu;
use crate::own_code::{self, OwnCode};
use crate::release::{RELEASES, Release};
use crate::verdict::{
    CLEAN_SHUTDOWN, CaseResult, DomuExpectation, Expectation, XEN_LOG_CASE, judge, split_domains,
};
use crate::{
    Arch, Dom0Run, Error, Outcome, Result, Testbed, command_output, initramfs, qemu, verdict,
};

/// The dom0 test programs' package (and binary).
pub const DOM0_TESTS: &str = "xen-dom0-tests";
/// The freestanding guests' package (and binary).
pub const GUEST: &str = "xen-test-guest";
/// The cases every freestanding guest must report (it may report more; each is judged).
pub const GUEST_CASES: &[&str] = &[
    "console_io_write",
    "console_log_read_back",
    "console_input_read",
    "xen_version",
    "xen_extraversion",
    "xen_compile_info",
    "xen_capabilities",
    "xen_changeset",
    "xen_platform_parameters",
    "xen_get_features",
    "xen_pagesize",
    "xen_guest_handle",
    "xen_commandline",
    "xen_build_id",
    "xen_version_unknown_subop",
    "unknown_hypercall",
    "shared_info_map",
    "evtchn_alloc_unbound",
    "evtchn_bind_interdomain",
    "evtchn_send_pending",
    "sched_poll_pending",
    "sched_poll_timeout",
    "evtchn_close",
    "evtchn_send_bad_port",
    "evtchn_close_bad_port",
    "zero_cost_probe",
];

/// The grant table cases every freestanding guest must report (`tests/guest/src/grant.rs`).
pub const GUEST_GRANT_CASES: &[&str] = &[
    "grant_query_size",
    "grant_table_map",
    "grant_allocator_skips_reserved",
    "grant_copy_from_grant",
    "grant_copy_refusals",
    "grant_self_map_pins_until_unmap",
    "grant_revoked_refused",
    "grant_unmap_bad_handle",
];

/// The cases a run of a freestanding guest of `kind` must show: the guest's own, then
/// [`CLEAN_SHUTDOWN`], which the runner reports when the guest ends the run by asking Xen to
/// reboot (a guest that exits QEMU itself misses it).
pub fn guest_cases(kind: GuestKind) -> Vec<String> {
    let specific: &[&str] = match kind {
        GuestKind::Pv => &["pv_start_info", "pv_set_iopl", "pv_hvm_detect_refused"],
        GuestKind::Pvh => &["hvm_detect", "cpuid_version", "hypercall_page"],
        GuestKind::Aarch64 => &[],
    };
    GUEST_CASES
        .iter()
        .chain(GUEST_GRANT_CASES)
        .chain(specific)
        .chain([&CLEAN_SHUTDOWN])
        .map(|c| c.to_string())
        .collect()
}

/// At most this many QEMUs run at once.
const PARALLEL: usize = 2;
/// Lines of serial log shown for a failed scenario.
const TAIL_LINES: usize = 40;

/// A freestanding guest flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestKind {
    /// x86_64 PV dom0 (`--features pv`).
    Pv,
    /// x86_64 PVH dom0 (`--features pvh`).
    Pvh,
    /// aarch64 dom0 (arm64 Image).
    Aarch64,
}

impl GuestKind {
    /// The architecture it runs on.
    pub fn arch(self) -> Arch {
        match self {
            GuestKind::Pv | GuestKind::Pvh => Arch::X86_64,
            GuestKind::Aarch64 => Arch::Aarch64,
        }
    }
}

/// What a Linux dom0 sets up before its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The Xen modules and xenfs.
    Modules,
    /// Also Debian's toolstack (`xenstored`, `xen-init-dom0`, `xenconsoled`).
    Toolstack,
    /// The toolstack, with this shell line run before its first step (a self-test breaking it).
    BrokenToolstack(&'static str),
    /// The toolstack and Linux's block backend (blkback, the loop device).
    BlockBackend,
}

impl Setup {
    fn preamble(self) -> initramfs::Preamble {
        match self {
            Setup::Modules => initramfs::Preamble::Modules,
            Setup::Toolstack => initramfs::Preamble::Toolstack { fault: None },
            Setup::BrokenToolstack(fault) => initramfs::Preamble::Toolstack {
                fault: Some(fault.into()),
            },
            Setup::BlockBackend => initramfs::Preamble::BlockBackend,
        }
    }
}

/// A scenario with two domains: a Linux dom0 with the toolstack runs the dom0 half of the exchange
/// (`xen-dom0-tests domu`, cases [`exchange::DOM0_CASES`]) against a freestanding domU it creates
/// with `xl create`, which runs the domU half (cases [`exchange::DOMU_CASES`]); both are judged
/// together. The exchange itself is described once, in [`exchange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossDomain {
    /// The domU's flavour.
    pub domu: GuestKind,
    /// For the harness's self-tests: the value dom0 writes to [`exchange::SELFTEST`].
    pub selftest: Option<&'static str>,
    /// What dom0 runs with the domU.
    pub run: DomuRun,
}

/// What dom0 runs with the domU of a [`CrossDomain`] scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomuRun {
    /// The exchange ([`exchange::DOM0_CASES`], [`exchange::DOMU_CASES`]).
    Exchange,
    /// The event-channel soak ([`exchange::SOAK`]): round trips and bind/unbind cycles.
    Soak {
        /// Ping-pong round trips.
        trips: u64,
        /// Bind/unbind cycles of the domU's port.
        cycles: u64,
    },
    /// The fault table ([`exchange::FAULTS_DOM0_CASES`]): the domU is destroyed under dom0's
    /// port, mapping and watch, then dom0 alone overflows an evtchn ring and restarts xenstored.
    Faults,
    /// The lifecycle ([`exchange::CONTROL_DOM0_CASES`]): `xl save -c`, `xl save` and `xl
    /// restore` ([`exchange::suspend`]), `xl reboot`, then `xl shutdown`, of a domU that answers
    /// through `xen-guest`'s control module.
    Control {
        /// Whether the domU advertises `feature-suspend` where it can suspend (else `xl save`
        /// must fail: [`exchange::suspend::REFUSED_DOM0_CASES`]).
        suspend: bool,
    },
    /// The block device ([`exchange::blk`]): dom0 serves the domU a disk through Linux's blkback.
    Block,
}

impl CrossDomain {
    /// The domU's name in xl (and on its forwarded console lines).
    pub fn domu_name(&self) -> String {
        domu_name(self.domu)
    }
}

/// The xl name of the domU of flavour `kind`.
pub fn domu_name(kind: GuestKind) -> String {
    format!("xentest-{}", format!("{kind:?}").to_lowercase())
}

/// xl's `type` and `memory` (MiB) of a domU of flavour `kind` (Arm guests are PVH-like).
pub fn xl_type_and_memory(kind: GuestKind) -> (&'static str, u32) {
    match kind {
        GuestKind::Pv => ("pv", 16),
        GuestKind::Pvh => ("pvh", 32),
        GuestKind::Aarch64 => ("pvh", 32),
    }
}

/// What a scenario boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Linux dom0 running shell lines (see [`Dom0Run::commands`]).
    LinuxDom0 {
        /// The architecture.
        arch: Arch,
        /// What `/init` sets up first.
        setup: Setup,
        /// The shell lines.
        commands: &'static [&'static str],
    },
    /// A freestanding guest as dom0.
    Guest(GuestKind),
    /// A Linux dom0 and a freestanding domU.
    CrossDomain(CrossDomain),
    /// Code built outside the workspace, run as `cargo xtask testbed run` runs it.
    OwnCode(OwnCode),
    /// A Linux dom0 and a Linux domU (Debian's kernel, [`crate::linux_domu`]) running
    /// `xen-dom0-tests linux-domu` against dom0's `linux-domu-peer`
    /// ([`exchange::linux`]).
    LinuxDomu(linux_domu::Mode),
    /// A Linux dom0 with the toolstack steers a freestanding domU through `xen-ctrl` and maps
    /// its memory (`xen-dom0-tests ctrl-domu`, cases [`CTRL_DOMU_CASES`]).
    ControlPlane(GuestKind),
    /// A Linux dom0 serves a Linux PV domU's xen-blkfront a hot-plugged disk with xen-blk's
    /// userspace backend (`xen-dom0-tests blkback`, [`crate::blkback`]); x86_64.
    UserspaceBlockBackend,
}

impl Kind {
    /// The architecture QEMU emulates.
    pub fn arch(self) -> Arch {
        match self {
            Kind::LinuxDom0 { arch, .. } => arch,
            Kind::Guest(kind) => kind.arch(),
            Kind::CrossDomain(cross) => cross.domu.arch(),
            Kind::OwnCode(_) | Kind::LinuxDomu(_) => Arch::X86_64,
            Kind::ControlPlane(domu) => domu.arch(),
            Kind::UserspaceBlockBackend => Arch::X86_64,
        }
    }

    /// Whether it boots a Linux dom0 (with `xen-dom0-tests`).
    fn is_linux(self) -> bool {
        !matches!(self, Kind::Guest(_))
    }
}

/// A named test scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// The name given on the command line.
    pub name: &'static str,
    /// One line for `--list`.
    pub about: &'static str,
    /// What it boots.
    pub kind: Kind,
    /// The hang timeout.
    pub timeout: Duration,
    /// For the harness's self-tests: the run must fail, with a failure line containing this.
    pub must_fail: Option<&'static str>,
    /// A Linux dom0's vCPUs (1 but for the SMP stress: each costs boot time under TCG).
    pub dom0_vcpus: u32,
}

impl Scenario {
    /// Whether this is a self-test of the harness (a broken payload that must be reported as failing).
    pub fn is_self_test(&self) -> bool {
        self.must_fail.is_some()
    }
}

const fn linux(
    name: &'static str,
    about: &'static str,
    arch: Arch,
    commands: &'static [&'static str],
    timeout: u64,
    must_fail: Option<&'static str>,
) -> Scenario {
    Scenario {
        name,
        about,
        kind: Kind::LinuxDom0 {
            arch,
            setup: Setup::Modules,
            commands,
        },
        timeout: Duration::from_secs(timeout),
        must_fail,
        dom0_vcpus: 1,
    }
}

const fn cross_domain(
    name: &'static str,
    about: &'static str,
    domu: GuestKind,
    selftest: Option<&'static str>,
    must_fail: Option<&'static str>,
) -> Scenario {
    Scenario {
        name,
        about,
        kind: Kind::CrossDomain(CrossDomain {
            domu,
            selftest,
            run: DomuRun::Exchange,
        }),
        timeout: Duration::from_secs(120),
        must_fail,
        dom0_vcpus: 1,
    }
}

/// A cross-domain scenario whose domU does `run` rather than the exchange.
const fn domu_run(
    name: &'static str,
    about: &'static str,
    domu: GuestKind,
    run: DomuRun,
    timeout: u64,
) -> Scenario {
    Scenario {
        kind: Kind::CrossDomain(CrossDomain {
            domu,
            selftest: None,
            run,
        }),
        timeout: Duration::from_secs(timeout),
        ..cross_domain(name, about, domu, None, None)
    }
}

/// The command that runs the `xl info` oracle case ([`ORACLE_CASE`]) in a dom0 with the toolstack.
pub const ORACLE_COMMAND: &str = "xen-dom0-tests xl-info";
/// The `xl info` oracle case.
pub const ORACLE_CASE: &str = "xen_version_matches_xl_info";
/// The command that runs the xenstore client's cases against `xenstored` (needs the toolstack).
pub const STORE_COMMAND: &str = "xen-dom0-tests store";
/// The command that runs xen-vchan against Debian's libxenvchan (needs the toolstack and the C
/// peer, [`c_program::LIBXENVCHAN_PEER`], which the scenario ships).
pub const VCHAN_COMMAND: &str = "xen-dom0-tests vchan";
/// The command that runs the short concurrency stress and the scale measures (needs the
/// toolstack; the long one is `cargo xtask bench evtchn --stress`).
pub const STRESS_COMMAND: &str = "xen-dom0-tests stress";

const fn guest(name: &'static str, about: &'static str, kind: GuestKind) -> Scenario {
    Scenario {
        name,
        about,
        kind: Kind::Guest(kind),
        timeout: Duration::from_secs(60),
        must_fail: None,
        dom0_vcpus: 1,
    }
}

/// Every scenario, in the order they run.
pub fn scenarios() -> &'static [Scenario] {
    const ALL: &[Scenario] = &[
        Scenario {
            kind: Kind::LinuxDom0 {
                arch: Arch::X86_64,
                setup: Setup::Toolstack,
                commands: &[DOM0_TESTS, ORACLE_COMMAND, STORE_COMMAND],
            },
            ..linux(
                "linux-dom0-x86_64",
                "Linux PV dom0 on Xen amd64 with the toolstack runs xen-dom0-tests, the xl info oracle and the xenstore cases",
                Arch::X86_64,
                &[],
                150,
                None,
            )
        },
        Scenario {
            kind: Kind::LinuxDom0 {
                arch: Arch::Aarch64,
                setup: Setup::Toolstack,
                commands: &[DOM0_TESTS, ORACLE_COMMAND, STORE_COMMAND],
            },
            ..linux(
                "linux-dom0-aarch64",
                "Linux dom0 on Xen arm64 with the toolstack runs xen-dom0-tests, the xl info oracle and the xenstore cases",
                Arch::Aarch64,
                &[],
                90,
                None,
            )
        },
        cross_domain(
            "domu-pv",
            "Linux dom0 creates a freestanding x86_64 PV domU: xenstore, event channels, a granted page",
            GuestKind::Pv,
            None,
            None,
        ),
        cross_domain(
            "domu-pvh",
            "Linux dom0 creates a freestanding x86_64 PVH domU: xenstore, event channels, a granted page",
            GuestKind::Pvh,
            None,
            None,
        ),
        cross_domain(
            "domu-aarch64",
            "Linux dom0 creates a freestanding aarch64 domU: xenstore, event channels, a granted page",
            GuestKind::Aarch64,
            None,
            None,
        ),
        Scenario {
            kind: Kind::CrossDomain(CrossDomain {
                domu: GuestKind::Pv,
                selftest: None,
                run: DomuRun::Soak {
                    trips: 2000,
                    cycles: 200,
                },
            }),
            ..cross_domain(
                "domu-evtchn-soak",
                "Linux dom0 and a freestanding PV domU ping-pong an event channel 2000 times, dom0 rebinds it 200 times (the long run: cargo xtask bench evtchn --domu-soak)",
                GuestKind::Pv,
                None,
                None,
            )
        },
        Scenario {
            kind: Kind::LinuxDom0 {
                arch: Arch::X86_64,
                setup: Setup::Toolstack,
                commands: &[STRESS_COMMAND],
            },
            dom0_vcpus: 2,
            ..linux(
                "dom0-smp-stress",
                "Linux PV dom0 with 2 vCPUs: xen-evtchn and xen-store under a multi-threaded runtime (lost and leaked counted), and how their cost grows (the long run: cargo xtask bench evtchn --stress)",
                Arch::X86_64,
                &[],
                240,
                None,
            )
        },
        Scenario {
            kind: Kind::LinuxDom0 {
                arch: Arch::X86_64,
                setup: Setup::Toolstack,
                commands: &[VCHAN_COMMAND],
            },
            ..linux(
                "vchan-dom0",
                "Linux PV dom0 runs xen-vchan against Debian's libxenvchan (dom0 to itself): both roles, 16 MiB each way, rings in the page and in their own pages, a C peer dying mid-stream, ours on tokio",
                Arch::X86_64,
                &[],
                300,
                None,
            )
        },
        domu_run(
            "domu-faults",
            "the fault table: a PV domU destroyed under dom0's port, grant mapping and watch; an evtchn ring overflowed; xenstored killed and restarted",
            GuestKind::Pv,
            DomuRun::Faults,
            120,
        ),
        domu_run(
            "domu-control-pv",
            "xl save -c, xl save, xl restore, xl reboot and xl shutdown of a freestanding PV domU in the middle of an exchange with dom0, which advertises and answers them through xen-guest (xl's log and the exchange the oracles)",
            GuestKind::Pv,
            DomuRun::Control { suspend: true },
            180,
        ),
        domu_run(
            "domu-control-no-suspend-pv",
            "xl save of a freestanding PV domU that does not advertise feature-suspend: xl asks all the same, the domU leaves the request unacknowledged, xl cancels after its 60 s and the domU runs on",
            GuestKind::Pv,
            DomuRun::Control { suspend: false },
            240,
        ),
        domu_run(
            "blk-domu-pv",
            "Linux dom0 serves a PV domU a 4 MiB disk through blkback (a loop device over a file): xen-blk's frontend reads dom0's pattern, writes its own (dom0 checks the file), flushes, closes on xl block-detach",
            GuestKind::Pv,
            DomuRun::Block,
            120,
        ),
        domu_run(
            "domu-control-pvh",
            "xl save -c, xl save, xl restore, xl reboot and xl shutdown of a freestanding PVH domU in the middle of an exchange with dom0; it reads its command line from hvm_start_info and answers through xen-guest (xl's log and the exchange the oracles)",
            GuestKind::Pvh,
            DomuRun::Control { suspend: true },
            180,
        ),
        domu_run(
            "blk-domu-pvh",
            "Linux dom0 serves a PVH domU a 4 MiB disk through blkback (a loop device over a file): xen-blk's frontend reads dom0's pattern, writes its own (dom0 checks the file), flushes, closes on xl block-detach",
            GuestKind::Pvh,
            DomuRun::Block,
            120,
        ),
        domu_run(
            "domu-control-aarch64",
            "xl reboot and xl shutdown of a freestanding aarch64 domU, which reads its command line from the device tree and answers through xen-guest (xl's log the oracle); xl save fails (Xen cannot save an Arm domain)",
            GuestKind::Aarch64,
            DomuRun::Control { suspend: true },
            180,
        ),
        domu_run(
            "blk-domu-aarch64",
            "Linux dom0 on Xen arm64 serves an aarch64 domU a 4 MiB disk through blkback (a loop device over a file): xen-blk's frontend reads dom0's pattern, writes its own (dom0 checks the file), flushes, closes on xl block-detach",
            GuestKind::Aarch64,
            DomuRun::Block,
            120,
        ),
        Scenario {
            name: "linux-domu-pv",
            about: "Linux dom0 creates a Linux PV domU (Debian's kernel, busybox initramfs) running xen-dom0-tests linux-domu: xen-store over /dev/xen/xenbus (own home, dom0's refused, a watch), xen-evtchn device and tokio ping-pong with dom0, a gntalloc page dom0 maps, privcmd allowed and refused",
            kind: Kind::LinuxDomu(linux_domu::Mode::Pv),
            timeout: Duration::from_secs(240),
            must_fail: None,
            dom0_vcpus: 1,
        },
        Scenario {
            name: "linux-domu-pvh",
            about: "the same with a Linux PVH domU (xl's cpuid hides RDTSCP, which Xen cannot emulate under TCG)",
            kind: Kind::LinuxDomu(linux_domu::Mode::Pvh),
            timeout: Duration::from_secs(240),
            must_fail: None,
            dom0_vcpus: 1,
        },
        Scenario {
            name: "blkback-linux-pv",
            about: "Linux dom0 serves a Linux PV domU's xen-blkfront a hot-plugged 32 MiB file with xen-blk's userspace backend: dd pattern and cmp, mke2fs, a hostile frontend in dom0 disconnected meanwhile, detach idle and during reads (ring pages and ports counted back to zero)",
            kind: Kind::UserspaceBlockBackend,
            timeout: Duration::from_secs(240),
            must_fail: None,
            dom0_vcpus: 1,
        },
        Scenario {
            name: "ctrl-domu-pv",
            about: "Linux dom0 lists, pauses, unpauses and destroys a PV domU through xen-ctrl (xl list the oracle), maps its console page and its grant table",
            kind: Kind::ControlPlane(GuestKind::Pv),
            timeout: Duration::from_secs(120),
            must_fail: None,
            dom0_vcpus: 1,
        },
        Scenario {
            name: "ctrl-domu-aarch64",
            about: "Linux dom0 on Xen arm64 lists, pauses, unpauses and destroys a domU through xen-ctrl (xl list the oracle), maps its console page and its grant table",
            kind: Kind::ControlPlane(GuestKind::Aarch64),
            timeout: Duration::from_secs(120),
            must_fail: None,
            dom0_vcpus: 1,
        },
        guest(
            "pv64",
            "freestanding x86_64 guest as a PV64 dom0",
            GuestKind::Pv,
        ),
        guest(
            "pvh",
            "freestanding x86_64 guest as a PVH dom0",
            GuestKind::Pvh,
        ),
        guest(
            "aarch64",
            "freestanding aarch64 guest as dom0",
            GuestKind::Aarch64,
        ),
        linux(
            "selftest-failing-case",
            "harness self-test: a failing case is reported (aarch64 dom0)",
            Arch::Aarch64,
            &["XENTEST_SELFTEST=fail xen-dom0-tests"],
            90,
            Some("selftest_deliberate_failure: FAILED"),
        ),
        linux(
            "selftest-panic",
            "harness self-test: a panicking payload is reported",
            Arch::Aarch64,
            &["XENTEST_SELFTEST=panic xen-dom0-tests"],
            90,
            Some("PANIC "),
        ),
        linux(
            "selftest-missing-case",
            "harness self-test: a case never reported is a failure",
            Arch::Aarch64,
            &["XENTEST_SELFTEST=skip xen-dom0-tests"],
            90,
            Some("capabilities: missing"),
        ),
        linux(
            "selftest-hang",
            "harness self-test: a hanging payload is killed and reported",
            Arch::Aarch64,
            &["XENTEST_SELFTEST=hang xen-dom0-tests"],
            25,
            Some("hang: QEMU killed"),
        ),
        Scenario {
            name: "run-own-dom0",
            about: "a program built outside the workspace runs in dom0 as `cargo xtask testbed run --dom0` runs it",
            kind: Kind::OwnCode(OwnCode::Dom0Program),
            timeout: Duration::from_secs(150),
            must_fail: None,
            dom0_vcpus: 1,
        },
        Scenario {
            name: "run-own-domu",
            about: "a PV kernel built outside the workspace runs as a domU as `cargo xtask testbed run --domu` runs it",
            kind: Kind::OwnCode(OwnCode::DomuKernel),
            timeout: Duration::from_secs(150),
            must_fail: None,
            dom0_vcpus: 1,
        },
        cross_domain(
            "selftest-domu-hang",
            "harness self-test: a domU that never reports is destroyed after a timeout and named",
            GuestKind::Aarch64,
            Some(exchange::SELFTEST_HANG),
            Some("domu_ready: FAILED domU xentest-aarch64 never wrote data/ready"),
        ),
        cross_domain(
            "selftest-domu-crash",
            "harness self-test: a crashing domU is reported through xl's on_crash",
            GuestKind::Aarch64,
            Some(exchange::SELFTEST_CRASH),
            Some("domu_ready: FAILED domU xentest-aarch64 crashed"),
        ),
        Scenario {
            kind: Kind::LinuxDom0 {
                arch: Arch::Aarch64,
                // xen-init-dom0 cannot be run: the step fails at once, by name.
                setup: Setup::BrokenToolstack("rm \"$(which xen-init-dom0)\""),
                commands: &[DOM0_TESTS],
            },
            ..linux(
                "selftest-toolstack",
                "harness self-test: a toolstack step that fails is reported by name",
                Arch::Aarch64,
                &[],
                90,
                Some("PANIC toolstack: xen-init-dom0: exit status"),
            )
        },
        linux(
            "selftest-xen-reboot",
            "harness self-test: dom0 rebooting Xen is a failure",
            Arch::Aarch64,
            &["reboot -f"],
            90,
            Some("Hardware Dom0 shutdown"),
        ),
    ];
    ALL
}

/// The scenarios that run on every release ([`RELEASES`]); the others run on the first only.
pub const ON_EVERY_RELEASE: &[&str] = &[
    "linux-dom0-x86_64",
    "linux-dom0-aarch64",
    "domu-pv",
    "domu-pvh",
    "domu-aarch64",
    "domu-evtchn-soak",
    "dom0-smp-stress",
    "vchan-dom0",
    "domu-faults",
    "domu-control-pv",
    "domu-control-pvh",
    "domu-control-aarch64",
    "blk-domu-pv",
    "blk-domu-pvh",
    "blk-domu-aarch64",
    "blkback-linux-pv",
    "ctrl-domu-pv",
    "ctrl-domu-aarch64",
    "pv64",
    "pvh",
    "aarch64",
];

/// The scenarios that run on the last release only: the Linux domU's PVH boot, so that the
/// Linux-domU cases run once per release (PV on the first), in one boot each.
pub const ON_LAST_RELEASE: &[&str] = &["linux-domu-pvh"];

impl Scenario {
    /// The releases it runs on.
    pub fn releases(&self) -> &'static [Release] {
        if ON_EVERY_RELEASE.contains(&self.name) {
            RELEASES
        } else if ON_LAST_RELEASE.contains(&self.name) {
            &RELEASES[RELEASES.len() - 1..]
        } else {
            &RELEASES[..1]
        }
    }
}

/// A scenario on one release: what the runner runs and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioRun {
    /// The scenario.
    pub scenario: Scenario,
    /// The release it boots.
    pub release: Release,
}

impl ScenarioRun {
    /// `<scenario>@<Xen major.minor>`, e.g. `pv64@4.20`: names the run's results and its log.
    pub fn name(&self) -> String {
        format!("{}@{}", self.scenario.name, self.release.xen)
    }
}

/// Every scenario on every release it runs on, in the order they run (a scenario's releases
/// next to each other).
pub fn runs() -> Vec<ScenarioRun> {
    scenarios()
        .iter()
        .flat_map(|scenario| {
            scenario.releases().iter().map(|release| ScenarioRun {
                scenario: *scenario,
                release: *release,
            })
        })
        .collect()
}

/// Which scenarios to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Names: `<scenario>@<release>` (one run) or `<scenario>` (on each of its releases); empty
    /// means all.
    pub names: Vec<String>,
    /// Only the harness self-tests.
    pub self_test: bool,
    /// Only the runs on this release.
    pub release: Option<Release>,
}

/// Counts of the final `N passed, N failed` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Passed tests.
    pub passed: usize,
    /// Failed tests.
    pub failed: usize,
}

/// What one scenario runs.
enum Work {
    /// A prepared QEMU run.
    Qemu(Box<Job>),
    /// The built code of [`Kind::OwnCode`].
    OwnCode(OwnCode, PathBuf),
}

/// A prepared QEMU run.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) timeout: Duration,
    pub(crate) expectation: Expectation,
    /// What the runner types into the serial line, when.
    pub(crate) input: Option<qemu::SerialInput>,
    /// Boot once more when dom0 dies before the payload printed anything: Linux with two
    /// vCPUs under QEMU's multi-threaded TCG crashed, rarely, while booting (an `int3` left by
    /// the kernel's own code patching), which says nothing of the code under test.
    pub(crate) boots_again: bool,
}

impl Job {
    pub(crate) fn run(self, testbed: &Testbed) -> Result<Outcome> {
        self.run_streaming(testbed, &mut |_| {})
    }

    /// [`Job::run`], handing each serial line to `on_line` while QEMU runs.
    pub(crate) fn run_streaming(
        mut self,
        testbed: &Testbed,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> Result<Outcome> {
        let logs = testbed.logs_dir();
        std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        let log_path = logs.join(format!("{}.log", self.name));
        let mut boots_left = if self.boots_again { 2 } else { 1 };
        let (run, log, domus) = loop {
            boots_left -= 1;
            let run = qemu::run_streaming(
                &mut self.command,
                &log_path,
                self.timeout,
                self.input.as_ref(),
                on_line,
            )?;
            let raw = std::fs::read(&log_path).map_err(|e| Error::io(&log_path, e))?;
            let (log, domus) = split_domains(&parse_log(&raw));
            match died_before_payload(&log) {
                Some(death) if boots_left > 0 => {
                    let kept = logs.join(format!("{}.boot-crash.log", self.name));
                    std::fs::rename(&log_path, &kept).map_err(|e| Error::io(&kept, e))?;
                    eprintln!(
                        "testbed: {}: dom0 died while booting, before its payload started \
                         (`{death}`; log kept in {}): booting once more",
                        self.name,
                        kept.display()
                    );
                }
                _ => break (run, log, domus),
            }
        };
        let mut verdict = judge(&self.expectation, &log, run.exit);
        verdict.add_domus(&self.expectation.domus, &domus);
        Ok(Outcome {
            log,
            domus,
            verdict,
            log_path,
            run,
        })
    }
}

/// Xen's line announcing dom0's death, if dom0 died before its payload printed any protocol
/// line (a case, a panic, an output line).
fn died_before_payload(log: &Log) -> Option<&str> {
    if !log.events.is_empty() {
        return None;
    }
    log.lines
        .iter()
        .find(|line| verdict::is_xen_death(line))
        .map(String::as_str)
}

/// Selects scenario runs by `options`, failing on an unknown name or a scenario that does not run
/// on the selected release.
pub fn select(options: &Options) -> Result<Vec<ScenarioRun>> {
    let on_release = |run: &ScenarioRun| options.release.is_none_or(|r| r == run.release);
    let all = runs();
    if options.names.is_empty() {
        return Ok(all
            .into_iter()
            .filter(|run| !options.self_test || run.scenario.is_self_test())
            .filter(on_release)
            .collect());
    }
    let mut selected = Vec::new();
    for name in &options.names {
        let matching: Vec<ScenarioRun> = all
            .iter()
            .filter(|run| run.name() == *name || run.scenario.name == name)
            .copied()
            .collect();
        if matching.is_empty() {
            return Err(Error::new(format!(
                "unknown scenario `{name}` (see `cargo xtask testbed --list`)"
            )));
        }
        let before = selected.len();
        selected.extend(matching.into_iter().filter(on_release));
        if selected.len() == before {
            let release = options.release.map_or("", |r| r.xen);
            return Err(Error::new(format!(
                "`{name}` does not run on release {release} (see `cargo xtask testbed --list`)"
            )));
        }
    }
    Ok(selected)
}

/// The cases `xen-dom0-tests` prints for each of its runs (`list`, `list store`, ...).
#[derive(Debug, Clone, Default)]
struct Dom0Cases {
    /// The default run's.
    default: Vec<String>,
    /// [`STORE_COMMAND`]'s.
    store: Vec<String>,
    /// [`STRESS_COMMAND`]'s.
    stress: Vec<String>,
    /// [`VCHAN_COMMAND`]'s.
    vchan: Vec<String>,
}

/// Builds, boots and judges `selected`, printing cargo-test style lines and a final
/// `N passed, N failed` line.
pub fn run_scenarios(testbed: &Testbed, selected: &[ScenarioRun]) -> Result<Summary> {
    let start = Instant::now();
    let linux_arches: BTreeSet<Arch> = selected
        .iter()
        .filter(|s| s.scenario.kind.is_linux())
        .map(|s| s.scenario.kind.arch())
        .collect();
    // One testbed per release, each with its artifacts per architecture.
    let needed: BTreeSet<(Release, Arch)> = selected
        .iter()
        .map(|s| (s.release, s.scenario.kind.arch()))
        .collect();
    let mut testbeds: Vec<Testbed> = Vec::new();
    let mut artifacts = Vec::new();
    for (release, arch) in &needed {
        if !testbeds.iter().any(|t| t.release() == release) {
            testbeds.push(testbed.clone().with_release(*release));
        }
        let testbed = testbeds.last().expect("pushed above");
        let fetched = testbed.fetch(*arch)?;
        eprintln!(
            "testbed: {} {arch}: {}",
            release.xen,
            fetched.versions.join(", ")
        );
        artifacts.push(fetched);
    }
    let testbed_of = |release: Release| {
        testbeds
            .iter()
            .find(|t| *t.release() == release)
            .expect("made above")
    };
    let artifacts_of = |release: Release, arch: Arch| {
        artifacts
            .iter()
            .find(|a| a.arch == arch && a.release == release)
            .expect("fetched above")
    };

    // The dom0 program, built one architecture at a time, so a broken build fails only that
    // architecture's scenarios.
    let dom0_builds: Vec<(Arch, Result<()>)> = linux_arches
        .iter()
        .map(|arch| (*arch, testbed.build_static(DOM0_TESTS, &[*arch])))
        .collect();
    let dom0_built = |arch: Arch| -> Result<()> {
        dom0_builds
            .iter()
            .find(|(a, _)| *a == arch)
            .map_or(Ok(()), |(_, built)| built.clone())
    };
    // The dom0 program's case lists, from the x86_64 build run on the host (`list` touches no Xen).
    let dom0_cases: Result<Dom0Cases> = if linux_arches.is_empty() {
        Ok(Dom0Cases::default())
    } else {
        dom0_built(Arch::X86_64)
            .and_then(|()| {
                if linux_arches.contains(&Arch::X86_64) {
                    Ok(())
                } else {
                    testbed.build_static(DOM0_TESTS, &[Arch::X86_64])
                }
            })
            .and_then(|()| {
                let list = |args: &[&str]| -> Result<Vec<String>> {
                    let out = command_output(
                        Command::new(testbed.static_binary(Arch::X86_64, DOM0_TESTS)).args(args),
                    )?;
                    Ok(String::from_utf8_lossy(&out)
                        .lines()
                        .map(str::to_string)
                        .collect())
                };
                Ok(Dom0Cases {
                    default: list(&["list"])?,
                    store: list(&["list", "store"])?,
                    stress: list(&["list", "stress"])?,
                    vchan: list(&["list", "vchan"])?,
                })
            })
    };
    // The libxenvchan peer, built for the first scenario that runs VCHAN_COMMAND.
    let mut vchan_peer: Option<Result<PathBuf>> = None;
    let mut guests = GuestBuilds::default();

    let mut jobs: Vec<(ScenarioRun, Result<Work>)> = Vec::new();
    for run in selected {
        let scenario = &run.scenario;
        let name = run.name();
        let (release, arch) = (run.release, scenario.kind.arch());
        let testbed = testbed_of(release);
        let qemu_job = match scenario.kind {
            Kind::LinuxDom0 {
                setup, commands, ..
            } => dom0_built(arch).and(dom0_cases.clone()).and_then(|cases| {
                // `xen-dom0-tests`, maybe behind environment variables, runs the listed cases.
                let runs_tests =
                    |c: &&&str| **c == DOM0_TESTS || c.ends_with(&format!(" {DOM0_TESTS}"));
                let mut expected: Vec<String> = if commands.iter().any(|c| runs_tests(&c)) {
                    cases.default
                } else {
                    Vec::new()
                };
                // The runner compares the log ring this case prints with the serial line.
                if expected.iter().any(|c| c == "console_log_snapshot") {
                    expected.push(XEN_LOG_CASE.into());
                }
                if commands.contains(&ORACLE_COMMAND) {
                    expected.push(ORACLE_CASE.into());
                }
                if commands.contains(&STORE_COMMAND) {
                    expected.extend(cases.store);
                }
                if commands.contains(&STRESS_COMMAND) {
                    expected.extend(cases.stress);
                }
                let mut binaries = Vec::new();
                if commands.contains(&VCHAN_COMMAND) {
                    expected.extend(cases.vchan);
                    let peer = vchan_peer
                        .get_or_insert_with(|| {
                            c_program::build(testbed, &c_program::LIBXENVCHAN_PEER)
                        })
                        .clone()?;
                    binaries.push((c_program::LIBXENVCHAN_PEER.name.to_string(), peer));
                }
                let dones = commands.iter().filter(runs_tests).count()
                    + usize::from(commands.contains(&ORACLE_COMMAND))
                    + usize::from(commands.contains(&STORE_COMMAND))
                    + usize::from(commands.contains(&STRESS_COMMAND))
                    + usize::from(commands.contains(&VCHAN_COMMAND));
                testbed.dom0_job(
                    artifacts_of(release, arch),
                    &Dom0Run {
                        name: name.clone(),
                        arch,
                        binaries,
                        files: Vec::new(),
                        preamble: setup.preamble(),
                        commands: commands.iter().map(|c| c.to_string()).collect(),
                        expected_cases: expected,
                        expected_dones: dones,
                        timeout: scenario.timeout,
                        vcpus: scenario.dom0_vcpus,
                        dom0_memory_mib: None,
                        domus: Vec::new(),
                    },
                )
            }),
            Kind::Guest(kind) => guests
                .image(testbed, kind, Flavour::Dom0)
                .and_then(|image| {
                    let guest = match kind {
                        GuestKind::Pv => qemu::Guest::Pv(&image),
                        GuestKind::Pvh => qemu::Guest::Pvh(&image),
                        GuestKind::Aarch64 => qemu::Guest::Aarch64Image(&image),
                    };
                    Ok(Job {
                        name: name.clone(),
                        command: qemu::command(arch, &artifacts_of(release, arch).xen, &guest)?,
                        timeout: scenario.timeout,
                        expectation: Expectation {
                            arch,
                            cases: guest_cases(kind),
                            dones: 1,
                            domus: Vec::new(),
                        },
                        // The guest's `console_input_read` reads this line.
                        input: Some(qemu::SerialInput {
                            after: format!("OUT {INPUT_PROMPT}"),
                            text: format!("{INPUT_LINE}\r").into_bytes(),
                        }),
                        boots_again: false,
                    })
                }),
            Kind::CrossDomain(cross) => dom0_built(arch)
                .and_then(|()| guests.image(testbed, cross.domu, Flavour::Domu))
                .and_then(|kernel| {
                    let mut run = cross_domain_run(&name, &cross, &kernel, scenario.timeout);
                    run.vcpus = scenario.dom0_vcpus;
                    testbed.dom0_job(artifacts_of(release, arch), &run)
                }),
            Kind::LinuxDomu(mode) => dom0_built(arch).and_then(|()| {
                let run = linux_domu_run(
                    testbed,
                    artifacts_of(release, arch),
                    &name,
                    mode,
                    scenario.timeout,
                )?;
                testbed.dom0_job(artifacts_of(release, arch), &run)
            }),
            Kind::ControlPlane(domu) => dom0_built(arch)
                .and_then(|()| guests.image(testbed, domu, Flavour::Domu))
                .and_then(|kernel| {
                    testbed.dom0_job(
                        artifacts_of(release, arch),
                        &control_plane_run(&name, domu, &kernel, scenario.timeout),
                    )
                }),
            Kind::UserspaceBlockBackend => dom0_built(arch)
                .and_then(|()| {
                    crate::blkback::dom0_run(
                        testbed,
                        artifacts_of(release, arch),
                        &name,
                        scenario.timeout,
                    )
                })
                .and_then(|run| testbed.dom0_job(artifacts_of(release, arch), &run)),
            Kind::OwnCode(code) => {
                let built = dom0_built(arch).and_then(|()| own_code::build(testbed, code));
                jobs.push((*run, built.map(|binary| Work::OwnCode(code, binary))));
                continue;
            }
        };
        jobs.push((*run, qemu_job.map(|job| Work::Qemu(Box::new(job)))));
    }

    let summary = Mutex::new(Summary::default());
    let queue = Mutex::new(jobs.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue lock").next();
                    let Some((run, job)) = next else { break };
                    let testbed = testbed_of(run.release);
                    let outcome = job.and_then(|work| match work {
                        Work::Qemu(job) => job.run(testbed),
                        Work::OwnCode(code, binary) => own_code::run(testbed, code, &binary),
                    });
                    let (passed, failed) = report(&run, &outcome);
                    let mut summary = summary.lock().expect("summary lock");
                    summary.passed += passed;
                    summary.failed += failed;
                }
            });
        }
    });
    let summary = summary.into_inner().expect("summary lock");
    println!();
    println!(
        "testbed: {} scenario(s) in {:.1} s; logs in {}",
        selected.len(),
        start.elapsed().as_secs_f64(),
        testbed.logs_dir().display()
    );
    println!("{} passed, {} failed", summary.passed, summary.failed);
    Ok(summary)
}

/// The dom0 run of a cross-domain scenario: the toolstack, the domU's kernel at
/// `/lib/xentest/<domU name>`, and `xen-dom0-tests domu` creating it; dom0's and the domU's cases
/// from [`exchange`].
pub fn cross_domain_run(
    name: &str,
    cross: &CrossDomain,
    kernel: &std::path::Path,
    timeout: Duration,
) -> Dom0Run {
    let domu = cross.domu_name();
    let (xl_type, memory) = xl_type_and_memory(cross.domu);
    let path = format!("/lib/xentest/{domu}");
    let verb = match cross.run {
        DomuRun::Exchange => "domu",
        DomuRun::Soak { .. } => "domu-soak",
        DomuRun::Faults => "domu-faults",
        DomuRun::Control { suspend: true } => "domu-control",
        DomuRun::Control { suspend: false } => "domu-control-no-suspend",
        DomuRun::Block => "blk-domu",
    };
    let mut command = format!(
        "{DOM0_TESTS} {verb} --name {domu} --type {xl_type} --memory {memory} --kernel {path}"
    );
    if let Some(selftest) = cross.selftest {
        command.push_str(&format!(" --selftest {selftest}"));
    }
    let (dom0_cases, domu_cases) = match cross.run {
        DomuRun::Soak { trips, cycles } => {
            command.push_str(&format!(" --trips {trips} --cycles {cycles}"));
            (
                cases(exchange::SOAK_DOM0_CASES, &[]),
                cases(exchange::SOAK_DOMU_CASES, &[]),
            )
        }
        DomuRun::Exchange => (
            cases(exchange::DOM0_CASES, exchange::store::DOM0_CASES),
            cases(exchange::DOMU_CASES, exchange::store::DOMU_CASES),
        ),
        DomuRun::Faults => (cases(exchange::FAULTS_DOM0_CASES, &[]), Vec::new()),
        // dom0 judges from xl's side; the domU's console (two boots) is forwarded, not judged.
        DomuRun::Control { suspend } => {
            // x86 domUs suspend; Xen cannot save an Arm domain, and xl's save fails.
            let suspend = match cross.domu {
                GuestKind::Pv | GuestKind::Pvh if suspend => exchange::suspend::DOM0_CASES,
                _ => exchange::suspend::REFUSED_DOM0_CASES,
            };
            (cases(exchange::CONTROL_DOM0_CASES, suspend), Vec::new())
        }
        DomuRun::Block => (
            cases(exchange::blk::DOM0_CASES, &[]),
            cases(exchange::blk::DOMU_CASES, &[]),
        ),
    };
    let setup = match cross.run {
        DomuRun::Block => Setup::BlockBackend,
        DomuRun::Exchange | DomuRun::Soak { .. } | DomuRun::Faults | DomuRun::Control { .. } => {
            Setup::Toolstack
        }
    };
    // The fault table destroys its domU midway: its console is not forwarded, nor judged.
    let domus = if domu_cases.is_empty() {
        Vec::new()
    } else {
        vec![DomuExpectation {
            name: domu,
            label: "domu".into(),
            cases: domu_cases,
        }]
    };
    Dom0Run {
        name: name.into(),
        arch: cross.domu.arch(),
        binaries: Vec::new(),
        files: vec![(path, kernel.to_path_buf())],
        preamble: setup.preamble(),
        commands: vec![command],
        expected_cases: dom0_cases,
        expected_dones: 1,
        timeout,
        vcpus: 1,
        // `xl save` writes the domU's memory to dom0's /tmp (its RAM).
        dom0_memory_mib: (cross.run == DomuRun::Control { suspend: true }
            && cross.domu.arch() == Arch::X86_64)
            .then_some(384),
        domus,
    }
}

/// The domU of a [`Kind::LinuxDomu`] scenario (xl's name).
pub fn linux_domu_name(mode: linux_domu::Mode) -> String {
    format!("linux-domu-{}", mode.xl_type())
}

/// The dom0 run of a [`Kind::LinuxDomu`] scenario: the toolstack, the Linux domU's kernel and
/// an initramfs whose `/init` runs `xen-dom0-tests linux-domu` (then announces its poweroff;
/// the libxenvchan peer, [`c_program::LIBXENVCHAN_PEER`], is there for it to run),
/// and `xen-dom0-tests linux-domu-peer` creating it; both sides' cases from
/// [`exchange::linux`]. `xen-dom0-tests` must be built for x86_64.
pub fn linux_domu_run(
    testbed: &Testbed,
    artifacts: &crate::artifacts::Artifacts,
    name: &str,
    mode: linux_domu::Mode,
    timeout: Duration,
) -> Result<Dom0Run> {
    let domu = linux_domu_name(mode);
    let vchan_peer = c_program::build(testbed, &c_program::LIBXENVCHAN_PEER)?;
    let built = linux_domu::build_with_programs(
        artifacts,
        &testbed.work_dir(),
        name,
        &[
            (
                DOM0_TESTS.into(),
                testbed.static_binary(Arch::X86_64, DOM0_TESTS),
            ),
            (c_program::LIBXENVCHAN_PEER.name.into(), vchan_peer),
        ],
        &format!(
            "{DOM0_TESTS} linux-domu\necho '{}SHUTDOWN poweroff'",
            xen_testbed_protocol::MARKER
        ),
    )?;
    Ok(Dom0Run {
        name: name.into(),
        arch: Arch::X86_64,
        binaries: Vec::new(),
        files: built.files_in_dom0(&domu),
        preamble: Setup::Toolstack.preamble(),
        commands: vec![format!(
            "{DOM0_TESTS} linux-domu-peer {}",
            linux_domu::domu_options(&domu, mode)
        )],
        expected_cases: cases(exchange::linux::DOM0_CASES, &[]),
        expected_dones: 1,
        timeout,
        vcpus: 1,
        dom0_memory_mib: Some(linux_domu::DOM0_MEMORY_MIB),
        domus: vec![DomuExpectation {
            name: domu,
            label: "domu".into(),
            cases: cases(exchange::linux::DOMU_CASES, &[]),
        }],
    })
}

/// The cases of `xen-dom0-tests ctrl-domu` (tests/dom0/src/ctrl.rs, `DOMU_CASES`), in order.
pub const CTRL_DOMU_CASES: &[&str] = &[
    "ctrl_domu_created",
    "ctrl_domu_listed_as_xl_lists_it",
    "ctrl_domu_pause_stops_it",
    "ctrl_domu_unpause_resumes_it",
    "foreign_domu_console_page",
    "foreign_domu_grant_table_resource",
    "foreign_domu_page_round_trip",
    "ctrl_domu_destroy_removes_it",
];

/// The dom0 run of a [`Kind::ControlPlane`] scenario: the toolstack, the domU's kernel at
/// `/lib/xentest/xentest-ctrl`, and `xen-dom0-tests ctrl-domu` creating and steering it.
pub fn control_plane_run(
    name: &str,
    domu: GuestKind,
    kernel: &std::path::Path,
    timeout: Duration,
) -> Dom0Run {
    let (xl_type, memory) = xl_type_and_memory(domu);
    let path = "/lib/xentest/xentest-ctrl".to_string();
    Dom0Run {
        name: name.into(),
        arch: domu.arch(),
        binaries: Vec::new(),
        files: vec![(path.clone(), kernel.to_path_buf())],
        preamble: Setup::Toolstack.preamble(),
        commands: vec![format!(
            "{DOM0_TESTS} ctrl-domu --name xentest-ctrl --type {xl_type} --memory {memory} --kernel {path}"
        )],
        expected_cases: CTRL_DOMU_CASES.iter().map(|c| c.to_string()).collect(),
        expected_dones: 1,
        timeout,
        vcpus: 1,
        dom0_memory_mib: None,
        domus: Vec::new(),
    }
}

/// The expected case names: those of a run (the exchange or the soak), then those of its
/// xenstore steps.
fn cases(exchange: &[&str], store: &[&str]) -> Vec<String> {
    exchange
        .iter()
        .chain(store)
        .map(|c| c.to_string())
        .collect()
}

/// Which flavour of a freestanding guest: the hardware domain, or a domU created by the toolstack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Booted by Xen as dom0.
    Dom0,
    /// Created by `xl create` (`--features domu`).
    Domu,
}

/// Freestanding guest images, built on first use.
#[derive(Default)]
struct GuestBuilds {
    built: Vec<((GuestKind, Flavour, Release), Result<PathBuf>)>,
}

impl GuestBuilds {
    fn image(&mut self, testbed: &Testbed, kind: GuestKind, flavour: Flavour) -> Result<PathBuf> {
        let key = (kind, flavour, *testbed.release());
        if let Some((_, image)) = self.built.iter().find(|(k, _)| *k == key) {
            return image.clone();
        }
        let image = build_guest(testbed, kind, flavour);
        self.built.push((key, image.clone()));
        image
    }
}

/// The variable a freestanding guest is built with: the Xen release (`major.minor`) it expects.
pub const GUEST_XEN_VERSION_VARIABLE: &str = "XENTEST_XEN_VERSION";

/// Builds the freestanding guest of `kind` and `flavour` for the testbed's release (which it expects
/// to run on: [`GUEST_XEN_VERSION_VARIABLE`]) and returns the image to boot.
///
/// The first release's guests build into the target directory, the others' into
/// `<target>/testbed/build-<xen>`, so switching releases does not rebuild the guest each time.
pub fn build_guest(testbed: &Testbed, kind: GuestKind, flavour: Flavour) -> Result<PathBuf> {
    if !testbed.workspace.join("tests/guest/Cargo.toml").exists() {
        return Err(Error::new(format!(
            "payload crate missing: tests/guest (package {GUEST}) does not exist yet"
        )));
    }
    let (target, mut features) = match kind {
        GuestKind::Pv => ("x86_64-unknown-none", vec!["pv"]),
        GuestKind::Pvh => ("x86_64-unknown-none", vec!["pvh"]),
        GuestKind::Aarch64 => ("aarch64-unknown-none", vec![]),
    };
    if flavour == Flavour::Domu {
        features.push("domu");
    }
    crate::check_rust_target(target)?;
    let release = testbed.release();
    let target_dir = if *release == RELEASES[0] {
        testbed.target_dir.clone()
    } else {
        testbed
            .target_dir
            .join(format!("testbed/build-{}", release.xen))
    };
    let mut cargo = testbed.cargo();
    cargo
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(GUEST_XEN_VERSION_VARIABLE, release.xen);
    cargo.args(["build", "--release", "-p", GUEST, "--target", target]);
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    testbed.run_cargo(cargo)?;
    let built = target_dir.join(target).join("release").join(GUEST);
    let work = testbed.work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    // Copied aside: the next flavour's build overwrites the binary.
    let image = work.join(format!("{GUEST}-{kind:?}-{flavour:?}@{}", release.xen).to_lowercase());
    match kind {
        GuestKind::Pv | GuestKind::Pvh => {
            std::fs::copy(&built, &image).map_err(|e| Error::io(&built, e))?;
        }
        GuestKind::Aarch64 => {
            command_output(
                Command::new(objcopy()?)
                    .args(["-O", "binary"])
                    .arg(&built)
                    .arg(&image),
            )?;
        }
    }
    Ok(image)
}

/// `llvm-objcopy` from the `llvm-tools` rustup component, or from `PATH`.
fn objcopy() -> Result<PathBuf> {
    let sysroot = command_output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let rustlib = PathBuf::from(String::from_utf8_lossy(&sysroot).trim()).join("lib/rustlib");
    let from_rustup = std::fs::read_dir(&rustlib)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("bin/llvm-objcopy"))
        .find(|path| path.is_file());
    from_rustup
        .or_else(|| crate::which("llvm-objcopy"))
        .ok_or_else(|| Error::new("llvm-objcopy is missing: run `rustup component add llvm-tools`"))
}

/// Prints one scenario's lines; returns its (passed, failed) counts.
fn report(run: &ScenarioRun, outcome: &Result<Outcome>) -> (usize, usize) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let scenario = &run.scenario;
    let name = run.name();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            let _ = writeln!(out, "test {name} ... FAILED: {error}");
            return (0, 1);
        }
    };
    let verdict = &outcome.verdict;
    let rss = outcome
        .run
        .peak_rss_kib
        .map(|k| format!(", peak RSS {} MiB", k / 1024))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{name}: {} [QEMU {:.1} s{rss}]",
        verdict.banner.as_deref().unwrap_or("no Xen banner"),
        outcome.run.wall.as_secs_f64()
    );
    let (passed, failed, show_tail) = if let Some(wanted) = scenario.must_fail {
        let failures = verdict.failures();
        match failures.iter().find(|f| f.contains(wanted)) {
            Some(found) if !verdict.passed() => {
                let _ = writeln!(out, "test {name}::reported_as_failure ... ok ({found})");
                (1, 0, false)
            }
            _ => {
                let _ = writeln!(
                    out,
                    "test {name}::reported_as_failure ... FAILED: expected a failure containing {wanted:?}, got {failures:?}"
                );
                (0, 1, true)
            }
        }
    } else {
        let (mut passed, mut failed) = (0, 0);
        for (case, result) in &verdict.cases {
            match result {
                CaseResult::Passed => {
                    passed += 1;
                    let _ = writeln!(out, "test {name}::{case} ... ok");
                }
                CaseResult::Failed(message) => {
                    failed += 1;
                    let _ = writeln!(out, "test {name}::{case} ... FAILED: {message}");
                }
                CaseResult::Missing => {
                    failed += 1;
                    let _ = writeln!(out, "test {name}::{case} ... FAILED: never reported");
                }
            }
        }
        for problem in &verdict.problems {
            failed += 1;
            let _ = writeln!(out, "test {name} ... FAILED: {problem}");
        }
        (passed, failed, failed > 0)
    };
    if show_tail {
        let lines = &outcome.log.lines;
        let _ = writeln!(
            out,
            "---- {name}: last {TAIL_LINES} lines of {} ----",
            outcome.log_path.display()
        );
        for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "----");
    }
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_death_before_the_payload_spoke_boots_again() {
        let crashed = parse_log(
            b"(XEN) Xen version 4.20\n[    1.2] int3: 0000 [#1] SMP\n(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.\n",
        );
        assert_eq!(
            died_before_payload(&crashed),
            Some("(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.")
        );
        let after_payload = parse_log(
            b"XENTEST OUT stress: 2 vCPUs\n(XEN) Hardware Dom0 crashed: rebooting machine in 5 seconds.\n",
        );
        assert_eq!(died_before_payload(&after_payload), None);
        let alive = parse_log(b"(XEN) Xen version 4.20\nLinux version 6.12\n");
        assert_eq!(died_before_payload(&alive), None);
    }

    fn names(options: &Options) -> Vec<String> {
        select(options)
            .expect("selected")
            .iter()
            .map(ScenarioRun::name)
            .collect()
    }

    #[test]
    fn a_bare_name_selects_each_release_and_a_full_name_one() {
        let bare = Options {
            names: vec!["pv64".into()],
            ..Options::default()
        };
        assert_eq!(names(&bare), ["pv64@4.17", "pv64@4.20"]);
        let full = Options {
            names: vec!["pv64@4.20".into(), "selftest-panic".into()],
            ..Options::default()
        };
        assert_eq!(names(&full), ["pv64@4.20", "selftest-panic@4.17"]);
        let one_release = Options {
            release: Some(crate::release::DEBIAN_13),
            ..bare
        };
        assert_eq!(names(&one_release), ["pv64@4.20"]);
    }

    #[test]
    fn every_release_runs_the_scenarios_it_must_and_names_are_unique() {
        let all = names(&Options::default());
        for scenario in ON_EVERY_RELEASE {
            assert!(
                scenarios().iter().any(|s| s.name == *scenario),
                "{scenario}"
            );
            for release in RELEASES {
                let name = format!("{scenario}@{}", release.xen);
                assert!(all.contains(&name), "{name}");
            }
        }
        let unique: BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn each_release_runs_the_linux_domu_cases_once() {
        let all = names(&Options::default());
        for release in RELEASES {
            let linux_domus = all
                .iter()
                .filter(|n| {
                    n.starts_with("linux-domu-") && n.ends_with(&format!("@{}", release.xen))
                })
                .count();
            assert_eq!(linux_domus, 1, "{}", release.xen);
        }
    }

    #[test]
    fn unknown_names_and_releases_a_scenario_skips_are_errors() {
        let unknown = Options {
            names: vec!["pv64@4.99".into()],
            ..Options::default()
        };
        assert!(select(&unknown).is_err());
        let self_test_on_4_20 = Options {
            names: vec!["selftest-panic".into()],
            release: Some(crate::release::DEBIAN_13),
            ..Options::default()
        };
        let error = select(&self_test_on_4_20).unwrap_err().to_string();
        assert!(error.contains("does not run on release 4.20"), "{error}");
    }

    #[test]
    fn every_guest_run_must_end_with_a_clean_shutdown() {
        for kind in [GuestKind::Pv, GuestKind::Pvh, GuestKind::Aarch64] {
            let cases = guest_cases(kind);
            assert_eq!(cases.last().map(String::as_str), Some(CLEAN_SHUTDOWN));
            assert_eq!(cases.iter().filter(|c| *c == CLEAN_SHUTDOWN).count(), 1);
            assert!(cases.len() > GUEST_CASES.len(), "{kind:?}");
        }
    }
}
