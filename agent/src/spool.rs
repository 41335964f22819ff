//! The spool: every event is written here (and flushed) before it counts as produced; the
//! shipper reads from the oldest end and deletes only what the collector acknowledged.
//!
//! sled trees: `events` (sequence, big-endian → event JSON) and `meta` (`next_seq`). The next
//! sequence is persisted with each append so sequences never repeat, even after the spool empties
//! and the agent restarts. Over the byte cap, the oldest events are dropped and one `gap` event
//! records how many and which sequences.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use palisade_wire::{Event, EventKind, Severity};
use serde_json::json;

const NEXT_SEQ: &[u8] = b"next_seq";

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// sled failed.
    #[error("spool {context}: {source}")]
    Sled {
        /// What was being done.
        context: &'static str,
        /// sled's error.
        source: sled::Error,
    },
}

fn err(context: &'static str) -> impl FnOnce(sled::Error) -> SpoolError {
    move |source| SpoolError::Sled { context, source }
}

/// Spool counters, reported in heartbeats.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    /// Events appended since start.
    pub appended: AtomicU64,
    /// Events acknowledged and deleted since start.
    pub acked: AtomicU64,
    /// Events dropped by the cap since start.
    pub dropped: AtomicU64,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    bytes: u64,
    count: u64,
}

/// One spooled event.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Its sequence.
    pub seq: u64,
    /// Its JSON.
    pub json: sled::IVec,
}

/// The durable queue.
#[derive(Debug)]
pub struct Spool {
    db: sled::Db,
    events: sled::Tree,
    meta: sled::Tree,
    state: Mutex<State>,
    max_bytes: u64,
    agent_id: String,
    /// Counters.
    pub counters: Arc<SpoolCounters>,
    /// Woken on every append.
    pub notify: tokio::sync::Notify,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` for `agent_id`, capped at `max_bytes`.
    pub fn open(dir: &Path, agent_id: &str, max_bytes: u64) -> Result<Self, SpoolError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()
            .map_err(err("open"))?;
        let events = db.open_tree("events").map_err(err("open events"))?;
        let meta = db.open_tree("meta").map_err(err("open meta"))?;
        let mut bytes = 0u64;
        let mut count = 0u64;
        for item in events.iter() {
            let (_, v) = item.map_err(err("scan"))?;
            bytes += v.len() as u64;
            count += 1;
        }
        let stored_next = meta
            .get(NEXT_SEQ)
            .map_err(err("read meta"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1);
        let after_last = events
            .last()
            .map_err(err("read last"))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(|k| u64::from_be_bytes(k) + 1)
            .unwrap_or(1);
        Ok(Spool {
            db,
            events,
            meta,
            state: Mutex::new(State {
                next_seq: stored_next.max(after_last),
                bytes,
                count,
            }),
            max_bytes,
            agent_id: agent_id.to_string(),
            counters: Arc::new(SpoolCounters::default()),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Assigns sequences, seals and stores `events`, applies the cap, and flushes to disk.
    /// Returns the sequences assigned. Blocking: call from a blocking context.
    pub fn append(&self, events: Vec<Event>) -> Result<Vec<u64>, SpoolError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.lock();
        let mut seqs = Vec::with_capacity(events.len());
        let mut batch = sled::Batch::default();
        for mut e in events {
            let seq = st.next_seq;
            st.next_seq += 1;
            e.seal(seq);
            let json = e.to_json();
            st.bytes += json.len() as u64;
            st.count += 1;
            batch.insert(&seq.to_be_bytes(), json);
            seqs.push(seq);
        }
        self.events.apply_batch(batch).map_err(err("append"))?;
        self.enforce_cap(&mut st)?;
        self.meta
            .insert(NEXT_SEQ, &st.next_seq.to_be_bytes())
            .map_err(err("write meta"))?;
        self.db.flush().map_err(err("flush"))?;
        drop(st);
        self.counters
            .appended
            .fetch_add(seqs.len() as u64, Ordering::Relaxed);
        self.notify.notify_one();
        Ok(seqs)
    }

    fn enforce_cap(&self, st: &mut State) -> Result<(), SpoolError> {
        if st.bytes <= self.max_bytes {
            return Ok(());
        }
        let mut dropped = 0u64;
        // An older gap event that must go too hands its count on to the new one, so the
        // gaps that survive always account for every event lost.
        let mut carried = 0u64;
        let mut first = None;
        let mut last = 0;
        // Leave room for the gap event itself.
        while st.bytes + 1024 > self.max_bytes {
            let Some((k, v)) = self.events.pop_min().map_err(err("drop oldest"))? else {
                break;
            };
            let seq = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            first.get_or_insert(seq);
            last = seq;
            st.bytes = st.bytes.saturating_sub(v.len() as u64);
            st.count = st.count.saturating_sub(1);
            match gap_count(&v) {
                Some(n) => carried += n,
                None => dropped += 1,
            }
        }
        if dropped == 0 && carried == 0 {
            return Ok(());
        }
        self.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
        let dropped = dropped + carried;
        let first = first.unwrap_or(0);
        tracing::error!(
            dropped,
            first_seq = first,
            last_seq = last,
            max_bytes = self.max_bytes,
            "spool full: oldest events dropped"
        );
        let mut gap = Event::new(&self.agent_id, EventKind::Gap, Severity::High)
            .with_message(format!(
                "spool full: dropped {dropped} oldest events (sequences {first}..={last})"
            ))
            .with_details(json!({
                "dropped": dropped,
                "first_sequence": first,
                "last_sequence": last,
                "spool_max_bytes": self.max_bytes,
            }));
        gap.event.action = Some("spool-overflow".into());
        let seq = st.next_seq;
        st.next_seq += 1;
        gap.seal(seq);
        let json = gap.to_json();
        st.bytes += json.len() as u64;
        st.count += 1;
        self.events
            .insert(seq.to_be_bytes(), json)
            .map_err(err("write gap"))?;
        Ok(())
    }

    /// The oldest events, up to `max_events` and about `max_bytes` (at least one).
    pub fn peek(&self, max_events: usize, max_bytes: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self.events.iter() {
            let (k, v) = item.map_err(err("read"))?;
            if !out.is_empty() && (out.len() >= max_events || bytes + v.len() > max_bytes) {
                break;
            }
            let Ok(k) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            bytes += v.len();
            out.push(Spooled {
                seq: u64::from_be_bytes(k),
                json: v,
            });
        }
        Ok(out)
    }

    /// Deletes acknowledged events. Not flushed: after a crash they are re-sent and the
    /// collector drops them as duplicates.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let mut n = 0;
        for seq in seqs {
            if let Some(v) = self
                .events
                .remove(seq.to_be_bytes())
                .map_err(err("delete"))?
            {
                st.bytes = st.bytes.saturating_sub(v.len() as u64);
                st.count = st.count.saturating_sub(1);
                n += 1;
            }
        }
        self.counters.acked.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Moves events the collector refused as malformed out of the queue into `quarantine`,
    /// where they stay for inspection instead of blocking delivery forever.
    pub fn quarantine(&self, items: &[Spooled]) -> Result<(), SpoolError> {
        let q = self
            .db
            .open_tree("quarantine")
            .map_err(err("open quarantine"))?;
        for it in items {
            q.insert(it.seq.to_be_bytes(), it.json.clone())
                .map_err(err("quarantine"))?;
        }
        q.flush().map_err(err("flush quarantine"))?;
        self.ack(&items.iter().map(|i| i.seq).collect::<Vec<_>>())
    }

    /// (events, bytes) waiting.
    pub fn depth(&self) -> (u64, u64) {
        let st = self.lock();
        (st.count, st.bytes)
    }

    /// Flushes pending deletes (on shutdown).
    pub fn flush(&self) -> Result<(), SpoolError> {
        self.db.flush().map(|_| ()).map_err(err("flush"))
    }
}

/// The `dropped` count of a spooled gap event, or None for any other event.
fn gap_count(json: &[u8]) -> Option<u64> {
    const MARK: &[u8] = b"\"palisade.gap\"";
    if !json.windows(MARK.len()).any(|w| w == MARK) {
        return None;
    }
    let e: Event = serde_json::from_slice(json).ok()?;
    if e.kind() != EventKind::Gap {
        return None;
    }
    e.palisade?.get("dropped")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event::new("a", EventKind::Synthetic, Severity::Info).with_message("x".repeat(100))
    }

    #[test]
    fn sequences_survive_restart_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
            assert_eq!(s.append(vec![ev(), ev()]).unwrap(), vec![1, 2]);
            let p = s.peek(10, 1 << 20).unwrap();
            s.ack(&p.iter().map(|x| x.seq).collect::<Vec<_>>()).unwrap();
            assert_eq!(s.depth().0, 0);
            s.flush().unwrap();
        }
        let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
        assert_eq!(s.append(vec![ev()]).unwrap(), vec![3]);
    }

    #[test]
    fn cap_drops_oldest_and_records_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 64 * 1024).unwrap();
        for _ in 0..20 {
            s.append((0..50).map(|_| ev()).collect()).unwrap();
        }
        let (_, bytes) = s.depth();
        assert!(bytes <= 64 * 1024, "{bytes}");
        let all = s.peek(usize::MAX, usize::MAX).unwrap();
        let gaps: Vec<Event> = all
            .iter()
            .map(|x| serde_json::from_slice::<Event>(&x.json).unwrap())
            .filter(|e| e.kind() == EventKind::Gap)
            .collect();
        assert!(!gaps.is_empty());
        let dropped: u64 = gaps
            .iter()
            .map(|g| g.palisade.as_ref().unwrap()["dropped"].as_u64().unwrap())
            .sum();
        let non_gap = all.len() as u64 - gaps.len() as u64;
        assert_eq!(
            dropped + non_gap,
            1000,
            "every event is either kept or counted"
        );
        assert_eq!(s.counters.dropped.load(Ordering::Relaxed), 1000 - non_gap);
    }

    #[test]
    fn peek_respects_limits_but_returns_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
        s.append((0..10).map(|_| ev()).collect()).unwrap();
        assert_eq!(s.peek(3, 1 << 20).unwrap().len(), 3);
        assert_eq!(s.peek(10, 1).unwrap().len(), 1);
    }
}
