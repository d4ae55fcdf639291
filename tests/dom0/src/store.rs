//! `xen-dom0-tests store`: the xenstore client against Debian's C `xenstored` in this dom0, with
//! Debian's `xenstore-*` tools as the oracle in both directions (what ours writes theirs reads,
//! and the reverse). Needs the toolstack preamble (xenstored running, the tools on `PATH`).

use std::future::poll_fn;
use std::pin::Pin;
use std::process::{Command, ExitCode};

use xen_store::tokio::{AsyncClient, AsyncStore};
use xen_store::unix::Local;
use xen_store::{Access, Client, DomId, Errno, ErrorKind, Perm, Store};
use xen_testbed_protocol::{Reporter, Stdout};

/// The subtree every case works under (removed first).
const BASE: &str = "/test/xen-store";

type Case = (&'static str, fn() -> Result<(), String>);

/// Every case, in the order they run.
pub(crate) const CASES: &[Case] = &[
    (
        "store_socket_round_trip_with_cli",
        socket_round_trip_with_cli,
    ),
    (
        "store_directory_and_ls_match_cli",
        directory_and_ls_match_cli,
    ),
    ("store_mkdir_rm_exists", mkdir_rm_exists),
    ("store_permissions_match_cli", permissions_match_cli),
    ("store_domain_path_and_name", domain_path_and_name),
    ("store_directory_part_large", directory_part_large),
    ("store_watch_fires_on_cli_write", watch_fires_on_cli_write),
    (
        "store_transaction_conflict_and_retry",
        transaction_conflict_and_retry,
    ),
    ("store_errors_typed", errors_typed),
    ("store_xenbus_device", xenbus_device),
    ("store_async_in_flight_and_watch", async_in_flight_and_watch),
];

/// Runs every case and reports them; `XENTEST DONE` at the end.
pub(crate) fn run() -> ExitCode {
    let mut reporter = Reporter::new(Stdout);
    for (name, case) in CASES {
        reporter.case(name, case());
    }
    ExitCode::from(reporter.done().exit_code())
}

fn open() -> Result<Client<Local>, String> {
    Ok(Client::new(Local::socket().map_err(|e| {
        format!("connecting to xenstored's socket: {e}")
    })?))
}

/// Runs `xenstore-<tool> args...`; its stdout, or why it failed.
fn cli(tool: &str, args: &[&str]) -> Result<String, String> {
    let program = format!("xenstore-{tool}");
    let output = Command::new(&program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {args:?}: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{program}: non-UTF-8 output"))
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, ours: T, theirs: T) -> Result<(), String> {
    if ours == theirs {
        Ok(())
    } else {
        Err(format!("{what}: ours {ours:?}, Debian's tool {theirs:?}"))
    }
}

fn fresh(xs: &mut Client<Local>, sub: &str) -> Result<String, String> {
    let path = format!("{BASE}/{sub}");
    xs.rm(&path).map_err(|e| format!("rm {path}: {e}"))?;
    Ok(path)
}

fn e(what: &str) -> impl Fn(xen_store::Error) -> String + '_ {
    move |error| format!("{what}: {error}")
}

fn socket_round_trip_with_cli() -> Result<(), String> {
    let mut xs = open()?;
    xs.mkdir(BASE).map_err(e("mkdir"))?;
    let dir = fresh(&mut xs, "rt")?;
    // Ours writes, theirs reads.
    xs.write(&format!("{dir}/ours"), b"written by rust")
        .map_err(e("write"))?;
    check(
        "xenstore-read of our write",
        "written by rust\n".to_string(),
        cli("read", &[&format!("{dir}/ours")])?,
    )?;
    // Theirs writes, ours reads.
    cli("write", &[&format!("{dir}/theirs"), "written by C"])?;
    check(
        "our read of xenstore-write",
        xs.read(&format!("{dir}/theirs")).map_err(e("read"))?,
        b"written by C".to_vec(),
    )
}

fn directory_and_ls_match_cli() -> Result<(), String> {
    let mut xs = open()?;
    let dir = fresh(&mut xs, "ls")?;
    for (key, value) in [("a", "1"), ("b/c", "2"), ("b/d", "three")] {
        xs.write(&format!("{dir}/{key}"), value.as_bytes())
            .map_err(e("write"))?;
    }
    let ours = xs.directory(&dir).map_err(e("directory"))?;
    let theirs: Vec<String> = cli("list", &[&dir])?.lines().map(String::from).collect();
    check("children", ours, theirs)?;
    // xenstore-ls prints `name = "value"` indented by depth; build the same from our reads.
    let mut ours = String::new();
    ls(&mut xs, &dir, 0, &mut ours)?;
    check("xenstore-ls", ours, cli("ls", &[&dir])?)
}

fn ls(xs: &mut Client<Local>, path: &str, depth: usize, out: &mut String) -> Result<(), String> {
    for name in xs.directory(path).map_err(e("directory"))? {
        let child = format!("{path}/{name}");
        let value = xs.read_string(&child).map_err(e("read"))?;
        out.push_str(&format!("{:depth$}{name} = \"{value}\"\n", ""));
        ls(xs, &child, depth + 1, out)?;
    }
    Ok(())
}

fn mkdir_rm_exists() -> Result<(), String> {
    let mut xs = open()?;
    let dir = fresh(&mut xs, "mk")?;
    xs.mkdir(&format!("{dir}/x/y")).map_err(e("mkdir"))?;
    cli("exists", &[&format!("{dir}/x/y")])?;
    check(
        "value of a new directory",
        cli("read", &[&format!("{dir}/x/y")])?,
        "\n".into(),
    )?;
    xs.rm(&format!("{dir}/x")).map_err(e("rm"))?;
    if cli("exists", &[&format!("{dir}/x")]).is_ok() {
        return Err("xenstore-exists still finds a removed node".into());
    }
    // Removing what is already gone is not an error (its parent exists).
    xs.rm(&format!("{dir}/x")).map_err(e("rm again"))
}

fn permissions_match_cli() -> Result<(), String> {
    let mut xs = open()?;
    let dir = fresh(&mut xs, "perms")?;
    let node = format!("{dir}/p");
    xs.write(&node, b"v").map_err(e("write"))?;
    let perms = [
        Perm::new(DomId(0), Access::None),
        Perm::new(DomId(3), Access::Read),
        Perm::new(DomId(5), Access::Both),
    ];
    xs.set_perms(&node, &perms).map_err(e("set_perms"))?;
    check(
        "get_perms",
        xs.get_perms(&node).map_err(e("get_perms"))?,
        perms.to_vec(),
    )?;
    // `xenstore-ls -p` shows them as `(n0,r3,b5)`.
    let listing = cli("ls", &["-p", &dir])?;
    if !listing.contains("(n0,r3,b5)") {
        return Err(format!("xenstore-ls -p shows {listing:?}"));
    }
    Ok(())
}

fn domain_path_and_name() -> Result<(), String> {
    let mut xs = open()?;
    check(
        "get_domain_path(0)",
        xs.get_domain_path(DomId(0)).map_err(e("get_domain_path"))?,
        "/local/domain/0".into(),
    )?;
    check(
        "dom0's name",
        xs.read_string("/local/domain/0/name")
            .map_err(e("read name"))?
            + "\n",
        cli("read", &["/local/domain/0/name"])?,
    )
}

fn directory_part_large() -> Result<(), String> {
    let mut xs = open()?;
    let dir = fresh(&mut xs, "big")?;
    // 300 names of 32 bytes: ~9.9 KB of names, beyond one 4096-byte reply.
    let names: Vec<String> = (0..300)
        .map(|i| format!("entry-{i:04}-{}", "x".repeat(21)))
        .collect();
    let mut tickets = Vec::new();
    for name in &names {
        let op = xen_store::op::write(&format!("{dir}/{name}"), b"").map_err(e("op"))?;
        tickets.push(xs.submit(op, 0).map_err(e("submit"))?);
    }
    for ticket in tickets {
        xs.wait(ticket).map_err(e("write"))?;
    }
    match xs.run(xen_store::op::directory(&dir).map_err(e("op"))?) {
        Err(error) if error.errno() == Some(Errno::E2BIG) => {}
        other => {
            return Err(format!(
                "DIRECTORY of ~10 KB of names gave {other:?}, not E2BIG"
            ));
        }
    }
    let mut ours = xs.directory(&dir).map_err(e("directory"))?;
    ours.sort();
    let mut theirs: Vec<String> = cli("list", &[&dir])?.lines().map(String::from).collect();
    theirs.sort();
    check("children count", ours.len(), 300)?;
    check("children", ours, theirs)
}

fn watch_fires_on_cli_write() -> Result<(), String> {
    let mut xs = open()?;
    let dir = fresh(&mut xs, "watch")?;
    xs.mkdir(&dir).map_err(e("mkdir"))?;
    let watch = xs.watch(&dir).map_err(e("watch"))?;
    let first = xs.next_event().map_err(e("first event"))?;
    check(
        "first event",
        (first.watch, first.path),
        (watch, dir.clone()),
    )?;
    cli("write", &[&format!("{dir}/k"), "v"])?;
    let event = xs.next_event().map_err(e("event"))?;
    check("event path", event.path, format!("{dir}/k"))?;
    xs.unwatch(watch).map_err(e("unwatch"))
}

fn transaction_conflict_and_retry() -> Result<(), String> {
    let mut a = open()?;
    let mut b = open()?;
    let dir = fresh(&mut a, "tx")?;
    let key = format!("{dir}/counter");
    a.write(&key, b"0").map_err(e("write"))?;

    let mut tx_a = a.transaction().map_err(e("start a"))?;
    let mut tx_b = b.transaction().map_err(e("start b"))?;
    tx_a.read(&key).map_err(e("read a"))?;
    tx_b.read(&key).map_err(e("read b"))?;
    tx_a.write(&key, b"a").map_err(e("write a"))?;
    tx_b.write(&key, b"b").map_err(e("write b"))?;
    tx_a.commit().map_err(e("commit a"))?;
    match tx_b.commit() {
        Err(error)
            if error.errno() == Some(Errno::EAGAIN) && error.kind() == ErrorKind::Conflict => {}
        other => return Err(format!("the second commit gave {other:?}, not EAGAIN")),
    }
    drop((tx_a, tx_b));
    check("after the conflict", cli("read", &[&key])?, "a\n".into())?;

    // The retry helper: the first attempt is spoiled by a CLI write in the middle.
    let mut runs = 0;
    a.transact(|tx| {
        runs += 1;
        let value = tx.read_string(&key)?;
        if runs == 1 {
            cli("write", &[&key, "spoiler"]).map_err(|_| xen_store::Error::InvalidInput("cli"))?;
        }
        tx.write(&key, format!("{value}+1").as_bytes())
    })
    .map_err(e("transact"))?;
    check("attempts", runs, 2)?;
    check(
        "after transact",
        cli("read", &[&key])?,
        "spoiler+1\n".into(),
    )
}

fn errors_typed() -> Result<(), String> {
    let mut xs = open()?;
    let missing = xs.read(&format!("{BASE}/does/not/exist")).err();
    check(
        "ENOENT",
        missing.map(|e| e.kind()),
        Some(ErrorKind::NotFound),
    )?;
    // Refused before sending: the connection stays usable.
    let bad = xs.read("/a//b").err().map(|e| e.kind());
    check("bad path", bad, Some(ErrorKind::InvalidInput))?;
    let big = xs
        .write(&format!("{BASE}/big"), &[b'x'; 5000])
        .err()
        .map(|e| e.kind());
    check("oversized write", big, Some(ErrorKind::InvalidInput))?;
    xs.read("/local/domain/0/name")
        .map_err(e("read after refusals"))?;
    Ok(())
}

fn xenbus_device() -> Result<(), String> {
    let mut xs = Client::from_local(Local::xenbus().map_err(|e| format!("/dev/xen/xenbus: {e}"))?);
    let dir = format!("{BASE}/xenbus");
    xs.write(&format!("{dir}/k"), b"via the kernel")
        .map_err(e("write"))?;
    check(
        "xenstore-read",
        cli("read", &[&format!("{dir}/k")])?,
        "via the kernel\n".into(),
    )?;
    check(
        "name",
        xs.read_string("/local/domain/0/name").map_err(e("read"))? + "\n",
        cli("read", &["/local/domain/0/name"])?,
    )?;
    // Queued requests go out in one flush; the device takes one message per write.
    let mut tickets = Vec::new();
    for i in 0..3 {
        let op = xen_store::op::write(&format!("{dir}/q{i}"), format!("{i}").as_bytes())
            .map_err(e("op"))?;
        tickets.push(xs.queue(op, 0).map_err(e("queue"))?);
    }
    xs.flush().map_err(e("flush"))?;
    for ticket in tickets {
        xs.wait(ticket).map_err(e("queued write"))?;
    }
    check(
        "xenstore-read of the last queued write",
        cli("read", &[&format!("{dir}/q2")])?,
        "2\n".into(),
    )?;
    // The kernel answers WATCH itself; the first event still comes from xenstored.
    let watch = xs.watch(&dir).map_err(e("watch"))?;
    check(
        "first event",
        xs.next_event().map_err(e("event"))?.path,
        dir.clone(),
    )?;
    xs.unwatch(watch).map_err(e("unwatch"))
}

fn async_in_flight_and_watch() -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    runtime.block_on(async {
        let xs = AsyncClient::connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let dir = format!("{BASE}/async");
        xs.rm(&dir).await.map_err(e("rm"))?;
        // Requests are sent when first polled: spawned, all 64 are in flight at once.
        let writes: Vec<_> = (0..64)
            .map(|i| tokio::spawn(xs.write(&format!("{dir}/{i}"), format!("{i}").as_bytes())))
            .collect();
        for write in writes {
            write
                .await
                .map_err(|e| format!("task: {e}"))?
                .map_err(e("write"))?;
        }
        let reads: Vec<_> = (0..64)
            .map(|i| tokio::spawn(xs.read(&format!("{dir}/{i}"))))
            .collect();
        for (i, read) in reads.into_iter().enumerate() {
            check(
                "async read",
                read.await
                    .map_err(|e| format!("task: {e}"))?
                    .map_err(e("read"))?,
                format!("{i}").into_bytes(),
            )?;
        }
        check(
            "xenstore-read",
            cli("read", &[&format!("{dir}/63")])?,
            "63\n".into(),
        )?;
        let mut watch = xs.watch(&dir).await.map_err(e("watch"))?;
        let mut next = async || {
            poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut watch), cx))
                .await
                .ok_or("the watch stream ended")?
                .map_err(e("event"))
        };
        check("first event", next().await?.path, dir.clone())?;
        cli("write", &[&format!("{dir}/from-cli"), "x"])?;
        check("event", next().await?.path, format!("{dir}/from-cli"))
    })
}
