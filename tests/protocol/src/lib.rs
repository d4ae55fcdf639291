#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod bulk;
pub mod exchange;
#[cfg(feature = "std")]
mod parse;
pub mod stress;

#[cfg(feature = "std")]
pub use parse::{Event, Log, ParseError, clean_line, parse_line, parse_log};

/// Standard output as a [`Write`] that writes whole lines: text is kept (per thread) until its
/// line ends, then the line is written and flushed at once. So lines of several threads never mix,
/// and no line is lost when the payload exits QEMU right after reporting.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdout;

#[cfg(feature = "std")]
std::thread_local! {
    /// This thread's unfinished line.
    static PENDING_LINE: core::cell::RefCell<std::string::String> =
        const { core::cell::RefCell::new(std::string::String::new()) };
}

#[cfg(feature = "std")]
impl Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        use std::io::Write as _;
        PENDING_LINE.with_borrow_mut(|pending| {
            pending.push_str(s);
            let Some(end) = pending.rfind('\n') else {
                return Ok(());
            };
            let mut out = std::io::stdout().lock();
            let result = out
                .write_all(&pending.as_bytes()[..=end])
                .and_then(|()| out.flush());
            pending.drain(..=end);
            result.map_err(|_| core::fmt::Error)
        })
    }
}

use core::fmt::{self, Display, Write};

/// The marker that starts every protocol line.
pub const MARKER: &str = "XENTEST ";

/// What starts the `XENTEST OUT xen-log <offset> <hex>` lines on which a dom0 program prints Xen's
/// whole log ring as it read it, for the runner to compare with the serial line.
pub const XEN_LOG: &str = "xen-log";

/// What a freestanding dom0 prints (as `XENTEST OUT`) when it waits for console input: the runner
/// then types [`INPUT_LINE`] and a carriage return on the serial line.
pub const INPUT_PROMPT: &str = "console-input waiting";
/// The line the runner types after [`INPUT_PROMPT`].
pub const INPUT_LINE: &str = "typed into xen-console";

/// Whether `name` is a valid case name: `[a-z0-9_]+`.
pub fn is_valid_case_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Writes protocol lines onto a serial console and counts the results.
///
/// Write errors of the underlying writer are ignored: a payload has nowhere else to report them, and
/// the runner notices the missing lines.
#[derive(Debug)]
pub struct Reporter<W: Write> {
    out: W,
    passed: u32,
    failed: u32,
}

impl<W: Write> Reporter<W> {
    /// A reporter writing onto `out`.
    pub const fn new(out: W) -> Self {
        Self {
            out,
            passed: 0,
            failed: 0,
        }
    }

    /// Reports case `name` as passed (`Ok`) or failed (`Err`, with the error as message).
    ///
    /// A name that is not `[a-z0-9_]+` is reported as a failed case `invalid_case_name`.
    pub fn case<E: Display>(&mut self, name: &str, result: Result<(), E>) {
        if !is_valid_case_name(name) {
            self.failed += 1;
            let _ = write!(self.out, "{MARKER}CASE invalid_case_name FAILED ");
            let _ = write!(
                OneLine(&mut self.out),
                "case name {name:?} is not [a-z0-9_]+"
            );
            let _ = self.out.write_char('\n');
            return;
        }
        match result {
            Ok(()) => {
                self.passed += 1;
                let _ = writeln!(self.out, "{MARKER}CASE {name} ok");
            }
            Err(message) => {
                self.failed += 1;
                let _ = write!(self.out, "{MARKER}CASE {name} FAILED ");
                let _ = write!(OneLine(&mut self.out), "{message}");
                let _ = self.out.write_char('\n');
            }
        }
    }

    /// Writes an informational `XENTEST OUT` line (newlines in `text` become spaces).
    pub fn out(&mut self, text: fmt::Arguments<'_>) {
        let _ = self.out.write_str(MARKER);
        let _ = self.out.write_str("OUT ");
        let _ = OneLine(&mut self.out).write_fmt(text);
        let _ = self.out.write_char('\n');
    }

    /// Writes the `XENTEST DONE` line and returns the counts.
    pub fn done(mut self) -> Summary {
        let _ = writeln!(
            self.out,
            "{MARKER}DONE passed={} failed={}",
            self.passed, self.failed
        );
        Summary {
            passed: self.passed,
            failed: self.failed,
        }
    }

    /// The counts so far.
    pub const fn summary(&self) -> Summary {
        Summary {
            passed: self.passed,
            failed: self.failed,
        }
    }
}

/// Writes an `XENTEST PANIC` line onto `out`: for panic handlers, which may not own a [`Reporter`].
pub fn report_panic<W: Write>(out: &mut W, message: impl Display) {
    let _ = out.write_str(MARKER);
    let _ = out.write_str("PANIC ");
    let _ = write!(OneLine(&mut *out), "{message}");
    let _ = out.write_char('\n');
}

/// Writes an `XENTEST SHUTDOWN <reason>` line onto `out`.
///
/// A payload prints it after `XENTEST DONE` when, instead of exiting QEMU itself, it ends the run
/// by asking Xen to shut the machine down (`SCHEDOP_shutdown` from the hardware domain).
pub fn report_shutdown<W: Write>(out: &mut W, reason: Shutdown) {
    let _ = writeln!(out, "{MARKER}SHUTDOWN {}", reason.name());
}

/// The reason a payload hands to `SCHEDOP_shutdown` (`SHUTDOWN_*`, Xen's `public/sched.h`), as
/// named on an `XENTEST SHUTDOWN` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUTDOWN_poweroff` (`poweroff`).
    Poweroff,
    /// `SHUTDOWN_reboot` (`reboot`).
    Reboot,
    /// `SHUTDOWN_suspend` (`suspend`).
    Suspend,
    /// `SHUTDOWN_crash` (`crash`).
    Crash,
    /// `SHUTDOWN_watchdog` (`watchdog`).
    Watchdog,
    /// `SHUTDOWN_soft_reset` (`soft_reset`).
    SoftReset,
}

impl Shutdown {
    const ALL: [Self; 6] = [
        Self::Poweroff,
        Self::Reboot,
        Self::Suspend,
        Self::Crash,
        Self::Watchdog,
        Self::SoftReset,
    ];

    /// The reason's name on the line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
        }
    }

    /// The reason named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.name() == name)
    }
}

impl Display for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of a payload's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Cases that passed.
    pub passed: u32,
    /// Cases that failed.
    pub failed: u32,
}

impl Summary {
    /// Whether no case failed.
    pub const fn all_passed(&self) -> bool {
        self.failed == 0
    }

    /// The exit code the payload hands to QEMU: 0 when all passed, 1 otherwise.
    ///
    /// x86_64 writes it to the `isa-debug-exit` port (QEMU status `code << 1 | 1`); aarch64 passes it
    /// to semihosting `SYS_EXIT` (QEMU status `code`).
    pub const fn exit_code(&self) -> u8 {
        if self.all_passed() { 0 } else { 1 }
    }
}

/// A writer adapter that replaces line breaks by spaces, so a message stays on its protocol line.
struct OneLine<W>(W);

impl<W: Write> Write for OneLine<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (index, part) in s.split(['\n', '\r']).enumerate() {
            if index > 0 {
                self.0.write_char(' ')?;
            }
            self.0.write_str(part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;

    use super::*;
    use alloc::string::{String, ToString};

    #[test]
    fn reports_cases_and_counts() {
        let mut serial = String::new();
        let mut reporter = Reporter::new(&mut serial);
        reporter.case("a", Ok::<(), &str>(()));
        reporter.case("b_2", Err("bad\nvalue\r\n"));
        reporter.out(format_args!("row 1\nrow 2"));
        assert_eq!(
            reporter.summary(),
            Summary {
                passed: 1,
                failed: 1
            }
        );
        let summary = reporter.done();
        assert_eq!(summary.exit_code(), 1);
        assert_eq!(
            serial,
            "XENTEST CASE a ok\nXENTEST CASE b_2 FAILED bad value  \nXENTEST OUT row 1 row 2\nXENTEST DONE passed=1 failed=1\n"
        );
    }

    #[test]
    fn invalid_case_name_is_a_failure() {
        let mut serial = String::new();
        let mut reporter = Reporter::new(&mut serial);
        reporter.case("Bad Name", Ok::<(), &str>(()));
        assert_eq!(reporter.done().exit_code(), 1);
        assert_eq!(
            serial,
            "XENTEST CASE invalid_case_name FAILED case name \"Bad Name\" is not [a-z0-9_]+\nXENTEST DONE passed=0 failed=1\n"
        );
    }

    #[test]
    fn panic_line_is_one_line() {
        let mut serial = String::new();
        report_panic(&mut serial, "at x.rs:1\nboom");
        assert_eq!(serial, "XENTEST PANIC at x.rs:1 boom\n");
    }

    #[test]
    fn shutdown_line_and_names() {
        let mut serial = String::new();
        report_shutdown(&mut serial, Shutdown::Reboot);
        assert_eq!(serial, "XENTEST SHUTDOWN reboot\n");
        for reason in Shutdown::ALL {
            assert_eq!(Shutdown::from_name(reason.name()), Some(reason));
        }
        assert_eq!(Shutdown::SoftReset.to_string(), "soft_reset");
        assert_eq!(Shutdown::from_name("halt"), None);
    }

    #[cfg(feature = "std")]
    #[test]
    fn stdout_keeps_a_line_until_it_ends() {
        let mut out = Stdout;
        out.write_str("XENTEST ").expect("kept");
        PENDING_LINE.with_borrow(|p| assert_eq!(p, "XENTEST "));
        out.write_str("OUT a\nXENTEST OUT b").expect("written");
        PENDING_LINE.with_borrow(|p| assert_eq!(p, "XENTEST OUT b"));
        out.write_str("\n").expect("written");
        PENDING_LINE.with_borrow(|p| assert!(p.is_empty()));
    }

    #[test]
    fn case_names() {
        assert!(is_valid_case_name("xen_version2"));
        assert!(!is_valid_case_name(""));
        assert!(!is_valid_case_name("a-b"));
        assert!(!is_valid_case_name("A"));
    }
}
