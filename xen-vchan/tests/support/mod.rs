//! A channel's memory in this process, a mock event channel, test data.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::AtomicU32;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use xen_shared::{PAGE_SIZE, SharedMem, SharedPage};
use xen_vchan::{Endpoint, Orders, Shared};

/// Made-up grant references the server lists.
pub const GRANTS: [u32; 600] = {
    let mut g = [0u32; 600];
    let mut i = 0;
    while i < 600 {
        g[i] = 100 + i as u32;
        i += 1;
    }
    g
};

/// The shared page and the rings' own pages.
pub struct Channel {
    orders: Orders,
    page: Box<SharedPage>,
    left: Vec<AtomicU32>,
    right: Vec<AtomicU32>,
}

impl Channel {
    pub fn new(orders: Orders) -> Self {
        let words = |pages: usize| {
            (0..pages * PAGE_SIZE / 4)
                .map(|_| AtomicU32::new(0))
                .collect()
        };
        Self {
            orders,
            page: Box::new(SharedPage::new()),
            left: words(orders.left.pages()),
            right: words(orders.right.pages()),
        }
    }

    pub fn shared(&self) -> Shared<'_> {
        Shared {
            page: self.page.mem(),
            left: SharedMem::from_words(&self.left).into(),
            right: SharedMem::from_words(&self.right).into(),
        }
    }

    /// Lays the page out as the server.
    pub fn server(&self) -> Endpoint {
        let left = self.orders.left.pages();
        let right = self.orders.right.pages();
        Endpoint::init_server(
            self.page.mem(),
            self.orders,
            &GRANTS[..left],
            &GRANTS[left..left + right],
        )
        .unwrap()
    }

    /// A server and a connected client.
    pub fn connect(&self) -> (Endpoint, Endpoint) {
        let server = self.server();
        let orders = Endpoint::peer_orders(self.page.mem()).unwrap();
        assert_eq!(orders, self.orders);
        (
            server,
            Endpoint::connect_client(self.page.mem(), orders).unwrap(),
        )
    }

    /// Moves every index of both rings to `start` (after `connect`, which zeroes the page,
    /// and before any byte moves).
    pub fn set_indices(&self, start: u32) {
        for offset in [0, 4, 8, 12] {
            self.index(offset)
                .store(start, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The word at `offset` of the shared page, as the peer writes it.
    pub fn index(&self, offset: usize) -> &AtomicU32 {
        self.page.mem().atomic::<AtomicU32>(offset).unwrap()
    }
}

/// A mock event channel: `notify` sets a pending flag, `wait` takes it.
#[derive(Default)]
pub struct Event {
    pending: Mutex<bool>,
    cond: Condvar,
}

impl Event {
    pub fn notify(&self) {
        *self.pending.lock().unwrap() = true;
        self.cond.notify_all();
    }

    /// Waits for a notification; a minute without one is a lost wake-up.
    pub fn wait(&self) {
        let guard = self.pending.lock().unwrap();
        let (mut guard, timeout) = self
            .cond
            .wait_timeout_while(guard, Duration::from_secs(60), |p| !*p)
            .unwrap();
        assert!(!timeout.timed_out(), "lost wake-up: no event for a minute");
        *guard = false;
    }
}

/// `len` bytes of a pattern that differs at every position of a 251-byte cycle, seeded.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// xorshift32.
pub struct Rng(pub u32);

impl Rng {
    pub fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}
