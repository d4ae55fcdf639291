//! The domU half of the event-channel soak ([`exchange::SOAK`]): a port for
//! dom0, every one of dom0's events answered through `RawEventChannel`
//! (awaited around `SCHEDOP_poll`), then one last event after dom0 bound and
//! closed its end many times.

use xen_evtchn::EventChannel;
use xen_hypercall::Error;
use xen_hypercall::prelude::*;
use xen_testbed_protocol::Reporter;
use xen_testbed_protocol::exchange;

use super::console_ring::RingConsole;
use super::evtchn_port::Channel;
use super::xenstore::XenStore;
use super::{EVENT_WAIT_NS, Events, alloc_port};
use crate::fail::{Fail, fail};

/// What dom0 asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Soak {
    trips: u64,
    cycles: u64,
}

/// The soak dom0 asked for in [`exchange::SOAK`], if any.
pub(crate) fn requested<H: XenHypercall<Error = Error> + Copy>(
    store: &mut XenStore<H>,
) -> Option<Soak> {
    let mut value = [0; 32];
    let value = store.read(exchange::SOAK, &mut value).ok()?;
    let (trips, cycles) = core::str::from_utf8(value).ok()?.split_once(' ')?;
    Some(Soak {
        trips: trips.parse().ok()?,
        cycles: cycles.parse().ok()?,
    })
}

/// Runs the soak's cases ([`exchange::SOAK_DOMU_CASES`] but the last).
pub(crate) fn run<H: XenHypercall<Error = Error> + Copy>(
    soak: Soak,
    events: Events<H>,
    r: &mut Reporter<RingConsole<H>>,
    store: &mut XenStore<H>,
) {
    let err = |e: xen_evtchn::Error| Fail::new(format_args!("{e}"));
    let channel = events.channel();
    let port = match alloc_port(events.h, events.alloc_for_dom0(&channel), store).and_then(|port| {
        store.write(exchange::READY, b"1")?;
        Ok(port)
    }) {
        Ok(port) => {
            r.case("evtchn_soak_port", Ok::<(), Fail>(()));
            port
        }
        Err(error) => return r.case("evtchn_soak_port", Err(error)),
    };
    // PV: the second half waits for upcalls (dom0 cannot tell the difference).
    let by_upcall = if cfg!(all(target_arch = "x86_64", feature = "pv")) {
        soak.trips / 2
    } else {
        0
    };
    let trips = (|| {
        for trip in 0..soak.trips - by_upcall {
            let deadline = events.deadline(EVENT_WAIT_NS);
            if let Err(e) = events.await_event(&channel, port, deadline, "dom0's event") {
                fail!("round trip {trip}: {e} (lost wakeup)");
            }
            channel.notify(port).map_err(err)?;
        }
        upcall_trips(events, &channel, port, by_upcall)
    })();
    if let Ok((woken, upcalls)) = trips {
        r.out(format_args!(
            "evtchn-soak-domu round_trips={} lost_wakeups=0 awaited_by_upcall={by_upcall} \
             woken_by_upcall={woken} upcalls={upcalls}",
            soak.trips
        ));
    }
    r.case("evtchn_soak_round_trips", trips.map(drop));
    // Dom0's cycles take their time: 20 s, and 20 s more per thousand.
    let deadline = events.deadline(EVENT_WAIT_NS.saturating_mul(1 + soak.cycles / 1000));
    r.case(
        "evtchn_soak_after_rebinds",
        (|| {
            events.await_event(&channel, port, deadline, "dom0's event after its rebinds")?;
            channel.notify(port).map_err(err)?;
            channel.unbind_raw(port).map_err(err)?;
            let state = events.h.evtchn_status(DomId::SELF, port)?.state;
            if state != xen_hypercall::event_channel::ChannelState::Closed {
                fail!("port {} is {:?} after close", port.raw(), state);
            }
            Ok(())
        })(),
    );
}

/// `trips` round trips whose waits are woken by the upcall (`handle_upcall`
/// from the guest's interrupt entry): between polls of the future the vCPU
/// sleeps in `SCHEDOP_poll`, Xen enters the upcall on the way back, and a
/// future left pending must be woken by it. Returns the wakes and upcalls.
#[cfg(all(target_arch = "x86_64", feature = "pv"))]
fn upcall_trips<H: XenHypercall<Error = Error> + Copy>(
    events: Events<H>,
    channel: &Channel<H>,
    port: Port,
    trips: u64,
) -> Result<(u64, usize), Fail> {
    use core::future::Future;
    use core::pin::pin;
    use core::task::Context;

    use xen_evtchn::AsyncEventChannel;
    use xen_hypercall::sched::Deadline;

    let waker = crate::upcall::waker();
    let mut cx = Context::from_waker(&waker);
    let (woken, upcalls) =
        crate::upcall::with_upcalls(&events.h, channel, events.shared.page(), || {
            let mut woken = 0;
            for trip in 0..trips {
                let deadline = events.deadline(EVENT_WAIT_NS);
                let mut wait = pin!(channel.wait_port(port));
                crate::upcall::take_woken();
                while wait
                    .as_mut()
                    .poll(&mut cx)
                    .map_err(|e| Fail::new(format_args!("upcall round trip {trip}: {e}")))?
                    .is_pending()
                {
                    // Only the upcall's wake ends this sleep.
                    loop {
                        if events.now() >= deadline {
                            fail!("upcall round trip {trip}: no wake-up by an upcall");
                        }
                        events
                            .h
                            .poll(&[port], Some(Deadline::from_nanos(deadline)))?;
                        if crate::upcall::take_woken() {
                            woken += 1;
                            break;
                        }
                    }
                }
                channel
                    .notify(port)
                    .map_err(|e| Fail::new(format_args!("{e}")))?;
            }
            Ok(woken)
        })?;
    Ok((woken?, upcalls))
}

/// PVH and aarch64 domUs wait without upcalls.
#[cfg(not(all(target_arch = "x86_64", feature = "pv")))]
fn upcall_trips<H: XenHypercall<Error = Error> + Copy>(
    _: Events<H>,
    _: &Channel<H>,
    _: Port,
    _: u64,
) -> Result<(u64, usize), Fail> {
    Ok((0, 0))
}

#[cfg(all(target_arch = "x86_64", feature = "pv"))]
impl<H: XenHypercall<Error = Error> + Copy> crate::upcall::Upcall for Channel<H> {
    fn upcall(&self) {
        self.handle_upcall();
    }
}
