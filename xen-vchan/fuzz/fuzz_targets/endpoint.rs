//! A server and a client endpoint on one page while the fuzzer's input plays a hostile peer:
//! between operations it overwrites the indices, the orders and the flag bytes with values of
//! its choice. Every operation must return bytes within the buffer, block, report the peer
//! closed, or return a typed error, and a corruption must end the channel for good (every
//! later call returns the same error); nothing may panic or access memory outside the views.
#![no_main]

use std::sync::atomic::{AtomicU32, Ordering};

use libfuzzer_sys::fuzz_target;
use xen_shared::{PAGE_SIZE, SharedMem, SharedPage};
use xen_vchan::{Endpoint, Error, Order, Orders, Shared, Step};

/// The fuzzer's input as decisions (zeros once it runs out).
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn word(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

const ORDERS: [(u16, u16); 4] = [(10, 11), (11, 10), (12, 11), (13, 12)];

/// Checks one result, and that a channel ended by corruption stays ended.
fn check(result: Result<Step, Error>, len: usize, ended: &mut Option<Error>) {
    if let Some(error) = *ended {
        assert_eq!(result, Err(error));
        return;
    }
    match result {
        Ok(Step::Moved { bytes, .. }) => assert!(bytes <= len),
        Ok(Step::WouldBlock | Step::Closed) => {}
        Err(error @ Error::Corrupt(_)) => *ended = Some(error),
        Err(Error::PacketTooLarge { .. }) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let mut script = Script(input);
    let (left, right) = ORDERS[usize::from(script.byte() % 4)];
    let orders = Orders::new(Order::new(left).unwrap(), Order::new(right).unwrap()).unwrap();
    let page = SharedPage::new();
    let words = |order: Order| -> Vec<AtomicU32> {
        (0..order.pages() * PAGE_SIZE / 4).map(|_| AtomicU32::new(0)).collect()
    };
    let (left_pages, right_pages) = (words(orders.left), words(orders.right));
    let mem = Shared {
        page: page.mem(),
        left: SharedMem::from_words(&left_pages).into(),
        right: SharedMem::from_words(&right_pages).into(),
    };
    let grants = [7u32; 4];
    let mut server = Endpoint::init_server(
        page.mem(),
        orders,
        &grants[..orders.left.pages()],
        &grants[..orders.right.pages()],
    )
    .unwrap();
    // The client reads what the (possibly scribbled) page says, as a real one would.
    if script.byte() % 4 == 0 {
        let word = script.word();
        page.mem().atomic::<AtomicU32>(16).unwrap().store(word, Ordering::Relaxed);
    }
    let Ok(peer_orders) = Endpoint::peer_orders(page.mem()) else {
        return;
    };
    if peer_orders != orders {
        // The rings the client would map differ from the memory here: nothing to drive.
        return;
    }
    let mut client = Endpoint::connect_client(page.mem(), peer_orders).unwrap();
    let mut buf = vec![0u8; 5000];
    let (mut server_ended, mut client_ended) = (None, None);
    while !script.0.is_empty() {
        let op = script.byte();
        let len = (usize::from(script.byte()) * 20) % buf.len();
        match op % 10 {
            0 => check(client.write(&mem, &buf[..len]), len, &mut client_ended),
            1 => check(client.read(&mem, &mut buf[..len]), len, &mut client_ended),
            2 => check(server.write(&mem, &buf[..len]), len, &mut server_ended),
            3 => check(server.read(&mem, &mut buf[..len]), len, &mut server_ended),
            4 => check(client.send(&mem, &buf[..len]), len, &mut client_ended),
            5 => check(server.recv(&mem, &mut buf[..len]), len, &mut server_ended),
            6 | 7 => {
                // The peer scribbles one of the first six words: indices, orders, flags.
                let offset = 4 * usize::from(script.byte() % 6);
                let value = script.word();
                page.mem()
                    .atomic::<AtomicU32>(offset)
                    .unwrap()
                    .store(value, Ordering::Relaxed);
            }
            8 => {
                let _ = client.data_ready(&mem);
                let _ = server.buffer_space(&mem);
            }
            _ => {
                let _ = server.peer_state(&mem);
                let _ = client.peer_state(&mem);
            }
        }
    }
});
