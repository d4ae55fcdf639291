//! `AsyncRead` and `AsyncWrite` for a channel over a [`TokioEventChannel`]: no thread, the
//! channel's one event-channel fd in tokio's reactor.
//!
//! # Wake-ups
//!
//! A read and a write may wait at once (from two tasks, after `tokio::io::split`), on the
//! channel's one port, which has one waker slot in the event channel. So each side leaves its
//! waker here, and the port's waker is [`Wakers`], which wakes both. A side whose
//! `poll_port` consumes the delivery wakes the other: each then looks at its ring again
//! (the consumer at once), which is all an event means. Before waiting, a side has asked the
//! peer for the event (`Endpoint`'s request bits) and looked again; a delivery that comes after
//! that look is recorded by the event channel until a `poll_port` consumes it, so none is
//! missed. The two sides' polls never overlap (each needs `&mut Vchan`, so `tokio::io::split`
//! locks around each), which is what makes a side's look and its registration one step.
//! The loom models (`loom_models`) check this logic against a port that coalesces deliveries
//! and keeps one waker.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use xen_evtchn::AsyncEventChannel;
use xen_evtchn::tokio::TokioEventChannel;

use super::{Error, Vchan};
use crate::Step;
use crate::sync::{Mutex, MutexGuard};

/// The waiting reader's and writer's wakers; woken together by the port.
#[derive(Debug, Default)]
pub(super) struct Wakers {
    slots: Mutex<[Option<Waker>; 2]>,
}

/// Which side waits.
#[derive(Clone, Copy)]
enum Side {
    Read = 0,
    Write = 1,
}

impl Wakers {
    fn slots(&self) -> MutexGuard<'_, [Option<Waker>; 2]> {
        // A waker swap cannot leave the slots half-changed.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `side` consumed the port's delivery and looks at its ring again now: forgets its waker
    /// (waking its own task would only poll it once more for nothing) and wakes the other
    /// side, which may have waited for that delivery.
    fn consumed_by(&self, side: Side) {
        let other = {
            let mut slots = self.slots();
            slots[side as usize] = None;
            slots[1 - side as usize].take()
        };
        if let Some(waker) = other {
            waker.wake();
        }
    }

    fn wake_all(&self) {
        let taken = core::mem::take(&mut *self.slots());
        taken.into_iter().flatten().for_each(Waker::wake);
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

/// Waits for the port's next delivery on behalf of `side`, `poll_port` polling the port with
/// the waker it is given: `Ready` once a delivery was consumed (the other side is woken),
/// `Pending` with `cx` registered in `side`'s slot and the port holding the waker of both.
fn poll_delivery<R>(
    wakers: &Arc<Wakers>,
    side: Side,
    cx: &mut Context<'_>,
    poll_port: impl FnOnce(&mut Context<'_>) -> Poll<R>,
) -> Poll<R> {
    wakers.slots()[side as usize] = Some(cx.waker().clone());
    let both = Waker::from(Arc::clone(wakers));
    match poll_port(&mut Context::from_waker(&both)) {
        Poll::Ready(result) => {
            wakers.consumed_by(side);
            Poll::Ready(result)
        }
        Poll::Pending => Poll::Pending,
    }
}

impl Vchan<'static, TokioEventChannel> {
    /// Closes the channel as [`close`](Vchan::close) does, on tokio's blocking pool: the
    /// server's xenstore removal is blocking I/O, which must not stall a runtime's worker
    /// (`poll_shutdown` and dropping the channel do it where they run). Needs a runtime.
    ///
    /// If the runtime shuts down before the task runs, the task drops the channel, which
    /// closes it as `Drop` does (errors ignored), and this returns `Ok`.
    ///
    /// # Errors
    ///
    /// Those of [`close`](Vchan::close).
    pub async fn close_async(self) -> Result<(), Error> {
        match ::tokio::task::spawn_blocking(move || self.close()).await {
            Ok(closed) => closed,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        }
    }
}

impl Vchan<'_, TokioEventChannel> {
    /// Waits for the port's next delivery on behalf of `side` ([`poll_delivery`]).
    fn poll_event(&self, side: Side, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        poll_delivery(&self.wakers, side, cx, |both| {
            self.evtchn.poll_port(self.port, both).map_err(Error::from)
        })
    }

    /// Runs `op` until it moves bytes or the peer is gone, or registers for the next event.
    fn poll_step(
        &mut self,
        side: Side,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&mut crate::Endpoint, &crate::Shared<'_>) -> Result<Step, crate::Error>,
    ) -> Poll<Result<Option<usize>, Error>> {
        loop {
            match self.step(&mut op) {
                Ok(Step::Moved { bytes, .. }) => return Poll::Ready(Ok(Some(bytes))),
                Ok(Step::Closed) => return Poll::Ready(Ok(None)),
                Err(e) => return Poll::Ready(Err(e)),
                Ok(Step::WouldBlock) => {}
            }
            match self.poll_event(side, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncRead for Vchan<'_, TokioEventChannel> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let unfilled = buf.initialize_unfilled();
        match this.poll_step(Side::Read, cx, |ep, mem| ep.read(mem, unfilled)) {
            Poll::Ready(Ok(bytes)) => {
                buf.advance(bytes.unwrap_or(0));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Vchan<'_, TokioEventChannel> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_step(Side::Write, cx, |ep, mem| ep.write(mem, buf)) {
            Poll::Ready(Ok(Some(bytes))) => Poll::Ready(Ok(bytes)),
            Poll::Ready(Ok(None)) => Poll::Ready(Err(Error::Closed.into())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Written bytes are in the ring already.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Closes the whole channel (vchan has no half-close): as [`Vchan::close`], blocking the
    /// task for the server's xenstore removal ([`Vchan::close_async`] does not).
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().shut().map_err(io::Error::from))
    }
}

#[cfg(all(test, loom))]
mod loom_models;
