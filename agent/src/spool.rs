//! The spool: every event is written here (and flushed) before it counts as produced; the
//! shipper reads from the oldest end and moves what the collector acknowledged aside.
//!
//! sled trees: `events` (sequence, big-endian → event JSON: waiting to be shipped), `acked`
//! (sequence → ack time in Unix milliseconds, big-endian, then the event JSON: delivered, kept
//! for `retain_acked_secs` so it can be replayed to a collector restored from an older backup)
//! and `meta` (`next_seq`, `acked_through`). The next sequence is persisted with each append so
//! sequences never repeat, even after the spool empties and the agent restarts. Over the byte cap
//! (pending and retained together), retained events go first, silently (they were delivered);
//! then the oldest pending events are dropped and one `gap` event records how many and which
//! sequences. Below `min_free_bytes` of free space on the spool's disk, appends are refused
//! before sled writes anything (sled stays failed after an ENOSPC until the process restarts);
//! what sources had to drop meanwhile ([`Spool::note_lost`]) is recorded by one `gap` event at
//! the next append that succeeds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use palisade_wire::{Event, EventKind, Severity};
use serde_json::json;

const NEXT_SEQ: &[u8] = b"next_seq";
const ACKED_THROUGH: &[u8] = b"acked_through";
/// Default for [`Spool::retain_acked_secs`].
const DEFAULT_RETAIN_ACKED_SECS: u64 = 86_400;
/// Default for [`Spool::min_free_bytes`].
pub const DEFAULT_MIN_FREE_BYTES: u64 = 32 << 20;

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
    /// The spool's disk is (nearly) full: nothing was written.
    #[error("spool disk full: {dir} has {free} bytes free, below spool.min_free_bytes ({min_free}); events are not spooled until space returns")]
    DiskFull {
        /// The spool directory.
        dir: PathBuf,
        /// Bytes available to the agent there.
        free: u64,
        /// The configured reserve.
        min_free: u64,
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

/// What [`Spool::replay_after`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Retained events moved back to the queue.
    pub replayed: u64,
    /// Sequences after the collector's mark that were no longer retained (a `gap` event says so).
    pub lost: u64,
    /// The highest sequence the collector had acknowledged before.
    pub acked_through: u64,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    bytes: u64,
    count: u64,
    acked_bytes: u64,
    acked_count: u64,
    acked_through: u64,
    /// Events sources could not spool and dropped, not yet recorded by a `gap` event.
    unspooled: u64,
    /// Why (the last error).
    unspooled_why: String,
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
    dir: PathBuf,
    min_free_bytes: u64,
    events: sled::Tree,
    acked: sled::Tree,
    meta: sled::Tree,
    state: Mutex<State>,
    max_bytes: u64,
    retain_acked_ms: u64,
    agent_id: String,
    /// Counters.
    pub counters: Arc<SpoolCounters>,
    /// Woken on every append.
    pub notify: tokio::sync::Notify,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` for `agent_id`, capped at `max_bytes`.
    pub fn open(dir: &Path, agent_id: &str, max_bytes: u64) -> Result<Self, SpoolError> {
        let config = sled::Config::new().path(dir).cache_capacity(32 << 20);
        let db =
            palisade_wire::process::open_waiting_for_lock(|| config.open()).map_err(err("open"))?;
        let events = db.open_tree("events").map_err(err("open events"))?;
        let acked = db.open_tree("acked").map_err(err("open acked"))?;
        let meta = db.open_tree("meta").map_err(err("open meta"))?;
        let mut bytes = 0u64;
        let mut count = 0u64;
        for item in events.iter() {
            let (_, v) = item.map_err(err("scan"))?;
            bytes += v.len() as u64;
            count += 1;
        }
        let mut acked_bytes = 0u64;
        let mut acked_count = 0u64;
        for item in acked.iter() {
            let (_, v) = item.map_err(err("scan acked"))?;
            acked_bytes += v.len() as u64;
            acked_count += 1;
        }
        let read_u64 = |key: &[u8]| -> Result<Option<u64>, SpoolError> {
            Ok(meta
                .get(key)
                .map_err(err("read meta"))?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes))
        };
        let stored_next = read_u64(NEXT_SEQ)?.unwrap_or(1);
        let acked_through = read_u64(ACKED_THROUGH)?.unwrap_or(0);
        let after_last = events
            .last()
            .map_err(err("read last"))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(|k| u64::from_be_bytes(k) + 1)
            .unwrap_or(1);
        Ok(Spool {
            db,
            dir: dir.to_path_buf(),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            events,
            acked,
            meta,
            state: Mutex::new(State {
                next_seq: stored_next.max(after_last),
                bytes,
                count,
                acked_bytes,
                acked_count,
                acked_through,
                unspooled: 0,
                unspooled_why: String::new(),
            }),
            max_bytes,
            retain_acked_ms: DEFAULT_RETAIN_ACKED_SECS * 1000,
            agent_id: agent_id.to_string(),
            counters: Arc::new(SpoolCounters::default()),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// Keeps acknowledged events for `secs` after their ack (0: delete them at once).
    pub fn retain_acked_secs(mut self, secs: u64) -> Self {
        self.retain_acked_ms = secs.saturating_mul(1000);
        self
    }

    /// Refuses appends while less than `bytes` are free on the spool's disk (0: never).
    pub fn min_free_bytes(mut self, bytes: u64) -> Self {
        self.min_free_bytes = bytes;
        self
    }

    /// A source could not spool `n` events and dropped them (`why`: the error). The next
    /// append that succeeds records them in a `gap` event first.
    pub fn note_lost(&self, n: u64, why: &str) {
        let mut st = self.lock();
        st.unspooled += n;
        st.unspooled_why = why.to_string();
        drop(st);
        self.counters.dropped.fetch_add(n, Ordering::Relaxed);
    }

    fn check_space(&self) -> Result<(), SpoolError> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        match free_bytes(&self.dir) {
            Some(free) if free < self.min_free_bytes => Err(SpoolError::DiskFull {
                dir: self.dir.clone(),
                free,
                min_free: self.min_free_bytes,
            }),
            _ => Ok(()),
        }
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
        self.check_space()?;
        let mut st = self.lock();
        if st.unspooled > 0 {
            let (n, why) = (st.unspooled, std::mem::take(&mut st.unspooled_why));
            st.unspooled = 0;
            tracing::warn!(
                dropped = n,
                "spool writable again; recording the events dropped meanwhile"
            );
            let mut gap = Event::new(&self.agent_id, EventKind::Gap, Severity::High)
                .with_message(format!(
                    "spool write failed: dropped {n} events that could not be spooled ({why})"
                ))
                .with_details(json!({ "dropped": n, "reason": why }));
            gap.event.action = Some("spool-write-failed".into());
            self.push_event(&mut st, gap)?;
        }
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
        if st.bytes + st.acked_bytes <= self.max_bytes {
            return Ok(());
        }
        // Delivered events go first, and without a gap: nothing is lost yet.
        let mut released = 0u64;
        while st.bytes + st.acked_bytes > self.max_bytes {
            let Some((_, v)) = self.acked.pop_min().map_err(err("drop acked"))? else {
                break;
            };
            st.acked_bytes = st.acked_bytes.saturating_sub(v.len() as u64);
            st.acked_count = st.acked_count.saturating_sub(1);
            released += 1;
        }
        if released > 0 {
            tracing::debug!(
                released,
                "spool cap: acknowledged events released from the replay window"
            );
        }
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
        self.push_event(st, gap)
    }

    /// Seals `e` with the next sequence and queues it (caller flushes).
    fn push_event(&self, st: &mut State, mut gap: Event) -> Result<(), SpoolError> {
        let seq = st.next_seq;
        st.next_seq += 1;
        gap.seal(seq);
        let json = gap.to_json();
        st.bytes += json.len() as u64;
        st.count += 1;
        self.events
            .insert(seq.to_be_bytes(), json)
            .map_err(err("write gap"))?;
        self.meta
            .insert(NEXT_SEQ, &st.next_seq.to_be_bytes())
            .map_err(err("write meta"))?;
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

    /// Moves acknowledged events out of the queue into the replay window (`acked`), records
    /// the highest sequence acknowledged, and prunes the window by age. Not flushed: after a
    /// crash they are re-sent and the collector drops them as duplicates.
    pub fn ack(&self, seqs: &[u64]) -> Result<(), SpoolError> {
        self.ack_at(seqs, now_ms())
    }

    fn ack_at(&self, seqs: &[u64], now_ms: u64) -> Result<(), SpoolError> {
        let mut st = self.lock();
        let n = self.take(&mut st, seqs, Some(now_ms))?;
        if let Some(&top) = seqs.iter().max() {
            if top > st.acked_through {
                st.acked_through = top;
                self.meta
                    .insert(ACKED_THROUGH, &top.to_be_bytes())
                    .map_err(err("write meta"))?;
            }
        }
        self.prune_acked(&mut st, now_ms)?;
        drop(st);
        self.counters.acked.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// Removes `seqs` from the queue; with `retain_at` (and a retention window) keeps them in
    /// `acked` stamped with that time. Returns how many were in the queue. One transaction over
    /// both trees: a crash never leaves an event in neither (it used to: the deletes could reach
    /// the disk without the copies, a hole in the replay window that `replay_after` skipped
    /// silently).
    fn take(
        &self,
        st: &mut State,
        seqs: &[u64],
        retain_at: Option<u64>,
    ) -> Result<u64, SpoolError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let retain_at = retain_at.filter(|_| self.retain_acked_ms > 0);
        // (bytes taken from the queue, bytes kept) per event moved.
        let moved: Vec<(u64, Option<u64>)> = (&self.events, &self.acked)
            .transaction(|(events, acked)| {
                let mut moved = Vec::with_capacity(seqs.len());
                for seq in seqs {
                    let key = seq.to_be_bytes();
                    let Some(v) = events.remove(&key)? else {
                        continue;
                    };
                    let kept = match retain_at {
                        Some(at) => {
                            let mut kept = Vec::with_capacity(8 + v.len());
                            kept.extend_from_slice(&at.to_be_bytes());
                            kept.extend_from_slice(&v);
                            let n = kept.len() as u64;
                            acked.insert(&key, kept)?;
                            Some(n)
                        }
                        None => None,
                    };
                    moved.push((v.len() as u64, kept));
                }
                Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(moved)
            })
            .map_err(|e| match e {
                TransactionError::Storage(source) => SpoolError::Sled {
                    context: "move acknowledged events",
                    source,
                },
                TransactionError::Abort(never) => match never {},
            })?;
        for (bytes, kept) in &moved {
            st.bytes = st.bytes.saturating_sub(*bytes);
            st.count = st.count.saturating_sub(1);
            if let Some(k) = kept {
                st.acked_bytes += k;
                st.acked_count += 1;
            }
        }
        Ok(moved.len() as u64)
    }

    /// Drops retained events acknowledged `retain_acked_secs` or more before `now_ms`, oldest
    /// sequence first (stops at the first younger one).
    fn prune_acked(&self, st: &mut State, now_ms: u64) -> Result<(), SpoolError> {
        while let Some((k, v)) = self.acked.first().map_err(err("read acked"))? {
            let at = v
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if at.saturating_add(self.retain_acked_ms) > now_ms {
                break;
            }
            if self.acked.remove(&k).map_err(err("prune acked"))?.is_some() {
                st.acked_bytes = st.acked_bytes.saturating_sub(v.len() as u64);
                st.acked_count = st.acked_count.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// The highest sequence the collector ever acknowledged (persisted across restarts).
    pub fn acked_through(&self) -> u64 {
        self.lock().acked_through
    }

    /// The collector says its store holds this agent only through `stored_through`, below what
    /// it acknowledged before: it lost data. Moves every retained event after `stored_through`
    /// back into the queue (same sequences, so the shipper re-sends them oldest first and the
    /// collector drops any it still has), and queues one `gap` event for the sequences in
    /// between that are no longer retained. Flushed. Does nothing if the collector is not behind.
    pub fn replay_after(&self, stored_through: u64) -> Result<Replay, SpoolError> {
        let mut st = self.lock();
        let acked_through = st.acked_through;
        if stored_through >= acked_through {
            return Ok(Replay {
                acked_through,
                ..Default::default()
            });
        }
        let mut oldest = None;
        let mut replayed = 0u64;
        let mut back = sled::Batch::default();
        let mut gone = sled::Batch::default();
        for item in self.acked.range((stored_through + 1).to_be_bytes()..) {
            let (k, v) = item.map_err(err("read acked"))?;
            let Ok(seq) = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes) else {
                continue;
            };
            oldest.get_or_insert(seq);
            let json = v.get(8..).unwrap_or_default();
            st.acked_bytes = st.acked_bytes.saturating_sub(v.len() as u64);
            st.acked_count = st.acked_count.saturating_sub(1);
            st.bytes += json.len() as u64;
            st.count += 1;
            back.insert(k.clone(), json);
            gone.remove(k);
            replayed += 1;
        }
        self.events.apply_batch(back).map_err(err("replay"))?;
        self.acked.apply_batch(gone).map_err(err("replay"))?;
        // Sequences after the collector's mark up to the oldest one still retained.
        let first_lost = stored_through + 1;
        let last_lost = oldest.unwrap_or(acked_through + 1) - 1;
        let lost = (last_lost + 1).saturating_sub(first_lost);
        if lost > 0 {
            tracing::error!(
                lost,
                first_seq = first_lost,
                last_seq = last_lost,
                "collector lost events no longer retained for replay"
            );
            let mut gap = Event::new(&self.agent_id, EventKind::Gap, Severity::High)
                .with_message(format!(
                    "collector lost {lost} acknowledged events no longer retained for replay (sequences {first_lost}..={last_lost})"
                ))
                .with_details(json!({
                    "dropped": lost,
                    "first_sequence": first_lost,
                    "last_sequence": last_lost,
                    "collector_stored_through": stored_through,
                    "acked_through": acked_through,
                }));
            gap.event.action = Some("replay-window-exceeded".into());
            self.push_event(&mut st, gap)?;
        }
        self.db.flush().map_err(err("flush"))?;
        drop(st);
        self.notify.notify_one();
        Ok(Replay {
            replayed,
            lost,
            acked_through,
        })
    }

    /// (events, bytes) kept after their ack for replay.
    pub fn retained(&self) -> (u64, u64) {
        let st = self.lock();
        (st.acked_count, st.acked_bytes)
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
        let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
        let mut st = self.lock();
        let n = self.take(&mut st, &seqs, None)?;
        drop(st);
        self.counters.acked.fetch_add(n, Ordering::Relaxed);
        Ok(())
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

/// Bytes available to an unprivileged writer on the filesystem holding `dir`.
#[allow(unsafe_code)]
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; statvfs only writes into `st`.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

    fn seqs(items: &[Spooled]) -> Vec<u64> {
        items.iter().map(|x| x.seq).collect()
    }

    fn acked_seqs(s: &Spool) -> Vec<u64> {
        s.acked
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(<[u8; 8]>::try_from(k.unwrap().as_ref()).unwrap()))
            .collect()
    }

    #[test]
    fn ack_moves_events_to_the_replay_window() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
        s.append((0..5).map(|_| ev()).collect()).unwrap();
        s.ack(&[1, 2, 3]).unwrap();
        assert_eq!(seqs(&s.peek(10, 1 << 20).unwrap()), vec![4, 5]);
        assert_eq!(s.depth().0, 2);
        assert_eq!(acked_seqs(&s), vec![1, 2, 3]);
        assert_eq!(s.retained().0, 3);
        assert_eq!(s.acked_through(), 3);
        assert_eq!(s.counters.acked.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn zero_retention_keeps_nothing_acked() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20)
            .unwrap()
            .retain_acked_secs(0);
        s.append((0..3).map(|_| ev()).collect()).unwrap();
        s.ack(&[1, 2, 3]).unwrap();
        assert!(acked_seqs(&s).is_empty());
        assert_eq!(s.acked_through(), 3);
    }

    #[test]
    fn retained_events_expire_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20)
            .unwrap()
            .retain_acked_secs(10);
        s.append((0..4).map(|_| ev()).collect()).unwrap();
        s.ack_at(&[1, 2], 1_000_000).unwrap();
        s.ack_at(&[3], 1_005_000).unwrap();
        assert_eq!(acked_seqs(&s), vec![1, 2, 3]);
        // 10 s after the first ack: 1 and 2 are out of the window, 3 is not.
        s.ack_at(&[4], 1_010_000).unwrap();
        assert_eq!(acked_seqs(&s), vec![3, 4]);
        assert_eq!(s.retained().0, 2);
    }

    #[test]
    fn cap_drops_retained_events_first_and_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 64 * 1024).unwrap();
        // About 40 KB delivered and retained.
        let first = s.append((0..120).map(|_| ev()).collect()).unwrap();
        s.ack(&first).unwrap();
        let (kept_before, _) = s.retained();
        assert_eq!(kept_before, 120);
        // About 40 KB more pending: over the cap together, under it alone.
        let pending = s.append((0..120).map(|_| ev()).collect()).unwrap();
        let (n, bytes) = s.depth();
        let (kept, kept_bytes) = s.retained();
        assert_eq!(n, 120, "no pending event dropped");
        assert!(kept < 120 && kept > 0, "{kept}");
        assert!(bytes + kept_bytes <= 64 * 1024);
        assert_eq!(s.counters.dropped.load(Ordering::Relaxed), 0);
        let all = s.peek(usize::MAX, usize::MAX).unwrap();
        assert_eq!(seqs(&all), pending, "no gap event");
        // The oldest retained went first.
        let left = acked_seqs(&s);
        assert_eq!(*left.last().unwrap(), 120);
        assert_eq!(left.len() as u64, kept);
        assert_eq!(left[0], 121 - kept);
    }

    #[test]
    fn replay_after_moves_back_what_the_collector_lost() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
        s.append((0..10).map(|_| ev()).collect()).unwrap();
        s.ack(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        // Not behind: nothing moves.
        assert_eq!(s.replay_after(8).unwrap().replayed, 0);
        assert_eq!(seqs(&s.peek(100, 1 << 20).unwrap()), vec![9, 10]);
        let r = s.replay_after(5).unwrap();
        assert_eq!(
            r,
            Replay {
                replayed: 3,
                lost: 0,
                acked_through: 8
            }
        );
        assert_eq!(seqs(&s.peek(100, 1 << 20).unwrap()), vec![6, 7, 8, 9, 10]);
        assert_eq!(acked_seqs(&s), vec![1, 2, 3, 4, 5]);
        assert_eq!(s.depth().0, 5);
        assert_eq!(s.retained().0, 5);
        // The replayed events are acknowledged again like any other.
        s.ack(&[6, 7, 8, 9, 10]).unwrap();
        assert_eq!(acked_seqs(&s), (1..=10).collect::<Vec<_>>());
        assert_eq!(s.acked_through(), 10);
    }

    #[test]
    fn replay_beyond_the_window_records_one_gap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20)
            .unwrap()
            .retain_acked_secs(10);
        s.append((0..10).map(|_| ev()).collect()).unwrap();
        s.ack_at(&[1, 2, 3, 4, 5, 6], 1_000_000).unwrap();
        s.ack_at(&[7, 8], 1_020_000).unwrap();
        assert_eq!(acked_seqs(&s), vec![7, 8]);
        let r = s.replay_after(2).unwrap();
        assert_eq!((r.replayed, r.lost), (2, 4));
        let all = s.peek(100, 1 << 20).unwrap();
        assert_eq!(seqs(&all), vec![7, 8, 9, 10, 11]);
        let gap: Event = serde_json::from_slice(&all[4].json).unwrap();
        assert_eq!(gap.kind(), EventKind::Gap);
        let d = gap.palisade.unwrap();
        assert_eq!(d["dropped"], 4);
        assert_eq!(d["first_sequence"], 3);
        assert_eq!(d["last_sequence"], 6);
    }

    #[test]
    fn acked_through_and_the_window_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
            s.append((0..4).map(|_| ev()).collect()).unwrap();
            s.ack(&[1, 2, 3]).unwrap();
            s.flush().unwrap();
        }
        let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
        assert_eq!(s.acked_through(), 3);
        assert_eq!(s.retained().0, 3);
        assert_eq!(s.depth().0, 1);
        assert_eq!(s.replay_after(1).unwrap().replayed, 2);
        assert_eq!(seqs(&s.peek(100, 1 << 20).unwrap()), vec![2, 3, 4]);
    }

    #[test]
    fn a_disk_below_the_reserve_refuses_appends_and_drops_are_recorded_once_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20)
            .unwrap()
            .min_free_bytes(u64::MAX);
        let e = s.append(vec![ev()]).unwrap_err().to_string();
        assert!(
            e.contains("spool disk full") && e.contains("min_free_bytes"),
            "{e}"
        );
        assert_eq!(s.depth().0, 0, "nothing written");
        s.note_lost(3, "disk full");
        let s = s.min_free_bytes(0);
        assert_eq!(s.append(vec![ev()]).unwrap(), vec![2]);
        let all = s.peek(10, 1 << 20).unwrap();
        assert_eq!(seqs(&all), vec![1, 2]);
        let gap: Event = serde_json::from_slice(&all[0].json).unwrap();
        assert_eq!(gap.kind(), EventKind::Gap);
        assert_eq!(gap.palisade.unwrap()["dropped"], 3);
        assert_eq!(s.counters.dropped.load(Ordering::Relaxed), 3);
        // Recorded once.
        s.append(vec![ev()]).unwrap();
        assert_eq!(s.depth().0, 3);
    }

    #[test]
    fn quarantined_events_are_not_retained_for_replay() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "a", 1 << 20).unwrap();
        s.append((0..3).map(|_| ev()).collect()).unwrap();
        let p = s.peek(1, 1 << 20).unwrap();
        s.quarantine(&p).unwrap();
        assert!(acked_seqs(&s).is_empty());
        assert_eq!(s.acked_through(), 0);
        assert_eq!(s.depth().0, 2);
    }
}
