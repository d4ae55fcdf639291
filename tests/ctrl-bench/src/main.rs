//! The dom0 side of `cargo xtask bench ctrl`.
//!
//! Runs, in one boot, several rounds of each measure, through `xen-ctrl` / privcmd's foreign
//! mappings (in this process) and through libxenctrl / libxenforeignmemory (the C program
//! `libxenctrl-bench`, started as a child for each measurement), the order rotating each round:
//!
//! - `list_1`, `list_2`, `list_8`: `getdomaininfolist` of every domain, with dom0 alone, then
//!   with one and with seven paused domUs created by `xl create -p` (`XenCtrl::domain_list`
//!   into 16 slots; `xc_domain_getinfolist` of 16); both sides check the count;
//! - `map_1`, `map_64`, `map_1024`: map then unmap that many pages (`Privcmd::map_foreign`;
//!   `xenforeignmemory_map` + `_unmap`), each a mapping of this domain's shared info frame
//!   (`DOMID_SELF`), with a per-page error array;
//! - `resource_1`: map then unmap frame 0 of the first domU's grant table
//!   (`Privcmd::map_resource`; `xenforeignmemory_map_resource` + `_unmap_resource`).
//!
//! Every measurement prints one line, which the host turns into the table:
//! `XENTEST OUT bench-run impl=<libxenctrl|ours> measure=<measure> iterations=<n> ns=<total>`.
//! The run is reported as the case `bench_ctrl`, then `XENTEST DONE`.
//!
//! Usage: `ctrl-bench <path of libxenctrl-bench> <rounds> <iterations> <domU kernel>`.

use std::process::{Command, ExitCode};
use std::time::Instant;

use xen_ctrl::{DomainInfo, XenCtrl};
use xen_hypercall::DomId;
use xen_hypercall_privcmd::{Privcmd, ResourceType};
use xen_testbed_protocol::{Reporter, Stdout};

/// What a measure does, and the C program's third argument for it.
#[derive(Clone, Copy)]
enum Measure {
    /// The domain list, expecting this many domains.
    List(usize),
    /// Map + unmap this many pages of this domain's shared info frame.
    Map(usize),
    /// Map + unmap grant table frame 0 of this domain.
    Resource(DomId),
}

/// How many domUs the 8-domain list adds after the first.
const MORE_DOMUS: u32 = 6;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, c_bench, rounds, iterations, kernel] = args.as_slice() else {
        eprintln!("usage: ctrl-bench <libxenctrl-bench> <rounds> <iterations> <domU kernel>");
        return ExitCode::from(2);
    };
    let rounds: usize = rounds.parse().unwrap_or(5);
    let iterations: u64 = iterations.parse().unwrap_or(2000);
    let mut reporter = Reporter::new(Stdout);
    let mut domus = Vec::new();
    let result = run(c_bench, rounds, iterations, kernel, &mut domus);
    for name in &domus {
        let _ = Command::new("xl").args(["destroy", name]).status();
    }
    reporter.case("bench_ctrl", result);
    ExitCode::from(reporter.done().exit_code())
}

fn run(
    c_bench: &str,
    rounds: usize,
    iterations: u64,
    kernel: &str,
    domus: &mut Vec<String>,
) -> Result<(), String> {
    let ctrl = XenCtrl::new(Privcmd::open().map_err(|e| e.to_string())?);
    let frame = ctrl
        .domain_info(DomId(0))
        .map_err(|e| format!("getdomaininfo 0: {e}"))?
        .shared_info_frame;
    let bench = |measures: &[(&str, Measure)]| -> Result<(), String> {
        for round in 0..rounds {
            for &(name, measure) in measures {
                let n = iterations_of(measure, iterations);
                for i in 0..2 {
                    if (round + i) % 2 == 0 {
                        time_ours(&ctrl, name, measure, frame, n)?;
                    } else {
                        time_c(c_bench, name, measure, frame, n)?;
                    }
                }
            }
        }
        Ok(())
    };
    bench(&[
        ("list_1", Measure::List(1)),
        ("map_1", Measure::Map(1)),
        ("map_64", Measure::Map(64)),
        ("map_1024", Measure::Map(1024)),
    ])?;
    let first = create_domu(kernel, 1, domus)?;
    bench(&[
        ("list_2", Measure::List(2)),
        ("resource_1", Measure::Resource(first)),
    ])?;
    for index in 2..2 + MORE_DOMUS {
        create_domu(kernel, index, domus)?;
    }
    bench(&[("list_8", Measure::List(2 + MORE_DOMUS as usize))])
}

/// Creates a paused PV domU `ctrl-bench-<index>` with `xl create -p`; returns its id.
fn create_domu(kernel: &str, index: u32, domus: &mut Vec<String>) -> Result<DomId, String> {
    let name = format!("ctrl-bench-{index}");
    let config = format!("/tmp/{name}.cfg");
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\ntype = \"pv\"\nkernel = \"{kernel}\"\nmemory = 16\nvcpus = 1\n"
        ),
    )
    .map_err(|e| format!("{config}: {e}"))?;
    let created = Command::new("xl")
        .args(["create", "-p", &config])
        .output()
        .map_err(|e| format!("xl create: {e}"))?;
    if !created.status.success() {
        return Err(format!(
            "xl create {name}: {}",
            String::from_utf8_lossy(&created.stderr).trim()
        ));
    }
    domus.push(name.clone());
    let domid = Command::new("xl")
        .args(["domid", &name])
        .output()
        .map_err(|e| format!("xl domid: {e}"))?;
    let domid = String::from_utf8_lossy(&domid.stdout);
    domid
        .trim()
        .parse()
        .map(DomId)
        .map_err(|e| format!("xl domid {name} printed {domid:?}: {e}"))
}

/// How many times a measure runs: larger mappings run fewer times.
fn iterations_of(measure: Measure, iterations: u64) -> u64 {
    match measure {
        Measure::Map(64) => (iterations / 8).max(5),
        Measure::Map(1024) => (iterations / 64).max(5),
        _ => iterations,
    }
}

fn time_c(c_bench: &str, name: &str, measure: Measure, frame: u64, n: u64) -> Result<(), String> {
    let argument = match measure {
        Measure::List(domains) => domains.to_string(),
        Measure::Map(_) => format!("{frame:#x}"),
        Measure::Resource(domid) => domid.0.to_string(),
    };
    let status = Command::new(c_bench)
        .args([name, &n.to_string(), &argument])
        .status()
        .map_err(|e| format!("running {c_bench}: {e}"))?;
    if !status.success() {
        return Err(format!("{c_bench} {name} failed: {status}"));
    }
    Ok(())
}

/// Warms up with a tenth of the iterations, then times `n` of `measure`.
fn time_ours(
    ctrl: &XenCtrl<Privcmd>,
    name: &str,
    measure: Measure,
    frame: u64,
    n: u64,
) -> Result<(), String> {
    let frames = match measure {
        Measure::Map(pages) => vec![frame; pages],
        _ => Vec::new(),
    };
    let mut slots = [DomainInfo::default(); 16];
    let mut once = || -> Result<(), String> {
        match measure {
            Measure::List(domains) => {
                let got = ctrl
                    .domain_list(DomId(0), &mut slots)
                    .map_err(|e| format!("getdomaininfolist: {e}"))?;
                if got != domains {
                    return Err(format!("{got} domains listed, expected {domains}"));
                }
            }
            Measure::Map(_) => {
                let mapping = ctrl
                    .hypercall()
                    .map_foreign(DomId::SELF, &frames)
                    .map_err(|e| format!("map: {e}"))?;
                if mapping.all().is_none() {
                    return Err(format!("page errors: {:?}", &mapping.errors()[..1]));
                }
            }
            Measure::Resource(domid) => {
                ctrl.hypercall()
                    .map_resource(domid, ResourceType::GRANT_TABLE, 0, 0, 1)
                    .map_err(|e| format!("map_resource: {e}"))?;
            }
        }
        Ok(())
    };
    for _ in 0..n / 10 + 1 {
        once()?;
    }
    let start = Instant::now();
    for _ in 0..n {
        once()?;
    }
    let ns = start.elapsed().as_nanos();
    println!("XENTEST OUT bench-run impl=ours measure={name} iterations={n} ns={ns}");
    Ok(())
}
