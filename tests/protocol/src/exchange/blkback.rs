//! The userspace block backend run (`xen-dom0-tests blkback`): dom0 serves a Linux PV domU a
//! disk with `xen-blk`'s backend, hot-plugged as a toolstack does, and the domU's own
//! xen-blkfront uses it. The domU runs [`domu_script`] (busybox); the two sides meet on the
//! domU's console: each step the domU reaches is a line `blkback-domu <`[`Mark`]`> [values]`,
//! which dom0 reads from xenconsoled's log.
//!
//! 1. dom0 makes a [`DISK_MIB`] MiB file of zeros in its tmpfs, creates the domU (no disk)
//!    and unpauses it.
//! 2. dom0 hot-plugs the file as [`VDEV`] ([`DEVID`]): it writes the frontend and backend
//!    directories, its backend publishes its features (InitWait), maps the ring blkfront
//!    publishes, binds its port, publishes the geometry (Connected) and serves.
//! 3. The domU sees `/dev/`[`VDEV`] ([`Mark::Seen`] with its sectors), writes [`PATTERN`]
//!    repeated over the first [`PATTERN_BYTES`] with O_DIRECT, reads them back and compares
//!    ([`Mark::Pattern`]): dom0 checks its file holds the pattern.
//! 4. Meanwhile dom0 plays a hostile frontend of its own (its ring and a data page granted to
//!    itself), served by a second backend: malformed requests are answered with errors, a
//!    valid one is served, a `req_prod` beyond the ring disconnects it, and its ring page and
//!    port are released while the domU's disk stays served.
//! 5. The domU makes an ext2 filesystem on the disk with busybox `mke2fs` and reads its
//!    superblock's magic back through the disk ([`Mark::Filesystem`]); dom0 finds the same
//!    magic in its file. (The domU kernel's ext2/ext4 module is not in its initramfs, so the
//!    filesystem is not mounted.)
//! 6. Detach while idle: dom0's backend goes Closing, blkfront closes, dom0 unmaps the ring,
//!    closes its port, goes Closed and removes both directories; the domU sees the disk gone
//!    ([`Mark::Gone`]).
//! 7. dom0 hot-plugs the disk again; the domU sees it ([`Mark::Seen`]), starts reading it in a
//!    loop ([`Mark::Reading`]) and dom0 detaches it during the reads; the loop ends on an I/O
//!    error or the disk's removal ([`Mark::ReadEnded`]), and the domU sees it gone.
//! 8. With [`BENCH_ROUNDS`] given (`cargo xtask bench blkback`): dom0 hot-plugs the file again
//!    as [`VDEV`] and, through Linux's blkback, a loop device over the same file as
//!    [`KERNEL_VDEV`]; the domU times [`BENCH_MEASURES`] on each ([`Mark::Bench`] lines) and
//!    says [`Mark::Benched`].
//!
//! The domU says [`Mark::Done`] and powers off. After each detach dom0 checks that its
//! backend left no ring page mapped and no port bound.

/// The disk's size.
pub const DISK_MIB: u64 = 32;
/// The disk as the domU names it.
pub const VDEV: &str = "xvdb";
/// Its virtual device number (`202 << 8 | 16`).
pub const DEVID: u32 = 51728;
/// The disk Linux's blkback serves in the benchmark.
pub const KERNEL_VDEV: &str = "xvdc";
/// The pattern line the domU writes (with `yes`: each line ends in a newline).
pub const PATTERN: &str = "xen-blkback-pattern";
/// How many bytes of the repeated pattern it writes from sector 0.
pub const PATTERN_BYTES: u64 = 1 << 20;
/// The offset of an ext2 superblock's magic (`0xef53`, little-endian) on its disk.
pub const EXT2_MAGIC_OFFSET: u64 = 1024 + 56;
/// What starts each of the domU's lines.
pub const PREFIX: &str = "blkback-domu ";
/// How long the domU waits for the disk to come or go (tenths of a second).
pub const WAIT_TENTHS: u32 = 300;
/// The benchmark's measures: name, block size, bytes moved, write.
pub const BENCH_MEASURES: [(&str, u64, u64, bool); 4] = [
    ("read_4k", 4096, 4 << 20, false),
    ("write_4k", 4096, 4 << 20, true),
    ("read_1m", 1 << 20, 16 << 20, false),
    ("write_1m", 1 << 20, 16 << 20, true),
];
/// The rounds of [`BENCH_MEASURES`], when benchmarking.
pub const BENCH_ROUNDS: &str = "--bench";

/// The steps the domU reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Its `/init` runs the script.
    Started,
    /// `/dev/xvdb` appeared: `seen <sectors>`; `missing` if it did not.
    Seen,
    /// `pattern ok` or `pattern failed`.
    Pattern,
    /// `filesystem <magic as od prints it>` or `filesystem failed`.
    Filesystem,
    /// The disk is gone: `gone`, or `still-there`.
    Gone,
    /// The read loop runs.
    Reading,
    /// The read loop ended.
    ReadEnded,
    /// `bench <backend> <measure> <bytes> <start> <end>` (seconds of uptime).
    Bench,
    /// Every bench run is done.
    Benched,
    /// The script is done.
    Done,
}

impl Mark {
    /// The word on the console.
    pub const fn word(self) -> &'static str {
        match self {
            Mark::Started => "started",
            Mark::Seen => "seen",
            Mark::Pattern => "pattern",
            Mark::Filesystem => "filesystem",
            Mark::Gone => "gone",
            Mark::Reading => "reading",
            Mark::ReadEnded => "read-ended",
            Mark::Bench => "bench",
            Mark::Benched => "benched",
            Mark::Done => "done",
        }
    }
}

/// The Linux domU's script (busybox `sh`), run by its `/init`: the domU's side of the steps
/// above, with `bench_rounds` rounds of the benchmark (0: none).
#[cfg(feature = "std")]
pub fn domu_script(bench_rounds: u32) -> std::string::String {
    use std::fmt::Write as _;
    use std::format;
    let dev = format!("/dev/{VDEV}");
    let mut s = format!(
        // `/init`'s `busybox --install` leaves out the applets that live in `/usr`.
        "mkdir -p /usr/bin /usr/sbin && busybox --install -s 2>/dev/null\n\
         say() {{ echo \"{PREFIX}$*\"; }}\n\
         come() {{ i=0; while [ ! -b /dev/$1 ] && [ $i -lt {WAIT_TENTHS} ]; do sleep 0.1; i=$((i+1)); done; [ -b /dev/$1 ]; }}\n\
         go() {{ i=0; while [ -b /dev/$1 ] && [ $i -lt {WAIT_TENTHS} ]; do sleep 0.1; i=$((i+1)); done; [ ! -b /dev/$1 ]; }}\n\
         seen() {{ if come {VDEV}; then say {seen} $(cat /sys/block/{VDEV}/size); else say {seen} missing; fi; }}\n\
         gone() {{ if go {VDEV}; then say {gone}; else say {gone} still-there; fi; }}\n\
         say {started}\n\
         seen\n\
         yes {PATTERN} | head -c {PATTERN_BYTES} > /tmp/pattern\n\
         if dd if=/tmp/pattern of={dev} bs=64k oflag=direct 2>/dev/null && \
         dd if={dev} of=/tmp/back bs=64k count={blocks} iflag=direct 2>/dev/null && \
         cmp /tmp/pattern /tmp/back; then say {pattern} ok; else say {pattern} failed; fi\n\
         if mke2fs {dev} >/dev/null 2>&1; then say {fs} $(dd if={dev} bs=1 skip={magic} count=2 iflag=direct 2>/dev/null | od -An -tx1); \
         else say {fs} failed; fi\n\
         gone\n\
         seen\n\
         ( while dd if={dev} of=/dev/null bs=4k count=256 iflag=direct 2>/dev/null; do :; done; say {ended} ) &\n\
         say {reading}\n\
         wait\n\
         gone\n",
        seen = Mark::Seen.word(),
        gone = Mark::Gone.word(),
        started = Mark::Started.word(),
        pattern = Mark::Pattern.word(),
        fs = Mark::Filesystem.word(),
        ended = Mark::ReadEnded.word(),
        reading = Mark::Reading.word(),
        blocks = PATTERN_BYTES / 65536,
        magic = EXT2_MAGIC_OFFSET,
    );
    if bench_rounds > 0 {
        let _ = write!(
            s,
            "seen\ncome {KERNEL_VDEV} || say {seen} {KERNEL_VDEV}-missing\n\
             now() {{ read t _ < /proc/uptime; echo $t; }}\n\
             timed() {{ b=$1; m=$2; n=$3; shift 3; t0=$(now); \"$@\" 2>/dev/null || say {bench}-failed $b $m; say {bench} $b $m $n $t0 $(now); }}\n\
             for round in $(seq {bench_rounds}); do for b in ours:{VDEV} blkback:{KERNEL_VDEV}; do d=${{b#*:}}; b=${{b%%:*}}\n",
            seen = Mark::Seen.word(),
            bench = Mark::Bench.word(),
        );
        for (name, size, bytes, write) in BENCH_MEASURES {
            let count = bytes / size;
            let dd = if write {
                format!("dd if=/dev/zero of=/dev/$d bs={size} count={count} oflag=direct")
            } else {
                format!("dd if=/dev/$d of=/dev/null bs={size} count={count} iflag=direct")
            };
            let _ = writeln!(s, "  timed $b {name} {bytes} {dd}");
        }
        let _ = writeln!(s, "done; done\nsay {}", Mark::Benched.word());
    }
    let _ = writeln!(s, "say {}", Mark::Done.word());
    s
}

/// Parses a [`Mark::Bench`] line's values (`<backend> <measure> <bytes> <start> <end>`): the
/// backend, the measure, the bytes and the nanoseconds.
pub fn parse_bench(values: &str) -> Option<(&str, &str, u64, u64)> {
    let mut fields = values.split_whitespace();
    let backend = fields.next()?;
    let measure = fields.next()?;
    let bytes = fields.next()?.parse().ok()?;
    let start: f64 = fields.next()?.parse().ok()?;
    let end: f64 = fields.next()?.parse().ok()?;
    if fields.next().is_some() || end < start {
        return None;
    }
    Some((backend, measure, bytes, ((end - start) * 1e9) as u64))
}
