//! The privcmd backend on real Xen: every typed wrapper dom0 may call with
//! buffers in and out, event channels on `DOMID_SELF`, Xen's errors, both
//! buffer sources, many threads at once, and no `mmap` in steady state.

use std::fmt::Debug;

use xen_hypercall::event_channel::{ChannelState, ChannelStatus};
use xen_hypercall::prelude::*;
use xen_hypercall::{Errno, Error, XenMutBuffer};
use xen_hypercall_privcmd::{
    BufferSource, HYPERCALL_DEVICE, MAX_CACHED_PAGES, OpenOptions, Privcmd,
};

use xen_testbed_protocol::{Reporter, Stdout};

use crate::Case;

pub(crate) const CASES: &[Case] = &[
    ("privcmd_fd_cloexec", fd_cloexec),
    ("privcmd_extraversion", extraversion),
    ("privcmd_commandline", commandline),
    ("privcmd_build_id", build_id),
    ("privcmd_version_info", version_info),
    ("privcmd_console_write", console_write),
    ("privcmd_evtchn_loopback", evtchn_loopback),
    ("privcmd_unknown_hypercall_enosys", unknown_hypercall),
    ("privcmd_bad_port_einval", bad_port),
    ("privcmd_restricted_fd", restricted_fd),
    ("privcmd_large_buffer", large_buffer),
    ("privcmd_device_page_limit", device_page_limit),
    ("privcmd_buffer_across_fork_efault", buffer_across_fork),
    ("privcmd_locked_anonymous_buffers", locked_anonymous_buffers),
    ("privcmd_hidden_hypercall_device", hidden_hypercall_device),
    ("privcmd_threads", threads),
    ("privcmd_steady_state_no_mmap", steady_state_no_mmap),
];

/// `__HYPERVISOR_xen_version` and its sub-op `XENVER_extraversion` (public/xen.h, version.h).
const XEN_VERSION: usize = 17;
const XENVER_EXTRAVERSION: usize = 1;

/// Describes a failed call.
fn call<T, E: Debug>(what: &str, result: Result<T, E>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e:?}"))
}

/// Fails unless `result` is Xen's error `expected`.
fn expect_xen_error<T: Debug>(
    what: &str,
    result: Result<T, Error>,
    expected: Errno,
) -> Result<(), String> {
    match result {
        Err(Error::Xen(errno)) if errno == expected => Ok(()),
        other => Err(format!(
            "{what}: {other:?}, expected Err(Xen({expected:?}))"
        )),
    }
}

/// The privcmd fd is close-on-exec (`O_CLOEXEC` = 0o2000000 in fdinfo's octal flags).
fn fd_cloexec(h: &Privcmd) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fdinfo/{}", h.as_raw_fd());
    let info = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok())
        .ok_or_else(|| format!("no flags in {path}: {info:?}"))?;
    if flags & 0o2_000_000 == 0 {
        return Err(format!("privcmd fd flags {flags:#o} lack O_CLOEXEC"));
    }
    Ok(())
}

/// The extraversion is `.` and the point release, maybe with a suffix (".7", ".5-pre").
fn extraversion(h: &Privcmd) -> Result<(), String> {
    let extra = call("extraversion", h.extraversion())?;
    let text = extra
        .to_str()
        .map_err(|e| format!("extraversion {extra:?}: {e}"))?;
    let minor = text.strip_prefix('.').unwrap_or_default();
    if minor.is_empty()
        || !minor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+')
    {
        return Err(format!("extraversion {text:?} is not \".<release>\""));
    }
    Ok(())
}

/// The testbed's Xen command line always sets dom0_mem.
fn commandline(h: &Privcmd) -> Result<(), String> {
    let line = call("commandline", h.commandline())?;
    let text = line
        .to_str()
        .map_err(|e| format!("commandline {line:?}: {e}"))?;
    if text
        .split_whitespace()
        .any(|word| word.starts_with("dom0_mem="))
    {
        Ok(())
    } else {
        Err(format!("commandline {text:?} lacks dom0_mem="))
    }
}

/// Debian's Xen carries a GNU build id (20 bytes of SHA-1); two reads agree.
fn build_id(h: &Privcmd) -> Result<(), String> {
    let first = call("build_id", h.build_id())?;
    let second = call("build_id", h.build_id())?;
    if first.as_bytes().is_empty() || first != second {
        return Err(format!("build ids {first:?} then {second:?}"));
    }
    Ok(())
}

/// The other `xen_version` sub-ops dom0 may use, each checked for plausibility.
fn version_info(h: &Privcmd) -> Result<(), String> {
    let info = call("compile_info", h.compile_info())?;
    if !info
        .compiler
        .to_str()
        .is_ok_and(|c| c.contains("gcc") || c.contains("clang"))
    {
        return Err(format!("compile_info names no compiler: {info:?}"));
    }
    let page = call("pagesize", h.pagesize())?;
    if page != 4096 {
        return Err(format!("pagesize {page}, expected 4096"));
    }
    // Linux's /sys/hypervisor (drivers/xen/sys-hypervisor.c) asks Xen the same
    // questions from the kernel, with its own hypercalls and buffers.
    let changeset = call("changeset", h.changeset())?;
    expect_sysfs("properties/changeset", &changeset.to_string())?;
    let params = call("platform_parameters", h.platform_parameters())?;
    expect_sysfs(
        "properties/virtual_start",
        &format!("{:x}", params.virt_start),
    )?;
    // One 32-bit submap ("%08x"), the only one Linux knows.
    let features = call("features", h.features(0))?;
    expect_sysfs("properties/features", &format!("{features:08x}"))?;
    let handle = call("guest_handle", h.guest_handle())?;
    let hex: String = handle.0.iter().map(|b| format!("{b:02x}")).collect();
    // "%pU": the 16 bytes in order, grouped 8-4-4-4-12.
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    expect_sysfs("uuid", &uuid)
}

/// `/sys/hypervisor/<name>` holds `expected` (and a newline).
fn expect_sysfs(name: &str, expected: &str) -> Result<(), String> {
    let path = format!("/sys/hypervisor/{name}");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    if text.trim_end() == expected {
        Ok(())
    } else {
        Err(format!("{path} says {text:?}, the wrapper {expected:?}"))
    }
}

/// CONSOLEIO_write from dom0 (the console domain) is accepted.
fn console_write(h: &Privcmd) -> Result<(), String> {
    call(
        "console_write",
        h.console_write(b"xen-hypercall-privcmd: CONSOLEIO_write from dom0 userland\n"),
    )
}

/// A loopback channel on DOMID_SELF: allocate, bind, inspect, signal, close;
/// then the closed port reads as closed.
fn evtchn_loopback(h: &Privcmd) -> Result<(), String> {
    let port = evtchn_pair(h)?;
    let status = call("status(closed)", h.evtchn_status(DomId::SELF, port))?;
    if status.state != ChannelState::Closed {
        return Err(format!("closed port {port:?}: {status:?}"));
    }
    Ok(())
}

/// Allocates, binds, inspects, signals and closes a loopback pair; returns the
/// first port (which another thread may reuse as soon as it is closed).
fn evtchn_pair(h: &Privcmd) -> Result<Port, String> {
    let unbound = call(
        "alloc_unbound",
        h.evtchn_alloc_unbound(DomId::SELF, DomId::SELF),
    )?;
    let result = (|| {
        let status = call("status(unbound)", h.evtchn_status(DomId::SELF, unbound))?;
        let ChannelState::Unbound { remote_dom } = status.state else {
            return Err(format!("unbound port {unbound:?}: {status:?}"));
        };
        // Xen records DOMID_SELF as the caller's id: dom0.
        if remote_dom != DomId::new(0) && remote_dom != DomId::SELF {
            return Err(format!("unbound port allows {remote_dom:?}, expected dom0"));
        }
        let local = call(
            "bind_interdomain",
            h.evtchn_bind_interdomain(DomId::SELF, unbound),
        )?;
        let result = (|| {
            expect_peer(h, unbound, local)?;
            expect_peer(h, local, unbound)?;
            call("send(local)", h.evtchn_send(local))?;
            call("send(unbound)", h.evtchn_send(unbound))
        })();
        let closed = call("close(local)", h.evtchn_close(local));
        result.and(closed)
    })();
    let closed = call("close(unbound)", h.evtchn_close(unbound));
    result.and(closed)?;
    Ok(unbound)
}

/// `port` is an interdomain channel of dom0 connected to `peer`.
fn expect_peer(h: &Privcmd, port: Port, peer: Port) -> Result<(), String> {
    let status: ChannelStatus = call("status", h.evtchn_status(DomId::SELF, port))?;
    match status.state {
        ChannelState::Interdomain { dom, port: remote }
            if remote == peer && dom == DomId::new(0) =>
        {
            Ok(())
        }
        other => Err(format!(
            "port {port:?}: {other:?}, expected interdomain to dom0 port {peer:?}"
        )),
    }
}

/// Hypercall 63 does not exist; nor does xen_version sub-op 0x7fff.
fn unknown_hypercall(h: &Privcmd) -> Result<(), String> {
    // SAFETY: no hypercall 63 exists in Xen 4.17 (public/xen.h): Xen returns
    // -ENOSYS without touching memory.
    expect_xen_error("hypercall 63", unsafe { h.hypercall0(63) }, Errno::ENOSYS)?;
    // SAFETY: xen_version rejects an unknown sub-op with -ENOSYS before reading
    // its (NULL) argument (common/kernel.c, do_xen_version).
    expect_xen_error(
        "xen_version(0x7fff)",
        unsafe { h.hypercall2(17, [0x7fff, 0]) },
        Errno::ENOSYS,
    )
}

/// A port dom0 does not have: every event channel op refuses it with EINVAL.
fn bad_port(h: &Privcmd) -> Result<(), String> {
    let bad = Port(0x7fff_fff0);
    expect_xen_error("send", h.evtchn_send(bad), Errno::EINVAL)?;
    expect_xen_error("status", h.evtchn_status(DomId::SELF, bad), Errno::EINVAL)?;
    expect_xen_error("close", h.evtchn_close(bad), Errno::EINVAL)
}

/// After IOCTL_PRIVCMD_RESTRICT, Linux refuses hypercalls: `Error::Restricted`.
fn restricted_fd(_: &Privcmd) -> Result<(), String> {
    let h = call("open", Privcmd::open())?;
    call("xen_version before restricting", h.xen_version())?;
    call("restrict", h.restrict(DomId::new(7)))?;
    if h.restricted_to() != Some(DomId::new(7)) {
        return Err(format!("restricted_to() = {:?}", h.restricted_to()));
    }
    match h.xen_version() {
        Err(Error::Restricted { domid: 7 }) => {}
        other => return Err(format!("xen_version on a restricted fd: {other:?}")),
    }
    // A second restriction to another domain is refused by Linux.
    match h.restrict(DomId::new(8)) {
        Err(Error::Os { .. }) => Ok(()),
        other => Err(format!("restricting again: {other:?}")),
    }
}

/// A buffer beyond the cached sizes is mapped from the hypercall device for the
/// call and unmapped after; Xen writes into it.
fn large_buffer(h: &Privcmd) -> Result<(), String> {
    let expected = call("extraversion", h.extraversion())?;
    let mut big = vec![0xa5u8; (MAX_CACHED_PAGES + 8) * 4096];
    let before = h.buffer_stats();
    {
        let mut buf = call("buffer", h.make_mut_buffer(&mut big[..]))?;
        let ptr = buf.as_hypercall_ptr();
        expect_device_pages(ptr.cast::<u8>().addr(), ptr.len())?;
        // SAFETY: XENVER_extraversion (public/version.h) writes a 16-byte
        // `xen_extraversion_t` at the pointer, which is live and far larger.
        let ret =
            unsafe { h.hypercall2(XEN_VERSION, [XENVER_EXTRAVERSION, ptr.cast::<u8>().addr()]) };
        call("xen_version(XENVER_extraversion)", ret)?;
    }
    let after = h.buffer_stats();
    let written = &big[..16];
    let len = written.iter().position(|&b| b == 0).unwrap_or(16);
    if written[..len] != *expected.as_bytes() || big[16..].iter().any(|&b| b != 0xa5) {
        return Err(format!(
            "Xen wrote {:?}, expected {expected:?} and nothing past 16 bytes",
            &big[..20]
        ));
    }
    let (mapped, unmapped) = (after.mmaps - before.mmaps, after.munmaps - before.munmaps);
    if (mapped, unmapped, after.device_refusals) != (1, 1, before.device_refusals) {
        return Err(format!("a large buffer went from {before:?} to {after:?}"));
    }
    Ok(())
}

/// `len` bytes at `addr` lie in one mapping of the hypercall device (never in
/// locked anonymous memory), per `/proc/self/maps`.
fn expect_device_pages(addr: usize, len: usize) -> Result<(), String> {
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let line = maps
        .lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or_default();
            let (start, end) = range.split_once('-').unwrap_or_default();
            let parse = |hex| usize::from_str_radix(hex, 16).unwrap_or_default();
            (parse(start)..parse(end)).contains(&addr)
        })
        .ok_or_else(|| format!("{addr:#x} is in no mapping"))?;
    let end = line
        .split_once('-')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .unwrap_or_default();
    if line.ends_with(HYPERCALL_DEVICE) && addr + len <= end {
        Ok(())
    } else {
        Err(format!("a {len}-byte buffer at {addr:#x} is in {line:?}"))
    }
}

/// More live buffer pages than some kernels let one open hypercall device map
/// (64, `privcmd-buf.c`'s `limit`): each buffer comes from the device or fails
/// with `OutOfMemory` after a counted refusal, never from other memory.
fn device_page_limit(_: &Privcmd) -> Result<(), String> {
    let h = call("open", Privcmd::open())?;
    let mut blocks: Vec<Vec<u8>> = (0..5).map(|_| vec![0u8; 20 * 4096]).collect();
    let mut live = Vec::new();
    let mut refused = 0u64;
    for block in &mut blocks {
        match h.make_mut_buffer(&mut block[..]) {
            Ok(mut buf) => {
                let ptr = buf.as_hypercall_ptr();
                expect_device_pages(ptr.cast::<u8>().addr(), ptr.len())?;
                live.push(buf);
            }
            Err(Error::OutOfMemory { .. }) => refused += 1,
            Err(e) => return Err(format!("buffer {}: {e}", live.len())),
        }
    }
    let stats = h.buffer_stats();
    drop(live);
    if stats.device_refusals < refused {
        return Err(format!("{refused} buffers refused, but {stats:?}"));
    }
    Reporter::new(Stdout).out(format_args!(
        "privcmd: 5 live 20-page buffers: {} mapped, {refused} refused by {HYPERCALL_DEVICE} ({stats:?})",
        5 - refused
    ));
    Ok(())
}

/// A buffer made before `fork` has no pages in the child: there its pointer is
/// null and Xen refuses the hypercall with `EFAULT`, where the parent's own
/// call through it succeeds.
fn buffer_across_fork(h: &Privcmd) -> Result<(), String> {
    use nix::libc;
    let mut extra = [0u8; 16];
    let mut buf = call("buffer", h.make_mut_buffer(&mut extra))?;
    let addr = buf.as_hypercall_ptr().cast::<u8>().addr();
    let extraversion = |addr| {
        // SAFETY: XENVER_extraversion writes 16 bytes at `addr`: the live
        // buffer in the parent; in the child, whatever it is, Xen only faults
        // on a null pointer.
        unsafe { h.hypercall2(XEN_VERSION, [XENVER_EXTRAVERSION, addr]) }
    };
    // SAFETY: the child makes one hypercall through an inherited fd, no
    // allocation, then `_exit`s.
    match unsafe { libc::fork() } {
        -1 => Err("fork failed".into()),
        0 => {
            let child_addr = buf.as_hypercall_ptr().cast::<u8>().addr();
            let refused = extraversion(child_addr) == Err(Error::Xen(Errno::EFAULT));
            // SAFETY: ends the child without running the parent's exit paths.
            unsafe { libc::_exit(if child_addr == 0 && refused { 0 } else { 1 }) }
        }
        child => {
            let mut status = 0;
            // SAFETY: `child` is our child; `status` is a live local.
            if unsafe { libc::waitpid(child, &mut status, 0) } != child
                || !libc::WIFEXITED(status)
                || libc::WEXITSTATUS(status) != 0
            {
                return Err(format!(
                    "the child did not see a null pointer refused with EFAULT (status {status:#x})"
                ));
            }
            call(
                "xen_version(XENVER_extraversion) in the parent",
                extraversion(addr),
            )?;
            drop(buf);
            let expected = call("extraversion", h.extraversion())?;
            if extra.starts_with(expected.as_bytes()) {
                Ok(())
            } else {
                Err(format!("the parent read {extra:?}, expected {expected:?}"))
            }
        }
    }
}

/// The calls with buffers, in and out, whose results two handles must agree on.
fn buffer_round(h: &Privcmd) -> Result<String, String> {
    let extra = call("extraversion", h.extraversion())?;
    let caps = call("capabilities", h.capabilities())?;
    let line = call("commandline", h.commandline())?;
    let id = call("build_id", h.build_id())?;
    evtchn_loopback(h)?;
    Ok(format!("{extra}|{caps}|{line}|{id}"))
}

/// The fallback buffers (locked anonymous memory) give the same results.
fn locked_anonymous_buffers(h: &Privcmd) -> Result<(), String> {
    let locked = call(
        "open",
        OpenOptions::new()
            .buffer_source(BufferSource::LockedAnonymous)
            .open(),
    )?;
    if locked.buffer_source() != BufferSource::LockedAnonymous {
        return Err(format!("buffer source {:?}", locked.buffer_source()));
    }
    compare_rounds(h, &locked)
}

fn compare_rounds(reference: &Privcmd, other: &Privcmd) -> Result<(), String> {
    let expected = buffer_round(reference)?;
    let got = buffer_round(other)?;
    if got != expected {
        return Err(format!("{got:?} differs from {expected:?}"));
    }
    Ok(())
}

/// With `/dev/xen/hypercall` gone (as on Linux before 4.18), opening falls back.
fn hidden_hypercall_device(h: &Privcmd) -> Result<(), String> {
    if h.buffer_source() != BufferSource::HypercallDevice {
        return Err(format!(
            "{HYPERCALL_DEVICE} is not used by default: {:?}",
            h.buffer_source()
        ));
    }
    let hidden = format!("{HYPERCALL_DEVICE}.hidden");
    std::fs::rename(HYPERCALL_DEVICE, &hidden)
        .map_err(|e| format!("hiding {HYPERCALL_DEVICE}: {e}"))?;
    let result = Privcmd::open()
        .map_err(|e| format!("open: {e}"))
        .and_then(|fallback| {
            if fallback.buffer_source() != BufferSource::LockedAnonymous {
                return Err(format!("buffer source {:?}", fallback.buffer_source()));
            }
            compare_rounds(h, &fallback)
        });
    let restored =
        std::fs::rename(&hidden, HYPERCALL_DEVICE).map_err(|e| format!("restoring: {e}"));
    result.and(restored)
}

/// Many threads share one handle; every result is checked.
fn threads(h: &Privcmd) -> Result<(), String> {
    const THREADS: usize = 6;
    const ROUNDS: usize = 60;
    let version = call("xen_version", h.xen_version())?;
    let extra = call("extraversion", h.extraversion())?;
    let caps = call("capabilities", h.capabilities())?;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| -> Result<(), String> {
                    for _ in 0..ROUNDS {
                        let v = call("xen_version", h.xen_version())?;
                        let e = call("extraversion", h.extraversion())?;
                        let c = call("capabilities", h.capabilities())?;
                        if v != version || e != extra || c != caps {
                            return Err(format!(
                                "{v} {e} {c} differ from {version} {extra} {caps}"
                            ));
                        }
                        evtchn_pair(h)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect::<Result<Vec<()>, String>>()
            .map(drop)
    })
}

/// Once warm, hypercalls with buffers make no mmap/munmap at all; the buffers
/// are pages of the hypercall device.
fn steady_state_no_mmap(h: &Privcmd) -> Result<(), String> {
    buffer_round(h)?;
    let maps =
        std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    if !maps.lines().any(|line| line.ends_with(HYPERCALL_DEVICE)) {
        return Err(format!(
            "no mapping of {HYPERCALL_DEVICE} in /proc/self/maps"
        ));
    }
    let before = h.buffer_stats();
    for _ in 0..100 {
        buffer_round(h)?;
    }
    let after = h.buffer_stats();
    if after != before {
        return Err(format!("steady state went from {before:?} to {after:?}"));
    }
    Ok(())
}
