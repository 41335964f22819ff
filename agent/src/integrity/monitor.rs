//! The integrity monitor inside `palisade-agent run`: realtime watching with `notify`, the
//! periodic full verify, polling of directories that could not be watched, malware scanning of
//! new and changed files, and anti-tamper restores. It runs on its own thread and writes its
//! events straight into the spool.
//!
//! Realtime has known gaps, each handled so that nothing is silently missed:
//! - every directory is watched on its own (not with notify's recursive mode), so the monitor
//!   knows exactly which directories are watched; a new directory gets a watch and is walked at
//!   once, so files created inside it before the watch existed are still found;
//! - the kernel queue overflowing (notify's `Rescan` flag), or our own bounded channel filling
//!   up, triggers a full re-verify and an event saying so;
//! - hitting `fs.inotify.max_user_watches` raises an alert naming how many directories are not
//!   watched; those are verified every `poll_interval_secs` instead;
//! - the periodic full verify (`full_scan_interval_secs`) catches whatever else slipped by.
//!
//! A difference is reported once; it is reported again only when the file changes again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use palisade_wire::{Event, Severity};
use serde_json::json;

use super::config::{IntegrityConfig, Protect};
use super::db::Baseline;
use super::events::{self, Detection};
use super::quarantine::Quarantine;
use super::store::Store;
use super::verify::{self, Change, Finding, Report};
use super::walk::{Root, WalkOptions};
use super::{IntegrityError, Layout};
use crate::spool::Spool;

/// Paths waiting in the channel from notify's thread at most; beyond it the monitor rescans.
const CHANNEL_DEPTH: usize = 65_536;
/// A dirty path is checked at the latest this long after its first event, however busy the
/// tree is.
const MAX_DELAY: Duration = Duration::from_millis(400);
/// A publish lock older than this is ignored (the publisher died).
const PUBLISH_LOCK_MAX_AGE: Duration = Duration::from_secs(600);

/// Counters the monitor exposes (heartbeats).
#[derive(Debug, Default)]
pub struct MonitorCounters {
    /// Directories watched.
    pub watched_dirs: AtomicU64,
    /// Directories that could not be watched (polled instead).
    pub unwatched_dirs: AtomicU64,
    /// Findings reported.
    pub findings: AtomicU64,
    /// Restores done.
    pub restores: AtomicU64,
    /// Restores that failed.
    pub restore_failures: AtomicU64,
    /// Files scanned for malware.
    pub malware_scans: AtomicU64,
    /// Malware matches.
    pub malware_matches: AtomicU64,
    /// Rescans after the event queue overflowed.
    pub rescans: AtomicU64,
    /// Full verifies done.
    pub full_verifies: AtomicU64,
    /// Reported differences forgotten because `max_reported` was reached.
    pub reported_evictions: AtomicU64,
}

impl MonitorCounters {
    /// As JSON for heartbeats.
    pub fn to_json(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "watched_dirs": g(&self.watched_dirs),
            "unwatched_dirs": g(&self.unwatched_dirs),
            "findings": g(&self.findings),
            "restores": g(&self.restores),
            "restore_failures": g(&self.restore_failures),
            "malware_scans": g(&self.malware_scans),
            "malware_matches": g(&self.malware_matches),
            "rescans": g(&self.rescans),
            "full_verifies": g(&self.full_verifies),
            "reported_evictions": g(&self.reported_evictions),
        })
    }
}

enum Msg {
    Paths(Vec<PathBuf>),
    Error(String),
}

/// What was last reported for a path: the change and a fingerprint of the live state.
type Reported = (Change, u64);

fn fingerprint(f: &Finding) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(f.change.name().as_bytes());
    if let Some(e) = &f.new {
        let mut buf = Vec::new();
        let mut e = e.clone();
        // ctime moves on any touch, and a directory's size and times on any entry change
        // (reported on the entry); the rest says whether this is the same state.
        e.ctime_ns = 0;
        if e.kind == super::entry::Kind::Dir {
            e.mtime_ns = 0;
            e.size = 0;
        }
        e.encode(&mut buf);
        h.update(&buf);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

struct Monitor {
    config: IntegrityConfig,
    layout: Layout,
    agent_id: String,
    spool: Arc<Spool>,
    counters: Arc<MonitorCounters>,
    roots: Vec<Root>,
    db: Option<Baseline>,
    db_stamp: Option<(u64, i64, u64)>,
    store: Store,
    quarantine: Quarantine,
    #[cfg(feature = "yara")]
    scanner: Option<super::malware::FileScanner>,
    watcher: Option<notify::RecommendedWatcher>,
    /// Watched directories and the (device, inode) watched: a directory removed and made anew
    /// under the same name is a new directory to watch and walk.
    watched: HashMap<PathBuf, (u64, u64)>,
    unwatched: BTreeSet<PathBuf>,
    watch_limit_reported: bool,
    reported: HashMap<PathBuf, Reported>,
    reported_order: VecDeque<PathBuf>,
    deferred: BTreeSet<PathBuf>,
    /// New directories to walk once more after their watch was added.
    rewalk: BTreeSet<PathBuf>,
}

/// Starts the monitor thread. Fails only when the integrity dir cannot be set up; a missing
/// or refused baseline is reported as an event and retried.
pub fn spawn(
    config: IntegrityConfig,
    layout: Layout,
    agent_id: String,
    spool: Arc<Spool>,
    counters: Arc<MonitorCounters>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, IntegrityError> {
    layout.create()?;
    let roots = Root::all(&config).map_err(IntegrityError::Config)?;
    let io = |path: PathBuf| {
        move |source| IntegrityError::Io {
            action: "create",
            path,
            source,
        }
    };
    let store = Store::open(&layout.store()).map_err(io(layout.store()))?;
    let quarantine = Quarantine::open(&layout.quarantine()).map_err(|e| IntegrityError::Io {
        action: "create",
        path: layout.quarantine(),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::thread::Builder::new()
        .name("integrity".into())
        .spawn(move || {
            let mut m = Monitor {
                config,
                layout,
                agent_id,
                spool,
                counters,
                roots,
                db: None,
                db_stamp: None,
                store,
                quarantine,
                #[cfg(feature = "yara")]
                scanner: None,
                watcher: None,
                watched: HashMap::new(),
                unwatched: BTreeSet::new(),
                watch_limit_reported: false,
                reported: HashMap::new(),
                reported_order: VecDeque::new(),
                deferred: BTreeSet::new(),
                rewalk: BTreeSet::new(),
            };
            m.run(&stop);
        })
        .map_err(|source| IntegrityError::Io {
            action: "start the monitor thread for",
            path: PathBuf::from("integrity"),
            source,
        })
}

fn db_stamp(path: &Path) -> Option<(u64, i64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.mtime_nsec() + m.mtime() * 1_000_000_000, m.len()))
}

impl Monitor {
    fn emit(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let n = events.len() as u64;
        if let Err(e) = self.spool.append(events) {
            tracing::error!(error = %e, "cannot spool integrity events; they are lost");
            self.spool.note_lost(n, &e.to_string());
        }
    }

    fn notice(
        &self,
        id: &str,
        name: &str,
        severity: Severity,
        msg: String,
        details: serde_json::Value,
    ) {
        match severity {
            Severity::High | Severity::Critical => tracing::error!(rule = id, "{msg}"),
            _ => tracing::info!(rule = id, "{msg}"),
        }
        self.emit(vec![events::notice(
            &self.agent_id,
            id,
            name,
            severity,
            msg,
            details,
        )]);
    }

    fn options(&self) -> WalkOptions<'static> {
        WalkOptions {
            threads: self.config.thread_count(),
            hash: true,
            progress: None,
        }
    }

    /// Opens the baseline; creates the first one when the agent has never had one (no key, no
    /// baseline). A baseline that is gone while the key exists is an alert, never re-created.
    fn load_baseline(&mut self, first: bool) -> bool {
        let key_exists = self.layout.key().exists();
        if first && !key_exists && !self.layout.db().exists() && self.config.public_key.is_none() {
            match super::create_baseline(
                &self.config,
                &self.layout,
                &self.agent_id,
                "init (first run of the monitor)",
                None,
                None,
            ) {
                Ok(out) => {
                    tracing::info!(
                        files = out.baseline.header.files,
                        "first integrity baseline created"
                    );
                    self.emit(vec![events::baseline(
                        &self.agent_id,
                        &out.baseline,
                        "baseline-created",
                        None,
                    )]);
                }
                Err(e) => {
                    self.notice(
                        "palisade.fim.baseline_error",
                        "Integrity baseline unusable",
                        Severity::High,
                        format!("cannot create the first baseline: {e}"),
                        json!({ "error": e.to_string() }),
                    );
                    return false;
                }
            }
        }
        self.db_stamp = db_stamp(&self.layout.db());
        match super::open_baseline(&self.config, &self.layout) {
            Ok(db) => {
                tracing::info!(
                    generation = db.header.generation,
                    files = db.header.files,
                    digest = %db.digest,
                    "integrity baseline loaded"
                );
                self.db = Some(db);
                true
            }
            Err(e) => {
                self.db = None;
                self.notice(
                    "palisade.fim.baseline_refused",
                    "Integrity baseline missing or tampered with",
                    Severity::Critical,
                    format!("integrity monitoring is suspended: {e}"),
                    json!({ "error": e.to_string(), "baseline": self.layout.db() }),
                );
                false
            }
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_DEPTH);
        let overflow = Arc::new(AtomicBool::new(false));
        if self.config.realtime {
            self.watcher = make_watcher(tx, overflow.clone());
        }
        #[cfg(feature = "yara")]
        if self.config.malware.enabled {
            match super::malware::FileScanner::new(&self.config.malware) {
                Ok(s) => self.scanner = Some(s),
                Err(e) => self.notice(
                    "palisade.fim.malware_rules_error",
                    "Malware rules do not compile",
                    Severity::High,
                    format!("malware scanning is off: {e}"),
                    json!({ "error": e.to_string() }),
                ),
            }
        }
        let mut have_db = self.load_baseline(true);
        if have_db {
            self.start_watching();
            self.full_verify(Detection::Scheduled);
        }
        let mut dirty: BTreeSet<PathBuf> = BTreeSet::new();
        let mut first_dirty: Option<Instant> = None;
        let mut last_event = Instant::now();
        let mut last_full = Instant::now();
        let mut last_poll = Instant::now();
        let mut last_db_check = Instant::now();
        let debounce = Duration::from_millis(self.config.debounce_ms.max(1));
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(debounce.min(Duration::from_millis(100))) {
                Ok(Msg::Paths(paths)) => {
                    last_event = Instant::now();
                    first_dirty.get_or_insert(last_event);
                    dirty.extend(paths);
                    // Drain what is already queued without waiting.
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Paths(p) => dirty.extend(p),
                            Msg::Error(e) => tracing::warn!(error = %e, "watch error"),
                        }
                    }
                }
                Ok(Msg::Error(e)) => tracing::warn!(error = %e, "watch error"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(debounce);
                }
            }
            if last_db_check.elapsed() >= Duration::from_millis(500) {
                last_db_check = Instant::now();
                if db_stamp(&self.layout.db()) != self.db_stamp || !have_db {
                    have_db = self.load_baseline(false);
                    if have_db {
                        self.start_watching();
                        // A new baseline (update, publish): check what it changed.
                        self.full_verify(Detection::Scheduled);
                    }
                }
                if !self.deferred.is_empty() && !self.publish_active() {
                    dirty.append(&mut self.deferred);
                    first_dirty.get_or_insert(Instant::now());
                }
            }
            if !have_db {
                dirty.clear();
                first_dirty = None;
                continue;
            }
            if overflow.swap(false, Ordering::Relaxed) {
                self.counters.rescans.fetch_add(1, Ordering::Relaxed);
                self.notice(
                    "palisade.fim.rescan",
                    "Realtime event queue overflowed; rescanning",
                    Severity::Medium,
                    "the realtime event queue overflowed (too many changes at once); every tree is re-verified so nothing is missed".into(),
                    json!({ "reason": "queue overflow" }),
                );
                dirty.clear();
                first_dirty = None;
                self.start_watching();
                self.full_verify(Detection::Rescan);
                continue;
            }
            let due = first_dirty
                .is_some_and(|t| last_event.elapsed() >= debounce || t.elapsed() >= MAX_DELAY);
            if due {
                let paths: Vec<PathBuf> = std::mem::take(&mut dirty).into_iter().collect();
                first_dirty = None;
                self.check_paths(&paths, Detection::Realtime);
                if !self.rewalk.is_empty() {
                    dirty.extend(self.rewalk.iter().cloned());
                    first_dirty = Some(Instant::now());
                }
            }
            if self.config.full_scan_interval_secs > 0
                && last_full.elapsed() >= Duration::from_secs(self.config.full_scan_interval_secs)
            {
                last_full = Instant::now();
                self.full_verify(Detection::Scheduled);
            }
            if !self.unwatched.is_empty()
                && last_poll.elapsed() >= Duration::from_secs(self.config.poll_interval_secs.max(1))
            {
                last_poll = Instant::now();
                let dirs: Vec<PathBuf> = self.unwatched.iter().cloned().collect();
                self.check_paths(&dirs, Detection::Polling);
            }
        }
    }

    /// Adds watches for every directory of the baseline and of the live trees not yet watched.
    fn start_watching(&mut self) {
        if self.watcher.is_none() {
            return;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(db) = &self.db {
            dirs.extend(db.dirs().map(Path::to_path_buf));
        }
        for r in &self.roots {
            dirs.push(r.path().to_path_buf());
            // Root parents, so a root that is removed or renamed is seen.
            if let Some(p) = r.path().parent() {
                dirs.push(p.to_path_buf());
            }
        }
        for d in dirs {
            let _ = self.watch_dir(&d);
        }
    }

    /// Whether `dir` is watched as the directory now at that path.
    fn is_watched(&self, dir: &Path) -> bool {
        self.watched.get(dir).is_some_and(|id| {
            std::fs::symlink_metadata(dir).is_ok_and(|m| (m.dev(), m.ino()) == *id)
        })
    }

    /// Watches `dir`; true when a new watch was added.
    fn watch_dir(&mut self, dir: &Path) -> bool {
        if self.is_watched(dir) {
            return false;
        }
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            self.watched.remove(dir);
            return false;
        };
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        match w.watch(dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched
                    .insert(dir.to_path_buf(), (meta.dev(), meta.ino()));
                self.unwatched.remove(dir);
                self.counters
                    .watched_dirs
                    .store(self.watched.len() as u64, Ordering::Relaxed);
                true
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                self.unwatched.insert(dir.to_path_buf());
                self.counters
                    .unwatched_dirs
                    .store(self.unwatched.len() as u64, Ordering::Relaxed);
                if !self.watch_limit_reported {
                    self.watch_limit_reported = true;
                    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    self.notice(
                        "palisade.fim.watch_limit",
                        "inotify watch limit reached",
                        Severity::High,
                        format!(
                            "inotify watch limit reached (fs.inotify.max_user_watches = {limit}) after {} directories; {} and any further directories are verified every {} s instead of in realtime",
                            self.watched.len(),
                            dir.display(),
                            self.config.poll_interval_secs
                        ),
                        json!({
                            "watched_dirs": self.watched.len(),
                            "first_unwatched": dir,
                            "max_user_watches": limit,
                            "poll_interval_secs": self.config.poll_interval_secs,
                        }),
                    );
                }
                false
            }
            // Gone already, or not a directory: its parent's events cover it.
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "not watched");
                false
            }
        }
    }

    fn publish_active(&self) -> bool {
        let lock = self.layout.publish_lock();
        std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < PUBLISH_LOCK_MAX_AGE)
    }

    fn publish_dest(&self) -> Option<PathBuf> {
        if !self.publish_active() {
            return None;
        }
        std::fs::read_to_string(self.layout.publish_lock())
            .ok()
            .and_then(|t| t.lines().next().map(|l| PathBuf::from(l.trim())))
    }

    fn full_verify(&mut self, how: Detection) {
        let Some(db) = &self.db else { return };
        let started = Instant::now();
        match verify::verify_all(db, &self.roots, self.options()) {
            Ok(report) => {
                self.counters.full_verifies.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    files = report.files,
                    findings = report.findings.len(),
                    secs = started.elapsed().as_secs_f64(),
                    how = how.name(),
                    "integrity verify done"
                );
                self.handle(report, how, None);
            }
            Err(e) => self.verify_failed(e),
        }
    }

    fn check_paths(&mut self, paths: &[PathBuf], how: Detection) {
        let Some(db) = &self.db else { return };
        // Paths outside every root are the root parents' other entries.
        let paths: Vec<PathBuf> = paths
            .iter()
            .filter(|p| super::walk::root_of(&self.roots, p).is_some())
            .cloned()
            .collect();
        if paths.is_empty() {
            return;
        }
        tracing::debug!(how = how.name(), paths = ?paths, "checking");
        // Directories watched as they are now need no walk: their entries' own events come.
        let deep =
            |p: &Path| how != Detection::Realtime || !self.is_watched(p) || self.rewalk.contains(p);
        let result = verify::verify_paths(db, &self.roots, &paths, &deep, self.options());
        for p in &paths {
            self.rewalk.remove(p);
        }
        match result {
            Ok(report) => self.handle(report, how, Some(&paths)),
            Err(e) => self.verify_failed(e),
        }
    }

    fn verify_failed(&mut self, e: super::db::DbError) {
        self.notice(
            "palisade.fim.baseline_refused",
            "Integrity baseline missing or tampered with",
            Severity::Critical,
            format!("verify stopped: {e}"),
            json!({ "error": e.to_string() }),
        );
        self.db = None;
        self.db_stamp = None;
    }

    fn remember(&mut self, path: &Path, r: Reported) -> bool {
        if self.reported.get(path) == Some(&r) {
            return false;
        }
        if self.reported.insert(path.to_path_buf(), r).is_none() {
            self.reported_order.push_back(path.to_path_buf());
            while self.reported.len() > self.config.max_reported.max(1) {
                let Some(old) = self.reported_order.pop_front() else {
                    break;
                };
                self.reported.remove(&old);
                self.counters
                    .reported_evictions
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    fn handle(&mut self, report: Report, how: Detection, checked: Option<&[PathBuf]>) {
        // Paths checked and found back in their baseline state may be reported again later.
        match checked {
            Some(paths) => {
                let found: HashSet<&Path> =
                    report.findings.iter().map(|f| f.path.as_path()).collect();
                for p in paths {
                    if !found.contains(p.as_path()) {
                        self.reported.remove(p);
                    }
                }
            }
            None => {
                let found: HashSet<&Path> =
                    report.findings.iter().map(|f| f.path.as_path()).collect();
                self.reported.retain(|p, _| found.contains(p.as_path()));
            }
        }
        self.reported_order
            .retain(|p| self.reported.contains_key(p));
        for p in &report.problems {
            tracing::warn!(path = %p.path.display(), what = p.what, error = %p.error, "cannot read");
        }
        let publishing = self.publish_dest();
        let mut taken: Vec<PathBuf> = Vec::new();
        let mut out = Vec::new();
        for f in report.findings {
            // New directories: watch them (their content was walked already).
            if f.new
                .as_ref()
                .is_some_and(|e| e.kind == super::entry::Kind::Dir)
                && self.watch_dir(&f.path)
            {
                // Files made between the walk that found this directory and its new watch
                // would be missed: walk it once more now that it is watched.
                self.rewalk.insert(f.path.clone());
            }
            if let Some(dest) = &publishing {
                if f.path.starts_with(dest) {
                    self.deferred.insert(f.path.clone());
                    continue;
                }
            }
            // Below something already moved to quarantine: gone with it.
            if taken.iter().any(|t| f.path.starts_with(t)) {
                continue;
            }
            if !self.remember(&f.path, (f.change, fingerprint(&f))) {
                continue;
            }
            tracing::debug!(path = %f.path.display(), change = f.change.name(), how = how.name(), "finding");
            let protect = self.roots[f.root].config.protect;
            #[cfg(feature = "yara")]
            let mut malware_taken = false;
            #[cfg(feature = "yara")]
            if matches!(
                f.change,
                Change::Added | Change::Changed | Change::TypeChanged
            ) && f
                .new
                .as_ref()
                .is_some_and(|e| e.kind == super::entry::Kind::File)
            {
                if let Some(scanner) = self.scanner.as_mut() {
                    let scan = scanner.scan(&f.path);
                    self.counters.malware_scans.fetch_add(1, Ordering::Relaxed);
                    if let super::malware::Verdict::Failed(why) = &scan.verdict {
                        tracing::warn!(path = %f.path.display(), error = %why, "malware scan failed");
                    }
                    let response = super::malware::act(
                        &scan,
                        self.config.malware.action,
                        Some(&self.quarantine),
                    );
                    if let Some(ev) =
                        super::malware::event(&self.agent_id, &scan, response.as_ref())
                    {
                        self.counters
                            .malware_matches
                            .fetch_add(1, Ordering::Relaxed);
                        malware_taken = matches!(response, Some(Ok(_)));
                        out.push(ev);
                    }
                }
            }
            let response = if protect == Protect::Restore {
                #[cfg(feature = "yara")]
                let r = if malware_taken && f.change == Change::Added {
                    Ok("removed (quarantined by the malware scan)".to_string())
                } else if malware_taken {
                    // Quarantined: what is left to do is putting the baseline version back.
                    let mut g = f.clone();
                    g.change = Change::Removed;
                    super::restore::respond(&g, &self.store, &self.quarantine)
                } else {
                    super::restore::respond(&f, &self.store, &self.quarantine)
                };
                #[cfg(not(feature = "yara"))]
                let r = super::restore::respond(&f, &self.store, &self.quarantine);
                match &r {
                    Ok(_) => {
                        self.counters.restores.fetch_add(1, Ordering::Relaxed);
                        // The tree is back to the baseline: a later change is news again.
                        self.reported.remove(&f.path);
                        if f.change == Change::Added {
                            taken.push(f.path.clone());
                        }
                    }
                    Err(_) => {
                        self.counters
                            .restore_failures
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(r)
            } else {
                None
            };
            self.counters.findings.fetch_add(1, Ordering::Relaxed);
            out.push(events::finding(
                &self.agent_id,
                &f,
                protect,
                how,
                response.as_ref(),
            ));
            if out.len() >= 1000 {
                self.emit(std::mem::take(&mut out));
            }
        }
        self.emit(out);
    }
}

fn make_watcher(
    tx: SyncSender<Msg>,
    overflow: Arc<AtomicBool>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let msg = match res {
            Ok(ev) if ev.need_rescan() => {
                overflow.store(true, Ordering::Relaxed);
                return;
            }
            Ok(ev) => {
                use notify::event::{AccessKind, AccessMode, EventKind};
                // Opening and reading change nothing; only a close after writing does. Our own
                // hashing opens every file it checks, so passing these on would loop.
                let relevant = match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                    EventKind::Access(_) => false,
                    _ => true,
                };
                if !relevant || ev.paths.is_empty() {
                    return;
                }
                Msg::Paths(ev.paths)
            }
            Err(e) => Msg::Error(e.to_string()),
        };
        // Never block notify's thread (it also serves our watch requests): a full channel
        // means "too much at once", handled as an overflow.
        if let Err(TrySendError::Full(_)) = tx.try_send(msg) {
            overflow.store(true, Ordering::Relaxed);
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "cannot start realtime watching; only periodic verifies run");
            None
        }
    }
}
