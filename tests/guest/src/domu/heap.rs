//! The domU's heap (the xenstore client's buffers, the block frontend's bookkeeping): blocks of
//! power-of-two sizes carved from a static arena, each size with a free list, so the thousands
//! of requests of the block run reuse the same few blocks.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

/// The arena's size.
const ARENA_SIZE: usize = 1024 * 1024;
/// The smallest block: room for the free list's link.
const MIN_BLOCK: usize = 16;
/// The block sizes: `MIN_BLOCK << class` for `class` in `0..CLASSES` (16 bytes to 256 KiB).
const CLASSES: usize = 15;

/// The heap's state, touched only while [`Heap::busy`] is held.
struct State {
    /// Bytes of the arena handed out as blocks so far (blocks are never given back to it).
    carved: usize,
    /// Per class, the first free block (null: none); each free block's first word is the next.
    free: [*mut u8; CLASSES],
}

/// The allocator: a static arena, its state behind a flag.
struct Heap {
    arena: UnsafeCell<[u8; ARENA_SIZE]>,
    state: UnsafeCell<State>,
    /// Held while `state` is in use. An allocation finding it held (an upcall interrupting an
    /// allocation) fails rather than spin on a holder that cannot run.
    busy: AtomicBool,
}

// SAFETY: `state` (and through it the arena's free blocks) is only touched while `busy` is
// held, which one caller at a time acquires (`compare_exchange`, acquire; released with
// release); the blocks handed out are the callers'.
unsafe impl Sync for Heap {}

/// The class of blocks that fit `layout`: the power of two at least its size, its alignment
/// and [`MIN_BLOCK`] (blocks are aligned to their size, so to any smaller power of two).
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(MIN_BLOCK);
    let class = size.checked_next_power_of_two()?.trailing_zeros() as usize
        - MIN_BLOCK.trailing_zeros() as usize;
    (class < CLASSES).then_some(class)
}

impl Heap {
    /// Runs `f` on the state while holding `busy`; `None` if it is held.
    fn locked<T>(&self, f: impl FnOnce(&mut State, *mut u8) -> T) -> Option<T> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        // SAFETY: `busy` is held: no other reference to the state exists until it is released.
        let state = unsafe { &mut *self.state.get() };
        let result = f(state, self.arena.get().cast::<u8>());
        self.busy.store(false, Ordering::Release);
        Some(result)
    }
}

// SAFETY: `alloc` returns a block of its class's size (at least `layout.size()`), aligned to that
// size (a power of two at least `layout.align()`: each block is carved at an address that is a
// multiple of its size), inside the arena and owned
// by no one else: a fresh block lies beyond every block carved before, a reused one was freed
// by its owner (`dealloc` gets it back with a layout of the same class) and is taken off the
// free list once. Null when the arena is exhausted or the heap is busy.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            return ptr::null_mut();
        };
        let size = MIN_BLOCK << class;
        self.locked(|state, base| {
            let head = state.free[class];
            if !head.is_null() {
                // SAFETY: `head` is a free block of this class (at least 16 bytes, aligned),
                // whose first word `dealloc` wrote.
                state.free[class] = unsafe { head.cast::<*mut u8>().read() };
                return head;
            }
            // The next address past the carved blocks aligned to the block's size.
            let address = base as usize;
            let start = (address + state.carved).next_multiple_of(size) - address;
            match start.checked_add(size) {
                Some(end) if end <= ARENA_SIZE => {
                    state.carved = end;
                    base.wrapping_add(start)
                }
                _ => ptr::null_mut(),
            }
        })
        .unwrap_or(ptr::null_mut())
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // `alloc` gave `block` for a layout of this class (the caller's contract).
        let Some(class) = class(layout) else { return };
        let pushed = self.locked(|state, _| {
            // SAFETY: `block` is a block of this class, no longer used by its owner: its first
            // word (it is at least 16 bytes, aligned) now links the free list.
            unsafe { block.cast::<*mut u8>().write(state.free[class]) };
            state.free[class] = block;
        });
        // An interrupted allocation holds the flag: the block is lost, never reused twice.
        let _ = pushed;
    }
}

#[global_allocator]
static HEAP: Heap = Heap {
    arena: UnsafeCell::new([0; ARENA_SIZE]),
    state: UnsafeCell::new(State {
        carved: 0,
        free: [ptr::null_mut(); CLASSES],
    }),
    busy: AtomicBool::new(false),
};
