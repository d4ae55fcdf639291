//! The scenarios, building their payloads, running them (at most two QEMUs at once) and reporting.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xen_testbed_protocol::parse_log;

use crate::verdict::{CLEAN_SHUTDOWN, CaseResult, Expectation, judge};
use crate::{Arch, Dom0Run, Error, Outcome, Result, Testbed, command_output, qemu};

/// The dom0 test programs' package (and binary).
pub const DOM0_TESTS: &str = "xen-dom0-tests";
/// The freestanding guests' package (and binary).
pub const GUEST: &str = "xen-test-guest";
/// The cases every freestanding guest must report (it may report more; each is judged).
pub const GUEST_CASES: &[&str] = &[
    "console_io_write",
    "console_log_read_back",
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

/// What a scenario boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Linux dom0 running shell lines (see [`Dom0Run::commands`]).
    LinuxDom0 {
        /// The architecture.
        arch: Arch,
        /// The shell lines.
        commands: &'static [&'static str],
    },
    /// A freestanding guest as dom0.
    Guest(GuestKind),
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
        kind: Kind::LinuxDom0 { arch, commands },
        timeout: Duration::from_secs(timeout),
        must_fail,
    }
}

const fn guest(name: &'static str, about: &'static str, kind: GuestKind) -> Scenario {
    Scenario {
        name,
        about,
        kind: Kind::Guest(kind),
        timeout: Duration::from_secs(60),
        must_fail: None,
    }
}

/// Every scenario, in the order they run.
pub fn scenarios() -> &'static [Scenario] {
    const ALL: &[Scenario] = &[
        linux(
            "linux-dom0-x86_64",
            "Linux PV dom0 on Xen amd64 runs xen-dom0-tests",
            Arch::X86_64,
            &[DOM0_TESTS],
            150,
            None,
        ),
        linux(
            "linux-dom0-aarch64",
            "Linux dom0 on Xen arm64 runs xen-dom0-tests",
            Arch::Aarch64,
            &[DOM0_TESTS],
            90,
            None,
        ),
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

/// Which scenarios to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Scenario names; empty means all.
    pub names: Vec<String>,
    /// Only the harness self-tests.
    pub self_test: bool,
}

/// Counts of the final `N passed, N failed` line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Passed tests.
    pub passed: usize,
    /// Failed tests.
    pub failed: usize,
}

/// A prepared QEMU run.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) command: Command,
    pub(crate) timeout: Duration,
    pub(crate) expectation: Expectation,
}

impl Job {
    pub(crate) fn run(self, testbed: &Testbed) -> Result<Outcome> {
        let logs = testbed.logs_dir();
        std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        let log_path = logs.join(format!("{}.log", self.name));
        let run = qemu::run(self.command, &log_path, self.timeout)?;
        let raw = std::fs::read(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log = parse_log(&raw);
        let verdict = judge(&self.expectation, &log, run.exit);
        Ok(Outcome {
            log,
            verdict,
            log_path,
            run,
        })
    }
}

/// Selects scenarios by `options`, failing on an unknown name.
pub fn select(options: &Options) -> Result<Vec<Scenario>> {
    if options.names.is_empty() {
        return Ok(scenarios()
            .iter()
            .filter(|s| !options.self_test || s.is_self_test())
            .copied()
            .collect());
    }
    options
        .names
        .iter()
        .map(|name| {
            scenarios()
                .iter()
                .find(|s| s.name == name)
                .copied()
                .ok_or_else(|| {
                    Error::new(format!(
                        "unknown scenario `{name}` (see `cargo xtask testbed --list`)"
                    ))
                })
        })
        .collect()
}

/// Builds, boots and judges `selected`, printing cargo-test style lines and a final
/// `N passed, N failed` line.
pub fn run_scenarios(testbed: &Testbed, selected: &[Scenario]) -> Result<Summary> {
    let start = Instant::now();
    let linux_arches: BTreeSet<Arch> = selected
        .iter()
        .filter_map(|s| match s.kind {
            Kind::LinuxDom0 { arch, .. } => Some(arch),
            Kind::Guest(_) => None,
        })
        .collect();
    let guest_arches = selected.iter().filter_map(|s| match s.kind {
        Kind::Guest(GuestKind::Aarch64) => Some(Arch::Aarch64),
        Kind::Guest(_) => Some(Arch::X86_64),
        Kind::LinuxDom0 { .. } => None,
    });
    let arches: BTreeSet<Arch> = linux_arches.iter().copied().chain(guest_arches).collect();
    let mut artifacts = Vec::new();
    for arch in &arches {
        let fetched = testbed.fetch(*arch)?;
        eprintln!("testbed: {arch}: {}", fetched.versions.join(", "));
        artifacts.push(fetched);
    }
    let artifacts_of = |arch: Arch| {
        artifacts
            .iter()
            .find(|a| a.arch == arch)
            .expect("fetched above")
    };

    // The dom0 program's case list, from the x86_64 build run on the host (`list` touches no Xen).
    // Built one architecture at a time, so a broken build fails only that architecture's scenarios.
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
    // The dom0 program's case list, from the x86_64 build run on the host (`list` touches no Xen).
    let dom0_cases: Result<Vec<String>> = if linux_arches.is_empty() {
        Ok(Vec::new())
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
                let list = command_output(
                    Command::new(testbed.static_binary(Arch::X86_64, DOM0_TESTS)).arg("list"),
                )?;
                Ok(String::from_utf8_lossy(&list)
                    .lines()
                    .map(str::to_string)
                    .collect())
            })
    };
    let mut guests = GuestBuilds::default();

    let mut jobs: Vec<(Scenario, Result<Job>)> = Vec::new();
    for scenario in selected {
        let job = match scenario.kind {
            Kind::LinuxDom0 { arch, commands } => {
                dom0_built(arch).and(dom0_cases.clone()).and_then(|cases| {
                    testbed.dom0_job(
                        artifacts_of(arch),
                        &Dom0Run {
                            name: scenario.name.into(),
                            arch,
                            binaries: Vec::new(),
                            commands: commands.iter().map(|c| c.to_string()).collect(),
                            expected_cases: cases,
                            expected_dones: usize::from(
                                commands.contains(&DOM0_TESTS)
                                    || commands.iter().any(|c| c.ends_with(DOM0_TESTS)),
                            ),
                            timeout: scenario.timeout,
                        },
                    )
                })
            }
            Kind::Guest(kind) => guests.image(testbed, kind).and_then(|image| {
                let arch = if kind == GuestKind::Aarch64 {
                    Arch::Aarch64
                } else {
                    Arch::X86_64
                };
                let guest = match kind {
                    GuestKind::Pv => qemu::Guest::Pv(&image),
                    GuestKind::Pvh => qemu::Guest::Pvh(&image),
                    GuestKind::Aarch64 => qemu::Guest::Aarch64Image(&image),
                };
                Ok(Job {
                    name: scenario.name.into(),
                    command: qemu::command(arch, &artifacts_of(arch).xen, &guest)?,
                    timeout: scenario.timeout,
                    expectation: Expectation {
                        arch,
                        cases: guest_cases(kind),
                        dones: 1,
                    },
                })
            }),
        };
        jobs.push((*scenario, job));
    }

    let summary = Mutex::new(Summary::default());
    let queue = Mutex::new(jobs.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue lock").next();
                    let Some((scenario, job)) = next else { break };
                    let outcome = job.and_then(|job| job.run(testbed));
                    let (passed, failed) = report(&scenario, &outcome);
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

/// Freestanding guest images, built on first use.
#[derive(Default)]
struct GuestBuilds {
    built: Vec<(GuestKind, Result<PathBuf>)>,
}

impl GuestBuilds {
    fn image(&mut self, testbed: &Testbed, kind: GuestKind) -> Result<PathBuf> {
        if let Some((_, image)) = self.built.iter().find(|(k, _)| *k == kind) {
            return image.clone();
        }
        let image = build_guest(testbed, kind);
        self.built.push((kind, image.clone()));
        image
    }
}

fn build_guest(testbed: &Testbed, kind: GuestKind) -> Result<PathBuf> {
    if !testbed.workspace.join("tests/guest/Cargo.toml").exists() {
        return Err(Error::new(format!(
            "payload crate missing: tests/guest (package {GUEST}) does not exist yet"
        )));
    }
    let (target, features) = match kind {
        GuestKind::Pv => ("x86_64-unknown-none", Some("pv")),
        GuestKind::Pvh => ("x86_64-unknown-none", Some("pvh")),
        GuestKind::Aarch64 => ("aarch64-unknown-none", None),
    };
    crate::check_rust_target(target)?;
    let mut cargo = testbed.cargo();
    cargo.args(["build", "--release", "-p", GUEST, "--target", target]);
    if let Some(features) = features {
        cargo.args(["--features", features]);
    }
    crate::run_cargo(cargo)?;
    let built = testbed.target_dir.join(target).join("release").join(GUEST);
    let work = testbed.work_dir();
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    // Copied aside: the next flavour's build overwrites the binary.
    let image = work.join(format!("{GUEST}-{kind:?}").to_lowercase());
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
fn report(scenario: &Scenario, outcome: &Result<Outcome>) -> (usize, usize) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let name = scenario.name;
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

/// `cargo xtask demo`: boots Xen with a Linux dom0 running `xen-dom0-tests demo`, then a freestanding
/// guest, and shows what they print. Returns whether both runs passed.
pub fn demo(testbed: &Testbed) -> Result<bool> {
    testbed.build_static(DOM0_TESTS, &[Arch::X86_64])?;
    let linux = testbed.boot_linux_dom0(&Dom0Run {
        name: "demo-linux-dom0-x86_64".into(),
        arch: Arch::X86_64,
        binaries: Vec::new(),
        commands: vec![format!("{DOM0_TESTS} demo")],
        expected_cases: Vec::new(),
        expected_dones: 1,
        timeout: Duration::from_secs(150),
    })?;
    show_demo(
        "Linux dom0 (x86_64 PV) running the xen-dom0-tests demo",
        &linux,
        "Hello from Rust",
    );
    let artifacts = testbed.fetch(Arch::X86_64)?;
    let guest_ok = match build_guest(testbed, GuestKind::Pv) {
        Ok(image) => {
            let job = Job {
                name: "demo-pv64".into(),
                command: qemu::command(Arch::X86_64, &artifacts.xen, &qemu::Guest::Pv(&image))?,
                timeout: Duration::from_secs(60),
                expectation: Expectation {
                    arch: Arch::X86_64,
                    cases: Vec::new(),
                    dones: 1,
                },
            };
            let outcome = job.run(testbed)?;
            show_demo(
                "freestanding Rust guest as a PV64 dom0",
                &outcome,
                "xen-test-guest:",
            );
            outcome.verdict.passed()
        }
        Err(error) => {
            println!("\n== freestanding guest: not run: {error}");
            false
        }
    };
    Ok(linux.verdict.passed() && guest_ok)
}

/// Prints a demo run: the banner, the payload's `XENTEST OUT` lines, the console lines containing
/// `console_marker` (written with `CONSOLEIO_write`), and the cases.
fn show_demo(title: &str, outcome: &Outcome, console_marker: &str) {
    println!("\n== {title}");
    println!(
        "   hypervisor: {}",
        outcome.verdict.banner.as_deref().unwrap_or("(no banner)")
    );
    for line in outcome.log.outputs() {
        println!("   {line}");
    }
    for line in outcome
        .log
        .lines
        .iter()
        .filter(|l| l.contains(console_marker))
    {
        println!("   console: {}", line.trim());
    }
    for (case, result) in &outcome.verdict.cases {
        println!("   case {case}: {result:?}");
    }
    for failure in &outcome.verdict.problems {
        println!("   problem: {failure}");
    }
    println!(
        "   QEMU {:.1} s; full log {}",
        outcome.run.wall.as_secs_f64(),
        outcome.log_path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
