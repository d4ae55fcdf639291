//! Judging a run: the serial log and QEMU's exit against what a scenario expects.

use xen_testbed_protocol::Log;

use crate::Arch;
use crate::qemu::Exit;

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseResult {
    /// Reported `ok`.
    Passed,
    /// Reported `FAILED`, with the payload's message.
    Failed(String),
    /// Expected but never reported.
    Missing,
}

/// The judgement of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Every case: the expected ones in their order, then unexpected reported ones.
    pub cases: Vec<(String, CaseResult)>,
    /// Problems of the run as a whole (panic, hang, reboot, missing DONE, exit status, ...).
    pub problems: Vec<String>,
    /// The hypervisor banner (`Xen version ...`), if Xen got that far.
    pub banner: Option<String>,
}

impl Verdict {
    /// Whether every case passed and the run had no problem.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.cases.iter().all(|(_, r)| *r == CaseResult::Passed)
    }

    /// One line per failure: `<case>: <why>` and the run's problems.
    pub fn failures(&self) -> Vec<String> {
        let cases = self.cases.iter().filter_map(|(name, result)| match result {
            CaseResult::Passed => None,
            CaseResult::Failed(message) => Some(format!("{name}: FAILED {message}")),
            CaseResult::Missing => Some(format!("{name}: missing (never reported)")),
        });
        cases.chain(self.problems.iter().cloned()).collect()
    }
}

/// What a run must show to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The architecture (decides how QEMU's exit status reads).
    pub arch: Arch,
    /// Cases that must each be reported exactly once, `ok`.
    pub cases: Vec<String>,
    /// How many `DONE` lines the payload(s) print (one per test program).
    pub dones: usize,
}

/// Lines Xen prints when dom0 dies, halts or reboots, or when Xen itself panics.
const XEN_DEATH: &[&str] = &["Hardware Dom0 ", "Panic on CPU", "Domain 0 crashed"];

/// Judges `log` and `exit` against `expected`.
pub fn judge(expected: &Expectation, log: &Log, exit: Exit) -> Verdict {
    let mut problems = Vec::new();
    let reported: Vec<(&str, &Result<(), String>)> = log.cases().collect();
    let mut cases: Vec<(String, CaseResult)> = Vec::new();
    let names = expected
        .cases
        .iter()
        .map(String::as_str)
        .chain(reported.iter().map(|(name, _)| *name));
    for name in names {
        if cases.iter().any(|(seen, _)| seen == name) {
            continue;
        }
        let mut results = reported.iter().filter(|(n, _)| *n == name).map(|(_, r)| *r);
        let result = match results.next() {
            None => CaseResult::Missing,
            Some(Ok(())) => CaseResult::Passed,
            Some(Err(message)) => CaseResult::Failed(message.clone()),
        };
        let again = results.count();
        if again > 0 {
            problems.push(format!("case {name} reported {} times", again + 1));
        }
        cases.push((name.to_string(), result));
    }
    for message in log.panics() {
        problems.push(format!("PANIC {message}"));
    }
    for malformed in &log.malformed {
        problems.push(format!(
            "malformed protocol line: {}",
            malformed.line.trim()
        ));
    }
    let dones: Vec<(u32, u32)> = log.dones().collect();
    if dones.len() != expected.dones {
        problems.push(match dones.len() {
            0 => "no XENTEST DONE line (the payload stopped early)".to_string(),
            n => format!("{n} XENTEST DONE lines, expected {}", expected.dones),
        });
    }
    let (done_passed, done_failed) = dones.iter().fold((0u64, 0u64), |(p, f), (dp, df)| {
        (p + u64::from(*dp), f + u64::from(*df))
    });
    let (passed, failed) = reported
        .iter()
        .fold((0u64, 0u64), |(p, f), (_, r)| match r {
            Ok(()) => (p + 1, f),
            Err(_) => (p, f + 1),
        });
    if !dones.is_empty() && (done_passed, done_failed) != (passed, failed) {
        problems.push(format!(
            "DONE counts passed={done_passed} failed={done_failed}, but the log reports passed={passed} failed={failed}"
        ));
    }
    if let Some(line) = log
        .lines
        .iter()
        .find(|l| XEN_DEATH.iter().any(|d| l.contains(d)))
    {
        problems.push(format!("Xen: {}", line.trim()));
    }
    problems.extend(exit_problem(expected.arch, exit, !dones.is_empty()));
    let banner = log.lines.iter().find_map(|line| {
        let start = line.find("Xen version ")?;
        Some(line[start..].trim().to_string())
    });
    Verdict {
        cases,
        problems,
        banner,
    }
}

/// What is wrong with QEMU's exit, if anything.
fn exit_problem(arch: Arch, exit: Exit, saw_done: bool) -> Option<String> {
    match (arch, exit) {
        (_, Exit::TimedOut(after)) => {
            Some(format!("hang: QEMU killed after {} s", after.as_secs()))
        }
        (_, Exit::Signal) => Some("QEMU was killed by a signal".into()),
        // isa-debug-exit: (code << 1) | 1.
        (Arch::X86_64, Exit::Status(1)) => None,
        (Arch::X86_64, Exit::Status(3)) => {
            Some("payload exited with failure (isa-debug-exit 1)".into())
        }
        (Arch::X86_64, Exit::Status(0)) => Some("Xen rebooted (QEMU status 0)".into()),
        // Semihosting SYS_EXIT: the code itself. A Xen reboot is status 0 too, so 0 counts as a pass
        // only after DONE and without a Xen death line (checked by the caller).
        (Arch::Aarch64, Exit::Status(0)) if saw_done => None,
        (Arch::Aarch64, Exit::Status(0)) => {
            Some("Xen rebooted or dom0 stopped (QEMU status 0, no DONE)".into())
        }
        (Arch::Aarch64, Exit::Status(1)) => {
            Some("payload exited with failure (semihosting exit 1)".into())
        }
        (_, Exit::Status(status)) => Some(format!("unexpected QEMU exit status {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use xen_testbed_protocol::parse_log;

    fn expect(arch: Arch) -> Expectation {
        Expectation {
            arch,
            cases: vec!["xen_version".into(), "capabilities".into()],
            dones: 1,
        }
    }

    const BANNER: &str = "\x1b[0m(XEN) Xen version 4.17.7 (Debian 4.17.7) (pkg@debian) gcc\r\n";

    fn log(body: &str) -> Log {
        parse_log(format!("{BANNER}{body}").as_bytes())
    }

    const PASSING: &str = "XENTEST CASE xen_version ok\r\nXENTEST CASE capabilities ok\r\nXENTEST DONE passed=2 failed=0\r\n";

    #[test]
    fn a_clean_run_passes() {
        for (arch, status) in [(Arch::X86_64, 1), (Arch::Aarch64, 0)] {
            let verdict = judge(&expect(arch), &log(PASSING), Exit::Status(status));
            assert!(verdict.passed(), "{arch}: {:?}", verdict.failures());
            assert_eq!(
                verdict.banner.as_deref(),
                Some("Xen version 4.17.7 (Debian 4.17.7) (pkg@debian) gcc")
            );
        }
    }

    #[test]
    fn a_failing_case_fails_naming_it() {
        let text = "XENTEST CASE xen_version FAILED got 4.16\nXENTEST CASE capabilities ok\nXENTEST DONE passed=1 failed=1\n";
        let verdict = judge(&expect(Arch::X86_64), &log(text), Exit::Status(3));
        assert!(!verdict.passed());
        assert_eq!(
            verdict.cases[0],
            ("xen_version".into(), CaseResult::Failed("got 4.16".into()))
        );
        assert_eq!(verdict.failures()[0], "xen_version: FAILED got 4.16");
    }

    #[test]
    fn a_panic_fails() {
        let text = "XENTEST CASE xen_version ok\nXENTEST PANIC at src/version.rs:9: boom\n";
        let verdict = judge(&expect(Arch::X86_64), &log(text), Exit::Status(3));
        assert!(!verdict.passed());
        assert_eq!(
            verdict.cases[1],
            ("capabilities".into(), CaseResult::Missing)
        );
        assert!(
            verdict
                .problems
                .iter()
                .any(|p| p == "PANIC at src/version.rs:9: boom")
        );
        assert!(
            verdict
                .problems
                .iter()
                .any(|p| p.starts_with("no XENTEST DONE"))
        );
    }

    #[test]
    fn a_hang_fails() {
        let text = "XENTEST CASE xen_version ok\n";
        let verdict = judge(
            &expect(Arch::Aarch64),
            &log(text),
            Exit::TimedOut(Duration::from_secs(20)),
        );
        assert!(!verdict.passed());
        assert!(
            verdict
                .problems
                .iter()
                .any(|p| p == "hang: QEMU killed after 20 s")
        );
    }

    #[test]
    fn a_missing_case_fails_even_with_a_pass_status() {
        let text = "XENTEST CASE xen_version ok\nXENTEST DONE passed=1 failed=0\n";
        let verdict = judge(&expect(Arch::X86_64), &log(text), Exit::Status(1));
        assert!(!verdict.passed());
        assert_eq!(
            verdict.failures(),
            ["capabilities: missing (never reported)"]
        );
    }

    #[test]
    fn a_xen_reboot_fails() {
        let x86 = judge(&expect(Arch::X86_64), &log(PASSING), Exit::Status(0));
        assert_eq!(x86.failures(), ["Xen rebooted (QEMU status 0)"]);
        // aarch64: status 0 is also a pass, so the reboot shows in Xen's messages or a missing DONE.
        let rebooted = "XENTEST CASE xen_version ok\nXENTEST CASE capabilities ok\nXENTEST DONE passed=2 failed=0\n(XEN) Hardware Dom0 shutdown: rebooting machine\n";
        let arm = judge(&expect(Arch::Aarch64), &log(rebooted), Exit::Status(0));
        assert_eq!(
            arm.failures(),
            ["Xen: (XEN) Hardware Dom0 shutdown: rebooting machine"]
        );
        let early = judge(
            &expect(Arch::Aarch64),
            &log("(XEN) booting\n"),
            Exit::Status(0),
        );
        assert!(
            early
                .problems
                .iter()
                .any(|p| p.starts_with("Xen rebooted or dom0 stopped"))
        );
    }

    #[test]
    fn inconsistent_or_malformed_reports_fail() {
        let twice = "XENTEST CASE xen_version ok\nXENTEST CASE xen_version ok\nXENTEST CASE capabilities ok\nXENTEST DONE passed=3 failed=0\n";
        let verdict = judge(&expect(Arch::X86_64), &log(twice), Exit::Status(1));
        assert_eq!(verdict.failures(), ["case xen_version reported 2 times"]);
        let miscounted = PASSING.replace("passed=2", "passed=5");
        let verdict = judge(&expect(Arch::X86_64), &log(&miscounted), Exit::Status(1));
        assert!(verdict.failures()[0].starts_with("DONE counts passed=5"));
        let garbled = format!("{PASSING}XENTEST CASE capab\n");
        let verdict = judge(&expect(Arch::X86_64), &log(&garbled), Exit::Status(1));
        assert!(verdict.failures()[0].starts_with("malformed protocol line"));
    }

    #[test]
    fn unexpected_cases_are_listed_and_judged() {
        let text = "XENTEST CASE xen_version ok\nXENTEST CASE capabilities ok\nXENTEST CASE extra FAILED nope\nXENTEST DONE passed=2 failed=1\n";
        let verdict = judge(&expect(Arch::X86_64), &log(text), Exit::Status(3));
        assert_eq!(
            verdict.cases[2],
            ("extra".into(), CaseResult::Failed("nope".into()))
        );
        assert!(!verdict.passed());
    }

    #[test]
    fn wrong_exit_statuses_fail() {
        let verdict = judge(&expect(Arch::X86_64), &log(PASSING), Exit::Status(3));
        assert!(!verdict.passed());
        let verdict = judge(&expect(Arch::Aarch64), &log(PASSING), Exit::Status(7));
        assert_eq!(verdict.failures(), ["unexpected QEMU exit status 7"]);
        let verdict = judge(&expect(Arch::X86_64), &log(PASSING), Exit::Signal);
        assert!(!verdict.passed());
    }
}
