//! Requests from the toolstack to the guest: `xl shutdown`, `xl reboot`, `xl save` and
//! `xl sysrq` write the guest's `control/shutdown` or `control/sysrq` node, and wait for the
//! guest to acknowledge by clearing it ("guest didn't acknowledge control request" otherwise).
//!
//! A guest advertises what it handles ([`advertise`]: `control/feature-poweroff` and friends),
//! watches the nodes, and on each event takes the request ([`ControlWatches::take_shutdown`],
//! [`take_sysrq`]): read and cleared in one transaction, as Linux's `drivers/xen/manage.c`
//! does, so a request is acted on once even if the watch fires again. xl reads no feature node
//! before it asks for a suspend (libxl's `domain_suspend_callback_common`): a guest refuses one
//! by leaving it unacknowledged, which `ControlWatches::take_shutdown` does when `SUSPEND` was
//! not advertised, and libxl cancels the save after 60 s. The README says what survives a
//! suspend and how each crate's objects are re-created after a resume in a new domain.

use alloc::string::String;

use embedded_io::{Read, Write};
use xen_hypercall::ShutdownReason;
use xen_store::{Client, Error, ErrorKind, Store, WatchId};

/// The node `xl shutdown`, `xl reboot` and `xl save` write.
pub const SHUTDOWN_NODE: &str = "control/shutdown";
/// The node `xl sysrq` writes.
pub const SYSRQ_NODE: &str = "control/sysrq";

bitflags::bitflags! {
    /// The requests a guest says it handles (`control/feature-*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u8 {
        /// `control/feature-poweroff`.
        const POWEROFF = 1 << 0;
        /// `control/feature-reboot`.
        const REBOOT = 1 << 1;
        /// `control/feature-suspend`: the guest survives `xl save` and migration.
        const SUSPEND = 1 << 2;
    }
}

/// What the toolstack asks of the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownRequest {
    /// Power off (`xl shutdown`).
    Poweroff,
    /// Halt: power off, for Linux and for xl (`"halt"`).
    Halt,
    /// Reboot (`xl reboot`).
    Reboot,
    /// Suspend, for `xl save` or a migration: the guest calls `SCHEDOP_shutdown(suspend)`.
    Suspend,
    /// A request this crate does not know (the node's text).
    Other(String),
}

impl ShutdownRequest {
    /// The `SCHEDOP_shutdown` reason that carries the request out: power off for `Poweroff`
    /// and `Halt`, reboot, or suspend (through `SchedOps::suspend`, after the guest saved
    /// what it needs); `None` for a request this crate does not know.
    pub fn reason(&self) -> Option<ShutdownReason> {
        match self {
            Self::Poweroff | Self::Halt => Some(ShutdownReason::POWEROFF),
            Self::Reboot => Some(ShutdownReason::REBOOT),
            Self::Suspend => Some(ShutdownReason::SUSPEND),
            Self::Other(_) => None,
        }
    }

    /// The request written as `text`.
    pub fn parse(text: &str) -> Self {
        match text {
            "poweroff" => Self::Poweroff,
            "halt" => Self::Halt,
            "reboot" => Self::Reboot,
            "suspend" => Self::Suspend,
            other => Self::Other(other.into()),
        }
    }
}

/// Writes `control/feature-*` = `1` for each of `features`.
///
/// # Errors
///
/// The store's [`Error`] if a write fails (e.g. `EACCES` if the toolstack did not give the
/// guest its `control` directory).
pub fn advertise<S: Store>(store: &mut S, features: Features) -> Result<(), Error> {
    for (feature, node) in [
        (Features::POWEROFF, "control/feature-poweroff"),
        (Features::REBOOT, "control/feature-reboot"),
        (Features::SUSPEND, "control/feature-suspend"),
    ] {
        if features.contains(feature) {
            store.write(node, b"1")?;
        }
    }
    Ok(())
}

/// Watches the shutdown and sysrq nodes; route events with [`ControlWatches::is_shutdown`] and
/// [`ControlWatches::is_sysrq`]. A watch fires once when set, so a request written before the
/// guest looked is not missed.
#[derive(Debug)]
pub struct ControlWatches {
    /// The watch on [`SHUTDOWN_NODE`].
    pub shutdown: WatchId,
    /// The watch on [`SYSRQ_NODE`].
    pub sysrq: WatchId,
    /// What the guest advertised.
    pub features: Features,
}

impl ControlWatches {
    /// Advertises `features` and sets both watches.
    ///
    /// # Errors
    ///
    /// The store's [`Error`] if advertising or setting a watch fails (a watch set is removed
    /// again).
    pub fn new<T: Read + Write>(client: &mut Client<T>, features: Features) -> Result<Self, Error>
    where
        T::Error: 'static,
    {
        advertise(client, features)?;
        let shutdown = client.watch(SHUTDOWN_NODE)?;
        let sysrq = match client.watch(SYSRQ_NODE) {
            Ok(id) => id,
            Err(e) => {
                let _ = client.unwatch(shutdown);
                return Err(e);
            }
        };
        Ok(Self {
            shutdown,
            sysrq,
            features,
        })
    }

    /// Takes the pending shutdown request as [`take_shutdown`] does, but leaves a suspend
    /// request in place, unacknowledged, when the guest did not advertise
    /// [`Features::SUSPEND`]: xl does not read `feature-suspend` before it asks, so this is how
    /// the guest refuses. xl then gives up after its timeout (60 s in libxl's
    /// `libxl__domain_pvcontrol`), clears the node itself ("guest didn't acknowledge suspend,
    /// cancelling request") and fails the save; the guest runs on.
    ///
    /// # Errors
    ///
    /// Those of the free [`take_shutdown`].
    pub fn take_shutdown<T: Read + Write>(
        &self,
        client: &mut Client<T>,
    ) -> Result<Option<ShutdownRequest>, Error>
    where
        T::Error: 'static,
    {
        let suspend = self.features.contains(Features::SUSPEND);
        take(client, SHUTDOWN_NODE, |text| {
            suspend || ShutdownRequest::parse(text) != ShutdownRequest::Suspend
        })
        .map(|text| text.map(|t| ShutdownRequest::parse(&t)))
    }

    /// Whether `watch` is the shutdown node's.
    pub fn is_shutdown(&self, watch: WatchId) -> bool {
        watch == self.shutdown
    }

    /// Whether `watch` is the sysrq node's.
    pub fn is_sysrq(&self, watch: WatchId) -> bool {
        watch == self.sysrq
    }

    /// Removes both watches.
    ///
    /// # Errors
    ///
    /// The store's [`Error`] if removing a watch fails.
    pub fn remove<T: Read + Write>(self, client: &mut Client<T>) -> Result<(), Error>
    where
        T::Error: 'static,
    {
        let first = client.unwatch(self.shutdown);
        client.unwatch(self.sysrq).and(first)
    }
}

/// Takes the pending shutdown request, if any: reads `control/shutdown` and clears it in one
/// transaction (run again on a conflict), which is the acknowledgement xl waits for.
///
/// # Errors
///
/// The store's [`Error`] if the read, the clearing or the transaction fails (`EAGAIN` once
/// every attempt met a conflict).
pub fn take_shutdown<T: Read + Write>(
    client: &mut Client<T>,
) -> Result<Option<ShutdownRequest>, Error>
where
    T::Error: 'static,
{
    take(client, SHUTDOWN_NODE, |_| true).map(|text| text.map(|t| ShutdownRequest::parse(&t)))
}

/// Takes the pending sysrq key, if any, as [`take_shutdown`] does.
///
/// # Errors
///
/// The store's [`Error`] if the read, the clearing or the transaction fails (`EAGAIN` once
/// every attempt met a conflict).
pub fn take_sysrq<T: Read + Write>(client: &mut Client<T>) -> Result<Option<u8>, Error>
where
    T::Error: 'static,
{
    take(client, SYSRQ_NODE, |_| true).map(|text| text.and_then(|t| t.bytes().next()))
}

/// Reads `node` and, when it holds a request that `accept` takes, clears it, in one transaction.
fn take<T: Read + Write>(
    client: &mut Client<T>,
    node: &str,
    accept: impl Fn(&str) -> bool,
) -> Result<Option<String>, Error>
where
    T::Error: 'static,
{
    client.transact(|tx| {
        let text = match tx.read(node) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // Up to a NUL, if the writer left one (Linux's `xenbus_read` strings have none).
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let text = String::from_utf8_lossy(&text[..end]);
        if end == 0 || !accept(&text) {
            return Ok(None);
        }
        tx.write(node, b"")?;
        Ok(Some(text.into_owned()))
    })
}
