//! `cargo xtask testbed` and `cargo xtask demo`: thin wrappers over the `xen-testbed` runner.

use std::path::PathBuf;

use xen_testbed::scenario::{Options, select};
use xen_testbed::{Testbed, run_scenarios, scenarios};

const USAGE: &str = "\
usage: cargo xtask testbed [--list] [--self-test] [SCENARIO...]

Boots Xen 4.17 under QEMU for each scenario (all by default) and runs its payload.
  --list       list the scenarios
  --self-test  only the harness self-tests (broken payloads that must be reported as failing)";

pub(crate) fn run(args: &[String]) -> crate::Result {
    let mut options = Options::default();
    for arg in args {
        match arg.as_str() {
            "--list" => {
                for scenario in scenarios() {
                    println!("{:24} {}", scenario.name, scenario.about);
                }
                return Ok(());
            }
            "--self-test" => options.self_test = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}`\n{USAGE}"));
            }
            name => options.names.push(name.to_string()),
        }
    }
    let selected = select(&options).map_err(|e| e.to_string())?;
    let summary = run_scenarios(&testbed(), &selected).map_err(|e| e.to_string())?;
    if summary.failed == 0 {
        Ok(())
    } else {
        Err(format!("testbed: {} failed", summary.failed))
    }
}

pub(crate) fn demo(args: &[String]) -> crate::Result {
    if !args.is_empty() {
        return Err("usage: cargo xtask demo".into());
    }
    if xen_testbed::scenario::demo(&testbed()).map_err(|e| e.to_string())? {
        Ok(())
    } else {
        Err("demo: a run failed (see above)".into())
    }
}

/// The testbed over this workspace and cargo's target directory.
pub(crate) fn testbed() -> Testbed {
    let root = crate::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"));
    Testbed::new(root, target)
}
