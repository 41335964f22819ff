//! Syslog forwarding to a SIEM: every stored event that passes the filters becomes one RFC 5424
//! message, sent over one TCP or TLS connection with octet-counting framing
//! (`LEN SP MSG`, RFC 6587 §3.4.1 / RFC 5425 §4.3), which every SIEM's syslog input accepts and
//! which, unlike newline framing, survives newlines inside the message.
//!
//! ```text
//! <164>1 2024-05-01T12:00:00.123456Z web-1 palisade - palisade.alert [palisade@32473 agent="probe-1"
//!   id="…" kind="alert" severity="high" rule="net.scan" src="10.0.0.5:4242" dst="10.0.0.9:22"] BOM{ECS JSON}
//! ```
//!
//! The store writer calls [`SyslogForwarder::committed`]; it formats the selected events and
//! pushes them into a bounded queue without ever waiting: a full queue drops the newest
//! messages and counts them (`dropped`, WARN at most every 10 s), so a slow or absent SIEM can
//! never slow ingestion. One `syslog-forward` thread drains the queue, reconnecting with capped,
//! jittered exponential back-off; messages wait in the queue meanwhile. Syslog over TCP has no
//! acknowledgements, so delivery is best effort: before each write the connection is checked for
//! a close by the peer (a SIEM never sends anything, so readable = closed), and a chunk whose write
//! failed is sent again once on the next connection (the SIEM may then see a few messages twice).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_wire::batch::Batch;
use palisade_wire::tls::{load_certs, load_key, TlsError};
use palisade_wire::{Event, EventKind, Severity};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde::{Deserialize, Deserializer};

use crate::ingest::CommitSink;
use crate::metrics::{MetricsSource, MetricsWriter};

/// Our private enterprise number in SD-IDs. 32473 is the number RFC 5612 reserves for
/// documentation; a deployment that registers its own PEN changes it here.
pub const SD_ID: &str = "palisade@32473";

/// APP-NAME of every message.
pub const APP_NAME: &str = "palisade";

/// Most messages taken from the queue and written with one `write_all`.
const CHUNK_MESSAGES: usize = 512;
/// Most bytes in one chunk (a chunk may exceed it by one message).
const CHUNK_BYTES: usize = 1 << 20;
/// First reconnect delay; doubled per failure up to `reconnect_max_secs`.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// How often a waiting thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Least time between two "queue full" warnings.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Errors that keep the forwarder from starting (its configuration is unusable).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A setting is out of range or inconsistent.
    #[error("forward.syslog: {0}")]
    Config(String),
    /// CA, certificate or key file unusable.
    #[error("forward.syslog TLS material: {0}")]
    Tls(#[from] TlsError),
    /// rustls refused the material.
    #[error("forward.syslog TLS setup ({context}): {source}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The forwarding thread could not be started.
    #[error("cannot start the syslog forwarding thread: {0}")]
    Thread(io::Error),
}

/// Trouble with one connection attempt or write; the forwarder logs it and retries.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot resolve syslog address {address}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("syslog address {address} resolves to no address")]
    NoAddress { address: String },
    #[error("cannot connect to syslog server {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("TLS handshake with syslog server {address} failed: {source}")]
    Handshake { address: String, source: io::Error },
    #[error("TLS setup for syslog server {address}: {source}")]
    Tls {
        address: String,
        source: rustls::Error,
    },
    #[error("write to syslog server {address} failed: {source}")]
    Write { address: String, source: io::Error },
}

/// How the connection to the SIEM is made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP (RFC 6587). Only on a trusted network segment.
    #[default]
    Tcp,
    /// TLS (RFC 5425): the SIEM's certificate is verified against `ca`.
    Tls,
}

/// Syslog facility (RFC 5424 §6.2.1); its code times 8 plus the severity is the PRI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)] // the names are the standard facility keywords
pub enum Facility {
    Kern = 0,
    User = 1,
    Mail = 2,
    Daemon = 3,
    Auth = 4,
    Syslog = 5,
    Lpr = 6,
    News = 7,
    Uucp = 8,
    Cron = 9,
    Authpriv = 10,
    Ftp = 11,
    Ntp = 12,
    Security = 13,
    Console = 14,
    Clock = 15,
    Local0 = 16,
    Local1 = 17,
    Local2 = 18,
    Local3 = 19,
    Local4 = 20,
    Local5 = 21,
    Local6 = 22,
    Local7 = 23,
}

impl Facility {
    /// The numeric facility code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// `[forward.syslog]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// The SIEM's syslog input, `host:port` (resolved again at every connection attempt).
    pub address: String,
    /// `tcp` (RFC 6587) or `tls` (RFC 5425).
    #[serde(default)]
    pub transport: Transport,
    /// CA certificate (PEM) that must have signed the SIEM's certificate. Required for `tls`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to the SIEM, if it asks for one (with `key`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Name the SIEM's certificate must carry; default: the host part of `address`.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Syslog facility of every message (`local0` … `local7`, `auth`, `security`, …).
    #[serde(default = "default_facility")]
    pub facility: Facility,
    /// Only events at least this severe (`info`, `low`, `medium`, `high`, `critical` or 1..5).
    #[serde(default = "default_min_severity", deserialize_with = "de_severity")]
    pub min_severity: Severity,
    /// Only these event kinds (`alert`, `integrity`, `palisade.flow`, …); empty = every kind.
    #[serde(default, deserialize_with = "de_kinds")]
    pub kinds: Vec<EventKind>,
    /// Messages waiting for the SIEM; when full, new messages are dropped and counted.
    #[serde(default = "default_queue_events")]
    pub queue_events: usize,
    /// Longest message sent, in bytes; longer events are dropped and counted (many SIEMs cut
    /// or refuse long messages; RFC 5425 only promises 2,048).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Longest wait between two connection attempts, in seconds (back-off doubles up to it).
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// Seconds allowed for the TCP connection and the TLS handshake.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds a write may block (a SIEM that stops reading); then the connection is replaced.
    #[serde(default = "default_write_timeout_secs")]
    pub write_timeout_secs: u64,
}

fn default_facility() -> Facility {
    Facility::Local4
}
fn default_min_severity() -> Severity {
    Severity::Info
}
fn default_queue_events() -> usize {
    100_000
}
fn default_max_message_bytes() -> usize {
    64 * 1024
}
fn default_reconnect_max_secs() -> u64 {
    30
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_write_timeout_secs() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SeverityRepr {
    Number(u64),
    Name(String),
}

fn de_severity<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    match SeverityRepr::deserialize(d)? {
        SeverityRepr::Number(n) => Severity::from_number(n)
            .ok_or_else(|| serde::de::Error::custom(format!("severity {n} is not in 1..=5"))),
        SeverityRepr::Name(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn de_kinds<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EventKind>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl SyslogConfig {
    /// A config for `address` with every default (plain TCP).
    pub fn new(address: impl Into<String>) -> Self {
        SyslogConfig {
            address: address.into(),
            transport: Transport::Tcp,
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            facility: default_facility(),
            min_severity: default_min_severity(),
            kinds: Vec::new(),
            queue_events: default_queue_events(),
            max_message_bytes: default_max_message_bytes(),
            reconnect_max_secs: default_reconnect_max_secs(),
            connect_timeout_secs: default_connect_timeout_secs(),
            write_timeout_secs: default_write_timeout_secs(),
        }
    }

    /// The file paths, for resolving them against the config file's directory.
    pub fn paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        [self.ca.as_mut(), self.cert.as_mut(), self.key.as_mut()]
            .into_iter()
            .flatten()
    }

    /// Range and consistency checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        let host = split_host(&self.address).ok_or_else(|| {
            format!(
                "forward.syslog.address {:?} must be host:port",
                self.address
            )
        })?;
        if host.is_empty() {
            return Err(format!(
                "forward.syslog.address {:?} has no host",
                self.address
            ));
        }
        if self.queue_events == 0 {
            return Err("forward.syslog.queue_events must be at least 1".into());
        }
        if self.max_message_bytes < 480 {
            // RFC 5424 §6.1: every receiver takes 480 octets; less cannot hold our header.
            return Err("forward.syslog.max_message_bytes must be at least 480".into());
        }
        if self.reconnect_max_secs == 0
            || self.connect_timeout_secs == 0
            || self.write_timeout_secs == 0
        {
            return Err(
                "forward.syslog reconnect_max_secs, connect_timeout_secs and write_timeout_secs must be at least 1"
                    .into(),
            );
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("forward.syslog: cert and key go together".into());
        }
        match self.transport {
            Transport::Tls if self.ca.is_none() => Err(
                "forward.syslog: transport = \"tls\" needs ca (the CA that signed the SIEM's certificate)"
                    .into(),
            ),
            Transport::Tcp
                if self.ca.is_some() || self.cert.is_some() || self.server_name.is_some() =>
            {
                Err("forward.syslog: ca, cert, key and server_name need transport = \"tls\"".into())
            }
            _ => Ok(()),
        }
    }

    fn accepts(&self, event: &Event) -> bool {
        event.event.severity >= self.min_severity
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind()))
    }
}

/// The host part of `host:port` / `[v6]:port`, if a port is present.
fn split_host(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some(
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host),
    )
}

// ---------------------------------------------------------------------------------------------
// Message format

/// Our severity (1 info … 5 critical) as a syslog severity (6 informational … 2 critical).
pub fn syslog_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 6,
        Severity::Low => 5,
        Severity::Medium => 4,
        Severity::High => 3,
        Severity::Critical => 2,
    }
}

/// PRI = facility × 8 + syslog severity.
pub fn pri(facility: Facility, severity: Severity) -> u8 {
    facility.code() * 8 + syslog_severity(severity)
}

/// Appends `value` as an SD-PARAM value: `"`, `\` and `]` escaped with a backslash (RFC 5424
/// §6.3.3).
pub fn escape_param_value(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Appends a header field (HOSTNAME, …): printable US-ASCII without space, at most `max`
/// characters, anything else replaced by `_`; empty becomes the NILVALUE `-`.
fn push_header_field(value: &str, max: usize, out: &mut String) {
    let start = out.len();
    for c in value.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c } else { '_' });
    }
    if out.len() == start {
        out.push('-');
    }
}

fn endpoint(e: Option<&palisade_wire::event::Endpoint>) -> Option<String> {
    let e = e?;
    let ip = e.ip?;
    Some(match e.port {
        Some(port) => SocketAddr::new(ip, port).to_string(),
        None => ip.to_string(),
    })
}

/// The RFC 5424 message for `event`, whose ECS JSON is `raw`: header, one SD element, then BOM
/// and the JSON as MSG.
pub fn format_message(event: &Event, raw: &[u8], facility: Facility) -> Vec<u8> {
    let mut head = String::with_capacity(320);
    let ts = chrono::DateTime::from_timestamp_nanos(event.timestamp.nanos())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let _ = write!(head, "<{}>1 {ts} ", pri(facility, event.event.severity));
    let host = event
        .host
        .as_ref()
        .map(|h| h.name.as_str())
        .filter(|n| !n.is_empty())
        .or_else(|| event.observer.as_ref().and_then(|o| o.hostname.as_deref()))
        .or_else(|| event.observer.as_ref().map(|o| o.name.as_str()))
        .filter(|n| !n.is_empty())
        .unwrap_or(&event.agent.id);
    push_header_field(host, 255, &mut head);
    head.push(' ');
    head.push_str(APP_NAME);
    head.push_str(" - ");
    push_header_field(event.kind().dataset(), 32, &mut head);
    head.push_str(" [");
    head.push_str(SD_ID);
    let mut param = |name: &str, value: &str| {
        head.push(' ');
        head.push_str(name);
        head.push_str("=\"");
        escape_param_value(value, &mut head);
        head.push('"');
    };
    param("agent", &event.agent.id);
    if !event.event.id.is_empty() {
        param("id", &event.event.id);
    }
    param("kind", event.kind().name());
    param("severity", event.event.severity.name());
    if let Some(rule) = event
        .rule
        .as_ref()
        .and_then(|r| r.id.as_deref().or(r.name.as_deref()))
    {
        param("rule", rule);
    }
    if let Some(src) = endpoint(event.source.as_ref()) {
        param("src", &src);
    }
    if let Some(dst) = endpoint(event.destination.as_ref()) {
        param("dst", &dst);
    }
    head.push_str("] \u{feff}");
    let mut msg = Vec::with_capacity(head.len() + raw.len());
    msg.extend_from_slice(head.as_bytes());
    msg.extend_from_slice(raw);
    msg
}

/// Octet-counting frame: the message's length in decimal, a space, the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let len = message.len().to_string();
    let mut out = Vec::with_capacity(len.len() + 1 + message.len());
    out.extend_from_slice(len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(message);
    out
}

// ---------------------------------------------------------------------------------------------
// The forwarder

/// Counters of one forwarder (monotonic since start).
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Messages written to the SIEM's connection.
    pub sent: AtomicU64,
    /// Messages lost: queue full, too long, or a write failed twice.
    pub dropped: AtomicU64,
    /// Connections made after the first one.
    pub reconnects: AtomicU64,
    /// Failed connection attempts, handshakes and writes.
    pub errors: AtomicU64,
}

/// A point-in-time copy of [`ForwardCounters`] plus the queue state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardSnapshot {
    /// Messages written.
    pub sent: u64,
    /// Messages lost.
    pub dropped: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Failed attempts and writes.
    pub errors: u64,
    /// Messages waiting now (in the queue or taken for the next write).
    pub queued: u64,
    /// Whether a connection is open now.
    pub connected: bool,
}

struct Shared {
    queue: Mutex<VecDeque<Vec<u8>>>,
    ready: Condvar,
    capacity: usize,
    /// Messages the thread took from the queue and has not written yet.
    in_flight: AtomicU64,
    stop: AtomicBool,
    /// When `stop` was set; the thread keeps delivering until then + grace.
    deadline: Mutex<Option<Instant>>,
    connected: AtomicBool,
    counters: ForwardCounters,
    started: Instant,
    /// Milliseconds since `started` of the last drop warning (0 = never).
    last_drop_warn_ms: AtomicU64,
    drops_since_warn: AtomicU64,
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_dropped(&self, n: u64, reason: &'static str) {
        if n == 0 {
            return;
        }
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        self.drops_since_warn.fetch_add(n, Ordering::Relaxed);
        let now_ms = (self.started.elapsed().as_millis() as u64).max(1);
        let last = self.last_drop_warn_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= DROP_WARN_EVERY.as_millis() as u64;
        // Only the caller that wins the exchange logs, with every drop since the last warning.
        if due
            && self
                .last_drop_warn_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let n = self.drops_since_warn.swap(0, Ordering::Relaxed);
            tracing::warn!(
                dropped = n,
                reason,
                total = self.counters.dropped.load(Ordering::Relaxed),
                "syslog forwarder dropped messages"
            );
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn past_deadline(&self) -> bool {
        self.stopping()
            && self
                .deadline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|d| Instant::now() >= d)
    }
}

/// Forwards committed events to a SIEM as RFC 5424 syslog (see the module documentation).
pub struct SyslogForwarder {
    config: Arc<SyslogConfig>,
    shared: Arc<Shared>,
    /// Highest sequence seen per agent: a batch retried by its agent after a lost answer reaches
    /// the sinks again, and must not reach the SIEM twice.
    last_sequence: Mutex<HashMap<String, u64>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SyslogForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogForwarder")
            .field("address", &self.config.address)
            .field("transport", &self.config.transport)
            .finish_non_exhaustive()
    }
}

impl SyslogForwarder {
    /// Checks `config`, loads the TLS material and starts the forwarding thread, which connects
    /// at once and keeps retrying if the SIEM is not there.
    pub fn start(config: SyslogConfig) -> Result<Self, ForwardError> {
        config.check().map_err(ForwardError::Config)?;
        let tls = match config.transport {
            Transport::Tls => Some(Arc::new(tls_config(&config)?)),
            Transport::Tcp => None,
        };
        let server_name = match config.transport {
            Transport::Tls => {
                let name = match &config.server_name {
                    Some(n) => n.clone(),
                    None => split_host(&config.address).unwrap_or_default().to_string(),
                };
                Some(ServerName::try_from(name.clone()).map_err(|e| {
                    ForwardError::Config(format!("server name {name:?} is not usable: {e}"))
                })?)
            }
            Transport::Tcp => None,
        };
        let config = Arc::new(config);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity: config.queue_events,
            in_flight: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            deadline: Mutex::new(None),
            connected: AtomicBool::new(false),
            counters: ForwardCounters::default(),
            started: Instant::now(),
            last_drop_warn_ms: AtomicU64::new(0),
            drops_since_warn: AtomicU64::new(0),
        });
        let link = Link {
            config: config.clone(),
            tls,
            server_name,
        };
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("syslog-forward".into())
                .spawn(move || drain(shared, link))
                .map_err(ForwardError::Thread)?
        };
        tracing::info!(
            address = %config.address,
            transport = ?config.transport,
            min_severity = %config.min_severity,
            queue_events = config.queue_events,
            "syslog forwarder started"
        );
        Ok(SyslogForwarder {
            config,
            shared,
            last_sequence: Mutex::new(HashMap::new()),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Counters and queue state now.
    pub fn snapshot(&self) -> ForwardSnapshot {
        let c = &self.shared.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ForwardSnapshot {
            sent: r(&c.sent),
            dropped: r(&c.dropped),
            reconnects: r(&c.reconnects),
            errors: r(&c.errors),
            queued: {
                // Read both under the lock: the thread moves messages from one to the other.
                let q = self.shared.lock_queue();
                q.len() as u64 + self.shared.in_flight.load(Ordering::Relaxed)
            },
            connected: self.shared.connected.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread after it delivered what is queued, waiting at most `grace`; what is
    /// still queued then is lost (logged at ERROR). Blocks; later calls return at once.
    pub fn close(&self, grace: Duration) {
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ready.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("syslog forwarding thread panicked");
            }
        }
    }

    /// Formats the events of `batches` this forwarder wants, at most `room` of them; returns the
    /// frames and how many more were wanted but had no room, and how many were too long.
    fn select(&self, batches: &[Batch], room: usize) -> (Vec<Vec<u8>>, u64, u64) {
        let mut frames = Vec::new();
        let (mut no_room, mut too_long) = (0u64, 0u64);
        let mut seen = self.last_sequence.lock().unwrap_or_else(|p| p.into_inner());
        for batch in batches {
            let last = seen.get(&batch.agent_id).copied();
            let mut high = last;
            for e in &batch.events {
                let seq = e.event.event.sequence;
                if last.is_some_and(|l| seq <= l) {
                    continue;
                }
                high = Some(high.map_or(seq, |h| h.max(seq)));
                if !self.config.accepts(&e.event) {
                    continue;
                }
                if frames.len() >= room {
                    no_room += 1;
                    continue;
                }
                let msg = format_message(&e.event, &e.raw, self.config.facility);
                if msg.len() > self.config.max_message_bytes {
                    too_long += 1;
                    continue;
                }
                frames.push(frame(&msg));
            }
            if let Some(h) = high {
                if last != Some(h) {
                    seen.insert(batch.agent_id.clone(), h);
                }
            }
        }
        (frames, no_room, too_long)
    }
}

impl Drop for SyslogForwarder {
    fn drop(&mut self) {
        // Without `close` the thread still stops (after a short grace), it is just not awaited.
        let mut deadline = self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if deadline.is_none() {
            *deadline = Some(Instant::now() + Duration::from_secs(2));
        }
        drop(deadline);
        self.shared.stop.store(true, Ordering::Release);
        self.shared.ready.notify_all();
    }
}

impl CommitSink for SyslogForwarder {
    fn committed(&self, batches: &Arc<[Batch]>) {
        let room = {
            let q = self.shared.lock_queue();
            self.shared.capacity.saturating_sub(q.len())
        };
        // Formatting happens outside the lock, so the drain thread is never held up by it.
        let (mut frames, mut no_room, too_long) = self.select(batches, room);
        if !frames.is_empty() {
            let mut q = self.shared.lock_queue();
            let room = self.shared.capacity.saturating_sub(q.len());
            if frames.len() > room {
                no_room += (frames.len() - room) as u64;
                frames.truncate(room);
            }
            q.extend(frames);
            drop(q);
            self.shared.ready.notify_one();
        }
        self.shared.count_dropped(no_room, "queue full");
        self.shared
            .count_dropped(too_long, "longer than max_message_bytes");
    }
}

impl MetricsSource for SyslogForwarder {
    fn write(&self, out: &mut MetricsWriter) {
        let s = self.snapshot();
        let l: &[(&str, &str)] = &[("output", "syslog")];
        out.counter(
            "palisade_forward_sent_total",
            "Messages written to the forwarding destination.",
            l,
            s.sent,
        );
        out.counter(
            "palisade_forward_dropped_total",
            "Messages lost by a forwarder: queue full, too long, or written twice without success.",
            l,
            s.dropped,
        );
        out.counter(
            "palisade_forward_reconnects_total",
            "Connections a forwarder made after its first.",
            l,
            s.reconnects,
        );
        out.counter(
            "palisade_forward_errors_total",
            "Failed connection attempts, handshakes and writes of a forwarder.",
            l,
            s.errors,
        );
        out.gauge(
            "palisade_forward_queue_events",
            "Messages waiting in a forwarder's queue.",
            l,
            s.queued as f64,
        );
        out.gauge(
            "palisade_forward_queue_capacity_events",
            "Size of a forwarder's queue.",
            l,
            self.shared.capacity as f64,
        );
        out.gauge(
            "palisade_forward_connected",
            "1 while a forwarder holds an open connection.",
            l,
            if s.connected { 1.0 } else { 0.0 },
        );
    }
}

fn tls_config(config: &SyslogConfig) -> Result<ClientConfig, ForwardError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &config.ca {
        for cert in load_certs(ca)? {
            roots.add(cert).map_err(|source| ForwardError::Rustls {
                context: format!("CA certificate {}", ca.display()),
                source,
            })?;
        }
    }
    // TLS 1.2 as well as 1.3: many SIEM syslog inputs still stop at 1.2.
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|source| ForwardError::Rustls {
                context: "protocol versions".into(),
                source,
            })?
            .with_root_certificates(roots);
    match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| ForwardError::Rustls {
                context: format!("client certificate {}", cert.display()),
                source,
            }),
        _ => Ok(builder.with_no_client_auth()),
    }
}

// ---------------------------------------------------------------------------------------------
// The connection and the drain loop

struct Link {
    config: Arc<SyslogConfig>,
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<ServerName<'static>>,
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Link {
    fn connect(&self) -> Result<Conn, LinkError> {
        let address = &self.config.address;
        let timeout = Duration::from_secs(self.config.connect_timeout_secs);
        let addrs: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|source| LinkError::Resolve {
                address: address.clone(),
                source,
            })?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some(source)) => {
                return Err(LinkError::Connect {
                    address: address.clone(),
                    source,
                })
            }
            (None, None) => {
                return Err(LinkError::NoAddress {
                    address: address.clone(),
                })
            }
        };
        let io_err = |source| LinkError::Connect {
            address: address.clone(),
            source,
        };
        tcp.set_nodelay(true).map_err(io_err)?;
        tcp.set_write_timeout(Some(Duration::from_secs(self.config.write_timeout_secs)))
            .map_err(io_err)?;
        let (Some(tls), Some(name)) = (&self.tls, &self.server_name) else {
            return Ok(Conn::Plain(tcp));
        };
        let mut conn =
            ClientConnection::new(tls.clone(), name.clone()).map_err(|source| LinkError::Tls {
                address: address.clone(),
                source,
            })?;
        let mut tcp = tcp;
        tcp.set_read_timeout(Some(timeout)).map_err(io_err)?;
        let handshake_err = |source| LinkError::Handshake {
            address: address.clone(),
            source,
        };
        // Finish the handshake now, so a certificate problem shows as such and not as a write
        // error later.
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(handshake_err)?;
        }
        Ok(Conn::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    /// Whether the SIEM closed the connection. It never sends application data, so anything
    /// but "nothing to read yet" means the connection is gone (TLS: session tickets and other
    /// handshake messages are consumed by rustls and do not count).
    fn peer_closed(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return true;
        }
        let mut buf = [0u8; 512];
        let closed = match self {
            Conn::Plain(s) => match s.peek(&mut buf[..1]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            },
            Conn::Tls(s) => {
                let mut closed = false;
                // Unexpected data from the SIEM is read and ignored, a bounded amount per check.
                for _ in 0..16 {
                    match s.read(&mut buf) {
                        Ok(0) => closed = true,
                        Ok(_) => continue,
                        Err(e) => closed = e.kind() != io::ErrorKind::WouldBlock,
                    }
                    break;
                }
                closed
            }
        };
        closed || self.tcp().set_nonblocking(false).is_err()
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(bytes),
            Conn::Tls(s) => {
                s.write_all(bytes)?;
                s.flush()
            }
        }
    }

    fn close(self) {
        if let Conn::Tls(mut s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}

/// Capped exponential back-off with equal jitter: half the delay fixed, half random, so a
/// fleet of collectors does not reconnect in step after a SIEM restart.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: BACKOFF_START,
            max,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    fn delay(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        let jitter_ms = getrandom::u64().unwrap_or(0) % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter_ms)
    }
}

/// A message taken from the queue and not yet written; `retried` once it was in a failed write.
struct Pending {
    frame: Vec<u8>,
    retried: bool,
}

fn sleep_unless_stopped(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !shared.stopping() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(POLL));
    }
}

fn drain(shared: Arc<Shared>, link: Link) {
    let address = link.config.address.clone();
    let mut backoff = Backoff::new(Duration::from_secs(link.config.reconnect_max_secs));
    let mut conn: Option<Conn> = None;
    let mut ever_connected = false;
    let mut pending: Vec<Pending> = Vec::new();
    let mut chunk: Vec<u8> = Vec::new();
    loop {
        if shared.stopping() {
            let empty = pending.is_empty() && shared.lock_queue().is_empty();
            if empty || conn.is_none() || shared.past_deadline() {
                break;
            }
        }
        // 1. A connection before taking anything from the queue, so that while the SIEM is away
        //    the queue (and its drop count) holds everything waiting.
        if conn.is_none() {
            match link.connect() {
                Ok(c) => {
                    if ever_connected {
                        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    ever_connected = true;
                    backoff.reset();
                    shared.connected.store(true, Ordering::Relaxed);
                    tracing::info!(%address, "syslog forwarder connected");
                    conn = Some(c);
                }
                Err(e) => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.delay();
                    tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "syslog forwarder cannot connect");
                    sleep_unless_stopped(&shared, delay);
                    continue;
                }
            }
        }
        // 2. Work: what a failed write left, else the next chunk of the queue.
        if pending.is_empty() {
            let mut q = shared.lock_queue();
            if q.is_empty() && !shared.stopping() {
                q = shared
                    .ready
                    .wait_timeout(q, POLL)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            let mut bytes = 0;
            while pending.len() < CHUNK_MESSAGES && bytes < CHUNK_BYTES {
                let Some(frame) = q.pop_front() else { break };
                bytes += frame.len();
                pending.push(Pending {
                    frame,
                    retried: false,
                });
            }
            shared
                .in_flight
                .store(pending.len() as u64, Ordering::Relaxed);
            drop(q);
            if pending.is_empty() {
                continue;
            }
        }
        // 3. Write the chunk on a connection the SIEM has not closed.
        let Some(c) = conn.as_mut() else { continue };
        if c.peer_closed() {
            tracing::warn!(%address, "syslog server closed the connection; reconnecting");
            shared.connected.store(false, Ordering::Relaxed);
            conn = None;
            continue;
        }
        chunk.clear();
        for p in &pending {
            chunk.extend_from_slice(&p.frame);
        }
        match c.write_all(&chunk) {
            Ok(()) => {
                shared
                    .counters
                    .sent
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                pending.clear();
                shared.in_flight.store(0, Ordering::Relaxed);
            }
            Err(source) => {
                let e = LinkError::Write {
                    address: address.clone(),
                    source,
                };
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                shared.connected.store(false, Ordering::Relaxed);
                conn = None;
                let before = pending.len();
                pending.retain(|p| !p.retried);
                let lost = (before - pending.len()) as u64;
                for p in &mut pending {
                    p.retried = true;
                }
                shared
                    .in_flight
                    .store(pending.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, retry = pending.len(), lost, "syslog write failed; reconnecting");
                shared.count_dropped(lost, "write failed twice");
            }
        }
        if chunk.capacity() > 4 * CHUNK_BYTES {
            chunk = Vec::new();
        }
    }
    if let Some(c) = conn.take() {
        c.close();
    }
    shared.connected.store(false, Ordering::Relaxed);
    shared.in_flight.store(0, Ordering::Relaxed);
    let left = pending.len() + shared.lock_queue().len();
    if left > 0 {
        shared
            .counters
            .dropped
            .fetch_add(left as u64, Ordering::Relaxed);
        tracing::error!(
            %address,
            undelivered = left,
            "syslog forwarder stopped with messages undelivered"
        );
    } else {
        tracing::info!(%address, "syslog forwarder stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::event::{Endpoint, Host, Rule};

    #[test]
    fn pri_is_facility_times_eight_plus_mapped_severity() {
        assert_eq!(pri(Facility::Local4, Severity::Info), 166);
        assert_eq!(pri(Facility::Local4, Severity::Critical), 162);
        assert_eq!(pri(Facility::Kern, Severity::High), 3);
        assert_eq!(pri(Facility::Auth, Severity::Medium), 36);
        assert_eq!(pri(Facility::Local7, Severity::Low), 189);
        let sev: Vec<u8> = Severity::ALL.into_iter().map(syslog_severity).collect();
        assert_eq!(sev, [6, 5, 4, 3, 2]);
    }

    #[test]
    fn sd_param_values_escape_quote_backslash_and_bracket() {
        let mut s = String::new();
        escape_param_value(r#"a"b\c]d[e=f ü"#, &mut s);
        assert_eq!(s, r#"a\"b\\c\]d[e=f ü"#);
    }

    #[test]
    fn octet_counting_frame_counts_bytes_not_chars() {
        assert_eq!(frame(b"abc"), b"3 abc");
        assert_eq!(frame("é\n".as_bytes()), "3 é\n".as_bytes());
        assert_eq!(frame(b""), b"0 ");
    }

    fn sample_event() -> Event {
        let mut e = Event::new("probe-1", EventKind::Alert, Severity::High);
        e.timestamp = "2024-05-01T12:00:00.123456789Z".parse().unwrap();
        e.host = Some(Host {
            name: "web 1".into(),
            uptime: None,
        });
        e.rule = Some(Rule {
            id: Some("net.scan\"]".into()),
            ..Default::default()
        });
        e.source = Some(Endpoint {
            ip: Some("10.0.0.5".parse().unwrap()),
            port: Some(4242),
            ..Default::default()
        });
        e.destination = Some(Endpoint {
            ip: Some("2001:db8::1".parse().unwrap()),
            port: Some(22),
            ..Default::default()
        });
        e.event.id = "abc".into();
        e
    }

    #[test]
    fn full_message_matches_rfc5424_layout() {
        let e = sample_event();
        let msg = format_message(&e, br#"{"x":1}"#, Facility::Local4);
        let expected = "<163>1 2024-05-01T12:00:00.123456Z web_1 palisade - palisade.alert \
            [palisade@32473 agent=\"probe-1\" id=\"abc\" kind=\"alert\" severity=\"high\" \
            rule=\"net.scan\\\"\\]\" src=\"10.0.0.5:4242\" dst=\"[2001:db8::1\\]:22\"] \u{feff}{\"x\":1}";
        assert_eq!(String::from_utf8(msg).unwrap(), expected);
    }

    #[test]
    fn unknown_fields_are_left_out_and_hostname_falls_back_to_the_observer() {
        let mut e = Event::new("probe-2", EventKind::Heartbeat, Severity::Info);
        e.timestamp = palisade_wire::Timestamp(0);
        let msg = String::from_utf8(format_message(&e, b"{}", Facility::Local0)).unwrap();
        assert_eq!(
            msg,
            "<134>1 1970-01-01T00:00:00.000000Z probe-2 palisade - palisade.heartbeat \
             [palisade@32473 agent=\"probe-2\" kind=\"heartbeat\" severity=\"info\"] \u{feff}{}"
        );
    }

    #[test]
    fn config_parses_names_and_rejects_unknown_keys() {
        let c: SyslogConfig = toml::from_str(
            "address = \"siem:6514\"\ntransport = \"tls\"\nca = \"ca.pem\"\nfacility = \"local7\"\n\
             min_severity = \"high\"\nkinds = [\"alert\", \"palisade.malware\"]\n",
        )
        .unwrap();
        assert_eq!(c.facility, Facility::Local7);
        assert_eq!(c.min_severity, Severity::High);
        assert_eq!(c.kinds, [EventKind::Alert, EventKind::Malware]);
        c.check().unwrap();
        let c: SyslogConfig = toml::from_str("address = \"siem:514\"\nmin_severity = 3\n").unwrap();
        assert_eq!(c.min_severity, Severity::Medium);
        let err = toml::from_str::<SyslogConfig>("address = \"a:1\"\nqueue = 3\n").unwrap_err();
        assert!(err.to_string().contains("queue"), "{err}");
        let err =
            toml::from_str::<SyslogConfig>("address = \"a:1\"\nkinds = [\"nope\"]\n").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn config_checks_address_and_tls_settings() {
        assert!(SyslogConfig::new("siem").check().is_err());
        assert!(SyslogConfig::new("siem:99999").check().is_err());
        assert!(SyslogConfig::new("[::1]:514").check().is_ok());
        let mut c = SyslogConfig::new("siem:6514");
        c.transport = Transport::Tls;
        assert!(c.check().unwrap_err().contains("ca"));
        c.ca = Some("ca.pem".into());
        c.cert = Some("c.pem".into());
        assert!(c.check().unwrap_err().contains("key"));
        let mut c = SyslogConfig::new("siem:514");
        c.ca = Some("ca.pem".into());
        assert!(c.check().is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let mut caps = Vec::new();
        for _ in 0..8 {
            let cap = b.next.min(b.max);
            let d = b.delay();
            assert!(d >= cap / 2 && d <= cap, "{d:?} vs {cap:?}");
            caps.push(cap.as_millis());
        }
        assert_eq!(caps, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        b.reset();
        assert!(b.delay() <= BACKOFF_START);
    }
}
