//! The dom0 stress (`xen-dom0-tests stress`): its cases and the lines it prints for each measure.
//!
//! - `stress <measure> events=N lost=N leaked=N [more fields]`: one per stress case (without its
//!   `stress_` prefix); the case passes only with `lost=0` and `leaked=0`.
//! - `scale evtchn ports=N roundtrip_ns=T` and `scale store watches=N read_ns=T`: how cost grows,
//!   measures (the `scale_*` cases fail only when the cost grows absurdly).

/// The cases, in the order they are reported.
pub const CASES: &[&str] = &[
    "stress_evtchn_waiters",
    "stress_evtchn_bind_unbind",
    "stress_evtchn_events_stream",
    "stress_evtchn_sync_threads",
    "stress_store_in_flight_1",
    "scale_evtchn",
    "scale_store",
];

/// What starts a stress measure's line.
pub const STRESS_PREFIX: &str = "stress ";
/// What starts a scale measure's line.
pub const SCALE_PREFIX: &str = "scale ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_valid_and_distinct() {
        for (index, name) in CASES.iter().enumerate() {
            assert!(crate::is_valid_case_name(name), "{name}");
            assert!(!CASES[..index].contains(name), "{name} twice");
        }
    }
}
