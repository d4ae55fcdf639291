//! `cargo xtask bench store`: the xenstore client against Debian's libxenstore, both talking to
//! Debian's C `xenstored` over its socket in a Linux dom0 on real Xen (x86_64, under QEMU).
//!
//! Builds `tests/store-bench` (the Rust driver, which also times this client) and its C program
//! (libxenstore, linked statically against Debian's `libxen-dev`), boots the testbed's dom0 with
//! the toolstack once, runs interleaved rounds there, and prints the medians and ratios, ending
//! with one machine-readable line per measure:
//! `bench store <measure> ours_ns=… libxenstore_ns=… ratio_libxenstore=…`, where the ratio is
//! ours' throughput over libxenstore's (libxenstore's ns per operation over ours).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xen_testbed::{Arch, Dom0Run, Testbed, initramfs::Preamble};

use crate::bench::BenchRun;

const USAGE: &str = "\
usage: cargo xtask bench store [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) running Debian's xenstored and times xenstore reads and
writes over its socket: libxenstore (xs_read/xs_write, one in flight), this client with one in
flight, and with 64 in flight. N rounds (default 5) of N operations each (default 2000), median
per operation.";

/// The static libraries of Debian's `libxen-dev` the C program links.
const LIBXEN_DIR: &str = "/usr/lib/x86_64-linux-gnu";

/// (measure, our implementation in the driver's lines, target throughput ratio).
const MEASURES: [(&str, &str, &str, f64); 4] = [
    ("read", "read", "ours", 1.0),
    ("write", "write", "ours", 1.0),
    ("read_64_in_flight", "read", "ours64", 3.0),
    ("write_64_in_flight", "write", "ours64", 3.0),
];

pub(crate) fn run(options: &[String]) -> crate::Result {
    let mut rounds = 5u32;
    let mut iterations = 2000u32;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = |v: Option<&String>| -> crate::Result<u32> {
            v.and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{option} needs a positive number\n{USAGE}"))
        };
        match option.as_str() {
            "--rounds" => rounds = value(options.next())?,
            "--iterations" => iterations = value(options.next())?,
            _ => return Err(format!("unknown option `{option}`\n{USAGE}")),
        }
    }

    let testbed = crate::testbed::testbed();
    let c_bench = build_c_program(&testbed)?;
    testbed
        .build_static("xen-store-bench", &[Arch::X86_64])
        .map_err(|e| e.to_string())?;
    let driver = testbed.static_binary(Arch::X86_64, "store-bench");
    let started = std::time::Instant::now();
    let operations = u64::from(rounds) * u64::from(iterations) * 6;
    let outcome = testbed
        .boot_linux_dom0(&Dom0Run {
            name: "bench-store-x86_64".into(),
            arch: Arch::X86_64,
            binaries: vec![
                ("store-bench".into(), driver),
                ("libxenstore-bench".into(), c_bench),
            ],
            files: Vec::new(),
            preamble: Preamble::Toolstack { fault: None },
            commands: vec![format!(
                "store-bench /bin/libxenstore-bench {rounds} {iterations}"
            )],
            expected_cases: vec!["bench_store".into()],
            expected_dones: 1,
            // Under software emulation an operation takes about a millisecond.
            timeout: Duration::from_secs(180 + operations * 5 / 1000),
            domus: Vec::new(),
        })
        .map_err(|e| e.to_string())?;
    if !outcome.verdict.passed() {
        return Err(format!(
            "the benchmark run failed: {:?} (log: {})",
            outcome.verdict.failures(),
            outcome.log_path.display()
        ));
    }
    let samples = parse_samples(outcome.log.outputs())?;
    println!(
        "store benchmark: {rounds} rounds x {iterations} operations per implementation and measure, \
         one boot (QEMU {:.1} s, whole command {:.1} s)\n",
        outcome.run.wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", report(&samples)?);
    Ok(())
}

/// Compiles `tests/store-bench/libxenstore_bench.c` statically against libxenstore.
fn build_c_program(testbed: &Testbed) -> crate::Result<PathBuf> {
    let libxenstore = Path::new(LIBXEN_DIR).join("libxenstore.a");
    if !libxenstore.exists() || !Path::new("/usr/include/xenstore.h").exists() {
        return Err(format!(
            "{} or xenstore.h is missing: install Debian's libxen-dev (`apt-get install libxen-dev`)",
            libxenstore.display()
        ));
    }
    let out_dir = testbed.logs_dir().with_file_name("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("libxenstore-bench");
    let source = crate::workspace_root().join("tests/store-bench/libxenstore_bench.c");
    crate::run_command(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
            .arg(&out)
            .arg(&source)
            .arg(format!("-L{LIBXEN_DIR}"))
            .args(["-lxenstore", "-lxentoolcore", "-lpthread"]),
    )?;
    Ok(out)
}

/// Nanoseconds per operation of each (implementation, measure), from the `bench-run` lines.
type Samples = BTreeMap<(String, String), Vec<f64>>;

/// Parses `bench-run impl=<impl> measure=<read|write> iterations=<n> ns=<total>`.
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

fn median(samples: &Samples, implementation: &str, measure: &str) -> crate::Result<f64> {
    let mut values = samples
        .get(&(implementation.to_string(), measure.to_string()))
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("no result for {implementation} {measure}"))?
        .clone();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Ok(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The table, the targets and the machine-readable lines.
fn report(samples: &Samples) -> crate::Result<String> {
    use std::fmt::Write;
    let mut table = String::new();
    let mut machine = String::new();
    let mut missed = Vec::new();
    let _ = writeln!(
        table,
        "{:<20} {:>10} {:>15} {:>22} {:>7}",
        "measure", "ours ns", "libxenstore ns", "throughput ours/libx", "target"
    );
    for (measure, op, ours_impl, target) in MEASURES {
        let ours = median(samples, ours_impl, op)?;
        let libxenstore = median(samples, "libxenstore", op)?;
        let ratio = libxenstore / ours;
        let _ = writeln!(
            table,
            "{measure:<20} {ours:>10.0} {libxenstore:>15.0} {ratio:>22.3} {target:>6.1}x"
        );
        let _ = writeln!(
            machine,
            "bench store {measure} ours_ns={ours:.0} libxenstore_ns={libxenstore:.0} \
             ratio_libxenstore={ratio:.3}"
        );
        if ratio < target {
            missed.push(format!("{measure}: {ratio:.3}x < {target:.1}x"));
        }
    }
    let _ = writeln!(table);
    if missed.is_empty() {
        let _ = writeln!(table, "targets met\n");
    } else {
        let _ = writeln!(table, "targets missed: {}\n", missed.join("; "));
    }
    Ok(table + &machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_machine_lines() {
        let mut lines = Vec::new();
        for (ours, ours64, libx) in [(100, 20, 200), (120, 30, 240), (110, 25, 220)] {
            for measure in ["read", "write"] {
                for (implementation, ns) in
                    [("ours", ours), ("ours64", ours64), ("libxenstore", libx)]
                {
                    lines.push(format!(
                        "bench-run impl={implementation} measure={measure} iterations=10 ns={}",
                        ns * 10
                    ));
                }
            }
        }
        lines.push("something else".into());
        let samples = parse_samples(lines.iter().map(String::as_str)).unwrap();
        let report = report(&samples).unwrap();
        assert!(
            report.contains(
                "bench store read ours_ns=110 libxenstore_ns=220 ratio_libxenstore=2.000"
            )
        );
        assert!(report.contains(
            "bench store write_64_in_flight ours_ns=25 libxenstore_ns=220 ratio_libxenstore=8.800"
        ));
        assert!(report.contains("targets met"));
        assert!(parse_samples(["bench-run impl=ours measure=read ns=1"].into_iter()).is_err());
    }
}
