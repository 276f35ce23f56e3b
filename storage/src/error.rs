//! The storage error type.

/// A storage failure. None of these is the client's fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data directory is held by another process (a running server).
    #[error("the data directory is in use by another process")]
    Locked,
    /// fjall failed; after a failed write the store refuses further writes.
    #[error("storage engine failure")]
    Engine(#[source] fjall::Error),
    /// A record could not be encoded or decoded.
    #[error("record {kind} could not be {action}")]
    Codec {
        /// The record kind.
        kind: &'static str,
        /// "encoded" or "decoded".
        action: &'static str,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// A record carries a schema version this build does not know.
    #[error("record {kind} has unknown schema version {version}")]
    UnknownVersion {
        /// The record kind.
        kind: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// An earlier write failed; the store refuses writes until restarted.
    #[error("the store is poisoned by an earlier write failure")]
    Poisoned,
    /// The writer has shut down.
    #[error("the store is closed")]
    Closed,
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Locked => Error::Locked,
            fjall::Error::Poisoned => Error::Poisoned,
            other => Error::Engine(other),
        }
    }
}

/// The crate's result alias.
pub type Result<T> = std::result::Result<T, Error>;
