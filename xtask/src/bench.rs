//! `cargo xtask bench privcmd`: the privcmd backend against libxencall and the raw ioctl floor,
//! timed in a Linux dom0 on real Xen (x86_64, under QEMU).
//!
//! Builds `tests/bench` (the Rust driver, which also times this backend) and its C program (the
//! floor and libxencall, linked statically against Debian's `libxen-dev`), boots the testbed's
//! Linux dom0 once, runs several interleaved rounds there, and prints the medians, the ratios and
//! `mmap`/`munmap` calls per hypercall, ending with one machine-readable line per call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xen_testbed::{Arch, Dom0Run, Testbed};

const USAGE: &str = "\
usage: cargo xtask bench privcmd [--rounds N] [--iterations N]

Boots Xen with a Linux dom0 (x86_64) and times xen_version(VERSION), xen_version(EXTRAVERSION)
and memory_op(XENMEM_machine_memory_map) through the raw ioctl floor, libxencall and this
backend: N rounds (default 7) of N calls each (default 20000), median per call.";

/// The calls, in the order of the table.
const CALLS: [&str; 3] = ["version", "extraversion", "memory_map"];
/// What each call is, for the table.
const CALL_ABOUT: [&str; 3] = [
    "xen_version(VERSION), no buffer",
    "xen_version(EXTRAVERSION), one out buffer",
    "memory_op(machine_memory_map), two buffers",
];
/// The static libraries of Debian's `libxen-dev` the C program links.
const LIBXEN_DIR: &str = "/usr/lib/x86_64-linux-gnu";

pub(crate) fn run(args: &[String]) -> crate::Result {
    let (what, options) = args.split_first().ok_or_else(|| USAGE.to_string())?;
    if what == "grant" {
        return crate::bench_grant::run(options);
    }
    if what == "evtchn" {
        return crate::bench_evtchn::run(options);
    }
    if what == "store" {
        return crate::bench_store::run(options);
    }
    if what != "privcmd" {
        return Err(format!("unknown benchmark `{what}`\n{USAGE}"));
    }
    let (rounds, iterations) = rounds_and_iterations(options, (7, 20_000), USAGE)?;
    let testbed = crate::testbed::testbed();
    let c_bench = build_c_program(
        &testbed,
        &CProgram {
            source: "tests/bench/libxencall_bench.c",
            header: "xencall.h",
            name: "libxencall-bench",
            link: &[
                "-Wl,--wrap=mmap,--wrap=munmap",
                "-lxencall",
                "-lxentoolcore",
                "-lxentoollog",
            ],
        },
    )?;
    let started = std::time::Instant::now();
    let outcome = boot_bench(
        &testbed,
        ("xen-privcmd-bench", "privcmd-bench"),
        c_bench,
        format!("/bin/libxencall-bench {rounds} {iterations}"),
        "bench_privcmd",
        Duration::from_secs(120 + u64::from(rounds) * u64::from(iterations) / 100),
    )?;
    let samples = parse_samples(outcome.log.outputs())?;
    println!(
        "privcmd benchmark: {rounds} rounds x {iterations} calls per implementation and call, \
         one boot (QEMU {:.1} s, whole command {:.1} s)\n",
        outcome.run.wall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", report(&samples)?);
    Ok(())
}

/// `--rounds N` and `--iterations N` (positive), else `defaults`.
pub(crate) fn rounds_and_iterations(
    options: &[String],
    defaults: (u32, u32),
    usage: &str,
) -> crate::Result<(u32, u32)> {
    let (mut rounds, mut iterations) = defaults;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = |v: Option<&String>| -> crate::Result<u32> {
            v.and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{option} needs a positive number\n{usage}"))
        };
        match option.as_str() {
            "--rounds" => rounds = value(options.next())?,
            "--iterations" => iterations = value(options.next())?,
            _ => return Err(format!("unknown option `{option}`\n{usage}")),
        }
    }
    Ok((rounds, iterations))
}

/// A benchmark's C program, linked statically against Debian's `libxen-dev`.
pub(crate) struct CProgram {
    /// The source, relative to the workspace.
    pub(crate) source: &'static str,
    /// The `libxen-dev` header it needs (checked first, for a clear error).
    pub(crate) header: &'static str,
    /// The binary's name.
    pub(crate) name: &'static str,
    /// Linker arguments: libraries and wrappers.
    pub(crate) link: &'static [&'static str],
}

/// Compiles `program` into `<target>/testbed/bench/`, next to the testbed's cache and logs.
pub(crate) fn build_c_program(testbed: &Testbed, program: &CProgram) -> crate::Result<PathBuf> {
    let header = Path::new("/usr/include").join(program.header);
    if !header.exists() || !Path::new(LIBXEN_DIR).join("libxentoolcore.a").exists() {
        return Err(format!(
            "{} or the static libraries are missing: install Debian's libxen-dev (`apt-get install libxen-dev`)",
            header.display()
        ));
    }
    let out_dir = testbed.logs_dir().with_file_name("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let out = out_dir.join(program.name);
    let source = crate::workspace_root().join(program.source);
    crate::run_command(
        Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
            .arg(&out)
            .arg(&source)
            .arg(format!("-L{LIBXEN_DIR}"))
            .args(program.link),
    )?;
    Ok(out)
}

/// Builds the Rust driver `(package, binary)`, boots one x86_64 Linux dom0 running
/// `<binary> <arguments>` with the C program in `/bin`, prints the run's output (but the
/// `bench-run` lines) and fails unless the driver reported `case` passed.
pub(crate) fn boot_bench(
    testbed: &Testbed,
    (package, binary): (&str, &str),
    c_program: PathBuf,
    arguments: String,
    case: &str,
    timeout: Duration,
) -> crate::Result<xen_testbed::Outcome> {
    testbed
        .build_static(package, &[Arch::X86_64])
        .map_err(|e| e.to_string())?;
    let driver = testbed.static_binary(Arch::X86_64, binary);
    let c_name = c_program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let outcome = testbed
        .boot_linux_dom0(&Dom0Run {
            name: format!("bench-{}-x86_64", case.trim_start_matches("bench_")),
            arch: Arch::X86_64,
            binaries: vec![(binary.into(), driver), (c_name, c_program)],
            files: Vec::new(),
            preamble: Default::default(),
            commands: vec![format!("{binary} {arguments}")],
            expected_cases: vec![case.into()],
            expected_dones: 1,
            timeout,
            domus: Vec::new(),
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
    Ok(outcome)
}

/// One timed loop: nanoseconds per call and OS calls per hypercall.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ns_per_call: f64,
    maps_per_call: f64,
}

/// The samples of each (implementation, call), from the `bench-run` lines.
type Samples = BTreeMap<(String, String), Vec<Sample>>;

/// Parses `bench-run impl=<impl> call=<call> iterations=<n> ns=<total> mmaps=<n> munmaps=<n>`.
fn parse_samples<'a>(lines: impl Iterator<Item = &'a str>) -> crate::Result<Samples> {
    let mut samples = Samples::new();
    for run in BenchRun::all(lines) {
        samples
            .entry((run.text("impl")?.to_string(), run.text("call")?.to_string()))
            .or_default()
            .push(Sample {
                ns_per_call: run.per_iteration("ns")?,
                maps_per_call: run.per_iteration("mmaps")? + run.per_iteration("munmaps")?,
            });
    }
    if samples.is_empty() {
        return Err("the benchmark printed no results".into());
    }
    Ok(samples)
}

/// The `key=value` fields of one `bench-run ...` output line of a benchmark driver.
pub(crate) struct BenchRun<'a> {
    line: &'a str,
    fields: BTreeMap<&'a str, &'a str>,
}

impl<'a> BenchRun<'a> {
    /// The `bench-run` lines among `lines`.
    pub(crate) fn all(lines: impl Iterator<Item = &'a str>) -> impl Iterator<Item = Self> {
        lines.filter_map(|line| {
            let fields = line.strip_prefix("bench-run ")?;
            Some(Self {
                line,
                fields: fields
                    .split_whitespace()
                    .filter_map(|f| f.split_once('='))
                    .collect(),
            })
        })
    }

    /// The value of `key`.
    pub(crate) fn text(&self, key: &str) -> crate::Result<&'a str> {
        self.fields
            .get(key)
            .copied()
            .ok_or_else(|| format!("`{}` lacks {key}=", self.line))
    }

    /// The number `key`.
    pub(crate) fn number(&self, key: &str) -> crate::Result<f64> {
        self.text(key)?
            .parse::<f64>()
            .map_err(|e| format!("`{}`: {key}: {e}", self.line))
    }

    /// The number `key` divided by the (positive) `iterations`.
    pub(crate) fn per_iteration(&self, key: &str) -> crate::Result<f64> {
        let iterations = self.number("iterations")?;
        if iterations <= 0.0 {
            return Err(format!("`{}`: no iterations", self.line));
        }
        Ok(self.number(key)? / iterations)
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The median ns per call and the largest mmap+munmap count per call of `implementation` on `call`.
fn summary(samples: &Samples, implementation: &str, call: &str) -> crate::Result<(f64, f64)> {
    let runs = samples
        .get(&(implementation.to_string(), call.to_string()))
        .filter(|runs| !runs.is_empty())
        .ok_or_else(|| format!("no result for {implementation} {call}"))?;
    let ns = median(runs.iter().map(|s| s.ns_per_call).collect());
    let maps = runs.iter().map(|s| s.maps_per_call).fold(0.0, f64::max);
    Ok((ns, maps))
}

/// The table, the targets and the machine-readable lines.
fn report(samples: &Samples) -> crate::Result<String> {
    use std::fmt::Write;
    let mut table = String::new();
    let mut machine = String::new();
    let mut missed = Vec::new();
    let _ = writeln!(
        table,
        "{:<13} {:>9} {:>11} {:>9} {:>10} {:>10}   mmap+munmap per call (floor/libxencall/ours)",
        "call", "floor ns", "libxencall", "ours ns", "ours/libx", "ours/floor"
    );
    for (call, about) in CALLS.iter().zip(CALL_ABOUT) {
        let (floor, floor_maps) = summary(samples, "floor", call)?;
        let (libxencall, libxencall_maps) = summary(samples, "libxencall", call)?;
        let (ours, ours_maps) = summary(samples, "ours", call)?;
        let ratio_libxencall = ours / libxencall;
        let ratio_floor = ours / floor;
        let _ = writeln!(
            table,
            "{call:<13} {floor:>9.0} {libxencall:>11.0} {ours:>9.0} {ratio_libxencall:>10.3} {ratio_floor:>10.3}   \
             {floor_maps}/{libxencall_maps}/{ours_maps}   ({about})"
        );
        let _ = writeln!(
            machine,
            "bench privcmd {call} ours_ns={ours:.0} libxencall_ns={libxencall:.0} floor_ns={floor:.0} \
             ratio_libxencall={ratio_libxencall:.3} ratio_floor={ratio_floor:.3}"
        );
        if ratio_libxencall > 1.0 {
            missed.push(format!(
                "{call}: ours/libxencall {ratio_libxencall:.3} > 1.0"
            ));
        }
        if *call == "version" && ratio_floor > 1.05 {
            missed.push(format!("{call}: ours/floor {ratio_floor:.3} > 1.05"));
        }
        if ours_maps > 0.0 {
            missed.push(format!("{call}: {ours_maps} mmap+munmap per call"));
        }
    }
    let _ = writeln!(table);
    if missed.is_empty() {
        let _ = writeln!(
            table,
            "targets met: ours <= 1.0x libxencall on every call, <= 1.05x the floor without buffers, \
             no mmap/munmap in steady state\n"
        );
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
        for (ns_ours, ns_libx, ns_floor) in [(100, 200, 100), (120, 240, 100), (110, 220, 100)] {
            for call in CALLS {
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
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
