//! Bulk console data: what a domU writes through its console ring to prove that large writes
//! arrive intact (and to time them), and the digest both sides compute of it.
//!
//! The data is a run of [`LINE_LEN`]-byte lines, each starting with [`PREFIX`], which no protocol
//! line starts with: dom0 forwards a domU's console to the serial line without them. Line `i` is
//! `~` followed by `i` in 16 hex digits, a space, printable filler that depends on `i`, and `\n`.
//!
//! Once its console ring is drained, the domU reports what it wrote as
//! `XENTEST OUT console-bulk <bytes> <digest>` ([`WRITTEN`], the digest in 16 hex digits): dom0
//! finds that line in xenconsoled's log even after the domain is gone. Dom0 writes
//! `<rounds> <bytes>` at [`BENCH`] (under the domU's home) before it unpauses a domU that is to
//! time its console ring instead of running the exchange.

/// The first byte of every bulk line.
pub const PREFIX: u8 = b'~';
/// The length of every bulk line, newline included.
pub const LINE_LEN: usize = 64;
/// How many bytes the domU of the cross-domain exchange writes: 1 MiB.
pub const EXCHANGE_BYTES: usize = 1 << 20;
/// What starts the `XENTEST OUT` text with which the domU reports `<bytes> <digest>` once its
/// bulk data left the ring.
pub const WRITTEN: &str = "console-bulk";
/// Dom0 writes `<rounds> <bytes>` here for a console ring benchmark domU.
pub const BENCH: &str = "data/console-bench";
/// The write sizes a benchmark domU times, in its order.
pub const BENCH_WRITE_SIZES: [usize; 3] = [1, 64, 4096];
/// What a benchmark domU prints (as `XENTEST OUT`) right before its first timed byte.
pub const BENCH_START: &str = "console-bench start";

/// Line `index` of the bulk data.
pub fn line(index: u64) -> [u8; LINE_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut line = [0; LINE_LEN];
    line[0] = PREFIX;
    for (digit, byte) in line[1..17].iter_mut().enumerate() {
        *byte = HEX[((index >> (60 - 4 * digit)) & 0xf) as usize];
    }
    line[17] = b' ';
    for (offset, byte) in line[18..LINE_LEN - 1].iter_mut().enumerate() {
        // Printable ASCII from '!' to '}', shifted by the line number.
        *byte = b'!' + ((index as usize + offset) % 93) as u8;
    }
    line[LINE_LEN - 1] = b'\n';
    line
}

/// Fills `buf` with the bulk data from byte `offset` on.
pub fn fill(buf: &mut [u8], offset: u64) {
    let mut at = offset;
    let mut rest = buf;
    while !rest.is_empty() {
        let line = line(at / LINE_LEN as u64);
        let start = (at % LINE_LEN as u64) as usize;
        let n = (LINE_LEN - start).min(rest.len());
        rest[..n].copy_from_slice(&line[start..start + n]);
        rest = &mut rest[n..];
        at += n as u64;
    }
}

/// FNV-1a (64 bits) over bytes fed in any pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl Digest {
    /// The digest of nothing.
    pub const fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The digest so far.
    pub const fn value(&self) -> u64 {
        self.0
    }
}

/// Parses the `<bytes> <digest>` after [`WRITTEN`]: `(bytes, digest)`.
pub fn parse_written(value: &str) -> Option<(u64, u64)> {
    let (bytes, digest) = value.trim().split_once(' ')?;
    Some((bytes.parse().ok()?, u64::from_str_radix(digest, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_printable_numbered_and_fill_matches_them() {
        let first = line(0x1234);
        assert_eq!(&first[..18], b"~0000000000001234 ");
        assert_eq!(first[LINE_LEN - 1], b'\n');
        assert!(
            first[..LINE_LEN - 1]
                .iter()
                .all(|b| b.is_ascii_graphic() || *b == b' ')
        );
        let mut buf = [0; 3 * LINE_LEN];
        fill(&mut buf[..5], 0);
        fill(&mut buf[5..], 5);
        assert_eq!(&buf[..LINE_LEN], &line(0));
        assert_eq!(&buf[2 * LINE_LEN..], &line(2));
    }

    #[test]
    fn digest_is_fnv1a_in_any_pieces() {
        let mut whole = Digest::new();
        whole.update(b"a");
        assert_eq!(whole.value(), 0xaf63_dc4c_8601_ec8c);
        let mut pieces = Digest::new();
        pieces.update(b"hel");
        pieces.update(b"lo");
        let mut once = Digest::new();
        once.update(b"hello");
        assert_eq!(pieces, once);
        assert_eq!(
            parse_written("1048576 00000000000000ff\n"),
            Some((1 << 20, 255))
        );
        assert_eq!(parse_written("1048576"), None);
    }
}
