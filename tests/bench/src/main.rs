//! The dom0 side of `cargo xtask bench privcmd`.
//!
//! Runs, in one boot, several interleaved rounds of: the floor and libxencall
//! (the C program `libxencall-bench`, started as a child for each measurement)
//! and the privcmd backend through the typed wrappers (in this process), for
//! three hypercalls:
//!
//! - `version`: `xen_version(XENVER_version)`, no buffer;
//! - `extraversion`: `xen_version(XENVER_extraversion)`, one 16-byte out buffer;
//! - `memory_map`: `memory_op(XENMEM_machine_memory_map)`, two buffers: a
//!   `struct xen_memory_map` pointing at an array of e820 entries.
//!
//! `mmap`/`munmap` calls are counted by wrapping them at link time, here
//! (`build.rs`, `os_calls.rs`) as in the C program.
//!
//! Every measurement prints one line, which the host turns into the table:
//! `XENTEST OUT bench-run impl=<floor|libxencall|ours> call=<call> iterations=<n> ns=<total> mmaps=<n> munmaps=<n>`.
//!
//! The run itself is reported as the case `bench_privcmd` (failed if any call
//! failed or returned a wrong result), then `XENTEST DONE`.
//!
//! Usage: `privcmd-bench <path of libxencall-bench> [rounds] [iterations]`.

mod os_calls;

use std::hint::black_box;
use std::process::{Command, ExitCode};
use std::time::Instant;

use xen_hypercall::prelude::*;
use xen_hypercall::{Error, XenMutBuffer};
use xen_hypercall_privcmd::Privcmd;
use xen_testbed_protocol::{Reporter, Stdout};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const CALLS: [&str; 3] = ["version", "extraversion", "memory_map"];
const HYPERVISOR_XEN_VERSION: usize = 17;
const HYPERVISOR_MEMORY_OP: usize = 12;
const XENVER_VERSION: usize = 0;
const XENMEM_MACHINE_MEMORY_MAP: usize = 10;
/// Entries of the e820 array handed to `XENMEM_machine_memory_map` (as in the C program).
const MAP_ENTRIES: usize = 32;

/// `struct xen_memory_map` (`public/memory.h`) on x86_64.
#[derive(FromBytes, IntoBytes, Immutable, Default)]
#[repr(C)]
struct MemoryMap {
    nr_entries: u32,
    _pad: u32,
    buffer: u64,
}

/// `struct e820entry`: 20 packed bytes.
type E820Entry = [u8; 20];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(c_bench) = args.get(1) else {
        eprintln!("usage: privcmd-bench <libxencall-bench> [rounds] [iterations]");
        return ExitCode::from(2);
    };
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let iterations: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut reporter = Reporter::new(Stdout);
    reporter.case("bench_privcmd", run(c_bench, rounds, iterations));
    ExitCode::from(reporter.done().exit_code())
}

fn run(c_bench: &str, rounds: usize, iterations: u64) -> Result<(), String> {
    let privcmd = Privcmd::open().map_err(|e| format!("opening privcmd: {e}"))?;
    // SAFETY: xen_version(XENVER_version) takes no memory.
    let expected = unsafe { privcmd.hypercall2(HYPERVISOR_XEN_VERSION, [XENVER_VERSION, 0]) }
        .map_err(|e| format!("xen_version: {e}"))?;
    let implementations = ["floor", "libxencall", "ours"];
    for round in 0..rounds {
        for call in CALLS {
            // Rotate who goes first, so that no implementation always follows another.
            for i in 0..implementations.len() {
                match implementations[(round + i) % implementations.len()] {
                    "ours" => time_ours(&privcmd, call, iterations, expected)?,
                    imp => {
                        let status = Command::new(c_bench)
                            .args([imp, call, &iterations.to_string()])
                            .status()
                            .map_err(|e| format!("running {c_bench}: {e}"))?;
                        if !status.success() {
                            return Err(format!("{c_bench} {imp} {call} failed: {status}"));
                        }
                    }
                }
            }
        }
    }
    // Non-zero: the wrappers do see this process's calls (start-up, first buffers).
    let (mmaps, munmaps) = os_calls::counts();
    println!(
        "XENTEST OUT privcmd-bench process: {mmaps} mmap and {munmaps} munmap calls in all, start-up and warm-up included"
    );
    Ok(())
}

/// Warms up, then times `iterations` calls of `call` through this backend.
fn time_ours(h: &Privcmd, call: &str, iterations: u64, expected: usize) -> Result<(), String> {
    let run: fn(&Privcmd, u64, usize) -> Result<(), String> = match call {
        "version" => version,
        "extraversion" => extraversion,
        _ => memory_map,
    };
    run(h, iterations / 10 + 1, expected)?;
    let (stats, calls) = (h.buffer_stats(), os_calls::counts());
    let start = Instant::now();
    run(h, iterations, expected)?;
    let ns = start.elapsed().as_nanos();
    let (stats_after, calls_after) = (h.buffer_stats(), os_calls::counts());
    let (mmaps, munmaps) = (calls_after.0 - calls.0, calls_after.1 - calls.1);
    // The backend's own counters must agree with the calls counted at link time.
    if (mmaps, munmaps)
        != (
            stats_after.mmaps - stats.mmaps,
            stats_after.munmaps - stats.munmaps,
        )
    {
        return Err(format!(
            "{call}: {mmaps} mmaps and {munmaps} munmaps, but buffer_stats went from {stats:?} to {stats_after:?}"
        ));
    }
    println!(
        "XENTEST OUT bench-run impl=ours call={call} iterations={iterations} ns={ns} mmaps={mmaps} munmaps={munmaps}"
    );
    Ok(())
}

fn failed(what: &str) -> impl Fn(Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// `xen_version(XENVER_version)` through the typed wrapper, `n` times, each result checked.
fn version(h: &Privcmd, n: u64, expected: usize) -> Result<(), String> {
    for _ in 0..n {
        let v = h.xen_version().map_err(failed("xen_version"))?;
        if (usize::from(v.major) << 16 | usize::from(v.minor)) != expected {
            return Err(format!("xen_version gave {v}, expected {expected:#x}"));
        }
    }
    Ok(())
}

/// `xen_version(XENVER_extraversion)` through the typed wrapper (a 16-byte out
/// buffer), `n` times.
fn extraversion(h: &Privcmd, n: u64, _: usize) -> Result<(), String> {
    for _ in 0..n {
        let extra = h.extraversion().map_err(failed("extraversion"))?;
        if extra.is_empty() {
            return Err("empty extraversion".into());
        }
        black_box(&extra);
    }
    Ok(())
}

/// `memory_op(XENMEM_machine_memory_map)`: a `xen_memory_map` pointing at an
/// array of e820 entries, both in buffers, `n` times. `xen-hypercall` has no
/// typed wrapper for it: this is what one would do, through the trait.
fn memory_map(h: &Privcmd, n: u64, _: usize) -> Result<(), String> {
    for _ in 0..n {
        let mut entries = [E820Entry::default(); MAP_ENTRIES];
        let mut map = MemoryMap {
            nr_entries: MAP_ENTRIES as u32,
            ..MemoryMap::default()
        };
        {
            let mut entries_buf = h
                .make_mut_buffer(&mut entries[..])
                .map_err(failed("buffer"))?;
            map.buffer = entries_buf.as_hypercall_ptr().cast::<u8>().addr() as u64;
            let mut map_buf = h.make_mut_buffer(&mut map).map_err(failed("buffer"))?;
            let ptr = map_buf.as_hypercall_ptr();
            // SAFETY: XENMEM_machine_memory_map (public/memory.h) reads the
            // `xen_memory_map` at `ptr`, writes at most `nr_entries` 20-byte
            // entries at its `buffer` (`entries_buf`, live, MAP_ENTRIES long)
            // and writes back `nr_entries`.
            unsafe {
                h.hypercall2(
                    HYPERVISOR_MEMORY_OP,
                    [XENMEM_MACHINE_MEMORY_MAP, ptr.addr()],
                )
            }
            .map_err(failed("machine_memory_map"))?;
        }
        if map.nr_entries == 0 || map.nr_entries as usize > MAP_ENTRIES {
            return Err(format!(
                "machine_memory_map gave {} entries",
                map.nr_entries
            ));
        }
        black_box(&entries);
    }
    Ok(())
}
