//! `cargo xtask bench` (being written).

pub(crate) fn run(_args: &[String]) -> crate::Result {
    Err("`bench` is not written yet".into())
}
