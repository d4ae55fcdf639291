//! `ConsoleOps` against the mock.
#![cfg(feature = "mock")]

mod common;

use xen_hypercall::console::CONSOLE_WRITE_CHUNK;
use xen_hypercall::prelude::*;
use xen_hypercall::{Errno, Error};

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
    let data: Vec<u8> = (0..CONSOLE_WRITE_CHUNK * 2 + 17).map(|i| i as u8).collect();
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
