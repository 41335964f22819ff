//! The replicator's errors. Each says what failed and on what, and [`Error::retryable`] says
//! whether running the same command again can help (a peer that was down, a prune that overlapped)
//! or an operator must act first (a corrupt pack, a wrong key, an unsafe manifest).

use std::io;
use std::path::{Path, PathBuf};

/// Everything the replicator's library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "create", "fsync", …).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The repository is missing, of another version, or its configuration is unusable.
    #[error("repository {}: {reason}", path.display())]
    Repo {
        /// The repository.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Stored bytes do not match what they claim to be.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// The pack, index, blob or snapshot.
        what: String,
        /// What does not match.
        reason: String,
    },
    /// The key file is missing, malformed, or not the repository's key.
    #[error("key: {0}")]
    Key(String),
    /// A manifest names a path that would land outside the restore target.
    #[error("unsafe path in snapshot {snapshot} at {path:?}: {reason}")]
    UnsafePath {
        /// The snapshot id.
        snapshot: String,
        /// The offending entry, as far as it was walked.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// No snapshot matches the selector.
    #[error("no snapshot matches {0:?}")]
    NoSnapshot(String),
    /// A chunk referenced by a snapshot is not in the repository.
    #[error("blob {id} referenced by {by} is not in the repository")]
    MissingBlob {
        /// The blob id.
        id: String,
        /// What references it.
        by: String,
    },
    /// Talking to a peer replicator failed.
    #[error("peer {peer}: {reason}")]
    Peer {
        /// The peer URL.
        peer: String,
        /// Why.
        reason: String,
        /// Whether a retry later can help.
        retryable: bool,
    },
    /// Invalid arguments or configuration.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Whether running the same operation again later can succeed without an operator's help.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::StorageFull
            ),
            Error::Peer { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// An I/O error on `path`.
    pub fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Stored bytes that do not match.
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// The replicator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
