//! One end of a PV device in xenstore: its directory, the peer's, and the negotiation between
//! them.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Display;

use embedded_io::{Read, Write};
use xen_grant::GrantRef;
use xen_hypercall::{DomId, Port};
use xen_store::{Client, ErrorKind, Store};

use crate::error::shown;
use crate::{Deadline, Error, XenbusState};

/// Which end of the device this program is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The guest's driver (its directory holds `backend` and `backend-id`).
    Frontend,
    /// The driver domain's server (its directory holds `frontend` and `frontend-id`).
    Backend,
}

/// One end of a PV device: its own xenstore directory and the peer's, as the toolstack wrote
/// them (a frontend's `device/<class>/<id>` names its backend with `backend` and `backend-id`;
/// a backend's `backend/<class>/<domid>/<id>` names its frontend with `frontend` and
/// `frontend-id`).
///
/// Device-class neutral: the block, network or console protocol adds its own keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    role: Role,
    path: String,
    peer_path: String,
    peer_id: DomId,
}

impl Device {
    /// The frontend whose directory is `path` (absolute, or relative to this domain's home,
    /// e.g. `device/vbd/768`): reads `backend` and `backend-id`.
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] if `backend` or `backend-id` is absent, [`Error::BadValue`] if
    /// `backend` is not UTF-8 or `backend-id` not a domain id, [`Error::Store`] if a read fails.
    pub fn frontend(store: &mut impl Store, path: &str) -> Result<Self, Error> {
        Self::open(store, Role::Frontend, path)
    }

    /// The backend whose directory is `path` (e.g. `backend/vbd/1/768`): reads `frontend` and
    /// `frontend-id`.
    ///
    /// # Errors
    ///
    /// [`Error::Missing`] if `frontend` or `frontend-id` is absent, [`Error::BadValue`] if
    /// `frontend` is not UTF-8 or `frontend-id` not a domain id, [`Error::Store`] if a read fails.
    pub fn backend(store: &mut impl Store, path: &str) -> Result<Self, Error> {
        Self::open(store, Role::Backend, path)
    }

    fn open(store: &mut impl Store, role: Role, path: &str) -> Result<Self, Error> {
        let peer = match role {
            Role::Frontend => "backend",
            Role::Backend => "frontend",
        };
        let path = path.trim_end_matches('/').to_string();
        let peer_key = format!("{path}/{peer}");
        let peer_path = read_opt(store, &peer_key)?.ok_or(Error::Missing {
            path: peer_key.clone(),
        })?;
        let peer_path = String::from_utf8(peer_path).map_err(|e| Error::BadValue {
            path: peer_key.clone(),
            value: shown(e.as_bytes()),
            expected: "a path",
        })?;
        let id_key = format!("{path}/{peer}-id");
        let id = read_u64(store, &id_key)?.ok_or(Error::Missing {
            path: id_key.clone(),
        })?;
        let peer_id = u16::try_from(id)
            .map(DomId)
            .ok()
            .filter(|d| d.is_domain())
            .ok_or_else(|| Error::BadValue {
                path: id_key,
                value: format!("{id}"),
                expected: "a domain id",
            })?;
        Ok(Self {
            role,
            path,
            peer_path,
            peer_id,
        })
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// This end's directory.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The peer's directory.
    pub fn peer_path(&self) -> &str {
        &self.peer_path
    }

    /// The peer's domain.
    pub fn peer_id(&self) -> DomId {
        self.peer_id
    }

    /// This end's state ([`XenbusState::Unknown`] if it has no `state` node).
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] if the node holds no known state, [`Error::Store`] if the read fails.
    pub fn state(&self, store: &mut impl Store) -> Result<XenbusState, Error> {
        read_state(store, &format!("{}/state", self.path))
    }

    /// The peer's state ([`XenbusState::Unknown`] if it has no `state` node).
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] if the node holds no known state, [`Error::Store`] if the read fails.
    pub fn peer_state(&self, store: &mut impl Store) -> Result<XenbusState, Error> {
        read_state(store, &format!("{}/state", self.peer_path))
    }

    /// Writes this end's state (`xenbus_switch_state`).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the write fails (e.g. `EACCES` when this domain may not write there).
    pub fn switch_state(&self, store: &mut impl Store, state: XenbusState) -> Result<(), Error> {
        let value = format!("{}", state.as_u32());
        store.write(&format!("{}/state", self.path), value.as_bytes())?;
        Ok(())
    }

    /// The peer's `key`, if present.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the read fails for another reason than the node's absence.
    pub fn read_peer(&self, store: &mut impl Store, key: &str) -> Result<Option<Vec<u8>>, Error> {
        read_opt(store, &format!("{}/{key}", self.peer_path))
    }

    /// The peer's `key` as a decimal number, if present.
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] if the value is not a decimal number, [`Error::Store`] if the read
    /// fails for another reason than the node's absence.
    pub fn read_peer_u64(&self, store: &mut impl Store, key: &str) -> Result<Option<u64>, Error> {
        read_u64(store, &format!("{}/{key}", self.peer_path))
    }

    /// Whether the peer offers `feature-<name>`: the node is present and a nonzero number (as
    /// Linux's drivers read them; absent means not offered).
    ///
    /// # Errors
    ///
    /// [`Error::BadValue`] if the value is not a decimal number, [`Error::Store`] if the read
    /// fails for another reason than the node's absence.
    pub fn peer_feature(&self, store: &mut impl Store, name: &str) -> Result<bool, Error> {
        Ok(self
            .read_peer_u64(store, &format!("feature-{name}"))?
            .is_some_and(|v| v != 0))
    }

    /// Writes every entry of `publication` under this end's directory, and this end's state
    /// as `state`, in one transaction, run again while the daemon reports a conflict
    /// (`EAGAIN`, up to [`xen_store::TRANSACTION_ATTEMPTS`] times): the peer, watching the state,
    /// never sees it before the keys it announces.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if a write or the transaction fails, including `EAGAIN` when every attempt
    /// met a conflict.
    pub fn publish<T: Read + Write>(
        &self,
        client: &mut Client<T>,
        publication: &Publication,
        state: XenbusState,
    ) -> Result<(), Error>
    where
        T::Error: 'static,
    {
        let state_value = format!("{}", state.as_u32());
        client.transact(|tx| {
            for (key, value) in &publication.entries {
                tx.write(&format!("{}/{key}", self.path), value.as_bytes())?;
            }
            tx.write(&format!("{}/state", self.path), state_value.as_bytes())
        })?;
        Ok(())
    }

    /// Waits until `done` accepts the peer's state, and returns that state. The peer's `state`
    /// node is watched first and read after, then again after each event of that watch: a
    /// change after a read fires the watch, so none is missed. `deadline` is asked before each
    /// sleep ([`Error::TimedOut`]); the sleep itself is the transport's (see [`Deadline`]).
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if `deadline` passes first, [`Error::BadValue`] if the peer's state
    /// node holds no known state, [`Error::Store`] if the watch, a read or the transport fails.
    pub fn wait_for_peer<T: Read + Write>(
        &self,
        client: &mut Client<T>,
        mut done: impl FnMut(XenbusState) -> bool,
        deadline: &mut impl Deadline,
    ) -> Result<XenbusState, Error>
    where
        T::Error: 'static,
    {
        let path = format!("{}/state", self.peer_path);
        let watch = client.watch(&path)?;
        let result = (|| loop {
            let state = read_state(client, &path)?;
            if done(state) {
                return Ok(state);
            }
            if deadline.expired() {
                return Err(Error::TimedOut { last: state });
            }
            client.next_event_of(watch)?;
        })();
        let unwatched = client.unwatch(watch);
        let state = result?;
        unwatched?;
        Ok(state)
    }

    /// Waits until the peer reaches `state` or a later one on the way to `Connected`
    /// (`Initialising` < `InitWait` < `Initialised` < `Connected`); [`Error::PeerClosing`] if
    /// it is closing (or has no state) instead.
    ///
    /// # Errors
    ///
    /// [`Error::PeerClosing`] if the peer is closing instead, and the errors of
    /// [`wait_for_peer`](Self::wait_for_peer).
    pub fn wait_for_peer_ready<T: Read + Write>(
        &self,
        client: &mut Client<T>,
        state: XenbusState,
        deadline: &mut impl Deadline,
    ) -> Result<XenbusState, Error>
    where
        T::Error: 'static,
    {
        let reached = self.wait_for_peer(
            client,
            |s| s.is_closing() || (s >= state && s <= XenbusState::Connected),
            deadline,
        )?;
        if reached.is_closing() && !state.is_closing() {
            return Err(Error::PeerClosing(reached));
        }
        Ok(reached)
    }

    /// Closes this end: switches to `Closing`, waits for the peer to close too (`Closing`,
    /// `Closed` or gone), switches to `Closed`, then calls `release` each time the peer's
    /// state is looked at (first at once, then on each event of a watch on it) until it
    /// returns `true`.
    ///
    /// `release` ends what the peer may still use, in order: the grants, each only once the
    /// peer has unmapped it (the grant table says so:
    /// [`GrantedPages::end`](crate::GrantedPages::end)), then the event channel. Linux's
    /// blkback unmaps only when it sees the frontend `Closed` (`frontend_changed` runs
    /// `xen_blkif_disconnect`, then writes its own `Closed`, which wakes this wait): so the
    /// grants are ended after this end is `Closed`, never before. If `deadline` passes first
    /// ([`Error::TimedOut`]), what `release` did not end is the caller's to keep or leak.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if a state write fails, and the errors of
    /// [`wait_for_peer`](Self::wait_for_peer) (e.g. [`Error::TimedOut`]).
    pub fn close<T: Read + Write>(
        &self,
        client: &mut Client<T>,
        mut release: impl FnMut() -> bool,
        deadline: &mut impl Deadline,
    ) -> Result<(), Error>
    where
        T::Error: 'static,
    {
        self.switch_state(client, XenbusState::Closing)?;
        self.wait_for_peer(client, XenbusState::is_closing, deadline)?;
        self.switch_state(client, XenbusState::Closed)?;
        self.wait_for_peer(client, |_| release(), deadline)?;
        Ok(())
    }
}

/// Keys one end announces to its peer, written together by [`Device::publish`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publication {
    entries: Vec<(String, String)>,
}

impl Publication {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The references of a ring of `refs.len()` pages, as `public/io/blkif.h` and
    /// `netif.h` name them: one page is `ring-ref`; 2^order pages are `ring-page-order` and
    /// `ring-ref0`..`ring-ref<2^order - 1>`. [`Error::InvalidInput`] unless the count is a
    /// power of two.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] if the number of references is not a power of two.
    pub fn ring_refs(self, refs: impl ExactSizeIterator<Item = GrantRef>) -> Result<Self, Error> {
        let count = refs.len();
        if !count.is_power_of_two() {
            return Err(Error::InvalidInput(
                "a ring has a power of two of pages, at least one",
            ));
        }
        let mut this = self;
        if count == 1 {
            for gref in refs {
                this = this.value("ring-ref", gref.0);
            }
        } else {
            this = this.value("ring-page-order", count.trailing_zeros());
            for (i, gref) in refs.enumerate() {
                this = this.value(&format!("ring-ref{i}"), gref.0);
            }
        }
        Ok(this)
    }

    /// The event channel's port, as `event-channel`.
    pub fn event_channel(self, port: Port) -> Self {
        self.value("event-channel", port.0)
    }

    /// Any other key (a protocol's own: `protocol`, `feature-persistent`, `tx-ring-ref`, ...).
    pub fn value(mut self, key: &str, value: impl Display) -> Self {
        self.entries.push((key.to_string(), format!("{value}")));
        self
    }

    /// The entries, in the order given.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// `path`'s value, `None` if it does not exist.
fn read_opt(store: &mut impl Store, path: &str) -> Result<Option<Vec<u8>>, Error> {
    match store.read(path) {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// `path`'s value as a decimal number, `None` if it does not exist.
fn read_u64(store: &mut impl Store, path: &str) -> Result<Option<u64>, Error> {
    let Some(value) = read_opt(store, path)? else {
        return Ok(None);
    };
    core::str::from_utf8(&value)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| Error::BadValue {
            path: path.to_string(),
            value: shown(&value),
            expected: "a decimal number",
        })
}

/// The state in `path` (`Unknown` if it does not exist).
fn read_state(store: &mut impl Store, path: &str) -> Result<XenbusState, Error> {
    let Some(value) = read_opt(store, path)? else {
        return Ok(XenbusState::Unknown);
    };
    XenbusState::parse(&value).map_err(|e| Error::BadValue {
        path: path.to_string(),
        value: e.value,
        expected: "a xenbus state",
    })
}
