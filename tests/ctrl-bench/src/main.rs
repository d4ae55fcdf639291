//! The dom0 side of `cargo xtask bench ctrl`.
//!
//! Runs, in one boot, several rounds of four measures, each through `xen-ctrl` / privcmd's
//! foreign mappings (in this process) and through libxenctrl / libxenforeignmemory (the C
//! program `libxenctrl-bench`, started as a child for each measurement), the order rotating
//! each round:
//!
//! - `list`: `getdomaininfolist` of every domain (`XenCtrl::domain_list` into 16 slots;
//!   `xc_domain_getinfolist` of 16);
//! - `map_1`, `map_64`, `map_1024`: map then unmap that many pages (`Privcmd::map_foreign`;
//!   `xenforeignmemory_map` + `_unmap`), each a mapping of this domain's shared info frame
//!   (`DOMID_SELF`), with a per-page error array.
//!
//! Every measurement prints one line, which the host turns into the table:
//! `XENTEST OUT bench-run impl=<libxenctrl|ours> measure=<measure> iterations=<n> ns=<total>`.
//! The run is reported as the case `bench_ctrl`, then `XENTEST DONE`.
//!
//! Usage: `ctrl-bench <path of libxenctrl-bench> [rounds] [iterations]`.

use std::process::{Command, ExitCode};
use std::time::Instant;

use xen_ctrl::{DomainInfo, XenCtrl};
use xen_hypercall::DomId;
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::{Reporter, Stdout};

const MEASURES: [&str; 4] = ["list", "map_1", "map_64", "map_1024"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(c_bench) = args.get(1) else {
        eprintln!("usage: ctrl-bench <libxenctrl-bench> [rounds] [iterations]");
        return ExitCode::from(2);
    };
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let iterations: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut reporter = Reporter::new(Stdout);
    reporter.case("bench_ctrl", run(c_bench, rounds, iterations));
    ExitCode::from(reporter.done().exit_code())
}

/// How many times a measure runs: larger mappings run fewer times.
fn iterations_of(measure: &str, iterations: u64) -> u64 {
    match measure {
        "map_64" => (iterations / 8).max(5),
        "map_1024" => (iterations / 64).max(5),
        _ => iterations,
    }
}

fn run(c_bench: &str, rounds: usize, iterations: u64) -> Result<(), String> {
    let ctrl = XenCtrl::new(Privcmd::open().map_err(|e| e.to_string())?);
    let frame = ctrl
        .domain_info(DomId(0))
        .map_err(|e| format!("getdomaininfo 0: {e}"))?
        .shared_info_frame;
    for round in 0..rounds {
        for measure in MEASURES {
            let n = iterations_of(measure, iterations);
            for i in 0..2 {
                if (round + i) % 2 == 0 {
                    time_ours(&ctrl, measure, frame, n)?;
                } else {
                    let status = Command::new(c_bench)
                        .args([measure, &n.to_string(), &format!("{frame:#x}")])
                        .status()
                        .map_err(|e| format!("running {c_bench}: {e}"))?;
                    if !status.success() {
                        return Err(format!("{c_bench} {measure} failed: {status}"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Warms up with a tenth of the iterations, then times `n` of `measure`.
fn time_ours(ctrl: &XenCtrl<Privcmd>, measure: &str, frame: u64, n: u64) -> Result<(), String> {
    let pages: usize = measure
        .strip_prefix("map_")
        .map_or(0, |p| p.parse().unwrap_or(0));
    let frames = vec![frame; pages];
    let mut slots = [DomainInfo::default(); 16];
    let once = |slots: &mut [DomainInfo]| -> Result<(), String> {
        if pages == 0 {
            let got = ctrl
                .domain_list(DomId(0), slots)
                .map_err(|e| format!("getdomaininfolist: {e}"))?;
            if got == 0 {
                return Err("no domains".into());
            }
        } else {
            let mapping = ctrl
                .hypercall()
                .map_foreign(DomId::SELF, &frames)
                .map_err(|e| format!("map: {e}"))?;
            if mapping.all().is_none() {
                return Err(format!("page errors: {:?}", &mapping.errors()[..1]));
            }
        }
        Ok(())
    };
    for _ in 0..n / 10 + 1 {
        once(&mut slots)?;
    }
    let start = Instant::now();
    for _ in 0..n {
        once(&mut slots)?;
    }
    let ns = start.elapsed().as_nanos();
    println!("XENTEST OUT bench-run impl=ours measure={measure} iterations={n} ns={ns}");
    Ok(())
}
