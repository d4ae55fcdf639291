//! The guest side against the mock hypervisor: setting up the table, the
//! reference allocator, granting, ending, the peer's mappings, copies, and
//! every refusal as a typed error. Runs under Miri.

mod common;

use std::cell::Cell;
use std::sync::Arc;

use common::{DOMU, PageArc, TestPage, domains, table};
use xen_grant::{CopyOp, CopyPtr, Error, GrantPage, GrantRef, GrantStatus, GrantTable};
use xen_hypercall::grant_table::MapFlags;
use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;
use xen_hypercall::{Gfn, MapSpace};

/// A page that records whether it was dropped.
struct Tracked<'a>(&'a TestPage, &'a Cell<bool>);

// SAFETY: as for `TestPage`; the reference keeps the page alive while the
// `Tracked` lives. Borrowed, so not `'static`: the one test that leaks a grant
// of one (dropped while mapped) frees the page only when the test ends, after
// which the mock never touches it.
unsafe impl GrantPage for Tracked<'_> {
    fn frame(&self) -> u64 {
        self.0.frame()
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.1.set(true);
    }
}

fn expect_status<T: std::fmt::Debug>(result: Result<T, xen_hypercall::Error>, status: GrantStatus) {
    match result {
        Err(xen_hypercall::Error::Grant(s)) if s == status => {}
        other => panic!("expected Grant({status:?}), got {other:?}"),
    }
}

/// `peer` maps `dom`'s `gref` (the mock maps nothing at the address).
fn map(
    peer: &MockXen,
    dom: DomId,
    gref: GrantRef,
    flags: MapFlags,
) -> Result<xen_hypercall::grant_table::Mapped, xen_hypercall::Error> {
    // SAFETY: the mock records the mapping without touching memory at host_addr.
    unsafe { peer.gnttab_map_grant_ref(dom, gref, 0x1000_0000, flags) }
}

fn unmap(
    peer: &MockXen,
    handle: xen_hypercall::grant_table::GrantHandle,
) -> Result<(), xen_hypercall::Error> {
    // SAFETY: as for `map`.
    unsafe { peer.gnttab_unmap_grant_ref(0x1000_0000, handle) }
}

#[test]
fn query_size_and_setup_table() {
    for (dom0, domu) in domains() {
        let size = domu.gnttab_query_size(DomId::SELF).unwrap();
        assert_eq!((size.frames, size.max_frames), (1, 64));
        let mut frames = [0u64; 4];
        domu.gnttab_setup_table(DomId::SELF, &mut frames).unwrap();
        assert!(frames.iter().all(|&f| f != 0));
        assert_eq!(domu.gnttab_query_size(DomId::SELF).unwrap().frames, 4);
        // dom0 may ask about domU, not the other way round; no such domain.
        assert_eq!(dom0.gnttab_query_size(DOMU).unwrap().frames, 4);
        expect_status(
            domu.gnttab_query_size(DomId(0)),
            GrantStatus::PERMISSION_DENIED,
        );
        expect_status(dom0.gnttab_query_size(DomId(77)), GrantStatus::BAD_DOMAIN);
        // Past the maximum.
        let mut too_many = vec![0u64; 65];
        expect_status(
            domu.gnttab_setup_table(DomId::SELF, &mut too_many),
            GrantStatus::GENERAL_ERROR,
        );
        assert_eq!(domu.gnttab_get_version(DomId::SELF).unwrap(), 1);
    }
}

#[test]
fn map_into_physmap_grows_the_table() {
    for (_, domu) in domains() {
        // SAFETY: the mock records the mapping; no memory is replaced.
        unsafe { GrantTable::map_into_physmap(&domu, Gfn(0x100), 3) }.unwrap();
        assert_eq!(
            domu.physmap(),
            (0..3)
                .map(|i| (MapSpace::GRANT_TABLE, i, Gfn(0x100 + i)))
                .collect::<Vec<_>>()
        );
        assert_eq!(domu.gnttab_query_size(DomId::SELF).unwrap().frames, 3);
        // SAFETY: as above.
        let past = unsafe { GrantTable::map_into_physmap(&domu, Gfn(0x200), 65) };
        assert_eq!(
            past.unwrap_err(),
            Error::Xen(xen_hypercall::Error::Xen(xen_hypercall::Errno::EINVAL))
        );
    }
}

#[test]
fn allocator_never_hands_out_reserved_references_and_runs_out_cleanly() {
    let (dom0, domu) = domains().remove(0);
    let _ = dom0;
    let table = table(&domu);
    let page = TestPage::new(&domu);
    let mut grants = Vec::new();
    loop {
        match table.grant_access(DomId(0), PageArc(Arc::clone(&page)), true) {
            Ok(grant) => grants.push(grant),
            Err(refused) => {
                assert_eq!(refused.error, Error::NoFreeReference { entries: 512 });
                assert!(
                    Arc::ptr_eq(&refused.page.0, &page),
                    "the page is given back"
                );
                break;
            }
        }
    }
    let mut refs: Vec<u32> = grants.iter().map(|g| g.gref().raw()).collect();
    assert_eq!(refs.len(), 512 - 8);
    refs.sort_unstable();
    refs.dedup();
    assert_eq!(refs.len(), 512 - 8, "no reference handed out twice");
    assert!(
        refs[0] >= 8,
        "the toolstack's references are never handed out"
    );
    // A freed reference is handed out again.
    let freed = grants.pop().unwrap();
    let gref = freed.gref();
    freed.end().unwrap();
    assert_eq!(
        table
            .grant_access(DomId(0), PageArc(Arc::clone(&page)), true)
            .unwrap()
            .gref(),
        gref
    );
}

#[test]
fn peer_maps_writes_and_access_ends_only_after_unmap() {
    for (dom0, domu) in domains() {
        let table = table(&domu);
        let page = TestPage::new(&domu);
        page.write(0, b"from domU");
        let dropped = Cell::new(false);
        let grant = table
            .grant_access(DomId(0), Tracked(&page, &dropped), false)
            .unwrap();
        assert!(!grant.in_use());
        let mapped = map(&dom0, DOMU, grant.gref(), MapFlags::HOST_MAP).unwrap();
        assert_eq!(mapped.dev_bus_addr, grant.page().frame() << 12);
        assert!(grant.in_use());
        // Ending while mapped is refused, and the grant stays in force.
        let grant = match grant.end() {
            Err(still) => {
                assert_eq!(
                    still.to_string(),
                    Error::StillInUse(still.0.gref()).to_string()
                );
                still.0
            }
            Ok(_) => panic!("access ended while the peer had the page mapped"),
        };
        assert!(!dropped.get());
        unmap(&dom0, mapped.handle).unwrap();
        assert!(!grant.in_use());
        let gref = grant.gref();
        let tracked = grant.end().unwrap();
        assert!(!dropped.get());
        drop(tracked);
        assert!(dropped.get());
        // A revoked reference no longer maps.
        expect_status(
            map(&dom0, DOMU, gref, MapFlags::HOST_MAP),
            GrantStatus::GENERAL_ERROR,
        );
    }
}

#[test]
fn dropping_a_mapped_grant_leaks_the_page_and_the_reference() {
    for (dom0, domu) in domains() {
        let table = table(&domu);
        let page = TestPage::new(&domu);
        let dropped = Cell::new(false);
        let grant = table
            .grant_access(DomId(0), Tracked(&page, &dropped), false)
            .unwrap();
        let gref = grant.gref();
        let mapped = map(&dom0, DOMU, gref, MapFlags::HOST_MAP).unwrap();
        assert_eq!(table.leaked(), 0);
        drop(grant);
        assert!(
            !dropped.get(),
            "a page the peer can still write was released"
        );
        assert_eq!(table.leaked(), 1, "the leak is counted");
        // The entry is still in force and its reference is not handed out again.
        assert!(table.in_use(gref));
        let again = map(&dom0, DOMU, gref, MapFlags::HOST_MAP).unwrap();
        let other = table
            .grant_access(DomId(0), PageArc(Arc::clone(&page)), true)
            .unwrap();
        assert_ne!(other.gref(), gref);
        unmap(&dom0, again.handle).unwrap();
        unmap(&dom0, mapped.handle).unwrap();
    }
}

#[test]
fn bad_references_domains_and_permissions_are_typed_errors() {
    for (dom0, domu) in domains() {
        let table = table(&domu);
        let page = TestPage::new(&domu);
        let ro = table
            .grant_access(DomId(0), PageArc(Arc::clone(&page)), true)
            .unwrap();
        // Writable map of a read-only grant.
        expect_status(
            map(&dom0, DOMU, ro.gref(), MapFlags::HOST_MAP),
            GrantStatus::GENERAL_ERROR,
        );
        let mapped = map(&dom0, DOMU, ro.gref(), MapFlags::HOST_MAP_READONLY).unwrap();
        unmap(&dom0, mapped.handle).unwrap();
        // Outside the table; a free entry; the toolstack's empty reference 0.
        expect_status(
            map(&dom0, DOMU, GrantRef(100_000), MapFlags::HOST_MAP),
            GrantStatus::BAD_GNTREF,
        );
        expect_status(
            map(&dom0, DOMU, GrantRef(300), MapFlags::HOST_MAP),
            GrantStatus::GENERAL_ERROR,
        );
        expect_status(
            map(&dom0, DOMU, GrantRef(0), MapFlags::HOST_MAP),
            GrantStatus::GENERAL_ERROR,
        );
        // A domain that does not exist; no mapping flag at all.
        expect_status(
            map(&dom0, DomId(77), ro.gref(), MapFlags::HOST_MAP_READONLY),
            GrantStatus::BAD_DOMAIN,
        );
        expect_status(
            map(&dom0, DOMU, ro.gref(), MapFlags::empty()),
            GrantStatus::BAD_GNTREF,
        );
        // Granted to dom0, mapped by another domain.
        let dom2 = dom0.domain(DomId(2));
        expect_status(
            map(&dom2, DOMU, ro.gref(), MapFlags::HOST_MAP_READONLY),
            GrantStatus::GENERAL_ERROR,
        );
        // Unmapping a handle that maps nothing.
        expect_status(
            unmap(&dom0, xen_hypercall::grant_table::GrantHandle(42)),
            GrantStatus::BAD_HANDLE,
        );
        // Granting to a reserved id gives the page back.
        let refused = table
            .grant_access(DomId::SELF, PageArc(Arc::clone(&page)), false)
            .unwrap_err();
        assert_eq!(refused.error, Error::BadDomain(DomId::SELF));
        assert_eq!(refused.error.kind(), xen_hypercall::ErrorKind::InvalidInput);
    }
}

#[test]
fn double_map_pins_until_both_unmap_and_a_second_unmap_is_refused() {
    for (dom0, domu) in domains() {
        let table = table(&domu);
        let page = TestPage::new(&domu);
        let grant = table
            .grant_access(DomId(0), PageArc(Arc::clone(&page)), false)
            .unwrap();
        let first = map(&dom0, DOMU, grant.gref(), MapFlags::HOST_MAP).unwrap();
        let second = map(&dom0, DOMU, grant.gref(), MapFlags::HOST_MAP_READONLY).unwrap();
        assert_ne!(first.handle, second.handle);
        unmap(&dom0, first.handle).unwrap();
        assert!(grant.in_use(), "the second mapping still pins the page");
        expect_status(unmap(&dom0, first.handle), GrantStatus::BAD_HANDLE);
        unmap(&dom0, second.handle).unwrap();
        grant.end().unwrap();
    }
}

#[test]
fn copies_move_bytes_both_ways_and_report_refusals() {
    for (dom0, domu) in domains() {
        let domu_table = table(&domu);
        let dom0_table = table(&dom0);
        let shared = TestPage::new(&domu);
        let local = TestPage::new(&domu);
        shared.write(100, b"granted bytes");
        let rw = domu_table
            .grant_access(DomId(0), PageArc(Arc::clone(&shared)), false)
            .unwrap();
        let foreign = |offset| CopyPtr::Grant {
            domid: DOMU,
            gref: rw.gref(),
            offset,
        };
        // From the grant into dom0's page, and back at another offset.
        dom0_table
            .copy(&[
                CopyOp {
                    source: foreign(100),
                    dest: CopyPtr::Page {
                        page: &*local,
                        offset: 0,
                    },
                    len: 13,
                },
                CopyOp {
                    source: CopyPtr::Page {
                        page: &*local,
                        offset: 0,
                    },
                    dest: foreign(2000),
                    len: 13,
                },
            ])
            .unwrap();
        assert_eq!(local.read(0, 13), b"granted bytes");
        assert_eq!(shared.read(2000, 13), b"granted bytes");
        assert!(!rw.in_use(), "a finished copy leaves no pin");
        // Many copies: batched, all done.
        let ops: Vec<CopyOp<'_>> = (0..40u16)
            .map(|i| CopyOp {
                source: CopyPtr::Page {
                    page: &*local,
                    offset: 0,
                },
                dest: foreign(i * 100),
                len: 1,
            })
            .collect();
        dom0_table.copy(&ops).unwrap();
        assert_eq!(shared.read(3900, 1), b"g");
        // Crossing the page end; into a read-only grant; the failing index is reported.
        let ro = domu_table
            .grant_access(DomId(0), PageArc(Arc::clone(&shared)), true)
            .unwrap();
        let err = dom0_table
            .copy(&[
                CopyOp {
                    source: CopyPtr::Page {
                        page: &*local,
                        offset: 0,
                    },
                    dest: foreign(0),
                    len: 1,
                },
                CopyOp {
                    source: foreign(4000),
                    dest: CopyPtr::Page {
                        page: &*local,
                        offset: 0,
                    },
                    len: 200,
                },
            ])
            .unwrap_err();
        assert_eq!(
            err,
            Error::Copy {
                index: 1,
                status: GrantStatus::BAD_COPY_ARG
            }
        );
        let err = dom0_table
            .copy(&[CopyOp {
                source: CopyPtr::Page {
                    page: &*local,
                    offset: 0,
                },
                dest: CopyPtr::Grant {
                    domid: DOMU,
                    gref: ro.gref(),
                    offset: 0,
                },
                len: 1,
            }])
            .unwrap_err();
        assert_eq!(
            err,
            Error::Copy {
                index: 0,
                status: GrantStatus::GENERAL_ERROR
            }
        );
        assert_eq!(err.kind(), xen_hypercall::ErrorKind::Other);
        // A reference of a domain that does not exist.
        let err = dom0_table
            .copy(&[CopyOp {
                source: CopyPtr::Grant {
                    domid: DomId(77),
                    gref: rw.gref(),
                    offset: 0,
                },
                dest: CopyPtr::Page {
                    page: &*local,
                    offset: 0,
                },
                len: 1,
            }])
            .unwrap_err();
        assert_eq!(
            err,
            Error::Copy {
                index: 0,
                status: GrantStatus::BAD_DOMAIN
            }
        );
    }
}
