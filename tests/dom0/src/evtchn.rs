//! `xen-evtchn` on real Xen: `/dev/xen/evtchn`, sync and tokio, in dom0.
//! Loopback channels (dom0 to itself), VIRQ_CON_RING, 1000 ports, overflow
//! recovery, restriction, bad input, and bind/unbind cycles checked with
//! `EVTCHNOP_status` through privcmd.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{AsyncEventChannel, BoundPort, DomId, Error, ErrorKind, EventChannel, Port, Virq};
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall::{XenConstBuffer, XenMutBuffer};
use xen_hypercall_privcmd::Privcmd;

use crate::Case;

pub(crate) const CASES: &[Case] = &[
    ("evtchn_fd_cloexec", fd_cloexec),
    ("evtchn_loopback", loopback),
    ("evtchn_virq_con_ring", virq_con_ring),
    ("evtchn_1000_ports", thousand_ports),
    ("evtchn_overflow_recovered", overflow),
    ("evtchn_restrict_domid", restrict),
    ("evtchn_bad_input", bad_input),
    ("evtchn_bind_static", bind_static),
    ("evtchn_bind_unbind_cycles", bind_unbind_cycles),
    ("evtchn_ping_pong", ping_pong),
    ("evtchn_tokio_loopback", tokio_loopback),
    ("evtchn_tokio_1000_ports", tokio_thousand_ports),
    ("evtchn_tokio_overflow", tokio_overflow),
    ("evtchn_tokio_error_only_wake", tokio_error_only_wake),
];

/// dom0's own id, for loopback channels.
const DOM0: DomId = DomId::new(0);
/// How long an expected event may take.
const PATIENCE: Duration = Duration::from_secs(5);

pub(crate) fn call<T>(what: &str, result: Result<T, Error>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e} ({:?})", e.kind()))
}

fn open() -> Result<EvtchnDevice, String> {
    call("open /dev/xen/evtchn", EvtchnDevice::open())
}

/// Collects deliveries until `want` have all been seen (each unmasked after),
/// failing on a port outside `want` unless `extra` allows it; returns the reads.
fn collect(
    dev: &EvtchnDevice,
    want: &BTreeSet<Port>,
    extra: &BTreeSet<Port>,
) -> Result<usize, String> {
    let mut seen = BTreeSet::new();
    let mut reads = 0;
    let start = Instant::now();
    let mut ports = vec![Port::new(0); 1024];
    while !want.is_subset(&seen) {
        if start.elapsed() > PATIENCE {
            let missing: Vec<_> = want.difference(&seen).take(8).collect();
            return Err(format!(
                "{} of {} ports never delivered, e.g. {missing:?}",
                want.len() - want.intersection(&seen).count(),
                want.len()
            ));
        }
        call("wait", dev.wait_readable(100))?;
        let count = call("take_pending", dev.take_pending(&mut ports))?;
        if count == 0 {
            continue;
        }
        reads += 1;
        for &port in &ports[..count] {
            if !want.contains(&port) && !extra.contains(&port) {
                return Err(format!("{port} delivered, never signalled"));
            }
            seen.insert(port);
        }
        call("unmask_all", dev.unmask_all(&ports[..count]))?;
    }
    Ok(reads)
}

/// A loopback pair: `(unbound, bound to it)`; the bound one's bind-pending
/// event is consumed and the port unmasked.
pub(crate) fn pair(
    dev: &EvtchnDevice,
) -> Result<(BoundPort<&EvtchnDevice>, BoundPort<&EvtchnDevice>), String> {
    let a = call("alloc_unbound", dev.alloc_unbound(DOM0))?;
    let b = call("bind_interdomain", dev.bind_interdomain(DOM0, a.port()))?;
    collect(dev, &BTreeSet::from([b.port()]), &BTreeSet::new())
        .map_err(|e| format!("the pending-after-bind event: {e}"))?;
    Ok((a, b))
}

fn fd_cloexec(_: &Privcmd) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let dev = open()?;
    let path = format!("/proc/self/fdinfo/{}", dev.as_raw_fd());
    let info = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| u32::from_str_radix(octal.trim(), 8).ok())
        .ok_or_else(|| format!("no flags in {path}"))?;
    if flags & 0o2_000_000 == 0 || flags & 0o4000 == 0 {
        return Err(format!("fd flags {flags:#o} lack O_CLOEXEC or O_NONBLOCK"));
    }
    Ok(())
}

/// Both directions, Xen's view through privcmd, and unbind on drop.
fn loopback(privcmd: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    let (a, b) = pair(&dev)?;
    match call(
        "status",
        privcmd
            .evtchn_status(DomId::SELF, b.port())
            .map_err(Error::from),
    )?
    .state
    {
        ChannelState::Interdomain { dom, port } if dom == DOM0 && port == a.port() => {}
        other => return Err(format!("status of {}: {other:?}", b.port())),
    }
    for _ in 0..3 {
        call("notify b", b.notify())?;
        collect(&dev, &BTreeSet::from([a.port()]), &BTreeSet::new())?;
        call("notify a", a.notify())?;
        collect(&dev, &BTreeSet::from([b.port()]), &BTreeSet::new())?;
    }
    let (pa, pb) = (a.port(), b.port());
    call("close a", a.close())?;
    drop(b);
    for port in [pa, pb] {
        expect_closed(privcmd, port)?;
    }
    Ok(())
}

/// Checks with `EVTCHNOP_status` that `port` is closed.
fn expect_closed(privcmd: &Privcmd, port: Port) -> Result<(), String> {
    let status = privcmd.evtchn_status(DomId::SELF, port);
    match call("status", status.map_err(Error::from))?.state {
        ChannelState::Closed => Ok(()),
        state => Err(format!("{port} is {state:?} after close")),
    }
}

/// One bind/unbind cycle: a loopback pair bound, both closed, and both shown
/// closed by Xen; returns the higher port.
pub(crate) fn bind_unbind_cycle(dev: &EvtchnDevice, privcmd: &Privcmd) -> Result<Port, String> {
    let a = call("alloc_unbound", dev.alloc_unbound(DOM0))?;
    let b = call("bind_interdomain", dev.bind_interdomain(DOM0, a.port()))?;
    let ports = [a.port(), b.port()];
    call("close", b.close())?;
    call("close", a.close())?;
    for port in ports {
        expect_closed(privcmd, port)?;
    }
    Ok(ports[1])
}

/// Makes Xen print to its console ring: `XEN_SYSCTL_debug_keys` with key
/// `m` (memory info), whose `printk`s go into the ring and raise
/// VIRQ_CON_RING. (dom0's own `CONSOLEIO_write` reaches the ring only with
/// Xen's `console_to_ring` option.)
fn xen_printk(privcmd: &Privcmd) -> Result<(), String> {
    /// `XEN_SYSCTL_debug_keys`, `XEN_SYSCTL_INTERFACE_VERSION` (public/sysctl.h).
    const DEBUG_KEYS: u32 = 7;
    const HYPERVISOR_SYSCTL: usize = 35;
    let keys = privcmd
        .make_const_buffer(&b"m"[..])
        .map_err(|e| format!("buffer: {e}"))?;
    // `struct xen_sysctl` (136 bytes): cmd, interface_version, then the union
    // at 8: `debug_keys.keys` (a 64-bit handle) and `debug_keys.nr_keys` at 16.
    let mut sysctl = [0u64; 17];
    sysctl[0] = u64::from(DEBUG_KEYS) | (u64::from(xen_sys::XEN_SYSCTL_INTERFACE_VERSION) << 32);
    sysctl[1] = keys.as_hypercall_ptr().cast::<u8>() as u64;
    sysctl[2] = 1;
    let mut arg = privcmd
        .make_mut_buffer(&mut sysctl)
        .map_err(|e| format!("buffer: {e}"))?;
    // SAFETY: sysctl(XEN_SYSCTL_debug_keys) reads the 136-byte `xen_sysctl`
    // at `arg` (live until after the call) and `nr_keys` (1) bytes at `keys`
    // (a live hypercall buffer); it writes nothing back for this command
    // beyond the structure itself.
    let result = unsafe { privcmd.hypercall1(HYPERVISOR_SYSCTL, arg.as_hypercall_ptr() as usize) };
    drop(arg);
    drop(keys);
    result
        .map(drop)
        .map_err(|e| format!("sysctl debug_keys: {e}"))
}

/// VIRQ_CON_RING fires when Xen writes to its console ring.
fn virq_con_ring(privcmd: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    let port = call("bind_virq(CON_RING)", dev.bind_virq(Virq::CON_RING))?;
    xen_printk(privcmd)?;
    collect(&dev, &BTreeSet::from([port.port()]), &BTreeSet::new())?;
    match call(
        "status",
        privcmd
            .evtchn_status(DomId::SELF, port.port())
            .map_err(Error::from),
    )?
    .state
    {
        ChannelState::Virq(Virq::CON_RING) => Ok(()),
        other => Err(format!("status {other:?}")),
    }
}

/// A small deterministic shuffle (xorshift), for the notification order.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// 500 loopback pairs = 1000 ports, each notified once in random order, each observed.
fn thousand_ports(_: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    let mut pairs = Vec::new();
    for _ in 0..500 {
        let a = call("alloc_unbound", dev.alloc_unbound(DOM0))?;
        let b = call("bind_interdomain", dev.bind_interdomain(DOM0, a.port()))?;
        pairs.push((a, b));
    }
    let bound: BTreeSet<Port> = pairs.iter().map(|(_, b)| b.port()).collect();
    let reads = collect(&dev, &bound, &BTreeSet::new())?;
    println!("XENTEST OUT evtchn 500 pending-after-bind ports delivered in {reads} reads");
    let mut order: Vec<(Port, Port)> = pairs
        .iter()
        .flat_map(|(a, b)| [(a.port(), b.port()), (b.port(), a.port())])
        .collect();
    shuffle(&mut order, 0x9e37_79b9_7f4a_7c15);
    for &(_, sender) in &order {
        call("notify", dev.notify(sender))?;
    }
    let all: BTreeSet<Port> = order.iter().map(|&(receiver, _)| receiver).collect();
    let reads = collect(&dev, &all, &BTreeSet::new())?;
    println!("XENTEST OUT evtchn 1000 ports notified in random order, observed in {reads} reads");
    Ok(())
}

/// Provokes a ring overflow (re-arming a queued port before reading lets it
/// be queued again), then checks the handle recovers with every bound port
/// reported and delivers again afterwards.
fn provoke_overflow(dev: &EvtchnDevice, receiver: Port, sender: Port) -> Result<(), String> {
    for _ in 0..400 {
        call("notify", dev.notify(sender))?;
        std::thread::sleep(Duration::from_micros(300));
        call("unmask", dev.unmask(receiver))?;
    }
    Ok(())
}

fn overflow(_: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    let (a, b) = pair(&dev)?;
    provoke_overflow(&dev, a.port(), b.port())?;
    let mut ports = [Port::new(0); 16];
    let count = call("take_pending", dev.take_pending(&mut ports))?;
    if dev.overflows() != 1 {
        return Err(format!(
            "{} overflows recovered, expected 1 (read {count} ports)",
            dev.overflows()
        ));
    }
    let reported: BTreeSet<Port> = ports[..count].iter().copied().collect();
    if reported != BTreeSet::from([a.port(), b.port()]) {
        return Err(format!(
            "after overflow reported {reported:?}, expected both bound ports"
        ));
    }
    call("unmask_all", dev.unmask_all(&ports[..count]))?;
    // Drain whatever the re-arm delivers, then check normal delivery.
    let _ = dev.take_pending(&mut ports);
    let _ = dev.unmask_all(&[a.port(), b.port()]);
    call("notify", b.notify())?;
    collect(
        &dev,
        &BTreeSet::from([a.port()]),
        &BTreeSet::from([b.port()]),
    )?;
    Ok(())
}

fn restrict(_: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    call("restrict", dev.restrict(DomId::new(7)))?;
    for (what, result) in [
        ("alloc_unbound", dev.alloc_unbound_raw(DOM0)),
        ("bind_virq", dev.bind_virq_raw(Virq::CON_RING)),
        (
            "bind_interdomain",
            dev.bind_interdomain_raw(DOM0, Port::new(1)),
        ),
    ] {
        match result {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {}
            other => return Err(format!("{what} on a restricted fd: {other:?}")),
        }
    }
    Ok(())
}

fn bad_input(_: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    let other = open()?;
    let (a, _b) = pair(&other)?;
    // A port of another fd: the driver's ENOTCONN.
    match dev.notify(a.port()) {
        Err(e)
            if e.os_errno() == Some(xen_evtchn::Errno::ENOTCONN)
                && e.kind() == ErrorKind::NotFound => {}
        r => return Err(format!("notify of a foreign port: {r:?}")),
    }
    // A port beyond every ABI: refused before the driver (which says ENOTCONN).
    let beyond = Port::new(1 << 30);
    match dev.notify(beyond) {
        Err(Error::PortOutOfRange(p)) if p == beyond => {}
        r => return Err(format!("notify of port 2^30: {r:?}")),
    }
    // A port in range that nobody bound: the driver's ENOTCONN.
    match dev.notify(Port::new(4000)) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        r => return Err(format!("notify of unbound port 4000: {r:?}")),
    }
    // Unmasking or unbinding a port this handle did not bind: refused before the driver ignores it.
    if dev.unmask(a.port()) != Err(Error::NotBound(a.port())) {
        return Err("unmask of a foreign port was not refused".into());
    }
    if dev.unbind_raw(a.port()) != Err(Error::NotBound(a.port())) {
        return Err("unbind of a foreign port was not refused".into());
    }
    // Binding to a port that does not exist: Xen's EINVAL.
    match dev.bind_interdomain_raw(DOM0, Port::new(4000)) {
        Err(e) if e.kind() == ErrorKind::InvalidInput => {}
        r => return Err(format!("bind to a missing port: {r:?}")),
    }
    // A missing device node.
    match EvtchnDevice::open_path("/dev/xen/no-such-evtchn") {
        Err(e) if e.kind() == ErrorKind::NotOnXen => {}
        r => return Err(format!("missing device: {r:?}")),
    }
    Ok(())
}

/// BIND_STATIC: typed Unsupported where the kernel predates the ioctl (Linux
/// 6.1); where it has it (6.12), Linux takes the port on the caller's word
/// (it does not ask Xen), so the wrapper must return that port, track it as
/// bound, and unbind it.
fn bind_static(_: &Privcmd) -> Result<(), String> {
    let dev = open()?;
    let wanted = Port::new(4000);
    match dev.bind_static_raw(wanted) {
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            println!("XENTEST OUT evtchn bind_static: {e}");
            Ok(())
        }
        Err(e) => Err(format!("BIND_STATIC: {e}")),
        Ok(port) if port != wanted || !dev.is_bound(port) => Err(format!(
            "BIND_STATIC of {wanted} gave {port} (bound: {})",
            dev.is_bound(port)
        )),
        Ok(port) => dev
            .unbind_raw(port)
            .map_err(|e| format!("unbinding the static port: {e}")),
    }
}

/// Bind/unbind cycles: Xen sees each port closed, and port numbers are reused
/// (nothing leaks).
fn bind_unbind_cycles(privcmd: &Privcmd) -> Result<(), String> {
    const CYCLES: usize = 500;
    let dev = open()?;
    let start = Instant::now();
    let mut highest = Port::new(0);
    for _ in 0..CYCLES {
        highest = highest.max(bind_unbind_cycle(&dev, privcmd)?);
    }
    // Drain what the binds left queued (each was pending at bind).
    let mut ports = [Port::new(0); 64];
    let _ = dev.take_pending(&mut ports);
    if !dev.bound_ports().is_empty() {
        return Err(format!("{} ports still bound", dev.bound_ports().len()));
    }
    println!(
        "XENTEST OUT evtchn {CYCLES} bind/unbind cycles in {:?}, 0 leaked, highest port {}",
        start.elapsed(),
        highest.raw()
    );
    if highest.raw() > 256 {
        return Err(format!("port numbers climbed to {highest}: ports leak"));
    }
    Ok(())
}

/// Sync ping-pong over a loopback pair: every notification wakes the reader.
fn ping_pong(_: &Privcmd) -> Result<(), String> {
    const ROUNDS: u32 = 300;
    let dev = open()?;
    let (a, b) = pair(&dev)?;
    let mut ports = [Port::new(0); 4];
    let start = Instant::now();
    for round in 0..ROUNDS {
        for (sender, receiver) in [(&b, &a), (&a, &b)] {
            call("notify", sender.notify())?;
            let deadline = Instant::now() + PATIENCE;
            loop {
                call("wait", dev.wait_readable(1000))?;
                let count = call("take_pending", dev.take_pending(&mut ports))?;
                if count == 1 && ports[0] == receiver.port() {
                    break;
                }
                if count > 0 {
                    return Err(format!("round {round}: got {:?}", &ports[..count]));
                }
                if Instant::now() > deadline {
                    return Err(format!("round {round}: lost wakeup on {}", receiver.port()));
                }
            }
            call("unmask", receiver.unmask())?;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "XENTEST OUT evtchn ping-pong {ROUNDS} round trips, 0 lost, {} ns per round trip",
        elapsed.as_nanos() / u128::from(ROUNDS)
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// A tokio loopback: per-port waits, the stream, and cancellation.
fn tokio_loopback(_: &Privcmd) -> Result<(), String> {
    runtime()?.block_on(async {
        let ch = call("open", TokioEventChannel::open())?;
        let a = call("alloc_unbound", ch.alloc_unbound(DOM0))?;
        let b = call("bind_interdomain", ch.bind_interdomain(DOM0, a.port()))?;
        // The pending-after-bind event.
        timeout(b.wait()).await?;
        for _ in 0..100 {
            call("notify", b.notify())?;
            timeout(a.wait()).await?;
            call("notify", a.notify())?;
            timeout(b.wait()).await?;
        }
        // Cancellation: a wait dropped before its event loses nothing.
        let cancelled = tokio::time::timeout(Duration::from_millis(50), a.wait()).await;
        if cancelled.is_ok() {
            return Err("a wait completed without a notification".into());
        }
        call("notify", b.notify())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        timeout(a.wait()).await?;
        Ok(())
    })
}

pub(crate) async fn timeout(
    wait: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(), String> {
    use std::future::Future;
    use std::task::Poll;

    // The deadline is looked at before the future: `tokio::time::timeout` polls
    // the future once more when its timer fires, which turns a lost wakeup into
    // a stall that the future's own `read` then ends, and the case would pass.
    let lost = || Poll::Ready(Err("lost wakeup: no delivery within 5 s".to_string()));
    let mut wait = std::pin::pin!(wait);
    let mut deadline = std::pin::pin!(tokio::time::sleep(PATIENCE));
    std::future::poll_fn(|cx| {
        if deadline.is_elapsed() {
            return lost();
        }
        match wait.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(call("wait", result)),
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => lost(),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// 1000 ports, one task awaiting each, on one fd and one thread.
fn tokio_thousand_ports(_: &Privcmd) -> Result<(), String> {
    runtime()?.block_on(async {
        let ch = Arc::new(call("open", TokioEventChannel::open())?);
        let mut pairs = Vec::new();
        for _ in 0..500 {
            let a = call("alloc_unbound", ch.alloc_unbound_raw(DOM0))?;
            let b = call("bind_interdomain", ch.bind_interdomain_raw(DOM0, a))?;
            pairs.push((
                BoundPort::from_raw(Arc::clone(&ch), a),
                BoundPort::from_raw(Arc::clone(&ch), b),
            ));
        }
        for (_, b) in &pairs {
            timeout(b.wait()).await?;
        }
        let mut tasks = Vec::new();
        for (a, b) in &pairs {
            for port in [a.port(), b.port()] {
                let ch = Arc::clone(&ch);
                tasks.push(tokio::spawn(
                    async move { timeout(ch.wait_port(port)).await },
                ));
            }
        }
        tokio::task::yield_now().await;
        let mut senders: Vec<Port> = pairs
            .iter()
            .flat_map(|(a, b)| [a.port(), b.port()])
            .collect();
        shuffle(&mut senders, 0x2545_f491_4f6c_dd1d);
        for port in senders {
            call("notify", ch.notify(port))?;
        }
        for task in tasks {
            task.await.map_err(|e| format!("task: {e}"))??;
        }
        Ok(())
    })
}

/// Overflow under tokio: provoked while no future polls the fd, then the
/// next wait reads EFBIG, resets, and gets the resync of every bound port.
fn tokio_overflow(_: &Privcmd) -> Result<(), String> {
    runtime()?.block_on(async {
        let ch = call("open", TokioEventChannel::open())?;
        let a = call("alloc_unbound", ch.alloc_unbound(DOM0))?;
        let b = call("bind_interdomain", ch.bind_interdomain(DOM0, a.port()))?;
        timeout(b.wait()).await?;
        // Behind the handle's back: queue the receiver many times.
        provoke_overflow(ch.device(), a.port(), b.port())?;
        timeout(a.wait()).await?;
        if ch.device().overflows() != 1 {
            return Err(format!("{} overflows recovered", ch.device().overflows()));
        }
        // Normal delivery resumes.
        timeout(b.wait()).await?;
        call("notify", b.notify())?;
        timeout(a.wait()).await?;
        Ok(())
    })
}

/// A waiter parked on the fd in its own task is woken by the overflow through
/// the fd's error readiness alone: once the ring overflowed the driver's `poll`
/// answers `POLLERR` without `POLLIN` (checked here), which a readable-only
/// watch never sees, and the waiter's task runs only when woken.
fn tokio_error_only_wake(_: &Privcmd) -> Result<(), String> {
    use std::future::{Future, poll_fn};
    use std::os::fd::AsFd;
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Poll;

    use nix::poll::{PollFd, PollFlags, PollTimeout};

    runtime()?.block_on(async {
        let ch = Arc::new(call("open", TokioEventChannel::open())?);
        let a = call("alloc_unbound", ch.alloc_unbound_raw(DOM0))?;
        let b = call("bind_interdomain", ch.bind_interdomain_raw(DOM0, a))?;
        let (a, b) = (
            BoundPort::from_raw(Arc::clone(&ch), a),
            BoundPort::from_raw(Arc::clone(&ch), b),
        );
        timeout(b.wait()).await?;
        let parked = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (ch, parked) = (Arc::clone(&ch), Arc::clone(&parked));
            let port = a.port();
            tokio::spawn(async move {
                let mut wait = pin!(ch.wait_port(port));
                // Drains the empty fd and parks on it; the task then runs only when woken.
                if let Poll::Ready(early) = poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await
                {
                    return Err(format!("ready before any send: {early:?}"));
                }
                // Seen by the test only once this task is parked again below.
                parked.store(true, Ordering::SeqCst);
                timeout(wait).await
            })
        };
        for _ in 0..100 {
            if parked.load(Ordering::SeqCst) {
                break;
            }
            tokio::task::yield_now().await;
        }
        if !parked.load(Ordering::SeqCst) {
            return Err("the waiter never parked".into());
        }
        // Synchronous: no task runs until the ring overflowed.
        provoke_overflow(ch.device(), a.port(), b.port())?;
        let mut fds = [PollFd::new(ch.device().as_fd(), PollFlags::POLLIN)];
        call(
            "poll",
            nix::poll::poll(&mut fds, PollTimeout::ZERO).map_err(|errno| Error::Os {
                operation: "poll",
                errno: xen_evtchn::Errno::from_raw(errno as i32),
            }),
        )?;
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents != PollFlags::POLLERR {
            return Err(format!("the fd polls {revents:?}, not POLLERR alone"));
        }
        waiter.await.map_err(|e| format!("waiter: {e}"))??;
        match ch.device().overflows() {
            1 => Ok(()),
            n => Err(format!("{n} overflows recovered, expected 1")),
        }
    })
}
