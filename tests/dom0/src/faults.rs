//! `xen-dom0-tests domu-faults <domu options>`: the fault table, with a freestanding domU that
//! runs the exchange's first steps ([`exchange`]: it publishes a port and a granted page, then
//! waits for dom0's event).
//!
//! Each fault prints `fault <name> expected=<…> observed=<…>` and is a case of its own:
//!
//! - `fault_domu_destroyed`: dom0 holds an interdomain port bound to the domU's, a gntdev
//!   mapping of its page and a xenstore watch on its home, writes into the page and notifies it,
//!   then `xl destroy`s it. Expected: the watch fires and the home is gone, notify and close
//!   answer (Xen keeps dom0's end as an unbound port), the page stays readable until unmapped,
//!   unmap succeeds; then dom0's open fds, the device's bound ports and its gntdev mappings are
//!   back to what they were before, and the domain is gone from `xl list`.
//! - `fault_evtchn_overflow`: 1100 loopback pairs signalled while nothing reads (more than the
//!   driver's first ring page holds: Linux grows the ring with the ports bound), then a handle's
//!   ring overflowed on purpose (a port re-armed before it is read, under 64 waiting tasks).
//!   Expected: every signalled port delivered to its waiter, the overflow recovered.
//! - `fault_xenstored_restarted` (last: restarting xenstored loses its state): xenstored is
//!   killed under an async client with a watch and a sync client. Expected: each gets a typed
//!   error within 5 s (no hang); a xenstored started again serves a new client.

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_core::Stream;
use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{AsyncEventChannel, DomId, EventChannel, Port};
use xen_grant::GrantRef;
use xen_grant::linux::Gntdev;
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall_privcmd::Privcmd;
use xen_store::tokio::{AsyncClient, AsyncStore};
use xen_store::{Client, ErrorKind, Store};
use xen_testbed_protocol::{Reporter, Stdout, exchange};

use crate::domu::{Domain, READY_TIMEOUT, Spec, Steps};
use crate::run_tool;
use crate::stress::{PATIENCE, deadline};

/// `domu-faults`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let spec = match Spec::parse_for("domu-faults", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let domain = steps.step("xl_create", |_| Domain::create(&spec));
    let ready = steps.step("domu_ready", |_| {
        let domain = domain.as_ref().ok_or("no domU")?;
        domain.unpause()?;
        domain.wait_for_key(exchange::READY, "1", READY_TIMEOUT)
    });
    // The faults run whatever failed before: each is independent of the others.
    steps.failed = None;
    steps.step("fault_domu_destroyed", |out| {
        let (Some(domain), Some(()), Ok(runtime)) = (&domain, ready, &runtime) else {
            return Err("no domU ready".into());
        };
        let result = runtime.block_on(domu_destroyed(domain));
        table(out, "domu_destroyed", DESTROYED_EXPECTED, result)
    });
    // Whatever happened, the domU does not outlive its fault (and xenstored, restarted below,
    // would no longer know it).
    if let Some(domain) = &domain {
        domain.destroy();
    }
    steps.failed = None;
    steps.step("fault_evtchn_overflow", |out| {
        table(out, "evtchn_overflow", OVERFLOW_EXPECTED, evtchn_overflow())
    });
    steps.failed = None;
    steps.step("fault_xenstored_restarted", |out| {
        let runtime = runtime
            .as_ref()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let result = runtime.block_on(xenstored_restarted());
        table(out, "xenstored_restarted", RESTARTED_EXPECTED, result)
    });
    ExitCode::from(steps.reporter.done().exit_code())
}

/// Prints the table line of fault `name`; the observation must equal `expected`.
fn table(
    out: &mut Reporter<Stdout>,
    name: &str,
    expected: &str,
    observed: Result<String, String>,
) -> Result<(), String> {
    let observed = observed.unwrap_or_else(|error| format!("error:{error}"));
    let observed = observed.replace(' ', "_");
    out.out(format_args!(
        "fault {name} expected={expected} observed={observed}"
    ));
    if observed == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, observed {observed}"))
    }
}

/// The open fds of this process.
fn open_fds() -> Result<usize, String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count())
        .map_err(|e| format!("/proc/self/fd: {e}"))
}

/// The gntdev mappings of this process.
fn gntdev_mappings() -> Result<usize, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("maps: {e}"))?;
    Ok(maps.lines().filter(|l| l.contains("gntdev")).count())
}

/// The next event of `watch`, within [`PATIENCE`].
async fn next_event(watch: &mut xen_store::tokio::Watch) -> Result<(), String> {
    let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *watch).poll_next(cx));
    match deadline(next).await {
        Some(Some(Ok(_))) => Ok(()),
        Some(Some(Err(e))) => Err(format!("watch: {e}")),
        Some(None) => Err("watch ended".into()),
        None => Err("watch: no event within 5 s".into()),
    }
}

const DESTROYED_EXPECTED: &str = "watch_fired,home_gone,notify_ok,port_unbound,page_readable,closed,unmapped,fds_back,ports_back,maps_back,domain_gone";

/// See the module documentation.
async fn domu_destroyed(domain: &Domain) -> Result<String, String> {
    let mut observed = Vec::new();
    let privcmd = Privcmd::open().map_err(|e| format!("privcmd: {e}"))?;
    let (fds, maps) = (open_fds()?, gntdev_mappings()?);
    let domid = DomId::new(domain.domid as u16);
    let home = format!("/local/domain/{}", domain.domid);
    let store = AsyncClient::connect()
        .await
        .map_err(|e| format!("xenstored: {e}"))?;
    let mut watch = deadline(store.watch(&home))
        .await
        .ok_or("watch: no reply")?
        .map_err(|e| format!("watch {home}: {e}"))?;
    next_event(&mut watch).await?; // Fired once when set.
    let dev = EvtchnDevice::open().map_err(|e| format!("evtchn: {e}"))?;
    let ports_before = dev.bound_ports().len();
    let remote = Port::new(domain.read_number(exchange::EVTCHN_PORT)?);
    let local = dev
        .bind_interdomain_raw(domid, remote)
        .map_err(|e| format!("bind_interdomain: {e}"))?;
    let gntdev = Gntdev::open().map_err(|e| format!("gntdev: {e}"))?;
    let reference = domain.read_number(exchange::GRANT_REF)?;
    let mapping = gntdev
        .map(domid, &[GrantRef::new(reference)], false)
        .map_err(|e| format!("map grant {reference}: {e}"))?;
    let mem = mapping.mem().ok_or("the mapping is read-only")?;
    mem.write(exchange::DOM0_TEXT_OFFSET, exchange::DOM0_TEXT.as_bytes())
        .map_err(|e| format!("write the page: {e}"))?;
    dev.notify(local).map_err(|e| format!("notify: {e}"))?;
    // Mid-exchange: the domU may be answering right now.
    destroy(&domain.name)?;
    // A clean notification: the watch fires, the home is gone.
    let gone_by = Instant::now() + PATIENCE;
    loop {
        next_event(&mut watch).await?;
        if !observed.contains(&"watch_fired") {
            observed.push("watch_fired");
        }
        match deadline(store.read(&home)).await {
            Some(Err(e)) if e.kind() == ErrorKind::NotFound => break observed.push("home_gone"),
            Some(Err(e)) => return Err(format!("read {home}: {e}")),
            None => return Err(format!("read {home}: no reply")),
            Some(Ok(_)) if Instant::now() > gone_by => break observed.push("home_stays"),
            Some(Ok(_)) => {}
        }
    }
    drop(watch);
    observed.push(match dev.notify(local) {
        Ok(()) => "notify_ok",
        Err(_) => "notify_typed_error",
    });
    observed.push(
        match privcmd.evtchn_status(DomId::SELF, local).map(|s| s.state) {
            Ok(ChannelState::Unbound { .. }) => "port_unbound",
            Ok(ChannelState::Closed) => "port_closed_by_xen",
            Ok(_) => "port_still_interdomain",
            Err(_) => "port_status_error",
        },
    );
    let mut byte = [0u8; 1];
    observed.push(match mapping.read(0, &mut byte) {
        Ok(()) => "page_readable",
        Err(_) => "page_unreadable",
    });
    observed.push(match dev.unbind_raw(local) {
        Ok(())
            if matches!(
                privcmd.evtchn_status(DomId::SELF, local).map(|s| s.state),
                Ok(ChannelState::Closed)
            ) =>
        {
            "closed"
        }
        Ok(()) => "close_left_it_open",
        Err(_) => "close_failed",
    });
    observed.push(match mapping.unmap() {
        Ok(()) => "unmapped",
        Err(_) => "unmap_failed",
    });
    let ports_after = dev.bound_ports().len();
    let leaked = gntdev.leaked();
    drop(dev);
    drop(gntdev);
    drop(store);
    let fds_after = open_fds()?;
    if fds_after != fds {
        println!("XENTEST OUT fault domu_destroyed: {fds} fds before, {fds_after} after");
    }
    observed.push(if fds_after == fds {
        "fds_back"
    } else {
        "fds_leaked"
    });
    observed.push(if ports_after == ports_before {
        "ports_back"
    } else {
        "ports_leaked"
    });
    observed.push(if gntdev_mappings()? == maps && leaked == 0 {
        "maps_back"
    } else {
        "maps_leaked"
    });
    // Once its page is unmapped, the dying domain is released.
    let start = Instant::now();
    let gone = loop {
        let listed = run_tool("xl", &["list"])?;
        if !listed
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&*domain.domid.to_string()))
        {
            break true;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    observed.push(if gone {
        "domain_gone"
    } else {
        "domain_lingers"
    });
    Ok(observed.join(","))
}

/// `xl destroy name`, killed after 20 s.
fn destroy(name: &str) -> Result<(), String> {
    let mut child = Command::new("xl")
        .args(["destroy", name])
        .spawn()
        .map_err(|e| format!("xl destroy: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("xl destroy: {status}")),
            Ok(None) if start.elapsed() > Duration::from_secs(20) => {
                // Reaped, so that no zombie is left behind.
                let _ = child.kill();
                let _ = child.wait();
                return Err("xl destroy hung for 20 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("xl destroy: {e}")),
        }
    }
}

const OVERFLOW_EXPECTED: &str = "1100_of_1100_delivered,overflow_recovered,64_of_64_delivered";

/// Pairs signalled while nothing reads.
const SIGNALLED_PAIRS: usize = 1100;
/// Tasks waiting while the ring overflows.
const OVERFLOW_WAITERS: usize = 64;

/// Binds `count` loopback pairs on `ch` and awaits each bound end's bind-pending event.
async fn pairs(ch: &TokioEventChannel, count: usize) -> Result<Vec<(Port, Port)>, String> {
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let a = ch
            .alloc_unbound_raw(DomId::new(0))
            .map_err(|e| format!("alloc_unbound: {e}"))?;
        let b = ch
            .bind_interdomain_raw(DomId::new(0), a)
            .map_err(|e| format!("bind_interdomain: {e}"))?;
        pairs.push((a, b));
    }
    for &(_, b) in &pairs {
        match deadline(ch.wait_port(b)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(format!("bind-pending event of {b}: {e}")),
            None => return Err(format!("bind-pending event of {b}: lost")),
        }
    }
    Ok(pairs)
}

/// Awaits every `a` of `pairs` in its own task; how many were delivered.
async fn await_all(ch: &Arc<TokioEventChannel>, pairs: &[(Port, Port)]) -> usize {
    let tasks: Vec<_> = pairs
        .iter()
        .map(|&(a, _)| {
            let ch = Arc::clone(ch);
            tokio::spawn(async move { matches!(deadline(ch.wait_port(a)).await, Some(Ok(()))) })
        })
        .collect();
    let mut delivered = 0;
    for task in tasks {
        delivered += usize::from(task.await.unwrap_or(false));
    }
    delivered
}

/// See the module documentation. On one thread: while the test signals, no task can read.
fn evtchn_overflow() -> Result<String, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?
        .block_on(async {
            let mut observed = Vec::new();
            // Many ports signalled while nothing reads.
            let ch = Arc::new(TokioEventChannel::open().map_err(|e| format!("open: {e}"))?);
            let signalled = pairs(&ch, SIGNALLED_PAIRS).await?;
            for &(_, b) in &signalled {
                ch.notify(b).map_err(|e| format!("notify {b}: {e}"))?;
            }
            let delivered = await_all(&ch, &signalled).await;
            observed.push(format!("{delivered}_of_{SIGNALLED_PAIRS}_delivered"));
            drop(ch);
            // An overflow forced while tasks wait: one port re-armed before it is read, again
            // and again, until the driver reports the overflow.
            let ch = Arc::new(TokioEventChannel::open().map_err(|e| format!("open: {e}"))?);
            let waiting = pairs(&ch, OVERFLOW_WAITERS).await?;
            let (x, y) = pairs(&ch, 1).await?[0];
            let waiters = {
                let (ch, waiting) = (Arc::clone(&ch), waiting.clone());
                tokio::spawn(async move { await_all(&ch, &waiting).await })
            };
            // Let the waiters park on the fd.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            for &(_, b) in &waiting {
                ch.notify(b).map_err(|e| format!("notify {b}: {e}"))?;
            }
            let overflowed = overflow(ch.device(), x, y)?;
            let delivered = waiters.await.map_err(|e| format!("waiters: {e}"))?;
            observed.push(match (overflowed, ch.device().overflows()) {
                (true, 1..) => "overflow_recovered".to_string(),
                (true, 0) => "overflow_never_read".to_string(),
                (false, _) => "no_overflow".to_string(),
            });
            observed.push(format!("{delivered}_of_{OVERFLOW_WAITERS}_delivered"));
            Ok(observed.join(","))
        })
}

/// Signals `y` (queuing `x`) and re-arms `x` before anyone reads it, until the driver's ring
/// overflows (its `poll` answers `POLLERR`); whether it did within 20000 tries.
fn overflow(dev: &EvtchnDevice, x: Port, y: Port) -> Result<bool, String> {
    use std::os::fd::AsFd;

    use nix::poll::{PollFd, PollFlags, PollTimeout};
    for _ in 0..20_000 {
        dev.notify(y).map_err(|e| format!("notify: {e}"))?;
        std::thread::sleep(Duration::from_micros(100));
        dev.unmask(x).map_err(|e| format!("unmask: {e}"))?;
        let mut fds = [PollFd::new(dev.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::ZERO).map_err(|e| format!("poll: {e}"))?;
        if fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

const RESTARTED_EXPECTED: &str =
    "async_read_typed_error,async_watch_ended,sync_read_typed_error,restarted,new_client_works";

/// See the module documentation.
async fn xenstored_restarted() -> Result<String, String> {
    let mut observed = Vec::new();
    let key = "/local/domain/0/data/fault";
    let client = AsyncClient::connect()
        .await
        .map_err(|e| format!("xenstored: {e}"))?;
    deadline(client.write(key, b"before"))
        .await
        .ok_or("write: no reply")?
        .map_err(|e| format!("write {key}: {e}"))?;
    let mut watch = deadline(client.watch(key))
        .await
        .ok_or("watch: no reply")?
        .map_err(|e| format!("watch {key}: {e}"))?;
    next_event(&mut watch).await?;
    let local = xen_store::unix::Local::socket().map_err(|e| format!("sync client: {e}"))?;
    let mut sync = Client::new(local);
    sync.read(key)
        .map_err(|e| format!("sync read {key}: {e}"))?;
    // The sync client blocks in its read: on a thread of its own, answered within 5 s or hung.
    let (answer, answered) = std::sync::mpsc::channel();
    let pid = std::fs::read_to_string("/var/run/xenstored.pid")
        .map_err(|e| format!("xenstored.pid: {e}"))?;
    let pid = pid.trim().to_string();
    run_tool("kill", &["-KILL", &pid])?;
    std::thread::spawn(move || {
        let _ = answer.send(sync.read(key).map(drop));
    });
    observed.push(match deadline(client.read(key)).await {
        Some(Err(e)) if e.kind() == ErrorKind::Disconnected => "async_read_typed_error".to_string(),
        Some(Err(e)) => format!("async_read_error({:?})", e.kind()),
        Some(Ok(_)) => "async_read_answered".into(),
        None => "async_read_hung".into(),
    });
    let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut watch).poll_next(cx));
    observed.push(match deadline(next).await {
        Some(Some(Err(_)) | None) => "async_watch_ended".to_string(),
        Some(Some(Ok(_))) => "async_watch_fired".into(),
        None => "async_watch_hung".into(),
    });
    // The socket may fail the write or end the read: either way the daemon is gone, and both
    // clients say so with the same kind.
    observed.push(match answered.recv_timeout(PATIENCE) {
        Ok(Err(e)) => {
            println!(
                "XENTEST OUT fault xenstored_restarted: the sync client's read: {e} ({:?})",
                e.kind()
            );
            if e.kind() == ErrorKind::Disconnected {
                "sync_read_typed_error".to_string()
            } else {
                format!("sync_read_error({:?})", e.kind())
            }
        }
        Ok(Ok(())) => "sync_read_answered".into(),
        Err(_) => "sync_read_hung".into(),
    });
    drop(watch);
    drop(client);
    // Started again as the toolstack started it; it listens once its socket accepts.
    run_tool("xenstored", &["--pid-file", "/var/run/xenstored.pid"])?;
    let start = Instant::now();
    let fresh = loop {
        match AsyncClient::connect().await {
            Ok(client) => break client,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("xenstored restarted: no socket after 10 s: {e}")),
        }
    };
    observed.push("restarted".into());
    let works = async {
        fresh.write(key, b"after").await?;
        fresh.read(key).await
    };
    observed.push(match deadline(works).await {
        Some(Ok(value)) if value == b"after" => "new_client_works".to_string(),
        Some(Ok(value)) => format!("new_client_read({})", String::from_utf8_lossy(&value)),
        Some(Err(e)) => format!("new_client_error({:?})", e.kind()),
        None => "new_client_hung".into(),
    });
    Ok(observed.join(","))
}
