//! Correlation: Sigma detection and correlation rules (from `signatures/sigma/`) evaluated on
//! the stream of stored events, in event time. The MIT `rsigma-*` crates parse the rules and
//! evaluate detection; correlation windows live in our compact store ([`engine`], [`store`]:
//! about 100 bytes a group instead of rsigma's 0.9 KiB). Hits become [`Alert`]s, grouped into
//! incidents by [`IncidentStore`].
//!
//! The correlator is a [`CommitSink`]: the store writer hands it each durable group, and it
//! evaluates on its own thread. The hand-off queue is bounded and the writer *waits* for room:
//! when rules cannot keep up, ingest slows down (agents get 503 and keep events in their spools)
//! instead of events silently skipping correlation.
//!
//! Agents resend a batch whose acknowledgement was lost; the correlator remembers each agent's
//! highest sequence seen and skips anything at or below it, so a resend is not counted twice.

pub mod engine;
pub mod event;
pub mod rules;
pub mod store;
pub mod testing;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::{CorrelationHit, Correlations, Limits, Origin, SavedGroup};
use palisade_wire::batch::{Batch, ReceivedEvent};
use palisade_wire::Timestamp;
use rsigma_eval::EvaluationResult;
use serde::{Deserialize, Serialize};

use crate::incidents::{Alert, Entities, EventRef, IncidentStore};
use crate::ingest::CommitSink;
use event::SigmaEvent;
use rules::{RuleError, RuleInfo, RuleSet};

/// `[correlation]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationSettings {
    /// Evaluate rules at all.
    pub enabled: bool,
    /// Directory of Sigma rules (`*.yml`; the `tests/` folder holds their test cases).
    pub rules_dir: PathBuf,
    /// Seconds between checks of the rule directory for changes (reload without restart).
    pub reload_check_secs: u64,
    /// Most correlation state entries (one per correlation rule and group) kept; past it the
    /// stalest tenth is evicted and counted.
    pub max_state_entries: usize,
    /// Most bytes the correlation state may hold (group records, their table, window
    /// storage), as Suricata's memcaps: past it expired state goes, then the stalest groups
    /// until 90% of it, counted as evicted. With 24-hour windows, groups keep filling at a
    /// constant count: this, not `max_state_entries`, is what bounds their memory then.
    pub max_state_bytes: u64,
    /// Most entries remembered inside one group's window (bounds a hot group).
    pub max_group_entries: usize,
    /// After a correlation fires for a group, seconds during which it does not fire again for
    /// that group (the incident already holds it).
    pub suppress_secs: u64,
    /// Committed events waiting for the correlator to evaluate them; past it the store writer
    /// waits (so ingest slows down rather than events skipping correlation or piling up in
    /// memory).
    pub queue_events: usize,
    /// Alerts evaluated and waiting for the incident database; past it the correlator waits
    /// (and, once `queue_events` fills, ingest). A job without alerts counts as one. What this
    /// buys: a slow moment of the incident database (a flush of half a second in an alert
    /// storm) no longer holds up the agents' acknowledgements.
    pub queue_alerts: usize,
    /// An alert joins an open incident with the same rule and entity if that incident saw an
    /// alert at most this many seconds (event time) before.
    pub incident_window_secs: u64,
    /// The engine a new incident database (`<data_dir>/incidents`) is created with: `redb`
    /// (the default) or `sled`. A directory that already holds one keeps its engine.
    pub incident_backend: crate::incidents::Backend,
    /// Page cache of the incident database, in bytes. Every alert reads its incident's row, its
    /// grouping key and its timeline row at random places in the file; when the open incidents
    /// outgrow the cache those reads go to the disk and the incident writer becomes ingest's
    /// limit under an alert storm (docs/RELIABILITY.md, the storm soaks).
    pub incident_cache_bytes: u64,
    /// Events remembered per correlation group to name in its alert (timestamp and id each);
    /// 0 keeps none (the alert then names only the event that completed it). This is most of
    /// the memory of a group: about 100 bytes per reference.
    pub event_refs: usize,
    /// Where the correlation windows and resend marks are saved at a clean shutdown and
    /// restored from at start (`<data_dir>/correlation-state.json`, set by `serve`).
    #[serde(skip)]
    pub state_file: Option<PathBuf>,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            enabled: true,
            rules_dir: PathBuf::from("/etc/palisade/sigma"),
            reload_check_secs: 2,
            max_state_entries: 2_000_000,
            max_state_bytes: 256 << 20,
            max_group_entries: 1000,
            suppress_secs: 300,
            queue_events: 20_000,
            queue_alerts: 10_000,
            incident_window_secs: 3600,
            incident_backend: crate::incidents::Backend::default(),
            incident_cache_bytes: crate::incidents::DEFAULT_CACHE_BYTES,
            event_refs: 5,
            state_file: None,
        }
    }
}

/// Correlator counters.
#[derive(Debug, Default)]
pub struct CorrelationMetrics {
    /// Events evaluated.
    pub events: AtomicU64,
    /// Resent events skipped.
    pub resent_skipped: AtomicU64,
    /// Detection alerts raised.
    pub detection_alerts: AtomicU64,
    /// Correlation alerts raised.
    pub correlation_alerts: AtomicU64,
    /// State entries evicted because of the cap.
    pub state_evicted: AtomicU64,
    /// Current state entries.
    pub state_entries: AtomicU64,
    /// Bytes the window store accounts for (refreshed every few seconds).
    pub state_bytes: AtomicU64,
    /// Successful rule reloads.
    pub reloads: AtomicU64,
    /// Rule reloads refused (the previous set stayed active).
    pub reload_failures: AtomicU64,
    /// Failures writing alerts.
    pub store_errors: AtomicU64,
    /// Matches of building-block rules (`generate: false`), fed to correlations only.
    pub building_blocks: AtomicU64,
    /// Groups waiting in the queue.
    pub queued: AtomicU64,
    /// How long each of the alert writer's `record` calls took (alerts into incidents).
    pub incident_record: crate::metrics::Histogram,
    /// How long each of its flushes took (the incident database's durable commit).
    pub incident_flush: crate::metrics::Histogram,
}

/// What `GET /v1/rules` shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RulesStatus {
    /// Rule directory.
    pub dir: PathBuf,
    /// Loaded rules.
    pub rules: Vec<RuleInfo>,
    /// When the active set was loaded.
    pub loaded_at: Option<Timestamp>,
    /// The latest refused reload, if it is newer than the active set.
    pub last_error: Option<RuleError>,
    /// Parser remarks on the active set.
    pub warnings: Vec<RuleError>,
}

/// Counters as numbers, for `situation` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CorrelationSnapshot {
    /// Events evaluated.
    pub events: u64,
    /// Resends skipped.
    pub resent_skipped: u64,
    /// Detection alerts.
    pub detection_alerts: u64,
    /// Correlation alerts.
    pub correlation_alerts: u64,
    /// State entries evicted at the cap.
    pub state_evicted: u64,
    /// State entries now.
    pub state_entries: u64,
    /// Bytes the correlation window store holds (slab, table and spilled windows).
    #[serde(default)]
    pub state_bytes: u64,
    /// Reloads.
    pub reloads: u64,
    /// Refused reloads.
    pub reload_failures: u64,
    /// Alert write failures.
    pub store_errors: u64,
    /// Building-block matches (no alert of their own).
    #[serde(default)]
    pub building_blocks: u64,
    /// Committed events waiting for the correlator now.
    #[serde(default)]
    pub backlog_events: u64,
    /// Alerts evaluated and waiting for the incident database now (and one for each job
    /// without alerts).
    #[serde(default)]
    pub alert_queue: u64,
    /// Alert latency from commit, p50 and p99, milliseconds (last 10k alerts).
    pub alert_latency_ms_p50: f64,
    /// p99 of the same.
    pub alert_latency_ms_p99: f64,
}

/// The running correlator.
pub struct Correlator {
    tx: std::sync::mpsc::Sender<Job>,
    /// Events sent to the worker and not yet evaluated, with the condition the sink waits on.
    backlog: Arc<Backlog>,
    /// Alerts evaluated and not yet recorded (a job without alerts counts as one).
    alert_queue: Arc<Backlog>,
    /// Set by [`Correlator::close`]: the worker drains its queue, saves its state and ends.
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The alert writer: ends once the correlator thread has ended and its queue is written.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: Arc<CorrelationMetrics>,
    status: Arc<Mutex<RulesStatus>>,
    latencies: Arc<Mutex<Latencies>>,
    settings: CorrelationSettings,
    reload_now: Arc<std::sync::atomic::AtomicBool>,
    per_agent: Arc<Mutex<HashMap<String, u64>>>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator").finish_non_exhaustive()
    }
}

struct Job {
    batches: Arc<[Batch]>,
    committed: Instant,
    events: u64,
}

/// What the correlator hands the alert writer for one job: its alerts, and the counts that
/// become visible only once those alerts are stored (so "evaluated" in `status` means the
/// alerts of those events can be queried, as before the writer had its own thread).
struct Written {
    alerts: Vec<Alert>,
    committed: Instant,
    /// What it counts for in the alert queue: its alerts, and one for the job.
    weight: u64,
    /// Events evaluated (the job's events less resends skipped).
    evaluated: u64,
    detections: u64,
    correlations: u64,
}

/// Most alerts the writer records in one call (one set of sled batches).
const WRITER_BATCH_ALERTS: usize = 20_000;

/// The bound on what waits for the correlator, counted in events (a group may hold one event or
/// fifty thousand, so counting groups bounds nothing).
#[derive(Default)]
struct Backlog {
    events: Mutex<u64>,
    drained: std::sync::Condvar,
}

impl Backlog {
    /// Waits until `n` more events fit under `cap` (always admits into an empty backlog).
    fn admit(&self, n: u64, cap: u64) {
        let mut queued = self.events.lock().unwrap_or_else(|p| p.into_inner());
        while *queued > 0 && *queued + n > cap {
            queued = match self
                .drained
                .wait_timeout(queued, Duration::from_millis(200))
            {
                Ok((q, _)) => q,
                Err(p) => p.into_inner().0,
            };
        }
        *queued += n;
    }

    fn done(&self, n: u64) {
        let mut queued = self.events.lock().unwrap_or_else(|p| p.into_inner());
        *queued = queued.saturating_sub(n);
        self.drained.notify_all();
    }

    fn queued(&self) -> u64 {
        *self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Latencies {
    ring: Vec<f64>,
    next: usize,
}

impl Latencies {
    fn push(&mut self, ms: f64) {
        if self.ring.len() < 10_000 {
            self.ring.push(ms);
        } else {
            self.ring[self.next] = ms;
            self.next = (self.next + 1) % 10_000;
        }
    }

    fn quantile(&self, q: f64) -> f64 {
        if self.ring.is_empty() {
            return 0.0;
        }
        let mut v = self.ring.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// Why the correlator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rules do not load.
    #[error("correlation rules: {0}")]
    Rules(#[from] RuleError),
    /// Thread spawn failed.
    #[error("cannot start the correlator thread: {0}")]
    Thread(std::io::Error),
}

/// Version of the state file's format (1 was rsigma's own snapshot).
const STATE_VERSION: u32 = 2;

/// What survives a clean restart: the correlation windows and each agent's last evaluated
/// sequence (so resends after the restart are still not counted twice).
#[derive(Deserialize)]
struct SavedState {
    #[serde(default)]
    version: u32,
    #[serde(default)]
    groups: Vec<SavedGroup>,
    #[serde(default)]
    last_seq: HashMap<String, u64>,
}

/// The same, written straight from the store (no second copy of a million groups in memory).
#[derive(Serialize)]
struct SavingState<'a> {
    version: u32,
    groups: GroupsOf<'a>,
    last_seq: &'a HashMap<String, u64>,
}

struct GroupsOf<'a>(&'a Correlations);

impl Serialize for GroupsOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.saved_groups())
    }
}

impl SavedState {
    /// Restores into `engine`; a missing file is a first start, an unreadable one is reported
    /// (and kept aside as `.bad`) and correlation starts empty. A file of another version
    /// keeps its resend marks; its windows are dropped.
    fn load(path: &Path, engine: &mut Correlations) -> Option<HashMap<String, u64>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(error = %e, file = %path.display(), "cannot read correlation state; starting empty");
                return None;
            }
        };
        match serde_json::from_reader::<_, SavedState>(std::io::BufReader::new(file)) {
            Ok(saved) if saved.version == STATE_VERSION => {
                let saved_groups = saved.groups.len();
                let groups = engine.restore(saved.groups);
                tracing::info!(groups, dropped = saved_groups - groups, file = %path.display(), "correlation state restored");
                Some(saved.last_seq)
            }
            Ok(saved) => {
                tracing::warn!(version = saved.version, file = %path.display(), "correlation state from another version; windows start empty");
                Some(saved.last_seq)
            }
            Err(e) => {
                let bad = path.with_extension("json.bad");
                let _ = std::fs::rename(path, &bad);
                tracing::warn!(error = %e, kept = %bad.display(), "correlation state unreadable; starting empty");
                None
            }
        }
    }

    /// Writes atomically (temp file, fsync, rename, fsync of the directory); returns groups.
    fn save(
        path: &Path,
        engine: &Correlations,
        last_seq: &HashMap<String, u64>,
    ) -> std::io::Result<usize> {
        let tmp = path.with_extension("json.tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let state = SavingState {
            version: STATE_VERSION,
            groups: GroupsOf(engine),
            last_seq,
        };
        serde_json::to_writer(&mut w, &state)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(engine.saved_groups().count())
    }
}

/// Engine limits from settings.
pub fn limits(s: &CorrelationSettings) -> Limits {
    Limits {
        max_state_entries: s.max_state_entries.max(1),
        max_state_bytes: usize::try_from(s.max_state_bytes).unwrap_or(usize::MAX),
        max_group_entries: s.max_group_entries.max(1),
        suppress_secs: (s.suppress_secs > 0).then_some(s.suppress_secs),
        event_refs: s.event_refs,
    }
}

impl Correlator {
    /// Loads the rules (refusing to start on a bad set) and starts the correlator thread.
    pub fn start(
        settings: CorrelationSettings,
        incidents: Arc<IncidentStore>,
    ) -> Result<Arc<Self>, StartError> {
        // A missing directory starts an empty set (reported, and picked up once it appears);
        // a directory whose rules do not load refuses the start, like a config error.
        let (set, missing) = if settings.rules_dir.is_dir() {
            (RuleSet::load_dir(&settings.rules_dir)?, None)
        } else {
            let e = RuleError {
                file: settings.rules_dir.clone(),
                line: 0,
                reason: "rule directory does not exist; no rules are active".into(),
            };
            tracing::warn!(error = %e, "correlation starts with no rules");
            (RuleSet::empty(), Some(e))
        };
        let mut engine = set.correlator(limits(&settings))?;
        let restored = settings
            .state_file
            .as_deref()
            .and_then(|p| SavedState::load(p, &mut engine));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let backlog = Arc::new(Backlog::default());
        let alert_queue = Arc::new(Backlog::default());
        let metrics = Arc::new(CorrelationMetrics::default());
        let status = Arc::new(Mutex::new(RulesStatus {
            dir: settings.rules_dir.clone(),
            rules: set.rules.clone(),
            loaded_at: Some(Timestamp::now()),
            last_error: missing,
            warnings: set.warnings.clone(),
        }));
        tracing::info!(
            dir = %settings.rules_dir.display(),
            rules = set.rules.len(),
            "correlation rules loaded"
        );
        let latencies = Arc::new(Mutex::new(Latencies::default()));
        let reload_now = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let per_agent = Arc::new(Mutex::new(HashMap::new()));
        // Bounded by `alert_queue` (in alerts), not by the channel.
        let (written_tx, written_rx) = std::sync::mpsc::channel();
        let alert_writer = AlertWriter {
            incidents,
            metrics: metrics.clone(),
            latencies: latencies.clone(),
            per_agent: per_agent.clone(),
            queue: alert_queue.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("alert-writer".into())
            .spawn(move || alert_writer.run(written_rx))
            .map_err(StartError::Thread)?;
        let worker = Worker {
            settings: settings.clone(),
            set,
            engine,
            writer: written_tx,
            metrics: metrics.clone(),
            status: status.clone(),
            last_seq: restored.unwrap_or_default(),
            reload_now: reload_now.clone(),
            stop: stop.clone(),
            backlog: backlog.clone(),
            alert_queue: alert_queue.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("correlator".into())
            .spawn(move || worker.run(rx))
            .map_err(StartError::Thread)?;
        Ok(Arc::new(Correlator {
            tx,
            backlog,
            alert_queue,
            stop,
            thread: Mutex::new(Some(thread)),
            writer: Mutex::new(Some(writer)),
            metrics,
            status,
            latencies,
            settings,
            reload_now,
            per_agent,
        }))
    }

    /// Stops the correlator: what was committed before is evaluated, alerts are flushed and
    /// the windows saved to `state_file`. Waits at most `timeout`.
    pub fn close(&self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let join = |slot: &Mutex<Option<std::thread::JoinHandle<()>>>, what: &str| {
            let handle = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(h) = handle {
                while !h.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if h.is_finished() {
                    let _ = h.join();
                } else {
                    tracing::warn!("{what} did not stop in time");
                }
            }
        };
        // The correlator first (it saves its windows and, ending, closes the writer's queue),
        // then the writer (it records what is queued and flushes).
        join(&self.thread, "correlator (its state is not saved)");
        join(
            &self.writer,
            "alert writer (alerts still queued are not stored)",
        );
    }

    /// Rules loaded, and the latest refused reload.
    pub fn rules_status(&self) -> RulesStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Alerts raised so far, per agent that sent the event completing the match.
    pub fn alerts_per_agent(&self) -> HashMap<String, u64> {
        self.per_agent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks for a reload at the next check (within a second).
    pub fn request_reload(&self) {
        self.reload_now.store(true, Ordering::Relaxed);
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &CorrelationSettings {
        &self.settings
    }

    /// Counters.
    pub fn snapshot(&self) -> CorrelationSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let m = &self.metrics;
        let lat = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        CorrelationSnapshot {
            events: r(&m.events),
            resent_skipped: r(&m.resent_skipped),
            detection_alerts: r(&m.detection_alerts),
            correlation_alerts: r(&m.correlation_alerts),
            state_evicted: r(&m.state_evicted),
            state_entries: r(&m.state_entries),
            state_bytes: r(&m.state_bytes),
            reloads: r(&m.reloads),
            reload_failures: r(&m.reload_failures),
            store_errors: r(&m.store_errors),
            building_blocks: r(&m.building_blocks),
            backlog_events: self.backlog.queued(),
            alert_queue: self.alert_queue.queued(),
            alert_latency_ms_p50: lat.quantile(0.5),
            alert_latency_ms_p99: lat.quantile(0.99),
        }
    }
}

impl CommitSink for Correlator {
    fn committed(&self, batches: &Arc<[Batch]>) {
        let events: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
        // Blocking on purpose: back-pressure to ingest rather than skipped correlation.
        self.backlog
            .admit(events, self.settings.queue_events.max(1) as u64);
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            batches: batches.clone(),
            committed: Instant::now(),
            events,
        };
        if self.tx.send(job).is_err() {
            self.backlog.done(events);
            tracing::error!("correlator stopped; committed events are not correlated");
        }
    }
}

/// The correlator thread: evaluates rules and hands alerts to the [`AlertWriter`], so that
/// evaluating the next job overlaps writing the last one's alerts (in the soak's alert storm,
/// recording was half of this thread's time).
struct Worker {
    settings: CorrelationSettings,
    set: RuleSet,
    engine: Correlations,
    writer: std::sync::mpsc::Sender<Written>,
    metrics: Arc<CorrelationMetrics>,
    status: Arc<Mutex<RulesStatus>>,
    last_seq: HashMap<String, u64>,
    reload_now: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Released here once a job is evaluated.
    backlog: Arc<Backlog>,
    /// Taken here for each evaluated job, released by the writer once its alerts are recorded.
    alert_queue: Arc<Backlog>,
}

/// The alert-writer thread: records alerts into incidents, several jobs' worth per call when
/// they queue up, flushes them every 200 ms, and only then counts their events as evaluated
/// and releases them from the alert queue.
struct AlertWriter {
    incidents: Arc<IncidentStore>,
    metrics: Arc<CorrelationMetrics>,
    latencies: Arc<Mutex<Latencies>>,
    per_agent: Arc<Mutex<HashMap<String, u64>>>,
    queue: Arc<Backlog>,
}

impl AlertWriter {
    fn run(self, rx: Receiver<Written>) {
        let mut last_flush = Instant::now();
        let mut dirty = false;
        let mut open = true;
        while open {
            let mut jobs = Vec::new();
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => jobs.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            let mut alerts = jobs.first().map_or(0, |j| j.alerts.len());
            while alerts < WRITER_BATCH_ALERTS {
                match rx.try_recv() {
                    Ok(job) => {
                        alerts += job.alerts.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                dirty |= self.write(jobs);
            }
            if dirty && (!open || last_flush.elapsed() >= Duration::from_millis(200)) {
                let started = Instant::now();
                let flushed = self.incidents.flush();
                self.metrics.incident_flush.record(started.elapsed());
                if let Err(e) = flushed {
                    tracing::error!(error = %e, "cannot flush alerts");
                }
                dirty = false;
                last_flush = Instant::now();
            }
        }
        tracing::debug!("alert writer stopped");
    }

    /// Records the jobs' alerts in one call; returns whether anything was written.
    fn write(&self, mut jobs: Vec<Written>) -> bool {
        let mut all = Vec::new();
        // Each job's commit time and alert count: the stored alerts come back in job order.
        let spans: Vec<(Instant, usize)> =
            jobs.iter().map(|j| (j.committed, j.alerts.len())).collect();
        for j in &mut jobs {
            all.append(&mut j.alerts);
        }
        let wrote = !all.is_empty();
        if wrote {
            let n = all.len();
            let started = Instant::now();
            let recorded = self.incidents.record(all);
            self.metrics.incident_record.record(started.elapsed());
            match recorded {
                Ok(stored) => {
                    let mut lat = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
                    let mut per_agent = self.per_agent.lock().unwrap_or_else(|p| p.into_inner());
                    let stamps = spans.iter().flat_map(|&(t, n)| std::iter::repeat_n(t, n));
                    for (a, committed) in stored.iter().zip(stamps) {
                        lat.push(committed.elapsed().as_secs_f64() * 1000.0);
                        if let Some(agent) = a.events.iter().rev().find_map(|e| e.agent.clone()) {
                            *per_agent.entry(agent).or_insert(0) += 1;
                        }
                        // Debug, not info: in the 50,000 events/s soak (5,400 alerts/s) one
                        // info line per alert wrote 2.3 GB of log in 49 minutes. Alerts are
                        // read through the API, forwarded by syslog and counted in /metrics.
                        tracing::debug!(
                            alert = a.id,
                            incident = a.incident,
                            rule = %a.rule_id,
                            severity = %a.severity,
                            "alert raised"
                        );
                    }
                }
                Err(e) => {
                    self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, alerts = n, "cannot record alerts; they are lost");
                }
            }
        }
        let m = &self.metrics;
        for j in &jobs {
            m.events.fetch_add(j.evaluated, Ordering::Relaxed);
            m.detection_alerts
                .fetch_add(j.detections, Ordering::Relaxed);
            m.correlation_alerts
                .fetch_add(j.correlations, Ordering::Relaxed);
            self.queue.done(j.weight);
        }
        wrote
    }
}

impl Worker {
    fn run(mut self, rx: Receiver<Job>) {
        let check_every = Duration::from_secs(self.settings.reload_check_secs.max(1));
        let mut last_check = Instant::now();
        let mut last_measure = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(job) => {
                    self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    self.process(&job);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.stop.load(Ordering::Relaxed) {
                // Everything committed before the close is still evaluated.
                while let Ok(job) = rx.try_recv() {
                    self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
                    self.process(&job);
                }
                break;
            }
            if last_measure.elapsed() >= Duration::from_secs(5) {
                last_measure = Instant::now();
                let evicted = self.engine.evicted();
                let held = self.engine.check_memory();
                self.metrics
                    .state_bytes
                    .store(held as u64, Ordering::Relaxed);
                self.metrics
                    .state_evicted
                    .fetch_add(self.engine.evicted() - evicted, Ordering::Relaxed);
            }
            let forced = self.reload_now.swap(false, Ordering::Relaxed);
            if forced || last_check.elapsed() >= check_every {
                last_check = Instant::now();
                self.maybe_reload(forced);
            }
        }
        if let Some(path) = &self.settings.state_file {
            match SavedState::save(path, &self.engine, &self.last_seq) {
                Ok(groups) => {
                    tracing::info!(groups, file = %path.display(), "correlation state saved")
                }
                Err(e) => {
                    tracing::error!(error = %e, file = %path.display(), "correlation state not saved; windows start empty next time")
                }
            }
        }
        tracing::info!("correlator stopped");
    }

    fn maybe_reload(&mut self, forced: bool) {
        if !forced && rules::fingerprint(&self.settings.rules_dir) == self.set.fingerprint {
            return;
        }
        let loaded = RuleSet::load_dir(&self.settings.rules_dir).and_then(|set| {
            let engine = set.correlator(limits(&self.settings))?;
            Ok((set, engine))
        });
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok((set, mut engine)) => {
                // Keep the windows of correlations that survive the reload.
                engine.restore(self.engine.saved_groups());
                tracing::info!(rules = set.rules.len(), "correlation rules reloaded");
                status.rules = set.rules.clone();
                status.loaded_at = Some(Timestamp::now());
                status.last_error = None;
                status.warnings = set.warnings.clone();
                self.set = set;
                self.engine = engine;
                self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // Remember the fingerprint so the same broken file is reported once.
                self.set.fingerprint = rules::fingerprint(&self.settings.rules_dir);
                tracing::error!(error = %e, "rule reload refused; the previous rule set stays active");
                status.last_error = Some(e);
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn process(&mut self, job: &Job) {
        let mut out = Written {
            alerts: Vec::new(),
            committed: job.committed,
            weight: 0,
            evaluated: 0,
            detections: 0,
            correlations: 0,
        };
        let evicted = self.engine.evicted();
        for batch in job.batches.iter() {
            let last = self.last_seq.get(&batch.agent_id).copied().unwrap_or(0);
            let mut high = last;
            for ev in &batch.events {
                let seq = ev.event.event.sequence;
                if seq <= last {
                    self.metrics.resent_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                high = high.max(seq);
                self.evaluate(ev, &mut out);
            }
            if high > last {
                self.last_seq.insert(batch.agent_id.clone(), high);
            }
        }
        self.metrics
            .state_evicted
            .fetch_add(self.engine.evicted() - evicted, Ordering::Relaxed);
        self.metrics
            .state_entries
            .store(self.engine.state_count() as u64, Ordering::Relaxed);
        // The job's events are evaluated: they leave the backlog (and their batches memory)
        // here, and its alerts wait in the alert queue. Every job goes through the writer,
        // alerts or not: its events count as evaluated only after the alerts of the jobs
        // before it are stored.
        self.backlog.done(job.events);
        out.weight = out.alerts.len() as u64 + 1;
        self.alert_queue
            .admit(out.weight, self.settings.queue_alerts.max(1) as u64);
        if let Err(std::sync::mpsc::SendError(lost)) = self.writer.send(out) {
            // The writer is gone (it panicked): its alerts are lost, said loudly, but the
            // correlator must not wait for ever on a queue nobody releases.
            self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .events
                .fetch_add(lost.evaluated, Ordering::Relaxed);
            self.alert_queue.done(lost.weight);
            tracing::error!(
                alerts = lost.alerts.len(),
                "alert writer stopped; alerts are not stored"
            );
        }
    }

    fn evaluate(&mut self, ev: &ReceivedEvent, out: &mut Written) {
        out.evaluated += 1;
        let se = SigmaEvent::new(&ev.event, &ev.raw);
        let ts = ev.event.timestamp.nanos().div_euclid(1_000_000_000);
        let hits = self.engine.process(&se, origin_of(&ev.event), ts);
        for r in &hits.detections {
            if r.header
                .rule_id
                .as_ref()
                .is_some_and(|id| self.set.quiet.contains(id))
            {
                self.metrics.building_blocks.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            out.detections += 1;
            out.alerts.push(to_alert(r, &ev.event));
        }
        for hit in &hits.correlations {
            out.correlations += 1;
            out.alerts
                .push(correlation_alert(hit, &self.engine, &ev.event));
        }
    }
}

/// Where the store finds `e` again (its time, agent and sequence).
pub fn origin_of(e: &palisade_wire::Event) -> Origin<'_> {
    Origin {
        nanos: e.timestamp.nanos(),
        agent: &e.agent.id,
        sequence: e.event.sequence,
    }
}

/// The entities an event is about.
pub fn entities_of(e: &palisade_wire::Event, raw_user: Option<&str>) -> Entities {
    let mut ent = Entities::default();
    if let Some(ip) = e.source.as_ref().and_then(|s| s.ip) {
        ent.ips.insert(ip.to_string());
    }
    if let Some(ip) = e.destination.as_ref().and_then(|s| s.ip) {
        ent.ips.insert(ip.to_string());
    }
    let host = e
        .host
        .as_ref()
        .map(|h| h.name.clone())
        .unwrap_or_else(|| e.agent.id.clone());
    ent.hosts.insert(host);
    if let Some(u) = raw_user {
        ent.users.insert(u.to_string());
    }
    ent
}

fn summary(e: &palisade_wire::Event) -> String {
    match &e.message {
        Some(m) => format!("{}: {m}", e.event.dataset.dataset()),
        None => e.event.dataset.dataset().to_string(),
    }
}

fn event_ref(event: &palisade_wire::Event) -> EventRef {
    EventRef {
        timestamp: event.timestamp,
        id: event.event.id.clone(),
        agent: Some(event.agent.id.clone()),
        sequence: Some(event.event.sequence),
        summary: Some(summary(event)),
    }
}

/// Turns a detection match into an alert about `event`.
pub fn to_alert(r: &EvaluationResult, event: &palisade_wire::Event) -> Alert {
    let h = &r.header;
    Alert {
        id: 0,
        timestamp: event.timestamp,
        raised: Timestamp::now(),
        rule_id: h.rule_id.clone().unwrap_or_else(|| h.rule_title.clone()),
        rule_title: h.rule_title.clone(),
        severity: rules::severity_of(h.level),
        kind: "detection".into(),
        group: Vec::new(),
        value: None,
        entities: entities_of(event, event.user.as_ref().map(|u| u.name.as_str())),
        events: vec![event_ref(event)],
        tags: h.tags.clone(),
        incident: 0,
    }
}

/// Turns a correlation that fired into an alert completed by `event`: its entities come from
/// the group-by values, its events are the group's references (the completing one in full).
pub fn correlation_alert(
    hit: &CorrelationHit,
    engine: &Correlations,
    event: &palisade_wire::Event,
) -> Alert {
    let c = engine.rule(hit.corr);
    let mut entities = Entities::default();
    for (field, value) in &hit.group {
        if field.ends_with(".ip") || field == "ip" {
            entities.ips.insert(value.clone());
        } else if field.starts_with("user") {
            entities.users.insert(value.clone());
        } else if field.starts_with("host") || field.ends_with("agent.id") {
            entities.hosts.insert(value.clone());
        }
    }
    let this = event_ref(event);
    let mut events = vec![this.clone()];
    if let Some(refs) = &hit.events {
        events = refs
            .iter()
            .map(|r| {
                if r.agent == event.agent.id && r.sequence == event.event.sequence {
                    this.clone()
                } else {
                    EventRef {
                        timestamp: Timestamp(r.nanos),
                        id: String::new(),
                        agent: Some(r.agent.clone()),
                        sequence: Some(r.sequence),
                        summary: None,
                    }
                }
            })
            .collect();
        if !events.contains(&this) {
            events.push(this);
        }
    }
    events.truncate(20);
    Alert {
        id: 0,
        timestamp: event.timestamp,
        raised: Timestamp::now(),
        rule_id: c.id.clone().unwrap_or_else(|| c.title.clone()),
        rule_title: c.title.clone(),
        severity: rules::severity_of(c.level),
        kind: c.correlation_type.as_str().to_string(),
        group: hit.group.clone(),
        value: Some(hit.value),
        entities,
        events,
        tags: c.tags.clone(),
        incident: 0,
    }
}

impl crate::metrics::MetricsSource for Correlator {
    fn write(&self, out: &mut crate::metrics::MetricsWriter) {
        let s = self.snapshot();
        let counters: [(&str, &str, u64); 9] = [
            (
                "palisade_correlation_building_blocks_total",
                "Matches of building-block rules (generate: false), fed to correlations only.",
                s.building_blocks,
            ),
            (
                "palisade_correlation_events_total",
                "Events evaluated by the Sigma rules.",
                s.events,
            ),
            (
                "palisade_correlation_resent_skipped_total",
                "Resent events not evaluated twice.",
                s.resent_skipped,
            ),
            (
                "palisade_correlation_detection_alerts_total",
                "Alerts from Sigma detection rules.",
                s.detection_alerts,
            ),
            (
                "palisade_correlation_correlation_alerts_total",
                "Alerts from Sigma correlation rules.",
                s.correlation_alerts,
            ),
            (
                "palisade_correlation_state_evicted_total",
                "Correlation window state entries evicted at the cap.",
                s.state_evicted,
            ),
            (
                "palisade_correlation_reloads_total",
                "Rule sets loaded after a change.",
                s.reloads,
            ),
            (
                "palisade_correlation_reload_failures_total",
                "Rule set reloads refused (the previous set stayed active).",
                s.reload_failures,
            ),
            (
                "palisade_correlation_store_errors_total",
                "Alerts that could not be written to the incident store.",
                s.store_errors,
            ),
        ];
        for (name, help, v) in counters {
            out.counter(name, help, &[], v);
        }
        out.gauge(
            "palisade_correlation_backlog_events",
            "Committed events waiting for the correlator.",
            &[],
            s.backlog_events as f64,
        );
        out.gauge(
            "palisade_correlation_alert_queue",
            "Alerts evaluated and waiting for the incident database (a job without alerts \
             counts as one).",
            &[],
            s.alert_queue as f64,
        );
        out.gauge(
            "palisade_correlation_state_entries",
            "Correlation window state entries held now.",
            &[],
            s.state_entries as f64,
        );
        out.gauge(
            "palisade_correlation_state_bytes",
            "Bytes the correlation window store holds (measured every few seconds).",
            &[],
            s.state_bytes as f64,
        );
        for (q, v) in [
            ("0.5", s.alert_latency_ms_p50),
            ("0.99", s.alert_latency_ms_p99),
        ] {
            out.gauge(
                "palisade_correlation_alert_latency_seconds",
                "Time from an event's durable commit to its alert, over the last 10k alerts.",
                &[("quantile", q)],
                v / 1000.0,
            );
        }
        for (call, h) in [
            ("record", &self.metrics.incident_record),
            ("flush", &self.metrics.incident_flush),
        ] {
            h.write(
                out,
                "palisade_correlation_incident_write_seconds",
                "Time the alert writer's calls into the incident database took: record \
                 (alerts into incidents, one call per group of jobs), flush (its durable \
                 commit, every 200 ms).",
                &[("call", call)],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::{Event, EventKind, Severity};

    const RULES: &str = "title: Failed login\nid: t-fail\nlogsource:\n  product: palisade\ndetection:\n  sel:\n    event.dataset: palisade.auth\n    event.outcome: failure\n  condition: sel\nlevel: low\n---\ntitle: Brute force\nid: t-brute\ncorrelation:\n  type: event_count\n  rules:\n    - t-fail\n  group-by:\n    - source.ip\n  timespan: 10m\n  condition:\n    gte: 3\nlevel: high\n";

    fn failures(agent: &str, seqs: std::ops::RangeInclusive<u64>, t0: i64) -> Arc<[Batch]> {
        let events: Vec<ReceivedEvent> = seqs
            .clone()
            .map(|seq| {
                let mut e = Event::new(agent, EventKind::Auth, Severity::Low);
                e.timestamp = Timestamp(t0 + seq as i64 * 1_000_000_000);
                e.event.outcome = Some("failure".into());
                e.source = Some(palisade_wire::event::Endpoint {
                    ip: Some("192.0.2.7".parse().unwrap()),
                    ..Default::default()
                });
                e.seal(seq);
                ReceivedEvent {
                    raw: e.to_json(),
                    event: e,
                }
            })
            .collect();
        Arc::from(vec![Batch {
            agent_id: agent.into(),
            first_sequence: *seqs.start(),
            last_sequence: *seqs.end(),
            events,
        }])
    }

    fn brute_force_alerts(incidents: &IncidentStore) -> usize {
        incidents
            .alerts(&crate::incidents::AlertFilter {
                limit: usize::MAX,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .filter(|a| a.rule_id == "t-brute")
            .count()
    }

    #[test]
    fn events_count_as_evaluated_only_once_their_alerts_are_stored() {
        let (_dir, incidents, c) = brute_force_correlator(|_| {});
        let t0 = Timestamp::now().nanos() - 3_600_000_000_000;
        // The alert writer lags the correlator when alerts pile up: whenever `status` says
        // events were evaluated, every alert they raised must already be listed.
        for round in 0..30u64 {
            c.committed(&failures("probe-1", round * 40 + 1..=round * 40 + 40, t0));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let snap = c.snapshot();
                let listed = incidents
                    .alerts(&crate::incidents::AlertFilter {
                        limit: usize::MAX,
                        ..Default::default()
                    })
                    .unwrap()
                    .len() as u64;
                assert!(
                    listed >= snap.detection_alerts + snap.correlation_alerts,
                    "round {round}: {} events evaluated, {} alerts counted, {listed} listed",
                    snap.events,
                    snap.detection_alerts + snap.correlation_alerts
                );
                if snap.events == (round + 1) * 40 {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round} not evaluated");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        c.close(Duration::from_secs(10));
        // Without suppression every failure from the third on completes a brute force.
        assert_eq!(c.snapshot().correlation_alerts, 30 * 40 - 2);
        assert_eq!(brute_force_alerts(&incidents), 30 * 40 - 2);
    }

    /// A correlator over the brute-force rules (no suppression), with `tune` applied to its
    /// settings, and its incident database.
    fn brute_force_correlator(
        tune: impl FnOnce(&mut CorrelationSettings),
    ) -> (tempfile::TempDir, Arc<IncidentStore>, Arc<Correlator>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/r.yml"), RULES).unwrap();
        let mut settings = CorrelationSettings {
            rules_dir: dir.path().join("rules"),
            suppress_secs: 0,
            ..Default::default()
        };
        tune(&mut settings);
        let incidents = Arc::new(IncidentStore::open(&dir.path().join("inc"), 3600).unwrap());
        let c = Correlator::start(settings, incidents.clone()).unwrap();
        (dir, incidents, c)
    }

    /// [`brute_force_correlator`] with a backlog of 100 events and an alert queue of
    /// `queue_alerts`.
    fn correlator_with_queues(
        queue_alerts: usize,
    ) -> (tempfile::TempDir, Arc<IncidentStore>, Arc<Correlator>) {
        brute_force_correlator(|s| {
            s.queue_events = 100;
            s.queue_alerts = queue_alerts;
        })
    }

    /// Sends `jobs` jobs of 40 failures each (an hour ago) from another thread; the receiver
    /// hears when every `committed` call has returned.
    fn send_jobs(c: &Arc<Correlator>, jobs: u64) -> std::sync::mpsc::Receiver<()> {
        let t0 = Timestamp::now().nanos() - 3_600_000_000_000;
        let (done, returned) = std::sync::mpsc::channel();
        let c = c.clone();
        std::thread::spawn(move || {
            for round in 0..jobs {
                c.committed(&failures("probe-1", round * 40 + 1..=round * 40 + 40, t0));
            }
            let _ = done.send(());
        });
        returned
    }

    /// Waits (bounded) until `snapshot` satisfies `what`.
    fn wait_for(c: &Correlator, what: impl Fn(&CorrelationSnapshot) -> bool, why: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !what(&c.snapshot()) {
            assert!(Instant::now() < deadline, "{why}: {:?}", c.snapshot());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The soak's ack p99 spikes: the incident database held up for half a second held up
    /// the store writer, because the backlog released events only once their alerts were
    /// written. Now events leave the backlog once evaluated and their alerts wait in the
    /// alert queue: while the database is held, every job is still taken from the store
    /// writer, as long as the alerts fit the queue.
    #[test]
    fn a_held_incident_database_does_not_hold_up_the_store_writer_while_alerts_fit() {
        // 800 events (8 times the backlog) raising 1,598 alerts, all sent while held.
        let (_dir, incidents, c) = correlator_with_queues(10_000);
        let held = incidents.hold_writes();
        let returned = send_jobs(&c, 20);
        returned
            .recv_timeout(Duration::from_secs(60))
            .expect("the store writer waited on a held incident database");
        wait_for(&c, |s| s.backlog_events == 0, "evaluated while held");
        let snap = c.snapshot();
        assert_eq!(
            snap.events, 0,
            "counted as evaluated before their alerts are stored"
        );
        assert!(snap.alert_queue >= 20, "{snap:?}");
        drop(held);
        wait_for(&c, |s| s.events == 800, "written once released");
        assert_eq!(c.snapshot().alert_queue, 0);
        c.close(Duration::from_secs(10));
        assert_eq!(brute_force_alerts(&incidents), 800 - 2);
    }

    /// Back-pressure still reaches ingest: with the database held and the alert queue full,
    /// the correlator waits, the backlog fills, and the store writer waits in `committed`
    /// until the database is released; then everything is evaluated and written.
    #[test]
    fn a_full_alert_queue_holds_up_the_store_writer_until_the_database_is_released() {
        let (_dir, incidents, c) = correlator_with_queues(50);
        let held = incidents.hold_writes();
        let returned = send_jobs(&c, 20);
        // Both queues full: the first job's 38 alerts wait for the database, the second
        // job's 39 do not fit beside them (so the correlator waits), and the next two jobs
        // fill the backlog (a fifth would pass 100 events). Nothing drains while it is held.
        wait_for(
            &c,
            |s| s.alert_queue > 0 && s.backlog_events >= 80,
            "both queues full",
        );
        assert!(
            returned.try_recv().is_err(),
            "the store writer went on past two full queues: {:?}",
            c.snapshot()
        );
        drop(held);
        returned
            .recv_timeout(Duration::from_secs(60))
            .expect("the store writer still waits after the release");
        wait_for(&c, |s| s.events == 800, "written once released");
        c.close(Duration::from_secs(10));
        assert_eq!(brute_force_alerts(&incidents), 800 - 2);
    }

    #[test]
    fn windows_and_resend_marks_survive_a_clean_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/r.yml"), RULES).unwrap();
        let settings = CorrelationSettings {
            rules_dir: dir.path().join("rules"),
            state_file: Some(dir.path().join("correlation-state.json")),
            ..Default::default()
        };
        let t0 = Timestamp::now().nanos() - 120_000_000_000;
        let incidents = Arc::new(IncidentStore::open(&dir.path().join("inc"), 3600).unwrap());
        let c = Correlator::start(settings.clone(), incidents.clone()).unwrap();
        c.committed(&failures("probe-1", 1..=2, t0));
        c.close(Duration::from_secs(10));
        assert_eq!(
            brute_force_alerts(&incidents),
            0,
            "two failures are not brute force"
        );
        assert!(dir.path().join("correlation-state.json").exists());
        drop(c);

        let c = Correlator::start(settings, incidents.clone()).unwrap();
        // A resend of the same two is not counted again...
        c.committed(&failures("probe-1", 1..=2, t0));
        // ...and the third failure completes the window kept across the restart.
        c.committed(&failures("probe-1", 3..=3, t0));
        c.close(Duration::from_secs(10));
        assert_eq!(c.snapshot().resent_skipped, 2);
        assert_eq!(brute_force_alerts(&incidents), 1);
    }

    #[test]
    fn a_state_file_from_rsigma_keeps_its_resend_marks_and_drops_its_windows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("rules/r.yml"), RULES).unwrap();
        let state = dir.path().join("correlation-state.json");
        // Version 1: rsigma's own snapshot beside the marks.
        std::fs::write(
            &state,
            r#"{"engine":{"version":1,"windows":{},"last_alert":{},"event_buffers":{},"event_ref_buffers":{}},"last_seq":{"probe-1":2}}"#,
        )
        .unwrap();
        let settings = CorrelationSettings {
            rules_dir: dir.path().join("rules"),
            state_file: Some(state.clone()),
            ..Default::default()
        };
        let incidents = Arc::new(IncidentStore::open(&dir.path().join("inc"), 3600).unwrap());
        let c = Correlator::start(settings, incidents).unwrap();
        c.committed(&failures("probe-1", 1..=3, Timestamp::now().nanos()));
        c.close(Duration::from_secs(10));
        assert_eq!(c.snapshot().resent_skipped, 2);
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(saved["version"], STATE_VERSION);
        assert_eq!(saved["groups"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn an_unreadable_state_file_is_kept_aside_and_correlation_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("correlation-state.json");
        std::fs::write(&state, "{ not json").unwrap();
        let settings = CorrelationSettings {
            rules_dir: dir.path().join("none"),
            state_file: Some(state.clone()),
            ..Default::default()
        };
        let incidents = Arc::new(IncidentStore::open(&dir.path().join("inc"), 3600).unwrap());
        let c = Correlator::start(settings, incidents).unwrap();
        assert!(dir.path().join("correlation-state.json.bad").exists());
        c.close(Duration::from_secs(10));
        assert!(state.exists(), "a fresh state is saved at close");
    }
}
