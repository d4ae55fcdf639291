//! Judging a run: the serial log and QEMU's exit against what a scenario expects.

use xen_testbed_protocol::exchange::split_forwarded;
use xen_testbed_protocol::{Event, Log, Shutdown, clean_line, parse_line, parse_log};

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
    /// The domUs whose consoles dom0 forwards, judged with the run.
    pub domus: Vec<DomuExpectation>,
}

/// What a domU must report on its console, which dom0 forwards to the serial line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomuExpectation {
    /// The domU's name (xl's), as on the forwarded lines.
    pub name: String,
    /// Its cases are listed as `<label>::<case>`, and dom0's as `dom0::<case>`.
    pub label: String,
    /// Cases it must report, each once, `ok`; the runner adds [`CLEAN_SHUTDOWN`]: the domU
    /// announced `XENTEST SHUTDOWN poweroff` after a passing `DONE`.
    pub cases: Vec<String>,
}

/// Splits a serial log into dom0's own lines and each forwarded domU console (by domU name, in
/// order of first appearance), each parsed on its own.
pub fn split_domains(log: &Log) -> (Log, Vec<(String, Log)>) {
    let mut dom0 = String::new();
    let mut domus: Vec<(String, String)> = Vec::new();
    for line in &log.lines {
        match split_forwarded(line) {
            Some((name, console)) => {
                let text = match domus.iter_mut().find(|(n, _)| n == name) {
                    Some((_, text)) => text,
                    None => {
                        domus.push((name.to_string(), String::new()));
                        &mut domus.last_mut().expect("just pushed").1
                    }
                };
                text.push_str(console);
                text.push('\n');
            }
            None => {
                dom0.push_str(line);
                dom0.push('\n');
            }
        }
    }
    let domus = domus
        .into_iter()
        .map(|(name, text)| (name, parse_log(text.as_bytes())))
        .collect();
    (parse_log(dom0.as_bytes()), domus)
}

/// Lines Xen prints when dom0 dies, halts or reboots, or when Xen itself panics.
const XEN_DEATH: &[&str] = &["Hardware Dom0 ", "Panic on CPU", "Domain 0 crashed"];

/// Whether `line` is one of Xen's [`XEN_DEATH`] lines.
pub(crate) fn is_xen_death(line: &str) -> bool {
    XEN_DEATH.iter().any(|death| line.contains(death))
}

/// The case the runner reports for a run that ends with `XENTEST SHUTDOWN` (the name is the
/// runner's: a payload does not report it itself).
pub const CLEAN_SHUTDOWN: &str = "clean_shutdown";

/// What Xen 4.17 prints (`common/shutdown.c`) before resetting the machine when the hardware
/// domain shuts down with `SHUTDOWN_reboot`; QEMU's `-no-reboot` then exits with status 0.
pub const XEN_REBOOTS: &str = "Hardware Dom0 shutdown: rebooting machine";

/// Judges a run whose payload announced `XENTEST SHUTDOWN`: `Some` (the `clean_shutdown` result
/// and the index of Xen's reboot line it accounts for) if the log has such a line, else `None`.
///
/// It passes only when every `DONE` reports no failure and no case failed, the last `DONE` comes
/// before the one `SHUTDOWN reboot` line, Xen's [`XEN_REBOOTS`] line comes after it, and QEMU
/// exited with status 0 (the reset).
fn judge_shutdown(log: &Log, exit: Exit) -> Option<(Result<(), String>, Option<usize>)> {
    let mut dones = Vec::new();
    let mut shutdowns = Vec::new();
    for (index, line) in log.lines.iter().enumerate() {
        match parse_line(line) {
            Some(Ok(Event::Done { failed, .. })) => dones.push((index, failed)),
            Some(Ok(Event::Shutdown(reason))) => shutdowns.push((index, reason)),
            _ => {}
        }
    }
    let &(announced, reason) = shutdowns.first()?;
    let reboot_line = log.lines[announced..]
        .iter()
        .position(|line| line.contains(XEN_REBOOTS))
        .map(|offset| announced + offset);
    let result = (|| {
        if shutdowns.len() > 1 {
            return Err(format!("{} XENTEST SHUTDOWN lines", shutdowns.len()));
        }
        if reason != Shutdown::Reboot {
            return Err(format!(
                "SHUTDOWN {reason}: only `reboot` ends a run (Xen resets the machine for it)"
            ));
        }
        let Some(&(last_done, _)) = dones.last() else {
            return Err("SHUTDOWN without XENTEST DONE".into());
        };
        if last_done > announced {
            return Err("SHUTDOWN before XENTEST DONE".into());
        }
        let failed: u64 = dones.iter().map(|(_, failed)| u64::from(*failed)).sum();
        let failed_cases = log.cases().filter(|(_, result)| result.is_err()).count();
        if failed > 0 || failed_cases > 0 {
            return Err(format!(
                "SHUTDOWN after a failing run (DONE failed={failed}, {failed_cases} FAILED case(s)): a failing payload must exit with failure"
            ));
        }
        if reboot_line.is_none() {
            return Err(format!(
                "Xen never printed `{XEN_REBOOTS}` after the SHUTDOWN line (QEMU: {})",
                describe(exit)
            ));
        }
        match exit {
            Exit::Status(0) => Ok(()),
            other => Err(format!(
                "QEMU ended with {}, not status 0 (Xen's reset under -no-reboot)",
                describe(other)
            )),
        }
    })();
    Some((result, reboot_line))
}

/// QEMU's exit, in words.
fn describe(exit: Exit) -> String {
    match exit {
        Exit::Status(status) => format!("status {status}"),
        Exit::TimedOut(after) => format!("killed after {} s (hang)", after.as_secs()),
        Exit::Signal => "a signal".into(),
    }
}

/// The case the runner reports for a run in which a dom0 program printed Xen's log ring as it
/// read it ([`xen_testbed_protocol::XEN_LOG`] lines): it passes when that text is what the serial
/// line carried before those lines, modulo line endings (`\r`, ANSI escapes) and the lines the
/// ring no longer holds; the first and last lines of the ring may be partial. Lines Xen logged
/// before its serial console was up (on Arm: the device tree and memory map) are only in the
/// ring: the ring may start with lines that precede the serial line's first Xen line.
pub const XEN_LOG_CASE: &str = "console_log_matches_serial";

/// Judges [`XEN_LOG_CASE`]: `None` if the log has no [`xen_testbed_protocol::XEN_LOG`] line.
fn judge_xen_log(log: &Log) -> Option<Result<(), String>> {
    let prefix = format!("{} ", xen_testbed_protocol::XEN_LOG);
    let mut ring = Vec::new();
    let mut first = None;
    for (index, line) in log.lines.iter().enumerate() {
        let Some(Ok(Event::Out(text))) = parse_line(line) else {
            continue;
        };
        let Some(chunk) = text.strip_prefix(&prefix) else {
            continue;
        };
        first.get_or_insert(index);
        let decoded = chunk.split_once(' ').and_then(|(offset, hex)| {
            let offset: usize = offset.parse().ok()?;
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((offset, bytes))
        });
        match decoded {
            Some((offset, bytes)) if offset == ring.len() => ring.extend(bytes),
            _ => {
                return Some(Err(format!(
                    "malformed or out-of-order xen-log line: {text:?}"
                )));
            }
        }
    }
    Some(compare_ring(&ring, &log.lines[..first?]))
}

/// Whether the ring's text (`ring`) is a run of the `serial` lines, modulo line endings; its first
/// line may be the end of a serial line and its last the start of one; or, if the ring holds lines
/// from before the serial console, a run of serial lines from its first Xen line on follows them.
fn compare_ring(ring: &[u8], serial: &[String]) -> Result<(), String> {
    let mut lines: Vec<String> = ring.split(|&b| b == b'\n').map(clean_line).collect();
    // After a final newline, an empty piece: the last line is whole.
    let last_partial = !ring.ends_with(b"\n");
    if !last_partial {
        lines.pop();
    }
    let Some((head, rest)) = lines.split_first() else {
        return Err("the ring is empty".into());
    };
    let matches = |line: &str, expected: &str, at_end: bool| {
        if at_end && last_partial {
            line.starts_with(expected)
        } else {
            line == expected
        }
    };
    // The longest run matched from any start, to name the first difference if none matches.
    let mut best: (usize, usize) = (0, 0);
    for start in 0..serial.len() {
        if !serial[start].ends_with(head.as_str()) {
            continue;
        }
        let matched = rest
            .iter()
            .enumerate()
            .take_while(|(k, expected)| {
                serial
                    .get(start + 1 + k)
                    .is_some_and(|line| matches(line, expected, *k + 1 == rest.len()))
            })
            .count();
        if matched == rest.len() {
            return Ok(());
        }
        if matched >= best.1 {
            best = (start, matched);
        }
    }
    // Lines logged before the serial console: the serial line's first Xen line is in the ring.
    if let Some(first) = serial.iter().position(|line| line.starts_with("(XEN) ")) {
        for skip in 1..lines.len() {
            let tail = &lines[skip..];
            if tail.iter().enumerate().all(|(k, expected)| {
                serial
                    .get(first + k)
                    .is_some_and(|line| matches(line, expected, skip + k + 1 == lines.len()))
            }) {
                return Ok(());
            }
        }
    }
    let (start, matched) = best;
    Err(format!(
        "the ring's {} bytes ({} lines) are not on the serial line: from serial line {start}, \
         {matched} lines match, then the ring has {:?} where the serial line has {:?}",
        ring.len(),
        lines.len(),
        rest.get(matched),
        serial.get(start + 1 + matched)
    ))
}

/// Judges `log` and `exit` against `expected`.
pub fn judge(expected: &Expectation, log: &Log, exit: Exit) -> Verdict {
    let shutdown = judge_shutdown(log, exit);
    let xen_log = judge_xen_log(log);
    let runner_cases: Vec<_> = shutdown
        .as_ref()
        .map(|(result, _)| (CLEAN_SHUTDOWN, result))
        .into_iter()
        .chain(xen_log.as_ref().map(|result| (XEN_LOG_CASE, result)))
        .collect();
    let (cases, mut problems) = judge_reports(&expected.cases, expected.dones, log, &runner_cases);
    // Xen's reboot line is no death when it answers the payload's announced shutdown.
    let announced_reboot = shutdown.as_ref().and_then(|(_, line)| *line);
    if let Some((_, line)) = log
        .lines
        .iter()
        .enumerate()
        .find(|(index, l)| Some(*index) != announced_reboot && is_xen_death(l))
    {
        problems.push(format!("Xen: {}", line.trim()));
    }
    // Status 0 after an announced shutdown is Xen's reset, judged by `clean_shutdown`.
    if shutdown.is_none() || exit != Exit::Status(0) {
        problems.extend(exit_problem(
            expected.arch,
            exit,
            log.dones().next().is_some(),
        ));
    }
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

/// Judges what a payload reported in `log`: the `expected` cases (each exactly once), any others
/// reported, `runner_case` (a case the runner judged itself), panics, malformed lines and the
/// `DONE` lines (`dones` of them, their counts matching the cases).
fn judge_reports(
    expected: &[String],
    dones: usize,
    log: &Log,
    runner_cases: &[(&str, &Result<(), String>)],
) -> (Vec<(String, CaseResult)>, Vec<String>) {
    let mut problems = Vec::new();
    let reported: Vec<(&str, &Result<(), String>)> =
        log.cases().chain(runner_cases.iter().copied()).collect();
    let mut cases: Vec<(String, CaseResult)> = Vec::new();
    let names = expected
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
    let done_lines: Vec<(u32, u32)> = log.dones().collect();
    if done_lines.len() != dones {
        problems.push(match done_lines.len() {
            0 => "no XENTEST DONE line (the payload stopped early)".to_string(),
            n => format!("{n} XENTEST DONE lines, expected {dones}"),
        });
    }
    let (done_passed, done_failed) = done_lines.iter().fold((0u64, 0u64), |(p, f), (dp, df)| {
        (p + u64::from(*dp), f + u64::from(*df))
    });
    let (passed, failed) = log.cases().fold((0u64, 0u64), |(p, f), (_, r)| match r {
        Ok(()) => (p + 1, f),
        Err(_) => (p, f + 1),
    });
    if !done_lines.is_empty() && (done_passed, done_failed) != (passed, failed) {
        problems.push(format!(
            "DONE counts passed={done_passed} failed={done_failed}, but the log reports passed={passed} failed={failed}"
        ));
    }
    (cases, problems)
}

/// A domU's [`CLEAN_SHUTDOWN`]: exactly one `XENTEST SHUTDOWN poweroff`, after a `DONE` that
/// reports no failure. (Whether the domain really went away is dom0's case.)
fn judge_domu_shutdown(log: &Log) -> Option<Result<(), String>> {
    let mut last_done = None;
    let mut shutdowns = Vec::new();
    for (index, event) in log.events.iter().enumerate() {
        match event {
            Event::Done { failed, .. } => last_done = Some((index, *failed)),
            Event::Shutdown(reason) => shutdowns.push((index, *reason)),
            _ => {}
        }
    }
    let &(announced, reason) = shutdowns.first()?;
    Some(match (shutdowns.len(), reason, last_done) {
        (1, Shutdown::Poweroff, Some((done, 0))) if done < announced => Ok(()),
        (1, Shutdown::Poweroff, Some((_, 0))) => Err("SHUTDOWN before XENTEST DONE".into()),
        (1, Shutdown::Poweroff, Some((_, failed))) => Err(format!(
            "SHUTDOWN poweroff after a failing run (DONE failed={failed})"
        )),
        (1, Shutdown::Poweroff, None) => Err("SHUTDOWN without XENTEST DONE".into()),
        (1, other, _) => Err(format!("SHUTDOWN {other}: a domU ends with `poweroff`")),
        (n, _, _) => Err(format!("{n} XENTEST SHUTDOWN lines")),
    })
}

impl Verdict {
    /// Adds the judgement of each domU's forwarded console (`domu_logs`, from [`split_domains`]):
    /// dom0's cases become `dom0::<case>`, each expected domU's `<label>::<case>`; a domU expected
    /// but never heard from fails every case, and its problems name it.
    pub fn add_domus(&mut self, expected: &[DomuExpectation], domu_logs: &[(String, Log)]) {
        if expected.is_empty() && domu_logs.is_empty() {
            return;
        }
        for (name, _) in &mut self.cases {
            *name = format!("dom0::{name}");
        }
        let empty = Log::default();
        let unexpected = domu_logs
            .iter()
            .filter(|(name, _)| !expected.iter().any(|e| e.name == *name))
            .map(|(name, _)| DomuExpectation {
                name: name.clone(),
                label: name.clone(),
                cases: Vec::new(),
            });
        let everyone: Vec<DomuExpectation> = expected.iter().cloned().chain(unexpected).collect();
        for domu in &everyone {
            let log = domu_logs
                .iter()
                .find(|(name, _)| *name == domu.name)
                .map_or(&empty, |(_, log)| log);
            let shutdown = judge_domu_shutdown(log);
            let runner_case = shutdown.as_ref().map(|result| (CLEAN_SHUTDOWN, result));
            let mut cases = domu.cases.clone();
            if !cases.is_empty() {
                cases.push(CLEAN_SHUTDOWN.into());
            }
            // A domU nobody expected (a user's kernel) owes no DONE line; its reports are judged.
            let dones = if expected.iter().any(|e| e.name == domu.name) {
                1
            } else {
                log.dones().count()
            };
            let runner_cases: Vec<_> = runner_case.into_iter().collect();
            let (cases, problems) = judge_reports(&cases, dones, log, &runner_cases);
            self.cases.extend(
                cases
                    .into_iter()
                    .map(|(case, result)| (format!("{}::{case}", domu.label), result)),
            );
            self.problems.extend(
                problems
                    .into_iter()
                    .map(|problem| format!("domU {}: {problem}", domu.name)),
            );
        }
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
            domus: Vec::new(),
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
        let expected = judge(
            &expect_shutdown(Arch::Aarch64),
            &log(rebooted),
            Exit::Status(0),
        );
        assert_eq!(
            expected.failures(),
            [
                "clean_shutdown: missing (never reported)",
                "Xen: (XEN) Hardware Dom0 shutdown: rebooting machine"
            ]
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

    fn expect_shutdown(arch: Arch) -> Expectation {
        let mut expectation = expect(arch);
        expectation.cases.push(CLEAN_SHUTDOWN.into());
        expectation
    }

    const ANNOUNCED: &str = "(XEN) XENTEST SHUTDOWN reboot\r\n";
    const XEN_RESETS: &str = "(XEN) Hardware Dom0 shutdown: rebooting machine\r\n";

    fn clean_shutdown_result(verdict: &Verdict) -> &CaseResult {
        let (_, result) = verdict
            .cases
            .iter()
            .find(|(name, _)| name == CLEAN_SHUTDOWN)
            .expect("clean_shutdown listed");
        result
    }

    #[test]
    fn an_announced_reboot_is_a_clean_shutdown() {
        let text = format!(
            "{PASSING}{ANNOUNCED}(XEN) Resetting with ACPI MEMORY or I/O RESET_REG.\n{XEN_RESETS}"
        );
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let verdict = judge(&expect_shutdown(arch), &log(&text), Exit::Status(0));
            assert!(verdict.passed(), "{arch}: {:?}", verdict.failures());
            assert_eq!(
                verdict.cases.last(),
                Some(&(CLEAN_SHUTDOWN.to_string(), CaseResult::Passed))
            );
        }
        // Not expected (a Linux dom0 scenario): still judged, listed after the expected cases.
        let verdict = judge(&expect(Arch::X86_64), &log(&text), Exit::Status(0));
        assert!(verdict.passed(), "{:?}", verdict.failures());
        assert_eq!(verdict.cases.len(), 3);
    }

    #[test]
    fn exiting_qemu_directly_misses_clean_shutdown() {
        for (arch, status) in [(Arch::X86_64, 1), (Arch::Aarch64, 0)] {
            let verdict = judge(&expect_shutdown(arch), &log(PASSING), Exit::Status(status));
            assert_eq!(
                verdict.failures(),
                ["clean_shutdown: missing (never reported)"],
                "{arch}"
            );
        }
    }

    #[test]
    fn a_shutdown_without_xen_resetting_fails() {
        // Xen halted (e.g. poweroff-like behaviour): QEMU hangs until killed.
        let text = format!("{PASSING}{ANNOUNCED}");
        let verdict = judge(
            &expect_shutdown(Arch::X86_64),
            &log(&text),
            Exit::TimedOut(Duration::from_secs(60)),
        );
        assert_eq!(
            verdict.failures(),
            [
                "clean_shutdown: FAILED Xen never printed `Hardware Dom0 shutdown: rebooting machine` after the SHUTDOWN line (QEMU: killed after 60 s (hang))",
                "hang: QEMU killed after 60 s",
            ]
        );
        // Status 0 without Xen's line (QEMU reset for another reason): still a failure.
        let verdict = judge(
            &expect_shutdown(Arch::Aarch64),
            &log(&text),
            Exit::Status(0),
        );
        assert!(matches!(
            clean_shutdown_result(&verdict),
            CaseResult::Failed(m) if m.starts_with("Xen never printed")
        ));
        assert!(!verdict.passed());
        // Xen's line before the announcement does not count.
        let text = format!("{PASSING}{XEN_RESETS}{ANNOUNCED}");
        let verdict = judge(&expect_shutdown(Arch::X86_64), &log(&text), Exit::Status(0));
        assert!(!verdict.passed());
        assert!(matches!(
            clean_shutdown_result(&verdict),
            CaseResult::Failed(m) if m.starts_with("Xen never printed")
        ));
        assert!(
            verdict
                .problems
                .contains(&"Xen: (XEN) Hardware Dom0 shutdown: rebooting machine".to_string())
        );
    }

    #[test]
    fn a_returning_shutdown_fails() {
        let text = format!("{PASSING}{ANNOUNCED}XENTEST PANIC shutdown returned: EPERM\n");
        let verdict = judge(&expect_shutdown(Arch::X86_64), &log(&text), Exit::Status(3));
        assert_eq!(
            verdict.failures(),
            [
                "clean_shutdown: FAILED Xen never printed `Hardware Dom0 shutdown: rebooting machine` after the SHUTDOWN line (QEMU: status 3)",
                "PANIC shutdown returned: EPERM",
                "payload exited with failure (isa-debug-exit 1)",
            ]
        );
    }

    #[test]
    fn a_shutdown_without_done_or_after_a_failure_fails() {
        let no_done = format!(
            "XENTEST CASE xen_version ok\nXENTEST CASE capabilities ok\n{ANNOUNCED}{XEN_RESETS}"
        );
        let verdict = judge(
            &expect_shutdown(Arch::X86_64),
            &log(&no_done),
            Exit::Status(0),
        );
        assert_eq!(
            verdict.failures(),
            [
                "clean_shutdown: FAILED SHUTDOWN without XENTEST DONE",
                "no XENTEST DONE line (the payload stopped early)",
            ]
        );
        let done_after = format!(
            "XENTEST CASE xen_version ok\nXENTEST CASE capabilities ok\n{ANNOUNCED}XENTEST DONE passed=2 failed=0\n{XEN_RESETS}"
        );
        let verdict = judge(
            &expect_shutdown(Arch::X86_64),
            &log(&done_after),
            Exit::Status(0),
        );
        assert_eq!(
            verdict.failures(),
            ["clean_shutdown: FAILED SHUTDOWN before XENTEST DONE"]
        );
        let failing = format!(
            "XENTEST CASE xen_version FAILED got 4.16\nXENTEST CASE capabilities ok\nXENTEST DONE passed=1 failed=1\n{ANNOUNCED}{XEN_RESETS}"
        );
        let verdict = judge(
            &expect_shutdown(Arch::Aarch64),
            &log(&failing),
            Exit::Status(0),
        );
        assert_eq!(
            verdict.failures(),
            [
                "xen_version: FAILED got 4.16",
                "clean_shutdown: FAILED SHUTDOWN after a failing run (DONE failed=1, 1 FAILED case(s)): a failing payload must exit with failure",
            ]
        );
    }

    #[test]
    fn only_one_reboot_announcement_counts() {
        let twice = format!("{PASSING}{ANNOUNCED}{ANNOUNCED}{XEN_RESETS}");
        let verdict = judge(
            &expect_shutdown(Arch::X86_64),
            &log(&twice),
            Exit::Status(0),
        );
        assert_eq!(
            verdict.failures(),
            ["clean_shutdown: FAILED 2 XENTEST SHUTDOWN lines"]
        );
        let poweroff = format!("{PASSING}(XEN) XENTEST SHUTDOWN poweroff\n");
        let verdict = judge(
            &expect_shutdown(Arch::X86_64),
            &log(&poweroff),
            Exit::TimedOut(Duration::from_secs(60)),
        );
        assert!(matches!(
            clean_shutdown_result(&verdict),
            CaseResult::Failed(m) if m.starts_with("SHUTDOWN poweroff: only `reboot`")
        ));
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

    fn cross_domain(domu_cases: &[&str]) -> Expectation {
        Expectation {
            arch: Arch::X86_64,
            cases: vec!["xl_create".into()],
            dones: 1,
            domus: vec![DomuExpectation {
                name: "xentest-pv".into(),
                label: "domu".into(),
                cases: domu_cases.iter().map(|c| c.to_string()).collect(),
            }],
        }
    }

    /// Judges a cross-domain log as the runner does: split, then dom0, then the domUs.
    fn judge_cross(expected: &Expectation, text: &str, exit: Exit) -> Verdict {
        let (dom0, domus) = split_domains(&log(text));
        let mut verdict = judge(expected, &dom0, exit);
        verdict.add_domus(&expected.domus, &domus);
        verdict
    }

    const DOM0_PASSES: &str = "XENTEST CASE xl_create ok\nXENTEST DONE passed=1 failed=0\n";

    #[test]
    fn both_domains_pass_together() {
        let text = "XENTEST CASE xl_create ok\n[domu xentest-pv] XENTEST CASE grant_access ok\n\
             [domu xentest-pv] XENTEST OUT hello\n[domu xentest-pv] XENTEST DONE passed=1 failed=0\n\
             [domu xentest-pv] XENTEST SHUTDOWN poweroff\nXENTEST DONE passed=1 failed=0\n";
        let verdict = judge_cross(&cross_domain(&["grant_access"]), text, Exit::Status(1));
        assert!(verdict.passed(), "{:?}", verdict.failures());
        let names: Vec<&str> = verdict.cases.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "dom0::xl_create",
                "domu::grant_access",
                "domu::clean_shutdown"
            ]
        );
    }

    #[test]
    fn a_domu_never_heard_from_fails_every_case_and_is_named() {
        let verdict = judge_cross(
            &cross_domain(&["grant_access"]),
            DOM0_PASSES,
            Exit::Status(1),
        );
        assert_eq!(
            verdict.failures(),
            [
                "domu::grant_access: missing (never reported)",
                "domu::clean_shutdown: missing (never reported)",
                "domU xentest-pv: no XENTEST DONE line (the payload stopped early)",
            ]
        );
    }

    #[test]
    fn a_domu_that_fails_panics_or_does_not_power_off_fails() {
        let expected = cross_domain(&["grant_access"]);
        let failing = format!(
            "{DOM0_PASSES}[domu xentest-pv] XENTEST CASE grant_access FAILED no page\n\
             [domu xentest-pv] XENTEST DONE passed=0 failed=1\n[domu xentest-pv] XENTEST SHUTDOWN poweroff\n"
        );
        let verdict = judge_cross(&expected, &failing, Exit::Status(1));
        assert_eq!(
            verdict.failures(),
            [
                "domu::grant_access: FAILED no page",
                "domu::clean_shutdown: FAILED SHUTDOWN poweroff after a failing run (DONE failed=1)",
            ]
        );
        let panicking = format!("{DOM0_PASSES}[domu xentest-pv] XENTEST PANIC at x.rs:1\n");
        let verdict = judge_cross(&expected, &panicking, Exit::Status(1));
        assert!(
            verdict
                .failures()
                .contains(&"domU xentest-pv: PANIC at x.rs:1".to_string())
        );
        let rebooting = format!(
            "{DOM0_PASSES}[domu xentest-pv] XENTEST CASE grant_access ok\n\
             [domu xentest-pv] XENTEST DONE passed=1 failed=0\n[domu xentest-pv] XENTEST SHUTDOWN reboot\n"
        );
        let verdict = judge_cross(&expected, &rebooting, Exit::Status(1));
        assert_eq!(
            verdict.failures(),
            ["domu::clean_shutdown: FAILED SHUTDOWN reboot: a domU ends with `poweroff`"]
        );
    }

    #[test]
    fn forwarded_lines_do_not_count_as_dom0_cases() {
        // The domU's DONE must not satisfy dom0's.
        let text = "XENTEST CASE xl_create ok\n[domu xentest-pv] XENTEST DONE passed=0 failed=0\n";
        let verdict = judge_cross(&cross_domain(&[]), text, Exit::Status(1));
        assert!(
            verdict
                .problems
                .contains(&"no XENTEST DONE line (the payload stopped early)".to_string()),
            "{:?}",
            verdict.problems
        );
        // An unexpected domU is judged under its own name.
        let text = format!("{DOM0_PASSES}[domu other] XENTEST CASE x FAILED bad\n");
        let verdict = judge_cross(&cross_domain(&[]), &text, Exit::Status(1));
        assert!(
            verdict
                .failures()
                .contains(&"other::x: FAILED bad".to_string())
        );
    }

    /// `XENTEST OUT xen-log` lines carrying `ring` in 5-byte pieces.
    fn xen_log_lines(ring: &[u8]) -> String {
        ring.chunks(5)
            .enumerate()
            .map(|(index, piece)| {
                let hex: String = piece.iter().map(|b| format!("{b:02x}")).collect();
                format!("XENTEST OUT xen-log {} {hex}\n", index * 5)
            })
            .collect()
    }

    #[test]
    fn the_xen_log_is_judged_against_the_serial_line_before_it() {
        let serial = "+ qemu\r\n(XEN) line a\r\n(XEN) line b\r\n[  1.0] line c\r\nline d\r\n";
        let ring = b"N) line a\n(XEN) line b\n[  1.0] line c\r\nli";
        let log = parse_log(format!("{serial}{}", xen_log_lines(ring)).as_bytes());
        assert_eq!(judge_xen_log(&log), Some(Ok(())));
        let whole = b"(XEN) line b\n[  1.0] line c\n";
        let log = parse_log(format!("{serial}{}", xen_log_lines(whole)).as_bytes());
        assert_eq!(judge_xen_log(&log), Some(Ok(())));
        // A line the serial line does not carry, or carries only after the dump.
        let other = b"(XEN) line b\nline x\n";
        let log = parse_log(format!("{serial}{}line x\n", xen_log_lines(other)).as_bytes());
        let error = judge_xen_log(&log).unwrap().unwrap_err();
        assert!(error.contains("\"line x\""), "{error}");
        assert_eq!(judge_xen_log(&parse_log(serial.as_bytes())), None);
        // Lines from before the serial console, then what the serial line carried from its start.
        let early = b"(XEN) RAM: 0-1\n(XEN) line a\n(XEN) line b\n";
        let log = parse_log(format!("{serial}{}", xen_log_lines(early)).as_bytes());
        assert_eq!(judge_xen_log(&log), Some(Ok(())));
        let gap = "XENTEST OUT xen-log 0 41\nXENTEST OUT xen-log 5 41\n";
        assert!(judge_xen_log(&parse_log(gap.as_bytes())).unwrap().is_err());
    }
}
