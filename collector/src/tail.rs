//! Live tail: a bounded ring of the events most recently made durable, each with a commit
//! cursor, and `GET /v1/tail`, which long-polls it for events after a cursor (what
//! `palisade-collector follow` calls).
//!
//! The ring is fed by [`CommitSink::committed`] on the store-writer thread, so that path only
//! takes a short lock and appends references into the committed group (no copy, no parse, no
//! wait). Readers copy out of the ring in small chunks so they never hold the lock long.
//!
//! A follower never silently loses events: each answer says how many events fell out of the
//! ring before the follower could read them (`missed`), and `reset` when its cursor belongs to an
//! earlier run of the collector (`epoch` changed), since cursors restart with the process.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use palisade_wire::batch::{Batch, ReceivedEvent};
use palisade_wire::{EventKind, Severity};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ingest::CommitSink;
use crate::query::{url_decode, Filter};

/// Longest long-poll a client may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Most events one `GET /v1/tail` answer holds.
pub const MAX_LIMIT: usize = 10_000;
/// Entries copied out of the ring per lock.
const CHUNK: usize = 1024;

/// `[tail]`: how much recent history a follower can catch up on after falling behind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Most events kept in the ring.
    pub ring_events: usize,
    /// Most bytes of event JSON kept in the ring (the parsed events held alongside take
    /// roughly as much again).
    pub ring_bytes: u64,
}

impl Default for TailConfig {
    /// 16,384 events: a minute of catch-up at 270 events/s, a third of a second in a 50,000/s
    /// storm. A ring entry pins the whole committed group it points into, so the ring holds
    /// more than its own count; 65,536 (the first default) held 150–200 MiB in a storm, most
    /// of what kept the collector over 500 MB at 1 M correlation groups.
    fn default() -> Self {
        TailConfig {
            ring_events: 16_384,
            ring_bytes: 16 << 20,
        }
    }
}

impl TailConfig {
    /// Range checks.
    pub fn check(&self) -> Result<(), String> {
        if self.ring_events == 0 || self.ring_bytes == 0 {
            return Err("tail.ring_events and tail.ring_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// One ring slot: a reference into a committed group, so committing copies nothing.
#[derive(Clone)]
struct Entry {
    group: Arc<[Batch]>,
    batch: u32,
    event: u32,
}

impl Entry {
    fn get(&self) -> Option<&ReceivedEvent> {
        self.group
            .get(self.batch as usize)?
            .events
            .get(self.event as usize)
    }

    fn len(&self) -> u64 {
        self.get().map_or(0, |e| e.raw.len() as u64)
    }
}

struct Ring {
    entries: VecDeque<Entry>,
    /// Cursor of `entries[0]`; when empty, the cursor the next event will get.
    first: u64,
    bytes: u64,
    /// Highest sequence seen per agent: committed groups include re-sent duplicates.
    seen: HashMap<String, u64>,
}

impl Ring {
    /// Cursor of the newest event (0 before any).
    fn head(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
}

/// The live tail. One per collector; shared by the writer (as a [`CommitSink`]) and the API.
pub struct Tail {
    config: TailConfig,
    ring: Mutex<Ring>,
    head: watch::Sender<u64>,
    closed: AtomicBool,
    epoch: u64,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("config", &self.config)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// What a reader wants: events after a cursor, narrowed by cheap typed checks and a filter.
#[derive(Clone, Debug, Default)]
pub struct TailRequest {
    /// Events after this cursor; `None` = from now.
    pub cursor: Option<u64>,
    /// The epoch the cursor came from; a different one means the collector restarted.
    pub epoch: Option<u64>,
    /// Most events in the answer.
    pub limit: usize,
    /// Longest wait for a first event.
    pub wait: Duration,
    /// Only this kind.
    pub kind: Option<EventKind>,
    /// Only at least this severity.
    pub min_severity: Option<Severity>,
    /// Only this agent.
    pub agent: Option<String>,
    /// Only events this expression matches.
    pub filter: Option<Arc<Filter>>,
}

impl TailRequest {
    fn matches(&self, e: &ReceivedEvent) -> bool {
        let ev = &e.event;
        self.kind.is_none_or(|k| k == ev.kind())
            && self.min_severity.is_none_or(|m| ev.event.severity >= m)
            && self.agent.as_deref().is_none_or(|a| a == ev.agent.id)
            && self.filter.as_ref().is_none_or(|f| f.matches_json(&e.raw))
    }

    /// Parses the `GET /v1/tail` query string.
    pub fn parse(query: &str) -> Result<TailRequest, String> {
        let mut r = TailRequest {
            limit: 1000,
            ..Default::default()
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = url_decode(v)?;
            let number = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{what} {v:?} is not a number"))
            };
            match k {
                "cursor" => r.cursor = Some(number("cursor")?),
                "epoch" => r.epoch = Some(number("epoch")?),
                "wait_ms" => r.wait = Duration::from_millis(number("wait_ms")?.min(MAX_WAIT_MS)),
                "limit" => {
                    let n = number("limit")?;
                    if n == 0 || n > MAX_LIMIT as u64 {
                        return Err(format!("limit {n} must be between 1 and {MAX_LIMIT}"));
                    }
                    r.limit = n as usize;
                }
                "kind" => r.kind = Some(v.parse()?),
                "severity" => r.min_severity = Some(v.parse()?),
                "agent" => r.agent = Some(v),
                "filter" if v.trim().is_empty() => {}
                "filter" => {
                    r.filter = Some(Arc::new(Filter::parse(&v).map_err(|e| e.to_string())?))
                }
                _ => return Err(format!("unknown query parameter {k:?}")),
            }
        }
        Ok(r)
    }
}

/// One answer: the events, the cursor to ask from next, and what the reader missed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailHeader {
    /// Ask for events after this cursor next time.
    pub next_cursor: u64,
    /// The collector run the cursor belongs to.
    pub epoch: u64,
    /// Events that left the ring before this reader got to them (matching or not).
    pub missed: u64,
    /// The cursor was from an earlier collector run: reading restarted at the oldest event held,
    /// and events stored just before the restart cannot be accounted for.
    #[serde(default)]
    pub reset: bool,
    /// Events in this answer.
    pub count: usize,
}

/// A page read from the ring.
#[derive(Debug, Default)]
pub struct TailPage {
    /// Cursor, epoch, missed, reset, count.
    pub header: TailHeader,
    /// The events' stored JSON.
    pub events: Vec<Vec<u8>>,
}

impl Tail {
    /// An empty tail.
    pub fn new(config: TailConfig) -> Tail {
        let mut epoch = [0u8; 8];
        if getrandom::fill(&mut epoch).is_err() {
            // Not secret: only needs to differ between runs.
            epoch = palisade_wire::Timestamp::now().nanos().to_be_bytes();
        }
        Tail {
            config,
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                first: 1,
                bytes: 0,
                seen: HashMap::new(),
            }),
            head: watch::channel(0).0,
            closed: AtomicBool::new(false),
            // Kept below 2^53 so JSON readers that use doubles see it exactly.
            epoch: u64::from_be_bytes(epoch) >> 11,
        }
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Cursor of the newest event held (0 before any).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes every waiting reader and makes later waits return at once (server shutdown).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.head.send_modify(|_| {});
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads events after `req.cursor` without waiting: at most `req.limit` matches, scanning
    /// the ring in chunks so the writer is never held up for long.
    pub fn read(&self, req: &TailRequest) -> TailPage {
        let mut header = TailHeader {
            epoch: self.epoch,
            ..Default::default()
        };
        let mut cursor = {
            let ring = self.lock();
            let head = ring.head();
            match req.cursor {
                None => head,
                Some(c) if req.epoch.is_some_and(|e| e != self.epoch) || c > head => {
                    header.reset = true;
                    header.missed = ring.first - 1;
                    ring.first - 1
                }
                Some(c) => c,
            }
        };
        let mut events = Vec::new();
        'scan: loop {
            let chunk: Vec<(u64, Entry)> = {
                let ring = self.lock();
                if cursor + 1 < ring.first {
                    header.missed += ring.first - (cursor + 1);
                    cursor = ring.first - 1;
                }
                let start = (cursor + 1 - ring.first) as usize;
                ring.entries
                    .range(start.min(ring.entries.len())..)
                    .take(CHUNK)
                    .cloned()
                    .enumerate()
                    .map(|(i, e)| (cursor + 1 + i as u64, e))
                    .collect()
            };
            if chunk.is_empty() {
                break;
            }
            for (c, entry) in chunk {
                cursor = c;
                let Some(e) = entry.get() else { continue };
                if req.matches(e) {
                    events.push(e.raw.clone());
                    if events.len() >= req.limit {
                        break 'scan;
                    }
                }
            }
        }
        header.next_cursor = cursor;
        header.count = events.len();
        TailPage { header, events }
    }

    /// Reads events after `req.cursor`, waiting up to `req.wait` for a first match.
    pub async fn wait_read(self: &Arc<Self>, mut req: TailRequest) -> TailPage {
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut head = self.head.subscribe();
        let mut missed = 0;
        let mut reset = false;
        loop {
            head.borrow_and_update();
            let tail = self.clone();
            let r = req.clone();
            let page = match crate::api::timing::off_thread(move || tail.read(&r)).await {
                Ok(p) => p,
                Err(e) => {
                    // Answer empty but keep the reader where it was.
                    tracing::error!(error = %e, "tail read failed");
                    TailPage {
                        header: TailHeader {
                            next_cursor: req.cursor.unwrap_or_else(|| self.head()),
                            epoch: self.epoch,
                            ..Default::default()
                        },
                        events: Vec::new(),
                    }
                }
            };
            missed += page.header.missed;
            reset |= page.header.reset;
            req.cursor = Some(page.header.next_cursor);
            req.epoch = Some(self.epoch);
            let done = !page.events.is_empty()
                || missed > 0
                || reset
                || self.closed.load(Ordering::Relaxed)
                || tokio::time::Instant::now() >= deadline;
            if done {
                let mut page = page;
                page.header.missed = missed;
                page.header.reset = reset;
                return page;
            }
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return page;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

impl CommitSink for Tail {
    fn committed(&self, batches: &Arc<[Batch]>) {
        let head = {
            let mut ring = self.lock();
            let ring = &mut *ring;
            for (bi, batch) in batches.iter().enumerate() {
                let last = ring.seen.get(&batch.agent_id).copied();
                let mut high = last;
                for (ei, e) in batch.events.iter().enumerate() {
                    let seq = e.event.event.sequence;
                    if last.is_some_and(|l| seq <= l) {
                        continue;
                    }
                    high = Some(high.map_or(seq, |h| h.max(seq)));
                    let (Ok(batch), Ok(event)) = (u32::try_from(bi), u32::try_from(ei)) else {
                        continue;
                    };
                    ring.bytes += e.raw.len() as u64;
                    ring.entries.push_back(Entry {
                        group: batches.clone(),
                        batch,
                        event,
                    });
                }
                if let Some(h) = high {
                    if last != Some(h) {
                        ring.seen.insert(batch.agent_id.clone(), h);
                    }
                }
            }
            while ring.entries.len() > self.config.ring_events
                || (ring.bytes > self.config.ring_bytes && !ring.entries.is_empty())
            {
                if let Some(old) = ring.entries.pop_front() {
                    ring.bytes = ring.bytes.saturating_sub(old.len());
                    ring.first += 1;
                }
            }
            ring.head()
        };
        // Never blocks: a watch only replaces the value and wakes waiters.
        self.head.send_replace(head);
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// `GET /v1/tail?cursor&epoch&wait_ms&limit&filter&kind&severity&agent`: NDJSON whose first line
/// is the [`TailHeader`] and the rest the events, oldest first.
pub async fn endpoint(tail: Arc<Tail>, query: &str) -> Response<Full<Bytes>> {
    let req = match TailRequest::parse(query) {
        Ok(r) => r,
        Err(e) => {
            let body = serde_json::to_vec(&serde_json::json!({ "error": e })).unwrap_or_default();
            return respond(StatusCode::BAD_REQUEST, "application/json", body);
        }
    };
    let page = tail.wait_read(req).await;
    if page.header.missed > 0 || page.header.reset {
        tracing::warn!(
            missed = page.header.missed,
            reset = page.header.reset,
            "tail reader fell behind the ring"
        );
    }
    let mut body = serde_json::to_vec(&page.header).unwrap_or_default();
    body.push(b'\n');
    for e in &page.events {
        body.extend_from_slice(e);
        body.push(b'\n');
    }
    let mut r = respond(StatusCode::OK, "application/x-ndjson", body);
    for (name, value) in [
        ("x-palisade-cursor", page.header.next_cursor),
        ("x-palisade-missed", page.header.missed),
    ] {
        if let Ok(v) = value.to_string().parse() {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::Event;

    fn batch(agent: &str, seqs: std::ops::RangeInclusive<u64>, kind: EventKind) -> Batch {
        let events: Vec<ReceivedEvent> = seqs
            .clone()
            .map(|s| {
                let mut e = Event::new(agent, kind, Severity::ALL[(s % 5) as usize]);
                e.seal(s);
                let raw = e.to_json();
                ReceivedEvent { event: e, raw }
            })
            .collect();
        Batch {
            agent_id: agent.into(),
            first_sequence: *seqs.start(),
            last_sequence: *seqs.end(),
            events,
        }
    }

    fn commit(t: &Tail, b: Vec<Batch>) {
        t.committed(&Arc::from(b));
    }

    fn seqs(p: &TailPage) -> Vec<u64> {
        p.events
            .iter()
            .map(|e| crate::query::EventKey::of_json(e).unwrap().sequence)
            .collect()
    }

    fn req(cursor: Option<u64>) -> TailRequest {
        TailRequest {
            cursor,
            limit: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn cursors_count_committed_events_and_duplicates_are_skipped() {
        let t = Tail::new(TailConfig::default());
        assert_eq!(t.read(&req(None)).header.next_cursor, 0);
        commit(
            &t,
            vec![
                batch("a", 1..=3, EventKind::Flow),
                batch("b", 1..=2, EventKind::Flow),
            ],
        );
        // A re-sent batch (its answer was lost): nothing new.
        commit(&t, vec![batch("a", 2..=4, EventKind::Flow)]);
        assert_eq!(t.head(), 6);
        let p = t.read(&req(Some(0)));
        assert_eq!(seqs(&p), vec![1, 2, 3, 1, 2, 4]);
        assert_eq!(p.header.next_cursor, 6);
        assert_eq!(p.header.missed, 0);
        let p = t.read(&req(Some(4)));
        assert_eq!(seqs(&p), vec![2, 4]);
        assert!(t.read(&req(None)).events.is_empty(), "no cursor = from now");
    }

    #[test]
    fn filters_advance_the_cursor_past_non_matching_events() {
        let t = Tail::new(TailConfig::default());
        commit(&t, vec![batch("a", 1..=20, EventKind::Flow)]);
        let mut r = req(Some(0));
        r.filter = Some(Arc::new(
            Filter::parse("event.sequence in [3, 17]").unwrap(),
        ));
        r.limit = 1;
        let p = t.read(&r);
        assert_eq!((seqs(&p), p.header.next_cursor), (vec![3], 3));
        r.cursor = Some(3);
        let p = t.read(&r);
        assert_eq!((seqs(&p), p.header.next_cursor), (vec![17], 17));
        r.cursor = Some(17);
        let p = t.read(&r);
        assert_eq!((seqs(&p), p.header.next_cursor), (vec![], 20));
        let mut r = req(Some(0));
        r.min_severity = Some(Severity::Critical);
        r.agent = Some("a".into());
        assert_eq!(seqs(&t.read(&r)), vec![4, 9, 14, 19]);
        r.kind = Some(EventKind::Alert);
        assert!(t.read(&r).events.is_empty());
    }

    #[test]
    fn an_overrun_reports_missed_and_a_restart_reports_reset() {
        let t = Tail::new(TailConfig {
            ring_events: 10,
            ring_bytes: u64::MAX,
        });
        commit(&t, vec![batch("a", 1..=25, EventKind::Flow)]);
        let p = t.read(&req(Some(5)));
        assert_eq!(p.header.missed, 10, "cursors 6..=15 fell out");
        assert_eq!(seqs(&p), (16..=25).collect::<Vec<_>>());
        // A cursor from another run.
        let mut r = req(Some(3));
        r.epoch = Some(t.epoch() ^ 1);
        let p = t.read(&r);
        assert!(p.header.reset);
        assert_eq!(p.header.missed, 15);
        assert_eq!(p.events.len(), 10);
        // A cursor beyond the head (the collector restarted, no epoch given).
        assert!(t.read(&req(Some(1000))).header.reset);
        // The byte cap evicts too.
        let small = Tail::new(TailConfig {
            ring_events: 1000,
            ring_bytes: 1,
        });
        commit(&small, vec![batch("a", 1..=3, EventKind::Flow)]);
        assert_eq!(small.read(&req(Some(0))).header.missed, 3);
    }

    #[tokio::test]
    async fn long_poll_wakes_on_commit_and_times_out_empty() {
        let t = Arc::new(Tail::new(TailConfig::default()));
        let mut r = req(Some(0));
        r.wait = Duration::from_millis(50);
        let p = t.wait_read(r.clone()).await;
        assert!(p.events.is_empty());
        assert_eq!(p.header.next_cursor, 0);
        r.wait = Duration::from_secs(20);
        let reader = tokio::spawn({
            let t = t.clone();
            async move { t.wait_read(r).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        commit(&t, vec![batch("a", 1..=2, EventKind::Flow)]);
        let p = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seqs(&p), vec![1, 2]);
    }

    #[test]
    fn query_parameters() {
        let r = TailRequest::parse("cursor=5&epoch=9&wait_ms=99999&limit=10&filter=a%20%3D%201&kind=alert&severity=high&agent=p").unwrap();
        assert_eq!((r.cursor, r.epoch, r.limit), (Some(5), Some(9), 10));
        assert_eq!(r.wait, Duration::from_millis(MAX_WAIT_MS));
        assert!(r.filter.is_some());
        let e = TailRequest::parse("filter=a%20%3D").unwrap_err();
        assert!(e.contains("expected a value after '='"), "{e}");
        assert!(TailRequest::parse("limit=0").is_err());
        assert!(TailRequest::parse("nope=1").is_err());
    }
}
