//! The protocol core against itself over plain memory: a server and a client endpoint on one
//! page (and the rings' own pages), each in its own thread, signalling each other through a
//! mock event channel.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use support::{Channel, Event, pattern};
use xen_shared::AccessError;
use xen_vchan::{Corruption, Endpoint, Error, Order, Orders, PeerState, RingPages, Shared, Step};

/// Bytes each way in the streaming tests.
const STREAM: usize = if cfg!(miri) { 6000 } else { 1 << 20 };

fn orders(left: u16, right: u16) -> Orders {
    Orders::new(Order::new(left).unwrap(), Order::new(right).unwrap()).unwrap()
}

/// Streams `STREAM` bytes each way at once, in writes of `chunk` bytes, and checks every byte.
fn stream_both_ways(orders: Orders, chunk: usize, start: u32) {
    let chan = Channel::new(orders);
    let (mut server, mut client) = chan.connect();
    chan.set_indices(start);
    let (to_server, to_client) = (&Event::default(), &Event::default());
    let mem = chan.shared();
    let server_mem = mem;
    std::thread::scope(|s| {
        // Server: reads the client's stream, then writes its own.
        let srv = s.spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; chunk];
            let mut sent = 0;
            let out = pattern(STREAM, 7);
            while got.len() < STREAM || sent < STREAM {
                let mut blocked = true;
                if got.len() < STREAM {
                    match server.read(&server_mem, &mut buf).unwrap() {
                        Step::Moved { bytes, notify } => {
                            got.extend_from_slice(&buf[..bytes]);
                            blocked = false;
                            if notify {
                                to_client.notify();
                            }
                        }
                        Step::WouldBlock => {}
                        Step::Closed => panic!("client closed early"),
                    }
                }
                if sent < STREAM {
                    let end = (sent + chunk).min(STREAM);
                    match server.write(&server_mem, &out[sent..end]).unwrap() {
                        Step::Moved { bytes, notify } => {
                            sent += bytes;
                            blocked = false;
                            if notify {
                                to_client.notify();
                            }
                        }
                        Step::WouldBlock => {}
                        Step::Closed => panic!("client closed early"),
                    }
                }
                if blocked {
                    to_server.wait();
                }
            }
            got
        });
        let cli = s.spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; chunk];
            let mut sent = 0;
            let out = pattern(STREAM, 3);
            while got.len() < STREAM || sent < STREAM {
                let mut blocked = true;
                if sent < STREAM {
                    let end = (sent + chunk).min(STREAM);
                    match client.write(&mem, &out[sent..end]).unwrap() {
                        Step::Moved { bytes, notify } => {
                            sent += bytes;
                            blocked = false;
                            if notify {
                                to_server.notify();
                            }
                        }
                        Step::WouldBlock => {}
                        Step::Closed => panic!("server closed early"),
                    }
                }
                if got.len() < STREAM {
                    match client.read(&mem, &mut buf).unwrap() {
                        Step::Moved { bytes, notify } => {
                            got.extend_from_slice(&buf[..bytes]);
                            blocked = false;
                            if notify {
                                to_server.notify();
                            }
                        }
                        Step::WouldBlock => {}
                        Step::Closed => panic!("server closed early"),
                    }
                }
                if blocked {
                    to_client.wait();
                }
            }
            got
        });
        assert!(srv.join().unwrap() == pattern(STREAM, 3));
        assert!(cli.join().unwrap() == pattern(STREAM, 7));
    });
}

#[test]
fn both_rings_in_the_page_stream_both_ways() {
    stream_both_ways(orders(10, 11), 100, 0);
    stream_both_ways(orders(11, 10), 4096, 0);
}

#[test]
fn rings_in_pages_of_their_own_stream_both_ways() {
    stream_both_ways(orders(11, 12), 1000, 0);
    let (big, chunk) = if cfg!(miri) { (13, 3000) } else { (16, 65536) };
    stream_both_ways(orders(big, 12), chunk, 0);
}

/// Indices that start just below `u32::MAX` wrap to 0 mid-stream (krata's channel broke
/// there); every byte still arrives in order.
#[test]
fn indices_near_u32_max_stream_across_the_wrap() {
    stream_both_ways(orders(10, 11), 333, u32::MAX - 1500);
    stream_both_ways(orders(12, 13), 5000, u32::MAX - 10);
}

#[test]
fn a_packet_moves_whole_or_not_at_all() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    // The left ring (client to server) holds 1024 bytes.
    assert_eq!(
        client.send(&mem, &[0; 1025]),
        Err(Error::PacketTooLarge {
            len: 1025,
            ring: 1024
        })
    );
    assert!(matches!(
        client.send(&mem, &[1; 1000]).unwrap(),
        Step::Moved { bytes: 1000, .. }
    ));
    // 24 bytes free: a 25-byte packet waits, a stream write takes what fits.
    assert_eq!(client.send(&mem, &[2; 25]).unwrap(), Step::WouldBlock);
    assert!(matches!(
        client.write(&mem, &[2; 25]).unwrap(),
        Step::Moved { bytes: 24, .. }
    ));
    let mut buf = vec![0u8; 1025];
    assert!(matches!(
        server.recv(&mem, &mut buf),
        Err(Error::PacketTooLarge { .. })
    ));
    assert!(matches!(
        server.recv(&mem, &mut buf[..999]).unwrap(),
        Step::Moved { bytes: 999, .. }
    ));
    assert_eq!(buf[998], 1);
    // 25 bytes left: a 26-byte packet waits, a 25-byte one arrives.
    assert_eq!(server.recv(&mem, &mut buf[..26]).unwrap(), Step::WouldBlock);
    assert!(matches!(
        server.recv(&mem, &mut buf[..25]).unwrap(),
        Step::Moved { bytes: 25, .. }
    ));
    assert_eq!(&buf[..2], &[1, 2]);
    assert_eq!(server.data_ready(&mem), Ok(0));
    assert_eq!(client.buffer_space(&mem), Ok(1024));
}

/// The event is asked for by a side that waits and sent once by the side that moves bytes.
#[test]
fn an_event_is_asked_for_by_the_waiter_and_sent_once() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    // The server asked for the client's first write when it set the page up.
    assert_eq!(
        client.write(&mem, b"a").unwrap(),
        Step::Moved {
            bytes: 1,
            notify: true
        }
    );
    assert_eq!(
        client.write(&mem, b"b").unwrap(),
        Step::Moved {
            bytes: 1,
            notify: false
        }
    );
    let mut buf = [0u8; 8];
    assert!(matches!(
        server.read(&mem, &mut buf).unwrap(),
        Step::Moved { bytes: 2, .. }
    ));
    // An empty ring: the server asks again, and the next write says to signal.
    assert_eq!(server.read(&mem, &mut buf).unwrap(), Step::WouldBlock);
    assert_eq!(
        client.write(&mem, b"c").unwrap(),
        Step::Moved {
            bytes: 1,
            notify: true
        }
    );
    // A writer facing a full ring asks for the reader's next read.
    assert!(matches!(
        client.write(&mem, &[0; 1023]).unwrap(),
        Step::Moved { bytes: 1023, .. }
    ));
    assert_eq!(client.write(&mem, b"d").unwrap(), Step::WouldBlock);
    assert_eq!(
        server.read(&mem, &mut buf).unwrap(),
        Step::Moved {
            bytes: 8,
            notify: true
        }
    );
    assert_eq!(
        server.read(&mem, &mut buf).unwrap(),
        Step::Moved {
            bytes: 8,
            notify: false
        }
    );
}

#[test]
fn a_closed_peer_is_end_of_stream_after_its_last_bytes() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    assert!(matches!(
        client.write(&mem, b"last words").unwrap(),
        Step::Moved { .. }
    ));
    client.close(&mem).unwrap();
    assert_eq!(server.peer_state(&mem), Ok(PeerState::Closed));
    let mut buf = [0u8; 4];
    assert!(matches!(
        server.read(&mem, &mut buf).unwrap(),
        Step::Moved { bytes: 4, .. }
    ));
    // A packet longer than what is left never comes.
    assert_eq!(server.recv(&mem, &mut [0; 7]).unwrap(), Step::Closed);
    let mut rest = [0u8; 16];
    assert!(matches!(
        server.read(&mem, &mut rest).unwrap(),
        Step::Moved { bytes: 6, .. }
    ));
    assert_eq!(server.read(&mem, &mut rest).unwrap(), Step::Closed);
    assert_eq!(server.write(&mem, b"anyone?").unwrap(), Step::Closed);
}

#[test]
fn the_client_sees_the_server_close() {
    let chan = Channel::new(orders(11, 10));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    assert_eq!(client.peer_state(&mem), Ok(PeerState::Open));
    server.close(&mem).unwrap();
    assert_eq!(client.write(&mem, b"x").unwrap(), Step::Closed);
    assert_eq!(client.read(&mem, &mut [0; 4]).unwrap(), Step::Closed);
}

#[test]
fn the_server_waits_for_a_client_that_has_not_connected() {
    let chan = Channel::new(orders(10, 11));
    let mut server = chan.server();
    let mem = chan.shared();
    assert_eq!(server.peer_state(&mem), Ok(PeerState::Waiting));
    assert_eq!(server.read(&mem, &mut [0; 4]).unwrap(), Step::WouldBlock);
    // libxenvchan lets the server write before the client comes.
    assert!(matches!(
        server.write(&mem, b"early").unwrap(),
        Step::Moved { bytes: 5, .. }
    ));
    let mut client =
        Endpoint::connect_client(mem.page, Endpoint::peer_orders(mem.page).unwrap()).unwrap();
    let mut buf = [0u8; 8];
    assert!(matches!(
        client.read(&mem, &mut buf).unwrap(),
        Step::Moved { bytes: 5, .. }
    ));
    assert_eq!(server.peer_state(&mem), Ok(PeerState::Open));
}

#[test]
fn the_server_publishes_its_orders_and_grants_where_libxenvchan_reads_them() {
    let chan = Channel::new(orders(12, 14));
    let _server = chan.server();
    let page = chan.shared().page;
    let word = |offset| {
        page.atomic::<AtomicU32>(offset)
            .unwrap()
            .load(Ordering::Relaxed)
    };
    // left_order 12, right_order 14 (u16 each at 16 and 18), little-endian on Xen's CPUs.
    assert_eq!(word(16).to_le_bytes(), [12, 0, 14, 0]);
    // cli_live 2, srv_live 1, cli_notify NOTIFY_WRITE, srv_notify 0.
    assert_eq!(word(20).to_le_bytes(), [2, 1, 1, 0]);
    // One grant for the left ring, then four for the right one.
    let grants: Vec<u32> = (0..5).map(|i| word(24 + 4 * i)).collect();
    assert_eq!(grants, support::GRANTS[..5]);
    let orders = Endpoint::peer_orders(page).unwrap();
    let mut read = [0u32; 5];
    Endpoint::peer_grants(page, orders, &mut read).unwrap();
    assert_eq!(read, support::GRANTS[..5]);
    assert!(Endpoint::peer_grants(page, orders, &mut [0; 4]).is_err());
    let mut client = Endpoint::connect_client(page, orders).unwrap();
    assert_eq!(word(20).to_le_bytes(), [1, 1, 1, 1]);
    client.close(&chan.shared()).unwrap();
    assert_eq!(word(20).to_le_bytes(), [0, 1, 1, 1]);
}

// A hostile server or client: values the protocol does not allow end the channel with a typed
// error, never a hang, a panic or an access outside the rings.

#[test]
fn orders_the_protocol_does_not_allow_are_refused() {
    let chan = Channel::new(orders(10, 11));
    let _server = chan.server();
    let page = chan.shared().page;
    let orders_word = page.atomic::<AtomicU32>(16).unwrap();
    let set = |left: u16, right: u16| {
        let [a, b] = left.to_le_bytes();
        let [c, d] = right.to_le_bytes();
        orders_word.store(u32::from_le_bytes([a, b, c, d]), Ordering::Relaxed);
        Endpoint::peer_orders(page)
    };
    // mirage qubes-firewall#3: "Invalid ring order: 0".
    assert_eq!(set(0, 11), Err(Error::BadOrder(0)));
    assert_eq!(set(10, 9), Err(Error::BadOrder(9)));
    assert_eq!(set(21, 12), Err(Error::BadOrder(21)));
    assert_eq!(set(0xffff, 12), Err(Error::BadOrder(0xffff)));
    assert_eq!(
        set(10, 10),
        Err(Error::BadOrders {
            left: 10,
            right: 10
        })
    );
    assert_eq!(
        set(20, 10),
        Err(Error::BadOrders {
            left: 20,
            right: 10
        })
    );
    assert!(set(20, 20).is_ok());
}

#[test]
fn a_producer_index_beyond_the_ring_ends_the_channel() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    // The client's producer index of the left ring (offset 4): 1025 bytes in a 1024-byte ring.
    chan.index(4).store(1025, Ordering::Relaxed);
    let err = server.read(&mem, &mut [0; 8]).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt(Corruption::Indices(_))),
        "{err:?}"
    );
    // Fixing the index does not revive the channel: every call returns the error.
    chan.index(4).store(0, Ordering::Relaxed);
    assert_eq!(server.read(&mem, &mut [0; 8]), Err(err));
    assert_eq!(server.write(&mem, b"x"), Err(err));
    assert_eq!(server.data_ready(&mem), Err(err));
    // The left ring's consumer index (offset 0) ahead of its producer: the client's writes stop.
    chan.index(0).store(5, Ordering::Relaxed);
    assert!(matches!(
        client.write(&mem, b"x"),
        Err(Error::Corrupt(Corruption::Indices(_)))
    ));
}

#[test]
fn a_producer_index_moving_backwards_ends_the_channel() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    assert!(matches!(
        client.write(&mem, &[9; 100]).unwrap(),
        Step::Moved { bytes: 100, .. }
    ));
    assert!(matches!(
        server.read(&mem, &mut [0; 10]).unwrap(),
        Step::Moved { bytes: 10, .. }
    ));
    // 90 bytes were ready; the client takes 50 back.
    chan.index(4).store(50, Ordering::Relaxed);
    assert_eq!(
        server.read(&mem, &mut [0; 10]),
        Err(Error::Corrupt(Corruption::Backwards { then: 90, now: 40 }))
    );
}

#[test]
fn a_consumer_index_moving_backwards_ends_the_channel() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    assert!(matches!(
        server.write(&mem, &[9; 100]).unwrap(),
        Step::Moved { bytes: 100, .. }
    ));
    assert!(matches!(
        client.read(&mem, &mut [0; 60]).unwrap(),
        Step::Moved { bytes: 60, .. }
    ));
    assert_eq!(server.buffer_space(&mem), Ok(2048 - 40));
    // The client un-reads 30 bytes (right ring's consumer, offset 8).
    chan.index(8).store(30, Ordering::Relaxed);
    assert_eq!(
        server.write(&mem, b"x"),
        Err(Error::Corrupt(Corruption::Backwards { then: 40, now: 70 }))
    );
}

#[test]
fn a_liveness_byte_out_of_range_ends_the_channel() {
    let chan = Channel::new(orders(10, 11));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    // cli_live (byte 20) = 7.
    chan.index(20).fetch_or(7, Ordering::Relaxed);
    assert_eq!(
        server.read(&mem, &mut [0; 1]),
        Err(Error::Corrupt(Corruption::Live(7)))
    );
    // A client never sees "not yet connected" from the server: srv_live 2 is corrupt too.
    chan.index(20)
        .store(u32::from_le_bytes([1, 2, 0, 0]), Ordering::Relaxed);
    assert_eq!(
        client.peer_state(&mem),
        Err(Error::Corrupt(Corruption::Live(2)))
    );
}

/// A peer that scribbles random values over the indices while the other side streams: every
/// call returns bytes, blocks, or a typed error; nothing panics or reads outside the rings.
#[test]
fn random_index_scribbles_give_typed_errors() {
    let rounds = if cfg!(miri) { 50 } else { 20_000 };
    let mut rng = support::Rng(0x5eed);
    for order in [(10, 11), (12, 11)] {
        let chan = Channel::new(orders(order.0, order.1));
        let (mut server, mut client) = chan.connect();
        let mem = chan.shared();
        let mut buf = [0u8; 300];
        for _ in 0..rounds {
            let target = [0usize, 4, 8, 12][rng.next() as usize % 4];
            if rng.next() % 4 == 0 {
                chan.index(target).store(rng.next(), Ordering::Relaxed);
            }
            let len = rng.next() as usize % buf.len();
            for step in [
                client.write(&mem, &buf[..len]),
                server.read(&mem, &mut buf[..len]),
                server.write(&mem, &buf[..len]),
                client.read(&mem, &mut buf[..len]),
            ] {
                match step {
                    Ok(Step::Moved { bytes, .. }) => assert!(bytes <= len),
                    Ok(_) | Err(Error::Corrupt(_)) => {}
                    Err(other) => panic!("unexpected {other:?}"),
                }
            }
        }
    }
}

/// The same pages, read-only.
fn read_only(pages: RingPages<'_>) -> RingPages<'_> {
    match pages {
        RingPages::Writable(mem) => RingPages::ReadOnly(mem.read_only()),
        other => other,
    }
}

/// A ring's pages handed in read-only can be read through, and a write to them is a typed
/// error, not a fault (the Linux client maps the ring it reads so).
#[test]
fn read_only_ring_pages_are_read_and_never_written() {
    let chan = Channel::new(orders(12, 12));
    let (mut server, mut client) = chan.connect();
    let mem = chan.shared();
    // The client reads the right ring through a read-only view.
    let client_mem = Shared {
        right: read_only(mem.right),
        ..mem
    };
    assert!(matches!(
        server.write(&mem, b"hello").unwrap(),
        Step::Moved { bytes: 5, .. }
    ));
    let mut buf = [0u8; 5];
    assert!(matches!(
        client.read(&client_mem, &mut buf).unwrap(),
        Step::Moved { bytes: 5, .. }
    ));
    assert_eq!(&buf, b"hello");
    // Writing into read-only pages: the caller handed in the wrong view.
    let wrong = Shared {
        left: read_only(mem.left),
        ..mem
    };
    assert!(matches!(
        client.write(&wrong, b"x"),
        Err(Error::Memory(AccessError::ReadOnly { .. }))
    ));
}
