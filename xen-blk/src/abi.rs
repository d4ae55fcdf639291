//! `public/io/blkif.h`: the block protocol's requests and responses, as laid out in the ring.
//!
//! The constants are xen-sys's, generated from Xen's header (`cargo xtask gen-sys`, whose
//! layouts xen-sys's tests compare with a C compiler's). The structs are those of xen-sys
//! under this crate's names, with padding fields named and `Default` (zeroed): each one's
//! size, alignment and every field's offset are checked at compile time to be the generated
//! type's, and [`From`] converts between the two. The layout is that of x86_64 and of Arm,
//! where `uint64_t` is 8-byte aligned: `id` at offset 8. (An x86_32 guest lays
//! `blkif_request` out with `id` at 4; Linux's blkback converts with `blkif_x86_32_request`.
//! This crate does not build for x86_32.)

use xen_sys as sys;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("blkif's layout is generated for x86_64 and aarch64 only");

/// A generated constant as the type the ring's field holds (checked to fit at compile time).
macro_rules! narrow {
    ($value:expr, $ty:ty) => {{
        const { assert!($value as i64 >= <$ty>::MIN as i64 && $value as i64 <= <$ty>::MAX as i64) };
        $value as $ty
    }};
}

/// `BLKIF_OP_READ`: read from the device into the segments.
pub const OP_READ: u8 = narrow!(sys::BLKIF_OP_READ, u8);
/// `BLKIF_OP_WRITE`: write the segments to the device.
pub const OP_WRITE: u8 = narrow!(sys::BLKIF_OP_WRITE, u8);
/// `BLKIF_OP_WRITE_BARRIER` (`feature-barrier`).
pub const OP_WRITE_BARRIER: u8 = narrow!(sys::BLKIF_OP_WRITE_BARRIER, u8);
/// `BLKIF_OP_FLUSH_DISKCACHE` (`feature-flush-cache`): a flush, with or without segments.
pub const OP_FLUSH_DISKCACHE: u8 = narrow!(sys::BLKIF_OP_FLUSH_DISKCACHE, u8);
/// `BLKIF_OP_DISCARD` (`feature-discard`), in a [`DiscardRequest`].
pub const OP_DISCARD: u8 = narrow!(sys::BLKIF_OP_DISCARD, u8);
/// `BLKIF_OP_INDIRECT` (`feature-max-indirect-segments`), in an [`IndirectRequest`].
pub const OP_INDIRECT: u8 = narrow!(sys::BLKIF_OP_INDIRECT, u8);

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
pub const MAX_SEGMENTS: usize = sys::BLKIF_MAX_SEGMENTS_PER_REQUEST as usize;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
pub const MAX_INDIRECT_PAGES: usize = sys::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST as usize;
/// Segments per indirect page: `PAGE_SIZE / sizeof(struct blkif_request_segment)`.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = 4096 / size_of::<Segment>();

/// `BLKIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = narrow!(sys::BLKIF_RSP_OKAY, i16);
/// `BLKIF_RSP_ERROR`: the operation failed (`-EIO`).
pub const RSP_ERROR: i16 = narrow!(sys::BLKIF_RSP_ERROR, i16);
/// `BLKIF_RSP_EOPNOTSUPP`: the operation is not supported.
pub const RSP_EOPNOTSUPP: i16 = narrow!(sys::BLKIF_RSP_EOPNOTSUPP, i16);

/// `BLKIF_DISCARD_SECURE`: a discard that must make the data unrecoverable (`discard-secure`).
pub const DISCARD_SECURE: u8 = narrow!(sys::BLKIF_DISCARD_SECURE, u8);

/// `VDISK_CDROM` in `info`.
pub const VDISK_CDROM: u32 = sys::VDISK_CDROM;
/// `VDISK_REMOVABLE` in `info`.
pub const VDISK_REMOVABLE: u32 = sys::VDISK_REMOVABLE;
/// `VDISK_READONLY` in `info`.
pub const VDISK_READONLY: u32 = sys::VDISK_READONLY;

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

/// `$ours` has `$generated`'s size and alignment, and each named field its offset; and the two
/// convert into each other (bytes for bytes).
macro_rules! same_layout {
    ($ours:ty, $generated:ty, [$($field:ident),*]) => {
        const _: () = {
            use core::mem::offset_of;
            assert!(size_of::<$ours>() == size_of::<$generated>());
            assert!(align_of::<$ours>() == align_of::<$generated>());
            $(assert!(offset_of!($ours, $field) == offset_of!($generated, $field));)*
        };

        impl From<$generated> for $ours {
            fn from(c: $generated) -> Self {
                zerocopy::transmute!(c)
            }
        }

        impl From<$ours> for $generated {
            fn from(ours: $ours) -> Self {
                zerocopy::transmute!(ours)
            }
        }
    };
}

same_layout!(
    Segment,
    sys::blkif_request_segment,
    [gref, first_sect, last_sect]
);
same_layout!(
    Request,
    sys::blkif_request,
    [operation, nr_segments, handle, id, sector_number, seg]
);
same_layout!(
    DiscardRequest,
    sys::blkif_request_discard,
    [operation, flag, handle, id, sector_number, nr_sectors]
);
same_layout!(
    IndirectRequest,
    sys::blkif_request_indirect,
    [
        operation,
        indirect_op,
        nr_segments,
        id,
        sector_number,
        handle,
        indirect_grefs
    ]
);
same_layout!(Response, sys::blkif_response, [id, operation, status]);

const _: () = {
    use core::mem::offset_of;
    // A ring slot is a `union blkif_sring_entry`'s size: the largest request.
    assert!(size_of::<RingRequest>() == size_of::<sys::blkif_sring_entry>());
    assert!(align_of::<RingRequest>() == align_of::<sys::blkif_sring_entry>());
    // `RingRequest::id`.
    assert!(offset_of!(Request, id) == 8);
    assert!(offset_of!(DiscardRequest, id) == 8 && offset_of!(IndirectRequest, id) == 8);
    // The ring's entries start where the generated shared page's do, and 32 of 112 bytes fit
    // one page (`__CONST_RING_SIZE`).
    assert!(offset_of!(sys::blkif_sring, ring) == 64);
    assert!(
        xen_shared::req_ring::ring_entries(
            xen_shared::req_ring::entry_size::<RingRequest, Response>(),
            4096
        ) == 32
    );
    assert!(SEGMENTS_PER_INDIRECT_PAGE == 512);
};
