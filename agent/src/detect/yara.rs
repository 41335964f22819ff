//! YARA-X over payloads: TCP streams reassembled per direction (first `stream_depth` bytes each
//! way) and UDP datagrams, with rules from `signatures/yara/`, reloaded on change.
//!
//! When a direction is inspected: when the other direction starts sending (a request is complete
//! once the response begins, and the other way round), when the direction reaches its depth, at
//! FIN/RST, when the stream has been idle for `stream_idle_secs`, when it is evicted from a full
//! table, when buffered bytes pass `memcap_bytes`, and at the end of a capture. Every byte is
//! inspected once, plus `overlap` bytes carried in front of the next inspection so a pattern
//! straddling two inspections is still seen; a rule whose every match lies in the carried bytes
//! was already reported and is not reported again.
//!
//! Scans run on a worker thread that owns the `yara_x::Scanner` (a scanner is tied to the thread
//! that made it); the packet path hands over buffers through a bounded queue and collects
//! results without waiting. When the queue is full the packet path waits: inspection is never
//! skipped silently. Each scan has a time bound (`scan_timeout_secs`); a scan that hits it raises
//! a `palisade.net.yara.scan_timeout` alert naming the flow, so an evasion by slow input is itself visible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_wire::event::Endpoint;
use palisade_wire::{Event, Severity};
use rustc_hash::FxHashMap;
use serde_json::json;

use super::{AlertBuilder, Detector};
use crate::flow::community_id::community_id_v1;
use crate::flow::FlowKey;
use crate::packet::{proto, tcp_flags, PacketMeta};
use crate::reassembly::{HalfStream, Limits};
use crate::watch::{Reloadable, WatchError};
use crate::yara_rules::{self, RuleMatch, RuleSet, RulesError, ScanFailure};

const NANOS_PER_SEC: i64 = 1_000_000_000;

pub use super::yara_config::YaraConfig;

/// Why the detector could not start.
#[derive(Debug, thiserror::Error)]
pub enum YaraError {
    /// The rules did not load.
    #[error(transparent)]
    Rules(#[from] RulesError),
    /// Watching the rule directory failed.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// A config value is out of range.
    #[error("invalid yara detector config: {field} {reason}")]
    InvalidConfig {
        /// The option.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The scanner thread could not be started.
    #[error("cannot start the YARA scanner thread: {0}")]
    Thread(std::io::Error),
}

/// Counters, shared with the scanner thread.
#[derive(Debug, Default)]
pub struct YaraStats {
    /// Scans made.
    pub scans: AtomicU64,
    /// Bytes scanned (including carried overlap).
    pub bytes: AtomicU64,
    /// Time spent scanning, ns.
    pub scan_nanos: AtomicU64,
    /// Scans that hit the time bound.
    pub timeouts: AtomicU64,
    /// Scans that failed otherwise.
    pub failures: AtomicU64,
    /// Rule matches reported.
    pub matches: AtomicU64,
}

/// Where scanned bytes came from.
#[derive(Debug, Clone)]
struct Origin {
    key: FlowKey,
    /// True when the bytes were sent by the key's lower endpoint.
    from_lo: bool,
    /// True when the sender opened the connection (TCP), for `to_server`/`to_client`.
    from_client: Option<bool>,
    /// Capture time of the packet that triggered the scan.
    ts: i64,
    /// Offset of the scanned bytes in the direction's stream (0 for UDP).
    offset: usize,
    /// Leading bytes scanned before.
    carried: usize,
    /// Holes given up in this direction so far.
    gaps: u32,
}

enum Job {
    Scan(Origin, Vec<u8>),
    Rules(Arc<RuleSet>),
}

struct Done {
    origin: Origin,
    scanned: usize,
    elapsed_secs: f64,
    result: Result<Vec<RuleMatch>, ScanFailure>,
}

/// Why a direction is handed out for scanning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inspect {
    /// A message is over (the other side spoke, or the depth is reached); keep an overlap.
    Continue,
    /// The direction is done: give up holes, scan everything, free it.
    Final,
    /// Over the memory cap: scan now and keep nothing.
    Relieve,
}

/// One tracked TCP stream.
#[derive(Debug)]
struct Stream {
    halves: [HalfStream; 2],
    last_seen: i64,
    /// Which direction (0 = from the lower endpoint) sent the SYN, if seen.
    client: Option<usize>,
    /// Direction that sent data last.
    last_sender: Option<usize>,
    closed: [bool; 2],
}

/// The detector; see the module docs.
pub struct YaraDetector {
    config: YaraConfig,
    limits: Limits,
    agent_id: String,
    seed: u16,
    rules: Reloadable<RuleSet>,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    in_flight: usize,
    streams: FxHashMap<FlowKey, Stream>,
    buffered: usize,
    evictions: u64,
    stats: Arc<YaraStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for YaraDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YaraDetector")
            .field("dir", &self.config.dir)
            .field("streams", &self.streams.len())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl YaraDetector {
    /// Compiles the rules in `config.dir`, starts the scanner thread and, with `config.watch`,
    /// the watcher. `seed` is the community-id seed of the flows.
    pub fn new(config: YaraConfig, agent_id: &str, seed: u16) -> Result<Self, YaraError> {
        let invalid = |field, reason| Err(YaraError::InvalidConfig { field, reason });
        if config.stream_depth == 0 {
            return invalid("stream_depth", "must be at least 1");
        }
        if config.max_streams == 0 {
            return invalid("max_streams", "must be at least 1");
        }
        if config.queue_depth == 0 {
            return invalid("queue_depth", "must be at least 1");
        }
        if config.scan_timeout_secs == 0 {
            return invalid("scan_timeout_secs", "must be at least 1");
        }
        if config.overlap >= config.stream_depth {
            return invalid("overlap", "must be smaller than stream_depth");
        }
        let set = Arc::new(RuleSet::load_dir_for(
            &config.dir,
            yara_rules::Scope::Network,
        )?);
        tracing::info!(dir = %config.dir.display(), rules = set.len(), "YARA rules loaded");
        let rules = if config.watch {
            let dir = config.dir.clone();
            Reloadable::watch(
                &config.dir,
                "yara-reload",
                "yara rules",
                Duration::from_millis(config.reload_debounce_ms),
                yara_rules::is_rule_file,
                move || RuleSet::load_dir_for(&dir, yara_rules::Scope::Network),
            )?
        } else {
            Reloadable::unwatched()
        };
        let stats = Arc::new(YaraStats::default());
        let (jobs, job_rx) = std::sync::mpsc::sync_channel(config.queue_depth);
        let (done_tx, done) = std::sync::mpsc::channel();
        // yara-x counts time in whole seconds from a global heartbeat: a deadline of N ticks can
        // pass anywhere between N-1 and N seconds after the scan starts (a 1 s bound would now and
        // then stop a 10 µs scan that straddles a tick). One extra tick makes the bound
        // `scan_timeout_secs`..`scan_timeout_secs + 1` seconds.
        let timeout = Duration::from_secs(config.scan_timeout_secs + 1);
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("yara-scan".into())
            .spawn(move || scan_loop(&job_rx, &done_tx, set, timeout, &thread_stats))
            .map_err(YaraError::Thread)?;
        Ok(YaraDetector {
            limits: Limits {
                depth: config.stream_depth,
                max_out_of_order_bytes: config.max_out_of_order_bytes,
                overlap: config.overlap,
            },
            config,
            agent_id: agent_id.to_string(),
            seed,
            rules,
            jobs: Some(jobs),
            done,
            in_flight: 0,
            streams: FxHashMap::default(),
            buffered: 0,
            evictions: 0,
            stats,
            thread: Some(thread),
        })
    }

    /// Recompiles the rules now; on error the rules in force stay.
    pub fn reload(&mut self) -> Result<(), RulesError> {
        match RuleSet::load_dir_for(&self.config.dir, yara_rules::Scope::Network) {
            Ok(set) => {
                self.rules.publish(set);
                Ok(())
            }
            Err(e) => {
                self.rules.record_failure(e.to_string());
                Err(e)
            }
        }
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.rules.reloads()
    }

    /// Failed reloads since start.
    pub fn reload_failures(&self) -> u64 {
        self.rules.failures()
    }

    /// Scan counters.
    pub fn stats(&self) -> &Arc<YaraStats> {
        &self.stats
    }

    /// Hands a buffer to the scanner thread, collecting results while the queue is full.
    fn submit(&mut self, origin: Origin, data: Vec<u8>, out: &mut Vec<Event>) {
        let mut job = Job::Scan(origin, data);
        loop {
            let Some(jobs) = &self.jobs else {
                return;
            };
            match jobs.try_send(job) {
                Ok(()) => {
                    self.in_flight += 1;
                    break;
                }
                Err(TrySendError::Full(j)) => {
                    job = j;
                    // Wait for one result, which frees a slot.
                    self.collect(true, out);
                }
                Err(TrySendError::Disconnected(_)) => {
                    tracing::error!("YARA scanner thread has stopped; payload scanning is off");
                    self.jobs = None;
                    return;
                }
            }
        }
    }

    /// Turns finished scans into alerts; with `wait`, blocks for at least one when any is in
    /// flight.
    fn collect(&mut self, wait: bool, out: &mut Vec<Event>) {
        if wait && self.in_flight > 0 {
            match self.done.recv() {
                Ok(d) => {
                    self.in_flight -= 1;
                    self.alerts_for(d, out);
                }
                Err(_) => self.in_flight = 0,
            }
        }
        while let Ok(d) = self.done.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.alerts_for(d, out);
        }
    }

    fn refresh_rules(&mut self) {
        if let Some(set) = self.rules.take_update() {
            tracing::info!(rules = set.len(), "YARA rules reloaded");
            if let Some(jobs) = &self.jobs {
                // Blocks only while the queue is full; the scanner thread keeps draining it.
                let _ = jobs.send(Job::Rules(set));
            }
        }
    }

    /// Hands out direction `dir` of the stream `key` for scanning, if it has new bytes.
    fn inspect(&mut self, key: FlowKey, dir: usize, ts: i64, how: Inspect, out: &mut Vec<Event>) {
        let final_ = how == Inspect::Final;
        let mut limits = self.limits;
        if how == Inspect::Relieve {
            // Memory is short: keep no overlap (a pattern straddling this point may be missed).
            limits.overlap = 0;
        }
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let half = &mut stream.halves[dir];
        let before = half.buffered();
        if final_ {
            half.close_holes(&limits);
        }
        let taken = half.take(&limits);
        if final_ {
            half.release();
        }
        let after = half.buffered();
        let (gaps, client) = (half.gaps(), stream.client);
        self.buffered = self.buffered.saturating_sub(before) + after;
        if let Some(inspection) = taken {
            let origin = Origin {
                key,
                from_lo: dir == 0,
                from_client: client.map(|c| c == dir),
                ts,
                offset: inspection.offset,
                carried: inspection.carried,
                gaps,
            };
            self.submit(origin, inspection.data, out);
        }
    }

    /// Scans what is left of a stream and forgets it.
    fn finish_stream(&mut self, key: FlowKey, ts: i64, out: &mut Vec<Event>) {
        self.inspect(key, 0, ts, Inspect::Final, out);
        self.inspect(key, 1, ts, Inspect::Final, out);
        if let Some(s) = self.streams.remove(&key) {
            let left: usize = s.halves.iter().map(HalfStream::buffered).sum();
            self.buffered = self.buffered.saturating_sub(left);
        }
    }

    /// Makes room in a full table: the longest idle eighth is scanned and dropped.
    fn evict(&mut self, ts: i64, out: &mut Vec<Event>) {
        let mut idle: Vec<(i64, FlowKey)> = self
            .streams
            .iter()
            .map(|(k, s)| (s.last_seen, *k))
            .collect();
        idle.sort_unstable_by_key(|(t, _)| *t);
        let n = (self.config.max_streams / 8).max(1);
        for (_, key) in idle.into_iter().take(n) {
            self.finish_stream(key, ts, out);
            self.evictions += 1;
        }
    }

    /// Over the memory cap: scans buffered streams early, oldest first, until half the cap.
    fn relieve_memory(&mut self, ts: i64, out: &mut Vec<Event>) {
        let mut by_age: Vec<(i64, FlowKey)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.halves.iter().any(|h| h.uninspected() > 0))
            .map(|(k, s)| (s.last_seen, *k))
            .collect();
        by_age.sort_unstable_by_key(|(t, _)| *t);
        for (_, key) in by_age {
            if self.buffered <= self.config.memcap_bytes / 2 {
                break;
            }
            self.inspect(key, 0, ts, Inspect::Relieve, out);
            self.inspect(key, 1, ts, Inspect::Relieve, out);
        }
    }

    fn on_tcp(&mut self, p: &PacketMeta<'_>, key: FlowKey, from_lo: bool, out: &mut Vec<Event>) {
        let dir = usize::from(!from_lo);
        let syn = p.tcp_flags & tcp_flags::SYN != 0;
        let ends = p.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0;
        if !self.streams.contains_key(&key) {
            // Only streams that will carry data are worth a table entry.
            if p.payload.is_empty() && !syn {
                return;
            }
            if self.streams.len() >= self.config.max_streams {
                self.evict(p.ts, out);
            }
            self.streams.insert(
                key,
                Stream {
                    halves: [HalfStream::default(), HalfStream::default()],
                    last_seen: p.ts,
                    client: None,
                    last_sender: None,
                    closed: [false; 2],
                },
            );
        }
        let limits = self.limits;
        let mut other_has_data = false;
        let mut complete = false;
        if let Some(s) = self.streams.get_mut(&key) {
            s.last_seen = p.ts;
            if syn {
                s.halves[dir].on_syn(p.tcp_seq);
                if p.tcp_flags & tcp_flags::ACK == 0 {
                    s.client = Some(dir);
                } else if s.client.is_none() {
                    s.client = Some(1 - dir);
                }
            }
            if !p.payload.is_empty() {
                let before = s.halves[dir].buffered();
                s.halves[dir].on_data(p.tcp_seq, p.payload, &limits);
                let after = s.halves[dir].buffered();
                self.buffered = self.buffered.saturating_sub(before) + after;
                other_has_data =
                    s.last_sender == Some(1 - dir) && s.halves[1 - dir].uninspected() > 0;
                s.last_sender = Some(dir);
                complete = s.halves[dir].is_complete(&limits);
            }
            if ends {
                s.closed[dir] = true;
            }
        }
        if other_has_data {
            // The other side's message is over: this side answers it.
            self.inspect(key, 1 - dir, p.ts, Inspect::Continue, out);
        }
        if complete {
            self.inspect(key, dir, p.ts, Inspect::Continue, out);
        }
        if ends {
            let both = self
                .streams
                .get(&key)
                .is_some_and(|s| s.closed[0] && s.closed[1]);
            if both || p.tcp_flags & tcp_flags::RST != 0 {
                self.finish_stream(key, p.ts, out);
            } else {
                self.inspect(key, dir, p.ts, Inspect::Final, out);
            }
        }
        if self.buffered > self.config.memcap_bytes {
            self.relieve_memory(p.ts, out);
        }
    }

    fn alerts_for(&mut self, d: Done, out: &mut Vec<Event>) {
        let o = &d.origin;
        let (lo, hi) = (o.key.lo(), o.key.hi());
        let (src, dst) = if o.from_lo { (lo, hi) } else { (hi, lo) };
        let ip_proto = o.key.ip_proto();
        let cid = community_id_v1(self.seed, src.0, dst.0, src.1, dst.1, ip_proto);
        let direction = match o.from_client {
            Some(true) => "to_server",
            Some(false) => "to_client",
            None => "unknown",
        };
        let endpoints = |b: AlertBuilder| {
            let b = b
                .source(Endpoint {
                    ip: Some(src.0),
                    port: Some(src.1),
                    ..Default::default()
                })
                .destination(Endpoint {
                    ip: Some(dst.0),
                    port: Some(dst.1),
                    ..Default::default()
                })
                .transport(ip_proto);
            match &cid {
                Some(c) => b.community_id(c.clone()),
                None => b,
            }
        };
        match d.result {
            Ok(matches) => {
                for m in matches {
                    // File rules (webshell sources on disk) share the directory; on the wire they
                    // would fire on every download of a page's source.
                    if !m.rule.scope.covers_network() {
                        continue;
                    }
                    // Every match inside the carried overlap was reported by the previous scan;
                    // a rule with no string matches (a pure condition) reports on the first scan.
                    let fresh = if m.strings.is_empty() {
                        o.carried == 0
                    } else {
                        m.strings.iter().any(|s| s.range.end > o.carried)
                    };
                    if !fresh {
                        continue;
                    }
                    let strings: Vec<_> = m
                        .strings
                        .iter()
                        .map(|s| {
                            json!({
                                "pattern": s.pattern,
                                "stream_offset": o.offset + s.range.start,
                                "data": s.data,
                            })
                        })
                        .collect();
                    let message = format!(
                        "YARA rule {} ({}) matched {} bytes {direction} from {}:{}",
                        m.rule.id,
                        m.rule.description.as_deref().unwrap_or(&m.rule.name),
                        if ip_proto == proto::UDP {
                            "UDP"
                        } else {
                            "TCP stream"
                        },
                        src.0,
                        src.1
                    );
                    let b = AlertBuilder::new(
                        &self.agent_id,
                        o.ts,
                        &m.rule.id,
                        &format!("yara: {}", m.rule.name),
                        m.rule.severity,
                    );
                    out.push(endpoints(b).finish(
                        message,
                        json!({
                            "detector": "yara",
                            "rule": m.rule.name,
                            "namespace": m.rule.namespace,
                            "category": m.rule.category,
                            "description": m.rule.description,
                            "direction": direction,
                            "scanned_bytes": d.scanned,
                            "stream_offset": o.offset,
                            "stream_gaps": o.gaps,
                            "strings": strings,
                        }),
                    ));
                }
            }
            Err(ScanFailure::Timeout) => {
                let b = AlertBuilder::new(
                    &self.agent_id,
                    o.ts,
                    "palisade.net.yara.scan_timeout",
                    "YARA scan hit its time bound",
                    Severity::Medium,
                );
                out.push(endpoints(b).finish(
                    format!(
                        "YARA scan of {} payload bytes from {}:{} stopped at the {} s bound; the rest of this buffer was not inspected",
                        d.scanned, src.0, src.1, self.config.scan_timeout_secs
                    ),
                    json!({
                        "detector": "yara",
                        "scanned_bytes": d.scanned,
                        "timeout_secs": self.config.scan_timeout_secs,
                        "elapsed_secs": d.elapsed_secs,
                        "direction": direction,
                    }),
                ));
            }
            Err(ScanFailure::Other(reason)) => {
                tracing::warn!(%reason, "YARA scan failed");
            }
        }
    }
}

impl Detector for YaraDetector {
    fn name(&self) -> &'static str {
        "yara"
    }

    fn on_packet(&mut self, p: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if p.fragment {
            return;
        }
        let tcp = p.ip_proto == proto::TCP;
        let udp = p.ip_proto == proto::UDP;
        if !(tcp || (udp && self.config.udp && p.payload.len() >= self.config.udp_min_bytes)) {
            return;
        }
        if tcp
            && p.payload.is_empty()
            && p.tcp_flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0
        {
            return;
        }
        let Some((key, from_lo)) = FlowKey::from_packet(p) else {
            return;
        };
        if self.in_flight > 0 {
            // Results of earlier scans, without waiting.
            self.collect(false, out);
        }
        if tcp {
            self.on_tcp(p, key, from_lo, out);
        } else {
            let len = p.payload.len().min(self.config.stream_depth);
            let origin = Origin {
                key,
                from_lo,
                from_client: None,
                ts: p.ts,
                offset: 0,
                carried: 0,
                gaps: 0,
            };
            self.submit(origin, p.payload[..len].to_vec(), out);
        }
    }

    fn on_tick(&mut self, now: i64, out: &mut Vec<Event>) {
        self.refresh_rules();
        let idle = i64::try_from(self.config.stream_idle_secs)
            .unwrap_or(i64::MAX / NANOS_PER_SEC)
            .saturating_mul(NANOS_PER_SEC);
        let stale: Vec<FlowKey> = self
            .streams
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.last_seen) >= idle)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.finish_stream(key, now, out);
        }
        self.collect(false, out);
    }

    fn on_finish(&mut self, now: i64, out: &mut Vec<Event>) {
        let keys: Vec<FlowKey> = self.streams.keys().copied().collect();
        for key in keys {
            self.finish_stream(key, now, out);
        }
        while self.in_flight > 0 {
            self.collect(true, out);
        }
        self.collect(false, out);
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }

    fn summary(&self) -> Option<serde_json::Value> {
        let s = &self.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Some(json!({
            "scans": load(&s.scans),
            "bytes_scanned": load(&s.bytes),
            "scan_secs": load(&s.scan_nanos) as f64 / 1e9,
            "timeouts": load(&s.timeouts),
            "failures": load(&s.failures),
            "matches": load(&s.matches),
            "streams": self.streams.len(),
            "streams_evicted": self.evictions,
            "rule_reloads": self.rules.reloads(),
            "rule_reload_failures": self.rules.failures(),
        }))
    }
}

impl Drop for YaraDetector {
    fn drop(&mut self) {
        // Closing the queue ends the scanner thread once it has drained it.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The scanner thread: owns the scanner, rebuilt when new rules arrive.
fn scan_loop(
    jobs: &Receiver<Job>,
    done: &std::sync::mpsc::Sender<Done>,
    mut set: Arc<RuleSet>,
    timeout: Duration,
    stats: &YaraStats,
) {
    loop {
        let current = Arc::clone(&set);
        let mut scanner = yara_x::Scanner::new(current.rules());
        scanner.set_timeout(timeout);
        scanner.max_matches_per_pattern(16);
        loop {
            match jobs.recv() {
                Ok(Job::Scan(origin, data)) => {
                    let started = Instant::now();
                    let result = yara_rules::scan(&current, &mut scanner, &data);
                    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    stats.scans.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    stats.scan_nanos.fetch_add(nanos, Ordering::Relaxed);
                    match &result {
                        Ok(m) => {
                            stats.matches.fetch_add(m.len() as u64, Ordering::Relaxed);
                        }
                        Err(ScanFailure::Timeout) => {
                            stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ScanFailure::Other(_)) => {
                            stats.failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let d = Done {
                        origin,
                        scanned: data.len(),
                        elapsed_secs: nanos as f64 / 1e9,
                        result,
                    };
                    if done.send(d).is_err() {
                        return;
                    }
                }
                Ok(Job::Rules(new)) => {
                    set = new;
                    break;
                }
                Err(_) => return,
            }
        }
    }
}

/// The shipped rule directory, for tests.
#[cfg(test)]
pub(crate) fn shipped_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/yara")
}

#[cfg(test)]
mod tests;
