//! The dom0 side of `cargo xtask bench grant`.
//!
//! Runs, in one boot, several rounds of three measures, each through
//! `xen-grant` (in this process) and through libxengnttab (the C program
//! `libxengnttab-bench`, started as a child for each measurement), the order
//! rotating each round:
//!
//! - `map_unmap`: map one page this domain granted itself through gntdev, then
//!   unmap it;
//! - `copy_4k`: a grant copy of one granted page into local memory;
//! - `copy_1m`: a grant copy of 256 granted pages (1 MiB) into local memory.
//!
//! Each side shares its own pages with its own domain first (gntalloc), not timed.
//! Every measurement prints one line, which the host turns into the table:
//! `XENTEST OUT bench-run impl=<libxengnttab|ours> measure=<measure> iterations=<n> ns=<total>`.
//! The run is reported as the case `bench_grant`, then `XENTEST DONE`.
//!
//! Usage: `grant-bench <path of libxengnttab-bench> [rounds] [iterations]`.

use std::process::{Command, ExitCode};
use std::time::Instant;

use xen_grant::GrantRef;
use xen_grant::linux::{CopyBatch, CopyDest, CopySegment, CopySource, Gntalloc, Gntdev};
use xen_hypercall::DomId;
use xen_testbed_protocol::{Reporter, Stdout};

const MEASURES: [&str; 3] = ["map_unmap", "copy_4k", "copy_1m"];
const PAGE: usize = 4096;
const MIB_PAGES: usize = 256;
const DOM0: DomId = DomId(0);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(c_bench) = args.get(1) else {
        eprintln!("usage: grant-bench <libxengnttab-bench> [rounds] [iterations]");
        return ExitCode::from(2);
    };
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let iterations: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mut reporter = Reporter::new(Stdout);
    reporter.case("bench_grant", run(c_bench, rounds, iterations));
    ExitCode::from(reporter.done().exit_code())
}

/// How many times a measure runs: the 1 MiB copy moves 256 times the bytes.
fn iterations_of(measure: &str, iterations: u64) -> u64 {
    if measure == "copy_1m" {
        (iterations / 32).max(5)
    } else {
        iterations
    }
}

fn run(c_bench: &str, rounds: usize, iterations: u64) -> Result<(), String> {
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let one = gntalloc.share(DOM0, 1, false).map_err(|e| e.to_string())?;
    let mib = gntalloc
        .share(DOM0, MIB_PAGES, false)
        .map_err(|e| e.to_string())?;
    for round in 0..rounds {
        for measure in MEASURES {
            let n = iterations_of(measure, iterations);
            for i in 0..2 {
                if (round + i) % 2 == 0 {
                    let grefs = if measure == "copy_1m" {
                        mib.grefs()
                    } else {
                        one.grefs()
                    };
                    time_ours(&gntdev, measure, grefs, n)?;
                } else {
                    let status = Command::new(c_bench)
                        .args([measure, &n.to_string()])
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
fn time_ours(gntdev: &Gntdev, measure: &str, grefs: &[GrantRef], n: u64) -> Result<(), String> {
    let mut local = vec![0u8; grefs.len() * PAGE];
    let mut segments: Vec<CopySegment<'_>> = local
        .chunks_mut(PAGE)
        .zip(grefs)
        .map(|(chunk, &gref)| CopySegment {
            source: CopySource::Grant {
                domid: DOM0,
                gref,
                offset: 0,
            },
            dest: CopyDest::Local(chunk),
            len: PAGE as u16,
        })
        .collect();
    // Prepared once, as the C program prepares its segments once.
    let mut batch = CopyBatch::new(&mut segments).map_err(|e| format!("copy: {e}"))?;
    let once = |batch: &mut CopyBatch<'_>| -> Result<(), String> {
        if measure == "map_unmap" {
            let mapping = gntdev
                .map(DOM0, &grefs[..1], false)
                .map_err(|e| format!("map: {e}"))?;
            mapping.unmap().map_err(|e| format!("unmap: {e}"))
        } else {
            gntdev.copy_batch(batch).map_err(|e| format!("copy: {e}"))
        }
    };
    for _ in 0..n / 10 + 1 {
        once(&mut batch)?;
    }
    let start = Instant::now();
    for _ in 0..n {
        once(&mut batch)?;
    }
    let ns = start.elapsed().as_nanos();
    println!("XENTEST OUT bench-run impl=ours measure={measure} iterations={n} ns={ns}");
    Ok(())
}
