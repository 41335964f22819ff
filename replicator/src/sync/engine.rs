//! A site's view of its directory and the rules that merge a peer's versions into it.
//!
//! Everything that reads or changes the tree together with the state happens under one lock,
//! and before an incoming version is judged the path is re-read from disk, so a local write the
//! watcher has not reported yet becomes a version of its own first (and then conflicts instead
//! of being overwritten).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::{Condvar, Mutex, MutexGuard};

use palisade_wire::event::{Event, Severity};
use serde::Serialize;

use super::protocol::{ChunkRef, Index, Meta, Offer, OfferReply, Outcome, Update};
use super::state::{Entry, State};
use super::tree;
use super::vv::{Order, VersionVector};
use crate::chunk::{Chunker, ChunkerParams};
use crate::error::Result;

/// Files larger than this are not synced (content is held in memory while shipped).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// How far before the last read an mtime must be for a scan to trust it (see `Entry::seen_ns`).
const RACY_NS: i64 = 1_000_000_000;

/// How long a file the watcher saw opened for writing (and not closed) is left alone before it
/// is read anyway (a file kept open, e.g. a log, still syncs).
const WRITE_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// How old an emptied file's mtime must be before it is recorded (see `observe_file_locked`).
const TRUNCATED_SETTLE_NS: i64 = 1_000_000_000;

/// An mtime further than this ahead of the clock is a clock or `touch` artefact, not a write
/// in progress (a write sets the mtime to now).
const FUTURE_NS: i64 = 1_000_000_000;

/// Lag samples kept for the percentiles.
const LAG_SAMPLES: usize = 4096;

/// Fixed chunking for sync: both sites must cut the same content the same way.
const CHUNKING: ChunkerParams = ChunkerParams {
    min_bytes: 16 << 10,
    avg_bytes: 64 << 10,
    max_bytes: 256 << 10,
    seed: 0,
};

/// Why a peer's request was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Malformed or unsafe (400): retrying the same request cannot help.
    Bad(String),
    /// The local copy changed while the update was on its way (409): offer again.
    Retry(String),
    /// A local failure (500), e.g. a full disk.
    Local(String),
}

impl From<crate::error::Error> for Refusal {
    fn from(e: crate::error::Error) -> Self {
        Refusal::Local(e.to_string())
    }
}

/// Counters and lag samples, for the status file and the log.
#[derive(Debug, Default)]
struct Stats {
    applied: u64,
    conflicts: u64,
    sent: u64,
    bytes_sent: u64,
    bytes_content: u64,
    last_applied_ns: Option<i64>,
    lag_ms: VecDeque<f64>,
}

/// What `STATE/status.json` says.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Status {
    /// This site.
    pub site: String,
    /// Peer versions applied here (including conflict resolutions).
    pub applied: u64,
    /// Conflicts detected here.
    pub conflicts: u64,
    /// Versions this site shipped and the peer took.
    pub sent: u64,
    /// Bytes of content shipped (after delta and zstd).
    pub bytes_sent: u64,
    /// Bytes of content those versions had.
    pub bytes_content: u64,
    /// Median replication lag of applied versions, ms (change at the origin → applied here).
    pub lag_p50_ms: Option<f64>,
    /// 99th percentile lag, ms.
    pub lag_p99_ms: Option<f64>,
    /// Lag samples behind the percentiles.
    pub lag_samples: usize,
    /// When the last peer version was applied, RFC 3339.
    pub last_applied: Option<String>,
    /// Paths waiting to be shipped.
    pub pending: usize,
    /// Whether the last exchange with the peer worked.
    pub peer_reachable: bool,
    /// Paths known (tombstones included).
    pub paths: usize,
    /// Batches of watcher events re-read (stays put while nobody writes).
    pub watch_batches: u64,
}

/// One path's version ready to offer: the offer, the content, and each chunk's byte range.
#[derive(Debug)]
pub struct Outgoing {
    /// What is offered.
    pub offer: Offer,
    /// The whole content (empty for a delete).
    pub bytes: Vec<u8>,
    /// `offer.chunks[i]` is `bytes[ranges[i].0..ranges[i].1]`.
    pub ranges: Vec<(usize, usize)>,
}

/// The paths waiting to be shipped: a set (so it never outgrows the tree), taken in the order
/// they were first queued (so under a steady load no path waits behind later ones).
#[derive(Debug, Default)]
struct Pending {
    order: VecDeque<String>,
    queued: HashSet<String>,
}

impl Pending {
    fn push(&mut self, path: &str) {
        if !self.queued.contains(path) {
            self.queued.insert(path.to_string());
            self.order.push_back(path.to_string());
        }
    }

    fn pop(&mut self) -> Option<String> {
        let p = self.order.pop_front()?;
        self.queued.remove(&p);
        Some(p)
    }
}

/// How far the state on disk has caught up (see [`Engine::wait_saved`]).
#[derive(Debug, Default)]
struct Durable {
    /// The last generation written to `STATE/state.json`.
    saved: u64,
    /// Whether some thread is writing it now (the others wait for that save, or the next).
    saving: bool,
}

/// A site.
#[derive(Debug)]
pub struct Engine {
    root: PathBuf,
    state_dir: PathBuf,
    site: String,
    state: Mutex<State>,
    /// Group commit: which generation of the state is on disk, and whether a save is running.
    durable: Mutex<Durable>,
    /// Signalled after every save attempt.
    durable_cv: Condvar,
    pending: Mutex<Pending>,
    /// Wakes the shipper when something is queued.
    pub wake: tokio::sync::Notify,
    stats: Mutex<Stats>,
    peer_reachable: std::sync::atomic::AtomicBool,
    watch_batches: std::sync::atomic::AtomicU64,
    reports: Option<SyncSender<Event>>,
    /// How old (ns) a file's mtime must be before a content change is recorded (0: at once).
    settle_ns: i64,
    /// Paths whose change was too fresh to record; the watcher looks at them again.
    unsettled: Mutex<BTreeSet<String>>,
    /// Wakes the watcher's debouncer when a path is left unsettled.
    pub unsettled_wake: tokio::sync::Notify,
    /// Files a writer has open, per the watcher (created or modified, not closed yet), and
    /// since when.
    writing: Mutex<HashMap<String, std::time::Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves data that is still consistent enough to save:
    // every mutation is a whole-entry replace.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ns() -> i64 {
    palisade_wire::event::Timestamp::now().nanos()
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Content-defined chunks of `bytes`: (blake3 hex, start, end).
pub fn chunks(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let r = Chunker::new(CHUNKING).for_each_chunk::<_, ()>(bytes, |c| {
        out.push((tree::content_hash(c), at, at + c.len()));
        at += c.len();
        Ok(())
    });
    if r.is_err() || at != bytes.len() {
        // Reading a slice cannot fail; one chunk is still a correct (if delta-less) answer.
        return vec![(tree::content_hash(bytes), 0, bytes.len())];
    }
    out
}

fn meta_of(path: &str, e: &Entry) -> Meta {
    Meta {
        path: path.to_string(),
        vv: e.vv.clone(),
        hash: e.hash.clone(),
        size: e.size,
        mtime_ns: e.mtime_ns,
        deleted: e.deleted(),
        origin_site: e.origin.clone(),
        changed_at_ns: e.changed_ns,
        mode: e.mode,
    }
}

fn entry_of(m: &Meta) -> Entry {
    Entry {
        vv: m.vv.clone(),
        hash: m.hash.clone(),
        size: m.size,
        mtime_ns: m.mtime_ns,
        origin: m.origin_site.clone(),
        changed_ns: m.changed_at_ns,
        seen_ns: now_ns(),
        mode: m.mode,
    }
}

/// The version vector of a conflict copy of `loser`: the loser's site and its change number
/// there, which both sites derive alike from the same losing version.
fn conflict_copy_vv(loser: &Entry) -> VersionVector {
    match loser.vv.get(&loser.origin) {
        0 => loser.vv.clone(),
        n => VersionVector([(loser.origin.clone(), n)].into_iter().collect()),
    }
}

/// What reading one path found.
#[derive(Debug)]
struct Read {
    /// A new local version was recorded (or a tombstone).
    changed: bool,
    /// The content, when the file was read and matches the state.
    bytes: Option<Vec<u8>>,
    /// The file changed too recently to be recorded (see [`Engine::with_settle`]).
    unsettled: bool,
}

impl Read {
    const NOTHING: Read = Read {
        changed: false,
        bytes: None,
        unsettled: false,
    };
}

/// A conflict copy placed by [`Engine::place_copy`].
#[derive(Debug)]
struct PlacedCopy {
    /// Its path.
    name: String,
    /// Whether this call wrote the file (to undo when the resolution is abandoned).
    written: bool,
    /// The state entry to record, when it changed.
    entry: Option<Entry>,
}

/// Checks an incoming version before anything else looks at it.
pub fn check_meta(m: &Meta) -> std::result::Result<(), String> {
    tree::validate_path(&m.path)?;
    if m.deleted != m.hash.is_none() {
        return Err("`deleted` and `hash` disagree".into());
    }
    if let Some(h) = &m.hash {
        if crate::chunk::parse_hex32(h).is_none() {
            return Err(format!("hash {h:?} is not 64 hex digits"));
        }
    }
    if m.size > MAX_FILE_BYTES {
        return Err(format!(
            "{} bytes is over the {MAX_FILE_BYTES}-byte limit",
            m.size
        ));
    }
    if m.vv.0.is_empty() {
        return Err("empty version vector".into());
    }
    if m.mode & !tree::MODE_BITS != 0 {
        return Err(format!(
            "mode {:o} has bits beyond {:o} (setuid, setgid and sticky are never synced)",
            m.mode,
            tree::MODE_BITS
        ));
    }
    Ok(())
}

impl Engine {
    /// Opens the state of `site` for the tree at `root`.
    pub fn open(
        root: PathBuf,
        state_dir: PathBuf,
        site: String,
        reports: Option<SyncSender<Event>>,
    ) -> Result<Engine> {
        let state = State::load(&state_dir, &site)?;
        Ok(Engine {
            root,
            state_dir,
            site,
            state: Mutex::new(state),
            durable: Mutex::new(Durable::default()),
            durable_cv: Condvar::new(),
            pending: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            stats: Mutex::new(Stats::default()),
            peer_reachable: std::sync::atomic::AtomicBool::new(false),
            watch_batches: std::sync::atomic::AtomicU64::new(0),
            reports,
            settle_ns: 0,
            unsettled: Mutex::new(BTreeSet::new()),
            unsettled_wake: tokio::sync::Notify::new(),
            writing: Mutex::new(HashMap::new()),
        })
    }

    /// The watcher saw `path` created or modified: a writer may still have it open.
    pub fn note_write_start(&self, path: String) {
        let mut w = lock(&self.writing);
        if w.len() >= 4096 {
            w.retain(|_, t| t.elapsed() < WRITE_HOLD);
        }
        w.insert(path, std::time::Instant::now());
    }

    /// The watcher saw `path` closed after writing.
    pub fn note_write_end(&self, path: &str) {
        lock(&self.writing).remove(path);
    }

    /// Whether a writer seems to have `path` open (for at most [`WRITE_HOLD`]).
    fn being_written(&self, path: &str) -> bool {
        let mut w = lock(&self.writing);
        match w.get(path) {
            Some(t) if t.elapsed() < WRITE_HOLD => true,
            Some(_) => {
                w.remove(path);
                false
            }
            None => false,
        }
    }

    /// Records a content change only once the file's mtime is `settle` old: a file caught in
    /// the middle of a write (truncated, half written) is not a version. Reads that find a
    /// fresher change leave it to the watcher, which looks again (see [`Engine::take_unsettled`]);
    /// a peer's version for that path meanwhile is answered "offer again" (409).
    pub fn with_settle(mut self, settle: std::time::Duration) -> Engine {
        self.settle_ns = i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX);
        self
    }

    /// The paths left unsettled since the last call.
    pub fn take_unsettled(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.unsettled))
            .into_iter()
            .collect()
    }

    /// The tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// This site.
    pub fn site(&self) -> &str {
        &self.site
    }

    fn skip(&self) -> Option<&Path> {
        self.state_dir
            .starts_with(&self.root)
            .then_some(self.state_dir.as_path())
    }

    // ---- group commit of the state ------------------------------------------------------

    /// Waits until generation `generation` of the state (see [`State::touch`]) is on disk.
    /// When no save is running this thread writes the state itself, everything changed so far
    /// in one go; otherwise it waits for that save (or the next): all the threads waiting
    /// meanwhile share one write (group commit). Must not be called with the state locked.
    pub fn wait_saved(&self, generation: u64) -> Result<()> {
        let mut d = lock(&self.durable);
        loop {
            if d.saved >= generation {
                return Ok(());
            }
            if d.saving {
                d = self.durable_cv.wait(d).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            d.saving = true;
            drop(d);
            let result = self.save_now();
            d = lock(&self.durable);
            d.saving = false;
            if let Ok(g) = result {
                d.saved = d.saved.max(g);
            }
            self.durable_cv.notify_all();
            result?;
        }
    }

    /// Writes the state as it is now; returns the generation written. The copy is taken under
    /// the state lock, the encoding and the write (temp + fsync + rename + fsync dir) are not.
    fn save_now(&self) -> Result<u64> {
        let (copy, generation) = {
            let st = lock(&self.state);
            (st.clone(), st.generation)
        };
        copy.save(&self.state_dir)?;
        Ok(generation)
    }

    /// Saves every change made so far (the periodic saver, and at exit).
    pub fn flush(&self) -> Result<()> {
        let generation = lock(&self.state).generation;
        self.wait_saved(generation)
    }

    /// Whether the state has changes not on disk yet.
    pub fn dirty(&self) -> bool {
        let generation = lock(&self.state).generation;
        generation > lock(&self.durable).saved
    }

    // ---- the shipping queue -------------------------------------------------------------

    /// Queues `path` for the peer. The queue is a set of paths, so it never outgrows the tree:
    /// what ships is the path's version at the moment it is sent.
    pub fn enqueue(&self, path: &str) {
        lock(&self.pending).push(path);
        self.wake.notify_one();
    }

    /// Takes the next queued path.
    pub fn next_pending(&self) -> Option<String> {
        lock(&self.pending).pop()
    }

    /// Paths waiting.
    pub fn pending_len(&self) -> usize {
        lock(&self.pending).order.len()
    }

    /// Records whether the peer answered.
    pub fn set_peer_reachable(&self, up: bool) {
        self.peer_reachable
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }

    // ---- local changes ------------------------------------------------------------------

    /// Re-reads `prefix` (a file, a directory, or `""` for the whole tree) and turns every
    /// difference from the state into a new local version: created or edited files get this
    /// site's counter bumped, vanished ones a tombstone. Returns how many paths changed.
    pub fn observe(&self, prefix: &str) -> Result<usize> {
        let mut st = lock(&self.state);
        let changed = self.observe_locked(&mut st, prefix);
        if changed > 0 {
            // Not waited for: nothing was promised to anyone yet (a crash before the save is
            // caught by the start-up scan); `snapshot` waits before the peer hears of it.
            st.touch();
        }
        Ok(changed)
    }

    /// [`Engine::observe`] for several paths, saving the state once.
    pub fn observe_all(&self, prefixes: &[String]) -> Result<usize> {
        self.watch_batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut st = lock(&self.state);
        let changed: usize = prefixes
            .iter()
            .map(|p| self.observe_locked(&mut st, p))
            .sum();
        if changed > 0 {
            st.touch();
        }
        Ok(changed)
    }

    fn observe_locked(&self, st: &mut State, prefix: &str) -> usize {
        let files = self.walk(prefix);
        // A whole-tree scan (start-up, overflow, periodic) trusts an unchanged size and mtime
        // like rsync and restic do; a watcher event names what changed, so that is re-read.
        let trust_stat = prefix.is_empty();
        let mut changed = 0;
        for f in &files {
            if self.observe_file_locked(st, f, trust_stat).changed {
                changed += 1;
            }
        }
        let on_disk: HashSet<&String> = files.iter().collect();
        let gone: Vec<String> = st
            .entries
            .iter()
            .filter(|(p, e)| tree::under(p, prefix) && !e.deleted() && !on_disk.contains(p))
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            // A file the walk could not see may still be there (a race with a rename):
            // only a path that is really gone becomes a tombstone.
            if std::fs::symlink_metadata(tree::full(&self.root, &p)).is_err() {
                self.tombstone_locked(st, &p);
                changed += 1;
            }
        }
        changed
    }

    fn walk(&self, prefix: &str) -> Vec<String> {
        tree::walk(&self.root, prefix, self.skip())
    }

    fn tombstone_locked(&self, st: &mut State, path: &str) {
        let Some(e) = st.entries.get_mut(path) else {
            return;
        };
        if e.deleted() {
            return;
        }
        e.vv.bump(&self.site);
        e.hash = None;
        e.size = 0;
        e.origin = self.site.clone();
        e.changed_ns = now_ns();
        tracing::debug!(path, "local delete");
        self.enqueue(path);
    }

    /// Reads one file; a content different from the state is a new local version (once it
    /// has settled).
    fn observe_file_locked(&self, st: &mut State, path: &str, trust_stat: bool) -> Read {
        // Before anything is read: a thread descheduled between the read and the settle check
        // must not make a just-truncated file look old.
        let read_at = now_ns();
        let full = tree::full(&self.root, path);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) if m.is_file() => m,
            _ => return Read::NOTHING,
        };
        if trust_stat {
            if let Some(e) = st.entries.get(path) {
                let mtime = mtime_ns(&meta);
                if !e.deleted()
                    && e.size == meta.len()
                    && e.mtime_ns == mtime
                    && e.mode == tree::mode_of(&meta)
                    && mtime.saturating_add(RACY_NS) < e.seen_ns
                {
                    return Read::NOTHING;
                }
            }
        }
        if meta.len() > MAX_FILE_BYTES {
            tracing::warn!(
                path,
                bytes = meta.len(),
                "file over the sync size limit; not synced"
            );
            return Read::NOTHING;
        }
        let bytes = match std::fs::read(&full) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path, error = %e, "cannot read; will retry on the next change");
                return Read::NOTHING;
            }
        };
        // Stat again: a write between the first stat and the read (e.g. a truncate) leaves
        // content that the first stat's mtime does not describe, so the settle check below
        // must look at the file as it is after the read.
        let after = std::fs::symlink_metadata(&full)
            .ok()
            .filter(|m| m.is_file());
        let torn = after.as_ref().is_none_or(|a| {
            a.len() != bytes.len() as u64 || a.len() != meta.len() || mtime_ns(a) != mtime_ns(&meta)
        });
        let hash = tree::content_hash(&bytes);
        let mtime = after.as_ref().map_or_else(|| mtime_ns(&meta), mtime_ns);
        let mode = tree::mode_of(after.as_ref().unwrap_or(&meta));
        if let Some(e) = st.entries.get_mut(path) {
            if e.hash.as_deref() == Some(hash.as_str()) && (e.mode == mode || e.mode == 0) {
                // Same content and mode, new mtime (a touch, or a write of the same bytes):
                // not a version, but remember the mtime so the next scan need not re-read it.
                // (A state from before modes were synced adopts the file's mode here.)
                e.mtime_ns = mtime;
                e.mode = mode;
                e.seen_ns = now_ns();
                return Read {
                    changed: false,
                    bytes: Some(bytes),
                    unsettled: false,
                };
            }
        }
        let now = now_ns();
        // A file emptied where it had content is how every rewrite in place starts
        // (`O_TRUNC`); the writer may be descheduled before it writes, and the watcher's
        // report of the truncate may be late too, so an empty file waits longer.
        let truncated = bytes.is_empty()
            && st
                .entries
                .get(path)
                .is_some_and(|e| !e.deleted() && e.size > 0);
        let settle_ns = if truncated {
            self.settle_ns.max(TRUNCATED_SETTLE_NS)
        } else {
            self.settle_ns
        };
        if self.settle_ns > 0
            && (torn
                || (mtime > read_at.saturating_sub(settle_ns)
                    && mtime <= read_at.saturating_add(FUTURE_NS))
                || self.being_written(path))
        {
            // Possibly mid-write (e.g. truncated, not written yet): look again once it has
            // settled.
            tracing::debug!(path, "local change not settled yet");
            lock(&self.unsettled).insert(path.to_string());
            self.unsettled_wake.notify_one();
            return Read {
                changed: false,
                bytes: None,
                unsettled: true,
            };
        }
        // Same bytes, other permissions: a chmod, which leaves the mtime alone, so the mtime
        // says nothing about when it happened.
        let mode_only = st
            .entries
            .get(path)
            .is_some_and(|e| e.hash.as_deref() == Some(hash.as_str()));
        let e = st.entries.entry(path.to_string()).or_insert_with(|| Entry {
            vv: Default::default(),
            hash: None,
            size: 0,
            mtime_ns: 0,
            origin: String::new(),
            changed_ns: 0,
            seen_ns: 0,
            mode: 0,
        });
        e.vv.bump(&self.site);
        e.hash = Some(hash);
        e.mode = mode;
        e.size = bytes.len() as u64;
        e.mtime_ns = mtime;
        e.origin = self.site.clone();
        e.seen_ns = now;
        // The file's mtime is when the edit happened (offline edits included); a clock that
        // says the future is not trusted.
        e.changed_ns = if mtime > 0 && mtime <= now && !mode_only {
            mtime
        } else {
            now
        };
        tracing::debug!(path, "local change");
        self.enqueue(path);
        Read {
            changed: true,
            bytes: Some(bytes),
            unsettled: false,
        }
    }

    /// The path's current version as a file on disk (re-read first), with its content and
    /// chunks, ready to offer. `None` when the path is unknown.
    pub fn snapshot(&self, path: &str) -> Result<Option<Outgoing>> {
        let mut st = lock(&self.state);
        let Read {
            changed,
            bytes,
            unsettled,
        } = self.current_locked(&mut st, path);
        if changed {
            st.touch();
        }
        if unsettled {
            // The watcher ships it once it has settled.
            return Ok(None);
        }
        let Some(e) = st.entries.get(path) else {
            return Ok(None);
        };
        let meta = meta_of(path, e);
        let generation = st.generation;
        drop(st);
        // The version offered must be on disk first: a crash after the peer took it and before
        // the save would hand out its counter again, for different content.
        self.wait_saved(generation)?;
        let bytes = if meta.deleted {
            Vec::new()
        } else {
            match bytes {
                Some(b) => b,
                // Unreadable right now: the watcher or the next rescan will bring it back.
                None => return Ok(None),
            }
        };
        let cs = chunks(&bytes);
        let offer = Offer {
            meta,
            chunks: cs
                .iter()
                .map(|(id, a, b)| ChunkRef {
                    id: id.clone(),
                    len: (b - a) as u64,
                })
                .collect(),
        };
        let ranges = cs.into_iter().map(|(_, a, b)| (a, b)).collect();
        Ok(Some(Outgoing {
            offer,
            bytes,
            ranges,
        }))
    }

    /// Brings the state of one path in line with the disk; returns (changed, content).
    fn current_locked(&self, st: &mut State, path: &str) -> Read {
        match std::fs::symlink_metadata(tree::full(&self.root, path)) {
            Ok(m) if m.is_file() => self.observe_file_locked(st, path, false),
            Ok(_) => Read::NOTHING,
            Err(_) => {
                let live = st.entries.get(path).is_some_and(|e| !e.deleted());
                self.tombstone_locked(st, path);
                Read {
                    changed: live,
                    ..Read::NOTHING
                }
            }
        }
    }

    /// [`Engine::current_locked`] for judging a peer's version: a local change still being
    /// written makes the peer offer again rather than be judged against a half-written file.
    fn current_for_peer(
        &self,
        st: &mut State,
        path: &str,
    ) -> std::result::Result<Option<Vec<u8>>, Refusal> {
        let r = self.current_locked(st, path);
        if r.changed {
            st.touch();
        }
        if r.unsettled {
            return Err(Refusal::Retry(format!(
                "{path}: a local change is still being written"
            )));
        }
        Ok(r.bytes)
    }

    // ---- the peer's versions ------------------------------------------------------------

    /// Every path's version vector.
    pub fn index(&self) -> Index {
        let st = lock(&self.state);
        let index = Index {
            site: self.site.clone(),
            entries: st
                .entries
                .iter()
                .map(|(p, e)| (p.clone(), e.vv.clone()))
                .collect(),
        };
        let generation = st.generation;
        drop(st);
        // What the peer is told this site has must survive a crash; on a failed save the
        // index is still the truth in memory, and the peer asks again after 15 s anyway.
        if let Err(e) = self.wait_saved(generation) {
            tracing::warn!(error = %e, "cannot save the sync state");
        }
        index
    }

    /// Queues every path whose version the peer (per its index) has not seen. Returns how many.
    pub fn queue_unseen_by(&self, peer: &Index) -> usize {
        let st = lock(&self.state);
        let mut n = 0;
        for (p, e) in &st.entries {
            let seen = peer.entries.get(p).is_some_and(|v| v.covers(&e.vv));
            if !seen {
                lock(&self.pending).push(p);
                n += 1;
            }
        }
        if n > 0 {
            self.wake.notify_one();
        }
        n
    }

    /// First half of receiving: judge the offered version, and say which chunks are needed.
    pub fn offer(&self, offer: &Offer) -> std::result::Result<OfferReply, Refusal> {
        check_offer(offer).map_err(Refusal::Bad)?;
        let m = &offer.meta;
        let mut st = lock(&self.state);
        let local_bytes = self.current_for_peer(&mut st, &m.path)?;
        if let Some(local) = st.entries.get(&m.path) {
            if local.vv.covers(&m.vv) {
                // "Have" is a promise too: the version that covers it must be on disk.
                let generation = st.generation;
                drop(st);
                self.wait_saved(generation)?;
                return Ok(OfferReply {
                    result: Outcome::Have,
                    missing: vec![],
                });
            }
        }
        let content = if m.deleted {
            None
        } else if offer.chunks.is_empty() {
            Some(Vec::new())
        } else if local_bytes.is_some()
            && st.entries.get(&m.path).and_then(|e| e.hash.as_ref()) == m.hash.as_ref()
        {
            local_bytes.clone()
        } else {
            let have: HashSet<String> = local_bytes
                .as_deref()
                .map(|b| chunks(b).into_iter().map(|(id, _, _)| id).collect())
                .unwrap_or_default();
            let missing: Vec<usize> = offer
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, c)| !have.contains(&c.id))
                .map(|(i, _)| i)
                .collect();
            return Ok(OfferReply {
                result: Outcome::Need,
                missing,
            });
        };
        let result = self.integrate_locked(&mut st, m, content, local_bytes)?;
        let generation = st.touch();
        drop(st);
        self.wait_saved(generation)?;
        Ok(OfferReply {
            result,
            missing: vec![],
        })
    }

    /// Second half: rebuild the content from local chunks and the sent ones, verify, apply.
    pub fn update(&self, up: &Update, compressed: &[u8]) -> std::result::Result<Outcome, Refusal> {
        check_offer(&up.offer).map_err(Refusal::Bad)?;
        let (offer, m) = (&up.offer, &up.offer.meta);
        let mut wanted = 0u64;
        let mut prev: Option<usize> = None;
        for &i in &up.missing {
            let c = offer
                .chunks
                .get(i)
                .ok_or_else(|| Refusal::Bad(format!("missing chunk index {i} out of range")))?;
            if prev.is_some_and(|p| p >= i) {
                return Err(Refusal::Bad("missing chunk indices not ascending".into()));
            }
            prev = Some(i);
            wanted += c.len;
        }
        let sent = if up.missing.is_empty() {
            Vec::new()
        } else {
            zstd::bulk::decompress(compressed, usize::try_from(wanted).unwrap_or(usize::MAX))
                .map_err(|e| Refusal::Bad(format!("chunk data: {e}")))?
        };
        if sent.len() as u64 != wanted {
            return Err(Refusal::Bad(format!(
                "chunk data is {} bytes, the offer says {wanted}",
                sent.len()
            )));
        }
        let mut st = lock(&self.state);
        let local_bytes = self.current_for_peer(&mut st, &m.path)?;
        if st.entries.get(&m.path).is_some_and(|l| l.vv.covers(&m.vv)) {
            let generation = st.generation;
            drop(st);
            self.wait_saved(generation)?;
            return Ok(Outcome::Have);
        }
        let mut local: HashMap<String, (usize, usize)> = HashMap::new();
        if let Some(b) = &local_bytes {
            for (id, a, z) in chunks(b) {
                local.entry(id).or_insert((a, z));
            }
        }
        let missing: HashSet<usize> = up.missing.iter().copied().collect();
        let mut content = Vec::with_capacity(usize::try_from(m.size).unwrap_or(0));
        let mut at = 0usize;
        for (i, c) in offer.chunks.iter().enumerate() {
            let len = usize::try_from(c.len).map_err(|_| Refusal::Bad("chunk too long".into()))?;
            if missing.contains(&i) {
                content.extend_from_slice(&sent[at..at + len]);
                at += len;
            } else {
                match (local.get(&c.id), &local_bytes) {
                    (Some(&(a, z)), Some(b)) if z - a == len => content.extend_from_slice(&b[a..z]),
                    _ => {
                        return Err(Refusal::Retry(format!(
                            "{}: chunk {} is no longer here",
                            m.path, c.id
                        )))
                    }
                }
            }
        }
        let hash = tree::content_hash(&content);
        if Some(&hash) != m.hash.as_ref() || content.len() as u64 != m.size {
            return Err(Refusal::Bad(format!(
                "{}: rebuilt content does not match the offer (blake3 {hash}, {} bytes)",
                m.path,
                content.len()
            )));
        }
        let result = self.integrate_locked(&mut st, m, Some(content), local_bytes)?;
        let generation = st.touch();
        drop(st);
        self.wait_saved(generation)?;
        Ok(result)
    }

    /// Merges a verified incoming version (`content` is `None` for a delete) into the tree and
    /// the state. `local_bytes` is the path's current content, when it is a file.
    ///
    /// The rules:
    /// - incoming newer (its vector covers ours): apply it;
    /// - ours newer or equal: nothing;
    /// - concurrent, same content (or both deleted): merge the vectors;
    /// - concurrent delete and modify: the modification stays (restored where it was deleted),
    ///   vectors merged, conflict raised;
    /// - concurrent edits: the version with the later change time (then the greater site
    ///   name) keeps the name, the other is written as `NAME.conflict-SITE-N-TIME` (its
    ///   site, change number and change time) with the vector SITE → N, vectors merged,
    ///   conflict raised. Both sites pick the same winner, and the same copy name and copy
    ///   vector from the same losing version, so resolving on either side, or on both at
    ///   once, converges without a second conflict.
    fn integrate_locked(
        &self,
        st: &mut State,
        m: &Meta,
        content: Option<Vec<u8>>,
        local_bytes: Option<Vec<u8>>,
    ) -> std::result::Result<Outcome, Refusal> {
        // The file as just read; a write landing after this point must not be overwritten.
        let seen = tree::fingerprint(&self.root, &m.path);
        let moved = || Refusal::Retry(format!("{}: changed locally while applying", m.path));
        let local = st.entries.get(&m.path).cloned();
        let order = local
            .as_ref()
            .map(|l| m.vv.compare(&l.vv))
            .unwrap_or(Order::After);
        match order {
            Order::Equal | Order::Before => Ok(Outcome::Have),
            Order::After => {
                let same = local
                    .as_ref()
                    .is_some_and(|l| l.hash == m.hash && (l.deleted() || local_bytes.is_some()));
                // The same bytes with other permissions (a chmod there): only the mode changes.
                let chmod = same
                    && !m.deleted
                    && m.mode != 0
                    && local.as_ref().is_some_and(|l| l.mode != m.mode);
                if chmod && !tree::set_mode(&self.root, &m.path, m.mode, &seen)? {
                    return Err(moved());
                }
                if !same {
                    match &content {
                        Some(b) => {
                            if !tree::write_file(
                                &self.root,
                                &m.path,
                                b,
                                m.mtime_ns,
                                m.mode,
                                Some(&seen),
                            )? {
                                return Err(moved());
                            }
                        }
                        None => {
                            if !tree::remove_file(&self.root, &m.path, &seen)? {
                                return Err(moved());
                            }
                            tree::remove_empty_parents(&self.root, &m.path);
                        }
                    }
                }
                st.entries.insert(m.path.clone(), entry_of(m));
                self.applied(m, !same || chmod);
                Ok(Outcome::Applied)
            }
            Order::Concurrent => {
                let Some(local) = local else {
                    return Ok(Outcome::Have);
                };
                let merged = local.vv.merged(&m.vv);
                if local.hash == m.hash {
                    // Same content; if only the permissions differ (chmods on both sides), both
                    // sites keep the later change's mode, picked alike on both.
                    let incoming_mode = !m.deleted
                        && m.mode != 0
                        && m.mode != local.mode
                        && (m.changed_at_ns, &m.origin_site) > (local.changed_ns, &local.origin);
                    if incoming_mode && !tree::set_mode(&self.root, &m.path, m.mode, &seen)? {
                        return Err(moved());
                    }
                    let e = st.entries.entry(m.path.clone()).or_insert(local);
                    e.vv = merged;
                    if incoming_mode {
                        e.mode = m.mode;
                        e.origin = m.origin_site.clone();
                        e.changed_ns = m.changed_at_ns;
                    }
                    self.enqueue(&m.path);
                    return Ok(Outcome::Merged);
                }
                match (local.deleted(), content) {
                    (true, Some(bytes)) => {
                        // Deleted here, modified there: the modification comes back.
                        if !tree::write_file(
                            &self.root,
                            &m.path,
                            &bytes,
                            m.mtime_ns,
                            m.mode,
                            Some(&seen),
                        )? {
                            return Err(moved());
                        }
                        let mut e = entry_of(m);
                        e.vv = merged;
                        st.entries.insert(m.path.clone(), e);
                        self.enqueue(&m.path);
                        self.applied(m, true);
                        self.conflict(m, "delete-vs-modify", None, &m.origin_site);
                        Ok(Outcome::Conflict)
                    }
                    (false, None) => {
                        // Deleted there, modified here: ours stays; the peer gets it back.
                        if let Some(e) = st.entries.get_mut(&m.path) {
                            e.vv = merged;
                        }
                        self.enqueue(&m.path);
                        self.conflict(m, "delete-vs-modify", None, &self.site);
                        Ok(Outcome::Conflict)
                    }
                    (true, None) => Ok(Outcome::Merged), // covered by the equal-hash case
                    (false, Some(bytes)) => {
                        let Some(local_content) = local_bytes else {
                            return Err(Refusal::Retry(format!(
                                "{}: local copy unreadable during a conflict",
                                m.path
                            )));
                        };
                        let incoming_wins =
                            (m.changed_at_ns, &m.origin_site) > (local.changed_ns, &local.origin);
                        let (loser_bytes, loser) = if incoming_wins {
                            (local_content, local.clone())
                        } else {
                            (bytes.clone(), entry_of(m))
                        };
                        // The copy first: a failure after it leaves an extra file, never a
                        // lost version.
                        let copy = self.place_copy(st, &m.path, &loser, &loser_bytes)?;
                        if incoming_wins
                            && !tree::write_file(
                                &self.root,
                                &m.path,
                                &bytes,
                                m.mtime_ns,
                                m.mode,
                                Some(&seen),
                            )?
                        {
                            // The local version is still at the name (and newer): no copy needed.
                            if copy.written {
                                let _ = std::fs::remove_file(tree::full(&self.root, &copy.name));
                            }
                            return Err(moved());
                        }
                        let mut winner = if incoming_wins { entry_of(m) } else { local };
                        winner.vv = merged;
                        st.entries.insert(m.path.clone(), winner);
                        if let Some(e) = copy.entry {
                            st.entries.insert(copy.name.clone(), e);
                            self.enqueue(&copy.name);
                        }
                        self.enqueue(&m.path);
                        self.applied(m, incoming_wins);
                        let winner_site = if incoming_wins {
                            m.origin_site.clone()
                        } else {
                            self.site.clone()
                        };
                        self.conflict(m, "concurrent-edit", Some(&copy.name), &winner_site);
                        Ok(Outcome::Conflict)
                    }
                }
            }
        }
    }

    /// Writes the losing version of `path` as its conflict copy (unless the copy is already
    /// there) and says which state entry to record for it.
    ///
    /// The copy is the same version on both sites: its name and its version vector (the
    /// loser's site → the loser's change number there) come from the losing version alone,
    /// so two sites resolving the same conflict at once write the same file with the same
    /// vector, which the other site takes as "have" and never as a conflict of its own (no
    /// `NAME.conflict-….conflict-…`). The entry is recorded under the state lock together with
    /// the write, so the watcher's echo of the write finds nothing new.
    fn place_copy(
        &self,
        st: &State,
        path: &str,
        loser: &Entry,
        bytes: &[u8],
    ) -> std::result::Result<PlacedCopy, Refusal> {
        let hash = tree::content_hash(bytes);
        let copy_vv = conflict_copy_vv(loser);
        let counter = loser.vv.get(&loser.origin);
        let base = tree::conflict_name(path, &loser.origin, counter, loser.changed_ns);
        let mut name = base.clone();
        for n in 2.. {
            match st.entries.get(&name) {
                Some(e) if e.hash.as_deref() == Some(hash.as_str()) => {
                    // Already here (written by this site earlier or shipped by the peer).
                    let mut e = e.clone();
                    if e.vv.covers(&copy_vv) {
                        return Ok(PlacedCopy {
                            name,
                            written: false,
                            entry: None,
                        });
                    }
                    e.vv = e.vv.merged(&copy_vv);
                    return Ok(PlacedCopy {
                        name,
                        written: false,
                        entry: Some(e),
                    });
                }
                // This copy was made before and then edited or deleted: that later version
                // stands (the loser's content is in its history).
                Some(e) if e.vv.covers(&copy_vv) => {
                    return Ok(PlacedCopy {
                        name,
                        written: false,
                        entry: None,
                    })
                }
                // A deleted older file of that name: the copy takes its place.
                Some(e) if e.deleted() => break,
                // Another file of that name: try the next one.
                Some(_) => {}
                // A file nobody has recorded yet is somebody's too.
                None if std::fs::symlink_metadata(tree::full(&self.root, &name)).is_ok() => {}
                None => break,
            }
            name = format!("{base}-{n}");
        }
        tree::write_file(&self.root, &name, bytes, loser.mtime_ns, loser.mode, None)?;
        let mtime = std::fs::symlink_metadata(tree::full(&self.root, &name))
            .map(|m| mtime_ns(&m))
            .unwrap_or(loser.mtime_ns);
        let entry = Entry {
            vv: copy_vv,
            hash: Some(hash),
            size: bytes.len() as u64,
            mtime_ns: mtime,
            origin: loser.origin.clone(),
            changed_ns: loser.changed_ns,
            seen_ns: now_ns(),
            mode: loser.mode,
        };
        Ok(PlacedCopy {
            name,
            written: true,
            entry: Some(entry),
        })
    }

    fn applied(&self, m: &Meta, changed_tree: bool) {
        let now = now_ns();
        let mut s = lock(&self.stats);
        s.applied += 1;
        s.last_applied_ns = Some(now);
        if changed_tree {
            let lag_ms = (now - m.changed_at_ns).max(0) as f64 / 1e6;
            if s.lag_ms.len() == LAG_SAMPLES {
                s.lag_ms.pop_front();
            }
            s.lag_ms.push_back(lag_ms);
        }
        tracing::debug!(path = %m.path, from = %m.origin_site, deleted = m.deleted, "applied peer version");
    }

    fn conflict(&self, m: &Meta, kind: &str, copy: Option<&str>, kept_site: &str) {
        lock(&self.stats).conflicts += 1;
        tracing::warn!(
            path = %m.path,
            kind,
            peer_site = %m.origin_site,
            conflict_copy = copy.unwrap_or("-"),
            kept_at_name = kept_site,
            "sync conflict: both versions kept"
        );
        let Some(tx) = &self.reports else { return };
        let message = match copy {
            Some(c) => format!(
                "sync conflict on {} between sites {} and {}: concurrent edits, the version of {kept_site} keeps the name, the other is {c}",
                m.path, self.site, m.origin_site
            ),
            None => format!(
                "sync conflict on {} between sites {} and {}: a delete concurrent with a modification; the modification (site {kept_site}) was kept",
                m.path, self.site, m.origin_site
            ),
        };
        let event = crate::report::replication_event(
            "sync-conflict",
            Severity::Medium,
            message,
            serde_json::json!({
                "outcome": "conflict", "kind": kind, "path": m.path, "site": self.site,
                "peer_site": m.origin_site, "conflict_copy": copy, "kept_site": kept_site,
            }),
        );
        if tx.try_send(event).is_err() {
            tracing::warn!(path = %m.path, "conflict report queue full; event not sent to the collector");
        }
    }

    /// Counts one version shipped.
    pub fn shipped(&self, bytes_sent: u64, bytes_content: u64) {
        let mut s = lock(&self.stats);
        s.sent += 1;
        s.bytes_sent += bytes_sent;
        s.bytes_content += bytes_content;
    }

    /// The figures for `status.json`.
    pub fn status(&self) -> Status {
        let paths = lock(&self.state).entries.len();
        let s = lock(&self.stats);
        let mut lags: Vec<f64> = s.lag_ms.iter().copied().collect();
        lags.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            if lags.is_empty() {
                return None;
            }
            let i = ((lags.len() - 1) as f64 * p).round() as usize;
            lags.get(i).map(|v| (v * 10.0).round() / 10.0)
        };
        Status {
            site: self.site.clone(),
            applied: s.applied,
            conflicts: s.conflicts,
            sent: s.sent,
            bytes_sent: s.bytes_sent,
            bytes_content: s.bytes_content,
            lag_p50_ms: pct(0.5),
            lag_p99_ms: pct(0.99),
            lag_samples: lags.len(),
            last_applied: s.last_applied_ns.map(|ns| {
                chrono::DateTime::from_timestamp_nanos(ns)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            }),
            pending: self.pending_len(),
            peer_reachable: self
                .peer_reachable
                .load(std::sync::atomic::Ordering::Relaxed),
            paths,
            watch_batches: self
                .watch_batches
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Writes `STATE/status.json` atomically.
    pub fn write_status(&self, status: &Status) -> Result<()> {
        let json = serde_json::to_vec_pretty(status)
            .map_err(|e| crate::error::Error::Usage(format!("status: {e}")))?;
        crate::repo::write_atomic(&self.state_dir, "status.json", &json)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "cannot save the sync state");
        }
    }
}

fn check_offer(o: &Offer) -> std::result::Result<(), String> {
    check_meta(&o.meta)?;
    // Checked: lengths from a peer could wrap around to the size they claim.
    let total = o
        .chunks
        .iter()
        .try_fold(0u64, |sum, c| sum.checked_add(c.len))
        .ok_or("chunk lengths add up to more than 2^64 bytes")?;
    if !o.meta.deleted && total != o.meta.size {
        return Err(format!(
            "chunks add up to {total} bytes, the version says {}",
            o.meta.size
        ));
    }
    if o.meta.deleted && !o.chunks.is_empty() {
        return Err("a delete has no chunks".into());
    }
    if o.chunks
        .iter()
        .any(|c| crate::chunk::parse_hex32(&c.id).is_none())
    {
        return Err("a chunk id is not 64 hex digits".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::vv::VersionVector;

    fn site(dir: &Path, name: &str) -> Engine {
        let root = dir.join(name).join("tree");
        std::fs::create_dir_all(&root).unwrap();
        let state = dir.join(name).join("state");
        std::fs::create_dir_all(&state).unwrap();
        Engine::open(root, state, name.into(), None).unwrap()
    }

    /// Delivers one offered version to `b` through the same calls the network makes.
    fn deliver(out: Outgoing, b: &Engine) -> Outcome {
        let Outgoing {
            offer,
            bytes,
            ranges,
        } = out;
        let reply = b.offer(&offer).map_err(|e| format!("{e:?}")).unwrap();
        if reply.result != Outcome::Need {
            return reply.result;
        }
        let mut raw = Vec::new();
        for &i in &reply.missing {
            let (s, e) = ranges[i];
            raw.extend_from_slice(&bytes[s..e]);
        }
        let z = zstd::bulk::compress(&raw, 3).unwrap();
        let up = Update {
            offer,
            missing: reply.missing,
        };
        b.update(&up, &z).map_err(|e| format!("{e:?}")).unwrap()
    }

    /// Ships every queued path from `a` to `b`.
    fn ship(a: &Engine, b: &Engine) -> Vec<Outcome> {
        let mut out = Vec::new();
        while let Some(p) = a.next_pending() {
            if let Some(snap) = a.snapshot(&p).unwrap() {
                out.push(deliver(snap, b));
            }
        }
        out
    }

    fn converge(a: &Engine, b: &Engine) {
        for _ in 0..6 {
            a.observe("").unwrap();
            b.observe("").unwrap();
            ship(a, b);
            ship(b, a);
        }
        assert_eq!(a.pending_len() + b.pending_len(), 0);
    }

    fn files(e: &Engine) -> Vec<(String, Vec<u8>)> {
        tree::walk(e.root(), "", None)
            .into_iter()
            .map(|p| {
                let b = std::fs::read(e.root().join(&p)).unwrap();
                (p, b)
            })
            .collect()
    }

    #[test]
    fn create_edit_delete_ship_both_ways() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::create_dir_all(a.root().join("sub")).unwrap();
        std::fs::write(a.root().join("sub/f"), b"one").unwrap();
        converge(&a, &b);
        assert_eq!(std::fs::read(b.root().join("sub/f")).unwrap(), b"one");
        std::fs::write(b.root().join("sub/f"), b"two").unwrap();
        converge(&a, &b);
        assert_eq!(std::fs::read(a.root().join("sub/f")).unwrap(), b"two");
        std::fs::remove_file(a.root().join("sub/f")).unwrap();
        converge(&a, &b);
        assert!(!b.root().join("sub/f").exists());
        assert_eq!(b.status().conflicts, 0);
    }

    #[test]
    fn a_version_is_on_disk_before_it_is_offered_or_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("f"), b"one").unwrap();
        assert_eq!(a.observe("").unwrap(), 1);
        // Group commit: the change alone is not written yet...
        assert!(!State::load(a.state_dir(), "a")
            .unwrap()
            .entries
            .contains_key("f"));
        assert!(a.dirty());
        // ...but it is before it is offered,
        let out = a.snapshot("f").unwrap().unwrap();
        let vv = out.offer.meta.vv.clone();
        let saved = State::load(a.state_dir(), "a").unwrap();
        assert_eq!(saved.entries.get("f").map(|e| &e.vv), Some(&vv));
        // and the peer has it on disk before it says so.
        assert_eq!(deliver(out, &b), Outcome::Applied);
        let saved = State::load(b.state_dir(), "b").unwrap();
        assert_eq!(saved.entries.get("f").map(|e| &e.vv), Some(&vv));
        assert!(!b.dirty());
    }

    #[test]
    fn a_same_size_rewrite_within_one_clock_tick_is_still_a_change() {
        let d = tempfile::tempdir().unwrap();
        let a = site(d.path(), "a");
        std::fs::write(a.root().join("f"), b"aaaa").unwrap();
        assert_eq!(a.observe("").unwrap(), 1);
        std::fs::write(a.root().join("f"), b"bbbb").unwrap();
        assert_eq!(a.observe("").unwrap(), 1);
        assert_eq!(a.observe("").unwrap(), 0);
    }

    #[test]
    fn concurrent_edits_keep_both_versions_and_converge() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("f"), b"base").unwrap();
        converge(&a, &b);
        std::fs::write(a.root().join("f"), b"from a").unwrap();
        std::fs::write(b.root().join("f"), b"from b").unwrap();
        a.observe("").unwrap();
        b.observe("").unwrap();
        // Both offers cross on the wire: each site detects the conflict on its own.
        let (sa, sb) = (
            a.snapshot("f").unwrap().unwrap(),
            b.snapshot("f").unwrap().unwrap(),
        );
        assert_eq!(deliver(sa, &b), Outcome::Conflict);
        assert_eq!(deliver(sb, &a), Outcome::Conflict);
        converge(&a, &b);
        assert_eq!(a.index().entries, b.index().entries);
        let (fa, fb) = (files(&a), files(&b));
        assert_eq!(fa, fb);
        assert_eq!(fa.len(), 2, "{fa:?}");
        let mut contents: Vec<&[u8]> = fa.iter().map(|(_, c)| c.as_slice()).collect();
        contents.sort();
        assert_eq!(contents, vec![&b"from a"[..], &b"from b"[..]]);
        assert!(fa[1].0.starts_with("f.conflict-"), "{fa:?}");
        assert!(a.status().conflicts + b.status().conflicts >= 1);
    }

    /// Writes `f` in `e`'s tree with the given mtime (the change time sync records).
    fn write_at(e: &Engine, name: &str, content: &[u8], mtime_ns: i64) {
        let p = e.root().join(name);
        std::fs::write(&p, content).unwrap();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns as u64);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn conflict_copies_made_at_both_sites_never_conflict_again() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("f"), b"base").unwrap();
        converge(&a, &b);
        // Four versions within one second (the second of the copies' names), in this order:
        // a1, b1, a2, b2. Both of a's lose, each at a different moment on each site.
        let t = (now_ns() / 1_000_000_000 - 10) * 1_000_000_000;
        write_at(&a, "f", b"a1", t + 100_000_000);
        write_at(&b, "f", b"b1", t + 200_000_000);
        a.observe("").unwrap();
        b.observe("").unwrap();
        // a1 reaches b: b1 is later, a1 becomes a copy at b.
        assert_eq!(
            deliver(a.snapshot("f").unwrap().unwrap(), &b),
            Outcome::Conflict
        );
        write_at(&a, "f", b"a2", t + 300_000_000);
        write_at(&b, "f", b"b2", t + 400_000_000);
        a.observe("").unwrap();
        b.observe("").unwrap();
        // a2 reaches b and b2 reaches a, crossing: both sites copy a2, a before it has
        // a1's copy (which the old numbering gave the same name as a2's at one site only).
        let (sa, sb) = (
            a.snapshot("f").unwrap().unwrap(),
            b.snapshot("f").unwrap().unwrap(),
        );
        assert_eq!(deliver(sa, &b), Outcome::Conflict);
        assert_eq!(deliver(sb, &a), Outcome::Conflict);
        converge(&a, &b);
        let (fa, fb) = (files(&a), files(&b));
        assert_eq!(fa, fb);
        assert_eq!(a.index().entries, b.index().entries);
        for (name, _) in &fa {
            assert!(name.matches(".conflict-").count() <= 1, "cascade: {fa:?}");
        }
        let mut contents: Vec<&[u8]> = fa.iter().map(|(_, c)| c.as_slice()).collect();
        contents.sort();
        assert_eq!(contents, vec![&b"a1"[..], &b"a2"[..], &b"b2"[..]], "{fa:?}");
        assert_eq!(std::fs::read(a.root().join("f")).unwrap(), b"b2");
        // Nothing left to say: no site keeps making versions of the copies.
        assert_eq!(a.observe("").unwrap() + b.observe("").unwrap(), 0);
    }

    #[test]
    fn a_change_still_being_written_is_not_a_version_yet() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (
            site(d.path(), "a"),
            site(d.path(), "b").with_settle(std::time::Duration::from_secs(3600)),
        );
        std::fs::write(a.root().join("f"), b"from a").unwrap();
        a.observe("").unwrap();
        // b's file was just written (maybe only truncated so far): not recorded, looked at
        // again later, and a's version must wait rather than be judged against it.
        std::fs::write(b.root().join("f"), b"").unwrap();
        assert_eq!(b.observe("").unwrap(), 0);
        assert_eq!(b.take_unsettled(), vec!["f".to_string()]);
        let offer = a.snapshot("f").unwrap().unwrap().offer;
        assert!(matches!(b.offer(&offer), Err(Refusal::Retry(_))));
        assert!(b.snapshot("f").unwrap().is_none());
        assert_eq!(std::fs::read(b.root().join("f")).unwrap(), b"");
    }

    #[test]
    fn delete_never_beats_a_concurrent_modification() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("f"), b"base").unwrap();
        converge(&a, &b);
        std::fs::remove_file(a.root().join("f")).unwrap();
        std::fs::write(b.root().join("f"), b"edited").unwrap();
        a.observe("").unwrap();
        b.observe("").unwrap();
        converge(&a, &b);
        assert_eq!(std::fs::read(a.root().join("f")).unwrap(), b"edited");
        assert_eq!(std::fs::read(b.root().join("f")).unwrap(), b"edited");
        assert!(a.status().conflicts + b.status().conflicts >= 1);
    }

    fn mode(e: &Engine, name: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(e.root().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    fn chmod(e: &Engine, name: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(e.root().join(name), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }

    #[test]
    fn permissions_cross_with_the_content_and_a_chmod_alone_is_a_version() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("run.sh"), b"#!/bin/sh\n").unwrap();
        chmod(&a, "run.sh", 0o750);
        std::fs::write(a.root().join("secret"), b"key").unwrap();
        chmod(&a, "secret", 0o600);
        converge(&a, &b);
        assert_eq!(mode(&b, "run.sh"), 0o750);
        assert_eq!(mode(&b, "secret"), 0o600);
        // A chmod changes neither content nor mtime: still a version, and only the mode moves.
        chmod(&b, "secret", 0o640);
        assert_eq!(b.observe("").unwrap(), 1);
        let outcomes = ship(&b, &a);
        assert_eq!(outcomes, vec![Outcome::Applied]);
        assert_eq!(mode(&a, "secret"), 0o640);
        assert_eq!(std::fs::read(a.root().join("secret")).unwrap(), b"key");
        converge(&a, &b);
        assert_eq!(a.status().conflicts + b.status().conflicts, 0);
        // setuid, setgid and sticky never cross; the rest of the mode does.
        chmod(&a, "run.sh", 0o4755);
        converge(&a, &b);
        assert_eq!(mode(&b, "run.sh"), 0o755);
    }

    #[test]
    fn chmods_on_both_sides_converge_on_the_later_one_without_a_conflict_copy() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("f"), b"same").unwrap();
        chmod(&a, "f", 0o644);
        converge(&a, &b);
        chmod(&a, "f", 0o600);
        a.observe("").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        chmod(&b, "f", 0o640);
        b.observe("").unwrap();
        converge(&a, &b);
        assert_eq!((mode(&a, "f"), mode(&b, "f")), (0o640, 0o640));
        assert_eq!(
            files(&a),
            files(&b),
            "no conflict copy for a mode-only difference"
        );
        assert_eq!(files(&a).len(), 1);
    }

    #[test]
    fn an_offer_with_setuid_bits_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        std::fs::write(a.root().join("f"), b"x").unwrap();
        a.observe("").unwrap();
        let mut out = a.snapshot("f").unwrap().unwrap();
        out.offer.meta.mode = 0o4755;
        let err = b.offer(&out.offer).unwrap_err();
        assert!(format!("{err:?}").contains("setuid"), "{err:?}");
    }

    #[test]
    fn only_changed_chunks_cross_and_content_is_verified() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (site(d.path(), "a"), site(d.path(), "b"));
        let mut big: Vec<u8> = (0..2_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(a.root().join("big"), &big).unwrap();
        converge(&a, &b);
        big[1_000_000] ^= 0xff;
        std::fs::write(a.root().join("big"), &big).unwrap();
        a.observe("").unwrap();
        let p = a.next_pending().unwrap();
        let offer = a.snapshot(&p).unwrap().unwrap().offer;
        let reply = b.offer(&offer).map_err(|e| format!("{e:?}")).unwrap();
        assert_eq!(reply.result, Outcome::Need);
        assert!(
            reply.missing.len() < offer.chunks.len() / 4,
            "{} of {}",
            reply.missing.len(),
            offer.chunks.len()
        );
        // Wrong bytes for the missing chunks: refused, nothing applied.
        let wanted: u64 = reply.missing.iter().map(|&i| offer.chunks[i].len).sum();
        let junk = zstd::bulk::compress(&vec![0u8; wanted as usize], 3).unwrap();
        let up = Update {
            offer,
            missing: reply.missing,
        };
        assert!(matches!(b.update(&up, &junk), Err(Refusal::Bad(_))));
        a.enqueue(&p);
        converge(&a, &b);
        assert_eq!(std::fs::read(b.root().join("big")).unwrap(), big);
    }

    #[test]
    fn offers_naming_paths_outside_the_tree_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let b = site(d.path(), "b");
        let offer = Offer {
            meta: Meta {
                path: "../escape".into(),
                vv: VersionVector([("a".to_string(), 1)].into_iter().collect()),
                hash: None,
                size: 0,
                mtime_ns: 0,
                deleted: true,
                origin_site: "a".into(),
                changed_at_ns: 0,
                mode: 0,
            },
            chunks: vec![],
        };
        assert!(matches!(b.offer(&offer), Err(Refusal::Bad(_))));
    }

    #[test]
    fn chunk_lengths_that_overflow_when_added_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let b = site(d.path(), "b");
        let id = "0".repeat(64);
        let chunk = |len| ChunkRef {
            id: id.clone(),
            len,
        };
        // 2^63 + 2^63 + 5 wraps to 5, the size claimed.
        let offer = Offer {
            meta: Meta {
                path: "f".into(),
                vv: VersionVector([("a".to_string(), 1)].into_iter().collect()),
                hash: Some(id.clone()),
                size: 5,
                mtime_ns: 0,
                deleted: false,
                origin_site: "a".into(),
                changed_at_ns: 0,
                mode: 0,
            },
            chunks: vec![chunk(1 << 63), chunk(1 << 63), chunk(5)],
        };
        assert!(matches!(b.offer(&offer), Err(Refusal::Bad(_))));
        let up = Update {
            offer,
            missing: vec![0, 1, 2],
        };
        assert!(matches!(b.update(&up, &[]), Err(Refusal::Bad(_))));
    }
}
