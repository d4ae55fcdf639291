//! One end of a channel over its shared memory: the protocol of libxenvchan's `io.c`, without
//! the platform (no mapping, no event channel).
//!
//! # Notifications
//!
//! Each side owns one byte of requests: the server acts on `srv_notify`, the client on
//! `cli_notify`. A side that must wait sets a bit in the *peer's* byte (`NOTIFY_WRITE`: "tell me
//! when you write", `NOTIFY_READ`: "tell me when you read"), then reads the indices again. A
//! side that moved bytes clears the matching bit of its own byte and, if it was set, sends an
//! event ([`Step::Moved::notify`]). Both are read-modify-writes of the same byte, so one comes
//! first in that byte's order: if the waiter's, the mover's sees the bit and sends the event;
//! if the mover's, the waiter's reads what it wrote, and (Release, then Acquire) everything
//! before it, the index among it: the waiter's second look sees the bytes. A wake-up cannot be
//! missed, with no fence beside the two read-modify-writes. (libxenvchan puts a full barrier
//! before each, as well as one between the index and the data where Acquire and Release
//! suffice; Linux's rings need `virt_mb()` between index and event word because they read
//! that word with a plain load, not a read-modify-write.)
//!
//! # An untrusted peer
//!
//! Every index is read once per look and validated by a [`ProducerCursor`] or
//! [`ConsumerCursor`] kept between calls: the bytes ready to read can only grow (but by this
//! end's reads), the bytes unconsumed in its write ring can only shrink (but by its writes),
//! and neither exceeds the ring. The peer's orders and grant list are read once, when the
//! client connects, and kept. A peer that breaks a rule ends the channel with
//! [`Error::Corrupt`], returned by every later call.

use core::sync::atomic::{AtomicU32, Ordering};

use xen_shared::ring::{ConsumerCursor, CursorError, ProducerCursor, RingLayout, RingMemory};
use xen_shared::{AccessError, PAGE_SIZE, ReadOnlyMem, SharedMem};

use crate::layout::*;
use crate::{Corruption, Error, Order, Orders};

/// Which end of the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Shares the pages, reads the left ring, writes the right one.
    Server,
    /// Maps the pages, writes the left ring, reads the right one.
    Client,
}

/// The memory of one channel: the shared page and the pages of the rings that have their own.
///
/// `left` and `right` are the data of rings of order 12 or more (at least 2^order bytes); for
/// a ring inside the page they are not used (an empty view will do).
#[derive(Clone, Copy, Debug)]
pub struct Shared<'a> {
    /// The shared page, `struct vchan_interface`.
    pub page: SharedMem<'a>,
    /// The left ring's pages (client to server), for an order of 12 or more.
    pub left: RingPages<'a>,
    /// The right ring's pages (server to client), for an order of 12 or more.
    pub right: RingPages<'a>,
}

impl<'a> Shared<'a> {
    /// The memory of a channel whose rings both live in `page`.
    pub fn in_page(page: SharedMem<'a>) -> Self {
        let empty = RingPages::from(SharedMem::from_words(&[]));
        Self {
            page,
            left: empty,
            right: empty,
        }
    }
}

/// The pages of a ring of order 12 or more: writable, or read-only for the ring an end only
/// reads (libxenvchan's client maps its read ring so; a write to them is
/// [`AccessError::ReadOnly`]).
#[derive(Clone, Copy, Debug)]
pub enum RingPages<'a> {
    /// Pages this end may write.
    Writable(SharedMem<'a>),
    /// Pages this end may only read.
    ReadOnly(ReadOnlyMem<'a>),
}

impl<'a> From<SharedMem<'a>> for RingPages<'a> {
    fn from(mem: SharedMem<'a>) -> Self {
        Self::Writable(mem)
    }
}

impl<'a> From<ReadOnlyMem<'a>> for RingPages<'a> {
    fn from(mem: ReadOnlyMem<'a>) -> Self {
        Self::ReadOnly(mem)
    }
}

impl RingPages<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Writable(mem) => mem.len(),
            Self::ReadOnly(mem) => mem.len(),
        }
    }

    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        match self {
            Self::Writable(mem) => mem.read(offset, dst),
            Self::ReadOnly(mem) => mem.read(offset, dst),
        }
    }

    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        match self {
            Self::Writable(mem) => mem.write(offset, src),
            Self::ReadOnly(_) => Err(AccessError::ReadOnly {
                offset,
                len: src.len(),
            }),
        }
    }
}

/// What the peer's liveness byte says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// The client has not connected yet (the server's view only).
    Waiting,
    /// Connected.
    Open,
    /// Gone: it closed, or its mapping went away (Linux clears the byte when a process dies).
    Closed,
}

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// `bytes` moved; if `notify`, the peer asked for an event: send it.
    Moved {
        /// How many bytes were copied.
        bytes: usize,
        /// Whether to signal the event channel now.
        notify: bool,
    },
    /// Nothing can move now; the peer was asked to send an event when that changes. Wait for
    /// the event channel, then try again.
    WouldBlock,
    /// The peer is gone: for a read, every byte it wrote has been read (end of stream); for a
    /// write, nobody will read.
    Closed,
}

/// The shared page followed by one ring's own pages, as one [`RingMemory`] for
/// [`xen_shared::ring`]: offsets below [`PAGE_SIZE`] are the page, the rest the ring's pages.
#[derive(Clone, Copy, Debug)]
struct RingMem<'a> {
    page: SharedMem<'a>,
    data: RingPages<'a>,
}

impl<'a> RingMem<'a> {
    /// The view and offset for `len` bytes at `offset`: wholly in the page or wholly after it.
    fn locate(&self, offset: usize, len: usize) -> Result<(RingPages<'a>, usize), AccessError> {
        let out = AccessError::OutOfBounds {
            offset,
            len,
            size: RingMemory::len(self),
        };
        match offset.checked_add(len) {
            Some(end) if end <= PAGE_SIZE => Ok((self.page.into(), offset)),
            Some(_) if offset >= PAGE_SIZE => Ok((self.data, offset - PAGE_SIZE)),
            _ => Err(out),
        }
    }

    /// The index word at `offset`, in the page (vchan's indices all are).
    fn index(&self, offset: usize) -> Result<&'a AtomicU32, AccessError> {
        match offset.checked_add(4) {
            Some(end) if end <= PAGE_SIZE => self.page.atomic::<AtomicU32>(offset),
            _ => Err(AccessError::OutOfBounds {
                offset,
                len: 4,
                size: PAGE_SIZE,
            }),
        }
    }
}

impl RingMemory for RingMem<'_> {
    fn len(&self) -> usize {
        PAGE_SIZE + self.data.len()
    }
    fn load_index(&self, offset: usize, order: Ordering) -> Result<u32, AccessError> {
        Ok(self.index(offset)?.load(order))
    }
    fn store_index(&self, offset: usize, value: u32, order: Ordering) -> Result<(), AccessError> {
        self.index(offset)?.store(value, order);
        Ok(())
    }
    fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), AccessError> {
        let (mem, at) = self.locate(offset, dst.len())?;
        mem.read(at, dst)
    }
    fn write(&self, offset: usize, src: &[u8]) -> Result<(), AccessError> {
        let (mem, at) = self.locate(offset, src.len())?;
        mem.write(at, src)
    }
}

/// The word holding one of the four flag bytes, and that byte's place in it.
fn flag(page: SharedMem<'_>, offset: usize) -> Result<(&AtomicU32, usize), AccessError> {
    Ok((page.atomic::<AtomicU32>(FLAGS)?, offset - FLAGS))
}

/// A word with `value` in byte `lane` and zeros elsewhere (in memory order, whatever the CPU's
/// byte order).
fn in_lane(lane: usize, value: u8) -> u32 {
    let mut bytes = [0u8; 4];
    bytes[lane] = value;
    u32::from_ne_bytes(bytes)
}

/// Loads one flag byte.
fn load_flag(page: SharedMem<'_>, offset: usize) -> Result<u8, AccessError> {
    let (word, lane) = flag(page, offset)?;
    Ok(word.load(Ordering::Acquire).to_ne_bytes()[lane])
}

/// Stores one flag byte with one atomic read-modify-write of its word, so the peer never sees
/// the byte take another value in between (a liveness byte at 0 would read as "closed").
fn store_flag(page: SharedMem<'_>, offset: usize, value: u8) -> Result<(), AccessError> {
    let (word, lane) = flag(page, offset)?;
    let mask = in_lane(lane, 0xff);
    let _ = word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        Some(w & !mask | in_lane(lane, value))
    });
    Ok(())
}

/// Sets `bits` in one flag byte (libxenvchan's `__sync_or_and_fetch`).
fn set_bits(page: SharedMem<'_>, offset: usize, bits: u8) -> Result<(), AccessError> {
    let (word, lane) = flag(page, offset)?;
    word.fetch_or(in_lane(lane, bits), Ordering::AcqRel);
    Ok(())
}

/// Clears `bits` in one flag byte; returns whether any of them was set.
fn take_bits(page: SharedMem<'_>, offset: usize, bits: u8) -> Result<bool, AccessError> {
    let (word, lane) = flag(page, offset)?;
    let before = word.fetch_and(!in_lane(lane, bits), Ordering::AcqRel);
    Ok(before.to_ne_bytes()[lane] & bits != 0)
}

/// One end of a vchan: its role, the rings' orders, and where it is in each ring.
#[derive(Debug)]
pub struct Endpoint {
    role: Role,
    orders: Orders,
    /// The ring this end reads, from its first use on (the indices may be placed before it).
    rx: Option<ConsumerCursor>,
    /// The ring this end writes, likewise.
    tx: Option<ProducerCursor>,
    /// The corruption that ended the channel.
    failed: Option<Error>,
}

impl Endpoint {
    /// Lays out a new shared page as libxenvchan's server does: zeroed, the orders, the client
    /// not yet connected (`cli_live` 2), the server live, the client asked to signal its first
    /// write; then the grant list (`left_grants` then `right_grants`, one reference per page of
    /// each ring of order 12 or more).
    ///
    /// Do this before the page is published: the client reads it once, when it connects.
    ///
    /// # Errors
    ///
    /// [`Error::Memory`] if `page` is shorter than a page or a grant list's length is not the
    /// number of pages of its ring.
    pub fn init_server(
        page: SharedMem<'_>,
        orders: Orders,
        left_grants: &[u32],
        right_grants: &[u32],
    ) -> Result<Self, Error> {
        if left_grants.len() != orders.left.pages() || right_grants.len() != orders.right.pages() {
            return Err(Error::Memory(AccessError::OutOfBounds {
                offset: GRANTS,
                len: 4 * (left_grants.len() + right_grants.len()),
                size: 4 * orders.grant_count(),
            }));
        }
        page.fill(0, PAGE_SIZE, 0)?;
        let order_word = u32::from_ne_bytes({
            let [a, b] = orders.left.get().to_ne_bytes();
            let [c, d] = orders.right.get().to_ne_bytes();
            [a, b, c, d]
        });
        page.atomic::<AtomicU32>(ORDERS)?
            .store(order_word, Ordering::Relaxed);
        for (i, gref) in left_grants.iter().chain(right_grants).enumerate() {
            page.atomic::<AtomicU32>(GRANTS + 4 * i)?
                .store(*gref, Ordering::Relaxed);
        }
        store_flag(page, CLI_LIVE, 2)?;
        store_flag(page, SRV_LIVE, 1)?;
        store_flag(page, CLI_NOTIFY, NOTIFY_WRITE)?;
        Ok(Self::new(Role::Server, orders))
    }

    /// The orders the server wrote, read once and checked (the client's first step).
    ///
    /// # Errors
    ///
    /// [`Error::BadOrder`] or [`Error::BadOrders`] if the server wrote orders vchan does not
    /// allow, [`Error::Memory`] if `page` is shorter than the header.
    pub fn peer_orders(page: SharedMem<'_>) -> Result<Orders, Error> {
        let word = page.atomic::<AtomicU32>(ORDERS)?.load(Ordering::Acquire);
        let [a, b, c, d] = word.to_ne_bytes();
        let left = Order::new(u16::from_ne_bytes([a, b]))?;
        let right = Order::new(u16::from_ne_bytes([c, d]))?;
        Orders::new(left, right)
    }

    /// Copies the grant list for `orders` into `grants` (`orders.grant_count()` entries: the
    /// left ring's pages, then the right's), read once.
    ///
    /// # Errors
    ///
    /// [`Error::Memory`] if `grants` has fewer entries than `orders` needs or `page` is too short.
    pub fn peer_grants(
        page: SharedMem<'_>,
        orders: Orders,
        grants: &mut [u32],
    ) -> Result<(), Error> {
        let count = orders.grant_count();
        let Some(out) = grants.get_mut(..count) else {
            return Err(Error::Memory(AccessError::OutOfBounds {
                offset: 0,
                len: count,
                size: grants.len(),
            }));
        };
        for (i, gref) in out.iter_mut().enumerate() {
            *gref = page
                .atomic::<AtomicU32>(GRANTS + 4 * i)?
                .load(Ordering::Relaxed);
        }
        Ok(())
    }

    /// Connects the client to a page whose orders it read (with [`peer_orders`](Self::peer_orders))
    /// and whose rings it mapped: marks it live and asks the server to signal its writes, as
    /// libxenvchan's client does. Send an event afterwards: the server may wait for it.
    ///
    /// # Errors
    ///
    /// [`Error::Memory`] if `page` is shorter than the header.
    pub fn connect_client(page: SharedMem<'_>, orders: Orders) -> Result<Self, Error> {
        store_flag(page, CLI_LIVE, 1)?;
        store_flag(page, SRV_NOTIFY, NOTIFY_WRITE)?;
        Ok(Self::new(Role::Client, orders))
    }

    fn new(role: Role, orders: Orders) -> Self {
        Self {
            role,
            orders,
            rx: None,
            tx: None,
            failed: None,
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The rings' orders.
    pub fn orders(&self) -> Orders {
        self.orders
    }

    /// The size of the ring this end reads.
    pub fn read_capacity(&self) -> u32 {
        self.read_order().size()
    }

    /// The size of the ring this end writes.
    pub fn write_capacity(&self) -> u32 {
        self.write_order().size()
    }

    fn read_order(&self) -> Order {
        match self.role {
            Role::Server => self.orders.left,
            Role::Client => self.orders.right,
        }
    }

    fn write_order(&self) -> Order {
        match self.role {
            Role::Server => self.orders.right,
            Role::Client => self.orders.left,
        }
    }

    /// This end's liveness byte, the peer's, this end's request byte, the peer's.
    const fn bytes(&self) -> (usize, usize, usize, usize) {
        match self.role {
            Role::Server => (SRV_LIVE, CLI_LIVE, SRV_NOTIFY, CLI_NOTIFY),
            Role::Client => (CLI_LIVE, SRV_LIVE, CLI_NOTIFY, SRV_NOTIFY),
        }
    }

    /// The memory and layout of ring `order` whose indices are at `cons` and `prod`.
    fn ring<'a>(
        page: SharedMem<'a>,
        order: Order,
        data: RingPages<'a>,
        cons: usize,
        prod: usize,
    ) -> (RingMem<'a>, RingLayout) {
        let (data, offset) = match order.in_page_offset() {
            Some(offset) => (SharedMem::from_words(&[]).into(), offset),
            None => (data, PAGE_SIZE),
        };
        let layout = RingLayout {
            data: offset,
            size: order.size(),
            cons,
            prod,
        };
        (RingMem { page, data }, layout)
    }

    /// The ring this end reads.
    fn rx_ring<'a>(&self, mem: &Shared<'a>) -> (RingMem<'a>, RingLayout) {
        match self.role {
            Role::Server => Self::ring(mem.page, self.orders.left, mem.left, LEFT_CONS, LEFT_PROD),
            Role::Client => Self::ring(
                mem.page,
                self.orders.right,
                mem.right,
                RIGHT_CONS,
                RIGHT_PROD,
            ),
        }
    }

    /// The ring this end writes.
    fn tx_ring<'a>(&self, mem: &Shared<'a>) -> (RingMem<'a>, RingLayout) {
        match self.role {
            Role::Server => Self::ring(
                mem.page,
                self.orders.right,
                mem.right,
                RIGHT_CONS,
                RIGHT_PROD,
            ),
            Role::Client => Self::ring(mem.page, self.orders.left, mem.left, LEFT_CONS, LEFT_PROD),
        }
    }

    /// A cursor's start as an error of this crate: a layout that does not fit (vchan's
    /// offsets are fixed, so only memory smaller than the orders need) is [`Error::Memory`].
    fn started<T>(
        &mut self,
        layout: RingLayout,
        start: Result<T, CursorError>,
    ) -> Result<T, Error> {
        start.map_err(|e| match e {
            CursorError::Ring(e) => self.fail(e.into()),
            _ => Error::Memory(AccessError::OutOfBounds {
                offset: layout.data,
                len: layout.size as usize,
                size: PAGE_SIZE,
            }),
        })
    }

    /// Looks at the ring this end reads: its memory, and its cursor after one look at the
    /// producer index (the bytes ready are the cursor's `ready()`).
    fn look_rx<'a>(&mut self, mem: &Shared<'a>) -> Result<(RingMem<'a>, ConsumerCursor), Error> {
        let (ring, layout) = self.rx_ring(mem);
        let mut rx = match self.rx {
            Some(rx) => rx,
            None => self.started(layout, ConsumerCursor::new(&ring, layout))?,
        };
        rx.look(&ring).map_err(|e| self.fail(e.into()))?;
        self.rx = Some(rx);
        Ok((ring, rx))
    }

    /// Looks at the ring this end writes, likewise (the room is the cursor's `free()`).
    fn look_tx<'a>(&mut self, mem: &Shared<'a>) -> Result<(RingMem<'a>, ProducerCursor), Error> {
        let (ring, layout) = self.tx_ring(mem);
        let mut tx = match self.tx {
            Some(tx) => tx,
            None => self.started(layout, ProducerCursor::new(&ring, layout))?,
        };
        tx.look(&ring).map_err(|e| self.fail(e.into()))?;
        self.tx = Some(tx);
        Ok((ring, tx))
    }

    /// Records `error` if it is a corruption (it ends the channel), and returns it.
    fn fail(&mut self, error: Error) -> Error {
        if matches!(error, Error::Corrupt(_)) {
            self.failed = Some(error);
        }
        error
    }

    fn check(&self) -> Result<(), Error> {
        self.failed.map_or(Ok(()), Err)
    }

    /// What the peer's liveness byte says.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the byte is none of 0, 1 or 2 (the channel is over), or an earlier
    /// corruption; [`Error::Memory`] if `mem` is too short.
    pub fn peer_state(&mut self, mem: &Shared<'_>) -> Result<PeerState, Error> {
        self.check()?;
        let (_, peer_live, _, _) = self.bytes();
        match load_flag(mem.page, peer_live)? {
            0 => Ok(PeerState::Closed),
            1 => Ok(PeerState::Open),
            2 if self.role == Role::Server => Ok(PeerState::Waiting),
            other => Err(self.fail(Error::Corrupt(Corruption::Live(other)))),
        }
    }

    /// Asks the peer for an event on `bits` (the caller looks at the indices again after:
    /// see "Notifications" above).
    fn request(&self, mem: &Shared<'_>, bits: u8) -> Result<(), Error> {
        let (_, _, _, peer_requests) = self.bytes();
        set_bits(mem.page, peer_requests, bits)?;
        Ok(())
    }

    /// After moving bytes: whether the peer asked for an event on `bit` (clearing the request).
    fn should_notify(&self, mem: &Shared<'_>, bit: u8) -> Result<bool, Error> {
        let (_, _, own_requests, _) = self.bytes();
        Ok(take_bits(mem.page, own_requests, bit)?)
    }

    /// Reads up to `buf.len()` bytes (a stream read): at least one, unless the ring is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the peer's indices are impossible (the channel is over, and every
    /// later call returns it), [`Error::Memory`] if `mem` is too short.
    pub fn read(&mut self, mem: &Shared<'_>, buf: &mut [u8]) -> Result<Step, Error> {
        self.receive(mem, buf, 1)
    }

    /// Reads exactly `buf.len()` bytes, or nothing (a packet read): waits while fewer are ready.
    /// A packet larger than the ring can never arrive: [`Error::PacketTooLarge`].
    ///
    /// # Errors
    ///
    /// [`Error::PacketTooLarge`] as above, and those of [`read`](Self::read).
    pub fn recv(&mut self, mem: &Shared<'_>, buf: &mut [u8]) -> Result<Step, Error> {
        let ring = self.read_capacity();
        if buf.len() > ring as usize {
            return Err(Error::PacketTooLarge {
                len: buf.len(),
                ring,
            });
        }
        self.receive(mem, buf, buf.len())
    }

    fn receive(&mut self, mem: &Shared<'_>, buf: &mut [u8], want: usize) -> Result<Step, Error> {
        self.check()?;
        if buf.is_empty() {
            return Ok(Step::Moved {
                bytes: 0,
                notify: false,
            });
        }
        // The peer's state first: bytes it wrote before closing are seen by the look below.
        let state = self.peer_state(mem)?;
        let (mut ring, mut rx) = self.look_rx(mem)?;
        if (rx.ready() as usize) < want {
            self.request(mem, NOTIFY_WRITE)?;
            (ring, rx) = self.look_rx(mem)?;
        }
        if (rx.ready() as usize) < want {
            return Ok(match state {
                PeerState::Closed => Step::Closed,
                PeerState::Open | PeerState::Waiting => Step::WouldBlock,
            });
        }
        // At least `want`: what the look found.
        let bytes = rx.read(&ring, buf).map_err(|e| self.fail(e.into()))?;
        self.rx = Some(rx);
        let notify = self.should_notify(mem, NOTIFY_READ)?;
        Ok(Step::Moved { bytes, notify })
    }

    /// Writes as much of `buf` as fits (a stream write): at least one byte, unless the ring is
    /// full.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] if the peer's indices are impossible (the channel is over, and every
    /// later call returns it), [`Error::Memory`] if `mem` is too short or
    /// its write ring read-only.
    pub fn write(&mut self, mem: &Shared<'_>, buf: &[u8]) -> Result<Step, Error> {
        self.transmit(mem, buf, 1)
    }

    /// Writes all of `buf` or nothing (a packet write): waits while less room is free. A
    /// packet larger than the ring can never fit: [`Error::PacketTooLarge`].
    ///
    /// # Errors
    ///
    /// [`Error::PacketTooLarge`] as above, and those of [`write`](Self::write).
    pub fn send(&mut self, mem: &Shared<'_>, buf: &[u8]) -> Result<Step, Error> {
        let ring = self.write_capacity();
        if buf.len() > ring as usize {
            return Err(Error::PacketTooLarge {
                len: buf.len(),
                ring,
            });
        }
        self.transmit(mem, buf, buf.len())
    }

    fn transmit(&mut self, mem: &Shared<'_>, buf: &[u8], want: usize) -> Result<Step, Error> {
        self.check()?;
        if self.peer_state(mem)? == PeerState::Closed {
            return Ok(Step::Closed);
        }
        if buf.is_empty() {
            return Ok(Step::Moved {
                bytes: 0,
                notify: false,
            });
        }
        let (mut ring, mut tx) = self.look_tx(mem)?;
        if (tx.free() as usize) < want {
            self.request(mem, NOTIFY_READ)?;
            (ring, tx) = self.look_tx(mem)?;
        }
        if (tx.free() as usize) < want {
            return Ok(Step::WouldBlock);
        }
        // At least `want`: the room the look found.
        let bytes = tx.write(&ring, buf).map_err(|e| self.fail(e.into()))?;
        self.tx = Some(tx);
        let notify = self.should_notify(mem, NOTIFY_WRITE)?;
        Ok(Step::Moved { bytes, notify })
    }

    /// Bytes ready to read now (without asking for an event).
    ///
    /// # Errors
    ///
    /// Those of [`read`](Self::read).
    pub fn data_ready(&mut self, mem: &Shared<'_>) -> Result<usize, Error> {
        self.check()?;
        Ok(self.look_rx(mem)?.1.ready() as usize)
    }

    /// Room free to write now (without asking for an event).
    ///
    /// # Errors
    ///
    /// Those of [`write`](Self::write).
    pub fn buffer_space(&mut self, mem: &Shared<'_>) -> Result<usize, Error> {
        self.check()?;
        Ok(self.look_tx(mem)?.1.free() as usize)
    }

    /// Marks this end closed (its liveness byte 0). Send an event afterwards, so a waiting peer
    /// looks again.
    ///
    /// # Errors
    ///
    /// [`Error::Memory`] if `mem` is too short.
    pub fn close(&mut self, mem: &Shared<'_>) -> Result<(), Error> {
        let (own_live, _, _, _) = self.bytes();
        store_flag(mem.page, own_live, 0)?;
        Ok(())
    }
}
