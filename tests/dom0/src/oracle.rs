//! `xen-dom0-tests xl-info`: every `xen_version` field the project's wrappers return, compared with
//! what Debian's `xl info` prints on the same boot (an independent implementation: libxl over
//! libxenctrl).

use std::process::ExitCode;

use xen_hypercall::prelude::*;
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::{Reporter, Stdout};

/// The case this command reports.
pub(crate) const CASE: &str = "xen_version_matches_xl_info";

pub(crate) fn run() -> ExitCode {
    let mut reporter = Reporter::new(Stdout);
    let result = compare(&mut reporter);
    reporter.case(CASE, result);
    ExitCode::from(reporter.done().exit_code())
}

/// The `key : value` lines of `xl info`.
fn xl_info() -> Result<Vec<(String, String)>, String> {
    Ok(crate::run_tool("xl", &["info"])?
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim().to_string(), value.trim().to_string()))
        })
        .collect())
}

fn compare(reporter: &mut Reporter<Stdout>) -> Result<(), String> {
    let privcmd = Privcmd::open().map_err(|e| format!("cannot open privcmd: {e}"))?;
    let call = |what: &str, e: xen_hypercall::Error| format!("{what}: {e}");
    let version = privcmd.xen_version().map_err(|e| call("xen_version", e))?;
    let compile = privcmd
        .compile_info()
        .map_err(|e| call("compile_info", e))?;
    let ours: Vec<(&str, String)> = vec![
        ("xen_major", version.major.to_string()),
        ("xen_minor", version.minor.to_string()),
        (
            "xen_extra",
            privcmd
                .extraversion()
                .map_err(|e| call("extraversion", e))?
                .to_string(),
        ),
        (
            "xen_caps",
            privcmd
                .capabilities()
                .map_err(|e| call("capabilities", e))?
                .to_string(),
        ),
        (
            "xen_changeset",
            privcmd
                .changeset()
                .map_err(|e| call("changeset", e))?
                .to_string(),
        ),
        (
            "xen_commandline",
            privcmd
                .commandline()
                .map_err(|e| call("commandline", e))?
                .to_string(),
        ),
        ("cc_compiler", compile.compiler.to_string()),
        ("cc_compile_by", compile.compile_by.to_string()),
        ("cc_compile_domain", compile.compile_domain.to_string()),
        ("cc_compile_date", compile.compile_date.to_string()),
        (
            "xen_pagesize",
            privcmd
                .pagesize()
                .map_err(|e| call("pagesize", e))?
                .to_string(),
        ),
        (
            "platform_params",
            format!(
                "virt_start={:#x}",
                privcmd
                    .platform_parameters()
                    .map_err(|e| call("platform_parameters", e))?
                    .virt_start
            ),
        ),
        (
            "build_id",
            privcmd
                .build_id()
                .map_err(|e| call("build_id", e))?
                .to_string(),
        ),
    ];
    let theirs = xl_info()?;
    let mut mismatches = Vec::new();
    for (key, value) in &ours {
        match theirs.iter().find(|(k, _)| k == key) {
            Some((_, theirs)) if theirs == value.trim() => {}
            Some((_, theirs)) => mismatches.push(format!("{key}: ours {value:?}, xl {theirs:?}")),
            None => mismatches.push(format!("{key}: not in `xl info`")),
        }
    }
    reporter.out(format_args!(
        "xl info agrees on {} of {} xen_version fields",
        ours.len() - mismatches.len(),
        ours.len()
    ));
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches.join("; "))
    }
}
