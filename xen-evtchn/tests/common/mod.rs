//! Helpers of the mock tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A small deterministic PRNG (xorshift64*), for the interleaving tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A waker counting its wakes.
pub fn counting_waker() -> (std::task::Waker, Arc<std::sync::atomic::AtomicUsize>) {
    struct Count(Arc<std::sync::atomic::AtomicUsize>);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    (Arc::new(Count(Arc::clone(&count))).into(), count)
}

/// Runs `future` until `timeout` passes; `Err` if it did not complete by then.
///
/// Unlike `tokio::time::timeout`, the deadline is checked before the future is
/// polled: a timer wake-up must not poll a waiter once more, which could find
/// the lost event itself and turn a lost wake-up into a slow pass.
#[cfg(all(target_os = "linux", feature = "tokio-1"))]
pub async fn within<F: std::future::Future>(
    timeout: std::time::Duration,
    future: F,
) -> Result<F::Output, &'static str> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut future = std::pin::pin!(future);
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(deadline));
    std::future::poll_fn(|cx| {
        if tokio::time::Instant::now() >= deadline {
            return std::task::Poll::Ready(Err("deadline passed: a lost wake-up"));
        }
        if let std::task::Poll::Ready(output) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(Ok(output));
        }
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                std::task::Poll::Ready(Err("deadline passed: a lost wake-up"))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}
