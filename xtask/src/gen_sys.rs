//! `cargo xtask gen_sys` (being written).

pub(crate) fn run(_args: &[String]) -> crate::Result {
    Err("`gen_sys` is not written yet".into())
}
