//! `cargo xtask bench <name>`: the shape every benchmark shares.
//!
//! A benchmark builds its C peer (statically against Debian's `libxen-dev`; or uses one of
//! Debian's tools) and its Rust driver,
//! boots the testbed's x86_64 Linux dom0 once, runs the driver there (which runs the peer and
//! prints one `bench-run key=value…` line per timed sample), takes the medians and prints a table,
//! whether the targets were met and one machine-readable `bench <name> <measure> …` line each.
//! Each `bench_<name>` module keeps only what differs: its programs, options and table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use xen_testbed::verdict::DomuExpectation;
use xen_testbed::{Arch, Dom0Run, Testbed, initramfs::Preamble};

const USAGE: &str = "\
usage: cargo xtask bench privcmd|evtchn|store|grant|console|ctrl|vchan|blk|blkback [--rounds N] [--iterations N] [...]";

pub(crate) fn run(args: &[String]) -> crate::Result {
    let (what, options) = args.split_first().ok_or_else(|| USAGE.to_string())?;
    match what.as_str() {
        "privcmd" => crate::bench_privcmd::run(options),
        "evtchn" => crate::bench_evtchn::run(options),
        "store" => crate::bench_store::run(options),
        "grant" => crate::bench_grant::run(options),
        "console" => crate::bench_console::run(options),
        "ctrl" => crate::bench_ctrl::run(options),
        "vchan" => crate::bench_vchan::run(options),
        "blk" => crate::bench_blk::run(options),
        "blkback" => crate::bench_blkback::run(options),
        _ => Err(format!("unknown benchmark `{what}`\n{USAGE}")),
    }
}

/// `--rounds N`, `--iterations N` (else `defaults`) and the benchmark's `extra` options:
/// `(option, values)`, the option taking as many numbers as `values` holds (its defaults).
/// Every number must be positive.
pub(crate) fn options(
    options: &[String],
    defaults: (u64, u64),
    usage: &str,
    extra: &mut [(&str, &mut [u64])],
) -> crate::Result<(u64, u64)> {
    let (mut rounds, mut iterations) = defaults;
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let mut value = || -> crate::Result<u64> {
            options
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{option} needs a positive number\n{usage}"))
        };
        match option.as_str() {
            "--rounds" => rounds = value()?,
            "--iterations" => iterations = value()?,
            name => {
                let (_, values) = extra
                    .iter_mut()
                    .find(|(known, _)| *known == name)
                    .ok_or_else(|| format!("unknown option `{option}`\n{usage}"))?;
                for slot in values.iter_mut() {
                    *slot = value()?;
                }
            }
        }
    }
    Ok((rounds, iterations))
}

/// A benchmark's C peer, linked statically against Debian's `libxen-dev`.
pub(crate) use xen_testbed::c_program::CProgram;

/// Compiles `program` into `<target>/testbed/bench/`, next to the testbed's cache and logs.
fn build_c_program(testbed: &Testbed, program: &CProgram) -> crate::Result<PathBuf> {
    xen_testbed::c_program::build(testbed, program).map_err(|e| e.to_string())
}

/// One benchmark boot: a Rust driver and a C peer in an x86_64 Linux dom0.
pub(crate) struct Bench {
    /// The benchmark's name: the testbed run is `bench-<name>-x86_64`.
    pub(crate) name: &'static str,
    /// The Rust driver's package and binary.
    pub(crate) driver: (&'static str, &'static str),
    /// The C peer, in `/bin` under its name (`None`: the peer is one of Debian's tools).
    pub(crate) peer: Option<CProgram>,
    /// What dom0 starts before the commands.
    pub(crate) preamble: Preamble,
    /// The driver's arguments, one command each.
    pub(crate) commands: Vec<String>,
    /// The cases the driver must report passed.
    pub(crate) cases: &'static [&'static str],
    /// How long the boot may take.
    pub(crate) timeout: Duration,
    /// Other files for dom0 (e.g. a domU's kernel): absolute path in dom0, host path.
    pub(crate) files: Vec<(String, PathBuf)>,
    /// The domUs the driver creates, judged with the run.
    pub(crate) domus: Vec<DomuExpectation>,
    /// dom0's memory in MiB (`None`: the testbed's default).
    pub(crate) dom0_memory_mib: Option<u32>,
}

impl Bench {
    /// Builds and boots the benchmark, prints the run's output (but the `bench-run` lines),
    /// fails unless every case passed, then prints `<summary>, one boot (QEMU …, whole command …
    /// <note>)` and what `report` makes of the output lines.
    pub(crate) fn run(
        self,
        summary: &str,
        note: &str,
        report: impl FnOnce(&[&str]) -> crate::Result<String>,
    ) -> crate::Result {
        // The benchmarks time one thread against one C peer.
        self.run_on(1, summary, note, report)
    }

    /// [`Bench::run`] on a dom0 of `vcpus` vCPUs.
    pub(crate) fn run_on(
        self,
        vcpus: u32,
        summary: &str,
        note: &str,
        report: impl FnOnce(&[&str]) -> crate::Result<String>,
    ) -> crate::Result {
        let testbed = crate::testbed::testbed();
        let started = Instant::now();
        let (package, binary) = self.driver;
        let mut binaries = vec![(binary.into(), testbed.static_binary(Arch::X86_64, binary))];
        if let Some(peer) = &self.peer {
            binaries.push((peer.name.into(), build_c_program(&testbed, peer)?));
        }
        testbed
            .build_static(package, &[Arch::X86_64])
            .map_err(|e| e.to_string())?;
        let outcome = testbed
            .boot_linux_dom0(&Dom0Run {
                name: format!("bench-{}-x86_64", self.name),
                arch: Arch::X86_64,
                binaries,
                files: self.files,
                preamble: self.preamble,
                commands: self
                    .commands
                    .iter()
                    .map(|arguments| format!("{binary} {arguments}"))
                    .collect(),
                expected_cases: self.cases.iter().map(|&case| case.into()).collect(),
                expected_dones: self.commands.len(),
                timeout: self.timeout,
                vcpus,
                dom0_memory_mib: self.dom0_memory_mib,
                domus: self.domus,
            })
            .map_err(|e| e.to_string())?;
        let lines: Vec<&str> = outcome.log.outputs().collect();
        for line in lines.iter().filter(|l| !l.starts_with("bench-run ")) {
            println!("{line}");
        }
        if !outcome.verdict.passed() {
            return Err(format!(
                "the benchmark run failed: {:?} (log: {})",
                outcome.verdict.failures(),
                outcome.log_path.display()
            ));
        }
        let report = report(&lines)?;
        println!(
            "{summary}, one boot (QEMU {:.1} s, whole command {:.1} s{note})\n",
            outcome.run.wall.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        print!("{report}");
        Ok(())
    }
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

/// The samples of each (implementation, measure) of a run, in the order they were printed.
#[derive(Debug)]
pub(crate) struct Samples<T>(BTreeMap<(String, String), Vec<T>>);

impl<T> Samples<T> {
    /// Parses the `bench-run impl=<impl> <measure_key>=<measure> …` lines among `lines`, each
    /// into a sample with `sample`; no such line is an error.
    pub(crate) fn parse<'a>(
        lines: impl Iterator<Item = &'a str>,
        measure_key: &str,
        sample: impl Fn(&BenchRun<'a>) -> crate::Result<T>,
    ) -> crate::Result<Self> {
        let mut samples = BTreeMap::<_, Vec<T>>::new();
        for run in BenchRun::all(lines) {
            samples
                .entry((
                    run.text("impl")?.to_string(),
                    run.text(measure_key)?.to_string(),
                ))
                .or_default()
                .push(sample(&run)?);
        }
        if samples.is_empty() {
            return Err("the benchmark printed no results".into());
        }
        Ok(Self(samples))
    }

    /// The samples of `implementation` on `measure`: at least one, else an error.
    pub(crate) fn of(&self, implementation: &str, measure: &str) -> crate::Result<&[T]> {
        self.0
            .get(&(implementation.to_string(), measure.to_string()))
            .map(Vec::as_slice)
            .filter(|runs| !runs.is_empty())
            .ok_or_else(|| format!("no result for {implementation} {measure}"))
    }

    /// The median of `value` over the samples of `implementation` on `measure`.
    pub(crate) fn median(
        &self,
        implementation: &str,
        measure: &str,
        value: impl Fn(&T) -> f64,
    ) -> crate::Result<f64> {
        Ok(median(
            self.of(implementation, measure)?
                .iter()
                .map(value)
                .collect(),
        ))
    }
}

/// The median of (non-empty) `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A benchmark's report as it is written: the table, the targets missed, the machine lines.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// The human-readable table, one line per measure.
    pub(crate) table: String,
    /// One `bench <name> <measure> key=value…` line per measure.
    pub(crate) machine: String,
    /// Each target missed, described.
    pub(crate) missed: Vec<String>,
}

impl Report {
    /// The table, a blank line, `<targets> met<met>` or `<targets> missed: …`, a blank line
    /// and the machine lines.
    pub(crate) fn finish(self, targets: &str, met: &str) -> String {
        let verdict = if self.missed.is_empty() {
            format!("{targets} met{met}")
        } else {
            format!("{targets} missed: {}", self.missed.join("; "))
        };
        format!("{}\n{verdict}\n\n{}", self.table, self.machine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn options_take_positive_numbers_and_known_extras() {
        let mut soak = [7, 8];
        let parsed = options(
            &strings(&["--iterations", "3", "--soak", "4", "5"]),
            (1, 2),
            "usage",
            &mut [("--soak", &mut soak)],
        );
        assert_eq!(parsed, Ok((1, 3)));
        assert_eq!(soak, [4, 5]);
        assert!(options(&strings(&["--rounds", "0"]), (1, 2), "", &mut []).is_err());
        assert!(options(&strings(&["--rounds"]), (1, 2), "", &mut []).is_err());
        assert!(options(&strings(&["--soak", "1", "2"]), (1, 2), "", &mut []).is_err());
    }

    #[test]
    fn medians_and_missing_results() {
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
        let lines = [
            "bench-run impl=a m=x iterations=2 ns=10",
            "other",
            "bench-run impl=a m=x iterations=1 ns=1",
        ];
        let samples =
            Samples::parse(lines.into_iter(), "m", |run| run.per_iteration("ns")).unwrap();
        assert_eq!(samples.median("a", "x", |&ns| ns), Ok(3.0));
        assert!(samples.of("a", "y").is_err());
        assert!(Samples::parse(["nothing"].into_iter(), "m", |_| Ok(())).is_err());
    }
}
