//! `cargo xtask bench ctrl`: xen-ctrl and privcmd's foreign mappings against libxenctrl and
//! libxenforeignmemory, timed in a Linux dom0 on real Xen (x86_64, Xen 4.17, under QEMU), in one
//! boot.
//!
//! Builds `tests/ctrl-bench` (the Rust driver, which also times this project's side) and its C
//! program (linked statically from Debian's `libxen-dev`), boots the testbed's Linux dom0 once,
//! runs interleaved rounds there, and prints the medians and ratios, one
//! `bench ctrl <measure> ours_ns=… libxenctrl_ns=… ratio_libxenctrl=…` line per measure.

use std::time::Duration;

use xen_testbed::initramfs::Preamble;
use xen_testbed::scenario::{self, Flavour, GuestKind};

use crate::bench::{Bench, CProgram, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench ctrl [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) and times, through xen-ctrl / privcmd and through
libxenctrl / libxenforeignmemory: getdomaininfolist of every domain with 1, 2 and 8 domains
(paused PV domUs), map + unmap of 1, 64 and 1024 pages (dom0's shared info frame, as
DOMID_SELF), and MMAP_RESOURCE map + unmap of a domU's grant table frame. N rounds (default 7)
of N iterations (default 2000; map_64 runs N/8, map_1024 N/64), median per iteration.";

/// The measures, in the order of the table, and what each is.
const MEASURES: [(&str, &str); 7] = [
    ("list_1", "getdomaininfolist of every domain: dom0 alone"),
    ("list_2", "getdomaininfolist of every domain: 2"),
    ("list_8", "getdomaininfolist of every domain: 8"),
    ("map_1", "MMAPBATCH_V2 map + munmap of 1 page"),
    ("map_64", "MMAPBATCH_V2 map + munmap of 64 pages"),
    ("map_1024", "MMAPBATCH_V2 map + munmap of 1024 pages"),
    (
        "resource_1",
        "MMAP_RESOURCE map + munmap of a grant table frame",
    ),
];

pub(crate) fn run(options: &[String]) -> crate::Result {
    let (rounds, iterations) = crate::bench::options(options, (7, 2000), USAGE, &mut [])?;
    let testbed = crate::testbed::testbed();
    let kernel =
        scenario::build_guest(&testbed, GuestKind::Pv, Flavour::Domu).map_err(|e| e.to_string())?;
    let path = "/lib/xentest/ctrl-bench-domu".to_string();
    Bench {
        name: "ctrl",
        driver: ("xen-ctrl-bench", "ctrl-bench"),
        peer: Some(CProgram {
            source: "tests/ctrl-bench/libxenctrl_bench.c",
            header: "xenctrl.h",
            name: "libxenctrl-bench",
            link: &[
                "-lxenctrl",
                "-lxenforeignmemory",
                "-lxencall",
                "-lxengnttab",
                "-lxenevtchn",
                "-lxendevicemodel",
                "-lxentoolcore",
                "-lxentoollog",
            ],
        }),
        preamble: Preamble::Toolstack { fault: None },
        commands: vec![format!(
            "/bin/libxenctrl-bench {rounds} {iterations} {path}"
        )],
        cases: &["bench_ctrl"],
        timeout: Duration::from_secs(240 + rounds * iterations / 10),
        files: vec![(path, kernel)],
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run(
        &format!(
            "ctrl benchmark: {rounds} rounds x {iterations} iterations per implementation and measure"
        ),
        "; software-emulated, on a shared machine",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// Parses `bench-run impl=<impl> measure=<measure> iterations=<n> ns=<total>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<f64>> {
    Samples::parse(lines, "measure", |run| run.per_iteration("ns"))
}

/// The table, the target and the machine-readable lines.
fn report(samples: &Samples<f64>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let _ = writeln!(
        report.table,
        "{:<10} {:>12} {:>16} {:>10}",
        "measure", "ours ns", "libxenctrl ns", "ours/libx"
    );
    for (measure, about) in MEASURES {
        let ours = samples.median("ours", measure, |&ns| ns)?;
        // One C program times both libraries; the machine lines name the one measured.
        let libx = samples.median("libxenctrl", measure, |&ns| ns)?;
        let peer = if measure.starts_with("list") {
            "libxenctrl"
        } else {
            "libxenforeignmemory"
        };
        let ratio = ours / libx;
        let _ = writeln!(
            report.table,
            "{measure:<10} {ours:>12.0} {libx:>16.0} {ratio:>10.3}   ({about})"
        );
        let _ = writeln!(
            report.machine,
            "bench ctrl {measure} ours_ns={ours:.0} {peer}_ns={libx:.0} ratio_{peer}={ratio:.3}"
        );
        if ratio > 1.0 {
            report
                .missed
                .push(format!("{measure}: ours/{peer} {ratio:.3} > 1.0"));
        }
    }
    Ok(report.finish(
        "target",
        ": ours <= 1.0x libxenctrl and libxenforeignmemory on every measure",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_machine_lines() {
        let mut lines = Vec::new();
        for (ours, libx) in [(100, 200), (300, 200), (110, 220)] {
            for (measure, _) in MEASURES {
                lines.push(format!(
                    "bench-run impl=ours measure={measure} iterations=10 ns={}",
                    ours * 10
                ));
                lines.push(format!(
                    "bench-run impl=libxenctrl measure={measure} iterations=10 ns={}",
                    libx * 10
                ));
            }
        }
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(
            report.contains(
                "bench ctrl map_64 ours_ns=110 libxenforeignmemory_ns=200 ratio_libxenforeignmemory=0.550\n"
            )
        );
        assert!(report.contains("target met"));
        assert_eq!(
            report
                .lines()
                .filter(|l| l.starts_with("bench ctrl "))
                .count(),
            7
        );
    }
}
