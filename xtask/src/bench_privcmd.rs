//! `cargo xtask bench privcmd`: the privcmd backend against libxencall and the raw ioctl floor,
//! timed in a Linux dom0 on real Xen (x86_64, under QEMU).
//!
//! Builds `tests/bench` (the Rust driver, which also times this backend) and its C program (the
//! floor and libxencall, linked statically against Debian's `libxen-dev`), boots the testbed's
//! Linux dom0 once, runs several interleaved rounds there, and prints the medians, the ratios and
//! `mmap`/`munmap` calls per hypercall, ending with one machine-readable line per call.

use std::time::Duration;

use crate::bench::{Bench, CProgram, Report, Samples};

const USAGE: &str = "\
usage: cargo xtask bench privcmd [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) and times xen_version(VERSION), xen_version(EXTRAVERSION)
and memory_op(XENMEM_machine_memory_map) through the raw ioctl floor, libxencall and this
backend: N rounds (default 7) of N calls each (default 20000), median per call.";

/// The calls, in the order of the table, and what each is.
const CALLS: [(&str, &str); 3] = [
    ("version", "xen_version(VERSION), no buffer"),
    ("extraversion", "xen_version(EXTRAVERSION), one out buffer"),
    ("memory_map", "memory_op(machine_memory_map), two buffers"),
];

pub(crate) fn run(options: &[String]) -> crate::Result {
    let (rounds, iterations) = crate::bench::options(options, (7, 20_000), USAGE, &mut [])?;
    Bench {
        name: "privcmd",
        driver: ("xen-privcmd-bench", "privcmd-bench"),
        peer: Some(CProgram {
            source: "tests/bench/libxencall_bench.c",
            header: "xencall.h",
            name: "libxencall-bench",
            link: &[
                "-Wl,--wrap=mmap,--wrap=munmap",
                "-lxencall",
                "-lxentoolcore",
                "-lxentoollog",
            ],
        }),
        preamble: Default::default(),
        commands: vec![format!("/bin/libxencall-bench {rounds} {iterations}")],
        cases: &["bench_privcmd"],
        timeout: Duration::from_secs(120 + rounds * iterations / 100),
        files: Vec::new(),
        domus: Vec::new(),
        dom0_memory_mib: None,
    }
    .run(
        &format!(
            "privcmd benchmark: {rounds} rounds x {iterations} calls per implementation and call"
        ),
        "",
        |lines| report(&parse_samples(lines.iter().copied())?),
    )
}

/// One timed loop: nanoseconds per call and OS calls per hypercall.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ns_per_call: f64,
    maps_per_call: f64,
}

/// Parses `bench-run impl=<impl> call=<call> iterations=<n> ns=<total> mmaps=<n> munmaps=<n>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples<Sample>> {
    Samples::parse(lines, "call", |run| {
        Ok(Sample {
            ns_per_call: run.per_iteration("ns")?,
            maps_per_call: run.per_iteration("mmaps")? + run.per_iteration("munmaps")?,
        })
    })
}

/// The median ns per call and the largest mmap+munmap count per call of `implementation` on `call`.
fn summary(
    samples: &Samples<Sample>,
    implementation: &str,
    call: &str,
) -> crate::Result<(f64, f64)> {
    let ns = samples.median(implementation, call, |s| s.ns_per_call)?;
    let maps = samples
        .of(implementation, call)?
        .iter()
        .map(|s| s.maps_per_call)
        .fold(0.0, f64::max);
    Ok((ns, maps))
}

/// The table, the targets and the machine-readable lines.
fn report(samples: &Samples<Sample>) -> crate::Result<String> {
    use std::fmt::Write;
    let mut report = Report::default();
    let _ = writeln!(
        report.table,
        "{:<13} {:>9} {:>11} {:>9} {:>10} {:>10}   mmap+munmap per call (floor/libxencall/ours)",
        "call", "floor ns", "libxencall", "ours ns", "ours/libx", "ours/floor"
    );
    for (call, about) in CALLS {
        let (floor, floor_maps) = summary(samples, "floor", call)?;
        let (libxencall, libxencall_maps) = summary(samples, "libxencall", call)?;
        let (ours, ours_maps) = summary(samples, "ours", call)?;
        let ratio_libxencall = ours / libxencall;
        let ratio_floor = ours / floor;
        let _ = writeln!(
            report.table,
            "{call:<13} {floor:>9.0} {libxencall:>11.0} {ours:>9.0} {ratio_libxencall:>10.3} {ratio_floor:>10.3}   \
             {floor_maps}/{libxencall_maps}/{ours_maps}   ({about})"
        );
        let _ = writeln!(
            report.machine,
            "bench privcmd {call} ours_ns={ours:.0} libxencall_ns={libxencall:.0} floor_ns={floor:.0} \
             ratio_libxencall={ratio_libxencall:.3} ratio_floor={ratio_floor:.3}"
        );
        if ratio_libxencall > 1.0 {
            report.missed.push(format!(
                "{call}: ours/libxencall {ratio_libxencall:.3} > 1.0"
            ));
        }
        if call == "version" && ratio_floor > 1.05 {
            report
                .missed
                .push(format!("{call}: ours/floor {ratio_floor:.3} > 1.05"));
        }
        if ours_maps > 0.0 {
            report
                .missed
                .push(format!("{call}: {ours_maps} mmap+munmap per call"));
        }
    }
    Ok(report.finish(
        "targets",
        ": ours <= 1.0x libxencall on every call, <= 1.05x the floor without buffers, \
         no mmap/munmap in steady state",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_machine_lines() {
        let mut lines = Vec::new();
        for (ns_ours, ns_libx, ns_floor) in [(100, 200, 100), (120, 240, 100), (110, 220, 100)] {
            for (call, _) in CALLS {
                lines.push(format!(
                    "bench-run impl=ours call={call} iterations=10 ns={} mmaps=0 munmaps=0",
                    ns_ours * 10
                ));
                lines.push(format!(
                    "bench-run impl=libxencall call={call} iterations=10 ns={} mmaps=0 munmaps=0",
                    ns_libx * 10
                ));
                lines.push(format!(
                    "bench-run impl=floor call={call} iterations=10 ns={} mmaps=0 munmaps=0",
                    ns_floor * 10
                ));
            }
        }
        lines.push("something else".into());
        let samples = parse_samples(lines.iter().map(String::as_str)).unwrap();
        let report = report(&samples).unwrap();
        assert!(report.contains(
            "bench privcmd extraversion ours_ns=110 libxencall_ns=220 floor_ns=100 \
             ratio_libxencall=0.500 ratio_floor=1.100\n"
        ));
        assert!(report.contains("targets missed: version: ours/floor 1.100 > 1.05"));
        assert_eq!(
            report
                .lines()
                .filter(|l| l.starts_with("bench privcmd "))
                .count(),
            3
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_samples(["bench-run impl=ours call=version ns=5"].into_iter()).is_err());
        assert!(parse_samples(["nothing"].into_iter()).is_err());
    }
}
