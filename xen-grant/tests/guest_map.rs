//! The guest side's mappings of other domains' grants against the mock
//! hypervisor: both domains see each other's bytes, the grant stays pinned
//! until the unmap (explicit or on drop), and every refusal is a typed error
//! that gives the slot back. Runs under Miri.

mod common;

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::Arc;

use common::{DOMU, PageArc, TestPage, domains, table};
use xen_grant::{Error, GrantRef, GrantStatus, MapSlot, MappedGrant};
use xen_hypercall::mock::MockXen;
use xen_hypercall::prelude::*;

/// A place in the domU's "address space": the mock maps nothing there, and
/// tells where the page mapped at `host_addr` is.
#[derive(Debug)]
struct MockSlot {
    xen: MockXen,
    host_addr: u64,
}

// SAFETY: the mock keeps nothing at `host_addr`; while a page is mapped there,
// `page` is the granted page itself (alive while granted, accessed atomically).
unsafe impl MapSlot for MockSlot {
    fn host_addr(&self) -> u64 {
        self.host_addr
    }

    fn page(&self) -> NonNull<u8> {
        NonNull::new(
            self.xen
                .mapped_at(self.host_addr)
                .expect("a page is mapped"),
        )
        .expect("not null")
    }
}

fn slot(xen: &MockXen, host_addr: u64) -> MockSlot {
    MockSlot {
        xen: xen.clone(),
        host_addr,
    }
}

#[test]
fn a_mapped_grant_shows_both_domains_writes_and_pins_until_unmapped() {
    for (dom0, domu) in domains() {
        let dom0_table = table(&dom0);
        let page = TestPage::new(&dom0);
        page.write(0, b"from dom0");
        let grant = dom0_table
            .grant_access(DOMU, PageArc(Arc::clone(&page)), false)
            .unwrap();
        let mapping = MappedGrant::map(
            &domu,
            DomId(0),
            grant.gref(),
            slot(&domu, 0x4000_0000),
            false,
        )
        .unwrap();
        assert_eq!((mapping.domid(), mapping.gref()), (DomId(0), grant.gref()));
        assert!(!mapping.is_readonly());
        let mut seen = [0; 9];
        mapping.read(0, &mut seen).unwrap();
        assert_eq!(&seen, b"from dom0");
        mapping.mem().unwrap().write(2048, b"from domU").unwrap();
        assert_eq!(page.read(2048, 9), b"from domU");
        // Pinned: dom0 cannot end the access while the domU has it mapped.
        assert!(grant.in_use());
        let Err(still_mapped) = grant.end() else {
            panic!("access ended while the domU had the page mapped")
        };
        let grant = still_mapped.0;
        let slot = mapping.unmap().unwrap();
        assert_eq!(slot.host_addr, 0x4000_0000);
        assert!(domu.mapped_at(0x4000_0000).is_none());
        assert!(!grant.in_use());
        // The emptied slot maps again; dropping the mapping unmaps it.
        let again = MappedGrant::map(&domu, DomId(0), grant.gref(), slot, true).unwrap();
        assert!(
            again.mem().is_none(),
            "a read-only mapping offers no writable view"
        );
        again.read(2048, &mut seen).unwrap();
        assert_eq!(&seen, b"from domU");
        let view = again.read_only();
        assert_eq!(view.len(), 4096);
        view.read(2048, &mut seen).unwrap();
        assert_eq!(&seen, b"from domU");
        assert!(grant.in_use());
        drop(again);
        assert!(!grant.in_use());
        grant.end().unwrap();
    }
}

#[test]
fn refused_maps_are_typed_and_give_the_slot_back() {
    for (dom0, domu) in domains() {
        let dom0_table = table(&dom0);
        let page = TestPage::new(&dom0);
        let ro = dom0_table
            .grant_access(DOMU, PageArc(Arc::clone(&page)), true)
            .unwrap();
        let to_dom2 = dom0_table
            .grant_access(DomId(2), PageArc(Arc::clone(&page)), false)
            .unwrap();
        let revoked = dom0_table
            .grant_access(DOMU, PageArc(Arc::clone(&page)), false)
            .unwrap();
        let revoked_ref = revoked.gref();
        revoked.end().unwrap();
        let grant_status = |status| Error::Xen(xen_hypercall::Error::Grant(status));
        let cases = [
            (
                "writable map of a read-only grant",
                DomId(0),
                ro.gref(),
                0x1000,
                grant_status(GrantStatus::GENERAL_ERROR),
            ),
            (
                "granted to another domain",
                DomId(0),
                to_dom2.gref(),
                0x1000,
                grant_status(GrantStatus::GENERAL_ERROR),
            ),
            (
                "revoked",
                DomId(0),
                revoked_ref,
                0x1000,
                grant_status(GrantStatus::GENERAL_ERROR),
            ),
            (
                "past the table",
                DomId(0),
                GrantRef(100_000),
                0x1000,
                grant_status(GrantStatus::BAD_GNTREF),
            ),
            (
                "no such domain",
                DomId(77),
                ro.gref(),
                0x1000,
                grant_status(GrantStatus::BAD_DOMAIN),
            ),
            (
                "DOMID_SELF",
                DomId::SELF,
                ro.gref(),
                0x1000,
                Error::BadDomain(DomId::SELF),
            ),
            (
                "unaligned slot",
                DomId(0),
                ro.gref(),
                0x1008,
                Error::InvalidInput("a map slot must be page-aligned"),
            ),
        ];
        for (what, domid, gref, host_addr, expected) in cases {
            let refused = MappedGrant::map(&domu, domid, gref, slot(&domu, host_addr), false)
                .expect_err(what);
            assert_eq!(refused.error, expected, "{what}");
            assert_eq!(
                refused.slot.host_addr, host_addr,
                "{what}: the slot comes back"
            );
            assert!(domu.mapped_at(host_addr).is_none(), "{what}");
        }
        assert_eq!(
            MappedGrant::map(&domu, DomId(0), GrantRef(100_000), slot(&domu, 0), false)
                .unwrap_err()
                .error
                .kind(),
            xen_hypercall::ErrorKind::InvalidInput
        );
        // Nothing refused left a pin behind.
        assert!(!ro.in_use() && !to_dom2.in_use());
        // Reads outside the page are refused before any access.
        let mapping =
            MappedGrant::map(&domu, DomId(0), ro.gref(), slot(&domu, 0x2000), true).unwrap();
        assert!(matches!(
            mapping.read(4000, &mut [0; 200]),
            Err(Error::InvalidInput(_))
        ));
        assert!(mapping.read(usize::MAX, &mut [0; 2]).is_err());
        drop(mapping);
        ro.end().unwrap();
        to_dom2.end().unwrap();
    }
}

/// A domain's grant to itself is refused before Xen sees it: on x86 HVM and
/// PVH the map would take the granted frame out of the physmap where it lives
/// (the mock, like PV and Arm Xen, would map it).
#[test]
fn a_grant_of_the_mapping_domain_itself_is_refused() {
    for (_dom0, domu) in domains() {
        let domu_table = table(&domu);
        let page = TestPage::new(&domu);
        let own = domu_table
            .grant_access(DOMU, PageArc(Arc::clone(&page)), false)
            .unwrap();
        let lowest_free = domu.evtchn_alloc_unbound(DomId::SELF, DomId(0)).unwrap();
        domu.evtchn_close(lowest_free).unwrap();
        let refused = MappedGrant::map(&domu, DOMU, own.gref(), slot(&domu, 0x3000), false)
            .expect_err("a domain mapped its own grant");
        assert_eq!(refused.error, Error::OwnDomain(DOMU));
        assert_eq!(refused.error.kind(), xen_hypercall::ErrorKind::InvalidInput);
        assert_eq!(refused.slot.host_addr, 0x3000);
        assert!(domu.mapped_at(0x3000).is_none());
        assert!(!own.in_use());
        // The port used to learn the domain's id is closed again.
        let port = domu.evtchn_alloc_unbound(DomId::SELF, DomId(0)).unwrap();
        assert_eq!(port, lowest_free);
        domu.evtchn_close(port).unwrap();
        own.end().unwrap();
    }
}

/// A slot whose address can be moved, to make Xen refuse the unmap, and which
/// records whether it was dropped.
#[derive(Debug)]
struct MovingSlot<'a> {
    xen: &'a MockXen,
    host_addr: &'a Cell<u64>,
    dropped: &'a Cell<bool>,
}

// SAFETY: the mock maps nothing at any address, so moving it only makes the
// unmap be refused (Xen finds another page there); while mapped, `page` is the
// granted page, accessed only atomically.
unsafe impl MapSlot for MovingSlot<'_> {
    fn host_addr(&self) -> u64 {
        self.host_addr.get()
    }

    fn page(&self) -> NonNull<u8> {
        NonNull::new(self.xen.mapped_at(0x6000).expect("a page is mapped")).expect("not null")
    }
}

impl Drop for MovingSlot<'_> {
    fn drop(&mut self) {
        self.dropped.set(true);
    }
}

#[test]
fn a_refused_unmap_keeps_the_mapping_and_a_drop_leaks_the_slot() {
    for (dom0, domu) in domains() {
        let dom0_table = table(&dom0);
        let page = TestPage::new(&dom0);
        let grant = dom0_table
            .grant_access(DOMU, PageArc(Arc::clone(&page)), false)
            .unwrap();
        let (host_addr, dropped) = (Cell::new(0x6000), Cell::new(false));
        let moving = || MovingSlot {
            xen: &domu,
            host_addr: &host_addr,
            dropped: &dropped,
        };
        let mapping = MappedGrant::map(&domu, DomId(0), grant.gref(), moving(), false).unwrap();
        host_addr.set(0x7000);
        let refused = mapping.unmap().unwrap_err();
        assert_eq!(
            refused.error,
            Error::Xen(xen_hypercall::Error::Grant(GrantStatus::GENERAL_ERROR))
        );
        assert!(grant.in_use(), "the mapping stays");
        host_addr.set(0x6000);
        let slot = refused.mapping.unmap().unwrap();
        assert!(!grant.in_use() && !dropped.get());
        drop(slot);
        assert!(dropped.get());
        // Dropped while Xen refuses the unmap: the slot is leaked, never reused.
        dropped.set(false);
        let mapping = MappedGrant::map(&domu, DomId(0), grant.gref(), moving(), false).unwrap();
        let handle = mapping.handle();
        host_addr.set(0x7000);
        drop(mapping);
        assert!(
            !dropped.get(),
            "a slot that may still hold the page was dropped"
        );
        assert!(grant.in_use());
        // SAFETY: the mock maps nothing; this only releases the leaked mapping.
        unsafe { domu.gnttab_unmap_grant_ref(0x6000, handle) }.unwrap();
        grant.end().unwrap();
    }
}
