//! A case's failure message and the `fail!` shorthand, shared by every guest.

use core::fmt::{self, Write};

use xen_hypercall::Error;

/// A case's failure message, formatted without allocation (truncated at 120 bytes (clippy's `result_large_err` limit is 128)).
pub(crate) struct Fail {
    len: u8,
    bytes: [u8; 120],
}

impl Fail {
    pub(crate) fn new(args: fmt::Arguments<'_>) -> Self {
        let mut fail = Self {
            len: 0,
            bytes: [0; 120],
        };
        let _ = fail.write_fmt(args);
        fail
    }
}

impl Write for Fail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0; 4];
            let encoded = c.encode_utf8(&mut utf8).as_bytes();
            let start = usize::from(self.len);
            let end = start + encoded.len();
            if end > self.bytes.len() {
                return Err(fmt::Error);
            }
            self.bytes[start..end].copy_from_slice(encoded);
            self.len = end as u8;
        }
        Ok(())
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only whole UTF-8 characters are ever written.
        f.write_str(core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?"))
    }
}

impl From<Error> for Fail {
    fn from(error: Error) -> Self {
        Self::new(format_args!("{error}"))
    }
}

macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::fail::Fail::new(format_args!($($arg)*)))
    };
}
#[cfg_attr(target_arch = "aarch64", allow(unused_imports))]
pub(crate) use fail;

pub(crate) type CaseResult = Result<(), Fail>;
