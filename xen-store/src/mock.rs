//! An in-process xenstore server for tests: the tree with permissions, transactions (a commit
//! conflicts with any write since the start: `EAGAIN`), watches (fired once when set, then on
//! every change at or below them), `DIRECTORY_PART`, domain paths and relative paths.
//!
//! Connect with [`MockStore::connect`] (an in-memory byte stream, usable under Miri) or serve
//! a Unix socket with [`MockStore::serve`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::string::{String, ToString};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::vec::Vec;
use std::{format, vec};

use xen_hypercall::DomId;

use crate::perms::{Access, Perm, parse_decimal, push_decimal};
use crate::wire::{self, Decoder, Header, Message, MsgType, PAYLOAD_MAX};

/// A xenstore server in memory. Clones share the same store.
#[derive(Clone, Debug, Default)]
pub struct MockStore {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
}

type Tree = BTreeMap<String, Node>;

#[derive(Debug)]
struct Tx {
    tree: Tree,
    /// `State::writes` when the transaction started.
    base: u64,
    changed: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Conn {
    domid: u16,
    decoder: Decoder,
    inbox: VecDeque<u8>,
    watches: Vec<(String, String)>,
    txs: BTreeMap<u32, Tx>,
    /// Messages to queue after the reply being built.
    deferred: Vec<Vec<u8>>,
    closed: bool,
}

#[derive(Debug)]
struct State {
    tree: Tree,
    /// Committed writes so far (a transaction conflicts if this moved since it started).
    writes: u64,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    next_tx: u32,
    introduced: BTreeSet<u16>,
    /// Children listings longer than this get `E2BIG` from `DIRECTORY`.
    directory_max: usize,
    /// Bytes of children names per `DIRECTORY_PART` reply.
    part_size: usize,
    /// Open transactions per connection beyond which `TRANSACTION_START` fails (`ENOSPC`).
    transaction_limit: usize,
}

impl Default for State {
    fn default() -> Self {
        let mut tree = Tree::new();
        tree.insert(
            "/".into(),
            Node {
                value: Vec::new(),
                perms: vec![Perm::new(DomId(0), Access::None)],
            },
        );
        Self {
            tree,
            writes: 0,
            conns: BTreeMap::new(),
            next_conn: 0,
            next_tx: 0,
            introduced: BTreeSet::new(),
            directory_max: PAYLOAD_MAX,
            part_size: PAYLOAD_MAX - 64,
            transaction_limit: usize::MAX,
        }
    }
}

type Reply = Result<Vec<u8>, &'static str>;

impl MockStore {
    /// An empty store (only `/`, owned by dom0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes listings spill into `DIRECTORY_PART` early: `DIRECTORY` answers `E2BIG` above
    /// `directory_max` bytes of names, and each part carries at most `part_size` bytes.
    pub fn set_directory_limits(&self, directory_max: usize, part_size: usize) {
        let mut state = self.lock();
        state.directory_max = directory_max;
        state.part_size = part_size.max(1);
    }

    /// Limits each connection to `limit` open transactions: one more `TRANSACTION_START` fails
    /// with `ENOSPC`, as xenstored's `quota-max-transaction` makes it.
    pub fn set_transaction_limit(&self, limit: usize) {
        self.lock().transaction_limit = limit;
    }

    /// Changes a node as another client would (firing watches), bypassing permissions.
    pub fn write_as_dom0(&self, path: &str, value: &[u8]) {
        let mut state = self.lock();
        let mut tree = std::mem::take(&mut state.tree);
        let changed = write_node(&mut tree, path, value, 0);
        state.tree = tree;
        state.writes += 1;
        state.fire(&[changed]);
        drop(state);
        self.shared.ready.notify_all();
    }

    /// A new connection of domain `domid` (0: a dom0 socket), as an in-memory byte stream.
    pub fn connect(&self, domid: DomId) -> MockConnection {
        let mut state = self.lock();
        state.next_conn += 1;
        let id = state.next_conn;
        state.conns.insert(
            id,
            Conn {
                domid: domid.0,
                ..Conn::default()
            },
        );
        MockConnection {
            store: self.clone(),
            id,
        }
    }

    /// Serves `stream` as domain `domid` on a new thread until the peer closes it.
    pub fn serve(
        &self,
        stream: std::os::unix::net::UnixStream,
        domid: DomId,
    ) -> std::thread::JoinHandle<()> {
        let mut conn = self.connect(domid);
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut reader = stream.try_clone().expect("a socket can be cloned");
            let mut writer = stream;
            let out = conn.clone_handle();
            let pump = std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match out.read_blocking(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if writer.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => conn.feed(&buf[..n]),
                }
            }
            drop(conn);
            let _ = pump.join();
        })
    }

    /// How many transactions are open, over every connection (a commit or abort ends one).
    pub fn open_transactions(&self) -> usize {
        self.lock().conns.values().map(|conn| conn.txs.len()).sum()
    }

    /// How many watches are set, over every connection (an unwatch removes one).
    pub fn watch_count(&self) -> usize {
        self.lock()
            .conns
            .values()
            .map(|conn| conn.watches.len())
            .sum()
    }

    /// Sends raw bytes to a connection, as a hostile daemon would.
    pub fn inject(&self, connection: &MockConnection, bytes: &[u8]) {
        let mut state = self.lock();
        if let Some(conn) = state.conns.get_mut(&connection.id) {
            conn.inbox.extend(bytes);
        }
        drop(state);
        self.shared.ready.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One client connection to a [`MockStore`]: a byte stream (`embedded_io` and `std::io`).
/// Reads block until the server has something to say; dropping it closes the connection.
#[derive(Debug)]
pub struct MockConnection {
    store: MockStore,
    id: u64,
}

impl MockConnection {
    fn clone_handle(&self) -> MockReader {
        MockReader {
            store: self.store.clone(),
            id: self.id,
        }
    }

    /// Takes what the server has sent so far, without blocking (0: nothing yet).
    pub fn read_available(&mut self, buf: &mut [u8]) -> usize {
        let mut state = self.store.lock();
        let Some(conn) = state.conns.get_mut(&self.id) else {
            return 0;
        };
        let n = buf.len().min(conn.inbox.len());
        for (slot, byte) in buf.iter_mut().zip(conn.inbox.drain(..n)) {
            *slot = byte;
        }
        n
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut state = self.store.lock();
        state.receive(self.id, bytes);
        drop(state);
        self.store.shared.ready.notify_all();
    }
}

impl Drop for MockConnection {
    fn drop(&mut self) {
        let mut state = self.store.lock();
        if let Some(conn) = state.conns.get_mut(&self.id) {
            conn.closed = true;
            conn.watches.clear();
            conn.txs.clear();
        }
        drop(state);
        self.store.shared.ready.notify_all();
    }
}

/// The read side of a served connection.
#[derive(Debug)]
struct MockReader {
    store: MockStore,
    id: u64,
}

impl MockReader {
    fn read_blocking(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_inbox(&self.store, self.id, buf)
    }
}

fn read_inbox(store: &MockStore, id: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut state = store.lock();
    loop {
        let Some(conn) = state.conns.get_mut(&id) else {
            return Ok(0);
        };
        if !conn.inbox.is_empty() {
            let n = buf.len().min(conn.inbox.len());
            for (slot, byte) in buf.iter_mut().zip(conn.inbox.drain(..n)) {
                *slot = byte;
            }
            return Ok(n);
        }
        if conn.closed {
            state.conns.remove(&id);
            return Ok(0);
        }
        state = store
            .shared
            .ready
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    }
}

impl embedded_io::ErrorType for MockConnection {
    type Error = io::Error;
}

impl embedded_io::Read for MockConnection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_inbox(&self.store, self.id, buf)
    }
}

impl embedded_io::Write for MockConnection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl State {
    fn receive(&mut self, id: u64, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.decoder.push(bytes);
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            match conn.decoder.next_message() {
                Ok(Some(message)) => self.handle(id, message),
                Ok(None) => return,
                // xenstored drops a connection that breaks the framing.
                Err(_) => {
                    conn.closed = true;
                    return;
                }
            }
        }
    }

    fn send(&mut self, id: u64, ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let mut bytes = Vec::new();
            wire::encode(ty, req_id, tx_id, &[payload], &mut bytes).expect("mock replies fit");
            conn.inbox.extend(bytes);
        }
    }

    fn handle(&mut self, id: u64, message: Message) {
        let Header {
            ty, req_id, tx_id, ..
        } = message.header;
        let reply = self.execute(id, ty, tx_id, &message.payload);
        match reply {
            Ok(payload) => self.send(id, ty, req_id, tx_id, &payload),
            Err(errno) => {
                let mut payload = errno.as_bytes().to_vec();
                payload.push(0);
                self.send(id, MsgType::ERROR, req_id, tx_id, &payload);
            }
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            for bytes in std::mem::take(&mut conn.deferred) {
                conn.inbox.extend(bytes);
            }
        }
    }

    fn execute(&mut self, id: u64, ty: MsgType, tx_id: u32, payload: &[u8]) -> Reply {
        let domid = self.conns[&id].domid;
        let args = split_args(payload);
        let arg = |i: usize| args.get(i).copied().ok_or("EINVAL");
        let path = |i: usize| -> Result<String, &'static str> {
            let raw = std::str::from_utf8(arg(i)?).map_err(|_| "EINVAL")?;
            absolute(raw, domid)
        };
        match ty {
            MsgType::READ
            | MsgType::DIRECTORY
            | MsgType::DIRECTORY_PART
            | MsgType::GET_PERMS
            | MsgType::WRITE
            | MsgType::MKDIR
            | MsgType::RM
            | MsgType::SET_PERMS => {
                let path = path(0)?;
                self.tree_op(id, ty, tx_id, &path, payload)
            }
            MsgType::WATCH => {
                let (wpath, token) = (arg(0)?, arg(1)?);
                let wpath = String::from_utf8(wpath.to_vec()).map_err(|_| "EINVAL")?;
                let token = String::from_utf8(token.to_vec()).map_err(|_| "EINVAL")?;
                let conn = self.conns.get_mut(&id).ok_or("EINVAL")?;
                if conn.watches.iter().any(|(p, t)| *p == wpath && *t == token) {
                    return Err("EEXIST");
                }
                conn.watches.push((wpath.clone(), token.clone()));
                // Fired once right away, after the reply.
                conn.deferred.push(watch_event(&wpath, &token));
                Ok(b"OK\0".to_vec())
            }
            MsgType::UNWATCH => {
                let (wpath, token) = (arg(0)?, arg(1)?);
                let conn = self.conns.get_mut(&id).ok_or("EINVAL")?;
                let before = conn.watches.len();
                conn.watches
                    .retain(|(p, t)| !(p.as_bytes() == wpath && t.as_bytes() == token));
                if conn.watches.len() == before {
                    return Err("ENOENT");
                }
                Ok(b"OK\0".to_vec())
            }
            MsgType::TRANSACTION_START => {
                if tx_id != 0 {
                    return Err("EBUSY");
                }
                if self.conns[&id].txs.len() >= self.transaction_limit {
                    return Err("ENOSPC");
                }
                self.next_tx += 1;
                let tx = self.next_tx;
                let snapshot = Tx {
                    tree: self.tree.clone(),
                    base: self.writes,
                    changed: BTreeSet::new(),
                };
                self.conns
                    .get_mut(&id)
                    .ok_or("EINVAL")?
                    .txs
                    .insert(tx, snapshot);
                let mut out = Vec::new();
                push_decimal(&mut out, u64::from(tx));
                out.push(0);
                Ok(out)
            }
            MsgType::TRANSACTION_END => {
                let commit = match arg(0)? {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err("EINVAL"),
                };
                let tx = self
                    .conns
                    .get_mut(&id)
                    .and_then(|c| c.txs.remove(&tx_id))
                    .ok_or("ENOENT")?;
                if commit {
                    if tx.base != self.writes && !tx.changed.is_empty() {
                        return Err("EAGAIN");
                    }
                    if !tx.changed.is_empty() {
                        self.tree = tx.tree;
                        self.writes += 1;
                        let changed: Vec<String> = tx.changed.into_iter().collect();
                        self.fire(&changed);
                    }
                }
                Ok(b"OK\0".to_vec())
            }
            MsgType::GET_DOMAIN_PATH => {
                let target = parse_domid(arg(0)?)?;
                let mut out = b"/local/domain/".to_vec();
                push_decimal(&mut out, u64::from(target));
                out.push(0);
                Ok(out)
            }
            MsgType::INTRODUCE | MsgType::RELEASE | MsgType::RESUME | MsgType::SET_TARGET => {
                if domid != 0 {
                    return Err("EACCES");
                }
                let target = parse_domid(arg(0)?)?;
                match ty {
                    MsgType::INTRODUCE => {
                        self.introduced.insert(target);
                    }
                    MsgType::RELEASE => {
                        self.introduced.remove(&target);
                    }
                    _ => {}
                }
                Ok(b"OK\0".to_vec())
            }
            MsgType::IS_DOMAIN_INTRODUCED => {
                let target = parse_domid(arg(0)?)?;
                Ok(if target == 0 || self.introduced.contains(&target) {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                })
            }
            MsgType::RESET_WATCHES => {
                let conn = self.conns.get_mut(&id).ok_or("EINVAL")?;
                conn.watches.clear();
                conn.txs.clear();
                Ok(b"OK\0".to_vec())
            }
            MsgType::CONTROL => match arg(0)? {
                b"check" => Ok(b"OK\0".to_vec()),
                _ => Err("EINVAL"),
            },
            _ => Err("EINVAL"),
        }
    }

    fn tree_op(&mut self, id: u64, ty: MsgType, tx_id: u32, path: &str, payload: &[u8]) -> Reply {
        let domid = self.conns[&id].domid;
        let directory_max = self.directory_max;
        let part_size = self.part_size;
        let conn = self.conns.get_mut(&id).ok_or("EINVAL")?;
        let (tree, tx_changed) = if tx_id == 0 {
            (&mut self.tree, None)
        } else {
            let tx = conn.txs.get_mut(&tx_id).ok_or("ENOENT")?;
            (&mut tx.tree, Some(&mut tx.changed))
        };
        let args = split_args(payload);
        let readable = |tree: &Tree, p: &str| -> Result<(), &'static str> {
            match tree.get(p) {
                None => Err("ENOENT"),
                Some(node) if allowed(node, domid, false) => Ok(()),
                Some(_) => Err("EACCES"),
            }
        };
        let mut changed = None;
        let reply = match ty {
            MsgType::READ => {
                readable(tree, path)?;
                tree[path].value.clone()
            }
            MsgType::DIRECTORY | MsgType::DIRECTORY_PART => {
                readable(tree, path)?;
                let mut list = Vec::new();
                for child in children(tree, path) {
                    list.extend_from_slice(child.as_bytes());
                    list.push(0);
                }
                if ty == MsgType::DIRECTORY {
                    if list.len() > directory_max {
                        return Err("E2BIG");
                    }
                    list
                } else {
                    let offset = args
                        .get(1)
                        .and_then(|o| parse_decimal(o))
                        .and_then(|o| usize::try_from(o).ok())
                        .filter(|&o| o <= list.len())
                        .ok_or("EINVAL")?;
                    let mut out = b"1\0".to_vec();
                    // Whole names only, at most `part_size` bytes of them.
                    let mut end = offset;
                    while end < list.len() {
                        let next = end
                            + list[end..]
                                .iter()
                                .position(|&b| b == 0)
                                .map_or(0, |i| i + 1);
                        if next - offset > part_size && end > offset {
                            break;
                        }
                        end = next;
                    }
                    out.extend_from_slice(&list[offset..end]);
                    if end == list.len() {
                        out.push(0);
                    }
                    out
                }
            }
            MsgType::GET_PERMS => {
                readable(tree, path)?;
                let mut out = Vec::new();
                for perm in &tree[path].perms {
                    perm.encode(&mut out);
                }
                out
            }
            MsgType::WRITE | MsgType::MKDIR => {
                writable(tree, path, domid)?;
                if ty == MsgType::MKDIR && tree.contains_key(path) {
                    return Ok(b"OK\0".to_vec());
                }
                let value = match ty {
                    MsgType::WRITE => {
                        let nul = payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
                        &payload[nul + 1..]
                    }
                    _ => &[][..],
                };
                changed = Some(write_node(tree, path, value, domid));
                b"OK\0".to_vec()
            }
            MsgType::RM => {
                if path == "/" {
                    return Err("EINVAL");
                }
                if !tree.contains_key(path) {
                    let parent = parent(path);
                    return if tree.contains_key(parent) {
                        Ok(b"OK\0".to_vec())
                    } else {
                        Err("ENOENT")
                    };
                }
                writable(tree, path, domid)?;
                let below = format!("{path}/");
                tree.retain(|p, _| p != path && !p.starts_with(&below));
                changed = Some(path.to_string());
                b"OK\0".to_vec()
            }
            MsgType::SET_PERMS => {
                writable(tree, path, domid)?;
                if !tree.contains_key(path) {
                    return Err("ENOENT");
                }
                let perms = args[1..]
                    .iter()
                    .map(|p| Perm::parse(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| "EINVAL")?;
                if perms.is_empty() {
                    return Err("EINVAL");
                }
                tree.get_mut(path).ok_or("ENOENT")?.perms = perms;
                changed = Some(path.to_string());
                b"OK\0".to_vec()
            }
            _ => return Err("EINVAL"),
        };
        if let Some(changed) = changed {
            match tx_changed {
                Some(set) => {
                    set.insert(changed);
                }
                None => {
                    self.writes += 1;
                    self.fire(&[changed]);
                }
            }
        }
        Ok(reply)
    }

    /// Queues a watch event for every watch at or above (or, for removals, below) a change.
    fn fire(&mut self, changed: &[String]) {
        for conn in self.conns.values_mut() {
            let mut events = Vec::new();
            for (wpath, token) in &conn.watches {
                let home = home(conn.domid);
                let absolute_w = absolute(wpath, conn.domid).unwrap_or_default();
                for path in changed {
                    let event_path = if is_at_or_below(path, &absolute_w) {
                        path.clone()
                    } else if is_at_or_below(&absolute_w, path) {
                        absolute_w.clone()
                    } else {
                        continue;
                    };
                    // A relative watch gets relative paths.
                    let shown = if wpath.starts_with('/') {
                        event_path
                    } else {
                        event_path
                            .strip_prefix(&home)
                            .and_then(|p| p.strip_prefix('/'))
                            .unwrap_or(&event_path)
                            .to_string()
                    };
                    events.push(watch_event(&shown, token));
                }
            }
            for bytes in events {
                conn.inbox.extend(bytes);
            }
        }
    }
}

/// A whole `WATCH_EVENT` message (empty, so nothing is sent, if it would be too long).
fn watch_event(path: &str, token: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let parts = [path.as_bytes(), b"\0", token.as_bytes(), b"\0"];
    let _ = wire::encode(MsgType::WATCH_EVENT, 0, 0, &parts, &mut bytes);
    bytes
}

fn split_args(payload: &[u8]) -> Vec<&[u8]> {
    let mut args: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    if payload.last() == Some(&0) {
        args.pop();
    }
    args
}

fn parse_domid(text: &[u8]) -> Result<u16, &'static str> {
    parse_decimal(text)
        .and_then(|n| u16::try_from(n).ok())
        .ok_or("EINVAL")
}

fn home(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

fn absolute(path: &str, domid: u16) -> Result<String, &'static str> {
    if crate::path::check(path).is_err() && !path.starts_with('@') {
        return Err("EINVAL");
    }
    Ok(if path.starts_with('/') || path.starts_with('@') {
        path.to_string()
    } else {
        format!("{}/{path}", home(domid))
    })
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || ancestor == "/"
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn children<'t>(tree: &'t Tree, path: &str) -> impl Iterator<Item = &'t str> {
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    tree.keys()
        .filter_map(move |k| k.strip_prefix(prefix.as_str()))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// xenstored's rule: the owner (first entry) and dom0 may do anything; others get their own
/// entry's access, or the first entry's.
fn allowed(node: &Node, domid: u16, write: bool) -> bool {
    let Some(owner) = node.perms.first() else {
        return domid == 0;
    };
    if domid == 0 || owner.domid.0 == domid {
        return true;
    }
    let access = node
        .perms
        .iter()
        .skip(1)
        .find(|p| p.domid.0 == domid)
        .unwrap_or(owner)
        .access;
    match access {
        Access::Both => true,
        Access::Read => !write,
        Access::Write => write,
        Access::None => false,
    }
}

/// Write access to a node, or to its nearest existing ancestor when it does not exist.
fn writable(tree: &Tree, path: &str, domid: u16) -> Result<(), &'static str> {
    let mut at = path;
    loop {
        if let Some(node) = tree.get(at) {
            return if allowed(node, domid, true) {
                Ok(())
            } else {
                Err("EACCES")
            };
        }
        at = parent(at);
    }
}

/// Sets a node's value, creating it and its missing parents with the parent's permissions,
/// owned by the writer if it is an unprivileged domain (xenstored's `construct_node`: dom0's
/// new nodes keep the parent's owner, as a toolstack relies on for a guest's directories).
fn write_node(tree: &mut Tree, path: &str, value: &[u8], domid: u16) -> String {
    let mut missing = Vec::new();
    let mut at = path;
    while !tree.contains_key(at) {
        missing.push(at.to_string());
        at = parent(at);
    }
    let mut perms = tree[at].perms.clone();
    for p in missing.into_iter().rev() {
        if let Some(first) = perms.first_mut().filter(|_| domid != 0) {
            first.domid = DomId(domid);
        }
        tree.insert(
            p,
            Node {
                value: Vec::new(),
                perms: perms.clone(),
            },
        );
    }
    if let Some(node) = tree.get_mut(path) {
        node.value = value.to_vec();
    }
    path.to_string()
}

/// Serves a guest's xenstore page as xenstored does for an unprivileged domain, quota
/// included: while `quota` of its replies wait for room in the response ring, no more
/// requests are read (xenstored's `domain_can_read`, `quota_req_outstanding`, 20 by
/// default). Call [`MockRingServer::pump`] in a loop (a daemon thread).
#[derive(Debug)]
pub struct MockRingServer<M> {
    conn: MockConnection,
    requests: xen_shared::Consumer<M>,
    replies: xen_shared::Producer<M>,
    /// The request being read off the ring.
    request: Vec<u8>,
    /// Replies (and watch events) not yet wholly in the ring, whole messages; the first
    /// partly written up to `front_written`.
    outstanding: VecDeque<Vec<u8>>,
    front_written: usize,
    decoder: Decoder,
    quota: usize,
}

/// xenstored's default `quota_req_outstanding`.
pub const OUTSTANDING_QUOTA: usize = 20;

impl<M: xen_shared::RingMemory + Clone> MockRingServer<M> {
    /// Serves `page` for domain `domid`, with at most `quota` replies outstanding.
    ///
    /// # Errors
    ///
    /// [`LayoutError`](xen_shared::LayoutError) if `page` is shorter than the xenstore
    /// interface page's rings and indices.
    pub fn new(
        store: &MockStore,
        page: M,
        domid: DomId,
        quota: usize,
    ) -> Result<Self, xen_shared::LayoutError> {
        use xen_shared::RingLayout;
        Ok(Self {
            conn: store.connect(domid),
            requests: xen_shared::Consumer::new(page.clone(), RingLayout::XENSTORE_REQ)?,
            replies: xen_shared::Producer::new(page, RingLayout::XENSTORE_RSP)?,
            request: Vec::new(),
            outstanding: VecDeque::new(),
            front_written: 0,
            decoder: Decoder::new(),
            quota,
        })
    }

    /// Replies outstanding: answered, not yet wholly in the response ring.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Reads requests (while under quota), answers them, and writes replies while the ring
    /// has room; whether anything moved.
    ///
    /// # Panics
    ///
    /// If the guest's indices are impossible (the test is broken).
    pub fn pump(&mut self) -> bool {
        let mut moved = false;
        while self.outstanding.len() < self.quota {
            // One message at a time: its header, then its payload.
            let want = match self.request.first_chunk::<{ wire::HEADER_LEN }>() {
                Some(header) => wire::HEADER_LEN + Header::from_bytes(header).len as usize,
                None => wire::HEADER_LEN,
            };
            let have = self.request.len();
            // (Only a whole header makes `want` more than a header.)
            if have == want {
                let request = std::mem::take(&mut self.request);
                embedded_io::Write::write(&mut self.conn, &request).expect("the mock accepts");
                self.collect_replies();
                continue;
            }
            self.request.resize(want, 0);
            let n = self
                .requests
                .read(&mut self.request[have..])
                .expect("guest's request indices");
            self.request.truncate(have + n);
            if n == 0 {
                break;
            }
            moved = true;
        }
        while let Some(front) = self.outstanding.front() {
            let n = self
                .replies
                .write(&front[self.front_written..])
                .expect("guest's reply indices");
            if n == 0 {
                break;
            }
            moved = true;
            self.front_written += n;
            if self.front_written == front.len() {
                self.outstanding.pop_front();
                self.front_written = 0;
            }
        }
        self.collect_replies();
        moved
    }

    /// Moves what the store answered (and watch events) into `outstanding`, as messages.
    fn collect_replies(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.conn.read_available(&mut buf);
            if n == 0 {
                break;
            }
            self.decoder.push(&buf[..n]);
        }
        while let Ok(Some(message)) = self.decoder.next_message() {
            let mut bytes = message.header.to_bytes().to_vec();
            bytes.extend_from_slice(&message.payload);
            self.outstanding.push_back(bytes);
        }
    }
}

/// `/dev/xen/xenbus` as Linux implements it (`drivers/xen/xenbus/xenbus_dev_frontend.c`),
/// in front of a [`MockStore`] connection, as a `std::io` device for
/// [`Xenbus`](crate::unix::Xenbus):
///
/// - a write adds to one message buffer of `XENSTORE_PAYLOAD_MAX` bytes, header included:
///   beyond it the buffer is dropped and the write fails with `EINVAL` (`E2BIG` once a
///   header announces more); a whole message is acted on and whatever follows it in the
///   buffer is dropped;
/// - a failed `WATCH` is the write's error, not a reply; [`MockXenbus::fail_next_request`]
///   makes the next whole request fail so (as `ENOMEM` would);
/// - reads return what is queued in odd-sized pieces (1, 5, 16, 17, 100, 4096 bytes, in turn).
#[derive(Debug)]
pub struct MockXenbus {
    conn: MockConnection,
    buffer: Vec<u8>,
    decoder: Decoder,
    queued: VecDeque<u8>,
    fail_next: Option<i32>,
    reads: usize,
}

impl MockXenbus {
    /// The device of domain `domid`'s kernel.
    pub fn new(store: &MockStore, domid: DomId) -> Self {
        Self {
            conn: store.connect(domid),
            buffer: Vec::new(),
            decoder: Decoder::new(),
            queued: VecDeque::new(),
            fail_next: None,
            reads: 0,
        }
    }

    /// The next whole request fails with `errno` (a Linux errno) as the write's error.
    pub fn fail_next_request(&mut self, errno: i32) {
        self.fail_next = Some(errno);
    }

    /// Takes what the store answered; the reply to `req_id`, if it is among it.
    fn collect(&mut self, req_id: Option<u32>) -> Option<Message> {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.conn.read_available(&mut buf);
            if n == 0 {
                break;
            }
            self.decoder.push(&buf[..n]);
        }
        let mut reply = None;
        while let Ok(Some(message)) = self.decoder.next_message() {
            if req_id == Some(message.header.req_id) && message.header.ty != MsgType::WATCH_EVENT {
                reply = Some(message);
                continue;
            }
            self.queued.extend(message.header.to_bytes());
            self.queued.extend(&message.payload);
        }
        reply
    }

    fn act(&mut self, message: Vec<u8>) -> io::Result<()> {
        let header = Header::from_bytes(message[..wire::HEADER_LEN].try_into().expect("whole"));
        if let Some(errno) = self.fail_next.take() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        embedded_io::Write::write(&mut self.conn, &message)?;
        if header.ty != MsgType::WATCH && header.ty != MsgType::UNWATCH {
            return Ok(());
        }
        // The kernel (un)registers the watch itself: a refusal is the write's error.
        let reply = self
            .collect(Some(header.req_id))
            .expect("the mock answers at once");
        if reply.header.ty == MsgType::ERROR && header.ty == MsgType::WATCH {
            let name = reply.payload.strip_suffix(b"\0").unwrap_or(&reply.payload);
            let errno = (1..200)
                .find(|&code| {
                    crate::Errno::from_raw(code)
                        .name()
                        .is_some_and(|n| n.as_bytes() == name)
                })
                .unwrap_or(5);
            return Err(io::Error::from_raw_os_error(errno));
        }
        // Answered "OK" (an unknown `UNWATCH` too), with the request's header.
        let mut ok = Header { len: 3, ..header }.to_bytes().to_vec();
        ok.extend(b"OK\0");
        self.queued.extend(ok);
        Ok(())
    }
}

impl io::Write for MockXenbus {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        const BUFFER: usize = PAYLOAD_MAX;
        if buf.is_empty() {
            return Ok(0);
        }
        if self.buffer.len() + buf.len() > BUFFER {
            self.buffer.clear();
            return Err(io::Error::from_raw_os_error(22)); // EINVAL
        }
        self.buffer.extend_from_slice(buf);
        let Some(header) = self.buffer.first_chunk::<{ wire::HEADER_LEN }>() else {
            return Ok(buf.len());
        };
        let whole = wire::HEADER_LEN + Header::from_bytes(header).len as usize;
        if whole > BUFFER {
            self.buffer.clear();
            return Err(io::Error::from_raw_os_error(7)); // E2BIG
        }
        if self.buffer.len() < whole {
            return Ok(buf.len());
        }
        let mut message = std::mem::take(&mut self.buffer);
        message.truncate(whole);
        self.act(message)?;
        self.collect(None);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Read for MockXenbus {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const PIECES: [usize; 6] = [1, 5, 16, 17, 100, 4096];
        while self.queued.is_empty() {
            // Blocks until the store says something (a watch event, say).
            let mut more = [0u8; 4096];
            let n = embedded_io::Read::read(&mut self.conn, &mut more)?;
            if n == 0 {
                return Ok(0);
            }
            self.decoder.push(&more[..n]);
            self.collect(None);
        }
        let piece = PIECES[self.reads % PIECES.len()];
        self.reads += 1;
        let n = buf.len().min(piece).min(self.queued.len());
        for (slot, byte) in buf.iter_mut().zip(self.queued.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}
