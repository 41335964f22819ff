//! Prometheus metrics: a registry of [`MetricsSource`]s rendered in the text exposition format
//! 0.0.4, served by a small plain-HTTP listener (`GET /metrics`, anything else 404).
//!
//! Why plain HTTP, on loopback by default: the mutual-TLS API is for people and agents, each
//! with a certificate from the Palisade CA and a role; a Prometheus server is neither, and
//! scrape configs everywhere expect `http://host:port/metrics` on a separate port (9464 is the
//! conventional port for an application exporter). The listener serves nothing but counters
//! (no event content, no agent data beyond ids and times), is off unless `[metrics]` is
//! configured, and `127.0.0.1` keeps it local; scraping from another host means either a local
//! Prometheus agent or binding it to a management interface deliberately.
//!
//! Sources are plain values the collector already has ([`IngestMetrics`], the store, the
//! forwarders, [`ProcessMetrics`]); more are added by pushing into the `Vec` handed to
//! [`MetricsServer::start`]. Samples of one family written by several sources are grouped under
//! one HELP/TYPE header, as the format requires.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::ingest::IngestMetrics;
use crate::store::EventStore;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `[metrics]`: the Prometheus scrape listener. Absent = no listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the plain-HTTP scrape listener (`127.0.0.1:9464`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Most concurrent scrape connections; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a scraper has to send its request headers.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
}

fn default_max_connections() -> usize {
    16
}
fn default_header_read_timeout_secs() -> u64 {
    5
}

impl MetricsConfig {
    /// A config listening on `listen` with every default.
    pub fn new(listen: SocketAddr) -> Self {
        MetricsConfig {
            listen,
            max_connections: default_max_connections(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
        }
    }

    /// Range checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.header_read_timeout_secs == 0 {
            return Err(
                "metrics.max_connections and metrics.header_read_timeout_secs must be at least 1"
                    .into(),
            );
        }
        if !self.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %self.listen,
                "metrics listener is plain HTTP and not on loopback; restrict who can reach it"
            );
        }
        Ok(())
    }
}

/// Anything that contributes samples to a scrape. Called on a blocking thread for every scrape,
/// so it may read the store, but should stay cheap.
pub trait MetricsSource: Send + Sync {
    /// Writes this source's samples.
    fn write(&self, out: &mut MetricsWriter);
}

/// Upper bounds, in seconds, of the buckets of the disk-bound durations (the ingest queue's
/// wait, a group commit and its phases, the incident writer's record and flush calls): from
/// half a millisecond, where an fdatasync on a fast disk lands, to the 10 s that only a
/// stalled disk reaches. `+Inf` is implied.
pub const DISK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// A histogram of durations with fixed buckets, recorded with a few relaxed atomic additions
/// (no lock, no allocation): cheap enough for every group commit and every API answer.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Not cumulative: `buckets[i]` counts durations above `bounds[i - 1]` up to `bounds[i]`,
    /// the last one those above every bound.
    buckets: Box<[std::sync::atomic::AtomicU64]>,
    sum_nanos: std::sync::atomic::AtomicU64,
    count: std::sync::atomic::AtomicU64,
}

impl Histogram {
    /// An empty histogram with buckets up to each of `bounds` (increasing, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| Default::default()).collect(),
            sum_nanos: Default::default(),
            count: Default::default(),
        }
    }

    /// Counts one duration.
    pub fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = self
            .bounds
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(self.bounds.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Durations counted so far and their total.
    pub fn totals(&self) -> (u64, Duration) {
        (
            self.count.load(Ordering::Relaxed),
            Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        )
    }

    /// Writes the histogram as the series `name{labels}` (cumulative buckets, sum, count).
    pub fn write(&self, out: &mut MetricsWriter, name: &str, help: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter())
            .map(|(le, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (le, cumulative)
            })
            .collect();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        out.histogram(name, help, labels, &buckets, sum, cumulative);
    }
}

impl Default for Histogram {
    /// A histogram on [`DISK_BUCKETS`].
    fn default() -> Self {
        Histogram::new(DISK_BUCKETS)
    }
}

/// Metric type in the `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count (`_bucket`, `_sum`, `_count` samples).
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    samples: String,
}

/// Collects samples grouped by family; [`MetricsWriter::finish`] renders them.
#[derive(Debug, Default)]
pub struct MetricsWriter {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

/// Whether `name` is a valid metric or label name (`[a-zA-Z_:][a-zA-Z0-9_:]*`; labels without
/// `:`, which we never use).
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Appends a label value escaped for the exposition format (`\`, `"`, newline).
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str, out: &mut String) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as the format writes it (`NaN`, `+Inf`, integers without a fraction).
pub fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

impl MetricsWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Family {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        let i = match self.index.get(name) {
            Some(&i) => {
                debug_assert_eq!(self.families[i].kind, kind, "{name} registered twice");
                i
            }
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: String::new(),
                });
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    fn sample(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        value: &str,
    ) {
        self.suffixed_sample(name, "", help, kind, labels, value);
    }

    /// A sample of family `name` named `name` + `suffix` (a histogram's `_bucket`, `_sum`,
    /// `_count`).
    fn suffixed_sample(
        &mut self,
        name: &str,
        suffix: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        value: &str,
    ) {
        let f = self.family(name, help, kind);
        f.samples.push_str(name);
        f.samples.push_str(suffix);
        if !labels.is_empty() {
            f.samples.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k:?}");
                if i > 0 {
                    f.samples.push(',');
                }
                f.samples.push_str(k);
                f.samples.push_str("=\"");
                escape_label_value(v, &mut f.samples);
                f.samples.push('"');
            }
            f.samples.push('}');
        }
        f.samples.push(' ');
        f.samples.push_str(value);
        f.samples.push('\n');
    }

    /// One counter sample (name ends in `_total` by convention).
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(name, help, MetricType::Counter, labels, &value.to_string());
    }

    /// One counter sample with a fractional value (seconds of CPU time, say).
    pub fn counter_f64(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut v = String::new();
        format_value(value, &mut v);
        self.sample(name, help, MetricType::Counter, labels, &v);
    }

    /// One gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut v = String::new();
        format_value(value, &mut v);
        self.sample(name, help, MetricType::Gauge, labels, &v);
    }

    /// One histogram series: `buckets` are (upper bound, cumulative count) in increasing
    /// order, the last one `+Inf` (whose count is `count`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let kind = MetricType::Histogram;
        for (bound, n) in buckets {
            let mut le = String::new();
            format_value(*bound, &mut le);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.suffixed_sample(name, "_bucket", help, kind, &with_le, &n.to_string());
        }
        let mut v = String::new();
        format_value(sum, &mut v);
        self.suffixed_sample(name, "_sum", help, kind, labels, &v);
        self.suffixed_sample(name, "_count", help, kind, labels, &count.to_string());
    }

    /// The exposition text: each family's HELP and TYPE lines, then its samples.
    pub fn finish(self) -> String {
        let mut out = String::new();
        for f in self.families {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            escape_help(&f.help, &mut out);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
            out.push_str(&f.samples);
        }
        out
    }
}

/// Renders every source into one scrape body.
pub fn render(sources: &[Arc<dyn MetricsSource>]) -> String {
    let mut w = MetricsWriter::new();
    for s in sources {
        s.write(&mut w);
    }
    w.finish()
}

// ---------------------------------------------------------------------------------------------
// Sources

impl MetricsSource for IngestMetrics {
    fn write(&self, out: &mut MetricsWriter) {
        let r = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let counters = [
            (
                "palisade_ingest_batches_total",
                "Batches committed to the store.",
                r(&self.batches),
            ),
            (
                "palisade_ingest_events_total",
                "Events newly stored.",
                r(&self.accepted),
            ),
            (
                "palisade_ingest_duplicates_total",
                "Events dropped as duplicates of stored ones.",
                r(&self.duplicates),
            ),
            (
                "palisade_ingest_rejected_total",
                "Batches refused as malformed, oversized or from the wrong identity.",
                r(&self.rejected),
            ),
            (
                "palisade_ingest_queue_full_total",
                "Batches refused with 503 because the write queue was full.",
                r(&self.queue_full),
            ),
            (
                "palisade_ingest_commits_total",
                "Group commits (one fsync each).",
                r(&self.commits),
            ),
            (
                "palisade_ingest_store_errors_total",
                "Store write failures (the batches were not acknowledged).",
                r(&self.store_errors),
            ),
        ];
        for (name, help, v) in counters {
            out.counter(name, help, &[], v);
        }
        self.queue_wait.write(
            out,
            "palisade_ingest_queue_wait_seconds",
            "Time a batch waited in the write queue before its group's commit began.",
            &[],
        );
        self.commit_time.write(
            out,
            "palisade_ingest_commit_seconds",
            "Time a group commit took (deduplication, segment files, fdatasync, index); its \
             phases are palisade_store_write_seconds.",
            &[],
        );
    }
}

/// Store size and per-agent figures, read from the store at each scrape.
pub struct StoreMetrics {
    store: Arc<dyn EventStore>,
}

impl std::fmt::Debug for StoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMetrics").finish_non_exhaustive()
    }
}

impl StoreMetrics {
    /// A source reading `store`.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        StoreMetrics { store }
    }
}

fn unix_secs(t: palisade_wire::Timestamp) -> f64 {
    t.nanos() as f64 / 1e9
}

/// Midnight UTC of a `YYYY-MM-DD` day, in Unix seconds.
fn day_start_secs(day: &str) -> Option<f64> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() as f64)
}

impl MetricsSource for StoreMetrics {
    fn write(&self, out: &mut MetricsWriter) {
        match self.store.stats() {
            Ok(s) => {
                out.gauge(
                    "palisade_store_events",
                    "Events held in the store (all retained days).",
                    &[],
                    s.events as f64,
                );
                out.gauge(
                    "palisade_store_bytes",
                    "Bytes the store occupies on disk.",
                    &[],
                    s.size_bytes as f64,
                );
                out.gauge(
                    "palisade_store_days",
                    "Days of events held.",
                    &[],
                    s.days.len() as f64,
                );
                if let Some(t) = s.days.first().and_then(|d| day_start_secs(d)) {
                    out.gauge(
                        "palisade_store_oldest_day_timestamp_seconds",
                        "Start (UTC midnight, Unix seconds) of the oldest day held.",
                        &[],
                        t,
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read store statistics"),
        }
        match self.store.agents() {
            Ok(agents) => {
                out.gauge(
                    "palisade_agents",
                    "Agents ever seen.",
                    &[],
                    agents.len() as f64,
                );
                for a in &agents {
                    let l: &[(&str, &str)] = &[("agent", &a.id)];
                    out.gauge(
                        "palisade_agent_last_seen_seconds",
                        "When the agent's latest batch arrived (Unix seconds, collector clock).",
                        l,
                        unix_secs(a.last_seen),
                    );
                    if let Some(h) = a.last_heartbeat {
                        out.gauge(
                            "palisade_agent_last_heartbeat_seconds",
                            "Timestamp of the agent's latest heartbeat event (Unix seconds).",
                            l,
                            unix_secs(h),
                        );
                    }
                    out.counter(
                        "palisade_agent_events_total",
                        "Events stored from the agent.",
                        l,
                        a.events,
                    );
                    out.counter(
                        "palisade_agent_duplicates_total",
                        "Duplicate events from the agent dropped by the store.",
                        l,
                        a.duplicates,
                    );
                    out.counter(
                        "palisade_agent_dropped_total",
                        "Events the agent reported lost from its full spool (gap events).",
                        l,
                        a.dropped,
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the agent list"),
        }
    }
}

/// Process figures: resident memory, open descriptors, start time, uptime, version.
#[derive(Debug)]
pub struct ProcessMetrics {
    started: Instant,
    start_unix_secs: f64,
}

impl Default for ProcessMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessMetrics {
    /// Uptime counts from now.
    pub fn new() -> Self {
        let start_unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        ProcessMetrics {
            started: Instant::now(),
            start_unix_secs,
        }
    }
}

/// Resident set size in bytes, from `/proc/self/status` (Linux); `None` elsewhere.
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

impl MetricsSource for ProcessMetrics {
    fn write(&self, out: &mut MetricsWriter) {
        if let Some(rss) = resident_bytes() {
            out.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &[],
                rss as f64,
            );
        }
        if let Some(n) = open_fds() {
            out.gauge("process_open_fds", "Open file descriptors.", &[], n as f64);
        }
        out.gauge(
            "process_start_time_seconds",
            "Start time of the collector (Unix seconds).",
            &[],
            self.start_unix_secs,
        );
        out.gauge(
            "palisade_uptime_seconds",
            "Seconds since the collector started.",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        out.gauge(
            "palisade_build_info",
            "Always 1; the collector's version as a label.",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The listener

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

async fn handle(sources: Arc<Vec<Arc<dyn MetricsSource>>>, req: Request<Incoming>) -> Resp {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    }
    // Sources read the store: keep that off the async workers.
    match tokio::task::spawn_blocking(move || render(&sources)).await {
        Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
        Err(e) => {
            tracing::error!(error = %e, "metrics rendering failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "metrics unavailable\n",
            )
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves, then gives open connections
/// up to 2 s to finish.
pub async fn run(
    listener: TcpListener,
    sources: Vec<Arc<dyn MetricsSource>>,
    config: MetricsConfig,
    shutdown: impl Future<Output = ()>,
) {
    let sources = Arc::new(sources);
    let max = config.max_connections.max(1);
    let limit = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    while let Some((permit, tcp, peer)) =
        palisade_wire::server::accept_bounded(&listener, &limit, &mut shutdown, "metrics").await
    {
        let sources = sources.clone();
        let stop = stop_rx.clone();
        let timeout = Duration::from_secs(config.header_read_timeout_secs.max(1));
        tokio::spawn(async move {
            connection(tcp, peer, sources, timeout, stop).await;
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(2), limit.acquire_many(all)).await;
    tracing::info!("metrics listener stopped");
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    sources: Arc<Vec<Arc<dyn MetricsSource>>>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let svc = service_fn(move |req| {
        let sources = sources.clone();
        async move { Ok::<_, Infallible>(handle(sources, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The running metrics listener (or none, when `[metrics]` is absent).
#[derive(Debug)]
pub struct MetricsServer {
    running: Option<(SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl MetricsServer {
    /// Binds `config.listen` and serves `sources` there; `None` starts nothing.
    pub async fn start(
        config: Option<&MetricsConfig>,
        sources: Vec<Arc<dyn MetricsSource>>,
    ) -> std::io::Result<Self> {
        let Some(config) = config else {
            return Ok(MetricsServer { running: None });
        };
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for metrics on {}: {e}", config.listen),
            )
        })?;
        let local = listener.local_addr()?;
        tracing::info!(listen = %local, "metrics listener serving http://{local}/metrics");
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(run(listener, sources, config.clone(), async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        Ok(MetricsServer {
            running: Some((local, tx, task)),
        })
    }

    /// The bound address, if running.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.0)
    }

    /// Stops the listener and waits for it.
    pub async fn stop(self) {
        if let Some((_, tx, task)) = self.running {
            let _ = tx.send(true);
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl MetricsSource for Fixed {
        fn write(&self, out: &mut MetricsWriter) {
            out.counter("a_total", "A \\ thing\nmore", &[("k", "v\"\\\n")], 3);
            out.gauge("b", "B.", &[], 0.5);
            out.counter("a_total", "A \\ thing\nmore", &[("k", "w")], 4);
        }
    }

    #[test]
    fn families_are_grouped_and_everything_is_escaped() {
        let text = render(&[Arc::new(Fixed) as Arc<dyn MetricsSource>]);
        assert_eq!(
            text,
            "# HELP a_total A \\\\ thing\\nmore\n# TYPE a_total counter\n\
             a_total{k=\"v\\\"\\\\\\n\"} 3\na_total{k=\"w\"} 4\n\
             # HELP b B.\n# TYPE b gauge\nb 0.5\n"
        );
    }

    #[test]
    fn values_use_the_exposition_spelling() {
        let f = |v: f64| {
            let mut s = String::new();
            format_value(v, &mut s);
            s
        };
        assert_eq!(f(3.0), "3");
        assert_eq!(f(-2.0), "-2");
        assert_eq!(f(1.25), "1.25");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("palisade_ingest_events_total"));
        assert!(valid_name("a:b"));
        assert!(!valid_name("9a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn day_start_is_utc_midnight() {
        assert_eq!(day_start_secs("1970-01-02"), Some(86_400.0));
        assert_eq!(day_start_secs("nope"), None);
    }

    #[test]
    fn ingest_and_process_sources_write_their_families() {
        let m = IngestMetrics::default();
        m.accepted.store(7, Ordering::Relaxed);
        let text = render(&[
            Arc::new(m) as Arc<dyn MetricsSource>,
            Arc::new(ProcessMetrics::new()),
        ]);
        assert!(
            text.contains("\npalisade_ingest_events_total 7\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE palisade_ingest_store_errors_total counter"));
        assert!(text.contains("# TYPE palisade_uptime_seconds gauge"));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
