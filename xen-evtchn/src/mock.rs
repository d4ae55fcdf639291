//! A mock Xen with a shared info page per domain, written as Xen writes it,
//! for testing code built on [`RawEventChannel`](crate::RawEventChannel)
//! without Xen (also under Miri).
//!
//! The mock keeps pending and mask bits in its own tables. [`MockDomain`] wraps
//! a `MockXen` handle: before each hypercall it copies the guest's mask bits
//! and cleared pending bits into the mock; after it, it mirrors every new
//! pending bit into the page of every domain the way Xen's 2-level code does
//! (`evtchn_2l_set_pending`: set the pending bit; if it was clear and the port
//! is not masked, set the word's `evtchn_pending_sel` bit and
//! `evtchn_upcall_pending`), and gives `EVTCHNOP_unmask` Xen's re-raise.

#[cfg(target_os = "linux")]
mod device;

#[cfg(target_os = "linux")]
pub use device::{EvtchnDriver, RING_SIZE};
use std::boxed::Box;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use crate::SharedInfo;
use xen_hypercall::mock::{MockConfig, MockXen};
use xen_hypercall::{DomId, Error, Port, XenHypercall};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Ports each mock domain has (few, so mirroring stays cheap under Miri).
pub const PORTS: u32 = 16;

const PENDING_WORD: usize = core::mem::offset_of!(xen_sys::shared_info, evtchn_pending) / 8;
const MASK_WORD: usize = core::mem::offset_of!(xen_sys::shared_info, evtchn_mask) / 8;
const UPCALL_PENDING: usize = core::mem::offset_of!(xen_sys::vcpu_info, evtchn_upcall_pending);
/// Only x86's `vcpu_info` has an upcall mask (Arm's has `pad0` there: its guests mask the
/// event interrupt in the GIC, which the mock does not model).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const UPCALL_MASK: usize = core::mem::offset_of!(xen_sys::vcpu_info, evtchn_upcall_mask);
const SEL_WORD: usize = (core::mem::offset_of!(xen_sys::shared_info, vcpu_info)
    + core::mem::offset_of!(xen_sys::vcpu_info, evtchn_pending_sel))
    / 8;

/// A shared info page: 4 KiB of atomics, page-aligned.
#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);

/// One domain's shared info page and what the mock last mirrored into it.
pub struct DomainPage {
    xen: MockXen,
    page: Box<Page>,
    /// Pending bits the harness set in the page (so a clear one was cleared by the guest).
    mirrored: AtomicU64,
    /// The mask word as last copied into the mock.
    pushed_mask: AtomicU64,
    /// How many times `evtchn_upcall_pending` went from 0 to 1.
    upcalls: AtomicU64,
    /// Run after each successful `EVTCHNOP_close`.
    close_hook: Mutex<Option<CloseHook>>,
}

/// A hook run after `EVTCHNOP_close` closed a port, before it returns.
type CloseHook = Box<dyn FnMut(Port) + Send>;

impl core::fmt::Debug for DomainPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DomainPage")
            .field("domid", &self.xen.domid())
            .finish_non_exhaustive()
    }
}

impl DomainPage {
    fn word(&self, index: usize) -> &AtomicU64 {
        &self.page.0[index]
    }

    fn upcall_pending(&self) -> &AtomicU8 {
        self.byte(UPCALL_PENDING)
    }

    /// Whether vCPU 0's `evtchn_upcall_mask` is set (never, off x86).
    fn upcall_masked(&self) -> bool {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        return self.byte(UPCALL_MASK).load(Ordering::SeqCst) != 0;
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
        false
    }

    /// Byte `offset` of the page (inside its first word).
    fn byte(&self, offset: usize) -> &AtomicU8 {
        let ptr = self.page.0.as_ptr().cast::<u8>().wrapping_add(offset % 8);
        // SAFETY: a byte of the page's first word, which lives as long as
        // `self`; only accessed atomically (by this harness and by `SharedInfo`).
        unsafe { AtomicU8::from_ptr(ptr.cast_mut()) }
    }

    /// Xen's `local_events_need_delivery` for a PV vCPU 0: an upcall is
    /// pending and not masked (`SCHEDOP_poll` then returns at once).
    fn events_need_delivery(&self) -> bool {
        self.upcall_pending().load(Ordering::SeqCst) != 0 && !self.upcall_masked()
    }

    fn sel(&self) -> &AtomicU64 {
        self.word(SEL_WORD)
    }

    /// How many upcalls Xen would have raised (`evtchn_upcall_pending` set from 0).
    pub fn upcalls(&self) -> u64 {
        self.upcalls.load(Ordering::SeqCst)
    }

    /// The page as `SharedInfo`.
    ///
    /// # Safety
    ///
    /// The result (and every copy) is used only while this `DomainPage` lives
    /// (it is freed with the last [`MockDomain`] or [`MockPlatform`] that holds it).
    pub unsafe fn shared_info(&self) -> SharedInfo {
        let page = NonNull::from(&*self.page).cast::<u8>();
        // SAFETY: the page is boxed (never moved) and lives as long as this
        // `DomainPage`, which the caller outlives with every use; it is
        // accessed only through atomics.
        unsafe { SharedInfo::new(page) }
    }

    /// Guest to mock: mask bits and pending bits the guest cleared.
    fn push(&self) {
        let mask = self.word(MASK_WORD).load(Ordering::SeqCst);
        let changed = mask ^ self.pushed_mask.swap(mask, Ordering::SeqCst);
        let pending = self.word(PENDING_WORD).load(Ordering::SeqCst);
        let mirrored = self.mirrored.load(Ordering::SeqCst);
        for port in 1..PORTS {
            let bit = 1u64 << port;
            if changed & bit != 0 {
                self.xen.set_masked(Port::new(port), mask & bit != 0);
            }
            if mirrored & bit != 0 && pending & bit == 0 {
                self.xen.clear_pending(Port::new(port));
                self.mirrored.fetch_and(!bit, Ordering::SeqCst);
            }
        }
    }

    /// Mock to guest: new pending bits, as `evtchn_2l_set_pending`.
    fn pull(&self) {
        for port in 1..PORTS {
            let bit = 1u64 << port;
            let pending = self.xen.is_pending(Port::new(port));
            let mirrored = self.mirrored.load(Ordering::SeqCst) & bit != 0;
            if pending && !mirrored {
                self.mirrored.fetch_or(bit, Ordering::SeqCst);
                self.raise(bit);
            } else if !pending && mirrored {
                // Xen cleared it (the port was closed).
                self.mirrored.fetch_and(!bit, Ordering::SeqCst);
                self.word(PENDING_WORD).fetch_and(!bit, Ordering::SeqCst);
            }
        }
    }

    /// Sets `bit` pending; an unmasked new edge raises the selector and the upcall.
    fn raise(&self, bit: u64) {
        let was = self.word(PENDING_WORD).fetch_or(bit, Ordering::SeqCst);
        if was & bit == 0 && self.word(MASK_WORD).load(Ordering::SeqCst) & bit == 0 {
            self.raise_sel();
        }
    }

    fn raise_sel(&self) {
        let was = self.sel().fetch_or(1, Ordering::SeqCst);
        if was & 1 == 0 && self.upcall_pending().swap(1, Ordering::SeqCst) == 0 {
            self.upcalls.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `evtchn_2l_unmask`: clear the mask; if pending, raise the selector and upcall.
    fn unmask(&self, port: u32) {
        let bit = 1u64 << (port % 64);
        self.word(MASK_WORD).fetch_and(!bit, Ordering::SeqCst);
        if self.word(PENDING_WORD).load(Ordering::SeqCst) & bit != 0 {
            self.raise_sel();
        }
    }

    /// Whether `port`'s pending bit is set in the page.
    pub fn is_pending(&self, port: Port) -> bool {
        self.word(PENDING_WORD).load(Ordering::SeqCst) & (1 << port.raw()) != 0
    }

    /// Whether `port`'s mask bit is set in the page.
    pub fn is_masked(&self, port: Port) -> bool {
        self.word(MASK_WORD).load(Ordering::SeqCst) & (1 << port.raw()) != 0
    }

    /// Whether vCPU 0's `evtchn_upcall_pending` is set.
    pub fn upcall_is_pending(&self) -> bool {
        self.upcall_pending().load(Ordering::SeqCst) != 0
    }
}

/// A mock Xen whose domains each have a shared info page; domain 0 is privileged.
#[derive(Clone, Debug)]
pub struct MockPlatform {
    domains: Arc<Mutex<Vec<Arc<DomainPage>>>>,
    xen: MockXen,
}

impl Default for MockPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl MockPlatform {
    /// A Xen whose domains have [`PORTS`] ports each.
    pub fn new() -> Self {
        let xen = MockXen::with_config(MockConfig {
            max_evtchn_port: PORTS - 1,
            ..MockConfig::default()
        });
        Self {
            domains: Arc::default(),
            xen,
        }
    }

    /// A backend acting as domain `id`, with its page (all ports start masked,
    /// as a guest masks them at boot).
    pub fn domain(&self, id: u16) -> MockDomain {
        let xen = self.xen.domain(DomId::new(id));
        let page = Arc::new(DomainPage {
            xen: xen.clone(),
            page: Box::new(Page([const { AtomicU64::new(0) }; 512])),
            mirrored: AtomicU64::new(0),
            pushed_mask: AtomicU64::new(0),
            upcalls: AtomicU64::new(0),
            close_hook: Mutex::new(None),
        });
        page.word(MASK_WORD).store(u64::MAX, Ordering::SeqCst);
        self.domains.lock().unwrap().push(Arc::clone(&page));
        MockDomain {
            platform: self.clone(),
            page,
        }
    }

    fn sync_all(&self) {
        for domain in self.domains.lock().unwrap().iter() {
            domain.pull();
        }
    }
}

/// The hypercall backend of one mock domain, keeping its page in step.
#[derive(Clone, Debug)]
pub struct MockDomain {
    platform: MockPlatform,
    page: Arc<DomainPage>,
}

impl MockDomain {
    /// The `MockXen` handle of this domain (for its own inspection methods).
    pub fn mock(&self) -> &MockXen {
        &self.page.xen
    }

    /// This domain's shared info page.
    pub fn page(&self) -> &DomainPage {
        &self.page
    }

    /// Runs `hook` after each `EVTCHNOP_close` of this domain closed a port,
    /// before the hypercall returns: what another vCPU may do meanwhile (Xen
    /// may hand it the same port). `None`: no hook.
    pub fn set_close_hook(&self, hook: Option<Box<dyn FnMut(Port) + Send>>) {
        *self.page.close_hook.lock().unwrap() = hook;
    }

    fn run_close_hook(&self, port: Port) {
        // Taken out while it runs: the hook may close ports as well.
        let hook = self.page.close_hook.lock().unwrap().take();
        if let Some(mut hook) = hook {
            hook(port);
            let mut slot = self.page.close_hook.lock().unwrap();
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    /// This domain's shared info page, for [`RawEventChannel::new`](crate::RawEventChannel::new);
    /// [`channel`](Self::channel) pairs them safely.
    ///
    /// # Safety
    ///
    /// The result (and every copy) is used only while this domain's page lives:
    /// while this `MockDomain`, a clone of it, or its [`MockPlatform`] does.
    pub unsafe fn shared_info(&self) -> SharedInfo {
        // SAFETY: the caller's contract is `DomainPage::shared_info`'s.
        unsafe { self.page.shared_info() }
    }

    /// A [`RawEventChannel`](crate::RawEventChannel) of this domain: it holds a
    /// clone of this backend, which keeps the page alive as long as the channel.
    pub fn channel<const WAITERS: usize>(&self) -> crate::RawEventChannel<Self, WAITERS> {
        // SAFETY: the channel owns a clone of `self`, so the page outlives it.
        let page = unsafe { self.shared_info() };
        crate::RawEventChannel::new(self.clone(), page)
    }

    /// Performs `call`, with the pages synchronised around it.
    fn around(
        &self,
        op: usize,
        args: &[usize],
        call: impl FnOnce() -> Result<usize, Error>,
    ) -> Result<usize, Error> {
        for domain in self.platform.domains.lock().unwrap().iter() {
            domain.push();
        }
        let evtchn_op = |cmd: u32| {
            op == xen_sys::__HYPERVISOR_event_channel_op as usize
                && args.first() == Some(&(cmd as usize))
        };
        // `do_poll` returns at once while events need delivery.
        if op == xen_sys::__HYPERVISOR_sched_op as usize
            && args.first() == Some(&(xen_sys::SCHEDOP_poll as usize))
            && self.page.events_need_delivery()
        {
            return Ok(0);
        }
        let result = call();
        self.platform.sync_all();
        if result.is_ok()
            && (evtchn_op(xen_sys::EVTCHNOP_unmask) || evtchn_op(xen_sys::EVTCHNOP_close))
        {
            let ptr = args[1] as *const u32;
            // SAFETY: EVTCHNOP_unmask's and EVTCHNOP_close's argument is an
            // `evtchn_unmask_t` or `evtchn_close_t` (one `evtchn_port_t`) the
            // caller vouched for, and the mock just read it successfully.
            let port = unsafe { ptr.read() };
            if evtchn_op(xen_sys::EVTCHNOP_unmask) {
                self.page.unmask(port);
            } else {
                self.run_close_hook(Port::new(port));
            }
        }
        result
    }
}

// SAFETY: every call is forwarded unchanged to `MockXen`, which upholds the
// trait's contract; the harness only reads EVTCHNOP_unmask's argument.
unsafe impl XenHypercall for MockDomain {
    type Error = Error;

    unsafe fn hypercall0(&self, op: usize) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        self.around(op, &[], || unsafe { self.mock().hypercall0(op) })
    }
    unsafe fn hypercall1(&self, op: usize, arg: usize) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        self.around(op, &[arg], || unsafe { self.mock().hypercall1(op, arg) })
    }
    unsafe fn hypercall2(&self, op: usize, args: [usize; 2]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        self.around(op, &args, || unsafe { self.mock().hypercall2(op, args) })
    }
    unsafe fn hypercall3(&self, op: usize, args: [usize; 3]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        self.around(op, &args, || unsafe { self.mock().hypercall3(op, args) })
    }
    unsafe fn hypercall4(&self, op: usize, args: [usize; 4]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        self.around(op, &args, || unsafe { self.mock().hypercall4(op, args) })
    }
    unsafe fn hypercall5(&self, op: usize, args: [usize; 5]) -> Result<usize, Error> {
        // SAFETY: forwarded from the caller.
        self.around(op, &args, || unsafe { self.mock().hypercall5(op, args) })
    }
    fn make_const_buffer<T>(&self, data: &T) -> Result<impl xen_hypercall::XenConstBuffer<T>, Error>
    where
        T: ?Sized + xen_hypercall::HypercallData + IntoBytes + Immutable,
    {
        self.mock().make_const_buffer(data)
    }
    fn make_mut_buffer<T>(&self, data: &mut T) -> Result<impl xen_hypercall::XenMutBuffer<T>, Error>
    where
        T: ?Sized + xen_hypercall::HypercallData + FromBytes + IntoBytes,
    {
        self.mock().make_mut_buffer(data)
    }
}
