//! `cargo xtask test`: the full test suite, as CI runs it.

use crate::{cargo, run_command};

pub(crate) fn run(_args: &[String]) -> crate::Result {
    run_command(cargo().args(["fmt", "--all", "--check"]))?;
    run_command(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_command(cargo().args(["test", "--workspace", "--all-features"]))?;
    Ok(())
}
