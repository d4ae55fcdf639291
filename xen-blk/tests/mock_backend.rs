//! The frontend against a mock blkback serving a RAM disk (see `common`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::{Disk, Env, Mode, Page, SPINS};
use xen_blk::{Error, Frontend, IoError, Operation, ProtocolError, abi};
use xen_bus::{Attempts, XenbusState};
use xen_shared::ReqRingError;
use xen_store::Store;

type Front<'t> = Frontend<'t, xen_hypercall::mock::MockXen, Page, common::Events>;

/// Data pages for the frontend (fewer under Miri).
const POOL: usize = if cfg!(miri) { 16 } else { 64 };

/// Connects a frontend to `env`'s backend, runs `body`, closes the frontend, and checks that
/// every grant was ended and the port closed.
fn with_frontend(env: &Env, body: impl FnOnce(&mut Front<'_>)) {
    with_pool(env, POOL, body);
}

/// [`with_frontend`] with `pool` data pages.
fn with_pool(env: &Env, pool: usize, body: impl FnOnce(&mut Front<'_>)) {
    std::thread::scope(|s| {
        let backend = s.spawn(|| env.run_backend());
        let mut xs = env.client();
        let mut front = Frontend::connect(
            &mut xs,
            common::FRONT,
            &env.table,
            &env.events,
            Page::new(&env.domu),
            env.pages(pool),
            &mut Attempts(1000),
        )
        .unwrap();
        body(&mut front);
        let port = front.port();
        let pages = front.close(&mut xs, &mut Attempts(1000)).unwrap();
        assert_eq!(
            pages.len(),
            pool + 1,
            "every page comes back, the ring's too"
        );
        backend.join().unwrap();
        assert_eq!(*env.events.closed.lock().unwrap(), [port]);
        assert_eq!(env.table.leaked(), 0);
        let state = xs.read(&format!("{}/state", common::FRONT)).unwrap();
        assert_eq!(state, b"6");
    });
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn connects_reads_the_geometry_and_publishes_the_ring() {
    let env = Env::new(Disk::default());
    with_frontend(&env, |front| {
        let g = front.geometry();
        assert_eq!(g.sectors, env.disk.sectors);
        assert_eq!(g.sector_size, 512);
        assert!(g.flush && g.discard.is_some() && !g.read_only);
        let mut xs = env.client();
        let back = front.device().peer_state(&mut xs).unwrap();
        assert_eq!(back, XenbusState::Connected);
        let event = xs
            .read(&format!("{}/event-channel", common::FRONT))
            .unwrap();
        assert_eq!(event, front.port().0.to_string().as_bytes());
        let persistent = xs.read(&format!("{}/feature-persistent", common::FRONT));
        assert_eq!(persistent.unwrap(), b"1");
        let protocol = xs.read(&format!("{}/protocol", common::FRONT)).unwrap();
        assert!(protocol == b"x86_64-abi" || protocol == b"arm-abi");
    });
}

#[test]
fn reads_and_writes_round_trip_through_the_backend() {
    let env = Env::new(Disk::default());
    with_frontend(&env, |front| {
        let mut sleep = Env::sleeper();
        // A sector, as the disk holds it.
        let mut sector = [0u8; 512];
        front.read(3, &mut sector, &mut sleep).unwrap();
        assert!(sector.iter().all(|&b| b == 3 ^ 0x5a));
        // Many sectors, several requests in flight, across page boundaries.
        let len = if cfg!(miri) { 6 * 4096 } else { 200 * 1024 };
        let data = pattern(len, 7);
        front.write(8, &data, &mut sleep).unwrap();
        let mut back = vec![0u8; len];
        front.read(8, &mut back, &mut sleep).unwrap();
        assert!(back == data, "read back what was written");
        assert_eq!(&env.ram.lock().unwrap()[8 * 512..8 * 512 + len], &data[..]);
        front.flush(&mut sleep).unwrap();
        front.discard(8, 2, false, &mut sleep).unwrap();
        front.read(8, &mut sector, &mut sleep).unwrap();
        assert_eq!(sector, [0; 512]);
        assert_eq!(front.in_flight(), 0);
        assert_eq!(front.free_pages(), POOL);
    });
    let served = env.served.lock().unwrap();
    assert!(served.contains(&abi::OP_FLUSH_DISKCACHE) && served.contains(&abi::OP_DISCARD));
    assert!(
        env.events.notified.load(Ordering::Relaxed) > 0,
        "the backend asked to be notified"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn long_transfers_go_in_indirect_requests_where_the_backend_offers_them() {
    let env = Env::new(Disk {
        indirect: 32,
        ..Disk::default()
    });
    with_frontend(&env, |front| {
        assert_eq!(front.geometry().max_indirect_segments, 32);
        assert_eq!(front.max_request_len(), 32 * 4096);
        let mut sleep = Env::sleeper();
        let len = if cfg!(miri) { 13 * 4096 } else { 600 * 1024 };
        let data = pattern(len, 3);
        front.write(16, &data, &mut sleep).unwrap();
        let mut back = vec![0u8; len];
        front.read(16, &mut back, &mut sleep).unwrap();
        assert!(back == data, "read back what was written");
        assert_eq!(front.free_pages(), POOL);
    });
    assert!(env.served.lock().unwrap().contains(&abi::OP_INDIRECT));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn a_pool_smaller_than_the_largest_request_still_moves_long_transfers() {
    let env = Env::new(Disk {
        indirect: 32,
        ..Disk::default()
    });
    // 12 pages: 11 of data and one of segments per request, never 12 of data.
    with_pool(&env, 12, |front| {
        let mut sleep = Env::sleeper();
        let len = 20 * 4096;
        let data = pattern(len, 9);
        front.write(0, &data, &mut sleep).unwrap();
        let mut back = vec![0u8; len];
        front.read(0, &mut back, &mut sleep).unwrap();
        assert!(back == data);
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn many_requests_in_flight_complete_out_of_the_poll_api() {
    let env = Env::new(Disk::default());
    with_frontend(&env, |front| {
        let n = if cfg!(miri) { 4 } else { 32 };
        let mut ids = Vec::new();
        for i in 0..n {
            let data = pattern(1024, i as u8);
            ids.push(front.submit_write(i * 2, &data).unwrap());
        }
        assert_eq!(front.in_flight(), n as usize);
        front.kick().unwrap();
        let mut done = Vec::new();
        let mut spins = SPINS;
        while done.len() < ids.len() {
            if let Some(c) = front.poll().unwrap() {
                assert_eq!((c.operation(), c.result()), (Operation::Write, Ok(())));
                done.push(c.id());
                continue;
            }
            if !front.prepare_to_wait().unwrap() {
                spins -= 1;
                assert!(spins > 0, "the backend never answered");
                std::thread::yield_now();
            }
        }
        done.sort();
        ids.sort();
        assert_eq!(done, ids);
        for i in 0..n {
            let id = front.submit_read(i * 2, 1024).unwrap();
            front.kick().unwrap();
            let mut sleep = Env::sleeper();
            let c = loop {
                if let Some(c) = front.poll().unwrap() {
                    break c;
                }
                assert!(sleep());
            };
            assert_eq!((c.id(), c.len()), (id, 1024));
            let mut got = vec![0; 1024];
            c.copy_to(0, &mut got).unwrap();
            assert_eq!(got, pattern(1024, i as u8));
        }
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn bad_requests_are_refused_before_anything_is_granted() {
    let env = Env::new(Disk {
        sector_size: 4096,
        flush: false,
        discard: false,
        ..Disk::default()
    });
    with_frontend(&env, |front| {
        let sectors = front.geometry().sectors;
        let mut sleep = Env::sleeper();
        let mut buf = vec![0u8; 4096];
        let unaligned = front.read(1, &mut buf, &mut sleep).unwrap_err();
        assert!(
            matches!(unaligned, Error::Unaligned { sector: 1, .. }),
            "{unaligned:?}"
        );
        let short = front.read(0, &mut buf[..512], &mut sleep).unwrap_err();
        assert!(
            matches!(short, Error::Unaligned { len: 512, .. }),
            "{short:?}"
        );
        let empty = front.submit_read(0, 0).unwrap_err();
        assert!(
            matches!(empty, Error::Unaligned { len: 0, .. }),
            "{empty:?}"
        );
        let past = front.read(sectors, &mut buf, &mut sleep).unwrap_err();
        assert!(matches!(past, Error::OutOfRange { .. }), "{past:?}");
        let wrap = front.submit_read(u64::MAX - 7, 4096).unwrap_err();
        assert!(matches!(wrap, Error::OutOfRange { .. }), "{wrap:?}");
        let long = front.submit_read(0, 12 * 4096).unwrap_err();
        assert!(matches!(long, Error::TooLong { .. }), "{long:?}");
        assert!(matches!(
            front.flush(&mut sleep),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            front.discard(0, 8, false, &mut sleep),
            Err(Error::Unsupported(_))
        ));
        assert_eq!((front.in_flight(), front.free_pages()), (0, POOL));
    });
    assert!(
        env.served.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn a_read_only_disk_refuses_writes() {
    let env = Env::new(Disk {
        read_only: true,
        ..Disk::default()
    });
    with_frontend(&env, |front| {
        assert!(front.geometry().read_only);
        let mut sleep = Env::sleeper();
        assert!(matches!(
            front.write(0, &[0; 512], &mut sleep),
            Err(Error::ReadOnly)
        ));
        assert!(matches!(
            front.discard(0, 1, false, &mut sleep),
            Err(Error::ReadOnly)
        ));
        let mut buf = [0; 512];
        front.read(0, &mut buf, &mut sleep).unwrap();
    });
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn failed_requests_are_typed() {
    for (status, expected) in [
        (abi::RSP_ERROR, IoError::Failed),
        (abi::RSP_EOPNOTSUPP, IoError::NotSupported),
        (7, IoError::BadStatus(7)),
    ] {
        let env = Env::new(Disk {
            mode: Mode::Status(1, status),
            ..Disk::default()
        });
        with_frontend(&env, |front| {
            let mut sleep = Env::sleeper();
            let mut buf = [0; 512];
            front.read(0, &mut buf, &mut sleep).unwrap();
            let error = front.read(0, &mut buf, &mut sleep).unwrap_err();
            assert!(matches!(error, Error::Io(e) if e == expected), "{error:?}");
            // The frontend goes on.
            front.read(0, &mut buf, &mut sleep).unwrap();
        });
    }
}

/// Sets the flag when dropped: a failed assertion must not leave the backend thread running.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs requests, two in flight at a time, against a hostile backend until the frontend
/// stops; returns its error.
fn hostile(mode: Mode) -> Error {
    let env = Env::new(Disk {
        mode,
        ..Disk::default()
    });
    let mut error = None;
    with_frontend(&env, |front| {
        let _stop = StopOnDrop(&env.stop);
        let mut sleep = Env::sleeper();
        'rounds: for _ in 0..4 {
            front.submit_read(0, 512).unwrap();
            front.submit_read(1, 512).unwrap();
            front.kick().unwrap();
            while front.in_flight() > 0 {
                match front.poll() {
                    Err(e) => {
                        error = Some(e);
                        break 'rounds;
                    }
                    Ok(Some(c)) => assert_eq!(c.result(), Ok(())),
                    Ok(None) => assert!(sleep(), "the backend never answered"),
                }
            }
        }
        let error = error.as_ref().expect("the frontend stopped");
        // Stopped: every later call fails the same way, without touching the ring.
        let again = front.submit_read(0, 512).unwrap_err();
        assert_eq!(format!("{again}"), format!("{error}"));
        assert!(front.poll().is_err());
    });
    error.unwrap()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn a_response_with_an_id_never_issued_stops_the_frontend() {
    let error = hostile(Mode::BadId(1));
    assert!(
        matches!(error, Error::Protocol(ProtocolError::UnknownId(1001))),
        "{error:?}"
    );
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn a_second_response_for_one_id_stops_the_frontend() {
    let error = hostile(Mode::DuplicateId(3));
    assert!(
        // The id of the request answered just before (ids 0 and 1 are the two in flight).
        matches!(error, Error::Protocol(ProtocolError::UnknownId(0 | 1))),
        "{error:?}"
    );
}

#[test]
fn an_overflowed_rsp_prod_stops_the_frontend() {
    let error = hostile(Mode::OverflowRspProd(1));
    assert!(
        matches!(
            error,
            Error::Protocol(ProtocolError::Ring(ReqRingError::ProducerOverflow { .. }))
        ),
        "{error:?}"
    );
}

#[test]
fn pages_the_backend_keeps_mapped_are_ended_only_once_it_unmaps_them() {
    // As blkback keeps persistent grants mapped until it disconnects.
    let env = Env::new(Disk {
        mode: Mode::KeepMapped(1),
        ..Disk::default()
    });
    with_frontend(&env, |front| {
        let mut sleep = Env::sleeper();
        let mut buf = [0; 512];
        for _ in 0..3 {
            front.read(0, &mut buf, &mut sleep).unwrap();
            assert!(buf.iter().all(|&b| b == 0x5a));
        }
        assert_eq!(front.free_pages(), POOL);
        // `close` ends the grants once the backend disconnected: `with_frontend` checks that
        // every page came back and none leaked.
    });
}

/// A bounded fuzz: random requests (valid or not) against a backend answering with random
/// ids, operations, statuses and producer indices. Nothing may panic; every error is typed;
/// once stopped the frontend stays stopped; `close` still gets every page back.
///
/// `XEN_BLK_FUZZ_ITERATIONS=N` runs N seeds (default 40; 2 under Miri).
#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn a_random_backend_gets_typed_errors_and_every_page_back() {
    let iterations = std::env::var("XEN_BLK_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(miri) { 2 } else { 40 });
    let (mut stops, mut failures, mut successes) = (0, 0, 0);
    for seed in 0..iterations {
        let env = Env::new(Disk {
            indirect: 16,
            mode: Mode::Random(seed),
            ..Disk::default()
        });
        with_frontend(&env, |front| {
            let _stop = StopOnDrop(&env.stop);
            let mut rng = common::Rng(seed.wrapping_mul(77) | 1);
            let sectors = front.geometry().sectors;
            let mut spins = SPINS;
            let mut stopped: Option<String> = None;
            for _ in 0..if cfg!(miri) { 12 } else { 200 } {
                let sector = rng.below(sectors + 8);
                let len = rng.below(20) as usize * 512;
                let submitted = match rng.below(5) {
                    0 => front.submit_read(sector, len).map(Some),
                    1 => front.submit_write(sector, &pattern(len, 1)).map(Some),
                    2 => front.submit_flush().map(Some),
                    3 => front
                        .submit_discard(sector, rng.below(9), rng.below(2) == 0)
                        .map(Some),
                    _ => front.kick().map(|()| None),
                };
                if let Err(Error::Protocol(e)) = &submitted {
                    stopped.get_or_insert(e.to_string());
                }
                loop {
                    match front.poll() {
                        Ok(Some(c)) => {
                            let mut buf = vec![0; c.len()];
                            c.copy_to(0, &mut buf).unwrap();
                            match c.result() {
                                Ok(()) => successes += 1,
                                Err(_) => failures += 1,
                            }
                        }
                        Ok(None) => break,
                        Err(Error::Protocol(e)) => {
                            if let Some(first) = &stopped {
                                assert_eq!(first, &e.to_string(), "stopped for good");
                            }
                            stopped.get_or_insert(e.to_string());
                            break;
                        }
                        Err(other) => panic!("poll: {other:?}"),
                    }
                }
                if stopped.is_some() {
                    assert!(front.submit_flush().is_err());
                }
                spins -= 1;
                std::thread::yield_now();
                assert!(spins > 0);
            }
            stops += usize::from(stopped.is_some());
        });
    }
    // The fuzz reached every outcome.
    if iterations >= 10 {
        assert!(
            stops > 0 && failures > 0 && successes > 0,
            "{stops} {failures} {successes}"
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn a_failed_connect_closes_the_device_and_ends_every_grant() {
    // The backend maps the ring and goes `Connected`; its `sector-size` then fails the
    // frontend's connect.
    let env = Env::new(Disk {
        sector_size: 1000,
        ..Disk::default()
    });
    let state = std::thread::scope(|s| {
        let backend = s.spawn(|| env.run_backend());
        let mut xs = env.client();
        let error = Frontend::connect(
            &mut xs,
            common::FRONT,
            &env.table,
            &env.events,
            Page::new(&env.domu),
            env.pages(4),
            &mut Attempts(1000),
        )
        .unwrap_err();
        assert!(
            matches!(error.error, Error::BadGeometry { .. }),
            "{error:?}"
        );
        assert_eq!(
            error.pages.len(),
            5,
            "every page comes back, the ring's too"
        );
        let path = format!("{}/state", common::FRONT);
        let state = xs.read(&path).unwrap();
        // A frontend left `Initialised` would keep the backend serving: close for it, so that
        // the backend ends and the test reports instead of hanging.
        if state != b"6" {
            xs.write(&path, b"5").unwrap();
            xs.write(&path, b"6").unwrap();
        }
        backend.join().unwrap();
        state
    });
    assert_eq!(state, b"6", "the frontend is Closed");
    assert_eq!(env.table.leaked(), 0, "no grant is left to the backend");
    assert_eq!(
        env.events.closed.lock().unwrap().len(),
        1,
        "the port is closed"
    );
}

#[test]
#[cfg_attr(miri, ignore = "grants a table's worth of pages")]
fn a_failed_grant_gives_every_page_back() {
    // More data pages than the one-frame grant table has references: the ring's grant
    // succeeds, the data pages' fails.
    let env = Env::new(Disk::default());
    env.store
        .write_as_dom0(&format!("{}/state", common::BACK), b"2");
    let too_many = env.table.entries() as usize;
    let error = Frontend::connect(
        &mut env.client(),
        common::FRONT,
        &env.table,
        &env.events,
        Page::new(&env.domu),
        env.pages(too_many),
        &mut Attempts(1000),
    )
    .unwrap_err();
    assert!(
        matches!(error.error, Error::Bus(xen_bus::Error::Grant(_))),
        "{error:?}"
    );
    assert_eq!(
        error.pages.len(),
        too_many + 1,
        "the ring's and the data pages"
    );
    assert_eq!(env.table.leaked(), 0);
    // Every reference is free again: the pages can be granted anew.
    let refs = (env.table.entries() - 8) as usize;
    let again = xen_bus::GrantedPages::grant(
        &env.table,
        xen_evtchn::DomId(0),
        error.pages.into_iter().take(refs),
        false,
    )
    .unwrap();
    assert_eq!(again.len(), refs);
    assert_eq!(again.end().map(|pages| pages.len()).ok(), Some(refs));
}

/// Runs `future` on this thread, parking between polls until its waker unparks it: a wake-up
/// that never comes (a lost event) fails the test instead of hanging it.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::{Duration, Instant};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let parked = Instant::now();
        std::thread::park_timeout(Duration::from_secs(10));
        assert!(
            parked.elapsed() < Duration::from_secs(10),
            "pending and never woken: an event was lost"
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a connection takes minutes under Miri; three tests cover the stack"
)]
fn the_async_api_is_woken_by_the_backends_events() {
    let env = Env::new(Disk {
        indirect: 32,
        ..Disk::default()
    });
    with_frontend(&env, |front| {
        let len = env.disk.sectors as usize * 512;
        let data = pattern(len, 7);
        block_on(front.write_async(0, &data)).unwrap();
        let mut back = vec![0; len];
        block_on(front.read_async(0, &mut back)).unwrap();
        assert!(back == data, "the disk reads back as written");
        block_on(front.flush_async()).unwrap();
        block_on(front.discard_async(8, 8, false)).unwrap();
        assert!(
            env.ram.lock().unwrap()[8 * 512..16 * 512]
                .iter()
                .all(|&b| b == 0)
        );
        // The polled API's completions, awaited.
        for i in 0..8 {
            front.submit_read(i * 8, 4096).unwrap();
        }
        front.kick().unwrap();
        let mut completed = 0;
        while let Some(completion) = block_on(front.next_completion()).unwrap() {
            assert_eq!(completion.result(), Ok(()));
            completed += 1;
        }
        assert_eq!(completed, 8);
        assert!(block_on(front.next_completion()).unwrap().is_none());
        // The waits ended on the backend's events, not by polling around them.
        assert!(env.events.signalled.load(Ordering::Relaxed) > 0);
        assert!(
            env.events.delivery.lock().unwrap().1.is_none(),
            "no waker is left registered"
        );
    });
}
