//! The xenstore part of the cross-domain exchange, after the grant and event-channel steps:
//! a watch over the domU's ring that fires on dom0's write, and the daemon's permission checks.
//!
//! 1. The domU watches [`DOM0_SAYS`] (a path relative to its home), takes the event xenstored
//!    sends when a watch is set, and writes [`WATCHING`] = `1`.
//! 2. dom0 waits for [`WATCHING`] and writes [`DOM0_SAYS_VALUE`] at [`DOM0_SAYS`] with the
//!    project's client. Nothing later reads the domU's keys: a domU that finishes powers off
//!    and its home is removed at once.
//! 3. The domU receives the event for [`DOM0_SAYS`] with its watch's token, reads and checks
//!    the value, and removes the watch.
//! 4. The domU reads [`DOM0_PRIVATE`] and writes [`OUTSIDE_HOME`]: xenstored refuses both with
//!    `EACCES`. After the domU is gone, dom0 checks with `xenstore-exists` that nothing was written.

/// The key dom0 writes while the domU watches it.
pub const DOM0_SAYS: &str = "data/dom0-says";
/// What dom0 writes at [`DOM0_SAYS`].
pub const DOM0_SAYS_VALUE: &str = "dom0 changed this key";
/// `1` once the domU's watch on [`DOM0_SAYS`] is set.
pub const WATCHING: &str = "data/watching";
/// One of dom0's private keys (dom0's home is readable by dom0 only).
pub const DOM0_PRIVATE: &str = "/local/domain/0/name";
/// A key outside the domU's home, in dom0's, that the domU tries to write.
pub const OUTSIDE_HOME: &str = "/local/domain/0/xentest-from-domu";
/// How long the domU waits for dom0's write.
pub const WATCH_WAIT_SECONDS: u64 = 10;

/// The domU's xenstore cases, reported after `grant_end_access` (in this order).
pub const DOMU_CASES: &[&str] = &[
    "xenstore_watch_sees_dom0_write",
    "xenstore_dom0_key_eacces",
    "xenstore_write_outside_eacces",
];

/// dom0's xenstore cases, reported after `grant_unmap` and after `domu_powered_off`.
pub const DOM0_CASES: &[&str] = &[
    "store_domu_watch_changed",
    "store_domu_wrote_nothing_outside",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_valid_and_distinct_from_the_exchange() {
        for (cases, others) in [
            (DOMU_CASES, super::super::DOMU_CASES),
            (DOM0_CASES, super::super::DOM0_CASES),
        ] {
            for (index, name) in cases.iter().enumerate() {
                assert!(crate::is_valid_case_name(name), "{name}");
                assert!(!cases[..index].contains(name), "{name} twice");
                assert!(!others.contains(name), "{name} in both lists");
            }
        }
        assert!(DOM0_SAYS.starts_with(super::super::DATA));
        assert!(!OUTSIDE_HOME.starts_with("/local/domain/0/data"));
    }
}
