//! The Linux domU run ([`xen_testbed_protocol::exchange::linux`]): `xen-dom0-tests linux-domu`
//! runs in a Linux domU and exercises xen-store, xen-evtchn (device and tokio backends),
//! xen-grant's gntalloc and the privcmd backend on that domU's devices; `xen-dom0-tests
//! linux-domu-peer <domU options>` creates the domU in dom0 and plays the other side.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{DomId, EventChannel};
use xen_grant::linux::{Gntalloc, Gntdev};
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall::{Errno, Error as XenError, Port};
use xen_hypercall_privcmd::Privcmd;
use xen_store::unix::Local;
use xen_store::{Client, ErrorKind, Store, WatchId};
use xen_testbed_protocol::exchange::{self, linux};
use xen_testbed_protocol::{Reporter, Stdout};
use xen_vchan::linux::{Error as VchanError, conventional_path};

use crate::devices::{GrantMapping, InterdomainPort};
use crate::domu::{ConsoleForwarder, Domain, Spec, Steps, powered_off};
use crate::{run_tool, vchan};

/// How long either side waits for the other.
const WAIT: Duration = Duration::from_secs(linux::WAIT_SECONDS);
/// How long dom0 waits for the domU's program to start (the kernel boots and loads its
/// modules first: 12-15 s measured alone, 62 s on a loaded machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// Each side's events on one channel: it sends and receives this many.
const EVENTS: u32 = linux::ROUND_TRIPS;

/// The domU's xenstore connection over `/dev/xen/xenbus`, with the watch on [`linux::POKE`]
/// through which it waits for dom0.
struct DomuStore {
    client: Client<Local>,
    poke: Option<WatchId>,
}

impl DomuStore {
    fn write(&mut self, key: &str, value: impl ToString) -> Result<(), String> {
        self.client
            .write(key, value.to_string().as_bytes())
            .map_err(|e| format!("write {key}: {e}"))
    }

    fn read(&mut self, key: &str) -> Result<String, String> {
        self.client
            .read_string(key)
            .map_err(|e| format!("read {key}: {e}"))
    }

    /// Waits until [`linux::POKE`] reads `want`: reads, then sleeps on the watch, whose events
    /// queue from its registration on, so a write between the read and the sleep wakes it.
    fn wait_poke(&mut self, want: &str) -> Result<(), String> {
        let id = self.poke.ok_or("no watch on the poke key")?;
        loop {
            if self
                .client
                .read_string(linux::POKE)
                .is_ok_and(|v| v == want)
            {
                return Ok(());
            }
            self.client
                .next_event_of(id)
                .map_err(|e| format!("waiting for {} = {want:?}: {e}", linux::POKE))?;
        }
    }
}

/// `xen-dom0-tests linux-domu`: the domU's half; exits with failure if a case failed.
pub(crate) fn domu() -> ExitCode {
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let store = steps.step("linux_domu_store_own_home", |out| {
        let local = Local::xenbus().map_err(|e| format!("open /dev/xen/xenbus: {e}"))?;
        let mut store = DomuStore {
            client: Client::from_local(local),
            poke: None,
        };
        let domid = store.read("domid")?;
        store.write(linux::WRITTEN, linux::WRITTEN_TEXT)?;
        let back = store.read(linux::WRITTEN)?;
        if back != linux::WRITTEN_TEXT {
            return Err(format!("{} read back as {back:?}", linux::WRITTEN));
        }
        store.write(linux::DOMID, &domid)?;
        out.out(format_args!(
            "domid {domid}: wrote and read back {} over /dev/xen/xenbus",
            linux::WRITTEN
        ));
        Ok(store)
    });
    let Some(mut store) = store else {
        return finish(steps);
    };
    steps.step("linux_domu_store_dom0_home_eacces", |out| {
        let read = store.client.read_string("/local/domain/0/name");
        expect_eacces("read /local/domain/0/name", read)?;
        let write = store
            .client
            .write("/local/domain/0/data/linux-domu", b"intruder");
        expect_eacces("write /local/domain/0/data/linux-domu", write)?;
        store.write(linux::READY, 1)?;
        out.out(format_args!(
            "dom0's home: read and write refused with EACCES"
        ));
        Ok(())
    });
    steps.step("linux_domu_store_watch_fires", |out| {
        let id = store
            .client
            .watch(linux::POKE)
            .map_err(|e| format!("watch {}: {e}", linux::POKE))?;
        // xenstored fires every new watch once.
        store
            .client
            .next_event_of(id)
            .map_err(|e| format!("the watch's first event: {e}"))?;
        store.poke = Some(id);
        store.write(linux::WATCHING, 1)?;
        store.wait_poke(linux::POKE_TEXT)?;
        out.out(format_args!("the watch fired on dom0's write"));
        Ok(())
    });
    let device_port = steps.step("linux_domu_evtchn_device_ping_pong", |out| {
        let mut port = InterdomainPort::alloc_unbound(0)?;
        store.write(linux::DEVICE_PORT, port.port().raw())?;
        store.wait_poke(linux::STEP_BOUND)?;
        let mut received = 0;
        for sent in 1..=EVENTS {
            port.notify()?;
            port.wait(WAIT)
                .map_err(|e| format!("after {sent} sent, {received} received: {e}"))?;
            received += 1;
        }
        if port.wait(Duration::from_millis(200)).is_ok() {
            return Err("an event past the last round trip".into());
        }
        out.out(format_args!(
            "device backend, {}: {EVENTS} events sent, {received} received",
            port.port()
        ));
        Ok(port)
    });
    steps.step("linux_domu_privcmd_allowed", |out| {
        let device_port = device_port.as_ref().ok_or("no port")?.port();
        let h = Privcmd::open().map_err(|e| format!("open privcmd: {e}"))?;
        let version = h.xen_version().map_err(|e| format!("xen_version: {e:?}"))?;
        h.sched_yield()
            .map_err(|e| format!("sched_op yield: {e:?}"))?;
        let status = h
            .evtchn_status(DomId::SELF, device_port)
            .map_err(|e| format!("evtchn_status of {device_port}: {e:?}"))?;
        let dom0_port: u32 = store
            .read(linux::DOM0_PORT)?
            .parse()
            .map_err(|e| format!("{}: {e}", linux::DOM0_PORT))?;
        let want = ChannelState::Interdomain {
            dom: DomId::new(0),
            port: Port::new(dom0_port),
        };
        if status.state != want {
            return Err(format!("{device_port}: {status:?}, expected {want:?}"));
        }
        store.write(
            linux::XEN_VERSION,
            format!("{}.{}", version.major, version.minor),
        )?;
        out.out(format_args!(
            "Xen {version}; yielded; {device_port} is interdomain with dom0's port {dom0_port}"
        ));
        Ok(())
    });
    steps.step("linux_domu_privcmd_refused", |out| {
        let h = Privcmd::open().map_err(|e| format!("open privcmd: {e}"))?;
        expect_xen_eperm("XENVER_build_id", h.build_id())?;
        expect_xen_eperm(
            "sysctl readconsole",
            h.readconsole(&mut [0; 64], None, false),
        )?;
        let dom0_port: u32 = store
            .read(linux::DOM0_PORT)?
            .parse()
            .map_err(|e| format!("{}: {e}", linux::DOM0_PORT))?;
        expect_xen_eperm(
            "evtchn_status of dom0's port",
            h.evtchn_status(DomId::new(0), Port::new(dom0_port)),
        )?;
        // xen_version answers a domU's commandline query with a placeholder, not an error.
        let line = h
            .commandline()
            .map_err(|e| format!("XENVER_commandline: {e:?}"))?;
        if line.to_str() != Ok("<denied>") {
            return Err(format!(
                "XENVER_commandline: {line:?}, expected \"<denied>\""
            ));
        }
        out.out(format_args!(
            "build_id, readconsole, dom0's port status: EPERM; commandline: <denied>"
        ));
        Ok(())
    });
    drop(device_port);
    steps.step("linux_domu_evtchn_tokio_ping_pong", |out| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        runtime.block_on(async {
            let channel = TokioEventChannel::open().map_err(|e| format!("open: {e}"))?;
            let port = channel
                .alloc_unbound(DomId::new(0))
                .map_err(|e| format!("alloc_unbound: {e}"))?;
            store.write(linux::TOKIO_PORT, port.port().raw())?;
            store.wait_poke(linux::STEP_BOUND_TOKIO)?;
            let mut received = 0;
            for sent in 1..=EVENTS {
                port.notify().map_err(|e| format!("notify: {e}"))?;
                tokio::time::timeout(WAIT, port.wait())
                    .await
                    .map_err(|_| format!("after {sent} sent, {received} received: no event"))?
                    .map_err(|e| format!("wait: {e}"))?;
                received += 1;
            }
            if tokio::time::timeout(Duration::from_millis(200), port.wait())
                .await
                .is_ok()
            {
                return Err("an event past the last round trip".into());
            }
            out.out(format_args!(
                "tokio backend, {}: {EVENTS} events sent, {received} received",
                port.port()
            ));
            Ok(())
        })
    });
    let gntalloc = Gntalloc::open().map_err(|e| format!("open /dev/xen/gntalloc: {e}"));
    steps.step("linux_domu_gntalloc_share", |out| {
        let gntalloc = gntalloc.as_ref().map_err(Clone::clone)?;
        let share = gntalloc
            .share(DomId::new(0), 1, false)
            .map_err(|e| format!("share: {e}"))?;
        let mem = share.mem();
        mem.write(0, exchange::DOMU_TEXT.as_bytes())
            .map_err(|e| format!("write: {e:?}"))?;
        let reference = share.grefs()[0];
        store.write(linux::GRANT_REF, reference.0)?;
        store.wait_poke(linux::STEP_MAPPED)?;
        let mut text = vec![0; exchange::DOM0_TEXT.len()];
        mem.read(exchange::DOM0_TEXT_OFFSET, &mut text)
            .map_err(|e| format!("read: {e:?}"))?;
        if text != exchange::DOM0_TEXT.as_bytes() {
            return Err(format!(
                "dom0's text reads {:?}",
                String::from_utf8_lossy(&text)
            ));
        }
        store.write(linux::GRANT_READ, 1)?;
        store.wait_poke(linux::STEP_UNMAPPED)?;
        drop(share);
        out.out(format_args!(
            "shared grant ref {}; dom0 mapped it, both texts crossed",
            reference.0
        ));
        Ok(())
    });
    steps.step("linux_domu_gntalloc_released", |out| {
        let gntalloc = gntalloc.as_ref().map_err(Clone::clone)?;
        if gntalloc.leaked() != 0 {
            return Err(format!("{} pages leaked", gntalloc.leaked()));
        }
        store.write(linux::GRANT_RELEASED, 1)?;
        out.out(format_args!("the share is released, nothing leaked"));
        Ok(())
    });
    for run in linux::VCHAN_RUNS {
        steps.step(run.domu_case, |out| vchan_domu(&mut store, run, out));
    }
    finish(steps)
}

/// The domU's side of `run`: once dom0 poked its step, runs the C peer (`libxenvchan-peer`)
/// against dom0's channel, or offers one to dom0 with it, until the peer ends.
fn vchan_domu(
    store: &mut DomuStore,
    run: &linux::VchanRun,
    out: &mut Reporter<Stdout>,
) -> Result<(), String> {
    let domid: u16 = store
        .read("domid")?
        .parse()
        .map_err(|e| format!("domid: {e}"))?;
    store.wait_poke(run.step)?;
    let path = vchan_path(run, domid);
    let total = linux::VCHAN_BYTES;
    // The C peer receives first (our side sends first) in a run both ways.
    let recv = if run.both_ways { total } else { 0 };
    let (peer, lines) = if run.domu_serves {
        let peer = vchan::c_peer_of(
            DomId::new(0),
            "server",
            &path,
            run.ring_sizes,
            recv,
            total,
            run.chunk,
            0,
        )?;
        store.write(linux::VCHAN_OFFERED, &path)?;
        peer
    } else {
        vchan::c_peer_of(
            DomId::new(0),
            "client",
            &path,
            (0, 0),
            recv,
            total,
            run.chunk,
            run.die_after,
        )?
    };
    let line = vchan::finish(peer, lines, run.die_after == 0)?;
    let role = if run.domu_serves { "server" } else { "client" };
    out.out(format_args!(
        "libxenvchan {role} of {path}: {}",
        line.trim()
    ));
    Ok(())
}

/// The xenstore directory of `run`'s channel, under its server's home (domain `domid` is the
/// domU).
fn vchan_path(run: &linux::VchanRun, domid: u16) -> String {
    if run.domu_serves {
        conventional_path(&format!("/local/domain/{domid}"), DomId::new(0), run.port)
    } else {
        conventional_path("/local/domain/0", DomId::new(domid), run.port)
    }
}

fn finish(steps: Steps) -> ExitCode {
    let summary = steps.reporter.done();
    ExitCode::from(summary.exit_code())
}

fn expect_eacces<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, xen_store::Error>,
) -> Result<(), String> {
    match result {
        Err(e) if e.kind() == ErrorKind::PermissionDenied && e.errno() == Some(Errno::EACCES) => {
            Ok(())
        }
        other => Err(format!("{what}: {other:?}, expected EACCES")),
    }
}

fn expect_xen_eperm<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, XenError>,
) -> Result<(), String> {
    match result {
        Err(XenError::Xen(Errno::EPERM)) => Ok(()),
        other => Err(format!("{what}: {other:?}, expected Err(Xen(EPERM))")),
    }
}

/// `xen-dom0-tests linux-domu-peer <domU options>`: creates the Linux domU and plays dom0's
/// side; exits with failure if a case failed.
pub(crate) fn dom0(args: &[String]) -> ExitCode {
    let spec = match Spec::parse_for("linux-domu-peer", args) {
        Ok(spec) => spec,
        Err(usage) => return usage,
    };
    let mut steps = Steps {
        reporter: Reporter::new(Stdout),
        failed: None,
    };
    let created = std::time::Instant::now();
    let domain = steps.step("linux_domu_created", |out| {
        let domain = Domain::create(&spec)?;
        domain.unpause()?;
        out.out(format_args!(
            "xl created Linux domU {} (domid {})",
            domain.name, domain.domid
        ));
        Ok(domain)
    });
    let Some(domain) = domain else {
        for case in &linux::DOM0_CASES[1..] {
            steps.step(case, |_| Ok(()));
        }
        return finish(steps);
    };
    let forwarder = ConsoleForwarder::start(&domain.name);
    dom0_steps(&mut steps, &domain, created);
    powered_off(&mut steps, &domain);
    forwarder.finish();
    steps.reporter.out(format_args!(
        "the Linux domU's run took {:.1} s from xl create to its poweroff",
        created.elapsed().as_secs_f64()
    ));
    finish(steps)
}

/// dom0's steps between the domU's creation and its poweroff.
fn dom0_steps(steps: &mut Steps, domain: &Domain, created: std::time::Instant) {
    steps.step("linux_domu_ready", |out| {
        domain.wait_for_key(linux::READY, "1", BOOT_TIMEOUT)?;
        out.out(format_args!(
            "the domU's program wrote {} {:.1} s after xl create began",
            linux::READY,
            created.elapsed().as_secs_f64()
        ));
        Ok(())
    });
    steps.step("linux_domu_store_oracle", |out| {
        let home = format!("/local/domain/{}", domain.domid);
        let written = run_tool("xenstore-read", &[&format!("{home}/{}", linux::WRITTEN)])?;
        if written.trim_end() != linux::WRITTEN_TEXT {
            return Err(format!("xenstore-read {}: {written:?}", linux::WRITTEN));
        }
        let domid = run_tool("xenstore-read", &[&format!("{home}/{}", linux::DOMID)])?;
        if domid.trim_end() != domain.domid.to_string() {
            return Err(format!("the domU read its domid as {domid:?}"));
        }
        out.out(format_args!(
            "xenstore-read agrees with what the domU wrote"
        ));
        Ok(())
    });
    steps.step("linux_domu_watch_poked", |_| {
        domain.wait_for_key(linux::WATCHING, "1", WAIT)?;
        domain.write(linux::POKE, linux::POKE_TEXT)
    });
    let device_port = steps.step("linux_domu_dom0_evtchn_device", |out| {
        let mut port = bind_domu_port(domain, linux::DEVICE_PORT)?;
        domain.write(linux::DOM0_PORT, &port.port().raw().to_string())?;
        domain.write(linux::POKE, linux::STEP_BOUND)?;
        let received = answer(&mut port)?;
        out.out(format_args!(
            "device run, {}: {received} events received, as many sent",
            port.port()
        ));
        Ok(port)
    });
    steps.step("linux_domu_dom0_xen_version", |_| {
        // The domU writes it after the status of its port: dom0 keeps its end bound until then.
        let seen = domain.wait_for_value(linux::XEN_VERSION, WAIT, |_| true)?;
        let want = std::env::var("XENTEST_XEN_VERSION").map_err(|_| "XENTEST_XEN_VERSION unset")?;
        if seen != want {
            return Err(format!(
                "the domU's xen_version is {seen}, dom0's Xen is {want}"
            ));
        }
        Ok(())
    });
    drop(device_port);
    steps.step("linux_domu_dom0_evtchn_tokio", |out| {
        let mut port = bind_domu_port(domain, linux::TOKIO_PORT)?;
        domain.write(linux::POKE, linux::STEP_BOUND_TOKIO)?;
        let received = answer(&mut port)?;
        out.out(format_args!(
            "tokio run, {}: {received} events received, as many sent",
            port.port()
        ));
        Ok(())
    });
    let reference = steps.step("linux_domu_dom0_gntdev_map", |out| {
        let reference = domain
            .wait_for_value(linux::GRANT_REF, WAIT, |v| v.parse::<u32>().is_ok())?
            .parse::<u32>()
            .map_err(|e| e.to_string())?;
        let mapping = GrantMapping::map(domain.domid, reference)?;
        let text = mapping.read(0, exchange::DOMU_TEXT.len())?;
        if text != exchange::DOMU_TEXT.as_bytes() {
            return Err(format!(
                "the shared page reads {:?}",
                String::from_utf8_lossy(&text)
            ));
        }
        mapping.write(exchange::DOM0_TEXT_OFFSET, exchange::DOM0_TEXT.as_bytes())?;
        domain.write(linux::POKE, linux::STEP_MAPPED)?;
        domain.wait_for_key(linux::GRANT_READ, "1", WAIT)?;
        mapping.unmap()?;
        domain.write(linux::POKE, linux::STEP_UNMAPPED)?;
        out.out(format_args!(
            "mapped grant ref {reference} of domain {}, read its text, wrote ours, unmapped",
            domain.domid
        ));
        Ok(reference)
    });
    steps.step("linux_domu_dom0_grant_gone", |out| {
        let reference = reference.ok_or("no reference")?;
        domain.wait_for_key(linux::GRANT_RELEASED, "1", WAIT)?;
        match GrantMapping::map(domain.domid, reference) {
            Ok(mapping) => {
                let _ = mapping.unmap();
                Err(format!(
                    "grant ref {reference} still maps after the domU released it"
                ))
            }
            Err(error) => {
                out.out(format_args!("mapping it again fails: {error}"));
                Ok(())
            }
        }
    });
    for run in linux::VCHAN_RUNS {
        let watchdog = vchan::watchdog(run.dom0_case);
        steps.step(run.dom0_case, |out| vchan_dom0(domain, run, out));
        drop(watchdog);
    }
}

/// dom0's side of `run`: offers the domU a channel with xen-vchan and pokes the step, or pokes
/// it and connects to the channel the domU's C server offers; then streams.
fn vchan_dom0(
    domain: &Domain,
    run: &linux::VchanRun,
    out: &mut Reporter<Stdout>,
) -> Result<(), String> {
    let domid = u16::try_from(domain.domid).map_err(|e| e.to_string())?;
    let path = vchan_path(run, domid);
    let started = Instant::now();
    if run.domu_serves {
        domain.write(linux::POKE, run.step)?;
        domain.wait_for_key(linux::VCHAN_OFFERED, &path, WAIT)?;
        let gntdev = Gntdev::open().map_err(|e| format!("open gntdev: {e}"))?;
        let mut vchan = vchan::our_client_of(&gntdev, DomId::new(domid), &path)?;
        let orders = vchan.orders();
        let done = vchan_stream(&mut vchan, run)?;
        out.out(format_args!(
            "our client of the domU's C server (orders {}/{}): {done} in {:.2} s",
            orders.left.get(),
            orders.right.get(),
            started.elapsed().as_secs_f64()
        ));
        return Ok(());
    }
    let gntalloc = Gntalloc::open().map_err(|e| format!("open gntalloc: {e}"))?;
    let (read_min, write_min) = run.ring_sizes;
    let mut vchan =
        vchan::our_server_for(&gntalloc, DomId::new(domid), &path, read_min, write_min)?;
    let orders = vchan.orders();
    domain.write(linux::POKE, run.step)?;
    let done = vchan_stream(&mut vchan, run)?;
    out.out(format_args!(
        "our server of the domU's C client (orders {}/{}): {done} in {:.2} s",
        orders.left.get(),
        orders.right.get(),
        started.elapsed().as_secs_f64()
    ));
    vchan.close().map_err(|e| format!("close: {e}"))?;
    vchan::check_removed(&path)
}

/// dom0's streaming in `run` (the C peer's side in [`vchan_domu`]); says what moved.
fn vchan_stream(
    vchan: &mut xen_vchan::linux::Vchan<'_, xen_vchan::linux::EvtchnDevice>,
    run: &linux::VchanRun,
) -> Result<String, String> {
    let total = linux::VCHAN_BYTES;
    if run.both_ways {
        vchan::exchange(vchan, total, run.chunk)?;
        return Ok(format!("{total} bytes each way"));
    }
    let got = vchan::receive(vchan, total)?;
    if run.die_after == 0 {
        if got != total {
            return Err(format!("received {got} of {total} bytes"));
        }
        return Ok(format!("{total} bytes from the C peer"));
    }
    // The C client sends until it exits: the end of the stream comes after its bytes, and a
    // write then fails (Linux in the domU clears `cli_live` and signals when its mapping goes).
    if got < run.die_after || got >= total {
        return Err(format!(
            "end of stream after {got} bytes; the client died after {}",
            run.die_after
        ));
    }
    match vchan.write(b"x") {
        Err(VchanError::Closed) => {}
        other => return Err(format!("a write to the dead client gave {other:?}")),
    }
    Ok(format!(
        "the C client exited after {got} bytes: end of stream, then Closed"
    ))
}

/// Binds the port the domU wrote at `key` and drains the event Xen marks pending on a new
/// binding.
fn bind_domu_port(domain: &Domain, key: &str) -> Result<InterdomainPort, String> {
    let remote = domain
        .wait_for_value(key, WAIT, |v| v.parse::<u32>().is_ok())?
        .parse::<u32>()
        .map_err(|e| e.to_string())?;
    let mut port = InterdomainPort::bind(domain.domid, remote)?;
    port.wait(Duration::from_secs(2))
        .map_err(|e| format!("the pending event after binding: {e}"))?;
    Ok(port)
}

/// dom0's side of a ping-pong the domU starts: waits for each event and answers it,
/// [`EVENTS`] times; then nothing more may come. Returns the events received.
fn answer(port: &mut InterdomainPort) -> Result<u32, String> {
    let mut received = 0;
    for _ in 0..EVENTS {
        port.wait(WAIT)
            .map_err(|e| format!("after {received} received: {e}"))?;
        received += 1;
        port.notify()?;
    }
    if port.wait(Duration::from_millis(200)).is_ok() {
        return Err("an event past the last round trip".into());
    }
    Ok(received)
}
