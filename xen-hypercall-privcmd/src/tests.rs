//! Tests that need no Xen: the buffer pool (over locked anonymous memory) and
//! the error mapping. The real-Xen tests are in the testbed's dom0 program.

use std::collections::HashSet;

use super::*;

fn pool() -> Pool {
    Pool::new(None).unwrap()
}

#[test]
fn steady_state_reuses_cached_pages() {
    let pool = pool();
    let mut value = [0u8; 16];
    for _ in 0..3 {
        drop(PrivcmdMutBuffer::new(&pool, &mut value).unwrap());
    }
    // First round maps one page; later rounds reuse it.
    assert_eq!(
        pool.stats(),
        BufferStats {
            mmaps: 1,
            munmaps: 0,
            device_refusals: 0
        }
    );
    for _ in 0..1000 {
        let a = PrivcmdConstBuffer::new(&pool, &7u64).unwrap();
        let b = PrivcmdMutBuffer::new(&pool, &mut value).unwrap();
        drop((a, b));
    }
    // Two pages live at once at most: one more mapping, never unmapped.
    assert_eq!(
        pool.stats(),
        BufferStats {
            mmaps: 2,
            munmaps: 0,
            device_refusals: 0
        }
    );
}

#[test]
fn live_buffers_never_share_pages() {
    let pool = pool();
    let page = sys::page_size();
    let data = [1u8; 10];
    let bigger: Vec<Vec<u8>> = (1..=5).map(|pages| vec![0u8; pages * page]).collect();
    // More live buffers than cache slots, of several classes, twice over.
    for _ in 0..2 {
        let mut live = Vec::new();
        for i in 0..40 {
            live.push(PrivcmdConstBuffer::new(&pool, &data[..]).unwrap());
            live.push(PrivcmdConstBuffer::new(&pool, &bigger[i % 5][..]).unwrap());
        }
        let starts: HashSet<usize> = live
            .iter()
            .map(|b| b.as_hypercall_ptr().cast::<u8>() as usize)
            .collect();
        assert_eq!(
            starts.len(),
            live.len(),
            "two live buffers got the same pages"
        );
        for b in &live {
            assert_eq!(b.as_hypercall_ptr().cast::<u8>() as usize % page, 0);
        }
    }
    // Whatever did not fit in the cache was unmapped, nothing more.
    let stats = pool.stats();
    assert!(
        stats.munmaps > 0 && stats.munmaps < stats.mmaps,
        "{stats:?}"
    );
}

#[test]
fn large_buffers_are_mapped_and_released() {
    let pool = pool();
    let page = sys::page_size();
    let data: Vec<u32> = (0..(MAX_CACHED_PAGES * page / 4 + 1) as u32).collect();
    for round in 1..=3 {
        let b = PrivcmdConstBuffer::new(&pool, &data[..]).unwrap();
        let ptr = b.as_hypercall_ptr();
        assert_eq!(ptr.len(), data.len());
        // SAFETY: the buffer is live and holds a copy of `data`.
        assert_eq!(unsafe { &*ptr }, &data[..]);
        drop(b);
        assert_eq!(
            pool.stats(),
            BufferStats {
                mmaps: round,
                munmaps: round,
                device_refusals: 0
            }
        );
    }
}

#[test]
fn data_goes_in_and_comes_back_on_drop() {
    let pool = pool();
    let mut words = [1u32, 2, 3, 4];
    {
        let mut b = PrivcmdMutBuffer::new(&pool, &mut words[..]).unwrap();
        let ptr = b.as_hypercall_ptr();
        // SAFETY: the buffer is live, holds 4 u32 and nothing else references them.
        let seen = unsafe { &mut *ptr };
        assert_eq!(seen, &[1, 2, 3, 4]);
        seen[2] = 30;
    }
    assert_eq!(words, [1, 2, 30, 4]);
    {
        let mut b = PrivcmdMutBuffer::new(&pool, &mut words).unwrap();
        // SAFETY: as above.
        unsafe { (*b.as_hypercall_ptr())[0] = 99 };
    }
    assert_eq!(words, [99, 2, 30, 4]);
}

#[test]
fn empty_and_zero_sized_data_get_a_page() {
    let pool = pool();
    let empty: [u64; 0] = [];
    let b = PrivcmdConstBuffer::new(&pool, &empty[..]).unwrap();
    assert_eq!(b.as_hypercall_ptr().len(), 0);
    let c = PrivcmdConstBuffer::new(&pool, &()).unwrap();
    // Each holds a page of its own: two distinct, page-aligned pages mapped.
    let (b_page, c_page) = (b.as_hypercall_ptr().addr(), c.as_hypercall_ptr().addr());
    assert_ne!(b_page, c_page);
    assert_eq!(
        (b_page % sys::page_size(), c_page % sys::page_size()),
        (0, 0)
    );
    assert_eq!(pool.stats().mmaps, 2);
}

#[test]
fn pool_is_thread_safe() {
    let pool = pool();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..if cfg!(miri) { 50 } else { 2000u64 } {
                    let mut v = [t, i];
                    let mut b = PrivcmdMutBuffer::new(pool, &mut v).unwrap();
                    let p = b.as_hypercall_ptr();
                    // SAFETY: the buffer is live and exclusively ours.
                    let seen = unsafe { &mut *p };
                    assert_eq!(*seen, [t, i]);
                    seen[1] += 1;
                    drop(b);
                    assert_eq!(v, [t, i + 1]);
                }
            });
        }
    });
    // Threads racing for the cache may map extra pages, but none leaks: what is
    // still mapped is what the cache holds (8 one-page slots).
    let stats = pool.stats();
    assert!(stats.mmaps - stats.munmaps <= 8, "{stats:?}");
    // And once calm, the cache serves every buffer again.
    for _ in 0..100 {
        drop(PrivcmdConstBuffer::new(&pool, &[1u64, 2]).unwrap());
    }
    assert_eq!(pool.stats(), stats);
}

/// Runs `child` in a child process made by `fork` and asserts that it returned
/// `true`. `child` must allocate nothing and take no lock that another thread
/// of the test harness could hold at the fork.
#[cfg(not(miri))]
fn in_forked_child(child: impl FnOnce() -> bool) {
    use nix::libc;
    // SAFETY: the child runs only `child` (no allocation or lock, the caller's
    // promise), then `_exit`s.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", OsErrno::last()),
        0 => {
            let ok = child();
            // SAFETY: ends the child without running the harness's exit paths.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => {
            let mut status = 0;
            // SAFETY: `pid` is our child process; `status` is a live local.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(waited, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "child status {status:#x}"
            );
        }
    }
}

/// Under Miri, which cannot fork: the tests that call this are ignored.
#[cfg(miri)]
fn in_forked_child(_child: impl FnOnce() -> bool) {
    unreachable!("fork tests are ignored under Miri")
}

/// A child of `fork` must neither use nor unmap the parent's cached pages: they
/// are not inherited (`MADV_DONTFORK`), and their addresses may by then be the
/// child's own mappings.
#[test]
#[cfg_attr(miri, ignore = "forks")]
fn a_forked_child_maps_its_own_pages() {
    let pool = pool();
    // Put one page in the cache.
    drop(PrivcmdConstBuffer::new(&pool, &1u64).unwrap());
    let before = pool.stats();
    let mut pool = Some(pool);
    // The child only runs the pool (mmap, munmap, copies, atomics).
    in_forked_child(|| {
        let pool = pool
            .take()
            .expect("the pool is there until the child takes it");
        let mut value = [7u64, 8];
        let used = PrivcmdMutBuffer::new(&pool, &mut value).map(|mut b| {
            // Writes the bounce page: a fault if it were the parent's.
            // SAFETY: the buffer is live and exclusively ours.
            unsafe { (*b.as_hypercall_ptr())[1] = 9 };
        });
        let stats = pool.stats();
        drop(pool);
        let fresh = stats.mmaps == before.mmaps + 1 && stats.munmaps == before.munmaps + 1;
        used.is_ok() && value == [7, 9] && fresh
    });
    let pool = pool.expect("only the child took the pool");
    // The parent's cache is intact.
    drop(PrivcmdConstBuffer::new(&pool, &1u64).unwrap());
    assert_eq!(pool.stats(), before);
}

/// When the hypercall device refuses a mapping, the buffer fails with a typed
/// error and the refusal is counted: no silent fallback to locked anonymous
/// memory, which Linux may move while Xen uses it. (A read-only `/dev/zero`
/// stands in for a device that refuses every shared writable mapping.)
#[test]
#[cfg_attr(miri, ignore = "opens files and maps them")]
fn a_refusing_device_gives_an_error_not_other_memory() {
    let refusing: OwnedFd = File::open("/dev/zero").unwrap().into();
    let pool = Pool::new(Some(refusing)).unwrap();
    assert_eq!(pool.source(), BufferSource::HypercallDevice);
    let err = PrivcmdConstBuffer::new(&pool, &[1u8; 10][..]).unwrap_err();
    assert_eq!(
        err,
        Error::Os {
            operation: "mmap of /dev/xen/hypercall",
            errno: Errno::EACCES
        }
    );
    // One refused mmap, nothing cached to trim, so no second attempt.
    assert_eq!(
        pool.stats(),
        BufferStats {
            mmaps: 1,
            munmaps: 0,
            device_refusals: 1
        }
    );
}

/// A buffer live across a `fork` has no pages in the child (`MADV_DONTFORK`):
/// there its pointer is null, so Xen refuses it with `EFAULT` instead of
/// writing to whatever the child maps at that address.
#[test]
#[cfg_attr(miri, ignore = "forks")]
fn a_buffer_live_across_fork_is_null_in_the_child() {
    let pool = pool();
    let mut value = [7u64, 8];
    let constant = PrivcmdConstBuffer::new(&pool, &[1u64, 2][..]).unwrap();
    let mutable = PrivcmdMutBuffer::new(&pool, &mut value).unwrap();
    let mut buffers = Some((constant, mutable));
    // The child only reads the buffers' pointers and drops them: a drop that
    // copied back from the parent's pages (unmapped in the child) would fault
    // and kill the child.
    in_forked_child(|| {
        let (constant, mut mutable) = buffers.take().expect("taken only in the child");
        let null = constant.as_hypercall_ptr().is_null() && mutable.as_hypercall_ptr().is_null();
        let len = constant.as_hypercall_ptr().len();
        drop((constant, mutable));
        null && len == 2
    });
    let (constant, mut mutable) = buffers.expect("only the child took the buffers");
    // In the parent the buffers are intact.
    // SAFETY: the buffer is live and exclusively ours.
    unsafe { (*mutable.as_hypercall_ptr())[0] = 70 };
    drop((constant, mutable));
    assert_eq!(value, [70, 8]);
}

/// What the second question (`XENVER_version` on the same fd) answers.
const XEN_ANSWERS: fn() -> bool = || false;
const LINUX_REFUSES: fn() -> bool = || true;
const NOT_ASKED: fn() -> bool = || panic!("only an EPERM on an unrestricted fd is asked about");

#[test]
fn hypercall_errors_carry_xen_codes() {
    assert_eq!(
        hypercall_error(OsErrno::ENOSYS, UNRESTRICTED, NOT_ASKED),
        Error::Xen(Errno::ENOSYS)
    );
    assert_eq!(
        hypercall_error(OsErrno::EINVAL, UNRESTRICTED, NOT_ASKED),
        Error::Xen(Errno::EINVAL)
    );
    assert_eq!(
        hypercall_error(OsErrno::EPERM, UNRESTRICTED, XEN_ANSWERS),
        Error::Xen(Errno::EPERM)
    );
    assert_eq!(
        hypercall_error(OsErrno::EPERM, 3, NOT_ASKED),
        Error::Restricted { domid: 3 }
    );
    assert_eq!(
        hypercall_error(OsErrno::EINVAL, 3, NOT_ASKED),
        Error::Xen(Errno::EINVAL)
    );
}

/// A domU's privcmd refuses every hypercall by itself (XSA-482): an `EPERM` that
/// `XENVER_version` also gets is Linux's, not Xen's.
#[test]
fn an_eperm_linux_gives_every_hypercall_is_the_kernel_s_restriction() {
    let error = hypercall_error(OsErrno::EPERM, UNRESTRICTED, LINUX_REFUSES);
    assert_eq!(error, Error::RestrictedByKernel);
    assert_eq!(error.kind(), xen_hypercall::ErrorKind::PermissionDenied);
    assert!(error.to_string().contains("unrestricted=1"), "{error}");
}

/// Linux's own failures of the ioctl are not dressed up as Xen's codes.
#[test]
fn errnos_xen_does_not_have_are_os_errors() {
    for errno in [OsErrno::ENOTTY, OsErrno::EBADFD, OsErrno::ESPIPE] {
        assert_eq!(
            hypercall_error(errno, UNRESTRICTED, NOT_ASKED),
            Error::Os {
                operation: "IOCTL_PRIVCMD_HYPERCALL",
                errno: Errno::from_raw(errno as i32)
            }
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "opens files")]
fn open_errors_say_what_to_do() {
    let root = std::env::temp_dir().join(format!("privcmd-open-errors-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    assert!(matches!(
        open_error(OsErrno::ENOENT, PRIVCMD_DEVICE, &root),
        Error::NotOnXen(_)
    ));
    std::fs::create_dir_all(root.join("sys/hypervisor")).unwrap();
    std::fs::write(root.join("sys/hypervisor/type"), "xen\n").unwrap();
    assert_eq!(
        open_error(OsErrno::ENOENT, PRIVCMD_DEVICE, &root),
        Error::DriverNotLoaded {
            device: PRIVCMD_DEVICE,
            module: "xen-privcmd"
        }
    );
    std::fs::remove_file(root.join("sys/hypervisor/type")).unwrap();
    std::fs::create_dir_all(root.join("dev/xen")).unwrap();
    assert!(matches!(
        open_error(OsErrno::ENOENT, PRIVCMD_DEVICE, &root),
        Error::DriverNotLoaded { .. }
    ));
    assert_eq!(
        open_error(OsErrno::EACCES, PRIVCMD_DEVICE, &root),
        Error::PermissionDenied {
            device: PRIVCMD_DEVICE
        }
    );
    assert!(matches!(
        open_error(OsErrno::EMFILE, PRIVCMD_DEVICE, &root),
        Error::Os { .. }
    ));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "opens files")]
fn privcmd_is_send_sync_and_opens_or_explains() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Privcmd>();
    // On a machine without Xen this is the most common outcome.
    match Privcmd::open() {
        Ok(p) => {
            let link = std::fs::read_link(format!("/proc/self/fd/{}", p.as_raw_fd())).unwrap();
            assert_eq!(link, Path::new(PRIVCMD_DEVICE));
        }
        Err(e) => assert!(
            matches!(
                e,
                Error::NotOnXen(_) | Error::DriverNotLoaded { .. } | Error::PermissionDenied { .. }
            ),
            "{e}"
        ),
    }
}

#[test]
fn uapi_layout_matches_linux() {
    assert_eq!(std::mem::offset_of!(sys::PrivcmdHypercall, arg), 8);
    assert_eq!(size_of::<sys::PrivcmdHypercall>(), 48);
}

/// The structures and ioctl numbers equal what a C compiler computes from the Linux UAPI header
/// as Xen's tools ship it (`/usr/include/xen/sys/privcmd.h`, from libxen-dev).
#[test]
#[cfg_attr(miri, ignore = "runs a C compiler")]
fn uapi_matches_the_c_header() {
    use std::mem::offset_of;
    let dir = std::env::temp_dir().join(format!("privcmd-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("uapi.c");
    std::fs::write(
        &source,
        r#"#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/sys/privcmd.h>
#define V(e) printf("%lu\n", (unsigned long)(e))
int main(void) {
    V(sizeof(privcmd_hypercall_t)); V(offsetof(privcmd_hypercall_t, arg));
    V(sizeof(privcmd_mmapbatch_v2_t)); V(offsetof(privcmd_mmapbatch_v2_t, dom));
    V(offsetof(privcmd_mmapbatch_v2_t, addr)); V(offsetof(privcmd_mmapbatch_v2_t, arr));
    V(offsetof(privcmd_mmapbatch_v2_t, err));
    V(sizeof(privcmd_mmap_resource_t)); V(offsetof(privcmd_mmap_resource_t, type));
    V(offsetof(privcmd_mmap_resource_t, id)); V(offsetof(privcmd_mmap_resource_t, idx));
    V(offsetof(privcmd_mmap_resource_t, num)); V(offsetof(privcmd_mmap_resource_t, addr));
    V(IOCTL_PRIVCMD_HYPERCALL); V(IOCTL_PRIVCMD_MMAPBATCH_V2); V(IOCTL_PRIVCMD_RESTRICT);
    V(IOCTL_PRIVCMD_MMAP_RESOURCE);
    return 0;
}
"#,
    )
    .unwrap();
    let binary = dir.join("uapi");
    let built = std::process::Command::new("cc")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("a C compiler (cc)");
    assert!(
        built.status.success(),
        "compiling against <xen/sys/privcmd.h> failed (apt-get install libxen-dev): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let out = std::process::Command::new(&binary).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let c: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let ours: Vec<u64> = [
        size_of::<sys::PrivcmdHypercall>(),
        offset_of!(sys::PrivcmdHypercall, arg),
        size_of::<sys::PrivcmdMmapBatchV2>(),
        offset_of!(sys::PrivcmdMmapBatchV2, dom),
        offset_of!(sys::PrivcmdMmapBatchV2, addr),
        offset_of!(sys::PrivcmdMmapBatchV2, arr),
        offset_of!(sys::PrivcmdMmapBatchV2, err),
        size_of::<sys::PrivcmdMmapResource>(),
        offset_of!(sys::PrivcmdMmapResource, kind),
        offset_of!(sys::PrivcmdMmapResource, id),
        offset_of!(sys::PrivcmdMmapResource, idx),
        offset_of!(sys::PrivcmdMmapResource, num),
        offset_of!(sys::PrivcmdMmapResource, addr),
    ]
    .into_iter()
    .map(|v| v as u64)
    .chain(
        [
            sys::IOCTL_PRIVCMD_HYPERCALL,
            sys::IOCTL_PRIVCMD_MMAPBATCH_V2,
            sys::IOCTL_PRIVCMD_RESTRICT,
            sys::IOCTL_PRIVCMD_MMAP_RESOURCE,
        ]
        .map(u64::from),
    )
    .collect();
    assert_eq!(ours, c);
}
