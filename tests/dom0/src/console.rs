//! Xen's consoles from dom0 through `xen-console`: a line written to the hypervisor console is
//! read back from Xen's log ring (the testbed boots Xen with `console_to_ring`), incrementally
//! from the index taken before the write; `follow()` yields a line written after it started; the
//! whole log, as read, is printed for the runner, which compares it with the serial line.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use xen_console::{EvtchnPort, HypervisorConsole, XenLog};
use xen_evtchn::EventChannel;
use xen_evtchn::linux::EvtchnDevice;
use xen_hypercall::Virq;
use xen_hypercall::prelude::*;
use xen_hypercall_privcmd::Privcmd;

use crate::Case;

pub(crate) const CASES: &[Case] = &[
    ("console_write_read_back", write_read_back),
    ("console_log_incremental", incremental),
    ("console_log_sees_the_serial_output", sees_serial_output),
    ("console_log_follow", follow),
    ("console_log_snapshot", snapshot),
];

fn err(what: &str) -> impl Fn(xen_console::LogError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A line through CONSOLEIO_write, found after the index taken before writing.
fn write_read_back(privcmd: &Privcmd) -> Result<(), String> {
    let log = XenLog::new(privcmd);
    let before = log.end_index().map_err(err("end_index"))?;
    let line = format!("xen-console read-back {before:#x}\n");
    HypervisorConsole::new(privcmd)
        .write_all(line.as_bytes())
        .map_err(|e| format!("console_write: {e}"))?;
    let since = log.read_since(before).map_err(err("read_since"))?;
    if since.text.windows(line.len()).any(|w| w == line.as_bytes()) {
        let n = since.text.len();
        if n > 4096 {
            return Err(format!("{n} bytes since the index: not incremental"));
        }
        Ok(())
    } else {
        Err(format!(
            "{line:?} not in the {} bytes after index {before}: {:?}",
            since.text.len(),
            String::from_utf8_lossy(&since.text)
        ))
    }
}

/// Reading in 100-byte pieces from each returned index gives the same text as one big read.
fn incremental(privcmd: &Privcmd) -> Result<(), String> {
    let log = XenLog::new(privcmd);
    let all = log.read_all().map_err(err("read_all"))?;
    let mut pieces = Vec::new();
    let mut buf = [0u8; 100];
    let mut from = None;
    let started = Instant::now();
    let mut calls = 0;
    loop {
        let r = privcmd
            .readconsole(&mut buf, from, false)
            .map_err(|e| format!("readconsole: {e}"))?;
        calls += 1;
        pieces.extend_from_slice(&buf[..r.count]);
        from = Some(r.next_index);
        if r.count < buf.len() {
            break;
        }
    }
    let elapsed = started.elapsed();
    // Dom0's own output may have been logged between the two reads: compare the common part.
    if pieces.len() < all.text.len() || pieces[..all.text.len()] != all.text[..] {
        return Err(format!(
            "{} bytes in 100-byte pieces differ from {} bytes read at once",
            pieces.len(),
            all.text.len()
        ));
    }
    println!(
        "console: log ring {} bytes, next index {}, {calls} reads of 100 bytes in {:.2} ms",
        all.text.len(),
        all.next_index,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

/// This program's own earlier XENTEST lines, printed on dom0's console (hvc0 writes through
/// CONSOLEIO_write), are in Xen's log in the order the serial line shows them. (Xen's boot
/// banner has left the 16 KiB ring by now: dom0's boot output follows it.)
fn sees_serial_output(privcmd: &Privcmd) -> Result<(), String> {
    let wanted: &[&[u8]] = &[
        b"XENTEST CASE privcmd_steady_state_no_mmap ok",
        b"XENTEST CASE console_write_read_back ok",
        b"XENTEST CASE console_log_incremental ok",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = XenLog::new(privcmd).read_all().map_err(err("read_all"))?;
        let at: Vec<Option<usize>> = wanted
            .iter()
            .map(|w| all.text.windows(w.len()).position(|x| x == *w))
            .collect();
        if at.iter().all(Option::is_some) {
            return if at.is_sorted() {
                Ok(())
            } else {
                Err(format!("lines out of order in the log: {at:?}"))
            };
        }
        let missing: Vec<_> = wanted
            .iter()
            .zip(&at)
            .filter(|(_, at)| at.is_none())
            .map(|(w, _)| String::from_utf8_lossy(w))
            .collect();
        if Instant::now() > deadline {
            return Err(format!("not in the log: {missing:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `follow()` from the current end yields a line written after it started, woken by
/// `VIRQ_CON_RING` through `xen-evtchn` (no timer): a thread writes the line once follow() waits.
/// If no wake-up comes within 10 s, a watchdog reports the case failed and ends the program (a
/// blocking wait cannot be interrupted otherwise).
fn follow(privcmd: &Privcmd) -> Result<(), String> {
    let log = XenLog::new(privcmd);
    let start = log.end_index().map_err(err("end_index"))?;
    let line = format!("xen-console follow {start:#x}\n");
    let events = EvtchnDevice::open().map_err(|e| format!("open /dev/xen/evtchn: {e}"))?;
    let con_ring = events
        .bind_virq(Virq::CON_RING)
        .map_err(|e| format!("bind VIRQ_CON_RING: {e}"))?;
    let (found, found_rx) = mpsc::channel::<()>();
    let written = line.clone();
    let helper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let privcmd = Privcmd::open().map_err(|e| e.to_string())?;
        HypervisorConsole::new(&privcmd)
            .write_all(written.as_bytes())
            .map_err(|e| format!("console_write: {e}"))?;
        if found_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            println!(
                "XENTEST CASE console_log_follow FAILED no VIRQ_CON_RING wake-up within 10 s of the write"
            );
            std::process::exit(1);
        }
        Ok::<(), String>(())
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut chunks = 0;
    for chunk in log.follow(EvtchnPort::new(con_ring), Some(start)) {
        let chunk = chunk.map_err(|e| format!("follow: {e}"))?;
        chunks += 1;
        seen.extend_from_slice(&chunk.text);
        if seen.windows(line.len()).any(|w| w == line.as_bytes()) {
            let _ = found.send(());
            helper
                .join()
                .map_err(|_| "the writer thread panicked".to_string())??;
            println!(
                "console: follow() woke by VIRQ_CON_RING and found the line after {:.1} ms, in {chunks} chunk(s)",
                started.elapsed().as_secs_f64() * 1e3
            );
            return Ok(());
        }
    }
    Err("follow() ended".into())
}

/// The whole log as read, on `XENTEST OUT xen-log <offset> <hex>` lines
/// ([`xen_testbed_protocol::XEN_LOG`]): the runner compares it with what it captured on the serial
/// line before these lines.
fn snapshot(privcmd: &Privcmd) -> Result<(), String> {
    use std::fmt::Write as _;
    let all = XenLog::new(privcmd).read_all().map_err(err("read_all"))?;
    if all.text.is_empty() {
        return Err("the log is empty".into());
    }
    for (index, piece) in all.text.chunks(96).enumerate() {
        let mut hex = String::with_capacity(2 * piece.len());
        for byte in piece {
            let _ = write!(hex, "{byte:02x}");
        }
        println!(
            "XENTEST OUT {} {} {hex}",
            xen_testbed_protocol::XEN_LOG,
            index * 96
        );
    }
    Ok(())
}
