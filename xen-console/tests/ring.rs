//! The console ring frontend against a mock backend (xenconsoled's side of the page), played by
//! the channel: each wait lets the backend move.

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};

use xen_console::{AsyncWait, Channel, ConsoleRing, Error, FnChannel, Notify, Wake};
use xen_shared::{Consumer, Producer, RingError, RingLayout, SharedMem, SharedPage};

/// xenconsoled's side: consumes `out` and produces `in`, by `step` bytes per wait.
struct Backend<'a> {
    out: Consumer<SharedMem<'a>>,
    input: Producer<SharedMem<'a>>,
    received: Vec<u8>,
    to_send: Vec<u8>,
    step: usize,
    waits: usize,
    notified: usize,
}

impl<'a> Backend<'a> {
    fn new(mem: SharedMem<'a>, step: usize) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(Self {
            out: Consumer::new(mem, RingLayout::CONSOLE_OUT).unwrap(),
            input: Producer::new(mem, RingLayout::CONSOLE_IN).unwrap(),
            received: Vec::new(),
            to_send: Vec::new(),
            step,
            waits: 0,
            notified: 0,
        }))
    }

    /// One turn of the backend; `false` if it moved nothing.
    fn turn(&mut self) -> bool {
        let mut buf = vec![0; self.step];
        let n = self.out.read(&mut buf).unwrap();
        self.received.extend_from_slice(&buf[..n]);
        let m = self
            .input
            .write(&self.to_send[..self.to_send.len().min(self.step)])
            .unwrap();
        self.to_send.drain(..m);
        n + m > 0
    }
}

type Console<'a> = ConsoleRing<
    SharedMem<'a>,
    FnChannel<
        Box<dyn FnMut() -> Result<(), Infallible> + 'a>,
        Box<dyn FnMut() -> Result<Wake, Infallible> + 'a>,
        Infallible,
    >,
>;

/// A console whose waits run the backend; a wait in which the backend moves nothing is a
/// deadline passing.
fn console<'a>(mem: SharedMem<'a>, backend: &Rc<RefCell<Backend<'a>>>) -> Console<'a> {
    let (b1, b2) = (backend.clone(), backend.clone());
    let channel = FnChannel::new(
        Box::new(move || {
            b1.borrow_mut().notified += 1;
            Ok(())
        }) as Box<dyn FnMut() -> Result<(), Infallible>>,
        Box::new(move || {
            let mut b = b2.borrow_mut();
            b.waits += 1;
            Ok(if b.turn() {
                Wake::Event
            } else {
                Wake::TimedOut
            })
        }) as Box<dyn FnMut() -> Result<Wake, Infallible>>,
    );
    ConsoleRing::new(mem, channel).unwrap()
}

#[test]
fn formatted_output_arrives_with_one_notification_per_write() {
    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 4096);
    let mut con = console(page.mem(), &backend);
    let case = 7;
    write!(con, "case {case} ok").unwrap();
    con.flush().unwrap();
    let b = backend.borrow();
    assert_eq!(b.received, b"case 7 ok");
    // "case ", "7", " ok": three writes that moved bytes, three notifications.
    assert_eq!(b.notified, 3);
}

#[test]
fn a_full_ring_takes_a_partial_write_and_no_notification_when_nothing_moved() {
    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 0); // never consumes
    let mut con = console(page.mem(), &backend);
    assert_eq!(con.try_write(&[b'a'; 3000]).unwrap(), 2048);
    assert_eq!(con.try_write(b"more").unwrap(), 0);
    assert_eq!(backend.borrow().notified, 1);
    assert_eq!(con.unconsumed().unwrap(), 2048);
    // Blocking forms: the channel's deadline passes with the ring still full.
    assert!(matches!(con.write(b"x"), Err(Error::TimedOut)));
    assert!(matches!(
        con.flush(),
        Err(Error::Stalled { unconsumed: 2048 })
    ));
}

#[test]
fn one_mebibyte_arrives_intact_through_backpressure() {
    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 1000);
    let mut con = console(page.mem(), &backend);
    // 1 MiB (16 KiB under Miri, which interprets every byte's atomic access).
    let len: u32 = if cfg!(miri) { 1 << 14 } else { 1 << 20 };
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    con.write_all(&data).unwrap();
    con.flush().unwrap();
    assert_eq!(con.unconsumed().unwrap(), 0);
    let b = backend.borrow();
    assert!(b.received == data, "the bytes received differ");
    assert!(b.waits >= data.len() / 2048);
}

#[test]
fn input_as_lines_and_bytes() {
    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 5);
    backend.borrow_mut().to_send = b"first line\nsecond\nxyz".to_vec();
    let mut con = console(page.mem(), &backend);
    let mut line = [0u8; 64];
    let n = con.read_line(&mut line).unwrap();
    assert_eq!(&line[..n], b"first line\n");
    let n = con.read_line(&mut line).unwrap();
    assert_eq!(&line[..n], b"second\n");
    let rest: Vec<u8> = con.bytes().take(3).map(Result::unwrap).collect();
    assert_eq!(rest, b"xyz");
    // Nothing more: the iterator reports the deadline.
    assert!(matches!(con.bytes().next(), Some(Err(Error::TimedOut))));
    // A short buffer takes part of a line.
    backend.borrow_mut().to_send = b"abcdef\n".to_vec();
    let n = con.read_line(&mut line[..4]).unwrap();
    assert_eq!(&line[..n], b"abcd");
}

#[test]
fn impossible_indices_from_the_backend_are_a_typed_error() {
    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 16);
    let mut con = console(page.mem(), &backend);
    let out_cons = page
        .mem()
        .atomic::<AtomicU32>(RingLayout::CONSOLE_OUT.cons)
        .unwrap();
    out_cons.store(5000, Ordering::Relaxed);
    assert!(matches!(
        con.try_write(b"x"),
        Err(Error::Ring(RingError::Corrupt { cons: 5000, .. }))
    ));
    assert!(matches!(con.flush(), Err(Error::Ring(_))));
    let in_prod = page
        .mem()
        .atomic::<AtomicU32>(RingLayout::CONSOLE_IN.prod)
        .unwrap();
    in_prod.store(1025, Ordering::Relaxed);
    assert!(matches!(con.try_read(&mut [0; 8]), Err(Error::Ring(_))));
    assert!(con.bytes().next().unwrap().is_err());
}

#[test]
fn the_connection_field_is_read_only_when_declared() {
    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 16);
    let con = console(page.mem(), &backend);
    assert_eq!(con.connection().unwrap(), None);
    let con = con.with_connection_field();
    use xen_console::ring::{CONNECTION_OFFSET, Connection};
    // `connection` is one byte: the padding after it is not part of it.
    page.mem()
        .write(CONNECTION_OFFSET, &[1, 0xff, 0xff, 0xff])
        .unwrap();
    assert_eq!(con.connection().unwrap(), Some(Connection::Disconnected));
    page.mem().write(CONNECTION_OFFSET, &[0]).unwrap();
    assert_eq!(con.connection().unwrap(), Some(Connection::Connected));
    page.mem().write(CONNECTION_OFFSET, &[7]).unwrap();
    assert_eq!(con.connection().unwrap(), Some(Connection::Unknown(7)));
}

/// Ring memory whose `in_prod` shows one published line to every other load, and none to the
/// others: a backend that takes back what it published between the guest's look and its read
/// (for its first 100 loads, so that a guest that spins ends, with the line).
struct Retracting<'a> {
    mem: SharedMem<'a>,
    loads: std::cell::Cell<u32>,
}

impl xen_shared::RingMemory for Retracting<'_> {
    fn len(&self) -> usize {
        self.mem.len()
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, xen_shared::AccessError> {
        if offset == RingLayout::CONSOLE_IN.prod {
            let n = self.loads.get();
            self.loads.set(n + 1);
            return Ok(if n < 100 && n % 2 == 1 { 0 } else { 3 });
        }
        self.mem.load_index(offset, order)
    }
    fn store_index(
        &self,
        offset: usize,
        value: u32,
        order: Ordering,
    ) -> Result<(), xen_shared::AccessError> {
        self.mem.store_index(offset, value, order)
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), xen_shared::AccessError> {
        self.mem.read(offset, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), xen_shared::AccessError> {
        self.mem.write(offset, src)
    }
}

impl Clone for Retracting<'_> {
    fn clone(&self) -> Self {
        Self {
            mem: self.mem,
            loads: std::cell::Cell::new(self.loads.get()),
        }
    }
}

#[test]
fn read_line_waits_when_a_hostile_backend_takes_bytes_back() {
    let page = SharedPage::new();
    page.mem()
        .write(RingLayout::CONSOLE_IN.data, b"ab\n")
        .unwrap();
    let mem = Retracting {
        mem: page.mem(),
        loads: std::cell::Cell::new(0),
    };
    let waits = Rc::new(std::cell::Cell::new(0));
    let counted = waits.clone();
    let channel = FnChannel::new(
        || Ok::<_, Infallible>(()),
        move || {
            counted.set(counted.get() + 1);
            // The deadline passes at the first wait.
            Ok(Wake::TimedOut)
        },
    );
    let mut con = ConsoleRing::new(mem, channel).unwrap();
    // Every look sees the line and every read finds it gone: a spin before, a wait now.
    let mut buf = [0u8; 16];
    assert!(matches!(con.read_line(&mut buf), Err(Error::TimedOut)));
    assert_eq!(waits.get(), 1);
}

/// An async channel over the same backend: `poll_wait` runs a backend turn; a turn that moves
/// nothing is `Pending` the first time and a deadline the second.
struct AsyncBackend<'a> {
    backend: Rc<RefCell<Backend<'a>>>,
    idle: bool,
}

impl Channel for AsyncBackend<'_> {
    type Error = Infallible;
}
impl Notify for AsyncBackend<'_> {
    fn notify(&mut self) -> Result<(), Infallible> {
        self.backend.borrow_mut().notified += 1;
        Ok(())
    }
}
impl AsyncWait for AsyncBackend<'_> {
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<Wake, Infallible>> {
        if self.backend.borrow_mut().turn() {
            self.idle = false;
            return Poll::Ready(Ok(Wake::Event));
        }
        if self.idle {
            return Poll::Ready(Ok(Wake::TimedOut));
        }
        self.idle = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn async_write_flush_read_and_stream() {
    use embedded_io_async::{Read as _, Write as _};
    use futures_core::Stream;

    let page = SharedPage::new();
    let backend = Backend::new(page.mem(), 300);
    backend.borrow_mut().to_send = b"typed".to_vec();
    let channel = AsyncBackend {
        backend: backend.clone(),
        idle: false,
    };
    let mut con = ConsoleRing::new(page.mem(), channel).unwrap();
    let data = vec![b'z'; 5000];
    block_on(async {
        con.write_all(&data).await.unwrap();
        con.flush().await.unwrap();
    });
    assert_eq!(backend.borrow().received, data);
    let mut buf = [0u8; 2];
    assert_eq!(block_on(con.read(&mut buf)).unwrap(), 2);
    assert_eq!(&buf, b"ty");
    let mut stream = pin!(con.stream());
    let mut got = Vec::new();
    block_on(std::future::poll_fn(|cx| {
        loop {
            match stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => got.push(b),
                Poll::Ready(Some(Err(Error::TimedOut))) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
                other => panic!("{other:?}"),
            }
        }
    }));
    assert_eq!(got, b"ped");
}
