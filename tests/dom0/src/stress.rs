//! `xen-dom0-tests stress [--rounds N] [--cycles M] [--samples S] [--store-rounds R]`:
//! xen-evtchn and xen-store under concurrency, on a multi-threaded tokio runtime in a dom0 with
//! two vCPUs, and how their cost grows (needs the toolstack's `xenstored`).
//!
//! Every wait has a deadline ([`PATIENCE`]) that is looked at before the awaited future, so a
//! lost wake-up is a failure, never a slow pass. Each measure prints one
//! `stress <measure> events=N lost=N leaked=N` line and is reported as a case that requires
//! `lost=0 leaked=0`:
//!
//! - `evtchn_waiters`: 64 tasks, each awaiting its own loopback port on one
//!   `TokioEventChannel`, `N` rounds each; the notifications come from two plain threads (the
//!   other vCPU), asked by each waiter after its wake-up and sent in bursts, while a third
//!   signals 128 more ports every millisecond (noise: ports queued while a read copies the
//!   ring).
//! - `evtchn_bind_unbind`: the same waiters while 8 tasks bind, await and unbind loopback pairs
//!   on the same handle (`M` cycles in all).
//! - `evtchn_events_stream`: the same waiters while an `Events` stream consumer on the same
//!   handle, whose handler waits for the waiters to move on, takes its own ports' events (and
//!   hands back any waiter's delivery it took, by signalling it again).
//! - `evtchn_sync_threads`: one `EvtchnDevice` used from 4 threads, each binding, ping-ponging and
//!   unbinding its own loopback pairs (`M` cycles in all).
//! - `store_in_flight_1`: an `AsyncClient` allowing 1 request in flight, 64 tasks writing and
//!   reading back their own key, `R` rounds each (default `N`; events = requests, lost =
//!   stalled requests).
//!
//! Leaked: ports the handle still holds after every binding was dropped, plus every port number
//! the measure was handed that Xen (`EVTCHNOP_status`) does not show closed; for xenstore, the
//! requests without a reply.
//!
//! Then the scale measures (medians of `S` samples, printed, judged only when absurd):
//! `scale evtchn ports=N roundtrip_ns=…` (a loopback round trip with N ports bound on the
//! handle) and `scale store watches=N read_ns=…` (a read with N watches on the connection).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use xen_evtchn::linux::EvtchnDevice;
use xen_evtchn::tokio::TokioEventChannel;
use xen_evtchn::{AsyncEventChannel, DomId, EventChannel, Port};
use xen_hypercall::event_channel::ChannelState;
use xen_hypercall::prelude::*;
use xen_hypercall_privcmd::Privcmd;
use xen_store::tokio::{AsyncClient, AsyncStore};
use xen_testbed_protocol::{MARKER, Reporter, Stdout, Summary};

/// dom0's own id, for loopback channels.
const DOM0: DomId = DomId::new(0);
/// How long any single wait may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);
/// Tasks awaiting their own port.
const WAITERS: usize = 64;
/// Tasks binding and unbinding concurrently.
const BINDERS: usize = 8;
/// Threads sharing the sync device.
const SYNC_THREADS: usize = 4;
/// Tasks sharing the xenstore connection.
const STORE_TASKS: usize = 64;
/// The ports the stream consumer owns.
const STREAM_PAIRS: usize = 4;
/// The ports signalled all the time beside the waiters.
const NOISE_PAIRS: usize = 128;
/// How long a notifier thread waits before each burst of the notifications it was asked for.
const NOTIFY_DELAY: Duration = Duration::from_micros(300);
/// Where the xenstore measures write.
const STORE_DIR: &str = "/local/domain/0/data/stress";

pub(crate) use xen_testbed_protocol::stress::CASES;

/// What a run does: rounds per waiter, bind/unbind cycles per measure, samples per scale point.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    rounds: u64,
    cycles: u64,
    samples: usize,
    /// Rounds per xenstore task (one request in flight: each round is two round trips).
    store_rounds: u64,
}

/// `stress`: exits with failure if a case failed.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let mut sizes = Sizes {
        rounds: 100,
        cycles: 400,
        samples: 200,
        store_rounds: 0,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0);
        match (flag.as_str(), value) {
            ("--rounds", Some(v)) => sizes.rounds = v,
            ("--cycles", Some(v)) => sizes.cycles = v,
            ("--samples", Some(v)) => sizes.samples = v as usize,
            ("--store-rounds", Some(v)) => sizes.store_rounds = v,
            _ => {
                eprintln!(
                    "usage: xen-dom0-tests stress [--rounds N] [--cycles M] [--samples S] [--store-rounds R] (positive numbers)"
                );
                return ExitCode::from(2);
            }
        }
    }
    if sizes.store_rounds == 0 {
        // One request in flight is two round trips through xenstored a round, 25 to 110 a
        // second under TCG: a tenth of the event-channel rounds keeps the measure near 30 s.
        sizes.store_rounds = sizes.rounds.div_ceil(10);
    }
    let mut reporter = Reporter::new(Stdout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let privcmd = Privcmd::open();
    match (&runtime, &privcmd) {
        (Ok(runtime), Ok(privcmd)) => {
            reporter.out(format_args!(
                "stress: {} vCPUs, {} rounds per waiter, {} bind/unbind cycles, {} samples",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                sizes.rounds,
                sizes.cycles,
                sizes.samples
            ));
            let measures: [(&str, Measure); 5] = [
                ("stress_evtchn_waiters", |r, p, s| {
                    r.block_on(evtchn_waiters(p, s, Extra::None))
                }),
                ("stress_evtchn_bind_unbind", |r, p, s| {
                    r.block_on(evtchn_waiters(p, s, Extra::BindUnbind))
                }),
                ("stress_evtchn_events_stream", |r, p, s| {
                    r.block_on(evtchn_waiters(p, s, Extra::Stream))
                }),
                ("stress_evtchn_sync_threads", |_, p, s| sync_threads(p, s)),
                ("stress_store_in_flight_1", |r, _, s| {
                    r.block_on(store_in_flight_1(s))
                }),
            ];
            for (index, (case, measure)) in measures.iter().enumerate() {
                let start = Instant::now();
                let watchdog = Watchdog::start(&CASES[index..], sizes, reporter.summary());
                let mut counts = measure(runtime, privcmd, sizes);
                drop(watchdog);
                counts.more += &format!(" seconds={:.1}", start.elapsed().as_secs_f64());
                report(&mut reporter, case, counts);
            }
            std::thread::scope(|scope| {
                scope.spawn(|| scale(sizes.samples, &mut reporter));
            });
        }
        _ => {
            let why = match (runtime, privcmd) {
                (Err(e), _) => format!("tokio runtime: {e}"),
                (_, Err(e)) => format!("privcmd: {e}"),
                _ => unreachable!("one of them failed"),
            };
            for case in CASES {
                reporter.case(case, Err::<(), _>(&why));
            }
        }
    }
    ExitCode::from(reporter.done().exit_code())
}

/// Waits and wake-ups seen by the measure running now (its watchdog reports them).
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Ends the program if a measure outlives its budget: every wait has its own deadline, so a
/// measure that runs on is stuck inside a poll (a lock never released, a loop that never
/// yields), and would otherwise be seen only as QEMU's timeout.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Watches the measure reported as `cases[0]`; on expiry reports it and the cases after it
    /// as failed, ends the run with a `DONE` line counting them and the cases reported
    /// `before`, and exits.
    fn start(cases: &'static [&'static str], sizes: Sizes, before: Summary) -> Self {
        // Generous: the event-channel measures move 500 to 2000 events a second under TCG (a
        // cycle is a few), xenstore with one request in flight 25 to 110 requests.
        let seconds = if cases[0] == "stress_store_in_flight_1" {
            (sizes.store_rounds * 64 * 2) / 20
        } else {
            (sizes.rounds * 64 + sizes.cycles * 10) / 200
        };
        let budget = Duration::from_secs(40 + seconds);
        PROGRESS.store(0, Ordering::Relaxed);
        let (done, finished) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Progress every 10 s: a slow measure keeps counting, a hung one stops.
            let start = Instant::now();
            loop {
                let left = budget.saturating_sub(start.elapsed());
                if left.is_zero() {
                    break;
                }
                match finished.recv_timeout(left.min(Duration::from_secs(10))) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                println!(
                    "{MARKER}OUT progress after {} s: {}",
                    start.elapsed().as_secs(),
                    PROGRESS.load(Ordering::Relaxed)
                );
            }
            let mut reporter = Reporter::new(Stdout);
            let progress = PROGRESS.load(Ordering::Relaxed);
            let hung = format!(
                "still running after {} s ({progress} waits completed): stuck inside a poll",
                budget.as_secs()
            );
            let measure = cases[0].trim_start_matches("stress_");
            reporter.out(format_args!("stress {measure}: {hung}"));
            reporter.out(format_args!("stress {measure}: threads {}", threads()));
            reporter.case(cases[0], Err::<(), _>(&hung));
            for case in &cases[1..] {
                reporter.case(case, Err::<(), _>("not run: an earlier measure hung"));
            }
            let now = reporter.summary();
            println!(
                "{MARKER}DONE passed={} failed={}",
                before.passed + now.passed,
                before.failed + now.failed
            );
            std::process::exit(1);
        });
        Self {
            done: Some(done),
            thread: Some(thread),
        }
    }
}

/// Each thread of this process as `name:state:wchan` (running `R`, or asleep and where: a
/// spinning poll shows as `R`, a lock never released as `S` in `futex_wait_queue`).
fn threads() -> String {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return "unknown".into();
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    tasks
        .flatten()
        .map(|task| {
            let stat = read(task.path().join("stat"));
            // `pid (comm) state ...`: the name may hold spaces, the state follows its `)`.
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.get(..1))
                .unwrap_or("?")
                .to_string();
            format!(
                "{}:{state}:{}",
                read(task.path().join("comm")).trim(),
                read(task.path().join("wchan")).trim()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One stress measure.
type Measure = fn(&tokio::runtime::Runtime, &Privcmd, Sizes) -> Counts;

/// What a measure counted.
#[derive(Debug, Default)]
struct Counts {
    /// Events sent (notifications; xenstore requests).
    events: u64,
    /// Events that missed their deadline or were refused to their waiter.
    lost: u64,
    /// Ports (or requests) left behind.
    leaked: u64,
    /// What went wrong, the first few.
    problems: Vec<String>,
    /// Other numbers worth printing (`name=value`).
    more: String,
}

fn report(reporter: &mut Reporter<Stdout>, case: &str, counts: Counts) {
    let measure = case.trim_start_matches("stress_");
    reporter.out(format_args!(
        "stress {measure} events={} lost={} leaked={}{}",
        counts.events, counts.lost, counts.leaked, counts.more
    ));
    for problem in counts.problems.iter().take(5) {
        reporter.out(format_args!("stress {measure}: {problem}"));
    }
    let result = if counts.lost == 0 && counts.leaked == 0 && counts.problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "events={} lost={} leaked={}: {}",
            counts.events,
            counts.lost,
            counts.leaked,
            counts.problems.first().map_or("", String::as_str)
        ))
    };
    reporter.case(case, result);
}

/// Counters shared by the tasks and threads of one measure.
#[derive(Debug, Default)]
struct Shared {
    sent: AtomicU64,
    received: AtomicU64,
    lost: AtomicU64,
    problems: Mutex<Vec<String>>,
    /// Every port number the measure was handed.
    ports: Mutex<BTreeSet<Port>>,
    /// The stream consumer's own events, and the waiters' deliveries it handed back.
    stream_taken: AtomicU64,
    handed_back: AtomicU64,
}

impl Shared {
    fn problem(&self, text: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if problems.len() < 16 {
            problems.push(text);
        }
    }

    fn lose(&self, text: String) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.problem(text);
    }

    fn handed(&self, port: Port) -> Port {
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port);
        port
    }

    /// The counts, `leaked` being the ports still bound on the handle plus those Xen does not
    /// show closed.
    fn counts(&self, privcmd: &Privcmd, still_bound: usize) -> Counts {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let open: Vec<Port> = ports
            .iter()
            .copied()
            .filter(|&port| {
                !matches!(
                    privcmd.evtchn_status(DomId::SELF, port).map(|s| s.state),
                    Ok(ChannelState::Closed)
                )
            })
            .collect();
        let mut problems =
            std::mem::take(&mut *self.problems.lock().unwrap_or_else(|e| e.into_inner()));
        if still_bound > 0 {
            problems.push(format!("{still_bound} ports still bound on the handle"));
        }
        if !open.is_empty() {
            problems.push(format!(
                "{} ports not closed in Xen, e.g. {:?}",
                open.len(),
                &open[..open.len().min(8)]
            ));
        }
        let (sent, received) = (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        );
        Counts {
            events: sent,
            lost: self.lost.load(Ordering::Relaxed),
            leaked: (still_bound + open.len()) as u64,
            problems,
            more: format!(
                " received={received} ports={} stream_events={} handed_back={}",
                ports.len(),
                self.stream_taken.load(Ordering::Relaxed),
                self.handed_back.load(Ordering::Relaxed)
            ),
        }
    }
}

/// Awaits `future` for at most [`PATIENCE`]; `None` when the deadline passed. The deadline is
/// looked at before the future: `tokio::time::timeout` polls the future once more when its
/// timer fires, and that poll would rescue a lost wake-up (a poll reads the fd, or drives the
/// connection), turning it into a slow pass.
pub(crate) async fn deadline<T>(future: impl Future<Output = T>) -> Option<T> {
    let mut future = pin!(future);
    let mut timer = pin!(tokio::time::sleep(PATIENCE));
    std::future::poll_fn(|cx| {
        if timer.is_elapsed() {
            return Poll::Ready(None);
        }
        match future.as_mut().poll(cx) {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending if timer.as_mut().poll(cx).is_ready() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What runs beside the waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    BindUnbind,
    Stream,
}

/// A loopback pair on `ch`: `(unbound, bound to it)`, the bound end's bind-pending event
/// consumed.
async fn pair(ch: &TokioEventChannel, shared: &Shared) -> Result<(Port, Port), String> {
    let a = shared.handed(
        ch.alloc_unbound_raw(DOM0)
            .map_err(|e| format!("alloc_unbound: {e}"))?,
    );
    let b = shared.handed(
        ch.bind_interdomain_raw(DOM0, a)
            .map_err(|e| format!("bind_interdomain: {e}"))?,
    );
    match deadline(ch.wait_port(b)).await {
        Some(Ok(())) => Ok((a, b)),
        Some(Err(e)) => Err(format!("the event pending at bind on {b}: {e}")),
        None => Err(format!(
            "the event pending at bind on {b}: not delivered within 5 s"
        )),
    }
}

/// The waiters (and `extra` beside them) on one handle; see the module documentation.
async fn evtchn_waiters(privcmd: &Privcmd, sizes: Sizes, extra: Extra) -> Counts {
    let shared = Arc::new(Shared::default());
    let ch = match TokioEventChannel::open() {
        Ok(ch) => Arc::new(ch),
        Err(e) => {
            shared.problem(format!("open: {e}"));
            return shared.counts(privcmd, 0);
        }
    };
    let mut pairs = Vec::new();
    for _ in 0..WAITERS {
        match pair(&ch, &shared).await {
            Ok(p) => pairs.push(p),
            Err(e) => {
                shared.problem(e);
                break;
            }
        }
    }
    let running = Arc::new(AtomicBool::new(true));
    let progress = Arc::new(tokio::sync::Notify::new());
    // Two notifier threads, each serving half of the waiters: a waiter asks for its next event
    // by sending its index.
    let mut asks = Vec::new();
    let mut notifiers = Vec::new();
    // Beside the stream, longer lulls: its own events then come while every waiter is parked.
    let pause = if extra == Extra::Stream {
        10 * NOTIFY_DELAY
    } else {
        NOTIFY_DELAY
    };
    for _ in 0..2 {
        let (ask, asked) = mpsc::channel::<usize>();
        asks.push(ask);
        let (ch, shared, pairs) = (Arc::clone(&ch), Arc::clone(&shared), pairs.clone());
        notifiers.push(std::thread::spawn(move || {
            while let Ok(first) = asked.recv() {
                // In bursts, after a pause: the waiters all park between bursts, when only the
                // fd's readiness can wake them.
                std::thread::sleep(pause);
                for index in std::iter::once(first).chain(asked.try_iter()) {
                    match ch.notify(pairs[index].1) {
                        Ok(()) => {
                            shared.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => shared.problem(format!("notify {}: {e}", pairs[index].1)),
                    }
                }
            }
        }));
    }
    let mut tasks = Vec::new();
    for (index, &(a, _)) in pairs.iter().enumerate() {
        let (ch, shared, progress) = (Arc::clone(&ch), Arc::clone(&shared), Arc::clone(&progress));
        let ask = asks[index % 2].clone();
        let rounds = sizes.rounds;
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                if ask.send(index).is_err() {
                    return;
                }
                match deadline(ch.wait_port(a)).await {
                    Some(Ok(())) => {
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        PROGRESS.fetch_add(1, Ordering::Relaxed);
                        progress.notify_waiters();
                    }
                    Some(Err(e)) => {
                        return shared.lose(format!("waiter on {a}, round {round}: {e}"));
                    }
                    None => {
                        return shared.lose(format!(
                            "waiter on {a}, round {round}: lost wake-up (nothing within 5 s; the fd {})",
                            fd_state(ch.device())
                        ));
                    }
                }
            }
        }));
    }
    drop(asks);
    let mut helpers = Vec::new();
    match extra {
        Extra::None => {
            // Noise from the other vCPU: ports signalled all the time, so that the driver queues
            // ports while the waiters' reads copy the ring (whose wake-up comes only when the
            // ring goes from empty to non-empty).
            let mut noise = Vec::new();
            for _ in 0..NOISE_PAIRS {
                match pair(&ch, &shared).await {
                    Ok((_, b)) => noise.push(b),
                    Err(e) => shared.problem(e),
                }
            }
            let (ch, shared, running) =
                (Arc::clone(&ch), Arc::clone(&shared), Arc::clone(&running));
            notifiers.push(std::thread::spawn(move || {
                while running.load(Ordering::Acquire) {
                    // All of them at once: the reads copy long batches meanwhile.
                    for &sender in &noise {
                        if let Err(e) = ch.notify(sender) {
                            shared.problem(format!("notify {sender}: {e}"));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
        }
        Extra::BindUnbind => {
            let per_task = sizes.cycles.div_ceil(BINDERS as u64);
            for _ in 0..BINDERS {
                let (ch, shared) = (Arc::clone(&ch), Arc::clone(&shared));
                helpers.push(tokio::spawn(async move {
                    for cycle in 0..per_task {
                        if let Err(e) = bind_unbind_cycle(&ch, &shared).await {
                            return shared.lose(format!("bind/unbind cycle {cycle}: {e}"));
                        }
                    }
                }));
            }
        }
        Extra::Stream => {
            let mut own = Vec::new();
            for _ in 0..STREAM_PAIRS {
                match pair(&ch, &shared).await {
                    Ok(p) => own.push(p),
                    Err(e) => shared.problem(e),
                }
            }
            helpers.push(tokio::spawn(stream_consumer(
                Arc::clone(&ch),
                Arc::clone(&shared),
                pairs.clone(),
                own.clone(),
                Arc::clone(&running),
                Arc::clone(&progress),
            )));
            // The stream's own events, from a thread: one every millisecond while the waiters run.
            let (ch, shared, running) =
                (Arc::clone(&ch), Arc::clone(&shared), Arc::clone(&running));
            notifiers.push(std::thread::spawn(move || {
                let mut tick = 0usize;
                while running.load(Ordering::Acquire) && !own.is_empty() {
                    let sender = own[tick % own.len()].1;
                    if let Err(e) = ch.notify(sender) {
                        shared.problem(format!("notify {sender}: {e}"));
                    }
                    tick += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
        }
    }
    for task in tasks {
        if let Err(e) = task.await {
            shared.problem(format!("waiter task: {e}"));
        }
    }
    running.store(false, Ordering::Release);
    progress.notify_waiters();
    for helper in helpers {
        if let Err(e) = helper.await {
            shared.problem(format!("helper task: {e}"));
        }
    }
    for notifier in notifiers {
        if notifier.join().is_err() {
            shared.problem("a notifier thread panicked".into());
        }
    }
    for &(a, b) in &pairs {
        for port in [b, a] {
            if let Err(e) = ch.unbind_raw(port) {
                shared.problem(format!("unbind {port}: {e}"));
            }
        }
    }
    // What was still bound: the noise and stream pairs are unbound by dropping the handle
    // below, so count before that only what the measure itself should have unbound.
    let helper_ports = match extra {
        Extra::None => 2 * NOISE_PAIRS,
        Extra::BindUnbind => 0,
        Extra::Stream => 2 * STREAM_PAIRS,
    };
    let still_bound = ch.device().bound_ports().len().saturating_sub(helper_ports);
    drop(ch);
    shared.counts(privcmd, still_bound)
}

/// What the driver says of `dev`'s fd right now: whether ports are queued unread (a wake-up
/// lost on the way to the waiters) or none (lost before the fd).
fn fd_state(dev: &EvtchnDevice) -> String {
    use std::os::fd::AsFd;

    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(dev.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => format!("polls {:?}", fds[0].revents().unwrap_or(PollFlags::empty())),
        Err(e) => format!("cannot be polled: {e}"),
    }
}

/// One cycle of a binder: a loopback pair bound, its bind-pending event and one notification
/// awaited, both ends unbound.
async fn bind_unbind_cycle(ch: &TokioEventChannel, shared: &Shared) -> Result<(), String> {
    let (a, b) = pair(ch, shared).await?;
    ch.notify(b).map_err(|e| format!("notify {b}: {e}"))?;
    shared.sent.fetch_add(1, Ordering::Relaxed);
    match deadline(ch.wait_port(a)).await {
        Some(Ok(())) => {
            shared.received.fetch_add(1, Ordering::Relaxed);
            PROGRESS.fetch_add(1, Ordering::Relaxed);
        }
        Some(Err(e)) => return Err(format!("waiting on {a} just bound: {e}")),
        None => {
            return Err(format!(
                "lost wake-up on {a} just bound (nothing within 5 s)"
            ));
        }
    }
    ch.unbind_raw(b).map_err(|e| format!("unbind {b}: {e}"))?;
    ch.unbind_raw(a).map_err(|e| format!("unbind {a}: {e}"))
}

/// The `Events` consumer: takes its own ports' events; hands any waiter's delivery it took back
/// by signalling that port again; after each event, its handler waits for a waiter to move on
/// (a daemon's handler awaiting another part of the program) while the waiters run.
async fn stream_consumer(
    ch: Arc<TokioEventChannel>,
    shared: Arc<Shared>,
    waiters: Vec<(Port, Port)>,
    own: Vec<(Port, Port)>,
    running: Arc<AtomicBool>,
    progress: Arc<tokio::sync::Notify>,
) {
    use futures_core::Stream;
    let mut events = ch.events();
    let (mut taken, mut handed_back) = (0u64, 0u64);
    while running.load(Ordering::Acquire) {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut events).poll_next(cx));
        let port = match deadline(next).await {
            Some(Some(Ok(port))) => port,
            Some(Some(Err(e))) => return shared.lose(format!("events stream: {e}")),
            Some(None) => return shared.problem("the events stream ended".into()),
            None if running.load(Ordering::Acquire) => {
                return shared.lose(
                    "events stream: nothing within 5 s while its ports are signalled every millisecond"
                        .into(),
                );
            }
            None => break,
        };
        if let Some(&(_, sender)) = waiters.iter().find(|(a, _)| *a == port) {
            handed_back += 1;
            if let Err(e) = ch.notify(sender) {
                shared.problem(format!("handing back {port}: {e}"));
            }
        } else if own.iter().any(|(a, _)| *a == port) {
            taken += 1;
        }
        // The handler: wait for a waiter to move on (a wake-up after this point), or the end of
        // the run (flagged before the last `notify_waiters`: created first, it cannot miss it).
        let moved = deadline(async {
            let notified = progress.notified();
            if running.load(Ordering::Acquire) {
                notified.await;
            }
        })
        .await;
        if moved.is_none() && running.load(Ordering::Acquire) {
            return shared.lose(format!(
                "the stream's handler waited 5 s for a waiter to move on (after {port})"
            ));
        }
    }
    shared.stream_taken.store(taken, Ordering::Relaxed);
    shared.handed_back.store(handed_back, Ordering::Relaxed);
}

/// The sync device from [`SYNC_THREADS`] threads: each binds a loopback pair, ping-pongs once
/// and unbinds, `cycles` in all; deliveries any thread reads are shared through one set.
fn sync_threads(privcmd: &Privcmd, sizes: Sizes) -> Counts {
    let shared = Arc::new(Shared::default());
    let dev = match EvtchnDevice::open() {
        Ok(dev) => Arc::new(dev),
        Err(e) => {
            shared.problem(format!("open: {e}"));
            return shared.counts(privcmd, 0);
        }
    };
    let seen = Arc::new(Mutex::new(BTreeSet::<Port>::new()));
    let per_thread = sizes.cycles.div_ceil(SYNC_THREADS as u64);
    let threads: Vec<_> = (0..SYNC_THREADS)
        .map(|_| {
            let (dev, shared, seen) = (Arc::clone(&dev), Arc::clone(&shared), Arc::clone(&seen));
            std::thread::spawn(move || {
                for cycle in 0..per_thread {
                    if let Err(e) = sync_cycle(&dev, &shared, &seen) {
                        return shared.lose(format!("thread cycle {cycle}: {e}"));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        if thread.join().is_err() {
            shared.problem("a thread panicked".into());
        }
    }
    let still_bound = dev.bound_ports().len();
    drop(dev);
    shared.counts(privcmd, still_bound)
}

/// Waits until `port` was delivered (read by this thread or another), within [`PATIENCE`].
fn sync_await(dev: &EvtchnDevice, seen: &Mutex<BTreeSet<Port>>, port: Port) -> Result<(), String> {
    let start = Instant::now();
    let mut ports = [Port::new(0); 64];
    loop {
        let count = dev
            .take_pending(&mut ports)
            .map_err(|e| format!("take_pending: {e}"))?;
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(&ports[..count]);
        // Unmasked while the set holds the delivery: a port is re-armed only once recorded.
        dev.unmask_all(&ports[..count])
            .map_err(|e| format!("unmask: {e}"))?;
        if seen.remove(&port) {
            return Ok(());
        }
        drop(seen);
        if start.elapsed() > PATIENCE {
            return Err(format!("lost wake-up on {port} (nothing within 5 s)"));
        }
        dev.wait_readable(10).map_err(|e| format!("poll: {e}"))?;
    }
}

fn sync_cycle(
    dev: &EvtchnDevice,
    shared: &Shared,
    seen: &Mutex<BTreeSet<Port>>,
) -> Result<(), String> {
    let a = shared.handed(
        dev.alloc_unbound_raw(DOM0)
            .map_err(|e| format!("alloc_unbound: {e}"))?,
    );
    let b = shared.handed(
        dev.bind_interdomain_raw(DOM0, a)
            .map_err(|e| format!("bind_interdomain: {e}"))?,
    );
    sync_await(dev, seen, b).map_err(|e| format!("the event pending at bind: {e}"))?;
    for (sender, receiver) in [(b, a), (a, b)] {
        dev.notify(sender)
            .map_err(|e| format!("notify {sender}: {e}"))?;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        sync_await(dev, seen, receiver)?;
        shared.received.fetch_add(1, Ordering::Relaxed);
        PROGRESS.fetch_add(1, Ordering::Relaxed);
    }
    dev.unbind_raw(b)
        .map_err(|e| format!("unbind {b} just bound: {e}"))?;
    dev.unbind_raw(a)
        .map_err(|e| format!("unbind {a} just bound: {e}"))
}

/// Connects to xenstored's socket with at most `max_in_flight` requests in flight.
async fn store_client(max_in_flight: usize) -> Result<AsyncClient, String> {
    let socket = tokio::net::UnixStream::connect(xen_store::unix::SOCKET_PATH)
        .await
        .map_err(|e| format!("connecting to {}: {e}", xen_store::unix::SOCKET_PATH))?;
    Ok(AsyncClient::with_max_in_flight(socket, max_in_flight))
}

/// 64 tasks on a connection allowing one request in flight, each writing and reading back its
/// own key.
async fn store_in_flight_1(sizes: Sizes) -> Counts {
    let mut counts = Counts::default();
    let client = match store_client(1).await {
        Ok(client) => client,
        Err(e) => {
            counts.problems.push(e);
            return counts;
        }
    };
    let requests = Arc::new(AtomicU64::new(0));
    let replies = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared::default());
    let tasks: Vec<_> = (0..STORE_TASKS)
        .map(|task| {
            let (client, requests, replies, shared) = (
                client.clone(),
                Arc::clone(&requests),
                Arc::clone(&replies),
                Arc::clone(&shared),
            );
            let rounds = sizes.store_rounds;
            tokio::spawn(async move {
                let path = format!("{STORE_DIR}/t{task}");
                for round in 0..rounds {
                    let value = format!("{round}");
                    requests.fetch_add(1, Ordering::Relaxed);
                    match deadline(client.write(&path, value.as_bytes())).await {
                        Some(Ok(())) => {
                            replies.fetch_add(1, Ordering::Relaxed);
                            PROGRESS.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Err(e)) => return shared.problem(format!("write {path}: {e}")),
                        None => {
                            return shared
                                .lose(format!("task {task} round {round}: a write stalled 5 s"));
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    match deadline(client.read(&path)).await {
                        Some(Ok(read)) if read == value.as_bytes() => {
                            {
                                replies.fetch_add(1, Ordering::Relaxed);
                                PROGRESS.fetch_add(1, Ordering::Relaxed);
                            };
                        }
                        Some(Ok(read)) => {
                            return shared.problem(format!(
                                "read {path}: {:?}, wrote {value:?}",
                                String::from_utf8_lossy(&read)
                            ));
                        }
                        Some(Err(e)) => return shared.problem(format!("read {path}: {e}")),
                        None => {
                            return shared
                                .lose(format!("task {task} round {round}: a read stalled 5 s"));
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        if let Err(e) = task.await {
            shared.problem(format!("task: {e}"));
        }
    }
    let _ = deadline(client.rm(STORE_DIR)).await;
    let (requests, replies) = (
        requests.load(Ordering::Relaxed),
        replies.load(Ordering::Relaxed),
    );
    counts.events = requests;
    counts.lost = shared.lost.load(Ordering::Relaxed);
    counts.leaked = requests - replies;
    counts.problems =
        std::mem::take(&mut *shared.problems.lock().unwrap_or_else(|e| e.into_inner()));
    counts.more = format!(" replies={replies} stalls={}", counts.lost);
    counts
}

/// The median and the minimum of `samples` (nanoseconds).
fn median_and_min(samples: &mut [u128]) -> (u128, u128) {
    samples.sort_unstable();
    (
        samples.get(samples.len() / 2).copied().unwrap_or(0),
        samples.first().copied().unwrap_or(0),
    )
}

/// The scale measures, on a one-thread runtime on a thread pinned to vCPU 0 (where Linux
/// delivers event-channel interrupts first): a wake-up then never waits for another vCPU to be
/// scheduled, and both clock reads come from one vCPU's clock (a task moved between vCPUs
/// under TCG has read a later start than its end).
fn scale(samples: usize, reporter: &mut Reporter<Stdout>) {
    let mut cpus = nix::sched::CpuSet::new();
    let pinned = cpus
        .set(0)
        .and_then(|()| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus));
    if let Err(e) = pinned {
        reporter.out(format_args!("scale: not pinned to vCPU 0: {e}"));
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let scale = runtime.block_on(scale_evtchn(samples, reporter));
            reporter.case("scale_evtchn", scale);
            let scale = runtime.block_on(scale_store(samples, reporter));
            reporter.case("scale_store", scale);
        }
        Err(e) => {
            for case in ["scale_evtchn", "scale_store"] {
                reporter.case(case, Err(format!("tokio runtime: {e}")));
            }
        }
    }
}

/// The loopback round trip (notify, await, notify back, await) with 2, 64, 1024 and 4000
/// ports bound on one handle.
async fn scale_evtchn(samples: usize, reporter: &mut Reporter<Stdout>) -> Result<(), String> {
    let shared = Shared::default();
    let ch = TokioEventChannel::open().map_err(|e| format!("open: {e}"))?;
    let (a, b) = pair(&ch, &shared).await?;
    let mut bound = 2;
    let mut results = Vec::new();
    for ports in [2usize, 64, 1024, 4000] {
        while bound < ports {
            ch.alloc_unbound_raw(DOM0)
                .map_err(|e| format!("alloc_unbound (port {} of {ports}): {e}", bound + 1))?;
            bound += 1;
        }
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let start = Instant::now();
            for (sender, receiver) in [(b, a), (a, b)] {
                ch.notify(sender).map_err(|e| format!("notify: {e}"))?;
                match deadline(ch.wait_port(receiver)).await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(format!("{ports} ports: waiting: {e}")),
                    None => return Err(format!("{ports} ports: lost wake-up on {receiver}")),
                }
            }
            times.push(start.elapsed().as_nanos());
        }
        let (roundtrip, min) = median_and_min(&mut times);
        reporter.out(format_args!(
            "scale evtchn ports={ports} roundtrip_ns={roundtrip} min_ns={min}"
        ));
        results.push((ports, min));
    }
    judge_growth("evtchn round trip", &results)
}

/// A read with 1, 100 and 1000 watches registered on the connection.
async fn scale_store(samples: usize, reporter: &mut Reporter<Stdout>) -> Result<(), String> {
    let client = store_client(xen_store::tokio::MAX_IN_FLIGHT).await?;
    let key = format!("{STORE_DIR}/scale");
    client
        .write(&key, b"value")
        .await
        .map_err(|e| format!("write {key}: {e}"))?;
    let mut watches = Vec::new();
    let mut results = Vec::new();
    for count in [1usize, 100, 1000] {
        while watches.len() < count {
            let path = format!("{STORE_DIR}/watched/w{}", watches.len());
            match deadline(client.watch(&path)).await {
                Some(Ok(watch)) => watches.push(watch),
                Some(Err(e)) => {
                    return Err(format!("watch {path} (number {}): {e}", watches.len() + 1));
                }
                None => return Err(format!("watch {path}: no reply within 5 s")),
            }
        }
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let start = Instant::now();
            match deadline(client.read(&key)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read {key}: {e}")),
                None => {
                    return Err(format!(
                        "read {key} with {count} watches: no reply within 5 s"
                    ));
                }
            }
            times.push(start.elapsed().as_nanos());
        }
        let (read, min) = median_and_min(&mut times);
        reporter.out(format_args!(
            "scale store watches={count} read_ns={read} min_ns={min}"
        ));
        results.push((count, min));
    }
    drop(watches);
    let _ = deadline(client.rm(STORE_DIR)).await;
    judge_growth("xenstore read", &results)
}

/// Cost should stay flat: fails only when the largest point's fastest sample costs over 10x the
/// smallest point's (medians move with the host's load under TCG, minimums much less; a scan
/// of every port or watch would show as 100x and more).
fn judge_growth(what: &str, results: &[(usize, u128)]) -> Result<(), String> {
    let (Some(&(n0, first)), Some(&(n1, last))) = (results.first(), results.last()) else {
        return Err(format!("{what}: nothing measured"));
    };
    if last > first.max(1) * 10 {
        return Err(format!(
            "{what}: {last} ns with {n1} vs {first} ns with {n0}: grows"
        ));
    }
    Ok(())
}
