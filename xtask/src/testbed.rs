//! `cargo xtask testbed` (being written).

pub(crate) fn run(_args: &[String]) -> crate::Result {
    Err("`testbed` is not written yet".into())
}

pub(crate) fn demo(_args: &[String]) -> crate::Result {
    Err("`demo` is not written yet".into())
}
