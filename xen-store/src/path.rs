//! Path validation, with the rules xenstored applies, before anything is sent.

use crate::wire::{ABS_PATH_MAX, REL_PATH_MAX};

/// Why a path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("empty path")]
    Empty,
    /// Longer than `XENSTORE_ABS_PATH_MAX` (absolute) or `XENSTORE_REL_PATH_MAX` (relative).
    #[error("path of {len} bytes exceeds the {max} byte limit")]
    TooLong {
        /// The path's length.
        len: usize,
        /// The limit for its kind.
        max: usize,
    },
    /// A byte outside `[A-Za-z0-9/_@-]`.
    #[error("byte {byte:#04x} at {at} is not allowed in a path")]
    InvalidByte {
        /// Its offset.
        at: usize,
        /// The byte.
        byte: u8,
    },
    /// An empty component (`//`), or a trailing `/` on anything but the root.
    #[error("empty path component")]
    EmptyComponent,
    /// A special watch path (`@releaseDomain`) where a node is required.
    #[error("special watch paths are only for watches")]
    Special,
}

/// Checks a node path: absolute (`/local/domain/0/name`) or relative to the caller's home
/// (`data/x`, for domains).
///
/// # Errors
///
/// [`PathError`]: empty, too long, a character xenstore refuses, an empty component, or a
/// special (`@`) path.
pub fn check(path: &str) -> Result<(), PathError> {
    if path.starts_with('@') {
        return Err(PathError::Special);
    }
    check_node(path)
}

/// Checks a watch path: a node path, or a special one (`@introduceDomain`, `@releaseDomain`).
///
/// # Errors
///
/// [`PathError`] as for [`check`], but for a well-formed special path.
pub fn check_watch(path: &str) -> Result<(), PathError> {
    if let Some(special) = path.strip_prefix('@') {
        if special.is_empty() {
            return Err(PathError::Empty);
        }
        return check_bytes(path, ABS_PATH_MAX);
    }
    check_node(path)
}

fn check_node(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    let max = if path.starts_with('/') {
        ABS_PATH_MAX
    } else {
        REL_PATH_MAX
    };
    check_bytes(path, max)?;
    if path == "/" {
        return Ok(());
    }
    let body = path.strip_prefix('/').unwrap_or(path);
    if body.split('/').any(str::is_empty) {
        return Err(PathError::EmptyComponent);
    }
    Ok(())
}

fn check_bytes(path: &str, max: usize) -> Result<(), PathError> {
    if path.len() > max {
        return Err(PathError::TooLong {
            len: path.len(),
            max,
        });
    }
    match path
        .bytes()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_alphanumeric() || b"/_@-".contains(b)))
    {
        Some((at, byte)) => Err(PathError::InvalidByte { at, byte }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn accepts_what_xenstored_accepts() {
        for ok in [
            "/",
            "/local/domain/0/name",
            "data/x-y_z",
            "device/vif/0",
            "/a@b",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_watch("@releaseDomain"), Ok(()));
        assert_eq!(check_watch("/local"), Ok(()));
    }

    #[test]
    fn refuses_the_rest() {
        assert_eq!(check(""), Err(PathError::Empty));
        assert_eq!(check("/a//b"), Err(PathError::EmptyComponent));
        assert_eq!(check("/a/"), Err(PathError::EmptyComponent));
        assert_eq!(check("//"), Err(PathError::EmptyComponent));
        assert_eq!(
            check("/a b"),
            Err(PathError::InvalidByte { at: 2, byte: b' ' })
        );
        assert_eq!(
            check("/a\0"),
            Err(PathError::InvalidByte { at: 2, byte: 0 })
        );
        assert_eq!(check("@releaseDomain"), Err(PathError::Special));
        assert_eq!(check_watch("@"), Err(PathError::Empty));
    }

    #[test]
    fn limits_depend_on_the_kind_of_path() {
        let mut abs = String::from("/");
        abs.extend(core::iter::repeat_n('a', ABS_PATH_MAX - 1));
        assert_eq!(check(&abs), Ok(()));
        abs.push('a');
        assert_eq!(
            check(&abs),
            Err(PathError::TooLong {
                len: ABS_PATH_MAX + 1,
                max: ABS_PATH_MAX
            })
        );
        let rel: String = core::iter::repeat_n('a', REL_PATH_MAX + 1).collect();
        assert_eq!(
            check(&rel),
            Err(PathError::TooLong {
                len: REL_PATH_MAX + 1,
                max: REL_PATH_MAX
            })
        );
    }
}
