//! The sled backend: one set of trees per UTC day (retention is `drop_tree`), plus `agents` and
//! `meta`. Writes go primary tree first, indexes next, the agent/dedup index last, then one
//! `flush` (fsync) for the whole group; so if sled recovers a prefix of writes after a crash, a
//! dedup entry never exists without its event, and nothing is acknowledged before the flush.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use palisade_wire::batch::Batch;
use palisade_wire::{EventKind, Timestamp};
use serde::Deserialize;

use super::keys;
use super::{AgentRecord, BatchOutcome, EventStore, Query, StoreError, StoreStats};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;
const EVENTS_TOTAL: &[u8] = b"events_total";

fn sled_err(context: impl Into<String>) -> impl FnOnce(sled::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Sled { context, source }
}

#[derive(Clone)]
struct DayTrees {
    ev: sled::Tree,
    ag: sled::Tree,
    kd: sled::Tree,
    sv: sled::Tree,
    si: sled::Tree,
}

#[derive(Default)]
struct DayBatch {
    ev: sled::Batch,
    ag: sled::Batch,
    kd: sled::Batch,
    sv: sled::Batch,
    si: sled::Batch,
}

/// The sled event store.
pub struct SledStore {
    db: sled::Db,
    agents: sled::Tree,
    meta: sled::Tree,
    days: Mutex<HashMap<i64, DayTrees>>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").finish_non_exhaustive()
    }
}

fn day_name(day_index: i64) -> String {
    Timestamp(day_index.saturating_mul(NANOS_PER_DAY)).day()
}

fn day_index(ts: i64) -> i64 {
    ts.div_euclid(NANOS_PER_DAY)
}

fn u64_of(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Just the fields filtering needs, parsed from stored JSON.
#[derive(Deserialize)]
struct SeverityOnly {
    event: SeverityInner,
}
#[derive(Deserialize)]
struct SeverityInner {
    severity: u8,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with a cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(sled_err(format!("cannot open {}", dir.display())))?;
        let agents = db.open_tree("agents").map_err(sled_err("open agents"))?;
        let meta = db.open_tree("meta").map_err(sled_err("open meta"))?;
        Ok(SledStore {
            db,
            agents,
            meta,
            days: Mutex::new(HashMap::new()),
        })
    }

    fn day(&self, index: i64) -> Result<DayTrees, StoreError> {
        let mut days = self.days.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = days.get(&index) {
            return Ok(t.clone());
        }
        let name = day_name(index);
        let open = |prefix: &str| {
            self.db
                .open_tree(format!("{prefix}/{name}"))
                .map_err(sled_err(format!("open {prefix}/{name}")))
        };
        let trees = DayTrees {
            ev: open("ev")?,
            ag: open("ag")?,
            kd: open("kd")?,
            sv: open("sv")?,
            si: open("si")?,
        };
        days.insert(index, trees.clone());
        Ok(trees)
    }

    /// Day indexes that have an event tree, ascending.
    fn stored_days(&self) -> Vec<(i64, String)> {
        let mut out: Vec<(i64, String)> = self
            .db
            .tree_names()
            .into_iter()
            .filter_map(|n| {
                let name = std::str::from_utf8(&n)
                    .ok()?
                    .strip_prefix("ev/")?
                    .to_string();
                let ts: Timestamp = format!("{name}T00:00:00Z").parse().ok()?;
                Some((day_index(ts.nanos()), name))
            })
            .collect();
        out.sort();
        out
    }

    fn matches(&self, q: &Query, pk: &[u8], value: &[u8]) -> bool {
        if let Some(agent) = &q.agent {
            match keys::split_primary(pk) {
                Some((_, a, _)) if a == agent => {}
                _ => return false,
            }
        }
        if let Some(min) = q.min_severity {
            match serde_json::from_slice::<SeverityOnly>(value) {
                Ok(s) if s.event.severity >= min.number() => {}
                _ => return false,
            }
        }
        true
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
    dropped: u64,
}

impl EventStore for SledStore {
    fn write(&self, batches: &[&Batch]) -> Result<Vec<BatchOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut seen: HashSet<(&str, u64)> = HashSet::new();
        let mut pending: BTreeMap<i64, DayBatch> = BTreeMap::new();
        let mut deltas: HashMap<&str, AgentDelta> = HashMap::new();
        let mut accepted_total = 0u64;
        for batch in batches {
            let agent = batch.agent_id.as_str();
            let mut outcome = BatchOutcome {
                last_sequence: batch.last_sequence,
                ..Default::default()
            };
            let delta = deltas.entry(agent).or_default();
            for received in &batch.events {
                let ev = &received.event;
                let seq = ev.event.sequence;
                let ts = ev.timestamp.nanos();
                let index = day_index(ts);
                let trees = self.day(index)?;
                let akey = keys::by_agent(agent, seq);
                let stored = match trees.ag.get(&akey).map_err(sled_err("read ag"))? {
                    // The event itself must be there too (see the module comment).
                    Some(pk) => trees.ev.contains_key(pk).map_err(sled_err("read ev"))?,
                    None => false,
                };
                if stored || !seen.insert((agent, seq)) {
                    outcome.duplicates += 1;
                    continue;
                }
                outcome.accepted += 1;
                let pk = keys::primary(ts, agent, seq);
                let day = pending.entry(index).or_default();
                day.ev.insert(pk.as_slice(), received.raw.as_slice());
                day.kd
                    .insert(keys::prefixed(&[ev.kind().code()], &pk), &[] as &[u8]);
                day.sv.insert(
                    keys::prefixed(&[ev.event.severity.number()], &pk),
                    &[] as &[u8],
                );
                if let Some(ip) = ev.source.as_ref().and_then(|s| s.ip) {
                    day.si
                        .insert(keys::prefixed(&keys::ip_bytes(ip), &pk), &[] as &[u8]);
                }
                day.ag.insert(akey, pk);
                match ev.kind() {
                    EventKind::Heartbeat => {
                        delta.last_heartbeat = delta.last_heartbeat.max(Some(ev.timestamp));
                        if let Some(h) = &ev.host {
                            delta.host = Some(h.name.clone());
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
            accepted_total += outcome.accepted;
            outcomes.push(outcome);
        }

        // Primary trees first, then secondary indexes, then the dedup index.
        let mut trees = Vec::with_capacity(pending.len());
        for (index, day) in pending {
            trees.push((self.day(index)?, day));
        }
        for (t, d) in trees.iter_mut() {
            t.ev.apply_batch(std::mem::take(&mut d.ev))
                .map_err(sled_err("write events"))?;
        }
        for (t, d) in trees.iter_mut() {
            t.kd.apply_batch(std::mem::take(&mut d.kd))
                .map_err(sled_err("write kind index"))?;
            t.sv.apply_batch(std::mem::take(&mut d.sv))
                .map_err(sled_err("write severity index"))?;
            t.si.apply_batch(std::mem::take(&mut d.si))
                .map_err(sled_err("write source-ip index"))?;
        }
        for (t, d) in trees.iter_mut() {
            t.ag.apply_batch(std::mem::take(&mut d.ag))
                .map_err(sled_err("write agent index"))?;
        }

        let now = Timestamp::now();
        for (agent, delta) in deltas {
            let mut rec = match self.agents.get(agent).map_err(sled_err("read agents"))? {
                Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    tree: "agents".into(),
                    reason: format!("record of {agent}: {e}"),
                })?,
                None => AgentRecord {
                    id: agent.to_string(),
                    first_seen: now,
                    ..Default::default()
                },
            };
            rec.last_seen = now;
            rec.events += delta.events;
            rec.duplicates += delta.duplicates;
            rec.dropped += delta.dropped;
            rec.last_sequence = rec.last_sequence.max(delta.last_sequence);
            rec.last_heartbeat = rec.last_heartbeat.max(delta.last_heartbeat);
            if delta.host.is_some() {
                rec.host = delta.host;
            }
            let json = serde_json::to_vec(&rec).map_err(|e| StoreError::Corrupt {
                tree: "agents".into(),
                reason: e.to_string(),
            })?;
            self.agents
                .insert(agent, json)
                .map_err(sled_err("write agents"))?;
        }
        if accepted_total > 0 {
            let total = u64_of(self.meta.get(EVENTS_TOTAL).map_err(sled_err("read meta"))?);
            self.meta
                .insert(EVENTS_TOTAL, &(total + accepted_total).to_be_bytes())
                .map_err(sled_err("write meta"))?;
        }
        self.db.flush().map_err(sled_err("flush"))?;
        Ok(outcomes)
    }

    fn query(&self, q: &Query, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<usize, StoreError> {
        if q.limit == 0 || q.until <= q.since {
            return Ok(0);
        }
        let first = day_index(q.since.nanos());
        let last = day_index(q.until.nanos().saturating_sub(1));
        let mut days: Vec<i64> = self
            .stored_days()
            .into_iter()
            .map(|(i, _)| i)
            .filter(|i| (first..=last).contains(i))
            .collect();
        if q.newest_first {
            days.reverse();
        }
        let lo = keys::ts_bytes(q.since.nanos());
        let hi = keys::ts_bytes(q.until.nanos());
        let mut n = 0usize;
        for index in days {
            let trees = self.day(index)?;
            let mut visit = |pk: &[u8], value: &[u8]| -> bool {
                if !self.matches(q, pk, value) {
                    return true;
                }
                n += 1;
                sink(value) && n < q.limit
            };
            match q.kind {
                Some(kind) => {
                    let code = [kind.code()];
                    let range = keys::prefixed(&code, &lo)..keys::prefixed(&code, &hi);
                    let iter = trees.kd.range(range);
                    let iter: Box<dyn Iterator<Item = _>> = if q.newest_first {
                        Box::new(iter.rev())
                    } else {
                        Box::new(iter)
                    };
                    for item in iter {
                        let (k, _) = item.map_err(sled_err("scan kind index"))?;
                        let pk = &k[1..];
                        let Some(value) = trees.ev.get(pk).map_err(sled_err("read ev"))? else {
                            continue;
                        };
                        if !visit(pk, &value) {
                            return Ok(n);
                        }
                    }
                }
                None => {
                    let iter = trees.ev.range(lo.as_slice()..hi.as_slice());
                    let iter: Box<dyn Iterator<Item = _>> = if q.newest_first {
                        Box::new(iter.rev())
                    } else {
                        Box::new(iter)
                    };
                    for item in iter {
                        let (pk, value) = item.map_err(sled_err("scan events"))?;
                        if !visit(&pk, &value) {
                            return Ok(n);
                        }
                    }
                }
            }
        }
        Ok(n)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(sled_err("scan agents"))?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    tree: "agents".into(),
                    reason: format!("record of {}: {e}", String::from_utf8_lossy(&k)),
                })
            })
            .collect()
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats {
            events: u64_of(self.meta.get(EVENTS_TOTAL).map_err(sled_err("read meta"))?),
            size_bytes: self.db.size_on_disk().map_err(sled_err("size"))?,
            days: self.stored_days().into_iter().map(|(_, n)| n).collect(),
        })
    }

    fn apply_retention(&self, now: Timestamp, days: u32) -> Result<Vec<String>, StoreError> {
        let cutoff = day_index(now.nanos()) - i64::from(days);
        let mut dropped = Vec::new();
        for (index, name) in self.stored_days() {
            if index >= cutoff {
                continue;
            }
            let trees = self.day(index)?;
            let removed = trees.ev.len() as u64;
            self.days
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&index);
            for prefix in ["ag", "kd", "sv", "si", "ev"] {
                self.db
                    .drop_tree(format!("{prefix}/{name}"))
                    .map_err(sled_err(format!("drop {prefix}/{name}")))?;
            }
            let total = u64_of(self.meta.get(EVENTS_TOTAL).map_err(sled_err("read meta"))?);
            self.meta
                .insert(EVENTS_TOTAL, &total.saturating_sub(removed).to_be_bytes())
                .map_err(sled_err("write meta"))?;
            dropped.push(name);
        }
        if !dropped.is_empty() {
            self.db.flush().map_err(sled_err("flush"))?;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::batch::{decode, encode, Limits};
    use palisade_wire::{Event, Severity};

    fn batch(agent: &str, seqs: &[u64], ts: i64, kind: EventKind) -> Batch {
        let lines: Vec<Vec<u8>> = seqs
            .iter()
            .map(|&s| {
                let mut e = Event::new(agent, kind, Severity::Low);
                e.timestamp = Timestamp(ts + s as i64);
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

    fn all(store: &SledStore, kind: Option<EventKind>) -> Vec<Event> {
        let q = Query {
            since: Timestamp(0),
            until: Timestamp(i64::MAX),
            agent: None,
            kind,
            min_severity: None,
            limit: usize::MAX,
            newest_first: false,
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

    #[test]
    fn duplicates_are_dropped_within_and_across_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let t = 1_700_000_000_000_000_000;
        let a = batch("a", &[1, 2, 3], t, EventKind::Synthetic);
        let out = s.write(&[&a, &a]).unwrap();
        assert_eq!(out[0].accepted, 3);
        assert_eq!(out[1].duplicates, 3);
        let out = s
            .write(&[&batch("a", &[3, 4], t, EventKind::Heartbeat)])
            .unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 1));
        assert_eq!(all(&s, None).len(), 4);
        assert_eq!(all(&s, Some(EventKind::Heartbeat)).len(), 1);
        assert_eq!(s.stats().unwrap().events, 4);
        let agents = s.agents().unwrap();
        assert_eq!(agents[0].events, 4);
        assert_eq!(agents[0].duplicates, 4);
        assert!(agents[0].last_heartbeat.is_some());
    }

    #[test]
    fn survives_reopen_and_retention_drops_old_days() {
        let dir = tempfile::tempdir().unwrap();
        let old = 1_600_000_000_000_000_000;
        let new = old + 200 * NANOS_PER_DAY;
        {
            let s = SledStore::open(dir.path(), 8 << 20).unwrap();
            s.write(&[&batch("a", &[1], old, EventKind::Synthetic)])
                .unwrap();
            s.write(&[&batch("a", &[2], new, EventKind::Synthetic)])
                .unwrap();
        }
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        assert_eq!(all(&s, None).len(), 2);
        let dropped = s.apply_retention(Timestamp(new), 180).unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(all(&s, None).len(), 1);
        assert_eq!(s.stats().unwrap().events, 1);
    }

    #[test]
    fn newest_first_with_limit_and_agent_filter() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8 << 20).unwrap();
        let t = 1_700_000_000_000_000_000;
        s.write(&[
            &batch("a", &[1, 2, 3], t, EventKind::Synthetic),
            &batch("b", &[1], t, EventKind::Synthetic),
        ])
        .unwrap();
        let q = Query {
            since: Timestamp(0),
            until: Timestamp(i64::MAX),
            agent: Some("a".into()),
            kind: None,
            min_severity: None,
            limit: 2,
            newest_first: true,
        };
        let mut seqs = Vec::new();
        s.query(&q, &mut |v| {
            let e: Event = serde_json::from_slice(v).unwrap();
            seqs.push(e.event.sequence);
            true
        })
        .unwrap();
        assert_eq!(seqs, vec![3, 2]);
    }
}
