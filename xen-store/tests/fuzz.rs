//! A bounded fuzz of everything a hostile peer can send: random and mutated messages, split at
//! random points, against a connection with requests of every reply format in flight and a
//! watch set. Nothing may panic; a broken connection must refuse further requests.
//!
//! `XEN_STORE_FUZZ_ITERATIONS=N` runs N connections (default 20 000; 50 under Miri).

use xen_store::wire::{self, MsgType, PAYLOAD_MAX};
use xen_store::{Connection, DomId, op};

/// xorshift64*: deterministic, so a failure is reproducible from its iteration number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const SNIPPETS: &[&[u8]] = &[
    b"OK\0",
    b"OK",
    b"EACCES\0",
    b"EAGAIN\0",
    b"E2BIG\0",
    b"EBOGUS\0",
    b"ENOENT",
    b"T\0",
    b"F\0",
    b"42\0",
    b"0\0",
    b"4294967296\0",
    b"/local/domain/1\0",
    b"a\0b\0",
    b"\0",
    b"\0\0",
    b"7\0x\0\0",
    b"7\0",
    b"r1\0n0\0",
    b"q1\0",
    b"b65536\0",
    b"/p\0xen-store/1\0",
    b"/p\0",
    b"\xff\xfe\0",
];

fn payload(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(4) {
        if rng.below(3) == 0 {
            for _ in 0..rng.below(12) {
                out.push(*rng.pick(&[0, b'a', b'/', b'E', b'1', 0xff]));
            }
        } else {
            let snippet: &&[u8] = rng.pick(SNIPPETS);
            out.extend_from_slice(snippet);
        }
    }
    out
}

fn message(rng: &mut Rng, req_ids: &[u32], out: &mut Vec<u8>) {
    let types = [
        MsgType::READ,
        MsgType::DIRECTORY,
        MsgType::DIRECTORY_PART,
        MsgType::GET_PERMS,
        MsgType::TRANSACTION_START,
        MsgType::GET_DOMAIN_PATH,
        MsgType::IS_DOMAIN_INTRODUCED,
        MsgType::WRITE,
        MsgType::WATCH,
        MsgType::ERROR,
        MsgType::WATCH_EVENT,
        MsgType(20),
        MsgType(0xffff),
    ];
    let ty = *rng.pick(&types);
    let req_id = if rng.below(8) == 0 {
        rng.next() as u32
    } else {
        *rng.pick(req_ids)
    };
    let body = payload(rng);
    let start = out.len();
    wire::encode(ty, req_id, 0, &[&body], out).expect("fuzz payloads are small");
    match rng.below(16) {
        // A lying length: longer than the payload, or beyond the limit.
        0 => out[start + 12..start + 16].copy_from_slice(&(body.len() as u32 + 3).to_ne_bytes()),
        1 => out[start + 12..start + 16].copy_from_slice(&(PAYLOAD_MAX as u32 + 1).to_ne_bytes()),
        2 => out.truncate(start + rng.below((out.len() - start) as u64) as usize),
        _ => {}
    }
}

fn one_connection(rng: &mut Rng) {
    let mut conn = Connection::new();
    let read = conn.submit(op::read("/a").unwrap(), 0).unwrap();
    let dir = conn.submit(op::directory("/a").unwrap(), 0).unwrap();
    let part = conn
        .submit(op::directory_part("/a", 0).unwrap(), 0)
        .unwrap();
    let perms = conn.submit(op::get_perms("/a").unwrap(), 0).unwrap();
    let tx = conn.submit(op::transaction_start().unwrap(), 0).unwrap();
    let home = conn
        .submit(op::get_domain_path(DomId(1)).unwrap(), 0)
        .unwrap();
    let intro = conn
        .submit(op::is_domain_introduced(DomId(1)).unwrap(), 0)
        .unwrap();
    let write = conn.submit(op::write("/a", b"v").unwrap(), 0).unwrap();
    let (watch, _token) = conn.add_watch("/p");
    let sent = conn.outgoing().len();
    conn.sent(sent);
    let req_ids: Vec<u32> = (1..=8).collect();

    let mut stream = Vec::new();
    for _ in 0..rng.below(10) + 1 {
        message(rng, &req_ids, &mut stream);
    }
    let mut rest = &stream[..];
    let mut broken = false;
    while !rest.is_empty() {
        let n = (rng.below(rest.len() as u64) + 1) as usize;
        let buf = conn.read_buffer(n);
        buf.copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        if conn.received(n, n).is_err() {
            broken = true;
        }
        while let Some(event) = conn.next_event() {
            assert_eq!(event.watch, watch);
        }
    }
    // Every reply, whatever it was, is a value or a typed error.
    let _ = conn.take_reply(&read);
    let _ = conn.take_reply(&dir);
    let _ = conn.take_reply(&part);
    let _ = conn.take_reply(&perms);
    let _ = conn.take_reply(&tx);
    let _ = conn.take_reply(&home);
    let _ = conn.take_reply(&intro);
    let _ = conn.take_reply(&write);
    if broken {
        assert!(conn.broken().is_some());
        assert!(conn.submit(op::read("/a").unwrap(), 0).is_err());
    }
}

#[test]
fn hostile_replies_never_panic() {
    let iterations = std::env::var("XEN_STORE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(miri) { 20 } else { 20_000 });
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..iterations {
        one_connection(&mut rng);
    }
}

/// A hostile daemon's ring: random indices and bytes in the reply half of the page, read with
/// `xen-shared`'s consumer into a connection. Impossible indices are an error, anything else is
/// routed or refused; nothing panics or reads out of bounds.
#[test]
fn hostile_ring_never_panics() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use xen_shared::{Consumer, RingLayout, SharedPage};

    let iterations = std::env::var("XEN_STORE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(miri) { 20 } else { 5_000 });
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let page = SharedPage::new();
    let mem = page.mem();
    let layout = RingLayout::XENSTORE_RSP;
    for _ in 0..iterations {
        let mut stream = Vec::new();
        for _ in 0..rng.below(4) + 1 {
            message(&mut rng, &[1, 2, 3], &mut stream);
        }
        stream.truncate(1024);
        let cons = rng.next() as u32;
        let prod = match rng.below(4) {
            0 => rng.next() as u32,
            _ => cons.wrapping_add(stream.len() as u32),
        };
        for (i, byte) in stream.iter().enumerate() {
            let at = layout.data + (cons.wrapping_add(i as u32) % layout.size) as usize;
            mem.write(at, &[*byte]).unwrap();
        }
        mem.atomic::<AtomicU32>(layout.cons)
            .unwrap()
            .store(cons, Ordering::Relaxed);
        mem.atomic::<AtomicU32>(layout.prod)
            .unwrap()
            .store(prod, Ordering::Relaxed);

        let mut conn = Connection::new();
        let ticket = conn.submit(op::read("/a").unwrap(), 0).unwrap();
        let mut ring = Consumer::new(mem, layout).unwrap();
        loop {
            let buf = conn.read_buffer(256);
            match ring.read(buf) {
                Ok(0) => {
                    let _ = conn.received(256, 0);
                    break;
                }
                Ok(n) => {
                    if conn.received(256, n).is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let _ = conn.received(256, 0);
                    assert!(prod.wrapping_sub(cons) > layout.size);
                    break;
                }
            }
        }
        let _ = conn.take_reply(&ticket);
        while conn.next_event().is_some() {}
    }
}
