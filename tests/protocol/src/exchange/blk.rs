//! The block-device run (`xen-dom0-tests blk-domu`): dom0 serves the domU a disk through Linux's
//! blkback, and the domU's frontend finds it over xenstore.
//!
//! 1. dom0 fills a [`SECTORS`]-sector file in its tmpfs with the pattern of [`DOM0_SEED`]
//!    ([`fill`]), attaches it to a loop device, writes a hotplug script (libxl runs it with `add`,
//!    it names the loop device's `major:minor` to blkback), creates the domU paused with the disk
//!    as [`VDEV`] in its xl config, writes [`BLK`] = the disk's sectors (decimal) and unpauses it.
//! 2. The domU, seeing [`BLK`], runs this instead of the exchange: it reads its frontend
//!    directory `device/vbd/<`[`DEVID`]`>` (`backend`, `backend-id`), writes the backend path it
//!    read at [`SEEN_BACKEND`], waits (a watch, [`WAIT_SECONDS`]) for the backend's `state` to
//!    reach InitWait (2: blkback is ready for a frontend), writes [`READY`](super::READY) = `1`
//!    and waits for [`CHECKED`].
//! 3. dom0 waits for [`READY`](super::READY), checks the backend directory (what the hotplug
//!    script and libxl wrote) against the path the domU saw, and writes [`CHECKED`] = `1`.
//! 4. The domU's frontend connects (xen-blk), checks the geometry against [`BLK`], reads the
//!    whole disk and checks dom0's pattern, writes the pattern of [`DOMU_SEED`] over the whole
//!    disk with many requests in flight, discards its first 64 KiB (they read as zeros: the
//!    loop device punches a hole in its file) and writes them again, flushes, reads the disk
//!    back and checks it, checks that
//!    unaligned and out-of-range requests are refused with typed errors, and writes
//!    [`WRITTEN`] = `<bytes> <digest>` (what it read back: [`crate::bulk::Digest`], 16 hex
//!    digits). It then waits, idle, for the backend to close.
//! 5. dom0 waits for [`WRITTEN`], checks that its backing file holds the domU's pattern (Linux's
//!    blkback wrote it) with the domU's digest, and detaches the disk (`xl block-detach`).
//! 6. The domU's frontend sees the backend closing, ends its grants once blkback unmapped them,
//!    closes its port, goes Closed (libxl then removes both directories), checks that nothing
//!    is left granted or bound, drains its console and powers off. dom0 checks that `xl
//!    block-list` is empty, the backend directory is gone and the script's `remove` ran.

/// Written by dom0 before unpausing the domU: the disk's size in 512-byte sectors (decimal). The
/// domU runs the block steps instead of the exchange.
pub const BLK: &str = "data/blk";
/// Written by dom0 with [`BLK`] for `cargo xtask bench blk`: the rounds of [`BENCH_MEASURES`]
/// the domU times once connected, instead of steps 4 and 5; it prints a [`BENCH_RESULT`] line
/// per run, writes [`BENCHED`] = `1` and waits, idle, for the backend to close (step 6).
pub const BENCH: &str = "data/blk-bench";
/// `1` once the domU timed every run of [`BENCH`].
pub const BENCHED: &str = "data/blk-benched";
/// What starts a timed run's line on a benchmarked domU's console (the Rust one's, and the
/// Linux one's of `cargo xtask bench blk`): `blkbench <measure> <bytes> <start> <end>`, the
/// times in seconds (decimal).
pub const BENCH_RESULT: &str = "blkbench ";
/// The benchmark's measures: name, request size in bytes, requests in flight at most, write.
/// Each is a sequential pass over the whole disk.
pub const BENCH_MEASURES: [(&str, usize, usize, bool); 8] = [
    ("read_4k_qd1", 4096, 1, false),
    ("read_64k_qd1", 65536, 1, false),
    ("write_4k_qd1", 4096, 1, true),
    ("write_64k_qd1", 65536, 1, true),
    ("read_4k_qd32", 4096, 32, false),
    ("read_64k_qd32", 65536, 32, false),
    ("write_4k_qd32", 4096, 32, true),
    ("write_64k_qd32", 65536, 32, true),
];
/// The domU's cases when benchmarked ([`BENCH`]).
pub const BENCH_DOMU_CASES: &[&str] = &[
    "blk_vbd_found",
    "blk_backend_init_wait",
    "blk_connected",
    "blk_bench",
    "blk_closed_on_detach",
    "console_flushed",
];

/// The backend path the domU read from its frontend directory.
pub const SEEN_BACKEND: &str = "data/blk-backend";
/// `1` once dom0 checked the backend the domU found: the domU may go.
pub const CHECKED: &str = "data/blk-checked";
/// `<bytes> <digest>` of the disk the domU read back after writing its pattern.
pub const WRITTEN: &str = "data/blk-written";
/// The disk's name in the domU's xl config.
pub const VDEV: &str = "xvda";
/// The device id of [`VDEV`] (`202 << 8`: the first Xen virtual disk), naming the frontend
/// directory `device/vbd/51712` and the backend's `backend/vbd/<domid>/51712`.
pub const DEVID: u32 = 51712;
/// The disk's size in 512-byte sectors: 4 MiB.
pub const SECTORS: u64 = 8192;
/// The sector size of the requests (blkif's unit, whatever the disk's `sector-size`).
pub const SECTOR_SIZE: usize = 512;
/// The seed of the pattern dom0 fills the disk with before the domU starts.
pub const DOM0_SEED: u8 = 0xd0;
/// The seed of the pattern the domU writes over the whole disk.
pub const DOMU_SEED: u8 = 0x0d;
/// How long the domU waits for the backend.
pub const WAIT_SECONDS: u64 = 20;

/// The domU's cases, in the order it reports them.
pub const DOMU_CASES: &[&str] = &[
    "blk_vbd_found",
    "blk_backend_init_wait",
    "blk_connected",
    "blk_read_dom0_pattern",
    "blk_write_pattern",
    "blk_discard",
    "blk_flush",
    "blk_read_back",
    "blk_bad_requests_refused",
    "blk_closed_on_detach",
    "console_flushed",
];

/// dom0's cases, in the order it reports them.
pub const DOM0_CASES: &[&str] = &[
    "blk_backing_ready",
    "xl_create",
    "domu_ready",
    "blk_backend_attached",
    "blk_backing_holds_domu_pattern",
    "blk_detach",
    "domu_powered_off",
];

/// Byte `offset` of the disk filled with the pattern of `seed`: each sector starts with its
/// number (8 bytes, little endian) and the seed, and the rest depends on all three, so a sector
/// written at the wrong place, a stale one, or one of the other seed never matches.
pub fn pattern_byte(seed: u8, offset: u64) -> u8 {
    let sector = offset / SECTOR_SIZE as u64;
    let within = (offset % SECTOR_SIZE as u64) as usize;
    match within {
        0..8 => sector.to_le_bytes()[within],
        8 => seed,
        _ => {
            // The sector's number mixed into one byte (Fibonacci hashing), the offset in the
            // sector (both halves differ), and the seed.
            let mixed = (sector.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8;
            let half = if within < 256 { 0 } else { 0x80 };
            mixed
                .wrapping_add((within as u8).wrapping_mul(7))
                .wrapping_add(seed)
                ^ half
        }
    }
}

/// Fills `buf` with the pattern of `seed` from disk byte `offset` on.
pub fn fill(buf: &mut [u8], seed: u8, offset: u64) {
    for (at, byte) in (offset..).zip(buf.iter_mut()) {
        *byte = pattern_byte(seed, at);
    }
}

/// The first byte of `buf`, read from disk byte `offset`, that differs from the pattern of
/// `seed`: its disk offset.
pub fn first_mismatch(buf: &[u8], seed: u8, offset: u64) -> Option<u64> {
    (offset..)
        .zip(buf)
        .find(|&(at, &byte)| byte != pattern_byte(seed, at))
        .map(|(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_valid_and_distinct() {
        for cases in [DOMU_CASES, DOM0_CASES] {
            for (index, name) in cases.iter().enumerate() {
                assert!(crate::is_valid_case_name(name), "{name}");
                assert!(!cases[..index].contains(name), "{name} twice");
            }
        }
        assert_eq!(DEVID, 202 << 8);
        assert_ne!(DOM0_SEED, DOMU_SEED);
        for key in [BLK, SEEN_BACKEND, CHECKED, WRITTEN] {
            assert!(key.starts_with(super::super::DATA), "{key}");
        }
    }

    #[test]
    fn the_pattern_names_each_sector_and_seed() {
        let mut disk = [0; 3 * SECTOR_SIZE];
        fill(&mut disk[..700], DOM0_SEED, 0);
        fill(&mut disk[700..], DOM0_SEED, 700);
        assert_eq!(first_mismatch(&disk, DOM0_SEED, 0), None);
        assert_eq!(
            &disk[SECTOR_SIZE..SECTOR_SIZE + 9],
            &[1, 0, 0, 0, 0, 0, 0, 0, 0xd0]
        );
        // Another seed, another place, or zeros do not match.
        assert_eq!(first_mismatch(&disk, 0x11, 0), Some(8));
        assert_eq!(first_mismatch(&disk[SECTOR_SIZE..], DOM0_SEED, 0), Some(0));
        let zeros = [0; SECTOR_SIZE];
        assert_eq!(first_mismatch(&zeros, DOM0_SEED, 0), Some(8));
        // Sectors 256 apart differ beyond their numbers, and so do a sector's halves.
        let (mut a, mut b) = ([0; SECTOR_SIZE], [0; SECTOR_SIZE]);
        fill(&mut a, DOM0_SEED, 0);
        fill(&mut b, DOM0_SEED, 256 * SECTOR_SIZE as u64);
        assert_ne!(a[8..], b[8..]);
        assert_ne!(a[9..256], a[265..]);
    }
}
