//! Shared time and state helpers for the network detectors: capture-time unit conversion, a
//! hash map with a hard entry cap that counts its evictions, a per-key alert rate limiter, and a
//! tumbling-window counter. Nothing here reads the wall clock.

use std::collections::HashMap;
use std::hash::Hash;

use palisade_wire::Timestamp;

/// Nanoseconds in one second.
pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Converts a config duration in seconds to capture-time nanoseconds, saturating instead of
/// overflowing on absurd values.
pub fn secs_to_nanos(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SEC)
}

/// Capture-time nanoseconds as fractional seconds (for evidence).
pub fn nanos_to_secs(nanos: i64) -> f64 {
    // Precision loss past 2^53 ns (104 days) is irrelevant for evidence.
    nanos as f64 / NANOS_PER_SEC as f64
}

/// A capture timestamp as RFC 3339 (for evidence).
pub fn rfc3339(ts: i64) -> String {
    Timestamp(ts).to_string()
}

/// A hash map for keys taken from the wire (addresses, ports): foldhash with a random seed per
/// map. About as fast as FxHash on these small keys (std's SipHash was ~13 % of a replay in the
/// port scan and flood detectors), and, unlike FxHash, seeded, so an attacker cannot
/// precompute keys that all land in one bucket.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set for keys taken from the wire; see [`FastMap`].
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// State that knows when it was last touched, so a full table can drop the stalest entries.
pub trait LastSeen {
    /// Capture time (ns) of the most recent packet that touched this entry.
    fn last_seen(&self) -> i64;
}

/// A `HashMap` that never holds more than `max_entries`. Inserting into a full map first drops
/// the least recently seen eighth of the entries (amortised O(1) per insert, instead of a full
/// scan per insert), counting each as an eviction.
///
/// Keys are addresses an attacker chooses, so the hash is seeded per map ([`FastMap`]): the
/// cap bounds memory but not probe lengths, and a crafted set of colliding keys would make
/// every lookup scan the whole table.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    map: FastMap<K, V>,
    max_entries: usize,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V: LastSeen> BoundedMap<K, V> {
    /// An empty map holding at most `max_entries` (at least one).
    pub fn new(max_entries: usize) -> Self {
        BoundedMap {
            map: FastMap::default(),
            max_entries: max_entries.max(1),
            evictions: 0,
        }
    }

    /// The entry for `key`, created by `make` if absent (evicting first if the map is full).
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        if self.map.len() >= self.max_entries && !self.map.contains_key(&key) {
            self.evict_stalest();
        }
        self.map.entry(key).or_insert_with(make)
    }

    /// The entry for `key`, if present.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The entry for `key`, if present.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Removes and returns the entry for `key` (not counted as an eviction).
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    /// Drops entries not seen since `cutoff` (ns). Expiry is normal ageing, not an eviction.
    pub fn expire_before(&mut self, cutoff: i64) {
        self.map.retain(|_, v| v.last_seen() >= cutoff);
    }

    /// Keeps only the entries for which `keep` returns true (not counted as evictions).
    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(keep);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries dropped because the map was full, since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn evict_stalest(&mut self) {
        let count = (self.map.len() / 8).max(1);
        let mut ages: Vec<(i64, K)> = self
            .map
            .iter()
            .map(|(k, v)| (v.last_seen(), k.clone()))
            .collect();
        if count < ages.len() {
            ages.select_nth_unstable_by_key(count - 1, |(seen, _)| *seen);
        }
        for (_, key) in ages.into_iter().take(count) {
            self.map.remove(&key);
        }
        self.evictions += count as u64;
    }
}

/// Rate-limits one alert key to one alert per interval, remembering how many were held back so
/// the next alert can say so.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlertGate {
    last_fired: Option<i64>,
    suppressed: u64,
}

impl AlertGate {
    /// Whether an alert may fire at `now` given `interval` ns between alerts. On `Some`, the
    /// value is how many alerts were suppressed since the previous one (and the gate re-arms);
    /// on `None` the suppressed count grows.
    pub fn try_fire(&mut self, now: i64, interval: i64) -> Option<u64> {
        match self.last_fired {
            Some(last) if now.saturating_sub(last) < interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_fired = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Capture time of the last alert that fired, if any.
    pub fn last_fired(&self) -> Option<i64> {
        self.last_fired
    }
}

/// A counter over tumbling windows: the window starts at the first event and resets once an
/// event arrives `window` ns or more after the start. Cheaper than a sliding window; a burst
/// that straddles a boundary is still caught once it lasts two windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct TumblingCount {
    start: i64,
    count: u64,
}

impl TumblingCount {
    /// Counts one event at `ts` and returns the count in the current window.
    pub fn add(&mut self, ts: i64, window: i64) -> u64 {
        self.roll(ts, window);
        self.count += 1;
        self.count
    }

    /// Starts a new window if `ts` is past the current one; returns true when it did.
    pub fn roll(&mut self, ts: i64, window: i64) -> bool {
        if self.count == 0 || ts.saturating_sub(self.start) >= window {
            self.start = ts;
            self.count = 0;
            true
        } else {
            false
        }
    }

    /// Events in the current window.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Start of the current window (ns).
    pub fn start(&self) -> i64 {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Seen(i64);
    impl LastSeen for Seen {
        fn last_seen(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn bounded_map_evicts_stalest_and_counts() {
        let mut map = BoundedMap::new(16);
        for i in 0..16 {
            map.get_or_insert_with(i, || Seen(i64::from(i)));
        }
        assert_eq!(map.evictions(), 0);
        map.get_or_insert_with(100, || Seen(100));
        assert_eq!(map.evictions(), 2);
        assert!(map.get(&0).is_none() && map.get(&1).is_none());
        assert!(map.get(&2).is_some() && map.get(&100).is_some());
        assert!(map.len() <= 16);
    }

    #[test]
    fn expiry_is_not_eviction() {
        let mut map = BoundedMap::new(4);
        map.get_or_insert_with(1, || Seen(1));
        map.get_or_insert_with(2, || Seen(10));
        map.expire_before(5);
        assert_eq!(map.len(), 1);
        assert_eq!(map.evictions(), 0);
    }

    #[test]
    fn gate_counts_suppressed_between_alerts() {
        let mut gate = AlertGate::default();
        assert_eq!(gate.try_fire(0, 10), Some(0));
        assert_eq!(gate.try_fire(5, 10), None);
        assert_eq!(gate.try_fire(9, 10), None);
        assert_eq!(gate.try_fire(10, 10), Some(2));
    }

    #[test]
    fn tumbling_count_resets_after_window() {
        let mut c = TumblingCount::default();
        assert_eq!(c.add(100, 10), 1);
        assert_eq!(c.add(109, 10), 2);
        assert_eq!(c.add(110, 10), 1);
    }
}
