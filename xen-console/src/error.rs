//! The console ring's error.

use xen_shared::RingError;

/// A failed console ring operation; `E` is the channel's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The backend left impossible ring indices.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Notifying or waiting on the event channel failed.
    #[error("console event channel: {0}")]
    Channel(#[source] E),
    /// The channel's deadline passed with nothing moved.
    #[error("the console backend did not respond before the deadline")]
    TimedOut,
    /// A flush's deadline passed while the backend still had bytes to consume.
    #[error("the console backend stopped consuming: {unconsumed} bytes still in the ring")]
    Stalled {
        /// Bytes written and not consumed when the deadline passed.
        unconsumed: usize,
    },
}

impl<E: core::error::Error + 'static> embedded_io::Error for Error<E> {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            Self::Ring(_) => embedded_io::ErrorKind::InvalidData,
            Self::Channel(_) => embedded_io::ErrorKind::Other,
            Self::TimedOut | Self::Stalled { .. } => embedded_io::ErrorKind::TimedOut,
        }
    }
}

#[cfg(feature = "std")]
impl<E: core::error::Error + Send + Sync + 'static> From<Error<E>> for std::io::Error {
    fn from(e: Error<E>) -> Self {
        let kind = embedded_io::Error::kind(&e).into();
        std::io::Error::new(kind, e)
    }
}
