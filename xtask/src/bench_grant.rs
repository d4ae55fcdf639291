//! `cargo xtask bench grant`: xen-grant against libxengnttab, timed in a Linux dom0 on real Xen
//! (x86_64, under QEMU), in one boot.
//!
//! Builds `tests/grant-bench` (the Rust driver, which also times xen-grant) and its C program
//! (libxengnttab, linked statically from Debian's `libxen-dev`), boots the testbed's Linux dom0
//! once, runs interleaved rounds there, and prints the medians and ratios, one
//! `bench grant <measure> ours_ns=… libxengnttab_ns=… ratio_libxengnttab=…` line per measure.

use std::time::Duration;

use crate::bench::{Bench, CProgram, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench grant [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) and times, through xen-grant and through libxengnttab:
map + unmap of one page (gntdev), grant copy of 4 KiB and of 1 MiB; each side on pages it
granted its own domain. N rounds (default 11) of N iterations (default 1000; the 1 MiB copy
runs N/32), median per iteration.";

/// The measures, in the order of the table, and what each is.
const MEASURES: [(&str, &str); 3] = [
    (
        "map_unmap",
        "gntdev map + mmap + munmap + unmap of one page",
    ),
    ("copy_4k", "grant copy of one page into local memory"),
    (
        "copy_1m",
        "grant copy of 256 pages (1 MiB) into local memory",
    ),
];

pub(crate) fn run(options: &[String]) -> crate::Result {
    let (rounds, iterations) = crate::bench::options(options, (11, 1000), USAGE, &mut [])?;
    Bench {
        name: "grant",
        driver: ("xen-grant-bench", "grant-bench"),
        peer: Some(CProgram {
            source: "tests/grant-bench/libxengnttab_bench.c",
            header: "xengnttab.h",
            name: "libxengnttab-bench",
            link: &["-lxengnttab", "-lxentoolcore", "-lxentoollog"],
        }),
        preamble: Default::default(),
        commands: vec![format!("/bin/libxengnttab-bench {rounds} {iterations}")],
        cases: &["bench_grant"],
        timeout: Duration::from_secs(180 + rounds * iterations / 20),
        files: Vec::new(),
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run(
        &format!(
            "grant benchmark: {rounds} rounds x {iterations} iterations per implementation and measure"
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
        "measure", "ours ns", "libxengnttab ns", "ours/libx"
    );
    for (measure, about) in MEASURES {
        let ours = samples.median("ours", measure, |&ns| ns)?;
        let libx = samples.median("libxengnttab", measure, |&ns| ns)?;
        let ratio = ours / libx;
        let _ = writeln!(
            report.table,
            "{measure:<10} {ours:>12.0} {libx:>16.0} {ratio:>10.3}   ({about})"
        );
        let _ = writeln!(
            report.machine,
            "bench grant {measure} ours_ns={ours:.0} libxengnttab_ns={libx:.0} ratio_libxengnttab={ratio:.3}"
        );
        if ratio > 1.0 {
            report
                .missed
                .push(format!("{measure}: ours/libxengnttab {ratio:.3} > 1.0"));
        }
    }
    Ok(report.finish("target", ": ours <= 1.0x libxengnttab on every measure"))
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
                    "bench-run impl=libxengnttab measure={measure} iterations=10 ns={}",
                    libx * 10
                ));
            }
        }
        lines.push("other output".into());
        let report = report(&parse_samples(lines.iter().map(String::as_str)).unwrap()).unwrap();
        assert!(report.contains(
            "bench grant copy_4k ours_ns=110 libxengnttab_ns=200 ratio_libxengnttab=0.550\n"
        ));
        assert!(report.contains("target met"));
        assert_eq!(
            report
                .lines()
                .filter(|l| l.starts_with("bench grant "))
                .count(),
            3
        );
        assert!(parse_samples(["bench-run impl=ours measure=copy_4k ns=5"].into_iter()).is_err());
    }
}
