//! xen-grant in a Linux dom0: pages granted with gntalloc, mapped and copied
//! back through gntdev (dom0 grants to itself), unmap notifications, and
//! every refusal as a typed error.

use xen_grant::linux::{CopyDest, CopySegment, CopySource, Gntalloc, Gntdev, Mapping, UnmapNotify};
use xen_grant::{Error, GrantRef, GrantStatus};
use xen_hypercall::DomId;
use xen_hypercall_privcmd::Privcmd;
use xen_shared::SharedMem;

use crate::Case;

pub(crate) const CASES: &[Case] = &[
    ("grant_loopback_map", loopback_map),
    ("grant_loopback_multi_page", multi_page),
    ("grant_readonly", readonly),
    ("grant_bad_references_refused", bad_references),
    ("grant_revoked_refused", revoked),
    ("grant_copy", copy),
    ("grant_offset_for_address", offset_for_address),
    ("grant_unmap_notify_on_exit", unmap_notify_on_exit),
    ("grant_bad_input", bad_input),
];

const DOM0: DomId = DomId(0);

fn open() -> Result<(Gntalloc, Gntdev), String> {
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    Ok((gntalloc, gntdev))
}

/// The atomic view of a writable mapping.
fn mem<'m>(mapping: &'m Mapping<'_>) -> Result<SharedMem<'m>, String> {
    mapping
        .mem()
        .ok_or_else(|| "a writable mapping has no view".to_string())
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn expect_refused<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) -> Result<(), String> {
    match result {
        Err(Error::MapRefused { .. }) => Ok(()),
        other => Err(format!("{what}: {other:?}, expected MapRefused")),
    }
}

/// gntalloc grants a page to dom0; gntdev maps it; each side sees the other's writes.
fn loopback_map(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let share = gntalloc.share(DOM0, 1, false).map_err(|e| e.to_string())?;
    let data = pattern(1, 4096);
    share.mem().write(0, &data).map_err(|e| e.to_string())?;
    let mapping = gntdev
        .map(DOM0, share.grefs(), false)
        .map_err(|e| e.to_string())?;
    let mut seen = vec![0; 4096];
    mem(&mapping)?
        .read(0, &mut seen)
        .map_err(|e| e.to_string())?;
    if seen != data {
        return Err("the mapping does not show the shared page".into());
    }
    mem(&mapping)?
        .write(10, b"from gntdev")
        .map_err(|e| e.to_string())?;
    let mut back = [0; 11];
    share.mem().read(10, &mut back).map_err(|e| e.to_string())?;
    if &back != b"from gntdev" {
        return Err(format!("the sharer sees {back:?}"));
    }
    mapping.unmap().map_err(|e| e.to_string())
}

/// Four pages shared and mapped at once, in order.
fn multi_page(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let share = gntalloc.share(DOM0, 4, false).map_err(|e| e.to_string())?;
    for page in 0..4 {
        share
            .mem()
            .fill(page * 4096, 4096, page as u8 + 1)
            .map_err(|e| e.to_string())?;
    }
    let mapping = gntdev
        .map(DOM0, share.grefs(), false)
        .map_err(|e| e.to_string())?;
    if mapping.len() != 4 * 4096 {
        return Err(format!("mapped {} bytes", mapping.len()));
    }
    for page in 0..4 {
        let mut byte = [0];
        mem(&mapping)?
            .read(page * 4096 + 4095, &mut byte)
            .map_err(|e| e.to_string())?;
        if byte[0] != page as u8 + 1 {
            return Err(format!("page {page} shows {}", byte[0]));
        }
    }
    Ok(())
}

/// A read-only grant maps read-only, and refuses a writable mapping.
fn readonly(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let share = gntalloc.share(DOM0, 1, true).map_err(|e| e.to_string())?;
    share.mem().write(0, b"ro").map_err(|e| e.to_string())?;
    expect_refused(
        "writable map of a read-only grant",
        gntdev.map(DOM0, share.grefs(), false),
    )?;
    let mapping = gntdev
        .map(DOM0, share.grefs(), true)
        .map_err(|e| e.to_string())?;
    if mapping.mem().is_some() {
        return Err("a read-only mapping offers a writable view".into());
    }
    let mut seen = [0; 2];
    mapping.read(0, &mut seen).map_err(|e| e.to_string())?;
    if &seen != b"ro" {
        return Err(format!("read {seen:?}"));
    }
    // A byte to clear needs a writable mapping.
    match mapping.notify_on_unmap(UnmapNotify {
        clear_byte: Some(0),
        event: None,
    }) {
        Err(Error::Os { .. }) => Ok(()),
        other => Err(format!(
            "clear-byte notify on a read-only mapping: {other:?}"
        )),
    }
}

/// A reference past the table, a free one, another domain's.
fn bad_references(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    expect_refused(
        "reference past the table",
        gntdev.map(DOM0, &[GrantRef(0x00ff_ffff)], false),
    )?;
    let share = gntalloc.share(DOM0, 1, false).map_err(|e| e.to_string())?;
    let gref = share.grefs()[0];
    expect_refused(
        "reference of a domain that does not exist",
        gntdev.map(DomId(0x7fe0), &[gref], false),
    )?;
    // The mapping that did work still does, after the refusals.
    let mapping = gntdev
        .map(DOM0, &[gref], false)
        .map_err(|e| e.to_string())?;
    mapping.unmap().map_err(|e| e.to_string())
}

/// After gntalloc gives a page back (nobody mapped it), its reference no longer maps.
fn revoked(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let share = gntalloc.share(DOM0, 1, false).map_err(|e| e.to_string())?;
    let gref = share.grefs()[0];
    drop(share);
    expect_refused("revoked reference", gntdev.map(DOM0, &[gref], false))
}

/// Grant copies both ways, and Xen's refusals with their status.
fn copy(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let share = gntalloc.share(DOM0, 1, false).map_err(|e| e.to_string())?;
    let gref = share.grefs()[0];
    let data = pattern(7, 4096);
    share.mem().write(0, &data).map_err(|e| e.to_string())?;
    let grant = |offset| CopySource::Grant {
        domid: DOM0,
        gref,
        offset,
    };
    let mut out = vec![0u8; 4096];
    gntdev
        .copy(&mut [CopySegment {
            source: grant(0),
            dest: CopyDest::Local(&mut out),
            len: 4096,
        }])
        .map_err(|e| e.to_string())?;
    if out != data {
        return Err("the copy out of the grant differs".into());
    }
    gntdev
        .copy(&mut [CopySegment {
            source: CopySource::Local(b"copied in"),
            dest: CopyDest::Grant {
                domid: DOM0,
                gref,
                offset: 100,
            },
            len: 9,
        }])
        .map_err(|e| e.to_string())?;
    let mut back = [0; 9];
    share
        .mem()
        .read(100, &mut back)
        .map_err(|e| e.to_string())?;
    if &back != b"copied in" {
        return Err(format!("the grant holds {back:?}"));
    }
    // A free reference: Xen's status, with the segment's index.
    let mut small = [0u8; 1];
    let result = gntdev.copy(&mut [
        CopySegment {
            source: grant(0),
            dest: CopyDest::Local(&mut out),
            len: 1,
        },
        CopySegment {
            source: CopySource::Grant {
                domid: DOM0,
                gref: GrantRef(gref.0 + 1000),
                offset: 0,
            },
            dest: CopyDest::Local(&mut small),
            len: 1,
        },
    ]);
    match result {
        Err(Error::Copy { index: 1, status }) if status != GrantStatus::OKAY => Ok(()),
        other => Err(format!("copy from a free reference: {other:?}")),
    }
}

/// GET_OFFSET_FOR_VADDR finds the mapping by its address.
fn offset_for_address(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let share = gntalloc.share(DOM0, 2, false).map_err(|e| e.to_string())?;
    let mapping = gntdev
        .map(DOM0, share.grefs(), false)
        .map_err(|e| e.to_string())?;
    let (_, count) = mapping
        .offset_for_address(mapping.address())
        .map_err(|e| e.to_string())?;
    if count != 2 {
        return Err(format!("{count} pages at the mapping's address"));
    }
    Ok(())
}

/// `/dev/xen/evtchn` (Linux `include/uapi/xen/evtchn.h`), raw: the test needs
/// only an unbound port and an interdomain binding to it.
mod evtchn {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    use nix::libc;

    /// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: `{u32 remote_domain; u32 remote_port}`.
    const BIND_INTERDOMAIN: libc::c_ulong = 0x0008_4501;
    /// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: `{u32 remote_domain}`.
    const BIND_UNBOUND_PORT: libc::c_ulong = 0x0004_4502;

    pub(super) fn open() -> Result<File, String> {
        File::options()
            .read(true)
            .write(true)
            .open("/dev/xen/evtchn")
            .map_err(|e| format!("/dev/xen/evtchn: {e}"))
    }

    fn bind(fd: &File, request: libc::c_ulong, arg: &mut [u32; 2]) -> Result<u32, String> {
        // SAFETY: both ioctls read their 4- or 8-byte structure from `arg`
        // (8 bytes, live) and return the new local port; they touch no other
        // memory of this process.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg.as_mut_ptr()) };
        u32::try_from(ret)
            .map_err(|_| format!("evtchn ioctl {request:#x}: {}", nix::errno::Errno::last()))
    }

    /// A port of this domain that domain `remote` may bind to.
    pub(super) fn bind_unbound(fd: &File, remote: u32) -> Result<u32, String> {
        bind(fd, BIND_UNBOUND_PORT, &mut [remote, 0])
    }

    /// A local port connected to `remote`'s `port`.
    pub(super) fn bind_interdomain(fd: &File, remote: u32, port: u32) -> Result<u32, String> {
        bind(fd, BIND_INTERDOMAIN, &mut [remote, port])
    }

    /// The next port that fired, within `timeout_ms`.
    pub(super) fn wait(fd: &File, timeout_ms: i32) -> Result<u32, String> {
        use std::io::Read;
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live `pollfd`.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        if ready != 1 {
            return Err(format!("no event within {timeout_ms} ms (poll: {ready})"));
        }
        let mut port = [0; 4];
        (&*fd)
            .read_exact(&mut port)
            .map_err(|e| format!("read: {e}"))?;
        Ok(u32::from_ne_bytes(port))
    }
}

/// A child process maps a shared page through gntdev and asks for byte 100 to
/// be cleared and an event channel signalled on unmap, then exits without
/// unmapping: Linux does both when the child's files close.
fn unmap_notify_on_exit(_: &Privcmd) -> Result<(), String> {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let share = gntalloc.share(DOM0, 1, false).map_err(|e| e.to_string())?;
    share.mem().fill(0, 4096, 0xab).map_err(|e| e.to_string())?;
    let gref = share.grefs()[0];
    let events = evtchn::open()?;
    let port = evtchn::bind_unbound(&events, 0)?;
    // SAFETY: the dom0 test program is single-threaded when its cases run (the
    // thread cases join their threads); the child only maps, binds, sets the
    // notification and leaves with `_exit`.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            // Its own files: closing them at exit releases the mapping.
            let mapped = (|| -> Result<(), String> {
                let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
                let child_events = evtchn::open()?;
                let child_port = evtchn::bind_interdomain(&child_events, 0, port)?;
                let mapping = gntdev
                    .map(DOM0, &[gref], false)
                    .map_err(|e| e.to_string())?;
                mapping
                    .notify_on_unmap(UnmapNotify {
                        clear_byte: Some(100),
                        event: Some(xen_hypercall::Port::new(child_port)),
                    })
                    .map_err(|e| e.to_string())?;
                // Leave with the mapping and the files in place: the exit closes them.
                std::mem::forget(mapping);
                std::mem::forget(gntdev);
                std::mem::forget(child_events);
                Ok(())
            })();
            let code = i32::from(mapped.is_err());
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            match waitpid(child, None).map_err(|e| e.to_string())? {
                WaitStatus::Exited(_, 0) => {}
                other => return Err(format!("the child ended with {other:?}")),
            }
            let fired = evtchn::wait(&events, 5000)?;
            if fired != port {
                return Err(format!("port {fired} fired, expected {port}"));
            }
            let mut bytes = [0; 3];
            share
                .mem()
                .read(99, &mut bytes)
                .map_err(|e| e.to_string())?;
            if bytes != [0xab, 0, 0xab] {
                return Err(format!(
                    "bytes 99..102 are {bytes:?} after the child exited"
                ));
            }
            Ok(())
        }
    }
}

/// Bad input refused before any device call.
fn bad_input(_: &Privcmd) -> Result<(), String> {
    let (gntalloc, gntdev) = open()?;
    let checks = [
        ("no reference", gntdev.map(DOM0, &[], false).map(drop)),
        ("no page", gntalloc.share(DOM0, 0, false).map(drop)),
        (
            "DOMID_SELF",
            gntalloc.share(DomId::SELF, 1, false).map(drop),
        ),
        (
            "a copy crossing the page",
            gntdev.copy(&mut [CopySegment {
                source: CopySource::Grant {
                    domid: DOM0,
                    gref: GrantRef(8),
                    offset: 4000,
                },
                dest: CopyDest::Local(&mut [0; 200]),
                len: 200,
            }]),
        ),
        (
            "a local buffer shorter than the copy",
            gntdev.copy(&mut [CopySegment {
                source: CopySource::Local(&[0; 4]),
                dest: CopyDest::Local(&mut [0; 8]),
                len: 8,
            }]),
        ),
    ];
    for (what, result) in checks {
        match result {
            Err(Error::InvalidInput(_) | Error::BadDomain(_)) => {}
            other => return Err(format!("{what}: {other:?}")),
        }
    }
    Ok(())
}
