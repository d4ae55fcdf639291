//! The async client against the in-process server over a Unix socket pair.
// Miri cannot drive epoll on real sockets. Under `--cfg loom` tokio leaves out `tokio::net`
// (the flag selects its own loom build); the async client's models are in `loom_async.rs`.
#![cfg(all(feature = "mock", feature = "tokio-1", not(miri), not(loom)))]

use std::future::{Future, poll_fn};
use std::pin::Pin;

use futures_core::Stream;
use xen_store::mock::MockStore;
use xen_store::tokio::{AsyncClient, AsyncStore};
use xen_store::{DomId, Errno, ErrorKind};

fn client(store: &MockStore, max_in_flight: usize) -> AsyncClient {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    store.serve(theirs, DomId(0));
    ours.set_nonblocking(true).unwrap();
    let ours = tokio::net::UnixStream::from_std(ours).unwrap();
    AsyncClient::with_max_in_flight(ours, max_in_flight)
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

#[tokio::test]
async fn basic_operations() {
    let store = MockStore::new();
    let xs = client(&store, 64);
    xs.write("/a/b", b"v").await.unwrap();
    assert_eq!(xs.read("/a/b").await.unwrap(), b"v");
    assert_eq!(xs.read_string("/a/b").await.unwrap(), "v");
    xs.write("/a/c", b"\xff").await.unwrap();
    assert_eq!(
        xs.read_string("/a/c").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // `?` in a `std` program keeps the daemon's error code.
    let io = std::io::Error::from(xs.read("/nope").await.unwrap_err());
    assert_eq!(io.raw_os_error(), Some(Errno::ENOENT.raw()));
    xs.rm("/a/c").await.unwrap();
    assert_eq!(xs.directory("/a").await.unwrap(), ["b"]);
    assert_eq!(
        xs.read("/nope").await.unwrap_err().errno(),
        Some(Errno::ENOENT)
    );
    xs.rm("/a").await.unwrap();
    assert_eq!(
        xs.get_domain_path(DomId(1)).await.unwrap(),
        "/local/domain/1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_in_flight_with_a_bound_of_eight() {
    let store = MockStore::new();
    let xs = client(&store, 8);
    let mut tasks = Vec::new();
    for i in 0..300 {
        let xs = xs.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("/many/{i}");
            xs.write(&path, i.to_string().as_bytes()).await.unwrap();
            assert_eq!(xs.read(&path).await.unwrap(), i.to_string().as_bytes());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(xs.directory("/many").await.unwrap().len(), 300);
}

/// Polls every future until all are done, as `join_all` does.
async fn join_all<F: Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                if let std::task::Poll::Ready(output) = Pin::new(future).poll(cx) {
                    *result = Some(output);
                }
            }
        }
        if results.iter().all(Option::is_some) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().map(Option::unwrap).collect()
}

#[tokio::test]
async fn sixty_four_in_flight_from_one_task() {
    let store = MockStore::new();
    let xs = client(&store, 64);
    let writes = (0..64)
        .map(|i| xs.write(&format!("/j/{i}"), format!("{i}").as_bytes()))
        .collect();
    for result in join_all(writes).await {
        result.unwrap();
    }
    let reads = (0..64).map(|i| xs.read(&format!("/j/{i}"))).collect();
    for (i, value) in join_all(reads).await.into_iter().enumerate() {
        assert_eq!(value.unwrap(), format!("{i}").as_bytes());
    }
}

#[tokio::test]
async fn watch_stream_routes_by_token_and_unwatches_on_drop() {
    let store = MockStore::new();
    let xs = client(&store, 64);
    let mut a = xs.watch("/wa").await.unwrap();
    let mut b = xs.watch("/wb").await.unwrap();
    assert_eq!(next(&mut a).await.unwrap().unwrap().path, "/wa");
    assert_eq!(next(&mut b).await.unwrap().unwrap().path, "/wb");
    store.write_as_dom0("/wb/x", b"1");
    store.write_as_dom0("/wa/y", b"1");
    assert_eq!(next(&mut a).await.unwrap().unwrap().path, "/wa/y");
    assert_eq!(next(&mut b).await.unwrap().unwrap().path, "/wb/x");
    drop(a);
    xs.write("/wa/z", b"").await.unwrap();
    store.write_as_dom0("/wb/q", b"1");
    let event = next(&mut b).await.unwrap().unwrap();
    assert_eq!(event.path, "/wb/q");
}

#[tokio::test]
async fn a_burst_of_events_is_coalesced_not_an_error() {
    let store = MockStore::new();
    let xs = client(&store, 64);
    let mut w = xs.watch("/burst").await.unwrap();
    for i in 0..500 {
        xs.write(&format!("/burst/{i}"), b"").await.unwrap();
    }
    xs.write("/burst/last", b"").await.unwrap();
    let mut seen = Vec::new();
    loop {
        let event = next(&mut w).await.unwrap().unwrap();
        let is_root = event.path == "/burst";
        seen.push(event.path);
        if is_root && seen.len() > 1 {
            break;
        }
    }
    assert_eq!(seen.len(), xen_store::WATCH_BUFFER + 1, "{seen:?}");
}

#[tokio::test]
async fn transactions_conflict_and_transact_retries() {
    let store = MockStore::new();
    let xs = client(&store, 64);
    let other = client(&store, 64);
    xs.write("/c", b"0").await.unwrap();
    let tx1 = xs.transaction().await.unwrap();
    let tx2 = other.transaction().await.unwrap();
    tx1.write("/c", b"1").await.unwrap();
    tx2.write("/c", b"2").await.unwrap();
    tx1.commit().await.unwrap();
    let conflict = tx2.commit().await.unwrap_err();
    assert_eq!(conflict.kind(), ErrorKind::Conflict);

    let mut runs = 0;
    xs.transact(async |tx| {
        runs += 1;
        let v = tx.read("/c").await?;
        if runs == 1 {
            store.write_as_dom0("/c", b"5");
        }
        tx.write("/c", &[v[0] + 1]).await
    })
    .await
    .unwrap();
    assert_eq!(runs, 2);
    assert_eq!(xs.read("/c").await.unwrap(), b"6");

    // Dropped without commit: aborted.
    let tx = xs.transaction().await.unwrap();
    tx.write("/c", b"9").await.unwrap();
    assert_eq!(store.open_transactions(), 1);
    drop(tx);
    assert_eq!(xs.read("/c").await.unwrap(), b"6");
    // The abort went out with that read.
    assert_eq!(store.open_transactions(), 0);
}

/// Waits until `done` holds, for at most five seconds, without a request from the client.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_idle_client_sends_a_dropped_watch_s_unwatch_and_a_transaction_s_abort_at_once() {
    let store = MockStore::new();
    let xs = client(&store, 64);
    let watch = xs.watch("/idle").await.unwrap();
    let tx = xs.transaction().await.unwrap();
    assert_eq!(store.watch_count(), 1);
    assert_eq!(store.open_transactions(), 1);
    // No request follows the drops: only the drops themselves can send the unwatch and abort.
    drop(watch);
    eventually("the unwatch never reached the daemon", || {
        store.watch_count() == 0
    })
    .await;
    drop(tx);
    eventually("the abort never reached the daemon", || {
        store.open_transactions() == 0
    })
    .await;
    // The client still works, and no reply to the detached requests is left to confuse it.
    xs.write("/idle/after", b"1").await.unwrap();
    assert_eq!(xs.read("/idle/after").await.unwrap(), b"1");
}

#[tokio::test]
async fn cancelled_requests_lose_nothing_for_the_others() {
    let store = MockStore::new();
    let xs = client(&store, 4);
    xs.write("/k", b"v").await.unwrap();
    for round in 0..50 {
        // Start a few requests, poll some once, drop them mid-flight.
        let mut dropped: Vec<_> = (0..3).map(|_| Box::pin(xs.read("/k"))).collect();
        let _ = poll_fn(|cx| {
            for f in dropped.iter_mut().take(round % 4) {
                let _ = f.as_mut().poll(cx);
            }
            std::task::Poll::Ready(())
        })
        .await;
        drop(dropped);
        assert_eq!(xs.read("/k").await.unwrap(), b"v", "round {round}");
    }
}

/// The test plays the daemon itself here, to see exactly what the client sends.
#[tokio::test]
async fn a_commit_dropped_before_it_is_sent_still_aborts() {
    use std::io::{Read, Write};
    use xen_store::wire::{self, Decoder, Message, MsgType};

    fn received(daemon: &mut std::os::unix::net::UnixStream) -> Vec<Message> {
        let mut decoder = Decoder::new();
        let mut buf = [0; 4096];
        while let Ok(n) = daemon.read(&mut buf) {
            decoder.push(&buf[..n]);
        }
        std::iter::from_fn(|| decoder.next_message().unwrap()).collect()
    }
    /// Polls a few times, letting the runtime see the socket's readiness in between.
    async fn poll_a_while<F: Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
        for _ in 0..3 {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(output) = Pin::new(&mut *future).poll(&mut cx) {
                return std::task::Poll::Ready(output);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        std::task::Poll::Pending
    }

    let (ours, mut daemon) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    daemon.set_nonblocking(true).unwrap();
    let xs = AsyncClient::with_max_in_flight(tokio::net::UnixStream::from_std(ours).unwrap(), 1);

    let mut start = Box::pin(xs.transaction());
    assert!(poll_a_while(&mut start).await.is_pending());
    let [request] = &received(&mut daemon)[..] else {
        panic!("one TRANSACTION_START expected")
    };
    let mut reply = Vec::new();
    wire::encode(
        MsgType::TRANSACTION_START,
        request.header.req_id,
        0,
        &[b"5\0"],
        &mut reply,
    )
    .unwrap();
    daemon.write_all(&reply).unwrap();
    let tx = start.await.unwrap();
    assert_eq!(tx.id(), 5);

    // The one request allowed in flight is taken: the commit waits unsent, and is dropped.
    let mut blocker = xs.read("/x");
    assert!(poll_a_while(&mut blocker).await.is_pending());
    let mut commit = Box::pin(tx.commit());
    assert!(poll_a_while(&mut commit).await.is_pending());
    drop(commit);
    drop(blocker);
    // The next request sends what is queued: an abort of transaction 5.
    assert!(poll_a_while(&mut xs.read("/y")).await.is_pending());
    let sent = received(&mut daemon);
    assert!(
        sent.iter().any(|m| m.header.ty == MsgType::TRANSACTION_END
            && m.header.tx_id == 5
            && m.payload == b"F\0"),
        "{sent:?}"
    );
}

/// Every wait in these tests has a deadline: a lost wake-up fails, it never hangs.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress in {DEADLINE:?} (a lost wake-up)"))
}

/// A request held back by the bound is woken when room frees up, whichever path frees it (a
/// reply taken, a request dropped), on a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_share_one_request_in_flight() {
    let store = MockStore::new();
    let xs = client(&store, 1);
    within("write", xs.write("/one", b"v")).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..64 {
        let xs = xs.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                let what = format!("task {task} read {round}");
                assert_eq!(within(&what, xs.read("/one")).await.unwrap(), b"v");
            }
        }));
    }
    for task in tasks {
        within("a task", task).await.unwrap();
    }
}

/// Dropping a request that waits for room, or one in flight, lets the next one go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_requests_hand_their_room_on() {
    let store = MockStore::new();
    let xs = client(&store, 1);
    within("write", xs.write("/d", b"v")).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..32 {
        let xs = xs.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                // Some requests give up after a moment, wherever they are.
                let give_up = std::time::Duration::from_micros((task * 7 + round) % 50);
                let _ = tokio::time::timeout(give_up, xs.read("/d")).await;
                let what = format!("task {task} read {round}");
                assert_eq!(within(&what, xs.read("/d")).await.unwrap(), b"v");
            }
        }));
    }
    for task in tasks {
        within("a task", task).await.unwrap();
    }
}

/// A `transaction()` future dropped once its `TRANSACTION_START` is sent leaves nothing open:
/// the transaction is aborted when its reply comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_transaction_starts_leave_nothing_open() {
    let store = MockStore::new();
    store.set_transaction_limit(5);
    let xs = client(&store, 64);
    for _ in 0..5 {
        let mut start = Box::pin(xs.transaction());
        // One poll sends the request; the reply comes after the future is gone (or, when the
        // daemon's thread answered within the poll, a transaction is dropped: aborted as well).
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = start.as_mut().poll(&mut cx);
        drop(start);
    }
    within("the aborts", async {
        // Read first: its reply comes after the starts' replies, so the client has seen each
        // start answered (and sent its abort) before the count is looked at. Looking first
        // could see 0 while the starts were still on their way to the daemon.
        loop {
            xs.read("/").await.unwrap();
            if store.open_transactions() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    // None was leaked: the connection may open as many as before.
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(within("a transaction", xs.transaction()).await.unwrap());
    }
    let refused = within("one too many", xs.transaction()).await.unwrap_err();
    assert_eq!(refused.errno(), Some(Errno::ENOSPC));
}

/// Polls `future` to completion, counting its polls into `polls`.
async fn counting_polls<F: Future>(polls: &std::sync::atomic::AtomicU64, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    poll_fn(|cx| {
        polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        future.as_mut().poll(cx)
    })
    .await
}

/// 64 tasks sharing one request in flight poll a few times per request, not once per task:
/// a request held back by the bound sleeps until room reaches it (defect: every held-back
/// request was woken, and drove the socket, on every byte moved, so each request cost a poll
/// of all 64 tasks and the throughput collapsed under a slow CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_back_requests_sleep_until_room_reaches_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    const TASKS: u64 = 64;
    const ROUNDS: u64 = 10;
    let store = MockStore::new();
    let xs = client(&store, 1);
    let polls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (xs, polls) = (xs.clone(), Arc::clone(&polls));
        tasks.push(tokio::spawn(async move {
            let path = format!("/s/t{task}");
            for round in 0..ROUNDS {
                let value = format!("{round}");
                let write = counting_polls(&polls, xs.write(&path, value.as_bytes()));
                within("a write", write).await.unwrap();
                let read = within("a read", counting_polls(&polls, xs.read(&path))).await;
                assert_eq!(read.unwrap(), value.as_bytes());
            }
        }));
    }
    for task in tasks {
        within("a task", task).await.unwrap();
    }
    let requests = TASKS * ROUNDS * 2;
    let polls = polls.load(Ordering::Relaxed);
    // About 6 a request: its first poll, woken at the front, woken by room, then by the
    // bytes moving both ways (before: about 85, one per task and per byte moved).
    assert!(
        polls <= requests * 12,
        "{polls} polls for {requests} requests"
    );
}
