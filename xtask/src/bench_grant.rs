//! `cargo xtask bench grant`: xen-grant against libxengnttab, timed in a Linux dom0 on real Xen
//! (x86_64, under QEMU), in one boot.
//!
//! Builds `tests/grant-bench` (the Rust driver, which also times xen-grant) and its C program
//! (libxengnttab, linked statically from Debian's `libxen-dev`), boots the testbed's Linux dom0
//! once, runs interleaved rounds there, and prints the medians and ratios, one
//! `bench grant <measure> ours_ns=… libxengnttab_ns=… ratio_libxengnttab=…` line per measure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xen_testbed::{Arch, Dom0Run, Testbed};

use crate::bench::median;

const USAGE: &str = "\
usage: cargo xtask bench grant [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) and times, through xen-grant and through libxengnttab:
map + unmap of one page (gntdev), grant copy of 4 KiB and of 1 MiB; each side on pages it
granted its own domain. N rounds (default 5) of N iterations (default 2000; the 1 MiB copy
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
/// The static libraries of Debian's `libxen-dev` the C program links.
const LIBXEN_DIR: &str = "/usr/lib/x86_64-linux-gnu";

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
        .build_static("xen-grant-bench", &[Arch::X86_64])
        .map_err(|e| e.to_string())?;
    let driver = testbed.static_binary(Arch::X86_64, "grant-bench");
    let started = std::time::Instant::now();
    let outcome = testbed
        .boot_linux_dom0(&Dom0Run {
            name: "bench-grant-x86_64".into(),
            arch: Arch::X86_64,
            binaries: vec![
                ("grant-bench".into(), driver),
                ("libxengnttab-bench".into(), c_bench),
            ],
            commands: vec![format!(
                "grant-bench /bin/libxengnttab-bench {rounds} {iterations}"
            )],
            expected_cases: vec!["bench_grant".into()],
            expected_dones: 1,
            timeout: Duration::from_secs(180 + u64::from(rounds) * u64::from(iterations) / 20),
        })
        .map_err(|e| e.to_string())?;
    for line in outcome
        .log
        .outputs()
        .filter(|l| !l.starts_with("bench-run "))
    {
        println!("{line}");
    }
    if !outcome.verdict.passed() {
        return Err(format!(
            "the benchmark run failed: {:?} (log: {})",
            outcome.verdict.failures(),
            outcome.log_path.display()
        ));
    }
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

/// Compiles `tests/grant-bench/libxengnttab_bench.c` statically against libxengnttab.
fn build_c_program(testbed: &Testbed) -> crate::Result<PathBuf> {
    let library = Path::new(LIBXEN_DIR).join("libxengnttab.a");
    if !library.exists() || !Path::new("/usr/include/xengnttab.h").exists() {
        return Err(format!(
            "{} or xengnttab.h is missing: install Debian's libxen-dev (`apt-get install libxen-dev`)",
            library.display()
        ));
    }
    let out_dir = testbed.logs_dir().with_file_name("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join("libxengnttab-bench");
    let source = crate::workspace_root().join("tests/grant-bench/libxengnttab_bench.c");
    crate::run_command(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
            .arg(&out)
            .arg(&source)
            .arg(format!("-L{LIBXEN_DIR}"))
            .args(["-lxengnttab", "-lxentoolcore", "-lxentoollog"]),
    )?;
    Ok(out)
}

/// Nanoseconds per iteration of each (implementation, measure), from the `bench-run` lines.
type Samples = BTreeMap<(String, String), Vec<f64>>;

/// Parses `bench-run impl=<impl> measure=<measure> iterations=<n> ns=<total>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples> {
    let mut samples = Samples::new();
    for line in lines {
        let Some(fields) = line.strip_prefix("bench-run ") else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = fields
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        let text = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| format!("`{line}` lacks {key}="))
        };
        let number = |key: &str| {
            text(key)?
                .parse::<f64>()
                .map_err(|e| format!("`{line}`: {key}: {e}"))
        };
        let iterations = number("iterations")?;
        if iterations <= 0.0 {
            return Err(format!("`{line}`: no iterations"));
        }
        samples
            .entry((text("impl")?.to_string(), text("measure")?.to_string()))
            .or_default()
            .push(number("ns")? / iterations);
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
