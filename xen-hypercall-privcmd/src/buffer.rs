//! Hypercall-safe bounce buffers and the page cache behind them.
//!
//! Every buffer owns whole pages that no other live buffer uses. Small buffers
//! (up to [`MAX_CACHED_PAGES`] pages) come from a per-size-class cache of
//! mappings, so that steady-state hypercalls make no `mmap`/`munmap` calls;
//! larger ones are mapped for the buffer and unmapped when it is dropped.
//!
//! Buffer pages are not inherited by `fork` (`MADV_DONTFORK`), so each pool and
//! block remembers the fork generation it was mapped in: in a child, pages of
//! the parent are neither used nor unmapped (their addresses may belong to the
//! child's own mappings by then).

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use nix::errno::Errno as OsErrno;
use xen_hypercall::{Errno, Error, HypercallData, XenConstBuffer, XenMutBuffer};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::sys::{self, BufferSource};

/// Size classes of 1, 2, 4, 8 and 16 pages.
const CLASSES: usize = 5;
/// The largest buffer, in pages, served from the cache.
pub const MAX_CACHED_PAGES: usize = 1 << (CLASSES - 1);
/// How many free mappings each class keeps: most hypercalls use one or two small
/// buffers. 48 pages in all, below the 64 pages some kernels let one open
/// `/dev/xen/hypercall` map (`privcmd-buf.c`'s `limit` parameter, where it
/// exists).
const SLOTS_PER_CLASS: [usize; CLASSES] = [8, 4, 2, 1, 1];
const MAX_SLOTS: usize = 8;

/// Counters of the OS calls the buffer pool made, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferStats {
    /// `mmap` calls made for hypercall buffers (refused ones included).
    pub mmaps: u64,
    /// `munmap` calls made for hypercall buffers.
    pub munmaps: u64,
    /// Mappings `/dev/xen/hypercall` refused (past its per-file page limit on
    /// kernels that have one, or out of memory). Each one made the pool unmap
    /// its free cached pages and try once more; if that failed too, the buffer
    /// failed with [`Error::OutOfMemory`]. There is no silent fallback to
    /// other memory.
    pub device_refusals: u64,
}

/// A run of whole pages owned by exactly one buffer (or by a cache slot).
#[derive(Debug)]
pub(crate) struct Block {
    base: NonNull<u8>,
    len: usize,
    /// The size class it returns to, or `None` for a mapping freed on drop.
    class: Option<usize>,
    /// The fork generation it was mapped in ([`sys::fork_generation`]).
    generation: u64,
}

impl Block {
    /// Whether the pages are this process's: not mapped before a `fork` that
    /// made this process.
    fn is_mapped_here(&self) -> bool {
        self.generation == sys::fork_generation()
    }
}

/// The pool of hypercall-safe pages of one [`Privcmd`](crate::Privcmd).
pub(crate) struct Pool {
    hypercall_dev: Option<OwnedFd>,
    page: usize,
    /// Free mappings per class; a non-null slot owns its mapping. Taking one is
    /// an atomic swap, so two buffers can never get the same pages.
    free: [[AtomicPtr<u8>; MAX_SLOTS]; CLASSES],
    /// The fork generation the cached mappings belong to: the one the pool was
    /// made in. In a child the cache is bypassed.
    generation: u64,
    mmaps: AtomicU64,
    munmaps: AtomicU64,
    device_refusals: AtomicU64,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("source", &self.source())
            .field("page", &self.page)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool mapping pages from `hypercall_dev` (`/dev/xen/hypercall`), or locked
    /// anonymous memory without it.
    ///
    /// Fails only if the fork handler cannot be installed (`ENOMEM`).
    pub(crate) fn new(hypercall_dev: Option<OwnedFd>) -> Result<Self, Error> {
        sys::watch_forks().map_err(|errno| Error::Os {
            operation: "pthread_atfork",
            errno: Errno::from_raw(errno as i32),
        })?;
        Ok(Self {
            hypercall_dev,
            page: sys::page_size(),
            free: Default::default(),
            generation: sys::fork_generation(),
            mmaps: AtomicU64::new(0),
            munmaps: AtomicU64::new(0),
            device_refusals: AtomicU64::new(0),
        })
    }

    /// Whether the cached mappings are this process's (it has not forked since
    /// the pool was made, or this is the parent).
    fn cache_is_mapped_here(&self) -> bool {
        self.generation == sys::fork_generation()
    }

    pub(crate) fn source(&self) -> BufferSource {
        match self.hypercall_dev {
            Some(_) => BufferSource::HypercallDevice,
            None => BufferSource::LockedAnonymous,
        }
    }

    pub(crate) fn stats(&self) -> BufferStats {
        BufferStats {
            mmaps: self.mmaps.load(Ordering::Relaxed),
            munmaps: self.munmaps.load(Ordering::Relaxed),
            device_refusals: self.device_refusals.load(Ordering::Relaxed),
        }
    }

    /// The class and mapping length for a buffer of `bytes` bytes.
    fn layout(&self, bytes: usize) -> Result<(Option<usize>, usize), Error> {
        let pages = bytes.div_ceil(self.page).max(1);
        if pages <= MAX_CACHED_PAGES {
            let class = pages.next_power_of_two().trailing_zeros() as usize;
            Ok((Some(class), self.page << class))
        } else {
            let len = pages
                .checked_mul(self.page)
                .ok_or(Error::OutOfMemory { bytes })?;
            Ok((None, len))
        }
    }

    /// Pages for `bytes` bytes: a cached mapping if one is free, else a new one.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<Block, Error> {
        let (class, len) = self.layout(bytes)?;
        let generation = sys::fork_generation();
        // In a child of a fork, the cache holds the parent's addresses: bypass it.
        let class = class.filter(|_| generation == self.generation);
        if let Some(class) = class {
            // A swap (not a load) reads each slot's latest value: a page freed
            // before this scan reaches its slot is found.
            for slot in &self.free[class][..SLOTS_PER_CLASS[class]] {
                // Acquire: the buffer that freed the page is done with it.
                if let Some(base) = NonNull::new(slot.swap(std::ptr::null_mut(), Ordering::Acquire))
                {
                    return Ok(Block {
                        base,
                        len,
                        class: Some(class),
                        generation,
                    });
                }
            }
        }
        let base = self.map(len, bytes)?;
        Ok(Block {
            base,
            len,
            class,
            generation,
        })
    }

    /// Maps `len` bytes for a `bytes`-byte buffer from the pool's source.
    ///
    /// The hypercall device may refuse: some kernels limit what one open
    /// `/dev/xen/hypercall` maps (`privcmd-buf.c`, `limit`, 64 pages by
    /// default; `EINVAL` beyond it). Then the free cached mappings, which count
    /// against that limit, are unmapped and the mapping is tried once more. It
    /// never falls back to locked anonymous memory, which Linux may move while
    /// Xen uses it (`BufferSource::LockedAnonymous`).
    fn map(&self, len: usize, bytes: usize) -> Result<NonNull<u8>, Error> {
        let dev = self.hypercall_dev.as_ref().map(|fd| fd.as_fd());
        self.mmaps.fetch_add(1, Ordering::Relaxed);
        let errno = match sys::map_pages(dev, len) {
            Ok(base) => return Ok(base),
            Err(errno) => errno,
        };
        if dev.is_none() {
            return Err(match errno {
                // EAGAIN: MAP_LOCKED beyond RLIMIT_MEMLOCK.
                OsErrno::ENOMEM | OsErrno::EAGAIN => Error::OutOfMemory { bytes },
                errno => Error::Os {
                    operation: "mmap of locked anonymous memory",
                    errno: Errno::from_raw(errno as i32),
                },
            });
        }
        self.device_refusals.fetch_add(1, Ordering::Relaxed);
        let errno = if self.trim_cache() > 0 {
            self.mmaps.fetch_add(1, Ordering::Relaxed);
            match sys::map_pages(dev, len) {
                Ok(base) => return Ok(base),
                Err(errno) => errno,
            }
        } else {
            errno
        };
        Err(match errno {
            // The device's page limit (EINVAL: our mapping is otherwise always
            // valid, shared at offset 0) or no memory.
            OsErrno::ENOMEM | OsErrno::EINVAL => Error::OutOfMemory { bytes },
            errno => Error::Os {
                operation: "mmap of /dev/xen/hypercall",
                errno: Errno::from_raw(errno as i32),
            },
        })
    }

    /// Unmaps every free cached mapping (of this process) and returns how many.
    fn trim_cache(&self) -> usize {
        if !self.cache_is_mapped_here() {
            return 0;
        }
        let mut trimmed = 0;
        for (class, slots) in self.free.iter().enumerate() {
            for slot in slots {
                if let Some(base) = NonNull::new(slot.swap(std::ptr::null_mut(), Ordering::Acquire))
                {
                    self.munmaps.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: the swap made this the only owner of a whole
                    // cached mapping of its class's length, made in this
                    // process (checked above); no buffer uses it.
                    unsafe { sys::unmap_pages(base, self.page << class) };
                    trimmed += 1;
                }
            }
        }
        trimmed
    }

    /// Returns `block`'s pages to the cache, or unmaps them if the cache is full.
    /// Pages mapped before a `fork` that made this process are left alone.
    fn free(&self, block: &Block) {
        if !block.is_mapped_here() {
            return;
        }
        // A block's class is `None` when it was made in a child (`alloc`), so
        // only the pool's own generation ever fills the cache.
        if let Some(class) = block.class {
            for slot in &self.free[class][..SLOTS_PER_CLASS[class]] {
                // Release: this buffer's use of the pages happens before the next owner's.
                if slot
                    .compare_exchange(
                        std::ptr::null_mut(),
                        block.base.as_ptr(),
                        Ordering::Release,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return;
                }
            }
        }
        self.munmaps.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `block` is one whole mapping from `map_pages` (the class fixes
        // its length) made in this process (checked above), owned by this block
        // alone, whose lease is being dropped.
        unsafe { sys::unmap_pages(block.base, block.len) };
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.cache_is_mapped_here() {
            // A child of a fork: the cached pages were the parent's.
            return;
        }
        for (class, slots) in self.free.iter_mut().enumerate() {
            for slot in slots.iter_mut() {
                if let Some(base) = NonNull::new(*slot.get_mut()) {
                    // SAFETY: a non-null slot owns a whole mapping of its class's
                    // length, made in this process (checked above); the pool is
                    // being dropped, so no buffer can take it.
                    unsafe { sys::unmap_pages(base, self.page << class) };
                }
            }
        }
    }
}

/// A [`Block`] taken from a [`Pool`], returned to it when dropped.
#[derive(Debug)]
struct Lease<'p> {
    pool: &'p Pool,
    block: Block,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.free(&self.block);
    }
}

/// Copies `bytes` (of data aligned to `align`) into fresh pages from `pool`.
fn bounce<'p>(pool: &'p Pool, align: usize, bytes: &[u8]) -> Result<Lease<'p>, Error> {
    if align > pool.page {
        return Err(Error::InvalidInput("hypercall data aligned beyond a page"));
    }
    let block = pool.alloc(bytes.len())?;
    // SAFETY:
    // - `bytes` is valid for reads of `bytes.len()` bytes (a live borrow);
    // - the block is at least `bytes.len()` bytes of writable memory, owned by
    //   this block alone (`Pool::alloc`), so the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), block.base.as_ptr(), bytes.len()) };
    Ok(Lease { pool, block })
}

/// A read-only hypercall buffer: a copy of the data in hypercall-safe pages.
///
/// It borrows the original data until dropped; dropping it returns its pages to
/// the cache.
pub struct PrivcmdConstBuffer<'p, 'd, T: ?Sized> {
    lease: Lease<'p>,
    ptr: *const T,
    _data: PhantomData<&'d T>,
}

impl<'p, 'd, T> PrivcmdConstBuffer<'p, 'd, T>
where
    T: ?Sized + HypercallData + IntoBytes + Immutable,
{
    pub(crate) fn new(pool: &'p Pool, data: &'d T) -> Result<Self, Error> {
        let lease = bounce(pool, align_of_val(data), data.as_bytes())?;
        let ptr = T::from_raw_parts(lease.block.base.as_ptr(), T::element_count(data));
        Ok(Self {
            lease,
            ptr,
            _data: PhantomData,
        })
    }
}

impl<T: ?Sized> XenConstBuffer<T> for PrivcmdConstBuffer<'_, '_, T> {
    /// Null in a child forked after the buffer was made: its pages are gone.
    fn as_hypercall_ptr(&self) -> *const T {
        if self.lease.block.is_mapped_here() {
            self.ptr
        } else {
            self.ptr.with_addr(0)
        }
    }
}

/// A read-write hypercall buffer: a copy of the data in hypercall-safe pages.
///
/// It borrows the original data mutably until dropped; dropping it copies what
/// Xen wrote back into the data and returns its pages to the cache.
pub struct PrivcmdMutBuffer<'p, 'd, T: ?Sized + FromBytes + IntoBytes> {
    lease: Lease<'p>,
    ptr: *mut T,
    data: &'d mut T,
}

impl<'p, 'd, T> PrivcmdMutBuffer<'p, 'd, T>
where
    T: ?Sized + HypercallData + FromBytes + IntoBytes,
{
    pub(crate) fn new(pool: &'p Pool, data: &'d mut T) -> Result<Self, Error> {
        let count = T::element_count(data);
        // `as_mut_bytes`: the data need not be `Immutable`, it is exclusively borrowed.
        let lease = bounce(pool, align_of_val(data), data.as_mut_bytes())?;
        let ptr = T::from_raw_parts(lease.block.base.as_ptr(), count);
        Ok(Self { lease, ptr, data })
    }
}

impl<T> XenMutBuffer<T> for PrivcmdMutBuffer<'_, '_, T>
where
    T: ?Sized + HypercallData + FromBytes + IntoBytes,
{
    /// Null in a child forked after the buffer was made: its pages are gone.
    fn as_hypercall_ptr(&mut self) -> *mut T {
        if self.lease.block.is_mapped_here() {
            self.ptr
        } else {
            self.ptr.with_addr(0)
        }
    }
}

impl<T: ?Sized + FromBytes + IntoBytes> Drop for PrivcmdMutBuffer<'_, '_, T> {
    /// Copies what Xen wrote back into the data (before the lease returns the pages).
    fn drop(&mut self) {
        let block = &self.lease.block;
        if !block.is_mapped_here() {
            // Made before a `fork` that made this process: the pages are gone.
            return;
        }
        let bytes = self.data.as_mut_bytes();
        // SAFETY:
        // - the block is mapped in this process (checked above) and holds at least
        //   `bytes.len()` initialised bytes (copied in at creation, possibly
        //   overwritten by Xen), readable, and no Rust reference
        //   to them exists (the buffer hands out raw pointers only);
        // - `bytes` is the exclusively borrowed original, writable, in other memory;
        // - any byte pattern is a valid `T` (`FromBytes`).
        unsafe {
            std::ptr::copy_nonoverlapping(block.base.as_ptr(), bytes.as_mut_ptr(), bytes.len())
        };
    }
}

impl<T: ?Sized> fmt::Debug for PrivcmdConstBuffer<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivcmdConstBuffer")
            .field("lease", &self.lease)
            .finish()
    }
}

impl<T: ?Sized + FromBytes + IntoBytes> fmt::Debug for PrivcmdMutBuffer<'_, '_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivcmdMutBuffer")
            .field("lease", &self.lease)
            .finish()
    }
}
