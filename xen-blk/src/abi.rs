//! `public/io/blkif.h`: the block protocol's requests and responses, as laid out in the ring.
//!
//! Written by hand with explicit padding (zerocopy needs padding-free types) and checked
//! against the header's layout at compile time. The layout here is that of x86_64 and of
//! Arm (32- and 64-bit), where `uint64_t` is 8-byte aligned: `id` at offset 8. (An x86_32
//! guest lays `blkif_request` out with `id` at 4; Linux's blkback converts with
//! `blkif_x86_32_request`. This crate does not build for x86_32.)

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")))]
compile_error!("blkif's layout is checked for x86_64, aarch64 and arm only");

/// `BLKIF_OP_READ`: read from the device into the segments.
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`: write the segments to the device.
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER` (`feature-barrier`).
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE` (`feature-flush-cache`): a flush, with or without segments.
pub const OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_DISCARD` (`feature-discard`), in a [`DiscardRequest`].
pub const OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT` (`feature-max-indirect-segments`), in an [`IndirectRequest`].
pub const OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
pub const MAX_SEGMENTS: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Segments per indirect page: `PAGE_SIZE / sizeof(struct blkif_request_segment)`.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = 4096 / size_of::<Segment>();

/// `BLKIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `BLKIF_RSP_ERROR`: the operation failed (`-EIO`).
pub const RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_EOPNOTSUPP`: the operation is not supported.
pub const RSP_EOPNOTSUPP: i16 = -2;

/// `BLKIF_DISCARD_SECURE`: a discard that must make the data unrecoverable (`discard-secure`).
pub const DISCARD_SECURE: u8 = 1;

/// `VDISK_CDROM` in `info`.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE` in `info`.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY` in `info`.
pub const VDISK_READONLY: u32 = 0x4;

/// The unit of `sector_number`, `first_sect` and `last_sect` (and of `sectors` as Linux's
/// blkback writes it) unless the frontend offers `feature-large-sector-size`, which this
/// crate does not.
pub const SECTOR_SIZE: usize = 512;

/// `struct blkif_request_segment`: one page of a request, sectors `first_sect..=last_sect`
/// of it (in 512-byte units).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Segment {
    /// `gref`: the page's grant reference.
    pub gref: u32,
    /// `first_sect`.
    pub first_sect: u8,
    /// `last_sect` (inclusive).
    pub last_sect: u8,
    /// Padding to the struct's 4-byte alignment.
    pub _pad: [u8; 2],
}

/// `struct blkif_request`: read, write, flush and barrier requests.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Request {
    /// `operation` (`OP_*`).
    pub operation: u8,
    /// `nr_segments`.
    pub nr_segments: u8,
    /// `handle` (`blkif_vdev_t`).
    pub handle: u16,
    /// Padding before `id` (8-byte aligned).
    pub _pad: [u8; 4],
    /// `id`: the frontend's, echoed in the response.
    pub id: u64,
    /// `sector_number`: the first sector (512-byte units).
    pub sector_number: u64,
    /// `seg`.
    pub seg: [Segment; MAX_SEGMENTS],
}

/// `struct blkif_request_discard`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DiscardRequest {
    /// `operation` ([`OP_DISCARD`]).
    pub operation: u8,
    /// `flag` ([`DISCARD_SECURE`] or 0).
    pub flag: u8,
    /// `handle`.
    pub handle: u16,
    /// Padding before `id`.
    pub _pad: [u8; 4],
    /// `id`.
    pub id: u64,
    /// `sector_number`.
    pub sector_number: u64,
    /// `nr_sectors`.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect`: up to [`MAX_INDIRECT_PAGES`] pages of [`Segment`]s.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct IndirectRequest {
    /// `operation` ([`OP_INDIRECT`]).
    pub operation: u8,
    /// `indirect_op` ([`OP_READ`] or [`OP_WRITE`]).
    pub indirect_op: u8,
    /// `nr_segments`.
    pub nr_segments: u16,
    /// Padding before `id`.
    pub _pad: [u8; 4],
    /// `id`.
    pub id: u64,
    /// `sector_number`.
    pub sector_number: u64,
    /// `handle`.
    pub handle: u16,
    /// `_pad2` (unnamed in Xen's header).
    pub _pad2: u16,
    /// `indirect_grefs`: the pages holding the segments.
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
    /// Padding to the struct's 8-byte alignment.
    pub _pad3: [u8; 4],
}

/// `struct blkif_response`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Response {
    /// `id`: the request's.
    pub id: u64,
    /// `operation`: the request's.
    pub operation: u8,
    /// Padding before `status`.
    pub _pad: u8,
    /// `status` (`RSP_*`).
    pub status: i16,
    /// Padding to the struct's 8-byte alignment.
    pub _pad2: [u8; 4],
}

/// One request slot of the ring: `sizeof(struct blkif_request)` bytes holding a [`Request`],
/// a [`DiscardRequest`] or an [`IndirectRequest`] (the C code casts between them).
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(8))]
pub struct RingRequest([u8; size_of::<Request>()]);

impl RingRequest {
    /// The slot holding `request` (the bytes after it zero).
    pub fn new<R: IntoBytes + Immutable>(request: &R) -> Self {
        const { assert!(size_of::<R>() <= size_of::<Request>()) };
        let mut slot = Self::new_zeroed();
        slot.0[..size_of::<R>()].copy_from_slice(request.as_bytes());
        slot
    }

    /// The `operation` byte, common to every request kind.
    pub fn operation(&self) -> u8 {
        self.0[0]
    }

    /// Sets the `id` (at offset 8 in every request kind).
    pub fn set_id(&mut self, id: u64) {
        self.0[8..16].copy_from_slice(&id.to_ne_bytes());
    }

    /// The `id`.
    pub fn id(&self) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.0[8..16]);
        u64::from_ne_bytes(bytes)
    }

    /// The slot read as `R`.
    pub fn get<R: FromBytes>(&self) -> R {
        const { assert!(size_of::<R>() <= size_of::<Request>()) };
        match R::read_from_prefix(&self.0) {
            Ok((request, _)) => request,
            // The size is checked above.
            Err(_) => R::new_zeroed(),
        }
    }
}

impl core::fmt::Debug for RingRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingRequest")
            .field("operation", &self.operation())
            .finish_non_exhaustive()
    }
}

// The header's layout (`public/io/blkif.h`, x86_64 and Arm).
const _: () = {
    use core::mem::offset_of;
    assert!(size_of::<Segment>() == 8 && align_of::<Segment>() == 4);
    assert!(offset_of!(Segment, first_sect) == 4 && offset_of!(Segment, last_sect) == 5);

    assert!(size_of::<Request>() == 112 && align_of::<Request>() == 8);
    assert!(offset_of!(Request, nr_segments) == 1 && offset_of!(Request, handle) == 2);
    assert!(offset_of!(Request, id) == 8 && offset_of!(Request, sector_number) == 16);
    assert!(offset_of!(Request, seg) == 24);

    assert!(size_of::<DiscardRequest>() == 32);
    assert!(offset_of!(DiscardRequest, flag) == 1 && offset_of!(DiscardRequest, id) == 8);
    assert!(offset_of!(DiscardRequest, nr_sectors) == 24);

    assert!(size_of::<IndirectRequest>() == 64 && align_of::<IndirectRequest>() == 8);
    assert!(offset_of!(IndirectRequest, nr_segments) == 2);
    assert!(offset_of!(IndirectRequest, id) == 8);
    assert!(offset_of!(IndirectRequest, sector_number) == 16);
    assert!(offset_of!(IndirectRequest, handle) == 24);
    assert!(offset_of!(IndirectRequest, indirect_grefs) == 28);

    assert!(size_of::<Response>() == 16 && align_of::<Response>() == 8);
    assert!(offset_of!(Response, operation) == 8 && offset_of!(Response, status) == 10);

    assert!(size_of::<RingRequest>() == 112 && align_of::<RingRequest>() == 8);
    // `RingRequest::id`.
    assert!(offset_of!(DiscardRequest, id) == 8 && offset_of!(IndirectRequest, id) == 8);
    // 32 entries of 112 bytes in one page after the 64-byte header (`__CONST_RING_SIZE`).
    assert!(
        xen_shared::req_ring::ring_entries(
            xen_shared::req_ring::entry_size::<RingRequest, Response>(),
            4096
        ) == 32
    );
    assert!(SEGMENTS_PER_INDIRECT_PAGE == 512);
};
