//! The host-side parser of serial logs.

use std::string::{String, ToString};
use std::vec::Vec;

use crate::{MARKER, Shutdown, is_valid_case_name};

/// One protocol line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `XENTEST CASE <name> ok|FAILED <message>`.
    Case {
        /// The case name.
        name: String,
        /// `Ok` if the case passed, else its failure message.
        result: Result<(), String>,
    },
    /// `XENTEST PANIC <message>`.
    Panic(String),
    /// `XENTEST DONE passed=<n> failed=<n>`.
    Done {
        /// Cases the payload counted as passed.
        passed: u32,
        /// Cases the payload counted as failed.
        failed: u32,
    },
    /// `XENTEST OUT <text>`.
    Out(String),
    /// `XENTEST SHUTDOWN <reason>`: the payload asks Xen to shut the machine down.
    Shutdown(Shutdown),
}

/// A line that carries the marker but does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The cleaned line.
    pub line: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {:?}", self.reason, self.line)
    }
}

impl std::error::Error for ParseError {}

/// Decodes one raw serial line: invalid UTF-8 is replaced, `\r` and ANSI escape sequences removed.
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {}
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in 0x40..=0x7e.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // Two-byte (ESC x) or charset (ESC ( x) sequences.
                Some('(' | ')') => {
                    chars.next();
                }
                _ => {}
            },
            c => out.push(c),
        }
    }
    out
}

/// Parses one cleaned line: `None` if it carries no protocol marker.
pub fn parse_line(line: &str) -> Option<Result<Event, ParseError>> {
    let start = line.find(MARKER)?;
    let rest = line[start + MARKER.len()..].trim_end();
    let error = |reason| {
        Err(ParseError {
            line: line.to_string(),
            reason,
        })
    };
    let (kind, body) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(match kind {
        "CASE" => {
            let (name, status) = body.split_once(' ').unwrap_or((body, ""));
            if !is_valid_case_name(name) {
                return Some(error("case name is not [a-z0-9_]+"));
            }
            let result = match status.split_once(' ').unwrap_or((status, "")) {
                ("ok", "") => Ok(()),
                ("FAILED", message) => Err(message.to_string()),
                _ => return Some(error("case status is neither `ok` nor `FAILED <message>`")),
            };
            Ok(Event::Case {
                name: name.to_string(),
                result,
            })
        }
        "PANIC" => Ok(Event::Panic(body.to_string())),
        "OUT" => Ok(Event::Out(body.to_string())),
        "DONE" => match parse_done(body) {
            Some((passed, failed)) => Ok(Event::Done { passed, failed }),
            None => error("DONE is not `passed=<n> failed=<n>`"),
        },
        "SHUTDOWN" => match Shutdown::from_name(body) {
            Some(reason) => Ok(Event::Shutdown(reason)),
            None => error("SHUTDOWN reason is not a SHUTDOWN_* name (e.g. `reboot`)"),
        },
        _ => error("unknown XENTEST line kind"),
    })
}

fn parse_done(body: &str) -> Option<(u32, u32)> {
    let (passed, failed) = body.split_once(' ')?;
    let passed = passed.strip_prefix("passed=")?.parse().ok()?;
    let failed = failed.strip_prefix("failed=")?.parse().ok()?;
    Some((passed, failed))
}

/// A parsed serial log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Log {
    /// Every cleaned line, protocol or not, in order.
    pub lines: Vec<String>,
    /// The protocol events, in order.
    pub events: Vec<Event>,
    /// Marker lines that do not follow the protocol.
    pub malformed: Vec<ParseError>,
}

impl Log {
    /// The reported cases, in order.
    pub fn cases(&self) -> impl Iterator<Item = (&str, &Result<(), String>)> {
        self.events.iter().filter_map(|event| match event {
            Event::Case { name, result } => Some((name.as_str(), result)),
            _ => None,
        })
    }

    /// The panic messages.
    pub fn panics(&self) -> impl Iterator<Item = &str> {
        self.events.iter().filter_map(|event| match event {
            Event::Panic(message) => Some(message.as_str()),
            _ => None,
        })
    }

    /// The `XENTEST OUT` texts.
    pub fn outputs(&self) -> impl Iterator<Item = &str> {
        self.events.iter().filter_map(|event| match event {
            Event::Out(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// The reasons of every `SHUTDOWN` line.
    pub fn shutdowns(&self) -> impl Iterator<Item = Shutdown> + '_ {
        self.events.iter().filter_map(|event| match event {
            Event::Shutdown(reason) => Some(*reason),
            _ => None,
        })
    }

    /// The `(passed, failed)` counts of every `DONE` line.
    pub fn dones(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.events.iter().filter_map(|event| match event {
            Event::Done { passed, failed } => Some((*passed, *failed)),
            _ => None,
        })
    }
}

/// What starts each line Xen prints itself.
const XEN_LINE: &str = "(XEN) ";

/// Parses a whole raw serial log.
///
/// Xen prints its own lines whole, but not in step with a guest's output: a Xen line can land in
/// the middle of a guest's protocol line (Xen 4.20 does so when it switches its UART to polling
/// under load). Such a Xen line is lifted out and the protocol line joined up again.
pub fn parse_log(raw: &[u8]) -> Log {
    let mut log = Log::default();
    let mut push = |line: String| {
        match parse_line(&line) {
            Some(Ok(event)) => log.events.push(event),
            Some(Err(error)) => log.malformed.push(error),
            None => {}
        }
        log.lines.push(line);
    };
    let mut head = String::new();
    for raw_line in raw
        .strip_suffix(b"\n")
        .unwrap_or(raw)
        .split(|&b| b == b'\n')
    {
        let mut line = core::mem::take(&mut head) + &clean_line(raw_line);
        let split = line
            .find(XEN_LINE)
            .filter(|&at| at > 0 && line[..at].contains(MARKER));
        if let Some(at) = split {
            head = line[..at].to_string();
            line.drain(..at);
        }
        push(line);
    }
    if !head.is_empty() {
        push(head);
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn cleans_escapes_carriage_returns_and_bad_utf8() {
        assert_eq!(
            clean_line(b"\x1b[0;32m(XEN) ok\x1b[0m\r"),
            "(XEN) ok".to_string()
        );
        assert_eq!(clean_line(b"a\xffb\x1b(Bc"), "a\u{fffd}bc".to_string());
    }

    #[test]
    fn a_xen_line_inside_a_guest_line_is_lifted_out() {
        let log = parse_log(
            b"XENTEST CASE capab(XEN) uart interrupt taking more than 4ms, switched to polling\r\n\
              ilities ok\r\nXENTEST DONE passed=1 failed=0\r\n",
        );
        assert!(log.malformed.is_empty(), "{:?}", log.malformed);
        assert_eq!(
            log.lines,
            [
                "(XEN) uart interrupt taking more than 4ms, switched to polling",
                "XENTEST CASE capabilities ok",
                "XENTEST DONE passed=1 failed=0",
            ]
        );
        assert_eq!(log.cases().collect::<Vec<_>>(), [("capabilities", &Ok(()))]);
        // Other text before a Xen line (the firmware's) stays where it is.
        assert_eq!(
            parse_log(b"Booting from ROM..(XEN) Xen version\nnext\n").lines,
            ["Booting from ROM..(XEN) Xen version", "next"]
        );
        // A protocol line cut short by the end of the log is kept.
        assert_eq!(
            parse_log(b"XENTEST OU(XEN) x\n").lines,
            ["(XEN) x", "XENTEST OU"]
        );
    }

    #[test]
    fn parses_every_kind_with_prefixes() {
        assert_eq!(
            parse_line("(d0) XENTEST CASE console_write ok"),
            Some(Ok(Event::Case {
                name: "console_write".into(),
                result: Ok(())
            }))
        );
        assert_eq!(
            parse_line("(XEN) XENTEST CASE x FAILED got 4.16, want 4.17  "),
            Some(Ok(Event::Case {
                name: "x".into(),
                result: Err("got 4.16, want 4.17".into())
            }))
        );
        assert_eq!(
            parse_line("XENTEST PANIC at src/main.rs:3: boom"),
            Some(Ok(Event::Panic("at src/main.rs:3: boom".into())))
        );
        assert_eq!(
            parse_line("[    4.1] XENTEST DONE passed=2 failed=0"),
            Some(Ok(Event::Done {
                passed: 2,
                failed: 0
            }))
        );
        assert_eq!(
            parse_line("XENTEST OUT rust 123 ns"),
            Some(Ok(Event::Out("rust 123 ns".into())))
        );
        assert_eq!(
            parse_line("(d0) XENTEST SHUTDOWN reboot"),
            Some(Ok(Event::Shutdown(Shutdown::Reboot)))
        );
        assert_eq!(parse_line("(XEN) Xen version 4.17.7"), None);
    }

    #[test]
    fn rejects_malformed_lines() {
        for line in [
            "XENTEST CASE Bad ok",
            "XENTEST CASE x",
            "XENTEST CASE x okay",
            "XENTEST DONE passed=1",
            "XENTEST DONE passed=x failed=0",
            "XENTEST BOGUS",
            "XENTEST SHUTDOWN",
            "XENTEST SHUTDOWN halt",
            "XENTEST SHUTDOWN reboot now",
        ] {
            assert!(
                matches!(parse_line(line), Some(Err(_))),
                "{line:?} was accepted"
            );
        }
    }

    #[test]
    fn round_trips_the_reporter() {
        let mut serial = String::new();
        let mut reporter = crate::Reporter::new(&mut serial);
        reporter.case("a", Ok::<(), &str>(()));
        reporter.case("b", Err("no\nway"));
        reporter.out(format_args!("x=1"));
        reporter.done();
        crate::report_shutdown(&mut serial, Shutdown::Reboot);
        let log = parse_log(serial.as_bytes());
        assert!(log.malformed.is_empty());
        assert_eq!(
            log.events,
            vec![
                Event::Case {
                    name: "a".into(),
                    result: Ok(())
                },
                Event::Case {
                    name: "b".into(),
                    result: Err("no way".into())
                },
                Event::Out("x=1".into()),
                Event::Done {
                    passed: 1,
                    failed: 1
                },
                Event::Shutdown(Shutdown::Reboot),
            ]
        );
        assert_eq!(log.lines.len(), 5);
        assert_eq!(log.shutdowns().collect::<Vec<_>>(), vec![Shutdown::Reboot]);
        assert_eq!(log.cases().count(), 2);
        assert_eq!(log.dones().collect::<Vec<_>>(), vec![(1, 1)]);
        assert_eq!(log.outputs().collect::<Vec<_>>(), vec!["x=1"]);
    }
}
