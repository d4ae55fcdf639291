//! Views of memory another domain may write at any time.
//!
//! Every access this program makes through a view is an atomic access to a naturally aligned
//! 4-byte word: bytes are copied in and out word by word, and the only atomic lent out is the
//! `AtomicU32` of a word. So one location is never accessed with two sizes, which Rust's memory
//! model forbids when the accesses race (a byte store racing a 4-byte load of the same bytes,
//! from two threads of this program, is undefined behaviour; a peer domain is outside the
//! model, and to it every access is a plain load or store of its size).

use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};

/// The size of a Xen page (the ABI's granularity on x86 and Arm).
pub const PAGE_SIZE: usize = 4096;

/// The size of the word every access is made of.
const WORD: usize = 4;

/// An access that does not fit the shared region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The bytes lie (partly) outside the region.
    #[error("{len} bytes at offset {offset} do not fit a {size}-byte shared region")]
    OutOfBounds {
        /// The first byte asked for, relative to the region.
        offset: usize,
        /// How many bytes were asked for.
        len: usize,
        /// The size of the region.
        size: usize,
    },
    /// An atomic value's address is not a multiple of its size.
    #[error("offset {offset} is not {align}-byte aligned")]
    Misaligned {
        /// The offset asked for, relative to the region.
        offset: usize,
        /// The alignment the value needs.
        align: usize,
    },
    /// A write to memory mapped read-only.
    #[error("{len} bytes at offset {offset} are read-only")]
    ReadOnly {
        /// The first byte to write, relative to the region.
        offset: usize,
        /// How many bytes.
        len: usize,
    },
}

/// The words under a view and the view's bytes among them: what [`SharedMem`] and
/// [`ReadOnlyMem`] share.
///
/// Invariant: `start + len <= 4 * words.len()`.
#[derive(Clone, Copy)]
struct Words<'a> {
    words: &'a [AtomicU32],
    /// The view's first byte, counted from the first word's first byte.
    start: usize,
    len: usize,
}

/// A part of one word: the word, its first byte concerned, how many bytes.
struct Part<'a> {
    word: &'a AtomicU32,
    lane: usize,
    len: usize,
}

impl Part<'_> {
    fn load(&self, dst: &mut [u8]) {
        let bytes = self.word.load(Ordering::Relaxed).to_ne_bytes();
        dst.copy_from_slice(&bytes[self.lane..self.lane + self.len]);
    }

    /// Stores `src` into the part's bytes by clearing, then setting them: two atomic
    /// operations that leave the word's other bytes as they are, whatever the peer does
    /// meanwhile.
    fn store(&self, src: &[u8]) {
        let (mut value, mut mask) = ([0u8; WORD], [0u8; WORD]);
        value[self.lane..self.lane + self.len].copy_from_slice(src);
        mask[self.lane..self.lane + self.len].fill(0xff);
        self.word
            .fetch_and(!u32::from_ne_bytes(mask), Ordering::Relaxed);
        self.word
            .fetch_or(u32::from_ne_bytes(value), Ordering::Relaxed);
    }
}

/// Bytes of a view as the words they cover: a part of a first word, whole words, a part of a
/// last word.
struct Span<'a> {
    head: Option<Part<'a>>,
    middle: &'a [AtomicU32],
    tail: Option<Part<'a>>,
}

impl Span<'_> {
    /// How many bytes the head and the middle hold.
    fn split(&self) -> (usize, usize) {
        (
            self.head.as_ref().map_or(0, |p| p.len),
            self.middle.len() * WORD,
        )
    }
}

impl<'a> Words<'a> {
    /// The words `ptr..ptr + len`.
    ///
    /// # Safety
    ///
    /// As for [`ReadOnlyMem::from_raw_parts`] (reads only) or [`SharedMem::from_raw_parts`].
    const unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        // SAFETY: `AtomicU32` has the size and alignment of `u32` and every bit pattern is
        // valid; the caller promises `ptr` is 4-byte aligned, `len` a multiple of 4 at most
        // `isize::MAX`, and the bytes valid for `'a` and accessed only atomically.
        let words =
            unsafe { core::slice::from_raw_parts(ptr.as_ptr().cast::<AtomicU32>(), len / WORD) };
        Self {
            words,
            start: 0,
            len,
        }
    }

    const fn from_words(words: &'a [AtomicU32]) -> Self {
        Self {
            words,
            start: 0,
            len: words.len() * WORD,
        }
    }

    fn as_ptr(&self) -> *mut u8 {
        self.words
            .as_ptr()
            .cast::<u8>()
            .cast_mut()
            .wrapping_add(self.start)
    }

    /// The first byte of `len` bytes at `offset` (counted from the first word), if in bounds.
    fn check(&self, offset: usize, len: usize) -> Result<usize, AccessError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.start + offset),
            _ => Err(AccessError::OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    fn subslice(&self, offset: usize, len: usize) -> Result<Self, AccessError> {
        Ok(Self {
            words: self.words,
            start: self.check(offset, len)?,
            len,
        })
    }

    /// The `len` bytes at `offset` as the words they cover.
    fn span(&self, offset: usize, len: usize) -> Result<Span<'a>, AccessError> {
        let first = self.check(offset, len)?;
        let end = first + len;
        let lane = first % WORD;
        let head_len = if lane == 0 { 0 } else { (WORD - lane).min(len) };
        let head = (head_len > 0).then(|| Part {
            word: &self.words[first / WORD],
            lane,
            len: head_len,
        });
        // Aligned, unless the head took every byte (then `middle_start == end`).
        let middle_start = first + head_len;
        let middle_words = (end - middle_start) / WORD;
        let tail_start = middle_start + middle_words * WORD;
        let tail = (tail_start < end).then(|| Part {
            word: &self.words[tail_start / WORD],
            lane: 0,
            len: end - tail_start,
        });
        Ok(Span {
            head,
            middle: &self.words[middle_start / WORD..][..middle_words],
            tail,
        })
    }

    /// The whole words of `len` bytes at `offset`, if they start and end on word boundaries
    /// (the common case, copied without splitting words).
    fn whole_words(
        &self,
        offset: usize,
        len: usize,
    ) -> Result<Option<&'a [AtomicU32]>, AccessError> {
        let first = self.check(offset, len)?;
        if first % WORD != 0 || len % WORD != 0 {
            return Ok(None);
        }
        Ok(self.words.get(first / WORD..(first + len) / WORD))
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        if let Some(words) = self.whole_words(offset, dst.len())? {
            for (bytes, word) in dst.chunks_exact_mut(WORD).zip(words) {
                bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            }
            return Ok(());
        }
        let span = self.span(offset, dst.len())?;
        let (head_len, middle_len) = span.split();
        let (head, rest) = dst.split_at_mut(head_len);
        let (middle, tail) = rest.split_at_mut(middle_len);
        if let Some(part) = &span.head {
            part.load(head);
        }
        for (bytes, word) in middle.chunks_exact_mut(WORD).zip(span.middle) {
            bytes.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        if let Some(part) = &span.tail {
            part.load(tail);
        }
        Ok(())
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        if let Some(words) = self.whole_words(offset, src.len())? {
            for (bytes, word) in src.chunks_exact(WORD).zip(words) {
                let bytes: [u8; WORD] = bytes.try_into().unwrap_or_default();
                word.store(u32::from_ne_bytes(bytes), Ordering::Relaxed);
            }
            return Ok(());
        }
        let span = self.span(offset, src.len())?;
        let (head_len, middle_len) = span.split();
        let (head, rest) = src.split_at(head_len);
        let (middle, tail) = rest.split_at(middle_len);
        if let Some(part) = &span.head {
            part.store(head);
        }
        for (bytes, word) in middle.chunks_exact(WORD).zip(span.middle) {
            let bytes: [u8; WORD] = bytes.try_into().unwrap_or_default();
            word.store(u32::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        if let Some(part) = &span.tail {
            part.store(tail);
        }
        Ok(())
    }

    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), AccessError> {
        let span = self.span(offset, len)?;
        let bytes = [byte; WORD];
        for part in span.head.iter().chain(&span.tail) {
            part.store(&bytes[..part.len]);
        }
        for word in span.middle {
            word.store(u32::from_ne_bytes(bytes), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The aligned word at `offset`.
    fn word(&self, offset: usize) -> Result<&'a AtomicU32, AccessError> {
        let at = self.check(offset, WORD)?;
        if at % WORD != 0 {
            return Err(AccessError::Misaligned {
                offset,
                align: WORD,
            });
        }
        Ok(&self.words[at / WORD])
    }
}

/// A view of memory that another domain (or device) may read and write at any time.
///
/// Like rust-vmm's `VolatileSlice`: the bounds are checked once, when a view or a value is taken,
/// and every access is atomic, so the compiler never assumes the bytes keep their value. The
/// view is never turned into `&[u8]` or `&mut [u8]`. Atomics rather than volatile accesses,
/// because a view may also be shared by threads of this program (a ring and its peer in a test,
/// a page mapped twice): volatile accesses from two threads would be a data race, atomic ones
/// are not.
///
/// One access size for every location: the memory is 4-byte words, and each access is to
/// whole words (bytes are copied in and out with word loads, and stored with word stores, or
/// with an atomic clear-then-set of the bytes for a part of a word). So safe code cannot make
/// the racing accesses of different sizes that Rust's memory model forbids.
///
/// A `SharedMem` is a cheap `Copy` handle; its lifetime ties it to the memory it views.
#[derive(Clone, Copy)]
pub struct SharedMem<'a> {
    words: Words<'a>,
}

impl<'a> SharedMem<'a> {
    /// A view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// For the whole lifetime `'a`:
    /// - `ptr` is 4-byte aligned and `len` is a multiple of 4, at most `isize::MAX`;
    /// - `ptr..ptr + len` is mapped, readable and writable, and is neither unmapped nor freed
    ///   (for a foreign mapping: unmapped only after `'a` ends);
    /// - this program accesses those bytes only with atomic accesses of aligned 4-byte words
    ///   (through `SharedMem` and [`ReadOnlyMem`] views, or `AtomicU32`s): no `&`/`&mut` to a
    ///   non-atomic type covers them and no plain, volatile or other-sized access is made while
    ///   the view exists (another domain or a device may access them in any way).
    pub const unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        // SAFETY: the caller's promises are those `Words::from_raw_parts` needs.
        let words = unsafe { Words::from_raw_parts(ptr, len) };
        Self { words }
    }

    /// A view of memory already typed as atomic words (safe: atomics may be written by anyone).
    pub const fn from_words(words: &'a [AtomicU32]) -> Self {
        Self {
            words: Words::from_words(words),
        }
    }

    /// The size of the view in bytes.
    pub const fn len(&self) -> usize {
        self.words.len
    }

    /// Whether the view is empty.
    pub const fn is_empty(&self) -> bool {
        self.words.len == 0
    }

    /// The address of the first byte (to hand to Xen, or to compute a frame number).
    pub fn as_ptr(&self) -> *mut u8 {
        self.words.as_ptr()
    }

    /// The same memory, without the means to write it.
    pub const fn read_only(&self) -> ReadOnlyMem<'a> {
        ReadOnlyMem { words: self.words }
    }

    /// The part of this view of `len` bytes starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the bytes do not all lie in this view.
    pub fn subslice(&self, offset: usize, len: usize) -> Result<SharedMem<'a>, AccessError> {
        Ok(Self {
            words: self.words.subslice(offset, len)?,
        })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the shared memory.
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the bytes do not all lie in this view; nothing is copied.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        self.words.read(offset, dst)
    }

    /// Copies `src` into the shared memory starting at `offset`.
    ///
    /// Bytes that share a word with bytes outside `offset..offset + src.len()` are cleared,
    /// then set: a reader racing with the write may see them zero in between.
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the bytes do not all lie in this view; nothing is copied.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        self.words.write(offset, src)
    }

    /// Sets `len` bytes starting at `offset` to `byte` (as [`write`](Self::write) does).
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the bytes do not all lie in this view.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), AccessError> {
        self.words.fill(offset, len, byte)
    }

    /// The atomic word at `offset`: in bounds and 4-byte aligned.
    ///
    /// The caller uses the atomic's own API (`load(Ordering::Acquire)` on a peer's index, …).
    /// `AtomicU32` is the only [`SharedAtomic`]: every access to the view is to whole words.
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the word does not lie in this view,
    /// [`AccessError::Misaligned`] if its address is not a multiple of 4.
    pub fn atomic<A: SharedAtomic>(&self, offset: usize) -> Result<&'a A, AccessError> {
        Ok(A::from_word(self.words.word(offset)?))
    }
}

impl fmt::Debug for SharedMem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The contents are the peer's to change: print where the view is, not what it holds.
        f.debug_struct("SharedMem")
            .field("ptr", &self.as_ptr())
            .field("len", &self.len())
            .finish()
    }
}

impl<'a> From<&'a [AtomicU32]> for SharedMem<'a> {
    fn from(words: &'a [AtomicU32]) -> Self {
        Self::from_words(words)
    }
}

impl<'a> From<&'a SharedPage> for SharedMem<'a> {
    fn from(page: &'a SharedPage) -> Self {
        page.mem()
    }
}

/// A view of memory that this program may only read and another domain may write at any time:
/// a read-only grant mapping, a read-only foreign mapping.
///
/// As [`SharedMem`] (bounds checked once, atomic 4-byte word loads only), with no way to write:
/// no store, no read-modify-write, no `&AtomicU32` that would allow one. Plain atomic loads are
/// what Rust permits on read-only memory.
#[derive(Clone, Copy)]
pub struct ReadOnlyMem<'a> {
    words: Words<'a>,
}

impl<'a> ReadOnlyMem<'a> {
    /// A read-only view of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// As for [`SharedMem::from_raw_parts`], except that the bytes need only be readable.
    pub const unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        // SAFETY: the caller's promises are those `Words::from_raw_parts` needs, which makes
        // a slice of atomics whose only accesses through this type are loads.
        let words = unsafe { Words::from_raw_parts(ptr, len) };
        Self { words }
    }

    /// The size of the view in bytes.
    pub const fn len(&self) -> usize {
        self.words.len
    }

    /// Whether the view is empty.
    pub const fn is_empty(&self) -> bool {
        self.words.len == 0
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.words.as_ptr().cast_const()
    }

    /// The part of this view of `len` bytes starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the bytes do not all lie in this view.
    pub fn subslice(&self, offset: usize, len: usize) -> Result<ReadOnlyMem<'a>, AccessError> {
        Ok(Self {
            words: self.words.subslice(offset, len)?,
        })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the shared memory.
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the bytes do not all lie in this view; nothing is copied.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        self.words.read(offset, dst)
    }

    /// Loads the aligned `u32` at `offset` with Acquire ordering (a peer's index: what the
    /// peer wrote before storing it is visible after).
    ///
    /// # Errors
    ///
    /// [`AccessError::OutOfBounds`] if the word does not lie in this view,
    /// [`AccessError::Misaligned`] if its address is not a multiple of 4.
    pub fn load_u32(&self, offset: usize) -> Result<u32, AccessError> {
        Ok(self.words.word(offset)?.load(Ordering::Acquire))
    }
}

impl fmt::Debug for ReadOnlyMem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOnlyMem")
            .field("ptr", &self.as_ptr())
            .field("len", &self.len())
            .finish()
    }
}

impl<'a> From<SharedMem<'a>> for ReadOnlyMem<'a> {
    fn from(mem: SharedMem<'a>) -> Self {
        mem.read_only()
    }
}

mod sealed {
    pub trait Sealed {
        /// The word as this type.
        fn from_word(word: &core::sync::atomic::AtomicU32) -> &Self;
    }
}

/// The atomic integers a [`SharedMem`] hands out with [`SharedMem::atomic`].
///
/// Sealed, and implemented only for `AtomicU32`: the size of every access to shared memory, so
/// that no location is accessed with two sizes.
pub trait SharedAtomic: sealed::Sealed + Sync {}

impl sealed::Sealed for AtomicU32 {
    fn from_word(word: &AtomicU32) -> &Self {
        word
    }
}
impl SharedAtomic for AtomicU32 {}

/// A zeroed, page-aligned page that this program owns and may share (grant) with another domain.
///
/// Its bytes are atomic words, so a [`SharedMem`] view of it is safe to make; tests use it as
/// the memory of a mock peer.
#[repr(C, align(4096))]
pub struct SharedPage {
    words: [AtomicU32; PAGE_SIZE / WORD],
}

const _: () = assert!(core::mem::align_of::<SharedPage>() == PAGE_SIZE);
const _: () = assert!(core::mem::size_of::<SharedPage>() == PAGE_SIZE);

impl SharedPage {
    /// A page of zeros.
    pub const fn new() -> Self {
        Self {
            words: [const { AtomicU32::new(0) }; PAGE_SIZE / WORD],
        }
    }

    /// A view of the whole page.
    pub const fn mem(&self) -> SharedMem<'_> {
        SharedMem::from_words(&self.words)
    }
}

impl Default for SharedPage {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SharedPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedPage")
            .field("ptr", &self.mem().as_ptr())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let page = SharedPage::new();
        let mem = page.mem();
        assert_eq!(mem.len(), PAGE_SIZE);
        assert_eq!(
            mem.read(4090, &mut [0; 7]),
            Err(AccessError::OutOfBounds {
                offset: 4090,
                len: 7,
                size: 4096
            })
        );
        assert!(mem.write(usize::MAX, &[1]).is_err());
        assert!(mem.subslice(1, 4096).is_err());
        let sub = mem.subslice(100, 8).unwrap();
        assert_eq!(sub.len(), 8);
        assert!(sub.fill(0, 9, 1).is_err());
        assert!(sub.atomic::<AtomicU32>(8).is_err());
        assert!(sub.atomic::<AtomicU32>(4).is_ok());
    }

    #[test]
    fn bytes_round_trip_and_views_alias() {
        let page = SharedPage::new();
        let mem = page.mem();
        mem.write(4000, b"hello").unwrap();
        let sub = mem.subslice(4000, 96).unwrap();
        let mut out = [0u8; 5];
        sub.read(0, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        sub.fill(1, 3, b'x').unwrap();
        mem.read(4000, &mut out).unwrap();
        assert_eq!(&out, b"hxxxo");
    }

    #[test]
    fn atomics_are_aligned_and_shared() {
        let page = SharedPage::new();
        let mem = page.mem();
        assert_eq!(
            mem.atomic::<AtomicU32>(2).unwrap_err(),
            AccessError::Misaligned {
                offset: 2,
                align: 4
            }
        );
        mem.atomic::<AtomicU32>(8)
            .unwrap()
            .store(0x0403_0201, Ordering::Release);
        let mut out = [0u8; 4];
        mem.read(8, &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 0x0403_0201);
        assert!(mem.atomic::<AtomicU32>(4094).is_err());
        assert!(mem.atomic::<AtomicU32>(4092).is_ok());
        // Alignment is the address's, not the offset's: a view that starts mid-word.
        let sub = mem.subslice(2, 100).unwrap();
        assert!(sub.atomic::<AtomicU32>(0).is_err());
        assert!(sub.atomic::<AtomicU32>(2).is_ok());
    }

    #[test]
    fn raw_parts_view_of_a_page() {
        let page = SharedPage::new();
        let ptr = NonNull::new(page.mem().as_ptr()).unwrap();
        // SAFETY: the page lives for the whole test, and its bytes are atomics that this test
        // accesses only through views.
        let raw = unsafe { SharedMem::from_raw_parts(ptr, 64) };
        raw.write(0, &[7; 64]).unwrap();
        let mut out = [0u8; 1];
        page.mem().read(63, &mut out).unwrap();
        assert_eq!(out, [7]);
        assert!(std::format!("{raw:?}").contains("len: 64"));
    }

    #[test]
    fn a_part_of_a_word_is_written_without_touching_its_other_bytes() {
        let page = SharedPage::new();
        let mem = page.mem();
        mem.fill(0, 16, 0xaa).unwrap();
        // Offsets 3..13: the end of word 0, all of words 1 and 2, the start of word 3.
        mem.write(3, b"0123456789").unwrap();
        let mut out = [0u8; 16];
        mem.read(0, &mut out).unwrap();
        assert_eq!(&out, b"\xaa\xaa\xaa0123456789\xaa\xaa\xaa");
        let sub = mem.subslice(5, 3).unwrap();
        sub.fill(0, 3, b'x').unwrap();
        assert!(sub.fill(1, 3, b'x').is_err());
        mem.read(0, &mut out).unwrap();
        assert_eq!(&out, b"\xaa\xaa\xaa01xxx56789\xaa\xaa\xaa");
        assert_eq!(sub.as_ptr(), mem.as_ptr().wrapping_add(5));
    }

    #[test]
    fn every_offset_and_length_against_a_model() {
        let page = SharedPage::new();
        let mem = page.mem().subslice(0, 32).unwrap();
        // Every start and end alignment within a word, across up to four words; fewer
        // repetitions of them under Miri.
        let (offsets, max_len) = if cfg!(miri) { (8, 12) } else { (13, 19) };
        for offset in 0..offsets {
            for len in 0..=(32 - offset).min(max_len) {
                let mut model = [0xaau8; 32];
                mem.fill(0, 32, 0xaa).unwrap();
                let src: std::vec::Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
                mem.write(offset, &src).unwrap();
                model[offset..offset + len].copy_from_slice(&src);
                mem.fill(offset + len / 2, len / 4, 0x55).unwrap();
                model[offset + len / 2..][..len / 4].fill(0x55);
                let mut whole = [0u8; 32];
                mem.read(0, &mut whole).unwrap();
                assert_eq!(whole, model, "offset {offset}, len {len}");
                let mut part = std::vec![0u8; len];
                mem.read_only().read(offset, &mut part).unwrap();
                assert_eq!(
                    part,
                    model[offset..offset + len],
                    "offset {offset}, len {len}"
                );
            }
        }
    }

    #[test]
    fn a_read_only_view_reads_what_the_writable_one_wrote() {
        let page = SharedPage::new();
        let mem = page.mem();
        mem.write(4001, b"hello").unwrap();
        mem.atomic::<AtomicU32>(12)
            .unwrap()
            .store(0x0102_0304, Ordering::Release);
        let ro = mem.read_only();
        assert_eq!(ro.len(), PAGE_SIZE);
        let mut out = [0u8; 5];
        ro.subslice(4000, 96).unwrap().read(1, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert_eq!(ro.load_u32(12), Ok(0x0102_0304));
        assert!(ro.load_u32(13).is_err());
        assert!(ro.load_u32(4096).is_err());
        assert!(ro.read(4095, &mut out).is_err());
        let ptr = NonNull::new(mem.as_ptr()).unwrap();
        // SAFETY: the page lives for the whole test, is 4-byte aligned, and is accessed only
        // through views.
        let raw = unsafe { ReadOnlyMem::from_raw_parts(ptr, 8) };
        assert_eq!(raw.as_ptr(), ro.as_ptr());
        assert!(std::format!("{raw:?}").contains("len: 8"));
    }

    /// A byte write racing, from another thread, with a 4-byte atomic store to the same word:
    /// with one access size for every location Miri finds no mixed-size race (it reported one
    /// when bytes were copied with 1-byte atomics).
    #[test]
    fn a_byte_write_racing_an_index_store_is_not_a_mixed_size_race() {
        let page = SharedPage::new();
        let mem = page.mem();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..10u32 {
                    mem.atomic::<AtomicU32>(8)
                        .unwrap()
                        .store(i, Ordering::Release);
                }
            });
            s.spawn(|| {
                for i in 0..10u8 {
                    mem.write(9, &[i]).unwrap();
                    let mut out = [0u8; 2];
                    mem.read(8, &mut out).unwrap();
                }
            });
        });
    }
}
