//! A blocking channel's wait on `mock::EvtchnDriver` (the driver's delivery rules, counting
//! system calls): what one sleep costs, and that an event sent before it is not lost.
#![cfg(all(target_os = "linux", not(miri)))]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use xen_evtchn::mock::EvtchnDriver;
use xen_evtchn::{DomId, EventChannel};
use xen_vchan::linux::{EvtchnDevice, Sleep};

const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `device.sleep(port)` on another thread, fails if it does not return by the deadline.
fn sleep_once(device: &std::sync::Arc<EvtchnDevice>, port: xen_evtchn::Port) {
    let (done_tx, done_rx) = mpsc::channel();
    let sleeper = std::sync::Arc::clone(device);
    thread::spawn(move || done_tx.send(sleeper.sleep(port)));
    done_rx
        .recv_timeout(DEADLINE)
        .expect("the sleep missed the event")
        .unwrap();
}

/// A sleep the peer's signal ends costs libxenvchan's two system calls (the read that waits,
/// the unmask), after the first one's set-up; and re-arms the port.
#[test]
fn a_sleep_is_one_read_and_one_unmask() {
    let driver = EvtchnDriver::new();
    let device = std::sync::Arc::new(driver.device());
    let port = device.alloc_unbound_raw(DomId::SELF).unwrap();

    driver.fire(port);
    sleep_once(&device, port);
    assert!(driver.is_enabled(port), "the port was not unmasked");

    let before = driver.system_calls();
    let signaller = {
        let driver = std::sync::Arc::clone(&driver);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            driver.fire(port);
        })
    };
    sleep_once(&device, port);
    signaller.join().unwrap();
    assert_eq!(driver.system_calls() - before, 2, "system calls per sleep");
    assert!(driver.is_enabled(port), "the port was not unmasked");
    device.unbind_raw(port).unwrap();
}

/// An event queued before the sleep (between the ring check and the wait) ends it at once.
#[test]
fn an_event_before_the_sleep_is_not_lost() {
    let driver = EvtchnDriver::new();
    let device = std::sync::Arc::new(driver.device());
    let port = device.alloc_unbound_raw(DomId::SELF).unwrap();
    for _ in 0..3 {
        driver.fire(port);
        sleep_once(&device, port);
        assert!(driver.is_enabled(port), "the port was not unmasked");
    }
    device.unbind_raw(port).unwrap();
}
