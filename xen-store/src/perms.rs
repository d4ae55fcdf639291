//! Node permissions (`n0`, `r1`, `w2`, `b3`): the first entry names the owner, whose access
//! letter is what every domain not listed gets; the owner itself may always read and write.

use alloc::vec::Vec;
use core::fmt;

use xen_hypercall::DomId;

use crate::error::{Error, ProtocolError};

/// What a domain may do with a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    fn letter(self) -> u8 {
        match self {
            Self::None => b'n',
            Self::Read => b'r',
            Self::Write => b'w',
            Self::Both => b'b',
        }
    }

    fn from_letter(letter: u8) -> Option<Self> {
        Some(match letter {
            b'n' => Self::None,
            b'r' => Self::Read,
            b'w' => Self::Write,
            b'b' => Self::Both,
            _ => return None,
        })
    }
}

/// One entry of a node's permission list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// What it may do.
    pub access: Access,
}

impl Perm {
    /// An entry.
    pub const fn new(domid: DomId, access: Access) -> Self {
        Self { domid, access }
    }

    /// Parses one entry as the daemon writes it (`"r1"`).
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if `text` is not an access letter (`n`, `r`, `w`, `b`) followed by a
    /// domain id.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let malformed = || Error::Protocol(ProtocolError::Malformed("permission"));
        let (&letter, digits) = text.split_first().ok_or_else(malformed)?;
        let access = Access::from_letter(letter).ok_or_else(malformed)?;
        let domid = parse_decimal(digits)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(malformed)?;
        Ok(Self::new(DomId(domid), access))
    }

    /// Appends the entry and its NUL terminator.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.access.letter());
        push_decimal(out, u64::from(self.domid.0));
        out.push(0);
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.access.letter() as char, self.domid.0)
    }
}

/// A decimal number of at most 20 digits, without sign or spaces.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (text, perm) in [
            (&b"n0"[..], Perm::new(DomId(0), Access::None)),
            (b"r1", Perm::new(DomId(1), Access::Read)),
            (b"w65535", Perm::new(DomId(65535), Access::Write)),
            (b"b32752", Perm::new(DomId(32752), Access::Both)),
        ] {
            assert_eq!(Perm::parse(text).unwrap(), perm);
            let mut out = Vec::new();
            perm.encode(&mut out);
            assert_eq!(&out[..out.len() - 1], text);
            assert_eq!(out.last(), Some(&0));
        }
    }

    #[test]
    fn malformed_entries_are_typed_errors() {
        for bad in [
            &b""[..],
            b"x1",
            b"r",
            b"r-1",
            b"r65536",
            b"r1 ",
            b"r99999999999999999999999",
        ] {
            assert!(
                matches!(
                    Perm::parse(bad),
                    Err(Error::Protocol(ProtocolError::Malformed("permission")))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decimals() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        push_decimal(&mut out, u64::MAX);
        assert_eq!(out, b"018446744073709551615");
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
    }
}
