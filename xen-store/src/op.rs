//! Every request: its payload, built and checked before sending, and the parser of its reply.
//!
//! An [`Op`] is transport-neutral; the sync [`Client`](crate::Client) and the async client run
//! the same ops.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use xen_hypercall::DomId;

use crate::error::{Errno, Error, ProtocolError};
use crate::path;
use crate::perms::{Perm, parse_decimal, push_decimal};
use crate::wire::{Escaped, MsgType, PAYLOAD_MAX};

/// A request ready to send, and how to read its reply.
pub struct Op<R> {
    pub(crate) ty: MsgType,
    pub(crate) payload: Vec<u8>,
    pub(crate) parse: fn(Vec<u8>) -> Result<R, Error>,
}

impl<R> fmt::Debug for Op<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("ty", &self.ty)
            .field("payload", &Escaped(&self.payload))
            .finish_non_exhaustive()
    }
}

impl<R> Op<R> {
    fn new(
        ty: MsgType,
        payload: Vec<u8>,
        parse: fn(Vec<u8>) -> Result<R, Error>,
    ) -> Result<Self, Error> {
        if payload.len() > PAYLOAD_MAX {
            return Err(Error::RequestTooLong {
                len: payload.len(),
                max: PAYLOAD_MAX,
            });
        }
        Ok(Self { ty, payload, parse })
    }

    /// The request's type.
    pub fn msg_type(&self) -> MsgType {
        self.ty
    }

    /// The request's payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Reads the payload of a successful reply.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] if the payload is not what this request's reply holds.
    pub fn parse_reply(&self, payload: Vec<u8>) -> Result<R, Error> {
        (self.parse)(payload)
    }
}

/// Strings each followed by a NUL.
fn strings(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        out.extend_from_slice(part);
        out.push(0);
    }
    out
}

fn no_nul(text: &str, what: &'static str) -> Result<(), Error> {
    if text.as_bytes().contains(&0) {
        Err(Error::InvalidInput(what))
    } else {
        Ok(())
    }
}

fn domid_text(domid: DomId) -> Vec<u8> {
    let mut out = Vec::new();
    push_decimal(&mut out, u64::from(domid.0));
    out.push(0);
    out
}

fn path_op<R>(
    ty: MsgType,
    path: &str,
    parse: fn(Vec<u8>) -> Result<R, Error>,
) -> Result<Op<R>, Error> {
    path::check(path)?;
    Op::new(ty, strings(&[path.as_bytes()]), parse)
}

/// The reply `"OK\0"`.
pub(crate) fn parse_ok(payload: Vec<u8>) -> Result<(), Error> {
    if payload == b"OK\0" {
        Ok(())
    } else {
        Err(ProtocolError::Malformed("OK").into())
    }
}

fn parse_value(payload: Vec<u8>) -> Result<Vec<u8>, Error> {
    Ok(payload)
}

/// One NUL-terminated UTF-8 string.
fn parse_string(payload: Vec<u8>) -> Result<String, Error> {
    let Some((0, text)) = payload.split_last() else {
        return Err(ProtocolError::MissingNul.into());
    };
    if text.contains(&0) {
        return Err(ProtocolError::Malformed("string").into());
    }
    let len = text.len();
    let mut payload = payload;
    payload.truncate(len);
    String::from_utf8(payload).map_err(|_| ProtocolError::Malformed("string").into())
}

/// Zero or more NUL-terminated strings (`<name>|*`).
fn parse_list(payload: Vec<u8>) -> Result<Vec<String>, Error> {
    let Some(body) = payload.strip_suffix(b"\0") else {
        return if payload.is_empty() {
            Ok(Vec::new())
        } else {
            Err(ProtocolError::MissingNul.into())
        };
    };
    body.split(|&b| b == 0)
        .map(|name| {
            String::from_utf8(name.to_vec()).map_err(|_| ProtocolError::Malformed("name").into())
        })
        .collect()
}

fn parse_perms(payload: Vec<u8>) -> Result<Vec<Perm>, Error> {
    let Some(body) = payload.strip_suffix(b"\0") else {
        return Err(ProtocolError::MissingNul.into());
    };
    body.split(|&b| b == 0).map(Perm::parse).collect()
}

fn parse_bool(payload: Vec<u8>) -> Result<bool, Error> {
    match &payload[..] {
        b"T\0" => Ok(true),
        b"F\0" => Ok(false),
        _ => Err(ProtocolError::Malformed("T/F").into()),
    }
}

pub(crate) fn parse_tx_id(payload: Vec<u8>) -> Result<u32, Error> {
    let Some(digits) = payload.strip_suffix(b"\0") else {
        return Err(ProtocolError::MissingNul.into());
    };
    match parse_decimal(digits).and_then(|n| u32::try_from(n).ok()) {
        Some(id) if id != 0 => Ok(id),
        _ => Err(ProtocolError::Malformed("transaction id").into()),
    }
}

/// `READ`: the node's value (any bytes).
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn read(path: &str) -> Result<Op<Vec<u8>>, Error> {
    path_op(MsgType::READ, path, parse_value)
}

/// `READ` of a text value: the node's value as UTF-8 (`InvalidInput` if it is not).
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn read_string(path: &str) -> Result<Op<String>, Error> {
    path_op(MsgType::READ, path, parse_text)
}

fn parse_text(payload: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(payload).map_err(|_| Error::InvalidInput("value is not UTF-8"))
}

/// `WRITE`: sets the node's value, creating it and missing parents.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn write(path: &str, value: &[u8]) -> Result<Op<()>, Error> {
    path::check(path)?;
    let mut payload = strings(&[path.as_bytes()]);
    payload.extend_from_slice(value);
    Op::new(MsgType::WRITE, payload, parse_ok)
}

/// `MKDIR`: creates the node (and parents) if missing.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn mkdir(path: &str) -> Result<Op<()>, Error> {
    path_op(MsgType::MKDIR, path, parse_ok)
}

/// `RM`: removes the node and everything below it.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn rm(path: &str) -> Result<Op<()>, Error> {
    path_op(MsgType::RM, path, parse_ok)
}

/// `DIRECTORY`: the children's names. Fails with `E2BIG` when they do not fit in one reply
/// (see [`directory_part`]).
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn directory(path: &str) -> Result<Op<Vec<String>>, Error> {
    path_op(MsgType::DIRECTORY, path, parse_list)
}

/// One reply of `DIRECTORY_PART`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirectoryPart {
    /// The node's generation count: equal in two parts means the node did not change between.
    pub generation: String,
    /// The names in this part.
    pub names: Vec<String>,
    /// Whether this part ends the list.
    pub complete: bool,
    /// The bytes of the list this part covers (the next part's offset grows by this much).
    pub consumed: usize,
}

fn parse_directory_part(payload: Vec<u8>) -> Result<DirectoryPart, Error> {
    let malformed = || Error::Protocol(ProtocolError::Malformed("DIRECTORY_PART"));
    let nul = payload
        .iter()
        .position(|&b| b == 0)
        .ok_or(ProtocolError::MissingNul)?;
    let generation = String::from_utf8(payload[..nul].to_vec()).map_err(|_| malformed())?;
    let mut rest = &payload[nul + 1..];
    let mut names = Vec::new();
    let mut consumed = 0;
    let mut complete = false;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::MissingNul)?;
        if end == 0 {
            // An empty name ends the list, and must be the last thing in the reply.
            if rest.len() != 1 {
                return Err(malformed());
            }
            complete = true;
            break;
        }
        names.push(String::from_utf8(rest[..end].to_vec()).map_err(|_| malformed())?);
        consumed += end + 1;
        rest = &rest[end + 1..];
    }
    if !complete && names.is_empty() {
        // No progress and no end: following the offset would loop forever.
        return Err(malformed());
    }
    Ok(DirectoryPart {
        generation,
        names,
        complete,
        consumed,
    })
}

/// `DIRECTORY_PART`: the children's names from byte `offset` of the whole list.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn directory_part(path: &str, offset: usize) -> Result<Op<DirectoryPart>, Error> {
    path::check(path)?;
    let mut offset_text = Vec::new();
    push_decimal(&mut offset_text, offset as u64);
    Op::new(
        MsgType::DIRECTORY_PART,
        strings(&[path.as_bytes(), &offset_text]),
        parse_directory_part,
    )
}

/// How often a listing restarts because the directory changed between its parts.
const DIRECTORY_ATTEMPTS: usize = 16;

/// A listing through `DIRECTORY_PART`, without I/O: send [`DirectoryParts::next`], give its
/// reply to [`DirectoryParts::add`], until that returns the names. A part whose generation
/// differs from the first's restarts the listing, at most `DIRECTORY_ATTEMPTS` times
/// (then `EAGAIN`).
#[derive(Debug)]
pub(crate) struct DirectoryParts<'p> {
    path: &'p str,
    names: Vec<String>,
    offset: usize,
    generation: Option<String>,
    restarts: usize,
}

impl<'p> DirectoryParts<'p> {
    pub(crate) fn new(path: &'p str) -> Self {
        Self {
            path,
            names: Vec::new(),
            offset: 0,
            generation: None,
            restarts: 0,
        }
    }

    /// The request for the next part.
    pub(crate) fn next(&self) -> Result<Op<DirectoryPart>, Error> {
        directory_part(self.path, self.offset)
    }

    /// Takes the reply to [`DirectoryParts::next`]: the whole list once it is complete.
    pub(crate) fn add(&mut self, part: DirectoryPart) -> Result<Option<Vec<String>>, Error> {
        if *self
            .generation
            .get_or_insert_with(|| part.generation.clone())
            != part.generation
        {
            self.restarts += 1;
            if self.restarts == DIRECTORY_ATTEMPTS {
                return Err(Error::Xen(Errno::EAGAIN));
            }
            self.names.clear();
            self.offset = 0;
            self.generation = None;
            return Ok(None);
        }
        self.offset += part.consumed;
        self.names.extend(part.names);
        Ok(part.complete.then(|| core::mem::take(&mut self.names)))
    }
}

/// `GET_PERMS`: the node's permission list, owner first.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::RequestTooLong`] for a request
/// past the payload limit.
pub fn get_perms(path: &str) -> Result<Op<Vec<Perm>>, Error> {
    path_op(MsgType::GET_PERMS, path, parse_perms)
}

/// `SET_PERMS`: replaces the node's permission list (owner first; at least one entry).
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::InvalidInput`] for an empty
/// list, [`Error::RequestTooLong`] for a request past the payload limit.
pub fn set_perms(path: &str, perms: &[Perm]) -> Result<Op<()>, Error> {
    path::check(path)?;
    if perms.is_empty() {
        return Err(Error::InvalidInput("a permission list needs an owner"));
    }
    let mut payload = strings(&[path.as_bytes()]);
    for perm in perms {
        perm.encode(&mut payload);
    }
    Op::new(MsgType::SET_PERMS, payload, parse_ok)
}

/// `WATCH`: events for `path` and below will carry `token`.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::InvalidInput`] for an empty
/// token or one holding a NUL, [`Error::RequestTooLong`] for a request past the payload limit.
pub fn watch(path: &str, token: &str) -> Result<Op<()>, Error> {
    watch_op(MsgType::WATCH, path, token)
}

/// `UNWATCH`: removes the watch registered with the same path and token.
///
/// # Errors
///
/// [`Error::Path`] for a path xenstore would refuse, [`Error::InvalidInput`] for an empty
/// token or one holding a NUL, [`Error::RequestTooLong`] for a request past the payload limit.
pub fn unwatch(path: &str, token: &str) -> Result<Op<()>, Error> {
    watch_op(MsgType::UNWATCH, path, token)
}

fn watch_op(ty: MsgType, path: &str, token: &str) -> Result<Op<()>, Error> {
    path::check_watch(path)?;
    if token.is_empty() {
        return Err(Error::InvalidInput("empty watch token"));
    }
    no_nul(token, "NUL in a watch token")?;
    Op::new(ty, strings(&[path.as_bytes(), token.as_bytes()]), parse_ok)
}

/// `TRANSACTION_START`: a new transaction's id (never 0).
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn transaction_start() -> Result<Op<u32>, Error> {
    Op::new(MsgType::TRANSACTION_START, strings(&[b""]), parse_tx_id)
}

/// `TRANSACTION_END`: commits (`true`; `EAGAIN` if another writer got in first) or aborts.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn transaction_end(commit: bool) -> Result<Op<()>, Error> {
    let flag: &[u8] = if commit { b"T" } else { b"F" };
    Op::new(MsgType::TRANSACTION_END, strings(&[flag]), parse_ok)
}

/// `GET_DOMAIN_PATH`: the domain's home (`/local/domain/<domid>`).
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn get_domain_path(domid: DomId) -> Result<Op<String>, Error> {
    Op::new(MsgType::GET_DOMAIN_PATH, domid_text(domid), parse_string)
}

/// `INTRODUCE` (dom0 only): tells the daemon to serve a domain's ring at guest frame `mfn`
/// with event channel `port`.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn introduce(domid: DomId, mfn: u64, port: u32) -> Result<Op<()>, Error> {
    let mut payload = domid_text(domid);
    push_decimal(&mut payload, mfn);
    payload.push(0);
    push_decimal(&mut payload, u64::from(port));
    payload.push(0);
    Op::new(MsgType::INTRODUCE, payload, parse_ok)
}

/// `RELEASE` (dom0 only): the daemon stops serving the domain.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn release(domid: DomId) -> Result<Op<()>, Error> {
    Op::new(MsgType::RELEASE, domid_text(domid), parse_ok)
}

/// `IS_DOMAIN_INTRODUCED`: whether the daemon serves the domain.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn is_domain_introduced(domid: DomId) -> Result<Op<bool>, Error> {
    Op::new(MsgType::IS_DOMAIN_INTRODUCED, domid_text(domid), parse_bool)
}

/// `RESUME` (dom0 only): `@releaseDomain` fires again for the domain.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn resume(domid: DomId) -> Result<Op<()>, Error> {
    Op::new(MsgType::RESUME, domid_text(domid), parse_ok)
}

/// `SET_TARGET` (dom0 only): `domid` gets `target`'s privileges over `target`'s nodes.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn set_target(domid: DomId, target: DomId) -> Result<Op<()>, Error> {
    let mut payload = domid_text(domid);
    payload.extend_from_slice(&domid_text(target));
    Op::new(MsgType::SET_TARGET, payload, parse_ok)
}

/// `RESET_WATCHES`: drops every watch and transaction of this connection.
///
/// # Errors
///
/// None in practice: the payload is a few bytes, far below the limit [`Error::RequestTooLong`]
/// guards.
pub fn reset_watches() -> Result<Op<()>, Error> {
    Op::new(MsgType::RESET_WATCHES, strings(&[b""]), parse_ok)
}

/// `CONTROL`: a daemon-specific command (`["check"]`, `["log", "on"]`); the raw reply.
///
/// # Errors
///
/// [`Error::InvalidInput`] for no command or an argument holding a NUL, [`Error::RequestTooLong`]
/// for arguments past the payload limit.
pub fn control(args: &[&str]) -> Result<Op<Vec<u8>>, Error> {
    if args.is_empty() {
        return Err(Error::InvalidInput("CONTROL needs a command"));
    }
    let mut parts = Vec::with_capacity(args.len());
    for arg in args {
        no_nul(arg, "NUL in a CONTROL argument")?;
        parts.push(arg.as_bytes());
    }
    Op::new(MsgType::CONTROL, strings(&parts), parse_value)
}

/// A watch event's payload, `<path>|<token>|`.
pub(crate) fn parse_watch_event(payload: &[u8]) -> Result<(&str, &str), ProtocolError> {
    let malformed = ProtocolError::Malformed("WATCH_EVENT");
    let body = payload
        .strip_suffix(b"\0")
        .ok_or(ProtocolError::MissingNul)?;
    let nul = body.iter().position(|&b| b == 0).ok_or(malformed)?;
    let (path, token) = (&body[..nul], &body[nul + 1..]);
    if token.contains(&0) {
        return Err(malformed);
    }
    match (core::str::from_utf8(path), core::str::from_utf8(token)) {
        (Ok(path), Ok(token)) => Ok((path, token)),
        _ => Err(malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn payloads_match_the_protocol_document() {
        assert_eq!(read("/a/b").unwrap().payload(), b"/a/b\0");
        assert_eq!(write("/a", b"v\0x").unwrap().payload(), b"/a\0v\0x");
        assert_eq!(directory_part("/a", 12).unwrap().payload(), b"/a\x0012\0");
        assert_eq!(
            watch("@releaseDomain", "t1").unwrap().payload(),
            b"@releaseDomain\0t1\0"
        );
        assert_eq!(transaction_start().unwrap().payload(), b"\0");
        assert_eq!(transaction_end(true).unwrap().payload(), b"T\0");
        assert_eq!(transaction_end(false).unwrap().payload(), b"F\0");
        assert_eq!(get_domain_path(DomId(7)).unwrap().payload(), b"7\0");
        assert_eq!(
            introduce(DomId(1), 0x1234, 3).unwrap().payload(),
            b"1\x004660\x003\0"
        );
        assert_eq!(
            set_target(DomId(2), DomId(3)).unwrap().payload(),
            b"2\x003\0"
        );
        assert_eq!(control(&["log", "on"]).unwrap().payload(), b"log\0on\0");
        let perms = [
            Perm::new(DomId(0), crate::Access::None),
            Perm::new(DomId(5), crate::Access::Read),
        ];
        assert_eq!(set_perms("/a", &perms).unwrap().payload(), b"/a\0n0\0r5\0");
    }

    #[test]
    fn bad_arguments_are_refused_before_sending() {
        assert!(matches!(read("a//b"), Err(Error::Path(_))));
        assert!(matches!(watch("/a", ""), Err(Error::InvalidInput(_))));
        assert!(matches!(watch("/a", "t\0"), Err(Error::InvalidInput(_))));
        assert!(matches!(set_perms("/a", &[]), Err(Error::InvalidInput(_))));
        assert!(matches!(control(&[]), Err(Error::InvalidInput(_))));
        let big = vec![0u8; PAYLOAD_MAX];
        assert!(
            matches!(write("/a", &big), Err(Error::RequestTooLong { len, .. }) if len == PAYLOAD_MAX + 3)
        );
        assert!(write("/a", &big[..PAYLOAD_MAX - 3]).is_ok());
    }

    #[test]
    fn replies_are_parsed_strictly() {
        assert!(parse_ok(b"OK\0".to_vec()).is_ok());
        assert!(parse_ok(b"OK".to_vec()).is_err());
        assert_eq!(parse_list(b"a\0b\0".to_vec()).unwrap(), ["a", "b"]);
        assert!(parse_list(Vec::new()).unwrap().is_empty());
        assert!(matches!(
            parse_list(b"a\0b".to_vec()),
            Err(Error::Protocol(ProtocolError::MissingNul))
        ));
        assert_eq!(
            parse_string(b"/local/domain/3\0".to_vec()).unwrap(),
            "/local/domain/3"
        );
        assert!(parse_string(b"/x".to_vec()).is_err());
        assert!(parse_string(b"/x\0y\0".to_vec()).is_err());
        assert_eq!(parse_tx_id(b"42\0".to_vec()).unwrap(), 42);
        assert!(parse_tx_id(b"0\0".to_vec()).is_err());
        assert!(parse_tx_id(b"4294967296\0".to_vec()).is_err());
        assert!(parse_tx_id(b"x\0".to_vec()).is_err());
        assert!(parse_bool(b"T\0".to_vec()).unwrap());
        assert!(parse_bool(b"Y\0".to_vec()).is_err());
        assert_eq!(parse_perms(b"n0\0r1\0".to_vec()).unwrap().len(), 2);
        assert!(parse_perms(b"".to_vec()).is_err());
        assert_eq!(parse_watch_event(b"/a/b\0tok\0"), Ok(("/a/b", "tok")));
        assert!(parse_watch_event(b"/a/b\0tok").is_err());
        assert!(parse_watch_event(b"/a/b\0").is_err());
        assert!(parse_watch_event(b"/a\0t\0x\0").is_err());
    }

    #[test]
    fn directory_parts() {
        let part = parse_directory_part(b"7\0a\0bc\0".to_vec()).unwrap();
        assert_eq!(
            (part.generation.as_str(), part.complete, part.consumed),
            ("7", false, 5)
        );
        assert_eq!(part.names, ["a", "bc"]);
        let last = parse_directory_part(b"7\0d\0\0".to_vec()).unwrap();
        assert!(last.complete);
        assert_eq!(last.names, ["d"]);
        assert!(parse_directory_part(b"7\0\0".to_vec()).unwrap().complete);
        // No progress and no end, a missing NUL, an empty name in the middle.
        for bad in [&b"7\0"[..], b"7", b"7\0a", b"7\0\0a\0"] {
            assert!(parse_directory_part(bad.to_vec()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn directory_parts_follow_the_offset_and_restart_on_a_new_generation() {
        let part = |bytes: &[u8]| parse_directory_part(bytes.to_vec()).unwrap();
        let mut listing = DirectoryParts::new("/d");
        assert_eq!(listing.next().unwrap().payload(), b"/d\x000\0");
        assert_eq!(listing.add(part(b"7\0a\0bc\0")).unwrap(), None);
        assert_eq!(listing.next().unwrap().payload(), b"/d\x005\0");
        // The node changed: start again from offset 0.
        assert_eq!(listing.add(part(b"8\0d\0\0")).unwrap(), None);
        assert_eq!(listing.next().unwrap().payload(), b"/d\x000\0");
        assert_eq!(listing.add(part(b"8\0a\0\0")).unwrap().unwrap(), ["a"]);
        // A node that changes between every two parts gives up with EAGAIN.
        let mut listing = DirectoryParts::new("/d");
        let mut attempts = 0;
        let error = (0..)
            .find_map(|generation| {
                let reply = alloc::format!("{generation}\0a\0");
                attempts += generation % 2;
                listing.add(part(reply.as_bytes())).err()
            })
            .unwrap();
        assert!(matches!(error, Error::Xen(Errno::EAGAIN)));
        assert_eq!(attempts, DIRECTORY_ATTEMPTS);
    }
}
