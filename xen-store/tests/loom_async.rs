//! Loom models of the async client's wake-ups, over an in-memory daemon that answers from
//! its own thread (`RUSTFLAGS="--cfg loom" cargo test -p xen-rust-store --all-features --release
//! --test loom_async`). A lost wake-up shows as a deadlock: every thread parked.
#![cfg(all(loom, feature = "tokio-1"))]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use loom::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use xen_store::tokio::{AsyncClient, AsyncStore};
use xen_store::wire::{self, Decoder, MsgType};

/// Bytes both ways, and who waits on them.
#[derive(Default)]
struct Pipe {
    to_daemon: Vec<u8>,
    to_client: Vec<u8>,
    client: Option<Waker>,
    daemon: Option<Waker>,
}

#[derive(Clone, Default)]
struct Duplex(Arc<Mutex<Pipe>>);

impl AsyncRead for Duplex {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut pipe = self.0.lock().unwrap();
        if pipe.to_client.is_empty() {
            pipe.client = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.remaining().min(pipe.to_client.len());
        buf.put_slice(&pipe.to_client[..n]);
        pipe.to_client.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Duplex {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut pipe = self.0.lock().unwrap();
        pipe.to_daemon.extend_from_slice(buf);
        if let Some(waker) = pipe.daemon.take() {
            waker.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Answers `requests` reads with "v", each as soon as it has arrived.
fn daemon(pipe: Duplex, requests: usize) {
    let mut decoder = Decoder::new();
    let mut answered = 0;
    loom::future::block_on(std::future::poll_fn(|cx| {
        let mut pipe = pipe.0.lock().unwrap();
        decoder.push(&std::mem::take(&mut pipe.to_daemon));
        while let Some(request) = decoder.next_message().unwrap() {
            let mut reply = Vec::new();
            wire::encode(MsgType::READ, request.header.req_id, 0, &[b"v"], &mut reply).unwrap();
            pipe.to_client.extend(reply);
            answered += 1;
        }
        if let Some(waker) = pipe.client.take() {
            waker.wake();
        }
        if answered == requests {
            return Poll::Ready(());
        }
        pipe.daemon = Some(cx.waker().clone());
        Poll::Pending
    }));
}

/// Two tasks share one request in flight: the one held back is woken when the other's reply
/// is taken, whichever of them routed that reply (defect: the count in flight was lowered
/// without waking the held-back request).
#[test]
fn a_request_held_back_by_the_bound_is_woken_when_room_frees() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(1);
    builder.check(|| {
        let pipe = Duplex::default();
        let xs = AsyncClient::with_max_in_flight(pipe.clone(), 1);
        let other = xs.clone();
        let task = loom::thread::spawn(move || {
            assert_eq!(loom::future::block_on(other.read("/k")).unwrap(), b"v");
        });
        let daemon = loom::thread::spawn(move || daemon(pipe, 2));
        assert_eq!(loom::future::block_on(xs.read("/k")).unwrap(), b"v");
        task.join().unwrap();
        daemon.join().unwrap();
    });
}

/// Two requests in flight at once: whichever task's poll routes a reply, its owner is woken
/// (the hand-off of a reply from the task that read it to the task that waits for it).
#[test]
fn a_reply_routed_by_another_task_wakes_its_owner() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let pipe = Duplex::default();
        let xs = AsyncClient::with_max_in_flight(pipe.clone(), 2);
        let other = xs.clone();
        let task = loom::thread::spawn(move || {
            assert_eq!(loom::future::block_on(other.read("/a")).unwrap(), b"v");
        });
        let daemon = loom::thread::spawn(move || daemon(pipe, 2));
        assert_eq!(loom::future::block_on(xs.read("/b")).unwrap(), b"v");
        task.join().unwrap();
        daemon.join().unwrap();
    });
}

/// A request in flight dropped once sent leaves its reply to route to whoever waits on the
/// socket: the front of the held-back requests, even one that became the front while it
/// slept (its predecessor dropped). Proves that a new front is woken to wait on the socket,
/// whatever the order of the drops, the daemon's reply and its polls.
#[test]
fn a_new_front_routes_the_reply_of_a_dropped_request() {
    use std::future::Future;

    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let pipe = Duplex::default();
        let xs = AsyncClient::with_max_in_flight(pipe.clone(), 1);
        let mut cx = Context::from_waker(Waker::noop());
        // `sent` goes out; `front` is held back, first in line.
        let mut sent = Box::pin(xs.read("/a"));
        assert!(sent.as_mut().poll(&mut cx).is_pending());
        let mut front = Box::pin(xs.read("/b"));
        assert!(front.as_mut().poll(&mut cx).is_pending());
        let other = xs.clone();
        let task = loom::thread::spawn(move || {
            assert_eq!(loom::future::block_on(other.read("/c")).unwrap(), b"v");
        });
        let daemon = loom::thread::spawn(move || daemon(pipe, 2));
        drop(front);
        drop(sent);
        task.join().unwrap();
        daemon.join().unwrap();
    });
}
