//! `cargo xtask bench grant`: xen-grant against libxengnttab, timed in a Linux dom0 on real Xen
//! (x86_64, under QEMU), in one boot.
//!
//! Builds `tests/grant-bench` (the Rust driver, which also times xen-grant) and its C program
//! (libxengnttab, linked statically from Debian's `libxen-dev`), boots the testbed's Linux dom0
//! once, runs interleaved rounds there, and prints the medians and ratios, one
//! `bench grant <measure> ours_ns=… libxengnttab_ns=… ratio_libxengnttab=…` line per measure.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bench::{
    BenchRun, CProgram, boot_bench, build_c_program, median, rounds_and_iterations,
};

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
    let (rounds, iterations) = rounds_and_iterations(options, (11, 1000), USAGE)?;
    let testbed = crate::testbed::testbed();
    let c_bench = build_c_program(
        &testbed,
        &CProgram {
            source: "tests/grant-bench/libxengnttab_bench.c",
            header: "xengnttab.h",
            name: "libxengnttab-bench",
            link: &["-lxengnttab", "-lxentoolcore", "-lxentoollog"],
        },
    )?;
    let started = std::time::Instant::now();
    let outcome = boot_bench(
        &testbed,
        ("xen-grant-bench", "grant-bench"),
        c_bench,
        format!("/bin/libxengnttab-bench {rounds} {iterations}"),
        "bench_grant",
        Duration::from_secs(180 + u64::from(rounds) * u64::from(iterations) / 20),
    )?;
    let samples = parse_samples(outcome.log.outputs())?;
    println!(
        "grant benchmark: {rounds} rounds x {iterations} iterations per implementation and measure, \
         one boot (QEMU {:.1} s, whole command {:.1} s; software-emulated, on a shared machine)\n",
        outcome.run.wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", report(&samples)?);
    Ok(())
}

/// Nanoseconds per iteration of each (implementation, measure), from the `bench-run` lines.
type Samples = BTreeMap<(String, String), Vec<f64>>;

/// Parses `bench-run impl=<impl> measure=<measure> iterations=<n> ns=<total>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples> {
    let mut samples = Samples::new();
    for run in BenchRun::all(lines) {
        samples
            .entry((
                run.text("impl")?.to_string(),
                run.text("measure")?.to_string(),
            ))
            .or_default()
            .push(run.per_iteration("ns")?);
    }
    if samples.is_empty() {
        return Err("the benchmark printed no results".into());
    }
    Ok(samples)
}

/// The median ns per iteration of `implementation` on `measure`.
fn summary(samples: &Samples, implementation: &str, measure: &str) -> crate::Result<f64> {
    samples
        .get(&(implementation.to_string(), measure.to_string()))
        .filter(|runs| !runs.is_empty())
        .map(|runs| median(runs.clone()))
        .ok_or_else(|| format!("no result for {implementation} {measure}"))
}

/// The table, the target and the machine-readable lines.
fn report(samples: &Samples) -> crate::Result<String> {
    use std::fmt::Write;
    let mut table = String::new();
    let mut machine = String::new();
    let mut missed = Vec::new();
    let _ = writeln!(
        table,
        "{:<10} {:>12} {:>16} {:>10}",
        "measure", "ours ns", "libxengnttab ns", "ours/libx"
    );
    for (measure, about) in MEASURES {
        let ours = summary(samples, "ours", measure)?;
        let libx = summary(samples, "libxengnttab", measure)?;
        let ratio = ours / libx;
        let _ = writeln!(
            table,
            "{measure:<10} {ours:>12.0} {libx:>16.0} {ratio:>10.3}   ({about})"
        );
        let _ = writeln!(
            machine,
            "bench grant {measure} ours_ns={ours:.0} libxengnttab_ns={libx:.0} ratio_libxengnttab={ratio:.3}"
        );
        if ratio > 1.0 {
            missed.push(format!("{measure}: ours/libxengnttab {ratio:.3} > 1.0"));
        }
    }
    let _ = writeln!(table);
    if missed.is_empty() {
        let _ = writeln!(
            table,
            "target met: ours <= 1.0x libxengnttab on every measure\n"
        );
    } else {
        let _ = writeln!(table, "target missed: {}\n", missed.join("; "));
    }
    Ok(table + &machine)
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
