//! Xen's consoles through `xen-console`, without an allocator: a line written to the hypervisor
//! console is read back from Xen's log ring (Xen runs with `console_to_ring`), from the index
//! taken before the write; a line the runner types on the serial line is read as console input
//! (`CONSOLEIO_read`), woken by `VIRQ_CONSOLE`.

use core::fmt::Write as _;

use xen_console::hypervisor::InputError;
use xen_console::{Channel, HypervisorConsole, Wait, Wake, XenLog};
use xen_hypercall::prelude::*;
use xen_hypercall::sched::Deadline;
use xen_hypercall::{Error, XenHypercall};
use xen_testbed_protocol::{INPUT_LINE, INPUT_PROMPT};

use crate::cases::{CaseResult, Fail, GuestReporter, fail};
use crate::shared_info::SharedInfo;

pub(crate) fn run<H: XenHypercall<Error = Error>>(h: &H, reporter: &mut GuestReporter<'_, H>) {
    reporter.case("console_log_read_back", read_back(h));
}

/// A line formatted on the stack.
struct Line {
    bytes: [u8; 64],
    len: usize,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn read_back<H: XenHypercall<Error = Error>>(h: &H) -> CaseResult {
    let log = XenLog::new(h);
    let before = match log.end_index() {
        Ok(index) => index,
        Err(e) => fail!("end_index: {e}"),
    };
    let mut line = Line {
        bytes: [0; 64],
        len: 0,
    };
    if writeln!(line, "xen-console guest read-back {before:#x}").is_err() {
        fail!("line too long");
    }
    let line = &line.bytes[..line.len];
    if let Err(e) = HypervisorConsole::new(h).write_all(line) {
        fail!("CONSOLEIO_write: {e}");
    }
    let mut buf = [0u8; 512];
    match log.read_into(&mut buf, Some(before)) {
        Ok(r) if buf[..r.count].windows(line.len()).any(|x| x == line) => Ok(()),
        Ok(r) => fail!("line not in the {} bytes after index {before}", r.count),
        Err(e) => fail!("readconsole: {e}"),
    }
}

/// How long the guest waits for the runner's line.
const INPUT_WAIT_NS: u64 = 30_000_000_000;

/// `VIRQ_CONSOLE`'s port, waited on with `SCHEDOP_poll` until a deadline.
struct VirqWait<'a, H> {
    h: &'a H,
    shared: SharedInfo,
    port: Port,
    deadline: u64,
}

impl<H> Channel for VirqWait<'_, H> {
    type Error = Error;
}

impl<H: XenHypercall<Error = Error>> Wait for VirqWait<'_, H> {
    fn wait(&mut self) -> Result<Wake, Error> {
        // SCHEDOP_poll returns at once if the port is pending: an event that came
        // after the input was looked at is not lost. Cleared after, so the next
        // wait sleeps until the next event.
        self.h
            .poll(&[self.port], Some(Deadline::from_nanos(self.deadline)))?;
        let event = self.shared.is_pending(self.port);
        self.shared.clear_pending(self.port);
        Ok(if event || self.shared.system_time_ns() < self.deadline {
            Wake::Event
        } else {
            Wake::TimedOut
        })
    }
}

/// Binds `VIRQ_CONSOLE`, asks the runner for a line ([`INPUT_PROMPT`]) and reads it.
pub(crate) fn input<H: XenHypercall<Error = Error>>(
    h: &H,
    reporter: &mut GuestReporter<'_, H>,
    shared: SharedInfo,
) -> CaseResult {
    let port = h.evtchn_bind_virq(Virq::CONSOLE, 0)?;
    let result = read_line(h, reporter, shared, port);
    h.evtchn_close(port)?;
    result
}

fn read_line<H: XenHypercall<Error = Error>>(
    h: &H,
    reporter: &mut GuestReporter<'_, H>,
    shared: SharedInfo,
    port: Port,
) -> CaseResult {
    let channel = VirqWait {
        h,
        shared,
        port,
        deadline: shared.system_time_ns().saturating_add(INPUT_WAIT_NS),
    };
    let mut input = HypervisorConsole::new(h).input(channel);
    // Nothing is typed before the prompt; drop whatever is (a stray byte).
    let mut stale = [0; 128];
    while input.try_read(&mut stale)? > 0 {}
    reporter.out(format_args!("{INPUT_PROMPT}"));
    let mut line = [0u8; 64];
    let mut len = 0;
    for byte in &mut input {
        match byte {
            Ok(b'\r' | b'\n') => break,
            Ok(byte) if len < line.len() => {
                line[len] = byte;
                len += 1;
            }
            Ok(_) => fail!("more than {} bytes without a line end", line.len()),
            Err(InputError::TimedOut) => fail!(
                "no line end within {} s; read {:?}",
                INPUT_WAIT_NS / 1_000_000_000,
                line[..len].escape_ascii()
            ),
            Err(e) => return Err(Fail::new(format_args!("{e}"))),
        }
    }
    if &line[..len] != INPUT_LINE.as_bytes() {
        fail!(
            "read {:?}, typed {INPUT_LINE:?}",
            line[..len].escape_ascii()
        );
    }
    Ok(())
}
