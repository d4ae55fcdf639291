//! Xen's consoles through `xen-console`, without an allocator: a line written to the hypervisor
//! console is read back from Xen's log ring (Xen runs with `console_to_ring`), from the index
//! taken before the write.

use core::fmt::Write as _;

use xen_console::{HypervisorConsole, XenLog};
use xen_hypercall::{Error, XenHypercall};

use crate::cases::{CaseResult, GuestReporter, fail};

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
