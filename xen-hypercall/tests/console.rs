//! `ConsoleOps` against the mock.
#![cfg(feature = "mock")]

mod common;

use xen_hypercall::console::CONSOLE_CHUNK;
use xen_hypercall::prelude::*;
use xen_hypercall::{Errno, Error};

/// More than one chunk, ending in a partial one: two chunks and a tail, or under Miri (slow per
/// byte) one chunk and a tail, still a full and a partial hypercall.
const LARGE: usize = if cfg!(miri) {
    CONSOLE_CHUNK + 17
} else {
    CONSOLE_CHUNK * 2 + 17
};

#[test]
fn write_is_captured() {
    for xen in common::mocks() {
        xen.console_write(b"hello ").unwrap();
        xen.console_write(b"").unwrap();
        xen.console_write(b"world\n").unwrap();
        assert_eq!(xen.output(), b"hello world\n");
    }
}

#[test]
fn large_write_is_split_into_chunks_and_kept_whole() {
    let data: Vec<u8> = (0..LARGE).map(|i| i as u8).collect();
    for xen in common::mocks() {
        xen.console_write(&data).unwrap();
        assert_eq!(xen.output(), data);
    }
}

#[test]
fn read_takes_queued_input_without_blocking() {
    for xen in common::mocks() {
        let mut buf = [0u8; 4];
        assert_eq!(xen.console_read(&mut buf).unwrap(), 0);
        xen.push_input(b"abcdef");
        assert_eq!(xen.console_read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(xen.console_read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(xen.console_read(&mut []).unwrap(), 0);
    }
}

/// A read into a large slice is split like a write: no hypercall bounces more
/// than `CONSOLE_CHUNK` bytes, and every queued byte arrives in order.
#[test]
fn large_read_is_split_into_chunks() {
    let input: Vec<u8> = (0..LARGE).map(|i| (i % 251) as u8).collect();
    for xen in common::mocks() {
        xen.push_input(&input);
        // Room for a chunk more than is queued.
        let mut buf = vec![0u8; LARGE + CONSOLE_CHUNK];
        assert_eq!(xen.console_read(&mut buf).unwrap(), input.len());
        assert_eq!(&buf[..input.len()], &input[..]);
        assert!(buf[input.len()..].iter().all(|&b| b == 0));
        assert_eq!(xen.largest_console_count(), CONSOLE_CHUNK);
        // Exactly a chunk's worth queued: the next chunk reads 0 and stops.
        xen.push_input(&input[..CONSOLE_CHUNK]);
        assert_eq!(xen.console_read(&mut buf).unwrap(), CONSOLE_CHUNK);
        assert_eq!(xen.console_read(&mut buf).unwrap(), 0);
    }
}

#[test]
fn unprivileged_domain_gets_eperm() {
    for xen in common::mocks() {
        let domu = xen.domain(DomId::new(5));
        assert_eq!(domu.console_write(b"x"), Err(Error::Xen(Errno::EPERM)));
        assert_eq!(
            domu.console_read(&mut [0; 8]),
            Err(Error::Xen(Errno::EPERM))
        );
        domu.set_privileged(true);
        domu.console_write(b"x").unwrap();
        assert_eq!(xen.output(), b"x");
    }
}
