//! Event storage behind a small trait. The store is in [`segment_store`]: segment bodies in day
//! files, their index in redb (new data directories) or sled (older ones; [`index`]).

mod index;
mod segfile;
mod segment;
pub mod segment_store;
mod seqset;
pub(crate) mod zblock;

use palisade_wire::batch::Batch;
use palisade_wire::{EventKind, Severity, Timestamp};
use serde::{Deserialize, Serialize};

pub use index::{migrate_to_redb as migrate_index_to_redb, MigratedIndex};
pub use segment_store::{SegmentStore, WriteTimings};

/// Makes a rename or create in `dir` durable (fsync of the directory itself). Callers map the
/// error to their own.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Store errors. All of them mean the operation did not complete; none leaves partial data
/// that would be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("store {context}: {source}")]
    Sled {
        /// What was being done.
        context: String,
        /// sled's error.
        source: sled::Error,
    },
    /// redb (the engine of the incident database and the event index in new data
    /// directories) failed; `context` names which database, its file and what was being done.
    #[error("{context}: {source}")]
    Redb {
        /// What was being done.
        context: String,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// A directory holds databases of both engines: which one is current cannot be told.
    #[error("{what} {dir} holds both a sled database and {file}; move the one not in use away")]
    TwoEngines {
        /// Which database ("incident database", "event store").
        what: &'static str,
        /// The directory.
        dir: std::path::PathBuf,
        /// redb's file in it.
        file: &'static str,
    },
    /// A database operation refused, with why (a migration with nothing to do, say).
    #[error("{what} {path}: {reason}")]
    Refused {
        /// Which database ("incident database", "event store").
        what: &'static str,
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A segment file could not be written or read.
    #[error("segment file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The store's disk has less free space than the configured reserve: nothing was written.
    #[error("store disk full: {dir} has {free} bytes free, below ingest.min_free_bytes ({min_free}); batches are refused until space returns")]
    DiskFull {
        /// The store directory.
        dir: std::path::PathBuf,
        /// Bytes available there.
        free: u64,
        /// The configured reserve.
        min_free: u64,
    },
    /// Stored bytes that do not decode.
    #[error("corrupt store record in {tree}: {reason}")]
    Corrupt {
        /// Which tree.
        tree: String,
        /// Why.
        reason: String,
    },
}

/// What happened to one batch in a write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// Events newly stored.
    pub accepted: u64,
    /// Events already stored (same agent and sequence), dropped.
    pub duplicates: u64,
    /// The batch's last sequence (what the agent may now delete up to).
    pub last_sequence: u64,
    /// The highest sequence of this agent durably in the store once this batch is committed
    /// (`AgentRecord::last_sequence` after the commit).
    #[serde(default)]
    pub stored_through: u64,
    /// The highest sequence of this agent the store held before this batch. An agent that had
    /// events acknowledged beyond it knows the collector lost them (store restored from a
    /// backup) and replays what it retained; `stored_through` alone cannot tell, since this
    /// very batch raises it past the lost range.
    #[serde(default)]
    pub stored_before: u64,
}

/// What the collector knows about one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent id (certificate CN).
    pub id: String,
    /// Host name from its latest heartbeat.
    #[serde(default)]
    pub host: Option<String>,
    /// First batch received (collector time).
    pub first_seen: Timestamp,
    /// Latest batch received (collector time).
    pub last_seen: Timestamp,
    /// Timestamp of the latest heartbeat event, if any.
    #[serde(default)]
    pub last_heartbeat: Option<Timestamp>,
    /// Highest sequence stored.
    pub last_sequence: u64,
    /// Events stored from this agent.
    pub events: u64,
    /// Duplicates dropped from this agent.
    pub duplicates: u64,
    /// Events the agent reported dropped from its spool (sum of `gap` events).
    #[serde(default)]
    pub dropped: u64,
    /// Agent software version from its latest heartbeat.
    #[serde(default)]
    pub version: Option<String>,
    /// Serial of the client certificate it last connected with (lowercase hex).
    #[serde(default)]
    pub cert_serial: Option<String>,
    /// When that certificate expires.
    #[serde(default)]
    pub cert_not_after: Option<Timestamp>,
}

/// Store-wide figures for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Events stored (all days still retained).
    pub events: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Days held, oldest first (`YYYY-MM-DD`).
    pub days: Vec<String>,
}

/// A listing request.
#[derive(Clone, Debug)]
pub struct Query {
    /// Inclusive lower bound on `@timestamp`.
    pub since: Timestamp,
    /// Exclusive upper bound on `@timestamp`.
    pub until: Timestamp,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only at least this severity.
    pub min_severity: Option<Severity>,
    /// At most this many events.
    pub limit: usize,
    /// Newest first (the default) or oldest first.
    pub newest_first: bool,
    /// Only events strictly after this one in the listing's order (paging: the key of the
    /// previous page's last event).
    pub after: Option<crate::query::EventKey>,
    /// Only events this filter expression matches; applied before `limit` counts.
    pub filter: Option<std::sync::Arc<crate::query::Filter>>,
}

impl Query {
    /// Every event stored, oldest first, up to `limit`: the base that narrower queries
    /// override field by field (`Query { kind, ..Query::everything(n) }`).
    pub fn everything(limit: usize) -> Query {
        Query {
            since: Timestamp(0),
            until: Timestamp(i64::MAX),
            agent: None,
            kind: None,
            min_severity: None,
            limit,
            newest_first: false,
            after: None,
            filter: None,
        }
    }
}

/// An event store.
pub trait EventStore: Send + Sync {
    /// Stores the batches, dropping events already stored, and returns only once everything is
    /// durable on disk. One outcome per batch, in order.
    fn write(&self, batches: &[&Batch]) -> Result<Vec<BatchOutcome>, StoreError>;

    /// Calls `sink` with each matching event's stored JSON, in time order, until it returns
    /// false or `limit` is reached. Returns how many were passed.
    fn query(&self, q: &Query, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<usize, StoreError>;

    /// Calls `sink` with every matching event's stored JSON in no particular order, ignoring
    /// `limit` and `newest_first`, until it returns false; returns how many were
    /// passed. For tallies over a period (`situation`), where ordering would cost a heap of
    /// copies.
    fn scan(&self, q: &Query, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<usize, StoreError>;

    /// Every agent ever seen.
    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Records the client certificate an agent connected with (for `agents`: expiry warnings).
    fn note_certificate(
        &self,
        agent: &str,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<(), StoreError>;

    /// Store-wide figures.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Drops the days older than `days` before `now`; returns the days dropped.
    fn apply_retention(&self, now: Timestamp, days: u32) -> Result<Vec<String>, StoreError>;
}
