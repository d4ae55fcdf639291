//! The dom0 side of `cargo xtask bench store`: xenstore reads and writes over the daemon's
//! socket, timed in one run, several interleaved rounds of
//!
//! - `libxenstore`: Debian's C library (the program `libxenstore-bench`, a child per
//!   measurement), `xs_read`/`xs_write` in a loop, one request in flight;
//! - `ours`: this crate's blocking client, one request in flight;
//! - `ours64`: the same client with up to 64 requests in flight: when all 64 are out, it waits
//!   for the oldest 16 replies and queues 16 requests, sent in one write (`queue`, `flush`);
//! - `ours64x4`, `ours64x8`: the same 64 in flight spread over 4 or 8 connections (clients),
//!   64/N each, served in turn from one thread: each turn takes back the oldest quarter of the
//!   connection's replies and sends as many requests in one write;
//! - `raw64`: the floor: `ours64`'s window on a raw socket, from pre-encoded requests (only the
//!   replies' framing and type checked), so nearly all the time is the daemon's.
//!
//! Each measurement prints `XENTEST OUT bench-run impl=<impl> measure=<read|write>
//! iterations=<n> ns=<total>`; the host turns them into medians and ratios. The run is the case
//! `bench_store`, then `XENTEST DONE`.
//!
//! Usage: `store-bench [--mock] <path of libxenstore-bench> [rounds] [iterations]`. With
//! `--mock` the daemon is this crate's in-process server on a temporary socket (for a host
//! without Xen; both clients then talk to it through `XENSTORED_PATH`).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode};
use std::time::Instant;

use xen_store::op::{self, Op};
use xen_store::unix::Local;
use xen_store::wire::{self, Decoder, MsgType};
use xen_store::{Client, Store, Ticket};
use xen_testbed_protocol::{Reporter, Stdout};

const KEY: &str = "/bench/key";
const VALUE: &[u8] = b"0123456789abcdef";
const IN_FLIGHT: usize = 64;
/// The most connections a measurement spreads its window over (`ours64x8`).
const CONNECTIONS: usize = 8;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mock = args.first().is_some_and(|a| a == "--mock");
    if mock {
        args.remove(0);
    }
    let Some(c_bench) = args.first().cloned() else {
        eprintln!("usage: store-bench [--mock] <libxenstore-bench> [rounds] [iterations]");
        return ExitCode::from(2);
    };
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let iterations: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let _server = if mock { Some(mock_daemon()) } else { None };
    let mut reporter = Reporter::new(Stdout);
    reporter.case("bench_store", run(&c_bench, rounds, iterations));
    ExitCode::from(reporter.done().exit_code())
}

/// Serves a `MockStore` on a temporary socket and points `XENSTORED_PATH` at it.
fn mock_daemon() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("store-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind a temporary socket");
    let store = xen_store::mock::MockStore::new();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            store.serve(stream, xen_store::DomId(0));
        }
    });
    set_env("XENSTORED_PATH", &path);
    path
}

#[allow(unsafe_code)]
fn set_env(key: &str, value: &std::path::Path) {
    // SAFETY: called while the only other thread (the mock acceptor) does not touch the
    // environment, before any child is spawned.
    unsafe { std::env::set_var(key, value) };
}

fn run(c_bench: &str, rounds: usize, iterations: u64) -> Result<(), String> {
    let connect = || {
        Local::socket()
            .map(Client::new)
            .map_err(|e| format!("connecting: {e}"))
    };
    let mut clients = (0..CONNECTIONS)
        .map(|_| connect())
        .collect::<Result<Vec<_>, _>>()?;
    clients[0]
        .write(KEY, VALUE)
        .map_err(|e| format!("write {KEY}: {e}"))?;
    let implementations = [
        "libxenstore",
        "ours",
        "ours64",
        "ours64x4",
        "ours64x8",
        "raw64",
    ];
    for round in 0..rounds {
        for measure in ["read", "write"] {
            // Rotate who goes first, so that no implementation always follows another.
            for i in 0..implementations.len() {
                let implementation = implementations[(round + i) % implementations.len()];
                let ns = match implementation {
                    "libxenstore" => {
                        time_libxenstore(c_bench, measure, iterations)?;
                        continue;
                    }
                    "ours" => time_ours(&mut clients[..1], measure, iterations, 1)?,
                    "ours64" => time_ours(&mut clients[..1], measure, iterations, IN_FLIGHT)?,
                    "ours64x4" => time_ours(&mut clients[..4], measure, iterations, IN_FLIGHT)?,
                    "ours64x8" => time_ours(&mut clients, measure, iterations, IN_FLIGHT)?,
                    _ => time_raw(measure, iterations)?,
                };
                println!(
                    "XENTEST OUT bench-run impl={implementation} measure={measure} \
                     iterations={iterations} ns={ns}"
                );
            }
        }
    }
    Ok(())
}

fn time_libxenstore(c_bench: &str, measure: &str, iterations: u64) -> Result<(), String> {
    let status = Command::new(c_bench)
        .args([measure, KEY, &iterations.to_string()])
        .status()
        .map_err(|e| format!("{c_bench}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{c_bench} {measure}: {status}"))
    }
}

/// Total nanoseconds for `iterations` operations with up to `window` in flight spread evenly
/// over the `clients`' connections, each reply checked.
fn time_ours(
    clients: &mut [Client<Local>],
    measure: &str,
    iterations: u64,
    window: usize,
) -> Result<u128, String> {
    let started = Instant::now();
    if measure == "read" {
        pipeline(
            clients,
            iterations,
            window,
            || op::read(KEY),
            |value| check(&value),
        )
    } else {
        pipeline(clients, iterations, window, || op::write(KEY, VALUE), Ok)
    }
    .map_err(|e| format!("ours {measure}: {e}"))?;
    Ok(started.elapsed().as_nanos())
}

/// Runs `iterations` requests built by `request`, keeping up to `window / clients.len()` in
/// flight on each connection. The connections take turns: when a connection's window is full,
/// its turn takes back the oldest quarter of its replies (at least one); then it queues
/// requests until its window is full again and sends them in one write. `check`s every reply.
fn pipeline<R>(
    clients: &mut [Client<Local>],
    iterations: u64,
    window: usize,
    request: impl Fn() -> Result<Op<R>, xen_store::Error>,
    check: impl Fn(R) -> Result<(), String>,
) -> Result<(), String> {
    let fail = |e: xen_store::Error| e.to_string();
    let window = (window / clients.len()).max(1);
    let refill = (window / 4).max(1);
    let mut in_flight: Vec<VecDeque<Ticket<R>>> = clients
        .iter()
        .map(|_| VecDeque::with_capacity(window))
        .collect();
    let mut sent = 0;
    while sent < iterations {
        for (xs, in_flight) in clients.iter_mut().zip(&mut in_flight) {
            if in_flight.len() == window {
                for ticket in in_flight.drain(..refill) {
                    check(xs.wait(ticket).map_err(fail)?)?;
                }
            }
            while in_flight.len() < window && sent < iterations {
                in_flight.push_back(xs.queue(request().map_err(fail)?, 0).map_err(fail)?);
                sent += 1;
            }
            xs.flush().map_err(fail)?;
        }
    }
    for (xs, in_flight) in clients.iter_mut().zip(in_flight) {
        for ticket in in_flight {
            check(xs.wait(ticket).map_err(fail)?)?;
        }
    }
    Ok(())
}

/// Total nanoseconds for `iterations` operations with `ours64`'s window (64 in flight, refilled
/// a quarter at a time, one write per refill) on a socket of its own, from pre-encoded requests:
/// the floor of the client's own work.
fn time_raw(measure: &str, iterations: u64) -> Result<u128, String> {
    let fail = |e: xen_store::Error| e.to_string();
    let (ty, payload) = if measure == "read" {
        let request = op::read(KEY).map_err(fail)?;
        (request.msg_type(), request.payload().to_vec())
    } else {
        let request = op::write(KEY, VALUE).map_err(fail)?;
        (request.msg_type(), request.payload().to_vec())
    };
    let Local::Socket(mut socket) = Local::socket().map_err(|e| format!("connecting: {e}"))? else {
        return Err("not a socket".into());
    };
    let mut batch = Vec::new();
    for req_id in 1..=IN_FLIGHT as u32 {
        wire::encode(ty, req_id, 0, &[&payload], &mut batch).map_err(fail)?;
    }
    let per_request = batch.len() / IN_FLIGHT;
    let refill = (IN_FLIGHT / 4) as u64;
    let mut decoder = Decoder::new();
    let started = Instant::now();
    let (mut sent, mut received) = (0, 0);
    while received < iterations {
        if sent - received <= IN_FLIGHT as u64 - refill && sent < iterations {
            let n = (iterations - sent).min(IN_FLIGHT as u64 - (sent - received));
            socket
                .write_all(&batch[..per_request * n as usize])
                .map_err(|e| format!("raw write: {e}"))?;
            sent += n;
        }
        raw_reply(&mut socket, &mut decoder, ty)?;
        received += 1;
    }
    Ok(started.elapsed().as_nanos())
}

/// Reads until the next whole reply, which must be of type `ty`.
fn raw_reply(socket: &mut UnixStream, decoder: &mut Decoder, ty: MsgType) -> Result<(), String> {
    const CHUNK: usize = 4096;
    loop {
        if let Some(reply) = decoder.next_message().map_err(|e| e.to_string())? {
            return if reply.header.ty == ty {
                Ok(())
            } else {
                Err(format!("raw reply of type {:?}", reply.header.ty))
            };
        }
        let n = socket
            .read(decoder.buffer(CHUNK))
            .map_err(|e| format!("raw read: {e}"))?;
        decoder.filled(CHUNK, n);
        if n == 0 {
            return Err("raw: xenstored closed the socket".into());
        }
    }
}

fn check(value: &[u8]) -> Result<(), String> {
    if value == VALUE {
        Ok(())
    } else {
        Err(format!(
            "read {:?}, expected {:?}",
            value.escape_ascii().to_string(),
            "0123456789abcdef"
        ))
    }
}
