//! The correlation window store: one compact record per (correlation rule, group).
//!
//! rsigma keeps a group as a `HashMap<(usize, Vec<Option<String>>), WindowState>` entry, a
//! temporal window as its own `HashMap<String, VecDeque<i64>>` and event references in a second
//! map with a second copy of the key: about 0.9 KiB per group, 1.1 GB of RSS at a million
//! groups. Here a group is one [`Group`] in a slab (88 bytes), found through an open-addressing
//! table of slot numbers (4 bytes a bucket), with
//! - the key encoded into 22 inline bytes ([`Key`]; an IPv4 address takes 5),
//! - the window's hits as `(seconds, rule)` pairs and the event references as integers
//!   (`seconds, agent, sequence`), each in a [`Ring`] that holds its first entries
//!   inline and moves to the heap only when a group sees more hits.
//!
//! Timestamps are event-time seconds held as `u32` (until 2106); later times are clamped.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::Ipv4Addr;

/// Bytes a key holds without a heap allocation.
const INLINE_KEY: usize = 22;
/// Separates the parts of a key (never a byte of UTF-8).
const SEP: u8 = 0xFE;
/// An absent part.
const ABSENT: u8 = 0xFF;
/// An IPv4 address in its canonical text form follows as 4 bytes.
const IPV4: u8 = 0xFD;

/// A group key or a `value_count` value: its parts (a field value, or none when the event
/// lacks the field) encoded into bytes, inline when short.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// Up to [`INLINE_KEY`] bytes (the rest zero, so derived equality and hashing hold).
    Inline {
        /// Bytes used.
        len: u8,
        /// The encoding.
        bytes: [u8; INLINE_KEY],
    },
    /// Longer encodings.
    Heap(Box<[u8]>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.parts()).finish()
    }
}

impl Key {
    /// Encodes `parts` in order.
    pub fn encode<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> Key {
        let mut buf: Vec<u8> = Vec::with_capacity(INLINE_KEY);
        for (i, part) in parts.into_iter().enumerate() {
            if i > 0 {
                buf.push(SEP);
            }
            match part {
                None => buf.push(ABSENT),
                Some(s) => match canonical_ipv4(s) {
                    Some(ip) => {
                        buf.push(IPV4);
                        buf.extend_from_slice(&ip.octets());
                    }
                    None => buf.extend_from_slice(s.as_bytes()),
                },
            }
        }
        Key::from_bytes(&buf)
    }

    fn from_bytes(b: &[u8]) -> Key {
        if b.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..b.len()].copy_from_slice(b);
            Key::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(b.into())
        }
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }

    /// The parts back, in order.
    pub fn parts(&self) -> Vec<Option<String>> {
        let b = self.bytes();
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            match b.get(i) {
                Some(&ABSENT) => {
                    out.push(None);
                    i += 1;
                }
                Some(&IPV4) if i + 5 <= b.len() => {
                    let o = &b[i + 1..i + 5];
                    out.push(Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]).to_string()));
                    i += 5;
                }
                _ => {
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == SEP)
                        .map_or(b.len(), |p| i + p);
                    out.push(Some(String::from_utf8_lossy(&b[i..end]).into_owned()));
                    i = end;
                }
            }
            // `i` now sits on a separator or the end.
            if i >= b.len() {
                break;
            }
            i += 1;
        }
        out
    }

    /// Heap bytes beyond the record itself.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Key::Inline { .. } => 0,
            Key::Heap(b) => b.len(),
        }
    }
}

/// `s` as an IPv4 address when the address prints back as exactly `s`.
fn canonical_ipv4(s: &str) -> Option<Ipv4Addr> {
    if !(7..=15).contains(&s.len()) || !s.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let ip: Ipv4Addr = s.parse().ok()?;
    // Rust refuses leading zeros, so a parsed address always prints back the same.
    Some(ip)
}

/// A short queue: its first `N` entries inline, more on the heap.
#[derive(Clone, Debug)]
pub enum Ring<T: Copy + Default, const N: usize> {
    /// `len` entries in `items[..len]`, oldest first.
    Inline {
        /// Entries used.
        len: u8,
        /// Storage.
        items: [T; N],
    },
    /// More than `N` entries.
    Heap(Box<VecDeque<T>>),
}

impl<T: Copy + Default, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Ring::Inline {
            len: 0,
            items: [T::default(); N],
        }
    }
}

impl<T: Copy + Default, const N: usize> Ring<T, N> {
    /// Entries held.
    pub fn len(&self) -> usize {
        match self {
            Ring::Inline { len, .. } => usize::from(*len),
            Ring::Heap(d) => d.len(),
        }
    }

    /// Holds nothing?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = T> + '_ {
        let (a, b): (&[T], &[T]) = match self {
            Ring::Inline { len, items } => (&items[..usize::from(*len)], &[]),
            Ring::Heap(d) => d.as_slices(),
        };
        a.iter().chain(b.iter()).copied()
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<T> {
        self.iter().next()
    }

    /// The newest entry.
    pub fn back(&self) -> Option<T> {
        self.iter().next_back()
    }

    /// Appends; when `cap` entries are already held the oldest goes first.
    pub fn push_back(&mut self, x: T, cap: usize) {
        let cap = cap.max(1);
        while self.len() >= cap {
            self.pop_front();
        }
        match self {
            Ring::Inline { len, items } if usize::from(*len) < N => {
                items[usize::from(*len)] = x;
                *len += 1;
            }
            Ring::Inline { len, items } => {
                let mut d = VecDeque::with_capacity((2 * N).clamp(4, cap.max(4)));
                d.extend(items[..usize::from(*len)].iter().copied());
                d.push_back(x);
                *self = Ring::Heap(Box::new(d));
            }
            Ring::Heap(d) => d.push_back(x),
        }
    }

    /// Removes the oldest entry.
    pub fn pop_front(&mut self) -> Option<T> {
        match self {
            Ring::Inline { len, items } => {
                if *len == 0 {
                    return None;
                }
                let first = items[0];
                items.copy_within(1..usize::from(*len), 0);
                *len -= 1;
                Some(first)
            }
            Ring::Heap(d) => {
                let first = d.pop_front();
                if d.len() <= N {
                    self.compact();
                }
                first
            }
        }
    }

    /// Keeps the entries `keep` accepts, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(T) -> bool) {
        let kept: Vec<T> = self.iter().filter(|&x| keep(x)).collect();
        if kept.len() == self.len() {
            return;
        }
        self.clear();
        for x in kept {
            self.push_back(x, usize::MAX);
        }
    }

    /// Empties (and frees any heap storage).
    pub fn clear(&mut self) {
        *self = Ring::default();
    }

    /// Moves back inline when the entries fit again.
    fn compact(&mut self) {
        if let Ring::Heap(d) = self {
            if d.len() <= N {
                let mut items = [T::default(); N];
                for (slot, x) in items.iter_mut().zip(d.iter()) {
                    *slot = *x;
                }
                *self = Ring::Inline {
                    len: d.len() as u8,
                    items,
                };
            }
        }
    }

    /// Heap bytes beyond the record itself (the deque's header and its buffer).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Ring::Inline { .. } => 0,
            Ring::Heap(d) => {
                std::mem::size_of::<VecDeque<T>>() + d.capacity() * std::mem::size_of::<T>()
            }
        }
    }
}

/// One hit in a window: when, and (for `temporal` types) which referenced rule, as its
/// position in the correlation's `rules` list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hit {
    /// Event time, seconds.
    pub secs: u32,
    /// Rule position (temporal types), else 0.
    pub rule: u32,
}

/// Where an event behind a correlation is stored: its agent and sequence (unique in the
/// event store) and its time in whole seconds, as integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ref {
    /// Event time, whole seconds (window arithmetic uses these).
    pub secs: u32,
    /// The agent, as its number in the engine's agent table.
    pub agent: u32,
    /// `event.sequence`, low and high halves (two `u32`s keep the record 4-byte aligned).
    seq: [u32; 2],
}

impl Ref {
    /// A reference to the event at `nanos` (since the epoch) from `agent`.
    pub fn new(nanos: i64, agent: u32, sequence: u64) -> Ref {
        Ref {
            secs: clamp_secs(nanos.div_euclid(1_000_000_000)),
            agent,
            seq: [sequence as u32, (sequence >> 32) as u32],
        }
    }

    /// `event.sequence`.
    pub fn sequence(&self) -> u64 {
        u64::from(self.seq[0]) | (u64::from(self.seq[1]) << 32)
    }

    /// Event time, nanoseconds since the epoch (whole seconds).
    pub fn timestamp_nanos(&self) -> i64 {
        i64::from(self.secs) * 1_000_000_000
    }
}

/// Event-time seconds as stored (`u32::MAX` itself is [`NO_ALERT`]).
pub fn clamp_secs(secs: i64) -> u32 {
    secs.clamp(0, i64::from(u32::MAX - 1)) as u32
}

/// No alert yet (or its suppression is over).
pub const NO_ALERT: u32 = u32::MAX;
/// A vacant slab slot.
const VACANT: u16 = u16::MAX;

/// One (correlation rule, group).
#[derive(Clone, Debug)]
pub struct Group {
    /// The group-by values.
    pub key: Key,
    /// Hits in the window (`event_count`, `temporal`, `temporal_ordered`).
    pub hits: Ring<Hit, 2>,
    /// Events to name in an alert, newest last.
    pub refs: Ring<Ref, 1>,
    /// `value_count`: (seconds, value) in arrival order.
    pub values: Option<Box<VecDeque<(u32, Key)>>>,
    /// Event time of the last alert, or [`NO_ALERT`].
    pub last_alert: u32,
    /// The correlation (index into the engine's list).
    pub corr: u16,
    /// Has window state (rsigma's notion of a state entry: created by a hit, removed when
    /// eviction empties it). A group without it lives on only for its suppression or refs.
    pub live: bool,
}

impl Group {
    fn vacant() -> Group {
        Group {
            key: Key::Inline {
                len: 0,
                bytes: [0; INLINE_KEY],
            },
            hits: Ring::default(),
            refs: Ring::default(),
            values: None,
            last_alert: NO_ALERT,
            corr: VACANT,
            live: false,
        }
    }

    /// Heap bytes beyond the slab record.
    pub fn heap_bytes(&self) -> usize {
        let values = self.values.as_ref().map_or(0, |v| {
            std::mem::size_of::<VecDeque<(u32, Key)>>()
                + v.capacity() * std::mem::size_of::<(u32, Key)>()
                + v.iter().map(|(_, k)| k.heap_bytes()).sum::<usize>()
        });
        self.key.heap_bytes() + self.hits.heap_bytes() + self.refs.heap_bytes() + values
    }

    /// The window holds nothing.
    pub fn window_is_empty(&self) -> bool {
        self.hits.is_empty() && self.values.as_ref().is_none_or(|v| v.is_empty())
    }

    /// Newest hit time in the window.
    pub fn latest(&self) -> Option<u32> {
        let h = self.hits.iter().map(|h| h.secs).max();
        let v = self
            .values
            .as_ref()
            .and_then(|v| v.iter().map(|(t, _)| *t).max());
        h.max(v)
    }

    /// Empties the window (not the refs or the suppression mark).
    pub fn clear_window(&mut self) {
        self.hits.clear();
        self.values = None;
    }
}

/// The slab of groups and the table that finds them by (correlation, key).
pub struct Store {
    groups: Vec<Group>,
    free: Vec<u32>,
    /// Open addressing, linear probing; slot numbers, `u32::MAX` when empty.
    table: Vec<u32>,
    /// Occupied groups.
    len: usize,
    /// Groups with window state.
    live: usize,
    hasher: std::collections::hash_map::RandomState,
}

const EMPTY: u32 = u32::MAX;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("groups", &self.len)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Store {
            groups: Vec::new(),
            free: Vec::new(),
            table: vec![EMPTY; 16],
            len: 0,
            live: 0,
            hasher: Default::default(),
        }
    }
}

impl Store {
    fn hash(&self, corr: u16, key: &Key) -> usize {
        let mut h = self.hasher.build_hasher();
        corr.hash(&mut h);
        key.bytes().hash(&mut h);
        h.finish() as usize
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// The slot of (corr, key), if held.
    pub fn find(&self, corr: u16, key: &Key) -> Option<u32> {
        let mask = self.mask();
        let mut pos = self.hash(corr, key) & mask;
        loop {
            let id = self.table[pos];
            if id == EMPTY {
                return None;
            }
            let g = &self.groups[id as usize];
            if g.corr == corr && g.key == *key {
                return Some(id);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// The slot of (corr, key), created empty (not live) when missing.
    pub fn find_or_insert(&mut self, corr: u16, key: Key) -> u32 {
        if let Some(id) = self.find(corr, &key) {
            return id;
        }
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.grow();
        }
        let mut g = Group::vacant();
        g.corr = corr;
        g.key = key;
        let id = match self.free.pop() {
            Some(id) => {
                self.groups[id as usize] = g;
                id
            }
            None => {
                self.groups.push(g);
                (self.groups.len() - 1) as u32
            }
        };
        self.place(id);
        self.len += 1;
        id
    }

    fn place(&mut self, id: u32) {
        let g = &self.groups[id as usize];
        let mask = self.mask();
        let mut pos = self.hash(g.corr, &g.key) & mask;
        while self.table[pos] != EMPTY {
            pos = (pos + 1) & mask;
        }
        self.table[pos] = id;
    }

    fn grow(&mut self) {
        let size = self.table.len() * 2;
        self.table = vec![EMPTY; size];
        for id in 0..self.groups.len() as u32 {
            if self.groups[id as usize].corr != VACANT {
                self.place(id);
            }
        }
    }

    /// Removes a group (and frees what it holds).
    pub fn remove(&mut self, id: u32) {
        let g = &self.groups[id as usize];
        if g.corr == VACANT {
            return;
        }
        let mask = self.mask();
        let mut i = self.hash(g.corr, &g.key) & mask;
        while self.table[i] != id {
            i = (i + 1) & mask;
        }
        // Backward-shift deletion: pull later entries of the probe run into the hole unless
        // their home bucket lies cyclically in (hole, their position].
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let other = self.table[j];
            if other == EMPTY {
                break;
            }
            let o = &self.groups[other as usize];
            let home = self.hash(o.corr, &o.key) & mask;
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                self.table[i] = other;
                i = j;
            }
        }
        self.table[i] = EMPTY;
        if self.groups[id as usize].live {
            self.live -= 1;
        }
        self.groups[id as usize] = Group::vacant();
        self.free.push(id);
        self.len -= 1;
    }

    /// The group in slot `id`.
    pub fn get(&self, id: u32) -> &Group {
        &self.groups[id as usize]
    }

    /// The group in slot `id`, to change (use [`Store::set_live`] for its `live` flag).
    pub fn get_mut(&mut self, id: u32) -> &mut Group {
        &mut self.groups[id as usize]
    }

    /// Marks a group as having window state or not, keeping the count.
    pub fn set_live(&mut self, id: u32, live: bool) {
        let g = &mut self.groups[id as usize];
        if g.live != live {
            g.live = live;
            if live {
                self.live += 1;
            } else {
                self.live -= 1;
            }
        }
    }

    /// Groups held (with window state or only a suppression mark or refs).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Holds no group?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Groups with window state: what `max_state_entries` bounds.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Occupied slots.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.corr != VACANT)
            .map(|(i, _)| i as u32)
    }

    /// What the store holds, in one walk of the groups: `held`, every byte it keeps (the slab
    /// up to its high-water mark, vacant slots included, the table, the free list, each
    /// group's heap storage); `in_use`, the part the groups held now account for (their
    /// records, the table, their heap storage), which is what eviction can give back and
    /// what the byte cap bounds.
    pub fn accounted_bytes(&self) -> StoreBytes {
        let heap: usize = self.groups.iter().map(Group::heap_bytes).sum();
        let table = self.table.capacity() * std::mem::size_of::<u32>();
        StoreBytes {
            held: self.groups.len() * std::mem::size_of::<Group>()
                + table
                + self.free.capacity() * std::mem::size_of::<u32>()
                + heap,
            in_use: self.len * std::mem::size_of::<Group>() + table + heap,
        }
    }

    /// What removing the group in slot `id` gives back: its record and heap storage.
    pub fn group_bytes(&self, id: u32) -> usize {
        std::mem::size_of::<Group>() + self.groups[id as usize].heap_bytes()
    }
}

/// Bytes a [`Store`] holds (see [`Store::accounted_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBytes {
    /// Everything it keeps.
    pub held: usize,
    /// What its groups account for.
    pub in_use: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_ipv4_is_compact() {
        let parts = [
            Some("203.0.113.7"),
            None,
            Some("host-1"),
            Some("010.1.1.1"),
            Some(""),
        ];
        let k = Key::encode(parts);
        let back: Vec<Option<String>> = parts.iter().map(|p| p.map(String::from)).collect();
        assert_eq!(k.parts(), back);
        assert_eq!(Key::encode([Some("192.0.2.1")]).bytes().len(), 5);
        let long = "x".repeat(100);
        let k = Key::encode([Some(long.as_str()), Some("198.51.100.2")]);
        assert!(matches!(k, Key::Heap(_)));
        assert_eq!(
            k.parts(),
            vec![Some(long.clone()), Some("198.51.100.2".into())]
        );
        assert_ne!(Key::encode([Some("a"), None]), Key::encode([Some("a")]));
        assert_eq!(Key::encode([None::<&str>]).parts(), vec![None]);
    }

    #[test]
    fn records_stay_small() {
        assert!(std::mem::size_of::<Key>() <= 24);
        assert!(std::mem::size_of::<Ring<Hit, 2>>() <= 24);
        assert!(std::mem::size_of::<Ring<Ref, 1>>() <= 24);
        assert!(
            std::mem::size_of::<Group>() <= 88,
            "{}",
            std::mem::size_of::<Group>()
        );
    }

    #[test]
    fn rings_spill_to_the_heap_and_come_back() {
        let mut r: Ring<u32, 2> = Ring::default();
        for i in 0..10 {
            r.push_back(i, 6);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![4, 5, 6, 7, 8, 9]);
        assert!(r.heap_bytes() > 0);
        while r.len() > 2 {
            r.pop_front();
        }
        assert_eq!(r.heap_bytes(), 0);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![8, 9]);
        r.retain(|x| x == 9);
        assert_eq!(r.front(), Some(9));
    }

    #[test]
    fn the_table_finds_what_it_holds_after_removals() {
        let mut s = Store::default();
        let keys: Vec<Key> = (0..5000u32)
            .map(|i| Key::encode([Some(i.to_string().as_str())]))
            .collect();
        let ids: Vec<u32> = keys
            .iter()
            .map(|k| s.find_or_insert((k.bytes()[0] % 3) as u16, k.clone()))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            if i % 3 == 0 {
                s.remove(ids[i]);
            }
            let _ = k;
        }
        for (i, k) in keys.iter().enumerate() {
            let found = s.find((k.bytes()[0] % 3) as u16, k);
            assert_eq!(found.is_some(), i % 3 != 0, "{i}");
        }
        assert_eq!(s.len(), 5000 - 1667);
    }
}
