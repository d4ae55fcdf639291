//! The userspace block backend's run ([`blkback`]): a Linux PV domU (the release's own
//! kernel, [`linux_domu`]) whose xen-blkfront is served a hot-plugged disk by xen-blk's backend
//! in dom0 (`xen-dom0-tests blkback`). One boot holds every case: attach, pattern, filesystem,
//! detach idle, detach during reads, and with `bench_rounds` the benchmark against blkback.

use std::path::PathBuf;
use std::time::Duration;

use xen_testbed_protocol::exchange::blkback;

use crate::artifacts::Artifacts;
use crate::initramfs::Preamble;
use crate::scenario::DOM0_TESTS;
use crate::{Arch, Dom0Run, Result, Testbed, linux_domu};

/// The Linux domU's name.
pub const DOMU: &str = "linux-blkback";
/// Where dom0 finds the domU's kernel.
const KERNEL: &str = "/lib/xentest/linux-kernel";
/// Where dom0 finds its initramfs.
const RAMDISK: &str = "/lib/xentest/linux-initramfs";

/// dom0's cases, in order (`blkback_bench` only when benchmarking).
pub const DOM0_CASES: &[&str] = &[
    "blkback_domu_started",
    "blkback_attach_connects",
    "blkback_pattern_round_trip",
    "blkback_hostile_frontend",
    "blkback_filesystem",
    "blkback_detach_idle",
    "blkback_detach_in_flight",
    "blkback_domu_done",
];
/// The benchmark's case.
pub const BENCH_CASE: &str = "blkback_bench";

/// dom0's cases when benchmarking.
pub const BENCH_DOM0_CASES: &[&str] = &[
    "blkback_domu_started",
    "blkback_attach_connects",
    "blkback_pattern_round_trip",
    "blkback_hostile_frontend",
    "blkback_filesystem",
    "blkback_detach_idle",
    "blkback_detach_in_flight",
    BENCH_CASE,
    "blkback_domu_done",
];

/// The Linux domU's boot files for dom0 (absolute path in dom0, host path), its initramfs
/// running [`blkback::domu_script`]`(bench_rounds)`, built next to the testbed's cache.
pub fn domu_files(
    testbed: &Testbed,
    artifacts: &Artifacts,
    name: &str,
    bench_rounds: u32,
) -> Result<Vec<(String, PathBuf)>> {
    let domu = linux_domu::build(
        artifacts,
        &testbed.cache_dir().with_file_name("blkback"),
        name,
        &blkback::domu_script(bench_rounds),
    )?;
    Ok(vec![
        (KERNEL.into(), domu.kernel),
        (RAMDISK.into(), domu.ramdisk),
    ])
}

/// `xen-dom0-tests`' arguments.
pub fn arguments(bench_rounds: u32) -> String {
    let bench = if bench_rounds > 0 {
        format!("{} {bench_rounds} ", blkback::BENCH_ROUNDS)
    } else {
        String::new()
    };
    format!(
        "blkback {bench}--name {DOMU} --type pv --memory {} --kernel {KERNEL} \
         --ramdisk {RAMDISK} --cmdline '{}'",
        linux_domu::MEMORY_MIB,
        linux_domu::CMDLINE
    )
}

/// The boot of scenario run `name` on `artifacts` (x86_64), without the benchmark.
pub fn dom0_run(
    testbed: &Testbed,
    artifacts: &Artifacts,
    name: &str,
    timeout: Duration,
) -> Result<Dom0Run> {
    Ok(Dom0Run {
        name: name.into(),
        arch: Arch::X86_64,
        binaries: Vec::new(),
        files: domu_files(testbed, artifacts, name, 0)?,
        preamble: Preamble::BlockBackend,
        commands: vec![format!("{DOM0_TESTS} {}", arguments(0))],
        expected_cases: DOM0_CASES.iter().map(|c| c.to_string()).collect(),
        expected_dones: 1,
        timeout,
        vcpus: 1,
        dom0_memory_mib: Some(linux_domu::DOM0_MEMORY_MIB),
        domus: Vec::new(),
    })
}
