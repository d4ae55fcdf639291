//! The grant phase of the exchange, after the domU ended access to its first page (step 7,
//! before it powers off): dom0 grants the domU a page through gntalloc and the domU maps it,
//! 1 MiB is grant-copied both ways, a page dom0 maps with an unmap notification is released by
//! a process exiting, and references the domU revoked or granted elsewhere are refused.
//!
//! 1. The domU allocates two unbound ports for dom0, [`PORT`] (this phase's doorbell) and
//!    [`NOTIFY_PORT`]; grants dom0 [`COPY_PAGES`] pages filled with [`copy_pattern`]`(`
//!    [`DOMU_SEED`]`, ..)` ([`COPY_REFS`], space-separated) and a page whose byte
//!    [`NOTIFY_OFFSET`] and its neighbours are [`NOTIFY_MARK`] ([`NOTIFY_REF`]); grants a page and
//!    ends the access ([`REVOKED_REF`]); grants a page to [`OTHER_DOMAIN`] ([`OTHER_DOMAIN_REF`]);
//!    writes [`READY`] = `1` and waits for an event on [`PORT`].
//! 2. dom0 binds [`PORT`], shares a page with the domU through gntalloc holding
//!    [`super::DOM0_TEXT`] (its reference at [`DOM0_REF`]), grant-copies the 1 MiB out (checking
//!    the domU's pattern) and [`copy_pattern`]`(`[`DOM0_SEED`]`, ..)` in, fails to map the revoked,
//!    the other domain's and a reference past the table, and runs a child process that maps the
//!    notify page through gntdev with `SET_UNMAP_NOTIFY` (clear byte [`NOTIFY_OFFSET`], signal
//!    [`NOTIFY_PORT`], which the child binds) and exits without unmapping. Then it notifies.
//! 3. The domU maps [`DOM0_REF`] with `GNTTABOP_map_grant_ref`, checks [`super::DOM0_TEXT`],
//!    writes [`super::DOMU_TEXT`] at [`super::DOM0_TEXT_OFFSET`]; checks the copied 1 MiB byte by
//!    byte and ends access to it; sees byte [`NOTIFY_OFFSET`] cleared, its neighbours not, and
//!    the event on [`NOTIFY_PORT`], and ends access to the page; notifies.
//! 4. dom0 sees the domU's text in the shared page and notifies; the domU unmaps it.

/// This phase's port (decimal): each side notifies it when its step is done.
pub const PORT: &str = "data/grant/port";
/// The port the unmap notification signals (decimal).
pub const NOTIFY_PORT: &str = "data/grant/notify-port";
/// The page dom0 maps with an unmap notification (decimal reference).
pub const NOTIFY_REF: &str = "data/grant/notify-ref";
/// The byte of the notify page that the notification clears.
pub const NOTIFY_OFFSET: usize = 100;
/// What the domU writes at [`NOTIFY_OFFSET`] and the bytes either side of it.
pub const NOTIFY_MARK: u8 = 0xa5;
/// The pages dom0 grant-copies (decimal references, space-separated, in order).
pub const COPY_REFS: &str = "data/grant/copy-refs";
/// How many pages are copied: 1 MiB.
pub const COPY_PAGES: usize = 256;
/// A reference whose access the domU ended before publishing it.
pub const REVOKED_REF: &str = "data/grant/revoked-ref";
/// A reference the domU granted to [`OTHER_DOMAIN`], not to dom0.
pub const OTHER_DOMAIN_REF: &str = "data/grant/other-domain-ref";
/// A domain id that no domain of the testbed has.
pub const OTHER_DOMAIN: u16 = 0x7fef;
/// `1` once every key above is written.
pub const READY: &str = "data/grant/ready";
/// The reference of the page dom0 shares with the domU through gntalloc (decimal).
pub const DOM0_REF: &str = "data/grant/dom0-ref";
/// The seed of what the domU puts in the copied pages.
pub const DOMU_SEED: u8 = 0x3c;
/// The seed of what dom0 copies into them.
pub const DOM0_SEED: u8 = 0xc3;

/// Byte `index` of the copied 1 MiB: differs between pages and within them.
pub const fn copy_pattern(seed: u8, index: usize) -> u8 {
    (index as u8).wrapping_mul(7) ^ ((index >> 12) as u8).wrapping_mul(151) ^ seed
}

/// The [`Digest`](crate::bulk::Digest) of `bytes`: what both sides print of the copied 1 MiB.
pub fn digest(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut digest = crate::bulk::Digest::new();
    for byte in bytes {
        digest.update(&[byte]);
    }
    digest.value()
}

/// The digest of [`copy_pattern`]`(seed, ..)` over the 1 MiB.
pub fn pattern_digest(seed: u8) -> u64 {
    digest((0..COPY_PAGES * 4096).map(|index| copy_pattern(seed, index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_tell_pages_and_seeds_apart() {
        assert_ne!(
            copy_pattern(DOMU_SEED, 5),
            copy_pattern(DOMU_SEED, 5 + 4096)
        );
        if cfg!(miri) {
            // The whole 1 MiB takes minutes under Miri: its first page.
            let first_page = |seed| digest((0..4096).map(|index| copy_pattern(seed, index)));
            assert_ne!(first_page(DOMU_SEED), first_page(DOM0_SEED));
        } else {
            assert_ne!(pattern_digest(DOMU_SEED), pattern_digest(DOM0_SEED));
        }
        assert_eq!(digest(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(NOTIFY_MARK, 0);
    }
}
