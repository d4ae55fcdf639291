//! The hypervisor console and Xen's log against the mock hypervisor.

use std::convert::Infallible;
use std::fmt::Write as _;

use xen_console::hypervisor::InputError;
use xen_console::{FnChannel, HypervisorConsole, LogError, Wake, XenLog};
use xen_hypercall::mock::MockXen;
use xen_hypercall::{Errno, Error};

fn no_notify() -> Result<(), Infallible> {
    Ok(())
}

#[test]
fn formatted_writes_reach_xens_console() {
    let xen = MockXen::new();
    let mut con = HypervisorConsole::new(&xen);
    let n = 3;
    writeln!(con, "line {n}").unwrap();
    std::io::Write::write_all(&mut con, &vec![b'x'; 40_000]).unwrap();
    let out = xen.output();
    assert!(out.starts_with(b"line 3\n"));
    assert_eq!(out.len(), 7 + 40_000);
}

#[test]
fn a_domain_that_is_not_the_console_domain_gets_eperm() {
    let xen = MockXen::new();
    xen.set_privileged(false);
    let mut con = HypervisorConsole::new(&xen);
    assert_eq!(con.write_all(b"x"), Err(Error::Xen(Errno::EPERM)));
    let mut input = con.input(FnChannel::new(no_notify, || Ok(Wake::Event)));
    assert!(matches!(
        input.next(),
        Some(Err(InputError::Xen(Error::Xen(Errno::EPERM))))
    ));
}

#[test]
fn input_is_an_iterator_that_waits_on_the_virq() {
    let xen = MockXen::new();
    let con = HypervisorConsole::new(&xen);
    let mut waits = 0;
    let virq = FnChannel::new(no_notify, || {
        waits += 1;
        if waits == 1 {
            xen.push_input(b"ok\r");
            Ok(Wake::Event)
        } else {
            Ok(Wake::TimedOut)
        }
    });
    let mut input = con.input(virq);
    let got: Vec<u8> = input.by_ref().take(3).map(Result::unwrap).collect();
    assert_eq!(got, b"ok\r");
    assert!(matches!(input.next(), Some(Err(InputError::TimedOut))));
}

#[test]
fn try_read_after_next_keeps_the_input_in_order() {
    let xen = MockXen::new();
    xen.push_input(b"abc");
    let con = HypervisorConsole::new(&xen);
    let mut input = con.input(FnChannel::new(no_notify, || Ok(Wake::TimedOut)));
    // `next` takes all of Xen's input at once and hands out one byte.
    assert_eq!(input.next().unwrap().unwrap(), b'a');
    xen.push_input(b"d");
    let mut buf = [0u8; 8];
    let n = input.try_read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"bc");
    let n = input.try_read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"d");
}

#[test]
fn the_log_reads_whole_incrementally_and_cleared() {
    let xen = MockXen::new();
    xen.log(b"(XEN) boot\n");
    let log = XenLog::new(&xen);
    let all = log.read_all().unwrap();
    assert_eq!(all.text, b"(XEN) boot\n");
    // A console domain's write lands in the ring (Xen with console_to_ring).
    HypervisorConsole::new(&xen).write_all(b"mine\n").unwrap();
    let since = log.read_since(all.next_index).unwrap();
    assert_eq!(since.text, b"mine\n");
    assert_eq!(log.end_index().unwrap(), since.next_index);
    assert!(log.read_since(since.next_index).unwrap().text.is_empty());
    log.clear().unwrap();
    assert!(log.read_all().unwrap().text.is_empty());
}

#[test]
fn a_log_bigger_than_one_read_and_a_wrapped_ring_are_read_in_order() {
    let xen = MockXen::new();
    // 40 KiB into a 16 KiB ring: the oldest bytes are gone, the newest 16 KiB remain.
    let text: Vec<u8> = (0..40_960u32).map(|i| b'a' + (i % 26) as u8).collect();
    xen.log(&text);
    let log = XenLog::new(&xen);
    let all = log.read_all().unwrap();
    assert_eq!(all.text, &text[text.len() - 16384..]);
    assert_eq!(all.next_index, 40_960);
    // An index that has left the ring reads from the oldest byte kept.
    assert_eq!(log.read_since(5).unwrap().text.len(), 16384);
}

#[test]
fn another_sysctl_interface_is_a_typed_error_naming_the_releases() {
    let xen = MockXen::new();
    xen.set_sysctl_interface_version(0x16);
    let err = XenLog::new(&xen).read_all().unwrap_err();
    assert!(matches!(
        err,
        LogError::Refused {
            speaks: 0x15,
            releases: "Xen 4.17 to 4.20"
        }
    ));
    assert!(err.to_string().contains("4.17 to 4.20"));
    xen.set_sysctl_interface_version(0x15);
    xen.set_privileged(false);
    assert!(matches!(
        XenLog::new(&xen).read_all(),
        Err(LogError::Xen(Error::Xen(Errno::EPERM)))
    ));
}

#[test]
fn follow_yields_what_is_logged_after_it_started() {
    let xen = MockXen::new();
    xen.log(b"before\n");
    let log = XenLog::new(&xen);
    let start = log.end_index().unwrap();
    let mut waits = 0;
    let virq = FnChannel::new(no_notify, || {
        waits += 1;
        xen.log(format!("tick {waits}\n").as_bytes());
        Ok(Wake::Event)
    });
    let chunks: Vec<Vec<u8>> = log
        .follow(virq, Some(start))
        .take(2)
        .map(|c| c.unwrap().text)
        .collect();
    assert_eq!(chunks, [b"tick 1\n".to_vec(), b"tick 2\n".to_vec()]);
}
