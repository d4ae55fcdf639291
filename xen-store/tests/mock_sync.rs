//! The blocking client against the in-process server (also under Miri).
#![cfg(feature = "mock")]

use xen_store::mock::MockStore;
use xen_store::{Access, Client, DomId, Errno, Error, ErrorKind, Perm, Store};

fn dom0(store: &MockStore) -> Client<xen_store::mock::MockConnection> {
    Client::new(store.connect(DomId(0)))
}

#[test]
fn read_write_mkdir_rm_directory() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    xs.write("/tool/test/a", b"1").unwrap();
    xs.write("/tool/test/b", b"binary\0value").unwrap();
    xs.mkdir("/tool/test/c").unwrap();
    assert_eq!(xs.read("/tool/test/a").unwrap(), b"1");
    assert_eq!(xs.read("/tool/test/b").unwrap(), b"binary\0value");
    assert_eq!(xs.read("/tool/test/c").unwrap(), b"");
    assert_eq!(xs.directory("/tool/test").unwrap(), ["a", "b", "c"]);
    xs.rm("/tool/test/a").unwrap();
    assert_eq!(
        xs.read("/tool/test/a").unwrap_err().errno(),
        Some(Errno::ENOENT)
    );
    assert_eq!(
        xs.read("/tool/test/a").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(xs.read_string("/tool/test/c").unwrap(), "");
    assert_eq!(xs.get_domain_path(DomId(3)).unwrap(), "/local/domain/3");
}

#[test]
fn large_directories_fall_back_to_directory_part() {
    let store = MockStore::new();
    store.set_directory_limits(40, 25);
    let mut xs = dom0(&store);
    // 8 bytes a name: past the 40-byte limit, in parts of 25 bytes (fewer of them under Miri).
    let count = if cfg!(miri) { 8 } else { 30 };
    let names: Vec<String> = (0..count).map(|i| format!("entry{i:02}")).collect();
    for name in &names {
        xs.write(&format!("/big/{name}"), b"").unwrap();
    }
    assert_eq!(xs.directory("/big").unwrap(), names);
}

#[test]
fn permissions_and_a_domu_denied_typed() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    xs.write("/local/domain/0/secret", b"s").unwrap();
    xs.set_perms(
        "/local/domain/0/secret",
        &[Perm::new(DomId(0), Access::None)],
    )
    .unwrap();
    xs.write("/local/domain/5/name", b"guest").unwrap();
    xs.set_perms(
        "/local/domain/5",
        &[
            Perm::new(DomId(0), Access::None),
            Perm::new(DomId(5), Access::Read),
        ],
    )
    .unwrap();
    xs.mkdir("/local/domain/5/data").unwrap();
    xs.set_perms("/local/domain/5/data", &[Perm::new(DomId(5), Access::None)])
        .unwrap();
    assert_eq!(
        xs.get_perms("/local/domain/5").unwrap(),
        [
            Perm::new(DomId(0), Access::None),
            Perm::new(DomId(5), Access::Read)
        ]
    );

    let mut domu = Client::new(store.connect(DomId(5)));
    let denied = domu.read("/local/domain/0/secret").unwrap_err();
    assert_eq!(denied.errno(), Some(Errno::EACCES));
    assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
    // Relative paths are under the domain's home.
    domu.write("data/x", b"from domU").unwrap();
    assert_eq!(xs.read("/local/domain/5/data/x").unwrap(), b"from domU");
    assert!(domu.introduce(DomId(7), 1, 2).unwrap_err().errno() == Some(Errno::EACCES));
}

#[test]
fn many_requests_in_flight_on_one_connection() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    let in_flight = if cfg!(miri) { 16 } else { 64 };
    let tickets: Vec<_> = (0..in_flight)
        .map(|i| {
            xs.submit(
                xen_store::op::write(&format!("/m/{i}"), format!("{i}").as_bytes()).unwrap(),
                0,
            )
            .unwrap()
        })
        .collect();
    for ticket in tickets {
        xs.wait(ticket).unwrap();
    }
    let reads: Vec<_> = (0..in_flight)
        .map(|i| {
            xs.submit(xen_store::op::read(&format!("/m/{i}")).unwrap(), 0)
                .unwrap()
        })
        .collect();
    // Waited for in reverse order: replies to the others are kept.
    for (i, ticket) in reads.into_iter().enumerate().rev() {
        assert_eq!(xs.wait(ticket).unwrap(), format!("{i}").as_bytes());
    }
}

#[test]
fn transactions_conflict_and_the_helper_retries() {
    let store = MockStore::new();
    let mut a = dom0(&store);
    let mut b = dom0(&store);
    a.write("/counter", b"0").unwrap();

    let mut tx_a = a.transaction().unwrap();
    let mut tx_b = b.transaction().unwrap();
    let va = tx_a.read("/counter").unwrap();
    let vb = tx_b.read("/counter").unwrap();
    tx_a.write("/counter", &[va[0] + 1]).unwrap();
    tx_b.write("/counter", &[vb[0] + 1]).unwrap();
    tx_a.commit().unwrap();
    let conflict = tx_b.commit().unwrap_err();
    assert_eq!(conflict.errno(), Some(Errno::EAGAIN));
    assert_eq!(conflict.kind(), ErrorKind::Conflict);
    drop(tx_a);
    drop(tx_b);

    // The helper runs the body again after a conflict forced by another writer.
    let mut runs = 0;
    a.transact(|tx| {
        runs += 1;
        let v = tx.read("/counter")?;
        if runs == 1 {
            store.write_as_dom0("/counter", b"5");
        }
        tx.write("/counter", &[v[0] + 1])
    })
    .unwrap();
    assert_eq!(runs, 2);
    assert_eq!(a.read("/counter").unwrap(), b"6");
}

#[test]
fn an_uncommitted_transaction_is_aborted_on_drop() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    {
        let mut tx = xs.transaction().unwrap();
        tx.write("/tx/x", b"1").unwrap();
        assert_eq!(store.open_transactions(), 1);
    }
    assert_eq!(xs.read("/tx/x").unwrap_err().errno(), Some(Errno::ENOENT));
    // The abort went out with that read.
    assert_eq!(store.open_transactions(), 0);
}

#[test]
fn watches_fire_first_then_on_changes() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    let w = xs.watch("/w").unwrap();
    let first = xs.next_event().unwrap();
    assert_eq!((first.watch, first.path.as_str()), (w, "/w"));
    store.write_as_dom0("/w/a", b"1");
    let event = xs.next_event().unwrap();
    assert_eq!(event.path, "/w/a");
    store.write_as_dom0("/elsewhere", b"1");
    xs.write("/w/b", b"2").unwrap();
    assert_eq!(xs.next_event().unwrap().path, "/w/b");
    xs.unwatch(w).unwrap();
    store.write_as_dom0("/w/c", b"3");
    xs.write("/sync", b"").unwrap();
    assert_eq!(xs.try_next_event(), None);
}

#[test]
fn next_event_of_waits_for_its_watch_and_keeps_the_others_events() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    let a = xs.watch("/a").unwrap();
    let b = xs.watch("/b").unwrap();
    // Both fired once when set; take b's first: a's stays queued.
    assert_eq!(xs.next_event_of(b).unwrap().path, "/b");
    assert_eq!(xs.next_event_of(a).unwrap().path, "/a");
    store.write_as_dom0("/a/x", b"1");
    store.write_as_dom0("/b/y", b"1");
    assert_eq!(xs.next_event_of(b).unwrap().path, "/b/y");
    assert_eq!(xs.next_event().unwrap().path, "/a/x");
    xs.unwatch(a).unwrap();
    assert!(matches!(xs.next_event_of(a), Err(Error::InvalidInput(_))));
}

#[test]
fn hostile_replies_are_typed_errors() {
    let store = MockStore::new();
    let conn = store.connect(DomId(0));
    // A reply to a request never sent.
    let mut bytes = Vec::new();
    xen_store::wire::encode(xen_store::wire::MsgType::READ, 999, 0, &[b"x"], &mut bytes).unwrap();
    store.inject(&conn, &bytes);
    let mut xs = Client::new(conn);
    let error = xs.read("/a").unwrap_err();
    assert!(
        matches!(
            error,
            Error::Protocol(xen_store::ProtocolError::UnknownRequest { req_id: 999 })
        ),
        "{error:?}"
    );
    assert_eq!(xs.read("/a").unwrap_err().kind(), ErrorKind::Protocol);
}

#[test]
fn bad_arguments_never_reach_the_daemon() {
    let store = MockStore::new();
    let mut xs = dom0(&store);
    assert!(matches!(xs.read("/a//b"), Err(Error::Path(_))));
    assert!(matches!(
        xs.write("/a", &vec![0; 5000]),
        Err(Error::RequestTooLong { .. })
    ));
    // The connection is still fine.
    xs.write("/a", b"ok").unwrap();
}

#[test]
fn end_of_stream_is_closed() {
    let store = MockStore::new();
    let conn = store.connect(DomId(0));
    store.inject(&conn, &[1, 2, 3]);
    let mut xs = Client::new(conn);
    // Three stray bytes, then the server keeps quiet: the request's reply comes after them
    // and the framing is broken.
    let error = xs.read("/a").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Protocol, "{error:?}");
}

#[test]
fn resume_sets_the_watches_again_on_the_new_transport() {
    // The first daemon is the domain's before a save, the second its home after the restore.
    let before = MockStore::new();
    let mut xs = dom0(&before);
    let w = xs.watch("/w").unwrap();
    assert_eq!(xs.next_event().unwrap().path, "/w");
    let after = MockStore::new();
    xs.resume(after.connect(DomId(0))).unwrap();
    assert_eq!(after.watch_count(), 1);
    // The new daemon fires the watch once when set, under the same id.
    let first = xs.next_event().unwrap();
    assert_eq!((first.watch, first.path.as_str()), (w, "/w"));
    after.write_as_dom0("/w/a", b"1");
    assert_eq!(xs.next_event_of(w).unwrap().path, "/w/a");
    // Requests go to the new daemon only.
    xs.write("/x", b"2").unwrap();
    assert_eq!(dom0(&after).read("/x").unwrap(), b"2");
    xs.unwatch(w).unwrap();
    assert_eq!(after.watch_count(), 0);
}
