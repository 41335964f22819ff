//! The event store: segment bodies in day files, their index in one table per UTC day
//! (`d/YYYY-MM-DD`, so retention drops a table) of redb or sled ([`super::index`]) holding:
//!
//! ```text
//! S | ts_min | agent | first_seq   -> pointer to a segment (see `segment`, `segfile`): a run of
//!                                    one agent's events; the body is in `segments/<day>.seg`
//! D | agent                       -> the agent's stored sequence numbers that day (`SeqSet`)
//! C                               -> events stored that day (u64)
//! K | kind | ts_min | agent | seq -> the same pointer, for segments holding a kind in
//!                                    `segment::indexed` (host reports: heartbeats, integrity…)
//! X                               -> present: every segment of the day has its `K` keys
//! ```
//! plus an `agents` table (what `status` shows). A group commit writes its segments, sequence
//! sets, day counts and agent records in one durable commit (after the segment bodies are
//! appended to their day file and fsynced): in redb one transaction; in sled one atomic
//! `apply_batch` per day, then the agents, then one `flush` (fsync). A segment and the dedup
//! record that covers it are durable together or not at all, and nothing is acknowledged
//! before the commit.
//!
//! Why segments rather than a key per event: the first layout (one primary key and four index
//! keys per event) reached 10.7k events/s at 2.2 GB RSS on the 2-core bench; sled's cost is per
//! key, so storing runs of events per key is what makes the throughput bar reachable.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use palisade_wire::batch::Batch;
use palisade_wire::{EventKind, Timestamp};
use serde::Deserialize;

use super::index::{Index, Rows, Writes};
use super::segfile::SegmentFiles;
use super::segment::{self, Builder, MAX_SPAN_NANOS};
use super::seqset::SeqSet;
use super::{AgentRecord, BatchOutcome, EventStore, Query, StoreError, StoreStats};
use crate::incidents::Backend;
use crate::metrics::{Histogram, MetricsSource, MetricsWriter};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
const COUNT_KEY: &[u8] = b"C";
/// Marks a day tree whose segments all have their kind index keys (see `segment::kind_keys`).
const KIND_INDEX_KEY: &[u8] = b"X";
/// The widest span (event time, i64 nanoseconds) of the day's segments. A newest-first query
/// walks segment headers back from the newest until no earlier-starting segment can hold a
/// newer event: bounded by this instead of [`MAX_SPAN_NANOS`], it reads the headers of the
/// last seconds, not of the last hour (in the 30-minute soak at 50,000 events/s, with the
/// hour's bound, `events --since 5m --limit 100` grew 40 → 120 ms as the hour filled). Absent
/// in days stored before it, which keep the hour.
const SPAN_KEY: &[u8] = b"W";
/// Kind index keys written per commit while indexing a day stored before the index existed
/// (tests: a few, so that a day takes several commits).
const INDEX_BATCH: usize = if cfg!(test) { 7 } else { 50_000 };
/// Segments are written with a fast zstd level: the writer thread is the ingest bottleneck.
const SEGMENT_ZSTD_LEVEL: i32 = 1;

fn corrupt(tree: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: tree.to_string(),
        reason: reason.into(),
    }
}

fn day_index(ts: i64) -> i64 {
    ts.div_euclid(NANOS_PER_DAY)
}

fn day_name(index: i64) -> String {
    Timestamp(index.saturating_mul(NANOS_PER_DAY)).day()
}

fn u64_of(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn seqset_key(agent: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + agent.len());
    k.push(b'D');
    k.extend_from_slice(agent.as_bytes());
    k
}

/// The agents' records.
const AGENTS: &str = "agents";

/// The table of day `index`.
fn day_table(index: i64) -> String {
    format!("d/{}", day_name(index))
}

/// The event store.
pub struct SegmentStore {
    index: Index,
    dir: std::path::PathBuf,
    /// Below this many free bytes on `dir`'s disk, writes are refused before the index is
    /// touched.
    min_free_bytes: u64,
    files: SegmentFiles,
    /// Sequence sets by (day, agent); only the writer changes them, after a successful flush.
    seqsets: Mutex<HashMap<(i64, String), SeqSet>>,
    /// Segment headers read by queries (for tests of how far a walk goes).
    headers_read: std::sync::atomic::AtomicU64,
    /// How long each phase of a write takes (exported as `palisade_store_write_seconds`).
    timings: std::sync::Arc<WriteTimings>,
}

/// The time each write of [`SegmentStore`] spends in its three phases: `prepare` (reading
/// the agents' records and sequence sets, deduplicating, compressing and appending the
/// segments), `sync` (fdatasync of the segment files) and `index` (the index's durable
/// commit of the pointers, sequence sets, counts and agent records). An ack that waits longer
/// than usual shows here which of them it waited on.
#[derive(Debug, Default)]
pub struct WriteTimings {
    prepare: Histogram,
    sync: Histogram,
    index: Histogram,
}

impl MetricsSource for WriteTimings {
    fn write(&self, out: &mut MetricsWriter) {
        for (phase, h) in [
            ("prepare", &self.prepare),
            ("sync", &self.sync),
            ("index", &self.index),
        ] {
            h.write(
                out,
                "palisade_store_write_seconds",
                "Time each phase of a group commit took: prepare (deduplication, compression, \
                 appending segments), sync (fdatasync of the segment files), index (the \
                 index's durable commit).",
                &[("phase", phase)],
            );
        }
    }
}

impl std::fmt::Debug for SegmentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentStore")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The fields a query filters and orders on, parsed from stored JSON.
#[derive(Deserialize)]
struct Light {
    #[serde(rename = "@timestamp")]
    timestamp: Timestamp,
    event: LightEvent,
}

#[derive(Deserialize)]
struct LightEvent {
    dataset: EventKind,
    severity: palisade_wire::Severity,
    sequence: u64,
}

/// A query match, ordered by (time, agent, sequence).
#[derive(PartialEq, Eq)]
struct Hit {
    ts: i64,
    agent: String,
    seq: u64,
    json: Vec<u8>,
}

impl Ord for Hit {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.ts, &self.agent, self.seq).cmp(&(o.ts, &o.agent, o.seq))
    }
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The best `limit` hits seen so far: the earliest (ascending) or the latest (descending).
enum Best {
    Earliest(BinaryHeap<Hit>),
    Latest(BinaryHeap<Reverse<Hit>>),
    /// No order and no limit: every match goes straight to the sink (`scan`).
    Stream,
}

impl Best {
    fn push(&mut self, hit: Hit, limit: usize) {
        match self {
            Best::Earliest(h) => {
                h.push(hit);
                if h.len() > limit {
                    h.pop();
                }
            }
            Best::Latest(h) => {
                h.push(Reverse(hit));
                if h.len() > limit {
                    h.pop();
                }
            }
            Best::Stream => {}
        }
    }

    /// Whether a segment starting at `ts_min` can still contribute, given segments arrive in
    /// `ts_min` order (ascending for Earliest, descending for Latest) and span at most `span`.
    fn wants(&self, ts_min: i64, limit: usize, span: i64) -> bool {
        match self {
            Best::Earliest(h) => h.len() < limit || h.peek().is_some_and(|w| ts_min <= w.ts),
            Best::Latest(h) => {
                h.len() < limit
                    || h.peek()
                        .is_some_and(|w| ts_min.saturating_add(span) >= w.0.ts)
            }
            Best::Stream => true,
        }
    }

    /// Whether no event of a segment spanning `ts_min..=ts_max` can displace what is held: the
    /// segment is then skipped without reading its body.
    fn excludes(&self, ts_min: i64, ts_max: i64, limit: usize) -> bool {
        match self {
            Best::Earliest(h) => h.len() >= limit && h.peek().is_some_and(|w| ts_min > w.ts),
            Best::Latest(h) => h.len() >= limit && h.peek().is_some_and(|w| ts_max < w.0.ts),
            Best::Stream => false,
        }
    }

    fn into_sorted(self) -> Vec<Hit> {
        match self {
            Best::Earliest(h) => h.into_sorted_vec(),
            Best::Latest(h) => h.into_sorted_vec().into_iter().map(|r| r.0).collect(),
            Best::Stream => Vec::new(),
        }
    }
}

impl SegmentStore {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes` for its index
    /// (redb in a new directory, sled in one created before redb: see [`super::index`]).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, cache_bytes, Backend::Redb)
    }

    /// Opens the store in `dir`, creating its index with `new`'s engine if it has none.
    pub fn open_with(dir: &Path, cache_bytes: u64, new: Backend) -> Result<Self, StoreError> {
        let files = SegmentFiles::new(dir.join("segments"))?;
        let index = Index::open(dir, cache_bytes, new)?;
        tracing::info!(dir = %dir.display(), engine = index.engine(), "event store: index open");
        let store = SegmentStore {
            index,
            dir: dir.to_path_buf(),
            min_free_bytes: 0,
            files,
            seqsets: Mutex::new(HashMap::new()),
            headers_read: Default::default(),
            timings: Default::default(),
        };
        store.index_kinds()?;
        Ok(store)
    }

    /// The phase timings of this store's writes, for the metrics listener.
    pub fn write_timings(&self) -> std::sync::Arc<WriteTimings> {
        self.timings.clone()
    }

    /// Writes the kind index of days stored before it existed (once per day: the day is then
    /// marked), so look-ups by an indexed kind never miss a segment.
    fn index_kinds(&self) -> Result<(), StoreError> {
        for (index, name) in self.stored_days()? {
            let table = day_table(index);
            if self.index.get(&table, KIND_INDEX_KEY)?.is_some() {
                continue;
            }
            let started = std::time::Instant::now();
            let (mut segments, mut keys) = (0u64, 0u64);
            let mut lo = segment::key_floor(i64::MIN);
            let hi = segment::key_floor(i64::MAX);
            // A chunk of segments is read, then its keys are committed: no write inside a scan.
            loop {
                let mut batch = Vec::new();
                let mut resume = None;
                self.index.range(&table, &lo, &hi, false, &mut |k, v| {
                    let h = segment::header(v).map_err(|e| corrupt(&name, e))?;
                    segments += 1;
                    for kk in segment::kind_keys(k, h.kinds) {
                        batch.push((kk, v.to_vec()));
                        keys += 1;
                    }
                    if batch.len() >= INDEX_BATCH {
                        // The least key after `k`.
                        resume = Some([k, &[0u8][..]].concat());
                        return Ok(false);
                    }
                    Ok(true)
                })?;
                if resume.is_none() {
                    batch.push((KIND_INDEX_KEY.to_vec(), vec![1u8]));
                }
                self.index
                    .commit(Writes::from([(table.clone(), batch)]), &[])?;
                match resume {
                    Some(next) => lo = next,
                    None => break,
                }
            }
            tracing::info!(
                day = %name,
                segments,
                keys,
                ms = started.elapsed().as_millis() as u64,
                "store: indexed the day's segments by kind"
            );
        }
        Ok(())
    }

    /// Refuses writes while less than `bytes` are free on the store's disk (0: never).
    pub fn with_min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    fn check_space(&self) -> Result<(), StoreError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let Ok(st) = nix::sys::statvfs::statvfs(&self.dir) else {
            return Ok(());
        };
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        if free < self.min_free_bytes {
            return Err(StoreError::DiskFull {
                dir: self.dir.clone(),
                free,
                min_free: self.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Days that have a table, ascending.
    fn stored_days(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut out: Vec<(i64, String)> = self
            .index
            .tables()?
            .into_iter()
            .filter_map(|n| {
                let name = n.strip_prefix("d/")?.to_string();
                let ts: Timestamp = format!("{name}T00:00:00Z").parse().ok()?;
                Some((day_index(ts.nanos()), name))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The stored sequence set of (day, agent), from the cache or the day tree.
    fn seqset(&self, day: i64, agent: &str) -> Result<SeqSet, StoreError> {
        if let Some(s) = self
            .seqsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(day, agent.to_string()))
        {
            return Ok(s.clone());
        }
        match self.index.get(&day_table(day), &seqset_key(agent))? {
            Some(v) => {
                SeqSet::decode(&v).map_err(|e| corrupt(&day_name(day), format!("{agent}: {e}")))
            }
            None => Ok(SeqSet::default()),
        }
    }

    /// Queries (best `limit` in order) or, when `unordered`, streams every match in storage
    /// order with no limit.
    fn visit(
        &self,
        q: &Query,
        unordered: bool,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize, StoreError> {
        if (q.limit == 0 && !unordered) || q.until <= q.since {
            return Ok(0);
        }

        let (since, until) = (q.since.nanos(), q.until.nanos());
        // Paging: nothing earlier (ascending) or later (descending) than the cursor can follow it.
        let (since, until) = match &q.after {
            Some(a) if q.newest_first => (since, until.min(a.timestamp.nanos().saturating_add(1))),
            Some(a) => (since.max(a.timestamp.nanos()), until),
            None => (since, until),
        };
        if until <= since {
            return Ok(0);
        }
        let first = day_index(since);
        let last = day_index(until.saturating_sub(1));
        let mut days: Vec<(i64, String)> = self
            .stored_days()?
            .into_iter()
            .filter(|(i, _)| (first..=last).contains(i))
            .collect();
        if q.newest_first {
            days.reverse();
        }
        let mut best = if unordered {
            Best::Stream
        } else if q.newest_first {
            Best::Latest(BinaryHeap::new())
        } else {
            Best::Earliest(BinaryHeap::new())
        };
        let mut streamed = 0;
        let by_kind = q.kind.filter(|k| segment::indexed(*k));
        // Set when the walk is over: no later day can give more.
        let mut over = false;
        for (index, name) in days {
            if over {
                break;
            }
            let table = day_table(index);
            let span = match self.index.get(&table, SPAN_KEY)? {
                Some(v) => i64::from_be_bytes(
                    v.as_slice()
                        .try_into()
                        .map_err(|_| corrupt(&name, "bad segment span"))?,
                )
                .clamp(0, MAX_SPAN_NANOS),
                None => MAX_SPAN_NANOS,
            };
            let from = since.saturating_sub(span);
            // Walk only the segments holding the kind, when the day has that index.
            let kind_index = match by_kind {
                Some(_) => self.index.get(&table, KIND_INDEX_KEY)?.is_some(),
                None => false,
            };
            let (lo, hi) = match by_kind {
                Some(kind) if kind_index => (
                    segment::kind_key_floor(kind, from),
                    segment::kind_key_floor(kind, until),
                ),
                _ => (segment::key_floor(from), segment::key_floor(until)),
            };
            self.index
                .range(&table, &lo, &hi, q.newest_first, &mut |k, v| {
                    let h = segment::header(v).map_err(|e| corrupt(&name, e))?;
                    self.headers_read
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !best.wants(h.ts_min, q.limit, span) {
                        over = true;
                        return Ok(false);
                    }
                    if h.ts_max < since
                        || h.ts_min >= until
                        || best.excludes(h.ts_min, h.ts_max, q.limit)
                    {
                        return Ok(true);
                    }
                    let agent = if kind_index {
                        segment::kind_key_agent(k)
                    } else {
                        segment::key_agent(k)
                    }
                    .ok_or_else(|| corrupt(&name, "bad segment key"))?;
                    if q.agent.as_deref().is_some_and(|a| a != agent) {
                        return Ok(true);
                    }
                    if let Some(kind) = q.kind {
                        if h.kinds & (1u32 << kind.code()) == 0 {
                            return Ok(true);
                        }
                    }
                    if let Some(min) = q.min_severity {
                        if u32::from(h.severities) >> min.number() == 0 {
                            return Ok(true);
                        }
                    }
                    let go = self.visit_segment(
                        q,
                        unordered,
                        since,
                        until,
                        &name,
                        agent,
                        v,
                        &mut best,
                        &mut streamed,
                        sink,
                    )?;
                    if !go {
                        over = true;
                    }
                    Ok(go)
                })?;
        }
        if unordered {
            return Ok(streamed);
        }
        let mut n = 0;
        for hit in best.into_sorted() {
            n += 1;
            if !sink(&hit.json) {
                break;
            }
        }
        Ok(n)
    }

    /// Passes the events of one segment (pointer `v` in day `name`, of `agent`) that `q`
    /// matches within `since..until` to `sink` (`unordered`) or to `best`; returns whether to
    /// go on.
    #[allow(clippy::too_many_arguments)]
    fn visit_segment(
        &self,
        q: &Query,
        unordered: bool,
        since: i64,
        until: i64,
        name: &str,
        agent: &str,
        v: &[u8],
        best: &mut Best,
        streamed: &mut usize,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<bool, StoreError> {
        let body = self.files.read(name, v)?;
        let raw = segment::events(&body).map_err(|e| corrupt(name, e))?;
        for line in super::zblock::lines(&raw) {
            let light: Light = serde_json::from_slice(line)
                .map_err(|e| corrupt(name, format!("stored event: {e}")))?;
            let ts = light.timestamp.nanos();
            if ts < since || ts >= until {
                continue;
            }
            if q.kind.is_some_and(|k| k != light.event.dataset) {
                continue;
            }
            if q.min_severity.is_some_and(|m| light.event.severity < m) {
                continue;
            }
            if let Some(a) = &q.after {
                let from_cursor = (ts, agent, light.event.sequence).cmp(&(
                    a.timestamp.nanos(),
                    a.agent.as_str(),
                    a.sequence,
                ));
                let wanted = if q.newest_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                if from_cursor != wanted {
                    continue;
                }
            }
            if q.filter.as_ref().is_some_and(|f| !f.matches_json(line)) {
                continue;
            }
            if unordered {
                *streamed += 1;
                if !sink(line) {
                    return Ok(false);
                }
                continue;
            }
            best.push(
                Hit {
                    ts,
                    agent: agent.to_string(),
                    seq: light.event.sequence,
                    json: line.to_vec(),
                },
                q.limit,
            );
        }
        Ok(true)
    }

    /// The record of `agent`, if it was ever seen.
    fn agent_record(&self, agent: &str) -> Result<Option<AgentRecord>, StoreError> {
        match self.index.get(AGENTS, agent.as_bytes())? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| corrupt(AGENTS, format!("record of {agent}: {e}"))),
            None => Ok(None),
        }
    }

    /// `records` (as read by this write) with `deltas` applied, as writes of the `agents` table.
    fn update_agents(
        deltas: HashMap<&str, AgentDelta>,
        mut records: HashMap<&str, Option<AgentRecord>>,
    ) -> Result<Rows, StoreError> {
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(deltas.len());
        for (agent, delta) in deltas {
            let mut rec = records
                .remove(agent)
                .flatten()
                .unwrap_or_else(|| AgentRecord {
                    id: agent.to_string(),
                    first_seen: now,
                    ..Default::default()
                });
            rec.last_seen = now;
            rec.events += delta.events;
            rec.duplicates += delta.duplicates;
            rec.dropped += delta.dropped;
            rec.last_sequence = rec.last_sequence.max(delta.last_sequence);
            rec.last_heartbeat = rec.last_heartbeat.max(delta.last_heartbeat);
            if delta.host.is_some() {
                rec.host = delta.host;
            }
            if delta.version.is_some() {
                rec.version = delta.version;
            }
            let json = serde_json::to_vec(&rec).map_err(|e| corrupt(AGENTS, e.to_string()))?;
            out.push((agent.as_bytes().to_vec(), json));
        }
        Ok(out)
    }
}

/// Per-agent changes gathered during one write.
#[derive(Default)]
struct AgentDelta {
    events: u64,
    duplicates: u64,
    last_sequence: u64,
    last_heartbeat: Option<Timestamp>,
    host: Option<String>,
    version: Option<String>,
    dropped: u64,
}

impl EventStore for SegmentStore {
    fn write(&self, batches: &[&Batch]) -> Result<Vec<BatchOutcome>, StoreError> {
        self.check_space()?;
        let started = std::time::Instant::now();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut staged: HashMap<(i64, String), SeqSet> = HashMap::new();
        let mut open: HashMap<(i64, &str), Builder> = HashMap::new();
        let mut done: Vec<(i64, &str, Builder)> = Vec::new();
        let mut counts: HashMap<i64, u64> = HashMap::new();
        let mut deltas: HashMap<&str, AgentDelta> = HashMap::new();
        // Per agent: the highest sequence stored so far (the record, then this group's batches).
        let mut through: HashMap<&str, u64> = HashMap::new();
        // Per agent: its record as stored, read once per write.
        let mut records: HashMap<&str, Option<AgentRecord>> = HashMap::new();
        for batch in batches {
            let agent = batch.agent_id.as_str();
            let before = match through.get(agent) {
                Some(&n) => n,
                None => {
                    let record = self.agent_record(agent)?;
                    let n = record.as_ref().map_or(0, |r| r.last_sequence);
                    records.insert(agent, record);
                    n
                }
            };
            let after = before.max(batch.last_sequence);
            through.insert(agent, after);
            let mut outcome = BatchOutcome {
                last_sequence: batch.last_sequence,
                stored_through: after,
                stored_before: before,
                ..Default::default()
            };
            let delta = deltas.entry(agent).or_default();
            for received in &batch.events {
                let ev = &received.event;
                let seq = ev.event.sequence;
                let ts = ev.timestamp.nanos();
                let day = day_index(ts);
                let set_key = (day, agent.to_string());
                if !staged.contains_key(&set_key) {
                    let set = self.seqset(day, agent)?;
                    staged.insert(set_key.clone(), set);
                }
                let fresh = staged.get_mut(&set_key).is_some_and(|set| set.insert(seq));
                if !fresh {
                    outcome.duplicates += 1;
                    continue;
                }
                outcome.accepted += 1;
                *counts.entry(day).or_default() += 1;
                let builder = open
                    .entry((day, agent))
                    .or_insert_with(|| Builder::new(ts, seq));
                if !builder.fits(ts) {
                    let full = std::mem::replace(builder, Builder::new(ts, seq));
                    done.push((day, agent, full));
                }
                builder.push(
                    ts,
                    seq,
                    ev.kind().code(),
                    ev.event.severity.number(),
                    &received.raw,
                );
                match ev.kind() {
                    EventKind::Heartbeat => {
                        delta.last_heartbeat = delta.last_heartbeat.max(Some(ev.timestamp));
                        if let Some(h) = &ev.host {
                            delta.host = Some(h.name.clone());
                        }
                        if let Some(v) = &ev.agent.version {
                            delta.version = Some(v.clone());
                        }
                    }
                    EventKind::Gap => {
                        delta.dropped += ev
                            .palisade
                            .as_ref()
                            .and_then(|p| p.get("dropped"))
                            .and_then(|d| d.as_u64())
                            .unwrap_or(0);
                    }
                    _ => {}
                }
            }
            delta.events += outcome.accepted;
            delta.duplicates += outcome.duplicates;
            delta.last_sequence = delta.last_sequence.max(batch.last_sequence);
            outcomes.push(outcome);
        }
        done.extend(open.into_iter().map(|((day, agent), b)| (day, agent, b)));

        // One atomic batch per day: segments, the sequence sets covering them, the day count.
        let mut per_day: HashMap<i64, Rows> = HashMap::new();
        let mut spans: HashMap<i64, i64> = HashMap::new();
        for (day, agent, builder) in done {
            let span = spans.entry(day).or_default();
            *span = (*span).max(builder.header.ts_max.saturating_sub(builder.header.ts_min));
            let key = segment::key(builder.header.ts_min, agent, builder.header.first_seq);
            let kinds = builder.header.kinds;
            let value = builder
                .finish(SEGMENT_ZSTD_LEVEL)
                .map_err(|e| corrupt(&day_name(day), format!("cannot compress segment: {e}")))?;
            let pointer = self.files.append(&day_name(day), &value)?;
            let batch = per_day.entry(day).or_default();
            for kind_key in segment::kind_keys(&key, kinds) {
                batch.push((kind_key, pointer.to_vec()));
            }
            batch.push((key, pointer.to_vec()));
        }
        // Bodies are durable before any pointer to them is.
        let synced = std::time::Instant::now();
        self.timings.prepare.record(synced - started);
        self.files.sync()?;
        let indexed = std::time::Instant::now();
        self.timings.sync.record(indexed - synced);
        for ((day, agent), set) in &staged {
            if counts.contains_key(day) {
                per_day
                    .entry(*day)
                    .or_default()
                    .push((seqset_key(agent), set.encode()));
            }
        }
        let mut writes = Writes::with_capacity(per_day.len() + 1);
        for (day, mut batch) in per_day {
            let table = day_table(day);
            let before = u64_of(self.index.get(&table, COUNT_KEY)?);
            let added = counts.get(&day).copied().unwrap_or(0);
            batch.push((COUNT_KEY.to_vec(), (before + added).to_be_bytes().to_vec()));
            // A day that has segments but no span key was stored before it: its older segments'
            // spans are unknown, so it keeps the hour's bound (no key).
            let span = self.index.get(&table, SPAN_KEY)?;
            if span.is_some() || before == 0 {
                let old = span
                    .as_ref()
                    .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes))
                    .unwrap_or(0);
                let new = spans.get(&day).copied().unwrap_or(0).max(old);
                if span.is_none() || new > old {
                    batch.push((SPAN_KEY.to_vec(), new.to_be_bytes().to_vec()));
                }
            }
            // Days stored before the kind index were indexed at open; a new day starts indexed.
            batch.push((KIND_INDEX_KEY.to_vec(), vec![1u8]));
            writes.insert(table, batch);
        }
        // In sled (a batch per table) the days before the agents: an agent's record never
        // counts events a crash lost.
        let mut order: Vec<String> = writes.keys().cloned().collect();
        order.push(AGENTS.to_string());
        writes.insert(AGENTS.to_string(), Self::update_agents(deltas, records)?);
        self.index.commit(writes, &order)?;
        self.timings.index.record(indexed.elapsed());
        // Durable: the staged sequence sets become the truth.
        let mut cache = self.seqsets.lock().unwrap_or_else(|p| p.into_inner());
        for (k, set) in staged {
            cache.insert(k, set);
        }
        Ok(outcomes)
    }

    fn query(&self, q: &Query, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<usize, StoreError> {
        self.visit(q, false, sink)
    }

    fn scan(&self, q: &Query, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<usize, StoreError> {
        self.visit(q, true, sink)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let mut out = Vec::new();
        let all = (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        self.index.scan(AGENTS, all, false, &mut |k, v| {
            out.push(serde_json::from_slice(v).map_err(|e| {
                corrupt(
                    AGENTS,
                    format!("record of {}: {e}", String::from_utf8_lossy(k)),
                )
            })?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn note_certificate(
        &self,
        agent: &str,
        serial: &str,
        not_after: Timestamp,
    ) -> Result<(), StoreError> {
        let Some(mut rec) = self.agent_record(agent)? else {
            return Ok(());
        };
        rec.cert_serial = Some(serial.to_string());
        rec.cert_not_after = Some(not_after);
        let json = serde_json::to_vec(&rec).map_err(|e| corrupt(AGENTS, e.to_string()))?;
        let row = (agent.as_bytes().to_vec(), json);
        self.index
            .commit(Writes::from([(AGENTS.to_string(), vec![row])]), &[])
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let days = self.stored_days()?;
        let mut events = 0;
        for (index, _) in &days {
            events += u64_of(self.index.get(&day_table(*index), COUNT_KEY)?);
        }
        Ok(StoreStats {
            events,
            size_bytes: self.index.size_on_disk()? + self.files.size(),
            days: days.into_iter().map(|(_, n)| n).collect(),
        })
    }

    fn apply_retention(&self, now: Timestamp, days: u32) -> Result<Vec<String>, StoreError> {
        let cutoff = day_index(now.nanos()) - i64::from(days);
        let mut dropped = Vec::new();
        for (index, name) in self.stored_days()? {
            if index >= cutoff {
                continue;
            }
            self.seqsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(d, _), _| *d != index);
            self.index.drop_table(&day_table(index))?;
            self.files.remove(&name)?;
            dropped.push(name);
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::batch::{decode, encode, Limits};
    use palisade_wire::{Event, Severity};

    fn batch_at(agent: &str, seqs: &[u64], ts: impl Fn(u64) -> i64, kind: EventKind) -> Batch {
        batch_of(agent, seqs, ts, |_| kind)
    }

    /// A batch of `agent`'s events `seqs`, each at `ts(seq)` and of kind `kind(seq)`.
    fn batch_of(
        agent: &str,
        seqs: &[u64],
        ts: impl Fn(u64) -> i64,
        kind: impl Fn(u64) -> EventKind,
    ) -> Batch {
        let lines: Vec<Vec<u8>> = seqs
            .iter()
            .map(|&s| {
                let mut e = Event::new(agent, kind(s), Severity::Low);
                e.timestamp = Timestamp(ts(s));
                e.seal(s);
                e.to_json()
            })
            .collect();
        let pairs: Vec<(u64, &[u8])> = seqs
            .iter()
            .copied()
            .zip(lines.iter().map(|l| &l[..]))
            .collect();
        decode(&encode(agent, &pairs, 1).unwrap(), &Limits::default()).unwrap()
    }

    fn batch(agent: &str, seqs: &[u64], t0: i64, kind: EventKind) -> Batch {
        batch_at(agent, seqs, |s| t0 + s as i64, kind)
    }

    fn query(
        store: &SegmentStore,
        kind: Option<EventKind>,
        limit: usize,
        newest_first: bool,
    ) -> Vec<Event> {
        let q = Query {
            kind,
            newest_first,
            ..Query::everything(limit)
        };
        let mut out = Vec::new();
        store
            .query(&q, &mut |v| {
                out.push(serde_json::from_slice(v).unwrap());
                true
            })
            .unwrap();
        out
    }

    fn open(dir: &Path, engine: Backend) -> SegmentStore {
        SegmentStore::open_with(dir, 8 << 20, engine).unwrap()
    }

    on_both_engines!(
        newest_first_walks_back_only_as_far_as_the_days_widest_segment,
        scan_streams_every_match_without_limit_and_stops_when_told,
        kind_lookups_walk_the_kind_index_and_older_days_are_indexed_at_open,
        duplicates_are_dropped_within_and_across_writes,
        dedup_survives_reopen_and_retention_drops_old_days,
        ordering_and_limits_across_agents_segments_and_days,
        paging_after_a_cursor_neither_skips_nor_repeats_equal_timestamps,
        a_filter_counts_towards_the_limit_only_when_it_matches,
    );

    const T: i64 = 1_700_000_000_000_000_000;

    /// Newest first, the walk back through segment headers stops at the day's widest
    /// segment span, not at the hour every segment is bounded by: 200 segments of 9 s each
    /// and one of 1,990 s. The wide one still gives its newest event; a day without the span
    /// key (stored before it) walks the hour.
    fn newest_first_walks_back_only_as_far_as_the_days_widest_segment(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), engine);
        let sec = 1_000_000_000;
        let wide = batch_of(
            "b",
            &[1, 2],
            |q| T + if q == 1 { 5 } else { 1995 } * sec,
            |_| EventKind::Flow,
        );
        s.write(&[&wide]).unwrap();
        // 200 segments of agent a, 10 events a second apart each (9 s spans).
        let narrow = |s: &SegmentStore| {
            for i in 0..200u64 {
                let seqs: Vec<u64> = (i * 10 + 1..=i * 10 + 10).collect();
                let b = batch_of(
                    "a",
                    &seqs,
                    |q| T + (q as i64 - 1) * sec,
                    |_| EventKind::Flow,
                );
                s.write(&[&b]).unwrap();
            }
        };
        narrow(&s);
        let newest = |s: &SegmentStore| {
            let before = s.headers_read.load(std::sync::atomic::Ordering::Relaxed);
            let got: Vec<(String, u64)> = query(s, None, 5, true)
                .into_iter()
                .map(|e| (e.agent.id, e.event.sequence))
                .collect();
            let read = s.headers_read.load(std::sync::atomic::Ordering::Relaxed) - before;
            (got, read)
        };
        let want: Vec<(String, u64)> = [("a", 2000), ("a", 1999), ("a", 1998), ("a", 1997)]
            .iter()
            .map(|(a, q)| (a.to_string(), *q))
            .chain(std::iter::once(("b".to_string(), 2)))
            .collect();
        // The wide segment sets the bound: the walk reaches it (1,990 s back), no further.
        let (got, read) = newest(&s);
        assert_eq!(got, want);
        assert!(read <= 202, "{read} headers read");
        // Without it the day's bound is the last 1,990 s; with only narrow segments, seconds.
        let (_, all) = {
            let dir2 = tempfile::tempdir().unwrap();
            let s2 = open(dir2.path(), engine);
            narrow(&s2);
            let (_, read) = newest(&s2);
            assert!(read <= 3, "{read} headers read with 9 s segments");
            // A day from before the span key: the hour.
            for (index, _) in s2.stored_days().unwrap() {
                s2.index.remove(&day_table(index), SPAN_KEY).unwrap();
            }
            newest(&s2)
        };
        assert_eq!(all, 200, "a day without the span key walks back the hour");
    }

    fn scan_streams_every_match_without_limit_and_stops_when_told(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), engine);
        let seqs: Vec<u64> = (1..=500).collect();
        s.write(&[&batch("a", &seqs, T, EventKind::Alert)]).unwrap();
        s.write(&[&batch("b", &seqs, T, EventKind::Heartbeat)])
            .unwrap();
        let q = Query {
            kind: Some(EventKind::Alert),
            newest_first: true,
            ..Query::everything(1)
        };
        let mut seen = std::collections::HashSet::new();
        let n = s
            .scan(&q, &mut |v| {
                let e: Event = serde_json::from_slice(v).unwrap();
                assert_eq!(e.kind(), EventKind::Alert);
                seen.insert(e.event.sequence);
                true
            })
            .unwrap();
        assert_eq!(
            (n, seen.len()),
            (500, 500),
            "limit ignored, every alert once"
        );
        let mut taken = 0;
        let n = s
            .scan(&q, &mut |_| {
                taken += 1;
                taken < 10
            })
            .unwrap();
        assert_eq!((n, taken), (10, 10));
    }

    /// Keys of every day tree starting with `prefix`.
    fn day_keys(s: &SegmentStore, prefix: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (index, name) in s.stored_days().unwrap() {
            let mut hi = prefix.to_vec();
            hi.push(0xff);
            s.index
                .range(&day_table(index), prefix, &hi, false, &mut |k, _| {
                    if k.starts_with(prefix) {
                        out.push((name.clone(), k.to_vec()));
                    }
                    Ok(true)
                })
                .unwrap();
        }
        out
    }

    fn kind_lookups_walk_the_kind_index_and_older_days_are_indexed_at_open(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let cycle = [
            EventKind::Flow,
            EventKind::Heartbeat,
            EventKind::Integrity,
            EventKind::Alert,
            EventKind::Drill,
            EventKind::Flow,
        ];
        // Two agents over two days, batches of mixed kinds; a third sends flows only.
        let kind_of = |agent: &str, q: u64| {
            if agent == "c" {
                EventKind::Flow
            } else {
                cycle[(q % 6) as usize]
            }
        };
        let mixed = |agent: &str, seqs: &[u64], t0: i64| {
            batch_of(
                agent,
                seqs,
                |q| t0 + q as i64 * 1_000_000_000,
                |q| kind_of(agent, q),
            )
        };
        let s = open(dir.path(), engine);
        let mut expected: HashMap<EventKind, usize> = HashMap::new();
        for w in 0..12u64 {
            let seqs: Vec<u64> = (w * 40 + 1..=w * 40 + 40).collect();
            let t0 = T + (w / 6) as i64 * NANOS_PER_DAY;
            for agent in ["a", "b", "c"] {
                s.write(&[&mixed(agent, &seqs, t0)]).unwrap();
                for &q in &seqs {
                    *expected.entry(kind_of(agent, q)).or_default() += 1;
                }
            }
        }
        assert_eq!(s.stored_days().unwrap().len(), 2);
        let check = |s: &SegmentStore, what: &str| {
            for kind in EventKind::ALL {
                let all = query(s, Some(kind), usize::MAX, false);
                assert!(all.iter().all(|e| e.kind() == kind), "{what}: {kind}");
                assert_eq!(
                    all.len(),
                    expected.get(&kind).copied().unwrap_or(0),
                    "{what}: {kind}"
                );
                let newest = query(s, Some(kind), 5, true);
                let mut want: Vec<&Event> = all.iter().rev().take(5).collect();
                want.sort_by(|x, y| {
                    y.timestamp
                        .cmp(&x.timestamp)
                        .then(y.agent.id.cmp(&x.agent.id))
                });
                assert_eq!(
                    newest
                        .iter()
                        .map(|e| (e.timestamp, e.event.sequence))
                        .collect::<Vec<_>>(),
                    want.iter()
                        .map(|e| (e.timestamp, e.event.sequence))
                        .collect::<Vec<_>>(),
                    "{what}: newest {kind}"
                );
            }
        };
        check(&s, "indexed as written");
        // Agents a and b: every segment holds heartbeats, integrity and drills; c's none.
        let kind_keys = day_keys(&s, b"K");
        assert_eq!(kind_keys.len(), 12 * 2 * 3);
        assert_eq!(day_keys(&s, KIND_INDEX_KEY).len(), 2);

        // The look-up goes through the index: without its keys (day still marked) it finds nothing.
        for (name, k) in &kind_keys {
            let index = s
                .stored_days()
                .unwrap()
                .into_iter()
                .find(|(_, n)| n == name)
                .unwrap()
                .0;
            s.index.remove(&day_table(index), k).unwrap();
        }
        assert!(query(&s, Some(EventKind::Heartbeat), usize::MAX, false).is_empty());
        assert_eq!(
            query(&s, Some(EventKind::Flow), usize::MAX, false).len(),
            expected[&EventKind::Flow]
        );
        // A store from before the index (no keys, no mark): look-ups walk every segment ...
        for (index, _) in s.stored_days().unwrap() {
            s.index.remove(&day_table(index), KIND_INDEX_KEY).unwrap();
        }
        check(&s, "no index");
        drop(s);
        // ... until it is opened again, which indexes its days.
        let s = open(dir.path(), engine);
        assert_eq!(day_keys(&s, b"K"), kind_keys);
        assert_eq!(day_keys(&s, KIND_INDEX_KEY).len(), 2);
        check(&s, "indexed at open");
    }

    fn duplicates_are_dropped_within_and_across_writes(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), engine);
        let a = batch("a", &[1, 2, 3], T, EventKind::Synthetic);
        let out = s.write(&[&a, &a]).unwrap();
        assert_eq!(out[0].accepted, 3);
        assert_eq!(out[1].duplicates, 3);
        let out = s
            .write(&[&batch("a", &[3, 4], T, EventKind::Heartbeat)])
            .unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 1));
        assert_eq!(query(&s, None, usize::MAX, false).len(), 4);
        assert_eq!(query(&s, Some(EventKind::Heartbeat), 10, false).len(), 1);
        assert_eq!(s.stats().unwrap().events, 4);
        let agents = s.agents().unwrap();
        assert_eq!(agents[0].events, 4);
        assert_eq!(agents[0].duplicates, 4);
        assert!(agents[0].last_heartbeat.is_some());
    }

    fn dedup_survives_reopen_and_retention_drops_old_days(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let old = 1_600_000_000_000_000_000;
        let new = old + 200 * NANOS_PER_DAY;
        {
            let s = open(dir.path(), engine);
            s.write(&[&batch("a", &[1], old, EventKind::Synthetic)])
                .unwrap();
            s.write(&[&batch("a", &[2], new, EventKind::Synthetic)])
                .unwrap();
        }
        let s = open(dir.path(), engine);
        let again = s
            .write(&[&batch("a", &[2], new, EventKind::Synthetic)])
            .unwrap();
        assert_eq!(again[0].duplicates, 1, "dedup state is durable");
        assert_eq!(query(&s, None, 100, false).len(), 2);
        let dropped = s.apply_retention(Timestamp(new), 180).unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(query(&s, None, 100, false).len(), 1);
        assert_eq!(s.stats().unwrap().events, 1);
    }

    fn ordering_and_limits_across_agents_segments_and_days(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), engine);
        // Agent a: one event per 20 minutes for 3 days (forces span splits and day splits);
        // agent b interleaved 7 minutes later.
        let step = 20 * 60 * 1_000_000_000i64;
        let seqs: Vec<u64> = (1..=216).collect();
        s.write(&[
            &batch_at("a", &seqs, |q| T + q as i64 * step, EventKind::Synthetic),
            &batch_at(
                "b",
                &seqs,
                |q| T + q as i64 * step + 7 * 60 * 1_000_000_000,
                EventKind::Synthetic,
            ),
        ])
        .unwrap();
        let all = query(&s, None, usize::MAX, false);
        assert_eq!(all.len(), 432);
        assert!(all.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        let newest = query(&s, None, 5, true);
        let expect: Vec<_> = all
            .iter()
            .rev()
            .take(5)
            .map(|e| (e.agent.id.clone(), e.event.sequence))
            .collect();
        let got: Vec<_> = newest
            .iter()
            .map(|e| (e.agent.id.clone(), e.event.sequence))
            .collect();
        assert_eq!(got, expect);
        let oldest = query(&s, None, 3, false);
        assert_eq!(oldest[0].event.sequence, 1);
        assert_eq!(oldest[0].agent.id, "a");
        assert_eq!(oldest[1].agent.id, "b");
        // A window in the middle, one agent.
        let q = Query {
            since: Timestamp(T + 100 * step),
            until: Timestamp(T + 110 * step),
            agent: Some("b".into()),
            ..Query::everything(1000)
        };
        let mut n = 0;
        s.query(&q, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 10);
        assert!(s.stats().unwrap().days.len() >= 3);
    }

    fn paging_after_a_cursor_neither_skips_nor_repeats_equal_timestamps(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), engine);
        // Three agents, 50 events each, all at the same instant, in several segments.
        for agent in ["c", "a", "b"] {
            let seqs: Vec<u64> = (1..=50).collect();
            for chunk in seqs.chunks(17) {
                s.write(&[&batch_at(agent, chunk, |_| T, EventKind::Synthetic)])
                    .unwrap();
            }
        }
        let keys = |newest_first: bool, page: usize| {
            let mut all = Vec::new();
            let mut after: Option<crate::query::EventKey> = None;
            for _ in 0..1000 {
                let q = Query {
                    newest_first,
                    after: after.clone(),
                    ..Query::everything(page)
                };
                let mut got = Vec::new();
                s.query(&q, &mut |v| {
                    got.push(crate::query::EventKey::of_json(v).unwrap());
                    true
                })
                .unwrap();
                after = got.last().cloned();
                let done = got.len() < page;
                all.extend(got);
                if done {
                    return all;
                }
            }
            panic!("paging did not end");
        };
        for page in [1, 7, 50, 149, 150, 151] {
            let up = keys(false, page);
            assert_eq!(up.len(), 150, "page {page}");
            assert!(up.windows(2).all(|w| w[0] < w[1]), "page {page}");
            let down = keys(true, page);
            assert_eq!(down.len(), 150, "page {page}");
            assert!(down.windows(2).all(|w| w[0] > w[1]), "page {page}");
        }
    }

    fn a_filter_counts_towards_the_limit_only_when_it_matches(engine: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), engine);
        let seqs: Vec<u64> = (1..=100).collect();
        s.write(&[&batch("a", &seqs, T, EventKind::Synthetic)])
            .unwrap();
        let filter =
            crate::query::Filter::parse("event.sequence > 90 or event.sequence = 3").unwrap();
        let q = Query {
            filter: Some(std::sync::Arc::new(filter)),
            ..Query::everything(5)
        };
        let mut got = Vec::new();
        s.query(&q, &mut |v| {
            got.push(crate::query::EventKey::of_json(v).unwrap().sequence);
            true
        })
        .unwrap();
        assert_eq!(got, vec![3, 91, 92, 93, 94]);
    }

    /// `migrate-store`: a sled index becomes redb whole (every day table and the agents, the
    /// kind index and dedup sets with them), the sled index is kept aside, a second run has
    /// nothing to do, and a run cut off between its two renames (both present) is finished.
    #[test]
    fn a_sled_index_migrates_to_redb_whole() {
        let dir = tempfile::tempdir().unwrap();
        let seqs: Vec<u64> = (1..=300).collect();
        let day = |s: u64| T + (s / 100) as i64 * NANOS_PER_DAY + s as i64;
        let kind = |s: u64| {
            if s % 7 == 0 {
                EventKind::Heartbeat
            } else {
                EventKind::Flow
            }
        };
        let everything = |s: &SegmentStore| {
            (
                query(s, None, usize::MAX, false),
                query(s, Some(EventKind::Heartbeat), 5, true),
                s.stats().unwrap().events,
                s.agents().unwrap(),
            )
        };
        let before = {
            let s = open(dir.path(), Backend::Sled);
            for agent in ["a", "b", "c"] {
                for part in seqs.chunks(40) {
                    s.write(&[&batch_of(agent, part, day, kind)]).unwrap();
                }
            }
            s.note_certificate("b", "0a1b", Timestamp(T)).unwrap();
            assert_eq!(s.index.engine(), "sled");
            everything(&s)
        };
        assert_eq!(before.0.len(), 900);
        let m = super::super::migrate_index_to_redb(dir.path(), 8 << 20).unwrap();
        assert_eq!(m.tables, 5, "four days (sequence / 100) and the agents");
        assert!(m.sled_kept_at.join("conf").exists());
        assert!(!dir.path().join("index").exists());
        let s = SegmentStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(s.index.engine(), "redb");
        assert_eq!(everything(&s), before);
        drop(s);
        let refused = super::super::migrate_index_to_redb(dir.path(), 8 << 20).unwrap_err();
        assert!(refused.to_string().contains("already redb"), "{refused}");

        // Cut off between the renames: both present, which the store refuses to open.
        std::fs::rename(&m.sled_kept_at, dir.path().join("index")).unwrap();
        let both = SegmentStore::open(dir.path(), 8 << 20).unwrap_err();
        assert!(both.to_string().contains("holds both"), "{both}");
        // Finishing is refused if the redb file does not match sled...
        let s = open(dir.path().join("x").as_path(), Backend::Redb);
        drop(s);
        std::fs::copy(
            dir.path().join("x/index.redb"),
            dir.path().join("index.redb.other"),
        )
        .unwrap();
        std::fs::rename(
            dir.path().join("index.redb"),
            dir.path().join("index.redb.mine"),
        )
        .unwrap();
        std::fs::rename(
            dir.path().join("index.redb.other"),
            dir.path().join("index.redb"),
        )
        .unwrap();
        let differs = super::super::migrate_index_to_redb(dir.path(), 8 << 20).unwrap_err();
        assert!(differs.to_string().contains("differs"), "{differs}");
        // ... and done when it does.
        std::fs::rename(
            dir.path().join("index.redb.mine"),
            dir.path().join("index.redb"),
        )
        .unwrap();
        let finished = super::super::migrate_index_to_redb(dir.path(), 8 << 20).unwrap();
        assert_eq!(finished.rows, m.rows);
        let s = SegmentStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(everything(&s), before);
        // The dedup sets came along.
        let again = s.write(&[&batch_of("a", &seqs[..40], day, kind)]).unwrap();
        assert_eq!((again[0].accepted, again[0].duplicates), (0, 40));
    }

    /// Resident memory of the store as segments accumulate, at the soak's write pattern (16
    /// agents, one segment per agent's batch, 50 batches a second of event time, written 16 to
    /// a call as the store writer groups them), with small events: what grows is the index's
    /// keys, not the bodies. Prints RSS every 50,000 segments for each page cache size in
    /// `RSS_CACHES_MIB` (default `64,8`; 64 MiB is the collector's), each in a fresh store
    /// whose index is `RSS_ENGINE`'s (`redb`, the default, or `sled`); `RSS_SEGMENTS`
    /// segments each (default 600,000: about three hours of the 50,000 events/s soak, whose
    /// batches hold 1,000 events). Run alone (RSS is the process's):
    /// `cargo test --release -p palisade-collector --lib store::segment_store::tests::resident_growth -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn resident_growth() {
        let rss_mib = || crate::metrics::resident_bytes().unwrap_or(0) as f64 / 1048576.0;
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
        let segments: u64 = var("RSS_SEGMENTS", "600000").parse().unwrap();
        let caches: Vec<u64> = var("RSS_CACHES_MIB", "64,8")
            .split(',')
            .map(|c| c.trim().parse().unwrap())
            .collect();
        let engine = match var("RSS_ENGINE", "redb").as_str() {
            "sled" => Backend::Sled,
            _ => Backend::Redb,
        };
        let agents: Vec<String> = (0..16).map(|a| format!("agent-{a:02}")).collect();
        let t0 = Timestamp::now().nanos() - 3 * 3600 * 1_000_000_000;
        for cache in caches {
            let dir = tempfile::tempdir().unwrap();
            let s = SegmentStore::open_with(dir.path(), cache << 20, engine).unwrap();
            let started = std::time::Instant::now();
            let mut line = format!("{engine}, cache {cache} MiB, RSS (MiB) every 50,000 segments:");
            for call in 0..segments / 16 {
                // 50 segments a second of event time; each agent's batch 4 events.
                let ts = t0 + (call * 16 / 50) as i64 * 1_000_000_000;
                let seq = call * 4 + 1;
                let batches: Vec<Batch> = agents
                    .iter()
                    .map(|a| {
                        batch_at(
                            a,
                            &[seq, seq + 1, seq + 2, seq + 3],
                            |_| ts,
                            EventKind::Flow,
                        )
                    })
                    .collect();
                s.write(&batches.iter().collect::<Vec<_>>()).unwrap();
                if (call + 1) * 16 % 50_000 == 0 {
                    line.push_str(&format!(" {:.0}", rss_mib()));
                }
            }
            println!(
                "{line}\n  ({segments} segments in {:.0} s; the index {:.0} MiB on disk)",
                started.elapsed().as_secs_f64(),
                s.index.size_on_disk().unwrap() as f64 / 1048576.0
            );
        }
    }
}
