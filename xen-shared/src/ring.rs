//! Xen's byte rings (`io/console.h`, `io/xs_wire.h`): one implementation for every such ring.
//!
//! A byte ring is a power-of-two data array and two free-running `u32` indices in a shared page:
//! the producer writes bytes at `prod`, then advances `prod`; the consumer reads bytes at `cons`,
//! then advances `cons`. Indices are masked only to address the array, `prod - cons` is computed
//! with wrapping arithmetic and is never more than the array's size; the peer is untrusted, so
//! every operation reads each index once, validates it, and never uses it unmasked as an offset.
//!
//! Roles are per direction: a console frontend produces into `out` and consumes `in`; the backend
//! (xenconsoled) does the reverse. A [`Producer`] or [`Consumer`] is one side of one direction;
//! the caller notifies the peer (an event channel) only when an operation reports that bytes moved.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::mem::{AccessError, SharedMem};

/// Where one direction of a byte ring lives in its shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Offset of the data array.
    pub data: usize,
    /// Size of the data array in bytes: a power of two, at most 2^31.
    pub size: u32,
    /// Offset of the consumer index (`u32`, naturally aligned).
    pub cons: usize,
    /// Offset of the producer index (`u32`, naturally aligned).
    pub prod: usize,
}

// The console page, `struct xencons_interface` of `io/console.h`; the offsets come from xen-sys.
type Xencons = xen_sys::x86_64::xencons_interface;
const _: () = {
    use core::mem::offset_of;
    type Arm = xen_sys::aarch64::xencons_interface;
    assert!(offset_of!(Xencons, in_) == offset_of!(Arm, in_));
    assert!(offset_of!(Xencons, out) == offset_of!(Arm, out));
    assert!(offset_of!(Xencons, in_cons) == offset_of!(Arm, in_cons));
    assert!(offset_of!(Xencons, out_prod) == offset_of!(Arm, out_prod));
};

/// `XENSTORE_RING_SIZE` of `io/xs_wire.h`.
const XENSTORE_RING_SIZE: u32 = 1024;

impl RingLayout {
    /// The console's input (`in`, `in_cons`, `in_prod`): the backend produces, the guest consumes.
    pub const CONSOLE_IN: Self = Self {
        data: core::mem::offset_of!(Xencons, in_),
        size: 1024,
        cons: core::mem::offset_of!(Xencons, in_cons),
        prod: core::mem::offset_of!(Xencons, in_prod),
    };

    /// The console's output (`out`, `out_cons`, `out_prod`): the guest produces, the backend
    /// consumes.
    pub const CONSOLE_OUT: Self = Self {
        data: core::mem::offset_of!(Xencons, out),
        size: 2048,
        cons: core::mem::offset_of!(Xencons, out_cons),
        prod: core::mem::offset_of!(Xencons, out_prod),
    };

    /// Xenstore requests (`struct xenstore_domain_interface`: `req[1024]` at 0, `req_cons` at
    /// 2048, `req_prod` at 2052): the guest produces, xenstored consumes.
    pub const XENSTORE_REQ: Self = Self {
        data: 0,
        size: XENSTORE_RING_SIZE,
        cons: 2 * XENSTORE_RING_SIZE as usize,
        prod: 2 * XENSTORE_RING_SIZE as usize + 4,
    };

    /// Xenstore replies and watch events (`rsp[1024]` at 1024, `rsp_cons` at 2056, `rsp_prod` at
    /// 2060): xenstored produces, the guest consumes.
    pub const XENSTORE_RSP: Self = Self {
        data: XENSTORE_RING_SIZE as usize,
        size: XENSTORE_RING_SIZE,
        cons: 2 * XENSTORE_RING_SIZE as usize + 8,
        prod: 2 * XENSTORE_RING_SIZE as usize + 12,
    };

    /// Checks this layout against memory of `len` bytes: a power-of-two size, everything in
    /// bounds, aligned indices, and no overlap between the array and the indices.
    ///
    /// # Errors
    ///
    /// [`LayoutError::Size`] for a size that is not a power of two up to 2^31,
    /// [`LayoutError::Access`] for an array or index out of bounds or a misaligned index,
    /// [`LayoutError::Overlap`] if the array and the indices overlap.
    pub fn check(&self, len: usize) -> Result<(), LayoutError> {
        if !self.size.is_power_of_two() || self.size > 1 << 31 {
            return Err(LayoutError::Size(self.size));
        }
        let size = self.size as usize;
        let in_bounds = |offset: usize, n: usize| match offset.checked_add(n) {
            Some(end) if end <= len => Ok(()),
            _ => Err(AccessError::OutOfBounds {
                offset,
                len: n,
                size: len,
            }),
        };
        in_bounds(self.data, size)?;
        for index in [self.cons, self.prod] {
            in_bounds(index, 4)?;
            if index % 4 != 0 {
                return Err(AccessError::Misaligned {
                    offset: index,
                    align: 4,
                }
                .into());
            }
        }
        let overlaps =
            |a: usize, a_len: usize, b: usize, b_len: usize| a < b + b_len && b < a + a_len;
        if overlaps(self.data, size, self.cons, 4)
            || overlaps(self.data, size, self.prod, 4)
            || overlaps(self.cons, 4, self.prod, 4)
        {
            return Err(LayoutError::Overlap);
        }
        Ok(())
    }
}

/// A ring layout that does not fit its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The data size is not a power of two no larger than 2^31.
    #[error("ring size {0} is not a power of two no larger than 2^31")]
    Size(u32),
    /// The array or an index is out of bounds, or an index is misaligned.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The data array and the indices overlap.
    #[error("the ring's data array and indices overlap")]
    Overlap,
}

/// A failed ring operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The indices claim more unconsumed bytes than the ring holds: the peer wrote nonsense.
    #[error(
        "impossible ring indices: producer {prod} - consumer {cons} exceeds the ring size {size}"
    )]
    Corrupt {
        /// The producer index as read.
        prod: u32,
        /// The consumer index as read.
        cons: u32,
        /// The ring's size.
        size: u32,
    },
    /// The peer's index moved the wrong way (a [`ProducerCursor`] or [`ConsumerCursor`] look):
    /// fewer bytes ready to read than were already seen, or more bytes unconsumed than were
    /// written.
    #[error("the peer's ring index moved backwards: {now} bytes where {then} were known")]
    Backwards {
        /// The count as last known: bytes ready to read (at least), or unconsumed (at most).
        then: u32,
        /// The count the peer's index gives now.
        now: u32,
    },
    /// The memory refused an access (only a [`RingMemory`] that changed size can cause this).
    #[error(transparent)]
    Access(#[from] AccessError),
}

/// The memory a ring lives in: what a [`Producer`] or [`Consumer`] needs from it.
///
/// [`SharedMem`] is the implementation for real shared pages; tests and fuzzers implement it to
/// count accesses or to play a hostile peer that changes the memory during an operation.
pub trait RingMemory {
    /// The size of the memory in bytes.
    fn len(&self) -> usize;
    /// Whether the memory is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Loads the `u32` index at `offset` with `order`.
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError>;
    /// Stores `value` into the `u32` index at `offset` with `order`.
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError>;
    /// Copies bytes at `offset` into `dst`.
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError>;
    /// Copies `src` to the bytes at `offset`.
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError>;
}

impl RingMemory for SharedMem<'_> {
    fn len(&self) -> usize {
        SharedMem::len(self)
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        Ok(self.atomic::<AtomicU32>(offset)?.load(order))
    }
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        self.atomic::<AtomicU32>(offset)?.store(value, order);
        Ok(())
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        SharedMem::read(self, offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        SharedMem::write(self, offset, src)
    }
}

/// A shared reference to ring memory is ring memory (a test keeps its mock peer while rings use it).
impl<M: RingMemory + ?Sized> RingMemory for &M {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        (**self).load_index(offset, order)
    }
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        (**self).store_index(offset, value, order)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        (**self).read(offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        (**self).write(offset, src)
    }
}

/// Both indices of one direction, read once for one operation and validated.
#[derive(Debug, Clone, Copy)]
struct Indices {
    prod: u32,
    cons: u32,
    /// `prod - cons`: bytes written and not yet consumed, at most the ring's size.
    used: u32,
}

/// One direction of a ring in `M`, bound to a checked layout.
#[derive(Debug)]
struct Ring<M> {
    mem: M,
    layout: RingLayout,
}

impl<M: RingMemory> Ring<M> {
    fn new(mem: M, layout: RingLayout) -> Result<Self, LayoutError> {
        layout.check(mem.len())?;
        Ok(Self { mem, layout })
    }

    /// Reads each index once: the peer's with Acquire (what it published before moving its
    /// index is visible after), ours with Relaxed (it lives in shared memory, so it is read and
    /// validated like the peer's).
    fn indices(&self, peer_is_producer: bool) -> Result<Indices, RingError> {
        let order = |peer| {
            if peer {
                Ordering::Acquire
            } else {
                Ordering::Relaxed
            }
        };
        let cons = self
            .mem
            .load_index(self.layout.cons, order(!peer_is_producer))?;
        let prod = self
            .mem
            .load_index(self.layout.prod, order(peer_is_producer))?;
        let used = prod.wrapping_sub(cons);
        if used > self.layout.size {
            return Err(RingError::Corrupt {
                prod,
                cons,
                size: self.layout.size,
            });
        }
        Ok(Indices { prod, cons, used })
    }

    fn pieces(&self, index: u32, len: usize) -> [(usize, core::ops::Range<usize>); 2] {
        self.layout.pieces(index, len)
    }
}

impl RingLayout {
    /// The array's two pieces from ring position `index` for `len` bytes (`len <= size`): the
    /// first up to the array's end, the second from its start.
    fn pieces(&self, index: u32, len: usize) -> [(usize, core::ops::Range<usize>); 2] {
        let size = self.size as usize;
        let start = (index & (self.size - 1)) as usize;
        let first = len.min(size - start);
        [(self.data + start, 0..first), (self.data, first..len)]
    }
}

/// The producing side of one ring direction: copies bytes in and publishes them.
#[derive(Debug)]
pub struct Producer<M> {
    ring: Ring<M>,
}

impl<M: RingMemory> Producer<M> {
    /// Produces into the direction `layout` of `mem`, after checking the layout fits.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the size is not a power of two, the data array or an index lies
    /// outside `mem` or is misaligned, or the array and the indices overlap.
    pub fn new(mem: M, layout: RingLayout) -> Result<Self, LayoutError> {
        Ok(Self {
            ring: Ring::new(mem, layout)?,
        })
    }

    /// Copies as much of `src` as fits and publishes it; returns how many bytes were written.
    ///
    /// `Ok(0)` means the ring is full (or `src` is empty) and nothing changed; notify the peer
    /// only after a non-zero result.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the peer's consumer index claims more free space than the
    /// ring has; nothing is written. [`RingError::Access`] only from a [`RingMemory`] that
    /// changed size.
    pub fn write(&mut self, src: &[u8]) -> Result<usize, RingError> {
        let ix = self.ring.indices(false)?;
        let n = src.len().min((self.ring.layout.size - ix.used) as usize);
        if n == 0 {
            return Ok(0);
        }
        for (offset, range) in self.ring.pieces(ix.prod, n) {
            self.ring.mem.write(offset, &src[range])?;
        }
        // Release: the bytes above are visible before the index that publishes them.
        // `n <= size <= 2^31`, so the cast is exact.
        self.ring.mem.store_index(
            self.ring.layout.prod,
            ix.prod.wrapping_add(n as u32),
            Ordering::Release,
        )?;
        Ok(n)
    }

    /// Bytes written and not yet consumed by the peer (zero once it has consumed everything).
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the indices claim more than the ring holds, [`RingError::Access`]
    /// if the memory refuses the access (it changed size).
    pub fn unconsumed(&self) -> Result<usize, RingError> {
        Ok(self.ring.indices(false)?.used as usize)
    }

    /// Bytes that a [`write`](Self::write) could copy now.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the indices claim more than the ring holds, [`RingError::Access`]
    /// if the memory refuses the access (it changed size).
    pub fn free(&self) -> Result<usize, RingError> {
        let ix = self.ring.indices(false)?;
        Ok((self.ring.layout.size - ix.used) as usize)
    }

    /// The ring's layout.
    pub fn layout(&self) -> RingLayout {
        self.ring.layout
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.ring.mem
    }
}

/// The consuming side of one ring direction: copies published bytes out and frees their space.
#[derive(Debug)]
pub struct Consumer<M> {
    ring: Ring<M>,
}

impl<M: RingMemory> Consumer<M> {
    /// Consumes from the direction `layout` of `mem`, after checking the layout fits.
    ///
    /// # Errors
    ///
    /// [`LayoutError`] if the size is not a power of two, the data array or an index lies
    /// outside `mem` or is misaligned, or the array and the indices overlap.
    pub fn new(mem: M, layout: RingLayout) -> Result<Self, LayoutError> {
        Ok(Self {
            ring: Ring::new(mem, layout)?,
        })
    }

    /// Copies up to `dst.len()` available bytes out and frees their space; returns how many.
    ///
    /// `Ok(0)` means the ring is empty (or `dst` is) and nothing changed; notify the peer only
    /// after a non-zero result.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the peer's producer index claims more bytes than the ring
    /// holds; nothing is consumed. [`RingError::Access`] only from a [`RingMemory`] that
    /// changed size.
    pub fn read(&mut self, dst: &mut [u8]) -> Result<usize, RingError> {
        let n = self.copy_out(dst)?;
        if n.moved == 0 {
            return Ok(0);
        }
        // Release: the bytes were copied out before the space is handed back.
        self.ring.mem.store_index(
            self.ring.layout.cons,
            n.cons.wrapping_add(n.moved as u32),
            Ordering::Release,
        )?;
        Ok(n.moved)
    }

    /// Copies up to `dst.len()` available bytes out without consuming them.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the indices claim more than the ring holds, [`RingError::Access`]
    /// if the memory refuses the access (it changed size).
    pub fn peek(&self, dst: &mut [u8]) -> Result<usize, RingError> {
        Ok(self.copy_out(dst)?.moved)
    }

    /// Bytes available to [`read`](Self::read) now.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the indices claim more than the ring holds, [`RingError::Access`]
    /// if the memory refuses the access (it changed size).
    pub fn available(&self) -> Result<usize, RingError> {
        Ok(self.ring.indices(true)?.used as usize)
    }

    /// The ring's layout.
    pub fn layout(&self) -> RingLayout {
        self.ring.layout
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.ring.mem
    }

    fn copy_out(&self, dst: &mut [u8]) -> Result<CopyOut, RingError> {
        let ix = self.ring.indices(true)?;
        let moved = dst.len().min(ix.used as usize);
        for (offset, range) in self.ring.pieces(ix.cons, moved) {
            self.ring.mem.read(offset, &mut dst[range])?;
        }
        Ok(CopyOut {
            cons: ix.cons,
            moved,
        })
    }
}

struct CopyOut {
    cons: u32,
    moved: usize,
}

/// Checks a layout and reads both indices once, for a cursor's start: `(own, peer)`.
fn start<M: RingMemory + ?Sized>(
    mem: &M,
    layout: RingLayout,
    own: usize,
    peer: usize,
) -> Result<(u32, u32), CursorError> {
    layout.check(mem.len())?;
    let own = mem.load_index(own, Ordering::Relaxed)?;
    let peer = mem.load_index(peer, Ordering::Acquire)?;
    Ok((own, peer))
}

/// Why a cursor could not start: its layout does not fit the memory, or the indices are
/// impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// The layout does not fit the memory.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The indices read are impossible, or the memory refused the access.
    #[error(transparent)]
    Ring(#[from] RingError),
}

impl From<AccessError> for CursorError {
    fn from(e: AccessError) -> Self {
        Self::Ring(e.into())
    }
}

/// The producing side of one ring direction for memory lent at each call (an owner that keeps
/// the memory and the cursor side by side): validated once, then one index read per look.
///
/// [`new`](Self::new) checks the layout against the memory and reads both indices once. From
/// then on the cursor keeps its own index (only this side writes it; what the shared copy
/// holds is never read again) and the peer's as last seen. [`look`](Self::look) reads the
/// peer's index once and validates it: the consumer moves forward only, and never past the
/// producer, so the bytes unconsumed can only shrink between two writes
/// ([`RingError::Backwards`] otherwise). [`write`](Self::write) reads no index: it fills the
/// room the last look found.
///
/// The memory must be the same at every call (or at least as large): an access beyond it is
/// [`RingError::Access`], never out of bounds.
#[derive(Debug, Clone, Copy)]
pub struct ProducerCursor {
    layout: RingLayout,
    prod: u32,
    /// The consumer index as last seen: `prod - cons <= size`.
    cons: u32,
}

impl ProducerCursor {
    /// Starts producing into the direction `layout` of `mem` where its indices stand.
    ///
    /// # Errors
    ///
    /// [`CursorError::Layout`] if `layout` does not fit `mem`, [`CursorError::Ring`] if the
    /// indices found are impossible.
    pub fn new<M: RingMemory + ?Sized>(mem: &M, layout: RingLayout) -> Result<Self, CursorError> {
        let (prod, cons) = start(mem, layout, layout.prod, layout.cons)?;
        let cursor = Self { layout, prod, cons };
        cursor.unconsumed_at(cons)?;
        Ok(cursor)
    }

    /// `prod - cons`, if the ring can hold it.
    fn unconsumed_at(&self, cons: u32) -> Result<u32, RingError> {
        let used = self.prod.wrapping_sub(cons);
        if used > self.layout.size {
            return Err(RingError::Corrupt {
                prod: self.prod,
                cons,
                size: self.layout.size,
            });
        }
        Ok(used)
    }

    /// Reads the consumer index once (Acquire: the peer read the bytes it frees before moving
    /// it), validates it, and returns the bytes written and not yet consumed.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the indices claim more than the ring holds, [`RingError::Access`]
    /// if the memory refuses the access (it changed size). [`RingError::Backwards`] if the peer's
    /// index moved the wrong way.
    pub fn look<M: RingMemory + ?Sized>(&mut self, mem: &M) -> Result<u32, RingError> {
        let cons = mem.load_index(self.layout.cons, Ordering::Acquire)?;
        let now = self.unconsumed_at(cons)?;
        let then = self.unconsumed();
        if now > then {
            return Err(RingError::Backwards { then, now });
        }
        self.cons = cons;
        Ok(now)
    }

    /// Bytes written and not consumed, as of the last look.
    pub fn unconsumed(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }

    /// Room to write, as of the last look.
    pub fn free(&self) -> u32 {
        self.layout.size - self.unconsumed()
    }

    /// Copies as much of `src` as fits the room the last look found and publishes it; returns
    /// how many bytes were written (`0`: no room, or `src` is empty, and nothing changed).
    ///
    /// # Errors
    ///
    /// [`RingError::Access`] if the memory refuses the access (it changed size).
    pub fn write<M: RingMemory + ?Sized>(
        &mut self,
        mem: &M,
        src: &[u8],
    ) -> Result<usize, RingError> {
        let n = src.len().min(self.free() as usize);
        if n == 0 {
            return Ok(0);
        }
        for (offset, range) in self.layout.pieces(self.prod, n) {
            if !range.is_empty() {
                mem.write(offset, &src[range])?;
            }
        }
        // `n <= size <= 2^31`, so the cast is exact.
        let prod = self.prod.wrapping_add(n as u32);
        // Release: the bytes above are visible before the index that publishes them.
        mem.store_index(self.layout.prod, prod, Ordering::Release)?;
        self.prod = prod;
        Ok(n)
    }

    /// The ring's layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }
}

/// The consuming side of one ring direction for memory lent at each call: validated once,
/// then one index read per look (as [`ProducerCursor`]).
///
/// It keeps its own index and the producer's as last seen. [`look`](Self::look) reads the
/// producer index once: it moves forward only and never more than the ring's size past the
/// consumer, so the bytes ready to read can only grow between two reads
/// ([`RingError::Backwards`] otherwise). [`read`](Self::read) reads no index: it takes what
/// the last look found.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerCursor {
    layout: RingLayout,
    cons: u32,
    /// The producer index as last seen: `prod - cons <= size`.
    prod: u32,
}

impl ConsumerCursor {
    /// Starts consuming from the direction `layout` of `mem` where its indices stand.
    ///
    /// # Errors
    ///
    /// [`CursorError::Layout`] if `layout` does not fit `mem`, [`CursorError::Ring`] if the
    /// indices found are impossible.
    pub fn new<M: RingMemory + ?Sized>(mem: &M, layout: RingLayout) -> Result<Self, CursorError> {
        let (cons, prod) = start(mem, layout, layout.cons, layout.prod)?;
        let cursor = Self { layout, cons, prod };
        cursor.ready_at(prod)?;
        Ok(cursor)
    }

    /// `prod - cons`, if the ring can hold it.
    fn ready_at(&self, prod: u32) -> Result<u32, RingError> {
        let used = prod.wrapping_sub(self.cons);
        if used > self.layout.size {
            return Err(RingError::Corrupt {
                prod,
                cons: self.cons,
                size: self.layout.size,
            });
        }
        Ok(used)
    }

    /// Reads the producer index once (Acquire: the bytes it publishes are visible after),
    /// validates it, and returns the bytes ready to read.
    ///
    /// # Errors
    ///
    /// [`RingError::Corrupt`] if the indices claim more than the ring holds, [`RingError::Access`]
    /// if the memory refuses the access (it changed size). [`RingError::Backwards`] if the peer's
    /// index moved the wrong way.
    pub fn look<M: RingMemory + ?Sized>(&mut self, mem: &M) -> Result<u32, RingError> {
        let prod = mem.load_index(self.layout.prod, Ordering::Acquire)?;
        let now = self.ready_at(prod)?;
        let then = self.ready();
        if now < then {
            return Err(RingError::Backwards { then, now });
        }
        self.prod = prod;
        Ok(now)
    }

    /// Bytes ready to read, as of the last look.
    pub fn ready(&self) -> u32 {
        self.prod.wrapping_sub(self.cons)
    }

    /// Copies up to `dst.len()` of the bytes the last look found and frees their space;
    /// returns how many (`0`: none were found, or `dst` is empty, and nothing changed).
    ///
    /// # Errors
    ///
    /// [`RingError::Access`] if the memory refuses the access (it changed size).
    pub fn read<M: RingMemory + ?Sized>(
        &mut self,
        mem: &M,
        dst: &mut [u8],
    ) -> Result<usize, RingError> {
        let n = dst.len().min(self.ready() as usize);
        if n == 0 {
            return Ok(0);
        }
        for (offset, range) in self.layout.pieces(self.cons, n) {
            if !range.is_empty() {
                mem.read(offset, &mut dst[range])?;
            }
        }
        // `n <= size <= 2^31`, so the cast is exact.
        let cons = self.cons.wrapping_add(n as u32);
        // Release: the bytes were copied out before the space is handed back.
        mem.store_index(self.layout.cons, cons, Ordering::Release)?;
        self.cons = cons;
        Ok(n)
    }

    /// The ring's layout.
    pub fn layout(&self) -> RingLayout {
        self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::SharedPage;

    #[test]
    fn layouts_match_the_headers() {
        assert_eq!(
            RingLayout::CONSOLE_IN,
            RingLayout {
                data: 0,
                size: 1024,
                cons: 3072,
                prod: 3076
            }
        );
        assert_eq!(
            RingLayout::CONSOLE_OUT,
            RingLayout {
                data: 1024,
                size: 2048,
                cons: 3080,
                prod: 3084
            }
        );
        assert_eq!(RingLayout::XENSTORE_RSP.prod, 2060);
        for layout in [
            RingLayout::CONSOLE_IN,
            RingLayout::CONSOLE_OUT,
            RingLayout::XENSTORE_REQ,
            RingLayout::XENSTORE_RSP,
        ] {
            layout.check(3088).unwrap();
        }
        assert!(RingLayout::CONSOLE_OUT.check(3087).is_err());
    }

    #[test]
    fn bad_layouts_are_refused() {
        let ok = RingLayout::CONSOLE_OUT;
        assert_eq!(
            RingLayout { size: 1000, ..ok }.check(4096),
            Err(LayoutError::Size(1000))
        );
        assert_eq!(
            RingLayout { size: 0, ..ok }.check(4096),
            Err(LayoutError::Size(0))
        );
        assert!(matches!(
            RingLayout { cons: 3081, ..ok }.check(4096),
            Err(LayoutError::Access(AccessError::Misaligned { .. }))
        ));
        assert_eq!(
            RingLayout { prod: 1024, ..ok }.check(4096),
            Err(LayoutError::Overlap)
        );
        assert_eq!(
            RingLayout { prod: 3080, ..ok }.check(4096),
            Err(LayoutError::Overlap)
        );
        assert!(matches!(
            RingLayout {
                data: usize::MAX,
                ..ok
            }
            .check(4096),
            Err(LayoutError::Access(AccessError::OutOfBounds { .. }))
        ));
    }

    #[test]
    fn bytes_travel_across_the_array_end_and_the_index_wrap() {
        let page = SharedPage::new();
        let mem = page.mem();
        let layout = RingLayout::CONSOLE_OUT;
        let start = u32::MAX - 5;
        mem.atomic::<AtomicU32>(layout.prod)
            .unwrap()
            .store(start, Ordering::Relaxed);
        mem.atomic::<AtomicU32>(layout.cons)
            .unwrap()
            .store(start, Ordering::Relaxed);
        let mut tx = Producer::new(mem, layout).unwrap();
        let mut rx = Consumer::new(mem, layout).unwrap();
        assert_eq!(tx.write(b"0123456789").unwrap(), 10);
        assert_eq!(tx.unconsumed().unwrap(), 10);
        // The first bytes sit at the array's end, the rest at its start.
        let mut tail = [0u8; 6];
        mem.read(layout.data + 2048 - 6, &mut tail).unwrap();
        assert_eq!(&tail, b"012345");
        let mut out = [0u8; 16];
        assert_eq!(rx.peek(&mut out[..3]).unwrap(), 3);
        assert_eq!(rx.read(&mut out).unwrap(), 10);
        assert_eq!(&out[..10], b"0123456789");
        assert_eq!(rx.read(&mut out).unwrap(), 0);
        assert_eq!(tx.unconsumed().unwrap(), 0);
        assert_eq!(
            mem.atomic::<AtomicU32>(layout.prod)
                .unwrap()
                .load(Ordering::Relaxed),
            4
        );
    }

    #[test]
    fn a_full_ring_takes_a_partial_write_then_nothing() {
        let page = SharedPage::new();
        let mut tx = Producer::new(page.mem(), RingLayout::CONSOLE_IN).unwrap();
        assert_eq!(tx.write(&[1; 1000]).unwrap(), 1000);
        assert_eq!(tx.free().unwrap(), 24);
        assert_eq!(tx.write(&[2; 100]).unwrap(), 24);
        assert_eq!(tx.write(&[3; 100]).unwrap(), 0);
        assert_eq!(tx.write(&[]).unwrap(), 0);
    }

    #[test]
    fn impossible_indices_are_a_typed_error() {
        let page = SharedPage::new();
        let mem = page.mem();
        let layout = RingLayout::XENSTORE_RSP;
        mem.atomic::<AtomicU32>(layout.prod)
            .unwrap()
            .store(1025, Ordering::Relaxed);
        let mut rx = Consumer::new(mem, layout).unwrap();
        let corrupt = RingError::Corrupt {
            prod: 1025,
            cons: 0,
            size: 1024,
        };
        assert_eq!(rx.read(&mut [0; 8]), Err(corrupt));
        assert_eq!(rx.available(), Err(corrupt));
        // A consumer ahead of the producer is the same error (prod - cons wraps to a huge value).
        mem.atomic::<AtomicU32>(layout.cons)
            .unwrap()
            .store(1026, Ordering::Relaxed);
        assert!(matches!(
            rx.read(&mut [0; 8]),
            Err(RingError::Corrupt { .. })
        ));
        let mut tx = Producer::new(mem, layout).unwrap();
        assert!(matches!(tx.write(b"x"), Err(RingError::Corrupt { .. })));
        // Exactly full is legal.
        mem.atomic::<AtomicU32>(layout.prod)
            .unwrap()
            .store(1026 + 1024, Ordering::Relaxed);
        assert_eq!(rx.available(), Ok(1024));
        assert_eq!(tx.write(b"x"), Ok(0));
    }
}
