//! Agents' alert events counted as they are committed, per minute of event time, so that
//! `situation` reads the period's counts and top lists from memory. It used to scan the
//! period's stored alert events on every call: under a soak at 7,500 alert events/s that took
//! 2.6 s after one minute and 60 s after eighteen.
//!
//! What is kept: the number of alert events per minute for [`COUNT_MINUTES`], and per minute
//! for [`DETAIL_MINUTES`] the most alerted destination and source addresses and the detectors
//! that fired. While a minute is current every value is counted; once it is two minutes old each
//! of its lists keeps its [`TOP_PER_MINUTE`] largest entries. A period's top lists are the sums
//! of its minutes' lists, so they are exact for anything in a minute's top and can under-count
//! a value that is sometimes outside it (spread thinly over many minutes): the heavy hitters a
//! duty analyst looks for are the ones kept.
//!
//! The whole minutes' lists are also kept summed ([`Inner::recent`], added to as events are
//! counted, taken from as a minute is trimmed), so that a period's top lists read one map of
//! the whole minutes, not two: their k largest and every value of the trimmed minutes are the
//! only candidates for the period's k largest (any other value's count is its count there, at
//! most the k-th largest's). Summing the two whole minutes (~100,000 sources each under a
//! storm) on every call was nearly all of `situation`'s time (20–45 ms of its 21–46 in the
//! storm soak of 2026-12-07, from its debug log), with the tally's lock held meanwhile.
//!
//! Counting starts at the start of the minute the collector started in ([`AlertTally::new`]):
//! alert events already stored with an event time from then on (that minute's before the start,
//! and any from an agent whose clock runs ahead) are counted at startup by [`AlertTally::seed`].
//! `situation` scans the store for whatever part of a period lies before that or beyond what is
//! kept, so its figures are the same across a restart. Events are counted once: a resent event
//! (sequence at or below the highest already counted for its agent) is skipped, as the
//! correlator does. An event committed with an event time before the start is left to the scan.
//! (Counting from the next whole minute instead left up to a minute of a storm to the scan:
//! 1.2 s per `situation` for the first hour of the 50,000 events/s soak.)

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use palisade_wire::batch::Batch;
use palisade_wire::{Event, EventKind, Timestamp};

use crate::ingest::CommitSink;

/// Minutes of per-minute alert event counts kept (31 days).
pub const COUNT_MINUTES: i64 = 31 * 24 * 60;
/// Minutes of per-minute top lists kept (one day).
pub const DETAIL_MINUTES: i64 = 24 * 60;
/// Entries each list of a closed minute keeps.
pub const TOP_PER_MINUTE: usize = 100;

const NANOS_PER_MINUTE: i64 = 60_000_000_000;

/// The minute (since the epoch) a time falls in.
pub fn minute_of(t: Timestamp) -> i64 {
    t.nanos().div_euclid(NANOS_PER_MINUTE)
}

fn start_of(minute: i64) -> Timestamp {
    Timestamp(minute.saturating_mul(NANOS_PER_MINUTE))
}

/// One minute's lists. Addresses are kept as addresses, not their text: an alert counted costs
/// no allocation for them, and a closed minute's lists stay small and flat (under the storm a
/// `HashMap<String, u64>` entry was a heap string per address, touched once every 10 s by
/// `situation` and cold by then).
#[derive(Debug, Default, PartialEq)]
struct Lists {
    attacked: HashMap<IpAddr, u64>,
    sources: HashMap<IpAddr, u64>,
    detectors: HashMap<String, u64>,
    trimmed: bool,
}

impl Lists {
    /// Counts one alert event's destination, source and detector.
    fn bump(&mut self, attacked: Option<IpAddr>, source: Option<IpAddr>, detector: &str) {
        let trimmed = self.trimmed;
        for (map, ip) in [(&mut self.attacked, attacked), (&mut self.sources, source)] {
            if let Some(ip) = ip {
                bump(map, &ip, trimmed);
            }
        }
        bump(&mut self.detectors, detector, trimmed);
    }

    /// Adds every count of `other`.
    fn add(&mut self, other: &Lists) {
        add_all(&mut self.attacked, &other.attacked);
        add_all(&mut self.sources, &other.sources);
        add_all(&mut self.detectors, &other.detectors);
    }

    /// Takes `minute`'s counts out (a minute that leaves [`Inner::recent`]).
    fn subtract(&mut self, minute: &Lists) {
        subtract(&mut self.attacked, &minute.attacked);
        subtract(&mut self.sources, &minute.sources);
        subtract(&mut self.detectors, &minute.detectors);
    }

    fn trim(&mut self) {
        trim(&mut self.attacked);
        trim(&mut self.sources);
        trim(&mut self.detectors);
        self.trimmed = true;
    }
}

/// Keeps `map`'s [`TOP_PER_MINUTE`] largest.
fn trim<K: Hash + Eq>(map: &mut HashMap<K, u64>) {
    if map.len() > TOP_PER_MINUTE {
        let mut v: Vec<(K, u64)> = map.drain().collect();
        v.select_nth_unstable_by(TOP_PER_MINUTE - 1, |a, b| b.1.cmp(&a.1));
        v.truncate(TOP_PER_MINUTE);
        map.extend(v);
        map.shrink_to_fit();
    }
}

/// Counts one more of `key`, allocating only for a key new to `map`. A trimmed minute (late
/// events) takes new keys only while its list is under twice its top size, so late stragglers
/// cannot grow it without bound.
pub(super) fn bump<K, Q>(map: &mut HashMap<K, u64>, key: &Q, trimmed: bool)
where
    K: Borrow<Q> + Hash + Eq,
    Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
{
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if !trimmed || map.len() < 2 * TOP_PER_MINUTE {
        map.insert(key.to_owned(), 1);
    }
}

/// Takes `minute`'s counts out of `sum`.
fn subtract<K: Hash + Eq>(sum: &mut HashMap<K, u64>, minute: &HashMap<K, u64>) {
    for (k, n) in minute {
        if let Some(total) = sum.get_mut(k) {
            *total = total.saturating_sub(*n);
            if *total == 0 {
                sum.remove(k);
            }
        }
    }
}

/// The `keep` largest of the entries (all with `None`), larger first, ties by name (addresses
/// in address order).
pub fn largest<K: Ord>(
    entries: impl IntoIterator<Item = (K, u64)>,
    keep: Option<usize>,
) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = entries.into_iter().collect();
    let order = |a: &(K, u64), b: &(K, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if let Some(n) = keep {
        if v.len() > n {
            if n == 0 {
                v.clear();
            } else {
                v.select_nth_unstable_by(n - 1, order);
                v.truncate(n);
            }
        }
    }
    v.sort_unstable_by(order);
    v
}

/// Adds every count of `whole` to `sum` (a key is copied only when new to `sum`).
fn add_all<K: Hash + Eq + Clone>(sum: &mut HashMap<K, u64>, whole: &HashMap<K, u64>) {
    sum.reserve(whole.len().saturating_sub(sum.len()));
    for (k, n) in whole {
        match sum.get_mut(k) {
            Some(total) => *total += n,
            None => {
                sum.insert(k.clone(), *n);
            }
        }
    }
}

/// `part + whole` (the trimmed minutes' sums and the whole minutes' running sum) as [`top`]
/// gives it. With `keep` only the candidates are summed: `whole`'s `keep` largest and every
/// key of `part`; any other key's total is its count in `whole`, which is at most the
/// `keep`-th largest there and, ties by name, ordered after it.
fn with_whole<K: Hash + Ord + Clone>(
    mut part: HashMap<K, u64>,
    whole: &HashMap<K, u64>,
    keep: Option<usize>,
) -> HashMap<K, u64> {
    if keep.is_none() {
        add_all(&mut part, whole);
        return part;
    }
    for (name, _) in largest(whole.iter().map(|(name, n)| (name, *n)), keep) {
        if !part.contains_key(name) {
            part.insert(name.clone(), 0);
        }
    }
    for (name, n) in part.iter_mut() {
        *n += whole.get(name).copied().unwrap_or(0);
    }
    keep_largest(part, keep)
}

/// The `keep` largest entries (every one with `None`, unsorted: the caller adds to them).
fn keep_largest<K: Hash + Ord>(map: HashMap<K, u64>, keep: Option<usize>) -> HashMap<K, u64> {
    match keep {
        Some(_) => largest(map, keep).into_iter().collect(),
        None => map,
    }
}

impl Inner {
    /// The first minute of a period from `since` that the top lists reach, and from when on
    /// they cover it.
    fn reach(&self, since: Timestamp, now: Timestamp) -> (i64, Timestamp) {
        let start = (self.from_minute)
            .max(minute_of(now) - DETAIL_MINUTES)
            .max(minute_of(since));
        let covered_from = if start > minute_of(since) {
            start_of(start)
        } else {
            since
        };
        (start, covered_from)
    }

    /// Counts `ev` if it is an alert event in the span kept.
    fn count(&mut self, ev: &Event, now_minute: i64) {
        if ev.event.dataset != EventKind::Alert {
            return;
        }
        let m = minute_of(ev.timestamp);
        if m < self.from_minute || m < now_minute - COUNT_MINUTES {
            return;
        }
        *self.totals.entry(m).or_default() += 1;
        if m < now_minute - DETAIL_MINUTES {
            return;
        }
        let untrimmed = &mut self.untrimmed;
        let lists = self.lists.entry(m).or_insert_with(|| {
            untrimmed.insert(m);
            Lists::default()
        });
        let attacked = ev.destination.as_ref().and_then(|d| d.ip);
        let source = ev.source.as_ref().and_then(|s| s.ip);
        let detector = ev
            .rule
            .as_ref()
            .and_then(|r| r.name.as_deref().or(r.id.as_deref()))
            .unwrap_or("unnamed");
        lists.bump(attacked, source, detector);
        if !lists.trimmed {
            self.recent.bump(attacked, source, detector);
        }
    }
}

#[derive(Debug)]
struct Inner {
    /// First minute counted.
    from_minute: i64,
    totals: BTreeMap<i64, u64>,
    lists: BTreeMap<i64, Lists>,
    /// Minutes whose lists are still whole.
    untrimmed: BTreeSet<i64>,
    /// The lists of the `untrimmed` minutes summed (see the module docs).
    recent: Lists,
    /// Highest sequence counted per agent.
    last_seq: HashMap<String, u64>,
}

/// What a period holds, from the tally.
#[derive(Debug, Default)]
pub struct Counted {
    /// Alert events.
    pub total: u64,
    /// By destination address.
    pub attacked: HashMap<IpAddr, u64>,
    /// By source address.
    pub sources: HashMap<IpAddr, u64>,
    /// By detector (rule name, else id).
    pub detectors: HashMap<String, u64>,
    /// The tally covers the period from here on; the part before is the caller's to scan.
    pub covered_from: Timestamp,
}

/// The per-minute alert tallies (see the module docs).
#[derive(Debug)]
pub struct AlertTally {
    inner: Mutex<Inner>,
}

impl AlertTally {
    /// A tally counting from the start of the minute `started` falls in.
    pub fn new(started: Timestamp) -> Self {
        AlertTally {
            inner: Mutex::new(Inner {
                from_minute: minute_of(started),
                totals: BTreeMap::new(),
                lists: BTreeMap::new(),
                untrimmed: BTreeSet::new(),
                recent: Lists::default(),
                last_seq: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first moment counted: events with an earlier event time are the scan's.
    pub fn start(&self) -> Timestamp {
        start_of(self.lock().from_minute)
    }

    /// Counts an alert event already in the store with an event time from [`Self::start`] on
    /// (stored earlier in the start's minute, or by an agent whose clock runs ahead), so that
    /// the scan for the part before the start and the tally together hold every stored event.
    /// Call for each of them before ingest starts.
    pub fn seed(&self, ev: &Event, now: Timestamp) {
        let mut g = self.lock();
        let seq = ev.event.sequence;
        let last = g.last_seq.entry(ev.agent.id.clone()).or_insert(seq);
        *last = (*last).max(seq);
        g.count(ev, minute_of(now));
    }

    /// Counts the alert events of committed batches; `now` decides what is old enough to trim
    /// or drop.
    pub fn add(&self, batches: &[Batch], now: Timestamp) {
        let mut g = self.lock();
        let inner = &mut *g;
        let now_minute = minute_of(now);
        for batch in batches {
            let last = inner.last_seq.get(&batch.agent_id).copied();
            let mut highest = last;
            for e in &batch.events {
                let seq = e.event.event.sequence;
                if last.is_some_and(|l| seq <= l) {
                    continue;
                }
                highest = Some(highest.map_or(seq, |h: u64| h.max(seq)));
                inner.count(&e.event, now_minute);
            }
            if let Some(h) = highest {
                inner.last_seq.insert(batch.agent_id.clone(), h);
            }
        }
        // Minutes two or more behind now are closed: keep their tops.
        while let Some(&m) = inner.untrimmed.first() {
            if m >= now_minute - 1 {
                break;
            }
            inner.untrimmed.pop_first();
            if let Some(l) = inner.lists.get_mut(&m) {
                inner.recent.subtract(l);
                l.trim();
            }
        }
        while inner
            .lists
            .first_key_value()
            .is_some_and(|(m, _)| *m < now_minute - DETAIL_MINUTES)
        {
            inner.lists.pop_first();
        }
        while inner
            .totals
            .first_key_value()
            .is_some_and(|(m, _)| *m < now_minute - COUNT_MINUTES)
        {
            inner.totals.pop_first();
        }
    }

    /// The alert events with event time from `since` on (whole minutes: the minute `since`
    /// falls in counts), with their top lists, as far back as the tally reaches. With `keep`,
    /// the attacked and source lists hold only their `keep` largest (ties: the name first in
    /// order), which is all a caller that adds nothing to them needs: under an alert storm
    /// the two whole minutes hold ~100,000 sources each, and copying and sorting them all took
    /// most of `situation`'s 130 ms (measured with perf in the 15%-alert soak). The detector
    /// list is always whole (one entry per rule).
    pub fn since(&self, since: Timestamp, now: Timestamp, keep: Option<usize>) -> Counted {
        let g = self.lock();
        let (start, covered_from) = g.reach(since, now);
        let mut out = Counted {
            covered_from,
            ..Counted::default()
        };
        for (_, n) in g.totals.range(start..) {
            out.total += n;
        }
        // When every whole minute is in the period (a period of two minutes or more), their
        // running sum stands in for them.
        let use_recent = g.untrimmed.first().is_none_or(|m| *m >= start);
        let mut sum = Lists::default();
        for (_, l) in g.lists.range(start..) {
            if use_recent && !l.trimmed {
                continue;
            }
            sum.add(l);
        }
        if use_recent {
            add_all(&mut sum.detectors, &g.recent.detectors);
            out.attacked = with_whole(sum.attacked, &g.recent.attacked, keep);
            out.sources = with_whole(sum.sources, &g.recent.sources, keep);
        } else {
            out.attacked = keep_largest(sum.attacked, keep);
            out.sources = keep_largest(sum.sources, keep);
        }
        out.detectors = sum.detectors;
        out
    }

    /// From when on [`Self::since`] covers a period starting at `since`: the part before is
    /// the caller's to scan.
    pub fn covered_from(&self, since: Timestamp, now: Timestamp) -> Timestamp {
        self.lock().reach(since, now).1
    }

    /// The number of alert events with event time in `[from, to)` (whole minutes: `to`'s
    /// minute is left out, as [`Self::since`] counts it), and from when on the tally covered
    /// that span (`to` when it covers none of it).
    pub fn count_between(
        &self,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
    ) -> (u64, Timestamp) {
        let g = self.lock();
        let start = (g.from_minute)
            .max(minute_of(now) - COUNT_MINUTES)
            .max(minute_of(from));
        let end = minute_of(to);
        if start >= end {
            // Nothing to count, but a first counted minute that is `to`'s own is covered: it
            // is counted in the period from `to` on. Answering `to` here left the caller to
            // scan that minute of the store (up to 450,000 alert events under the storm: a
            // 2.8 s `situation` for the minute an hour after the start, in the 64-minute soak).
            return (0, start_of(start).min(to));
        }
        let covered_from = if start > minute_of(from) {
            start_of(start)
        } else {
            from
        };
        (
            g.totals.range(start..end).map(|(_, n)| n).sum(),
            covered_from,
        )
    }
}

impl CommitSink for AlertTally {
    fn committed(&self, batches: &Arc<[Batch]>) {
        self.add(batches, Timestamp::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::batch::ReceivedEvent;
    use palisade_wire::event::{Endpoint, Rule};
    use palisade_wire::Severity;

    const MIN: i64 = NANOS_PER_MINUTE;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alert(seq: u64, t: i64, src: &str, dst: &str, rule: &str) -> ReceivedEvent {
        let mut e = Event::new("probe-1", EventKind::Alert, Severity::High);
        e.timestamp = Timestamp(t);
        e.event.sequence = seq;
        e.source = Some(Endpoint {
            ip: Some(src.parse().unwrap()),
            ..Endpoint::default()
        });
        e.destination = Some(Endpoint {
            ip: Some(dst.parse().unwrap()),
            ..Endpoint::default()
        });
        e.rule = Some(Rule {
            name: Some(rule.into()),
            ..Rule::default()
        });
        ReceivedEvent {
            raw: Vec::new(),
            event: e,
        }
    }

    fn batch(events: Vec<ReceivedEvent>) -> Batch {
        Batch {
            agent_id: "probe-1".into(),
            first_sequence: events.first().map_or(0, |e| e.event.event.sequence),
            last_sequence: events.last().map_or(0, |e| e.event.event.sequence),
            events,
        }
    }

    /// Counts and tops per period, resent events counted once, events from before the start
    /// left to the caller's scan (with the boundary said), closed minutes trimmed to their top.
    #[test]
    fn counts_tops_resends_and_coverage() {
        let start = 1_000 * MIN + 30_000_000_000;
        let tally = AlertTally::new(Timestamp(start));
        let now = Timestamp(1_010 * MIN);
        // Before the start's minute: not counted (the scan's).
        let early = alert(1, start - MIN, "10.0.0.9", "192.0.2.1", "scan");
        let mut events = vec![early];
        let mut seq = 1;
        for m in 1_001..1_005 {
            for i in 0..(TOP_PER_MINUTE as i64 + 50) {
                seq += 1;
                let src = format!("10.1.{}.{}", i / 250, i % 250);
                events.push(alert(seq, m * MIN + i, &src, "192.0.2.7", "scan"));
            }
            for i in 0..3 {
                seq += 1;
                events.push(alert(
                    seq,
                    m * MIN + 999 + i,
                    "203.0.113.5",
                    "192.0.2.8",
                    "beacon",
                ));
            }
        }
        let b = batch(events);
        tally.add(std::slice::from_ref(&b), now);
        // The same batch again (a resend) changes nothing.
        tally.add(std::slice::from_ref(&b), now);

        let per_minute = TOP_PER_MINUTE as u64 + 53;
        let c = tally.since(Timestamp(1_002 * MIN + 5), now, None);
        assert_eq!(c.total, 3 * per_minute, "minutes 1002..=1004");
        assert_eq!(c.covered_from, Timestamp(1_002 * MIN + 5));
        assert_eq!(
            c.attacked.get(&ip("192.0.2.7")),
            Some(&(3 * (per_minute - 3)))
        );
        assert_eq!(c.sources.get(&ip("203.0.113.5")), Some(&9));
        assert_eq!(c.detectors.get("beacon"), Some(&9));
        // Asked for the largest only: the same leaders with the same counts, nothing else.
        let top = tally.since(Timestamp(1_002 * MIN + 5), now, Some(1));
        assert_eq!(top.total, c.total);
        assert_eq!(top.sources, HashMap::from([(ip("203.0.113.5"), 9)]));
        assert_eq!(
            top.attacked,
            HashMap::from([(ip("192.0.2.7"), 3 * (per_minute - 3))])
        );
        assert_eq!(top.detectors, c.detectors, "detectors are always whole");
        let all = tally.since(Timestamp(1_002 * MIN + 5), now, Some(usize::MAX));
        assert_eq!(
            (all.sources, all.attacked),
            (c.sources.clone(), c.attacked.clone())
        );
        // Closed minutes keep TOP_PER_MINUTE sources each (ties cut arbitrarily, the heavy
        // hitter always kept).
        assert!(c.sources.len() <= 3 * TOP_PER_MINUTE, "{}", c.sources.len());

        // A period reaching back before the start: covered from the start's minute.
        let c = tally.since(Timestamp(990 * MIN), now, None);
        assert_eq!(c.total, 4 * per_minute);
        assert_eq!(c.covered_from, Timestamp(1_000 * MIN));
        assert_eq!(
            tally.covered_from(Timestamp(990 * MIN), now),
            c.covered_from
        );
        assert_eq!(
            tally.covered_from(Timestamp(1_002 * MIN + 5), now),
            Timestamp(1_002 * MIN + 5),
            "a period inside the tally's reach is covered from its start"
        );
        let (n, from) = tally.count_between(Timestamp(990 * MIN), Timestamp(1_003 * MIN), now);
        assert_eq!((n, from), (2 * per_minute, Timestamp(1_000 * MIN)));
        let (n, from) = tally.count_between(Timestamp(980 * MIN), Timestamp(990 * MIN), now);
        assert_eq!((n, from), (0, Timestamp(990 * MIN)), "nothing covered");
    }

    /// A span ending inside the first counted minute: that minute is the later period's, so
    /// the tally covers the span from the minute's start and only the part before it is the
    /// caller's to scan (the previous period's count an hour after the collector started).
    #[test]
    fn a_span_ending_in_the_first_counted_minute_leaves_only_the_part_before() {
        let start = 1_000 * MIN;
        let tally = AlertTally::new(Timestamp(start + 17 * 1_000_000_000));
        let now = Timestamp(start + 60 * MIN + 30 * 1_000_000_000);
        let events = (1..=5)
            .map(|i| {
                alert(
                    i,
                    start + 40 * 1_000_000_000,
                    "203.0.113.5",
                    "192.0.2.7",
                    "r",
                )
            })
            .collect();
        tally.add(&[batch(events)], now);
        let to = Timestamp(start + 25 * 1_000_000_000);
        let (n, from) = tally.count_between(Timestamp(start - 60 * MIN), to, now);
        assert_eq!(
            (n, from),
            (0, Timestamp(start)),
            "the first minute is the later period's; only the span before it is to scan"
        );
        assert_eq!(
            tally.since(to, now, None).total,
            5,
            "and the later period counts it"
        );
        // A tally that starts after the span's end covers none of it.
        let late = AlertTally::new(Timestamp(start + 3 * MIN));
        let (n, from) = late.count_between(Timestamp(start - 60 * MIN), to, now);
        assert_eq!((n, from), (0, to), "nothing covered");
        // A span inside one counted minute is covered (the later period counts that minute).
        let inside = Timestamp(start + 5 * MIN + 10 * 1_000_000_000);
        let (n, from) =
            tally.count_between(inside, Timestamp(inside.nanos() + 20_000_000_000), now);
        assert_eq!((n, from), (0, Timestamp(start + 5 * MIN)));
    }

    /// The largest first, ties by name, whatever the order they were counted in.
    #[test]
    fn largest_orders_by_count_then_name() {
        let map = HashMap::from([("b", 2), ("a", 2), ("c", 5), ("d", 1), ("e", 2)]);
        assert_eq!(largest(map.clone(), Some(2)), vec![("c", 5), ("a", 2)]);
        assert_eq!(largest(map.clone(), Some(0)), vec![]);
        assert_eq!(
            largest(map, None),
            vec![("c", 5), ("a", 2), ("b", 2), ("e", 2), ("d", 1)]
        );
        // Addresses tie in address order, not their text's.
        let ips = HashMap::from([(ip("10.0.0.10"), 1), (ip("10.0.0.9"), 1), (ip("::1"), 1)]);
        assert_eq!(
            largest(ips, Some(2)),
            vec![(ip("10.0.0.9"), 1), (ip("10.0.0.10"), 1)]
        );
    }

    /// The running sum of the whole minutes gives the same top lists as summing every minute's
    /// lists, call after call, as minutes close and are trimmed: with ties, late events into
    /// trimmed minutes, events ahead of now and periods shorter than the whole minutes. Checked
    /// against a sum of the kept lists made here, and the running sum against its definition.
    #[test]
    fn running_sum_gives_the_tops_of_every_minute_summed() {
        let tally = AlertTally::new(Timestamp(100 * MIN));
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut seq = 0;
        let mut checked = 0;
        for step in 0..240i64 {
            // Four calls a minute; now moves 15 s each.
            let now = 100 * MIN + step * 15_000_000_000;
            let mut events = Vec::new();
            for _ in 0..(40 + next(200)) {
                seq += 1;
                // Mostly now's minute, some late (up to 5 minutes), some ahead (agent clock).
                let t = match next(20) {
                    0 => now - (1 + next(5) as i64) * MIN,
                    1 => now + MIN,
                    _ => now - next(15_000_000_000) as i64,
                }
                .max(100 * MIN);
                // Few heavy sources and many light ones: ties everywhere below the top.
                let s = if next(4) == 0 { next(5) } else { 5 + next(400) };
                let src = format!("10.0.{}.{}", s / 250, s % 250);
                let dst = format!("192.0.2.{}", next(30));
                events.push(alert(
                    seq,
                    t,
                    &src,
                    &dst,
                    ["scan", "beacon"][next(2) as usize],
                ));
            }
            tally.add(&[batch(events)], Timestamp(now));
            let g = tally.lock();
            // The running sum is the sum of the whole minutes' lists.
            let mut whole = Lists::default();
            for m in &g.untrimmed {
                whole.add(&g.lists[m]);
            }
            assert!(g.recent == whole, "running sum at step {step}");
            let reference = |since: i64, keep: usize| {
                let (start, _) = g.reach(Timestamp(since), Timestamp(now));
                let mut sum = Lists::default();
                for (_, l) in g.lists.range(start..) {
                    sum.add(l);
                }
                (
                    keep_largest(sum.attacked, Some(keep)),
                    keep_largest(sum.sources, Some(keep)),
                    sum.detectors,
                )
            };
            let cases: Vec<(i64, usize)> = vec![
                (now - 60 * MIN, 10),
                (now - 60 * MIN, 1),
                (now - 3 * MIN, 3),
                (now - 30_000_000_000, 10),
            ];
            let expected: Vec<_> = cases.iter().map(|&(s, k)| reference(s, k)).collect();
            drop(g);
            for ((since, keep), want) in cases.into_iter().zip(expected) {
                let c = tally.since(Timestamp(since), Timestamp(now), Some(keep));
                assert_eq!(
                    (c.attacked, c.sources, c.detectors),
                    want,
                    "step {step}, since now - {} s, keep {keep}",
                    (now - since) / 1_000_000_000
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 960);
    }

    /// Minutes older than the kept spans are dropped as time passes.
    #[test]
    fn old_minutes_are_dropped() {
        let tally = AlertTally::new(Timestamp(0));
        let b = batch(vec![alert(1, 5 * MIN, "10.0.0.1", "192.0.2.1", "scan")]);
        tally.add(&[b], Timestamp(6 * MIN));
        assert_eq!(tally.since(Timestamp(0), Timestamp(6 * MIN), None).total, 1);
        let later = Timestamp((5 + DETAIL_MINUTES + 1) * MIN);
        tally.add(&[], later);
        let c = tally.since(Timestamp(0), later, None);
        assert_eq!(
            c.total, 0,
            "lists and their minutes beyond a day are not read"
        );
        assert_eq!(tally.count_between(Timestamp(0), later, later).0, 1);
        let much_later = Timestamp((5 + COUNT_MINUTES + 1) * MIN);
        tally.add(&[], much_later);
        assert_eq!(
            tally.count_between(Timestamp(0), much_later, much_later).0,
            0
        );
    }

    /// What `since` costs under an alert storm (prints figures; run with `cargo test --release
    /// -p palisade-collector --lib alert_tally::tests::storm_since -- --ignored --nocapture`):
    /// `STORM_MINUTES` (92) minutes of 450,000 alert events (~7,500 a second) from
    /// `STORM_SOURCES` (100,000) sources, the last two minutes whole; the hour's ten largest
    /// timed as the minutes fill in (at 2, 11, 31, 61, 92 and the last), then with and without
    /// `keep`, for a day's period too when the storm ran longer than a day; and what counting
    /// one commit of 1,000 alert events costs (the tally's lock is held meanwhile).
    #[test]
    #[ignore = "benchmark: prints figures"]
    fn storm_since() {
        let var = |name: &str, default: u32| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let sources = var("STORM_SOURCES", 100_000);
        // How long the storm runs; from 1,441 minutes a day's period is timed too.
        let minutes = i64::from(var("STORM_MINUTES", 92).max(2));
        let last = 10_000 + minutes - 1;
        let start = 10_000 * MIN;
        let tally = AlertTally::new(Timestamp(start));
        let mut seq = 0u64;
        let mut add_minute = |m: i64, now: i64| {
            let mut events = Vec::with_capacity(450_000);
            for i in 0..450_000u32 {
                seq += 1;
                let g = i.wrapping_mul(2_654_435_761) % sources;
                let src = format!("10.{}.{}.{}", g >> 16, (g >> 8) & 255, g & 255);
                let dst = format!("172.16.{}.10", i % 250);
                events.push(alert(seq, m * MIN + i64::from(i), &src, &dst, "scan"));
            }
            let b = batch(events);
            let t = std::time::Instant::now();
            tally.add(std::slice::from_ref(&b), Timestamp(now));
            t.elapsed()
        };
        let ten_largest_of_the_hour = |now: Timestamp| {
            let since = Timestamp(now.nanos() - 3_600 * 1_000_000_000);
            (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    std::hint::black_box(tally.since(since, now, Some(10)));
                    t.elapsed().as_secs_f64() * 1e3
                })
                .fold(f64::MAX, f64::min)
        };
        // As the tally fills: the hour's ten largest cost more with each trimmed minute in the
        // period, until the period (an hour) is full.
        let mut took = std::time::Duration::ZERO;
        let mut filling = Vec::new();
        for m in 10_000..=last {
            let now = m * MIN + 30_000_000_000;
            took = add_minute(m, now);
            if [10_001, 10_010, 10_030, 10_060, 10_091, last].contains(&m) {
                filling.push(format!(
                    "{} min {:.1} ms",
                    m - 10_000 + 1,
                    ten_largest_of_the_hour(Timestamp(now))
                ));
            }
        }
        println!(
            "since (an hour), ten largest, as minutes are counted: {} (best of 5 each)",
            filling.join(", ")
        );
        let now = Timestamp(last * MIN + 30_000_000_000);
        println!(
            "counting 450,000 alert events (one minute of the storm) in one call: {:.1} ms, \
             {:.2} ms per 1,000",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e3 / 450.0
        );
        let mut periods = vec![("an hour", 3_600)];
        if minutes > 1_440 {
            periods.push(("a day", 86_400));
        }
        for (period, secs) in periods {
            let since = Timestamp(now.nanos() - secs * 1_000_000_000);
            for (label, keep) in [("ten largest", Some(10)), ("every value", None)] {
                let mut best = f64::MAX;
                for _ in 0..5 {
                    let t = std::time::Instant::now();
                    let c = tally.since(since, now, keep);
                    let mut v: Vec<(IpAddr, u64)> = c.sources.into_iter().collect();
                    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    v.truncate(10);
                    best = best.min(t.elapsed().as_secs_f64() * 1e3);
                }
                println!("since ({period}) and the top 10, {label}: {best:.1} ms (best of 5)");
            }
        }
    }
}
