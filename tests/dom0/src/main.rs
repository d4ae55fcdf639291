//! The dom0 test program of the real-Xen testbed, run by the initramfs' `/init` in a Linux dom0.
//!
//! - `xen-dom0-tests` runs every case against `/dev/xen/privcmd` and reports them on stdout (the
//!   Xen console) in the `XENTEST` protocol; it exits non-zero if a case failed.
//! - `xen-dom0-tests list` prints the case names, one a line, without touching Xen: the runner's
//!   list of expected cases.
//! - `xen-dom0-tests store` runs the xenstore client's cases against Debian's `xenstored`, with the
//!   `xenstore-*` tools as the oracle (needs the toolstack).
//! - `xen-dom0-tests demo` shows what the project's crates see of this Xen (`cargo xtask demo`).
//! - `xen-dom0-tests xl-info` compares every `xen_version` field with Debian's `xl info` (needs the
//!   toolstack).
//! - `xen-dom0-tests domu --name N --type pv|pvh --memory MiB --kernel PATH [--selftest S]` creates
//!   a domU with `xl` and runs the dom0 half of the cross-domain exchange with it
//!   (`xen_testbed_protocol::exchange`), forwarding its console.
//! - `xen-dom0-tests run-domu ...` (same options, and `--timeout SECONDS`) creates a domU and
//!   forwards its console until it is gone; exits 0 only after a poweroff.
//! - `xen-dom0-tests dmesg` prints Xen's log as `xl dmesg` does; `xen-dom0-tests console-bench
//!   <log rounds> <ring rounds> <bytes> <domU options>` times it against `xl dmesg` and a domU's console ring
//!   (`cargo xtask bench console`).
//! - `xen-dom0-tests linux-domu-peer <domu options>` creates a Linux domU (`--ramdisk`,
//!   `--cmdline`, `--cpuid`) whose `/init` runs `xen-dom0-tests linux-domu`: the two exercise
//!   xen-store, xen-evtchn, xen-grant's gntalloc and privcmd in the domU against dom0
//!   (`linux_domu`).
//! - `xen-dom0-tests domu-control <domu options>` saves and restores (`xl save -c`, `xl save`,
//!   `xl restore`), reboots (`xl reboot`) and shuts down (`xl shutdown`) a domU it creates,
//!   which answers through `xen-guest`'s control module; `domu-control-no-suspend` tells the
//!   domU not to advertise `feature-suspend`, and `xl save` must fail;
//! - `xen-dom0-tests domu-soak --trips N --cycles M <domu options>` runs the event-channel soak
//!   with a domU it creates (`cargo xtask bench evtchn --domu-soak`).
//! - `xen-dom0-tests stress [--rounds N] [--cycles M] [--samples S] [--store-rounds R]`
//!   stresses xen-evtchn and xen-store on a multi-threaded runtime and prints how their cost
//!   grows (`stress`; needs the toolstack; `list stress` prints its cases).
//! - `xen-dom0-tests domu-faults <domu options>` creates a domU and runs the fault table with it
//!   (`faults`): the domU destroyed under dom0's port, mapping and watch; the evtchn ring
//!   overflowed; xenstored killed and restarted (last: the daemon's state is lost).
//! - `xen-dom0-tests blk-domu <domu options>` serves a domU it creates a disk through Linux's
//!   blkback and checks what the domU's frontend did with it (`blk`; needs the block backend's
//!   modules loaded).
//! - `xen-dom0-tests blkback [--bench ROUNDS] <Linux domU options>` serves a Linux domU it
//!   creates a hot-plugged disk with xen-blk's userspace backend and checks what its
//!   xen-blkfront did with it, detaching it idle and during reads (`blkback`; `--bench` also
//!   times it against Linux's blkback: `cargo xtask bench blkback`).
//! - `xen-dom0-tests grant-notify-child <domid> <gref> <port>` maps a domU's page with an unmap
//!   notification and exits without unmapping (a child process of `domu`'s grant phase).
//! - `xen-dom0-tests vchan [bench]` runs xen-vchan against Debian's libxenvchan (`vchan`; needs
//!   the toolstack and `/bin/libxenvchan-peer`; `list vchan` prints its cases; `vchan-child` is
//!   the server process one case kills).
//! - `xen-dom0-tests exit <code>` ends the QEMU run with `code` (x86_64: `isa-debug-exit`; aarch64:
//!   semihosting `SYS_EXIT`).
//!
//! `XENTEST_SELFTEST=fail|panic|skip|hang` breaks the run on purpose, for the harness's self-tests.

mod blk;
mod blk_bench;
mod blkback;
mod console;
mod console_domu;
mod ctrl;
mod devices;
mod domu;
mod domu_control;
mod domu_soak;
mod evtchn;
mod evtchn_bench;
mod exit;
mod faults;
mod foreign;
mod grant;
mod linux_domu;
mod oracle;
mod privcmd;
mod store;
mod stress;
mod vchan;
mod version;

use std::process::ExitCode;

use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::{Reporter, Stdout, report_panic};

/// A test case: its name and its body, run against an open privcmd backend.
pub(crate) type Case = (&'static str, fn(&Privcmd) -> Result<(), String>);

/// Every case, in the order they run.
fn cases() -> impl Iterator<Item = &'static Case> {
    version::CASES
        .iter()
        .chain(privcmd::CASES)
        .chain(console::CASES)
        .chain(grant::CASES)
        .chain(evtchn::CASES)
        .chain(ctrl::CASES)
        .chain(foreign::CASES)
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| report_panic(&mut Stdout, info)));
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => run(),
        ["store"] => store::run(),
        ["list", "store"] => {
            for (name, _) in store::CASES {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        ["stress", ..] => stress::run(&args[1..]),
        ["list", "stress"] => {
            for name in stress::CASES {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        ["domu-faults", ..] => faults::run(&args[1..]),
        ["vchan", ..] => vchan::run(&args[1..]),
        ["vchan-child", ..] => vchan::child(&args[1..]),
        ["list", "vchan"] => {
            for (name, _) in vchan::CASES {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        ["blk-domu", ..] => blk::run(&args[1..]),
        ["blk-bench", ..] => blk_bench::run(&args[1..]),
        ["blkback", ..] => blkback::run(&args[1..]),
        ["list"] => {
            for (name, _) in cases() {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        ["demo"] => version::demo(Reporter::new(Stdout)),
        ["evtchn-bench", rest @ ..] => evtchn_bench::bench(rest),
        ["evtchn-bench-one", rest @ ..] => evtchn_bench::bench_one(rest),
        ["evtchn-soak", rest @ ..] => evtchn_bench::soak(rest),
        ["xl-info"] => oracle::run(),
        ["dmesg"] => console_domu::dmesg(),
        ["console-bench", ..] => console_domu::bench(&args[1..]),
        ["domu", ..] => domu::exchange(&args[1..]),
        ["run-domu", ..] => domu::run_user_domu(&args[1..]),
        ["linux-domu"] => linux_domu::domu(),
        ["linux-domu-peer", ..] => linux_domu::dom0(&args[1..]),
        ["domu-soak", ..] => domu_soak::soak(&args[1..]),
        ["domu-control", ..] => domu_control::run(&args[1..], true),
        ["domu-control-no-suspend", ..] => domu_control::run(&args[1..], false),
        ["ctrl-domu", ..] => ctrl::domu(&args[1..]),
        ["grant-notify-child", rest @ ..] => domu::grant_notify_child(rest),
        ["exit", code] => match code.parse::<u8>() {
            Ok(code) => {
                let error = exit::exit_qemu(code);
                eprintln!("xen-dom0-tests: cannot exit QEMU: {error}");
                ExitCode::FAILURE
            }
            Err(_) => usage(),
        },
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: xen-dom0-tests [list | store | demo | xl-info | dmesg | domu OPTIONS | run-domu OPTIONS | console-bench ROUNDS BYTES OPTIONS | exit <code 0-255>]"
    );
    ExitCode::from(2)
}

fn run() -> ExitCode {
    let mut reporter = Reporter::new(Stdout);
    let self_test = std::env::var("XENTEST_SELFTEST").unwrap_or_default();
    let privcmd = Privcmd::open().map_err(|e| format!("cannot open privcmd: {e}"));
    for (index, (name, case)) in cases().enumerate() {
        if self_test == "skip" && *name == "capabilities" {
            continue;
        }
        let result = match &privcmd {
            Ok(privcmd) => case(privcmd),
            Err(error) => Err(error.clone()),
        };
        reporter.case(name, result);
        if index == 0 {
            match self_test.as_str() {
                "panic" => panic!("deliberate panic (XENTEST_SELFTEST=panic)"),
                "hang" => loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                },
                "fail" => reporter.case(
                    "selftest_deliberate_failure",
                    Err("deliberate failure (XENTEST_SELFTEST=fail)"),
                ),
                _ => {}
            }
        }
    }
    let summary = reporter.done();
    ExitCode::from(summary.exit_code())
}

/// Runs a toolstack program and returns its stdout, or an error naming it with its stderr.
fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
