//! `xen-dom0-tests vchan [bench]`: xen-vchan against Debian's libxenvchan in this dom0 (domain 0
//! talking to itself): our server with a C client, a C server with our client, each streaming
//! 16 MiB each way checked byte by byte, with rings inside the shared page and in pages of
//! their own; a C peer that dies mid-stream; our server and client on tokio; the server's
//! xenstore directory removed on close; our client's read ring mapped read-only; a dropped
//! channel's port unbound even when its event channel lives on. The C peer is `/bin/libxenvchan-peer`
//! (`tests/dom0/libxenvchan_peer.c`). Needs the toolstack preamble (xenstored).
//!
//! `bench` times one-way throughput, ours (two threads) and libxenvchan's (two processes), for
//! 64-byte, 4-KiB and 64-KiB writes, and the round trip of a 1-byte ping-pong, and prints
//! `XENTEST OUT bench-run` lines.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xen_grant::linux::{Gntalloc, Gntdev};
use xen_hypercall::{DomId, Port};
use xen_store::unix::Local;
use xen_store::{Client, ErrorKind, Store};
use xen_testbed_protocol::{Reporter, Stdout};
use xen_vchan::linux::{EvtchnDevice, Vchan};

/// The C peer's path in dom0.
const PEER: &str = "/bin/libxenvchan-peer";
/// Bytes each way in a streaming case.
const TOTAL: u64 = 16 << 20;
/// How long a case may take before it counts as hung (a blocking read or write cannot be
/// interrupted: the watchdog reports the case and ends the program).
const CASE_TIMEOUT: Duration = Duration::from_secs(150);

type Case = (&'static str, fn() -> Result<(), String>);

/// Every case, in the order they run.
pub(crate) const CASES: &[Case] = &[
    ("vchan_rust_server_c_client_in_page", || {
        rust_server_c_client(1024, 2048, 1000)
    }),
    ("vchan_rust_server_c_client_own_pages", || {
        rust_server_c_client(1 << 16, 1 << 18, 65536)
    }),
    ("vchan_c_server_rust_client_in_page", || {
        c_server_rust_client(2048, 1024, 4096)
    }),
    ("vchan_c_server_rust_client_own_pages", || {
        c_server_rust_client(1 << 20, 1 << 14, 3000)
    }),
    ("vchan_c_client_exits_mid_stream", c_client_exits_mid_stream),
    ("vchan_c_server_exits_mid_stream", c_server_exits_mid_stream),
    (
        "vchan_our_server_dies_mid_stream",
        our_server_dies_mid_stream,
    ),
    ("vchan_rust_to_rust_tokio", rust_to_rust_tokio),
    (
        "vchan_client_maps_its_read_ring_read_only",
        client_maps_its_read_ring_read_only,
    ),
    (
        "vchan_drop_unbinds_a_borrowed_event_channel",
        drop_unbinds_a_borrowed_event_channel,
    ),
];

/// Byte `i` of the test stream (the C peer's `pattern`).
fn pattern(i: u64) -> u8 {
    (i ^ (i >> 8) ^ (i >> 16) ^ 0x5a) as u8
}

/// A fresh xenstore directory for one channel, under the conventional place.
fn path() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let port = 7000 + NEXT.fetch_add(1, Ordering::Relaxed);
    xen_vchan::linux::conventional_path("/local/domain/0", DomId(0), port)
}

fn store() -> Result<Client<Local>, String> {
    Ok(Client::new(
        Local::socket().map_err(|e| format!("xenstored's socket: {e}"))?,
    ))
}

/// Runs every case and reports them; `XENTEST DONE` at the end.
pub(crate) fn run(args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) == Some("bench") {
        return bench(&args[1..]);
    }
    let mut reporter = Reporter::new(Stdout);
    for (name, case) in CASES {
        let watchdog = watchdog(name);
        reporter.case(name, case());
        drop(watchdog);
    }
    ExitCode::from(reporter.done().exit_code())
}

/// Reports `name` failed and ends the program if it is still running after [`CASE_TIMEOUT`];
/// dropping the sender disarms it.
pub(crate) fn watchdog(name: &'static str) -> std::sync::mpsc::Sender<()> {
    let (disarm, armed) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = armed.recv_timeout(CASE_TIMEOUT) {
            let mut reporter = Reporter::new(Stdout);
            reporter.case(name, Err(format!("hung for {CASE_TIMEOUT:?}")));
            reporter.done();
            std::process::exit(1);
        }
    });
    disarm
}

/// Starts the C peer as `role` of domain 0's channel under `path` with rings of at least
/// `(read_min, write_min)` bytes (a server's), receiving `recv` bytes then sending `send` in
/// `chunk`-byte writes, exiting without closing after `die_after` bytes if not 0 (the usage in
/// `tests/dom0/libxenvchan_peer.c`); returns it once it printed that the channel is open.
fn c_peer(
    role: &str,
    path: &str,
    sizes: (usize, usize),
    recv: u64,
    send: u64,
    chunk: usize,
    die_after: u64,
) -> Result<(Child, BufReader<std::process::ChildStdout>), String> {
    c_peer_of(DomId(0), role, path, sizes, recv, send, chunk, die_after)
}

/// As [`c_peer`], with domain `peer` at the other end (the server's domain for a client, the
/// client's for a server).
#[allow(clippy::too_many_arguments)]
pub(crate) fn c_peer_of(
    peer: DomId,
    role: &str,
    path: &str,
    (read_min, write_min): (usize, usize),
    recv: u64,
    send: u64,
    chunk: usize,
    die_after: u64,
) -> Result<(Child, BufReader<std::process::ChildStdout>), String> {
    let numbers = [
        read_min as u64,
        write_min as u64,
        recv,
        send,
        chunk as u64,
        die_after,
    ];
    let mut child = Command::new(PEER)
        .args([role, &peer.0.to_string(), path])
        .args(numbers.map(|n| n.to_string()))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {PEER}: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)
        .map_err(|e| format!("reading the peer: {e}"))?;
    if line.trim() != "libxenvchan-peer: open" {
        let status = child.wait().map_err(|e| e.to_string())?;
        return Err(format!(
            "the C peer did not open the channel ({status}): {line:?}"
        ));
    }
    Ok((child, out))
}

/// Waits for the C peer and returns its last line, which must say `ok` if `must_succeed`.
pub(crate) fn finish(
    mut child: Child,
    mut out: BufReader<std::process::ChildStdout>,
    must_succeed: bool,
) -> Result<String, String> {
    let mut line = String::new();
    out.read_line(&mut line)
        .map_err(|e| format!("reading the peer: {e}"))?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if must_succeed && (!status.success() || !line.starts_with("libxenvchan-peer: ok")) {
        return Err(format!("the C peer failed ({status}): {line:?}"));
    }
    Ok(line)
}

/// Writes `total` bytes of the pattern in writes of up to `chunk` bytes.
pub(crate) fn send<E: xen_vchan::linux::Sleep>(
    vchan: &mut Vchan<'_, E>,
    total: u64,
    chunk: usize,
) -> Result<(), xen_vchan::linux::Error> {
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    while sent < total {
        let len = chunk.min((total - sent) as usize);
        for (i, byte) in buf[..len].iter_mut().enumerate() {
            *byte = pattern(sent + i as u64);
        }
        let mut done = 0;
        while done < len {
            done += vchan.write(&buf[done..len])?;
        }
        sent += len as u64;
    }
    Ok(())
}

/// Reads until the end of the stream or `limit` bytes, checking each against the pattern;
/// returns how many arrived.
pub(crate) fn receive<E: xen_vchan::linux::Sleep>(
    vchan: &mut Vchan<'_, E>,
    limit: u64,
) -> Result<u64, String> {
    let mut buf = vec![0u8; 65536];
    let mut got = 0u64;
    while got < limit {
        let want = buf.len().min((limit - got) as usize);
        let n = vchan
            .read(&mut buf[..want])
            .map_err(|e| format!("read after {got} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i as u64)) {
            return Err(format!("byte {} differs", got + i as u64));
        }
        got += n as u64;
    }
    Ok(got)
}

/// Our server of a channel for domain 0 under `path` (see [`Vchan::server`]).
fn our_server<'d>(
    gntalloc: &'d Gntalloc,
    path: &str,
    read_min: usize,
    write_min: usize,
) -> Result<Vchan<'d, EvtchnDevice>, String> {
    our_server_for(gntalloc, DomId(0), path, read_min, write_min)
}

/// Our server of a channel for domain `client` under `path`.
pub(crate) fn our_server_for<'d>(
    gntalloc: &'d Gntalloc,
    client: DomId,
    path: &str,
    read_min: usize,
    write_min: usize,
) -> Result<Vchan<'d, EvtchnDevice>, String> {
    let evtchn = EvtchnDevice::open().map_err(|e| e.to_string())?;
    Vchan::server(
        gntalloc,
        evtchn,
        store()?,
        client,
        path,
        read_min,
        write_min,
    )
    .map_err(|e| format!("server: {e}"))
}

/// Our client of domain 0's channel under `path`.
fn our_client<'d>(gntdev: &'d Gntdev, path: &str) -> Result<Vchan<'d, EvtchnDevice>, String> {
    our_client_of(gntdev, DomId(0), path)
}

/// Our client of domain `server`'s channel under `path`.
pub(crate) fn our_client_of<'d>(
    gntdev: &'d Gntdev,
    server: DomId,
    path: &str,
) -> Result<Vchan<'d, EvtchnDevice>, String> {
    let evtchn = EvtchnDevice::open().map_err(|e| e.to_string())?;
    Vchan::client(gntdev, evtchn, &mut store()?, server, path).map_err(|e| format!("client: {e}"))
}

/// Sends `total` bytes of the pattern in `chunk`-byte writes, then receives `total` bytes,
/// checking each.
pub(crate) fn exchange(
    vchan: &mut Vchan<'_, EvtchnDevice>,
    total: u64,
    chunk: usize,
) -> Result<(), String> {
    send(vchan, total, chunk).map_err(|e| format!("send: {e}"))?;
    let got = receive(vchan, total)?;
    if got != total {
        return Err(format!("received {got} of {total} bytes"));
    }
    Ok(())
}

/// Checks that the server's xenstore directory `path` is gone (a server removes it on close).
pub(crate) fn check_removed(path: &str) -> Result<(), String> {
    match store()?.read(&format!("{path}/ring-ref")) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => Err(format!("{path} left behind after close: {other:?}")),
    }
}

/// Our server, a C client: 16 MiB each way.
fn rust_server_c_client(read_min: usize, write_min: usize, chunk: usize) -> Result<(), String> {
    let path = path();
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let mut vchan = our_server(&gntalloc, &path, read_min, write_min)?;
    let orders = vchan.orders();
    let (child, out) = c_peer("client", &path, (0, 0), TOTAL, TOTAL, chunk, 0)?;
    let started = Instant::now();
    exchange(&mut vchan, TOTAL, chunk)?;
    let line = finish(child, out, true)?;
    vchan.close().map_err(|e| format!("close: {e}"))?;
    check_removed(&path)?;
    println!(
        "XENTEST OUT vchan our server (orders {}/{}) <-> C client: {TOTAL} bytes each way in {:.2} s; {}",
        orders.left.get(),
        orders.right.get(),
        started.elapsed().as_secs_f64(),
        line.trim()
    );
    Ok(())
}

/// A C server, our client: 16 MiB each way.
fn c_server_rust_client(read_min: usize, write_min: usize, chunk: usize) -> Result<(), String> {
    let path = path();
    let (child, out) = c_peer(
        "server",
        &path,
        (read_min, write_min),
        TOTAL,
        TOTAL,
        chunk,
        0,
    )?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let mut vchan = our_client(&gntdev, &path)?;
    let orders = vchan.orders();
    let started = Instant::now();
    exchange(&mut vchan, TOTAL, chunk)?;
    let line = finish(child, out, true)?;
    drop(vchan);
    println!(
        "XENTEST OUT vchan C server (orders {}/{}) <-> our client: {TOTAL} bytes each way in {:.2} s; {}",
        orders.left.get(),
        orders.right.get(),
        started.elapsed().as_secs_f64(),
        line.trim()
    );
    Ok(())
}

/// A C client that dies after sending 1 MiB and a bit: our server reads what it sent, then
/// the end of the stream (Linux clears `cli_live` and signals when the process's mapping goes).
fn c_client_exits_mid_stream() -> Result<(), String> {
    let path = path();
    let die_after = (1 << 20) + 123;
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let mut vchan = our_server(&gntalloc, &path, 1 << 16, 1024)?;
    let (child, out) = c_peer("client", &path, (0, 0), 0, TOTAL, 4096, die_after)?;
    let got = receive(&mut vchan, TOTAL)?;
    finish(child, out, false)?;
    if got < die_after || got >= TOTAL {
        return Err(format!(
            "end of stream after {got} bytes; the peer died after {die_after}"
        ));
    }
    if !matches!(vchan.write(b"x"), Err(xen_vchan::linux::Error::Closed)) {
        return Err("a write to the dead client did not fail with Closed".into());
    }
    Ok(())
}

/// A C server that dies after reading 1 MiB and a bit: our client's blocked write fails with
/// `Closed` (Linux clears `srv_live` and signals when the server's pages go).
fn c_server_exits_mid_stream() -> Result<(), String> {
    let path = path();
    let die_after = (1 << 20) + 321;
    let (child, out) = c_peer("server", &path, (8192, 1024), TOTAL, 0, 4096, die_after)?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let mut vchan = our_client(&gntdev, &path)?;
    let result = send(&mut vchan, TOTAL, 4096);
    finish(child, out, false)?;
    // The dead server could not remove its directory.
    let _ = store()?.rm(&path);
    match result {
        Err(xen_vchan::linux::Error::Closed) => Ok(()),
        other => Err(format!("writing to a dead server gave {other:?}")),
    }
}

/// Our server in a child process that exits without closing after writing 1 MiB and a bit:
/// the C client reading from it must see the channel end (Linux clears `srv_live` and signals
/// the port when the child's pages go, as `Vchan::server` asked), not hang.
fn our_server_dies_mid_stream() -> Result<(), String> {
    let path = path();
    let die_after = (1u64 << 20) + 77;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["vchan-child", &path, &die_after.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let mut child_out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    child_out
        .read_line(&mut line)
        .map_err(|e| format!("reading the child: {e}"))?;
    if line.trim() != "open" {
        return Err(format!("the child did not open the channel: {line:?}"));
    }
    let (peer, out) = c_peer("client", &path, (0, 0), TOTAL, 0, 4096, 0)?;
    let status = child.wait().map_err(|e| e.to_string())?;
    let line = finish(peer, out, false)?;
    let _ = store()?.rm(&path);
    if !status.success() {
        return Err(format!("the child failed: {status}"));
    }
    // The C peer fails its read (libxenvchan_read returns -1 once srv_live is 0) instead of
    // receiving all 16 MiB; its exit status says which.
    if line.starts_with("libxenvchan-peer: ok") {
        return Err(format!(
            "the C client read everything from a dead server: {line:?}"
        ));
    }
    Ok(())
}

/// `vchan-child PATH BYTES`: offers a channel to domain 0 under PATH, prints `open`, writes
/// BYTES of the pattern, then exits without closing (no destructor runs).
pub(crate) fn child(args: &[String]) -> ExitCode {
    let [path, bytes] = args else {
        eprintln!("usage: xen-dom0-tests vchan-child PATH BYTES");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), String> {
        let bytes: u64 = bytes.parse().map_err(|e| format!("{bytes}: {e}"))?;
        let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
        let mut vchan = our_server(&gntalloc, path, 1024, 1 << 16)?;
        println!("open");
        std::io::Write::flush(&mut std::io::stdout()).map_err(|e| e.to_string())?;
        send(&mut vchan, bytes, 4096).map_err(|e| format!("send: {e}"))?;
        std::process::exit(0);
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xen-dom0-tests vchan-child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Our server and our client on tokio, both directions at once: each end split into a read
/// half and a write half, the four in tasks of their own on a multi-threaded runtime, so a
/// read and a write of one channel wait for its one port at the same time.
fn rust_to_rust_tokio() -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
    use xen_evtchn::tokio::TokioEventChannel;

    type Half<'d> = Vchan<'d, TokioEventChannel>;

    async fn write(mut half: WriteHalf<Half<'static>>) -> Result<WriteHalf<Half<'static>>, String> {
        let mut sent = 0u64;
        let mut buf = vec![0u8; 5000];
        while sent < TOTAL {
            let len = buf.len().min((TOTAL - sent) as usize);
            for (i, byte) in buf[..len].iter_mut().enumerate() {
                *byte = pattern(sent + i as u64);
            }
            half.write_all(&buf[..len])
                .await
                .map_err(|e| e.to_string())?;
            sent += len as u64;
        }
        Ok(half)
    }

    async fn read(mut half: ReadHalf<Half<'static>>) -> Result<ReadHalf<Half<'static>>, String> {
        let mut got = 0u64;
        let mut buf = vec![0u8; 7000];
        while got < TOTAL {
            let n = half.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(format!("end of stream after {got} bytes"));
            }
            if let Some(i) = (0..n).find(|&i| buf[i] != pattern(got + i as u64)) {
                return Err(format!("byte {} differs", got + i as u64));
            }
            got += n as u64;
        }
        Ok(half)
    }

    async fn joined<T>(task: tokio::task::JoinHandle<Result<T, String>>) -> Result<T, String> {
        task.await.map_err(|e| format!("task: {e}"))?
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The tasks need 'static channels: the devices live until the program ends.
    let gntalloc: &'static Gntalloc =
        Box::leak(Box::new(Gntalloc::open().map_err(|e| e.to_string())?));
    let gntdev: &'static Gntdev = Box::leak(Box::new(Gntdev::open().map_err(|e| e.to_string())?));
    runtime.block_on(async {
        let path = path();
        let server = Vchan::server(
            gntalloc,
            TokioEventChannel::open().map_err(|e| e.to_string())?,
            store()?,
            DomId(0),
            &path,
            1 << 14,
            1 << 12,
        )
        .map_err(|e| format!("server: {e}"))?;
        let client = Vchan::client(
            gntdev,
            TokioEventChannel::open().map_err(|e| e.to_string())?,
            &mut store()?,
            DomId(0),
            &path,
        )
        .map_err(|e| format!("client: {e}"))?;
        let (server_rx, server_tx) = tokio::io::split(server);
        let (client_rx, client_tx) = tokio::io::split(client);
        let started = Instant::now();
        let (a, b, c, d) = tokio::join!(
            joined(tokio::spawn(write(server_tx))),
            joined(tokio::spawn(read(client_rx))),
            joined(tokio::spawn(write(client_tx))),
            joined(tokio::spawn(read(server_rx)))
        );
        let (server_tx, client_rx, client_tx, server_rx) = (a?, b?, c?, d?);
        println!(
            "XENTEST OUT vchan our server <-> our client on tokio (four tasks): {TOTAL} bytes each way at once in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        // The server closes: the client reads the end of the stream.
        // The server closes on the blocking pool (its xenstore removal blocks).
        let server = server_rx.unsplit(server_tx);
        server.close_async().await.map_err(|e| e.to_string())?;
        let mut client = client_rx.unsplit(client_tx);
        let mut byte = [0u8; 1];
        match AsyncReadExt::read(&mut client, &mut byte).await {
            Ok(0) => {}
            other => return Err(format!("after the server closed, the client read {other:?}")),
        }
        check_removed(&path)
    })
}

/// `bench [ROUNDS] [MIB]`: one-way throughput, ours and libxenvchan's, for 64 B, 4 KiB and
/// 64 KiB writes through 64 KiB rings (`bench-run impl=… measure=write_<chunk> bytes=… ns=…`),
/// and 1-byte ping-pong round trips (`bench-run impl=… measure=rtt_1 rounds=… ns=…`); one line
/// per sample, then the case `bench_vchan`.
fn bench(args: &[String]) -> ExitCode {
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (rounds, mib) = (number(0, 3), number(1, 8));
    let mut reporter = Reporter::new(Stdout);
    let result = (|| -> Result<(), String> {
        for _ in 0..rounds {
            for chunk in [64usize, 4096, 65536] {
                let total = if chunk == 64 {
                    (mib << 20) / 8
                } else {
                    mib << 20
                };
                let ours = bench_ours(chunk, total)?;
                println!(
                    "XENTEST OUT bench-run impl=ours measure=write_{chunk} bytes={total} ns={ours}"
                );
                let theirs = bench_libxenvchan(chunk, total)?;
                println!(
                    "XENTEST OUT bench-run impl=libxenvchan measure=write_{chunk} bytes={total} ns={theirs}"
                );
            }
            let trips = 2000;
            let ours = ping_ours(trips)?;
            println!("XENTEST OUT bench-run impl=ours measure=rtt_1 rounds={trips} ns={ours}");
            let theirs = ping_libxenvchan(trips)?;
            println!(
                "XENTEST OUT bench-run impl=libxenvchan measure=rtt_1 rounds={trips} ns={theirs}"
            );
        }
        Ok(())
    })();
    reporter.case("bench_vchan", result);
    ExitCode::from(reporter.done().exit_code())
}

/// Our server writing `total` bytes in `chunk`-byte writes to our client in another thread:
/// the reader's time from the first byte to the last, in ns.
fn bench_ours(chunk: usize, total: u64) -> Result<u64, String> {
    let path = path();
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let mut server = our_server(&gntalloc, &path, 1024, 1 << 16)?;
    let mut client = our_client(&gntdev, &path)?;
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<u64, String> {
            let mut buf = vec![0u8; chunk];
            let mut got = 0u64;
            let mut started = None;
            while got < total {
                let n = client.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("end of stream".into());
                }
                started.get_or_insert_with(Instant::now);
                got += n as u64;
            }
            Ok(started.map_or(0, |s: Instant| s.elapsed().as_nanos() as u64))
        });
        let buf = vec![0x5au8; chunk];
        let mut sent = 0u64;
        while sent < total {
            let len = chunk.min((total - sent) as usize);
            let mut done = 0;
            while done < len {
                done += server.write(&buf[done..len]).map_err(|e| e.to_string())?;
            }
            sent += len as u64;
        }
        reader
            .join()
            .map_err(|_| "the reader panicked".to_string())?
    })
}

/// libxenvchan's server writing `total` bytes in `chunk`-byte writes to its client: the
/// client's receive time, in ns.
fn bench_libxenvchan(chunk: usize, total: u64) -> Result<u64, String> {
    let path = path();
    let (server, server_out) = c_peer("server", &path, (1024, 65536), 0, total, chunk, 0)?;
    let (client, client_out) = c_peer("client", &path, (0, 0), total, 0, chunk, 0)?;
    let line = finish(client, client_out, true)?;
    finish(server, server_out, true)?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("recv_ns="))
        .and_then(|ns| ns.parse().ok())
        .ok_or_else(|| format!("no recv_ns in {line:?}"))
}

/// Our client sending one byte and our server (another thread) sending it back, `trips`
/// times: the client's time, in ns.
fn ping_ours(trips: u64) -> Result<u64, String> {
    let path = path();
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let mut server = our_server(&gntalloc, &path, 1024, 2048)?;
    let mut client = our_client(&gntdev, &path)?;
    std::thread::scope(|s| {
        let echo = s.spawn(move || -> Result<(), String> {
            let mut byte = [0u8];
            for _ in 0..trips {
                server.recv(&mut byte).map_err(|e| e.to_string())?;
                server.send(&byte).map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        let started = Instant::now();
        let mut byte = [0u8];
        for _ in 0..trips {
            client.send(&byte).map_err(|e| e.to_string())?;
            client.recv(&mut byte).map_err(|e| e.to_string())?;
        }
        let ns = started.elapsed().as_nanos() as u64;
        echo.join()
            .map_err(|_| "the echo thread panicked".to_string())??;
        Ok(ns)
    })
}

/// The same between libxenvchan's client and server: the client's time, in ns.
fn ping_libxenvchan(trips: u64) -> Result<u64, String> {
    let path = path();
    let ping = |role| c_peer(role, &path, (1024, 2048), trips, 0, 1, 0);
    let (server, server_out) = ping("ping-server")?;
    let (client, client_out) = ping("ping-client")?;
    let line = finish(client, client_out, true)?;
    finish(server, server_out, true)?;
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("ns="))
        .and_then(|ns| ns.parse().ok())
        .ok_or_else(|| format!("no ns in {line:?}"))
}

/// The sizes of this process's mappings of gntdev with permissions `perms` (`/proc/self/maps`).
fn gntdev_mappings(perms: &str) -> Result<Vec<u64>, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let mut sizes = Vec::new();
    for line in maps.lines().filter(|l| l.ends_with("/dev/xen/gntdev")) {
        let mut fields = line.split_whitespace();
        let (range, p) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let hex = |s| u64::from_str_radix(s, 16).map_err(|e| format!("{line:?}: {e}"));
        if p == perms {
            sizes.push(hex(end)? - hex(start)?);
        }
    }
    Ok(sizes)
}

/// Our client of a C server whose rings have pages of their own maps the ring it reads
/// read-only, as libxenvchan's client does, and the page and the ring it writes writable.
fn client_maps_its_read_ring_read_only() -> Result<(), String> {
    let path = path();
    let (child, out) = c_peer("server", &path, (1 << 14, 1 << 16), 4, 4, 4, 0)?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let mut vchan = our_client(&gntdev, &path)?;
    let read_ring = u64::from(vchan.orders().right.size());
    let read_only = gntdev_mappings("r--s")?;
    let writable = gntdev_mappings("rw-s")?;
    send(&mut vchan, 4, 4).map_err(|e| format!("send: {e}"))?;
    receive(&mut vchan, 4)?;
    finish(child, out, true)?;
    drop(vchan);
    if read_only != [read_ring] || writable.is_empty() {
        return Err(format!(
            "gntdev mappings: read-only {read_only:?} (want [{read_ring}]), writable {writable:?} (want the page and the write ring)"
        ));
    }
    Ok(())
}

/// An event channel borrowed from a device that outlives the channel: dropping it unbinds
/// nothing.
struct Borrowed<'a>(&'a EvtchnDevice);

impl xen_evtchn::EventChannel for Borrowed<'_> {
    fn alloc_unbound_raw(&self, remote: DomId) -> Result<Port, xen_evtchn::Error> {
        self.0.alloc_unbound_raw(remote)
    }
    fn bind_interdomain_raw(&self, remote: DomId, port: Port) -> Result<Port, xen_evtchn::Error> {
        self.0.bind_interdomain_raw(remote, port)
    }
    fn bind_virq_raw(&self, virq: xen_evtchn::Virq) -> Result<Port, xen_evtchn::Error> {
        self.0.bind_virq_raw(virq)
    }
    fn unbind_raw(&self, port: Port) -> Result<(), xen_evtchn::Error> {
        self.0.unbind_raw(port)
    }
    fn notify(&self, port: Port) -> Result<(), xen_evtchn::Error> {
        self.0.notify(port)
    }
    fn unmask(&self, port: Port) -> Result<(), xen_evtchn::Error> {
        self.0.unmask(port)
    }
    fn take_pending(&self, ports: &mut [Port]) -> Result<usize, xen_evtchn::Error> {
        self.0.take_pending(ports)
    }
    fn wait_pending(&self, ports: &mut [Port]) -> Result<usize, xen_evtchn::Error> {
        self.0.wait_pending(ports)
    }
}

impl xen_vchan::linux::Sleep for Borrowed<'_> {}

/// Our server and client on one event-channel device that outlives them: dropping each
/// unbinds its port (the device's drop, which would, does not come).
fn drop_unbinds_a_borrowed_event_channel() -> Result<(), String> {
    let path = path();
    let gntalloc = Gntalloc::open().map_err(|e| e.to_string())?;
    let gntdev = Gntdev::open().map_err(|e| e.to_string())?;
    let device = EvtchnDevice::open().map_err(|e| e.to_string())?;
    let server = Vchan::server(
        &gntalloc,
        Borrowed(&device),
        store()?,
        DomId(0),
        &path,
        1024,
        2048,
    )
    .map_err(|e| format!("server: {e}"))?;
    let mut client = Vchan::client(&gntdev, Borrowed(&device), &mut store()?, DomId(0), &path)
        .map_err(|e| format!("client: {e}"))?;
    let ports = [server.port(), client.port()];
    // Bytes cross (the ring has room: no wait).
    if client.write(b"ping").map_err(|e| e.to_string())? != 4 {
        return Err("the client could not write 4 bytes".into());
    }
    drop(client);
    drop(server);
    let bound: Vec<Port> = ports.into_iter().filter(|&p| device.is_bound(p)).collect();
    if !bound.is_empty() {
        return Err(format!(
            "ports {bound:?} still bound after their channels were dropped"
        ));
    }
    Ok(())
}
