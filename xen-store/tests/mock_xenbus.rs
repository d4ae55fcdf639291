//! The blocking client over a device that behaves like Linux's `/dev/xen/xenbus`: one
//! message per write in a 4096-byte buffer, header included; refused requests as the write's
//! errno; replies read in odd-sized pieces. Also under Miri.
#![cfg(feature = "mock")]

use xen_store::mock::{MockStore, MockXenbus};
use xen_store::unix::{XENBUS_PAYLOAD_MAX, Xenbus};
use xen_store::{Client, DomId, Errno, Error, Store};

fn client(store: &MockStore) -> Client<Xenbus<MockXenbus>> {
    Client::new(Xenbus::new(MockXenbus::new(store, DomId(0))))
}

#[test]
fn operations_over_odd_sized_reads() {
    let store = MockStore::new();
    let mut xs = client(&store);
    // Every reply is read in odd pieces: a few operations show it under Miri.
    let count = if cfg!(miri) { 6 } else { 20 };
    for i in 0..count {
        xs.write(&format!("/x/{i}"), format!("value {i}").as_bytes())
            .unwrap();
    }
    for i in 0..count {
        assert_eq!(
            xs.read(&format!("/x/{i}")).unwrap(),
            format!("value {i}").as_bytes()
        );
    }
    assert_eq!(xs.directory("/x").unwrap().len(), count);
}

/// A request the kernel refuses fails alone: the connection carries on.
#[test]
fn a_refused_request_fails_alone() {
    let store = MockStore::new();
    let mut xs = client(&store);
    xs.write("/a", b"1").unwrap();
    // A WATCH the kernel could not register (ENOMEM, Linux's 12).
    xs.get_mut().device_mut().fail_next_request(12);
    let error = xs.watch("/a").unwrap_err();
    assert_eq!(error.errno(), Some(Errno::ENOMEM), "{error:?}");
    // So does a TRANSACTION_START.
    xs.get_mut().device_mut().fail_next_request(12);
    assert_eq!(xs.transaction().unwrap_err().errno(), Some(Errno::ENOMEM));
    // Nothing was lost.
    assert_eq!(xs.read("/a").unwrap(), b"1");
    let watch = xs.watch("/a").unwrap();
    assert_eq!(xs.next_event().unwrap().watch, watch);
    xs.transact(|tx| tx.write("/a", b"2")).unwrap();
    assert_eq!(xs.read("/a").unwrap(), b"2");
}

/// Payloads over 4080 bytes do not fit the kernel's buffer: a typed error before sending
/// when the limit is set, else the kernel's `EINVAL` for that request alone.
#[test]
fn payloads_past_the_kernels_buffer() {
    let store = MockStore::new();
    let mut xs = client(&store);
    let fits = vec![b'f'; XENBUS_PAYLOAD_MAX - "/big\0".len()];
    xs.write("/big", &fits).unwrap();
    assert_eq!(xs.read("/big").unwrap(), fits);
    let too_long = vec![b't'; fits.len() + 1];
    let refused = xs.write("/big", &too_long).unwrap_err();
    assert_eq!(refused.errno(), Some(Errno::EINVAL), "{refused:?}");
    xs.set_payload_max(XENBUS_PAYLOAD_MAX);
    let refused = xs.write("/big", &too_long).unwrap_err();
    assert!(
        matches!(refused, Error::RequestTooLong { len, max: XENBUS_PAYLOAD_MAX } if len == XENBUS_PAYLOAD_MAX + 1),
        "{refused:?}"
    );
    assert_eq!(xs.read("/big").unwrap(), fits);
}
